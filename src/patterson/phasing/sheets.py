"""Placing β-strands in crystals of stacked peptides (amyloid-like steric zippers), where one strand repeats every
4.8 Å along a cell axis.

In such a crystal the strands are H-bonded into sheets along a lattice vector of about 4.8 Å (parallel strands,
a pure translation) or 9.6 Å (two strands per repeat, e.g. antiparallel by a 2₁ screw): each strand's H-bond
direction lies along that vector and its axis across it. That leaves one rotation angle free instead of three, so
the search can afford what imprecise search models need:

1. real strand shapes, not one ideal strand: the leaders of the largest clusters of 5-residue β-strand windows in
   real chains (``weights/strands.json``, written by ``benchmarks/strand_conformers.py``);
2. for each, rotations about every stacking axis (``angle_step``) with small tilts, a translation function
   (:func:`~patterson.phasing.placement.translation_search`), and only the poses whose N atoms find O atoms of
   other copies at H-bond distance (the sheet) kept;
3. those ranked by the log-likelihood gain for a model of large error (``search_error_a``); the best refined as
   rigid bodies to the largest LLG for the model's own error (a pose of the translation grid lies up to a few
   tenths of an Å and a rotation step off, which costs a right pose more than a wrong one: it is ranked only
   then), and the best of those refined flexibly (:func:`~patterson.phasing.likelihood.refine_likelihood`);
4. each refined 5-residue strand grown to the whole sequence's main chain and Cβ in every register that keeps at
   least ``min_overlap`` of its residues on the sequence (its own torsions, the ideal strand's beyond), refined
   again; the whole chains are ranked by their LLG.

Only the target's reflections (the work set) are read.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import numpy as np
import torch

from patterson.cells import Cell
from patterson.errors import PattersonError
from patterson.evaluation.metrics import align
from patterson.ideal import build_peptide, default_torsions, dihedral, parse_sequence, topology
from patterson.phasing.building import PeptideModel, fit_main_chain, start_model
from patterson.phasing.likelihood import likelihood_target, llg, refine_likelihood, refine_rigid
from patterson.phasing.placement import (
    LATTICE_SHIFTS,
    PlacementOptions,
    SearchTarget,
    calculated_f,
    image_clashes,
    placed_frac,
    translation_search,
)
from patterson.structures import atomic_numbers
from patterson.symmetry import SpaceGroup

log = logging.getLogger(__name__)

STACKING_A = ((4.5, 5.1), (9.0, 10.2))  # Å: lattice vectors along which strands stack (one or two per repeat)
STRANDS = Path(__file__).resolve().parents[1] / "weights" / "strands.json"
H_BOND_A = (2.5, 3.6)  # N···O distances taken as a sheet's H-bond (lenient: search poses are a few tenths off)


@dataclass(frozen=True, kw_only=True)
class SheetOptions:
    """How :func:`place_strands` searches.

    Attributes
    ----------
    n_conformers : how many of the shipped strand shapes are searched, most common first.
    angle_step : spacing (degrees) of the rotation about a stacking axis; ``tilt_deg``: the strand's tilts tried
        either way about the two axes across it.
    n_peaks, grid_step : translation-function peaks per rotation and its grid (Å).
    search_error_a : the coordinate error (Å) the poses are ranked for before refinement.
    n_rigid : the poses of each conformer (best coarse LLG first) refined as rigid bodies for the model's LLG;
        ``n_refine``: the best of those then refined flexibly; ``n_grow``: the refined strands (of all conformers,
        best LLG first) grown to the whole sequence; ``n_chains``: different placements returned (each in every
        register).
    min_overlap : residues of a grown strand that must lie on the sequence.
    """

    n_conformers: int = 8
    angle_step: float = 3.0
    tilt_deg: float = 6.0
    n_peaks: int = 8
    grid_step: float = 0.5
    search_error_a: float = 1.0
    n_rigid: int = 48
    n_refine: int = 16
    n_grow: int = 12
    n_chains: int = 2
    min_overlap: int = 4

    def __post_init__(self) -> None:
        if not (1 <= self.n_conformers and 0.5 <= self.angle_step <= 20 and 0 <= self.tilt_deg <= 20):
            raise PattersonError("n_conformers must be at least 1, angle_step lie in 0.5–20° and tilt_deg in 0–20°")
        if min(self.n_peaks, self.n_rigid, self.n_refine, self.n_grow, self.n_chains, self.min_overlap) < 1:
            raise PattersonError("n_peaks, n_rigid, n_refine, n_grow, n_chains and min_overlap must be at least 1")


@dataclass(frozen=True)
class StrandChain:
    """A placed main chain (and Cβ) of the whole sequence: xyz (N, 3) Å in the order of
    :func:`patterson.ideal.topology` (no OXT), its elements (N,), its refined LLG, the conformer it grew from and
    which residue of the sequence that conformer's first residue sits on (``start``, may be negative)."""

    xyz: np.ndarray
    elements: np.ndarray
    llg: float
    conformer: int
    start: int


# --- geometry of a stacked strand -----------------------------------------------------------------------------


def stacking_axes(cell: Cell) -> list[np.ndarray]:
    """Unit vectors (3,) of the lattice vectors whose length lies in :data:`STACKING_A`, one per direction."""
    out: list[np.ndarray] = []
    ticks = range(-2, 3)
    for n in (np.array([i, j, k], dtype=float) for i in ticks for j in ticks for k in ticks):
        v = cell.to_cartesian(n)
        length = float(np.linalg.norm(v))
        if any(lo <= length <= hi for lo, hi in STACKING_A):
            u = v / length
            if all(abs(float(u @ w)) < 0.999 for w in out):
                out.append(u)
    return out


@cache
def strand_conformers() -> np.ndarray:
    """(K, 25, 3) the shipped 5-residue strand shapes (N, CA, C, O, CB per residue, centred), most common first."""
    return np.array(json.loads(STRANDS.read_text())["xyz"], dtype=np.float64)


def strand_frame(xyz: np.ndarray) -> np.ndarray:
    """(3, 3) rows: a strand's axis (first CA to last), its H-bond direction (the alternating C=O bonds, across the
    axis) and their cross product, for xyz (5·L, 3) of N, CA, C, O, CB per residue."""
    res = xyz.reshape(-1, 5, 3)
    ca, co = res[:, 1], res[:, 3] - res[:, 2]
    axis = np.linalg.svd(ca - ca.mean(0))[2][0]
    axis = axis if axis @ (ca[-1] - ca[0]) > 0 else -axis
    sign = np.where(np.arange(len(co)) % 2 == 0, 1.0, -1.0)[:, None]
    hb = (co / np.linalg.norm(co, axis=1, keepdims=True) * sign).sum(0)
    hb = hb - (hb @ axis) * axis
    hb /= np.linalg.norm(hb)
    return np.stack([axis, hb, np.cross(axis, hb)])


def _turn(axis: np.ndarray, angle_rad: float) -> np.ndarray:
    """(3, 3) the rotation by an angle about a unit axis (Rodrigues)."""
    k = np.array([[0, -axis[2], axis[1]], [axis[2], 0, -axis[0]], [-axis[1], axis[0], 0]])
    return np.eye(3) + math.sin(angle_rad) * k + (1 - math.cos(angle_rad)) * k @ k


def sheet_rotations(frame: np.ndarray, axes: list[np.ndarray], step_deg: float, tilt_deg: float) -> np.ndarray:
    """(R, 3, 3) the rotations that put a strand of ``frame`` (:func:`strand_frame`) with its H-bond direction along
    ±each stacking axis and its axis across it, every ``step_deg`` about the stacking axis, tilted by 0 and
    ±``tilt_deg`` about the two axes across it."""
    tilts = np.radians([0.0, -tilt_deg, tilt_deg] if tilt_deg > 0 else [0.0])
    out = []
    for u in axes:
        p = np.cross(u, [1.0, 0, 0] if abs(u[0]) < 0.9 else [0, 1.0, 0])
        p /= np.linalg.norm(p)
        q = np.cross(u, p)
        for theta in np.radians(np.arange(0.0, 360.0, step_deg)):
            v = math.cos(theta) * p + math.sin(theta) * q
            w = np.cross(v, u)
            for flip in (1.0, -1.0):
                base = np.stack([v, flip * u, flip * w]).T @ frame  # frame's rows onto v, ±u, ±w
                out += [_turn(v, a) @ _turn(w, b) @ base for a in tilts for b in tilts]
    return np.array(out)


def sheet_hbonds(frac: np.ndarray, group: SpaceGroup, cell: Cell, chunk: int = 2048) -> np.ndarray:
    """(P,) for P placements frac (P, 5·L, 3) of a strand (N, CA, C, O, CB per residue): how many of its N atoms
    have an O atom of another copy (any operator, lattice neighbours) within :data:`H_BOND_A`."""
    orth = torch.as_tensor(cell.orth, dtype=torch.float32)
    shifts = torch.as_tensor(LATTICE_SHIFTS, dtype=torch.float32)  # (27, 3); (0, 0, 0) is index 13
    out = []
    for start in range(0, len(frac), chunk):
        x = torch.as_tensor(frac[start : start + chunk], dtype=torch.float32)
        n_at, o_at = x[:, 0::5], x[:, 3::5]  # (P, L, 3)
        hit = torch.zeros(n_at.shape[:2], dtype=torch.bool)
        for rot, tran in zip(group.rot, group.tran, strict=True):
            itself = np.array_equal(rot, np.eye(3)) and not np.any(np.abs(tran) > 1e-9)
            o_img = o_at @ torch.as_tensor(rot, dtype=torch.float32).T + torch.as_tensor(tran, dtype=torch.float32)
            d = n_at[:, :, None, :] - o_img[:, None, :, :]
            d = (d - torch.round(d))[:, :, :, None, :] + shifts  # (P, L, L, 27, 3)
            r = torch.linalg.vector_norm(d @ orth.T, dim=-1)
            bonded = (r > H_BOND_A[0]) & (r < H_BOND_A[1])
            if itself:
                bonded[..., 13] = False
            hit |= bonded.flatten(2).any(-1)
        out.append(hit.sum(-1).numpy())
    return np.concatenate(out) if out else np.zeros(0, dtype=np.int64)


# --- the search ------------------------------------------------------------------------------------------------

STRAND_ELEMENTS = np.array(["N", "C", "C", "O", "C"] * 5)  # a conformer's atoms: N, CA, C, O, CB per residue


def _distinct_peaks(heights: np.ndarray) -> np.ndarray:
    """(R, P) bool: the translation-function peaks of each rotation that are not the copy of a higher one (origin
    shifts the group allows give peaks of the same height)."""
    keep = np.ones(heights.shape, dtype=bool)
    for k in range(1, heights.shape[1]):
        for m in range(k):
            keep[:, k] &= ~np.isclose(heights[:, k], heights[:, m], rtol=1e-5, atol=1e-6, equal_nan=True)
    return keep


def search_conformer(target: SearchTarget, model: np.ndarray, options: SheetOptions) -> list[tuple[float, np.ndarray]]:
    """The ``n_refine`` best placements of one strand (N, CA, C, O, CB per residue; (5·L, 3) Å) in sheet
    orientations, each refined to the largest LLG: [(LLG, xyz (5·L, 3) Å)], best first."""
    cell, group = target.cell, target.group
    xyz = model - model.mean(axis=0)
    z = atomic_numbers(np.resize(STRAND_ELEMENTS, len(xyz)))
    rotations = sheet_rotations(strand_frame(xyz), stacking_axes(cell), options.angle_step, options.tilt_deg)
    heights, trans = translation_search(target, xyz, z, rotations, PlacementOptions(grid_step=options.grid_step),
                                        options.n_peaks)  # fmt: skip
    keep = _distinct_peaks(heights).ravel()
    rot = torch.as_tensor(np.repeat(rotations, options.n_peaks, axis=0)[keep])
    frac = placed_frac(torch.as_tensor(xyz), rot, torch.as_tensor(trans.reshape(-1, 3)[keep]), cell).numpy()
    frac = frac[sheet_hbonds(frac, group, cell) >= len(xyz) // 5 - 2]  # (P, 5·L, 3) poses in a sheet
    coarse, fine = likelihood_target(target, z, options.search_error_a), likelihood_target(target, z)
    gain = np.concatenate([llg(coarse, frac[a : a + 1024]) for a in range(0, len(frac), 1024)] or [np.zeros(0)])
    packs = lambda i: image_clashes(frac[i], group, cell, 1.8) <= 0.2 * len(xyz)  # noqa: E731
    picked = _distinct(gain, options.n_rigid, 1e-6, packs)  # the best coarse poses, each once
    if not picked:
        return []
    rigid, value = refine_rigid(fine, cell.to_cartesian(frac[picked]))  # (n_rigid, 5·L, 3), (n_rigid,)
    out = [(v, x) for x, v in (refine_likelihood(fine, rigid[i]) for i in _distinct(value, options.n_refine, SAME_LLG))]
    log.debug("strand search: %d rotations, %d sheet poses, best refined LLG %.1f", len(rotations), len(frac),
              max((v for v, _ in out), default=float("nan")))  # fmt: skip
    return sorted(out, key=lambda t: -t[0])


SAME_LLG = 1e-3  # refined poses whose LLGs differ by less than this fraction are taken as one (an origin shift)


def _distinct(value: np.ndarray, n: int, same: float, allowed: Callable[[int], bool] = lambda i: True) -> list[int]:
    """Indices of the ``n`` largest values, best first, skipping a value within the fraction ``same`` of one taken
    (a pose equivalent to one taken, by an origin shift the group allows, scores the same) and indices not
    ``allowed``."""
    out: list[int] = []
    for i in np.argsort(-value):
        if len(out) == n:
            break
        if all(abs(value[i] - value[j]) >= same * max(1.0, abs(value[j])) for j in out) and allowed(int(i)):
            out.append(int(i))
    return out


def chain_atoms(sequence: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Names (N,), residue indices (N,) and elements (N,) of a chain's main chain and Cβ: the atoms of
    :func:`patterson.ideal.topology` without OXT, in its order (the order of :class:`StrandChain` ``xyz``)."""
    top = topology(sequence)
    keep = np.array(top.names) != "OXT"
    return np.array(top.names)[keep], top.residue[keep], np.array(top.elements)[keep]


def main_chain_torsions(n: np.ndarray, ca: np.ndarray, c: np.ndarray, o: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """φ (L,) and ψ (L,) in radians of a chain from its N, CA, C, O (L, 3) each: the first φ is the ideal
    strand's, the last ψ is read from its C=O (ψ = N–CA–C–O + 180°)."""
    phi = [math.radians(-120.0)] + [math.radians(dihedral(c[i - 1], n[i], ca[i], c[i])) for i in range(1, len(n))]
    psi = [math.radians(dihedral(n[i], ca[i], c[i], n[i + 1])) for i in range(len(n) - 1)]
    psi.append(math.radians(dihedral(n[-1], ca[-1], c[-1], o[-1]) + 180.0))
    return np.array(phi), np.array(psi)


def superposed(x: np.ndarray, y: np.ndarray, moved: np.ndarray) -> np.ndarray:
    """(K, 3) ``moved`` by the proper rotation and shift that take x (N, 3) onto y (N, 3) in least squares."""
    xm, ym = x.mean(0), y.mean(0)
    u, _, vt = np.linalg.svd((x - xm).T @ (y - ym))
    rot = vt.T @ np.diag([1.0, 1.0, np.sign(np.linalg.det(vt.T @ u.T))]) @ u.T
    return (moved - xm) @ rot.T + ym


def grow(sequence: str, strand: np.ndarray, start: int) -> tuple[np.ndarray, np.ndarray]:
    """The whole sequence's main chain and Cβ (xyz (N, 3) Å, elements (N,); :func:`patterson.ideal.topology` order
    without OXT) with the placed strand's residue k on residue ``start`` + k: the strand's torsions there, the
    ideal strand's elsewhere, superposed on the strand's N, CA, C, O where they overlap."""
    top = topology(sequence)
    phi, psi, chi = default_torsions(top)
    s_phi, s_psi = main_chain_torsions(*strand.reshape(-1, 5, 3)[:, :4].transpose(1, 0, 2))
    on = [k for k in range(len(s_phi)) if 0 <= start + k < len(sequence)]
    for k in on:
        if k > 0:
            phi[start + k] = float(s_phi[k])
        psi[start + k] = float(s_psi[k])
    with torch.no_grad():
        xyz = build_peptide(top, phi, psi, chi).numpy()[np.array(top.names) != "OXT"]
    names, residue, elements = chain_atoms(sequence)
    main = np.isin(names, ("N", "CA", "C", "O"))
    mine = np.concatenate([strand.reshape(-1, 5, 3)[k, :4] for k in on])  # (4·overlap, 3)
    theirs = np.concatenate([xyz[main & (residue == start + k)] for k in on])
    return superposed(theirs, mine, xyz), elements


SAME_CHAIN_CC = 0.7  # chains whose maps correlate above this after the origin search are one placement


def _same_chain(a: StrandChain, b: StrandChain, target: SearchTarget) -> bool:
    """Whether two chains are one placement: the maps of their atoms and images correlate above
    :data:`SAME_CHAIN_CC` after the origin search (:func:`~patterson.evaluation.metrics.align`, the hand kept). A
    chain moved by an operator or an origin shift of the group (which scores the same) gives the same map, shifted;
    at 2 Å a chain moved 0.7 Å still correlates 0.7, one moved a residue along the strand 0.6."""
    frac = torch.as_tensor(np.stack([target.cell.to_fractional(c.xyz) for c in (a, b)]))  # (2, N, 3)
    f_calc = calculated_f(target, frac, atomic_numbers(a.elements), 20.0)  # (2, M)
    return bool(align(f_calc[:1], f_calc[1:], target.hkl, target.cell, allow_inversion=False).score[0] > SAME_CHAIN_CC)


def place_strands(sequence: str, target: SearchTarget, options: SheetOptions | None = None,
                  progress: Callable[[int, int], None] | None = None) -> list[StrandChain]:  # fmt: skip
    """The sequence's main chain placed as a strand of a sheet (see the module's steps): the ``n_chains`` best
    different placements, each in every register (which residues the strand covers: the side chains built on them
    tell), best LLG first; none where the cell has no stacking axis.

    Parameters
    ----------
    sequence : one-letter residue codes of the peptide in the asymmetric unit.
    target : the work reflections (:func:`~patterson.phasing.placement.search_target`).
    options : :class:`SheetOptions` (None: the defaults).
    progress : called with (conformers searched, conformers) after each.
    """
    options = options or SheetOptions()
    seq = parse_sequence(sequence)
    if not stacking_axes(target.cell):
        return []
    conformers = strand_conformers()[: options.n_conformers]
    strands: list[tuple[float, np.ndarray, int]] = []
    for k, model in enumerate(conformers):
        strands += [(value, xyz, k) for value, xyz in search_conformer(target, model, options)]
        if progress is not None:
            progress(k + 1, len(conformers))
    strands.sort(key=lambda t: -t[0])
    least = min(options.min_overlap, len(seq))
    grown: list[list[StrandChain]] = []  # per strand, its chain in every register
    lik = likelihood_target(target, atomic_numbers(chain_atoms(seq)[2]))
    for _, strand, k in strands[: options.n_grow]:
        width, chains = len(strand) // 5, []
        for start in range(least - width, len(seq) - least + 1):
            xyz, elements = grow(seq, strand, start)
            refined, value = refine_likelihood(lik, xyz)
            chains.append(StrandChain(refined, elements, value, k, start))
        grown.append(sorted(chains, key=lambda c: -c.llg))
    grown.sort(key=lambda chains: -chains[0].llg)
    kept: list[list[StrandChain]] = []
    for chains in grown:
        best = chains[0]
        if all(not _same_chain(best, o[0], target) for o in kept):
            kept.append(chains)
        if len(kept) == options.n_chains:
            break
    log.info("sheet search: %d strands grown, best chain LLG %s", min(options.n_grow, len(strands)),
             f"{kept[0][0].llg:.1f}" if kept else "-")  # fmt: skip
    return sorted((c for chains in kept for c in chains), key=lambda c: -c.llg)


def chain_model(sequence: str, chain: StrandChain) -> PeptideModel:
    """The building's model of the whole sequence (side chains not yet built) on a placed chain: its own φ, ψ (the
    first φ the ideal strand's; the last ψ from its C=O), anchored on the middle residue's N, CA, C, then frame and
    torsions fitted to all the chain's atoms (:func:`~patterson.phasing.building.fit_main_chain`)."""
    names = chain_atoms(sequence)[0]
    n_at, ca, c, o = (chain.xyz[names == a] for a in ("N", "CA", "C", "O"))  # (L, 3) each, residue order
    anchor = len(sequence) // 2
    placed = np.stack([n_at[anchor], ca[anchor], c[anchor]])
    model = start_model(sequence, anchor, placed, "strand", main_chain_torsions(n_at, ca, c, o))
    on_chain = np.isin(np.array(model.top.names), ("N", "CA", "C", "O", "CB"))  # the chain's atoms, in its order
    rms = fit_main_chain(model, chain.xyz, on_chain)
    log.debug("chain model: %.2f Å r.m.s. from the placed chain", rms)
    return model
