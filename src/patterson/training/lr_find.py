"""Learning-rate range test (Smith 2017): raise the lr exponentially each step and watch the loss."""

from __future__ import annotations

import copy
import json
import logging
import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader

from patterson.errors import PattersonError
from patterson.models import PattersonModel, model_from_config
from patterson.runtime import bar_options
from patterson.training.config import TrainConfig
from patterson.training.data import MapPairs, open_data
from patterson.training.loop import _split_data, seed_everything
from patterson.training.optim import build_loss, build_optimizer

log = logging.getLogger(__name__)


@dataclass
class LRFindResult:
    """Learning rates tried, raw and smoothed losses, and two suggestions.

    ``suggestion`` is the lr of steepest descent of the smoothed loss (per unit of log lr) before its minimum;
    ``min_loss_lr`` the lr of the lowest smoothed loss (a tenth of it is the other common rule of thumb).
    """

    lrs: list[float]
    losses: list[float]
    smoothed: list[float]
    suggestion: float
    min_loss_lr: float

    def to_dict(self) -> dict[str, Any]:
        """Plain dict (for JSON)."""
        return asdict(self)


def lr_find(
    model: PattersonModel,
    data: Any,
    config: TrainConfig,
    start_lr: float = 1e-7,
    end_lr: float = 1.0,
    steps: int = 100,
    beta: float = 0.9,
    diverge: float = 4.0,
) -> LRFindResult:
    """Run the range test on a copy of ``model`` (the model itself is not changed).

    Parameters
    ----------
    model : PattersonModel
        The network (its copy is trained on CPU or the model's device).
    data : indexable
        Training pairs (see :class:`MapPairs`), cycled through in shuffled batches of ``config.batch_size``.
    config : TrainConfig
        Optimizer, loss, batch size and clipping (no accumulation: one batch per step).
    start_lr, end_lr : float
        The range, swept geometrically over ``steps`` optimizer steps.
    beta : float
        Exponential smoothing of the loss (bias-corrected).
    diverge : float
        Stop once the smoothed loss exceeds this multiple of its minimum.

    Returns
    -------
    LRFindResult
    """
    if not 0 < start_lr < end_lr or steps < 2:
        raise PattersonError("lr_find needs 0 < start_lr < end_lr and at least 2 steps")
    pairs = MapPairs(data)
    net = copy.deepcopy(model).train()
    device = next(net.parameters()).device
    optimizer = build_optimizer(net, config, lr=start_lr)
    loss_fn = build_loss(config)
    gamma = (end_lr / start_lr) ** (1.0 / (steps - 1))
    generator = torch.Generator().manual_seed(config.seed)
    batch = min(config.batch_size, len(pairs))
    lrs, losses, smoothed = [], [], []
    avg, best = 0.0, math.inf
    batches = iter(())
    from tqdm import tqdm

    bar = tqdm(total=steps, unit="step", desc="lr range test", leave=False, **bar_options())
    for i in range(steps):
        bar.update()
        bar.set_postfix_str(f"lr {start_lr * gamma**i:.2g}", refresh=False)
        try:
            x, y = next(batches)
        except StopIteration:
            batches = iter(DataLoader(pairs, batch_size=batch, shuffle=True, drop_last=True, generator=generator))
            x, y = next(batches)
        lr = start_lr * gamma**i
        for group in optimizer.param_groups:
            group["lr"] = lr
        loss = loss_fn(net(x.to(device)).float(), y.to(device))  # x, y: (B, C, X, Y, Z)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if config.clip > 0:
            torch.nn.utils.clip_grad_norm_(net.parameters(), config.clip)
        optimizer.step()
        value = float(loss.detach())
        avg = beta * avg + (1 - beta) * value
        smooth = avg / (1 - beta ** (i + 1))
        lrs.append(lr)
        losses.append(value)
        smoothed.append(smooth)
        best = min(best, smooth)
        if not math.isfinite(smooth) or smooth > diverge * best:
            log.info("lr_find: loss diverged at lr %.3g after %d steps", lr, i + 1)
            break
    bar.close()
    result = _suggest(lrs, losses, smoothed)
    log.info("lr_find: steepest descent at lr %.3g, lowest loss at lr %.3g", result.suggestion, result.min_loss_lr)
    return result


def _suggest(lrs: list[float], losses: list[float], smoothed: list[float]) -> LRFindResult:
    """The suggestion: the steepest descent of the smoothed loss before its minimum (a tenth of the lowest-loss
    rate when the curve is too short to have one)."""
    s = np.asarray(smoothed)
    i_min = int(np.nanargmin(s))
    skip = max(1, len(s) // 10)  # the first smoothed points are mostly start-up noise
    if i_min - skip >= 2:
        slope = np.gradient(s[skip : i_min + 1], np.log(np.asarray(lrs[skip : i_min + 1])))
        suggestion = lrs[skip + int(np.argmin(slope))]
    else:
        suggestion = lrs[i_min] / 10
    return LRFindResult(lrs, losses, smoothed, float(suggestion), float(lrs[i_min]))


def plot_lr_find(result: LRFindResult, path: str | Path) -> Path:
    """Plot loss vs learning rate (log axis) with the suggestion marked; needs matplotlib."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise PattersonError("plotting needs matplotlib (pip install matplotlib)") from None
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.plot(result.lrs, result.losses, color="0.75", lw=1, label="loss")
    ax.plot(result.lrs, result.smoothed, color="C0", lw=2, label="smoothed")
    ax.axvline(result.suggestion, color="C3", ls="--", label=f"suggestion {result.suggestion:.2g}")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("learning rate")
    ax.set_ylabel("training loss")
    ax.legend()
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def run_lr_find(config: TrainConfig, out: str | Path, data: Any = None, **kwargs: Any) -> LRFindResult:
    """Range test for ``config``'s fresh model on its training data; writes ``OUT/lr_find.json`` (and ``.png``)."""
    train_data, _ = _split_data(data) if data is not None else open_data(config.data)
    seed_everything(config.seed)
    model = model_from_config(config.model_config())
    pairs = MapPairs(train_data)
    model.check_grid(pairs.grid)
    result = lr_find(model, pairs, config, **kwargs)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "lr_find.json").write_text(json.dumps(result.to_dict(), indent=1) + "\n")
    try:
        plot_lr_find(result, out / "lr_find.png")
    except PattersonError as exc:
        log.warning("no lr_find plot: %s", exc)
    return result
