"""Space-group symmetry after phasing in P1: the origin, the agreement per operator, symmetrising, and the check
of which space groups a P1 solution is consistent with.

A phasing in P1 lands the structure at an arbitrary origin (and hand). With F(h) = Σ f exp(2πi h·x), a structure
invariant under the operator x → R x + t obeys

    F(h) = exp(2πi h·t) F(hR)                                                    (hR: the row vector h times R)

and moving the origin to s (F'(h) = F(h) exp(−2πi h·s)) makes the P1 phases obey it when s maximises

    S(s) = Re Σ_g Σ_h F(h) F*(hR_g) exp(−2πi h·t_g) exp(−2πi (h − hR_g)·s).

S is one Fourier sum over s (coefficients at q = h − hR_g), so a single FFT scores every origin on a grid at
once; the best grid point is then refined off the grid. This is the origin search of Superflip (Palatinus &
Chapuis 2007) written as one transform. Everything here works on the full sphere of reflections as given, so
hkl need not be a Friedel half.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass

import gemmi
import numpy as np

from patterson.cells import Cell, frac_distances
from patterson.symmetry import HklTable, SpaceGroup, full_sphere, images

log = logging.getLogger(__name__)

CONSISTENT = 0.5  # a space group is consistent with a map when each of its operators agrees at least this well
MIN_PAIRS = 10  # pairs (h, hR) measured both below which an operator's agreement is not reported


# --- the origin ---------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SymmetryFit:
    """The origin that makes a P1 solution most consistent with a space group.

    shift : (3,) fractional; the P1 map's point that becomes the origin (F'(h) = F(h) exp(−2πi h·shift)).
    agreement : (K,) per operator, Re Σ F'(h)F'*(hR)e^{−2πi h·t} / Σ |F(h)||F(hR)|: 1 exact, 0 random, NaN when
        fewer than :data:`MIN_PAIRS` pairs are measured; the identity scores 1.
    n_pairs : (K,) the pairs (h, hR) behind each agreement.
    """

    group: SpaceGroup
    shift: np.ndarray
    agreement: np.ndarray
    n_pairs: np.ndarray

    @property
    def worst(self) -> float:
        """The lowest agreement over the operators (NaN ones ignored); 1 for P1."""
        vals = self.agreement[np.isfinite(self.agreement)]
        return float(vals.min()) if len(vals) else 1.0

    @property
    def consistent(self) -> bool:
        return self.worst >= CONSISTENT

    def table(self) -> list[dict]:
        """One row per operator: its triplet, agreement and pair count (for summary.json)."""
        return [
            {"operator": op, "agreement": None if not math.isfinite(a) else round(float(a), 4), "pairs": int(n)}
            for op, a, n in zip(self.group.triplets(), self.agreement, self.n_pairs, strict=True)
        ]


def _pair_terms(table: HklTable, group: SpaceGroup):
    """For every operator g: (q = h − hR (P, 3), c = F(h)F*(hR)e^{−2πi h·t} (P,), |F(h)||F(hR)| (P,)), over the
    h of ``table`` (a full sphere) whose hR is held."""
    hkl, f = table.hkl, table.f
    out = []
    for r, t in zip(group.rot, group.tran, strict=True):
        hr = hkl @ r  # (M, 3) row vectors h R
        f_hr, found = table(hr)
        h, fh, fr = hkl[found], f[found], f_hr[found]
        c = fh * np.conj(fr) * np.exp(-2j * np.pi * (h @ t))
        out.append((h - hr[found], c, np.abs(fh) * np.abs(fr)))
    return out


def _score_grid(terms, shape: tuple[int, int, int]) -> np.ndarray:
    """S(s) on the (nx, ny, nz) grid of origins s = (i/nx, j/ny, k/nz), by one FFT."""
    grid = np.zeros(shape, dtype=np.complex128)
    for q, c, _ in terms:
        np.add.at(grid, tuple((q % np.array(shape)).T), c)
    return np.fft.fftn(grid).real  # Σ_q C(q) exp(−2πi q·j/N)


def _score_at(terms, s: np.ndarray) -> np.ndarray:
    """S at origins s (P, 3), summed directly."""
    total = np.zeros(len(s))
    for q, c, _ in terms:
        total += (np.exp(-2j * np.pi * (s @ q.T)) @ c).real
    return total


REFINE_PAIRS = 2000  # the strongest pairs per operator that the off-grid climb sums (S is dominated by them)


def _refine(terms, s: np.ndarray, step: np.ndarray, rounds: int = 6) -> np.ndarray:
    """Climb S from the grid point s by a 3×3×3 neighbourhood of shrinking steps (fractional, per axis), summing
    the :data:`REFINE_PAIRS` strongest pairs of each operator."""
    strongest = [np.argsort(-np.abs(c))[:REFINE_PAIRS] for _, c, _ in terms]
    terms = [(q[i], c[i], w[i]) for (q, c, w), i in zip(terms, strongest, strict=True)]
    offsets = np.stack(np.meshgrid(*[np.array([-1.0, 0.0, 1.0])] * 3, indexing="ij"), -1).reshape(-1, 3)
    for _ in range(rounds):
        trial = s + offsets * step
        s = trial[int(np.argmax(_score_at(terms, trial)))]
        step = step / 2
    return s % 1.0


def _agreement(terms, s: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    agree, count = [], []
    for q, c, w in terms:
        n = len(c)
        ok = n >= MIN_PAIRS and w.sum() > 0
        agree.append(float((np.exp(-2j * np.pi * (q @ s)) * c).real.sum() / w.sum()) if ok else math.nan)
        count.append(n)
    return np.array(agree), np.array(count)


def find_origin(
    hkl: np.ndarray, f: np.ndarray, cell: Cell, group: SpaceGroup, d_min: float, refine_above: float = -1.0,
    table: HklTable | None = None,
) -> SymmetryFit:  # fmt: skip
    """The origin shift that makes a P1 solution (hkl (M, 3) on a Friedel half, complex f (M,)) most consistent
    with ``group``, with the agreement of each operator there. The search grid has a step of d_min/4 or finer;
    the best grid point is refined off the grid when its worst agreement exceeds ``refine_above``. ``table``: the
    solution's full-sphere :class:`HklTable`, when the caller tries several groups on it."""
    table = table or HklTable(*full_sphere(np.asarray(hkl), np.asarray(f, dtype=np.complex128)))
    if group.is_p1:
        return SymmetryFit(group, np.zeros(3), np.ones(1), np.array([len(table.f)]))
    terms = _pair_terms(table, group)
    shape = tuple(int(max(8, math.ceil(4 * w / d_min))) for w in (cell.a, cell.b, cell.c))
    identity = np.eye(3, dtype=np.int64)
    moving = [t for t, r in zip(terms, group.rot, strict=True) if not np.array_equal(r, identity)]
    if not moving:  # only centring translations: every origin is as good
        s = np.zeros(3)
    else:
        score = _score_grid(moving, shape)
        s = np.array(np.unravel_index(int(np.argmax(score)), shape), dtype=np.float64) / np.array(shape)
        if np.nanmin(_agreement(terms, s)[0]) > refine_above:
            s = _refine(moving, s, 0.5 / np.array(shape))
    agreement, n_pairs = _agreement(terms, s)
    log.info("origin for %s at %s: worst operator agreement %.3f", group.name, np.round(s, 4), np.nanmin(agreement))
    return SymmetryFit(group, s, agreement, n_pairs)


def is_permitted_shift(group: SpaceGroup, shift: np.ndarray, tol: float = 1e-3) -> bool:
    """Whether moving the origin by ``shift`` (fractional) maps the group's operators onto themselves, so that the
    shifted structure is described by the same group (one of its permitted origins, e.g. (½, 0, 0) in P2₁2₁2₁)."""
    for r, t in zip(group.rot, group.tran, strict=True):
        moved = t + (r - np.eye(3)) @ np.asarray(shift)  # the operator's translation at the new origin
        same_rot = np.all(group.rot == r, axis=(1, 2))
        diff = group.tran[same_rot] - moved
        if not np.any(np.all(np.abs(diff - np.round(diff)) < tol, axis=1)):
            return False
    return True


def shift_origin(hkl: np.ndarray, f: np.ndarray, shift: np.ndarray) -> np.ndarray:
    """F'(h) = F(h) exp(−2πi h·shift): the same structure with the point ``shift`` (fractional) as its origin."""
    return np.asarray(f) * np.exp(-2j * np.pi * (np.asarray(hkl) @ np.asarray(shift)))


def symmetrize(hkl: np.ndarray, f: np.ndarray, group: SpaceGroup) -> np.ndarray:
    """The average over the group, F_sym(h) = ⟨exp(2πi h·t_g) F(hR_g)⟩ over the operators whose hR is held:
    hkl (M, 3) on a Friedel half, f (M,) complex → (M,). The result obeys the group exactly where the orbit is
    complete."""
    hkl = np.asarray(hkl)
    table = HklTable(*full_sphere(hkl, np.asarray(f, dtype=np.complex128)))
    total = np.zeros(len(hkl), dtype=np.complex128)
    count = np.zeros(len(hkl))
    for r, t in zip(group.rot, group.tran, strict=True):
        f_hr, found = table(hkl @ r)
        total += np.where(found, np.exp(2j * np.pi * (hkl @ t)) * f_hr, 0)
        count += found
    return np.where(count > 0, total / np.maximum(count, 1), f)


def to_spacegroup(
    hkl: np.ndarray, f: np.ndarray, cell: Cell, group: SpaceGroup, d_min: float
) -> tuple[np.ndarray, SymmetryFit]:
    """A P1 solution moved to the origin of ``group`` (:func:`find_origin`) and symmetrised; the amplitudes stay as
    they were (they obey the group already), only the phases change. Returns (f (M,) complex, the fit)."""
    fit = find_origin(hkl, f, cell, group, d_min)
    moved = symmetrize(hkl, shift_origin(hkl, f, fit.shift), group)
    return np.abs(f) * np.exp(1j * np.angle(moved)), fit


# --- which space groups a P1 map is consistent with ---------------------------------------------------------------


def lattice_candidates(cell: Cell, centring: str | None = None) -> list[SpaceGroup]:
    """Every space group in its reference setting whose metric the cell obeys (to 0.1%), with the given lattice
    centring letter ('P', 'C', ...; None: any), P1 first."""
    seen, out = set(), []
    uc = cell.to_gemmi()
    for sg in gemmi.spacegroup_table_itb():
        if sg.number in seen or not sg.is_reference_setting() or (centring and sg.centring_type() != centring):
            continue
        if uc.is_compatible_with_spacegroup(sg, 1e-3):
            seen.add(sg.number)
            out.append(SpaceGroup.of(sg))
    return sorted(out, key=lambda g: g.gemmi.number)


def check_spacegroups(
    hkl: np.ndarray, f: np.ndarray, cell: Cell, d_min: float, candidates: list[SpaceGroup] | None = None
) -> list[dict]:
    """For each candidate group (default: :func:`lattice_candidates` of the cell, every centring), the best origin
    and the agreement of its operators with the P1 solution. Rows are sorted by consistency, then by the number of
    operators (the highest consistent symmetry first)."""
    candidates = candidates if candidates is not None else lattice_candidates(cell)
    table = HklTable(*full_sphere(np.asarray(hkl), np.asarray(f, dtype=np.complex128)))  # once for every group
    rows = []
    for group in candidates:
        # refined off the grid only where the group is plausible
        fit = find_origin(hkl, f, cell, group, d_min, refine_above=0.6 * CONSISTENT, table=table)
        rows.append({
            "spacegroup": group.name,
            "number": int(group.gemmi.number),
            "operators": int(len(group.rot)),
            "worst_agreement": round(fit.worst, 4),
            "consistent": fit.consistent,
            "origin_shift": [round(float(v), 5) for v in fit.shift],
        })  # fmt: skip
    return sorted(rows, key=lambda r: (not r["consistent"], -r["operators"], -r["worst_agreement"]))


# --- peaks in the asymmetric unit ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class UniquePeaks:
    """Peaks of a symmetric map, one per symmetry orbit, moved into the asymmetric unit brick.

    frac (P, 3), height (P,), multiplicity (P,): the number of distinct images in the cell (K / the order of the
    site symmetry; smaller than K on a special position)."""

    frac: np.ndarray
    height: np.ndarray
    multiplicity: np.ndarray


def _in_brick(group: SpaceGroup, pts: np.ndarray, tol: float = 1e-6) -> np.ndarray:
    brick = gemmi.find_asu_brick(group.gemmi)
    top = np.array(brick.size) / 24.0
    incl = np.array(brick.incl)
    upper = np.where(incl, pts <= top + tol, pts < top - tol)
    return np.all((pts >= -tol) & upper, axis=-1)


def unique_peaks(
    frac: np.ndarray, height: np.ndarray, cell: Cell, group: SpaceGroup, min_separation: float = 1.0,
    special: float = 0.5,
) -> UniquePeaks:  # fmt: skip
    """Peaks (P, 3) with heights (P,) of a map that obeys ``group`` → one per orbit, highest first: a peak closer
    than ``min_separation`` Å to an image of a higher kept peak is a copy; images of one peak closer than
    ``special`` Å to each other are one site (a special position)."""
    order = np.argsort(-np.asarray(height))
    kept_frac, kept_h, kept_m, kept_images = [], [], [], np.zeros((0, 3))
    for i in order:
        imgs = images(group, np.asarray(frac[i], dtype=np.float64))  # (K, 3)
        if len(kept_images) and frac_distances(imgs[:1], kept_images, cell).min() < min_separation:
            continue
        distinct = [0]
        for k in range(1, len(imgs)):
            if frac_distances(imgs[k : k + 1], imgs[distinct], cell).min() >= special:
                distinct.append(k)
        sites = imgs[distinct]
        inside = _in_brick(group, sites)
        centre = np.array(gemmi.find_asu_brick(group.gemmi).size) / 48.0
        nearest = int(np.argmin(frac_distances(sites, centre[None], cell)[:, 0]))
        pick = int(np.argmax(inside)) if inside.any() else nearest
        kept_frac.append(sites[pick])
        kept_h.append(float(height[i]))
        kept_m.append(len(distinct))
        kept_images = np.concatenate([kept_images, imgs])
    return UniquePeaks(
        np.array(kept_frac).reshape(-1, 3), np.array(kept_h), np.array(kept_m, dtype=np.int64)
    )
