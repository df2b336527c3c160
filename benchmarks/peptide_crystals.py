"""Synthetic peptide crystals (issue #30): held-out ``peptide-crystal`` structures phased by every method at equal
wall time.

Data: the ``peptide-crystal`` preset (4–9-residue segments packed in P2₁, P2₁2₁2₁, C2 or P1 at 19.3–22.1 Å³ per
atom, half of them β-sheet stacks; 3% amplitude noise, 5% of the reflections missing) made from the entries that the
shipped density-modification network (the learned loop's step) held out as its test split (same seed and split
fractions; checked against the entries it lists), at each resolution d: the preset with ``d_min_range`` [d, d] and
its B at d (``b_range``, the preset's line from B 3 Å² at 0.8 Å to 15 Å² at 2.0 Å), so that the same crystals
(same seed and index) appear at every resolution with the B the preset ties to it. The stored maps lie on a
``GRID``-point grid (the preset's 64 points would hold cells only up to 31 Å long at 1.0 Å: 8 of 48 were kept at
1.1–1.4 Å); a cell too long for it at d keeps a coarser d (counted in ``coarser``).

Each structure is phased from its stored amplitudes (the free set never imposed) on a grid of its own cell with
spacing ``--spacing`` (0.5 Å, the voxel the learned step was trained on; at most d/2), its truth made from its exact
structure factors (:func:`patterson.phasing.compare.split_maps`), by every method with the same wall-time budget
(``--budget-s``, per resolution): dual-space (``max_seconds`` = the budget; the space group given), and charge
flipping, HIO, the learned loop (the shipped density-modification network) and its non-learned control (the
histogram step) in rounds of their default run with two new random starts, until the next round would end past the
budget (judged by the last) or the best round by R-free says ``solved``; the best round by R-free is the answer
(:func:`patterson.phasing.compare.phase_within`, which ``patterson demo`` uses too). ``fragments`` (not in the
default run; the issue's "no extension" row): ``solve --sequence``'s route with the crystal's own sequence
(:func:`patterson.phasing.peptide.fragment_phasing`, ``max_seconds`` = the budget, which bounds the building, not
the placements before it), its model's phases polished on F and nothing after; ``fragments+learned`` and
``fragments+histogram``: the same route's phases (it runs once per structure) extended by the phasing loop with the
learned step the shipped networks pick for peptide crystals, or with its control, the same cycles
(:data:`patterson.phasing.learned.EXTENSION` from the route's phases; the control takes less time), their seconds
the route's and the extension's.
Chance: random phases with the true amplitudes. Solved: F-weighted phase error < 40° after the origin and hand
search (:func:`patterson.evaluation.score_maps`); claimed: the method's verdict ``solved`` — for dual-space at
atomic resolution (d ≤ 1.3 Å) also its refined atoms' (``solve``'s atoms step on its map, moved to the group's
origin first, when its R-free is below 0.75 of random phases' (:func:`patterson.solving.structure.worth_atoms`,
:func:`patterson.solving.structure.atoms_of_split`); R1 on the free reflections ≤ 0.25, timed apart from the budget,
as ``solve`` claims 6MW0); right: claimed and solved. The atoms step's own result is scored too: the map of the
refined atoms against the truth (``atoms_phase_error_deg``; its atoms are right below the same 40°), since a map
that is half right can refine to right atoms. One process per worker, one torch thread each.

    python benchmarks/peptide_crystals.py [--source ../shared/data/pdb] [--n 48] [--budget-s 10 [6 3]]
        [--preset peptide-crystal] [--methods ...] [--resolutions 1.0 1.5 2.0] [--spacing 0.5] [--workers 2]
        [--out benchmarks/results/peptide_crystals.json] [--table docs/tables/peptide_crystals_table.md]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import multiprocessing
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import torch

from _common import RESULTS, TABLES, run_metadata, write_json, write_text
from patterson.datasets import PRESETS, StoredDataset, build_pool, generate, make_config
from patterson.datasets.config import SPLITS
from patterson.datasets.peptides import overall_b
from patterson.evaluation import score_maps
from patterson.evaluation.report import SOLVED_THRESHOLD_DEG
from patterson.ideal import ONE_LETTER
from patterson.maps import density_from_f
from patterson.networks import open_network
from patterson.phasing.compare import BUDGET_STARTS, phase_within, split_maps
from patterson.phasing.learned import EXTENSION, TASK, NetworkStep, learned
from patterson.phasing.peptide import PeptideOptions, fragment_phasing
from patterson.solving.atoms import model_f
from patterson.solving.structure import ATOM_RESOLUTION, atoms_of_split, cell_contents, worth_atoms
from patterson.symmetry import SpaceGroup

PRESET = "peptide-crystal"
PEPTIDE_PRESETS = [p for p in PRESETS if p.startswith(PRESET)]  # the clean preset and its realistic variant
RESOLUTIONS = (1.0, 1.5, 2.0)
ROUTE = ("fragments", "fragments+learned", "fragments+histogram")  # the route, and the route extended
METHODS = ("dual-space", "charge-flip", "hio", "learned", "histogram", *ROUTE, "chance")
DEFAULT_METHODS = tuple(m for m in METHODS if m not in ROUTE)  # the fragments route takes minutes each
NAMES = {"dual-space": "dual-space", "charge-flip": "charge flipping", "hio": "HIO", "learned": "learned loop",
         "histogram": "control (histogram step)", "fragments": "fragments from the sequence, no extension",
         "fragments+learned": "fragments, extended by the learned step",
         "fragments+histogram": "fragments, extended by the control", "chance": "chance (random phases)"}  # fmt: skip
STARTS = BUDGET_STARTS  # random starts per round (charge flipping, HIO, learned, control)
SPACING = 0.5  # Å: the phasing grid's spacing (at most d / 2), the voxel the learned step was trained on
GRID = (96, 96, 96)  # the stored maps' grid: every cell of the preset to 1.0 Å (edges up to 47 Å)

_WORKER: dict[str, Any] = {}  # per worker process: the learned loop's step, the datasets opened


def crystal_config(d: float, n: int, source: str, trained: dict, workers: int, split: str = "test",
                   preset: str = PRESET):  # fmt: skip
    """The config of ``n`` crystals of ``preset`` at resolution ``d`` from the ``split`` entries of the data
    ``trained`` (a network's training config): its seed and split fractions, only that split made (float32 maps)."""
    splits = tuple(trained["splits"])
    b = overall_b(d, PRESETS[preset]["d_min_range"], PRESETS[preset]["b_range"])  # the preset's B at d
    share = splits[SPLITS.index(split)]
    return make_config(preset, source=source, n=math.ceil(n * sum(splits) / share), seed=trained["seed"],
                       splits=splits, only_splits=[split], map_dtype="float32", d_min=d, d_min_range=(d, d),
                       b_range=(b, b), grid=GRID, chunk_size=max(1, math.ceil(n / workers)))  # fmt: skip


def make_crystals(args, trained: dict, folder: Path, log,
                  split: str = "test") -> tuple[dict[float, Path], dict[str, float]]:  # fmt: skip
    """Generate the ``split`` crystals of every resolution into ``folder``; their folders and seconds per
    resolution."""
    pool, folders, seconds = None, {}, {}
    for d in args.resolutions:
        config = crystal_config(d, args.n, args.source, trained, args.workers, split, args.preset)
        pool = pool or build_pool(config, progress=False)  # the same segments for every resolution
        t = time.perf_counter()
        generate(config, folder / f"d{d:g}", workers=args.workers, progress=False, pool=pool)
        folders[d], seconds[f"{d:g}"] = folder / f"d{d:g}", time.perf_counter() - t
        log(f"generated {args.n} crystals at {d:g} Å in {seconds[f'{d:g}']:.0f} s")
    return folders, seconds


# --- one structure -------------------------------------------------------------------------------------------------


def _init_worker() -> None:
    torch.set_num_threads(1)
    network = open_network("pretrained", dataclasses.asdict(make_config("dense-protein")), TASK)
    _WORKER["step"] = NetworkStep(network.model)
    peptide = open_network("pretrained", dataclasses.asdict(make_config(PRESET)), TASK)
    _WORKER["extension"] = NetworkStep(peptide.model)  # the step the route's extension uses


def extended(method: str, data, route) -> tuple[torch.Tensor, Any, int]:
    """The route's result ``route`` extended by the phasing loop from its phases: the learned step for peptide
    crystals (``fragments+learned``) or its control (``fragments+histogram``), the cycles of
    :data:`~patterson.phasing.learned.EXTENSION`."""
    step = _WORKER["extension"] if method == "fragments+learned" else "histogram"
    res = learned(data.f_obs, data.hkl, data.cell, data.shape, step, EXTENSION, f000=data.f000,
                  phi_start=route.phi_rad, observed=data.measured, free=data.free)  # fmt: skip
    return res.rho, res.validation, 1


def run_method(method: str, data, group: SpaceGroup, budget: float, seed: int,
               composition: dict[str, float] | None = None, sequence: str = "",
               route: dict | None = None) -> dict[str, Any]:  # fmt: skip
    """One method on one structure (:class:`~patterson.phasing.compare.SplitMaps` of one example) with ``budget``
    seconds (:func:`~patterson.phasing.compare.phase_within`), timed and scored; a crash is recorded, never
    raised. Dual-space maps (in the space group, at its origin) at atomic resolution also go through ``solve``'s
    atoms step with the cell ``composition`` (:func:`~patterson.solving.structure.atoms_of_split`, timed apart).
    The fragments route runs once per structure: ``route`` keeps its result and seconds for its extensions, whose
    seconds include the route's."""
    t = time.perf_counter()
    route = {} if route is None else route
    earlier = route.get("seconds", 0.0) if method in ROUTE[1:] else 0.0  # an extension of a route run before
    try:
        if method in ROUTE and "result" not in route:  # the sequence's ideal strands placed and built
            route["result"] = fragment_phasing(data.f_obs, data.hkl, data.cell, data.shape, sequence,
                                               PeptideOptions(max_seconds=budget), f000=data.f000, group=group,
                                               observed=data.measured, free=data.free)  # fmt: skip
            route["seconds"] = time.perf_counter() - t
        if method == "fragments":
            rho, check, rounds = route["result"].rho, route["result"].validation, 1
        elif method in ROUTE:
            rho, check, rounds = extended(method, data, route["result"])
        else:
            rho, check, rounds = phase_within(method, data, budget, seed, _WORKER.get("step"), group)
    except Exception as exc:  # noqa: BLE001 - a crash is a result
        return {"error": f"{type(exc).__name__}: {str(exc)[:300]}", "seconds": time.perf_counter() - t}
    seconds = time.perf_counter() - t + earlier
    scores = score_maps(rho, data.truth, data.cell, data.d_min)
    out = {"phase_error_weighted_deg": float(scores.phase_error_weighted_deg[0]),
           "cc_aligned": float(scores.cc_aligned[0]), "seconds": 0.0 if method == "chance" else seconds}  # fmt: skip
    out["solved"] = bool(np.nan_to_num(out["phase_error_weighted_deg"], nan=180.0) < SOLVED_THRESHOLD_DEG)
    if check is not None:
        out |= {"verdict": check.verdict[0], "r_work": float(check.r_work[0]), "r_free": float(check.r_free[0]),
                "r_free_random": float(check.r_free_random[0]), "rounds": rounds}  # fmt: skip
        out["claimed"] = out["verdict"] == "solved"
    if method == "dual-space" and composition and data.d_min <= ATOM_RESOLUTION and worth_atoms(out["r_free"],
                                                                                               out["r_free_random"]):
        out |= atoms_record(rho[0], data, group, composition)
        out["claimed"] = out["claimed"] or out["atoms_solved"]
    return out


def atoms_record(rho: torch.Tensor, data, group: SpaceGroup, composition: dict[str, float]) -> dict[str, Any]:
    """The atoms step's outcome on one map: atoms refined, R1 work and free, solved by R1-free, seconds."""
    t = time.perf_counter()
    try:
        model = atoms_of_split(rho, data, group, composition)
    except Exception as exc:  # noqa: BLE001 - a crash is a result
        return {"atoms_error": f"{type(exc).__name__}: {str(exc)[:300]}", "atoms_solved": False,
                "atoms_seconds": time.perf_counter() - t}  # fmt: skip
    n = 0 if model is None else len(model)
    out = {"atoms_n": n, "atoms_r1_work": model.r1_work if n else None, "atoms_r1_free": model.r1_free if n else None,
           "atoms_solved": bool(n and model.solved), "atoms_seconds": time.perf_counter() - t}  # fmt: skip
    if n:  # the refined atoms' own map against the truth: a claim through atoms is right when they are
        f_model = model_f(model, data.hkl, (data.cell, group, "it92"))
        scores = score_maps(density_from_f(f_model[None], data.hkl, data.cell, data.shape), data.truth, data.cell,
                            data.d_min)  # fmt: skip
        out["atoms_phase_error_deg"] = float(scores.phase_error_weighted_deg[0])
        out["atoms_right"] = bool(out["atoms_phase_error_deg"] < SOLVED_THRESHOLD_DEG)
    return out


def phase_structure(task: tuple[str, int, float, tuple[str, ...], float, float]) -> dict[str, Any]:
    """Worker: every method on test example ``index`` of the dataset ``folder`` made at resolution ``d``, each with
    ``budget`` seconds, on a grid of ``spacing`` Å (at most d / 2)."""
    folder, index, d, methods, budget, spacing = task
    if folder not in _WORKER:
        ds = StoredDataset(folder, "test", normalise=False)
        _WORKER[folder] = (ds, ds.labels())
    ds, labels = _WORKER[folder]
    item = ds[index]
    data = split_maps([item], ds.config.d_min, sample_rate=max(2.0, d / spacing), seed=index)
    record = {"d_min": d, "index": index, "label": labels[index],
              "spacegroup": item["spacegroup"], "beta_stack": item["beta_stack"], "d_own": item["d_min"],
              "cell": [round(float(x), 3) for x in item["cell"]], "n_atoms": item["n_atoms"],
              "n_reflections": len(data.hkl), "grid": list(data.shape), "methods": {}}  # fmt: skip
    group = SpaceGroup.of(item["spacegroup"])
    route: dict = {}  # the fragments route's result, shared by its extensions
    for method in methods:
        record["methods"][method] = run_method(method, data, group, budget, index, cell_contents(item["z"]),
                                               sequence_of(labels[index]), route)  # fmt: skip
    return record


def sequence_of(label: str) -> str:
    """The one-letter sequence of a crystal's segment from its label ``entry/chain/seqid:RES,...``."""
    one = {three: code for code, three in ONE_LETTER.items()}
    return "".join(one[r.rsplit(":", 1)[-1]] for r in label.rsplit("/", 1)[-1].split(","))


# --- the whole run -------------------------------------------------------------------------------------------------


def summarise(records: list[dict], d: float, method: str) -> dict[str, Any]:
    """One row of the table: solved, claimed and right counts of n, precision, median seconds and phase error."""
    runs = [r["methods"][method] for r in records if r["d_min"] == d and method in r["methods"]]
    ok = [v for v in runs if "error" not in v]
    claimed = [v for v in ok if v.get("claimed", v.get("verdict") == "solved")]
    right = sum(v["solved"] for v in claimed)
    row = {"d_min": d, "method": method, "n": len(runs), "errors": len(runs) - len(ok),
           "n_solved": sum(v["solved"] for v in ok), "n_claimed": len(claimed), "n_right": right,
           "precision": right / len(claimed) if claimed else None,
           "median_seconds": float(np.median([v["seconds"] for v in runs])) if runs else None,
           "median_phase_error_weighted_deg": float(np.median([v["phase_error_weighted_deg"] for v in ok]))
           if ok else None}  # fmt: skip
    atoms = [v for v in ok if "atoms_solved" in v]
    if atoms:
        row |= {"n_claimed_by_atoms": sum(v["atoms_solved"] for v in atoms),
                "n_claimed_by_atoms_right": sum(v["atoms_solved"] and v.get("atoms_right", False) for v in atoms),
                "median_atoms_seconds": float(np.median([v["atoms_seconds"] for v in atoms]))}  # fmt: skip
    return row


def run_benchmark(args, folders: dict[float, Path], log, skip: tuple[str, ...] = ()) -> list[dict]:
    """Every method on every test crystal of every resolution (but those of the entries ``skip``), structures
    spread over ``args.workers`` processes; the per-structure records in order."""
    budgets = dict(zip(args.resolutions, budget_list(args), strict=True))
    tasks = [(str(folders[d]), i, d, tuple(args.methods), budgets[d], args.spacing) for d in args.resolutions
             for i, label in enumerate(StoredDataset(folders[d], "test").labels())
             if label.split("/")[0] not in skip]  # fmt: skip
    records = []
    ctx = multiprocessing.get_context("fork")
    with ProcessPoolExecutor(args.workers, mp_context=ctx, initializer=_init_worker) as ex:
        for k, record in enumerate(ex.map(phase_structure, tasks)):
            records.append(record)
            done = "  ".join(f"{m} {'S' if v.get('solved') else '-'}{'C' if v.get('claimed') else ''}"
                             f" {v['seconds']:.0f}s" for m, v in record["methods"].items())  # fmt: skip
            log(f"[{k + 1}/{len(tasks)}] {record['d_min']:g} Å #{record['index']} {record['spacegroup']}: {done}")
    return records


def budget_list(args) -> list[float]:
    """Seconds per structure and method at each of ``args.resolutions``: ``--budget-s`` gives one for all or one
    each."""
    budgets = list(args.budget_s) if isinstance(args.budget_s, list | tuple) else [float(args.budget_s)]
    if len(budgets) == 1:
        budgets *= len(args.resolutions)
    if len(budgets) != len(args.resolutions) or min(budgets) <= 0:
        raise SystemExit(f"--budget-s: one positive number, or one per resolution ({len(args.resolutions)})")
    return budgets


def held_out_check(folders: dict[float, Path], trained_entries: list[str] | None,
                   split: str = "test") -> dict[str, Any]:  # fmt: skip
    """The source entries of the ``split`` crystals and how many of them the network trained on (must be 0)."""
    used = sorted({label.split("/")[0] for f in folders.values() for label in StoredDataset(f, split).labels()})
    shared = sorted(set(used) & set(trained_entries or []))
    return {"entries": used, "checked": trained_entries is not None, "shared_entries": len(shared),
            "shared": shared}  # fmt: skip


def render(results: dict) -> str:
    """docs/tables/peptide_crystals_table.md from the results alone."""
    run = results["run"]
    lines = [f"Synthetic `{results.get('preset', PRESET)}` structures, every method with the same wall-time budget "
             f"per structure (benchmarks/peptide_crystals.py, {run['date']}, {run['platform']}, "
             f"{run['cpu_count']} CPUs, {results['workers']} workers of one thread, torch {run['torch']}; maps on a "
             f"{results['spacing']:g} Å grid, at most d/2). Solved: F-weighted phase error < "
             f"{results['solved_threshold_deg']:g}° after the origin/hand search; claimed: the method's verdict "
             "`solved` (dual-space at d ≤ 1.3 Å: also by its refined atoms' R1-free ≤ 0.25, `solve`'s atoms step, its "
             "seconds in the last column); right: claimed and solved; atoms right: the refined atoms' own map < 40° "
             "from the truth.", "",
             "| d_min (Å) | budget (s) | method | solved | claimed | right | precision | median s | "
             "median phase error | atoms step |", "|" + " --- |" * 10]  # fmt: skip
    for r in results["rows"]:
        dash = r["method"] == "chance"  # no verdict, no time
        precision = "–" if dash or r["precision"] is None else f"{r['precision']:.2f}"
        seconds = "–" if dash or r["median_seconds"] is None else f"{r['median_seconds']:.1f}"
        error = "–" if r["median_phase_error_weighted_deg"] is None else f"{r['median_phase_error_weighted_deg']:.0f}°"
        lines.append(f"| {r['d_min']:.1f} | {r['budget_s']:g} | {NAMES.get(r['method'], r['method'])} | "
                     f"{r['n_solved']}/{r['n']} | "
                     f"{'–' if dash else r['n_claimed']} | {'–' if dash else r['n_right']} | {precision} | "
                     f"{seconds} | {error} | {_atoms_cell(r)} |")  # fmt: skip
    held = results["held_out"]
    coarser = ", ".join(f"{d} Å: {c}" for d, c in results["coarser"].items())
    grid = results.get("grid", [64])[0]  # runs before the grid was recorded used the preset's
    lines += ["", f"{results['n_per_resolution']} test crystals per resolution (the same crystals at each, B as the "
              f"preset ties it to d) from {len(held['entries'])} entries of `{results['source']}` held out by "
              f"{Path(results['step']).name} ({held['shared_entries']} shared with its training entries); "
              f"kept at a coarser d by the {grid}-point grid: {coarser}. "
              f"Generation {results['generation_s_total']:.0f} s, phasing {results['phasing_s']:.0f} s wall."]
    return "\n".join(lines) + "\n"


def _atoms_cell(row: dict) -> str:
    """The atoms step's column: claims it made and its median seconds, or a dash where it did not run."""
    if "n_claimed_by_atoms" not in row:
        return "–"
    right = row.get("n_claimed_by_atoms_right")  # runs before it was recorded have none
    judged = "" if right is None else f" ({right} with atoms right)"
    return f"{row['n_claimed_by_atoms']} claimed by atoms{judged}, median {row['median_atoms_seconds']:.1f} s"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--source", default="../shared/data/pdb", help="folder of PDB files")
    parser.add_argument("--n", type=int, default=48, help="test crystals per resolution")
    parser.add_argument("--preset", choices=PEPTIDE_PRESETS, default=PRESET,
                        help="peptide-crystal, or peptide-crystal-realistic (measurement error, waters)")
    parser.add_argument("--budget-s", nargs="+", type=float, default=[10.0],
                        help="wall seconds per structure and method: one for every resolution, or one each")
    parser.add_argument("--spacing", type=float, default=SPACING, help="phasing grid spacing in Å (≤ d / 2)")
    parser.add_argument("--methods", nargs="+", choices=METHODS, default=list(DEFAULT_METHODS))
    parser.add_argument("--resolutions", nargs="+", type=float, default=list(RESOLUTIONS))
    parser.add_argument("--workers", type=int, default=2, help="processes, one torch thread each")
    parser.add_argument("--out", type=Path, default=RESULTS / "peptide_crystals.json")
    parser.add_argument("--table", type=Path, default=TABLES / "peptide_crystals_table.md")
    args = parser.parse_args()
    results = run_all(args, lambda text: print(text, flush=True))
    write_json(args.out, results, indent=1, one_line=("structures",))
    write_text(args.table, render(results))


def run_all(args, log) -> dict[str, Any]:
    """Generate, phase and summarise: the whole results file."""
    network = open_network("pretrained", dataclasses.asdict(make_config("dense-protein")), TASK)
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        folders, generation = make_crystals(args, network.trained_on, Path(tmp), log)
        held = held_out_check(folders, network.entries)
        configs = {f"{d:g}": json.loads(StoredDataset(f, "test").config.to_json()) for d, f in folders.items()}
        t1 = time.perf_counter()
        records = run_benchmark(args, folders, log, skip=tuple(held["shared"]))  # none, unless the check failed
    budgets = dict(zip(args.resolutions, budget_list(args), strict=True))
    rows = [summarise(records, d, m) | {"budget_s": budgets[d]} for d in args.resolutions for m in args.methods]
    coarser = {f"{d:g}": sum(r["d_own"] > d + 1e-6 for r in records if r["d_min"] == d) for d in args.resolutions}
    return {"benchmark": "synthetic peptide crystals, every method at equal wall time", "source": args.source,
            "preset": args.preset, "n_per_resolution": args.n, "budget_s": {f"{d:g}": b for d, b in budgets.items()},
            "spacing": args.spacing, "starts_per_round": STARTS, "workers": args.workers,
            "solved_threshold_deg": SOLVED_THRESHOLD_DEG, "step": str(network.path), "held_out": held,
            "configs": configs, "grid": list(GRID), "coarser": coarser, "generation_s": generation,
            "generation_s_total": sum(generation.values()), "phasing_s": time.perf_counter() - t1,
            "wall_s": time.perf_counter() - t0, "run": run_metadata(), "rows": rows,
            "structures": records}  # fmt: skip


if __name__ == "__main__":
    main()
