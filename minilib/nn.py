"""Neural-network building blocks shared by several chapters.

``sinusoidal_embedding`` turns positions (or diffusion times) into fixed feature vectors;
``MultiHeadAttention`` and ``TransformerBlock`` are the pre-norm Transformer pieces derived in
the chapter "From RNNs to Transformers".
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["MultiHeadAttention", "TransformerBlock", "sinusoidal_embedding"]


def sinusoidal_embedding(positions: torch.Tensor, dim: int, *, base: float = 10000.0) -> torch.Tensor:
    """Fixed sinusoidal features of positions (or of diffusion times).

    Entry ``2i`` of the result is :math:`\\sin(p\\,\\omega_i)` and entry ``2i+1`` is
    :math:`\\cos(p\\,\\omega_i)`, with frequencies :math:`\\omega_i = \\mathrm{base}^{-2i/\\mathrm{dim}}`
    for ``i = 0, ..., dim/2 - 1``: sine and cosine interleaved, as in Vaswani et al.
    Implements (rnn-sinusoidal).

    Args:
        positions: tensor of shape ``(...,)``, integer or floating. Non-integer values (such
            as continuous diffusion times) are allowed.
        dim: the embedding size, even and positive.
        base: the wavelength scale, positive; the slowest pair has period ``2 pi base``.

    Returns:
        Tensor of shape ``(..., dim)`` on ``positions.device``: float32 for integer
        positions, otherwise the dtype of ``positions``.

    Raises:
        TypeError: if ``positions`` is not a tensor, is boolean or complex, or ``dim`` is not an int.
        ValueError: if ``dim`` is not even and positive or ``base`` is not positive.

    >>> e = sinusoidal_embedding(torch.tensor([0, 1]), 4)
    >>> e.shape, e[0].tolist()
    (torch.Size([2, 4]), [0.0, 1.0, 0.0, 1.0])
    """
    if not isinstance(positions, torch.Tensor):
        raise TypeError(f"positions must be a torch.Tensor, got {type(positions).__name__}")
    if positions.dtype == torch.bool or positions.is_complex():
        raise TypeError(f"positions must be an integer or real floating tensor, got {positions.dtype}")
    if not isinstance(dim, int) or isinstance(dim, bool):
        raise TypeError(f"dim must be an int, got {type(dim).__name__}")
    if dim <= 0 or dim % 2 != 0:
        raise ValueError(f"dim must be even and positive, got {dim}")
    if not (isinstance(base, (int, float)) and base > 0):
        raise ValueError(f"base must be a positive number, got {base!r}")
    dtype = positions.dtype if positions.is_floating_point() else torch.float32
    half = dim // 2
    # omega_i = base^(-2i/dim), computed in float64 and then cast so the frequencies are exact
    i = torch.arange(half, device=positions.device, dtype=torch.float64)
    omega = torch.exp(-math.log(base) * (2 * i / dim)).to(dtype)
    angles = positions.to(dtype)[..., None] * omega  # (..., dim/2)
    # interleave: (..., dim/2, 2) -> (..., dim)
    return torch.stack((torch.sin(angles), torch.cos(angles)), dim=-1).flatten(-2)


class MultiHeadAttention(nn.Module):
    """Multi-head self-attention with the 1/sqrt(d_head) scale.

    Each head ``h`` projects the input to :math:`Q_h = X W^Q_h`, :math:`K_h = X W^K_h`,
    :math:`V_h = X W^V_h`, attends with :math:`\\operatorname{softmax}(Q_h K_h^\\top/\\sqrt{d_h}) V_h`,
    and the heads are concatenated and mixed by :math:`W^O`. Implements (rnn-attention) and (rnn-mha).

    The default path calls ``torch.nn.functional.scaled_dot_product_attention``. With
    ``return_weights=True`` the same computation is written out so that the attention
    weights of every head can be returned (for the attention explorer).

    Args:
        d_model: the model width ``d``; must be divisible by ``n_heads``.
        n_heads: the number of heads ``H``; each head has width ``d_head = d_model // n_heads``.
        bias: whether the projections have biases.

    Raises:
        ValueError: if the sizes are not positive or ``d_model`` is not divisible by ``n_heads``.

    >>> mha = MultiHeadAttention(8, 2)
    >>> y, w = mha(torch.randn(3, 5, 8), causal=True, return_weights=True)
    >>> y.shape, w.shape
    (torch.Size([3, 5, 8]), torch.Size([3, 2, 5, 5]))
    """

    def __init__(self, d_model: int, n_heads: int, *, bias: bool = True) -> None:
        super().__init__()
        for name, v in (("d_model", d_model), ("n_heads", n_heads)):
            if not isinstance(v, int) or isinstance(v, bool) or v <= 0:
                raise ValueError(f"{name} must be a positive int, got {v!r}")
        if d_model % n_heads != 0:
            raise ValueError(f"d_model ({d_model}) must be divisible by n_heads ({n_heads})")
        self.d_model, self.n_heads, self.d_head = d_model, n_heads, d_model // n_heads
        # one matrix for [W^Q, W^K, W^V], the layout torch.nn.MultiheadAttention also uses
        self.qkv = nn.Linear(d_model, 3 * d_model, bias=bias)
        self.out = nn.Linear(d_model, d_model, bias=bias)

    def forward(
        self,
        x: torch.Tensor,
        *,
        causal: bool = False,
        key_padding_mask: torch.Tensor | None = None,
        return_weights: bool = False,
    ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        """Attend over the sequence.

        Args:
            x: input of shape ``(B, N, d_model)``, floating.
            causal: if True, position ``i`` attends only to positions ``j <= i``.
            key_padding_mask: optional bool tensor ``(B, N)``, True where a key is padding
                and must be ignored.
            return_weights: also return the attention weights.

        Returns:
            The output ``(B, N, d_model)``; with ``return_weights`` also the weights
            ``(B, H, N, N)``, each row summing to one.

        Raises:
            TypeError: if ``x`` is not floating or the mask is not bool.
            ValueError: if the shapes do not match.
        """
        if not isinstance(x, torch.Tensor) or not x.is_floating_point():
            raise TypeError(f"x must be a floating tensor, got {getattr(x, 'dtype', type(x).__name__)}")
        if x.dim() != 3 or x.shape[-1] != self.d_model:
            raise ValueError(f"x must have shape (B, N, {self.d_model}), got {tuple(x.shape)}")
        B, N, _ = x.shape
        mask = None  # boolean, True = may attend; broadcast to (B, H, N, N)
        if key_padding_mask is not None:
            if key_padding_mask.dtype != torch.bool:
                raise TypeError(f"key_padding_mask must be a bool tensor, got {key_padding_mask.dtype}")
            if tuple(key_padding_mask.shape) != (B, N):
                raise ValueError(f"key_padding_mask must have shape {(B, N)}, got {tuple(key_padding_mask.shape)}")
            mask = ~key_padding_mask[:, None, None, :]  # (B, 1, 1, N)
        if causal:
            tril = torch.ones(N, N, dtype=torch.bool, device=x.device).tril()
            mask = tril if mask is None else mask & tril
        # (B, N, 3d) -> 3 x (B, H, N, d_head)
        q, k, v = self.qkv(x).view(B, N, 3, self.n_heads, self.d_head).permute(2, 0, 3, 1, 4)
        if not return_weights:
            o = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
            return self.out(o.transpose(1, 2).reshape(B, N, self.d_model))
        scores = q @ k.transpose(-2, -1) / math.sqrt(self.d_head)  # (B, H, N, N)
        if mask is not None:
            scores = scores.masked_fill(~mask, float("-inf"))
        weights = torch.softmax(scores, dim=-1)
        o = weights @ v  # (B, H, N, d_head)
        return self.out(o.transpose(1, 2).reshape(B, N, self.d_model)), weights


class TransformerBlock(nn.Module):
    """A pre-norm Transformer block: attention and an MLP, each inside a residual branch.

    ``x = x + MHA(LN(x))`` then ``x = x + MLP(LN(x))`` with a GELU MLP of width ``d_ff``.
    Implements (rnn-prenorm).

    Args:
        d_model: the model width.
        n_heads: the number of attention heads.
        d_ff: the hidden width of the MLP (default ``4 * d_model``).

    >>> blk = TransformerBlock(8, 2)
    >>> blk(torch.randn(2, 4, 8), causal=True).shape
    torch.Size([2, 4, 8])
    """

    def __init__(self, d_model: int, n_heads: int, d_ff: int | None = None) -> None:
        super().__init__()
        d_ff = 4 * d_model if d_ff is None else d_ff
        if not isinstance(d_ff, int) or isinstance(d_ff, bool) or d_ff <= 0:
            raise ValueError(f"d_ff must be a positive int, got {d_ff!r}")
        self.attn = MultiHeadAttention(d_model, n_heads)
        self.norm1 = nn.LayerNorm(d_model)
        self.norm2 = nn.LayerNorm(d_model)
        self.mlp = nn.Sequential(nn.Linear(d_model, d_ff), nn.GELU(), nn.Linear(d_ff, d_model))

    def forward(
        self,
        x: torch.Tensor,
        *,
        causal: bool = False,
        key_padding_mask: torch.Tensor | None = None,
        return_weights: bool = False,
    ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        """Apply the block to ``x`` of shape ``(B, N, d_model)``.

        Returns:
            ``(B, N, d_model)``; with ``return_weights`` also the attention weights
            ``(B, H, N, N)``.
        """
        a = self.attn(self.norm1(x), causal=causal, key_padding_mask=key_padding_mask, return_weights=return_weights)
        a, w = a if return_weights else (a, None)
        x = x + a
        x = x + self.mlp(self.norm2(x))
        return (x, w) if return_weights else x
