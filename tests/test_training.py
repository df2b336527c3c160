"""The trainer on real Patterson/density pairs made from random atoms with the physics core (12³ grids, tiny nets)."""

from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
import torch

import patterson
from patterson.cli import main
from patterson.errors import PattersonError
from patterson.models import build_model
from patterson.networks import export_weights, find_checkpoint, load_checkpoint, load_model, save_checkpoint
from patterson.training import (
    RandomAtomSpec,
    TrainConfig,
    Trainer,
    apply_overrides,
    load_config,
    lr_factor,
    lr_find,
    random_atom_splits,
    read_metrics,
    train,
)

DATA = "random:n=16,cell=12,d_min=3,atoms=5,seed=3,val=4"  # 12³ maps
TINY_UNET = ["model.c1=4", "model.c2=4", "model.n_blocks=1"] + [
    f"model.{k}_kernel=3" for k in ("encoder", "block", "decoder")
]
TINY_CNN = ["model.channels=4", "model.n_layers=2", "model.kernel=3"]
QUICK = ["batch_size=4", "grad_accum=2", "lr=3e-3", "progress=false"]


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Tiny nets: one intra-op thread is as fast and far steadier on a shared 2-core machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def splits():
    return random_atom_splits(RandomAtomSpec(n=16, cell=12.0, d_min=3.0, atoms=5, seed=3), n_val=4)


def _config(model: str, *sets: str, epochs: int = 2) -> TrainConfig:
    return load_config(None, [*QUICK, f"epochs={epochs}", *sets], model=model, data=DATA)


def _tensors(obj, prefix=""):
    """Flatten nested dicts/lists of a checkpoint into {path: tensor or value}."""
    if isinstance(obj, dict):
        return {k: v for key, val in obj.items() for k, v in _tensors(val, f"{prefix}{key}/").items()}
    if isinstance(obj, list | tuple):
        return {k: v for i, val in enumerate(obj) for k, v in _tensors(val, f"{prefix}{i}/").items()}
    return {prefix: obj}


def _assert_same_state(a: dict, b: dict) -> None:
    for part in ("model", "optimizer", "scheduler"):
        ta, tb = _tensors(a[part]), _tensors(b[part])
        assert ta.keys() == tb.keys()
        for key in ta:
            if isinstance(ta[key], torch.Tensor):
                assert torch.equal(ta[key], tb[key]), f"{part} {key} differs"
            else:
                assert ta[key] == tb[key], f"{part} {key} differs"


# --- the trainer learns ----------------------------------------------------------------------------------------


def test_trainer_overfits_a_small_batch(splits):
    train_set, _ = splits
    few = [train_set[i] for i in range(4)]
    cfg = load_config(
        None,
        ["epochs=80", "batch_size=4", "grad_accum=1", "lr=3e-3", "schedule=constant", "progress=false"]
        + ["model.grid=[12, 12, 12]", "model.hidden=[128]"],
        model="mlp",
    )
    trainer = Trainer(cfg, few, few)  # validate on the same maps
    first = trainer.train_epoch(0)["train_loss"]
    trainer.epoch = 1
    result = trainer.fit()
    baseline = float(np.mean([float((y**2).mean()) for _, y in few]))  # MSE of predicting zeros
    assert first > baseline
    assert result.metrics["train_loss"] < 0.01 * baseline
    assert result.metrics["val_cc_median"] > 0.99 and result.metrics["val_cc_aligned_median"] > 0.99


def test_run_folder_checkpoints_and_metrics(tmp_path, splits):
    cfg = _config("patterson-unet", *TINY_UNET, "loss=invariant")  # origin- and hand-invariant loss
    result = train(cfg, tmp_path / "run", data=splits)
    ckpt = tmp_path / "run" / "checkpoints"
    assert sorted(p.name for p in ckpt.iterdir()) == ["best.pt", "epoch-001.pt", "epoch-002.pt", "last.pt"]
    state = torch.load(ckpt / "last.pt", weights_only=True)
    assert state["package_version"] == patterson.__version__
    assert state["model_config"] == cfg.model_config().to_dict()
    assert state["epoch"] == 2 and state["step"] == 4  # 16 maps / batch 4 = 4 micro-batches, accumulation 2
    assert state["normalisation"] == splits[0].normalisation
    assert set(state["rng"]) >= {"torch", "numpy", "python"} and state["sampler"]["epoch"] == 2
    rows = read_metrics(tmp_path / "run" / "metrics.jsonl")
    assert [r["epoch"] for r in rows] == [1, 2]
    for key in ("train_loss", "val_loss", "val_cc_mean", "val_cc_median", "val_cc_aligned_median", "lr"):
        assert all(np.isfinite(r[key]) for r in rows)
    assert all(r["val_cc_aligned_mean"] >= r["val_cc_mean"] - 1e-6 for r in rows)  # alignment can only help
    assert (tmp_path / "run" / "metrics.csv").read_text().splitlines()[0].startswith("epoch,step,train_loss")
    # the best checkpoint rebuilds the network and predicts like the trained one
    model = load_model(ckpt / f"epoch-{result.best['epoch']:03d}.pt")
    x = splits[1][0][0][None]  # (1, 1, 12, 12, 12)
    again = load_model(ckpt / "best.pt")
    assert torch.equal(model(x), again(x))


# --- resume ---------------------------------------------------------------------------------------------------


class DyingMaps:
    """The same maps, but the process 'dies' (raises) at the n-th item read: a kill in the middle of an epoch."""

    def __init__(self, data, die_at: int) -> None:
        self.data, self.die_at, self.reads = data, die_at, 0

    def __len__(self) -> int:
        return len(self.data)

    def __getitem__(self, i):
        self.reads += 1
        if self.reads == self.die_at:
            raise KeyboardInterrupt("killed")
        return self.data[i]


def test_resume_continues_bit_for_bit(tmp_path, splits):
    train_set, val_set = splits
    cfg = _config("patterson-unet", *TINY_UNET, "checkpoint_every=1", "grad_accum=1", epochs=2)
    train(cfg, tmp_path / "full", data=splits)
    # 1 epoch, then resume to 2 (the --set epochs=N path)
    train(cfg.replace(epochs=1), tmp_path / "split", data=splits)
    train(cfg, tmp_path / "split", resume=True, data=splits)
    # killed mid-epoch 2, after 2 of its 4 steps (reads: 1 probe + 16 in epoch 1 + 8, dies at the next), resumed
    dying = DyingMaps(train_set, die_at=1 + 16 + 8 + 1)
    with pytest.raises(KeyboardInterrupt):
        train(cfg, tmp_path / "killed", data=(dying, val_set))
    mid = load_checkpoint(tmp_path / "killed" / "checkpoints" / "last.pt")
    assert (mid["epoch"], mid["batch_in_epoch"]) == (1, 2)
    train(cfg, tmp_path / "killed", resume=True, data=splits)

    full = load_checkpoint(tmp_path / "full" / "checkpoints" / "last.pt")
    curve = [r["train_loss"] for r in read_metrics(tmp_path / "full" / "metrics.jsonl")]
    for name in ("split", "killed"):
        other = load_checkpoint(tmp_path / name / "checkpoints" / "last.pt")
        _assert_same_state(full, other)
        assert [r["train_loss"] for r in read_metrics(tmp_path / name / "metrics.jsonl")] == curve


# --- distributed ----------------------------------------------------------------------------------------------


def test_ddp_two_cpu_processes_match_one(tmp_path, splits):
    """torchrun, gloo, 2 processes with batch 2 each == 1 process with batch 4 (hurwitz-cnn: no BatchNorm)."""
    sets = [*QUICK, "epochs=2", *TINY_CNN]
    one = train(load_config(None, sets, model="hurwitz-cnn", data=DATA), tmp_path / "one")
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_PORT")}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2"]
    cmd += ["-m", "patterson", "train", "--data", DATA, "--model", "hurwitz-cnn", "--out", str(tmp_path / "two")]
    cmd += [arg for s in sets for arg in ("--set", s)]
    # One retry: once in about a dozen full-suite runs a gloo rank aborted (SIGABRT) at launch on the shared
    # 2-core machine, and never in isolation (8 of 8 runs); both failures' stderr are shown if it happens twice.
    failures = []
    for _ in range(2):
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=120)
        if proc.returncode == 0:
            break
        failures.append(proc.stderr[-3000:])
        shutil.rmtree(tmp_path / "two", ignore_errors=True)
    assert proc.returncode == 0, "\n---\n".join(failures)
    a = load_checkpoint(one.last_checkpoint)["model"]
    b = load_checkpoint(tmp_path / "two" / "checkpoints" / "last.pt")["model"]
    assert a.keys() == b.keys()
    start = build_model("hurwitz-cnn", channels=4, n_layers=2, kernel=3).state_dict()
    for key in a:
        assert not torch.allclose(a[key], start[key])  # both trained ...
        torch.testing.assert_close(a[key], b[key], rtol=1e-4, atol=1e-6)  # ... to the same weights
    rows = read_metrics(tmp_path / "two" / "metrics.jsonl")
    assert [r["epoch"] for r in rows] == [1, 2]  # one writer: rank 0
    assert rows[-1]["val_maps"] == 4  # validation sharded over both ranks, gathered whole
    ref = read_metrics(tmp_path / "one" / "metrics.jsonl")
    assert rows[-1]["train_loss"] == pytest.approx(ref[-1]["train_loss"], rel=1e-4)


# --- stored datasets (patterson.datasets) ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def stored(tmp_path_factory):
    datasets = pytest.importorskip("patterson.datasets")
    pytest.importorskip("h5py")
    config = datasets.make_config(None, kind="random", source="random", n=40, n_atoms=6, d_min=3.0, chunk_size=20)
    out = tmp_path_factory.mktemp("ds") / "random12"
    datasets.generate(config, out, progress=False)
    return out


def test_train_on_stored_and_on_the_fly_data(tmp_path, stored, capsys):
    sets = [a for s in [*QUICK, *TINY_CNN, "epochs=1"] for a in ("--set", s)]
    assert main(["train", "--data", str(stored), "--model", "hurwitz-cnn", "--out", str(tmp_path / "a"), *sets]) == 0
    state = load_checkpoint(tmp_path / "a" / "checkpoints" / "last.pt")
    assert state["data"]["train"]["input_shape"] == [1, 12, 12, 12] and state["normalisation"]["input"] > 0
    assert state["data"]["train"]["entries"] == []  # random atoms: no source entry to keep out of a test set
    fly = [*sets, "--set", "on_the_fly=true", "--set", "max_batches=2"]
    for run in ("b", "c"):  # the augmented maps depend on (seed, epoch, batch, rank) only: same seed, same run
        assert main(["train", "--data", str(stored), "--model", "hurwitz-cnn", "--out", str(tmp_path / run), *fly]) == 0
    b, c = (load_checkpoint(tmp_path / r / "checkpoints" / "last.pt") for r in ("b", "c"))
    assert b["data"]["train"]["on_the_fly"] is True and b["step"] == 1
    assert b["normalisation"] == state["normalisation"]  # the stored dataset's constants, as the stored run has
    assert b["data"]["train"]["entries"] == [] and b["data"]["train"]["dataset"] == state["data"]["train"]["dataset"]
    _assert_same_state(b, c)
    assert not torch.equal(b["model"]["net.0.weight"], state["model"]["net.0.weight"])


# --- configs and schedules ------------------------------------------------------------------------------------


def test_config_from_toml_and_set(tmp_path):
    path = tmp_path / "cfg.toml"
    path.write_text('epochs = 7\nlr = 1e-3\namp = false\n[model]\nname = "paper-se"\nn_blocks = 2\n')
    cfg = load_config(path, ["epochs=3", "betas=0.8,0.95", "model.use_se=false", "optimizer=adam"])
    assert (cfg.epochs, cfg.lr, cfg.amp, cfg.betas, cfg.optimizer) == (3, 1e-3, False, (0.8, 0.95), "adam")
    assert cfg.model == "paper-se" and cfg.model_config().n_blocks == 2 and cfg.model_config().use_se is False
    assert cfg.model_config().c2 == 30  # the rest of the preset is kept
    paper = TrainConfig()
    assert (paper.optimizer, paper.lr, paper.weight_decay, paper.grad_accum, paper.clip) == (
        "adamw",
        1.2e-4,
        3e-2,
        4,
        1,
    )


def test_schedules():
    paper = TrainConfig()
    factors = [lr_factor(paper, e * 5 + 2, steps_per_epoch=5, total_steps=100) for e in range(13)]
    expected = [0.873**e for e in range(11)] + [0.873**10 * 0.9991, 0.873**10 * 0.9991**2]
    assert factors == pytest.approx(expected)
    one = TrainConfig(schedule="onecycle")
    curve = [lr_factor(one, s, steps_per_epoch=10, total_steps=100) for s in range(100)]
    assert curve[0] == pytest.approx(1 / 25) and max(curve) == pytest.approx(1.0) and curve[-1] < 1e-4
    assert int(np.argmax(curve)) == 30


def test_lr_find_leaves_model_alone(splits):
    cfg = _config("hurwitz-cnn", *TINY_CNN)
    model = build_model("hurwitz-cnn", channels=4, n_layers=2, kernel=3)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    result = lr_find(model, splits[0], cfg, start_lr=1e-5, end_lr=10.0, steps=25)
    assert 1e-5 <= result.suggestion <= 10.0 and len(result.lrs) == len(result.losses) <= 25
    assert np.all(np.diff(result.lrs) > 0)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


# --- bad input: one line --------------------------------------------------------------------------------------


def _cli_error(capsys, *argv: str) -> str:
    assert main(list(argv)) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("patterson: error: ") and "\n" not in err, err
    return err


def test_bad_input_is_one_line(tmp_path, capsys):
    run = str(tmp_path / "run")
    base = ["train", "--data", DATA, "--out", run, *[a for s in QUICK for a in ("--set", s)]]
    # a dataset grid the model cannot take (mlp built for 24³, maps are 12³)
    assert "grid (12, 12, 12) does not suit model 'mlp'" in _cli_error(capsys, *base, "--model", "mlp")
    # unknown --set keys, bad values
    assert "'epoch'" in _cli_error(capsys, *base, "--set", "epoch=3")
    assert "'widht'" in _cli_error(capsys, *base, "--set", "model.widht=3")
    assert "'epochs'" in _cli_error(capsys, *base, "--set", "epochs=three")
    assert "unknown model" in _cli_error(capsys, *base, "--model", "resnet")
    # a checkpoint from another model
    cnn = ["--model", "hurwitz-cnn", *[a for s in [*TINY_CNN, "epochs=1"] for a in ("--set", s)]]
    assert main([*base, *cnn]) == 0
    capsys.readouterr()
    assert "already holds a run" in _cli_error(capsys, *base, *cnn)
    err = _cli_error(capsys, *base, "--resume", "--model", "patterson-unet")
    assert "checkpoint is for a 'hurwitz-cnn' model, not 'patterson-unet'" in err
    assert "channels=4 (want 8)" in _cli_error(capsys, *base, *cnn, "--set", "model.channels=8", "--resume")
    # a corrupt checkpoint (truncated, as by a full disk) and one that is not a checkpoint at all
    last = tmp_path / "run" / "checkpoints" / "last.pt"
    data = last.read_bytes()
    last.write_bytes(data[: len(data) // 2])
    assert "not a readable patterson checkpoint" in _cli_error(capsys, *base, *cnn, "--set", "epochs=2", "--resume")
    torch.save({"weights": torch.zeros(3)}, last)
    with pytest.raises(PattersonError, match="not a patterson checkpoint"):
        load_model(last)
    shutil.rmtree(tmp_path / "run" / "checkpoints")
    assert "no checkpoint to resume" in _cli_error(capsys, *base, *cnn, "--resume")


def test_apply_overrides_rejects_malformed():
    with pytest.raises(PattersonError, match="key=value"):
        apply_overrides(TrainConfig(), ["epochs"])
    with pytest.raises(PattersonError, match="schedule must be one of"):
        apply_overrides(TrainConfig(), ["schedule=cosine"])
    assert json.dumps(TrainConfig().to_dict())  # plain values only


# --- shipped weights ----------------------------------------------------------------------------------------------


def test_export_weights_rebuilds_and_initialises_training(tmp_path, splits):
    cfg = _config("hurwitz-cnn", *TINY_CNN, epochs=1)
    train(cfg, tmp_path / "run", data=splits)
    full = tmp_path / "run" / "checkpoints" / "last.pt"
    rows = read_metrics(tmp_path / "run" / "metrics.jsonl")
    slim = export_weights(full, tmp_path / "weights" / "tiny.pt", rows, {"compute": "1 CPU thread"})
    state = load_checkpoint(slim)
    assert "optimizer" not in state and "rng" not in state and state["kind"] == "weights"
    assert state["history"][0]["epoch"] == 1 and state["notes"]["compute"] == "1 CPU thread"
    assert slim.stat().st_size < full.stat().st_size
    x = splits[1][0][0][None]  # (1, 1, 12, 12, 12)
    assert torch.equal(load_model(full)(x), load_model(slim)(x))
    # a new run starts from those weights (init_from), not from a random initialisation
    trainer = Trainer(apply_overrides(cfg, [f"init_from={slim}"]), splits[0], splits[1])
    for key, value in load_checkpoint(slim)["model"].items():
        assert torch.equal(trainer.module.state_dict()[key], value)
    other = apply_overrides(_config("hurwitz-cnn", "model.channels=6", "model.n_layers=2"), [f"init_from={slim}"])
    with pytest.raises(PattersonError, match="checkpoint is for another model"):
        Trainer(other, splits[0], splits[1])


def test_export_script_continues_a_shipped_networks_history(tmp_path, splits):
    """recipes/export.py RUN --after WEIGHTS: a later stage of a shipped network keeps the earlier stages' curve."""
    import subprocess
    import sys
    from pathlib import Path

    cfg = _config("hurwitz-cnn", *TINY_CNN, epochs=2)
    train(cfg, tmp_path / "one", data=splits)
    rows = read_metrics(tmp_path / "one" / "metrics.jsonl")
    per_step = cfg.batch_size * cfg.grad_accum
    first = export_weights(tmp_path / "one" / "checkpoints" / "last.pt", tmp_path / "first.pt",
                           [r | {"stage": 1, "maps_seen": r["step"] * per_step} for r in rows])  # fmt: skip
    train(apply_overrides(cfg, [f"init_from={first}", "epochs=1"]), tmp_path / "two", data=splits)
    script = Path(__file__).resolve().parent.parent / "recipes" / "export.py"
    out = tmp_path / "shipped.pt"
    run = [sys.executable, str(script), str(tmp_path / "two"), "--name", "x", "--out", str(out), "--after", str(first)]
    subprocess.run(run, check=True, capture_output=True)
    history = load_checkpoint(out)["history"]
    assert [r["stage"] for r in history] == [1, 1, 2] and load_checkpoint(out)["notes"]["stages"] == 2
    later = read_metrics(tmp_path / "two" / "metrics.jsonl")[0]["step"]
    steps = [r["step"] for r in rows] + [rows[-1]["step"] + later]
    assert [r["maps_seen"] for r in history] == [k * per_step for k in steps]


def test_a_one_pass_network_starts_its_recycled_run(tmp_path, splits):
    """#17: ``init_from`` a one-pass fourier-net into the same network with ``model.recycle=1`` starts from the
    one-pass network's map; a checkpoint written before the field existed is that one-pass network."""
    cfg = _config("fourier-net", "model.width=4", "model.modes=4", "model.n_layers=2", epochs=1)
    train(cfg, tmp_path / "run", data=splits)
    full = tmp_path / "run" / "checkpoints" / "last.pt"
    state = load_checkpoint(full)
    del state["model_config"]["recycle"]  # as the checkpoints shipped before recycling
    save_checkpoint(tmp_path / "old.pt", state)
    recycled = apply_overrides(cfg, ["model.recycle=1", f"init_from={tmp_path / 'old.pt'}"])
    trainer = Trainer(recycled, splits[0], splits[1])
    x = splits[1][0][0][None]  # (1, 1, 12, 12, 12)
    with torch.no_grad():
        assert torch.allclose(trainer.module(x), load_model(full)(x), atol=1e-6)
    resumed = Trainer(apply_overrides(cfg, [f"init_from={tmp_path / 'old.pt'}"]), splits[0], splits[1])
    assert torch.equal(resumed.module.state_dict()["lift.weight"], state["model"]["lift.weight"])


def test_pretrained_picks_weights_that_suit_the_data(tmp_path):
    model = build_model("hurwitz-cnn", channels=4, n_layers=2, kernel=3)
    folder = tmp_path / "weights"
    for name, dataset in {
        "paper-2": {"preset": "paper-2", "d_min": 1.5, "pack_volume": None, "cell": [12.0] * 3 + [90.0] * 3},
        "dense-protein": {"preset": "dense-protein", "d_min": 2.0, "pack_volume": 35.0},
        "paper-1b": {"preset": "paper-1b", "d_min": 1.5, "pack_volume": None, "cell": [10.0] * 3 + [90.0] * 3},
        "report-hkl10": {"preset": "report-hkl10", "input": "intensity", "d_min": 1.5, "cell": None},
    }.items():
        state = {"format": "patterson-checkpoint", "format_version": 1, "model": model.state_dict()}
        state |= {"model_config": model.config.to_dict(), "data": {"train": {"dataset": dataset}}}
        save_checkpoint(folder / f"{name}.pt", state)

    def pick(**data):
        return find_checkpoint("pretrained", folder, data).stem

    assert pick(preset="paper-2", d_min=2.5, pack_volume=None) == "paper-2"  # the preset decides
    assert pick(preset="dense-protein", d_min=1.0, pack_volume=35.0) == "dense-protein"
    assert pick(preset="paper-1a", d_min=2.0, pack_volume=None, cell=[13.0] * 3) == "paper-2"  # alone, nearest cell
    assert pick(preset="custom", d_min=1.5, pack_volume=None, cell=[9.0] * 3) == "paper-1b"
    assert pick(preset="custom", input="intensity", d_min=1.0) == "report-hkl10"  # the kind of input first
    assert pick(preset="report-hkl20", input="intensity", d_min=1.5) == "report-hkl10"
    assert pick(d_min=1.5, pack_volume=40.0) == "dense-protein"  # a packed crystal
    assert pick(d_min=1.9) == "dense-protein" and pick(d_min=1.4, cell=[12.0] * 3) == "paper-2"  # nearest d_min
    assert find_checkpoint("pretrained", folder) is None  # two shipped, no hint: nothing to choose by
    assert find_checkpoint("paper-2", folder).name == "paper-2.pt"
    assert find_checkpoint("pretrained", tmp_path / "none", {"d_min": 2.0}) is None


def test_shipped_recipes_are_valid_configs():
    """recipes/*.toml (how the shipped networks were trained) load as TrainConfigs and build their networks."""
    from pathlib import Path

    recipes = sorted((Path(__file__).resolve().parent.parent / "recipes").glob("*.toml"))
    assert len(recipes) >= 3
    for path in recipes:
        config = load_config(path)
        assert config.epochs > 0 and config.model_config().to_dict()["arch"] == config.model


RECIPE_DATA = {"paper-2": "paper-2", "dense-protein": "dense-protein", "density-modifier": "dense-protein",
               "fourier-net-paper-2": "paper-2", "paper-1a": "paper-1a", "paper-1b": "paper-1b",
               "report-hkl10": "report-hkl10", "report-hkl20": "report-hkl20",
               "peptide-modifier": "peptide-crystal"}  # fmt: skip
RECIPE_STAGE2 = {"paper-2-stage2": "paper-2-stage1", "density-modifier-stage2": "density-modifier",
                 "paper-1a-stage2": "paper-1a", "paper-1a-stage3": "paper-1a-stage2",
                 "paper-1a-stage4": "paper-1a-stage3", "paper-1a-stage5": "paper-1a-stage4",
                 "paper-2-sharp-recycle-stage2": "paper-2-sharp-recycle"}  # started from (in this order)


def test_every_recipe_still_builds_and_trains_a_few_steps(tmp_path):
    """#17: each recipe of a shipped network (and its GPU variant) trains two steps on a small dataset of its
    preset; a stage-2 recipe starts from (and recycles) what its stage-1 recipe just trained here."""
    from pathlib import Path

    from fragment_sources import write_crystals
    from patterson.datasets import generate, make_config

    data = {}
    for preset in ("paper-2", "dense-protein", "paper-1a", "paper-1b"):
        config = make_config(preset, source="embedded", n=8, splits=(0.5, 0.25, 0.25), map_dtype="float32")
        data[preset] = generate(config, tmp_path / "data" / preset, progress=False).out
    cifs = str(write_crystals(tmp_path / "cif"))
    for preset in ("report-hkl10", "report-hkl20"):
        crystals = make_config(preset, source=cifs, n=3, splits=(0.67, 0.33, 0))
        data[preset] = generate(crystals, tmp_path / "data" / preset, progress=False).out
    peptides = make_config("peptide-crystal", n=8, splits=(0.5, 0.5, 0.0), seed=15, d_min_range=(1.8, 2.0),
                           grid=(32, 32, 32))  # fmt: skip
    data["peptide-crystal"] = generate(peptides, tmp_path / "data" / "peptide-crystal", progress=False).out
    recipes = sorted((Path(__file__).resolve().parent.parent / "recipes").glob("*.toml"))
    for path in sorted(recipes, key=lambda p: p.stem in RECIPE_STAGE2):  # stage 1 first
        name = path.stem
        preset = next(v for k, v in RECIPE_DATA.items() if name.startswith(k))
        batch = 1 if preset.startswith("report") else 2  # two training crystals: two steps of one
        sets = ["epochs=1", "max_batches=2", f"batch_size={batch}", "val_batch_size=2", "progress=false", "amp=false"]
        if name in RECIPE_STAGE2:
            first = tmp_path / "runs" / RECIPE_STAGE2[name] / "checkpoints" / "last.pt"
            sets.append(f"init_from={first}")
            if name.startswith("density-modifier"):
                sets.append(f"recycle_from={first}")
        config = load_config(path, sets, data=str(data[preset]))
        result = train(config, tmp_path / "runs" / name)
        assert result.metrics["step"] == 2 and math.isfinite(result.metrics["train_loss"]), name


def test_foreign_unsafe_and_misdirected_checkpoints_are_one_line(tmp_path):
    """#15: a text file as a checkpoint (IndexError inside torch), a pickle holding code, a GPU that is not there."""
    import pickle

    from patterson import runtime
    from patterson.networks import load_checkpoint

    text = tmp_path / "passwd"
    text.write_text("root:x:0:0:root:/root:/bin/bash\n")
    with pytest.raises(PattersonError, match="not a readable patterson checkpoint"):
        load_checkpoint(text)

    class Evil:
        def __reduce__(self):
            return (print, ("this ran",))

    evil = tmp_path / "evil.pt"
    torch.save({"x": Evil()}, evil, pickle_protocol=pickle.HIGHEST_PROTOCOL)
    with pytest.raises(PattersonError, match="may be unsafe, so it was not loaded") as info:
        load_checkpoint(evil)
    assert "\n" not in str(info.value) and "weights_only" not in str(info.value)
    with pytest.raises(PattersonError, match="unknown device 'banana'"):
        runtime.device("banana")
    if not torch.cuda.is_available():
        with pytest.raises(PattersonError, match="no CUDA GPU"):
            load_checkpoint(evil, map_location="cuda")


def test_train_refuses_a_folder_that_is_not_a_run(tmp_path, capsys):
    """#15: train wrote its run into any folder, overwriting same-named files."""
    out = tmp_path / "mine"
    out.mkdir()
    (out / "notes.txt").write_text("my work")
    ds = tmp_path / "ds"
    from patterson.datasets import generate, make_config

    generate(make_config("paper-2", source="embedded", n=8, seed=1), ds, progress=False)
    assert main(["train", "--data", str(ds), "--out", str(out), "--model", "hurwitz-cnn", "--set", "epochs=1"]) == 2
    err = capsys.readouterr().err.strip()
    assert "not empty and not a training run" in err and (out / "notes.txt").read_text() == "my work"
    assert sorted(p.name for p in out.iterdir()) == ["notes.txt"]


def test_permuted_axes_are_the_same_crystal_relabelled():
    """#17: permute_axes turns a crystal's (intensity grid, Gaussian target) into exactly those of the same crystal
    with its axes relabelled, so it is an exact augmentation for the report's task."""
    from itertools import permutations

    from patterson.cells import Cell
    from patterson.maps import gaussian_density, intensity_grid
    from patterson.physics import AtomBatch
    from patterson.structures import Atoms
    from patterson.training.data import permute_axes

    def pair(lengths, frac):
        cell = Cell(*lengths, 90.0, 90.0, 90.0)
        atoms = Atoms(cell.to_cartesian(frac), np.array(["Na", "Cl", "O"]), np.zeros(3), np.ones(3),
                      cell.parameters, "P 1", "x")  # fmt: skip
        batch = AtomBatch.from_atoms([atoms], cell)
        return intensity_grid(batch, 6)[:, None], gaussian_density(batch, (6, 6, 6), form="z", sigma=0.5)[:, None]

    lengths, frac = np.array([5.0, 6.0, 7.0]), np.array([[0.1, 0.2, 0.3], [0.5, 0.1, 0.7], [0.8, 0.6, 0.25]])
    x, y = pair(lengths, frac)
    orders = list(permutations(range(3)))
    relabelled = [pair(lengths[list(o)], frac[:, list(o)]) for o in orders]
    seen = set()
    for seed in range(6):
        px, py = permute_axes(x, y, np.random.default_rng(seed))
        match = [o for o, (rx, ry) in zip(orders, relabelled, strict=True)
                 if torch.allclose(px, rx, rtol=1e-4) and torch.allclose(py, ry, rtol=1e-4, atol=1e-6)]  # fmt: skip
        assert len(match) == 1, seed  # the three cell edges differ: one relabelling only
        seen.add(match[0])
    assert len(seen) > 2  # not the identity every time
