"""Fragments from real chains (windows, breaks, truncation), random atoms, and placing molecules in cells."""

from __future__ import annotations

import re
from pathlib import Path

import gemmi
import numpy as np
import pytest

from fragment_sources import protein_residues, write_chain
from patterson.cells import (
    Cell,
    fits_in_cell,
    mass_centre,
    min_image_distance,
    pack_cell,
    periodic_distances,
    place_in_cell,
    random_rotation,
    set_b_factors,
)
from patterson.errors import PattersonError
from patterson.shelx import read_shelx
from patterson.solving import read_ins
from patterson.structures import (
    SIDE_CHAINS,
    entry_id,
    extract_fragments,
    random_atoms,
    read_structure,
)


@pytest.fixture(scope="module")
def residues() -> list[gemmi.Residue]:
    return protein_residues()[:30]


def test_dipeptide_windows_keep_every_heavy_atom(tmp_path, residues):
    path = write_chain(tmp_path / "9abc_A.pdb", residues)
    counts: dict[str, int] = {}
    frags = extract_fragments(path, k=2, counts=counts)
    assert counts["windows"] == len(residues) - 1 and len(frags) == counts["fragments"] == len(residues) - 1
    for frag, (r1, r2) in zip(frags, zip(residues, residues[1:], strict=False), strict=True):
        assert frag.entry == "9abc" and frag.resnames == (r1.name, r2.name)
        assert len(frag.atoms) == 8 + len(SIDE_CHAINS[r1.name]) + len(SIDE_CHAINS[r2.name])
        # coordinates are the deposited ones: the first atom is r1's N
        n = r1.find_atom("N", "*").pos
        np.testing.assert_allclose(frag.atoms.xyz[0], (n.x, n.y, n.z), atol=1e-9)
    assert {f.atoms.elements[0] for f in frags} == {"N"}


def test_dialanine_truncates_at_cb_and_skips_glycine(tmp_path, residues):
    path = write_chain(tmp_path / "9abc_A.pdb", residues)
    counts: dict[str, int] = {}
    frags = extract_fragments(path, k=2, dialanine=True, counts=counts)
    glycines = {i for i, r in enumerate(residues) if r.name == "GLY"}
    expected = [i for i in range(len(residues) - 1) if i not in glycines and i + 1 not in glycines]
    assert glycines and counts["glycine"] == len(residues) - 1 - len(expected)
    assert len(frags) == len(expected)
    for frag, i in zip(frags, expected, strict=True):
        assert frag.resnames == ("ALA", "ALA")
        assert list(frag.atoms.elements) == ["N", "C", "C", "O", "C"] * 2
        cb = residues[i + 1].find_atom("CB", "*").pos  # the second residue's Cβ is kept where it was
        np.testing.assert_allclose(frag.atoms.xyz[9], (cb.x, cb.y, cb.z), atol=1e-9)
        assert frag.label.endswith(f"{residues[i].seqid.num}:ALA,{residues[i + 1].seqid.num}:ALA")


def test_breaks_nonstandard_and_incomplete_residues_are_skipped(tmp_path, residues):
    res = [r.clone() for r in residues[:12]]
    for atom in res[6]:  # move residue 6 away: two chain breaks (5-6 and 6-7)
        atom.pos = gemmi.Position(atom.pos.x + 8, atom.pos.y, atom.pos.z)
    res[2].name = "MSE"  # a non-standard residue
    side = next(i for i in (9, 10, 8) if res[i].name not in ("GLY", "ALA"))
    res[side].remove_atom(SIDE_CHAINS[res[side].name][-1], "\0")  # an incomplete side chain
    counts: dict[str, int] = {}
    frags = extract_fragments(write_chain(tmp_path / "9abd.pdb", res), k=3, counts=counts)
    assert counts["nonstandard"] == 3 and counts["incomplete"] >= 3 and counts["break"] >= 1
    for frag in frags:  # no fragment spans a break or holds a skipped residue
        seq = [int(s) for s in frag.seqids]
        assert seq == list(range(seq[0], seq[0] + 3))
        assert "MSE" not in frag.resnames
    # every link inside every fragment is a peptide bond: C of one residue within 1.5 Å of N of the next
    for frag in frags:
        _, starts = np.unique(frag.atoms.residues, return_index=True)
        starts = np.sort(starts)  # each residue starts with N, CA, C, O
        for s0, s1 in zip(starts[:-1], starts[1:], strict=True):
            assert np.linalg.norm(frag.atoms.xyz[s0 + 2] - frag.atoms.xyz[s1]) <= 1.5
    assert frags and all(str(res[6].seqid.num) not in f.seqids for f in frags)


def test_unreadable_files_raise_one_line_errors(tmp_path):
    empty = tmp_path / "empty.pdb"
    empty.write_text("")
    garbage = tmp_path / "bad.pdb.gz"
    garbage.write_bytes(b"\x1f\x8bnot gzip at all")
    for path in (empty, garbage, tmp_path / "missing.pdb"):
        with pytest.raises(PattersonError) as err:
            extract_fragments(path)
        assert "\n" not in str(err.value)


def test_entry_ids():
    assert entry_id("x/1ABC_A.pdb.gz") == "1abc"
    assert entry_id("1abcB.pdb") == "1abc"
    assert entry_id("pdb2xyz.ent.gz") == "2xyz"
    assert entry_id("nacl.cif") == "nacl"


def test_random_atoms_are_hurwitz_uniform_and_apart():
    cell = Cell(15, 16, 17)
    rng = np.random.default_rng(3)
    atoms = random_atoms(400, cell.orth, rng, min_distance=1.5)
    frac = cell.to_fractional(atoms.xyz)
    assert np.all((frac >= 0) & (frac < 1))
    assert 0.45 < frac.mean() < 0.55  # uniform in the cell
    d = periodic_distances(atoms.xyz, atoms.xyz, cell)
    np.fill_diagonal(d, np.inf)
    assert d.min() >= 1.5
    assert set(atoms.elements) == {"C", "N", "O"}


# --- placement ------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def dipeptides(tmp_path_factory, residues):
    path = write_chain(tmp_path_factory.mktemp("frag") / "9abe.pdb", residues)
    return [f.atoms for f in extract_fragments(path, k=2)]


def test_rotation_is_proper_and_placement_keeps_geometry(dipeptides):
    rng = np.random.default_rng(0)
    r = random_rotation(rng)
    np.testing.assert_allclose(r @ r.T, np.eye(3), atol=1e-12)
    assert np.linalg.det(r) == pytest.approx(1.0)
    cell = Cell(12, 13, 14, 80, 95, 100)
    mol = dipeptides[0]
    placed = place_in_cell(mol, cell, rng, position="centre", rotate=True)
    np.testing.assert_allclose(mass_centre(placed), cell.to_cartesian(np.array([0.5, 0.5, 0.5])), atol=1e-9)
    d0 = np.linalg.norm(mol.xyz[:, None] - mol.xyz[None], axis=-1)
    d1 = np.linalg.norm(placed.xyz[:, None] - placed.xyz[None], axis=-1)
    np.testing.assert_allclose(d0, d1, atol=1e-9)
    assert placed.cell == cell.parameters
    b = set_b_factors(placed, "random", b_range=(5, 6), rng=rng).b_iso
    assert np.all((b >= 5) & (b <= 6)) and np.ptp(b) == 0


def test_clash_rejection_agrees_with_periodic_images(dipeptides):
    rng = np.random.default_rng(1)
    rejected = 0
    for mol in dipeptides:
        for a in (7.0, 9.0, 12.0):
            cell = Cell.cubic(a)
            placed = place_in_cell(mol, cell, rng, rotate=True)
            closest = min_image_distance(placed.xyz, cell)
            assert fits_in_cell(placed.xyz, cell, 2.5) == (closest >= 2.5)
            rejected += closest < 2.5
    assert rejected > 0  # the small cells do reject some fragments
    long = dipeptides[int(np.argmax([np.ptp(m.xyz, axis=0).max() for m in dipeptides]))]
    assert not fits_in_cell(place_in_cell(long, Cell.cubic(6.0)).xyz, Cell.cubic(6.0), 2.5)


@pytest.mark.parametrize("cell", [Cell.cubic(12.0), Cell(12.0, 13.0, 12.5, 85.0, 95.0, 100.0)])
def test_dense_packing_reaches_the_target_density_without_clashes(dipeptides, cell):
    rng = np.random.default_rng(5)
    for _ in range(4):
        placed = pack_cell(lambda: dipeptides[rng.integers(len(dipeptides))], cell, 35.0, rng, 2.5, 0.1)
        n = sum(len(m) for m in placed)
        assert 0.9 * cell.volume / 35.0 <= n <= 1.1 * cell.volume / 35.0
        assert cell.volume / n == pytest.approx(35.0, rel=0.12)
        for i, a in enumerate(placed):
            assert min_image_distance(a.xyz, cell) >= 2.5
            for b in placed[:i]:
                assert periodic_distances(a.xyz, b.xyz, cell).min() >= 2.5


def test_impossible_packing_is_an_error(dipeptides):
    with pytest.raises(PattersonError, match="cannot pack"):
        pack_cell(lambda: dipeptides[0], Cell.cubic(10.0), 4.0, np.random.default_rng(0), 2.5, max_tries=50)


# --- SHELX .res/.ins models (#27) ------------------------------------------------------------------------------------

SMALL = Path(__file__).resolve().parents[2] / "shared" / "data" / "real" / "small"


@pytest.mark.parametrize("name", ["cod2240189", "srv209", "ntd51a"])
def test_a_shelx_model_fills_the_cell_with_what_unit_says(name):
    """Atoms of a published .res expanded to the cell: each element's occupancies add up to its UNIT count, also
    for the Fe on a 3̄ site of R3̄c (sof 0.1667: one whole atom per site once the symmetry mates merge)."""
    path = SMALL / name / "published.res"
    atoms = read_structure(path)
    unit = read_shelx(path.read_text(), str(path)).composition
    found = {e: float(atoms.occ[atoms.elements == e].sum()) for e in unit}
    assert found == pytest.approx(unit, abs=1e-3), (found, unit)
    assert atoms.spacegroup == "P 1" and atoms.cell == pytest.approx(read_ins(path)["cell"].parameters)


def test_shelx_cards_that_disagree_are_one_line_errors(tmp_path):
    head = "TITL x\nCELL 0.71073 5 6 7 90 90 90\nLATT -1\nSFAC C N O\n"
    cases = {
        "UNIT 10 4\n": "UNIT gives 2 number(s) for 3 SFAC element(s) (C N O)",
        "UNIT 1 1 1\nC1 4 0.1 0.2 0.3 11.0 0.02\n": "SFAC number 4",
        "UNIT 1 1 1\nC1 1 0.1 nan 0.3 11.0 0.02\n": "non-finite coordinate",
    }
    for tail, message in cases.items():
        path = tmp_path / "x.res"
        path.write_text(head + tail + "HKLF 4\nEND\n")
        with pytest.raises(PattersonError, match=re.escape(message)):
            read_structure(path)
    (tmp_path / "y.ins").write_text(head.replace("SFAC C N O", "SFAC C Qq") + "UNIT 1 1\nHKLF 4\n")
    with pytest.raises(PattersonError, match="unknown element 'Qq'"):
        read_ins(tmp_path / "y.ins")
