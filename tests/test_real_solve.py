"""Solving small molecules to refined atoms (#29): real data from ../shared/data/real/small (never copied) and a
synthetic heavy-atom crystal; the verdict from atoms rests on R1 of free reflections nothing was fitted to."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from patterson.cells import Cell, expand_to_p1
from patterson.cli import main
from patterson.physics import AtomBatch, miller_indices, structure_factors
from patterson.shelx import read_shelx
from patterson.structures import Atoms, read_structure

SMALL = Path(__file__).resolve().parents[2] / "shared" / "data" / "real" / "small"


def test_a_real_organic_is_solved_to_refined_atoms_in_a_res_that_reads_back(tmp_path, capsys):
    """olex2_sucrose (P2₁, 23 non-H atoms, 0.73 Å): the cheap route (charge flipping on E) finds it, the peaks become
    C and O atoms refined against the work F, and R1 on the free reflections says solved; the .res holds them."""
    out = tmp_path / "out"
    assert main(["solve", str(SMALL / "olex2_sucrose" / "olex2_sucrose.hkl"), "--out", str(out), "--no-progress"]) == 0
    last = capsys.readouterr().out.strip().splitlines()[-1]
    summary = json.loads((out / "summary.json").read_text())
    atoms = summary["atoms"]
    assert summary["verdict"] == "solved" and last.startswith("solved:") and "R1" in last
    assert atoms["solved"] and atoms["r1_free"] < 0.2 and atoms["r1_work"] < 0.2
    assert summary["routes"][0]["route"] == "charge flipping on E" and len(summary["routes"]) == 1  # stopped there
    assert set(atoms["elements"]) <= {"C", "O"} and 20 <= atoms["n"] <= 25  # published: C12 O11
    res = read_shelx((out / "solution.res").read_text(), "solution.res")
    n_h = atoms["riding_hydrogens"]  # the CH and CH₂ of sucrose (its 8 OH carry none: their H are not placed)
    assert 12 <= n_h <= 14 and f"and {n_h} riding H" in last
    assert len(res.atoms) == atoms["n"] + n_h and res.composition == {"C": 24.0, "H": 44.0, "O": 22.0}
    cell_atoms = read_structure(out / "solution.res")  # whole cell, as SHELXL and Olex2 would expand it
    assert len(cell_atoms) == 2 * (atoms["n"] + n_h) and cell_atoms.cell == res.cell


def test_a_disordered_anion_gets_its_minor_component_in_parts_that_shelx_reads(tmp_path, capsys):
    """cod2240189 (R3̄c, 0.73 Å): a perchlorate in two orientations (published occupancies 0.77 / 0.23). The
    Fo − Fc map of the solved atoms shows the minor orientation's O atoms; they are refined with the occupancy they
    share with their partners and written as PART 1 / PART 2, which SHELX and gemmi read back."""
    out = tmp_path / "out"
    assert main(["solve", str(SMALL / "cod2240189" / "cod2240189.hkl"), "--out", str(out), "--no-progress"]) == 0
    last = capsys.readouterr().out.strip().splitlines()[-1]
    atoms = json.loads((out / "summary.json").read_text())["atoms"]
    assert atoms["solved"] and atoms["minor_components"] >= 1 and "minor components" in last
    text = (out / "solution.res").read_text()
    assert "PART 1" in text and "PART 2" in text and text.count("PART 0") == 1
    res = read_shelx(text, "solution.res")
    assert len(res.atoms) == atoms["n"]
    sof = np.array([a[3] for a in res.atoms])
    assert np.all((sof > 0.05) & (sof <= 1.0)) and (sof < 0.5).sum() >= 1  # partial sites, none above whole
    assert len(read_structure(out / "solution.res")) > 0  # gemmi expands it to the cell


def _heavy_atom_crystal(tmp_path: Path) -> Path:
    """A P2₁ crystal of one Br and eight C per asymmetric unit at 0.8 Å: SHELX .hkl (HKLF 4) and its .ins."""
    cell = Cell(7.0, 8.0, 9.0, 90.0, 100.0, 90.0)
    rng = np.random.default_rng(3)
    xyz = [np.zeros(3)]
    while len(xyz) < 9:
        p = xyz[-1] + 1.5 * (v := rng.normal(size=3)) / np.linalg.norm(v)
        if min(np.linalg.norm(p - q) for q in xyz) > 1.4:
            xyz.append(p)
    xyz = np.array(xyz) - np.mean(xyz, axis=0) + cell.to_cartesian(np.array([0.3, 0.25, 0.3]))
    atoms = Atoms(xyz, np.array(["Br"] + ["C"] * 8), np.full(9, 2.5), np.ones(9), cell.parameters, "P 1 21 1")
    hkl = miller_indices(cell, 0.8)
    i = np.abs(structure_factors(AtomBatch.from_atoms([expand_to_p1(atoms)], cell), hkl)[0].numpy()) ** 2
    i = i * 9999.0 / i.max()
    rows = [f"{h:4d}{k:4d}{l:4d}{v:8.2f}{0.01 * v + 0.3:8.2f}" for (h, k, l), v in zip(hkl, i, strict=True)]
    (tmp_path / "br.hkl").write_text("\n".join([*rows, f"{0:4d}{0:4d}{0:4d}{0:8.2f}{0:8.2f}", ""]))
    (tmp_path / "br.ins").write_text(
        "TITL br\nCELL 0.71073 7 8 9 90 100 90\nZERR 2 0 0 0 0 0 0\nLATT -1\nSYMM -X, 0.5+Y, -Z\n"
        "SFAC C Br\nUNIT 16 2\nHKLF 4\nEND\n"
    )
    return tmp_path / "br.hkl"


def test_a_heavy_atom_takes_the_highest_peak_and_refines(tmp_path, capsys):
    out = tmp_path / "out"
    assert main(["solve", str(_heavy_atom_crystal(tmp_path)), "--out", str(out), "--no-progress"]) == 0
    capsys.readouterr()
    summary = json.loads((out / "summary.json").read_text())
    assert summary["verdict"] == "solved" and summary["atoms"]["elements"] == {"Br": 1, "C": 8}
    assert summary["atoms"]["r1_free"] < 0.1  # exact amplitudes: refined atoms fit them
    res = read_shelx((out / "solution.res").read_text(), "solution.res")
    assert res.atoms[0][1] == "Br"  # written first, as the highest peak it was
