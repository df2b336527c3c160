"""The demo's report: the headline table, ``report.md`` and the plots, from the ``results.json`` dictionary."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np

from patterson.evaluation.report import (
    SOLVED_THRESHOLD_DEG,
    new_figure,
    plot_slices,
    save_png,
)
from patterson.phasing.options import METHOD_OPTIONS

DEMO_METHODS = ("model", "hybrid", "learned", "histogram", "dual-space", "charge-flip", "hio", "chance")  # rows
NETWORK_METHODS = ("model", "hybrid")  # rows kept, marked "no network", where a test set's network is missing
LABELS = {
    "model": "network alone",
    "hybrid": "hybrid (network + HIO)",
    "learned": "learned loop (density-modification network inside)",
    "histogram": "control (histogram step inside the loop)",
    "dual-space": "dual-space direct methods",
    "charge-flip": "charge flipping",
    "hio": "HIO (shrink-wrap)",
    "chance": "chance (random phases, true amplitudes)",
}
COLOURS = {
    "model": "tab:purple",
    "hybrid": "tab:red",
    "learned": "tab:orange",
    "histogram": "tab:brown",
    "dual-space": "tab:cyan",
    "charge-flip": "tab:green",
    "hio": "tab:blue",
    "chance": "0.5",
}
TICKS = {"charge-flip": "charge\nflip", "dual-space": "dual\nspace", "histogram": "control"}  # phase error plot
PLOTS = {
    "solved fraction per method and test set": "solved_fraction.png",
    "F-weighted phase error of every structure": "phase_errors.png",
    "central sections of the first example of each test set (maps moved onto the truth)": "sections.png",
}


# --- report ------------------------------------------------------------------------------------------------------


def _pct(x: float | None) -> str:
    return "–" if x is None else f"{100 * x:.0f}%"


def _num(x: float | None, fmt: str) -> str:
    return "–" if x is None else format(x, fmt)


def shown_methods(results: dict) -> list[str]:
    """The headline's rows: the methods run on some test set, and the network's rows where a network is missing."""
    presets = results["presets"].values()
    run = {m for r in presets for m in r["methods"]}
    missing = {m for r in presets for m in r["skipped"] if m in NETWORK_METHODS}
    return [m for m in DEMO_METHODS if m in run or m in missing]


def _absent(result: dict, method: str) -> str:
    """Why a test set has no ``method`` row: no network for it, or not a method of that test set."""
    return "no network" if method in result["skipped"] else "not run"


def headline_table(results: dict) -> str:
    """The headline table (Markdown): methods × test sets, the chance level last."""
    presets = list(results["presets"])
    head = ["method"]
    for p in presets:
        head += [f"{p}: truly solved", f"{p}: claimed solved (right)", f"{p}: phase error (°)", f"{p}: CC"]
        head += [f"{p}: s/structure"]
    lines = ["| " + " | ".join(head) + " |", "|---" * len(head) + "|"]
    for method in shown_methods(results):
        cells = [LABELS[method]]
        for p in presets:
            m = results["presets"][p]["methods"].get(method)
            if m is None:
                cells += [f"– ({_absent(results['presets'][p], method)})", "–", "–", "–", "–"]
                continue
            sec = "–" if method == "chance" else _num(m["seconds_per_structure"], ".2f")
            v = m.get("verdict")
            claimed = "–" if v is None else f"{v['n_claimed_solved']} ({v['n_correct_claims']})"
            cells += [
                f"{m['n_solved']}/{m['n']} ({_pct(m['solved_fraction'])})",
                claimed,
                _num(m["median_phase_error_weighted_deg"], ".1f"),
                _num(m["median_cc_aligned"], ".3f"),
                sec,
            ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def _budget_text(config: dict, learned: bool = True) -> str:
    """What each method was given on the one-cell test sets: starts and iterations (the run's own, else each
    method's defaults, :data:`~patterson.phasing.options.METHOD_OPTIONS`); the learned loop's only if ``learned``."""

    def default(method: str, name: str) -> int:
        return (config.get("phasing") or {}).get(name) or getattr(METHOD_OPTIONS[method], name)

    text = (
        f"Charge flipping runs {default('charge-flip', 'n_starts')} random starts × "
        f"{default('charge-flip', 'n_iter')} cycles and HIO {default('hio', 'n_starts')} × {default('hio', 'n_iter')} "
        f"iterations (the lowest R-free kept); the hybrid one start from the network ({default('hio', 'n_iter')} HIO "
        "iterations)"
    )
    if learned:
        text += (
            f"; the learned loop {default('learned', 'n_starts')} random starts × {default('learned', 'n_iter')} "
            f"cycles with the shipped density-modification network inside, then {METHOD_OPTIONS['learned'].n_finish} "
            "of positivity"
        )
    return text


def _crystals_budget_text(results: dict) -> str:
    """What each method was given on the peptide crystals: the same wall time per crystal."""
    return "".join(
        f" On {p} every method had {r['budget_s']:g} s of wall time per crystal: dual-space as its time limit (its "
        "first batch of trials runs whole, so a large cell takes longer), the others in rounds of 2 random starts of "
        "their default run until the next round would end past it or one says solved (the lowest R-free kept)."
        for p, r in results["presets"].items()
        if "budget_s" in r
    )


def _learned_run(results: dict) -> bool:
    """Whether some test set ran the learned loop."""
    return any(m in r["methods"] for r in results["presets"].values() for m in ("learned", "histogram"))


def _not_run_text(results: dict) -> str:
    """A sentence on the learned loop where no test set ran it (no density-modification network of its preset)."""
    if _learned_run(results):
        return ""
    return (
        " The learned loop and its control were not run: no shipped density-modification network was trained on "
        f"{' or '.join(results['presets'])} data."
    )


def _validation_text(val: dict) -> str:
    """The network's own held-out figure: median aligned CC on its validation maps, at the epoch kept."""
    if val.get("cc_aligned_median") is None:
        return ""
    return (
        f", median CC {val['cc_aligned_median']:.3f} after the origin/hand search on its {val.get('maps') or '?'} "
        f"validation maps (epoch {val.get('epoch')})"
    )


def report_markdown(results: dict) -> str:
    """report.md of a demo run, from its results.json dictionary."""
    presets = results["presets"]
    sets = ", ".join(f"`{p}` ({r['n']} structures)" for p, r in presets.items())
    lines = [
        "# patterson demo",
        "",
        f"patterson {results['version']}, {results['date']}. Real X-ray protein chains from `{results['source']}` "
        f"were cut into pieces and placed in unit cells as {len(presets)} test sets "
        f"({sets}); every structure was phased "
        "from its amplitudes alone by each method, and every map was scored against the true density after the "
        "origin and hand search, as `patterson evaluate` does.",
        "",
    ]
    if results["warnings"]:
        lines += ["## Warnings", ""] + [f"- {w}" for w in results["warnings"]] + [""]
    lines += _headline_section(results)
    lines += ["## Test sets", ""] + [_test_set_line(p, r) for p, r in presets.items()]
    lines += ["", "## Networks", ""] + [_network_line(p, r["network"], r) for p, r in presets.items()]
    lines += _maps_section(presets) + _timings_section(results)
    lines += [
        "",
        "## Reproduce",
        "",
        f"    {results['command']}",
        "",
        "Everything is deterministic given the seed and the structure source, but for the runs with a wall-time "
        "budget (peptide crystals), which may run fewer trials or rounds on a slower or busier machine. Definitions "
        "of every metric: docs/evaluation.md; the methods: docs/phasing.md; this report: docs/demo.md.",
    ]
    return "\n".join(lines) + "\n"


def _headline_section(results: dict) -> list[str]:
    lines = [
        "## Headline",
        "",
        f"Truly solved: F-weighted phase error < {SOLVED_THRESHOLD_DEG:g}° against the truth. Claimed solved: what "
        "the method itself says, from R-free on a free set (5% of the reflections, at least 50 where the data allow) "
        "that it never imposed, before seeing the truth; in brackets the claims that are right. Phase error: median "
        "over structures of the F-weighted mean |Δφ| to d_min. CC: median map correlation with the truth after the "
        "origin/hand search. s/structure: mean wall time per structure on this machine (the hybrid includes the "
        f"network's). Not run: not a method of that test set. {_budget_text(results['config'], _learned_run(results))} "
        f"(docs/phasing.md).{_crystals_budget_text(results)}{_not_run_text(results)}",
        "",
        headline_table(results),
    ]
    if results["plots"]:
        lines += [f"![{title}]({name})" for title, name in results["plots"].items()] + [""]
    elif results["plots_note"]:
        lines += [results["plots_note"], ""]
    return lines


def _test_set_line(p: str, r: dict) -> str:
    if "budget_s" in r:
        return _crystals_line(p, r)
    d = r["dataset"]
    packing = f"packed at {d['pack_volume']:g} Å³ per atom" if d.get("pack_volume") else "one dipeptide per cell"
    cell = " ".join(f"{x:g}" for x in d["cell"])
    entries = ", ".join(f"{e} ({c})" if c > 1 else e for e, c in r["entries"].items())
    return (
        f"- **{p}**: {r['n']} structures, cell {cell}, {packing}, B {d['b_iso']:g} Å², d_min {r['d_min']:g} Å "
        f"({r['n_reflections']} reflections), grid {'×'.join(map(str, r['grid']))}, seed {d['seed']}. "
        f"Dipeptides from {len(r['entries'])} entries: {entries}. The test set is `{r['data_folder']}` in this "
        "folder, a patterson dataset (`patterson dataset info`, `patterson evaluate --data`); every example's "
        "residues are in results.json."
    )


def _crystals_line(p: str, r: dict) -> str:
    """The peptide-crystal test set: what the crystals are, and each one's group, resolution and size."""
    d, ex = r["dataset"], r["examples"]
    groups = ", ".join(f"{g} ({c})" for g, c in sorted(Counter(e["spacegroup"] for e in ex).items()))
    coarser = sum(e["d_min"] > r["d_min"] + 1e-6 for e in ex)
    entries = ", ".join(f"{e} ({c})" if c > 1 else e for e, c in r["entries"].items())
    return (
        f"- **{p}**: {r['n']} crystals of {d['k_min']}–{d['k']}-residue segments packed by their space group at "
        f"{d['pack_volume']:g} Å³ per atom ({sum(e['beta_stack'] for e in ex)} β-sheet stacks), B "
        f"{d['b_range'][0]:g} Å² (the preset's at this resolution), {100 * d['noise']:g}% amplitude noise, "
        f"{100 * d['missing']:g}% of the reflections missing, d_min {r['d_min']:g} Å ({coarser} kept coarser by the "
        f"preset's {'×'.join(map(str, d['grid']))} grid); space groups {groups}; "
        f"{min(e['n_atoms'] for e in ex)}–{max(e['n_atoms'] for e in ex)} atoms and "
        f"{min(e['n_reflections'] for e in ex)}–{max(e['n_reflections'] for e in ex)} reflections per cell, each "
        f"phased alone on a grid of its own cell ({r['spacing']:g} Å), seed {d['seed']}. Segments from "
        f"{len(r['entries'])} entries: {entries}. The test set is `{r['data_folder']}` in this folder; every "
        "crystal's cell, group and residues are in results.json."
    )


def _network_line(p: str, net: dict | None, result: dict) -> str:
    if net is None and "budget_s" in result:
        return (f"- **{p}**: none needed (dual-space, charge flipping and HIO learn nothing); no shipped "
                f"density-modification network was trained on {p} data, so the learned loop did not run.")  # fmt: skip
    if net is None:
        return f"- **{p}**: none (see the warnings)."
    t = net["trained_on"]
    held = net["held_out"]
    if held.get("checked"):
        overlap = held.get("overlap") or []
        held_text = f"{len(overlap)} of the test entries are in its training source ({held['note']})"
    else:
        held_text = f"not checked whether the test entries were held out ({held['note']})"
    return (
        f"- **{p}**: `{net['path']}`, {net['arch']} with {net['parameters']:,} parameters, trained on "
        f"{t.get('n') or '?'} `{t.get('preset') or '?'}` examples from `{t.get('source') or '?'}` "
        f"(d_min {t.get('d_min') or '?'} Å){_validation_text(net.get('validation') or {})}; {held_text}."
    )


def _maps_section(presets: dict) -> list[str]:
    lines = [
        "",
        "## Maps",
        "",
        "CCP4 maps (P1, the real cell in the header) of the first examples of each test set: the true density, the "
        "Patterson map, and each method's density moved onto the truth (origin shift and hand of the search), so "
        "they overlay in Coot, PyMOL or ChimeraX. F-weighted phase errors in brackets.",
        "",
    ]
    for p, r in presets.items():
        for m in r["maps"]:
            errs = ", ".join(
                f"[{name}]({m['folder']}/{name}) ({m['phase_error_weighted_deg'][k]:.0f}°)"
                if k in m["phase_error_weighted_deg"]
                else f"[{name}]({m['folder']}/{name})"
                for k, name in m["files"].items()
            )
            label = next(e["label"] for e in r["examples"] if e["id"] == m["id"])
            lines.append(f"- {p} {m['id']} (`{label}`): {errs}")
    return lines


def _timings_section(results: dict) -> list[str]:
    env = results["environment"]
    lines = ["", "## Timings", ""]
    for p, r in results["presets"].items():
        s = r["seconds"]
        lines.append(
            f"- {p}: test set {s['data']:.1f} s, phasing and scoring {s['phasing_and_scoring']:.1f} s, "
            f"maps {s['maps']:.1f} s"
        )
    return lines + [
        f"- plots {results['seconds']['plots']:.1f} s; total {results['seconds']['total']:.1f} s",
        f"- {env['platform']}, {env['cpu_count']} CPUs, torch {env['torch']} with {env['torch_threads']} "
        f"thread(s), Python {env['python']}",
    ]


# --- plots -------------------------------------------------------------------------------------------------------


def plot_solved(results: dict, path: Path) -> None:
    """Grouped bars: the solved fraction of each method on each test set, labelled; skipped methods marked."""
    presets = list(results["presets"])
    methods = shown_methods(results)
    fig = new_figure(7.5, 4.2)
    ax = fig.add_subplot()
    width = 0.8 / len(methods)
    for j, method in enumerate(methods):
        for i, p in enumerate(presets):
            x = i + (j - (len(methods) - 1) / 2) * width
            m = results["presets"][p]["methods"].get(method)
            if m is None:
                why = _absent(results["presets"][p], method)
                ax.text(x, 0.02, why, rotation=90, ha="center", va="bottom", fontsize=7, color="0.4")
                continue
            y = m["solved_fraction"] or 0.0
            ax.bar(x, y, width, color=COLOURS[method], label=LABELS[method])
            ax.text(x, y + 0.01, f"{100 * y:.0f}%", ha="center", va="bottom", fontsize=7)
    handles, names = ax.get_legend_handles_labels()
    unique = dict(zip(names, handles, strict=True))
    ax.legend(unique.values(), unique.keys(), fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.1), ncol=3)
    ax.set_xticks(range(len(presets)))
    ax.set_xticklabels([f"{p} (n = {results['presets'][p]['n']})" for p in presets])
    ax.set_ylim(0, 1.1)
    ax.set_ylabel(f"solved (F-weighted phase error < {SOLVED_THRESHOLD_DEG:g}°)")
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    save_png(fig, path)


def plot_phase_errors(results: dict, path: Path) -> None:
    """Per test set: every structure's F-weighted phase error for each method, medians marked, 40° dotted."""
    presets = list(results["presets"])
    methods = shown_methods(results)
    fig = new_figure(4.5 * len(presets), 4.2)
    rng = np.random.default_rng(0)
    for i, p in enumerate(presets):
        ax = fig.add_subplot(1, len(presets), i + 1)
        for j, method in enumerate(methods):
            m = results["presets"][p]["methods"].get(method)
            if m is None:
                why = _absent(results["presets"][p], method)
                ax.text(j, 2, why, rotation=90, ha="center", va="bottom", fontsize=7, color="0.4")
                continue
            y = m["per_structure"]["phase_error_weighted_deg"]
            y = np.array([np.nan if v is None else v for v in y], dtype=float)
            ax.plot(j + rng.uniform(-0.15, 0.15, len(y)), y, "o", ms=4, alpha=0.7, color=COLOURS[method])
            ax.plot([j - 0.3, j + 0.3], [np.nanmedian(y)] * 2, "k-", lw=1.5)
        ax.axhline(SOLVED_THRESHOLD_DEG, color="k", ls=":", lw=0.8)
        ax.set_xticks(range(len(methods)))
        ax.set_xticklabels([TICKS.get(m, m) for m in methods], fontsize=8)
        ax.set_xlim(-0.6, len(methods) - 0.4)
        ax.set_ylim(0, 100)
        ax.set_ylabel("F-weighted phase error (°)")
        ax.set_title(f"{p} (n = {results['presets'][p]['n']})", fontsize=10)
        ax.grid(axis="y", alpha=0.3)
    fig.suptitle(f"one dot per structure, bar: median; solved below {SOLVED_THRESHOLD_DEG:g}° (dotted)", fontsize=9)
    fig.tight_layout()
    save_png(fig, path)


def write_plots(folder: Path, results: dict, sections: list[tuple[str, dict]]) -> None:
    """The PNG plots of :data:`PLOTS` into ``folder``; ``sections``: (label, {column: 2D array or None}) per test
    set, the columns that hold no map in any of them left out."""
    plot_solved(results, folder / PLOTS["solved fraction per method and test set"])
    plot_phase_errors(results, folder / PLOTS["F-weighted phase error of every structure"])
    cols = [c for c in sections[0][1] if any(panels[c] is not None for _, panels in sections)] if sections else []
    sections = [(label, {c: panels[c] for c in cols}) for label, panels in sections]
    plot_slices(
        sections, folder / PLOTS["central sections of the first example of each test set (maps moved onto the truth)"]
    )
