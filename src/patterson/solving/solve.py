"""The solve itself: the network start (when there is one), classical refinement, figure of merit, peaks."""

from __future__ import annotations

import contextlib
import logging
import math
import time
from dataclasses import dataclass

import gemmi
import numpy as np
import torch
from tqdm import tqdm

from patterson.cells import Cell
from patterson.errors import PattersonError
from patterson.evaluation.peaks import find_peaks
from patterson.maps import density_from_f, f_from_density
from patterson.phasing import PhasingResult, charge_flip, hio, r_factor, refine_density, wilson_estimate
from patterson.physics import check_d_min, grid_shape, resolution_shells
from patterson.solving.data import prepare_data, unmeasured_hkl
from patterson.solving.network import TRANSFERS, find_checkpoint, load_solver_model, predict_density
from patterson.solving.readers import parse_composition, read_reflections

log = logging.getLogger(__name__)

REFINE_METHODS = ("hybrid", "charge-flip", "hio", "none")
PACKED_VOLUME = 60.0  # Å³ per atom below which a cell counts as packed (pretrained picks a packed-cell model)


@dataclass(frozen=True)
class SolveConfig:
    """What ``patterson solve`` does; see :func:`solve`."""

    input: str
    out: str | None = None
    checkpoint: str = "pretrained"
    refine: str = "hybrid"
    d_min: float | None = None
    columns: str | None = None
    cell: tuple[float, ...] | None = None
    spacegroup: str | None = None
    transfer: str = "resample"  # measured better than convolve on every cell tried: docs/solving.md
    n_iter: int = 400
    n_starts: int = 4
    seed: int = 0
    progress: bool = True
    device: str | None = None
    threads: int | None = None
    composition: str | None = None

    def __post_init__(self) -> None:
        if self.refine not in REFINE_METHODS:
            raise PattersonError(f"unknown --refine {self.refine!r} (choose from {', '.join(REFINE_METHODS)})")
        if self.transfer not in TRANSFERS:
            raise PattersonError(f"unknown transfer {self.transfer!r} (choose from {', '.join(TRANSFERS)})")
        if self.n_iter < 1 or self.n_starts < 1:
            raise PattersonError("n_iter and n_starts must be at least 1")
        if self.d_min is not None:
            check_d_min(self.d_min)


@dataclass
class Solution:
    """A solved data set: the map (X, Y, Z) on ``cell``, phases (M,) in radians and figure of merit (M,) for the
    observed ``hkl``/``f``, the peaks and the summary that goes to summary.json."""

    rho: np.ndarray
    cell: Cell
    hkl: np.ndarray
    f: np.ndarray
    phi: np.ndarray
    fom: np.ndarray
    peaks_frac: np.ndarray
    peaks_height: np.ndarray
    summary: dict


def figure_of_merit(f_obs: np.ndarray, f_calc: np.ndarray, d: np.ndarray, n_shells: int = 10) -> np.ndarray:
    """Sim (1959) weights m = I₁(X)/I₀(X), X = 2σA|Eo||Ec|/(1 − σA²), with σA² per resolution shell estimated as the
    correlation of |Eo|² and |Ec|² (exact for Wilson-distributed acentric data). 1: phases certain; 0: random."""
    shell, _ = resolution_shells(d, max(1, min(n_shells, len(d) // 100)))
    m = np.zeros(len(f_obs))
    fc = np.abs(f_calc)
    for s in range(shell.max() + 1):
        sel = shell == s
        eo2 = f_obs[sel] ** 2 / max(np.mean(f_obs[sel] ** 2), 1e-30)
        ec2 = fc[sel] ** 2 / max(np.mean(fc[sel] ** 2), 1e-30)
        sa2 = float(np.corrcoef(eo2, ec2)[0, 1]) if sel.sum() > 2 and eo2.std() > 0 and ec2.std() > 0 else 0.0
        sa2 = min(max(sa2 if math.isfinite(sa2) else 0.0, 0.0), 0.98)
        x = torch.as_tensor(2 * math.sqrt(sa2) * np.sqrt(eo2 * ec2) / (1 - sa2))
        m[sel] = (torch.special.i1e(x) / torch.special.i0e(x)).numpy()
    return m


@contextlib.contextmanager
def torch_threads(n: int | None):
    """Run with ``n`` torch CPU threads (None: unchanged). Small FFT grids run several times faster on one thread
    than on two busy ones (measured on the 2-core machine: 0.23 s vs 3.4 s for a 200-iteration HIO on 18×20×16)."""
    old = torch.get_num_threads()
    if n is not None:
        torch.set_num_threads(max(1, int(n)))
    try:
        yield
    finally:
        torch.set_num_threads(old)


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
    bar = tqdm(total=1, desc=desc, disable=not enabled, leave=False, dynamic_ncols=True)

    def progress(i: int, total: int) -> None:
        bar.total = total
        bar.n = i
        bar.refresh()

    return bar, progress


def solve(config: SolveConfig) -> Solution:
    """Read, prepare and phase a reflection file; no files are written (see :func:`solve_to_folder`)."""
    times: dict[str, float] = {}
    t0 = time.perf_counter()
    refl = read_reflections(config.input, config.columns, config.cell, config.spacegroup)
    data = prepare_data(refl, config.d_min)
    warnings = list(data.warnings)
    times["read"] = time.perf_counter() - t0
    cell, hkl = data.cell, data.hkl
    shape = grid_shape(cell, data.d_min)
    f_obs = torch.as_tensor(data.f, dtype=torch.float64)[None]  # (1, M)
    n_atoms, b_wilson = wilson_estimate(f_obs, hkl, cell)
    composition = parse_composition(config.composition) if config.composition else refl.composition
    scale, f000 = absolute_scale(float(n_atoms[0]), composition, cell, warnings)
    f_obs = f_obs / scale  # absolute scale: maps in e/Å³; phases.mtz keeps the file's F

    t1 = time.perf_counter()
    volume_per_atom = cell.volume / max(float(n_atoms[0]), 1.0)  # Å³ per atom, from the Wilson estimate
    hints = {"d_min": data.d_min, "pack_volume": volume_per_atom if volume_per_atom < PACKED_VOLUME else None}
    path = find_checkpoint(config.checkpoint, data=hints)
    solver, start = None, None
    if path is None:
        msg = "no shipped pretrained network: classical phasing (HIO from random starts) instead"
        warnings.append(msg)
    else:
        device = config.device or ("cuda" if torch.cuda.is_available() else "cpu")
        solver = load_solver_model(path, device)
        pred, hold, _ = predict_density(solver, data, config.transfer)
        phi_model = np.angle(f_from_density(pred[None], hkl[hold], cell)[0].numpy())
        rng = np.random.default_rng(config.seed)
        start = rng.uniform(0, 2 * np.pi, len(hkl))
        start[hold] = phi_model
        if not hold.all():
            warnings.append(
                f"{int((~hold).sum())} reflections beyond the network's resolution start from random phases"
            )
    times["model"] = time.perf_counter() - t1

    t2 = time.perf_counter()
    refine = config.refine
    if refine == "none" and start is None:
        warnings.append("--refine none needs a network: refined with HIO instead")
        refine = "hybrid"
    # unmeasured reflections inside the sphere float in the phasing (measured ones first: results[:, :M] are theirs)
    missing = unmeasured_hkl(cell, data.d_min, hkl)
    m = len(hkl)
    hkl_all = np.concatenate([hkl, missing])
    f_all = torch.cat([f_obs, torch.zeros(1, len(missing), dtype=f_obs.dtype)], dim=-1)
    measured = torch.arange(len(hkl_all))[None] < m  # (1, M + K)
    opts = {"n_iter": config.n_iter, "seed": config.seed, "observed": measured}
    results: list[PhasingResult] = []
    if refine == "none":
        rho_start = density_from_f(
            torch.polar(f_obs, torch.as_tensor(start)[None]).to(torch.complex128), hkl, cell, shape
        )
        fc = f_from_density(rho_start.clamp_min(0), hkl, cell)
        results.append(PhasingResult(rho_start, torch.as_tensor(start)[None], fc, r_factor(f_obs, fc), "network", 0))
    else:
        runs = []
        if start is not None:
            phi0 = torch.as_tensor(start)[None]
            rho0 = density_from_f(torch.polar(f_obs, phi0).to(torch.complex128), hkl, cell, shape)
            method = "charge-flip" if refine == "charge-flip" else "hio"
            runs.append(
                (
                    f"network + {method}",
                    lambda p, k=method: refine_density(
                        rho0, f_all, hkl_all, cell, k, f000=f000 if k == "hio" else None, progress=p, **opts
                    ),
                )
            )
        if start is None or refine == "hybrid":
            if refine == "charge-flip":
                runs.append(
                    (
                        "charge flipping",
                        lambda p: charge_flip(
                            f_all, hkl_all, cell, shape, n_starts=config.n_starts, progress=p, **opts
                        ),
                    )
                )
            else:
                runs.append(
                    (
                        "HIO",
                        lambda p: hio(
                            f_all, hkl_all, cell, shape, f000=f000, n_starts=config.n_starts, progress=p, **opts
                        ),
                    )
                )
        voxels = int(np.prod(shape)) * config.n_starts
        threads = config.threads if config.threads is not None else (1 if voxels < SMALL_GRID else None)
        for desc, run in runs:
            bar, progress = _bar(desc, config.progress)
            try:
                with torch_threads(threads):
                    res = run(progress)
            finally:
                bar.close()
            res.method = desc
            results.append(res)
    best = min(results, key=lambda r: float(r.r_factor[0]))
    times["phasing"] = time.perf_counter() - t2

    t3 = time.perf_counter()
    phi = best.phi_rad[0, :m].numpy()  # the measured reflections' phases
    f_calc = best.f_calc[0, :m].numpy()
    d = cell.d_spacing(hkl)
    fom = figure_of_merit(data.f, f_calc, d)
    coeffs = torch.polar(f_obs, torch.as_tensor(phi)[None]).to(torch.complex128)
    hkl0 = np.concatenate([np.zeros((1, 3), dtype=hkl.dtype), hkl])
    coeffs = torch.cat([torch.full((1, 1), f000, dtype=torch.complex128), coeffs], dim=-1)
    rho = density_from_f(coeffs, hkl0, cell, shape)[0]
    expected = sum(composition.values()) if composition else float(n_atoms[0])
    max_peaks = int(min(500, max(10, round(1.5 * expected))))
    peaks = find_peaks(rho, cell, threshold=0.25, min_separation=1.0, max_peaks=max_peaks)[0]
    times["peaks"] = time.perf_counter() - t3
    times["total"] = time.perf_counter() - t0
    for w in warnings:
        log.warning(w)

    summary = {
        "input": str(config.input),
        "columns": list(refl.labels),
        "data": {
            "kind": refl.kind,
            "intensity_treatment": "French-Wilson (acentric prior)" if refl.kind == "intensity" else None,
            "spacegroup": refl.spacegroup,
            "symmetry_operators": int(len(refl.rotations)),
            "cell": list(cell.parameters),
            "reflections_read": data.n_read,
            "unique_merged": data.n_unique,
            "p1_reflections": int(len(hkl)),
            "d_min": data.d_min,
            "d_max": data.d_max,
            "completeness_p1": data.completeness,
            "unmeasured_free": int(len(missing)),
            "wilson_b": float(b_wilson[0]),
            "wilson_atoms_c_equivalent": float(n_atoms[0]),
            "scale": scale,
            "f000": f000,
            "composition": composition,
        },
        "method": best.method,
        "refine": config.refine,
        "checkpoint": solver.path if solver else None,
        "transfer": config.transfer if solver else None,
        "runs": {r.method: float(r.r_factor[0]) for r in results},
        "r_factor": float(best.r_factor[0]),
        "figure_of_merit": float(np.mean(fom)),
        "grid": list(shape),
        "n_peaks": int(len(peaks)),
        "timings_s": {k: round(v, 4) for k, v in times.items()},
        "warnings": warnings,
    }
    return Solution(rho.numpy(), cell, hkl, data.f, phi, fom, peaks.frac, peaks.height, summary)
