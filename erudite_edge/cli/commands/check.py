"""`erudite-edge check BUNDLE`: does this backend, at this precision, answer as the FP32 model does?

Runs the bundle's check set (stored by `export onnx`) and prints, per role, top-1 agreement with the
FP32 outputs and the max |logit difference|. Exit codes: 0 every role at or above its minimum
agreement (FP16 99 %, INT8 97 %); 1 below it (unless --accept-accuracy-drop); 2 a bundle without a
check set, a missing model, or a backend that cannot run here.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer


def check_command(
    bundle: Path = typer.Argument(..., help="The bundle directory (holds bundle.json)."),
    backend: str = typer.Option("auto", "--backend", help="auto | onnxruntime | tensorrt"),
    precision: str = typer.Option("auto", "--precision", help="fp32 | fp16 | int8 | best | auto (as `run` picks)."),
    dla_core: Optional[int] = typer.Option(None, "--dla-core", help="Check the engine built for this DLA core."),
    role: Optional[str] = typer.Option(None, "--role", help="Check one role only (zoo bundles); default all."),
    accept_accuracy_drop: bool = typer.Option(
        False, "--accept-accuracy-drop", help="Report an agreement below the minimum as a warning, exit 0."),
    json_out: Optional[Path] = typer.Option(None, "--json", help="Also write the results to this JSON file (a new file in "
                                            "an existing folder; an existing one needs --overwrite)."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing --json file."),
) -> None:
    """Run the bundle's check set on a backend and compare with the FP32 outputs."""
    from erudite_edge.backends.registry import BACKENDS, RunnerOptions, announce_stderr
    from erudite_edge.core.bundle import Bundle
    from erudite_edge.core.check_set import enforce
    from erudite_edge.core.fileio import file_to_write, write_json_atomic
    from erudite_edge.errors import UsageError
    from erudite_edge.inference.check import check_bundle

    if backend not in BACKENDS or backend == "torch":
        raise UsageError(f"--backend {backend}: one of auto, onnxruntime, tensorrt")
    try:
        options = RunnerOptions(backend=backend, precision=precision, dla_core=dla_core)
    except UsageError as e:
        raise UsageError(f"--{e}") from None
    json_target = None if json_out is None else file_to_write(json_out, "--json", overwrite)
    loaded = Bundle.load(bundle)
    results = check_bundle(loaded, options, role, announce=announce_stderr)
    for r in results:
        typer.echo(r.summary())
    if json_target is not None:
        write_json_atomic(json_target, {"bundle": str(bundle), "results": [r.to_dict() for r in results]})
    enforce(results, accept_accuracy_drop, lambda m: typer.echo(m, err=True))


def register(app: typer.Typer, export_app: typer.Typer) -> None:
    app.command("check")(check_command)
