"""Phasing: classical methods that need no training, the hybrid that refines a network's density with them, and
their scoring on the same footing as the networks.

- :mod:`patterson.phasing.options` — how each method runs: one frozen options class per family, validated once,
  and the table of every method's defaults (:data:`METHOD_OPTIONS`); :class:`PhasingConfig` makes them for the
  commands.
- :mod:`patterson.phasing.amplitudes` — the amplitudes imposed: checks, Wilson plot, E-values, F(000).
- :mod:`patterson.phasing.starts` — the free set, the random starts, the best start by R-free, the result.
- :mod:`patterson.phasing.flipping` — charge flipping and the positivity polish.
- :mod:`patterson.phasing.dualspace` — dual-space direct methods (SHELXD-like) at atomic resolution.
- :mod:`patterson.phasing.projections` — HIO, RAAR and RRR with a shrink-wrap support.
- :mod:`patterson.phasing.methods` — the classical methods by name, the hybrid (:func:`refine_density`).
- :mod:`patterson.phasing.learned` — the phasing loop with a real-space step inside: a trained
  density-modification network (``learned``) or the non-learned control (``histogram``).
- :mod:`patterson.phasing.validation` — the free set, R-work / R-free, their random-phase reference, the verdict.
- :mod:`patterson.phasing.evaluate` — ``patterson evaluate``: one method scored on a stored dataset split.
- :mod:`patterson.phasing.compare` — methods side by side on the same structures (the demo, the benchmarks).
"""

from patterson.phasing.amplitudes import (
    check_amplitudes,
    electron_counts,
    measured_mask,
    normalised_amplitudes,
    wilson_estimate,
)
from patterson.phasing.compare import (
    COMPARE_METHODS,
    LOOP_METHODS,
    MethodRun,
    SplitMaps,
    compare_methods,
    load_split,
    method_summary,
    phase_maps,
    split_maps,
)
from patterson.phasing.config import REFINE_CHOICES, PhasingConfig
from patterson.phasing.dualspace import dual_space
from patterson.phasing.evaluate import EVAL_METHODS, EvaluateConfig, evaluate, prediction_batches
from patterson.phasing.flipping import charge_flip, positivity_polish
from patterson.phasing.learned import (
    HistogramStep,
    NetworkStep,
    learned,
    learned_step,
    load_step,
    start_error_phases,
)
from patterson.phasing.methods import phase, refine_density
from patterson.phasing.options import (
    METHOD_OPTIONS,
    METHODS,
    ClassicalOptions,
    DualSpaceOptions,
    FlipOptions,
    LearnedOptions,
    PhasingOptions,
    SupportOptions,
    method_options,
)
from patterson.phasing.projections import gaussian_blur, hio, patterson_support, raar, rrr, support_from
from patterson.phasing.starts import PhasingResult, held_out, r_factor
from patterson.phasing.validation import (
    FREE_FRACTION,
    VERDICTS,
    CrossValidation,
    cross_validate,
    free_set,
    verdict,
)

__all__ = [
    "METHOD_OPTIONS",
    "ClassicalOptions",
    "DualSpaceOptions",
    "FlipOptions",
    "LearnedOptions",
    "PhasingOptions",
    "SupportOptions",
    "electron_counts",
    "measured_mask",
    "method_options",
    "normalised_amplitudes",
    "REFINE_CHOICES",
    "PhasingConfig",
    "COMPARE_METHODS",
    "CrossValidation",
    "FREE_FRACTION",
    "VERDICTS",
    "cross_validate",
    "free_set",
    "held_out",
    "verdict",
    "EVAL_METHODS",
    "LOOP_METHODS",
    "METHODS",
    "HistogramStep",
    "NetworkStep",
    "learned",
    "learned_step",
    "load_step",
    "start_error_phases",
    "MethodRun",
    "EvaluateConfig",
    "PhasingResult",
    "SplitMaps",
    "charge_flip",
    "dual_space",
    "check_amplitudes",
    "compare_methods",
    "evaluate",
    "gaussian_blur",
    "hio",
    "load_split",
    "split_maps",
    "method_summary",
    "patterson_support",
    "phase",
    "phase_maps",
    "positivity_polish",
    "prediction_batches",
    "r_factor",
    "raar",
    "refine_density",
    "rrr",
    "support_from",
    "wilson_estimate",
]
