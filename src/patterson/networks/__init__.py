"""Networks: trained networks read from checkpoints and applied, the shipped ones and the choice among them.

This stage sits below phasing, solving and the demo, which apply networks; the trainer (``patterson.training``, a
side wing used by the CLI, recipes and benchmarks) writes the checkpoints that this stage reads.

Typical use::

    network = open_network("pretrained", data={"preset": "paper-2"})   # a name, a path or "pretrained"
    rho = network.density(patterson_maps)                               # (B, X, Y, Z)
"""

from patterson.networks.checkpoint import (
    FORMAT,
    FORMAT_VERSION,
    WEIGHTS_DIR,
    choose_pretrained,
    export_weights,
    find_checkpoint,
    load_checkpoint,
    load_weights,
    pick_pretrained,
    save_checkpoint,
    task_of,
    trained_on,
    training_entries,
    with_defaults,
)
from patterson.networks.network import Shipped, TrainedNetwork, load_model, open_network, shipped_networks

__all__ = [
    "FORMAT",
    "FORMAT_VERSION",
    "WEIGHTS_DIR",
    "Shipped",
    "TrainedNetwork",
    "choose_pretrained",
    "export_weights",
    "find_checkpoint",
    "load_checkpoint",
    "load_model",
    "load_weights",
    "open_network",
    "pick_pretrained",
    "save_checkpoint",
    "shipped_networks",
    "task_of",
    "trained_on",
    "training_entries",
    "with_defaults",
]
