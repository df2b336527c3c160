"""Phasing: classical methods that need no training, the hybrid that refines a network's density with them, and
their scoring on the same footing as the networks.

- :mod:`patterson.phasing.validation` — the free set, R-work / R-free, their random-phase reference, the verdict.
- :mod:`patterson.phasing.methods` — charge flipping, HIO with shrink-wrap, the hybrid (:func:`refine_density`).
- :mod:`patterson.phasing.learned` — the phasing loop with a real-space step inside: a trained
  density-modification network (``learned``) or the non-learned control (``histogram``).
- :mod:`patterson.phasing.evaluate` — ``patterson evaluate --method`` and the side-by-side comparison of methods.
"""

from patterson.phasing.config import REFINE_CHOICES, PhasingConfig
from patterson.phasing.evaluate import (
    COMPARE_METHODS,
    EVAL_METHODS,
    LOOP_METHODS,
    EvaluateConfig,
    MethodRun,
    SplitMaps,
    compare_methods,
    evaluate,
    load_split,
    method_summary,
    phase_maps,
    prediction_batches,
    split_maps,
)
from patterson.phasing.learned import (
    HistogramStep,
    NetworkStep,
    learned,
    learned_step,
    load_step,
    start_error_phases,
)
from patterson.phasing.methods import (
    METHODS,
    PhasingResult,
    charge_flip,
    check_amplitudes,
    gaussian_blur,
    held_out,
    hio,
    patterson_support,
    phase,
    positivity_polish,
    r_factor,
    raar,
    refine_density,
    rrr,
    support_from,
    wilson_estimate,
)
from patterson.phasing.validation import (
    FREE_FRACTION,
    VERDICTS,
    CrossValidation,
    cross_validate,
    free_set,
    verdict,
)

__all__ = [
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
