"""Attention, computed naively, online (tile by tile) and linearly.

Conventions (see the notation page): queries ``q`` have shape ``(..., N_q, d)``, keys ``k``
``(..., N_k, d)`` and values ``v`` ``(..., N_k, d_v)``; any leading batch and head dimensions
must agree exactly (no broadcasting). Scores are ``S = scale * q @ k^T`` with the scale
defaulting to ``1 / sqrt(d)``. Causal masking is aligned bottom-right, as in FlashAttention-2
and KV-cache decoding: query ``i`` may attend to key ``j`` when ``j <= i + (N_k - N_q)``. A
query row that may attend to no key at all (possible only when ``N_q > N_k``) gets output 0
and log-sum-exp ``-inf``.

Everything here follows the device and dtype of its inputs and runs on ``meta`` tensors.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from typing import Any

import torch
import torch.nn.functional as F

from minilib._validate import float_tensor as _check_float

__all__ = [
    "attention_tile_states",
    "causal_mask",
    "delta_rule_attention",
    "flash_attention",
    "flash_attention_fa2",
    "gated_linear_attention",
    "linear_attention",
    "linear_attention_recurrent",
    "merge_softmax_states",
    "online_softmax",
    "plot_attention",
    "positive_random_features",
    "softmax_attention",
]

#: Default tile sizes of :func:`flash_attention`, chosen by measurement on a 2-core CPU
#: (AMD EPYC, 1 MiB of L2 cache per core) at N in {1024, 4096, 8192}, d = 64, 4 heads, against
#: block_q in 32..1024 and block_k in 512..8192 (``bench/bench_attention.py``). In eager PyTorch
#: every step of a tile is a separate pass over it (matmul, max, fused softmax, max, matmul), and
#: a pass is cheap only while the tile sits in the core's cache: 256 x 1024 scores are 1 MiB of
#: float32, the L2 size. Larger tiles spill to the shared L3 and slow down when other work uses
#: the machine; smaller ones pay Python and kernel-launch costs on more tiles.
DEFAULT_BLOCK_Q = 256
DEFAULT_BLOCK_K = 1024


# ---------------------------------------------------------------------------------------------
# validation
# ---------------------------------------------------------------------------------------------
def _check_qkv(q: Any, k: Any, v: Any) -> None:
    for name, x in (("q", q), ("k", k), ("v", v)):
        _check_float(name, x)
        if x.dim() < 2:
            raise ValueError(f"{name} must have shape (..., N, d) with at least 2 dims, got {tuple(x.shape)}")
    if not (q.dtype == k.dtype == v.dtype):
        raise TypeError(f"q, k and v must share a dtype, got {q.dtype}, {k.dtype}, {v.dtype}")
    if not (q.device == k.device == v.device):
        raise ValueError(f"q, k and v must be on one device, got {q.device}, {k.device}, {v.device}")
    if q.shape[-1] != k.shape[-1]:
        raise ValueError(f"q and k must have the same head dim d, got q {tuple(q.shape)} and k {tuple(k.shape)}")
    if k.shape[-2] != v.shape[-2]:
        raise ValueError(f"k and v must have the same length N_k, got k {tuple(k.shape)} and v {tuple(v.shape)}")
    if not (q.shape[:-2] == k.shape[:-2] == v.shape[:-2]):
        raise ValueError(
            "q, k and v must have the same leading (batch, head) dims, got "
            f"{tuple(q.shape[:-2])}, {tuple(k.shape[:-2])}, {tuple(v.shape[:-2])}"
        )
    if k.shape[-2] < 1 or q.shape[-1] < 1:
        raise ValueError(f"need N_k >= 1 and d >= 1, got k of shape {tuple(k.shape)}")


def _check_scale(scale: Any, d: int) -> float:
    if scale is None:
        return 1.0 / math.sqrt(d)
    if isinstance(scale, bool) or not isinstance(scale, (int, float)) or not math.isfinite(scale):
        raise TypeError(f"scale must be a finite float or None, got {scale!r}")
    return float(scale)


def _check_block(name: str, b: Any) -> int:
    if isinstance(b, bool) or not isinstance(b, int):
        raise TypeError(f"{name} must be a positive int, got {b!r}")
    if b <= 0:
        raise ValueError(f"{name} must be a positive int, got {b}")
    return b


def causal_mask(n_q: int, n_k: int, *, device: torch.device | str | None = None) -> torch.Tensor:
    """The bottom-right aligned causal mask: ``True`` where query ``i`` may see key ``j``.

    Query ``i`` sees key ``j`` when ``j <= i + (n_k - n_q)``, so the last query sees every key.
    For ``n_q == n_k`` this is the usual lower-triangular mask.

    Args:
        n_q: number of queries.
        n_k: number of keys.
        device: where to build the mask.

    Returns:
        A bool tensor of shape ``(n_q, n_k)``.

    Implements (online-softmax-causal).

    >>> causal_mask(2, 3).int().tolist()
    [[1, 1, 0], [1, 1, 1]]
    """
    for name, n in (("n_q", n_q), ("n_k", n_k)):
        if isinstance(n, bool) or not isinstance(n, int) or n < 0:
            raise ValueError(f"{name} must be a non-negative int, got {n!r}")
    rows = torch.arange(n_q, device=device).unsqueeze(-1)
    cols = torch.arange(n_k, device=device)
    return cols <= rows + (n_k - n_q)


# ---------------------------------------------------------------------------------------------
# the reference and the online softmax
# ---------------------------------------------------------------------------------------------
def softmax_attention(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, *, causal: bool = False, scale: float | None = None
) -> torch.Tensor:
    """Naive attention ``softmax(scale * q k^T) v``: builds the full ``N_q x N_k`` matrix.

    The reference every faster version is checked against. Its extra memory grows as
    ``N_q * N_k`` per head.

    Args:
        q: queries, shape ``(..., N_q, d)``.
        k: keys, shape ``(..., N_k, d)``.
        v: values, shape ``(..., N_k, d_v)``.
        causal: apply the bottom-right aligned causal mask (see :func:`causal_mask`).
        scale: the score scale; default ``1 / sqrt(d)``.

    Returns:
        The output, shape ``(..., N_q, d_v)``.

    Raises:
        TypeError: non-float or mixed dtypes.
        ValueError: mismatched head dims, lengths or leading dims.

    Implements (online-softmax-attention).

    >>> q = torch.randn(3, 4); k = torch.randn(5, 4); v = torch.randn(5, 2)
    >>> softmax_attention(q, k, v).shape
    torch.Size([3, 2])
    """
    _check_qkv(q, k, v)
    tau = _check_scale(scale, q.shape[-1])
    s = (q @ k.transpose(-2, -1)) * tau  # (..., N_q, N_k)
    if not causal:
        return torch.softmax(s, dim=-1) @ v
    visible = causal_mask(q.shape[-2], k.shape[-2], device=q.device)
    p = torch.softmax(s.masked_fill(~visible, float("-inf")), dim=-1)
    # rows that see no key are all -inf and softmax makes them NaN; define them as 0
    p = torch.where(visible.any(-1, keepdim=True), p, torch.zeros((), dtype=p.dtype, device=p.device))
    return p @ v


def merge_softmax_states(
    m_a: torch.Tensor, l_a: torch.Tensor, m_b: torch.Tensor, l_b: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Merge two partial softmax states ``(max, normalizer)`` into one.

    A state ``(m, l)`` summarises a set of scores ``s`` by ``m = max s`` and
    ``l = sum exp(s - m)``. Merging the states of two disjoint sets gives the state of their
    union. The operator is associative and commutative, which is why tiles can be reduced in
    any order and in parallel. An empty set has state ``(-inf, 0)``, the identity.

    Args:
        m_a, l_a: the first state (tensors of one shape).
        m_b, l_b: the second state (same shape).

    Returns:
        ``(m, l)`` of the union, same shape.

    Implements (online-softmax-merge).

    >>> x = torch.tensor([1.0, 3.0, -2.0, 0.5])
    >>> m, l = merge_softmax_states(x[:2].max(), torch.exp(x[:2] - x[:2].max()).sum(),
    ...                             x[2:].max(), torch.exp(x[2:] - x[2:].max()).sum())
    >>> bool(torch.isclose(m + l.log(), torch.logsumexp(x, 0)))
    True
    """
    m = torch.maximum(m_a, m_b)
    # where both states are empty, m is -inf and exp(-inf - -inf) would be NaN: shift by 0 there
    m_safe = torch.where(torch.isneginf(m), torch.zeros_like(m), m)
    return m, l_a * torch.exp(m_a - m_safe) + l_b * torch.exp(m_b - m_safe)


def online_softmax(x: torch.Tensor, *, block_size: int) -> torch.Tensor:
    """Softmax over the last dim, reading ``x`` one block of ``block_size`` entries at a time.

    The first pass keeps only a running maximum ``m`` and a running normalizer ``l`` per row
    and rescales ``l`` whenever the maximum grows; the second pass writes
    ``exp(x - m) / l``. The last block may be shorter.

    Args:
        x: scores, shape ``(..., N)``, floating point, ``N >= 1``.
        block_size: how many entries each step reads (a positive int).

    Returns:
        ``softmax(x, dim=-1)``, same shape as ``x``.

    Raises:
        TypeError: ``x`` not a float tensor, or ``block_size`` not an int.
        ValueError: ``block_size <= 0`` or an empty last dim.

    Implements (online-softmax-recurrence) and (online-softmax-safe).

    >>> x = torch.tensor([[1.0, 2.0, 3.0, 4.0, 5.0]])
    >>> bool(torch.allclose(online_softmax(x, block_size=2), torch.softmax(x, -1)))
    True
    """
    _check_float("x", x)
    block_size = _check_block("block_size", block_size)
    if x.dim() == 0 or x.shape[-1] == 0:
        raise ValueError(f"x must have a non-empty last dim, got shape {tuple(x.shape)}")
    n = x.shape[-1]
    m = torch.full((*x.shape[:-1], 1), float("-inf"), dtype=x.dtype, device=x.device)
    l = torch.zeros_like(m)
    for j0 in range(0, n, block_size):
        xj = x[..., j0 : j0 + block_size]
        m_new = torch.maximum(m, xj.amax(-1, keepdim=True))
        # (online-softmax-recurrence): rescale the old sum to the new max, add the new block
        l = l * torch.exp(m - m_new) + torch.exp(xj - m_new).sum(-1, keepdim=True)
        m = m_new
    return torch.exp(x - m) / l


# ---------------------------------------------------------------------------------------------
# FlashAttention, in the FlashAttention-2 form, with a hand-written backward
# ---------------------------------------------------------------------------------------------
#: Score entries one job may hold: 2**18 float32 numbers are 1 MiB, about one core's L2 cache.
#: Heads are grouped into one job only while their tiles together stay under this.
_JOB_TILE_ENTRIES = 1 << 18
#: Below this many score entries (all heads, N_q x N_k) a call runs on the calling thread: the
#: thread hand-off would cost more than it saves.
_PARALLEL_MIN_ENTRIES = 1 << 22
_THREADS_LOCK = threading.Lock()


@contextmanager
def _one_torch_thread() -> Iterator[None]:
    """Run the body with torch's intra-op thread count at 1, then restore it.

    The workers of :func:`_flash_forward` already use every core, one query block each; torch
    splitting each of their small products again would only add synchronisation. The lock keeps
    two concurrent calls from restoring each other's setting in the wrong order.
    """
    with _THREADS_LOCK:
        saved = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            yield
        finally:
            torch.set_num_threads(saved)


def _n_workers(x: torch.Tensor, entries: int, n_jobs: int) -> int:
    """How many threads run the query blocks: torch's thread count on a CPU, else one."""
    if x.device.type != "cpu" or entries < _PARALLEL_MIN_ENTRIES:
        return 1  # a GPU queues its own kernels; meta tensors have no work
    return max(1, min(torch.get_num_threads(), n_jobs))


def _flash_forward(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, causal: bool, tau: float, block_q: int, block_k: int,
    need_lse: bool = True,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Tiled forward on 3-D ``(B, N, d)`` tensors; returns ``out`` and ``lse`` ``(B, N_q)``.

    The outer loop of (online-softmax-alg-fa2) has no dependence between query blocks, so the
    blocks are jobs: one job is a query block of one or more heads (as many as keep its score
    tile within ``_JOB_TILE_ENTRIES``). On a CPU with several torch threads the jobs are dealt
    round-robin to that many worker threads, each running its tile products single-threaded
    on a tile that stays in its cache: the way FlashAttention-2 spreads query blocks over
    thread blocks on a GPU. Each job writes its own rows of ``out`` and ``lse``.
    """
    b, n_q, _ = q.shape
    n_k, d_v = k.shape[1], v.shape[2]
    k_t = k.transpose(1, 2)  # (B, d, N_k)
    out = q.new_empty((b, n_q, d_v))
    lse = q.new_empty((b, n_q, 1)) if need_lse else None
    tile = min(block_q, n_q) * min(block_k, n_k)  # score entries of one head's tile
    group = max(1, min(b, _JOB_TILE_ENTRIES // max(tile, 1)))  # heads per job
    jobs = [(h0, min(h0 + group, b), i0, min(i0 + block_q, n_q))
            for h0 in range(0, b, group) for i0 in range(0, n_q, block_q)]

    @torch.no_grad()  # grad mode is per thread; the backward pass is our own (_FlashAttention)
    def run(my_jobs: list[tuple[int, int, int, int]]) -> None:
        # one scratch buffer per worker for every score tile: no allocation per tile
        scratch = q.new_empty(group * tile)
        for h0, h1, i0, i1 in my_jobs:
            o_view = out[h0:h1, i0:i1]
            q_i = q[h0:h1, i0:i1] * tau  # fold the scale into the block's queries (in cache)
            o_i, lse_i = _flash_query_block(q_i, k_t[h0:h1], v[h0:h1], i0, n_q, causal,
                                            block_k, need_lse, scratch, o_view)
            if o_i is not o_view:
                o_view.copy_(o_i)
            if lse is not None and lse_i is not None:
                lse[h0:h1, i0:i1] = lse_i

    workers = _n_workers(q, b * n_q * n_k, len(jobs))
    if workers == 1:
        run(jobs)
    else:
        with _one_torch_thread(), ThreadPoolExecutor(workers) as pool:
            # round-robin: neighbouring blocks (same keys, similar causal work) run side by side
            list(pool.map(run, [jobs[w::workers] for w in range(workers)]))
    if lse is None:
        return out, None
    return out, lse.squeeze(-1)  # (online-softmax-lse): (B, N_q)


def _flash_query_block(
    q_i: torch.Tensor, k_t: torch.Tensor, v: torch.Tensor, i0: int, n_q: int, causal: bool, block_k: int,
    need_lse: bool, scratch: torch.Tensor, o_view: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """One query block's ``(o_i, lse_i)``: (online-softmax-alg-fa2) over its key tiles.

    ``q_i`` is ``(G, b_q, d)`` (already scaled) for rows ``i0 : i0 + b_q``; ``k_t`` is
    ``(G, d, N_k)``; ``o_view`` is where the block's output goes. Each tile's state is kept in
    log space: its log-sum-exp ``lse_t`` and its normalised output ``o_t = softmax(s_t) v_t``,
    computed with torch's fused row softmax (one pass over the tile instead of the four of max,
    subtract, exp and sum). Tiles are then combined with the merge (online-softmax-merge-log).
    When only one key tile exists and no ``lse`` is wanted, the tile's output is the answer and
    its ``lse`` is never formed.
    """
    g, bq, _ = q_i.shape
    n_k, d_v = k_t.shape[2], v.shape[2]
    i1 = i0 + bq
    offset = n_k - n_q  # bottom-right alignment: row i sees keys j <= i + offset
    neg_inf = float("-inf")
    # (online-softmax-causal): keys after the last one visible to the block's last row are
    # hidden from every row of the block, so they are never read: tiles past it are skipped
    # and the last tile is cut short
    k_end = n_k if not causal else max(0, min(n_k, i1 + offset))
    starts = range(0, k_end, block_k)
    lse_i: torch.Tensor | None = None  # the block's state (lse_i, o_i); None = no key yet
    o_i: torch.Tensor | None = None
    for j0 in starts:
        j1 = min(j0 + block_k, k_end)
        s = scratch[: g * bq * (j1 - j0)].view(g, bq, j1 - j0)
        torch.bmm(q_i, k_t[:, :, j0:j1], out=s)  # (G, bq, bk): scores of this tile
        masked = causal and j1 - 1 > i0 + offset  # a tile on the diagonal
        if masked:
            s.masked_fill_(_tile_mask(i0, i1, j0, j1, offset, q_i.device), neg_inf)
        if len(starts) == 1 and not masked and not need_lse:
            # the whole answer, written straight into the block's rows of the output
            return torch.bmm(torch.softmax(s, dim=-1, out=s), v[:, j0:j1], out=o_view), None
        m_t = s.amax(dim=-1, keepdim=True)  # (G, bq, 1) the tile's row max
        p = torch.softmax(s, dim=-1, out=s)  # exp(s - lse_t), one fused pass, in place
        # lse_t = m_t - log p_max: the largest p sits at the largest s, where it equals
        # exp(m_t - lse_t) >= 1 / bk (so the log is safe). amax is a fast pass; max with indices
        # and a gather would cost as much as the softmax itself
        lse_t = m_t - torch.log(p.amax(dim=-1, keepdim=True))
        o_t = torch.bmm(p, v[:, j0:j1])  # (G, bq, d_v), normalised within the tile
        if masked:  # rows that see no key of this tile hold NaN: make them empty states
            seen = _tile_rows_seen(i0, i1, j0, offset, q_i.device)  # (bq, 1)
            lse_t = torch.where(seen, lse_t, neg_inf)
            o_t = torch.where(seen, o_t, 0.0)
        if lse_i is None or o_i is None:
            lse_i, o_i = lse_t, o_t
            continue
        # (online-softmax-merge-log): combine (lse_i, o_i) with (lse_t, o_t). The weight of
        # o_i is exp(lse_i - lse) = sigmoid(lse_i - lse_t), that of o_t is one minus it
        w = torch.sigmoid(lse_i - lse_t)  # (G, bq, 1); 0 or 1 when one state is empty
        if causal:  # a row still empty in both states gives -inf - -inf: its outputs are 0
            w = torch.nan_to_num(w, nan=1.0)
        o_i = torch.lerp(o_t, o_i, w)  # w o_i + (1 - w) o_t
        lse_i = torch.logaddexp(lse_i, lse_t)
    if o_i is None:  # every key is hidden from this block (N_q > N_k): the empty state
        o_i = torch.zeros((g, bq, d_v), dtype=q_i.dtype, device=q_i.device)
    if lse_i is None:
        lse_i = torch.full((g, bq, 1), neg_inf, dtype=q_i.dtype, device=q_i.device)
    return o_i, lse_i


def _tile_rows_seen(i0: int, i1: int, j0: int, offset: int, device: torch.device) -> torch.Tensor:
    """``True`` for the rows i0:i1 that see at least one key at or after ``j0``: ``(bq, 1)``."""
    return (torch.arange(i0, i1, device=device) + offset >= j0).unsqueeze(-1)


def _tile_mask(i0: int, i1: int, j0: int, j1: int, offset: int, device: torch.device) -> torch.Tensor:
    """``True`` where key ``j`` is *hidden* from query ``i`` in the tile rows i0:i1, cols j0:j1."""
    rows = torch.arange(i0, i1, device=device).unsqueeze(-1)
    cols = torch.arange(j0, j1, device=device)
    return cols > rows + offset


def _flash_backward(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, out: torch.Tensor, lse: torch.Tensor,
    d_out: torch.Tensor, causal: bool, tau: float, block_q: int, block_k: int,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Tiled backward on 3-D tensors, recomputing ``P`` from the saved log-sum-exp."""
    n_q, n_k = q.shape[1], k.shape[1]
    offset = n_k - n_q
    d_q, d_k, d_v = torch.zeros_like(q), torch.zeros_like(k), torch.zeros_like(v)
    # (online-softmax-bwd-D): D_i = rowsum(dO * O) = sum_j P_ij dP_ij
    big_d = (d_out * out).sum(-1, keepdim=True)  # (B, N_q, 1)
    # rows that saw no key have lse = -inf; +inf there makes their recomputed P exactly 0
    lse = torch.where(torch.isneginf(lse), float("inf"), lse).unsqueeze(-1)  # (B, N_q, 1)
    for i0 in range(0, n_q, block_q):
        i1 = min(i0 + block_q, n_q)
        q_i, do_i = q[:, i0:i1], d_out[:, i0:i1]
        k_end = n_k if not causal else max(0, min(n_k, i1 + offset))
        for j0 in range(0, k_end, block_k):
            j1 = min(j0 + block_k, k_end)  # keys from k_end on are hidden from the whole block
            k_j, v_j = k[:, j0:j1], v[:, j0:j1]
            s = torch.bmm(q_i, k_j.transpose(1, 2)).mul_(tau)
            if causal and j1 - 1 > i0 + offset:
                s.masked_fill_(_tile_mask(i0, i1, j0, j1, offset, q.device), float("-inf"))
            p = s.sub_(lse[:, i0:i1]).exp_()  # (online-softmax-bwd-P): P recomputed, not stored
            d_v[:, j0:j1].baddbmm_(p.transpose(1, 2), do_i)  # dV = P^T dO
            d_p = torch.bmm(do_i, v_j.transpose(1, 2))  # dP = dO V^T
            d_s = p.mul_(d_p.sub_(big_d[:, i0:i1]))  # dS = P * (dP - D)
            d_q[:, i0:i1].baddbmm_(d_s, k_j, alpha=tau)  # dQ = tau dS K
            d_k[:, j0:j1].baddbmm_(d_s.transpose(1, 2), q_i, alpha=tau)  # dK = tau dS^T Q
    return d_q, d_k, d_v


class _FlashAttention(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, causal: bool, tau: float,
                block_q: int, block_k: int, return_lse: bool) -> tuple[torch.Tensor, torch.Tensor]:
        ctx.return_lse = return_lse
        need_lse = ctx.return_lse or any(ctx.needs_input_grad[:3])
        out, lse = _flash_forward(q, k, v, causal, tau, block_q, block_k, need_lse)
        if lse is None:  # nobody will read it: an empty placeholder keeps the outputs fixed
            lse = out.new_empty((0,))
        ctx.save_for_backward(q, k, v, out, lse)  # O(N d) saved: no N x N matrix
        ctx.causal, ctx.tau, ctx.block_q, ctx.block_k = causal, tau, block_q, block_k
        ctx.mark_non_differentiable(lse)
        return out, lse

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx: Any, d_out: torch.Tensor, _d_lse: Any) -> tuple[Any, ...]:
        q, k, v, out, lse = ctx.saved_tensors
        d_q, d_k, d_v = _flash_backward(q, k, v, out, lse, d_out.contiguous(), ctx.causal, ctx.tau,
                                        ctx.block_q, ctx.block_k)
        return d_q, d_k, d_v, None, None, None, None, None


def flash_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    *,
    causal: bool = False,
    scale: float | None = None,
    block_q: int | None = None,
    block_k: int | None = None,
    return_lse: bool = False,
) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """Exact attention computed tile by tile, never holding the ``N_q x N_k`` matrix.

    The FlashAttention-2 loop order (algorithm online-softmax-alg-fa2): for each block of
    ``block_q`` queries, sweep the key/value tiles of ``block_k`` rows. The per-tile update is
    *not* the unnormalised accumulator of (online-softmax-fa2): on a CPU in eager PyTorch its
    separate max, subtract, exp and sum passes over the tile cost about as much as the matrix
    products, so each tile's softmax is torch's fused row softmax, which yields the tile's
    state in log form (its log-sum-exp and normalised output), and the states are combined
    with the log-space merge (online-softmax-merge-log). :func:`flash_attention_fa2` is the
    accumulator form, kept as a readable reference; both give the same numbers up to
    rounding. Each query keeps ``lse`` for the backward pass. With ``causal=True`` key tiles
    that are fully masked are skipped. The backward pass is hand-written: it recomputes each
    tile's weights from the saved ``lse`` and uses ``D = rowsum(dO * O)``. It is
    differentiable once (no double-backward).

    Threads: on a CPU with ``torch.get_num_threads() > 1`` and at least ``2**22`` scores in all,
    the forward pass deals its (head, query block) jobs to that many worker threads, each
    running single-threaded torch operations. For the duration of the call torch's intra-op
    thread count is set to 1 and then restored, so other threads using torch meanwhile run
    single-threaded, and concurrent large calls take turns.

    Args:
        q: queries, shape ``(..., N_q, d)``.
        k: keys, shape ``(..., N_k, d)``; leading dims equal to those of ``q``.
        v: values, shape ``(..., N_k, d_v)``.
        causal: bottom-right aligned causal mask: query ``i`` sees key ``j`` if
            ``j <= i + (N_k - N_q)``. For ``N_q == N_k`` this equals
            ``scaled_dot_product_attention(..., is_causal=True)``.
        scale: the score scale; default ``1 / sqrt(d)``.
        block_q: queries per block (default ``DEFAULT_BLOCK_Q`` = 256).
        block_k: keys per tile (default ``DEFAULT_BLOCK_K`` = 1024). Lengths need not be
            multiples.
        return_lse: also return the log-sum-exp of each query's scaled scores.

    Returns:
        ``out`` of shape ``(..., N_q, d_v)``, or ``(out, lse)`` with ``lse`` of shape
        ``(..., N_q)`` (``-inf`` for a query that sees no key; its output is 0).

    Raises:
        TypeError: non-float or mixed dtypes, non-int block sizes.
        ValueError: mismatched head dims, lengths or leading dims; non-positive block sizes.

    Implements (online-softmax-merge-log), (online-softmax-lse), (online-softmax-causal),
    (online-softmax-bwd-P) and (online-softmax-bwd-D).

    >>> q, k, v = torch.randn(2, 7, 4), torch.randn(2, 9, 4), torch.randn(2, 9, 3)
    >>> out = flash_attention(q, k, v, causal=True, block_q=3, block_k=4)
    >>> bool(torch.allclose(out, softmax_attention(q, k, v, causal=True), atol=1e-6))
    True
    """
    _check_qkv(q, k, v)
    tau = _check_scale(scale, q.shape[-1])
    block_q = DEFAULT_BLOCK_Q if block_q is None else _check_block("block_q", block_q)
    block_k = DEFAULT_BLOCK_K if block_k is None else _check_block("block_k", block_k)
    lead = q.shape[:-2]
    batch = math.prod(lead)
    # flatten (batch, heads, ...) into one dim so every tile product is a single bmm
    q3 = q.reshape(batch, q.shape[-2], q.shape[-1])  # (B, N_q, d)
    k3 = k.reshape(batch, k.shape[-2], k.shape[-1])  # (B, N_k, d)
    v3 = v.reshape(batch, v.shape[-2], v.shape[-1])  # (B, N_k, d_v)
    out, lse = _FlashAttention.apply(q3, k3, v3, bool(causal), tau, block_q, block_k, bool(return_lse))
    out = out.reshape(*lead, q.shape[-2], v.shape[-1])
    if return_lse:
        return out, lse.reshape(*lead, q.shape[-2])
    return out


def attention_tile_states(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, *, block_k: int, scale: float | None = None
) -> list[dict[str, torch.Tensor]]:
    """The running state of the FlashAttention-1 loop after each key/value tile.

    Meant for watching the algorithm: after tile ``t`` the state holds the running max ``m``,
    normaliser ``l`` and the *normalised* partial output ``o`` (the FlashAttention-1 form,
    which rescales ``o`` by ``l_old exp(m_old - m_new) / l_new`` at every step). After the last
    tile ``o`` equals the attention output.

    Args:
        q: queries, shape ``(..., N_q, d)``.
        k: keys, shape ``(..., N_k, d)``.
        v: values, shape ``(..., N_k, d_v)``.
        block_k: keys per tile.
        scale: the score scale; default ``1 / sqrt(d)``.

    Returns:
        One dict per tile with ``m`` and ``l`` of shape ``(..., N_q)``, ``o`` of shape
        ``(..., N_q, d_v)`` and ``keys``, the ``(start, stop)`` of the tile as a tuple.

    Implements (online-softmax-fa1).

    >>> q, k, v = torch.randn(3, 4), torch.randn(10, 4), torch.randn(10, 2)
    >>> states = attention_tile_states(q, k, v, block_k=4)
    >>> len(states), bool(torch.allclose(states[-1]["o"], softmax_attention(q, k, v), atol=1e-6))
    (3, True)
    """
    _check_qkv(q, k, v)
    tau = _check_scale(scale, q.shape[-1])
    block_k = _check_block("block_k", block_k)
    n_k = k.shape[-2]
    m = torch.full((*q.shape[:-1], 1), float("-inf"), dtype=q.dtype, device=q.device)
    l = torch.zeros_like(m)
    o = torch.zeros((*q.shape[:-1], v.shape[-1]), dtype=q.dtype, device=q.device)
    states = []
    for j0 in range(0, n_k, block_k):
        j1 = min(j0 + block_k, n_k)
        s = (q @ k[..., j0:j1, :].transpose(-2, -1)) * tau  # (..., N_q, bk)
        m_new = torch.maximum(m, s.amax(-1, keepdim=True))
        p = torch.exp(s - m_new)
        l_new = l * torch.exp(m - m_new) + p.sum(-1, keepdim=True)
        # (online-softmax-fa1): re-weight the old normalised output, add the new tile's share
        o = (l * torch.exp(m - m_new) * o + p @ v[..., j0:j1, :]) / l_new
        m, l = m_new, l_new
        states.append({"m": m.squeeze(-1), "l": l.squeeze(-1), "o": o, "keys": (j0, j1)})
    return states


def flash_attention_fa2(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    *,
    causal: bool = False,
    scale: float | None = None,
    block_q: int = 64,
    block_k: int = 64,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The FlashAttention-2 forward pass in its accumulator form, line for line.

    For each block of ``block_q`` queries, sweep the key/value tiles of ``block_k`` rows,
    keeping per query a running max ``m``, normaliser ``l`` and an *unnormalised* output
    accumulator ``u``. A tile rescales ``l`` and ``u`` by ``exp(m_old - m_new)`` and adds its
    own ``exp(s - m_new)`` terms; ``u`` is divided by ``l`` once, after the last tile, and
    ``lse = m + log l`` is kept per query. Fully masked causal tiles are skipped. This is the
    readable reference of algorithm online-softmax-alg-fa2; :func:`flash_attention` computes
    the same numbers with a log-space merge that suits eager PyTorch on a CPU, and has a
    backward pass. This function is differentiable through autograd (which stores every tile).

    Args:
        q: queries, shape ``(..., N_q, d)``.
        k: keys, shape ``(..., N_k, d)``; leading dims equal to those of ``q``.
        v: values, shape ``(..., N_k, d_v)``.
        causal: the bottom-right aligned causal mask of :func:`causal_mask`.
        scale: the score scale; default ``1 / sqrt(d)``.
        block_q: queries per block.
        block_k: keys per tile.

    Returns:
        ``(out, lse)``: ``out`` of shape ``(..., N_q, d_v)`` and ``lse`` of shape ``(..., N_q)``
        (``0`` and ``-inf`` for a query that sees no key).

    Raises:
        TypeError: non-float or mixed dtypes, non-int block sizes.
        ValueError: mismatched shapes; non-positive block sizes.

    Implements (online-softmax-fa2), (online-softmax-lse) and (online-softmax-causal).

    >>> q, k, v = torch.randn(5, 4), torch.randn(9, 4), torch.randn(9, 3)
    >>> out, lse = flash_attention_fa2(q, k, v, causal=True, block_q=2, block_k=4)
    >>> bool(torch.allclose(out, softmax_attention(q, k, v, causal=True), atol=1e-6))
    True
    """
    _check_qkv(q, k, v)
    tau = _check_scale(scale, q.shape[-1])
    block_q = _check_block("block_q", block_q)
    block_k = _check_block("block_k", block_k)
    n_q, n_k, d_v = q.shape[-2], k.shape[-2], v.shape[-1]
    offset = n_k - n_q  # bottom-right alignment: row i sees keys j <= i + offset
    outs, lses = [], []
    for i0 in range(0, n_q, block_q):
        i1 = min(i0 + block_q, n_q)
        q_b = q[..., i0:i1, :] * tau  # (..., bq, d), the scale folded in once
        m = torch.full((*q_b.shape[:-1], 1), float("-inf"), dtype=q.dtype, device=q.device)
        l = torch.zeros_like(m)  # (..., bq, 1)
        u = torch.zeros((*q_b.shape[:-1], d_v), dtype=q.dtype, device=q.device)  # (..., bq, d_v)
        k_end = n_k if not causal else max(0, min(n_k, i1 + offset))  # later keys: hidden from all
        for j0 in range(0, k_end, block_k):
            j1 = min(j0 + block_k, k_end)
            s = q_b @ k[..., j0:j1, :].transpose(-2, -1)  # (..., bq, bk)
            if causal and j1 - 1 > i0 + offset:  # a diagonal tile
                s = s.masked_fill(_tile_mask(i0, i1, j0, j1, offset, q.device), float("-inf"))
            m_new = torch.maximum(m, s.amax(-1, keepdim=True))
            # a row that has seen no visible key yet has m_new = -inf: shift it by 0 instead
            m_ref = torch.where(torch.isneginf(m_new), torch.zeros_like(m_new), m_new)
            alpha = torch.exp(m - m_ref)  # exp(m_old - m_new); 0 while the old state is empty
            p = torch.exp(s - m_ref)  # (..., bq, bk), every exponent <= 0
            # (online-softmax-fa2): rescale the running sums, add this tile's terms
            l = alpha * l + p.sum(-1, keepdim=True)
            u = alpha * u + p @ v[..., j0:j1, :]
            m = m_new
        seen = l > 0  # rows with at least one visible key
        outs.append(torch.where(seen, u / torch.where(seen, l, torch.ones_like(l)), torch.zeros_like(u)))
        # (online-softmax-lse): L = m + log l, -inf for the empty state
        lses.append(torch.where(seen, m + torch.log(torch.where(seen, l, torch.ones_like(l))),
                                torch.full_like(m, float("-inf"))).squeeze(-1))
    return torch.cat(outs, dim=-2), torch.cat(lses, dim=-1)


# ---------------------------------------------------------------------------------------------
# linear attention
# ---------------------------------------------------------------------------------------------
def _feature_map(name: str | Callable[[torch.Tensor], torch.Tensor]) -> Callable[[torch.Tensor], torch.Tensor]:
    if callable(name):
        return name
    if name == "elu":
        return lambda x: F.elu(x) + 1.0  # positive, so every normaliser is > 0
    if name == "relu":
        return F.relu
    raise ValueError(f"feature_map must be 'elu', 'relu' or a callable, got {name!r}")


def linear_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    *,
    causal: bool = False,
    feature_map: str | Callable[[torch.Tensor], torch.Tensor] = "elu",
    chunk_size: int = 64,
    eps: float = 1e-6,
) -> torch.Tensor:
    """Linear attention: softmax replaced by a feature-map kernel, computed in O(N).

    Row ``i`` of the output is ``phi(q_i)^T S / (phi(q_i)^T z)`` with
    ``S = sum_j phi(k_j) v_j^T`` and ``z = sum_j phi(k_j)``, the sums running over all keys,
    or, with ``causal=True``, over keys ``j <= i`` (queries and keys aligned top-left, which
    needs ``N_q == N_k``). The causal form is computed chunk by chunk: a masked quadratic
    product inside each chunk of ``chunk_size`` positions plus the running state of all earlier
    chunks, so its cost is ``O(N (chunk_size + r) d_v)`` for ``r`` features per position.

    Args:
        q: queries, shape ``(..., N_q, d)``.
        k: keys, shape ``(..., N_k, d)``.
        v: values, shape ``(..., N_k, d_v)``.
        causal: prefix sums instead of full sums (requires ``N_q == N_k``).
        feature_map: ``"elu"`` for ``elu(x) + 1`` (default), ``"relu"``, or a callable
            mapping ``(..., N, d)`` to non-negative features ``(..., N, r)``; ``r`` may differ
            from ``d`` (the state ``S`` is ``r x d_v``).
        chunk_size: positions per chunk in the causal form.
        eps: added to the normaliser, guarding against all-zero features (e.g. with relu).

    Returns:
        The output, shape ``(..., N_q, d_v)``.

    Raises:
        TypeError: non-float or mixed dtypes.
        ValueError: mismatched shapes, unknown feature map, ``causal`` with ``N_q != N_k``,
            non-positive ``chunk_size``.

    Implements (linear-attention-assoc) and (linear-attention-chunk).

    >>> q, k, v = torch.randn(6, 4), torch.randn(6, 4), torch.randn(6, 3)
    >>> a = linear_attention(q, k, v, causal=True, chunk_size=4)
    >>> bool(torch.allclose(a, linear_attention_recurrent(q, k, v), atol=1e-5))
    True
    """
    _check_qkv(q, k, v)
    phi = _feature_map(feature_map)
    chunk_size = _check_block("chunk_size", chunk_size)
    if not causal:
        fq, fk = phi(q), phi(k)  # (..., N_q, d), (..., N_k, d)
        s = fk.transpose(-2, -1) @ v  # (..., d, d_v): sum_j phi(k_j) v_j^T
        z = fk.sum(-2)  # (..., d)
        num = fq @ s  # (..., N_q, d_v)
        den = (fq * z.unsqueeze(-2)).sum(-1, keepdim=True)  # (..., N_q, 1)
        return num / (den + eps)
    n = q.shape[-2]
    if k.shape[-2] != n:
        raise ValueError(f"causal linear attention needs N_q == N_k, got {n} and {k.shape[-2]}")
    fq, fk = phi(q), phi(k)  # (..., N, r)
    r, d_v = fq.shape[-1], v.shape[-1]
    s = torch.zeros((*q.shape[:-2], r, d_v), dtype=q.dtype, device=q.device)  # state S: (..., r, d_v)
    z = torch.zeros((*q.shape[:-2], 1, r), dtype=q.dtype, device=q.device)  # state z: (..., 1, r)
    outs = []
    for c0 in range(0, n, chunk_size):
        c1 = min(c0 + chunk_size, n)
        fq_c, fk_c, v_c = fq[..., c0:c1, :], fk[..., c0:c1, :], v[..., c0:c1, :]
        a = torch.tril(fq_c @ fk_c.transpose(-2, -1))  # (..., c, c): within-chunk, j <= i
        # (linear-attention-chunk): earlier chunks through the state, this chunk directly
        num = fq_c @ s + a @ v_c
        den = (fq_c * z).sum(-1, keepdim=True) + a.sum(-1, keepdim=True)
        outs.append(num / (den + eps))
        s = s + fk_c.transpose(-2, -1) @ v_c
        z = z + fk_c.sum(-2, keepdim=True)
    return torch.cat(outs, dim=-2)


def linear_attention_recurrent(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    *,
    feature_map: str | Callable[[torch.Tensor], torch.Tensor] = "elu",
    eps: float = 1e-6,
) -> torch.Tensor:
    """Causal linear attention as an RNN, one position at a time.

    The state is ``S_t = S_{t-1} + phi(k_t) v_t^T`` and ``z_t = z_{t-1} + phi(k_t)``, and the
    output is ``phi(q_t)^T S_t / (phi(q_t)^T z_t)``. This is the form used for decoding; it
    is slow in Python and exists to check :func:`linear_attention`.

    Args:
        q: queries, shape ``(..., N, d)``.
        k: keys, shape ``(..., N, d)``.
        v: values, shape ``(..., N, d_v)``.
        feature_map: as in :func:`linear_attention`.
        eps: as in :func:`linear_attention`.

    Returns:
        The output, shape ``(..., N, d_v)``.

    Raises:
        TypeError: non-float or mixed dtypes.
        ValueError: mismatched shapes or ``N_q != N_k``.

    Implements (linear-attention-rnn).
    """
    _check_qkv(q, k, v)
    if q.shape[-2] != k.shape[-2]:
        raise ValueError(f"the recurrent form needs N_q == N_k, got {q.shape[-2]} and {k.shape[-2]}")
    phi = _feature_map(feature_map)
    fq, fk = phi(q), phi(k)  # (..., N, r)
    s = torch.zeros((*q.shape[:-2], fq.shape[-1], v.shape[-1]), dtype=q.dtype, device=q.device)  # (..., r, d_v)
    z = torch.zeros((*q.shape[:-2], fq.shape[-1]), dtype=q.dtype, device=q.device)  # (..., r)
    outs = []
    for t in range(q.shape[-2]):
        s = s + fk[..., t, :, None] * v[..., t, None, :]  # S_t = S_{t-1} + phi(k_t) v_t^T
        z = z + fk[..., t, :]
        num = (fq[..., t, :, None] * s).sum(-2)  # phi(q_t)^T S_t: (..., d_v)
        den = (fq[..., t, :] * z).sum(-1, keepdim=True)
        outs.append(num / (den + eps))
    return torch.stack(outs, dim=-2)


def positive_random_features(x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """Performer's positive random features: ``phi(x) = exp(W x - |x|^2 / 2) / sqrt(m)``.

    With the rows ``w_1, ..., w_m`` of ``w`` drawn i.i.d. from ``N(0, I_d)`` and the **same**
    ``w`` used for queries and keys, ``phi(q)^T phi(k)`` is an unbiased estimate of the softmax
    kernel ``exp(q^T k)`` with variance ``exp(2 q^T k) (exp(|q + k|^2) - 1) / m``. The
    ``1 / sqrt(m)`` factor is included, so the inner product is the *mean* over the ``m``
    features. To estimate ``exp(tau q^T k)``, pass ``sqrt(tau) * q`` and ``sqrt(tau) * k``.
    Passing the result as ``feature_map`` to :func:`linear_attention` gives the Performer's
    estimate of softmax attention.

    The features are not stabilised (subtracting a running maximum in the exponent would
    rescale them and bias the kernel estimate). Their range: since
    ``w_r^T x - |x|^2 / 2 = |w_r|^2 / 2 - |x - w_r|^2 / 2``, every feature lies in
    ``(0, exp(|w_r|^2 / 2) / sqrt(m)]`` whatever ``x`` is, so nothing overflows in float32
    while every ``|w_r|^2 < 176`` (for Gaussian rows ``|w_r|^2`` has mean ``d`` and standard
    deviation ``sqrt(2 d)``: at ``d = 64`` the bound is 10 standard deviations out). For large
    ``|x|`` the features underflow to 0.

    Args:
        x: inputs (queries or keys), shape ``(..., d)``, floating point.
        w: random projection, shape ``(m, d)``, same dtype and device as ``x``; rows are
            meant to be i.i.d. ``N(0, I_d)``.

    Returns:
        The features, shape ``(..., m)``, strictly positive unless they underflow.

    Raises:
        TypeError: non-tensor or non-float input, or ``x`` and ``w`` of different dtypes.
        ValueError: ``w`` not 2-D or with no rows, mismatched ``d``, different devices.

    Implements (linear-attention-prf).

    >>> g = torch.Generator().manual_seed(0)
    >>> q, k = 0.3 * torch.randn(4, generator=g), 0.3 * torch.randn(4, generator=g)
    >>> w = torch.randn(100_000, 4, generator=g)
    >>> est = positive_random_features(q, w) @ positive_random_features(k, w)
    >>> bool(abs(est - torch.exp(q @ k)) < 0.02)
    True
    """
    _check_float("x", x)
    _check_float("w", w)
    if w.dim() != 2 or w.shape[0] < 1:
        raise ValueError(f"w must have shape (m, d) with m >= 1, got {tuple(w.shape)}")
    if x.dim() < 1 or x.shape[-1] != w.shape[1]:
        raise ValueError(f"x must have shape (..., d) with d = w.shape[1] = {w.shape[1]}, got {tuple(x.shape)}")
    if x.dtype != w.dtype:
        raise TypeError(f"x and w must share a dtype, got {x.dtype} and {w.dtype}")
    if x.device != w.device:
        raise ValueError(f"x and w must be on one device, got {x.device} and {w.device}")
    m = w.shape[0]
    # (linear-attention-prf): exponent w_r^T x - |x|^2 / 2, shape (..., m)
    logits = x @ w.transpose(0, 1) - 0.5 * (x * x).sum(-1, keepdim=True)
    return torch.exp(logits) / math.sqrt(m)


# ---------------------------------------------------------------------------------------------
# drawing
# ---------------------------------------------------------------------------------------------
def plot_attention(
    weights: Any,
    ax: Any = None,
    *,
    query: int | None = None,
    title: str | None = None,
    xlabel: str = "key j",
    ylabel: str = "query i",
    tokens: list[str] | None = None,
    colorbar: bool = True,
    vmax: float | None = None,
) -> Any:
    """Draw an attention-weight matrix as a heatmap; reused by every attention lab.

    Args:
        weights: a 2-D tensor or array ``(N_q, N_k)`` of weights (rows usually sum to 1).
        ax: the matplotlib Axes to draw on; a new figure is made when None.
        query: if given, outline that query's row.
        title: the axes title.
        xlabel, ylabel: axis labels.
        tokens: optional labels for both axes (when ``N_q == N_k``, e.g. tokens of a sequence).
        colorbar: add a colour bar.
        vmax: the top of the colour scale (default: the largest weight).

    Returns:
        The Axes drawn on.

    Raises:
        ValueError: ``weights`` is not 2-D, or ``query`` is out of range.
    """
    import matplotlib.pyplot as plt
    import numpy as np
    from matplotlib.patches import Rectangle

    w = weights.detach().to("cpu", torch.float32).numpy() if isinstance(weights, torch.Tensor) else np.asarray(weights)
    if w.ndim != 2:
        raise ValueError(f"weights must be 2-D (N_q, N_k), got shape {w.shape}")
    if ax is None:
        _, ax = plt.subplots(figsize=(4, 3.5))
    im = ax.imshow(w, cmap="viridis", vmin=0.0, vmax=vmax if vmax is not None else float(np.nanmax(w)),
                   aspect="auto", interpolation="nearest")
    ax.grid(False)
    if query is not None:
        if not 0 <= query < w.shape[0]:
            raise ValueError(f"query must be in [0, {w.shape[0]}), got {query}")
        ax.add_patch(Rectangle((-0.5, query - 0.5), w.shape[1], 1, fill=False, edgecolor="#D55E00", lw=2))
    if tokens is not None:
        ax.set_xticks(range(len(tokens)), tokens, fontsize=7, rotation=90)
        ax.set_yticks(range(len(tokens)), tokens, fontsize=7)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    if title:
        ax.set_title(title)
    if colorbar:
        ax.figure.colorbar(im, ax=ax, fraction=0.046, pad=0.04)
    return ax


# ---------------------------------------------------------------------------------------------
# linear attention with decay and gating, and the delta rule (chapter linear-attention, issue 16)
# ---------------------------------------------------------------------------------------------
def _check_rate(name: str, x: Any, shape: tuple[int, ...], like: torch.Tensor, low: float, high: float,
                low_open: bool, extra: tuple[int, ...] = ()) -> torch.Tensor:
    """A float or a tensor of shape ``shape`` (or ``shape + extra``) with entries in the given range."""
    if isinstance(x, bool) or not isinstance(x, (int, float, torch.Tensor)):
        raise TypeError(f"{name} must be a float or a tensor, got {type(x).__name__}")
    if isinstance(x, torch.Tensor):
        _check_float(name, x)
        if x.dtype != like.dtype or x.device != like.device:
            raise TypeError(f"{name} must share q's dtype and device, got {x.dtype} on {x.device}")
        allowed = [shape] + ([shape + extra] if extra else [])
        if x.dim() != 0 and tuple(x.shape) not in allowed:
            raise ValueError(f"{name} must be a scalar or have shape {' or '.join(str(s) for s in allowed)}, "
                             f"got {tuple(x.shape)}")
        t = x.expand(shape) if x.dim() == 0 else x
    else:
        t = torch.full(shape, float(x), dtype=like.dtype, device=like.device)
    too_low = (t <= low) if low_open else (t < low)
    if bool(too_low.any() | (t > high).any() | t.isnan().any()):
        bracket = "(" if low_open else "["
        raise ValueError(f"{name} must lie in {bracket}{low:g}, {high:g}], got values from "
                         f"{t.min().item():g} to {t.max().item():g}")
    return t


def gated_linear_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    decay: float | torch.Tensor,
) -> torch.Tensor:
    """Causal linear attention whose state decays: ``S_t = a_t S_{t-1} + k_t v_t^T``, ``o_t = q_t^T S_t``.

    The recurrence is the definition (a loop over positions, as in
    :func:`linear_attention_recurrent`), with ``S_0 = 0`` and the state ``S_t`` of shape
    ``(..., d, d_v)``. There is no feature map and no normaliser, as in RetNet, GLA and Mamba-2:
    apply a feature map to ``q`` and ``k`` yourself, and to get the normaliser of
    :func:`linear_attention` run the same recurrence on a column of ones appended to ``v``.
    With ``decay = 1`` the state never forgets; a constant ``decay = gamma < 1`` is RetNet's
    retention; a per-step ``decay`` of shape ``(..., N)`` is a data-dependent scalar gate
    (Mamba-2); a per-step, per-channel ``decay`` of shape ``(..., N, d)`` decays each row of the
    state separately, ``S_t = diag(a_t) S_{t-1} + k_t v_t^T`` (GLA).

    Args:
        q: queries, shape ``(..., N, d)``.
        k: keys, shape ``(..., N, d)``.
        v: values, shape ``(..., N, d_v)``.
        decay: a float, or a tensor of shape ``()``, ``(..., N)`` or ``(..., N, d)`` with the
            dtype and device of ``q``; every entry in ``(0, 1]``.

    Returns:
        The output, shape ``(..., N, d_v)``; row ``t`` is
        ``sum_{j <= t} (prod_{j < i <= t} a_i) (q_t^T k_j) v_j`` for a scalar gate.

    Raises:
        TypeError: non-float or mixed dtypes, ``decay`` of the wrong type.
        ValueError: mismatched shapes, ``N_q != N_k``, a decay outside ``(0, 1]``.

    Implements (linear-attention-gated).

    >>> q, k, v = torch.randn(5, 3), torch.randn(5, 3), torch.randn(5, 2)
    >>> o = gated_linear_attention(q, k, v, 0.5)
    >>> w = torch.tril(0.5 ** (torch.arange(5.0)[:, None] - torch.arange(5.0)))  # gamma^(t - j), j <= t
    >>> bool(torch.allclose(o, ((q @ k.T) * w) @ v, atol=1e-5))
    True
    """
    _check_qkv(q, k, v)
    if q.shape[-2] != k.shape[-2]:
        raise ValueError(f"gated linear attention is causal and needs N_q == N_k, got {q.shape[-2]} and {k.shape[-2]}")
    n, d = q.shape[-2], q.shape[-1]
    a = _check_rate("decay", decay, tuple(q.shape[:-1]), q, 0.0, 1.0, low_open=True, extra=(d,))
    a = a.unsqueeze(-1) if a.shape == q.shape else a.unsqueeze(-1).unsqueeze(-1)  # (..., N, d|1, 1)
    s = torch.zeros((*q.shape[:-2], d, v.shape[-1]), dtype=q.dtype, device=q.device)  # S: (..., d, d_v)
    outs = []
    for t in range(n):
        s = a[..., t, :, :] * s + k[..., t, :, None] * v[..., t, None, :]  # (linear-attention-gated)
        outs.append((q[..., t, :, None] * s).sum(-2))  # q_t^T S_t: (..., d_v)
    return torch.stack(outs, dim=-2)


def delta_rule_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    beta: float | torch.Tensor,
) -> torch.Tensor:
    """Causal linear attention with the delta rule (DeltaNet): each step corrects the state.

    ``S_t = S_{t-1} - beta_t k_t (k_t^T S_{t-1} - v_t^T)`` and ``o_t = q_t^T S_t``, with
    ``S_0 = 0`` and the state of shape ``(..., d, d_v)``: one gradient step of size ``beta_t`` on
    ``0.5 |S^T k_t - v_t|^2``, so the value stored under ``k_t`` moves towards ``v_t`` instead of
    having ``v_t`` added to it. With unit-norm keys and ``beta_t = 1`` the step overwrites:
    ``k_t^T S_t = v_t^T`` exactly. No feature map and no normaliser (normalise the keys yourself,
    as DeltaNet does). A loop over positions; ``beta = 0`` at a position leaves the state as it is.

    Args:
        q: queries, shape ``(..., N, d)``.
        k: keys, shape ``(..., N, d)``.
        v: values, shape ``(..., N, d_v)``.
        beta: the step size (writing strength), a float or a tensor of shape ``()`` or
            ``(..., N)`` with the dtype and device of ``q``; every entry in ``[0, 1]``.

    Returns:
        The output, shape ``(..., N, d_v)``.

    Raises:
        TypeError: non-float or mixed dtypes, ``beta`` of the wrong type.
        ValueError: mismatched shapes, ``N_q != N_k``, a ``beta`` outside ``[0, 1]``.

    Implements (linear-attention-delta).

    >>> k = torch.eye(3)[[0, 1, 0]]  # key e_0 is written twice
    >>> v = torch.tensor([[1.0], [2.0], [5.0]])
    >>> delta_rule_attention(k, k, v, 1.0)[-1]  # reads back the new value, not 1 + 5
    tensor([5.])
    """
    _check_qkv(q, k, v)
    if q.shape[-2] != k.shape[-2]:
        raise ValueError(f"the delta rule is causal and needs N_q == N_k, got {q.shape[-2]} and {k.shape[-2]}")
    n, d = q.shape[-2], q.shape[-1]
    b = _check_rate("beta", beta, tuple(q.shape[:-1]), q, 0.0, 1.0, low_open=False)  # (..., N)
    s = torch.zeros((*q.shape[:-2], d, v.shape[-1]), dtype=q.dtype, device=q.device)  # S: (..., d, d_v)
    outs = []
    for t in range(n):
        kt = k[..., t, :]  # (..., d)
        err = (kt[..., :, None] * s).sum(-2) - v[..., t, :]  # k_t^T S_{t-1} - v_t^T: (..., d_v)
        s = s - b[..., t, None, None] * kt[..., :, None] * err[..., None, :]  # (linear-attention-delta)
        outs.append((q[..., t, :, None] * s).sum(-2))  # q_t^T S_t
    return torch.stack(outs, dim=-2)
