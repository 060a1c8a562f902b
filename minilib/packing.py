"""Sequence packing: many variable-length sequences as one stream, with no padding.

A batch of sequences :math:`x^{(1)}, \\dots, x^{(B)}` of lengths :math:`L_1, \\dots, L_B` is
stored as one concatenated stream of :math:`N = \\sum_b L_b` tokens plus the cumulative
lengths ``cu_seqlens`` :math:`= (0, L_1, L_1 + L_2, \\dots, N)`. Sequence :math:`b` occupies
positions ``cu_seqlens[b] .. cu_seqlens[b+1] - 1``. Attention over the stream uses a
block-diagonal (and, for language models, causal) mask, and position ids restart at 0 for
every sequence, so a packed batch computes exactly what the padded batch computes, minus the
work on padding.

>>> tokens, cu, pos = pack([torch.tensor([5, 6, 7]), torch.tensor([8, 9])])
>>> tokens.tolist(), cu.tolist(), pos.tolist()
([5, 6, 7, 8, 9], [0, 3, 5], [0, 1, 2, 0, 1])
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F

__all__ = [
    "block_diagonal_mask", "pack", "pad", "pad_input", "segment_ids", "unpack", "unpad_input", "varlen_attention",
]


def _check_seqs(seqs: Sequence[torch.Tensor]) -> None:
    if isinstance(seqs, torch.Tensor) or not isinstance(seqs, Sequence) or len(seqs) == 0:
        raise TypeError("seqs must be a non-empty list of tensors of shape (L, ...)")
    for i, s in enumerate(seqs):
        if not isinstance(s, torch.Tensor):
            raise TypeError(f"seqs[{i}] must be a tensor, got {type(s).__name__}")
        if s.dim() == 0 or s.shape[0] == 0:
            raise ValueError(f"seqs[{i}] must be a non-empty tensor of shape (L, ...), got shape {tuple(s.shape)}")
        if s.shape[1:] != seqs[0].shape[1:]:
            raise ValueError(f"seqs[{i}] has trailing shape {tuple(s.shape[1:])}, but seqs[0] has {tuple(seqs[0].shape[1:])}")
        if s.dtype != seqs[0].dtype or s.device != seqs[0].device:
            raise ValueError(f"seqs[{i}] has dtype/device {s.dtype}/{s.device}, but seqs[0] has "
                             f"{seqs[0].dtype}/{seqs[0].device}")


def pack(seqs: Sequence[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Concatenate sequences into one stream and return its bookkeeping.

    Implements (training-memory-cu-seqlens) and (training-memory-position-ids).

    Args:
        seqs: ``B`` non-empty tensors of shapes ``(L_b, ...)``: usually 1-D int64 tokens,
            but trailing feature dimensions are allowed if they agree. Same dtype and device.

    Returns:
        ``(tokens, cu_seqlens, position_ids)``: ``tokens`` of shape ``(N, ...)`` with
        ``N = sum L_b``; ``cu_seqlens`` int64 of shape ``(B + 1,)``, starting at 0 and ending
        at ``N``; ``position_ids`` int64 of shape ``(N,)``, restarting at 0 in each sequence.

    Raises:
        TypeError: if ``seqs`` is not a list of tensors.
        ValueError: on an empty sequence, or mismatched trailing shapes, dtypes or devices.
    """
    _check_seqs(seqs)
    device = seqs[0].device
    lengths = torch.tensor([s.shape[0] for s in seqs], dtype=torch.int64, device=device)
    cu_seqlens = F.pad(lengths.cumsum(0), (1, 0))  # (B + 1,)
    tokens = torch.cat(list(seqs))  # (N,)
    # position of token n inside its sequence: n minus the start of that sequence
    starts = torch.repeat_interleave(cu_seqlens[:-1], lengths)  # (N,)
    position_ids = torch.arange(tokens.shape[0], device=device) - starts
    return tokens, cu_seqlens, position_ids


def _check_cu(cu_seqlens: torch.Tensor, n: int | None) -> None:
    if not isinstance(cu_seqlens, torch.Tensor) or cu_seqlens.is_floating_point() or cu_seqlens.dtype == torch.bool:
        raise TypeError("cu_seqlens must be an integer tensor")
    if cu_seqlens.dim() != 1 or cu_seqlens.numel() < 2:
        raise ValueError(f"cu_seqlens must have shape (B + 1,) with B >= 1, got {tuple(cu_seqlens.shape)}")
    if int(cu_seqlens[0]) != 0:
        raise ValueError(f"cu_seqlens must start at 0, got {int(cu_seqlens[0])}")
    if not bool((cu_seqlens[1:] > cu_seqlens[:-1]).all()):
        raise ValueError("cu_seqlens must be strictly increasing (no empty sequences)")
    if n is not None and int(cu_seqlens[-1]) != n:
        raise ValueError(f"cu_seqlens must end at total_tokens={n}, got {int(cu_seqlens[-1])}")


def unpack(packed: torch.Tensor, cu_seqlens: torch.Tensor) -> list[torch.Tensor]:
    """Split a packed stream ``(N, ...)`` back into its ``B`` sequences (views).

    >>> t, cu, _ = pack([torch.tensor([1, 2]), torch.tensor([3])])
    >>> [s.tolist() for s in unpack(t, cu)]
    [[1, 2], [3]]
    """
    if not isinstance(packed, torch.Tensor) or packed.dim() == 0:
        raise TypeError("packed must be a tensor of shape (N, ...)")
    _check_cu(cu_seqlens, packed.shape[0])
    return list(torch.split(packed, torch.diff(cu_seqlens).tolist(), dim=0))


def segment_ids(cu_seqlens: torch.Tensor) -> torch.Tensor:
    """Which sequence each packed token belongs to: ``(N,)`` int64 with values ``0 .. B-1``.

    >>> segment_ids(torch.tensor([0, 2, 5])).tolist()
    [0, 0, 1, 1, 1]
    """
    _check_cu(cu_seqlens, None)
    lengths = torch.diff(cu_seqlens)
    return torch.repeat_interleave(torch.arange(lengths.numel(), device=cu_seqlens.device), lengths)


def block_diagonal_mask(cu_seqlens: torch.Tensor, *, causal: bool = True) -> torch.Tensor:
    """The ``(N, N)`` boolean mask of allowed query-key pairs in a packed stream.

    Implements (training-memory-block-mask): ``mask[i, j]`` is True when tokens ``i`` and
    ``j`` are in the same sequence (and ``j <= i`` if ``causal``). It costs :math:`N^2`
    memory, so it is a reference, not what :func:`varlen_attention` uses.

    >>> block_diagonal_mask(torch.tensor([0, 2, 3])).int().tolist()
    [[1, 0, 0], [1, 1, 0], [0, 0, 1]]
    """
    seg = segment_ids(cu_seqlens)
    mask = seg[:, None] == seg[None, :]
    if causal:
        n = seg.numel()
        mask = mask & torch.ones(n, n, dtype=torch.bool, device=seg.device).tril()
    return mask


def pad(
    seqs: Sequence[torch.Tensor], *, pad_value: float = 0
) -> tuple[torch.Tensor, torch.Tensor]:
    """Stack sequences into a right-padded ``(B, L_max, ...)`` batch, the layout packing replaces.

    Returns:
        ``(padded, lengths)``: ``padded`` of shape ``(B, L_max, ...)`` filled with ``pad_value``
        beyond each sequence, and ``lengths`` int64 of shape ``(B,)``.

    >>> x, n = pad([torch.tensor([1, 2]), torch.tensor([3])], pad_value=-1)
    >>> x.tolist(), n.tolist()
    ([[1, 2], [3, -1]], [2, 1])
    """
    _check_seqs(seqs)
    lengths = torch.tensor([s.shape[0] for s in seqs], dtype=torch.int64, device=seqs[0].device)
    padded = torch.nn.utils.rnn.pad_sequence(list(seqs), batch_first=True, padding_value=pad_value)
    return padded, lengths


def varlen_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    cu_seqlens: torch.Tensor,
    *,
    causal: bool = True,
) -> torch.Tensor:
    """Scaled dot-product attention over a packed stream; each sequence sees only itself.

    Implements (training-memory-varlen): the output equals running softmax attention
    :math:`\\mathrm{softmax}(QK^\\top/\\sqrt{d})V` on each sequence separately, which is the same
    as one attention over the stream with the mask of (training-memory-block-mask). The work
    is :math:`\\sum_b L_b^2` rather than :math:`N^2` or :math:`B L_{\\max}^2`: like a varlen
    FlashAttention kernel, it visits only the diagonal blocks (here, one
    ``scaled_dot_product_attention`` call per sequence).

    Args:
        q: ``(..., N, d)`` queries, floating point.
        k: ``(..., N, d)`` keys.
        v: ``(..., N, d_v)`` values.
        cu_seqlens: ``(B + 1,)`` integer cumulative lengths from :func:`pack`, ending at ``N``.
        causal: if True, token ``i`` attends only to tokens ``j <= i`` of its own sequence.

    Returns:
        ``(..., N, d_v)`` tensor with the dtype and device of ``q``.

    Raises:
        TypeError: if ``q``, ``k``, ``v`` are not floating point or ``cu_seqlens`` is not integer.
        ValueError: on mismatched shapes or malformed ``cu_seqlens``.

    >>> q = torch.randn(2, 5, 4)
    >>> out = varlen_attention(q, q, q, torch.tensor([0, 3, 5]))
    >>> out.shape
    torch.Size([2, 5, 4])
    """
    for name, t in (("q", q), ("k", k), ("v", v)):
        if not isinstance(t, torch.Tensor) or not t.is_floating_point():
            raise TypeError(f"{name} must be a floating-point tensor")
        if t.dim() < 2:
            raise ValueError(f"{name} must have shape (..., N, d), got {tuple(t.shape)}")
    if q.shape != k.shape:
        raise ValueError(f"q and k must have the same shape, got {tuple(q.shape)} and {tuple(k.shape)}")
    if v.shape[:-1] != q.shape[:-1]:
        raise ValueError(f"v must have shape (..., N, d_v) matching q's {tuple(q.shape[:-1])}, got {tuple(v.shape)}")
    n = q.shape[-2]
    _check_cu(cu_seqlens, n)
    bounds = cu_seqlens.tolist()
    out = []
    for start, end in zip(bounds[:-1], bounds[1:]):
        # one diagonal block: sequence b attends to itself only
        out.append(F.scaled_dot_product_attention(
            q[..., start:end, :], k[..., start:end, :], v[..., start:end, :], is_causal=causal
        ))
    return torch.cat(out, dim=-2)  # (..., N, d_v)


def unpad_input(
    x: torch.Tensor, attention_mask: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, int]:
    """Remove the padding of a ``(B, L, ...)`` batch: gather its valid tokens into one stream.

    Implements (training-memory-unpad): with the valid positions of the flattened
    ``(B * L)`` grid listed in row-major order as ``indices``, the stream is
    ``tokens[n] = x.reshape(B * L, ...)[indices[n]]``. For a right-padded batch the stream,
    its ``cu_seqlens`` and its order are exactly those of :func:`pack` on the unpadded
    sequences, so it feeds :func:`varlen_attention` directly. Any mask is accepted (left
    padding, holes); the valid tokens of each row keep their order.

    Args:
        x: ``(B, L, ...)`` tensor (hidden states, or int64 token ids).
        attention_mask: ``(B, L)`` bool or integer 0/1 tensor, nonzero at real tokens; every
            row must hold at least one real token.

    Returns:
        ``(tokens, indices, cu_seqlens, max_len)``: ``tokens`` of shape ``(N, ...)`` with
        ``N`` the number of real tokens (dtype and device of ``x``, differentiable);
        ``indices`` int64 ``(N,)``, increasing, into the flattened ``B * L`` grid;
        ``cu_seqlens`` int64 ``(B + 1,)``, the cumulative counts of real tokens per row;
        ``max_len`` the largest row count, a Python int.

    Raises:
        TypeError: if ``x`` is not a tensor with at least 2 dims, ``attention_mask`` is not a
            tensor, or the mask is floating point.
        ValueError: on mismatched shapes, an empty batch (B = 0), mask values other than 0/1,
            or a row with no real token.

    >>> x = torch.tensor([[1, 2, 0], [3, 0, 0]])
    >>> t, idx, cu, m = unpad_input(x, x != 0)
    >>> t.tolist(), idx.tolist(), cu.tolist(), m
    ([1, 2, 3], [0, 1, 3], [0, 2, 3], 2)
    """
    if not isinstance(x, torch.Tensor) or x.dim() < 2:
        raise TypeError("x must be a tensor of shape (B, L, ...)")
    if not isinstance(attention_mask, torch.Tensor) or attention_mask.is_floating_point() or attention_mask.is_complex():
        raise TypeError("attention_mask must be a bool or integer tensor of shape (B, L)")
    if attention_mask.shape != x.shape[:2]:
        raise ValueError(f"attention_mask must have shape (B, L) = {tuple(x.shape[:2])}, got {tuple(attention_mask.shape)}")
    if attention_mask.dtype != torch.bool:
        if not bool(((attention_mask == 0) | (attention_mask == 1)).all()):
            raise ValueError("attention_mask must hold only 0 and 1")
        attention_mask = attention_mask != 0
    attention_mask = attention_mask.to(x.device)
    if x.shape[0] == 0:
        raise ValueError("x must hold at least one row (B >= 1)")
    counts = attention_mask.sum(dim=1)  # (B,) real tokens per row
    if not bool((counts > 0).all()):
        raise ValueError("every row of attention_mask needs at least one real token (empty sequences are not allowed)")
    indices = torch.nonzero(attention_mask.flatten(), as_tuple=False).flatten()  # (N,) row-major
    cu_seqlens = F.pad(counts.cumsum(0), (1, 0))  # (B + 1,)
    tokens = x.reshape(-1, *x.shape[2:]).index_select(0, indices)  # (N, ...)
    return tokens, indices, cu_seqlens, int(counts.max())


def pad_input(tokens: torch.Tensor, indices: torch.Tensor, batch: int, seqlen: int) -> torch.Tensor:
    """Scatter an unpadded stream back into a zero-padded ``(batch, seqlen, ...)`` batch.

    Implements (training-memory-pad): ``out.reshape(batch * seqlen, ...)[indices[n]] =
    tokens[n]`` and zero elsewhere, the transpose of the gather of :func:`unpad_input`. So
    ``unpad_input(pad_input(t, idx, B, L), mask)[0] == t`` and ``pad_input(*unpad_input(x,
    mask)[:2], B, L) == x`` at the real tokens (zero at padding). Differentiable in ``tokens``.

    Args:
        tokens: ``(N, ...)`` tensor, e.g. the output of a layer run on ``unpad_input``'s stream.
        indices: int64 ``(N,)`` distinct positions in ``[0, batch * seqlen)``, as returned by
            :func:`unpad_input`.
        batch: the number of rows ``B``.
        seqlen: the padded length ``L``.

    Returns:
        ``(batch, seqlen, ...)`` tensor with the dtype and device of ``tokens``.

    Raises:
        TypeError: if ``tokens`` or ``indices`` is not a tensor, or ``indices`` is not integer.
        ValueError: on a length mismatch, out-of-range or repeated indices, or ``batch``,
            ``seqlen`` < 1.

    >>> pad_input(torch.tensor([1, 2, 3]), torch.tensor([0, 1, 3]), 2, 3).tolist()
    [[1, 2, 0], [3, 0, 0]]
    """
    if not isinstance(tokens, torch.Tensor) or tokens.dim() == 0:
        raise TypeError("tokens must be a tensor of shape (N, ...)")
    if not isinstance(indices, torch.Tensor) or indices.is_floating_point() or indices.dtype == torch.bool:
        raise TypeError("indices must be an integer tensor of shape (N,)")
    for name, v in (("batch", batch), ("seqlen", seqlen)):
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise ValueError(f"{name} must be a positive int, got {v!r}")
    if indices.dim() != 1 or indices.shape[0] != tokens.shape[0]:
        raise ValueError(f"indices must have shape (N,) = ({tokens.shape[0]},), got {tuple(indices.shape)}")
    if indices.numel() and (int(indices.min()) < 0 or int(indices.max()) >= batch * seqlen):
        raise ValueError(f"indices must lie in [0, batch * seqlen) = [0, {batch * seqlen})")
    if torch.unique(indices).numel() != indices.numel():
        raise ValueError("indices must be distinct")
    indices = indices.to(device=tokens.device, dtype=torch.int64)
    out = tokens.new_zeros((batch * seqlen, *tokens.shape[1:]))
    out = out.index_copy(0, indices, tokens)  # out-of-place: gradients flow to tokens
    return out.reshape(batch, seqlen, *tokens.shape[1:])
