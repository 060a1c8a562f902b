"""Scores of Gaussian mixtures, Tweedie's formula and Langevin dynamics.

The *score* of a density :math:`p` is :math:`\\nabla_x \\log p(x)`, a vector field pointing
uphill in log-density. For an isotropic Gaussian mixture the score of every noised version is
known in closed form, which makes the mixture the book's test bench for score models and
samplers.

Noising conventions (both map a clean mixture to another isotropic mixture):

* VP, ``alpha_bar`` :math:`=\\bar\\alpha`: :math:`x_t = \\sqrt{\\bar\\alpha}\\,x_0 +
  \\sqrt{1-\\bar\\alpha}\\,\\varepsilon`, so component :math:`k` becomes
  :math:`\\mathcal{N}(\\sqrt{\\bar\\alpha}\\mu_k, (\\bar\\alpha s_k^2 + 1 - \\bar\\alpha) I)`.
* VE, ``sigma`` :math:`=\\sigma`: :math:`\\tilde x = x_0 + \\sigma\\varepsilon`, so component
  :math:`k` becomes :math:`\\mathcal{N}(\\mu_k, (s_k^2 + \\sigma^2) I)`.
* neither: the clean mixture itself.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch

from minilib._validate import float_tensor as _check_float

__all__ = [
    "annealed_langevin",
    "dsm_loss",
    "gmm_log_prob",
    "gmm_posterior_mean",
    "gmm_score",
    "langevin",
]


# ----------------------------------------------------------------------------------------------
# validation
# ----------------------------------------------------------------------------------------------
def _values_known(*ts: torch.Tensor) -> bool:
    # Value checks need real data; meta tensors only carry shapes.
    return all(t.device.type != "meta" for t in ts)


def _mixture(
    x: torch.Tensor, means: torch.Tensor, stds: torch.Tensor, weights: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Validate a mixture against ``x`` and return it in ``x``'s dtype and device."""
    for name, t in (("x", x), ("means", means), ("stds", stds), ("weights", weights)):
        _check_float(name, t)
    if x.dim() < 1:
        raise ValueError("x must have shape (..., D), got a 0-d tensor")
    if means.dim() != 2:
        raise ValueError(f"means must have shape (K, D), got {tuple(means.shape)}")
    k, d = means.shape
    if k == 0:
        raise ValueError("means must hold at least one component (K >= 1)")
    if x.shape[-1] != d:
        raise ValueError(f"x has last dimension {x.shape[-1]} but means has D = {d}")
    if stds.shape != (k,):
        raise ValueError(f"stds must have shape (K,) = ({k},), got {tuple(stds.shape)}")
    if weights.shape != (k,):
        raise ValueError(f"weights must have shape (K,) = ({k},), got {tuple(weights.shape)}")
    means, stds, weights = (t.to(device=x.device, dtype=x.dtype) for t in (means, stds, weights))
    if _values_known(stds, weights):
        if not bool((stds > 0).all()):
            raise ValueError("stds must be positive")
        if not bool((weights >= 0).all()):
            raise ValueError("weights must be non-negative")
        tol = max(1e-6, 1e3 * torch.finfo(weights.dtype).eps)
        total = float(weights.sum())
        if abs(total - 1.0) > tol:
            raise ValueError(f"weights must sum to 1, got {total:.6g}")
    return means, stds, weights


def _noise_level(
    x: torch.Tensor, alpha_bar: float | torch.Tensor | None, sigma: float | torch.Tensor | None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Return ``(scale, noise_var)``, each of shape ``(..., 1)`` broadcastable over components.

    The noised variable is ``scale * x0 + sqrt(noise_var) * eps``.
    """
    if alpha_bar is not None and sigma is not None:
        raise ValueError("give at most one of alpha_bar (VP) and sigma (VE), not both")
    batch = x.shape[:-1]

    def as_level(name: str, v: float | torch.Tensor) -> torch.Tensor:
        if isinstance(v, bool) or not isinstance(v, (int, float, torch.Tensor)):
            raise TypeError(f"{name} must be a float or a tensor, got {type(v).__name__}")
        if isinstance(v, torch.Tensor) and not v.is_floating_point():
            raise TypeError(f"{name} must be a floating-point tensor, got dtype {v.dtype}")
        t = torch.as_tensor(v, device=x.device, dtype=x.dtype)
        try:
            t = torch.broadcast_to(t, batch)
        except RuntimeError as err:
            raise ValueError(
                f"{name} of shape {tuple(t.shape)} does not broadcast to x's batch shape {tuple(batch)}"
            ) from err
        return t.unsqueeze(-1)  # (..., 1)

    if alpha_bar is not None:
        ab = as_level("alpha_bar", alpha_bar)
        if _values_known(ab) and not bool(((ab > 0) & (ab <= 1)).all()):
            raise ValueError("alpha_bar must lie in (0, 1]")
        return ab.sqrt(), 1.0 - ab
    if sigma is not None:
        s = as_level("sigma", sigma)
        if _values_known(s) and not bool((s >= 0).all()):
            raise ValueError("sigma must be non-negative")
        return torch.ones_like(s), s * s
    zero = torch.zeros(batch + (1,), device=x.device, dtype=x.dtype)
    return zero + 1.0, zero


def _components(
    x: torch.Tensor,
    means: torch.Tensor,
    stds: torch.Tensor,
    weights: torch.Tensor,
    alpha_bar: float | torch.Tensor | None,
    sigma: float | torch.Tensor | None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Noised component means ``(..., K, D)``, variances ``(..., K)``, log joint ``(..., K)``.

    Also returns the per-sample ``scale`` and ``noise_var`` (each ``(..., 1)``).
    """
    means, stds, weights = _mixture(x, means, stds, weights)
    scale, noise_var = _noise_level(x, alpha_bar, sigma)
    d = x.shape[-1]
    m = scale.unsqueeze(-1) * means  # (..., K, D): sqrt(alpha_bar) mu_k, or mu_k
    v = scale * scale * stds * stds + noise_var  # (..., K): noised component variances
    # Squared distance from the difference, not |x|^2 - 2 x.m + |m|^2, which cancels badly
    # far from the modes.
    sq = (x.unsqueeze(-2) - m).pow(2).sum(-1)  # (..., K)
    log_joint = weights.log() - 0.5 * d * torch.log(2 * math.pi * v) - 0.5 * sq / v  # (..., K)
    return m, v, log_joint, scale, noise_var


# ----------------------------------------------------------------------------------------------
# the mixture: density, score, posterior mean
# ----------------------------------------------------------------------------------------------
def gmm_log_prob(
    x: torch.Tensor,
    means: torch.Tensor,
    stds: torch.Tensor,
    weights: torch.Tensor,
    *,
    alpha_bar: float | torch.Tensor | None = None,
    sigma: float | torch.Tensor | None = None,
) -> torch.Tensor:
    """Log-density of an isotropic Gaussian mixture, clean or noised (VP or VE).

    Args:
        x: points, shape ``(..., D)``.
        means: component means :math:`\\mu_k`, shape ``(K, D)``.
        stds: isotropic component standard deviations :math:`s_k > 0`, shape ``(K,)``.
        weights: mixture weights :math:`\\pi_k \\ge 0` summing to 1, shape ``(K,)``.
        alpha_bar: VP noise level :math:`\\bar\\alpha \\in (0, 1]` (float, or a tensor that
            broadcasts to ``x.shape[:-1]``).
        sigma: VE noise level :math:`\\sigma \\ge 0` (same broadcasting). At most one of
            ``alpha_bar`` and ``sigma``; with neither, the clean mixture.

    Returns:
        :math:`\\log p(x)`, shape ``x.shape[:-1]``, computed with a log-sum-exp over components.

    Raises:
        TypeError: non-float tensors. ValueError: bad shapes, weights not summing to 1,
            non-positive stds, out-of-range noise levels, or both noise levels given.

    Implements (score-gmm-noised).

    >>> x = torch.zeros(1, 2)
    >>> lp = gmm_log_prob(x, torch.zeros(1, 2), torch.ones(1), torch.ones(1))
    >>> round(float(lp), 4) == round(-math.log(2 * math.pi), 4)
    True
    """
    _, _, log_joint, _, _ = _components(x, means, stds, weights, alpha_bar, sigma)
    return torch.logsumexp(log_joint, dim=-1)


def gmm_score(
    x: torch.Tensor,
    means: torch.Tensor,
    stds: torch.Tensor,
    weights: torch.Tensor,
    *,
    alpha_bar: float | torch.Tensor | None = None,
    sigma: float | torch.Tensor | None = None,
) -> torch.Tensor:
    """Exact score :math:`\\nabla_x \\log p(x)` of an isotropic Gaussian mixture, clean or noised.

    With noised component means :math:`m_k` and variances :math:`v_k` (see the module
    docstring), the score is :math:`\\sum_k r_k(x)\\,(m_k - x)/v_k`, where the
    responsibilities :math:`r_k = \\operatorname{softmax}_k(\\log \\pi_k + \\log
    \\mathcal{N}(x; m_k, v_k I))` are formed from log-densities, so the result stays finite
    and accurate far from every mode (e.g. ``|x| = 1e3``), where the densities themselves
    underflow to zero.

    Args:
        x: points, shape ``(..., D)``.
        means: component means, shape ``(K, D)``.
        stds: isotropic component standard deviations, shape ``(K,)``.
        weights: mixture weights summing to 1, shape ``(K,)``.
        alpha_bar: VP noise level in ``(0, 1]``, float or tensor broadcasting to
            ``x.shape[:-1]``: :math:`x_t = \\sqrt{\\bar\\alpha}x_0 + \\sqrt{1-\\bar\\alpha}\\varepsilon`.
        sigma: VE noise level :math:`\\ge 0`, same broadcasting: :math:`x_0 + \\sigma\\varepsilon`.
            Give at most one of the two; with neither, the clean mixture's score.

    Returns:
        The score, shape ``(..., D)``, in ``x``'s dtype and device.

    Raises:
        TypeError: non-float tensors or noise levels. ValueError: bad shapes, weights not
            summing to 1, non-positive stds, out-of-range noise levels, or both levels given.

    Implements (score-gmm-score).

    >>> mu, s, w = torch.zeros(1, 2), torch.ones(1), torch.ones(1)
    >>> gmm_score(torch.tensor([[2.0, -1.0]]), mu, s, w, sigma=1.0)  # -x / (1 + 1)
    tensor([[-1.0000,  0.5000]])
    """
    m, v, log_joint, _, _ = _components(x, means, stds, weights, alpha_bar, sigma)
    r = torch.softmax(log_joint, dim=-1)  # (..., K) responsibilities
    return ((r / v).unsqueeze(-1) * (m - x.unsqueeze(-2))).sum(-2)


def gmm_posterior_mean(
    x: torch.Tensor,
    means: torch.Tensor,
    stds: torch.Tensor,
    weights: torch.Tensor,
    *,
    alpha_bar: float | torch.Tensor | None = None,
    sigma: float | torch.Tensor | None = None,
) -> torch.Tensor:
    """Posterior mean :math:`\\mathbb{E}[x_0 \\mid x]` of the clean point given a noised one.

    Computed directly, component by component (Gaussian conjugacy), *without* the score:
    :math:`\\mathbb{E}[x_0\\mid x] = \\sum_k r_k(x)\\,\\big(\\mu_k + \\frac{a s_k^2}{v_k}(x - a\\mu_k)\\big)`
    with scale :math:`a` (:math:`\\sqrt{\\bar\\alpha}` or 1) and :math:`v_k = a^2 s_k^2 +`
    noise variance. Tweedie's formula gives the same vector from the score; the tests and the
    lab check one against the other. For the VE case this is the ideal denoiser
    :math:`D(x;\\sigma)` of the EDM chapter.

    Args:
        x: noised points, shape ``(..., D)``.
        means: clean component means, shape ``(K, D)``.
        stds: clean component standard deviations, shape ``(K,)``.
        weights: mixture weights summing to 1, shape ``(K,)``.
        alpha_bar: VP noise level (see :func:`gmm_score`).
        sigma: VE noise level (see :func:`gmm_score`).

    Returns:
        Shape ``(..., D)``.

    Raises:
        TypeError, ValueError: as :func:`gmm_score`.

    Implements (score-gmm-posterior).
    """
    m, v, log_joint, scale, _ = _components(x, means, stds, weights, alpha_bar, sigma)
    r = torch.softmax(log_joint, dim=-1)  # (..., K)
    stds = stds.to(device=x.device, dtype=x.dtype)
    gain = scale * stds * stds / v  # (..., K): a s_k^2 / v_k
    means = means.to(device=x.device, dtype=x.dtype)
    post = means + gain.unsqueeze(-1) * (x.unsqueeze(-2) - m)  # (..., K, D)
    return (r.unsqueeze(-1) * post).sum(-2)


# ----------------------------------------------------------------------------------------------
# learning a score, and sampling with one
# ----------------------------------------------------------------------------------------------
def dsm_loss(
    score_model: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    x0: torch.Tensor,
    sigma: torch.Tensor,
    noise: torch.Tensor,
) -> torch.Tensor:
    """Denoising score matching loss with the :math:`\\lambda(\\sigma) = \\sigma^2` weighting.

    Perturbs :math:`\\tilde x = x_0 + \\sigma\\varepsilon`, whose conditional score is
    :math:`-\\varepsilon/\\sigma`, and returns the batch mean of
    :math:`\\sigma^2\\lVert s_\\theta(\\tilde x, \\sigma) + \\varepsilon/\\sigma\\rVert^2
    = \\lVert \\sigma s_\\theta(\\tilde x,\\sigma) + \\varepsilon\\rVert^2`.

    Args:
        score_model: ``score_model(x_noisy, sigma)`` with ``x_noisy`` ``(B, D)`` and ``sigma``
            ``(B,)``, returning ``(B, D)``.
        x0: clean data, shape ``(B, D)``.
        sigma: per-sample noise levels ``> 0``, shape ``(B,)``.
        noise: standard normal draws, shape ``(B, D)``.

    Returns:
        A scalar tensor.

    Raises:
        TypeError: non-float inputs. ValueError: mismatched shapes.

    Implements (score-dsm-weighted).
    """
    for name, t in (("x0", x0), ("sigma", sigma), ("noise", noise)):
        _check_float(name, t)
    if x0.dim() != 2 or noise.shape != x0.shape:
        raise ValueError(f"x0 and noise must both have shape (B, D), got {tuple(x0.shape)} and {tuple(noise.shape)}")
    if sigma.shape != x0.shape[:1]:
        raise ValueError(f"sigma must have shape (B,) = ({x0.shape[0]},), got {tuple(sigma.shape)}")
    x_noisy = x0 + sigma[:, None] * noise
    residual = sigma[:, None] * score_model(x_noisy, sigma) + noise  # (B, D)
    return residual.pow(2).sum(-1).mean()


def _check_steps(x: torch.Tensor, step_size: float, n_steps: int) -> None:
    _check_float("x", x)
    if isinstance(step_size, bool) or not isinstance(step_size, (int, float)) or not step_size > 0:
        raise ValueError(f"step_size must be a positive float, got {step_size!r}")
    if isinstance(n_steps, bool) or not isinstance(n_steps, int) or n_steps < 0:
        raise ValueError(f"n_steps must be a non-negative int, got {n_steps!r}")


def langevin(
    score_fn: Callable[[torch.Tensor], torch.Tensor],
    x: torch.Tensor,
    step_size: float,
    n_steps: int,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Unadjusted Langevin dynamics: ``n_steps`` of :math:`x \\leftarrow x + \\epsilon\\,s(x) + \\sqrt{2\\epsilon}\\,z`.

    This is the Euler–Maruyama discretisation, with time step :math:`\\epsilon`, of
    :math:`dx = \\nabla\\log p(x)\\,dt + \\sqrt{2}\\,dW`, whose stationary law is :math:`p`.
    (Song and Ermon write the same step with :math:`\\alpha = 2\\epsilon`.)

    Args:
        score_fn: maps ``(..., D)`` points to their scores ``(..., D)``.
        x: starting points, shape ``(..., D)``; not modified.
        step_size: :math:`\\epsilon > 0`.
        n_steps: number of steps, ``>= 0``.
        generator: optional ``torch.Generator`` (on ``x``'s device) for the noise.

    Returns:
        The final points, shape ``(..., D)``.

    Raises:
        TypeError: non-float ``x``. ValueError: non-positive ``step_size``, negative ``n_steps``,
            or a score of the wrong shape.

    Implements (score-langevin).

    >>> g = torch.Generator().manual_seed(0)
    >>> x = langevin(lambda x: -x, torch.zeros(4000, 1), 0.05, 200, generator=g)
    >>> abs(float(x.var()) - 1.0) < 0.1  # N(0, 1) is stationary (up to O(step) bias)
    True
    """
    _check_steps(x, step_size, n_steps)
    noise_scale = math.sqrt(2.0 * step_size)
    for _ in range(n_steps):
        s = score_fn(x)
        if s.shape != x.shape:
            raise ValueError(f"score_fn returned shape {tuple(s.shape)}, expected {tuple(x.shape)}")
        z = torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)
        x = x + step_size * s + noise_scale * z
    return x


def annealed_langevin(
    score_fn: Callable[[torch.Tensor, float], torch.Tensor],
    x: torch.Tensor,
    sigmas: torch.Tensor,
    step_size: float,
    n_steps_each: int,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Annealed Langevin dynamics over decreasing noise levels (Song and Ermon, 2019).

    At level :math:`\\sigma_i` run :func:`langevin` on the score of the :math:`\\sigma_i`-noised
    density with step :math:`\\epsilon_i = \\epsilon\\,\\sigma_i^2/\\sigma_L^2`, where
    :math:`\\sigma_L` is the last (smallest) level, so that the signal-to-noise ratio of each
    step stays the same across levels.

    Args:
        score_fn: ``score_fn(x, sigma)`` with ``x`` ``(..., D)`` and a float ``sigma``.
        x: starting points, shape ``(..., D)`` (typically :math:`\\mathcal{N}(0, \\sigma_1^2 I)`).
        sigmas: strictly decreasing positive noise levels, shape ``(L,)``.
        step_size: :math:`\\epsilon > 0`, the step at the smallest level.
        n_steps_each: Langevin steps per level.
        generator: optional ``torch.Generator`` for the noise.

    Returns:
        The final points, shape ``(..., D)``.

    Raises:
        TypeError: non-float tensors. ValueError: ``sigmas`` not 1-D, not positive or not
            strictly decreasing, or bad step arguments.

    Implements (score-annealed).
    """
    _check_steps(x, step_size, n_steps_each)
    _check_float("sigmas", sigmas)
    if sigmas.dim() != 1 or sigmas.numel() == 0:
        raise ValueError(f"sigmas must be a non-empty 1-D tensor, got shape {tuple(sigmas.shape)}")
    levels = [float(s) for s in sigmas]
    if min(levels) <= 0 or any(b >= a for a, b in zip(levels, levels[1:])):
        raise ValueError("sigmas must be positive and strictly decreasing")
    for sigma in levels:
        eps_i = step_size * (sigma / levels[-1]) ** 2
        x = langevin(lambda y, s=sigma: score_fn(y, s), x, eps_i, n_steps_each, generator=generator)
    return x
