"""The Patterson map of a dipeptide in a 12 Å cell, and its origin peak, written as CCP4 maps for Coot or ChimeraX.

    python examples/patterson_map.py [--out patterson-example]

Cuts the first dipeptide out of an embedded protein chain, centres it in the cell of the paper's dataset 2, and
writes the band-limited density and its Patterson map (the Fourier transform of |F|², which the measured
amplitudes alone give) to d_min 1.5 Å.
"""

import argparse
from pathlib import Path

import numpy as np

from patterson.cells import Cell, centre_in_cell
from patterson.maps import density_from_f, patterson_from_f, write_ccp4
from patterson.physics import AtomBatch, grid_shape, miller_indices, structure_factors
from patterson.structures import embedded_entries, extract_fragments

parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
parser.add_argument("--out", type=Path, default=Path("patterson-example"))
args = parser.parse_args()

fragment = next(iter(extract_fragments(str(embedded_entries()[0]), k=2)))
cell, d_min = Cell.cubic(12.0), 1.5
atoms = centre_in_cell(fragment.atoms, cell)
hkl = miller_indices(cell, d_min)
f = structure_factors(AtomBatch.from_atoms([atoms], cell), hkl, b_iso=20.0)  # (1, M)
shape = grid_shape(cell, d_min)
rho = density_from_f(f, hkl, cell, shape)[0].numpy()  # (X, Y, Z) e/Å³
pat = patterson_from_f(f, hkl, cell, shape)[0].numpy()  # (X, Y, Z), origin at the corner

args.out.mkdir(parents=True, exist_ok=True)
write_ccp4(args.out / "density.ccp4", rho, cell)
write_ccp4(args.out / "patterson.ccp4", pat, cell)
peak = np.unravel_index(np.argmax(pat), pat.shape)
print(f"{fragment.label}: {len(atoms)} atoms, {len(hkl)} reflections, grid {'×'.join(map(str, shape))}")
print(f"Patterson maximum at grid point {tuple(int(i) for i in peak)} (the origin), {pat.max():.1f} e²/Å³")
print(f"wrote {args.out}/density.ccp4 and {args.out}/patterson.ccp4")
