"""Classical phasing: charge flipping and HIO solve small P1 structures from amplitudes alone; the hybrid keeps a
true start solved; R separates solved from unsolved runs; bad amplitudes are refused."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from conftest import random_atoms
from patterson.cells import Cell
from patterson.errors import PattersonError
from patterson.evaluation import score_maps
from patterson.maps import density_from_f
from patterson.phasing import (
    FlipOptions,
    SupportOptions,
    charge_flip,
    hio,
    method_options,
    phase,
    refine_density,
    wilson_estimate,
)
from patterson.physics import AtomBatch, electron_count, grid_shape, miller_indices, structure_factors

CELL = Cell.cubic(10.0)
D_MIN = 1.0


@pytest.fixture(scope="module")
def problem():
    """Two 12-atom light-atom structures alone in a 10 Å cell, at atomic resolution (1 Å, B = 5 Å²)."""
    torch.manual_seed(0)
    structures = []
    for seed in (1, 2):
        atoms = random_atoms(Cell.cubic(5.0), 12, seed=seed, elements=["C", "N", "O"])
        structures.append(atoms.replace(xyz=atoms.xyz + 2.5, b_iso=np.full(12, 5.0), occ=np.ones(12)))
    batch = AtomBatch.from_atoms(structures, CELL)
    hkl = miller_indices(CELL, D_MIN)
    shape = grid_shape(CELL, D_MIN)
    f = structure_factors(batch, hkl)
    truth = density_from_f(f, hkl, CELL, shape)
    return batch, hkl, shape, f, truth


def weighted_phase_error(rho, truth) -> torch.Tensor:
    return score_maps(rho, truth, CELL, D_MIN).phase_error_weighted_deg


def test_hio_solves_from_random_starts(problem):
    batch, hkl, shape, f, truth = problem
    result = hio(f.abs(), hkl, CELL, shape, SupportOptions(n_iter=300, n_starts=2, seed=3), f000=electron_count(batch))
    error = weighted_phase_error(result.rho, truth)
    assert torch.all(error < 20), error
    assert torch.all(result.r_work < 0.1) and torch.all(result.r_free < 0.2)
    assert result.verdict == ("solved", "solved")
    assert result.rho.shape == truth.shape and result.phi_rad.shape == f.shape


@pytest.mark.parametrize("method", ["raar", "rrr"])
def test_raar_and_rrr_solve_from_random_starts(problem, method):
    batch, hkl, shape, f, truth = problem
    options = method_options(method, n_iter=300, n_starts=2, seed=3)
    result = phase(method, f.abs(), hkl, CELL, shape, options, f000=electron_count(batch))
    assert result.method == method and torch.all(weighted_phase_error(result.rho, truth) < 20)
    assert result.verdict == ("solved", "solved")
    with pytest.raises(PattersonError, match="unknown update scheme"):
        SupportOptions(n_iter=2, scheme="er")


def test_charge_flipping_solves_from_random_starts(problem):
    _, hkl, shape, f, truth = problem
    result = charge_flip(f.abs(), hkl, CELL, shape, FlipOptions(n_iter=400, n_starts=4, seed=1))
    error = weighted_phase_error(result.rho, truth)
    assert torch.all(error < 20), error


@pytest.mark.parametrize(
    "options",
    [{"amplitudes": "E"}, {"amplitudes": "sharpened"}, {"delta_fraction": 0.8}, {"polish": "lde"}],
    ids=["E-values", "sharpened", "delta-from-map", "lde-polish"],
)
def test_charge_flipping_options_solve_and_score_on_f(problem, options):
    _, hkl, shape, f, truth = problem
    result = charge_flip(f.abs(), hkl, CELL, shape, FlipOptions(n_iter=400, n_starts=4, seed=1, **options))
    assert torch.all(weighted_phase_error(result.rho, truth) < 25)
    assert torch.all(result.r_work < 0.25)  # R against F: the map comes back to F whatever was flipped


def test_convergence_is_seen_from_r_work_and_restarts_keep_the_budget(problem):
    from patterson.phasing.flipping import Convergence

    _, hkl, shape, f, truth = problem
    early = charge_flip(f.abs(), hkl, CELL, shape, FlipOptions(n_iter=400, n_starts=2, seed=1, stop_early=True))
    assert early.iterations < 400 and torch.all(weighted_phase_error(early.rho, truth) < 25)  # converged, stopped
    again = charge_flip(f.abs(), hkl, CELL, shape, FlipOptions(n_iter=200, n_starts=2, seed=1, restarts=3))
    assert again.iterations == 200 and torch.all(weighted_phase_error(again.rho, truth) < 40)  # both solved (< 40°)
    watch = Convergence(2, 30, torch.Generator().manual_seed(0), restart=True)
    flat, drop = torch.full((2,), 0.5), torch.tensor([0.5, 0.2])
    restarted = [watch.update(flat, flat if i < 26 else drop) for i in range(30)]
    assert restarted[-1].tolist() == [True, False]  # only the start that never dropped below 0.7 × its plateau


@pytest.mark.parametrize("amplitudes", ["E", "sharpened"])
def test_hio_with_normalised_amplitudes_solves(problem, amplitudes):
    batch, hkl, shape, f, truth = problem
    options = SupportOptions(n_iter=300, n_starts=2, seed=3, amplitudes=amplitudes)
    result = hio(f.abs(), hkl, CELL, shape, options, f000=electron_count(batch))
    assert torch.all(weighted_phase_error(result.rho, truth) < 25) and result.verdict == ("solved", "solved")


def test_e_values_are_flat_over_resolution_and_centric_phases_are_0_or_pi(problem):
    from patterson.phasing import normalised_amplitudes
    from patterson.physics import resolution_shells

    _, hkl, shape, f, _ = problem
    e = normalised_amplitudes(f.abs(), hkl, CELL, "E")
    shell, _ = resolution_shells(CELL.d_spacing(hkl), 5)
    means = [float((e[:, shell == s] ** 2).mean()) for s in range(5)]
    assert means == pytest.approx([1.0] * 5, rel=0.1)  # ⟨E²⟩ = 1 in every shell: the fall-off is gone
    res = charge_flip(f.abs(), hkl, CELL, shape, FlipOptions(n_iter=20, n_starts=1, seed=1, centric=True))
    assert torch.all(torch.abs(torch.sin(res.phi_rad)) < 1e-6)  # ρ(x) = ρ(−x): F real
    with pytest.raises(PattersonError, match="unknown amplitudes"):
        normalised_amplitudes(f.abs(), hkl, CELL, "U")


def test_missing_reflections_float_instead_of_being_held_at_zero(problem):
    """20% of the amplitudes missing (stored as zeros): left free, both methods still solve and give the missing
    reflections phases near the truth; held at zero (observed everywhere), the map is worse."""
    batch, hkl, shape, f, truth = problem
    keep = torch.rand(f.shape, generator=torch.Generator().manual_seed(5)) >= 0.2
    amp = f.abs() * keep
    for method in ("hio", "charge-flip"):
        options = method_options(method, n_iter=400, n_starts=4, seed=1)
        free = phase(method, amp, hkl, CELL, shape, options, f000=electron_count(batch))
        held = phase(method, amp, hkl, CELL, shape, options, f000=electron_count(batch), observed=torch.ones_like(keep))
        assert torch.all(weighted_phase_error(free.rho, truth) < 20), method
        assert weighted_phase_error(free.rho, truth).mean() < weighted_phase_error(held.rho, truth).mean(), method
        assert torch.all(free.r_work < 0.2), method  # R over the measured reflections only


def test_hybrid_started_from_the_truth_stays_solved(problem):
    batch, hkl, shape, f, truth = problem
    for method in ("hio", "charge-flip"):
        options = method_options(method, n_iter=50)
        result = refine_density(truth, f.abs(), hkl, CELL, method, options, f000=electron_count(batch))
        assert torch.all(weighted_phase_error(result.rho, truth) < 10), method


def test_r_free_separates_solved_from_unsolved(problem):
    batch, hkl, shape, f, truth = problem
    solved = refine_density(truth, f.abs(), hkl, CELL, "hio", SupportOptions(n_iter=30), f000=electron_count(batch))
    scrambled = SupportOptions(n_iter=2, n_starts=1, n_polish=0)
    unsolved = hio(f.abs(), hkl, CELL, shape, scrambled, f000=electron_count(batch))
    assert torch.all(weighted_phase_error(unsolved.rho, truth) > 45)
    assert solved.r_free.max() < 0.5 * unsolved.r_free.min()
    assert set(solved.verdict) == {"solved"} and "solved" not in unsolved.verdict


def test_wilson_estimate_finds_atom_count_and_b(problem):
    _, hkl, _, f, _ = problem
    n_atoms, b_iso = wilson_estimate(f.abs(), hkl, CELL)
    assert torch.all((n_atoms > 12) & (n_atoms < 24)), n_atoms  # 12 C/N/O atoms ≈ 16.6 carbons by Σf²
    assert torch.all((b_iso > 1) & (b_iso < 15)), b_iso  # B = 5 Å²


@pytest.mark.parametrize(
    "bad, message",
    [
        ("nan", "NaN"),
        ("negative", "negative"),
        ("empty", "empty reflection list"),
        ("zero", "all amplitudes are zero"),
        ("too fine", "finer than the grid"),
    ],
)
def test_bad_amplitudes_are_refused(problem, bad, message):
    _, hkl, shape, f, _ = problem
    amp = f.abs().clone()
    if bad == "nan":
        amp[0, 3] = float("nan")
    elif bad == "negative":
        amp[1, 5] = -1.0
    elif bad == "empty":
        hkl, amp = hkl[:0], amp[:, :0]
    elif bad == "zero":
        amp = torch.zeros_like(amp)
    elif bad == "too fine":
        shape = grid_shape(CELL, 2.0)
    with pytest.raises(PattersonError, match=message):
        hio(amp, hkl, CELL, shape, SupportOptions(n_iter=2))


def test_evaluate_command_scores_classical_methods(tmp_path, capsys, monkeypatch):
    from patterson.cli import main
    from patterson.datasets import generate, make_config
    from patterson.networks import checkpoint as checkpoint_module

    config = make_config("paper-2", source="embedded", n=6, splits=(0.5, 0.0, 0.5), map_dtype="float32", seed=3)
    generate(config, tmp_path / "ds", progress=False)
    out = tmp_path / "report"
    argv = ["evaluate", "--method", "hio", "--data", str(tmp_path / "ds"), "--out", str(out), "--limit", "2"]
    assert main([*argv, "--n-iter", "150", "--no-plots"]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["method"] == "hio" and metrics["n"] == 2
    # clean data in a mostly empty cell: HIO solves both, far from the chance level
    assert metrics["solved_fraction"] == 1.0 and metrics["chance"]["solved_fraction"] == 0.0
    assert metrics["phase_error_deg"]["median_weighted"] < metrics["chance"]["phase_error_deg"]["median_weighted"] - 40
    assert main(["evaluate", "--method", "hybrid", "--data", str(tmp_path / "ds"), "--out", str(tmp_path / "x")]) == 2
    assert "needs --checkpoint" in capsys.readouterr().err
    # names resolve through the shipped weights (here: none): a clear one-line error, no report folder
    monkeypatch.setattr(checkpoint_module, "WEIGHTS_DIR", tmp_path / "no-weights")
    for name, message in (("pretrained", "no pretrained model is shipped"), ("paper-9", "no checkpoint named")):
        argv = ["evaluate", "--checkpoint", name, "--data", str(tmp_path / "ds"), "--out", str(tmp_path / "y")]
        assert main(argv) == 2
        assert message in capsys.readouterr().err and not (tmp_path / "y").exists()
