"""The likelihood of a partial model: how much better a placed fragment explains the observed amplitudes than
the Wilson distribution does.

For normalised amplitudes E_o (work reflections, per resolution shell) and the model's own E_c (its atoms and
their images, per shell), with σ_A(s) = √f_P · exp(−2π²Δ²s²/3) — f_P the model's share of the scattering, Δ its
coordinate error in Å, s = 1/d (Read 1986) — the log-likelihood gain of one reflection is

- acentric: −ln(1 − σ_A²) − (E_o² + σ_A² E_c²)/(1 − σ_A²) + E_o² + ln I₀(2σ_A E_o E_c/(1 − σ_A²)),
- centric: −½ ln(1 − σ_A²) − (E_o² + σ_A² E_c²)/(2(1 − σ_A²)) + E_o²/2 + ln cosh(σ_A E_o E_c/(1 − σ_A²)),

and the LLG is their sum (the Rice and Woolfson distributions over Wilson's). Unlike the E² correlation it weighs
each reflection by how much a model of this size and error can know of it, so a main chain that is nearly right
gains from its high-resolution terms instead of being drowned by a few strong low-resolution ones.

:func:`refine_likelihood` refines a placed model's coordinates to the largest LLG while keeping its own short
distances (bonds, angles: pairs closer than 2.7 Å): the main chain may bend, so a right placement of an imperfect
search model moves towards the true chain, while a wrong one has nothing to move towards.

Only the target's reflections take part: built from a :class:`~patterson.phasing.placement.SearchTarget`, they are
the work set alone.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from patterson.minimize import lbfgs
from patterson.phasing.building import restraint_pairs
from patterson.phasing.placement import SearchTarget, intensities, per_shell, skew

VOLUME_PER_ATOM = 16.0  # Å³ per non-hydrogen atom in a peptide crystal's asymmetric unit, waters included
MEAN_Z2 = 6.7**2  # the mean squared atomic number of C, N and O atoms


@dataclass(frozen=True)
class Likelihood:
    """A likelihood target: the search target's reflections, E_o (M,), whether each is centric (M,) and σ_A (M,)
    of a model of atomic numbers ``z``."""

    target: SearchTarget
    z: np.ndarray
    e_obs: torch.Tensor
    centric: torch.Tensor
    sigma_a: torch.Tensor


def centric_reflections(hkl: np.ndarray, rot: np.ndarray) -> np.ndarray:
    """(M,) bool: the reflections h (M, 3) that an operator's rotation part sends to −h (their phase is 0 or π)."""
    out = np.zeros(len(hkl), dtype=bool)
    for r in rot:
        out |= np.all(hkl @ r == -hkl, axis=1)
    return out


def likelihood_target(target: SearchTarget, z: np.ndarray, error_a: float = 0.5,
                      n_atoms: float | None = None) -> Likelihood:  # fmt: skip
    """The likelihood of a model of atomic numbers ``z`` (N,) with coordinate error ``error_a`` Å against
    ``target``; the asymmetric unit holds ``n_atoms`` non-H atoms (None: its volume / :data:`VOLUME_PER_ATOM`)."""
    cell, group = target.cell, target.group
    if n_atoms is None:
        n_atoms = cell.volume / len(group.rot) / VOLUME_PER_ATOM
    f_p = min(0.95, float((np.asarray(z, dtype=np.float64) ** 2).sum()) / (max(n_atoms, len(z)) * MEAN_Z2))
    s2 = torch.as_tensor(cell.inv_d2(target.hkl))
    sigma_a = math.sqrt(f_p) * torch.exp(-2 * math.pi**2 / 3 * error_a**2 * s2)
    return Likelihood(target, np.asarray(z), torch.as_tensor(np.sqrt(target.e2)),
                      torch.as_tensor(centric_reflections(target.hkl, group.rot)), sigma_a)  # fmt: skip


def llg_terms(lik: Likelihood, frac: torch.Tensor, b_iso: float = 20.0) -> torch.Tensor:
    """(C, M) the log-likelihood gain of each reflection for C placements frac (C, N, 3) of the model (one copy;
    the images are added here); differentiable in frac."""
    return gain_terms(lik, intensities(lik.target, frac, lik.z, b_iso))


def gain_terms(lik: Likelihood, i_calc: torch.Tensor) -> torch.Tensor:
    """(C, M) the log-likelihood gain of each reflection for C models' intensities i_calc (C, M) = |F_calc|² at
    the target's reflections (their images included)."""
    e_calc = torch.sqrt(per_shell(lik.target, i_calc) + 1e-12)  # (C, M)
    sa, eo = lik.sigma_a, lik.e_obs
    v = 1 - sa**2
    both = (eo**2 + sa**2 * e_calc**2) / v
    x = 2 * sa * eo * e_calc / v
    acentric = -torch.log(v) - both + eo**2 + torch.log(torch.special.i0e(x)) + x
    centric = -0.5 * torch.log(v) - both / 2 + eo**2 / 2 + torch.logaddexp(x / 2, -x / 2) - math.log(2)
    return torch.where(lik.centric, centric, acentric)


def llg(lik: Likelihood, frac: np.ndarray | torch.Tensor, b_iso: float = 20.0) -> np.ndarray:
    """(C,) the LLG of C placements frac (C, N, 3) (or one, (N, 3))."""
    frac = torch.as_tensor(frac, dtype=torch.float64)
    with torch.no_grad():
        return llg_terms(lik, frac[None] if frac.ndim == 2 else frac, b_iso).sum(-1).numpy()


def refine_likelihood(lik: Likelihood, xyz: np.ndarray, n_iter: int = 60, restraint_a: float = 0.03,
                      b_iso: float = 20.0) -> tuple[np.ndarray, float]:  # fmt: skip
    """Refine the coordinates (N, 3) Å of a placed model to the largest LLG, its distances below 2.7 Å restrained
    to their starting values (σ ``restraint_a`` Å). Returns the refined coordinates and their LLG."""
    pairs, d0 = restraint_pairs(xyz)
    pairs_t, d0_t = torch.as_tensor(pairs), torch.as_tensor(d0)
    frac_m = torch.as_tensor(lik.target.cell.frac)
    n = len(xyz)

    def loss(x: torch.Tensor) -> torch.Tensor:
        pos = x.reshape(n, 3)
        gain = llg_terms(lik, (pos @ frac_m.T)[None], b_iso).sum()
        dist = torch.linalg.vector_norm(pos[pairs_t[:, 0]] - pos[pairs_t[:, 1]], dim=1)
        return -gain + 0.5 * (((dist - d0_t) / restraint_a) ** 2).sum()

    x = lbfgs(loss, torch.as_tensor(xyz, dtype=torch.float64).reshape(-1), n_iter).detach().reshape(n, 3).numpy()
    return x, float(llg(lik, lik.target.cell.to_fractional(x), b_iso)[0])


def refine_rigid(lik: Likelihood, xyz: np.ndarray, n_iter: int = 30,
                 b_iso: float = 20.0) -> tuple[np.ndarray, np.ndarray]:  # fmt: skip
    """Refine C placements xyz (C, N, 3) Å of the model as rigid bodies (a rotation about each one's centre and a
    shift: 6 parameters each) to the largest LLG, all in one minimisation (their LLGs add). Returns the refined
    coordinates (C, N, 3) and their LLG (C,)."""
    x = torch.as_tensor(xyz, dtype=torch.float64)
    centre = x.mean(dim=1, keepdim=True)  # (C, 1, 3)
    arm = x - centre
    radius = max(float(arm.norm(dim=-1).max()), 1.0)  # Å: a unit rotation parameter moves the far atoms ~1 Å
    frac_m = torch.as_tensor(lik.target.cell.frac)

    def placed(p: torch.Tensor) -> torch.Tensor:
        p = p.reshape(len(x), 6)
        rot = torch.linalg.matrix_exp(skew(p[:, :3] / radius))  # (C, 3, 3)
        return arm @ rot.transpose(1, 2) + centre + p[:, None, 3:]

    start = torch.zeros(6 * len(x), dtype=torch.float64)
    p = lbfgs(lambda p: -llg_terms(lik, placed(p) @ frac_m.T, b_iso).sum(), start, n_iter)
    with torch.no_grad():
        out = placed(p)
        return out.numpy(), llg_terms(lik, out @ frac_m.T, b_iso).sum(-1).numpy()
