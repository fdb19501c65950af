"""Result records: JSON lines (stdout or a file) and CSV, one whole line per result.

Each line goes straight into its file and is fsynced about once a second and at the end
(erudite_edge.outputs.result_log): a killed run keeps every complete line it wrote.

File names that are not UTF-8 (Linux allows any bytes) are written losslessly: `name` holds the name with
the undecodable bytes shown as U+FFFD, and `name_b64` the exact bytes in base64 (only for such names).
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import os
import sys
from pathlib import Path
from typing import IO, Any, Callable

from erudite_edge.outputs.results import Result, Sink, iso_utc, name_fields, printable
from erudite_edge.outputs.rotation import Rotation
from erudite_edge.outputs.schema import RECORD_VERSION, csv_columns
from erudite_edge.sources.base import Item


class JsonlSink(Sink):
    """One JSON object per line (Result.to_dict): to stdout (flushed per line, for piping) or appended
    to a file through an AppendLog (one write per line, fsync about once a second and at the end)."""

    def __init__(self, path: Path | None = None, stream: IO[str] | None = None, mode: str = "new",
                 fsync_interval: float = 1.0, warn: Callable[[str], None] | None = None,
                 rotation: Rotation | None = None):
        from erudite_edge.outputs.result_log import AppendLog

        self.path = path
        self._log: AppendLog | None = None
        if path is not None:
            self._log = AppendLog(path, mode, fsync_interval=fsync_interval, warn=warn, rotation=rotation)
        else:
            self._stream: IO[str] = stream or sys.stdout

    def write(self, result: Result, item: Item) -> None:
        if self.stop_requested:
            return
        line = json.dumps(result.to_dict(), ensure_ascii=False) + "\n"
        if self._log is not None:
            self._log.write(line.encode("utf-8"))
            return
        try:
            self._stream.write(line)
            self._stream.flush()
        except BrokenPipeError:
            # the reader went away (`| head`): stop the run quietly, as other Unix tools do
            self.stop_requested = True
            self.stop_reason = "stdout closed by its reader"
            with contextlib.suppress(OSError, ValueError, AttributeError):
                devnull = os.open(os.devnull, os.O_WRONLY)
                os.dup2(devnull, self._stream.fileno())
        except OSError as e:  # a full disk behind `> file`, /dev/full, an I/O error: one line naming stdout
            from erudite_edge.core.fileio import os_error_line
            from erudite_edge.errors import OutputError

            with contextlib.suppress(OSError, ValueError, AttributeError):  # what is buffered cannot go out either
                devnull = os.open(os.devnull, os.O_WRONLY)
                os.dup2(devnull, self._stream.fileno())
            raise OutputError(os_error_line(e, "stdout")) from None

    def commit(self) -> None:
        if self._log is not None:
            self._log.close()
        else:
            with contextlib.suppress(BrokenPipeError):
                self._stream.flush()

    def abort(self) -> None:
        if self._log is not None:
            self._log.close(keep_empty=False)

    def describe(self) -> str:
        return f"JSON lines -> {printable(str(self.path)) if self.path else 'stdout'}"


def csv_header(k: int, datasets: list[str] | tuple[str, ...] = (), boxes: bool = False) -> list[str]:
    """The CSV columns (erudite_edge.outputs.schema.csv_columns)."""
    return csv_columns(k, datasets, boxes)


def _csv_line(row: list[Any]) -> bytes:
    buf = io.StringIO()
    csv.writer(buf).writerow(row)
    return buf.getvalue().encode("utf-8")


class CsvSink(Sink):
    """One row per image: record_version, run_id, seq, stream, stream_uri (erudite_edge.outputs.schema), name, the answer (label,
    data set, score), the top-k as columns (top1_label, top1_dataset, top1_score, top2_label, ...),
    captured_at, frame_age_ms, the mass of each data set, and name_b64 (the exact bytes of a file name that
    is not UTF-8, else empty). Appended like JSONL."""

    def __init__(self, path: Path, k: int, datasets: list[str] | tuple[str, ...] = (), mode: str = "new",
                 fsync_interval: float = 1.0, boxes: bool = False, warn: Callable[[str], None] | None = None,
                 rotation: Rotation | None = None):
        from erudite_edge.outputs.result_log import AppendLog

        self.path = path
        self.k = k
        self.datasets = list(datasets)
        self.boxes = boxes  # crops: box_x, box_y, box_w, box_h after the name
        # csv.writer ends each row with CRLF; a name may hold a bare LF (quoted), so a row ends at CRLF
        self._log = AppendLog(path, mode, header=_csv_line(csv_header(k, self.datasets, boxes)),
                              fsync_interval=fsync_interval, warn=warn, terminator=b"\r\n", rotation=rotation)

    def write(self, result: Result, item: Item) -> None:
        top = result.top
        name, raw = name_fields(result.name)
        row: list[Any] = [RECORD_VERSION, result.run_id, result.seq, result.stream.index, result.stream.uri, name]
        if self.boxes:
            row += result.box.as_list() if result.box is not None else ["", "", "", ""]
        row += [result.answer_label, result.answer_dataset, f"{top.score:.6f}"]
        for r in range(self.k):
            if r < len(result.predictions):
                p = result.predictions[r]
                row += [p.label, p.dataset, f"{p.score:.6f}"]
            else:
                row += ["", "", ""]
        row += [iso_utc(result.captured_at) if result.captured_at else "", f"{result.frame_age_ms:.2f}"]
        row += [f"{result.dataset_mass[d]:.6f}" if d in result.dataset_mass else "" for d in self.datasets]
        row.append(raw)
        self._log.write(_csv_line(row))

    def commit(self) -> None:
        self._log.close()

    def abort(self) -> None:
        self._log.close(keep_empty=False)

    def describe(self) -> str:
        return f"CSV -> {printable(str(self.path))}"


