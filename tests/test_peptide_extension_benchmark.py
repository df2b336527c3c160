"""benchmarks/peptide_extension.py's core on one held-out crystal at 2.0 Å: every level's start extended by every
step, well-formed rows, the held-out check, the Markdown table."""

from __future__ import annotations

import argparse
import importlib.util
import json
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow  # 17 s
def test_peptide_extension_benchmark_core(monkeypatch):
    monkeypatch.syspath_prepend(str(ROOT / "benchmarks"))  # as `python benchmarks/peptide_extension.py` has it
    spec = importlib.util.spec_from_file_location("peptide_extension", ROOT / "benchmarks" / "peptide_extension.py")
    bench = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, "peptide_extension", bench)  # its workers find its functions by name
    spec.loader.exec_module(bench)
    args = argparse.Namespace(source="embedded", preset="peptide-crystal-realistic", n=1, resolutions=[2.0],
                              workers=1, split="test", n_iter=bench.N_ITER, n_finish=bench.N_FINISH)  # fmt: skip
    messages: list[str] = []
    results = bench.run_all(args, messages.append)
    json.loads(json.dumps(results))
    assert results["held_out"]["checked"] and results["held_out"]["shared_entries"] == 0
    assert len(results["rows"]) == len(bench.LEVELS) * len(bench.METHODS)
    (record,) = results["structures"]
    for level in record["levels"]:
        start = level["none"]["phase_error_weighted_deg"]
        assert 0 < start < 90 and level["none"]["seconds"] < level["learned"]["seconds"]
        for method in bench.METHODS[1:]:
            v = level[method]
            assert v["verdict"] in ("solved", "uncertain", "not solved") and 0 <= v["phase_error_weighted_deg"] <= 180
        assert level["histogram-timed"]["seconds"] >= level["learned"]["seconds"] * 0.9  # the same time, or more
    starts = [lv["none"]["phase_error_weighted_deg"] for lv in record["levels"]]
    assert starts[0] < starts[-1]  # fewer atoms, larger errors: larger phase errors
    table = bench.render(results)
    assert table.count("\n| 2.0 |") == len(bench.LEVELS) * len(bench.METHODS) and "1 test crystals" in table
