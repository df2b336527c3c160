"""Atoms from a solved map: peaks become atoms with elements from the cell contents, refined by least squares
against the work amplitudes in the space group, and judged by R1 on the free reflections they were never fitted to.

Peaks are one per symmetry orbit in the asymmetric unit (:func:`patterson.solving.symmetry.unique_peaks`). The
highest take the heaviest elements, in the numbers the cell contents give per asymmetric unit (hydrogens are too
weak to find as peaks: :mod:`patterson.solving.hydrogens` places them from the refined atoms). Refinement moves
every atom and its isotropic B to minimise

    Σ_work (|F_obs| − k |F_calc|)²,        F_calc(h) = Σ_atoms Σ_g occ f(s) exp(−B s²/4) exp(2πi h·(R_g x + t_g))

(k the least-squares scale), with the exact physics of :mod:`patterson.physics`. Each refinement round is followed
by pruning: atoms whose B runs away (they sit on no density) or that collapse onto another are dropped. R1 on the
free set (``r1_free``) is a figure the refinement could not fit: a wrong map gives atoms whose R1-free stays near
that of random atoms (0.5–0.6 for small molecules), a right one gives 0.05–0.25.
"""

from __future__ import annotations

import dataclasses
import logging
import math
from dataclasses import dataclass

import numpy as np
import torch

from patterson.cells import Cell, frac_distances
from patterson.errors import PattersonError
from patterson.evaluation.peaks import find_peaks
from patterson.maps import density_from_f
from patterson.minimize import lbfgs
from patterson.physics import AtomBatch, grid_shape
from patterson.physics import structure_factors as exact_structure_factors
from patterson.solving.symmetry import unique_peaks
from patterson.structures import atomic_numbers
from patterson.symmetry import SpaceGroup

log = logging.getLogger(__name__)

B_START = 3.0  # Å²: small molecules at 100–300 K
B_LIMITS = (0.5, 40.0)  # Å²: a B beyond the upper limit after refinement means an atom on no density
POWER_LIMITS = (0.3, 3.0)  # the refined scattering factor of an atom, relative to its element's
CONVERGED = 1e-6  # a refinement stops where a step lowers the residual by less than this fraction of it
CLOSE = 0.9  # Å: two atoms closer than this are one
SOLVED_R1_FREE = 0.25  # R1 on the free set at or below this: the atoms are right (see benchmarks/real_small_molecules)


@dataclass(frozen=True)
class AtomModel:
    """Atoms of the asymmetric unit: frac (N, 3), elements (N,), b_iso (N,) Å², occ (N,) (chemical occupancy ×
    multiplicity / K: an atom on a special position has fewer distinct images), with R1 on the work and free
    reflections and wR2 (F²); part (N,) int or None: 0 ordered, 1 and 2 the major and minor components of
    disordered sites (SHELX PART); hydrogens: riding H atoms (:class:`Riding`, placed by
    :mod:`patterson.solving.hydrogens`) or None. ``len`` counts the non-H atoms, the ones refined."""

    frac: np.ndarray
    elements: np.ndarray
    b_iso: np.ndarray
    occ: np.ndarray
    r1_work: float = math.nan
    r1_free: float = math.nan
    wr2: float = math.nan
    scale: float = math.nan
    cycles: int = 0
    part: np.ndarray | None = None
    hydrogens: Riding | None = None

    def __len__(self) -> int:
        return len(self.frac)

    @property
    def solved(self) -> bool:
        """Whether R1 on the never-fitted free reflections says the atoms are right."""
        return bool(self.r1_free <= SOLVED_R1_FREE)

    def subset(self, keep: np.ndarray) -> AtomModel:
        """The model with only the atoms ``keep`` (N,) bool or indices selects, without riding hydrogens (their
        parents may be gone: place them again)."""
        part = None if self.part is None else self.part[keep]
        return dataclasses.replace(self, frac=self.frac[keep], elements=self.elements[keep], b_iso=self.b_iso[keep],
                                   occ=self.occ[keep], part=part, hydrogens=None)  # fmt: skip


@dataclass(frozen=True)
class Riding:
    """Hydrogen atoms riding on their parents (SHELX AFIX): frac (H, 3), parent (H,) the index of the atom each
    rides on, afix (H,) the SHELX AFIX code of its group (43 aromatic or sp2 CH, 13 tertiary CH, 23 CH2, 137 CH3),
    b_iso (H,) Å², occ (H,) (as :class:`AtomModel`'s), part (H,) its parent's. Never refined: a fixed contribution
    to F_calc while their parents are, and placed again after."""

    frac: np.ndarray
    parent: np.ndarray
    afix: np.ndarray
    b_iso: np.ndarray
    occ: np.ndarray
    part: np.ndarray

    def __len__(self) -> int:
        return len(self.frac)


def atoms_per_asu(composition: dict[str, float], group: SpaceGroup) -> dict[str, float]:
    """Non-hydrogen atoms per asymmetric unit by element, heaviest first: the cell contents / operators."""
    k = len(group.rot)
    heavy = {e: n / k for e, n in composition.items() if e not in ("H", "D") and n > 0}
    return dict(sorted(heavy.items(), key=lambda item: -int(atomic_numbers([item[0]])[0])))


def assign_elements(
    height: np.ndarray, multiplicity: np.ndarray, composition: dict[str, float], group: SpaceGroup
) -> np.ndarray:
    """Elements for peaks sorted highest first: the heaviest element to the highest peaks until its count per
    asymmetric unit is filled (a peak of multiplicity m counts m / K), and so on; peaks beyond the contents get
    None. Returns (P,) object array."""
    wanted = atoms_per_asu(composition, group)
    k = len(group.rot)
    out = np.full(len(height), None, dtype=object)
    left = [[e, n] for e, n in wanted.items()]
    for i in np.argsort(-np.asarray(height)):
        share = multiplicity[i] / k  # of an atom per asymmetric unit: 1 on a general position
        slot = next((s for s in left if s[1] >= 0.5 * share), None)  # the heaviest with room for this site
        if slot is not None:
            out[i] = slot[0]
            slot[1] -= share
    return out


def _expand(frac: torch.Tensor, group: SpaceGroup) -> torch.Tensor:
    """(N, 3) asymmetric-unit sites → (K·N, 3) their images under every operator (x' = R x + t)."""
    rot = torch.as_tensor(group.rot, dtype=frac.dtype)  # (K, 3, 3)
    tran = torch.as_tensor(group.tran, dtype=frac.dtype)  # (K, 3)
    return (torch.einsum("kij,nj->kni", rot, frac) + tran[:, None, :]).reshape(-1, 3)


def _pair_distances(model: AtomModel, points: np.ndarray, cell: Cell, group: SpaceGroup) -> np.ndarray:
    """(P, N) the shortest distance in Å from each point (P, 3) to each atom of the model over its images."""
    images = _expand(torch.as_tensor(model.frac), group).numpy()  # (K·N, 3), operator-major
    d = frac_distances(points, images, cell)  # (P, K·N)
    return d.reshape(len(points), len(group.rot), len(model)).min(1)


def _map_at(coeff: np.ndarray, hkl: np.ndarray, points: np.ndarray) -> np.ndarray:
    """(P,) the map of the coefficients (M,) at fractional points (P, 3), summed directly."""
    return (np.abs(coeff)[None] * np.cos(2 * np.pi * points @ hkl.T - np.angle(coeff)[None])).sum(1)


def calculated_f(
    frac: torch.Tensor, z: torch.Tensor, b_iso: torch.Tensor, occ: torch.Tensor, hkl: np.ndarray, ctx: tuple
) -> torch.Tensor:
    """(M,) complex structure factors of asymmetric-unit atoms expanded by ``ctx`` = (cell, group, form), at P1 hkl;
    form: ``it92`` (X-rays) or ``electron``."""
    cell, group, form = ctx
    k = len(group.rot)
    batch = AtomBatch(
        _expand(frac, group)[None], z.repeat(k)[None], b_iso.repeat(k)[None], occ.repeat(k)[None], cell
    )  # fmt: skip
    return exact_structure_factors(batch, hkl, form=form)[0]


def model_f(model: AtomModel, hkl: np.ndarray, ctx: tuple) -> torch.Tensor:
    """(M,) complex structure factors of a model's atoms (its riding hydrogens included) at P1 hkl (no gradients);
    ctx = (cell, group, form)."""
    with torch.no_grad():
        f = calculated_f(
            torch.as_tensor(model.frac), torch.as_tensor(atomic_numbers(model.elements)),
            torch.as_tensor(model.b_iso), torch.as_tensor(model.occ), hkl, ctx,
        )  # fmt: skip
        return f + hydrogen_f(model.hydrogens, hkl, ctx)


def hydrogen_f(riding: Riding | None, hkl: np.ndarray, ctx: tuple) -> torch.Tensor | float:
    """(M,) complex structure factors of riding hydrogens at P1 hkl (0.0 without any)."""
    if riding is None or not len(riding):
        return 0.0
    with torch.no_grad():
        return calculated_f(torch.as_tensor(riding.frac), torch.ones(len(riding), dtype=torch.long),
                            torch.as_tensor(riding.b_iso), torch.as_tensor(riding.occ), hkl, ctx)  # fmt: skip


def _scale(f_obs: torch.Tensor, f_calc_abs: torch.Tensor) -> torch.Tensor:
    return (f_obs * f_calc_abs).sum() / (f_calc_abs**2).sum().clamp_min(1e-30)


def _work_scale(f_obs: np.ndarray, f_calc_abs: np.ndarray, work: np.ndarray) -> float:
    """k minimising Σ(|Fo| − k|Fc|)² over the work reflections."""
    return float((f_obs[work] * f_calc_abs[work]).sum() / max((f_calc_abs[work] ** 2).sum(), 1e-30))


@dataclass(frozen=True)
class Shares:
    """Refined factors on the atoms' scattering: atom i scatters occ_i × (base_i + Σ_g weight_ig u_g), with u (G,)
    refined from ``start`` within ``limits``: a factor per atom (its scattering power) or an occupancy shared by the
    two components of a disordered site (u on the minor one, 1 − u on its major partner)."""

    base: np.ndarray  # (N,)
    weight: np.ndarray  # (N, G)
    start: np.ndarray  # (G,)
    limits: tuple[float, float]


def _refine_once(model: AtomModel, f_obs: np.ndarray, hkl: np.ndarray, work: np.ndarray, ctx: tuple, steps: int,
                 shares: Shares | None = None):  # fmt: skip
    """One L-BFGS run over coordinates and B (and with ``shares`` their factors u); returns refined (frac, b_iso,
    u) (u empty without shares)."""
    lengths = torch.tensor(ctx[0].parameters[:3], dtype=torch.float64)  # steps in Å, not in cell fractions
    n = len(model)
    z = torch.as_tensor(atomic_numbers(model.elements))
    occ = torch.as_tensor(model.occ, dtype=torch.float32)
    fo = torch.as_tensor(f_obs[work], dtype=torch.float64)
    hkl_work = hkl[work]
    limits = shares.limits if shares is not None else (0.0, 1.0)
    base = torch.as_tensor(shares.base if shares is not None else np.ones(n), dtype=torch.float64)
    weight = torch.as_tensor(shares.weight if shares is not None else np.zeros((n, 0)), dtype=torch.float64)
    riding = hydrogen_f(model.hydrogens, hkl_work, ctx)  # fixed while their parents move
    riding = riding.to(torch.complex64) if torch.is_tensor(riding) else riding

    def loss(x: torch.Tensor) -> torch.Tensor:  # x = (xyz in Å (N·3), B (N), u (G)); F in float32 (3× faster)
        xyz, b_iso = x[: 3 * n].reshape(n, 3), x[3 * n : 4 * n]
        factor = (base + weight @ x[4 * n :].clamp(*limits)).float()
        fc = calculated_f((xyz / lengths).float(), z, b_iso.clamp(*B_LIMITS).float(), occ * factor, hkl_work, ctx)
        fc = (fc + riding).abs().double()
        return ((fo - _scale(fo, fc).detach() * fc) ** 2).sum() / (fo**2).sum()

    start = shares.start if shares is not None else np.zeros(0)
    xyz0 = torch.as_tensor(model.frac * ctx[0].parameters[:3]).flatten()
    x0 = torch.cat([xyz0, torch.as_tensor(np.clip(model.b_iso, *B_LIMITS)), torch.as_tensor(start)]).double()
    x = lbfgs(loss, x0, steps, tolerance=CONVERGED)
    u = np.clip(x[4 * n :].numpy(), *limits)
    return (x[: 3 * n].reshape(n, 3) / lengths).numpy() % 1.0, np.clip(x[3 * n : 4 * n].numpy(), *B_LIMITS), u


def r_factors(model: AtomModel, f_obs: np.ndarray, sigma: np.ndarray | None, hkl: np.ndarray, free: np.ndarray,
              ctx: tuple) -> AtomModel:  # fmt: skip
    """The model with R1 (work and free), wR2 on F² (weights 1/σ²(F²), σ(F²) = 2Fσ(F); unit weights without σ)
    and the scale, all from one exact structure-factor calculation."""
    fc = model_f(model, hkl, ctx).abs().numpy()
    work = ~free
    k = _work_scale(f_obs, fc, work)

    def r1(sel: np.ndarray) -> float:
        return float(np.abs(f_obs[sel] - k * fc[sel]).sum() / max(f_obs[sel].sum(), 1e-30)) if sel.any() else math.nan

    w = np.ones_like(f_obs) if sigma is None else 1.0 / np.maximum(2 * f_obs * sigma, 1e-6 * f_obs.max()) ** 2
    wr2 = float(np.sqrt((w[work] * (f_obs[work] ** 2 - (k * fc[work]) ** 2) ** 2).sum()
                        / max((w[work] * f_obs[work] ** 4).sum(), 1e-30)))  # fmt: skip
    return dataclasses.replace(model, r1_work=r1(work), r1_free=r1(free), wr2=wr2, scale=k)


def _prune(model: AtomModel, cell: Cell, group: SpaceGroup) -> AtomModel:
    """Drop atoms whose B ran to its limit (no density there) and the lower-occupancy one of two atoms (or images)
    closer than :data:`CLOSE`."""
    keep = model.b_iso < B_LIMITS[1] * 0.99
    images = _expand(torch.as_tensor(model.frac), group).numpy().reshape(len(group.rot), len(model), 3)
    for i in range(len(model)):
        for j in range(i):
            if keep[i] and keep[j] and frac_distances(model.frac[i : i + 1], images[:, j], cell).min() < CLOSE:
                keep[i if model.b_iso[i] > model.b_iso[j] else j] = False
    return model.subset(keep)


def refine_atoms(
    model: AtomModel,
    data: tuple[np.ndarray, np.ndarray | None, np.ndarray, np.ndarray],
    cell: Cell,
    group: SpaceGroup,
    rounds: int = 3,
    steps: int = 40,
    form: str = "it92",
) -> AtomModel:
    """Refine coordinates and isotropic B against the work amplitudes, ``rounds`` times ``steps`` L-BFGS steps
    with pruning between; ``data`` = (f_obs (M,), sigma (M,) or None, hkl (M, 3) P1, free (M,) bool); ``form`` the
    scattering factors (``it92`` X-rays, ``electron``). The free reflections are never used but for R1-free."""
    f_obs, sigma, hkl, free = data
    if len(model) == 0:
        raise PattersonError("no atoms to refine")
    ctx = (cell, group, form)
    for _ in range(rounds):
        frac, b_iso, _ = _refine_once(model, f_obs, hkl, ~free, ctx, steps)
        model = _prune(dataclasses.replace(model, frac=frac, b_iso=b_iso, cycles=model.cycles + steps), cell, group)
        if len(model) == 0:
            break
    return r_factors(model, f_obs, sigma, hkl, free, ctx) if len(model) else model


def atoms_from_peaks(
    frac: np.ndarray, height: np.ndarray, multiplicity: np.ndarray, composition: dict[str, float], group: SpaceGroup
) -> AtomModel:
    """The starting model: peaks (P, 3) with heights and multiplicities → atoms with elements (see
    :func:`assign_elements`), B = :data:`B_START`, occupancy multiplicity / K."""
    elements = assign_elements(height, multiplicity, composition, group)
    keep = np.array([e is not None for e in elements], dtype=bool)
    k = len(group.rot)
    return AtomModel(
        np.asarray(frac, dtype=np.float64)[keep], elements[keep].astype(str), np.full(int(keep.sum()), B_START),
        np.asarray(multiplicity, dtype=np.float64)[keep] / k,
    )  # fmt: skip


def scattering_power(model: AtomModel, data: tuple, setting: tuple, steps: int = 20) -> np.ndarray:
    """(N,) electrons of each atom as the data see them: its element's Z times a factor q on its scattering,
    refined with x, y, z and B against the work amplitudes (``data`` as for :func:`refine_atoms`, ``setting`` =
    (cell, group, form)). At atomic resolution the fall-off of f(s) and that of B part, so q measures the atom's
    scattering power where a map's peak height, which B lowers, blurs C, N and O (one electron apart)."""
    f_obs, _, hkl, free = data
    n = len(model)
    _, _, q = _refine_once(model, f_obs, hkl, ~free, setting, steps, Shares(np.zeros(n), np.eye(n), np.ones(n),
                                                                              POWER_LIMITS))  # fmt: skip
    return q * atomic_numbers(model.elements)


def _model_map_heights(model: AtomModel, p1: tuple[np.ndarray, np.ndarray, np.ndarray], ctx: tuple) -> np.ndarray:
    """(N,) the map of the observed work amplitudes with the model's phases at each atom (a direct sum over the P1
    reflections p1 = (f_obs (M,), hkl (M, 3) Friedel half, free (M,) bool), whose free ones are left out)."""
    f_obs, hkl, free = p1
    return _map_at(np.where(free, 0.0, f_obs) * np.exp(1j * np.angle(model_f(model, hkl, ctx).numpy())), hkl,
                   model.frac)  # fmt: skip


def reassign_elements(
    model: AtomModel, data: tuple, p1: tuple, setting: tuple, composition: dict[str, float]
) -> AtomModel:
    """Elements again, from two measures of each atom's weight after refinement: its height in the map phased by
    the refined atoms, and its refined scattering power (:func:`scattering_power`; hydrogens and B move the two
    differently). Each ranking gives the heaviest elements of the cell contents to the heaviest atoms
    (:func:`assign_elements`), the model is refined again, and of these and the model as it came the one with the
    lowest R1 on the work set is kept. ``data`` as for :func:`refine_atoms`, ``p1`` the P1 reflections (f_obs, hkl,
    free), ``setting`` = (cell, group, form)."""
    cell, group, form = setting
    best, tried = model, [tuple(model.elements)]
    for weight in (_model_map_heights(model, p1, setting), scattering_power(model, data, setting)):
        elements = assign_elements(weight, model.occ * len(group.rot), composition, group)
        if tuple(elements) in tried:
            continue
        tried.append(tuple(elements))
        keep = np.array([e is not None for e in elements])
        trial = dataclasses.replace(model.subset(keep), elements=elements[keep].astype(str))
        trial = refine_atoms(trial, data, cell, group, rounds=1, steps=20, form=form)
        log.info("elements again: R1 (work) %.4f → %.4f", model.r1_work, trial.r1_work)
        best = trial if len(trial) and trial.r1_work < best.r1_work else best
    return best


BONDED = (1.1, 2.2)  # Å: a missing atom bonded to the model lies this far from its nearest atom (then C)
SOLVENT_DISTANCE = 2.4  # Å: a peak at least this far from every atom (and image) may be a water (then O)
SOLVENT_HEIGHT = 0.3  # a water's peak reaches at least this fraction of the model atoms' median peak
SOLVENT_SHARE = 0.5  # at most this many waters per atom of the model
COMPLETIONS = 3  # rounds of completion of atoms that are not solved, while R1 (work) falls
COMPLETION_GAIN = 0.005  # a completion is kept where R1 (work) falls by more than this (more atoms always fit it)


def map_coefficients(model: AtomModel, p1: tuple, setting: tuple, difference: bool = False) -> np.ndarray:
    """(M,) the 2Fo − Fc (with ``difference`` Fo − Fc) coefficients phased by the model, of the work reflections of
    p1 = (f_obs (M,), hkl (M, 3) P1 Friedel half, free (M,) bool); zero on the free ones."""
    f_obs, hkl, free = p1
    fc = model_f(model, hkl, setting).numpy()
    k = _work_scale(f_obs, np.abs(fc), ~free)
    amplitude = f_obs - k * np.abs(fc) if difference else 2 * f_obs - k * np.abs(fc)
    return np.where(free, 0.0, amplitude) * np.exp(1j * np.angle(fc))


def phased_map(model: AtomModel, p1: tuple, setting: tuple, d_min: float, difference: bool = False):
    """The map (X, Y, Z) of :func:`map_coefficients` on a grid fine enough for ``d_min``, and the coefficients."""
    coeff = map_coefficients(model, p1, setting, difference)
    cell = setting[0]
    return density_from_f(torch.as_tensor(coeff)[None], p1[1], cell, grid_shape(cell, d_min))[0], coeff


def missing_peaks(model: AtomModel, p1: tuple, setting: tuple, d_min: float) -> tuple[np.ndarray, ...]:
    """Candidate missing atoms: peaks of the 2Fo − Fc map with the model's phases (work reflections only: p1 =
    (f_obs (M,), hkl (M, 3) P1 Friedel half, free (M,) bool)), one per orbit, at least :data:`SOLVENT_HEIGHT` of the
    atoms' median peak, bonded to the model (C: :data:`BONDED`) or apart from it (water O:
    :data:`SOLVENT_DISTANCE`); returns frac (P, 3), multiplicity (P,), elements (P,)."""
    cell, group, _ = setting
    rho, _ = phased_map(model, p1, setting, d_min)
    peaks = find_peaks(rho, cell, threshold=0.05, min_separation=1.0, max_peaks=4 * len(model) + 50)[0]
    unique = unique_peaks(peaks.frac, peaks.height, cell, group, min_separation=1.0)
    near = _pair_distances(model, unique.frac, cell, group).min(1)  # (P,) Å
    reference = np.median(unique.height[near < 0.5]) if (near < 0.5).any() else unique.height.max()
    placed = ((near >= BONDED[0]) & (near <= BONDED[1])) | (near >= SOLVENT_DISTANCE)
    keep = np.flatnonzero(placed & (unique.height >= SOLVENT_HEIGHT * reference))
    keep = keep[: int(SOLVENT_SHARE * len(model))]  # highest first
    return unique.frac[keep], unique.multiplicity[keep], np.where(near[keep] <= BONDED[1], "C", "O")


def complete_model(model: AtomModel, data: tuple, p1: tuple, setting: tuple, d_min: float) -> AtomModel:
    """Atoms the first model lacks, and waters the cell contents do not name (peptide crystals hold them):
    :func:`missing_peaks` become atoms, and one refinement of the whole model (which prunes an atom on no density)
    is kept where R1 on the work set falls by more than :data:`COMPLETION_GAIN`. ``data`` as for
    :func:`refine_atoms`, ``p1`` as for :func:`missing_peaks`, ``setting`` = (cell, group, form)."""
    cell, group, form = setting
    frac, multiplicity, elements = missing_peaks(model, p1, setting, d_min)
    if not len(frac):
        return model
    n, k = len(frac), len(group.rot)
    trial = dataclasses.replace(
        model, frac=np.concatenate([model.frac, frac]), elements=np.concatenate([model.elements, elements]),
        b_iso=np.concatenate([model.b_iso, np.full(n, B_START)]), occ=np.concatenate([model.occ, multiplicity / k]),
    )  # fmt: skip
    trial = refine_atoms(trial, data, cell, group, rounds=2, steps=40, form=form)
    log.info("%d missing atoms and waters tried: R1 (work) %.3f → %.3f with %d atoms", n, model.r1_work,
             trial.r1_work, len(trial))  # fmt: skip
    return trial if len(trial) and trial.r1_work < model.r1_work - COMPLETION_GAIN else model

