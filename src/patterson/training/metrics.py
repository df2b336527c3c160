"""Per-epoch metrics: ``RUN/metrics.jsonl`` (one JSON object per epoch), ``RUN/metrics.csv`` and TensorBoard."""

from __future__ import annotations

import csv
import json
import logging
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)


def read_metrics(path: str | Path) -> list[dict[str, Any]]:
    """The rows of a ``metrics.jsonl`` file (a torn last line, from a killed run, is skipped)."""
    rows = []
    path = Path(path)
    if not path.is_file():
        return rows
    for line in path.read_text().splitlines():
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            log.warning("%s: skipping an unreadable line", path)
    return rows


def _json_value(v: Any) -> Any:
    return None if isinstance(v, float) and not math.isfinite(v) else v


class MetricsLog:
    """Writes one row per epoch; on resume, first drops rows past the checkpoint's epoch.

    Parameters
    ----------
    out : Path
        The run folder.
    keep_until_epoch : int, optional
        Keep existing rows with ``epoch <= keep_until_epoch`` (resume); None starts fresh files.
    tensorboard : bool
        Also write TensorBoard scalars to ``RUN/tensorboard`` when ``torch.utils.tensorboard`` imports.
    """

    def __init__(self, out: Path, keep_until_epoch: int | None = None, tensorboard: bool = True) -> None:
        self.jsonl = out / "metrics.jsonl"
        self.csv = out / "metrics.csv"
        rows = read_metrics(self.jsonl) if keep_until_epoch is not None else []
        self.rows = [r for r in rows if r.get("epoch", 0) <= (keep_until_epoch or 0)]
        self.jsonl.write_text("".join(json.dumps(r) + "\n" for r in self.rows))
        self._write_csv()
        self.writer = None
        if tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError:  # the tensorboard package is optional
                log.debug("tensorboard is not installed; no TensorBoard logs")
            else:
                self.writer = SummaryWriter(log_dir=str(out / "tensorboard"))

    def write(self, row: Mapping[str, Any]) -> None:
        """Append one epoch's metrics to every sink."""
        row = {k: _json_value(v) for k, v in row.items()}
        self.rows.append(row)
        with self.jsonl.open("a") as fh:
            fh.write(json.dumps(row) + "\n")
        self._write_csv()
        if self.writer is not None:
            step = int(row.get("step", row.get("epoch", 0)))
            for key, value in row.items():
                if isinstance(value, int | float) and not isinstance(value, bool) and key not in ("epoch", "step"):
                    self.writer.add_scalar(key, value, step)
            self.writer.flush()

    def _write_csv(self) -> None:
        keys: list[str] = []
        for row in self.rows:
            keys += [k for k in row if k not in keys]
        tmp = self.csv.with_suffix(".csv.tmp")
        with tmp.open("w", newline="") as fh:
            writer = csv.DictWriter(fh, fieldnames=keys)
            writer.writeheader()
            writer.writerows(self.rows)
        tmp.replace(self.csv)

    def close(self) -> None:
        """Close the TensorBoard writer."""
        if self.writer is not None:
            self.writer.close()


def plot_metrics(run: str | Path, path: str | Path | None = None, title: str | None = None) -> Path:
    """Plot a run's training/validation loss and validation CCs per epoch to a PNG (default ``RUN/curve.png``)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        from patterson.errors import PattersonError

        raise PattersonError("plotting needs matplotlib (pip install matplotlib)") from None
    run = Path(run)
    rows = read_metrics(run / "metrics.jsonl")
    if not rows:
        from patterson.errors import PattersonError

        raise PattersonError(f"{run}: no metrics.jsonl rows to plot")
    epochs = [r["epoch"] for r in rows]
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 3.8))
    ax1.plot(epochs, [r["train_loss"] for r in rows], "o-", label="training loss")
    if "val_loss" in rows[0]:
        ax1.plot(epochs, [r["val_loss"] for r in rows], "s-", label="validation loss")
    ax1.set_yscale("log")
    ax1.set_xlabel("epoch")
    ax1.set_ylabel("0.999 MSE + 0.001 (1 - CC)")
    ax1.legend()
    for key, label, style in (
        ("val_cc_median", "median CC", "C0o-"),
        ("val_cc_mean", "mean CC", "C0--"),
        ("val_cc_aligned_median", "median CC, origin/hand aligned", "C3o-"),
        ("val_cc_aligned_mean", "mean CC, origin/hand aligned", "C3--"),
    ):
        if key in rows[0]:
            ax2.plot(epochs, [r[key] for r in rows], style, label=label)
    ax2.set_xlabel("epoch")
    ax2.set_ylabel("validation Pearson CC")
    ax2.legend(fontsize=8)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    out = Path(path) if path is not None else run / "curve.png"
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out
