"""Soak `run -o mqtt://` against a broker that stays down for minutes (the suite's test keeps it down 20 s).

    python tools/mqtt_soak.py                          # 3 outages of 180 s, 30 s up between, testsrc://30
    python tools/mqtt_soak.py --down 600 --outages 1 --fps 15 --spool-max-mb 50 --bundle BUNDLE

Starts a real mosquitto on a free port of 127.0.0.1 (tests/mqtt_broker.py: Debian's `mosquitto`, with
persistence, a password file), a persistent QoS 1 subscriber, and `erudite-edge run testsrc://FPS -o
mqtt://soak:PASSWORD@127.0.0.1:PORT/soak/{stream} --spool DIR` as a child process; stops the broker
(SIGTERM) for `--down` seconds, `--outages` times, with `--up` seconds between; then stops the run (SIGTERM,
as systemd does) and checks what the subscriber got: every result the run classified arrived at least once,
in order, none lost (unless the spool overflowed: then at most the dropped count is missing).
Prints the counts, the spool's peak size and the run's peak RSS; exit 0 when the check holds, 1 otherwise.
Without --bundle a tiny nearest-colour bundle is made (tests/onnx_fixtures.py).
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))

from mqtt_broker import Broker, Subscriber  # noqa: E402
from real_processes import CliRun, kill_left  # noqa: E402


def rss_mb(pid: int) -> float:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def spool_mb(folder: Path) -> float:
    """The spooled messages' size; files the drain removes while this looks are skipped."""
    total = 0
    for p in folder.glob("*.msg"):
        try:
            total += p.stat().st_size
        except FileNotFoundError:
            pass
    return total / 2**20


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--down", type=float, default=180.0, help="seconds the broker stays down, each outage")
    ap.add_argument("--up", type=float, default=30.0, help="seconds up between outages")
    ap.add_argument("--outages", type=int, default=3)
    ap.add_argument("--fps", type=int, default=30)
    ap.add_argument("--spool-max-mb", type=float, default=100.0)
    ap.add_argument("--bundle", type=Path, default=None)
    args = ap.parse_args()

    work = Path(tempfile.mkdtemp(prefix="mqtt-soak-"))
    bundle = args.bundle
    if bundle is None:
        from onnx_fixtures import make_erudite_bundle

        bundle = make_erudite_bundle(work / "bundle").root
    spool = work / "spool"
    broker = Broker(work / "broker", users={"soak": "soak-password", "checker": "checker-password"}).start()
    sub = Subscriber(broker.port, "soak/#", auth=("checker", "checker-password"))
    run = CliRun("run", f"testsrc://{args.fps}", "--bundle", str(bundle), "-o",
                 f"mqtt://soak:soak-password@127.0.0.1:{broker.port}/soak/{{stream}}", "--spool", str(spool),
                 "--spool-max-mb", str(args.spool_max_mb))
    peak_spool = peak_rss = 0.0

    def watch(seconds: float) -> None:
        nonlocal peak_spool, peak_rss
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            if run.proc.poll() is not None:
                raise SystemExit(f"the run ended early:\n{run.stderr}")
            peak_spool = max(peak_spool, spool_mb(spool))
            peak_rss = max(peak_rss, rss_mb(run.proc.pid))
            time.sleep(1.0)

    try:
        watch(args.up)
        for i in range(args.outages):
            broker.kill()
            print(f"outage {i + 1}/{args.outages}: broker down for {args.down:g} s", flush=True)
            watch(args.down)
            broker.start()
            print(f"outage {i + 1}/{args.outages}: broker back; draining", flush=True)
            watch(args.up)
        code = run.stop(timeout=120)
        time.sleep(2.0)
    finally:
        kill_left(run.proc)
        sub.close()
        broker.__exit__()
    seqs: list[int] = []
    seen: set[int] = set()
    for p in sub.payloads("soak/"):
        s = json.loads(p)["seq"]
        if s not in seen:
            seen.add(s)
            seqs.append(s)
    frames_m = re.search(r"frames classified\D+(\d+)", run.stderr)
    frames = int(frames_m.group(1)) if frames_m else -1
    dropped_m = re.search(r"(\d+) result\(s\) were dropped", run.stderr)
    dropped = int(dropped_m.group(1)) if dropped_m else 0
    left = len(list(spool.glob("*.msg")))
    in_order = seqs == sorted(seqs)
    # nothing lost: every result arrived, or (the spool overflowed) all but at most the dropped ones (a dropped
    # one may still arrive: it was in flight, held by the client, when its file went)
    complete = seqs == list(range(frames)) if not dropped else frames - dropped <= len(seqs) <= frames
    print(json.dumps({"exit": code, "frames": frames, "received": len(seqs), "duplicates": len(sub.payloads("soak/")) - len(seqs),
                      "dropped_from_full_spool": dropped, "left_in_spool": left, "in_order": in_order,
                      "none_lost": complete, "peak_spool_mb": round(peak_spool, 2), "peak_rss_mb": round(peak_rss, 1),
                      "down_s": args.down, "outages": args.outages, "fps": args.fps}, indent=1))
    return 0 if in_order and complete and code == 143 else 1


if __name__ == "__main__":
    sys.exit(main())
