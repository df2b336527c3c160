"""The extension by density modification on peptide crystals (#30): partial models of held-out crystals extended
by the learned step, by its non-learned control with the same seconds, and not at all.

Data: the test crystals of ``benchmarks/peptide_crystals.py`` (``peptide-crystal-realistic`` by default: measurement
error rising with resolution, ordered waters; the entries the shipped networks held out) at 1.5 and 2.0 Å. Starts:
for each crystal and each level (share of the true atoms kept, their r.m.s. coordinate error in Å), a partial model
of the crystal (one B of 20 Å² for all its atoms): the phases a placed, partly built fragment gives. Each start is
extended by the phasing loop (:func:`patterson.phasing.learned`) from the measured work amplitudes with those phases,
the free set never imposed, on a 0.5 Å grid of the crystal's own cell, with

- ``learned``: the shipped peptide-crystal step (``peptide-modifier``, trained on crops of peptide crystals'
  maps), ``--n-iter`` cycles of the loop and ``--n-finish`` of the positivity finish (chosen with ``--split val``:
  crystals of the entries the networks validated on, not the test entries),
- ``learned-dense``: the shipped dense-protein step (``density-modifier``, 12 Å cells at 35 Å³ per atom), the same,
- ``histogram``: the non-learned control with the same cycles (it takes far less time),
- ``histogram-timed``: the control, its loop given the learned step's whole seconds (``max_seconds``),
- ``none``: the start itself (the measured work amplitudes with the model's phases).

Scored: F-weighted phase error after the origin/hand search (:func:`patterson.evaluation.score_maps`); solved below
40°; claimed: the map verdict ``solved``. One process per worker, one torch thread each.

    python benchmarks/peptide_extension.py [--n 24] [--resolutions 1.5 2.0] [--preset peptide-crystal-realistic]
        [--workers 2] [--out benchmarks/results/peptide_extension.json]
        [--table docs/tables/peptide_extension_table.md]
"""

from __future__ import annotations

import argparse
import dataclasses
import multiprocessing
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import torch

from _common import RESULTS, TABLES, run_metadata, write_json, write_text
from patterson.datasets import StoredDataset, make_config
from patterson.evaluation import score_maps
from patterson.evaluation.report import SOLVED_THRESHOLD_DEG
from patterson.maps import density_from_f
from patterson.networks import open_network
from patterson.phasing.compare import split_maps
from patterson.phasing.learned import EXTENSION, TASK, NetworkStep, learned
from patterson.physics import AtomBatch, structure_factors
from peptide_crystals import PEPTIDE_PRESETS, SPACING, held_out_check, make_crystals

LEVELS = ((0.7, 0.5), (0.5, 0.7), (0.35, 1.0))  # (share of the atoms kept, r.m.s. error in Å) of the partial models
MODEL_B = 20.0  # Å², the partial models' B
N_ITER, N_FINISH = EXTENSION.n_iter, EXTENSION.n_finish  # the extension's cycles (chosen with --split val)
METHODS = ("none", "learned", "learned-dense", "histogram", "histogram-timed")
NAMES = {"none": "no extension (the start)", "learned": "learned step (peptide crystals)",
         "learned-dense": "learned step (dense-protein)", "histogram": "control (histogram step)",
         "histogram-timed": "control, the learned step's seconds"}  # fmt: skip
NETWORKS = {"learned": "peptide-crystal", "learned-dense": "dense-protein"}  # the preset each step is picked for

_WORKER: dict[str, Any] = {}


def _init_worker() -> None:
    torch.set_num_threads(1)
    for method, preset in NETWORKS.items():
        network = open_network("pretrained", dataclasses.asdict(make_config(preset)), TASK)
        _WORKER[method] = NetworkStep(network.model)
        _WORKER[f"{method}-name"] = network.name


def partial_model_phases(item: dict, data, keep: float, shift_a: float, rng: np.random.Generator) -> torch.Tensor:
    """(1, M) phases of a random share ``keep`` of the crystal's atoms, each moved by an r.m.s. ``shift_a`` Å."""
    n = int(item["n_atoms"])
    xyz, z = np.asarray(item["xyz"][:n], dtype=np.float64), np.asarray(item["z"][:n])
    sel = rng.random(n) < keep
    moved = xyz[sel] + rng.normal(0.0, shift_a / np.sqrt(3), size=(int(sel.sum()), 3))
    k = len(moved)
    atoms = AtomBatch(torch.as_tensor(data.cell.to_fractional(moved))[None], torch.as_tensor(z[sel])[None],
                      torch.full((1, k), MODEL_B, dtype=torch.float64), torch.ones((1, k), dtype=torch.float64),
                      data.cell)  # fmt: skip
    with torch.no_grad():
        return torch.angle(structure_factors(atoms, data.hkl))


def extend(method: str, data, phi: torch.Tensor, seconds: float, cycles: tuple[int, int]) -> tuple[torch.Tensor, dict]:
    """One extension of the start ``phi`` (1, M) with ``cycles`` (loop, finish): its map and verdict (none: the
    start's map, no verdict)."""
    if method == "none":
        return density_from_f(torch.polar(data.f_obs * data.work, phi), data.hkl, data.cell, data.shape), {}
    step = "histogram" if method.startswith("histogram") else _WORKER[method]
    options = EXTENSION.replace(n_iter=cycles[0], n_finish=cycles[1],
                                max_seconds=seconds if method == "histogram-timed" else 0.0)  # fmt: skip
    res = learned(data.f_obs, data.hkl, data.cell, data.shape, step, options, f000=data.f000, phi_start=phi,
                  observed=data.measured, free=data.free)  # fmt: skip
    v = res.validation
    return res.rho, {"verdict": v.verdict[0], "r_free": float(v.r_free[0]), "r_free_random": float(v.r_free_random[0])}


def extend_structure(task: tuple[str, str, int, float, tuple[int, int]]) -> dict[str, Any]:
    """Worker: every level's start of crystal ``index`` of ``split`` at ``d`` and every extension of it (``cycles``:
    loop, finish), scored."""
    folder, split, index, d, cycles = task
    ds = StoredDataset(folder, split, normalise=False)
    item = ds[index]
    data = split_maps([item], ds.config.d_min, sample_rate=max(2.0, d / SPACING), seed=index)
    record = {"d_min": d, "index": index, "label": ds.labels()[index], "spacegroup": item["spacegroup"],
              "n_atoms": item["n_atoms"], "grid": list(data.shape), "levels": []}  # fmt: skip
    rng = np.random.default_rng([index, int(d * 10)])
    for keep, shift in LEVELS:
        phi = partial_model_phases(item, data, keep, shift, rng)
        level: dict[str, Any] = {"keep": keep, "shift_a": shift}
        learned_s = 0.0
        for method in METHODS:
            t = time.perf_counter()
            rho, out = extend(method, data, phi, learned_s, cycles)
            seconds = time.perf_counter() - t
            learned_s = seconds if method == "learned" else learned_s
            error = float(score_maps(rho, data.truth, data.cell, data.d_min).phase_error_weighted_deg[0])
            level[method] = out | {"phase_error_weighted_deg": error, "seconds": seconds,
                                   "solved": error < SOLVED_THRESHOLD_DEG,
                                   "claimed": out.get("verdict") == "solved"}  # fmt: skip
        record["levels"].append(level)
    return record


def summarise(records: list[dict], d: float, keep: float, shift: float, method: str) -> dict[str, Any]:
    """One row: solved and claimed of n, claims right, median phase error and seconds, median start error."""
    runs = [lv for r in records if r["d_min"] == d for lv in r["levels"] if (lv["keep"], lv["shift_a"]) == (keep,
                                                                                                          shift)]
    claimed = [lv[method] for lv in runs if lv[method]["claimed"]]
    errors = [lv[method]["phase_error_weighted_deg"] for lv in runs]
    return {"d_min": d, "keep": keep, "shift_a": shift, "method": method, "n": len(runs),
            "n_solved": sum(lv[method]["solved"] for lv in runs), "n_claimed": len(claimed),
            "n_right": sum(c["solved"] for c in claimed),
            "median_phase_error_weighted_deg": float(np.median(errors)),
            "median_start_error_deg": float(np.median([lv["none"]["phase_error_weighted_deg"] for lv in runs])),
            "median_seconds": float(np.median([lv[method]["seconds"] for lv in runs]))}  # fmt: skip


def render(results: dict) -> str:
    """docs/tables/peptide_extension_table.md from the results alone."""
    run = results["run"]
    lines = [f"Partial models of held-out `{results['preset']}` crystals extended by density modification "
             f"(benchmarks/peptide_extension.py, {run['date']}, {run['platform']}, {run['cpu_count']} CPUs, "
             f"{results['workers']} workers of one thread, torch {run['torch']}). Start: a random share of the true "
             f"atoms, each moved by an r.m.s. error, B {MODEL_B:g} Å²; solved: F-weighted phase error < "
             f"{results['solved_threshold_deg']:g}° after the origin/hand search; claimed: the map verdict "
             "`solved`; the timed control's loop had the learned step's seconds.", "",
             "| d_min (Å) | atoms kept, error | method | solved | claimed (right) | median phase error | median s |",
             "|" + " --- |" * 7]  # fmt: skip
    for r in results["rows"]:
        claims = "–" if r["method"] == "none" else f"{r['n_claimed']} ({r['n_right']})"
        start = f"{r['keep']:.0%}, {r['shift_a']:g} Å (start {r['median_start_error_deg']:.0f}°)"
        lines.append(f"| {r['d_min']:.1f} | {start} | {NAMES[r['method']]} | {r['n_solved']}/{r['n']} | {claims} | "
                     f"{r['median_phase_error_weighted_deg']:.0f}° | {r['median_seconds']:.1f} |")  # fmt: skip
    held = results["held_out"]
    lines += ["", f"{results['n_per_resolution']} test crystals per resolution from {len(held['entries'])} entries "
              f"held out by the shipped networks ({held['shared_entries']} shared with their training entries); "
              f"steps: {', '.join(f'{k} = {v}' for k, v in results['networks'].items())}. "
              f"Phasing {results['phasing_s']:.0f} s wall."]
    return "\n".join(lines) + "\n"


def run_all(args, log) -> dict[str, Any]:
    """Generate, extend and summarise: the whole results file."""
    networks = {m: open_network("pretrained", dataclasses.asdict(make_config(p)), TASK) for m, p in NETWORKS.items()}
    trained = networks["learned"]
    with tempfile.TemporaryDirectory() as tmp:
        folders, _ = make_crystals(args, trained.trained_on, Path(tmp), log, args.split)
        held = held_out_check(folders, sorted({e for n in networks.values() for e in (n.entries or [])}), args.split)
        cycles = (args.n_iter, args.n_finish)
        tasks = [(str(folders[d]), args.split, i, d, cycles) for d in args.resolutions for i in range(args.n)]
        t0, records = time.perf_counter(), []
        ctx = multiprocessing.get_context("fork")
        with ProcessPoolExecutor(args.workers, mp_context=ctx, initializer=_init_worker) as ex:
            for k, record in enumerate(ex.map(extend_structure, tasks)):
                records.append(record)
                done = "  ".join(f"{lv['none']['phase_error_weighted_deg']:.0f}°→" + "/".join(
                    f"{lv[m]['phase_error_weighted_deg']:.0f}" for m in METHODS[1:]) for lv in record["levels"])
                log(f"[{k + 1}/{len(tasks)}] {record['d_min']:g} Å #{record['index']} {record['spacegroup']}: {done}")
        phasing_s = time.perf_counter() - t0
    rows = [summarise(records, d, keep, shift, m) for d in args.resolutions for keep, shift in LEVELS for m in METHODS]
    return {"benchmark": "peptide crystals: partial models extended by density modification", "preset": args.preset,
            "source": args.source, "n_per_resolution": args.n, "levels": [list(x) for x in LEVELS],
            "model_b": MODEL_B, "spacing": SPACING, "workers": args.workers, "split": args.split,
            "cycles": {"loop": args.n_iter, "finish": args.n_finish},
            "solved_threshold_deg": SOLVED_THRESHOLD_DEG, "held_out": held,
            "networks": {m: n.name for m, n in networks.items()}, "phasing_s": phasing_s, "run": run_metadata(),
            "rows": rows, "structures": records}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--source", default="../shared/data/pdb", help="folder of PDB files")
    parser.add_argument("--n", type=int, default=24, help="test crystals per resolution")
    parser.add_argument("--preset", choices=PEPTIDE_PRESETS, default="peptide-crystal-realistic")
    parser.add_argument("--resolutions", nargs="+", type=float, default=[1.5, 2.0])
    parser.add_argument("--workers", type=int, default=2, help="processes, one torch thread each")
    parser.add_argument("--split", choices=("test", "val"), default="test",
                        help="test crystals (the result), or val crystals (to choose the cycles)")
    parser.add_argument("--n-iter", type=int, default=N_ITER, help="cycles of the loop")
    parser.add_argument("--n-finish", type=int, default=N_FINISH, help="cycles of the positivity finish")
    parser.add_argument("--out", type=Path, default=RESULTS / "peptide_extension.json")
    parser.add_argument("--table", type=Path, default=TABLES / "peptide_extension_table.md")
    args = parser.parse_args()
    results = run_all(args, lambda text: print(text, flush=True))
    write_json(args.out, results, indent=1, one_line=("structures",))
    write_text(args.table, render(results))


if __name__ == "__main__":
    main()
