"""Radius of convergence: the solved fraction against the phase error of the start, every method from the same starts.

A method that finishes a structure from 60° but not from random phases needs a start that good; where the learned
real-space step helps is where this radius grows. For held-out ``dense-protein`` structures (the shipped
density-modification network's test entries), starting phases are the true ones with errors uniform in ±2e (mean
absolute error e = 30°, 45°, 60°, 75° and 90°, random), one start each; every method runs from them with its
defaults: the learned loop, the same loop with the histogram control step, charge flipping, HIO and RRR. Solved:
F-weighted phase error < 40° after the origin/hand search.

    python benchmarks/convergence.py [--source ../shared/data/pdb] [--n 100] [--checkpoint pretrained]
        [--out benchmarks/results/convergence.json] [--table docs/tables/convergence_table.md]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from _common import held_out_split, run_metadata, write_json, write_text
from patterson.evaluation import score_maps
from patterson.evaluation.report import SOLVED_THRESHOLD_DEG
from patterson.maps import f_from_density
from patterson.networks import find_checkpoint, load_checkpoint, trained_on
from patterson.phasing import learned, load_split, load_step, phase, start_error_phases

ERRORS = (30.0, 45.0, 60.0, 75.0, 90.0)
METHODS = ("learned", "histogram", "charge-flip", "hio", "rrr")


def run_method(method: str, data, phi: torch.Tensor, step) -> tuple[np.ndarray, float]:
    """F-weighted phase errors (B,) of one method from the starting phases ``phi`` (B, M), and its seconds."""
    held = dict(f000=data.f000, observed=data.measured, free=data.free, phi_start=phi)  # each method's defaults
    t = time.perf_counter()
    if method in ("learned", "histogram"):
        res = learned(data.f_obs, data.hkl, data.cell, data.shape, step if method == "learned" else "histogram",
                      **held)  # fmt: skip
    else:
        res = phase(method, data.f_obs, data.hkl, data.cell, data.shape, **held)
    seconds = time.perf_counter() - t
    err = score_maps(res.rho, data.truth, data.cell, data.d_min).phase_error_weighted_deg.numpy()
    return err, seconds


def render(results: dict) -> str:
    """The Markdown table of docs/tables/convergence_table.md from the whole results file."""
    head = "| start error | " + " | ".join(METHODS) + " |"
    lines = [
        "Solved (F-weighted phase error < 40°) from one start per structure · median final F-weighted phase error.",
        "",
        head,
        "|" + " --- |" * (1 + len(METHODS)),
    ]
    for row in results["rows"]:
        label = "random (90°)" if row["start_error_deg"] >= 90 else f"{row['start_error_deg']:.0f}°"
        cells = [
            f"{row[m]['n_solved']}/{row[m]['n']} · {row[m]['median_phase_error_weighted_deg']:.0f}°" for m in METHODS
        ]
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    secs = ", ".join(f"{m} {results['seconds_per_structure'][m]:.2f} s" for m in METHODS)
    lines += [
        "",
        f"{results['n']} held-out `{results['preset']}` structures at {results['d_min']} Å (test entries of "
        f"`{Path(results['network']).name}`), clean data, 5% free set; seconds per structure (mean over rows): "
        f"{secs}. {results['run']['platform']}, {results['run']['torch_threads']} torch threads; "
        f"patterson {results['run']['patterson']}.",
    ]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--source", default="../shared/data/pdb")
    parser.add_argument("--n", type=int, default=100, help="test structures")
    parser.add_argument("--checkpoint", default="pretrained", help="the density-modification network")
    parser.add_argument("--errors", nargs="+", type=float, default=list(ERRORS))
    parser.add_argument("--out", default="benchmarks/results/convergence.json")
    parser.add_argument("--table", default="docs/tables/convergence_table.md")
    args = parser.parse_args()
    path = find_checkpoint(args.checkpoint, data={"preset": "dense-protein"}, task="density-modification")
    trained = trained_on(load_checkpoint(path))
    step = load_step(path)
    with tempfile.TemporaryDirectory() as tmp:
        ds = held_out_split(trained["preset"], trained["d_min"], {}, args.source, args.n, Path(tmp) / "test", trained)
        data = load_split(ds)
    f_true = f_from_density(data.truth, data.hkl, data.cell)  # the phases to corrupt
    results = {
        "benchmark": "radius of convergence", "preset": trained["preset"], "d_min": trained["d_min"],
        "n": len(data), "network": str(path), "solved_threshold_deg": SOLVED_THRESHOLD_DEG,
        "run": run_metadata(), "rows": [],
    }  # fmt: skip
    seconds = {m: [] for m in METHODS}
    for e in args.errors:
        phi = start_error_phases(f_true, e, torch.Generator().manual_seed(int(e)))
        row = {"start_error_deg": e}
        for method in METHODS:
            err, sec = run_method(method, data, phi, step)
            solved = err < SOLVED_THRESHOLD_DEG
            row[method] = {"n_solved": int(solved.sum()), "n": len(err), "solved_fraction": float(solved.mean()),
                           "median_phase_error_weighted_deg": float(np.median(err))}  # fmt: skip
            seconds[method].append(sec / len(err))
        print(f"{e:.0f}°: " + "  ".join(f"{m} {row[m]['n_solved']}/{row[m]['n']}" for m in METHODS), flush=True)
        results["rows"].append(row)
    results["seconds_per_structure"] = {m: float(np.mean(v)) for m, v in seconds.items()}
    write_json(args.out, results, indent=2)
    write_text(args.table, render(results))


if __name__ == "__main__":
    main()
