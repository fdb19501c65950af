"""Mutation testing (`make mutation`): cosmic-ray mutates one module at a time and runs that module's
tests against every mutant; the share of mutants the tests kill goes to benchmarks/results/mutation.md.

    python tools/mutation.py                          # every module below (hours on 2 cores)
    python tools/mutation.py train/evaluate.py        # one module
    python tools/mutation.py --max-mutants 40 ...     # an even sample of each module's mutants

cosmic-ray rewrites the module on disk while a mutant is tested, so the run works on a copy of the
tracked files in a temporary folder: a run that is stopped never leaves a mutant in the working tree.
Each mutant runs its tests in a fresh process (torch cannot be forked safely), with a timeout of four
times the unmutated run; a mutant that times out counts as killed, one that cannot be imported as
killed too (cosmic-ray: "incompetent"), as mutation tools usually count them. Not in CI: too slow.
"""

from __future__ import annotations

import argparse
import os
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# the cosmic-ray beside this interpreter (a venv's bin/ need not be on PATH), else the one on PATH
COSMIC_RAY = shutil.which("cosmic-ray", path=str(Path(sys.executable).parent)) or shutil.which("cosmic-ray")

# module -> the tests that exercise it (pytest arguments)
TARGETS: dict[str, str] = {
    "train/evaluate.py": "tests/train/test_evaluate.py",
    "export/derive.py": "tests/export/test_derive.py",
    "benchmarks/goals.py": "tests/bench/test_goals.py",
    "benchmarks/stats.py": "tests/bench/test_stats.py",
    "erudite_edge/inference/models.py": "tests/runtime/inference/test_run.py -k zoo",
    "train/modules.py": "tests/train/test_modules.py tests/train/test_model.py",
    # the two DDP tests: the hand all-reduce of theta's gradients and the SyncBatchNorm switch (two gloo ranks)
    "train/two_stage.py": "tests/train/test_two_stage.py tests/train/test_ddp_equivalence.py::test_two_processes_x8_give_the_gradients_of_one_process_x16"
                          " tests/train/test_ddp_equivalence.py::test_stage_two_points_sync_batchnorm_at_the_own_rank_group_and_back",
}


@dataclass
class ModuleScore:
    module: str
    tests: str
    total: int = 0
    killed: int = 0
    survived: int = 0
    incompetent: int = 0
    seconds: float = 0.0
    sampled_from: int = 0
    equivalent: int = 0  # mutants inside type annotations (never evaluated), left out
    survivors: list[str] = field(default_factory=list)
    max_mutants: int | None = None

    @property
    def score(self) -> float:
        done = self.killed + self.survived + self.incompetent
        return (self.killed + self.incompetent) / done if done else 0.0


def _copy_tree(dest: Path) -> None:
    files = subprocess.run(["git", "ls-files", "-co", "--exclude-standard"], cwd=ROOT, capture_output=True, text=True,
                           check=True).stdout.split("\n")
    for f in filter(None, files):
        src = ROOT / f
        if src.is_file():
            (dest / f).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / f)


def _survivor_line(item, result) -> str:  # noqa: ANN001
    m = item.mutations[0]
    diff = [ln for ln in (result.diff or "").splitlines() if ln.startswith(("-", "+")) and not ln.startswith(("---", "+++"))]
    return f"line {m.start_pos[0]}: {m.operator_name.split('/')[-1]}: " + " => ".join(d[1:].strip() for d in diff[:2])


def annotation_spans(source: str) -> list[tuple[tuple[int, int], tuple[int, int]]]:
    """(start, end) positions (line 1-based, column 0-based) of every type annotation in a module. With
    `from __future__ import annotations` they are never evaluated, so a mutant there (`str | None` ->
    `str + None`) is equivalent: it cannot be killed and is left out of the score."""
    import ast

    spans = []
    for node in ast.walk(ast.parse(source)):
        found = []
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            args = node.args
            found = [a.annotation for a in [*args.posonlyargs, *args.args, *args.kwonlyargs, args.vararg, args.kwarg]
                     if a is not None and a.annotation is not None] + [node.returns]
        elif isinstance(node, ast.AnnAssign):
            found = [node.annotation]
        spans += [((a.lineno, a.col_offset), (a.end_lineno, a.end_col_offset)) for a in found if a is not None]
    return spans


def run_module(module: str, tests: str, work: Path, max_mutants: int | None) -> ModuleScore:
    from cosmic_ray.work_db import WorkDB, use_db
    from cosmic_ray.work_item import TestOutcome, WorkerOutcome, WorkResult

    score = ModuleScore(module, tests, max_mutants=max_mutants)
    env = {**os.environ, "PYTHONPATH": str(work), "OMP_NUM_THREADS": "1", "PYTHONDONTWRITEBYTECODE": "1",  # no stale .pyc
           "ERUDITE_RANKS_TIMEOUT": "60"}  # a mutant that hangs a collective fails after 60 s, not 240 (tests/ranks.py)
    command = f"{shlex.quote(sys.executable)} -m pytest -x -q -p no:cacheprovider {tests}"
    t0 = time.perf_counter()
    base = subprocess.run(command, shell=True, cwd=work, env=env, capture_output=True, text=True)
    baseline = time.perf_counter() - t0
    if base.returncode != 0:
        raise SystemExit(f"{module}: its tests fail without any mutation ({tests}); fix them first\n{base.stdout[-2000:]}")
    cfg = work / f".mutation-{module.replace('/', '_')}.toml"
    db = cfg.with_suffix(".sqlite")
    cfg.write_text(
        "[cosmic-ray]\n"
        f'module-path = "{module}"\n'
        f"timeout = {max(30.0, 4 * baseline):.0f}\n"
        "excluded-modules = []\n"
        f"test-command = '''{command} '''\n"  # the space: a command ending in ' would close the string early
        "[cosmic-ray.distributor]\nname = \"local\"\n"
    )
    subprocess.run([COSMIC_RAY, "init", str(cfg), str(db)], cwd=work, env=env, check=True, capture_output=True)
    spans = annotation_spans((work / module).read_text())

    def in_annotation(item) -> bool:  # noqa: ANN001
        pos = tuple(item.mutations[0].start_pos)
        return any(lo <= pos < hi for lo, hi in spans)

    with use_db(str(db), WorkDB.Mode.open) as wdb:
        items = list(wdb.work_items)
        skip = [it for it in items if in_annotation(it)]
        score.equivalent = len(skip)
        items = [it for it in items if not in_annotation(it)]
        score.sampled_from = len(items)
        if max_mutants and len(items) > max_mutants:  # an even spread over the module, deterministic
            keep = {items[round(i * (len(items) - 1) / (max_mutants - 1))].job_id for i in range(max_mutants)}
            skip += [it for it in items if it.job_id not in keep]
        for it in skip:
            wdb.set_result(it.job_id, WorkResult(worker_outcome=WorkerOutcome.SKIPPED))
    print(f"{module}: {score.sampled_from} mutants, testing {min(score.sampled_from, max_mutants or score.sampled_from)} "
          f"(baseline {baseline:.1f}s: {tests})", file=sys.stderr, flush=True)
    subprocess.run([COSMIC_RAY, "exec", str(cfg), str(db)], cwd=work, env=env, check=True)
    with use_db(str(db), WorkDB.Mode.open) as wdb:
        for item, result in wdb.completed_work_items:
            if result.test_outcome is None:
                continue  # skipped (not in the sample)
            score.total += 1
            if result.test_outcome == TestOutcome.KILLED:
                score.killed += 1
            elif result.test_outcome == TestOutcome.INCOMPETENT:
                score.incompetent += 1
            else:
                score.survived += 1
                score.survivors.append(_survivor_line(item, result))
    score.seconds = time.perf_counter() - t0
    return score


def _previous(path: Path) -> tuple[dict[str, str], dict[str, list[str]], list[str]]:
    """What an earlier report holds: table rows and survivor sections by module, and the free "## Notes"
    section, so a run of some modules keeps the others' figures."""
    rows: dict[str, str] = {}
    sections: dict[str, list[str]] = {}
    notes: list[str] = []
    if not path.is_file():
        return rows, sections, notes
    current: list[str] | None = None
    for line in path.read_text().splitlines():
        if line.startswith("| ") and not line.startswith(("| module ", "| --- ")):
            rows[line.split("|")[1].strip()] = line
            continue
        if line.startswith("## "):
            m = re.match(r"## Surviving mutants of (\S+)", line)
            current = sections.setdefault(m.group(1), []) if m else notes
            if not m:
                notes.clear()
            continue
        if current is not None:
            current.append(line)
    return rows, sections, notes


def write_report(scores: list[ModuleScore], path: Path, command: str) -> None:
    """The scores of this run; rows of modules this run did not test are kept from the earlier report."""
    old_rows, old_sections, notes = _previous(path)
    lines = [
        "# Mutation score",
        "",
        f"`python tools/mutation.py [MODULES] [--max-mutants N]` (cosmic-ray {_version()}; last: `{command}`), one module",
        "at a time, each mutant against that module's tests; a timeout or an import failure counts as killed.",
        "Goal: >= 85 % killed. Rows of modules a run did not test are kept from the earlier report.",
        "",
        "Mutants inside type annotations are left out: every module here has `from __future__ import annotations`,",
        "so they are never evaluated and no test can kill them.",
        "",
        "| module | tests | mutants tested | killed | survived | score | left out (annotations) | minutes | command |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    new = {s.module: s for s in scores}
    for module in list(old_rows) + [m for m in new if m not in old_rows]:
        s = new.get(module)
        if s is None:
            lines.append(old_rows[module])
            continue
        tested = f"{s.total}" + (f" of {s.sampled_from}" if s.sampled_from > s.total else "")
        lines.append(f"| {s.module} | `{s.tests}` | {tested} | {s.killed + s.incompetent} | {s.survived} | "
                     f"{100 * s.score:.1f} % | {s.equivalent} | {s.seconds / 60:.1f} | "
                     f"`python tools/mutation.py {s.module}{f' --max-mutants {s.max_mutants}' if s.max_mutants else ''}` |")
    for module in list(old_rows) + [m for m in new if m not in old_rows]:
        s = new.get(module)
        body = [f"- {x}" for x in s.survivors] if s is not None else [x for x in old_sections.get(module, []) if x.strip()]
        if body:
            lines += ["", f"## Surviving mutants of {module}", ""] + body
    if any(x.strip() for x in notes):
        lines += ["", "## Notes"] + notes
    path.parent.mkdir(parents=True, exist_ok=True)
    text = "\n".join(lines).rstrip() + "\n"
    tmp = path.with_suffix(".tmp")
    tmp.write_text(text)
    tmp.replace(path)


def _version() -> str:
    from importlib.metadata import version

    return version("cosmic-ray")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("modules", nargs="*", help=f"modules to mutate (default: {', '.join(TARGETS)})")
    ap.add_argument("--max-mutants", type=int, default=None, help="test an even sample of this many mutants per module")
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "mutation.md")
    args = ap.parse_args(argv)
    unknown = [m for m in args.modules if m not in TARGETS]
    if unknown:
        print(f"no tests are mapped for {', '.join(unknown)}; known: {', '.join(TARGETS)}", file=sys.stderr)
        return 2
    if COSMIC_RAY is None:
        print("cosmic-ray is not installed: pip install -e '.[mutation]'", file=sys.stderr)
        return 2
    scores = []
    with tempfile.TemporaryDirectory(prefix="mutation-") as tmp:
        work = Path(tmp)
        _copy_tree(work)
        for module in args.modules or list(TARGETS):
            scores.append(run_module(module, TARGETS[module], work, args.max_mutants))
            write_report(scores, args.out, "python tools/mutation.py " + " ".join(argv if argv is not None else sys.argv[1:]))
    for s in scores:
        print(f"{s.module}: {100 * s.score:.1f} % killed ({s.killed + s.incompetent}/{s.total})", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
