"""Cross-validation of phasing (Brünger's R-free) and the verdict that tells solved from unsolved.

A phasing method imposes the observed amplitudes of the *work* set only; the *free* set, a few per cent of the
measured reflections spread evenly over resolution, floats like an unmeasured reflection. How well the final
density predicts the free amplitudes then measures what the method could not fit: a density that matches the work
amplitudes by over-fitting (a support as large as a packed cell, unmeasured reflections left free) predicts the free
ones no better than chance.

- :func:`free_set` — a seeded free set, stratified in resolution, whole symmetry orbits at a time.
- :func:`cross_validate` — R-work, R-free, the R-free that random phases would give at this completeness (from
  the map itself: each free reflection paired with its resolution neighbours), the free-set |E|² correlation, map
  skewness, and the verdict.
- :func:`verdict` — ``solved``, ``uncertain`` or ``not solved`` from those figures; thresholds calibrated on
  held-out entries by ``benchmarks/verdict.py`` (docs/evaluation.md).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from patterson.cells import Cell
from patterson.errors import PattersonError
from patterson.evaluation.metrics import align

FREE_FRACTION = 0.05  # share of the measured reflections (or orbits) held out
MIN_FREE = 50  # at least this many free reflections ...
MAX_FREE_FRACTION = 0.1  # ... where that is at most this share of the data
MIN_MEASURED = 20  # fewer measured reflections cannot be phased and validated

VERDICTS = ("solved", "uncertain", "not solved")
# The verdict's score: q = R-free / (R-free of random phases), times (2 − agreement) when several starts ran
# (agreement: how well the best other start reproduces the map; 1 = the same map). At most SOLVED_* is a solution,
# above UNSOLVED_* none; between them the data cannot tell. Calibrated by benchmarks/verdict.py on held-out
# validation entries of both packings, 1.0–2.5 Å, clean and degraded (benchmarks/results/verdict.json).
SOLVED_RATIO = 0.335  # q alone (one start: the hybrid, the network)
UNSOLVED_RATIO = 0.389
SOLVED_SCORE = 0.408  # q·(2 − agreement)
UNSOLVED_SCORE = 0.705
# Phases from a refined atomic model (the fragments route: a peptide placed, built and refined) are judged by the
# same q against their own thresholds: a model lacks the solvent (and any water it did not find) of a real crystal,
# so even a right one keeps a higher R-free than a map that imposes every work amplitude. Calibrated by
# benchmarks/model_verdict.py on every model the route built for held-out realistic peptide crystals (measurement
# error, waters; benchmarks/results/model_verdict.json).
MODEL_SOLVED_RATIO = 0.487
MODEL_UNSOLVED_RATIO = 0.869
KINDS = ("map", "model")  # what made the phases: a map's density (the default), or a refined model of atoms
BLOCK = 8  # free reflections per block of resolution neighbours in the random-phase reference


def check_free_fraction(fraction: float) -> float:
    """The free fraction, checked: it must lie in (0, 0.5]."""
    fraction = float(fraction)
    if not (math.isfinite(fraction) and 0.0 < fraction <= 0.5):
        raise PattersonError(f"the free fraction must lie in (0, 0.5], got {fraction:g}")
    return fraction


def n_free_for(n: int, fraction: float = FREE_FRACTION) -> int:
    """How many of ``n`` measured reflections (or orbits) go to the free set: ``fraction`` of them, raised to
    :data:`MIN_FREE` where that stays within :data:`MAX_FREE_FRACTION` of the data; at least one."""
    base = math.ceil(check_free_fraction(fraction) * n)
    return int(max(1, min(n - 1, max(base, min(MIN_FREE, math.floor(MAX_FREE_FRACTION * n))))))


def free_set(
    hkl: np.ndarray,
    cell: Cell,
    measured: torch.Tensor | np.ndarray | None = None,
    fraction: float = FREE_FRACTION,
    seed: int = 0,
    orbits: np.ndarray | None = None,
) -> torch.Tensor:
    """A seeded free set of measured reflections, spread evenly over resolution; (B, M) bool.

    The measured reflections (or, with ``orbits`` (M,) int, the symmetry orbits they belong to: every member of an
    orbit shares its flag) are sorted by 1/d² and cut into :func:`n_free_for` consecutive blocks of equal count;
    one drawn at random from each block is free. ``measured`` is (M,) or (B, M) bool (default: all).
    """
    hkl = np.asarray(hkl)
    m = len(hkl)
    mask = np.ones((1, m), dtype=bool) if measured is None else np.asarray(torch.as_tensor(measured).cpu(), bool)
    mask = mask.reshape(-1, m)
    groups = np.arange(m) if orbits is None else np.unique(np.asarray(orbits), return_inverse=True)[1].reshape(-1)
    s2 = cell.inv_d2(hkl)
    rng = np.random.default_rng(seed)
    out = np.zeros_like(mask)
    for b, row in enumerate(mask):
        g = np.unique(groups[row])  # the orbits with a measured member
        if len(g) < 2:
            raise PattersonError(f"only {int(row.sum())} measured reflections: too few for a free set")
        g_s2 = np.full(groups.max() + 1, np.inf)
        np.minimum.at(g_s2, groups[row], s2[row])
        order = g[np.argsort(g_s2[g], kind="stable")]
        k = n_free_for(len(order), fraction)
        block = np.arange(len(order)) * k // len(order)  # (G,) 0..k-1, equal counts
        key = rng.random(len(order))
        pick = np.lexsort((key, block))  # by block, then at random within it
        first = np.r_[True, block[pick][1:] != block[pick][:-1]]
        free_groups = order[pick[first]]
        out[b] = np.isin(groups, free_groups) & row
    return torch.from_numpy(out)


def check_free(free: torch.Tensor, measured: torch.Tensor) -> None:
    """A free set must leave work reflections and hold at least one measured reflection per structure."""
    if (measured & ~free).sum(-1).min() < MIN_MEASURED:
        raise PattersonError(f"fewer than {MIN_MEASURED} measured work reflections: too few to phase")
    if not (free & measured).any(-1).all():
        raise PattersonError("the free set marks no measured reflection free")


_FIGURES = ("r_work", "r_free", "r_free_random", "agreement", "cc_free", "skewness")


@dataclass(frozen=True)
class CrossValidation:
    """Figures of merit per structure (B,): R over the work set (imposed) and the free set (never imposed), the
    R-free that random phases would give here (pairs of resolution neighbours), the agreement of the best other
    start with this map (NaN after one start), the correlation of |E|² of the map and the data on the free set
    (≈ σA², 0 for random phases), map skewness, and the verdict."""

    r_work: torch.Tensor
    r_free: torch.Tensor
    r_free_random: torch.Tensor
    agreement: torch.Tensor
    cc_free: torch.Tensor
    skewness: torch.Tensor
    verdict: tuple[str, ...]

    @staticmethod
    def concatenate(parts: list[CrossValidation]) -> CrossValidation:
        """Several batches' figures as one."""
        tensors = {k: torch.cat([getattr(p, k) for p in parts]) for k in _FIGURES}
        return CrossValidation(**tensors, verdict=tuple(v for p in parts for v in p.verdict))

    def rows(self) -> dict[str, list]:
        """Per-example columns: r_work, r_free, r_free_random, agreement, cc_free, skewness (floats), verdict."""
        out: dict[str, list] = {k: getattr(self, k).tolist() for k in _FIGURES}
        out["verdict"] = list(self.verdict)
        return out


def skewness(rho: torch.Tensor) -> torch.Tensor:
    """Third standardised moment of each map (B, X, Y, Z) → (B,): atoms make it large, random phases ≈ 0."""
    flat = rho.flatten(1)
    centred = flat - flat.mean(-1, keepdim=True)
    return (centred**3).mean(-1) / (centred**2).mean(-1).clamp_min(1e-30) ** 1.5


def _scaled_residuals(f_obs: torch.Tensor, fc: torch.Tensor, work: torch.Tensor) -> torch.Tensor:
    """k|F_calc| with the least-squares scale k of the work set; (B, M)."""
    w = work.to(f_obs.dtype)
    k = (w * f_obs * fc).sum(-1) / (w * fc * fc).sum(-1).clamp_min(1e-30)
    return k[:, None] * fc


def _r(f_obs: torch.Tensor, kfc: torch.Tensor, sel: torch.Tensor) -> torch.Tensor:
    s = sel.to(f_obs.dtype)
    return (s * (f_obs - kfc).abs()).sum(-1) / (s * f_obs).sum(-1).clamp_min(1e-30)


def r_work_free(
    f_obs: torch.Tensor, f_calc: torch.Tensor, work: torch.Tensor, free: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """(R-work, R-free) per structure: Σ| |F_obs| − k|F_calc| | / Σ|F_obs| over each set, k fitted on the work set."""
    kfc = _scaled_residuals(f_obs, f_calc.abs(), work)
    return _r(f_obs, kfc, work), _r(f_obs, kfc, free)


def intensity_trend(f: torch.Tensor, mask: torch.Tensor, hkl: np.ndarray, cell: Cell) -> torch.Tensor:
    """The mean |F|² at each reflection's resolution, (B, M): means over the ``mask`` reflections in up to 20
    shells of equal count in 1/d², interpolated linearly in 1/d² (in log); |F|² / trend is |E|², free of the
    fall-off with resolution that every map shares with the data."""
    s2 = cell.inv_d2(hkl)
    out = torch.empty(f.shape, dtype=torch.float64)
    i2 = (f.abs() ** 2).detach().cpu().double().numpy()
    sel = np.asarray(mask.cpu(), dtype=bool).reshape(f.shape)
    for b in range(f.shape[0]):
        idx = np.flatnonzero(sel[b])
        idx = idx[np.argsort(s2[idx], kind="stable")]
        shells = np.array_split(idx, max(1, min(20, len(idx) // 25)))
        x = np.array([s2[sh].mean() for sh in shells])
        y = np.log(np.array([max(i2[b, sh].mean(), 1e-30) for sh in shells]))
        out[b] = torch.from_numpy(np.exp(np.interp(s2, x, y)))
    return out.to(device=f.device, dtype=f.real.dtype)


def random_r_free(
    f_obs: torch.Tensor, f_calc: torch.Tensor, work: torch.Tensor, free: torch.Tensor, hkl: np.ndarray, cell: Cell
) -> torch.Tensor:
    """The R-free this map would have if its phases, and so its free amplitudes, were random; (B,).

    A map with random phases predicts free amplitudes that are independent of the measured ones but on the same
    scale at each resolution. So every measured free |F_obs| is paired with the map's |F_calc| of each *other* free
    reflection among its resolution neighbours (the free set in order of 1/d², blocks of :data:`BLOCK`): the mean
    R over those pairs is the reference. It uses no fitted model and nothing hard-coded; it moves with the data,
    the free set, the completeness and the map.
    """
    kfc = _scaled_residuals(f_obs, f_calc.abs(), work)
    s2 = torch.as_tensor(cell.inv_d2(hkl), dtype=f_obs.dtype, device=f_obs.device)
    out = torch.zeros(f_obs.shape[0], dtype=f_obs.dtype, device=f_obs.device)
    for b in range(f_obs.shape[0]):
        idx = torch.nonzero(free[b]).reshape(-1)
        idx = idx[torch.argsort(s2[idx], stable=True)]
        total = torch.zeros((), dtype=f_obs.dtype, device=f_obs.device)
        for block in torch.tensor_split(idx, max(1, len(idx) // BLOCK)):
            fo, fc = f_obs[b, block], kfc[b, block]
            pairs = (fo[:, None] - fc[None, :]).abs()  # (n, n): every observed with every calculated
            n = len(block)
            total = total + (pairs.sum(-1) - pairs.diagonal()).sum() / max(n - 1, 1)
        out[b] = total / f_obs[b, idx].sum().clamp_min(1e-30)
    return out


def free_correlation(
    f_obs: torch.Tensor, f_calc: torch.Tensor, work: torch.Tensor, free: torch.Tensor, hkl: np.ndarray, cell: Cell
) -> torch.Tensor:
    """Correlation of |E_obs|² with |E_calc|² over the free set; (B,). Each |E|² is |F|² over its mean at that
    resolution (:func:`intensity_trend`: the data's from the work set, the map's from all its reflections).

    For a map whose structure factors correlate with the truth by σA this is σA² (acentric Wilson statistics), so
    it measures phase quality on reflections the method never fitted: 0 for random phases, 1 for perfect ones.
    """
    eo2 = f_obs**2 / intensity_trend(f_obs, work, hkl, cell).clamp_min(1e-30)
    ec2 = f_calc.abs() ** 2 / intensity_trend(f_calc, work | free, hkl, cell).clamp_min(1e-30)
    out = torch.zeros(f_obs.shape[0], dtype=f_obs.dtype, device=f_obs.device)
    for b in range(f_obs.shape[0]):
        x, y = eo2[b, free[b]], ec2[b, free[b]]
        x, y = x - x.mean(), y - y.mean()
        out[b] = (x * y).sum() / ((x * x).sum() * (y * y).sum()).sqrt().clamp_min(1e-30)
    return out


def start_agreement(f_calc: torch.Tensor, hkl: np.ndarray, cell: Cell, n_starts: int) -> torch.Tensor:
    """For each start (B·S,), how well the best other start of the same structure reproduces its map: the map
    correlation of their structure factors after the origin and hand search (``evaluation.metrics.align``).
    Independent random starts that land on the same map have found something the data determine; a run cannot fit
    it. NaN with one start."""
    bs = f_calc.shape[0]
    if n_starts < 2:
        return torch.full((bs,), float("nan"), dtype=torch.float64)
    pairs = [(i, j) for i in range(n_starts) for j in range(i + 1, n_starts)]
    base = torch.arange(bs // n_starts)[:, None] * n_starts  # (B, 1)
    first = (base + torch.tensor([i for i, _ in pairs])).reshape(-1)  # (B·P,)
    second = (base + torch.tensor([j for _, j in pairs])).reshape(-1)
    score = align(f_calc[first], f_calc[second], hkl, cell).score.double().cpu()
    best = torch.full((bs,), -1.0, dtype=torch.float64)
    best.scatter_reduce_(0, first, score, reduce="amax")
    best.scatter_reduce_(0, second, score, reduce="amax")
    return best


def verdict(
    r_free: torch.Tensor,
    r_free_random: torch.Tensor,
    agreement: torch.Tensor | None = None,
    kind: str = "map",
) -> tuple[str, ...]:
    """``solved``, ``uncertain`` or ``not solved`` per structure.

    The score is q = R-free / R-free(random); where several starts ran (``agreement`` finite) it is q·(2 −
    agreement), so a map that no other start reproduces needs a lower R-free. ``solved`` at most
    :data:`SOLVED_SCORE` (q alone: :data:`SOLVED_RATIO`), ``not solved`` above :data:`UNSOLVED_SCORE`
    (:data:`UNSOLVED_RATIO`), ``uncertain`` between (calibrated by benchmarks/verdict.py). Phases of a refined
    atomic model (``kind="model"``) are judged by q against :data:`MODEL_SOLVED_RATIO` and
    :data:`MODEL_UNSOLVED_RATIO` (calibrated by benchmarks/model_verdict.py).
    """
    if kind not in KINDS:
        raise PattersonError(f"unknown kind of phases {kind!r} (choose from {', '.join(KINDS)})")
    ratios = (MODEL_SOLVED_RATIO, MODEL_UNSOLVED_RATIO) if kind == "model" else (SOLVED_RATIO, UNSOLVED_RATIO)
    q = (r_free / r_free_random.clamp_min(1e-30)).double().cpu()
    agree = torch.full_like(q, float("nan")) if agreement is None or kind == "model" else agreement.double().cpu()
    out = []
    for qi, ai in zip(q.tolist(), agree.tolist(), strict=True):
        if math.isfinite(ai):
            x, lo, hi = qi * (2.0 - ai), SOLVED_SCORE, UNSOLVED_SCORE
        else:
            x, (lo, hi) = qi, ratios
        out.append("solved" if x <= lo else "not solved" if x > hi or not math.isfinite(x) else "uncertain")
    return tuple(out)


def cross_validate(
    f_obs: torch.Tensor,
    f_calc: torch.Tensor,
    rho: torch.Tensor,
    work: torch.Tensor,
    free: torch.Tensor,
    hkl: np.ndarray,
    cell: Cell,
    agreement: torch.Tensor | None = None,
    kind: str = "map",
) -> CrossValidation:
    """All figures of merit of B phased structures.

    Parameters
    ----------
    f_obs : (B, M) observed amplitudes. f_calc : (B, M) the structure factors of the method's final, constrained
        density (the one whose free amplitudes were never imposed). rho : (B, X, Y, Z) the final map.
    work, free : (B, M) bool, the imposed and the held-out measured reflections.
    agreement : (B,) :func:`start_agreement` of each structure's chosen start (None: one start).
    kind : what made the phases, ``map`` or ``model`` (the thresholds of :func:`verdict`).
    """
    r_work, r_free = r_work_free(f_obs, f_calc, work, free)
    ref = random_r_free(f_obs, f_calc, work, free, hkl, cell)
    cc = free_correlation(f_obs, f_calc, work, free, hkl, cell)
    agree = torch.full_like(r_free, float("nan")) if agreement is None else agreement.to(r_free)
    return CrossValidation(r_work, r_free, ref, agree, cc, skewness(rho), verdict(r_free, ref, agree, kind))
