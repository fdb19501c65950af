"""What `--spool-sync always` costs on this disk: the time of one `Spool.put` (a ~500-byte result record) with
each message and its folder fsynced ("always", the default) against "off", interleaved in blocks so that both
see the same disk and load.

    python tools/spool_sync_cost.py [--dir DIR] [--messages 2000] [--blocks 10]

DIR: a folder on the disk the spool will live on (default: a temporary folder under ./.spool-cost, removed at
the end). Prints per-message median and p99 in ms for each mode, and the messages per second one thread reaches.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import tempfile
import time
from pathlib import Path

from erudite_edge.outputs.spool import SYNC_MODES, Spool

PAYLOAD = b'{"record_version":1,"seq":0,"label":"Black_footed_Albatross","dataset":"cub","score":0.91,' + b'"x":"' + b"p" * 380 + b'"}'


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--dir", type=Path, default=None)
    ap.add_argument("--messages", type=int, default=2000)
    ap.add_argument("--blocks", type=int, default=10)
    a = ap.parse_args()
    base = a.dir or Path(".spool-cost")
    base.mkdir(parents=True, exist_ok=True)
    root = Path(tempfile.mkdtemp(dir=base))
    times: dict[str, list[float]] = {m: [] for m in SYNC_MODES}
    try:
        spools = {m: Spool(root / m, 10**10, m) for m in SYNC_MODES}
        per_block = max(1, a.messages // a.blocks)
        for _ in range(a.blocks):
            for mode, spool in spools.items():
                for _ in range(per_block):
                    t0 = time.perf_counter()
                    n = spool.put("site/cam0", PAYLOAD)
                    times[mode].append((time.perf_counter() - t0) * 1e3)
                    spool.remove(n)  # the broker acknowledged it: the spool stays small, as when connected
        for s in spools.values():
            s.close()
    finally:
        shutil.rmtree(root, ignore_errors=True)
        if a.dir is None:
            shutil.rmtree(base, ignore_errors=True)
    for mode, ts in times.items():
        ts.sort()
        med, p99 = statistics.median(ts), ts[int(0.99 * (len(ts) - 1))]
        print(f"{mode:6s} n={len(ts)} put median {med:.3f} ms, p99 {p99:.3f} ms, {1e3 / statistics.fmean(ts):.0f} messages/s")


if __name__ == "__main__":
    main()
