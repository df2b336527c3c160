"""One way to apply a trained network (#16): TrainedNetwork reads a checkpoint once and applies itself."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest
import torch

from patterson.cli import main
from patterson.errors import PattersonError
from patterson.networks import TrainedNetwork, find_checkpoint, open_network, shipped_networks
from test_solving import P1_CELL, molecule, write_mtz


@pytest.fixture
def counted_loads(monkeypatch) -> Counter:
    """Every torch.load of a file, counted by resolved path."""
    calls: Counter = Counter()
    real = torch.load

    def counting(f, *args, **kwargs):
        calls[str(Path(f).resolve())] += 1
        return real(f, *args, **kwargs)

    monkeypatch.setattr(torch, "load", counting)
    return calls


def test_density_is_the_training_scaling_of_the_model(tmp_path):
    """density(): the Patterson divided by norm["input"] in, the output times norm["target"] out, in float64."""
    network = TrainedNetwork.load(find_checkpoint("paper-2"))
    assert network.train_shape == (24, 24, 24) and network.d_min == 1.5 and network.spacing == pytest.approx(0.5)
    assert network.task == "density" and network.norm["input"] > 0 and len(network.entries) > 1000
    pat = torch.rand(2, 24, 24, 24, dtype=torch.float64) * network.norm["input"]
    with torch.no_grad():
        expected = network.model((pat / network.norm["input"]).float()[:, None])[:, 0].double()
    rho = network.density(pat)
    assert rho.dtype == torch.float64 and rho.shape == (2, 24, 24, 24)
    assert torch.allclose(rho, expected * network.norm["target"])
    half = network.density(pat, input_scale=2 * network.norm["input"])  # another input scale, stated
    assert torch.allclose(half, network.density(pat / 2))
    other = network.with_norm({"input": 1.0, "target": 2.0})
    assert other.model is network.model and other.norm == {"input": 1.0, "target": 2.0}
    facts = network.describe()
    assert facts["parameters"] > 0 and facts["validation"]["cc_aligned_median"] > 0.5
    assert facts["trained_on"]["preset"] == "paper-2"


def test_open_network_picks_by_data_and_task():
    assert open_network("pretrained", {"preset": "dense-protein", "d_min": 2.0, "pack_volume": 35}).name == (
        "dense-protein"
    )
    assert open_network("pretrained", {"preset": "paper-2", "d_min": 1.5}).name == "paper-2"
    step = open_network("pretrained", {"preset": "dense-protein", "d_min": 2.0}, task="density-modification")
    assert step.name == "density-modifier" and step.task == "density-modification"
    for preset in ("peptide-crystal", "peptide-crystal-realistic"):  # the preset, or a variant of the one trained on
        peptide = open_network("pretrained", {"preset": preset, "d_min": 2.0, "pack_volume": 20.7},
                               task="density-modification")  # fmt: skip
        assert peptide.name == "peptide-modifier"
    with pytest.raises(PattersonError, match="density-modification network"):
        open_network("density-modifier")  # a real-space step is not a Patterson → density network
    assert [n.name for n in shipped_networks()] == ["dense-protein", "paper-1a", "paper-1b", "paper-2"]  # Patterson in
    assert [n.name for n in shipped_networks(input="intensity")] == ["report-hkl10", "report-hkl20"]
    for preset in ("report-hkl10", "report-hkl20"):  # each report task gets its own network
        report = open_network("pretrained", {"preset": preset, "input": "intensity", "d_min": 1.5})
        assert report.name == preset and report.model.config.arch == "intensity-net"
    assert open_network("pretrained", {"preset": "paper-1b", "d_min": 1.5}).name == "paper-1b"


def test_no_network_file_is_read_twice_in_one_command(tmp_path, counted_loads, capsys):
    """solve with every shipped network, and the demo, read each file once (they read it 4 times before)."""
    data = write_mtz(tmp_path / "p1.mtz", molecule(P1_CELL, "P 1"), P1_CELL, "P 1")
    assert main(["solve", str(data), "--no-progress", "--n-iter", "20", "--out", str(tmp_path / "s")]) == 0
    shipped = [str(p.resolve()) for p in sorted(Path(find_checkpoint("paper-2")).parent.glob("*.pt"))]
    assert set(counted_loads) == set(shipped) and set(counted_loads.values()) == {1}, counted_loads
    counted_loads.clear()
    argv = ["demo", "--n", "2", "--n-peptide", "1", "--peptide-budget", "0.2", "--n-iter", "5", "--n-maps", "1",
            "--no-progress", "--no-plots"]  # fmt: skip
    assert main([*argv, "--out", str(tmp_path / "demo")]) == 0
    assert counted_loads and max(counted_loads.values()) == 1, counted_loads
