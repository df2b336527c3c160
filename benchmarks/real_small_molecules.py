"""Real small-molecule data (issue #29): ``patterson solve`` on measured reflections, judged by the published model.

Data: ``../shared/data/real/small/NAME/`` (12 folders): ``NAME.hkl`` + ``NAME.ins``, what a user has, and the
published model (``published.cif``, ``.res`` or ``.ins``). Nothing is copied into the repository.

Per data set:

1. ``patterson solve NAME.hkl --out TMP --no-progress`` with the defaults, as a subprocess: the seconds are the
   whole command as a user sees it (importing torch included). From ``summary.json``: verdict, R-work, R-free and
   their random-phase reference, space group, d_min, reflection counts.
2. The solution is ``phases.mtz`` (F, PHI in the group the solution was written in), expanded to P1 with gemmi and
   put on the P1 Friedel half. The published model (:func:`patterson.structures.read_structure`: every atom of the
   cell, hydrogens included, isotropic B) is placed in the data's cell by its fractional coordinates and its
   structure factors are computed at the same reflections (:func:`patterson.physics.structure_factors`).
3. Map CC = Re Σ F_sol F_model* / √(Σ|F_sol|² Σ|F_model|²) over the measured reflections (no F(000)): the Pearson
   correlation of the two maps, after :func:`patterson.evaluation.align`'s origin and hand search over **every**
   P1 shift plus inversion, a conservative superset of the origins the space group permits (whether the shift
   found is a permitted one is recorded). Chance: the observed amplitudes with random phases (``N_CHANCE`` seeds),
   scored the same way. Ceiling: the observed amplitudes with the model's phases. Solved: CC ≥ ``SOLVED_CC``.
4. Peer (when ``import cctbx`` works in a separate process): cctbx's charge flipping as Olex2 runs it,
   :func:`peers.run_cctbx`, on patterson's merged amplitudes (the F column of ``phases.mtz``) in the data's space
   group, in its own subprocess (cctbx must load before torch); its symmetrised solution (else its P1 one) is
   scored like patterson's. Its seconds are the flipping alone, as peers.py measures them.
5. Atoms: ``solution.res`` (the refined atoms, or the peaks when none were refined) and the published model, both
   expanded to the whole cell without hydrogens; the refined atoms moved by step 3's origin shift and hand
   (x = ε(y − t)); a published atom is matched when a moved atom lies within ``MATCH_A`` Å over lattice images;
   of the matched, the share with the published element. With R1, R1-free, wR2 and the route solve kept.
6. ``--cuts D ...``: steps 1–5 again on the same data cut at each D Å (``patterson solve --d-min D``; cctbx gets
   the truncated amplitudes), under ``cuts`` in the JSON and a second table. Without it nothing extra runs.

    python benchmarks/real_small_molecules.py [--data ../shared/data/real/small] [--only NAME ...] [--no-cctbx]
        [--cuts D ...] [--out benchmarks/results/real_small_molecules.json] [--table docs/tables/real_data_table.md]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import gemmi
import numpy as np
import torch

from _common import RESULTS, ROOT, TABLES, run_metadata, write_json, write_text
from patterson.cells import Cell, expand_to_p1, frac_distances
from patterson.evaluation import align, apply_alignment_f, score_f
from patterson.physics import AtomBatch, in_friedel_half, structure_factors
from patterson.shelx import read_shelx
from patterson.solving.symmetry import is_permitted_shift
from patterson.structures import read_structure
from patterson.symmetry import SpaceGroup, images

DATA = ROOT.parent / "shared" / "data" / "real" / "small"
SOLVED_CC = 0.8  # the issue: solved maps scored 0.91–0.998, random phases 0.06–0.24
N_CHANCE = 5
SOLVE_TIMEOUT_S = 1800
CCTBX_TIMEOUT_S = 900
MATCH_A = 0.3  # Å: a published atom is matched when a refined atom lies this close
MAJOR = 0.5  # a published site of at least this chemical occupancy is one a solution must find; below it, the minor
# component of a disorder (occupancy 0.09–0.24 on these data), which crystallographers model in refinement
ORIGIN = "P1: every origin shift and the inversion (a superset of the origins the space group permits)"


# --- running the solvers ------------------------------------------------------------------------------------------


def run_solve(hkl: Path, out: Path, d_min: float | None = None) -> dict[str, Any]:
    """``patterson solve HKL --out OUT --no-progress [--d-min D]`` as a subprocess: wall seconds, exit code, last
    stderr lines."""
    cmd = ["patterson", "solve", str(hkl), "--out", str(out), "--no-progress"]
    cmd += [] if d_min is None else ["--d-min", str(d_min)]
    t0 = time.perf_counter()
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=SOLVE_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        return {"seconds": time.perf_counter() - t0, "returncode": None, "error": f"timed out ({SOLVE_TIMEOUT_S} s)"}
    seconds = time.perf_counter() - t0
    record = {"seconds": seconds, "returncode": proc.returncode, "last_line": _last_line(proc.stdout)}
    if proc.returncode != 0:
        record["error"] = f"exit {proc.returncode}: {_last_line(proc.stderr) or _last_line(proc.stdout)}"
    return record


def _last_line(text: str) -> str:
    lines = [line for line in text.strip().splitlines() if line.strip()]
    return lines[-1][:400] if lines else ""


def cctbx_available() -> bool:
    """Whether ``import cctbx`` works, asked in a separate process (it must never meet torch first)."""
    proc = subprocess.run([sys.executable, "-c", "import cctbx, smtbx"], capture_output=True, timeout=300)
    return proc.returncode == 0


def run_cctbx(solved: Path, group: str, d_min: float | None = None) -> dict[str, Any]:
    """cctbx's charge flipping (peers.run_cctbx) on the amplitudes of ``solved/phases.mtz`` in ``group`` (to
    ``d_min`` Å when given), in its own process (started in this folder so that ``import peers`` finds the sibling
    script); its P1 and symmetrised structure factors come back as an .npz."""
    code = "import sys, peers, real_small_molecules as r; r.cctbx_child(*sys.argv[1:])"
    out = solved / "cctbx.npz"
    cmd = [sys.executable, "-c", code, str(solved / "phases.mtz"), group, str(out), str(d_min or "")]
    t0 = time.perf_counter()
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=CCTBX_TIMEOUT_S, cwd=Path(__file__).parent)
    except subprocess.TimeoutExpired:
        return {"error": f"timed out ({CCTBX_TIMEOUT_S} s)"}
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        return {"error": f"exit {proc.returncode}: {_last_line(proc.stderr)}", "process_seconds": wall}
    got = np.load(out)
    f_sg = got["f_sg"] if got["f_sg"].size else None
    return {"f_p1": got["f_p1"], "f_sg": f_sg, "claimed": bool(got["claimed"]), "seconds": float(got["seconds"]),
            "process_seconds": wall}  # fmt: skip


def cctbx_child(mtz: str, group: str, out: str, d_min: str = "") -> None:
    """The subprocess side of :func:`run_cctbx` (``peers`` is imported first, so cctbx loads before torch)."""
    import peers

    cut = float(d_min) if d_min else None
    data = read_phases(Path(mtz), cut)
    hkl_asu, f_asu = asu_amplitudes(Path(mtz), group, cut)
    case = {"group": SpaceGroup.of(group), "cell": data["cell"], "hkl": data["hkl"], "f_obs": np.abs(data["f"]),
            "hkl_asu": hkl_asu, "f_asu": f_asu}  # fmt: skip
    f_p1, claimed, f_sg, seconds = peers.run_cctbx(case)
    f_sg = np.zeros(0, dtype=np.complex128) if f_sg is None else f_sg
    np.savez(out, f_p1=f_p1, f_sg=f_sg, claimed=claimed, seconds=seconds)


# --- reading the solution and the published model -----------------------------------------------------------------


def read_phases(path: Path, d_min: float | None = None) -> dict[str, Any]:
    """``phases.mtz`` expanded to P1 on the Friedel half: hkl (M, 3), f (M,) complex (F, PHI), cell, its group;
    only the reflections to ``d_min`` Å when given."""
    mtz = gemmi.read_mtz_file(str(path))
    group = mtz.spacegroup.xhm()
    mtz.expand_to_p1()
    labels = [c.label for c in mtz.columns]
    table = np.array(mtz, copy=False).astype(np.float64)
    hkl = np.rint(table[:, :3]).astype(np.int64)
    f = table[:, labels.index("F")] * np.exp(1j * np.radians(table[:, labels.index("PHI")]))
    flip = ~in_friedel_half(hkl)
    hkl[flip] *= -1
    f[flip] = np.conj(f[flip])
    _, first = np.unique(hkl, axis=0, return_index=True)
    cell = Cell(*mtz.cell.parameters)
    first = np.sort(first[within(hkl[first], cell, d_min)])
    return {"hkl": hkl[first], "f": f[first], "cell": cell, "written_in": group}


def within(hkl: np.ndarray, cell: Cell, d_min: float | None) -> np.ndarray:
    """(M,) bool: the reflections at d ≥ ``d_min`` Å (all when None)."""
    if d_min is None:
        return np.ones(len(hkl), dtype=bool)
    return cell.d_spacing(hkl) >= d_min * (1 - 1e-6)


def asu_amplitudes(path: Path, group: str, d_min: float | None = None) -> tuple[np.ndarray, np.ndarray]:
    """The amplitudes of ``phases.mtz`` as one reflection per orbit of ``group`` (the data's space group, also when
    the solution was written in P1), to ``d_min`` Å when given: hkl (N, 3), F (N,)."""
    mtz = gemmi.read_mtz_file(str(path))
    if mtz.spacegroup.xhm() != SpaceGroup.of(group).name:
        mtz.expand_to_p1()
        mtz.spacegroup = SpaceGroup.of(group).gemmi
        mtz.ensure_asu()
    table = np.array(mtz, copy=False).astype(np.float64)
    hkl = np.rint(table[:, :3]).astype(np.int64)
    _, first = np.unique(hkl, axis=0, return_index=True)
    first = first[within(hkl[first], Cell(*mtz.cell.parameters), d_min)]
    return hkl[first], table[first, [c.label for c in mtz.columns].index("F")]


def published_path(folder: Path) -> Path:
    """The published model of a data folder: published.cif, .res or .ins."""
    for suffix in (".cif", ".res", ".ins"):
        if (folder / f"published{suffix}").is_file():
            return folder / f"published{suffix}"
    raise FileNotFoundError(f"{folder}: no published.cif, .res or .ins")


def model_f(path: Path, cell: Cell, hkl: np.ndarray) -> tuple[np.ndarray, dict[str, Any]]:
    """The published model's structure factors at ``hkl`` (M,) complex, its atoms placed in the data's ``cell`` by
    their fractional coordinates; and facts about it (atoms in the cell, the largest cell-edge difference)."""
    atoms = expand_to_p1(read_structure(path))  # a PDB/mmCIF model is its asymmetric unit; the others are whole
    own = Cell(*atoms.cell) if atoms.cell is not None else cell
    placed = atoms.replace(xyz=cell.to_cartesian(own.to_fractional(atoms.xyz)), cell=cell.parameters)
    f = structure_factors(AtomBatch.from_atoms([placed], cell), hkl)[0].numpy()
    edges = np.abs(np.array(own.parameters[:3]) - np.array(cell.parameters[:3])) / np.array(cell.parameters[:3])
    heavy = atoms.elements != "H"
    facts = {"published": path.name, "atoms_in_cell": int(len(atoms)), "non_h_in_cell": int(heavy.sum()),
             "non_h_asu": asu_non_h(path), "cell_edge_difference": float(edges.max())}  # fmt: skip
    return f, facts


def asu_non_h(path: Path) -> int | None:
    """Non-hydrogen sites the published file lists (its asymmetric unit); None if it cannot be read."""
    sites = asu_sites(path)
    return None if sites is None else len(sites[1])


def asu_sites(path: Path) -> tuple[np.ndarray, np.ndarray, list[str], np.ndarray] | None:
    """The non-hydrogen sites the published file lists (its asymmetric unit, disorder parts and mixed sites each
    once): fractional xyz (N, 3) in its own cell, elements (N,), labels, chemical occupancies (N,); None if it
    cannot be read. A SHELX site occupation is the chemical occupancy times the site's multiplicity / K."""
    try:
        if path.suffix in (".res", ".ins"):
            shelx = read_shelx(path.read_text(errors="replace"), str(path))
            group = SpaceGroup.of(shelx.group())
            sites = [(name, element, tuple(xyz), sof * len(group.rot) / multiplicity(group, xyz))
                     for name, element, xyz, sof, _ in shelx.atoms]  # fmt: skip
        else:
            doc = gemmi.cif.read(str(path))
            block = next(b for b in doc if b.find_value("_cell_length_a"))
            small = gemmi.make_small_structure_from_block(block)
            sites = [(x.label, x.element.name, (x.fract.x, x.fract.y, x.fract.z), x.occ) for x in small.sites]
    except (RuntimeError, ValueError, StopIteration, OSError):
        return None
    sites = [(n, str(e).strip().capitalize(), xyz, occ) for n, e, xyz, occ in sites
             if str(e).strip().upper() not in ("H", "D")]  # fmt: skip
    frac = np.array([xyz for _, _, xyz, _ in sites], dtype=np.float64).reshape(-1, 3)
    occupancy = np.array([min(occ, 1.0) for *_, occ in sites], dtype=np.float64)
    return frac, np.array([e for _, e, _, _ in sites]), [n for n, *_ in sites], occupancy


def multiplicity(group: SpaceGroup, xyz) -> int:
    """The number of distinct images of a site in the cell."""
    return len(np.unique(np.round(images(group, np.asarray(xyz, dtype=np.float64)), 3) % 1.0, axis=0))


# --- scoring ------------------------------------------------------------------------------------------------------


def compare(f_model: np.ndarray, f_sol: np.ndarray, hkl: np.ndarray, cell: Cell, group: SpaceGroup) -> dict:
    """Map CC and F-weighted phase error of ``f_sol`` against the model after the P1 origin and hand search."""
    ref, moving = torch.as_tensor(f_model)[None], torch.as_tensor(f_sol)[None]
    found = align(ref, moving, hkl, cell)
    moved = apply_alignment_f(moving, hkl, found)
    err = float(score_f(ref, moved, hkl, cell)["phase_error_weighted_deg"][0])
    shift = found.shift_frac[0].numpy()
    permitted = bool(is_permitted_shift(group, shift, tol=0.02))
    return {"cc": float(found.score[0]), "phase_error_deg": err, "shift": [round(float(s), 6) for s in shift],
            "inverted": bool(found.inverted[0]), "permitted_origin": permitted}  # fmt: skip


def chance(f_model: np.ndarray, amplitudes: np.ndarray, hkl: np.ndarray, cell: Cell, group: SpaceGroup) -> list:
    """CC of the observed amplitudes with random phases (seeds 0…N_CHANCE−1), scored like a solution."""
    out = []
    for seed in range(N_CHANCE):
        phi = np.random.default_rng(seed).uniform(0, 2 * np.pi, len(amplitudes))
        out.append(compare(f_model, amplitudes * np.exp(1j * phi), hkl, cell, group)["cc"])
    return out


def ceiling(f_model: np.ndarray, amplitudes: np.ndarray) -> float:
    """The CC of perfect phases: the observed amplitudes with the model's phases against the model."""
    num = float(np.sum(amplitudes * np.abs(f_model)))
    return num / float(np.sqrt(np.sum(amplitudes**2) * np.sum(np.abs(f_model) ** 2)))


# --- atoms: the refined model against the published one -----------------------------------------------------------


def non_h_frac(path: Path, cell: Cell) -> tuple[np.ndarray, np.ndarray]:
    """Every non-hydrogen atom of the cell that ``path`` describes (expanded to P1 by read_structure): fractional
    xyz (N, 3) in its own cell (the data's ``cell`` when the file has none) and elements (N,) as gemmi spells them."""
    atoms = expand_to_p1(read_structure(path))  # a PDB/mmCIF model is its asymmetric unit; the others are whole
    own = Cell(*atoms.cell) if atoms.cell is not None else cell
    elements = np.array([str(e).strip().capitalize() for e in atoms.elements])
    heavy = ~np.isin(elements, ("H", "D"))
    return own.to_fractional(atoms.xyz[heavy]), elements[heavy]


def nearest(a_frac: np.ndarray, b_frac: np.ndarray, cell: Cell, chunk: int = 64) -> tuple[np.ndarray, np.ndarray]:
    """For each point of a (P, 3), the shortest periodic distance in Å to a point of b (Q, 3) and that point's
    index, both (P,) (:func:`patterson.cells.frac_distances` in chunks, to bound its (P, Q, 27, 3) memory)."""
    dist, index = np.full(len(a_frac), np.inf), np.zeros(len(a_frac), dtype=np.int64)
    if len(b_frac) == 0:
        return dist, index
    for start in range(0, len(a_frac), chunk):
        d = frac_distances(a_frac[start : start + chunk], b_frac, cell)
        index[start : start + chunk] = d.argmin(axis=1)
        dist[start : start + chunk] = d.min(axis=1)
    return dist, index


def match_atoms(res: Path, published: Path, cell: Cell, score: dict) -> dict[str, Any]:
    """The atoms of ``res`` (solution.res) against the published non-H atoms.

    The refined atoms y, expanded to the whole cell, are moved by the alignment that took the solution map onto the
    published model's map, ρ'(x) = ρ(εx + t), so an atom at y lands at x = ε(y − t). For each non-H site the
    published file lists (its asymmetric unit), the nearest moved atom over lattice images: matched within
    ``MATCH_A``; of those, the share with the published element. ``*_cell``: the same over the published cell's
    atoms (special positions then weigh less, a general site once per symmetry copy)."""
    y, y_el = non_h_frac(res, cell)
    x, x_el = non_h_frac(published, cell)
    y = (-1.0 if score["inverted"] else 1.0) * (y - np.asarray(score["shift"]))
    listed = asu_sites(published)
    whole = match_sites(x, x_el, y, y_el, cell)
    asu = match_sites(listed[0], listed[1], y, y_el, cell) if listed is not None else whole
    labels = listed[2] if listed is not None else [f"atom {i}" for i in range(len(x))]
    major = listed[3] >= MAJOR if listed is not None else np.ones(len(x), dtype=bool)
    right = asu["right"][major]
    back, _ = nearest(y, x, cell)
    return {
        "published_non_h_p1": int(len(x)), "refined_p1": int(len(y)),
        "matched": asu["matched"], "elements_right": asu["elements_right"],
        "major_sites": int(major.sum()), "matched_major": float(asu["hit"][major].mean()) if major.any() else None,
        "elements_right_major": float(right.sum() / asu["hit"][major].sum()) if asu["hit"][major].any() else None,
        "minor_sites": {labels[i]: round(float(listed[3][i]), 3) for i in np.flatnonzero(~major)},
        "matched_cell": whole["matched"], "elements_right_cell": whole["elements_right"],
        "refined_unmatched_cell": float((back > MATCH_A).mean()) if len(y) else None,
        "median_distance": asu["median_distance"], "element_confusions": asu["confusions"],
        "unmatched_sites": {labels[i]: round(float(asu["distance"][i]), 2) for i in np.flatnonzero(~asu["hit"])},
    }  # fmt: skip


def match_sites(x: np.ndarray, x_el: np.ndarray, y: np.ndarray, y_el: np.ndarray, cell: Cell) -> dict[str, Any]:
    """Published sites x (P, 3) against moved refined atoms y (Q, 3) of the whole cell: the nearest distance (P,),
    hit (P,) within ``MATCH_A``, the matched share, the elements-right share of the matched, their confusions."""
    dist, index = nearest(x, y, cell)
    hit = dist <= MATCH_A
    right = hit & (y_el[index] == x_el) if len(y) else hit
    return {
        "distance": dist, "hit": hit, "right": right, "matched": float(hit.mean()) if len(x) else None,
        "elements_right": float(right.sum() / hit.sum()) if hit.any() else None,
        "median_distance": float(np.median(dist[hit])) if hit.any() else None,
        "confusions": confusions(x_el[hit], y_el[index[hit]]) if len(y) else {},
    }  # fmt: skip


def confusions(published: np.ndarray, refined: np.ndarray) -> dict[str, int]:
    """Matched sites whose element differs, counted by "published→refined"."""
    wrong = published != refined
    pairs, counts = np.unique([f"{a}→{b}" for a, b in zip(published[wrong], refined[wrong], strict=True)],
                              return_counts=True)  # fmt: skip
    return {str(k): int(n) for k, n in zip(pairs, counts, strict=True)}


def _route_rank(route: dict) -> tuple:
    """solve's order of routes: solved first, then the refined atoms' R1-free, then the map's R-free."""
    verdicts = ("solved", "uncertain", "not solved")
    r1, r_free = route.get("r1_free"), route.get("r_free")
    return (verdicts.index(route["verdict"]) if route.get("verdict") in verdicts else len(verdicts),
            math.inf if r1 is None else r1, math.inf if r_free is None else r_free)  # fmt: skip


def atoms_fields(summary: dict) -> dict[str, Any]:
    """What the results keep of summary.json's ``atoms`` block and its routes: R1, R1-free, wR2, whether the
    refinement alone called it solved, and the route whose solution was kept (solve's own ranking)."""
    block = summary.get("atoms") or {}
    tried = summary.get("routes") or []
    return {
        "atoms_refined": bool(block), "n_refined": block.get("n"), "refined_elements": block.get("elements"),
        "r1_work": block.get("r1_work"), "r1_free": block.get("r1_free"), "wr2": block.get("wr2"),
        "atoms_claimed": block.get("solved"), "map_verdict": summary.get("map_verdict"),
        "routes": tried, "route": min(tried, key=_route_rank)["route"] if tried else summary.get("method"),
    }  # fmt: skip


# --- one data set -------------------------------------------------------------------------------------------------


def summary_fields(summary: dict) -> dict[str, Any]:
    """What the results keep of ``summary.json``."""
    data, sym = summary.get("data", {}), summary.get("symmetry") or {}
    keys = ("verdict", "verdict_explanation", "r_work", "r_free", "r_free_random", "method", "checkpoint",
            "map_skewness", "n_peaks")
    return {
        "spacegroup": data.get("spacegroup"),
        "written_in": sym.get("written_in"),
        "symmetry_worst_agreement": sym.get("worst_agreement"),
        "d_min": data.get("d_min"),
        "reflections_unique": data.get("unique_merged"),
        "reflections_p1": data.get("p1_reflections"),
        **{k: summary.get(k) for k in keys},
        "claimed": summary.get("verdict") == "solved",
        "warnings": summary.get("warnings", []),
        "timings_s": summary.get("timings_s"),
        "phasing_cycles": {name: run.get("iterations") for name, run in (summary.get("runs") or {}).items()},
    }


def judge(solved: Path, published: Path, group_name: str, d_min: float | None = None) -> tuple[dict, dict]:
    """Scores of the solution in ``solved`` (to ``d_min`` Å when given) against ``published``; also what the
    peer's scoring needs."""
    sol = read_phases(solved / "phases.mtz", d_min)
    hkl, cell, group = sol["hkl"], sol["cell"], SpaceGroup.of(group_name)
    f_mod, facts = model_f(published, cell, hkl)
    amp = np.abs(sol["f"])
    score = compare(f_mod, sol["f"], hkl, cell, group)
    rand = chance(f_mod, amp, hkl, cell, group)
    record = {**facts, "reflections_scored": len(hkl), "d_scored": float(np.min(cell.d_spacing(hkl))), **score,
              "chance_cc": rand, "chance_cc_median": float(np.median(rand)), "chance_cc_max": float(np.max(rand)),
              "cc_ceiling": ceiling(f_mod, amp), "solved": score["cc"] >= SOLVED_CC}  # fmt: skip
    return record, {"hkl": hkl, "cell": cell, "group": group, "f_model": f_mod}


def judge_atoms(solved: Path, published: Path, cell: Cell, score: dict) -> dict[str, Any]:
    """:func:`match_atoms` on ``solved/solution.res``; a file that cannot be read is recorded, never raised."""
    try:
        return match_atoms(solved / "solution.res", published, cell, score)
    except Exception as exc:  # noqa: BLE001 - an unreadable solution.res is a result
        return {"error": f"{type(exc).__name__}: {str(exc).splitlines()[0][:300] if str(exc) else ''}"}


def judge_cctbx(peer: dict, scoring: dict) -> dict[str, Any]:
    """The peer's solution (symmetrised if it gave one, else P1) scored like patterson's."""
    if "error" in peer:
        return peer
    use = "symmetrised" if peer["f_sg"] is not None else "P1"
    f = peer["f_sg"] if peer["f_sg"] is not None else peer["f_p1"]
    score = compare(scoring["f_model"], f, scoring["hkl"], scoring["cell"], scoring["group"])
    return {**score, "scored": use, "solved": score["cc"] >= SOLVED_CC, "claimed": peer["claimed"],
            "seconds": peer["seconds"], "process_seconds": peer["process_seconds"]}  # fmt: skip


def run_dataset(folder: Path, out: Path, with_cctbx: bool, d_min: float | None = None) -> dict[str, Any]:
    """Solve one data set into ``out`` (at ``d_min`` Å when given), judge its map and atoms, run the peer on the same
    amplitudes; a crash anywhere is recorded in ``error``, never raised."""
    name = folder.name
    record: dict[str, Any] = {"name": name} if d_min is None else {"name": name, "d_cut": d_min}
    try:
        record.update(run_solve(folder / f"{name}.hkl", out, d_min))
        if "error" in record:
            return record
        summary = json.loads((out / "summary.json").read_text())
        record.update(summary_fields(summary))
        record.update(atoms_fields(summary))
        published = published_path(folder)
        scores, scoring = judge(out, published, record["spacegroup"], d_min)
        record.update(scores)
        record["atom_match"] = judge_atoms(out, published, scoring["cell"], scores)
        if with_cctbx:
            record["cctbx"] = judge_cctbx(run_cctbx(out, record["spacegroup"], d_min), scoring)
    except Exception as exc:  # noqa: BLE001 - a data set that crashes is a result, not the end of the run
        record["error"] = f"{type(exc).__name__}: {str(exc).splitlines()[0][:300] if str(exc) else ''}"
    return record


# --- the tables ---------------------------------------------------------------------------------------------------

HEAD = ["data set", "group", "d_min Å", "CC vs published", "chance (median, max)", "solved", "claimed",
        "atoms matched (0.3 Å)", "elements right", "R1", "R1-free", "route", "R-free (map)", "seconds"]  # fmt: skip
PEER_HEAD = ["cctbx CC", "cctbx solved", "cctbx claimed", "cctbx seconds (flipping / process)"]
MATCHED_OK, ELEMENTS_OK = 0.9, 0.85  # the totals count data sets with at least these fractions


def _num(value: Any, fmt: str) -> str:
    return "—" if value is None else format(value, fmt)


def _pct(value: float | None) -> str:
    return "—" if value is None else f"{100 * value:.0f}%"


def _line(cells: list[str]) -> str:
    return "| " + " | ".join(cells) + " |"


def _claimed(r: dict) -> str:
    if not r["claimed"]:
        return f"no ({r['verdict']})"
    return "yes" if r.get("map_verdict") in (None, "solved") else f"yes (atoms; map {r['map_verdict']})"


def _atom_cells(r: dict) -> list[str]:
    """Matched (of the published asymmetric unit's non-H atoms), elements right, R1, R1-free, route."""
    m = r.get("atom_match") or {"error": "not run"}
    if "error" in m:
        matched, elements = f"error: {m['error']}", ""
    else:
        n = r.get("non_h_asu") if r.get("non_h_asu") is not None else m["published_non_h_p1"]
        share = f"{round((m['matched'] or 0) * n)}/{n} ({_pct(m['matched'])})"
        if m.get("minor_sites"):
            k = m["major_sites"]
            share += f"; major sites {round((m['matched_major'] or 0) * k)}/{k} ({_pct(m['matched_major'])})"
        peaks = "" if r.get("atoms_refined") else " (peaks, not refined)"
        extra = m.get("refined_unmatched_cell") or 0.0
        extra = f"; {_pct(extra)} of its atoms unmatched" if extra > 0 else ""
        matched, elements = f"{share}{peaks}{extra}", _pct(m["elements_right"])
    return [matched, elements, _num(r.get("r1_work"), ".3f"), _num(r.get("r1_free"), ".3f"), r.get("route") or "—"]


def _peer_cells(r: dict) -> list[str]:
    c = r.get("cctbx", {"error": "not run"})
    if "cc" not in c:
        return [f"error: {c['error']}", "", "", ""]
    return [f"{c['cc']:.3f}", "yes" if c["solved"] else "no", "yes" if c["claimed"] else "no",
            f"{c['seconds']:.1f} / {c['process_seconds']:.0f}"]  # fmt: skip


def _row(r: dict, peer: bool) -> str:
    if "cc" not in r:
        cells = [r["name"], r.get("spacegroup") or "—", _num(r.get("d_min"), ".2f"), f"error: {r.get('error', '?')}"]
        cells += [""] * (len(HEAD) - 5) + [_num(r.get("seconds"), ".0f")]
        return _line(cells + ([""] * len(PEER_HEAD) if peer else []))
    group = r["spacegroup"] if r["written_in"] == r["spacegroup"] else f"{r['spacegroup']} (left in {r['written_in']})"
    cells = [r["name"], group, f"{r['d_min']:.2f}", f"{r['cc']:.3f}",
             f"{r['chance_cc_median']:.2f} (≤ {r['chance_cc_max']:.2f})", "yes" if r["solved"] else "no",
             _claimed(r), *_atom_cells(r), _num(r.get("r_free"), ".3f"), f"{r['seconds']:.0f}"]  # fmt: skip
    return _line(cells + (_peer_cells(r) if peer else []))


def _fraction(r: dict, key: str) -> float:
    """A data set's atom_match fraction (0 when missing)."""
    return (r.get("atom_match") or {}).get(key) or 0.0


def _major(r: dict) -> float:
    """The matched share of the published sites of occupancy ≥ MAJOR (all sites where the file has no minor)."""
    m = r.get("atom_match") or {}
    return (m.get("matched_major") if m.get("matched_major") is not None else m.get("matched")) or 0.0


def _totals(rows: list[dict], peer: bool) -> str:
    n = len(rows)
    ok = [r for r in rows if "cc" in r]
    solved, claimed = sum(r["solved"] for r in ok), sum(r["claimed"] for r in ok)
    right = sum(r["solved"] and r["claimed"] for r in ok)
    chance = [c for r in ok for c in r["chance_cc"]]
    span = f"{min(chance):.2f}–{max(chance):.2f}" if chance else "—"
    secs = [r["seconds"] for r in rows if r.get("seconds") is not None]
    matched = sum(_fraction(r, "matched") >= MATCHED_OK for r in ok)
    major = sum(_major(r) >= MATCHED_OK for r in ok)
    elements = sum(_fraction(r, "elements_right") >= ELEMENTS_OK for r in ok)
    cells = ["**total**", "", "", f"solved {solved}/{n}", f"random {span}", f"{solved}/{n}",
             f"claimed {claimed}, right {right}", f"≥ {MATCHED_OK:.0%}: {matched}/{n}; major sites {major}/{n}",
             f"≥ {ELEMENTS_OK:.0%}: {elements}/{n}", "", "", "", "",
             f"median {np.median(secs):.0f}" if secs else "—"]  # fmt: skip
    if peer:
        c = [r["cctbx"] for r in ok if "cc" in r.get("cctbx", {})]
        cs, cc_ = sum(x["solved"] for x in c), sum(x["claimed"] for x in c)
        cr = sum(x["solved"] and x["claimed"] for x in c)
        med = f"median {np.median([x['seconds'] for x in c]):.1f}" if c else "—"
        cells += [f"solved {cs}/{n}", f"{cs}/{n}", f"claimed {cc_}, right {cr}", med]
    return _line(cells)


def _claims_line(rows: list[dict]) -> str:
    """The claims judged by the atoms: how many claimed data sets have ≥ MATCHED_OK of the published atoms."""
    claimed = [r for r in rows if "cc" in r and r["claimed"]]
    good = sum(_fraction(r, "matched") >= MATCHED_OK for r in claimed)
    major = sum(_major(r) >= MATCHED_OK for r in claimed)
    wrong = [f"{r['name']}, unmatched {_unmatched(r)}" for r in claimed if _fraction(r, "matched") < MATCHED_OK]
    tail = f" (below: {'; '.join(wrong)})" if wrong else ""
    return (f"Claims with ≥ {MATCHED_OK:.0%} of the published atoms matched: {good} of {len(claimed)}{tail}; "
            f"with ≥ {MATCHED_OK:.0%} of the published sites of occupancy ≥ {MAJOR} matched: {major} of "
            f"{len(claimed)}.")  # fmt: skip


def _unmatched(r: dict) -> str:
    """The unmatched published sites, with the occupancy of a minor disorder component."""
    m = r.get("atom_match") or {}
    minor = m.get("minor_sites") or {}
    names = [f"{k} (occupancy {minor[k]:.2f})" if k in minor else k for k in m.get("unmatched_sites") or {}]
    return " ".join(names) or "?"


def render(results: dict) -> str:
    """docs/tables/real_data_table.md from the results file alone (provenance included)."""
    rows = results["datasets"]
    peer = any("cctbx" in r for r in rows)
    head = HEAD + (PEER_HEAD if peer else [])
    lines = [_line(head), "|" + "---|" * len(head)]
    lines += [_row(r, peer) for r in rows] + [_totals(rows, peer), "", _claims_line(rows)]
    run, d = results["run"], results.get("match_distance_a", MATCH_A)
    lines += ["", f"Solved: map CC ≥ {results['solved_cc']} with the published model after the origin and hand "
              f"search ({results['origin_search']}); chance: the observed amplitudes with {results['n_chance']} sets "
              "of random phases, scored alike; claimed: patterson's verdict is `solved` (by the map's R-free, or by "
              "the refined atoms' R1-free). Atoms matched: the share of the published model's non-H atoms with an "
              f"atom of solution.res within {d} Å, both expanded to the whole cell, the refined atoms moved by the "
              "origin and hand that aligned the maps (of the asymmetric unit's non-H sites as the published file "
              f"lists them, disorder and mixed sites included; 'major sites': those of chemical occupancy ≥ {MAJOR}, "
              "where the file has minor disorder components; the share of solution.res's own atoms with no "
              "published atom that close is shown where it is not zero); elements right: of the matched atoms, "
              "those with the published element. R1, R1-free: the refined atoms against the work and free reflections; "
              "route: the phasing route whose solution was kept. Seconds: the whole "
              f"`patterson solve` process ({results['threads']}); cctbx: its flipping alone, as benchmarks/peers.py "
              "times it, and its whole subprocess (imports, reading phases.mtz, flipping). "
              f"Run {run['date']} on {run['platform']} ({run['cpu_count']} CPUs), patterson "
              f"{run['patterson']}, torch {run['torch']}, gemmi {run['gemmi']}; `{run['command']}`; whole run "
              f"{results['total_seconds'] / 60:.1f} min."]  # fmt: skip
    if results.get("cuts"):
        lines += ["", *render_cuts(results)]
    return "\n".join(lines) + "\n"


def _cut_counts(rows: list[dict], label: str, peer: bool) -> str:
    """One row of the cuts summary: solved, claimed, right, atoms matched and median seconds over ``rows``."""
    ok = [r for r in rows if "cc" in r]
    secs = [r["seconds"] for r in rows if r.get("seconds") is not None]
    cells = [label, str(len(rows)), str(sum(r["solved"] for r in ok)), str(sum(r["claimed"] for r in ok)),
             str(sum(r["solved"] and r["claimed"] for r in ok)),
             f"{sum(_fraction(r, 'matched') >= MATCHED_OK for r in ok)} / {sum(_major(r) >= MATCHED_OK for r in ok)}",
             f"{np.median(secs):.0f}" if secs else "—"]  # fmt: skip
    if peer:
        c = [r["cctbx"] for r in ok if "cc" in r.get("cctbx", {})]
        cells += [str(sum(x["solved"] for x in c)), str(sum(x["claimed"] for x in c)),
                  str(sum(x["solved"] and x["claimed"] for x in c)),
                  f"{np.median([x['seconds'] for x in c]):.1f}" if c else "—"]  # fmt: skip
    return _line(cells)


def _cut_cell(r: dict | None) -> str:
    if r is None or "cc" not in r:
        return "—" if r is None else f"error: {r.get('error', '?')}"
    verdict = "claimed" if r["claimed"] else r["verdict"]
    atoms = "atoms" if r.get("atoms_refined") else "peaks (no atoms refined)"
    return (f"{r['cc']:.2f} (≤ {r['chance_cc_max']:.2f}), {verdict}, "
            f"{_pct(_fraction(r, 'matched'))} {atoms} matched, {r['seconds']:.0f} s")  # fmt: skip


def _cut_peer_cell(r: dict | None) -> str:
    c = (r or {}).get("cctbx")
    if c is None or "cc" not in c:
        return "—" if c is None else f"error: {c['error']}"
    return f"{c['cc']:.2f}, {'claimed' if c['claimed'] else 'not claimed'}, {c['seconds']:.1f} s"


def render_cuts(results: dict) -> list[str]:
    """The second table: per resolution cut, counts beside cctbx's (the full data first); then each data set."""
    cuts, rows = results["cuts"]["resolutions"], results["cuts"]["datasets"]
    peer = any("cctbx" in r for r in rows)
    head = ["d_min Å", "data sets", "solved (CC)", "claimed", "claims right",
            f"atoms ≥ {MATCHED_OK:.0%} matched (all / major sites)",
            "median seconds"] + (["cctbx solved", "cctbx claimed", "cctbx claims right", "cctbx median seconds"]
                                 if peer else [])  # fmt: skip
    lines = ["Resolution cuts (`--cuts`): the same data cut at each resolution (`patterson solve --d-min`; cctbx "
             "flips the same truncated amplitudes), scored the same way at the cut (CC and chance over the "
             "reflections to the cut).", "", _line(head), "|" + "---|" * len(head),
             _cut_counts(results["datasets"], "all data", peer)]  # fmt: skip
    lines += [_cut_counts([r for r in rows if r["d_cut"] == d], f"{d:.2f}", peer) for d in cuts]
    grid = ["data set"] + [c for d in cuts for c in [f"patterson {d:.2f} Å"] + ([f"cctbx {d:.2f} Å"] if peer else [])]
    lines += ["", "Per data set: CC (chance max), verdict, published atoms matched, seconds.", "", _line(grid),
              "|" + "---|" * len(grid)]  # fmt: skip
    by = {(r["name"], r["d_cut"]): r for r in rows}
    for name in dict.fromkeys(r["name"] for r in rows):
        cells = [name]
        for d in cuts:
            cells += [_cut_cell(by.get((name, d)))] + ([_cut_peer_cell(by.get((name, d)))] if peer else [])
        lines.append(_line(cells))
    return lines


# --- main ---------------------------------------------------------------------------------------------------------


def parse_args() -> argparse.Namespace:
    """The command line (see the module docstring)."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", type=Path, default=DATA)
    p.add_argument("--only", nargs="+", default=None, help="data set names (default: every folder)")
    p.add_argument("--no-cctbx", action="store_true", help="skip the cctbx peer even when cctbx imports")
    p.add_argument("--cuts", nargs="+", type=float, default=[], metavar="D",
                   help="also solve (and run cctbx) at each of these resolution cut-offs in Å (default: none)")
    p.add_argument("--out", type=Path, default=RESULTS / "real_small_molecules.json")
    p.add_argument("--table", type=Path, default=TABLES / "real_data_table.md")
    return p.parse_args()


def main() -> None:
    args = parse_args()
    folders = sorted(f for f in args.data.iterdir() if f.is_dir() and (args.only is None or f.name in args.only))
    peer = not args.no_cctbx and cctbx_available()
    threads = os.environ.get("OMP_NUM_THREADS")
    results = {"benchmark": "patterson solve on real small-molecule data vs the published models (issue #29)",
               "run": run_metadata(), "data": str(args.data), "solved_cc": SOLVED_CC, "n_chance": N_CHANCE,
               "origin_search": ORIGIN, "match_distance_a": MATCH_A, "cctbx": peer,
               "threads": f"OMP_NUM_THREADS={threads}" if threads else "default torch threads",
               "datasets": []}  # fmt: skip
    if args.cuts:
        results["cuts"] = {"resolutions": sorted(args.cuts), "datasets": []}
    t0 = time.perf_counter()
    runs = [(folder, None) for folder in folders] + [(f, cut) for f in folders for cut in sorted(args.cuts)]
    with tempfile.TemporaryDirectory(prefix="real_small_") as tmp:  # all data first: the timed comparison
        for folder, cut in runs:
            where = Path(tmp) / (folder.name if cut is None else f"{folder.name}_d{cut:g}")
            record = run_dataset(folder, where, peer, cut)
            (results["datasets"] if cut is None else results["cuts"]["datasets"]).append(record)
            results["total_seconds"] = time.perf_counter() - t0
            write_json(args.out, results, indent=1)
            print(_progress(record), flush=True)
    write_text(args.table, render(results))
    print(f"wrote {args.out} and {args.table} in {results['total_seconds'] / 60:.1f} min")


def _progress(r: dict) -> str:
    name = r["name"] if "d_cut" not in r else f"{r['name']} @{r['d_cut']:g} Å"
    if "cc" not in r:
        return f"{name:20s} error: {r.get('error')}"
    c, m = r.get("cctbx", {}), r.get("atom_match", {})
    peer = f" | cctbx CC {c['cc']:.3f} claimed {c['claimed']}" if "cc" in c else (f" | cctbx {c}" if c else "")
    atoms = (f", matched {_pct(m.get('matched'))} elements {_pct(m.get('elements_right'))} R1-free "
             f"{_num(r.get('r1_free'), '.3f')} ({r.get('route')})") if "error" not in m else f", atoms {m['error']}"
    return (f"{name:20s} {r['spacegroup']:12s} CC {r['cc']:.3f} (chance ≤ {r['chance_cc_max']:.2f}) "
            f"{r['verdict']}, R-free {r['r_free']:.3f}{atoms}, {r['seconds']:.0f} s{peer}")  # fmt: skip


if __name__ == "__main__":
    main()
