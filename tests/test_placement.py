"""Ideal fragments from a sequence and their placement in a crystal (#30)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from patterson.cells import Cell
from patterson.errors import PattersonError
from patterson.ideal import dihedral, ideal_helix, ideal_strand, parse_sequence, topology
from patterson.phasing.placement import PlacementOptions, place_fragment, placed_frac, rotation_grid
from patterson.physics import AtomBatch, miller_indices, structure_factors
from patterson.structures import Atoms
from patterson.symmetry import SpaceGroup

CELL = Cell(14.0, 4.8, 15.0, 90.0, 97.0, 90.0)  # an amyloid-like cell: strands stacked along b by a lattice step
GROUP = SpaceGroup.of("P 1 21 1")
FAST = PlacementOptions(angle_step=15.0, d_search=2.5, n_rescore=10, n_refine=2, refine_iter=30)


def _crystal(d_min: float = 2.0):
    """An ideal strand at a known pose in P2₁: its asymmetric-unit sites (N, 3), hkl (M, 3) and |F| (M,)."""
    model = ideal_strand("AAAA")
    angle = np.radians(20.0)
    rot = np.array([[np.cos(angle), 0.0, np.sin(angle)], [0.0, 1.0, 0.0], [-np.sin(angle), 0.0, np.cos(angle)]])
    xyz = torch.as_tensor(model.atoms.xyz - model.atoms.xyz.mean(0))
    frac = placed_frac(xyz, torch.as_tensor(rot)[None], torch.tensor([[0.31, 0.2, 0.27]], dtype=torch.float64),
                       CELL)[0].numpy()  # fmt: skip
    sites = np.concatenate([frac @ r.T + t for r, t in zip(GROUP.rot, GROUP.tran, strict=True)])
    atoms = Atoms(xyz=CELL.to_cartesian(sites), elements=np.tile(model.atoms.elements, 2),
                  b_iso=np.full(len(sites), 15.0), occ=np.ones(len(sites)))  # fmt: skip
    hkl = miller_indices(CELL, d_min)
    f = structure_factors(AtomBatch.from_atoms([atoms], CELL), hkl)[0].abs().numpy()
    return model, frac, hkl, f


def _rmsd_modulo_origin(placed: np.ndarray, true: np.ndarray) -> float:
    """RMSD (Å) of the same atoms after the best operator image and permitted origin shift of P2₁ (x, z by 0 or ½,
    y free)."""
    best = np.inf
    for r, t in zip(GROUP.rot, GROUP.tran, strict=True):
        moved = placed @ r.T + t
        for shift in ((0, 0), (0.5, 0), (0, 0.5), (0.5, 0.5)):
            d = true - moved - np.array([shift[0], 0.0, shift[1]])
            d[:, 1] -= np.mean(d[:, 1] - np.round(d[:, 1]))
            d -= np.round(d)
            best = min(best, float(np.sqrt((CELL.to_cartesian(d) ** 2).sum(1).mean())))
    return best


def test_ideal_strand_and_helix_geometry():
    strand = ideal_strand("LVHSSN")
    x, names = strand.atoms.xyz, strand.names
    n, ca, c = x[names == "N"], x[names == "CA"], x[names == "C"]
    assert dihedral(c[0], n[1], ca[1], c[1]) == pytest.approx(-120.0, abs=1e-6)
    assert dihedral(n[1], ca[1], c[1], n[2]) == pytest.approx(130.0, abs=1e-6)
    assert np.allclose(np.linalg.norm(np.diff(ca, axis=0), axis=1), 3.80, atol=0.02)
    assert len(strand.atoms) == 6 * 5 + 1  # poly-alanine with Cβ, and OXT
    helix = ideal_helix("A" * 12).atoms
    ca_h = helix.xyz[ideal_helix("A" * 12).names == "CA"]
    assert np.linalg.norm(ca_h[-1] - ca_h[0]) / 11 == pytest.approx(1.55, abs=0.05)  # rise per residue
    assert len(ideal_strand("GAG").atoms) == 3 * 4 + 1 + 1  # glycines have no Cβ
    assert len(ideal_strand("LVHSSN", side_chains=True).atoms) == 46  # every non-H atom, as deposited in 5E5Z
    assert topology("LVHSSN", side_chains=True).n_chi == (2, 1, 2, 1, 1, 2)


@pytest.mark.parametrize("bad", ["LVHSSB", "LV1S", "", "  ", "LVH*"])
def test_bad_sequence_is_a_one_line_error(bad):
    with pytest.raises(PattersonError) as err:
        ideal_strand(bad)
    assert "\n" not in str(err.value)
    assert parse_sequence(" lvh ssn ") == "LVHSSN"


def test_rotation_grid_is_even():
    rotations = rotation_grid(15.0)
    assert np.allclose(np.einsum("rij,rkj->rik", rotations, rotations), np.eye(3), atol=1e-9)
    trace = np.einsum("aij,bij->ab", rotations[:200], rotations)
    angle = np.degrees(np.arccos(np.clip((trace - 1) / 2, -1, 1)))
    angle[np.arange(200), np.arange(200)] = np.inf
    assert 8.0 < np.median(angle.min(1)) < 20.0


def test_placed_strand_overlays_the_true_one():
    model, true, hkl, f = _crystal()
    placement = place_fragment(model.atoms, hkl, f, CELL, GROUP, None, FAST)
    assert placement.cc > 0.9
    assert _rmsd_modulo_origin(placement.frac, true) < 0.3


def test_free_set_never_touches_the_search():
    model, _, hkl, f = _crystal(2.5)
    free = np.random.default_rng(1).random(len(hkl)) < 0.1
    options = PlacementOptions(angle_step=20.0, d_search=2.5, n_rescore=5, n_refine=1, refine_iter=5)
    first = place_fragment(model.atoms, hkl, f, CELL, GROUP, ~free, options)
    scrambled = f.copy()
    scrambled[free] = np.random.default_rng(2).random(int(free.sum())) * f.max()
    second = place_fragment(model.atoms, hkl, scrambled, CELL, GROUP, ~free, options)
    assert np.array_equal(first.frac, second.frac) and first.cc == second.cc
    third = place_fragment(model.atoms, hkl, scrambled, CELL, GROUP, None, options)  # now they count
    assert third.cc != first.cc
