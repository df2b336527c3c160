"""The amplitudes a phasing method is given and imposes: their checks, the Wilson plot, E-values and sharpened
amplitudes, the electron count F(000), and which reflections were measured at all."""

from __future__ import annotations

import numpy as np
import torch

from patterson.cells import Cell
from patterson.errors import PattersonError
from patterson.phasing.options import AMPLITUDES
from patterson.physics import form_factors


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
