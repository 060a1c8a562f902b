"""Tests for the cnn-scaling chapter's equations, against independent references: the closed
form of the receptive field, autograd supports, torch's FLOP counter and float64 Jacobians."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from minilib.vision import MBConv, compound_scaling, conv_cost, conv_output_size, receptive_field

layer = st.tuples(st.integers(1, 5), st.integers(1, 3), st.integers(1, 3))


@settings(max_examples=200, deadline=None)
@given(st.lists(layer, max_size=6))
def test_receptive_field_equals_closed_form(layers) -> None:
    # (cnn-rf-closed): r = 1 + sum (k_l - 1) d_l prod_{m<l} s_m, j = prod s_l
    r, prod = 1, 1
    for k, s, d in layers:
        r += (k - 1) * d * prod
        prod *= s
    assert receptive_field(layers) == (r, prod)


@settings(max_examples=60, deadline=None)
@given(st.lists(layer, min_size=1, max_size=4))
def test_hole_free_condition_is_sufficient(layers) -> None:
    # cnn-prop-holes: if d_l j_(l-1) <= r_(l-1) at every layer with k_l > 1, the support is contiguous
    cond, r, j = True, 1, 1
    for k, s, d in layers:
        if k > 1:
            cond &= d * j <= r
        r, j = r + (k - 1) * d * j, j * s
    n = r + 2 * j
    x = torch.zeros(1, 1, n, dtype=torch.float64, requires_grad=True)
    h = x
    for k, s, d in layers:
        h = F.conv1d(h, torch.ones(1, 1, k, dtype=torch.float64), stride=s, dilation=d)
    (g,) = torch.autograd.grad(h[0, 0, 0], x)
    nz = g[0, 0].nonzero().flatten()
    assert int(nz.max() - nz.min() + 1) == r
    if cond:
        assert len(nz) == r


def test_conv_is_the_matrix_of_its_definition() -> None:
    g = torch.Generator().manual_seed(0)
    n, k, s, p, d = 7, 3, 2, 1, 2
    w = torch.randn(2, 3, k, k, generator=g, dtype=torch.float64)
    x = torch.randn(1, 3, n, n, generator=g, dtype=torch.float64)
    m = conv_output_size(n, k, s, p, d)
    y = torch.zeros(2, m, m, dtype=torch.float64)
    for o in range(2):  # (cnn-conv) as loops
        for i in range(m):
            for j in range(m):
                for c in range(3):
                    for a in range(k):
                        for b in range(k):
                            u, v = i * s - p + a * d, j * s - p + b * d
                            if 0 <= u < n and 0 <= v < n:
                                y[o, i, j] += w[o, c, a, b] * x[0, c, u, v]
    torch.testing.assert_close(F.conv2d(x, w, stride=s, padding=p, dilation=d)[0], y)


def _macs(module: nn.Module, x: torch.Tensor) -> int:
    with FlopCounterMode(display=False) as fc, torch.no_grad():
        module(x)
    return fc.get_total_flops() // 2


@pytest.mark.parametrize("C, Cp, H, stride, t, k", [(8, 8, 10, 1, 4, 3), (8, 12, 9, 2, 6, 5), (6, 6, 7, 1, 1, 3)])
def test_mbconv_cost_formula(C, Cp, H, stride, t, k) -> None:
    # (cnn-mbconv-cost), from conv_cost pieces; the expansion is skipped when t == 1
    Hp = conv_output_size(H, k, stride, k // 2)
    h = C // 4
    expected = (conv_cost(C, t * C, 1, H)[1] if t != 1 else 0) + conv_cost(t * C, t * C, k, Hp, "depthwise")[1]
    expected += 2 * t * C * h + conv_cost(t * C, Cp, 1, Hp)[1]
    assert _macs(MBConv(C, Cp, expand=t, kernel=k, stride=stride).eval(), torch.randn(1, C, H, H)) == expected


def test_flops_scale_as_d_w2_r2_on_a_uniform_stack() -> None:
    # cnn-thm-dwr under its hypotheses: L identical 3x3 convs C -> C with 'same' padding
    def stack(L, C):
        return nn.Sequential(*[nn.Conv2d(C, C, 3, padding=1, bias=False) for _ in range(L)])

    base = _macs(stack(2, 4), torch.randn(1, 4, 8, 8))
    for dm, wm, rm in [(2, 1, 1), (1, 2, 1), (1, 1, 2), (3, 2, 2)]:
        assert _macs(stack(2 * dm, 4 * wm), torch.randn(1, 4 * wm, 8 * rm, 8 * rm)) == dm * wm**2 * rm**2 * base


def test_compound_rule_doubles_per_phi_and_optimal_exponents() -> None:
    d, w, r = compound_scaling(1.0)
    assert math.isclose(d * w**2 * r**2, 1.2 * 1.1**2 * 1.15**2)
    # (cnn-optimal-exponents) with equal exponents gives alpha = beta = gamma = 2^(1/5)
    a = b = c = 0.7
    S = 1 / a + 2 / b + 2 / c
    al, be, ga = (2 ** (1 / (e * S)) for e in (a, b, c))
    d, w, r = compound_scaling(2.0, al, be, ga)
    assert math.isclose(al, 2 ** 0.2) and math.isclose(d * w**2 * r**2, 4.0)


@pytest.mark.parametrize("C, Cp, t, k, s", [(8, 8, 4, 3, 1), (8, 12, 6, 5, 2), (6, 6, 1, 3, 1)])
def test_mbconv_forward_is_equation_cnn_mbconv(C, Cp, t, k, s) -> None:
    # (cnn-mbconv) and (cnn-se) written with functional ops from the block's own weights: checks the
    # order (expand, depthwise, SE, linear projection), SiLU placement, SE width and the residual.
    torch.manual_seed(0)
    blk = MBConv(C, Cp, expand=t, kernel=k, stride=s).eval()
    convs = [m for m in blk.modules() if isinstance(m, nn.Conv2d)]
    bns = [m for m in blk.modules() if isinstance(m, nn.BatchNorm2d)]
    for bn in bns:  # non-trivial running statistics, so a misplaced BN would show
        bn.running_mean.uniform_(-0.5, 0.5)
        bn.running_var.uniform_(0.5, 2.0)
        nn.init.uniform_(bn.weight, 0.5, 1.5)
        nn.init.uniform_(bn.bias, -0.5, 0.5)

    def bn(z, m):
        return F.batch_norm(z, m.running_mean, m.running_var, m.weight, m.bias, False, 0.0, m.eps)

    x = torch.randn(2, C, 9, 9)
    z, i = x, 0
    if t != 1:
        z, i = F.silu(bn(F.conv2d(z, convs[0].weight), bns[0])), 1
    z = F.silu(bn(F.conv2d(z, convs[i].weight, stride=s, padding=k // 2, groups=t * C), bns[i]))
    red, exp = convs[i + 1], convs[i + 2]
    assert red.out_channels == max(1, C // 4)  # SE width from the block's input channels
    g = torch.sigmoid(F.linear(F.silu(F.linear(z.mean((2, 3)), red.weight[:, :, 0, 0], red.bias)),
                               exp.weight[:, :, 0, 0], exp.bias))
    z = bn(F.conv2d(z * g[:, :, None, None], convs[i + 3].weight), bns[i + 1])  # no activation
    expected = x + z if (s == 1 and Cp == C) else z
    torch.testing.assert_close(blk(x), expected, atol=1e-5, rtol=1e-5)
