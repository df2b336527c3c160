"""Riding hydrogen atoms on carbon, placed from the refined heavy atoms as SHELXL's HFIX places them.

A carbon's bonded neighbours (covalent radii + :data:`BOND_TOLERANCE`, symmetry images included, the components of
a disordered site kept apart) say how many hydrogens it carries and where:

- three neighbours, pyramidal: one H opposite them (AFIX 13); planar: none;
- two neighbours: sp2 (bonds shorter than :data:`SP2_BOND` on average, or an angle wider than :data:`SP2_ANGLE`)
  one H on the outer bisector (AFIX 43); sp3 two H in the plane normal to the C–C–C plane, H–C–H 109.5° (AFIX 23);
  linear: none;
- one neighbour by a single bond: a methyl, its three staggered H turned to the highest sum of the Fo − Fc map
  (AFIX 137; without a map: no methyl H).

C–H lengths and U(H) / U(C) are SHELXL's (X-ray data at about 100 K). Hydrogens on N and O are not placed: their
number depends on protonation the geometry does not show. A structure's hydrogens scatter about one electron each
and are rarely seen as peaks, yet leaving them out leaves their density in the Fo − Fc map beside every carbon, where
it hides weaker features (the minor component of a disordered group); placed, they lower R1 by about a quarter on the
shared small molecules (docs/solving.md).
"""

from __future__ import annotations

import dataclasses
import logging
import math
from collections.abc import Callable

import gemmi
import numpy as np
import torch

from patterson.cells import Cell
from patterson.solving.atoms import AtomModel, Riding, _expand, _map_at, map_coefficients, r_factors
from patterson.symmetry import SpaceGroup

log = logging.getLogger(__name__)

BOND_TOLERANCE = 0.45  # Å beyond the sum of covalent radii: still bonded
C_H = {43: 0.95, 13: 1.00, 23: 0.99, 137: 0.98}  # Å: SHELXL's C–H for each AFIX code (X-ray data, about 100 K)
U_RATIO = {43: 1.2, 13: 1.2, 23: 1.2, 137: 1.5}  # U(H) / U(parent)
PLANAR = 0.4  # |Σ unit bond vectors| of a C with three neighbours below this: planar, no H (tetrahedral: 1.0)
SP2_BOND = 1.44  # Å: two bonds shorter than this on average: an sp2 C (aromatic 1.39, C=C 1.33; C–C 1.53, C–O 1.43)
SP2_ANGLE = 117.0  # degrees: or a bond angle wider than this (sp3: 104–114)
LINEAR = 150.0  # degrees: a C whose two bonds are wider than this apart carries no H (alkyne, nitrile)
SINGLE = 1.42  # Å: a terminal C bonded longer than this is a methyl (shorter: C=O, C≡N seen end on)
TORSION_STEP = 5.0  # degrees: the methyl rotation search
TETRAHEDRAL = math.radians(109.47)
HYDROGEN_GAIN = 0.002  # riding hydrogens are kept where R1 (work) falls by more than this


def _neighbours(model: AtomModel, cell: Cell, group: SpaceGroup) -> list[np.ndarray]:
    """For each atom, the Cartesian bond vectors (B, 3) Å to its bonded neighbours (images included; an atom of
    PART 1 never bonds one of PART 2)."""
    k, n = len(group.rot), len(model)
    images = _expand(torch.as_tensor(model.frac), group).numpy().reshape(k, n, 3)
    radius = np.array([gemmi.Element(str(e)).covalent_r for e in model.elements])
    part = model.part if model.part is not None else np.zeros(n, dtype=int)
    out = []
    for i in range(n):
        diff = images - model.frac[i]
        vec = cell.to_cartesian((diff - np.round(diff)).reshape(-1, 3)).reshape(k, n, 3)
        d = np.linalg.norm(vec, axis=2)  # (K, N)
        apart = (part[i] != 0) & (part != 0) & (part != part[i])  # (N,)
        bonded = (d > 0.5) & (d < radius[i] + radius + BOND_TOLERANCE) & ~apart[None]
        out.append(vec[bonded])
    return out


def _unit(v: np.ndarray) -> np.ndarray:
    return v / np.linalg.norm(v, axis=-1, keepdims=True)


def _perpendicular(axis: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Two unit vectors perpendicular to the unit ``axis`` and to each other."""
    helper = np.eye(3)[int(np.argmin(np.abs(axis)))]
    p = _unit(np.cross(axis, helper))
    return p, np.cross(axis, p)


def _methyl(x: np.ndarray, bond: np.ndarray, density, cell: Cell) -> np.ndarray:
    """(3, 3) Cartesian H of a methyl on C at x bonded along ``bond``, turned to the highest sum of ``density``."""
    away = -_unit(bond)
    p, q = _perpendicular(away)
    tau = np.radians(np.arange(0.0, 120.0, TORSION_STEP))[:, None] + np.radians([0.0, 120.0, 240.0])[None]  # (T, 3)
    around = np.cos(tau)[..., None] * p + np.sin(tau)[..., None] * q  # (T, 3, 3)
    h = x + C_H[137] * (math.cos(math.pi - TETRAHEDRAL) * away + math.sin(math.pi - TETRAHEDRAL) * around)
    score = density(cell.to_fractional(h.reshape(-1, 3))).reshape(len(tau), 3).sum(1)
    return h[int(np.argmax(score))]


def _carbon_h(x: np.ndarray, bonds: np.ndarray, density, cell: Cell) -> tuple[np.ndarray, int]:
    """The Cartesian H (n, 3) of a carbon at x with bond vectors (B, 3), and their AFIX code (0 for none)."""
    u = _unit(bonds) if len(bonds) else bonds
    if len(bonds) == 3:
        s = -u.sum(0)
        return (x + C_H[13] * _unit(s)[None], 13) if np.linalg.norm(s) > PLANAR else (np.zeros((0, 3)), 0)
    if len(bonds) == 2:
        angle = math.degrees(math.acos(float(np.clip(u[0] @ u[1], -1.0, 1.0))))
        if angle > LINEAR:
            return np.zeros((0, 3)), 0
        outer = _unit(-(u[0] + u[1]))
        if np.linalg.norm(bonds, axis=1).mean() < SP2_BOND or angle > SP2_ANGLE:
            return x + C_H[43] * outer[None], 43
        normal = _unit(np.cross(u[0], u[1]))
        half = TETRAHEDRAL / 2
        pair = [math.cos(half) * outer + s * math.sin(half) * normal for s in (1.0, -1.0)]
        return x + C_H[23] * np.array(pair), 23
    if len(bonds) == 1 and density is not None and np.linalg.norm(bonds[0]) > SINGLE:
        return _methyl(x, bonds[0], density, cell), 137
    return np.zeros((0, 3)), 0


def riding_hydrogens(model: AtomModel, cell: Cell, group: SpaceGroup,
                     density: Callable[[np.ndarray], np.ndarray] | None = None) -> Riding:  # fmt: skip
    """The hydrogens of the model's carbons (see the module's rules); ``density`` maps fractional points (P, 3) to
    values (P,) of a difference map, for the methyl rotations (None: no methyl H)."""
    bonds = _neighbours(model, cell, group)
    part = model.part if model.part is not None else np.zeros(len(model), dtype=int)
    frac, parent, afix = [], [], []
    for i in np.flatnonzero(model.elements == "C"):
        x = cell.to_cartesian(model.frac[i])
        h, code = _carbon_h(x, bonds[i], density, cell)
        frac += list(cell.to_fractional(h) % 1.0)
        parent += [i] * len(h)
        afix += [code] * len(h)
    parent = np.array(parent, dtype=int)
    ratio = np.array([U_RATIO[c] for c in afix])
    return Riding(np.array(frac).reshape(-1, 3), parent, np.array(afix, dtype=int), ratio * model.b_iso[parent],
                  model.occ[parent], part[parent])  # fmt: skip


def place_hydrogens(model: AtomModel, data: tuple, p1: tuple, setting: tuple, d_min: float) -> AtomModel:
    """The model (its own hydrogens left out) with riding hydrogens, the methyls turned by its Fo − Fc map, and its
    R factors again; ``data``, ``p1``, ``setting`` as for :func:`patterson.solving.atoms.complete_model`."""
    cell, group, _ = setting
    heavy = dataclasses.replace(model, hydrogens=None)
    coeff = map_coefficients(heavy, p1, setting, difference=True)  # read at the methyls' H only: no grid map
    riding = riding_hydrogens(heavy, cell, group, lambda frac: _map_at(coeff, p1[1], frac))
    f_obs, sigma, hkl, free = data
    return r_factors(dataclasses.replace(heavy, hydrogens=riding), f_obs, sigma, hkl, free, setting)


def add_hydrogens(model: AtomModel, data: tuple, p1: tuple, setting: tuple, d_min: float) -> AtomModel:
    """:func:`place_hydrogens`, kept where R1 on the work set falls by more than :data:`HYDROGEN_GAIN`."""
    trial = place_hydrogens(model, data, p1, setting, d_min)
    log.info("%d riding hydrogens: R1 (work) %.4f → %.4f", len(trial.hydrogens), model.r1_work, trial.r1_work)
    return trial if len(trial.hydrogens) and trial.r1_work < model.r1_work - HYDROGEN_GAIN else model
