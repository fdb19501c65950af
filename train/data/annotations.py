"""Readers for the annotation files the data sets ship: whitespace tables and MATLAB .mat files.

Every failure becomes one DatasetFormatError line naming the file (and line) and what was expected,
because a half-downloaded or re-packed data set is the usual cause and the user must find the file.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from train.data.samples import DatasetFormatError


def require_file(path: Path, what: str) -> Path:
    """Return path if it is a file; otherwise a DatasetFormatError saying what the file should hold."""
    if not path.is_file():
        raise DatasetFormatError(f"{path}: missing; expected {what}")
    return path


def require_dir(path: Path, what: str) -> Path:
    if not path.is_dir():
        raise DatasetFormatError(f"{path}: missing folder; expected {what}")
    return path


def read_lines(path: Path, what: str) -> list[tuple[int, str]]:
    """Non-blank lines of a text annotation file as (1-based line number, stripped text)."""
    require_file(path, what)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise DatasetFormatError(f"{path}: cannot read ({e}); expected {what}") from e
    lines = [(i, ln.strip()) for i, ln in enumerate(text.splitlines(), start=1) if ln.strip()]
    if not lines:
        raise DatasetFormatError(f"{path}: empty; expected {what}")
    return lines


def read_id_table(path: Path, what: str, *, int_value: bool) -> dict[int, Any]:
    """A two-column '<int id> <value>' file (CUB's images.txt, image_class_labels.txt, ...) as {id: value}.

    The value is the rest of the line (it may hold spaces) or, with int_value, one integer.
    Duplicate ids and malformed lines are errors.
    """
    out: dict[int, Any] = {}
    for lineno, line in read_lines(path, what):
        parts = line.split(maxsplit=1)
        try:
            if len(parts) != 2:
                raise ValueError
            key = int(parts[0])
            value: Any = int(parts[1]) if int_value else parts[1]
        except ValueError:
            raise DatasetFormatError(f"{path}:{lineno}: expected {what}, got {line[:80]!r}") from None
        if key in out:
            raise DatasetFormatError(f"{path}:{lineno}: id {key} appears twice; expected {what}")
        out[key] = value
    return out


def load_mat(path: Path, what: str) -> dict[str, Any]:
    """scipy.io.loadmat with squeezed arrays; unreadable files become a DatasetFormatError."""
    from scipy.io import loadmat  # scipy is a training dependency only

    require_file(path, what)
    try:
        return loadmat(str(path), squeeze_me=True)
    except Exception as e:  # scipy raises ValueError, TypeError, MatReadError... for a bad file
        reason = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise DatasetFormatError(f"{path}: not a readable .mat file ({reason}); expected {what}") from e


def mat_variable(mat: dict[str, Any], key: str, path: Path, what: str) -> np.ndarray:
    """One variable of a loaded .mat file, as an array of at least one dimension."""
    if key not in mat:
        have = sorted(k for k in mat if not k.startswith("__"))
        raise DatasetFormatError(f"{path}: no variable {key!r} (found {have}); expected {what}")
    return np.atleast_1d(mat[key])


def mat_struct_field(records: np.ndarray, field: str, path: Path, what: str) -> list[Any]:
    """One field of a MATLAB struct array (loaded with squeeze_me) as a Python list, one item per record."""
    names = records.dtype.names
    if not names or field not in names:
        raise DatasetFormatError(f"{path}: struct has no field {field!r} (fields: {list(names or [])}); expected {what}")
    return [np.asarray(v).item() if np.ndim(v) == 0 else v for v in records[field]]


def as_int(value: Any, path: Path, what: str) -> int:
    """A MATLAB number (stored as double, uint8...) that must be a whole number."""
    try:
        f = float(np.asarray(value).item())
    except (TypeError, ValueError):
        raise DatasetFormatError(f"{path}: value {value!r} is not a number; expected {what}") from None
    if not f.is_integer():
        raise DatasetFormatError(f"{path}: value {f} is not a whole number; expected {what}")
    return int(f)
