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

    python benchmarks/real_small_molecules.py [--data ../shared/data/real/small] [--only NAME ...] [--no-cctbx]
        [--out benchmarks/results/real_small_molecules.json] [--table docs/tables/real_data_table.md]
"""

from __future__ import annotations

import argparse
import json
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
from patterson.cells import Cell
from patterson.evaluation import align, apply_alignment_f, score_f
from patterson.physics import AtomBatch, in_friedel_half, structure_factors
from patterson.shelx import read_shelx
from patterson.solving.symmetry import is_permitted_shift
from patterson.structures import read_structure
from patterson.symmetry import SpaceGroup

DATA = ROOT.parent / "shared" / "data" / "real" / "small"
SOLVED_CC = 0.8  # the issue: solved maps scored 0.91–0.998, random phases 0.06–0.24
N_CHANCE = 5
SOLVE_TIMEOUT_S = 1800
CCTBX_TIMEOUT_S = 900
ORIGIN = "P1: every origin shift and the inversion (a superset of the origins the space group permits)"


# --- running the solvers ------------------------------------------------------------------------------------------


def run_solve(hkl: Path, out: Path) -> dict[str, Any]:
    """``patterson solve HKL --out OUT --no-progress`` as a subprocess: wall seconds, exit code, last stderr lines."""
    cmd = ["patterson", "solve", str(hkl), "--out", str(out), "--no-progress"]
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


def run_cctbx(solved: Path, group: str) -> dict[str, Any]:
    """cctbx's charge flipping (peers.run_cctbx) on the amplitudes of ``solved/phases.mtz`` in ``group``, in its own
    process (started in this folder so that ``import peers`` finds the sibling script); its P1 and symmetrised
    structure factors come back as an .npz."""
    code = "import sys, peers, real_small_molecules as r; r.cctbx_child(sys.argv[1], sys.argv[2], sys.argv[3])"
    out = solved / "cctbx.npz"
    cmd = [sys.executable, "-c", code, str(solved / "phases.mtz"), group, str(out)]
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


def cctbx_child(mtz: str, group: str, out: str) -> None:
    """The subprocess side of :func:`run_cctbx` (``peers`` is imported first, so cctbx loads before torch)."""
    import peers

    data = read_phases(Path(mtz))
    hkl_asu, f_asu = asu_amplitudes(Path(mtz), group)
    case = {"group": SpaceGroup.of(group), "cell": data["cell"], "hkl": data["hkl"], "f_obs": np.abs(data["f"]),
            "hkl_asu": hkl_asu, "f_asu": f_asu}  # fmt: skip
    f_p1, claimed, f_sg, seconds = peers.run_cctbx(case)
    f_sg = np.zeros(0, dtype=np.complex128) if f_sg is None else f_sg
    np.savez(out, f_p1=f_p1, f_sg=f_sg, claimed=claimed, seconds=seconds)


# --- reading the solution and the published model -----------------------------------------------------------------


def read_phases(path: Path) -> dict[str, Any]:
    """``phases.mtz`` expanded to P1 on the Friedel half: hkl (M, 3), f (M,) complex (F, PHI), cell, its group."""
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
    first = np.sort(first)
    return {"hkl": hkl[first], "f": f[first], "cell": Cell(*mtz.cell.parameters), "written_in": group}


def asu_amplitudes(path: Path, group: str) -> tuple[np.ndarray, np.ndarray]:
    """The amplitudes of ``phases.mtz`` as one reflection per orbit of ``group`` (the data's space group, also when
    the solution was written in P1): hkl (N, 3), F (N,)."""
    mtz = gemmi.read_mtz_file(str(path))
    if mtz.spacegroup.xhm() != SpaceGroup.of(group).name:
        mtz.expand_to_p1()
        mtz.spacegroup = SpaceGroup.of(group).gemmi
        mtz.ensure_asu()
    table = np.array(mtz, copy=False).astype(np.float64)
    hkl = np.rint(table[:, :3]).astype(np.int64)
    _, first = np.unique(hkl, axis=0, return_index=True)
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
    atoms = read_structure(path)
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
    try:
        if path.suffix in (".res", ".ins"):
            atoms = read_shelx(path.read_text(errors="replace"), str(path)).atoms
            return sum(1 for atom in atoms if atom[1].upper() not in ("H", "D"))
        doc = gemmi.cif.read(str(path))
        block = next(b for b in doc if b.find_value("_cell_length_a"))
        small = gemmi.make_small_structure_from_block(block)
        return sum(1 for site in small.sites if site.element.atomic_number > 1)
    except (RuntimeError, ValueError, StopIteration, OSError):
        return None


# --- scoring ------------------------------------------------------------------------------------------------------


def compare(f_model: np.ndarray, f_sol: np.ndarray, hkl: np.ndarray, cell: Cell, group: SpaceGroup) -> dict:
    """Map CC and F-weighted phase error of ``f_sol`` against the model after the P1 origin and hand search."""
    ref, moving = torch.as_tensor(f_model)[None], torch.as_tensor(f_sol)[None]
    found = align(ref, moving, hkl, cell)
    moved = apply_alignment_f(moving, hkl, found)
    err = float(score_f(ref, moved, hkl, cell)["phase_error_weighted_deg"][0])
    shift = found.shift_frac[0].numpy()
    permitted = bool(is_permitted_shift(group, shift, tol=0.02))
    return {"cc": float(found.score[0]), "phase_error_deg": err, "shift": [round(float(s), 4) for s in shift],
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
    }


def judge(solved: Path, published: Path, group_name: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """Scores of the solution in ``solved`` against ``published``; also what the peer's scoring needs."""
    sol = read_phases(solved / "phases.mtz")
    hkl, cell, group = sol["hkl"], sol["cell"], SpaceGroup.of(group_name)
    f_mod, facts = model_f(published, cell, hkl)
    amp = np.abs(sol["f"])
    score = compare(f_mod, sol["f"], hkl, cell, group)
    rand = chance(f_mod, amp, hkl, cell, group)
    record = {**facts, "reflections_scored": len(hkl), **score, "chance_cc": rand,
              "chance_cc_median": float(np.median(rand)), "chance_cc_max": float(np.max(rand)),
              "cc_ceiling": ceiling(f_mod, amp), "solved": score["cc"] >= SOLVED_CC}  # fmt: skip
    return record, {"hkl": hkl, "cell": cell, "group": group, "f_model": f_mod}


def judge_cctbx(peer: dict, scoring: dict) -> dict[str, Any]:
    """The peer's solution (symmetrised if it gave one, else P1) scored like patterson's."""
    if "error" in peer:
        return peer
    use = "symmetrised" if peer["f_sg"] is not None else "P1"
    f = peer["f_sg"] if peer["f_sg"] is not None else peer["f_p1"]
    score = compare(scoring["f_model"], f, scoring["hkl"], scoring["cell"], scoring["group"])
    return {**score, "scored": use, "solved": score["cc"] >= SOLVED_CC, "claimed": peer["claimed"],
            "seconds": peer["seconds"], "process_seconds": peer["process_seconds"]}  # fmt: skip


def run_dataset(folder: Path, work: Path, with_cctbx: bool) -> dict[str, Any]:
    """Solve one data set, judge it, run the peer; a crash anywhere is recorded in ``error``, never raised."""
    name = folder.name
    record: dict[str, Any] = {"name": name}
    try:
        record.update(run_solve(folder / f"{name}.hkl", work / name))
        if "error" in record:
            return record
        record.update(summary_fields(json.loads((work / name / "summary.json").read_text())))
        scores, scoring = judge(work / name, published_path(folder), record["spacegroup"])
        record.update(scores)
        if with_cctbx:
            record["cctbx"] = judge_cctbx(run_cctbx(work / name, record["spacegroup"]), scoring)
    except Exception as exc:  # noqa: BLE001 - a data set that crashes is a result, not the end of the run
        record["error"] = f"{type(exc).__name__}: {str(exc).splitlines()[0][:300] if str(exc) else ''}"
    return record


# --- the table ----------------------------------------------------------------------------------------------------


def _num(value: Any, fmt: str) -> str:
    return "—" if value is None else format(value, fmt)


def _row(r: dict, peer: bool) -> str:
    if "cc" not in r:
        cells = [r["name"], r.get("spacegroup") or "—", _num(r.get("d_min"), ".2f"), f"error: {r.get('error', '?')}",
                 "", "", "", "", _num(r.get("seconds"), ".0f")]  # fmt: skip
        return "| " + " | ".join(cells + (["", "", "", ""] if peer else [])) + " |"
    group = r["spacegroup"] if r["written_in"] == r["spacegroup"] else f"{r['spacegroup']} (left in {r['written_in']})"
    cells = [r["name"], group, f"{r['d_min']:.2f}", f"{r['cc']:.3f}",
             f"{r['chance_cc_median']:.2f} (≤ {r['chance_cc_max']:.2f})", "yes" if r["solved"] else "no",
             "yes" if r["claimed"] else f"no ({r['verdict']})", _num(r.get("r_free"), ".3f"),
             f"{r['seconds']:.0f}"]  # fmt: skip
    if peer:
        c = r.get("cctbx", {"error": "not run"})
        if "cc" in c:
            cells += [f"{c['cc']:.3f}", "yes" if c["solved"] else "no", "yes" if c["claimed"] else "no",
                      f"{c['seconds']:.1f} / {c['process_seconds']:.0f}"]  # fmt: skip
        else:
            cells += [f"error: {c['error']}", "", "", ""]
    return "| " + " | ".join(cells) + " |"


def _totals(rows: list[dict], peer: bool) -> str:
    n = len(rows)
    ok = [r for r in rows if "cc" in r]
    solved, claimed = sum(r["solved"] for r in ok), sum(r["claimed"] for r in ok)
    right = sum(r["solved"] and r["claimed"] for r in ok)
    chance = [c for r in ok for c in r["chance_cc"]]
    span = f"{min(chance):.2f}–{max(chance):.2f}" if chance else "—"
    secs = [r["seconds"] for r in rows if r.get("seconds") is not None]
    cells = ["**total**", "", "", f"solved {solved}/{n}", f"random {span}", f"{solved}/{n}",
             f"claimed {claimed}, right {right}", "", f"median {np.median(secs):.0f}" if secs else "—"]  # fmt: skip
    if peer:
        c = [r["cctbx"] for r in ok if "cc" in r.get("cctbx", {})]
        cs, cc_ = sum(x["solved"] for x in c), sum(x["claimed"] for x in c)
        cr = sum(x["solved"] and x["claimed"] for x in c)
        med = f"median {np.median([x['seconds'] for x in c]):.1f}" if c else "—"
        cells += [f"solved {cs}/{n}", f"{cs}/{n}", f"claimed {cc_}, right {cr}", med]
    return "| " + " | ".join(cells) + " |"


def render(results: dict) -> str:
    """docs/tables/real_data_table.md from the results file alone (provenance included)."""
    rows = results["datasets"]
    peer = any("cctbx" in r for r in rows)
    head = ["data set", "group", "d_min Å", "CC vs published", "chance (median, max)", "solved", "claimed", "R-free",
            "seconds"]  # fmt: skip
    if peer:
        head += ["cctbx CC", "cctbx solved", "cctbx claimed", "cctbx seconds (flipping / process)"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    lines += [_row(r, peer) for r in rows] + [_totals(rows, peer)]
    run = results["run"]
    lines += ["", f"Solved: map CC ≥ {results['solved_cc']} with the published model after the origin and hand "
              f"search ({results['origin_search']}); chance: the observed amplitudes with {results['n_chance']} sets "
              "of random phases, scored alike; claimed: patterson's verdict is `solved`. Seconds: the whole "
              f"`patterson solve` process ({results['threads']}); cctbx: its flipping alone, as benchmarks/peers.py "
              "times it, and its whole subprocess (imports, reading phases.mtz, flipping). "
              f"Run {run['date']} on {run['platform']} ({run['cpu_count']} CPUs), patterson "
              f"{run['patterson']}, torch {run['torch']}, gemmi {run['gemmi']}; `{run['command']}`; whole run "
              f"{results['total_seconds'] / 60:.1f} min."]  # fmt: skip
    return "\n".join(lines) + "\n"


# --- main ---------------------------------------------------------------------------------------------------------


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", type=Path, default=DATA)
    p.add_argument("--only", nargs="+", default=None, help="data set names (default: every folder)")
    p.add_argument("--no-cctbx", action="store_true", help="skip the cctbx peer even when cctbx imports")
    p.add_argument("--out", type=Path, default=RESULTS / "real_small_molecules.json")
    p.add_argument("--table", type=Path, default=TABLES / "real_data_table.md")
    args = p.parse_args()
    folders = sorted(f for f in args.data.iterdir() if f.is_dir() and (args.only is None or f.name in args.only))
    peer = not args.no_cctbx and cctbx_available()
    threads = os.environ.get("OMP_NUM_THREADS")
    results = {"benchmark": "patterson solve on real small-molecule data vs the published models (issue #29)",
               "run": run_metadata(), "data": str(args.data), "solved_cc": SOLVED_CC, "n_chance": N_CHANCE,
               "origin_search": ORIGIN, "cctbx": peer,
               "threads": f"OMP_NUM_THREADS={threads}" if threads else "default torch threads",
               "datasets": []}  # fmt: skip
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="real_small_") as tmp:
        for folder in folders:
            record = run_dataset(folder, Path(tmp), peer)
            results["datasets"].append(record)
            results["total_seconds"] = time.perf_counter() - t0
            write_json(args.out, results, indent=1)
            print(_progress(record), flush=True)
    write_text(args.table, render(results))
    print(f"wrote {args.out} and {args.table} in {results['total_seconds'] / 60:.1f} min")


def _progress(r: dict) -> str:
    if "cc" not in r:
        return f"{r['name']:20s} error: {r.get('error')}"
    c = r.get("cctbx", {})
    peer = f" | cctbx CC {c['cc']:.3f} claimed {c['claimed']}" if "cc" in c else (f" | cctbx {c}" if c else "")
    return (f"{r['name']:20s} {r['spacegroup']:12s} CC {r['cc']:.3f} (chance ≤ {r['chance_cc_max']:.2f}) "
            f"{r['verdict']}, R-free {r['r_free']:.3f}, {r['seconds']:.0f} s{peer}")  # fmt: skip


if __name__ == "__main__":
    main()
