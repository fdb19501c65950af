"""The CLI reference page, generated from the Typer app itself (so it cannot drift from the code): each
command's `--help` as `erudite-edge COMMAND --help` prints it (plain text, 100 columns). Run by the mkdocs hook
(docs/hooks.py) on every build; `python docs/gen_cli.py` prints the page."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import typer
import typer.core

WIDTH = 100
PROG = "erudite-edge"


def commands() -> Iterator[tuple[list[str], Any, Any]]:
    """(path, command, context) of the app and every command under it, depth first, in registration order."""
    from erudite_edge.cli import app as cli

    cli._register()
    root = typer.main.get_command(cli.app)

    # typer runs on its own copy of click: each command makes its own kind of context
    def walk(cmd: Any, path: list[str], parent: Any) -> Iterator[tuple[list[str], Any, Any]]:
        ctx = cmd.context_class(cmd, info_name=path[-1], parent=parent, terminal_width=WIDTH,
                                max_content_width=WIDTH)
        yield path, cmd, ctx
        if hasattr(cmd, "commands"):
            for name, sub in cmd.commands.items():
                if not sub.hidden:
                    yield from walk(sub, path + [name], ctx)

    yield from walk(root, [PROG], None)


def plain_help(cmd: Any, ctx: Any) -> str:
    """The command's --help without rich's boxes (TYPER_USE_RICH=0 prints the same)."""
    had = typer.core.HAS_RICH
    typer.core.HAS_RICH = False
    try:
        return cmd.get_help(ctx).rstrip()
    finally:
        typer.core.HAS_RICH = had


def page() -> str:
    out = ["# CLI reference", "",
           "Generated from the command line itself (`docs/gen_cli.py`, run on every `make docs`): each section is",
           "what `--help` prints for that command.", ""]
    for path, cmd, ctx in commands():
        name = " ".join(path)
        level = "#" * min(len(path) + 1, 4)
        out += [f"{level} `{name}`", "", "```text", plain_help(cmd, ctx), "```", ""]
    return "\n".join(out)


if __name__ == "__main__":
    print(page())
