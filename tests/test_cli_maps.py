"""`patterson maps`: real files in, CCP4 maps and MTZ out; bad input gives one line and no output."""

from __future__ import annotations

import gzip
import subprocess
import sys

import gemmi
import numpy as np
import pytest

from fragment_sources import NACL
from patterson.cells import Cell
from patterson.cli import main
from patterson.physics import AtomBatch, miller_indices, structure_factors
from patterson.structures import embedded_entries, read_structure


def run(argv, capsys):
    code = main([str(a) for a in argv])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_maps_writes_consistent_files(fragment_pdb, tmp_path, capsys):
    out = tmp_path / "out"
    args = ["maps", fragment_pdb, "--d-min", 1.5, "--cell", 12, 12, 12, "--b-iso", 20, "--out", out]
    code, _, err = run(args, capsys)
    assert code == 0, err
    density = gemmi.read_ccp4_map(str(out / "density.ccp4"))
    patterson = gemmi.read_ccp4_map(str(out / "patterson.ccp4"))
    for m in (density, patterson):
        assert m.grid.unit_cell.parameters == pytest.approx((12, 12, 12, 90, 90, 90))
        assert m.grid.shape == (24, 24, 24)
    mtz = gemmi.read_mtz_file(str(out / "reflections.mtz"))
    assert mtz.column_labels() == ["H", "K", "L", "F", "PHI"]
    hkl = mtz.make_miller_array()
    assert len(hkl) == len(miller_indices(Cell.cubic(12), 1.5))
    # the density file is the FFT of the MTZ file's reflections (gemmi does the FFT here)
    ref = np.array(mtz.transform_f_phi_to_map("F", "PHI", exact_size=[24, 24, 24]), copy=True)
    rho = np.array(density.grid, copy=True)
    assert np.abs(rho - ref).max() < 1e-4 * np.abs(ref).max()
    # amplitudes are the exact structure factors of the centred molecule with B = 20
    atoms = read_structure(fragment_pdb)
    centred = atoms.xyz - atoms.xyz.mean(0)  # any placement gives the same |F|
    f = structure_factors(AtomBatch.from_atoms([atoms.replace(xyz=centred)], Cell.cubic(12)), hkl, b_iso=20.0)
    assert np.allclose(mtz.column_with_label("F").array, f[0].abs().numpy(), rtol=1e-5)
    pat = np.array(patterson.grid, copy=True)
    assert pat[0, 0, 0] == pytest.approx(pat.max())


def test_maps_reads_small_molecule_cif_in_its_own_cell(tmp_path, capsys):
    cif = tmp_path / "nacl.cif.gz"
    with gzip.open(cif, "wt") as fh:
        fh.write(NACL)
    assert len(read_structure(cif)) == 8  # all sites of the face-centred cell
    code, _, err = run(["maps", cif, "--d-min", 1.0, "--out", tmp_path / "o"], capsys)
    assert code == 0, err
    density = gemmi.read_ccp4_map(str(tmp_path / "o" / "density.ccp4"))
    assert density.grid.unit_cell.a == pytest.approx(5.64)
    rho = np.array(density.grid, copy=True)
    # Cl (17 e) sits at (1/2, 1/2, 1/2) and its face-centred copies such as (0, 0, 1/2); Na (11 e) at the origin
    n = rho.shape[0]
    peak = np.unravel_index(rho.argmax(), rho.shape)
    assert sorted(peak) in ([0, 0, n // 2], [n // 2] * 3)
    assert rho[n // 2, n // 2, n // 2] == pytest.approx(rho.max()) and rho[0, 0, 0] < 0.8 * rho.max()


def test_embedded_default_source_is_real_protein():
    entries = embedded_entries()
    assert len(entries) >= 40
    atoms = read_structure("embedded")
    assert len(atoms) > 500 and {"C", "N", "O"} <= set(atoms.elements) and atoms.residues is not None


def test_module_entry_point_runs(tmp_path, fragment_pdb):
    proc = subprocess.run(
        [sys.executable, "-m", "patterson", "maps", str(fragment_pdb), "--cell", "10", "--out", str(tmp_path / "m")],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0, proc.stderr
    assert sorted(p.name for p in (tmp_path / "m").iterdir()) == ["density.ccp4", "patterson.ccp4", "reflections.mtz"]


def _bad_inputs(tmp_path, fragment_pdb):
    empty = tmp_path / "empty.pdb"
    empty.write_text("")
    no_atoms = tmp_path / "noatoms.pdb"
    no_atoms.write_text("HEADER    NOTHING\nEND\n")
    garbage = tmp_path / "garbage.cif"
    garbage.write_bytes(b"\x00\x01binary junk\xff")
    unknown = tmp_path / "unknown.pdb"
    unknown.write_text(
        "ATOM      1  C1  UNK A   1       1.000   2.000   3.000  1.00 20.00           C\n"
        "ATOM      2  X1  UNK A   1       2.000   2.000   3.000  1.00 20.00          QQ\n"
    )
    a_file = tmp_path / "afile"
    a_file.write_text("x")
    good = fragment_pdb.read_text().splitlines()
    at = next(i for i, line in enumerate(good) if line.startswith(("ATOM", "HETATM")))
    non_finite = {}
    for name, cols, value in (("nan", (30, 38), "nan"), ("inf-b", (60, 66), "inf"), ("nan-occ", (54, 60), "nan")):
        lines = list(good)
        lines[at] = lines[at][: cols[0]] + f"{value:>{cols[1] - cols[0]}}" + lines[at][cols[1] :]
        non_finite[name] = tmp_path / f"{name}.pdb"
        non_finite[name].write_text("\n".join(lines) + "\n")
    return {
        "NaN coordinate": ([non_finite["nan"]], "non-finite coordinate"),
        "infinite B": ([non_finite["inf-b"]], "non-finite B"),
        "NaN occupancy": ([non_finite["nan-occ"]], "non-finite occupancy"),
        "missing file": ([tmp_path / "nope.pdb"], "no such file"),
        "empty file": ([empty], "empty"),
        "no atoms": ([no_atoms], "no atoms"),
        "unreadable": ([garbage], "not a readable structure"),
        "unknown element": ([unknown], "unknown element"),
        "zero d_min": ([fragment_pdb, "--d-min", 0], "d_min"),
        "negative d_min": ([fragment_pdb, "--d-min", -1.5], "d_min"),
        "cell too small": ([fragment_pdb, "--cell", 3, 3, 3], "does not fit in the cell"),
        "unwritable output": ([fragment_pdb, "--cell", 12], "not a folder"),
    }, a_file


@pytest.mark.parametrize(
    "case",
    [
        "NaN coordinate",
        "infinite B",
        "NaN occupancy",
        "missing file",
        "empty file",
        "no atoms",
        "unreadable",
        "unknown element",
        "zero d_min",
        "negative d_min",
        "cell too small",
        "unwritable output",
    ],
)
def test_bad_input_gives_one_line_and_no_output(case, tmp_path, fragment_pdb, capsys):
    cases, a_file = _bad_inputs(tmp_path, fragment_pdb)
    args, message = cases[case]
    out = a_file / "sub" if case == "unwritable output" else tmp_path / "out"
    code, stdout, err = run(["maps", *args, "--out", out], capsys)
    assert code != 0
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("patterson: error:") and message in lines[0]
    assert not out.exists()


@pytest.mark.parametrize(
    "args",
    [["maps", "{pdb}", "--cell", "10000", "--out", "{out}"],
     ["maps", "{pdb}", "--cell", "40", "--d-min", "0.005", "--out", "{out}"],
     ["generate", "--preset", "paper-2", "--set", "cell=[10000, 10000, 10000]", "--out", "{out}"],
     ["generate", "--preset", "paper-2", "--set", "d_min=0.01", "--out", "{out}"]],
    ids=["maps-huge-cell", "maps-tiny-d-min", "generate-huge-cell", "generate-tiny-d-min"],
)  # fmt: skip
def test_absurd_sizes_are_refused_fast_and_small(args, fragment_pdb, tmp_path, capsys):
    """#15: memory is estimated from the grid and the reflection count before anything is allocated."""
    import time
    import tracemalloc

    out = tmp_path / "out"
    argv = [a.format(pdb=fragment_pdb, out=out) for a in args]
    tracemalloc.start()
    t0 = time.perf_counter()
    code = main(argv)
    seconds = time.perf_counter() - t0
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    err = capsys.readouterr().err.strip()
    assert code == 2 and err.startswith("patterson: error:") and len(err.splitlines()) == 1
    assert ("memory" in err or "grid points" in err) and seconds < 2 and peak < 500e6 and not out.exists()


def test_long_structure_factors_show_progress_and_give_the_same_f(fragment_pdb, monkeypatch, capsys):
    """#15: `maps --cell 150` ran 200 s silent; beyond BAR_TERMS the sum runs in blocks under a bar, unchanged."""
    import patterson.maps as maps

    config = maps.MapsConfig(str(fragment_pdb), d_min=1.5, cell=(12.0, 12.0, 12.0), b_iso=20.0)
    whole = maps.structure_maps(config)
    monkeypatch.setattr(maps, "BAR_TERMS", 1000)  # this small molecule then counts as a long computation
    monkeypatch.setattr(maps, "bar_options", lambda: {"mininterval": 0})  # draw it even when stderr is a pipe
    blocked = maps.structure_maps(config)
    assert "structure factors" in capsys.readouterr().err
    assert np.array_equal(blocked.hkl, whole.hkl) and np.allclose(blocked.f, whole.f, rtol=1e-12, atol=1e-12)
