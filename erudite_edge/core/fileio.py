"""Write artifacts whole or not at all: to a temporary name beside the target, then rename."""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import shutil
import stat
import tempfile
from pathlib import Path
from typing import Any, Iterator

from erudite_edge.core.signals import stop_signals_deferred


def _tmp_name(target: Path) -> Path:
    return target.with_name(f".{target.name}.tmp-{os.getpid()}")


@contextlib.contextmanager
def atomic_path(target: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path to write; on success it is renamed to `target`, on error removed."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = _tmp_name(target)
    try:
        yield tmp
        os.replace(tmp, target)
    finally:
        if tmp.exists():
            tmp.unlink()


def file_to_write(path: str | os.PathLike[str], option: str, overwrite: bool = False) -> Path:
    """The file a command was asked to write with `option PATH`, checked before any work is done: one line
    (UsageError) for a path that is a folder, a device, a FIFO or a socket (writing there through a rename
    would replace the node), a regular file without `overwrite`, or a folder that does not exist (never
    created behind the user's back). A symlink to a regular file is followed: the file it names is written."""
    from erudite_edge.errors import UsageError

    given = Path(path)
    target = Path(os.path.realpath(given)) if given.is_symlink() else given
    try:
        info = os.stat(target)
    except (FileNotFoundError, NotADirectoryError):  # the folder check below says which
        info = None
    except OSError as e:
        raise UsageError(f"{option} {given}: cannot look at it ({e.strerror}); choose another file") from None
    if info is not None:
        if stat.S_ISDIR(info.st_mode):
            raise UsageError(f"{option} {given}: is a folder; give a file name")
        if not stat.S_ISREG(info.st_mode):
            raise UsageError(f"{option} {given}: not a regular file (a device, FIFO or socket); give a file name")
        if not overwrite:
            raise UsageError(f"{option} {given}: file exists; pass --overwrite to replace it or choose another name")
    parent = target.parent
    if not parent.is_dir():
        what = "is not a folder" if parent.exists() else "does not exist"
        raise UsageError(f"{option} {given}: its folder {parent} {what}; create it first")
    return target


def write_bytes_atomic(target: str | os.PathLike[str], data: bytes) -> None:
    with atomic_path(target) as tmp:
        tmp.write_bytes(data)


def write_text_atomic(target: str | os.PathLike[str], text: str) -> None:
    write_bytes_atomic(target, text.encode("utf-8"))


def write_json_atomic(target: str | os.PathLike[str], obj: Any) -> None:
    write_text_atomic(target, json.dumps(obj, indent=2, sort_keys=False) + "\n")


@contextlib.contextmanager
def atomic_directory(target: str | os.PathLike[str], overwrite: bool = False) -> Iterator[Path]:
    """Build a directory under a temporary name and rename it to `target` only when the block succeeds.

    An existing `target` is an error unless `overwrite` is set (then it is replaced only at the end).
    """
    from erudite_edge.errors import UsageError

    target = Path(target)
    if target.exists() and not overwrite:
        raise UsageError(f"{target} already exists; choose another --out or pass --overwrite")
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-{os.getpid()}-", dir=target.parent))
    try:
        yield tmp
        old = target.with_name(f".{target.name}.old-{os.getpid()}")
        committed = False
        try:
            with stop_signals_deferred():  # never between the two renames: `target` would be missing
                if target.exists():
                    os.replace(target, old)
                try:
                    os.replace(tmp, target)
                except BaseException:
                    if old.exists() and not target.exists():
                        os.replace(old, target)  # the previous one back
                    raise
                committed = True
                COMMITTED.append(target)
        finally:
            if committed:
                shutil.rmtree(old, ignore_errors=True)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


@contextlib.contextmanager
def atomic_merge(target: str | os.PathLike[str]) -> Iterator[Path]:
    """Build entries under a temporary folder; when the block succeeds each one replaces the same-named entry
    of the folder `target` (created when missing). Entries of `target` the block did not write (a version
    folder a user added, a note) are left alone: `export triton --overwrite` replaces only what it writes.

    The replacements are renames (folders first, then files, each in name order), done together with the
    stop signals held; a folder replaced is first
    renamed to `.NAME.old-PID` inside `target` and removed once all are in place. SIGKILL between the
    renames leaves each entry whole, old or new (`remove_stale_temporaries(target)` tidies up)."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-{os.getpid()}-", dir=target.parent))
    try:
        yield tmp
        if not target.exists():
            with stop_signals_deferred():
                os.replace(tmp, target)
                COMMITTED.append(target)
            return
        olds: list[Path] = []
        try:
            with stop_signals_deferred():  # no Ctrl-C / SIGTERM between the renames
                for entry in sorted(tmp.iterdir(), key=lambda p: (not p.is_dir(), p.name)):  # folders, then files
                    dest = target / entry.name
                    if entry.is_dir() and dest.is_dir() and not dest.is_symlink():
                        old = target / f".{entry.name}.old-{os.getpid()}"
                        os.replace(dest, old)
                        olds.append(old)
                    os.replace(entry, dest)
                COMMITTED.append(target)
        finally:
            for old in olds:
                shutil.rmtree(old, ignore_errors=True)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


COMMITTED: list[Path] = []
"""Every target `atomic_directory` has renamed into place in this process (an interrupted command uses it
to say truthfully whether its output was written)."""


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def remove_stale_temporaries(folder: str | os.PathLike[str], name: str = "*") -> list[Path]:
    """Remove `.NAME.tmp-PID...` files and folders in `folder` whose writer (process PID) is gone: what a
    process killed with SIGKILL while writing leaves behind. Those of running processes are kept.

    A `.NAME.old-PID` folder is the previous NAME that a killed `atomic_directory` was replacing: it is put
    back where NAME is missing (SIGKILL between the two renames) and removed where NAME is whole."""
    folder = Path(folder)
    removed: list[Path] = []
    if not folder.is_dir():
        return removed
    for p in folder.glob(f".{name}.old-*"):
        stem, _, pid_text = p.name[1:].rpartition(".old-")
        if not pid_text.isdigit() or (int(pid_text) != os.getpid() and _pid_alive(int(pid_text))):
            continue
        target = folder / stem
        if target.exists():
            shutil.rmtree(p, ignore_errors=True)
            removed.append(p)
        else:
            os.replace(p, target)
    for p in folder.glob(f".{name}.tmp-*"):
        try:
            pid = int(p.name.rsplit(".tmp-", 1)[1].split("-", 1)[0])
        except ValueError:
            continue
        if pid != os.getpid() and _pid_alive(pid):
            continue
        if p.is_dir() and not p.is_symlink():
            shutil.rmtree(p, ignore_errors=True)
        else:
            p.unlink(missing_ok=True)
        removed.append(p)
    return removed


def sha256_file(path: str | os.PathLike[str], chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(chunk), b""):
            h.update(block)
    return h.hexdigest()


# -- durable writes and one-line OS errors ------------------------------------------------------

_OS_REASONS = {
    errno.ENOSPC: "no space left on the device; free some space or choose another folder",
    errno.EDQUOT: "disk quota exceeded; free some space or choose another folder",
    errno.EROFS: "the file system is read-only; choose another folder",
    errno.EACCES: "permission denied; choose a folder you can write to",
    errno.EPERM: "operation not permitted; choose a folder you can write to",
}


USER_OS_ERRORS = frozenset(_OS_REASONS)


def os_error_line(e: OSError, path: str | os.PathLike[str] | None = None, doing: str = "cannot write") -> str:
    """One line for an OSError a user can act on: what, which path, what to do."""
    where = path if path is not None else (e.filename or "?")
    reason = _OS_REASONS.get(e.errno or 0, e.strerror or str(e))
    return f"{where}: {doing}: {reason}"


def write_bytes_synced(path: str | os.PathLike[str], data: bytes) -> None:
    """Write `data` to a new file and fsync it, so that a crash after this returns cannot lose it."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o666)
    try:
        view = memoryview(data)
        while view:
            n = os.write(fd, view)
            view = view[n:]
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_dir(path: str | os.PathLike[str]) -> None:
    """Make a rename or a new file in `path` durable (directories cannot be fsynced on every OS)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
