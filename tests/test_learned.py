"""The learned real-space step and the phasing loop around it (``--method learned``, and the histogram control)."""

from __future__ import annotations

import subprocess
import sys
import time

import numpy as np
import pytest
import torch

from patterson.datasets import Augmentation, PhaseErrorMaps, StoredDataset, generate, make_config
from patterson.errors import PattersonError
from patterson.evaluation import score_maps
from patterson.models import build_model
from patterson.networks import load_checkpoint, task_of
from patterson.phasing import (
    LearnedOptions,
    NetworkStep,
    learned,
    learned_step,
    load_split,
    load_step,
    start_error_phases,
)
from patterson.training import TrainConfig, train


@pytest.fixture(scope="module")
def dense(tmp_path_factory) -> str:
    """A small packed-cell dataset (dense-protein at 3 Å on a 12³ grid) from the embedded chains."""
    folder = tmp_path_factory.mktemp("dense") / "ds"
    config = make_config(
        "dense-protein", source="embedded", n=48, d_min=3.0, sample_rate=3.0, splits=(0.75, 0.125, 0.125), seed=2
    )
    generate(config, folder, progress=False)
    return str(folder)


@pytest.fixture(scope="module")
def trained(dense, tmp_path_factory) -> str:
    """A density-modification network trained for a few seconds with the project's trainer."""
    out = tmp_path_factory.mktemp("run")
    config = TrainConfig(
        task="density-modification", model="density-modifier", model_options={"channels": 8, "n_blocks": 2},
        data=dense, epochs=3, max_batches=25, batch_size=8, grad_accum=1, lr=3e-3, schedule="constant",
        progress=False, device="cpu",
    )  # fmt: skip
    train(config, out)
    return str(out / "checkpoints" / "best.pt")


def test_density_modifier_commutes_with_shifts_and_scale():
    torch.manual_seed(0)
    model = build_model("density-modifier", channels=4, n_blocks=2)
    for p in model.head.parameters():  # leave the identity start: a generic network
        torch.nn.init.normal_(p, std=0.1)
    x = torch.randn(2, 1, 12, 12, 12)
    with torch.no_grad():
        y = model(x)
        shifted = model(torch.roll(x, shifts=(3, -5, 7), dims=(2, 3, 4)))
        scaled = model(4.0 * x + 1.5)
    assert torch.allclose(shifted, torch.roll(y, shifts=(3, -5, 7), dims=(2, 3, 4)), atol=1e-5)
    assert torch.allclose(scaled, 4.0 * y + 1.5, atol=1e-4)
    fresh = build_model("density-modifier", channels=4, n_blocks=2)
    assert torch.allclose(fresh(x), x, atol=1e-5)  # a new network is the identity step


def test_phase_error_pairs(dense):
    clean = Augmentation(shift=True, rotate=False)  # no noise, nothing missing
    exact = PhaseErrorMaps(dense, "train", error_deg=(0, 0), floating=0.0, augment=clean, batch_size=4)
    item = exact.batch(np.random.default_rng(0))
    x, y = item["input"], item["target"]
    assert x.shape == y.shape == (4, 1, 12, 12, 12)
    assert torch.allclose(x, y, atol=1e-5)  # no error: the input is the truth
    assert torch.allclose(x.flatten(1).std(-1), torch.ones(4), atol=1e-3)  # in units of the input's r.m.s.
    wrong = PhaseErrorMaps(dense, "train", error_deg=(180, 180), batch_size=4).batch(np.random.default_rng(0))
    cc = torch.nn.functional.cosine_similarity(wrong["input"].flatten(1), wrong["target"].flatten(1))
    assert cc.abs().max() < 0.5  # random phases


def test_trained_step_lowers_the_phase_error_of_held_out_maps(dense, trained):
    assert task_of(load_checkpoint(trained)) == "density-modification"
    step = load_step(trained)
    data = load_split(StoredDataset(dense, "test", normalise=False))
    gen = torch.Generator().manual_seed(1)
    f_true = torch.as_tensor(np.stack([_f(data, i) for i in range(len(data))]))
    phi = start_error_phases(f_true, 40.0, gen)
    from patterson.maps import density_from_f

    rho = density_from_f(torch.polar(data.f_obs * data.work, phi), data.hkl, data.cell, data.shape)
    before = score_maps(rho, data.truth, data.cell, data.d_min).phase_error_weighted_deg
    after = score_maps(step(rho), data.truth, data.cell, data.d_min).phase_error_weighted_deg
    assert after.mean() < before.mean() - 2.0, (before.mean(), after.mean())


def _f(data, i):
    from patterson.maps import f_from_density

    return f_from_density(data.truth[i : i + 1], data.hkl, data.cell)[0].numpy()


def test_loop_from_true_phases_stays_solved(dense, trained):
    data = load_split(StoredDataset(dense, "test", normalise=False))
    f_true = torch.as_tensor(np.stack([_f(data, i) for i in range(len(data))]))
    res = learned(data.f_obs, data.hkl, data.cell, data.shape, load_step(trained), LearnedOptions(n_iter=10),
                  f000=data.f000, phi_start=torch.angle(f_true), observed=data.measured, free=data.free)  # fmt: skip
    err = score_maps(res.rho, data.truth, data.cell, data.d_min).phase_error_weighted_deg
    assert (err < 40).all(), err
    assert res.method == "learned" and len(res.verdict) == len(data)


def test_a_timed_loop_runs_cycles_until_its_seconds_are_spent(dense):
    data = load_split(StoredDataset(dense, "test", normalise=False), limit=1)
    calls = []

    def step(rho: torch.Tensor) -> torch.Tensor:  # the identity step, counted
        calls.append(time.perf_counter())
        return rho

    options = LearnedOptions(n_iter=1, n_finish=0, n_starts=1, max_seconds=0.3)
    t = time.perf_counter()
    res = learned(data.f_obs, data.hkl, data.cell, data.shape, step, options, observed=data.measured, free=data.free)
    assert time.perf_counter() - t >= 0.3 and len(calls) > 1 and calls[-1] - t < 0.3 + 1.0
    assert res.iterations == len(calls)  # the cycles run, not n_iter
    calls.clear()
    res = learned(data.f_obs, data.hkl, data.cell, data.shape, step, options.replace(max_seconds=0.0, n_iter=3),
                  observed=data.measured, free=data.free)  # fmt: skip
    assert len(calls) == 3 and res.iterations == 3
    with pytest.raises(PattersonError, match="max_seconds"):
        LearnedOptions(max_seconds=-1.0)


@pytest.mark.parametrize("step", ["histogram", "network"])
def test_free_set_is_never_imposed(dense, trained, step):
    data = load_split(StoredDataset(dense, "test", normalise=False), limit=2)
    step = load_step(trained) if step == "network" else "histogram"
    options = LearnedOptions(n_iter=5, n_finish=5, n_starts=2, select="all")
    common = dict(f000=data.f000, observed=data.measured, free=data.free)
    a = learned(data.f_obs, data.hkl, data.cell, data.shape, step, options, **common)
    poked = torch.where(data.free, data.f_obs * 50 + 7, data.f_obs)
    b = learned(poked, data.hkl, data.cell, data.shape, step, options, **common)
    assert torch.equal(a.rho, b.rho)  # every start's map: bit for bit the same
    assert not torch.equal(a.r_free, b.r_free)  # only R-free (the choice between starts) reads the free set


def test_wrong_kind_of_checkpoint_is_one_line(dense, tmp_path):
    run = tmp_path / "patterson-run"
    config = TrainConfig(model="hurwitz-cnn", model_options={"channels": 2, "n_layers": 2, "kernel": 3}, data=dense,
                         epochs=1, max_batches=1, batch_size=4, progress=False, device="cpu")  # fmt: skip
    train(config, run)
    ckpt = run / "checkpoints" / "best.pt"
    with pytest.raises(PattersonError, match="density-modification network"):
        load_step(ckpt)
    with pytest.raises(PattersonError, match="patterson train"):
        learned_step(None, {"preset": "dense-protein"}, weights_dir=tmp_path / "none")
    out = subprocess.run(
        [sys.executable, "-m", "patterson", "evaluate", "--method", "learned", "--checkpoint", str(ckpt),
         "--data", dense, "--out", str(tmp_path / "ev")],
        capture_output=True, text=True,
    )  # fmt: skip
    assert out.returncode == 2
    assert out.stderr.strip().count("\n") == 0 and "density-modification" in out.stderr
    assert not (tmp_path / "ev").exists()


def test_evaluate_learned_and_control(dense, trained, tmp_path):
    for method, extra in (("learned", ["--checkpoint", trained]), ("histogram", [])):
        out = subprocess.run(
            [sys.executable, "-m", "patterson", "evaluate", "--method", method, "--data", dense, "--n-iter", "5",
             "--out", str(tmp_path / method), "--no-plots", *extra],
            capture_output=True, text=True,
        )  # fmt: skip
        assert out.returncode == 0, out.stderr
        assert "verdict:" in out.stdout
        assert (tmp_path / method / "metrics.json").is_file()


def test_network_step_batches():
    model = build_model("density-modifier", channels=4, n_blocks=1)
    rho = torch.randn(5, 12, 12, 12, dtype=torch.float64)
    out = NetworkStep(model, batch_size=2)(rho)
    assert out.dtype == torch.float64 and out.shape == rho.shape
    assert torch.allclose(out, rho, atol=1e-5)


def test_recycling_stage_trains_on_the_loops_own_iterates(dense, trained, tmp_path):
    from patterson.training.data import RecycledPairs, open_data

    train_data, _ = open_data(dense, task="density-modification", recycle_from=trained)
    assert isinstance(train_data, RecycledPairs)
    item = train_data.batch(np.random.default_rng(0))
    assert item["input"].shape == item["target"].shape and torch.isfinite(item["input"]).all()
    config = TrainConfig(
        task="density-modification", model="density-modifier", model_options={"channels": 8, "n_blocks": 2},
        data=dense, recycle_from=trained, init_from=trained, epochs=1, max_batches=2, batch_size=8,
        progress=False, device="cpu",
    )  # fmt: skip
    train(config, tmp_path / "stage2")
    state = load_checkpoint(tmp_path / "stage2" / "checkpoints" / "last.pt")
    assert state["data"]["train"]["dataset"]["recycled"]["iterations"] >= 1
