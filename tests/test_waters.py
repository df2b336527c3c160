"""Ordered waters found in the difference map of a refined peptide model (#30)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from patterson.datasets.peptides import add_waters
from patterson.errors import PattersonError
from patterson.evaluation.peaks import nearest_distance
from patterson.ideal import ideal_strand
from patterson.phasing.peptide import PeptideOptions, refined_model
from patterson.phasing.placement import images, placed_frac
from patterson.phasing.waters import WaterOptions, find_waters
from patterson.physics import AtomBatch, miller_indices, structure_factors
from patterson.structures import Atoms, atomic_numbers
from test_placement import CELL, GROUP


def _f(frac: np.ndarray, elements: np.ndarray, hkl: np.ndarray) -> np.ndarray:
    """(M,) complex structure factors of asymmetric-unit sites frac (N, 3) and their P2₁ images (B 15)."""
    sites = images(torch.as_tensor(frac)[None], GROUP)
    batch = AtomBatch(sites, torch.as_tensor(np.tile(atomic_numbers(elements), 2))[None],
                      torch.full(sites.shape[:2], 15.0, dtype=torch.float64),
                      torch.ones(sites.shape[:2], dtype=torch.float64), CELL)  # fmt: skip
    return structure_factors(batch, hkl)[0].numpy()


@pytest.fixture(scope="module")
def hydrated():
    """An ideal strand in P2₁ with two ordered waters on its hydration sites: the strand (frac, elements), the
    waters (W, 3) fractional, hkl to 1.5 Å and |F| of it all."""
    strand = ideal_strand("AAAA").atoms
    xyz = torch.as_tensor(strand.xyz - strand.xyz.mean(0))
    frac = placed_frac(xyz, torch.eye(3, dtype=torch.float64)[None], torch.tensor([[0.31, 0.2, 0.27]],
                       dtype=torch.float64), CELL)[0].numpy()  # fmt: skip
    asu = Atoms(xyz=CELL.to_cartesian(frac), elements=strand.elements, b_iso=np.full(len(frac), 10.0),
                occ=np.ones(len(frac)), cell=CELL.parameters, spacegroup=GROUP.name)  # fmt: skip
    wet = add_waters(asu, GROUP, 2, np.random.default_rng(3))
    waters = CELL.to_fractional(wet.xyz[len(asu) :])
    hkl = miller_indices(CELL, 1.5)
    f = np.abs(_f(np.vstack([frac, waters]), np.append(strand.elements, ["O"] * len(waters)), hkl))
    return frac, strand.elements, waters, hkl, f


def test_the_missing_waters_are_found_and_nothing_else(hydrated):
    frac, elements, waters, hkl, f = hydrated
    assert len(waters) == 2
    found = find_waters(frac, elements, (hkl, f, CELL, GROUP, None), _f(frac, elements, hkl), WaterOptions())
    assert len(found) == len(waters)
    true_images = images(torch.as_tensor(waters)[None], GROUP)[0].numpy()
    assert nearest_distance(found, true_images, CELL).max() < 0.3  # each on a true water (any image)


def test_a_complete_model_gets_no_waters(hydrated):
    frac, elements, _, hkl, _ = hydrated
    f_calc = _f(frac, elements, hkl)
    assert len(find_waters(frac, elements, (hkl, np.abs(f_calc), CELL, GROUP, None), f_calc, WaterOptions())) == 0


def test_the_free_reflections_are_never_read(hydrated):
    frac, elements, _, hkl, f = hydrated
    free = np.random.default_rng(1).random(len(hkl)) < 0.1
    scrambled = np.where(free, np.random.default_rng(2).random(len(hkl)) * f.max(), f)
    f_calc = _f(frac, elements, hkl)
    runs = [find_waters(frac, elements, (hkl, amp, CELL, GROUP, ~free), f_calc, WaterOptions())
            for amp in (f, scrambled)]  # fmt: skip
    assert len(runs[0]) and np.array_equal(runs[0], runs[1])


def test_each_round_looks_again_with_the_waters_found_before(hydrated):
    frac, elements, waters, hkl, f = hydrated
    true_images = images(torch.as_tensor(waters)[None], GROUP)[0].numpy()
    xyz, n = CELL.to_cartesian(frac), len(frac)
    for cycles, expected in ((1, 1), (3, 2)):  # one water a round (at most one per 30 atoms); the third finds none
        options = PeptideOptions(refine_iter=40, waters=WaterOptions(atoms_per_water=30, cycles=cycles))
        out, names, *_ = refined_model(xyz, elements, (hkl, f, CELL, GROUP, None), options)
        assert len(names) == n + expected and (names[n:] == "O").all()
        assert nearest_distance(out[n:], true_images, CELL).max() < 0.3


def test_options_are_checked():
    with pytest.raises(PattersonError):
        WaterOptions(min_sigma=0.0)
    with pytest.raises(PattersonError):
        WaterOptions(atoms_per_water=0)
    with pytest.raises(PattersonError):
        WaterOptions(cycles=0)
