"""The symmetry step after P1 phasing, measured: the origin, the space-group check, and centric phasing.

Random light-atom crystals (carbon, B 3 Å², atoms ≥ 1.3 Å apart, d_min 1.0 Å) are built in several space groups
(:func:`patterson.symmetry.random_sites`), their exact amplitudes phased in P1 (HIO, 4 starts × 300
iterations, the true F(000)), and then:

- **origin**: the P1 solution moved to the group's origin and symmetrised (:func:`to_spacegroup`): is it consistent
  with the group, and does it differ from the truth only by an origin the group permits (the origin/hand search
  against the truth lands on a permitted shift)? Also from the exact F after a random shift (no phasing error).
- **check**: which group the space-group check ranks first (the highest symmetry consistent with the P1 solution)
  among the groups of the lattice (every centring); right when it is the true group.
- **centric**: for centrosymmetric groups, phasing with phases restricted to 0/π (``centric=True``, the inversion
  centre at the origin) against plain P1 phasing, charge flipping and HIO, same starts and iterations.

    python benchmarks/symmetry.py [--n 10] [--out benchmarks/results/symmetry.json]
        [--table docs/tables/symmetry_table.md]
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from _common import run_metadata, write_json, write_text
from patterson.cells import Cell
from patterson.evaluation.metrics import align, apply_alignment_f, score_f
from patterson.evaluation.report import SOLVED_THRESHOLD_DEG
from patterson.phasing import charge_flip, hio, method_options
from patterson.physics import AtomBatch, grid_shape, miller_indices, structure_factors
from patterson.solving.symmetry import check_spacegroups, is_permitted_shift, shift_origin, to_spacegroup
from patterson.structures import Atoms
from patterson.symmetry import SpaceGroup, random_sites

D_MIN = 1.0
GROUPS = {  # space group: (cell, atoms in the asymmetric unit)
    "P 1 21 1": ((8.0, 9.0, 10.0, 90, 104, 90), 5),
    "P 21 21 21": ((9.0, 11.0, 13.0, 90, 90, 90), 4),
    "C 1 2 1": ((14.0, 9.0, 10.0, 90, 105, 90), 4),
    "P -1": ((8.0, 9.0, 10.0, 80, 95, 100), 8),
    "P 1 21/c 1": ((9.0, 10.0, 11.0, 90, 100, 90), 4),
    "P b c a": ((10.0, 11.0, 12.0, 90, 90, 90), 2),
}


def crystal(name: str, seed: int) -> dict:
    cell_par, n = GROUPS[name]
    group, cell = SpaceGroup.of(name), Cell(*cell_par)
    frac = random_sites(group, cell, n, seed=seed)
    atoms = Atoms(cell.to_cartesian(frac), np.array(["C"] * len(frac)), np.full(len(frac), 3.0), np.ones(len(frac)),
                  cell.parameters)  # fmt: skip
    hkl = miller_indices(cell, D_MIN)
    f = structure_factors(AtomBatch.from_atoms([atoms], cell), hkl)[0].numpy()
    return {"group": group, "cell": cell, "hkl": hkl, "f": f, "f000": 6.0 * len(frac)}


def phase_error(case: dict, f_new: np.ndarray) -> tuple[float, np.ndarray]:
    """F-weighted phase error after the origin and hand search, and the shift that search found."""
    truth, moving = torch.as_tensor(case["f"])[None], torch.as_tensor(f_new)[None]
    a = align(truth, moving, case["hkl"], case["cell"])
    err = score_f(truth, apply_alignment_f(moving, case["hkl"], a), case["hkl"], case["cell"])
    return float(err["phase_error_weighted_deg"][0]), a.shift_frac[0].numpy()


def phase_p1(case: dict, method: str, centric: bool = False) -> np.ndarray:
    fo = torch.as_tensor(np.abs(case["f"]))[None]
    shape = grid_shape(case["cell"], D_MIN)
    if method == "hio":
        options = method_options("hio", n_iter=300, centric=centric)
        res = hio(fo, case["hkl"], case["cell"], shape, options, f000=case["f000"])
    else:
        res = charge_flip(fo, case["hkl"], case["cell"], shape, method_options("charge-flip", centric=centric))
    return np.abs(case["f"]) * np.exp(1j * res.phi_rad[0].numpy())


def origin_row(name: str, n: int) -> dict:
    counts = {"n": n, "exact_consistent": 0, "exact_permitted": 0, "phased_solved": 0, "consistent": 0,
              "permitted": 0, "check_right": 0, "check_seconds": 0.0}  # fmt: skip
    for seed in range(n):
        case = crystal(name, seed)
        group, cell, hkl = case["group"], case["cell"], case["hkl"]
        moved = shift_origin(hkl, case["f"], np.random.default_rng(seed).uniform(0, 1, 3))
        f_sg, fit = to_spacegroup(hkl, moved, cell, group, D_MIN)
        counts["exact_consistent"] += fit.consistent
        counts["exact_permitted"] += is_permitted_shift(group, phase_error(case, f_sg)[1], tol=0.02)
        f_p1 = phase_p1(case, "hio")
        err, _ = phase_error(case, f_p1)
        if err >= SOLVED_THRESHOLD_DEG:
            continue
        counts["phased_solved"] += 1
        f_sg, fit = to_spacegroup(hkl, f_p1, cell, group, D_MIN)
        counts["consistent"] += fit.consistent
        counts["permitted"] += fit.consistent and is_permitted_shift(group, phase_error(case, f_sg)[1], tol=0.02)
        t0 = time.perf_counter()
        top = next((r for r in check_spacegroups(hkl, f_p1, cell, D_MIN) if r["consistent"]), None)
        counts["check_seconds"] += time.perf_counter() - t0
        counts["check_right"] += bool(top and top["number"] == group.gemmi.number)
    counts["check_seconds"] /= max(1, counts["phased_solved"])
    return {"spacegroup": name, **counts}


def centric_row(name: str, n: int) -> dict:
    row = {"spacegroup": name, "n": n}
    for method in ("charge-flip", "hio"):
        for centric in (False, True):
            solved = sum(phase_error(case, phase_p1(case, method, centric))[0] < SOLVED_THRESHOLD_DEG
                         for case in (crystal(name, 100 + s) for s in range(n)))  # fmt: skip
            row[f"{method}{' centric' if centric else ''}"] = int(solved)
    return row


def render(results: dict) -> str:
    """The Markdown tables of docs/tables/symmetry_table.md from the whole results file: the origin and space-group
    check, then centric against P1 phasing."""
    origin, centric = results["origin"], results["centric"]
    head = ("| space group | n | exact F: consistent / permitted origin | P1 phasing solved | consistent | "
            "permitted origin | check ranks the true group first | check s |")  # fmt: skip
    lines = ["Origin and space-group check (HIO in P1, then the symmetry step; counts of n random crystals):", "",
             head, "|---|---|---|---|---|---|---|---|"]  # fmt: skip
    for r in origin:
        check = f"{r['check_right']}/{r['phased_solved']}"
        lines.append(f"| {r['spacegroup']} | {r['n']} | {r['exact_consistent']} / {r['exact_permitted']} | "
                     f"{r['phased_solved']} | {r['consistent']} | {r['permitted']} | {check} | "
                     f"{r['check_seconds']:.1f} |")  # fmt: skip
    lines += ["", "Centric phasing (phases 0/π) against P1 phasing, solved of n:", "",
              "| space group | n | CF | CF centric | HIO | HIO centric |", "|---|---|---|---|---|---|"]  # fmt: skip
    for r in centric:
        lines.append(f"| {r['spacegroup']} | {r['n']} | {r['charge-flip']} | {r['charge-flip centric']} | "
                     f"{r['hio']} | {r['hio centric']} |")  # fmt: skip
    return "\n".join(lines) + "\n"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--n", type=int, default=10)
    p.add_argument("--out", default="benchmarks/results/symmetry.json")
    p.add_argument("--table", default="docs/tables/symmetry_table.md")
    args = p.parse_args()
    torch.set_num_threads(1)
    origin = [origin_row(name, args.n) for name in GROUPS]
    for r in origin:
        print(r, flush=True)
    centric = [centric_row(name, args.n) for name in GROUPS if SpaceGroup.of(name).is_centrosymmetric]
    results = {"run": run_metadata(), "d_min": D_MIN, "solved_threshold_deg": SOLVED_THRESHOLD_DEG,
               "origin": origin, "centric": centric}  # fmt: skip
    write_json(args.out, results)
    text = render(results)
    write_text(args.table, "<!-- written by benchmarks/symmetry.py -->\n\n" + text)
    print(text)


if __name__ == "__main__":
    main()
