"""`run --sources-file FILE`: the sources of a multi-stream run, one per line (what `run SRC SRC ...` takes).

Blank lines and lines starting with `#` are skipped; each line is stripped of surrounding white space.
A file that cannot be read, is not UTF-8 or names no source: SourceError, one line naming it.
"""

from __future__ import annotations

from pathlib import Path

from erudite_edge.errors import SourceError

MAX_BYTES = 1 << 20  # a list of sources, not a data file


def read_sources_file(path: Path) -> list[str]:
    """The sources listed in `path`, in order."""
    try:
        with open(path, "rb") as f:
            raw = f.read(MAX_BYTES + 1)
    except OSError as e:
        raise SourceError(f"--sources-file {path}: cannot be read ({e.strerror or e}); give a text file with one "
                          "source per line") from None
    if len(raw) > MAX_BYTES:
        raise SourceError(f"--sources-file {path}: over {MAX_BYTES >> 20} MiB; it lists sources, one per line")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise SourceError(f"--sources-file {path}: not UTF-8 text; give one source per line") from None
    sources = [s for s in (line.strip() for line in text.splitlines()) if s and not s.startswith("#")]
    if not sources:
        raise SourceError(f"--sources-file {path}: lists no source (blank lines and # comments are skipped)")
    return sources
