"""The output grammar: `-o` (nothing: JSON lines on stdout; FILE.jsonl; FILE.csv; mqtt[s]://... a broker,
erudite_edge.outputs.mqtt) and `--save` (rtp:// or rtsp://
stream, a video file by suffix, else a folder of annotated images); --display is video.open_display."""

from __future__ import annotations

from pathlib import Path
from typing import Callable

from erudite_edge.errors import UsageError
from erudite_edge.outputs.mqtt import MqttOptions
from erudite_edge.outputs.records import CsvSink, JsonlSink
from erudite_edge.outputs.results import Sink
from erudite_edge.outputs.rotation import Rotation
from erudite_edge.outputs.video import STILLS_FPS, VIDEO_SUFFIXES, ImageFolderSink, VideoSink


def open_output(target: str | Path | None, k: int, datasets: list[str] | tuple[str, ...] = (), mode: str = "new",
                boxes: bool = False, warn: Callable[[str], None] | None = None,
                rotation: Rotation | None = None, mqtt: MqttOptions | None = None,
                model_sha256: str = "") -> Sink:
    """JSON lines to stdout (no target), or to FILE.jsonl, or CSV to FILE.csv, or each record to an MQTT
    broker (`mqtt[s]://...`, with `mqtt` options and the `model_sha256` its records carry). `mode`: "new" refuses an
    existing file, "append" adds to it, "overwrite" empties it (both only once its lock is held).
    `boxes`: results are crops; CSV gets box columns (JSON lines carry `box` on their own). `warn` gets the
    one line that says an appended file's torn last line was cut off (result_log.AppendLog). `rotation`:
    the file's size bound (outputs.rotation)."""
    is_uri = isinstance(target, str) and "://" in target
    if mqtt is not None and not is_uri:
        raise UsageError("--mqtt-qos, --mqtt-ca/-cert/-key, --spool, --spool-max-mb and --spool-sync are for -o mqtt://...")
    if target is None:
        if rotation is not None:
            raise UsageError("--rotate-mb bounds a result file: give -o FILE.jsonl or FILE.csv")
        return JsonlSink()
    if is_uri:
        return _open_mqtt(str(target), rotation, mqtt, model_sha256, warn)
    path = Path(target)
    suffix = path.suffix.lower()
    if suffix in (".jsonl", ".ndjson", ".json"):
        return JsonlSink(path, mode=mode, warn=warn, rotation=rotation)
    if suffix == ".csv":
        return CsvSink(path, k, datasets, mode=mode, boxes=boxes, warn=warn, rotation=rotation)
    raise UsageError(f"--output {path}: use a .jsonl or .csv file name")


def _open_mqtt(uri: str, rotation: Rotation | None, options: MqttOptions | None, model_sha256: str,
               warn: Callable[[str], None] | None) -> Sink:
    from erudite_edge.core.redact import redact
    from erudite_edge.outputs.mqtt import MqttSink, is_mqtt_uri, parse_mqtt_uri

    if not is_mqtt_uri(uri):
        raise UsageError(f"--output {redact(uri)}: unsupported URL; give mqtt://[USER:PASSWORD@]HOST[:PORT]/TOPIC, "
                         "mqtts://..., or a .jsonl or .csv file name")
    target = parse_mqtt_uri(uri)
    if rotation is not None:
        raise UsageError("--rotate-mb bounds a result file, not -o mqtt://...")
    return MqttSink(target, options or MqttOptions(), model_sha256, warn=warn)


def open_save(target: str | Path, fps: float | None, overwrite: bool = False,
              warn: Callable[[str], None] | None = None) -> Sink:
    """An H.264 stream for rtp://HOST:PORT or rtsp://HOST:PORT/PATH (erudite_edge.outputs.stream), an annotated
    video when the path ends in a video suffix (at `fps`; still images at STILLS_FPS), else a folder of
    annotated images."""
    text = str(target)
    if "://" in text:
        from erudite_edge.outputs.stream import StreamSink, is_stream_url

        if not is_stream_url(text):
            from erudite_edge.core.redact import redact

            raise UsageError(f"--save {redact(text)}: unsupported URL; streams are rtp://HOST:PORT or "
                             "rtsp://HOST:PORT/PATH, files a .mp4/.avi name or a folder")
        return StreamSink(text, fps or 30.0, warn=warn)
    path = Path(target)
    if path.suffix.lower() in VIDEO_SUFFIXES:
        if path.exists() and not overwrite:
            raise UsageError(f"--save {path}: file exists; choose another name or pass --overwrite")
        return VideoSink(path, fps or STILLS_FPS)
    return ImageFolderSink(path, overwrite)


