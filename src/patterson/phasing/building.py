"""Building a placed fragment out into the whole peptide, in torsion space, against the work amplitudes.

A placed poly-alanine window of the sequence (:func:`patterson.phasing.placement.place_fragment`) fixes the frame
of its first residue. The whole peptide is then a function of that frame (6 parameters) and its torsions: φ and ψ
of every residue and the side chains' χ (:func:`patterson.ideal.build_peptide`, differentiable). It is built
greedily, the target always the correlation of E_obs² and E_calc² on the work reflections of the atoms built so
far (the others have occupancy 0):

1. the window's main chain and Cβ, refined (frame and torsions);
2. each side chain of the window: a grid of χ (120° steps for sp³ torsions, 60° for planar groups), the best
   few refined, kept when the correlation rises by ``accept``;
3. residues beyond the window, one at a time outwards: a grid of the two torsions that place the new residue
   (ψ of the previous and φ of the new one towards the C terminus; φ of the next and ψ of the new one towards the
   N terminus), the best few refined, kept when the correlation rises; then its side chain;
4. everything built refined together, with a weak restraint of φ and ψ to the start.

The free set is never read: the target holds work reflections only.
"""

from __future__ import annotations

import itertools
import logging
import math
from dataclasses import dataclass

import numpy as np
import torch

from patterson.cells import Cell
from patterson.ideal import ONE_LETTER, SIDE_CHAIN_GEOMETRY, PeptideTopology, build_peptide, default_torsions, topology
from patterson.minimize import lbfgs
from patterson.phasing.placement import SearchTarget, e2_correlation, skew
from patterson.structures import atomic_numbers

log = logging.getLogger(__name__)

MAIN = ("N", "CA", "C", "O", "CB", "OXT")
SP3_GRID = (-60.0, 180.0, 60.0)  # degrees: staggered torsions
PLANAR_GRID = tuple(range(-120, 180, 60))  # degrees: the torsion of a planar end group (ring, amide, carboxyl)


@dataclass(frozen=True, kw_only=True)
class BuildOptions:
    """How :func:`build_out` builds.

    Attributes
    ----------
    b_iso : B (Å²) of every atom in the target (E² are normalised per shell, so it matters little).
    refine_iter : L-BFGS iterations of each local refinement.
    final_iter : iterations of the last refinement of everything.
    keep_best : the best grid points refined at each step.
    accept : the rise of the correlation that keeps a side chain or a residue.
    step : grid step (degrees) of the main-chain torsions that place a new residue.
    restraint : weight of the restraint Σ (Δφ² + Δψ²) (radians²) to the starting main chain.
    """

    b_iso: float = 15.0
    refine_iter: int = 20
    final_iter: int = 100
    keep_best: int = 2
    accept: float = 0.003
    step: float = 30.0
    restraint: float = 0.002


@dataclass
class PeptideModel:
    """A peptide being built: its topology, the parameters p = (frame rotation (3), frame shift (3) Å, φ (R),
    ψ (R), χ (R·4)) with φ, ψ, χ absolute in radians, the anchor residue whose frame is fixed at ``frame``
    (rotation (3, 3) and CA (3,)), which atoms are built (N,) bool, and the length (Å) that scales the frame
    rotation (a unit parameter moves atoms that far from the anchor by about 1 Å)."""

    top: PeptideTopology
    params: torch.Tensor
    anchor: int
    frame: tuple[torch.Tensor, torch.Tensor]
    built: np.ndarray
    radius: float = 10.0

    @property
    def n_res(self) -> int:
        return len(self.top.sequence)

    def index(self, kind: str, residue: int, k: int = 0) -> int:
        """The position in ``params`` of φ, ψ or χ_k of a residue."""
        r = self.n_res
        return {"phi": 6 + residue, "psi": 6 + r + residue, "chi": 6 + 2 * r + 4 * residue + k}[kind]

    def atoms_of(self, residue: int, names: tuple[str, ...] | None = None) -> np.ndarray:
        """(N,) bool: the atoms of a residue (only those ``names``, if given)."""
        mask = self.top.residue == residue
        return mask if names is None else mask & np.isin(np.array(self.top.names), names)

    def side_chain_of(self, residue: int) -> np.ndarray:
        """(N,) bool: a residue's side-chain atoms beyond Cβ."""
        return self.atoms_of(residue) & ~np.isin(np.array(self.top.names), MAIN)

    def chi_positions(self, residue: int) -> list[int]:
        """The positions in ``params`` of a residue's χ torsions."""
        return [self.index("chi", residue, k) for k in range(self.top.n_chi[residue])]


def _frame(n: torch.Tensor, ca: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
    """(3, 3) the orthonormal frame (columns) of a residue's N, CA, C."""
    e1 = (ca - n) / torch.linalg.vector_norm(ca - n)
    u = c - ca - ((c - ca) @ e1) * e1
    e2 = u / torch.linalg.vector_norm(u)
    return torch.stack([e1, e2, torch.linalg.cross(e1, e2)], dim=1)


def coordinates(model: PeptideModel, p: torch.Tensor) -> torch.Tensor:
    """(N, 3) Cartesian coordinates (Å) of every atom of the model for parameters p; the anchor residue's frame is
    the stored one moved by the frame rotation and shift."""
    r = model.n_res
    xyz = build_peptide(model.top, p[6 : 6 + r], p[6 + r : 6 + 2 * r], p[6 + 2 * r :].reshape(r, 4))  # (N, 3)
    a = np.nonzero(model.top.residue == model.anchor)[0]
    n, ca, c = xyz[a[0]], xyz[a[1]], xyz[a[2]]
    rot = torch.linalg.matrix_exp(skew(p[:3] / model.radius)) @ model.frame[0]
    return (xyz - ca) @ (rot @ _frame(n, ca, c).T).T + model.frame[1] + p[3:6]


def start_model(sequence: str, window_start: int, placed_xyz: np.ndarray, conformation: str = "strand",
                torsions: tuple[np.ndarray, np.ndarray] | None = None) -> PeptideModel:  # fmt: skip
    """The model of the whole ``sequence`` (with side chains) whose residue ``window_start`` sits on the placed
    window: placed_xyz (≥ 3, 3) Å holds the placed N, CA, C of that residue first (the atom order of
    :func:`patterson.ideal.ideal_peptide`). The window's residues are taken to run on to its end of the
    placement, at the conformation's (φ, ψ) or at ``torsions`` (φ (R,), ψ (R,) in radians); built: nothing yet."""
    top = topology(sequence, side_chains=True)
    phi, psi, chi = default_torsions(top, conformation)
    if torsions is not None:
        phi, psi = (torch.as_tensor(np.asarray(t, dtype=np.float64)) for t in torsions)
    placed = torch.as_tensor(np.asarray(placed_xyz[:3], dtype=np.float64))
    p = torch.cat([torch.zeros(6, dtype=torch.float64), phi, psi, chi.reshape(-1)])
    frame = (_frame(placed[0], placed[1], placed[2]), placed[1])
    return PeptideModel(top, p, window_start, frame, np.zeros(len(top.names), dtype=bool),
                        radius=max(5.0, 1.7 * len(top.sequence)))  # fmt: skip


def fit_main_chain(model: PeptideModel, xyz: np.ndarray, atoms: np.ndarray, n_iter: int = 200) -> float:
    """Set the model's frame and φ, ψ to put its ``atoms`` (N,) bool of the topology on xyz (atoms.sum(), 3) Å in
    least squares (ideal bonds and angles cannot follow a chain's torsions read one by one: the error grows along
    it). Returns the r.m.s. distance (Å) left."""
    free = torch.arange(6 + 2 * model.n_res)
    base, goal = model.params.clone(), torch.as_tensor(np.asarray(xyz, dtype=np.float64))

    def loss(x: torch.Tensor) -> torch.Tensor:
        return ((coordinates(model, base.index_put((free,), x))[atoms] - goal) ** 2).sum()

    model.params = base.index_put((free,), lbfgs(loss, base[free], n_iter))
    with torch.no_grad():
        return float(loss(model.params[free]).div(len(goal)).sqrt())


def _score(model: PeptideModel, p: torch.Tensor, target: SearchTarget, options: BuildOptions,
           built: np.ndarray | None = None) -> torch.Tensor:  # fmt: skip
    """The E² correlation of the built atoms (or those of ``built``) for parameters p; differentiable."""
    built = model.built if built is None else built
    frac = coordinates(model, p) @ torch.as_tensor(target.cell.frac).T  # (N, 3)
    z = atomic_numbers(np.array(model.top.elements))
    return e2_correlation(target, frac[None], z, options.b_iso, built.astype(np.float64))[0]


def refine(model: PeptideModel, target: SearchTarget, free: list[int], options: BuildOptions,
           n_iter: int | None = None, built: np.ndarray | None = None) -> tuple[torch.Tensor, float]:  # fmt: skip
    """Refine the parameters at positions ``free`` (the others fixed) to the largest correlation, φ and ψ
    restrained to where they start (a trust region). Returns the parameters and their correlation
    (unrestrained)."""
    idx = torch.as_tensor(free, dtype=torch.long)
    r = model.n_res
    base = model.params.clone()

    def full(x: torch.Tensor) -> torch.Tensor:
        return base.index_put((idx,), x)

    def loss(x: torch.Tensor) -> torch.Tensor:
        p = full(x)
        delta = (p - base)[6 : 6 + 2 * r]
        return -_score(model, p, target, options, built) + options.restraint * (delta**2).sum()

    x = lbfgs(loss, base[idx], options.refine_iter if n_iter is None else n_iter) if free else base[idx]
    p = full(x).detach()
    with torch.no_grad():
        return p, float(_score(model, p, target, options, built))


def _grid(model: PeptideModel, target: SearchTarget, options: BuildOptions, positions: list[int],
          values: list[tuple[float, ...]], built: np.ndarray) -> list[torch.Tensor]:  # fmt: skip
    """The ``keep_best`` parameter vectors with ``positions`` set to each of ``values`` (degrees), best first."""
    trials = []
    with torch.no_grad():
        for combo in values:
            p = model.params.clone()
            p[positions] = torch.as_tensor(np.radians(combo), dtype=p.dtype)
            trials.append((float(_score(model, p, target, options, built)), p))
    trials.sort(key=lambda t: -t[0])
    return [p for _, p in trials[: options.keep_best]]


def chi_values(residue: str) -> list[tuple[float, ...]]:
    """The χ grid of a residue: staggered sp³ torsions, 30° steps for the torsion of a planar end group."""
    geometry = SIDE_CHAIN_GEOMETRY[residue]
    n_chi = 1 + max((a[5] for a in geometry if a[5] is not None), default=-1)
    axes = []
    for k in range(n_chi):
        ends = [a for a in geometry if a[5] == k]
        planar = any(abs(a[6]) == 180.0 for a in ends) and residue not in ("LEU", "VAL", "ILE", "THR")
        axes.append(PLANAR_GRID if planar else SP3_GRID)
    return list(itertools.product(*axes))


def _try(model: PeptideModel, target: SearchTarget, options: BuildOptions, move: tuple[list[int], list],
         adding: np.ndarray, free: list[int]) -> bool:  # fmt: skip
    """Add the atoms ``adding``: grid the parameters move = (positions, values), refine the best few over ``free``;
    keep the best if it raises the correlation by ``accept``. Returns whether it was kept."""
    before = float(_score(model, model.params, target, options)) if model.built.any() else 0.0
    built = model.built | adding
    best = (-math.inf, None)
    for p in _grid(model, target, options, move[0], move[1], built):
        trial = PeptideModel(model.top, p, model.anchor, model.frame, built, model.radius)
        p_new, cc = refine(trial, target, free, options)
        best = (cc, p_new) if cc > best[0] else best
    if best[0] < before + options.accept:
        return False
    model.params, model.built = best[1], built
    return True


def _side_chain(model: PeptideModel, target: SearchTarget, i: int, options: BuildOptions) -> bool:
    """Build the side chain of residue i beyond Cβ (a χ grid, the best few refined); whether it was kept."""
    positions = model.chi_positions(i)
    if not positions:
        return False
    residue = ONE_LETTER[model.top.sequence[i]]
    return _try(model, target, options, (positions, chi_values(residue)), model.side_chain_of(i), positions)


def _extend(model: PeptideModel, target: SearchTarget, i: int, options: BuildOptions) -> bool:
    """Add residue i's main chain and Cβ next to the built part: a grid of the two torsions that place it (ψ of
    residue i − 1 and φ of i towards the C terminus, φ of i + 1 and ψ of i towards the N terminus), the best few
    refined with the residue's own torsions; whether it was kept."""
    towards_c = i > model.anchor
    if towards_c:
        positions = [model.index("psi", i - 1), model.index("phi", i)]
        free = [*positions, model.index("psi", i)]
    else:
        positions = [model.index("phi", i + 1), model.index("psi", i)]
        free = [*positions, model.index("phi", i)]
    grid = np.arange(-180.0, 180.0, options.step)
    adding = model.atoms_of(i, MAIN)
    return _try(model, target, options, (positions, list(itertools.product(grid, grid))), adding, free)


def free_parameters(model: PeptideModel) -> list[int]:
    """The frame and every torsion that moves a built atom."""
    free = list(range(6))
    for i in range(model.n_res):
        if model.atoms_of(i, ("N", "CA", "C")).any() and model.built[model.atoms_of(i, ("CA",))].any():
            free += [model.index("phi", i), model.index("psi", i)]
        free += model.chi_positions(i) if model.built[model.side_chain_of(i)].any() else []
    return free


def build_window(model: PeptideModel, target: SearchTarget, window: range, options: BuildOptions) -> list[str]:
    """Steps 1 and 2: the window's main chain and Cβ refined, then its side chains. Returns the steps' log."""
    model.built = np.isin(model.top.residue, list(window)) & np.isin(np.array(model.top.names), MAIN)
    model.params, cc = refine(model, target, free_parameters(model), options)
    steps = [f"window {window.start + 1}-{window.stop}: {int(model.built.sum())} atoms, CC {cc:.3f}"]
    for i in window:
        if _side_chain(model, target, i, options):
            steps.append(f"side chain {i + 1}: CC {float(_score(model, model.params, target, options)):.3f}")
    return steps


def quick_registers(model: PeptideModel, target: SearchTarget, window: range, options: BuildOptions) -> float:
    """A quick look at a register: the window's main chain and Cβ as placed, each side chain's χ1 on the staggered
    grid (the other χ as they are) added where it raises the correlation, nothing refined. Returns the correlation
    (the model keeps what was added)."""
    names = np.array(model.top.names)
    model.built = np.isin(model.top.residue, list(window)) & np.isin(names, MAIN)
    best = score(model, target, options)
    for i in window:
        if model.top.n_chi[i] == 0:
            continue
        built = model.built | model.side_chain_of(i)
        for p in _grid(model, target, options, [model.index("chi", i, 0)], [(v,) for v in SP3_GRID], built)[:1]:
            with torch.no_grad():
                cc = float(_score(model, p, target, options, built))
            if cc > best:
                best, model.params, model.built = cc, p, built
    return best


def extend_model(model: PeptideModel, target: SearchTarget, window: range, options: BuildOptions) -> list[str]:
    """Steps 3 and 4: residues beyond the window outwards with their side chains, then everything refined."""
    steps = []
    for order in (range(window.stop, model.n_res), range(window.start - 1, -1, -1)):
        for i in order:
            if not _extend(model, target, i, options):
                steps.append(f"residue {i + 1}: not kept")
                break
            steps.append(f"residue {i + 1}: CC {float(_score(model, model.params, target, options)):.3f}")
            if _side_chain(model, target, i, options):
                steps.append(f"side chain {i + 1}: CC {float(_score(model, model.params, target, options)):.3f}")
    model.params, cc = refine(model, target, free_parameters(model), options, options.final_iter)
    steps.append(f"all: {int(model.built.sum())} atoms, CC {cc:.3f}")
    return steps


def build_out(model: PeptideModel, target: SearchTarget, window: range, options: BuildOptions | None = None,
              extend: bool = True) -> tuple[PeptideModel, float, list[str]]:  # fmt: skip
    """Build the peptide out from the placed ``window`` of residues (see the module's steps; without ``extend``
    only the window's side chains). Returns the model (its ``built`` atoms the ones kept), its E² correlation on
    the target and a log of the steps."""
    options = options or BuildOptions()
    steps = build_window(model, target, window, options)
    if extend:
        steps += extend_model(model, target, window, options)
    for s in steps:
        log.debug("building: %s", s)
    return model, float(_score(model, model.params, target, options)), steps


def score(model: PeptideModel, target: SearchTarget, options: BuildOptions | None = None) -> float:
    """The work E² correlation of the model's built atoms."""
    with torch.no_grad():
        return float(_score(model, model.params, target, options or BuildOptions()))


# --- restrained atomic refinement ------------------------------------------------------------------------------


def restraint_pairs(xyz: np.ndarray, reach: float = 2.7) -> tuple[np.ndarray, np.ndarray]:
    """The pairs (P, 2) of atoms closer than ``reach`` Å in an ideal model (bonds, angles, the rings' 1–4) and their
    distances (P,): the geometry that :func:`restrained_refine` keeps."""
    i, j = np.triu_indices(len(xyz), k=1)
    d = np.linalg.norm(xyz[i] - xyz[j], axis=1)
    near = d < reach
    return np.stack([i[near], j[near]], axis=1), d[near]


def restrained_refine(xyz: np.ndarray, z: np.ndarray, data: tuple[np.ndarray, np.ndarray], cell: Cell, group,
                      n_iter: int = 100, weight: float = 1.0) -> tuple[np.ndarray, np.ndarray, float]:  # fmt: skip
    """Refine coordinates (N, 3) Å and isotropic B of atoms (atomic numbers z (N,)) against work amplitudes
    ``data`` = (hkl (M, 3) P1 Friedel half, f (M,)), keeping the starting model's distances below 2.7 Å (σ 0.02 Å)
    with ``weight`` against Σ (F − k|F_calc|)² / Σ F². Returns the coordinates, B (N,) and R on the data."""
    from patterson.phasing.placement import images
    from patterson.physics import AtomBatch, structure_factors

    pairs, d0 = restraint_pairs(xyz)
    pairs_t, d0_t = torch.as_tensor(pairs), torch.as_tensor(d0)
    hkl, fo = data[0], torch.as_tensor(data[1], dtype=torch.float64)
    frac_m = torch.as_tensor(cell.frac)
    k = len(group.rot)
    zz = torch.as_tensor(np.tile(z, k))[None]
    n = len(xyz)

    def r_and_geometry(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        pos, b = x[: 3 * n].reshape(n, 3), x[3 * n :].clamp(2.0, 80.0)
        sites = images((pos @ frac_m.T)[None], group)
        batch = AtomBatch(sites, zz, b.repeat(k)[None], torch.ones_like(sites[..., 0]), cell)
        fc = structure_factors(batch, hkl)[0].abs()
        scale = (fo * fc).sum() / (fc**2).sum().clamp_min(1e-30)
        r = ((fo - scale.detach() * fc) ** 2).sum() / (fo**2).sum()
        dist = torch.linalg.vector_norm(pos[pairs_t[:, 0]] - pos[pairs_t[:, 1]], dim=1)
        return r, (((dist - d0_t) / 0.02) ** 2).mean() + (((b - b.mean()) / 10.0) ** 2).mean()

    def loss(x: torch.Tensor) -> torch.Tensor:
        r, geometry = r_and_geometry(x)
        return r + weight * 1e-3 * geometry

    x0 = torch.cat([torch.as_tensor(xyz, dtype=torch.float64).reshape(-1), torch.full((n,), 15.0, dtype=torch.float64)])
    x = lbfgs(loss, x0, n_iter)
    with torch.no_grad():
        fit = r_and_geometry(x)[0]
    return x[: 3 * n].reshape(n, 3).numpy(), x[3 * n :].clamp(2.0, 80.0).numpy(), float(fit)
