"""Files, on the ground floor: writing a file or a whole output folder all-or-nothing, cleaning what killed runs
left behind, and a lock on an output folder."""

from __future__ import annotations

import contextlib
import json
import math
import os
import shutil
import tempfile
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from patterson.errors import PattersonError


def atomic_write(path: Path, write) -> None:
    """Write a file through ``write(tmp_path)`` to a temporary name in the same folder, flush it to disk, then
    rename: readers never see a partial file, and a failure leaves none behind."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        write(tmp)
        with open(tmp, "rb+") as fh:
            os.fsync(fh.fileno())
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def check_writable_folder(folder: Path) -> None:
    """Raise PattersonError unless ``folder`` is, or can be created as, a writable folder (creates nothing)."""
    probe = folder
    while not probe.exists():
        probe = probe.parent
    if not probe.is_dir():
        raise PattersonError(f"{folder}: {probe} is not a folder")
    if not os.access(probe, os.W_OK | os.X_OK):
        raise PattersonError(f"{folder}: the output folder is not writable")




def holds_only(folder: Path, names, marker: str | None = None) -> bool:
    """Whether ``folder`` holds nothing but entries named in ``names`` (and ``marker`` among them, when given): an
    earlier output of a command, which it may replace."""
    found = {p.name for p in Path(folder).iterdir()}
    return found <= set(names) and (marker is None or marker in found)


def check_output_folder(out: Path, may_replace: Callable[[Path], bool], what: str) -> None:
    """Before any work: refuse an ``out`` that cannot be written, or that holds anything but ``what`` (an earlier
    output of the same command, as ``may_replace`` tells)."""
    out = Path(out)
    check_writable_folder(out)
    if out.is_dir() and any(out.iterdir()) and not may_replace(out):
        raise PattersonError(f"{out}: not empty and not {what}; choose another --out")


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def clean_leftovers(out: Path) -> None:
    """Remove the temporary folders ``.NAME.PID.tmp`` beside ``out`` that runs since killed left behind (those of
    live processes are kept)."""
    out = Path(out)
    if not out.parent.is_dir():
        return
    for tmp in out.parent.glob(f".{out.name}.*.tmp"):
        pid = tmp.name[len(out.name) + 2 : -len(".tmp")].split(".")[0]
        if tmp.is_dir() and pid.isdigit() and not _pid_alive(int(pid)):
            shutil.rmtree(tmp, ignore_errors=True)


@contextlib.contextmanager
def publish_folder(out: str | Path, may_replace: Callable[[Path], bool] | None = None):
    """Write an output folder all-or-nothing: yields a fresh temporary folder beside ``out`` (named with this
    process's pid) to fill; when the block ends normally it becomes ``out``, replacing an empty folder, or a
    previous output when ``may_replace(out)`` says so. On any failure, or when killed, ``out`` is untouched; the
    next run removes the leftovers of dead runs (:func:`clean_leftovers`)."""
    out = Path(out)
    check_writable_folder(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    clean_leftovers(out)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.{os.getpid()}.", suffix=".tmp", dir=out.parent))
    try:
        yield tmp
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o777 & ~umask)
        if out.is_dir() and any(out.iterdir()):
            if may_replace is None or not may_replace(out):
                what = "not empty and not an earlier output of this command"
                raise PattersonError(f"{out}: {what}; choose another --out")
            old = out.parent / f".{out.name}.{os.getpid()}.old.tmp"
            os.replace(out, old)
            os.replace(tmp, out)
            shutil.rmtree(old, ignore_errors=True)
        else:
            if out.is_dir():
                out.rmdir()
            os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


@contextlib.contextmanager
def folder_lock(folder: str | Path):
    """Hold ``.NAME.lock`` beside ``folder`` (it records this process's pid) while writing the folder: a second
    writer is refused in one line; a lock whose process is gone (killed) is taken over."""
    folder = Path(folder)
    folder.parent.mkdir(parents=True, exist_ok=True)
    lock = folder.parent / f".{folder.name}.lock"
    for _ in range(2):
        try:
            fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            break
        except FileExistsError:
            holder = _lock_holder(lock)
            if holder is not None:
                raise PattersonError(f"{folder}: another patterson (pid {holder}) is writing it; wait for it to end "
                                     f"or stop it") from None  # fmt: skip
            lock.unlink(missing_ok=True)  # left by a killed run
    else:
        raise PattersonError(f"{folder}: cannot take the lock {lock}")
    with os.fdopen(fd, "w") as fh:
        fh.write(str(os.getpid()))
    try:
        yield
    finally:
        lock.unlink(missing_ok=True)


def _lock_holder(lock: Path) -> int | None:
    """The pid in a lock file when that process still runs, else None."""
    try:
        pid = int(lock.read_text().strip() or 0)
    except (OSError, ValueError):
        return None
    return pid if pid > 0 and pid != os.getpid() and _pid_alive(pid) else None


# --- plain values, JSON and text -----------------------------------------------------------------------------------


def plain(value: Any, finite: bool = False) -> Any:
    """A copy in plain types (dict with str keys, list, str, int, float, bool, None), fit for JSON and for
    ``torch.load(weights_only=True)``: arrays, tensors and numpy scalars become lists and numbers, anything else its
    text (a Path its path); with ``finite``, NaN and infinities become None (strict JSON)."""
    if isinstance(value, Mapping):
        return {str(k): plain(v, finite) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [plain(v, finite) for v in value]
    if hasattr(value, "tolist") and not isinstance(value, bool | int | float | str):  # arrays, tensors, np scalars
        return plain(value.tolist(), finite)
    if isinstance(value, float):
        return None if finite and not math.isfinite(value) else value
    if value is None or isinstance(value, bool | int | str):
        return value
    return str(value)


def write_json(path: str | Path, data: Any) -> None:
    """Write strict JSON (no NaN), atomically."""
    text = json.dumps(data, indent=2, allow_nan=False) + "\n"
    atomic_write(Path(path), lambda tmp: Path(tmp).write_text(text, encoding="utf-8"))


def write_text(path: str | Path, text: str) -> None:
    """Write a text file atomically."""
    atomic_write(Path(path), lambda tmp: Path(tmp).write_text(text, encoding="utf-8"))
