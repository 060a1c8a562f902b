"""Mixture-of-experts layers: top-k routing, the load-balancing loss, capacity and dropped tokens.

Conventions: ``T`` tokens (any leading shape is flattened), ``E`` experts, each token sent to
``k`` of them. ``router_logits`` is ``(T, E)``. A token's *assignments* are its ``k``
(token, slot) pairs; slot 0 is its top choice.

Everything follows the device and dtype of its inputs.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["MoELayer", "expert_capacity", "load_balancing_loss", "top_k_routing"]


def _check_logits(router_logits: object, k: object) -> tuple[torch.Tensor, int]:
    if not isinstance(router_logits, torch.Tensor) or not router_logits.is_floating_point():
        raise TypeError("router_logits must be a floating-point torch.Tensor of shape (T, E)")
    if router_logits.dim() != 2 or router_logits.shape[1] < 1:
        raise ValueError(f"router_logits must have shape (T, E) with E >= 1, got {tuple(router_logits.shape)}")
    if not isinstance(k, int) or isinstance(k, bool) or not 1 <= k <= router_logits.shape[1]:
        raise ValueError(f"k must be an int in 1..E = {router_logits.shape[1]} (the number of experts), got {k!r}")
    return router_logits, k


def top_k_routing(router_logits: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Each token's ``k`` experts and their mixing weights.

    The router's probabilities are the softmax over all ``E`` experts; the ``k`` largest are kept
    and renormalised to sum to 1 (equation (moe-topk)). Experts come in decreasing order of
    probability; ties go to the lower expert index. Implements (moe-topk).

    Args:
        router_logits: ``(T, E)`` float tensor.
        k: experts per token, ``1 <= k <= E``.

    Returns:
        ``(weights, experts)``: ``(T, k)`` weights (same dtype as the logits) and ``(T, k)``
        int64 expert indices.

    >>> w, e = top_k_routing(torch.tensor([[0.0, 2.0, 1.0]]), 2)
    >>> e.tolist(), [round(v, 4) for v in w[0].tolist()]
    ([[1, 2]], [0.7311, 0.2689])
    """
    logits, k = _check_logits(router_logits, k)
    probs = torch.softmax(logits, dim=-1)
    # a stable sort gives ties to the lower index, which torch.topk does not promise
    order = torch.sort(probs, dim=-1, descending=True, stable=True)
    top_p, experts = order.values[:, :k], order.indices[:, :k]
    return top_p / top_p.sum(dim=-1, keepdim=True), experts


def load_balancing_loss(router_logits: torch.Tensor, k: int) -> torch.Tensor:
    """The auxiliary loss that pushes a router towards using every expert equally.

    ``E * sum_e f_e * P_e`` (equation (moe-balance)), where ``f_e`` is the fraction of the
    ``T * k`` (token, slot) assignments that go to expert ``e`` under :func:`top_k_routing` and
    ``P_e`` the mean router probability of ``e`` over the tokens. ``f`` carries no gradient
    (it is a count); the gradient flows through ``P``. It equals 1 when routing is uniform and
    reaches ``E / k`` when every token's probability mass sits on the same ``k`` experts.
    Switch Transformer's loss is the case ``k = 1`` (without its coefficient alpha).
    Implements (moe-balance); its gradient is (moe-balance-grad).

    Args:
        router_logits: ``(T, E)`` float tensor with ``T >= 1``.
        k: experts per token.

    Returns:
        A scalar tensor.

    >>> float(load_balancing_loss(torch.zeros(4, 4), 1))   # a uniform router: every P_e = 1/E, so the loss is 1
    1.0
    """
    logits, k = _check_logits(router_logits, k)
    if logits.shape[0] == 0:
        raise ValueError("router_logits must hold at least one token")
    n_experts = logits.shape[1]
    probs = torch.softmax(logits, dim=-1)
    _, experts = top_k_routing(logits.detach(), k)
    f = torch.bincount(experts.reshape(-1), minlength=n_experts).to(logits.dtype) / experts.numel()
    return n_experts * (f * probs.mean(dim=0)).sum()


def expert_capacity(n_tokens: int, n_experts: int, k: int, capacity_factor: float) -> int:
    """Slots per expert: ``ceil(capacity_factor * T * k / E)`` (equation (moe-capacity)).

    Implements (moe-capacity).

    >>> expert_capacity(10, 4, 2, 1.0)
    5
    """
    for name, v in (("n_tokens", n_tokens), ("n_experts", n_experts), ("k", k)):
        if not isinstance(v, int) or isinstance(v, bool) or v < 1:
            raise ValueError(f"{name} must be a positive int, got {v!r}")
    if not (isinstance(capacity_factor, (int, float)) and capacity_factor > 0):
        raise ValueError(f"capacity_factor must be a positive number, got {capacity_factor!r}")
    return math.ceil(capacity_factor * n_tokens * k / n_experts)


class _Expert(nn.Module):
    """One expert: a SwiGLU feed-forward block, as in the Llama chapter."""

    def __init__(self, d_model: int, d_ff: int) -> None:
        super().__init__()
        self.gate = nn.Linear(d_model, d_ff, bias=False)
        self.up = nn.Linear(d_model, d_ff, bias=False)
        self.down = nn.Linear(d_ff, d_model, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down(F.silu(self.gate(x)) * self.up(x))


class MoELayer(nn.Module):
    """A mixture-of-experts feed-forward layer: a linear router, top-k routing, optional capacity.

    ``y_t = sum_{s < k} kept[t, s] * w[t, s] * FFN_{e[t, s]}(x_t)`` (equation (moe-layer)), with
    ``(w, e)`` from :func:`top_k_routing` on ``router(x)``. With ``capacity_factor`` set, each
    expert takes at most :func:`expert_capacity` assignments: all slot-0 assignments are served
    before any slot-1 one, and within a slot, earlier tokens first; the rest are *dropped*
    (``kept`` false: they contribute nothing, and the residual connection around the layer
    carries the token on). Without it nothing is dropped. Implements (moe-layer).

    With ``k = 1`` the renormalised weight is exactly 1, so the task's loss gives the router no
    gradient (only an auxiliary loss such as :func:`load_balancing_loss` trains it); Switch
    Transformer instead scales the expert's output by the unnormalised router probability, which
    a caller can do with the returned ``router_logits`` (the vlm-moe lab does).

    Args:
        d_model: token width. d_ff: hidden width of each expert. n_experts: ``E``.
        k: experts per token. capacity_factor: ``None`` (no limit) or a positive number.

    ``forward(x)`` takes ``(..., d_model)`` and returns ``(y, router_logits, kept)``: ``y`` like
    ``x``, ``router_logits`` ``(T, E)`` and ``kept`` ``(T, k)`` bool over the ``T`` flattened
    tokens, for the balancing loss and routing statistics.
    """

    def __init__(self, d_model: int, d_ff: int, n_experts: int, k: int = 1, *,
                 capacity_factor: float | None = None) -> None:
        super().__init__()
        for name, v in (("d_model", d_model), ("d_ff", d_ff), ("n_experts", n_experts)):
            if not isinstance(v, int) or isinstance(v, bool) or v < 1:
                raise ValueError(f"{name} must be a positive int, got {v!r}")
        if not isinstance(k, int) or isinstance(k, bool) or not 1 <= k <= n_experts:
            raise ValueError(f"k must be an int in 1..n_experts = {n_experts}, got {k!r}")
        if capacity_factor is not None and not (isinstance(capacity_factor, (int, float)) and capacity_factor > 0):
            raise ValueError(f"capacity_factor must be None or a positive number, got {capacity_factor!r}")
        self.k, self.n_experts, self.capacity_factor = k, n_experts, capacity_factor
        self.router = nn.Linear(d_model, n_experts, bias=False)
        self.experts = nn.ModuleList(_Expert(d_model, d_ff) for _ in range(n_experts))

    def _kept(self, experts: torch.Tensor) -> torch.Tensor:
        t = experts.shape[0]
        if self.capacity_factor is None:
            return torch.ones_like(experts, dtype=torch.bool)
        cap = expert_capacity(t, self.n_experts, self.k, self.capacity_factor)
        # priority order: slot-major, then token index; position of each assignment in its expert's queue
        flat = experts.T.reshape(-1)                                   # (k * T,), slot 0 first
        onehot = F.one_hot(flat, self.n_experts)
        position = (onehot.cumsum(0) * onehot).sum(-1) - 1             # 0-based rank in the queue
        return (position < cap).reshape(self.k, t).T

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        if not isinstance(x, torch.Tensor) or x.shape[-1:] != (self.router.in_features,):
            raise ValueError(f"x must be a tensor of shape (..., {self.router.in_features})")
        tokens = x.reshape(-1, x.shape[-1])
        router_logits = self.router(tokens)
        weights, experts = top_k_routing(router_logits, self.k)
        kept = self._kept(experts)
        out = torch.zeros_like(tokens)
        for e, expert in enumerate(self.experts):
            tok, slot = torch.nonzero((experts == e) & kept, as_tuple=True)
            if tok.numel():
                out.index_add_(0, tok, weights[tok, slot, None] * expert(tokens[tok]))
        return out.reshape(x.shape), router_logits, kept
