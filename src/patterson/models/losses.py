"""Losses on predicted maps, including one that forgives the origin and hand a Patterson map cannot fix.

Maps are shaped (B, C, X, Y, Z) (or (B, X, Y, Z) for the alignment functions); per-map quantities are (B,).
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from patterson.errors import PattersonError

LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def _check_pair(pred: torch.Tensor, target: torch.Tensor, min_dim: int = 2) -> None:
    if not isinstance(pred, torch.Tensor) or not isinstance(target, torch.Tensor):
        raise PattersonError("pred and target must be torch tensors")
    if pred.shape != target.shape:
        raise PattersonError(f"pred shape {tuple(pred.shape)} differs from target shape {tuple(target.shape)}")
    if pred.dim() < min_dim:
        raise PattersonError(f"maps need a batch axis and at least {min_dim - 1} more, got {tuple(pred.shape)}")


def pearson_cc(a: torch.Tensor, b: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """Pearson correlation coefficient of each map pair over all non-batch axes.

    Parameters
    ----------
    a, b : torch.Tensor
        Maps of equal shape (B, ...).
    eps : float
        Guards the division for constant maps (which then give CC 0).

    Returns
    -------
    torch.Tensor
        Shape (B,).
    """
    _check_pair(a, b)
    a = a.reshape(a.shape[0], -1)  # (B, N)
    b = b.reshape(b.shape[0], -1)
    a = a - a.mean(dim=1, keepdim=True)
    b = b - b.mean(dim=1, keepdim=True)
    return (a * b).sum(dim=1) / (a.norm(dim=1) * b.norm(dim=1) + eps)


def paper_loss(pred: torch.Tensor, target: torch.Tensor, w: float = 0.001, reduction: str = "mean") -> torch.Tensor:
    """The paper's loss: ``(1 - w) * MSE + w * (1 - Pearson CC)`` per map, averaged over the batch.

    The weights follow the paper's code (0.999 MSE + 0.001 (1 - CC) for the default ``w``).

    Parameters
    ----------
    pred, target : torch.Tensor
        Maps of equal shape (B, ...).
    w : float
        Weight of the correlation term, in [0, 1].
    reduction : str
        ``'mean'`` (scalar) or ``'none'`` (per map, shape (B,)).

    Returns
    -------
    torch.Tensor
        Scalar, or (B,) with ``reduction='none'``.
    """
    if not 0.0 <= w <= 1.0:
        raise PattersonError(f"loss weight w must be in [0, 1], got {w}")
    if reduction not in ("mean", "none"):
        raise PattersonError(f"reduction must be 'mean' or 'none', got {reduction!r}")
    _check_pair(pred, target)
    mse = (pred - target).pow(2).reshape(pred.shape[0], -1).mean(dim=1)  # (B,)
    per_map = (1.0 - w) * mse + w * (1.0 - pearson_cc(pred, target))  # (B,)
    return per_map.mean() if reduction == "mean" else per_map


def _as_5d(x: torch.Tensor) -> torch.Tensor:
    if x.dim() == 4:
        return x.unsqueeze(1)  # (B, 1, X, Y, Z)
    if x.dim() == 5:
        return x
    raise PattersonError(f"maps must be shaped (B, C, X, Y, Z) or (B, X, Y, Z), got {tuple(x.shape)}")


def apply_alignment(x: torch.Tensor, shift: torch.Tensor, inverted: torch.Tensor) -> torch.Tensor:
    """Move each map by an integer periodic shift, after an optional inversion; differentiable in ``x``.

    ``out[b] = roll(invert_map(x[b]) if inverted[b] else x[b], shift[b], dims=(-3, -2, -1))``, done by
    one gather-style index so gradients flow back to ``x``.

    Parameters
    ----------
    x : torch.Tensor
        Maps (B, C, X, Y, Z) or (B, X, Y, Z).
    shift : torch.Tensor
        Integer shifts (B, 3).
    inverted : torch.Tensor
        Booleans (B,).

    Returns
    -------
    torch.Tensor
        Same shape as ``x``.
    """
    x5 = _as_5d(x)
    b, _, *grid = x5.shape
    shift = torch.as_tensor(shift, device=x.device).long().reshape(b, 3)
    sign = 1 - 2 * torch.as_tensor(inverted, device=x.device).long().reshape(b, 1)  # +1 or -1, (B, 1)
    # source index per axis: s * (i - t) mod n, with s = -1 for the inverted hand; (B, n) each
    idx = [(sign * (torch.arange(n, device=x.device)[None, :] - shift[:, a : a + 1])) % n for a, n in enumerate(grid)]
    xl = x5.movedim(1, -1)  # (B, X, Y, Z, C)
    batch = torch.arange(b, device=x.device)[:, None, None, None]
    out = xl[batch, idx[0][:, :, None, None], idx[1][:, None, :, None], idx[2][:, None, None, :]]  # (B, X, Y, Z, C)
    out = out.movedim(-1, 1)  # (B, C, X, Y, Z)
    return out if x.dim() == 5 else out.squeeze(1)


def align_to_target(
    pred: torch.Tensor, target: torch.Tensor, allow_inversion: bool = True
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Shift (and optionally invert) each predicted map to best match its target.

    The shift maximising the periodic cross-correlation ``sum_x pred(x - t) target(x)`` (summed over channels)
    is found with real FFTs; with ``allow_inversion`` the inverted hand ``pred(-x)`` is searched too and wins only
    if strictly better. The same shift minimises the MSE and maximises the Pearson CC among integer shifts.
    The search runs without gradients; the returned map is a re-indexing of ``pred`` and so is differentiable.

    Parameters
    ----------
    pred, target : torch.Tensor
        Maps (B, C, X, Y, Z) or (B, X, Y, Z) of equal shape.
    allow_inversion : bool
        Also consider ``x -> -x`` (Patterson maps cannot tell the two hands apart).

    Returns
    -------
    aligned : torch.Tensor
        ``apply_alignment(pred, shift, inverted)``, same shape as ``pred``.
    shift : torch.Tensor
        (B, 3) int64 shifts in ``[0, n)`` along X, Y, Z.
    inverted : torch.Tensor
        (B,) bool, True where the inverted hand was used.
    """
    _check_pair(pred, target)
    p5, t5 = _as_5d(pred), _as_5d(target)
    b, grid = p5.shape[0], tuple(p5.shape[2:])
    dims = (-3, -2, -1)
    with torch.no_grad():
        fp = torch.fft.rfftn(p5.detach().double(), dim=dims)  # (B, C, X, Y, Z//2+1)
        ft = torch.fft.rfftn(t5.detach().double(), dim=dims)
        # sum_x p(x - t) q(x) = IFFT(conj(P) Q)(t);  for p_inv(x) = p(-x), FFT(p_inv) = conj(P)
        corr = torch.fft.irfftn((fp.conj() * ft).sum(dim=1), s=grid, dim=dims).reshape(b, -1)  # (B, X*Y*Z)
        best, flat = corr.max(dim=1)
        inverted = torch.zeros(b, dtype=torch.bool, device=pred.device)
        if allow_inversion:
            corr_inv = torch.fft.irfftn((fp * ft).sum(dim=1), s=grid, dim=dims).reshape(b, -1)
            best_inv, flat_inv = corr_inv.max(dim=1)
            tol = 1e-9 * corr.abs().amax(dim=1).clamp_min(1e-300)
            inverted = best_inv > best + tol
            flat = torch.where(inverted, flat_inv, flat)
        ny, nz = grid[1], grid[2]
        shift = torch.stack([flat // (ny * nz), (flat // nz) % ny, flat % nz], dim=1)  # (B, 3)
    return apply_alignment(pred, shift, inverted), shift, inverted


def invariant_loss(
    pred: torch.Tensor,
    target: torch.Tensor,
    base: LossFn = paper_loss,
    allow_inversion: bool = True,
) -> torch.Tensor:
    """Origin- (and hand-) invariant loss: ``base(align_to_target(pred, target)[0], target)``.

    Parameters
    ----------
    pred, target : torch.Tensor
        Maps (B, C, X, Y, Z) or (B, X, Y, Z) of equal shape.
    base : callable
        Loss applied after alignment, ``base(aligned_pred, target)``; default :func:`paper_loss`.
    allow_inversion : bool
        Also forgive the inverted hand.

    Returns
    -------
    torch.Tensor
        Whatever ``base`` returns (a scalar for the default).
    """
    aligned, _, _ = align_to_target(pred, target, allow_inversion=allow_inversion)
    return base(aligned, target)
