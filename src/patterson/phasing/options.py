"""How a phasing method runs: one frozen options class per family, validated once, and one table of defaults.

- :class:`PhasingOptions` — what every method shares: iterations, random starts, the seed (starts and free set),
  the free fraction and how the best start is chosen.
- :class:`ClassicalOptions` — what the classical methods add: the amplitudes imposed (F, E, sharpened), centric
  phases, the final polish.
- :class:`FlipOptions` (charge flipping), :class:`SupportOptions` (HIO, RAAR, RRR: the projections onto a support),
  :class:`LearnedOptions` (the loop with a real-space step) and :class:`DualSpaceOptions` (dual-space direct
  methods) — each family's own.

:data:`METHOD_OPTIONS` holds each method's defaults; the CLI help, the demo report and the benchmarks read them
there. A bad value is a one-line :class:`~patterson.errors.PattersonError` when the options are made. The problem
itself (amplitudes, reflections, cell, grid, F(000), starting phases, measured and free reflections) is no option:
the methods take it as arguments.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from patterson.errors import PattersonError
from patterson.phasing.validation import FREE_FRACTION, check_free_fraction

METHODS = ("charge-flip", "hio", "raar", "rrr", "dual-space")  # the classical methods, by name
SCHEMES = {"hio": 0.9, "raar": 0.85, "rrr": 0.5}  # the updates of the support methods and their default β
LOOP_SCHEMES = ("relaxed", "rrr")  # the updates of the learned loop
SELECT = ("r_free", "r_work", "all")  # how the best of several starts is chosen ("all": keep every start)
AMPLITUDES = ("F", "E", "sharpened")  # what the phasing imposes: see :func:`~patterson.phasing.normalised_amplitudes`
POLISHES = ("positivity", "lde")
# δ/σ by what is flipped; measured on 12 atoms in a 10 Å cell at 1 Å (tests/test_phasing.py's problem, 4 starts):
# F solved at 0.8–1.3 (best 0.8), E at 1.1–1.3 but not at 0.8, sharpened at 0.8–1.3; all fail at 1.6
DELTA_SIGMA = {"F": 0.8, "E": 1.2, "sharpened": 0.8}


def _choice(name: str, value: str, choices) -> None:
    if value not in choices:
        raise PattersonError(f"unknown {name} {value!r} (choose from {', '.join(choices)})")


def _need(ok: bool, message: str) -> None:
    if not ok:
        raise PattersonError(message)


@dataclass(frozen=True, kw_only=True)
class PhasingOptions:
    """What every phasing method shares.

    Attributes
    ----------
    n_iter : iterations per start.
    n_starts : random starts per structure (one when starting phases are given).
    seed : the random starts and the free set.
    free_fraction : share of the measured reflections held out as the free set, where none is given.
    select : ``r_free`` (default) or ``r_work``: how the best start is chosen; ``all`` keeps every start (results
        (B·S, ...), start s of structure b at b·S + s).
    """

    n_iter: int = 400
    n_starts: int = 4
    seed: int = 0
    free_fraction: float = FREE_FRACTION
    select: str = "r_free"

    def __post_init__(self) -> None:
        _need(self.n_iter >= 1 and self.n_starts >= 1, f"n_iter and n_starts must be at least 1 (got {self.n_iter}, "
              f"{self.n_starts})")  # fmt: skip
        check_free_fraction(self.free_fraction)
        _choice("selection", self.select, SELECT)

    def replace(self, **changes: Any) -> PhasingOptions:
        """The same options with ``changes``; an option this family lacks is a one-line PattersonError."""
        names = {f.name for f in dataclasses.fields(self)}
        unknown = sorted(set(changes) - names)
        _need(not unknown, f"{type(self).__name__} has no option {', '.join(unknown)} (it has {', '.join(names)})")
        return dataclasses.replace(self, **changes)

    def as_dict(self) -> dict[str, Any]:
        """Every option by name (for reports and results files)."""
        return dataclasses.asdict(self)


@dataclass(frozen=True, kw_only=True)
class ClassicalOptions(PhasingOptions):
    """What the classical methods add to :class:`PhasingOptions`.

    Attributes
    ----------
    amplitudes : imposed during the ``n_iter`` iterations: ``F``, ``E`` or ``sharpened``
        (:func:`~patterson.phasing.normalised_amplitudes`); the polish, the map and the R-factors stay on F.
    centric : phases 0 or π only (a centrosymmetric structure with its inversion centre at the origin).
    n_polish : final error-reduction cycles with positivity on F.
    """

    amplitudes: str = "F"
    centric: bool = False
    n_polish: int = 30

    def __post_init__(self) -> None:
        super().__post_init__()
        _choice("amplitudes", self.amplitudes, AMPLITUDES)
        _need(self.n_polish >= 0, f"n_polish must be at least 0 (got {self.n_polish})")


@dataclass(frozen=True, kw_only=True)
class FlipOptions(ClassicalOptions):
    """Charge flipping (:func:`~patterson.phasing.charge_flip`).

    Attributes
    ----------
    delta_sigma : δ = delta_sigma · σ(ρ), the flipping threshold (None: :data:`DELTA_SIGMA` of the amplitudes).
    delta_fraction : δ from the map instead: the value below which this share of the voxels lies (None: from σ).
    weak_fraction : share of the weakest reflections that keep |F_calc| and get +90° on their phase (centric: keep
        their sign).
    polish : ``positivity`` (error reduction with ρ ≥ 0) or ``lde`` (low-density elimination, Shiono & Woolfson
        1992: ρ(1 − exp(−ρ²/2ρc²)) with ρc = δ).
    restarts : split the ``n_iter`` budget in ``restarts + 1`` parts; a start not converged by the end of a part
        begins again from new random phases.
    stop_early : stop once a start has converged (and has run a few more cycles).
    """

    n_iter: int = 300
    delta_sigma: float | None = None
    delta_fraction: float | None = None
    weak_fraction: float = 0.2
    polish: str = "positivity"
    restarts: int = 0
    stop_early: bool = False

    def __post_init__(self) -> None:
        super().__post_init__()
        _choice("polish", self.polish, POLISHES)
        _need(self.delta_sigma is None or self.delta_sigma > 0, f"delta_sigma must be > 0 (got {self.delta_sigma})")
        _need(self.delta_fraction is None or 0 < self.delta_fraction < 1,
              f"delta_fraction must lie in (0, 1) (got {self.delta_fraction})")  # fmt: skip
        _need(0 <= self.weak_fraction < 1, f"weak_fraction must lie in [0, 1) (got {self.weak_fraction})")
        _need(self.restarts >= 0, f"restarts must be at least 0 (got {self.restarts})")

    @property
    def threshold_sigma(self) -> float:
        """δ/σ in use: ``delta_sigma``, else :data:`DELTA_SIGMA` of the amplitudes flipped."""
        return DELTA_SIGMA[self.amplitudes] if self.delta_sigma is None else float(self.delta_sigma)


@dataclass(frozen=True, kw_only=True)
class SupportOptions(ClassicalOptions):
    """The support methods (:func:`~patterson.phasing.hio`, ``raar``, ``rrr``): two projections, an update.

    Attributes
    ----------
    scheme : the update between the projections: ``hio`` (Fienup 1982), ``raar`` (Luke 2005) or ``rrr`` (Elser's
        reflect-reflect-relax).
    beta : the feedback (None: :data:`SCHEMES` of the scheme: HIO 0.9, RAAR 0.85, RRR's step 0.5).
    shrink_every, threshold, sigma_start, sigma_end : the shrink-wrap schedule: every ``shrink_every`` iterations
        (0: never) the support becomes the map blurred by σ (Å, narrowing linearly from ``sigma_start`` to
        ``sigma_end``) above ``threshold`` × its maximum.
    support_fraction : share of the cell in the starting support from the Patterson map (of the work set).
    """

    scheme: str = "hio"
    beta: float | None = None
    shrink_every: int = 20
    threshold: float = 0.15
    sigma_start: float = 2.0
    sigma_end: float = 0.8
    support_fraction: float = 0.3

    def __post_init__(self) -> None:
        super().__post_init__()
        _choice("update scheme", self.scheme, SCHEMES)
        _need(self.beta is None or self.beta > 0, f"beta must be > 0 (got {self.beta})")
        _need(self.shrink_every >= 0, f"shrink_every must be at least 0 (got {self.shrink_every})")
        _need(0 <= self.threshold < 1, f"threshold must lie in [0, 1) (got {self.threshold})")
        _need(self.sigma_start > 0 and self.sigma_end > 0,
              f"sigma_start and sigma_end must be > 0 Å (got {self.sigma_start}, {self.sigma_end})")  # fmt: skip
        _need(0 < self.support_fraction <= 1, f"support_fraction must lie in (0, 1] (got {self.support_fraction})")

    @property
    def feedback(self) -> float:
        """β in use: ``beta``, else the scheme's default (:data:`SCHEMES`)."""
        return SCHEMES[self.scheme] if self.beta is None else float(self.beta)


@dataclass(frozen=True, kw_only=True)
class LearnedOptions(PhasingOptions):
    """The loop with a real-space step (:func:`~patterson.phasing.learned`).

    Attributes
    ----------
    relax : λ in (0, 1], the step's relaxation.
    scheme : ``relaxed`` (ρ ← P_M(ρ + λ(D(ρ) − ρ))) or ``rrr`` (reflect-reflect-relax with D as the real-space
        constraint).
    n_finish : cycles of error reduction with positivity after the loop (0: none).
    max_seconds : when > 0, the loop runs until this many seconds have passed instead of ``n_iter`` iterations
        (one at least): a step and its control given the same time.
    """

    n_iter: int = 40
    relax: float = 1.0
    scheme: str = "relaxed"
    n_finish: int = 20
    max_seconds: float = 0.0

    def __post_init__(self) -> None:
        super().__post_init__()
        _choice("loop scheme", self.scheme, LOOP_SCHEMES)
        _need(0 < self.relax <= 1, f"the learned loop needs 0 < relax <= 1 (got {self.relax})")
        _need(self.n_finish >= 0, f"n_finish must be at least 0 (got {self.n_finish})")
        _need(self.max_seconds >= 0, f"max_seconds must not be negative (got {self.max_seconds})")


DS_WEIGHTS = ("sim", "none")  # the dual-space E-map's weights
ATOM_WEIGHTS = ("mixed", "equal", "height")  # the dual-space point atoms' weights
DS_SYMMETRY = ("alternate", "group", "p1")  # where the dual-space trials work


@dataclass(frozen=True, kw_only=True)
class DualSpaceOptions(PhasingOptions):
    """Dual-space direct methods (:func:`~patterson.phasing.dual_space`, as SHELXD and SnB) for atomic-resolution
    data (d_min ≲ 1.2 Å).

    Attributes
    ----------
    n_iter : dual-space cycles per trial.
    n_starts : trials run together as one batch.
    n_trials : the most trials per structure.
    max_seconds : time budget per structure in seconds: no batch starts that would end after it, judged by the
        last batch (0: none; the result then depends on nothing but the data and the seed).
    n_atoms : peaks taken from each E-map: the atoms expected in the cell (None: F(000) / 6.6 when F(000) is given,
        else a Wilson estimate of the work set); in the space group, divided by its operators.
    omit_fraction : share of the peaks left out at random each cycle (SHELXD's random omission).
    e_min, max_strong : the E-map holds the work reflections with |E| ≥ ``e_min``, at most ``max_strong`` of them
        (the strongest).
    n_tangent, fixed_fraction : the tangent expansion: the phases of the ``fixed_fraction`` of the strong
        reflections with the largest |E_calc| are kept, the others come from ``n_tangent`` cycles of the tangent
        formula (0: none; the E-map then takes the phases of E_calc with ``weights``).
    weights : without the tangent expansion, the E-map's weights: ``sim`` (Sim's, with σA from CC) or ``none``.
    atom_weights : the point atoms' weights: ``equal``, ``height`` (the E-map peak's height relative to the median,
        for heavy atoms) or ``mixed`` (every other trial by height).
    symmetry : where the trials work, given the space group: ``alternate`` (batches in the group and in P1 by
        turns), ``group`` or ``p1``.
    patterson : in P1, seed half of each batch from a Patterson superposition on one of its strongest vectors.
    n_extend : cycles that complete each batch's best trial (1.5× the peaks, weighted by height, none omitted).
    stop_cc, stop_weak, stop_margin : stop once an extended trial reaches CC_all ``stop_cc`` and CC_weak
        ``stop_weak``, its CC_weak above the median of every trial so far by ``stop_margin`` (after a batch in each
        group); or once an extended trial reached ``stop_cc`` and ``stop_weak`` and ``patience`` batches since have
        not bettered it (0: never).
    n_polish : cycles of positivity on F that bring the best trial's phases back to F.
    """

    n_iter: int = 60
    n_starts: int = 16
    n_trials: int = 2000
    max_seconds: float = 240.0
    n_atoms: int | None = None
    omit_fraction: float = 0.3
    e_min: float = 1.2
    max_strong: int = 6000
    weights: str = "sim"
    atom_weights: str = "mixed"
    patterson: bool = True
    stop_cc: float = 0.6
    stop_weak: float = 0.25
    stop_margin: float = 0.2
    patience: int = 6
    n_extend: int = 20
    n_polish: int = 20
    n_tangent: int = 3
    fixed_fraction: float = 0.4
    symmetry: str = "alternate"

    def __post_init__(self) -> None:
        super().__post_init__()
        _choice("E-map weights", self.weights, DS_WEIGHTS)
        _choice("atom weights", self.atom_weights, ATOM_WEIGHTS)
        _choice("symmetry", self.symmetry, DS_SYMMETRY)
        _need(self.n_trials >= 1, f"n_trials must be at least 1 (got {self.n_trials})")
        _need(self.max_seconds >= 0, f"max_seconds must be at least 0 (got {self.max_seconds})")
        _need(self.n_atoms is None or self.n_atoms >= 2, f"n_atoms must be at least 2 (got {self.n_atoms})")
        _need(0 <= self.omit_fraction < 1, f"omit_fraction must lie in [0, 1) (got {self.omit_fraction})")
        _need(self.e_min >= 0 and self.max_strong >= 10,
              f"e_min must be at least 0 and max_strong at least 10 (got {self.e_min}, {self.max_strong})")  # fmt: skip
        _need(-1 <= self.stop_cc <= 1 and -1 <= self.stop_weak <= 1 and self.stop_margin >= 0, "stop_cc and "
              f"stop_weak must lie in [-1, 1], stop_margin be at least 0 (got {self.stop_cc}, {self.stop_weak}, "
              f"{self.stop_margin})")  # fmt: skip
        _need(self.n_polish >= 1, f"n_polish must be at least 1 (got {self.n_polish})")
        _need(self.n_extend >= 1, f"n_extend must be at least 1 (got {self.n_extend})")
        _need(self.patience >= 0, f"patience must be at least 0 (got {self.patience})")
        _need(self.n_tangent >= 0, f"n_tangent must be at least 0 (got {self.n_tangent})")
        _need(0 < self.fixed_fraction <= 1, f"fixed_fraction must lie in (0, 1] (got {self.fixed_fraction})")


# every method's defaults, by name: what the CLI help, the demo report and the benchmarks read
METHOD_OPTIONS: dict[str, PhasingOptions] = {
    "charge-flip": FlipOptions(),
    "hio": SupportOptions(),
    "raar": SupportOptions(scheme="raar"),
    "rrr": SupportOptions(scheme="rrr"),
    "learned": LearnedOptions(),
    "histogram": LearnedOptions(),
    "dual-space": DualSpaceOptions(),
}


def method_options(method: str, **changes: Any) -> PhasingOptions:
    """The options of ``method`` (a key of :data:`METHOD_OPTIONS`): its defaults with ``changes``."""
    _choice("phasing method", method, METHOD_OPTIONS)
    return METHOD_OPTIONS[method].replace(**changes)


def checked(options: PhasingOptions | None, family: type[PhasingOptions], method: str) -> PhasingOptions:
    """``options``, or the defaults of ``family`` when None; options of another family are a one-line
    PattersonError that names ``method``."""
    if options is None:
        return family()
    if not isinstance(options, family):
        raise PattersonError(f"{method} takes {family.__name__}, not {type(options).__name__}")
    return options


def options_for(method: str, options: PhasingOptions | None) -> PhasingOptions:
    """``options`` checked against ``method`` (its family; a support method's scheme set to ``method``), or the
    method's defaults when None."""
    default = method_options(method)
    if options is None:
        return default
    options = checked(options, type(default), method)
    return options.replace(scheme=method) if isinstance(options, SupportOptions) else options


def defaults_text(method: str, names: tuple[str, ...] = ("n_starts", "n_iter")) -> str:
    """``name value, ...`` of a method's defaults: for help texts."""
    options = method_options(method)
    return ", ".join(f"{name} {getattr(options, name)}" for name in names)
