"""The atoms step of ``patterson solve``: a solved map's peaks → atoms of the cell contents, refined, completed,
with riding hydrogens and disordered sites where the model explains the data, judged by R1 on the free reflections.

The pieces live in :mod:`patterson.solving.atoms` (model, refinement, completion), :mod:`patterson.solving.hydrogens`
and :mod:`patterson.solving.disorder`; this module runs them in order (:func:`solution_atoms`), for a real data set
(``solve``) or one synthetic crystal (:func:`atoms_of_split`), and writes the verdict (:func:`judge_atoms`).
"""

from __future__ import annotations

import logging
import math

import gemmi
import numpy as np
import torch

from patterson.cells import Cell
from patterson.evaluation.peaks import find_peaks
from patterson.maps import density_from_f, f_from_density
from patterson.solving.atoms import (
    COMPLETIONS,
    AtomModel,
    atoms_from_peaks,
    complete_model,
    reassign_elements,
    refine_atoms,
)
from patterson.solving.data import ObservedData
from patterson.solving.disorder import DISORDER_MAX_R1, add_disorder
from patterson.solving.hydrogens import add_hydrogens
from patterson.solving.symmetry import to_spacegroup, unique_peaks
from patterson.structures import atomic_numbers
from patterson.symmetry import SpaceGroup

log = logging.getLogger(__name__)

ATOM_RESOLUTION = 1.3  # Å: at or better than this, peaks are atoms and are refined as such


PEAK_THRESHOLD = 0.25  # peaks above this fraction of the highest, scaled by Z_lightest / Z_heaviest when known


def asu_peaks(rho: torch.Tensor, cell: Cell, group: SpaceGroup, composition: dict[str, float] | None,
              n_atoms: float):  # fmt: skip
    """The map's (X, Y, Z) peaks, one per symmetry orbit in the asymmetric unit, at most 1.5× the atoms expected
    (the contents, else ``n_atoms``), above :data:`PEAK_THRESHOLD` of the highest, scaled by Z_lightest / Z_heaviest
    of the contents (heights scale about as Z, so a light atom beside a heavy one needs a lower threshold)."""
    expected = sum(composition.values()) if composition else n_atoms
    expected = expected if math.isfinite(expected) else 10.0  # a Wilson plot of degenerate data gives NaN
    max_peaks = int(min(500, max(10, round(1.5 * expected))))
    z = atomic_numbers(list(composition)) if composition else np.ones(1)
    threshold = PEAK_THRESHOLD * float(z.min()) / float(z.max())
    peaks = find_peaks(rho, cell, threshold=threshold, min_separation=1.0, max_peaks=max_peaks)[0]
    return unique_peaks(peaks.frac, peaks.height, cell, group, min_separation=1.0)


def solution_atoms(
    data: ObservedData, free: np.ndarray, group: SpaceGroup, peaks, composition, about
) -> AtomModel | None:
    """The peaks as atoms of the cell contents, refined against the work amplitudes in ``group`` (the one the
    outputs are written in); ``about`` = (the data's group, the radiation). None without a composition or at lower
    resolution than :data:`ATOM_RESOLUTION`."""
    data_group, radiation = about
    if not composition or data.d_min > ATOM_RESOLUTION or not len(peaks.height):
        return None
    start = atoms_from_peaks(peaks.frac, peaks.height, peaks.multiplicity, composition, group)
    if len(start) == 0:
        return None
    same = data_group is not None and data.orbit is not None and data_group.name == group.name
    rep = np.unique(data.orbit, return_index=True)[1] if same else np.arange(len(data.hkl))  # one per orbit
    sigf = data.sigf[rep] if data.sigf is not None else None
    log.info("refining %d atoms against %d reflections", len(start), len(rep))
    form = "electron" if radiation == "electron" else "it92"
    observed = (data.f[rep], sigf, data.hkl[rep], free[rep])
    model = refine_atoms(start, observed, data.cell, group, form=form)
    if not len(model):
        return model
    p1, setting = (data.f, data.hkl, free), (data.cell, group, form)
    model = reassign_elements(model, observed, p1, setting, composition)
    for _ in range(0 if model.solved else COMPLETIONS):  # only a model that is not yet right is completed
        done = complete_model(model, observed, p1, setting, data.d_min)
        if done is model:  # nothing kept: a further round would find the same peaks
            break
        model = done
    if not model.solved or model.r1_work > DISORDER_MAX_R1:  # hydrogens and disorder on a model that explains the data
        return model
    if "H" in composition:
        model = add_hydrogens(model, observed, p1, setting, data.d_min)
    return add_disorder(model, observed, p1, setting, data.d_min)


def cell_contents(z: np.ndarray) -> dict[str, float]:
    """The cell contents {element: count} of atomic numbers z (padding zeros ignored), as a SHELX UNIT gives them."""
    z = np.asarray(z)
    values, counts = np.unique(z[z > 0], return_counts=True)
    return {gemmi.Element(int(v)).name: float(c) for v, c in zip(values, counts, strict=True)}


ATOMS_WORTH = 0.75  # a map whose R-free is this fraction of random phases' or more goes to no atoms step (time only:
# no map that the peptide-crystal benchmark claimed through atoms was above 0.62)


def worth_atoms(r_free: float, r_free_random: float) -> bool:
    """Whether a map's R-free is far enough below random phases' (:data:`ATOMS_WORTH`) to try its atoms: the atoms
    step on a map little better than random costs most (its completion rounds) and claims nothing."""
    return bool(r_free < ATOMS_WORTH * r_free_random)


def atoms_of_split(rho: torch.Tensor, data, group: SpaceGroup, composition: dict[str, float]) -> AtomModel | None:
    """``solve``'s atoms step on the map rho (X, Y, Z) of one synthetic crystal (``data``: a
    :class:`~patterson.phasing.compare.SplitMaps` of one example): the map moved to the origin of ``group`` and
    symmetrised as ``solve`` does (a map phased in P1, or by one of dual-space's P1 batches, sits at an origin of its
    own), its peaks become atoms of ``composition``, refined against the measured work amplitudes in ``group`` and
    judged by R1-free (the free reflections never read). None at lower resolution than :data:`ATOM_RESOLUTION`."""
    measured = data.measured[0].numpy()
    if not group.is_p1:
        f_map = f_from_density(rho[None], data.hkl, data.cell)[0].numpy()
        f_sg, fit = to_spacegroup(data.hkl, f_map, data.cell, group, data.d_min)
        if fit.consistent:
            coeff = np.where(measured, data.f_obs[0].numpy(), 0.0) * np.exp(1j * np.angle(f_sg))
            rho = density_from_f(torch.as_tensor(coeff)[None], data.hkl, data.cell, data.shape)[0]
    f = data.f_obs[0].numpy()[measured]
    observed = ObservedData(data.hkl[measured], f, None, data.cell, data.d_min, math.inf, len(f), len(f), 1.0, [])
    peaks = asu_peaks(rho, data.cell, group, composition, sum(composition.values()))
    return solution_atoms(observed, data.free[0].numpy()[measured], group, peaks, composition, (None, "xray"))


def judge_atoms(summary: dict, model: AtomModel | None) -> None:
    """summary.json's ``atoms`` block; refined atoms whose R1 on the never-fitted free reflections is at most
    :data:`~patterson.solving.atoms.SOLVED_R1_FREE` make the verdict ``solved`` (the map's own verdict is kept as
    ``map_verdict``)."""
    summary["map_verdict"] = summary["verdict"]
    if model is None:
        summary["atoms"] = None
        return
    counts = {str(e): int(n) for e, n in zip(*np.unique(model.elements, return_counts=True), strict=True)}
    summary["atoms"] = {
        "n": len(model), "elements": counts, "r1_work": model.r1_work, "r1_free": model.r1_free, "wr2": model.wr2,
        "solved": model.solved, "refinement": f"{model.cycles} L-BFGS steps on x, y, z and B_iso against the work F",
        "minor_components": 0 if model.part is None else int((model.part == 2).sum()),
        "riding_hydrogens": 0 if model.hydrogens is None else len(model.hydrogens),
    }  # fmt: skip
    if model.solved and summary["verdict"] != "solved":
        summary["verdict"] = "solved"
        summary["verdict_explanation"] = (
            f"solved: {len(model)} refined atoms give R1 {model.r1_free:.3f} on the free reflections, which neither "
            f"the phasing nor the refinement ever used (right atoms give 0.05–0.25, wrong ones about 0.5 or more)."
        )
