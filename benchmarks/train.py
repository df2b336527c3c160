"""Training throughput: the trainer vs a plain PyTorch loop of the same network, batch, loss and optimizer.

For every model preset and grid (12³, 24³, 40³ by default) both loops train on the same Patterson/density pairs
(random atoms, physics core) for a few steps; they are measured interleaved (trainer, reference, reference,
trainer, ...) so that load from other processes on a shared machine hits both alike. Peak memory is that of a
fresh run (building the model and optimizer, then one epoch): the highest resident set size seen (sampled every
2 ms) minus the size before, or ``torch.cuda.max_memory_allocated`` minus the allocation before on a GPU.

    python benchmarks/train.py                    # writes benchmarks/results/train.json
    python benchmarks/train.py --grids 12 --models mlp hurwitz-cnn --repeats 2
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

import torch
from torch.utils.data import DataLoader

from _common import run_metadata, write_json
from patterson.models import MODEL_CONFIGS, count_parameters, model_from_config, paper_loss
from patterson.training import RandomAtomMaps, RandomAtomSpec, Trainer, load_config

RESULTS = Path(__file__).resolve().parent / "results" / "train.json"
# 12³: 12 Å cell at 3 Å; 24³: 12 Å at 1.5 Å (paper-2); 40³: 20 Å at 1.5 Å (paper-1a)
GRID_DATA = {12: dict(cell=12.0, d_min=3.0), 24: dict(cell=12.0, d_min=1.5), 40: dict(cell=20.0, d_min=1.5)}
PAGE = os.sysconf("SC_PAGE_SIZE")


class PeakRSS:
    """Highest resident set size (bytes) seen by a sampling thread while the context is open, minus the start."""

    def __init__(self, device: torch.device, interval: float = 0.002) -> None:
        self.device, self.interval, self.peak = device, interval, 0

    @staticmethod
    def rss() -> int:
        with open("/proc/self/statm") as fh:
            return int(fh.read().split()[1]) * PAGE

    def __enter__(self) -> PeakRSS:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
            self.start = torch.cuda.memory_allocated(self.device)
            return self
        self.start = self.rss()
        self.peak = self.start
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def _sample(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self.rss())
            time.sleep(self.interval)

    def __exit__(self, *exc) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            self.delta = torch.cuda.max_memory_allocated(self.device) - self.start
            return
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self.rss())
        self.delta = self.peak - self.start


class Reference:
    """The plain loop: DataLoader, forward, paper loss, backward, clip, AdamW step, scheduler step, loss.item()."""

    def __init__(self, trainer: Trainer) -> None:
        cfg = trainer.config
        torch.manual_seed(cfg.seed)
        self.device = trainer.device
        self.model = model_from_config(trainer.model_config).to(self.device)
        self.cuda = self.device.type == "cuda"
        if self.cuda:
            self.model.to(memory_format=torch.channels_last_3d)
        self.opt = torch.optim.AdamW(self.model.parameters(), lr=cfg.lr, betas=cfg.betas, weight_decay=cfg.weight_decay)
        self.sched = torch.optim.lr_scheduler.ExponentialLR(self.opt, gamma=cfg.decay_slow)
        self.data, self.batch, self.steps, self.clip = trainer.train_data, cfg.batch_size, cfg.max_batches, cfg.clip

    def epoch(self) -> tuple[float, int]:
        """Train ``steps`` batches; return (seconds, maps)."""
        loader = DataLoader(self.data, batch_size=self.batch, shuffle=True, drop_last=True)
        self.model.train()
        t0, maps, total = time.perf_counter(), 0, 0.0
        for i, (x, y) in enumerate(loader):
            if i == self.steps:
                break
            x, y = x.to(self.device), y.to(self.device)  # (B, 1, X, Y, Z)
            if self.cuda:
                x = x.contiguous(memory_format=torch.channels_last_3d)
            self.opt.zero_grad(set_to_none=True)
            with torch.autocast("cuda", dtype=torch.bfloat16, enabled=self.cuda):
                pred = self.model(x)
            loss = paper_loss(pred.float(), y)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.clip)
            self.opt.step()
            self.sched.step()
            total += loss.item()
            maps += x.shape[0]
        if self.cuda:
            torch.cuda.synchronize(self.device)
        return time.perf_counter() - t0, maps


def _case_config(name: str, grid: int, batch: int, steps: int, device: str):
    overrides = [f"model.grid=[{grid}, {grid}, {grid}]"] if name == "mlp" else []
    sets = [f"batch_size={batch}", "grad_accum=1", f"max_batches={steps}", "epochs=1000", "progress=false"]
    cfg = load_config(None, [*sets, f"device={device}", *overrides], model=name)
    data = RandomAtomMaps(RandomAtomSpec(n=batch * steps, atoms=8, seed=1, **GRID_DATA[grid]))
    return cfg, data


def memory_child(name: str, grid: int, batch: int, steps: int, who: str, device: str) -> None:
    """In a fresh process: peak memory (MB) of building one loop and training one epoch; printed as JSON."""
    cfg, data = _case_config(name, grid, batch, steps, device)
    dev = torch.device("cuda" if device == "cuda" or (device == "auto" and torch.cuda.is_available()) else "cpu")
    with PeakRSS(dev) as peak:
        trainer = Trainer(cfg, data)
        if who == "trainer":
            trainer.train_epoch(0)
        else:
            ref = Reference(trainer)
            del trainer
            ref.epoch()
    print(json.dumps({"peak_mb": peak.delta / 2**20}))


def memory_in_child(name: str, grid: int, batch: int, steps: int, who: str, device: str) -> float:
    """Run :func:`memory_child` in a subprocess, so no loop inherits another's cached allocations."""
    cmd = [sys.executable, __file__, "--memory-child", name, str(grid), str(batch), str(steps), who, device]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    return json.loads(out.strip().splitlines()[-1])["peak_mb"]


def bench_case(name: str, grid: int, batch: int, steps: int, repeats: int, device: str) -> dict:
    """Measure one (preset, grid) case; returns a JSON-ready row."""
    cfg, data = _case_config(name, grid, batch, steps, device)
    trainer = Trainer(cfg, data)
    ref = Reference(trainer)
    trainer.train_epoch(0)  # one warm-up epoch each (allocator, kernels), not timed
    ref.epoch()
    times: dict[str, list[float]] = {"trainer": [], "reference": []}
    maps = {"trainer": batch * steps, "reference": batch * steps}
    for r in range(repeats):
        order = ("trainer", "reference") if r % 2 == 0 else ("reference", "trainer")  # ABBA
        for who in order:
            seconds = trainer.train_epoch(r + 1)["train_time_s"] if who == "trainer" else ref.epoch()[0]
            times[who].append(seconds)
    med = {k: statistics.median(v) for k, v in times.items()}
    best = {k: min(v) for k, v in times.items()}
    mem = {who: memory_in_child(name, grid, batch, steps, who, device) for who in ("trainer", "reference")}
    return {
        "model": name,
        "grid": grid,
        "batch": batch,
        "steps": steps,
        "repeats": repeats,
        "parameters": count_parameters(trainer.module),
        "trainer_maps_per_s": maps["trainer"] / med["trainer"],
        "reference_maps_per_s": maps["reference"] / med["reference"],
        "time_ratio": med["trainer"] / med["reference"],
        "best_time_ratio": best["trainer"] / best["reference"],
        "trainer_times_s": times["trainer"],
        "reference_times_s": times["reference"],
        "trainer_peak_mem_mb": mem["trainer"],
        "reference_peak_mem_mb": mem["reference"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--models", nargs="+", default=list(MODEL_CONFIGS))
    parser.add_argument("--grids", nargs="+", type=int, default=[12, 24, 40], choices=sorted(GRID_DATA))
    parser.add_argument("--steps", type=int, default=3, help="optimizer steps per measured epoch")
    parser.add_argument("--repeats", type=int, default=4, help="measured epochs per loop (interleaved)")
    parser.add_argument("--device", default="cpu", choices=("cpu", "cuda", "auto"))
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--memory-child", nargs=6, metavar="ARG", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.memory_child:
        name, grid, batch, steps, who, device = args.memory_child
        memory_child(name, int(grid), int(batch), int(steps), who, device)
        return
    logging.basicConfig(level=logging.WARNING)
    # Batch 4 (2 at 40³); at 40³ the two paper presets (kernel 7, 3-5M parameters) take seconds per map on two
    # CPU cores, so they run 2 steps and 2 repeats there.
    rows = []
    t_start = time.perf_counter()
    for grid in args.grids:
        for name in args.models:
            big = grid == 40 and name.startswith("paper-") and args.device == "cpu"
            batch = 2 if grid == 40 else 4
            steps, repeats = (2, 2) if big else (args.steps, args.repeats)
            t0 = time.perf_counter()
            row = bench_case(name, grid, batch, steps, repeats, args.device)
            row["wall_s"] = time.perf_counter() - t0
            if big:
                row["note"] = "shrunk: 2 steps x 2 repeats (seconds per map on 2 CPU cores)"
            rows.append(row)
            print(
                f"{name:15s} {grid:3d}³  trainer {row['trainer_maps_per_s']:8.2f} maps/s  "
                f"reference {row['reference_maps_per_s']:8.2f} maps/s  ratio {row['time_ratio']:.3f} "
                f"(best {row['best_time_ratio']:.3f})  "
                f"mem {row['trainer_peak_mem_mb']:.0f}/{row['reference_peak_mem_mb']:.0f} MB",
                flush=True,
            )
    ratios = [r["time_ratio"] for r in rows]
    best_ratios = [r["best_time_ratio"] for r in rows]
    result = {
        "benchmark": "train",
        "run": run_metadata(),
        "device": args.device if args.device != "auto" else ("cuda" if torch.cuda.is_available() else "cpu"),
        "note": (
            "trainer = patterson.training.Trainer.train_epoch (progress bar off, grad_accum 1, clip 1.0, AdamW, "
            "paper loss, LambdaLR); reference = plain DataLoader loop with the same network, batch, loss, clip and "
            "optimizer plus loss.item() per step; measured interleaved after one warm-up epoch each on a CPU shared "
            "with other jobs; time_ratio = median trainer time / median reference time, best_time_ratio = "
            "fastest trainer epoch / fastest reference epoch (least noisy on a shared machine); target < 1.10. "
            "Peak memory of a fresh run (model + optimizer built, one epoch), each loop in its own fresh process: "
            "highest RSS minus RSS before (CPU, sampled every 2 ms), max_memory_allocated minus before (GPU)."
        ),
        "summary": {
            "geomean_time_ratio": math.exp(statistics.fmean(math.log(r) for r in ratios)),
            "median_time_ratio": statistics.median(ratios),
            "max_time_ratio": max(ratios),
            "cases_within_10_percent": sum(r <= 1.10 for r in ratios),
            "geomean_best_time_ratio": math.exp(statistics.fmean(math.log(r) for r in best_ratios)),
            "max_best_time_ratio": max(best_ratios),
            "cases_within_10_percent_best": sum(r <= 1.10 for r in best_ratios),
            "cases": len(ratios),
            "wall_s": time.perf_counter() - t_start,
        },
        "cases": rows,
    }
    write_json(args.out, result)
    print(json.dumps(result["summary"], indent=1))


if __name__ == "__main__":
    main()
