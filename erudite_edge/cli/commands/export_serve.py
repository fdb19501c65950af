"""`erudite-edge export triton | deepstream`: a bundle where fleets are served (Triton Inference Server, a
DeepStream pipeline). Both need the `onnx` package (`pip install 'erudite-edge[bench]'` or `[train]`), except
`export triton --kind classifier`, which copies the bundle and writes text."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer


def _log(msg: str) -> None:
    typer.echo(msg, err=True)


KINDS = ("graph", "classifier")


def triton_command(
    bundle: Path = typer.Option(..., "--bundle", help="An erudite bundle directory (--kind classifier: or a zoo bundle)."),
    out: Path = typer.Option(..., "--out", help="The Triton model repository (created if missing; other models in it are left alone)."),
    kind: str = typer.Option("graph", "--kind", help="graph: the ONNX Runtime (+ TensorRT) entries, tensors in, logits out; "
                             "classifier: a Python-backend model running erudite-edge's Classifier, image bytes in, labels out."),
    precision: Optional[str] = typer.Option(None, "--precision", help="graph: fp32 (default) | fp16 | int8: which of the bundle's "
                                            "ONNX models (and engine, if any). classifier: as `run --precision` (default auto)."),
    max_batch: Optional[int] = typer.Option(None, "--max-batch", help="max_batch_size (default 8; graph: at most the engine's "
                                            "profile, or 32: the profile engines are built with)."),
    name: Optional[str] = typer.Option(None, "--name", help="Model name in the repository (default: erudite, with an engine also "
                                       "erudite_tensorrt; classifier: erudite_classifier)."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace config.pbtxt, labels.txt and 1/ (and the classifier's "
                                   "other files) in model folders an earlier `export triton` wrote (other version folders "
                                   "and files there are kept)."),
    instances: int = typer.Option(1, "--instances", help="classifier: model instances (stub processes, one Classifier each)."),
    topk: int = typer.Option(5, "--topk", help="classifier: how many classes each answer lists."),
    backend: str = typer.Option("auto", "--backend", help="classifier: auto | onnxruntime | tensorrt, chosen when Triton loads it."),
    execution_env: Optional[str] = typer.Option(None, "--execution-env", help="classifier: EXECUTION_ENV_PATH for the Python "
                                                "backend (a conda-pack archive or an environment folder that imports "
                                                "erudite_edge; $$TRITON_MODEL_DIRECTORY allowed). Default: the server's Python."),
) -> None:
    """A Triton model repository. --kind graph: ONNX Runtime backend (+ TensorRT plan when the bundle has an engine),
    config.pbtxt with dynamic batching and the model's tensor names, types and dims, labels.txt in joint-label order.
    --kind classifier: a Python-backend model holding the bundle (erudite-edge's Classifier): encoded image bytes
    (IMAGE, [B, 1]) or RGB frames (FRAME) in; top-k labels, data sets, scores and per-data-set mass out."""
    from erudite_edge.cli.commands.export import _require
    from erudite_edge.core.bundle import PRECISIONS, Bundle
    from erudite_edge.errors import UsageError

    if kind not in KINDS:
        raise UsageError(f"--kind {kind}: one of {', '.join(KINDS)}")
    if kind == "classifier":
        from export.triton_classifier import ClassifierModelOptions, export_classifier

        options = ClassifierModelOptions(
            name=name or "erudite_classifier", max_batch=8 if max_batch is None else max_batch, instances=instances,
            topk=topk, backend=backend, precision=precision or "auto", execution_env=execution_env,
            overwrite=overwrite).checked()
        typer.echo(str(export_classifier(Bundle.load(bundle), out, options, log=_log)))
        return
    given = [f for f, v in (("--instances", instances != 1), ("--topk", topk != 5), ("--backend", backend != "auto"),
                            ("--execution-env", execution_env is not None)) if v]
    if given:
        raise UsageError(f"{', '.join(given)}: only with --kind classifier (--kind graph serves the model's logits)")
    precision = precision or "fp32"
    if precision not in PRECISIONS:
        raise UsageError(f"--precision {precision}: one of {', '.join(PRECISIONS)}")
    _require("export triton", "onnx")
    from export.triton import export_triton

    for p in export_triton(Bundle.load(bundle), out, precision, max_batch, name or "erudite", overwrite, log=_log):
        typer.echo(str(p))


def deepstream_command(
    bundle: Path = typer.Option(..., "--bundle", help="An erudite bundle directory."),
    out: Path = typer.Option(..., "--out", help="Folder to create: nvinfer config, labels, the ONNX copy, parity.json."),
    mode: str = typer.Option("secondary", "--mode", help="secondary: classify a detector's objects (process-mode=2); "
                             "primary: whole frames (process-mode=1)."),
    precision: str = typer.Option("fp16", "--precision", help="network-mode: fp32 | fp16 (both from the fp32 ONNX model) | "
                                  "int8 (the bundle's Q/DQ model)."),
    batch: int = typer.Option(16, "--batch", help="batch-size: frames (primary) or objects (secondary) per inference."),
    threshold: float = typer.Option(0.0, "--threshold", help="classifier-threshold: the lowest top-1 probability that labels an object."),
    gie_id: Optional[int] = typer.Option(None, "--gie-id", help="gie-unique-id of this classifier (default 1 primary, 2 secondary)."),
    operate_on_gie_id: int = typer.Option(1, "--operate-on-gie-id", help="Secondary: the detector's gie-unique-id."),
    operate_on_class_ids: Optional[str] = typer.Option(None, "--operate-on-class-ids", help="Secondary: only the detector's classes, e.g. '0;2'."),
    images: Optional[Path] = typer.Option(None, "--images", help="Real images for the parity check (default: scikit-image's sample photos)."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace a folder an earlier `export deepstream` wrote."),
) -> None:
    """A DeepStream Gst-nvinfer classifier: key-file config, ';'-separated labels, and an ONNX copy with the per-channel
    std folded in (nvinfer has one scale for all channels), parity-checked against the bundle's model on real images."""
    from erudite_edge.cli.commands.export import _require
    from erudite_edge.core.bundle import Bundle

    _require("export deepstream", "onnx", "onnxruntime")
    from export.deepstream import export_deepstream

    pics = None
    if images is not None:
        from export.images import ImageRef, find_images, load_refs

        pics, _ = load_refs([ImageRef(p) for p in find_images(images)], 32, _log)
    path = export_deepstream(Bundle.load(bundle), out, mode=mode, precision=precision, batch=batch, threshold=threshold,
                             gie_id=gie_id, operate_on_gie_id=operate_on_gie_id,
                             operate_on_class_ids=operate_on_class_ids, images=pics, overwrite=overwrite, log=_log)
    typer.echo(str(path))


def register(app: typer.Typer, export_app: typer.Typer) -> None:
    from erudite_edge.cli.interruptible import interruptible

    # SIGTERM like Ctrl-C: model folders are built under temporary names and renamed only when complete
    nothing = interruptible("nothing was written; what existed before is unchanged")
    export_app.command("triton")(nothing(triton_command))
    export_app.command("deepstream")(nothing(deepstream_command))
