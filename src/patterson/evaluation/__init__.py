"""Evaluation: how every method in the project is scored, the way crystallographers score maps.

- :mod:`~patterson.evaluation.metrics`: CCP4 cphasematch's origin and hand search (FFT peak on a fine grid, then
  continuous refinement), Pearson map CC, phase error overall and per resolution shell, the chance level.
- :mod:`~patterson.evaluation.peaks`: peaks above a fraction of the maximum, interatomic vectors, atom recovery.
- :mod:`~patterson.evaluation.report`: the metrics.json summary, per-example CSV, report.md and plots.
- :mod:`~patterson.evaluation.run`: ``evaluate_predictions`` (a report folder from a stream of batches) and
  ``compare_maps`` (two map files). What feeds it from a stored dataset, for networks and phasing methods alike, is
  :func:`patterson.phasing.evaluate` (a later stage: it reads datasets and applies trained networks).

Formulas and the metrics.json schema: docs/evaluation.md.
"""

from patterson.evaluation.metrics import (
    WEIGHTS,
    Alignment,
    PairScores,
    align,
    apply_alignment_f,
    apply_alignment_map,
    central_region_mask,
    chance_scores,
    map_cc,
    phase_difference_deg,
    random_phase_maps,
    score_f,
    score_maps,
    shift_map,
)
from patterson.evaluation.peaks import (
    REPORT_THRESHOLD,
    Peaks,
    VectorMatch,
    atom_recovery,
    atoms_found,
    compare_vectors,
    find_peaks,
    interatomic_vectors,
)
from patterson.evaluation.report import SHELL_THRESHOLD_DEG, SOLVED_THRESHOLD_DEG, metrics_summary
from patterson.evaluation.run import (
    CompareConfig,
    Comparison,
    EvalBatch,
    ReportOptions,
    compare_maps,
    evaluate_predictions,
    finest_d_min,
)

__all__ = [
    "REPORT_THRESHOLD",
    "SHELL_THRESHOLD_DEG",
    "SOLVED_THRESHOLD_DEG",
    "WEIGHTS",
    "Alignment",
    "CompareConfig",
    "Comparison",
    "EvalBatch",
    "PairScores",
    "Peaks",
    "VectorMatch",
    "align",
    "apply_alignment_f",
    "apply_alignment_map",
    "atom_recovery",
    "atoms_found",
    "central_region_mask",
    "chance_scores",
    "compare_maps",
    "compare_vectors",
    "evaluate_predictions",
    "ReportOptions",
    "find_peaks",
    "finest_d_min",
    "interatomic_vectors",
    "map_cc",
    "metrics_summary",
    "phase_difference_deg",
    "random_phase_maps",
    "score_f",
    "score_maps",
    "shift_map",
]
