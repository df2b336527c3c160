"""Charge flipping (Oszlányi & Sütő 2004, 2008) and the positivity polish that ends the classical methods.

:func:`charge_flip` flips the density below δ = k·σ(ρ) and restores |F_obs|; the weakest reflections keep their
computed amplitude and get their phase shifted by +90°; F(000) is free. How it runs is a
:class:`~patterson.phasing.options.FlipOptions`.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import torch

from patterson.cells import Cell
from patterson.maps import density_from_f, f_from_density, impose_amplitudes
from patterson.phasing.amplitudes import normalised_amplitudes
from patterson.phasing.options import DELTA_SIGMA, FlipOptions, options_for
from patterson.phasing.starts import PhasingResult, prepare_starts, r_factor, random_phases, with_000

F_CYCLES = 10  # flipping cycles on F after flipping E or sharpened amplitudes
# a start has converged when its best R-work falls below this fraction of its early plateau, by what is flipped:
# on E the drop is smaller (12 real data sets: R-work from a 0.49–0.68 plateau to 0.93–0.74 of it, and 0.96–1.0 of
# it before the transition)
CONVERGED = {"F": 0.7, "E": 0.93, "sharpened": 0.7}
AFTER_CONVERGENCE = 50  # cycles a converged start runs before ``stop_early`` stops


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
    hkl0 = with_000(hkl)
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


def charge_flip(
    f_obs: torch.Tensor,
    hkl: np.ndarray,
    cell: Cell,
    shape: tuple[int, int, int],
    options: FlipOptions | None = None,
    *,
    phi_start: torch.Tensor | None = None,
    observed: torch.Tensor | None = None,
    free: torch.Tensor | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> PhasingResult:
    """Charge flipping from amplitudes (Oszlányi & Sütő 2004; weak reflections +90°, Oszlányi & Sütő 2005/2008).

    Parameters
    ----------
    f_obs : (B, M) observed amplitudes on the Friedel half ``hkl`` (no F(000); it floats freely).
    cell, shape : the cell and the grid (X, Y, Z), which must hold all reflections.
    options : how it runs (:class:`~patterson.phasing.options.FlipOptions`; None: the defaults). With E or
        sharpened amplitudes :data:`F_CYCLES` more flipping cycles on F follow, then the polish on F, so the map,
        R-work and R-free are always on F.
    phi_start : (B, M) starting phases in radians (then one start each, as for the hybrid).
    observed : (B, M) bool, the measured reflections (default: see :func:`~patterson.phasing.measured_mask`); the
        others float freely.
    free : (B, M) bool, the free set, never imposed (default: ``options.free_fraction`` of the measured ones).
    progress : called with (iteration, total) after each cycle.
    """
    options = options_for("charge-flip", options)
    s = prepare_starts(f_obs, hkl, cell, shape, options, observed, free, phi_start)  # (B·S, M)
    fo, floating, work, centric = s.fo, s.floating, ~s.floating, options.centric
    fo_flip = normalised_amplitudes(fo, hkl, cell, options.amplitudes, mask=work)  # (B·S, M): what is flipped
    f_rule = {"delta_sigma": DELTA_SIGMA["F"], "delta_fraction": options.delta_fraction, "centric": centric}
    rule = f_rule | {"delta_sigma": options.threshold_sigma}
    f = torch.polar(fo_flip * work, s.phi).to(s.ctype)  # the floating reflections start at 0
    f = torch.cat([torch.zeros_like(f[:, :1]), f], dim=-1)  # F(000) starts at 0
    weak = _weakest(fo_flip, floating, options.weak_fraction)
    best_f, iterations = _flip_cycles(f, fo_flip, floating, weak, (hkl, cell, shape), rule, options, progress)
    if options.amplitudes != "F":  # back to F: a few cycles let F(000) and the scale settle (as Superflip does)
        best_f = _flip_on_f(best_f, fo, floating, (hkl, cell, shape), f_rule, options.weak_fraction)
    lde_sigma = f_rule["delta_sigma"] if options.polish == "lde" else None
    f = positivity_polish(best_f, fo, floating, hkl, cell, shape, options.n_polish, centric, lde_sigma)
    # the final map: imposed amplitudes with the polished phases, F(000) and the floating ones as the density has them
    final = impose_amplitudes(fo, floating, f[:, 1:], centric)
    final = density_from_f(torch.cat([f[:, :1], final], dim=-1), with_000(hkl), cell, shape)
    return s.result(final, f[:, 1:], options.select, "charge-flip", iterations)


def _flip_cycles(
    f: torch.Tensor,
    fo: torch.Tensor,
    floating: torch.Tensor,
    weak: torch.Tensor,
    grid: tuple,
    rule: dict,
    options: FlipOptions,
    progress: Callable[[int, int], None] | None,
) -> tuple[torch.Tensor, int]:
    """The flipping cycles from ``f`` (B·S, 1 + M; F(000) first) against ``fo``: each start's best iterate by
    R-work (R-free only chooses between starts) and the cycles run. With ``options.restarts`` or
    ``options.stop_early`` a :class:`Convergence` watch begins unconverged starts again or stops once one has
    converged."""
    hkl, cell, shape = grid
    n_iter, restarts, stop_early = options.n_iter, options.restarts, options.stop_early
    work = ~floating
    best_r = torch.full((fo.shape[0],), float("inf"), dtype=fo.dtype, device=fo.device)
    best_f = torch.zeros_like(f)
    generator = torch.Generator().manual_seed(options.seed + 1)  # the restarts' phases
    part = n_iter // (max(0, restarts) + 1)
    watch = Convergence(fo.shape[0], part, generator, restarts > 0, CONVERGED[options.amplitudes])
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
            phi_new = random_phases(f[again, 1:].shape, watch.generator, fo.dtype, fo.device)
            f[again, 1:] = torch.polar(fo[again] * work[again], phi_new).to(f.dtype)
            best_r[again] = float("inf")
        elif stop_early and watch.finished:
            break
    return best_f, it + 1


def _flip_on_f(best_f, fo, floating, grid: tuple, f_rule: dict, weak_fraction: float) -> torch.Tensor:
    """:data:`F_CYCLES` flipping cycles on F from each start's best iterate on E or sharpened amplitudes ``best_f``
    (B·S, 1 + M), the weak reflections chosen anew from ``fo``; returns the last flipped transform."""
    hkl, cell, shape = grid
    centric = f_rule["centric"]
    f, weak = best_f, _weakest(fo, floating, weak_fraction)
    for _ in range(F_CYCLES):
        best_f, f = _flip(torch.cat([f[:, :1], impose_amplitudes(fo, floating, f[:, 1:], centric)], -1), fo,
                          floating, weak, hkl, cell, shape, **f_rule)  # fmt: skip
    return best_f


class Convergence:
    """Convergence of charge-flipping starts from R-work alone (the free set is not read): the mean R-work of
    cycles 5–25 after a start (re)begins is its plateau; it has converged once its best R-work falls below
    ``ratio`` × the plateau (the phase transition of Oszlányi & Sütő; :data:`CONVERGED`). With ``restart``,
    :meth:`update` names the starts to begin again: those not converged after ``part`` cycles."""

    def __init__(self, n: int, part: int, generator: torch.Generator, restart: bool, ratio: float = CONVERGED["F"]):
        self.part, self.generator, self.restart, self.ratio = max(30, part), generator, restart, ratio
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
        done = torch.isfinite(plateau) & (best_r < self.ratio * plateau)
        self.since = torch.where(done, self.since + 1, torch.full_like(self.since, -1))
        again = ~done & (self.age >= self.part) & self.restart
        self.age[again], self.total[again], self.count[again] = 0, 0.0, 0.0
        return again

    @property
    def finished(self) -> bool:
        """A start converged at least :data:`AFTER_CONVERGENCE` cycles ago (one solution is all it takes)."""
        return bool((self.since >= AFTER_CONVERGENCE).any())


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
    hkl0 = with_000(hkl)
    rho = density_from_f(f, hkl0, cell, shape)  # (B, X, Y, Z)
    delta = flip_threshold(rho, delta_sigma, delta_fraction)
    g = f_from_density(torch.where(rho < delta, -rho, rho), hkl0, cell)  # (B, 1 + M)
    turned = g[:, 1:].real.to(g.dtype) if centric else g[:, 1:] * torch.tensor(1j, dtype=g.dtype, device=g.device)
    imposed = impose_amplitudes(fo, floating, g[:, 1:], centric)
    return g, torch.cat([g[:, :1], torch.where(weak, turned, imposed)], dim=-1)
