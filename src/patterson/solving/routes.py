"""The routes ``solve --refine auto`` tries, cheapest first, and how their outcomes rank.

Where atoms can be refined (d_min ≤ :data:`~patterson.solving.structure.ATOM_RESOLUTION` and the cell contents known):

1. charge flipping on E, quick: :data:`FLIP_STARTS` starts on a d_min/2 grid, stopping once one has converged;
2. charge flipping on E with every start and cycle on the d_min/3 grid;
3. at d_min ≤ :data:`DUAL_SPACE_RESOLUTION`, dual-space phasing (random and Patterson-seeded atoms, random omit,
   its own time budget): what solves the structures flipping does not, peptides and heavy-atom structures;
4. the hybrid: the shipped networks' starts and HIO from random starts.

Elsewhere the hybrid alone. With a sequence (``solve --sequence``) the fragments route comes last: ideal strands
of the sequence placed, built out and refined (:func:`~patterson.phasing.peptide.fragment_phasing`), the most
expensive; with a model file (``--fragment``) that model placed instead. ``solve`` stops at the first route whose
verdict is ``solved``.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

from patterson.solving.structure import ATOM_RESOLUTION

FLIP_STARTS = 2  # the first route's charge-flipping starts; it stops once one has converged (measured: 12/12)
FLIP_SAMPLE_RATE = 2.0  # the first route flips on a grid of spacing d_min/2 (Nyquist); the map and peaks keep d_min/3
DUAL_SPACE_RESOLUTION = 1.2  # Å: dual-space phasing needs atoms resolved (Sheldrick's rule)


def routes(config: Any, composition: dict[str, float] | None, d_min: float) -> list[tuple[str, Any]]:
    """The (name, :class:`~patterson.solving.SolveConfig`) routes to try in order: the one asked for, or for
    ``auto`` the list of the module docstring."""
    phasing = config.phasing
    if phasing.refine != "auto":
        return [(phasing.refine, config)]

    def classical(**changes) -> Any:
        return dataclasses.replace(config, phasing=dataclasses.replace(phasing, **changes), checkpoint="none")

    hybrid = dataclasses.replace(config, phasing=dataclasses.replace(phasing, refine="hybrid"))
    name = "fragment model placed" if config.fragment else "fragments from the sequence"
    last = [(name, classical(refine="fragments"))] if config.sequence or config.fragment else []
    if not composition or d_min > ATOM_RESOLUTION:
        return [("hybrid", hybrid), *last]

    chosen = [("charge flipping on E", classical(refine="charge-flip", amplitudes="E", n_starts=FLIP_STARTS,
                                                  stop_early=True)),
              ("charge flipping on E, all starts", classical(refine="charge-flip", amplitudes="E"))]  # fmt: skip
    if d_min <= DUAL_SPACE_RESOLUTION:
        chosen.append(("dual-space", classical(refine="dual-space")))
    return [*chosen, ("hybrid", hybrid), *last]


def rank(summary: dict) -> tuple:
    """Order of routes by their summaries: solved first, then refined atoms' R1-free, then the map's R-free."""
    r1 = (summary["atoms"] or {}).get("r1_free")
    verdict = ("solved", "uncertain", "not solved").index(summary["verdict"])
    return (verdict, r1 if r1 is not None else math.inf, summary["r_free"])
