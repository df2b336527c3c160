"""Does the likelihood tell a right fragment placement from a wrong one on the real peptides (#30)? Measured on 5E5Z
and 1YJP against their deposited models, with :mod:`patterson.phasing.likelihood`.

Placements (main chain and Cβ only, the file's free set kept out of everything):

- ``right``: the deposited main chain itself and the ``N_NEAREST`` windows of real strands nearest to it
  (``benchmarks/peptide_conformers.py``'s library from ``../shared/data/pdb``) superposed on it;
- ``wrong``: the best poses that the rotation/translation search (``FINE``) finds for the ideal strand and for those
  nearest windows, where they lie more than ``RIGHT_A`` from the truth.

For each: its LLG and work E² correlation as placed, then after :func:`refine_likelihood` (coordinates to the largest
LLG on the work set, short distances restrained) its LLG, map CC against the deposited model and distance from the
truth; and a cross-validated LLG: refined against a random half of the work reflections, scored on the other half.

How far the refinement reaches: the nearest window superposed on the truth, turned and moved by ``REACH``, refined.

How close a search model must be: the route with library 5-residue windows 0.3–0.7 Å from the truth.

Then the whole route on 5-residue windows: the rotation/translation search with a search model, its ``N_LLG``
best poses by LLG refined, the best refined LLG kept — with the ideal strand and with the library's most typical
5-residue strand (the window with most neighbours within 0.5 Å distance r.m.s.).

    python benchmarks/peptide_likelihood.py    (about 12 minutes on 2 CPU cores)
"""

from __future__ import annotations

import time

import numpy as np
import torch

from _common import RESULTS, run_metadata, write_json
from patterson.ideal import ideal_strand
from patterson.phasing.likelihood import likelihood_target, llg, refine_likelihood
from patterson.phasing.placement import (
    PlacementOptions,
    e2_correlation,
    image_clashes,
    place_fragment,
    placed_frac,
    search_poses,
    search_target,
    skew,
)
from patterson.solving import prepare_data, read_reflections
from patterson.structures import Atoms, atomic_numbers
from peptide_conformers import FINE, MAIN_CB, deposited_main, nearest, pose_distance, strand_windows, superpose
from peptide_fragments import DATA, SETS, fragment_f, map_cc, model_f

N_NEAREST = 5
RIGHT_A = 1.0
N_LLG = 30
ACCURACY = (0.3, 0.4, 0.5, 0.6, 0.7)  # Å r.m.s. from the truth of the search models whose route is measured
REACH = ((0.0, 0.0), (5.0, 0.5), (10.0, 1.0), (15.0, 1.5))  # (degrees, Å) a right placement is moved by
ROUTE = PlacementOptions(angle_step=10.0, d_search=1.0, d_refine=None, n_rescore=400, max_clashes=0.2)


def typical_strand(windows: np.ndarray, n_sample: int = 4000) -> np.ndarray:
    """The window (5·L, 3) with the most library neighbours within 0.5 Å distance r.m.s. (a sample of candidates)."""
    main = torch.as_tensor(windows[:, np.tile([True, True, True, True, False], windows.shape[1] // 5)])
    i, j = np.triu_indices(main.shape[1], 1)
    dv = torch.linalg.vector_norm(main[:, i] - main[:, j], dim=-1).float()  # (W, P) internal distances
    pick = torch.randperm(len(dv), generator=torch.Generator().manual_seed(0))[:n_sample]
    counts = torch.zeros(len(pick))
    for a in range(0, len(dv), 20000):
        counts += (torch.cdist(dv[pick], dv[a : a + 20000]) < 0.5 * np.sqrt(dv.shape[1])).sum(1)
    return windows[int(pick[torch.argmax(counts)])]


def ideal_main(length: int) -> np.ndarray:
    """(5·length, 3) the ideal strand's N, CA, C, O, Cβ in residue order."""
    ideal = ideal_strand("A" * length)
    residue = np.array([int(label.split(":")[2]) - 1 for label in ideal.atoms.residues])
    return ideal.atoms.xyz[[np.nonzero((residue == r) & (ideal.names == n))[0][0] for r in range(length)
                            for n in MAIN_CB]]  # fmt: skip


class Judge:
    """One data set's target, truth and scores."""

    def __init__(self, name: str) -> None:
        reflections, deposited, self.sequence = SETS[name]
        refl = read_reflections(DATA / reflections, None, None, None, None)
        data = prepare_data(refl)
        self.cell, self.group, self.hkl, self.f, free = data.cell, refl.group, data.hkl, data.f, data.free
        self.f_work, self.work = np.where(free, 0.0, self.f), ~free
        self.f_model = model_f(DATA / deposited, self.cell, self.hkl)
        self.truth, self.real = deposited_main(DATA / deposited, len(self.sequence))
        self.target = search_target(self.hkl, self.f_work, self.cell, self.group, self.work, None)
        half = np.random.default_rng(5).random(len(self.hkl)) < 0.5  # a split of the work set, not the free set
        self.halves = [search_target(self.hkl, self.f_work, self.cell, self.group, self.work & h, None)
                       for h in (half, ~half)]  # fmt: skip

    def elements(self, n_res: int, real: np.ndarray | None = None) -> np.ndarray:
        el = np.array(["N", "C", "C", "O", "C"] * n_res)
        return el if real is None else el[real]

    def distance(self, frac: np.ndarray, n_res: int) -> float:
        """Mean distance (Å) from the truth's best-matching window of n_res residues."""
        truth, out = self.cell.to_fractional(self.truth), np.inf
        for s in range(len(self.sequence) - n_res + 1):
            window, real = truth[5 * s : 5 * (s + n_res)], self.real[5 * s : 5 * (s + n_res)]
            out = min(out, pose_distance(frac, window if len(frac) == len(window) else window[real], self.cell,
                                         self.group))  # fmt: skip
        return out

    def map_cc(self, frac: np.ndarray, elements: np.ndarray) -> float:
        phi = np.angle(fragment_f(frac, elements, self.hkl, self.cell, self.group))
        return round(map_cc(self.f_model, self.f, phi, self.hkl, self.cell), 3)

    def judge(self, xyz: np.ndarray, elements: np.ndarray, kind: str, n_res: int) -> dict:
        """Everything measured for one placement xyz (N, 3) Å."""
        z = atomic_numbers(elements)
        lik = likelihood_target(self.target, z)
        frac = self.cell.to_fractional(xyz)
        e2 = float(e2_correlation(self.target, torch.as_tensor(frac)[None], z, 20.0)[0])
        refined, gain = refine_likelihood(lik, xyz)
        half_xyz, _ = refine_likelihood(likelihood_target(self.halves[0], z), xyz)
        other = likelihood_target(self.halves[1], z)
        rf = self.cell.to_fractional(refined)
        return {"kind": kind, "distance_A": round(self.distance(frac, n_res), 2), "e2": round(e2, 3),
                "llg": round(float(llg(lik, frac)[0]), 1), "refined_llg": round(gain, 1),
                "refined_distance_A": round(self.distance(rf, n_res), 2), "refined_map_cc": self.map_cc(rf, elements),
                "held_out_half_llg": [round(float(llg(other, frac)[0]), 1),
                                      round(float(llg(other, self.cell.to_fractional(half_xyz))[0]), 1)]}  # fmt: skip


def placements(judge: Judge, windows: np.ndarray) -> list[dict]:
    """Right and wrong placements of the whole sequence's main chain, judged."""
    n_res, real = len(judge.sequence), judge.real
    main4, el = np.tile([True, True, True, True, False], n_res), judge.elements(n_res, real)
    rows = [judge.judge(judge.truth[real], el, "right: deposited", n_res)]
    best, rms = nearest(windows[:, main4], judge.truth[main4], N_NEAREST)
    models = [("ideal strand", ideal_main(n_res))]
    for i in best:
        on_truth = superpose(windows[i][main4], judge.truth[main4], windows[i])
        rows.append(judge.judge(on_truth[real], el, f"right: library window {rms[i]:.2f} Å", n_res))
        models.append((f"library window {rms[i]:.2f} Å", windows[i]))
    for label, xyz in models[:4]:
        xyz = xyz[real] - xyz[real].mean(0)
        p = place_fragment(Atoms(xyz=xyz, elements=el, b_iso=np.full(len(el), 20.0), occ=np.ones(len(el))),
                           judge.hkl, judge.f_work, judge.cell, judge.group, judge.work, FINE)  # fmt: skip
        for _, rot, tr in [(p.cc, p.rotation, p.translation), *p.others][:4]:
            frac = placed_frac(torch.as_tensor(xyz), torch.as_tensor(rot)[None], torch.as_tensor(tr)[None],
                               judge.cell)[0].numpy()  # fmt: skip
            if judge.distance(frac, n_res) > RIGHT_A:
                rows.append(judge.judge(judge.cell.to_cartesian(frac), el, f"wrong: search pose of {label}", n_res))
    return rows


def route(judge: Judge, model_xyz: np.ndarray, label: str) -> dict:
    """The search with a 5-residue model, its N_LLG best poses by LLG refined; the best refined LLG wins."""
    n_res = len(model_xyz) // 5
    el = judge.elements(n_res)
    xyz = model_xyz - model_xyz.mean(0)
    z = atomic_numbers(el)
    lik = likelihood_target(judge.target, z)
    t0 = time.perf_counter()
    poses = search_poses(Atoms(xyz=xyz, elements=el, b_iso=np.full(len(el), 20.0), occ=np.ones(len(el))),
                         judge.target, ROUTE)  # fmt: skip
    frac = placed_frac(torch.as_tensor(xyz), torch.as_tensor(np.stack([p[1] for p in poses])),
                       torch.as_tensor(np.stack([p[2] for p in poses])), judge.cell).numpy()  # fmt: skip
    order = [i for i in np.argsort(-llg(lik, frac))
             if image_clashes(frac[i], judge.group, judge.cell, 1.8) <= 0.2 * len(xyz)][:N_LLG]  # fmt: skip
    start = [judge.distance(x, n_res) for x in frac]  # (P,) each searched pose's distance from the truth
    found = []
    for i in order:
        refined, gain = refine_likelihood(lik, judge.cell.to_cartesian(frac[i]))
        found.append((gain, judge.cell.to_fractional(refined), start[i]))
    found.sort(key=lambda t: -t[0])
    near = [k for k, (_, _, d) in enumerate(found) if d < RIGHT_A]
    within = sum(d < RIGHT_A for d in start)
    return {"model": label, "seconds": round(time.perf_counter() - t0, 1), "poses_searched": len(poses),
            "poses_within_right_A": int(within), "right_start_ranks": near,
            "best": [{"refined_llg": round(g, 1), "refined_distance_A": round(judge.distance(fr, n_res), 2),
                      "refined_map_cc": judge.map_cc(fr, el)} for g, fr, _ in found[:3]]}  # fmt: skip


def reach(judge: Judge, windows: np.ndarray) -> list[dict]:
    """How far the refinement reaches: the nearest library window superposed on the truth, turned by an angle about
    a random axis through its centre and moved by a distance, then refined (three random draws of each)."""
    n_res, real = len(judge.sequence), judge.real
    main4, el = np.tile([True, True, True, True, False], n_res), judge.elements(n_res, real)
    best, _ = nearest(windows[:, main4], judge.truth[main4], 1)
    on_truth = superpose(windows[best[0]][main4], judge.truth[main4], windows[best[0]])[real]
    lik, rng, rows = likelihood_target(judge.target, atomic_numbers(el)), np.random.default_rng(0), []
    for angle, shift in REACH:
        for _ in range(3):
            axis, step = rng.normal(size=3), rng.normal(size=3)
            turn = torch.linalg.matrix_exp(skew(torch.as_tensor(axis / np.linalg.norm(axis) * np.radians(angle))))
            centre = on_truth.mean(0)
            start = (on_truth - centre) @ turn.numpy().T + centre + step / np.linalg.norm(step) * shift
            refined, gain = refine_likelihood(lik, start)
            rows.append({"angle_deg": angle, "shift_A": shift,
                         "distance_A": round(judge.distance(judge.cell.to_fractional(start), n_res), 2),
                         "refined_distance_A": round(judge.distance(judge.cell.to_fractional(refined), n_res), 2),
                         "refined_llg": round(gain, 1)})  # fmt: skip
    return rows


def accuracy(judge: Judge, windows5: np.ndarray) -> list[dict]:
    """How close to the truth a search model must be: the route with library 5-residue windows at ``ACCURACY`` Å
    r.m.s. from the deposited residues they cover best (two of each), its best refined pose right or not."""
    truth, rows = judge.truth, []
    spans = range(len(judge.sequence) - 4)
    rms = {s: nearest(windows5, truth[5 * s : 5 * (s + 5)], 1)[1] for s in spans}
    span = max(spans, key=lambda s: int((rms[s] < 0.5).sum()))  # the residues the library covers best
    for target in ACCURACY:
        for i in np.nonzero(np.abs(rms[span] - target) < 0.03)[0][:2]:
            found = route(judge, windows5[i], f"library window {rms[span][i]:.2f} Å")
            rows.append({"rms_A": round(float(rms[span][i]), 2), "residues": [span + 1, span + 5],
                         "placed_right": found["best"][0]["refined_distance_A"] < RIGHT_A} | found)  # fmt: skip
    return rows


def main() -> None:
    torch.set_num_threads(2)
    results = {"run": run_metadata(), "right_A": RIGHT_A, "sets": {}}
    for name in ("5e5z", "1yjp"):
        judge = Judge(name)
        windows = strand_windows(len(judge.sequence))
        rows = placements(judge, windows)
        windows5 = strand_windows(5)
        typical = typical_strand(windows5)
        routes = [route(judge, ideal_main(5), "ideal strand, 5 residues"),
                  route(judge, typical, "library's typical strand, 5 residues")]  # fmt: skip
        results["sets"][name] = {"sequence": judge.sequence, "placements": rows, "routes": routes,
                                 "reach": reach(judge, windows), "accuracy": accuracy(judge, windows5)}
        right = [r["rms_A"] for r in results["sets"][name]["accuracy"] if r["placed_right"]]
        print(f"{name}: placed right with search models at {right} Å r.m.s.", flush=True)
        for kind in ("right", "wrong"):
            sel = [r for r in rows if r["kind"].startswith(kind)]
            print(f"{name} {kind} ({len(sel)}): refined LLG {min(r['refined_llg'] for r in sel):.0f}–"
                  f"{max(r['refined_llg'] for r in sel):.0f}, map CC {min(r['refined_map_cc'] for r in sel):.2f}–"
                  f"{max(r['refined_map_cc'] for r in sel):.2f}", flush=True)  # fmt: skip
        for r in routes:
            print(f"{name} route with the {r['model']}: best refined {r['best'][0]} ({r['seconds']} s)", flush=True)
    write_json(RESULTS / "peptide_likelihood.json", results)


if __name__ == "__main__":
    main()
