"""Results published to an MQTT broker: `-o mqtt://[USER:PASSWORD@]HOST[:PORT]/TOPIC` (mqtts:// for TLS),
through paho-mqtt (>= 2, version-2 callbacks).

Each result is its JSON lines record (erudite_edge.outputs.schema: record_version, run_id, seq, ...) plus
MESSAGE_FIELDS: `message_id` (a random id per message) and `model_sha256` (model_identity). A consumer
drops duplicates by (run_id, seq) (or message_id): delivery is at least once.

Nothing is lost while the spool has room: each record is written to the spool (erudite_edge.outputs.spool)
BEFORE it is handed to the client and removed only when the broker acknowledged it (PUBACK at QoS 1); at
most `inflight` messages are out at a time, the rest wait on disk, and they go out in order. The client
reconnects with back-off (1 s doubling up to `retry_max_s`); what was in flight is sent again first.

At start (before the model loads): a malformed URI, a TLS certificate the CA does not verify, or credentials
the broker refuses stop the run (UsageError, exit 2). A broker that does not answer or a name that does not
resolve yet is not an error: one warning, results spool, the client keeps trying.

One thread talks to the socket: the network thread runs paho's `loop()` and is also the one that takes
messages from the spool and publishes them (a result waits at most LOOP_TIMEOUT_S for it). paho, driven by
a loop of our own, is in its single-threaded mode, where `publish` writes to the socket from the calling
thread: publishing from a second thread made two threads pop packets from one queue, and a packet that met
a full TLS buffer went back to the head of the queue after the next one had gone out (at QoS 2 the broker
delivered seq 0, 2, 3, 4, 5, 1). The thread is supervised: an exception out of a callback (paho is told to
suppress them too) or out of the loop itself is reported once, and the client reconnects, which sends
again what was in flight.

Status: `{topic}/status` (the topic before its first `{stream}` level) is retained `online` once connected;
the broker publishes the last will `offline` (retained) when the device disappears; a run that ends
publishes `offline` itself. At the end the sink waits up to `drain_timeout_s` for the spool to empty while
connected; what is left stays in the spool for the next run (one warning says how many).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import ssl
import threading
import time
import uuid
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from erudite_edge.core.redact import UriParts, redact, remember_uri, split_uri
from erudite_edge.errors import UsageError
from erudite_edge.outputs.results import Result, Sink
from erudite_edge.outputs.spool import SYNC_MODES, Spool
from erudite_edge.sources.base import Item

SCHEMES = {"mqtt": 1883, "mqtts": 8883}
MESSAGE_FIELDS = ("message_id", "model_sha256")  # after the record's own (schema.JSONL_FIELDS)
STATUS_ONLINE, STATUS_OFFLINE = "online", "offline"
BARRIER_S = 10.0  # the longest new messages wait after a reconnect for the resent ones' acknowledgements
LOOP_TIMEOUT_S = 0.05  # the network thread's wait for the socket: the longest a new result waits to go out
_PLACEHOLDER = re.compile(r"\{([^{}]*)\}")


def is_mqtt_uri(text: str) -> bool:
    parts = split_uri(text)
    return parts is not None and parts.scheme in SCHEMES


@dataclass(frozen=True)
class MqttOptions:
    """How results go to the broker (CLI: --mqtt-qos, --mqtt-ca, --mqtt-cert, --mqtt-key, --spool,
    --spool-max-mb, --spool-sync). `spool` None: default_spool(). The rest are fixed for the CLI."""

    qos: int = 1
    ca: Path | None = None  # mqtts://: the CA that signed the broker's certificate (default: the system's)
    cert: Path | None = None  # mqtts://: this device's client certificate (and key, unless `key`)
    key: Path | None = None
    spool: Path | None = None
    spool_max_mb: float = 100.0
    spool_sync: str = "always"  # fsync each spooled message ("always") or leave it to the kernel ("off"): spool.py
    inflight: int = 20  # messages handed to the client and not acknowledged yet, at most
    retry_max_s: int = 10  # reconnect back-off: 1 s, 2 s, 4 s ... up to this
    connect_timeout_s: float = 5.0  # the first connection's wait for the broker's answer (before the model loads)
    drain_timeout_s: float = 5.0  # at the end, while connected: the wait for the spool to empty
    keepalive_s: int = 30

    def __post_init__(self) -> None:
        if self.qos not in (0, 1, 2):
            raise UsageError(f"--mqtt-qos {self.qos}: give 0, 1 or 2 (1: at least once, the default)")
        if not self.spool_max_mb > 0:
            raise UsageError(f"--spool-max-mb {self.spool_max_mb}: give a size in MiB above 0")
        if self.spool_sync not in SYNC_MODES:
            raise UsageError(f"--spool-sync {self.spool_sync}: give {' or '.join(SYNC_MODES)} (always: the default)")
        for flag, p in (("--mqtt-ca", self.ca), ("--mqtt-cert", self.cert), ("--mqtt-key", self.key)):
            if p is not None and not Path(p).is_file():
                raise UsageError(f"{flag} {p}: no such file; give the PEM file")
        if self.key is not None and self.cert is None:
            raise UsageError("--mqtt-key is the key of --mqtt-cert; give --mqtt-cert too")


@dataclass(frozen=True)
class MqttTarget:
    """A parsed `-o mqtt[s]://...`: where to connect and the topic template."""

    parts: UriParts
    port: int
    topic: str  # may hold {stream}

    @property
    def tls(self) -> bool:
        return self.parts.scheme == "mqtts"

    def shown(self) -> str:
        return self.parts.shown()

    def topic_for(self, stream: str) -> str:
        return self.topic.replace("{stream}", stream)

    @property
    def status_topic(self) -> str:
        """`{topic}/status`, the topic taken up to its first level holding `{stream}` (one status per device)."""
        levels = self.topic.split("/")
        kept = []
        for level in levels:
            if "{stream}" in level:
                break
            kept.append(level)
        base = "/".join(kept).rstrip("/")
        return f"{base}/status" if base else "status"


def parse_mqtt_uri(uri: str) -> MqttTarget:
    """`mqtt[s]://[USER:PASSWORD@]HOST[:PORT]/TOPIC` (TOPIC: levels split by '/', may hold `{stream}`; no
    wildcards); UsageError naming what is wrong, the password hidden."""
    remember_uri(uri)
    parts = split_uri(uri)
    form = "mqtt://[USER:PASSWORD@]HOST[:PORT]/TOPIC or mqtts://..."
    if parts is None or parts.scheme not in SCHEMES:
        raise UsageError(f"-o {redact(uri)}: not an MQTT URI; give {form}")
    shown = parts.shown()
    if not parts.host:
        raise UsageError(f"-o {shown}: no broker host; give {form}")
    try:
        port = parts.port_number(SCHEMES[parts.scheme])
    except ValueError as e:
        raise UsageError(f"-o {shown}: {e}") from None
    topic = parts.rest[1:] if parts.rest.startswith("/") else ""
    if not topic or parts.rest[:1] != "/":
        raise UsageError(f"-o {shown}: no topic; give {form} (e.g. mqtt://broker/site/cam)")
    if any(c in topic for c in "+#\x00") or "?" in topic:
        raise UsageError(f"-o {shown}: the topic may not hold '+', '#' or '?' (wildcards are for subscribers)")
    unknown = [m for m in _PLACEHOLDER.findall(topic) if m != "stream"]
    if unknown or topic.replace("{stream}", "").count("{") or topic.replace("{stream}", "").count("}"):
        raise UsageError(f"-o {shown}: the topic's only placeholder is {{stream}}")
    if parts.userinfo and not parts.user:
        raise UsageError(f"-o {shown}: a password without a user name; give USER:PASSWORD@")
    return MqttTarget(parts, port, topic)


def model_identity(bundle: Any) -> str:
    """`model_sha256`: the sha256 of the bundle's fp32 ONNX model (the trained weights, the same on every device
    whatever engine runs them); a zoo: the sha256 of its fp32 models' `role:sha256` lines; "" when none."""
    onnx = [m for m in bundle.models if m.format == "onnx" and m.precision == "fp32"]
    main = [m for m in onnx if m.role == "main"]
    if main:
        return str(main[0].sha256)
    if not onnx:
        return ""
    lines = "".join(f"{m.role}:{m.sha256}\n" for m in sorted(onnx, key=lambda m: m.role))
    return hashlib.sha256(lines.encode("utf-8")).hexdigest()


def default_spool(target: MqttTarget, env: dict[str, str] | None = None) -> Path:
    """`$XDG_STATE_HOME/erudite-edge/mqtt-spool/HOST_PORT_<topic hash>` (default ~/.local/state/...): one per
    broker and topic, so that a service restarted with the same -o finds what its last run left."""
    env = dict(os.environ) if env is None else env
    base = env.get("XDG_STATE_HOME") or str(Path(env.get("HOME") or Path.home()) / ".local" / "state")
    key = hashlib.sha256(target.topic.encode("utf-8")).hexdigest()[:12]
    host = re.sub(r"[^A-Za-z0-9.-]", "_", target.parts.host)
    return Path(base) / "erudite-edge" / "mqtt-spool" / f"{host}_{target.port}_{key}"


def stream_key(result: Result) -> str:
    """What `{stream}` becomes: the result's stream index where the record has one, else "0"."""
    s = getattr(result, "stream", None)
    if s is None:
        return "0"
    if isinstance(s, dict):
        s = s.get("index", 0)
    return str(getattr(s, "index", s))


class MqttSink(Sink):
    """Each result to the broker at least once, in order, through the spool (see the module's doc)."""

    def __init__(self, target: MqttTarget, options: MqttOptions, model_sha256: str = "",
                 warn: Callable[[str], None] | None = None):
        try:
            import paho.mqtt.client as mqtt
        except ImportError:
            raise UsageError("-o mqtt://: paho-mqtt is not installed; pip install 'paho-mqtt>=2'") from None
        self._mqtt = mqtt
        self.target = target
        self.options = options
        self.model_sha256 = model_sha256
        self._warn = warn or (lambda msg: None)
        self._warned: set[str] = set()
        spool_dir = options.spool or default_spool(target)
        self.spool = Spool(spool_dir, int(options.spool_max_mb * 1024 * 1024), options.spool_sync)
        self.published = 0  # acknowledged by the broker
        self.disconnects = 0
        self._lock = threading.Condition()  # the spool's counts, in flight, acknowledged, connected
        self._write_lock = threading.Lock()  # spool writes one at a time (their fsyncs outside self._lock)
        self._acked: deque[int] = deque()  # mids from on_publish, settled by the network thread between loop() calls
        self._inflight: dict[int, int] = {}  # mid -> spool number
        self._connected = False
        # after a reconnect paho sends what was in flight again, but only after on_connect: new messages wait
        # until those are acknowledged (or BARRIER_S pass), so that they cannot overtake them
        self._barrier: set[int] = set()
        self._barrier_until = 0.0
        self._answered = threading.Event()  # the first CONNACK (or a refusal) came
        self._refused = ""  # the broker's reason when it refused the connection
        self._stopping = threading.Event()
        self._closed = False
        self._dropped_seen = 0
        self._network_started = False  # refusals after the first connection are warnings, not errors
        self._reconnect_delay = 0.0
        try:
            self._client = self._make_client()
            self._first_connect()
        except BaseException:
            self.spool.close()
            raise
        self._network = threading.Thread(target=self._network_loop, name="mqtt-network", daemon=True)
        self._network.start()
        if self.spool.torn:
            self._warn_once("torn", f"mqtt: {self.spool.torn} result file(s) in {spool_dir} were cut short (a power "
                            "cut under --spool-sync off) and are removed")
        if self.spool.recovered:
            self._warn_once("recovered", f"mqtt: {self.spool.recovered} result(s) a previous run left in {spool_dir} "
                            "are sent first")

    # -- setup ------------------------------------------------------------------------------------------
    def _make_client(self) -> Any:
        mqtt = self._mqtt
        o = self.options
        client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"erudite-edge-{uuid.uuid4().hex[:12]}",
                             protocol=mqtt.MQTTv311, clean_session=True)
        client.suppress_exceptions = True  # a callback's exception is logged by paho, the loop goes on
        client.max_inflight_messages_set(o.inflight + 1)  # + the status message
        client.connect_timeout = o.connect_timeout_s
        if self.target.parts.userinfo:
            client.username_pw_set(self.target.parts.user, self.target.parts.password)
        if self.target.tls:
            try:
                client.tls_set(ca_certs=str(o.ca) if o.ca else None, certfile=str(o.cert) if o.cert else None,
                               keyfile=str(o.key) if o.key else None)
            except (ssl.SSLError, OSError) as e:
                raise UsageError(f"-o {self.target.shown()}: the TLS files cannot be used ({redact(str(e))}); check "
                                 "--mqtt-ca/--mqtt-cert/--mqtt-key") from None
        elif o.ca or o.cert or o.key:
            raise UsageError(f"-o {self.target.shown()}: --mqtt-ca/--mqtt-cert/--mqtt-key are for mqtts://")
        client.will_set(self.target.status_topic, STATUS_OFFLINE, qos=1, retain=True)
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_publish = self._on_publish
        return client

    def _first_connect(self) -> None:
        """Connect and wait (connect_timeout_s) for the broker's answer in this thread: refused credentials
        or a certificate that does not verify are a UsageError; no answer at all is one warning."""
        t = self.target
        host, port, keepalive = t.parts.host, t.port, self.options.keepalive_s
        try:
            self._client.connect(host, port, keepalive)
        except ssl.SSLCertVerificationError as e:
            raise UsageError(f"-o {t.shown()}: the broker's certificate does not verify ({e.verify_message}); give "
                             "the CA that signed it with --mqtt-ca") from None
        except (OSError, ValueError) as e:
            self._not_yet(getattr(e, "strerror", None) or str(e) or type(e).__name__)
            self._client.connect_async(host, port, keepalive)
            return
        end = time.monotonic() + self.options.connect_timeout_s
        while not self._answered.is_set() and time.monotonic() < end:
            if self._client.loop(timeout=0.1) != self._mqtt.MQTT_ERR_SUCCESS:
                break
        if self._refused:
            with contextlib.suppress(Exception):
                self._client.disconnect()
            raise UsageError(f"-o {t.shown()}: the broker refused the connection ({self._refused}); check "
                             "USER:PASSWORD") from None
        if not self._answered.is_set():
            self._not_yet("no answer")

    def _not_yet(self, why: str) -> None:
        self._warn_once("unreachable", f"mqtt: cannot reach {self.target.parts.hostport} yet ({redact(why)}); "
                        f"results are kept in {self.spool.root} and sent once it answers (retrying with back-off)")

    def _warn_once(self, key: str, msg: str) -> None:
        if key not in self._warned:
            self._warned.add(key)
            self._warn(msg)

    # -- paho callbacks (the network thread): short, and never raising ------------------------------------
    def _on_connect(self, client: Any, userdata: Any, flags: Any, reason_code: Any, properties: Any) -> None:
        try:
            if reason_code.is_failure:
                self._refused = str(reason_code)
                self._answered.set()
                if self._network_started:
                    self._warn_once("refused", f"mqtt: the broker refused the connection ({reason_code}); retrying")
                return
            client.publish(self.target.status_topic, STATUS_ONLINE, qos=1, retain=True)
            with self._lock:
                self._connected = True
                self._reconnect_delay = 0.0
                self._barrier = set(self._inflight)  # what paho sends again once this callback returns
                self._barrier_until = time.monotonic() + BARRIER_S
                self._lock.notify_all()
            self._answered.set()
        except Exception as e:  # noqa: BLE001 - a callback must not stop the loop
            self._callback_failed(e)

    def _on_disconnect(self, client: Any, userdata: Any, flags: Any, reason_code: Any, properties: Any) -> None:
        try:
            with self._lock:
                was = self._connected
                self._connected = False
            if was and not self._stopping.is_set():
                self.disconnects += 1
                self._warn_once("lost", f"mqtt: lost the broker at {self.target.parts.hostport} ({reason_code}); "
                                f"results are kept in {self.spool.root} until it is back (retrying with back-off)")
        except Exception as e:  # noqa: BLE001
            self._callback_failed(e)

    def _on_publish(self, client: Any, userdata: Any, mid: int, reason_code: Any, properties: Any) -> None:
        try:
            with self._lock:  # paho holds its own message lock here; nothing waits on it holding ours
                self._acked.append(mid)
                self._lock.notify_all()
        except Exception as e:  # noqa: BLE001
            self._callback_failed(e)

    def _callback_failed(self, e: BaseException) -> None:
        self._warn_once("callback", f"mqtt: a client callback failed ({redact(repr(e))}); going on")

    # -- threads -----------------------------------------------------------------------------------------
    def _network_loop(self) -> None:
        """The only thread on the socket once the sink is up: publish what the spool holds (at most `inflight`
        unacknowledged), run paho's loop, reconnect with back-off when the connection is lost. Supervised:
        whatever raises is reported once, then the client reconnects (paho sends again what was in flight)."""
        self._network_started = True
        while not self._stopping.is_set():
            try:
                self._send_from_spool()
                if self._client.loop(timeout=LOOP_TIMEOUT_S) == self._mqtt.MQTT_ERR_SUCCESS:
                    continue
                self._reconnect_after_backoff()
            except Exception as e:  # noqa: BLE001 - supervised: report, wait, go on
                self._warn_once("loop", f"mqtt: the network loop failed ({redact(repr(e))}); reconnecting")
                with self._lock:
                    self._connected = False
                self._reconnect_after_backoff()

    def _reconnect_after_backoff(self) -> None:
        """Wait 1 s, 2 s, 4 s ... up to retry_max_s (reset by a CONNACK), then connect again; a broker that
        is still away is tried again after the next wait."""
        self._reconnect_delay = min(max(1.0, self._reconnect_delay * 2), float(max(1, self.options.retry_max_s)))
        if self._stopping.wait(self._reconnect_delay):
            return
        try:
            self._client.reconnect()
        except (OSError, ValueError):  # refused, unreachable, not resolvable yet, TLS: the next wait, again
            pass
        except Exception as e:  # noqa: BLE001
            self._warn_once("reconnect", f"mqtt: reconnecting failed ({redact(repr(e))}); retrying")

    def _send_from_spool(self) -> None:
        """(The network thread.) Acknowledged messages leave the spool; while connected, the oldest unsent
        ones go out. paho calls on_publish holding its own lock, so the client is called without ours."""
        with self._lock:
            self._settle_acks()
            batch: list[tuple[int, str, bytes]] = []
            while self._can_send(len(batch)):
                msg = self.spool.take()
                if msg is None:
                    break
                batch.append(msg)
            self._lock.notify_all()
        for n, topic, payload in batch:
            info = self._client.publish(topic, payload, qos=self.options.qos)
            with self._lock:
                self._inflight[info.mid] = n

    def _can_send(self, taken: int = 0) -> bool:
        if self._barrier and time.monotonic() > self._barrier_until:
            self._barrier.clear()
        return (self._connected and not self._barrier and len(self._inflight) + taken < self.options.inflight
                and self.spool.unsent() > 0)

    def _settle_acks(self) -> None:
        """(Holding the lock.) The acknowledged messages leave the spool."""
        while self._acked:
            mid = self._acked.popleft()
            self._barrier.discard(mid)
            n = self._inflight.pop(mid, None)
            if n is not None:
                self.spool.remove(n)
                self.published += 1

    # -- Sink --------------------------------------------------------------------------------------------
    def write(self, result: Result, item: Item) -> None:
        record = result.to_dict()
        record["message_id"] = uuid.uuid4().hex
        record["model_sha256"] = self.model_sha256
        payload = json.dumps(record, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
        topic = self.target.topic_for(stream_key(result))
        with self._write_lock:  # writers one at a time, in order; the file's fsyncs outside the network thread's lock
            try:
                n, size = self.spool.write(topic, payload)
            except OSError as e:
                from erudite_edge.core.fileio import os_error_line
                from erudite_edge.errors import OutputError

                raise OutputError(os_error_line(e, str(self.spool.root))) from None
            with self._lock:
                self.spool.admit(n, size)
                if self.spool.dropped > self._dropped_seen:
                    self._dropped_seen = self.spool.dropped
                    self._warn_once("full", f"mqtt: the spool {self.spool.root} is full (--spool-max-mb "
                                    f"{self.options.spool_max_mb:g}): the oldest results are dropped (counted at the end)")
                self._lock.notify_all()

    def _close(self, wait: bool) -> None:
        if self._closed:
            return
        if wait:
            end = time.monotonic() + self.options.drain_timeout_s
            with self._lock:
                while self._connected and (self._inflight or self.spool.unsent() or self._acked) and time.monotonic() < end:
                    self._lock.wait(0.1)
        with self._lock:
            connected = self._connected
            self._stopping.set()
        self._network.join(timeout=5)
        if not self._network.is_alive():  # this thread is now the only one on the socket
            with contextlib.suppress(Exception):
                if connected:
                    info = self._client.publish(self.target.status_topic, STATUS_OFFLINE, qos=1, retain=True)
                    end = time.monotonic() + 2.0
                    while not info.is_published() and time.monotonic() < end:
                        if self._client.loop(timeout=LOOP_TIMEOUT_S) != self._mqtt.MQTT_ERR_SUCCESS:
                            break
                self._client.disconnect()
        with self._lock:
            self._closed = True
            self._lock.notify_all()
        with self._lock:  # acknowledgements that came in the last moment
            self._settle_acks()
            left, dropped = len(self.spool), self.spool.dropped
            self.spool.close()
        if dropped:
            self._warn(f"mqtt: {dropped} result(s) were dropped from the full spool {self.spool.root} (--spool-max-mb)")
        if left:
            self._warn(f"mqtt: {left} result(s) not acknowledged by the broker stay in {self.spool.root}; the next run "
                       "with this spool sends them first")

    def commit(self) -> None:
        self._close(wait=True)

    def abort(self) -> None:
        self._close(wait=False)

    def describe(self) -> str:
        return f"MQTT -> {self.target.shown()} (QoS {self.options.qos}, spool {self.spool.root})"
