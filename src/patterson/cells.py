"""Cells: unit-cell geometry of any a, b, c, α, β, γ, and placing atoms in cells.

Conventions follow the PDB and gemmi: the a axis along x, b in the xy plane, so that
``xyz = orth @ frac`` and ``frac = frac_matrix @ xyz``. Reciprocal-space quantities use s = 1/d.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import cached_property

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
        if 1 - ca * ca - cb * cb - cg * cg + 2 * ca * cb * cg <= 1e-9:
            raise PattersonError(f"cell angles {self.alpha}, {self.beta}, {self.gamma} do not form a cell")

    @classmethod
    def cubic(cls, a: float) -> Cell:
        """A cubic cell of edge ``a`` Å."""
        return cls(a, a, a)

    @classmethod
    def of(cls, value) -> Cell:
        """A Cell from a Cell, a gemmi.UnitCell, a number (cubic) or a sequence of 1, 3 or 6 numbers."""
        if isinstance(value, Cell):
            return value
        if isinstance(value, gemmi.UnitCell):
            return cls(*value.parameters)
        if isinstance(value, int | float):
            return cls.cubic(float(value))
        values = [float(v) for v in value]
        if len(values) == 1:
            return cls.cubic(values[0])
        if len(values) == 3:
            return cls(*values)
        if len(values) == 6:
            return cls(*values)
        raise PattersonError(f"a cell needs 1 (cubic), 3 or 6 numbers, got {len(values)}")

    @property
    def parameters(self) -> tuple[float, float, float, float, float, float]:
        return (self.a, self.b, self.c, self.alpha, self.beta, self.gamma)

    @property
    def text(self) -> str:
        """The six parameters as a message shows them: ``9 10 11 90 100 90``."""
        return " ".join(f"{x:g}" for x in self.parameters)

    def to_gemmi(self) -> gemmi.UnitCell:
        return gemmi.UnitCell(*self.parameters)

    @property
    def is_orthogonal(self) -> bool:
        return all(abs(x - 90.0) < 1e-9 for x in (self.alpha, self.beta, self.gamma))

    @property
    def volume(self) -> float:
        """Cell volume in Å³."""
        return float(abs(np.linalg.det(self.orth)))

    @cached_property
    def orth(self) -> np.ndarray:
        """(3, 3) orthogonalisation matrix: ``xyz = orth @ frac`` (columns are the cell vectors)."""
        ca, cb, cg = (math.cos(math.radians(x)) for x in (self.alpha, self.beta, self.gamma))
        sg = math.sin(math.radians(self.gamma))
        cy = (ca - cb * cg) / sg
        cz = math.sqrt(max(1.0 - cb * cb - cy * cy, 0.0))
        return np.array([[self.a, self.b * cg, self.c * cb], [0.0, self.b * sg, self.c * cy], [0.0, 0.0, self.c * cz]])

    @cached_property
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


_WEIGHTS: dict[str, float] = {}


def _element_weights(elements: np.ndarray) -> np.ndarray:
    """(N,) atomic masses of element symbols (gemmi), cached per symbol."""
    out = np.empty(len(elements))
    for i, e in enumerate(elements):
        w = _WEIGHTS.get(e)
        if w is None:
            w = _WEIGHTS[e] = gemmi.Element(str(e)).weight
        out[i] = w
    return out


def mass_centre(atoms: Atoms) -> np.ndarray:
    """(3,) mass-weighted centre of the atoms in Å (masses from gemmi)."""
    masses = _element_weights(atoms.elements) * atoms.occ
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
    frac = cell.to_fractional(xyz)
    extent = frac.max(axis=0) - frac.min(axis=0)
    closest = min_image_distance(xyz, cell)
    if np.any(extent >= 1.0) or closest < limit:
        span = " × ".join(f"{e:.2f}" for e in extent)
        why = (f"it spans {span} cells, more than one along some axis" if np.any(extent >= 1.0)
               else f"its atoms come {closest:.2f} Å from their periodic images, closer than {limit:g} Å")  # fmt: skip
        raise PattersonError(f"the molecule does not fit in the cell {cell.text}: {why}; give a larger --cell")
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


# --- random placement, clash checks and dense packing ------------------------------------------------------------


def random_rotation(rng: np.random.Generator) -> np.ndarray:
    """(3, 3) rotation matrix drawn uniformly from SO(3) (a random unit quaternion)."""
    q = rng.normal(size=4)
    w, x, y, z = q / np.linalg.norm(q)
    return np.array(
        [
            [1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)],
            [2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)],
            [2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)],
        ]
    )


B_POLICIES = ("fixed", "deposited", "random")


def set_b_factors(
    atoms: Atoms,
    policy: str = "fixed",
    b_iso: float = 20.0,
    b_range: tuple[float, float] = (10.0, 40.0),
    rng: np.random.Generator | None = None,
) -> Atoms:
    """Apply a B-factor policy: ``fixed`` (every atom ``b_iso`` Å², the paper's 20), ``deposited`` (as read) or
    ``random`` (one B drawn uniformly from ``b_range`` for the whole fragment)."""
    if policy == "deposited":
        return atoms
    if policy == "fixed":
        return atoms.replace(b_iso=np.full(len(atoms), float(b_iso)))
    if policy == "random":
        rng = rng if rng is not None else np.random.default_rng()
        return atoms.replace(b_iso=np.full(len(atoms), float(rng.uniform(*b_range))))
    raise PattersonError(f"unknown B-factor policy {policy!r} (choose from {', '.join(B_POLICIES)})")


def place_in_cell(
    atoms: Atoms,
    cell: Cell,
    rng: np.random.Generator | None = None,
    position: str = "centre",
    rotate: bool = False,
) -> Atoms:
    """Put a molecule in ``cell``: optionally rotated about its mass-weighted centre, with that centre moved to the
    cell centre (``position='centre'``, the paper) or to a uniformly random point (``'random'``).

    Returns the moved atoms with the cell set and space group P 1; no clash check (see :func:`fits_in_cell`).
    """
    if position not in ("centre", "random"):
        raise PattersonError(f"unknown position {position!r} (choose centre or random)")
    if (rotate or position == "random") and rng is None:
        raise PattersonError("a random placement needs a random generator")
    xyz = atoms.xyz - mass_centre(atoms)  # (N, 3) about the mass centre
    if rotate:
        xyz = xyz @ random_rotation(rng).T
    target = np.array([0.5, 0.5, 0.5]) if position == "centre" else rng.random(3)
    xyz = xyz + cell.to_cartesian(target)
    return atoms.replace(xyz=xyz, cell=cell.parameters, spacegroup="P 1")


def periodic_distances(xyz_a: np.ndarray, xyz_b: np.ndarray, cell: Cell) -> np.ndarray:
    """(Na, Nb) shortest distances in Å between atoms of a and atoms of b or any periodic image of b (Cartesian
    coordinates in Å; see :func:`frac_distances`)."""
    return frac_distances(cell.to_fractional(xyz_a), cell.to_fractional(xyz_b), cell)


def frac_distances(a_frac: np.ndarray, b_frac: np.ndarray, cell: Cell) -> np.ndarray:
    """(P, Q) shortest distances in Å between fractional points a (P, 3) and b (Q, 3) over all lattice images.

    Exact for any cell shape when the cell is at least twice as wide as the distances of interest (the minimum
    image in fractional coordinates is refined over the 27 neighbouring shifts).
    """
    diff = np.asarray(a_frac, dtype=np.float64)[:, None, :] - np.asarray(b_frac, dtype=np.float64)[None, :, :]
    diff -= np.round(diff)  # (P, Q, 3)
    shifted = (diff[:, :, None, :] + NEIGHBOUR_OFFSETS[None, None]) @ cell.orth.T  # (P, Q, 27, 3) Å
    return np.sqrt((shifted**2).sum(-1).min(-1))


def fits_in_cell(xyz: np.ndarray, cell: Cell, clash_distance: float) -> bool:
    """Whether a molecule keeps at least ``clash_distance`` Å from all its periodic images.

    A quick sufficient test first: the molecule's extent along each face normal plus ``clash_distance`` is at most
    the cell's width there; otherwise the exact test with :func:`min_image_distance`.
    """
    frac = cell.to_fractional(xyz)  # (N, 3)
    extent = (frac.max(axis=0) - frac.min(axis=0)) * cell.widths  # (3,) Å along each face normal
    if np.all(extent + clash_distance <= cell.widths):
        return True
    return _image_distance(xyz, cell) >= clash_distance


_IMAGE_OFFSETS = NEIGHBOUR_OFFSETS[np.any(NEIGHBOUR_OFFSETS != 0, axis=1)]  # (26, 3)


def _image_distance(xyz: np.ndarray, cell: Cell) -> float:
    """Vectorised :func:`min_image_distance` (the shortest distance from an atom to another cell's copy)."""
    shifts = _IMAGE_OFFSETS @ cell.orth.T  # (26, 3) Å
    diff = xyz[:, None, None, :] - xyz[None, :, None, :] - shifts[None, None]  # (N, N, 26, 3)
    return float(np.sqrt((diff**2).sum(-1).min()))


def pack_cell(
    draw,
    cell: Cell,
    volume_per_atom: float,
    rng: np.random.Generator,
    clash_distance: float = 2.5,
    tolerance: float = 0.1,
    max_tries: int = 400,
    restarts: int = 5,
) -> list[Atoms]:
    """Pack molecules into ``cell`` at a target density: about ``cell.volume / volume_per_atom`` atoms.

    Molecules come from ``draw()`` (a callable returning :class:`Atoms`) and are placed with random rotations
    about their mass-weighted centres at random positions; one is kept when no atom comes closer than
    ``clash_distance`` Å to any atom already placed or to any periodic image (its own included). Packing stops once
    the atom count lies within ``tolerance`` (relative) of the target; molecules that would overshoot are redrawn.

    Returns the placed molecules (each with the cell set). Raises PattersonError when ``restarts`` attempts of
    ``max_tries`` draws each cannot reach the target (too dense for these molecules and this distance).
    """
    if volume_per_atom <= 0:
        raise PattersonError(f"volume_per_atom must be positive, got {volume_per_atom}")
    target = cell.volume / volume_per_atom
    lo, hi = target * (1 - tolerance), target * (1 + tolerance)
    if hi < 1:
        raise PattersonError(f"a {cell.volume:.0f} Å³ cell at {volume_per_atom} Å³/atom holds no atom")
    orth, frac_m, widths = cell.orth, cell.frac, cell.widths
    # without the 27 shifts the minimum image is exact for an orthogonal cell at least twice the distance wide
    simple = cell.is_orthogonal and 2 * clash_distance <= widths.min()
    d2_min = clash_distance**2

    def too_close(fa: np.ndarray, fb: np.ndarray) -> bool:
        diff = fa[:, None, :] - fb[None, :, :]  # (Na, Nb, 3) fractional
        diff -= np.round(diff)
        if simple:
            d2 = ((diff @ orth.T) ** 2).sum(-1)  # (Na, Nb)
        else:
            d2 = (((diff[:, :, None, :] + NEIGHBOUR_OFFSETS[None, None]) @ orth.T) ** 2).sum(-1).min(-1)
        return bool(np.any(d2 < d2_min))

    for _ in range(restarts):
        placed: list[Atoms] = []
        frac = np.zeros((0, 3))
        for _ in range(max_tries):
            mol = draw()
            if len(frac) + len(mol) > hi:
                continue
            xyz = (mol.xyz - mass_centre(mol)) @ random_rotation(rng).T + orth @ rng.random(3)  # (N, 3) Å
            fnew = xyz @ frac_m.T
            extent = (fnew.max(0) - fnew.min(0)) * widths
            if np.any(extent + clash_distance > widths) and _image_distance(xyz, cell) < clash_distance:
                continue
            if len(frac) and too_close(fnew, frac):
                continue
            placed.append(mol.replace(xyz=xyz, cell=cell.parameters, spacegroup="P 1"))
            frac = np.concatenate([frac, fnew])
            if len(frac) >= lo:
                return placed
    raise PattersonError(
        f"cannot pack {target:.0f} atoms ({volume_per_atom} Å³/atom) into the cell without contacts "
        f"closer than {clash_distance} Å"
    )
