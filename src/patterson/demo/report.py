"""The demo's report: the headline table, ``report.md`` and the plots, from the ``results.json`` dictionary."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from patterson.evaluation.report import (
    SOLVED_THRESHOLD_DEG,
    new_figure,
    plot_slices,
    save_png,
)
from patterson.phasing.options import METHOD_OPTIONS

DEMO_METHODS = ("model", "hybrid", "learned", "charge-flip", "hio", "chance")  # rows of the headline, in order
LABELS = {
    "model": "network alone",
    "hybrid": "hybrid (network + HIO)",
    "learned": "learned loop (density-modification network inside)",
    "charge-flip": "charge flipping",
    "hio": "HIO (shrink-wrap)",
    "chance": "chance (random phases, true amplitudes)",
}
COLOURS = {
    "model": "tab:purple",
    "hybrid": "tab:red",
    "learned": "tab:orange",
    "charge-flip": "tab:green",
    "hio": "tab:blue",
    "chance": "0.5",
}
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


def headline_table(results: dict) -> str:
    """The headline table (Markdown): methods × test sets, the chance level last."""
    presets = list(results["presets"])
    head = ["method"]
    for p in presets:
        head += [f"{p}: truly solved", f"{p}: claimed solved (right)", f"{p}: phase error (°)", f"{p}: CC"]
        head += [f"{p}: s/structure"]
    lines = ["| " + " | ".join(head) + " |", "|---" * len(head) + "|"]
    for method in DEMO_METHODS:
        cells = [LABELS[method]]
        for p in presets:
            m = results["presets"][p]["methods"].get(method)
            if m is None:
                cells += ["– (no network)", "–", "–", "–", "–"]
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


def _budget_text(config: dict) -> str:
    """What each method was given: starts and iterations (the run's own, else each method's defaults,
    :data:`~patterson.phasing.options.METHOD_OPTIONS`)."""

    def default(method: str, name: str) -> int:
        return (config.get("phasing") or {}).get(name) or getattr(METHOD_OPTIONS[method], name)

    return (
        f"Charge flipping runs {default('charge-flip', 'n_starts')} random starts × "
        f"{default('charge-flip', 'n_iter')} cycles and HIO {default('hio', 'n_starts')} × {default('hio', 'n_iter')} "
        f"iterations (the lowest R-free kept); the hybrid one start from the network ({default('hio', 'n_iter')} HIO "
        f"iterations); the learned loop {default('learned', 'n_starts')} random starts × "
        f"{default('learned', 'n_iter')} cycles with the shipped density-modification network inside, then "
        f"{METHOD_OPTIONS['learned'].n_finish} of positivity"
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
    lines = [
        "# patterson demo",
        "",
        f"patterson {results['version']}, {results['date']}. Real X-ray protein chains from `{results['source']}` "
        f"were cut into dipeptides and placed in unit cells as two test sets ({', '.join(f'`{p}`' for p in presets)}, "
        f"{results['config']['n']} structures each); every structure was phased from its amplitudes alone (read off "
        "its Patterson map) by each method, and every map was scored against the true density after the origin and "
        "hand search, as `patterson evaluate` does.",
        "",
    ]
    if results["warnings"]:
        lines += ["## Warnings", ""] + [f"- {w}" for w in results["warnings"]] + [""]
    lines += _headline_section(results)
    lines += ["## Test sets", ""] + [_test_set_line(p, r) for p, r in presets.items()]
    lines += ["", "## Networks", ""] + [_network_line(p, r["network"]) for p, r in presets.items()]
    lines += _maps_section(presets) + _timings_section(results)
    lines += [
        "",
        "## Reproduce",
        "",
        f"    {results['command']}",
        "",
        "Everything is deterministic given the seed and the structure source. Definitions of every metric: "
        "docs/evaluation.md; the methods: docs/phasing.md; this report: docs/demo.md.",
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
        "origin/hand search. s/structure: wall time per structure on this machine (the hybrid includes the "
        f"network's). {_budget_text(results['config'])} (docs/phasing.md).",
        "",
        headline_table(results),
    ]
    if results["plots"]:
        lines += [f"![{title}]({name})" for title, name in results["plots"].items()] + [""]
    elif results["plots_note"]:
        lines += [results["plots_note"], ""]
    return lines


def _test_set_line(p: str, r: dict) -> str:
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


def _network_line(p: str, net: dict | None) -> str:
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
    fig = new_figure(7.5, 4.2)
    ax = fig.add_subplot()
    width = 0.8 / len(DEMO_METHODS)
    for j, method in enumerate(DEMO_METHODS):
        for i, p in enumerate(presets):
            x = i + (j - (len(DEMO_METHODS) - 1) / 2) * width
            m = results["presets"][p]["methods"].get(method)
            if m is None:
                ax.text(x, 0.02, "no network", rotation=90, ha="center", va="bottom", fontsize=7, color="0.4")
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
    fig = new_figure(4.5 * len(presets), 4.2)
    rng = np.random.default_rng(0)
    for i, p in enumerate(presets):
        ax = fig.add_subplot(1, len(presets), i + 1)
        for j, method in enumerate(DEMO_METHODS):
            m = results["presets"][p]["methods"].get(method)
            if m is None:
                ax.text(j, 2, "no network", rotation=90, ha="center", va="bottom", fontsize=7, color="0.4")
                continue
            y = m["per_structure"]["phase_error_weighted_deg"]
            y = np.array([np.nan if v is None else v for v in y], dtype=float)
            ax.plot(j + rng.uniform(-0.15, 0.15, len(y)), y, "o", ms=4, alpha=0.7, color=COLOURS[method])
            ax.plot([j - 0.3, j + 0.3], [np.nanmedian(y)] * 2, "k-", lw=1.5)
        ax.axhline(SOLVED_THRESHOLD_DEG, color="k", ls=":", lw=0.8)
        ax.set_xticks(range(len(DEMO_METHODS)))
        ax.set_xticklabels([m if m != "charge-flip" else "charge\nflip" for m in DEMO_METHODS], fontsize=8)
        ax.set_xlim(-0.6, len(DEMO_METHODS) - 0.4)
        ax.set_ylim(0, 100)
        ax.set_ylabel("F-weighted phase error (°)")
        ax.set_title(f"{p} (n = {results['presets'][p]['n']})", fontsize=10)
        ax.grid(axis="y", alpha=0.3)
    fig.suptitle(f"one dot per structure, bar: median; solved below {SOLVED_THRESHOLD_DEG:g}° (dotted)", fontsize=9)
    fig.tight_layout()
    save_png(fig, path)


def write_plots(folder: Path, results: dict, sections: list[tuple[str, dict]]) -> None:
    plot_solved(results, folder / PLOTS["solved fraction per method and test set"])
    plot_phase_errors(results, folder / PLOTS["F-weighted phase error of every structure"])
    plot_slices(
        sections, folder / PLOTS["central sections of the first example of each test set (maps moved onto the truth)"]
    )
