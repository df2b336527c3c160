"""Riding hydrogens (solving/hydrogens.py): placed from the heavy atoms' geometry as SHELXL places them, written as
AFIX groups, never refined and never fitted to the free reflections."""

from pathlib import Path

import numpy as np

from patterson.cells import Cell, frac_distances
from patterson.shelx import read_shelx
from patterson.solving import prepare_data, read_reflections
from patterson.solving.atoms import AtomModel, r_factors
from patterson.solving.hydrogens import add_hydrogens, riding_hydrogens
from patterson.solving.shelx import res_text
from patterson.symmetry import SpaceGroup

SMALL = Path(__file__).resolve().parents[2] / "shared" / "data" / "real" / "small"
NTD51A = SMALL / "ntd51a" / "published.res"  # SHELXL's own riding H: AFIX 43, 23 and 137 groups


def _ntd51a():
    """ntd51a's published atoms: the heavy ones as a model, the H apart, the cell and group."""
    shelx = read_shelx(NTD51A.read_text(), str(NTD51A))
    group, cell = SpaceGroup.of("P 1 21/c 1"), Cell(*shelx.cell)
    heavy = [a for a in shelx.atoms if a[1] != "H"]
    frac = np.array([a[2] for a in heavy]) % 1.0
    model = AtomModel(frac, np.array([a[1] for a in heavy]), np.full(len(heavy), 2.0), np.ones(len(heavy)))
    h = np.array([a[2] for a in shelx.atoms if a[1] == "H"]) % 1.0
    return model, h, cell, group


def _gaussians(centres: np.ndarray, cell: Cell):
    """A density of unit Gaussians (0.3 Å wide) at the fractional centres: the H peaks of a difference map."""
    return lambda frac: np.exp(-(frac_distances(frac, centres, cell) ** 2) / (2 * 0.3**2)).sum(1)


def test_riding_hydrogens_sit_where_shelxl_put_the_published_ones():
    model, h_published, cell, group = _ntd51a()
    riding = riding_hydrogens(model, cell, group, _gaussians(h_published, cell))
    assert len(riding) == len(h_published) == 33  # CH, CH2 and the methyls on Si, none on N or O
    d = frac_distances(riding.frac, h_published, cell).min(1)  # (H,) Å
    assert d.max() < 0.15 and np.median(d) < 0.05  # the methyls turned to the published torsion by the map alone
    assert set(riding.afix) == {13, 43, 23, 137}
    without_map = riding_hydrogens(model, cell, group)  # no map: no methyl H, the others unchanged
    assert len(without_map) == len(riding) - 3 * (riding.afix == 137).sum() // 3
    assert np.allclose(without_map.frac, riding.frac[riding.afix != 137])


def test_riding_hydrogens_follow_their_parents_in_the_res_file_as_afix_groups():
    model, h_published, cell, group = _ntd51a()
    riding = riding_hydrogens(model, cell, group, _gaussians(h_published, cell))
    composition = {"C": 104.0, "H": 132.0, "N": 4.0, "O": 12.0, "Si": 4.0}
    text = res_text(cell, group, model.frac, model.elements, model.occ * 4, np.full(len(model), 0.02), composition,
                    riding=riding)  # fmt: skip
    lines = text.splitlines()
    assert sum(line.startswith("AFIX 0") for line in lines) == len(np.unique(riding.parent))
    h_lines = [line for line in lines if line[0] == "H" and line[1].isdigit()]
    assert len(h_lines) == len(riding) and all(line.split()[-1] in ("-1.20000", "-1.50000") for line in h_lines)
    read = read_shelx(text, "x.res").atoms  # (label, element, frac, occupancy, U)
    assert [a[1] for a in read].count("H") == len(riding) and len(read) == len(model) + len(riding)
    assert all(a[4] > 0 for a in read)  # a riding U (−1.2) read as a multiple of its parent's


def test_hydrogens_lower_r1_on_real_data_and_never_read_the_free_amplitudes():
    model, _, cell, group = _ntd51a()
    data = prepare_data(read_reflections(SMALL / "ntd51a" / "ntd51a.hkl"))
    _, rep = np.unique(data.orbit, return_index=True)
    free_orbit = np.random.default_rng(0).random(len(rep)) < 0.05
    free_p1 = free_orbit[np.unique(data.orbit, return_inverse=True)[1]]
    setting = (data.cell, group, "it92")
    observed = (data.f[rep], None, data.hkl[rep], free_orbit)
    model = r_factors(model, *observed, setting)
    with_h = add_hydrogens(model, observed, (data.f, data.hkl, free_p1), setting, data.d_min)
    assert with_h.hydrogens is not None and len(with_h.hydrogens) == 33
    assert with_h.r1_work < model.r1_work - 0.01 and with_h.r1_free < model.r1_free  # the free set agrees
    scrambled_f = np.where(free_p1, data.f[::-1], data.f)  # other free amplitudes: the same hydrogens
    again = add_hydrogens(model, observed, (scrambled_f, data.hkl, free_p1), setting, data.d_min)
    assert np.array_equal(again.hydrogens.frac, with_h.hydrogens.frac)
