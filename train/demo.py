"""The training side of `erudite-edge demo`: the variants it trains, how much it does (DemoPlan, with the
TrainConfig of each variant), and the analysis of ours against the zoo (`erudite-edge analyze`'s Python API)
with demo.json's digest of it. The data mixture is train/demo_data.py. The orchestration, which drives the
CLI's export, run and bench commands, is the command line's own demo module (cli/demo.py of the runtime
package); it imports this one, never the reverse.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from train.config import TrainConfig

VARIANTS = ("baseline", "baseline+", "ours", "single")


@dataclass(frozen=True)
class DemoPlan:
    """How much the demo does. The full plan is sized to finish in under 10 minutes on a quiet 2-core machine
    (README "Two commands"); the quick plan is what the test suite runs, sized to learn enough for the test to
    check real content (accuracy above chance, held-out images given the right data set) with under a minute of
    CPU for training (37 CPU s measured)."""

    max_per_dataset: int | None
    image_size: int
    epochs: int
    steps_per_epoch: int | None
    batch_per_dataset: int
    lr: float
    backbone_lr: float
    val_fraction: float
    precise_bn_batches: int
    calib_count: int
    heldout: int
    bench_args: tuple[str, ...]
    analysis: dict[str, Any]

    @classmethod
    def make(cls, quick: bool) -> "DemoPlan":
        # Both plans recompute the BatchNorm statistics after each epoch (precise BN): EfficientNet-Lite's
        # momentum 0.01 otherwise leaves most of ImageNet's statistics in place after a short training, and the
        # model evaluates far below what it learned (quick demo, ours: digits/mnist/faces 0/8/53 % -> 24/47/97 %;
        # the full plan's baseline after 2 epochs: validation 73 % while training reached 89 %).
        if quick:
            # 150 images per data set (112 train, all of them: no validation split), 1 epoch of 14 steps
            return cls(max_per_dataset=150, image_size=48, epochs=1, steps_per_epoch=None, batch_per_dataset=8,
                       lr=0.1, backbone_lr=0.01, val_fraction=0.0, precise_bn_batches=8, calib_count=16, heldout=30,
                       # shorter time-based runs than bench's defaults (3 s per series, 3 memory processes per model)
                       bench_args=("--iters", "3", "--warmup", "1", "--rounds", "3", "--min-duration-s", "0.2",
                                   "--warmup-ms", "20", "--memory-repeats", "1"),
                       analysis={"tsne": False, "mmd_permutations": 50, "attention_images": 0})
        # 1,200 images per data set (faces: all 200), 25 % test, 10 % of train for validation: 810 / 810 / 135
        # training images, 2 epochs of 101 balanced batches of 8 per data set. Single's fair schedule
        # (train/single_schedule.py): coarse, digits and mnist 2 epochs, faces 13 epochs of 16 steps (1,664 images
        # against the joint run's 1,616); the quick plan's parts all keep its 1 epoch (equal data sets)
        return cls(max_per_dataset=1200, image_size=64, epochs=2, steps_per_epoch=None, batch_per_dataset=8,
                   lr=0.05, backbone_lr=0.005, val_fraction=0.1, precise_bn_batches=16, calib_count=128, heldout=96,
                   bench_args=("--iters", "30", "--warmup", "3", "--min-duration-s", "1", "--memory-repeats", "2",
                               "--data-limit", "200"),
                   analysis={"tsne": True, "tsne_max_samples": 300, "mmd_permutations": 100, "mmd_max_samples": 300,
                             "attention_images": 3})

    def train_config(self, data: list[str], out: Path, variant: str, workers: int = 0) -> TrainConfig:
        """The training run of one variant under this plan: EfficientNet-Lite0 with ImageNet weights, on the CPU, seed 0."""
        return TrainConfig(
            data=data, out=str(out), variant=variant, backbone="efficientnet_lite0",
            pretrained=True, epochs=self.epochs, batch_per_dataset=self.batch_per_dataset, input_size=self.image_size,
            embed_dim=256, hidden=256, lr=self.lr, backbone_lr=self.backbone_lr, val_fraction=self.val_fraction,
            precise_bn_batches=self.precise_bn_batches, workers=workers, steps_per_epoch=self.steps_per_epoch,
            device="cpu", seed=0,
        )


def analyze_ours(runs: dict[str, Path], data: list[str], out: Path, plan: DemoPlan) -> dict[str, Any]:
    """`erudite-edge analyze --checkpoint RUNS/ours --reference RUNS/single` on the test splits, with the plan's
    settings of t-SNE, MMD and attention (cheaper than analyze's defaults: see analyze_command)."""
    from train.analysis.report import analyze
    from train.analysis.tables import AnalyzeOptions

    opts = AnalyzeOptions(device="cpu", progress=False, **plan.analysis)
    return analyze(runs["ours"], data, out, reference=runs["single"], options=opts)


def analysis_summary(r: dict[str, Any], out: Path, runs: dict[str, Path], data: list[str]) -> dict[str, Any]:
    """demo.json's digest of the analysis: per data set top-1, right data set and SC of ours and of the zoo,
    Positive / Negative against the zoo, MMD^2 between data sets, the report's files."""
    ref = (r.get("reference") or {}).get("within", {})
    per = {}
    for name, w in r["within"].items():
        z, t = ref.get(name), (r.get("transfer") or {}).get(name)
        per[name] = {"top1": w["top1"], "right_dataset": w["right_dataset"], "sc": w["fused"]["sc"],
                     "reference_top1": z["top1"] if z else None, "reference_sc": z["fused"]["sc"] if z else None,
                     "positive": t["positive"] if t else None, "negative": t["negative"] if t else None}
    return {"command": analyze_command(runs, data, out, r["settings"]), "report": str(out / "analysis.md"),
            "figures": r["figures"], "per_dataset": per,
            "mmd2": {f"{p['pair'][0]}-{p['pair'][1]}": {"mmd2": p["mmd2"], "p_value": p["p_value"]} for p in r["between"]},
            "settings": {k: r["settings"][k] for k in ("tsne", "mmd_permutations", "mmd_max_samples", "tsne_max_samples",
                                                       "attention_images")}}


def analyze_command(runs: dict[str, Path], data: list[str], out: Path, settings: dict[str, Any]) -> str:
    """The `erudite-edge analyze` command line that writes the same report (the demo calls its Python API)."""
    s = settings
    return (f"erudite-edge analyze --checkpoint {runs['ours']} --reference {runs['single']} "
            f"{' '.join(f'--data {d}' for d in data)} --out {out} --device cpu --mmd-permutations {s['mmd_permutations']} "
            f"--mmd-max-samples {s['mmd_max_samples']} {'--tsne' if s['tsne'] else '--no-tsne'} "
            f"--tsne-max-samples {s['tsne_max_samples']} --attention-images {s['attention_images']}")
