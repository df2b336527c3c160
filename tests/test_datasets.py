"""Datasets: generation (splits, determinism, resume after kill), stored format, readers, and bad input."""

from __future__ import annotations

import gzip
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch

from fragment_sources import write_crystals, write_source
from patterson import __version__
from patterson.cells import Cell, periodic_distances
from patterson.cli import main
from patterson.datasets import (
    SPLITS,
    Augmentation,
    OnTheFlyMaps,
    StoredDataset,
    dataset_info,
    generate,
    make_config,
    open_split,
    read_aflow_prototypes,
)
from patterson.errors import PattersonError

FIELDS = ("input", "target", "xyz", "z", "b_iso", "occ", "n_atoms", "cell", "label", "source")


@pytest.fixture(scope="module")
def source(tmp_path_factory) -> Path:
    return write_source(tmp_path_factory.mktemp("src") / "pdb", entries=6, chains=2, residues=9)


def small(**kw):
    values = dict(n=40, chunk_size=8, splits=(0.6, 0.2, 0.2))
    values.update(kw)
    return make_config(kw.pop("preset", "paper-2"), **{k: v for k, v in values.items() if k != "preset"})


def read_all(ds: Path) -> dict:
    with h5py.File(ds / "dataset.h5", "r") as fh:
        return {s: {f: fh[s][f][:] for f in FIELDS} for s in SPLITS if s in fh}


@pytest.fixture(scope="module")
def paper2(tmp_path_factory, source) -> Path:
    out = tmp_path_factory.mktemp("ds") / "paper2"
    generate(small(source=str(source)), out, workers=1, progress=False)
    return out


def entries_of(labels: np.ndarray) -> set[str]:
    return {lab.decode().split("/")[0] for lab in labels}


def test_splits_are_disjoint_by_entry_and_exact(paper2):
    data = read_all(paper2)
    assert {s: len(d["input"]) for s, d in data.items()} == {"train": 24, "val": 8, "test": 8}
    ents = {s: entries_of(d["label"]) for s, d in data.items()}
    assert ents["train"] and ents["val"] and ents["test"]
    assert not (ents["train"] & ents["val"] or ents["train"] & ents["test"] or ents["val"] & ents["test"])
    labels = np.concatenate([d["label"] for d in data.values()])
    assert len(set(labels.tolist())) == 40  # no duplicates
    # both chain files of an entry go to the same split
    files = {s: {f.decode() for f in d["source"]} for s, d in data.items()}
    for s in SPLITS:
        assert {f[:4] for f in files[s]} == ents[s]


def test_each_split_lists_its_entries_and_the_source_is_stored_resolved(paper2, source):
    """#15: a network's held-out check needs its training entries, not a source folder found again."""
    from patterson.datasets import StoredDataset, split_entries

    listed = {s: StoredDataset(paper2, s).entries for s in SPLITS}
    data = read_all(paper2)
    for s in SPLITS:
        assert set(listed[s]) >= entries_of(data[s]["label"])  # every entry the split was given, used or not
    assert listed == split_entries(small(source=str(source)), progress=False)
    assert not set(listed["train"]) & set(listed["test"])
    assert StoredDataset(paper2).config.source == str(source.resolve())


def test_the_reflections_behind_the_maps_are_stored(source, tmp_path):
    """#16: dataset format 2 keeps the amplitudes the input was made from, which were measured, and the target's
    exact F, so nothing is read back off a float map; format 1 is refused by the phasing methods in one line."""
    from patterson.datasets import StoredDataset
    from patterson.maps import density_from_f, patterson_from_f
    from patterson.physics import miller_indices

    out = tmp_path / "noisy"
    generate(small(source=str(source), n=10, noise=0.05, missing=0.1, map_dtype="float32"), out, progress=False)
    ds = StoredDataset(out, "train", normalise=False)
    cell, hkl = Cell.cubic(12.0), miller_indices(Cell.cubic(12.0), 1.5)
    with h5py.File(out / "dataset.h5", "r") as fh:
        assert fh.attrs["format"] == "patterson-dataset-2"
    item = ds[0]
    assert ds.has_reflections and item["f_obs"].shape == item["measured"].shape == (len(hkl),)
    assert 0.05 < 1 - item["measured"].double().mean() < 0.15  # 10% dropped
    assert torch.all(item["f_obs"][~item["measured"]] == 0)
    pat = patterson_from_f(item["f_obs"][None].to(torch.complex128), hkl, cell, (24, 24, 24))[0]
    assert torch.allclose(pat, item["input"][0].double(), rtol=0, atol=1e-5 * pat.abs().max())  # what it was made of
    rho = density_from_f(item["f_calc"][None], hkl, cell, (24, 24, 24))[0]
    assert torch.allclose(rho, item["target"][0].double(), rtol=0, atol=1e-5 * rho.abs().max())
    noisy = item["f_obs"][item["measured"]] / item["f_calc"].abs()[item["measured"]]
    assert 0.02 < float(noisy.std()) < 0.08  # 5% noise on the measured ones
    ds.close()

    with h5py.File(out / "dataset.h5", "a") as fh:  # as a dataset of format 1 was
        for name in ("f_obs", "measured", "f_calc"):
            del fh[f"train/{name}"]
        fh.attrs["format"] = "patterson-dataset-1"
    old = StoredDataset(out, "train", normalise=False)
    assert not old.has_reflections and "f_obs" not in old[0]
    with pytest.raises(PattersonError, match="older patterson .* make the dataset again"):
        old.require_reflections()


def test_examples_made_in_memory_are_the_stored_ones(paper2, source):
    """make_examples gives, bit for bit, the items StoredDataset reads back (so a command need not read back)."""
    from patterson.datasets import StoredDataset, make_examples

    ds = StoredDataset(paper2, "test", normalise=False)
    made = make_examples(small(source=str(source)), "test")
    assert len(made) == len(ds) == 8 and [it["label"] for it in made] == ds.labels()
    for i, item in enumerate(made):
        stored = ds[i]
        assert set(stored) <= set(item)
        for key, value in stored.items():
            assert torch.equal(value, item[key]) if isinstance(value, torch.Tensor) else value == item[key], key


def test_stored_maps_obey_the_physics(paper2):
    with h5py.File(paper2 / "dataset.h5", "r") as fh:
        cfg = json.loads(fh.attrs["config"])
        assert fh.attrs["version"] == __version__ and cfg["preset"] == "paper-2"
        g = fh["train"]
        inp, tgt = g["input"][:].astype(np.float64), g["target"][:].astype(np.float64)
        xyz, n_atoms, b, occ = g["xyz"][:], g["n_atoms"][:], g["b_iso"][:], g["occ"][:]
        assert inp.shape == tgt.shape == (24, 24, 24, 24) and g["input"].dtype == np.float16
        assert fh.attrs["norm_input"] == pytest.approx(np.abs(inp).max())
        assert fh.attrs["norm_target"] == pytest.approx(np.abs(tgt).max())
    cell = Cell.cubic(12.0)
    for i in range(len(inp)):
        n = n_atoms[i]
        assert np.all(b[i, :n] == 20) and np.all(occ[i, :n] == 1) and np.all(occ[i, n:] == 0)
        # the Patterson is centrosymmetric with its highest peak at the origin
        flipped = np.roll(inp[i][::-1, ::-1, ::-1], 1, axis=(0, 1, 2))
        np.testing.assert_allclose(inp[i], flipped, atol=2e-3 * inp[i].max())
        assert inp[i].max() == inp[i][0, 0, 0]
        # the fragment's mass-weighted centre is at the cell centre and the density peaks on an atom
        assert np.abs(xyz[i, :n].mean(0) - 6.0).max() < 1.5
        peak = np.array(np.unravel_index(tgt[i].argmax(), tgt[i].shape)) / 24.0
        assert periodic_distances(cell.to_cartesian(peak)[None], xyz[i, :n].astype(np.float64), cell).min() < 0.6
        # clash rejection: no atom within 2.5 Å of a periodic image
        frac = cell.to_fractional(xyz[i, :n].astype(np.float64))
        shifted = (frac[:, None, :] - frac[None, :, :]) * 12.0
        for axis in range(3):
            shift = np.zeros(3)
            shift[axis] = 12.0
            assert np.linalg.norm(shifted + shift, axis=-1).min() >= 2.5


def test_same_seed_same_dataset_any_workers_other_seed_differs(paper2, source, tmp_path):
    generate(small(source=str(source)), tmp_path / "again", workers=2, progress=False)
    first, again = read_all(paper2), read_all(tmp_path / "again")
    for s in first:
        for f in FIELDS:
            np.testing.assert_array_equal(first[s][f], again[s][f])
    generate(small(source=str(source), seed=1, n=12), tmp_path / "other", workers=1, progress=False)
    other = read_all(tmp_path / "other")
    assert set(other["train"]["label"].tolist()) != set(first["train"]["label"][:8].tolist())


def test_only_the_test_split_remakes_the_held_out_examples(paper2, source, tmp_path):
    config = small(source=str(source), only_splits=["test"], map_dtype="float32")
    generate(config, tmp_path / "test-only", workers=1, progress=False)
    full, test_only = read_all(paper2)["test"], read_all(tmp_path / "test-only")
    assert set(test_only) == {"test"}  # the same held-out entries and examples, in float32
    np.testing.assert_array_equal(full["label"], test_only["test"]["label"])
    np.testing.assert_allclose(full["target"], test_only["test"]["target"], atol=2e-3 * np.abs(full["target"]).max())
    assert test_only["test"]["input"].dtype == np.float32


def test_torch_dataset_and_info(paper2):
    ds = open_split(paper2, "train")
    assert len(ds) == 24
    item = ds[3]
    assert item["input"].shape == (1, 24, 24, 24) and item["input"].dtype == torch.float32
    raw = StoredDataset(paper2, "train", normalise=False)[3]
    np.testing.assert_allclose(item["input"] * ds.norm["input"], raw["input"], rtol=1e-6)
    assert max(float(ds[i]["input"].abs().max()) for i in range(len(ds))) == pytest.approx(1.0)
    info = dataset_info(paper2)
    assert info["counts"] == {"train": 24, "val": 8, "test": 8} and info["total"] == 40
    assert sum(info["residues"].values()) == 80  # two residues per dipeptide
    assert info["elements"]["C"] > info["elements"]["N"] > 0
    with pytest.raises(PattersonError):
        StoredDataset(paper2, "nope")


def test_on_the_fly_maps_match_stored_and_augment(paper2):
    plain = OnTheFlyMaps(paper2, batch_size=4, augment=Augmentation(rotate=False, b_range=None), dtype=torch.float64)
    batch = plain.batch(np.random.default_rng(0))
    stored = StoredDataset(paper2, "train")
    for j, i in enumerate(batch["index"].tolist()):
        np.testing.assert_allclose(batch["target"][j], stored[i]["target"], atol=2e-3)
        np.testing.assert_allclose(batch["input"][j], stored[i]["input"], atol=2e-3)
    aug = OnTheFlyMaps(
        paper2, batch_size=4, augment=Augmentation(d_min_range=(2.0, 3.0), noise=0.1, missing=0.2), n_batches=2, seed=1
    )
    batches = list(aug)
    assert len(batches) == 2 and batches[0]["input"].shape == (4, 1, 24, 24, 24)
    x = batches[0]["input"][:, 0].double()
    # still a Patterson: centrosymmetric, origin peak highest
    np.testing.assert_allclose(x, torch.roll(x.flip(1, 2, 3), (1, 1, 1), (1, 2, 3)), atol=1e-4)
    assert torch.all(x[:, 0, 0, 0] == x.flatten(1).max(1).values)


def test_dialanine_dense_and_crystal_presets(source, tmp_path):
    generate(small(preset="paper-1b", source=str(source), n=10, splits=(0.6, 0.2, 0.2)), tmp_path / "1b",
             progress=False)  # fmt: skip
    data = read_all(tmp_path / "1b")["train"]
    assert data["input"].shape[1:] == (20, 20, 20) and np.all(data["n_atoms"] == 10)
    assert all(",".join(lab.decode().split("/")[2:]).count("ALA") == 2 for lab in data["label"])

    generate(small(preset="dense-protein", source=str(source), n=6, chunk_size=3), tmp_path / "dense",
             progress=False)  # fmt: skip
    dense = read_all(tmp_path / "dense")
    cell = Cell.cubic(12.0)
    for split in dense.values():
        assert split["input"].shape[1:] == (24, 24, 24)
        assert np.all(np.abs(cell.volume / split["n_atoms"] - 35.0) <= 0.12 * 35.0)
        assert all(len(lab.decode().split(";")) >= 2 for lab in split["label"])

    crystals = write_crystals(tmp_path / "cif")
    cfg = make_config("report-hkl10", source=str(crystals), n=3, splits=(0.34, 0.33, 0.33), chunk_size=2)
    generate(cfg, tmp_path / "hkl10", progress=False)
    for split in read_all(tmp_path / "hkl10").values():
        z = split["z"].astype(np.float64)
        inp = split["input"].astype(np.float64)
        assert inp.shape[1:] == (10, 10, 10)
        # f = Z and B = 0: I(000) = (ΣZ)²
        np.testing.assert_allclose(inp[:, 0, 0, 0], z.sum(1) ** 2, rtol=2e-3)
        # the Gaussian target holds ΣZ electrons in the cell
        volume = np.array([Cell(*c).volume for c in split["cell"]])
        electrons = split["target"].astype(np.float64).sum((1, 2, 3)) * volume / 1000
        np.testing.assert_allclose(electrons, z.sum(1), rtol=0.02)


def test_unreadable_and_empty_files_are_skipped_and_counted(source, tmp_path):
    dirty = tmp_path / "dirty"
    dirty.mkdir()
    for f in source.iterdir():
        (dirty / f.name).write_bytes(f.read_bytes())
    (dirty / "9y00_A.pdb").write_text("")
    (dirty / "9y01_A.pdb.gz").write_bytes(b"\x1f\x8b broken")
    (dirty / "9y02_A.cif").write_text("data_x\n_this is not a structure\n")
    first = next(iter(sorted(source.iterdir())))  # #27: one NaN coordinate spoils its file, not the dataset
    lines = gzip.decompress(first.read_bytes()).decode().splitlines() if first.suffix == ".gz" else \
        first.read_text().splitlines()  # fmt: skip
    at = next(i for i, line in enumerate(lines) if line.startswith("ATOM"))
    lines[at] = lines[at][:30] + f"{'nan':>8}" + lines[at][38:]
    (dirty / "9y03_A.pdb").write_text("\n".join(lines) + "\n")
    summary = generate(small(source=str(dirty), n=10), tmp_path / "ds", progress=False)
    assert summary.source_counts["skipped_files"] == 4 and summary.source_counts["files"] == 12
    assert dataset_info(tmp_path / "ds")["source_counts"]["skipped_files"] == 4


def test_aflow_prototypes_read_without_pymatgen(tmp_path):
    proto = [
        {
            "snl": {
                "lattice": {"matrix": [[4.0, 0, 0], [0, 4.0, 0], [0, 0, 5.0]]},
                "sites": [
                    {"species": [{"element": "Fe", "occu": 1}], "abc": [0, 0, 0]},
                    {"species": [{"element": "O", "occu": 1}], "abc": [0.5, 0.5, 0.5]},
                ],
            },
            "tags": {"aflow": "AB_tP2_123_a_d"},
        },
        {"snl": {"broken": True}},
    ]
    path = tmp_path / "aflow_prototypes.json.gz"
    with gzip.open(path, "wt") as fh:
        json.dump(proto, fh)
    (label, atoms), *rest = read_aflow_prototypes(path)
    assert not rest and "AB_tP2_123_a_d" in label
    assert atoms.cell == (4.0, 4.0, 5.0, 90.0, 90.0, 90.0)
    np.testing.assert_allclose(atoms.xyz[1], [2.0, 2.0, 2.5])


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--preset", "nope", "--n", "5"], "unknown preset"),
        (["--preset", "paper-2", "--n", "0"], "n must be a positive"),
        (["--preset", "paper-2", "--n", "-3"], "n must be a positive"),
        (["--preset", "paper-2", "--n", "5", "--source", "MISSING"], "no such source folder"),
        (["--preset", "paper-2", "--n", "5", "--source", "EMPTY"], "no structure files"),
        (["--preset", "paper-2", "--n", "5", "--set", "d_min=-1"], "d_min"),
    ],
)
def test_bad_input_is_a_one_line_error(argv, message, tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    argv = [a.replace("MISSING", str(tmp_path / "missing")).replace("EMPTY", str(tmp_path / "empty")) for a in argv]
    rc = main(["generate", *argv, "--out", str(tmp_path / "ds"), "--no-progress"])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc != 0 and err[-1].startswith("patterson: error: ") and message in err[-1]
    assert not (tmp_path / "ds").exists()


def test_other_config_in_the_same_folder_is_refused(paper2, source, capsys):
    with pytest.raises(PattersonError, match="another config"):
        generate(small(source=str(source), seed=9), paper2, progress=False)
    assert main(["dataset", "info", str(paper2)]) == 0
    assert "train 24" in capsys.readouterr().out


# --- resume after kill ------------------------------------------------------------------------------------------


def _children(pid: int) -> list[int]:
    out = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        text = (task / "children").read_text().split()
        out += [int(x) for x in text]
    return out


def _start(argv: list[str]) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "patterson", *argv], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, start_new_session=True)  # fmt: skip


def _wait_for_shards(ds: Path, proc: subprocess.Popen, count: int, timeout: float = 60) -> None:
    t0 = time.time()
    while len(list((ds / "shards").glob("*.h5"))) < count if (ds / "shards").is_dir() else True:
        assert proc.poll() is None, proc.stderr.read().decode()
        assert time.time() - t0 < timeout
        time.sleep(0.01)


def test_resume_after_killing_a_worker_and_the_main_process(source, tmp_path):
    common = ["--preset", "paper-1a", "--source", str(source), "--n", "200", "--no-progress",
              "--set", "chunk_size=4", "--set", "splits=[0.6, 0.2, 0.2]", "--set", "rotate=true"]  # fmt: skip
    ds = tmp_path / "ds"
    argv = ["generate", *common, "--out", str(ds), "--workers", "2"]
    # 1. kill one worker process: the run stops with an error, keeping the finished shards
    proc = _start(argv)
    _wait_for_shards(ds, proc, 2)
    workers = _children(proc.pid)
    assert workers
    os.kill(workers[0], signal.SIGKILL)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode != 0 and b"worker process died" in err
    assert not (ds / "dataset.h5").exists()
    done_after_first = len(list((ds / "shards").glob("*.h5")))
    # 2. kill the whole generation (main process and workers) mid-run
    proc = _start(argv)
    _wait_for_shards(ds, proc, done_after_first + 2)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)
    assert not (ds / "dataset.h5").exists()
    # 3. run again to the end: exactly n examples, none twice, identical to an uninterrupted run
    proc = _start(["generate", *common, "--out", str(ds), "--workers", "1"])
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err.decode()
    reference = tmp_path / "ref"
    cfg = make_config("paper-1a", source=str(source), n=200, chunk_size=4, splits=(0.6, 0.2, 0.2), rotate=True)
    generate(cfg, reference, progress=False)
    resumed, fresh = read_all(ds), read_all(reference)
    labels = np.concatenate([d["label"] for d in resumed.values()])
    assert len(labels) == 200 and len(set(labels.tolist())) == 200
    for s in fresh:
        for f in FIELDS:
            np.testing.assert_array_equal(resumed[s][f], fresh[s][f])
    assert not list((ds / "shards").glob(".*.tmp"))


def test_show_config_writes_toml_that_config_reads_back(tmp_path, capsys):
    """#15: ``generate --show-config > my.toml`` then ``--config my.toml`` gives the same config."""
    from patterson.cli import main

    assert main(["generate", "--preset", "dense-protein", "--set", "d_min=1.7", "--show-config"]) == 0
    text = capsys.readouterr().out
    (tmp_path / "my.toml").write_text(text)
    assert main(["generate", "--config", str(tmp_path / "my.toml"), "--show-config"]) == 0
    assert capsys.readouterr().out == text and "d_min = 1.7" in text


@pytest.mark.parametrize(
    "assignment, message",
    [("d_min=abc", "'d_min' needs a number, got 'abc'"), ("n=2.5", "'n' needs a whole number"),
     ("splits=[0.5,0.6,0.7]", "splits must add up to 1"), ("rotate=3", "'rotate' needs true or false")],
)  # fmt: skip
def test_config_values_of_the_wrong_type_name_the_key(assignment, message, capsys):
    from patterson.cli import main

    assert main(["generate", "--preset", "paper-2", "--set", assignment, "--show-config"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("patterson: error:") and message in err and len(err.splitlines()) == 1


@pytest.mark.parametrize("damage", ["delete", "truncate"])
def test_a_lost_or_truncated_shard_is_refused_then_remade(damage, source, tmp_path, capsys):
    """#15: a deleted shard was read as zeros (validation on zero maps); a truncated one gave a blank file name."""
    from patterson.cli import main

    config = small(source=str(source))
    out = tmp_path / "ds"
    generate(config, out, workers=1, progress=False)
    before = read_all(out)
    shard = out / "shards" / "val-00000.h5"
    if damage == "delete":
        shard.unlink()
    else:
        shard.write_bytes(shard.read_bytes()[:1000])
    assert main(["dataset", "info", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("patterson: error:") and "shards/val-00000.h5" in err and len(err.splitlines()) == 1
    with pytest.raises(PattersonError, match="generate command again"):
        StoredDataset(out, "val")
    generate(config, out, workers=1, progress=False)  # the same command remakes it, bit for bit
    after = read_all(out)
    assert all(np.array_equal(before[s][f], after[s][f]) for s in before for f in FIELDS)


def test_another_config_in_the_folder_names_only_what_changed(paper2, source):
    with pytest.raises(PattersonError) as info:
        generate(small(source=str(source), seed=5), paper2, workers=1, progress=False)
    text = str(info.value)
    assert "seed: 0 there, 5 now" in text and "cell" not in text and "b_range" not in text


def test_a_second_generate_into_the_same_folder_is_refused(source, tmp_path):
    """#15: two generate runs into one folder: one died when the other deleted its temporary shard."""
    from patterson.files import folder_lock

    out = tmp_path / "ds"
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        (tmp_path / ".ds.lock").write_text(str(sleeper.pid))  # held by a live process
        with pytest.raises(PattersonError, match=f"another patterson \\(pid {sleeper.pid}\\) is writing it"):
            generate(small(source=str(source)), out, workers=1, progress=False)
        assert not out.exists()
    finally:
        sleeper.kill()
        sleeper.wait()
    generate(small(source=str(source)), out, workers=1, progress=False)  # the holder is gone: the stale lock is taken
    assert (out / "dataset.h5").is_file() and not (tmp_path / ".ds.lock").exists()
    with folder_lock(tmp_path / "x"):
        assert (tmp_path / ".x.lock").read_text() == str(os.getpid())
    assert not (tmp_path / ".x.lock").exists()
