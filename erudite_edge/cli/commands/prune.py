"""`erudite-edge prune`: structured channel pruning of a trained run into a new run (needs torch and
Torch-Pruning: `pip install 'erudite-edge[train]'`); fine-tune it with `train --finetune`."""

from __future__ import annotations

from pathlib import Path

import typer

from erudite_edge.cli.commands.train import _require_torch


def prune_command(
    checkpoint: Path = typer.Option(..., "--checkpoint", help="The trained run (its best checkpoint) or a checkpoint directory."),
    ratio: float = typer.Option(..., "--ratio", help="Share of each prunable layer's channels removed, in (0, 0.95]; "
                                                     "widths round to multiples of 8, at least 16."),
    out: Path = typer.Option(..., "--out", help="The new run directory for the pruned model (must not exist)."),
    importance: str = typer.Option("l1", "--importance", help="l1 (default) | l2: which channels go, by weight magnitude."),
) -> None:
    """Prune a run's channels (Torch-Pruning's dependency graph; classifiers, projections and gate kept) into a
    new run; fine-tune it with `erudite-edge train --finetune RUN_PRUNED`."""
    _require_torch()
    from train.prune import PruneOptions, prune_run

    summary = prune_run(checkpoint, out, PruneOptions(ratio=ratio, importance=importance))
    share = summary["params_after"] / summary["params_before"]
    typer.echo(f"pruned {summary['groups_pruned']} channel groups: {summary['params_before']:,} -> {summary['params_after']:,} "
               f"parameters ({share:.2f}x); run saved in {out} (fine-tune: erudite-edge train --finetune {out})", err=True)


def register(app: typer.Typer, export_app: typer.Typer) -> None:
    app.command("prune")(prune_command)
