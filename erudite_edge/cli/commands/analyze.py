"""`erudite-edge analyze`: the paper's evidence for a trained run (needs `pip install 'erudite-edge[train,analysis]'`)."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from erudite_edge.errors import BackendUnavailable, UsageError


def _require(torch: bool = True) -> None:
    for module, extra in (("torch", "train"), ("sklearn", "analysis"), ("matplotlib", "analysis")):
        if module == "torch" and not torch:
            continue
        try:
            __import__(module)
        except ImportError:
            raise BackendUnavailable(f"analyze needs {module}: `pip install 'erudite-edge[train,analysis]'`") from None


def analyze_command(
    checkpoint: Optional[Path] = typer.Option(None, "--checkpoint", help="Run directory (its best checkpoint) or a .safetensors file."),
    bundle: Optional[Path] = typer.Option(None, "--bundle", help="An exported bundle instead of a run: only what its outputs tell (the report lists what is skipped); no torch needed."),
    data: list[str] = typer.Option(..., "--data", help="NAME=PATH of each data set to analyse (names as in training); the test split is used."),
    out: Path = typer.Option(..., "--out", help="Folder for analysis.json, analysis.md, the PNGs and the feature caches."),
    reference: Optional[Path] = typer.Option(None, "--reference", help="A Single run (one data set trained alone, or the zoo) to compare per-class accuracy against; with --bundle also a bundle (the zoo's)."),
    precision: str = typer.Option("fp32", "--precision", help="With --bundle: the model precision to analyse (fp32 | fp16 | int8)."),
    backend: str = typer.Option("auto", "--backend", help="With --bundle: auto | onnxruntime | tensorrt | torch."),
    batch_size: int = typer.Option(64),
    workers: int = typer.Option(0, help="DataLoader workers."),
    device: str = typer.Option("auto", help="auto | cpu | cuda | cuda:N"),
    max_samples: int = typer.Option(5000, help="Cluster scores on a fixed-seed subsample above this many images per data set."),
    mmd_permutations: int = typer.Option(200, help="Permutations of the MMD test."),
    mmd_max_samples: int = typer.Option(1000, help="Images per data set the MMD uses at most (fixed-seed subsample)."),
    tsne: bool = typer.Option(True, "--tsne/--no-tsne", help="Figure 3 (t-SNE; the slowest part)."),
    tsne_max_samples: int = typer.Option(2000, help="Images per data set in the t-SNE at most."),
    attention_images: int = typer.Option(4, help="Test images per data set in the attention overlay grid (variants with attention; 0: none)."),
    seed: int = typer.Option(0, help="Seed of every subsample, permutation and t-SNE."),
    progress: bool = typer.Option(True, "--progress/--no-progress"),
) -> None:
    """Table 1 (SC, CHI, DBI per data set; MMD between data sets), per-class transfer against a reference
    (Positive / Negative, Figure 2), gate usage per data set, t-SNE of the features (Figure 3), attention maps.
    With --bundle instead of --checkpoint: only what the exported model's outputs tell."""
    if (checkpoint is None) == (bundle is None):
        raise UsageError("pass either --checkpoint RUN or --bundle BUNDLE (one of them)")
    _require(torch=bundle is None)
    from train.analysis.tables import AnalyzeOptions, summary_lines

    def log(msg: str) -> None:
        typer.echo(msg, err=True)

    opts = AnalyzeOptions(batch_size=batch_size, workers=workers, device=device, cluster_max_samples=max_samples,
                          mmd_permutations=mmd_permutations, mmd_max_samples=mmd_max_samples, tsne=tsne,
                          tsne_max_samples=tsne_max_samples, attention_images=attention_images, seed=seed, progress=progress)
    if bundle is not None:
        from train.analysis.bundle_report import analyze_bundle

        result = analyze_bundle(bundle, data, out, reference=reference, options=opts, backend=backend, precision=precision,
                                log=log)
        typer.echo(f"skipped (needs the model's internals): {'; '.join(s.split(' (')[0] for s in result['skipped'])}", err=True)
    else:  # checkpoint is given (exactly one of the two, checked above)
        from train.analysis.report import analyze

        assert checkpoint is not None
        result = analyze(checkpoint, data, out, reference=reference, options=opts, log=log)
    for line in summary_lines(result):
        typer.echo(line)
    typer.echo(f"report written to {out} (analysis.json, analysis.md, {', '.join(result['figures'].values()) or 'no figures'})", err=True)


def register(app: typer.Typer, export_app: typer.Typer) -> None:
    app.command("analyze")(analyze_command)
