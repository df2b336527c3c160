"""Ordered waters in a refined model: peaks of the difference map where a water can sit.

Peptide crystals hold ordered waters (1YJP's seven residues bind seven); a model without them explains the
amplitudes less well than it could, so a right model looks less right to the verdict, and an unmodelled water
draws the model's own atoms into its density. After the model's restrained refinement, :func:`find_waters` takes
the peaks of the difference map — coefficients (F_work − k|F_calc|)·exp(iφ_calc) on the work reflections — that

1. rise ``min_sigma`` r.m.s. above the map's mean (and at least ``min_model_rms`` r.m.s. of the model's own map),
2. lie within hydrogen-bond reach (:data:`CONTACT_A`) of an N or O of the model or any of its images,
3. come no closer than ``CONTACT_A[0]`` to any other atom, image or water taken before (highest first);

at most one per ``atoms_per_water`` model atoms. The model and its waters are then refined together
(:func:`~patterson.phasing.peptide.refined_model`). Only the work reflections are read.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass

import numpy as np
import torch

from patterson.cells import Cell
from patterson.errors import PattersonError
from patterson.evaluation.peaks import find_peaks, nearest_distance
from patterson.maps import density_from_f
from patterson.phasing.placement import images
from patterson.physics import grid_shape
from patterson.symmetry import SpaceGroup
from patterson.symmetry import images as symmetry_images

log = logging.getLogger(__name__)

CONTACT_A = (2.5, 3.4)  # Å: a water's hydrogen bond to an N or O; nothing closer


@dataclass(frozen=True, kw_only=True)
class WaterOptions:
    """How :func:`find_waters` picks waters.

    Attributes
    ----------
    min_sigma : the least height of a difference-map peak, in r.m.s. of the map above its mean.
    min_model_rms : and in r.m.s. of the model's own map (a floor where the difference map is flat: a model that
        explains the data leaves only noise there).
    atoms_per_water : at most one water per this many model atoms (about one per residue).
    cycles : rounds of picking and refining (:func:`~patterson.phasing.peptide.refined_model`): each round looks
        in the difference map of the model with the waters of the rounds before, refined (it stops early when a
        round finds none).
    """

    min_sigma: float = 3.0
    min_model_rms: float = 1.0
    atoms_per_water: int = 8
    cycles: int = 1

    def __post_init__(self) -> None:
        if self.min_sigma <= 0 or self.min_model_rms < 0 or self.atoms_per_water < 1 or self.cycles < 1:
            raise PattersonError("min_sigma must be positive, min_model_rms not negative, atoms_per_water and "
                                 "cycles at least 1")  # fmt: skip


def difference_maps(hkl: np.ndarray, f: np.ndarray, f_calc: np.ndarray, work: np.ndarray,
                    cell: Cell) -> tuple[np.ndarray, np.ndarray]:  # fmt: skip
    """The difference map (X, Y, Z) of a model on the work reflections (M,) bool — (F − k|F_calc|)·exp(iφ_calc),
    k the least-squares scale of |F_calc| to F on them, every other reflection left out — and the model's own map
    k·F_calc on the same reflections."""
    amp = np.abs(f_calc)
    k = float((f[work] * amp[work]).sum() / max((amp[work] ** 2).sum(), 1e-30))
    phase = np.exp(1j * np.angle(f_calc))
    coef = np.stack([np.where(work, (f - k * amp) * phase, 0.0), np.where(work, k * f_calc, 0.0)])  # (2, M)
    shape = grid_shape(cell, float(cell.d_spacing(hkl[work]).min()))
    diff, model = density_from_f(torch.as_tensor(coef), hkl, cell, shape).numpy()
    return diff, model


def find_waters(frac: np.ndarray, elements: np.ndarray, data: tuple, f_calc: np.ndarray,
                options: WaterOptions) -> np.ndarray:  # fmt: skip
    """(W, 3) fractional positions of waters for a refined model (frac (N, 3) of ``elements`` (N,), structure
    factors f_calc (M,) with its images) against ``data`` = (hkl, f, cell, group, work); see the module's rules."""
    hkl, f, cell, group, work = data
    work = np.ones(len(hkl), dtype=bool) if work is None else np.asarray(work, dtype=bool)
    rho, model_rho = difference_maps(hkl, f, f_calc, work, cell)
    peaks = find_peaks(rho, cell, threshold=0.0, min_separation=1.0)[0]
    floor = max(rho.mean() + options.min_sigma * rho.std(), options.min_model_rms * model_rho.std())
    tall = peaks.frac[peaks.height >= floor]
    model = _images(frac, group)  # (K·N, 3)
    polar = np.tile(np.isin(elements, ("N", "O")), len(group.rot))
    near = nearest_distance(tall, model, cell)  # (P,) to any atom or image
    bond = nearest_distance(tall, model[polar], cell) if polar.any() else np.full(len(tall), np.inf)
    fits = (near >= CONTACT_A[0]) & (bond <= CONTACT_A[1]) & np.array([_alone(p, group, cell) for p in tall], bool)
    most = math.ceil(len(frac) / options.atoms_per_water)
    out: list[np.ndarray] = []
    for p in tall[fits]:  # highest first; none near a water taken before (or its images)
        if len(out) == most:
            break
        if not out or nearest_distance(p[None], _images(np.array(out), group), cell)[0] >= CONTACT_A[0]:
            out.append(p)
    log.info("waters: %d of %d difference peaks above %.1f r.m.s. (at most %d)", len(out), len(tall),
             options.min_sigma, most)  # fmt: skip
    return np.array(out).reshape(-1, 3)


def _images(frac: np.ndarray, group: SpaceGroup) -> np.ndarray:
    """(K·W, 3) the images of points frac (W, 3)."""
    return images(torch.as_tensor(frac)[None], group)[0].numpy()


def _alone(p: np.ndarray, group: SpaceGroup, cell: Cell) -> bool:
    """Whether a point (3,) is at least ``CONTACT_A[0]`` from its own images (not on or near a special position)."""
    identity = np.all(np.isclose(group.rot, np.eye(3)), axis=(1, 2)) & np.all(np.isclose(group.tran % 1.0, 0.0), axis=1)
    mates = symmetry_images(group, p)[~identity]  # (K − 1, 3)
    return not len(mates) or bool(nearest_distance(p[None], mates, cell)[0] >= CONTACT_A[0])
