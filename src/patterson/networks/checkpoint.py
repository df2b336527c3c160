"""Checkpoints and shipped weights: plain dicts of tensors and plain values, written atomically, read with
``weights_only=True`` (the one place that calls ``torch.load``); which shipped network ``pretrained`` means.

Layout of a checkpoint (``torch.save`` of a dict)::

    format          "patterson-checkpoint"      format_version  1
    package_version patterson.__version__       model_config    the network's config dict (arch + fields)
    train_config    TrainConfig.to_dict()       model           state_dict (unwrapped: no DDP/compile prefixes)
    optimizer       optimizer state_dict        scheduler       LambdaLR state_dict
    epoch           completed epochs            step            optimizer steps so far
    batch_in_epoch  micro-batches done in the current epoch (0 at epoch ends)
    epoch_loss      [sum of micro-batch losses, number of micro-batches] so far in the current epoch
    rng             {"torch", "numpy", "python", "cuda"} generator states
    sampler         {"seed", "epoch", "position"}: the data order to continue from
    normalisation   the dataset's per-map-type constants (or None)
    data            dataset info (sizes, shapes, source description)
    best            {"metric", "value", "epoch"}             metrics    the last validation metrics
"""

from __future__ import annotations

import logging
import math
import os
import pickle
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from patterson import runtime
from patterson.errors import PattersonError
from patterson.files import atomic_write
from patterson.models import config_from_dict

log = logging.getLogger(__name__)

FORMAT = "patterson-checkpoint"
FORMAT_VERSION = 1


def save_checkpoint(path: str | Path, state: Mapping[str, Any]) -> Path:
    """Write ``state`` to ``path`` atomically: a temporary file in the same folder, fsync, then rename.

    A run killed at any moment leaves either the old file or the new one, never a partial one.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, lambda tmp: torch.save(dict(state), tmp))
    return path


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Read a checkpoint with ``torch.load(weights_only=True)``; anything unreadable is a one-line PattersonError."""
    path = Path(path)
    if not path.is_file():
        raise PattersonError(f"{path}: no such checkpoint file")
    map_location = runtime.device(map_location)  # a missing GPU is said as such, not as an unreadable file
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            state = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError:
        unsafe = "not a patterson checkpoint; it holds code that may be unsafe, so it was not loaded"
        raise PattersonError(f"{path}: {unsafe}") from None
    except Exception as exc:  # torch's unpickler raises almost anything on foreign files (IndexError on a text file)
        text = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        reason = (text.strip().splitlines() or [type(exc).__name__])[0][:80]
        raise PattersonError(f"{path}: not a readable patterson checkpoint ({type(exc).__name__}: {reason})") from None
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise PattersonError(f"{path}: not a patterson checkpoint (no {FORMAT!r} marker)")
    if state.get("format_version", 0) > FORMAT_VERSION:
        raise PattersonError(f"{path}: checkpoint format {state['format_version']} is newer than this patterson")
    for key in ("model_config", "model"):
        if key not in state:
            raise PattersonError(f"{path}: checkpoint lacks {key!r}")
    return state


def with_defaults(config: Mapping[str, Any]) -> dict[str, Any]:
    """A saved model config with the fields it lacks at their defaults (as the network is rebuilt from it)."""
    try:
        return config_from_dict(config).to_dict()
    except PattersonError:  # an unknown architecture: compared as it is, and reported so
        return dict(config)


def normalised_config(config: Mapping[str, Any]) -> dict[str, Any]:
    return {k: tuple(v) if isinstance(v, list | tuple) else v for k, v in dict(config).items()}


def load_weights(module: torch.nn.Module, state_dict: Mapping[str, torch.Tensor], path: str | Path) -> None:
    """``module.load_state_dict(strict=True)`` with mismatches reported as a one-line PattersonError."""
    try:
        module.load_state_dict(state_dict, strict=True)
    except RuntimeError as exc:
        first = str(exc).strip().splitlines()[0][:160]
        raise PattersonError(f"{path}: checkpoint weights do not fit the model ({first})") from None


def task_of(state: Mapping[str, Any]) -> str:
    """What a checkpoint's network does: its training task (``density``: Patterson → density, the default of
    checkpoints older than the field; ``density-modification``: the learned step of the phasing loop)."""
    return str((state.get("train_config") or {}).get("task", "density"))


TASK_NAMES = {"density": "a Patterson → density network", "density-modification": "a density-modification network"}


def check_task(path: str | Path, state: Mapping[str, Any], task: str) -> None:
    """Raise a one-line PattersonError unless the checkpoint's network was trained for ``task``."""
    have = task_of(state)
    if have != task:
        raise PattersonError(
            f"{path}: {TASK_NAMES.get(have, repr(have))} (task {have!r}); this needs {TASK_NAMES.get(task, task)} "
            f"(task {task!r})"
        )


WEIGHTS_DIR = Path(__file__).resolve().parent.parent / "weights"  # shipped weights: src/patterson/weights/*.pt

SHIPPED_KEYS = ("model_config", "train_config", "normalisation", "data", "best", "metrics", "package_version")


def export_weights(
    checkpoint: str | Path,
    out: str | Path,
    history: list[Mapping[str, Any]] | None = None,
    notes: Mapping[str, Any] | None = None,
) -> Path:
    """Write a slim, shippable weights file from a training checkpoint.

    Keeps the network (float32), its configs, the normalisation and the training data's description (so that
    ``pretrained`` can match it to data); drops the optimizer, scheduler and RNG states. ``history`` (the run's
    metrics rows) and ``notes`` (free-form plain values: compute used, recipe) travel along for the model card.
    """
    state = load_checkpoint(checkpoint)
    slim: dict[str, Any] = {"format": FORMAT, "format_version": FORMAT_VERSION, "kind": "weights"}
    slim.update({k: state[k] for k in SHIPPED_KEYS if k in state})
    slim["model"] = {k: v.float() if v.is_floating_point() else v for k, v in state["model"].items()}
    slim["history"] = [dict(row) for row in history or []]
    slim["notes"] = dict(notes or {})
    return save_checkpoint(out, slim)


def trained_on(state: Mapping[str, Any]) -> dict[str, Any]:
    """The dataset config a checkpoint was trained on (``{}`` when it was not a stored dataset); how its inputs were
    recycled (a density-modification stage 2) or cropped (crystals of many cells) is left out: neither is a dataset
    field."""
    data = state.get("data") or {}
    info = dict((data.get("train") or {}).get("dataset") or {})
    info.pop("recycled", None)
    info.pop("crops", None)
    return info


def training_entries(state: Mapping[str, Any]) -> list[str] | None:
    """The source entries (PDB codes, file stems) of a checkpoint's training split, None where it does not list
    them (trained on random atoms, or before the list was kept)."""
    entries = ((state.get("data") or {}).get("train") or {}).get("entries")
    return None if entries is None else [str(e) for e in entries]


def _packed(config: Mapping[str, Any]) -> bool:
    return bool(config.get("pack_volume"))


def _mismatch(trained: Mapping[str, Any], data: Mapping[str, Any]) -> tuple[float, ...]:
    """How badly weights trained on ``trained`` fit ``data`` (both dataset-config-like dicts); lower is better:
    first the kind of input (Patterson maps or intensity grids), then the preset, the packing, d_min, the cell."""
    kind = 0.0 if trained.get("input", "patterson") == data.get("input", "patterson") else 1.0
    preset = _preset_mismatch(trained.get("preset"), data.get("preset"))
    packing = 0.0 if "pack_volume" not in data or _packed(trained) == _packed(data) else 1.0
    d_min = abs(math.log(float(trained.get("d_min", 1.0)) / float(data.get("d_min", trained.get("d_min", 1.0)))))
    return (kind, preset, packing, d_min, _log_ratio(trained.get("cell"), data.get("cell")))


def _preset_mismatch(trained: str | None, data: str | None) -> float:
    """0 for the same preset, 0.5 for a variant of it (``peptide-crystal`` and ``peptide-crystal-realistic``), else
    1."""
    if not data or not trained:
        return 1.0
    if trained == data:
        return 0.0
    return 0.5 if trained.startswith(f"{data}-") or data.startswith(f"{trained}-") else 1.0


def _log_ratio(a: Any, b: Any) -> float:
    """|log| of the ratio of the longest edges of two cells (a b c α β γ, or None: no preference)."""
    if not a or not b:
        return 0.0
    return abs(math.log(max(float(x) for x in a[:3]) / max(float(x) for x in b[:3])))


def _shipped(weights_dir: str | Path | None) -> list[Path]:
    """The shipped weights files (``WEIGHTS_DIR`` unless another folder is given), sorted."""
    folder = Path(weights_dir) if weights_dir is not None else WEIGHTS_DIR
    return sorted(folder.glob("*.pt")) if folder.is_dir() else []


def _shipped_for(weights_dir: str | Path | None, task: str) -> list[tuple[Path, dict[str, Any]]]:
    """The shipped files trained for ``task``, each with its state (every file read once)."""
    states = [(p, load_checkpoint(p)) for p in _shipped(weights_dir)]
    return [(p, state) for p, state in states if task_of(state) == task]


def _best_fit(candidates: list[tuple[Path, dict[str, Any]]], data: Mapping[str, Any]) -> Path | None:
    """The candidate whose training data fit ``data`` best (see :func:`pick_pretrained`); None when there is none."""
    scored = [(_mismatch(trained_on(state), data), p.name, p) for p, state in candidates]
    return min(scored)[2] if scored else None


def choose_pretrained(candidates: list[tuple[Path, dict[str, Any]]], data: Mapping[str, Any] | None) -> Path | None:
    """Which of the shipped ``candidates`` (path, state) ``pretrained`` means: the best fit to ``data`` (see
    :func:`pick_pretrained`); without ``data`` the only candidate; None when that leaves none."""
    if data:
        return _best_fit(candidates, data)
    return candidates[0][0] if len(candidates) == 1 else None


def pick_pretrained(
    data: Mapping[str, Any], weights_dir: str | Path | None = None, task: str = "density"
) -> Path | None:
    """The shipped ``task`` weights that fit ``data`` best: those for the same kind of input (Patterson maps or
    intensity grids), then the same preset (or a variant of it), else the same packing (``pack_volume`` set or
    not: a molecule alone in its cell or a packed crystal), then the nearest d_min, then the nearest cell size. None
    when nothing is shipped."""
    return _best_fit(_shipped_for(weights_dir, task), data)


def find_checkpoint(
    name: str = "pretrained",
    weights_dir: str | Path | None = None,
    data: Mapping[str, Any] | None = None,
    task: str = "density",
) -> Path | None:
    """Where the weights for ``name`` are: a file path, a shipped ``weights/NAME.pt``, or for ``pretrained`` the
    shipped ``task`` weights that suit ``data`` (a dataset config dict, or hints such as ``{"d_min": 2.0,
    "pack_volume": 35}``; see :func:`pick_pretrained`), else the only shipped file of that task. Returns None when
    ``pretrained`` finds no shipped weights; raises PattersonError for a NAME or PATH that does not exist."""
    if name == "pretrained":
        return choose_pretrained(_shipped_for(weights_dir, task), data)
    shipped = _shipped(weights_dir)
    path = Path(name)
    if path.suffix == ".pt" or os.sep in name or path.is_file():
        if not path.is_file():
            raise PattersonError(f"{name}: no such checkpoint file")
        return path
    match = [p for p in shipped if p.stem == name]
    if match:
        return match[0]
    known = ", ".join(p.stem for p in shipped) or "none shipped"
    raise PattersonError(f"no checkpoint named {name!r} (shipped: {known}); give a file path or 'pretrained'")
