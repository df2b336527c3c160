"""The house style that a test can hold (#16): short functions, stages importing only from earlier stages."""

from __future__ import annotations

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src" / "patterson"
STAGES = ["structures", "cells", "physics", "maps", "datasets", "models", "training", "evaluation", "phasing",
          "solving", "demo", "cli"]  # fmt: skip
GROUND = {"errors", "files", "runtime", "weights", "__init__", "__main__"}  # used by every stage


def _functions():
    for path in sorted(SRC.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                yield path, node


def test_no_function_is_longer_than_80_lines():
    long = [f"{p.relative_to(SRC)}:{n.lineno} {n.name} ({n.end_lineno - n.lineno + 1})" for p, n in _functions()
            if n.end_lineno - n.lineno + 1 > 80]  # fmt: skip
    assert not long, long


def _stage(module: str) -> str:
    return module.split(".")[1] if module.count(".") else ""


def test_a_stage_imports_only_from_earlier_stages():
    """structures → cells → physics → maps → datasets → models → training → evaluation → phasing → solving → demo
    → cli; the ground floor (errors, files, runtime) serves every stage. Lazy imports inside functions count too."""
    wrong = []
    for path in sorted(SRC.rglob("*.py")):
        here = path.relative_to(SRC).parts[0].removesuffix(".py")
        if here in GROUND:
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("patterson."):
                there = _stage(node.module)
                if there in GROUND or there not in STAGES:
                    continue
                if STAGES.index(there) > STAGES.index(here):
                    wrong.append(f"{path.relative_to(SRC)}:{node.lineno} imports {node.module}")
    assert not wrong, wrong


def test_evaluation_reads_no_datasets_and_applies_no_networks():
    for path in (SRC / "evaluation").glob("*.py"):
        text = path.read_text()
        assert "patterson.training" not in text and "patterson.datasets" not in text, path.name
