"""Typer command modules, one per top-level command.

Each module defines `register(app, export_app)`. Heavy libraries (torch above all) are imported
only inside command bodies, so `erudite-edge run` works on a device without torch.
"""

from __future__ import annotations

import importlib

import typer

# Order here is the order `erudite-edge --help` lists them.
COMMAND_MODULES: list[str] = ["train", "prune", "run", "export", "export_engine", "export_serve", "check", "demo", "bench", "analyze"]


def register_all(app: typer.Typer, export_app: typer.Typer) -> None:
    for name in COMMAND_MODULES:
        importlib.import_module(f"{__name__}.{name}").register(app, export_app)
