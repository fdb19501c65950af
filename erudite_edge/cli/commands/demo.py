"""`erudite-edge demo`: the whole toolkit in one command, offline, on real images (needs the train extra). This
module owns the command's flags and the torch check; the demo itself is erudite_edge/cli/demo.py (run_demo)."""

from __future__ import annotations

from pathlib import Path

import typer

from erudite_edge.errors import BackendUnavailable


def demo_command(
    out: Path = typer.Option(Path("runs/demo"), "--out", help="Directory for every artifact of the demo."),
    quick: bool = typer.Option(False, "--quick", help="A one-minute version (fewer images and steps)."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing --out."),
) -> None:
    """Train baseline, baseline+, ours and the single zoo on a real-image mixture, evaluate, export, run, bench."""
    try:
        import torch  # noqa: F401
    except ImportError:
        raise BackendUnavailable("the demo trains models and needs torch: `pip install 'erudite-edge[train,demo]'`") from None
    from erudite_edge.cli.demo import run_demo

    run_demo(out, quick=quick, overwrite=overwrite)


def register(app: typer.Typer, export_app: typer.Typer) -> None:
    app.command("demo")(demo_command)
