"""Training: the paper's recipe and more, from one process on a laptop CPU to many GPUs under ``torchrun``.

Typical use::

    config = load_config("cfg.toml", ["epochs=3", "model.c1=8"], model="paper-se", data="random:n=256")
    result = train(config, out="runs/se")          # RUN/checkpoints/{last,best,epoch-NNN}.pt, RUN/metrics.*
    train(config.replace(epochs=5), "runs/se", resume=True)
    model = patterson.networks.load_model("runs/se/checkpoints/best.pt")   # the network stage reads checkpoints

A side wing: the CLI, recipes and benchmarks use it; phasing, solving and the demo never do.
"""

from patterson.training.checkpoint import capture_rng, restore_rng
from patterson.training.config import TrainConfig, apply_overrides, load_config
from patterson.training.data import (
    MapPairs,
    RandomAtomMaps,
    RandomAtomSpec,
    open_data,
    random_atom_splits,
    split_item,
)
from patterson.training.distributed import DistEnv, setup_distributed, teardown_distributed
from patterson.training.loop import Trainer, TrainResult, seed_everything, train
from patterson.training.lr_find import LRFindResult, lr_find, plot_lr_find, run_lr_find
from patterson.training.metrics import MetricsLog, plot_metrics, read_metrics
from patterson.training.optim import build_loss, build_optimizer, build_scheduler, lr_factor

__all__ = [
    "DistEnv",
    "LRFindResult",
    "MapPairs",
    "MetricsLog",
    "RandomAtomMaps",
    "RandomAtomSpec",
    "TrainConfig",
    "TrainResult",
    "Trainer",
    "apply_overrides",
    "build_loss",
    "build_optimizer",
    "build_scheduler",
    "capture_rng",
    "load_config",
    "lr_factor",
    "lr_find",
    "open_data",
    "plot_lr_find",
    "plot_metrics",
    "random_atom_splits",
    "read_metrics",
    "restore_rng",
    "run_lr_find",
    "seed_everything",
    "setup_distributed",
    "split_item",
    "teardown_distributed",
    "train",
]
