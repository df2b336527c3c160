"""The solve itself: the network start (when there is one), classical refinement, figure of merit, peaks."""

from __future__ import annotations

import dataclasses
import logging
import math
import time
from dataclasses import dataclass

import gemmi
import numpy as np
import torch
from tqdm import tqdm

from patterson import runtime
from patterson.cells import Cell
from patterson.errors import PattersonError
from patterson.ideal import check_fits, parse_sequence
from patterson.maps import density_from_f, f_from_density
from patterson.networks import TrainedNetwork, find_checkpoint, shipped_networks
from patterson.phasing import PhasingResult, charge_flip, hio, positivity_polish, refine_density, wilson_estimate
from patterson.phasing.config import PhasingConfig
from patterson.phasing.dualspace import dual_space
from patterson.phasing.options import method_options
from patterson.phasing.peptide import fragment_phasing, read_fragment
from patterson.phasing.validation import (
    MIN_FREE,
    MIN_MEASURED,
    CrossValidation,
    check_free,
    cross_validate,
    free_set,
)
from patterson.physics import check_d_min, grid_shape, resolution_shells
from patterson.solving.atoms import AtomModel
from patterson.solving.data import ObservedData, prepare_data, unmeasured_hkl
from patterson.solving.network import TRANSFERS, predict_density
from patterson.solving.readers import read_reflections
from patterson.solving.reflections import parse_composition, radiation_for
from patterson.solving.routes import FLIP_SAMPLE_RATE, rank, routes
from patterson.solving.structure import asu_peaks, judge_atoms, solution_atoms
from patterson.solving.symmetry import SymmetryFit, check_spacegroups, to_spacegroup
from patterson.symmetry import SpaceGroup

log = logging.getLogger(__name__)

REFINE_METHODS = ("auto", "hybrid", "charge-flip", "hio", "dual-space", "fragments", "none")


SOLVE_PHASING = PhasingConfig(refine="auto", n_iter=400, n_starts=4)


@dataclass(frozen=True)
class SolveConfig:
    """What ``patterson solve`` does; see :func:`solve`. ``phasing`` (:class:`~patterson.phasing.PhasingConfig`)
    defaults to the hybrid with 400 iterations per run and 4 random starts; its free fraction applies when the file
    flags no free set."""

    input: str
    out: str | None = None
    checkpoint: str = "pretrained"
    phasing: PhasingConfig = SOLVE_PHASING
    d_min: float | None = None
    columns: str | None = None
    cell: tuple[float, ...] | None = None
    spacegroup: str | None = None
    transfer: str = "resample"  # measured better than convolve on every cell tried: docs/solving.md
    progress: bool = True
    device: str | None = None
    threads: int | None = None
    composition: str | None = None
    free_column: str | None = None
    check_symmetry: bool = False  # also for data in P1: which space groups the P1 solution is consistent with
    radiation: str = "auto"  # xray or electron (scattering factors of refined atoms); auto: from the wavelength
    sequence: str | None = None  # the peptide in the asymmetric unit, one-letter codes: the fragments route
    fragment: str | None = None  # a search model file (PDB/mmCIF) for the fragments route, placed only

    def __post_init__(self) -> None:
        defaults = {"n_iter": SOLVE_PHASING.n_iter, "n_starts": SOLVE_PHASING.n_starts}
        missing = {k: v for k, v in defaults.items() if getattr(self.phasing, k) is None}
        if missing:  # every run needs a number of iterations and of starts
            object.__setattr__(self, "phasing", dataclasses.replace(self.phasing, **missing))
        if self.phasing.refine not in REFINE_METHODS:
            raise PattersonError(f"unknown --refine {self.phasing.refine!r} (choose from {', '.join(REFINE_METHODS)})")
        if self.transfer not in TRANSFERS:
            raise PattersonError(f"unknown transfer {self.transfer!r} (choose from {', '.join(TRANSFERS)})")
        if self.d_min is not None:
            check_d_min(self.d_min)
        if self.sequence is not None:
            object.__setattr__(self, "sequence", parse_sequence(self.sequence))
        elif self.phasing.refine == "fragments" and self.fragment is None:
            raise PattersonError("--refine fragments needs --sequence (the peptide's one-letter residue codes) or "
                                 "--fragment FILE")  # fmt: skip


@dataclass
class Solution:
    """A solved data set: the map (X, Y, Z) on ``cell``, phases (M,) in radians, figure of merit (M,) and free
    set (M,) bool for the observed P1 ``hkl``/``f``, the peaks and the summary that goes to summary.json.

    ``group`` is the space group everything is written in: the data's, at its conventional origin, when the P1
    solution agrees with it (else P1, with a warning). The peaks are then one per symmetry orbit, in the
    asymmetric unit, each with its ``peaks_multiplicity`` (distinct images in the cell)."""

    rho: np.ndarray
    cell: Cell
    hkl: np.ndarray
    f: np.ndarray
    phi: np.ndarray
    fom: np.ndarray
    free: np.ndarray
    peaks_frac: np.ndarray
    peaks_height: np.ndarray
    summary: dict
    group: SpaceGroup = dataclasses.field(default_factory=lambda: SpaceGroup.of("P 1"))
    peaks_multiplicity: np.ndarray | None = None
    composition: dict[str, float] | None = None
    atoms: AtomModel | None = None  # the peaks as refined atoms (atomic resolution and known contents)


def figure_of_merit(
    f_obs: np.ndarray, f_calc: np.ndarray, d: np.ndarray, free: np.ndarray | None = None, n_shells: int = 10
) -> np.ndarray:
    """Sim (1959) weights m = I₁(X)/I₀(X), X = 2σA|Eo||Ec|/(1 − σA²), with σA² per resolution shell estimated as the
    correlation of |Eo|² and |Ec|² (exact for Wilson-distributed acentric data). 1: phases certain; 0: random.

    With ``free`` (M,) bool, σA is estimated on the free set only (about 25 free reflections per shell at least),
    as REFMAC does: a method that fits the work amplitudes cannot raise it."""
    free = np.ones(len(f_obs), dtype=bool) if free is None else np.asarray(free, dtype=bool)
    per_shell = 100 if free.all() else 25
    shell, _ = resolution_shells(d, max(1, min(n_shells, int(free.sum()) // per_shell)))
    m = np.zeros(len(f_obs))
    fc = np.abs(f_calc)
    for s in range(shell.max() + 1):
        sel = shell == s
        eo2 = f_obs[sel] ** 2 / max(np.mean(f_obs[sel] ** 2), 1e-30)
        ec2 = fc[sel] ** 2 / max(np.mean(fc[sel] ** 2), 1e-30)
        test = free[sel]
        ok = test.sum() > 2 and eo2[test].std() > 0 and ec2[test].std() > 0
        sa2 = float(np.corrcoef(eo2[test], ec2[test])[0, 1]) if ok else 0.0
        sa2 = min(max(sa2 if math.isfinite(sa2) else 0.0, 0.0), 0.98)
        x = torch.as_tensor(2 * math.sqrt(sa2) * np.sqrt(eo2 * ec2) / (1 - sa2))
        m[sel] = (torch.special.i1e(x) / torch.special.i0e(x)).numpy()
    return m


SMALL_GRID = 1_000_000  # voxels × starts below which one CPU thread is used (20 Å, 40³ × 4: 5.0 s vs 10.9 s)


def absolute_scale(
    wilson_c: float, composition: dict[str, float] | None, cell: Cell, warnings: list[str]
) -> tuple[float, float]:
    """The data's scale k (F_obs = k·F_abs) and F(000) in absolute units.

    The Wilson plot gives k²·Σf², in carbon equivalents ``wilson_c``. With the cell contents known, Σf² ≈ ΣZ²/36
    carbons, so k = √(wilson_c·36/ΣnZ²) and F(000) = ΣnZ. Without them the data are taken to be on the absolute
    scale (k = 1, F(000) = 6·wilson_c), with a warning when that implies more than one atom per 5 Å³.
    """
    if not composition:
        if wilson_c > cell.volume / 5:
            warnings.append(
                "the data do not look like an absolute scale (the Wilson plot implies more than one atom per 5 Å³): "
                "give the cell contents with --composition"
            )
        return 1.0, 6.0 * wilson_c
    z = {e: gemmi.Element(e).atomic_number for e in composition}
    sum_z2 = sum(n * z[e] ** 2 for e, n in composition.items())
    f000 = float(sum(n * z[e] for e, n in composition.items()))
    if sum_z2 <= 0:
        raise PattersonError("the composition holds no atoms")
    return math.sqrt(max(wilson_c, 1e-30) * 36.0 / sum_z2), f000


def _bar(desc: str, enabled: bool):
    bar = tqdm(total=1, desc=desc, disable=not enabled, leave=False, **runtime.bar_options())

    def progress(i: int, total: int) -> None:
        bar.total = total
        bar.n = i
        bar.refresh()

    return bar, progress


def _free_set(data: ObservedData, config: SolveConfig) -> tuple[np.ndarray, dict]:
    """The free set (M,) bool of the measured reflections, and how it was made: the file's flags, else
    ``free_fraction`` of the symmetry-unique reflections (whole orbits), evenly over resolution."""
    if len(data.hkl) < MIN_MEASURED:
        raise PattersonError(
            f"{config.input}: only {len(data.hkl)} measured reflections; at least {MIN_MEASURED} needed"
        )
    if data.free is not None:
        free, source = data.free, "the file's free flags"
    else:
        fraction = config.phasing.free_fraction
        free = free_set(data.hkl, data.cell, None, fraction, config.phasing.seed, data.orbit)[0].numpy()
        source = f"drawn: {fraction:g} of the unique reflections (at least {MIN_FREE} where the data allow)"
    check_free(torch.as_tensor(free)[None], torch.ones(1, len(free), dtype=torch.bool))
    n_unique = len(np.unique(data.orbit[free])) if data.orbit is not None else int(free.sum())
    return free, {"source": source, "n_free_unique": int(n_unique), "n_free_p1": int(free.sum())}


def _network_starts(config: SolveConfig, data: ObservedData, free: np.ndarray, warnings: list[str]) -> list:
    """[(network, starting phases (M,)), ...]: for ``pretrained`` every shipped density network, else the one named;
    each network's phases where its grid reaches, random elsewhere. The networks see the Patterson of the work set
    only (free amplitudes left out); which start wins is left to R-free after refinement (:func:`solve`)."""
    device = runtime.device(config.device)
    if config.checkpoint == "pretrained":
        networks = shipped_networks(device=device)
        if not networks:
            warnings.append("no shipped pretrained network: classical phasing (HIO from random starts) instead")
    else:
        networks = [TrainedNetwork.load(find_checkpoint(config.checkpoint), device, task="density")]
    work_data = dataclasses.replace(data, f=np.where(free, 0.0, data.f))
    starts = []
    for network in networks:
        pred, hold, _ = predict_density(network, work_data, config.transfer)
        start = np.random.default_rng(config.phasing.seed).uniform(0, 2 * np.pi, len(data.hkl))
        start[hold] = np.angle(f_from_density(pred[None], data.hkl[hold], data.cell)[0].numpy())
        if not hold.all():
            log.info("%s: %d reflections beyond its resolution start from random phases", network.path,
                     int((~hold).sum()))  # fmt: skip
        starts.append((network, start))
    return starts


# F(000) factors tried by HIO from random starts when the cell contents are not given: the Wilson estimate of the
# electron count was 0.65–1.4× the truth on held-out cells (F(000)/N_c from 4.4 to 7.6 by preset and d_min), and
# HIO with F(000) 1.25× too high failed where the true one solved (measured, paper-2 at 1.5 Å)
F000_SCAN = (0.75, 1.0, 1.33)


def _runs(config: SolveConfig, refine: str, starts: list, f000s: list[float], problem: dict) -> list[tuple]:
    """The phasing runs to make, each (name, run(progress) → PhasingResult, F(000)), on the measured + unmeasured
    reflections of ``problem`` (f_all, hkl_all, cell, shape, opts, rho_starts): each network's start refined,
    and (``hybrid`` or without a network) the classical method from random starts, HIO once per F(000) of
    ``f000s`` (the estimate first)."""
    f000 = f000s[0]
    f_all, hkl_all, cell, shape, opts = (problem[k] for k in ("f_all", "hkl_all", "cell", "shape", "opts"))
    if refine == "dual-space":  # no network starts: trials from random atoms in the data's space group
        run = lambda p: dual_space(f_all, hkl_all, cell, shape, _dual_space_options(config), f000=f000,  # noqa: E731
                                   group=problem.get("group"), progress=p, **opts)  # fmt: skip
        return [("dual-space", run, f000)]
    if refine == "fragments":  # ideal fragments of the sequence placed, built out and refined
        model = problem.get("model")
        run = lambda p: fragment_phasing(f_all, hkl_all, cell, shape, config.sequence if model is None else model,  # noqa: E731
                                         f000=f000, group=problem.get("group"), progress=p, **opts)  # fmt: skip
        return [("fragments from the sequence" if model is None else "fragment model placed", run, f000)]
    runs = []
    method = "charge-flip" if refine == "charge-flip" else "hio"
    options = config.phasing.options(method)
    for (network, _), rho0 in zip(starts, problem["rho_starts"], strict=True):
        name = f"network {network.name} + {method}"
        runs.append((name, lambda p, rho0=rho0: refine_density(rho0, f_all, hkl_all, cell, method, options,
                                                                f000=f000, progress=p, **opts), f000))  # fmt: skip
    if not starts or refine == "hybrid":
        if refine == "charge-flip":
            run = lambda p: charge_flip(f_all, hkl_all, cell, shape, options, progress=p, **opts)  # noqa: E731
            runs.append(("charge flipping", run, f000))
        else:
            for f0 in f000s:
                name = "HIO" if f0 == f000 else f"HIO, F(000) ×{f0 / f000:.2f}"
                run = lambda p, f0=f0: hio(f_all, hkl_all, cell, shape, options, f000=f0, progress=p, **opts)  # noqa: E731
                runs.append((name, run, f0))
    return runs


def _dual_space_options(config: SolveConfig):
    """Dual-space's own defaults with the seed and free fraction, and --n-iter (cycles per trial) and --n-starts
    (trials per batch) where they differ from solve's defaults."""
    phasing, default = config.phasing, SOLVE_PHASING
    changes = {k: getattr(phasing, k) for k in ("n_iter", "n_starts") if getattr(phasing, k) != getattr(default, k)}
    return method_options("dual-space", seed=phasing.seed, free_fraction=phasing.free_fraction, **changes)


def _explain(v: CrossValidation) -> str:
    """One plain sentence on what the verdict means for the user."""
    ratio = float(v.r_free[0] / v.r_free_random[0].clamp_min(1e-30))
    said = (
        f"R-free {float(v.r_free[0]):.3f} is {ratio:.2f} of what random phases give ({float(v.r_free_random[0]):.3f})"
    )
    if v.verdict[0] == "solved":
        return f"solved: {said}; the map predicts reflections it never fitted."
    if v.verdict[0] == "uncertain":
        return (f"uncertain: {said}; the map predicts the free reflections only in part. Treat it as a lead, not a "
                "structure: try more starts (--n-starts), other data or a model.")  # fmt: skip
    return (f"not solved: {said}; the map fits the amplitudes it was given but predicts the held-out ones little "
            "or no better than random phases would. Do not interpret it.")  # fmt: skip


def solve(config: SolveConfig) -> Solution:
    """Read, prepare and phase a reflection file; no files are written (see :func:`solve_to_folder`).

    With ``refine = "auto"`` (the default) the cheap route goes first where it can finish the job: at atomic
    resolution with known cell contents, charge flipping on E-values, its peaks refined as atoms; dual-space
    phasing, then the networks and HIO (the hybrid) run only when that is not ``solved`` (:mod:`.routes`). The best
    route is kept (solved first, then the lowest
    R1-free of refined atoms, then the lowest R-free)."""
    t0 = time.perf_counter()
    ctx = prepare(config)
    best, tried = None, []
    for name, route in routes(config, ctx["composition"], ctx["data"].d_min):
        solution = _solve_route(route, ctx)
        s = solution.summary
        tried.append({"route": name, "verdict": s["verdict"], "r_free": s["r_free"],
                      "r1_free": (s["atoms"] or {}).get("r1_free"), "seconds": s["timings_s"]["route"]})  # fmt: skip
        best = solution if best is None or rank(solution.summary) < rank(best.summary) else best
        if s["verdict"] == "solved":
            break
    best.summary["routes"] = tried
    best.summary["timings_s"]["total"] = round(time.perf_counter() - t0, 4)
    for w in best.summary["warnings"]:
        log.warning(w)
    return best


def prepare(config: SolveConfig) -> dict:
    """What every route shares: the reflections read, merged and put on the absolute scale, the free set, the
    contents, F(000), the grid and the unmeasured reflections that float."""
    t0 = time.perf_counter()
    refl = read_reflections(config.input, config.columns, config.cell, config.spacegroup, config.free_column)
    data = prepare_data(refl, config.d_min)
    if config.sequence:  # before any phasing: a peptide too large for the cell is an input error
        check_fits(config.sequence, data.cell.volume / (len(refl.group.rot) if refl.group is not None else 1))
    fragment = read_fragment(config.fragment, data.cell) if config.fragment else None  # so is a model of another cell
    warnings = list(data.warnings)
    free, free_info = _free_set(data, config)
    f_obs = torch.as_tensor(data.f, dtype=torch.float64)[None]  # (1, M)
    n_atoms, b_wilson = wilson_estimate(f_obs, data.hkl, data.cell, mask=torch.as_tensor(~free)[None])  # work only
    composition = parse_composition(config.composition) if config.composition else refl.composition
    radiation = radiation_for(refl.wavelength, str(config.input), config.radiation)
    scale, f000 = absolute_scale(float(n_atoms[0]), composition, data.cell, warnings)
    f_obs = f_obs / scale  # absolute scale: maps in e/Å³; phases.mtz keeps the file's F
    missing = unmeasured_hkl(data.cell, data.d_min, data.hkl)  # float in the phasing, after the measured ones
    f_all = torch.cat([f_obs, torch.zeros(1, len(missing), dtype=f_obs.dtype)], dim=-1)  # (1, M + K)
    return {"refl": refl, "data": data, "warnings": warnings, "free": free, "free_info": free_info, "f_obs": f_obs,
            "n_atoms": n_atoms, "b_wilson": b_wilson, "composition": composition, "scale": scale, "f000": f000,
            "shape": grid_shape(data.cell, data.d_min), "missing": missing, "f_all": f_all,
            "hkl_all": np.concatenate([data.hkl, missing]), "times": {"read": time.perf_counter() - t0},
            "radiation": radiation, "fragment": fragment}  # fmt: skip


def _solve_route(config: SolveConfig, ctx: dict) -> Solution:
    """One route: phase (:func:`_phase`), choose by R-free, final phases in the space group, peaks, atoms."""
    times = dict(ctx["times"])
    data, free, composition, shape = (ctx[k] for k in ("data", "free", "composition", "shape"))
    warnings = list(ctx["warnings"])
    t0 = time.perf_counter()
    use_networks = config.checkpoint != "none" and config.phasing.refine not in ("dual-space", "fragments")
    starts = _network_starts(config, data, free, warnings) if use_networks else []
    times["model"] = time.perf_counter() - t0
    refine = config.phasing.refine
    if refine == "none" and not starts:
        warnings.append("--refine none needs a network: refined with HIO instead")
        refine = "hybrid"
    f000 = ctx["f000"]
    f000s = [f000] if composition else [f000 * k for k in sorted(F000_SCAN, key=lambda k: abs(k - 1))]
    phasing_shape = grid_shape(data.cell, data.d_min, FLIP_SAMPLE_RATE) if config.phasing.stop_early else shape
    results, f000_of = _phase(config, refine, starts, ctx["f_all"], ctx["hkl_all"], free, f000s, data, phasing_shape,
                              group=ctx["refl"].group, model=ctx["fragment"])  # fmt: skip
    best = min(results, key=lambda r: float(r.r_free[0]))  # chosen by R-free, never by R-work
    times["phasing"] = time.perf_counter() - t0 - times["model"]
    with runtime.torch_threads(_threads(config, shape)):
        return _finish_route(config, ctx, (results, best, f000_of, starts), times, warnings)


def _threads(config: SolveConfig, shape) -> int | None:
    """Torch threads for a grid: one for small ones (faster than two busy ones), else unchanged; --threads wins."""
    voxels = int(np.prod(shape)) * config.phasing.n_starts
    return config.threads if config.threads is not None else (1 if voxels < SMALL_GRID else None)


def _finish_route(config: SolveConfig, ctx: dict, phased: tuple, times: dict, warnings: list[str]) -> Solution:
    """After the phasing: final phases in the space group, the map, peaks, atoms and the summary."""
    results, best, f000_of, starts = phased
    refl, data, free, composition, shape = (ctx[k] for k in ("refl", "data", "free", "composition", "shape"))
    cell, hkl, f_obs = data.cell, data.hkl, ctx["f_obs"]
    t3 = time.perf_counter()
    m = len(hkl)
    fom = figure_of_merit(data.f, best.f_calc[0, :m].numpy(), cell.d_spacing(hkl), free)
    f000 = f000_of[best.method]  # the chosen run's
    phi = _final_phases(best, ctx["f_all"], ctx["hkl_all"], m, f000, cell, shape)  # every measured amplitude now
    phi, group, symmetry = _symmetry(config, refl.group, hkl, f_obs[0].numpy() * np.exp(1j * phi), data, warnings)
    rho = _map(f_obs, phi, f000, hkl, cell, shape)
    unique = asu_peaks(rho, cell, group, composition, float(ctx["n_atoms"][0]))
    times["peaks"] = time.perf_counter() - t3
    with runtime.torch_threads(config.threads if config.threads is not None else 1):  # small sums: one thread
        model = solution_atoms(data, free, group, unique, composition, (refl.group, ctx["radiation"]))
    times["atoms"] = time.perf_counter() - t3 - times["peaks"]
    times["route"] = sum(times[k] for k in ("model", "phasing", "peaks", "atoms"))
    context = {k: ctx[k] for k in ("refl", "data", "scale", "composition", "n_atoms", "b_wilson", "free_info",
                                   "radiation")}  # fmt: skip
    context |= {"f000": f000, "starts": starts, "n_unmeasured": len(ctx["missing"])}
    summary = _summary(config, context, results, best, fom, shape, unique, times, warnings)
    summary["symmetry"] = symmetry
    judge_atoms(summary, model)
    if "check" in symmetry:  # a chance-level map can obey a group (one blob is centrosymmetric): it says nothing then
        symmetry["check_says_something"] = summary["verdict"] == "solved"
    return Solution(rho.numpy(), cell, hkl, data.f, phi, fom, free, unique.frac, unique.height, summary, group,
                    unique.multiplicity, composition, model)  # fmt: skip


def _map(f_obs: torch.Tensor, phi: np.ndarray, f000: float, hkl: np.ndarray, cell: Cell, shape) -> torch.Tensor:
    """The map (X, Y, Z) of every measured amplitude (1, M) with the phases (M,) and F(000)."""
    coeffs = torch.polar(f_obs, torch.as_tensor(phi)[None]).to(torch.complex128)
    hkl0 = np.concatenate([np.zeros((1, 3), dtype=hkl.dtype), hkl])
    coeffs = torch.cat([torch.full((1, 1), f000, dtype=torch.complex128), coeffs], dim=-1)
    return density_from_f(coeffs, hkl0, cell, shape)[0]


def _symmetry(config: SolveConfig, group: SpaceGroup | None, hkl, f: np.ndarray, data: ObservedData, warnings):
    """The P1 solution f (M,) moved to the space group's origin and symmetrised when it agrees with the group.
    Returns (phases (M,), the group the outputs are written in, the summary.json block)."""
    group = group or SpaceGroup.of("P 1")
    block: dict = {"spacegroup": group.name, "operators": int(len(group.rot))}
    phi = np.angle(f)
    used = SpaceGroup.of("P 1")
    if not group.is_p1:
        f_sg, fit = to_spacegroup(hkl, f, data.cell, group, data.d_min)
        block |= _fit_block(fit)
        if fit.consistent:
            phi, used = np.angle(f_sg), group
        else:
            warnings.append(
                f"the P1 solution does not obey {group.name} (worst operator agreement {fit.worst:.2f}, random "
                "phases give about 0.1): the outputs are left in P1 at the phasing's own origin"
            )
    block["written_in"] = used.name
    if config.check_symmetry or group.is_p1:
        log.info("checking which space groups of the lattice the P1 solution obeys")
        block["check"] = check_spacegroups(hkl, f, data.cell, data.d_min)
    return phi, used, block


def _fit_block(fit: SymmetryFit) -> dict:
    return {"origin_shift": [round(float(v), 5) for v in fit.shift], "worst_agreement": round(fit.worst, 4),
            "consistent": fit.consistent, "agreement": fit.table()}  # fmt: skip


def _chosen_network(best: PhasingResult, starts: list) -> str | None:
    """The path of the network whose start won, None when a classical run from random starts did."""
    for network, _ in starts:
        if best.method.startswith(f"network {network.name}"):
            return str(network.path)
    return None


FINAL_POLISH = 30  # cycles of positivity with every measured amplitude, after the choice


def _final_phases(
    best: PhasingResult, f_all: torch.Tensor, hkl_all: np.ndarray, m: int, f000: float, cell: Cell, shape
) -> np.ndarray:
    """Phases (M,) of the M measured reflections (the first of ``hkl_all``) for the final map: the chosen run
    polished by :data:`FINAL_POLISH` cycles of positivity that impose every measured amplitude, the free set's
    included (allowed only now that the choice is made; R-free and the verdict are from before)."""
    if best.iterations == 0:  # --refine none: the network's own phases
        return best.phi_rad[0, :m].numpy()
    floating = torch.arange(len(hkl_all))[None] >= m
    f = torch.cat([torch.full((1, 1), f000, dtype=best.f_calc.dtype), best.f_calc], dim=-1)
    f = positivity_polish(f, f_all, floating, hkl_all, cell, shape, FINAL_POLISH)
    return torch.angle(f[0, 1 : m + 1]).numpy()


def run_masks(free: np.ndarray, n_all: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(1, M + K) bool each: which of the reflections a run phases are measured (the M first) and which are free
    (``free`` (M,) among the measured; the K unmeasured ones of the sphere are neither)."""
    m = len(free)
    measured = torch.arange(n_all)[None] < m
    return measured, torch.cat([torch.as_tensor(free), torch.zeros(n_all - m, dtype=torch.bool)])[None]


def _phase(config: SolveConfig, refine: str, starts, f_all, hkl_all, free, f000s, data: ObservedData, shape,
           group: SpaceGroup | None = None, model=None):  # fmt: skip
    """Every run's :class:`PhasingResult` on ``hkl_all`` (the M measured reflections first, results[:, :M] are
    theirs, then the unmeasured ones of the sphere, which float, as does the free set), and {run: its F(000)}.
    ``group``: the data's space group, which dual-space phasing works in; ``model``: the fragments route's search
    model (None: the sequence)."""
    cell, hkl = data.cell, data.hkl
    m = len(hkl)
    f_obs = f_all[:, :m]
    measured, free_all = run_masks(free, len(hkl_all))
    opts = {"observed": measured, "free": free_all}  # the runs' options: config.phasing.options
    rho_starts = [
        density_from_f(torch.polar(f_obs * ~free_all[:, :m], torch.as_tensor(phi0)[None]).to(torch.complex128), hkl,
                       cell, shape) for _, phi0 in starts
    ]  # fmt: skip
    if refine == "none":
        work = torch.as_tensor(~free)[None]
        results = []
        for (network, _), rho in zip(starts, rho_starts, strict=True):
            fc = f_from_density(rho.clamp_min(0), hkl, cell)
            check = cross_validate(f_obs, fc, rho, work, ~work, hkl, cell)
            name = f"network {network.name}"
            results.append(PhasingResult(rho, torch.angle(fc), fc, ~work, check, name, 0))
        return results, {r.method: f000s[0] for r in results}
    problem = {"f_all": f_all, "hkl_all": hkl_all, "cell": cell, "shape": shape, "opts": opts}
    problem["rho_starts"], problem["group"], problem["model"] = rho_starts, group, model
    threads = _threads(config, shape)
    results, f000_of = [], {}
    for desc, run, f0 in _runs(config, refine, starts, f000s, problem):
        bar, progress = _bar(desc, config.progress)
        try:
            with runtime.torch_threads(threads):
                res = run(progress)
        finally:
            bar.close()
        res.method = desc
        results.append(res)
        f000_of[desc] = f0
    return results, f000_of


def _summary(config: SolveConfig, c: dict, results: list, best, fom, shape, peaks, times, warnings) -> dict:
    """summary.json: the data, the runs, the chosen one with its verdict, timings and warnings."""
    refl, data, v = c["refl"], c["data"], best.validation
    return {
        "input": str(config.input),
        "columns": list(refl.labels),
        "data": {
            "kind": refl.kind,
            "intensity_treatment": "French-Wilson (acentric prior)" if refl.kind == "intensity" else None,
            "spacegroup": refl.spacegroup,
            "symmetry_operators": int(len(refl.rotations)),
            "cell": list(data.cell.parameters),
            "reflections_read": data.n_read,
            "unique_merged": data.n_unique,
            "p1_reflections": int(len(data.hkl)),
            "d_min": data.d_min,
            "d_max": data.d_max,
            "completeness_p1": data.completeness,
            "unmeasured_free": int(c["n_unmeasured"]),
            "wilson_b": float(c["b_wilson"][0]),
            "wilson_atoms_c_equivalent": float(c["n_atoms"][0]),
            "scale": c["scale"],
            "f000": c["f000"],
            "f000_source": "the composition" if c["composition"] else "Wilson estimate (HIO also tries "
            + ", ".join(f"×{k:g}" for k in F000_SCAN if k != 1) + ")",
            "composition": c["composition"],
            "wavelength": refl.wavelength,
            "radiation": c["radiation"],
        },
        "free_set": {**c["free_info"], "label": refl.free_label},
        "verdict": v.verdict[0],
        "verdict_explanation": _explain(v),
        "r_work": float(v.r_work[0]),
        "r_free": float(v.r_free[0]),
        "r_free_random": float(v.r_free_random[0]),
        "start_agreement": None if not math.isfinite(float(v.agreement[0])) else float(v.agreement[0]),
        "map_skewness": float(v.skewness[0]),
        "method": best.method,
        "selection": "the run with the lowest R-free",
        "refine": config.phasing.refine,
        "checkpoint": _chosen_network(best, c["starts"]),
        "networks_tried": [str(network.path) for network, _ in c["starts"]],
        "network_choice": "every shipped density network starts a run; R-free picks the run" if c["starts"] else None,
        "transfer": config.transfer if c["starts"] else None,
        "runs": {
            r.method: {"r_work": float(r.r_work[0]), "r_free": float(r.r_free[0]), "verdict": r.verdict[0],
                       "iterations": int(r.iterations)}  # fmt: skip
            for r in results
        },
        "map_coefficients": f"all measured amplitudes with the chosen run's phases after {FINAL_POLISH} cycles of "
        "positivity imposing every measured amplitude, the free set's included (done after the choice; R-work, "
        "R-free and the verdict are from before)",
        "figure_of_merit": float(np.mean(fom)),
        "figure_of_merit_note": "Sim weights with σA estimated on the free set (cross-validated)",
        "grid": list(shape),
        "n_peaks": int(len(peaks.height)),
        "timings_s": {k: round(val, 4) for k, val in times.items()},
        "warnings": warnings,
    }
