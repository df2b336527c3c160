"""A Fourier neural operator against the shipped paper-2 U-Net on the U-Net's own held-out test entries (issue #17).

Makes the shipped network's dataset (paper-2, 20,000 dipeptides of ../shared/data/pdb, splits 0.97/0.015/0.015,
seed 0: the same validation and test entries), trains ``recipes/fourier-net-paper-2.toml`` on it (or takes a run
folder that did, ``--run``), and scores both networks as ``patterson evaluate`` does: alone on every test structure,
and as the hybrid's start (network + HIO) on the first ``--n-hybrid``, beside chance. Records the compute of each.

    OMP_NUM_THREADS=2 python benchmarks/fourier_net.py [--source ../shared/data/pdb] [--run RUN] [--n-hybrid 48]
        [--out benchmarks/results/fourier_net.json]
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from _common import run_metadata, write_json
from patterson.datasets import generate, make_config
from patterson.networks import find_checkpoint, load_checkpoint
from patterson.phasing import EvaluateConfig, evaluate
from patterson.training import load_config, read_metrics, train

ROOT = Path(__file__).resolve().parent.parent
RECIPE = ROOT / "recipes" / "fourier-net-paper-2.toml"


def compute(run: Path | None, checkpoint: Path) -> dict:
    """Maps seen and CPU minutes of a training run (the run folder's metrics, or the history shipped weights carry)."""
    rows = read_metrics(run / "metrics.jsonl") if run else load_checkpoint(checkpoint).get("history", [])
    config = load_checkpoint(checkpoint)["train_config"]
    maps = rows[-1].get("maps_seen") or rows[-1]["step"] * config["batch_size"] * config["grad_accum"]
    return {"maps_seen": int(maps), "cpu_minutes": sum(float(r.get("epoch_time_s", 0.0)) for r in rows) / 60}


def score(checkpoint: Path, data: Path, out: Path, n_hybrid: int) -> dict:
    alone = evaluate(EvaluateConfig(str(data), str(out / "alone"), checkpoint=str(checkpoint), plots=False))
    hybrid = evaluate(EvaluateConfig(str(data), str(out / "hybrid"), "hybrid", checkpoint=str(checkpoint),
                                     limit=n_hybrid, plots=False))  # fmt: skip
    keep = lambda m: {"n": m["n"], "cc_aligned_median": m["cc_aligned"]["median"],  # noqa: E731
                      "phase_error_weighted_median": m["phase_error_deg"]["median_weighted"],
                      "solved_fraction": m["solved_fraction"], "chance": m["chance"]}  # fmt: skip
    return {"alone": keep(alone), "hybrid": keep(hybrid)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--source", default="../shared/data/pdb")
    parser.add_argument("--run", type=Path, default=None, help="a run folder of the recipe on this dataset")
    parser.add_argument("--n-hybrid", type=int, default=48)
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "fourier_net.json")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "paper-2"
        config = make_config("paper-2", source=args.source, n=20000, splits=(0.97, 0.015, 0.015), seed=0)
        generate(config, data, workers=2, progress=False)
        run = args.run
        if run is None:
            run = Path(tmp) / "run"
            train(load_config(RECIPE, [], data=str(data)), run)
        fno = run / "checkpoints" / "best.pt"
        unet = find_checkpoint("paper-2")
        results = {"benchmark": "fourier-net vs the shipped paper-2 U-Net", "recipe": str(RECIPE.relative_to(ROOT)),
                   "run": run_metadata(),
                   "fourier-net": {"compute": compute(run, fno), **score(fno, data, Path(tmp) / "fno", args.n_hybrid)},
                   "paper-2 U-Net": {"compute": compute(None, unet),
                                     **score(unet, data, Path(tmp) / "unet", args.n_hybrid)}}  # fmt: skip
    write_json(args.out, results)
    for name in ("fourier-net", "paper-2 U-Net"):
        r = results[name]
        print(f"{name}: {r['compute']['maps_seen']} maps, {r['compute']['cpu_minutes']:.1f} CPU min; alone CC "
              f"{r['alone']['cc_aligned_median']:.3f} (chance {r['alone']['chance']['cc_aligned']['median']:.3f}); "
              f"hybrid {r['hybrid']['solved_fraction']:.0%} of {r['hybrid']['n']} solved, "
              f"{r['hybrid']['phase_error_weighted_median']:.1f}°")


if __name__ == "__main__":
    main()
