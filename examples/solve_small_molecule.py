"""Solve a real small-molecule data set to refined atoms and compare them with the published model.

    python examples/solve_small_molecule.py [NAME]

NAME is a folder of ``../shared/data/real/small`` (default ``olex2_sucrose``): its ``NAME.hkl`` and the header-only
``NAME.ins`` are what a crystallographer has before solving. Runs ``patterson.solving.solve`` with its defaults and
prints the verdict, the refined atoms' R1 on the work and free reflections, and how many published non-H atoms lie
within 0.3 Å of a refined one (the plain way: both hands, and every origin that puts a refined atom on the first
published one).
"""

import argparse
from pathlib import Path

import numpy as np

from patterson.cells import frac_distances
from patterson.solving import SolveConfig, solve
from patterson.structures import read_structure
from patterson.symmetry import images

SMALL = Path(__file__).resolve().parents[2] / "shared" / "data" / "real" / "small"

parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
parser.add_argument("name", nargs="?", default="olex2_sucrose")
args = parser.parse_args()

solution = solve(SolveConfig(input=str(SMALL / args.name / f"{args.name}.hkl"), progress=False))
atoms, s = solution.atoms, solution.summary
print(f"{s['verdict']}: {len(atoms)} atoms {s['atoms']['elements']}, R1 {atoms.r1_work:.3f}, "
      f"R1-free {atoms.r1_free:.3f}, in {solution.group.name}, {s['timings_s']['total']:.1f} s")

published = next(p for p in sorted((SMALL / args.name).glob("published.*")))
model = read_structure(published)  # the whole cell, P1
heavy = model.elements != "H"
target = solution.cell.to_fractional(model.xyz[heavy])  # (P, 3)
ours = np.concatenate([images(solution.group, f) for f in atoms.frac])  # every image of every refined atom
best = 0
for hand in (1, -1):  # the model's hand or the other
    moved = (hand * ours) % 1.0
    for shift in target[0] - moved:  # every origin that puts a refined atom on the first published one
        close = frac_distances(target, (moved + shift) % 1.0, solution.cell).min(1) < 0.3
        best = max(best, int(close.sum()))
print(f"published non-H atoms within 0.3 Å of a refined atom: {best} of {int(heavy.sum())} (whole cell)")
