"""benchmarks/cell_transfer.py's core on a tiny source with an untrained tiny network: held-out entries, JSON schema,
numbers in range, the Markdown table."""

from __future__ import annotations

import importlib.util
import json
import math
from pathlib import Path

import pytest

from fragment_sources import write_source
from patterson.datasets import generate, make_config

ROOT = Path(__file__).resolve().parents[1]


def load_benchmark():
    spec = importlib.util.spec_from_file_location("cell_transfer_benchmark", ROOT / "benchmarks" / "cell_transfer.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def tiny_checkpoint(path: Path, train_config, train_path: Path) -> Path:
    from patterson.models.configs import PattersonUNetConfig
    from patterson.models.registry import model_from_config
    from patterson.networks import save_checkpoint

    config = PattersonUNetConfig(c1=4, c2=4, n_blocks=1, encoder_kernel=3, block_kernel=3, decoder_kernel=3)
    dataset = json.loads(train_config.to_json())
    return save_checkpoint(
        path,
        {
            "format": "patterson-checkpoint",
            "format_version": 1,
            "model_config": config.to_dict(),
            "model": model_from_config(config).state_dict(),
            "normalisation": {"input": 100.0, "target": 4.0},
            "data": {"train": {"input_shape": [1, 24, 24, 24], "dataset": dataset, "path": str(train_path)}},
        },
    )


def test_cell_transfer_benchmark_core(tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(ROOT / "benchmarks"))  # as `python benchmarks/cell_transfer.py` has it: _common
    ct = load_benchmark()
    source = write_source(tmp_path / "pdb", entries=6, chains=1, residues=9)
    train = make_config("paper-2", source=str(source), n=8, seed=0, splits=(0.5, 0.25, 0.25), map_dtype="float32")
    generate(train, tmp_path / "train", progress=False)  # the "training set": its train split must share no entry
    ckpt = tiny_checkpoint(tmp_path / "tiny.pt", train, tmp_path / "train")
    cells = {"12 Å cubic": ct.CELLS["12 Å cubic (training)"], "triclinic": ct.CELLS["11×12×13, 80/95/100° (triclinic)"]}
    messages = []
    results = ct.run_benchmark(
        str(ckpt), str(source), cells, n=2, workdir=tmp_path / "work", n_iter=5, hio_starts=1, log=messages.append
    )
    json.loads(json.dumps(results))  # JSON-serialisable as written
    assert results["held_out"]["entries"] and results["held_out"]["training_data_check"] == {
        "checked": True,
        "path": str(tmp_path / "train"),
        "shared_entries": 0,
    }
    for key in ("run", "wall_s", "checkpoint", "training", "solved_threshold_deg"):
        assert key in results
    assert {"platform", "torch_threads", "patterson", "date", "command"} <= set(results["run"])
    assert results["training"]["grid"] == [24, 24, 24] and results["training"]["spacing"] == pytest.approx(0.5)
    assert [r["name"] for r in results["cells"]] == list(cells) and len(messages) == 1 + len(cells)

    def check(v: dict) -> None:
        assert -1 <= v["median_cc_aligned"] <= 1 and 0 <= v["median_phase_error_weighted_deg"] <= 180
        assert 0 <= v["solved_fraction"] <= 1 and v["seconds_per_structure"] >= 0

    for row in results["cells"]:
        assert row["n"] == 2 and len(row["cell"]) == 6
        check(row["chance"])
        check(row["hio"])
        assert set(row["transfers"]) == {"convolve", "resample"}
        for name, v in row["transfers"].items():
            for key in ("network", "network_training_scale", "hybrid"):
                check(v[key])
            assert len(v["network"]["cc_aligned"]) == 2 and v["held_fraction"] == pytest.approx(1.0)
            assert 0 <= v["solve"]["solved_fraction"] <= 1 and 0 <= v["solve"]["network_run_kept"] <= 1
            assert v["grid"] == ([24, 24, 24] if name == "resample" or row["name"] == "12 Å cubic" else [22, 24, 26])
        for p in row["resample_vs_convolve"].values():
            assert math.isfinite(p["median_cc_difference"]) and 0 <= p["better_fraction"] <= 1
    same = results["cells"][0]["resample_vs_convolve"]["origin"]  # the training cell: both transfers are one grid
    assert same["median_cc_difference"] == pytest.approx(0.0, abs=1e-6)
    text = ct.render(results)
    assert "| 12 Å cubic |" in text and "| triclinic |" in text and "resample − convolve" in text


def test_convolve_grid_keeps_the_training_spacing():
    from patterson.cells import Cell
    from patterson.solving import model_grid

    assert model_grid(Cell.cubic(12.0), 0.5) == (24, 24, 24)
    assert model_grid(Cell.cubic(13.0), 0.5) == (26, 26, 26)  # not 30 (FFT-friendly): 0.43 Å voxels
    assert model_grid(Cell(10.0, 11.0, 14.0, 80.0, 95.0, 100.0), 0.5) == (20, 22, 28)
