"""Tests for minilib.attention (and minilib.bench): against torch built-ins and brute force."""

from __future__ import annotations

import math
import threading
import types

import pytest
import torch
import torch.nn.functional as F
from hypothesis import example, given, settings
from hypothesis import strategies as st

from minilib import attention, bench
from minilib.attention import (
    attention_tile_states,
    causal_mask,
    flash_attention,
    flash_attention_fa2,
    linear_attention,
    linear_attention_recurrent,
    merge_softmax_states,
    online_softmax,
    plot_attention,
    softmax_attention,
)

TOL = {"atol": 1e-5, "rtol": 1e-5}


def _qkv(lead=(2, 3), n_q=9, n_k=9, d=8, d_v=5, seed=0, dtype=torch.float32, grad=False):
    g = torch.Generator().manual_seed(seed)
    q = torch.randn(*lead, n_q, d, generator=g, dtype=dtype)
    k = torch.randn(*lead, n_k, d, generator=g, dtype=dtype)
    v = torch.randn(*lead, n_k, d_v, generator=g, dtype=dtype)
    return tuple(t.requires_grad_(grad) for t in (q, k, v))


def _sdpa(q, k, v, causal, scale=None):
    """torch's SDPA with our bottom-right causal convention passed as an explicit mask."""
    mask = causal_mask(q.shape[-2], k.shape[-2]) if causal else None
    return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, scale=scale)


# --- the reference ----------------------------------------------------------------------------
@pytest.mark.parametrize("causal", [False, True])
def test_softmax_attention_matches_sdpa(causal):
    q, k, v = _qkv(n_q=6, n_k=11)
    torch.testing.assert_close(softmax_attention(q, k, v, causal=causal), _sdpa(q, k, v, causal), **TOL)


def test_causal_square_is_sdpa_is_causal():
    q, k, v = _qkv(n_q=13, n_k=13)
    ref = F.scaled_dot_product_attention(q, k, v, is_causal=True)
    torch.testing.assert_close(flash_attention(q, k, v, causal=True, block_q=4, block_k=5), ref, **TOL)
    torch.testing.assert_close(softmax_attention(q, k, v, causal=True), ref, **TOL)


def test_causal_mask_bottom_right():
    m = causal_mask(2, 4)
    assert m.tolist() == [[True, True, True, False], [True, True, True, True]]
    assert causal_mask(3, 1).tolist() == [[False], [False], [True]]


# --- online softmax and the merge --------------------------------------------------------------
@settings(max_examples=20, deadline=None)
@given(n=st.integers(1, 40), block=st.integers(1, 50), rows=st.integers(1, 3), shift=st.floats(-50, 50))
def test_online_softmax_matches_torch(n, block, rows, shift):
    x = torch.randn(rows, n, generator=torch.Generator().manual_seed(n * 7 + block)) * 5 + shift
    torch.testing.assert_close(online_softmax(x, block_size=block), torch.softmax(x, -1), **TOL)


def test_online_softmax_does_not_overflow():
    x = torch.tensor([[1000.0, 1001.0, -1000.0, 999.0]])
    out = online_softmax(x, block_size=1)
    assert torch.isfinite(out).all()
    torch.testing.assert_close(out, torch.softmax(x, -1), **TOL)


def _state(x):
    m = x.max()
    return m, torch.exp(x - m).sum()


@settings(max_examples=20, deadline=None)
@given(sizes=st.lists(st.integers(1, 6), min_size=3, max_size=3), seed=st.integers(0, 1000))
def test_merge_is_associative_and_gives_logsumexp(sizes, seed):
    x = torch.randn(sum(sizes), generator=torch.Generator().manual_seed(seed)) * 10
    a, b, c = torch.split(x, sizes)
    sa, sb, sc = _state(a), _state(b), _state(c)
    left = merge_softmax_states(*merge_softmax_states(*sa, *sb), *sc)
    right = merge_softmax_states(*sa, *merge_softmax_states(*sb, *sc))
    swapped = merge_softmax_states(*sc, *merge_softmax_states(*sb, *sa))
    for m, l in (left, right, swapped):
        torch.testing.assert_close(m + l.log(), torch.logsumexp(x, 0), **TOL)
        assert m == x.max()


def test_merge_identity_is_the_empty_state():
    empty = (torch.tensor(float("-inf")), torch.tensor(0.0))
    m, l = merge_softmax_states(*empty, *empty)
    assert m == float("-inf") and l == 0  # no NaN from -inf - -inf
    s = _state(torch.tensor([0.5, 2.0]))
    torch.testing.assert_close(merge_softmax_states(*empty, *s), s)


# --- flash attention: forward ------------------------------------------------------------------
@settings(max_examples=20, deadline=None)
@given(
    n_q=st.integers(1, 24), n_k=st.integers(1, 24), d=st.integers(1, 9), d_v=st.integers(1, 6),
    block_q=st.integers(1, 12), block_k=st.integers(1, 12), causal=st.booleans(),
    lead=st.sampled_from([(), (2,), (2, 3)]),
)
def test_flash_matches_sdpa_and_logsumexp(n_q, n_k, d, d_v, block_q, block_k, causal, lead):
    q, k, v = _qkv(lead, n_q, n_k, d, d_v, seed=n_q + 41 * n_k)
    out, lse = flash_attention(q, k, v, causal=causal, block_q=block_q, block_k=block_k, return_lse=True)
    assert out.shape == (*lead, n_q, d_v) and lse.shape == (*lead, n_q)
    s = (q @ k.transpose(-2, -1)) / math.sqrt(d)
    if causal:
        mask = causal_mask(n_q, n_k)
        s = s.masked_fill(~mask, float("-inf"))
        seen = mask.any(-1)  # rows that see at least one key (all of them when n_q <= n_k)
    else:
        seen = torch.ones(n_q, dtype=torch.bool)
    torch.testing.assert_close(out[..., seen, :], _sdpa(q, k, v, causal)[..., seen, :], **TOL)
    torch.testing.assert_close(lse[..., seen], torch.logsumexp(s, -1)[..., seen], **TOL)
    # the rows that see nothing: output 0, lse -inf (the empty state)
    assert (out[..., ~seen, :] == 0).all() and torch.isneginf(lse[..., ~seen]).all()


def test_flash_default_blocks_and_scale():
    q, k, v = _qkv(n_q=70, n_k=130, d=16)
    torch.testing.assert_close(flash_attention(q, k, v, scale=0.3), _sdpa(q, k, v, False, scale=0.3), **TOL)


def test_flash_several_key_tiles_and_causal_skip():
    q, k, v = _qkv(lead=(1,), n_q=50, n_k=300, d=4)
    for causal in (False, True):
        out = flash_attention(q, k, v, causal=causal, block_q=16, block_k=64)
        torch.testing.assert_close(out, _sdpa(q, k, v, causal), **TOL)


def test_flash_float64():
    q, k, v = _qkv(n_q=5, n_k=12, dtype=torch.float64)
    out = flash_attention(q, k, v, causal=True, block_q=2, block_k=5)
    assert out.dtype == torch.float64
    torch.testing.assert_close(out, _sdpa(q, k, v, True), atol=1e-12, rtol=1e-12)


def test_tile_states_end_at_the_answer():
    q, k, v = _qkv(lead=(), n_q=4, n_k=23)
    states = attention_tile_states(q, k, v, block_k=5)
    assert [s["keys"] for s in states][-1] == (20, 23) and len(states) == 5
    torch.testing.assert_close(states[-1]["o"], softmax_attention(q, k, v), **TOL)
    s = (q @ k.T) / math.sqrt(q.shape[-1])
    torch.testing.assert_close(states[-1]["m"] + states[-1]["l"].log(), torch.logsumexp(s, -1), **TOL)
    # after tile t, the state is exactly that of attention over the first keys only
    j1 = states[1]["keys"][1]
    torch.testing.assert_close(states[1]["o"], softmax_attention(q, k[:j1], v[:j1]), **TOL)



# --- the FlashAttention-2 accumulator form -----------------------------------------------------
@settings(max_examples=20, deadline=None)
@given(
    n_q=st.integers(1, 20), n_k=st.integers(1, 20), d=st.integers(1, 8), d_v=st.integers(1, 5),
    block_q=st.integers(1, 10), block_k=st.integers(1, 10), causal=st.booleans(),
    lead=st.sampled_from([(), (2,), (2, 3)]),
)
def test_fa2_accumulator_matches_torch_softmax_attention(n_q, n_k, d, d_v, block_q, block_k, causal, lead):
    q, k, v = _qkv(lead, n_q, n_k, d, d_v, seed=3 * n_q + 17 * n_k)
    out, lse = flash_attention_fa2(q, k, v, causal=causal, block_q=block_q, block_k=block_k)
    # the independent reference: torch.softmax over the full (masked) score matrix
    s = (q @ k.transpose(-2, -1)) / math.sqrt(d)
    seen = torch.ones(n_q, dtype=torch.bool)
    if causal:
        mask = causal_mask(n_q, n_k)
        s = s.masked_fill(~mask, float("-inf"))
        seen = mask.any(-1)
    ref = torch.softmax(s[..., seen, :], -1) @ v
    torch.testing.assert_close(out[..., seen, :], ref, **TOL)
    torch.testing.assert_close(lse[..., seen], torch.logsumexp(s, -1)[..., seen], **TOL)
    assert (out[..., ~seen, :] == 0).all() and torch.isneginf(lse[..., ~seen]).all()


def test_fa2_accumulator_large_scores_float64_and_log_merge_agree():
    q, k, v = _qkv(n_q=11, n_k=29, d=6)
    # scores in the thousands: exp would overflow without the running max
    out, lse = flash_attention_fa2(q, k, v, scale=400.0, block_q=4, block_k=5)
    torch.testing.assert_close(out, _sdpa(q, k, v, False, scale=400.0), **TOL)
    assert torch.isfinite(lse).all() and lse.abs().max() > 100
    # the two merges (accumulator and log-space) of the same tiles agree
    out2, lse2 = flash_attention(q, k, v, causal=True, block_q=4, block_k=5, return_lse=True)
    out1, lse1 = flash_attention_fa2(q, k, v, causal=True, block_q=4, block_k=5)
    torch.testing.assert_close(out1, out2, **TOL)
    torch.testing.assert_close(lse1, lse2, **TOL)
    q, k, v = _qkv(n_q=5, n_k=12, dtype=torch.float64)
    out, _ = flash_attention_fa2(q, k, v, causal=True, block_q=2, block_k=5)
    assert out.dtype == torch.float64
    torch.testing.assert_close(out, _sdpa(q, k, v, True), atol=1e-12, rtol=1e-12)
    out, lse = flash_attention_fa2(*(t.to("meta") for t in (q, k, v)), causal=True, block_q=2, block_k=5)
    assert out.device.type == "meta" and out.shape == (2, 3, 5, 5) and lse.shape == (2, 3, 5)


def test_fa2_accumulator_bad_input():
    q, k, v = _qkv(n_q=4, n_k=6)
    with pytest.raises(ValueError, match="head dim"):
        flash_attention_fa2(q, k[..., :3], v)
    with pytest.raises(TypeError, match="floating-point"):
        flash_attention_fa2(q.long(), k, v)
    for name in ("block_q", "block_k"):
        with pytest.raises(ValueError, match=name):
            flash_attention_fa2(q, k, v, **{name: 0})
        with pytest.raises(TypeError, match=name):
            flash_attention_fa2(q, k, v, **{name: 1.5})
    with pytest.raises(TypeError, match="scale"):
        flash_attention_fa2(q, k, v, scale="big")

# --- flash attention: query blocks on worker threads ----------------------------------------
@pytest.mark.parametrize("n_q,n_k,causal", [(37, 37, False), (37, 37, True), (19, 53, True), (53, 19, True)])
def test_flash_worker_threads_match_sdpa_and_restore_threads(monkeypatch, n_q, n_k, causal):
    """The threaded path (every size counts as large, torch has 2 threads) gives the same
    forward, log-sum-exp and gradients, runs its blocks off the calling thread with torch at one
    thread, and leaves torch's thread count as it found it."""
    monkeypatch.setattr(attention, "_PARALLEL_MIN_ENTRIES", 0)
    seen = []  # (thread, torch threads) of every query block
    block = attention._flash_query_block

    def spy(*args, **kwargs):
        seen.append((threading.get_ident(), torch.get_num_threads()))
        return block(*args, **kwargs)

    monkeypatch.setattr(attention, "_flash_query_block", spy)
    saved = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        q, k, v = _qkv(n_q=n_q, n_k=n_k, grad=True)
        out, lse = flash_attention(q, k, v, causal=causal, block_q=8, block_k=16, return_lse=True)
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(saved)
    assert len(seen) == math.ceil(n_q / 8)  # the six heads' small tiles share one job per block
    assert all(t != threading.get_ident() and n == 1 for t, n in seen)
    s = (q @ k.transpose(-2, -1)) / math.sqrt(q.shape[-1])
    rows = slice(None)
    if causal:
        mask = causal_mask(n_q, n_k)
        s = s.masked_fill(~mask, float("-inf"))
        rows = mask.any(-1)
    torch.testing.assert_close(lse[..., rows], torch.logsumexp(s, -1)[..., rows], **TOL)
    ref = softmax_attention(q, k, v, causal=causal)
    torch.testing.assert_close(out, ref, **TOL)
    g = torch.randn_like(out)
    ours = torch.autograd.grad((out * g).sum(), (q, k, v))
    theirs = torch.autograd.grad((ref * g).sum(), (q, k, v))
    for a, b in zip(ours, theirs):
        torch.testing.assert_close(a, b, **TOL)


def test_flash_worker_error_propagates_and_restores_threads(monkeypatch):
    monkeypatch.setattr(attention, "_PARALLEL_MIN_ENTRIES", 0)

    def broken(*args, **kwargs):
        raise RuntimeError("tile failed")

    monkeypatch.setattr(attention, "_flash_query_block", broken)
    saved = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        with pytest.raises(RuntimeError, match="tile failed"):
            flash_attention(*_qkv(n_q=20, n_k=20), block_q=4)
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(saved)


def test_flash_one_thread_stays_on_the_calling_thread(monkeypatch):
    monkeypatch.setattr(attention, "_PARALLEL_MIN_ENTRIES", 0)
    threads = []
    block = attention._flash_query_block

    def spy(*args, **kwargs):
        threads.append(threading.get_ident())
        return block(*args, **kwargs)

    monkeypatch.setattr(attention, "_flash_query_block", spy)
    assert torch.get_num_threads() == 1  # tests/conftest.py
    flash_attention(*_qkv(n_q=20, n_k=20), block_q=4)
    assert threads and set(threads) == {threading.get_ident()}


# --- flash attention: backward -----------------------------------------------------------------
@pytest.mark.parametrize("n_q,n_k,causal", [(9, 9, False), (9, 9, True), (6, 15, True), (15, 6, True), (7, 20, False)])
def test_flash_gradients_match_sdpa(n_q, n_k, causal):
    q, k, v = _qkv(n_q=n_q, n_k=n_k, grad=True)
    g = torch.randn(2, 3, n_q, 5, generator=torch.Generator().manual_seed(1))
    ours = torch.autograd.grad((flash_attention(q, k, v, causal=causal, block_q=4, block_k=3) * g).sum(), (q, k, v))
    ref = softmax_attention(q, k, v, causal=causal)  # autograd through the naive reference
    if causal and n_q > n_k:  # SDPA yields NaN on the rows that see no key; compare to naive
        theirs = torch.autograd.grad((ref * g).sum(), (q, k, v))
    else:
        theirs = torch.autograd.grad((_sdpa(q, k, v, causal) * g).sum(), (q, k, v))
    for a, b in zip(ours, theirs):
        torch.testing.assert_close(a, b, **TOL)


def test_flash_gradcheck_float64():
    q, k, v = _qkv(lead=(2,), n_q=5, n_k=7, d=3, d_v=2, dtype=torch.float64, grad=True)
    fn = lambda q, k, v: flash_attention(q, k, v, causal=True, block_q=2, block_k=3)
    assert torch.autograd.gradcheck(fn, (q, k, v))


# --- devices -----------------------------------------------------------------------------------
def test_everything_runs_on_meta():
    q, k, v = (t.to("meta") for t in _qkv(n_q=10, n_k=12))
    for causal in (False, True):
        out, lse = flash_attention(q, k, v, causal=causal, block_q=3, block_k=5, return_lse=True)
        assert out.device.type == "meta" and out.shape == (2, 3, 10, 5) and lse.shape == (2, 3, 10)
        assert softmax_attention(q, k, v, causal=causal).device.type == "meta"
    qg = q.clone().requires_grad_(True)
    flash_attention(qg, k, v, causal=True, block_q=4, block_k=4).sum().backward()
    assert qg.grad.device.type == "meta"
    assert online_softmax(q, block_size=3).device.type == "meta"
    assert merge_softmax_states(q, q, k[..., :10, :], k[..., :10, :])[0].device.type == "meta"
    assert attention_tile_states(q, k, v, block_k=5)[-1]["o"].device.type == "meta"
    qs, ks, vs = (t[..., :10, :] for t in (q, k, v))
    assert linear_attention(qs, ks, vs, causal=True, chunk_size=4).device.type == "meta"
    assert linear_attention(q, k, v).device.type == "meta"
    assert linear_attention_recurrent(qs, ks, vs).device.type == "meta"


# --- bad input ---------------------------------------------------------------------------------
@pytest.mark.parametrize("fn", [softmax_attention, flash_attention, linear_attention])
def test_bad_input(fn):
    q, k, v = _qkv(n_q=4, n_k=6)
    with pytest.raises(ValueError, match="head dim"):
        fn(q, k[..., :3], v)
    with pytest.raises(ValueError, match="same length"):
        fn(q, k, v[..., :5, :])
    with pytest.raises(ValueError, match="leading"):
        fn(q, k[:1], v[:1])
    with pytest.raises(TypeError, match="floating-point"):
        fn(q.long(), k, v)
    with pytest.raises(TypeError, match="share a dtype"):
        fn(q, k.double(), v)
    with pytest.raises(TypeError, match="torch.Tensor"):
        fn(q.tolist(), k, v)
    with pytest.raises(ValueError, match="at least 2 dims"):
        fn(q[0, 0, 0], k, v)


def test_bad_blocks_and_scale():
    q, k, v = _qkv(n_q=4, n_k=6)
    for name in ("block_q", "block_k"):
        with pytest.raises(ValueError, match=name):
            flash_attention(q, k, v, **{name: 0})
        with pytest.raises(ValueError, match=name):
            flash_attention(q, k, v, **{name: -3})
        with pytest.raises(TypeError, match=name):
            flash_attention(q, k, v, **{name: 2.0})
    with pytest.raises(TypeError, match="scale"):
        flash_attention(q, k, v, scale=float("nan"))
    with pytest.raises(ValueError, match="block_size"):
        online_softmax(q, block_size=0)
    with pytest.raises(TypeError, match="floating-point"):
        online_softmax(torch.arange(5), block_size=2)
    with pytest.raises(ValueError, match="non-empty"):
        online_softmax(torch.zeros(3, 0), block_size=2)
    with pytest.raises(ValueError, match="block_k"):
        attention_tile_states(q, k, v, block_k=0)
    with pytest.raises(ValueError, match="n_q"):
        causal_mask(-1, 3)


# --- linear attention --------------------------------------------------------------------------
def _phi(x):
    return F.elu(x) + 1


U32 = torch.finfo(torch.float32).eps / 2  # float32 unit roundoff, 2**-24


def _brute_linear(q, k, v, causal, eps=1e-6, phi=_phi):
    """Quadratic form in float64: weights phi(q_i).phi(k_j), masked to j <= i, over row sum + eps.

    Also returns, per output entry, a bound on the forward error of any float32 evaluation of
    linear attention on these inputs. Every weight a_ij = phi(q_i).phi(k_j) is a sum of d
    non-negative products, and every form (quadratic, chunked, recurrent) adds the terms
    phi(q_i)_r phi(k_j)_r v_j in some order with at most n + d + 2 roundings each. The feature
    map adds more: for x < 0, float32 computes phi(x) = (e^x - 1) + 1, and the final addition
    cancels, so phi(x) carries a relative error up to about c u with c = e^(-x) (150 u at
    x = -5). So the numerator is off by at most gamma * sum_j a_ij |v_j| and the denominator
    by gamma * den, gamma = (n + d + 2 + 2c) u, c = max(1, e^(-min x)); the quotient by at
    most 2 gamma. We allow 4 gamma (about 1e-5 |v| for these randn inputs): a wrong mask,
    chunk boundary or state update moves outputs by O(0.1), and dropping the eps guard by 5e-5
    in the @example below.
    """
    q, k, v = (t.double() for t in (q, k, v))
    a = phi(q) @ phi(k).transpose(-2, -1)  # (..., N_q, N_k)
    if causal:
        a = a * torch.ones(q.shape[-2], k.shape[-2], dtype=a.dtype).tril()
    den = a.sum(-1, keepdim=True) + eps  # minilib guards the denominator with the same eps
    ref = (a @ v) / den
    c = math.exp(max(0.0, -min(q.min().item(), k.min().item())))  # conditioning of elu + 1
    gamma = (k.shape[-2] + q.shape[-1] + 2 + 2 * c) * U32
    bound = 4 * gamma * (a @ v.abs()) / den + U32 * ref.abs()
    return ref, bound


def _assert_within(out, ref, bound):
    err = (out.double() - ref).abs()
    assert (err <= bound).all(), f"max error {err.max():.2e}, max error/bound {(err / bound).max():.2f}"


@settings(max_examples=15, deadline=None)
@given(n=st.integers(1, 30), d=st.integers(1, 6), chunk=st.integers(1, 12), lead=st.sampled_from([(), (2,), (2, 2)]))
@example(n=12, d=1, chunk=1, lead=(2, 2))  # a small phi(q) (0.05): the eps guard alone moves it by 5e-5
def test_causal_linear_equals_recurrent_and_brute_force(n, d, chunk, lead):
    q, k, v = _qkv(lead, n, n, d, 3, seed=n * 13 + d)
    ref, bound = _brute_linear(q, k, v, True)
    _assert_within(linear_attention(q, k, v, causal=True, chunk_size=chunk), ref, bound)
    _assert_within(linear_attention_recurrent(q, k, v), ref, bound)
    # in float64 the three forms agree to rounding (1e-12): this catches a missing or doubled eps
    q64, k64, v64 = (t.double() for t in (q, k, v))
    torch.testing.assert_close(linear_attention(q64, k64, v64, causal=True, chunk_size=chunk), ref, atol=1e-12, rtol=1e-12)
    torch.testing.assert_close(linear_attention_recurrent(q64, k64, v64), ref, atol=1e-12, rtol=1e-12)
    no_eps, _ = _brute_linear(q, k, v, True, eps=0.0)
    torch.testing.assert_close(linear_attention(q64, k64, v64, causal=True, chunk_size=chunk, eps=0.0), no_eps,
                               atol=1e-12, rtol=1e-12)


def test_noncausal_linear_equals_brute_force():
    q, k, v = _qkv(n_q=7, n_k=12)
    _assert_within(linear_attention(q, k, v), *_brute_linear(q, k, v, False))
    q64, k64, v64 = (t.double() for t in (q, k, v))
    torch.testing.assert_close(linear_attention(q64, k64, v64), _brute_linear(q, k, v, False)[0], atol=1e-12, rtol=1e-12)


def _phi_two_sided(x):
    """r = 2d non-negative features, so the state is 2d x d_v, not d x d_v."""
    return torch.cat([F.elu(x) + 1, F.elu(-x) + 1], -1)


def test_linear_attention_feature_map_with_more_features_than_d():
    q, k, v = _qkv(n_q=10, n_k=10, d=3, d_v=4, seed=5)
    for causal, out in [(False, linear_attention(q, k, v, feature_map=_phi_two_sided)),
                        (True, linear_attention(q, k, v, causal=True, chunk_size=3, feature_map=_phi_two_sided)),
                        (True, linear_attention_recurrent(q, k, v, feature_map=_phi_two_sided))]:
        ref, _ = _brute_linear(q, k, v, causal, phi=_phi_two_sided)
        torch.testing.assert_close(out.double(), ref, **TOL)


def test_linear_attention_custom_map_and_errors():
    q, k, v = _qkv(n_q=6, n_k=6)
    ours = linear_attention(q, k, v, feature_map=_phi)
    torch.testing.assert_close(ours, linear_attention(q, k, v), **TOL)
    with pytest.raises(ValueError, match="feature_map"):
        linear_attention(q, k, v, feature_map="tanh")
    with pytest.raises(ValueError, match="N_q == N_k"):
        linear_attention(q[..., :4, :], k, v, causal=True)
    with pytest.raises(ValueError, match="N_q == N_k"):
        linear_attention_recurrent(q[..., :4, :], k, v)
    with pytest.raises(ValueError, match="chunk_size"):
        linear_attention(q, k, v, causal=True, chunk_size=0)


# --- drawing and measuring ---------------------------------------------------------------------
def test_plot_attention():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    w = torch.softmax(torch.randn(5, 5), -1)
    ax = plot_attention(w, query=2, title="w", tokens=list("abcde"))
    assert ax.get_title() == "w" and len(ax.patches) == 1
    plt.close(ax.figure)
    with pytest.raises(ValueError, match="2-D"):
        plot_attention(torch.ones(3))
    with pytest.raises(ValueError, match="query"):
        plot_attention(w, query=9)
    plt.close("all")


def test_bench_helpers():
    assert bench.time_call(lambda: None, repeats=2) >= 0
    with pytest.raises(ValueError, match="repeats"):
        bench.time_call(lambda: None, repeats=0)
    with pytest.raises(TypeError, match="callable"):
        bench.extra_peak_memory(3)
    result, extra = bench.extra_peak_memory(lambda: torch.ones(2_000_000))  # 8 MB
    assert result.shape == (2_000_000,)
    if bench.memory_supported():
        assert 7e6 < extra < 12e6
    else:
        assert extra is None


def test_time_interleaved_round_robin_and_medians(monkeypatch):
    # a fake clock that only the timed functions advance: each call's duration is known exactly
    clock = {"now": 0.0}
    monkeypatch.setattr(bench, "time", types.SimpleNamespace(perf_counter=lambda: clock["now"]))
    durations = {"a": iter([100.0, 1.0, 5.0, 3.0]), "b": iter([100.0, 2.0, 2.0, 9.0])}  # 1st: warm-up
    calls = []

    def timed(name):
        def fn():
            calls.append(name)
            clock["now"] += next(durations[name])
        return fn

    medians = bench.time_interleaved({"a": timed("a"), "b": timed("b")}, repeats=3, warmup=1)
    assert calls == ["a", "b"] * 4  # round after round, warm-up round included
    assert medians == {"a": 3.0, "b": 2.0}  # medians of the timed rounds only


def test_time_interleaved_rejects_bad_input():
    with pytest.raises(TypeError, match="fns"):
        bench.time_interleaved({})
    with pytest.raises(TypeError, match=r"fns\['x'\]"):
        bench.time_interleaved({"x": 3})
    with pytest.raises(ValueError, match="repeats"):
        bench.time_interleaved({"x": lambda: None}, repeats=0)
    with pytest.raises(ValueError, match="warmup"):
        bench.time_interleaved({"x": lambda: None}, warmup=-1)


def test_flash_docstring_states_the_default_blocks():
    doc = flash_attention.__doc__
    assert f"``DEFAULT_BLOCK_Q`` = {attention.DEFAULT_BLOCK_Q}" in doc
    assert f"``DEFAULT_BLOCK_K`` = {attention.DEFAULT_BLOCK_K}" in doc


# ---------------------------------------------------------------------------------------------
# positive random features (linear-attention chapter, Performer depth section)
# ---------------------------------------------------------------------------------------------
from minilib.attention import positive_random_features  # noqa: E402


def _pair(d, scale, seed):
    g = torch.Generator().manual_seed(seed)
    return (scale * torch.randn(d, generator=g, dtype=torch.float64) for _ in range(2))


@pytest.mark.parametrize("d, scale, seed", [(4, 0.3, 0), (8, 0.25, 1), (16, 0.15, 2)])
def test_prf_kernel_is_unbiased_and_has_the_derived_variance(d, scale, seed):
    q, k = _pair(d, scale, seed)
    n = 400_000
    w = torch.randn(n, d, generator=torch.Generator().manual_seed(100 + seed), dtype=torch.float64)
    # n single-feature estimates Y_r = exp(w_r^T q - |q|^2/2) exp(w_r^T k - |k|^2/2): undo the 1/sqrt(n) scaling
    y = n * positive_random_features(q, w) * positive_random_features(k, w)
    kappa = torch.exp(q @ k)  # closed-form reference
    se = y.std() / math.sqrt(n)
    assert abs(y.mean() - kappa) < 4 * se
    # (linear-attention-prf-var): Var Y = exp(2 q^T k) (exp(|q + k|^2) - 1); (Y - kappa)^2 has mean Var Y
    var = torch.exp(2 * q @ k) * torch.expm1(((q + k) ** 2).sum())
    dev2 = (y - kappa) ** 2
    assert abs(dev2.mean() - var) < 5 * dev2.std() / math.sqrt(n)
    # the m-feature estimate phi(q)^T phi(k) is the mean of m of them: variance Var Y / m
    m, reps = 32, 4000
    est = torch.stack([positive_random_features(q, wb) @ positive_random_features(k, wb)
                       for wb in w[: m * reps].reshape(reps, m, d)])
    # sample variance of 4000 values: relative standard error about sqrt(2 / 4000) * sqrt(kurtosis factor) < 0.1
    assert abs(est.var() / (var / m) - 1) < 0.15


def test_prf_matches_brute_force_and_follows_dtype():
    g = torch.Generator().manual_seed(3)
    x, w = torch.randn(2, 5, 6, generator=g), torch.randn(7, 6, generator=g)
    out = positive_random_features(x, w)
    assert out.shape == (2, 5, 7) and out.dtype == torch.float32 and bool((out > 0).all())
    brute = torch.empty(2, 5, 7, dtype=torch.float64)
    for idx in ((a, b) for a in range(2) for b in range(5)):
        xi = x[idx].double()
        for r in range(7):
            brute[idx][r] = math.exp(float(w[r].double() @ xi) - 0.5 * float(xi @ xi)) / math.sqrt(7)
    torch.testing.assert_close(out.double(), brute, rtol=1e-5, atol=0)
    meta = positive_random_features(torch.empty(3, 4, device="meta"), torch.empty(5, 4, device="meta"))
    assert meta.shape == (3, 5) and meta.device.type == "meta"


def test_prf_opposite_pair_is_exact_and_features_bounded():
    # q = -k: every single-feature estimate equals exp(-|q|^2) = exp(q^T k), zero variance
    g = torch.Generator().manual_seed(4)
    q, w = torch.randn(5, generator=g, dtype=torch.float64), torch.randn(64, 5, generator=g, dtype=torch.float64)
    y = 64 * positive_random_features(q, w) * positive_random_features(-q, w)
    torch.testing.assert_close(y, torch.full_like(y, math.exp(-float(q @ q))))
    # every feature is at most exp(|w_r|^2 / 2) / sqrt(m), whatever x is
    x = 10 * torch.randn(50, 5, generator=g, dtype=torch.float64)
    assert bool((positive_random_features(x, w) <= torch.exp(0.5 * (w * w).sum(-1)) / 8 * (1 + 1e-12)).all())


def test_prf_linear_attention_approaches_softmax_attention():
    g = torch.Generator().manual_seed(5)
    # inputs of norm about 1.4: tau |q + k|^2 is about 1, so the relative kernel error with 20000 features
    # is about sqrt((e - 1) / 20000) = 0.01 (at unit-variance entries it would be ten times larger)
    q, k, v = (0.5 * torch.randn(1, 12, 8, generator=g, dtype=torch.float64) for _ in range(3))
    tau = 1 / math.sqrt(8)
    w = torch.randn(20_000, 8, generator=g, dtype=torch.float64)
    phi = lambda x: positive_random_features(math.sqrt(tau) * x, w)  # noqa: E731
    approx = linear_attention(q, k, v, feature_map=phi, eps=0.0)
    exact = softmax_attention(q, k, v)
    # the outputs are averages of values of size ~0.5 with weights off by ~1% (max error 5e-3 with this seed);
    # 0.02 catches a wrong temperature (tau = 1 gives 0.12, tau = 0, i.e. uniform weights, gives 0.06)
    assert (approx - exact).abs().max() < 0.02


def test_prf_bad_input():
    x, w = torch.randn(3, 4), torch.randn(5, 4)
    with pytest.raises(TypeError, match="x"):
        positive_random_features([1.0, 2.0], w)
    with pytest.raises(TypeError, match="w"):
        positive_random_features(x, torch.ones(5, 4, dtype=torch.long))
    with pytest.raises(ValueError, match=r"w must have shape \(m, d\)"):
        positive_random_features(x, torch.randn(4))
    with pytest.raises(ValueError, match=r"w must have shape \(m, d\)"):
        positive_random_features(x, torch.randn(0, 4))
    with pytest.raises(ValueError, match="d = w.shape"):
        positive_random_features(torch.randn(3, 5), w)
    with pytest.raises(TypeError, match="dtype"):
        positive_random_features(x.double(), w)
    with pytest.raises(ValueError, match="device"):
        positive_random_features(x, torch.empty(5, 4, device="meta"))
