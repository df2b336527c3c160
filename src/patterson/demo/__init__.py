"""The main job, ``patterson demo``: real chains → two test sets → every phasing method → one report folder.

- :mod:`patterson.demo.run` — :class:`DemoConfig` and :func:`run_demo`: the test sets, the methods, the folder.
- :mod:`patterson.demo.crystals` — the peptide-crystal test set: each crystal alone, every method the same seconds.
- :mod:`patterson.demo.report` — the headline table, ``report.md`` and the plots.
"""

from patterson.demo.report import LABELS, PLOTS, headline_table, report_markdown
from patterson.demo.run import KIND, DemoConfig, DemoResult, is_demo_report, run_demo

__all__ = [
    "KIND",
    "LABELS",
    "PLOTS",
    "DemoConfig",
    "DemoResult",
    "headline_table",
    "is_demo_report",
    "report_markdown",
    "run_demo",
]
