"""Disordered sites: a second, minor component where the Fo − Fc map of a solved model shows one.

The minor component of a disordered site lies 0.6–1.15 Å from the atom it replaces and keeps one of its bonds; an
atom of its own (a minor group's atom with no major partner) lies a bond from the model. Each candidate shares its
site's occupancy with its partner (u and 1 − u, :class:`~patterson.solving.atoms.Shares`), refined with x, y, z and B;
the components are kept where R1 on the work set falls (docs/solving.md, "Atoms").
"""

from __future__ import annotations

import dataclasses
import logging

import numpy as np
import torch

from patterson.cells import NEIGHBOUR_OFFSETS, Cell, frac_distances
from patterson.evaluation.peaks import find_peaks
from patterson.solving.atoms import (
    B_LIMITS,
    B_START,
    AtomModel,
    Shares,
    _expand,
    _map_at,
    _pair_distances,
    _refine_once,
    phased_map,
    r_factors,
)
from patterson.solving.hydrogens import place_hydrogens
from patterson.solving.symmetry import unique_peaks
from patterson.symmetry import SpaceGroup

log = logging.getLogger(__name__)


DISORDER_SIGMA = 5.0  # a minor component's peak in the Fo − Fc map reaches this many r.m.s. of the map
SPLIT = (0.6, 1.15)  # Å from the atom it replaces: closer is anisotropy or a shift, farther an atom of its own
BOND = (1.15, 1.8)  # Å: a minor atom of its own (taken as C) is bonded to the model this far from its nearest atom
BOND_KEPT = 0.25  # Å: a minor component keeps a bond of the atom it replaces to within this
NEIGHBOURS = 2.2  # Å: the atoms bonded to the one a minor component replaces lie closer than this
MIRROR = 0.5  # a peak with one at least this high across its atom is that atom's anisotropy, not a second site
MINOR_OCC = (0.05, 0.95)  # the refined occupancy of a minor component; below 0.08 it is dropped
DISORDER_GAIN = 0.015  # the minor components are kept where R1 (work) falls by more than this fraction of itself
# (thpp's C7b, occupancy 0.12: 0.1115 → 0.1097 with riding H, 1.6 %; sh2185_cu's ring: 12 %)
DISORDER_MAX_R1 = 0.20  # R1 (work) above this: what Fo − Fc shows is missing atoms (6MW0's waters), not disorder


def _across(point: np.ndarray, atom: int, model: AtomModel, cell: Cell, group: SpaceGroup) -> np.ndarray:
    """The point reflected through the nearest image of atom ``atom``: where anisotropy puts a twin peak."""
    images = _expand(torch.as_tensor(model.frac[atom : atom + 1]), group).numpy()  # (K, 3)
    near = images[frac_distances(point[None], images, cell)[0].argmin()]
    offsets = point - near - np.round(point - near) + np.array(NEIGHBOUR_OFFSETS)  # (27, 3)
    step = offsets[np.linalg.norm(offsets @ cell.orth.T, axis=1).argmin()]
    return point - 2 * step


def disorder_candidates(model: AtomModel, p1: tuple, setting: tuple, d_min: float) -> list[tuple]:
    """Peaks of the Fo − Fc map (at least :data:`DISORDER_SIGMA` r.m.s.) shaped like the minor component of a
    disordered site: :data:`SPLIT` from the atom it replaces, keeping one of that atom's bonds (:data:`BOND_KEPT`),
    farther than :data:`SPLIT` from every other atom, and with no twin peak across the atom (:data:`MIRROR`); or an
    atom of its own :data:`BOND` from the model (an H lies closer, a bond's density between two atoms). Returns
    (frac (3,), multiplicity, element, the replaced atom or −1) for each, highest first."""
    cell, group, _ = setting
    rho, coeff = phased_map(model, p1, setting, d_min, difference=True)
    rms, top = float(rho.std()), float(rho.max())
    if top < DISORDER_SIGMA * rms:
        return []
    peaks = find_peaks(rho, cell, threshold=DISORDER_SIGMA * rms / top, min_separation=0.5, max_peaks=50)[0]
    unique = unique_peaks(peaks.frac, peaks.height, cell, group, min_separation=0.5)
    if not len(unique.frac):
        return []
    to_atoms = _pair_distances(model, unique.frac, cell, group)  # (P, N)
    bonds = _pair_distances(model, model.frac, cell, group)  # (N, N)
    out = []
    for point, mult, d in zip(unique.frac, unique.multiplicity, to_atoms, strict=True):
        order = np.argsort(d)
        atom, second = order[0], d[order[1]] if len(d) > 1 else np.inf
        if BOND[0] <= d[atom] <= BOND[1]:
            out.append((point, mult, "C", -1))
        elif SPLIT[0] <= d[atom] < SPLIT[1] and second >= SPLIT[1]:
            neighbours = np.flatnonzero((bonds[atom] > 0.5) & (bonds[atom] < NEIGHBOURS))
            kept = (np.abs(d[neighbours] - bonds[atom, neighbours]) <= BOND_KEPT).any()
            here, there = _map_at(coeff, p1[1], np.stack([point, _across(point, atom, model, cell, group)]))
            if kept and there < MIRROR * here:
                out.append((point, mult, str(model.elements[atom]), int(atom)))
    return out[: max(2, len(model) // 4)]


def _with_minor(model: AtomModel, candidates: list[tuple], k: int) -> tuple[AtomModel, Shares]:
    """The model with the candidates appended as minor components (part 2; the atoms they replace part 1), and
    the occupancy each pair shares: u on the minor atom, 1 − u on its partner (start 0.25)."""
    n, g = len(model), len(candidates)
    part = np.zeros(n + g, dtype=int) if model.part is None else np.concatenate([model.part, np.zeros(g, dtype=int)])
    base, weight = np.ones(n + g), np.zeros((n + g, g))
    for i, (_, _, _, partner) in enumerate(candidates):
        base[n + i], weight[n + i, i], part[n + i] = 0.0, 1.0, 2
        if partner >= 0:
            weight[partner, i], part[partner] = -1.0, 1
    b_minor = [model.b_iso[c[3]] if c[3] >= 0 else B_START for c in candidates]
    trial = dataclasses.replace(
        model, frac=np.concatenate([model.frac, np.array([c[0] for c in candidates])]),
        elements=np.concatenate([model.elements, np.array([c[2] for c in candidates])]),
        b_iso=np.concatenate([model.b_iso, b_minor]),
        occ=np.concatenate([model.occ, np.array([c[1] for c in candidates], dtype=np.float64) / k]), part=part,
    )  # fmt: skip
    return trial, Shares(base, weight, np.full(g, 0.25), MINOR_OCC)


def add_disorder(model: AtomModel, data: tuple, p1: tuple, setting: tuple, d_min: float) -> AtomModel:
    """Minor components of disordered sites (:func:`disorder_candidates`), refined with their occupancies
    (coordinates, B and the occupancy each pair shares) and kept where R1 on the work set falls by more than
    :data:`DISORDER_GAIN` of itself; components refined below 0.08 or to the B limit are dropped. ``data``, ``p1``,
    ``setting`` as for :func:`complete_model`."""
    candidates = disorder_candidates(model, p1, setting, d_min)
    if not candidates:
        return model
    f_obs, sigma, hkl, free = data
    trial, shares = _with_minor(model, candidates, len(setting[1].rot))
    frac, b_iso, u = _refine_once(trial, f_obs, hkl, ~free, setting, 40, shares)
    n = len(model)
    kept = (u >= 0.08) & (b_iso[n:] < B_LIMITS[1] * 0.99)  # (G,)
    if not kept.any():
        return model
    factor = shares.base + shares.weight[:, kept] @ u[kept]  # dropped pairs: the partner whole again
    trial = dataclasses.replace(trial, frac=frac, b_iso=b_iso, occ=trial.occ * factor, cycles=trial.cycles + 40)
    part = np.where((trial.part == 1) & (np.abs(factor - 1.0) < 1e-9), 0, trial.part)  # partners of dropped pairs
    trial = dataclasses.replace(trial, part=part).subset(np.concatenate([np.ones(n, dtype=bool), kept]))
    if model.hydrogens is not None:  # the subset dropped them: their parents moved and may have split
        trial = place_hydrogens(trial, data, p1, setting, d_min)
    else:
        trial = r_factors(trial, f_obs, sigma, hkl, free, setting)
    log.info("%d minor components tried, %d kept: R1 (work) %.4f → %.4f", len(candidates), int(kept.sum()),
             model.r1_work, trial.r1_work)  # fmt: skip
    return trial if trial.r1_work < model.r1_work * (1 - DISORDER_GAIN) else model


