"""Cells: unit-cell geometry of any a, b, c, α, β, γ, and placing atoms in cells.

Conventions follow the PDB and gemmi: the a axis along x, b in the xy plane, so that
``xyz = orth @ frac`` and ``frac = frac_matrix @ xyz``. Reciprocal-space quantities use s = 1/d.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import gemmi
import numpy as np
import torch

from patterson.errors import PattersonError
from patterson.structures import Atoms


@dataclass(frozen=True)
class Cell:
    """A unit cell: lengths in Å, angles in degrees."""

    a: float
    b: float
    c: float
    alpha: float = 90.0
    beta: float = 90.0
    gamma: float = 90.0

    def __post_init__(self) -> None:
        if min(self.a, self.b, self.c) <= 0:
            raise PattersonError(f"cell lengths must be positive, got {self.a}, {self.b}, {self.c}")
        if not all(0 < x < 180 for x in (self.alpha, self.beta, self.gamma)):
            raise PattersonError("cell angles must lie between 0 and 180 degrees")
        ca, cb, cg = (math.cos(math.radians(x)) for x in (self.alpha, self.beta, self.gamma))
        if 1 - ca * ca - cb * cb - cg * cg + 2 * ca * cb * cg <= 0:
            raise PattersonError(f"cell angles {self.alpha}, {self.beta}, {self.gamma} do not form a cell")

    @classmethod
    def cubic(cls, a: float) -> Cell:
        """A cubic cell of edge ``a`` Å."""
        return cls(a, a, a)

    @classmethod
    def of(cls, value) -> Cell:
        """A Cell from a Cell, a gemmi.UnitCell, a number (cubic) or a sequence of 3 or 6 numbers."""
        if isinstance(value, Cell):
            return value
        if isinstance(value, gemmi.UnitCell):
            return cls(*value.parameters)
        if isinstance(value, int | float):
            return cls.cubic(float(value))
        values = [float(v) for v in value]
        if len(values) == 3:
            return cls(*values)
        if len(values) == 6:
            return cls(*values)
        raise PattersonError(f"a cell needs 3 or 6 numbers, got {len(values)}")

    @property
    def parameters(self) -> tuple[float, float, float, float, float, float]:
        return (self.a, self.b, self.c, self.alpha, self.beta, self.gamma)

    def to_gemmi(self) -> gemmi.UnitCell:
        return gemmi.UnitCell(*self.parameters)

    @property
    def is_orthogonal(self) -> bool:
        return all(abs(x - 90.0) < 1e-9 for x in (self.alpha, self.beta, self.gamma))

    @property
    def volume(self) -> float:
        """Cell volume in Å³."""
        return float(abs(np.linalg.det(self.orth)))

    @property
    def orth(self) -> np.ndarray:
        """(3, 3) orthogonalisation matrix: ``xyz = orth @ frac`` (columns are the cell vectors)."""
        ca, cb, cg = (math.cos(math.radians(x)) for x in (self.alpha, self.beta, self.gamma))
        sg = math.sin(math.radians(self.gamma))
        cy = (ca - cb * cg) / sg
        cz = math.sqrt(max(1.0 - cb * cb - cy * cy, 0.0))
        return np.array([[self.a, self.b * cg, self.c * cb], [0.0, self.b * sg, self.c * cy], [0.0, 0.0, self.c * cz]])

    @property
    def frac(self) -> np.ndarray:
        """(3, 3) fractionalisation matrix: ``frac = frac @ xyz``."""
        return np.linalg.inv(self.orth)

    @property
    def reciprocal_metric(self) -> np.ndarray:
        """(3, 3) reciprocal metric tensor G*: 1/d² = hᵀ G* h."""
        f = self.frac
        return f @ f.T

    @property
    def widths(self) -> np.ndarray:
        """(3,) distances between opposite faces of the cell in Å (the shortest periodic repeat per axis)."""
        return 1.0 / np.linalg.norm(self.frac, axis=1)

    def to_cartesian(self, frac: torch.Tensor | np.ndarray) -> torch.Tensor | np.ndarray:
        """Fractional (..., 3) → Cartesian Å (..., 3)."""
        return _apply(self.orth, frac)

    def to_fractional(self, xyz: torch.Tensor | np.ndarray) -> torch.Tensor | np.ndarray:
        """Cartesian Å (..., 3) → fractional (..., 3)."""
        return _apply(self.frac, xyz)

    def inv_d2(self, hkl: torch.Tensor | np.ndarray) -> torch.Tensor | np.ndarray:
        """1/d² of Miller indices (..., 3) → (...)."""
        if isinstance(hkl, torch.Tensor):
            g = torch.as_tensor(self.reciprocal_metric, dtype=torch.float64, device=hkl.device)
            h = hkl.to(torch.float64)
            return torch.einsum("...i,ij,...j->...", h, g, h)
        h = np.asarray(hkl, dtype=np.float64)
        return np.einsum("...i,ij,...j->...", h, self.reciprocal_metric, h)

    def d_spacing(self, hkl: torch.Tensor | np.ndarray) -> torch.Tensor | np.ndarray:
        """d-spacing in Å of Miller indices (..., 3); infinite for (0, 0, 0)."""
        s2 = self.inv_d2(hkl)
        if isinstance(s2, torch.Tensor):
            return 1.0 / torch.sqrt(s2)
        with np.errstate(divide="ignore"):
            return 1.0 / np.sqrt(s2)


def _apply(matrix: np.ndarray, v):
    if isinstance(v, torch.Tensor):
        m = torch.as_tensor(matrix, dtype=v.dtype, device=v.device)
        return v @ m.T
    return np.asarray(v) @ matrix.T


# --- placing atoms in cells ----------------------------------------------------------------------------------


NEIGHBOUR_OFFSETS = np.array([(i, j, k) for i in (-1, 0, 1) for j in (-1, 0, 1) for k in (-1, 0, 1)])  # (27, 3)


def mass_centre(atoms: Atoms) -> np.ndarray:
    """(3,) mass-weighted centre of the atoms in Å (masses from gemmi)."""
    masses = np.array([gemmi.Element(e).weight for e in atoms.elements]) * atoms.occ
    if masses.sum() <= 0:
        return atoms.xyz.mean(axis=0)
    return (atoms.xyz * masses[:, None]).sum(axis=0) / masses.sum()


def min_image_distance(atoms_xyz: np.ndarray, cell: Cell, min_separation: float = 1e-6) -> float:
    """Shortest distance in Å between an atom and a periodic image (of itself or another atom) in other cells.

    Only pairs in different cells count: the atoms themselves are one molecule. Pairs closer than
    ``min_separation`` within one image are ignored (an atom and itself).
    """
    frac = atoms_xyz @ cell.frac.T  # (N, 3)
    best = math.inf
    for off in NEIGHBOUR_OFFSETS[np.any(NEIGHBOUR_OFFSETS != 0, axis=1)]:
        shifted = (frac + off) @ cell.orth.T  # (N, 3) image in a neighbouring cell
        d = np.linalg.norm(atoms_xyz[:, None, :] - shifted[None, :, :], axis=-1)
        d = d[d > min_separation]
        if d.size:
            best = min(best, float(d.min()))
    return best


def centre_in_cell(atoms: Atoms, cell: Cell, min_distance: float = 0.0) -> Atoms:
    """Move the atoms so that their mass-weighted centre lies at the centre of ``cell``; the result has the cell.

    Raises PattersonError when the molecule does not fit: some atom comes closer than ``min_distance`` Å
    (or, with 0, overlaps within 0.5 Å) to a periodic image of the molecule.
    """
    centre = cell.to_cartesian(np.array([0.5, 0.5, 0.5]))
    xyz = atoms.xyz - mass_centre(atoms) + centre
    limit = max(min_distance, 0.5)
    closest = min_image_distance(xyz, cell)
    if closest < limit:
        raise PattersonError(
            f"cell {cell.a:g} {cell.b:g} {cell.c:g} {cell.alpha:g} {cell.beta:g} {cell.gamma:g} is too small "
            f"for the molecule: atoms come within {closest:.2f} Å of a periodic image (need {limit:g} Å)"
        )
    return atoms.replace(xyz=xyz, cell=cell.parameters, spacegroup="P 1")


def box_cell(atoms: Atoms, margin: float = 5.0) -> Cell:
    """An orthogonal cell around the molecule's extent with ``margin`` Å on every side."""
    extent = atoms.xyz.max(axis=0) - atoms.xyz.min(axis=0)
    return Cell(*(float(math.ceil(e + 2 * margin)) for e in extent))


def expand_to_p1(atoms: Atoms) -> Atoms:
    """Apply the space group's operators to give all atoms of the unit cell (a P1 description)."""
    if atoms.cell is None or atoms.spacegroup in (None, "P 1", "P1"):
        return atoms
    sg = gemmi.find_spacegroup_by_name(atoms.spacegroup)
    if sg is None:
        raise PattersonError(f"unknown space group {atoms.spacegroup!r}")
    cell = Cell(*atoms.cell)
    frac = cell.to_fractional(atoms.xyz)
    copies = []
    for op in sg.operations():
        rot = np.array(op.rot, dtype=np.float64) / op.DEN
        tran = np.array(op.tran, dtype=np.float64) / op.DEN
        copies.append(frac @ rot.T + tran)
    n = len(copies)
    return atoms.replace(
        xyz=cell.to_cartesian(np.concatenate(copies)),
        elements=np.tile(atoms.elements, n),
        b_iso=np.tile(atoms.b_iso, n),
        occ=np.tile(atoms.occ, n),
        residues=None if atoms.residues is None else np.tile(atoms.residues, n),
        spacegroup="P 1",
    )
