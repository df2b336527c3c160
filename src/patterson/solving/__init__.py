"""Solving real reflection data: read MTZ, SF-mmCIF or SHELX files, phase them, write a map, phases and peaks.

The pipeline of ``patterson solve``:

1. read observed amplitudes or intensities, the cell and the space group (:func:`read_reflections`);
2. merge symmetry equivalents, turn intensities into amplitudes (French–Wilson), expand to P1 and put everything
   on the Friedel half that :func:`patterson.physics.miller_indices` uses (:func:`prepare_data`);
3. phase: a network's density from the Patterson map (when a checkpoint is found) refined by HIO or charge
   flipping, or classical phasing from random starts (:func:`solve`);
4. write ``density.ccp4``, ``phases.mtz``, ``peaks.pdb``, ``peaks.csv`` and ``summary.json`` whole or not at all
   (:func:`write_solution`). Details and the rules for choosing columns: docs/solving.md.
"""

from patterson.shelx import parse_symm
from patterson.solving.data import ObservedData, french_wilson, merge_and_expand, prepare_data
from patterson.solving.network import TRANSFERS, model_grid, predict_density
from patterson.solving.output import OUTPUT_FILES, peaks_structure, solve_to_folder, write_solution
from patterson.solving.readers import read_reflections
from patterson.solving.reflections import Reflections, spacegroup_rotations
from patterson.solving.shelx_data import read_ins
from patterson.solving.solve import REFINE_METHODS, Solution, SolveConfig, figure_of_merit, solve

__all__ = [
    "OUTPUT_FILES",
    "REFINE_METHODS",
    "TRANSFERS",
    "ObservedData",
    "Reflections",
    "SolveConfig",
    "Solution",
    "figure_of_merit",
    "french_wilson",
    "merge_and_expand",
    "model_grid",
    "parse_symm",
    "peaks_structure",
    "predict_density",
    "prepare_data",
    "read_ins",
    "read_reflections",
    "solve",
    "solve_to_folder",
    "spacegroup_rotations",
    "write_solution",
]
