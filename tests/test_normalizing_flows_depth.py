"""Tests for the autoregressive flows and Glow's 1x1 convolution in minilib.flows.

References: autograd Jacobians (full d x d, or (CHW) x (CHW), with torch.linalg.slogdet) and
torch.linalg.slogdet of the assembled matrix W, both independent of the layers' own log-dets.
"""

from __future__ import annotations

import pytest
import torch

from minilib.flows import (
    Inverted,
    Invertible1x1Conv,
    MaskedAffineAutoregressive,
    flow_log_prob,
    flow_sample,
)


def _randomized(layer: torch.nn.Module, seed: int, scale: float = 0.7) -> torch.nn.Module:
    torch.manual_seed(seed)
    layer = layer.double()
    with torch.no_grad():
        for p in layer.parameters():
            p.add_(torch.randn_like(p) * scale)
    return layer


def _jacobians(fn, x: torch.Tensor) -> torch.Tensor:
    return torch.stack([torch.autograd.functional.jacobian(lambda v: fn(v[None])[0][0], xb) for xb in x])


@pytest.mark.parametrize("dim,order", [(2, None), (4, None), (5, [3, 0, 4, 1, 2])])
def test_maf_logdet_matches_autograd_and_jacobian_is_triangular(dim, order):
    order_t = None if order is None else torch.tensor(order)
    layer = _randomized(MaskedAffineAutoregressive(dim, hidden=12, order=order_t), seed=dim)
    x = torch.randn(6, dim, dtype=torch.float64)
    z, logdet = layer(x)
    J = _jacobians(layer, x)
    torch.testing.assert_close(logdet, torch.linalg.slogdet(J).logabsdet, atol=1e-10, rtol=0)
    perm = torch.arange(dim) if order is None else torch.tensor(order)
    Jp = J[:, perm][:, :, perm]  # rows and columns in processing order
    assert torch.all(Jp.triu(1).abs() == 0)  # z_i never depends on a later coordinate
    assert Jp.tril(-1).abs().max() > 1e-3  # ...but does depend on earlier ones


@pytest.mark.parametrize("dim", [2, 3, 6])
def test_maf_inverse_takes_dim_passes_and_recovers_input(dim):
    layer = _randomized(MaskedAffineAutoregressive(dim, hidden=10), seed=10 + dim)
    x = torch.randn(7, dim, dtype=torch.float64)
    layer.n_passes = 0
    z, logdet = layer(x)
    assert layer.n_passes == 1
    layer.n_passes = 0
    x_back, logdet_inv = layer.inverse(z)
    assert layer.n_passes == dim
    torch.testing.assert_close(x_back, x, atol=1e-10, rtol=0)
    torch.testing.assert_close(logdet_inv, -logdet, atol=1e-10, rtol=0)


def test_iaf_swaps_the_costs_and_logdets():
    maf = _randomized(MaskedAffineAutoregressive(4, hidden=8), seed=3)
    iaf = Inverted(maf)
    z = torch.randn(5, 4, dtype=torch.float64)
    maf.n_passes = 0
    x, _ = iaf.inverse(z)  # IAF generation: one pass
    assert maf.n_passes == 1
    maf.n_passes = 0
    z_back, logdet = iaf(x)  # IAF density: d passes
    assert maf.n_passes == 4
    torch.testing.assert_close(z_back, z, atol=1e-10, rtol=0)
    J = _jacobians(iaf, x)
    torch.testing.assert_close(logdet, torch.linalg.slogdet(J).logabsdet, atol=1e-9, rtol=0)


def test_maf_stack_density_integrates_to_one():
    # brute force: a Riemann sum of the 2-D density of a random MAF stack on a wide grid
    layers = torch.nn.ModuleList([
        _randomized(MaskedAffineAutoregressive(2, hidden=8, order=torch.tensor(o)), seed=20 + k, scale=0.3)
        for k, o in enumerate([[0, 1], [1, 0]])
    ])
    g = torch.linspace(-8, 8, 401, dtype=torch.float64)
    gx, gy = torch.meshgrid(g, g, indexing="xy")
    grid = torch.stack([gx.flatten(), gy.flatten()], -1)
    with torch.no_grad():
        mass = flow_log_prob(layers, grid).exp().sum() * (g[1] - g[0]) ** 2
        z = torch.randn(4, 2, dtype=torch.float64)
        torch.testing.assert_close(flow_log_prob(layers, flow_sample(layers, z)).shape, torch.Size([4]))
    assert abs(mass.item() - 1) < 1e-3


def test_maf_dtype_and_device_follow_input():
    layer = MaskedAffineAutoregressive(3, hidden=4)
    z, logdet = layer(torch.randn(2, 3))
    assert z.dtype == logdet.dtype == torch.float32
    layer = layer.double()
    x, logdet = layer.inverse(torch.randn(2, 3, dtype=torch.float64))
    assert x.dtype == logdet.dtype == torch.float64
    conv = Invertible1x1Conv(2).double()
    y, logdet = conv(torch.randn(1, 2, 3, 3, dtype=torch.float64))
    assert y.dtype == logdet.dtype == torch.float64
    if torch.cuda.is_available():
        maf = MaskedAffineAutoregressive(3, hidden=4, order=torch.tensor([2, 0, 1], device="cuda")).cuda()
        assert maf(torch.randn(2, 3, device="cuda"))[0].is_cuda


@pytest.mark.parametrize("c,h,w", [(1, 2, 2), (2, 2, 3), (3, 2, 2)])
def test_conv1x1_logdet_matches_full_jacobian(c, h, w):
    conv = _randomized(Invertible1x1Conv(c), seed=c, scale=0.3)
    x = torch.randn(2, c, h, w, dtype=torch.float64)
    y, logdet = conv(x)
    n = c * h * w
    J = torch.autograd.functional.jacobian(lambda v: conv(v[None])[0][0], x[0]).reshape(n, n)
    torch.testing.assert_close(logdet[0], torch.linalg.slogdet(J).logabsdet, atol=1e-10, rtol=0)
    torch.testing.assert_close(logdet[0], h * w * torch.linalg.slogdet(conv.weight()).logabsdet, atol=1e-10, rtol=0)
    # and it really is a per-pixel matrix product
    torch.testing.assert_close(y, torch.nn.functional.conv2d(x, conv.weight()[:, :, None, None]))
    x_back, logdet_inv = conv.inverse(y)
    torch.testing.assert_close(x_back, x, atol=1e-10, rtol=0)
    torch.testing.assert_close(logdet_inv, -logdet)


def test_bad_inputs():
    with pytest.raises(ValueError, match="dim"):
        MaskedAffineAutoregressive(1)
    with pytest.raises(TypeError, match="dim"):
        MaskedAffineAutoregressive(2.0)
    with pytest.raises(ValueError, match="hidden"):
        MaskedAffineAutoregressive(5, hidden=3)
    with pytest.raises(ValueError, match="order"):
        MaskedAffineAutoregressive(3, order=torch.tensor([0, 0, 1]))
    with pytest.raises(ValueError, match="order"):
        MaskedAffineAutoregressive(3, order=torch.tensor([0.0, 1.0, 2.0]))
    with pytest.raises(TypeError, match="order"):
        MaskedAffineAutoregressive(3, order=[0, 1, 2])
    layer = MaskedAffineAutoregressive(3, hidden=4)
    with pytest.raises(ValueError, match="x must have shape"):
        layer(torch.randn(2, 4))
    with pytest.raises(TypeError, match="z must be"):
        layer.inverse(torch.zeros(2, 3, dtype=torch.long))
    with pytest.raises(TypeError, match="layer"):
        Inverted(torch.nn.Linear(2, 2))
    with pytest.raises(ValueError, match="channels"):
        Invertible1x1Conv(0)
    conv = Invertible1x1Conv(3)
    with pytest.raises(ValueError, match="x must have shape"):
        conv(torch.randn(2, 4, 2, 2))
    with pytest.raises(ValueError, match="y must have shape"):
        conv.inverse(torch.randn(3, 2, 2))
