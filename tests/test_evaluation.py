"""Tests for patterson.evaluation: known answers for the origin/hand search, phase errors (gemmi as the oracle),
the chance level, peaks, the report folder and the ``compare`` command."""

from __future__ import annotations

import csv
import json
import math

import gemmi
import numpy as np
import pytest
import torch

from patterson.cells import Cell, frac_distances
from patterson.cli import main
from patterson.errors import PattersonError
from patterson.evaluation import (
    Alignment,
    EvalBatch,
    align,
    apply_alignment_f,
    apply_alignment_map,
    atom_recovery,
    atoms_found,
    central_region_mask,
    chance_scores,
    compare_vectors,
    evaluate_predictions,
    find_peaks,
    finest_d_min,
    map_cc,
    score_f,
    score_maps,
)
from patterson.maps import density_from_f, f_from_density, patterson_from_f, write_ccp4
from patterson.physics import AtomBatch, grid_shape, miller_indices, resolution_shells, structure_factors
from patterson.structures import random_walk

SCHEMA = {"n", "cc", "cc_aligned", "phase_error_deg", "solved_fraction", "shells", "chance", "method", "dataset"}
SCHEMA |= {"version"}
SHELL_KEYS = {"d_min", "d_max", "phase_error_deg", "fraction_below_60", "map_cc"}


def fragments(seed: int, cell: Cell, batch: int = 1, n_atoms: int = 14, b_iso: float = 20.0) -> AtomBatch:
    """Random-walk molecules of C, N, O (bonds 1.5 Å, no two atoms closer than 1.2 Å) centred in the cell."""
    rng = np.random.default_rng(seed)
    frac = [random_walk(n_atoms, rng) @ cell.frac.T + 0.5 for _ in range(batch)]
    z = rng.choice([6, 6, 6, 7, 8], size=(batch, n_atoms))
    full = lambda v: torch.full((batch, n_atoms), v, dtype=torch.float64)  # noqa: E731
    return AtomBatch(torch.tensor(np.array(frac)), torch.as_tensor(z), full(b_iso), full(1.0), cell)


def moved(atoms: AtomBatch, shift: np.ndarray, inverted: np.ndarray) -> AtomBatch:
    """The atoms at ε x + t0: the density becomes ρ(ε (x − t0)), which the search must move back with (t0, ε)."""
    eps = torch.as_tensor(np.where(inverted, -1.0, 1.0))[:, None, None]
    frac = torch.remainder(eps * atoms.frac + torch.as_tensor(shift)[:, None, :], 1.0)
    return AtomBatch(frac, atoms.z, atoms.b_iso, atoms.occ, atoms.cell)


def density(atoms: AtomBatch, d_min: float) -> torch.Tensor:
    cell = atoms.cell
    hkl = miller_indices(cell, d_min)
    return density_from_f(structure_factors(atoms, hkl), hkl, cell, grid_shape(cell, d_min))


def frac_distance(a: torch.Tensor, b: np.ndarray) -> np.ndarray:
    d = a.numpy() - b
    return np.abs(d - np.round(d)).max(axis=-1)


# --- origin and hand search -----------------------------------------------------------------------------------


def test_shifted_and_inverted_copies_score_perfectly() -> None:
    cell = Cell.cubic(12.0)
    atoms = fragments(1, cell, batch=4)
    rng = np.random.default_rng(2)
    shift = rng.random((4, 3))
    inverted = np.array([False, True, False, True])
    truth = density(atoms, 1.5)
    pred = density(moved(atoms, shift, inverted), 1.5)
    s = score_maps(pred, truth, cell, 1.5)
    assert s.cc.abs().max() < 0.6  # really moved
    assert s.cc_aligned.min() > 0.9999
    assert s.phase_error_deg.max() < 0.5 and s.phase_error_weighted_deg.max() < 0.5
    assert s.shell_phase_error_deg.max() < 0.5
    assert s.shell_map_cc.min() > 0.9999
    assert s.inverted.numpy().tolist() == inverted.tolist()
    assert frac_distance(s.shift_frac, shift).max() < 1e-4


def test_float32_maps_on_a_triclinic_cell() -> None:
    cell = Cell(11.0, 12.5, 13.0, 80.0, 95.0, 105.0)
    atoms = fragments(3, cell, batch=2)
    shift = np.array([[0.31, 0.62, 0.07], [0.83, 0.18, 0.49]])
    inverted = np.array([True, False])
    truth = density(atoms, 1.5).float()
    pred = density(moved(atoms, shift, inverted), 1.5).float()
    s = score_maps(pred, truth, cell, 1.5)
    assert s.cc_aligned.min() > 0.999
    assert s.phase_error_weighted_deg.max() < 0.5
    assert frac_distance(s.shift_frac, shift).max() < 1e-3


def test_continuous_refinement_beats_the_grid_peak() -> None:
    """A grid-only search leaves the outer shell degrees off; Newton refinement removes it."""
    cell = Cell.cubic(12.0)
    atoms = fragments(4, cell, batch=1)
    shift, inverted = np.array([[0.4137, 0.1291, 0.7773]]), np.array([False])
    hkl = miller_indices(cell, 1.5)
    f1 = structure_factors(atoms, hkl)
    f2 = structure_factors(moved(atoms, shift, inverted), hkl)
    outer = {}
    for steps in (0, 8):
        al = align(f1, f2, hkl, cell, refine_steps=steps)
        outer[steps] = float(score_f(f1, apply_alignment_f(f2, hkl, al), hkl, cell)["shell_phase_error_deg"][0, -1])
    assert outer[0] > 2.0
    assert outer[8] < 0.1


def test_aligned_map_is_the_moved_map() -> None:
    """apply_alignment_map is ρ(εx + t): moving a map by (t, ε) and then by the search's answer gives it back."""
    cell = Cell.cubic(12.0)
    rho = density(fragments(5, cell), 1.5)
    forward = Alignment(torch.tensor([[0.21, 0.57, 0.93]], dtype=torch.float64), torch.tensor([True]), torch.ones(1))
    moved_map = apply_alignment_map(rho, forward)
    s, back = score_maps(moved_map, rho, cell, 1.5, return_aligned=True)
    assert bool(s.inverted[0])
    assert torch.allclose(back, rho, atol=1e-9 * float(rho.abs().max()) + 1e-10)


# --- phase errors: gemmi as the oracle --------------------------------------------------------------------------


def _gemmi_f(rho: torch.Tensor, cell: Cell, d_min: float) -> tuple[np.ndarray, np.ndarray]:
    grid = gemmi.FloatGrid(rho.numpy().astype(np.float32), cell.to_gemmi(), gemmi.SpaceGroup("P1"))
    asu = gemmi.transform_map_to_f_phi(grid, half_l=True).prepare_asu_data(dmin=d_min - 1e-6)
    return np.array(asu.miller_array), np.array(asu.value_array)


@pytest.mark.parametrize("cell", [Cell.cubic(12.0), Cell(10.5, 12.0, 13.5, 78.0, 96.0, 104.0)], ids=["cubic", "P1"])
def test_shell_phase_errors_agree_with_gemmi(cell: Cell) -> None:
    d_min, n_shells = 1.5, 12
    atoms = fragments(6, cell)
    t0 = np.array([[0.237, 0.614, 0.851]])
    truth = density(atoms, d_min)
    pred = density(moved(atoms, t0, np.array([True])), d_min)
    noise = torch.randn(pred.shape, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    pred = pred + 0.5 * float(pred.std()) * noise
    s = score_maps(pred, truth, cell, d_min, n_shells=n_shells)
    assert bool(s.inverted[0]) and frac_distance(s.shift_frac, t0).max() < 2e-3

    # independent: gemmi's FFT to reflections, the known alignment applied by hand, gemmi's equal-count bins
    hkl, f1 = _gemmi_f(truth[0], cell, d_min)
    hkl2, f2 = _gemmi_f(pred[0], cell, d_min)
    assert np.array_equal(hkl, hkl2) and len(hkl) == s.n_reflections
    f2_aligned = np.conj(f2) * np.exp(2j * np.pi * (hkl @ t0[0]))  # F(h)* e^{2πi h·t} for the inverted hand
    dphi = np.degrees(np.abs(np.angle(f1 * np.conj(f2_aligned))))
    binner = gemmi.Binner()
    binner.setup(n_shells, gemmi.Binner.Method.EqualCount, hkl.astype(np.int32), cell.to_gemmi())
    inv_d2 = cell.to_gemmi().calculate_1_d2_array(hkl.astype(np.float64))
    bins = np.searchsorted(np.array(binner.limits) * (1 + 1e-9), inv_d2)  # gemmi's limits, ties kept together
    expected = np.array([dphi[bins == i].mean() for i in range(n_shells)])
    assert 5.0 < expected[-1] < 90.0  # a real test: the outer shells have sizeable errors
    np.testing.assert_allclose(s.shell_phase_error_deg[0].numpy(), expected, atol=0.5)
    assert abs(float(s.phase_error_deg[0]) - dphi.mean()) < 0.5
    weighted = np.sum(np.abs(f1) * dphi) / np.sum(np.abs(f1))
    assert abs(float(s.phase_error_weighted_deg[0]) - weighted) < 0.5
    shell_cc = [
        np.sum((f1 * np.conj(f2_aligned)).real[bins == i])
        / math.sqrt(np.sum(np.abs(f1[bins == i]) ** 2) * np.sum(np.abs(f2[bins == i]) ** 2))
        for i in range(n_shells)
    ]
    np.testing.assert_allclose(s.shell_map_cc[0].numpy(), shell_cc, atol=0.01)  # the refined t differs a little from t0


def test_equal_count_shells_keep_ties_together() -> None:
    cell = Cell.cubic(12.0)
    hkl = miller_indices(cell, 1.5)
    shell, edges = resolution_shells(cell.d_spacing(hkl), 12)
    s2 = np.round(cell.inv_d2(hkl), 9)
    for value in np.unique(s2):
        assert len(set(shell[s2 == value])) == 1
    counts = np.bincount(shell, minlength=12)
    assert counts.sum() == len(hkl) and counts.min() > 0.5 * len(hkl) / 12
    assert np.all(np.diff(edges) < 0) and np.isinf(edges[0])


# --- the chance level -----------------------------------------------------------------------------------------------


def test_random_phases_score_the_chance_level() -> None:
    """The project notes' reference: F-weighted 86° / 79° / 70° and CC 0.13 / 0.23 / 0.37 at 1 / 2 / 3 Å (12 Å)."""
    cell = Cell.cubic(12.0)
    reference = {1.0: (86.0, 0.13), 2.0: (79.0, 0.23), 3.0: (70.0, 0.37)}
    for i, (d_min, (pe_ref, cc_ref)) in enumerate(reference.items()):
        truth = density(fragments(10 + i, cell, batch=16, b_iso=0.0), d_min)
        c = chance_scores(truth, cell, d_min, seed=i)
        assert abs(float(c.phase_error_weighted_deg.mean()) - pe_ref) < 4.0, d_min
        assert abs(float(c.cc_aligned.mean()) - cc_ref) < 0.08, d_min
        assert float(c.cc.abs().mean()) < 0.1  # before the search random phases do not correlate
        unweighted = float(c.phase_error_deg.mean())
        assert float(c.phase_error_weighted_deg.mean()) < unweighted < 90.0  # unweighted: below 90° too


# --- real-space correlation ---------------------------------------------------------------------------------------


def test_map_cc_and_central_region() -> None:
    cell = Cell.cubic(12.0)
    mask = central_region_mask(cell, (24, 24, 24), 6.0)
    assert int(mask.sum()) == 13**3  # |x| ≤ 3 Å on a 0.5 Å grid: 13 points per axis
    rho = density(fragments(7, cell, batch=2), 1.5)
    assert torch.allclose(map_cc(rho, rho), torch.ones(2, dtype=torch.float64))
    assert torch.allclose(map_cc(rho, -rho, mask), -torch.ones(2, dtype=torch.float64))
    outside = rho.clone()
    outside[:, ~mask] = torch.randn(int((~mask).sum()), dtype=torch.float64)
    assert torch.allclose(map_cc(outside, rho, mask), torch.ones(2, dtype=torch.float64))
    assert float(map_cc(torch.ones_like(rho), rho)[0]) == 0.0
    rolled = torch.roll(rho, shifts=(5, -7, 3), dims=(1, 2, 3))  # a whole-voxel shift: the region CC drops
    s = score_maps(rolled, rho, cell, 1.5, region=6.0)
    assert float(s.cc.max()) < 0.5 and float(s.cc_aligned.min()) > 0.9999


# --- peaks and atoms ------------------------------------------------------------------------------------------------


def test_peaks_find_atoms_and_vectors_ignore_origin_and_hand() -> None:
    cell = Cell.cubic(12.0)
    atoms = fragments(8, cell, b_iso=5.0)
    true_frac = atoms.frac[0].numpy()
    truth = density(atoms, 1.0)
    peaks = find_peaks(truth, cell, threshold=0.3, max_peaks=14)[0]
    assert len(peaks) == 14
    assert atom_recovery(true_frac, peaks.frac, cell) == {0.5: 1.0, 1.0: 1.0}
    assert atoms_found(true_frac, peaks.frac, cell) == {0.5: 14, 1.0: 14}  # the counts behind the fractions
    # vectors between peaks of a shifted, inverted copy match the true vectors without any alignment
    other = density(moved(atoms, np.array([[0.45, 0.1, 0.8]]), np.array([True])), 1.0)
    other_peaks = find_peaks(other, cell, threshold=0.3, max_peaks=14)[0]
    assert atom_recovery(true_frac, other_peaks.frac, cell)[1.0] < 0.5
    match = compare_vectors(true_frac, other_peaks.frac, cell)
    assert len(match.distance) == 14 * 13 // 2
    assert match.fraction_within(0.3) == 1.0
    assert match.table((24, 24, 24))[0][0] == "(0, 1)"


def test_peaks_are_periodic() -> None:
    """An atom at the cell corner is one peak, not eight, and it sits at the corner."""
    cell = Cell.cubic(10.0)
    atom = AtomBatch(
        torch.tensor([[[0.999, 0.0, 0.002]]], dtype=torch.float64),
        torch.tensor([[8]]),
        torch.tensor([[10.0]], dtype=torch.float64),
        torch.ones(1, 1, dtype=torch.float64),
        cell,
    )
    peaks = find_peaks(density(atom, 1.0), cell, threshold=0.5)[0]
    assert len(peaks) == 1
    assert frac_distances(peaks.frac, np.array([[0.999, 0.0, 0.002]]), cell)[0, 0] < 0.05


# --- the report folder ----------------------------------------------------------------------------------------------


def _batches(cell: Cell, d_min: float):
    hkl = miller_indices(cell, d_min)
    shape = grid_shape(cell, d_min)
    for b in range(2):
        atoms = fragments(20 + b, cell, batch=4)
        f = structure_factors(atoms, hkl)
        truth = density_from_f(f, hkl, cell, shape)
        rng = np.random.default_rng(b)
        pred = density(moved(atoms, rng.random((4, 3)), rng.random(4) < 0.5), d_min)
        if b == 1:  # the second batch: noisy predictions
            pred = pred + float(truth.std()) * torch.randn(pred.shape, generator=torch.Generator().manual_seed(b))
        yield {
            "prediction": pred.float(),
            "truth": truth.float(),
            "inputs": patterson_from_f(f, hkl, cell, shape),
            "cell": cell,
            "d_min": d_min,
            "ids": [f"ex{b}{i}" for i in range(4)],
            "atoms_frac": [a.numpy() for a in atoms.frac],
        }


def test_evaluate_predictions_writes_the_report(tmp_path) -> None:
    cell = Cell.cubic(12.0)
    out = tmp_path / "report"
    m = evaluate_predictions(_batches(cell, 1.5), out, method="copies", dataset="synthetic")
    for name in ("metrics.json", "per_example.csv", "report.md", "phase_error_vs_resolution.png", "slices.png"):
        assert (out / name).is_file()
    for png in out.glob("*.png"):
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 10_000
    on_disk = json.loads((out / "metrics.json").read_text())
    assert on_disk == m
    assert set(m) == SCHEMA | {"peaks"}  # the examples carry their atoms
    assert set(m["chance"]) == SCHEMA - {"chance", "method", "dataset", "version"}
    assert set(m["phase_error_deg"]) == {"mean", "median", "median_weighted"}
    assert len(m["shells"]) == 12 and all(set(s) == SHELL_KEYS for s in m["shells"])
    assert m["n"] == 8 and m["method"] == "copies"
    assert m["cc_aligned"]["mean"] > 0.8 and m["cc"]["mean"] < 0.5  # four perfect copies, four noisy ones
    assert m["solved_fraction"] >= 0.5
    assert m["chance"]["phase_error_deg"]["median_weighted"] > 60.0
    assert m["shells"][0]["d_max"] == pytest.approx(12.0) and m["shells"][-1]["d_min"] == pytest.approx(1.5)
    rows = list(csv.DictReader((out / "per_example.csv").open()))
    assert [r["id"] for r in rows][:2] == ["ex00", "ex01"] and len(rows) == 8
    assert all(float(r["cc_aligned"]) > 0.999 for r in rows[:4])
    assert all(float(r["atoms_within_1.0A"]) >= float(r["truth_atoms_within_1.0A"]) - 1e-9 for r in rows[:4])
    sizes = [int(float(r["n_atoms"])) for r in rows]  # the counts behind the fractions, totalled in metrics.json
    assert m["peaks"]["n_atoms"] == sum(sizes) and m["peaks"]["n_vectors"] == sum(n * (n - 1) // 2 for n in sizes)
    for r, n in zip(rows, sizes, strict=True):
        assert float(r["atoms_found_1.0A"]) == pytest.approx(float(r["atoms_within_1.0A"]) * n, abs=1e-3)
        pairs = n * (n - 1) / 2
        assert float(r["vectors_found_0.5A"]) == pytest.approx(float(r["vectors_within_0.5A"]) * pairs, abs=1e-3)
    assert m["peaks"]["atoms_found_1.0A"] == sum(int(float(r["atoms_found_1.0A"])) for r in rows)
    assert 0 < m["peaks"]["vectors_found_0.5A"] <= m["peaks"]["n_vectors"]
    report = (out / "report.md").read_text()
    assert "chance (random phases, true amplitudes)" in report and "| copies | 8 |" in report


def test_evaluate_an_empty_split_is_an_error(tmp_path) -> None:
    with pytest.raises(PattersonError, match="no examples"):
        evaluate_predictions(iter([]), tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_bad_tensors_are_one_line_errors() -> None:
    cell = Cell.cubic(12.0)
    rho = density(fragments(9, cell), 1.5)
    bad = rho.clone()
    bad[0, 1, 2, 3] = float("nan")
    for call, match in [
        (lambda: score_maps(bad, rho, cell, 1.5), "NaN"),
        (lambda: score_maps(rho[:, :, :, :20], rho, cell, 1.5), "different grids"),
        (lambda: score_maps(rho, rho, cell, 1.0), "too coarse"),
        (lambda: score_maps(rho, rho, cell, 1.5, weight="f2"), "weight"),
        (lambda: EvalBatch.of({"prediction": rho}), "lacks"),
    ]:
        with pytest.raises(PattersonError, match=match) as info:
            call()
        assert "\n" not in str(info.value)


# --- the compare command -----------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def map_files(tmp_path_factory):
    folder = tmp_path_factory.mktemp("maps")
    cell = Cell.cubic(12.0)
    atoms = fragments(30, cell)
    truth = density(atoms, 1.5)[0].numpy()
    other = density(moved(atoms, np.array([[0.3, 0.6, 0.15]]), np.array([True])), 1.5)[0].numpy()
    paths = {name: folder / f"{name}.ccp4" for name in ("a", "b", "cell", "grid", "nan")}
    write_ccp4(paths["a"], truth, cell)
    write_ccp4(paths["b"], other, cell)
    write_ccp4(paths["cell"], other, Cell.cubic(12.5))
    write_ccp4(paths["grid"], density(atoms, 1.5)[0, :, :, :20].numpy().copy(), cell)
    nan = truth.copy()
    nan[3, 4, 5] = np.nan
    write_ccp4(paths["nan"], nan, cell)
    paths["text"] = folder / "notes.ccp4"
    paths["text"].write_text("not a map\n")
    return {k: str(v) for k, v in paths.items()}


def test_compare_json_has_the_metrics_keys(map_files, capsys) -> None:
    assert main(["compare", map_files["a"], map_files["b"], "--d-min", "1.5", "--json"]) == 0
    m = json.loads(capsys.readouterr().out)
    assert set(m) == SCHEMA and m["n"] == 1
    assert m["cc_aligned"]["mean"] > 0.9999 and m["cc"]["mean"] < 0.6
    assert m["phase_error_deg"]["mean"] < 0.5 and m["solved_fraction"] == 1.0
    assert m["chance"]["phase_error_deg"]["median_weighted"] > 60.0
    assert m["shells"][-1]["d_min"] == pytest.approx(1.5)


def test_compare_table_and_default_resolution(map_files, capsys) -> None:
    assert finest_d_min(Cell.cubic(12.0), (24, 24, 24)) == pytest.approx(12.0 / 11.0)
    assert main(["compare", map_files["a"], map_files["b"]]) == 0
    text = capsys.readouterr().out
    assert "hand inverted" in text and "d_min 1.091" in text and "CC after alignment" in text
    lines = [ln for ln in text.splitlines() if ln.strip()]
    assert len(lines) >= 8 + 12


@pytest.mark.parametrize(
    "pair, match",
    [
        (("a", "cell"), "different cells"),
        (("a", "grid"), "different grids"),
        (("a", "text"), "not a CCP4/MRC map"),
        (("a", "nan"), "NaN"),
        (("a", "missing"), "no such file"),
    ],
)
def test_compare_bad_input_is_one_line(map_files, capsys, pair, match) -> None:
    paths = [map_files.get(p, "/nonexistent/missing.ccp4") for p in pair]
    assert main(["compare", *paths]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("patterson: error:") and match in err


def test_compare_rejects_a_resolution_finer_than_the_grid(map_files, capsys) -> None:
    assert main(["compare", map_files["a"], map_files["b"], "--d-min", "0.8"]) == 2
    assert "finer than the grid" in capsys.readouterr().err


def test_f_from_density_round_trip_used_by_the_metrics() -> None:
    """The metrics read reflections off maps with f_from_density: check it against the structure factors."""
    cell = Cell.cubic(12.0)
    atoms = fragments(31, cell)
    hkl = miller_indices(cell, 1.5)
    f = structure_factors(atoms, hkl)
    back = f_from_density(density_from_f(f, hkl, cell, grid_shape(cell, 1.5)), hkl, cell)
    assert torch.allclose(back, f, atol=1e-9 * float(f.abs().max()))


# --- the evaluate command (a tiny stored dataset and an untrained network) --------------------------------------


@pytest.fixture(scope="module")
def stored(tmp_path_factory):
    pytest.importorskip("h5py")
    from patterson.datasets import generate, make_config
    from patterson.models import model_config, model_from_config
    from patterson.networks.checkpoint import FORMAT, FORMAT_VERSION, save_checkpoint

    folder = tmp_path_factory.mktemp("stored")
    common = dict(kind="random", source="random", n_atoms=6, cell=(10.0,) * 3, d_min=2.0, map_dtype="float32")
    generate(make_config(n=8, splits=(0.5, 0.25, 0.25), **common), folder / "ds", progress=False)
    generate(make_config(n=4, splits=(1.0, 0.0, 0.0), **common), folder / "train_only", progress=False)
    torch.manual_seed(0)
    model = model_from_config(model_config("patterson-unet", c1=4, c2=4, n_blocks=1))
    state = {"format": FORMAT, "format_version": FORMAT_VERSION, "model_config": model.config.to_dict()}
    save_checkpoint(folder / "tiny.pt", state | {"model": model.state_dict()})
    return folder


def test_evaluate_command_scores_a_checkpoint(stored, capsys) -> None:
    out = stored / "report"
    args = ["evaluate", "--checkpoint", str(stored / "tiny.pt"), "--data", str(stored / "ds"), "--out", str(out)]
    assert main([*args, "--split", "all", "--no-plots"]) == 0
    assert "median CC (aligned)" in capsys.readouterr().out
    m = json.loads((out / "metrics.json").read_text())
    assert set(m) == SCHEMA | {"peaks"} and m["n"] == 8 and m["method"] == "tiny"
    # an untrained network is no better than random phases
    assert m["phase_error_deg"]["median_weighted"] > 50.0 and m["chance"]["phase_error_deg"]["median_weighted"] > 50.0
    rows = list(csv.DictReader((out / "per_example.csv").open()))
    assert len(rows) == 8 and rows[0]["id"].startswith("train-") and "atoms_within_1.0A" in rows[0]


@pytest.mark.parametrize(
    "change, match",
    [
        ({"--data": "train_only"}, "no test examples"),
        ({"--data": "missing"}, "not a patterson dataset"),
        ({"--checkpoint": "missing.pt"}, "no such checkpoint"),
    ],
)
def test_evaluate_command_bad_input_is_one_line(stored, capsys, change, match) -> None:
    opts = {"--checkpoint": "tiny.pt", "--data": "ds", "--out": "bad"} | change
    argv = ["evaluate"] + [x for k, v in opts.items() for x in (k, str(stored / v))]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("patterson: error:") and match in err
    assert not (stored / "bad").exists()


@pytest.mark.parametrize("preset", ["paper-2", "dense-protein"])
def test_pretrained_evaluates_with_the_shipped_network_of_the_data(tmp_path, preset):
    """The shipped weights load, `--checkpoint pretrained` picks the one trained on the data's preset, and it beats
    the chance level on real chains it never saw (the embedded default)."""
    from patterson.cli import main
    from patterson.datasets import generate, make_config
    from patterson.networks import WEIGHTS_DIR

    if not (WEIGHTS_DIR / f"{preset}.pt").is_file():
        pytest.skip(f"no shipped {preset} weights")
    config = make_config(preset, source="embedded", n=8, splits=(0.0, 0.0, 1.0), map_dtype="float32", seed=5)
    generate(config, tmp_path / "ds", progress=False)
    argv = ["evaluate", "--checkpoint", "pretrained", "--data", str(tmp_path / "ds"), "--out", str(tmp_path / "ev")]
    assert main([*argv, "--no-plots"]) == 0
    metrics = json.loads((tmp_path / "ev" / "metrics.json").read_text())
    assert metrics["method"] == preset and metrics["n"] == 8
    assert metrics["cc_aligned"]["median"] > metrics["chance"]["cc_aligned"]["median"] + 0.1


def test_peak_search_on_thousands_of_maxima_stays_small():
    """A noise map has thousands of local maxima (the 20 GiB P × P array of #15); the greedy separation keeps
    memory bounded and still never keeps two peaks closer than min_separation."""
    import tracemalloc

    from patterson.evaluation.peaks import find_peaks

    cell = Cell(30.0, 32.0, 34.0, 80.0, 95.0, 100.0)
    rho = torch.as_tensor(np.random.default_rng(0).normal(size=(40, 42, 44)))
    tracemalloc.start()
    peaks = find_peaks(rho, cell, threshold=-10.0, min_separation=1.0, max_peaks=None)[0]
    _, peak_bytes = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert len(peaks) > 2000 and peak_bytes < 200e6
    d = frac_distances(peaks.frac[:400], peaks.frac[:400], cell) + 9 * np.eye(400)
    assert d.min() >= 1.0
