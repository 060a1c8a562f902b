"""Tests for minilib.packing: packing bookkeeping, and varlen attention against a hand-written
masked softmax and against per-sequence torch SDPA."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from minilib.packing import block_diagonal_mask, pack, pad, segment_ids, unpack, varlen_attention


def _masked_attention(q, k, v, mask):
    """Reference: softmax(q k^T / sqrt(d)) v with disallowed pairs set to -inf, by hand."""
    scores = q @ k.transpose(-1, -2) / math.sqrt(q.shape[-1])
    scores = scores.masked_fill(~mask, float("-inf"))
    return torch.softmax(scores, dim=-1) @ v


@settings(max_examples=40, deadline=None)
@given(st.lists(st.integers(1, 9), min_size=1, max_size=5))
def test_pack_bookkeeping(lengths):
    seqs = [torch.arange(n) + 100 * i for i, n in enumerate(lengths)]
    tokens, cu, pos = pack(seqs)
    assert tokens.tolist() == [t for s in seqs for t in s.tolist()]
    assert cu.tolist() == [sum(lengths[:i]) for i in range(len(lengths) + 1)]
    assert pos.tolist() == [p for n in lengths for p in range(n)]
    assert [s.tolist() for s in unpack(tokens, cu)] == [s.tolist() for s in seqs]
    assert segment_ids(cu).tolist() == [i for i, n in enumerate(lengths) for _ in range(n)]


@settings(max_examples=30, deadline=None)
@given(st.lists(st.integers(1, 7), min_size=1, max_size=4), st.booleans(), st.integers(0, 1000))
def test_varlen_equals_block_masked_softmax(lengths, causal, seed):
    g = torch.Generator().manual_seed(seed)
    n = sum(lengths)
    q, k = torch.randn(2, 3, n, 4, generator=g, dtype=torch.float64).unbind(0)
    v = torch.randn(3, n, 5, generator=g, dtype=torch.float64)
    cu = torch.tensor([0] + [sum(lengths[: i + 1]) for i in range(len(lengths))])
    # an independent mask: pairs in the same sequence (by explicit loops), lower triangle if causal
    mask = torch.zeros(n, n, dtype=torch.bool)
    for b in range(len(lengths)):
        s, e = int(cu[b]), int(cu[b + 1])
        for i in range(s, e):
            for j in range(s, e):
                mask[i, j] = (j <= i) or not causal
    assert torch.equal(block_diagonal_mask(cu, causal=causal), mask)
    out = varlen_attention(q, k, v, cu, causal=causal)
    assert torch.allclose(out, _masked_attention(q, k, v, mask), atol=1e-12)


def test_varlen_equals_sdpa_one_sequence_at_a_time():
    g = torch.Generator().manual_seed(0)
    seqs_q = [torch.randn(2, n, 8, generator=g) for n in (5, 1, 12, 3)]
    seqs_k = [torch.randn_like(x) for x in seqs_q]
    seqs_v = [torch.randn(2, x.shape[1], 6, generator=g) for x in seqs_q]
    _, cu, _ = pack([torch.zeros(x.shape[1]) for x in seqs_q])
    out = varlen_attention(torch.cat(seqs_q, 1), torch.cat(seqs_k, 1), torch.cat(seqs_v, 1), cu)
    ref = torch.cat([F.scaled_dot_product_attention(a, b, c, is_causal=True)
                     for a, b, c in zip(seqs_q, seqs_k, seqs_v)], dim=1)
    assert torch.allclose(out, ref, atol=1e-6)


def test_padded_and_packed_agree_with_key_padding_mask():
    g = torch.Generator().manual_seed(1)
    seqs = [torch.randn(n, 4, generator=g) for n in (6, 2, 4)]
    packed, cu, _ = pack(seqs)
    out_packed = varlen_attention(packed, packed, packed, cu)
    x, lengths = pad(seqs)  # (B, L, 4)
    L = x.shape[1]
    keep = torch.arange(L)[None, :] < lengths[:, None]  # (B, L)
    mask = keep[:, None, :] & torch.ones(L, L, dtype=torch.bool).tril()  # (B, L, L)
    out_pad = F.scaled_dot_product_attention(x, x, x, attn_mask=mask)
    assert torch.allclose(out_pad[keep], out_packed, atol=1e-6)


def test_gradients_flow_only_within_sequences():
    q = torch.randn(7, 4, requires_grad=True)
    cu = torch.tensor([0, 3, 7])
    out = varlen_attention(q, q, q, cu)
    out[5].sum().backward()  # token 5 is in sequence 1
    assert torch.all(q.grad[:3] == 0) and q.grad[3:].abs().sum() > 0


def test_pack_bad_inputs():
    with pytest.raises(TypeError, match="non-empty list"):
        pack([])
    with pytest.raises(TypeError, match="non-empty list"):
        pack(torch.zeros(3))
    with pytest.raises(ValueError, match="trailing shape"):
        pack([torch.zeros(2, 2), torch.zeros(2, 3)])
    with pytest.raises(ValueError, match="non-empty tensor"):
        pack([torch.zeros(0)])
    with pytest.raises(ValueError, match="non-empty tensor"):
        pack([torch.tensor(1.0)])
    with pytest.raises(ValueError, match="dtype"):
        pack([torch.zeros(2), torch.zeros(2, dtype=torch.int64)])


def test_varlen_bad_inputs():
    q = torch.randn(5, 4)
    cu = torch.tensor([0, 2, 5])
    with pytest.raises(TypeError, match="floating-point"):
        varlen_attention(q.long(), q, q, cu)
    with pytest.raises(ValueError, match="same shape"):
        varlen_attention(q, q[:, :3], q, cu)
    with pytest.raises(ValueError, match="v must have"):
        varlen_attention(q, q, q[:4], cu)
    with pytest.raises(TypeError, match="integer"):
        varlen_attention(q, q, q, cu.float())
    with pytest.raises(ValueError, match="end at"):
        varlen_attention(q, q, q, torch.tensor([0, 2, 4]))
    with pytest.raises(ValueError, match="start at 0"):
        varlen_attention(q, q, q, torch.tensor([1, 2, 5]))
    with pytest.raises(ValueError, match="strictly increasing"):
        varlen_attention(q, q, q, torch.tensor([0, 2, 2, 5]))
    with pytest.raises(ValueError, match="B >= 1"):
        varlen_attention(q, q, q, torch.tensor([0]))


# --- remove-padding: unpad_input / pad_input (issue 16) ------------------------------------

from minilib.packing import pad_input, unpad_input  # noqa: E402


def _random_mask(g, B, L, right_padded):
    """A (B, L) bool mask with at least one real token per row."""
    if right_padded:
        lengths = torch.randint(1, L + 1, (B,), generator=g)
        return torch.arange(L)[None, :] < lengths[:, None]
    mask = torch.rand(B, L, generator=g) < 0.6
    mask[torch.arange(B), torch.randint(0, L, (B,), generator=g)] = True
    return mask


@settings(max_examples=40, deadline=None)
@given(st.integers(1, 5), st.integers(1, 8), st.booleans(), st.integers(0, 1000))
def test_unpad_pad_round_trip(B, L, right_padded, seed):
    g = torch.Generator().manual_seed(seed)
    mask = _random_mask(g, B, L, right_padded)
    x = torch.randn(B, L, 3, generator=g, dtype=torch.float64)
    tokens, idx, cu, max_len = unpad_input(x, mask)
    # independent reference, by explicit loops over the grid
    ref_idx = [b * L + j for b in range(B) for j in range(L) if mask[b, j]]
    counts = [int(mask[b].sum()) for b in range(B)]
    assert idx.tolist() == ref_idx
    assert cu.tolist() == [sum(counts[:b]) for b in range(B + 1)]
    assert max_len == max(counts)
    assert torch.equal(tokens, torch.stack([x[i // L, i % L] for i in ref_idx]))
    # pad_input inverts the gather at the real tokens, and writes zeros elsewhere
    back = pad_input(tokens, idx, B, L)
    assert torch.equal(back, torch.where(mask[..., None], x, torch.zeros_like(x)))
    # unpad_input inverts the scatter
    assert torch.equal(unpad_input(back, mask)[0], tokens)


def test_unpad_of_right_padded_batch_is_pack():
    seqs = [torch.tensor([5, 6, 7]), torch.tensor([8]), torch.tensor([9, 10])]
    padded, lengths = pad(seqs, pad_value=-1)
    mask = torch.arange(padded.shape[1])[None, :] < lengths[:, None]
    tokens, _, cu, max_len = unpad_input(padded, mask.long())  # 0/1 integer mask accepted
    packed, cu_pack, _ = pack(seqs)
    assert torch.equal(tokens, packed) and torch.equal(cu, cu_pack) and max_len == 3


@pytest.mark.parametrize("right_padded", [True, False])
def test_unpadded_mlp_and_attention_agree_with_padded_path(right_padded):
    g = torch.Generator().manual_seed(3)
    B, L, d = 4, 9, 8
    mask = _random_mask(g, B, L, right_padded)
    torch.manual_seed(0)
    mlp = torch.nn.Sequential(torch.nn.Linear(d, 4 * d), torch.nn.GELU(), torch.nn.Linear(4 * d, d)).double()
    x = torch.randn(B, L, d, generator=g, dtype=torch.float64)
    tokens, idx, cu, _ = unpad_input(x, mask)
    # a per-token MLP: unpadded then scattered back == padded at the real tokens
    y_pad = mlp(x)
    y_unpad = pad_input(mlp(tokens), idx, B, L)
    assert torch.allclose(y_unpad[mask], y_pad[mask], atol=1e-12)
    assert torch.all(y_unpad[~mask] == 0)
    # gradients of a loss over the real tokens agree too
    g_pad = torch.autograd.grad(y_pad[mask].square().sum(), list(mlp.parameters()))
    g_unpad = torch.autograd.grad(mlp(tokens).square().sum(), list(mlp.parameters()))
    for a, b in zip(g_pad, g_unpad):
        assert torch.allclose(a, b, atol=1e-10)
    # causal attention: varlen on the stream == hand-written softmax on the padded batch with a
    # causal, key-padding mask, at the real queries
    q, k, v = (torch.randn(B, 2, L, d, generator=g, dtype=torch.float64) for _ in range(3))
    causal_keys = mask[:, None, None, :] & torch.ones(L, L, dtype=torch.bool).tril()  # (B, 1, L, L)
    ref = _masked_attention(q, k, v, causal_keys).transpose(1, 2)  # (B, L, heads, d)
    qs, ks, vs = (unpad_input(t.transpose(1, 2), mask)[0].transpose(0, 1) for t in (q, k, v))  # (heads, N, d)
    out = pad_input(varlen_attention(qs, ks, vs, cu).transpose(0, 1), idx, B, L)
    assert torch.allclose(out[mask], ref[mask], atol=1e-12)


def test_pad_input_follows_dtype_and_keeps_gradients():
    t = torch.randn(3, 2, dtype=torch.float64, requires_grad=True)
    out = pad_input(t, torch.tensor([4, 0, 2]), 2, 3)
    assert out.dtype == torch.float64 and out.shape == (2, 3, 2)
    out.sum().backward()
    assert torch.equal(t.grad, torch.ones_like(t))


def test_unpad_pad_bad_inputs():
    x = torch.randn(2, 3, 4)
    m = torch.tensor([[1, 1, 0], [1, 0, 0]], dtype=torch.bool)
    with pytest.raises(TypeError, match="x must be"):
        unpad_input(torch.randn(3), m)
    with pytest.raises(TypeError, match="attention_mask must be"):
        unpad_input(x, m.float())
    with pytest.raises(ValueError, match="shape"):
        unpad_input(x, m[:, :2])
    with pytest.raises(ValueError, match="only 0 and 1"):
        unpad_input(x, torch.tensor([[1, 2, 0], [1, 0, 0]]))
    with pytest.raises(ValueError, match="at least one real token"):
        unpad_input(x, torch.tensor([[1, 1, 0], [0, 0, 0]], dtype=torch.bool))
    t = torch.randn(3, 4)
    with pytest.raises(TypeError, match="tokens must be"):
        pad_input(torch.tensor(1.0), torch.tensor([0]), 2, 3)
    with pytest.raises(TypeError, match="integer"):
        pad_input(t, torch.tensor([0.0, 1.0, 3.0]), 2, 3)
    with pytest.raises(ValueError, match="shape"):
        pad_input(t, torch.tensor([0, 1]), 2, 3)
    with pytest.raises(ValueError, match=r"\[0, batch \* seqlen\)"):
        pad_input(t, torch.tensor([0, 1, 6]), 2, 3)
    with pytest.raises(ValueError, match="distinct"):
        pad_input(t, torch.tensor([0, 1, 1]), 2, 3)
    with pytest.raises(ValueError, match="seqlen must be"):
        pad_input(t, torch.tensor([0, 1, 2]), 2, 0)


def test_unpad_input_rejects_empty_batch():
    with pytest.raises(ValueError, match="B >= 1"):
        unpad_input(torch.zeros(0, 3, 2), torch.zeros(0, 3, dtype=torch.bool))
