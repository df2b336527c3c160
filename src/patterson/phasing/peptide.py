"""Phasing a peptide crystal from its sequence: molecular replacement with ideal fragments, then building out.

:func:`phase_with_sequence` runs the whole route on amplitudes expanded to P1:

1. where the cell has a stacking axis (a strand every 4.8 Å), the β-sheet search of :mod:`~patterson.phasing.sheets`
   places whole main chains, two in every register; elsewhere, for each window length L from the whole sequence
   down (``window_drop`` shorter, at least ``min_window`` residues), an ideal poly-alanine strand (or helix) of L
   residues is placed by :func:`~patterson.phasing.placement.place_fragment` (windows of one length share a model
   unless their glycines differ), and each of the ``n_poses`` best placements is tried in every register (the
   window's side chains built, :func:`~patterson.phasing.building.build_out` without extension), the best register
   by the work E² correlation kept;
2. those models are built out over the whole sequence (:mod:`~patterson.phasing.building`), their side chains and
   chain ends revisited by the likelihood of the whole model (:mod:`~patterson.phasing.rebuilding`), and each is
   refined to its largest log-likelihood gain; the one with the largest wins;
3. its atoms are refined with geometry restraints against the work amplitudes
   (:func:`~patterson.phasing.building.restrained_refine`), ordered waters added where the difference map shows
   them (:mod:`~patterson.phasing.waters`) and all refined again; their structure factors give the phases.

The free reflections are never read by any step: ``work`` selects what every target holds.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch

from patterson.cells import Cell
from patterson.errors import PattersonError
from patterson.ideal import CONFORMATIONS, ideal_peptide, parse_sequence
from patterson.phasing.amplitudes import normalised_amplitudes
from patterson.phasing.building import (
    BuildOptions,
    PeptideModel,
    build_window,
    coordinates,
    extend_model,
    quick_registers,
    restrained_refine,
    score,
    start_model,
)
from patterson.phasing.dualspace import model_result
from patterson.phasing.likelihood import likelihood_target, refine_likelihood
from patterson.phasing.options import PhasingOptions
from patterson.phasing.placement import (
    PlacementOptions,
    SearchTarget,
    images,
    place_fragment,
    placed_frac,
    search_target,
)
from patterson.phasing.rebuilding import RebuildOptions, rebuild
from patterson.phasing.sheets import SheetOptions, chain_model, place_strands
from patterson.phasing.starts import PhasingResult, Starts, prepare_starts
from patterson.phasing.waters import WaterOptions, find_waters
from patterson.physics import AtomBatch, structure_factors
from patterson.structures import Atoms, atomic_numbers, read_structure
from patterson.symmetry import SpaceGroup

log = logging.getLogger(__name__)


@dataclass(frozen=True, kw_only=True)
class PeptideOptions:
    """How :func:`phase_with_sequence` runs.

    Attributes
    ----------
    conformations : the ideal fragments tried (``strand``, ``helix``).
    min_window, window_drop : window lengths from the sequence's length down by at most ``window_drop``, never
        below ``min_window`` residues (or the whole sequence, when shorter).
    n_poses : placements of each window built on.
    refine_iter, restraint_weight : the restrained refinement of the final atoms. A peptide at 1.5–2 Å has about
        two work reflections per refined parameter, so the geometry must weigh: at weight 1 the real peptides'
        built models overfitted (R-free far above R-work), at 10 the gap and the phase error both shrank.
    max_seconds : no further placement is built out once this many seconds have passed (the best one built so far
        is kept; at least one is always built; 0: no limit).
    n_polish : cycles of positivity on F after the built model's phases are put on F (:func:`fragment_phasing`;
        none by default: on a right model they made the phases worse).
    sheets : where the cell has a stacking axis (a strand every 4.8 Å), the β-sheet search of
        :mod:`~patterson.phasing.sheets` places the whole main chain instead of step 1–2's ideal windows (None: the
        ideal windows everywhere).
    placement, building : the options of the two steps.
    rebuild : how each built model's side chains and chain ends are revisited by the likelihood of the whole model
        (:mod:`~patterson.phasing.rebuilding`; None: not at all).
    waters : how ordered waters are added to the refined model (:mod:`~patterson.phasing.waters`; None: none).
    """

    conformations: tuple[str, ...] = ("strand",)
    min_window: int = 4
    window_drop: int = 2
    n_poses: int = 2
    refine_iter: int = 150
    restraint_weight: float = 10.0
    max_seconds: float = 180.0
    n_polish: int = 0
    sheets: SheetOptions | None = field(default_factory=SheetOptions)
    placement: PlacementOptions = field(default_factory=PlacementOptions)
    building: BuildOptions = field(default_factory=BuildOptions)
    rebuild: RebuildOptions | None = field(default_factory=RebuildOptions)
    waters: WaterOptions | None = field(default_factory=WaterOptions)

    def __post_init__(self) -> None:
        unknown = [c for c in self.conformations if c not in CONFORMATIONS]
        if unknown or not self.conformations:
            raise PattersonError(f"unknown conformation {unknown} (choose from {', '.join(CONFORMATIONS)})")
        if self.min_window < 2 or self.window_drop < 0 or self.n_poses < 1:
            raise PattersonError("min_window must be at least 2, window_drop at least 0 and n_poses at least 1")
        if self.max_seconds < 0 or self.n_polish < 0:
            raise PattersonError("max_seconds and n_polish must not be negative")


@dataclass
class PeptideSolution:
    """The built peptide: its atoms in the asymmetric unit (frac (N, 3), elements, names, residue labels, b_iso),
    the work E² correlation of the built model, R on the work amplitudes after refinement, the phases (M,) and
    structure factors (M,) at the reflections given, what was tried, the building's log, how long each step took
    (s), and every model built: its atoms (N, 3) Å refined to their largest LLG, their elements and that LLG (the
    chosen model's is the largest; :func:`refined_model` finishes any of them as it was)."""

    frac: np.ndarray
    elements: np.ndarray
    names: np.ndarray
    labels: np.ndarray
    b_iso: np.ndarray
    cc_work: float
    r_work: float
    phi_rad: np.ndarray
    f_calc: np.ndarray
    tried: list[dict]
    steps: list[str]
    seconds: dict[str, float]
    built: list[tuple[np.ndarray, np.ndarray, float]]


def windows(sequence: str, options: PeptideOptions) -> list[tuple[int, int]]:
    """(start, length) of every window searched, longest first."""
    n = len(sequence)
    shortest = min(n, max(options.min_window, n - options.window_drop))
    return [(a, length) for length in range(n, shortest - 1, -1) for a in range(n - length + 1)]


def _placements(seq: str, data: tuple, options: PeptideOptions) -> list[dict]:
    """Every placement to build on: window, register, conformation, placed coordinates (Å) and its correlation."""
    hkl, f, cell, group, work = data
    out, searched = [], {}
    for conformation in options.conformations:
        for start, length in windows(seq, options):
            window = seq[start : start + length]
            key = (conformation, tuple(c == "G" for c in window))  # poly-alanine windows alike but for glycines
            if key not in searched:
                model = ideal_peptide(window, conformation).atoms
                try:
                    placement = place_fragment(model, hkl, f, cell, group, work, options.placement)
                except PattersonError as exc:  # too long for this cell: every pose overlaps its images
                    log.info("window %d-%d (%s): %s", start + 1, start + length, conformation, exc)
                    searched[key] = []
                    continue
                xyz = model.xyz - model.xyz.mean(axis=0)
                poses = [(placement.cc, placement.rotation, placement.translation), *placement.others]
                searched[key] = [(cc, cell.to_cartesian(placed_frac(torch.as_tensor(xyz), torch.as_tensor(rot)[None],
                                                                    torch.as_tensor(tr)[None], cell)[0].numpy()))
                                 for cc, rot, tr in poses[: options.n_poses]]  # fmt: skip
            for pose, (cc, placed) in enumerate(searched[key]):
                out.append({"conformation": conformation, "start": start, "length": length, "pose": pose,
                            "placement_cc": cc, "placed": placed})  # fmt: skip
    if not out:
        raise PattersonError(f"no window of the sequence ({len(seq)} residues down to {options.min_window}) can be "
                             "placed without overlapping its symmetry images: is the cell right?")  # fmt: skip
    return out


def _best_registers(seq: str, candidates: list[dict], target, options: PeptideOptions) -> list[tuple[dict, range]]:
    """For each (conformation, length, pose) the register whose window side chains (χ1 only) fit best."""
    best: dict[tuple, tuple[float, dict]] = {}
    for c in candidates:
        model = start_model(seq, c["start"], c["placed"], c["conformation"])
        c["register_cc"] = quick_registers(model, target, range(c["start"], c["start"] + c["length"]),
                                           options.building)  # fmt: skip
        key = (c["conformation"], c["length"], c["pose"])
        if key not in best or c["register_cc"] > best[key][0]:
            best[key] = (c["register_cc"], c)
    return [c for _, c in best.values()]


def _phases(frac: np.ndarray, z: np.ndarray, b_iso: np.ndarray, hkl: np.ndarray, cell: Cell, group: SpaceGroup):
    """(M,) complex structure factors of the asymmetric-unit atoms and their images."""
    k = len(group.rot)
    sites = images(torch.as_tensor(frac)[None], group)
    batch = AtomBatch(sites, torch.as_tensor(np.tile(z, k))[None], torch.as_tensor(np.tile(b_iso, k))[None],
                      torch.ones(sites.shape[:2], dtype=sites.dtype), cell)  # fmt: skip
    with torch.no_grad():
        return structure_factors(batch, hkl)[0].numpy()


def _built(model: PeptideModel, target: SearchTarget) -> tuple[np.ndarray, float]:
    """The built atoms (N, 3) Å refined to the largest LLG on the target, and that LLG."""
    with torch.no_grad():
        xyz = coordinates(model, model.params).numpy()[model.built]
    z = atomic_numbers(np.array(model.top.elements)[model.built])
    return refine_likelihood(likelihood_target(target, z), xyz)


def refined_model(xyz: np.ndarray, elements: np.ndarray, data: tuple,
                  options: PeptideOptions) -> tuple[np.ndarray, np.ndarray, np.ndarray, float, np.ndarray]:  # fmt: skip
    """The route's last step on a built model (atoms xyz (N, 3) Å of ``elements``): refined with restraints
    against the work amplitudes of ``data`` = (hkl, f, cell, group, work), then with its ordered waters (appended,
    :mod:`~patterson.phasing.waters`; ``options.waters``, for its ``cycles`` rounds) refined again. Returns
    fractional coordinates (N + W, 3), elements (N + W,), B (N + W,), R on the work set and the structure factors
    (M,) of the atoms and their images."""
    hkl, f, cell, group, work = data
    sel = np.ones(len(hkl), dtype=bool) if work is None else np.asarray(work, dtype=bool)

    def refined(xyz: np.ndarray, z: np.ndarray) -> tuple:
        xyz, b_iso, r = restrained_refine(xyz, z, (hkl[sel], f[sel]), cell, group, options.refine_iter,
                                          options.restraint_weight)  # fmt: skip
        frac = cell.to_fractional(xyz)
        return frac, b_iso, r, _phases(frac, z, b_iso, hkl, cell, group)

    frac, b_iso, r, f_calc = refined(xyz, atomic_numbers(elements))
    elements = np.asarray(elements)
    for _ in range(options.waters.cycles if options.waters is not None else 0):
        waters = find_waters(frac, elements, data, f_calc, options.waters)
        if not len(waters):
            break
        elements = np.append(elements, ["O"] * len(waters))
        frac, b_iso, r, f_calc = refined(cell.to_cartesian(np.vstack([frac, waters])), atomic_numbers(elements))
    return frac, elements, b_iso, r, f_calc


def phase_with_sequence(
    sequence: str,
    hkl: np.ndarray,
    f: np.ndarray,
    cell: Cell,
    group: SpaceGroup,
    work: np.ndarray | None = None,
    options: PeptideOptions | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> PeptideSolution:
    """Phase a peptide crystal from its sequence (see the module's steps).

    Parameters
    ----------
    sequence : one-letter residue codes of the peptide in the asymmetric unit.
    hkl, f : (M, 3) reflections on the Friedel half of P1 and their amplitudes (M,).
    cell, group : the crystal's cell and space group.
    work : (M,) bool, the reflections every step may use (None: all); the others are never read.
    options : :class:`PeptideOptions` (None: the defaults).
    progress : called with (placements built, placements to build) after each.
    """
    options = options or PeptideOptions()
    seq = parse_sequence(sequence)
    t0 = time.perf_counter()
    data = (np.asarray(hkl), np.asarray(f, dtype=np.float64), cell, group, work)
    target = search_target(data[0], data[1], cell, group, work, None)
    chains = place_strands(seq, target, options.sheets, progress) if options.sheets is not None else []
    if chains:  # whole main chains in sheets, each in its own register
        candidates = [{"conformation": "sheet", "start": 0, "length": len(seq), "pose": i, "conformer": c.conformer,
                       "register": c.start, "llg": round(c.llg, 2), "chain": c}
                      for i, c in enumerate(chains)]  # fmt: skip
    else:
        candidates = _placements(seq, data, options)
    t1 = time.perf_counter()
    chosen = candidates if chains else _best_registers(seq, candidates, target, options)
    t2 = time.perf_counter()
    best, built = None, []
    for i, c in enumerate(chosen):
        if best is not None and 0 < options.max_seconds < time.perf_counter() - t0:
            log.info("time budget of %.0f s spent: %d of %d placements built", options.max_seconds, i, len(chosen))
            break
        model = chain_model(seq, c["chain"]) if "chain" in c else start_model(seq, c["start"], c["placed"],
                                                                              c["conformation"])  # fmt: skip
        window = range(c["start"], c["start"] + c["length"])
        steps = build_window(model, target, window, options.building)
        steps += extend_model(model, target, window, options.building)
        if options.rebuild is not None:
            steps += rebuild(model, target, options.rebuild)
        c["built_cc"] = score(model, target, options.building)
        c["built_atoms"] = int(model.built.sum())
        xyz, gain = _built(model, target)
        c["built_llg"] = round(gain, 2)
        built.append((xyz, np.array(model.top.elements)[model.built], gain))
        log.info("window %s of %d residues at %d, pose %d: built %d atoms, CC %.3f, LLG %.1f", c["conformation"],
                 c["length"], c["start"] + 1, c["pose"], c["built_atoms"], c["built_cc"], gain)  # fmt: skip
        if best is None or gain > best[0]["built_llg"]:
            best = (c, model, steps, xyz)
        if progress is not None:
            progress(i + 1, len(chosen))
    t3 = time.perf_counter()
    c, model, steps, xyz = best
    frac, elements, b_iso, r_work, f_calc = refined_model(xyz, np.array(model.top.elements)[model.built], data,
                                                          options)  # fmt: skip
    t4 = time.perf_counter()
    tried = [{k: v for k, v in t.items() if k not in ("placed", "chain")} for t in candidates]
    seconds = {"placement": t1 - t0, "registers": t2 - t1, "building": t3 - t2, "refinement": t4 - t3, "total": t4 - t0}
    n_waters = len(elements) - int(model.built.sum())
    names = np.append(np.array(model.top.names)[model.built], ["O"] * n_waters)
    labels = np.append(np.array(model.top.labels)[model.built], [f"W:HOH:{i + 1}" for i in range(n_waters)])
    return PeptideSolution(frac, elements, names, labels, b_iso, c["built_cc"], r_work, np.angle(f_calc), f_calc,
                           tried, steps, {k: round(v, 2) for k, v in seconds.items()}, built)  # fmt: skip


CELL_TOLERANCE = (0.01, 1.0)  # a model file's cell is the data's within 1% on each edge and 1° on each angle


def read_fragment(path: str, cell: Cell) -> Atoms:
    """A search model from a PDB/mmCIF file (non-H atoms, first model): a one-line PattersonError where the file
    carries a cell (CRYST1 or _cell) that is not the data's ``cell`` — coordinates in another crystal's frame are
    not a model of this one. A file without a cell (or gemmi's 1 Å placeholder) is taken as it is."""
    model = read_structure(path)
    if model.elements.size == 0:
        raise PattersonError(f"fragment file {path}: no atoms")
    own = model.cell
    if own is not None and min(own[:3]) > 1.0:
        edges = np.abs(np.array(own[:3]) / np.array(cell.parameters[:3]) - 1.0)
        angles = np.abs(np.array(own[3:]) - np.array(cell.parameters[3:]))
        if edges.max() > CELL_TOLERANCE[0] or angles.max() > CELL_TOLERANCE[1]:
            mine, theirs = (" ".join(f"{x:.2f}" for x in c) for c in (own, cell.parameters))
            raise PattersonError(f"fragment file {path}: its cell ({mine}) is not the data's ({theirs}); give the "
                                 "model in the data's cell, or without a cell")  # fmt: skip
    return model.replace(b_iso=np.full(len(model.elements), 20.0), occ=np.ones(len(model.elements)))


def _placed_model(model: Atoms, data: tuple, options: PeptideOptions) -> np.ndarray:
    """(M,) structure factors of a search model placed by :func:`place_fragment` (``data`` = (hkl, f, cell, group,
    work)), with its images."""
    hkl, f, cell, group, work = data
    placement = place_fragment(model, hkl, f, cell, group, work, options.placement)
    log.info("fragment of %d atoms placed: E² correlation %.3f", len(model.elements), placement.cc)
    return _phases(placement.frac, atomic_numbers(placement.elements), placement.b_iso, hkl, cell, group)


def fragment_phasing(
    f_obs: torch.Tensor,
    hkl: np.ndarray,
    cell: Cell,
    shape: tuple[int, int, int],
    search: str | Atoms,
    options: PeptideOptions | None = None,
    *,
    f000: torch.Tensor | float | None = None,
    group: SpaceGroup | None = None,
    observed: torch.Tensor | None = None,
    free: torch.Tensor | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> PhasingResult:
    """Phasing from a sequence or a model, as a phasing method: :func:`phase_with_sequence` (or the model placed)
    on the work reflections of each structure, the model's phases put on F (and polished ``n_polish`` cycles) as
    dual-space's best trial is (:func:`~patterson.phasing.dualspace.model_result`), cross-validated on the free set
    no step read.

    Parameters
    ----------
    f_obs : (B, M) observed amplitudes on the P1 Friedel half ``hkl``; cell, shape: the cell and the map's grid.
    search : one-letter residue codes of the peptide in the asymmetric unit (placed and built out), or a model's
        atoms (:func:`read_fragment`; placed only).
    options : :class:`PeptideOptions` (None: the defaults).
    f000, group, observed, free, progress : as for :func:`~patterson.phasing.dualspace.dual_space`.
    """
    options = options or PeptideOptions()
    s = prepare_starts(f_obs, hkl, cell, shape, PhasingOptions(n_starts=1), observed, free)
    work = ~s.floating  # (B, M) the imposed reflections: neither free nor unmeasured
    group = group or SpaceGroup.of("P 1")
    models = []
    for b in range(s.fo.shape[0]):
        f_work = torch.where(work[b], s.fo[b], 0.0).numpy()  # the free amplitudes are not even passed on
        if isinstance(search, str):
            fc = phase_with_sequence(search, hkl, f_work, cell, group, work[b].numpy(), options, progress).f_calc
        else:
            fc = _placed_model(search, (hkl, f_work, cell, group, work[b].numpy()), options)
        models.append(torch.as_tensor(fc))
    return models_result(s, torch.stack(models), f000, shape, options)


def models_result(s: Starts, f_calc: torch.Tensor, f000, shape: tuple[int, int, int],
                  options: PeptideOptions) -> PhasingResult:  # fmt: skip
    """The :class:`PhasingResult` of models' structure factors f_calc (B, M), one per structure of ``s``: their
    E (in shells of the work set) put on F as dual-space's best trial is
    (:func:`~patterson.phasing.dualspace.model_result`), cross-validated on the free set and judged by the
    verdict for atomic models (``kind="model"``, :func:`~patterson.phasing.validation.verdict`)."""
    work = ~s.floating
    e = normalised_amplitudes(f_calc.abs(), s.hkl, s.cell, "E", mask=work)  # (B, M)
    e_calc = torch.polar(e, torch.angle(f_calc)).to(s.ctype)
    return model_result(s, e_calc, (f000, options.n_polish, shape), "r_free", ("fragments", 0), kind="model")
