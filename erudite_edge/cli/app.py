"""The `erudite-edge` command line."""

from __future__ import annotations

import sys

import typer

from erudite_edge.core.redact import redact
from erudite_edge.errors import EruditeError

app = typer.Typer(
    name="erudite-edge",
    help="Train one erudite fine-grained classifier over several data sets, export it, run it on a Jetson.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
export_app = typer.Typer(help="Export a trained run: ONNX bundle, FP16 and INT8 models, TensorRT engines, the zoo.",
                         no_args_is_help=True)
app.add_typer(export_app, name="export")


@app.command("version")
def version() -> None:
    """Print the version of erudite-edge."""
    from erudite_edge._version import __version__

    typer.echo(__version__)


_registered = False


def _register() -> None:
    """Each command module adds its commands to `app` / `export_app` (once per process)."""
    global _registered
    if _registered:
        return
    from erudite_edge.cli.commands import register_all

    register_all(app, export_app)
    _registered = True


def main(argv: list[str] | None = None) -> int:
    from erudite_edge.core.signals import signal_count

    _register()
    signals_before = signal_count()  # a stop signal during *this* command (a process may run several)
    try:
        app(args=argv, standalone_mode=True)
    except EruditeError as e:
        typer.secho(f"error: {redact(str(e))}", err=True, fg=typer.colors.RED)
        return e.exit_code
    except KeyboardInterrupt:
        typer.echo("interrupted", err=True)
        return 130
    except OSError as e:
        from erudite_edge.core.fileio import USER_OS_ERRORS, os_error_line

        if e.errno not in USER_OS_ERRORS:
            if _after_a_stop_signal(signals_before):
                return 130
            return _traceback()
        typer.secho(f"error: {redact(os_error_line(e))}", err=True, fg=typer.colors.RED)
        return 2
    except SystemExit as e:
        return int(e.code or 0) if not isinstance(e.code, str) else 1
    except Exception:
        if _after_a_stop_signal(signals_before):  # a library wrapped our KeyboardInterrupt in its own exception
            return 130
        return _traceback()
    return 0


def _traceback() -> int:
    """An unexpected exception (a bug): its traceback, as Python would print it, with every URI's password
    hidden (a message may hold the source's URI); exit status 1, as for an uncaught exception."""
    import traceback

    sys.stderr.write(redact(traceback.format_exc()))
    sys.stderr.flush()
    return 1


def _after_a_stop_signal(since: int) -> bool:
    from erudite_edge.core.signals import signalled

    if signalled(since):
        typer.echo("interrupted", err=True)
        return True
    return False


def run_as_program() -> None:
    """`python -m erudite_edge` and the `erudite-edge` script: exit with main()'s code, even after a stop
    signal (see core.signals.exit_now)."""
    from erudite_edge.core.signals import exit_now, signalled

    code = main()
    if signalled():
        exit_now(code)
    sys.exit(code)


if __name__ == "__main__":
    run_as_program()
