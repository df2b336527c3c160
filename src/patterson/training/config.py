"""The training recipe as one frozen dataclass, built in the one order of :mod:`patterson.config`."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from patterson.config import apply_changes, check_keys, layers, parse_sets
from patterson.errors import PattersonError
from patterson.models import MODEL_CONFIGS, ModelConfig, model_config

OPTIMIZERS = ("adamw", "adam")
SCHEDULES = ("paper", "onecycle", "constant")
LOSSES = ("paper", "invariant")
DEVICES = ("auto", "cpu", "cuda")
TASKS = ("density", "density-modification")  # Patterson → density; density with wrong phases → density
BEST_METRICS = ("val_loss", "val_cc_mean", "val_cc_median", "val_cc_aligned_mean", "val_cc_aligned_median")


@dataclass(frozen=True)
class TrainConfig:
    """Everything that defines a training run (the data and the output folder aside from ``data``).

    Defaults follow the paper's public code: AdamW, lr 1.2e-4, weight decay 3e-2, loss 0.999 MSE + 0.001 (1 - CC),
    exponential decay x0.873 per epoch for 10 epochs then x0.9991 per epoch, gradient accumulation 4, clipping 1.0.

    Attributes
    ----------
    model : str
        A preset name of :data:`patterson.models.MODEL_CONFIGS`.
    model_options : dict
        Fields of the preset's config to change (``--set model.c1=8``).
    data : str
        Dataset folder or data spec (see :func:`patterson.training.open_data`); recorded in checkpoints.
    task : str
        ``density`` (a Patterson map → the density: the paper's task) or ``density-modification`` (a density with
        partly wrong phases → the true density: the learned step of the phasing loop, trained on pairs made on the
        fly from a stored dataset's atoms, see :class:`patterson.datasets.PhaseErrorMaps`). Stored in checkpoints,
        so that every command can tell the two kinds of network apart.
    recycle_from : str
        For ``density-modification``: a checkpoint (path or shipped name) of an earlier density-modification
        network whose own loop iterates become half of the training inputs (recycling; "" for none).
    on_the_fly : bool
        Remake the training maps from the stored atoms each time, with augmentation (random rotation and B).
    permute_axes : bool
        Each training batch with its grid axes in a random order (the same for input and target): 6× the data for
        fractional grids (the report's intensity grids) and cubic cells; needs a cubic grid.
    epochs : int
        Total number of epochs (on resume: the epoch to stop after).
    batch_size : int
        Maps per micro-batch summed over all processes (each of N processes gets ``batch_size / N``).
    grad_accum : int
        Micro-batches per optimizer step; the effective batch is ``batch_size * grad_accum``.
    optimizer : str
        ``adamw`` or ``adam``.
    lr, weight_decay : float
        Peak learning rate and (decoupled for AdamW) weight decay.
    betas : tuple of float
        Adam betas.
    schedule : str
        ``paper`` (per epoch: x``decay_fast`` for ``decay_fast_epochs`` epochs, then x``decay_slow``),
        ``onecycle`` (per step: linear warm-up over ``warmup_fraction`` of all steps from lr/``onecycle_div`` to lr,
        then cosine to lr/(``onecycle_div`` * ``onecycle_final_div``)) or ``constant``.
    clip : float
        Gradient-norm clipping threshold; 0 turns clipping off.
    loss : str
        ``paper`` (MSE + w (1 - CC)) or ``invariant`` (the same after the best origin shift and hand).
    loss_weight : float
        The weight w of the correlation term.
    seed : int
        Seeds model initialisation and data order; same seed, same run.
    num_workers : int
        DataLoader worker processes per training process.
    device : str
        ``auto`` (CUDA when available), ``cpu`` or ``cuda``.
    amp : bool
        bf16 autocast (CUDA only; ignored on CPU).
    channels_last : bool
        channels-last-3d memory format (CUDA only).
    compile : bool
        Wrap the model in ``torch.compile``.
    sync_batchnorm : bool
        Under DDP on CUDA, turn BatchNorm into SyncBatchNorm (PyTorch has no CPU SyncBatchNorm).
    val_batch_size : int
        Maps per validation batch (0: ``batch_size``).
    max_batches : int
        Stop each epoch after this many micro-batches (0: the whole training set); for quick runs and benchmarks.
    checkpoint_every : int
        Also checkpoint ``last.pt`` every this many optimizer steps inside an epoch (0: only at epoch ends).
    keep_checkpoints : int
        Keep only the newest this many ``epoch-NNN.pt`` files (0: keep all).
    best_metric : str
        Validation metric that picks ``best.pt`` (losses: lowest wins; CCs: highest wins).
    progress : bool
        Show a tqdm progress bar (rank 0 only).
    deterministic : bool
        ``torch.use_deterministic_algorithms(True)`` (needed for bit-for-bit resume on some GPU kernels).
    init_from : str
        Start from this checkpoint's weights (a path or a shipped model's name; same architecture) instead of a
        random initialisation: fine-tuning, or a later session improving the same weights. "" for none. A
        one-pass ``fourier-net`` also starts the same network with ``recycle`` (its recycled channel at zero).
    """

    model: str = "patterson-unet"
    model_options: dict[str, Any] = field(default_factory=dict)
    data: str = ""
    task: str = "density"
    recycle_from: str = ""
    on_the_fly: bool = False
    permute_axes: bool = False
    epochs: int = 10
    batch_size: int = 8
    grad_accum: int = 4
    optimizer: str = "adamw"
    lr: float = 1.2e-4
    weight_decay: float = 3e-2
    betas: tuple[float, float] = (0.9, 0.999)
    schedule: str = "paper"
    decay_fast: float = 0.873
    decay_fast_epochs: int = 10
    decay_slow: float = 0.9991
    warmup_fraction: float = 0.3
    onecycle_div: float = 25.0
    onecycle_final_div: float = 1e4
    clip: float = 1.0
    loss: str = "paper"
    loss_weight: float = 0.001
    seed: int = 0
    num_workers: int = 0
    device: str = "auto"
    amp: bool = True
    channels_last: bool = True
    compile: bool = False
    sync_batchnorm: bool = True
    val_batch_size: int = 0
    max_batches: int = 0
    checkpoint_every: int = 0
    keep_checkpoints: int = 0
    best_metric: str = "val_loss"
    progress: bool = True
    deterministic: bool = False
    init_from: str = ""

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            object.__setattr__(self, f.name, _convert(f.name, getattr(self, f.name), _FIELD_TYPES[f.name]))
        _check_positive(self, ("epochs", "batch_size", "grad_accum"), low=1)
        _check_positive(self, ("num_workers", "val_batch_size", "max_batches", "checkpoint_every"), low=0)
        _check_positive(self, ("keep_checkpoints", "decay_fast_epochs", "seed"), low=0)
        for name, choices in (
            ("optimizer", OPTIMIZERS),
            ("schedule", SCHEDULES),
            ("loss", LOSSES),
            ("device", DEVICES),
            ("task", TASKS),
            ("best_metric", BEST_METRICS),
        ):
            if getattr(self, name) not in choices:
                raise PattersonError(f"{name} must be one of {', '.join(choices)}, got {getattr(self, name)!r}")
        if not (self.lr > 0 and math.isfinite(self.lr)):
            raise PattersonError(f"lr must be a positive number, got {self.lr}")
        if not self.weight_decay >= 0 or not self.clip >= 0:
            raise PattersonError("weight_decay and clip must be >= 0")
        if not 0.0 <= self.loss_weight <= 1.0:
            raise PattersonError(f"loss_weight must be in [0, 1], got {self.loss_weight}")
        if not 0.0 < self.warmup_fraction < 1.0:
            raise PattersonError(f"warmup_fraction must be in (0, 1), got {self.warmup_fraction}")
        for name in ("decay_fast", "decay_slow"):
            if not 0.0 < getattr(self, name) <= 1.0:
                raise PattersonError(f"{name} must be in (0, 1], got {getattr(self, name)}")
        if len(self.betas) != 2 or not all(0.0 <= b < 1.0 for b in self.betas):
            raise PattersonError(f"betas must be two numbers in [0, 1), got {self.betas}")
        self.model_config()  # unknown model name or model option -> PattersonError now, not after data loading

    def model_config(self) -> ModelConfig:
        """The network's config: the preset ``model`` with ``model_options`` applied."""
        return model_config(self.model, **self.model_options)

    def to_dict(self) -> dict[str, Any]:
        """Plain dict of the fields (tuples kept), fit for JSON, TOML-like files and ``torch.load(weights_only)``."""
        out = dataclasses.asdict(self)
        out["model_options"] = {k: _plain(v) for k, v in self.model_options.items()}
        return out

    def replace(self, **changes: Any) -> TrainConfig:
        """A copy with some fields changed (validated again)."""
        check_keys(TrainConfig, changes, WHAT)
        return dataclasses.replace(self, **changes)


_FIELD_TYPES: dict[str, str] = {f.name: str(f.type) for f in dataclasses.fields(TrainConfig)}
WHAT = "training config"  # how errors name a TrainConfig
MODEL_NAME = {"model": "model.name"}  # --set model=NAME names the [model] table's preset


def _check_positive(cfg: TrainConfig, names: tuple[str, ...], low: int) -> None:
    for name in names:
        if getattr(cfg, name) < low:
            raise PattersonError(f"{name} must be an integer >= {low}, got {getattr(cfg, name)}")


def _plain(value: Any) -> Any:
    if isinstance(value, list | tuple):
        return tuple(_plain(v) for v in value)
    return value


_TRUE = ("1", "true", "yes", "on")
_FALSE = ("0", "false", "no", "off")


def _convert(name: str, value: Any, kind: str) -> Any:
    """Coerce a TOML value or a command-line string to the type of field ``name``."""
    try:
        if kind == "bool":
            if isinstance(value, str) and value.strip().lower() in _TRUE + _FALSE:
                return value.strip().lower() in _TRUE
            if isinstance(value, bool) or value in (0, 1):
                return bool(value)
            raise ValueError
        if kind == "int":
            if isinstance(value, bool):
                raise ValueError
            if isinstance(value, float):
                if not value.is_integer():
                    raise ValueError
                return int(value)
            return int(value)
        if kind == "float":
            if isinstance(value, bool):
                raise ValueError
            return float(value)
        if kind == "str":
            if not isinstance(value, str):
                raise ValueError
            return value
        if kind.startswith("tuple"):
            items = value.replace("(", "").replace(")", "").split(",") if isinstance(value, str) else list(value)
            return tuple(float(v) for v in items if str(v).strip())
        if kind.startswith("dict"):
            if not isinstance(value, Mapping):
                raise ValueError
            return {str(k): _plain(v) for k, v in value.items()}
    except (TypeError, ValueError):
        pass
    else:
        return value
    raise PattersonError(f"training config key {name!r} needs a {kind} value, got {value!r}")


def apply_overrides(config: TrainConfig, assignments: Iterable[str]) -> TrainConfig:
    """``config`` with ``--set`` items applied (``epochs=3``, ``model.c1=8``, ``model=paper-se``), as the top layer
    of :func:`load_config`; an unknown key, a malformed item or a bad value raises a one-line PattersonError."""
    return stack_layers(config, [parse_sets(assignments, MODEL_NAME)])


def stack_layers(base: TrainConfig, stack: Iterable[Mapping[str, Any]]) -> TrainConfig:
    """``base`` with the layers applied, lowest first (see :mod:`patterson.config`).

    A layer's ``model`` may be a table: ``name`` and fields of that preset's config (TOML ``[model]``, ``--set
    model.c1=8``); they join ``model_options``. A layer that names another model drops the lower layers' options (a
    new preset starts from its own defaults; the layer's own options still apply).
    """
    changes: dict[str, Any] = {}
    model, options = base.model, dict(base.model_options)
    for layer in stack:
        layer = dict(layer)
        given = dict(layer.pop("model_options")) if isinstance(layer.get("model_options"), Mapping) else {}
        name = layer.pop("model", None)
        if isinstance(name, Mapping):
            given.update(name)
            name = given.pop("name", None)
        if name is not None and name != model:
            model, options = name, {}
        options.update(given)
        changes.update(layer)
    return apply_changes(base, {"model": model, "model_options": options, **changes}, WHAT)  # a bad table stays


def load_config(path: str | Path | None = None, overrides: Iterable[str] = (), **fields: Any) -> TrainConfig:
    """The config of ``patterson train``, in the order of :mod:`patterson.config`: the defaults, a TOML file, the
    keyword ``fields`` (``model=``, ``data=``; None: not given), then the ``key=value`` ``overrides`` (``--set``).

    Parameters
    ----------
    path : str or Path, optional
        A TOML file with TrainConfig keys at the top level (and optionally a ``[model]`` table).
    overrides : iterable of str
        ``--set`` items, applied last; ``model.FIELD=value`` changes the network's config.
    **fields
        TrainConfig fields given directly.

    Returns
    -------
    TrainConfig
    """
    return stack_layers(TrainConfig(), layers(path, fields, overrides, MODEL_NAME))


def known_models() -> tuple[str, ...]:
    """The model preset names a config may name."""
    return tuple(MODEL_CONFIGS)
