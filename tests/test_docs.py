"""The documentation runs: every ```python block of the README and of every page under docs/ executes."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
RUN = ("README.md", *sorted(str(p.relative_to(ROOT)) for p in (ROOT / "docs").glob("*.md")))  # every page
BLOCKS = {
    f"{doc}:{i}": block
    for doc in RUN
    for i, block in enumerate(re.findall(r"```python\n(.*?)```", (ROOT / doc).read_text(), flags=re.S))
}


@pytest.mark.parametrize("name", sorted(BLOCKS))
def test_every_python_block_of_the_docs_runs(name, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    namespace: dict = {}
    exec(compile(BLOCKS[name], name, "exec"), namespace)  # noqa: S102


def test_readme_test_command_is_what_ci_runs():
    readme = (ROOT / "README.md").read_text()
    ci = (ROOT / ".ci" / "run").read_text().strip().splitlines()[-1].strip()
    assert ci in readme


# --- numbers in the docs come from benchmarks/results --------------------------------------------------------------

RESULTS = ROOT / "benchmarks" / "results"
TABLES = {  # document: [(benchmark script, results file, the expression that renders its table from results r)]
    "docs/cell_transfer_table.md": [("cell_transfer", "cell_transfer.json", "m.table(r)")],
    "docs/convergence_table.md": [("convergence", "convergence.json", "m.table(r)")],
    "docs/network_choice_table.md": [("network_choice", "network_choice.json", "m.table(r['rows'])")],
    "docs/symmetry_table.md": [("symmetry", "symmetry.json", "m.tables(r['origin'], r['centric'])")],
    "docs/phasing_table.md": [("phasing", "phasing.json", "m.table(r)")],
    "docs/learned_table.md": [
        ("phasing", "learned_dense_2.0_clean.json", "m.table(r)"),
        ("phasing", "learned_paper2_1.5_clean.json", "m.table(r)"),
    ],
    "docs/verdict_table.md": [("verdict", "verdict.json", "m.table(r)")],
    "docs/flipping_table.md": [("flipping", "flipping.json", "m.table(r)")],
    "docs/peers_table.md": [("peers", "peers.json", "m.table(r['rows'], tuple(r['rows'][0]['methods']))")],
    "docs/models.md": [("models", "models.json", "m.card(r)")],
    "docs/learning_curve_table.md": [("learning_curve", "learning_curve.json", "m.table(r)")],
    "docs/report_task_table.md": [("report_task", "report_task.json", "m.table(r['tasks'])")],
    "docs/training.md": [
        ("learning_curve", "learning_curve.json", "m.table(r)"),
        ("report_task", "report_task.json", "m.table(r['tasks'])"),
    ],
    "docs/demo_table.md": [("demo", "demo.json", "r['table']")],
    "docs/demo.md": [("demo", "demo.json", "r['table']")],
}
RENDER = """
import importlib, json, platform, sys
import gemmi, os, patterson, time, torch
os.cpu_count = lambda: 999
time.strftime = lambda *args: "1900-01-01 00:00"
platform.platform = lambda *args, **kwargs: "Elsewhere-0.0-a-machine-that-never-ran-a-benchmark"  # #27: provenance
torch.__version__ = gemmi.__version__ = patterson.__version__ = "0.0-elsewhere"  # from the JSON, not this machine
sys.path.insert(0, {folder!r})
try:
    m = importlib.import_module({name!r})  # the peers import cctbx, which must come before torch: a process each
except ImportError as exc:
    print("missing", exc.name)
    sys.exit(3)
r = json.load(open({results!r}))
sys.stdout.write({expr})
"""


def _render(name: str, results: str, expr: str) -> str:
    """What benchmarks/NAME.py writes as its table from its results file; skipped where the benchmark's optional
    dependencies (cctbx for the peers) are not installed."""
    import subprocess
    import sys

    code = RENDER.format(folder=str(ROOT / "benchmarks"), name=name, results=str(RESULTS / results), expr=expr)
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=120)
    if done.returncode == 3:
        pytest.skip(f"benchmarks/{name}.py needs {done.stdout.split()[-1]}")
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout


@pytest.mark.parametrize("doc", sorted(TABLES))
def test_the_docs_quote_the_benchmark_results(doc):
    """Every table in the docs is what its benchmark renders from the JSON it wrote: nothing typed in by hand."""
    text = (ROOT / doc).read_text()
    for name, results, expr in TABLES[doc]:
        assert _render(name, results, expr).strip() in text, f"{doc} does not quote {results} as {name}.py renders it"


def test_every_table_page_is_checked():
    pages = {str(p.relative_to(ROOT)) for p in (ROOT / "docs").glob("*_table.md")}
    assert pages <= set(TABLES), sorted(pages - set(TABLES))


def test_every_shipped_network_has_a_model_card():
    """#17: docs/models.md (rendered from models.json) has a card for each file in src/patterson/weights/, made
    from that very file (its size), with held-out test metrics next to chance."""
    weights = sorted((ROOT / "src" / "patterson" / "weights").glob("*.pt"))
    cards = {r["about"]["name"]: r for r in json.loads((RESULTS / "models.json").read_text())["models"]}
    assert sorted(cards) == [p.stem for p in weights]
    for path in weights:
        about = cards[path.stem]["about"]
        assert abs(about["file_mb"] - path.stat().st_size / 1e6) < 0.01, path.name  # the card is of this file
        assert f"## `{path.stem}`" in (ROOT / "docs" / "models.md").read_text()
        assert cards[path.stem]["network"]["n"] >= 48
