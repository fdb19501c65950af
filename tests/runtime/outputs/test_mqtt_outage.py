"""The broker goes away under a live run and comes back: a real `erudite-edge run` process classifying a live
synthetic camera (`testsrc://15`, frames at 15 fps) publishes to a real mosquitto, which is stopped for 20 s
and started again on the same port. A subscriber with a persistent session checks that every result arrived at least once, in order, none
lost (the spool had room). tools/mqtt_soak.py runs the same with the broker down for minutes. And a run
stopped (SIGTERM, SIGKILL) while the broker is away leaves every result in the spool."""

from __future__ import annotations

import json
import re
import time
from pathlib import Path

import pytest

from erudite_edge.outputs.spool import Spool
from mqtt_broker import Broker, Subscriber, needs_broker, needs_paho
from onnx_fixtures import make_erudite_bundle
from real_processes import CliRun, free_port, kill_left

pytestmark = pytest.mark.slow  # a real mosquitto broker

DOWN_S = 20.0


def first_arrivals(payloads: list[bytes]) -> list[int]:
    """The seq of each record the first time it arrived (duplicates of at-least-once dropped)."""
    seen: set[int] = set()
    out = []
    for p in payloads:
        seq = json.loads(p)["seq"]
        if seq not in seen:
            seen.add(seq)
            out.append(seq)
    return out


@needs_broker
def test_broker_down_20s_under_a_live_run_nothing_lost_in_order(tmp_path: Path) -> None:
    bundle = make_erudite_bundle(tmp_path / "bundle").root
    spool = tmp_path / "spool"
    broker = Broker(tmp_path / "broker", users={"cam": "s3cret-pw", "checker": "checker-pw"}).start()
    sub = Subscriber(broker.port, "site/cam/#", auth=("checker", "checker-pw"))
    run = CliRun("run", "testsrc://15", "--bundle", str(bundle),
                 "-o", f"mqtt://cam:s3cret-pw@127.0.0.1:{broker.port}/site/cam/{{stream}}", "--spool", str(spool))
    try:
        run.wait_for(lambda: len(sub.payloads()) >= 15, "results before the outage", timeout=60)
        broker.kill()
        down_at = time.monotonic()
        spooled = lambda: len(list(spool.glob("*.msg")))  # noqa: E731
        run.wait_for(lambda: spooled() >= 100, "results spooled while the broker is down", timeout=DOWN_S)
        time.sleep(max(0.0, DOWN_S - (time.monotonic() - down_at)))
        assert run.proc.poll() is None
        before = max(first_arrivals(sub.payloads()))
        broker.start()
        # the spool drains and live results follow it
        run.wait_for(lambda: first_arrivals(sub.payloads())[-1] >= before + 20 * 15, "results after the outage",
                     timeout=40)
        assert run.stop() == 143
        assert "s3cret-pw" not in run.stderr
        assert run.stderr.count("lost the broker") == 1, run.stderr
        left = sorted(json.loads(p.read_bytes().partition(b"\n")[2])["seq"] for p in spool.glob("*.msg"))
        time.sleep(1.0)  # the last ones on their way to the subscriber
        got = first_arrivals(sub.payloads())
        found = re.search(r"frames classified\D+(\d+)", run.stderr)
        assert found, run.stderr
        frames = int(found.group(1))
        print(run.stderr)
        assert got == list(range(frames)), "lost or out of order"  # every result the run made, in order
        assert frames > DOWN_S * 15 and not left  # a SIGTERM with the broker up: the spool emptied
    finally:
        kill_left(run.proc)
        sub.close()
        broker.__exit__()


@needs_paho
@pytest.mark.parametrize("how", ["SIGTERM", "SIGKILL"])
def test_stopped_while_the_broker_is_away_every_result_stays_in_the_spool(tmp_path: Path, how: str) -> None:
    """A live run stopped while its broker is unreachable: as systemd stops it (SIGTERM: exit 143, one line
    says how many stay) or killed outright (SIGKILL): every result it made is a whole file in the spool, in
    order, for the next run (which sends them first: test_mqtt.py); a half-written one is not left behind."""
    bundle = make_erudite_bundle(tmp_path / "bundle").root
    spool = tmp_path / "spool"
    run = CliRun("run", "testsrc://30", "--bundle", str(bundle), "-o", f"mqtt://127.0.0.1:{free_port()}/t",
                 "--spool", str(spool))
    try:
        run.wait_for(lambda: len(list(spool.glob("*.msg"))) >= 10, "results spooled", timeout=60)
        if how == "SIGTERM":
            assert run.stop() == 143
        else:
            run.proc.kill()
            run.proc.wait(timeout=30)
    finally:
        kill_left(run.proc)
    seqs = sorted(json.loads(p.read_bytes().partition(b"\n")[2])["seq"] for p in spool.glob("*.msg"))
    assert seqs == list(range(len(seqs)))
    if how == "SIGTERM":
        found = re.search(r"frames classified\D+(\d+)", run.stderr)
        assert found and int(found.group(1)) == len(seqs), run.stderr
        assert f"{len(seqs)} result(s) not acknowledged by the broker stay in" in run.stderr
    again = Spool(spool, 10**9)  # what the next run finds
    again.close()
    assert again.recovered == len(seqs) and not list(spool.glob("*.tmp"))
