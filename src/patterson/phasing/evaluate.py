"""Networks and phasing methods scored alike on stored dataset splits: ``patterson evaluate``.

- :func:`evaluate` — score one method (a trained network or a phasing method) on a stored dataset split and write
  the evaluation report (``patterson evaluate``; one :class:`EvaluateConfig`).
- :func:`prediction_batches` — batches of a network's (or any function's) maps for the report.

The side-by-side comparison of methods on the same structures is :mod:`patterson.phasing.compare`.
"""

from __future__ import annotations

import dataclasses
import logging
import math
from dataclasses import dataclass
from pathlib import Path

import torch

from patterson import runtime
from patterson.cells import Cell
from patterson.errors import PattersonError
from patterson.evaluation import (
    ReportOptions,
    evaluate_predictions,
    finest_d_min,
)
from patterson.files import check_writable_folder
from patterson.phasing.compare import LOOP_METHODS, _split_maps, phase_maps
from patterson.phasing.config import PhasingConfig
from patterson.phasing.learned import learned_step
from patterson.phasing.options import METHODS

log = logging.getLogger(__name__)


EVAL_METHODS = ("model", "hybrid", *LOOP_METHODS, *METHODS)


SPLIT_CHOICES = ("train", "val", "test", "all")


@dataclass(frozen=True)
class EvaluateConfig:
    """``patterson evaluate``: score one method on one split of a stored dataset and write its report folder.

    ``method`` is ``model`` (a trained network on the stored inputs as they are, any input kind, ``split`` may be
    ``all``), ``charge-flip``, ``hio``, ``raar``, ``rrr``, ``hybrid`` (the network's density refined by
    ``phasing.refine`` against the amplitudes), ``learned`` (the phasing loop with a trained density-modification
    network inside, :func:`~patterson.phasing.learned.learned`) or ``histogram`` (the same loop with the
    non-learned control step). model and hybrid need ``checkpoint`` (a path, a shipped name or ``pretrained``);
    learned takes the shipped density-modification network when none is given. The phasing methods impose the
    stored amplitudes the Patterson maps were made from (with their measured mask), so the dataset's noise and
    missing reflections are what they see; F(000) is the electron count of the known cell contents, as for real
    data with a known composition. ``phasing`` sets the runs (:class:`~patterson.phasing.PhasingConfig`: iterations,
    starts, the free set drawn per structure from ``seed`` and the example, never imposed nor shown to a network;
    R-work, R-free and the verdict go to per_example.csv and metrics.json). ``name`` is the method's name in the
    report; ``n_shells`` and ``region`` (the map CC on the central cube of that many Å) go to the scores; ``limit``
    scores the first examples only; ``device`` None picks CUDA when present.
    """

    data: str
    out: str
    method: str = "model"
    checkpoint: str | None = None
    split: str = "test"
    name: str | None = None
    phasing: PhasingConfig = PhasingConfig()
    batch_size: int = 16
    limit: int | None = None
    device: str | None = None
    plots: bool = True
    n_shells: int = 12
    region: float | None = None

    def __post_init__(self) -> None:
        if self.method not in EVAL_METHODS:
            raise PattersonError(f"unknown method {self.method!r} (choose from {', '.join(EVAL_METHODS)})")
        if self.split not in SPLIT_CHOICES:
            raise PattersonError(f"split must be train, val, test or all, got {self.split!r}")
        if self.split == "all" and self.method != "model":
            raise PattersonError(f"--split all scores a network (--method model); phase one split with {self.method}")
        if self.method in ("model", "hybrid") and not self.checkpoint:
            raise PattersonError(f"--method {self.method} needs --checkpoint")
        if self.phasing.refine not in METHODS:
            raise PattersonError(f"unknown refinement {self.phasing.refine!r} (choose from {', '.join(METHODS)})")
        if self.batch_size < 1 or (self.limit is not None and self.limit < 1):
            raise PattersonError("batch_size and limit must be at least 1")


def evaluate(config: EvaluateConfig) -> dict:
    """Score one method on a stored dataset split and write the report folder of
    :func:`~patterson.evaluation.evaluate_predictions` (metrics.json, per_example.csv, report.md, plots)."""
    check_writable_folder(Path(config.out))
    device = runtime.device(config.device)
    datasets = _open_splits(config)
    network = _network(config, datasets[0], device)
    count = sum(len(ds) for ds in datasets) if config.limit is None else min(config.limit, sum(map(len, datasets)))
    if config.method == "model":
        batches = _network_batches(datasets, network, config)
    else:
        batches = _phasing_batches(datasets[0], network, config, count, device)
    name = _report_name(config, network)
    log.info("scoring %s on %d %s examples of %s (%s)", name, count, config.split, config.data, device)
    return evaluate_predictions(
        batches,
        config.out,
        method=name,
        dataset=f"{config.data}:{config.split}",
        options=ReportOptions(n_shells=config.n_shells, region=config.region, seed=config.phasing.seed,
                              plots=config.plots),  # fmt: skip
        progress=True,
        total=count if datasets[0].config.kind == "peptide" else math.ceil(count / config.batch_size),  # a cell each
    )


def _open_splits(config: EvaluateConfig) -> list:
    """The stored splits to score, in physical units (``all``: every split the dataset has)."""
    from patterson.datasets import SPLITS, StoredDataset

    datasets = []
    for split in SPLITS if config.split == "all" else (config.split,):
        try:
            datasets.append(StoredDataset(config.data, split, normalise=False))
        except PattersonError:
            if config.split != "all":
                raise
    if not datasets or sum(len(ds) for ds in datasets) == 0:
        raise PattersonError(f"{config.data}: the {config.split} split holds no examples")
    return datasets


def _network(config: EvaluateConfig, ds, device: torch.device):
    """The network a method applies, each file read once: a TrainedNetwork (model, hybrid; with the dataset's
    constants when the checkpoint holds none), the learned loop's real-space step, or None."""
    from patterson.networks import open_network

    if config.method == "learned":
        return learned_step(config.checkpoint, dataclasses.asdict(ds.config), device)
    if config.method not in ("model", "hybrid"):
        return None
    network = open_network(config.checkpoint, dataclasses.asdict(ds.config), "density", device)
    if network is None:
        raise PattersonError("no pretrained model is shipped with this version; give a checkpoint file")
    return network if network.norm else network.with_norm(ds.norm)


def _report_name(config: EvaluateConfig, network) -> str:
    if config.name:
        return config.name
    if config.method == "model":
        return network.name
    if config.method == "hybrid":
        return f"hybrid ({network.name} + {config.phasing.refine})"
    return "histogram (control loop)" if config.method == "histogram" else config.method


def _network_batches(datasets: list, network, config: EvaluateConfig):
    """Batches of the network's density from the stored inputs as they are (see :func:`prediction_batches`)."""
    return prediction_batches(datasets, network.density, config.batch_size, config.limit, network.device)


def prediction_batches(datasets: list, predict, batch_size: int = 16, limit: int | None = None, device=None):
    """Batches for :func:`patterson.evaluation.evaluate_predictions` of ``predict(inputs)`` (inputs (B, X, Y, Z)
    float64 as stored, of any kind: Patterson maps or intensity grids → densities in e/Å³), one cell per batch,
    in dataset order, with the true atoms for the peak metrics; at most ``limit`` examples in all."""
    left = limit
    for ds in datasets:
        count = len(ds) if left is None else min(len(ds), left)
        for start in range(0, count, batch_size):
            items = [ds[i] for i in range(start, min(start + batch_size, count))]
            for run in _same_cell_runs(items):
                cell = Cell(*[float(x) for x in items[run[0]]["cell"]])
                inputs = torch.stack([items[i]["input"][0] for i in run]).to(device, torch.float64)
                truth = torch.stack([items[i]["target"][0] for i in run]).to(device, torch.float64)
                label = ds.split if len(datasets) > 1 else ""
                yield {
                    "prediction": predict(inputs),  # (B, X, Y, Z) e/Å³
                    "truth": truth,
                    "cell": cell,
                    "d_min": max(float(items[run[0]].get("d_min", ds.config.d_min)),  # peptides: its own
                                 finest_d_min(cell, tuple(truth.shape[-3:]))),
                    "inputs": inputs,
                    "ids": [f"{label}{'-' if label else ''}{int(items[i]['index'])}" for i in run],
                    "atoms_frac": [cell.to_fractional(items[i]["xyz"][: items[i]["n_atoms"]].double().numpy())
                                   for i in run],  # fmt: skip
                }
        if left is not None:
            left -= count
            if left <= 0:
                return


def _same_cell_runs(items: list[dict]) -> list[list[int]]:
    """Indices of ``items`` in runs of consecutive examples with the same cell (and resolution, where they carry
    their own: peptide crystals)."""
    runs: list[list[int]] = [[0]]
    for i in range(1, len(items)):
        same = items[i].get("d_min") == items[i - 1].get("d_min")
        if not (same and torch.equal(items[i]["cell"], items[i - 1]["cell"])):
            runs.append([])
        runs[-1].append(i)
    return runs


def _phasing_batches(ds, network, config: EvaluateConfig, count: int, device):
    """The batches of a phasing method, one cell each: peptide crystals (cells of their own) one example at a time,
    on a grid of its cell and resolution at the dataset's ``sample_rate`` (their stored grid is fractional)."""
    ds.require_reflections()  # the amplitudes the maps were made from, never read back off a float map
    own_cells = ds.config.kind == "peptide"
    for start in range(0, count, config.batch_size):
        items = [ds[i] for i in range(start, min(start + config.batch_size, count))]
        for run in _same_cell_runs(items):
            batch = [items[i] for i in run]
            yield _phase_batch(config, batch, float(ds.config.d_min), network, device,
                               ds.config.sample_rate if own_cells else None)  # fmt: skip


def _phase_batch(config: EvaluateConfig, items: list[dict], d_min: float, network, device, sample_rate=None) -> dict:
    """Predictions (B, X, Y, Z) in physical units for one batch of raw (not normalised) stored examples of one cell;
    ``network`` is the TrainedNetwork (model, hybrid) or the real-space step (learned) of the method;
    ``sample_rate``: maps made from the stored reflections on a grid of this spacing (see ``_split_maps``)."""
    ids = tuple(f"{config.split}-{int(it['index'])}" for it in items)
    run = config.phasing
    seed = run.seed + int(items[0]["index"])  # a free set of its own for each batch
    data = _split_maps(items, d_min, {"input": 1.0, "target": 1.0}, device, ids, run.free_fraction, seed, d_min,
                       sample_rate)  # fmt: skip
    from tqdm import tqdm

    bar = tqdm(total=1, unit="it", desc=f"  {config.method}, {len(items)} structures", leave=False,
               **runtime.bar_options())  # fmt: skip

    def tick(it: int, total: int) -> None:  # the iterations inside one batch (the outer bar counts batches)
        bar.total = total
        bar.update(it - bar.n)

    try:
        pred, check = phase_maps(config.method, data, network, dataclasses.replace(run, seed=seed), tick)
    finally:
        bar.close()
    atoms = [data.cell.to_fractional(it["xyz"][: it["n_atoms"]].double().numpy()) for it in items]
    return {
        "validation": check.rows(),
        "prediction": pred,
        "truth": data.truth,
        "cell": data.cell,
        "d_min": data.d_min,
        "inputs": data.patterson,
        "atoms_frac": atoms,
        "ids": list(ids),
    }
