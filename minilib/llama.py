"""LLaMA building blocks: RMSNorm, rotary position embeddings (RoPE), grouped-query attention
with a KV cache, and a SwiGLU MLP, assembled into a small decoder-only model.

Conventions: activations are ``(B, T, d_model)``; per-head tensors are ``(B, heads, T, d_head)``.
RoPE rotates *interleaved* pairs of features ``(2i, 2i+1)``, as in the RoFormer paper and
Meta's reference code (Hugging Face's ``rotate_half`` pairs ``i`` with ``i + d/2`` instead, a
fixed permutation of the features, so the two give the same attention scores once the query
and key projection weights are permuted to match).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

__all__ = [
    "KVCache",
    "TinyLlama",
    "TinyLlamaConfig",
    "apply_rope",
    "generate",
    "kv_cache_bytes",
    "param_count",
    "repeat_kv",
    "rms_norm",
    "rope_frequencies",
    "yarn_attention_scale",
]


def _pos_int(v: object, name: str) -> int:
    if not isinstance(v, int) or isinstance(v, bool) or v <= 0:
        raise ValueError(f"{name} must be a positive int, got {v!r}")
    return v


def rms_norm(x: torch.Tensor, weight: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """Root-mean-square normalisation: :math:`x / \\sqrt{\\mathrm{mean}(x^2) + \\epsilon} \\odot g`.

    Unlike LayerNorm there is no mean subtraction and no bias. Half-precision inputs are
    normalised in float32 and cast back. Implements (llama-rmsnorm).

    Args:
        x: ``(..., d)``, floating.
        weight: the gain ``g`` of shape ``(d,)``.
        eps: a small positive number added to the mean square.

    Returns:
        Tensor of the shape and dtype of ``x``.

    Raises:
        TypeError: if ``x`` or ``weight`` is not floating.
        ValueError: if ``weight`` is not ``(d,)`` or ``eps`` is negative.

    >>> rms_norm(torch.tensor([3.0, 4.0]), torch.ones(2), eps=0.0)
    tensor([0.8485, 1.1314])
    """
    for name, t in (("x", x), ("weight", weight)):
        if not isinstance(t, torch.Tensor) or not t.is_floating_point():
            raise TypeError(f"{name} must be a floating tensor, got {getattr(t, 'dtype', type(t).__name__)}")
    if x.dim() == 0 or tuple(weight.shape) != (x.shape[-1],):
        raise ValueError(f"weight must have shape ({x.shape[-1] if x.dim() else '?'},), got {tuple(weight.shape)}")
    if not eps >= 0:
        raise ValueError(f"eps must be non-negative, got {eps!r}")
    x32 = x.float() if x.dtype in (torch.float16, torch.bfloat16) else x
    y = x32 * torch.rsqrt(x32.pow(2).mean(-1, keepdim=True) + eps)
    return y.to(x.dtype) * weight


def apply_rope(x: torch.Tensor, positions: torch.Tensor, *, base: float = 10000.0,
               frequencies: torch.Tensor | None = None) -> torch.Tensor:
    """Rotary position embedding: rotate feature pair ``(2i, 2i+1)`` at position ``p`` by ``p * omega_i``.

    With :math:`\\omega_i = \\mathrm{base}^{-2i/d}`, the pair :math:`(x_{2i}, x_{2i+1})` becomes
    :math:`(x_{2i}\\cos\\theta - x_{2i+1}\\sin\\theta,\\ x_{2i}\\sin\\theta + x_{2i+1}\\cos\\theta)` with
    :math:`\\theta = p\\,\\omega_i`. Rotations preserve norms, and the dot product of a query rotated
    to position ``m`` with a key rotated to ``n`` depends on ``m - n`` only.
    Implements (llama-rope).

    Args:
        x: ``(..., T, d)`` queries or keys, floating, ``d`` even.
        positions: ``(T,)`` integer (or floating) positions of the ``T`` rows.
        base: the frequency base, positive.
        frequencies: optional ``(d/2,)`` frequencies that replace :math:`\\omega_i`, e.g. the
            context-extended ones of :func:`rope_frequencies`; ``base`` is then ignored.

    Returns:
        Tensor of the shape, dtype and device of ``x``.

    Raises:
        TypeError: if ``x`` is not floating or ``positions`` is not a tensor.
        ValueError: if ``d`` is odd, ``positions`` is not ``(T,)``, ``base`` is not positive, or
            ``frequencies`` is not ``(d/2,)``.

    >>> q = torch.tensor([[1.0, 0.0]])
    >>> apply_rope(q, torch.tensor([0]))
    tensor([[1., 0.]])
    >>> apply_rope(q, torch.tensor([1]), base=1.0)  # rotated by 1 radian: (cos 1, sin 1)
    tensor([[0.5403, 0.8415]])
    """
    if not isinstance(x, torch.Tensor) or not x.is_floating_point():
        raise TypeError(f"x must be a floating tensor, got {getattr(x, 'dtype', type(x).__name__)}")
    if not isinstance(positions, torch.Tensor) or positions.dtype == torch.bool:
        raise TypeError("positions must be an integer or floating tensor")
    if x.dim() < 2 or x.shape[-1] % 2 != 0:
        raise ValueError(f"x must have shape (..., T, d) with d even, got {tuple(x.shape)}")
    if tuple(positions.shape) != (x.shape[-2],):
        raise ValueError(f"positions must have shape ({x.shape[-2]},) to match x's T, got {tuple(positions.shape)}")
    if not (isinstance(base, (int, float)) and base > 0):
        raise ValueError(f"base must be a positive number, got {base!r}")
    d = x.shape[-1]
    if frequencies is not None and (not isinstance(frequencies, torch.Tensor)
                                    or tuple(frequencies.shape) != (d // 2,)):
        raise ValueError(f"frequencies must be a ({d // 2},) tensor, got {getattr(frequencies, 'shape', frequencies)!r}")
    work = torch.float32 if x.dtype in (torch.float16, torch.bfloat16) else x.dtype
    cos, sin = _rope_tables(positions, d, base, work, frequencies)
    return _rotate_pairs(x, cos, sin)


def _rope_tables(positions: torch.Tensor, d: int, base: float, dtype: torch.dtype,
                 frequencies: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """``cos`` and ``sin`` of the angles ``p * omega_i``, each ``(T, d/2)``; angles in float64 for accuracy."""
    if frequencies is not None:
        omega = frequencies.to(device=positions.device, dtype=torch.float64)
    else:
        omega = base ** (-torch.arange(0, d, 2, device=positions.device, dtype=torch.float64) / d)  # (d/2,)
    theta = positions.to(torch.float64)[:, None] * omega  # (T, d/2)
    return torch.cos(theta).to(dtype), torch.sin(theta).to(dtype)


def _rotate_pairs(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate each interleaved pair ``(x[2i], x[2i+1])`` of ``x (..., T, d)`` by the angle whose cos/sin are given."""
    pairs = x.to(cos.dtype).unflatten(-1, (x.shape[-1] // 2, 2))  # (..., T, d/2, 2)
    x0, x1 = pairs[..., 0], pairs[..., 1]
    out = torch.stack((x0 * cos - x1 * sin, x0 * sin + x1 * cos), dim=-1)
    return out.flatten(-2).to(x.dtype)


def rope_frequencies(d: int, base: float = 10000.0, *, scaling: str | None = None, factor: float = 1.0,
                     original_length: int | None = None, alpha: float = 1.0, beta: float = 32.0,
                     device: torch.device | str | None = None, dtype: torch.dtype = torch.float64) -> torch.Tensor:
    r"""RoPE's rotation frequencies, optionally rescaled to extend the context by ``factor``.

    ``factor`` is :math:`s = L'/L \ge 1`, the target length over the training length. With
    :math:`\omega_i = \mathrm{base}^{-2i/d}`, ``i = 0 .. d/2 - 1``:

    - ``None``: :math:`\omega_i` (plain RoPE; extrapolation when used past ``L``).
    - ``"linear"``: position interpolation, :math:`\omega_i / s`, the same as feeding positions
      :math:`p/s`. Implements (llama-pi).
    - ``"ntk"``: the base is raised to :math:`\mathrm{base}\cdot s^{d/(d-2)}`, which keeps
      :math:`\omega_0 = 1` and divides the lowest frequency by :math:`s`. Implements (llama-ntk)
      (which needs :math:`d \ge 4`; for ``d = 2`` the single pair is treated as the lowest and divided by :math:`s`).
    - ``"yarn"``: YaRN's per-frequency ramp: with :math:`r_i = L\omega_i/2\pi` the number of turns
      pair ``i`` makes over the training length ``original_length``, interpolate fully
      (:math:`\omega_i/s`) where :math:`r_i < \alpha`, keep :math:`\omega_i` where :math:`r_i > \beta`,
      and blend linearly in :math:`r_i` between. Implements (llama-yarn-ramp). Pair it with
      :func:`yarn_attention_scale`.

    Args:
        d: head width, a positive even int.
        base: the frequency base, positive.
        scaling: ``None``, ``"linear"``, ``"ntk"`` or ``"yarn"``.
        factor: the extension factor :math:`s \ge 1` (ignored when ``scaling`` is ``None``).
        original_length: the training length :math:`L`; required for ``"yarn"``.
        alpha, beta: YaRN's ramp ends in turns, ``0 < alpha < beta`` (the paper uses 1 and 32 for LLaMA).
        device, dtype: of the result (floating).

    Returns:
        ``(d/2,)`` frequencies, decreasing in ``i``.

    Raises:
        ValueError: on an odd or non-positive ``d``, a non-positive ``base``, an unknown
            ``scaling``, ``factor < 1``, a missing or bad ``original_length`` for YaRN, or
            ``alpha >= beta``.

    >>> rope_frequencies(4, 100.0).tolist()
    [1.0, 0.1]
    >>> rope_frequencies(4, 100.0, scaling="ntk", factor=4.0).tolist()  # lowest one divided by 4
    [1.0, 0.025]
    """
    if not isinstance(d, int) or isinstance(d, bool) or d <= 0 or d % 2:
        raise ValueError(f"d must be a positive even int, got {d!r}")
    if not (isinstance(base, (int, float)) and not isinstance(base, bool) and base > 0):
        raise ValueError(f"base must be a positive number, got {base!r}")
    if scaling not in (None, "linear", "ntk", "yarn"):
        raise ValueError(f"scaling must be None, 'linear', 'ntk' or 'yarn', got {scaling!r}")
    if not (isinstance(factor, (int, float)) and not isinstance(factor, bool) and factor >= 1):
        raise ValueError(f"factor must be a number >= 1 (target length / training length), got {factor!r}")
    if not dtype.is_floating_point:
        raise ValueError(f"dtype must be floating, got {dtype}")
    i = torch.arange(d // 2, device=device, dtype=torch.float64)
    s = float(factor)
    if scaling == "ntk" and d > 2:
        # (llama-ntk): b' = b s^{d/(d-2)}, so omega'_i = omega_i s^{-2i/(d-2)}
        omega = (base * s ** (d / (d - 2))) ** (-2 * i / d)
    else:
        omega = base ** (-2 * i / d)
    if scaling == "ntk" and d == 2:
        omega = omega / s  # a single pair is both the highest and the lowest frequency; treat it as the lowest
    if scaling == "linear":
        omega = omega / s  # (llama-pi)
    if scaling == "yarn":
        if not isinstance(original_length, int) or isinstance(original_length, bool) or original_length <= 0:
            raise ValueError(f"original_length must be a positive int for scaling='yarn', got {original_length!r}")
        if not (0 < alpha < beta):
            raise ValueError(f"need 0 < alpha < beta, got alpha={alpha!r}, beta={beta!r}")
        turns = original_length * omega / (2 * math.pi)  # r_i
        gamma = ((turns - alpha) / (beta - alpha)).clamp(0.0, 1.0)  # 0: interpolate, 1: keep
        omega = (1 - gamma) * omega / s + gamma * omega  # (llama-yarn-ramp)
    return omega.to(dtype)


def yarn_attention_scale(factor: float) -> float:
    r"""YaRN's factor :math:`\sqrt{1/t} = 0.1\ln s + 1` for the queries and keys.

    Multiplying both the rotated queries and keys by it divides the attention logits by the
    temperature :math:`t`, i.e. multiplies them by :math:`(0.1\ln s + 1)^2`. Implements (llama-yarn-temp).

    Args:
        factor: the extension factor :math:`s \ge 1`.

    >>> yarn_attention_scale(1.0)
    1.0
    """
    if not (isinstance(factor, (int, float)) and not isinstance(factor, bool) and factor >= 1):
        raise ValueError(f"factor must be a number >= 1, got {factor!r}")
    return 0.1 * math.log(factor) + 1.0


def repeat_kv(x: torch.Tensor, n_rep: int) -> torch.Tensor:
    """Share each key/value head with ``n_rep`` query heads (grouped-query attention).

    Head ``h`` of the output is head ``h // n_rep`` of the input, so each input head appears
    ``n_rep`` times in a row, the same as ``x.repeat_interleave(n_rep, dim=1)``. For
    ``n_rep > 1`` the result is a new tensor (an expanded view, reshaped to 4-D, which copies):
    ``n_rep`` times the memory of ``x``, made per attention call. The KV cache itself stores only
    the ``n_kv_heads`` heads. Implements (llama-gqa).

    Args:
        x: ``(B, n_kv_heads, T, d)``.
        n_rep: positive int, ``n_heads // n_kv_heads``.

    Returns:
        ``(B, n_kv_heads * n_rep, T, d)``.

    >>> repeat_kv(torch.arange(2.0).view(1, 2, 1, 1), 3).flatten().tolist()
    [0.0, 0.0, 0.0, 1.0, 1.0, 1.0]
    """
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"x must be a torch.Tensor, got {type(x).__name__}")
    if x.dim() != 4:
        raise ValueError(f"x must have shape (B, n_kv_heads, T, d), got {tuple(x.shape)}")
    _pos_int(n_rep, "n_rep")
    if n_rep == 1:
        return x
    B, H_kv, T, d = x.shape
    # (B, H_kv, 1, T, d) -> (B, H_kv, n_rep, T, d) -> (B, H_kv * n_rep, T, d)
    return x[:, :, None].expand(B, H_kv, n_rep, T, d).reshape(B, H_kv * n_rep, T, d)


@dataclass(frozen=True)
class TinyLlamaConfig:
    """Sizes of a :class:`TinyLlama`.

    Attributes:
        vocab_size: number of tokens.
        d_model: model width.
        n_layers: number of blocks.
        n_heads: query heads; ``d_head = d_model // n_heads``.
        n_kv_heads: key/value heads; divides ``n_heads``. Equal to ``n_heads`` is multi-head
            attention, 1 is multi-query attention.
        d_ff: hidden width of the SwiGLU MLP.
        max_seq_len: the longest sequence (and KV cache) the model handles.
        rope_base: RoPE's frequency base.
        norm_eps: RMSNorm's epsilon.
    """

    vocab_size: int = 32
    d_model: int = 64
    n_layers: int = 2
    n_heads: int = 4
    n_kv_heads: int = 2
    d_ff: int = 172
    max_seq_len: int = 512
    rope_base: float = 10000.0
    norm_eps: float = 1e-6

    def __post_init__(self) -> None:
        for name in ("vocab_size", "d_model", "n_layers", "n_heads", "n_kv_heads", "d_ff", "max_seq_len"):
            _pos_int(getattr(self, name), name)
        if self.d_model % self.n_heads != 0:
            raise ValueError(f"d_model ({self.d_model}) must be divisible by n_heads ({self.n_heads})")
        if (self.d_model // self.n_heads) % 2 != 0:
            raise ValueError("d_model // n_heads must be even for RoPE")
        if self.n_heads % self.n_kv_heads != 0:
            raise ValueError(f"n_kv_heads ({self.n_kv_heads}) must divide n_heads ({self.n_heads})")

    @property
    def d_head(self) -> int:
        return self.d_model // self.n_heads


def param_count(config: TinyLlamaConfig) -> int:
    """The number of parameters of ``TinyLlama(config)``, in closed form. Implements (llama-params).

    Per block: attention :math:`2 d^2 + 2 d\\,H_{kv} d_h` (``wq``, ``wo`` and the smaller
    ``wk``, ``wv``), SwiGLU :math:`3 d\\, d_{ff}`, two RMSNorm gains :math:`2d`. Plus the embedding,
    the final norm and the (untied) output head.

    >>> param_count(TinyLlamaConfig(vocab_size=10, d_model=8, n_layers=1, n_heads=2, n_kv_heads=1, d_ff=16))
    760
    """
    c = config
    attn = 2 * c.d_model * c.d_model + 2 * c.d_model * c.n_kv_heads * c.d_head
    block = attn + 3 * c.d_model * c.d_ff + 2 * c.d_model
    return c.n_layers * block + 2 * c.vocab_size * c.d_model + c.d_model


def kv_cache_bytes(config: TinyLlamaConfig, *, batch: int, seq_len: int, bytes_per_element: int = 2) -> int:
    """Memory of a full KV cache: ``2 * n_layers * n_kv_heads * d_head * seq_len * batch * bytes``.

    The factor 2 counts keys and values. Implements (llama-kv-memory).

    >>> kv_cache_bytes(TinyLlamaConfig(n_kv_heads=1), batch=1, seq_len=100)
    12800
    """
    _pos_int(batch, "batch")
    _pos_int(seq_len, "seq_len")
    _pos_int(bytes_per_element, "bytes_per_element")
    c = config
    return 2 * c.n_layers * c.n_kv_heads * c.d_head * seq_len * batch * bytes_per_element


class KVCache:
    """Pre-allocated keys and values of every layer, filled as tokens are decoded.

    Attributes:
        k, v: tensors ``(n_layers, B, n_kv_heads, max_seq_len, d_head)``; entries beyond
            ``length`` are unused.
        length: how many positions are filled.
    """

    def __init__(self, config: TinyLlamaConfig, batch: int, *, device: torch.device | str | None = None,
                 dtype: torch.dtype = torch.float32) -> None:
        _pos_int(batch, "batch")
        shape = (config.n_layers, batch, config.n_kv_heads, config.max_seq_len, config.d_head)
        self.k = torch.zeros(shape, device=device, dtype=dtype)
        self.v = torch.zeros(shape, device=device, dtype=dtype)
        self.length = 0

    def append(self, layer: int, k: torch.Tensor, v: torch.Tensor, start: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Write ``k, v`` of shape ``(B, n_kv_heads, T_new, d_head)`` at ``start`` and return all keys and values so far."""
        end = start + k.shape[-2]
        if end > self.k.shape[-2]:
            raise ValueError(f"the cache holds {self.k.shape[-2]} positions; cannot write up to {end}")
        self.k[layer, :, :, start:end] = k
        self.v[layer, :, :, start:end] = v
        return self.k[layer, :, :, :end], self.v[layer, :, :, :end]


class _Attention(nn.Module):
    """Grouped-query causal self-attention with RoPE (no biases, as in LLaMA)."""

    def __init__(self, c: TinyLlamaConfig) -> None:
        super().__init__()
        self.c = c
        self.wq = nn.Linear(c.d_model, c.n_heads * c.d_head, bias=False)
        self.wk = nn.Linear(c.d_model, c.n_kv_heads * c.d_head, bias=False)
        self.wv = nn.Linear(c.d_model, c.n_kv_heads * c.d_head, bias=False)
        self.wo = nn.Linear(c.n_heads * c.d_head, c.d_model, bias=False)

    def forward(self, x: torch.Tensor, rope: tuple[torch.Tensor, torch.Tensor], start: int,
                cache: KVCache | None, layer: int) -> torch.Tensor:
        c = self.c
        B, T, _ = x.shape
        # (B, T, H*d_h) -> (B, H, T, d_h), then rotate queries and keys by their absolute positions:
        # rope holds cos/sin of positions start .. start+T-1, the same numbers apply_rope computes
        q = _rotate_pairs(self.wq(x).view(B, T, c.n_heads, c.d_head).transpose(1, 2), *rope)
        k = _rotate_pairs(self.wk(x).view(B, T, c.n_kv_heads, c.d_head).transpose(1, 2), *rope)
        v = self.wv(x).view(B, T, c.n_kv_heads, c.d_head).transpose(1, 2)
        if cache is not None:
            k, v = cache.append(layer, k, v, start)  # (B, H_kv, start + T, d_h)
        n_rep = c.n_heads // c.n_kv_heads
        k, v = repeat_kv(k, n_rep), repeat_kv(v, n_rep)
        S = k.shape[-2]
        # query i sits at absolute position start + i and may see keys 0 .. start + i
        mask = None if T == 1 else torch.ones(T, S, dtype=torch.bool, device=x.device).tril(S - T)
        o = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)  # (B, H, T, d_h)
        return self.wo(o.transpose(1, 2).reshape(B, T, c.n_heads * c.d_head))


class _Block(nn.Module):
    def __init__(self, c: TinyLlamaConfig) -> None:
        super().__init__()
        self.eps = c.norm_eps
        self.attn_norm = nn.Parameter(torch.ones(c.d_model))
        self.attn = _Attention(c)
        self.mlp_norm = nn.Parameter(torch.ones(c.d_model))
        self.w_gate = nn.Linear(c.d_model, c.d_ff, bias=False)
        self.w_up = nn.Linear(c.d_model, c.d_ff, bias=False)
        self.w_down = nn.Linear(c.d_ff, c.d_model, bias=False)

    def forward(self, x: torch.Tensor, rope: tuple[torch.Tensor, torch.Tensor], start: int,
                cache: KVCache | None, layer: int) -> torch.Tensor:
        x = x + self.attn(rms_norm(x, self.attn_norm, self.eps), rope, start, cache, layer)
        h = rms_norm(x, self.mlp_norm, self.eps)
        # SwiGLU: a SiLU-gated linear unit, then project back (llama-swiglu)
        return x + self.w_down(F.silu(self.w_gate(h)) * self.w_up(h))


class TinyLlama(nn.Module):
    """A small LLaMA-style decoder: RMSNorm pre-norm blocks, RoPE, GQA, SwiGLU, untied head.

    Implements (llama-block).

    Args:
        config: a :class:`TinyLlamaConfig`.

    >>> model = TinyLlama(TinyLlamaConfig(vocab_size=11, d_model=16, n_heads=4, n_kv_heads=2, d_ff=32))
    >>> model(torch.zeros(2, 5, dtype=torch.long)).shape
    torch.Size([2, 5, 11])
    """

    def __init__(self, config: TinyLlamaConfig) -> None:
        super().__init__()
        if not isinstance(config, TinyLlamaConfig):
            raise TypeError(f"config must be a TinyLlamaConfig, got {type(config).__name__}")
        self.config = config
        self.tok_emb = nn.Embedding(config.vocab_size, config.d_model)
        self.blocks = nn.ModuleList(_Block(config) for _ in range(config.n_layers))
        self.norm = nn.Parameter(torch.ones(config.d_model))
        self.head = nn.Linear(config.d_model, config.vocab_size, bias=False)
        # RoPE's cos/sin for every position, computed once (not parameters, not saved)
        cos, sin = _rope_tables(torch.arange(config.max_seq_len), config.d_head, config.rope_base, torch.float32)
        self.register_buffer("rope_cos", cos, persistent=False)
        self.register_buffer("rope_sin", sin, persistent=False)

    def new_cache(self, batch: int) -> KVCache:
        """An empty :class:`KVCache` for ``batch`` sequences, on the model's device and dtype."""
        p = self.norm
        return KVCache(self.config, batch, device=p.device, dtype=p.dtype)

    def forward(self, tokens: torch.Tensor, *, cache: KVCache | None = None) -> torch.Tensor:
        """Logits for every position.

        Args:
            tokens: ``(B, T)`` integer token ids.
            cache: if given, ``tokens`` continue the sequence already in the cache (positions
                ``cache.length`` onwards), their keys and values are appended, and ``cache.length``
                advances by ``T``.

        Returns:
            ``(B, T, vocab_size)`` logits.

        Raises:
            TypeError: if ``tokens`` is not an integer tensor.
            ValueError: if the shape is wrong, a token is out of range, or the sequence is too long.
        """
        c = self.config
        if not isinstance(tokens, torch.Tensor) or tokens.is_floating_point() or tokens.dtype == torch.bool:
            raise TypeError(f"tokens must be an integer tensor, got {getattr(tokens, 'dtype', type(tokens).__name__)}")
        if tokens.dim() != 2:
            raise ValueError(f"tokens must have shape (B, T), got {tuple(tokens.shape)}")
        start = 0 if cache is None else cache.length
        if start + tokens.shape[1] > c.max_seq_len:
            raise ValueError(f"sequence length {start + tokens.shape[1]} exceeds max_seq_len {c.max_seq_len}")
        x = self.tok_emb(tokens)  # (B, T, d)
        end = start + tokens.shape[1]
        rope = (self.rope_cos[start:end], self.rope_sin[start:end])
        for i, blk in enumerate(self.blocks):
            x = blk(x, rope, start, cache, i)
        if cache is not None:
            cache.length = start + tokens.shape[1]
        return self.head(rms_norm(x, self.norm, c.norm_eps))


@torch.inference_mode()
def generate(model: TinyLlama, prompt: torch.Tensor, max_new_tokens: int, *, use_cache: bool = True,
             generator: torch.Generator | None = None, greedy: bool = False) -> torch.Tensor:
    """Sample a continuation of ``prompt`` token by token.

    With ``use_cache`` the prompt is processed once and every later step feeds only the newest
    token, reusing the cached keys and values (cost per step linear in the length). Without it
    every step recomputes the whole sequence (quadratic). Both give the same tokens for the
    same ``generator`` state. Implements (llama-kv-cache).

    Args:
        model: a :class:`TinyLlama`.
        prompt: ``(B, T0)`` integer tokens, ``T0 >= 1``.
        max_new_tokens: how many tokens to append, positive.
        use_cache: decode with a KV cache.
        generator: the random generator for sampling (ignored when ``greedy``).
        greedy: take the argmax instead of sampling.

    Returns:
        ``(B, T0 + max_new_tokens)`` tokens.
    """
    if not isinstance(model, TinyLlama):
        raise TypeError(f"model must be a TinyLlama, got {type(model).__name__}")
    _pos_int(max_new_tokens, "max_new_tokens")
    if not isinstance(prompt, torch.Tensor) or prompt.dim() != 2 or prompt.shape[1] == 0:
        raise ValueError("prompt must be a (B, T0) tensor with T0 >= 1")
    if prompt.shape[1] + max_new_tokens > model.config.max_seq_len:
        raise ValueError(f"prompt plus max_new_tokens exceeds max_seq_len {model.config.max_seq_len}")
    seq = prompt
    cache = model.new_cache(prompt.shape[0]) if use_cache else None
    step_input = prompt
    for _ in range(max_new_tokens):
        logits = model(step_input, cache=cache)[:, -1] if use_cache else model(seq)[:, -1]
        if greedy:
            nxt = logits.argmax(-1, keepdim=True)
        else:
            nxt = torch.multinomial(torch.softmax(logits.float(), -1), 1, generator=generator)
        seq = torch.cat([seq, nxt], 1)
        step_input = nxt
    return seq
