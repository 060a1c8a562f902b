"""Losses for policy-gradient RL and for aligning models to preferences.

Every function works on per-sample (or per-token) log-probabilities that the caller computes
with its own policy, so the same code serves a bandit, a tabular policy and a language model.

Conventions:

* ``logp`` is :math:`\\log \\pi_\\theta(a \\mid s)` of the action actually taken (for a sequence,
  the sum over its tokens, or per token if the caller wants token-level losses);
  ``old_logp`` is the same under the policy that collected the data, and ``ref_logp`` under the
  frozen reference policy.
* Losses are returned **per element** (no reduction) so the caller can mask padding and choose
  the mean; minimising a loss's mean performs the ascent step of the objective named in its
  docstring.
* Log-probabilities are in nats.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from minilib._validate import float_tensor as _check_float

__all__ = [
    "bradley_terry_loss",
    "dpo_loss",
    "grpo_advantages",
    "grpo_aggregate",
    "kl_k3",
    "kl_regularized_policy",
    "policy_gradient_loss",
    "ppo_clip_loss",
]


def _check_same_shape(**tensors: torch.Tensor) -> None:
    items = list(tensors.items())
    name0, t0 = items[0]
    for name, t in items[1:]:
        if t.shape != t0.shape:
            raise ValueError(f"{name} must have the shape of {name0} {tuple(t0.shape)}, got {tuple(t.shape)}")


def policy_gradient_loss(logp: torch.Tensor, advantages: torch.Tensor) -> torch.Tensor:
    """REINFORCE surrogate loss, per sample: ``-advantages * logp``, advantages held constant.

    Implements (policy-gradient-reinforce): its gradient, averaged over samples drawn from the
    policy, is minus the Monte Carlo policy-gradient estimate
    :math:`\\hat g = \\frac1n\\sum_i \\hat A_i \\nabla_\\theta \\log\\pi_\\theta(a_i\\mid s_i)`.
    ``advantages`` may be returns, returns minus a baseline, or any other advantage estimate;
    it is detached, because it is a weight, not a function of the parameters.

    Args:
        logp: ``(...)`` log-probabilities of the sampled actions (requires grad).
        advantages: ``(...)`` the same shape.

    Returns:
        ``(...)`` per-sample losses; minimise their mean.

    >>> logp = torch.tensor([-1.0, -2.0], requires_grad=True)
    >>> policy_gradient_loss(logp, torch.tensor([1.0, -1.0])).mean().backward()
    >>> logp.grad.tolist()
    [-0.5, 0.5]
    """
    _check_float("logp", logp)
    _check_float("advantages", advantages)
    _check_same_shape(logp=logp, advantages=advantages)
    return -advantages.detach() * logp


def ppo_clip_loss(
    logp: torch.Tensor, old_logp: torch.Tensor, advantages: torch.Tensor, *, clip: float = 0.2
) -> torch.Tensor:
    """PPO's clipped surrogate, negated, per sample.

    Implements (policy-gradient-ppo-clip):
    :math:`-\\min\\big(\\rho A,\\ \\mathrm{clip}(\\rho, 1-\\epsilon, 1+\\epsilon) A\\big)` with the
    probability ratio :math:`\\rho = \\exp(\\text{logp} - \\text{old\\_logp})`. ``old_logp`` and
    ``advantages`` are detached.

    Args:
        logp: ``(...)`` log-probabilities under the current policy (requires grad).
        old_logp: ``(...)`` log-probabilities under the policy that sampled the data.
        advantages: ``(...)`` advantage estimates.
        clip: :math:`\\epsilon > 0`, the half-width of the trust interval for :math:`\\rho`.

    Returns:
        ``(...)`` per-sample losses; minimise their mean.

    Raises:
        TypeError: on non-float tensors.
        ValueError: on mismatched shapes or ``clip <= 0``.

    >>> z = torch.zeros(2)
    >>> ppo_clip_loss(z, z, torch.tensor([1.0, -2.0])).tolist()
    [-1.0, 2.0]
    """
    for name, t in (("logp", logp), ("old_logp", old_logp), ("advantages", advantages)):
        _check_float(name, t)
    _check_same_shape(logp=logp, old_logp=old_logp, advantages=advantages)
    if not isinstance(clip, (int, float)) or isinstance(clip, bool) or not clip > 0:
        raise ValueError(f"clip must be a positive number, got {clip!r}")
    A = advantages.detach()
    ratio = torch.exp(logp - old_logp.detach())
    unclipped = ratio * A
    clipped = torch.clamp(ratio, 1 - clip, 1 + clip) * A
    return -torch.minimum(unclipped, clipped)


def bradley_terry_loss(r_chosen: torch.Tensor, r_rejected: torch.Tensor) -> torch.Tensor:
    """Negative log-likelihood of a preference under the Bradley–Terry model, per pair.

    Implements (policy-gradient-bt-loss): :math:`-\\log\\sigma(r_c - r_r)`, computed as
    ``softplus(r_rejected - r_chosen)`` so it is stable for large reward gaps.

    Args:
        r_chosen: ``(...)`` rewards of the preferred responses.
        r_rejected: ``(...)`` rewards of the rejected responses.

    Returns:
        ``(...)`` per-pair losses.

    >>> round(bradley_terry_loss(torch.tensor(0.0), torch.tensor(0.0)).item(), 4)
    0.6931
    """
    _check_float("r_chosen", r_chosen)
    _check_float("r_rejected", r_rejected)
    _check_same_shape(r_chosen=r_chosen, r_rejected=r_rejected)
    return F.softplus(r_rejected - r_chosen)


def kl_regularized_policy(
    ref_logp: torch.Tensor, reward: torch.Tensor, *, beta: float, dim: int = -1
) -> torch.Tensor:
    """Log-probabilities of the maximiser of :math:`\\mathbb{E}_\\pi[r] - \\beta\\,\\mathrm{KL}(\\pi\\Vert\\pi_{\\mathrm{ref}})`.

    Implements (dpo-optimal-policy): :math:`\\pi^*(y) \\propto \\pi_{\\mathrm{ref}}(y)\\,e^{r(y)/\\beta}`,
    normalised over the outcomes along ``dim``.

    Args:
        ref_logp: ``(..., Y)`` reference log-probabilities over a finite set of outcomes.
        reward: ``(..., Y)`` rewards (broadcastable to ``ref_logp``).
        beta: :math:`\\beta > 0`, the strength of the KL penalty.
        dim: the outcome dimension.

    Returns:
        Log-probabilities of :math:`\\pi^*`, the broadcast shape.

    >>> kl_regularized_policy(torch.log(torch.tensor([0.5, 0.5])), torch.tensor([0.0, 1.0]), beta=1.0).exp()
    tensor([0.2689, 0.7311])
    """
    _check_float("ref_logp", ref_logp)
    _check_float("reward", reward)
    if not isinstance(beta, (int, float)) or isinstance(beta, bool) or not beta > 0:
        raise ValueError(f"beta must be a positive number, got {beta!r}")
    return torch.log_softmax(ref_logp + reward / beta, dim=dim)


def dpo_loss(
    policy_chosen_logps: torch.Tensor,
    policy_rejected_logps: torch.Tensor,
    ref_chosen_logps: torch.Tensor,
    ref_rejected_logps: torch.Tensor,
    *,
    beta: float = 0.1,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Direct preference optimisation loss, per preference pair.

    Implements (dpo-implicit-reward) and (dpo-loss): the implicit rewards are
    :math:`\\hat r = \\beta(\\log\\pi_\\theta(y\\mid x) - \\log\\pi_{\\mathrm{ref}}(y\\mid x))` and the loss is
    the Bradley–Terry loss of their difference, :math:`-\\log\\sigma(\\hat r_c - \\hat r_r)`.

    Args:
        policy_chosen_logps: ``(B,)`` sequence log-probabilities :math:`\\log\\pi_\\theta(y_c\\mid x)`.
        policy_rejected_logps: ``(B,)`` the same for the rejected responses.
        ref_chosen_logps: ``(B,)`` reference log-probabilities of the chosen responses.
        ref_rejected_logps: ``(B,)`` reference log-probabilities of the rejected responses.
        beta: :math:`\\beta > 0`, the KL strength of the objective DPO solves.

    Returns:
        ``(losses, chosen_rewards, rejected_rewards)``, each of shape ``(B,)``. The rewards are
        detached (they are for logging and evaluation).

    Raises:
        TypeError: on non-float tensors.
        ValueError: on mismatched shapes or ``beta <= 0``.

    >>> z = torch.zeros(3)
    >>> losses, rc, rr = dpo_loss(z, z, z, z)
    >>> [round(v, 4) for v in losses.tolist()]
    [0.6931, 0.6931, 0.6931]
    """
    names = ("policy_chosen_logps", "policy_rejected_logps", "ref_chosen_logps", "ref_rejected_logps")
    ts = (policy_chosen_logps, policy_rejected_logps, ref_chosen_logps, ref_rejected_logps)
    for name, t in zip(names, ts):
        _check_float(name, t)
    _check_same_shape(**dict(zip(names, ts)))
    if not isinstance(beta, (int, float)) or isinstance(beta, bool) or not beta > 0:
        raise ValueError(f"beta must be a positive number, got {beta!r}")
    chosen_logratio = policy_chosen_logps - ref_chosen_logps
    rejected_logratio = policy_rejected_logps - ref_rejected_logps
    losses = F.softplus(-beta * (chosen_logratio - rejected_logratio))  # = -log sigma(...)
    return losses, beta * chosen_logratio.detach(), beta * rejected_logratio.detach()


def grpo_advantages(
    rewards: torch.Tensor, group_size: int, *, eps: float = 1e-4, scale_by_std: bool = True
) -> torch.Tensor:
    """Group-relative advantages: each reward standardised within its group.

    Implements (grpo-advantage): for the :math:`G` = ``group_size`` completions of one prompt,
    :math:`\\hat A_i = (r_i - \\bar r)/(s + \\epsilon)` with the group mean :math:`\\bar r` and the
    Bessel-corrected sample standard deviation :math:`s`. A group whose rewards are all equal
    gets advantages 0. With ``scale_by_std=False`` the advantages are only centred,
    :math:`\\hat A_i = r_i - \\bar r`, as in Dr. GRPO (grpo-dr-grpo).

    Args:
        rewards: ``(n_groups * group_size,)`` rewards, each group's completions contiguous.
        group_size: :math:`G \\ge 2`.
        eps: added to the standard deviation to avoid dividing by 0.
        scale_by_std: divide by :math:`s + \\epsilon` (GRPO, the default) or not (Dr. GRPO).

    Returns:
        Advantages with the shape, dtype and device of ``rewards``.

    Raises:
        TypeError: if ``rewards`` is not floating point.
        ValueError: if its length is not a multiple of ``group_size``, or ``group_size < 2``.

    >>> grpo_advantages(torch.tensor([1.0, 0.0, 0.0, 0.0]), 2, eps=0.0)
    tensor([ 0.7071, -0.7071,  0.0000,  0.0000])
    """
    _check_float("rewards", rewards)
    if rewards.dim() != 1:
        raise ValueError(f"rewards must be 1-D (n_groups * group_size,), got shape {tuple(rewards.shape)}")
    if not isinstance(group_size, int) or isinstance(group_size, bool) or group_size < 2:
        raise ValueError(f"group_size must be an int >= 2 (a std needs two samples), got {group_size!r}")
    if rewards.numel() % group_size != 0:
        raise ValueError(f"len(rewards)={rewards.numel()} is not a multiple of group_size={group_size}")
    if not isinstance(eps, (int, float)) or isinstance(eps, bool) or eps < 0:
        raise ValueError(f"eps must be a non-negative number, got {eps!r}")
    if not isinstance(scale_by_std, bool):
        raise TypeError(f"scale_by_std must be a bool, got {type(scale_by_std).__name__}")
    r = rewards.view(-1, group_size)  # (n_groups, G)
    mean = r.mean(dim=1, keepdim=True)
    if not scale_by_std:
        return (r - mean).reshape(rewards.shape)
    std = r.std(dim=1, keepdim=True, correction=1)
    # a group with equal rewards carries no signal: its centred rewards are exactly 0, and a
    # denominator of 1 keeps them 0 even when eps = 0
    denom = torch.where(std > 0, std + eps, torch.ones_like(std))
    return ((r - mean) / denom).reshape(rewards.shape)


def kl_k3(logp: torch.Tensor, ref_logp: torch.Tensor) -> torch.Tensor:
    """The k3 estimator of :math:`\\mathrm{KL}(\\pi\\Vert\\pi_{\\mathrm{ref}})`, per sample.

    Implements (grpo-k3): with :math:`u = \\log\\pi_{\\mathrm{ref}}(y) - \\log\\pi(y)` for
    :math:`y \\sim \\pi`, the estimate is :math:`e^{u} - u - 1`. It is non-negative (since
    :math:`e^u \\ge 1 + u`) and zero when the two log-probabilities agree. Its expectation under
    :math:`\\pi` is exactly the KL divergence (grpo-k3-unbiased) **when the two distributions
    have the same support**: :math:`\\mathrm{supp}\\,\\pi \\subseteq \\mathrm{supp}\\,\\pi_{\\mathrm{ref}}`
    keeps the KL finite, and :math:`\\mathrm{supp}\\,\\pi_{\\mathrm{ref}} \\subseteq \\mathrm{supp}\\,\\pi`
    makes :math:`\\mathbb{E}_\\pi[e^u] = 1`; if :math:`\\pi_{\\mathrm{ref}}` has mass where :math:`\\pi`
    has none, the expectation falls short of the KL by that mass. Softmax policies (all
    probabilities positive) satisfy both. The expectation holds for the exact distribution; a
    finite sample of a heavy-tailed :math:`e^u` can still fall far from it.

    Args:
        logp: ``(...)`` log-probabilities of samples under the policy being trained.
        ref_logp: ``(...)`` log-probabilities of the same samples under the reference.

    Returns:
        ``(...)`` per-sample estimates (differentiable in both arguments).

    >>> kl_k3(torch.tensor([-1.0]), torch.tensor([-1.0])).tolist()
    [0.0]
    """
    _check_float("logp", logp)
    _check_float("ref_logp", ref_logp)
    _check_same_shape(logp=logp, ref_logp=ref_logp)
    u = ref_logp - logp
    return torch.expm1(u) - u  # e^u - 1 - u, with expm1 for accuracy near u = 0


_AGGREGATIONS = ("sequence", "token", "constant")


def grpo_aggregate(
    token_losses: torch.Tensor,
    mask: torch.Tensor,
    group_size: int,
    *,
    aggregation: str = "sequence",
    max_len: int | None = None,
) -> torch.Tensor:
    """Reduce per-token GRPO losses of completions of different lengths to one scalar.

    Implements (grpo-aggregation): with :math:`G` = ``group_size`` completions per prompt of
    lengths :math:`L_i` (the number of ones in row :math:`i` of ``mask``), each group contributes
    :math:`\\sum_i \\kappa_i \\sum_{t \\le L_i} \\ell_{i,t}` and the groups are averaged, where

    * ``"sequence"`` (GRPO): :math:`\\kappa_i = 1/(G L_i)`, a mean over each completion's tokens,
      then over the group;
    * ``"token"`` (DAPO): :math:`\\kappa_i = 1/\\sum_j L_j`, a mean over all tokens of the group;
    * ``"constant"`` (Dr. GRPO): :math:`\\kappa_i = 1/(G L_{\\max})`, a sum over tokens divided by
      a constant, ``max_len`` (default: the padded width ``T``).

    Applied to ``ppo_clip_loss`` at :math:`\\rho = 1`, the gradient with respect to the
    log-probability of token :math:`t` of completion :math:`i` is :math:`-\\kappa_i \\hat A_i / n_{\\text{groups}}`
    (grpo-token-weights). Padding positions (``mask == 0``) get weight 0 whatever their value.

    Args:
        token_losses: ``(n_groups * group_size, T)`` per-token losses, e.g.
            ``ppo_clip_loss(...) + beta * kl_k3(...)``; each group's rows contiguous.
        mask: ``(n_groups * group_size, T)`` bool or 0/1 float, 1 on the tokens of each
            completion; every row needs at least one token.
        group_size: :math:`G \\ge 1`.
        aggregation: ``"sequence"``, ``"token"`` or ``"constant"``.
        max_len: :math:`L_{\\max}` for ``"constant"``, at least the longest completion;
            ``None`` uses ``T``. Ignored by the other two.

    Returns:
        A scalar tensor (dtype and device of ``token_losses``); minimise it.

    Raises:
        TypeError: on a non-float ``token_losses`` or a non-tensor ``mask``.
        ValueError: on mismatched shapes, a row without tokens, a mask that is not 0/1, a bad
            ``group_size``/``aggregation``, or ``max_len`` shorter than a completion.

    >>> losses = torch.ones(2, 4)
    >>> mask = torch.tensor([[1, 1, 0, 0], [1, 1, 1, 1]])
    >>> [round(grpo_aggregate(losses, mask, 2, aggregation=a).item(), 4) for a in ("sequence", "token", "constant")]
    [1.0, 1.0, 0.75]
    """
    _check_float("token_losses", token_losses)
    if not isinstance(mask, torch.Tensor):
        raise TypeError(f"mask must be a torch.Tensor, got {type(mask).__name__}")
    if token_losses.dim() != 2:
        raise ValueError(f"token_losses must be 2-D (n_groups * group_size, T), got shape {tuple(token_losses.shape)}")
    _check_same_shape(token_losses=token_losses, mask=mask)
    if not isinstance(group_size, int) or isinstance(group_size, bool) or group_size < 1:
        raise ValueError(f"group_size must be a positive int, got {group_size!r}")
    n, T = token_losses.shape
    if n % group_size != 0:
        raise ValueError(f"token_losses has {n} rows, not a multiple of group_size={group_size}")
    if aggregation not in _AGGREGATIONS:
        raise ValueError(f"aggregation must be one of {_AGGREGATIONS}, got {aggregation!r}")
    m = mask.to(token_losses.dtype)
    if not bool(((m == 0) | (m == 1)).all()):
        raise ValueError("mask must contain only 0 and 1 (or be bool)")
    lengths = m.sum(dim=1)  # (n,) L_i
    if bool((lengths == 0).any()):
        raise ValueError("every row of mask needs at least one token (a completion of length 0)")
    if max_len is None:
        max_len = T
    if aggregation == "constant":
        if not isinstance(max_len, int) or isinstance(max_len, bool) or max_len < int(lengths.max().item()):
            raise ValueError(f"max_len must be an int >= the longest completion ({int(lengths.max().item())}), got {max_len!r}")
    # where, not a product: a NaN or inf in a padding position must not leak into the sum
    per_seq = torch.where(m.bool(), token_losses, 0.0).sum(dim=1).view(-1, group_size)  # (n_groups, G)
    L = lengths.view(-1, group_size)
    if aggregation == "sequence":
        per_group = (per_seq / L).sum(dim=1) / group_size
    elif aggregation == "token":
        per_group = per_seq.sum(dim=1) / L.sum(dim=1)
    else:
        per_group = per_seq.sum(dim=1) / (group_size * max_len)
    return per_group.mean()
