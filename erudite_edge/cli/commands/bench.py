"""`erudite-edge bench`: latency, throughput, size, complexity and accuracy of an erudite bundle against
the two-stage zoo, side by side on this device (no torch needed; the work is in benchmarks/).

Exit codes: 0 measured (the goals' PASS/FAIL lines are reported, not enforced); 2 a bundle, source,
data set or backend that cannot be used; 130 interrupted.
"""

from __future__ import annotations

import shlex
import sys
from pathlib import Path
from typing import List, Optional

import typer


def bench_command(
    bundle: Path = typer.Option(..., "--bundle", help="The erudite bundle directory (from `erudite-edge export`)."),
    zoo: Optional[Path] = typer.Option(None, "--zoo", help="The zoo bundle (coarse + one fine model per data set) to compare with."),
    backend: str = typer.Option("auto", help="auto | onnxruntime | tensorrt"),
    precision: Optional[str] = typer.Option(None, "--precision",
                                            help="Comma-separated: fp32,fp16,int8 (default: every precision both bundles hold)."),
    batch: str = typer.Option("1,8,32", "--batch", help="Comma-separated batch sizes."),
    warmup: int = typer.Option(3, min=0, help="At least this many warm-up calls per model and batch size."),
    warmup_ms: float = typer.Option(200.0, "--warmup-ms", min=0, help="... and at least this many milliseconds of them (trtexec's --warmUp)."),
    iters: int = typer.Option(20, min=1, help="At least this many timed calls per model and batch size."),
    min_duration_s: float = typer.Option(3.0, "--min-duration-s", min=0,
                                         help="... and at least this many seconds of them per model and batch size (trtexec's --duration)."),
    rounds: int = typer.Option(10, min=1, help="Interleaved rounds the timed calls and time are spread over."),
    cv_threshold: float = typer.Option(10.0, "--cv-threshold", min=0.001,
                                       help="Flag a series unstable when its latencies' CV (stdev / mean) exceeds this many %."),
    memory_repeats: int = typer.Option(
        3, "--memory-repeats", min=0,
        help="Peak memory (RSS of the process tree; device memory on a GPU) of each model in this many fresh processes "
             "per precision, alternating; 0: not measured."),
    cuda_graph: bool = typer.Option(
        False, "--cuda-graph",
        help="TensorRT: run each engine through a captured CUDA graph (trtexec --useCudaGraph). Other backends ignore it, with a warning."),
    data_transfers: bool = typer.Option(
        True, "--data-transfers/--no-data-transfers",
        help="--no-data-transfers: TensorRT times compute only, without host<->device copies (trtexec --noDataTransfers). "
             "Other backends ignore it, with a warning."),
    threads: Optional[int] = typer.Option(None, min=1, help="CPU threads for ONNX Runtime (default: its own)."),
    ort_spinning: bool = typer.Option(
        False, "--ort-spinning/--no-ort-spinning",
        help="ONNX Runtime's intra-op thread spinning. Off (default): idle sessions do not keep cores busy while "
             "the next one runs (the zoo's models take turns); on: ONNX Runtime's own default, to compare."),
    source: Optional[Path] = typer.Option(None, "--source", help="A folder of images: end-to-end throughput against pure inference."),
    source_limit: Optional[int] = typer.Option(None, "--source-limit", min=1, help="Use at most this many images of --source."),
    data: Optional[List[str]] = typer.Option(None, "--data", help="NAME=PATH or NAME=FORMAT:PATH of a labelled test set (repeatable): top-1 per data set."),
    data_limit: Optional[int] = typer.Option(None, "--data-limit", min=1, help="At most this many test images per data set (a seeded random subset)."),
    workers: Optional[int] = typer.Option(None, min=1, help="Decode/preprocess threads of the end-to-end pipeline."),
    interleave_precisions: bool = typer.Option(
        True, "--interleave-precisions/--no-interleave-precisions",
        help="Load every precision at once and time them interleaved (the fair default); the --no form loads one "
             "precision at a time, for devices short of memory."),
    out: Path = typer.Option(Path("runs/bench"), "--out", help="Folder for bench.json, bench.md and bench.png."),
    plot: bool = typer.Option(True, "--plot/--no-plot", help="Write bench.png (needs matplotlib)."),
    no_verify: bool = typer.Option(False, "--no-verify", help="Do not check the model files' sha256 against bundle.json."),
    triton: Optional[str] = typer.Option(None, "--triton", help="HOST:PORT of a Triton server's HTTP endpoint serving "
                                         "`export triton --kind classifier` of --bundle: its client latency and throughput "
                                         "against in-process Classifier (--source images, else scikit-image's photos)."),
    model: str = typer.Option("erudite_classifier", "--model", help="--triton: the model's name in that server."),
    concurrency: str = typer.Option("1,2,4,8", "--concurrency", help="--triton: comma-separated client counts."),
    server_pid: Optional[int] = typer.Option(None, "--server-pid", help="--triton: the server's process on this "
                                             "machine, whose CPU time (with its children's) is the run's own work, not "
                                             "other work (default: the process listening on PORT when HOST is local)."),
) -> None:
    """Erudite vs zoo on this device: latency, throughput, size, params/MACs, end to end, top-1.
    With --triton: a Triton server's classifier model against in-process Classifier."""
    from erudite_edge.backends.registry import BACKENDS
    from erudite_edge.core.bundle import set_verify_default
    from erudite_edge.errors import UsageError

    set_verify_default(not no_verify)
    from erudite_edge.outputs.results import stderr_console

    if backend not in BACKENDS or backend == "torch":
        raise UsageError(f"--backend {backend}: one of auto, onnxruntime, tensorrt")
    if triton is not None:
        from benchmarks.bench import parse_int_list
        from benchmarks.triton import TritonBenchOptions, triton_bench

        opts = TritonBenchOptions(url=triton, model=model, concurrency=tuple(parse_int_list(concurrency, "--concurrency")),
                                  rounds=rounds, window_s=min_duration_s / rounds, warmup_s=warmup_ms / 1e3,
                                  server_pid=server_pid).checked()
        triton_written = triton_bench(opts, bundle, backend, source, source_limit, out,
                               " ".join(shlex.quote(a) for a in ["erudite-edge", *sys.argv[1:]]), log=lambda m: typer.echo(m, err=True))
        typer.echo((out / "triton.md").read_text())
        typer.echo("wrote " + ", ".join(str(p) for p in triton_written), err=True)
        return
    if server_pid is not None:
        raise UsageError("--server-pid names the server of --triton HOST:PORT; give --triton too")
    from benchmarks.bench import BenchConfig, parse_int_list, parse_precisions, run_bench
    from benchmarks.report import render_terminal, stdout_console, write_outputs

    cfg = BenchConfig(
        bundle=bundle, zoo=zoo, backend=backend, precisions=parse_precisions(precision),
        batches=parse_int_list(batch, "--batch"), warmup=warmup, warmup_ms=warmup_ms, iters=iters,
        min_duration_s=min_duration_s, rounds=rounds, cv_threshold=cv_threshold / 100.0, memory_repeats=memory_repeats,
        cuda_graph=cuda_graph, data_transfers=data_transfers, threads=threads,
        ort_spinning=ort_spinning,
        source=source, source_limit=source_limit, data=list(data or []), data_limit=data_limit, workers=workers,
        interleave_precisions=interleave_precisions,
        command=" ".join(shlex.quote(a) for a in ["erudite-edge", *sys.argv[1:]]),
    )
    err = stderr_console()
    try:
        result, raw = run_bench(cfg, console=err)
    except KeyboardInterrupt:
        typer.echo("interrupted", err=True)
        raise typer.Exit(130) from None
    render_terminal(result, stdout_console())
    written = write_outputs(result, out, raw=raw, png=plot, warn=lambda m: err.print(f"warning: {m}", style="yellow", markup=False))
    err.print("wrote " + ", ".join(str(p) for p in written.values()), markup=False, highlight=False)


def register(app: typer.Typer, export_app: typer.Typer) -> None:
    app.command("bench")(bench_command)
