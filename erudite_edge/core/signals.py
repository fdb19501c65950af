"""SIGTERM handled like Ctrl-C, so that `kill PID` (a scheduler's stop, systemd, a CI timeout) unwinds the
stack: context managers remove the temporary files and folders of a half-written checkpoint or bundle,
and what was complete before stays. SIGKILL cannot be caught; its leftovers carry the writer's PID in
their names and the next writer removes them (fileio.remove_stale_temporaries).

A KeyboardInterrupt raised at an arbitrary point inside a third-party library (a torch export, an ONNX
Runtime call) does not always come back out as itself: a library may wrap it in its own exception, and
CPython may remember it as "unhandled" and end the process by SIGINT whatever exit code we return
(seen here: `export onnx` killed by SIGTERM exited -2 or 1 instead of 130 in about 1 run in 40).
`signalled()` says a stop signal arrived, so that the CLI reports any exception after it as the
interruption it is, and `exit_now` ends the process with the code we chose.

This module owns the signal plumbing every layer may use (scoped handlers, the stop signals, deferring
them across a commit, counting them); the CLI's "SIGTERM ends a command with one line" is
erudite_edge/cli/interruptible.py."""

from __future__ import annotations

import signal
from contextlib import contextmanager
from typing import Any, Callable, Iterable, Iterator

_signalled: list[int] = []


def signal_count() -> int:
    """How many stop signals were turned into KeyboardInterrupt in this process so far."""
    return len(_signalled)


def signalled(since: int = 0) -> bool:
    """Whether a stop signal (SIGINT, SIGTERM) was turned into KeyboardInterrupt in this process, after
    `since` = signal_count() taken when the caller's command began (a process may run several)."""
    return len(_signalled) > since


def note_signal(signum: int) -> None:
    _signalled.append(signum)


def exit_now(code: int) -> None:
    """Flush and end the process with `code` without interpreter finalisation, which would replace the code
    by a death by SIGINT when CPython thinks a KeyboardInterrupt went unhandled. Our own clean-up (context
    managers, result files closed) has already run when this is called."""
    import os
    import sys

    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            pass
    os._exit(code)


STOP_SIGNALS = tuple(getattr(signal, n) for n in ("SIGINT", "SIGTERM", "SIGHUP") if hasattr(signal, n))


@contextmanager
def signal_handlers(signals: Iterable[int], handler: Callable[[int, Any], Any]) -> Iterator[bool]:
    """Within the block `handler` handles `signals`; after it the previous handlers are back (one installed
    from C, which Python reports as None, comes back as SIG_DFL). Python installs handlers only in the main
    thread: elsewhere a no-op. Yields whether the handlers were installed."""
    import threading

    if threading.current_thread() is not threading.main_thread():
        yield False
        return
    previous: dict[int, Any] = {}
    try:
        for s in signals:
            previous[s] = signal.signal(s, handler)
        yield True
    finally:
        for s, h in previous.items():
            signal.signal(s, h if h is not None else signal.SIG_DFL)


@contextmanager
def stop_signals_deferred() -> Iterator[None]:
    """Hold SIGINT/SIGTERM/SIGHUP for the few system calls of a commit (two renames); one that arrives
    meanwhile is raised again right after, to whatever handler was in place. Blocking the signal with
    pthread_sigmask would not do: the kernel hands a process-directed signal to any thread that has it
    unblocked (ONNX Runtime's and torch's threads), and Python then runs the handler in the main thread
    anyway. SIGKILL cannot be held: fileio.remove_stale_temporaries repairs what it interrupts."""
    pending: list[int] = []

    def hold(signum: int, frame: object) -> None:
        pending.append(signum)

    try:
        with signal_handlers(STOP_SIGNALS, hold):
            yield
    finally:
        for s in pending:
            signal.raise_signal(s)
