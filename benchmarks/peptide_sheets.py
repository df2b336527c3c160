"""The β-sheet search (#30, :mod:`patterson.phasing.sheets`) on the real amyloid peptides 5E5Z and 1YJP: which
whole main chains it places, how far each lies from the deposited one and what its phases are worth, and what
``phase_with_sequence`` then builds from them.

For each data set (reflections read and merged as ``patterson solve`` reads them; the file's free set kept out)
the chains :func:`~patterson.phasing.sheets.place_strands` returns with the default options (best LLG first) are
scored against the deposited model: mean distance of corresponding main-chain and Cβ atoms after the origin shifts
and operators of P2₁ (any register of the deposited chain), map CC of their phases (after the origin and hand
search, as ``benchmarks/peptide_fragments.py`` scores) beside random phases; ``right``: within ``RIGHT_A`` Å in the
sequence's own register; ``ca_distance_any_register``: the CA atoms' mean distance in the best register shift and
that shift (a right placement labelled one residue off shows as a small distance at shift ±1). Then
:func:`~patterson.phasing.peptide.phase_with_sequence` (the default options: the sheet search, side chains built
on each chain, the best refined LLG kept) and the map CC of its phases.

    python benchmarks/peptide_sheets.py    (about 6 minutes on 2 CPU cores)
"""

from __future__ import annotations

import time

import numpy as np

from _common import RESULTS, run_metadata, write_json
from patterson.phasing.peptide import phase_with_sequence
from patterson.phasing.sheets import SheetOptions, chain_atoms, place_strands
from peptide_conformers import pose_distance
from peptide_fragments import map_cc
from peptide_likelihood import Judge

RIGHT_A = 1.0
SETS = ("5e5z", "1yjp")


def register_distance(judge: Judge, xyz: np.ndarray) -> float:
    """Mean distance (Å) of the chain's atoms from the deposited ones in the sequence's own register."""
    frac = judge.cell.to_fractional(xyz)
    return judge.distance(frac, len(judge.sequence))


def shifted_distance(judge: Judge, chain) -> tuple[float, int]:
    """The chain's CA atoms against the deposited ones in every register shift (at least 4 residues in common):
    the smallest mean distance (Å) and its shift — a right placement whose residues are labelled one off."""
    names = np.array(["N", "CA", "C", "O", "CB"] * len(judge.sequence))[judge.real]
    truth_ca = judge.cell.to_fractional(judge.truth[judge.real][names == "CA"])
    mine = judge.cell.to_fractional(chain.xyz)[_ca_index(judge.sequence)]
    n, out = len(judge.sequence), (np.inf, 0)
    for shift in range(-(n - 4), n - 3):
        i = np.arange(max(0, -shift), min(n, n - shift))
        out = min(out, (pose_distance(mine[i], truth_ca[i + shift], judge.cell, judge.group), shift))
    return round(out[0], 2), out[1]


def _ca_index(sequence: str) -> np.ndarray:
    """The CA atoms' rows in a chain (:func:`patterson.phasing.sheets.chain_atoms` order)."""
    return np.nonzero(chain_atoms(sequence)[0] == "CA")[0]


def run_set(name: str) -> dict:
    judge = Judge(name)
    options = SheetOptions()
    t0 = time.perf_counter()
    chains = place_strands(judge.sequence, judge.target, options)
    t1 = time.perf_counter()
    rows = [{"llg": round(c.llg, 1), "conformer": c.conformer, "register": c.start,
             "distance_A": round(register_distance(judge, c.xyz), 2),
             "ca_distance_any_register": shifted_distance(judge, c),
             "map_cc": judge.map_cc(judge.cell.to_fractional(c.xyz), c.elements)} for c in chains]  # fmt: skip
    solution = phase_with_sequence(judge.sequence, judge.hkl, judge.f_work, judge.cell, judge.group, judge.work)
    t2 = time.perf_counter()
    chance = [map_cc(judge.f_model, judge.f, np.random.default_rng(s).uniform(-np.pi, np.pi, len(judge.hkl)),
                     judge.hkl, judge.cell) for s in range(5)]  # fmt: skip
    built = [t for t in solution.tried if "built_llg" in t]
    return {"name": name, "sequence": judge.sequence, "cell": list(judge.cell.parameters),
            "chains": rows, "right_chains": sum(r["distance_A"] < RIGHT_A for r in rows),
            "search_seconds": round(t1 - t0, 1), "built": built,
            "phase_with_sequence": {"map_cc": round(map_cc(judge.f_model, judge.f, solution.phi_rad, judge.hkl,
                                                           judge.cell), 3),
                                    "r_work": round(solution.r_work, 3), "seconds": solution.seconds},
            "chance_map_cc": [round(c, 3) for c in chance], "build_seconds": round(t2 - t1, 1)}  # fmt: skip


def main() -> None:
    out = {"benchmark": "peptide_sheets", "run": run_metadata(), "right_A": RIGHT_A,
           "options": SheetOptions().__dict__, "sets": [run_set(name) for name in SETS]}  # fmt: skip
    write_json(RESULTS / "peptide_sheets.json", out)
    for s in out["sets"]:
        print(s["name"], "chains:", [(c["llg"], c["distance_A"], c["map_cc"]) for c in s["chains"]],
              "built map CC", s["phase_with_sequence"]["map_cc"])  # fmt: skip


if __name__ == "__main__":
    main()
