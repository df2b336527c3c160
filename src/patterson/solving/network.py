"""Trained networks for solving: finding shipped weights and applying a network to any cell."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from patterson.cells import Cell
from patterson.errors import PattersonError
from patterson.maps import density_from_f
from patterson.solving.data import ObservedData
from patterson.training.checkpoint import WEIGHTS_DIR, find_checkpoint  # noqa: F401 - re-exported

TRANSFERS = ("convolve", "resample")


@dataclass
class SolverModel:
    """A trained network with what applying it needs: normalisation constants, the training grid spacing (Å),
    resolution and grid shape."""

    model: torch.nn.Module
    norm: dict
    spacing: float
    d_min: float
    train_shape: tuple[int, int, int]
    path: str


def load_solver_model(path: str | Path, device: str | torch.device = "cpu") -> SolverModel:
    """Load a checkpoint and read the training cell, grid and resolution from its data description."""
    from patterson.training import load_checkpoint, load_model

    state = load_checkpoint(path, map_location=device)
    model = load_model(path, map_location=device).to(device)
    train = (state.get("data") or {}).get("train") or {}
    ds = train.get("dataset") or {}
    shape = tuple(int(x) for x in (train.get("input_shape") or (1, 24, 24, 24))[-3:])
    d_min = float(ds.get("d_min", 1.5))
    cell = ds.get("cell", None)
    cell = Cell.of(cell[:6] if isinstance(cell, list | tuple) else cell) if cell else None
    spacing = max(cell.a / shape[0], cell.b / shape[1], cell.c / shape[2]) if cell else d_min / 3
    norm = state.get("normalisation") or {"input": 1.0, "target": 1.0}
    return SolverModel(model, dict(norm), float(spacing), d_min, shape, str(path))


def model_grid(cell: Cell, spacing: float) -> tuple[int, int, int]:
    """The even grid closest to ``spacing`` Å along each axis of ``cell`` (the U-Nets need even sizes).

    Not rounded up to FFT-friendly sizes: that changed the voxel size by up to 15% (13 Å and 14 Å cells got 30
    voxels, 0.43 and 0.47 Å instead of 0.5 Å) and cost the ``convolve`` transfer 0.03–0.07 in map CC (measured
    with the functions of benchmarks/cell_transfer.py); FFTs of these small grids are fast at any size.
    """
    return tuple(max(2, 2 * math.floor(x / spacing / 2 + 0.5)) for x in (cell.a, cell.b, cell.c))


def predict_density(
    solver: SolverModel, data: ObservedData, transfer: str = "resample", input_scale: float | None = None
) -> tuple[torch.Tensor, np.ndarray, tuple[int, int, int]]:
    """The network's density for observed amplitudes in any cell.

    ``convolve``: the Patterson map on a grid of the training spacing in the real cell (the network is fully
    convolutional with circular padding). ``resample``: the Patterson on the training grid shape, whatever the cell
    (fractional coordinates are stretched to the training cell). By default (``input_scale`` None) the input is
    scaled so its origin peak is 1 (the training constants put the largest Patterson of the training set at 1; real
    data have no absolute scale). With ``input_scale`` the Patterson is divided by it instead: amplitudes on the
    absolute scale and ``solver.norm["input"]`` give exactly the training input (benchmarks/cell_transfer.py measures
    both).
    Returns (density (X, Y, Z), mask (M,) of reflections the grid holds and the model's resolution covers, grid).
    """
    if transfer not in TRANSFERS:
        raise PattersonError(f"unknown transfer {transfer!r} (choose from {', '.join(TRANSFERS)})")
    if input_scale is not None and not (math.isfinite(input_scale) and input_scale > 0):
        raise PattersonError(f"input_scale must be a positive number, got {input_scale!r}")
    cell = data.cell
    shape = model_grid(cell, solver.spacing) if transfer == "convolve" else solver.train_shape
    lim = np.array(shape) // 2 - 1
    hold = np.all(np.abs(data.hkl) <= lim, axis=1) & (cell.d_spacing(data.hkl) >= solver.d_min * (1 - 1e-6))
    if not hold.any():
        raise PattersonError("the network's grid holds none of the observed reflections")
    hkl = data.hkl[hold]
    intensity = torch.as_tensor(data.f[hold] ** 2, dtype=torch.float64)[None].to(torch.complex128)
    pat = density_from_f(intensity, hkl, cell, shape)  # (1, X, Y, Z)
    scale = pat.abs().max().clamp_min(1e-30) if input_scale is None else float(input_scale)
    x = (pat / scale).to(torch.float32)[:, None]
    device = next(solver.model.parameters()).device
    with torch.no_grad():
        pred = solver.model(x.to(device))[0, 0].to("cpu", torch.float64) * float(solver.norm.get("target", 1.0))
    return pred, hold, shape
