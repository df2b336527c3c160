"""Real reflection files as diffractometers and programs write them (#29), read from ../shared/data/real/small (never
copied into the project): free format, placeholder rows with σ < 0, a batch column, gzip, SHELX models."""

from __future__ import annotations

import gzip
import re
import shutil
from pathlib import Path

import numpy as np
import pytest

from patterson.cli import main
from patterson.solving import read_reflections
from patterson.structures import read_structure

SMALL = Path(__file__).resolve().parents[2] / "shared" / "data" / "real" / "small"


def test_a_free_format_hkl_is_read_as_blank_separated_columns():
    """xylitol's .hkl is 'h k l I σ' with blanks: in 3I4,2F8 columns its first line would read I = 471, σ = 3.47."""
    refl = read_reflections(SMALL / "xylitol_122k" / "xylitol_122k.hkl")
    assert tuple(refl.hkl[0]) == (0, 0, 2) and refl.value[0] == 4713.47 and refl.sigma[0] == 80.22
    assert len(refl.hkl) == 9942 and any("free format" in w for w in refl.warnings)


def test_placeholder_rows_with_negative_sigma_are_skipped_and_counted():
    refl = read_reflections(SMALL / "malbac" / "malbac.hkl")
    assert len(refl.hkl) == 7595 and (refl.sigma >= 0).all()
    assert any("skipped 8051 rows with σ < 0" in w for w in refl.warnings)


def test_fixed_format_with_run_together_numbers_and_a_batch_column():
    """malbac writes '  -2   0   017931.98' (l = 0, I = 17931.98 in fixed columns); cod2240189 has a batch column."""
    malbac = read_reflections(SMALL / "malbac" / "malbac.hkl")
    row = np.flatnonzero((malbac.hkl == (-2, 0, 0)).all(1))
    assert malbac.value[row[0]] == 17931.98
    cod = read_reflections(SMALL / "cod2240189" / "cod2240189.hkl")
    assert len(cod.hkl) == 782 and cod.spacegroup == "R -3 c:H" and cod.value[0] == 86.70


def test_gzipped_files_read_as_the_plain_ones(tmp_path):
    for name in ("thpp.hkl", "thpp.ins"):
        shutil.copy(SMALL / "thpp" / name, tmp_path / name)
    with open(tmp_path / "thpp.hkl", "rb") as src, gzip.open(tmp_path / "thpp2.hkl.gz", "wb") as dst:
        dst.write(src.read())
    shutil.copy(tmp_path / "thpp.ins", tmp_path / "thpp2.ins")
    plain, packed = read_reflections(tmp_path / "thpp.hkl"), read_reflections(tmp_path / "thpp2.hkl.gz")
    np.testing.assert_array_equal(plain.hkl, packed.hkl)
    np.testing.assert_array_equal(plain.value, packed.value)
    mtz = Path(__file__).resolve().parents[2] / "shared" / "data" / "real" / "5e5z" / "5e5z.mtz"
    with open(mtz, "rb") as src, gzip.open(tmp_path / "5e5z.mtz.gz", "wb") as dst:
        dst.write(src.read())
    assert len(read_reflections(tmp_path / "5e5z.mtz.gz").hkl) == len(read_reflections(mtz).hkl)


@pytest.mark.parametrize("case", ["no valid row", "only placeholders"])
def test_a_hkl_without_a_measured_row_is_one_line(case, tmp_path, capsys):
    shutil.copy(SMALL / "thpp" / "thpp.ins", tmp_path / "x.ins")
    text = "   1   2   3   12.00   -1.00\n" if case == "only placeholders" else "this is not a reflection file\n"
    (tmp_path / "x.hkl").write_text(text)
    code = main(["solve", str(tmp_path / "x.hkl"), "--out", str(tmp_path / "out"), "--no-progress"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and err.startswith("patterson: error:"), err
    assert ("σ < 0 skipped" if case == "only placeholders" else "not 3I4,2F8") in err
    assert not (tmp_path / "out").exists()


def _cif2(text: str) -> str:
    """CIF1 tags of the categories a small-molecule CIF uses, written the CIF2 way (``_cell.length_a``)."""
    categories = "cell|atom_site|atom_type|space_group_symop|space_group|symmetry|chemical_formula|diffrn_radiation"
    return re.sub(rf"(?m)^(\s*)_({categories})_", r"\1_\2.", text)


@pytest.mark.parametrize("cif2", [False, True], ids=["CIF1", "CIF2"])
def test_a_cif_that_carries_its_reflections_is_read_with_its_cell_symmetry_and_formula(cif2, tmp_path):
    """sh2185_cu's published CIF holds _shelx_hkl_file: the same reflections as its .hkl, the group from the
    operators' loop, the formula times Z as the cell contents, the wavelength; CIF2 tags read alike."""
    text = (SMALL / "sh2185_cu" / "published.cif").read_text()
    path = tmp_path / "sh2185_cu.cif"
    path.write_text(_cif2(text) if cif2 else text)
    assert ("_cell.length_a" in path.read_text()) == cif2
    refl, hkl = read_reflections(path), read_reflections(SMALL / "sh2185_cu" / "sh2185_cu.hkl")
    np.testing.assert_array_equal(refl.hkl, hkl.hkl)
    np.testing.assert_array_equal(refl.value, hkl.value)
    assert refl.spacegroup == "P 21 21 21" and refl.kind == "intensity" and refl.wavelength == 1.54184
    assert refl.composition == hkl.composition == {"C": 88.0, "H": 100.0, "N": 4.0, "O": 4.0}
    assert refl.cell.parameters == pytest.approx(hkl.cell.parameters)
    atoms = read_structure(path)  # and the model in it, never a 1 Å cell without atoms
    assert len(atoms) == 236 and atoms.cell == pytest.approx(hkl.cell.parameters)


def test_hklf_3_in_a_cif_gives_amplitudes():
    refl = read_reflections(SMALL / "l_cysteine_100k" / "published.cif")
    assert refl.kind == "amplitude" and len(refl.hkl) == 1979


@pytest.mark.parametrize("case", ["reflections against the cell", "no cell", "unknown SFAC element"])
def test_contradictory_or_incomplete_input_is_one_line(case, tmp_path, capsys):
    text = (SMALL / "sh2185_cu" / "published.cif").read_text()
    path = tmp_path / "x.cif"
    if case == "reflections against the cell":  # a cell 10× too small: the same hkl reach 0.08 Å
        text = re.sub(r"(?m)^(_cell_length_[abc])\s+(\d+)\.", lambda m: f"{m.group(1)} 0.{m.group(2)}", text)
        message = "contradict the cell"
    elif case == "no cell":
        text = re.sub(r"(?m)^_cell_length_a.*$", "", text)
        message = "no cell"
    else:
        path = tmp_path / "x.hkl"
        shutil.copy(SMALL / "thpp" / "thpp.hkl", path)
        ins = (SMALL / "thpp" / "thpp.ins").read_text()
        (tmp_path / "x.ins").write_text(ins.replace("SFAC C H F N", "SFAC C H Xx N"))
        message = "unknown element 'Xx'"
    if path.suffix == ".cif":
        path.write_text(text)
    code = main(["solve", str(path), "--out", str(tmp_path / "out"), "--no-progress"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and err.startswith("patterson: error:") and message in err, err
    assert not (tmp_path / "out").exists()


def test_electron_form_factors_are_gemmis_and_the_wavelength_picks_the_radiation():
    import gemmi
    import torch

    from patterson.physics import form_factors
    from patterson.solving.reflections import radiation_for

    stol2 = torch.tensor([0.0, 0.1, 0.5], dtype=torch.float64)
    f = form_factors(torch.tensor([6, 26]), stol2, "electron")
    for row, z in zip(f, (6, 26), strict=True):
        expected = [gemmi.Element(z).c4322.calculate_sf(float(s)) for s in stol2]
        np.testing.assert_allclose(row.numpy(), expected, rtol=1e-5)
    assert radiation_for(0.0251, "x") == "electron" and radiation_for(0.71073, "x") == "xray"
    assert radiation_for(None, "x") == "xray" and radiation_for(0.71073, "x", "electron") == "electron"


def test_a_wavelength_that_fits_neither_radiation_is_one_line(tmp_path, capsys):
    shutil.copy(SMALL / "thpp" / "thpp.hkl", tmp_path / "x.hkl")
    ins = (SMALL / "thpp" / "thpp.ins").read_text().replace("CELL 0.71073", "CELL 7.5")
    (tmp_path / "x.ins").write_text(ins)
    code = main(["solve", str(tmp_path / "x.hkl"), "--out", str(tmp_path / "out"), "--no-progress"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and "fits neither X-rays" in err, err
    assert not (tmp_path / "out").exists()
