"""Learning curves at small compute (issue #17): validation CC against maps seen and CPU minutes, per recipe.

Every row trains from scratch on the same ``paper-2`` dataset (real dipeptides from ../shared/data/pdb, 12 Å cell,
1.5 Å; entries split by PDB code), with the same number of maps seen, the same optimiser settings, and fresh
augmented maps every step (``on_the_fly``: a random rotation and B per example, no epochs over fixed maps), and
records after every epoch the median map CC on the held-out validation maps after the origin/hand search, beside the
chance level of the same maps (random phases with the true amplitudes). Rows:

- ``unet``: the shipped paper-2 architecture (``patterson-unet``, local 3×3×3 / 5×5×5 convolutions);
- ``fourier-net``: a Fourier neural operator (``fourier-net``), every layer a global convolution over the cell;
- ``fourier-net-wide``: the same, wider and with more modes;
- ``fourier-net-invariant``: fourier-net trained with the origin- and hand-invariant loss (the loss after the best
  origin shift and hand, as the metric forgives them: the network may commit to one hand);
- ``fourier-net-invariant-cc``: the same with the correlation term weighted 0.5 (the metric itself);
- ``fourier-net-invariant-m8``, ``-l6``: the invariant loss with 8 modes per axis (every frequency to 1.5 Å in a
  12 Å cell) or with 6 layers;
- ``fourier-net-invariant-sharp``: the invariant loss with the sharpened, origin-removed Patterson as a second
  input channel (a fixed transform of the input);
- ``fourier-net-invariant-recycle``: the invariant loss, two passes of the same network, the second given the
  first's map with the Patterson's amplitudes imposed (recycling, as PhAI; twice the compute per map);
  ``-sharp-recycle`` both.

    OMP_NUM_THREADS=2 python benchmarks/learning_curve.py [--source ../shared/data/pdb] [--n 3000]
        [--epochs 6] [--batches 100] [--rows unet fourier-net ...] [--keep]
        [--out benchmarks/results/learning_curve.json] [--table docs/tables/learning_curve_table.md]

``--keep`` reruns only ``--rows`` and keeps the other rows of ``--out`` (refused unless it was written with the
same source, n, epochs and batches: the same data and maps seen); each row records when it ran.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import torch

from _common import run_metadata, write_json, write_text
from patterson.cells import Cell
from patterson.datasets import StoredDataset, generate, make_config
from patterson.evaluation import chance_scores
from patterson.training import load_config, read_metrics, train

FNO = {"width": 16, "modes": 6, "n_layers": 4}
ROWS = {  # name: (model, model options, training settings beyond COMMON)
    "unet": ("patterson-unet", {"c1": 16, "c2": 24, "n_blocks": 4, "encoder_kernel": 3, "block_kernel": 5,
                                "decoder_kernel": 3}, []),  # fmt: skip
    "fourier-net": ("fourier-net", FNO, []),
    "fourier-net-wide": ("fourier-net", {"width": 24, "modes": 8, "n_layers": 4}, []),
    "fourier-net-invariant": ("fourier-net", FNO, ["loss=invariant"]),
    "fourier-net-invariant-cc": ("fourier-net", FNO, ["loss=invariant", "loss_weight=0.5"]),
    "fourier-net-invariant-m8": ("fourier-net", {"width": 16, "modes": 8, "n_layers": 4}, ["loss=invariant"]),
    "fourier-net-invariant-l6": ("fourier-net", {"width": 16, "modes": 6, "n_layers": 6}, ["loss=invariant"]),
    "fourier-net-invariant-sharp": ("fourier-net", {**FNO, "sharpen": True}, ["loss=invariant"]),
    "fourier-net-invariant-recycle": ("fourier-net", {**FNO, "recycle": 1}, ["loss=invariant"]),
    "fourier-net-invariant-sharp-recycle": ("fourier-net", {**FNO, "sharpen": True, "recycle": 1}, ["loss=invariant"]),
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
    model, options, extra = ROWS[name]
    sets = [*COMMON, *extra, f"epochs={epochs}", f"max_batches={batches}"]
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
    return {"row": name, "model": model, "options": options, "settings": extra, "parameters": int(n_params),
            "wall_s": wall, "torch_threads": torch.get_num_threads(), "curve": rows}  # fmt: skip


def kept_rows(args: argparse.Namespace) -> list[dict]:
    """The rows of ``--out`` not rerun now, when it was written for the same data and maps seen."""
    old = json.loads(args.out.read_text()) if args.out.is_file() else {"rows": []}
    same = (old.get("source"), old.get("n"), old.get("epochs"), old.get("batches"))
    if old["rows"] and same != (args.source, args.n, args.epochs, args.batches):
        raise SystemExit(f"--keep: {args.out} was written for (source, n, epochs, batches) = {same}")
    return [r for r in old["rows"] if r["row"] not in args.rows]


def render(results: dict) -> str:
    """The Markdown table of docs/tables/learning_curve_table.md from the whole results file: median aligned
    validation CC after each epoch, per row, with maps seen and CPU minutes."""
    lines = [
        f"Median map CC after the origin/hand search on {results['n_val']} held-out validation maps (`paper-2`, "
        f"real dipeptides, 1.5 Å) against maps seen, each row trained from scratch with fresh augmented maps every "
        f"step; chance (random phases, true amplitudes) {results['chance_cc']:.3f}. Minutes of training on a shared "
        f"2-core CPU (other jobs beside most rows), with the row's torch threads.",
        "",
        "| recipe | parameters | " + " | ".join(f"{r['maps_seen']} maps" for r in results["rows"][0]["curve"])
        + " | minutes (torch threads) |",
        "|---" * (len(results["rows"][0]["curve"]) + 3) + "|",
    ]
    for row in results["rows"]:
        ccs = " | ".join(f"{p['val_cc_aligned_median']:.3f}" for p in row["curve"])
        minutes = f"{row['curve'][-1]['cpu_minutes']:.1f} ({row['torch_threads']})"
        lines.append(f"| {row['row']} | {row['parameters']:,} | {ccs} | {minutes} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--source", default="../shared/data/pdb")
    parser.add_argument("--n", type=int, default=3000)
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument("--batches", type=int, default=100, help="optimizer steps per epoch")
    parser.add_argument("--rows", nargs="+", default=list(ROWS))
    parser.add_argument("--keep", action="store_true", help="keep the other rows of --out")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/learning_curve.json"))
    parser.add_argument("--table", type=Path, default=Path("docs/tables/learning_curve_table.md"))
    args = parser.parse_args()
    kept = kept_rows(args) if args.keep else []
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "paper-2"
        config = make_config("paper-2", source=args.source, n=args.n, splits=(0.9, 0.05, 0.05), seed=0)
        generate(config, data, progress=False)
        results = {"benchmark": "learning curves", "source": args.source, "n": args.n,
                   "n_val": len(StoredDataset(data, "val")), "chance_cc": chance_cc(data),
                   "run": run_metadata(), "common": COMMON, "epochs": args.epochs,
                   "batches": args.batches, "rows": []}  # fmt: skip
        for name in args.rows:
            results["rows"].append(run_row(name, data, Path(tmp), args.epochs, args.batches))
            results["rows"][-1]["ran"] = time.strftime("%Y-%m-%d %H:%M")
            print(name, [round(p["val_cc_aligned_median"], 3) for p in results["rows"][-1]["curve"]], flush=True)
    order = list(ROWS)
    results["rows"] = sorted(kept + results["rows"], key=lambda r: order.index(r["row"]))
    write_json(args.out, results)
    write_text(args.table, "<!-- written by benchmarks/learning_curve.py -->\n\n" + render(results))
    print(render(results))


if __name__ == "__main__":
    main()
