"""Learning curves at small compute (issue #17): validation CC against maps seen and CPU minutes, per recipe.

Every row trains from scratch on the same ``paper-2`` dataset (real dipeptides from ../shared/data/pdb, 12 Å cell,
1.5 Å; entries split by PDB code), with the same number of maps seen, the same optimiser settings, and fresh
augmented maps every step (``on_the_fly``: a random rotation and B per example, no epochs over fixed maps), and
records after every epoch the median map CC on the held-out validation maps after the origin/hand search, beside the
chance level of the same maps (random phases with the true amplitudes). Rows:

- ``unet``: the shipped paper-2 architecture (``patterson-unet``, local 3×3×3 / 5×5×5 convolutions);
- ``fourier-net``: a Fourier neural operator (``fourier-net``), every layer a global convolution over the cell;
- ``fourier-net-wide``: the same, wider and with more modes.

    OMP_NUM_THREADS=2 python benchmarks/learning_curve.py [--source ../shared/data/pdb] [--n 3000]
        [--epochs 6] [--batches 50] [--rows unet fourier-net ...] [--out benchmarks/results/learning_curve.json]
        [--table docs/learning_curve_table.md]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from pathlib import Path

import torch

import patterson
from patterson.cells import Cell
from patterson.datasets import StoredDataset, generate, make_config
from patterson.evaluation import chance_scores
from patterson.training import load_config, read_metrics, train

ROWS = {  # name: (model, model options)
    "unet": ("patterson-unet", {"c1": 16, "c2": 24, "n_blocks": 4, "encoder_kernel": 3, "block_kernel": 5,
                                "decoder_kernel": 3}),  # fmt: skip
    "fourier-net": ("fourier-net", {"width": 16, "modes": 6, "n_layers": 4}),
    "fourier-net-wide": ("fourier-net", {"width": 24, "modes": 8, "n_layers": 4}),
}
COMMON = ["batch_size=8", "grad_accum=1", "lr=2e-3", "schedule=onecycle", "on_the_fly=true", "val_batch_size=32",
          "progress=false", "amp=false"]  # fmt: skip


def chance_cc(data: Path) -> float:
    """Median aligned CC of the validation maps with random phases (the level to beat)."""
    ds = StoredDataset(data, "val", normalise=False)
    truth = torch.stack([ds[i]["target"][0] for i in range(len(ds))]).double()
    cell = Cell(*[float(x) for x in ds[0]["cell"]])
    return float(chance_scores(truth, cell, ds.config.d_min).cc_aligned.median())


def run_row(name: str, data: Path, folder: Path, epochs: int, batches: int) -> dict:
    model, options = ROWS[name]
    sets = [*COMMON, f"epochs={epochs}", f"max_batches={batches}"]
    config = load_config(None, sets, model=model, data=str(data)).replace(model_options=options)
    t0 = time.perf_counter()
    train(config, folder / name)
    wall = time.perf_counter() - t0
    rows, seconds = [], 0.0
    for r in read_metrics(folder / name / "metrics.jsonl"):
        seconds += float(r.get("epoch_time_s", 0.0))
        rows.append({"epoch": r["epoch"], "maps_seen": r["step"] * config.batch_size * config.grad_accum,
                     "cpu_minutes": seconds / 60, "val_cc_aligned_median": r.get("val_cc_aligned_median"),
                     "val_maps": r.get("val_maps")})  # fmt: skip
    state = torch.load(folder / name / "checkpoints" / "last.pt", weights_only=True)
    n_params = sum(v.numel() for v in state["model"].values() if v.is_floating_point() or v.is_complex())
    return {"row": name, "model": model, "options": options, "parameters": int(n_params), "wall_s": wall,
            "curve": rows}  # fmt: skip


def table(results: dict) -> str:
    """Markdown: median aligned validation CC after each epoch, per row, with maps seen and CPU minutes."""
    lines = [
        f"Median map CC after the origin/hand search on {results['n_val']} held-out validation maps (`paper-2`, "
        f"real dipeptides, 1.5 Å) against maps seen, each row trained from scratch with fresh augmented maps every "
        f"step; chance (random phases, true amplitudes) {results['chance_cc']:.3f}.",
        "",
        "| recipe | parameters | " + " | ".join(f"{r['maps_seen']} maps" for r in results["rows"][0]["curve"])
        + " | CPU minutes |",
        "|---" * (len(results["rows"][0]["curve"]) + 3) + "|",
    ]
    for row in results["rows"]:
        ccs = " | ".join(f"{p['val_cc_aligned_median']:.3f}" for p in row["curve"])
        lines.append(f"| {row['row']} | {row['parameters']:,} | {ccs} | {row['curve'][-1]['cpu_minutes']:.1f} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--source", default="../shared/data/pdb")
    parser.add_argument("--n", type=int, default=3000)
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument("--batches", type=int, default=50, help="optimizer steps per epoch")
    parser.add_argument("--rows", nargs="+", default=list(ROWS))
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/learning_curve.json"))
    parser.add_argument("--table", type=Path, default=Path("docs/learning_curve_table.md"))
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "paper-2"
        config = make_config("paper-2", source=args.source, n=args.n, splits=(0.9, 0.05, 0.05), seed=0)
        generate(config, data, progress=False)
        results = {"benchmark": "learning curves", "source": args.source, "n": args.n,
                   "n_val": len(StoredDataset(data, "val")), "chance_cc": chance_cc(data),
                   "version": patterson.__version__, "platform": platform.platform(), "cpu_count": os.cpu_count(),
                   "torch_threads": torch.get_num_threads(), "common": COMMON, "rows": []}  # fmt: skip
        for name in args.rows:
            results["rows"].append(run_row(name, data, Path(tmp), args.epochs, args.batches))
            print(name, [round(p["val_cc_aligned_median"], 3) for p in results["rows"][-1]["curve"]], flush=True)
    args.out.write_text(json.dumps(results, indent=1) + "\n")
    args.table.write_text("<!-- written by benchmarks/learning_curve.py -->\n\n" + table(results))
    print(table(results))


if __name__ == "__main__":
    main()
