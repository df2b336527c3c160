"""Molecular replacement with a small fragment: place a search model (an ideal strand or helix of
:mod:`patterson.ideal`) in the data's cell and space group.

The search is six-dimensional and exhaustive, as these cells are tiny:

1. rotations on a near-uniform grid over SO(3) (a super-Fibonacci spiral of quaternions, Alexa 2022), spaced
   ``angle_step`` degrees; a rotation whose model overlaps its own lattice translates (a strand along a 4.8 Å axis)
   is dropped before any reflection is looked at;
2. for each rotation a translation function on a grid of ``grid_step`` Å, by FFT: with the model's images under
   the operators x → S x + T, the score Σ_h W(h) |F_calc(h; t)|², W = E_obs² − 1, is a Fourier series in t whose
   coefficients are W(h) G_s(h) G_s'(h)* exp(2πi h·(T_s − T_s')) at k = h (S_s − S_s') (Crowther & Blow 1967);
   axes that no k reaches (the polar y of P2₁) get one grid point;
3. the best rotations are rescored by the correlation of E_obs² and E_calc² with the exact structure factors of the
   model and all its images, placements that clash with their images are dropped, and the best few are refined as
   rigid bodies (rotation vector and translation, 6 parameters, by autograd).

Only the work reflections take part: the free set is left out before anything is computed.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass

import numpy as np
import torch

from patterson.cells import Cell
from patterson.errors import PattersonError
from patterson.minimize import lbfgs
from patterson.physics import AtomBatch, form_factors, resolution_shells, structure_factors
from patterson.structures import Atoms, atomic_numbers
from patterson.symmetry import SpaceGroup

log = logging.getLogger(__name__)

PSI = 1.533751168755204288118041  # super-Fibonacci constants (Alexa 2022)
LATTICE_SHIFTS = np.array([[i, j, k] for i in (-1, 0, 1) for j in (-1, 0, 1) for k in (-1, 0, 1)], dtype=float)


@dataclass(frozen=True, kw_only=True)
class PlacementOptions:
    """How :func:`place_fragment` searches.

    Attributes
    ----------
    angle_step : rotation grid spacing in degrees (mean nearest-neighbour angle).
    grid_step : translation grid spacing in Å.
    d_search : the rotation-translation search uses the work reflections with d ≥ this (Å); the rigid-body
        refinement uses ``d_refine``.
    d_refine : resolution limit of the rescoring and refinement (Å; None: all the data).
    b_search : B (Å²) of the model's atoms in the search: weights the low-resolution terms, where an ideal
        model is right, above the high-resolution ones.
    n_rescore : the best rotations (one translation each) rescored exactly.
    n_refine : the best rescored placements refined as rigid bodies.
    refine_iter : L-BFGS iterations of each rigid-body refinement.
    clash : Å; a placement with more than ``max_clashes`` (a share) of its atoms this close to an atom of an image
        is dropped (the rotation search, before the translation is known, drops rotations so close to the
        model's own lattice translates). Lenient: the grid's poses are 5° and 0.25 Å from the best ones.
    max_clashes : see ``clash``.
    batch : rotations per batch of the translation search (bounds memory).
    """

    angle_step: float = 10.0
    grid_step: float = 0.5
    d_search: float = 2.5
    d_refine: float | None = None
    b_search: float = 20.0
    n_rescore: int = 60
    n_refine: int = 6
    refine_iter: int = 40
    clash: float = 1.8
    max_clashes: float = 0.1
    batch: int = 512

    def __post_init__(self) -> None:
        if not (0.5 <= self.angle_step <= 60 and 0.05 <= self.grid_step <= 5):
            raise PattersonError(f"angle_step must lie in 0.5–60° and grid_step in 0.05–5 Å (got {self.angle_step}, "
                                 f"{self.grid_step})")  # fmt: skip
        if self.n_rescore < 1 or self.n_refine < 1 or self.batch < 1 or self.refine_iter < 0:
            raise PattersonError("n_rescore, n_refine and batch must be at least 1, refine_iter at least 0")


@dataclass(frozen=True)
class Placement:
    """A placed fragment: ``frac`` (N, 3) its atoms in the asymmetric unit (fractional), with the model's
    ``elements`` (N,) and ``b_iso`` (N,); the rotation (3, 3) and the fractional translation (3,) of its centre
    that put the model (centred on the origin) there; ``cc`` the correlation of E_obs² and E_calc² on the work
    reflections to ``d_refine`` after refinement, ``cc_search`` before; ``others`` the runners-up as
    (cc, rotation, translation), best first."""

    frac: np.ndarray
    elements: np.ndarray
    b_iso: np.ndarray
    rotation: np.ndarray
    translation: np.ndarray
    cc: float
    cc_search: float
    others: list[tuple[float, np.ndarray, np.ndarray]]


# --- the rotation grid and the lattice clash ------------------------------------------------------------------


def rotation_grid(step_deg: float) -> np.ndarray:
    """(R, 3, 3) rotations spread evenly over SO(3), about ``step_deg`` degrees between neighbours: a
    super-Fibonacci spiral on the unit quaternions (Alexa 2022), one of each ±q pair."""
    step = math.radians(step_deg)
    n = max(8, int(round(2 * 1.65 * math.pi**2 / step**3)))  # points on S³: each rotation twice, ~step apart
    s = np.arange(n) + 0.5
    r, big_r = np.sqrt(s / n), np.sqrt(1 - s / n)
    alpha, beta = 2 * np.pi * s / math.sqrt(2), 2 * np.pi * s / PSI
    q = np.stack([r * np.sin(alpha), r * np.cos(alpha), big_r * np.sin(beta), big_r * np.cos(beta)], axis=1)
    q = q[q[:, 0] >= 0]  # (R, 4) one of q, −q
    return quaternion_matrices(q)


def quaternion_matrices(q: np.ndarray) -> np.ndarray:
    """(R, 3, 3) rotation matrices of unit quaternions (R, 4) in (w, x, y, z) order."""
    w, x, y, z = q.T
    return np.stack([
        np.stack([1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)], -1),
        np.stack([2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)], -1),
        np.stack([2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)], -1),
    ], axis=1)  # fmt: skip


def lattice_clashes(xyz: np.ndarray, rotations: np.ndarray, cell: Cell, distance: float) -> np.ndarray:
    """(R,) the number of the model's atoms (N, 3 Å, centred) that, rotated, lie within ``distance`` Å of an atom of
    one of their own lattice translates: whatever the translation, such a model cannot pack."""
    reach = 2 * float(np.linalg.norm(xyz, axis=1).max()) + distance
    shifts = cell.to_cartesian(np.array([[i, j, k] for i in range(-3, 4) for j in range(-3, 4) for k in range(-3, 4)
                                         if (i, j, k) != (0, 0, 0)], dtype=float))  # fmt: skip
    shifts = shifts[np.linalg.norm(shifts, axis=1) < reach]  # (L, 3)
    i, j = np.triu_indices(len(xyz))
    d = xyz[i] - xyz[j]  # (Q, 3) pair vectors, i ≤ j
    q, ell = np.nonzero(np.abs(np.linalg.norm(d, axis=1)[:, None] - np.linalg.norm(shifts, axis=1)[None]) < distance)
    d_t, l_t = torch.as_tensor(d[q], dtype=torch.float32), torch.as_tensor(shifts[ell], dtype=torch.float32)
    base = (d_t * d_t).sum(-1) + (l_t * l_t).sum(-1)  # (C,) |d|² + |L|² of the pairs that can come that close
    atoms = torch.as_tensor(np.concatenate([i[q], j[q]]))
    out = np.zeros(len(rotations), dtype=np.int64)
    for start in range(0, len(rotations), 256):
        rot = torch.as_tensor(rotations[start : start + 256], dtype=torch.float32)  # (r, 3, 3)
        near = (base - 2 * torch.einsum("rij,cj,ci->rc", rot, d_t, l_t) < distance**2).float()  # (r, C)
        hit = torch.zeros(len(rot), len(xyz)).index_add_(1, atoms, torch.cat([near, near], dim=1))
        out[start : start + 256] = (hit > 0).sum(-1).numpy()
    return out


# --- the search target -----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SearchTarget:
    """The work reflections a search sees: hkl (M, 3) on the Friedel half, e2 (M,) E_obs² normalised per
    resolution shell, shell (M,) their shell, the cell and the space group."""

    hkl: np.ndarray
    e2: np.ndarray
    shell: np.ndarray
    cell: Cell
    group: SpaceGroup


def search_target(hkl: np.ndarray, f: np.ndarray, cell: Cell, group: SpaceGroup, work: np.ndarray | None,
                  d_min: float | None = None) -> SearchTarget:  # fmt: skip
    """The work reflections (``work`` (M,) bool; None: all) with d ≥ ``d_min`` and F > 0, their E² from shells of
    the work set alone: nothing of the free set is kept."""
    hkl, f = np.asarray(hkl), np.asarray(f, dtype=np.float64)
    keep = np.ones(len(hkl), dtype=bool) if work is None else np.asarray(work, dtype=bool).copy()
    if d_min is not None:
        keep &= cell.d_spacing(hkl) >= d_min * (1 - 1e-9)
    keep &= f > 0
    if keep.sum() < 20:
        raise PattersonError(f"only {int(keep.sum())} work reflections to search with: at least 20 are needed")
    hkl, f = hkl[keep], f[keep]
    shell, _ = resolution_shells(cell.d_spacing(hkl), max(1, min(10, len(hkl) // 40)))
    mean = np.bincount(shell, weights=f**2) / np.bincount(shell)
    return SearchTarget(hkl, f**2 / mean[shell], shell, cell, group)


def _scattering(z: np.ndarray, hkl: np.ndarray, cell: Cell, b_iso: float) -> torch.Tensor:
    """(N, M) float32 f_j(s) exp(−B s²/4) of atoms with atomic numbers z (N,) at hkl (M, 3)."""
    stol2 = torch.as_tensor(cell.inv_d2(hkl) / 4.0)
    elements, index = np.unique(z, return_inverse=True)
    f = form_factors(torch.as_tensor(elements), stol2) * torch.exp(-b_iso * stol2)  # (E, M)
    return f[torch.as_tensor(index)].float()


def _pair_terms(target: SearchTarget) -> tuple[list[tuple[int, int]], np.ndarray, list[int]]:
    """The operator pairs (s, s'), their frequencies k = h (S_s − S_s') as (P, M, 3), and the axes some k
    reaches (the others are polar: the score does not change along them)."""
    rot, pairs = target.group.rot, []
    ks = []
    for s in range(len(rot)):
        for s2 in range(len(rot)):
            pairs.append((s, s2))
            ks.append(target.hkl @ (rot[s] - rot[s2]))
    ks = np.stack(ks)  # (P, M, 3)
    axes = [a for a in range(3) if np.any(ks[..., a] != 0)]
    return pairs, ks, axes


def _translation_grid(target: SearchTarget, step: float, axes: list[int]) -> tuple[int, int, int]:
    widths = np.array([target.cell.a, target.cell.b, target.cell.c])
    return tuple(max(4, int(math.ceil(widths[a] / step))) if a in axes else 1 for a in range(3))


# --- the translation function ----------------------------------------------------------------------------------


def translation_search(target: SearchTarget, xyz: np.ndarray, z: np.ndarray, rotations: np.ndarray,
                       options: PlacementOptions, n_peaks: int = 3) -> tuple[np.ndarray, np.ndarray]:  # fmt: skip
    """For each rotation (R, 3, 3) of the model (atoms xyz (N, 3) Å centred on the origin, atomic numbers z (N,))
    the ``n_peaks`` highest local maxima of the translation function on the grid: returns their heights
    Σ W |F_calc|² in standard deviations over the grid (R, P) and the fractional translations (R, P, 3)."""
    pairs, ks, axes = _pair_terms(target)
    shape = _translation_grid(target, options.grid_step, axes)
    n = np.array(shape)
    flat = torch.as_tensor(np.ravel_multi_index(tuple(np.mod(ks, n).transpose(2, 0, 1)), shape))  # (P, M)
    rot, tran = target.group.rot, target.group.tran
    shift = np.stack([np.exp(2j * np.pi * target.hkl @ (tran[s] - tran[s2])) for s, s2 in pairs])  # (P, M)
    weight = torch.as_tensor((target.e2 - 1.0) * shift).to(torch.complex64)  # (P, M) W(h) e^{2πi h·(T_s − T_s')}
    f_atoms = _scattering(z, target.hkl, target.cell, options.b_search)  # (N, M)
    hs = torch.as_tensor(np.stack([target.hkl @ r for r in rot]), dtype=torch.float32)  # (K, M, 3)
    frac_m = torch.as_tensor(target.cell.frac, dtype=torch.float32)
    first, second = [p[0] for p in pairs], [p[1] for p in pairs]
    scores, best = np.zeros((len(rotations), n_peaks)), np.zeros((len(rotations), n_peaks, 3))
    for start in range(0, len(rotations), options.batch):
        rr = torch.as_tensor(rotations[start : start + options.batch], dtype=torch.float32)  # (r, 3, 3)
        x = torch.einsum("ij,rjk,nk->rni", frac_m, rr, torch.as_tensor(xyz, dtype=torch.float32))  # (r, N, 3)
        theta = 2 * math.pi * torch.einsum("rni,kmi->krnm", x, hs)  # (K, r, N, M)
        g = torch.complex((torch.cos(theta) * f_atoms).sum(2), (torch.sin(theta) * f_atoms).sum(2))  # (K, r, M)
        coeff = weight[:, None] * g[first] * g[second].conj()  # (P, r, M)
        grid = torch.zeros(coeff.shape[1], int(n.prod()), dtype=torch.complex64)
        grid.index_add_(1, flat.reshape(-1), coeff.permute(1, 0, 2).reshape(coeff.shape[1], -1))
        t_map = torch.fft.ifftn(grid.reshape(-1, *shape), dim=(1, 2, 3)).real  # (r, X, Y, Z)
        height, top = _local_maxima(t_map, n_peaks)  # (r, P) each
        scores[start : start + len(rr)] = height.numpy()
        best[start : start + len(rr)] = np.stack(np.unravel_index(top.numpy(), shape), -1) / n
    return scores, best


def _local_maxima(t_map: torch.Tensor, n_peaks: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The ``n_peaks`` highest local maxima (periodic neighbours along each axis) of maps (r, X, Y, Z): their
    heights in standard deviations above the mean (r, P) and flat indices (r, P); fewer maxima repeat the best."""
    peak = torch.ones_like(t_map, dtype=torch.bool)
    for axis in (1, 2, 3):
        if t_map.shape[axis] > 1:
            peak &= (t_map >= t_map.roll(1, axis)) & (t_map >= t_map.roll(-1, axis))
    flat = t_map.reshape(len(t_map), -1)
    z = (flat - flat.mean(-1, keepdim=True)) / flat.std(-1, correction=0, keepdim=True).clamp_min(1e-12)
    masked = torch.where(peak.reshape(len(t_map), -1), z, torch.full_like(z, -torch.inf))
    height, index = masked.topk(min(n_peaks, flat.shape[1]), dim=-1)
    fallback = index[:, :1].expand_as(index)
    index = torch.where(torch.isfinite(height), index, fallback)
    return torch.where(torch.isfinite(height), height, height[:, :1].expand_as(height)), index


# --- exact scores and the rigid-body refinement ----------------------------------------------------------------


def images(frac: torch.Tensor, group: SpaceGroup) -> torch.Tensor:
    """(C, N, 3) fractional sites → (C, K·N, 3) their images under the K operators (x' = S x + T), operator-major."""
    rot = torch.as_tensor(group.rot, dtype=frac.dtype)  # (K, 3, 3)
    tran = torch.as_tensor(group.tran, dtype=frac.dtype)  # (K, 3)
    out = torch.einsum("kij,cnj->ckni", rot, frac) + tran[None, :, None, :]  # (C, K, N, 3)
    return out.reshape(frac.shape[0], -1, 3)


def placed_frac(xyz: torch.Tensor, rotation: torch.Tensor, translation: torch.Tensor, cell: Cell) -> torch.Tensor:
    """(C, N, 3) fractional sites of the model xyz (N, 3) Å (centred) rotated by (C, 3, 3) and moved by the
    fractional translations (C, 3)."""
    frac_m = torch.as_tensor(cell.frac, dtype=xyz.dtype)
    return torch.einsum("ij,cjk,nk->cni", frac_m, rotation, xyz) + translation[:, None, :]


def calculated_f(target: SearchTarget, frac: torch.Tensor, z: np.ndarray, b_iso: float,
                 occ: np.ndarray | None = None) -> torch.Tensor:  # fmt: skip
    """(C, M) complex F_calc at the target's reflections of C placements of the model, frac (C, N, 3) (one copy;
    the images are added here), atomic numbers z (N,), one B, occupancies occ (N,) (None: 1); differentiable in
    frac."""
    sites = images(frac, target.group)  # (C, K·N, 3)
    k = len(target.group.rot)
    zz = torch.as_tensor(np.tile(z, k)).expand(sites.shape[0], -1)
    ones = torch.ones(sites.shape[:2], dtype=sites.dtype)
    weights = ones if occ is None else torch.as_tensor(np.tile(occ, k), dtype=sites.dtype).expand_as(ones)
    return structure_factors(AtomBatch(sites, zz, ones * b_iso, weights, target.cell), target.hkl)


def intensities(target: SearchTarget, frac: torch.Tensor, z: np.ndarray, b_iso: float,
                occ: np.ndarray | None = None) -> torch.Tensor:  # fmt: skip
    """(C, M) |F_calc|² (arguments as :func:`calculated_f`); differentiable in frac."""
    return calculated_f(target, frac, z, b_iso, occ).abs() ** 2


def per_shell(target: SearchTarget, i_calc: torch.Tensor) -> torch.Tensor:
    """(C, M) intensities i_calc (C, M) over their mean in each of the target's resolution shells: E_calc²."""
    shell = torch.as_tensor(target.shell)
    n_shells = int(shell.max()) + 1
    sums = torch.zeros(i_calc.shape[0], n_shells, dtype=i_calc.dtype).index_add_(1, shell, i_calc)
    counts = torch.bincount(shell, minlength=n_shells).to(i_calc.dtype)
    return i_calc / (sums / counts)[:, shell]


def e2_correlation(target: SearchTarget, frac: torch.Tensor, z: np.ndarray, b_iso: float,
                   occ: np.ndarray | None = None) -> torch.Tensor:  # fmt: skip
    """(C,) the correlation of E_obs² and E_calc² over the target's reflections for C placements of the model
    (arguments as :func:`intensities`); differentiable in frac."""
    e2c = per_shell(target, intensities(target, frac, z, b_iso, occ))  # (C, M)
    eo = torch.as_tensor(target.e2 - target.e2.mean(), dtype=e2c.dtype)
    ec = e2c - e2c.mean(-1, keepdim=True)
    return (ec @ eo) / torch.sqrt((ec**2).sum(-1) * (eo**2).sum()).clamp_min(1e-30)


def skew(w: torch.Tensor) -> torch.Tensor:
    """(..., 3, 3) the cross-product matrices [w]× of vectors w (..., 3): [w]× v = w × v; differentiable."""
    x, y, z = w.unbind(-1)
    zero = torch.zeros_like(x)
    return torch.stack([torch.stack([zero, -z, y], -1), torch.stack([z, zero, -x], -1),
                        torch.stack([-y, x, zero], -1)], -2)  # fmt: skip


def rigid_refine(target: SearchTarget, xyz: np.ndarray, z: np.ndarray, pose: tuple[np.ndarray, np.ndarray],
                 b_iso: float, n_iter: int) -> tuple[np.ndarray, np.ndarray, float]:  # fmt: skip
    """Refine a placement as a rigid body (rotation vector and translation, 6 parameters) to the largest E²
    correlation on the target's reflections. ``pose``: rotation (3, 3) and fractional translation (3,). Returns
    the refined rotation, translation and correlation."""
    x = torch.as_tensor(xyz, dtype=torch.float64)
    radius = max(float(x.norm(dim=1).max()), 1.0)  # Å: a unit rotation parameter moves the far atoms ~1 Å
    r0 = torch.as_tensor(pose[0], dtype=torch.float64)
    t0 = torch.as_tensor(pose[1], dtype=torch.float64)
    frac_m = torch.as_tensor(target.cell.frac)

    def pose_of(p: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return torch.linalg.matrix_exp(skew(p[:3] / radius)) @ r0, t0 + frac_m @ p[3:]

    def loss(p: torch.Tensor) -> torch.Tensor:
        rot, tr = pose_of(p)
        return -e2_correlation(target, placed_frac(x, rot[None], tr[None], target.cell), z, b_iso)[0]

    p = lbfgs(loss, torch.zeros(6, dtype=torch.float64), n_iter) if n_iter else torch.zeros(6, dtype=torch.float64)
    rot, tr = pose_of(p)
    return rot.numpy(), tr.numpy(), -float(loss(p))


def image_clashes(frac: np.ndarray, group: SpaceGroup, cell: Cell, distance: float) -> int:
    """The number of atoms of one placed copy (N, 3 fractional) within ``distance`` Å of an atom of another copy
    (any operator and lattice translation but the copy itself)."""
    out = np.zeros(len(frac), dtype=bool)
    for rot, tran in zip(group.rot, group.tran, strict=True):
        itself = np.array_equal(rot, np.eye(3)) and not np.any(np.abs(tran) > 1e-9)
        other = frac @ rot.T + tran  # (N, 3)
        diff = frac[:, None, :] - other[None, :, :]  # (N, N, 3)
        shifts = LATTICE_SHIFTS[np.any(LATTICE_SHIFTS != 0, axis=1)] if itself else LATTICE_SHIFTS
        if not itself:
            diff = diff - np.round(diff)
        cart = cell.to_cartesian(diff[:, :, None, :] + shifts)  # (N, N, S, 3)
        out |= (np.einsum("...i,...i->...", cart, cart) < distance**2).any(axis=(1, 2))
    return int(out.sum())


# --- the whole search ------------------------------------------------------------------------------------------


def _rescore(target: SearchTarget, xyz: np.ndarray, z: np.ndarray, poses: tuple[np.ndarray, np.ndarray],
             b_iso: float, chunk: int = 256) -> np.ndarray:  # fmt: skip
    """(C,) the exact E² correlation of C poses: rotations (C, 3, 3), fractional translations (C, 3)."""
    x = torch.as_tensor(xyz, dtype=torch.float64)
    out = []
    with torch.no_grad():
        for start in range(0, len(poses[0]), chunk):
            rot = torch.as_tensor(poses[0][start : start + chunk])
            tr = torch.as_tensor(poses[1][start : start + chunk])
            out.append(e2_correlation(target, placed_frac(x, rot, tr, target.cell), z, b_iso).numpy())
    return np.concatenate(out) if out else np.zeros(0)


def search_poses(model: Atoms, target: SearchTarget, options: PlacementOptions) -> list[tuple]:
    """The rotation and translation search: [(cc, rotation (3, 3), fractional translation (3,))] of the
    ``n_rescore`` best poses by the exact E² correlation on ``target``, best first, each rotation once."""
    xyz, z = model.xyz - model.xyz.mean(axis=0), atomic_numbers(model.elements)
    rotations = rotation_grid(options.angle_step)
    packs = lattice_clashes(xyz, rotations, target.cell, options.clash) <= options.max_clashes * len(xyz)
    if not packs.any():
        raise PattersonError(f"the {len(model)}-atom model overlaps its own lattice translates in every orientation: "
                             f"it does not fit the cell {target.cell.text}")  # fmt: skip
    rotations = rotations[packs]
    log.info("rotation search: %d of %d rotations pack in the lattice", int(packs.sum()), len(packs))
    _, trans = translation_search(target, xyz, z, rotations, options)  # (R, P, 3)
    n_peaks = trans.shape[1]
    rot_all = np.repeat(rotations, n_peaks, axis=0)  # (R·P, 3, 3)
    cc = _rescore(target, xyz, z, (rot_all, trans.reshape(-1, 3)), options.b_search).reshape(-1, n_peaks)
    best_peak = cc.argmax(-1)  # (R,)
    cc_rot = cc[np.arange(len(cc)), best_peak]
    order = np.argsort(-cc_rot)[: options.n_rescore]
    return [(float(cc_rot[i]), rotations[i], trans[i, best_peak[i]]) for i in order]


def local_rotations(rotation: np.ndarray, span_deg: float, step_deg: float) -> np.ndarray:
    """(R, 3, 3) rotations exp([ω]×) · rotation for rotation vectors ω on a cubic grid of ``step_deg`` within
    ``span_deg`` of the identity (a ball)."""
    ticks = np.radians(np.arange(-span_deg, span_deg + 1e-9, step_deg))
    omega = np.stack(np.meshgrid(ticks, ticks, ticks, indexing="ij"), -1).reshape(-1, 3)  # (G, 3)
    omega = omega[np.linalg.norm(omega, axis=1) <= math.radians(span_deg) + 1e-9]
    skew = np.zeros((len(omega), 3, 3))
    skew[:, 0, 1], skew[:, 0, 2], skew[:, 1, 2] = -omega[:, 2], omega[:, 1], -omega[:, 0]
    skew -= skew.transpose(0, 2, 1)
    return torch.linalg.matrix_exp(torch.as_tensor(skew)).numpy() @ rotation


def local_search(target: SearchTarget, xyz: np.ndarray, z: np.ndarray, rotation: np.ndarray,
                 options: PlacementOptions) -> tuple[float, np.ndarray, np.ndarray]:  # fmt: skip
    """The best pose (cc, rotation, translation) near ``rotation``: a finer rotation grid (a third of the global
    step, out to its full step) with the translation function on a grid of half its step, rescored exactly."""
    rotations = local_rotations(rotation, options.angle_step, options.angle_step / 3)
    fine = PlacementOptions(**{**options.__dict__, "grid_step": options.grid_step / 2})
    _, trans = translation_search(target, xyz, z, rotations, fine, n_peaks=1)  # (R, 1, 3)
    cc = _rescore(target, xyz, z, (rotations, trans[:, 0]), options.b_search)
    best = int(np.argmax(cc))
    return float(cc[best]), rotations[best], trans[best, 0]


def distinct(target: SearchTarget, xyz: np.ndarray, z: np.ndarray, poses: list[tuple], same: float = 0.99) -> list:
    """The poses (rotation, translation, ...) best first, without those equivalent to a better one: placements
    related by the space group or a permitted origin shift give the same |F_calc|, so a correlation of E_calc² above
    ``same`` marks a copy."""
    x = torch.as_tensor(xyz)
    rot = torch.as_tensor(np.stack([p[0] for p in poses]))
    tr = torch.as_tensor(np.stack([p[1] for p in poses]))
    with torch.no_grad():
        i_calc = intensities(target, placed_frac(x, rot, tr, target.cell), z, 20.0)  # (C, M)
    centred = i_calc - i_calc.mean(-1, keepdim=True)
    centred = centred / torch.linalg.vector_norm(centred, dim=-1, keepdim=True).clamp_min(1e-30)
    similar = (centred @ centred.T).numpy()  # (C, C)
    kept: list[int] = []
    for i in range(len(poses)):
        if all(similar[i, j] < same for j in kept):
            kept.append(i)
    return [poses[i] for i in kept]


def place_fragment(model: Atoms, hkl: np.ndarray, f: np.ndarray, cell: Cell, group: SpaceGroup,
                   work: np.ndarray | None = None, options: PlacementOptions | None = None) -> Placement:  # fmt: skip
    """Place a search model in the crystal: rotation and translation search, then rigid-body refinement of the
    best poses that do not clash with their images.

    Parameters
    ----------
    model : the search model (Cartesian Å, e.g. :func:`patterson.ideal.ideal_strand`); its B-factors are kept.
    hkl, f : (M, 3) reflections on the Friedel half of P1 (the data expanded to P1) and their amplitudes (M,).
    cell, group : the crystal's cell and space group.
    work : (M,) bool, the reflections the search may use (None: all); the free set is never read.
    options : :class:`PlacementOptions` (None: the defaults).

    Returns
    -------
    The best :class:`Placement` by the refined E² correlation on the work reflections.
    """
    options = options or PlacementOptions()
    if len(model) < 3:
        raise PattersonError(f"a search model of {len(model)} atoms: at least 3 are needed")
    target = search_target(hkl, f, cell, group, work, options.d_search)
    fine = search_target(hkl, f, cell, group, work, options.d_refine)
    xyz, z = model.xyz - model.xyz.mean(axis=0), atomic_numbers(model.elements)
    poses = search_poses(model, target, options)
    kept = []
    for cc, rot, tr in poses:
        frac = placed_frac(torch.as_tensor(xyz), torch.as_tensor(rot)[None], torch.as_tensor(tr)[None], cell)[0]
        if image_clashes(frac.numpy(), group, cell, options.clash) <= options.max_clashes * len(xyz):
            kept.append((cc, rot, tr))
        if len(kept) == options.n_refine:
            break
    if not kept:
        raise PattersonError("every pose the search found overlaps its symmetry images: no placement")
    refined = []
    for _, rot, tr in kept:
        cc, rot, tr = local_search(target, xyz, z, rot, options)
        refined.append((*rigid_refine(fine, xyz, z, (rot, tr), options.b_search, options.refine_iter), cc))
    refined = distinct(fine, xyz, z, sorted(refined, key=lambda r: -r[2]))
    rot, tr, cc, cc_search = refined[0]
    frac = placed_frac(torch.as_tensor(xyz), torch.as_tensor(rot)[None], torch.as_tensor(tr)[None], cell)[0].numpy()
    log.info("placed %d atoms: E² correlation %.3f after refinement (%.3f in the search)", len(xyz), cc, cc_search)
    return Placement(frac, model.elements.copy(), model.b_iso.copy(), rot, tr, cc, cc_search,
                     [(r[2], r[0], r[1]) for r in refined[1:]])  # fmt: skip
