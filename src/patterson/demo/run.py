"""The main job, ``patterson demo``: real chains → two test sets → every phasing method → one report folder.

:func:`run_demo` takes real X-ray protein chains from a structure source (the embedded default: MDAnalysisTests'
chains), makes a ``paper-2`` test set (one dipeptide in a mostly empty 12 Å cell, 1.5 Å), phased with the shipped
network alone (``model``), the hybrid (network density refined by HIO), charge flipping and HIO, and a
``peptide-crystal`` test set (short segments packed by a space group's symmetry, every cell its own, 1.0 Å),
phased crystal by crystal with dual-space direct methods, charge flipping and HIO with the same wall time each
(:mod:`patterson.demo.crystals`). Every map is scored as ``patterson evaluate`` does, next to the chance level
(random phases with the true amplitudes). It writes::

    OUT/report.md          what was done, the headline table, plots, data provenance, networks, timings, warnings
    OUT/results.json       every number (``"kind": "patterson-demo"`` marks the folder as a demo report)
    OUT/solved_fraction.png, phase_errors.png, sections.png     (when matplotlib is installed)
    OUT/maps/PRESET/ID/    truth.ccp4, patterson.ccp4 and each method's map moved onto the truth (origin, hand)
    OUT/data/PRESET/       the two test sets (patterson datasets: ``patterson evaluate --data`` reads them)

The folder is built in a temporary sibling and renamed into place at the end, so it appears whole or not at all.
An existing ``OUT`` must be empty or a previous demo report (which is then replaced). See docs/demo.md.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import logging
import os
import platform
import shutil
import time
from collections import Counter
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import torch

from patterson import __version__, runtime
from patterson.cells import Cell
from patterson.datasets import GenerateConfig, config_for_test_split, generate, make_examples, source_entries
from patterson.demo import crystals
from patterson.demo.report import LABELS, PLOTS, headline_table, report_markdown, write_plots
from patterson.errors import PattersonError
from patterson.evaluation.report import SOLVED_THRESHOLD_DEG
from patterson.files import check_writable_folder, plain, publish_folder, write_json, write_text
from patterson.maps import write_ccp4
from patterson.networks import Shipped, TrainedNetwork, open_network
from patterson.phasing import (
    MethodRun,
    NetworkStep,
    PhasingConfig,
    SplitMaps,
    compare_methods,
    split_maps,
)
from patterson.physics import grid_shape

log = logging.getLogger(__name__)

KIND = "patterson-demo"  # results.json marker: a folder holding it is a demo report, which a new run may replace
DEMO_PRESETS = ("paper-2", crystals.PRESET)
REPORT_FILES = ("report.md", "results.json", "maps", "data")  # a complete report holds at least these (plots aside)
NETWORK_METHODS = ("model", "hybrid")
ONE_CELL_METHODS = ("model", "hybrid", "learned", "charge-flip", "hio", "chance")  # on paper-2, in this order
MAP_METHODS = ("model", "hybrid", "learned", "dual-space", "charge-flip", "hio")  # maps written as CCP4 files
CHECKPOINT_OPTIONS = {"paper-2": "--paper2-checkpoint"}  # the test sets phased by a network of their own


@dataclass(frozen=True)
class DemoConfig:
    """What ``patterson demo`` does.

    Attributes
    ----------
    out : the report folder (must be empty, absent or a previous demo report, which is replaced).
    n : test structures of ``paper-2``.
    n_peptide : test crystals of ``peptide-crystal`` (few: each takes every method's budget).
    peptide_budget_s : wall seconds per crystal given to every method on ``peptide-crystal``.
    paper2_checkpoint : the network for ``paper-2``: ``pretrained`` (the shipped weights trained on that preset, if
        any), a shipped name, a checkpoint path, or None / ``none`` (no network).
    source : structure source of the test sets (``embedded``, or a folder of PDB/mmCIF files).
    phasing : iterations and random starts of the runs (None: each method's defaults; on ``peptide-crystal`` rounds
        of two starts, :func:`~patterson.phasing.compare.phase_within`) and the seed of the test sets, the random
        starts and the chance level's phases (:class:`~patterson.phasing.PhasingConfig`).
    n_maps : examples per preset whose maps are written as CCP4 files.
    plots : write PNG plots (skipped with a note when matplotlib is not installed).
    threads : torch CPU threads while phasing (None: unchanged; 1 is fastest for these small grids).
    progress : show progress bars.
    """

    out: str = "patterson-demo"
    n: int = 16
    n_peptide: int = 8
    peptide_budget_s: float = 4.0
    paper2_checkpoint: str | None = "pretrained"
    source: str = "embedded"
    phasing: PhasingConfig = PhasingConfig(seed=7)
    n_maps: int = 2
    plots: bool = True
    threads: int | None = 1
    progress: bool = True

    def __post_init__(self) -> None:
        value = self.paper2_checkpoint
        if value is not None and str(value).strip().lower() in ("", "none"):
            object.__setattr__(self, "paper2_checkpoint", None)
        checks = [
            (self.n >= 1, f"n must be at least 1 test structure per preset, got {self.n}"),
            (self.n_peptide >= 1, f"n_peptide must be at least 1 test crystal, got {self.n_peptide}"),
            (self.peptide_budget_s > 0, f"peptide_budget_s must be above 0 seconds, got {self.peptide_budget_s}"),
            (self.n_maps >= 0, f"n_maps must be 0 or more, got {self.n_maps}"),
            (self.threads is None or self.threads >= 1, f"threads must be at least 1, got {self.threads}"),
        ]
        for ok, message in checks:
            if not ok:
                raise PattersonError(message)

    def checkpoint(self, preset: str) -> str | None:
        """The network asked for on ``preset``'s test set (None for a test set phased without one)."""
        return {"paper-2": self.paper2_checkpoint}.get(preset)

    def test_set(self, preset: str) -> GenerateConfig:
        """The config of ``preset``'s test set: ``n`` (``paper-2``) or ``n_peptide`` crystals (``peptide-crystal``,
        :func:`~patterson.demo.crystals.peptide_config`) from ``source``, seed ``phasing.seed``."""
        if preset == crystals.PRESET:
            return crystals.peptide_config(self.source, self.n_peptide, self.phasing.seed)
        return config_for_test_split(preset, self.source, self.n, self.phasing.seed)


@dataclass(frozen=True)
class DemoResult:
    """What :func:`run_demo` made: the report folder, every number (results.json) and the headline table."""

    out: Path
    results: dict[str, Any]
    table: str


# --- the output folder -------------------------------------------------------------------------------------------


def is_demo_report(folder: str | Path) -> bool:
    """Whether ``folder`` holds a report of ``patterson demo`` (its results.json says ``"kind": "patterson-demo"``)."""
    try:
        return json.loads((Path(folder) / "results.json").read_text()).get("kind") == KIND
    except (OSError, ValueError, AttributeError):
        return False


def check_out(out: Path) -> bool:
    """Raise PattersonError unless ``out`` can take a demo report; True when it holds one already (to replace)."""
    check_writable_folder(out)
    if not out.exists():
        return False
    if not out.is_dir():
        raise PattersonError(f"{out}: exists and is not a folder")
    here = Path.cwd().resolve()
    if out.resolve() == here or out.resolve() in here.parents:
        raise PattersonError(f"{out}: holds the current folder; choose another --out")
    if not any(out.iterdir()):
        return False
    if is_demo_report(out):
        return True
    raise PattersonError(f"{out}: not empty and not a patterson demo report; choose another --out")


# --- one test set ------------------------------------------------------------------------------------------------


def _held_out(trained: list[str] | None, train_source: str | None, entries: list[str]) -> dict[str, Any]:
    """Whether the test entries are absent from the network's training entries (``trained``, as the checkpoint
    lists them), else from every entry of its training source (checked where that source can be read)."""
    if trained is not None:
        overlap = sorted(set(entries) & set(trained))
        return {"checked": True, "overlap": overlap, "note": f"{len(trained)} training entries in the checkpoint"}
    if not train_source:
        return {"checked": False, "note": "the checkpoint names neither its training entries nor its source"}
    if train_source != "embedded":
        found = _find_source(train_source)
        if found is None:
            return {"checked": False, "note": f"its training source {train_source} is not found here"}
        train_source = str(found)
    trained_source = source_entries(train_source)
    overlap = sorted(set(entries) & trained_source)
    return {"checked": True, "overlap": overlap, "note": f"training source {train_source}"}


def _find_source(source: str) -> Path | None:
    """A training source folder as a checkpoint names it: absolute, or relative to the working folder or to the
    checkout the package runs from (where ``../shared`` recipes were run)."""
    path = Path(source)
    bases = [Path.cwd(), Path(__file__).resolve().parents[3]] if not path.is_absolute() else [Path("/")]
    return next((b / path for b in bases if (b / path).is_dir()), None)


def resolve_network(
    preset: str, name: str | None, data: GenerateConfig, warnings: list[str], shipped: Shipped | None = None
) -> TrainedNetwork | None:
    """The network for a test set made with ``data``, or None with a warning saying why.

    ``pretrained`` takes the shipped weights that fit ``data`` best (:func:`~patterson.networks.open_network`)
    and uses them only if they were trained on this preset; a name or path is used as given (with a warning when it
    was trained on another preset). Raises PattersonError for a missing checkpoint or one made for another grid.
    """
    option = CHECKPOINT_OPTIONS[preset]
    if name is None:
        warnings.append(f"{preset}: no network asked for ({option} none): the model and hybrid rows are skipped.")
        return None
    network = open_network(name, dataclasses.asdict(data), shipped=shipped)
    if network is None:
        warnings.append(
            f"{preset}: no pretrained network is shipped with patterson {__version__}: the model and hybrid rows "
            f"are skipped (give a checkpoint with {option} PATH)."
        )
        return None
    trained = network.trained_on.get("preset")
    own = trained == preset or (not trained and network.name == preset)
    if name == "pretrained" and not own:
        warnings.append(
            f"{preset}: no shipped network was trained on {preset} data (the closest, {network.path.name}, was "
            f"trained on {trained or 'unknown'} data): the model and hybrid rows are skipped."
        )
        return None
    shape = grid_shape(Cell.of(data.cell), data.d_min, data.sample_rate)
    if network.train_shape != tuple(shape):
        message = (
            f"{network.path}: the network was trained on {'×'.join(map(str, network.train_shape))} maps, the "
            f"{preset} test maps are {'×'.join(map(str, shape))}"
        )
        if name == "pretrained":
            warnings.append(f"{preset}: {message}: the model and hybrid rows are skipped.")
            return None
        raise PattersonError(message)
    if not own:
        warnings.append(f"{preset}: {network.path.name} was trained on {trained or 'unknown'} data, not {preset}.")
    return network


def _learned_network(preset: str, data: GenerateConfig, shipped: Shipped) -> TrainedNetwork | None:
    """The shipped density-modification network for the learned loop on ``preset``'s test set, or None (the row is
    skipped; results.json lists it under ``skipped``) when none was trained on that preset."""
    network = shipped.pick(dataclasses.asdict(data), task="density-modification")
    if network is None or network.trained_on.get("preset") != preset:
        log.info("%s: no shipped density-modification network was trained on %s: no learned row", preset, preset)
        return None
    return network


def _network_info(preset: str, network: TrainedNetwork, entries: list[str], warnings: list[str]) -> dict[str, Any]:
    """What results.json says of a network used on ``preset``'s test set: its description and whether the test
    ``entries`` were held out from its training (a warning when that cannot be checked, or when they were not)."""
    info = network.describe()
    info["held_out"] = _held_out(network.entries, info["trained_on"].get("source"), entries)
    if not info["held_out"]["checked"]:  # said, not silently skipped
        warnings.append(f"{preset}: the held-out check of {network.path.name} could not run: "
                        f"{info['held_out']['note']}")  # fmt: skip
    overlap = info["held_out"].get("overlap")
    if overlap:
        warnings.append(
            f"{preset}: {len(overlap)} of the {len(entries)} test entries are in {network.path.name}'s training "
            f"source ({', '.join(overlap[:6])}{', ...' if len(overlap) > 6 else ''}): not a held-out test."
        )
    return info


def _write_maps(folder: Path, data: SplitMaps, runs: dict[str, MethodRun], n_maps: int) -> list[dict]:
    """CCP4 maps of the first ``n_maps`` examples: the truth, the Patterson and each method's aligned map."""
    written = []
    for i in range(min(n_maps, len(data))):
        ident = data.ids[i]
        sub = folder / ident
        sub.mkdir(parents=True, exist_ok=True)
        files = {"truth": "truth.ccp4", "patterson": "patterson.ccp4"}
        write_ccp4(sub / "truth.ccp4", data.truth[i].cpu().numpy(), data.cell)
        write_ccp4(sub / "patterson.ccp4", data.patterson[i].cpu().numpy(), data.cell)
        errors = {}
        for method in MAP_METHODS:
            if method in runs:
                write_ccp4(sub / f"{method}.ccp4", runs[method].aligned[i].cpu().numpy(), data.cell)
                files[method] = f"{method}.ccp4"
                errors[method] = float(runs[method].scores.phase_error_weighted_deg[i])
        folder_name = sub.relative_to(folder.parent.parent).as_posix()  # maps/PRESET/ID, relative to the report
        written.append({"id": ident, "folder": folder_name, "files": files, "phase_error_weighted_deg": errors})
    return written


def _central_sections(data: SplitMaps, runs: dict[str, MethodRun], i: int = 0) -> dict[str, np.ndarray | None]:
    """Central z-sections of example ``i``: truth, Patterson (origin at the centre) and the aligned maps."""
    section = lambda rho: rho[:, :, rho.shape[2] // 2].cpu().numpy()  # noqa: E731
    panels = {"truth": section(data.truth[i]), "Patterson": section(torch.fft.fftshift(data.patterson[i]))}
    for method in MAP_METHODS:
        panels[LABELS[method]] = section(runs[method].aligned[i]) if method in runs else None
    return panels


def _run_preset(
    preset: str,
    config: DemoConfig,
    folder: Path,
    network: TrainedNetwork | None,
    learner: TrainedNetwork | None,
    warnings: list[str],
) -> tuple[dict, dict]:
    """Make, phase, score and map one test set of one cell (``paper-2``) with the network ``network`` and the
    learned loop's ``learner``; returns its results and the panels of its first example."""
    t0 = time.perf_counter()
    data_dir = folder / "data" / preset
    log.info("%s: making %d test structures from %s", preset, config.n, config.source)
    test = config.test_set(preset)
    generate(test, data_dir, progress=config.progress)  # the test set as a patterson dataset, part of the report
    items = make_examples(test)  # the same examples, in memory: nothing written is read back
    data = split_maps(items, test.d_min)
    labels = [it["label"] for it in items]
    counts = Counter(frag.split("/")[0] for label in labels for frag in label.split(";"))  # dipeptides per entry
    entries = sorted(counts)
    t1 = time.perf_counter()
    skip = (() if network else NETWORK_METHODS) + (() if learner else ("learned",))
    methods = tuple(m for m in ONE_CELL_METHODS if m not in skip)
    info = None
    if network is not None:
        if network.norm is None:
            network = network.with_norm({k: max(float(it[k].abs().max()) for it in items) for k in ("input", "target")})
            warnings.append(f"{preset}: {network.path.name} holds no normalisation constants; the test set's are used.")
        info = _network_info(preset, network, entries, warnings)
    log.info("%s: phasing %d structures with %s", preset, len(data), ", ".join(methods))
    runs = compare_methods(
        data,
        methods,
        network=network,
        phasing=config.phasing,
        progress=config.progress,
        desc=f"{preset} ",
        step=None if learner is None else NetworkStep(learner.model),
    )
    t2 = time.perf_counter()
    maps = _write_maps(folder / "maps" / preset, data, runs, config.n_maps)
    t3 = time.perf_counter()
    result = {
        "preset": preset,
        "n": len(data),
        "dataset": json.loads(test.to_json()),
        "grid": list(data.shape),
        "d_min": data.d_min,
        "n_reflections": len(data.hkl),
        "data_folder": f"data/{preset}",
        "entries": dict(sorted(counts.items())),
        "examples": [{"id": i, "label": lab} for i, lab in zip(data.ids, labels, strict=True)],
        "network": info,
        "methods": {
            m: run.summary()
            | {
                "per_structure": {
                    "phase_error_weighted_deg": run.scores.phase_error_weighted_deg,
                    "cc_aligned": run.scores.cc_aligned,
                }
                | ({} if run.validation is None else run.validation.rows())
            }
            for m, run in runs.items()
        },
        "skipped": [m for m in ONE_CELL_METHODS if m not in runs],
        "maps": maps,
        "seconds": {"data": t1 - t0, "phasing_and_scoring": t2 - t1, "maps": t3 - t2},
    }
    return result, _central_sections(data, runs)


def _run_peptides(
    config: DemoConfig, folder: Path, learner: TrainedNetwork | None, warnings: list[str]
) -> tuple[dict, dict]:
    """Make, phase, score and map the peptide-crystal test set (:func:`~patterson.demo.crystals.run_crystals`, each
    crystal alone with ``config.peptide_budget_s`` seconds per method; the learned loop and its control with
    ``learner`` only); returns its results and the panels of its first crystal."""
    preset = crystals.PRESET
    step = None if learner is None else NetworkStep(learner.model)
    result, done = crystals.run_crystals(config.test_set(preset), folder / "data" / preset, config.peptide_budget_s,
                                         step, config.phasing.n_iter, config.progress)  # fmt: skip
    t = time.perf_counter()
    maps = [_write_maps(folder / "maps" / preset, data, runs, 1)[0] for data, runs in done[: config.n_maps]]
    result["maps"] = maps
    result["network"] = None if learner is None else _network_info(preset, learner, list(result["entries"]), warnings)
    result["seconds"]["maps"] = time.perf_counter() - t
    return result, _central_sections(*done[0])


def _command(config: DemoConfig) -> str:
    """The ``patterson demo`` command line that repeats a run."""
    default = DemoConfig()
    parts = ["patterson demo", f"--out {config.out}"]
    options = {
        "n": "--n",
        "n_peptide": "--n-peptide",
        "peptide_budget_s": "--peptide-budget",
        "paper2_checkpoint": "--paper2-checkpoint",
        "source": "--source",
        "phasing.seed": "--seed",
        "phasing.n_iter": "--n-iter",
        "n_maps": "--n-maps",
    }
    for name, flag in options.items():
        value, was = config, default
        for part in name.split("."):
            value, was = getattr(value, part), getattr(was, part)
        if value != was:
            parts.append(f"{flag} {'none' if value is None else value}")
    return " ".join(parts)


# --- the job -----------------------------------------------------------------------------------------------------


def _plots_wanted(config: DemoConfig, warnings: list[str]) -> tuple[dict[str, str], str]:
    """The plots to write ({title: file name}) and a note when there are none (a warning without matplotlib)."""
    if not config.plots:
        return {}, "Plots were not asked for."
    if importlib.util.find_spec("matplotlib") is None:
        note = "No plots: matplotlib is not installed (pip install matplotlib)."
        warnings.append(note)
        return {}, note
    return dict(PLOTS), ""


def _results(config: DemoConfig, presets: dict[str, dict], warnings: list[str]) -> dict[str, Any]:
    """results.json of a run (its plots and timings filled in by :func:`run_demo`)."""
    plots, plots_note = _plots_wanted(config, warnings)
    results = {
        "kind": KIND,
        "version": __version__,
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "command": _command(config),
        "config": dataclasses.asdict(config),
        "source": config.source,
        "solved_threshold_deg": SOLVED_THRESHOLD_DEG,
        "presets": presets,
        "warnings": warnings,
        "plots": plots,
        "plots_note": plots_note,
        "environment": {
            "platform": platform.platform(),
            "python": platform.python_version(),
            "torch": torch.__version__,
            "torch_threads": config.threads or torch.get_num_threads(),
            "cpu_count": os.cpu_count(),
        },
        "seconds": {"plots": 0.0, "total": 0.0},
    }
    return plain(results, finite=True)


def run_demo(config: DemoConfig) -> DemoResult:
    """Run the demo and write its report folder ``config.out`` (whole, or nothing on failure); see the module doc."""
    t0 = time.perf_counter()
    out = Path(config.out)
    replacing = check_out(out)
    warnings: list[str] = []
    shipped = Shipped()  # every shipped file read once
    tests = {p: config.test_set(p) for p in DEMO_PRESETS}
    networks = {p: resolve_network(p, config.checkpoint(p), tests[p], warnings, shipped) for p in CHECKPOINT_OPTIONS}
    learners = {p: _learned_network(p, tests[p], shipped) for p in DEMO_PRESETS}  # a bad one fails before any work
    created = next((p for p in [*reversed(out.parents)] if not p.exists()), None)  # the first folder we create
    out.parent.mkdir(parents=True, exist_ok=True)
    try:
        with publish_folder(out, may_replace=is_demo_report) as tmp:  # all or nothing; a killed run's leftovers go
            presets: dict[str, dict] = {}
            sections: list[tuple[str, dict]] = []
            with runtime.torch_threads(config.threads):
                for k, preset in enumerate(DEMO_PRESETS, 1):
                    log.info("[%d/%d] %s", k, len(DEMO_PRESETS), preset)
                    if preset == crystals.PRESET:
                        presets[preset], panels = _run_peptides(config, tmp, learners[preset], warnings)
                    else:
                        presets[preset], panels = _run_preset(preset, config, tmp, networks[preset],
                                                              learners[preset], warnings)  # fmt: skip
                    sections.append((f"{preset} {presets[preset]['examples'][0]['id']}", panels))
            t_plots = time.perf_counter()
            results = _results(config, presets, warnings)
            if results["plots"]:
                log.info("plots")
                write_plots(tmp, results, sections)
            results["seconds"] = {"plots": time.perf_counter() - t_plots, "total": time.perf_counter() - t0}
            for w in warnings:
                log.warning("%s", w)
            write_json(tmp / "results.json", results)
            write_text(tmp / "report.md", report_markdown(results))
    except BaseException:
        if created is not None and not out.exists():
            shutil.rmtree(created, ignore_errors=True)
        raise
    log.info("%s %s in %.0f s", "replaced" if replacing else "wrote", out, results["seconds"]["total"])
    return DemoResult(out, results, headline_table(results))
