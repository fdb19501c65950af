"""SIGTERM and Ctrl-C end a command with one line and exit 130, leaving no partial output (the CLI's side of
core/signals.py: commands that write artifacts are wrapped in `interruptible`)."""

from __future__ import annotations

import functools
import signal
from contextlib import contextmanager
from typing import Any, Callable, Iterator, TypeVar

from erudite_edge.core.signals import note_signal, signal_count, signal_handlers, signalled

F = TypeVar("F", bound=Callable[..., Any])


@contextmanager
def terminate_as_interrupt() -> Iterator[None]:
    """Within the block, SIGTERM (and Ctrl-C, as always) raise KeyboardInterrupt, noted for `signalled()`
    (in the main thread; elsewhere a no-op)."""

    def handler(signum: int, frame: object) -> None:
        note_signal(signum)
        raise KeyboardInterrupt

    with signal_handlers((signal.SIGTERM, signal.SIGINT), handler):
        yield


def interruptible(what: str) -> Callable[[F], F]:
    """Decorate a command: SIGTERM or Ctrl-C end it with one line and exit 130, leaving no partial output."""

    def wrap(fn: F) -> F:
        @functools.wraps(fn)
        def inner(*args: Any, **kwargs: Any) -> Any:
            import typer

            from erudite_edge.core.fileio import COMMITTED

            committed_before, signals_before = len(COMMITTED), signal_count()
            try:
                with terminate_as_interrupt():
                    return fn(*args, **kwargs)
            except BaseException as e:
                if not (isinstance(e, KeyboardInterrupt) or (signalled(signals_before) and isinstance(e, Exception))):
                    raise
                written = COMMITTED[committed_before:]
                if written:  # the signal came after the output was complete and renamed into place
                    typer.echo(f"interrupted after {', '.join(map(str, written))} was written completely", err=True)
                else:
                    typer.echo(f"interrupted; {what}", err=True)
                raise typer.Exit(130) from None

        return inner  # type: ignore[return-value]

    return wrap


