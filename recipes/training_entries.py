"""List a shipped network's training entries in its weights file, for networks exported before checkpoints kept them.

    python recipes/training_entries.py src/patterson/weights/NAME.pt [...] [--source DIR]

Rebuilds the split of entries that ``patterson generate`` made for the network's training dataset (from the
dataset config the weights carry; ``--source`` where the source folder lies elsewhere now) and stores the training
split's entries as ``data.train.entries``, so that a test set's held-out check needs no source folder.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from patterson.datasets import GenerateConfig, split_entries
from patterson.errors import PattersonError
from patterson.networks import load_checkpoint, save_checkpoint, trained_on


def add_entries(path: Path, source: str | None) -> int:
    """Store the training entries in ``path`` (atomically); returns how many."""
    state = load_checkpoint(path)
    config = trained_on(state)
    if not config:
        raise PattersonError(f"{path}: not trained on a stored dataset; nothing to list")
    if source:
        config["source"] = source
    entries = split_entries(GenerateConfig.from_dict(config))["train"]
    state["data"]["train"]["entries"] = entries
    save_checkpoint(path, state)
    return len(entries)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("weights", nargs="+", type=Path)
    parser.add_argument("--source", default=None, help="the training source folder, where it lies now")
    args = parser.parse_args()
    for path in args.weights:
        print(f"{path}: {add_entries(path, args.source)} training entries")


if __name__ == "__main__":
    try:
        main()
    except PattersonError as exc:
        print(f"training_entries: error: {exc}", file=sys.stderr)
        sys.exit(2)
