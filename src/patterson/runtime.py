"""Runtime helpers every stage uses: the device to compute on."""

from __future__ import annotations

import re

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
