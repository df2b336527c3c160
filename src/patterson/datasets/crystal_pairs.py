"""Density-modification pairs from crystals of many cells: crops of each crystal's own periodic maps.

A peptide-crystal dataset holds one cell per example, so its maps cannot be stacked whole. The learned real-space
step is convolutional, so it is trained on equal crops of each crystal's maps, which repeat periodically: every
example's maps are made on a grid of its own cell with the spacing the phasing uses, and a random ``crop``-voxel
cube (wrapped across the cell's edges) is cut from the input and the target alike.

The input is what the phasing loop shows the step after a molecular-replacement start: the measured amplitudes of
the shown reflections with the phases of

- a partial model (a random share of the true atoms, each moved by a random error, one B for all), as a placed
  fragment gives them, or
- the true phases with errors drawn uniformly in ±a (a per example), as in :class:`PhaseErrorMaps`.

The target is the exact density of the whole crystal (its stored ``f_calc``). Both are divided by the input
map's r.m.s. over the whole cell (the network sees a whole map in the loop).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from patterson.cells import Cell
from patterson.datasets.store import StoredDataset
from patterson.errors import PattersonError
from patterson.maps import density_from_f
from patterson.physics import AtomBatch, grid_shape, miller_indices, structure_factors


@dataclass(frozen=True)
class CropCorruption:
    """How the inputs of :class:`CrystalPhaseErrorMaps` are corrupted.

    Attributes
    ----------
    model_share : share of the examples whose phases are a partial model's (the rest: uniform phase errors).
    keep : range of the share of true atoms a partial model keeps.
    shift_a : range of the r.m.s. coordinate error (Å) of a partial model's atoms.
    b_model : range of the partial model's B (Å²).
    error_deg : range of a for the uniform phase errors in ±a.
    floating : the most reflections left out of the input besides the unmeasured (the free set floats).
    """

    model_share: float = 0.7
    keep: tuple[float, float] = (0.3, 1.0)
    shift_a: tuple[float, float] = (0.0, 1.2)
    b_model: tuple[float, float] = (10.0, 30.0)
    error_deg: tuple[float, float] = (0.0, 120.0)
    floating: float = 0.15


class CrystalPhaseErrorMaps:
    """Training pairs for the learned real-space step from a stored dataset of crystals of many cells (a
    ``peptide-crystal`` preset): (corrupted density, exact density) crops of ``crop``³ voxels, one crystal each.

    Parameters
    ----------
    path, split : the stored dataset (it must store the reflections: ``f_obs``, ``measured``, ``f_calc``).
    crop : voxels along each edge of a crop.
    spacing : grid spacing in Å (at most d_min / 2 of each crystal), the voxel the phasing loop uses.
    corruption : :class:`CropCorruption`.
    batch_size, seed : crops per batch; the seed of :meth:`fixed`'s default.
    """

    def __init__(self, path: str | Path, split: str = "train", crop: int = 24, spacing: float = 0.5,
                 corruption: CropCorruption | None = None, batch_size: int = 8, seed: int = 0) -> None:  # fmt: skip
        stored = StoredDataset(path, split, normalise=False)
        if not stored.has_reflections or stored.config.kind != "peptide":
            raise PattersonError(f"{path}: crystal pairs need a peptide-crystal dataset that stores its reflections")
        self.path, self.split, self.config, self.entries = Path(path), split, stored.config, stored.entries
        self.crop, self.spacing, self.seed, self.batch_size = int(crop), float(spacing), seed, batch_size
        self.corruption = corruption or CropCorruption()
        g = stored._group()
        self.xyz, self.z = g["xyz"][:].astype(np.float64), g["z"][:].astype(np.int64)  # (N, A, 3), (N, A)
        self.n_atoms, self.cells = g["n_atoms"][:], g["cell"][:].astype(np.float64)
        self.d_min, self.n_refl = g["d_min"][:].astype(np.float64), g["n_reflections"][:]
        self._stored = stored  # its reflections are read per draw, through a handle of the reading process
        self.scale = {"input": 1.0, "target": 1.0}

    def __len__(self) -> int:
        return len(self.z)

    def example(self, index: int, rng: np.random.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """One crystal's corrupted and exact density crops (crop, crop, crop), in units of the input's r.m.s."""
        cell, d = Cell(*self.cells[index]), float(self.d_min[index])
        m, g = int(self.n_refl[index]), self._stored._group()
        f_obs = torch.as_tensor(g["f_obs"][index][:m].astype(np.float64))
        measured = torch.as_tensor(g["measured"][index][:m].astype(bool))
        f_calc = torch.as_tensor(g["f_calc"][index][:m].astype(np.complex128))
        hkl = miller_indices(cell, d)
        shape = grid_shape(cell, d, max(2.0, d / self.spacing))
        c = self.corruption
        shown = measured & torch.as_tensor(rng.random(m) >= rng.uniform(0, c.floating))
        if rng.random() < c.model_share:
            phi = torch.angle(self._partial_model(index, cell, hkl, rng))
        else:
            a = np.deg2rad(rng.uniform(*c.error_deg))
            phi = torch.angle(f_calc) + torch.as_tensor(a * rng.uniform(-1, 1, size=m))
        rho = density_from_f(torch.polar(f_obs * shown, phi)[None], hkl, cell, shape)[0]  # (X, Y, Z)
        target = density_from_f(f_calc[None], hkl, cell, shape)[0]
        sigma = rho.std().clamp_min(1e-12)
        at = [np.arange(o, o + self.crop) % n for o, n in zip(rng.integers(0, shape, size=3), shape, strict=True)]
        cut = np.ix_(*at)
        return rho[cut] / sigma, target[cut] / sigma

    def _partial_model(self, index: int, cell: Cell, hkl: np.ndarray, rng: np.random.Generator) -> torch.Tensor:
        """(M,) structure factors of a random share of the crystal's atoms, each moved by a random error."""
        c, n = self.corruption, int(self.n_atoms[index])
        keep = rng.random(n) < rng.uniform(*c.keep)
        keep[rng.integers(n)] = True  # at least one atom
        xyz = self.xyz[index, :n][keep]
        xyz = xyz + rng.normal(0.0, rng.uniform(*c.shift_a) / np.sqrt(3), size=xyz.shape)
        k = len(xyz)
        z = torch.as_tensor(self.z[index, :n][keep])[None]
        atoms = AtomBatch(torch.as_tensor(cell.to_fractional(xyz))[None], z,
                          torch.full((1, k), rng.uniform(*c.b_model), dtype=torch.float64),
                          torch.ones((1, k), dtype=torch.float64), cell)  # fmt: skip
        with torch.no_grad():
            return structure_factors(atoms, hkl)[0]

    def batch(self, rng: np.random.Generator) -> dict:
        """One batch of ``batch_size`` crops: ``input``, ``target`` (B, 1, C, C, C) float32 and ``index`` (B,)."""
        idx = rng.integers(len(self), size=self.batch_size)
        pairs = [self.example(int(i), rng) for i in idx]
        return {"input": torch.stack([p[0] for p in pairs])[:, None].to(torch.float32),
                "target": torch.stack([p[1] for p in pairs])[:, None].to(torch.float32),
                "index": torch.as_tensor(idx)}  # fmt: skip

    def fixed(self, n: int, seed: int = 0) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """``n`` pairs (1, C, C, C) drawn once with ``seed``: a validation set the same across epochs and runs."""
        rng = np.random.default_rng([seed, 1])
        pairs = [self.example(int(i), rng) for i in rng.integers(len(self), size=n)]
        return [(x[None].to(torch.float32), y[None].to(torch.float32)) for x, y in pairs]

    def info(self) -> dict[str, Any]:
        """The dataset's config with the crop, the spacing and the corruption (plain dict)."""
        return dataclasses.asdict(self.config) | {
            "crops": {"crop": self.crop, "spacing": self.spacing, "corruption": dataclasses.asdict(self.corruption)}
        }
