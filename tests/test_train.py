"""Tests for minilib.train: the fit loop and TimeMLP."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from minilib.nn import sinusoidal_embedding
from minilib.train import TimeMLP, fit

torch.set_num_threads(1)  # tiny ops: on a shared CPU a second thread only adds overhead


class _Point(nn.Module):
    def __init__(self, d: int) -> None:
        super().__init__()
        self.w = nn.Parameter(torch.zeros(d))


def test_fit_reaches_minimum_of_quadratic() -> None:
    # E |w - x|^2 over the data is minimized at the data mean (a closed form)
    g = torch.Generator().manual_seed(0)
    data = torch.randn(256, 3, generator=g) + torch.tensor([1.0, -2.0, 0.5])
    model = _Point(3)
    # minibatches drawn with replacement make the iterates jitter around the minimum; the EMA
    # of the iterates averages that jitter away
    losses = fit(model, lambda m, x: ((m.w - x) ** 2).sum(-1).mean(), data, steps=400, batch_size=256,
                 lr=0.1, ema_decay=0.98, generator=g, progress=False)
    assert len(losses) == 400 and all(isinstance(v, float) for v in losses)
    assert torch.allclose(model.w.detach(), data.mean(0), atol=0.02)
    assert sum(losses[-50:]) < sum(losses[:50])


def test_fit_callable_and_tuple_data() -> None:
    model = _Point(1)
    fit(model, lambda m, x: ((m.w - x) ** 2).mean(), lambda b: torch.full((b, 1), 2.0), steps=400,
        batch_size=8, lr=0.05, progress=False)
    assert abs(float(model.w.detach()) - 2.0) < 1e-2
    # a tuple batch arrives as a tuple of aligned rows
    x = torch.arange(10.0)[:, None]
    y = 2 * torch.arange(10.0)
    seen = []

    def loss(m, batch):
        xb, yb = batch
        seen.append(torch.equal(2 * xb[:, 0], yb))
        return (m.w * 0).sum() + (m.w**2).sum()

    fit(_Point(1), loss, (x, y), steps=5, batch_size=4, progress=False)
    assert all(seen)


def test_fit_is_deterministic_under_generator() -> None:
    data = torch.randn(64, 2, generator=torch.Generator().manual_seed(0))

    def run() -> list[float]:
        torch.manual_seed(0)
        m = nn.Linear(2, 1)
        return fit(m, lambda m, x: m(x).pow(2).mean(), data, steps=20, batch_size=8,
                   generator=torch.Generator().manual_seed(5), progress=False)

    assert run() == run()


def test_fit_ema_is_average_of_iterates() -> None:
    # with a constant gradient (loss = w), Adam moves w by -lr every step: w_k = -k lr.
    # EMA with decay d of the iterates then has a closed form we can compare against.
    lr, d, steps = 0.01, 0.9, 30
    model = _Point(1)
    fit(model, lambda m, _: m.w.sum(), torch.zeros(4, 1), steps=steps, batch_size=2, lr=lr, ema_decay=d, progress=False)
    ema = 0.0
    for k in range(1, steps + 1):
        ema = d * ema + (1 - d) * (-k * lr)
    assert float(model.w.detach()) == pytest.approx(ema, rel=1e-4)


def test_fit_bad_input() -> None:
    m = _Point(1)
    ok = lambda m, x: (m.w**2).sum()
    data = torch.zeros(4, 1)
    with pytest.raises(ValueError, match="batch_size must be positive"):
        fit(m, ok, data, steps=1, batch_size=0, progress=False)
    with pytest.raises(ValueError, match="steps must be non-negative"):
        fit(m, ok, data, steps=-1, batch_size=1, progress=False)
    with pytest.raises(ValueError, match="lr must be positive"):
        fit(m, ok, data, steps=1, batch_size=1, lr=0.0, progress=False)
    with pytest.raises(ValueError, match="ema_decay"):
        fit(m, ok, data, steps=1, batch_size=1, ema_decay=1.0, progress=False)
    with pytest.raises(TypeError, match="data must be"):
        fit(m, ok, [1, 2], steps=1, batch_size=1, progress=False)
    with pytest.raises(ValueError, match="same length"):
        fit(m, ok, (torch.zeros(4), torch.zeros(5)), steps=1, batch_size=1, progress=False)
    with pytest.raises(ValueError, match="scalar"):
        fit(m, lambda m, x: m.w * x, data, steps=1, batch_size=2, progress=False)
    with pytest.raises(FloatingPointError, match="step 0"):
        fit(m, lambda m, x: (m.w * float("nan")).sum(), data, steps=1, batch_size=2, progress=False)
    with pytest.raises(TypeError, match="loss_fn"):
        fit(m, None, data, steps=1, batch_size=1, progress=False)


def test_timemlp_shapes_and_time_forms() -> None:
    torch.manual_seed(0)
    net = TimeMLP(2, hidden=32, depth=2)
    x = torch.randn(6, 2)
    t = torch.arange(6)
    out = net(x, t)
    assert out.shape == (6, 2)
    assert torch.allclose(net(x, t[:, None]), out)
    # a scalar time broadcasts over the batch
    assert torch.allclose(net(x, 3)[3], out[3])
    net64 = TimeMLP(2, hidden=8, depth=1).double()
    assert net64(x.double(), t).dtype == torch.float64
    assert TimeMLP(3, out_dim=1, hidden=8)(torch.randn(4, 3), 0.5).shape == (4, 1)


def test_timemlp_uses_the_time_embedding() -> None:
    # the network sees t only through sinusoidal_embedding(t * time_scale): equal scaled
    # times give equal outputs, different times give different outputs.
    torch.manual_seed(0)
    a = TimeMLP(2, hidden=16, depth=1, time_scale=1000.0)
    b = TimeMLP(2, hidden=16, depth=1, time_scale=1.0)
    b.load_state_dict(a.state_dict())
    x = torch.randn(4, 2)
    assert torch.allclose(a(x, torch.full((4,), 0.25)), b(x, torch.full((4,), 250.0)), atol=1e-5)
    assert not torch.allclose(a(x, 0.1), a(x, 0.9))
    emb = sinusoidal_embedding(torch.tensor([250.0]), 64)
    assert torch.allclose(a.time_mlp(emb), b.time_mlp(emb))


def test_timemlp_class_conditioning() -> None:
    torch.manual_seed(0)
    net = TimeMLP(2, hidden=16, depth=1, n_classes=3)
    x, t = torch.randn(4, 2), torch.zeros(4)
    y = torch.tensor([0, 1, 2, 3])
    out = net(x, t, y)
    assert out.shape == (4, 2)
    assert net.null_class == 3
    # y=None is the null class
    assert torch.allclose(net(x, t), net(x, t, torch.full((4,), 3)))
    assert not torch.allclose(net(x, t, torch.zeros(4, dtype=torch.long)), net(x, t))
    with pytest.raises(ValueError, match="labels in 0..3"):
        net(x, t, torch.tensor([0, 1, 2, 4]))
    with pytest.raises(ValueError, match="n_classes=None"):
        TimeMLP(2, hidden=8)(x, t, y)
    assert TimeMLP(2, hidden=8).null_class is None


def test_timemlp_bad_input() -> None:
    net = TimeMLP(2, hidden=8, depth=1)
    with pytest.raises(ValueError, match=r"x must have shape \(B, 2\)"):
        net(torch.zeros(4, 3), 0)
    with pytest.raises(ValueError, match="t must be"):
        net(torch.zeros(4, 2), torch.zeros(3))
    with pytest.raises(TypeError, match="floating"):
        net(torch.zeros(4, 2, dtype=torch.long), 0)
    with pytest.raises(ValueError, match="emb_dim must be even"):
        TimeMLP(2, emb_dim=7)
    with pytest.raises(ValueError, match="depth"):
        TimeMLP(2, depth=0)
    with pytest.raises(ValueError, match="time_scale"):
        TimeMLP(2, time_scale=0)


def test_timemlp_fits_a_time_dependent_target() -> None:
    # the target f(x, t) = x * t is learnable: the loss drops well below its starting value
    torch.manual_seed(0)
    net = TimeMLP(2, hidden=32, depth=2, time_scale=100.0)
    g = torch.Generator().manual_seed(0)

    def loss(m, x):
        t = torch.rand(x.shape[0], generator=g)
        return ((m(x, t) - x * t[:, None]) ** 2).mean()

    data = torch.randn(512, 2, generator=g)
    losses = fit(net, loss, data, steps=300, batch_size=128, lr=3e-3, generator=g, progress=False)
    assert sum(losses[-20:]) / 20 < 0.2 * sum(losses[:5]) / 5
