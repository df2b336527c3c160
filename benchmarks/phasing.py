"""The headline comparison: where does each phasing method win?

For the ``paper-2`` (one dipeptide in a mostly empty 12 Å cell) and ``dense-protein`` (dipeptides packed at
35 Å³/atom) presets, at d_min 1.0, 1.5, 2.0 and 2.5 Å, with clean data and with 5% amplitude noise plus 10% missing
reflections, this makes a small test split from real chains, phases it with charge flipping, HIO, RAAR and RRR
(4 starts of 400 iterations each; charge flipping 300) and (given a checkpoint) the network and the hybrid, and
scores every map as `patterson evaluate` does: solved fraction (F-weighted phase error < 40° after the origin and
hand search), median F-weighted phase error, seconds per structure, next to the chance level (random phases with
the true amplitudes).

With ``--checkpoint pretrained`` each preset gets its shipped network, and its test structures come from that
network's held-out test entries (same seed and split fractions as its training data); the model and hybrid columns
are filled where d_min is the network's own (its grid), the classical columns everywhere.

    python benchmarks/phasing.py [--source ../shared/data/pdb] [--n 12] [--checkpoint pretrained|CKPT]
        [--step pretrained|CKPT] [--equal-time] [--presets ...] [--d-min ...] [--conditions ...]
        [--out benchmarks/results/phasing.json] [--table docs/tables/phasing_table.md]

With ``--step`` the learned loop (a density-modification network inside the phasing loop) and the same loop with
the non-learned histogram step join the table, on the network's held-out test entries for its own preset; with
``--equal-time`` HIO runs once more with as many starts as fit in the learned loop's wall time.

Writes JSON and a Markdown table (kept in the docs; regenerate it with this one command).
"""

from __future__ import annotations

import argparse
import dataclasses
import tempfile
from pathlib import Path

from _common import held_out_split, run_metadata, write_json, write_text
from patterson.datasets import StoredDataset, make_config
from patterson.evaluation.report import SOLVED_THRESHOLD_DEG
from patterson.networks import TrainedNetwork, find_checkpoint, load_checkpoint, open_network, trained_on
from patterson.phasing import PhasingConfig, compare_methods, load_split, load_step

PRESETS = ("paper-2", "dense-protein")
D_MINS = (1.0, 1.5, 2.0, 2.5)
CONDITIONS = {"clean": dict(noise=0.0, missing=0.0), "5% noise, 10% missing": dict(noise=0.05, missing=0.10)}


def network_for(preset: str, checkpoint: str | None) -> tuple[TrainedNetwork | None, dict | None, str | None]:
    """(network, training data config, path) of the network for a preset: ``pretrained`` picks the shipped weights
    trained on that preset (none: no network for it), a path is used for every preset."""
    if not checkpoint:
        return None, None, None
    network = open_network(checkpoint, dataclasses.asdict(make_config(preset)))
    if network is None or (checkpoint == "pretrained" and network.trained_on.get("preset") != preset):
        return None, None, None
    return network, network.trained_on, str(network.path)


def run_condition(ds: StoredDataset, d_min: float, network, step=None, equal_time=False) -> dict:
    """Every method on one test split; with ``step`` also the learned loop and its histogram control, and with
    ``equal_time`` HIO once more with as many starts as fit in the learned loop's time (``hio-equal-time``)."""
    methods = ("chance", "charge-flip", "hio", "raar", "rrr") + (("model", "hybrid") if network is not None else ())
    methods += ("learned", "histogram") if step is not None else ()
    data = load_split(ds, d_min)
    runs = compare_methods(data, methods, network=network, step=step)
    out = {m: run.summary() for m, run in runs.items()}
    if equal_time and step is not None:
        ratio = out["learned"]["seconds_per_structure"] / out["hio"]["seconds_per_structure"]
        n_starts = max(4, round(4 * ratio))
        again = compare_methods(data, ("hio",), phasing=PhasingConfig(n_starts=n_starts))["hio"].summary()
        out["hio-equal-time"] = again | {"n_starts": n_starts}
    return out


def render(results: dict) -> str:
    """The Markdown table of docs/tables/phasing_table.md (and, from a ``--step`` run, docs/tables/learned_table.md)
    from the whole results file."""
    order = ("charge-flip", "hio", "raar", "rrr", "hio-equal-time", "histogram", "learned", "model", "hybrid", "chance")
    methods = [m for m in order if any(m in r for r in results["runs"])]
    head = "| preset | d_min (Å) | data | " + " | ".join(methods) + " |"
    lines = [
        "Solved (F-weighted phase error < 40°, count of structures) · median F-weighted phase error · seconds per "
        "structure.",
        "",
        head,
        "|" + " --- |" * (3 + len(methods)),
    ]
    for r in results["runs"]:
        cells = []
        for m in methods:
            if m not in r:
                cells.append("–")
                continue
            v = r[m]
            sec = "" if m == "chance" else f" · {v['seconds_per_structure']:.2f} s"
            count = f"{v['n_solved']}/{v['n']}" if "n_solved" in v else f"{100 * v['solved_fraction']:.0f}%"
            cells.append(f"{count} · {v['median_phase_error_weighted_deg']:.0f}°{sec}")
        lines.append(f"| {r['preset']} | {r['d_min']:.1f} | {r['condition']} | " + " | ".join(cells) + " |")
    networks = {r["preset"]: r.get("held_out_from") for r in results["runs"]}
    held = [f"`{p}`: {Path(n).name}" for p, n in networks.items() if n]
    lines += [
        "",
        f"{results['n_per_condition']} test structures per row from `{results['source']}`; "
        f"{results['run']['platform']}, {results['run']['torch_threads']} torch threads; "
        f"patterson {results['run']['patterson']}.",
    ]
    if held:
        lines.append(
            "Networks (model and hybrid at their own d_min; every row of a preset uses that network's held-out test "
            "entries): " + ", ".join(held) + "."
        )
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--source", default="../shared/data/pdb", help="folder of PDB files, or embedded")
    parser.add_argument("--n", type=int, default=12, help="test structures per condition")
    parser.add_argument(
        "--checkpoint", default=None, help="pretrained (the shipped network of each preset) or a checkpoint file"
    )
    parser.add_argument("--presets", nargs="+", default=list(PRESETS))
    parser.add_argument("--d-min", nargs="+", type=float, default=list(D_MINS))
    parser.add_argument("--step", default=None, help="the learned loop's network: pretrained or a checkpoint file")
    parser.add_argument("--equal-time", action="store_true", help="HIO again with the learned loop's wall time")
    parser.add_argument("--conditions", nargs="+", default=list(CONDITIONS), choices=list(CONDITIONS))
    parser.add_argument("--out", default="benchmarks/results/phasing.json")
    parser.add_argument("--table", default="docs/tables/phasing_table.md")
    args = parser.parse_args()
    step_path = find_checkpoint(args.step, task="density-modification") if args.step else None

    results = {
        "benchmark": "phasing methods on paper-2 and dense-protein test structures",
        "source": args.source,
        "n_per_condition": args.n,
        "solved_threshold_deg": SOLVED_THRESHOLD_DEG,
        "checkpoint": args.checkpoint,
        "step": str(step_path) if step_path else None,
        "run": run_metadata(),
        "runs": [],
    }
    with tempfile.TemporaryDirectory() as tmp:
        for preset in args.presets:
            network, trained, path = network_for(preset, args.checkpoint)
            step, held = None, trained
            if step_path is not None:  # its held-out entries for every row of its own preset
                step_trained = trained_on(load_checkpoint(step_path))
                step = load_step(step_path)
                held = step_trained if step_trained.get("preset") == preset else trained
            for d_min in args.d_min:
                for name in args.conditions:
                    condition = CONDITIONS[name]
                    folder = Path(tmp) / f"{preset}-{d_min}-{len(results['runs'])}"
                    ds = held_out_split(preset, d_min, condition, args.source, args.n, folder, held)
                    run = {"preset": preset, "d_min": d_min, "condition": name, "n": len(ds)}
                    run["held_out_from"] = path if held is trained else str(step_path)  # its held-out entries
                    # a network works on the grid it was trained on (its d_min); elsewhere: classical rows only
                    fits = network is not None and abs(float(trained.get("d_min", 0)) - d_min) < 1e-6
                    run["network"] = path if fits else None
                    run.update(run_condition(ds, d_min, network if fits else None, step, args.equal_time))
                    results["runs"].append(run)
                    summary = [
                        f"{m} {100 * run[m]['solved_fraction']:.0f}%/{run[m]['median_phase_error_weighted_deg']:.0f}°"
                        for m in (
                            "charge-flip",
                            "hio",
                            "raar",
                            "rrr",
                            "hio-equal-time",
                            "learned",
                            "histogram",
                            "model",
                            "hybrid",
                            "chance",
                        )
                        if m in run
                    ]
                    print(f"{preset:14s} {d_min:.1f} Å {name:22s} " + "  ".join(summary), flush=True)
    write_json(args.out, results, indent=2)
    write_text(args.table, render(results))


if __name__ == "__main__":
    main()
