"""Scaling laws and learning-rate schedules for training language models.

Used by the chapter "How a Llama is trained" (``book/llm/training-recipe.md``):

* :func:`transformer_flops`: the training-compute estimate :math:`C \\approx 6ND`.
* :class:`ScalingLaw` and :func:`fit_scaling_law`: the parametric loss
  :math:`L(N, D) = E + A/N^\\alpha + B/D^\\beta`, fitted as in the third approach of Hoffmann
  et al. (2022): a Huber loss on log-loss, the prediction written as a log-sum-exp, L-BFGS
  started from the best points of a grid.
* :func:`compute_optimal`: the closed-form minimiser of the law under :math:`6ND = C`.
* :func:`warmup_cosine`: linear warm-up then cosine decay of the learning rate.

Conventions: :math:`N` counts parameters, :math:`D` training tokens, losses are in nats per
token, logarithms are natural.

>>> law = ScalingLaw(E=1.0, A=400.0, B=400.0, alpha=0.34, beta=0.28)
>>> N, D = compute_optimal(1e21, law)
>>> round(transformer_flops(N, D) / 1e21, 6)
1.0
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass

import torch

__all__ = ["ScalingLaw", "compute_optimal", "fit_scaling_law", "transformer_flops", "warmup_cosine"]


def _is_number(x: object) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool)


def _positive(x: object, name: str) -> float:
    if not _is_number(x) or not math.isfinite(x) or x <= 0:
        raise ValueError(f"{name} must be a positive finite number, got {x!r}")
    return float(x)


def transformer_flops(n_params: float, n_tokens: float) -> float:
    """Training compute of a dense Transformer, :math:`C = 6ND` floating-point operations.

    Implements (scaling-flops): 2 FLOPs per parameter per token for the forward pass (one
    multiply, one add) and 4 for the backward pass (gradients with respect to the
    activations and to the weights). The attention context term of (scaling-flops-attn),
    :math:`12 n_{layer} T d` per token for the full :math:`T \\times T` score matrix (scores and
    weighted values over a context of length :math:`T`), is left out.

    Args:
        n_params: :math:`N`, the number of parameters (> 0).
        n_tokens: :math:`D`, the number of training tokens (> 0).

    Returns:
        :math:`6ND` as a float.

    >>> transformer_flops(70e9, 1.4e12)  # Chinchilla: about 5.9e23 FLOPs
    5.88e+23
    """
    return 6.0 * _positive(n_params, "n_params") * _positive(n_tokens, "n_tokens")


@dataclass(frozen=True)
class ScalingLaw:
    """The parametric loss :math:`L(N, D) = E + A N^{-\\alpha} + B D^{-\\beta}`. Implements (scaling-law).

    Attributes:
        E: irreducible loss (the entropy of the data), nats per token.
        A, B: scales of the model-size and data terms (> 0).
        alpha, beta: their exponents (> 0).
    """

    E: float
    A: float
    B: float
    alpha: float
    beta: float

    def __post_init__(self) -> None:
        for name in ("E", "A", "B", "alpha", "beta"):
            v = getattr(self, name)
            if not _is_number(v) or not math.isfinite(v):
                raise ValueError(f"ScalingLaw.{name} must be a finite number, got {v!r}")
        for name in ("A", "B", "alpha", "beta"):
            if getattr(self, name) <= 0:
                raise ValueError(f"ScalingLaw.{name} must be > 0, got {getattr(self, name)!r}")

    def __call__(self, n_params: float, n_tokens: float) -> float:
        """The predicted loss :math:`L(N, D)`."""
        N = _positive(n_params, "n_params")
        D = _positive(n_tokens, "n_tokens")
        return self.E + self.A * N ** (-self.alpha) + self.B * D ** (-self.beta)


def _huber(r: torch.Tensor, delta: float) -> torch.Tensor:
    a = r.abs()
    return torch.where(a <= delta, 0.5 * r**2, delta * (a - 0.5 * delta))


def _objective(theta: torch.Tensor, logN: torch.Tensor, logD: torch.Tensor, logL: torch.Tensor,
               delta: float) -> torch.Tensor:
    """Huber loss of the LSE prediction, eq. (scaling-fit); ``theta`` is ``(..., 5)`` = (a, b, e, alpha, beta)."""
    a, b, e, al, be = theta.unbind(-1)
    terms = torch.stack(
        [a[..., None] - al[..., None] * logN, b[..., None] - be[..., None] * logD,
         e[..., None].expand(*e.shape, logN.shape[0])], dim=-1)  # (..., n, 3)
    pred = torch.logsumexp(terms, dim=-1)  # (..., n)
    return _huber(pred - logL, delta).sum(-1)


def _lbfgs(init: torch.Tensor, logN: torch.Tensor, logD: torch.Tensor, logL: torch.Tensor,
           delta: float) -> tuple[torch.Tensor, float]:
    """Minimise (scaling-fit) with L-BFGS from ``init``; returns the end point and its objective."""
    theta = init.clone().requires_grad_(True)
    opt = torch.optim.LBFGS([theta], lr=1.0, max_iter=200, tolerance_grad=1e-14,
                            tolerance_change=1e-16, history_size=20, line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        opt.zero_grad()
        value = _objective(theta, logN, logD, logL, delta)
        value.backward()
        return value

    val = math.inf
    for _ in range(4):  # restarting L-BFGS's memory helps on flat valleys; stop when stuck
        opt.step(closure)
        with torch.no_grad():
            new_val = float(_objective(theta, logN, logD, logL, delta))
        if not new_val < val - 1e-12 * abs(val):
            val = min(val, new_val)
            break
        val = new_val
    return theta.detach().clone(), val


def _as_1d(x: object, name: str) -> torch.Tensor:
    try:
        t = torch.as_tensor(x, dtype=torch.float64).flatten()
    except (TypeError, ValueError, RuntimeError) as err:
        raise TypeError(f"{name} must be a sequence of numbers or a tensor, got {type(x).__name__}") from err
    if not bool(torch.isfinite(t).all()) or not bool((t > 0).all()):
        raise ValueError(f"{name} must contain positive finite numbers")
    return t


def fit_scaling_law(n_params: object, n_tokens: object, losses: object, *, delta: float = 1e-3,
                    n_starts: int = 4) -> ScalingLaw:
    """Fit :math:`L(N, D) = E + A/N^\\alpha + B/D^\\beta` to observed final losses.

    Implements (scaling-fit), the third approach of Hoffmann et al. (2022). With
    :math:`A = e^a`, :math:`B = e^b`, :math:`E = e^e` the prediction is a log-sum-exp,
    :math:`\\log\\hat L = \\mathrm{LSE}(a - \\alpha\\log N,\\ b - \\beta\\log D,\\ e)`, and the fit
    minimises :math:`\\sum_i \\mathrm{Huber}_\\delta(\\log\\hat L_i - \\log L_i)` over
    :math:`(a, b, e, \\alpha, \\beta)`. The objective is not convex, so it is evaluated on a grid
    of initialisations (the paper's grid: :math:`\\alpha, \\beta \\in \\{0, 0.5, \\dots, 2\\}`,
    :math:`e \\in \\{-1, -0.5, \\dots, 1\\}`, :math:`a, b \\in \\{0, 5, \\dots, 25\\}`), and L-BFGS runs from
    the ``n_starts`` best grid points; the best end point wins. Since :math:`E = e^e > 0`, the
    fitted irreducible loss is always positive.

    Args:
        n_params: ``(n,)`` parameter counts :math:`N_i`.
        n_tokens: ``(n,)`` token counts :math:`D_i`.
        losses: ``(n,)`` final losses :math:`L_i` (nats, > 0).
        delta: the Huber threshold on log-loss residuals (the paper's :math:`10^{-3}`).
        n_starts: how many of the best grid points L-BFGS starts from.

    Returns:
        The fitted :class:`ScalingLaw`.

    Raises:
        TypeError: if an input is not numeric.
        ValueError: on mismatched lengths, fewer than 5 points, or non-positive values.
    """
    N = _as_1d(n_params, "n_params")
    D = _as_1d(n_tokens, "n_tokens")
    L = _as_1d(losses, "losses")
    if not (N.shape == D.shape == L.shape):
        raise ValueError(f"n_params, n_tokens and losses must have the same length, got "
                         f"{N.numel()}, {D.numel()} and {L.numel()}")
    if N.numel() < 5:
        raise ValueError(f"need at least 5 points to fit 5 parameters, got {N.numel()}")
    _positive(delta, "delta")
    if not isinstance(n_starts, int) or isinstance(n_starts, bool) or n_starts < 1:
        raise ValueError(f"n_starts must be an int >= 1, got {n_starts!r}")
    logN, logD, logL = N.log(), D.log(), L.log()
    # the grid of initialisations, all evaluated at once: (G, 5) = (a, b, e, alpha, beta)
    ab = [0.0, 5.0, 10.0, 15.0, 20.0, 25.0]
    ee = [-1.0, -0.5, 0.0, 0.5, 1.0]
    ex = [0.0, 0.5, 1.0, 1.5, 2.0]
    grid = torch.tensor(list(itertools.product(ab, ab, ee, ex, ex)), dtype=torch.float64)
    start_losses = _objective(grid, logN, logD, logL, delta)
    starts = grid[start_losses.argsort()[: min(n_starts, grid.shape[0])]]
    best, best_val = None, math.inf
    for init in starts:
        theta, val = _lbfgs(init, logN, logD, logL, delta)
        if math.isfinite(val) and val < best_val and bool(theta[3] > 0) and bool(theta[4] > 0):
            best, best_val = theta, val
    if best is None:
        raise ValueError("the fit failed: no start converged to positive exponents")
    a, b, e, al, be = (float(v) for v in best)
    return ScalingLaw(E=math.exp(e), A=math.exp(a), B=math.exp(b), alpha=al, beta=be)


def compute_optimal(compute: float, law: ScalingLaw) -> tuple[float, float]:
    """The model size and token count that minimise ``law`` at fixed compute :math:`6ND = C`.

    Implements (scaling-optimal): with :math:`G = (\\alpha A / (\\beta B))^{1/(\\alpha+\\beta)}`,

    .. math:: N_{opt} = G\\,(C/6)^{\\beta/(\\alpha+\\beta)}, \\qquad D_{opt} = G^{-1}(C/6)^{\\alpha/(\\alpha+\\beta)} .

    Args:
        compute: :math:`C` in FLOPs (> 0).
        law: a :class:`ScalingLaw`.

    Returns:
        ``(N_opt, D_opt)`` as floats, with ``6 * N_opt * D_opt == C`` up to rounding.

    >>> law = ScalingLaw(E=1.69, A=406.4, B=410.7, alpha=0.34, beta=0.28)
    >>> N, D = compute_optimal(5.88e23, law)
    >>> f"{N:.1e} {D:.1e}"
    '3.2e+10 3.0e+12'
    """
    C = _positive(compute, "compute")
    if not isinstance(law, ScalingLaw):
        raise TypeError(f"law must be a ScalingLaw, got {type(law).__name__}")
    s = law.alpha + law.beta
    G = (law.alpha * law.A / (law.beta * law.B)) ** (1.0 / s)
    n_opt = G * (C / 6.0) ** (law.beta / s)
    d_opt = (C / 6.0) ** (law.alpha / s) / G
    return n_opt, d_opt


def warmup_cosine(step: float, total_steps: int, warmup_steps: int, peak_lr: float,
                  min_lr: float = 0.0) -> float:
    """Learning rate at ``step``: linear warm-up to ``peak_lr``, then cosine decay to ``min_lr``.

    Implements (scaling-schedule). With :math:`W` warm-up steps and :math:`S` steps in all,

    * :math:`0 \\le s \\le W`: :math:`\\eta(s) = \\eta_{max}\\, s / W`,
    * :math:`W \\le s \\le S`: :math:`\\eta(s) = \\eta_{min} + \\tfrac12(\\eta_{max} - \\eta_{min})(1 + \\cos(\\pi (s - W)/(S - W)))`.

    So :math:`\\eta(0) = 0` (or :math:`\\eta_{max}` when :math:`W = 0`), :math:`\\eta(W) = \\eta_{max}` and
    :math:`\\eta(S) = \\eta_{min}`. A training loop doing update :math:`i = 0, \\dots, S - 1` uses
    ``warmup_cosine(i + 1, S, W, ...)``, so no update is wasted at rate 0.

    Args:
        step: :math:`s \\in [0, S]` (int or float).
        total_steps: :math:`S \\ge 1`.
        warmup_steps: :math:`W \\in [0, S]`.
        peak_lr: :math:`\\eta_{max} > 0`.
        min_lr: :math:`\\eta_{min} \\in [0, \\eta_{max}]`.

    Returns:
        The learning rate as a float.

    >>> [round(warmup_cosine(s, 10, 2, 1.0, 0.1), 3) for s in (0, 1, 2, 6, 10)]
    [0.0, 0.5, 1.0, 0.55, 0.1]
    """
    if not isinstance(total_steps, int) or isinstance(total_steps, bool) or total_steps < 1:
        raise ValueError(f"total_steps must be an int >= 1, got {total_steps!r}")
    if not isinstance(warmup_steps, int) or isinstance(warmup_steps, bool) or not 0 <= warmup_steps <= total_steps:
        raise ValueError(f"warmup_steps must be an int in [0, total_steps={total_steps}], got {warmup_steps!r}")
    if not _is_number(step) or not 0 <= step <= total_steps:
        raise ValueError(f"step must be a number in [0, total_steps={total_steps}], got {step!r}")
    peak = _positive(peak_lr, "peak_lr")
    if not _is_number(min_lr) or not 0 <= min_lr <= peak:
        raise ValueError(f"min_lr must be a number in [0, peak_lr={peak}], got {min_lr!r}")
    if step < warmup_steps:
        return peak * step / warmup_steps
    if warmup_steps == total_steps:  # all warm-up, no decay
        return peak
    progress = (step - warmup_steps) / (total_steps - warmup_steps)
    return float(min_lr) + 0.5 * (peak - float(min_lr)) * (1.0 + math.cos(math.pi * progress))
