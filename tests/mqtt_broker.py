"""A real MQTT broker on 127.0.0.1 for the tests: Debian's mosquitto (`apt-get install mosquitto
mosquitto-clients`; `make test` installs it where apt-get works), started on a free port (never 1883: the
package's own daemon may hold it) with its own configuration in a temporary folder:

    broker = Broker(tmp_path, users={"cam": "s3cret"}, tls=True)   # plain listener with a password file,
    broker.start()                                                   # + a TLS one (throwaway CA, openssl)
    broker.kill(); broker.start()                                    # down and back on the same ports
    sub = Subscriber(broker.port, "site/#", auth=("cam", "s3cret"))   # a persistent QoS 1 session

The broker persists its sessions (a SIGTERM saves them), so a subscriber's messages queued while it was
away survive a restart. `Subscriber` is a paho-mqtt client (the package the code under test uses).
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from real_processes import free_port

MOSQUITTO = shutil.which("mosquitto") or ("/usr/sbin/mosquitto" if os.path.exists("/usr/sbin/mosquitto") else None)
MOSQUITTO_PASSWD = shutil.which("mosquitto_passwd")
OPENSSL = shutil.which("openssl")

try:
    import paho.mqtt.client as paho
except ImportError:  # pragma: no cover - the runtime dependency is installed by `make install`
    paho = None  # type: ignore[assignment]

needs_paho = pytest.mark.skipif(paho is None, reason="paho-mqtt is not installed (pip install -e '.[mqtt]'; "
                                "`make install` installs it)")
needs_broker = pytest.mark.skipif(
    MOSQUITTO is None or MOSQUITTO_PASSWD is None or OPENSSL is None or paho is None,
    reason="mosquitto, mosquitto_passwd, openssl or paho-mqtt is not installed (Debian: apt-get install mosquitto "
           "mosquitto-clients openssl; pip install 'paho-mqtt>=2'; `make test` installs them where apt-get works)")


def make_ca(folder: Path) -> dict[str, Path]:
    """A throwaway CA, a server certificate for 127.0.0.1 and a client certificate signed by it (openssl); also a
    second CA that signed nothing (to show a failed verification). {"ca", "server_cert", "server_key", "other_ca",
    "client_cert", "client_key"}."""
    folder.mkdir(parents=True, exist_ok=True)

    def ssl(*args: str) -> None:
        subprocess.run([OPENSSL, *args], cwd=folder, check=True, capture_output=True)  # type: ignore[list-item]

    for name in ("ca", "other_ca"):
        ssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", f"/CN=erudite test {name}",
            "-keyout", f"{name}.key", "-out", f"{name}.pem")
    ssl("req", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=127.0.0.1", "-keyout", "server.key", "-out", "server.csr")
    (folder / "san.ext").write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\n")
    ssl("x509", "-req", "-in", "server.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial", "-days", "2",
        "-extfile", "san.ext", "-out", "server.pem")
    ssl("req", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=erudite test device", "-keyout", "client.key",
        "-out", "client.csr")
    ssl("x509", "-req", "-in", "client.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial", "-days", "2",
        "-out", "client.pem")
    return {"ca": folder / "ca.pem", "server_cert": folder / "server.pem", "server_key": folder / "server.key",
            "other_ca": folder / "other_ca.pem", "client_cert": folder / "client.pem", "client_key": folder / "client.key"}


def wait_port(port: int, timeout: float = 10.0) -> None:
    end = time.monotonic() + timeout
    while True:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            if time.monotonic() > end:
                raise
            time.sleep(0.05)


class Broker:
    """mosquitto on 127.0.0.1: `port` (anonymous, or with `users` a password file) and, with `tls`, `tls_port`
    (anonymous, certificates from make_ca: `certs`) and `mtls_port` (a client certificate signed by the CA
    required)."""

    def __init__(self, folder: Path, users: dict[str, str] | None = None, tls: bool = False):
        self.folder = folder
        folder.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.tls_port = free_port() if tls else 0
        self.mtls_port = free_port() if tls else 0
        self.certs = make_ca(folder / "certs") if tls else {}
        self.proc: subprocess.Popen | None = None
        lines = ["per_listener_settings true", "persistence true", f"persistence_location {folder}/",
                 "max_queued_messages 0", "log_dest stderr", "log_type error", "log_type warning"]
        if os.getuid() == 0:
            lines.append("user root")  # else it drops to `mosquitto`, who cannot read a test's folder
        lines += [f"listener {self.port} 127.0.0.1"]
        if users:
            pw = folder / "passwd"
            pw.write_text("")
            for user, password in users.items():
                subprocess.run([MOSQUITTO_PASSWD, "-b", str(pw), user, password], check=True, capture_output=True)  # type: ignore[list-item]
            lines += ["allow_anonymous false", f"password_file {pw}"]
        else:
            lines += ["allow_anonymous true"]
        if tls:
            c = self.certs
            for port, extra in ((self.tls_port, []), (self.mtls_port, ["require_certificate true"])):
                lines += [f"listener {port} 127.0.0.1", "allow_anonymous true", f"cafile {c['ca']}",
                          f"certfile {c['server_cert']}", f"keyfile {c['server_key']}", *extra]
        self.conf = folder / "mosquitto.conf"
        self.conf.write_text("\n".join(lines) + "\n")

    def start(self) -> "Broker":
        self.proc = subprocess.Popen([MOSQUITTO, "-c", str(self.conf)], stdout=subprocess.DEVNULL,  # type: ignore[list-item]
                                     stderr=subprocess.PIPE, text=True)
        try:
            wait_port(self.port)
        except OSError:
            self.proc.kill()
            raise AssertionError(f"mosquitto did not start: {self.proc.communicate()[1]}") from None
        return self

    def kill(self) -> None:
        """Stop it (SIGTERM: it saves its sessions, as a broker restarted by its service manager does)."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            self.proc.wait(timeout=10)

    def __enter__(self) -> "Broker":
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


class Subscriber:
    """A paho client subscribed to `topic` at QoS 1 with a persistent session (same client id, clean_session
    False): what the broker queued for it while either was away arrives after the restart. `messages`:
    (topic, payload bytes, retained) in arrival order."""

    def __init__(self, port: int, topic: str, auth: tuple[str, str] | None = None, client_id: str = "checker"):
        assert paho is not None
        self.messages: list[tuple[str, bytes, bool]] = []
        self._lock = threading.Lock()
        self._subscribed = threading.Event()
        c = paho.Client(paho.CallbackAPIVersion.VERSION2, client_id=client_id, clean_session=False)
        if auth:
            c.username_pw_set(*auth)
        c.reconnect_delay_set(1, 1)

        def on_connect(client: Any, userdata: Any, flags: Any, rc: Any, props: Any) -> None:
            if not rc.is_failure:
                client.subscribe(topic, qos=1)

        def on_subscribe(client: Any, userdata: Any, mid: Any, rcs: Any, props: Any) -> None:
            self._subscribed.set()

        def on_message(client: Any, userdata: Any, msg: Any) -> None:
            with self._lock:
                self.messages.append((msg.topic, msg.payload, bool(msg.retain)))

        c.on_connect, c.on_subscribe, c.on_message = on_connect, on_subscribe, on_message
        c.connect("127.0.0.1", port)
        c.loop_start()
        self.client = c
        assert self._subscribed.wait(10), "the subscriber did not subscribe"

    def payloads(self, topic_prefix: str = "") -> list[bytes]:
        with self._lock:
            return [p for t, p, _ in self.messages if t.startswith(topic_prefix) and not t.endswith("/status")]

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()
