"""A small L-BFGS minimiser for smooth least-squares problems (atom and rigid-body refinement).

``torch.optim.LBFGS`` would do, but creating any ``torch.optim`` optimiser imports ``torch._dynamo`` (1.3 s on the
reference machine, a fifth of a small structure's whole solve), so the few lines are written out here: the
two-loop recursion (Nocedal & Wright 2006, algorithm 7.4) with a bisection line search for the weak Wolfe
conditions (Lewis & Overton 2013): halve the step while it does not lower f enough, double it while the slope is
still steep.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch

ARMIJO = 1e-4  # sufficient decrease: f(x + t d) ≤ f(x) + ARMIJO · t · g·d
CURVATURE = 0.9  # the slope must have flattened: g(x + t d)·d ≥ CURVATURE · g·d
HISTORY = 10  # correction pairs kept


def _value_and_grad(f: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor) -> tuple[float, torch.Tensor]:
    x = x.detach().requires_grad_(True)
    loss = f(x)
    (grad,) = torch.autograd.grad(loss, x)
    return float(loss.detach()), grad


def _direction(g: torch.Tensor, pairs: list[tuple[torch.Tensor, torch.Tensor, float]]) -> torch.Tensor:
    """−H g by the two-loop recursion over the (s, y, 1/y·s) pairs, oldest first; H₀ = s·y / y·y of the newest."""
    q, alphas = -g.clone(), []
    for s, y, rho in reversed(pairs):
        a = rho * float(s @ q)
        q -= a * y
        alphas.append(a)
    if pairs:
        s, y, _ = pairs[-1]
        q *= float(s @ y) / float(y @ y)
    for (s, y, rho), a in zip(pairs, reversed(alphas), strict=True):
        q += (a - rho * float(y @ q)) * s
    return q


def _line_search(f, x: torch.Tensor, d: torch.Tensor, start: tuple[float, float, float], budget: int):
    """A step t along d meeting the weak Wolfe conditions, by bisection and doubling; start = (f(x), g·d, first t).
    Returns (t, f, gradient, evaluations used); within ``budget`` evaluations the last point tried."""
    loss, slope, t = start
    lo, hi, used = 0.0, float("inf"), 0
    while True:
        new_loss, new_g = _value_and_grad(f, x + t * d)
        used += 1
        if new_loss > loss + ARMIJO * t * slope:
            hi = t
        elif float(new_g @ d) < CURVATURE * slope:
            lo = t
        else:
            break
        if used >= budget:
            break
        t = 0.5 * (lo + hi) if math.isfinite(hi) else 2.0 * lo
    return t, new_loss, new_g, used


def lbfgs(
    f: Callable[[torch.Tensor], torch.Tensor], x0: torch.Tensor, max_iter: int, tolerance: float = 1e-10
) -> torch.Tensor:
    """Minimise a scalar function of one flat tensor.

    Parameters
    ----------
    f : maps x (N,) to a scalar tensor, differentiably.
    x0 : (N,) the start (float64 recommended).
    max_iter : iterations; at most 1.25 × as many evaluations of ``f``.
    tolerance : stop when a step lowers f by less than this fraction of it.

    Returns
    -------
    (N,) the best point found (detached).
    """
    x = x0.detach().clone()
    loss, g = _value_and_grad(f, x)
    pairs: list[tuple[torch.Tensor, torch.Tensor, float]] = []
    evals, max_eval = 1, max(1, int(1.25 * max_iter))
    for _ in range(max_iter):
        d = _direction(g, pairs)
        slope = float(g @ d)
        if slope >= 0:  # not a descent direction (a poor curvature pair): restart from steepest descent
            pairs, d = [], -g
            slope = float(g @ d)
        if slope == 0 or evals >= max_eval:
            break
        t = 1.0 if pairs else min(1.0, 1.0 / float(g.abs().sum()))
        t, new_loss, new_g, used = _line_search(f, x, d, (loss, slope, t), max_eval - evals)
        evals += used
        if not new_loss < loss:
            break
        s, y = t * d, new_g - g
        if float(s @ y) > 1e-12:
            pairs = [*pairs[-(HISTORY - 1) :], (s, y, 1.0 / float(s @ y))]
        done = loss - new_loss < tolerance * max(abs(loss), 1e-30)
        x, loss, g = x + s, new_loss, new_g
        if done:
            break
    return x.detach()
