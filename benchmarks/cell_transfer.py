"""A network trained on one cubic cell, applied to other cells: which transfer (``convolve`` or ``resample``) works?

For each test cell (the training cell as the reference row, smaller and larger cubic cells, an orthorhombic, a
monoclinic and a triclinic cell, all at the training resolution) this makes a small test set from real chains with
the training dataset's settings, runs the network on each structure's amplitudes through the code path of
`patterson solve` (``solving.network.predict_density``) with each transfer, and scores the result as
`patterson evaluate` does: median map CC and median F-weighted phase error after the origin and hand search, solved
fraction (F-weighted phase error < 40°), next to the chance level (random phases with the true amplitudes). Then,
as `solve` does by default, the network's phases start HIO (``phasing.refine_density``), HIO also runs from random
starts, and the run with the lower R is kept; solved fractions of all three are reported.

The test structures come only from PDB entries held out from the network's training split: the training dataset's
config (read from the checkpoint) is rebuilt on ``--source`` and its entry split recomputed
(``datasets.assign_splits``: entries ordered by a hash of seed and entry, cut by the split fractions), and only the
items of entries in its ``test`` split are used. When the training dataset itself is on disk, its train split is
checked to share no entry with them.

    python benchmarks/cell_transfer.py [--checkpoint paper-2] [--source ../shared/data/pdb] [--n 24]
        [--out benchmarks/results/cell_transfer.json] [--table docs/tables/cell_transfer_table.md]

Writes JSON and a Markdown table (kept in the docs; regenerate it with this one command).
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from _common import run_metadata, write_json, write_text
from patterson.cells import Cell
from patterson.datasets import (
    GenerateConfig,
    Pool,
    StoredDataset,
    assign_splits,
    build_pool,
    generate,
    make_config,
    split_counts,
)
from patterson.evaluation import random_phase_maps, score_maps
from patterson.evaluation.report import SOLVED_THRESHOLD_DEG
from patterson.maps import density_from_f, f_from_density
from patterson.networks import TrainedNetwork, find_checkpoint
from patterson.phasing import PhasingResult, hio, method_options, method_summary, refine_density
from patterson.physics import miller_indices
from patterson.solving.data import ObservedData
from patterson.solving.network import TRANSFERS, predict_density
from patterson.solving.solve import SOLVE_PHASING

CELLS: dict[str, tuple[float, ...]] = {
    "12 Å cubic (training)": (12.0, 12.0, 12.0, 90.0, 90.0, 90.0),
    "10 Å cubic": (10.0, 10.0, 10.0, 90.0, 90.0, 90.0),
    "14 Å cubic": (14.0, 14.0, 14.0, 90.0, 90.0, 90.0),
    "16 Å cubic": (16.0, 16.0, 16.0, 90.0, 90.0, 90.0),
    "20 Å cubic": (20.0, 20.0, 20.0, 90.0, 90.0, 90.0),
    "10×12×14 orthorhombic": (10.0, 12.0, 14.0, 90.0, 90.0, 90.0),
    "12 Å, β = 100° (monoclinic)": (12.0, 12.0, 12.0, 90.0, 100.0, 90.0),
    "11×12×13, 80/95/100° (triclinic)": (11.0, 12.0, 13.0, 80.0, 95.0, 100.0),
}
# the paper-2 training set of the development weights, used when a checkpoint does not describe its data
DEFAULT_TRAINING_SET = dict(n=20000, seed=0, splits=(0.97, 0.015, 0.015))
CHUNK = 8  # structures per HIO batch: one batch of 24 × 4 starts on 40³ ran 2.5 times slower (memory traffic)
SCALES = {"network": False, "network_training_scale": True}  # input: solve's (origin peak 1) or the training scale


# --- the held-out test structures ---------------------------------------------------------------------------------


def training_config(state: dict, source: str) -> GenerateConfig:
    """The config of the dataset the checkpoint was trained on (its ``data.train.dataset``), reading ``source``."""
    ds = dict(((state.get("data") or {}).get("train") or {}).get("dataset") or {})
    if not {"n", "seed", "splits"} <= set(ds):  # no dataset description: the paper-2 training set, its cell
        extra = {k: ds[k] for k in ("cell", "d_min") if k in ds}
        return make_config("paper-2", source=source, **{**DEFAULT_TRAINING_SET, **extra})
    known = set(GenerateConfig.__dataclass_fields__)
    return GenerateConfig.from_dict({**{k: v for k, v in ds.items() if k in known}, "source": source})


def subset_pool(pool: Pool, keep: np.ndarray) -> Pool:
    """The items ``keep`` (indices) of a pool, as a new pool."""
    sizes = np.diff(pool.offsets)[keep]
    atoms = np.concatenate([np.arange(pool.offsets[i], pool.offsets[i + 1]) for i in keep]) if len(keep) else []
    atoms = np.asarray(atoms, dtype=np.int64)
    return Pool(
        xyz=pool.xyz[atoms],
        z=pool.z[atoms],
        b_iso=pool.b_iso[atoms],
        occ=pool.occ[atoms],
        offsets=np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64),
        entries=[pool.entries[i] for i in keep],
        labels=[pool.labels[i] for i in keep],
        files=[pool.files[i] for i in keep],
        cells=None if pool.cells is None else pool.cells[keep],
    )


def held_out_pool(train: GenerateConfig, split: str = "test") -> tuple[Pool, Counter, list[str]]:
    """The source items of the entries that the training dataset's config puts in ``split`` (never in train)."""
    pool, counts = build_pool(train)
    of_entry = assign_splits(pool.entries, train.seed, split_counts(train.n, train.splits), train.splits)
    entries = sorted(e for e, s in of_entry.items() if s == split)
    chosen = set(entries)
    keep = np.array([i for i, e in enumerate(pool.entries) if e in chosen], dtype=np.int64)
    return subset_pool(pool, keep), counts, entries


def check_against_training_data(state: dict, entries: list[str]) -> dict:
    """If the training dataset is on disk, count held-out entries found in its train split (should be 0)."""
    path = ((state.get("data") or {}).get("train") or {}).get("path")
    index = Path(path) / "dataset.h5" if path else None
    if index is None or not index.is_file():
        return {"checked": False, "path": path}
    import h5py

    with h5py.File(index, "r") as fh:
        labels = fh["train"]["label"][:] if "train" in fh else []
    train_entries = {bytes(lab).decode(errors="replace").split("/")[0] for lab in labels}
    return {"checked": True, "path": str(path), "shared_entries": len(train_entries & set(entries))}


def make_cell_set(
    train: GenerateConfig, pool: tuple[Pool, Counter], cell: tuple[float, ...], n: int, seed: int, folder: Path
) -> StoredDataset:
    """``n`` test structures (float32 maps) of the held-out items, with the training settings but this cell."""
    values = json.loads(train.to_json())
    values.update(cell=list(cell), n=n, seed=seed, splits=[0.0, 0.0, 1.0], map_dtype="float32")
    if "only_splits" in values:  # make every split asked for (only test here)
        values["only_splits"] = []
    generate(GenerateConfig.from_dict(values), folder, progress=False, pool=pool)
    return StoredDataset(folder, "test", normalise=False)


# --- scoring ------------------------------------------------------------------------------------------------------


def score(
    pred: torch.Tensor, truth: torch.Tensor, cell: Cell, d_min: float, seconds: float, per_structure: bool = False
) -> tuple[dict, np.ndarray]:
    """Summary scores of maps (B, X, Y, Z) against the truth (with the per-structure CC and phase error if asked),
    and the F-weighted phase errors (B,)."""
    s = score_maps(pred, truth, cell, d_min)
    err, cc = s.phase_error_weighted_deg.numpy(), s.cc_aligned.numpy()
    summary = method_summary(s, seconds)
    if per_structure:
        summary.update(cc_aligned=[round(float(x), 4) for x in cc], phase_error_weighted_deg=err.round(2).tolist())
    return summary, err


def paired(a: dict, b: dict) -> dict:
    """b against a on the same structures: median of the per-structure CC differences, fraction where b is better."""
    diff = np.array(b["cc_aligned"]) - np.array(a["cc_aligned"])
    return {"median_cc_difference": float(np.median(diff)), "better_fraction": float(np.mean(diff > 0))}


def in_chunks(run: Callable[[slice], PhasingResult], n: int, size: int = CHUNK) -> tuple[torch.Tensor, np.ndarray]:
    """A phasing run over n structures in batches of ``size``: the densities (n, X, Y, Z) and R factors (n,)."""
    parts = [run(slice(s, s + size)) for s in range(0, n, size)]
    return torch.cat([p.rho for p in parts]), torch.cat([p.r_free for p in parts]).numpy()


def network_starts(
    solver: TrainedNetwork,
    cell: Cell,
    hkl: np.ndarray,
    f_obs: torch.Tensor,
    shape: tuple[int, int, int],
    transfer: str,
    input_scale: float | None,
    seed: int,
) -> dict:
    """Per structure, as `solve` does: the network's density (predict_density), its phases on the reflections the
    grid holds, random phases on the rest. Returns the network maps band-limited to the data and moved onto the
    truth grid by Fourier synthesis, the starting phases, the model grid, the held fraction and the seconds."""
    d = cell.d_spacing(hkl)
    maps, phases, held = [], [], []
    rng = np.random.default_rng(seed)
    t = time.perf_counter()
    for b in range(f_obs.shape[0]):
        data = ObservedData(hkl, f_obs[b].numpy(), None, cell, float(d.min()), float(d.max()), len(hkl), len(hkl),
                            1.0, [])  # fmt: skip
        pred, hold, grid = predict_density(solver, data, transfer, input_scale)
        f_pred = f_from_density(pred[None], hkl[hold], cell)  # (1, M_held)
        start = rng.uniform(0, 2 * np.pi, len(hkl))
        start[hold] = np.angle(f_pred[0].numpy())
        maps.append(density_from_f(f_pred, hkl[hold], cell, shape)[0])
        phases.append(start)
        held.append(float(hold.mean()))
    seconds = time.perf_counter() - t
    return {
        "maps": torch.stack(maps),
        "phases": torch.as_tensor(np.stack(phases)),
        "grid": list(grid),
        "held_fraction": float(np.min(held)),
        "seconds": seconds,
    }


def evaluate_cell(
    ds: StoredDataset,
    solver: TrainedNetwork,
    transfers: tuple[str, ...] = TRANSFERS,
    n_iter: int = SOLVE_PHASING.n_iter,
    hio_starts: int = SOLVE_PHASING.n_starts,
    seed: int = 0,
) -> dict:
    """All scores of one cell's test set: chance, HIO from random starts, and per transfer the network (at solve's
    input scale and at the training scale), the network + HIO, and solve's default (the lower R of the two)."""
    items = [ds[i] for i in range(len(ds))]
    cell = Cell(*[float(x) for x in items[0]["cell"]])
    truth = torch.stack([it["target"][0] for it in items]).double()
    f000 = torch.tensor([float(it["z"][: it["n_atoms"]].sum()) for it in items], dtype=torch.float64)
    d_min = float(ds.config.d_min)
    shape = tuple(truth.shape[-3:])
    hkl = miller_indices(cell, d_min)
    ds.require_reflections()
    f_obs = torch.stack([it["f_obs"] for it in items])  # (B, M): the stored amplitudes, on the absolute scale
    options = method_options("hio", n_iter=n_iter, seed=seed)
    out: dict = {"n": len(items), "grid": list(shape), "reflections": len(hkl)}
    chance = random_phase_maps(truth, cell, d_min, torch.Generator().manual_seed(seed))
    out["chance"], _ = score(chance, truth, cell, d_min, 0.0)
    r_hio = err_hio = None
    if hio_starts > 0:
        t = time.perf_counter()
        rho, r_hio = in_chunks(
            lambda s: hio(f_obs[s], hkl, cell, shape, options.replace(n_starts=hio_starts), f000=f000[s]), len(items)
        )
        out["hio"], err_hio = score(rho, truth, cell, d_min, time.perf_counter() - t)
    out["transfers"] = {}
    for transfer in transfers:
        row: dict = {}
        starts = {}
        for key, training_scale in SCALES.items():
            input_scale = float((solver.norm or {}).get("input", 1.0)) if training_scale else None
            starts[key] = network_starts(solver, cell, hkl, f_obs, shape, transfer, input_scale, seed)
            row[key], _ = score(starts[key]["maps"], truth, cell, d_min, starts[key]["seconds"], per_structure=True)
        row["grid"], row["held_fraction"] = starts["network"]["grid"], starts["network"]["held_fraction"]
        t = time.perf_counter()  # the hybrid starts from solve's network phases (origin peak 1)
        rho0 = density_from_f(torch.polar(f_obs, starts["network"]["phases"]), hkl, cell, shape)
        rho, r_net = in_chunks(
            lambda s, rho0=rho0: refine_density(rho0[s], f_obs[s], hkl, cell, "hio", options, f000=f000[s]), len(items)
        )
        seconds = time.perf_counter() - t + starts["network"]["seconds"]
        row["hybrid"], err_net = score(rho, truth, cell, d_min, seconds)
        if r_hio is not None:
            pick = r_net <= r_hio  # solve keeps the lower R-free; the network run wins ties
            err = np.where(pick, err_net, err_hio)
            row["solve"] = {
                "median_phase_error_weighted_deg": float(np.median(err)),
                "solved_fraction": float(np.mean(err < SOLVED_THRESHOLD_DEG)),
                "network_run_kept": float(np.mean(pick)),
                "seconds_per_structure": seconds / len(err) + out["hio"]["seconds_per_structure"],
            }
        out["transfers"][transfer] = row
    if {"convolve", "resample"} <= set(out["transfers"]):
        conv, res = out["transfers"]["convolve"], out["transfers"]["resample"]
        out["resample_vs_convolve"] = {
            scale: paired(conv[key], res[key])
            for scale, key in (("origin", "network"), ("training", "network_training_scale"))
        }
    return out


# --- the whole benchmark ------------------------------------------------------------------------------------------


def run_benchmark(
    checkpoint: str,
    source: str,
    cells: dict[str, tuple[float, ...]],
    n: int,
    workdir: Path,
    seed: int = 0,
    n_iter: int = SOLVE_PHASING.n_iter,
    hio_starts: int = SOLVE_PHASING.n_starts,
    transfers: tuple[str, ...] = TRANSFERS,
    log: Callable[[str], None] = print,
) -> dict:
    """Measure every cell and transfer; returns the results dict that goes to the JSON file."""
    t0 = time.perf_counter()
    path = find_checkpoint(checkpoint)
    if path is None:
        raise SystemExit(f"no checkpoint {checkpoint!r}: give a file with --checkpoint")
    from patterson.networks import load_checkpoint

    state = load_checkpoint(path, map_location="cpu")
    solver = TrainedNetwork.load(path)
    train = training_config(state, source)
    pool, counts, entries = held_out_pool(train)
    results = {
        "benchmark": "a network trained on one cubic cell applied to other cells: convolve vs resample",
        "checkpoint": str(path),
        "training": {
            "cell": list(train.cell) if train.cell else None,
            "grid": list(solver.train_shape),
            "spacing": solver.spacing,
            "d_min": solver.d_min,
            "normalisation": solver.norm,
            "dataset": json.loads(train.to_json()),
        },
        "held_out": {
            "split": "test",
            "entries": entries,
            "items": len(pool),
            "training_data_check": check_against_training_data(state, entries),
        },
        "source": source,
        "n_per_cell": n,
        "seed": seed,
        "n_iter": n_iter,
        "hio_starts": hio_starts,
        "solved_threshold_deg": SOLVED_THRESHOLD_DEG,
        "run": run_metadata(),
        "cells": [],
    }
    log(f"{len(entries)} held-out entries, {len(pool)} items ({time.perf_counter() - t0:.0f} s)")
    for i, (name, cell) in enumerate(cells.items()):
        t = time.perf_counter()
        ds = make_cell_set(train, (pool, counts), cell, n, seed, workdir / f"cell{i}")
        row = {"name": name, "cell": list(Cell.of(cell).parameters)}
        row.update(evaluate_cell(ds, solver, transfers, n_iter, hio_starts, seed))
        row["seconds"] = time.perf_counter() - t
        results["cells"].append(row)
        parts = []
        for tr, v in row["transfers"].items():
            net, train_scale = v["network"], v["network_training_scale"]
            parts.append(
                f"{tr} CC {net['median_cc_aligned']:.2f} ({train_scale['median_cc_aligned']:.2f}) "
                f"{net['median_phase_error_weighted_deg']:.0f}° hybrid {100 * v['hybrid']['solved_fraction']:.0f}%"
            )
        log(f"{name:34s} chance CC {row['chance']['median_cc_aligned']:.2f}  " + "  ".join(parts) +
            f"  ({row['seconds']:.0f} s)")  # fmt: skip
    results["wall_s"] = time.perf_counter() - t0
    return results


def _pct(v: dict | None) -> str:
    return "–" if v is None else f"{100 * v['solved_fraction']:.0f}%"


def render(results: dict) -> str:
    """The Markdown tables of docs/tables/cell_transfer_table.md from the whole results file."""
    transfers = list(results["cells"][0]["transfers"]) if results["cells"] else []
    train = results["training"]
    cell = train["cell"]
    lines = [
        f"Network `{Path(results['checkpoint']).name}` trained on a {cell[0]:g} Å cubic cell "
        f"({'×'.join(map(str, train['grid']))} grid, {train['spacing']:.2f} Å spacing, d_min {train['d_min']:g} Å); "
        f"{results['n_per_cell']} held-out test structures per cell (entries of the training data's test split).",
        "",
        "**The network alone** (solve's input scaling: origin peak 1): median map CC after the origin and hand "
        "search · median F-weighted phase error · solved fraction (< 40°). Chance: random phases, true amplitudes.",
        "",
        "Last column: resample against convolve on the same structures, the median of the per-structure CC "
        "differences and how often resample is better.",
        "",
        "| cell | grid ("
        + " / ".join(transfers)
        + ") | "
        + " | ".join(transfers)
        + " | chance | resample − convolve |",
        "|" + " --- |" * (4 + len(transfers)),
    ]

    def versus(row: dict, scale: str) -> str:
        p = row.get("resample_vs_convolve", {}).get(scale)
        if p is None:
            return "–"
        if len({tuple(v["grid"]) for v in row["transfers"].values()}) == 1:
            return "same grid"
        return f"{p['median_cc_difference']:+.3f} ({100 * p['better_fraction']:.0f}%)"

    def grid(v: dict) -> str:
        held = "" if v["held_fraction"] == 1 else f" ({100 * v['held_fraction']:.0f}% of reflections)"
        return "×".join(map(str, v["grid"])) + held

    for row in results["cells"]:
        grids = " / ".join(grid(row["transfers"][t]) for t in transfers)
        cells = []
        for t in transfers:
            v = row["transfers"][t]["network"]
            cells.append(f"{v['median_cc_aligned']:.2f} · {v['median_phase_error_weighted_deg']:.0f}° · {_pct(v)}")
        c = row["chance"]
        chance = f"{c['median_cc_aligned']:.2f} · {c['median_phase_error_weighted_deg']:.0f}° · {_pct(c)}"
        lines.append(f"| {row['name']} | {grids} | " + " | ".join(cells) + f" | {chance} | {versus(row, 'origin')} |")
    lines += [
        "",
        f"**With refinement** (solved fraction · median F-weighted phase error): HIO from {results['hio_starts']} "
        f"random starts; the network's phases refined by HIO (`refine_density`, {results['n_iter']} iterations); "
        "and `solve`'s default `hybrid`, which keeps the run with the lower R of those two.",
        "",
        "| cell | HIO, random starts | "
        + " | ".join(f"network + HIO ({t})" for t in transfers)
        + " | "
        + " | ".join(f"solve default ({t})" for t in transfers)
        + " |",
        "|" + " --- |" * (2 + 2 * len(transfers)),
    ]

    def pe(v: dict | None) -> str:
        return "–" if v is None else f"{_pct(v)} · {v['median_phase_error_weighted_deg']:.0f}°"

    for row in results["cells"]:
        hyb = [pe(row["transfers"][t]["hybrid"]) for t in transfers]
        sol = [pe(row["transfers"][t].get("solve")) for t in transfers]
        lines.append(f"| {row['name']} | {pe(row.get('hio'))} | " + " | ".join(hyb + sol) + " |")
    lines += [
        "",
        "**Input scale** (median map CC of the network alone): solve's scaling (each Patterson's origin peak set to 1) "
        "vs the training constant (absolute-scale amplitudes divided by the training set's largest Patterson value, "
        "exactly as in training).",
        "",
        "| cell | "
        + " | ".join(f"{t}: origin peak 1 | {t}: training scale" for t in transfers)
        + " | resample − convolve, training scale |",
        "|" + " --- |" * (2 + 2 * len(transfers)),
    ]
    for row in results["cells"]:
        vals = []
        for t in transfers:
            v = row["transfers"][t]
            vals += [
                f"{v['network']['median_cc_aligned']:.2f}",
                f"{v['network_training_scale']['median_cc_aligned']:.2f}",
            ]
        lines.append(f"| {row['name']} | " + " | ".join(vals) + f" | {versus(row, 'training')} |")
    secs = [
        f"{t} {np.median([r['transfers'][t]['network']['seconds_per_structure'] for r in results['cells']]):.3f} s"
        for t in transfers
    ]
    lines += [
        "",
        f"Seconds per structure (median over cells), network alone: {', '.join(secs)}; "
        f"{results['run']['platform']}, {results['run']['torch_threads']} torch thread(s); "
        f"patterson {results['run']['patterson']}; "
        f"whole benchmark {results['wall_s'] / 60:.1f} min.",
    ]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--checkpoint", default="paper-2", help="shipped weights name or checkpoint file")
    parser.add_argument("--source", default="../shared/data/pdb", help="the folder of PDB files trained on")
    parser.add_argument("--n", type=int, default=24, help="test structures per cell")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--n-iter", type=int, default=SOLVE_PHASING.n_iter, help="HIO iterations (solve's default)")
    parser.add_argument("--hio-starts", type=int, default=SOLVE_PHASING.n_starts, help="random HIO starts (0: skip)")
    parser.add_argument("--out", default="benchmarks/results/cell_transfer.json")
    parser.add_argument("--table", default="docs/tables/cell_transfer_table.md")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        results = run_benchmark(
            args.checkpoint, args.source, CELLS, args.n, Path(tmp), args.seed, args.n_iter, args.hio_starts
        )
    write_json(args.out, results, indent=2)
    write_text(args.table, render(results))
    print(f"wrote {args.out} and {args.table} in {results['wall_s']:.0f} s")


if __name__ == "__main__":
    main()
