"""`-o mqtt://...`: results published to a real mosquitto on 127.0.0.1 (tests/mqtt_broker.py): records,
topics, status and last will, refused credentials and malformed URIs (one line, exit 2, before the model
loads), TLS with a throwaway CA, a broker not there at start (spooled, then sent by the next run), the
spool's bound, and a network loop that survives a failing callback. The broker killed and restarted under
a live run: test_mqtt_outage.py."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from erudite_edge.core.redact import redact
from erudite_edge.core.scores import ClassScore
from erudite_edge.outputs.mqtt import MqttOptions, MqttSink, parse_mqtt_uri, stream_key
from erudite_edge.outputs.results import Result
from erudite_edge.outputs.schema import JSONL_FIELDS
from erudite_edge.outputs.spool import Spool
from mqtt_broker import Broker, Subscriber, needs_broker, needs_paho
from onnx_fixtures import COLORS, make_erudite_bundle, solid_image, write_image
from real_processes import free_port
from trained_model import cli, one_error_line

N_IMAGES = 6


@pytest.fixture()
def setup(tmp_path: Path) -> tuple[Path, Path]:
    bundle = make_erudite_bundle(tmp_path / "bundle").root
    folder = tmp_path / "imgs"
    folder.mkdir()
    colors = list(COLORS.values())
    for i in range(N_IMAGES):
        write_image(folder / f"{i:02d}.png", solid_image(colors[i % len(colors)]))
    return bundle, folder


def wait_until(cond, timeout: float = 10.0) -> bool:  # type: ignore[no-untyped-def]
    end = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > end:
            return False
        time.sleep(0.05)
    return True


def records(sub: Subscriber, prefix: str = "") -> list[dict]:
    return [json.loads(p) for p in sub.payloads(prefix)]


@pytest.mark.slow  # a real mosquitto broker
@needs_broker
def test_each_result_is_its_record_with_message_id_and_model_sha256(tmp_path: Path, setup, capsys) -> None:  # type: ignore[no-untyped-def]
    bundle, folder = setup
    with Broker(tmp_path / "broker") as broker:
        sub = Subscriber(broker.port, "site/#")
        try:
            rc, out, err = cli(capsys, "run", folder, "--bundle", bundle, "-o",
                               f"mqtt://127.0.0.1:{broker.port}/site/cam{{stream}}", "--spool", tmp_path / "spool")
            assert rc == 0, err
            assert wait_until(lambda: len(sub.payloads("site/cam0")) >= N_IMAGES)
            recs = records(sub, "site/cam0")
            assert [r["seq"] for r in recs] == list(range(N_IMAGES))
            assert [Path(r["name"]).name for r in recs] == [f"{i:02d}.png" for i in range(N_IMAGES)]
            first = recs[0]
            assert list(first)[: len(JSONL_FIELDS) - 3] == [f for f in JSONL_FIELDS if f not in ("name_b64", "box",
                                                                                             "box_clipped")]
            assert list(first)[-2:] == ["message_id", "model_sha256"]
            assert len({r["message_id"] for r in recs}) == N_IMAGES and len({r["run_id"] for r in recs}) == 1
            meta = json.loads((bundle / "bundle.json").read_text())
            main = [m for m in meta["models"] if m["role"] == "main" and m["precision"] == "fp32"][0]
            assert {r["model_sha256"] for r in recs} == {main["sha256"]}
            assert wait_until(lambda: ("site/status", b"offline", False) in sub.messages)
            statuses = [p for t, p, _ in sub.messages if t == "site/status"]
            assert statuses == [b"online", b"offline"]
            assert not list((tmp_path / "spool").glob("*.msg"))  # every one acknowledged, then removed
            assert "MQTT -> mqtt://127.0.0.1" in err
        finally:
            sub.close()


@pytest.mark.slow  # a real mosquitto broker
@needs_broker
def test_stream_in_the_topic_one_topic_per_source_of_a_multi_stream_run(tmp_path: Path, setup, capsys) -> None:  # type: ignore[no-untyped-def]
    bundle, folder = setup
    other = tmp_path / "imgs2"
    other.mkdir()
    for i in range(3):
        write_image(other / f"{i:02d}.png", solid_image(list(COLORS.values())[0]))
    with Broker(tmp_path / "broker") as broker:
        sub = Subscriber(broker.port, "site/#")
        try:
            rc, out, err = cli(capsys, "run", folder, other, "--bundle", bundle, "-o",
                               f"mqtt://127.0.0.1:{broker.port}/site/cam{{stream}}", "--spool", tmp_path / "spool")
            assert rc == 0, err
            assert wait_until(lambda: len(sub.payloads("site/cam0")) >= N_IMAGES and len(sub.payloads("site/cam1")) >= 3)
            for index, n in ((0, N_IMAGES), (1, 3)):
                recs = records(sub, f"site/cam{index}")
                assert [r["stream"]["index"] for r in recs] == [index] * n
                assert [r["seq"] for r in recs] == list(range(n))  # seq counts per stream
        finally:
            sub.close()


@pytest.mark.slow  # a real mosquitto broker
@needs_broker
def test_refused_credentials_one_line_exit_2_before_the_model_loads(tmp_path: Path, setup, capsys) -> None:  # type: ignore[no-untyped-def]
    bundle, folder = setup
    (bundle / "model.onnx").write_bytes(b"not a model")  # loading it would fail: the broker's answer comes first
    with Broker(tmp_path / "broker", users={"cam": "right-pass"}) as broker:
        rc, out, err = cli(capsys, "run", folder, "--bundle", bundle, "--no-verify", "-o",
                           f"mqtt://cam:wrong-pass@127.0.0.1:{broker.port}/site/cam", "--spool", tmp_path / "spool")
        line = one_error_line(err)
        assert rc == 2 and "refused" in line and "wrong-pass" not in err and "cam:***@" in line, err


@pytest.mark.slow  # a real mosquitto broker
@needs_broker
def test_tls_with_a_throwaway_ca_and_a_client_certificate(tmp_path: Path, setup, capsys) -> None:  # type: ignore[no-untyped-def]
    bundle, folder = setup
    broker = Broker(tmp_path / "broker", tls=True)
    with broker:
        sub = Subscriber(broker.port, "t/#")
        try:
            rc, out, err = cli(capsys, "run", folder, "--bundle", bundle, "-o", f"mqtts://127.0.0.1:{broker.tls_port}/t",
                               "--mqtt-ca", broker.certs["ca"], "--spool", tmp_path / "spool", "--mqtt-qos", "2")
            assert rc == 0, err
            assert wait_until(lambda: len(sub.payloads("t")) >= N_IMAGES)
            assert [r["seq"] for r in records(sub, "t")] == list(range(N_IMAGES))
        finally:
            sub.close()
        # a listener that wants a client certificate: --mqtt-cert / --mqtt-key
        sub = Subscriber(broker.port, "m/#")
        try:
            rc, out, err = cli(capsys, "run", folder, "--bundle", bundle, "-o", f"mqtts://127.0.0.1:{broker.mtls_port}/m",
                               "--mqtt-ca", broker.certs["ca"], "--mqtt-cert", broker.certs["client_cert"],
                               "--mqtt-key", broker.certs["client_key"], "--spool", tmp_path / "spool")
            assert rc == 0 and "cannot reach" not in err, err
            assert wait_until(lambda: len(sub.payloads("m")) >= N_IMAGES)
        finally:
            sub.close()
        # a CA that did not sign the broker's certificate: one line, exit 2
        rc, out, err = cli(capsys, "run", folder, "--bundle", bundle, "-o", f"mqtts://127.0.0.1:{broker.tls_port}/t",
                           "--mqtt-ca", broker.certs["other_ca"], "--spool", tmp_path / "spool")
        assert rc == 2 and "does not verify" in one_error_line(err)


@pytest.mark.parametrize("uri, says", [
    ("mqtt://127.0.0.1:99999/t", "port"),
    ("mqtt://127.0.0.1:1884", "no topic"),
    ("mqtt://127.0.0.1/", "no topic"),
    ("mqtt:///t", "no broker host"),
    ("mqtt://h/a/+/b", "wildcards"),
    ("mqtt://h/a/#", "wildcards"),
    ("mqtt://h/cam/{camera}", "placeholder"),
    ("mqtt://:pw-secret@h/t", "without a user"),
    ("ftp://h/t", "unsupported URL"),
])
def test_malformed_uri_one_line_exit_2(tmp_path: Path, setup, capsys, uri: str, says: str) -> None:  # type: ignore[no-untyped-def]
    bundle, folder = setup
    rc, out, err = cli(capsys, "run", folder, "--bundle", bundle, "-o", uri, "--spool", tmp_path / "spool")
    line = one_error_line(err)
    assert rc == 2 and says in line and "pw-secret" not in err, err
    assert not out


def test_mqtt_flags_need_an_mqtt_output(tmp_path: Path, setup, capsys) -> None:  # type: ignore[no-untyped-def]
    bundle, folder = setup
    rc, out, err = cli(capsys, "run", folder, "--bundle", bundle, "-o", tmp_path / "r.jsonl", "--mqtt-qos", "0")
    assert rc == 2 and "are for -o mqtt://" in one_error_line(err)
    rc, out, err = cli(capsys, "run", folder, "--bundle", bundle, "-o", "mqtt://h/t", "--mqtt-qos", "3")
    assert rc == 2 and "--mqtt-qos 3" in one_error_line(err)


def test_topic_template_and_status_topic() -> None:
    t = parse_mqtt_uri("mqtt://u:p%40ss-word@broker.local/site/{stream}/results")
    assert t.port == 1883 and t.parts.password == "p@ss-word" and t.topic_for("3") == "site/3/results"
    assert t.status_topic == "site/status"
    assert parse_mqtt_uri("mqtts://b/plain").status_topic == "plain/status" and parse_mqtt_uri("mqtts://b/x").port == 8883
    assert redact("connecting mqtt://u:p%40ss-word@broker.local/site") == "connecting mqtt://u:***@broker.local/site"
    assert "p@ss-word" not in redact("paho said: bad p@ss-word")  # remembered once parsed
    r = Result(0, "a", [])
    assert stream_key(r) == "0"  # until records carry a stream


@pytest.mark.slow  # a real mosquitto broker
@needs_broker
def test_broker_not_there_at_start_spools_then_next_run_sends_first(tmp_path: Path, setup, capsys) -> None:  # type: ignore[no-untyped-def]
    """A name that does not resolve and a port nobody listens on: one warning each, results spooled, exit 0,
    and the spool kept; the next run (broker up) sends the old results first, in order, then its own."""
    bundle, folder = setup
    spool = tmp_path / "spool"
    rc, out, err = cli(capsys, "run", folder, "--bundle", bundle, "-o", "mqtt://u:hunter22@no-such-broker.invalid/t",
                       "--spool", spool)
    assert rc == 0, err
    assert err.count("cannot reach no-such-broker.invalid") == 1 and "hunter22" not in err
    assert f"{N_IMAGES} result(s) not acknowledged" in err
    assert len(list(spool.glob("*.msg"))) == N_IMAGES
    with Broker(tmp_path / "broker") as broker:
        port = broker.port
        broker.kill()
        rc, out, err = cli(capsys, "run", folder, "--bundle", bundle, "-o", f"mqtt://127.0.0.1:{port}/t", "--spool", spool)
        assert rc == 0 and err.count(f"cannot reach 127.0.0.1:{port}") == 1, err
        assert len(list(spool.glob("*.msg"))) == 2 * N_IMAGES
        broker.start()
        sub = Subscriber(port, "t")
        try:
            rc, out, err = cli(capsys, "run", folder, "--bundle", bundle, "-o", f"mqtt://127.0.0.1:{port}/t",
                               "--spool", spool)
            assert rc == 0 and "sent first" in err, err
            assert wait_until(lambda: len(sub.payloads("t")) >= 3 * N_IMAGES)
            recs = records(sub, "t")
            runs = [r["run_id"] for r in recs]
            # three runs' results, each run's in order, the runs in the order they ran
            assert [r["seq"] for r in recs] == list(range(N_IMAGES)) * 3
            assert runs == sorted(runs, key=runs.index) and len(set(runs)) in (1, 3)
            assert not list(spool.glob("*.msg"))
        finally:
            sub.close()


def test_spool_bound_drops_the_oldest_and_counts_them(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "s", max_bytes=3 * 110)
    for i in range(10):
        spool.put("t", bytes([65 + i]) * 100)
    assert spool.dropped == 7 and len(spool) == 3 and spool.bytes <= 3 * 110
    taken = [spool.take() for _ in range(4)]
    assert [m[2][:1] for m in taken[:3] if m] == [b"H", b"I", b"J"] and taken[3] is None
    spool.remove(taken[0][0])  # type: ignore[index]
    spool.close()
    again = Spool(tmp_path / "s", max_bytes=10_000)  # a restart: the unacknowledged ones, in order
    assert again.recovered == 2 and [again.take()[2][:1] for _ in range(2)] == [b"I", b"J"]  # type: ignore[index]
    with pytest.raises(Exception, match="another run uses this spool"):
        Spool(tmp_path / "s", max_bytes=10_000)
    again.close()


@needs_paho
def test_the_network_thread_is_not_held_up_by_a_writes_fsync(tmp_path: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """A write's fsyncs (0.5-8 ms measured, far longer on a busy SD card) happen outside the lock the network
    thread takes to send and settle acknowledgements: while one write is stuck in fsync, that lock is free, and
    the message is counted (and handed out) only once its file is durable. Written to the real disk; only
    fsync is held back."""
    import os
    import threading

    from erudite_edge.outputs import spool as spool_module

    sink = MqttSink(parse_mqtt_uri(f"mqtt://127.0.0.1:{free_port()}/t"), MqttOptions(spool=tmp_path / "spool"), "abc")
    in_fsync, release = threading.Event(), threading.Event()
    real_fsync = os.fsync

    def slow_fsync(fd: int) -> None:
        in_fsync.set()
        assert release.wait(10)
        real_fsync(fd)

    monkeypatch.setattr(spool_module.os, "fsync", slow_fsync)
    writer = threading.Thread(target=sink.write, args=(Result(0, "f0", [ClassScore(1, 0, "red", "colors", 0.9)], seq=0), None))
    writer.start()
    try:
        assert in_fsync.wait(10)
        got = sink._lock.acquire(timeout=2)  # what the network thread takes between loop() calls
        assert got, "the sink's lock was held across the spool's fsync"
        try:
            assert len(sink.spool) == 0 and sink.spool.unsent() == 0  # not durable yet: not counted, not sendable
        finally:
            sink._lock.release()
    finally:
        release.set()
        writer.join(10)
        monkeypatch.setattr(spool_module.os, "fsync", real_fsync)
    assert len(sink.spool) == 1 and sink.spool.unsent() == 1
    sink.abort()


@pytest.mark.slow  # fills a spool, over 1 s
@needs_paho
def test_spool_full_warns_once_and_counts_at_the_end(tmp_path: Path, setup, capsys) -> None:  # type: ignore[no-untyped-def]
    bundle, folder = setup
    port = free_port()  # nobody listens: everything stays in the spool
    rc, out, err = cli(capsys, "run", folder, "--bundle", bundle, "-o", f"mqtt://127.0.0.1:{port}/t",
                       "--spool", tmp_path / "spool", "--spool-max-mb", "0.001")
    assert rc == 0, err
    assert err.count("is full") == 1
    kept = len(list((tmp_path / "spool").glob("*.msg")))
    assert 0 < kept < N_IMAGES and f"{N_IMAGES - kept} result(s) were dropped" in err


@pytest.mark.slow  # a real mosquitto broker
@needs_broker
def test_a_failing_callback_does_not_stop_the_network_loop(tmp_path: Path) -> None:
    """The first acknowledgement's handler raises and paho lets it out of its loop (suppress_exceptions off, as
    a paho bug would): the supervisor reports it once and starts the loop again; every message arrives, in
    order, and leaves the spool."""
    with Broker(tmp_path / "broker") as broker:
        sub = Subscriber(broker.port, "t")
        warnings: list[str] = []
        sink = MqttSink(parse_mqtt_uri(f"mqtt://127.0.0.1:{broker.port}/t"), MqttOptions(spool=tmp_path / "spool"),
                        "abc", warn=warnings.append)
        original = sink._on_publish
        calls = [0]

        def flaky(*args):  # type: ignore[no-untyped-def]
            calls[0] += 1
            if calls[0] == 1:
                raise RuntimeError("boom in a callback")
            original(*args)

        sink._client.suppress_exceptions = False
        sink._client.on_publish = flaky
        try:
            for i in range(20):
                sink.write(Result(i, f"f{i}", [ClassScore(1, 0, "red", "colors", 0.9)], seq=i), None)  # type: ignore[arg-type]
                time.sleep(0.01)
            assert wait_until(lambda: len(sub.payloads("t")) >= 20)
            seqs = [json.loads(p)["seq"] for p in sub.payloads("t")]
            assert list(dict.fromkeys(seqs)) == list(range(20))  # first arrivals in order; resent ones may repeat
        finally:
            sink.commit()
            sub.close()
        assert sum("network loop failed" in w and "boom in a callback" in w for w in warnings) == 1, warnings
        assert sink.published == 20 and not list((tmp_path / "spool").glob("*.msg"))


@pytest.mark.slow  # a real mosquitto broker
@needs_broker
@pytest.mark.parametrize("qos", [1, 2])
def test_one_thread_writes_the_socket_and_order_holds_over_tls(tmp_path: Path, qos: int, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """300 results written in a burst over TLS: while the sink is up only its network thread writes to the
    socket, and every result arrives (first arrivals) in order. The drain thread once published itself while
    the network thread wrote acknowledgements: two threads popped paho's one packet queue and sent on one TLS
    socket, and a run at QoS 2 delivered seq 0, 2, 3, 4, 5, 1."""
    import ssl
    import threading

    writers: set[str] = set()
    send = ssl.SSLSocket.send

    def recording_send(self, data, flags=0):  # type: ignore[no-untyped-def]
        writers.add(threading.current_thread().name)
        return send(self, data, flags)

    n = 300
    broker = Broker(tmp_path / "broker", tls=True)
    with broker:
        sub = Subscriber(broker.port, "b")  # plain TCP: only the sink's client sends on an SSLSocket
        sink = MqttSink(parse_mqtt_uri(f"mqtts://127.0.0.1:{broker.tls_port}/b"),
                        MqttOptions(qos=qos, ca=Path(broker.certs["ca"]), spool=tmp_path / "spool"), "abc")
        monkeypatch.setattr(ssl.SSLSocket, "send", recording_send)
        try:
            pad = "x" * 20_000
            for i in range(n):
                sink.write(Result(i, f"f{i}-{pad}", [ClassScore(1, 0, "red", "colors", 0.9)], seq=i), None)  # type: ignore[arg-type]
            assert wait_until(lambda: len(sub.payloads("b")) >= n, timeout=60)
            monkeypatch.setattr(ssl.SSLSocket, "send", send)
            assert writers == {"mqtt-network"}, writers
        finally:
            sink.commit()
            sub.close()
        seqs = [json.loads(p)["seq"] for p in sub.payloads("b")]
        assert list(dict.fromkeys(seqs)) == list(range(n))
        assert sink.published == n and not list((tmp_path / "spool").glob("*.msg"))
