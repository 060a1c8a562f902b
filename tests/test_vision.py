"""Tests for minilib.vision against independent references: torch's own convolutions, autograd
supports, a flop counter, plain-Python loops and closed forms in float64."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from minilib.packing import varlen_attention
from minilib.vision import (
    MBConv,
    SqueezeExcite,
    compound_scaling,
    conv_cost,
    conv_output_size,
    deform_conv2d,
    interpolate_pos_embed,
    margin_logits,
    pack_images,
    patchify,
    receptive_field,
    rope_2d,
    unpatchify,
)

# ---------------------------------------------------------------------------------------------
# convolution arithmetic


@settings(max_examples=150, deadline=None)
@given(n=st.integers(1, 20), k=st.integers(1, 5), s=st.integers(1, 4), p=st.integers(0, 3), d=st.integers(1, 3))
def test_conv_output_size_matches_conv2d(n, k, s, p, d) -> None:
    x, w = torch.zeros(1, 1, n, 3), torch.zeros(1, 1, k, 1)
    if n + 2 * p < d * (k - 1) + 1:
        with pytest.raises(RuntimeError):
            F.conv2d(x, w, stride=(s, 1), padding=(p, 0), dilation=(d, 1))
        with pytest.raises(ValueError, match="larger than the padded input"):
            conv_output_size(n, k, s, p, d)
        return
    out = F.conv2d(x, w, stride=(s, 1), padding=(p, 0), dilation=(d, 1))
    assert conv_output_size(n, k, s, p, d) == out.shape[2]


def _support(grad: torch.Tensor) -> tuple[int, int]:
    nz = grad.nonzero().flatten()
    return int(nz.min()), int(nz.max())


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.integers(1, 4), st.integers(1, 3), st.integers(1, 2)), min_size=1, max_size=4))
def test_receptive_field_matches_gradient_support(layers) -> None:
    size, jump = receptive_field(layers)
    n = size + 3 * jump + 4
    x = torch.rand(1, 1, n, dtype=torch.float64, requires_grad=True)
    h = x
    for k, s, d in layers:  # positive weights: no cancellation, so the support is the true field
        h = F.conv1d(h, torch.ones(1, 1, k, dtype=torch.float64), stride=s, dilation=d)
    assert h.shape[-1] >= 2
    (g0,) = torch.autograd.grad(h[0, 0, 0], x, retain_graph=True)
    (g1,) = torch.autograd.grad(h[0, 0, 1], x)
    lo0, hi0 = _support(g0[0, 0])
    lo1, hi1 = _support(g1[0, 0])
    assert hi0 - lo0 + 1 == size  # extent of what one output unit sees
    assert (lo1 - lo0, hi1 - hi0) == (jump, jump)  # the next unit sees the same window, shifted by jump


def test_receptive_field_known_values_and_bad_input() -> None:
    assert receptive_field([]) == (1, 1)
    assert receptive_field([(3, 1, 1)] * 3) == (7, 1)  # VGG: three 3x3 convs see 7x7
    assert receptive_field([(3, 1, 2)]) == (5, 1)
    with pytest.raises(ValueError, match="triple"):
        receptive_field([(3, 1)])
    with pytest.raises(ValueError, match="positive int"):
        receptive_field([(3, 0, 1)])
    with pytest.raises(TypeError, match="sequence"):
        receptive_field(3)


def test_conv_output_size_bad_input() -> None:
    with pytest.raises(ValueError, match="stride must be a positive int"):
        conv_output_size(8, 3, stride=0)
    with pytest.raises(ValueError, match="padding must be a non-negative int"):
        conv_output_size(8, 3, padding=-1)
    with pytest.raises(ValueError, match="n must be"):
        conv_output_size(2.5, 3)


def test_compound_scaling() -> None:
    assert compound_scaling(0) == (1.0, 1.0, 1.0)
    d, w, r = compound_scaling(3.0, 1.2, 1.1, 1.15)
    assert math.isclose(d, 1.2**3) and math.isclose(w, 1.1**3) and math.isclose(r, 1.15**3)
    # the paper's constraint alpha * beta^2 * gamma^2 ~ 2 makes FLOPs grow by ~2^phi
    d, w, r = compound_scaling(1.0)
    assert abs(d * w * w * r * r - 2) < 0.1
    with pytest.raises(ValueError, match="beta"):
        compound_scaling(1.0, beta=0)
    with pytest.raises(ValueError, match="phi"):
        compound_scaling(float("nan"))


def _measured(module: nn.Module, x: torch.Tensor) -> tuple[int, int]:
    params = sum(p.numel() for p in module.parameters())
    with FlopCounterMode(display=False) as fc:
        module(x)
    return params, fc.get_total_flops() // 2  # one multiply-add = 2 flops


@pytest.mark.parametrize("cin, cout, k, stride, bias", [(3, 8, 3, 1, False), (16, 32, 5, 2, True), (8, 8, 1, 1, True)])
def test_conv_cost_matches_real_modules(cin, cout, k, stride, bias) -> None:
    x = torch.randn(1, cin, 12, 10)
    std = nn.Conv2d(cin, cout, k, stride, k // 2, bias=bias)
    hw = (conv_output_size(12, k, stride, k // 2), conv_output_size(10, k, stride, k // 2))
    assert conv_cost(cin, cout, k, hw, "standard", bias) == _measured(std, x)
    dw = nn.Conv2d(cin, cin, k, stride, k // 2, groups=cin, bias=bias)
    assert conv_cost(cin, cin, k, hw, "depthwise", bias) == _measured(dw, x)
    sep = nn.Sequential(dw, nn.Conv2d(cin, cout, 1, bias=bias))
    assert conv_cost(cin, cout, k, hw, "separable", bias) == _measured(sep, x)


def test_conv_cost_bad_input() -> None:
    with pytest.raises(ValueError, match="depthwise"):
        conv_cost(4, 8, 3, 4, kind="depthwise")
    with pytest.raises(ValueError, match="kind"):
        conv_cost(4, 8, 3, 4, kind="grouped")
    with pytest.raises(ValueError, match="out_hw"):
        conv_cost(4, 8, 3, (4, 4, 4))


# ---------------------------------------------------------------------------------------------
# SE and MBConv


def test_squeeze_excite_zero_excitation_halves_and_gate_is_per_channel() -> None:
    torch.manual_seed(0)
    se = SqueezeExcite(12, reduction=4)
    assert se.reduce.out_channels == 3
    x = torch.randn(2, 12, 5, 5)
    nn.init.zeros_(se.expand.weight)
    nn.init.zeros_(se.expand.bias)
    torch.testing.assert_close(se(x), 0.5 * x)
    nn.init.normal_(se.expand.weight)
    ratio = se(x) / x  # one gate per (sample, channel), in (0, 1), the same at every pixel
    assert torch.allclose(ratio, ratio[..., :1, :1].expand_as(ratio), atol=1e-5)
    assert ((ratio > 0) & (ratio < 1)).all()


def test_mbconv_shapes_and_params() -> None:
    torch.manual_seed(0)
    x = torch.randn(2, 16, 9, 9)
    for out_ch, k, s in [(16, 3, 1), (24, 5, 2), (16, 3, 2)]:
        blk = MBConv(16, out_ch, expand=6, kernel=k, stride=s)
        n = conv_output_size(9, k, s, k // 2)
        assert blk(x).shape == (2, out_ch, n, n)
        assert blk.residual == (s == 1 and out_ch == 16)
        hid, sq = 16 * 6, 16 // 4
        expected = (conv_cost(16, hid, 1, 1)[0] + conv_cost(hid, hid, k, 1, "depthwise")[0]
                    + conv_cost(hid, sq, 1, 1, bias=True)[0] + conv_cost(sq, hid, 1, 1, bias=True)[0]
                    + conv_cost(hid, out_ch, 1, 1)[0] + 2 * (hid + hid + out_ch))  # BN gains and shifts
        assert sum(p.numel() for p in blk.parameters()) == expected
    plain = MBConv(8, 8, expand=1, se_reduction=None)
    assert sum(isinstance(m, nn.Conv2d) for m in plain.modules()) == 2  # depthwise + projection only


@pytest.mark.parametrize("train", [True, False])
def test_mbconv_residual_behaviour(train) -> None:
    torch.manual_seed(0)
    x = torch.randn(4, 8, 6, 6)
    res, proj = MBConv(8, 8).train(train), MBConv(8, 12).train(train)
    for blk in (res, proj):  # zero the last BatchNorm: the branch outputs exactly zero
        nn.init.zeros_(blk.block[-1].weight)
        nn.init.zeros_(blk.block[-1].bias)
    torch.testing.assert_close(res(x), x)  # identity through the skip connection
    assert torch.equal(proj(x), torch.zeros(4, 12, 6, 6))
    nn.init.ones_(res.block[-1].weight)
    assert not torch.allclose(res(x), x)


def test_mbconv_bad_input() -> None:
    with pytest.raises(ValueError, match="kernel must be odd"):
        MBConv(8, 8, kernel=4)
    with pytest.raises(ValueError, match="expand"):
        MBConv(8, 8, expand=0)
    with pytest.raises(ValueError, match="channels"):
        SqueezeExcite(0)


# ---------------------------------------------------------------------------------------------
# deformable convolution


def _tapwise_reference(x, w, tap_offsets, stride, padding, dilation, ho, wo):
    """Convolution with a constant integer offset per kernel tap, as a sum of shifted 1x1 convs."""
    M = 8
    xp = F.pad(x, (M, M, M, M))
    kh, kw = w.shape[2:]
    out = 0
    for a in range(kh):
        for b in range(kw):
            dy, dx = tap_offsets[a * kw + b]
            y0 = M - padding + a * dilation + dy
            x0 = M - padding + b * dilation + dx
            sl = xp[:, :, y0: y0 + stride * (ho - 1) + 1: stride, x0: x0 + stride * (wo - 1) + 1: stride]
            out = out + torch.einsum("oc,bchw->bohw", w[:, :, a, b], sl)
    return out


@pytest.mark.parametrize("stride, padding, dilation", [(1, 0, 1), (2, 1, 1), (1, 2, 2), (2, 0, 1)])
def test_deform_zero_offsets_is_conv2d(stride, padding, dilation) -> None:
    g = torch.Generator().manual_seed(0)
    x, w, bias = torch.randn(2, 3, 9, 8, generator=g), torch.randn(4, 3, 3, 3, generator=g), torch.randn(4, generator=g)
    ref = F.conv2d(x, w, bias, stride, padding, dilation)
    off = torch.zeros(2, 18, *ref.shape[2:])
    torch.testing.assert_close(deform_conv2d(x, off, w, bias, stride, padding, dilation), ref, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("stride, padding, dilation", [(1, 0, 1), (2, 1, 1), (1, 1, 2)])
def test_deform_integer_offsets_is_shifted_conv(stride, padding, dilation) -> None:
    g = torch.Generator().manual_seed(1)
    x, w = torch.randn(2, 3, 10, 9, generator=g), torch.randn(4, 3, 3, 3, generator=g)
    ho, wo = conv_output_size(10, 3, stride, padding, dilation), conv_output_size(9, 3, stride, padding, dilation)
    taps = torch.randint(-2, 3, (9, 2), generator=g)  # one (dy, dx) per tap, the same at every output pixel
    off = taps.reshape(1, 18, 1, 1).expand(2, 18, ho, wo).float()
    ref = _tapwise_reference(x, w, taps.tolist(), stride, padding, dilation, ho, wo)
    torch.testing.assert_close(deform_conv2d(x, off, w, None, stride, padding, dilation), ref, atol=1e-5, rtol=1e-5)
    # a single global shift (dy, dx) = (1, -1) is the plain conv of the shifted image. Without
    # padding only: with padding, deform_conv2d reads real pixels where conv(shifted) reads zeros.
    ho, wo = conv_output_size(10, 3, stride, 0, dilation), conv_output_size(9, 3, stride, 0, dilation)
    off = torch.tensor([1.0, -1.0]).repeat(9).reshape(1, 18, 1, 1).expand(2, 18, ho, wo)
    xs = F.pad(x, (1, 0, 0, 1))[:, :, 1:, :-1]  # xs[y, x] = x[y + 1, x - 1], zero outside
    torch.testing.assert_close(deform_conv2d(x, off, w, None, stride, 0, dilation),
                               F.conv2d(xs, w, None, stride, 0, dilation), atol=1e-5, rtol=1e-5)


def _bilinear(img: list[list[float]], y: float, x: float) -> float:
    H, W = len(img), len(img[0])
    y0, x0 = math.floor(y), math.floor(x)
    val = 0.0
    for yy, wy in ((y0, 1 - (y - y0)), (y0 + 1, y - y0)):
        for xx, wx in ((x0, 1 - (x - x0)), (x0 + 1, x - x0)):
            if 0 <= yy < H and 0 <= xx < W:
                val += wy * wx * img[yy][xx]
    return val


@pytest.mark.parametrize("use_mask", [False, True])
def test_deform_fractional_offsets_match_python_loop(use_mask) -> None:
    g = torch.Generator().manual_seed(2)
    B, C, O, H, W, k, s, p, d = 2, 2, 3, 5, 6, 3, 1, 1, 1
    x = torch.randn(B, C, H, W, generator=g, dtype=torch.float64)
    w = torch.randn(O, C, k, k, generator=g, dtype=torch.float64)
    bias = torch.randn(O, generator=g, dtype=torch.float64)
    ho, wo = conv_output_size(H, k, s, p, d), conv_output_size(W, k, s, p, d)
    off = (torch.rand(B, 2 * k * k, ho, wo, generator=g, dtype=torch.float64) - 0.5) * 5  # some land outside
    mask = torch.rand(B, k * k, ho, wo, generator=g, dtype=torch.float64) if use_mask else None
    out = deform_conv2d(x, off, w, bias, s, p, d, mask)
    ref = torch.zeros(B, O, ho, wo, dtype=torch.float64)
    xl, ol, wl = x.tolist(), off.tolist(), w.tolist()
    for b in range(B):
        for i in range(ho):
            for j in range(wo):
                for o in range(O):
                    acc = float(bias[o])
                    for a in range(k):
                        for bb in range(k):
                            t = a * k + bb
                            y = i * s - p + a * d + ol[b][2 * t][i][j]
                            xx = j * s - p + bb * d + ol[b][2 * t + 1][i][j]
                            m = float(mask[b, t, i, j]) if use_mask else 1.0
                            for c in range(C):
                                acc += wl[o][c][a][bb] * m * _bilinear(xl[b][c], y, xx)
                    ref[b, o, i, j] = acc
    torch.testing.assert_close(out, ref, atol=1e-10, rtol=1e-10)


def test_deform_mask_extremes_and_dtype() -> None:
    g = torch.Generator().manual_seed(3)
    x, w, bias = torch.randn(1, 2, 6, 6, generator=g), torch.randn(3, 2, 3, 3, generator=g), torch.randn(3, generator=g)
    off = torch.randn(1, 18, 4, 4, generator=g)
    ones, zeros = torch.ones(1, 9, 4, 4), torch.zeros(1, 9, 4, 4)
    torch.testing.assert_close(deform_conv2d(x, off, w, bias, mask=ones), deform_conv2d(x, off, w, bias))
    torch.testing.assert_close(deform_conv2d(x, off, w, bias, mask=zeros), bias.view(1, 3, 1, 1).expand(1, 3, 4, 4))
    assert deform_conv2d(x.double(), off.double(), w.double()).dtype == torch.float64


def test_deform_gradcheck() -> None:
    g = torch.Generator().manual_seed(4)
    x = torch.randn(1, 2, 4, 5, generator=g, dtype=torch.float64, requires_grad=True)
    w = torch.randn(2, 2, 2, 3, generator=g, dtype=torch.float64, requires_grad=True)
    bias = torch.randn(2, generator=g, dtype=torch.float64, requires_grad=True)
    ho, wo = conv_output_size(4, 2, 1, 1), conv_output_size(5, 3, 1, 1)
    # fractional parts kept away from integers, where bilinear sampling has a kink
    off = (torch.randint(-2, 2, (1, 12, ho, wo), generator=g) + 0.2 + 0.6 * torch.rand(1, 12, ho, wo, generator=g))
    off = off.double().requires_grad_()
    mask = torch.rand(1, 6, ho, wo, generator=g, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda *a: deform_conv2d(a[0], a[1], a[2], a[3], 1, 1, 1, a[4]),
                                    (x, off, w, bias, mask))


def test_deform_bad_input() -> None:
    x, w = torch.randn(1, 2, 5, 5), torch.randn(3, 2, 3, 3)
    with pytest.raises(ValueError, match="offset must have shape"):
        deform_conv2d(x, torch.zeros(1, 9, 3, 3), w)
    with pytest.raises(ValueError, match="mask must have shape"):
        deform_conv2d(x, torch.zeros(1, 18, 3, 3), w, mask=torch.ones(1, 18, 3, 3))
    with pytest.raises(ValueError, match="weight must have shape"):
        deform_conv2d(x, torch.zeros(1, 18, 3, 3), torch.randn(3, 4, 3, 3))
    with pytest.raises(TypeError, match="x must be a floating-point"):
        deform_conv2d(x.long(), torch.zeros(1, 18, 3, 3), w)
    with pytest.raises(ValueError, match="bias must have shape"):
        deform_conv2d(x, torch.zeros(1, 18, 3, 3), w, torch.zeros(2))


# ---------------------------------------------------------------------------------------------
# patches and positions


def test_patchify_matches_unfold_and_round_trips() -> None:
    x = torch.randn(2, 3, 8, 12)
    p = 4
    t = patchify(x, p)
    assert t.shape == (2, 6, 48)
    # F.unfold lists each patch's features as (channel, row, col), patches row-major
    u = F.unfold(x, p, stride=p).transpose(1, 2).reshape(2, 6, 3, p, p)
    assert torch.equal(t, u.permute(0, 1, 3, 4, 2).reshape(2, 6, 48))  # -> (row, col, channel)
    assert torch.equal(t[1, 4].view(p, p, 3), x[1, :, 4:8, 4:8].permute(1, 2, 0))  # patch (1, 1)
    assert torch.equal(unpatchify(t, p, 8, 12), x)
    with pytest.raises(ValueError, match="divisible by patch"):
        patchify(x, 5)
    with pytest.raises(ValueError, match="tokens must have shape"):
        unpatchify(t, p, 8, 8)


def test_interpolate_pos_embed() -> None:
    g = torch.Generator().manual_seed(0)
    pos = torch.randn(1 + 5 * 7, 16, generator=g)
    for mode in ("bicubic", "bilinear"):
        torch.testing.assert_close(interpolate_pos_embed(pos, (5, 7), (5, 7), num_prefix_tokens=1, mode=mode), pos)
        new = interpolate_pos_embed(pos, (5, 7), (10, 3), num_prefix_tokens=1, mode=mode)
        assert new.shape == (31, 16) and torch.equal(new[0], pos[0])  # the class token is kept
        const = interpolate_pos_embed(torch.full((16, 4), 2.5), 4, 9, mode=mode)
        torch.testing.assert_close(const, torch.full((81, 4), 2.5))
    # bilinear 2x upsampling of a ramp in the row index: new row n samples old row (n + 0.5)/2 - 0.5
    ramp = torch.arange(4.0).repeat_interleave(4)[:, None]  # (16, 1): value = row
    up = interpolate_pos_embed(ramp, 4, 8, mode="bilinear").view(8, 8)
    src = (torch.arange(8.0) + 0.5) / 2 - 0.5
    torch.testing.assert_close(up[1:7, 3], src[1:7])  # interior rows (the borders clamp)
    with pytest.raises(ValueError, match="pos must have shape"):
        interpolate_pos_embed(pos, 5, 5)
    with pytest.raises(ValueError, match="mode"):
        interpolate_pos_embed(pos[1:], (5, 7), 3, mode="nearest")


def test_rope_2d_norm_and_relative_positions() -> None:
    g = torch.Generator().manual_seed(0)
    q, k = torch.randn(1, 16, generator=g, dtype=torch.float64), torch.randn(1, 16, generator=g, dtype=torch.float64)

    def score(r1, c1, r2, c2):
        a = rope_2d(q, torch.tensor([r1]), torch.tensor([c1]))
        b = rope_2d(k, torch.tensor([r2]), torch.tensor([c2]))
        return float((a * b).sum())

    x = torch.randn(3, 5, 16, generator=g, dtype=torch.float64)
    rows, cols = torch.randint(0, 30, (5,), generator=g), torch.randint(0, 30, (5,), generator=g)
    torch.testing.assert_close(rope_2d(x, rows, cols).norm(dim=-1), x.norm(dim=-1))
    base = score(3, 5, 1, 2)
    assert math.isclose(score(3 + 7, 5, 1 + 7, 2), base, abs_tol=1e-10)  # shift both rows
    assert math.isclose(score(3, 5 + 11, 1, 2 + 11), base, abs_tol=1e-10)  # shift both columns
    assert math.isclose(score(13, 9, 11, 6), base, abs_tol=1e-10)  # both
    assert not math.isclose(score(3, 5, 2, 2), base, abs_tol=1e-3)  # a different row offset
    assert not math.isclose(score(3, 5, 1, 3), base, abs_tol=1e-3)  # a different column offset
    # rows and columns act on separate halves: the column does not touch the first half
    y = rope_2d(x, rows, torch.zeros(5, dtype=torch.long))
    assert torch.equal(y[..., 8:], x[..., 8:])
    with pytest.raises(ValueError, match="divisible by 4"):
        rope_2d(torch.randn(5, 6), rows, cols)


def test_pack_images_attention_equals_per_image_attention() -> None:
    g = torch.Generator().manual_seed(0)
    p, C, d = 2, 3, 8
    images = [torch.randn(C, h, w, generator=g) for h, w in [(4, 6), (8, 2), (2, 2)]]
    tokens, pos, cu = pack_images(images, p)
    assert cu.dtype == torch.int32 and cu.tolist() == [0, 6, 10, 11]
    assert tokens.shape == (11, p * p * C) and pos.shape == (11, 2) and pos.dtype == torch.int64
    wq, wk, wv = (torch.randn(p * p * C, d, generator=g) for _ in range(3))

    def qkv(t, rows, cols):
        return rope_2d(t @ wq, rows, cols), rope_2d(t @ wk, rows, cols), t @ wv

    q, k, v = qkv(tokens, pos[:, 0], pos[:, 1])
    out = varlen_attention(q[None], k[None], v[None], cu, causal=False)[0]
    start = 0
    for im in images:
        gh, gw = im.shape[1] // p, im.shape[2] // p
        # independent tokenisation: crop each patch by hand, flatten as (row, col, channel)
        toks = torch.stack([im[:, r * p:(r + 1) * p, c * p:(c + 1) * p].permute(1, 2, 0).reshape(-1)
                            for r in range(gh) for c in range(gw)])
        rows = torch.arange(gh).repeat_interleave(gw)
        cols = torch.arange(gw).repeat(gh)
        assert torch.equal(tokens[start:start + gh * gw], toks)
        assert torch.equal(pos[start:start + gh * gw], torch.stack((rows, cols), -1))
        qi, ki, vi = qkv(toks, rows, cols)
        ref = torch.softmax(qi @ ki.T / math.sqrt(d), dim=-1) @ vi
        torch.testing.assert_close(out[start:start + gh * gw], ref, atol=1e-5, rtol=1e-5)
        start += gh * gw


def test_pack_images_bad_input() -> None:
    with pytest.raises(TypeError, match="non-empty list"):
        pack_images([], 2)
    with pytest.raises(ValueError, match="not divisible by patch"):
        pack_images([torch.zeros(3, 4, 4), torch.zeros(3, 5, 4)], 2)
    with pytest.raises(ValueError, match="channels/dtype/device"):
        pack_images([torch.zeros(3, 4, 4), torch.zeros(1, 4, 4)], 2)


# ---------------------------------------------------------------------------------------------
# margin logits


def _psi(kind: str, theta: float, m: float) -> float:
    if kind == "arcface":
        return math.cos(theta + m) if theta + m <= math.pi else math.cos(theta) - m * math.sin(m)
    if kind == "cosface":
        return math.cos(theta) - m
    k = min(int(theta * m / math.pi), m - 1)
    return (-1) ** k * math.cos(m * theta) - 2 * k


@pytest.mark.parametrize("kind, m", [("arcface", 0.5), ("arcface", 1.0), ("cosface", 0.35), ("sphereface", 4),
                                     ("sphereface", 3)])
def test_margin_logits_closed_forms(kind, m) -> None:
    g = torch.Generator().manual_seed(0)
    cos = torch.rand(40, 5, generator=g, dtype=torch.float64) * 2 - 1
    cos[:5, 0] = torch.tensor([-1.0, -0.99, -0.95, 1.0, 0.999], dtype=torch.float64)  # ArcFace fallback, edges
    labels = torch.randint(0, 5, (40,), generator=g)
    labels[:5] = 0
    out = margin_logits(cos, labels, kind, s=30.0, m=m)
    for b in range(40):
        for j in range(5):
            c = float(cos[b, j])
            want = _psi(kind, math.acos(c), m) if j == int(labels[b]) else c
            assert math.isclose(float(out[b, j]), 30.0 * want, abs_tol=1e-9), (kind, b, j)
    if kind == "arcface" and m == 0.5:
        assert float(cos[0, 0]) < math.cos(math.pi - m)  # the fallback branch was exercised


def test_margin_logits_defaults_clamp_and_monotone_psi() -> None:
    c = torch.tensor([[0.3, 0.2]])
    y = torch.tensor([0])
    assert math.isclose(float(margin_logits(c, y)[0, 0]), 64 * math.cos(math.acos(0.3) + 0.5), rel_tol=1e-6)
    assert math.isclose(float(margin_logits(c, y, "cosface")[0, 0]), 64 * (0.3 - 0.35), rel_tol=1e-5)
    assert torch.isfinite(margin_logits(torch.tensor([[1.0 + 1e-6, -1.0 - 1e-6]]), y)).all()  # clamped
    theta = torch.linspace(0, math.pi, 721, dtype=torch.float64)
    for kind in ("sphereface", "arcface", "cosface"):
        psi = margin_logits(torch.cos(theta)[:, None], torch.zeros(721, dtype=torch.long), kind, s=1.0)[:, 0]
        assert (psi[1:] < psi[:-1]).all(), kind  # strictly decreasing in theta: the margin never rewards
        if kind == "sphereface":  # continuous across the piece boundaries k pi / m
            assert (psi[1:] - psi[:-1]).abs().max() < 0.1
            assert math.isclose(float(psi[-1]), -7.0, abs_tol=1e-9)  # psi(pi) = -(2m - 1)


def test_margin_logits_gradients_flow() -> None:
    cos = (torch.rand(6, 4, dtype=torch.float64) * 1.8 - 0.9).requires_grad_()
    loss = F.cross_entropy(margin_logits(cos, torch.arange(6) % 4, s=8.0), torch.arange(6) % 4)
    loss.backward()
    assert torch.isfinite(cos.grad).all()


def test_margin_logits_bad_input() -> None:
    c = torch.zeros(2, 3)
    with pytest.raises(ValueError, match="labels must lie in"):
        margin_logits(c, torch.tensor([0, 3]))
    with pytest.raises(ValueError, match="labels must have shape"):
        margin_logits(c, torch.tensor([0]))
    with pytest.raises(TypeError, match="labels must be an int64"):
        margin_logits(c, torch.tensor([0.0, 1.0]))
    with pytest.raises(ValueError, match="kind"):
        margin_logits(c, torch.tensor([0, 1]), kind="adaface")
    with pytest.raises(ValueError, match="positive int for sphereface"):
        margin_logits(c, torch.tensor([0, 1]), kind="sphereface", m=1.5)
    with pytest.raises(ValueError, match="s must be"):
        margin_logits(c, torch.tensor([0, 1]), s=0)
    with pytest.raises(ValueError, match="cos must have shape"):
        margin_logits(torch.zeros(3), torch.tensor([0, 1, 2]))
