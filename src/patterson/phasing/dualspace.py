"""Dual-space direct methods (Shake-and-Bake, Miller et al. 1993; SHELXD, Sheldrick 1998, Usón & Sheldrick 1999)
for atomic-resolution data.

Many short trials, batched on torch. A trial starts from random atoms (or, in P1 with ``patterson``, from a
Patterson superposition on one of its strongest vectors) and cycles: E_calc of the current point atoms (equal, or
weighted by their peak heights) → the phases of the strong reflections, those of the largest |E_calc| kept and the
others expanded by the tangent formula → an E-map of the strong observed |E| → its highest peaks (about the
expected number of atoms) → random omission of some → E_calc again. In the space group the atoms are one
asymmetric unit, expanded by its operators, and the peaks are taken once per orbit; batches alternate between the
group and P1 (the solve's symmetry step then finds the origin).

A trial is scored by SHELXD's CC_all: the correlation of E_obs² and E_calc² of its final peaks over every work
reflection (CC_weak: over those the E-map never held). Each batch's best is extended (more peaks, weighted by
height, none omitted); the best extended trial wins. The search stops at a number of trials, at a time budget, or
once an extended trial is clearly a solution. Its phases are brought back to F by a few cycles of positivity, so
that the map, R-work and R-free are on F as for charge flipping.

The free set is never read before R-free: the E-values, the E-map, CC and the atom count come from the work
reflections only. How it runs is a :class:`~patterson.phasing.options.DualSpaceOptions`.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import gemmi
import numpy as np
import torch

from patterson import runtime
from patterson.cells import Cell
from patterson.maps import density_from_f, f_from_density, impose_amplitudes
from patterson.phasing.amplitudes import normalised_amplitudes, wilson_estimate
from patterson.phasing.flipping import positivity_polish
from patterson.phasing.options import DualSpaceOptions, options_for
from patterson.phasing.starts import PhasingResult, prepare_starts, with_000
from patterson.physics import grid_shape
from patterson.symmetry import SpaceGroup

log = logging.getLogger(__name__)

MAP_SAMPLING = 3.0  # the E-map's grid spacing is d_min / 3: Sayre's squaring needs it to be free of aliasing
ELECTRONS_PER_ATOM = 6.6  # F(000) / atoms of a C, N, O structure: the atom count when F(000) is given
SF_CHUNK = 4_000_000  # trials × atoms × reflections per block of the point-atom structure factors
SPECIAL = 0.5  # Å: an atom this close to one of its symmetry images sits on a special position
MIN_SEPARATION = 0.9  # Å: of two peaks (or symmetry images) closer than this only the higher is an atom
CANDIDATES = 1.3  # local maxima examined per peak wanted (before orbits and close pairs are removed)
EXTEND_PEAKS = 1.5  # the extension takes this many times the trials' peaks (6MW0's best trial of 121 peaks in
# the cell, extended with 121, 200 and 364: map CC 0.86, 0.90, 0.88)
HEIGHT_CAP = 10.0  # peak heights as weights: at most this many times the median
SMALL_BATCH = 1_000_000  # E-map voxels × trials per batch below which the trials run on one thread (small FFTs:
# 0.5 ms on one thread, 19 ms on two busy ones, measured on the 2-core machine for 4 maps of 30×30×36)
PATTERSON_VECTORS = 50  # the Patterson peaks a seeded trial draws its vector from
MIN_VECTOR = 1.2  # Å: shorter Patterson vectors are not between atoms


@dataclass(frozen=True)
class Problem:
    """One structure's dual-space problem, float32 on the amplitudes' device.

    hkl_strong (S, 3) and e_strong (S,): the strong work reflections the E-map is made of; hkl_cc (C, 3), e_cc (C,)
    and weak (C,) bool: every work reflection, those not in the E-map marked weak; shape: the E-map's grid; rot
    (G, 3, 3), tran (G, 3): the space group's operators on fractional coordinates; brick (3,): the upper corner of
    a box that holds an asymmetric unit; orth (3, 3): fractional → Cartesian; n_peaks: the atoms (per asymmetric
    unit) taken from each E-map, n_keep: those kept after the random omission; strong_idx (S,): where the strong
    reflections sit in the reflection list, hkl_strong_np (S, 3) their integer indices.
    """

    hkl_strong: torch.Tensor
    e_strong: torch.Tensor
    hkl_cc: torch.Tensor
    e_cc: torch.Tensor
    weak: torch.Tensor
    shape: tuple[int, int, int]
    cell: Cell
    rot: torch.Tensor
    tran: torch.Tensor
    brick: torch.Tensor
    orth: torch.Tensor
    n_peaks: int
    n_keep: int
    strong_idx: np.ndarray = field(repr=False, default_factory=lambda: np.zeros(0, dtype=np.int64))
    hkl_strong_np: np.ndarray = field(repr=False, default_factory=lambda: np.zeros((0, 3), dtype=np.int64))

    @property
    def is_p1(self) -> bool:
        return self.rot.shape[0] == 1


def make_problem(
    fo: torch.Tensor,
    work: torch.Tensor,
    hkl: np.ndarray,
    cell: Cell,
    options: DualSpaceOptions,
    n_atoms: float,
    group: SpaceGroup | None = None,
) -> Problem:
    """The :class:`Problem` of one structure from its amplitudes fo (M,) on the P1 Friedel half and its work set
    (M,) bool; ``n_atoms`` is the expected number of atoms in the cell (used when ``options.n_atoms`` is None);
    ``group`` the space group the atoms obey (None: P1)."""
    group = group if group is not None else SpaceGroup.of("P 1")
    e = normalised_amplitudes(fo[None], hkl, cell, "E", mask=work[None])[0]  # (M,): from the work set only
    work_idx = torch.nonzero(work).flatten()
    e_work = e[work_idx]
    order = torch.argsort(-e_work, stable=True)
    n_strong = int(min((e_work >= options.e_min).sum(), options.max_strong))
    strong = torch.zeros_like(work_idx, dtype=torch.bool)
    strong[order[: max(n_strong, min(len(order), 10))]] = True
    idx = work_idx[strong].cpu().numpy()
    hkl_t = torch.as_tensor(hkl, dtype=torch.float32, device=fo.device)
    n_ops = len(group.rot)
    total = options.n_atoms if options.n_atoms is not None else n_atoms
    n_peaks = max(2, int(round(total / n_ops)))
    brick = gemmi.find_asu_brick(group.gemmi).size if not group.is_p1 else [24, 24, 24]
    tensor = lambda a: torch.as_tensor(np.asarray(a), dtype=torch.float32, device=fo.device)  # noqa: E731
    return Problem(
        hkl_strong=hkl_t[idx], e_strong=e[idx].float(), hkl_cc=hkl_t[work_idx], e_cc=e_work.float(),
        weak=~strong, shape=grid_shape(cell, float(cell.d_spacing(hkl[idx]).min()), MAP_SAMPLING), cell=cell,
        rot=tensor(group.rot), tran=tensor(group.tran), brick=tensor(brick) / 24, orth=tensor(cell.orth),
        n_peaks=n_peaks, n_keep=max(1, int(round((1 - options.omit_fraction) * n_peaks))),
        strong_idx=idx, hkl_strong_np=np.asarray(hkl)[idx],
    )  # fmt: skip


def expected_atoms(f000, fo: torch.Tensor, hkl: np.ndarray, cell: Cell, work: torch.Tensor) -> torch.Tensor:
    """Atoms expected in the cell, (B,): F(000) / :data:`ELECTRONS_PER_ATOM` when ``f000`` is given, else the
    carbon-equivalent count of a Wilson plot of the work reflections (the amplitudes on the absolute scale)."""
    if f000 is not None:
        f000 = torch.as_tensor(f000, dtype=torch.float64).reshape(-1).expand(fo.shape[0])
        return f000 / ELECTRONS_PER_ATOM
    n, _ = wilson_estimate(fo, hkl, cell, mask=work)
    return torch.nan_to_num(n.double().cpu(), nan=20.0).clamp(4.0, 5000.0)


def point_structure_factors(frac: torch.Tensor, weight: torch.Tensor, hkl: torch.Tensor) -> torch.Tensor:
    """E_calc = Σ_j w_j exp(2πi h·x_j) / √Σw² of point atoms: frac (T, N, 3), weight (T, N), hkl (M, 3) float →
    (T, M) complex (⟨|E|²⟩ = 1 for atoms at random positions)."""
    t, n, _ = frac.shape
    hkl = hkl.to(frac.dtype)
    step = max(1, SF_CHUNK // max(1, t * n))
    w = weight[:, None, :]  # (T, 1, N)
    parts = []
    for start in range(0, hkl.shape[0], step):
        angle = (2 * math.pi) * torch.matmul(frac, hkl[start : start + step].T)  # (T, N, m)
        parts.append(torch.complex(torch.bmm(w, torch.cos(angle))[:, 0], torch.bmm(w, torch.sin(angle))[:, 0]))
    norm = weight.pow(2).sum(-1, keepdim=True).clamp_min(1e-12).sqrt()  # (T, 1)
    return torch.cat(parts, dim=-1) / norm


def expand(problem: Problem, frac: torch.Tensor, weight: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Every symmetry image of atoms (T, N, 3), (T, N): (T, G·N, 3) in [0, 1) and their weights (T, G·N), divided by
    the number of images that fall on the atom itself (within :data:`SPECIAL` Å: an atom on a special position
    counts once per distinct image)."""
    if problem.is_p1:
        return frac, weight
    images = torch.einsum("gij,tnj->tgni", problem.rot, frac) + problem.tran[None, :, None]  # (T, G, N, 3)
    d = images - frac[:, None]
    on_itself = torch.matmul(d - torch.round(d), problem.orth.T).pow(2).sum(-1) < SPECIAL**2  # (T, G, N)
    weight = weight / on_itself.sum(1).clamp_min(1).to(weight.dtype)  # (T, N)
    t = frac.shape[0]
    return torch.remainder(images, 1.0).reshape(t, -1, 3), weight.repeat(1, problem.rot.shape[0])


def correlation(e_obs: torch.Tensor, e_calc: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """SHELXD's CC: the Pearson correlation of E_obs² (M,) and |E_calc|² (T, M) over ``mask`` (M,) bool; (T,)."""
    if mask is not None:
        e_obs, e_calc = e_obs[mask], e_calc[:, mask]
    x = e_obs.pow(2)[None]
    y = e_calc.real.pow(2) + e_calc.imag.pow(2)
    x, y = x - x.mean(-1, keepdim=True), y - y.mean(-1, keepdim=True)
    return (x * y).sum(-1) / ((x * x).sum(-1) * (y * y).sum(-1)).clamp_min(1e-30).sqrt()


def sim_weights(e_obs: torch.Tensor, e_calc: torch.Tensor, sigma_a: torch.Tensor) -> torch.Tensor:
    """Sim (1959) weights I₁(X)/I₀(X), X = 2σA|E_obs||E_calc|/(1 − σA²): e_obs (M,), e_calc (T, M), σA (T,)."""
    sa = sigma_a.clamp(0.05, 0.95)[:, None]
    x = 2 * sa * e_obs[None] * e_calc.abs() / (1 - sa**2)
    return torch.special.i1e(x) / torch.special.i0e(x)


def map_coefficients(problem: Problem, e_calc: torch.Tensor, options: DualSpaceOptions) -> torch.Tensor:
    """Weights and phases (T, S) for the E-map from e_calc (T, S): the tangent expansion's (``n_tangent`` > 0),
    else the phases of e_calc with Sim's weights (σA from CC; ``weights="sim"``) or none."""
    if options.n_tangent:
        return tangent(problem, e_calc, options.n_tangent, options.fixed_fraction)
    phase = torch.polar(torch.ones_like(e_calc.real), torch.angle(e_calc))
    if options.weights == "none":
        return phase
    sigma_a = correlation(problem.e_strong, e_calc).clamp_min(0.0).sqrt()
    return sim_weights(problem.e_strong, e_calc, sigma_a) * phase


def tangent(problem: Problem, e_calc: torch.Tensor, n: int, fixed_fraction: float) -> torch.Tensor:
    """Tangent expansion (SHELXD): the phases of the ``fixed_fraction`` of the strong reflections with the largest
    |E_calc| are kept; the others come from ``n`` cycles of the tangent formula by Sayre's squaring (the E-map of the
    current phases squared and transformed: φ(h) ← arg Σ_k E(k) E(h − k)), weighted by their tangent reliability
    (at most 1). e_calc (T, S) → (T, S) weights and phases."""
    t, s = e_calc.shape
    n_fixed = max(1, int(round(fixed_fraction * s)))
    fixed = torch.zeros(e_calc.shape, dtype=torch.bool, device=e_calc.device)
    fixed.scatter_(1, torch.topk(e_calc.abs(), n_fixed, dim=-1).indices, True)
    phi, weight = torch.angle(e_calc), fixed.to(e_calc.real.dtype)  # (T, S)
    for _ in range(n):
        rho = e_map(problem, torch.polar(weight, phi))
        tf = f_from_density(rho * rho, problem.hkl_strong_np, problem.cell)  # (T, S)
        scale = tf.abs().masked_fill(~fixed, 0).sum(-1, keepdim=True) / n_fixed
        phi = torch.where(fixed, phi, torch.angle(tf))
        weight = torch.where(fixed, torch.ones_like(weight), (tf.abs() / scale.clamp_min(1e-30)).clamp_max(1.0))
    return torch.polar(weight, phi)


def e_map(problem: Problem, coeffs: torch.Tensor) -> torch.Tensor:
    """The E-map (T, X, Y, Z) of the strong |E_obs| times coeffs (T, S) (their weights and phases)."""
    return density_from_f(problem.e_strong[None] * coeffs, problem.hkl_strong_np, problem.cell, problem.shape)


def map_peaks(problem: Problem, rho: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The ``k`` highest peaks of E-maps (T, X, Y, Z), one per symmetry orbit, at least :data:`MIN_SEPARATION`
    apart: the periodic 3×3×3 local maxima in the asymmetric-unit box, refined by a parabola per axis. Returns
    fractional positions (T, k, 3) and heights (T, k) (0 where a map has fewer peaks)."""
    t = rho.shape[0]
    shape = torch.tensor(rho.shape[1:], device=rho.device)
    axes = [torch.arange(-1, int(math.floor(float(problem.brick[a]) * n + 1e-6)) + 2, device=rho.device) % n
            for a, n in enumerate(rho.shape[1:])]  # the box and one voxel around it, periodically  # fmt: skip
    box = rho[:, axes[0]][:, :, axes[1]][:, :, :, axes[2]]  # (T, x + 2, y + 2, z + 2)
    inner = box[:, 1:-1, 1:-1, 1:-1]
    top = box
    for dim in (1, 2, 3):  # the 3×3×3 maximum, one axis at a time
        n = top.shape[dim]
        top = torch.maximum(torch.maximum(top.narrow(dim, 0, n - 2), top.narrow(dim, 1, n - 2)),
                            top.narrow(dim, 2, n - 2))  # fmt: skip
    flat = torch.where(inner >= top, inner, torch.full_like(inner, -math.inf)).reshape(t, -1)
    duplicates = float(problem.brick.prod()) * problem.rot.shape[0]  # orbits may meet the box more than once
    n_cand = min(flat.shape[1], int(math.ceil(CANDIDATES * duplicates * k)) + 8)
    height, index = torch.topk(flat, n_cand, dim=-1)  # (T, K)
    local = torch.unravel_index(index, tuple(inner.shape[1:]))
    ijk = torch.stack([axes[a][1:-1][local[a]] for a in range(3)], dim=-1)  # (T, K, 3) on the whole grid
    frac = _refine_peaks(rho.reshape(t, -1), ijk, height, shape)
    clash = _clashes(problem, frac)  # (T, K): within MIN_SEPARATION of a higher peak or its images
    score = torch.where(clash | ~torch.isfinite(height), torch.full_like(height, -math.inf), height)
    top, pick = torch.topk(score, min(k, n_cand), dim=-1)
    frac = frac.gather(1, pick[..., None].expand(-1, -1, 3))
    return frac, torch.where(torch.isfinite(top), top, torch.zeros_like(top))


def _refine_peaks(values: torch.Tensor, ijk: torch.Tensor, height: torch.Tensor, shape: torch.Tensor) -> torch.Tensor:
    """Fractional positions (T, K, 3) of grid maxima ijk (T, K, 3) of maps values (T, X·Y·Z): each moved to the
    vertex of the parabola through it and its two neighbours along each axis."""
    frac = ijk.to(values.dtype)
    for axis in range(3):
        step = torch.zeros(3, dtype=torch.long, device=values.device)
        step[axis] = 1
        vm = values.gather(1, _flat_index((ijk - step) % shape, shape))
        vp = values.gather(1, _flat_index((ijk + step) % shape, shape))
        curv = vm - 2 * height + vp
        off = torch.where(curv < 0, 0.5 * (vm - vp) / curv.clamp_max(-1e-12), torch.zeros_like(curv))
        frac[..., axis] += torch.nan_to_num(off).clamp(-0.5, 0.5)
    return torch.remainder(frac / shape.to(values.dtype), 1.0)


def _flat_index(ijk: torch.Tensor, shape: torch.Tensor) -> torch.Tensor:
    return (ijk[..., 0] * shape[1] + ijk[..., 1]) * shape[2] + ijk[..., 2]


def _clashes(problem: Problem, frac: torch.Tensor) -> torch.Tensor:
    """(T, K) bool: peaks (T, K, 3), highest first, that lie within :data:`MIN_SEPARATION` Å of a symmetry image of a
    higher one (the same orbit, or too close to be another atom)."""
    images = torch.einsum("gij,tnj->tngi", problem.rot, frac) + problem.tran[None, None]  # (T, K, G, 3)
    d = frac[:, :, None, None, :] - images[:, None]  # (T, K_i, K_j, G, 3)
    d = torch.matmul(d - torch.round(d), problem.orth.T).pow(2).sum(-1).amin(-1)  # (T, K_i, K_j) squared Å
    k = frac.shape[1]
    higher = torch.ones(k, k, dtype=torch.bool, device=frac.device).tril(-1)  # j < i
    return ((d < MIN_SEPARATION**2) & higher).any(-1)


def atom_weights(height: torch.Tensor, by_height: torch.Tensor) -> torch.Tensor:
    """Point-atom weights (T, N) from peak heights (T, N): for the trials ``by_height`` (T,) bool their height
    relative to the median (at most :data:`HEIGHT_CAP`), for the others 1 (0 for missing peaks)."""
    relative = (height / height.median(-1, keepdim=True).values.clamp_min(1e-12)).clamp(0.0, HEIGHT_CAP)
    return torch.where(by_height[:, None], relative, (height > 0).to(height.dtype))


def by_height(t: int, weighting: str, device=None) -> torch.Tensor:
    """(T,) bool: the trials whose atoms are weighted by peak height: all (``height``), none (``equal``) or every
    other one (``mixed``)."""
    odd = torch.arange(t, device=device) % 2 == 1
    return torch.full((t,), weighting == "height", device=device) if weighting != "mixed" else odd


def random_omit(frac, height, n_keep: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Keep ``n_keep`` of the peaks (T, N, 3), (T, N) at random per trial (SHELXD's random omission)."""
    t, n = height.shape
    if n_keep >= n:
        return frac, height
    keep = torch.argsort(torch.rand((t, n), generator=generator), dim=-1)[:, :n_keep].to(frac.device)
    return frac.gather(1, keep[..., None].expand(-1, -1, 3)), height.gather(1, keep)


def random_starts(problem: Problem, t: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Random trial starts: ``n_keep`` atoms (T, n_keep, 3) uniform in the cell, equal weights (T, n_keep)."""
    frac = torch.rand((t, problem.n_keep, 3), generator=generator).to(problem.e_strong.device)
    return frac, torch.ones(t, problem.n_keep, device=frac.device)


def patterson_map(problem: Problem) -> tuple[torch.Tensor, torch.Tensor]:
    """The sharpened Patterson map (X, Y, Z) of the strong reflections (coefficients E² − 1: no origin peak) and its
    :data:`PATTERSON_VECTORS` highest peaks (V, 3) at least :data:`MIN_VECTOR` Å from the origin."""
    p1 = dict(rot=torch.eye(3)[None].to(problem.orth), tran=torch.zeros(1, 3).to(problem.orth),
              brick=torch.ones(3).to(problem.orth))  # fmt: skip
    flat = Problem(**{**problem.__dict__, **p1})
    coeffs = (problem.e_strong**2 - 1).to(torch.complex64)[None]  # (1, S): a Patterson has phases 0
    pmap = density_from_f(coeffs, problem.hkl_strong_np, problem.cell, problem.shape)[0]  # (X, Y, Z)
    frac, height = map_peaks(flat, pmap[None], PATTERSON_VECTORS + 1)
    d = frac[0] - torch.round(frac[0])
    far = torch.matmul(d, problem.orth.T).norm(dim=-1) >= MIN_VECTOR
    return pmap, frac[0][far & (height[0] > 0)][:PATTERSON_VECTORS]


def patterson_starts(
    problem: Problem, pmap: torch.Tensor, vectors: torch.Tensor, t: int, generator: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """Patterson-seeded starts (P1): for each trial a vector u drawn from the strongest, the superposition minimum
    function min(P(x), P(x − u)) (an image of the structure with an atom at the origin) and its ``n_keep``
    highest peaks as atoms (T, n_keep, 3), equal weights."""
    pick = torch.randint(len(vectors), (t,), generator=generator)
    shape = torch.tensor(pmap.shape, dtype=vectors.dtype, device=vectors.device)
    shifts = torch.round(vectors[pick.to(vectors.device)] * shape).long().tolist()
    maps = torch.stack([torch.minimum(pmap, torch.roll(pmap, tuple(s), dims=(0, 1, 2))) for s in shifts])
    frac, height = map_peaks(problem, maps, problem.n_keep)
    return frac, (height > 0).to(frac.dtype)


def phase_starts(problem: Problem, phi: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """A start from phases: the peaks (1, n_keep, 3) of the E-map with phi (S,) on the strong reflections."""
    frac, height = map_peaks(problem, e_map(problem, torch.polar(torch.ones_like(phi), phi)[None]), problem.n_keep)
    return frac, (height > 0).to(frac.dtype)


def run_trials(
    problem: Problem, frac: torch.Tensor, weight: torch.Tensor, options: DualSpaceOptions, generator: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """``options.n_iter`` dual-space cycles from starting atoms frac (T, N, 3), weight (T, N) (one asymmetric unit),
    the atoms weighted as ``options.atom_weights`` says (:func:`by_height`). Returns the last E-map's peaks
    (T, n_peaks, 3), their weights (T, n_peaks), CC_all (T,) and CC_weak (T,)."""
    heights = by_height(frac.shape[0], options.atom_weights, frac.device)
    for _ in range(options.n_iter):
        e_calc = point_structure_factors(*expand(problem, frac, weight), problem.hkl_strong)  # (T, S)
        rho = e_map(problem, map_coefficients(problem, e_calc, options))  # (T, X, Y, Z)
        peaks, height = map_peaks(problem, rho, problem.n_peaks)  # (T, n_peaks, 3), (T, n_peaks)
        kept, kept_height = random_omit(peaks, height, problem.n_keep, generator)
        frac, weight = kept, atom_weights(kept_height, heights)
    weight = atom_weights(height, heights)  # the last E-map's peaks, none omitted
    e_all = point_structure_factors(*expand(problem, peaks, weight), problem.hkl_cc)  # (T, C)
    return peaks, weight, correlation(problem.e_cc, e_all), correlation(problem.e_cc, e_all, problem.weak)


@dataclass
class Search:
    """One structure's trials: the best extended trial's atoms (N, 3) and weights (N,) (one asymmetric unit of its
    ``problem``), every trial's CC_all and CC_weak, those of each batch's extended best, the cycles run, the seconds
    taken and whether a trial stood out (:func:`stands_out`)."""

    frac: torch.Tensor
    weight: torch.Tensor
    problem: Problem | None
    cc_all: list[float] = field(default_factory=list)
    cc_weak: list[float] = field(default_factory=list)
    extended: list[tuple[float, float]] = field(default_factory=list)
    cycles: int = 0
    seconds: float = 0.0
    stood_out: bool = False

    @property
    def best(self) -> tuple[float, float]:
        """CC_all and CC_weak of the best extended trial."""
        return max(self.extended)


def stands_out(search: Search, options: DualSpaceOptions) -> bool:
    """Whether the best extended trial is clearly a solution: its CC_all at least ``options.stop_cc`` and its CC_weak
    (reflections never in the E-map) at least ``options.stop_weak`` and above the median CC_weak of every trial by
    ``options.stop_margin``. Measured (extended CC_all / CC_weak, median CC_weak of the trials): 6MW0 solved
    0.71 / 0.36, median 0.04, failures at most 0.59 / 0.10; xylitol solved 0.84 / 0.75, median 0.24; malbac solved
    0.74 / 0.36, median 0.24; sad_p31c failures 0.82 / 0.33, median 0.21 (its solution, from the published atoms,
    0.88 / 0.59)."""
    cc_all, cc_weak = search.best
    margin = cc_weak - float(np.median(search.cc_weak))
    return cc_all >= options.stop_cc and cc_weak >= options.stop_weak and margin >= options.stop_margin


def _settled(found: Search, options: DualSpaceOptions, idle: int) -> bool:
    """Whether the best extended trial is good enough (CC_all ≥ ``options.stop_cc``, CC_weak ≥ ``options.stop_weak``)
    and no batch has bettered it for ``options.patience`` batches (``idle``): where most trials find a heavy atom
    the best never stands out from the median (malbac, a Pd complex: CC_weak 0.36 against a median of 0.24, solved
    by its second batch, and 480 trials to the 240 s budget without this rule)."""
    cc_all, cc_weak = found.best
    return bool(options.patience) and idle >= options.patience and cc_all >= options.stop_cc and (
        cc_weak >= options.stop_weak)


def extend(
    problem: Problem, frac: torch.Tensor, weight: torch.Tensor, options: DualSpaceOptions, generator: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """``options.n_extend`` cycles that complete a trial (T, N, 3), (T, N): :data:`EXTEND_PEAKS` × the peaks,
    none omitted, weighted by their height, E-maps without the tangent expansion or weights (measured: the map CC of
    6MW0's best trial rose from 0.61 to 0.88 in 20 such cycles). Returns as :func:`run_trials`."""
    n_peaks = max(2, int(round(EXTEND_PEAKS * problem.n_peaks)))
    wider = dataclasses.replace(problem, n_peaks=n_peaks, n_keep=n_peaks)
    plain = options.replace(n_iter=options.n_extend, n_tangent=0, weights="none", atom_weights="height")
    return run_trials(wider, frac, weight, plain, generator)


def search(
    problems: list[Problem],
    options: DualSpaceOptions,
    phi_start: torch.Tensor | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> Search:
    """Batches of ``options.n_starts`` trials, on each of ``problems`` in turn (the space group's and P1's), each
    batch's best (by CC_all) extended (:func:`extend`), until ``options.n_trials``, the time budget
    ``options.max_seconds`` (no batch starts that would end past it, judged by the last one), a best trial that has
    :func:`_settled` or a trial that :func:`stands_out` once every problem had a batch (on malbac, a Pd complex in
    P-1, the space group's first batch stood out with a partial solution, map CC 0.68; P1's next batch found a
    better one, 0.83). In P1 half of each batch is Patterson-seeded (with ``options.patterson``); the first trial
    starts from ``phi_start`` (the strong reflections' phases, (S,)) when given; the others from random atoms."""
    t0 = time.perf_counter()
    generator = torch.Generator().manual_seed(options.seed)
    seeds = [patterson_map(p) if options.patterson and p.is_p1 else None for p in problems]
    found = Search(torch.zeros(0, 3), torch.zeros(0), None)
    done, batch, best_batch = 0, 0, 0
    while done < options.n_trials:
        t_batch, k = time.perf_counter(), batch % len(problems)
        t, problem = min(options.n_starts, options.n_trials - done), problems[k]
        frac, weight = _starts(problem, t, generator, seeds[k], phi_start if batch == 0 else None)
        peaks, weights, cc, weak = run_trials(problem, frac, weight, options, generator)
        i = int(torch.argmax(cc))
        peaks, weights, cc_ext, weak_ext = extend(problem, peaks[i : i + 1], weights[i : i + 1], options, generator)
        if not found.extended or (float(cc_ext[0]), float(weak_ext[0])) > found.best:
            found.frac, found.weight, found.problem, best_batch = peaks[0], weights[0], problem, batch
        found.extended.append((float(cc_ext[0]), float(weak_ext[0])))
        found.cc_all += cc.tolist()
        found.cc_weak += weak.tolist()
        done, batch, found.cycles = done + t, batch + 1, found.cycles + t * options.n_iter + options.n_extend
        if progress is not None:
            progress(done, options.n_trials)
        elapsed, last = time.perf_counter() - t0, time.perf_counter() - t_batch
        log.debug("dual-space: %d trials (%s) in %.1f s; extended CC_all %.3f, CC_weak %.3f", done,
                  "P1" if problem.is_p1 else "space group", elapsed, *found.extended[-1])  # fmt: skip
        found.stood_out = stands_out(found, options) and batch >= len(problems)  # each of the groups had a batch
        out_of_time = bool(options.max_seconds) and elapsed + last > options.max_seconds
        if found.stood_out or _settled(found, options, batch - 1 - best_batch) or out_of_time:
            break
    found.seconds = time.perf_counter() - t0
    return found


def _starts(problem: Problem, t: int, generator: torch.Generator, seeds, phi_start) -> tuple[torch.Tensor, ...]:
    """A batch's starting atoms (T, n_keep, 3) and weights: Patterson-seeded (half, when ``seeds`` = (map,
    vectors) is given and holds vectors), from ``phi_start`` (the first) and random (the rest)."""
    frac, weight = random_starts(problem, t, generator)
    if seeds is not None and len(seeds[1]) and t > 1:
        n = t // 2
        frac[:n], weight[:n] = patterson_starts(problem, seeds[0], seeds[1], n, generator)
    if phi_start is not None:
        frac[:1], weight[:1] = phase_starts(problem, phi_start)
    return frac, weight


def dual_space(
    f_obs: torch.Tensor,
    hkl: np.ndarray,
    cell: Cell,
    shape: tuple[int, int, int],
    options: DualSpaceOptions | None = None,
    *,
    f000: torch.Tensor | float | None = None,
    group: SpaceGroup | None = None,
    phi_start: torch.Tensor | None = None,
    observed: torch.Tensor | None = None,
    free: torch.Tensor | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> PhasingResult:
    """Dual-space direct methods (SHELXD-like) from amplitudes at atomic resolution; see the module's docstring.

    Parameters
    ----------
    f_obs : (B, M) observed amplitudes on the P1 Friedel half ``hkl`` (no F(000)).
    cell, shape : the cell and the grid (X, Y, Z) of the final map, which must hold all reflections.
    options : how it runs (:class:`~patterson.phasing.options.DualSpaceOptions`; None: the defaults).
    f000 : F(000), a number or (B,): sets the expected atom count (F(000) / 6.6) unless ``options.n_atoms`` does,
        and starts the polish on F; None: a Wilson estimate and F(000) floating from 0.
    group : the space group the structure obeys (its operators on the P1 data; None: P1). The trials then work on
        one asymmetric unit; the phases returned obey it at its conventional origin.
    phi_start : (B, M) starting phases: the first trial of each structure starts from their E-map's peaks.
    observed : (B, M) bool, the measured reflections (default: see :func:`~patterson.phasing.measured_mask`).
    free : (B, M) bool, the free set, never read before R-free (default: ``options.free_fraction`` of the
        measured ones).
    progress : called with (trials done, ``options.n_trials``) after each batch.
    """
    options = options_for("dual-space", options)
    s = prepare_starts(f_obs, hkl, cell, shape, options.replace(n_starts=1), observed, free, phi_start)  # (B, M)
    work = ~s.floating
    n_atoms = expected_atoms(f000, s.fo, hkl, cell, work)
    hkl_t = torch.as_tensor(hkl, dtype=torch.float32, device=s.fo.device)
    models, cycles = [], 0
    groups = _groups(group, options.symmetry)
    for b in range(s.fo.shape[0]):
        problems = [make_problem(s.fo[b], work[b], hkl, cell, options, float(n_atoms[b]), g) for g in groups]
        start = None if phi_start is None else s.phi[b, torch.as_tensor(problems[0].strong_idx)].float()
        small = math.prod(problems[0].shape) * options.n_starts < SMALL_BATCH
        with runtime.torch_threads(1 if small else None):
            found = search(problems, options, start, progress)
        e_calc = point_structure_factors(*expand(found.problem, found.frac[None], found.weight[None]), hkl_t)  # (1, M)
        log.info("dual-space: %d trials in %.1f s; best extended CC_all %.3f, CC_weak %.3f (median of the trials "
                 "%.3f, %.3f), CC_free %.3f%s", len(found.cc_all), found.seconds, *found.best,
                 float(np.median(found.cc_all)), float(np.median(found.cc_weak)), free_correlation(s, b, e_calc),
                 ", a clear solution" if found.stood_out else "")  # fmt: skip
        models.append(e_calc[0].to(s.ctype))
        cycles += found.cycles
    return model_result(s, torch.stack(models), (f000, options.n_polish, shape), options.select, ("dual-space", cycles))


def model_result(s, e_calc: torch.Tensor, polish: tuple, select: str, run: tuple[str, int],
                 kind: str = "map") -> PhasingResult:  # fmt: skip
    """The :class:`PhasingResult` of phases from a model of atoms: its E_calc (B, M) brought to F and polished
    (``polish`` = (F(000) or None, cycles, grid shape); see :func:`_on_f`), the work amplitudes imposed, the map
    made; ``run`` = (method, cycles); ``kind`` the verdict's (dual-space's trials are judged as maps, a refined
    model as a model: :func:`~patterson.phasing.validation.verdict`)."""
    f = _on_f(s, e_calc, *polish)  # (B, 1 + M)
    final = impose_amplitudes(s.fo, s.floating, f[:, 1:])
    final = density_from_f(torch.cat([f[:, :1], final], dim=-1), with_000(s.hkl), s.cell, polish[2])
    return s.result(final, f[:, 1:], select, *run, kind)


def free_correlation(s, b: int, e_calc: torch.Tensor) -> float:
    """CC of E_obs² and |E_calc|² (e_calc (1, M)) over structure ``b``'s free reflections, which the trials never
    read: the figure the search did not fit (NaN without free reflections). Read only once the phases are fixed."""
    free = s.free[b]
    if int(free.sum()) < 2:
        return math.nan
    e_obs = normalised_amplitudes(s.f_obs[b : b + 1], s.hkl, s.cell, "E", mask=s.imposed[b : b + 1])[0]
    return float(correlation(e_obs[free].float(), e_calc[:, free])[0])


def _groups(group: SpaceGroup | None, symmetry: str) -> list[SpaceGroup | None]:
    """The groups the trials work in, in turn: the space group and P1 (``alternate``), one of them (``group``,
    ``p1``); P1 alone when the group is P1 or not known."""
    if group is None or group.is_p1 or symmetry == "p1":
        return [None]
    return [group] if symmetry == "group" else [group, None]


def _on_f(s, e_calc: torch.Tensor, f000, n_polish: int, shape) -> torch.Tensor:
    """The best trials' E_calc (B, M) brought to F: the work amplitudes with their phases, the floating reflections
    (free, unmeasured) as E_calc times the rms |F| of their resolution shell (from the work set), F(000) at ``f000``
    (0 when not given); then ``n_polish`` cycles of positivity. Returns (B, 1 + M) with F(000) first."""
    work = ~s.floating
    ones = torch.where(work, s.fo, torch.ones_like(s.fo))  # the floating amplitudes never enter the shell means
    rms = ones / normalised_amplitudes(ones, s.hkl, s.cell, "E", mask=work).clamp_min(1e-30)  # (B, M)
    f = torch.where(work, torch.polar(s.fo, torch.angle(e_calc)).to(s.ctype), e_calc * rms)
    start = torch.zeros_like(f[:, :1]) if f000 is None else torch.as_tensor(f000).to(f).reshape(-1, 1).expand(
        f.shape[0], 1)  # fmt: skip
    return positivity_polish(torch.cat([start, f], dim=-1), s.fo, s.floating, s.hkl, s.cell, shape, n_polish)
