"""The result record: the one definition of what each line of `run`'s JSON lines and CSV holds, in order.

README's "Result records" table lists the same fields in the same order (a test holds them together).
A change to the fields raises RECORD_VERSION and is added here, to Result.to_dict and the CSV row, and
to README.

- `record_version`: RECORD_VERSION. Records without it were written before version 2 (no run_id, no seq);
  version 2 records have no `stream`.
- `run_id`: one id per process start (the UTC time it was made + 8 random hex digits, e.g.
  `20261207T010559Z-9f3a0c1e`): where a service restarted with `--append`, the runs in one file can be
  told apart.
- `seq`: 0, 1, 2 ... the result's number among the results of its source in this run, without gaps
  (`index` is the item's number in its source: the boxes of one frame share it, and an undecodable file
  leaves a gap). (`run_id`, `seq`) names one record; a process that runs several sources (the Python API)
  numbers each from 0.
- `stream` (version 3): which source of the run the result came from, `{"index": I, "uri": URI}`: I is the
  source's place on the command line (0 for a run of one source), URI the source as given with any password
  masked (erudite_edge.core.redact). `seq` counts per stream. CSV: `stream` (the index) and `stream_uri`.
"""

from __future__ import annotations

import os
import secrets
import threading
import time

RECORD_VERSION = 3

# JSON lines: every key a record can have, in the order it is written. OPTIONAL ones are left out when
# they do not apply (name_b64: a UTF-8 file name; box, box_clipped: a whole image; box_clipped: a box
# inside its image).
JSONL_FIELDS: tuple[str, ...] = (
    "record_version", "run_id", "seq", "stream", "name", "name_b64", "index", "captured_at", "frame_age_ms", "label",
    "dataset", "score", "datasets", "predictions", "box", "box_clipped",
)
OPTIONAL_FIELDS = frozenset({"name_b64", "box", "box_clipped"})

# CSV: the same record flattened (`stream` as its index and `stream_uri`). BOX_COLUMNS only with --roi / --crops-from; TOPK_COLUMNS once per rank
# (top1_label ... topK_score); MASS_COLUMN once per data set of the run; name_b64 is always a column
# (empty for a UTF-8 name).
BOX_COLUMNS = ("box_x", "box_y", "box_w", "box_h")
TOPK_COLUMNS = ("top{r}_label", "top{r}_dataset", "top{r}_score")
MASS_COLUMN = "mass_{dataset}"


def csv_columns(k: int, datasets: list[str] | tuple[str, ...] = (), boxes: bool = False) -> list[str]:
    """The CSV header for top-`k` columns, these data sets' mass columns and (`boxes`) the box columns."""
    cols = ["record_version", "run_id", "seq", "stream", "stream_uri", "name"] + (list(BOX_COLUMNS) if boxes else [])
    cols += ["label", "dataset", "score"]
    for r in range(1, k + 1):
        cols += [c.format(r=r) for c in TOPK_COLUMNS]
    cols += ["captured_at", "frame_age_ms"] + [MASS_COLUMN.format(dataset=d) for d in datasets] + ["name_b64"]
    return cols


_run: tuple[int, str] | None = None
_run_lock = threading.Lock()


def run_id() -> str:
    """This process's run id: made on first use, the same for every record after; a forked child makes its own."""
    global _run
    with _run_lock:
        if _run is None or _run[0] != os.getpid():
            _run = (os.getpid(), time.strftime("%Y%m%dT%H%M%SZ", time.gmtime()) + "-" + secrets.token_hex(4))
        return _run[1]
