"""One phasing config for every command that phases: ``solve``, ``evaluate`` and ``demo``."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from patterson.errors import PattersonError
from patterson.phasing.methods import AMPLITUDES, METHODS
from patterson.phasing.validation import FREE_FRACTION, check_free_fraction

REFINE_CHOICES = (*METHODS, "hybrid", "none")  # hybrid and none: solve only (see SolveConfig)


@dataclass(frozen=True)
class PhasingConfig:
    """How structures are phased.

    Attributes
    ----------
    refine : what refines a network's map: ``hio``, ``raar``, ``rrr`` or ``charge-flip``; ``solve`` also takes
        ``hybrid`` (the network's start and classical phasing from random starts, R-free choosing) and ``none``.
    n_iter, n_starts : iterations per run and random starts (None: each method's defaults).
    seed : the random starts and the free set (the demo: its test sets too).
    free_fraction : share of the measured reflections held out as the free set, where the data flag none.
    amplitudes : what the phasing imposes: ``F``, ``E`` or ``sharpened`` (the map and R-factors stay on F).
    """

    refine: str = "hio"
    n_iter: int | None = None
    n_starts: int | None = None
    seed: int = 0
    free_fraction: float = FREE_FRACTION
    amplitudes: str = "F"

    def __post_init__(self) -> None:
        check_free_fraction(self.free_fraction)
        if self.refine not in REFINE_CHOICES:
            raise PattersonError(f"unknown refinement {self.refine!r} (choose from {', '.join(REFINE_CHOICES)})")
        if (self.n_iter is not None and self.n_iter < 1) or (self.n_starts is not None and self.n_starts < 1):
            raise PattersonError("n_iter and n_starts must be at least 1")
        if self.amplitudes not in AMPLITUDES:
            raise PattersonError(f"unknown amplitudes {self.amplitudes!r} (choose from {', '.join(AMPLITUDES)})")

    def runs(self) -> dict[str, Any]:
        """``n_iter`` and ``n_starts`` as keyword arguments, where they are set."""
        return {k: v for k, v in (("n_iter", self.n_iter), ("n_starts", self.n_starts)) if v is not None}
