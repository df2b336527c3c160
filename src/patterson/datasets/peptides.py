"""Peptide microcrystals (``kind='peptide'``): short segments of real chains packed by a space group's symmetry.

Imitates the crystals of short peptides solved at atomic resolution: 1YJP (GNNQQNY, P2₁, 21.9 × 4.87 × 23.9 Å,
β = 107°), 5E5Z (LVHSSN, P2₁), 6MW0 (a tetrapeptide in P2₁2₁2₁ at 0.78 Å), amyloid segments in C2 and
electron-diffraction peptides in P1. One example:

1. a space group from ``space_groups`` and, with probability ``beta_fraction``, a β-sheet stack;
2. a segment of ``k_min`` … ``k`` residues (heavy atoms) of a chain of the example's split. For a stack an extended
   one without proline (Cα end-to-end ≥ :data:`EXTENDED_RISE` Å per residue), straightened to a flat strand
   (:func:`straighten`: φ, ψ = −120°, 130°, torsions only), its side chains turned to other staggered rotamers
   where they would overlap the next strand (:func:`fit_rotamers`), and laid so that a lattice translation of
   ``beta_axis`` Å (1YJP's b) repeats it within 25° of perpendicular to the strand, as in an amyloid sheet;
3. packing (:func:`pack_segment`, :func:`compress`), in the manner of an adaptive shrinking cell: from a loose
   cell, random volume-reducing strains of the lattice (those the crystal system allows), shifts and turns of
   the molecule, each kept only when no atom comes within ``clash_distance`` Å of a symmetry mate or lattice
   translate, until the cell volume per atom reaches a target drawn from ``pack_volume`` ± ``pack_tolerance``;
   a search that stalls above the range is dropped and another segment drawn;
4. a resolution d from ``d_min_range``, coarsened where the fixed ``grid`` cannot hold this cell's reflections to
   it, and B-factors (``b_policy='resolution'``): an overall B from ``b_range`` that grows with d, shaped per atom
   by the deposited B profile of the segment;
5. with ``waters``, up to that many ordered waters per residue where the crystal has room (:func:`add_waters`): in
   the data and the target, in no sequence, as real peptide crystals have them;
6. the asymmetric unit expanded by the group's operators into the P1 cell that the maps are made of.

The group, resolution and kind of each example are stored beside its atoms (``spacegroup``, ``d_min``,
``beta_stack``, ``n_reflections``: :data:`~patterson.datasets.config.EXAMPLE_FIELDS`), and so are the reflections
behind its maps, on its own cell's Friedel half to its d_min (:func:`reflection_capacity`).
"""

from __future__ import annotations

import itertools
import logging
import math
from dataclasses import dataclass

import numpy as np

from patterson.cells import Cell, expand_to_p1, random_rotation
from patterson.datasets.config import EXAMPLE_FIELDS, SPLITS, GenerateConfig
from patterson.datasets.sources import Pool
from patterson.errors import PattersonError
from patterson.physics import miller_indices
from patterson.structures import BACKBONE, SIDE_CHAINS, Atoms
from patterson.symmetry import SpaceGroup

log = logging.getLogger(__name__)

EXTENDED_RISE = 3.1  # Å per residue of Cα end-to-end distance: a β strand rises 3.2–3.4 Å
SEGMENT_DRAWS = 400  # segments looked at before a split is said to hold none that fits
ATTEMPTS = 30  # segments tried per example and kind (a β stack or not)
MOVES = 1200  # moves of one packing search
STALL = 200  # moves without a kept strain after which a packing search stops


# --- segments ------------------------------------------------------------------------------------------------------


def residue_sizes(label: str) -> list[int]:
    """Heavy atoms per residue of a fragment, from its label ``entry/chain/seqid:RES,...`` (atoms are stored
    residue by residue, backbone N CA C O first)."""
    return [len(BACKBONE) + len(SIDE_CHAINS[r.rsplit(":", 1)[-1]]) for r in label.rsplit("/", 1)[-1].split(",")]


def _extended(xyz: np.ndarray, starts: np.ndarray, first: int, n: int) -> bool:
    ca = xyz[starts[first] + 1], xyz[starts[first + n - 1] + 1]
    return float(np.linalg.norm(ca[1] - ca[0])) >= EXTENDED_RISE * (n - 1)


def draw_segment(
    pool: Pool, items: np.ndarray, config: GenerateConfig, rng: np.random.Generator, extended: bool, max_atoms: int
) -> tuple[Atoms, str, str, np.ndarray]:
    """A random segment of ``k_min`` … ``k`` residues of one of ``items`` with at most ``max_atoms`` atoms (and,
    with ``extended``, a straight one): its atoms, label, source file and (R,) first atom of each residue."""
    k_min = config.k_min or config.k
    for _ in range(SEGMENT_DRAWS):
        item = int(items[rng.integers(len(items))])
        sizes = residue_sizes(pool.labels[item])
        if len(sizes) < k_min:
            continue
        n = int(rng.integers(k_min, min(config.k, len(sizes)) + 1))
        starts = np.concatenate([[0], np.cumsum(sizes)])  # (R + 1,)
        atoms = pool.atoms(item)
        firsts = [s for s in range(len(sizes) - n + 1) if starts[s + n] - starts[s] <= max_atoms]
        if extended:  # no proline: its ring fixes φ
            names = [r.rsplit(":", 1)[-1] for r in pool.labels[item].rsplit("/", 1)[-1].split(",")]
            firsts = [s for s in firsts if "PRO" not in names[s : s + n] and _extended(atoms.xyz, starts, s, n)]
        if not firsts:
            continue
        s = firsts[rng.integers(len(firsts))]
        part = slice(starts[s], starts[s + n])
        mol = atoms.replace(xyz=atoms.xyz[part], elements=atoms.elements[part], b_iso=atoms.b_iso[part],
                            occ=atoms.occ[part])  # fmt: skip
        head, residues = pool.labels[item].rsplit("/", 1)
        label = f"{head}/" + ",".join(residues.split(",")[s : s + n])
        return mol, label, pool.files[item], starts[s : s + n] - starts[s]
    kind = "extended " if extended else ""
    raise PattersonError(f"no {kind}segment of {k_min}–{config.k} residues (≤ {max_atoms} atoms) found in "
                         f"{SEGMENT_DRAWS} draws; use more source files")  # fmt: skip


# --- β-sheet stacks ------------------------------------------------------------------------------------------------

BETA_PHI_PSI = (-120.0, 130.0)  # degrees: the flat β strand a stacked segment is straightened to
TILT = math.radians(25)  # a stacked strand leans at most this far from perpendicular to the stack axis
FLAT_CHI2 = ("ASN", "ASP", "HIS", "PHE", "TRP", "TYR")  # a planar group at Cγ: χ2 in steps of 30° over a half turn


def dihedral(p0: np.ndarray, p1: np.ndarray, p2: np.ndarray, p3: np.ndarray) -> float:
    """The torsion angle p0–p1–p2–p3 in degrees (IUPAC sign)."""
    b1, b2, b3 = p1 - p0, p2 - p1, p3 - p2
    n1, n2 = np.cross(b1, b2), np.cross(b2, b3)
    return math.degrees(math.atan2(float(np.linalg.norm(b2) * (b1 @ n2)), float(n1 @ n2)))


def _twist(xyz: np.ndarray, i: int, j: int, moving: np.ndarray, degrees: float) -> np.ndarray:
    """``xyz`` with the atoms ``moving`` turned by ``degrees`` about the bond from atom i to atom j."""
    axis = (xyz[j] - xyz[i]) / np.linalg.norm(xyz[j] - xyz[i])
    out = xyz.copy()
    out[moving] = (xyz[moving] - xyz[j]) @ _turn(axis, math.radians(degrees)).T + xyz[j]
    return out


def straighten(xyz: np.ndarray, starts: np.ndarray, phi_psi: tuple[float, float] = BETA_PHI_PSI) -> np.ndarray:
    """The segment (N, 3) with every backbone φ and ψ set to ``phi_psi`` (a flat β strand): torsions only, so bond
    lengths and angles, the peptide bonds (ω) and the side chains' χ stay as deposited. No proline (its ring)."""
    ends = np.append(starts[1:], len(xyz))
    for r, n in enumerate(starts):
        if r > 0:  # φ: C(r−1)–N–CA–C turns everything past Cα (C, O, the side chain, later residues)
            now = dihedral(xyz[starts[r - 1] + 2], xyz[n], xyz[n + 1], xyz[n + 2])
            xyz = _twist(xyz, n, n + 1, np.arange(n + 2, len(xyz)), phi_psi[0] - now)
        if r < len(starts) - 1:  # ψ: N–CA–C–N(r+1) turns O and later residues
            now = dihedral(xyz[n], xyz[n + 1], xyz[n + 2], xyz[ends[r]])
            xyz = _twist(xyz, n + 1, n + 2, np.append(n + 3, np.arange(ends[r], len(xyz))), phi_psi[1] - now)
    return xyz


def stack_directions(xyz: np.ndarray, starts: np.ndarray, n_turn: int = 36, n_tilt: int = 5) -> np.ndarray:
    """(D, 3) unit vectors within :data:`TILT` of the plane perpendicular to the strand axis (first to last Cα):
    the directions a stack may repeat the strand along (a half turn: s and −s make the same stack)."""
    u = xyz[starts[-1] + 1] - xyz[starts[0] + 1]
    u = u / np.linalg.norm(u)
    e1 = np.cross(u, np.eye(3)[int(np.argmin(np.abs(u)))])
    e1 = e1 / np.linalg.norm(e1)
    e2 = np.cross(u, e1)
    turn = np.linspace(0, math.pi, n_turn, endpoint=False)[:, None, None]  # (T, 1, 1)
    tilt = np.linspace(-TILT, TILT, n_tilt)[None, :, None]  # (1, L, 1)
    ring = np.cos(turn) * e1 + np.sin(turn) * e2  # (T, 1, 3)
    return (ring * np.cos(tilt) + np.sin(tilt) * u).reshape(-1, 3)


def stack_clearance(xyz: np.ndarray, directions: np.ndarray, length: float) -> np.ndarray:
    """(D,) shortest distance in Å between the molecule ``xyz`` (N, 3) and its translates by 1, 2 and 3 ×
    ``length`` Å along each direction (D, 3) (the translates the other way are the same pairs)."""
    diff = xyz[:, None, :] - xyz[None, :, :]  # (N, N, 3)
    best = np.full(len(directions), np.inf)
    for m in (1, 2, 3):
        d2 = ((diff[None] - m * length * directions[:, None, None, :]) ** 2).sum(-1)  # (D, N, N)
        best = np.minimum(best, np.sqrt(d2.reshape(len(directions), -1).min(1)))
    return best


def stack_penalty(xyz: np.ndarray, atoms: np.ndarray, direction: np.ndarray, length: float, clash: float) -> float:
    """Σ (clash − d)² over the pairs closer than ``clash`` Å between the ``atoms`` of the molecule (N, 3) and the
    molecule's translates by ±1, 2, 3 × ``length`` Å along ``direction``."""
    shifts = np.outer(np.array([1, 2, 3, -1, -2, -3]) * length, direction)  # (6, 3)
    d = np.linalg.norm(xyz[atoms][None, :, None] - (xyz[None, None] + shifts[:, None, None]), axis=-1)  # (6, A, N)
    return float((np.clip(clash - d, 0, None) ** 2).sum())


def side_chain_torsions(name: str, start: int) -> list[tuple[int, int, np.ndarray, tuple[float, ...]]]:
    """The side-chain turns of a residue whose first atom is ``start`` that lead from one staggered rotamer to
    another: (axis atom, axis atom, moving atoms, angles in degrees) for χ1 (Cα–Cβ), χ2 (Cβ–Cγ, in 30° steps for
    a planar group) and χ3 (Cγ–Cδ of Arg, Lys, Gln, Glu, Met); none for Gly, Ala, Pro."""
    if name in ("GLY", "ALA", "PRO"):
        return []
    greek = np.array(["BGDEZH".index(atom[1]) for atom in SIDE_CHAINS[name]])  # β 0, γ 1, δ 2, ...
    first = start + len(BACKBONE)  # Cβ
    staggered = (0.0, 120.0, 240.0)
    out = [(start + 1, first, first + np.nonzero(greek >= 1)[0], staggered)]
    if np.any(greek >= 2):
        gamma = first + int(np.nonzero(greek == 1)[0][0])  # CG, or CG1 of Ile
        out.append((first, gamma, first + np.nonzero(greek >= 2)[0],
                    tuple(np.arange(0.0, 180.0, 30.0)) if name in FLAT_CHI2 else staggered))  # fmt: skip
    if np.any(greek >= 3) and name not in FLAT_CHI2 + ("ILE", "LEU"):
        gamma, delta = (first + int(np.nonzero(greek == g)[0][0]) for g in (1, 2))
        out.append((gamma, delta, first + np.nonzero(greek >= 3)[0], staggered))
    return out


def _best_rotamer(xyz: np.ndarray, torsions: list, mine: np.ndarray, others: np.ndarray, stack: tuple) -> np.ndarray:
    """The coordinates with one residue's side chain (atoms ``mine``) in the rotamer that least overlaps the stack
    (``stack`` = direction, length, clash) while its moved atoms keep the clash distance from the ``others``."""
    direction, length, clash = stack
    moving = np.unique(np.concatenate([t[2] for t in torsions]))
    best, best_xyz = stack_penalty(xyz, mine, direction, length, clash), xyz
    for angles in itertools.product(*(t[3] for t in torsions)):
        if not any(angles):
            continue
        trial = xyz
        for (i, j, atoms, _), angle in zip(torsions, angles, strict=True):
            trial = _twist(trial, i, j, atoms, angle) if angle else trial
        if np.linalg.norm(trial[moving][:, None] - trial[others][None], axis=-1).min() < clash:
            continue
        penalty = stack_penalty(trial, mine, direction, length, clash)
        if penalty < best - 1e-9:
            best, best_xyz = penalty, trial
    return best_xyz


def fit_rotamers(xyz: np.ndarray, resnames: list[str], starts: np.ndarray, direction: np.ndarray, length: float,
                 clash: float) -> np.ndarray:  # fmt: skip
    """Residue by residue (at most three sweeps), the side-chain rotamers (:func:`side_chain_torsions`) that least
    overlap the stack along ``direction`` (:func:`stack_penalty`) and keep every moved atom ``clash`` Å from the
    other residues. Returns the coordinates (N, 3)."""
    residue = np.searchsorted(starts, np.arange(len(xyz)), side="right") - 1  # (N,)
    for _ in range(3):
        for r, (name, start) in enumerate(zip(resnames, starts, strict=True)):
            torsions = side_chain_torsions(name, start)
            if torsions:
                mine = np.nonzero(residue == r)[0]
                xyz = _best_rotamer(xyz, torsions, mine, residue != r, (direction, length, clash))
        if stack_clearance(xyz, direction[None], length)[0] >= clash:
            break
    return xyz


def prepare_stack(mol: Atoms, resnames: list[str], starts: np.ndarray, length: float,
                  clash: float) -> tuple[np.ndarray, np.ndarray] | None:  # fmt: skip
    """A segment made into a strand that stacks with a repeat of ``length`` Å: its coordinates (N, 3) about the
    centre (straightened, :func:`straighten`; side chains perhaps in other rotamers, :func:`fit_rotamers`) and
    the stack direction (3,); None when no direction keeps ``clash`` Å. Directions where the backbone and Cβ keep
    ``clash`` Å are tried, least overlapping first."""
    xyz = straighten(mol.xyz - mol.xyz.mean(0), starts)
    directions = stack_directions(xyz, starts)
    core = np.concatenate([np.arange(s, s + len(BACKBONE) + (r != "GLY")) for s, r in zip(starts, resnames,
                                                                                          strict=True)])  # fmt: skip
    directions = directions[stack_clearance(xyz[core], directions, length) >= clash]
    every = np.arange(len(xyz))
    order = np.argsort([stack_penalty(xyz, every, d, length, clash) for d in directions])
    for direction in directions[order[:4]]:
        fitted = fit_rotamers(xyz, resnames, starts, direction, length, clash)
        if stack_clearance(fitted, direction[None], length)[0] >= clash:
            return fitted - fitted.mean(0), direction
    return None


# --- contacts between symmetry mates -------------------------------------------------------------------------------


def _images(group: SpaceGroup, frac: np.ndarray, reach: float, lattice: np.ndarray) -> np.ndarray:
    """(P, N, 3) Cartesian copies of the molecule at fractional ``frac`` (N, 3) under every operator and lattice
    translation whose centre lies within ``reach`` Å of the molecule's centre (the molecule itself left out)."""
    span = np.ceil(reach * np.linalg.norm(np.linalg.inv(lattice), axis=1)).astype(int) + 1  # (3,) steps per axis
    steps = np.stack(np.meshgrid(*[np.arange(-s, s + 1) for s in span], indexing="ij"), -1).reshape(-1, 3)  # (S, 3)
    mates = np.einsum("kij,nj->kni", group.rot, frac) + group.tran[:, None]  # (K, N, 3)
    shift = np.round(frac.mean(0) - mates.mean(1))  # (K, 3): each mate's translate nearest the molecule
    t = shift[:, None] + steps[None]  # (K, S, 3)
    identity = np.all(group.rot == np.eye(3, dtype=np.int64), axis=(1, 2)) & np.all(group.tran % 1.0 == 0, axis=1)
    centres = (mates.mean(1)[:, None] + t - frac.mean(0)) @ lattice.T  # (K, S, 3) Å from the molecule's centre
    near = (np.linalg.norm(centres, axis=-1) < reach) & ~(identity[:, None] & np.all(t == 0, axis=-1))  # (K, S)
    k, j = np.nonzero(near)
    return (mates[k] + t[k, j][:, None]) @ lattice.T  # (P, N, 3)


def contact_distance(xyz: np.ndarray, lattice: np.ndarray, group: SpaceGroup, cutoff: float) -> float:
    """Shortest distance in Å from an atom of the molecule ``xyz`` (N, 3) (Cartesian, the asymmetric unit) to an
    atom of another molecule of the crystal of ``lattice`` (3, 3) (columns a, b, c in Å; ``Cell.orth``): a symmetry
    mate or a lattice translate of either; ``cutoff`` when none comes closer (closer contacts only are searched)."""
    frac = xyz @ np.linalg.inv(lattice).T  # (N, 3)
    reach = 2 * float(np.linalg.norm(xyz - xyz.mean(0), axis=1).max()) + cutoff
    images = _images(group, frac, reach, lattice)  # (P, N, 3)
    lo, hi = xyz.min(0) - cutoff, xyz.max(0) + cutoff
    boxed = np.all(images.min(1) <= hi, axis=1) & np.all(images.max(1) >= lo, axis=1)
    points = images[boxed].reshape(-1, 3)
    points = points[np.all((points >= lo) & (points <= hi), axis=1)]
    if not len(points):
        return cutoff
    mine = xyz[np.all((xyz >= points.min(0) - cutoff) & (xyz <= points.max(0) + cutoff), axis=1)]
    if not len(mine):
        return cutoff
    d2 = ((mine[:, None, :] - points[None, :, :]) ** 2).sum(-1)  # (n, p)
    return min(cutoff, math.sqrt(float(d2.min())))


# --- packing -------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Packing:
    """A crystal under construction: ``lattice`` (3, 3) columns a, b, c in Å; the molecule (about its centre)
    turned by ``rot`` (3, 3) with its centre at the fractional point ``centre`` (3,)."""

    lattice: np.ndarray
    rot: np.ndarray
    centre: np.ndarray

    def xyz(self, mol: np.ndarray) -> np.ndarray:
        """(N, 3) Cartesian coordinates of the molecule ``mol`` (N, 3), given about its centre."""
        return mol @ self.rot.T + self.lattice @ self.centre

    @property
    def volume(self) -> float:
        return float(np.linalg.det(self.lattice))

    def angles(self) -> np.ndarray:
        """(3,) α, β, γ in degrees."""
        a, b, c = (self.lattice[:, i] / np.linalg.norm(self.lattice[:, i]) for i in range(3))
        return np.degrees(np.arccos(np.clip([b @ c, a @ c, a @ b], -1, 1)))


def strain_mask(group: SpaceGroup, short: int | None) -> np.ndarray:
    """(3, 3) bool: the strain components a search may use (the lattice of the crystal system: monoclinic keeps b
    along y, orthorhombic stays diagonal), none that changes the axis ``short`` (a β stack's, along x, y or z)."""
    system = group.gemmi.crystal_system_str()
    if system == "orthorhombic":
        mask = np.eye(3, dtype=bool)
    elif system == "monoclinic":
        mask = np.array([[1, 0, 1], [0, 1, 0], [1, 0, 1]], dtype=bool)
    else:
        mask = np.ones((3, 3), dtype=bool)
    if short is not None:
        mask[:, short] = False
    return mask


def _propose(p: Packing, mask: np.ndarray, sizes: dict, rng: np.random.Generator, target: float, axis):
    """A move: a volume-reducing strain of the lattice (stopping at the ``target`` volume), a shift or a turn of
    the molecule (about ``axis`` when given); returns the move's kind and the new packing."""
    kind = ("strain", "shift", "turn")[int(rng.choice(3, p=[0.5, 0.25, 0.25]))]
    if kind == "strain":
        eps = mask * rng.normal(0, sizes["strain"], (3, 3))
        volume = float(np.linalg.det((np.eye(3) + eps) @ p.lattice))
        if volume > p.volume:
            eps, volume = -eps, float(np.linalg.det((np.eye(3) - eps) @ p.lattice))
        if volume < target < p.volume:
            eps = eps * (p.volume - target) / (p.volume - volume)
        return kind, Packing((np.eye(3) + eps) @ p.lattice, p.rot, p.centre)
    if kind == "shift":
        step = np.linalg.solve(p.lattice, rng.normal(0, sizes["shift"], 3))
        return kind, Packing(p.lattice, p.rot, p.centre + step)
    turn_axis = axis if axis is not None else random_rotation(rng)[:, 0]
    return kind, Packing(p.lattice, _turn(turn_axis, rng.normal(0, sizes["turn"])) @ p.rot, p.centre)


def _turn(axis: np.ndarray, angle: float) -> np.ndarray:
    """(3, 3) rotation by ``angle`` (radians) about the unit vector ``axis`` (Rodrigues)."""
    k = np.array([[0, -axis[2], axis[1]], [axis[2], 0, -axis[0]], [-axis[1], axis[0], 0]])
    return np.eye(3) + math.sin(angle) * k + (1 - math.cos(angle)) * k @ k


def compress(
    mol: np.ndarray, group: SpaceGroup, start: Packing, mask: np.ndarray, clash: float, target: float,
    rng: np.random.Generator, axis: np.ndarray | None = None,
) -> Packing:  # fmt: skip
    """Shrink a clash-free packing towards ``target`` Å³ of cell by random moves (:func:`_propose`), each kept
    only when no atom of ``mol`` (N, 3) comes within ``clash`` Å of another molecule and the cell angles stay
    within 55–125°; step sizes adapt to the moves' success. Returns the densest packing reached."""
    p = start
    sizes = {"strain": 0.05, "shift": 0.5, "turn": 0.1}
    limits = {"strain": (0.002, 0.2), "shift": (0.02, 2.0), "turn": (0.005, 0.5)}
    misses = 0
    for _ in range(MOVES):
        if p.volume <= target * 1.002 or misses > STALL:
            break
        kind, q = _propose(p, mask, sizes, rng, target, axis)
        ok = bool(np.all(np.abs(q.angles() - 90) <= 35))
        ok = ok and contact_distance(q.xyz(mol), q.lattice, group, clash) >= clash
        p = q if ok else p
        misses = 0 if ok and kind == "strain" else misses + 1
        sizes[kind] = float(np.clip(sizes[kind] * (1.1 if ok else 0.93), *limits[kind]))
    return p


def to_cell(p: Packing, mol: np.ndarray) -> tuple[Cell, np.ndarray]:
    """The packing as a :class:`Cell` in the standard setting (a along x; monoclinic β ≥ 90° by taking −a, −b, an
    equivalent setting of the b-unique groups) and the molecule's coordinates (N, 3) in it."""
    frac = np.linalg.solve(p.lattice, p.xyz(mol).T).T  # (N, 3)
    lattice = p.lattice
    if abs(p.angles()[0] - 90) < 1e-6 and abs(p.angles()[2] - 90) < 1e-6 and p.angles()[1] < 90:
        lattice, frac = lattice * np.array([-1, -1, 1]), frac * np.array([-1, -1, 1])
    lengths = np.linalg.norm(lattice, axis=0)
    angles = Packing(lattice, p.rot, p.centre).angles()
    cell = Cell(*lengths, *angles)
    return cell, cell.to_cartesian(frac)


def principal_rotation(xyz: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """(3, 3) a rotation that lays the molecule's principal axes (N, 3 about its centre) along x, y and z in a
    random order and sense, then tilts it at random by about 10°: a compact start for a packing search."""
    axes = np.linalg.eigh(np.cov(xyz.T))[1].T[rng.permutation(3)] * rng.choice([-1, 1], (3, 1))  # (3, 3) rows
    axes[2] *= np.sign(np.linalg.det(axes))
    return _turn(random_rotation(rng)[:, 0], rng.normal(0, 0.15)) @ axes


def _onto(v: np.ndarray, w: np.ndarray) -> np.ndarray:
    """(3, 3) the shortest rotation that turns the unit vector ``v`` onto the unit vector ``w``."""
    axis = np.cross(v, w)
    norm = float(np.linalg.norm(axis))
    if norm < 1e-9:  # parallel or opposite: a half turn about any perpendicular axis
        other = np.cross(v, np.eye(3)[int(np.argmin(np.abs(v)))])
        return np.eye(3) if v @ w > 0 else _turn(other / np.linalg.norm(other), math.pi)
    return _turn(axis / norm, math.atan2(norm, float(v @ w)))


def pack_segment(
    mol: Atoms, resnames: list[str], starts: np.ndarray, group: SpaceGroup, config: GenerateConfig,
    rng: np.random.Generator, beta: bool,
) -> tuple[Cell, np.ndarray] | None:  # fmt: skip
    """The cell and the asymmetric unit's coordinates (N, 3) of a crystal of ``mol`` in ``group`` at a density
    drawn from ``pack_volume`` ± ``pack_tolerance`` with no contact closer than ``clash_distance``; a β-sheet stack
    (``beta``) keeps one axis at a length from ``beta_axis`` along which the strand repeats (side chains perhaps in
    other rotamers, :func:`prepare_stack`). None when this molecule does not pack so."""
    xyz = mol.xyz - mol.xyz.mean(0)
    clash = config.clash_distance or 0.0
    short, axis, rot = None, None, principal_rotation(xyz, rng)
    extent = np.zeros(3)
    if beta:  # the triclinic a and the orthorhombic axes stay along x, y, z as the search goes; b is monoclinic's
        short = {"triclinic": 0, "monoclinic": 1}.get(group.gemmi.crystal_system_str(), int(rng.integers(3)))
        axis = np.eye(3)[short]
        extent[short] = rng.uniform(*config.beta_axis)
        stack = prepare_stack(mol, resnames, starts, extent[short], clash)
        if stack is None:
            return None
        xyz, direction = stack
        rot = _turn(axis, rng.uniform(0, 2 * math.pi)) @ _onto(direction, axis)
    extent = np.where(np.arange(3) == short, extent, np.ptp(xyz @ rot.T, axis=0) + clash + 1.0)  # (3,) Å
    start = Packing(np.diag(extent), rot, rng.random(3))
    for _ in range(6):
        if contact_distance(start.xyz(xyz), start.lattice, group, clash) >= clash:
            break
        start = Packing(start.lattice @ np.diag([1.0 if i == short else 1.3 for i in range(3)]), rot, start.centre)
    else:
        return None
    v_lo, v_hi = (config.pack_volume * (1 + s * config.pack_tolerance) * len(group.rot) * len(xyz) for s in (-1, 1))
    packed = compress(xyz, group, start, strain_mask(group, short), clash, float(rng.uniform(v_lo, v_hi)), rng, axis)
    return to_cell(packed, xyz) if packed.volume <= v_hi else None


# --- the example ---------------------------------------------------------------------------------------------------


def grid_d_min(cell: Cell, grid: tuple[int, int, int]) -> float:
    """The finest resolution (Å) whose whole reflection sphere ``grid`` holds for ``cell`` without aliasing
    (|h| ≤ n/2 − 1 along an axis of even size n, and |h| ≤ a/d)."""
    return max(length / (n // 2 - 1) for length, n in zip((cell.a, cell.b, cell.c), grid, strict=True)) * (1 + 1e-9)


def overall_b(d: float, d_range: tuple[float, float], b_range: tuple[float, float]) -> float:
    """The overall B (Å²) at resolution ``d`` for ``b_policy='resolution'``: ``b_range`` spread linearly over
    ``d_range`` (clamped at its ends), before the per-example factor and the per-atom profile of
    :func:`resolution_b`."""
    lo, hi = d_range
    t = min(max((d - lo) / (hi - lo), 0.0), 1.0) if hi > lo else 0.0
    return b_range[0] + t * (b_range[1] - b_range[0])


def resolution_b(mol: Atoms, d: float, config: GenerateConfig, rng: np.random.Generator) -> np.ndarray:
    """(N,) B-factors in Å² for ``b_policy='resolution'``: an overall B from ``b_range`` that grows linearly with
    the example's resolution d across ``d_min_range`` (:func:`overall_b`, × a uniform 0.8–1.2), times the
    segment's deposited B relative to its mean (clipped to 0.6–1.8; flat where the file has none)."""
    d_range = config.d_min_range or (config.d_min, config.d_min)
    overall = overall_b(d, d_range, config.b_range) * rng.uniform(0.8, 1.2)
    deposited = np.asarray(mol.b_iso, dtype=np.float64)
    mean = deposited.mean() if len(deposited) else 0.0
    profile = np.clip(deposited / mean, 0.6, 1.8) if mean > 0 else np.ones(len(deposited))
    return overall * profile


def _b_factors(mol: Atoms, d: float, config: GenerateConfig, rng: np.random.Generator) -> np.ndarray:
    if config.b_policy == "resolution":
        return resolution_b(mol, d, config, rng)
    if config.b_policy == "random":
        return np.full(len(mol), float(rng.uniform(*config.b_range)))
    return np.full(len(mol), config.b_iso) if config.b_policy == "fixed" else mol.b_iso


def _packed_segment(pool: Pool, items: np.ndarray, config: GenerateConfig, rng: np.random.Generator,
                    group: SpaceGroup, beta: bool) -> tuple | None:  # fmt: skip
    """(segment atoms, label, file, cell, asymmetric unit (N, 3)) of the first of :data:`ATTEMPTS` segments that
    packs (:func:`pack_segment`), or None."""
    for _ in range(ATTEMPTS):
        mol, label, file, starts = draw_segment(pool, items, config, rng, beta, config.max_atoms // len(group.rot))
        resnames = [r.rsplit(":", 1)[-1] for r in label.rsplit("/", 1)[-1].split(",")]
        packed = pack_segment(mol, resnames, starts, group, config, rng, beta)
        if packed is not None:
            return mol, label, file, *packed
    return None


def peptide_example(
    pool: Pool, items: np.ndarray, config: GenerateConfig, split: str, index: int
) -> tuple[Atoms, str, str, dict]:
    """Example ``index`` of ``split``: the P1 cell's atoms, provenance label, source file and the example's
    ``spacegroup`` (name), resolution ``d_min`` (Å) and ``beta_stack``; a pure function of config, split, index.
    Where no segment packs as drawn (rare: C2 packs least often), the other kind (stack or not) is made."""
    rng = np.random.default_rng([config.seed, 19, SPLITS.index(split), index])
    group = SpaceGroup.of(config.space_groups[rng.integers(len(config.space_groups))])
    beta = bool(rng.random() < config.beta_fraction)
    packed = _packed_segment(pool, items, config, rng, group, beta)
    if packed is None:
        log.info("%s example %d: no %s packed in %s; making the other kind", split, index,
                 "β stack" if beta else "segment", group.name)  # fmt: skip
        beta = not beta
        packed = _packed_segment(pool, items, config, rng, group, beta)
    if packed is None:
        raise PattersonError(f"{split} example {index}: no segment packed in {group.name} at {config.pack_volume} "
                             f"± {config.pack_tolerance:.0%} Å³/atom in {2 * ATTEMPTS} attempts")  # fmt: skip
    mol, label, file, cell, xyz = packed
    d = max(float(rng.uniform(*(config.d_min_range or (config.d_min,) * 2))), grid_d_min(cell, config.grid))
    asu = mol.replace(xyz=xyz, b_iso=_b_factors(mol, d, config, rng), cell=cell.parameters, spacegroup=group.name)
    if config.occupancy_one:
        asu = asu.replace(occ=np.ones(len(asu)))
    if config.waters > 0:
        n_res = len(label.rsplit("/", 1)[-1].split(","))
        asu = add_waters(asu, group, int(rng.integers(0, math.ceil(config.waters * n_res) + 1)), rng)
    kind = "β-stack" if beta else "packed"
    log.debug("%s %d: %s %s in %s, %.0f Å³/atom, d %.2f Å", split, index, kind, label, cell.text,
              cell.volume / (len(group.rot) * len(mol)), d)  # fmt: skip
    m = len(miller_indices(Cell(*cell.parameters), d))  # the cell as stored: its reflections, and no other
    extra = {"spacegroup": group.name, "d_min": d, "beta_stack": beta, "n_reflections": m}
    return expand_to_p1(asu).replace(residues=None), label, file, extra


# --- waters --------------------------------------------------------------------------------------------------------

WATER_CONTACT = (2.6, 3.3)  # Å: a water's hydrogen bond to an N or O (or water), and no atom closer than its start
WATER_TRIES = 4000  # random points looked at per crystal


def _cell_atoms(atoms: Atoms, group: SpaceGroup, cell: Cell) -> np.ndarray:
    """(27·K·N, 3) Cartesian positions of the asymmetric unit's atoms under every operator, in the unit cell and the
    26 around it."""
    frac = cell.to_fractional(atoms.xyz)
    mates = (np.einsum("kij,nj->kni", group.rot, frac) + group.tran[:, None]).reshape(-1, 3) % 1.0
    shifts = np.array(list(itertools.product((-1, 0, 1), repeat=3)), dtype=float)
    return cell.to_cartesian((mates[None] + shifts[:, None]).reshape(-1, 3))


def add_waters(asu: Atoms, group: SpaceGroup, n: int, rng: np.random.Generator) -> Atoms:
    """The asymmetric unit with up to ``n`` ordered waters (O) where the crystal leaves room: random points of the
    cell at least 2.6 Å from every atom (their images and the waters already placed included) and within 3.3 Å of
    an N or O (:data:`WATER_CONTACT`), with B 1.5× the peptide's mean, as deposited waters have. Packed as densely as
    the preset packs, a crystal may hold fewer; the last atoms are the waters."""
    cell = Cell(*asu.cell)
    lo, hi = WATER_CONTACT
    out = asu.replace(residues=None)
    near = _cell_atoms(out, group, cell)  # (P, 3)
    polar = np.isin(np.tile(out.elements, len(near) // len(out)), ("N", "O"))
    water = 1.5 * float(np.mean(asu.b_iso))
    for _ in range(WATER_TRIES):
        if len(out) == len(asu) + n:
            break
        point = cell.to_cartesian(rng.random(3))
        d = np.linalg.norm(near - point, axis=1)
        if d.min() < lo or d[polar].min() > hi:
            continue
        own = _cell_atoms(out.replace(xyz=point[None], elements=np.array(["O"])), group, cell)  # its own images
        if np.sort(np.linalg.norm(own - point, axis=1))[1] < lo:
            continue
        out = out.replace(xyz=np.vstack([out.xyz, point]), elements=np.append(out.elements, "O"),
                          b_iso=np.append(out.b_iso, water), occ=np.append(out.occ, 1.0))  # fmt: skip
        near, polar = np.vstack([near, own]), np.append(polar, np.ones(len(own), dtype=bool))
    return out


def reflection_capacity(grid: tuple[int, int, int]) -> int:
    """The most reflections (the P1 Friedel half, no F(000)) an example on ``grid`` can have: every index of the
    box |h_i| ≤ n_i/2 − 1 that :func:`grid_d_min` keeps its resolution to (125,023 for 64³); the width of the
    stored reflection fields of peptide crystals, each example's own ``n_reflections`` first, zeros after."""
    return (math.prod(n - 1 for n in grid) - 1) // 2


def example_fields(extras: list[dict]) -> dict[str, np.ndarray]:
    """The stored EXAMPLE_FIELDS of peptide crystals from :func:`peptide_example`'s last values: ``spacegroup``
    (B,) S16, ``d_min`` (B,) float64 in Å (exact: the reflections are those to it), ``beta_stack`` (B,) bool and
    ``n_reflections`` (B,) int32, the length of the example's Friedel half ``miller_indices(cell, d_min)``; nothing
    for other kinds (no values)."""
    if not extras or not extras[0]:
        return {}
    types = {"spacegroup": "S16", "d_min": np.float64, "beta_stack": bool, "n_reflections": np.int32}
    return {name: np.array([e[name] for e in extras], dtype=types[name]) for name in EXAMPLE_FIELDS}
