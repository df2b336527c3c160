"""What every benchmark shares: the run metadata (one spelling, under the key ``run`` of every results file), writing
its JSON and its docs table all-or-nothing, and the held-out test sets of a shipped network's training data.

A script runs as ``python benchmarks/NAME.py``: its own folder is on ``sys.path``, so ``import _common`` works."""

from __future__ import annotations

import json
import math
import os
import platform
import sys
import time
from pathlib import Path
from typing import Any

import gemmi
import torch

import patterson
from patterson.datasets import GenerateConfig, StoredDataset, build_pool, config_for_test_split, generate, make_config
from patterson.files import atomic_write

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"  # the JSON files
TABLES = ROOT / "docs" / "tables"  # the Markdown tables the docs quote


# --- provenance and writing -----------------------------------------------------------------------------------------


def run_metadata() -> dict[str, Any]:
    """Where, when and how a benchmark ran: the value of ``run`` in its results file (renderers read provenance
    from there, never from the machine that renders)."""
    return {
        "patterson": patterson.__version__,
        "torch": torch.__version__,
        "gemmi": gemmi.__version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "machine": platform.machine(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "date": time.strftime("%Y-%m-%d %H:%M"),
        "command": " ".join(["python", *sys.argv]),
    }


def write_text(path: str | Path, text: str) -> None:
    """Write ``text`` to ``path`` all-or-nothing (a reader never sees half a file), making its folder."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, lambda tmp: Path(tmp).write_text(text))


def write_json(path: str | Path, results: dict, indent: int = 1, one_line: tuple[str, ...] = (), **dumps) -> None:
    """Write ``results`` as JSON all-or-nothing; the keys in ``one_line`` go last, each on a single compact line
    (long per-structure records). ``dumps``: further arguments of :func:`json.dumps` (``default``, ``allow_nan``)."""
    text = json.dumps({k: v for k, v in results.items() if k not in one_line}, indent=indent, **dumps)
    tail = [
        f"{' ' * indent}{json.dumps(k)}: {json.dumps(results[k], separators=(',', ':'), **dumps)}"
        for k in one_line
        if k in results
    ]
    if tail:
        head = "{\n" if text == "{}" else text[:-2] + ",\n"  # only one-line keys: nothing before them
        text = head + ",\n".join(tail) + "\n}"
    write_text(path, text + "\n")


# --- test sets ------------------------------------------------------------------------------------------------------

_POOLS: dict[tuple[str, str], tuple] = {}  # (preset, source) -> build_pool's result: a source is read once a preset


def held_out_split(
    preset: str,
    d_min: float,
    condition: dict,
    source: str,
    n: int,
    folder: Path,
    trained: dict | None = None,
    split: str = "test",
) -> StoredDataset:
    """About ``n`` examples (float32 maps) of ``preset`` made from the real chains of ``source`` at ``d_min`` with
    ``condition`` (noise, missing), generated into ``folder``.

    ``trained``: the dataset config a network was trained on; the examples then come from the entries of its
    ``split`` only (val or test: same seed and split fractions), which that network never trained on. Without it,
    a test-only set (seed 7)."""
    if trained is None:
        config, split = config_for_test_split(preset, source, n, seed=7, d_min=d_min, **condition), "test"
    else:
        splits = tuple(trained["splits"])
        share = splits[("train", "val", "test").index(split)]
        config = make_config(
            preset, source=source, n=math.ceil(n * sum(splits) / share), seed=trained["seed"], splits=splits,
            only_splits=[split], map_dtype="float32", d_min=d_min, **condition,
        )  # fmt: skip
    if (preset, source) not in _POOLS:
        _POOLS[preset, source] = build_pool(config)
    generate(config, folder, progress=False, pool=_POOLS[preset, source])
    return StoredDataset(folder, split, normalise=False)


def remake_training_data(
    trained: dict, folder: Path, splits: tuple[str, ...] = ("test",), source: str | None = None
) -> Path:
    """Remake ``splits`` of the very dataset a network was trained on (``trained``: its config, as
    :func:`patterson.networks.trained_on` gives it) in ``folder``, float32 maps; ``source`` replaces the folder it
    was read from."""
    config = dict(trained, only_splits=list(splits), map_dtype="float32")
    if source is not None:
        config["source"] = source
    generate(GenerateConfig.from_dict(config), folder, progress=False)
    return folder
