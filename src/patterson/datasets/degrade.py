"""Degradations of the input data, as measurement makes them: amplitude error (relative, or growing with resolution
as merged data have it) and reflections that were not measured. The target (the truth) is never degraded."""

from __future__ import annotations

import numpy as np
import torch

from patterson.datasets.config import GenerateConfig


def degrade(
    amplitude: torch.Tensor, keep: torch.Tensor, config: GenerateConfig, rngs, s2: np.ndarray | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Amplitudes (B, M) with relative Gaussian noise, measurement error growing with resolution (``noise_edge``,
    where the reflections' 1/d² ``s2`` (M,) are given: :func:`measurement_error`) and reflections dropped (set to 0)
    per example, and the mask (B, M) of the measured ones (``keep`` and not dropped; noise may take a measured
    amplitude to 0)."""
    out = amplitude.clone()
    measured = keep.expand(amplitude.shape).clone()
    for b, rng in enumerate(rngs):
        if config.missing > 0:
            measured[b] &= torch.as_tensor(rng.random(amplitude.shape[1]) >= config.missing)
        if config.noise_edge > 0 and s2 is not None:
            sigma = measurement_error(amplitude[b].numpy(), s2, float(rng.uniform(config.noise, config.noise_edge)))
            eps = rng.normal(size=amplitude.shape[1])
            out[b] = torch.clamp(out[b] + torch.as_tensor(sigma * eps, dtype=amplitude.dtype), min=0)
        elif config.noise > 0:
            eps = torch.as_tensor(rng.normal(size=amplitude.shape[1]), dtype=amplitude.dtype)
            out[b] = torch.clamp(out[b] * (1 + config.noise * eps), min=0)
        out[b] = torch.where(measured[b], out[b], torch.zeros_like(out[b]))
    return out, measured


def measurement_error(f: np.ndarray, s2: np.ndarray, edge: float, n_shells: int = 10) -> np.ndarray:
    """(M,) σ(|F|) of amplitudes f (M,) at 1/d² ``s2`` (M,), as merged data have it: a fraction of the r.m.s. |F|
    of the reflection's shell (``n_shells`` of equal count) that rises as 1/d² from a tenth of ``edge`` at low
    resolution to ``edge`` at the highest (5E5Z's data: about 2% to 9%; 1YJP's: 12% to 38%)."""
    order = np.argsort(s2, kind="stable")
    rms = np.zeros(len(f))
    for shell in np.array_split(order, min(n_shells, max(1, len(f)))):
        rms[shell] = np.sqrt(np.mean(np.asarray(f[shell], dtype=np.float64) ** 2)) if len(shell) else 0.0
    rel = edge * (0.1 + 0.9 * s2 / max(float(s2.max()), 1e-30))
    return rel * rms
