"""Reports: the ``metrics.json`` summary, the per-example CSV, ``report.md`` and PNG plots.

``metrics.json`` schema (stable; other tools read it)::

    n                 number of examples
    cc                {mean, median}   Pearson CC of prediction and truth as predicted (no alignment)
    cc_aligned        {mean, median}   Pearson CC after the origin/hand alignment
    phase_error_deg   {mean, median, median_weighted}   per-example mean |Δφ| over all reflections to d_min:
                      mean and median of the unweighted errors, median of the F-weighted (w = |F_true|) errors
    solved_fraction   share of examples with F-weighted phase error < 40°
    shells            [{d_min, d_max, phase_error_deg, fraction_below_60, map_cc}], low resolution first: the d
                      range of the shell's reflections, the mean over examples of the unweighted mean |Δφ| in the
                      shell, the share of examples whose shell error is < 60°, and the mean shell map correlation
    chance            the same keys (n … shells) for random phases with the true amplitudes, or null
    method, dataset, version
    peaks             (examples with atoms only) {n_atoms, atoms_found_1.0A, n_vectors, vectors_found_0.5A,
                      threshold}: the true atoms and interatomic vectors of all examples, and how many have a peak
                      (a vector between peaks) within 1.0 Å (0.5 Å), peaks above threshold × the map maximum

Non-finite numbers are written as null.
"""

from __future__ import annotations

import csv
import io
import logging
import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from patterson import __version__
from patterson.evaluation.metrics import PairScores
from patterson.files import atomic_write

log = logging.getLogger(__name__)

SOLVED_THRESHOLD_DEG = 40.0  # an example is "solved" when its F-weighted phase error is below this
SHELL_THRESHOLD_DEG = 60.0  # the paper's per-shell threshold (its Figs 4 and 6)


def _num(x) -> float | None:
    x = float(x)
    return x if math.isfinite(x) else None


def _stats(values: np.ndarray, keys: Sequence[str] = ("mean", "median")) -> dict[str, float | None]:
    v = np.asarray(values, dtype=np.float64)
    v = v[np.isfinite(v)]
    funcs = {"mean": np.mean, "median": np.median}
    return {k: (_num(funcs[k](v)) if v.size else None) for k in keys}


def scores_summary(scores: PairScores) -> dict:
    """The per-method part of metrics.json (n, cc, cc_aligned, phase_error_deg, solved_fraction, shells)."""
    pe = scores.phase_error_deg.numpy()
    pew = scores.phase_error_weighted_deg.numpy()
    shell_pe = scores.shell_phase_error_deg.numpy()  # (B, S)
    shells = []
    for s in range(shell_pe.shape[1]):
        col = shell_pe[:, s]
        ok = np.isfinite(col)
        shells.append(
            {
                "d_min": _num(scores.shell_d_min[s]),
                "d_max": _num(scores.shell_d_max[s]),
                "phase_error_deg": _num(col[ok].mean()) if ok.any() else None,
                "fraction_below_60": _num(np.mean(col[ok] < SHELL_THRESHOLD_DEG)) if ok.any() else None,
                "map_cc": _num(scores.shell_map_cc[:, s].mean()),
            }
        )
    return {
        "n": len(scores),
        "cc": _stats(scores.cc.numpy()),
        "cc_aligned": _stats(scores.cc_aligned.numpy()),
        "phase_error_deg": {**_stats(pe), "median_weighted": _stats(pew, ("median",))["median"]},
        "solved_fraction": _num(np.mean(np.nan_to_num(pew, nan=180.0) < SOLVED_THRESHOLD_DEG)),
        "shells": shells,
    }


def verdict_counts(phase_error_weighted_deg: np.ndarray, verdicts: Sequence[str]) -> dict:
    """How a method's verdicts compare with the truth: claimed and truly solved (F-weighted phase error below
    :data:`SOLVED_THRESHOLD_DEG`) counts, precision and recall of ``solved``, and the count of each verdict."""
    truly = np.nan_to_num(np.asarray(phase_error_weighted_deg, dtype=np.float64), nan=180.0) < SOLVED_THRESHOLD_DEG
    claimed = np.array([v == "solved" for v in verdicts], dtype=bool)
    correct = int((claimed & truly).sum())
    return {
        "n": int(len(truly)),
        "n_claimed_solved": int(claimed.sum()),
        "n_truly_solved": int(truly.sum()),
        "n_correct_claims": correct,
        "precision": correct / int(claimed.sum()) if claimed.any() else None,
        "recall": correct / int(truly.sum()) if truly.any() else None,
        "counts": {v: int(sum(x == v for x in verdicts)) for v in ("solved", "uncertain", "not solved")},
    }


def metrics_summary(scores: PairScores, chance: PairScores | None = None, method: str = "", dataset: str = "") -> dict:
    """Build the metrics.json dictionary from per-example scores (and the chance level's scores)."""
    out = scores_summary(scores)
    out["chance"] = scores_summary(chance) if chance is not None else None
    out.update({"method": method, "dataset": dataset, "version": __version__})
    return out


def per_example_rows(
    scores: PairScores,
    ids: Sequence[str] | None = None,
    chance: PairScores | None = None,
    extra: dict[str, Sequence[float | str]] | None = None,
) -> tuple[list[str], list[list]]:
    """Header and rows of the per-example table (one row per example, per-shell errors last); ``extra`` columns
    hold numbers or text (the verdict)."""
    n = len(scores)
    ids = list(ids) if ids is not None else [str(i) for i in range(n)]
    n_shells = scores.shell_phase_error_deg.shape[1]
    header = ["id", "cc", "cc_aligned", "phase_error_deg", "phase_error_weighted_deg"]
    header += ["shift_x", "shift_y", "shift_z", "inverted"]
    if chance is not None:
        header += ["chance_cc_aligned", "chance_phase_error_weighted_deg"]
    extra = extra or {}
    header += list(extra)
    header += [f"shell{s + 1:02d}_phase_error_deg" for s in range(n_shells)]
    rows = []
    for i in range(n):
        row = [ids[i], float(scores.cc[i]), float(scores.cc_aligned[i]), float(scores.phase_error_deg[i])]
        row += [float(scores.phase_error_weighted_deg[i]), *map(float, scores.shift_frac[i]), int(scores.inverted[i])]
        if chance is not None:
            row += [float(chance.cc_aligned[i]), float(chance.phase_error_weighted_deg[i])]
        row += [v[i] if isinstance(v[i], str) else float(v[i]) for v in extra.values()]
        row += [float(x) for x in scores.shell_phase_error_deg[i]]
        rows.append([f"{x:.6g}" if isinstance(x, float) else x for x in row])
    return header, rows


def write_per_example_csv(path: str | Path, header: list[str], rows: list[list]) -> None:
    """Write the per-example table as CSV, atomically."""
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    atomic_write(Path(path), lambda tmp: Path(tmp).write_text(buf.getvalue(), encoding="utf-8"))


# --- report.md ----------------------------------------------------------------------------------------------------


def _f(x, digits: int = 3) -> str:
    return "–" if x is None or (isinstance(x, float) and not math.isfinite(x)) else f"{x:.{digits}f}"


def _summary_row(label: str, m: dict) -> str:
    cells = [
        label,
        str(m["n"]),
        _f(m["cc"]["median"]),
        _f(m["cc_aligned"]["median"]),
        _f(m["phase_error_deg"]["median"], 1),
        _f(m["phase_error_deg"]["median_weighted"], 1),
        _f(m["solved_fraction"]),
    ]
    return "| " + " | ".join(cells) + " |"


def report_markdown(
    metrics: dict, plots: dict[str, str] | None = None, notes: Sequence[str] = (), vector_table: str = ""
) -> str:
    """report.md: the paper's Table 1 (median CC, median phase error, n) next to the chance level, shells, plots."""
    lines = [f"# Evaluation: {metrics['method'] or 'method'} on {metrics['dataset'] or 'dataset'}", ""]
    lines += [
        "| | n | median CC | median CC (aligned) | median phase error (°) | median F-weighted phase error (°) "
        f"| solved (F-weighted < {SOLVED_THRESHOLD_DEG:g}°) |",
        "|---|---|---|---|---|---|---|",
        _summary_row(metrics["method"] or "method", metrics),
    ]
    chance = metrics.get("chance")
    if chance:
        lines.append(_summary_row("chance (random phases, true amplitudes)", chance))
    lines += ["", "## Per resolution shell (equal reflection counts in 1/d²)", ""]
    head = "| d range (Å) | phase error (°) | fraction < 60° | map CC |"
    rule = "|---|---|---|---|"
    if chance:
        head += " chance phase error (°) | chance fraction < 60° | chance map CC |"
        rule += "---|---|---|"
    lines += [head, rule]
    for i, s in enumerate(metrics["shells"]):
        row = f"| {_f(s['d_max'], 2)}–{_f(s['d_min'], 2)} | {_f(s['phase_error_deg'], 1)} "
        row += f"| {_f(s['fraction_below_60'])} | {_f(s['map_cc'])} |"
        if chance:
            c = chance["shells"][i]
            row += f" {_f(c['phase_error_deg'], 1)} | {_f(c['fraction_below_60'])} | {_f(c['map_cc'])} |"
        lines.append(row)
    if vector_table:
        lines += ["", vector_table]
    if plots:
        lines += ["", "## Plots", ""]
        lines += [f"![{title}]({name})" for title, name in plots.items()]
    lines += [
        "",
        "## Definitions",
        "",
        "Maps are compared after the origin shift and hand that best match the prediction to the truth (CCP4 "
        "cphasematch's FFT search on a grid of d_min/4, then continuous refinement). Phase error: mean |Δφ| over "
        "the reflections to d_min; F-weighted with the true amplitudes |F|. Shell map CC: Σ|F₁||F₂|cosΔφ / "
        "√(Σ|F₁|²Σ|F₂|²). Chance: random phases with the true amplitudes, after the same search. "
        f"Solved: F-weighted phase error < {SOLVED_THRESHOLD_DEG:g}°. See docs/evaluation.md.",
    ]
    lines += list(notes)
    return "\n".join(lines) + "\n"


# --- plots (matplotlib, Agg canvas: no global backend is changed) ---------------------------------------------------


def new_figure(width: float = 6.0, height: float = 4.0):
    """A matplotlib Figure on its own Agg canvas (``width`` × ``height`` inches, 110 dpi); pyplot is not used."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=110)
    FigureCanvasAgg(fig)
    return fig


def save_png(fig, path: Path) -> None:
    """Write a figure as a PNG file, atomically."""
    atomic_write(path, lambda tmp: fig.savefig(tmp, format="png"))


def _shell_axis(ax, metrics: dict) -> np.ndarray:
    """x positions (mid 1/d² of each shell; NaN for an empty shell) and d-spacing tick labels."""
    s = metrics["shells"]
    inv = lambda d: np.nan if d is None else 1 / d**2  # noqa: E731
    mid = np.array([(inv(x["d_max"]) + inv(x["d_min"])) / 2 for x in s])
    ok = np.isfinite(mid)
    ax.set_xticks(mid[ok])
    ax.set_xticklabels([f"{1 / math.sqrt(m):.2f}" for m in mid[ok]], rotation=60, fontsize=8)
    ax.set_xlabel("resolution d (Å), shells of equal reflection count")
    return mid


def plot_shells(metrics: dict, key: str, path: str | Path, ylabel: str, hline: float | None = None) -> None:
    """A per-shell quantity (``phase_error_deg``, ``fraction_below_60`` or ``map_cc``) vs resolution, with chance."""
    fig = new_figure()
    ax = fig.add_subplot()
    x = _shell_axis(ax, metrics)
    y = [np.nan if s[key] is None else s[key] for s in metrics["shells"]]
    ax.plot(x, y, "o-", color="tab:blue", label=metrics["method"] or "method")
    if metrics.get("chance"):
        yc = [np.nan if s[key] is None else s[key] for s in metrics["chance"]["shells"]]
        ax.plot(x, yc, "s--", color="tab:gray", label="chance (random phases)")
    if hline is not None:
        ax.axhline(hline, color="k", lw=0.8, ls=":")
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    save_png(fig, Path(path))


def plot_cc_histogram(scores: PairScores, chance: PairScores | None, path: str | Path, method: str = "") -> None:
    """Histogram of per-example map CC, as predicted and after alignment; the chance median as a line."""
    fig = new_figure()
    ax = fig.add_subplot()
    bins = np.linspace(min(-0.2, float(scores.cc.min())), 1.0, 41)
    ax.hist(scores.cc.numpy(), bins=bins, alpha=0.5, color="tab:orange", label="CC as predicted")
    ax.hist(scores.cc_aligned.numpy(), bins=bins, alpha=0.6, color="tab:blue", label="CC after origin/hand search")
    if chance is not None:
        ax.axvline(float(chance.cc_aligned.median()), color="tab:gray", ls="--", label="chance median (aligned)")
    ax.set_xlabel("Pearson CC with the truth")
    ax.set_ylabel("examples")
    ax.set_title(f"{method or 'method'}: n = {len(scores)}", fontsize=10)
    ax.legend(fontsize=8)
    fig.tight_layout()
    save_png(fig, Path(path))


def plot_slices(examples: list[tuple[str, dict[str, np.ndarray]]], path: str | Path) -> None:
    """Central sections, one row per example (label, {column title: 2D array}), e.g. best / median / worst: x and y
    in grid points, each panel with its colour bar (the map's own units: e/Å³ for densities, e²/Å⁶ for a
    Patterson)."""
    if not examples:
        return
    cols = list(examples[0][1])
    fig = new_figure(3.4 * len(cols), 2.9 * len(examples))
    for r, (label, panels) in enumerate(examples):
        for c, title in enumerate(cols):
            ax = fig.add_subplot(len(examples), len(cols), r * len(cols) + c + 1)
            img = panels[title]
            if img is None:
                ax.axis("off")
                continue
            im = ax.imshow(img.T, origin="lower", cmap="viridis", interpolation="nearest")
            fig.colorbar(im, ax=ax, shrink=0.8).ax.tick_params(labelsize=6)
            ax.tick_params(labelsize=6)
            ax.set_xlabel("x (grid points)", fontsize=7)
            if all(examples[k][1][title] is None for k in range(r)):  # the column's first map
                ax.set_title(title, fontsize=9)
            ax.set_ylabel(f"{label}\ny (grid points)" if c == 0 else "y", fontsize=7 if c else 8)
    fig.tight_layout()
    save_png(fig, Path(path))
