"""The trainer: epochs of (accumulated, clipped) optimizer steps, validation, checkpoints, metrics, DDP."""

from __future__ import annotations

import contextlib
import json
import logging
import math
import random
import shutil
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, Subset
from torch.utils.data.distributed import DistributedSampler
from tqdm import tqdm

import patterson
from patterson.errors import PattersonError
from patterson.files import check_output_folder, check_writable_folder, holds_only, plain
from patterson.models import align_to_target, model_from_config, pearson_cc
from patterson.networks.checkpoint import (
    FORMAT,
    FORMAT_VERSION,
    find_checkpoint,
    load_checkpoint,
    load_weights,
    save_checkpoint,
    with_defaults,
)
from patterson.runtime import bar_options
from patterson.training.checkpoint import capture_rng, check_same_model, restore_rng
from patterson.training.config import TrainConfig
from patterson.training.data import BatchSource, MapPairs, is_batch_source, open_data, permute_axes
from patterson.training.distributed import (
    DistEnv,
    all_reduce_sum,
    barrier,
    gather_objects,
    setup_distributed,
    teardown_distributed,
)
from patterson.training.metrics import MetricsLog
from patterson.training.optim import build_loss, build_map_loss, build_optimizer, build_scheduler

log = logging.getLogger(__name__)

# what a run folder holds (a folder with anything else is not written into)
RUN_FILES = {"config.json", "checkpoints", "train.log", "metrics.jsonl", "metrics.csv", "curve.png", "lr_find.json",
             "lr_find.png"}  # fmt: skip


@dataclass
class TrainResult:
    """What a finished :func:`train` call leaves: run folder, epochs done, last metrics, best, last file, rank."""

    out: Path
    epochs: int
    metrics: dict[str, Any] = field(default_factory=dict)
    best: dict[str, Any] = field(default_factory=dict)
    last_checkpoint: Path | None = None
    rank: int = 0


def seed_everything(seed: int) -> None:
    """Seed python, numpy and torch (all devices)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def _split_data(data: Any) -> tuple[Any, Any]:
    if isinstance(data, Mapping):
        if "train" not in data:
            raise PattersonError(f"a data mapping needs a 'train' entry, has {', '.join(map(str, data))}")
        return data["train"], data.get("val")
    if isinstance(data, tuple) and len(data) == 2:
        return data
    return data, None


class Trainer:
    """One training run (one process of it under DDP).

    Parameters
    ----------
    config : TrainConfig
        The recipe.
    train_data, val_data : indexable
        ``len`` and ``[i] -> (input, target)`` (C, X, Y, Z) tensors, or dict items; see :class:`MapPairs`.
        ``val_data`` may be None (no validation; ``best.pt`` then follows the training loss).
    out : str or Path, optional
        The run folder (``checkpoints/``, ``metrics.jsonl``, ``metrics.csv``, ``config.json``, ``train.log``);
        None keeps nothing on disk (benchmarks).
    resume : bool
        Continue from ``out/checkpoints/last.pt``.
    env : DistEnv, optional
        Process-group position; default from the environment (``torchrun``) via :func:`setup_distributed`.
    """

    def __init__(
        self,
        config: TrainConfig,
        train_data: Any,
        val_data: Any = None,
        out: str | Path | None = None,
        resume: bool = False,
        env: DistEnv | None = None,
    ) -> None:
        self.config = config
        self.env = env if env is not None else setup_distributed(config.device)
        self.device = self.env.device
        self.out = Path(out) if out is not None else None
        if resume and self.out is None:
            raise PattersonError("resume needs the run folder")
        if config.deterministic:
            torch.use_deterministic_algorithms(True)
        self.train_data = BatchSource(train_data) if is_batch_source(train_data) else MapPairs(train_data)
        self.on_the_fly = isinstance(self.train_data, BatchSource)
        self.val_data = MapPairs(val_data) if val_data is not None and len(val_data) > 0 else None

        seed_everything(config.seed)
        self.model_config = config.model_config()
        self.module = model_from_config(self.model_config)
        if config.init_from:
            self._init_weights(config.init_from)
        self._check_data()
        world = self.env.world_size
        if config.batch_size % world:
            raise PattersonError(f"batch_size {config.batch_size} is not divisible by the {world} processes")
        self.local_batch = config.batch_size // world
        self.batches_per_epoch = len(self.train_data) // config.batch_size
        if self.batches_per_epoch == 0:
            raise PattersonError(f"the training set has {len(self.train_data)} maps, fewer than batch_size")
        if config.max_batches:
            self.batches_per_epoch = min(self.batches_per_epoch, config.max_batches)
        self.steps_per_epoch = math.ceil(self.batches_per_epoch / config.grad_accum)

        cuda = self.device.type == "cuda"
        self.amp = cuda and config.amp
        self.channels_last = cuda and config.channels_last
        self.module.to(self.device)
        if self.channels_last:
            self.module.to(memory_format=torch.channels_last_3d)
        self.net: torch.nn.Module = self.module
        self.ddp: DistributedDataParallel | None = None
        if self.env.distributed:
            if cuda and config.sync_batchnorm:
                self.net = torch.nn.SyncBatchNorm.convert_sync_batchnorm(self.net)
            self.ddp = DistributedDataParallel(self.net, device_ids=[self.device] if cuda else None)
            self.net = self.ddp
        if config.compile:
            self.net = torch.compile(self.net)
        self.optimizer = build_optimizer(self.module, config)
        self.scheduler = build_scheduler(self.optimizer, config, self.steps_per_epoch)
        self.loss_fn = build_loss(config)
        self.map_loss_fn = build_map_loss(config)

        self.epoch = 0  # completed epochs
        self.step = 0  # optimizer steps
        self.batch_in_epoch = 0  # micro-batches done in the current epoch (mid-epoch checkpoints)
        self.epoch_loss = [0.0, 0]  # sum of micro-batch losses and their count, this epoch
        minimise = config.best_metric == "val_loss" or self.val_data is None
        self.best: dict[str, Any] = {
            "metric": config.best_metric if self.val_data is not None else "train_loss",
            "mode": "min" if minimise else "max",
            "value": None,
            "epoch": None,
        }
        self.last_metrics: dict[str, Any] = {}
        self.metrics_log: MetricsLog | None = None
        self._log_handler: logging.Handler | None = None
        if self.out is not None:
            self._prepare_out(resume)

    # --- set-up ----------------------------------------------------------------------------------------------

    def _init_weights(self, name: str) -> None:
        path = find_checkpoint(name)
        if path is None:
            raise PattersonError(f"init_from={name!r}: no shipped weights to start from")
        state = load_checkpoint(path)
        weights = self.module.warm_start_weights(with_defaults(state["model_config"]), state["model"])
        if weights is None:
            check_same_model(path, state, self.model_config.to_dict())
            weights = state["model"]
        load_weights(self.module, weights, path)
        log.info("initial weights from %s", path)

    def _check_data(self) -> None:
        name, cfg = self.config.model, self.model_config
        for split, data in (("training", self.train_data), ("validation", self.val_data)):
            if data is None:
                continue
            try:
                self.module.check_grid(data.grid)
            except PattersonError as exc:
                raise PattersonError(
                    f"the {split} maps' grid {data.grid} does not suit model {name!r}: {exc}"
                ) from None
            if data.input_shape[0] != cfg.in_channels or data.target_shape[0] != cfg.out_channels:
                raise PattersonError(
                    f"the {split} maps have {data.input_shape[0]} input / {data.target_shape[0]} target channels, "
                    f"model {name!r} takes {cfg.in_channels} / {cfg.out_channels}"
                )
        if self.val_data is not None and self.val_data.grid != self.train_data.grid:
            raise PattersonError(
                f"validation grid {self.val_data.grid} differs from training grid {self.train_data.grid}"
            )
        if self.config.permute_axes and len(set(self.train_data.grid)) != 1:
            raise PattersonError(f"permute_axes needs a cubic grid, the training maps are {self.train_data.grid}")

    @property
    def checkpoint_dir(self) -> Path:
        """``RUN/checkpoints``."""
        if self.out is None:
            raise PattersonError("this trainer has no run folder")
        return self.out / "checkpoints"

    def _prepare_out(self, resume: bool) -> None:
        assert self.out is not None
        check_writable_folder(self.out)
        last = self.checkpoint_dir / "last.pt"
        if resume:
            if not last.is_file():
                raise PattersonError(f"{self.out}: no checkpoint to resume from ({last} is missing)")
            self.load_state(last)
        elif last.exists():
            raise PattersonError(f"{self.out} already holds a run; pass --resume, or choose another --out")
        else:
            check_output_folder(self.out, lambda folder: holds_only(folder, RUN_FILES), "a training run")
        if self.env.is_main:
            self.checkpoint_dir.mkdir(parents=True, exist_ok=True)
            info = {
                "train_config": self.config.to_dict(),
                "model_config": self.model_config.to_dict(),
                "package_version": patterson.__version__,
            }
            (self.out / "config.json").write_text(json.dumps(info, indent=2) + "\n")
            self.metrics_log = MetricsLog(self.out, keep_until_epoch=self.epoch if resume else None)
            self._log_handler = logging.FileHandler(self.out / "train.log")
            self._log_handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
            logging.getLogger("patterson").addHandler(self._log_handler)
        barrier(self.env)

    # --- checkpoints -----------------------------------------------------------------------------------------

    def state_dict(self) -> dict[str, Any]:
        """Everything needed to continue bit-for-bit (see :mod:`patterson.training.checkpoint`)."""
        return {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "package_version": patterson.__version__,
            "model_config": self.model_config.to_dict(),
            "train_config": self.config.to_dict(),
            "model": self.module.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "epoch": self.epoch,
            "step": self.step,
            "batch_in_epoch": self.batch_in_epoch,
            "epoch_loss": list(self.epoch_loss),
            "rng": capture_rng(),
            "sampler": {"seed": self.config.seed, "epoch": self.epoch, "position": self.batch_in_epoch},
            "normalisation": self.train_data.info().get("normalisation"),
            "data": plain({"spec": self.config.data, "train": self.train_data.info()})
            | ({"val": plain(self.val_data.info())} if self.val_data is not None else {}),
            "best": dict(self.best),
            "metrics": dict(self.last_metrics),
        }

    def load_state(self, path: Path) -> None:
        """Restore a checkpoint written by :meth:`state_dict` (same model config required)."""
        state = load_checkpoint(path, map_location=self.device)
        check_same_model(path, state, self.model_config.to_dict())
        load_weights(self.module, state["model"], path)
        try:
            self.optimizer.load_state_dict(state["optimizer"])
            self.scheduler.load_state_dict(state["scheduler"])
            self.epoch, self.step = int(state["epoch"]), int(state["step"])
            self.batch_in_epoch = int(state["batch_in_epoch"])
            self.epoch_loss = [float(state["epoch_loss"][0]), int(state["epoch_loss"][1])]
            self.best = dict(state["best"])
            self.last_metrics = dict(state.get("metrics", {}))
            if state["sampler"]["seed"] != self.config.seed:
                raise PattersonError(f"the checkpoint was trained with seed {state['sampler']['seed']}")
            restore_rng(state["rng"])
        except (KeyError, TypeError, ValueError, RuntimeError) as exc:
            if isinstance(exc, PattersonError):
                raise PattersonError(f"{path}: {exc}") from None
            raise PattersonError(
                f"{path}: incomplete or inconsistent checkpoint ({type(exc).__name__}: {exc})"
            ) from None
        changed = {k: v for k, v in state.get("train_config", {}).items() if self.config.to_dict().get(k) != _tuple(v)}
        if changed:
            log.warning("resuming with changed settings: %s", ", ".join(sorted(changed)))
        log.info("resumed from %s at epoch %d, step %d", path, self.epoch, self.step)

    def save(self, epoch_file: bool, improved: bool) -> Path:
        """Write ``last.pt`` (and ``epoch-NNN.pt``, ``best.pt``) atomically; rank 0 only."""
        state = self.state_dict()
        ckpt = self.checkpoint_dir
        last = save_checkpoint(ckpt / "last.pt", state)
        if epoch_file:
            _atomic_copy(last, ckpt / f"epoch-{self.epoch:03d}.pt")
            if self.config.keep_checkpoints:
                for old in sorted(ckpt.glob("epoch-*.pt"))[: -self.config.keep_checkpoints]:
                    old.unlink()
        if improved:
            _atomic_copy(last, ckpt / "best.pt")
        return last

    # --- one epoch -------------------------------------------------------------------------------------------

    def _autocast(self) -> contextlib.AbstractContextManager:
        return torch.autocast("cuda", dtype=torch.bfloat16) if self.amp else contextlib.nullcontext()

    def _to_device(self, x: torch.Tensor) -> torch.Tensor:
        x = x.to(self.device, non_blocking=True)
        return x.contiguous(memory_format=torch.channels_last_3d) if self.channels_last else x

    def epoch_batches(self, epoch: int) -> list[list[int]]:
        """This process's micro-batches (index lists) for ``epoch``, all of them, in order.

        A DistributedSampler (seed + epoch, shuffled, tail dropped) gives rank r the indices ``perm[r::N]``; cutting
        them into runs of ``batch_size / N`` makes micro-batch i over all ranks exactly ``perm[i*B:(i+1)*B]``, the
        micro-batch a single process with batch B sees.
        """
        world, rank = self.env.world_size, self.env.rank
        sampler = DistributedSampler(
            self.train_data, num_replicas=world, rank=rank, shuffle=True, seed=self.config.seed, drop_last=True
        )
        sampler.set_epoch(epoch)
        order = list(sampler)
        b = self.local_batch
        return [order[i * b : (i + 1) * b] for i in range(self.batches_per_epoch)]

    def train_epoch(self, epoch: int) -> dict[str, float]:
        """Train one epoch (from ``self.batch_in_epoch`` when resuming mid-epoch); returns training metrics."""
        cfg = self.config
        self.net.train()
        start, n = self.batch_in_epoch, self.batches_per_epoch
        if self.on_the_fly:  # batch k of this epoch on this rank depends only on (seed, epoch, k, rank)
            draw = self.train_data.draw  # type: ignore[union-attr]
            rank = self.env.rank
            loader: Any = (
                draw(np.random.default_rng([cfg.seed, epoch, k, rank]), self.local_batch) for k in range(start, n)
            )
        else:
            loader = DataLoader(
                self.train_data,
                batch_sampler=self.epoch_batches(epoch)[start:],
                num_workers=cfg.num_workers,
                pin_memory=self.device.type == "cuda",
                generator=torch.Generator().manual_seed(cfg.seed * 1_000_003 + epoch),
            )
        loss_sum = torch.tensor(self.epoch_loss[0], dtype=torch.float64, device=self.device)
        count = self.epoch_loss[1]
        bar = tqdm(
            total=n,
            initial=start,
            desc=f"epoch {epoch + 1}/{cfg.epochs}",
            unit="batch",
            disable=not (self.env.is_main and cfg.progress),
            leave=False,
            **bar_options(),
        )
        accum = cfg.grad_accum
        lr = self.optimizer.param_groups[0]["lr"]
        t0, maps = time.perf_counter(), 0
        for k, (x, y) in enumerate(loader, start=start):
            x, y = self._to_device(x), self._to_device(y)  # (b, C, X, Y, Z)
            if cfg.permute_axes:  # batch k's order depends only on (seed, epoch, k, rank): resumable
                x, y = permute_axes(x, y, np.random.default_rng([cfg.seed, epoch, k, self.env.rank, 3]))
            group = min(accum, n - (k // accum) * accum)  # micro-batches in this accumulation group
            boundary = (k + 1) % accum == 0 or k == n - 1
            sync = self.ddp.no_sync() if self.ddp is not None and not boundary else contextlib.nullcontext()
            with sync:
                with self._autocast():
                    pred = self.net(x)  # (b, C, X, Y, Z)
                loss = self.loss_fn(pred.float(), y)
                (loss / group).backward()
            loss_sum += loss.detach()
            count += 1
            maps += x.shape[0] * self.env.world_size
            if boundary:
                if cfg.clip > 0:
                    torch.nn.utils.clip_grad_norm_(self.module.parameters(), cfg.clip)
                lr = self.optimizer.param_groups[0]["lr"]
                self.optimizer.step()
                self.optimizer.zero_grad(set_to_none=True)
                self.scheduler.step()
                self.step += 1
                if cfg.checkpoint_every and self.step % cfg.checkpoint_every == 0 and k + 1 < n:
                    self.batch_in_epoch, self.epoch_loss = k + 1, [float(loss_sum), count]
                    if self.env.is_main and self.out is not None:
                        self.save(epoch_file=False, improved=False)
            bar.update(1)
            if not bar.disable and ((k + 1) % 10 == 0 or k == n - 1):
                rate = maps / max(time.perf_counter() - t0, 1e-9)
                bar.set_postfix(loss=f"{float(loss_sum) / count:.4g}", maps_s=f"{rate:.1f}", refresh=False)
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        elapsed = time.perf_counter() - t0
        bar.close()
        total, total_count = all_reduce_sum([float(loss_sum), float(count)], self.env)
        return {
            "train_loss": total / max(total_count, 1),
            "train_maps_per_s": maps / max(elapsed, 1e-9),
            "train_time_s": elapsed,
            "lr": lr,  # of the epoch's last optimizer step
        }

    # --- validation ------------------------------------------------------------------------------------------

    @torch.no_grad()
    def validate(self) -> dict[str, float]:
        """Mean/median Pearson CC of predictions vs targets, raw and after the best origin shift and hand."""
        if self.val_data is None:
            return {}
        if self.env.distributed:  # every rank validates with rank 0's BatchNorm statistics
            for buf in self.module.buffers():
                torch.distributed.broadcast(buf, 0)
        self.module.eval()
        env = self.env
        shard = Subset(self.val_data, range(env.rank, len(self.val_data), env.world_size))
        loader = DataLoader(shard, batch_size=self.config.val_batch_size or self.local_batch, shuffle=False)
        parts: list[np.ndarray] = []
        for x, y in loader:
            x, y = self._to_device(x), self._to_device(y)
            with self._autocast():
                pred = self.module(x)
            pred, y = pred.float().contiguous(), y.contiguous()  # (b, C, X, Y, Z)
            aligned, _, _ = align_to_target(pred, y)
            cols = (pearson_cc(pred, y), pearson_cc(aligned, y), self.map_loss_fn(pred, y))  # (b,) each
            parts.append(torch.stack(cols, dim=1).double().cpu().numpy())  # (b, 3)
        mine = np.concatenate(parts) if parts else np.zeros((0, 3))
        values = np.concatenate(gather_objects(mine, env))  # (n_val, 3)
        cc, cc_aligned, loss = values.T
        return {
            "val_loss": float(loss.mean()),
            "val_cc_mean": float(cc.mean()),
            "val_cc_median": float(np.median(cc)),
            "val_cc_aligned_mean": float(cc_aligned.mean()),
            "val_cc_aligned_median": float(np.median(cc_aligned)),
            "val_maps": int(len(values)),
        }

    # --- the run ---------------------------------------------------------------------------------------------

    def _improved(self, metrics: Mapping[str, Any]) -> bool:
        value = metrics.get(self.best["metric"])
        if value is None or not math.isfinite(value):
            return False
        old = self.best["value"]
        better = old is None or (value < old if self.best["mode"] == "min" else value > old)
        if better:
            self.best.update(value=float(value), epoch=self.epoch)
        return better

    def fit(self) -> TrainResult:
        """Train from the current epoch to ``config.epochs``, validating and checkpointing after each epoch."""
        cfg = self.config
        last = self.checkpoint_dir / "last.pt" if self.out is not None else None
        if self.epoch >= cfg.epochs:
            log.info("nothing to do: %d of %d epochs already done", self.epoch, cfg.epochs)
        try:
            while self.epoch < cfg.epochs:
                t0 = time.perf_counter()
                epoch = self.epoch
                train_metrics = self.train_epoch(epoch)
                val_metrics = self.validate()
                self.epoch, self.batch_in_epoch, self.epoch_loss = epoch + 1, 0, [0.0, 0]
                row = {"epoch": self.epoch, "step": self.step, **train_metrics, **val_metrics}
                row["epoch_time_s"] = time.perf_counter() - t0
                improved = self._improved(row)
                self.last_metrics = row
                if self.env.is_main:
                    if self.out is not None:
                        last = self.save(epoch_file=True, improved=improved)
                    if self.metrics_log is not None:
                        self.metrics_log.write(row)
                    log.info(_summary(row))
                barrier(self.env)
        finally:
            self.close()
        return TrainResult(self.out, self.epoch, self.last_metrics, dict(self.best), last, self.env.rank)

    def close(self) -> None:
        """Close metric sinks and the run's log file."""
        if self.metrics_log is not None:
            self.metrics_log.close()
            self.metrics_log = None
        if self._log_handler is not None:
            logging.getLogger("patterson").removeHandler(self._log_handler)
            self._log_handler.close()
            self._log_handler = None


def _summary(row: Mapping[str, Any]) -> str:
    text = f"epoch {row['epoch']}: loss {row['train_loss']:.5f}, lr {row['lr']:.3g}, "
    text += f"{row['train_maps_per_s']:.1f} maps/s"
    if "val_cc_median" in row:
        text += (
            f"; val loss {row['val_loss']:.5f}, CC median {row['val_cc_median']:.3f} "
            f"(aligned {row['val_cc_aligned_median']:.3f})"
        )
    return text


def _tuple(v: Any) -> Any:
    return tuple(v) if isinstance(v, list) else v


def _atomic_copy(src: Path, dst: Path) -> None:
    tmp = dst.with_name(f".{dst.name}.tmp")
    shutil.copyfile(src, tmp)
    tmp.replace(dst)


def train(config: TrainConfig, out: str | Path, resume: bool = False, data: Any = None) -> TrainResult:
    """Train a network as ``config`` says, writing checkpoints and metrics to ``out``.

    Under ``torchrun`` every process calls this; they form a DDP group (gloo on CPU, nccl on GPU) and rank 0 alone
    writes files.

    Parameters
    ----------
    config : TrainConfig
        The recipe (``config.data`` names the data unless ``data`` is given).
    out : str or Path
        The run folder.
    resume : bool
        Continue from ``out/checkpoints/last.pt``.
    data : optional
        In-memory data instead of ``config.data``: a training set, a ``(train, val)`` pair or a
        ``{"train": ..., "val": ...}`` mapping; items as :class:`MapPairs` accepts.

    Returns
    -------
    TrainResult
    """
    env = setup_distributed(config.device)
    try:
        if data is not None:
            train_data, val_data = _split_data(data)
        else:
            train_data, val_data = open_data(
                config.data,
                on_the_fly=config.on_the_fly,
                seed=config.seed,
                task=config.task,
                recycle_from=config.recycle_from,
            )
        return Trainer(config, train_data, val_data, out=out, resume=resume, env=env).fit()
    finally:
        teardown_distributed(env)
