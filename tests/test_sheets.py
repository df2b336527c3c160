"""The β-sheet search for stacked peptide crystals (#30): stacking axes, sheet orientations and H-bonds, growing a
strand to the whole sequence, and a strand of a synthetic P2₁ sheet crystal found again."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from patterson.cells import Cell
from patterson.errors import PattersonError
from patterson.evaluation import align
from patterson.ideal import ideal_strand
from patterson.phasing.peptide import PeptideOptions, fragment_phasing
from patterson.phasing.placement import image_clashes, placed_frac, search_target
from patterson.phasing.sheets import (
    SheetOptions,
    StrandChain,
    _same_chain,
    grow,
    place_strands,
    sheet_hbonds,
    sheet_rotations,
    stacking_axes,
    strand_conformers,
    strand_frame,
)
from patterson.physics import AtomBatch, grid_shape, miller_indices, structure_factors
from patterson.structures import Atoms
from test_placement import CELL, GROUP, _rmsd_modulo_origin

ELEMENTS = np.array(["N", "C", "C", "O", "C"] * 5)


def _sheet_crystal(d_min: float = 2.0, k: int = 0):
    """Conformer k in a sheet along b of the P2₁ test cell (b = 4.8 Å): its placed sites (25, 3) fractional, hkl
    (M, 3) and |F| (M,)."""
    xyz = strand_conformers()[k]
    rot = sheet_rotations(strand_frame(xyz), stacking_axes(CELL), 3.0, 0.0)[115]  # θ = 171°, H-bonds along −b
    frac = placed_frac(torch.as_tensor(xyz), torch.as_tensor(rot)[None], torch.tensor([[0.27, 0.1, 0.31]],
                       dtype=torch.float64), CELL)[0].numpy()  # fmt: skip
    sites = np.concatenate([frac @ r.T + t for r, t in zip(GROUP.rot, GROUP.tran, strict=True)])
    atoms = Atoms(xyz=CELL.to_cartesian(sites), elements=np.tile(ELEMENTS, 2), b_iso=np.full(len(sites), 15.0),
                  occ=np.ones(len(sites)))  # fmt: skip
    hkl = miller_indices(CELL, d_min)
    return frac, hkl, structure_factors(AtomBatch.from_atoms([atoms], CELL), hkl)[0].numpy()


def test_stacking_axes_are_the_short_lattice_vectors():
    axes = stacking_axes(CELL)  # 14.0, 4.8, 15.0 Å
    assert len(axes) == 1 and abs(abs(axes[0] @ np.array([0.0, 1.0, 0.0])) - 1) < 1e-9
    assert len(stacking_axes(Cell(9.6, 9.6, 19.0, 90, 101, 90))) == 2  # 5E5Z-like: a and b both 2 × 4.8 Å
    assert stacking_axes(Cell(14.0, 15.0, 16.0)) == []


def test_sheet_rotations_put_the_h_bonds_along_the_axis_and_the_strand_across():
    xyz = strand_conformers()[0]
    frame = strand_frame(xyz)
    assert np.allclose(frame @ frame.T, np.eye(3), atol=1e-9) and np.linalg.det(frame) == pytest.approx(1.0)
    u = stacking_axes(CELL)[0]
    rotations = sheet_rotations(frame, [u], 10.0, 0.0)
    assert len(rotations) == 36 * 2
    assert np.allclose(np.abs((rotations @ frame[1]) @ u), 1.0)  # H-bond direction along ±u
    assert np.allclose((rotations @ frame[0]) @ u, 0.0, atol=1e-9)  # strand axis across it
    assert len(sheet_rotations(frame, [u], 10.0, 6.0)) == 36 * 2 * 9


def test_a_strand_in_a_sheet_is_h_bonded_to_its_lattice_neighbours_and_a_turned_one_is_not():
    frac, _, _ = _sheet_crystal()
    assert image_clashes(frac, GROUP, CELL, 2.5) == 0
    xyz = CELL.to_cartesian(frac)
    centre = xyz.mean(0)
    a = strand_frame(xyz)[0]  # turned 90° about its own axis: the H-bond direction leaves b
    turn = np.outer(a, a) + np.array([[0, -a[2], a[1]], [a[2], 0, -a[0]], [-a[1], a[0], 0]])
    turned = CELL.to_fractional((xyz - centre) @ turn.T + centre)
    bonds = sheet_hbonds(np.stack([frac, turned]), GROUP, CELL)
    assert bonds[0] >= 3 and bonds[1] < 3


def test_grow_rebuilds_a_chain_from_a_window_of_it():
    chain = ideal_strand("AAAAAAA").atoms.xyz[:-1]  # N, CA, C, O, CB per residue; OXT dropped
    for start in (0, 1, 2):
        xyz, elements = grow("AAAAAAA", chain[5 * start : 5 * (start + 5)], start)
        assert xyz.shape == chain.shape and list(elements[:5]) == ["N", "C", "C", "O", "C"]
        assert np.abs(xyz - chain).max() < 0.02
    xyz, _ = grow("GAAA", chain[:25], -1)  # a strand longer than the sequence: its residues 1–4 on it
    assert xyz.shape == (19, 3)  # glycine has no Cβ


def test_place_strands_finds_a_sheet_strand_again_and_reads_only_the_work_set():
    frac, hkl, f = _sheet_crystal()
    f = np.abs(f)
    work = np.random.default_rng(1).random(len(hkl)) > 0.1
    options = SheetOptions(n_conformers=1, n_refine=2, n_chains=2)
    target = search_target(hkl, f, CELL, GROUP, work)
    chains = place_strands("AAAAA", target, options)
    assert chains and chains[0].start == 0 and chains[0].conformer == 0
    assert _rmsd_modulo_origin(CELL.to_fractional(chains[0].xyz), frac) < 0.3
    scrambled = search_target(hkl, np.where(work, f, f * 3 + 1), CELL, GROUP, work)
    again = place_strands("AAAAA", scrambled, options)
    assert np.array_equal(again[0].xyz, chains[0].xyz)  # bit for bit: the free amplitudes were never read
    assert place_strands("AAAAA", search_target(hkl, f, Cell(14.0, 15.0, 16.0), GROUP, work), options) == []


def test_a_chain_moved_by_the_groups_origin_shift_or_operator_is_the_same_chain():
    frac, hkl, f = _sheet_crystal()
    target = search_target(hkl, np.abs(f), CELL, GROUP, None)
    chain = StrandChain(CELL.to_cartesian(frac), ELEMENTS, 1.0, 0, 0)

    def moved(new_frac: np.ndarray) -> StrandChain:
        return StrandChain(CELL.to_cartesian(new_frac), ELEMENTS, 1.0, 0, 0)

    mate = frac @ GROUP.rot[1].T + GROUP.tran[1]  # the 2₁ image, then P2₁'s free origin along b and a lattice step
    for other in (frac + [0.0, 0.37, 0.0], mate, mate + [0.5, 0.21, -1.0]):
        assert _same_chain(chain, moved(other), target)
    along = CELL.to_fractional(CELL.to_cartesian(frac) + 3.3 * strand_frame(CELL.to_cartesian(frac))[0])
    assert not _same_chain(chain, moved(along), target)  # one residue along the strand: another placement
    assert not _same_chain(chain, moved(frac + [0.25, 0.0, 0.0]), target)
    assert _same_chain(chain, moved(CELL.to_fractional(CELL.to_cartesian(frac) + [0.3, 0.0, -0.2])), target)


def test_sheet_options_are_checked():
    with pytest.raises(PattersonError):
        SheetOptions(angle_step=0.1)
    with pytest.raises(PattersonError):
        SheetOptions(n_chains=0)


def test_solve_route_phases_a_sheet_crystal_from_its_sequence():
    _, hkl, f_true = _sheet_crystal()
    f_true = torch.as_tensor(f_true)[None]
    f = f_true.abs()
    free = torch.as_tensor(np.random.default_rng(0).random(len(hkl)) < 0.1)[None]
    options = PeptideOptions(sheets=SheetOptions(n_conformers=1, n_refine=2, n_chains=1))
    res = fragment_phasing(f, hkl, CELL, grid_shape(CELL, 2.0), "AAAAA", options, group=GROUP, free=free)
    assert res.verdict[0] == "solved"
    assert float(align(f_true, torch.polar(f, res.phi_rad), hkl, CELL).score[0]) > 0.9


def test_the_shipped_conformers_are_extended_strands():
    conformers = strand_conformers()  # weights/strands.json, from benchmarks/strand_conformers.py
    assert conformers.shape == (16, 25, 3) and np.abs(conformers.mean(1)).max() < 1e-3
    residues = conformers.reshape(16, 5, 5, 3)
    n_ca = np.linalg.norm(residues[:, :, 1] - residues[:, :, 0], axis=-1)
    assert np.all((n_ca > 1.40) & (n_ca < 1.52))
    assert np.all(np.linalg.norm(residues[:, 2:, 1] - residues[:, :-2, 1], axis=-1) >= 6.0 - 1e-3)  # extended
