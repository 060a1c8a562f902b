"""Continuous-time diffusion: VP and VE SDEs, reverse-SDE and probability-flow ODE samplers,
and the PF-ODE log-likelihood.

Time runs forward from data at ``t = 0`` to noise at ``t = 1``. A forward SDE
:math:`dx = f(x, t)\\,dt + g(t)\\,dW` has Gaussian transition kernels of the form
:math:`x_t = a(t)\\,x_0 + n(t)\\,\\varepsilon`, and :meth:`VPSDE.marginal` /
:meth:`VESDE.marginal` return the pair :math:`(a(t), n(t))`. Samplers integrate from
``t = 1`` down to a small ``t_end > 0`` (the score blows up at ``t = 0`` for data on thin
sets), with a uniform time grid.

A ``score_fn(x, t)`` takes ``x`` of shape ``(B, D)`` and a float ``t`` and returns
:math:`\\nabla_x \\log p_t(x)` of shape ``(B, D)``.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch

__all__ = [
    "VESDE",
    "VPSDE",
    "langevin_corrector",
    "pf_ode_log_likelihood",
    "pf_ode_sample",
    "pf_velocity",
    "predictor_corrector_sample",
    "reverse_sde_sample",
    "reverse_step",
]

ScoreFn = Callable[[torch.Tensor, float], torch.Tensor]


def _check_time(t: float, name: str = "t") -> float:
    if isinstance(t, bool) or not isinstance(t, (int, float)):
        raise TypeError(f"{name} must be a float, got {type(t).__name__}")
    if not 0.0 <= t <= 1.0:
        raise ValueError(f"{name} must lie in [0, 1], got {t}")
    return float(t)


@dataclass(frozen=True)
class VPSDE:
    """The variance-preserving SDE :math:`dx = -\\tfrac12\\beta(t)\\,x\\,dt + \\sqrt{\\beta(t)}\\,dW`.

    With :math:`\\beta(t) = \\beta_{\\min} + t(\\beta_{\\max} - \\beta_{\\min})` on ``[0, 1]`` it is the
    limit of the discrete DDPM chain with ``T`` steps and ``betas`` linear from
    :math:`\\beta_{\\min}/T` to :math:`\\beta_{\\max}/T` (the defaults 0.1 and 20 match the linear
    schedule 1e-4 to 0.02 at ``T = 1000``).

    Implements (sde-vp) and (sde-vp-marginal).

    >>> sde = VPSDE()
    >>> a, n = sde.marginal(1.0)
    >>> round(a ** 2 + n ** 2, 12), a < 0.01
    (1.0, True)
    """

    beta_min: float = 0.1
    beta_max: float = 20.0

    def __post_init__(self) -> None:
        if not (0 < self.beta_min < self.beta_max):
            raise ValueError(f"need 0 < beta_min < beta_max, got {self.beta_min}, {self.beta_max}")

    def beta(self, t: float) -> float:
        """:math:`\\beta(t)`."""
        return self.beta_min + _check_time(t) * (self.beta_max - self.beta_min)

    def alpha_bar(self, t: float) -> float:
        """:math:`\\bar\\alpha(t) = \\exp(-\\int_0^t \\beta(s)\\,ds)`."""
        t = _check_time(t)
        return math.exp(-(self.beta_min * t + 0.5 * (self.beta_max - self.beta_min) * t * t))

    def marginal(self, t: float) -> tuple[float, float]:
        """:math:`(a(t), n(t)) = (\\sqrt{\\bar\\alpha(t)}, \\sqrt{1 - \\bar\\alpha(t)})`."""
        ab = self.alpha_bar(t)
        return math.sqrt(ab), math.sqrt(-math.expm1(math.log(ab)))

    def drift(self, x: torch.Tensor, t: float) -> torch.Tensor:
        """:math:`f(x, t) = -\\tfrac12\\beta(t)\\,x`, shape of ``x``."""
        return -0.5 * self.beta(t) * x

    def diffusion(self, t: float) -> float:
        """:math:`g(t) = \\sqrt{\\beta(t)}`."""
        return math.sqrt(self.beta(t))

    def noise_kwargs(self, t: float) -> dict[str, float]:
        """Keyword arguments for :func:`minilib.score.gmm_score` at time ``t``: ``alpha_bar``."""
        return {"alpha_bar": self.alpha_bar(t)}


@dataclass(frozen=True)
class VESDE:
    """The variance-exploding SDE :math:`dx = \\sqrt{d[\\sigma^2(t)]/dt}\\,dW`, no drift.

    With the geometric :math:`\\sigma(t) = \\sigma_{\\min}(\\sigma_{\\max}/\\sigma_{\\min})^t`,
    :math:`g(t) = \\sigma(t)\\sqrt{2\\ln(\\sigma_{\\max}/\\sigma_{\\min})}`. Started from the data at
    ``t = 0``, the kernel is :math:`x_t = x_0 + n(t)\\varepsilon` with the *exact*
    :math:`n(t)^2 = \\sigma(t)^2 - \\sigma_{\\min}^2` (Song et al. use :math:`\\sigma(t)`, which
    differs by :math:`\\sigma_{\\min}^2`).

    Implements (sde-ve) and (sde-ve-marginal).

    >>> VESDE(0.01, 10.0).marginal(0.0)
    (1.0, 0.0)
    """

    sigma_min: float = 0.01
    sigma_max: float = 10.0

    def __post_init__(self) -> None:
        if not (0 < self.sigma_min < self.sigma_max):
            raise ValueError(f"need 0 < sigma_min < sigma_max, got {self.sigma_min}, {self.sigma_max}")

    def sigma(self, t: float) -> float:
        """:math:`\\sigma(t) = \\sigma_{\\min}(\\sigma_{\\max}/\\sigma_{\\min})^t`."""
        return self.sigma_min * (self.sigma_max / self.sigma_min) ** _check_time(t)

    def marginal(self, t: float) -> tuple[float, float]:
        """:math:`(a(t), n(t)) = (1, \\sqrt{\\sigma(t)^2 - \\sigma_{\\min}^2})`."""
        s = self.sigma(t)
        return 1.0, math.sqrt(max(s * s - self.sigma_min**2, 0.0))

    def drift(self, x: torch.Tensor, t: float) -> torch.Tensor:
        """:math:`f = 0`."""
        _check_time(t)
        return torch.zeros_like(x)

    def diffusion(self, t: float) -> float:
        """:math:`g(t) = \\sigma(t)\\sqrt{2\\ln(\\sigma_{\\max}/\\sigma_{\\min})}`."""
        return self.sigma(t) * math.sqrt(2.0 * math.log(self.sigma_max / self.sigma_min))

    def noise_kwargs(self, t: float) -> dict[str, float]:
        """Keyword arguments for :func:`minilib.score.gmm_score` at time ``t``: ``sigma``."""
        return {"sigma": self.marginal(t)[1]}


SDE = VPSDE | VESDE


def _check_sde_and_x(sde: SDE, x: torch.Tensor) -> None:
    if not isinstance(sde, (VPSDE, VESDE)):
        raise TypeError(f"sde must be a VPSDE or VESDE, got {type(sde).__name__}")
    if not isinstance(x, torch.Tensor) or not x.is_floating_point():
        raise TypeError("x must be a floating-point torch.Tensor")
    if x.dim() != 2:
        raise ValueError(f"x must have shape (B, D), got {tuple(x.shape)}")


def _check_sampler_args(sde: SDE, x: torch.Tensor, n_steps: int, t_end: float) -> None:
    _check_sde_and_x(sde, x)
    if isinstance(n_steps, bool) or not isinstance(n_steps, int) or n_steps < 1:
        raise ValueError(f"n_steps must be a positive int, got {n_steps!r}")
    if isinstance(t_end, bool) or not isinstance(t_end, (int, float)) or not 0 < t_end < 1:
        raise ValueError(f"t_end must lie in (0, 1), got {t_end!r}")


def _score(score_fn: ScoreFn, x: torch.Tensor, t: float) -> torch.Tensor:
    s = score_fn(x, t)
    if s.shape != x.shape:
        raise ValueError(f"score_fn returned shape {tuple(s.shape)}, expected {tuple(x.shape)}")
    return s


def pf_velocity(sde: SDE, score_fn: ScoreFn, x: torch.Tensor, t: float) -> torch.Tensor:
    """The probability-flow velocity :math:`f(x,t) - \\tfrac12 g(t)^2\\,\\nabla_x\\log p_t(x)`.

    Implements (sde-pf-ode).
    """
    g = sde.diffusion(t)
    return sde.drift(x, t) - 0.5 * g * g * _score(score_fn, x, t)


def reverse_sde_sample(
    sde: SDE,
    score_fn: ScoreFn,
    x: torch.Tensor,
    n_steps: int,
    *,
    t_end: float = 1e-3,
    generator: torch.Generator | None = None,
    return_path: bool = False,
) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """Euler–Maruyama on the reverse-time SDE, from ``t = 1`` down to ``t_end``.

    Each step, with :math:`h = t_i - t_{i+1} > 0`, is
    :math:`x \\leftarrow x - [f(x, t_i) - g(t_i)^2 s(x, t_i)]\\,h + g(t_i)\\sqrt{h}\\,z`.
    The last step adds no noise (its noise would be of size :math:`g\\sqrt{h}`, pure blur).

    Args:
        sde: a :class:`VPSDE` or :class:`VESDE`.
        score_fn: ``score_fn(x, t)``, the score of the time-``t`` marginal.
        x: starting points at ``t = 1``, shape ``(B, D)`` (draws from the prior).
        n_steps: number of uniform time steps, ``>= 1``.
        t_end: final time in ``(0, 1)``.
        generator: optional ``torch.Generator`` for the noise.
        return_path: also return all iterates, shape ``(n_steps + 1, B, D)``.

    Returns:
        The samples at ``t_end``, shape ``(B, D)`` (and the path if asked).

    Raises:
        TypeError, ValueError: on bad arguments or a score of the wrong shape.

    Implements (sde-reverse).
    """
    _check_sampler_args(sde, x, n_steps, t_end)
    ts = torch.linspace(1.0, t_end, n_steps + 1, dtype=torch.float64).tolist()
    path = [x]
    for i in range(n_steps):
        t, h = ts[i], ts[i] - ts[i + 1]
        g = sde.diffusion(t)
        x = x - (sde.drift(x, t) - g * g * _score(score_fn, x, t)) * h
        if i < n_steps - 1:
            x = x + g * math.sqrt(h) * torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)
        path.append(x)
    return (x, torch.stack(path)) if return_path else x


def pf_ode_sample(
    sde: SDE,
    score_fn: ScoreFn,
    x: torch.Tensor,
    n_steps: int,
    *,
    t_end: float = 1e-3,
    method: str = "heun",
    return_path: bool = False,
) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """Integrate the probability-flow ODE :math:`dx/dt = f - \\tfrac12 g^2 s` from 1 to ``t_end``.

    Args:
        sde: a :class:`VPSDE` or :class:`VESDE`.
        score_fn: ``score_fn(x, t)``.
        x: points at ``t = 1``, shape ``(B, D)``.
        n_steps: number of uniform steps, ``>= 1``.
        t_end: final time in ``(0, 1)``.
        method: ``"euler"`` (1 score evaluation per step) or ``"heun"`` (2, second order).
        return_path: also return all iterates, shape ``(n_steps + 1, B, D)``.

    Returns:
        The points at ``t_end`` (and the path if asked). The map is deterministic.

    Raises:
        TypeError, ValueError: on bad arguments.

    Implements (sde-pf-ode).
    """
    _check_sampler_args(sde, x, n_steps, t_end)
    if method not in ("euler", "heun"):
        raise ValueError(f"method must be 'euler' or 'heun', got {method!r}")
    ts = torch.linspace(1.0, t_end, n_steps + 1, dtype=torch.float64).tolist()
    path = [x]
    for i in range(n_steps):
        t, t_next = ts[i], ts[i + 1]
        dt = t_next - t  # negative: integrating backwards in time
        v = pf_velocity(sde, score_fn, x, t)
        x_euler = x + v * dt
        if method == "heun":
            x = x + 0.5 * (v + pf_velocity(sde, score_fn, x_euler, t_next)) * dt
        else:
            x = x_euler
        path.append(x)
    return (x, torch.stack(path)) if return_path else x


def _velocity_and_divergence(
    sde: SDE, score_fn: ScoreFn, x: torch.Tensor, t: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """The PF velocity ``(B, D)`` and its exact divergence ``(B,)`` by D backward passes."""
    with torch.enable_grad():
        x = x.detach().requires_grad_(True)
        v = pf_velocity(sde, score_fn, x, t)
        div = torch.zeros(x.shape[0], device=x.device, dtype=x.dtype)
        for d in range(x.shape[1]):
            # d v_d / d x_d for every sample at once: samples do not interact
            (grad,) = torch.autograd.grad(v[:, d].sum(), x, retain_graph=d < x.shape[1] - 1)
            div = div + grad[:, d]
    return v.detach(), div.detach()


def pf_ode_log_likelihood(
    sde: SDE,
    score_fn: ScoreFn,
    x: torch.Tensor,
    n_steps: int,
    *,
    t_start: float = 1e-3,
    prior_log_prob: Callable[[torch.Tensor], torch.Tensor] | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Log-density of ``x`` under the model's time-``t_start`` marginal, via the PF-ODE.

    Integrates the augmented ODE forward from ``t_start`` to 1 with Heun's method:
    ``x`` follows the PF velocity :math:`v`, and the accumulator follows
    :math:`\\nabla\\cdot v`, computed exactly with one backward pass per dimension (fine in
    2D; use a Hutchinson estimator in high dimension). Then
    :math:`\\log p_{t_\\mathrm{start}}(x) = \\log p_1(x(1)) + \\int_{t_\\mathrm{start}}^1
    \\nabla\\cdot v\\,dt`.

    Args:
        sde: a :class:`VPSDE` or :class:`VESDE`.
        score_fn: ``score_fn(x, t)``, differentiable in ``x``.
        x: points, shape ``(B, D)``.
        n_steps: number of Heun steps, ``>= 1``.
        t_start: starting time in ``(0, 1)``.
        prior_log_prob: :math:`\\log p_1`, maps ``(B, D)`` to ``(B,)``. Default
            :math:`\\mathcal{N}(0, n(1)^2 I)`, which ignores the (tiny) remaining signal.

    Returns:
        ``(log_p, x1)``: the estimates, shape ``(B,)``, and the endpoints at ``t = 1``.

    Raises:
        TypeError, ValueError: on bad arguments.

    Implements (sde-cov) and (sde-loglik).
    """
    _check_sampler_args(sde, x, n_steps, t_start)
    ts = torch.linspace(t_start, 1.0, n_steps + 1, dtype=torch.float64).tolist()
    integral = torch.zeros(x.shape[0], device=x.device, dtype=x.dtype)
    for i in range(n_steps):
        t, t_next = ts[i], ts[i + 1]
        dt = t_next - t
        v, div = _velocity_and_divergence(sde, score_fn, x, t)
        x_euler = x + v * dt
        v2, div2 = _velocity_and_divergence(sde, score_fn, x_euler, t_next)
        x = x + 0.5 * (v + v2) * dt
        integral = integral + 0.5 * (div + div2) * dt
    if prior_log_prob is None:
        n1 = sde.marginal(1.0)[1]
        d = x.shape[1]
        prior = -0.5 * d * math.log(2 * math.pi * n1 * n1) - 0.5 * x.pow(2).sum(-1) / (n1 * n1)
    else:
        prior = prior_log_prob(x)
        if prior.shape != integral.shape:
            raise ValueError(f"prior_log_prob must return shape {tuple(integral.shape)}, got {tuple(prior.shape)}")
    return prior + integral, x


# --- DDPM's ancestral step as a reverse-SDE discretisation, and predictor-corrector sampling ---


def _check_step_inputs(sde: SDE, x: torch.Tensor, t: float, noise: torch.Tensor | None) -> None:
    _check_sde_and_x(sde, x)
    _check_time(t)
    if noise is not None and (not isinstance(noise, torch.Tensor) or noise.shape != x.shape):
        raise ValueError(f"noise must be a tensor of shape {tuple(x.shape)}")


def reverse_step(
    sde: SDE,
    score_fn: ScoreFn,
    x: torch.Tensor,
    t: float,
    h: float,
    noise: torch.Tensor | None,
    *,
    method: str = "euler_maruyama",
) -> torch.Tensor:
    """One step of a reverse-time sampler from time ``t`` to ``t - h``.

    ``method="euler_maruyama"``: :math:`x - [f(x,t) - g(t)^2 s(x,t)]\\,h + g(t)\\sqrt h\\,z`, the step of
    (sde-alg-samplers). ``method="ancestral"`` (VP only): DDPM's step with :math:`\\sigma_i^2 = \\beta_i`,
    :math:`(x + \\beta_i s(x, t))/\\sqrt{1-\\beta_i} + \\sqrt{\\beta_i}\\,z` with :math:`\\beta_i = \\beta(t)\\,h`.
    The two agree up to :math:`O(\\beta_i^2)` for the same ``noise``.

    Args:
        sde: a :class:`VPSDE` or :class:`VESDE` (``"ancestral"`` needs a :class:`VPSDE`).
        score_fn: ``score_fn(x, t)``.
        x: current points, shape ``(B, D)``.
        t: current time in ``[0, 1]``.
        h: step size, ``0 < h <= t``; for ``"ancestral"`` also :math:`\\beta(t)h < 1`.
        noise: the standard normal ``z``, shape ``(B, D)``, or ``None`` for no noise.
        method: ``"euler_maruyama"`` or ``"ancestral"``.

    Returns:
        The points at ``t - h``, shape ``(B, D)``, dtype and device of ``x``.

    Raises:
        TypeError, ValueError: on bad arguments.

    Implements (sde-em-reverse-vp) and (sde-ancestral-score).
    """
    _check_step_inputs(sde, x, t, noise)
    if isinstance(h, bool) or not isinstance(h, (int, float)) or not 0 < h <= t:
        raise ValueError(f"h must satisfy 0 < h <= t, got h={h!r}, t={t}")
    s = _score(score_fn, x, t)
    if method == "euler_maruyama":
        g = sde.diffusion(t)
        out = x - (sde.drift(x, t) - g * g * s) * h
        return out if noise is None else out + g * math.sqrt(h) * noise
    if method == "ancestral":
        if not isinstance(sde, VPSDE):
            raise ValueError("method='ancestral' needs a VPSDE")
        b = sde.beta(t) * h
        if b >= 1:
            raise ValueError(f"ancestral step needs beta(t) * h < 1, got {b:.3g}")
        out = (x + b * s) / math.sqrt(1.0 - b)
        return out if noise is None else out + math.sqrt(b) * noise
    raise ValueError(f"method must be 'euler_maruyama' or 'ancestral', got {method!r}")


def langevin_corrector(
    score_fn: ScoreFn,
    x: torch.Tensor,
    t: float,
    *,
    snr: float = 0.16,
    n_steps: int = 1,
    alpha: float = 1.0,
    step_size: float | None = None,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Langevin corrector steps :math:`x \\leftarrow x + \\epsilon\\,s(x,t) + \\sqrt{2\\epsilon}\\,z` at a fixed ``t``.

    Unless ``step_size`` is given, :math:`\\epsilon = 2\\alpha\\,(r\\,\\overline{\\lVert z\\rVert}/
    \\overline{\\lVert s\\rVert})^2`, fresh at every step, where the bars are means over the batch of the
    per-sample Euclidean norms (one step size for the whole batch, as in Song et al.'s code) and ``r`` is
    the target signal-to-noise ratio ``snr``.

    Args:
        score_fn: ``score_fn(x, t)``, the score of the time-``t`` marginal.
        x: points, shape ``(B, D)``.
        t: time in ``[0, 1]``.
        snr: target signal-to-noise ratio ``r > 0``.
        n_steps: number of corrector steps ``M >= 1``.
        alpha: factor :math:`\\alpha > 0` (Song et al.: 1 for VE, :math:`1 - \\beta_i` for VP).
        step_size: a fixed :math:`\\epsilon > 0` instead of the SNR rule.
        generator: optional ``torch.Generator``.

    Returns:
        The corrected points, shape ``(B, D)``.

    Raises:
        TypeError, ValueError: on bad arguments.

    Implements (sde-langevin-corrector) and (sde-snr-step).
    """
    if not isinstance(x, torch.Tensor) or not x.is_floating_point():
        raise TypeError("x must be a floating-point torch.Tensor")
    if x.dim() != 2:
        raise ValueError(f"x must have shape (B, D), got {tuple(x.shape)}")
    _check_time(t)
    if isinstance(n_steps, bool) or not isinstance(n_steps, int) or n_steps < 1:
        raise ValueError(f"n_steps must be a positive int, got {n_steps!r}")
    if not isinstance(snr, (int, float)) or not snr > 0:
        raise ValueError(f"snr must be positive, got {snr!r}")
    if not isinstance(alpha, (int, float)) or not alpha > 0:
        raise ValueError(f"alpha must be positive, got {alpha!r}")
    if step_size is not None and (not isinstance(step_size, (int, float)) or not step_size > 0):
        raise ValueError(f"step_size must be positive or None, got {step_size!r}")
    for _ in range(n_steps):
        s = _score(score_fn, x, t)
        z = torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)
        if step_size is None:
            ratio = z.norm(dim=-1).mean() / s.norm(dim=-1).mean().clamp_min(torch.finfo(x.dtype).tiny)
            eps = 2.0 * alpha * (snr * ratio) ** 2
        else:
            eps = torch.tensor(float(step_size), device=x.device, dtype=x.dtype)
        x = x + eps * s + (2.0 * eps).sqrt() * z
    return x


def predictor_corrector_sample(
    sde: SDE,
    score_fn: ScoreFn,
    x: torch.Tensor,
    n_steps: int,
    *,
    n_corrector: int = 1,
    snr: float = 0.16,
    predictor: str = "euler_maruyama",
    t_end: float = 1e-3,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Predictor–corrector sampling from ``t = 1`` down to ``t_end`` on a uniform grid.

    At each grid time :math:`t_i` (``i = 0 .. n_steps - 1``): ``n_corrector`` Langevin corrector steps at
    :math:`t_i` (:func:`langevin_corrector`, :math:`\\alpha = 1` for VE and
    :math:`\\alpha_i = \\bar\\alpha(t_i)/\\bar\\alpha(t_{i+1}) = 1 - \\beta_i + O(\\beta_i^2)` for VP, in ``(0, 1)``
    since :math:`t_{i+1} < t_i`), then
    one predictor step to :math:`t_{i+1}` (:func:`reverse_step`), without noise on the last step. The
    corrector-then-predictor order follows Song et al.'s code and makes the last operation noise-free.
    Cost: ``n_steps * (1 + n_corrector)`` score evaluations.

    Args:
        sde: a :class:`VPSDE` or :class:`VESDE`.
        score_fn: ``score_fn(x, t)``.
        x: starting points at ``t = 1``, shape ``(B, D)``.
        n_steps: number of predictor steps, ``>= 1``.
        n_corrector: corrector steps per predictor step, ``>= 0`` (0 gives the plain predictor).
        snr: target signal-to-noise ratio of the corrector.
        predictor: ``"euler_maruyama"`` or ``"ancestral"`` (VP only).
        t_end: final time in ``(0, 1)``.
        generator: optional ``torch.Generator``.

    Returns:
        The samples at ``t_end``, shape ``(B, D)``.

    Raises:
        TypeError, ValueError: on bad arguments.

    Implements the algorithm sde-alg-pc: (sde-langevin-corrector) with (sde-snr-step), then
    (sde-em-reverse-vp) or (sde-ancestral-score).
    """
    _check_sampler_args(sde, x, n_steps, t_end)
    if isinstance(n_corrector, bool) or not isinstance(n_corrector, int) or n_corrector < 0:
        raise ValueError(f"n_corrector must be a non-negative int, got {n_corrector!r}")
    if predictor not in ("euler_maruyama", "ancestral"):
        raise ValueError(f"predictor must be 'euler_maruyama' or 'ancestral', got {predictor!r}")
    ts = torch.linspace(1.0, t_end, n_steps + 1, dtype=torch.float64).tolist()
    for i in range(n_steps):
        t, t_next = ts[i], ts[i + 1]
        if n_corrector > 0:
            alpha = sde.alpha_bar(t) / sde.alpha_bar(t_next) if isinstance(sde, VPSDE) else 1.0
            x = langevin_corrector(score_fn, x, t, snr=snr, n_steps=n_corrector, alpha=alpha, generator=generator)
        z = None
        if i < n_steps - 1:
            z = torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)
        x = reverse_step(sde, score_fn, x, t, t - t_next, z, method=predictor)
    return x
