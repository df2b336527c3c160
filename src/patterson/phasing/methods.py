"""The phasing methods: classical ones that need no training, and refinement of a network's density with them.

Every method takes observed amplitudes on the Friedel half (``f_obs`` (B, M) ≥ 0, ``hkl`` (M, 3)), the cell and a
grid, and returns a :class:`PhasingResult`: the density, the phases and the figure of merit R against the observed
amplitudes, so that evaluation scores all methods alike. Batches and several random starts run together as one
tensor batch on any device.

- :func:`charge_flip` — Oszlányi & Sütő (2004, 2008): flip the density below δ = k·σ(ρ), restore |F_obs|; the
  weakest reflections keep their computed amplitude and get their phase shifted by +90°; F(000) is free.
- :func:`hio` — Fienup's hybrid input-output (1982) with a shrink-wrap support (Marchesini 2003), positivity,
  F(000) fixed to the electron count, and a final error-reduction polish; :func:`raar` (Luke 2005) and :func:`rrr`
  (Elser's reflect-reflect-relax) are other updates between the same two projections.
- :func:`refine_density` — the hybrid: phases (and a support) from a predicted density, refined by either method.

Cross-validation (:mod:`patterson.phasing.validation`): a seeded free set of measured reflections (5%, at least 50
where the data allow, evenly over resolution) is never imposed; it floats like an unmeasured reflection. R-work
and R-free are R = Σ | |F_obs| − k|F_calc| | / Σ |F_obs| over each set, with F_calc the transform of the final,
constrained density (after the flip for charge flipping; after support and positivity for HIO). The best of the
random starts is the one with the lowest R-free (``select="r_work"`` for the comparison), and each structure gets a
verdict: ``solved``, ``uncertain`` or ``not solved``.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from patterson.cells import Cell
from patterson.errors import PattersonError
from patterson.maps import density_from_f, f_from_density, impose_amplitudes, patterson_from_f
from patterson.phasing.validation import (
    FREE_FRACTION,
    CrossValidation,
    check_free,
    check_free_fraction,
    cross_validate,
    free_set,
    r_work_free,
    start_agreement,
)
from patterson.physics import form_factors

log = logging.getLogger(__name__)

METHODS = ("charge-flip", "hio", "raar", "rrr")
SCHEMES = {"hio": 0.9, "raar": 0.85, "rrr": 0.5}  # the update rules of :func:`hio` and their default β
SELECT = ("r_free", "r_work", "all")  # how the best of several starts is chosen ("all": keep every start)


@dataclass
class PhasingResult:
    """Outcome of a phasing run for B structures.

    rho (B, X, Y, Z) density in e/Å³ (F(000) included where known); phi_rad (B, M) phases of the Friedel half;
    f_calc (B, M) structure factors of the final constrained density; free (B, M) bool, the held-out reflections;
    validation: R-work, R-free, their random-phase reference and the verdict (B,); iterations run; seconds taken.
    """

    rho: torch.Tensor
    phi_rad: torch.Tensor
    f_calc: torch.Tensor
    free: torch.Tensor
    validation: CrossValidation
    method: str
    iterations: int
    seconds: float = 0.0

    @property
    def phi_deg(self) -> torch.Tensor:
        return torch.rad2deg(self.phi_rad)

    @property
    def r_work(self) -> torch.Tensor:
        return self.validation.r_work

    @property
    def r_free(self) -> torch.Tensor:
        return self.validation.r_free

    @property
    def verdict(self) -> tuple[str, ...]:
        return self.validation.verdict


# --- checks and helpers ------------------------------------------------------------------------------------------


def check_amplitudes(f_obs: torch.Tensor | np.ndarray, hkl: np.ndarray, cell: Cell, shape) -> torch.Tensor:
    """Validate observed amplitudes; returns them as a (B, M) float tensor. Raises PattersonError on bad input."""
    f = torch.as_tensor(f_obs)
    if f.ndim == 1:
        f = f[None]
    hkl = np.asarray(hkl)
    if hkl.ndim != 2 or hkl.shape[1] != 3 or len(hkl) == 0:
        raise PattersonError("an empty reflection list: nothing to phase")
    if f.shape[-1] != len(hkl):
        raise PattersonError(f"{f.shape[-1]} amplitudes for {len(hkl)} reflections")
    if f.is_complex():
        raise PattersonError("phasing takes amplitudes |F|, not complex structure factors")
    if not torch.isfinite(f).all():
        raise PattersonError("the amplitudes contain NaN or infinite values")
    if (f < 0).any():
        raise PattersonError("the amplitudes contain negative values")
    if not (f > 0).any(dim=-1).all():
        raise PattersonError("all amplitudes are zero")
    if np.any(np.all(hkl == 0, axis=1)):
        raise PattersonError("give F(000) separately (f000=...), not in the reflection list")
    d = cell.d_spacing(hkl)
    limit = max(cell.a / shape[0], cell.b / shape[1], cell.c / shape[2]) * 2
    if d.min() < limit * (1 - 1e-9):
        raise PattersonError(
            f"d_min {d.min():.3f} Å is finer than the grid holds ({limit:.3f} Å): use a finer grid or cut the data"
        )
    return f if f.is_floating_point() else f.double()


def r_factor(f_obs: torch.Tensor, f_calc: torch.Tensor, work: torch.Tensor | None = None) -> torch.Tensor:
    """R = Σ | |F_obs| − k|F_calc| | / Σ |F_obs| per structure over the ``work`` reflections (B, M) bool (default:
    all), with the least-squares scale k; (B,)."""
    work = torch.ones_like(f_obs, dtype=torch.bool) if work is None else work
    return r_work_free(f_obs, f_calc, work, work)[0]


def wilson_estimate(
    f_obs: torch.Tensor, hkl: np.ndarray, cell: Cell, mask: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Carbon-equivalent atom count and overall B from a Wilson plot: ln(<|F|²> / f_C²) = ln N − B s²/2.

    The fit uses reflections with d < 3 Å where there are enough. Returns (n_atoms (B,), b_iso (B,));
    F(000) ≈ 6 N for a light-atom structure (N counts carbons of equal scattering power, so a C/N/O mixture
    gives somewhat more than its real number of atoms). Used when the electron count is not given. ``mask`` (B, M)
    bool: the reflections to use (the work set; default all), so that held-out amplitudes play no part.
    """
    w = torch.ones_like(f_obs) if mask is None else torch.as_tensor(mask, device=f_obs.device).to(f_obs.dtype)
    s2 = torch.as_tensor(cell.inv_d2(hkl), dtype=f_obs.dtype, device=f_obs.device)  # (M,) = s²
    f_c = form_factors(torch.tensor([6], device=f_obs.device), s2 / 4)[0]  # (M,)
    order = torch.argsort(s2)
    high = order[s2[order] > 1 / 9.0]  # d < 3 Å: the molecular envelope biases lower resolution
    order = high if len(high) >= 40 else order
    bins = torch.tensor_split(order, min(10, max(2, len(order) // 20)))
    xs = torch.stack([s2[b].mean() for b in bins])  # (n_bins,)
    mean_f2 = [(w[:, b] * f_obs[:, b] ** 2).sum(-1) / w[:, b].sum(-1).clamp_min(1) for b in bins]
    ys = torch.stack(
        [torch.log(mf.clamp_min(1e-30) / (f_c[b] ** 2).mean()) for mf, b in zip(mean_f2, bins, strict=True)], dim=-1
    )
    xm, ym = xs.mean(), ys.mean(-1, keepdim=True)
    slope = ((xs - xm) * (ys - ym)).sum(-1) / ((xs - xm) ** 2).sum()
    intercept = ym[:, 0] - slope * xm
    return torch.exp(intercept), (-2 * slope).clamp_min(0.0)


AMPLITUDES = ("F", "E", "sharpened")  # what the phasing imposes: see :func:`normalised_amplitudes`


def normalised_amplitudes(
    f_obs: torch.Tensor, hkl: np.ndarray, cell: Cell, kind: str = "E", mask: torch.Tensor | None = None,
    n_shells: int = 10,
) -> torch.Tensor:  # fmt: skip
    """Amplitudes to phase with, (B, M) from ``f_obs`` (B, M): ``"F"`` as measured; ``"E"`` normalised per resolution
    shell, |E|² = |F|²/⟨|F|²⟩ (point atoms at rest: sharp peaks, what Superflip flips); ``"sharpened"`` with the
    overall Wilson B taken off, F·exp(B s²/4) (atoms keep their form factors). Shell means and B come from the
    ``mask`` (B, M) reflections only (the work set), so the free set plays no part. The zero (unmeasured) stay 0."""
    if kind not in AMPLITUDES:
        raise PattersonError(f"unknown amplitudes {kind!r} (choose from {', '.join(AMPLITUDES)})")
    if kind == "F":
        return f_obs
    w = torch.ones_like(f_obs) if mask is None else torch.as_tensor(mask, device=f_obs.device).to(f_obs.dtype)
    s2 = torch.as_tensor(cell.inv_d2(hkl), dtype=f_obs.dtype, device=f_obs.device)  # (M,)
    if kind == "sharpened":
        _, b_iso = wilson_estimate(f_obs, hkl, cell, mask=w > 0)
        return f_obs * torch.exp(b_iso[:, None] * s2[None] / 4)
    order = torch.argsort(s2)
    out = torch.zeros_like(f_obs)
    for shell in torch.tensor_split(order, max(1, min(n_shells, len(order) // 50))):
        mean = (w[:, shell] * f_obs[:, shell] ** 2).sum(-1) / w[:, shell].sum(-1).clamp_min(1)  # (B,)
        out[:, shell] = f_obs[:, shell] / mean.clamp_min(1e-30).sqrt()[:, None]
    return out


def electron_counts(
    f000: torch.Tensor | float | None, f_obs: torch.Tensor, hkl: np.ndarray, cell: Cell, mask: torch.Tensor
) -> torch.Tensor:
    """F(000) per structure, (B,): ``f000`` as given (a number or (B,)), else 6 N from a Wilson plot of the
    ``mask`` (B, M) reflections (the work set) of ``f_obs`` (B, M)."""
    if f000 is None:
        n_atoms, _ = wilson_estimate(f_obs, hkl, cell, mask=mask)
        f000 = 6.0 * n_atoms
    return torch.as_tensor(f000, dtype=f_obs.dtype, device=f_obs.device).reshape(-1).expand(f_obs.shape[0])


# without an explicit mask of the measured reflections, amplitudes below this fraction of a structure's strongest
# count as unmeasured (missing ones given as zeros, or near zero after a round trip through a float map)
UNMEASURED = 1e-3


def measured_mask(
    f_obs: torch.Tensor, observed: torch.Tensor | None = None, free: torch.Tensor | None = None
) -> torch.Tensor:
    """(B, M) bool: the reflections whose amplitude was measured. ``observed`` when given; else every amplitude
    above :data:`UNMEASURED` × the strongest (missing reflections are stored as zeros), the strongest taken outside
    the ``free`` set (B, M) when one is given, whose members count as measured. Unmeasured reflections are left free
    in the phasing: they keep the amplitude and phase the current density gives them."""
    if observed is not None:
        mask = torch.as_tensor(observed, device=f_obs.device).bool().reshape(f_obs.shape)
    elif free is not None:
        free = torch.as_tensor(free, device=f_obs.device).bool().expand_as(f_obs)
        top = f_obs.masked_fill(free, 0).amax(-1, keepdim=True)
        mask = free | (~free & (f_obs > UNMEASURED * top))
    else:
        mask = f_obs > UNMEASURED * f_obs.amax(-1, keepdim=True)
    if not mask.any(-1).all():
        raise PattersonError("no measured amplitudes to phase")
    return mask


def _with_000(hkl: np.ndarray) -> np.ndarray:
    return np.concatenate([np.zeros((1, 3), dtype=hkl.dtype), hkl])


def _random_phases(shape, generator: torch.Generator, dtype, device) -> torch.Tensor:
    return torch.rand(shape, generator=generator, dtype=dtype).to(device) * (2 * math.pi)


def _starts(f_obs: torch.Tensor, free: torch.Tensor, phi_start, n_starts: int, seed: int):
    """The starts of a batch: ``phi_start`` (one start per structure) or ``n_starts`` random phase sets, with the
    amplitudes and the mask of unmeasured reflections repeated to match. Returns (phi, fo, free, n_starts), the
    first three (B·S, M)."""
    b, m = f_obs.shape
    if phi_start is not None:
        n_starts = 1
        phi = torch.as_tensor(phi_start, dtype=f_obs.dtype, device=f_obs.device).reshape(b, m)
    else:
        gen = torch.Generator().manual_seed(seed)
        phi = _random_phases((b * n_starts, m), gen, f_obs.dtype, f_obs.device)
    return phi, f_obs.repeat_interleave(n_starts, 0), free.repeat_interleave(n_starts, 0), n_starts


def held_out(
    f_obs: torch.Tensor,
    hkl: np.ndarray,
    cell: Cell,
    observed: torch.Tensor | None = None,
    free: torch.Tensor | None = None,
    free_fraction: float = FREE_FRACTION,
    seed: int = 0,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(measured, free), both (B, M) bool: the measured reflections (see :func:`measured_mask`) and the free set
    among them, ``free`` when given, else :func:`~patterson.phasing.validation.free_set` drawn with ``seed``."""
    measured = measured_mask(f_obs, observed, free)
    if free is None:
        free = free_set(hkl, cell, measured, check_free_fraction(free_fraction), seed)
    free = torch.as_tensor(free, device=f_obs.device).bool().expand_as(measured) & measured
    check_free(free, measured)
    return measured, free


def _best_of_starts(
    f_calc: torch.Tensor, fo: torch.Tensor, work: torch.Tensor, free: torch.Tensor, n_starts: int, select: str
) -> torch.Tensor:
    """Index (B,) of each structure's best start, by R-free (or R-work with ``select="r_work"``; every start, (B·S,),
    with ``"all"``). Inputs are batched as (B·S, ...); f_calc (B·S, M) is the constrained density's transform
    without F(000)."""
    if select not in SELECT:
        raise PattersonError(f"unknown selection {select!r} (choose from {', '.join(SELECT)})")
    if select == "all":
        return torch.arange(fo.shape[0], device=fo.device)
    r_work, r_free = r_work_free(fo, f_calc, work, free)
    r = (r_free if select == "r_free" else r_work).reshape(-1, n_starts)
    return torch.arange(r.shape[0], device=r.device) * n_starts + r.argmin(-1)


def _result(
    rho, f_calc, fo, work, free, hkl, cell, n_starts: int, select: str, method: str, iterations: int, t0: float
) -> PhasingResult:
    """The :class:`PhasingResult` of each structure's best start (inputs (B·S, ...) as in :func:`_best_of_starts`),
    cross-validated."""
    pick = _best_of_starts(f_calc, fo, work, free, n_starts, select)
    agreement = start_agreement(f_calc, hkl, cell, n_starts)[pick]
    rho, f_calc, fo, work, free = rho[pick], f_calc[pick], fo[pick], work[pick], free[pick]
    validation = cross_validate(fo, f_calc, rho, work, free, hkl, cell, agreement)
    log.debug("%s: R-work %s, R-free %s", method, validation.r_work.tolist(), validation.r_free.tolist())
    return PhasingResult(
        rho=rho,
        phi_rad=torch.angle(f_calc),
        f_calc=f_calc,
        free=free,
        validation=validation,
        method=method,
        iterations=iterations,
        seconds=time.perf_counter() - t0,
    )


def positivity_polish(
    f: torch.Tensor,
    fo: torch.Tensor,
    floating: torch.Tensor,
    hkl: np.ndarray,
    cell: Cell,
    shape,
    n_cycles: int,
    centric: bool = False,
    lde_sigma: float | None = None,
) -> torch.Tensor:
    """Error reduction without a support: ``n_cycles`` of (the observed amplitudes with the phases of ``f``, the
    ``floating`` reflections and F(000) as ``f`` has them) → density → its positive part → structure factors.
    f (B, 1 + M) complex with F(000) first, fo and floating (B, M); returns the new f (B, 1 + M). ``centric``: phases
    0 or π (see :func:`~patterson.maps.impose_amplitudes`). With ``lde_sigma`` the positive part is also damped
    by low-density elimination (Shiono & Woolfson 1992): ρ(1 − exp(−ρ²/2ρc²)), ρc = lde_sigma · σ(ρ)."""
    hkl0 = _with_000(hkl)
    for _ in range(n_cycles):
        rho = density_from_f(
            torch.cat([f[:, :1], impose_amplitudes(fo, floating, f[:, 1:], centric)], dim=-1), hkl0, cell, shape
        )
        kept = rho.clamp_min(0)
        if lde_sigma is not None:
            rho_c = lde_sigma * rho.flatten(1).std(-1)[:, None, None, None]
            kept = kept * (1 - torch.exp(-(rho**2) / (2 * rho_c**2)))
        f = f_from_density(kept, hkl0, cell)
    return f


# --- charge flipping -----------------------------------------------------------------------------------------


def _flip_cycles(
    f: torch.Tensor,
    fo: torch.Tensor,
    floating: torch.Tensor,
    weak: torch.Tensor,
    grid: tuple,
    rule: dict,
    n_iter: int,
    restarts: int,
    stop_early: bool,
    seed: int,
    progress: Callable[[int, int], None] | None,
) -> tuple[torch.Tensor, int]:
    """The flipping cycles from ``f`` (B·S, 1 + M; F(000) first) against ``fo``: each start's best iterate by
    R-work (R-free only chooses between starts) and the cycles run. With ``restarts`` or ``stop_early`` a
    :class:`Convergence` watch begins unconverged starts again or stops when all have converged."""
    hkl, cell, shape = grid
    work = ~floating
    best_r = torch.full((fo.shape[0],), float("inf"), dtype=fo.dtype, device=fo.device)
    best_f = torch.zeros_like(f)
    watch = Convergence(fo.shape[0], n_iter // (max(0, restarts) + 1), torch.Generator().manual_seed(seed + 1),
                        restarts > 0)  # fmt: skip
    for it in range(n_iter):
        g, f = _flip(f, fo, floating, weak, hkl, cell, shape, **rule)
        r = r_factor(fo, g[:, 1:], work)
        better = r < best_r
        best_f[better] = g[better]
        best_r = torch.where(better, r, best_r)
        if progress is not None:
            progress(it + 1, n_iter)
        if not (restarts or stop_early):  # no convergence watch: no per-cycle copy of R to the CPU
            continue
        again = watch.update(r, best_r).to(fo.device)
        if again.any():  # new random phases for the starts that did not converge in their part of the budget
            phi_new = _random_phases(f[again, 1:].shape, watch.generator, fo.dtype, fo.device)
            f[again, 1:] = torch.polar(fo[again] * work[again], phi_new).to(f.dtype)
            best_r[again] = float("inf")
        elif stop_early and watch.finished:
            break
    return best_f, it + 1


def charge_flip(
    f_obs: torch.Tensor,
    hkl: np.ndarray,
    cell: Cell,
    shape: tuple[int, int, int],
    n_iter: int = 300,
    n_starts: int = 4,
    delta_sigma: float | None = None,
    weak_fraction: float = 0.2,
    n_polish: int = 30,
    phi_start: torch.Tensor | None = None,
    observed: torch.Tensor | None = None,
    free: torch.Tensor | None = None,
    free_fraction: float = FREE_FRACTION,
    select: str = "r_free",
    seed: int = 0,
    progress: Callable[[int, int], None] | None = None,
    centric: bool = False,
    amplitudes: str = "F",
    delta_fraction: float | None = None,
    polish: str = "positivity",
    restarts: int = 0,
    stop_early: bool = False,
) -> PhasingResult:
    """Charge flipping from amplitudes (Oszlányi & Sütő 2004; weak reflections +90°, Oszlányi & Sütő 2005/2008).

    Parameters
    ----------
    f_obs : (B, M) observed amplitudes on the Friedel half ``hkl`` (no F(000); it floats freely).
    cell, shape : the cell and the grid (X, Y, Z), which must hold all reflections.
    n_iter : iterations per start. n_starts : random starts per structure; the lowest R-free wins (``select``,
        as for :func:`hio`).
    delta_sigma : δ = delta_sigma · σ(ρ), the flipping threshold (None: :data:`DELTA_SIGMA` of the amplitudes).
    weak_fraction : share of the weakest reflections that keep |F_calc| and get +90° on their phase.
    n_polish : final cycles of positivity with the observed amplitudes, from each start's best flipping result.
    phi_start : (B, M) starting phases in radians (then one start each, as for the hybrid).
    observed : (B, M) bool, the measured reflections (default: see :func:`measured_mask`); the others float freely.
    free : (B, M) bool, the free set, never imposed (default: ``free_fraction`` of the measured ones, seeded).
    centric : phase a centrosymmetric structure with its inversion centre at the origin: phases 0 or π only
        (the weak reflections then keep their sign instead of turning by 90°).
    amplitudes : what is flipped: ``"F"``, ``"E"`` or ``"sharpened"`` (:func:`normalised_amplitudes`); with E or
        sharpened amplitudes :data:`F_CYCLES` more flipping cycles on F follow, then the polish on F, so the map,
        R-work and R-free are always on F.
    delta_fraction : δ from the map instead of from σ: the value below which this share of the voxels lies (its
        sign flipped); None: δ = delta_sigma · σ(ρ).
    polish : ``"positivity"`` (error reduction with ρ ≥ 0) or ``"lde"`` (low-density elimination, Shiono &
        Woolfson 1992: ρ(1 − exp(−ρ²/2ρc²)) with ρc = δ).
    restarts : split the ``n_iter`` budget in ``restarts + 1`` parts; a start that has not converged by the end of
        a part begins again from new random phases (:class:`Convergence` says when a start has converged).
    stop_early : stop when every start has converged and run :data:`AFTER_CONVERGENCE` more cycles.
    """
    t0 = time.perf_counter()
    if polish not in POLISHES:
        raise PattersonError(f"unknown polish {polish!r} (choose from {', '.join(POLISHES)})")
    f_obs = check_amplitudes(f_obs, hkl, cell, shape)
    measured, held = held_out(f_obs, hkl, cell, observed, free, free_fraction, seed)
    ctype = torch.complex128 if f_obs.dtype == torch.float64 else torch.complex64
    phi, fo, floating, n_starts = _starts(f_obs, ~measured | held, phi_start, n_starts, seed)  # (B·S, M)
    work = ~floating
    fo_flip = normalised_amplitudes(fo, hkl, cell, amplitudes, mask=work)  # (B·S, M): what is flipped
    f_rule = {"delta_sigma": DELTA_SIGMA["F"], "delta_fraction": delta_fraction, "centric": centric}
    delta_sigma = DELTA_SIGMA[amplitudes] if delta_sigma is None else float(delta_sigma)
    rule = f_rule | {"delta_sigma": delta_sigma}
    f = torch.polar(fo_flip * work, phi).to(ctype)  # the floating reflections start at 0
    f = torch.cat([torch.zeros_like(f[:, :1]), f], dim=-1)  # F(000) starts at 0
    weak = _weakest(fo_flip, floating, weak_fraction)
    loop = {"n_iter": n_iter, "restarts": restarts, "stop_early": stop_early, "seed": seed, "progress": progress}
    best_f, iterations = _flip_cycles(f, fo_flip, floating, weak, (hkl, cell, shape), rule, **loop)
    if amplitudes != "F":  # back to F: a few cycles let F(000) and the scale settle (as Superflip does)
        f, weak = best_f, _weakest(fo, floating, weak_fraction)
        for _ in range(F_CYCLES):
            best_f, f = _flip(torch.cat([f[:, :1], impose_amplitudes(fo, floating, f[:, 1:], centric)], -1), fo,
                              floating, weak, hkl, cell, shape, **f_rule)  # fmt: skip
    lde_sigma = f_rule["delta_sigma"] if polish == "lde" else None
    f = positivity_polish(best_f, fo, floating, hkl, cell, shape, n_polish, centric, lde_sigma)
    # the final map: imposed amplitudes with the polished phases, F(000) and the floating ones as the density has them
    final = impose_amplitudes(fo, floating, f[:, 1:], centric)
    final = density_from_f(torch.cat([f[:, :1], final], dim=-1), _with_000(hkl), cell, shape)
    free_s = held.repeat_interleave(n_starts, 0)
    return _result(final, f[:, 1:], fo, work, free_s, hkl, cell, n_starts, select, "charge-flip", iterations, t0)


CONVERGED = 0.7  # a start has converged when its best R-work is below this fraction of its early plateau
AFTER_CONVERGENCE = 50  # cycles every start runs after converging before ``stop_early`` stops


class Convergence:
    """Convergence of charge-flipping starts from R-work alone (the free set is not read): the mean R-work of
    cycles 5–25 after a start (re)begins is its plateau; it has converged once its best R-work falls below
    :data:`CONVERGED` × the plateau (the phase transition of Oszlányi & Sütő). With ``restart``, :meth:`update`
    names the starts to begin again: those not converged after ``part`` cycles."""

    def __init__(self, n: int, part: int, generator: torch.Generator, restart: bool):
        self.part, self.generator, self.restart = max(30, part), generator, restart
        self.age = torch.zeros(n, dtype=torch.long)
        self.total = torch.zeros(n, dtype=torch.float64)
        self.count = torch.zeros(n, dtype=torch.float64)
        self.since = torch.full((n,), -1, dtype=torch.long)  # cycles since convergence (-1: not yet)

    def update(self, r: torch.Tensor, best_r: torch.Tensor) -> torch.Tensor:
        """Record one cycle's R-work (B,); returns (B,) bool, the starts to begin again now."""
        r, best_r = r.detach().cpu().double(), best_r.detach().cpu().double()
        self.age += 1
        window = (self.age >= 5) & (self.age <= 25)
        self.total += torch.where(window, r, torch.zeros_like(r))
        self.count += window
        plateau = torch.where(self.age > 25, self.total / self.count.clamp_min(1), torch.full_like(r, math.nan))
        done = torch.isfinite(plateau) & (best_r < CONVERGED * plateau)
        self.since = torch.where(done, self.since + 1, torch.full_like(self.since, -1))
        again = ~done & (self.age >= self.part) & self.restart
        self.age[again], self.total[again], self.count[again] = 0, 0.0, 0.0
        return again

    @property
    def finished(self) -> bool:
        """Every start converged at least :data:`AFTER_CONVERGENCE` cycles ago."""
        return bool((self.since >= AFTER_CONVERGENCE).all())


F_CYCLES = 10  # flipping cycles on F after flipping E or sharpened amplitudes
# δ/σ by what is flipped; measured on 12 atoms in a 10 Å cell at 1 Å (tests/test_phasing.py's problem, 4 starts):
# F solved at 0.8–1.3 (best 0.8), E at 1.1–1.3 but not at 0.8, sharpened at 0.8–1.3; all fail at 1.6
DELTA_SIGMA = {"F": 0.8, "E": 1.2, "sharpened": 0.8}
POLISHES = ("positivity", "lde")


def _weakest(fo: torch.Tensor, floating: torch.Tensor, fraction: float) -> torch.Tensor:
    """(B, M) bool: the ``fraction`` weakest imposed reflections of each row."""
    count = int(round(fraction * fo.shape[1]))
    weak = torch.zeros_like(fo, dtype=torch.bool)
    if count:
        weak.scatter_(1, torch.argsort(fo.masked_fill(floating, math.inf), dim=-1)[:, :count], True)
    return weak & ~floating


def flip_threshold(rho: torch.Tensor, delta_sigma: float, delta_fraction: float | None) -> torch.Tensor:
    """δ (B, 1, 1, 1) for maps (B, X, Y, Z): delta_sigma · σ(ρ), or the ``delta_fraction`` quantile of ρ."""
    flat = rho.flatten(1)
    if delta_fraction is None:
        return delta_sigma * flat.std(-1)[:, None, None, None]
    k = max(1, min(flat.shape[1], int(round(delta_fraction * flat.shape[1]))))
    return flat.kthvalue(k, dim=-1).values[:, None, None, None]


def _flip(f, fo, floating, weak, hkl, cell, shape, delta_sigma, delta_fraction, centric):
    """One charge-flipping cycle from f (B, 1 + M): returns (the flipped density's transform g, the next f)."""
    hkl0 = _with_000(hkl)
    rho = density_from_f(f, hkl0, cell, shape)  # (B, X, Y, Z)
    delta = flip_threshold(rho, delta_sigma, delta_fraction)
    g = f_from_density(torch.where(rho < delta, -rho, rho), hkl0, cell)  # (B, 1 + M)
    turned = g[:, 1:].real.to(g.dtype) if centric else g[:, 1:] * torch.tensor(1j, dtype=g.dtype, device=g.device)
    imposed = impose_amplitudes(fo, floating, g[:, 1:], centric)
    return g, torch.cat([g[:, :1], torch.where(weak, turned, imposed)], dim=-1)


# --- hybrid input-output with shrink-wrap ------------------------------------------------------------------------


def gaussian_blur(rho: torch.Tensor, cell: Cell, sigma: float) -> torch.Tensor:
    """Periodic Gaussian blur of maps (B, X, Y, Z) with width ``sigma`` Å, by FFT."""
    shape = rho.shape[-3:]
    freqs = [torch.fft.fftfreq(n, device=rho.device, dtype=rho.dtype) * n for n in shape[:2]]
    freqs.append(torch.fft.rfftfreq(shape[2], device=rho.device, dtype=rho.dtype) * shape[2])
    h, k, l = torch.meshgrid(*freqs, indexing="ij")
    g = torch.as_tensor(cell.reciprocal_metric, dtype=rho.dtype, device=rho.device)
    s2 = g[0, 0] * h * h + g[1, 1] * k * k + g[2, 2] * l * l + 2 * (g[0, 1] * h * k + g[0, 2] * h * l + g[1, 2] * k * l)
    kernel = torch.exp(-2 * math.pi**2 * sigma**2 * s2)
    return torch.fft.irfftn(torch.fft.rfftn(rho, dim=(-3, -2, -1)) * kernel, s=shape, dim=(-3, -2, -1))


def support_from(rho: torch.Tensor, cell: Cell, sigma: float, threshold: float) -> torch.Tensor:
    """Shrink-wrap support: voxels where the blurred map exceeds ``threshold`` × its maximum; (B, X, Y, Z) bool."""
    blurred = gaussian_blur(rho, cell, sigma)
    top = blurred.flatten(1).max(-1).values[:, None, None, None]
    return blurred > threshold * top


def patterson_support(f_obs: torch.Tensor, hkl0: np.ndarray, cell: Cell, shape, fraction: float) -> torch.Tensor:
    """A starting support: the ``fraction`` of voxels where the (sharpened) Patterson map is highest."""
    f = torch.cat([torch.zeros_like(f_obs[:, :1]), f_obs], dim=-1)  # F(000) left out
    pat = patterson_from_f(f.to(torch.complex128 if f.dtype == torch.float64 else torch.complex64), hkl0, cell, shape)
    flat = pat.flatten(1)
    k = max(1, int(fraction * flat.shape[1]))
    cut = flat.topk(k, dim=-1).values[:, -1:]
    return (flat >= cut).reshape(pat.shape)


def _project(rho, fo, f0, hkl0, cell, shape, floating, centric) -> torch.Tensor:
    """Fourier-magnitude projection: |F_obs| with the current phases, F(000) fixed, the floating ones as they are."""
    g = f_from_density(rho, hkl0, cell)
    new = torch.cat([f0, impose_amplitudes(fo, floating, g[:, 1:], centric)], dim=-1)
    return density_from_f(new, hkl0, cell, shape)


def _support_cycles(
    rho: torch.Tensor,
    support: torch.Tensor,
    projections: tuple[Callable, Callable],
    scheme: str,
    beta: float,
    n_iter: int,
    n_polish: int,
    shrink: dict,
    cell: Cell,
    progress: Callable[[int, int], None] | None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """``n_iter`` cycles of ``scheme`` between the Fourier projection (the first of ``projections``) and the
    support, shrink-wrapped every ``shrink["every"]`` cycles with a blur narrowing from ``sigma_start`` to
    ``sigma_end`` Å; then ``n_polish`` cycles of error reduction with the second projection (onto F). Returns the
    map and the support, (B·S, X, Y, Z) each."""
    project, project_f = projections
    every = shrink["every"]
    n_shrinks = max(1, n_iter // max(every, 1))
    total = n_iter + n_polish
    for it in range(total):
        proj = project(rho) if it < n_iter else project_f(rho)
        inside = support & (proj >= 0)
        if it < n_iter:
            rho = _update(scheme, rho, proj, inside, support, beta)
            if every and (it + 1) % every == 0:
                frac = min(1.0, (it + 1) / every / n_shrinks)
                sigma = shrink["sigma_start"] + (shrink["sigma_end"] - shrink["sigma_start"]) * frac
                support = support_from(torch.where(inside, proj, torch.zeros_like(proj)), cell, sigma,
                                       shrink["threshold"])  # fmt: skip
        else:
            rho = torch.where(inside, proj, torch.zeros_like(proj))  # error reduction
        if progress is not None:
            progress(it + 1, total)
    return rho, support


def hio(
    f_obs: torch.Tensor,
    hkl: np.ndarray,
    cell: Cell,
    shape: tuple[int, int, int],
    f000: torch.Tensor | float | None = None,
    n_iter: int = 400,
    n_starts: int = 4,
    beta: float | None = None,
    shrink_every: int = 20,
    threshold: float = 0.15,
    sigma_start: float = 2.0,
    sigma_end: float = 0.8,
    support_fraction: float = 0.3,
    n_polish: int = 30,
    phi_start: torch.Tensor | None = None,
    support_start: torch.Tensor | None = None,
    observed: torch.Tensor | None = None,
    free: torch.Tensor | None = None,
    free_fraction: float = FREE_FRACTION,
    select: str = "r_free",
    seed: int = 0,
    progress: Callable[[int, int], None] | None = None,
    scheme: str = "hio",
    centric: bool = False,
    amplitudes: str = "F",
) -> PhasingResult:
    """Hybrid input-output with a shrink-wrap support and positivity (Fienup 1982; Marchesini et al. 2003), or with
    ``scheme`` another update between the same two projections: ``raar`` (Luke 2005) or ``rrr`` (Elser's
    reflect-reflect-relax, the difference map with β as its step; Elser 2018).

    Parameters
    ----------
    f_obs : (B, M) observed amplitudes on the Friedel half ``hkl``.
    f000 : electron count in the cell, (B,) or a number; estimated from a Wilson plot of the work set when None.
    n_iter : iterations per start, followed by ``n_polish`` error-reduction iterations.
    beta : the feedback (HIO 0.9, RAAR 0.85, RRR's step 0.5 when None).
    shrink_every, threshold, sigma_start → sigma_end : the shrink-wrap schedule (blur width in Å shrinking
        linearly; support = blurred map above ``threshold`` × max).
    support_fraction : share of the cell in the starting support from the Patterson map (of the work set).
    phi_start, support_start : starting phases (B, M) and support (B, X, Y, Z) for the hybrid (one start each).
    observed : (B, M) bool, the measured reflections (default: see :func:`measured_mask`); the others float freely.
    free : (B, M) bool, the free set, never imposed (default: ``free_fraction`` of the measured ones, seeded).
    select : ``r_free`` (default) or ``r_work``: how the best of ``n_starts`` is chosen; ``all`` keeps every start
        (results (B·S, ...), start s of structure b at b·S + s).
    centric : phases 0 or π only (a centrosymmetric structure with its inversion centre at the origin).
    amplitudes : imposed during the ``n_iter`` iterations: ``"F"``, ``"E"`` or ``"sharpened"``
        (:func:`normalised_amplitudes`; F(000) scaled to match); the ``n_polish`` error-reduction cycles impose F.
    """
    t0 = time.perf_counter()
    if scheme not in SCHEMES:
        raise PattersonError(f"unknown update scheme {scheme!r} (choose from {', '.join(SCHEMES)})")
    beta = SCHEMES[scheme] if beta is None else float(beta)
    f_obs = check_amplitudes(f_obs, hkl, cell, shape)
    measured, held = held_out(f_obs, hkl, cell, observed, free, free_fraction, seed)
    device = f_obs.device
    ctype = torch.complex128 if f_obs.dtype == torch.float64 else torch.complex64
    imposed = measured & ~held
    f000 = electron_counts(f000, f_obs, hkl, cell, imposed)
    hkl0 = _with_000(hkl)
    phi, fo, floating, n_starts = _starts(f_obs, ~imposed, phi_start, n_starts, seed)  # (B·S, M)
    f0 = f000.repeat_interleave(n_starts, 0)[:, None].to(ctype)  # (B·S, 1)
    fo_f, f0_f = fo, f0  # the polish imposes F
    fo, f0 = _phasing_amplitudes(fo, f0, hkl, cell, amplitudes, ~floating)
    if support_start is not None:
        support = torch.as_tensor(support_start, device=device).bool()
    else:
        support = patterson_support(f_obs * imposed, hkl0, cell, shape, support_fraction)
    support = support.repeat_interleave(n_starts, 0)
    f = torch.cat([f0, torch.polar(fo * ~floating, phi).to(ctype)], dim=-1)  # the floating reflections start at 0
    rho = density_from_f(f, hkl0, cell, shape)
    shrink = {"every": shrink_every, "threshold": threshold, "sigma_start": sigma_start, "sigma_end": sigma_end}
    grid = (hkl0, cell, shape, floating, centric)
    projections = (lambda r: _project(r, fo, f0, *grid), lambda r: _project(r, fo_f, f0_f, *grid))
    rho, support = _support_cycles(rho, support, projections, scheme, beta, n_iter, n_polish, shrink, cell, progress)
    total = n_iter + n_polish
    final = torch.where(support & (rho >= 0), rho, torch.zeros_like(rho))
    g = f_from_density(final, hkl0, cell)[:, 1:]
    free_s = held.repeat_interleave(n_starts, 0)
    return _result(final, g, fo_f, ~floating, free_s, hkl, cell, n_starts, select, scheme, total, t0)


def _phasing_amplitudes(fo, f0, hkl, cell, amplitudes: str, work) -> tuple[torch.Tensor, torch.Tensor]:
    """The amplitudes (B, M) and F(000) (B, 1) a support method imposes: F as measured, or E / sharpened ones with
    F(000) on their scale (E: point atoms, E(000) = √N for N carbon equivalents, i.e. F(000) / (6√N))."""
    if amplitudes == "F":
        return fo, f0
    fo_new = normalised_amplitudes(fo, hkl, cell, amplitudes, mask=work)
    if amplitudes == "sharpened":
        return fo_new, f0
    n_atoms, _ = wilson_estimate(fo, hkl, cell, mask=work)
    return fo_new, f0 / (6 * n_atoms.clamp_min(1e-6).sqrt())[:, None].to(f0.dtype)


def _update(scheme: str, rho, proj, inside, support, beta: float) -> torch.Tensor:
    """One step of ``scheme`` from the iterate ``rho`` and its Fourier projection ``proj``; P_S is the support and
    positivity projection (``inside`` = support and proj ≥ 0 says where P_S keeps proj)."""
    if scheme == "hio":
        return torch.where(inside, proj, rho - beta * proj)
    mirrored = 2 * proj - rho  # R_M ρ
    p_s = torch.where(support & (mirrored >= 0), mirrored, torch.zeros_like(mirrored))  # P_S R_M ρ
    if scheme == "raar":  # β/2 (R_S R_M + I) ρ + (1 − β) P_M ρ
        return beta * (p_s - proj + rho) + (1 - beta) * proj
    return rho + beta * (p_s - proj)  # rrr


def raar(f_obs: torch.Tensor, hkl: np.ndarray, cell: Cell, shape, **options) -> PhasingResult:
    """RAAR (Luke 2005) with the shrink-wrap support and positivity of :func:`hio`; ``options`` as there."""
    return hio(f_obs, hkl, cell, shape, scheme="raar", **options)


def rrr(f_obs: torch.Tensor, hkl: np.ndarray, cell: Cell, shape, **options) -> PhasingResult:
    """Elser's RRR / difference map with the shrink-wrap support and positivity of :func:`hio`; ``options`` as
    there."""
    return hio(f_obs, hkl, cell, shape, scheme="rrr", **options)


# --- the hybrid: network density → classical refinement ----------------------------------------------------------


def refine_density(
    rho_start: torch.Tensor,
    f_obs: torch.Tensor,
    hkl: np.ndarray,
    cell: Cell,
    method: str = "hio",
    f000: torch.Tensor | float | None = None,
    support_threshold: float = 0.15,
    support_sigma: float = 1.0,
    **options,
) -> PhasingResult:
    """Refine a predicted density (B, X, Y, Z) against observed amplitudes: its phases start the refinement and,
    for the support methods (HIO, RAAR, RRR), its blurred, thresholded shape is the starting support.

    ``method`` is one of :data:`METHODS`; ``options`` go to that function (e.g. ``n_iter``).
    """
    if method not in METHODS:
        raise PattersonError(f"unknown refinement method {method!r} (choose from {', '.join(METHODS)})")
    rho_start = torch.as_tensor(rho_start)
    if rho_start.ndim == 3:
        rho_start = rho_start[None]
    if not torch.isfinite(rho_start).all():
        raise PattersonError("the starting density contains NaN or infinite values")
    shape = tuple(rho_start.shape[-3:])
    f_obs = torch.as_tensor(f_obs)
    rho_start = rho_start.to(dtype=f_obs.dtype if f_obs.is_floating_point() else torch.float64)
    phi = torch.angle(f_from_density(rho_start, hkl, cell))  # (B, M)
    if method == "charge-flip":
        return charge_flip(f_obs, hkl, cell, shape, phi_start=phi, **options)
    support = support_from(rho_start, cell, support_sigma, support_threshold)
    options.setdefault("n_iter", 400)  # as one classical start: on dense-protein 200 were too few (measured)
    return hio(f_obs, hkl, cell, shape, f000=f000, phi_start=phi, support_start=support, scheme=method, **options)


def phase(method: str, f_obs: torch.Tensor, hkl: np.ndarray, cell: Cell, shape, **options) -> PhasingResult:
    """Run a classical method by name (``"charge-flip"``, ``"hio"``, ``"raar"`` or ``"rrr"``)."""
    if method == "charge-flip":
        return charge_flip(f_obs, hkl, cell, shape, **options)
    if method in SCHEMES:
        return hio(f_obs, hkl, cell, shape, scheme=method, **options)
    raise PattersonError(f"unknown phasing method {method!r} (choose from {', '.join(METHODS)})")
