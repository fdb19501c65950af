"""`erudite-edge export engine`: build TensorRT engines from a bundle, on the device that runs them."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer


def register(app: typer.Typer, export_app: typer.Typer) -> None:
    @export_app.command("engine")
    def export_engine(
        bundle: Path = typer.Option(..., "--bundle", help="Bundle directory (holds bundle.json)."),
        precision: str = typer.Option(
            ..., "--precision", help="fp16 | int8 (the bundle's Q/DQ model) | best (int8 + fp16) | fp32."
        ),
        batch: Optional[str] = typer.Option(
            None, "--batch", help="Batch sizes MIN:OPT:MAX of the optimisation profile (default 1:8:32); N means 1:N:N. "
            "A DLA engine takes one batch size: N means N:N:N there (default 8)."
        ),
        workspace: float = typer.Option(1.0, "--workspace", help="Builder workspace memory pool, GiB."),
        timing_cache: Optional[Path] = typer.Option(
            None, "--timing-cache", help="Timing cache file: read if present, updated after each build."
        ),
        role: Optional[str] = typer.Option(
            None, "--role", help="Build one role only (zoo bundles: coarse or fine:<dataset>); default all."
        ),
        accept_accuracy_drop: bool = typer.Option(
            False, "--accept-accuracy-drop",
            help="Keep an engine whose check-set agreement with FP32 is below the minimum (FP16 99 %, INT8 97 %).",
        ),
        dla_core: Optional[int] = typer.Option(
            None, "--dla-core", help="Build for this DLA core (Jetson AGX/NX Orin, Xavier): fp16, int8 or best, a static "
            "batch (--batch N), GPU fallback on; the layers placed on the DLA are reported."
        ),
        no_verify: bool = typer.Option(False, "--no-verify", help="Do not check the ONNX files' sha256 against bundle.json."),
    ) -> None:
        """Build TensorRT engine(s) for this GPU, check each against the bundle's check set, record them in bundle.json."""
        from erudite_edge.backends.tensorrt.build import build_engine
        from erudite_edge.core.bundle import Bundle, set_verify_default

        set_verify_default(not no_verify)
        loaded = Bundle.load(bundle)

        def log(msg: str) -> None:
            typer.echo(msg, err=True)

        paths = build_engine(loaded, precision, batch, workspace, timing_cache, role,
                             accept_accuracy_drop=accept_accuracy_drop, dla_core=dla_core, log=log)
        for p in paths:
            typer.echo(str(p))
