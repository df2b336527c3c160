"""patterson against its peer: cctbx's charge flipping (smtbx, the engine of Olex2's), on the same data, scored alike.

Rows:

- ``paper-2`` (one dipeptide in a 12 Å P1 cell) at 1.0, 1.5 and 2.0 Å and ``dense-protein`` (dipeptides packed at
  35 Å³/atom) at 2.0 Å: test structures made from real chains (``--source``), clean amplitudes, in P1.
- ``COD crystals``: the embedded COD CIFs of the ``crystals`` package (all of them with at least
  :data:`MIN_REFLECTIONS` unique P1 reflections at ``--crystal-d-min``), every atom of the cell from the CIF's
  space group, degraded like measured data (5% amplitude noise per unique reflection, 5% of the unique reflections
  missing), given to cctbx in their space group (as Olex2 would) and to patterson merged and expanded to P1, which
  phases in P1 and then moves the solution to the group's origin (:func:`patterson.solving.symmetry.to_spacegroup`).

Methods: patterson's charge flipping (4 starts × 300 iterations; the same flipping E-values; and flipping E-values
with convergence detection, up to 3 restarts of a start that has not converged and an early stop), HIO (4 × 400),
and cctbx's charge flipping as Olex2 runs it (weak-reflection-improved flipping of quasi-normalised amplitudes,
δ = 1.1σ guessed from the map, up to 5 restarts without a phase transition, then its low-density-elimination polish
and its own origin search). Each method's P1 structure factors are scored against the truth after the origin and
hand search: solved = F-weighted phase error < 40°; for the crystals also whether the method's symmetrised map sits
at an origin the space group permits ("origin"). "claimed" counts the structures a method itself calls solved
(patterson: the R-free verdict; cctbx: a phase transition and a sharp origin peak), "right" those of them that are.
Seconds are wall time per structure on this machine, one thread each. "random phases" is the chance level: the
true amplitudes with random phases, scored the same way.

    pip install -e ".[peers]"        # cctbx-base
    python benchmarks/peers.py [--source ../shared/data/pdb] [--n 12] [--rows ...]
        [--out benchmarks/results/peers.json] [--table docs/tables/peers_table.md]
"""

from __future__ import annotations

try:  # cctbx's boost-python must load before torch and gemmi do (the other order segfaults)
    from cctbx import crystal, miller
    from cctbx.array_family import flex
    from smtbx.ab_initio import charge_flipping
except ImportError:
    crystal = None

import argparse
import importlib.util
import io
import tempfile
import time
from pathlib import Path

import gemmi
import numpy as np
import torch

from _common import held_out_split, run_metadata, write_json, write_text
from patterson.cells import Cell
from patterson.evaluation.metrics import align, apply_alignment_f, score_f
from patterson.evaluation.report import SOLVED_THRESHOLD_DEG
from patterson.maps import f_from_density
from patterson.phasing import charge_flip, hio, load_split, method_options
from patterson.physics import AtomBatch, miller_indices, structure_factors
from patterson.solving.data import merge_and_expand
from patterson.solving.symmetry import is_permitted_shift, to_spacegroup
from patterson.structures import Atoms
from patterson.symmetry import HklTable, SpaceGroup, full_sphere

MIN_REFLECTIONS = 40
CCTBX_SEED = 0
METHODS = ("patterson CF", "patterson CF (E)", "patterson CF (E, restarts)", "patterson HIO", "cctbx CF",
           "random phases")  # fmt: skip


# --- cases: the data a method gets, and the truth --------------------------------------------------------------


def preset_cases(preset: str, d_min: float, source: str, n: int) -> list[dict]:
    """Test structures of a preset (P1): amplitudes, measured mask, exact F, electron count."""
    with tempfile.TemporaryDirectory() as tmp:  # the phasing benchmark's test splits: same structures, same seeds
        ds = held_out_split(preset, d_min, dict(noise=0.0, missing=0.0), source, n, Path(tmp) / "d")
        data = load_split(ds, d_min=d_min, limit=n)
    f_true = f_from_density(data.truth, data.hkl, data.cell)  # (B, M)
    p1 = SpaceGroup.of("P 1")
    return [
        {"id": data.ids[b], "cell": data.cell, "group": p1, "hkl": data.hkl, "f_obs": data.f_obs[b].numpy(),
         "measured": data.measured[b].numpy(), "f_true": f_true[b].numpy(), "f000": float(data.f000[b])}
        for b in range(len(data))
    ]  # fmt: skip


def crystal_cases(d_min: float, noise: float = 0.05, missing: float = 0.05, seed: int = 0) -> list[dict]:
    """The COD crystals of the ``crystals`` package in their space groups, degraded per unique reflection."""
    spec = importlib.util.find_spec("crystals")
    if spec is None:
        raise SystemExit("the COD crystals need the crystals package: pip install --no-deps crystals")
    rng = np.random.default_rng(seed)
    out = []
    for path in sorted((Path(next(iter(spec.submodule_search_locations))) / "cifs").glob("*.cif")):
        case = _crystal_case(path, d_min, noise, missing, rng)
        if case is not None:
            out.append(case)
    return out


def _crystal_case(path: Path, d_min: float, noise: float, missing: float, rng) -> dict | None:
    ss = gemmi.read_small_structure(str(path))
    group = SpaceGroup.of(ss.spacegroup)
    cell = Cell(*ss.cell.parameters)
    sites = ss.get_all_unit_cell_sites()
    xyz = cell.to_cartesian(np.array([[s.fract.x, s.fract.y, s.fract.z] for s in sites]))
    elements = np.array([s.element.name for s in sites])
    atoms = Atoms(xyz, elements, np.full(len(sites), 0.5), np.array([s.occ for s in sites]), cell.parameters)
    hkl_p1 = miller_indices(cell, d_min)
    if len(hkl_p1) < MIN_REFLECTIONS:
        return None
    asu = gemmi.ReciprocalAsu(group.gemmi)
    full = np.concatenate([hkl_p1, -hkl_p1])
    keep = np.array([asu.is_in(h) for h in full.tolist()]) & ~np.array(
        [group.gemmi.operations().is_systematically_absent(h) for h in full.tolist()])  # fmt: skip
    hkl_asu = np.unique(full[keep], axis=0)
    batch = AtomBatch.from_atoms([atoms], cell)
    f_asu = np.abs(structure_factors(batch, hkl_asu)[0].numpy())
    f_asu = f_asu * (1 + noise * rng.standard_normal(len(f_asu))).clip(0.0)
    present = rng.uniform(size=len(f_asu)) >= missing
    hkl_asu, f_asu = hkl_asu[present], f_asu[present]
    merged = merge_and_expand(hkl_asu, f_asu, None, group.rot)
    hkl, f_obs = merged.hkl, merged.value
    if len(hkl) < MIN_REFLECTIONS:
        return None
    f_true = structure_factors(batch, hkl)[0].numpy()
    z = np.array([gemmi.Element(e).atomic_number for e in elements])
    return {"id": path.stem, "cell": cell, "group": group, "hkl": hkl, "f_obs": f_obs, "measured": f_obs > 0,
            "f_true": f_true, "f000": float((z * atoms.occ).sum()), "hkl_asu": hkl_asu, "f_asu": f_asu}  # fmt: skip


# --- the methods: each returns (P1 F (M,) complex, claimed solved, symmetrised P1 F or None, seconds) -----------


def run_chance(case: dict, seed: int = 0) -> tuple[np.ndarray, bool, np.ndarray | None, float]:
    """The chance level: the true amplitudes with random phases (seeded per structure), moved by the symmetry step
    like a patterson solution; it claims nothing."""
    rng = np.random.default_rng([seed, len(case["hkl"])])
    f_p1 = case["f_obs"] * np.exp(2j * np.pi * rng.uniform(size=len(case["f_obs"])))
    f_sg = None
    if not case["group"].is_p1:
        d_min = float(case["cell"].d_spacing(case["hkl"]).min())
        moved, fit = to_spacegroup(case["hkl"], f_p1, case["cell"], case["group"], d_min)
        f_sg = moved if fit.consistent else None
    return f_p1, False, f_sg, 0.0


def run_patterson(method: str, case: dict) -> tuple[np.ndarray, bool, np.ndarray | None, float]:
    from patterson.physics import grid_shape

    cell, hkl = case["cell"], case["hkl"]
    shape = grid_shape(cell, float(cell.d_spacing(hkl).min()))
    fo = torch.as_tensor(case["f_obs"], dtype=torch.float64)[None]
    observed = torch.as_tensor(case["measured"])[None]
    t0 = time.perf_counter()
    torch.set_num_threads(1)
    if method == "patterson HIO":  # the defaults of METHOD_OPTIONS: 4 starts × 400 iterations
        res = hio(fo, hkl, cell, shape, method_options("hio"), f000=case["f000"], observed=observed)
    else:  # 4 starts × 300 cycles
        options = {"amplitudes": "E"} if "(E" in method else {}
        options |= {"restarts": 3, "stop_early": True} if "restarts" in method else {}
        res = charge_flip(fo, hkl, cell, shape, method_options("charge-flip", **options), observed=observed)
    f_p1 = case["f_obs"] * np.exp(1j * res.phi_rad[0].numpy())
    f_sg = None
    if not case["group"].is_p1:
        d_min = float(cell.d_spacing(hkl).min())
        moved, fit = to_spacegroup(hkl, f_p1, cell, case["group"], d_min)
        f_sg = moved if fit.consistent else None
    return f_p1, res.verdict[0] == "solved", f_sg, time.perf_counter() - t0


def run_cctbx(case: dict) -> tuple[np.ndarray, bool, np.ndarray | None, float]:
    if crystal is None:
        raise SystemExit("the peer benchmark needs cctbx: pip install -e '.[peers]' (cctbx-base)")
    group, cell = case["group"], case["cell"]
    hkl, f = (case["hkl_asu"], case["f_asu"]) if "hkl_asu" in case else (case["hkl"], case["f_obs"])
    keep = f > 0
    symmetry = crystal.symmetry(unit_cell=cell.parameters, space_group_symbol="Hall: " + group.gemmi.hall)
    indices = flex.miller_index([tuple(int(v) for v in h) for h in hkl[keep]])
    f_obs = miller.array(miller.set(symmetry, indices, anomalous_flag=False), data=flex.double(f[keep]))
    f_obs.set_observation_type_xray_amplitude()
    flex.set_random_seed(CCTBX_SEED)  # its random starting phases: the same in every run
    t0 = time.perf_counter()
    flipping = charge_flipping.weak_reflection_improved_iterator(delta=None)
    solving = charge_flipping.solving_iterator(
        flipping, f_obs, yield_during_delta_guessing=True, yield_solving_interval=1,
        normalisations_for=charge_flipping.amplitude_quasi_normalisations,
        max_solving_iterations=_WholeCount(500),
    )  # fmt: skip
    charge_flipping.loop(solving, verbose=False, out=io.StringIO())
    seconds = time.perf_counter() - t0
    f_p1 = _lookup(solving.flipping_iterator.f_calc, case["hkl"])
    claimed = bool(solving.had_phase_transition and solving.f_calc_solutions)
    f_sg = None
    if solving.f_calc_solutions and not group.is_p1:
        f_sg = _lookup(solving.f_calc_solutions[0][0].expand_to_p1(), case["hkl"])
    return f_p1, claimed, f_sg, seconds


class _WholeCount(int):
    """smtbx grows its iteration budget by 1.5× from the third restart on and then hands the float to islice, which
    Python 3 refuses; this count stays whole when multiplied."""

    def __mul__(self, other):
        return _WholeCount(int(int(self) * other))

    __rmul__ = __mul__


def _lookup(array, hkl: np.ndarray) -> np.ndarray:
    """A cctbx miller array's complex data at our P1 hkl (Friedel mates conjugated; 0 where missing)."""
    idx = np.array(list(array.indices()), dtype=np.int64).reshape(-1, 3)
    data = np.array(list(array.data()), dtype=np.complex128)
    return HklTable(*full_sphere(idx, data))(hkl)[0]


# --- scoring -----------------------------------------------------------------------------------------------------


def score(case: dict, f_p1: np.ndarray, f_sg: np.ndarray | None) -> dict:
    """F-weighted phase error after the origin and hand search; whether the symmetrised map is at a permitted
    origin (None in P1)."""
    cell, hkl = case["cell"], case["hkl"]
    truth = torch.as_tensor(case["f_true"])[None]
    moving = torch.as_tensor(f_p1)[None]
    a = align(truth, moving, hkl, cell)
    err = float(score_f(truth, apply_alignment_f(moving, hkl, a), hkl, cell)["phase_error_weighted_deg"][0])
    origin = None
    if not case["group"].is_p1:
        origin = False
        if f_sg is not None:
            b = align(truth, torch.as_tensor(f_sg)[None], hkl, cell)
            origin = bool(is_permitted_shift(case["group"], b.shift_frac[0].numpy(), tol=0.02))
    return {"phase_error_deg": err, "solved": err < SOLVED_THRESHOLD_DEG, "origin": origin}


def run_row(name: str, cases: list[dict], methods: tuple[str, ...]) -> dict:
    row = {"row": name, "n": len(cases), "methods": {}}
    for method in methods:
        per = []
        for case in cases:
            run = {"cctbx CF": run_cctbx, "random phases": run_chance}.get(method)
            f_p1, claimed, f_sg, seconds = run(case) if run else run_patterson(method, case)
            per.append({"id": case["id"], "claimed": claimed, "seconds": seconds, **score(case, f_p1, f_sg)})
        row["methods"][method] = _summarise(per)
        print(f"{name:32s} {method:18s} solved {row['methods'][method]['n_solved']}/{len(cases)}", flush=True)
    return row


def _summarise(per: list[dict]) -> dict:
    errs = [p["phase_error_deg"] for p in per]
    origins = [p["origin"] for p in per if p["origin"] is not None]
    return {
        "n_solved": sum(p["solved"] for p in per),
        "n_claimed": sum(p["claimed"] for p in per),
        "n_claimed_right": sum(p["claimed"] and p["solved"] for p in per),
        "n_origin": sum(origins) if origins else None,
        "median_phase_error_deg": float(np.median(errs)),
        "seconds_per_structure": float(np.mean([p["seconds"] for p in per])),
        "per_structure": per,
    }


def render(results: dict) -> str:
    """The Markdown table of docs/tables/peers_table.md from the whole results file: solved/n (median phase error),
    claimed → right, origin for the crystals, seconds; a column a method, in the order they ran."""
    rows = results["rows"]
    methods = tuple(rows[0]["methods"])
    head = "| data | n | " + " | ".join(methods) + " |"
    lines = [head, "|" + "---|" * (len(methods) + 2)]
    for row in rows:
        cells = []
        for m in methods:
            r = row["methods"][m]
            origin = f", origin {r['n_origin']}" if r["n_origin"] is not None else ""
            cells.append(f"{r['n_solved']}/{row['n']} ({r['median_phase_error_deg']:.0f}°), claimed "
                         f"{r['n_claimed']} → {r['n_claimed_right']} right{origin}, "
                         f"{r['seconds_per_structure']:.2f} s")  # fmt: skip
        lines.append(f"| {row['row']} | {row['n']} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--source", default="embedded")
    p.add_argument("--n", type=int, default=12)
    p.add_argument("--crystal-d-min", type=float, default=0.8)
    p.add_argument("--rows", nargs="+", default=["paper-2 1.0", "paper-2 1.5", "paper-2 2.0", "dense-protein 2.0",
                                                 "crystals"])  # fmt: skip
    p.add_argument("--methods", nargs="+", default=list(METHODS))
    p.add_argument("--out", default="benchmarks/results/peers.json")
    p.add_argument("--table", default="docs/tables/peers_table.md")
    args = p.parse_args()
    methods = tuple(args.methods)
    rows = []
    for spec in args.rows:
        if spec == "crystals":
            cases = crystal_cases(args.crystal_d_min)
            name = f"COD crystals, {args.crystal_d_min:g} Å, 5% noise, 5% missing"
        else:
            preset, d_min = spec.split()
            cases = preset_cases(preset, float(d_min), args.source, args.n)
            name = f"{preset}, {float(d_min):g} Å, clean, P1"
        rows.append(run_row(name, cases, methods))
    results = {"run": run_metadata(), "source": args.source, "solved_threshold_deg": SOLVED_THRESHOLD_DEG, "rows": rows}
    write_json(args.out, results, allow_nan=False)
    text = render(results)
    note = "<!-- written by benchmarks/peers.py; regenerate with the command in its docstring -->\n\n"
    write_text(args.table, note + text)
    print(text)


if __name__ == "__main__":
    main()
