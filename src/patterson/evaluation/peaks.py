"""Peaks and atoms: periodic local maxima above a fraction of the maximum, interatomic vectors, atom recovery.

The 2021 report judged predictions by the voxels above 70% of the map maximum and by comparing the vectors between
atoms of the truth with the vectors between maxima of the prediction (its Table 1). Vectors between atoms do not
change when the map is shifted or inverted, so they can be compared without an alignment; atom positions are
compared after the origin/hand alignment of :mod:`patterson.evaluation.metrics`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from patterson.cells import Cell, frac_distances
from patterson.errors import PattersonError
from patterson.evaluation.metrics import as_map_batch

REPORT_THRESHOLD = 0.7  # the 2021 report: voxels above 70% of the maximum


@dataclass(frozen=True)
class Peaks:
    """Peaks of one map, highest first: frac (P, 3) fractional positions in [0, 1), height (P,) map values."""

    frac: np.ndarray
    height: np.ndarray

    def __len__(self) -> int:
        return len(self.height)


def find_peaks(
    rho: torch.Tensor | np.ndarray,
    cell: Cell,
    threshold: float = REPORT_THRESHOLD,
    min_separation: float = 0.8,
    max_peaks: int | None = None,
    refine: bool = True,
) -> list[Peaks]:
    """Periodic local maxima above ``threshold`` × the map's maximum, for each map of a batch.

    Parameters
    ----------
    rho : (B, X, Y, Z) or (X, Y, Z) maps.
    cell : their cell (for distances).
    threshold : keep peaks higher than this fraction of the map's maximum (the report used 0.7).
    min_separation : of peaks closer than this (Å) only the highest is kept (plateaus, split maxima).
    max_peaks : keep at most this many (highest first).
    refine : move each peak to the vertex of a parabola through it and its two neighbours, per axis.

    Returns
    -------
    A list of B :class:`Peaks`.
    """
    maps = as_map_batch(rho, "map")  # (B, X, Y, Z)
    shape = np.array(maps.shape[-3:])
    x5 = maps.unsqueeze(1)  # (B, 1, X, Y, Z)
    neighbourhood = F.max_pool3d(F.pad(x5, (1, 1, 1, 1, 1, 1), mode="circular"), kernel_size=3, stride=1)
    top = maps.reshape(maps.shape[0], -1).amax(1)  # (B,)
    is_peak = (x5 >= neighbourhood).squeeze(1) & (maps > threshold * top[:, None, None, None])
    out = []
    for b in range(maps.shape[0]):
        idx = torch.nonzero(is_peak[b]).cpu().numpy()  # (P, 3)
        m = maps[b].cpu().numpy()
        height = m[idx[:, 0], idx[:, 1], idx[:, 2]] if len(idx) else np.zeros(0)
        frac = idx.astype(np.float64)
        if refine and len(idx):
            for axis in range(3):
                lo, hi = idx.copy(), idx.copy()
                lo[:, axis] = (lo[:, axis] - 1) % shape[axis]
                hi[:, axis] = (hi[:, axis] + 1) % shape[axis]
                vm, vp = m[lo[:, 0], lo[:, 1], lo[:, 2]], m[hi[:, 0], hi[:, 1], hi[:, 2]]
                curv = vm - 2 * height + vp
                with np.errstate(divide="ignore", invalid="ignore"):
                    off = np.where(curv < 0, 0.5 * (vm - vp) / curv, 0.0)
                frac[:, axis] += np.clip(off, -0.5, 0.5)
        frac = np.mod(frac / shape, 1.0)
        order = np.argsort(-height, kind="stable")
        frac, height = frac[order], height[order]
        keep = separated(frac, cell, min_separation, max_peaks)
        out.append(Peaks(frac[keep], height[keep]))
    return out


def separated(frac: np.ndarray, cell: Cell, min_separation: float, max_peaks: int | None = None,
              block: int = 128) -> list[int]:  # fmt: skip
    """Greedy selection, in the given order (highest first), of the points (P, 3) at least ``min_separation`` Å from
    every point kept before them, up to ``max_peaks``. Blocks of ``block`` candidates are tested against the kept
    points (in chunks), then among themselves, so memory stays O(block²) whatever P (never a P × P array)."""
    keep: list[int] = []
    for start in range(0, len(frac), block):
        idx = np.arange(start, min(start + block, len(frac)))
        if keep:
            idx = idx[nearest_distance(frac[idx], frac[keep], cell, block) >= min_separation]
        inner = frac_distances(frac[idx], frac[idx], cell)  # (b, b)
        chosen: list[int] = []
        for n, i in enumerate(idx):
            if all(inner[n, c] >= min_separation for c in chosen):
                chosen.append(n)
                keep.append(int(i))
                if max_peaks is not None and len(keep) >= max_peaks:
                    return keep
    return keep


def nearest_distance(a_frac: np.ndarray, b_frac: np.ndarray, cell: Cell, chunk: int = 128) -> np.ndarray:
    """(P,) the shortest periodic distance in Å from each point of a (P, 3) to any point of b (Q, 3), b taken in
    chunks so that memory stays O(P · chunk)."""
    best = np.full(len(a_frac), np.inf)
    for start in range(0, len(b_frac), chunk):
        best = np.minimum(best, frac_distances(a_frac, b_frac[start : start + chunk], cell).min(axis=1))
    return best


def interatomic_vectors(frac: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Vectors between all pairs i < j of fractional points (N, 3): pairs (P, 2) and vectors (P, 3) in [−½, ½)."""
    frac = np.asarray(frac, dtype=np.float64)
    i, j = np.triu_indices(len(frac), k=1)
    u = frac[j] - frac[i]
    return np.stack([i, j], axis=1), u - np.round(u)


@dataclass(frozen=True)
class VectorMatch:
    """The report's Table 1: each vector between true atoms next to the nearest vector between predicted peaks.

    pairs (P, 2) atom indices; true_vectors, pred_vectors (P, 3) fractional; distance (P,) Å between them
    (modulo the lattice; predicted vectors are taken with both signs). ``nan`` when fewer than 2 peaks.
    """

    pairs: np.ndarray
    true_vectors: np.ndarray
    pred_vectors: np.ndarray
    distance: np.ndarray

    def fraction_within(self, radius: float) -> float:
        """Share of true vectors with a predicted vector within ``radius`` Å (0 when there are no peaks)."""
        if len(self.distance) == 0:
            return float("nan")
        return float(np.mean(np.nan_to_num(self.distance, nan=np.inf) <= radius))

    def count_within(self, radius: float) -> int:
        """Number of true vectors with a predicted vector within ``radius`` Å (0 when there are no peaks)."""
        return int(np.sum(np.nan_to_num(self.distance, nan=np.inf) <= radius))

    def table(self, shape: tuple[int, int, int] | None = None) -> list[tuple[str, str, str, str]]:
        """Rows (pair, true vector, predicted vector, distance Å); vectors in voxel units when ``shape`` is given."""
        scale = np.ones(3) if shape is None else np.asarray(shape, dtype=np.float64)
        fmt = (lambda v: "(" + ",".join(f"{x:.0f}" for x in v) + ")") if shape is not None else None
        fmt = fmt or (lambda v: "(" + ",".join(f"{x:.3f}" for x in v) + ")")
        rows = []
        for (i, j), u, v, d in zip(self.pairs, self.true_vectors, self.pred_vectors, self.distance, strict=True):
            rows.append((f"({i}, {j})", fmt(u * scale), fmt(v * scale) if np.isfinite(d) else "-", f"{d:.2f}"))
        return rows


def compare_vectors(true_frac: np.ndarray, peak_frac: np.ndarray, cell: Cell) -> VectorMatch:
    """For each vector between true atoms (i < j), the nearest vector ±(p_l − p_k) between predicted peaks.

    Origin- and hand-free: no alignment is needed. Distances are in Å, modulo lattice translations.
    """
    pairs, u = interatomic_vectors(true_frac)
    peak_frac = np.asarray(peak_frac, dtype=np.float64).reshape(-1, 3)
    if len(peak_frac) < 2 or len(u) == 0:
        return VectorMatch(pairs, u, np.full_like(u, np.nan), np.full(len(u), np.nan))
    k, l = np.nonzero(~np.eye(len(peak_frac), dtype=bool))
    v = peak_frac[l] - peak_frac[k]  # (Q, 3), both signs
    v = v - np.round(v)
    dist = frac_distances(u, v, cell)  # (P, Q)
    best = dist.argmin(axis=1)
    return VectorMatch(pairs, u, v[best], dist[np.arange(len(u)), best])


def atoms_found(
    true_frac: np.ndarray, peak_frac: np.ndarray, cell: Cell, radii: tuple[float, ...] = (0.5, 1.0)
) -> dict[float, int]:
    """Number of true atoms (N, 3) with an (aligned) peak (P, 3) within each radius in Å, periodic."""
    true_frac = np.asarray(true_frac, dtype=np.float64).reshape(-1, 3)
    if len(true_frac) == 0:
        raise PattersonError("no true atoms to compare peaks with")
    peak_frac = np.asarray(peak_frac, dtype=np.float64).reshape(-1, 3)
    if len(peak_frac) == 0:
        return {float(r): 0 for r in radii}
    nearest = frac_distances(true_frac, peak_frac, cell).min(axis=1)  # (N,)
    return {float(r): int(np.sum(nearest <= r)) for r in radii}


def atom_recovery(
    true_frac: np.ndarray, peak_frac: np.ndarray, cell: Cell, radii: tuple[float, ...] = (0.5, 1.0)
) -> dict[float, float]:
    """Fraction of true atoms (N, 3) with an (aligned) peak (P, 3) within each radius in Å, periodic."""
    n = len(np.asarray(true_frac).reshape(-1, 3))
    return {r: k / n for r, k in atoms_found(true_frac, peak_frac, cell, radii).items()}
