"""The fragments route (#30): a sequence's ideal strand placed, built out and turned into phases, as a phasing
method and as ``solve --sequence``; its bad inputs."""

from __future__ import annotations

import dataclasses
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from patterson.errors import PattersonError
from patterson.evaluation import align
from patterson.ideal import check_fits, heavy_atoms
from patterson.phasing.peptide import PeptideOptions, fragment_phasing, phase_with_sequence, read_fragment
from patterson.phasing.placement import PlacementOptions
from patterson.physics import AtomBatch, grid_shape, structure_factors
from patterson.structures import Atoms
from test_placement import CELL, GROUP, _crystal

PEPTIDES = Path(__file__).resolve().parents[2] / "shared" / "data" / "real"
FAST = PeptideOptions(n_poses=1, refine_iter=20, max_seconds=0, sheets=None,  # the ideal windows' search
                      placement=PlacementOptions(angle_step=15.0, d_search=2.5, n_rescore=8, n_refine=1,
                                                 refine_iter=20))  # fmt: skip


def _true_f(d_min: float = 2.0):
    """The test crystal (an ideal AAAA strand in P2₁): hkl (M, 3) on the P1 Friedel half and its exact structure
    factors (1, M) complex."""
    model, frac, hkl, _ = _crystal(d_min)
    sites = np.concatenate([frac @ r.T + t for r, t in zip(GROUP.rot, GROUP.tran, strict=True)])
    atoms = Atoms(xyz=CELL.to_cartesian(sites), elements=np.tile(model.atoms.elements, 2),
                  b_iso=np.full(len(sites), 15.0), occ=np.ones(len(sites)))  # fmt: skip
    return hkl, structure_factors(AtomBatch.from_atoms([atoms], CELL), hkl)


def test_fragments_phase_an_ideal_strand_crystal_and_never_read_the_free_amplitudes():
    hkl, f_true = _true_f()
    f, shape = f_true.abs(), grid_shape(CELL, 2.0)
    free = torch.as_tensor(np.random.default_rng(0).random(len(hkl)) < 0.1)[None]
    res = fragment_phasing(f, hkl, CELL, shape, "AAAA", FAST, group=GROUP, free=free)
    assert res.verdict[0] == "solved"
    overlap = align(f_true, torch.polar(f, res.phi_rad), hkl, CELL).score  # map CC after the origin and hand search
    assert float(overlap[0]) > 0.9
    scrambled = torch.where(free, f * 3.0 + 1.0, f)
    again = fragment_phasing(scrambled, hkl, CELL, shape, "AAAA", FAST, group=GROUP, free=free)
    assert torch.equal(res.phi_rad[~free], again.phi_rad[~free])  # bit for bit: the free set was never read


def test_windows_too_long_for_the_cell_are_skipped_and_none_at_all_is_one_error():
    hkl, f_true = _true_f()
    f = f_true.abs()[0].numpy()  # a 7-residue strand overlaps its own lattice copies in this cell in every pose
    solution = phase_with_sequence("AAAAAAA", hkl, f, CELL, GROUP, None, FAST)
    assert {t["length"] for t in solution.tried} == {6, 5} and len(solution.built) >= 1
    with pytest.raises(PattersonError, match="no window of the sequence"):
        phase_with_sequence("AAAAAAA", hkl, f, CELL, GROUP, None, dataclasses.replace(FAST, window_drop=0))


def test_a_sequence_too_large_for_the_cell_is_refused():
    assert heavy_atoms("LVHSSN") == 46 and heavy_atoms("G") == 5
    check_fits("LVHSSN", 865.0)  # 5E5Z's asymmetric unit
    with pytest.raises(PattersonError, match="non-H atoms need at least"):
        check_fits("LVHSSN" * 3, 865.0)


ATOMS = ("ATOM      1  CA  ALA A   1       1.000   1.000   1.000  1.00 20.00           C\n"
         "ATOM      2  CB  ALA A   1       2.500   1.000   1.000  1.00 20.00           C\nEND\n")


def test_a_fragment_file_in_another_cell_is_refused_and_one_without_a_cell_is_taken(tmp_path):
    cell = CELL  # the test crystal's
    other = tmp_path / "other.pdb"
    other.write_text("CRYST1   10.000   10.000   10.000  90.00  90.00  90.00 P 1\n" + ATOMS)
    with pytest.raises(PattersonError, match="is not the data's"):
        read_fragment(str(other), cell)
    same = tmp_path / "same.pdb"
    same.write_text("CRYST1   14.000    4.800   15.000  90.00  97.00  90.00 P 1 21 1\n" + ATOMS)
    bare = tmp_path / "bare.pdb"
    bare.write_text(ATOMS)
    assert len(read_fragment(str(same), cell).elements) == 2 == len(read_fragment(str(bare), cell).elements)


@pytest.mark.parametrize(
    "args, message",
    [
        (["--sequence", "LVHSXN"], "'X' is not a standard residue"),
        (["--sequence", "LVHSSN" * 4], "non-H atoms need at least"),
        (["--refine", "fragments"], "needs --sequence"),
        (["--fragment", "{other}"], "is not the data's"),
    ],
)
def test_bad_sequences_and_fragments_are_one_line_errors_and_nothing_is_written(tmp_path, args, message):
    other = tmp_path / "other.pdb"
    other.write_text("CRYST1   10.000   10.000   10.000  90.00  90.00  90.00 P 1\n" + ATOMS)
    args = [a.format(other=other) for a in args]
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "patterson", "solve", str(PEPTIDES / "5e5z" / "5e5z.mtz"), "--out", str(out), *args]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2 and message in proc.stderr
    assert proc.stderr.strip().count("\n") == 0 and proc.stderr.startswith("patterson: error:")
    assert not out.exists()
