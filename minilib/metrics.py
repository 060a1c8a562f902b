"""Sample-quality metrics for point clouds: sliced Wasserstein distance and kernel MMD.

Both compare two sets of samples ``x`` (N, D) and ``y`` (M, D) and return a 0-dim tensor in
the dtype of ``x``; call ``float(...)`` for a number. Neither needs a density.

``mean_se`` and ``paired_difference`` summarise such a metric measured over independent
repetitions: mean ± standard error, and paired differences in units of their standard error.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, NamedTuple

import torch

__all__ = ["PairedDifference", "mean_se", "mmd", "paired_difference", "sliced_wasserstein"]


def _check_pair(x: torch.Tensor, y: torch.Tensor) -> None:
    for name, t in (("x", x), ("y", y)):
        if not isinstance(t, torch.Tensor):
            raise TypeError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
        if not t.is_floating_point():
            raise TypeError(f"{name} must be a floating tensor, got {t.dtype}")
        if t.ndim != 2:
            raise ValueError(f"{name} must have shape (N, D), got {tuple(t.shape)}")
    if x.shape[1] != y.shape[1]:
        raise ValueError(f"x and y must have the same dimension D, got {x.shape[1]} and {y.shape[1]}")
    if x.device != y.device:
        raise ValueError(f"x and y must be on the same device, got {x.device} and {y.device}")


def sliced_wasserstein(
    x: torch.Tensor, y: torch.Tensor, n_projections: int = 128, seed: int = 0
) -> torch.Tensor:
    """Monte Carlo estimate of the sliced 2-Wasserstein distance between two sample sets.

    The sliced distance is :math:`\\mathrm{SW}_2(p, q) = \\big(\\mathbb{E}_{\\theta \\sim
    \\mathrm{Unif}(S^{D-1})} W_2^2(\\theta_\\# p, \\theta_\\# q)\\big)^{1/2}`, where
    :math:`\\theta_\\# p` is the law of :math:`\\theta^\\top x`. This estimator draws
    ``n_projections`` directions uniformly on the sphere (normalized Gaussians, from a CPU
    generator seeded with ``seed``, so the same seed gives the same directions everywhere).
    For each direction it computes the exact 1D :math:`W_2^2` between the two empirical
    measures: with equal sample sizes the optimal 1D coupling matches sorted values, so
    :math:`W_2^2 = \\frac1N \\sum_i (u_{(i)} - v_{(i)})^2`. It returns the square root of
    the mean over directions. The estimate is a distance between the *empirical* measures:
    two samples of the same distribution give a small positive value that shrinks as N grows,
    so compare methods at equal N and seed.

    Args:
        x: samples ``(N, D)``.
        y: samples ``(N, D)``; same N, D, device as ``x``.
        n_projections: number of random directions, positive.
        seed: seed of the directions, a non-negative int.

    Returns:
        0-dim tensor in the dtype of ``x``.

    Raises:
        TypeError: if ``x`` or ``y`` is not a floating tensor.
        ValueError: on shape mismatch, N = 0, or bad ``n_projections`` / ``seed``.

    >>> x = torch.zeros(4, 2); y = x + torch.tensor([3.0, 0.0])
    >>> round(float(sliced_wasserstein(x, y, n_projections=4096)) ** 2 / 4.5, 1)  # E (theta.s)^2 = |s|^2/D
    1.0
    """
    _check_pair(x, y)
    if x.shape[0] != y.shape[0]:
        raise ValueError(f"x and y must have the same number of samples, got {x.shape[0]} and {y.shape[0]}")
    if x.shape[0] == 0:
        raise ValueError("x and y must hold at least one sample")
    if not isinstance(n_projections, int) or isinstance(n_projections, bool) or n_projections < 1:
        raise ValueError(f"n_projections must be a positive int, got {n_projections!r}")
    if not isinstance(seed, int) or isinstance(seed, bool) or seed < 0:
        raise ValueError(f"seed must be a non-negative int, got {seed!r}")
    g = torch.Generator().manual_seed(seed)
    theta = torch.randn(x.shape[1], n_projections, generator=g, dtype=torch.float64)
    theta = theta / theta.norm(dim=0, keepdim=True)  # (D, P), unit columns
    theta = theta.to(device=x.device, dtype=x.dtype)
    u = torch.sort(x @ theta, dim=0).values  # (N, P) projections, sorted per direction
    v = torch.sort(y.to(x.dtype) @ theta, dim=0).values
    w2_sq = ((u - v) ** 2).mean(dim=0)  # (P,) exact 1D W2^2 per direction
    return w2_sq.mean().sqrt()


def _rbf_sum(a: torch.Tensor, b: torch.Tensor, bandwidths: torch.Tensor) -> torch.Tensor:
    """Sum over bandwidths h of exp(-|a_i - b_j|^2 / (2 h^2)), shape (len(a), len(b))."""
    d2 = torch.cdist(a, b).pow(2)  # (Na, Nb)
    return torch.exp(-d2[..., None] / (2 * bandwidths**2)).sum(-1)


def mmd(
    x: torch.Tensor, y: torch.Tensor, *, bandwidths: Sequence[float] = (0.1, 0.2, 0.5, 1.0, 2.0)
) -> torch.Tensor:
    """Unbiased estimate of the squared maximum mean discrepancy with a sum of RBF kernels.

    With :math:`k(a, b) = \\sum_h \\exp(-\\lVert a - b\\rVert^2 / 2h^2)`,
    :math:`\\mathrm{MMD}^2 = \\mathbb{E}\\,k(x, x') + \\mathbb{E}\\,k(y, y') - 2\\,\\mathbb{E}\\,k(x, y)`.
    The estimator averages the within-set kernels over pairs :math:`i \\ne j` only, which makes
    it unbiased; it can therefore be slightly negative when the two distributions agree.

    Args:
        x: samples ``(N, D)``, N at least 2.
        y: samples ``(M, D)``, M at least 2, same D and device.
        bandwidths: positive kernel bandwidths h (in data units).

    Returns:
        0-dim tensor in the dtype of ``x``.

    Raises:
        TypeError: if ``x`` or ``y`` is not a floating tensor.
        ValueError: on shape mismatch, fewer than 2 samples, or bad bandwidths.

    >>> x = torch.randn(200, 2, generator=torch.Generator().manual_seed(0))
    >>> float(mmd(x, x + 3.0)) > 1.0
    True
    """
    _check_pair(x, y)
    if x.shape[0] < 2 or y.shape[0] < 2:
        raise ValueError(f"x and y need at least 2 samples each, got {x.shape[0]} and {y.shape[0]}")
    bw = [float(h) for h in bandwidths]
    if not bw or any(not h > 0 for h in bw):
        raise ValueError(f"bandwidths must be a non-empty sequence of positive numbers, got {bandwidths!r}")
    h = torch.tensor(bw, device=x.device, dtype=x.dtype)
    y = y.to(x.dtype)
    n, m = x.shape[0], y.shape[0]
    kxx, kyy, kxy = _rbf_sum(x, x, h), _rbf_sum(y, y, h), _rbf_sum(x, y, h)
    # drop the diagonal (i = j) of the within-set terms: that is what makes the estimate unbiased
    term_xx = (kxx.sum() - kxx.diagonal().sum()) / (n * (n - 1))
    term_yy = (kyy.sum() - kyy.diagonal().sum()) / (m * (m - 1))
    return term_xx + term_yy - 2 * kxy.mean()


def _repeats(values: Any, name: str) -> torch.Tensor:
    """``values`` as a 1-D float64 CPU tensor of at least 2 finite numbers, or a clear error."""
    if isinstance(values, torch.Tensor):
        v = values.detach().to(device="cpu", dtype=torch.float64)
    else:
        try:
            v = torch.as_tensor(values, dtype=torch.float64)
        except (TypeError, ValueError, RuntimeError) as err:
            raise TypeError(f"{name} must be a 1-D sequence or tensor of numbers, got {type(values).__name__}") from err
    if v.ndim != 1:
        raise ValueError(f"{name} must be 1-D (one value per repetition), got shape {tuple(v.shape)}")
    if v.numel() < 2:
        raise ValueError(f"{name} must hold at least 2 values to estimate a standard error, got {v.numel()}")
    if not bool(torch.isfinite(v).all()):
        raise ValueError(f"{name} must be finite, got NaN or infinite values")
    return v


def mean_se(values: Any) -> tuple[float, float]:
    """Mean and standard error of the mean of repeated, independent measurements.

    With ``n`` values :math:`v_r`, the mean is :math:`\\bar v = \\frac1n\\sum_r v_r` and the standard
    error is :math:`s/\\sqrt n` with the sample standard deviation
    :math:`s^2 = \\frac{1}{n-1}\\sum_r (v_r - \\bar v)^2`: the same quantity
    :func:`minilib.check.within_se` uses. Use it to report a noisy metric (a sliced Wasserstein
    distance, say) averaged over repetitions as mean ± SE.

    Args:
        values: a 1-D sequence, array or tensor of at least 2 finite numbers.

    Returns:
        ``(mean, se)`` as Python floats.

    Raises:
        TypeError: if ``values`` is not numeric.
        ValueError: if it is not 1-D, has fewer than 2 values, or holds NaN or infinity.

    >>> mean_se([1.0, 2.0, 3.0])  # s = 1, se = 1/sqrt(3)
    (2.0, 0.5773502691896258)
    """
    v = _repeats(values, "values")
    return float(v.mean()), float(v.std()) / math.sqrt(v.numel())


class PairedDifference(NamedTuple):
    """Mean of per-repetition differences, its standard error, and their ratio ``z``."""

    mean: float
    se: float
    z: float


def paired_difference(a: Any, b: Any) -> PairedDifference:
    """Compare two metrics measured on the same repetitions through their differences.

    When two quantities are measured on the same repetitions (same starting noise, same
    reference sample), the noise they share cancels in the differences :math:`d_r = a_r - b_r`,
    so comparing them this way is sharper than comparing the two means. Returns
    ``mean_se(d)`` and :math:`z = \\bar d / \\mathrm{SE}(d)`, the difference in units of its own
    standard error (``z = 0`` when all differences are 0; ``+-inf`` when they are all equal and
    non-zero). A "> 4 SE" claim is ``check.greater(paired_difference(a, b).z, 4.0, ...)``.

    Args:
        a: per-repetition values, 1-D, at least 2 finite numbers.
        b: the same number of per-repetition values, paired with ``a`` by position.

    Returns:
        ``PairedDifference(mean, se, z)``, Python floats.

    Raises:
        TypeError: if ``a`` or ``b`` is not numeric.
        ValueError: on bad shapes, fewer than 2 values, a length mismatch, or NaN/infinity.

    >>> paired_difference([3.0, 4.0, 5.0], [1.0, 1.0, 2.0])  # d = (2, 3, 3)
    PairedDifference(mean=2.6666666666666665, se=0.33333333333333337, z=7.999999999999999)
    """
    va, vb = _repeats(a, "a"), _repeats(b, "b")
    if va.numel() != vb.numel():
        raise ValueError(f"a and b must hold the same number of repetitions, got {va.numel()} and {vb.numel()}")
    mean, se = mean_se(va - vb)
    if se > 0:
        z = mean / se
    else:
        z = 0.0 if mean == 0 else math.copysign(math.inf, mean)
    return PairedDifference(mean, se, z)
