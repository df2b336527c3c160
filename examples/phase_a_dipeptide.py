"""Phase a dipeptide from its amplitudes alone: the shipped network, HIO, and the two together, beside chance.

    python examples/phase_a_dipeptide.py [--n 4]

Makes a few held-out test structures of the paper's dataset 2 (one dipeptide in a 12 Å cell, 1.5 Å) from the
embedded chains, and phases them with the shipped paper-2 network alone, HIO from random starts, and the hybrid
(the network's map refined by HIO), each scored against the truth after the origin and hand search.
"""

import argparse
import tempfile

from patterson.datasets import make_test_split
from patterson.networks import open_network
from patterson.phasing import PhasingConfig, compare_methods, load_split

parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
parser.add_argument("--n", type=int, default=4)
args = parser.parse_args()

with tempfile.TemporaryDirectory() as tmp:
    data = load_split(make_test_split("paper-2", tmp, n=args.n))  # the stored amplitudes, free set drawn
network = open_network("paper-2")  # the shipped network, read once
runs = compare_methods(data, ("model", "hio", "hybrid", "chance"), network=network, phasing=PhasingConfig(n_iter=200))
for method, run in runs.items():
    s = run.summary()
    print(f"{method:7s} solved {s['n_solved']}/{s['n']}  median phase error "
          f"{s['median_phase_error_weighted_deg']:5.1f}°  CC {s['median_cc_aligned']:.3f}")
