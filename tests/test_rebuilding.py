"""Rebuilding a built peptide by the likelihood of the whole model (#30): wrong rotamers and a wrong chain end put
right again, every side chain packed at once, a chain model fitted to a placed chain, the options checked."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from patterson.cells import Cell
from patterson.errors import PattersonError
from patterson.ideal import ideal_strand
from patterson.phasing.building import coordinates, fit_main_chain, start_model
from patterson.phasing.likelihood import likelihood_target
from patterson.phasing.placement import search_target
from patterson.phasing.rebuilding import RebuildOptions, model_llg, pack, rebuild
from patterson.physics import AtomBatch, miller_indices, structure_factors
from patterson.structures import Atoms, atomic_numbers
from patterson.symmetry import SpaceGroup

CELL = Cell(21.0, 17.0, 16.0, 90.0, 90.0, 90.0)
P1 = SpaceGroup.of("P 1")
SEQUENCE = "VLTV"


def _model_and_target(d_min: float = 1.5):
    """A built VLTV strand in a P1 cell, its true coordinates (N, 3) Å and the search target of its exact |F|."""
    placed = ideal_strand(SEQUENCE).atoms.xyz[:3] + np.array([10.5, 8.5, 8.0])
    model = start_model(SEQUENCE, 0, placed)
    model.built = np.ones(len(model.top.names), dtype=bool)
    with torch.no_grad():
        true_xyz = coordinates(model, model.params).numpy()
    atoms = Atoms(xyz=true_xyz, elements=np.array(model.top.elements), b_iso=np.full(len(true_xyz), 15.0),
                  occ=np.ones(len(true_xyz)))  # fmt: skip
    hkl = miller_indices(CELL, d_min)
    f = structure_factors(AtomBatch.from_atoms([atoms], CELL), hkl)[0].abs().numpy()
    return model, true_xyz, search_target(hkl, f, CELL, P1, None)


def test_rebuild_turns_wrong_rotamers_and_a_wrong_chain_end_back_to_the_truth():
    model, true_xyz, target = _model_and_target()
    wrong = model.params.clone()
    wrong[model.index("chi", 0, 0)] += np.radians(120.0)  # Val 1: another staggered rotamer
    wrong[model.index("chi", 1, 0)] -= np.radians(120.0)  # Leu 2
    wrong[model.index("psi", 2)] += np.radians(70.0)  # the last residue swung away
    model.params = wrong
    lik = likelihood_target(target, atomic_numbers(np.array(model.top.elements)))
    before = float(model_llg(model, lik, model.params))
    with torch.no_grad():
        assert np.abs(coordinates(model, model.params).numpy() - true_xyz).max() > 2.0
    steps = rebuild(model, target, RebuildOptions(pack_cycles=0))  # the one-at-a-time steps alone
    with torch.no_grad():
        error = np.linalg.norm(coordinates(model, model.params).numpy() - true_xyz, axis=1)
    assert error.max() < 0.2, error.round(2)
    assert float(model_llg(model, lik, model.params)) > before
    assert any("side chain 1" in s for s in steps) and any("end residue 4" in s for s in steps)


def test_rebuild_adds_a_side_chain_the_building_left_out():
    model, true_xyz, target = _model_and_target()
    left_out = model.side_chain_of(2)  # Thr 3's OG1 and CG2: one atom too light for the E² correlation's step
    model.built = model.built & ~left_out
    model.params[model.index("chi", 2, 0)] += np.radians(120.0)  # and its χ anywhere
    steps = rebuild(model, target, RebuildOptions(cycles=1, pack_cycles=0))
    assert model.built.all() and "cycle 1, side chain 3 added" in " ".join(steps)
    with torch.no_grad():
        error = np.linalg.norm(coordinates(model, model.params).numpy() - true_xyz, axis=1)
    assert error[left_out].max() < 0.2, error.round(2)


def test_rebuild_keeps_a_right_model_where_it_is():
    model, true_xyz, target = _model_and_target()
    steps = rebuild(model, target, RebuildOptions(cycles=1))
    assert not any("side chain" in s for s in steps)  # every rotamer already the best
    with torch.no_grad():  # the end residue may settle a little (the likelihood's B is not the data's; the packing
        # rounds refine every torsion)
        assert np.linalg.norm(coordinates(model, model.params).numpy() - true_xyz, axis=1).max() < 0.3


def test_pack_puts_every_side_chain_right_at_once():
    model, true_xyz, target = _model_and_target()
    for i in range(len(SEQUENCE)):  # every rotamer wrong, each side chain's atoms left out as the building may
        model.params[model.chi_positions(i)[0]] += np.radians(120.0)
        model.built &= ~model.side_chain_of(i)
    steps = pack(model, target, RebuildOptions(pack_cycles=2))
    assert len(steps) == 2 and model.built.all()
    with torch.no_grad():
        error = np.linalg.norm(coordinates(model, model.params).numpy() - true_xyz, axis=1)
    assert error.max() < 0.25, error.round(2)


def test_a_chain_model_is_fitted_to_the_placed_chain():
    model, true_xyz, _ = _model_and_target()
    main = np.isin(np.array(model.top.names), ("N", "CA", "C", "O", "CB"))
    model.params[model.index("psi", 1)] += np.radians(25.0)  # torsions read off a chain, a little wrong
    model.params[model.index("phi", 3)] -= np.radians(25.0)
    with torch.no_grad():
        assert np.linalg.norm(coordinates(model, model.params).numpy()[main] - true_xyz[main], axis=1).max() > 1.0
    rms = fit_main_chain(model, true_xyz[main], main)
    with torch.no_grad():
        error = np.linalg.norm(coordinates(model, model.params).numpy()[main] - true_xyz[main], axis=1)
    assert rms < 0.05 and error.max() < 0.1, error.round(3)


@pytest.mark.parametrize("changes", [{"cycles": -1}, {"keep_best": 0}, {"step": 0.0}, {"refine_iter": -2},
                                     {"pack_cycles": -1}, {"pack_starts": 0}, {"pack_iter": -1}])
def test_rebuild_options_are_checked(changes):
    with pytest.raises(PattersonError):
        RebuildOptions(**changes)
