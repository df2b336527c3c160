"""Benchmark ``patterson solve``: seconds per solve of a real fragment in 12 Å and 20 Å P1 cells.

A dipeptide-sized fragment (about 12 atoms, consecutive residues of the embedded X-ray chain, B = 20 Å²)
centred in a cubic cell; exact amplitudes to d_min 1.5 Å written as an MTZ (F, SIGF) with gemmi; then the whole
command as a user runs it (read, merge, phasing: the shipped network's start refined by HIO and HIO from random
starts, peaks, all five output files) with the default settings (400 iterations, 4 starts). Also reports the map
CC with the truth after the origin and hand search, so the time is that of a solve, not of a failure.

The real example: the deposited amplitudes of PDB 5E5Z (``../shared/data/real/5e5z/``, P2₁, 1.66 Å) solved with the
defaults, its verdict, R-work, R-free and their random-phase reference, and the map CC with the deposited model's
map (its P1 structure factors at the measured reflections, B as deposited) after the origin and hand search,
next to random phases with the observed amplitudes.

    python benchmarks/solve.py [--out benchmarks/results/solve.json] [--repeats 3]
"""

from __future__ import annotations

import argparse
import dataclasses
import tempfile
import time
from pathlib import Path

import gemmi
import numpy as np
import torch

from _common import run_metadata, write_json
from patterson.cells import Cell, centre_in_cell, expand_to_p1
from patterson.evaluation import score_maps
from patterson.maps import density_from_f
from patterson.physics import AtomBatch, miller_indices, structure_factors
from patterson.solving import SolveConfig, solve_to_folder
from patterson.solving.solve import SOLVE_PHASING
from patterson.structures import Atoms, read_structure

D_MIN = 1.5


def fragment(n_atoms: int = 12) -> Atoms:
    """The first run of whole consecutive residues with about n_atoms heavy atoms of the embedded entry."""
    atoms = read_structure("embedded")
    keys = list(dict.fromkeys(atoms.residues))
    chosen, count = [], 0
    for key in keys:
        chosen.append(key)
        count += int(np.sum(atoms.residues == key))
        if count >= n_atoms:
            break
    keep = np.isin(atoms.residues, chosen) & (atoms.elements != "H")
    n = int(keep.sum())
    return atoms.replace(
        xyz=atoms.xyz[keep],
        elements=atoms.elements[keep],
        b_iso=np.full(n, 20.0),
        occ=np.ones(n),
        residues=atoms.residues[keep],
        cell=None,
        spacegroup=None,
    )


def write_mtz(path: Path, hkl: np.ndarray, f: np.ndarray, cell: Cell) -> None:
    mtz = gemmi.Mtz(with_base=True)
    mtz.spacegroup = gemmi.SpaceGroup("P 1")
    mtz.set_cell_for_all(cell.to_gemmi())
    mtz.add_dataset("bench")
    mtz.add_column("F", "F")
    mtz.add_column("SIGF", "Q")
    amp = np.abs(f)
    mtz.set_data(np.column_stack([hkl, amp, 0.02 * amp + 0.01]).astype(np.float32))
    mtz.write_to_file(str(path))


def bench_cell(edge: float, repeats: int, folder: Path) -> dict:
    cell = Cell.cubic(edge)
    atoms = centre_in_cell(fragment(), cell)
    hkl = miller_indices(cell, D_MIN)
    f = structure_factors(AtomBatch.from_atoms([atoms], cell), hkl)[0].numpy()
    path = folder / f"cell{edge:g}.mtz"
    write_mtz(path, hkl, f, cell)
    times, ccs, rs, verdicts = [], [], [], []
    for i in range(repeats):
        phasing = dataclasses.replace(SOLVE_PHASING, seed=i)
        config = SolveConfig(str(path), out=str(folder / f"out{edge:g}-{i}"), phasing=phasing, progress=False)
        t0 = time.perf_counter()
        solution, _ = solve_to_folder(config)
        times.append(time.perf_counter() - t0)
        truth = density_from_f(torch.as_tensor(f)[None], hkl, cell, solution.rho.shape)[0]
        ccs.append(float(score_maps(torch.as_tensor(solution.rho), truth, cell, D_MIN).cc_aligned[0]))
        rs.append([solution.summary["r_work"], solution.summary["r_free"]])
        verdicts.append(solution.summary["verdict"])
    return {
        "cell": edge,
        "d_min": D_MIN,
        "atoms": len(atoms),
        "reflections": len(hkl),
        "grid": solution.summary["grid"],
        "method": solution.summary["method"],
        "seconds_per_solve": {"median": float(np.median(times)), "all": times},
        "cc_aligned": ccs,
        "r_work_r_free": rs,
        "verdict": verdicts,
    }


REAL = Path(__file__).resolve().parents[2] / "shared" / "data" / "real" / "5e5z"


def bench_real(folder: Path) -> dict:
    """5E5Z: solve its deposited reflections, judge the map against the deposited model."""
    t = time.perf_counter()
    solution, _ = solve_to_folder(SolveConfig(str(REAL / "5e5z.mtz"), out=str(folder / "5e5z"), progress=False))
    seconds = time.perf_counter() - t
    model = expand_to_p1(read_structure(REAL / "5e5z.pdb"))
    cell, hkl = solution.cell, solution.hkl
    f_model = structure_factors(AtomBatch.from_atoms([model], cell), hkl)  # (1, M)
    shape = solution.rho.shape
    truth = density_from_f(f_model, hkl, cell, shape)
    rho = torch.as_tensor(solution.rho)[None]
    d_min = float(cell.d_spacing(hkl).min())
    cc = float(score_maps(rho, truth, cell, d_min).cc_aligned[0])
    gen = torch.Generator().manual_seed(0)
    f_obs = torch.as_tensor(solution.f)
    chance = []
    for _ in range(5):  # random phases with the observed amplitudes
        phi = torch.rand(f_obs.shape, generator=gen, dtype=torch.float64) * 2 * np.pi
        rand = density_from_f(torch.polar(f_obs, phi)[None], hkl, cell, shape)
        chance.append(float(score_maps(rand, truth, cell, d_min).cc_aligned[0]))
    s = solution.summary
    keys = ("verdict", "r_work", "r_free", "r_free_random", "start_agreement", "method", "free_set")
    return {"input": "5e5z.mtz", **{k: s[k] for k in keys}, "seconds": seconds, "cc_with_deposited_model": cc,
            "chance_cc_with_deposited_model": chance}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", default="benchmarks/results/solve.json")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    results = {
        "benchmark": "patterson solve (MTZ in, five files out), default settings",
        "run": run_metadata(),
        "device": "cuda" if torch.cuda.is_available() else "cpu",
        "cells": [],
    }
    with tempfile.TemporaryDirectory() as tmp:
        for edge in (12.0, 20.0):
            row = bench_cell(edge, args.repeats, Path(tmp))
            seconds, cc = row["seconds_per_solve"]["median"], np.median(row["cc_aligned"])
            print(f"{edge:g} Å: {seconds:.2f} s per solve, CC {cc:.3f}")
            results["cells"].append(row)
        if REAL.is_dir():
            results["real"] = bench_real(Path(tmp))
            r = results["real"]
            chance = r["chance_cc_with_deposited_model"]
            cc = r["cc_with_deposited_model"]
            print(f"5E5Z: {r['verdict']}, R-free {r['r_free']:.3f} (random {r['r_free_random']:.3f}), map CC with the "
                  f"deposited model {cc:.3f} (random {min(chance):.3f}–{max(chance):.3f})")  # fmt: skip
    write_json(args.out, results, indent=2)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
