"""One trained network, read once and applied one way: :class:`TrainedNetwork`.

Every command that applies a network (``solve``, ``evaluate``, ``demo``, the hybrid and the learned loop) opens it
with :func:`open_network` (a name, a path or ``pretrained``) or :func:`shipped_networks` (every shipped one of a
task), each of which reads a checkpoint file once, and applies it with :meth:`TrainedNetwork.density` or as a
real-space step through :attr:`TrainedNetwork.model`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from patterson import runtime
from patterson.cells import Cell
from patterson.errors import PattersonError
from patterson.models import PattersonModel, count_parameters, model_from_config
from patterson.networks.checkpoint import (
    _shipped,
    check_task,
    choose_pretrained,
    find_checkpoint,
    load_checkpoint,
    load_weights,
    task_of,
    trained_on,
    training_entries,
)

DEFAULT_SHAPE = (24, 24, 24)  # the grid of checkpoints that do not record theirs


@dataclass(frozen=True)
class TrainedNetwork:
    """A trained network with everything needed to apply it: the model (eval mode, on its device), its
    normalisation constants and what it was trained on.

    ``norm`` is ``{"input": …, "target": …}``: training inputs were Patterson maps divided by ``input`` and targets
    densities divided by ``target`` (the training set's largest |value| of each); None when the checkpoint has
    none (give the data's own with :meth:`with_norm`). ``state`` is the checkpoint without its weights.
    """

    path: Path
    model: PattersonModel
    norm: dict[str, float] | None
    state: dict[str, Any]

    @classmethod
    def from_state(
        cls, path: str | Path, state: Mapping[str, Any], device: str | torch.device = "cpu", task: str | None = None
    ) -> TrainedNetwork:
        """Build the network of a checkpoint already read (:func:`load_checkpoint`); with ``task``, a network
        trained for another task is a one-line PattersonError."""
        if task is not None:
            check_task(path, state, task)
        try:
            model = model_from_config(state["model_config"])
        except (TypeError, ValueError) as exc:
            raise PattersonError(f"{path}: checkpoint has an unusable model config ({exc})") from None
        load_weights(model, state["model"], path)
        norm = state.get("normalisation")
        norm = {"input": float(norm["input"]), "target": float(norm["target"])} if norm else None
        meta = {k: v for k, v in state.items() if k not in ("model", "optimizer", "scheduler", "rng")}
        return cls(Path(path), model.to(runtime.device(device)).eval(), norm, meta)

    @classmethod
    def load(cls, path: str | Path, device: str | torch.device = "cpu", task: str | None = None) -> TrainedNetwork:
        """Read a checkpoint file (once) and build its network."""
        return cls.from_state(path, load_checkpoint(path, map_location="cpu"), device, task)

    # --- what it is ------------------------------------------------------------------------------------------

    @property
    def name(self) -> str:
        return self.path.stem

    @property
    def task(self) -> str:
        return task_of(self.state)

    @property
    def trained_on(self) -> dict[str, Any]:
        """The dataset config it was trained on (``{}`` when it was not a stored dataset)."""
        return trained_on(self.state)

    @property
    def entries(self) -> list[str] | None:
        """The source entries of its training split (None where the checkpoint does not list them)."""
        return training_entries(self.state)

    @property
    def train_shape(self) -> tuple[int, int, int]:
        """The (X, Y, Z) grid of its training maps."""
        shape = ((self.state.get("data") or {}).get("train") or {}).get("input_shape")
        return tuple(int(x) for x in shape[-3:]) if shape else DEFAULT_SHAPE

    @property
    def d_min(self) -> float:
        """The resolution of its training data (Å; 1.5 where the checkpoint does not say)."""
        return float(self.trained_on.get("d_min", 1.5))

    @property
    def spacing(self) -> float:
        """The grid spacing of its training maps (Å): the training cell over the grid, else d_min / 3."""
        cell = self.trained_on.get("cell")
        if not cell:
            return self.d_min / 3
        cell = Cell.of(cell[:6] if isinstance(cell, list | tuple) else cell)
        shape = self.train_shape
        return max(cell.a / shape[0], cell.b / shape[1], cell.c / shape[2])

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def with_norm(self, norm: Mapping[str, float]) -> TrainedNetwork:
        """The same network with other normalisation constants (for a checkpoint that holds none)."""
        return dataclasses.replace(self, norm={"input": float(norm["input"]), "target": float(norm["target"])})

    def describe(self) -> dict[str, Any]:
        """Plain facts for reports: path, architecture, size, training data, its own validation and notes."""
        trained = self.trained_on
        metrics = self.state.get("metrics") or {}
        return {
            "path": str(self.path),
            "arch": self.state["model_config"].get("arch"),
            "parameters": count_parameters(self.model),
            "normalisation": self.norm,
            "trained_on": {k: trained.get(k) for k in ("preset", "source", "n", "d_min", "cell", "seed")},
            "best": self.state.get("best"),
            "validation": {
                "cc_aligned_median": metrics.get("val_cc_aligned_median"),
                "maps": metrics.get("val_maps"),
                "epoch": metrics.get("epoch"),
            },
            "notes": self.state.get("notes"),
        }

    # --- applying it -----------------------------------------------------------------------------------------

    def density(self, patterson: torch.Tensor, input_scale: float | torch.Tensor | None = None) -> torch.Tensor:
        """The network's density (B, X, Y, Z) in e/Å³ from Patterson maps (B, X, Y, Z).

        The input is divided by ``input_scale`` (default: ``norm["input"]``, which turns Patterson maps on the
        absolute scale into exactly the training inputs; a tensor of shape (B, 1, 1, 1) scales each map) and the
        output multiplied by ``norm["target"]``. Runs on the network's device; returns float64 on the device of
        ``patterson``.
        """
        if self.norm is None and input_scale is None:
            raise PattersonError(f"{self.path}: the checkpoint holds no normalisation constants; give the data's")
        scale = self.norm["input"] if input_scale is None else input_scale
        target = self.norm["target"] if self.norm is not None else 1.0
        x = (patterson / scale).to(device=self.device, dtype=torch.float32)[:, None]  # (B, 1, X, Y, Z)
        with torch.no_grad():
            pred = self.model(x)[:, 0]  # (B, X, Y, Z)
        return pred.to(device=patterson.device, dtype=torch.float64) * float(target)


def load_model(path: str | Path, map_location: str | torch.device = "cpu", task: str | None = None) -> PattersonModel:
    """The model of a checkpoint, weights loaded, in eval mode (for training and inspection; to apply a network
    use :class:`TrainedNetwork`)."""
    return TrainedNetwork.load(path, map_location, task).model


class Shipped:
    """The networks shipped with patterson (``src/patterson/weights/*.pt``, or another folder), each file read once
    however many networks are asked for: one per command."""

    def __init__(self, weights_dir: str | Path | None = None) -> None:
        self._states = [(p, load_checkpoint(p)) for p in _shipped(weights_dir)]

    def candidates(self, task: str) -> list[tuple[Path, dict[str, Any]]]:
        return [(p, state) for p, state in self._states if task_of(state) == task]

    def pick(
        self, data: Mapping[str, Any] | None, task: str = "density", device: str | torch.device = "cpu"
    ) -> TrainedNetwork | None:
        """The ``task`` network that fits ``data`` best (see :func:`~patterson.networks.pick_pretrained`); without
        ``data`` the only one of that task; None when there is none to pick."""
        candidates = self.candidates(task)
        path = choose_pretrained(candidates, data)
        return None if path is None else TrainedNetwork.from_state(path, dict(candidates)[path], device, task)

    def networks(
        self, task: str = "density", device: str | torch.device = "cpu", input: str | None = "patterson"
    ) -> list[TrainedNetwork]:
        """Every shipped ``task`` network for ``input`` (``patterson`` maps or ``intensity`` grids; None: any),
        sorted by name."""
        chosen = [(p, s) for p, s in self.candidates(task) if input is None or _input_of(s) == input]
        return [TrainedNetwork.from_state(p, state, device) for p, state in chosen]


def _input_of(state: Mapping[str, Any]) -> str:
    """What a network reads: ``patterson`` maps or ``intensity`` grids (the dataset it was trained on)."""
    return str(trained_on(state).get("input") or "patterson")


def open_network(
    name: str = "pretrained",
    data: Mapping[str, Any] | None = None,
    task: str = "density",
    device: str | torch.device = "cpu",
    weights_dir: str | Path | None = None,
    shipped: Shipped | None = None,
) -> TrainedNetwork | None:
    """The network ``name`` names, each file read once: a file path, a shipped name, or ``pretrained`` (the shipped
    ``task`` network that fits ``data`` best, from ``shipped`` when a command opens several; None when nothing of
    that task is shipped). A network of another task is a one-line PattersonError."""
    if name != "pretrained":
        return TrainedNetwork.load(find_checkpoint(name, weights_dir), device, task)
    return (shipped or Shipped(weights_dir)).pick(data, task, device)


def shipped_networks(
    task: str = "density",
    device: str | torch.device = "cpu",
    weights_dir: str | Path | None = None,
    input: str | None = "patterson",
) -> list[TrainedNetwork]:
    """Every shipped network trained for ``task`` on ``input`` (default: Patterson maps, what ``solve`` has; None:
    any), sorted by name, each file read once."""
    return Shipped(weights_dir).networks(task, device, input)
