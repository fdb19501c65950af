"""Which layers TensorRT ran on sparse kernels, read from its own build log (`export engine` of a 2:4 bundle).

With the SPARSE_WEIGHTS builder flag, TensorRT logs at INFO severity (developer guide, "Structured Sparsity"):

    (Sparsity) Layers eligible for sparse math: conv1, conv2, conv3
    (Sparsity) TRT inference plan picked sparse implementation for layers: conv2, conv3

Polygraphy's TensorRT logger hands TensorRT's INFO messages to `G_LOGGER.verbose` (polygraphy/backend/trt/util.py,
`get_trt_logger`), which prints them only at VERBOSE. `sparsity_log()` lowers Polygraphy's severity to VERBOSE
for the build, routed through Python's logging (`G_LOGGER.use_python_logging_system`, Polygraphy's own switch),
keeps the "(Sparsity)" lines and passes on exactly what would have been shown before (stdout, or the caller's
logging handlers where Polygraphy already used them): the build says no more than it did. Everything is
restored afterwards, whatever happens in the build.
"""

from __future__ import annotations

import contextlib
import logging
import re
import sys
from dataclasses import dataclass
from typing import Any, Iterable, Iterator

ELIGIBLE = "Layers eligible for sparse math:"
PICKED = "picked sparse implementation for layers:"
_ANSI = re.compile(r"\x1b\[[0-9;]*m")


@dataclass(frozen=True)
class SparseLayers:
    """What TensorRT's log said: `seen` False when it named nothing (a version that does not log it, or no
    layer it would consider)."""

    seen: bool
    eligible: tuple[str, ...] = ()
    picked: tuple[str, ...] = ()
    readable: bool = True  # False: this Polygraphy cannot route its log through Python's logging

    def summary(self) -> str:
        if not self.readable:
            return ("which layers TensorRT ran on sparse kernels is not known: this Polygraphy cannot hand its log over "
                    "(a verbose build, `polygraphy convert --verbose`, lists them)")
        if not self.seen:
            return ("TensorRT's build log named no layer for sparse math (no layer qualified, or this TensorRT does "
                    "not log it): the engine's kernels are dense as far as it tells")
        if not self.picked:
            return (f"TensorRT ran none of the {len(self.eligible)} layers eligible for sparse math on sparse kernels "
                    "(dense ones were faster, as is common on CNNs)")
        return (f"TensorRT ran {len(self.picked)} of {len(self.eligible)} eligible layers on sparse kernels: "
                f"{', '.join(self.picked)}")


def _names(line: str, marker: str) -> tuple[str, ...]:
    rest = line.split(marker, 1)[1]
    return tuple(n.strip() for n in rest.split(",") if n.strip())


def parse(lines: Iterable[str] | None) -> SparseLayers:
    """The (Sparsity) lines among `lines` (Polygraphy's prefix and colours allowed); None: the log was not read."""
    if lines is None:
        return SparseLayers(seen=False, readable=False)
    eligible: list[str] = []
    picked: list[str] = []
    seen = False
    for raw in lines:
        line = _ANSI.sub("", raw)
        if "(Sparsity)" not in line:
            continue
        if ELIGIBLE in line:
            eligible.extend(_names(line, ELIGIBLE))
            seen = True
        elif PICKED in line:
            picked.extend(_names(line, PICKED))
            seen = True
    return SparseLayers(seen, tuple(dict.fromkeys(eligible)), tuple(dict.fromkeys(picked)))


class _Keep(logging.Handler):
    """Keeps the (Sparsity) messages; passes on what was shown before (`shown`: a Python logging level)."""

    def __init__(self, lines: list[str], shown: int, forward: Any):
        super().__init__(level=1)
        self.lines, self.shown, self.forward = lines, shown, forward

    def emit(self, record: logging.LogRecord) -> None:
        message = record.getMessage()
        if "(Sparsity)" in message:
            self.lines.append(message)
        if record.levelno >= self.shown:
            self.forward(record)


@contextlib.contextmanager
def sparsity_log() -> Iterator[list[str] | None]:
    """For the duration: Polygraphy (and so TensorRT's INFO log) at VERBOSE into a list of the (Sparsity)
    messages, yielded; the rest shown as before. None where this Polygraphy has no `use_python_logging_system`
    (the build goes on as it would have, unread)."""
    from polygraphy.logger import G_LOGGER

    if not isinstance(getattr(type(G_LOGGER), "use_python_logging_system", None), property):
        yield None
        return
    lines: list[str] = []
    shown = G_LOGGER.module_severity.get()
    was_python = bool(G_LOGGER.use_python_logging_system)
    G_LOGGER.use_python_logging_system = True  # sets G_LOGGER.python_logger (logging.getLogger("Polygraphy"))
    plog: logging.Logger = G_LOGGER.python_logger
    mapping = getattr(G_LOGGER, "severity_level_mapping", {})
    shown_level = shown if shown > 0 else mapping.get(shown, 1)
    level, propagate, handlers = plog.level, plog.propagate, list(plog.handlers)

    def forward(record: logging.LogRecord) -> None:
        if was_python:  # the caller's handlers, as Polygraphy would have reached them
            for h in handlers:
                if record.levelno >= h.level:
                    h.handle(record)
            if propagate and plog.parent is not None:
                plog.parent.handle(record)
        else:  # Polygraphy's own printing
            print(record.getMessage(), file=sys.stderr if record.levelno >= G_LOGGER.CRITICAL else sys.stdout)

    keep = _Keep(lines, shown_level, forward)
    for h in handlers:
        plog.removeHandler(h)
    plog.addHandler(keep)
    plog.setLevel(1)
    plog.propagate = False
    try:
        with G_LOGGER.verbosity(min(shown, G_LOGGER.VERBOSE)):
            yield lines
    finally:
        plog.removeHandler(keep)
        for h in handlers:
            plog.addHandler(h)
        plog.setLevel(level)
        plog.propagate = propagate
        G_LOGGER.use_python_logging_system = was_python
