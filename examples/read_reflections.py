"""What a reflection file holds, as patterson reads it: the real peptide crystal 5e5z by default.

    python examples/read_reflections.py [FILE] [--columns LABEL[,SIGLABEL]]

Reads an MTZ, SF-mmCIF or SHELX file, merges it and expands it to P1 as ``patterson solve`` does, and prints the
cell, the space group, the columns taken, the resolution and the completeness.
"""

import argparse
from pathlib import Path

import numpy as np

from patterson.physics import miller_indices
from patterson.solving import prepare_data, read_reflections

DEFAULT = Path(__file__).resolve().parents[2] / "shared" / "data" / "real" / "5e5z" / "5e5z.mtz"

parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
parser.add_argument("file", nargs="?", default=str(DEFAULT))
parser.add_argument("--columns", default=None)
args = parser.parse_args()

refl = read_reflections(args.file, columns=args.columns)
data = prepare_data(refl)
d = refl.cell.d_spacing(refl.hkl)
expected = len(miller_indices(data.cell, data.d_min))  # the Friedel half of P1 to the same resolution
print(f"{refl.source}: {refl.kind}s {', '.join(refl.labels)}, {len(refl.hkl)} reflections")
print(f"cell {refl.cell.text}, space group {refl.spacegroup} ({len(refl.rotations)} operators)")
print(f"resolution {d.max():.2f}–{d.min():.2f} Å; in P1: {len(data.hkl)} of {expected} reflections "
      f"({100 * len(data.hkl) / expected:.1f}% complete), mean F {np.mean(data.f):.1f}")
for warning in refl.warnings:
    print("warning:", warning)
