"""Ship a trained network: write the slim weights file that `--checkpoint pretrained` finds.

    python recipes/export.py RUN [RUN ...] --name NAME [--compute TEXT] [--recipe FILE ...] [--take best|last]
        [--after SHIPPED]

RUN folders are the training stages in order (a later stage started from the earlier one with ``init_from``); the
weights come from the last run's ``checkpoints/best.pt`` (``--take last``: its last epoch), the metrics history
from all of them (each row gets its ``stage`` and the maps seen so far), so the model card can draw the whole
training curve; ``--after NAME`` puts the history of the shipped weights the first run started from before them
(a later session's further stage of a shipped network). Writes
``src/patterson/weights/NAME.pt`` (float32 weights, configs, normalisation, training data description; no optimizer
state), loadable with ``torch.load(weights_only=True)``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from patterson.errors import PattersonError
from patterson.networks import WEIGHTS_DIR, export_weights, find_checkpoint, load_checkpoint
from patterson.training import read_metrics


def history_of(runs: list[Path], earlier: list[dict] | None = None) -> list[dict]:
    """The metrics rows of all stages, with ``stage`` (1, 2, …) and cumulative ``maps_seen``, after the ``earlier``
    rows (the history of shipped weights the first run started from)."""
    rows = [dict(r) for r in earlier or []]
    before, first = (rows[-1]["maps_seen"], rows[-1]["stage"] + 1) if rows else (0, 1)
    for stage, run in enumerate(runs, start=first):
        config = load_checkpoint(run / "checkpoints" / "last.pt")["train_config"]
        per_step = config["batch_size"] * config["grad_accum"]  # maps per optimizer step
        for row in read_metrics(run / "metrics.jsonl"):
            rows.append({**row, "stage": stage, "maps_seen": before + row["step"] * per_step})
        before = rows[-1]["maps_seen"] if rows else before
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("runs", nargs="+", type=Path, help="training run folders, in stage order")
    parser.add_argument("--name", required=True, help="weights name (paper-2, dense-protein, ...)")
    parser.add_argument("--compute", default="", help="the compute used, in words")
    parser.add_argument("--recipe", nargs="*", default=[], help="the recipe files of the stages")
    parser.add_argument("--out", type=Path, default=None, help="default: src/patterson/weights/NAME.pt")
    parser.add_argument("--take", choices=("best", "last"), default="best", help="the last run's best.pt or last.pt")
    parser.add_argument("--after", default="", help="shipped weights the first run started from (init_from): "
                        "their history comes first, and their stages count")  # fmt: skip
    args = parser.parse_args()
    earlier = load_checkpoint(find_checkpoint(args.after) or args.after).get("history", []) if args.after else []
    history = history_of(args.runs, earlier)
    train_time_s = sum(float(r.get("epoch_time_s", 0.0)) for r in history)
    stages = history[-1]["stage"] if history else len(args.runs)
    notes = {"compute": args.compute, "recipe": args.recipe, "stages": stages, "train_time_s": train_time_s}
    best = args.runs[-1] / "checkpoints" / f"{args.take}.pt"
    out = export_weights(best, args.out or WEIGHTS_DIR / f"{args.name}.pt", history, notes)
    print(f"{out}: {out.stat().st_size / 1e6:.1f} MB, {len(history)} epochs, {train_time_s / 60:.0f} min of training")


if __name__ == "__main__":
    try:
        main()
    except PattersonError as exc:  # bad input: one line, exit 2, nothing written (weights are written atomically)
        print(f"export: error: {exc}", file=sys.stderr)
        sys.exit(2)
