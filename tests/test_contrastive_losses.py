"""Tests for the SimCLR/MoCo pieces of minilib.contrastive and for minilib.data.augment.

Each loss is compared with a brute-force loop over anchors and pairs written from the
definitions (ctr-ntxent) and (ctr-moco), with no masking or cross_entropy tricks.
"""

from __future__ import annotations

import math

import pytest
import torch

from minilib.contrastive import alignment_uniformity, moco_loss, momentum_update, nt_xent_loss
from minilib.data import augment, glyphs

torch.set_num_threads(1)


def _unit(v: torch.Tensor) -> torch.Tensor:
    return v / math.sqrt(float((v * v).sum()))


def brute_nt_xent(z1: torch.Tensor, z2: torch.Tensor, tau: float) -> float:
    views = [_unit(v) for v in torch.cat((z1, z2))]
    n = len(z1)
    total = 0.0
    for a in range(2 * n):
        pos = (a + n) % (2 * n)
        num = math.exp(float(views[a] @ views[pos]) / tau)
        den = sum(math.exp(float(views[a] @ views[b]) / tau) for b in range(2 * n) if b != a)
        total += -math.log(num / den)
    return total / (2 * n)


def brute_moco(q: torch.Tensor, k: torch.Tensor, queue: torch.Tensor, tau: float) -> float:
    total = 0.0
    for i in range(len(q)):
        qi = _unit(q[i])
        pos = math.exp(float(qi @ _unit(k[i])) / tau)
        neg = sum(math.exp(float(qi @ _unit(r)) / tau) for r in queue)
        total += -math.log(pos / (pos + neg))
    return total / len(q)


@pytest.mark.parametrize("n,d,tau", [(2, 3, 0.5), (5, 4, 0.1), (7, 16, 1.0)])
def test_nt_xent_matches_brute_force(n: int, d: int, tau: float) -> None:
    g = torch.Generator().manual_seed(n * 10 + d)
    z1, z2 = torch.randn(n, d, generator=g, dtype=torch.float64), torch.randn(n, d, generator=g, dtype=torch.float64)
    z1 = z1 * 3.0  # unnormalised input: the loss must normalise
    assert float(nt_xent_loss(z1, z2, tau)) == pytest.approx(brute_nt_xent(z1, z2, tau), rel=1e-10)


def test_nt_xent_gradient_matches_finite_differences() -> None:
    g = torch.Generator().manual_seed(3)
    z1 = torch.randn(4, 3, generator=g, dtype=torch.float64, requires_grad=True)
    z2 = torch.randn(4, 3, generator=g, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda a, b: nt_xent_loss(a, b, 0.3), (z1, z2))


@pytest.mark.parametrize("n,k,d,tau", [(1, 1, 2, 0.07), (4, 9, 5, 0.2), (6, 3, 8, 1.0)])
def test_moco_matches_brute_force(n: int, k: int, d: int, tau: float) -> None:
    g = torch.Generator().manual_seed(n + k + d)
    q, kk = torch.randn(n, d, generator=g, dtype=torch.float64), torch.randn(n, d, generator=g, dtype=torch.float64)
    queue = torch.randn(k, d, generator=g, dtype=torch.float64) * 2.0
    assert float(moco_loss(q, kk, queue, tau)) == pytest.approx(brute_moco(q, kk, queue, tau), rel=1e-10)


def test_moco_gradient_flows_into_queries_only() -> None:
    g = torch.Generator().manual_seed(0)
    q = torch.randn(3, 4, generator=g, requires_grad=True)
    k = torch.randn(3, 4, generator=g, requires_grad=True)
    queue = torch.randn(5, 4, generator=g, requires_grad=True)
    moco_loss(q, k, queue).backward()
    assert q.grad is not None and q.grad.abs().sum() > 0
    assert k.grad is None and queue.grad is None


def test_losses_follow_dtype() -> None:
    z = torch.randn(4, 3, dtype=torch.float64)
    assert nt_xent_loss(z, z + 0.1).dtype == torch.float64
    assert moco_loss(z, z + 0.1, z).dtype == torch.float64


def test_momentum_update_matches_formula() -> None:
    torch.manual_seed(0)
    target, online = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.BatchNorm1d(4)), torch.nn.Sequential(
        torch.nn.Linear(3, 4), torch.nn.BatchNorm1d(4)
    )
    online[1].running_mean.fill_(2.0)
    before_t = [p.detach().clone() for p in target.parameters()]
    before_o = [p.detach().clone() for p in online.parameters()]
    momentum_update(target, online, 0.9)
    for t, t0, o0 in zip(target.parameters(), before_t, before_o):
        torch.testing.assert_close(t.detach(), 0.9 * t0 + 0.1 * o0)
    torch.testing.assert_close(target[1].running_mean, torch.full((4,), 0.2))
    # the online network is untouched, and the endpoints: m = 0 copies, m = 1 freezes
    for o, o0 in zip(online.parameters(), before_o):
        assert torch.equal(o.detach(), o0)
    frozen = [p.detach().clone() for p in target.parameters()]
    momentum_update(target, online, 1.0)
    assert all(torch.equal(p.detach(), f) for p, f in zip(target.parameters(), frozen))
    momentum_update(target, online, 0.0)
    assert all(torch.equal(p.detach(), o) for p, o in zip(target.parameters(), before_o))


def test_alignment_uniformity_against_loops() -> None:
    g = torch.Generator().manual_seed(1)
    z1, z2 = torch.randn(5, 3, generator=g, dtype=torch.float64), torch.randn(5, 3, generator=g, dtype=torch.float64)
    a, u = alignment_uniformity(z1, z2, t=2.0)
    u1, u2 = [_unit(v) for v in z1], [_unit(v) for v in z2]
    assert float(a) == pytest.approx(sum(float(((x - y) ** 2).sum()) for x, y in zip(u1, u2)) / 5, rel=1e-10)
    allv = u1 + u2
    # pairs of views of different inputs only: view i and view i + 5 are the same input
    vals = [math.exp(-2.0 * float(((allv[i] - allv[j]) ** 2).sum())) for i in range(10) for j in range(10) if i % 5 != j % 5]
    assert len(vals) == 10 * 8
    assert float(u) == pytest.approx(math.log(sum(vals) / len(vals)), rel=1e-10)


def test_uniformity_of_uniform_sphere_matches_closed_form() -> None:
    # exercise (ctr-ex-uniform): for u, v iid uniform on S^2, log E exp(-2|u - v|^2) = log((1 - e^-8) / 8).
    # With 2 * 1500 points the estimate's standard error is about 0.005; a kernel with the wrong t, a
    # missing square or included self-pairs moves it by 0.1 or more.
    g = torch.Generator().manual_seed(0)
    z1, z2 = torch.randn(1500, 3, generator=g, dtype=torch.float64), torch.randn(1500, 3, generator=g, dtype=torch.float64)
    _, u = alignment_uniformity(z1, z2, t=2.0)
    assert float(u) == pytest.approx(math.log((1 - math.exp(-8)) / 8), abs=0.03)
    # a collapsed embedding has uniformity 0, and its positive pairs alignment 0
    a0, u0 = alignment_uniformity(torch.ones(4, 3), torch.ones(4, 3))
    assert abs(float(a0)) < 1e-6 and abs(float(u0)) < 1e-6


def test_augment_shape_dtype_device_determinism_and_change() -> None:
    x, _ = glyphs(8, generator=torch.Generator().manual_seed(0))
    for dtype in (torch.float32, torch.float64):
        xi = x.to(dtype)
        v1 = augment(xi, torch.Generator().manual_seed(5))
        v2 = augment(xi, torch.Generator().manual_seed(5))
        v3 = augment(xi, torch.Generator().manual_seed(6))
        assert v1.shape == xi.shape and v1.dtype == dtype and v1.device == xi.device
        assert torch.equal(v1, v2)
        assert not torch.equal(v1, v3)
        # it really changes the images: with noise and jitter off, the geometric part alone moves pixels
        assert float((v1 - xi).abs().mean()) > 0.05
    geo = augment(x, torch.Generator().manual_seed(1), jitter=0.0, noise=0.0)
    assert float((geo - x).abs().mean()) > 0.02
    # per-sample randomness: two copies of one image in a batch get different views
    pair = augment(x[:1].repeat(2, 1, 1, 1), torch.Generator().manual_seed(2))
    assert not torch.allclose(pair[0], pair[1])
    # multi-channel input works
    rgb = augment(x.repeat(1, 3, 1, 1), torch.Generator().manual_seed(0))
    assert rgb.shape == (8, 3, 16, 16)


def test_augment_identity_settings_are_identity() -> None:
    # no crop, no rotation, no jitter, no noise: bilinear resampling on the same grid is exact
    x, _ = glyphs(4, generator=torch.Generator().manual_seed(0))
    v = augment(x, torch.Generator().manual_seed(0), crop_scale=(1.0, 1.0), max_rotation=0.0, jitter=0.0, noise=0.0)
    torch.testing.assert_close(v, x, atol=1e-5, rtol=0)


def test_bad_inputs() -> None:
    z = torch.randn(4, 3)
    with pytest.raises(ValueError, match="same shape"):
        nt_xent_loss(z, torch.randn(5, 3))
    with pytest.raises(ValueError, match="zero row"):
        nt_xent_loss(z, torch.cat((torch.zeros(1, 3), z[1:])))
    with pytest.raises(ValueError, match="temperature"):
        nt_xent_loss(z, z, temperature=0.0)
    with pytest.raises(ValueError, match="temperature"):
        moco_loss(z, z, z, temperature=-1.0)
    with pytest.raises(ValueError, match="N >= 2"):
        nt_xent_loss(z[:1], z[:1])
    with pytest.raises(ValueError, match="same shape"):
        moco_loss(z, z[:3], z)
    with pytest.raises(ValueError, match="queue"):
        moco_loss(z, z, torch.randn(6, 5))
    with pytest.raises(ValueError, match="zero row"):
        moco_loss(z, z, torch.zeros(2, 3))
    with pytest.raises(TypeError, match="z1"):
        nt_xent_loss([[1.0]], z)  # type: ignore[arg-type]
    for t in (0.0, -1.0, True):
        with pytest.raises(ValueError, match="t must"):
            alignment_uniformity(z, z, t=t)
    with pytest.raises(ValueError, match="N >= 2"):
        alignment_uniformity(z[:1], z[:1])
    with pytest.raises(ValueError, match="same shape"):
        alignment_uniformity(z, z[:3])
    a, b = torch.nn.Linear(2, 2), torch.nn.Linear(2, 2)
    for m in (-0.1, 1.5, float("nan")):
        with pytest.raises(ValueError, match="m must"):
            momentum_update(a, b, m)
    with pytest.raises(ValueError, match="same parameters"):
        momentum_update(a, torch.nn.Sequential(a, b), 0.5)
    with pytest.raises(ValueError, match="shapes differ"):
        momentum_update(a, torch.nn.Linear(3, 2), 0.5)
    x, _ = glyphs(2)
    with pytest.raises(ValueError, match="B, C, H, W"):
        augment(x[0])
    with pytest.raises(TypeError, match="floating"):
        augment(x.long())
    with pytest.raises(ValueError, match="crop_scale"):
        augment(x, crop_scale=(0.0, 1.0))
    with pytest.raises(ValueError, match="crop_scale"):
        augment(x, crop_scale=(0.8, 0.5))
    with pytest.raises(ValueError, match="max_rotation"):
        augment(x, max_rotation=-1.0)
    with pytest.raises(ValueError, match="jitter"):
        augment(x, jitter=1.0)
    with pytest.raises(ValueError, match="noise"):
        augment(x, noise=-0.1)
    with pytest.raises(TypeError, match="generator"):
        augment(x, generator=0)  # type: ignore[arg-type]
