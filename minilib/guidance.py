"""Guidance for conditional generative models: classifier guidance and classifier-free guidance.

Convention (the "Flows and beyond" part): ``t = 0`` is the noise (source) and ``t = 1`` is
the data. The guidance scale ``w`` is the weight on the conditional prediction:

* ``w = 0`` samples the unconditional model,
* ``w = 1`` samples the plain conditional model,
* ``w > 1`` extrapolates past it (sharpens :math:`p(y \\mid x)`).

Ho and Salimans write the same rule with :math:`(1 + w')` on the conditional term, so their
:math:`w'` is our ``w - 1``.

The module also holds the exact path quantities of a Gaussian mixture under the linear path
:math:`x_t = (1 - t)\\,x_0 + t\\,x_1` with :math:`x_0 \\sim \\mathcal{N}(0, I)`, so that the
guided score and velocity can be computed exactly and used as a reference.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from minilib._validate import float_tensor as _float_tensor

__all__ = [
    "cfg",
    "classifier_grad",
    "classifier_guidance",
    "mixture_path_terms",
    "posterior_average",
]


def _weight(w: float | torch.Tensor, ref: torch.Tensor) -> float | torch.Tensor:
    """Turn ``w`` (a number, a 0-d tensor or a per-example ``(B,)`` tensor) into a broadcastable factor."""
    if isinstance(w, bool) or not isinstance(w, (int, float, torch.Tensor)):
        raise TypeError(f"w must be a float or a tensor, got {type(w).__name__}")
    if isinstance(w, torch.Tensor):
        if not w.is_floating_point():
            raise TypeError(f"w must be a floating-point tensor, got dtype {w.dtype}")
        if w.dim() == 0:
            return w
        if w.dim() != 1 or ref.dim() == 0 or w.shape[0] != ref.shape[0]:
            raise ValueError(
                f"w must be a number, a 0-d tensor or have shape (B,) = ({ref.shape[0] if ref.dim() else '?'},), "
                f"got shape {tuple(w.shape)}"
            )
        return w.reshape(-1, *([1] * (ref.dim() - 1)))  # (B, 1, ..., 1)
    if w != w or abs(w) == float("inf"):
        raise ValueError(f"w must be finite, got {w}")
    return float(w)


def cfg(eps_cond: torch.Tensor, eps_uncond: torch.Tensor, w: float | torch.Tensor) -> torch.Tensor:
    """Classifier-free guidance: mix a conditional and an unconditional prediction.

    The rule is :math:`\\tilde\\epsilon = \\epsilon_u + w\\,(\\epsilon_c - \\epsilon_u)`, so
    ``w = 0`` is unconditional, ``w = 1`` is conditional and ``w > 1`` extrapolates. Because the
    weights sum to one, the same rule applies unchanged to noise predictions, scores and
    flow-matching velocities (each is an affine function of the score with the same
    coefficients for both branches).

    Implements (guidance-cfg).

    Args:
        eps_cond: the prediction given the condition, shape ``(B, ...)``.
        eps_uncond: the prediction without it (the null class), same shape.
        w: the guidance scale: a float, a 0-d tensor, or a ``(B,)`` tensor (one scale per example).

    Returns:
        The guided prediction, shape ``(B, ...)``, dtype and device of ``eps_cond``.

    Raises:
        TypeError: non-float tensors or a ``w`` of the wrong type.
        ValueError: mismatched shapes, a ``w`` of the wrong shape, or a non-finite ``w``.

    >>> c, u = torch.tensor([[1.0, 2.0]]), torch.tensor([[0.0, 0.0]])
    >>> cfg(c, u, 0.0).tolist(), cfg(c, u, 1.0).tolist(), cfg(c, u, 3.0).tolist()
    ([[0.0, 0.0]], [[1.0, 2.0]], [[3.0, 6.0]])
    """
    _float_tensor("eps_cond", eps_cond)
    _float_tensor("eps_uncond", eps_uncond)
    if eps_cond.shape != eps_uncond.shape:
        raise ValueError(
            f"eps_cond and eps_uncond must have the same shape, got {tuple(eps_cond.shape)} "
            f"and {tuple(eps_uncond.shape)}"
        )
    scale = _weight(w, eps_cond)
    return eps_uncond + scale * (eps_cond - eps_uncond)


def classifier_grad(
    log_prob_fn: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, y: torch.Tensor
) -> torch.Tensor:
    """The gradient :math:`\\nabla_x \\log p(y \\mid x)` of a classifier, by autograd.

    Args:
        log_prob_fn: maps ``x`` of shape ``(B, ...)`` to class log-probabilities of shape
            ``(B, C)`` (for instance ``lambda x: model(x, t).log_softmax(-1)``).
        x: the points, shape ``(B, ...)``, floating point.
        y: the class of each point, shape ``(B,)``, integer, in ``[0, C)``.

    Returns:
        The gradient, shape ``(B, ...)``. Each row depends only on its own example, because the
        per-example log-probabilities are summed before differentiating.

    Raises:
        TypeError: a non-float ``x`` or a non-integer ``y``.
        ValueError: wrong shapes or classes out of range.
    """
    _float_tensor("x", x)
    if not isinstance(y, torch.Tensor) or y.dtype not in (torch.int64, torch.int32, torch.int16, torch.uint8):
        raise TypeError(f"y must be an integer tensor of class indices, got {getattr(y, 'dtype', type(y).__name__)}")
    if y.shape != x.shape[:1]:
        raise ValueError(f"y must have shape (B,) = ({x.shape[0]},), got {tuple(y.shape)}")
    with torch.enable_grad():
        x_ = x.detach().requires_grad_(True)
        logp = log_prob_fn(x_)
        if logp.dim() != 2 or logp.shape[0] != x.shape[0]:
            raise ValueError(f"log_prob_fn must return shape (B, C), got {tuple(logp.shape)}")
        if bool(((y < 0) | (y >= logp.shape[1])).any()):
            raise ValueError(f"y must lie in [0, {logp.shape[1]}), got values outside")
        chosen = logp.gather(1, y.long()[:, None]).sum()
        (grad,) = torch.autograd.grad(chosen, x_)
    return grad


def classifier_guidance(score: torch.Tensor, grad_log_py: torch.Tensor, w: float | torch.Tensor) -> torch.Tensor:
    """Classifier guidance: :math:`\\nabla \\log p_t(x) + w\\,\\nabla \\log p_t(y \\mid x)`.

    Implements (guidance-classifier).

    Args:
        score: the unconditional score :math:`\\nabla_x \\log p_t(x)`, shape ``(B, ...)``.
        grad_log_py: the classifier gradient :math:`\\nabla_x \\log p_t(y \\mid x)`, same shape
            (see :func:`classifier_grad`).
        w: the guidance scale (``w = 1`` gives the conditional score, ``w = 0`` the unconditional).

    Returns:
        The guided score, shape ``(B, ...)``.

    Raises:
        TypeError, ValueError: as for :func:`cfg`.

    >>> classifier_guidance(torch.tensor([[1.0]]), torch.tensor([[2.0]]), 3.0).tolist()
    [[7.0]]
    """
    _float_tensor("score", score)
    _float_tensor("grad_log_py", grad_log_py)
    if score.shape != grad_log_py.shape:
        raise ValueError(
            f"score and grad_log_py must have the same shape, got {tuple(score.shape)} and "
            f"{tuple(grad_log_py.shape)}"
        )
    return score + _weight(w, score) * grad_log_py


def mixture_path_terms(
    x: torch.Tensor,
    t: float | torch.Tensor,
    means: torch.Tensor,
    stds: torch.Tensor,
    weights: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Exact per-component quantities of a Gaussian mixture pushed along the linear path.

    The data are :math:`x_1 \\sim \\sum_k \\pi_k\\,\\mathcal{N}(\\mu_k, \\sigma_k^2 I)` and the
    noise is :math:`x_0 \\sim \\mathcal{N}(0, I)`; ``t = 0`` is noise and ``t = 1`` is data. Given
    component :math:`k`, :math:`x_t \\sim \\mathcal{N}(t\\mu_k, v_k I)` with
    :math:`v_k = (1-t)^2 + t^2\\sigma_k^2`.

    Implements (guidance-mixture-path) and (guidance-mixture-velocity).

    Args:
        x: points, shape ``(B, D)``.
        t: time in ``[0, 1]``: a float or a ``(B,)`` tensor.
        means: component means :math:`\\mu_k`, shape ``(K, D)``.
        stds: component standard deviations :math:`\\sigma_k > 0`, shape ``(K,)``.
        weights: mixture weights :math:`\\pi_k` (positive, summing to one), shape ``(K,)``.

    Returns:
        ``(log_joint, score_k, velocity_k)``: :math:`\\log \\pi_k + \\log \\mathcal{N}(x; t\\mu_k, v_k I)`
        of shape ``(B, K)``; the component scores :math:`-(x - t\\mu_k)/v_k` of shape ``(B, K, D)``;
        and the component velocities :math:`\\mathbb{E}[x_1 - x_0 \\mid x_t = x, k]` of shape ``(B, K, D)``.

    Raises:
        TypeError: non-float tensors.
        ValueError: wrong shapes, ``t`` outside ``[0, 1]``, non-positive ``stds`` or bad ``weights``.
    """
    for name, v in (("x", x), ("means", means), ("stds", stds), ("weights", weights)):
        _float_tensor(name, v)
    if x.dim() != 2 or means.dim() != 2 or means.shape[1] != x.shape[1]:
        raise ValueError(f"x must be (B, D) and means (K, D), got {tuple(x.shape)} and {tuple(means.shape)}")
    K = means.shape[0]
    if stds.shape != (K,) or weights.shape != (K,):
        raise ValueError(f"stds and weights must have shape ({K},), got {tuple(stds.shape)} and {tuple(weights.shape)}")
    if bool((stds <= 0).any()):
        raise ValueError("stds must be positive")
    if bool((weights <= 0).any()) or abs(float(weights.sum()) - 1.0) > 1e-4:
        raise ValueError("weights must be positive and sum to one")
    if isinstance(t, torch.Tensor):
        _float_tensor("t", t)
        if t.dim() == 0:
            t = t.expand(x.shape[0])
        if t.shape != (x.shape[0],):
            raise ValueError(f"t must be a float or have shape (B,) = ({x.shape[0]},), got {tuple(t.shape)}")
        if bool(((t < 0) | (t > 1)).any()):
            raise ValueError("t must lie in [0, 1]")
        t = t.to(x.dtype)[:, None, None]  # (B, 1, 1)
    else:
        if not 0.0 <= float(t) <= 1.0:
            raise ValueError(f"t must lie in [0, 1], got {t}")
        t = torch.full((x.shape[0], 1, 1), float(t), dtype=x.dtype, device=x.device)
    D = x.shape[1]
    mu = means.to(x.dtype)[None]  # (1, K, D)
    s2 = stds.to(x.dtype)[None, :, None] ** 2  # (1, K, 1)
    v = (1 - t) ** 2 + t**2 * s2  # (B, K, 1): variance of x_t given component k
    diff = x[:, None, :] - t * mu  # (B, K, D)
    log_joint = (
        weights.to(x.dtype).log()[None]
        - 0.5 * (diff**2).sum(-1) / v[..., 0]
        - 0.5 * D * torch.log(2 * torch.pi * v[..., 0])
    )
    score_k = -diff / v
    # E[x1 - x0 | x_t, k] = mu_k + (t sigma_k^2 - (1 - t)) / v_k (x - t mu_k): no division by t or 1 - t.
    velocity_k = mu + (t * s2 - (1 - t)) / v * diff
    return log_joint, score_k, velocity_k


def posterior_average(
    log_joint: torch.Tensor, per_component: torch.Tensor, mask: torch.Tensor | None = None
) -> torch.Tensor:
    """Average per-component quantities under the component posterior, optionally restricted.

    With ``mask`` selecting the components of class :math:`y`, this turns the output of
    :func:`mixture_path_terms` into the exact conditional score or velocity given :math:`y`;
    without it, into the unconditional one.

    Args:
        log_joint: unnormalised log posterior weights, shape ``(B, K)``.
        per_component: the quantity per component, shape ``(B, K, D)``.
        mask: optional boolean ``(B, K)`` (or ``(K,)``): which components to keep.

    Returns:
        :math:`\\sum_k r_k f_k` with :math:`r_k \\propto \\exp(\\text{log\\_joint}_k)` over kept
        components, shape ``(B, D)``.

    Raises:
        ValueError: mismatched shapes, or a row of ``mask`` that keeps no component.
    """
    _float_tensor("log_joint", log_joint)
    _float_tensor("per_component", per_component)
    if log_joint.dim() != 2 or per_component.shape[:2] != log_joint.shape:
        raise ValueError(
            f"log_joint must be (B, K) and per_component (B, K, D), got {tuple(log_joint.shape)} "
            f"and {tuple(per_component.shape)}"
        )
    if mask is not None:
        if mask.dtype != torch.bool:
            raise TypeError(f"mask must be a boolean tensor, got {mask.dtype}")
        mask = mask.expand_as(log_joint)
        if not bool(mask.any(-1).all()):
            raise ValueError("every row of mask must keep at least one component")
        log_joint = log_joint.masked_fill(~mask, float("-inf"))
    r = log_joint.softmax(-1)  # (B, K)
    return (r[..., None] * per_component).sum(1)
