"""SIGTERM handled like Ctrl-C, so that `kill PID` (a scheduler's stop, systemd, a CI timeout) unwinds the
stack: context managers remove the temporary files and folders of a half-written checkpoint or bundle,
and what was complete before stays. SIGKILL cannot be caught; its leftovers carry the writer's PID in
their names and the next writer removes them (fileio.remove_stale_temporaries)."""

from __future__ import annotations

import functools
import signal
from contextlib import contextmanager
from typing import Any, Callable, Iterator, TypeVar

F = TypeVar("F", bound=Callable[..., Any])


@contextmanager
def terminate_as_interrupt() -> Iterator[None]:
    """Within the block, SIGTERM raises KeyboardInterrupt (in the main thread; elsewhere a no-op)."""

    def handler(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    try:
        previous = signal.signal(signal.SIGTERM, handler)
    except ValueError:  # not the main thread
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def interruptible(what: str) -> Callable[[F], F]:
    """Decorate a command: SIGTERM or Ctrl-C end it with one line and exit 130, leaving no partial output."""

    def wrap(fn: F) -> F:
        @functools.wraps(fn)
        def inner(*args: Any, **kwargs: Any) -> Any:
            import typer

            try:
                with terminate_as_interrupt():
                    return fn(*args, **kwargs)
            except KeyboardInterrupt:
                typer.echo(f"interrupted; {what}", err=True)
                raise typer.Exit(130) from None

        return inner  # type: ignore[return-value]

    return wrap
