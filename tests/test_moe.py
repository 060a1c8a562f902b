"""minilib.moe against per-token loops: routing, the balancing loss, capacity and the layer."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from minilib.moe import MoELayer, expert_capacity, load_balancing_loss, top_k_routing


def _route_loop(logits: torch.Tensor, k: int) -> tuple[list[list[float]], list[list[int]]]:
    ws, es = [], []
    for row in logits.tolist():
        m = max(row)
        p = [math.exp(v - m) for v in row]
        z = sum(p)
        p = [v / z for v in p]
        order = sorted(range(len(p)), key=lambda e: (-p[e], e))[:k]
        s = sum(p[e] for e in order)
        ws.append([p[e] / s for e in order])
        es.append(order)
    return ws, es


@settings(max_examples=40, deadline=None)
@given(t=st.integers(1, 8), e=st.integers(1, 6), seed=st.integers(0, 9999), data=st.data())
def test_top_k_routing_against_a_sort(t, e, seed, data):
    k = data.draw(st.integers(1, e))
    logits = torch.randn(t, e, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    logits[:, -1] = logits[:, 0]  # force ties: the lower index must win
    w, ex = top_k_routing(logits, k)
    ws, es = _route_loop(logits, k)
    assert ex.tolist() == es
    assert torch.allclose(w, torch.tensor(ws, dtype=torch.float64), atol=1e-12)


def test_balancing_loss_against_its_definition_and_extremes():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(50, 5, generator=g, dtype=torch.float64, requires_grad=True)
    k = 2
    _, es = _route_loop(logits.detach(), k)
    counts = [sum(row.count(e) for row in es) for e in range(5)]
    p = torch.softmax(logits, 1).mean(0)
    manual = 5 * sum(counts[e] / (50 * k) * p[e] for e in range(5))
    loss = load_balancing_loss(logits, k)
    assert float(loss) == pytest.approx(float(manual.detach()), rel=1e-12)
    loss.backward()
    grad = logits.grad.clone()
    logits.grad = None
    manual.backward()  # f is a constant count in the manual version too
    assert torch.allclose(grad, logits.grad)
    # uniform routing: each expert gets T k / E assignments and probability 1 / E -> exactly 1
    uniform = torch.full((8, 4), -30.0, dtype=torch.float64)
    uniform[torch.arange(8), torch.arange(8) % 4] = 0.0  # near one-hot, spread evenly over experts
    flat = torch.zeros(8, 4, dtype=torch.float64)
    assert float(load_balancing_loss(flat, 1)) == pytest.approx(1.0)
    assert float(load_balancing_loss(uniform, 1)) == pytest.approx(1.0, abs=1e-9)
    collapsed = torch.zeros(8, 4, dtype=torch.float64)
    collapsed[:, 2] = 30.0
    assert float(load_balancing_loss(collapsed, 1)) == pytest.approx(4.0, rel=1e-9)  # E / k
    collapsed[:, 1] = 30.0
    assert float(load_balancing_loss(collapsed, 2)) == pytest.approx(2.0, rel=1e-9)


def _layer_loop(layer: MoELayer, x: torch.Tensor) -> torch.Tensor:
    tokens = x.reshape(-1, x.shape[-1])
    logits = tokens @ layer.router.weight.T
    ws, es = _route_loop(logits.detach(), layer.k)
    t = tokens.shape[0]
    cap = math.inf if layer.capacity_factor is None else math.ceil(layer.capacity_factor * t * layer.k / layer.n_experts)
    used = [0] * layer.n_experts
    kept = [[False] * layer.k for _ in range(t)]
    for s in range(layer.k):  # slot-major priority, then token order
        for i in range(t):
            e = es[i][s]
            if used[e] < cap:
                used[e] += 1
                kept[i][s] = True
    out = torch.zeros_like(tokens)
    for i in range(t):
        for s in range(layer.k):
            if kept[i][s]:
                f = layer.experts[es[i][s]]
                h = torch.nn.functional.silu(f.gate(tokens[i])) * f.up(tokens[i])
                out[i] += ws[i][s] * f.down(h)
    return out.reshape(x.shape)


@pytest.mark.parametrize("k, cf", [(1, None), (2, None), (1, 0.5), (2, 0.75), (3, 1.0)])
def test_layer_against_a_loop(k, cf):
    torch.manual_seed(0)
    layer = MoELayer(6, 10, 4, k, capacity_factor=cf).double()
    x = torch.randn(3, 7, 6, dtype=torch.float64)
    y, logits, kept = layer(x)
    assert y.shape == x.shape and logits.shape == (21, 4) and kept.shape == (21, k)
    assert torch.allclose(y, _layer_loop(layer, x), atol=1e-12)
    if cf is not None:
        counts = torch.bincount(top_k_routing(logits, k)[1][kept], minlength=4)
        assert int(counts.max()) <= expert_capacity(21, 4, k, cf)
        if cf < 1:
            assert not bool(kept.all())  # a capacity below the mean load must drop something


def test_layer_gradients_reach_router_and_experts():
    layer = MoELayer(4, 8, 3, 2)
    y, logits, _ = layer(torch.randn(10, 4))
    (y.square().sum() + load_balancing_loss(logits, 2)).backward()
    assert layer.router.weight.grad is not None and layer.router.weight.grad.abs().sum() > 0
    assert any(p.grad is not None for p in layer.experts.parameters())


def test_bad_input():
    with pytest.raises(ValueError, match="k must be"):
        top_k_routing(torch.zeros(3, 2), 3)
    with pytest.raises(ValueError, match="k must be"):
        load_balancing_loss(torch.zeros(3, 2), 0)
    with pytest.raises(TypeError, match="router_logits"):
        top_k_routing(torch.zeros(3, 2, dtype=torch.long), 1)
    with pytest.raises(ValueError, match="router_logits"):
        top_k_routing(torch.zeros(3), 1)
    with pytest.raises(ValueError, match="k must be"):
        MoELayer(4, 8, 2, 3)
    with pytest.raises(ValueError, match="capacity_factor"):
        MoELayer(4, 8, 2, 1, capacity_factor=0.0)
    with pytest.raises(ValueError, match="x must be"):
        MoELayer(4, 8, 2)(torch.zeros(3, 5))
    with pytest.raises(ValueError, match="capacity_factor"):
        expert_capacity(4, 2, 1, -1.0)


def test_balancing_loss_bounds_and_a_value_below_one():
    # f_e <= 1/k for every expert, so the loss never exceeds E / k (the page's bound)
    g = torch.Generator().manual_seed(1)
    for k in (1, 2, 3):
        for scale in (0.1, 1.0, 10.0):
            z = scale * torch.randn(30, 5, generator=g, dtype=torch.float64)
            assert float(load_balancing_loss(z, k)) <= 5 / k + 1e-12
    # without P = f the loss can dip below 1: the page's E = 3 example gives 3 / 4
    z = torch.full((10, 3), -40.0, dtype=torch.float64)
    z[:5, 0], z[:5, 2] = 1e-3, 0.0
    z[5:, 1], z[5:, 2] = 1e-3, 0.0
    assert float(load_balancing_loss(z, 1)) == pytest.approx(0.75, abs=1e-3)


def test_more_bad_input():
    with pytest.raises(ValueError, match="at least one token"):
        load_balancing_loss(torch.zeros(0, 3), 1)
    with pytest.raises(ValueError, match="n_tokens"):
        expert_capacity(0, 4, 1, 1.0)
    with pytest.raises(ValueError, match="k must be"):
        expert_capacity(8, 4, True, 1.0)
