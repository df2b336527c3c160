"""Density-modification pairs from peptide crystals of many cells: crops of each crystal's own periodic maps."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from patterson.cells import Cell
from patterson.datasets import StoredDataset, generate, make_config
from patterson.datasets.crystal_pairs import CropCorruption, CrystalPhaseErrorMaps
from patterson.errors import PattersonError
from patterson.maps import density_from_f
from patterson.physics import grid_shape, miller_indices
from patterson.training import TrainConfig, train
from patterson.training.data import BatchSource, open_data

EXACT = CropCorruption(model_share=0.0, error_deg=(0.0, 0.0), floating=0.0)  # the measured amplitudes, true phases
RANDOM = CropCorruption(model_share=0.0, error_deg=(180.0, 180.0), floating=0.0)
WHOLE_MODEL = CropCorruption(model_share=1.0, keep=(1.0, 1.0), shift_a=(0.0, 0.0), b_model=(15.0, 15.0), floating=0.0)


@pytest.fixture(scope="module")
def crystals(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("pairs") / "ds"
    generate(make_config("peptide-crystal", n=4, splits=(0.5, 0.5, 0.0), seed=15, d_min_range=(1.8, 2.0),
                         grid=(32, 32, 32)), out, progress=False)  # fmt: skip
    return out


def cc(x: torch.Tensor, y: torch.Tensor) -> float:
    return float(torch.corrcoef(torch.stack([x.flatten(), y.flatten()]))[0, 1])


def test_crops_of_the_true_phases_match_the_target_and_random_phases_do_not(crystals):
    rng = np.random.default_rng(0)
    exact = CrystalPhaseErrorMaps(crystals, "train", crop=20, corruption=EXACT, batch_size=6).batch(rng)
    assert exact["input"].shape == (6, 1, 20, 20, 20) and exact["target"].shape == (6, 1, 20, 20, 20)  # 2 crystals
    assert min(cc(x, y) for x, y in zip(exact["input"], exact["target"], strict=True)) > 0.85
    noise = CrystalPhaseErrorMaps(crystals, "train", crop=20, corruption=RANDOM, batch_size=6).batch(rng)
    assert max(cc(x, y) for x, y in zip(noise["input"], noise["target"], strict=True)) < 0.5
    model = CrystalPhaseErrorMaps(crystals, "train", crop=20, corruption=WHOLE_MODEL, batch_size=6).batch(rng)
    assert np.median([cc(x, y) for x, y in zip(model["input"], model["target"], strict=True)]) > 0.8


def test_a_crop_is_the_periodic_map_wrapped_across_the_cells_edges(crystals):
    pairs = CrystalPhaseErrorMaps(crystals, "train", crop=40, corruption=EXACT)  # longer than a short axis
    for i in range(len(pairs)):
        cell, d = Cell(*pairs.cells[i]), float(pairs.d_min[i])
        shape = grid_shape(cell, d, d / pairs.spacing)
        x, y = pairs.example(i, np.random.default_rng(i))
        for axis, n in enumerate(shape):
            if n < 40:  # the crop holds the cell's repeat along this axis
                assert torch.allclose(x.narrow(axis, 0, 40 - n), x.narrow(axis, n, 40 - n), atol=1e-6)
                assert torch.allclose(y.narrow(axis, 0, 40 - n), y.narrow(axis, n, 40 - n), atol=1e-6)
    m = int(pairs.n_refl[0])
    cell, d = Cell(*pairs.cells[0]), float(pairs.d_min[0])
    g = StoredDataset(crystals, "train", normalise=False)[0]
    f = g["f_obs"][:m] * np.exp(1j * np.angle(g["f_calc"][:m]))  # measured, true phases
    shape = grid_shape(cell, d, d / pairs.spacing)
    whole = density_from_f(torch.as_tensor(f)[None], miller_indices(cell, d), cell, shape)[0]
    x, _ = pairs.example(0, np.random.default_rng(0))
    assert abs(float(x.std()) - 1.0) < 0.5 and x.abs().max() <= whole.abs().max() / whole.std() + 1e-6


def test_the_trainer_learns_the_step_from_crystal_crops(crystals, tmp_path):
    train_data, val = open_data(str(crystals), task="density-modification")
    assert isinstance(train_data, CrystalPhaseErrorMaps) and len(val) == 64
    assert BatchSource(train_data).grid == (24, 24, 24)
    config = TrainConfig(task="density-modification", model="density-modifier",
                         model_options={"channels": 4, "n_blocks": 1}, data=str(crystals), epochs=1, max_batches=1,
                         batch_size=2, lr=1e-3, schedule="constant", progress=False, device="cpu")  # fmt: skip
    train(config, tmp_path / "run")
    assert (tmp_path / "run" / "checkpoints" / "best.pt").is_file()


def test_crystal_pairs_need_a_dataset_of_crystals(tmp_path):
    flat = tmp_path / "flat"
    generate(make_config("dense-protein", source="embedded", n=4, d_min=3.0, sample_rate=3.0,
                         splits=(0.5, 0.5, 0.0)), flat, progress=False)  # fmt: skip
    with pytest.raises(PattersonError, match="peptide-crystal dataset"):
        CrystalPhaseErrorMaps(flat, "train")


def test_recycling_is_refused_for_crystals_of_many_cells(crystals):
    with pytest.raises(PattersonError, match="one cell"):
        open_data(str(crystals), task="density-modification", recycle_from="density-modifier")
