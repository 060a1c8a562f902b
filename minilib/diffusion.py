"""Discrete-time Gaussian diffusion: noise schedules, the DDPM posterior and samplers, DDIM.

Conventions (the book's, as in the diffusers library): discrete time ``t = 0, ..., T-1``;
``betas[t]`` is the variance added by step ``t``; ``alphas = 1 - betas``;
``alpha_bars[t] = prod_{s <= t} alphas[s]``, so ``x_t`` has already been noised ``t + 1``
times and ``x_0`` in the papers' notation is the clean data, written ``x0`` here. An index
``t = -1`` stands for "no noise at all" (``alpha_bar = 1``). Models predict the noise
epsilon by default.

Every coefficient is computed in float64 (``1 - alpha_bar`` loses most of its digits in
float32 near ``t = 0``) and cast to the dtype of the data just before it multiplies the data,
so results come back in the dtype and on the device of ``x``.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch

__all__ = [
    "NoiseSchedule",
    "ddim_sample",
    "ddim_timesteps",
    "ddpm_sample",
    "elbo_terms",
    "eps_loss",
]

EpsModel = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def _known(*ts: torch.Tensor) -> bool:
    """True unless a tensor is on the meta device (which has shapes but no values)."""
    return all(t.device.type != "meta" for t in ts)


def _check_data(name: str, x: torch.Tensor) -> None:
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    if not x.is_floating_point():
        raise TypeError(f"{name} must be a floating tensor, got {x.dtype}")
    if x.ndim < 1:
        raise ValueError(f"{name} must have a batch dimension, got shape {tuple(x.shape)}")


def _check_same_shape(ref_name: str, ref: torch.Tensor, **others: torch.Tensor | None) -> None:
    for name, t in others.items():
        if t is None:
            continue
        _check_data(name, t)
        if t.shape != ref.shape:
            raise ValueError(f"{name} must have the shape of {ref_name} {tuple(ref.shape)}, got {tuple(t.shape)}")


class NoiseSchedule:
    """A variance schedule ``betas[0..T-1]`` and everything derived from it.

    Build one with :meth:`linear` or :meth:`cosine`, or pass any betas in ``(0, 1]``.

    Attributes:
        betas: float64 tensor ``(T,)``, the per-step variances.
        alphas: float64 tensor ``(T,)``, ``1 - betas``.
        alpha_bars: float64 tensor ``(T,)``, the cumulative products of ``alphas``.
        T: the number of steps.

    Args:
        betas: tensor ``(T,)`` with values in ``(0, 1]``; converted to float64 (and kept on
            its device).

    Raises:
        TypeError: if ``betas`` is not a floating tensor.
        ValueError: if ``betas`` is not 1-D and non-empty, or has values outside ``(0, 1]``.
    """

    def __init__(self, betas: torch.Tensor) -> None:
        if not isinstance(betas, torch.Tensor) or not betas.is_floating_point():
            raise TypeError("betas must be a floating torch.Tensor")
        if betas.ndim != 1 or betas.numel() == 0:
            raise ValueError(f"betas must have shape (T,) with T >= 1, got {tuple(betas.shape)}")
        betas = betas.to(torch.float64)
        if _known(betas) and not bool(((betas > 0) & (betas <= 1)).all()):
            raise ValueError("betas must lie in (0, 1]")
        self.betas = betas
        self.alphas = 1.0 - betas
        self.alpha_bars = torch.cumprod(self.alphas, dim=0)
        self.T = betas.numel()

    # -- constructors ---------------------------------------------------------------------
    @classmethod
    def linear(cls, T: int = 1000, beta_start: float = 1e-4, beta_end: float = 0.02) -> NoiseSchedule:
        """The DDPM schedule: betas evenly spaced from ``beta_start`` to ``beta_end``.

        Implements (ddpm-linear).

        Args:
            T: number of steps, at least 2.
            beta_start: first beta, in ``(0, beta_end)``.
            beta_end: last beta, in ``(beta_start, 1]``.

        Raises:
            ValueError: on ``T < 2`` or ``not 0 < beta_start < beta_end <= 1``.

        >>> s = NoiseSchedule.linear()
        >>> f"{float(s.alpha_bars[-1]):.4g}"
        '4.036e-05'
        """
        if not isinstance(T, int) or isinstance(T, bool) or T < 2:
            raise ValueError(f"T must be an int >= 2, got {T!r}")
        if not 0 < beta_start < beta_end <= 1:
            raise ValueError(
                f"need 0 < beta_start < beta_end <= 1, got beta_start={beta_start!r}, beta_end={beta_end!r}"
            )
        return cls(torch.linspace(beta_start, beta_end, T, dtype=torch.float64))

    @classmethod
    def cosine(cls, T: int = 1000, s: float = 0.008, max_beta: float = 0.999) -> NoiseSchedule:
        """The improved-DDPM cosine schedule, with each beta clipped at ``max_beta``.

        With :math:`f(u) = \\cos^2\\big(\\frac{u/T + s}{1 + s}\\cdot\\frac{\\pi}{2}\\big)`,
        ``betas[t] = min(1 - f(t+1) / f(t), max_beta)``, so that without clipping
        ``alpha_bars[t] = f(t+1) / f(0)``. Implements (ddpm-cosine).

        Args:
            T: number of steps, at least 2.
            s: small offset that keeps the first betas from being vanishingly small, >= 0.
            max_beta: upper clip of every beta, in ``(0, 1]``.

        Raises:
            ValueError: on bad ``T``, ``s`` or ``max_beta``.

        >>> float(NoiseSchedule.cosine().betas[-1])
        0.999
        """
        if not isinstance(T, int) or isinstance(T, bool) or T < 2:
            raise ValueError(f"T must be an int >= 2, got {T!r}")
        if not (isinstance(s, (int, float)) and s >= 0):
            raise ValueError(f"s must be a non-negative number, got {s!r}")
        if not (isinstance(max_beta, (int, float)) and 0 < max_beta <= 1):
            raise ValueError(f"max_beta must lie in (0, 1], got {max_beta!r}")
        u = torch.arange(T + 1, dtype=torch.float64)
        f = torch.cos((u / T + s) / (1 + s) * (math.pi / 2)) ** 2
        betas = torch.clamp(1 - f[1:] / f[:-1], max=max_beta)
        return cls(betas)

    def to(self, device: torch.device | str) -> NoiseSchedule:
        """A copy whose coefficient tensors live on ``device`` (still float64)."""
        return NoiseSchedule(self.betas.to(device))

    # -- derived quantities -----------------------------------------------------------------
    @property
    def snr(self) -> torch.Tensor:
        """Signal-to-noise ratio ``alpha_bars / (1 - alpha_bars)``, float64 ``(T,)``. Implements (ddpm-snr)."""
        return self.alpha_bars / (1 - self.alpha_bars)

    @property
    def posterior_variances(self) -> torch.Tensor:
        """``beta_tilde[t] = betas[t] (1 - alpha_bars[t-1]) / (1 - alpha_bars[t])``, float64 ``(T,)``.

        ``beta_tilde[0] = 0``. Implements (ddpm-posterior-var).
        """
        prev = self.alpha_bar_at(torch.arange(self.T, device=self.betas.device) - 1)
        return self.betas * (1 - prev) / (1 - self.alpha_bars)

    def alpha_bar_at(self, t: torch.Tensor) -> torch.Tensor:
        """``alpha_bars[t]`` with the convention ``alpha_bar = 1`` at ``t = -1``; float64.

        Args:
            t: integer tensor with values in ``-1..T-1``.

        Returns:
            float64 tensor of the shape of ``t``.
        """
        padded = torch.cat((torch.ones(1, dtype=torch.float64, device=self.alpha_bars.device), self.alpha_bars))
        return padded[(t + 1).to(padded.device)]

    def _index(self, t: int | torch.Tensor, x: torch.Tensor, name: str = "t", lowest: int = 0) -> torch.Tensor:
        """Validate ``t`` against ``x`` and return it as an int64 tensor of shape (B,) or ()."""
        if isinstance(t, bool):
            raise TypeError(f"{name} must be an int or an integer tensor, got bool")
        if isinstance(t, int):
            t = torch.tensor(t, dtype=torch.int64)
        if not isinstance(t, torch.Tensor):
            raise TypeError(f"{name} must be an int or an integer tensor, got {type(t).__name__}")
        if t.is_floating_point() or t.is_complex() or t.dtype == torch.bool:
            raise TypeError(f"{name} must hold integer step indices, got dtype {t.dtype}")
        if t.ndim > 1 or (t.ndim == 1 and t.shape[0] != x.shape[0]):
            raise ValueError(
                f"{name} must be an int, a 0-d tensor, or shape (B,) with B = {x.shape[0]}, got {tuple(t.shape)}"
            )
        if _known(t) and t.numel() and not bool(((t >= lowest) & (t < self.T)).all()):
            raise ValueError(f"{name} must lie in {lowest}..{self.T - 1}, got values {t.min().item()}..{t.max().item()}")
        return t.to(torch.int64)

    @staticmethod
    def _bcast(c: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """A float64 per-sample coefficient, shaped (B, 1, ..., 1) or (), in x's dtype/device."""
        if c.ndim == 1:
            c = c.reshape(-1, *([1] * (x.ndim - 1)))  # (B,) -> (B, 1, ..., 1)
        return c.to(device=x.device, dtype=x.dtype)

    # -- the forward process ----------------------------------------------------------------
    def q_sample(self, x0: torch.Tensor, t: int | torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        """Sample ``x_t ~ q(x_t | x_0)`` by reparameterization. Implements (ddpm-marginal).

        ``x_t = sqrt(alpha_bars[t]) x0 + sqrt(1 - alpha_bars[t]) noise``.

        Args:
            x0: clean data ``(B, ...)``.
            t: step index in ``0..T-1``: an int, or an integer tensor ``(B,)`` (one per sample).
            noise: standard normal noise of the shape of ``x0``.

        Returns:
            ``x_t``, shape and dtype of ``x0``.

        Raises:
            TypeError: on non-floating data or non-integer ``t``.
            ValueError: on out-of-range ``t`` or mismatched shapes.

        >>> s = NoiseSchedule.linear(T=10)
        >>> s.q_sample(torch.ones(2, 3), 0, torch.zeros(2, 3)).shape
        torch.Size([2, 3])
        """
        _check_data("x0", x0)
        _check_same_shape("x0", x0, noise=noise)
        t = self._index(t, x0)
        ab = self.alpha_bars[t.to(self.alpha_bars.device)]
        return self._bcast(ab.sqrt(), x0) * x0 + self._bcast((1 - ab).sqrt(), x0) * noise

    def posterior(
        self, x0: torch.Tensor, x_t: torch.Tensor, t: int | torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Mean and variance of the Gaussian ``q(x_{t-1} | x_t, x_0)``.

        Implements (ddpm-posterior-mean) and (ddpm-posterior-var). At ``t = 0`` the "previous"
        state is the data itself: the mean is ``x0`` and the variance 0.

        Args:
            x0: clean data ``(B, ...)``.
            x_t: noisy data, same shape.
            t: step index in ``0..T-1``: an int or an integer tensor ``(B,)``.

        Returns:
            ``(mean, variance)``: ``mean`` of the shape of ``x0``; ``variance`` (isotropic)
            of shape ``(B, 1, ..., 1)`` for per-sample ``t`` and ``()`` for a single ``t``,
            broadcastable against ``mean``; both in the dtype of ``x0``.
        """
        _check_data("x0", x0)
        _check_same_shape("x0", x0, x_t=x_t)
        t = self._index(t, x0)
        td = t.to(self.betas.device)
        beta, alpha, ab = self.betas[td], self.alphas[td], self.alpha_bars[td]
        ab_prev = self.alpha_bar_at(td - 1)
        coef_x0 = ab_prev.sqrt() * beta / (1 - ab)
        coef_xt = alpha.sqrt() * (1 - ab_prev) / (1 - ab)
        var = beta * (1 - ab_prev) / (1 - ab)
        mean = self._bcast(coef_x0, x0) * x0 + self._bcast(coef_xt, x0) * x_t
        return mean, self._bcast(var, x0)

    # -- the reverse process ----------------------------------------------------------------
    def predict_x0(self, eps_hat: torch.Tensor, t: int | torch.Tensor, x_t: torch.Tensor) -> torch.Tensor:
        """The clean-data estimate implied by a noise prediction. Implements (ddpm-x0-from-eps).

        ``x0_hat = (x_t - sqrt(1 - alpha_bars[t]) eps_hat) / sqrt(alpha_bars[t])``.

        Args:
            eps_hat: predicted noise ``(B, ...)``.
            t: step index in ``0..T-1``: an int or an integer tensor ``(B,)``.
            x_t: noisy data, same shape as ``eps_hat``.

        Returns:
            ``x0_hat``, shape and dtype of ``x_t``.
        """
        _check_data("x_t", x_t)
        _check_same_shape("x_t", x_t, eps_hat=eps_hat)
        t = self._index(t, x_t)
        ab = self.alpha_bars[t.to(self.alpha_bars.device)]
        return (x_t - self._bcast((1 - ab).sqrt(), x_t) * eps_hat) / self._bcast(ab.sqrt(), x_t)

    def ddpm_step(
        self, eps_hat: torch.Tensor, t: int | torch.Tensor, x_t: torch.Tensor, noise: torch.Tensor | None
    ) -> torch.Tensor:
        """One ancestral sampling step ``x_t -> x_{t-1}``. Implements (ddpm-step).

        ``x_{t-1} = (x_t - beta_t / sqrt(1 - alpha_bar_t) eps_hat) / sqrt(alpha_t)
        + sqrt(beta_tilde_t) noise``: the posterior mean of (ddpm-eps-mean) with the
        posterior variance beta_tilde_t of (ddpm-posterior-var), which is 0 at ``t = 0`` (no
        noise is added on the last step).

        Args:
            eps_hat: predicted noise ``(B, ...)``.
            t: step index in ``0..T-1``: an int or an integer tensor ``(B,)``.
            x_t: current state, same shape as ``eps_hat``.
            noise: standard normal noise of the same shape, or None for the mean alone.

        Returns:
            ``x_{t-1}``, shape and dtype of ``x_t``.
        """
        _check_data("x_t", x_t)
        _check_same_shape("x_t", x_t, eps_hat=eps_hat, noise=noise)
        t = self._index(t, x_t)
        td = t.to(self.betas.device)
        beta, alpha, ab = self.betas[td], self.alphas[td], self.alpha_bars[td]
        mean = (x_t - self._bcast(beta / (1 - ab).sqrt(), x_t) * eps_hat) / self._bcast(alpha.sqrt(), x_t)
        if noise is None:
            return mean
        var = beta * (1 - self.alpha_bar_at(td - 1)) / (1 - ab)
        return mean + self._bcast(var.sqrt(), x_t) * noise

    def ddim_step(
        self,
        eps_hat: torch.Tensor,
        t: int | torch.Tensor,
        t_prev: int | torch.Tensor,
        x_t: torch.Tensor,
        *,
        eta: float = 0.0,
        noise: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """One DDIM step ``x_t -> x_{t_prev}``, any ``t_prev < t``. Implements (ddim-step) and (ddim-sigma).

        With ``a = alpha_bars[t]``, ``a' = alpha_bars[t_prev]`` (``a' = 1`` for ``t_prev = -1``)
        and ``x0_hat`` from (ddpm-x0-from-eps)::

            sigma = eta * sqrt((1 - a') / (1 - a)) * sqrt(1 - a / a')
            x_prev = sqrt(a') x0_hat + sqrt(1 - a' - sigma^2) eps_hat + sigma noise

        ``eta = 0`` is the deterministic DDIM sampler; ``eta = 1`` with ``t_prev = t - 1`` is
        DDPM's ancestral step (same mean, variance beta_tilde).

        Args:
            eps_hat: predicted noise ``(B, ...)``.
            t: current step in ``0..T-1``: an int or an integer tensor ``(B,)``.
            t_prev: target step in ``-1..t-1``, same form as ``t``.
            x_t: current state, same shape as ``eps_hat``.
            eta: stochasticity, ``>= 0`` (1 gives DDPM's variance).
            noise: standard normal noise, required when ``eta > 0``.

        Returns:
            ``x_{t_prev}``, shape and dtype of ``x_t``.

        Raises:
            ValueError: if ``t_prev >= t``, a step is out of range, ``eta < 0``, noise is
                missing when ``eta > 0``, or shapes mismatch.
        """
        _check_data("x_t", x_t)
        _check_same_shape("x_t", x_t, eps_hat=eps_hat, noise=noise)
        if not (isinstance(eta, (int, float)) and not isinstance(eta, bool) and eta >= 0):
            raise ValueError(f"eta must be a non-negative number, got {eta!r}")
        if eta > 0 and noise is None:
            raise ValueError("noise is required when eta > 0")
        t = self._index(t, x_t)
        t_prev = self._index(t_prev, x_t, name="t_prev", lowest=-1)
        if _known(t, t_prev) and not bool((t_prev < t).all()):
            raise ValueError("t_prev must be smaller than t")
        a = self.alpha_bar_at(t.to(self.betas.device))
        a_prev = self.alpha_bar_at(t_prev.to(self.betas.device))
        sigma = eta * ((1 - a_prev) / (1 - a)).sqrt() * (1 - a / a_prev).sqrt()
        # clamp: with eta > 1 the "direction" variance would go negative
        dir_coef = (1 - a_prev - sigma**2).clamp(min=0).sqrt()
        x0_hat = (x_t - self._bcast((1 - a).sqrt(), x_t) * eps_hat) / self._bcast(a.sqrt(), x_t)
        x_prev = self._bcast(a_prev.sqrt(), x_t) * x0_hat + self._bcast(dir_coef, x_t) * eps_hat
        if noise is not None and eta > 0:
            x_prev = x_prev + self._bcast(sigma, x_t) * noise
        return x_prev

    def __repr__(self) -> str:
        return f"NoiseSchedule(T={self.T}, beta[0]={float(self.betas[0]):.3g}, beta[T-1]={float(self.betas[-1]):.3g})"


# ---------------------------------------------------------------------------------------------
# training and sampling loops
def eps_loss(
    model: EpsModel, x0: torch.Tensor, schedule: NoiseSchedule, generator: torch.Generator | None = None
) -> torch.Tensor:
    """The simplified DDPM loss ``L_simple``. Implements (ddpm-lsimple).

    Draws ``t`` uniformly from ``0..T-1`` and ``noise ~ N(0, I)`` per sample, forms ``x_t``
    with :meth:`NoiseSchedule.q_sample`, and returns the mean over the batch of
    ``|noise - model(x_t, t)|^2`` averaged over the data dimensions.

    Args:
        model: ``model(x_t, t)`` with ``t`` an int64 tensor ``(B,)``, returns ``(B, ...)``.
        x0: a batch of clean data ``(B, ...)``.
        schedule: the noise schedule.
        generator: CPU generator for ``t`` and the noise.

    Returns:
        Scalar tensor.
    """
    _check_data("x0", x0)
    B = x0.shape[0]
    t = torch.randint(schedule.T, (B,), generator=generator).to(x0.device)
    noise = torch.randn(x0.shape, generator=generator, dtype=x0.dtype).to(x0.device)
    x_t = schedule.q_sample(x0, t, noise)
    return ((noise - model(x_t, t)) ** 2).mean()


def _progress(it: range, progress: bool, desc: str):  # noqa: ANN202
    from tqdm.auto import tqdm

    return tqdm(it, disable=not progress, leave=False, desc=desc)


@torch.no_grad()
def ddpm_sample(
    model: EpsModel,
    schedule: NoiseSchedule,
    x_T: torch.Tensor,
    *,
    generator: torch.Generator | None = None,
    progress: bool = False,
) -> torch.Tensor:
    """Ancestral sampling: apply :meth:`NoiseSchedule.ddpm_step` for ``t = T-1, ..., 0``.

    Implements (ddpm-step), as in the algorithm ddpm-alg-sample of the DDPM chapter.

    Args:
        model: ``model(x_t, t)`` returning the predicted noise; ``t`` is an int64 tensor ``(B,)``.
        schedule: the noise schedule.
        x_T: the starting noise ``(B, ...)``, standard normal.
        generator: CPU generator for the per-step noise.
        progress: show a progress bar.

    Returns:
        The samples ``x_0`` (well, ``x_{-1}`` in the index-shifted convention: the output
        of the step at ``t = 0``), shape and dtype of ``x_T``.
    """
    _check_data("x_T", x_T)
    x = x_T
    for t in _progress(range(schedule.T - 1, -1, -1), progress, "DDPM"):
        tt = torch.full((x.shape[0],), t, dtype=torch.int64, device=x.device)
        noise = torch.randn(x.shape, generator=generator, dtype=x.dtype).to(x.device) if t > 0 else None
        x = schedule.ddpm_step(model(x, tt), tt, x, noise)
    return x


def ddim_timesteps(T: int, n: int, spacing: str = "trailing") -> torch.Tensor:
    """``n`` of the ``T`` training steps for a fast sampler, in descending order.

    * ``"leading"``: ``0, k, 2k, ..., (n-1)k`` with ``k = T // n`` (the DDIM paper's and
      Stable Diffusion's choice). It never starts at ``T - 1``, so the first state is not
      quite pure noise when ``n`` is small.
    * ``"trailing"``: ``round(T - j T / n) - 1`` for ``j = 0..n-1``: always starts at
      ``T - 1``; the default.
    * ``"linspace"``: ``n`` values rounded from ``linspace(0, T - 1, n)``.

    Args:
        T: the number of training steps, positive.
        n: the number of sampling steps, ``1 <= n <= T``.
        spacing: one of ``"leading"``, ``"trailing"``, ``"linspace"``.

    Returns:
        int64 tensor ``(n,)``, strictly decreasing. The step after the last one is ``-1``.

    >>> ddim_timesteps(1000, 5, "trailing").tolist()
    [999, 799, 599, 399, 199]
    >>> ddim_timesteps(1000, 5, "leading").tolist()
    [800, 600, 400, 200, 0]
    """
    for name, v in (("T", T), ("n", n)):
        if not isinstance(v, int) or isinstance(v, bool):
            raise TypeError(f"{name} must be an int, got {type(v).__name__}")
    if T < 1:
        raise ValueError(f"T must be positive, got {T}")
    if not 1 <= n <= T:
        raise ValueError(f"n must lie in 1..T = 1..{T}, got {n}")
    if spacing == "leading":
        steps = torch.arange(n, dtype=torch.int64) * (T // n)
    elif spacing == "trailing":
        steps = torch.round(T - torch.arange(n, dtype=torch.float64) * (T / n)).to(torch.int64) - 1
        steps = steps.flip(0)
    elif spacing == "linspace":
        steps = torch.linspace(0, T - 1, n, dtype=torch.float64).round().to(torch.int64)
    else:
        raise ValueError(f"spacing must be 'leading', 'trailing' or 'linspace', got {spacing!r}")
    return steps.flip(0)


@torch.no_grad()
def ddim_sample(
    model: EpsModel,
    schedule: NoiseSchedule,
    x_T: torch.Tensor,
    n_steps: int,
    *,
    eta: float = 0.0,
    spacing: str = "trailing",
    generator: torch.Generator | None = None,
    progress: bool = False,
) -> torch.Tensor:
    """DDIM sampling with ``n_steps`` model calls. Implements (ddim-step).

    Steps through ``ddim_timesteps(T, n_steps, spacing)`` and then ``-1``, applying
    :meth:`NoiseSchedule.ddim_step` between consecutive steps.

    Args:
        model: ``model(x_t, t)`` returning the predicted noise; ``t`` is int64 ``(B,)``.
        schedule: the noise schedule.
        x_T: the starting noise ``(B, ...)``.
        n_steps: number of steps (model evaluations).
        eta: 0 for deterministic DDIM, 1 for DDPM-like noise.
        spacing: see :func:`ddim_timesteps`.
        generator: CPU generator for the noise (used only when ``eta > 0``).
        progress: show a progress bar.

    Returns:
        The samples, shape and dtype of ``x_T``.
    """
    _check_data("x_T", x_T)
    steps = ddim_timesteps(schedule.T, n_steps, spacing).tolist() + [-1]
    x = x_T
    for i in _progress(range(n_steps), progress, "DDIM"):
        t, t_prev = steps[i], steps[i + 1]
        tt = torch.full((x.shape[0],), t, dtype=torch.int64, device=x.device)
        noise = torch.randn(x.shape, generator=generator, dtype=x.dtype).to(x.device) if eta > 0 else None
        x = schedule.ddim_step(model(x, tt), tt, t_prev, x, eta=eta, noise=noise)
    return x


# ---------------------------------------------------------------------------------------------
# the variational bound, term by term (DDPM chapter, "The bound in nats")
def _gauss_kl_iso(mean_q: torch.Tensor, var_q: torch.Tensor, mean_p: torch.Tensor, var_p: torch.Tensor) -> torch.Tensor:
    """KL(N(mean_q, var_q I) || N(mean_p, var_p I)) per sample; means (B, ...), positive scalar variances."""
    D = mean_q[0].numel()
    ratio = var_q / var_p
    return 0.5 * ((mean_q - mean_p) ** 2).flatten(1).sum(1) / var_p + 0.5 * D * (ratio - 1 - torch.log(ratio))


@torch.no_grad()
def elbo_terms(
    model: EpsModel,
    x0: torch.Tensor,
    schedule: NoiseSchedule,
    *,
    variance: str | torch.Tensor = "posterior",
    decoder_var: float | None = None,
    generator: torch.Generator | None = None,
) -> dict[str, torch.Tensor]:
    """The terms of the DDPM bound ``L = L_T + sum_t L_{t-1} + L_0``, in nats, per sample.

    Implements (ddpm-elbo-split) with the closed forms (ddpm-prior-term), (ddpm-step-kl) and
    (ddpm-decoder-term). In the math's 1-based steps (the code's index is one less):

    * ``prior``: ``L_T = KL(N(sqrt(abar_T) x0, (1 - abar_T) I) || N(0, I))``, exact.
    * ``steps``: ``L_{t-1}`` for math steps ``t = 2..T`` (column ``j`` is math step ``j + 2``,
      code index ``j + 1``): the KL between the posterior ``q(x_{t-1} | x_t, x0)`` and the
      model step ``N(mu_theta(x_t, t), sigma_t^2 I)`` with the mean (ddpm-eps-mean), the
      expectation over ``x_t ~ q(x_t | x0)`` estimated with one draw per sample and step
      (unbiased).
    * ``decoder``: ``L_0 = -log N(x0; mu_theta(x_1, 1), decoder_var I)``, one draw of ``x_1``:
      a Gaussian *density* decoder, so the total bounds ``-log p_theta(x0)`` for a density on
      ``R^D`` (it can be negative), not a discrete likelihood.
    * ``total``: the sum, an unbiased estimate of ``L(x0) >= -log p_theta(x0)``.

    The model is called ``T`` times on the batch.

    Args:
        model: ``model(x_t, t)`` predicting the noise; ``t`` an int64 tensor ``(B,)`` of code indices.
        x0: clean data ``(B, ...)``; ``D`` is the number of elements per sample.
        schedule: the noise schedule (``T >= 2``).
        variance: ``"posterior"`` (``sigma_t^2 = beta_tilde_t``, the chapter's choice),
            ``"beta"`` (``sigma_t^2 = beta_t``), or a positive tensor ``(T,)`` of per-step
            variances indexed by code index (entry 0 is unused).
        decoder_var: variance of the Gaussian decoder ``p_theta(x0 | x1)``; default
            ``beta_1`` (``betas[0]``).
        generator: CPU generator for the draws of ``x_t``.

    Returns:
        dict with ``"prior"`` ``(B,)``, ``"steps"`` ``(B, T-1)``, ``"decoder"`` ``(B,)``,
        ``"total"`` ``(B,)``, in the dtype and on the device of ``x0``.

    Raises:
        TypeError: on non-floating ``x0`` or a bad ``variance`` type.
        ValueError: on a bad ``variance`` string or shape, non-positive variances, or
            ``decoder_var <= 0``.

    >>> s = NoiseSchedule.linear(T=10, beta_end=0.5)
    >>> terms = elbo_terms(lambda x, t: torch.zeros_like(x), torch.zeros(3, 2), s)
    >>> terms["steps"].shape, terms["total"].shape
    (torch.Size([3, 9]), torch.Size([3]))
    """
    _check_data("x0", x0)
    if schedule.T < 2:
        raise ValueError(f"schedule must have T >= 2, got T = {schedule.T}")
    dev = schedule.betas.device
    if isinstance(variance, str):
        if variance == "posterior":
            var = schedule.posterior_variances
        elif variance == "beta":
            var = schedule.betas
        else:
            raise ValueError(f"variance must be 'posterior', 'beta' or a tensor (T,), got {variance!r}")
    elif isinstance(variance, torch.Tensor):
        if not variance.is_floating_point() or variance.shape != (schedule.T,):
            raise ValueError(f"a variance tensor must be floating with shape ({schedule.T},), got "
                             f"{variance.dtype} {tuple(variance.shape)}")
        var = variance.to(device=dev, dtype=torch.float64)
        if not bool((var[1:] > 0).all()):
            raise ValueError("variance must be positive at code indices 1..T-1")
    else:
        raise TypeError(f"variance must be a str or a tensor, got {type(variance).__name__}")
    if decoder_var is None:
        decoder_var = float(schedule.betas[0])
    if isinstance(decoder_var, bool) or not isinstance(decoder_var, (int, float)) or not decoder_var > 0:
        raise ValueError(f"decoder_var must be a positive number, got {decoder_var!r}")

    B, D = x0.shape[0], x0[0].numel()
    flat = x0.flatten(1)

    def draw() -> torch.Tensor:
        return torch.randn(x0.shape, generator=generator, dtype=x0.dtype).to(x0.device)

    # L_T: KL(N(sqrt(a) x0, (1 - a) I) || N(0, I)) = (a |x0|^2 - D a - D log(1 - a)) / 2
    a_T = schedule.alpha_bars[-1]
    prior = 0.5 * (float(a_T) * (flat**2).sum(1) - D * float(a_T) - D * math.log1p(-float(a_T)))

    steps = torch.empty(B, schedule.T - 1, dtype=x0.dtype, device=x0.device)
    for j in range(1, schedule.T):  # code index j = math step j + 1 >= 2
        tt = torch.full((B,), j, dtype=torch.int64, device=x0.device)
        x_t = schedule.q_sample(x0, tt, draw())
        mean_q, var_q = schedule.posterior(x0, x_t, j)
        mean_p = schedule.ddpm_step(model(x_t, tt), tt, x_t, None)
        var_p = var[j].to(dtype=x0.dtype, device=x0.device)
        steps[:, j - 1] = _gauss_kl_iso(mean_q, var_q.to(x0.dtype), mean_p, var_p)

    # L_0: -log N(x0; mu_theta(x_1, 1), decoder_var I)
    t0 = torch.zeros(B, dtype=torch.int64, device=x0.device)
    x_1 = schedule.q_sample(x0, t0, draw())
    mu = schedule.ddpm_step(model(x_1, t0), t0, x_1, None)
    decoder = 0.5 * ((x0 - mu) ** 2).flatten(1).sum(1) / decoder_var + 0.5 * D * math.log(2 * math.pi * decoder_var)
    prior = prior.to(x0.dtype)
    return {"prior": prior, "steps": steps, "decoder": decoder, "total": prior + steps.sum(1) + decoder}
