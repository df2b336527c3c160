"""Space-group symmetry after P1 phasing: the origin, symmetrising, the space-group check, peaks on special
positions, the SHELX .res, and the bad input around them."""

import json

import gemmi
import numpy as np
import pytest
import torch

from patterson.cells import Cell
from patterson.cli import main
from patterson.maps import density_from_f
from patterson.phasing import FlipOptions, charge_flip
from patterson.physics import AtomBatch, grid_shape, miller_indices, structure_factors
from patterson.solving import read_ins
from patterson.solving.shelx_data import group_from_shelx
from patterson.solving.symmetry import (
    check_spacegroups,
    find_origin,
    is_permitted_shift,
    shift_origin,
    symmetrize,
    to_spacegroup,
    unique_peaks,
)
from patterson.structures import Atoms
from patterson.symmetry import SpaceGroup, images, random_sites

D_MIN = 1.0
CASES = {  # space group, cell, atoms in the asymmetric unit
    "P 21 21 21": ((9.0, 11.0, 13.0, 90, 90, 90), 6),
    "C 1 2 1": ((14.0, 9.0, 10.0, 90, 105, 90), 5),
    "P 1 21/c 1": ((9.0, 10.0, 11.0, 90, 100, 90), 5),
}


def crystal(name: str, n_asu: int | None = None, seed: int = 0, special: tuple | None = None):
    """(group, cell, frac (N, 3) of the whole cell) of a random crystal of ``CASES[name]``."""
    cell_par, n = CASES[name]
    group, cell = SpaceGroup.of(name), Cell(*cell_par)
    return group, cell, random_sites(group, cell, n_asu or n, seed=seed, special=special)


def factors(cell: Cell, frac: np.ndarray, elements=None) -> tuple[np.ndarray, np.ndarray]:
    hkl = miller_indices(cell, D_MIN)
    el = np.array(elements if elements is not None else ["C"] * len(frac))
    atoms = Atoms(cell.to_cartesian(frac), el, np.full(len(frac), 3.0), np.ones(len(frac)), cell.parameters)
    return hkl, structure_factors(AtomBatch.from_atoms([atoms], cell), hkl)[0].numpy()


def best_cc_at_permitted_origins(group, cell, hkl, f_true, f_new) -> float:
    """The map CC with the truth at the permitted origins {0, ½}³ of the group (and the other hand): no search."""
    shape = grid_shape(cell, D_MIN)
    rho = density_from_f(torch.as_tensor(f_new)[None], hkl, cell, shape)[0].numpy().ravel()
    best = -1.0
    for s in np.stack(np.meshgrid(*[[0.0, 0.5]] * 3, indexing="ij"), -1).reshape(-1, 3):
        if not is_permitted_shift(group, s):
            continue
        for truth in (f_true, np.conj(f_true)):
            ref = density_from_f(torch.as_tensor(shift_origin(hkl, truth, s))[None], hkl, cell, shape)[0].numpy()
            best = max(best, float(np.corrcoef(ref.ravel(), rho)[0, 1]))
    return best


@pytest.mark.parametrize("name", sorted(CASES))
def test_exact_factors_obey_their_group_and_the_origin_is_found_after_any_shift(name):
    group, cell, frac = crystal(name)
    hkl, f = factors(cell, frac)
    assert np.abs(symmetrize(hkl, f, group) - f).max() < 1e-9 * np.abs(f).max()  # physics: F(h) = e^{2πih·t} F(hR)
    moved = shift_origin(hkl, f, np.random.default_rng(1).uniform(0, 1, 3))  # the structure anywhere in the cell
    f_sg, fit = to_spacegroup(hkl, moved, cell, group, D_MIN)
    assert fit.consistent and fit.worst > 0.99 and len(fit.table()) == len(group.rot)
    assert np.abs(symmetrize(hkl, f_sg, group) - f_sg).max() < 1e-6 * np.abs(f).max()
    if name != "C 1 2 1":  # C2 has a polar axis: its origin along b is free, so no finite set to compare at
        assert best_cc_at_permitted_origins(group, cell, hkl, f, f_sg) > 0.99
    random = np.abs(f) * np.exp(2j * np.pi * np.random.default_rng(2).uniform(size=len(f)))
    assert not find_origin(hkl, random, cell, group, D_MIN).consistent  # random phases obey no group


@pytest.mark.parametrize("name", sorted(CASES))
def test_phased_in_p1_then_moved_overlays_the_truth_at_a_conventional_origin(name):
    group, cell, frac = crystal(name, n_asu=3)
    hkl, f = factors(cell, frac)
    shape = grid_shape(cell, D_MIN)
    amp = torch.as_tensor(np.abs(f))[None]
    res = charge_flip(amp, hkl, cell, shape, FlipOptions(n_iter=300, n_starts=4, seed=0))
    assert res.verdict[0] == "solved"  # the data this test is about: the phasing solves them in P1
    f_p1 = np.abs(f) * np.exp(1j * res.phi_rad[0].numpy())
    f_sg, fit = to_spacegroup(hkl, f_p1, cell, group, D_MIN)
    assert fit.consistent
    if name == "C 1 2 1":  # along the polar b axis any origin is conventional: align along b only
        from patterson.evaluation.metrics import align

        a = align(torch.as_tensor(f)[None], torch.as_tensor(f_sg)[None], hkl, cell)
        assert is_permitted_shift(group, a.shift_frac[0].numpy(), tol=0.02) and float(a.score[0]) > 0.9
    else:
        assert best_cc_at_permitted_origins(group, cell, hkl, f, f_sg) >= 0.95


def test_special_positions_are_one_peak_with_their_multiplicity():
    group, cell = SpaceGroup.of("P 1 21/c 1"), Cell(9.0, 10.0, 11.0, 90, 100, 90)
    general = images(group, np.array([0.1, 0.2, 0.3]))  # 4 images
    centre = images(group, np.array([0.0, 0.0, 0.0]))  # an inversion centre: 2 distinct images, each twice
    frac = np.concatenate([general, centre]) + 1e-3  # as a peak search finds them (off the exact site by a little)
    peaks = unique_peaks(frac, np.r_[np.full(4, 2.0), np.full(4, 3.0)], cell, group)
    assert len(peaks.height) == 2 and list(peaks.multiplicity) == [2, 4]


@pytest.mark.parametrize("name, subgroups", [("P 21 21 21", {"P 1", "P 1 21 1"}), ("C 1 2 1", {"P 1", "P 1 2 1"})])
def test_space_group_check_finds_the_group_of_p1_data(name, subgroups):
    group, cell, frac = crystal(name)
    hkl, f = factors(cell, frac)
    rows = check_spacegroups(hkl, shift_origin(hkl, f, np.array([0.3, 0.1, 0.7])), cell, D_MIN)
    assert rows[0]["spacegroup"] == name and rows[0]["consistent"]  # the highest symmetry obeyed, centring included
    consistent = {r["spacegroup"] for r in rows if r["consistent"]}
    assert subgroups <= consistent and not consistent & {"P m m m", "C 1 2/m 1"}


def test_shelx_latt_and_symm_make_the_group_and_bad_ones_are_refused():
    rot, tran = np.array([[-1, 0, 0], [0, 1, 0], [0, 0, -1]]), np.array([0.0, 0.5, 0.0])
    assert group_from_shelx(1, [(rot, tran)], "x.ins").name == "P 1 21/m 1"
    assert group_from_shelx(-7, [(rot, np.zeros(3))], "x.ins").name == "C 1 2 1"
    from patterson.errors import PattersonError

    with pytest.raises(PattersonError, match="no tabulated space group|do not form"):
        group_from_shelx(-1, [(rot, np.array([0.0, 1 / 3, 0.0]))], "x.ins")
    with pytest.raises(PattersonError, match="LATT 9"):
        group_from_shelx(9, [], "x.ins")


# --- end to end: solve in the space group ------------------------------------------------------------------------


def _write_mtz(path, cell, group, hkl, f):
    """The data as a crystallographer gets them: one amplitude per unique reflection, in the space group."""
    full, amp = np.concatenate([hkl, -hkl]), np.concatenate([np.abs(f), np.abs(f)])
    asu = gemmi.ReciprocalAsu(group.gemmi)
    keep = np.array([asu.is_in(h) for h in full.tolist()])
    full, amp = full[keep], amp[keep]
    _, first = np.unique(full, axis=0, return_index=True)
    mtz = gemmi.Mtz(with_base=True)
    mtz.spacegroup = group.gemmi
    mtz.set_cell_for_all(cell.to_gemmi())
    mtz.add_dataset("test")
    mtz.add_column("FP", "F")
    mtz.add_column("SIGFP", "Q")
    mtz.set_data(np.column_stack([full[first], amp[first], 0.01 * amp[first] + 0.01]).astype(np.float32))
    mtz.write_to_file(str(path))
    return path


def test_solve_writes_everything_in_the_space_group(tmp_path, monkeypatch):
    from patterson.networks import checkpoint as checkpoint_module

    monkeypatch.setattr(checkpoint_module, "WEIGHTS_DIR", tmp_path / "no-weights")
    group, cell, frac = crystal("P 1 21/c 1", n_asu=3, special=(0.0, 0.0, 0.0))
    elements = ["S", "S"] + ["C"] * (len(frac) - 2)  # the heavy atom on the inversion centre
    hkl, f = factors(cell, frac, elements)
    path = _write_mtz(tmp_path / "p21c.mtz", cell, group, hkl, f)
    out = tmp_path / "out"
    n_c = len(frac) - 2
    assert main(["solve", str(path), "--out", str(out), "--no-progress", "--composition", f"S2 C{n_c}"]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["verdict"] == "solved" and summary["symmetry"]["written_in"] == "P 1 21/c 1"
    assert summary["symmetry"]["consistent"] and summary["symmetry"]["worst_agreement"] > 0.7  # random: ~0.1
    mtz = gemmi.read_mtz_file(str(out / "phases.mtz"))
    assert mtz.spacegroup.hm == "P 1 21/c 1" and "FWT" in mtz.column_labels() and "PHWT" in mtz.column_labels()
    phases = np.array(mtz.column_with_label("PHI"), dtype=float)
    present = np.array(mtz.column_with_label("F"), dtype=float) > 1e-6  # not the systematic absences
    assert np.all(np.minimum(phases[present] % 180, 180 - phases[present] % 180) < 1.0)  # centric: 0 or 180°
    ccp4 = gemmi.read_ccp4_map(str(out / "density.ccp4"))
    assert ccp4.grid.spacegroup.hm == "P 1 21/c 1"
    ours = np.array(ccp4.grid, copy=True)
    theirs = np.array(mtz.transform_f_phi_to_map("F", "PHI", exact_size=list(ours.shape)), copy=False)
    assert np.corrcoef(ours.ravel(), theirs.ravel())[0, 1] > 0.99  # gemmi expands the asymmetric unit to our map
    assert gemmi.read_structure(str(out / "peaks.pdb")).spacegroup_hm == "P 1 21/c 1"
    ins = read_ins(out / "solution.res")  # the .res as SHELXL reads it: cell, LATT/SYMM, SFAC/UNIT, atoms
    assert ins["cell"].parameters == pytest.approx(cell.parameters, abs=1e-3)
    assert group_from_shelx(ins["latt"], ins["symm"], "solution.res").name == "P 1 21/c 1"
    assert ins["composition"] == {"S": 2.0, "C": float(n_c)}
    atoms = [line.split() for line in (out / "solution.res").read_text().splitlines() if line[:1] in "SC"
             and line.split()[0][1:].isdigit()]  # fmt: skip
    sulphur = [a for a in atoms if a[0].startswith("S")]
    assert len(sulphur) == 1 and len(atoms) == 1 + n_c // 4  # the special position is one atom, not two
    xyz = np.array([float(v) for v in sulphur[0][2:5]])
    assert float(sulphur[0][5]) == pytest.approx(10.5, abs=1e-3)  # site occupancy 1/2: on the inversion centre
    on_centre = np.abs(((2 * xyz) % 1 + 0.5) % 1 - 0.5).max()  # an inversion centre of P2₁/c: all 0 or ½
    assert on_centre < 0.02


def test_solve_refuses_a_cell_that_contradicts_the_space_group(tmp_path, capsys):
    group, cell, frac = crystal("P 21 21 21")
    hkl, f = factors(cell, frac)
    path = _write_mtz(tmp_path / "x.mtz", cell, group, hkl, f)
    out = tmp_path / "out"
    code = main(["solve", str(path), "--out", str(out), "--no-progress", "--cell", "9", "11", "13", "90", "100", "90"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "contradicts the space group" in err[0] and not out.exists()


def test_solve_of_p1_data_reports_the_groups_the_solution_obeys(tmp_path, capsys, monkeypatch):
    from patterson.networks import checkpoint as checkpoint_module

    monkeypatch.setattr(checkpoint_module, "WEIGHTS_DIR", tmp_path / "no-weights")
    group, cell, frac = crystal("P 21 21 21", n_asu=3)
    hkl, f = factors(cell, frac)
    path = _write_mtz(tmp_path / "p1.mtz", cell, SpaceGroup.of("P 1"), hkl, f)  # the data as if merged in P1
    out = tmp_path / "out"
    assert main(["solve", str(path), "--out", str(out), "--no-progress"]) == 0
    summary = json.loads((out / "summary.json").read_text())
    check = summary["symmetry"]["check"]
    assert summary["verdict"] == "solved" and check[0]["spacegroup"] == "P 21 21 21" and check[0]["consistent"]
    assert "obeys: P 21 21 21" in capsys.readouterr().out
