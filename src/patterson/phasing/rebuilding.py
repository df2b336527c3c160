"""Rebuilding a built peptide against the likelihood of the whole model.

The building (:mod:`~patterson.phasing.building`) chooses each side chain and each new residue greedily, by the
E² correlation of what was built so far: a side chain is fixed before its neighbours exist, and the residue at a
chain end hangs on torsions grown into an incomplete map. Once the whole model stands, :func:`rebuild` revisits
those choices with the model's log-likelihood gain (:mod:`~patterson.phasing.likelihood`), which weighs each
reflection by what a model of this size and error can know of it:

1. every side chain: its χ grid (:func:`~patterson.phasing.building.chi_values`) with the rest of the model
   present, the best ``keep_best`` refined (its χ), kept when the LLG rises by ``accept`` — a side chain the
   building left out is added so, the gain counted from the LLG of the model without it;
2. each chain end away from the anchor: the two torsions that place the end residue on a ``step`` grid, the best
   refined with its remaining torsions and side chain, kept likewise;

``cycles`` times. Before that, :func:`pack` chooses all side chains at once: one at a time, a side chain is judged
in the company of wrong neighbours, and a main chain a few tenths of an Å off turns each right side chain away
from its density until the others are right too. Each of ``pack_cycles`` rounds sets every χ to the combination
on the χ grid with the largest LLG of the whole model (coordinate descent over the residues from ``pack_starts``
random combinations, each side chain's structure factors at every grid point computed once and summed), then
refines every torsion; the model keeps the round with the largest LLG.

The torsion-space model keeps ideal bonds and angles throughout. Only the target's reflections take part: built
from a :class:`~patterson.phasing.placement.SearchTarget`, they are the work set alone.
"""

from __future__ import annotations

import dataclasses
import itertools
import logging
from dataclasses import dataclass

import numpy as np
import torch

from patterson.errors import PattersonError
from patterson.ideal import ONE_LETTER
from patterson.minimize import lbfgs
from patterson.phasing.building import PeptideModel, chi_values, coordinates, free_parameters
from patterson.phasing.likelihood import Likelihood, gain_terms, likelihood_target, llg_terms
from patterson.phasing.placement import SearchTarget, calculated_f
from patterson.structures import atomic_numbers

log = logging.getLogger(__name__)


@dataclass(frozen=True, kw_only=True)
class RebuildOptions:
    """How :func:`rebuild` revisits a built model.

    Attributes
    ----------
    cycles : passes over the side chains and the chain ends.
    error_a : the coordinate error (Å) the likelihood assumes of the model.
    keep_best : grid points refined at each step.
    accept : the rise of the LLG that keeps a change.
    step : grid step (degrees) of the torsions that place an end residue.
    refine_iter : L-BFGS iterations of each local refinement.
    restraint : weight of Σ (Δφ² + Δψ²) (radians²) to the grid point a refinement starts from.
    pack_cycles : rounds of :func:`pack` before the rebuilding (0: none); ``pack_starts``: random χ combinations
        each round descends from; ``pack_restraint``, ``pack_iter``: the restraint weight and L-BFGS iterations of
        its refinement of every torsion.
    """

    cycles: int = 2
    error_a: float = 0.5
    keep_best: int = 3
    accept: float = 0.5
    step: float = 30.0
    refine_iter: int = 30
    restraint: float = 5.0
    pack_cycles: int = 8
    pack_starts: int = 20
    pack_restraint: float = 0.5
    pack_iter: int = 60

    def __post_init__(self) -> None:
        if min(self.cycles, self.refine_iter, self.pack_cycles, self.pack_iter) < 0 or not 0.0 < self.step <= 180.0:
            raise PattersonError("rebuild: cycles, refine_iter, pack_cycles and pack_iter must not be negative and "
                                 "step lie within (0, 180] degrees")  # fmt: skip
        if self.keep_best < 1 or self.pack_starts < 1:
            raise PattersonError("rebuild: keep_best and pack_starts must be at least 1")


def model_llg(model: PeptideModel, lik: Likelihood, p: torch.Tensor) -> torch.Tensor:
    """The LLG of the model's built atoms for parameters p; differentiable."""
    frac = coordinates(model, p)[model.built] @ torch.as_tensor(lik.target.cell.frac).T  # (N, 3)
    return llg_terms(lik, frac[None]).sum()


def _refine(model: PeptideModel, lik: Likelihood, p0: torch.Tensor, free: list[int],
            options: RebuildOptions) -> tuple[torch.Tensor, float]:  # fmt: skip
    """Parameters p0 refined at positions ``free`` to the largest LLG, φ and ψ restrained to where they start."""
    idx, r = torch.as_tensor(free, dtype=torch.long), model.n_res

    def loss(x: torch.Tensor) -> torch.Tensor:
        p = p0.index_put((idx,), x)
        return -model_llg(model, lik, p) + options.restraint * ((p - p0)[6 : 6 + 2 * r] ** 2).sum()

    p = p0.index_put((idx,), lbfgs(loss, p0[idx], options.refine_iter)).detach()
    with torch.no_grad():
        return p, float(model_llg(model, lik, p))


def _try(model: PeptideModel, lik: Likelihood, move: tuple[list[int], list], free: list[int],
         options: RebuildOptions, before: float | None = None) -> float | None:  # fmt: skip
    """Grid the parameters move = (positions, values in degrees), refine the best few over ``free``; the model
    takes the best when it raises the LLG by ``accept`` over ``before`` (None: the model's LLG as it stands).
    Returns the new LLG, or None when nothing was kept."""
    positions, values = move
    grid = model.params.repeat(len(values), 1)  # (G, P)
    grid[:, positions] = torch.as_tensor(np.radians(np.asarray(values, dtype=np.float64)))
    frac_m = torch.as_tensor(lik.target.cell.frac)
    with torch.no_grad():
        before = float(model_llg(model, lik, model.params)) if before is None else before
        frac = torch.stack([coordinates(model, p)[model.built] for p in grid]) @ frac_m.T  # (G, N, 3)
        gains = torch.cat([llg_terms(lik, chunk).sum(-1) for chunk in torch.split(frac, 32)])
    top = torch.topk(gains, min(options.keep_best, len(gains))).indices.tolist()
    best = max((_refine(model, lik, grid[i], free, options) for i in top), key=lambda t: t[1])
    if best[1] < before + options.accept:
        return None
    model.params = best[0]
    return best[1]


def _likelihood(model: PeptideModel, target: SearchTarget, options: RebuildOptions) -> Likelihood:
    """The likelihood of the model's built atoms against the target."""
    return likelihood_target(target, atomic_numbers(np.array(model.top.elements)[model.built]), options.error_a)


def _side_chain(model: PeptideModel, lik: Likelihood, i: int, options: RebuildOptions) -> float | None:
    """Residue i's side chain gridded and refined by the LLG of the whole model: re-tried where it is built, added
    where it is not (the gain then counted from the model without it). Returns the new LLG, or None."""
    chi = model.chi_positions(i)
    move = (chi, chi_values(ONE_LETTER[model.top.sequence[i]]))
    if model.built[model.side_chain_of(i)].any():
        return _try(model, lik, move, chi, options)
    with torch.no_grad():
        before = float(model_llg(model, lik, model.params))
    trial = dataclasses.replace(model, built=model.built | model.side_chain_of(i))
    gain = _try(trial, _likelihood(trial, lik.target, options), move, chi, options, before)
    if gain is not None:
        model.params, model.built = trial.params, trial.built
    return gain


def _ends(model: PeptideModel) -> list[tuple[int, list[int], list[int]]]:
    """(residue, gridded positions, other free positions) of each chain end away from the anchor."""
    n, out = model.n_res, []
    if n >= 2 and model.anchor != n - 1:
        out.append((n - 1, [model.index("psi", n - 2), model.index("phi", n - 1)], [model.index("psi", n - 1)]))
    if n >= 2 and model.anchor != 0:
        out.append((0, [model.index("phi", 1), model.index("psi", 0)], [model.index("phi", 0)]))
    return out


def _side_chain_tables(model: PeptideModel, target: SearchTarget,
                       residues: list[int]) -> list[tuple[torch.Tensor, torch.Tensor]]:  # fmt: skip
    """For each residue: its χ grid (S, n_χ) in radians and the structure factors (S, M) of its side chain (beyond
    Cβ, with its images) at each grid point, the rest of the model as it stands."""
    z = atomic_numbers(np.array(model.top.elements))
    frac_m = torch.as_tensor(target.cell.frac)
    out = []
    with torch.no_grad():
        for i in residues:
            chi = torch.as_tensor(np.radians(chi_values(ONE_LETTER[model.top.sequence[i]])))  # (S, n_χ)
            grid = model.params.repeat(len(chi), 1)
            grid[:, model.chi_positions(i)] = chi
            side = model.side_chain_of(i)
            frac = torch.stack([coordinates(model, p)[side] for p in grid]) @ frac_m.T  # (S, n, 3)
            out.append((chi, calculated_f(target, frac, z[side], 20.0)))
    return out


def pack_side_chains(model: PeptideModel, lik: Likelihood, residues: list[int], n_starts: int,
                     rng: np.random.Generator) -> float:  # fmt: skip
    """Set the χ of ``residues`` to the combination on their χ grids with the largest LLG of the whole model
    (``lik``, for the model with those side chains built; every other parameter fixed): coordinate descent over the
    residues, in random order, from the grid point nearest the model's own χ and ``n_starts`` − 1 random
    combinations. Returns that LLG."""
    tables = _side_chain_tables(model, lik.target, residues)
    rest = model.built & ~np.any([model.side_chain_of(i) for i in residues], axis=0)
    with torch.no_grad():
        frac = coordinates(model, model.params)[rest] @ torch.as_tensor(lik.target.cell.frac).T
        base = calculated_f(lik.target, frac[None], atomic_numbers(np.array(model.top.elements)[rest]), 20.0)[0]
        turn = lambda chi, i: (chi - model.params[model.chi_positions(i)] + np.pi) % (2 * np.pi) - np.pi  # noqa: E731
        now = [int(torch.argmin(turn(chi, i).abs().sum(-1))) for i, (chi, _) in zip(residues, tables, strict=True)]
        best = (-np.inf, [])
        for start in range(n_starts):
            pick = list(now) if start == 0 else [int(rng.integers(len(chi))) for chi, _ in tables]
            total = base + sum(f[k] for (_, f), k in zip(tables, pick, strict=True))
            value, changed = float(gain_terms(lik, total.abs()[None] ** 2).sum()), True
            while changed:
                changed = False
                for j in rng.permutation(len(tables)):
                    others = total - tables[j][1][pick[j]]
                    gains = gain_terms(lik, (others[None] + tables[j][1]).abs() ** 2).sum(-1)  # (S,)
                    k = int(torch.argmax(gains))
                    if k != pick[j] and float(gains[k]) > value + 1e-9:
                        pick[j], value, changed = k, float(gains[k]), True
                    total = others + tables[j][1][pick[j]]
            best = max(best, (value, pick), key=lambda t: t[0])
    for i, (chi, _), k in zip(residues, tables, best[1], strict=True):
        model.params[model.chi_positions(i)] = chi[k]
    return best[0]


def pack(model: PeptideModel, target: SearchTarget, options: RebuildOptions) -> list[str]:
    """``pack_cycles`` rounds of :func:`pack_side_chains` (every residue whose Cβ is built) and a refinement of
    every torsion by the LLG; the model keeps the round with the largest LLG. Returns a log of the rounds."""
    cb = [model.built[model.atoms_of(i, ("CB",))].any() for i in range(model.n_res)]
    residues = [i for i in range(model.n_res) if model.chi_positions(i) and cb[i]]
    if not residues or options.pack_cycles == 0:
        return []
    model.built = model.built | np.any([model.side_chain_of(i) for i in residues], axis=0)
    lik, rng = _likelihood(model, target, options), np.random.default_rng(0)
    refining = dataclasses.replace(options, restraint=options.pack_restraint, refine_iter=options.pack_iter)
    best, steps = (-np.inf, model.params), []
    for cycle in range(options.pack_cycles):
        packed = pack_side_chains(model, lik, residues, options.pack_starts, rng)
        model.params, value = _refine(model, lik, model.params, free_parameters(model), refining)
        steps.append(f"packing round {cycle + 1}: LLG {packed:.1f} on the grid, {value:.1f} refined")
        best = max(best, (value, model.params), key=lambda t: t[0])
    model.params = best[1]
    return steps


def rebuild(model: PeptideModel, target: SearchTarget, options: RebuildOptions | None = None) -> list[str]:
    """Revisit the built model's side chains and chain ends by the LLG of the whole model (see the module's steps);
    the model takes every change kept. Returns a log of the changes."""
    options = options or RebuildOptions()
    steps = pack(model, target, options)
    lik = _likelihood(model, target, options)
    grid = np.arange(-180.0, 180.0, options.step)
    for cycle in range(options.cycles):
        for i in range(model.n_res):
            if not model.chi_positions(i) or not model.built[model.atoms_of(i, ("CB",))].any():
                continue
            added = not model.built[model.side_chain_of(i)].any()
            gain = _side_chain(model, lik, i, options)
            if gain is not None:
                steps.append(f"cycle {cycle + 1}, side chain {i + 1}{' added' if added else ''}: LLG {gain:.1f}")
                lik = _likelihood(model, target, options) if added else lik
        for i, positions, others in _ends(model):
            if not model.built[model.atoms_of(i, ("CA",))].any():
                continue
            chi = model.chi_positions(i)
            move = (positions, list(itertools.product(grid, grid)))
            gain = _try(model, lik, move, [*positions, *others, *chi], options)
            if gain is not None:
                steps.append(f"cycle {cycle + 1}, end residue {i + 1}: LLG {gain:.1f}")
    for s in steps:
        log.debug("rebuilding: %s", s)
    return steps
