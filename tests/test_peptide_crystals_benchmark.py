"""benchmarks/peptide_crystals.py's core on two held-out crystals at 1.0 Å with a 1 s budget (2 s: marked
slow): well-formed rows, the held-out check, the Markdown table."""

from __future__ import annotations

import argparse
import importlib.util
import json
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def load_benchmark(monkeypatch):
    """The script as a module, registered so that its worker processes find its functions by name."""
    spec = importlib.util.spec_from_file_location("peptide_crystals", ROOT / "benchmarks" / "peptide_crystals.py")
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, "peptide_crystals", module)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("budget", [1.0, pytest.param(2.0, marks=pytest.mark.slow)])  # 2 s: 31–35 s in all
def test_peptide_crystals_benchmark_core(monkeypatch, budget):
    monkeypatch.syspath_prepend(str(ROOT / "benchmarks"))  # as `python benchmarks/peptide_crystals.py` has it
    bench = load_benchmark(monkeypatch)
    args = argparse.Namespace(source="embedded", preset=bench.PRESET, n=2, budget_s=[budget],
                              methods=list(bench.DEFAULT_METHODS), resolutions=[1.0], spacing=bench.SPACING,
                              workers=2)  # fmt: skip
    messages: list[str] = []
    results = bench.run_all(args, messages.append)
    json.loads(json.dumps(results))  # JSON-serialisable as written
    assert results["held_out"]["checked"] and results["held_out"]["shared_entries"] == 0
    assert results["configs"]["1"]["preset"] == "peptide-crystal" and results["configs"]["1"]["d_min_range"] == [1, 1]
    assert [(r["d_min"], r["method"]) for r in results["rows"]] == [(1.0, m) for m in bench.DEFAULT_METHODS]
    for row in results["rows"]:
        assert row["n"] == 2 and row["errors"] == 0 and 0 <= row["n_right"] <= row["n_claimed"] <= row["n"]
        assert 0 <= row["n_solved"] <= 2 and 0 <= row["median_phase_error_weighted_deg"] <= 180
    for record in results["structures"]:
        assert record["d_own"] >= 1.0 and record["n_reflections"] > 100
        for method, v in record["methods"].items():
            if method == "chance":
                assert v["seconds"] == 0 and "verdict" not in v
                continue
            assert v["verdict"] in ("solved", "uncertain", "not solved") and v["seconds"] > 0 and v["rounds"] >= 1
    assert len(messages) == 1 + 2
    table = bench.render(results)
    assert table.count("\n| 1.0 |") == len(bench.DEFAULT_METHODS) and "2 test crystals per resolution" in table
    assert bench.sequence_of("4pbo/A/181:ASN,182:ARG,183:VAL,184:LYS") == "NRVK"  # the fragments method's sequence
