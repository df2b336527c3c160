"""One phasing config for every command that phases: ``solve``, ``evaluate`` and ``demo``; it makes each method's
options (:mod:`patterson.phasing.options`) from the table of defaults."""

from __future__ import annotations

from dataclasses import dataclass

from patterson.errors import PattersonError
from patterson.phasing.options import AMPLITUDES, METHODS, ClassicalOptions, PhasingOptions, method_options
from patterson.phasing.validation import FREE_FRACTION, check_free_fraction

REFINE_CHOICES = (*METHODS, "auto", "hybrid", "fragments", "none")  # the last four: solve only (see SolveConfig)


@dataclass(frozen=True)
class PhasingConfig:
    """How structures are phased.

    Attributes
    ----------
    refine : what refines a network's map: ``hio``, ``raar``, ``rrr`` or ``charge-flip``; ``solve`` also takes
        ``hybrid`` (the network's start and classical phasing from random starts, R-free choosing) and ``none``.
    n_iter, n_starts : iterations per run and random starts (None: each method's defaults,
        :data:`~patterson.phasing.options.METHOD_OPTIONS`).
    seed : the random starts and the free set (the demo: its test sets too).
    free_fraction : share of the measured reflections held out as the free set, where the data flag none.
    amplitudes : what the phasing imposes: ``F``, ``E`` or ``sharpened`` (the map and R-factors stay on F).
    stop_early : charge flipping stops once a start has converged (``solve``'s first route; the method's own
        default otherwise).
    """

    refine: str = "hio"
    n_iter: int | None = None
    n_starts: int | None = None
    seed: int = 0
    free_fraction: float = FREE_FRACTION
    amplitudes: str = "F"
    stop_early: bool = False

    def __post_init__(self) -> None:
        check_free_fraction(self.free_fraction)
        if self.refine not in REFINE_CHOICES:
            raise PattersonError(f"unknown refinement {self.refine!r} (choose from {', '.join(REFINE_CHOICES)})")
        if (self.n_iter is not None and self.n_iter < 1) or (self.n_starts is not None and self.n_starts < 1):
            raise PattersonError("n_iter and n_starts must be at least 1")
        if self.amplitudes not in AMPLITUDES:
            raise PattersonError(f"unknown amplitudes {self.amplitudes!r} (choose from {', '.join(AMPLITUDES)})")

    def options(self, method: str) -> PhasingOptions:
        """The options of ``method`` (``hio``, ``raar``, ``rrr``, ``charge-flip``, ``learned`` or ``histogram``):
        its defaults with this config's iterations and starts where set, its seed and free fraction, and (the
        classical methods) its amplitudes."""
        changes = {k: v for k, v in (("n_iter", self.n_iter), ("n_starts", self.n_starts)) if v is not None}
        changes |= {"seed": self.seed, "free_fraction": self.free_fraction}
        if isinstance(method_options(method), ClassicalOptions):
            changes["amplitudes"] = self.amplitudes
        if self.stop_early and method == "charge-flip":
            changes["stop_early"] = True
        return method_options(method, **changes)
