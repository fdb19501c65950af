"""`erudite-edge run`: classify images, video, cameras or streams with a bundle (no torch needed).

Exit codes: 0 done; 1 a bad file under --strict, or a run that ended with nothing classified (every file
undecodable, every box empty; one line after the summary); 2 a source, bundle, backend or output that cannot be
used (an existing -o without --append/--overwrite, a file another run writes, a full disk, ...);
128 + the signal when stopped by SIGINT (130), SIGTERM (143) or SIGHUP (129): outputs keep what was done
and the summary is printed.
"""

from __future__ import annotations

import contextlib
import signal
import threading
from pathlib import Path
from typing import Any, Iterator, Optional

import typer

from erudite_edge.core.image_header import DEFAULT_MAX_PIXELS
from erudite_edge.core.redact import redact
from erudite_edge.errors import NothingClassifiedError, UsageError

SOURCE_HELP = (
    "An image, a folder of images, a glob ('imgs/*.jpg', quoted), a video file, /dev/videoN or "
    "v4l2:///dev/videoN (USB camera), csi://N (Jetson CSI camera), rtsp://... (stream). Several: one process "
    "classifies them all, batched together (each result names its stream)."
)


def run_command(
    source: Optional[list[str]] = typer.Argument(None, help=SOURCE_HELP, show_default=False),
    more_sources: Optional[list[str]] = typer.Option(None, "--source", help="One more source, as SOURCE (repeat for "
                                                     "several)."),
    sources_file: Optional[Path] = typer.Option(None, "--sources-file", help="A text file listing sources, one per "
                                                "line (blank lines and # comments skipped)."),
    batch_timeout_ms: Optional[float] = typer.Option(None, "--batch-timeout-ms", min=0.0, help="Several sources: the "
                                                     "longest a batch waits for the other streams after its first frame "
                                                     "(default: one frame interval of the fastest stream)."),
    bundle: Optional[Path] = typer.Option(None, "--bundle", help="An erudite bundle directory (from `erudite-edge export`)."),
    zoo: Optional[Path] = typer.Option(None, "--zoo", help="A zoo bundle directory (coarse router + one fine model per data set)."),
    backend: str = typer.Option("auto", help="auto | tensorrt | onnxruntime | torch"),
    checkpoint: Optional[Path] = typer.Option(None, "--checkpoint", help="A training run, for --backend torch (debugging)."),
    precision: str = typer.Option("auto", help="auto | fp32 | fp16 | int8 | best. auto: the bundle's TensorRT engine (fp16, "
                                  "then int8, then best, then fp32) where TensorRT runs, else the fp32 ONNX model; "
                                  "another precision takes the engine of exactly that kind (best: INT8 + FP16, an "
                                  "engine only)."),
    dla_core: Optional[int] = typer.Option(None, "--dla-core", help="Run the bundle's engine built for this DLA core "
                                           "(`export engine --dla-core N`); without it, engines built for the GPU."),
    batch: int = typer.Option(8, min=1, help="Images per inference batch (files; a camera or stream gives the model "
                              "its newest frame, one at a time; several sources: at most one frame of each per batch)."),
    topk: int = typer.Option(5, min=1, help="Predictions per image."),
    output: Optional[str] = typer.Option(None, "--output", "-o", help="FILE.jsonl or FILE.csv (default: JSON lines on stdout): "
                                  "appended per result and fsynced every second; an existing file needs --append or --overwrite. "
                                  "Or mqtt://[USER:PASSWORD@]HOST[:PORT]/TOPIC (mqtts:// for TLS): each result to an MQTT "
                                  "broker, spooled on disk until acknowledged; TOPIC may hold {stream}."),
    mqtt_qos: Optional[int] = typer.Option(None, "--mqtt-qos", help="-o mqtt://: QoS 0, 1 (default: at least once) or 2."),
    mqtt_ca: Optional[Path] = typer.Option(None, "--mqtt-ca", help="-o mqtts://: the CA certificate (PEM) that signed "
                                           "the broker's (default: the system's CAs)."),
    mqtt_cert: Optional[Path] = typer.Option(None, "--mqtt-cert", help="-o mqtts://: this device's client certificate (PEM)."),
    mqtt_key: Optional[Path] = typer.Option(None, "--mqtt-key", help="-o mqtts://: the key of --mqtt-cert (PEM)."),
    spool: Optional[Path] = typer.Option(None, "--spool", help="-o mqtt://: the folder where results wait for the "
                                         "broker's acknowledgement (kept across runs; default under "
                                         "$XDG_STATE_HOME/erudite-edge/mqtt-spool)."),
    spool_max_mb: Optional[float] = typer.Option(None, "--spool-max-mb", help="-o mqtt://: bound the spool (default "
                                                 "100 MiB); beyond it the oldest results are dropped and counted."),
    spool_sync: Optional[str] = typer.Option(None, "--spool-sync", help="-o mqtt://: 'always' (default): each result "
                                             "is fsynced to the spool before the run goes on, so a power cut loses "
                                             "none; 'off': left to the kernel (a power cut may lose the last seconds)."),
    save: Optional[str] = typer.Option(None, "--save", help="Annotated video (.mp4/.avi/...), a folder of annotated images, "
                                       "or an H.264 stream: rtp://HOST:PORT (RTP/UDP) or rtsp://HOST:PORT/PATH (pushed to an "
                                       "RTSP server such as MediaMTX)."),
    save_attention: Optional[Path] = typer.Option(None, "--save-attention", help="Folder for one attention overlay PNG per input "
                                                  "(the 8 group masks over the image): --backend torch, or a bundle exported "
                                                  "--with-attention on ONNX Runtime."),
    display: bool = typer.Option(False, "--display", help="Show annotated frames in a window (q or Esc stops; "
                                 "several sources: one tile per stream)."),
    strict: bool = typer.Option(False, "--strict", help="Stop (exit 1) at the first image that does not decode."),
    recursive: bool = typer.Option(False, "--recursive", "-r", help="Look for images in subfolders too."),
    camera: Optional[int] = typer.Option(None, "--camera", help="V4L2 camera index (same as /dev/videoN)."),
    width: Optional[int] = typer.Option(None, help="Camera capture width (csi:// defaults to 1280)."),
    height: Optional[int] = typer.Option(None, help="Camera capture height (csi:// defaults to 720)."),
    framerate: Optional[int] = typer.Option(None, help="Camera frame rate (csi:// defaults to 30)."),
    camera_format: Optional[str] = typer.Option(None, "--camera-format", help="USB camera pixel format: mjpg (how "
                                                "USB cameras reach 30 fps at 1080p) or yuyv. The mode negotiated is printed."),
    rtsp_latency_ms: int = typer.Option(0, "--rtsp-latency-ms", help="rtsp:// sources: GStreamer rtspsrc's jitter "
                                        "buffer in ms (default 0: the newest frame at once; 200-2000 smooths a lossy "
                                        "Wi-Fi or remote link at that much delay)."),
    reconnect: str = typer.Option("3", help="Times to reopen a camera/stream that stops delivering frames, per loss, "
                                  "or 'forever' (a service); waits 1 s, 2 s, 4 s ... up to 30 s between tries."),
    limit: Optional[int] = typer.Option(None, min=1, help="Stop after this many classified frames."),
    threads: Optional[int] = typer.Option(None, min=1, help="CPU threads for ONNX Runtime (default: its own)."),
    workers: Optional[int] = typer.Option(None, min=1, help="Decode/preprocess threads (default: up to 4)."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing --output file / --save target."),
    rotate_mb: Optional[float] = typer.Option(None, "--rotate-mb", help="Bound the -o file: past this many MiB it "
                                              "becomes FILE.1 (FILE.1 -> FILE.2 ...) and a new FILE goes on."),
    keep: Optional[int] = typer.Option(None, "--keep", help="With --rotate-mb: rotated files kept, FILE.1 ... FILE.K "
                                       "(default 5); older ones are deleted."),
    append: bool = typer.Option(False, "--append", help="Add to an existing --output file (same columns); a last line "
                                "torn by a crash is cut off first, said in one line."),
    min_confidence: float = typer.Option(0.0, "--min-confidence", min=0.0, max=1.0,
                                         help="Below this top-1 probability the answer is 'unknown' (top-k still written)."),
    smooth: int = typer.Option(1, "--smooth", min=1, help="Average the probabilities of the last N classified frames (cameras, streams, videos)."),
    datasets: Optional[str] = typer.Option(None, "--datasets", help="Restrict the joint label space to these data sets: a,b."),
    no_verify: bool = typer.Option(False, "--no-verify", help="Do not check the model files' sha256 against bundle.json."),
    roi: Optional[list[str]] = typer.Option(None, "--roi", help="Classify this region of every image/frame instead of "
                                            "the whole: x,y,w,h in pixels (repeat for several; clipped to the image)."),
    crops_from: Optional[Path] = typer.Option(None, "--crops-from", help="Classify the boxes a detector found: a JSON "
                                              "lines file, one line per image/frame (schema in the README, 'Crops')."),
    max_memory: Optional[str] = typer.Option(None, "--max-memory", help="Memory the batches' input buffers may take "
                                             "(about 4 x --batch model inputs): 512M, 2G, ... A --batch that needs more "
                                             "stops at once (exit 2). Default: a quarter of the memory available at start."),
    max_pixels: int = typer.Option(DEFAULT_MAX_PIXELS, "--max-pixels", min=1, help="Skip (one warning each; an error "
                                   "with --strict) image files with more pixels than this, read from their header "
                                   "before decoding."),
) -> None:
    """Classify images, video, cameras or streams; top-k fine labels with their data set per image."""
    args = {k: v for k, v in locals().items() if k != "no_verify"}
    from erudite_edge.core.bundle import set_verify_default

    set_verify_default(not no_verify)
    with _stop_signals_interrupt() as received:
        try:
            _run(**args)
        except KeyboardInterrupt:  # while loading or opening; the pipeline handles its own
            typer.echo("interrupted", err=True)
            raise typer.Exit(128 + (received[0] if received else int(signal.SIGINT))) from None


@contextlib.contextmanager
def _stop_signals_interrupt() -> Iterator[list[int]]:
    """SIGTERM and SIGHUP interrupt loading and opening as Ctrl-C does (outputs opened so far are closed,
    a result file this run created and wrote nothing into is removed); the pipeline takes them over while
    it runs. Yields a list that receives the signal number."""
    received: list[int] = []
    if threading.current_thread() is not threading.main_thread():
        yield received
        return

    def handler(signum: int, frame: Any) -> None:
        received.append(signum)
        raise KeyboardInterrupt

    names = ("SIGTERM", "SIGHUP")
    previous = {s: signal.signal(s, handler) for s in (getattr(signal, n) for n in names if hasattr(signal, n))}
    try:
        yield received
    finally:
        for s, h in previous.items():
            signal.signal(s, h if h is not None else signal.SIG_DFL)


def parse_reconnect(value: str) -> int | None:
    """`--reconnect N` (N >= 0) or `forever` (None)."""
    v = value.strip().lower()
    if v in ("forever", "inf", "always"):
        return None
    if v.isdigit():
        return int(v)
    raise UsageError(f"--reconnect {value}: give a number of attempts (0, 3, ...) or 'forever'")


def _run(
    source: Optional[list[str]], bundle: Optional[Path], zoo: Optional[Path], backend: str, checkpoint: Optional[Path],
    precision: str, batch: int,
    topk: int, output: Optional[str], save: Optional[str], display: bool, strict: bool, recursive: bool,
    camera: Optional[int], width: Optional[int], height: Optional[int], framerate: Optional[int],
    camera_format: Optional[str], reconnect: str,
    limit: Optional[int], threads: Optional[int], workers: Optional[int], overwrite: bool, append: bool,
    min_confidence: float, smooth: int, datasets: Optional[str], save_attention: Optional[Path] = None,
    roi: Optional[list[str]] = None, crops_from: Optional[Path] = None, dla_core: Optional[int] = None,
    rotate_mb: Optional[float] = None, keep: Optional[int] = None,
    max_memory: Optional[str] = None, max_pixels: int = DEFAULT_MAX_PIXELS,
    mqtt_qos: Optional[int] = None, mqtt_ca: Optional[Path] = None, mqtt_cert: Optional[Path] = None,
    mqtt_key: Optional[Path] = None, spool: Optional[Path] = None, spool_max_mb: Optional[float] = None,
    spool_sync: Optional[str] = None, rtsp_latency_ms: int = 0,
    more_sources: Optional[list[str]] = None, sources_file: Optional[Path] = None,
    batch_timeout_ms: Optional[float] = None,
) -> None:
    from erudite_edge.api import Classifier
    from erudite_edge.backends.registry import RunnerOptions
    from erudite_edge.core.bundle import Bundle
    from erudite_edge.errors import BundleError
    from erudite_edge.inference.answers import Answerer, AnswerOptions, parse_datasets
    from erudite_edge.inference.batcher import StreamOptions
    from erudite_edge.inference.resources import parse_size
    from erudite_edge.inference.run_options import RunOptions
    from erudite_edge.outputs.attention_maps import AttentionWriter
    from erudite_edge.outputs.mqtt import MqttOptions, is_mqtt_uri, model_identity, parse_mqtt_uri
    from erudite_edge.outputs.open import open_output, open_save
    from erudite_edge.outputs.results import printable, render_summary, stderr_console
    from erudite_edge.outputs.rotation import DEFAULT_KEEP, Rotation
    from erudite_edge.outputs.tiles import TiledDisplaySink
    from erudite_edge.outputs.video import STILLS_FPS, open_display
    from erudite_edge.sources.capture import quiet_video_logs
    from erudite_edge.sources.crops import CropSource, detection_boxes, fixed_boxes, parse_roi, read_detections
    from erudite_edge.sources.open import open_source
    from erudite_edge.sources.sources_file import read_sources_file

    if checkpoint is not None and backend != "torch":
        raise UsageError("--checkpoint is for --backend torch; other backends run a bundle")
    if (bundle is None) == (zoo is None) and checkpoint is None:
        raise UsageError("give exactly one of --bundle BUNDLE or --zoo ZOO_BUNDLE (or --backend torch --checkpoint RUN)")
    memory = parse_size(max_memory) if max_memory is not None else None
    try:
        runner_options = RunnerOptions(backend=backend, precision=precision, threads=threads, dla_core=dla_core)
        run_options = RunOptions(batch=batch, workers=workers, strict=strict, limit=limit, max_memory=memory,
                                 max_pixels=max_pixels)
        stream_options = StreamOptions(batch_timeout_ms)
    except UsageError as e:
        raise UsageError(f"--{e}") from None
    specs = [*(source or []), *(more_sources or [])]
    if sources_file is not None:
        specs += read_sources_file(sources_file)
    if not specs and camera is None:
        raise UsageError("no source: give a file, folder, glob, video, /dev/videoN, csi://N or rtsp://... (or --camera N)")
    many = len(specs) + (camera is not None) > 1
    if many:
        _check_many(roi, crops_from, save_attention, save)
    if overwrite and append:
        raise UsageError("give --append or --overwrite, not both")
    if roi and crops_from is not None:
        raise UsageError("give --roi or --crops-from, not both")
    reconnects = parse_reconnect(reconnect)
    if keep is not None and rotate_mb is None:
        raise UsageError("--keep counts the files --rotate-mb makes; give --rotate-mb N too")
    rotation = None if rotate_mb is None else Rotation(rotate_mb, DEFAULT_KEEP if keep is None else keep)
    mqtt_given: dict[str, Any] = {k: v for k, v in dict(qos=mqtt_qos, ca=mqtt_ca, cert=mqtt_cert, key=mqtt_key,
                                                        spool=spool, spool_max_mb=spool_max_mb,
                                                        spool_sync=spool_sync).items() if v is not None}
    to_mqtt = output is not None and is_mqtt_uri(output)
    if output is not None and to_mqtt:
        parse_mqtt_uri(output)  # a malformed URI: one line before anything opens
    mqtt_options = MqttOptions(**mqtt_given) if to_mqtt or mqtt_given else None  # open_output: for mqtt:// only

    crop_fn = fixed_boxes([parse_roi(r) for r in roi]) if roi else None
    if crops_from is not None:
        crop_fn = detection_boxes(read_detections(crops_from))

    quiet_video_logs()
    console = stderr_console()

    warn = lambda msg: console.print(f"warning: {redact(printable(msg))}", style="yellow", markup=False, highlight=False)  # noqa: E731

    # Cheap checks first (bundle, source), then the slow part (loading engines / sessions).
    if checkpoint is not None:
        from erudite_edge.backends.torch_runner import bundle_from_checkpoint

        b = bundle_from_checkpoint(checkpoint)
        given = bundle if bundle is not None else zoo
        if given is not None and Bundle.load(given).labels != b.labels:
            raise BundleError(f"{given} and {checkpoint} have different label tables")
    else:
        b = Bundle.load(bundle if bundle is not None else zoo)  # type: ignore[arg-type]
    if zoo is not None and b.kind != "zoo":
        raise BundleError(f"{zoo}: an {b.kind} bundle, not a zoo; run it with --bundle")
    if bundle is not None and b.kind == "zoo":
        raise BundleError(f"{bundle}: a zoo bundle; run it with --zoo")
    if save_attention is not None:
        if b.kind == "zoo":
            raise UsageError("--save-attention: the zoo's models have no attention layer; it is for an erudite bundle")
        if checkpoint is None and not b.meta.get("attention"):
            raise UsageError(f"--save-attention: {b.root} has no attention output; export it with `erudite-edge export onnx "
                             "--with-attention`, or use --backend torch --checkpoint RUN")
        if save_attention.exists() and (not save_attention.is_dir() or (any(save_attention.iterdir()) and not overwrite)):
            raise UsageError(f"--save-attention {save_attention}: exists and is not an empty folder; choose another or "
                             "pass --overwrite (same-named PNGs are replaced)")
    chosen = parse_datasets(datasets, b.labels)
    answer_options = AnswerOptions(topk, min_confidence, smooth, tuple(chosen) if chosen else None)
    opening = dict(recursive=recursive, width=width, height=height, framerate=framerate, reconnect=reconnects,
                   camera_format=camera_format, rtsp_latency_ms=rtsp_latency_ms, max_pixels=run_options.max_pixels)
    if many:
        srcs = _open_all(specs, camera, opening, open_source)
        src = srcs[0]
    else:
        src = open_source(specs[0] if specs else None, camera=camera, **opening)  # type: ignore[arg-type]
        srcs = [src]
    if camera_format and any(s.kind != "camera" for s in srcs):
        kinds = ", ".join(sorted({s.kind for s in srcs if s.kind != "camera"}))
        warn(f"--camera-format is for USB (V4L2) cameras; ignored for this {kinds}")
    if smooth > 1 and src.kind == "images" and not many:
        warn("--smooth averages consecutive frames of a camera, stream or video; these are separate images: ignored")
        answer_options = answer_options.replace(smooth=1)
    stills = [str(i) for i, s_ in enumerate(srcs) if s_.kind == "images"]
    if smooth > 1 and many and stills:
        warn(f"--smooth averages consecutive frames; stream(s) {', '.join(stills)} hold separate images: not smoothed")
    for s_, spec in zip(srcs, specs):
        ignored = int(getattr(s_, "ignored", 0))
        if ignored:
            warn(f"{ignored} file(s) in {spec} are not images by extension; ignored")
    if crop_fn is not None:
        src = CropSource(src, crop_fn, warn=warn)
        if answer_options.smooth > 1:
            warn("--smooth averages consecutive results; with --roi/--crops-from they are different boxes: ignored")
            answer_options = answer_options.replace(smooth=1)
    answerer = Answerer.from_options(b.labels, answer_options)

    if batch_timeout_ms is not None and not many:
        warn("--batch-timeout-ms batches several sources; with one it is ignored")
    announce = lambda msg: console.print(redact(msg), markup=False, highlight=False)  # noqa: E731
    sinks = []
    stream_sinks: list[list[Any]] = [[] for _ in srcs]
    classifier = None
    try:
        sinks.append(open_output(output, answerer.topk, answerer.sub.datasets,
                                 mode="append" if append else "overwrite" if overwrite else "new",
                                 boxes=crop_fn is not None, warn=warn, rotation=rotation, mqtt=mqtt_options,
                                 model_sha256=model_identity(b) if mqtt_options is not None else ""))
        if save is not None:
            for i, s_ in enumerate(srcs):
                fps = s_.fps or (30.0 if s_.kind != "images" else STILLS_FPS)
                target = save.replace("{stream}", str(i)) if many else save
                (stream_sinks[i] if many else sinks).append(open_save(target, fps, overwrite, warn=warn))
        if display:
            window = open_display(warn)
            if window is not None:  # several sources: one window, a tile per stream
                sinks.append(TiledDisplaySink(window, len(srcs)) if many else window)
        classifier = Classifier(b, runner=runner_options, answers=answerer, options=run_options, announce=announce,
                                warn=warn)
        if save_attention is not None:
            classifier.enable_attention()
    except BaseException:
        for s in sinks + [s for group in stream_sinks for s in group]:
            s.abort()
        if classifier is not None:
            classifier.close()
        for s_ in srcs:
            s_.close()
        raise

    for i, s_ in enumerate(srcs):
        mode = str(getattr(s_, "mode", ""))
        if s_.live and mode:  # printed once the outputs are open, so that an error before stays one line
            where = f" (stream {i})" if many else ""
            console.print(f"{s_.kind}{where}: {mode} (as negotiated)", markup=False, highlight=False)
    try:
        if many:
            summary = classifier.run_streams(srcs, sinks, stream_sinks, console=console, stream_options=stream_options)
        else:
            attention = None if save_attention is None else AttentionWriter(save_attention, b.preprocess)
            summary = classifier.run(src, sinks, console=console, attention=attention)
    finally:
        classifier.close()
    render_summary(summary, console)
    uncovered = int(getattr(src, "uncovered", 0))
    if uncovered and crops_from is not None:
        warn(f"{uncovered} image(s)/frame(s) have no line in {crops_from}; not classified")
    if summary.interrupted:
        raise typer.Exit(128 + (summary.signal or int(signal.SIGINT)))
    nothing = summary.why_nothing(uncovered)
    if nothing:
        raise NothingClassifiedError(nothing)


def _check_many(roi: Optional[list[str]], crops_from: Optional[Path], save_attention: Optional[Path],
                save: Optional[str]) -> None:
    """What several sources in one run cannot take: one UsageError line, before anything is opened."""
    if roi or crops_from is not None:
        raise UsageError("--roi / --crops-from classify regions of one source; with several sources each frame is "
                         "classified whole (run one process per source for regions)")
    if save_attention is not None:
        raise UsageError("--save-attention takes one source; give one SOURCE")
    if save is not None and "{stream}" not in save:
        raise UsageError(f"--save {save}: with several sources each stream gets its own output; put {{stream}} in the "
                         "name (cam{stream}.mp4, out/{stream}/, rtsp://HOST:8554/cam{stream})")


def _open_all(specs: list[str], camera: Optional[int], opening: dict[str, Any], open_source: Any) -> list[Any]:
    """Every source of a multi-stream run, opened in order (`--camera N` last); one that cannot be opened
    closes those opened before and raises its SourceError."""
    opened: list[Any] = []
    try:
        for spec in specs:
            opened.append(open_source(spec, **opening))
        if camera is not None:
            opened.append(open_source(None, camera=camera, **opening))
    except BaseException:
        for src in opened:
            src.close()
        raise
    return opened


def register(app: typer.Typer, export_app: typer.Typer) -> None:
    app.command("run")(run_command)
