"""The evaluation jobs: score a stream of predictions and write a report folder; compare two map files."""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from patterson import runtime
from patterson.cells import Cell
from patterson.errors import PattersonError
from patterson.evaluation.metrics import (
    WEIGHTS,
    PairScores,
    as_map_batch,
    chance_scores,
    random_phase_maps,
    score_maps,
)
from patterson.evaluation.peaks import REPORT_THRESHOLD, atom_recovery, atoms_found, compare_vectors, find_peaks
from patterson.evaluation.report import (
    metrics_summary,
    per_example_rows,
    plot_cc_histogram,
    plot_shells,
    plot_slices,
    report_markdown,
    verdict_counts,
    write_per_example_csv,
)
from patterson.files import check_output_folder, holds_only, publish_folder, write_json, write_text
from patterson.maps import read_ccp4
from patterson.physics import check_d_min

log = logging.getLogger(__name__)

CELL_TOLERANCE = 1e-3  # Å and degrees: two maps' cells must agree to this
MAX_VECTOR_ATOMS = 64  # the interatomic-vector comparison is skipped (NaN) for larger cells: it costs atoms⁴


@dataclass
class EvalBatch:
    """One batch to score: maps on one grid of one cell, to one resolution.

    prediction, truth (B, X, Y, Z); inputs (B, X, Y, Z) the network's input (Patterson), optional, only shown in
    plots; ids (B,) names for the per-example table; atoms_frac: B arrays (N_i, 3) of true atom positions
    (fractional), optional, for the peak/atom metrics; validation: per-example columns of a phasing method's
    cross-validation (``r_work``, ``r_free``, ... numbers, ``verdict`` strings), optional.
    """

    prediction: torch.Tensor
    truth: torch.Tensor
    cell: Cell
    d_min: float
    inputs: torch.Tensor | None = None
    ids: Sequence[str] | None = None
    atoms_frac: Sequence[np.ndarray] | None = None
    validation: Mapping[str, Sequence] | None = None

    @classmethod
    def of(cls, obj: EvalBatch | Mapping) -> EvalBatch:
        """An EvalBatch from itself or a mapping with the same keys (``cell`` may be anything Cell.of takes)."""
        if isinstance(obj, EvalBatch):
            return obj
        if not isinstance(obj, Mapping):
            raise PattersonError(f"a batch must be an EvalBatch or a mapping, got {type(obj).__name__}")
        missing = {"prediction", "truth", "cell", "d_min"} - set(obj)
        if missing:
            raise PattersonError(f"a batch lacks {', '.join(sorted(missing))}")
        known = {f for f in cls.__dataclass_fields__}
        return cls(**{k: (Cell.of(v) if k == "cell" else v) for k, v in obj.items() if k in known})


@dataclass
class _Slices:
    """Central sections of a sample of examples, for the best / median / worst figure (a bounded reservoir)."""

    capacity: int = 256
    seen: int = 0
    best: tuple | None = None
    worst: tuple | None = None
    sample: list = field(default_factory=list)
    rng: np.random.Generator = field(default_factory=lambda: np.random.default_rng(0))

    def add(self, cc: float, ident: str, panels: dict) -> None:
        item = (cc, ident, panels)
        if self.best is None or cc > self.best[0]:
            self.best = item
        if self.worst is None or cc < self.worst[0]:
            self.worst = item
        if len(self.sample) < self.capacity:
            self.sample.append(item)
        else:
            j = int(self.rng.integers(self.seen + 1))
            if j < self.capacity:
                self.sample[j] = item
        self.seen += 1

    def rows(self, median_cc: float) -> list[tuple[str, dict]]:
        if self.best is None:
            return []
        med = min(self.sample, key=lambda it: abs(it[0] - median_cc))
        chosen = (("best", self.best), ("median", med), ("worst", self.worst))
        return [(f"{name}: {it[1]}\nCC {it[0]:.3f}", it[2]) for name, it in chosen]


def _central_section(rho: np.ndarray) -> np.ndarray:
    return np.asarray(rho[:, :, rho.shape[2] // 2], dtype=np.float32)


def _peak_metrics(
    aligned: torch.Tensor, truth: torch.Tensor, atoms_frac: Sequence[np.ndarray], cell: Cell, threshold: float
) -> dict:
    """Per example, with peaks above ``threshold`` × max (at most as many as true atoms) in the aligned prediction:
    fraction of true atoms with a peak within 0.5 / 1.0 Å, fraction of true interatomic vectors matched by a vector
    between peaks within 0.5 Å, number of peaks; and the truth map's own atom recovery within 1.0 Å (the ceiling
    at this resolution). Also the counts behind the fractions: true atoms, atoms found within 1.0 Å, true vectors
    and vectors found within 0.5 Å (NaN for cells of more than :data:`MAX_VECTOR_ATOMS` atoms)."""
    keys = ("atoms_within_0.5A", "atoms_within_1.0A", "vectors_within_0.5A", "n_peaks", "truth_atoms_within_1.0A",
            "n_atoms", "atoms_found_1.0A", "n_vectors", "vectors_found_0.5A")  # fmt: skip
    out: dict[str, list[float]] = {k: [] for k in keys}
    for i, atoms in enumerate(atoms_frac):
        atoms = np.asarray(atoms, dtype=np.float64).reshape(-1, 3)
        p = find_peaks(aligned[i], cell, threshold=threshold, max_peaks=len(atoms))[0]
        q = find_peaks(truth[i], cell, threshold=threshold, max_peaks=len(atoms))[0]
        found = atoms_found(atoms, p.frac, cell)
        out["atoms_within_0.5A"].append(found[0.5] / len(atoms))
        out["atoms_within_1.0A"].append(found[1.0] / len(atoms))
        out["n_peaks"].append(float(len(p)))
        out["n_atoms"].append(float(len(atoms)))
        out["atoms_found_1.0A"].append(float(found[1.0]))
        if len(atoms) > MAX_VECTOR_ATOMS:  # the comparison costs atoms⁴ (a 94-atom cell: 11 GB at once): NaN
            for k in ("vectors_within_0.5A", "n_vectors", "vectors_found_0.5A"):
                out[k].append(float("nan"))
        else:
            vectors = compare_vectors(atoms, p.frac, cell)
            out["vectors_within_0.5A"].append(vectors.fraction_within(0.5))
            out["n_vectors"].append(float(len(vectors.distance)))
            out["vectors_found_0.5A"].append(float(vectors.count_within(0.5)))
        out["truth_atoms_within_1.0A"].append(atom_recovery(atoms, q.frac, cell)[1.0])
    return out


def _blank(column: str) -> float | str:
    """The per-example value of an example that lacks ``column``: empty text for the verdict, else NaN."""
    return "" if column == "verdict" else float("nan")


def _mean(values: Sequence[float]) -> float:
    v = np.asarray(values, dtype=np.float64)
    return float(np.nanmean(v)) if np.isfinite(v).any() else float("nan")


def _median(values: Sequence[float]) -> float | None:
    v = np.asarray(values, dtype=np.float64)
    return float(np.nanmedian(v)) if np.isfinite(v).any() else None


def _verdict_notes(v: dict | None) -> list[str]:
    """The report's verdict section: what the method claimed beside what is true."""
    if not v:
        return []

    def f(x):
        return "–" if x is None else f"{x:.3f}"

    return [
        "",
        "## Verdict (R-free on a free set the method never imposed) against the truth",
        "",
        "| structures | claimed solved | truly solved | correct claims | precision | recall | uncertain | not solved "
        "| median R-work | median R-free |",
        "|---|---|---|---|---|---|---|---|---|---|",
        f"| {v['n']} | {v['n_claimed_solved']} | {v['n_truly_solved']} | {v['n_correct_claims']} | "
        f"{f(v['precision'])} | {f(v['recall'])} | {v['counts']['uncertain']} | {v['counts']['not solved']} | "
        f"{f(v['median_r_work'])} | {f(v['median_r_free'])} |",
    ]


def _add_columns(extra: dict, batch: EvalBatch, aligned, truth, n0: int, n: int, peak_threshold: float) -> None:
    """The per-example columns beyond the scores: peak metrics (with ``atoms_frac``) and the batch's validation
    columns, blank for examples before (``n0``) or without them, so every column has ``n`` entries."""
    if batch.atoms_frac is not None:
        for k, v in _peak_metrics(aligned, truth, batch.atoms_frac, batch.cell, peak_threshold).items():
            extra.setdefault(k, [float("nan")] * n0).extend(v)
    for k, v in (batch.validation or {}).items():
        extra.setdefault(k, [_blank(k)] * n0).extend(v)
    for k, v in extra.items():
        v.extend([_blank(k)] * (n - len(v)))


def _add_slices(slices: _Slices, batch: EvalBatch, aligned, truth, scores: PairScores, ids: list[str]) -> None:
    """Central sections of input, aligned prediction and truth of each example, for the best/median/worst plot."""
    inputs = None if batch.inputs is None else as_map_batch(batch.inputs, "inputs").cpu().numpy()
    aligned_np, truth_np = aligned.cpu().numpy(), truth.cpu().numpy()
    for i in range(len(scores)):
        pattern = None if inputs is None else _central_section(np.fft.fftshift(inputs[i]))
        panels = {
            "input (Patterson, origin at centre)": pattern,
            "prediction (aligned)": _central_section(aligned_np[i]),
            "truth": _central_section(truth_np[i]),
        }
        slices.add(float(scores.cc_aligned[i]), ids[i], panels)


@dataclass(frozen=True)
class ReportOptions:
    """How :func:`evaluate_predictions` scores and reports.

    n_shells, weight, region : see :func:`patterson.evaluation.metrics.score_maps`.
    chance : also score random phases with the true amplitudes (the chance level), seeded by ``seed``.
    peak_threshold : fraction of the maximum for the peak metrics (batches with ``atoms_frac`` only).
    plots : write the PNG plots.
    """

    n_shells: int = 12
    weight: str = "f1"
    region: float | None = None
    chance: bool = True
    seed: int = 0
    peak_threshold: float = REPORT_THRESHOLD
    plots: bool = True

    def __post_init__(self) -> None:
        if self.weight not in WEIGHTS:
            raise PattersonError(f"unknown phase-error weight {self.weight!r} (choose from {', '.join(WEIGHTS)})")


def evaluate_predictions(
    batches: Iterable[EvalBatch | Mapping],
    out_dir: str | Path,
    method: str = "",
    dataset: str = "",
    options: ReportOptions = ReportOptions(),  # noqa: B008 - frozen, so a shared default is safe
    progress: bool = False,
    total: int | None = None,
) -> dict:
    """Score every batch of predictions against its truth and write the report folder.

    Writes ``metrics.json`` (schema in :mod:`patterson.evaluation.report`), ``per_example.csv``, ``report.md`` and
    (with ``plots``) ``phase_error_vs_resolution.png``, ``fraction_below_60_vs_resolution.png``,
    ``cc_histogram.png`` and ``slices.png`` (central sections of input / aligned prediction / truth for the best,
    median and worst examples by aligned CC; the median is picked from a random sample of 256).

    Parameters
    ----------
    batches : iterable of :class:`EvalBatch` (or mappings with its fields); maps may live on any device.
    out_dir : output folder (created).
    method, dataset : names recorded in metrics.json.
    options : scoring and reporting settings (:class:`ReportOptions`).
    progress : show a tqdm progress bar (``total`` batches, if known).

    Returns
    -------
    The metrics.json dictionary.
    """
    out = Path(out_dir)
    check_output_folder(out, is_evaluate_output, "an earlier evaluation report")  # refused before the work
    o = options
    t0 = time.perf_counter()
    gen = torch.Generator().manual_seed(int(o.seed))
    parts, chance_parts, ids = [], [], []  # PairScores of each batch, of its chance level; example names
    extra: dict[str, list[float]] = {}
    slices = _Slices()
    iterator = batches
    if progress:
        from tqdm import tqdm

        iterator = tqdm(batches, total=total, unit="batch", desc="evaluate", **runtime.bar_options())
    for raw in iterator:
        batch = EvalBatch.of(raw)
        kw = dict(n_shells=o.n_shells, weight=o.weight, region=o.region)
        scores, aligned = score_maps(batch.prediction, batch.truth, batch.cell, batch.d_min, return_aligned=True, **kw)
        parts.append(scores)
        truth = as_map_batch(batch.truth, "truth")
        if o.chance:
            rand = random_phase_maps(truth, batch.cell, batch.d_min, gen)
            chance_parts.append(score_maps(rand, truth, batch.cell, batch.d_min, **kw))
        n0 = len(ids)
        batch_ids = list(batch.ids) if batch.ids is not None else [str(n0 + i) for i in range(len(scores))]
        if len(batch_ids) != len(scores):
            raise PattersonError(f"a batch has {len(scores)} maps but {len(batch_ids)} ids")
        ids += batch_ids
        _add_columns(extra, batch, aligned, truth, n0, len(ids), o.peak_threshold)
        if o.plots:
            _add_slices(slices, batch, aligned, truth, scores, batch_ids)
    if not parts:
        raise PattersonError("no examples to evaluate (an empty dataset split?)")
    scores = PairScores.concatenate(parts)
    chance_all = PairScores.concatenate(chance_parts) if o.chance else None
    metrics = metrics_summary(scores, chance_all, method, dataset) | _column_totals(scores, extra, o.peak_threshold)
    _write_report(out, metrics, scores, ids, chance_all, extra, slices if o.plots else None, method, o.peak_threshold)
    _log_summary(metrics, time.perf_counter() - t0)
    return metrics


def _column_totals(scores: PairScores, extra: dict, peak_threshold: float) -> dict:
    """metrics.json's ``peaks`` (the counts over all examples with atoms: the report's Table 1 totals) and
    ``verdict`` (the methods' own verdicts against the truth), where the examples carry those columns."""
    out: dict = {}
    if "n_atoms" in extra:
        keys = ("n_atoms", "atoms_found_1.0A", "n_vectors", "vectors_found_0.5A")
        out["peaks"] = {k: int(np.nansum(extra[k])) for k in keys} | {"threshold": peak_threshold}
    if "verdict" in extra:
        out["verdict"] = verdict_counts(scores.phase_error_weighted_deg.numpy(), extra["verdict"])
        for k in ("r_work", "r_free", "r_free_random"):
            out["verdict"][f"median_{k}"] = _median(extra.get(k, []))
    return out


def _log_summary(metrics: dict, seconds: float) -> None:
    def median(key: str, name: str = "median") -> float:
        return metrics[key][name] or float("nan")

    log.info("%d examples: median CC %.3f (aligned %.3f), median phase error %.1f° (weighted %.1f°), %.1f s",
             metrics["n"], median("cc"), median("cc_aligned"), median("phase_error_deg"),
             median("phase_error_deg", "median_weighted"), seconds)  # fmt: skip


# --- compare two map files ------------------------------------------------------------------------------------------

EVALUATE_FILES = ("metrics.json", "per_example.csv", "report.md", "phase_error_vs_resolution.png",
                  "fraction_below_60_vs_resolution.png", "cc_histogram.png", "slices.png")  # fmt: skip


def is_evaluate_output(folder: Path) -> bool:
    """Whether ``folder`` holds an earlier evaluation report and nothing else (so it may be replaced)."""
    return holds_only(folder, EVALUATE_FILES, marker="metrics.json")


def _write_report(out: Path, metrics, scores, ids, chance_all, extra, slices, method, peak_threshold) -> None:
    """metrics.json, per_example.csv, the plots (``slices`` not None) and report.md, published all or nothing."""
    plots = slices is not None
    with publish_folder(out, may_replace=is_evaluate_output) as folder:
        write_json(folder / "metrics.json", metrics)
        header, rows = per_example_rows(scores, ids, chance_all, extra)
        write_per_example_csv(folder / "per_example.csv", header, rows)
        plot_files: dict[str, str] = {}
        if plots:
            error_png = folder / "phase_error_vs_resolution.png"
            below_png = folder / "fraction_below_60_vs_resolution.png"
            plot_shells(metrics, "phase_error_deg", error_png, "mean phase error (°)", 90.0)
            plot_shells(metrics, "fraction_below_60", below_png, "fraction < 60°")
            plot_cc_histogram(scores, chance_all, folder / "cc_histogram.png", method)
            plot_slices(slices.rows(float(np.median(scores.cc_aligned.numpy()))), folder / "slices.png")
            plot_files = {
                "phase error vs resolution": "phase_error_vs_resolution.png",
                "fraction of examples with phase error < 60° vs resolution": "fraction_below_60_vs_resolution.png",
                "CC histogram": "cc_histogram.png",
                "central sections: best / median / worst": "slices.png",
            }
        notes = _verdict_notes(metrics.get("verdict"))
        if "atoms_within_0.5A" in extra:
            means = {k: _mean(extra[k]) for k in ("atoms_within_0.5A", "atoms_within_1.0A", "vectors_within_0.5A")}
            means |= {k: _mean(extra[k]) for k in ("n_peaks", "truth_atoms_within_1.0A")}
            notes += [
                "",
                f"## Peaks and atoms (peaks above {peak_threshold:.0%} of the maximum, at most one per true atom, "
                "after alignment; means over examples)",
                "",
                "| atoms with a peak within 0.5 Å | within 1.0 Å | interatomic vectors matched within 0.5 Å | peaks "
                "| truth map's own atoms within 1.0 Å |",
                "|---|---|---|---|---|",
                f"| {means['atoms_within_0.5A']:.3f} | {means['atoms_within_1.0A']:.3f} "
                f"| {means['vectors_within_0.5A']:.3f} | {means['n_peaks']:.1f} "
                f"| {means['truth_atoms_within_1.0A']:.3f} |",
            ]
        write_text(folder / "report.md", report_markdown(metrics, plot_files, notes))


def finest_d_min(cell: Cell, shape: tuple[int, int, int]) -> float:
    """The finest resolution (Å) whose whole reflection sphere a grid holds: max_i a_i / h_i with h_i the largest
    index the axis carries without aliasing (n/2 − 1 for even n, (n − 1)/2 for odd)."""
    lims = [n // 2 - (1 if n % 2 == 0 else 0) for n in shape]
    if min(lims) < 1:
        raise PattersonError(f"grid {tuple(shape)} is too small to hold any reflection")
    return max(length / lim for length, lim in zip((cell.a, cell.b, cell.c), lims, strict=True)) * (1 + 1e-9)


@dataclass(frozen=True)
class CompareConfig:
    """What ``patterson compare`` computes: map B scored against map A (the reference) to ``d_min`` Å.

    ``d_min`` None means the finest resolution the grid holds (:func:`finest_d_min`); maps band-limited to a
    coarser resolution should be compared at that resolution (the reflections beyond it carry only noise).
    """

    map_a: str
    map_b: str
    d_min: float | None = None
    n_shells: int = 12
    weight: str = "f1"
    seed: int = 0

    def __post_init__(self) -> None:
        if self.d_min is not None:
            check_d_min(self.d_min)
        if self.n_shells < 1:
            raise PattersonError(f"n_shells must be at least 1, got {self.n_shells}")
        if self.weight not in WEIGHTS:
            raise PattersonError(f"unknown phase-error weight {self.weight!r} (choose from {', '.join(WEIGHTS)})")


@dataclass(frozen=True)
class Comparison:
    """The result of comparing two maps: metrics (metrics.json keys, n = 1), scores, chance scores, d_min used."""

    metrics: dict
    scores: PairScores
    chance: PairScores
    d_min: float
    shape: tuple[int, int, int]

    def table(self) -> str:
        """A plain-text table: overall numbers, the alignment, then per shell."""
        m, c, s = self.metrics, self.metrics["chance"], self.scores
        f = lambda x, d=3: "-" if x is None else f"{x:.{d}f}"  # noqa: E731
        shift = " ".join(f"{x:.4f}" for x in s.shift_frac[0].tolist())
        lines = [
            f"reference {m['dataset']}",
            f"compared  {m['method']}",
            f"grid {'x'.join(map(str, self.shape))}, d_min {self.d_min:.3f} Å, {s.n_reflections} reflections",
            f"origin shift (fractional) {shift}, hand {'inverted' if bool(s.inverted[0]) else 'same'}",
            "",
            f"{'':28s}{'value':>10s}{'chance':>10s}",
            f"{'CC as given':28s}{f(m['cc']['mean']):>10s}{f(c['cc']['mean']):>10s}",
            f"{'CC after alignment':28s}{f(m['cc_aligned']['mean']):>10s}{f(c['cc_aligned']['mean']):>10s}",
            f"{'phase error (deg)':28s}{f(m['phase_error_deg']['mean'], 1):>10s}"
            f"{f(c['phase_error_deg']['mean'], 1):>10s}",
            f"{'F-weighted phase error':28s}{f(m['phase_error_deg']['median_weighted'], 1):>10s}"
            f"{f(c['phase_error_deg']['median_weighted'], 1):>10s}",
            "",
            f"{'d_max':>8s}{'d_min':>8s}{'phase err':>11s}{'map CC':>9s}{'chance err':>12s}{'chance CC':>11s}",
        ]
        for a, b in zip(m["shells"], c["shells"], strict=True):
            if a["d_max"] is None:  # more shells asked for than the reflections fill
                continue
            lines.append(
                f"{a['d_max']:8.2f}{a['d_min']:8.2f}{f(a['phase_error_deg'], 1):>11s}{f(a['map_cc']):>9s}"
                f"{f(b['phase_error_deg'], 1):>12s}{f(b['map_cc']):>11s}"
            )
        return "\n".join(lines)


def compare_maps(config: CompareConfig) -> Comparison:
    """Score map B against map A (two CCP4/MRC files of the same cell and grid) after the origin/hand search."""
    rho_a, cell_a = read_ccp4(config.map_a)
    rho_b, cell_b = read_ccp4(config.map_b)
    if any(abs(x - y) > CELL_TOLERANCE for x, y in zip(cell_a.parameters, cell_b.parameters, strict=True)):
        raise PattersonError(
            f"{config.map_a} and {config.map_b} have different cells: {cell_a.text} vs {cell_b.text}"
        )
    if rho_a.shape != rho_b.shape:
        raise PattersonError(
            f"{config.map_a} and {config.map_b} have different grids: "
            f"{'x'.join(map(str, rho_a.shape))} vs {'x'.join(map(str, rho_b.shape))}"
        )
    for path, rho in ((config.map_a, rho_a), (config.map_b, rho_b)):
        if not np.isfinite(rho).all():
            raise PattersonError(f"{path}: the map holds NaN or infinite values")
        if float(rho.max()) == float(rho.min()):
            raise PattersonError(f"{path}: the map is constant")
    shape = tuple(int(n) for n in rho_a.shape)
    d_min = config.d_min if config.d_min is not None else finest_d_min(cell_a, shape)
    if config.d_min is not None and config.d_min < finest_d_min(cell_a, shape) * (1 - 1e-6):
        raise PattersonError(
            f"d_min {config.d_min:g} Å is finer than the grid {'x'.join(map(str, shape))} holds "
            f"(finest {finest_d_min(cell_a, shape):.3f} Å)"
        )
    truth = torch.from_numpy(rho_a)
    kw = dict(n_shells=config.n_shells, weight=config.weight)
    scores = score_maps(torch.from_numpy(rho_b), truth, cell_a, d_min, **kw)
    chance = chance_scores(truth, cell_a, d_min, seed=config.seed, **kw)
    metrics = metrics_summary(scores, chance, method=str(config.map_b), dataset=str(config.map_a))
    if not math.isfinite(float(scores.phase_error_deg[0])):
        raise PattersonError("the phase error is undefined (a map without any structure factor to d_min)")
    return Comparison(metrics, scores, chance, float(d_min), shape)
