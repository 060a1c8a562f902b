"""Tests for minilib.nn against independent references."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from minilib.nn import MultiHeadAttention, TransformerBlock, sinusoidal_embedding


def _loop_reference(positions: list[float], dim: int, base: float) -> torch.Tensor:
    """The textbook formula, one scalar at a time in float64."""
    out = torch.zeros(len(positions), dim, dtype=torch.float64)
    for r, p in enumerate(positions):
        for i in range(dim // 2):
            w = base ** (-2 * i / dim)
            out[r, 2 * i] = math.sin(p * w)
            out[r, 2 * i + 1] = math.cos(p * w)
    return out


@given(dim=st.integers(1, 16).map(lambda h: 2 * h), base=st.sampled_from([10.0, 100.0, 10000.0]))
@settings(max_examples=25, deadline=None)
def test_sinusoidal_matches_scalar_loop(dim: int, base: float) -> None:
    pos = [0.0, 1.0, 2.5, 7.0, 31.0]
    got = sinusoidal_embedding(torch.tensor(pos, dtype=torch.float64), dim, base=base)
    torch.testing.assert_close(got, _loop_reference(pos, dim, base))


def test_sinusoidal_dtypes_shapes_device() -> None:
    e = sinusoidal_embedding(torch.arange(6).reshape(2, 3), 8)
    assert e.shape == (2, 3, 8) and e.dtype == torch.float32
    assert sinusoidal_embedding(torch.rand(5, dtype=torch.float64), 4).dtype == torch.float64
    assert sinusoidal_embedding(torch.rand(5, dtype=torch.float16), 4).dtype == torch.float16
    meta = sinusoidal_embedding(torch.zeros(3, device="meta"), 4)
    assert meta.device.type == "meta" and meta.shape == (3, 4)


def test_sinusoidal_unit_norm_pairs_and_relative_shift() -> None:
    # each (sin, cos) pair lies on the unit circle; a shift by k is a fixed rotation per pair
    dim, k = 16, 5
    p = torch.arange(40, dtype=torch.float64)
    e = sinusoidal_embedding(p, dim).reshape(40, dim // 2, 2)
    torch.testing.assert_close(e.pow(2).sum(-1), torch.ones(40, dim // 2, dtype=torch.float64))
    w = 10000.0 ** (-2 * torch.arange(dim // 2, dtype=torch.float64) / dim)
    c, s = torch.cos(k * w), torch.sin(k * w)
    sin_p, cos_p = e[:-k, :, 0], e[:-k, :, 1]
    torch.testing.assert_close(e[k:, :, 0], sin_p * c + cos_p * s)
    torch.testing.assert_close(e[k:, :, 1], cos_p * c - sin_p * s)


def test_sinusoidal_bad_inputs() -> None:
    with pytest.raises(ValueError, match="dim must be even"):
        sinusoidal_embedding(torch.arange(3), 5)
    with pytest.raises(ValueError, match="dim must be even"):
        sinusoidal_embedding(torch.arange(3), 0)
    with pytest.raises(TypeError, match="dim must be an int"):
        sinusoidal_embedding(torch.arange(3), 4.0)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="positions must be a torch.Tensor"):
        sinusoidal_embedding([1, 2], 4)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="positions must be an integer or real"):
        sinusoidal_embedding(torch.tensor([True]), 4)
    with pytest.raises(ValueError, match="base must be a positive"):
        sinusoidal_embedding(torch.arange(3), 4, base=0.0)


def _copy_into_torch_mha(mha: MultiHeadAttention) -> torch.nn.MultiheadAttention:
    ref = torch.nn.MultiheadAttention(mha.d_model, mha.n_heads, batch_first=True)
    with torch.no_grad():
        ref.in_proj_weight.copy_(mha.qkv.weight)
        ref.in_proj_bias.copy_(mha.qkv.bias)
        ref.out_proj.weight.copy_(mha.out.weight)
        ref.out_proj.bias.copy_(mha.out.bias)
    return ref


@pytest.mark.parametrize("causal", [False, True])
def test_mha_matches_torch_multihead_attention(causal: bool) -> None:
    torch.manual_seed(0)
    mha = MultiHeadAttention(12, 3).double()
    ref = _copy_into_torch_mha(mha).double()
    x = torch.randn(2, 7, 12, dtype=torch.float64)
    pad = torch.zeros(2, 7, dtype=torch.bool)
    pad[1, 5:] = True
    torch_mask = torch.ones(7, 7, dtype=torch.bool).triu(1) if causal else None
    want, want_w = ref(x, x, x, attn_mask=torch_mask, key_padding_mask=pad, average_attn_weights=False)
    got = mha(x, causal=causal, key_padding_mask=pad)
    got2, got_w = mha(x, causal=causal, key_padding_mask=pad, return_weights=True)
    torch.testing.assert_close(got, want)
    torch.testing.assert_close(got2, want)
    torch.testing.assert_close(got_w, want_w)


def test_mha_weights_rows_sum_to_one_and_are_causal() -> None:
    torch.manual_seed(1)
    _, w = MultiHeadAttention(8, 4)(torch.randn(3, 6, 8), causal=True, return_weights=True)
    torch.testing.assert_close(w.sum(-1), torch.ones(3, 4, 6))
    assert (w.triu(1) == 0).all()


def test_block_matches_torch_encoder_layer_norm_first() -> None:
    torch.manual_seed(2)
    blk = TransformerBlock(8, 2, d_ff=16).double().eval()
    ref = torch.nn.TransformerEncoderLayer(
        8, 2, dim_feedforward=16, dropout=0.0, activation="gelu", batch_first=True, norm_first=True
    ).double().eval()
    with torch.no_grad():
        ref.self_attn.in_proj_weight.copy_(blk.attn.qkv.weight)
        ref.self_attn.in_proj_bias.copy_(blk.attn.qkv.bias)
        ref.self_attn.out_proj.weight.copy_(blk.attn.out.weight)
        ref.self_attn.out_proj.bias.copy_(blk.attn.out.bias)
        for a, b in ((ref.norm1, blk.norm1), (ref.norm2, blk.norm2), (ref.linear1, blk.mlp[0]), (ref.linear2, blk.mlp[2])):
            a.weight.copy_(b.weight)
            a.bias.copy_(b.bias)
    x = torch.randn(2, 5, 8, dtype=torch.float64)
    mask = torch.nn.Transformer.generate_square_subsequent_mask(5, dtype=torch.float64)
    torch.testing.assert_close(blk(x, causal=True), ref(x, src_mask=mask, is_causal=True))
    y, w = blk(x, return_weights=True)
    torch.testing.assert_close(y, ref(x))
    assert w.shape == (2, 2, 5, 5)


def test_attention_bad_inputs() -> None:
    with pytest.raises(ValueError, match="divisible"):
        MultiHeadAttention(10, 3)
    with pytest.raises(ValueError, match="n_heads must be a positive int"):
        MultiHeadAttention(8, 0)
    with pytest.raises(ValueError, match="d_ff must be a positive int"):
        TransformerBlock(8, 2, d_ff=0)
    mha = MultiHeadAttention(8, 2)
    with pytest.raises(TypeError, match="x must be a floating tensor"):
        mha(torch.ones(1, 3, 8, dtype=torch.long))
    with pytest.raises(ValueError, match="x must have shape"):
        mha(torch.ones(1, 3, 6))
    with pytest.raises(TypeError, match="key_padding_mask must be a bool"):
        mha(torch.ones(1, 3, 8), key_padding_mask=torch.zeros(1, 3))
    with pytest.raises(ValueError, match="key_padding_mask must have shape"):
        mha(torch.ones(1, 3, 8), key_padding_mask=torch.zeros(1, 4, dtype=torch.bool))
