"""Runtime helpers every stage uses: the device to compute on, the memory a job may take, progress bars."""

from __future__ import annotations

import contextlib
import os
import re
import sys

import torch

from patterson.errors import PattersonError


def device(name: str | torch.device | None = None) -> torch.device:
    """The torch device for ``name``: None → the GPU when there is one, else the CPU; ``cpu``, ``cuda`` or
    ``cuda:N``, checked against the machine, so that a wrong or absent device is one line, not a traceback later."""
    if isinstance(name, torch.device):
        return name
    if name is None or name == "":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    text = str(name).strip().lower()
    if text == "cpu":
        return torch.device("cpu")
    match = re.fullmatch(r"cuda(?::(\d+))?", text)
    if match is None:
        raise PattersonError(f"unknown device {name!r}: use cpu, cuda or cuda:N")
    if not torch.cuda.is_available():
        raise PattersonError(f"--device {name}: this machine has no CUDA GPU (use cpu)")
    index = int(match.group(1) or 0)
    if index >= torch.cuda.device_count():
        raise PattersonError(f"--device {name}: only {torch.cuda.device_count()} CUDA device(s) here")
    return torch.device("cuda", index)


def available_bytes() -> int:
    """Memory this machine can give now (MemAvailable of /proc/meminfo; else free pages; else 8 GiB)."""
    try:
        with open("/proc/meminfo") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return int(os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))
    except (ValueError, OSError, AttributeError):
        return 8 * 2**30


def check_memory(n_bytes: float, what: str, hint: str = "use a coarser d_min or a smaller cell") -> None:
    """Refuse, before allocating, work that needs more memory than the machine has available now."""
    available = available_bytes()
    if n_bytes > available:
        raise PattersonError(
            f"{what} would need about {n_bytes / 2**30:,.1f} GiB of memory and this machine has "
            f"{available / 2**30:.1f} GiB available: {hint}"
        )


def bar_options() -> dict:
    """tqdm options for a progress bar on stderr: live on a terminal; at most one line every 30 s when stderr is a
    file or a pipe (a log), so that long runs do not flood it."""
    tty = hasattr(sys.stderr, "isatty") and sys.stderr.isatty()
    return {"mininterval": 0.2 if tty else 30.0, "dynamic_ncols": tty}


@contextlib.contextmanager
def torch_threads(n: int | None):
    """Run with ``n`` torch CPU threads (None: unchanged). Small FFT grids run several times faster on one thread
    than on two busy ones (measured on the 2-core machine: 0.23 s vs 3.4 s for a 200-iteration HIO on 18×20×16)."""
    old = torch.get_num_threads()
    if n is not None:
        torch.set_num_threads(max(1, int(n)))
    try:
        yield
    finally:
        torch.set_num_threads(old)
