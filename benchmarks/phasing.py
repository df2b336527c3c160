"""The headline comparison: where does each phasing method win?

For the ``paper-2`` (one dipeptide in a mostly empty 12 Å cell) and ``dense-protein`` (dipeptides packed at
35 Å³/atom) presets, at d_min 1.0, 1.5, 2.0 and 2.5 Å, with clean data and with 5% amplitude noise plus 10% missing
reflections, this makes a small test split from real chains, phases it with charge flipping, HIO and (given a
checkpoint) the network and the hybrid, and scores every map as `patterson evaluate` does: solved fraction
(F-weighted phase error < 40° after the origin and hand search), median F-weighted phase error, seconds per
structure, next to the chance level (random phases with the true amplitudes).

    python benchmarks/phasing.py [--source ../shared/data/pdb] [--n 12] [--checkpoint CKPT]
        [--out benchmarks/results/phasing.json] [--table docs/phasing_table.md]

Writes JSON and a Markdown table (kept in the docs; regenerate it with this one command).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
from pathlib import Path

import torch

import patterson
from patterson.datasets import StoredDataset
from patterson.evaluation.report import SOLVED_THRESHOLD_DEG
from patterson.phasing import compare_methods, load_split, make_test_split

PRESETS = ("paper-2", "dense-protein")
D_MINS = (1.0, 1.5, 2.0, 2.5)
CONDITIONS = {"clean": dict(noise=0.0, missing=0.0), "5% noise, 10% missing": dict(noise=0.05, missing=0.10)}


def make_split(preset: str, d_min: float, condition: dict, source: str, n: int, folder: Path) -> StoredDataset:
    """A test split of ``n`` examples (float32 maps) made from real chains with this preset and degradation."""
    return make_test_split(preset, folder, source=source, n=n, seed=7, d_min=d_min, **condition)


def run_condition(ds: StoredDataset, d_min: float, model, norm: dict | None) -> dict:
    methods = ("chance", "charge-flip", "hio") + (("model", "hybrid") if model is not None else ())
    runs = compare_methods(load_split(ds, d_min), methods, model=model, norm=norm)
    return {m: run.summary() for m, run in runs.items()}


def table(results: dict) -> str:
    methods = [m for m in ("charge-flip", "hio", "model", "hybrid", "chance") if any(m in r for r in results["runs"])]
    head = "| preset | d_min (Å) | data | " + " | ".join(methods) + " |"
    lines = [
        "Solved fraction (F-weighted phase error < 40°) · median F-weighted phase error · seconds per structure.",
        "",
        head,
        "|" + " --- |" * (3 + len(methods)),
    ]
    for r in results["runs"]:
        cells = []
        for m in methods:
            if m not in r:
                cells.append("–")
                continue
            v = r[m]
            sec = "" if m == "chance" else f" · {v['seconds_per_structure']:.2f} s"
            cells.append(f"{100 * v['solved_fraction']:.0f}% · {v['median_phase_error_weighted_deg']:.0f}°{sec}")
        lines.append(f"| {r['preset']} | {r['d_min']:.1f} | {r['condition']} | " + " | ".join(cells) + " |")
    lines += [
        "",
        f"{results['n_per_condition']} test structures per row from `{results['source']}`; {results['platform']}, "
        f"{results['torch_threads']} torch threads; patterson {results['version']}.",
    ]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--source", default="../shared/data/pdb", help="folder of PDB files, or embedded")
    parser.add_argument("--n", type=int, default=12, help="test structures per condition")
    parser.add_argument("--checkpoint", default=None, help="a trained network for the model and hybrid columns")
    parser.add_argument("--presets", nargs="+", default=list(PRESETS))
    parser.add_argument("--d-min", nargs="+", type=float, default=list(D_MINS))
    parser.add_argument("--out", default="benchmarks/results/phasing.json")
    parser.add_argument("--table", default="docs/phasing_table.md")
    args = parser.parse_args()

    model = norm = None
    if args.checkpoint:
        from patterson.training import load_checkpoint, load_model

        model = load_model(args.checkpoint)
        norm = load_checkpoint(args.checkpoint).get("normalisation")
    results = {
        "benchmark": "phasing methods on paper-2 and dense-protein test structures",
        "source": args.source,
        "n_per_condition": args.n,
        "solved_threshold_deg": SOLVED_THRESHOLD_DEG,
        "checkpoint": args.checkpoint,
        "platform": platform.platform(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "version": patterson.__version__,
        "runs": [],
    }
    with tempfile.TemporaryDirectory() as tmp:
        for preset in args.presets:
            for d_min in args.d_min:
                for name, condition in CONDITIONS.items():
                    folder = Path(tmp) / f"{preset}-{d_min}-{len(results['runs'])}"
                    ds = make_split(preset, d_min, condition, args.source, args.n, folder)
                    run = {"preset": preset, "d_min": d_min, "condition": name, "n": len(ds)}
                    run.update(run_condition(ds, d_min, model, norm))
                    results["runs"].append(run)
                    summary = [
                        f"{m} {100 * run[m]['solved_fraction']:.0f}%/{run[m]['median_phase_error_weighted_deg']:.0f}°"
                        for m in ("charge-flip", "hio", "model", "hybrid", "chance")
                        if m in run
                    ]
                    print(f"{preset:14s} {d_min:.1f} Å {name:22s} " + "  ".join(summary), flush=True)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(results, indent=2) + "\n")
    Path(args.table).write_text(table(results))


if __name__ == "__main__":
    main()
