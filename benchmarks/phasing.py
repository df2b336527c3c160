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
import time
from pathlib import Path

import numpy as np
import torch

import patterson
from patterson.cells import Cell
from patterson.datasets import StoredDataset, generate, make_config
from patterson.evaluation import random_phase_maps, score_maps
from patterson.evaluation.report import SOLVED_THRESHOLD_DEG
from patterson.phasing import amplitudes_from_patterson, charge_flip, hio, refine_density
from patterson.physics import miller_indices

PRESETS = ("paper-2", "dense-protein")
D_MINS = (1.0, 1.5, 2.0, 2.5)
CONDITIONS = {"clean": dict(noise=0.0, missing=0.0), "5% noise, 10% missing": dict(noise=0.05, missing=0.10)}


def make_split(preset: str, d_min: float, condition: dict, source: str, n: int, folder: Path) -> StoredDataset:
    """A test split of ``n`` examples (float32 maps) made from real chains with this preset and degradation."""
    config = make_config(
        preset, source=source, n=n, d_min=d_min, splits=(0.0, 0.0, 1.0), map_dtype="float32", seed=7, **condition
    )
    generate(config, folder, progress=False)
    return StoredDataset(folder, "test", normalise=False)


def load_batch(ds: StoredDataset):
    items = [ds[i] for i in range(len(ds))]
    cell = Cell(*[float(x) for x in items[0]["cell"]])
    pat = torch.stack([it["input"][0] for it in items]).double()  # (B, X, Y, Z), physical units
    truth = torch.stack([it["target"][0] for it in items]).double()
    f000 = torch.tensor([float(it["z"][: it["n_atoms"]].sum()) for it in items], dtype=torch.float64)
    return cell, pat, truth, f000


def score(pred: torch.Tensor, truth: torch.Tensor, cell: Cell, d_min: float, seconds: float) -> dict:
    s = score_maps(pred, truth, cell, d_min)
    err = s.phase_error_weighted_deg.numpy()
    return {
        "solved_fraction": float(np.mean(err < SOLVED_THRESHOLD_DEG)),
        "median_phase_error_weighted_deg": float(np.median(err)),
        "median_cc_aligned": float(np.median(s.cc_aligned.numpy())),
        "seconds_per_structure": seconds / len(err),
    }


def run_condition(ds: StoredDataset, d_min: float, model, norm: dict | None) -> dict:
    cell, pat, truth, f000 = load_batch(ds)
    shape = tuple(truth.shape[-3:])
    hkl = miller_indices(cell, d_min)
    f_obs = amplitudes_from_patterson(pat, hkl, cell)
    hio(f_obs[:1], hkl, cell, shape, n_iter=2, n_polish=0, n_starts=1)  # warm-up: timings exclude first-call costs
    chance = random_phase_maps(truth, cell, d_min, torch.Generator().manual_seed(0))  # true |F|, random phases
    out = {"chance": score(chance, truth, cell, d_min, 0.0)}
    t = time.perf_counter()
    rho = charge_flip(f_obs, hkl, cell, shape).rho
    out["charge-flip"] = score(rho, truth, cell, d_min, time.perf_counter() - t)
    t = time.perf_counter()
    rho = hio(f_obs, hkl, cell, shape, f000=f000).rho
    out["hio"] = score(rho, truth, cell, d_min, time.perf_counter() - t)
    if model is not None:
        t = time.perf_counter()
        with torch.no_grad():
            pred = model((pat / norm["input"]).float()[:, None])[:, 0].double() * norm["target"]
        out["model"] = score(pred, truth, cell, d_min, time.perf_counter() - t)
        t = time.perf_counter()
        rho = refine_density(pred, f_obs, hkl, cell, method="hio", f000=f000).rho
        out["hybrid"] = score(rho, truth, cell, d_min, time.perf_counter() - t + out["model"]["seconds_per_structure"])
    return out


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
