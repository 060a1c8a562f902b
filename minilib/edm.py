"""The EDM design space (Karras et al., 2022): preconditioning, noise levels and samplers.

EDM writes every diffusion model as the VE form :math:`x = y + \\sigma n` (data ``y``, noise
``n ~ N(0, I)``) with :math:`\\sigma(t) = t` and no scaling, and parametrises the ideal
denoiser :math:`D(x; \\sigma) = \\mathbb{E}[y \\mid x]`. The probability-flow ODE is then
:math:`dx/d\\sigma = (x - D(x;\\sigma))/\\sigma`, integrated from a large :math:`\\sigma_{\\max}`
down to 0.

A ``denoiser(x, sigma)`` takes ``x`` of shape ``(B, D)`` and a Python float ``sigma > 0`` and
returns :math:`D(x;\\sigma)`, shape ``(B, D)``. Samplers return ``(x, nfe)``, ``nfe`` being the
number of denoiser calls.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch

__all__ = [
    "edm_loss",
    "euler_sampler",
    "fm_schedule",
    "heun_sampler",
    "karras_sigmas",
    "langevin_sde_sampler",
    "ode_rhs",
    "precond",
    "precond_denoiser",
    "sample_sigmas",
]

Denoiser = Callable[[torch.Tensor, float], torch.Tensor]


def _positive(name: str, v: float) -> float:
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not v > 0 or not math.isfinite(v):
        raise ValueError(f"{name} must be a positive finite number, got {v!r}")
    return float(v)


def karras_sigmas(
    n: int,
    sigma_min: float = 0.002,
    sigma_max: float = 80.0,
    rho: float = 7.0,
    *,
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """The Karras noise levels: ``n`` values evenly spaced in :math:`\\sigma^{1/\\rho}`, then 0.

    :math:`\\sigma_i = \\big(\\sigma_{\\max}^{1/\\rho} + \\tfrac{i}{n-1}(\\sigma_{\\min}^{1/\\rho} -
    \\sigma_{\\max}^{1/\\rho})\\big)^{\\rho}` for ``i = 0..n-1``, and :math:`\\sigma_n = 0`.
    ``rho = 1`` gives levels uniform in :math:`\\sigma`; larger ``rho`` crowds them near
    :math:`\\sigma_{\\min}`. With ``n = 1`` the levels are ``[sigma_max, 0]``.

    Args:
        n: number of sampling steps (levels before the final 0), ``>= 1``.
        sigma_min: smallest positive level.
        sigma_max: largest level, ``> sigma_min``.
        rho: the warping exponent, ``> 0``.
        device: where to put the result.

    Returns:
        float64 tensor of shape ``(n + 1,)``, strictly decreasing, ending in 0.

    Raises:
        ValueError: on a bad ``n``, non-positive levels, ``sigma_min >= sigma_max`` or ``rho <= 0``.

    Implements (edm-karras).

    >>> karras_sigmas(3, 0.5, 2.0, rho=1.0).tolist()
    [2.0, 1.25, 0.5, 0.0]
    """
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"n must be a positive int, got {n!r}")
    lo, hi, rho = _positive("sigma_min", sigma_min), _positive("sigma_max", sigma_max), _positive("rho", rho)
    if lo >= hi:
        raise ValueError(f"need sigma_min < sigma_max, got {lo} and {hi}")
    if n == 1:
        ramp = torch.zeros(1, dtype=torch.float64, device=device)
    else:
        ramp = torch.linspace(0.0, 1.0, n, dtype=torch.float64, device=device)
    sig = (hi ** (1 / rho) + ramp * (lo ** (1 / rho) - hi ** (1 / rho))) ** rho
    return torch.cat([sig, sig.new_zeros(1)])


def precond(
    sigma: float | torch.Tensor, sigma_data: float = 0.5
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """The EDM preconditioning coefficients for :math:`D = c_{\\mathrm{skip}}x + c_{\\mathrm{out}}F(c_{\\mathrm{in}}x, c_{\\mathrm{noise}})`.

    :math:`c_{\\mathrm{in}} = 1/\\sqrt{\\sigma^2+\\sigma_d^2}` (unit-variance network input),
    :math:`c_{\\mathrm{skip}} = \\sigma_d^2/(\\sigma^2+\\sigma_d^2)` (minimises the target's variance),
    :math:`c_{\\mathrm{out}} = \\sigma\\sigma_d/\\sqrt{\\sigma^2+\\sigma_d^2}` (unit-variance target),
    :math:`c_{\\mathrm{noise}} = \\tfrac14\\ln\\sigma`.

    Args:
        sigma: noise level(s) ``> 0``: a float or a floating tensor of any shape.
        sigma_data: the data's standard deviation :math:`\\sigma_d > 0`.

    Returns:
        ``(c_skip, c_out, c_in, c_noise)``, tensors of ``sigma``'s shape and dtype (0-d float64
        for a float ``sigma``).

    Raises:
        TypeError: integer tensors. ValueError: non-positive ``sigma`` or ``sigma_data``.

    Implements (edm-cin), (edm-cskip), (edm-cout) and (edm-cnoise).

    >>> [round(float(c), 4) for c in precond(0.5, 0.5)]
    [0.5, 0.3536, 1.4142, -0.1733]
    """
    sd = _positive("sigma_data", sigma_data)
    if isinstance(sigma, torch.Tensor):
        if not sigma.is_floating_point():
            raise TypeError(f"sigma must be a floating-point tensor, got dtype {sigma.dtype}")
        s = sigma
    elif isinstance(sigma, bool) or not isinstance(sigma, (int, float)):
        raise TypeError(f"sigma must be a float or a tensor, got {type(sigma).__name__}")
    else:
        s = torch.tensor(float(sigma), dtype=torch.float64)
    if s.device.type != "meta" and not bool((s > 0).all()):
        raise ValueError("sigma must be positive")
    total = s * s + sd * sd
    c_skip = sd * sd / total
    c_out = s * sd / total.sqrt()
    c_in = 1.0 / total.sqrt()
    c_noise = s.log() / 4
    return c_skip, c_out, c_in, c_noise


def precond_denoiser(
    net: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    x: torch.Tensor,
    sigma: float | torch.Tensor,
    sigma_data: float = 0.5,
) -> torch.Tensor:
    """Wrap a raw network ``net(x_in, c_noise)`` into the denoiser :math:`D_\\theta(x;\\sigma)`.

    Args:
        net: maps ``(B, D)`` inputs and per-sample ``c_noise`` ``(B,)`` to ``(B, D)``.
        x: noisy points, shape ``(B, D)``.
        sigma: a float, or per-sample levels of shape ``(B,)``.
        sigma_data: :math:`\\sigma_d`.

    Returns:
        :math:`c_{\\mathrm{skip}}x + c_{\\mathrm{out}}F(c_{\\mathrm{in}}x, c_{\\mathrm{noise}})`, shape ``(B, D)``.

    Implements (edm-denoiser).
    """
    if not isinstance(x, torch.Tensor) or not x.is_floating_point() or x.dim() != 2:
        raise TypeError("x must be a floating-point tensor of shape (B, D)")
    s = sigma if isinstance(sigma, torch.Tensor) else torch.tensor(float(sigma), dtype=torch.float64)
    s = s.to(device=x.device, dtype=x.dtype).expand(x.shape[0])  # (B,)
    c_skip, c_out, c_in, c_noise = precond(s, sigma_data)
    return c_skip[:, None] * x + c_out[:, None] * net(c_in[:, None] * x, c_noise)


def sample_sigmas(
    n: int, p_mean: float = -1.2, p_std: float = 1.2, *, generator: torch.Generator | None = None,
    device: torch.device | str | None = None, dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """Training noise levels :math:`\\ln\\sigma \\sim \\mathcal{N}(P_{\\mathrm{mean}}, P_{\\mathrm{std}}^2)`.

    Implements (edm-lognormal).

    Returns:
        Shape ``(n,)``.
    """
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"n must be a positive int, got {n!r}")
    _positive("p_std", p_std)
    z = torch.randn(n, generator=generator, dtype=dtype)
    return (p_mean + p_std * z).exp().to(device)


def edm_loss(
    net: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    y: torch.Tensor,
    sigma: torch.Tensor,
    noise: torch.Tensor,
    sigma_data: float = 0.5,
) -> torch.Tensor:
    """The EDM training loss :math:`\\lambda(\\sigma)\\lVert D_\\theta(y + \\sigma n;\\sigma) - y\\rVert^2`, batch mean.

    With :math:`\\lambda = (\\sigma^2 + \\sigma_d^2)/(\\sigma\\sigma_d)^2 = 1/c_{\\mathrm{out}}^2` the
    loss equals :math:`\\lVert F_\\theta - (y - c_{\\mathrm{skip}}x)/c_{\\mathrm{out}}\\rVert^2`: a
    unit-weight regression on a unit-variance target at every :math:`\\sigma`.

    Args:
        net: the raw network ``F(x_in, c_noise)`` (see :func:`precond_denoiser`).
        y: clean data, shape ``(B, D)``.
        sigma: per-sample levels, shape ``(B,)``.
        noise: standard normal draws, shape ``(B, D)``.
        sigma_data: :math:`\\sigma_d`.

    Returns:
        A scalar tensor.

    Raises:
        ValueError: mismatched shapes.

    Implements (edm-loss).
    """
    if y.dim() != 2 or noise.shape != y.shape or sigma.shape != y.shape[:1]:
        raise ValueError(
            f"need y, noise of shape (B, D) and sigma of shape (B,), got {tuple(y.shape)}, "
            f"{tuple(noise.shape)}, {tuple(sigma.shape)}"
        )
    x = y + sigma[:, None] * noise
    d = precond_denoiser(net, x, sigma, sigma_data)
    weight = (sigma**2 + sigma_data**2) / (sigma * sigma_data) ** 2  # (B,)
    return (weight[:, None] * (d - y) ** 2).sum(-1).mean()


def _check_sampler(x: torch.Tensor, sigmas: torch.Tensor) -> list[float]:
    if not isinstance(x, torch.Tensor) or not x.is_floating_point():
        raise TypeError("x must be a floating-point torch.Tensor")
    if x.dim() != 2:
        raise ValueError(f"x must have shape (B, D), got {tuple(x.shape)}")
    if not isinstance(sigmas, torch.Tensor) or not sigmas.is_floating_point() or sigmas.dim() != 1:
        raise TypeError("sigmas must be a 1-D floating-point tensor")
    levels = [float(s) for s in sigmas]
    if len(levels) < 2:
        raise ValueError("sigmas must hold at least two levels (start and end)")
    if levels[-1] < 0 or any(b >= a for a, b in zip(levels, levels[1:])):
        raise ValueError("sigmas must be strictly decreasing and non-negative")
    return levels


def _slope(denoiser: Denoiser, x: torch.Tensor, sigma: float) -> torch.Tensor:
    d = denoiser(x, sigma)
    if d.shape != x.shape:
        raise ValueError(f"denoiser returned shape {tuple(d.shape)}, expected {tuple(x.shape)}")
    return (x - d) / sigma  # dx/dsigma of the PF-ODE


def euler_sampler(denoiser: Denoiser, x: torch.Tensor, sigmas: torch.Tensor) -> tuple[torch.Tensor, int]:
    """Euler's method on :math:`dx/d\\sigma = (x - D(x;\\sigma))/\\sigma` over the given levels.

    Args:
        denoiser: ``denoiser(x, sigma)`` with a float ``sigma > 0``.
        x: points at ``sigmas[0]``, shape ``(B, D)`` (e.g. ``sigmas[0] * randn``).
        sigmas: strictly decreasing non-negative levels, shape ``(N + 1,)``.

    Returns:
        ``(x, nfe)``: the points at ``sigmas[-1]`` and the number of denoiser calls (``N``).

    Raises:
        TypeError, ValueError: on bad arguments.

    Implements (edm-ode).
    """
    levels = _check_sampler(x, sigmas)
    nfe = 0
    for s_cur, s_next in zip(levels, levels[1:]):
        x = x + (s_next - s_cur) * _slope(denoiser, x, s_cur)
        nfe += 1
    return x, nfe


def heun_sampler(
    denoiser: Denoiser,
    x: torch.Tensor,
    sigmas: torch.Tensor,
    *,
    s_churn: float = 0.0,
    s_tmin: float = 0.0,
    s_tmax: float = math.inf,
    s_noise: float = 1.0,
    generator: torch.Generator | None = None,
) -> tuple[torch.Tensor, int]:
    """Heun's second-order method (EDM Algorithm 1; Algorithm 2 when ``s_churn > 0``).

    Each step takes an Euler step to :math:`\\sigma_{i+1}` and corrects it with the average of
    the two slopes, except when :math:`\\sigma_{i+1} = 0`, where the slope is undefined and the
    step stays Euler. With the usual levels ending in 0, that makes ``2N - 1`` denoiser calls
    for ``N`` steps. With churn, before each step with :math:`\\sigma_i \\in [s_{tmin}, s_{tmax}]`
    the noise level is raised to :math:`\\hat\\sigma = \\sigma_i(1+\\gamma)`,
    :math:`\\gamma = \\min(s_{churn}/N, \\sqrt2-1)`, by adding fresh noise of variance
    :math:`\\hat\\sigma^2 - \\sigma_i^2` (times ``s_noise**2``).

    Args:
        denoiser: ``denoiser(x, sigma)`` with a float ``sigma > 0``.
        x: points at ``sigmas[0]``, shape ``(B, D)``.
        sigmas: strictly decreasing non-negative levels, shape ``(N + 1,)``.
        s_churn: total stochasticity; 0 gives the deterministic sampler.
        s_tmin: churn only at levels at least this large.
        s_tmax: churn only at levels at most this large.
        s_noise: scale of the added noise (slightly above 1 counteracts denoiser blur).
        generator: optional ``torch.Generator`` for the churn noise.

    Returns:
        ``(x, nfe)``.

    Raises:
        TypeError, ValueError: on bad arguments.

    Implements (edm-heun) and (edm-churn).
    """
    levels = _check_sampler(x, sigmas)
    if not (isinstance(s_churn, (int, float)) and s_churn >= 0):
        raise ValueError(f"s_churn must be non-negative, got {s_churn!r}")
    n_steps = len(levels) - 1
    gamma_max = math.sqrt(2.0) - 1.0
    nfe = 0
    for s_cur, s_next in zip(levels, levels[1:]):
        if s_churn > 0 and s_tmin <= s_cur <= s_tmax:
            s_hat = s_cur * (1.0 + min(s_churn / n_steps, gamma_max))
            z = torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)
            x = x + math.sqrt(s_hat**2 - s_cur**2) * s_noise * z
            s_cur = s_hat
        d = _slope(denoiser, x, s_cur)
        nfe += 1
        x_next = x + (s_next - s_cur) * d
        if s_next > 0:
            d_next = _slope(denoiser, x_next, s_next)
            nfe += 1
            x_next = x + (s_next - s_cur) * 0.5 * (d + d_next)
        x = x_next
    return x, nfe


# --------------------------------------------------------------------------------------------
# Depth (issue 16): flow matching as a point of the design space, and the SDE with a Langevin term
# --------------------------------------------------------------------------------------------


def fm_schedule(t: float) -> tuple[float, float, float, float]:
    """The flow-matching (linear) path as an EDM schedule: :math:`s = 1 - t`, :math:`\\sigma = t/(1-t)`.

    The path :math:`x_t = (1-t)\\,y + t\\,n` (data at ``t = 0``, noise at ``t = 1``) equals
    :math:`s(t)\\,(y + \\sigma(t)\\,n)` with these two functions.

    Args:
        t: a time strictly inside (0, 1) (at 0 the level is 0, at 1 it is infinite).

    Returns:
        ``(s, ds, sigma, dsigma)``: the scale, its time derivative ``-1``, the noise level and
        its time derivative :math:`1/(1-t)^2`, as Python floats.

    Raises:
        ValueError: if ``t`` is not a number in (0, 1).

    Implements (edm-fm-schedule).

    >>> fm_schedule(0.5)
    (0.5, -1.0, 1.0, 4.0)
    """
    if isinstance(t, bool) or not isinstance(t, (int, float)) or not 0.0 < t < 1.0:
        raise ValueError(f"t must be a number strictly inside (0, 1), got {t!r}")
    t = float(t)
    return 1.0 - t, -1.0, t / (1.0 - t), 1.0 / (1.0 - t) ** 2


def ode_rhs(
    denoiser: Denoiser, x: torch.Tensor, s: float, ds: float, sigma: float, dsigma: float
) -> torch.Tensor:
    """The right side of the PF-ODE for a general scale and noise level, at one time ``t``.

    :math:`\\frac{dx}{dt} = \\frac{\\dot s}{s}\\,x + \\frac{\\dot\\sigma}{\\sigma}\\big(x -
    s\\,D(x/s;\\sigma)\\big)` for the process :math:`x = s(t)\\,(y + \\sigma(t)\\,n)`, with the
    values of :math:`s, \\dot s, \\sigma, \\dot\\sigma` at that time given as floats (e.g. from
    :func:`fm_schedule`).

    Args:
        denoiser: ``denoiser(x_hat, sigma)``, the ideal (or learned) denoiser of the unscaled
            :math:`\\hat x = y + \\sigma n`; ``(B, D)`` in, ``(B, D)`` out.
        x: scaled points, shape ``(B, D)``.
        s: the scale :math:`s(t) > 0`.
        ds: its derivative :math:`\\dot s(t)`.
        sigma: the noise level :math:`\\sigma(t) > 0`.
        dsigma: its derivative :math:`\\dot\\sigma(t)`.

    Returns:
        :math:`dx/dt`, shape ``(B, D)``, dtype and device of ``x``.

    Raises:
        TypeError: if ``x`` is not a floating tensor of shape ``(B, D)``.
        ValueError: non-positive or non-finite ``s``/``sigma``, non-finite derivatives, or a
            denoiser output of the wrong shape.

    Implements (edm-ode-general).
    """
    if not isinstance(x, torch.Tensor) or not x.is_floating_point() or x.dim() != 2:
        raise TypeError("x must be a floating-point tensor of shape (B, D)")
    s, sigma = _positive("s", s), _positive("sigma", sigma)
    for name, v in (("ds", ds), ("dsigma", dsigma)):
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
            raise ValueError(f"{name} must be a finite number, got {v!r}")
    d = denoiser(x / s, sigma)
    if d.shape != x.shape:
        raise ValueError(f"denoiser returned shape {tuple(d.shape)}, expected {tuple(x.shape)}")
    return ds / s * x + dsigma / sigma * (x - s * d)


def langevin_sde_sampler(
    denoiser: Denoiser,
    x: torch.Tensor,
    sigmas: torch.Tensor,
    beta: float,
    *,
    generator: torch.Generator | None = None,
) -> tuple[torch.Tensor, int]:
    """Euler–Maruyama on EDM's backward SDE with a Langevin term, :math:`\\sigma(t) = t`, :math:`s = 1`.

    With the score :math:`\\nabla\\log p(x;\\sigma) = (D(x;\\sigma) - x)/\\sigma^2` and a step
    :math:`h_i = \\sigma_{i+1} - \\sigma_i < 0`, each step is

    :math:`x \\leftarrow x + h_i\\,\\frac{x - D}{\\sigma_i} + \\beta\\,|h_i|\\,(D - x) +
    \\sqrt{2\\beta|h_i|}\\;\\sigma_i\\,z`, :math:`z \\sim \\mathcal{N}(0, I)`:

    the ODE step plus a Langevin step of size :math:`\\beta\\sigma_i^2|h_i|` that leaves
    :math:`p(\\cdot;\\sigma_i)` invariant. ``beta = 0`` is :func:`euler_sampler`. A step that
    ends at level 0 drops the Langevin part (it would leave noise of size
    :math:`\\sigma_i\\sqrt{2\\beta|h_i|}` in the output).

    Args:
        denoiser: ``denoiser(x, sigma)`` with a float ``sigma > 0``.
        x: points at ``sigmas[0]``, shape ``(B, D)``.
        sigmas: strictly decreasing non-negative levels, shape ``(N + 1,)``.
        beta: the Langevin rate :math:`\\beta \\ge 0` (constant in time).
        generator: optional ``torch.Generator`` for the noise.

    Returns:
        ``(x, nfe)``: the points at ``sigmas[-1]`` and ``N`` denoiser calls.

    Raises:
        TypeError, ValueError: on bad arguments (negative or non-finite ``beta`` included).

    Implements (edm-sde-em), the discretisation of (edm-sde) with the minus sign.
    """
    levels = _check_sampler(x, sigmas)
    if isinstance(beta, bool) or not isinstance(beta, (int, float)) or not (math.isfinite(beta) and beta >= 0):
        raise ValueError(f"beta must be a non-negative finite number, got {beta!r}")
    nfe = 0
    for s_cur, s_next in zip(levels, levels[1:]):
        d = denoiser(x, s_cur)
        if d.shape != x.shape:
            raise ValueError(f"denoiser returned shape {tuple(d.shape)}, expected {tuple(x.shape)}")
        nfe += 1
        h = s_next - s_cur  # < 0
        x_new = x + h * (x - d) / s_cur  # ODE part, (edm-ode)
        if beta > 0 and s_next > 0:
            z = torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)
            x_new = x_new + beta * (-h) * (d - x) + math.sqrt(2.0 * beta * (-h)) * s_cur * z
        x = x_new
    return x, nfe
