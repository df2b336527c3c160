"""The strand conformers the β-sheet search of :mod:`patterson.phasing.sheets` places: the most common shapes of
5-residue β-strand windows in real protein chains.

Every extended 5-residue window (main chain and Cβ; :func:`peptide_conformers.strand_windows`) of the chains in
``../shared/data/pdb`` is clustered by leader clustering on its internal distances (N, CA, C, O: r.m.s. difference
below ``RADIUS_A``, windows in a fixed random order); the leaders of the ``N_KEEP`` largest clusters, largest
first, are written to ``src/patterson/weights/strands.json`` (coordinates in Å, N, CA, C, O, CB per residue) and
the cluster sizes to ``benchmarks/results/strand_conformers.json``.

    python benchmarks/strand_conformers.py    (about 1 minute on 2 CPU cores)
"""

from __future__ import annotations

import json
import time

import numpy as np
import torch

from _common import RESULTS, ROOT, run_metadata, write_json
from patterson.files import write_text
from peptide_conformers import strand_windows

LENGTH = 5
RADIUS_A = 0.4
N_KEEP = 16
OUT = ROOT / "src" / "patterson" / "weights" / "strands.json"


def leaders(windows: np.ndarray, radius: float, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Leader clustering of windows (W, 5·L, 3) on their main chain's internal distances: the leaders' indices and
    their cluster sizes, largest first."""
    main = np.tile([True, True, True, True, False], windows.shape[1] // 5)
    x = torch.as_tensor(windows[:, main])
    i, j = np.triu_indices(x.shape[1], 1)
    dv = torch.linalg.vector_norm(x[:, i] - x[:, j], dim=-1).float()  # (W, P)
    order = torch.randperm(len(dv), generator=torch.Generator().manual_seed(seed))
    dv = dv[order]
    assigned, chosen = torch.full((len(dv),), -1), []
    threshold = radius * np.sqrt(dv.shape[1])
    for k in range(len(dv)):
        if assigned[k] >= 0:
            continue
        near = (torch.linalg.vector_norm(dv - dv[k], dim=1) < threshold) & (assigned < 0)
        assigned[near] = len(chosen)
        chosen.append(k)
    sizes = torch.bincount(assigned).numpy()
    rank = np.argsort(-sizes, kind="stable")
    return order.numpy()[np.array(chosen)[rank]], sizes[rank]


def main() -> None:
    t0 = time.perf_counter()
    windows = strand_windows(LENGTH)
    index, sizes = leaders(windows, RADIUS_A)
    keep = windows[index[:N_KEEP]]
    keep = keep - keep.mean(axis=1, keepdims=True)
    text = json.dumps({"length": LENGTH, "atoms": ["N", "CA", "C", "O", "CB"], "radius_A": RADIUS_A,
                       "windows": len(windows), "sizes": sizes[:N_KEEP].tolist(),
                       "xyz": np.round(keep, 3).tolist()}, indent=None)  # fmt: skip
    write_text(OUT, text + "\n")
    write_json(RESULTS / "strand_conformers.json", {"run": run_metadata(), "windows": len(windows),
               "radius_A": RADIUS_A, "clusters": len(sizes), "sizes": sizes[:50].tolist(),
               "kept": N_KEEP, "seconds": round(time.perf_counter() - t0, 1)})  # fmt: skip


if __name__ == "__main__":
    main()
