"""Charge-flipping rules, measured: what is flipped (F, E, sharpened), δ (a multiple of σ, or from the map as a voxel
quantile), the polish (positivity or low-density elimination) and restarts, on the same data and budget.

Data: the COD crystals of benchmarks/peers.py (85 CIFs at 0.8 Å, 5% noise, 5% missing, expanded to P1) and
``paper-2`` test structures at 1.0 Å (12, from ``--source``). Every variant runs 4 starts × 300 cycles on one
thread; solved = F-weighted phase error < 40° after the origin and hand search; seconds per structure.

    python benchmarks/flipping.py [--source ../shared/data/pdb] [--n 12]
        [--out benchmarks/results/flipping.json] [--table docs/tables/flipping_table.md]
"""

from __future__ import annotations

import argparse
import time

import peers  # before torch: cctbx's boost-python must load first (else it segfaults)

# isort: split
import numpy as np
import torch

from _common import run_metadata, write_json, write_text
from patterson.evaluation.report import SOLVED_THRESHOLD_DEG
from patterson.phasing import charge_flip, method_options
from patterson.physics import grid_shape

VARIANTS = {
    "F, δ 0.8σ (default)": {},
    "F, δ 1.1σ": {"delta_sigma": 1.1},
    "F, δ 1.3σ": {"delta_sigma": 1.3},
    "F, δ at 80% of voxels": {"delta_fraction": 0.8},
    "F, δ at 90% of voxels": {"delta_fraction": 0.9},
    "E, δ 1.2σ (default)": {"amplitudes": "E"},
    "E, δ 1.1σ (cctbx's)": {"amplitudes": "E", "delta_sigma": 1.1},
    "E, δ 0.8σ": {"amplitudes": "E", "delta_sigma": 0.8},
    "E, δ at 80% of voxels": {"amplitudes": "E", "delta_fraction": 0.8},
    "sharpened, δ 0.8σ": {"amplitudes": "sharpened"},
    "E, LDE polish": {"amplitudes": "E", "polish": "lde"},
    "E, 3 restarts, early stop": {"amplitudes": "E", "restarts": 3, "stop_early": True},
}


def run_variant(cases: list[dict], options: dict) -> dict:
    solved, seconds = 0, []
    for case in cases:
        cell, hkl = case["cell"], case["hkl"]
        shape = grid_shape(cell, float(cell.d_spacing(hkl).min()))
        fo = torch.as_tensor(case["f_obs"], dtype=torch.float64)[None]
        t0 = time.perf_counter()
        observed = torch.as_tensor(case["measured"])[None]
        res = charge_flip(fo, hkl, cell, shape, method_options("charge-flip", **options), observed=observed)
        seconds.append(time.perf_counter() - t0)
        f_p1 = case["f_obs"] * np.exp(1j * res.phi_rad[0].numpy())
        solved += peers.score(case, f_p1, None)["solved"]
    return {"n": len(cases), "n_solved": int(solved), "seconds_per_structure": float(np.mean(seconds))}


def render(results: dict) -> str:
    """The Markdown table of docs/tables/flipping_table.md from the whole results file: solved counts (and seconds
    per structure) per variant and data set."""
    rows = results["rows"]
    data = list(next(iter(rows.values())))
    lines = ["| charge flipping | " + " | ".join(data) + " |", "|---" * (len(data) + 1) + "|"]
    for name, r in rows.items():
        cells = [f"{r[d]['n_solved']}/{r[d]['n']} ({r[d]['seconds_per_structure']:.2f} s)" for d in data]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--source", default="../shared/data/pdb")
    p.add_argument("--n", type=int, default=12)
    p.add_argument("--out", default="benchmarks/results/flipping.json")
    p.add_argument("--table", default="docs/tables/flipping_table.md")
    args = p.parse_args()
    torch.set_num_threads(1)
    data = {"COD crystals, 0.8 Å": peers.crystal_cases(0.8),
            "paper-2, 1.0 Å": peers.preset_cases("paper-2", 1.0, args.source, args.n)}  # fmt: skip
    rows = {}
    for name, options in VARIANTS.items():
        rows[name] = {d: run_variant(cases, options) for d, cases in data.items()}
        print(name, {d: r["n_solved"] for d, r in rows[name].items()}, flush=True)
    results = {"run": run_metadata(), "solved_threshold_deg": SOLVED_THRESHOLD_DEG, "budget": "4 starts × 300 cycles",
               "variants": VARIANTS, "rows": rows}  # fmt: skip
    write_json(args.out, results)
    text = render(results)
    write_text(args.table, "<!-- written by benchmarks/flipping.py -->\n\n" + text)
    print(text)


if __name__ == "__main__":
    main()
