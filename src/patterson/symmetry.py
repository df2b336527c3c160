"""Space groups on the ground floor: a group as its operators (:class:`SpaceGroup`), the cell check, reflections as
a look-up table (:class:`HklTable`), a point's images and random sites of a symmetric crystal.

Every later stage that knows a space group (reading files, making crystals, the step from a P1 solution to the
group in :mod:`patterson.solving.symmetry`) uses these.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from functools import cached_property

import gemmi
import numpy as np

from patterson.cells import Cell, frac_distances
from patterson.errors import PattersonError

log = logging.getLogger(__name__)


# --- space groups -------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SpaceGroup:
    """A space group as its operators: rot (K, 3, 3) integer, tran (K, 3) fractional, x' = R x + t, centring
    translations included (K = every operator of the conventional cell)."""

    name: str  # gemmi's extended Hermann–Mauguin symbol
    rot: np.ndarray
    tran: np.ndarray

    @classmethod
    def of(cls, name: str | gemmi.SpaceGroup) -> SpaceGroup:
        """From a Hermann–Mauguin symbol, a number, a Hall symbol (with a leading 'Hall:') or a gemmi group."""
        sg = name if isinstance(name, gemmi.SpaceGroup) else _find(str(name))
        ops = list(sg.operations())
        rot = np.array([np.array(op.rot) // op.DEN for op in ops], dtype=np.int64)
        tran = np.array([np.array(op.tran) / op.DEN for op in ops], dtype=np.float64) % 1.0
        return cls(sg.xhm(), rot, tran)

    @cached_property
    def gemmi(self) -> gemmi.SpaceGroup:
        return gemmi.SpaceGroup(self.name)

    @property
    def is_p1(self) -> bool:
        return len(self.rot) == 1

    @property
    def is_centrosymmetric(self) -> bool:
        return bool(self.gemmi.is_centrosymmetric())

    @property
    def inversion_centre(self) -> np.ndarray | None:
        """A fractional point the group's inversions leave fixed (t/2 of the operator −x + t), None if none."""
        for r, t in zip(self.rot, self.tran, strict=True):
            if np.array_equal(r, -np.eye(3, dtype=np.int64)):
                return t / 2
        return None

    def triplets(self) -> list[str]:
        """The operators as coordinate triplets ('-x+1/2,y+1/2,-z'), identity first."""
        return [op.triplet() for op in self.gemmi.operations()]


def _find(name: str) -> gemmi.SpaceGroup:
    try:
        sg = gemmi.find_spacegroup_by_name(name.strip()) if not name.lower().startswith("hall:") else None
        if sg is None and name.lower().startswith("hall:"):
            sg = gemmi.find_spacegroup_by_ops(gemmi.symops_from_hall(name[5:].strip()))
    except (RuntimeError, ValueError):
        sg = None
    if sg is None:
        raise PattersonError(f"unknown space group {name!r}: give a symbol such as 'P 21 21 21' or a number")
    return sg


def check_cell(cell: Cell, group: SpaceGroup, source: str = "") -> None:
    """Raise unless ``cell`` obeys the metric of ``group``'s lattice (e.g. α = γ = 90° for monoclinic b-unique)."""
    if not cell.to_gemmi().is_compatible_with_spacegroup(group.gemmi, 1e-3):
        where = f"{source}: " if source else ""
        raise PattersonError(f"{where}the cell {cell.text} contradicts the space group {group.name}")


# --- reflections as a look-up table -------------------------------------------------------------------------------


class HklTable:
    """Structure factors (M,) at hkl (M, 3) looked up at any h: found directly, or as the Friedel mate's conjugate."""

    def __init__(self, hkl: np.ndarray, f: np.ndarray):
        self.hkl = np.asarray(hkl, dtype=np.int64)
        self.f = np.asarray(f, dtype=np.complex128)
        self.off = int(np.abs(self.hkl).max(initial=0)) + 1
        keys = self._keys(self.hkl)
        self.order = np.argsort(keys)
        self.sorted = keys[self.order]

    def _keys(self, hkl: np.ndarray) -> np.ndarray:
        base = 2 * self.off + 1
        h = np.clip(hkl + self.off, 0, base - 1)
        return (h[..., 0] * base + h[..., 1]) * base + h[..., 2]

    def _find(self, hkl: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        inside = np.all(np.abs(hkl) < self.off, axis=-1)
        keys = self._keys(hkl)
        pos = np.clip(np.searchsorted(self.sorted, keys), 0, len(self.sorted) - 1)
        found = inside & (self.sorted[pos] == keys)
        return self.order[pos], found

    def __call__(self, hkl: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(F at hkl (..., ) complex, found (...,) bool); F is 0 where neither h nor −h is held."""
        idx, found = self._find(hkl)
        idx_m, found_m = self._find(-hkl)
        f = np.where(found, self.f[idx], np.where(found_m, np.conj(self.f[idx_m]), 0))
        return f, found | found_m


def full_sphere(hkl: np.ndarray, f: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """hkl (M, 3) and f (M,) on a Friedel half → both halves (2M, 3), (2M,) (F(−h) = F*(h)); 000 is dropped."""
    keep = np.any(hkl != 0, axis=1)
    hkl, f = hkl[keep], f[keep]
    return np.concatenate([hkl, -hkl]), np.concatenate([f, np.conj(f)])


# --- sites -------------------------------------------------------------------------------------------------------


def systematically_absent(group: SpaceGroup, hkl: np.ndarray) -> np.ndarray:
    """(M,) bool: the reflections (M, 3) the group's centring and screw or glide translations extinguish: some
    operator (R, t) leaves h unchanged (h R = h) while shifting its phase, h·t not an integer."""
    hkl = np.asarray(hkl)
    out = np.zeros(len(hkl), dtype=bool)
    for rot, tran in zip(group.rot, group.tran, strict=True):
        phase = hkl @ tran
        out |= np.all(hkl @ rot == hkl, axis=1) & (np.abs(phase - np.round(phase)) > 1e-6)
    return out


def images(group: SpaceGroup, frac: np.ndarray) -> np.ndarray:
    """(K, 3): the point ``frac`` (3,) under every operator, wrapped to [0, 1)."""
    return (np.einsum("kij,j->ki", group.rot, frac) + group.tran) % 1.0


def random_sites(
    group: SpaceGroup, cell: Cell, n_asu: int, min_distance: float = 1.3, seed: int = 0, special=None,
    max_tries: int = 100_000,
) -> np.ndarray:  # fmt: skip
    """(N, 3) fractional sites of a random crystal: ``n_asu`` general positions ≥ ``min_distance`` Å from every
    other atom and image, expanded by every operator (N = n_asu·K, plus the distinct images of ``special``, a
    fractional point on a special position, when given). For tests and benchmarks of the symmetry step."""
    rng = np.random.default_rng(seed)
    sites = np.zeros((0, 3))
    if special is not None:
        sites = np.unique(np.round(images(group, np.asarray(special, dtype=float)), 6) % 1.0, axis=0)
    target = len(sites) + n_asu * len(group.rot)
    for _ in range(max_tries):
        if len(sites) >= target:
            return sites
        trial = np.concatenate([sites, images(group, rng.uniform(0, 1, 3))])
        dist = frac_distances(trial, trial, cell) + 9 * np.eye(len(trial))
        if dist.min() > min_distance:
            sites = trial
    raise PattersonError(f"could not place {n_asu} atoms {min_distance} Å apart in {group.name}; use a larger cell")
