"""How `solve --checkpoint pretrained` chooses its network, measured on held-out data.

For each shipped density network, the held-out test entries of its own preset (same seed and split as its
training data) become P1 MTZ files of clean amplitudes at the network's resolution; each is solved with the
defaults. Every shipped network starts a run and R-free picks the run (the rule since #14); the table counts how
often the winning run started from the network trained on that preset ("right network"), how often a classical
run from random starts won, how many were solved (F-weighted phase error < 40° after the origin and hand search)
and what the previous rule (a Wilson-plot packing guess, then the nearest d_min) would have picked.

    python benchmarks/network_choice.py [--source ../shared/data/pdb] [--n 12]
        [--out benchmarks/results/network_choice.json] [--table docs/tables/network_choice_table.md]
"""

from __future__ import annotations

import argparse
import dataclasses
import tempfile
from pathlib import Path

import numpy as np
import torch

from _common import held_out_split, run_metadata, write_json, write_text
from patterson.datasets import make_config
from patterson.evaluation.metrics import align, apply_alignment_f, score_f
from patterson.evaluation.report import SOLVED_THRESHOLD_DEG
from patterson.maps import f_from_density
from patterson.networks import load_checkpoint, pick_pretrained, shipped_networks, trained_on
from patterson.phasing import load_split
from patterson.solving import SolveConfig, solve
from patterson.symmetry import HklTable, full_sphere
from solve import write_mtz  # the solve benchmark's P1 MTZ of amplitudes

OLD_PACKED_VOLUME = 60.0  # Å³ per atom: the previous rule's threshold for a packed cell


def old_choice(summary: dict) -> str:
    """The network the previous rule picked: packed when the Wilson count puts an atom in under 60 Å³."""
    data = summary["data"]
    cell_volume = float(np.prod(data["cell"][:3]))  # the presets' cells are cubic
    per_atom = cell_volume / max(data["wilson_atoms_c_equivalent"], 1.0)
    hints = {"d_min": data["d_min"], "pack_volume": per_atom if per_atom < OLD_PACKED_VOLUME else None}
    return Path(pick_pretrained(hints)).stem


def phase_error(solution, hkl: np.ndarray, f_true: np.ndarray) -> float:
    """F-weighted phase error of the solution against the true F at ``hkl`` (any order: looked up)."""
    truth = torch.as_tensor(HklTable(*full_sphere(hkl, f_true))(solution.hkl)[0])[None]
    moving = torch.as_tensor(solution.f * np.exp(1j * solution.phi))[None]
    a = align(truth, moving, solution.hkl, solution.cell)
    aligned = apply_alignment_f(moving, solution.hkl, a)
    return float(score_f(truth, aligned, solution.hkl, solution.cell)["phase_error_weighted_deg"][0])


def run_preset(path: Path, source: str, n: int, folder: Path) -> dict:
    state = load_checkpoint(path)
    data_cfg = trained_on(state)
    preset, d_min = data_cfg["preset"], float(data_cfg["d_min"])
    held = dataclasses.asdict(make_config(preset, **{k: data_cfg[k] for k in ("seed", "splits") if k in data_cfg}))
    ds = held_out_split(preset, d_min, dict(noise=0.0, missing=0.0), source, n, folder / preset, held)
    data = load_split(ds, d_min=d_min, limit=n)
    f_true = f_from_density(data.truth, data.hkl, data.cell).numpy()
    per = []
    for b in range(len(data)):
        keep = data.measured[b].numpy()
        mtz = folder / f"{preset}-{b}.mtz"
        write_mtz(mtz, data.hkl[keep], data.f_obs[b].numpy()[keep], data.cell)
        solution = solve(SolveConfig(str(mtz), progress=False, threads=1))
        s = solution.summary
        chosen = Path(s["checkpoint"]).stem if s["checkpoint"] else "random starts"
        err = phase_error(solution, data.hkl[keep], f_true[b][keep])
        per.append({"id": data.ids[b], "chosen": chosen, "old_rule": old_choice(s), "verdict": s["verdict"],
                    "phase_error_deg": err, "solved": err < SOLVED_THRESHOLD_DEG})  # fmt: skip
        print(f"{preset} {b}: {chosen}, old rule {per[-1]['old_rule']}, {s['verdict']}, {err:.0f}°", flush=True)
    return {"network": path.stem, "preset": preset, "d_min": d_min, "n": len(per),
            "n_right_network": sum(p["chosen"] == path.stem for p in per),
            "n_random_starts_won": sum(p["chosen"] == "random starts" for p in per),
            "n_old_rule_right": sum(p["old_rule"] == path.stem for p in per),
            "n_solved": sum(p["solved"] for p in per),
            "n_claimed_solved": sum(p["verdict"] == "solved" for p in per),
            "n_claimed_right": sum(p["verdict"] == "solved" and p["solved"] for p in per),
            "per_structure": per}  # fmt: skip


def render(results: dict) -> str:
    """The Markdown table of docs/tables/network_choice_table.md from the whole results file."""
    lines = ["| held-out data | n | run won by its own network | by random starts | previous rule right | "
             "solved | claimed solved → right |", "|---|---|---|---|---|---|---|"]  # fmt: skip
    for r in results["rows"]:
        lines.append(f"| {r['preset']} ({r['network']}.pt), {r['d_min']:g} Å | {r['n']} | {r['n_right_network']} | "
                     f"{r['n_random_starts_won']} | {r['n_old_rule_right']} | {r['n_solved']} | "
                     f"{r['n_claimed_solved']} → {r['n_claimed_right']} |")  # fmt: skip
    return "\n".join(lines) + "\n"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--source", default="../shared/data/pdb")
    p.add_argument("--n", type=int, default=12)
    p.add_argument("--out", default="benchmarks/results/network_choice.json")
    p.add_argument("--table", default="docs/tables/network_choice_table.md")
    args = p.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        rows = [run_preset(path, args.source, args.n, Path(tmp)) for path in [n.path for n in shipped_networks()]]
    results = {"run": run_metadata(), "source": args.source, "solved_threshold_deg": SOLVED_THRESHOLD_DEG, "rows": rows}
    write_json(args.out, results)
    text = render(results)
    write_text(args.table, "<!-- written by benchmarks/network_choice.py -->\n\n" + text)
    print(text)


if __name__ == "__main__":
    main()
