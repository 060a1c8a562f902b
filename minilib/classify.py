"""Softmax classification: stable softmax, cross-entropy and its gradient, and the Gaussian
(linear discriminant) posterior, from the chapter "Softmax, cross-entropy and the bias term".

Logits live in the last dimension: ``z`` has shape ``(..., K)`` for ``K`` classes.
"""

from __future__ import annotations

import math

import torch

__all__ = [
    "cross_entropy",
    "cross_entropy_grad",
    "entropy",
    "gaussian_posterior_params",
    "kl_divergence",
    "label_smoothed_cross_entropy",
    "label_smoothing_logit_gap",
    "log_softmax",
    "logsumexp",
    "naive_softmax",
    "soft_cross_entropy",
    "stable_softmax",
]


def _check_logits(z: torch.Tensor, name: str = "z") -> None:
    if not isinstance(z, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(z).__name__}")
    if not z.is_floating_point():
        raise TypeError(f"{name} must be a floating tensor, got {z.dtype}")
    if z.dim() == 0 or z.shape[-1] == 0:
        raise ValueError(f"{name} must have shape (..., K) with K >= 1, got {tuple(z.shape)}")


def _check_temperature(temperature: float) -> None:
    if not isinstance(temperature, (int, float)) or isinstance(temperature, bool) or not temperature > 0:
        raise ValueError(f"temperature must be a positive number, got {temperature!r}")


def naive_softmax(z: torch.Tensor, *, temperature: float = 1.0) -> torch.Tensor:
    """The softmax exactly as defined, :math:`e^{z_k/T} / \\sum_j e^{z_j/T}`, with no shift.

    Shown only to watch it fail: ``exp`` overflows to ``inf`` once a logit exceeds about 88.7
    in float32, and ``inf / inf`` is ``nan``. Use :func:`stable_softmax`. Implements (softmax-bias-def).

    Args:
        z: logits of shape ``(..., K)``, floating.
        temperature: ``T > 0``.

    Returns:
        Probabilities of shape ``(..., K)``, same dtype and device as ``z``.

    >>> naive_softmax(torch.tensor([1000.0, 1000.0]))
    tensor([nan, nan])
    """
    _check_logits(z)
    _check_temperature(temperature)
    e = torch.exp(z / temperature)
    return e / e.sum(dim=-1, keepdim=True)


def logsumexp(z: torch.Tensor) -> torch.Tensor:
    """:math:`\\log\\sum_j e^{z_j}` over the last dimension, shifted by the maximum first.

    With :math:`m = \\max_j z_j`, :math:`\\mathrm{LSE}(z) = m + \\log\\sum_j e^{z_j - m}`: every
    exponent is at most zero and one term equals one, so nothing overflows and the log's argument
    lies in ``[1, K]``. Rows whose maximum is ``-inf`` (all logits masked) give ``-inf``.
    Implements (softmax-bias-lse).

    Args:
        z: logits of shape ``(..., K)``, floating.

    Returns:
        Tensor of shape ``(...,)``.

    >>> round(logsumexp(torch.tensor([1000.0, 1000.0], dtype=torch.float64)).item() - 1000.0, 4)  # log 2
    0.6931
    """
    _check_logits(z)
    m = z.amax(dim=-1, keepdim=True)
    # a row of all -inf would give (-inf) - (-inf) = nan; shift such rows by 0 instead
    m = torch.where(torch.isfinite(m), m, torch.zeros_like(m))
    return m.squeeze(-1) + torch.log(torch.exp(z - m).sum(dim=-1))


def log_softmax(z: torch.Tensor, *, temperature: float = 1.0) -> torch.Tensor:
    """:math:`\\log \\operatorname{softmax}(z/T)_k = z_k/T - \\mathrm{LSE}(z/T)`, computed stably.

    Implements (softmax-bias-logsoftmax).

    Args:
        z: logits of shape ``(..., K)``, floating.
        temperature: ``T > 0``.

    Returns:
        Log-probabilities of shape ``(..., K)``.
    """
    _check_logits(z)
    _check_temperature(temperature)
    s = z / temperature
    return s - logsumexp(s).unsqueeze(-1)


def stable_softmax(z: torch.Tensor, *, temperature: float = 1.0) -> torch.Tensor:
    """:math:`\\operatorname{softmax}(z/T)`, with the maximum subtracted before ``exp``.

    Subtracting a constant from every logit leaves the softmax unchanged, so the shift is free.
    Implements (softmax-bias-def) and (softmax-bias-shift).

    Args:
        z: logits of shape ``(..., K)``, floating.
        temperature: ``T > 0``; ``T -> 0`` approaches the one-hot argmax, large ``T`` the uniform.

    Returns:
        Probabilities of shape ``(..., K)`` that sum to one along the last dimension.

    >>> stable_softmax(torch.tensor([1000.0, 1000.0]))
    tensor([0.5000, 0.5000])
    """
    _check_logits(z)
    _check_temperature(temperature)
    s = z / temperature
    e = torch.exp(s - s.amax(dim=-1, keepdim=True))
    return e / e.sum(dim=-1, keepdim=True)


def _check_targets(z: torch.Tensor, y: torch.Tensor) -> None:
    _check_logits(z, "logits")
    if not isinstance(y, torch.Tensor) or y.dtype not in (torch.int64, torch.int32, torch.int16, torch.uint8, torch.int8):
        raise TypeError(f"targets must be an integer tensor of class indices, got {getattr(y, 'dtype', type(y).__name__)}")
    if tuple(y.shape) != tuple(z.shape[:-1]):
        raise ValueError(f"targets must have shape {tuple(z.shape[:-1])} (logits without the class dim), got {tuple(y.shape)}")
    if y.device.type != "meta" and y.numel() and (int(y.min()) < 0 or int(y.max()) >= z.shape[-1]):
        raise ValueError(f"targets must lie in [0, {z.shape[-1] - 1}]")


def cross_entropy(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Per-example cross-entropy :math:`-\\log p_y = \\mathrm{LSE}(z) - z_y`.

    Implements (softmax-bias-ce).

    Args:
        logits: ``(..., K)``, floating.
        targets: class indices of shape ``(...,)``, integer, in ``[0, K)``.

    Returns:
        Losses of shape ``(...,)`` (not averaged).

    Raises:
        TypeError: for non-floating logits or non-integer targets.
        ValueError: for mismatched shapes or out-of-range targets.
    """
    _check_targets(logits, targets)
    z_y = logits.gather(-1, targets.long().unsqueeze(-1)).squeeze(-1)
    return logsumexp(logits) - z_y


def cross_entropy_grad(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """The gradient of :func:`cross_entropy` with respect to the logits: ``p - y``.

    ``p`` is the softmax of the logits and ``y`` the one-hot target. Implements (softmax-bias-grad).

    Args:
        logits: ``(..., K)``, floating.
        targets: class indices of shape ``(...,)``, integer.

    Returns:
        ``(..., K)``; each row sums to zero.

    >>> cross_entropy_grad(torch.zeros(1, 2), torch.tensor([0]))
    tensor([[-0.5000,  0.5000]])
    """
    _check_targets(logits, targets)
    p = stable_softmax(logits)
    y = torch.zeros_like(p).scatter_(-1, targets.long().unsqueeze(-1), 1.0)
    return p - y


def gaussian_posterior_params(
    means: torch.Tensor, cov: torch.Tensor, priors: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Weights and biases of the class posterior for Gaussian classes with a shared covariance.

    If :math:`x \\mid y=k \\sim \\mathcal{N}(\\mu_k, \\Sigma)` and :math:`P(y=k) = \\pi_k`, then
    :math:`P(y=k \\mid x) = \\operatorname{softmax}(Wx + b)_k` with
    :math:`w_k = \\Sigma^{-1}\\mu_k` and :math:`b_k = -\\tfrac12 \\mu_k^\\top\\Sigma^{-1}\\mu_k + \\log\\pi_k`.
    Implements (softmax-bias-lda).

    Args:
        means: ``(K, D)`` class means, floating.
        cov: ``(D, D)`` shared covariance, symmetric positive definite.
        priors: ``(K,)`` class probabilities, positive, summing to one.

    Returns:
        ``(W, b)`` with ``W`` of shape ``(K, D)`` (row ``k`` is :math:`w_k`) and ``b`` of shape ``(K,)``,
        so the logits of a batch ``x`` of shape ``(N, D)`` are ``x @ W.T + b``.

    Raises:
        TypeError: for non-floating inputs.
        ValueError: for wrong shapes, a covariance that is not positive definite, or priors
            that are not a probability vector.

    >>> W, b = gaussian_posterior_params(torch.tensor([[1.0], [-1.0]]), torch.eye(1), torch.tensor([0.5, 0.5]))
    >>> W.flatten().tolist(), b.tolist()
    ([1.0, -1.0], [-1.1931471824645996, -1.1931471824645996])
    """
    for name, t in (("means", means), ("cov", cov), ("priors", priors)):
        if not isinstance(t, torch.Tensor) or not t.is_floating_point():
            raise TypeError(f"{name} must be a floating tensor, got {getattr(t, 'dtype', type(t).__name__)}")
    if means.dim() != 2:
        raise ValueError(f"means must have shape (K, D), got {tuple(means.shape)}")
    K, D = means.shape
    if tuple(cov.shape) != (D, D):
        raise ValueError(f"cov must have shape ({D}, {D}), got {tuple(cov.shape)}")
    if tuple(priors.shape) != (K,):
        raise ValueError(f"priors must have shape ({K},), got {tuple(priors.shape)}")
    if (priors <= 0).any() or abs(float(priors.sum()) - 1.0) > 1e-5:
        raise ValueError("priors must be positive and sum to one")
    chol, info = torch.linalg.cholesky_ex(cov)
    if int(info) != 0 or not torch.allclose(cov, cov.T):
        raise ValueError("cov must be symmetric positive definite")
    # w_k = Sigma^{-1} mu_k for all k at once: solve Sigma W^T = M^T
    W = torch.cholesky_solve(means.T, chol).T  # (K, D)
    b = -0.5 * (W * means).sum(-1) + torch.log(priors)
    return W, b


# --- Information-theoretic reading and label smoothing (depth section of "softmax-bias") ---


def _check_probs(p: torch.Tensor, name: str) -> None:
    _check_logits(p, name)  # same type and shape rules as logits; then the values
    if p.device.type != "meta" and p.numel():
        tol = 1e-4 if p.dtype in (torch.float16, torch.bfloat16, torch.float32) else 1e-8
        if bool((p < 0).any()) or bool(((p.sum(-1) - 1).abs() > tol * p.shape[-1]).any()):
            raise ValueError(f"{name} must be non-negative and sum to one along the last dimension")


def entropy(p: torch.Tensor) -> torch.Tensor:
    """Shannon entropy :math:`H(p) = -\\sum_k p_k \\log p_k` in nats, with :math:`0 \\log 0 = 0`.

    Implements (softmax-bias-entropy).

    Args:
        p: probabilities of shape ``(..., K)``, non-negative, summing to one.

    Returns:
        Tensor of shape ``(...,)``, same dtype and device as ``p``. Divide by ``log 2`` for bits.

    >>> round(entropy(torch.tensor([0.5, 0.5])).item(), 4)  # log 2
    0.6931
    """
    _check_probs(p, "p")
    return -torch.xlogy(p, p).sum(-1)


def kl_divergence(p: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
    """:math:`\\mathrm{KL}(p\\Vert q) = \\sum_k p_k \\log(p_k / q_k)` in nats.

    Terms with ``p_k = 0`` contribute zero; a ``q_k = 0`` where ``p_k > 0`` gives ``inf``.
    Implements (softmax-bias-kl).

    Args:
        p, q: probabilities of the same shape ``(..., K)``.

    Returns:
        Tensor of shape ``(...,)``, non-negative (Gibbs' inequality).

    >>> kl_divergence(torch.tensor([0.5, 0.5]), torch.tensor([0.5, 0.5])).item()
    0.0
    """
    _check_probs(p, "p")
    _check_probs(q, "q")
    if p.shape != q.shape:
        raise ValueError(f"p and q must have the same shape, got {tuple(p.shape)} and {tuple(q.shape)}")
    return (torch.xlogy(p, p) - torch.xlogy(p, q)).sum(-1)


def soft_cross_entropy(logits: torch.Tensor, target_probs: torch.Tensor) -> torch.Tensor:
    """Cross-entropy :math:`H(t, q) = -\\sum_k t_k \\log q_k` of ``q = softmax(logits)`` against a target distribution.

    Computed as :math:`\\mathrm{LSE}(z) - \\sum_k t_k z_k` (uses :math:`\\sum_k t_k = 1`), so it never
    takes the log of an underflowed probability. With a one-hot ``t`` it equals :func:`cross_entropy`;
    its gradient with respect to the logits is ``softmax(z) - t``. Implements (softmax-bias-softce).

    Args:
        logits: ``(..., K)``, floating.
        target_probs: ``(..., K)``, a probability vector per row.

    Returns:
        Losses of shape ``(...,)`` (not averaged), in nats.
    """
    _check_logits(logits, "logits")
    _check_probs(target_probs, "target_probs")
    if target_probs.shape != logits.shape:
        raise ValueError(f"target_probs must have the shape of logits {tuple(logits.shape)}, got {tuple(target_probs.shape)}")
    return logsumexp(logits) - (target_probs * logits).sum(-1)


def _check_eps(eps: float) -> None:
    if not isinstance(eps, (int, float)) or isinstance(eps, bool) or not 0.0 <= eps <= 1.0:
        raise ValueError(f"eps must be a number in [0, 1], got {eps!r}")


def label_smoothed_cross_entropy(logits: torch.Tensor, targets: torch.Tensor, eps: float) -> torch.Tensor:
    """Cross-entropy against the smoothed target :math:`(1-\\varepsilon)\\,e_y + \\varepsilon/K`.

    Uses the decomposition :math:`(1-\\varepsilon)\\,[\\mathrm{LSE}(z) - z_y] + \\varepsilon\\,[\\mathrm{LSE}(z) - \\bar z]`,
    with :math:`\\bar z` the mean logit (the second bracket is the cross-entropy of the uniform
    distribution against ``softmax(z)``). Matches ``torch.nn.functional.cross_entropy(...,
    label_smoothing=eps, reduction="none")``. Implements (softmax-bias-ls-target) and (softmax-bias-ls-decomp).

    Args:
        logits: ``(..., K)``, floating.
        targets: class indices of shape ``(...,)``, integer, in ``[0, K)``.
        eps: smoothing weight in ``[0, 1]``; ``0`` is plain cross-entropy.

    Returns:
        Losses of shape ``(...,)`` (not averaged), in nats.
    """
    _check_targets(logits, targets)
    _check_eps(eps)
    lse = logsumexp(logits)
    z_y = logits.gather(-1, targets.long().unsqueeze(-1)).squeeze(-1)
    return (1.0 - eps) * (lse - z_y) + eps * (lse - logits.mean(-1))


def label_smoothing_logit_gap(num_classes: int, eps: float) -> float:
    """The logit gap :math:`z_y - z_k` (any ``k != y``) at the minimum of label-smoothed cross-entropy.

    :math:`\\log\\big((1 - \\varepsilon + \\varepsilon/K) / (\\varepsilon/K)\\big)`: finite for ``eps > 0``,
    ``inf`` for ``eps = 0`` (no minimiser exists). Implements (softmax-bias-ls-gap).

    Args:
        num_classes: ``K >= 2``.
        eps: smoothing weight in ``[0, 1]``.

    >>> round(label_smoothing_logit_gap(3, 0.1), 4)  # log 28
    3.3322
    """
    if not isinstance(num_classes, int) or isinstance(num_classes, bool) or num_classes < 2:
        raise ValueError(f"num_classes must be an integer >= 2, got {num_classes!r}")
    _check_eps(eps)
    if eps == 0:
        return float("inf")
    return math.log((1.0 - eps + eps / num_classes) / (eps / num_classes))
