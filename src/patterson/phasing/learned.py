"""Learned phasing: a real-space step inside the phasing loop (density modification by a network).

The loop alternates two steps from many random starts, batched:

    ρ' = ρ + λ (D(ρ) − ρ)           the real-space step D, relaxed by λ
    ρ  = P_M ρ'                     the observed amplitudes of the work set with the phases of ρ'; the free set and
                                    the unmeasured reflections keep what ρ' gives them (they float)

and a short finish: error reduction with positivity and F(000) (no support: HIO's shrink-wrap support, made for a
molecule in an empty cell, takes even the true phases of a packed cell to 60–70° error), the best start chosen by
R-free. D is either

- :class:`NetworkStep` — a trained :class:`~patterson.models.DensityModifier` (``patterson train`` with
  ``task = "density-modification"``), which has learned what a peptide density looks like at this resolution; or
- :class:`HistogramStep` — the non-learned control in the same loop: positivity, a Gaussian blur and histogram
  matching to the density of random atoms with the Wilson atom count and B of the data (no training).

Both see and return maps without F(000) (mean zero); the network works in units of its input's r.m.s., so the
scale of the amplitudes does not matter.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from patterson.cells import Cell
from patterson.errors import PattersonError
from patterson.maps import density_from_f, f_from_density, impose_amplitudes
from patterson.phasing.amplitudes import electron_counts, wilson_estimate
from patterson.phasing.flipping import positivity_polish
from patterson.phasing.options import LOOP_SCHEMES, LearnedOptions, checked
from patterson.phasing.projections import gaussian_blur
from patterson.phasing.starts import PhasingResult, Starts, prepare_starts, with_000
from patterson.physics import AtomBatch, structure_factors

log = logging.getLogger(__name__)

TASK = "density-modification"  # the training task of a network that can be a real-space step
SCHEMES = LOOP_SCHEMES
EXTENSION = LearnedOptions(n_starts=1, n_iter=10, n_finish=0)  # the loop extending a model's phases (a placed
# fragment): 10 cycles, no positivity finish (chosen on val crystals: benchmarks/peptide_extension.py --split val)
RealSpaceStep = Callable[[torch.Tensor], torch.Tensor]  # (N, X, Y, Z) mean-zero maps → the same


class NetworkStep:
    """A trained density-modification network as the loop's real-space step.

    Parameters
    ----------
    model : torch.nn.Module
        A network mapping (N, 1, X, Y, Z) to (N, 1, X, Y, Z) (a :class:`~patterson.models.DensityModifier`).
    batch_size : int
        Maps per forward pass (memory).
    """

    def __init__(self, model: torch.nn.Module, batch_size: int = 64) -> None:
        self.model = model.eval()
        self.batch_size = batch_size
        self.device = next(model.parameters()).device

    def __call__(self, rho: torch.Tensor) -> torch.Tensor:
        out = []
        with torch.no_grad():
            for part in torch.split(rho, self.batch_size):
                x = part.to(device=self.device, dtype=torch.float32)[:, None]  # (n, 1, X, Y, Z)
                out.append(self.model(x)[:, 0].to(device=rho.device, dtype=rho.dtype))
        return torch.cat(out)


def load_step(path: str | Path, device: str | torch.device = "cpu") -> NetworkStep:
    """The real-space step stored in a checkpoint; a checkpoint of another kind (a Patterson → density network) is
    a one-line PattersonError naming the kind needed."""
    from patterson.networks import TrainedNetwork

    return NetworkStep(TrainedNetwork.load(path, device, task=TASK).model)


def learned_step(checkpoint: str | None, data: dict, device="cpu", weights_dir=None) -> NetworkStep:
    """The real-space step for ``--method learned``: ``checkpoint`` (a path or shipped name; default: the shipped
    density-modification network that suits ``data``, a dataset config dict), loaded as a
    :class:`NetworkStep`. One-line errors for a checkpoint of another kind or none."""
    from patterson.networks import open_network

    network = open_network(checkpoint or "pretrained", data, TASK, device, weights_dir)
    if network is None:
        raise PattersonError(
            "no density-modification network is shipped with this version: train one with "
            "`patterson train --config recipes/density-modifier.toml --data DS --out RUN` and give "
            "--checkpoint RUN/checkpoints/best.pt"
        )
    return NetworkStep(network.model)


class HistogramStep:
    """The non-learned control: positivity, a Gaussian blur and histogram matching.

    The density is made non-negative (with F(000) from the atom count), blurred by ``sigma`` Å, and its values are
    replaced rank for rank by those of a reference: the density of ``n_atoms`` random carbon atoms with B
    ``b_iso`` in the same cell, at the same resolution (``hkl``), so that the map gets the histogram of an atomic
    structure with this many atoms. One reference per structure in the batch, repeated over its starts.
    """

    def __init__(
        self, hkl: np.ndarray, cell: Cell, shape, n_atoms: torch.Tensor, b_iso: torch.Tensor, sigma: float = 0.3
    ) -> None:
        self.cell, self.sigma = cell, sigma
        gen = np.random.default_rng(0)
        counts = [max(1, int(round(float(n)))) for n in n_atoms]
        top = max(counts)
        frac = torch.as_tensor(gen.random((len(counts), top, 3)))
        occ = torch.as_tensor(np.arange(top)[None, :] < np.array(counts)[:, None], dtype=torch.float64)
        atoms = AtomBatch(
            frac, torch.full((len(counts), top), 6), b_iso.double()[:, None].expand(-1, top).cpu(), occ, cell
        )
        f = structure_factors(atoms, hkl)  # (B, M)
        ref = density_from_f(f, hkl, cell, shape)  # (B, X, Y, Z), mean zero
        self.reference = ref.flatten(1).sort(-1).values  # (B, N)
        self.f000 = 6.0 * torch.as_tensor(counts, dtype=torch.float64) / cell.volume  # (B,) mean density

    def __call__(self, rho: torch.Tensor) -> torch.Tensor:
        n = rho.shape[0]
        ref = self.reference.to(rho).repeat_interleave(n // len(self.reference), 0)  # (N, voxels)
        mean = self.f000.to(rho).repeat_interleave(n // len(self.f000), 0)[:, None, None, None]
        smooth = gaussian_blur((rho + mean).clamp_min(0) - mean, self.cell, self.sigma)
        flat = smooth.flatten(1)
        out = torch.empty_like(flat)
        out.scatter_(1, flat.argsort(-1), ref)  # the k-th lowest voxel gets the reference's k-th lowest value
        return out.reshape(rho.shape)


def learned(
    f_obs: torch.Tensor,
    hkl: np.ndarray,
    cell: Cell,
    shape: tuple[int, int, int],
    step: RealSpaceStep | str | Path,
    options: LearnedOptions | None = None,
    *,
    f000: torch.Tensor | float | None = None,
    phi_start: torch.Tensor | None = None,
    observed: torch.Tensor | None = None,
    free: torch.Tensor | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> PhasingResult:
    """Phase with a real-space step D inside the loop: ρ ← P_M(ρ + λ(D(ρ) − ρ)), then a positivity finish.

    Parameters
    ----------
    f_obs : (B, M) observed amplitudes on the Friedel half ``hkl``.
    cell, shape : the cell and the grid (X, Y, Z); a network step works on any grid, best at the voxel size it was
        trained on (0.5 Å for the shipped one: d_min / 4 at 2 Å).
    step : the real-space step: a callable on (N, X, Y, Z) maps (:class:`NetworkStep`, :class:`HistogramStep`),
        ``"histogram"`` for the control, or a checkpoint path of a density-modification network.
    options : how it runs (:class:`~patterson.phasing.options.LearnedOptions`; None: the defaults): ``n_iter``
        loop iterations per start with λ = ``relax``, the ``scheme`` (``relaxed``, or ``rrr``: Elser's
        reflect-reflect-relax with D as the real-space constraint, x ← x + λ(D(2 P_M x − x) − P_M x), the map
        being P_M x), then ``n_finish`` cycles of error reduction with positivity; the best start by R-free.
    f000 : electron count per cell for the finish (Wilson estimate from the work set when None).
    phi_start, observed, free, progress : as for :func:`~patterson.phasing.hio`; the free set is never imposed.
    """
    options = checked(options, LearnedOptions, "learned")
    s = prepare_starts(f_obs, hkl, cell, shape, options, observed, free, phi_start)  # (B·S, M)
    step = _real_space_step(step, s.f_obs, hkl, cell, shape, s.imposed)
    f000 = electron_counts(f000, s.f_obs, hkl, cell, s.imposed).repeat_interleave(s.n_starts, 0)  # (B·S,)
    rho = density_from_f(torch.polar(s.fo * ~s.floating, s.phi).to(s.ctype), hkl, cell, shape)  # (B·S, X, Y, Z)
    rho, cycles = _loop(rho, step, s, options, progress)
    if progress is not None:
        total = options.n_iter + options.n_finish
        progress(total, total)  # the finish is short
    if options.n_finish == 0:
        return s.result(rho, f_from_density(rho, hkl, cell), options.select, "learned", cycles)
    return _finish(rho, step, s, f000, options, cycles)


def _loop(rho: torch.Tensor, step: RealSpaceStep, s: Starts, options: LearnedOptions,
          progress) -> tuple[torch.Tensor, int]:  # fmt: skip
    """The ``options.n_iter`` cycles (or ``options.max_seconds`` of them) of the loop from the maps ``rho`` (B·S, X, Y,
    Z); returns the last map P_M and the cycles run."""
    hkl, cell, shape = s.hkl, s.cell, rho.shape[-3:]
    fo, floating, relax = s.fo, s.floating, options.relax
    project = lambda r: density_from_f(impose_amplitudes(fo, floating, f_from_density(r, hkl, cell)), hkl, cell, shape)  # noqa: E731
    total = options.n_iter + options.n_finish
    x, it, t0 = rho, 0, time.perf_counter()
    while _more(it, t0, options):
        if options.scheme == "rrr":  # x ← x + λ (D(2 P_M x − x) − P_M x); the map is P_M x
            rho = project(x)
            x = x + relax * (step(2 * rho - x) - rho)
        else:
            rho = project(rho + relax * (step(rho) - rho))
        it += 1
        if progress is not None:
            progress(min(it, options.n_iter), total)
    return (project(x) if options.scheme == "rrr" else rho), it


def _more(it: int, t0: float, options: LearnedOptions) -> bool:
    """Whether the loop runs another cycle after ``it``: ``n_iter`` in all, or until ``max_seconds`` have passed
    since ``t0`` (one at least)."""
    if options.max_seconds > 0:
        return it == 0 or time.perf_counter() - t0 < options.max_seconds
    return it < options.n_iter


def _real_space_step(step, f_obs, hkl, cell, shape, imposed) -> RealSpaceStep:
    """The step as a callable: ``"histogram"`` builds the control from a Wilson plot, a path loads a network."""
    if callable(step):
        return step
    if step == "histogram":
        n_atoms, b_iso = wilson_estimate(f_obs, hkl, cell, mask=imposed)
        return HistogramStep(hkl, cell, shape, n_atoms, b_iso)
    return load_step(step, f_obs.device)


def _finish(rho: torch.Tensor, step: RealSpaceStep, s: Starts, f000: torch.Tensor, options: LearnedOptions,
            cycles: int):  # fmt: skip
    """Error reduction with positivity (no support: a packed cell has no empty region to find) from each start's
    loop map (after ``cycles`` cycles) after one more step, F(000) (B·S,) set to the electron count; then the best
    start per structure by R-free."""
    hkl, cell, shape = s.hkl, s.cell, rho.shape[-3:]
    hkl0 = with_000(hkl)
    f = f_from_density(step(rho) + (f000 / cell.volume).to(rho)[:, None, None, None], hkl0, cell)  # (B·S, 1 + M)
    f = positivity_polish(f, s.fo, s.floating, hkl, cell, shape, options.n_finish)
    final = density_from_f(torch.cat([f[:, :1], impose_amplitudes(s.fo, s.floating, f[:, 1:])], dim=-1), hkl0, cell,
                           shape)  # fmt: skip
    f_calc = f_from_density(final.clamp_min(0), hkl, cell)
    return s.result(final, f_calc, options.select, "learned", cycles + options.n_finish)


def start_error_phases(f_true: torch.Tensor, error_deg: float, generator: torch.Generator) -> torch.Tensor:
    """Phases (B, M) of ``f_true`` with a mean absolute error of ``error_deg`` (errors uniform in ± 2·error_deg;
    90° gives random phases): starts for the radius-of-convergence benchmark."""
    width = math.radians(min(180.0, 2 * error_deg))
    noise = (torch.rand(f_true.shape, generator=generator, dtype=torch.float64) * 2 - 1) * width
    return torch.angle(f_true) + noise.to(f_true.device)
