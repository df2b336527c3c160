"""From reflections as read to P1 amplitudes: merging, French–Wilson, expansion, resolution cut."""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import numpy as np

from patterson.cells import Cell
from patterson.errors import PattersonError
from patterson.physics import check_d_min, in_friedel_half, miller_indices, resolution_shells
from patterson.solving.reflections import Reflections


def _keys(hkl: np.ndarray, off: int) -> np.ndarray:
    base = 2 * off + 1
    return ((hkl[..., 0] + off) * base + (hkl[..., 1] + off)) * base + (hkl[..., 2] + off)


def _unkeys(keys: np.ndarray, off: int) -> np.ndarray:
    base = 2 * off + 1
    return np.stack([keys // (base * base) - off, (keys // base) % base - off, keys % base - off], axis=-1)


class Merged(NamedTuple):
    """Merged, P1-expanded reflections: hkl (M, 3) on the Friedel half, value (M,), sigma (M,) or None, the count
    of unique (merged) reflections, orbit (M,) the merged group each P1 reflection copies, free (M,) bool or None
    (a group is free when the file flags any of its members free)."""

    hkl: np.ndarray
    value: np.ndarray
    sigma: np.ndarray | None
    n_unique: int
    orbit: np.ndarray
    free: np.ndarray | None


def merge_and_expand(
    hkl: np.ndarray,
    value: np.ndarray,
    sigma: np.ndarray | None,
    rotations: np.ndarray,
    free: np.ndarray | None = None,
) -> Merged:
    """Average symmetry equivalents (and Friedel mates) and expand to P1 on the Friedel half.

    Equivalents of h under x' = R x + t are h R (row vector); with Friedel's law also −h R. The values are averaged
    with weights 1/σ² (plain means when σ is missing or not positive); each merged value is then copied to every
    member of its orbit, so F(hR) = F(h). ``free`` (N,) bool: the file's free flags, merged per group.
    """
    ops = np.concatenate([rotations, -rotations])  # (2K, 3, 3)
    eq = np.einsum("ni,kij->nkj", hkl, ops)  # (N, 2K, 3)
    flat = eq.reshape(-1, 3)
    flat[~in_friedel_half(flat)] *= -1
    eq = flat.reshape(eq.shape)
    off = int(np.abs(eq).max()) + 1
    keys = _keys(eq, off)  # (N, 2K)
    canon = keys.max(axis=1)
    groups, first, inverse = np.unique(canon, return_index=True, return_inverse=True)
    g = len(groups)
    good_sigma = sigma is not None and np.all(sigma > 0)
    w = 1.0 / sigma**2 if good_sigma else np.ones_like(value)
    wsum = np.bincount(inverse, weights=w, minlength=g)
    merged = np.bincount(inverse, weights=w * value, minlength=g) / wsum
    if good_sigma:
        merged_sigma = 1.0 / np.sqrt(wsum)
    elif sigma is not None:
        count = np.bincount(inverse, minlength=g)
        merged_sigma = np.sqrt(np.bincount(inverse, weights=sigma**2, minlength=g)) / count
    else:
        merged_sigma = None
    orbit = keys[first]  # (G, 2K) keys of each group's orbit
    member, idx = np.unique(orbit.reshape(-1), return_index=True)
    owner = idx // orbit.shape[1]
    out_hkl = _unkeys(member, off)
    keep = np.any(out_hkl != 0, axis=1)
    sig_out = None if merged_sigma is None else merged_sigma[owner][keep]
    free_out = None if free is None else (np.bincount(inverse, weights=np.asarray(free, float), minlength=g) > 0)
    return Merged(
        out_hkl[keep], merged[owner][keep], sig_out, g, owner[keep], None if free_out is None else free_out[owner][keep]
    )


def french_wilson(
    intensity: np.ndarray, sigma: np.ndarray | None, d: np.ndarray, n_shells: int = 10
) -> tuple[np.ndarray, np.ndarray]:
    """Amplitudes from intensities: French & Wilson (1978) posterior mean of √J with an acentric Wilson prior.

    The prior is p(J) ∝ exp(−J/Σ), Σ the mean intensity of the reflection's resolution shell; the likelihood is
    Gaussian N(I; J, σ²). Reflections with I > 4σ get √I (the posterior mean is √I to within 1%); without
    σ, F = √max(I, 0). Centric reflections and the multiplicity ε are not treated separately. Returns (F, σF).
    """
    if sigma is None:
        f = np.sqrt(np.clip(intensity, 0, None))
        return f, np.zeros_like(f)
    sigma = np.where(sigma > 0, sigma, np.nan)
    shell, _ = resolution_shells(d, max(1, min(n_shells, len(d) // 50)))
    mean_i = np.array([max(np.mean(intensity[shell == s]), 1e-30) for s in range(shell.max() + 1)])[shell]
    f = np.sqrt(np.clip(intensity, 0, None))
    sig_f = np.where(f > 0, np.nan_to_num(sigma) / (2 * np.maximum(f, 1e-30)), 0.0)
    weak = np.isfinite(sigma) & (intensity <= 4 * np.nan_to_num(sigma, nan=np.inf))
    if weak.any():
        i_w, s_w, m_w = intensity[weak], sigma[weak], mean_i[weak]
        top = np.maximum(i_w, 0) + 8 * s_w  # (W,)
        j = np.linspace(0, 1, 401)[None, :] * top[:, None]  # (W, 401)
        log_p = -0.5 * ((i_w[:, None] - j) / s_w[:, None]) ** 2 - j / m_w[:, None]
        p = np.exp(log_p - log_p.max(axis=1, keepdims=True))
        z = np.trapezoid(p, j, axis=1)
        e_f = np.trapezoid(p * np.sqrt(j), j, axis=1) / z
        e_i = np.trapezoid(p * j, j, axis=1) / z
        f[weak] = e_f
        sig_f[weak] = np.sqrt(np.clip(e_i - e_f**2, 0, None))
    return f, sig_f


@dataclass
class ObservedData:
    """Amplitudes ready to phase: hkl (M, 3) on the Friedel half of P1, f (M,), sigf (M,) or None, the cell and
    the resolution; plus what was done to get there. orbit (M,): the merged (symmetry-unique) reflection each P1
    reflection belongs to; free (M,) bool: the file's free set, None when it flags none."""

    hkl: np.ndarray
    f: np.ndarray
    sigf: np.ndarray | None
    cell: Cell
    d_min: float
    d_max: float
    n_read: int
    n_unique: int
    completeness: float
    warnings: list[str]
    orbit: np.ndarray | None = None
    free: np.ndarray | None = None


def prepare_data(refl: Reflections, d_min: float | None = None) -> ObservedData:
    """Drop missing values, merge equivalents, convert intensities (French–Wilson), expand to P1, cut at d_min."""
    src = refl.source
    if refl.rotations is None:
        raise PattersonError(f"{src}: no space group; give --spacegroup")
    value, hkl = refl.value, refl.hkl
    bad = np.isinf(value) | (np.isinf(refl.sigma) if refl.sigma is not None else False)
    if bad.any():  # NaN marks a missing value; an infinite one is a corrupt or wrongly scaled file
        h = hkl[np.argmax(bad)]
        first = " ".join(str(int(x)) for x in h)
        raise PattersonError(f"{src}: {int(bad.sum())} infinite values in {refl.labels[0]} (first at hkl {first}); "
                             "the file is corrupt or wrongly scaled")  # fmt: skip
    present = np.isfinite(value) & np.any(hkl != 0, axis=1)
    if refl.sigma is not None:
        present &= np.isfinite(refl.sigma)
    if not present.any():
        raise PattersonError(
            f"{src}: column {refl.labels[0]} holds no measured values (all missing or NaN); choose another --columns"
        )
    value, hkl = value[present], hkl[present]
    sigma = None if refl.sigma is None else refl.sigma[present]
    flags = None if refl.free is None else np.asarray(refl.free, dtype=bool)[present]
    if not np.any(value != 0):
        raise PattersonError(f"{src}: all {refl.kind}s in {refl.labels[0]} are zero; choose another column (--columns)")
    if refl.kind == "amplitude" and np.any(value < 0):
        raise PattersonError(
            f"{src}: negative amplitudes in {refl.labels[0]}; is it an intensity or difference column?"
        )
    warnings = list(refl.warnings)
    p1_hkl, merged, merged_sigma, n_unique, orbit, free = merge_and_expand(hkl, value, sigma, refl.rotations, flags)
    d = refl.cell.d_spacing(p1_hkl)
    if refl.kind == "intensity":
        f, sigf = french_wilson(merged, merged_sigma, d)
        if sigma is None:
            warnings.append("intensities without sigmas: F = sqrt(max(I, 0))")
    else:
        f, sigf = merged, merged_sigma
    d_data = float(d.min())
    if d_min is None:
        d_min = d_data
    else:
        d_min = check_d_min(d_min)
        if d_min < d_data * (1 - 1e-6):
            warnings.append(f"--d-min {d_min:g} Å is finer than the data ({d_data:.3f} Å): using {d_data:.3f} Å")
            d_min = d_data
    keep = d >= d_min * (1 - 1e-9)
    if not np.any(f[keep] > 0):
        raise PattersonError(f"{src}: no non-zero amplitudes with d ≥ {d_min:g} Å; lower --d-min")
    cell = refl.cell
    total = len(miller_indices(cell, d_min))  # the Friedel half of the sphere, as the data could have it
    return ObservedData(
        hkl=p1_hkl[keep],
        f=f[keep],
        sigf=None if sigf is None else sigf[keep],
        cell=cell,
        d_min=float(d_min),
        d_max=float(d[keep].max()),
        n_read=int(len(refl.value)),
        n_unique=int(n_unique),
        completeness=float(keep.sum() / max(total, 1)),
        warnings=warnings,
        orbit=orbit[keep],
        free=None if free is None else _checked_free(free[keep], refl.free_label, src),
    )


def _checked_free(free: np.ndarray, label: str | None, src: str) -> np.ndarray:
    """A file's free set, refused when it marks no reflection or every reflection free."""
    if not free.any():
        raise PattersonError(f"{src}: the free-flag column {label} marks no measured reflection free")
    if free.all():
        raise PattersonError(f"{src}: the free-flag column {label} marks every measured reflection free")
    return free


def unmeasured_hkl(cell: Cell, d_min: float, hkl: np.ndarray) -> np.ndarray:
    """(K, 3) the reflections of the Friedel half to ``d_min`` that ``hkl`` (the measured ones) lacks: the phasing
    lets them float instead of holding them at zero."""
    full = miller_indices(cell, d_min)
    off = int(max(np.abs(full).max(), np.abs(hkl).max() if len(hkl) else 0)) + 1
    return full[~np.isin(_keys(full, off), _keys(hkl, off))]
