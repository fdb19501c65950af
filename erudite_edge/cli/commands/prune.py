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
    importance: str = typer.Option("l1", "--importance", help="l1 (default) | l2: which channels go, by weight magnitude."),
    sparsity: Optional[str] = typer.Option(
        None, "--sparsity", help="2:4: also make the backbone's weights 2:4 sparse (NVIDIA ModelOpt) for Ampere/Orin sparse "
                                 "tensor cores; off by default (on CNNs often no faster: measure on the device)."),
) -> None:
    """Prune a run's channels (Torch-Pruning's dependency graph; classifiers, projections and gate kept) into a
    new run; fine-tune it with `erudite-edge train --finetune RUN_PRUNED`."""
    _require_torch()
    from train.prune import PruneOptions, prune_run

    summary = prune_run(checkpoint, out, PruneOptions(ratio=ratio, importance=importance, sparsity=sparsity))
    share = summary["params_after"] / summary["params_before"]
    if ratio is not None:
        typer.echo(f"pruned {summary['groups_pruned']} channel groups: {summary['params_before']:,} -> "
                   f"{summary['params_after']:,} parameters ({share:.2f}x)", err=True)
    if sparsity is not None:
        typer.echo(f"{sparsity} sparse weights in {summary['sparse_layers']} backbone layers", err=True)
    typer.echo(f"run saved in {out} (fine-tune: erudite-edge train --finetune {out})", err=True)


def register(app: typer.Typer, export_app: typer.Typer) -> None:
    app.command("prune")(prune_command)
