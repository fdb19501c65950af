"""`erudite-edge prune`: structured channel pruning of a trained run into a new run (needs torch and
Torch-Pruning: `pip install 'erudite-edge[train]'`); fine-tune it with `train --finetune`."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from erudite_edge.cli.commands.train import _require_torch


def prune_command(
    checkpoint: Path = typer.Option(..., "--checkpoint", help="The trained run (its best checkpoint) or a checkpoint directory."),
    ratio: Optional[float] = typer.Option(None, "--ratio", help="Share of each prunable layer's channels removed, in (0, 0.95]; "
                                                               "widths round to multiples of 8, at least 16."),
    out: Path = typer.Option(..., "--out", help="The new run directory for the pruned model (must not exist)."),
    target_macs: Optional[float] = typer.Option(
        None, "--target-macs", help="Instead of --ratio: a fraction of the unpruned model's MACs, in (0, 1) (0.5: at most "
                                    "half); the smallest ratio that reaches it is found by bisection with the real pruner."),
    target_latency_ms: Optional[float] = typer.Option(
        None, "--target-latency-ms", help="Instead of --ratio: p50 ms per call (batch 1) on this machine's ONNX Runtime "
                                          "(the bench's timer and provider order: TensorRT EP, CUDA, CPU); found by bisection."),
    latency_threads: Optional[int] = typer.Option(
        None, "--latency-threads", help="ONNX Runtime intra-op threads for --target-latency-ms (default: its own)."),
    importance: str = typer.Option("l1", "--importance", help="l1 (default) | l2: weight magnitude; taylor: |weight x "
                                                              "gradient| over batches of the run's own training data."),
    taylor_batches: int = typer.Option(4, "--taylor-batches", help="With --importance taylor: batches (16 images) of the "
                                                                   "run's training data whose loss gradients rank channels."),
    scope: str = typer.Option("uniform", "--scope", help="uniform (default): every layer loses the ratio; global: one "
                                                         "ranking over all layers (widths still multiples of 8, >= 16)."),
    steps: int = typer.Option(1, "--steps", help="Prune in K steps (ratio k/K at step k), re-ranking channels after each."),
    sparsity: Optional[str] = typer.Option(
        None, "--sparsity", help="2:4: also make the backbone's weights 2:4 sparse (NVIDIA ModelOpt) for Ampere/Orin sparse "
                                 "tensor cores; off by default (on CNNs often no faster: measure on the device)."),
) -> None:
    """Prune a run's channels (Torch-Pruning's dependency graph; classifiers, projections and gate kept) into a
    new run; fine-tune it with `erudite-edge train --finetune RUN_PRUNED`."""
    _require_torch()
    from train.prune import PruneOptions
    from train.prune_run import prune_run

    opts = PruneOptions(ratio=ratio, target_macs=target_macs, target_latency_ms=target_latency_ms, importance=importance,
                        scope=scope, steps=steps, taylor_batches=taylor_batches, sparsity=sparsity)
    opts.check()
    latency = None
    if target_latency_ms is not None:
        from benchmarks.prune_latency import OnnxLatency

        latency = OnnxLatency(threads=latency_threads)

    def log(msg: str) -> None:
        typer.echo(msg, err=True)

    summary = prune_run(checkpoint, out, opts, latency=latency, log=log)
    share = summary["params_after"] / summary["params_before"]
    if "target" in summary:
        t = summary["target"]
        typer.echo(f"{t['flag']} {t['goal']:g}: ratio {t['ratio']:g} ({t['value']:.4g} against {t['unpruned']:.4g} unpruned)",
                   err=True)
    if summary["ratio"] is not None:
        typer.echo(f"pruned {summary['groups_pruned']} channel groups: {summary['params_before']:,} -> "
                   f"{summary['params_after']:,} parameters ({share:.2f}x)", err=True)
    if sparsity is not None:
        typer.echo(f"{sparsity} sparse weights in {summary['sparse_layers']} backbone layers", err=True)
    typer.echo(f"run saved in {out} (fine-tune: erudite-edge train --finetune {out})", err=True)


def register(app: typer.Typer, export_app: typer.Typer) -> None:
    app.command("prune")(prune_command)
