"""The house style that a test can hold (#16): short functions, stages importing only from earlier stages."""

from __future__ import annotations

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src" / "patterson"
STAGES = ["shelx", "structures", "ideal", "cells", "symmetry", "physics", "maps", "datasets", "models", "networks",
          "evaluation", "phasing", "solving", "demo", "training", "cli"]  # fmt: skip
# training is a side wing: it may use every stage, and only the CLI uses it (recipes and benchmarks are outside src)
GROUND = {"errors", "files", "runtime", "config", "weights", "minimize", "__init__", "__main__"}  # used by every stage


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
    """structures → cells, symmetry → physics → maps → datasets → models → networks → evaluation → phasing →
    solving → demo → cli, with training a side wing that only the CLI imports (#28: applying a network needs no
    trainer); the ground floor (errors, files, runtime, config) serves every stage. Lazy imports count too."""
    wrong = []
    for path in sorted(SRC.rglob("*.py")):
        here = path.relative_to(SRC).parts[0].removesuffix(".py")
        if here in GROUND:
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            modules = [a.name for a in node.names] if isinstance(node, ast.Import) else []
            modules += [node.module] if isinstance(node, ast.ImportFrom) and node.module else []
            for module in (m for m in modules if m.startswith("patterson.")):
                there = _stage(module)
                if there in GROUND or there not in STAGES:
                    continue
                if STAGES.index(there) > STAGES.index(here):
                    wrong.append(f"{path.relative_to(SRC)}:{node.lineno} imports {module}")
    assert not wrong, wrong


def test_evaluation_reads_no_datasets_and_applies_no_networks():
    for path in (SRC / "evaluation").glob("*.py"):
        text = path.read_text()
        assert "patterson.training" not in text and "patterson.datasets" not in text, path.name


def test_no_function_takes_more_than_12_parameters():
    """#28: a method's many settings travel as one options object, not as a long parameter list."""
    many = []
    for p, n in _functions():
        args = n.args
        count = len(args.posonlyargs) + len(args.args) + len(args.kwonlyargs) + bool(args.vararg) + bool(args.kwarg)
        count -= bool(args.args) and args.args[0].arg in ("self", "cls")
        if count > 12:
            many.append(f"{p.relative_to(SRC)}:{n.lineno} {n.name} ({count})")
    assert not many, many


def test_no_module_is_longer_than_600_lines():
    sizes = {p: len(p.read_text().splitlines()) for p in sorted(SRC.rglob("*.py"))}
    long = [f"{p.relative_to(SRC)} ({n})" for p, n in sizes.items() if n > 600]
    assert not long, long


def test_checkpoints_are_read_in_one_module():
    """#28: torch.load is called in patterson/networks/checkpoint.py only (weights_only=True, one-line errors)."""
    def loads(path: Path) -> bool:
        return any(isinstance(n, ast.Attribute) and n.attr == "load" and getattr(n.value, "id", "") == "torch"
                   for n in ast.walk(ast.parse(path.read_text())))  # fmt: skip

    calls = [str(p.relative_to(SRC)) for p in sorted(SRC.rglob("*.py")) if loads(p)]
    assert calls == ["networks/checkpoint.py"], calls
