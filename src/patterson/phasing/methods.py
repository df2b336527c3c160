"""The classical phasing methods by name, and the hybrid: a network's density refined by one of them.

Every method takes observed amplitudes on the Friedel half (``f_obs`` (B, M) ≥ 0, ``hkl`` (M, 3)), the cell, a
grid and its options (:mod:`patterson.phasing.options`), and returns a
:class:`~patterson.phasing.starts.PhasingResult`: the density, the phases and the figure of merit R against the
observed amplitudes, so that evaluation scores all methods alike. Batches and several random starts run together
as one tensor batch on any device. Where each family lives:

- :mod:`patterson.phasing.amplitudes` — checks, Wilson plot, E-values, F(000), the measured reflections;
- :mod:`patterson.phasing.starts` — the free set, the random starts, the best start by R-free, the result;
- :mod:`patterson.phasing.flipping` — charge flipping and the positivity polish;
- :mod:`patterson.phasing.projections` — HIO, RAAR and RRR with a shrink-wrap support;
- :mod:`patterson.phasing.learned` — the loop with a real-space step (a network, or the histogram control).

- :mod:`patterson.phasing.dualspace` — dual-space direct methods (SHELXD-like) at atomic resolution.

New families (fragments, refinement) get a module of their own and an options class.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch

from patterson.cells import Cell
from patterson.errors import PattersonError
from patterson.maps import f_from_density
from patterson.phasing.dualspace import dual_space
from patterson.phasing.flipping import charge_flip
from patterson.phasing.options import METHODS, PhasingOptions, options_for
from patterson.phasing.projections import hio, support_from
from patterson.phasing.starts import PhasingResult


def phase(
    method: str,
    f_obs: torch.Tensor,
    hkl: np.ndarray,
    cell: Cell,
    shape,
    options: PhasingOptions | None = None,
    *,
    f000: torch.Tensor | float | None = None,
    **data,
) -> PhasingResult:
    """Run a classical method by name (``"charge-flip"``, ``"hio"``, ``"raar"``, ``"rrr"`` or ``"dual-space"``) with
    its options (None: its defaults, :data:`~patterson.phasing.options.METHOD_OPTIONS`). ``f000`` goes to the support
    methods and dual-space (charge flipping lets F(000) float); ``data`` (phi_start, observed, free, progress) to the
    method."""
    if method not in METHODS:
        raise PattersonError(f"unknown phasing method {method!r} (choose from {', '.join(METHODS)})")
    options = options_for(method, options)
    if method == "charge-flip":
        return charge_flip(f_obs, hkl, cell, shape, options, **data)
    if method == "dual-space":
        return dual_space(f_obs, hkl, cell, shape, options, f000=f000, **data)
    return hio(f_obs, hkl, cell, shape, options, f000=f000, **data)


def refine_density(
    rho_start: torch.Tensor,
    f_obs: torch.Tensor,
    hkl: np.ndarray,
    cell: Cell,
    method: str = "hio",
    options: PhasingOptions | None = None,
    *,
    f000: torch.Tensor | float | None = None,
    observed: torch.Tensor | None = None,
    free: torch.Tensor | None = None,
    progress: Callable[[int, int], None] | None = None,
    support_threshold: float = 0.15,
    support_sigma: float = 1.0,
) -> PhasingResult:
    """Refine a predicted density (B, X, Y, Z) against observed amplitudes: its phases start the refinement (one
    start) and, for the support methods (HIO, RAAR, RRR), its shape blurred by ``support_sigma`` Å and cut at
    ``support_threshold`` × its maximum is the starting support.

    ``method`` is one of :data:`~patterson.phasing.options.METHODS`, ``options`` its options (None: its defaults;
    400 iterations for the support methods, as for one classical start: on dense-protein 200 were too few);
    ``f000``, ``observed``, ``free`` and ``progress`` as for :func:`~patterson.phasing.hio`.
    """
    if method not in METHODS:
        raise PattersonError(f"unknown refinement method {method!r} (choose from {', '.join(METHODS)})")
    options = options_for(method, options)
    rho_start = torch.as_tensor(rho_start)
    if rho_start.ndim == 3:
        rho_start = rho_start[None]
    if not torch.isfinite(rho_start).all():
        raise PattersonError("the starting density contains NaN or infinite values")
    shape = tuple(rho_start.shape[-3:])
    f_obs = torch.as_tensor(f_obs)
    rho_start = rho_start.to(dtype=f_obs.dtype if f_obs.is_floating_point() else torch.float64)
    phi = torch.angle(f_from_density(rho_start, hkl, cell))  # (B, M)
    data = {"phi_start": phi, "observed": observed, "free": free, "progress": progress}
    if method == "charge-flip":
        return charge_flip(f_obs, hkl, cell, shape, options, **data)
    if method == "dual-space":  # the start's phases seed one trial
        return dual_space(f_obs, hkl, cell, shape, options, f000=f000, **data)
    support = support_from(rho_start, cell, support_sigma, support_threshold)
    return hio(f_obs, hkl, cell, shape, options, f000=f000, support_start=support, **data)


__all__ = ["METHODS", "phase", "refine_density"]
