"""What every phasing method shares around its own cycles: the held-out free set, the random starts, the choice of
the best start by R-free and the :class:`PhasingResult` it returns.

Cross-validation (:mod:`patterson.phasing.validation`): a seeded free set of measured reflections (5%, at least 50
where the data allow, evenly over resolution) is never imposed; it floats like an unmeasured reflection. R-work
and R-free are R = Σ | |F_obs| − k|F_calc| | / Σ |F_obs| over each set, with F_calc the transform of the final,
constrained density (after the flip for charge flipping; after support and positivity for HIO). The best of the
random starts is the one with the lowest R-free (``select="r_work"`` for the comparison), and each structure gets a
verdict: ``solved``, ``uncertain`` or ``not solved``.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass

import numpy as np
import torch

from patterson.cells import Cell
from patterson.errors import PattersonError
from patterson.phasing.amplitudes import check_amplitudes, measured_mask
from patterson.phasing.options import SELECT, PhasingOptions
from patterson.phasing.validation import (
    FREE_FRACTION,
    CrossValidation,
    check_free,
    check_free_fraction,
    cross_validate,
    free_set,
    r_work_free,
    start_agreement,
)

log = logging.getLogger(__name__)


@dataclass
class PhasingResult:
    """Outcome of a phasing run for B structures.

    rho (B, X, Y, Z) density in e/Å³ (F(000) included where known); phi_rad (B, M) phases of the Friedel half;
    f_calc (B, M) structure factors of the final constrained density; free (B, M) bool, the held-out reflections;
    validation: R-work, R-free, their random-phase reference and the verdict (B,); iterations run; seconds taken.
    """

    rho: torch.Tensor
    phi_rad: torch.Tensor
    f_calc: torch.Tensor
    free: torch.Tensor
    validation: CrossValidation
    method: str
    iterations: int
    seconds: float = 0.0

    @property
    def phi_deg(self) -> torch.Tensor:
        return torch.rad2deg(self.phi_rad)

    @property
    def r_work(self) -> torch.Tensor:
        return self.validation.r_work

    @property
    def r_free(self) -> torch.Tensor:
        return self.validation.r_free

    @property
    def verdict(self) -> tuple[str, ...]:
        return self.validation.verdict


def r_factor(f_obs: torch.Tensor, f_calc: torch.Tensor, work: torch.Tensor | None = None) -> torch.Tensor:
    """R = Σ | |F_obs| − k|F_calc| | / Σ |F_obs| per structure over the ``work`` reflections (B, M) bool (default:
    all), with the least-squares scale k; (B,)."""
    work = torch.ones_like(f_obs, dtype=torch.bool) if work is None else work
    return r_work_free(f_obs, f_calc, work, work)[0]


def with_000(hkl: np.ndarray) -> np.ndarray:
    """(1 + M, 3): ``hkl`` (M, 3) with (0, 0, 0) first, for structure factors with F(000)."""
    return np.concatenate([np.zeros((1, 3), dtype=hkl.dtype), hkl])


def random_phases(shape, generator: torch.Generator, dtype, device) -> torch.Tensor:
    """Phases uniform in [0, 2π) of the given shape, drawn on the CPU from ``generator``."""
    return torch.rand(shape, generator=generator, dtype=dtype).to(device) * (2 * math.pi)


def held_out(
    f_obs: torch.Tensor,
    hkl: np.ndarray,
    cell: Cell,
    observed: torch.Tensor | None = None,
    free: torch.Tensor | None = None,
    free_fraction: float = FREE_FRACTION,
    seed: int = 0,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(measured, free), both (B, M) bool: the measured reflections (see :func:`measured_mask`) and the free set
    among them, ``free`` when given, else :func:`~patterson.phasing.validation.free_set` drawn with ``seed``."""
    measured = measured_mask(f_obs, observed, free)
    if free is None:
        free = free_set(hkl, cell, measured, check_free_fraction(free_fraction), seed)
    free = torch.as_tensor(free, device=f_obs.device).bool().expand_as(measured) & measured
    check_free(free, measured)
    return measured, free


def best_of_starts(
    f_calc: torch.Tensor, fo: torch.Tensor, work: torch.Tensor, free: torch.Tensor, n_starts: int, select: str
) -> torch.Tensor:
    """Index (B,) of each structure's best start, by R-free (or R-work with ``select="r_work"``; every start, (B·S,),
    with ``"all"``). Inputs are batched as (B·S, ...); f_calc (B·S, M) is the constrained density's transform
    without F(000)."""
    if select not in SELECT:
        raise PattersonError(f"unknown selection {select!r} (choose from {', '.join(SELECT)})")
    if select == "all":
        return torch.arange(fo.shape[0], device=fo.device)
    r_work, r_free = r_work_free(fo, f_calc, work, free)
    r = (r_free if select == "r_free" else r_work).reshape(-1, n_starts)
    return torch.arange(r.shape[0], device=r.device) * n_starts + r.argmin(-1)


def phasing_result(
    rho, f_calc, fo, work, free, hkl, cell, n_starts: int, select: str, run: tuple[str, int, float], kind: str = "map"
) -> PhasingResult:
    """The :class:`PhasingResult` of each structure's best start (inputs (B·S, ...) as in :func:`best_of_starts`),
    cross-validated (``kind``: what made the phases, for the verdict); run = (method, iterations, the time the
    phasing began)."""
    method, iterations, t0 = run
    pick = best_of_starts(f_calc, fo, work, free, n_starts, select)
    agreement = start_agreement(f_calc, hkl, cell, n_starts)[pick]
    rho, f_calc, fo, work, free = rho[pick], f_calc[pick], fo[pick], work[pick], free[pick]
    validation = cross_validate(fo, f_calc, rho, work, free, hkl, cell, agreement, kind)
    log.debug("%s: R-work %s, R-free %s", method, validation.r_work.tolist(), validation.r_free.tolist())
    return PhasingResult(
        rho=rho,
        phi_rad=torch.angle(f_calc),
        f_calc=f_calc,
        free=free,
        validation=validation,
        method=method,
        iterations=iterations,
        seconds=time.perf_counter() - t0,
    )


@dataclass(frozen=True)
class Starts:
    """A batch of B structures ready to phase from S starts each, batched as (B·S, ...) with start s of structure b
    at b·S + s.

    f_obs (B, M) the checked amplitudes; measured and free (B, M) bool: the measured reflections and the free set
    among them (never imposed); phi (B·S, M) the starting phases; fo (B·S, M) the amplitudes and floating (B·S, M)
    bool the reflections not imposed (unmeasured or free), repeated per start; t0 when phasing began.
    """

    hkl: np.ndarray
    cell: Cell
    f_obs: torch.Tensor
    measured: torch.Tensor
    free: torch.Tensor
    phi: torch.Tensor
    fo: torch.Tensor
    floating: torch.Tensor
    n_starts: int
    t0: float

    @property
    def imposed(self) -> torch.Tensor:
        """(B, M) bool: the work set, the reflections whose amplitudes are imposed."""
        return self.measured & ~self.free

    @property
    def ctype(self) -> torch.dtype:
        """The complex dtype that goes with the amplitudes'."""
        return torch.complex128 if self.f_obs.dtype == torch.float64 else torch.complex64

    def result(
        self, rho: torch.Tensor, f_calc: torch.Tensor, select: str, method: str, iterations: int, kind: str = "map"
    ) -> PhasingResult:
        """The :class:`PhasingResult` of each structure's best start from every start's final map ``rho``
        (B·S, X, Y, Z) and its structure factors ``f_calc`` (B·S, M), cross-validated (``kind``: a map's or a
        model's phases, for the verdict)."""
        free = self.free.repeat_interleave(self.n_starts, 0)
        return phasing_result(rho, f_calc, self.fo, ~self.floating, free, self.hkl, self.cell, self.n_starts, select,
                              (method, iterations, self.t0), kind)  # fmt: skip


def prepare_starts(
    f_obs, hkl: np.ndarray, cell: Cell, shape, options: PhasingOptions, observed=None, free=None, phi_start=None
) -> Starts:
    """Check the amplitudes (see :func:`~patterson.phasing.check_amplitudes`), hold out the free set (see
    :func:`held_out`; ``options.free_fraction`` and ``options.seed``) and make the starts: ``phi_start`` (B, M)
    (one per structure) or ``options.n_starts`` random phase sets drawn with ``options.seed``."""
    t0 = time.perf_counter()
    f_obs = check_amplitudes(f_obs, hkl, cell, shape)
    measured, held = held_out(f_obs, hkl, cell, observed, free, options.free_fraction, options.seed)
    b, m = f_obs.shape
    n_starts = options.n_starts
    if phi_start is not None:
        n_starts = 1
        phi = torch.as_tensor(phi_start, dtype=f_obs.dtype, device=f_obs.device).reshape(b, m)
    else:
        gen = torch.Generator().manual_seed(options.seed)
        phi = random_phases((b * n_starts, m), gen, f_obs.dtype, f_obs.device)
    floating = ~(measured & ~held)
    fo, floating = f_obs.repeat_interleave(n_starts, 0), floating.repeat_interleave(n_starts, 0)
    return Starts(hkl, cell, f_obs, measured, held, phi, fo, floating, n_starts, t0)
