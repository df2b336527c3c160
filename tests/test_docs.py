"""The documentation runs: every ```python block of the README and of every page under docs/ executes."""

from __future__ import annotations

import ast
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

BENCHMARKS = ROOT / "benchmarks"
RESULTS = BENCHMARKS / "results"
TABLES = {  # document: [(benchmark script, results file)]; the document quotes render(results) of each
    "docs/tables/cell_transfer_table.md": [("cell_transfer", "cell_transfer.json")],
    "docs/tables/convergence_table.md": [("convergence", "convergence.json")],
    "docs/tables/network_choice_table.md": [("network_choice", "network_choice.json")],
    "docs/tables/symmetry_table.md": [("symmetry", "symmetry.json")],
    "docs/tables/phasing_table.md": [("phasing", "phasing.json")],
    "docs/tables/learned_table.md": [
        ("phasing", "learned_dense_2.0_clean.json"),
        ("phasing", "learned_paper2_1.5_clean.json"),
    ],
    "docs/tables/verdict_table.md": [("verdict", "verdict.json")],
    "docs/tables/flipping_table.md": [("flipping", "flipping.json")],
    "docs/tables/peers_table.md": [("peers", "peers.json")],
    "docs/models.md": [("models", "models.json")],
    "docs/tables/learning_curve_table.md": [("learning_curve", "learning_curve.json")],
    "docs/tables/report_task_table.md": [("report_task", "report_task.json")],
    "docs/training.md": [("learning_curve", "learning_curve.json"), ("report_task", "report_task.json")],
    "docs/tables/demo_table.md": [("demo", "demo.json")],
    "docs/demo.md": [("demo", "demo.json")],
    "docs/tables/real_data_table.md": [("real_small_molecules", "real_small_molecules.json")],
    "docs/tables/peptides_table.md": [("peptides", "peptides.json")],
    "docs/tables/peptide_crystals_table.md": [("peptide_crystals", "peptide_crystals.json")],
    "docs/tables/peptide_extension_table.md": [("peptide_extension", "peptide_extension.json")],
}
RENDER = """
import importlib, json, platform, sys
try:  # the peers' cctbx: its boost-python must load before torch and gemmi do (the other order segfaults)
    import cctbx.array_family.flex, smtbx.ab_initio.charge_flipping
except ImportError:
    pass
import gemmi, os, patterson, time, torch
os.cpu_count = lambda: 999
time.strftime = lambda *args: "1900-01-01 00:00"
platform.platform = lambda *args, **kwargs: "Elsewhere-0.0-a-machine-that-never-ran-a-benchmark"  # #27: provenance
torch.__version__ = gemmi.__version__ = patterson.__version__ = "0.0-elsewhere"  # from the JSON, not this machine
sys.path.insert(0, {folder!r})
try:
    m = importlib.import_module({name!r})  # a process each: the peers' cctbx, loaded first or not at all
except ImportError as exc:
    print("missing", exc.name)
    sys.exit(3)
r = json.load(open({results!r}))
sys.stdout.write(m.render(r))
"""


def _render(name: str, results: str) -> str:
    """What benchmarks/NAME.py writes as its table from its results file; skipped where the benchmark's optional
    dependencies (cctbx for the peers) are not installed."""
    import subprocess
    import sys

    code = RENDER.format(folder=str(BENCHMARKS), name=name, results=str(RESULTS / results))
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=120)
    if done.returncode == 3:
        pytest.skip(f"benchmarks/{name}.py needs {done.stdout.split()[-1]}")
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout


@pytest.mark.parametrize("doc", sorted(TABLES))
def test_the_docs_quote_the_benchmark_results(doc):
    """Every table in the docs is what its benchmark renders from the JSON it wrote: nothing typed in by hand."""
    text = (ROOT / doc).read_text()
    for name, results in TABLES[doc]:
        assert _render(name, results).strip() in text, f"{doc} does not quote {results} as {name}.py renders it"


def test_every_table_page_is_checked():
    pages = {str(p.relative_to(ROOT)) for p in (ROOT / "docs" / "tables").glob("*.md")}
    assert pages and pages <= set(TABLES), sorted(pages - set(TABLES))
    assert not list((ROOT / "docs").glob("*_table.md")), "tables live in docs/tables/"


def _scripts() -> dict[str, ast.Module]:
    return {p.stem: ast.parse(p.read_text()) for p in sorted(BENCHMARKS.glob("*.py"))}


def test_benchmarks_share_one_harness():
    """#28: no benchmark edits sys.path (``python benchmarks/NAME.py`` has its folder on it already); every one
    with a docs table renders it with ``render(results)`` from the whole results file; every file is written
    through benchmarks/_common.py (all-or-nothing)."""
    tabled = {name for pairs in TABLES.values() for name, _ in pairs}
    for name, tree in _scripts().items():
        text = (BENCHMARKS / f"{name}.py").read_text()
        assert not re.search(r"sys\.path\s*(\.|\+?=|\[)", text), f"benchmarks/{name}.py edits sys.path"
        renders = [f for f in tree.body if isinstance(f, ast.FunctionDef) and f.name == "render"]
        if name in tabled or '"--table"' in text or '"--card"' in text:
            assert renders and len(renders[0].args.args) == 1, f"benchmarks/{name}.py: a table, no render(results)"
        if name != "_common":
            assert ".write_text(" not in text and "json.dump(" not in text, f"benchmarks/{name}.py writes by itself"
            assert "atomic_write" not in text, f"benchmarks/{name}.py: write through _common"


@pytest.mark.parametrize("path", sorted(p.name for p in RESULTS.glob("*.json")))
def test_results_spell_the_run_metadata_one_way(path):
    """Provenance sits under ``run``, spelled as benchmarks/_common.py's run_metadata spells it."""
    results = json.loads((RESULTS / path).read_text())
    spelled = {"patterson", "torch", "gemmi", "python", "platform", "machine", "cpu_count", "torch_threads", "date",
               "command"}  # fmt: skip
    assert "patterson" in results["run"] and set(results["run"]) <= spelled, sorted(results["run"])
    old = {"meta", "version", "platform", "cpu_count", "torch_threads", "package_version", "patterson_version"}
    assert not old & set(results), sorted(old & set(results))


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
