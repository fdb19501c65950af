"""Check that the stages of `make test` run every test exactly once.

    python tools/test_split.py --stage "not slow" --stage slow          # the stages the Makefile runs
    python tools/test_split.py --stage "not slow" --stage slow --dir D  # another tree (run from D)

Collects the test ids of one plain run (`pytest tests --collect-only`) and those of each stage (`-m EXPR`), each
in its own pytest process as the stage runs, and compares the sets: no test in two stages, no test in none.
Prints one line with the counts; exit 0 when the stages split the whole run, 1 (and the ids that differ) when not.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from collections import Counter
from pathlib import Path


def collect(root: Path, paths: list[str], marker: str | None) -> list[str]:
    """The ids pytest collects under `paths` (run from `root`), with `-m marker` when given."""
    command = [sys.executable, "-m", "pytest", *paths, "--collect-only", "-o", "addopts=", "-q", "-p", "no:cacheprovider"]
    if marker is not None:
        command += ["-m", marker]
    done = subprocess.run(command, cwd=root, capture_output=True, text=True)
    if done.returncode not in (0, 5):  # 5: nothing collected (a stage may be empty)
        tail = (done.stdout + done.stderr).strip().splitlines()[-5:]
        raise SystemExit(f"test_split: collecting {' '.join(command[3:])} failed (exit {done.returncode}): {' | '.join(tail)}")
    return [line for line in done.stdout.splitlines() if "::" in line and not line.startswith(" ")]


def split_problems(everything: list[str], stages: dict[str, list[str]]) -> list[str]:
    """What keeps the stages from running every test of `everything` exactly once (empty: nothing)."""
    problems = []
    seen = Counter(test for ids in stages.values() for test in ids)
    for test in sorted(set(everything) - set(seen)):
        problems.append(f"in no stage: {test}")
    for test, n in sorted(seen.items()):
        if n > 1:
            problems.append(f"in {n} stages: {test}")
        if test not in set(everything):
            problems.append(f"in a stage but not in the plain run: {test}")
    return problems


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--stage", action="append", required=True, metavar="EXPR", help="one stage's -m expression")
    parser.add_argument("--dir", type=Path, default=Path(__file__).resolve().parent.parent, help="where pytest runs")
    parser.add_argument("paths", nargs="*", default=["tests"], help="what the stages run (default: tests)")
    args = parser.parse_args(argv)
    everything = collect(args.dir, args.paths, None)
    stages = {expr: collect(args.dir, args.paths, expr) for expr in args.stage}
    problems = split_problems(everything, stages)
    counts = " + ".join(f"{len(ids)} ({expr})" for expr, ids in stages.items())
    verdict = "==" if not problems else "!="
    print(f"test_split: {counts} = {sum(map(len, stages.values()))} {verdict} {len(everything)} in one run")
    for line in problems[:50]:
        print(f"  {line}")
    return 1 if problems else 0


if __name__ == "__main__":
    raise SystemExit(main())
