"""Make the installed `tensorrt-stubs` usable by mypy: write a repaired copy to a directory for MYPYPATH.

Why: the PyPI package `tensorrt-stubs` (10.13.0.35.1) installs `tensorrt/__init__.pyi` and
`tensorrt_bindings/*.pyi` without a py.typed marker, so mypy skips them and, with
ignore_missing_imports, silently types all of TensorRT as Any. Pointing MYPYPATH at them fails
too: the generated stubs hold a few syntax errors (parameters named `in`, a parameter without a
default after defaulted ones) that stop mypy, and a module-level `bool: DataType` alias that
shadows the builtin in every `-> bool`. This copies the stubs with exactly those repairs and an
`# mypy: ignore-errors` line (their remaining sloppiness is theirs, not ours to report).

Usage: python tools/prepare_trt_stubs.py OUT_DIR
"""

from __future__ import annotations

import importlib.util
import re
import shutil
import sys
from pathlib import Path

PACKAGES = ("tensorrt", "tensorrt_bindings")


def site_dir() -> Path:
    spec = importlib.util.find_spec("tensorrt_stubs")
    if spec is None or spec.origin is None:
        sys.exit("tensorrt-stubs is not installed: pip install --no-deps 'tensorrt-stubs==10.13.0.35.1'")
    return Path(spec.origin).parent.parent


def repair(text: str) -> str:
    text = re.sub(r"([(,] ?)in: ", r"\1in_: ", text)  # `in` is a keyword, not a parameter name
    text = re.sub(r", channel_axis: int\)", ", channel_axis: int = ...)", text)
    text = re.sub(r"^bool: .*$", "", text, flags=re.MULTILINE)  # the DataType alias hiding builtins.bool
    return "# mypy: ignore-errors\n" + text


def main(out: Path) -> None:
    src = site_dir()
    tmp = out.with_name(out.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    for pkg in PACKAGES:
        files = sorted((src / pkg).glob("*.pyi"))
        if not files:
            sys.exit(f"{src / pkg}: no .pyi stubs found (is tensorrt-stubs installed?)")
        (tmp / pkg).mkdir(parents=True)
        for f in files:
            (tmp / pkg / f.name).write_text(repair(f.read_text()))
    shutil.rmtree(out, ignore_errors=True)
    tmp.rename(out)


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    main(Path(sys.argv[1]))
