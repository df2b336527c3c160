"""Real peptide crystals (issue #30): ``patterson solve``'s routes on measured data, judged by the deposited models.

Data: ``../shared/data/real/{5e5z,1yjp,6mw0}`` (measured amplitudes and the deposited model; nothing copied).

Per data set and pipeline, ``patterson solve FILE --out TMP --no-progress`` plus the pipeline's options, as a
subprocess (the seconds are the whole command); scored by :func:`real_small_molecules.judge`: the map CC of
``phases.mtz`` against the deposited model expanded to the whole cell, after the origin and hand search over every
P1 shift plus inversion, beside the observed amplitudes with random phases (5 seeds) and the ceiling (the model's
own phases). Solved: CC ≥ :data:`SOLVED_CC`. The verdict is patterson's own (``summary.json``).

Pipelines: the default (``auto``), charge flipping on E, HIO from random starts, dual-space phasing (at atomic
resolution only), and where the peptide's residues are standard ones the fragments route alone (``--refine
fragments --sequence``) and ``auto`` with the sequence (its routes, then fragments). The cell contents given to
6MW0 are the peptide's formula times Z (what a user knows: no solvent); 5E5Z and 1YJP get none (their files carry
none). Beside the runs, each deposited model's own q on the data and free set the fragments route is judged on
(:func:`deposited_q`): the q a right model of these data reaches. The fragment search's parts are measured apart,
with the ideal strand superposed on the deposited chain as an oracle (benchmarks/peptide_fragments.py).

    python benchmarks/peptides.py [--only NAME ...] [--pipelines NAME ...] [--merge]
        [--out benchmarks/results/peptides.json] [--table docs/tables/peptides_table.md]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from _common import RESULTS, ROOT, TABLES, run_metadata, write_json, write_text
from patterson.cells import Cell, expand_to_p1
from patterson.evaluation.peaks import nearest_distance
from patterson.phasing import PhasingOptions
from patterson.phasing.peptide import PeptideOptions, models_result, refined_model
from patterson.phasing.placement import images
from patterson.phasing.starts import prepare_starts
from patterson.phasing.validation import MODEL_SOLVED_RATIO, MODEL_UNSOLVED_RATIO
from patterson.phasing.waters import WaterOptions
from patterson.solving.solve import SolveConfig, prepare, run_masks
from patterson.structures import read_structure
from peptide_fragments import model_f, water_atoms
from real_small_molecules import judge, summary_fields

DATA = ROOT.parent / "shared" / "data" / "real"
SOLVED_CC = 0.7  # the target for the peptides
TIMEOUT_S = 900
# name: (reflections, deposited model, extra options): 6MW0 is Mle-Phe-Mle-DPhe (C32 N4 O5 + OXT) with Z = 4
PEPTIDES = {
    "5e5z": ("5e5z/5e5z.mtz", "5e5z/5e5z.pdb", []),
    "1yjp": ("1yjp/1yjp-sf.cif", "1yjp/1yjp.cif", []),
    "6mw0": ("6mw0/6mw0-sf.cif.gz", "6mw0/6mw0.cif", ["--composition", "C128 N16 O24"]),
}
PIPELINES = {
    "auto": [],
    "charge flipping on E": ["--refine", "charge-flip", "--amplitudes", "E", "--checkpoint", "none"],
    "HIO": ["--refine", "hio", "--checkpoint", "none"],
    "dual-space": ["--refine", "dual-space"],  # at atomic resolution only (ATOMIC)
    "fragments": ["--refine", "fragments"],  # with the sequence (SEQUENCES) only
    "auto with the sequence": [],  # the default routes plus fragments, with the sequence (SEQUENCES) only
}
ATOMIC = {"6mw0"}  # d_min ≤ 1.2 Å: where dual-space phasing applies (5E5Z and 1YJP are at 1.66 and 1.8 Å)
SEQUENCES = {"5e5z": "LVHSSN", "1yjp": "GNNQQNY"}  # 6MW0's residues (Mle, DPhe) are no standard ones
WITH_SEQUENCE = ("fragments", "auto with the sequence")


def applies(name: str, pipeline: str) -> bool:
    """Whether a pipeline runs on a data set: dual-space at atomic resolution, the sequence ones with a sequence."""
    if pipeline == "dual-space":
        return name in ATOMIC
    return name in SEQUENCES if pipeline in WITH_SEQUENCE else True


def run_solve(reflections: Path, out: Path, options: list[str]) -> dict[str, Any]:
    """``patterson solve`` as a subprocess: wall seconds, exit code, the last line (or the error)."""
    cmd = ["patterson", "solve", str(reflections), "--out", str(out), "--no-progress", *options]
    t0 = time.perf_counter()
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=TIMEOUT_S)
    except subprocess.TimeoutExpired:
        return {"seconds": time.perf_counter() - t0, "error": f"timed out ({TIMEOUT_S} s)"}
    record = {"seconds": time.perf_counter() - t0, "returncode": proc.returncode,
              "last_line": (proc.stdout.strip().splitlines() or [""])[-1][:400]}  # fmt: skip
    if proc.returncode != 0:
        record["error"] = (proc.stderr.strip().splitlines() or [""])[-1][:400]
    return record


def run_one(name: str, pipeline: str, tmp: Path) -> dict[str, Any]:
    """One data set through one pipeline, judged; a crash is recorded, never raised."""
    reflections, model, extra = PEPTIDES[name]
    out = tmp / f"{name}_{pipeline.replace(' ', '_')}"
    sequence = ["--sequence", SEQUENCES[name]] if pipeline in WITH_SEQUENCE else []
    record: dict[str, Any] = {"name": name, "pipeline": pipeline,
                              "options": [*extra, *PIPELINES[pipeline], *sequence]}  # fmt: skip
    try:
        record.update(run_solve(DATA / reflections, out, record["options"]))
        if "error" in record:
            return record
        summary = json.loads((out / "summary.json").read_text())
        record.update(summary_fields(summary))
        record["atoms"] = summary.get("atoms")
        scores, _ = judge(out, DATA / model, record["spacegroup"])
        record.update({k: v for k, v in scores.items() if k != "solved"})
        record["solved"] = scores["cc"] >= SOLVED_CC
    except Exception as exc:  # noqa: BLE001 - a crash is a result
        record["error"] = f"{type(exc).__name__}: {str(exc).splitlines()[0][:300] if str(exc) else ''}"
    return record


def deposited_q(name: str) -> dict[str, float]:
    """q = R-free / R-free of random phases of the deposited model (its own coordinates and B; with its waters and
    without them) on the data and free set that ``solve --sequence`` judges its model on
    (:func:`patterson.phasing.peptide.models_result`): what a right model of these data scores, to set beside the
    model verdict's thresholds and the calibration crystals' ``exact_q`` (benchmarks/model_verdict.py)."""
    reflections, model, _ = PEPTIDES[name]
    ctx = prepare(SolveConfig(input=str(DATA / reflections)))
    cell = ctx["data"].cell
    measured, free = run_masks(ctx["free"], len(ctx["hkl_all"]))  # the unmeasured float, as in solve's runs
    s = prepare_starts(ctx["f_all"], ctx["hkl_all"], cell, ctx["shape"], PhasingOptions(n_starts=1), measured, free)
    out = {}
    for key, waters in (("with_waters", True), ("without_waters", False)):
        f_calc = torch.as_tensor(model_f(DATA / model, cell, ctx["hkl_all"], waters))[None]
        v = models_result(s, f_calc, ctx["f000"], ctx["shape"], PeptideOptions()).validation
        out[key] = round(float(v.r_free[0] / v.r_free_random[0]), 3)
    waters = int(water_atoms(expand_to_p1(read_structure(DATA / model))).sum())
    ends = {f"{c}": route_end(name, ctx, s, c) for c in WATER_CYCLES}
    return out | {"n_free": int(free.sum()), "waters_in_cell": waters, "route_end": ends,
                  "sigma_f_over_f_low_high": error_profile(ctx["refl"])}  # fmt: skip


WATER_CYCLES = (1, 3)  # rounds of the water step measured in route_end: the route's default, and three


def route_end(name: str, ctx: dict, s, cycles: int) -> dict[str, Any]:
    """The fragments route's last step (:func:`~patterson.phasing.peptide.refined_model`: restrained refinement
    against the work amplitudes, ordered waters from the difference map in ``cycles`` rounds, refined again) on
    the deposited model's own atoms without its waters, judged as the route's model is: what the route would claim
    if its building were right. Also the waters it finds, and how many lie within 1 Å of a deposited water (or an
    image)."""
    atoms = read_structure(DATA / PEPTIDES[name][1])
    keep = ~water_atoms(atoms)
    cell, group, hkl = ctx["data"].cell, ctx["refl"].group, ctx["hkl_all"]
    work = ~s.floating[0]
    data = (hkl, torch.where(work, s.fo[0], 0.0).numpy(), cell, group, work.numpy())
    xyz = cell.to_cartesian(Cell(*atoms.cell).to_fractional(atoms.xyz))
    options = PeptideOptions(waters=WaterOptions(cycles=cycles))
    frac, elements, _, _, f_calc = refined_model(xyz[keep], atoms.elements[keep], data, options)
    v = models_result(s, torch.as_tensor(f_calc)[None], ctx["f000"], ctx["shape"], PeptideOptions()).validation
    found = frac[int(keep.sum()):]
    deposited = images(torch.as_tensor(cell.to_fractional(xyz[~keep]))[None], group)[0].numpy()
    right = int((nearest_distance(found, deposited, cell) <= 1.0).sum()) if len(found) and len(deposited) else 0
    return {"q": round(float(v.r_free[0] / v.r_free_random[0]), 3), "waters_found": len(found),
            "waters_right": right, "waters_deposited": int((~keep).sum())}  # fmt: skip


def error_profile(refl) -> list[float]:
    """The file's measurement error: mean σ(|F|) over mean |F| in the lowest and the highest fifth of its
    reflections by resolution (intensities: |F| = √I, σ(|F|) = σ(I) / 2√I, positive I only)."""
    ok = np.isfinite(refl.value) & np.isfinite(refl.sigma) & (refl.value > 0)
    f, sigma = refl.value[ok], refl.sigma[ok]
    if refl.kind == "intensity":
        f, sigma = np.sqrt(f), sigma / (2 * np.sqrt(f))
    fifths = np.array_split(np.argsort(refl.cell.inv_d2(refl.hkl[ok]), kind="stable"), 5)
    return [round(float(sigma[i].mean() / f[i].mean()), 3) for i in (fifths[0], fifths[-1])]


def render(results: dict) -> str:
    """docs/tables/peptides_table.md from the results alone."""
    run = results["run"]
    lines = [f"Real peptide crystals, `patterson solve` per pipeline (benchmarks/peptides.py, {run['date']}, "
             f"{run['platform']}, {run['cpu_count']} CPUs, torch {run['torch']}). Map CC against the deposited model "
             f"(whole cell) after the origin/hand search; chance: random phases (median, max of 5); solved: CC ≥ "
             f"{results['solved_cc']}.", "",
             "| data | group, d_min | pipeline | CC | chance (median, max) | ceiling | solved | verdict | seconds "
             "| run |",
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]  # fmt: skip
    for r in results["rows"]:
        if "error" in r:
            error = r["error"][:80]
            lines.append(f"| {r['name']} | | {r['pipeline']} | error: {error} | | | | | | {r.get('date', '')} |")
            continue
        lines.append(
            f"| {r['name']} | {r['spacegroup']}, {r['d_min']:.2f} Å | {r['pipeline']} | {r['cc']:.3f} | "
            f"{r['chance_cc_median']:.3f}, {r['chance_cc_max']:.3f} | {r['cc_ceiling']:.3f} | "
            f"{'yes' if r['solved'] else 'no'} | {r['verdict']} | {r['seconds']:.0f} | {r.get('date', run['date'])} |"
        )
    solved = sum(1 for r in results["rows"] if r.get("solved"))
    claimed = sum(1 for r in results["rows"] if r.get("verdict") == "solved")
    right = sum(1 for r in results["rows"] if r.get("verdict") == "solved" and r.get("solved"))
    lines += ["", f"Runs solved: {solved} of {len(results['rows'])}; claimed `solved`: {claimed}, of them right: "
              f"{right}."]  # fmt: skip
    if "deposited_q" in results:  # runs before it was measured have none
        verdict = results["model_verdict"]
        each = "; ".join(f"{name.upper()} {q['with_waters']:.3f} with its waters, {q['without_waters']:.3f} without "
                         f"({q['n_free']} free reflections; σ(F)/F {q['sigma_f_over_f_low_high'][0]:.0%} at low, "
                         f"{q['sigma_f_over_f_low_high'][1]:.0%} at high resolution)"
                         for name, q in results["deposited_q"].items())  # fmt: skip
        lines += ["", f"The deposited models' own q = R-free / R-free of random phases on the data and free set that "
                  f"`solve --sequence` judges its model on (what a right model of these data scores; the model "
                  f"verdict says `solved` at q ≤ {verdict['MODEL_SOLVED_RATIO']}, `not solved` above "
                  f"{verdict['MODEL_UNSOLVED_RATIO']}): {each}."]  # fmt: skip
        ends = [(name, q["route_end"]) for name, q in results["deposited_q"].items() if "route_end" in q]
        if ends:
            each = "; ".join(f"{name.upper()} " + ", ".join(
                f"q {e['q']:.3f} with {c} round{'s' if c != '1' else ''} ({e['waters_found']} waters found, "
                f"{e['waters_right']} of them within 1 Å of one of its {e['waters_deposited']})"
                for c, e in end.items()) for name, end in ends)  # fmt: skip
            lines += ["", "The route's last step (restrained refinement, waters from the difference map, refined "
                      "again; the route ships one round of waters) on the deposited models without their waters, "
                      f"judged as the route's model: {each}."]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", nargs="+", choices=sorted(PEPTIDES), default=sorted(PEPTIDES))
    parser.add_argument("--pipelines", nargs="*", choices=list(PIPELINES), default=list(PIPELINES),
                        help="none (with --merge): only the deposited models' figures are measured again")  # fmt: skip
    parser.add_argument("--out", type=Path, default=RESULTS / "peptides.json")
    parser.add_argument("--table", type=Path, default=TABLES / "peptides_table.md")
    parser.add_argument("--merge", action="store_true",
                        help="keep the rows of --out that this run does not redo (each row has its date)")  # fmt: skip
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.only:
            for pipeline in args.pipelines:
                if not applies(name, pipeline):
                    continue
                rows.append({**run_one(name, pipeline, Path(tmp)), "date": run_metadata()["date"]})
                r = rows[-1]
                print(f"{name:6s} {pipeline:22s} CC {r.get('cc', float('nan')):.3f} "
                      f"(chance max {r.get('chance_cc_max', float('nan')):.3f}) {r.get('verdict', r.get('error'))} "
                      f"{r['seconds']:.0f} s", flush=True)  # fmt: skip
    if args.merge and args.out.is_file():  # the rows of an earlier run that this one did not redo
        done = {(r["name"], r["pipeline"]) for r in rows}
        earlier = json.loads(args.out.read_text())
        rows = [{"date": earlier["run"]["date"], **r} for r in earlier["rows"]
                if (r["name"], r["pipeline"]) not in done] + rows  # fmt: skip
    order = {(name, pipeline): i for i, (name, pipeline) in enumerate((n, p) for n in PEPTIDES for p in PIPELINES)}
    rows.sort(key=lambda r: order.get((r["name"], r["pipeline"]), len(order)))
    results = {"benchmark": "peptides", "run": run_metadata(), "data": str(DATA), "solved_cc": SOLVED_CC,
               "deposited_q": {name: deposited_q(name) for name in PEPTIDES}, "model_verdict": {
                   "MODEL_SOLVED_RATIO": MODEL_SOLVED_RATIO, "MODEL_UNSOLVED_RATIO": MODEL_UNSOLVED_RATIO},
               "rows": rows}  # fmt: skip
    write_json(args.out, results)
    write_text(args.table, render(results))


if __name__ == "__main__":
    main()
