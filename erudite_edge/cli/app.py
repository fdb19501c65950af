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
        # not standalone: click's own errors (a value out of range, an unknown option) come here, to be one
        # line like ours, instead of click/rich's usage box
        code = app(args=argv, standalone_mode=False)
        if isinstance(code, int):  # typer.Exit / ctx.exit(N)
            return code
    except typer.Abort:
        typer.echo("aborted", err=True)
        return 1
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
    except Exception as e:
        if _is_command_line_error(e):
            return _command_line_error(e)
        if _after_a_stop_signal(signals_before):  # a library wrapped our KeyboardInterrupt in its own exception
            return 130
        return _traceback()
    return 0


def _is_command_line_error(e: BaseException) -> bool:
    """click's ClickException (a bad value, an unknown option, ...): typer vendors its own copy of click, so
    it is told by what it has, not by its class."""
    return callable(getattr(e, "format_message", None)) and isinstance(getattr(e, "exit_code", None), int)


def _command_line_error(e: Exception) -> int:
    if type(e).__name__ == "NoArgsIsHelpError":  # `erudite-edge export` with nothing: its help
        e.show()  # type: ignore[attr-defined]
    else:
        typer.secho(f"error: {click_error_line(e)}", err=True, fg=typer.colors.RED)
    return int(e.exit_code)  # type: ignore[attr-defined]


def click_error_line(e: Exception) -> str:
    """click's message for a bad command line, as one line, with where to read the command's options."""
    text = " ".join(e.format_message().split())  # type: ignore[attr-defined]
    ctx = getattr(e, "ctx", None)
    if ctx is not None:
        text += f" (see `{ctx.command_path} --help`)"
    return redact(text)


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
