"""Optimizer, learning-rate schedules and the training loss chosen by a TrainConfig."""

from __future__ import annotations

import functools
import math

import torch
from torch import nn

from patterson.models import invariant_loss, paper_loss
from patterson.models.losses import LossFn
from patterson.training.config import TrainConfig


def build_optimizer(model: nn.Module, config: TrainConfig, lr: float | None = None) -> torch.optim.Optimizer:
    """AdamW (decoupled weight decay) or Adam (L2 weight decay) over all trainable parameters."""
    cls = torch.optim.AdamW if config.optimizer == "adamw" else torch.optim.Adam
    params = [p for p in model.parameters() if p.requires_grad]
    return cls(params, lr=config.lr if lr is None else lr, betas=config.betas, weight_decay=config.weight_decay)


def lr_factor(config: TrainConfig, step: int, steps_per_epoch: int, total_steps: int) -> float:
    """Multiplier of ``config.lr`` for the optimizer step with index ``step`` (0-based).

    ``paper``: constant within an epoch; epoch e gets ``decay_fast ** min(e, E) * decay_slow ** max(e - E, 0)``
    with E = ``decay_fast_epochs`` (as an ExponentialLR stepped once per epoch whose gamma changes after E epochs).
    ``onecycle``: linear warm-up from 1/div to 1 over ``warmup_fraction`` of ``total_steps``, then half a cosine
    down to 1/(div * final_div). ``constant``: 1.
    """
    if config.schedule == "constant":
        return 1.0
    if config.schedule == "paper":
        epoch = step // max(steps_per_epoch, 1)
        fast = min(epoch, config.decay_fast_epochs)
        return config.decay_fast**fast * config.decay_slow ** max(epoch - config.decay_fast_epochs, 0)
    # onecycle
    total = max(total_steps, 2)
    warm = max(1, round(config.warmup_fraction * total))
    start, end = 1.0 / config.onecycle_div, 1.0 / (config.onecycle_div * config.onecycle_final_div)
    if step < warm:
        return start + (1.0 - start) * step / warm
    t = min(1.0, (step - warm) / max(total - 1 - warm, 1))
    return end + (1.0 - end) * 0.5 * (1.0 + math.cos(math.pi * t))


def build_scheduler(
    optimizer: torch.optim.Optimizer, config: TrainConfig, steps_per_epoch: int
) -> torch.optim.lr_scheduler.LambdaLR:
    """A LambdaLR stepped once per optimizer step; its state_dict is plain (the lambda is rebuilt, not saved)."""
    total = steps_per_epoch * config.epochs
    fn = functools.partial(lr_factor, config, steps_per_epoch=steps_per_epoch, total_steps=total)
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: fn(step))


def build_loss(config: TrainConfig) -> LossFn:
    """The per-batch training loss (a scalar) named by ``config.loss``."""
    base = functools.partial(paper_loss, w=config.loss_weight)
    if config.loss == "paper":
        return base
    return functools.partial(invariant_loss, base=base)


def build_map_loss(config: TrainConfig) -> LossFn:
    """The same loss per map, shape (B,), for validation."""
    base = functools.partial(paper_loss, w=config.loss_weight, reduction="none")
    if config.loss == "paper":
        return base
    return functools.partial(invariant_loss, base=base)
