"""The 2021 report's task (issue #17): diffraction intensities of one octant → atoms as Gaussians, on inorganic
crystals, scored the report's way (voxels above 70% of the maximum as atoms; vectors between true atoms against
vectors between predicted ones) and by map CC, for the shipped network and the report's own baseline rebuilt as it
was, trained in the same run on the same training crystals, next to the chance level.

Data: the held-out test split of the dataset each shipped network (``report-hkl10``, ``report-hkl20``) was trained
on, and its training split for the baseline, remade from the weights' own dataset config (the default crystal
source: the CIFs of the ``crystals`` package and pymatgen's AFLOW prototypes, ``pip install --no-deps crystals
pymatgen``; split by entry, so no test crystal is seen in training).

Rows:
- ``network``: the shipped weights (``patterson evaluate --checkpoint NAME``).
- ``mlp``: scikit-learn ``MLPRegressor(hidden_layer_sizes=(100,), activation="relu")``, otherwise the defaults, as
  in the report ("100 hidden layers", scikit-learn's default of one hidden layer of 100 units), on the flattened
  intensity grid → the flattened target grid; inputs and targets divided by the same constants as the network's.
- ``mlp-2000``: the same, trained for exactly 2,000 epochs (more compute than the defaults' early stop gives it).
- ``chance``: the true amplitudes with random phases.

Counts: atoms with a peak within 1.0 Å after the origin/hand search, and vectors between true atoms with a
predicted vector within 0.5 Å (no alignment needed), summed over the test crystals.

    pip install -e ".[report]" && pip install --no-deps crystals pymatgen
    OMP_NUM_THREADS=1 python benchmarks/report_task.py [--names report-hkl10 report-hkl20]
        [--out benchmarks/results/report_task.json] [--table docs/tables/report_task_table.md]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from _common import remake_training_data, run_metadata, write_json, write_text
from patterson.datasets import StoredDataset
from patterson.evaluation import ReportOptions, evaluate_predictions, random_phase_maps
from patterson.networks import WEIGHTS_DIR, TrainedNetwork, trained_on
from patterson.phasing import prediction_batches

ROOT = Path(__file__).resolve().parent.parent


def fit_mlp(train: StoredDataset, norm: dict, seed: int = 0, epochs: int | None = None):
    """The report's baseline on the training split: flattened intensities → flattened target grid; scikit-learn's
    defaults (it stops once the loss improves by less than 1e-4 for 10 epochs), or exactly ``epochs`` epochs."""
    from sklearn.neural_network import MLPRegressor

    x = np.stack([train[i]["input"][0].numpy().ravel() for i in range(len(train))]) / norm["input"]
    y = np.stack([train[i]["target"][0].numpy().ravel() for i in range(len(train))]) / norm["target"]
    longer = {} if epochs is None else {"max_iter": epochs, "tol": 0.0, "n_iter_no_change": epochs + 1}
    mlp = MLPRegressor(hidden_layer_sizes=(100,), activation="relu", random_state=seed, **longer)
    t0 = time.perf_counter()
    mlp.fit(x, y)
    return mlp, time.perf_counter() - t0


def score(name: str, batches, out: Path) -> dict:
    """evaluate_predictions of one method's ``batches`` (every test crystal), with its atom and vector counts."""
    metrics = evaluate_predictions(batches, out / name, method=name, options=ReportOptions(plots=False, chance=False))
    peaks = metrics["peaks"]
    return {"n": metrics["n"], "cc_aligned_median": metrics["cc_aligned"]["median"],
            "atoms_within_1.0A": peaks["atoms_found_1.0A"], "atoms": peaks["n_atoms"],
            "vectors_within_0.5A": peaks["vectors_found_0.5A"], "vectors": peaks["n_vectors"]}  # fmt: skip


def chance_batches(test: StoredDataset, seed: int = 0):
    """The test crystals with random phases and the true amplitudes (the chance level)."""
    gen = torch.Generator().manual_seed(seed)
    for batch in prediction_batches([test], lambda x: x, batch_size=1):
        yield batch | {"prediction": random_phase_maps(batch["truth"], batch["cell"], batch["d_min"], gen)}


MLP_EPOCHS = 2000  # the baseline trained longer: no early stop


def _density_of(mlp, norm: dict, shape: tuple[int, int, int]):
    """The MLP as a map predictor: intensity grids (B, X, Y, Z) → densities (B, X, Y, Z) in e/Å³."""

    def density(inputs: torch.Tensor) -> torch.Tensor:
        y = mlp.predict(inputs.reshape(len(inputs), -1).numpy() / norm["input"])
        return torch.from_numpy(np.asarray(y, dtype=np.float64).reshape(len(inputs), *shape) * norm["target"])

    return density


def run(name: str, folder: Path) -> dict:
    """Remake the data, fit the baseline, score the network, the baseline and chance on the test crystals."""
    weights = Path(name) if name.endswith(".pt") else WEIGHTS_DIR / f"{name}.pt"
    network = TrainedNetwork.load(weights)
    name = name if not name.endswith(".pt") else weights.stem
    data = remake_training_data(trained_on(network.state), folder / "data", ("train", "test"))
    train, test = StoredDataset(data, "train", normalise=False), StoredDataset(data, "test", normalise=False)
    shape = tuple(test[0]["target"].shape[-3:])
    rows = {"network": score("network", prediction_batches([test], network.density, batch_size=1), folder)}
    fits = {}
    for key, epochs in (("mlp", None), ("mlp-2000", MLP_EPOCHS)):
        mlp, seconds = fit_mlp(train, network.norm, epochs=epochs)
        fits[key] = {"fit_s": seconds, "epochs": int(mlp.n_iter_)}
        rows[key] = score(key, prediction_batches([test], _density_of(mlp, network.norm, shape), 1), folder)
    rows["chance"] = score("chance", chance_batches(test), folder)
    history = network.state.get("history", [])
    return {
        "benchmark": "the 2021 report's task", "name": name,
        "weights": str(weights.relative_to(ROOT) if weights.is_relative_to(ROOT) else weights),
        "data": {k: trained_on(network.state).get(k) for k in ("preset", "n", "splits", "seed", "h_max", "source")},
        "n_train": len(train), "n_test": len(test),
        "compute": {"network_maps_seen": history[-1]["maps_seen"] if history else None,
                    "network_train_s": network.state.get("notes", {}).get("train_time_s"), **fits},
        "rows": rows,
    }  # fmt: skip


def render(results: dict) -> str:
    """The Markdown table of docs/tables/report_task_table.md from the whole results file: per task, atoms and
    vectors recovered (counts over the test crystals) and median CC, per row."""
    lines = [
        "| task | method | test crystals | atoms within 1.0 Å | vectors within 0.5 Å | median CC (aligned) |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    names = {"network": "shipped network", "mlp": "the report's MLP (scikit-learn defaults, rebuilt)",
             "mlp-2000": f"the same MLP, {MLP_EPOCHS} epochs", "chance": "chance (true amplitudes, random phases)"}
    for r in results["tasks"]:
        for key, row in r["rows"].items():
            lines.append(
                f"| `{r['name']}` | {names[key]} | {row['n']} | {row['atoms_within_1.0A']}/{row['atoms']} "
                f"({row['atoms_within_1.0A'] / max(row['atoms'], 1):.0%}) | {row['vectors_within_0.5A']}/"
                f"{row['vectors']} ({row['vectors_within_0.5A'] / max(row['vectors'], 1):.0%}) | "
                f"{row['cc_aligned_median']:.3f} |"
            )
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    names = ["report-hkl10", "report-hkl20"]
    parser.add_argument("--names", nargs="+", default=names, help="shipped weights, or .pt files")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "report_task.json")
    parser.add_argument("--table", type=Path, default=ROOT / "docs" / "tables" / "report_task_table.md")
    args = parser.parse_args()
    tasks = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.names:
            tasks.append(run(name, Path(tmp) / Path(name).stem))
            print(json.dumps(tasks[-1]["rows"]), flush=True)
    results = {"run": run_metadata(), "tasks": tasks}
    write_json(args.out, results)
    write_text(args.table, "<!-- written by benchmarks/report_task.py -->\n\n" + render(results))
    print(render(results))


if __name__ == "__main__":
    main()
