"""What a training checkpoint holds beyond the network (see :mod:`patterson.networks.checkpoint` for the layout):
the random generators' states, and the check that a resumed run trains the same model."""

from __future__ import annotations

import random
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch

from patterson.errors import PattersonError
from patterson.networks.checkpoint import normalised_config, with_defaults


def capture_rng() -> dict[str, Any]:
    """The torch, CUDA, numpy and python random generator states as tensors and plain values."""
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    py_version, py_state, py_gauss = random.getstate()
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "numpy": {"kind": kind, "keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos)}
        | {"has_gauss": int(has_gauss), "gauss": float(gauss)},
        "python": {"version": py_version, "state": list(py_state), "gauss": py_gauss},
    }


def restore_rng(state: Mapping[str, Any]) -> None:
    """Undo :func:`capture_rng`."""
    torch.set_rng_state(state["torch"])
    if state.get("cuda") and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    npy = state["numpy"]
    keys = npy["keys"].numpy().astype(np.uint32)
    np.random.set_state((npy["kind"], keys, npy["pos"], npy["has_gauss"], npy["gauss"]))
    py = state["python"]
    random.setstate((py["version"], tuple(py["state"]), py["gauss"]))


def check_same_model(path: str | Path, state: Mapping[str, Any], config: Mapping[str, Any]) -> None:
    """Raise PattersonError unless the checkpoint's model config equals ``config`` (both plain dicts; fields
    added since the checkpoint was written count as their defaults)."""
    saved = normalised_config(with_defaults(state["model_config"]))
    wanted = normalised_config(config)
    if saved != wanted:
        if saved.get("arch") != wanted.get("arch"):
            what = f"a {saved.get('arch')!r} model, not {wanted.get('arch')!r}"
        else:
            diff = sorted(k for k in set(saved) | set(wanted) if saved.get(k) != wanted.get(k))
            what = "another model: " + ", ".join(f"{k}={saved.get(k)!r} (want {wanted.get(k)!r})" for k in diff)
        raise PattersonError(f"{path}: checkpoint is for {what}")


