"""The demo's peptide-crystal test set: every method on each crystal of its own cell, the same time for each.

Synthetic peptide microcrystals (the ``peptide-crystal`` preset: 4–9-residue segments of real chains packed in P2₁,
P2₁2₁2₁, C2 or P1 at protein-crystal density, half of them β-sheet stacks, 3% amplitude noise, 5% of the
reflections missing) at :data:`D_MIN` (atomic resolution, where dual-space direct methods solve them: docs/tables/
peptide_crystals_table.md), with the B the preset ties to that resolution. Every cell differs, so each crystal is
phased alone on a grid of its own cell (:data:`SPACING`), from the reflections it stores, by every method with the
same wall-time budget (:func:`~patterson.phasing.compare.phase_within`), and scored as ``patterson evaluate`` does.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import time
from collections import Counter
from pathlib import Path
from typing import Any

from patterson import runtime
from patterson.datasets import PRESETS, GenerateConfig, build_pool, config_for_test_split, generate, make_examples
from patterson.datasets.peptides import overall_b
from patterson.evaluation import PairScores, score_maps
from patterson.phasing import MethodRun, NetworkStep, SplitMaps, method_summary, split_maps
from patterson.phasing.compare import WARM_UP, phase_within
from patterson.phasing.projections import hio
from patterson.phasing.validation import CrossValidation
from patterson.solving.structure import atoms_of_split, cell_contents, worth_atoms
from patterson.symmetry import SpaceGroup

log = logging.getLogger(__name__)

PRESET = "peptide-crystal"
D_MIN = 1.0  # Å: atomic resolution; at 1.5 and 2 Å no method solves these crystals (benchmarks/peptide_crystals.py)
SPACING = 0.5  # Å: the phasing grid's spacing (at most d_min / 2)
METHODS = ("dual-space", "learned", "histogram", "charge-flip", "hio", "chance")  # learned and its control: only
# with a density-modification network trained on this preset


def peptide_config(source: str, n: int, seed: int) -> GenerateConfig:
    """The test set: ``n`` crystals of the preset at :data:`D_MIN` from ``source`` (a test split only, as the demo's
    other test sets), with the B the preset ties to that resolution."""
    b = overall_b(D_MIN, PRESETS[PRESET]["d_min_range"], PRESETS[PRESET]["b_range"])
    return config_for_test_split(PRESET, source, n, seed, d_min=D_MIN, d_min_range=(D_MIN, D_MIN), b_range=(b, b))


def make_crystals(test: GenerateConfig, folder: Path, progress: bool) -> list[dict]:
    """Write the test set into ``folder`` (a patterson dataset, part of the report) and make the same examples in
    memory (nothing written is read back), the source read once."""
    pool = build_pool(test, progress=False)
    generate(test, folder, progress=progress, pool=pool)
    return make_examples(test, pool=pool)


def crystal_maps(item: dict, seed: int) -> SplitMaps:
    """One crystal's maps on a grid of its own cell from the reflections it stores (spacing :data:`SPACING` at
    :data:`D_MIN`; half its own d_min for a crystal kept coarser by the preset's grid, as
    benchmarks/peptide_crystals.py has it), its free set drawn with ``seed``."""
    d = float(item["d_min"])
    return split_maps([item], d, sample_rate=max(2.0, D_MIN / SPACING), seed=seed, name=f"crystal {item['index']}")


def phase_crystal(
    data: SplitMaps, group: SpaceGroup, methods: tuple[str, ...], budget_s: float, seed: int, step, n_iter,
    composition: dict[str, float] | None = None,
) -> tuple[dict[str, MethodRun], dict[str, int]]:
    """Every method on one crystal with ``budget_s`` seconds each, scored: {method: MethodRun} and the rounds each
    ran (dual-space: 1, chance: 0). Dual-space's map (in the space group) then goes through ``solve``'s atoms step
    with the cell ``composition`` (:func:`claim_by_atoms`; its seconds are the method's too) unless its R-free is
    little better than random phases' (:func:`~patterson.solving.structure.worth_atoms`)."""
    runs, rounds = {}, {}
    for method in methods:
        t = time.perf_counter()
        rho, check, rounds[method] = phase_within(method, data, budget_s, seed, step, group, n_iter)
        worth = check is not None and worth_atoms(float(check.r_free[0]), float(check.r_free_random[0]))
        if method == "dual-space" and composition and worth:
            check = claim_by_atoms(rho, data, group, composition, check)
        seconds = 0.0 if method == "chance" else time.perf_counter() - t
        scores, aligned = score_maps(rho, data.truth, data.cell, data.d_min, return_aligned=True)
        runs[method] = MethodRun(method, rho, aligned, scores, seconds, check)
    return runs, rounds


def claim_by_atoms(rho, data: SplitMaps, group: SpaceGroup, composition: dict[str, float],
                   check: CrossValidation) -> CrossValidation:  # fmt: skip
    """The verdict as ``solve`` gives it: the map's peaks as atoms of ``composition`` refined against the work
    amplitudes (:func:`~patterson.solving.structure.atoms_of_split`); where their R1 on the free reflections says
    solved, so does the verdict (else the map's own stands)."""
    model = atoms_of_split(rho[0], data, group, composition)
    if model is None or not len(model) or not model.solved:
        return check
    log.info("%s: dual-space atoms refine to R1-free %.3f: solved", data.ids[0], model.r1_free)
    return dataclasses.replace(check, verdict=("solved",))


def method_result(method: str, crystals: list[dict[str, MethodRun]], rounds: list[dict[str, int]]) -> dict:
    """One method's summary over the crystals (:func:`~patterson.phasing.method_summary`) and its per-structure
    columns, as the demo's other test sets give them (seconds and rounds added)."""
    runs = [c[method] for c in crystals]
    scores = PairScores.concatenate([r.scores for r in runs])
    checks = None if method == "chance" else CrossValidation.concatenate([r.validation for r in runs])
    per = {"phase_error_weighted_deg": scores.phase_error_weighted_deg, "cc_aligned": scores.cc_aligned}
    per |= {"seconds": [r.seconds for r in runs], "rounds": [r[method] for r in rounds]}
    per |= {} if checks is None else checks.rows()
    return method_summary(scores, sum(r.seconds for r in runs), checks) | {"per_structure": per}


def run_crystals(
    test: GenerateConfig,
    folder: Path,
    budget_s: float,
    step: NetworkStep | None,
    n_iter: int | None,
    progress: bool,
) -> tuple[dict[str, Any], list[tuple[SplitMaps, dict[str, MethodRun]]]]:
    """Make, phase and score the peptide-crystal test set ``test``, its dataset written to ``folder``.

    Parameters
    ----------
    test : the test set (:func:`peptide_config`).
    folder : where the dataset is written.
    budget_s : wall seconds per crystal given to every method.
    step : the learned loop's real-space step (None: neither the learned loop nor its control runs).
    n_iter : iterations of each run (None: each method's defaults).
    progress : a progress bar over the crystals.

    Returns
    -------
    (the test set's results as ``results.json`` holds them, less its maps and network; every crystal's maps and
    runs, in order).
    """
    t0 = time.perf_counter()
    log.info("%s: making %d test crystals from %s", PRESET, test.n, test.source)
    items = make_crystals(test, folder, progress)
    t1 = time.perf_counter()
    methods = tuple(m for m in METHODS if step is not None or m not in ("learned", "histogram"))
    log.info("%s: phasing %d crystals with %s, %g s each", PRESET, len(items), ", ".join(methods), budget_s)
    crystals, rounds, examples = _phase_all(items, methods, budget_s, test.seed, step, n_iter, progress)
    t2 = time.perf_counter()
    labels = [it["label"] for it in items]
    result = {
        "preset": PRESET,
        "n": len(items),
        "dataset": json.loads(test.to_json()),
        "d_min": D_MIN,
        "budget_s": budget_s,
        "spacing": SPACING,
        "data_folder": f"data/{PRESET}",
        "entries": dict(sorted(Counter(label.split("/")[0] for label in labels).items())),
        "examples": examples,
        "methods": {m: method_result(m, [runs for _, runs in crystals], rounds) for m in methods},
        "skipped": [m for m in METHODS if m not in methods],
        "seconds": {"data": t1 - t0, "phasing_and_scoring": t2 - t1},
    }
    for m in methods:
        s = result["methods"][m]
        log.info("%s %s: solved %d/%d, claimed %s, %.1f s per crystal", PRESET, m, s["n_solved"], s["n"],
                 (s.get("verdict") or {}).get("n_claimed_solved", "–"), s["seconds_per_structure"])  # fmt: skip
    return result, crystals


def _phase_all(items: list[dict], methods, budget_s: float, seed: int, step, n_iter, progress: bool):
    """Every crystal phased by every method: [(maps, runs)], [rounds] and the examples' descriptions."""
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=len(items), unit="crystal", desc=f"{PRESET} ", leave=False, **runtime.bar_options())
    crystals, rounds, examples = [], [], []
    for k, item in enumerate(items):
        data = crystal_maps(item, seed + k)
        if k == 0:  # first-call costs before the timings
            hio(data.f_obs, data.hkl, data.cell, data.shape, WARM_UP, free=data.free)
        group = SpaceGroup.of(item["spacegroup"])
        runs, r = phase_crystal(data, group, methods, budget_s, seed + k, step, n_iter, cell_contents(item["z"]))
        crystals.append((data, runs))
        rounds.append(r)
        examples.append({"id": data.ids[0], "label": item["label"], "spacegroup": item["spacegroup"],
                         "beta_stack": bool(item["beta_stack"]), "cell": [round(float(x), 3) for x in item["cell"]],
                         "d_min": float(item["d_min"]), "n_atoms": int(item["n_atoms"]),
                         "n_reflections": len(data.hkl), "grid": list(data.shape)})  # fmt: skip
        if bar is not None:
            bar.update(1)
    if bar is not None:
        bar.close()
    return crystals, rounds, examples
