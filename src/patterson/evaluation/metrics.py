"""Map metrics as CCP4 cphasematch computes them: origin and hand search, map correlation, phase error per shell.

Conventions (those of :mod:`patterson.maps`): F(h) = Σ f exp(+2πi h·x) on the Friedel half of the reflection
sphere (no 000), ρ(x) = (1/V) Σ F(h) exp(−2πi h·x), grid voxel (i, j, k) at fractional (i/nx, j/ny, k/nz).

Map 1 is the reference (the truth), map 2 is moved onto it. An *alignment* (t, ε) with a fractional shift t and a
hand ε = ±1 turns map 2 into

    ρ₂'(x) = ρ₂(ε x + t),        F₂'(h) = F₂(h) exp(−2πi h·t)        (ε = +1)
                                  F₂'(h) = F₂(h)* exp(+2πi h·t)       (ε = −1, the inverted hand).

It is the (t, ε) that maximises S(t) = Σ_h |F₁||F₂'| cos(φ₁ − φ₂'), found as cphasematch does: the FFT of
F₁F₂* (and of F₁F₂ for the inverted hand) on a grid finer than the map's gives S on grid points; the highest
peak of either hand wins; Newton steps on S then refine t continuously. In P1 every t is an allowed origin.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields

import numpy as np
import torch

from patterson.cells import Cell
from patterson.errors import PattersonError
from patterson.maps import density_from_f, f_from_density, grid_from_half, invert_map
from patterson.models.losses import pearson_cc
from patterson.physics import check_d_min, grid_shape, miller_indices, resolution_shells

WEIGHTS = ("f1", "f1f2")
SEARCH_SAMPLE_RATE = 4.0


# --- checks ------------------------------------------------------------------------------------------------------


def as_map_batch(rho: torch.Tensor | np.ndarray, name: str = "map") -> torch.Tensor:
    """A (B, X, Y, Z) float64 tensor from one map (X, Y, Z) or a batch; raise PattersonError on NaN/inf or bad rank."""
    t = torch.as_tensor(rho)
    if t.is_complex() or not (t.is_floating_point() or t.dtype in (torch.int32, torch.int64)):
        raise PattersonError(f"{name} must hold real numbers, got {t.dtype}")
    if t.dim() == 3:
        t = t.unsqueeze(0)
    if t.dim() != 4:
        raise PattersonError(f"{name} must be shaped (X, Y, Z) or (B, X, Y, Z), got {tuple(t.shape)}")
    if t.shape[0] == 0:
        raise PattersonError(f"{name}: an empty batch (no maps to score)")
    if not torch.isfinite(t).all():
        raise PattersonError(f"{name} holds NaN or infinite values")
    return t.to(torch.float64)


def check_same_grid(a: torch.Tensor, b: torch.Tensor, names: tuple[str, str] = ("prediction", "truth")) -> None:
    """Raise PattersonError unless two map batches have the same shape."""
    if tuple(a.shape) != tuple(b.shape):
        raise PattersonError(
            f"{names[0]} and {names[1]} have different grids or batch sizes: {tuple(a.shape)} vs {tuple(b.shape)}"
        )


# --- origin and hand search -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Alignment:
    """The origin shift and hand that move map 2 onto map 1: ρ₂'(x) = ρ₂(ε x + t).

    shift_frac (B, 3) float64 fractional t in [0, 1); inverted (B,) bool (ε = −1); score (B,) the normalised
    overlap S(t) / √(Σ|F₁|² Σ|F₂|²) at the optimum, i.e. the map correlation to the reflections searched.
    """

    shift_frac: torch.Tensor
    inverted: torch.Tensor
    score: torch.Tensor


def _overlap(g: torch.Tensor, hkl_t: torch.Tensor, hh: torch.Tensor, t: torch.Tensor):
    """S(t) = Re Σ g exp(2πi h·t), its gradient (B, 3) and Hessian (B, 3, 3) in t.

    g (B, M) complex, hkl_t (M, 3), hh (M, 9) the products h_i h_j, t (B, 3).
    """
    phase = (2 * math.pi) * (t @ hkl_t.T)  # (B, M)
    e = g * torch.polar(torch.ones_like(phase), phase)  # (B, M)
    s = e.real.sum(-1)  # (B,)
    grad = -(2 * math.pi) * (e.imag @ hkl_t)  # (B, 3)
    hess = -(4 * math.pi**2) * (e.real @ hh).reshape(-1, 3, 3)  # (B, 3, 3)
    return s, grad, hess


def align(
    f1: torch.Tensor,
    f2: torch.Tensor,
    hkl: np.ndarray,
    cell: Cell,
    sample_rate: float = SEARCH_SAMPLE_RATE,
    refine_steps: int = 8,
    allow_inversion: bool = True,
) -> Alignment:
    """Find the origin shift and hand that best match F₂ to F₁ (cphasematch's search, then continuous refinement).

    Parameters
    ----------
    f1, f2 : (B, M) complex structure factors of the reference and the moving map on the same Friedel-half hkl.
    hkl : (M, 3) Miller indices (Friedel half; 000 is ignored).
    cell : the unit cell (sets the search grid).
    sample_rate : search grid spacing is d_min / sample_rate (cphasematch-like; 4 or more).
    refine_steps : Newton steps on S(t) from the best grid point (0: grid only).
    allow_inversion : also search the inverted hand F₂ → F₂* (ρ₂(−x)); wins only when strictly better.

    Returns
    -------
    Alignment with shift (B, 3), inverted (B,), score (B,).
    """
    hkl = np.asarray(hkl)
    keep = np.any(hkl != 0, axis=1)
    if not keep.all():
        idx = torch.as_tensor(np.nonzero(keep)[0], device=f1.device)
        hkl, f1, f2 = hkl[keep], f1.index_select(-1, idx), f2.index_select(-1, idx)
    if len(hkl) == 0:
        raise PattersonError("no reflections to align the maps on")
    f1, f2 = f1.to(torch.complex128), f2.to(torch.complex128)
    d_min = float(np.min(cell.d_spacing(hkl)))
    shape = grid_shape(cell, d_min * (1 - 1e-9), max(sample_rate, 2.0))
    g_plus = f1 * f2.conj()  # (B, M): S₊(t) = Re Σ F₁F₂* e^{2πi h·t}
    g_minus = (f1 * f2).conj()  # (B, M): S₋(t) = Re Σ F₁F₂ e^{−2πi h·t}
    n = torch.tensor(shape, dtype=torch.float64, device=f1.device)

    def grid_peak(g: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        corr = torch.fft.irfftn(grid_from_half(g, hkl, shape), s=shape, dim=(-3, -2, -1))  # (B, nx, ny, nz)
        best, flat = corr.reshape(corr.shape[0], -1).max(dim=1)
        ny, nz = shape[1], shape[2]
        idx = torch.stack([flat // (ny * nz), (flat // nz) % ny, flat % nz], dim=1)  # (B, 3)
        return best, idx.to(torch.float64) / n

    best, t = grid_peak(g_plus)
    inverted = torch.zeros(f1.shape[0], dtype=torch.bool, device=f1.device)
    if allow_inversion:
        best_inv, t_inv = grid_peak(g_minus)
        inverted = best_inv > best + 1e-9 * best.abs().clamp_min(1e-300)
        t = torch.where(inverted[:, None], t_inv, t)
    g = torch.where(inverted[:, None], g_minus, g_plus)  # (B, M)
    hkl_t = torch.as_tensor(hkl, dtype=torch.float64, device=f1.device)
    hh = (hkl_t[:, :, None] * hkl_t[:, None, :]).reshape(-1, 9)  # (M, 9)
    max_step = 0.5 / n  # at most half a search voxel per step, (3,)
    s, grad, hess = _overlap(g, hkl_t, hh, t)
    scale = torch.ones_like(s)  # (B,) shrinks when a step fails to climb
    for _ in range(refine_steps):
        sol, info = torch.linalg.solve_ex(hess, grad.unsqueeze(-1))
        step = -sol.squeeze(-1)  # (B, 3) Newton step
        ascent = (info == 0) & ((step * grad).sum(-1) > 0) & torch.isfinite(step).all(-1)  # uphill near a maximum
        unit = grad / (grad.abs().amax(-1, keepdim=True) + 1e-300)  # otherwise a quarter voxel uphill
        step = torch.where(ascent[:, None], step, 0.25 * unit / n)
        step = torch.maximum(torch.minimum(step, max_step), -max_step)
        t_new = t + step * scale[:, None]
        s_new, grad_new, hess_new = _overlap(g, hkl_t, hh, t_new)
        better = s_new >= s
        t = torch.where(better[:, None], t_new, t)
        s = torch.where(better, s_new, s)
        grad = torch.where(better[:, None], grad_new, grad)
        hess = torch.where(better[:, None, None], hess_new, hess)
        scale = torch.where(better, scale, scale / 4)
        if float((step * scale[:, None] * n).abs().max()) < 1e-7:  # converged: moves below 1e-7 search voxels
            break
    norm = torch.sqrt((f1.abs() ** 2).sum(-1) * (f2.abs() ** 2).sum(-1))  # (B,)
    score = torch.where(norm > 0, s / norm.clamp_min(1e-300), torch.zeros_like(s))
    return Alignment(torch.remainder(t, 1.0), inverted, score)


def apply_alignment_f(f: torch.Tensor, hkl: np.ndarray, alignment: Alignment) -> torch.Tensor:
    """Structure factors of the moved map: F(h) e^{−2πi h·t}, or F(h)* e^{+2πi h·t} for the inverted hand; (B, M)."""
    hkl_t = torch.as_tensor(np.asarray(hkl), dtype=torch.float64, device=f.device)
    phase = (2 * math.pi) * (alignment.shift_frac.to(f.device) @ hkl_t.T)  # (B, M)
    inv = alignment.inverted.to(f.device)[:, None]
    ramp = torch.polar(torch.ones_like(phase), torch.where(inv, phase, -phase))
    f = f.to(torch.complex128)
    return torch.where(inv, f.conj(), f) * ramp


def shift_map(rho: torch.Tensor, shift_frac: torch.Tensor) -> torch.Tensor:
    """ρ(x + s) by Fourier interpolation: rho (B, X, Y, Z) real, shift_frac (B, 3) fractional → (B, X, Y, Z)."""
    shape = tuple(rho.shape[-3:])
    spec = torch.fft.rfftn(rho.to(torch.float64), dim=(-3, -2, -1))  # (B, X, Y, Z//2+1)
    s = shift_frac.to(device=rho.device, dtype=torch.float64)
    k = [torch.fft.fftfreq(shape[0], 1 / shape[0]), torch.fft.fftfreq(shape[1], 1 / shape[1])]
    k.append(torch.arange(shape[2] // 2 + 1, dtype=torch.float64))
    k = [x.to(device=rho.device, dtype=torch.float64) for x in k]
    phase = (2 * math.pi) * (
        s[:, 0, None, None, None] * k[0][None, :, None, None]
        + s[:, 1, None, None, None] * k[1][None, None, :, None]
        + s[:, 2, None, None, None] * k[2][None, None, None, :]
    )  # (B, X, Y, Z//2+1)
    return torch.fft.irfftn(spec * torch.polar(torch.ones_like(phase), phase), s=shape, dim=(-3, -2, -1))


def apply_alignment_map(rho: torch.Tensor, alignment: Alignment) -> torch.Tensor:
    """The moved map ρ'(x) = ρ(ε x + t) on the same grid (inversion exact, shift by Fourier interpolation)."""
    inv = alignment.inverted.to(rho.device)
    src = torch.where(inv[:, None, None, None], invert_map(rho), rho)  # ρ(εx)
    t = alignment.shift_frac.to(rho.device)
    return shift_map(src, torch.where(inv[:, None], -t, t))  # ρ(−x + t) = ρ_inv(x − t)


def align_peaks(frac: np.ndarray, shift_frac: np.ndarray, inverted: bool) -> np.ndarray:
    """Where points of map 2 at fractional ``frac`` (P, 3) lie in the aligned map: x = ε (p − t), wrapped to [0, 1)."""
    eps = -1.0 if inverted else 1.0
    return np.mod(eps * (np.asarray(frac, dtype=np.float64) - np.asarray(shift_frac, dtype=np.float64)), 1.0)


# --- real-space correlation -----------------------------------------------------------------------------------------


def central_region_mask(cell: Cell, shape: tuple[int, int, int], size: float) -> torch.Tensor:
    """(X, Y, Z) bool: voxels inside a cube of edge ``size`` Å (Cartesian axes) centred on the cell centre.

    The paper scores dataset 1a (fragments centred in a 20 Å cell) on the central 6 Å cube.
    """
    if not (math.isfinite(size) and size > 0):
        raise PattersonError(f"the central region needs a positive size in Å, got {size}")
    axes = [np.arange(n) / n - 0.5 for n in shape]
    frac = np.stack(np.meshgrid(*axes, indexing="ij"), axis=-1)  # (X, Y, Z, 3), relative to the centre
    xyz = frac @ cell.orth.T
    mask = np.all(np.abs(xyz) <= size / 2 + 1e-9, axis=-1)
    if not mask.any():
        raise PattersonError(f"a central region of {size:g} Å holds no grid point")
    return torch.as_tensor(mask)


def map_cc(a: torch.Tensor, b: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """Pearson correlation of each map pair in float64, optionally on the voxels of ``mask`` (X, Y, Z);
    (B, ...) → (B,).

    CC = Σ (a − ā)(b − b̄) / √(Σ (a − ā)² Σ (b − b̄)²); a constant map gives 0.
    """
    a, b = a.to(torch.float64), b.to(torch.float64)
    if mask is not None:
        m = mask.to(a.device).reshape(-1)
        a, b = a.reshape(a.shape[0], -1)[:, m], b.reshape(b.shape[0], -1)[:, m]
    return pearson_cc(a, b, eps=1e-300)


# --- phase errors ---------------------------------------------------------------------------------------------------


def phase_difference_deg(f1: torch.Tensor, f2: torch.Tensor) -> torch.Tensor:
    """|φ₁ − φ₂| wrapped to [0°, 180°]; (B, M) complex pairs → (B, M) float64 degrees."""
    return torch.rad2deg(torch.angle(f1.to(torch.complex128) * f2.to(torch.complex128).conj()).abs())


def phase_weights(f1: torch.Tensor, f2: torch.Tensor, weight: str = "f1") -> torch.Tensor:
    """Weights of the F-weighted phase error: |F₁| (``"f1"``, default) or |F₁||F₂| (``"f1f2"``); (B, M).

    |F₁| (the reference's amplitude) is cphasematch's F-weighting and reproduces the chance levels quoted in the
    project notes (86° / 79° / 70° at 1 / 2 / 3 Å for a 12 Å cell).
    """
    if weight == "f1f2":
        return f1.abs() * f2.abs()
    if weight == "f1":
        return f1.abs().to(torch.float64).expand(f2.shape).clone()
    raise PattersonError(f"unknown phase-error weight {weight!r} (choose from {', '.join(WEIGHTS)})")


@dataclass(frozen=True)
class PairScores:
    """Scores of B map pairs (prediction moved onto truth), all float64 CPU tensors.

    cc, cc_aligned (B,): Pearson CC before / after the alignment (on the region, if one was given).
    phase_error_deg, phase_error_weighted_deg (B,): mean |Δφ|, unweighted and F-weighted, over all reflections.
    shell_phase_error_deg, shell_phase_error_weighted_deg, shell_map_cc (B, S): the same per resolution shell,
    and the shell map correlation Σ|F₁||F₂|cosΔφ / √(Σ|F₁|² Σ|F₂|²).
    shell_d_min, shell_d_max (S,): the d range (Å) of the reflections in each shell.
    shift_frac (B, 3), inverted (B,): the alignment. n_reflections: reflections scored.
    """

    cc: torch.Tensor
    cc_aligned: torch.Tensor
    phase_error_deg: torch.Tensor
    phase_error_weighted_deg: torch.Tensor
    shell_phase_error_deg: torch.Tensor
    shell_phase_error_weighted_deg: torch.Tensor
    shell_map_cc: torch.Tensor
    shell_d_min: torch.Tensor
    shell_d_max: torch.Tensor
    shift_frac: torch.Tensor
    inverted: torch.Tensor
    n_reflections: int

    def __len__(self) -> int:
        return int(self.cc.shape[0])

    @staticmethod
    def concatenate(parts: list[PairScores]) -> PairScores:
        """Join the scores of several batches (shells are matched by index; d ranges are widened to cover all)."""
        if not parts:
            raise PattersonError("no scores to join (an empty dataset split?)")
        n_shells = {p.shell_map_cc.shape[1] for p in parts}
        if len(n_shells) != 1:
            raise PattersonError(f"batches were scored with different numbers of shells: {sorted(n_shells)}")
        out = {}
        for fld in fields(PairScores):
            vals = [getattr(p, fld.name) for p in parts]
            if fld.name == "shell_d_min":  # the widest d range over batches, ignoring empty shells (NaN)
                out[fld.name] = torch.as_tensor(np.fmin.reduce(torch.stack(vals).numpy(), axis=0))
            elif fld.name == "shell_d_max":
                out[fld.name] = torch.as_tensor(np.fmax.reduce(torch.stack(vals).numpy(), axis=0))
            elif fld.name == "n_reflections":
                out[fld.name] = int(sum(vals))
            else:
                out[fld.name] = torch.cat(vals)
        return PairScores(**out)


def shell_matrix(hkl: np.ndarray, cell: Cell, n_shells: int = 12) -> tuple[torch.Tensor, np.ndarray]:
    """One-hot (M, S) float64 shell membership (:func:`patterson.physics.resolution_shells`) and (S, 2) d ranges
    of the reflections in each shell (d_min, d_max; NaN for an empty shell)."""
    d = cell.d_spacing(np.asarray(hkl))
    shell, _ = resolution_shells(d, n_shells)
    onehot = torch.zeros((len(hkl), n_shells), dtype=torch.float64)
    onehot[torch.arange(len(hkl)), torch.as_tensor(shell)] = 1.0
    ranges = np.full((n_shells, 2), np.nan)
    for i in range(n_shells):
        if np.any(shell == i):
            ranges[i] = d[shell == i].min(), d[shell == i].max()
    return onehot, ranges


def _safe_div(num: torch.Tensor, den: torch.Tensor) -> torch.Tensor:
    return torch.where(den > 0, num / den.clamp_min(1e-300), torch.full_like(num, float("nan")))


def score_f(
    f1: torch.Tensor,
    f2_aligned: torch.Tensor,
    hkl: np.ndarray,
    cell: Cell,
    n_shells: int = 12,
    weight: str = "f1",
) -> dict[str, torch.Tensor]:
    """Phase errors (overall and per shell) and shell map CC of aligned structure factors (B, M).

    Unweighted error: mean |Δφ|. F-weighted: Σ w|Δφ| / Σ w with w = |F₁| (or |F₁||F₂|), see :func:`phase_weights`.
    Shell map CC: Σ |F₁||F₂| cosΔφ / √(Σ|F₁|² Σ|F₂|²) = Re Σ F₁F₂* / √(Σ|F₁|² Σ|F₂|²).
    """
    onehot, ranges = shell_matrix(hkl, cell, n_shells)
    onehot = onehot.to(f1.device)
    f1, f2 = f1.to(torch.complex128), f2_aligned.to(torch.complex128)
    dphi = phase_difference_deg(f1, f2)  # (B, M)
    w = phase_weights(f1, f2, weight)  # (B, M)
    cross = (f1 * f2.conj()).real  # (B, M) |F1||F2| cos Δφ
    shell_pe = dphi @ onehot / onehot.sum(0)  # (B, S)
    shell_pew = _safe_div((w * dphi) @ onehot, w @ onehot)
    den = torch.sqrt(((f1.abs() ** 2) @ onehot) * ((f2.abs() ** 2) @ onehot))
    shell_cc = torch.where(den > 0, (cross @ onehot) / den.clamp_min(1e-300), torch.zeros_like(den))
    return {
        "phase_error_deg": dphi.mean(-1),
        "phase_error_weighted_deg": _safe_div((w * dphi).sum(-1), w.sum(-1)),
        "shell_phase_error_deg": shell_pe,
        "shell_phase_error_weighted_deg": shell_pew,
        "shell_map_cc": shell_cc,
        "shell_d_min": torch.as_tensor(ranges[:, 0]),
        "shell_d_max": torch.as_tensor(ranges[:, 1]),
    }


def score_maps(
    prediction: torch.Tensor | np.ndarray,
    truth: torch.Tensor | np.ndarray,
    cell: Cell,
    d_min: float,
    n_shells: int = 12,
    weight: str = "f1",
    region: float | None = None,
    sample_rate: float = SEARCH_SAMPLE_RATE,
    allow_inversion: bool = True,
    return_aligned: bool = False,
) -> PairScores | tuple[PairScores, torch.Tensor]:
    """Score predicted maps against the truth after the cphasematch-style origin and hand search.

    Parameters
    ----------
    prediction, truth : (B, X, Y, Z) or (X, Y, Z) maps on the same grid of ``cell`` (any device).
    d_min : resolution limit (Å) of the reflections used for the search and the phase errors.
    n_shells : resolution shells of equal reflection count in 1/d².
    weight : weights of the F-weighted phase error (``"f1"``: |F₁|, default; ``"f1f2"``: |F₁||F₂|).
    region : if given, the map CCs use only the central cube of this edge in Å (paper's dataset 1a: 6).
    sample_rate : the search grid spacing is d_min / sample_rate.
    allow_inversion : search the inverted hand too.
    return_aligned : also return the aligned predictions (B, X, Y, Z).

    Returns
    -------
    PairScores (CPU tensors), and the aligned maps if asked.
    """
    pred = as_map_batch(prediction, "prediction")
    true = as_map_batch(truth, "truth").to(pred.device)
    check_same_grid(pred, true)
    d_min = check_d_min(d_min)
    hkl = miller_indices(cell, d_min)
    if len(hkl) == 0:
        raise PattersonError(f"no reflections with d ≥ {d_min:g} Å in this cell")
    f1 = f_from_density(true, hkl, cell)  # (B, M)
    f2 = f_from_density(pred, hkl, cell)  # (B, M)
    alignment = align(f1, f2, hkl, cell, sample_rate=sample_rate, allow_inversion=allow_inversion)
    f2a = apply_alignment_f(f2, hkl, alignment)
    aligned = apply_alignment_map(pred, alignment)
    mask = None if region is None else central_region_mask(cell, tuple(pred.shape[-3:]), region)
    per = score_f(f1, f2a, hkl, cell, n_shells, weight)
    scores = PairScores(
        cc=map_cc(pred, true, mask).cpu(),
        cc_aligned=map_cc(aligned, true, mask).cpu(),
        shift_frac=alignment.shift_frac.cpu(),
        inverted=alignment.inverted.cpu(),
        n_reflections=len(hkl) * pred.shape[0],
        **{k: v.cpu() for k, v in per.items()},
    )
    return (scores, aligned) if return_aligned else scores


# --- the chance level -------------------------------------------------------------------------------------------


def random_phase_maps(
    truth: torch.Tensor | np.ndarray, cell: Cell, d_min: float, generator: torch.Generator | None = None
) -> torch.Tensor:
    """Maps with the truth's amplitudes to d_min and uniformly random phases; (B, X, Y, Z) → (B, X, Y, Z)."""
    true = as_map_batch(truth, "truth")
    hkl = miller_indices(cell, check_d_min(d_min))
    f = f_from_density(true, hkl, cell)  # (B, M)
    phi = torch.rand(f.shape, generator=generator, dtype=torch.float64).to(f.device) * (2 * math.pi)
    f_rand = torch.polar(f.abs(), phi)
    return density_from_f(f_rand, hkl, cell, tuple(true.shape[-3:]))


def chance_scores(
    truth: torch.Tensor | np.ndarray,
    cell: Cell,
    d_min: float,
    seed: int = 0,
    **kwargs,
) -> PairScores:
    """The chance level: :func:`score_maps` of random-phase maps (true amplitudes) against the truth.

    Random phases do not score 90° after an origin and hand search: the search fits 3 shift parameters and a hand
    to the noise, and F-weighting favours the few strong low-resolution reflections.
    """
    gen = torch.Generator().manual_seed(int(seed))
    return score_maps(random_phase_maps(truth, cell, d_min, gen), truth, cell, d_min, **kwargs)
