"""Benchmark dataset generation: examples per second for paper-2 and dense-protein with 1 and 2 workers.

Reads the source once per worker count (phase 1: fragments from every file), then times the example phase
(placement, structure factors, maps, compression, writing shards) on a few thousand examples, and projects the
time and size of 100,000 paper-2 examples from the same source.

    python benchmarks/generate.py [--source ../shared/data/pdb] [--out benchmarks/results/generate.json]
        [--n-paper2 3000] [--n-dense 400] [--full-run-json FILE]

``--full-run-json`` adds the record of an actual full run (written by ``--full-run N`` in another invocation:
``python benchmarks/generate.py --full-run 100000 --workers 2 --keep DS``).
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import shutil
import tempfile
import time
from pathlib import Path

from _common import run_metadata, write_json
from patterson.datasets import build_pool, generate, make_config


def _spin(_: int) -> float:
    t0 = time.perf_counter()
    x = 0
    for i in range(5_000_000):
        x += i
    return time.perf_counter() - t0


def free_cores() -> float:
    """How many cores this job really gets now: pure-Python work in 2 processes vs 1 (2.0 on an idle machine)."""
    t0 = time.perf_counter()
    _spin(0)
    one = time.perf_counter() - t0
    t0 = time.perf_counter()
    with multiprocessing.get_context("fork").Pool(2) as pool:
        pool.map(_spin, [0, 1])
    two = time.perf_counter() - t0
    return round(2 * one / two, 2)


def folder_bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())


def time_preset(preset: str, source: str, n: int, workers: int, pool) -> dict:
    """Generate n examples into a temporary folder; return rates and sizes."""
    config = make_config(preset, source=source, n=n)
    with tempfile.TemporaryDirectory(prefix="bench-generate-") as tmp:
        t0 = time.perf_counter()
        summary = generate(config, Path(tmp) / "ds", workers=workers, progress=False, pool=pool)
        wall = time.perf_counter() - t0
        size = folder_bytes(Path(tmp) / "ds")
    return {
        "preset": preset,
        "workers": workers,
        "n": n,
        "seconds_plan": round(summary.seconds_plan, 3),
        "seconds_examples": round(summary.seconds_examples, 3),
        "examples_per_s": round(n / summary.seconds_examples, 1),
        "examples_per_s_incl_plan": round(n / (summary.seconds_plan + summary.seconds_examples), 1),
        "wall_s_without_source": round(wall, 2),
        "bytes_per_example": round(size / n),
    }


def full_run(source: str, n: int, workers: int, keep: str | None) -> dict:
    """Actually generate n paper-2 examples (source read included) and record time and size."""
    out = Path(keep) if keep else Path(tempfile.mkdtemp(prefix="bench-generate-full-")) / "ds"
    config = make_config("paper-2", source=source, n=n)
    t0 = time.perf_counter()
    summary = generate(config, out, workers=workers, progress=False)
    wall = time.perf_counter() - t0
    record = {
        "preset": "paper-2",
        "n": n,
        "workers": workers,
        "wall_s": round(wall, 1),
        "seconds_source": round(summary.seconds_source, 1),
        "seconds_plan": round(summary.seconds_plan, 1),
        "seconds_examples": round(summary.seconds_examples, 1),
        "chunks_resumed": summary.chunks_resumed,
        "dataset_bytes": folder_bytes(out),
        "counts": summary.counts,
        "source_counts": summary.source_counts,
    }
    if not keep:
        shutil.rmtree(out.parent)
    return record


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--source", default=str(Path(__file__).resolve().parents[2] / "shared" / "data" / "pdb"))
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" / "generate.json"))
    parser.add_argument("--n-paper2", type=int, default=3000)
    parser.add_argument("--n-dense", type=int, default=400)
    parser.add_argument("--target-n", type=int, default=100_000)
    parser.add_argument("--full-run", type=int, default=None, metavar="N", help="generate N paper-2 examples once")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--keep", default=None, help="with --full-run: dataset folder to keep")
    parser.add_argument("--full-run-json", default=None, help="merge a --full-run record into the results")
    args = parser.parse_args()
    source = args.source if Path(args.source).is_dir() else "embedded"

    if args.full_run:
        record = {"run": run_metadata(), **full_run(source, args.full_run, args.workers, args.keep)}
        write_json(args.out, record)
        print(json.dumps(record, indent=1))
        return

    results: dict = {
        "run": run_metadata(),
        "source": source,
        "load_average_at_start": os.getloadavg(),
        "free_cores_at_start": free_cores(),
        "runs": [],
        "source_read": {},
    }
    for workers in (1, 2):
        t0 = time.perf_counter()
        pool = build_pool(make_config("paper-2", source=source, n=1), workers)  # dense-protein reads the same
        results["source_read"][f"workers={workers}"] = {
            "seconds": round(time.perf_counter() - t0, 2),
            "fragments": len(pool[0]),
            **{k: v for k, v in pool[1].items() if k in ("files", "skipped_files")},
        }
        for preset in ("paper-2", "dense-protein"):
            n = args.n_paper2 if preset == "paper-2" else args.n_dense
            run = time_preset(preset, source, n, workers, pool)
            results["runs"].append(run)
            print(json.dumps(run), flush=True)
        del pool
    results["load_average_at_end"] = os.getloadavg()
    results["free_cores_at_end"] = free_cores()
    results["note"] = (
        "the machine is shared: free_cores says how many cores the job really had (2 processes of pure-Python work "
        "vs 1); when it is near 1, two workers cannot be faster than one"
    )

    best = {w: next(r for r in results["runs"] if r["preset"] == "paper-2" and r["workers"] == w) for w in (1, 2)}
    projections = {}
    for w, run in best.items():
        read = results["source_read"][f"workers={w}"]["seconds"]
        plan_per_example = run["seconds_plan"] / run["n"]
        seconds = read + args.target_n * (plan_per_example + 1.0 / run["examples_per_s"])
        projections[f"workers={w}"] = {
            "seconds": round(seconds),
            "minutes": round(seconds / 60, 1),
            "gigabytes": round(args.target_n * run["bytes_per_example"] / 1e9, 2),
        }
    results["projection_paper2"] = {"n": args.target_n, **projections, "target": "< 10 min and < 5 GB on 2 cores"}
    if args.full_run_json and Path(args.full_run_json).is_file():
        results["full_run"] = json.loads(Path(args.full_run_json).read_text())
    write_json(args.out, results)
    print(json.dumps(results["projection_paper2"], indent=1))


if __name__ == "__main__":
    main()
