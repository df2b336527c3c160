"""A trained network applied to observed amplitudes in any cell (the network itself: :class:`TrainedNetwork`)."""

from __future__ import annotations

import math

import numpy as np
import torch

from patterson.cells import Cell
from patterson.errors import PattersonError
from patterson.maps import patterson_from_f
from patterson.networks import TrainedNetwork
from patterson.solving.data import ObservedData

TRANSFERS = ("convolve", "resample")


def model_grid(cell: Cell, spacing: float) -> tuple[int, int, int]:
    """The even grid closest to ``spacing`` Å along each axis of ``cell`` (the U-Nets need even sizes).

    Not rounded up to FFT-friendly sizes: that changed the voxel size by up to 15% (13 Å and 14 Å cells got 30
    voxels, 0.43 and 0.47 Å instead of 0.5 Å) and cost the ``convolve`` transfer 0.03–0.07 in map CC (measured
    with the functions of benchmarks/cell_transfer.py); FFTs of these small grids are fast at any size.
    """
    return tuple(max(2, 2 * math.floor(x / spacing / 2 + 0.5)) for x in (cell.a, cell.b, cell.c))


def predict_density(
    network: TrainedNetwork, data: ObservedData, transfer: str = "resample", input_scale: float | None = None
) -> tuple[torch.Tensor, np.ndarray, tuple[int, int, int]]:
    """The network's density for observed amplitudes in any cell.

    ``convolve``: the Patterson map on a grid of the training spacing in the real cell (the network is fully
    convolutional with circular padding). ``resample``: the Patterson on the training grid shape, whatever the cell
    (fractional coordinates are stretched to the training cell). By default (``input_scale`` None) the input is
    scaled so its origin peak is 1 (the training constants put the largest Patterson of the training set at 1; real
    data have no absolute scale). With ``input_scale`` the Patterson is divided by it instead: amplitudes on the
    absolute scale and ``network.norm["input"]`` give exactly the training input (benchmarks/cell_transfer.py measures
    both).
    Returns (density (X, Y, Z), mask (M,) of reflections the grid holds and the model's resolution covers, grid).
    """
    if transfer not in TRANSFERS:
        raise PattersonError(f"unknown transfer {transfer!r} (choose from {', '.join(TRANSFERS)})")
    if input_scale is not None and not (math.isfinite(input_scale) and input_scale > 0):
        raise PattersonError(f"input_scale must be a positive number, got {input_scale!r}")
    cell = data.cell
    shape = model_grid(cell, network.spacing) if transfer == "convolve" else network.train_shape
    lim = np.array(shape) // 2 - 1
    hold = np.all(np.abs(data.hkl) <= lim, axis=1) & (cell.d_spacing(data.hkl) >= network.d_min * (1 - 1e-6))
    if not hold.any():
        raise PattersonError("the network's grid holds none of the observed reflections")
    hkl = data.hkl[hold]
    pat = patterson_from_f(torch.as_tensor(data.f[hold], dtype=torch.complex128)[None], hkl, cell, shape)
    scale = pat.abs().max().clamp_min(1e-30) if input_scale is None else float(input_scale)
    return network.density(pat, scale)[0], hold, shape  # (X, Y, Z)
