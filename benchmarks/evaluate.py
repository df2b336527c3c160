"""Benchmark the evaluation metrics: maps scored per second (batched) and the chance level.

Usage: ``python benchmarks/evaluate.py [--device cpu|cuda] [--out benchmarks/results/evaluate.json] [--quick]``

Throughput: ``score_maps`` (origin/hand search on a d_min/4 grid, Newton refinement, aligned map, CCs, phase errors
in 12 shells) on batches of synthetic fragment densities in the paper's two cells (12 Å → 24³, 20 Å → 40³, both at
1.5 Å), and the whole ``evaluate_predictions`` loop (with the chance level, without plots).
Chance level: random phases with the true amplitudes after the same search, 12 Å cell, at 1, 2 and 3 Å, for
fragments without thermal motion (B = 0, the conditions of the notes' reference numbers) and with B = 20 Å².
"""

from __future__ import annotations

import argparse
import logging
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from _common import run_metadata, write_json
from patterson.cells import Cell
from patterson.evaluation import ReportOptions, chance_scores, evaluate_predictions, score_maps
from patterson.maps import density_from_f
from patterson.physics import AtomBatch, grid_shape, miller_indices, structure_factors
from patterson.structures import random_walk

log = logging.getLogger("benchmarks.evaluate")


def fragments(seed: int, cell: Cell, batch: int, n_atoms: int = 14, b_iso: float = 20.0) -> AtomBatch:
    """Random-walk C/N/O molecules (1.5 Å bonds) centred in the cell."""
    rng = np.random.default_rng(seed)
    frac = [random_walk(n_atoms, rng) @ cell.frac.T + 0.5 for _ in range(batch)]
    z = torch.as_tensor(rng.choice([6, 6, 6, 7, 8], size=(batch, n_atoms)))
    full = lambda v: torch.full((batch, n_atoms), v, dtype=torch.float64)  # noqa: E731
    return AtomBatch(torch.tensor(np.array(frac)), z, full(b_iso), full(1.0), cell)


def maps(seed: int, cell: Cell, d_min: float, batch: int, b_iso: float = 20.0) -> torch.Tensor:
    atoms = fragments(seed, cell, batch, b_iso=b_iso)
    hkl = miller_indices(cell, d_min)
    return density_from_f(structure_factors(atoms, hkl), hkl, cell, grid_shape(cell, d_min))  # (B, X, Y, Z)


def throughput(cell_edge: float, batch: int, repeats: int, device: str) -> dict:
    cell, d_min = Cell.cubic(cell_edge), 1.5
    truth = maps(0, cell, d_min, batch).to(device=device, dtype=torch.float32)
    gen = torch.Generator().manual_seed(1)
    pred = torch.roll(truth, shifts=(3, 5, 7), dims=(1, 2, 3))
    pred = pred + 0.3 * float(truth.std()) * torch.randn(truth.shape, generator=gen).to(device)
    score_maps(pred, truth, cell, d_min)  # warm-up
    if device == "cuda":
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(repeats):
        s = score_maps(pred, truth, cell, d_min)
    if device == "cuda":
        torch.cuda.synchronize()
    dt = (time.perf_counter() - t0) / repeats
    batches = [{"prediction": pred, "truth": truth, "cell": cell, "d_min": d_min}] * repeats
    with tempfile.TemporaryDirectory() as tmp:
        t1 = time.perf_counter()
        evaluate_predictions(batches, tmp, method="bench", options=ReportOptions(plots=False))
        dt_eval = (time.perf_counter() - t1) / repeats
    return {
        "grid": list(truth.shape[1:]),
        "cell_A": cell_edge,
        "d_min_A": d_min,
        "batch": batch,
        "reflections": int(s.n_reflections // batch),
        "score_maps_per_s": batch / dt,
        "evaluate_maps_per_s": batch / dt_eval,
        "median_cc_aligned": float(s.cc_aligned.median()),
    }


def chance_levels(n: int, device: str) -> list[dict]:
    out = []
    cell = Cell.cubic(12.0)
    for b_iso in (0.0, 20.0):
        for i, d_min in enumerate((1.0, 2.0, 3.0)):
            truth = maps(100 + i, cell, d_min, n, b_iso=b_iso).to(device)
            row = {"cell_A": 12.0, "d_min_A": d_min, "b_iso": b_iso, "n": n}
            for weight in ("f1", "f1f2"):
                c = chance_scores(truth, cell, d_min, seed=i, weight=weight)
                row[f"phase_error_weighted_{weight}_deg"] = float(c.phase_error_weighted_deg.mean())
            row["phase_error_deg"] = float(c.phase_error_deg.mean())
            row["cc_aligned"] = float(c.cc_aligned.mean())
            row["cc_aligned_median"] = float(c.cc_aligned.median())
            out.append(row)
            log.info("chance %s", row)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" / "evaluate.json"))
    parser.add_argument("--quick", action="store_true", help="small batches, for a smoke test")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    batch, repeats, n_chance = (8, 1, 8) if args.quick else (32, 3, 32)
    result = {
        "run": run_metadata(),
        "device": args.device if args.device == "cpu" else torch.cuda.get_device_name(),
        "load_average_at_start": os.getloadavg()[0],
        "throughput": [throughput(edge, batch, repeats, args.device) for edge in (12.0, 20.0)],
        "chance": chance_levels(n_chance, args.device),
        "chance_reference_notes": {"d_min_A": [1.0, 2.0, 3.0], "phase_error_weighted_deg": [86, 79, 70]}
        | {"cc_aligned": [0.13, 0.23, 0.37]},
    }
    for row in result["throughput"]:
        log.info("throughput %s", row)
    result["load_average_at_end"] = os.getloadavg()[0]
    write_json(args.out, result, indent=2)
    log.info("wrote %s", args.out)


if __name__ == "__main__":
    main()
