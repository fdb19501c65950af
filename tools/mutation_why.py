"""The mutations issue 19 names (its "Why"), each applied to a copy of the tracked tree and tested with the test that
is meant to kill it: prints KILLED or SURVIVED per mutation. `python tools/mutation_why.py [INDEX ...]`.
A hand-made complement to tools/mutation.py (cosmic-ray cannot make these: they change names, not operators)."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# (what, module, text, mutated text, the test that must fail)
MUTATIONS = [
    ("resume without restoring the RNG state (2 DataLoader workers)", "train/loop.py", '        _set_rng_state(st["rng"])\n', '        pass  # RNG state not restored\n',
     "tests/train/test_train_run.py::test_resume_with_two_dataloader_workers_restores_rng_and_weights"),
    ("bench throughput ratio inverted", "benchmarks/bench.py", '"throughput": row["erudite"]["throughput_ips"] / row["zoo"]["throughput_ips"]}', '"throughput": row["zoo"]["throughput_ips"] / row["erudite"]["throughput_ips"]}',
     "tests/bench/test_bench.py::test_erudite_zoo_ratios_are_erudite_over_zoo_with_paired_intervals"),
    ("bench throughput ratio inverted (end to end)", "benchmarks/bench.py", '"throughput": row["erudite"]["throughput_ips"] / row["zoo"]["throughput_ips"]}', '"throughput": row["zoo"]["throughput_ips"] / row["erudite"]["throughput_ips"]}',
     "tests/bench/test_bench.py::test_bench_command_writes_json_markdown_and_png"),
    ("bench throughput interval inverted", "benchmarks/bench.py", '"throughput": throughput_ratio_ci(e.round_ips, z.round_ips,', '"throughput": throughput_ratio_ci(z.round_ips, e.round_ips,',
     "tests/bench/test_bench.py::test_erudite_zoo_ratios_are_erudite_over_zoo_with_paired_intervals"),
    ("INT8 accuracy from the FP32 logits", "export/derive.py", "bundle, ref_logits, new_logits, inputs.dataset_ids", "bundle, ref_logits, ref_logits, inputs.dataset_ids",
     "tests/export/test_derive.py::test_reduced_accuracy_is_scored_on_the_reduced_models_own_logits"),
    ("cross_dataset_rate inverted", "train/evaluate.py", "(owner[p] != n).mean()", "(owner[p] == n).mean()",
     "tests/train/test_evaluate.py::test_joint_metrics_counts_other_data_sets_classes_as_wrong"),
    ("meta-test data set always the first", "train/two_stage.py", "test_dataset = present[int(torch.randint(len(present), (1,), generator=self.generator))]", "test_dataset = present[0]",
     "tests/train/test_two_stage.py::test_meta_test_data_set_is_drawn_from_the_seeded_generator"),
]


def main(only: list[str]) -> int:
    survived = 0
    for i, (what, module, old, new, test) in enumerate(MUTATIONS):
        if only and str(i) not in only:
            continue
        with tempfile.TemporaryDirectory(prefix="why-") as tmp:
            files = subprocess.run(["git", "ls-files", "-co", "--exclude-standard"], cwd=ROOT, capture_output=True, text=True, check=True).stdout.split("\n")
            for f in filter(None, files):
                if (ROOT / f).is_file():
                    (Path(tmp) / f).parent.mkdir(parents=True, exist_ok=True)
                    shutil.copy2(ROOT / f, Path(tmp) / f)
            src = (Path(tmp) / module).read_text()
            assert src.count(old) == 1, (module, old)
            env = {**os.environ, "PYTHONPATH": tmp, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "PYTHONDONTWRITEBYTECODE": "1"}
            command = [sys.executable, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider", test]
            if subprocess.run(command, cwd=tmp, env=env, capture_output=True).returncode != 0:  # the control
                print(f"FAILS UNMUTATED: {test}", flush=True)
                survived += 1
                continue
            (Path(tmp) / module).write_text(src.replace(old, new))
            r = subprocess.run(command, cwd=tmp, env=env, capture_output=True, text=True)
            fail = [line for line in r.stdout.splitlines() if line.startswith(("E ", "FAILED"))][:2]
            survived += r.returncode == 0
            print(f"{'KILLED' if r.returncode != 0 else 'SURVIVED'}: {what} ({module}: {old.strip()!r} -> {new.strip()!r}) by {test}; {fail}", flush=True)
    return 1 if survived else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
