"""What the fragments route needs on the real peptides (#30): how right must the search model's main chain be, and
does the search place a right one? Measured on 5E5Z and 1YJP against their deposited models.

For each data set (reflections read and merged as ``patterson solve`` reads them; the file's free set kept out of
the searches), map CC against the deposited model after the P1 origin and hand search (as
``benchmarks/peptide_fragments.py`` scores), beside random phases, of the phases of:

- ``ideal strand``: the ideal strand of the sequence (main chain and Cβ; :func:`patterson.ideal.ideal_strand`)
  superposed on the deposited main chain (a perfect search with today's search model);
- ``deposited main chain``: the deposited N, CA, C, O and Cβ alone (no side chain beyond Cβ, no water): what a
  search model with a right main chain would give before any building;
- ``library windows``: the ``N_NEAREST`` windows of real strands nearest the deposited main chain (windows of the
  sequence's length from ``../shared/data/pdb``, every residue's CA(i)–CA(i+2) ≥ 6 Å, main chain and Cβ, Cβ placed
  ideally for glycine), superposed on it.

Then each library window is searched for as a search model (:func:`patterson.phasing.placement.place_fragment`) with
the default options and with a finer search (``FINE``), and the found poses are compared with the window superposed
on the truth: mean distance of corresponding atoms (Å) after the origin shifts P2₁ allows (x, z by ½, any y) and its
operators. Every number is measured here; the json keeps them all.

    python benchmarks/peptide_conformers.py    (about 3 minutes on 2 CPU cores)
"""

from __future__ import annotations

import time
from pathlib import Path

import gemmi
import numpy as np
import torch

from _common import RESULTS, ROOT, run_metadata, write_json
from patterson.cells import Cell
from patterson.phasing.placement import PlacementOptions, e2_correlation, place_fragment, placed_frac, search_target
from patterson.phasing.sheets import superposed as superpose
from patterson.solving import prepare_data, read_reflections
from patterson.structures import Atoms, atomic_numbers
from patterson.symmetry import SpaceGroup
from peptide_fragments import DATA, SETS, fragment_f, map_cc, model_f, oracle_fragment

CHAINS = ROOT.parent / "shared" / "data" / "pdb"
MAIN_CB = ("N", "CA", "C", "O", "CB")
N_NEAREST = 3
N_POSES = 6
FINE = PlacementOptions(angle_step=7.0, d_refine=2.5, n_rescore=200, n_refine=12)
RIGHT_A = 1.0  # a found pose this close (mean distance, Å) to the truth counts as right


def _ideal_cb(n: np.ndarray, ca: np.ndarray, c: np.ndarray) -> np.ndarray:
    """Cβ where an L residue's would be, from its N, CA, C (a glycine's, for a poly-alanine window)."""
    b, cc = ca - n, c - ca
    return -0.58273431 * np.cross(b, cc) + 0.56802827 * b - 0.54067466 * cc + ca


def strand_windows(length: int, folder: Path = CHAINS) -> np.ndarray:
    """(W, 5·length, 3) main chain and Cβ of every extended window of ``length`` residues in the chains of
    ``folder`` (no chain break: C–N ≤ 1.45 Å; every CA(i)–CA(i+2) ≥ 6 Å)."""
    windows = []
    for path in sorted(folder.glob("*.pdb*")):
        residues = [r for r in gemmi.read_structure(str(path))[0][0] if r.het_flag == "A"]
        xyz = np.full((len(residues), 5, 3), np.nan)
        for i, r in enumerate(residues):
            atoms = [r.find_atom(name, "*") for name in MAIN_CB[:4]]
            if all(a is not None for a in atoms):
                xyz[i, :4] = [a.pos.tolist() for a in atoms]
                cb = r.find_atom("CB", "*")
                xyz[i, 4] = cb.pos.tolist() if cb is not None else _ideal_cb(*xyz[i, :3])
        for i in range(len(residues) - length + 1):
            w = xyz[i : i + length]
            if np.isnan(w).any() or (np.linalg.norm(w[1:, 0] - w[:-1, 2], axis=1) > 1.45).any():
                continue
            if (np.linalg.norm(w[2:, 1] - w[:-2, 1], axis=1) < 6.0).any():
                continue
            windows.append(w.reshape(-1, 3))
    return np.array(windows)


def nearest(windows: np.ndarray, truth: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """The indices of the k windows (W, A, 3) nearest ``truth`` (A, 3) after superposition, and every rms (W,)."""
    x = torch.as_tensor(windows) - torch.as_tensor(windows).mean(1, keepdim=True)
    y = torch.as_tensor(truth) - torch.as_tensor(truth).mean(0)
    s = torch.linalg.svdvals(x.transpose(1, 2) @ y)
    sign = torch.sign(torch.linalg.det(x.transpose(1, 2) @ y))
    rms = torch.sqrt(((x**2).sum((1, 2)) + (y**2).sum() - 2 * (s[:, 0] + s[:, 1] + sign * s[:, 2])).clamp_min(0)
                     / len(truth))  # fmt: skip
    return torch.argsort(rms)[:k].numpy(), rms.numpy()


def pose_distance(found: np.ndarray, truth: np.ndarray, cell: Cell, group: SpaceGroup) -> float:
    """Mean distance (Å) of corresponding atoms, fractional (N, 3) each, after P2₁'s origin shifts and operators."""
    best = np.inf
    for rot, tran in zip(group.rot, group.tran, strict=True):
        for shift in ([0, 0, 0], [0.5, 0, 0], [0, 0, 0.5], [0.5, 0, 0.5]):
            d = found - (truth @ rot.T + tran + np.array(shift))
            d[:, 1] -= d[:, 1].mean()  # the polar axis: any y
            d -= np.round(d)
            best = min(best, float(np.linalg.norm(cell.to_cartesian(d), axis=1).mean()))
    return best


def searched(model: Atoms, truth_frac: np.ndarray, data: tuple, options: PlacementOptions) -> dict:
    """Place ``model`` (centred) and compare its best poses with the truth."""
    hkl, f_work, cell, group, work = data
    t0 = time.perf_counter()
    p = place_fragment(model, hkl, f_work, cell, group, work, options)
    poses = [(p.cc, p.rotation, p.translation), *p.others][:N_POSES]
    out = []
    for cc, rot, tr in poses:
        frac = placed_frac(torch.as_tensor(model.xyz), torch.as_tensor(rot)[None], torch.as_tensor(tr)[None], cell)
        out.append({"score": round(float(cc), 3), "distance_A": round(pose_distance(frac[0].numpy(), truth_frac,
                                                                                      cell, group), 2)})  # fmt: skip
    right = [i for i, o in enumerate(out) if o["distance_A"] < RIGHT_A]
    return {"seconds": round(time.perf_counter() - t0, 1), "poses": out, "right_rank": right[0] + 1 if right else None}


def deposited_main(path: Path, n_res: int) -> tuple[np.ndarray, np.ndarray]:
    """(5·n_res, 3) the deposited N, CA, C, O, Cβ (ideal Cβ for glycine) and a mask of the atoms really there."""
    residues = [r for r in gemmi.read_structure(str(path))[0][0] if r.name != "HOH"][:n_res]
    xyz, real = [], []
    for r in residues:
        main = [r.find_atom(n, "*").pos.tolist() for n in MAIN_CB[:4]]
        cb = r.find_atom("CB", "*")
        xyz += main + [cb.pos.tolist() if cb is not None else _ideal_cb(*map(np.array, main[:3])).tolist()]
        real += [True] * 4 + [cb is not None]
    return np.array(xyz), np.array(real)


def run_set(name: str, windows: np.ndarray) -> dict:
    reflections, deposited, sequence = SETS[name]
    refl = read_reflections(DATA / reflections, None, None, None, None)
    data = prepare_data(refl)
    cell, group, hkl, f, free = data.cell, refl.group, data.hkl, data.f, data.free
    assert group.name == "P 1 21 1", "pose_distance knows P2₁'s origins only"
    f_model = model_f(DATA / deposited, cell, hkl)
    rng = np.random.default_rng(0)
    score = lambda xyz, el: map_cc(f_model, f, np.angle(fragment_f(cell.to_fractional(xyz), el, hkl, cell, group)),  # noqa: E731
                                   hkl, cell)  # fmt: skip
    truth, real = deposited_main(DATA / deposited, len(sequence))
    elements = np.array(["N", "C", "C", "O", "C"] * len(sequence))
    target = search_target(hkl, np.where(free, 0.0, f), cell, group, ~free, None)
    e2 = lambda xyz: float(e2_correlation(target, torch.as_tensor(cell.to_fractional(xyz))[None],  # noqa: E731
                                          atomic_numbers(elements[real]), 20.0)[0])  # fmt: skip
    record = {
        "sequence": sequence,
        "d_min": data.d_min,
        "windows_in_library": len(windows),
        "chance_cc": [map_cc(f_model, f, rng.uniform(0, 2 * np.pi, len(f)), hkl, cell) for _ in range(5)],
        "ideal_strand_cc": score(*oracle_fragment(DATA / deposited, sequence)),
        "deposited_main_chain_cc": score(truth[real], elements[real]),
        "deposited_main_chain_e2": e2(truth[real]),
    }
    main4 = np.tile([True, True, True, True, False], len(sequence))
    best, rms = nearest(windows[:, main4], truth[main4], N_NEAREST)
    record["library_rms_within"] = {f"{r} A": int((rms < r).sum()) for r in (0.5, 0.7, 1.0)}
    search_data = (hkl, np.where(free, 0.0, f), cell, group, ~free)
    record["nearest"] = []
    for i in best:
        on_truth = superpose(windows[i][main4], truth[main4], windows[i])  # by its main chain, Cβ moved along
        model = Atoms(xyz=windows[i][real] - windows[i][real].mean(0), elements=elements[real],
                      b_iso=np.full(int(real.sum()), 20.0), occ=np.ones(int(real.sum())))  # fmt: skip
        row = {
            "rms_A": round(float(rms[i]), 2),
            "superposed_cc": score(on_truth[real], elements[real]),
            "superposed_e2": e2(on_truth[real]),
        }
        truth_frac = cell.to_fractional(on_truth[real])
        row["search_default"] = searched(model, truth_frac, search_data, PlacementOptions())
        row["search_fine"] = searched(model, truth_frac, search_data, FINE)
        record["nearest"].append(row)
        print(f"  {name}: window {rms[i]:.2f} Å from the truth: map CC {row['superposed_cc']:.3f} on the truth; "
              f"right pose ranked {row['search_default']['right_rank']} (default), {row['search_fine']['right_rank']} "
              "(fine)", flush=True)  # fmt: skip
    return record


def main() -> None:
    torch.set_num_threads(2)
    results = {"run": run_metadata(), "fine_search": {k: getattr(FINE, k) for k in ("angle_step", "d_refine",
                                                                                     "n_rescore", "n_refine")},
               "sets": {}}  # fmt: skip
    for name, (_, _, sequence) in SETS.items():
        windows = strand_windows(len(sequence))
        record = run_set(name, windows)
        results["sets"][name] = record
        print(f"{name}: map CC ideal strand {record['ideal_strand_cc']:.3f}, deposited main chain "
              f"{record['deposited_main_chain_cc']:.3f} (random {np.median(record['chance_cc']):.3f}); library "
              f"windows within 0.5/0.7 Å: {record['library_rms_within']}", flush=True)  # fmt: skip
    write_json(RESULTS / "peptide_conformers.json", results)


if __name__ == "__main__":
    main()
