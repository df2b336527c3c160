"""The support methods: projections between the observed amplitudes and a shrink-wrapped support with positivity.

- :func:`hio` — Fienup's hybrid input-output (1982) with a shrink-wrap support (Marchesini 2003), positivity,
  F(000) fixed to the electron count, and a final error-reduction polish;
- :func:`raar` (Luke 2005) and :func:`rrr` (Elser's reflect-reflect-relax) — other updates between the same two
  projections.

How they run is a :class:`~patterson.phasing.options.SupportOptions`.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import torch

from patterson.cells import Cell
from patterson.maps import density_from_f, f_from_density, impose_amplitudes, patterson_from_f
from patterson.phasing.amplitudes import electron_counts, normalised_amplitudes, wilson_estimate
from patterson.phasing.options import SupportOptions, checked, options_for
from patterson.phasing.starts import PhasingResult, prepare_starts, with_000


def hio(
    f_obs: torch.Tensor,
    hkl: np.ndarray,
    cell: Cell,
    shape: tuple[int, int, int],
    options: SupportOptions | None = None,
    *,
    f000: torch.Tensor | float | None = None,
    phi_start: torch.Tensor | None = None,
    support_start: torch.Tensor | None = None,
    observed: torch.Tensor | None = None,
    free: torch.Tensor | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> PhasingResult:
    """Hybrid input-output with a shrink-wrap support and positivity (Fienup 1982; Marchesini et al. 2003), or with
    ``options.scheme`` another update between the same two projections: ``raar`` (Luke 2005) or ``rrr`` (Elser's
    reflect-reflect-relax, the difference map with β as its step; Elser 2018).

    Parameters
    ----------
    f_obs : (B, M) observed amplitudes on the Friedel half ``hkl``.
    cell, shape : the cell and the grid (X, Y, Z), which must hold all reflections.
    options : how it runs (:class:`~patterson.phasing.options.SupportOptions`; None: HIO's defaults): ``n_iter``
        iterations per start imposing ``amplitudes`` (F(000) scaled to match), then ``n_polish`` error-reduction
        cycles on F.
    f000 : electron count in the cell, (B,) or a number; estimated from a Wilson plot of the work set when None.
    phi_start, support_start : starting phases (B, M) and support (B, X, Y, Z) for the hybrid (one start each).
    observed : (B, M) bool, the measured reflections (default: see :func:`~patterson.phasing.measured_mask`); the
        others float freely.
    free : (B, M) bool, the free set, never imposed (default: ``options.free_fraction`` of the measured ones).
    progress : called with (iteration, total) after each cycle.
    """
    options = checked(options, SupportOptions, "hio")
    s = prepare_starts(f_obs, hkl, cell, shape, options, observed, free, phi_start)  # (B·S, M)
    f000 = electron_counts(f000, s.f_obs, hkl, cell, s.imposed)
    hkl0 = with_000(hkl)
    f0_f = f000.repeat_interleave(s.n_starts, 0)[:, None].to(s.ctype)  # (B·S, 1); the polish imposes F
    fo, f0 = _phasing_amplitudes(s.fo, f0_f, hkl, cell, options.amplitudes, ~s.floating)
    if support_start is not None:
        support = torch.as_tensor(support_start, device=s.f_obs.device).bool()
    else:
        support = patterson_support(s.f_obs * s.imposed, hkl0, cell, shape, options.support_fraction)
    support = support.repeat_interleave(s.n_starts, 0)
    f = torch.cat([f0, torch.polar(fo * ~s.floating, s.phi).to(s.ctype)], dim=-1)  # the floating ones start at 0
    rho = density_from_f(f, hkl0, cell, shape)
    grid = (hkl0, cell, shape, s.floating, options.centric)
    projections = (lambda r: _project(r, fo, f0, *grid), lambda r: _project(r, s.fo, f0_f, *grid))
    rho, support = _support_cycles(rho, support, projections, options, cell, progress)
    final = torch.where(support & (rho >= 0), rho, torch.zeros_like(rho))
    g = f_from_density(final, hkl0, cell)[:, 1:]
    return s.result(final, g, options.select, options.scheme, options.n_iter + options.n_polish)


def raar(f_obs: torch.Tensor, hkl: np.ndarray, cell: Cell, shape, options=None, **data) -> PhasingResult:
    """RAAR (Luke 2005) with the shrink-wrap support and positivity of :func:`hio`; ``options``
    (:class:`~patterson.phasing.options.SupportOptions`, its scheme set to ``raar``) and ``data`` as there."""
    return hio(f_obs, hkl, cell, shape, options_for("raar", options), **data)


def rrr(f_obs: torch.Tensor, hkl: np.ndarray, cell: Cell, shape, options=None, **data) -> PhasingResult:
    """Elser's RRR / difference map with the shrink-wrap support and positivity of :func:`hio`; ``options`` (its
    scheme set to ``rrr``) and ``data`` as there."""
    return hio(f_obs, hkl, cell, shape, options_for("rrr", options), **data)


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
    options: SupportOptions,
    cell: Cell,
    progress: Callable[[int, int], None] | None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """``options.n_iter`` cycles of ``options.scheme`` between the Fourier projection (the first of
    ``projections``) and the support, shrink-wrapped every ``shrink_every`` cycles with a blur narrowing from
    ``sigma_start`` to ``sigma_end`` Å; then ``n_polish`` cycles of error reduction with the second projection (onto
    F). Returns the map and the support, (B·S, X, Y, Z) each."""
    project, project_f = projections
    n_iter, every, beta = options.n_iter, options.shrink_every, options.feedback
    n_shrinks = max(1, n_iter // max(every, 1))
    total = n_iter + options.n_polish
    for it in range(total):
        proj = project(rho) if it < n_iter else project_f(rho)
        inside = support & (proj >= 0)
        if it < n_iter:
            rho = _update(options.scheme, rho, proj, inside, support, beta)
            if every and (it + 1) % every == 0:
                frac = min(1.0, (it + 1) / every / n_shrinks)
                sigma = options.sigma_start + (options.sigma_end - options.sigma_start) * frac
                kept = torch.where(inside, proj, torch.zeros_like(proj))
                support = support_from(kept, cell, sigma, options.threshold)
        else:
            rho = torch.where(inside, proj, torch.zeros_like(proj))  # error reduction
        if progress is not None:
            progress(it + 1, total)
    return rho, support


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
