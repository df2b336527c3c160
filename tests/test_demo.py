"""``patterson demo``: the report folder, its numbers and maps, the rerun policy and bad input (tiny sizes)."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import gemmi
import numpy as np
import pytest

import patterson.networks.checkpoint as checkpoint_module
from patterson.cli import main
from patterson.demo import LABELS, DemoConfig, is_demo_report, run_demo
from patterson.errors import PattersonError
from patterson.phasing import PhasingConfig

FAST = dict(n=2, n_peptide=2, peptide_budget_s=0.3, phasing=PhasingConfig(n_iter=10, n_starts=1, seed=7), n_maps=1,
            progress=False)  # fmt: skip
SHOWN = ("model", "hybrid", "dual-space", "charge-flip", "hio", "chance")  # the headline's rows: no learned loop is
# shipped for either test set


def tiny_weights(path: Path, grid: int = 24) -> Path:
    """An untrained tiny U-Net saved as shipped weights trained on paper-2 (as export_weights writes them)."""
    import torch

    from patterson.models import model_config, model_from_config
    from patterson.networks.checkpoint import FORMAT, FORMAT_VERSION, save_checkpoint

    torch.manual_seed(0)
    model = model_from_config(model_config("patterson-unet", c1=4, c2=4, n_blocks=1))
    dataset = {"preset": "paper-2", "source": "embedded", "n": 100, "d_min": 1.5, "cell": [12.0] * 3 + [90.0] * 3}
    state = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "kind": "weights",
        "model_config": model.config.to_dict(),
        "model": model.state_dict(),
        "normalisation": {"input": 146.0, "target": 4.3},
        "data": {"train": {"input_shape": [1, grid, grid, grid], "dataset": dataset}},
    }
    return save_checkpoint(path, state)


def test_demo_report_and_rerun(tmp_path, monkeypatch):
    shipped = tmp_path / "weights"
    tiny_weights(shipped / "paper-2.pt")
    monkeypatch.setattr(checkpoint_module, "WEIGHTS_DIR", shipped)  # "pretrained" sees only the tiny network
    out = tmp_path / "demo"
    result = run_demo(DemoConfig(out=str(out), **FAST))
    assert result.out == out and is_demo_report(out)

    report = (out / "report.md").read_text()
    for method in SHOWN:  # every method run has a row, the chance level included; the learned loop none
        assert f"| {LABELS[method]} |" in report
    assert f"| {LABELS['learned']} |" not in report and "The learned loop and its control were not run" in report
    assert "are in paper-2.pt's training source" in report  # trained on "embedded": not a held-out test

    results = json.loads((out / "results.json").read_text())
    assert results["kind"] == "patterson-demo" and list(results["presets"]) == ["paper-2", "peptide-crystal"]
    paper2, crystals = results["presets"]["paper-2"], results["presets"]["peptide-crystal"]
    assert set(paper2["methods"]) == {"model", "hybrid", "charge-flip", "hio", "chance"}
    assert paper2["skipped"] == ["learned"]  # no density-modification network trained on paper-2 is shipped
    assert list(crystals["methods"]) == ["dual-space", "charge-flip", "hio", "chance"] and crystals["network"] is None
    assert crystals["skipped"] == ["learned", "histogram"] and "--n-peptide 2" in results["command"]
    for r in (paper2, crystals):
        assert r["n"] == 2 and r["entries"] and len(r["examples"]) == 2
        for m in r["methods"].values():
            assert 0 <= m["n_solved"] <= m["n"] == 2 and m["solved_fraction"] == m["n_solved"] / 2
            assert 0.0 <= m["median_phase_error_weighted_deg"] <= 180.0 and -1.0 <= m["median_cc_aligned"] <= 1.0
            assert m["seconds_per_structure"] >= 0.0 and len(m["per_structure"]["phase_error_weighted_deg"]) == 2
            if "verdict" in m:  # every method but chance: claims, and how many of them are right
                v = m["verdict"]
                assert 0 <= v["n_correct_claims"] <= v["n_claimed_solved"] <= 2
                assert len(m["per_structure"]["verdict"]) == 2
        assert 60.0 < r["methods"]["chance"]["median_phase_error_weighted_deg"] < 90.0
    assert paper2["network"]["path"].endswith("paper-2.pt") and paper2["network"]["trained_on"]["preset"] == "paper-2"
    # peptide crystals: held-out entries of the same source, 1.0 Å, every method with the same budget per crystal
    assert crystals["dataset"]["preset"] == "peptide-crystal" and crystals["dataset"]["source"] == "embedded"
    assert crystals["dataset"]["splits"] == [0.0, 0.0, 1.0] and crystals["d_min"] == 1.0 and crystals["budget_s"] == 0.3
    assert all(e["spacegroup"] and e["d_min"] >= 1.0 and e["n_reflections"] > 100 for e in crystals["examples"])
    for name in ("dual-space", "charge-flip", "hio"):
        per = crystals["methods"][name]["per_structure"]
        assert all(s > 0 for s in per["seconds"]) and all(r >= 1 for r in per["rounds"])
    assert "| dual-space direct methods | – (not run) |" in report and "peptide-crystal**: 2 crystals" in report

    # maps: CCP4 files with the 12 Å cell; each method's map is the one scored (moved onto the truth)
    folder = out / paper2["maps"][0]["folder"]
    ccp4s = {f"{m}.ccp4" for m in ("truth", "patterson", "model", "hybrid", "charge-flip", "hio")}
    assert {p.name for p in folder.iterdir()} == ccp4s
    maps = {}
    for name in ("truth", "hio", "hybrid"):
        ccp4 = gemmi.read_ccp4_map(str(folder / f"{name}.ccp4"))
        assert ccp4.grid.unit_cell.a == pytest.approx(12.0) and ccp4.grid.shape == (24, 24, 24)
        maps[name] = np.array(ccp4.grid, copy=False).ravel()
    for name in ("hio", "hybrid"):
        cc = np.corrcoef(maps["truth"], maps[name])[0, 1]
        assert cc == pytest.approx(paper2["methods"][name]["per_structure"]["cc_aligned"][0], abs=1e-3)
    # a peptide crystal's maps: its own cell; the dual-space map is the one scored
    folder = out / crystals["maps"][0]["folder"]
    names = {f"{m}.ccp4" for m in ("truth", "patterson", "dual-space", "charge-flip", "hio")}
    assert {p.name for p in folder.iterdir()} == names
    truth, dual = (gemmi.read_ccp4_map(str(folder / f"{name}.ccp4")) for name in ("truth", "dual-space"))
    assert truth.grid.unit_cell.a == pytest.approx(crystals["examples"][0]["cell"][0], abs=1e-3)
    assert list(truth.grid.shape) == crystals["examples"][0]["grid"]
    cc = np.corrcoef(np.array(truth.grid, copy=False).ravel(), np.array(dual.grid, copy=False).ravel())[0, 1]
    assert cc == pytest.approx(crystals["methods"]["dual-space"]["per_structure"]["cc_aligned"][0], abs=1e-3)
    assert (out / "solved_fraction.png").is_file() and (out / "phase_errors.png").is_file()
    assert "![solved fraction" in report and (out / "data" / "paper-2" / "dataset.h5").is_file()
    assert (out / "data" / "peptide-crystal" / "dataset.h5").is_file()

    # a rerun replaces a previous demo report whole; nothing shipped now (the network rows are skipped), and no
    # matplotlib (no plots, a note instead)
    monkeypatch.setattr(checkpoint_module, "WEIGHTS_DIR", tmp_path / "nothing")
    find_spec = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "matplotlib" else find_spec(name, *a)
    )
    run_demo(DemoConfig(out=str(out), **FAST))
    monkeypatch.undo()
    results = json.loads((out / "results.json").read_text())
    assert results["presets"]["paper-2"]["skipped"] == ["model", "hybrid", "learned"]
    assert results["presets"]["peptide-crystal"]["skipped"] == ["learned", "histogram"]  # it uses no network
    assert sum("no pretrained network is shipped" in w for w in results["warnings"]) == 1
    assert any("matplotlib is not installed" in w for w in results["warnings"]) and not results["plots"]
    assert not list(out.glob("*.png")) and not (out / "maps" / "paper-2" / "test-0" / "model.ccp4").exists()
    assert "| network alone | – (no network) |" in (out / "report.md").read_text()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["demo", "weights"]  # no temporary folders left

    # anything else that is not empty is refused, untouched
    other = tmp_path / "other"
    other.mkdir()
    (other / "notes.txt").write_text("mine")
    with pytest.raises(PattersonError, match="not a patterson demo report"):
        run_demo(DemoConfig(out=str(other), **FAST))
    assert [p.name for p in other.iterdir()] == ["notes.txt"]


def test_demo_bad_input_is_one_line_and_leaves_nothing(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(checkpoint_module, "WEIGHTS_DIR", tmp_path / "nothing")
    afile = tmp_path / "afile"
    afile.write_text("x")
    wrong_grid = tiny_weights(tmp_path / "w32.pt", grid=32)
    cases = [
        (["--out", str(afile)], "not a folder"),
        (["--out", str(tmp_path / "a"), "--n", "0"], "n must be at least 1"),
        (["--out", str(tmp_path / "b"), "--paper2-checkpoint", str(tmp_path / "missing.pt")], "no such checkpoint"),
        (["--out", str(tmp_path / "c" / "d"), "--paper2-checkpoint", str(wrong_grid)], "trained on 32×32×32 maps"),
        (["--out", str(tmp_path / "e"), "--dense-checkpoint", "pretrained"], "no dense-protein test set"),
        (["--out", str(tmp_path / "f"), "--n-peptide", "0"], "n_peptide must be at least 1"),
        (["--out", str(tmp_path / "g"), "--peptide-budget", "0"], "peptide_budget_s must be above 0"),
    ]
    for args, message in cases:
        assert main(["demo", "--n", "2", "--n-iter", "5", "--no-progress", "--no-plots", *args]) == 2
        err = capsys.readouterr().err
        assert err.startswith("patterson: error:") and err.count("\n") == 1 and message in err, (args, err)
    assert afile.read_text() == "x"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["afile", "w32.pt"]  # no partial output, no temp folders


def test_a_relative_training_source_is_found_from_anywhere(tmp_path, monkeypatch):
    """#15: the shipped networks name ../shared/data/pdb; from another folder the held-out check silently skipped."""
    from patterson.demo.run import _held_out

    monkeypatch.chdir(tmp_path)
    shared = Path(__file__).resolve().parents[2] / "shared" / "data" / "pdb"
    result = _held_out(None, "../shared/data/pdb", ["no-such-entry"])
    assert result["checked"] == shared.is_dir() and result.get("overlap", []) == []
    assert _held_out(None, "nowhere/at/all", [])["checked"] is False


def test_the_held_out_check_reads_the_training_entries_of_the_checkpoint(tmp_path, monkeypatch):
    """#15: the check needs no source folder when the checkpoint lists its training entries, as shipped ones do."""
    from patterson.demo.run import _held_out
    from patterson.networks import find_checkpoint, load_checkpoint, training_entries

    monkeypatch.chdir(tmp_path)
    result = _held_out(["1abc", "2xyz"], "nowhere/at/all", ["2xyz", "3def"])
    assert result["checked"] and result["overlap"] == ["2xyz"]
    shipped = training_entries(load_checkpoint(find_checkpoint("paper-2")))
    assert shipped and len(shipped) > 1000 and len(set(shipped)) == len(shipped)


def test_the_demo_never_reads_back_the_test_sets_it_writes(tmp_path, monkeypatch):
    """#16: the test sets are written as datasets for the report and phased from the same examples in memory."""
    import patterson.datasets.store as store

    def refuse(self, *args, **kwargs):
        raise AssertionError("the demo opened a stored dataset")

    monkeypatch.setattr(store.StoredDataset, "__init__", refuse)
    result = run_demo(DemoConfig(out=str(tmp_path / "demo"), paper2_checkpoint=None, plots=False,
                                 **(FAST | {"n_peptide": 1})))  # fmt: skip
    for preset, n in (("paper-2", 2), ("peptide-crystal", 1)):
        assert (result.out / "data" / preset / "dataset.h5").is_file()
        assert result.results["presets"][preset]["methods"]["hio"]["n"] == n
