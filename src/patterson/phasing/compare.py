"""Phasing methods and networks side by side on the same structures: the headline benchmark and ``patterson demo``.

- :func:`load_split` / :func:`split_maps` — a stored split (e.g. a test-only dataset of
  :func:`patterson.datasets.make_test_split`), or examples made in memory, read into :class:`SplitMaps` with a
  free set.
- :func:`phase_maps` — one method's maps of those structures and their cross-validation.
- :func:`compare_methods` — the network alone, the hybrid, charge flipping, HIO and chance on the same structures,
  scored as ``patterson evaluate`` scores them (:class:`MethodRun`, :func:`method_summary`).
- :func:`phase_within` — one method on one structure with a wall-time budget (every method given the same:
  peptide crystals, one cell each).
"""

from __future__ import annotations

import dataclasses
import logging
import time
from dataclasses import dataclass

import numpy as np
import torch

from patterson import runtime
from patterson.cells import Cell
from patterson.errors import PattersonError
from patterson.evaluation import PairScores, finest_d_min, random_phase_maps, score_maps
from patterson.evaluation.report import SOLVED_THRESHOLD_DEG, verdict_counts
from patterson.maps import density_from_f, f_from_density, patterson_from_f
from patterson.phasing.config import PhasingConfig
from patterson.phasing.learned import learned
from patterson.phasing.methods import METHODS, phase, refine_density
from patterson.phasing.options import SupportOptions, method_options
from patterson.phasing.projections import hio
from patterson.phasing.validation import (
    FREE_FRACTION,
    CrossValidation,
    check_free,
    check_free_fraction,
    cross_validate,
    free_set,
)
from patterson.physics import grid_shape, miller_indices

log = logging.getLogger(__name__)

LOOP_METHODS = ("learned", "histogram")  # the loop with a real-space step: a trained network, or the control
DEFAULT_PHASING = PhasingConfig()
WARM_UP = SupportOptions(n_iter=2, n_polish=0, n_starts=1)  # a short first run before the timings
COMPARE_METHODS = ("model", "hybrid", "charge-flip", "hio", "chance")
BUDGET_STARTS = 2  # random starts per round of :func:`phase_within`: the fewest that give the verdict the agreement
# of two starts


@dataclass(frozen=True)
class SplitMaps:
    """The maps of a stored split (one cell) in physical units, and what phasing them needs.

    patterson, truth (B, X, Y, Z) float64; f000 (B,) the electron count of each cell's contents; d_min the
    resolution the methods work to; hkl (M, 3) its Friedel half; f_obs (B, M) the amplitudes the dataset stores,
    from which its Patterson maps were made (noise and missing reflections included); measured (B, M) bool, the
    reflections with an amplitude (as stored); free (B, M) bool, the free set among them (never imposed, nor seen
    by a network); ids.
    """

    cell: Cell
    patterson: torch.Tensor
    truth: torch.Tensor
    f000: torch.Tensor
    d_min: float
    hkl: np.ndarray
    f_obs: torch.Tensor
    measured: torch.Tensor
    free: torch.Tensor
    ids: tuple[str, ...]

    @property
    def shape(self) -> tuple[int, int, int]:
        return tuple(self.truth.shape[-3:])

    @property
    def work(self) -> torch.Tensor:
        """(B, M) bool: the reflections a method may impose."""
        return self.measured & ~self.free

    def work_patterson(self) -> torch.Tensor:
        """(B, X, Y, Z): the Patterson map of the work set, what a network may see (the free set left out)."""
        f = (self.f_obs * self.work).to(torch.complex128)
        return patterson_from_f(f, self.hkl, self.cell, self.shape)

    def __len__(self) -> int:
        return int(self.truth.shape[0])

    def take(self, which: slice) -> SplitMaps:
        """The same for some of the structures."""
        tensors = {k: getattr(self, k)[which] for k in ("patterson", "truth", "f000", "f_obs", "measured", "free")}
        return dataclasses.replace(self, ids=self.ids[which], **tensors)


def load_split(
    ds,
    d_min: float | None = None,
    limit: int | None = None,
    device: str | torch.device = "cpu",
    free_fraction: float = FREE_FRACTION,
    seed: int = 0,
) -> SplitMaps:
    """Read a :class:`~patterson.datasets.StoredDataset` split (one cell) into a :class:`SplitMaps`.

    ``d_min`` defaults to the dataset's (made coarser if the grid cannot hold it); ``limit`` keeps the first
    examples only; the free set is ``free_fraction`` of each structure's measured reflections, drawn with ``seed``.
    Works with normalised and raw datasets alike (maps are scaled back to physical units); the amplitudes and the
    measured mask are the stored ones (a dataset of format 1, which has none, is a one-line PattersonError).
    """
    count = len(ds) if limit is None else min(len(ds), limit)
    if count == 0:
        raise PattersonError(f"{ds.path}: the {ds.split} split holds no examples")
    ds.require_reflections()
    items = [ds[i] for i in range(count)]
    return split_maps(items, ds.config.d_min, d_min, ds.scale, device, free_fraction, seed, ds.split, str(ds.path))


def split_maps(
    items: list[dict],
    dataset_d_min: float,
    d_min: float | None = None,
    scale: dict | None = None,
    device: str | torch.device = "cpu",
    free_fraction: float = FREE_FRACTION,
    seed: int = 0,
    split: str = "test",
    name: str = "the examples",
    sample_rate: float | None = None,
) -> SplitMaps:
    """:class:`SplitMaps` of examples of one cell as a StoredDataset gives them, or as
    :func:`patterson.datasets.make_examples` makes them in memory (``scale``: the constants their maps were divided
    by, None for physical units); ``dataset_d_min`` is the resolution of their stored reflections (peptide crystals:
    each item's own ``d_min``), ``d_min`` the one to phase to (default the same). ``name`` says where they come
    from in errors; ``sample_rate``: see :func:`_split_maps`."""
    cells = {tuple(float(x) for x in it["cell"]) for it in items}
    if len(cells) != 1:
        raise PattersonError(f"{name}: the {split} split holds {len(cells)} different cells; phase one at a time")
    if any("f_obs" not in it for it in items):
        raise PattersonError(f"{name}: no stored amplitudes (a dataset of format 1?); make it again")
    ids = tuple(f"{split}-{int(it['index'])}" for it in items)
    d_min = float(dataset_d_min if d_min is None else d_min)
    scale = scale or {"input": 1.0, "target": 1.0}
    return _split_maps(items, d_min, scale, device, ids, free_fraction, seed, float(dataset_d_min), sample_rate)


def _split_maps(
    items: list[dict],
    d_min: float,
    scale: dict,
    device,
    ids: tuple[str, ...],
    free_fraction: float,
    seed: int,
    stored_d_min: float,
    sample_rate: float | None = None,
) -> SplitMaps:
    """:class:`SplitMaps` of stored examples of one cell (the first item's), their maps divided by ``scale``
    before (the dataset's normalisation: ``StoredDataset.scale``), the stored amplitudes and measured mask (on
    the dataset's reflections to ``stored_d_min``, or to the items' own ``d_min`` where they carry one: peptide
    crystals) cut to ``d_min``, itself made coarser if the grid cannot hold it, a free set drawn per structure.

    ``sample_rate``: the maps are made afresh from the stored reflections (the truth from the exact ``f_calc``, the
    Patterson map from the measured amplitudes) on the grid of this cell and d_min with spacing d_min /
    ``sample_rate`` (:func:`~patterson.physics.grid_shape`), for cells whose stored grid is not their own (the
    fixed fractional grid of peptide crystals); None keeps the stored maps."""
    cell = Cell(*[float(x) for x in items[0]["cell"]])
    pat = torch.stack([it["input"][0] for it in items]).to(device=device, dtype=torch.float64) * scale["input"]
    truth = torch.stack([it["target"][0] for it in items]).to(device=device, dtype=torch.float64) * scale["target"]
    f000 = torch.tensor([float(it["z"][: it["n_atoms"]].sum()) for it in items], dtype=torch.float64, device=device)
    own = {float(it["d_min"]) for it in items if "d_min" in it}  # peptide crystals: each one's own resolution
    if len(own) > 1:
        raise PattersonError(f"{ids[0]}: examples of {len(own)} resolutions; phase one at a time")
    stored_d_min = own.pop() if own else float(stored_d_min)
    d_min = max(d_min, stored_d_min, finest_d_min(cell, tuple(truth.shape[-3:])))
    hkl = miller_indices(cell, stored_d_min)  # the reflections the dataset stores, then those to d_min
    keep = cell.d_spacing(hkl) >= d_min * (1 - 1e-9)
    hkl = hkl[keep]
    f_obs = torch.stack([it["f_obs"] for it in items]).to(device)[:, keep]  # (B, M): as measured, exact
    measured = torch.stack([it["measured"] for it in items]).to(device)[:, keep]
    if not measured.any(-1).all():
        raise PattersonError(f"{ids[0]}: no measured amplitudes to d_min {d_min:g} Å")
    if sample_rate is not None:
        shape = grid_shape(cell, d_min, sample_rate)
        f_calc = torch.stack([it["f_calc"] for it in items]).to(device)[:, keep]  # exact
        truth = density_from_f(f_calc, hkl, cell, shape)
        pat = patterson_from_f((f_obs * measured).to(f_calc.dtype), hkl, cell, shape)
    free = free_set(hkl, cell, measured, check_free_fraction(free_fraction), seed).to(device)
    check_free(free, measured)
    return SplitMaps(cell, pat, truth, f000, d_min, hkl, f_obs, measured, free, ids)


def phase_maps(
    method: str,
    data: SplitMaps,
    network=None,
    phasing: PhasingConfig = DEFAULT_PHASING,
    progress=None,
    generator: torch.Generator | None = None,
) -> tuple[torch.Tensor, CrossValidation | None]:
    """One method's maps (B, X, Y, Z) of ``data``'s structures and their cross-validation: ``model`` (the
    :class:`~patterson.networks.TrainedNetwork` ``network`` alone, on the Patterson of the work set), ``hybrid`` (its
    density refined by ``phasing.refine``), ``learned`` (the loop with ``network``, a real-space step such as
    :class:`~patterson.phasing.learned.NetworkStep`, inside), ``histogram`` (the loop with the control step),
    ``charge-flip``, ``hio``, ``raar``, ``rrr`` or ``chance`` (random phases from ``generator``, else from
    ``phasing.seed``, with the true amplitudes: no cross-validation, None). ``phasing`` sets the runs
    (:meth:`PhasingConfig.options`: iterations, starts, seed, amplitudes; the hybrid has one start). The free set of
    ``data`` is never imposed and never seen by the network."""
    if method == "chance":
        gen = generator or torch.Generator().manual_seed(phasing.seed)
        return random_phase_maps(data.truth, data.cell, data.d_min, gen), None
    held = {"f000": data.f000, "observed": data.measured, "free": data.free, "progress": progress}
    if method in LOOP_METHODS:
        step = network if method == "learned" else "histogram"
        res = learned(data.f_obs, data.hkl, data.cell, data.shape, step, phasing.options(method), **held)
        return res.rho, res.validation
    if method in ("model", "hybrid"):
        start = network.density(data.work_patterson())
        if method == "model":
            f_calc = f_from_density(start, data.hkl, data.cell)
            return start, cross_validate(data.f_obs, f_calc, start, data.work, data.free, data.hkl, data.cell)
        options = phasing.options(phasing.refine)
        res = refine_density(start, data.f_obs, data.hkl, data.cell, phasing.refine, options, **held)
        return res.rho, res.validation
    res = phase(method, data.f_obs, data.hkl, data.cell, data.shape, phasing.options(method), **held)
    return res.rho, res.validation


@dataclass(frozen=True)
class MethodRun:
    """One method's maps of a :class:`SplitMaps` and their scores.

    prediction (B, X, Y, Z) as the method made it; aligned: the same moved onto the truth (origin shift and hand
    of the cphasematch search); scores: :class:`~patterson.evaluation.PairScores`; seconds: wall time of the
    method on the whole batch (for the hybrid, the network's time included; 0 for chance); validation: R-work,
    R-free and the verdict per structure (None for chance).
    """

    method: str
    prediction: torch.Tensor
    aligned: torch.Tensor
    scores: PairScores
    seconds: float
    validation: CrossValidation | None = None

    def summary(self) -> dict[str, float]:
        """Solved fraction, median F-weighted phase error, median CC after alignment, seconds per structure, and
        the verdict's counts (see :func:`method_summary`)."""
        return method_summary(self.scores, self.seconds, self.validation)


def method_summary(scores: PairScores, seconds: float, validation: CrossValidation | None = None) -> dict:
    """The headline numbers of one method: solved fraction (F-weighted phase error < 40°), median F-weighted phase
    error (°), median CC after the origin/hand search and seconds per structure; with ``validation`` also the
    median R-work and R-free and the ``verdict`` block of :func:`verdict_counts`."""
    err = scores.phase_error_weighted_deg.numpy()
    solved = np.nan_to_num(err, nan=180.0) < SOLVED_THRESHOLD_DEG
    out = {
        "solved_fraction": float(np.mean(solved)),
        "n_solved": int(np.sum(solved)),
        "n": int(len(err)),
        "median_phase_error_weighted_deg": float(np.median(err)),
        "median_cc_aligned": float(np.median(scores.cc_aligned.numpy())),
        "seconds_per_structure": seconds / len(err),
    }
    if validation is not None:
        out["median_r_work"] = float(validation.r_work.median())
        out["median_r_free"] = float(validation.r_free.median())
        out["verdict"] = verdict_counts(err, validation.verdict)
    return out


def compare_methods(
    data: SplitMaps,
    methods: tuple[str, ...] = COMPARE_METHODS,
    network=None,
    phasing: PhasingConfig = DEFAULT_PHASING,
    batch_size: int = 32,
    progress: bool = False,
    desc: str = "",
    step=None,
) -> dict[str, MethodRun]:
    """Phase the same structures with several methods and score every map as ``patterson evaluate`` does.

    Parameters
    ----------
    data : the structures (:func:`load_split`).
    methods : any of ``model`` (the network alone), ``hybrid`` (the network's density refined by
        ``phasing.refine``),
        ``learned`` (the phasing loop with ``step`` inside), ``histogram`` (the loop with the control step),
        ``charge-flip``, ``hio``, ``raar``, ``rrr`` and ``chance`` (random phases with the true amplitudes); model
        and hybrid need ``network`` (a :class:`~patterson.networks.TrainedNetwork` with its normalisation).
    phasing : the runs (:class:`~patterson.phasing.PhasingConfig`: iterations and random starts, None for each
        method's defaults, the hybrid having one start; amplitudes; the seed of the random starts and of the chance
        level's phases).
    batch_size : structures phased together as one tensor batch (memory grows with it, and with the starts).
    progress : a tqdm bar per method (``desc`` prefixes its label).
    step : the real-space step of ``learned`` (:func:`learned_step`).

    Returns
    -------
    {method: MethodRun} in the order of ``methods``. Timings exclude first-call costs (a short warm-up runs first);
    the hybrid's include its network pass.
    """
    _check_methods(methods, network, phasing, step)
    if batch_size < 1:
        raise PattersonError(f"batch_size must be at least 1, got {batch_size}")
    cell, hkl, shape = data.cell, data.hkl, data.shape
    hio(data.f_obs[:1], hkl, cell, shape, WARM_UP, free=data.free[:1])
    chunks = [slice(i, min(i + batch_size, len(data))) for i in range(0, len(data), batch_size)]

    runs: dict[str, MethodRun] = {}
    for method in methods:
        net = step if method == "learned" else network
        runs[method] = _run_method(method, data, chunks, net, phasing, progress, desc)
        s = runs[method].summary()
        log.info(
            "%s%s: solved %.0f%%, median F-weighted phase error %.1f°, median CC %.3f, %.2f s per structure",
            desc,
            method,
            100 * s["solved_fraction"],
            s["median_phase_error_weighted_deg"],
            s["median_cc_aligned"],
            s["seconds_per_structure"],
        )
    return runs


def _check_methods(methods: tuple[str, ...], network, phasing: PhasingConfig, step) -> None:
    """One-line errors for methods :func:`compare_methods` does not know or cannot run with what it was given."""
    known = ("model", "hybrid", *LOOP_METHODS, *METHODS, "chance")
    unknown = [m for m in methods if m not in known]
    if unknown:
        raise PattersonError(f"unknown method {unknown[0]!r} (choose from {', '.join(known)})")
    uses_network = any(m in ("model", "hybrid") for m in methods)
    if uses_network and (network is None or network.norm is None):
        raise PattersonError("the model and hybrid methods need a network and its normalisation constants")
    if "learned" in methods and step is None:
        raise PattersonError("the learned method needs a real-space step (a density-modification network)")
    if phasing.refine not in METHODS:
        raise PattersonError(f"unknown refinement {phasing.refine!r} (choose from {', '.join(METHODS)})")


def _run_method(method, data: SplitMaps, chunks, network, phasing: PhasingConfig, progress, desc) -> MethodRun:
    """One method of :func:`compare_methods` on every chunk of ``data``, timed and scored."""
    bar = None
    if progress and method in ("hybrid", *LOOP_METHODS, *METHODS):
        from tqdm import tqdm

        bar = tqdm(total=1, unit="it", desc=f"{desc}{method}", leave=False, **runtime.bar_options())
    gen = torch.Generator().manual_seed(phasing.seed)  # the chance level's phases
    parts, checks, seconds = [], [], 0.0
    for k, c in enumerate(chunks):

        def tick(it: int, total: int, k=k) -> None:
            if bar is not None:
                bar.total = total * len(chunks)
                bar.update(k * total + it - bar.n)

        t = time.perf_counter()
        rho, check = phase_maps(method, data.take(c), network, phasing, tick, gen)
        seconds += time.perf_counter() - t
        parts.append(rho)
        checks.append(check)
    if bar is not None:
        bar.close()
    rho = torch.cat(parts)
    scored = [score_maps(rho[c], data.truth[c], data.cell, data.d_min, return_aligned=True) for c in chunks]
    scores = PairScores.concatenate([sc for sc, _ in scored])
    aligned = torch.cat([al for _, al in scored])
    validation = None if method == "chance" else CrossValidation.concatenate(checks)
    return MethodRun(method, rho, aligned, scores, 0.0 if method == "chance" else seconds, validation)


def phase_within(
    method: str,
    data: SplitMaps,
    budget_s: float,
    seed: int = 0,
    step=None,
    group=None,
    n_iter: int | None = None,
) -> tuple[torch.Tensor, CrossValidation | None, int]:
    """One method's map of ``data`` (one structure, or a few of one cell) within ``budget_s`` wall seconds.

    ``dual-space`` gets the budget as its ``max_seconds`` (``group``: the space group, a
    :class:`~patterson.symmetry.SpaceGroup`, None for P1); ``chance`` takes no time (random phases from ``seed``);
    every other method of :func:`phase_maps` (``step``: the learned loop's real-space step) runs in rounds of its
    default run with :data:`BUDGET_STARTS` new random starts until the next round would end past the budget
    (judged by the last round; one at least) or the best so far says ``solved``, and the round with the lowest
    R-free (of the first structure) is the answer. ``n_iter``: iterations (dual-space: cycles per trial) of each
    run, None for each method's defaults.

    Returns
    -------
    (map (B, X, Y, Z), its cross-validation (None for chance), rounds run).
    """
    if method == "chance":
        rho, _ = phase_maps("chance", data, generator=torch.Generator().manual_seed(seed))
        return rho, None, 0
    if method == "dual-space":
        options = method_options(
            "dual-space", max_seconds=budget_s, seed=seed, **({"n_iter": n_iter} if n_iter else {})
        )
        res = phase("dual-space", data.f_obs, data.hkl, data.cell, data.shape, options, f000=data.f000,
                    group=group, observed=data.measured, free=data.free)  # fmt: skip
        return res.rho, res.validation, 1
    t0, rounds, best = time.perf_counter(), 0, None
    while True:
        t = time.perf_counter()
        phasing = PhasingConfig(n_iter=n_iter, n_starts=BUDGET_STARTS, seed=seed + 1000 * rounds)
        rho, check = phase_maps(method, data, step, phasing)
        rounds, last = rounds + 1, time.perf_counter() - t
        if best is None or float(check.r_free[0]) < float(best[1].r_free[0]):
            best = (rho, check)
        if best[1].verdict[0] == "solved" or time.perf_counter() - t0 + last > budget_s:
            return best[0], best[1], rounds
