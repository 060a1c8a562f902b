"""Parameter-efficient fine-tuning: LoRA, bottleneck adapters and prefix tuning.

Each method freezes a pre-trained model and trains a small number of new parameters:

* :class:`LoRALinear` adds a low-rank update ``(alpha / r) B A`` to a frozen linear layer, with
  ``B`` zero at init; :func:`add_lora` installs it on a model's linear layers by name and
  :func:`merge_lora` folds it back into plain ``nn.Linear`` layers for inference.
* :class:`Adapter` is a residual bottleneck MLP ``u + W_up act(W_down u)`` with ``W_up`` zero at
  init; :func:`add_adapters` inserts one after chosen linear layers (the output projections of
  a block's two sublayers, as in Houlsby et al.).
* :func:`prefix_attention` is attention over learned extra keys and values followed by the
  sequence's own; :class:`PrefixTuning` runs a frozen :class:`~minilib.llama.TinyLlama` with a
  prefix in every layer, produced during training by a small MLP (the reparametrisation).
* :func:`count_parameters` and :func:`finetune_memory_bytes` do the bookkeeping.

Conventions: a linear layer maps ``(..., in)`` to ``(..., out)`` with weight ``W`` of shape
``(out, in)``, so ``y = x W^T``; per-head attention tensors are ``(B, heads, T, d_head)``.
TinyLlama names its projections ``wq, wk, wv, wo`` (attention) and ``w_gate, w_up, w_down``
(SwiGLU MLP); Hugging Face's LLaMA calls the first four ``q_proj, k_proj, v_proj, o_proj``.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

__all__ = [
    "Adapter",
    "LoRALinear",
    "PrefixTuning",
    "add_adapters",
    "add_lora",
    "count_parameters",
    "finetune_memory_bytes",
    "merge_lora",
    "prefix_attention",
]


def _pos_int(v: object, name: str) -> int:
    if not isinstance(v, int) or isinstance(v, bool) or v < 1:
        raise ValueError(f"{name} must be an int >= 1, got {v!r}")
    return v


def _check_module(model: object, name: str = "model") -> None:
    if not isinstance(model, nn.Module):
        raise TypeError(f"{name} must be a torch.nn.Module, got {type(model).__name__}")


def _targets(target: object) -> tuple[str, ...]:
    if isinstance(target, str):
        target = (target,)
    if not isinstance(target, (tuple, list)) or not target or not all(isinstance(t, str) and t for t in target):
        raise TypeError(f"target must be a non-empty tuple of module-name suffixes, got {target!r}")
    return tuple(target)


def _matches(name: str, targets: tuple[str, ...]) -> bool:
    return any(name == t or name.endswith("." + t) for t in targets)


def _set_submodule(model: nn.Module, name: str, module: nn.Module) -> None:
    parent_name, _, child = name.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    setattr(parent, child, module)


# ----------------------------------------------------------------------------------------
# LoRA
# ----------------------------------------------------------------------------------------


class LoRALinear(nn.Module):
    """A frozen linear layer plus a trainable low-rank update.

    ``y = base(x) + (alpha / r) * dropout(x) @ A^T @ B^T``, which for ``dropout = 0`` is the
    linear layer with weight ``W + (alpha / r) B A``. Implements (peft-lora) and
    (peft-lora-merge).

    ``A`` (``lora_A``, shape ``(r, in)``) is drawn from a Gaussian with standard deviation
    ``1 / sqrt(in)``; ``B`` (``lora_B``, shape ``(out, r)``) starts at zero, so the layer starts
    out exactly equal to ``base``. The base weight and bias are frozen (``requires_grad`` off).

    Args:
        base: the pre-trained ``nn.Linear``.
        r: the rank, an int ``>= 1``.
        alpha: the scale numerator, a positive number; the update is multiplied by ``alpha / r``.
        dropout: dropout probability applied to the input of the low-rank branch, in ``[0, 1)``.

    >>> layer = LoRALinear(nn.Linear(6, 4), r=2, alpha=4.0)
    >>> tuple(layer.lora_A.shape), tuple(layer.lora_B.shape), layer.scaling
    ((2, 6), (4, 2), 2.0)
    >>> x = torch.randn(3, 6)
    >>> torch.equal(layer(x), layer.base(x))  # B = 0 at init
    True
    """

    def __init__(self, base: nn.Linear, r: int, alpha: float, dropout: float = 0.0) -> None:
        super().__init__()
        if not isinstance(base, nn.Linear):
            raise TypeError(f"base must be an nn.Linear, got {type(base).__name__}")
        _pos_int(r, "r")
        if not (isinstance(alpha, (int, float)) and not isinstance(alpha, bool) and alpha > 0):
            raise ValueError(f"alpha must be a positive number, got {alpha!r}")
        if not (isinstance(dropout, (int, float)) and 0.0 <= dropout < 1.0):
            raise ValueError(f"dropout must be in [0, 1), got {dropout!r}")
        self.base = base
        for p in base.parameters():
            p.requires_grad_(False)
        self.r, self.alpha = r, float(alpha)
        self.scaling = self.alpha / r
        w = base.weight
        self.lora_A = nn.Parameter(torch.randn(r, base.in_features, device=w.device, dtype=w.dtype)
                                   / math.sqrt(base.in_features))
        self.lora_B = nn.Parameter(torch.zeros(base.out_features, r, device=w.device, dtype=w.dtype))
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()

    @property
    def in_features(self) -> int:
        return self.base.in_features

    @property
    def out_features(self) -> int:
        return self.base.out_features

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # (..., in) -> (..., r) -> (..., out): never forms the (out, in) product B A
        return self.base(x) + self.scaling * (self.dropout(x) @ self.lora_A.T @ self.lora_B.T)

    def delta_weight(self) -> torch.Tensor:
        """The dense update ``(alpha / r) B A``, shape ``(out, in)``."""
        return self.scaling * (self.lora_B @ self.lora_A)

    def merge(self) -> nn.Linear:
        """A plain ``nn.Linear`` with weight ``W + (alpha / r) B A`` and the base's bias.

        Implements (peft-lora-merge): inference then costs exactly what the base layer costs.
        The new layer's parameters are detached copies (trainable again if you wish).
        """
        b = self.base
        out = nn.Linear(b.in_features, b.out_features, bias=b.bias is not None,
                        device=b.weight.device, dtype=b.weight.dtype)
        with torch.no_grad():
            out.weight.copy_(b.weight + self.delta_weight())
            if b.bias is not None:
                out.bias.copy_(b.bias)
        return out

    def extra_repr(self) -> str:
        return f"r={self.r}, alpha={self.alpha:g}"


def _select_linear(model: nn.Module, targets: tuple[str, ...]) -> list[str]:
    """Qualified names of the ``nn.Linear`` submodules whose name ends with one of ``targets``."""
    linear = [n for n, m in model.named_modules() if isinstance(m, nn.Linear)]
    chosen = [n for n in linear if _matches(n, targets)]
    if not chosen:
        raise ValueError(f"no nn.Linear module name ends with any of target={targets}; "
                         f"the linear layers are {linear}")
    return chosen


def add_lora(model: nn.Module, r: int, alpha: float, target: tuple[str, ...] = ("wq", "wv"),
             dropout: float = 0.0) -> list[str]:
    """Freeze ``model`` and wrap each ``nn.Linear`` whose name ends with a ``target`` in :class:`LoRALinear`.

    A module matches when its qualified name equals a target or ends with ``"." + target``.
    The default ``("wq", "wv")`` is the query and value projections, the choice of Hu et al.
    (TinyLlama's names; Hugging Face models call them ``q_proj`` and ``v_proj``). Every
    parameter of ``model`` is frozen; only the new ``lora_A`` and ``lora_B`` train. Changes
    ``model`` in place.

    Args:
        model: any module (e.g. a :class:`~minilib.llama.TinyLlama`).
        r, alpha, dropout: as in :class:`LoRALinear`.
        target: name suffixes of the linear layers to adapt.

    Returns:
        The qualified names of the wrapped layers, in module order.

    Raises:
        ValueError: if no ``nn.Linear`` matches ``target`` (the message lists the linear layers
            that exist), or on bad ``r``/``alpha``/``dropout``.
        TypeError: if ``model`` is not a module or ``target`` is not a tuple of strings.

    >>> from minilib.llama import TinyLlama, TinyLlamaConfig
    >>> m = TinyLlama(TinyLlamaConfig(vocab_size=8, d_model=16, n_layers=2, n_heads=2, n_kv_heads=1, d_ff=32))
    >>> add_lora(m, r=2, alpha=4)
    ['blocks.0.attn.wq', 'blocks.0.attn.wv', 'blocks.1.attn.wq', 'blocks.1.attn.wv']
    """
    _check_module(model)
    targets = _targets(target)
    _pos_int(r, "r")
    chosen = _select_linear(model, targets)
    LoRALinear(nn.Linear(1, 1), r, alpha, dropout)  # validate alpha and dropout before changing model
    for p in model.parameters():
        p.requires_grad_(False)
    for name in chosen:
        _set_submodule(model, name, LoRALinear(model.get_submodule(name), r, alpha, dropout))
    return chosen


def merge_lora(model: nn.Module) -> int:
    """Replace every :class:`LoRALinear` inside ``model`` by its merged ``nn.Linear``, in place.

    Implements (peft-lora-merge). Returns the number of layers merged (0 if there were none).
    """
    _check_module(model)
    names = [n for n, m in model.named_modules() if isinstance(m, LoRALinear)]
    for name in names:
        _set_submodule(model, name, model.get_submodule(name).merge())
    return len(names)


# ----------------------------------------------------------------------------------------
# Adapters
# ----------------------------------------------------------------------------------------


class Adapter(nn.Module):
    """A residual bottleneck: ``u + W_up act(W_down u + b_down) + b_up``. Implements (peft-adapter).

    ``W_down`` is ``(bottleneck, d_model)``, ``W_up`` is ``(d_model, bottleneck)``; ``W_up`` and
    ``b_up`` start at zero, so the adapter starts as the identity map. The activation is GELU.
    Parameters: ``2 * d_model * bottleneck + bottleneck + d_model``.

    >>> a = Adapter(8, 2)
    >>> u = torch.randn(3, 8)
    >>> torch.equal(a(u), u), sum(p.numel() for p in a.parameters())
    (True, 42)
    """

    def __init__(self, d_model: int, bottleneck: int) -> None:
        super().__init__()
        _pos_int(d_model, "d_model")
        _pos_int(bottleneck, "bottleneck")
        self.down = nn.Linear(d_model, bottleneck)
        self.up = nn.Linear(bottleneck, d_model)
        nn.init.zeros_(self.up.weight)
        nn.init.zeros_(self.up.bias)

    def forward(self, u: torch.Tensor) -> torch.Tensor:
        if u.shape[-1] != self.down.in_features:
            raise ValueError(f"u must have last dimension {self.down.in_features}, got {tuple(u.shape)}")
        return u + self.up(F.gelu(self.down(u)))


def add_adapters(model: nn.Module, bottleneck: int, target: tuple[str, ...] = ("wo", "w_down")) -> list[str]:
    """Freeze ``model`` and follow each ``nn.Linear`` named by ``target`` with an :class:`Adapter`.

    The layer ``f`` becomes ``nn.Sequential(f, Adapter(out, bottleneck))``. With the default
    targets (TinyLlama's attention output ``wo`` and MLP output ``w_down``) the adapter acts on
    each sublayer's output *before* the residual addition, Houlsby et al.'s placement.
    Only the adapters train. Changes ``model`` in place.

    Returns:
        The qualified names of the layers that got an adapter.

    Raises:
        ValueError: if nothing matches ``target`` or ``bottleneck < 1``.
    """
    _check_module(model)
    targets = _targets(target)
    _pos_int(bottleneck, "bottleneck")
    chosen = _select_linear(model, targets)
    for p in model.parameters():
        p.requires_grad_(False)
    for name in chosen:
        lin = model.get_submodule(name)
        ad = Adapter(lin.out_features, bottleneck).to(device=lin.weight.device, dtype=lin.weight.dtype)
        _set_submodule(model, name, nn.Sequential(lin, ad))
    return chosen


# ----------------------------------------------------------------------------------------
# Prefix tuning
# ----------------------------------------------------------------------------------------


def prefix_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, prefix_k: torch.Tensor,
                     prefix_v: torch.Tensor, causal: bool = False) -> torch.Tensor:
    """Softmax attention over ``P`` prefix keys/values followed by the ``S`` sequence keys/values.

    Equal to scaled dot-product attention over ``cat([prefix_k, k])`` and ``cat([prefix_v, v])``
    along the key axis. With ``causal=True`` every query sees the whole prefix, and query ``i``
    sees the sequence keys ``0 .. i + S - T`` (the causal mask, aligned to the end as in a KV
    cache). Implements (peft-prefix-attention).

    Args:
        q: ``(B, H, T, d)`` queries.
        k, v: ``(B, H, S, d)`` and ``(B, H, S, d_v)``.
        prefix_k, prefix_v: ``(H, P, d)`` and ``(H, P, d_v)`` shared by the batch, or
            ``(B, H, P, d)`` and ``(B, H, P, d_v)``.
        causal: apply the causal mask to the sequence part.

    Returns:
        ``(B, H, T, d_v)``.

    Raises:
        TypeError: if an input is not a floating tensor.
        ValueError: on inconsistent shapes, or ``causal`` with ``T > S``.

    >>> q = torch.randn(1, 2, 3, 4); k = torch.randn(1, 2, 3, 4); v = torch.randn(1, 2, 3, 4)
    >>> pk = torch.randn(2, 5, 4); pv = torch.randn(2, 5, 4)
    >>> prefix_attention(q, k, v, pk, pv, causal=True).shape
    torch.Size([1, 2, 3, 4])
    """
    for name, t in (("q", q), ("k", k), ("v", v), ("prefix_k", prefix_k), ("prefix_v", prefix_v)):
        if not isinstance(t, torch.Tensor) or not t.is_floating_point():
            raise TypeError(f"{name} must be a floating tensor, got {getattr(t, 'dtype', type(t).__name__)}")
    if q.dim() != 4 or k.dim() != 4 or v.dim() != 4:
        raise ValueError(f"q, k, v must be 4-D (B, H, T, d); got {tuple(q.shape)}, {tuple(k.shape)}, {tuple(v.shape)}")
    B, H, T, d = q.shape
    S = k.shape[2]
    if k.shape[:2] != (B, H) or k.shape[3] != d or v.shape[:3] != (B, H, S):
        raise ValueError(f"k must be (B, H, S, d) = ({B}, {H}, S, {d}) and v (B, H, S, d_v); "
                         f"got {tuple(k.shape)} and {tuple(v.shape)}")
    d_v = v.shape[3]
    if prefix_k.dim() == 3:
        prefix_k = prefix_k.unsqueeze(0).expand(B, -1, -1, -1)
    if prefix_v.dim() == 3:
        prefix_v = prefix_v.unsqueeze(0).expand(B, -1, -1, -1)
    if prefix_k.dim() != 4 or prefix_k.shape[0] != B or prefix_k.shape[1] != H or prefix_k.shape[3] != d:
        raise ValueError(f"prefix_k must be (H, P, d) = ({H}, P, {d}) or (B, H, P, d); got {tuple(prefix_k.shape)}")
    P = prefix_k.shape[2]
    if prefix_v.dim() != 4 or tuple(prefix_v.shape) != (B, H, P, d_v):
        raise ValueError(f"prefix_v must be (H, P, d_v) = ({H}, {P}, {d_v}) or (B, H, P, d_v) to match "
                         f"prefix_k and v; got {tuple(prefix_v.shape)}")
    if causal and T > S:
        raise ValueError(f"causal attention needs at least as many keys as queries, got T={T} > S={S}")
    keys = torch.cat([prefix_k, k], dim=2)  # (B, H, P + S, d)
    values = torch.cat([prefix_v, v], dim=2)  # (B, H, P + S, d_v)
    scores = q @ keys.transpose(-1, -2) / math.sqrt(d)  # (B, H, T, P + S)
    if causal:
        seen = torch.ones(T, P + S, dtype=torch.bool, device=q.device).tril(P + S - T)  # prefix columns all True
        scores = scores.masked_fill(~seen, float("-inf"))
    return torch.softmax(scores, dim=-1) @ values


class PrefixTuning(nn.Module):
    """A frozen :class:`~minilib.llama.TinyLlama` with ``n_prefix`` learned keys and values in every layer.

    Each attention layer attends over its prefix and then the sequence, equation
    (peft-prefix-attention), with the causal mask on the sequence part. The prefix keys are
    used as given (they are free parameters, so a rotation would add nothing); the sequence
    occupies RoPE positions ``n_prefix, n_prefix + 1, ...``, as if the prefix were the cached
    keys and values of ``n_prefix`` earlier tokens (a real prompt is one particular prefix).

    Implements (peft-prefix-attention) inside TinyLlama and (peft-prefix-mlp).

    With ``hidden`` set, the prefixes are reparametrised, equation (peft-prefix-mlp): a small
    table ``E`` of shape ``(n_prefix, d_model)`` goes through an MLP
    ``Linear(d_model, hidden) -> tanh -> Linear(hidden, n_layers * 2 * n_kv_heads * d_head)``.
    :meth:`materialize` computes the prefixes once and drops the MLP. With ``hidden=None``
    the prefixes are trained directly, starting from Gaussians of standard deviation 0.5.

    Args:
        model: the pre-trained TinyLlama (frozen in place).
        n_prefix: ``P``, prefix length per layer.
        hidden: width of the reparametrisation MLP, or ``None``.

    Attributes:
        prefix: ``(n_layers, 2, n_kv_heads, P, d_head)`` parameter when not reparametrised.
    """

    def __init__(self, model: nn.Module, n_prefix: int, hidden: int | None = 64) -> None:
        super().__init__()
        from minilib.llama import TinyLlama

        if not isinstance(model, TinyLlama):
            raise TypeError(f"model must be a TinyLlama, got {type(model).__name__}")
        _pos_int(n_prefix, "n_prefix")
        if hidden is not None:
            _pos_int(hidden, "hidden")
        c = model.config
        if n_prefix >= c.max_seq_len:
            raise ValueError(f"n_prefix must be < max_seq_len = {c.max_seq_len}, got {n_prefix}")
        self.model = model
        for p in model.parameters():
            p.requires_grad_(False)
        self.n_prefix = n_prefix
        self._shape = (c.n_layers, 2, c.n_kv_heads, n_prefix, c.d_head)
        w = model.norm
        kw = dict(device=w.device, dtype=w.dtype)
        if hidden is None:
            self.prefix = nn.Parameter(0.5 * torch.randn(self._shape, **kw))
            self.embedding = None
            self.mlp = None
        else:
            self.prefix = None
            self.embedding = nn.Parameter(torch.randn(n_prefix, c.d_model, **kw))
            n_out = c.n_layers * 2 * c.n_kv_heads * c.d_head
            self.mlp = nn.Sequential(nn.Linear(c.d_model, hidden, **kw), nn.Tanh(), nn.Linear(hidden, n_out, **kw))

    def prefixes(self) -> torch.Tensor:
        """The keys and values, ``(n_layers, 2, n_kv_heads, P, d_head)`` (index 0 keys, 1 values)."""
        if self.prefix is not None:
            return self.prefix
        L, two, H_kv, P, d_h = self._shape
        out = self.mlp(self.embedding)  # (P, L * 2 * H_kv * d_h)
        return out.view(P, L, two, H_kv, d_h).permute(1, 2, 3, 0, 4)  # (L, 2, H_kv, P, d_h)

    @torch.no_grad()
    def materialize(self) -> None:
        """Replace the MLP reparametrisation by the prefixes it produces (a fixed parameter)."""
        if self.prefix is None:
            self.prefix = nn.Parameter(self.prefixes().detach().clone())
            self.embedding = None
            self.mlp = None

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        """Logits ``(B, T, vocab)`` for ``(B, T)`` tokens, with the prefix in every layer."""
        from minilib.llama import repeat_kv, rms_norm

        m, c = self.model, self.model.config
        if not isinstance(tokens, torch.Tensor) or tokens.is_floating_point() or tokens.dtype == torch.bool:
            raise TypeError(f"tokens must be an integer tensor, got {getattr(tokens, 'dtype', type(tokens).__name__)}")
        if tokens.dim() != 2:
            raise ValueError(f"tokens must have shape (B, T), got {tuple(tokens.shape)}")
        B, T = tokens.shape
        P = self.n_prefix
        if P + T > c.max_seq_len:
            raise ValueError(f"n_prefix + T = {P + T} exceeds max_seq_len {c.max_seq_len}")
        from minilib.llama import _rotate_pairs

        rope = (m.rope_cos[P:P + T], m.rope_sin[P:P + T])  # the sequence sits after the prefix
        pkv = self.prefixes()
        n_rep = c.n_heads // c.n_kv_heads
        x = m.tok_emb(tokens)  # (B, T, d)
        for i, blk in enumerate(m.blocks):
            a = blk.attn
            h = rms_norm(x, blk.attn_norm, c.norm_eps)
            q = _rotate_pairs(a.wq(h).view(B, T, c.n_heads, c.d_head).transpose(1, 2), *rope)
            k = _rotate_pairs(a.wk(h).view(B, T, c.n_kv_heads, c.d_head).transpose(1, 2), *rope)
            v = a.wv(h).view(B, T, c.n_kv_heads, c.d_head).transpose(1, 2)
            pk = repeat_kv(pkv[i, 0].unsqueeze(0), n_rep)[0]  # (H, P, d_h)
            pv = repeat_kv(pkv[i, 1].unsqueeze(0), n_rep)[0]
            o = prefix_attention(q, repeat_kv(k, n_rep), repeat_kv(v, n_rep), pk, pv, causal=True)
            x = x + a.wo(o.transpose(1, 2).reshape(B, T, c.n_heads * c.d_head))
            h = rms_norm(x, blk.mlp_norm, c.norm_eps)
            x = x + blk.w_down(F.silu(blk.w_gate(h)) * blk.w_up(h))
        return m.head(rms_norm(x, m.norm, c.norm_eps))


# ----------------------------------------------------------------------------------------
# Bookkeeping
# ----------------------------------------------------------------------------------------


def count_parameters(model: nn.Module, trainable_only: bool = True) -> int:
    """The number of parameters of ``model`` (only those with ``requires_grad`` by default).

    Shared parameters are counted once (``model.parameters()`` deduplicates them).

    >>> m = nn.Linear(3, 2)
    >>> count_parameters(m), m.weight.requires_grad_(False) is not None, count_parameters(m)
    (8, True, 2)
    >>> count_parameters(m, trainable_only=False)
    8
    """
    _check_module(model)
    if not isinstance(trainable_only, bool):
        raise TypeError(f"trainable_only must be a bool, got {type(trainable_only).__name__}")
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)


def finetune_memory_bytes(n_total: int, n_trainable: int, *, frozen_bytes: int = 2,
                          trainable_bytes: int = 16) -> int:
    """Memory of weights, gradients and Adam state for fine-tuning: ``frozen * (N - N_t) + trainable * N_t``.

    With mixed-precision Adam a trainable parameter costs 16 bytes (16-bit weight and gradient,
    32-bit master weight, first and second moments) and a frozen one only its 16-bit weight,
    2 bytes. Activations are not counted. Implements (peft-memory).

    Args:
        n_total: all parameters of the fine-tuned model (base plus added), ``>= n_trainable``.
        n_trainable: the parameters the optimizer updates, ``>= 0``.
        frozen_bytes, trainable_bytes: bytes per frozen and per trainable parameter.

    >>> finetune_memory_bytes(1000, 1000), finetune_memory_bytes(1000, 10)
    (16000, 2140)
    """
    for name, v in (("n_total", n_total), ("n_trainable", n_trainable)):
        if not isinstance(v, int) or isinstance(v, bool) or v < 0:
            raise ValueError(f"{name} must be a non-negative int, got {v!r}")
    if n_trainable > n_total:
        raise ValueError(f"n_trainable ({n_trainable}) cannot exceed n_total ({n_total})")
    _pos_int(frozen_bytes, "frozen_bytes")
    _pos_int(trainable_bytes, "trainable_bytes")
    return frozen_bytes * (n_total - n_trainable) + trainable_bytes * n_trainable
