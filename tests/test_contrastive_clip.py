"""CLIP and SigLIP losses against loops over pairs; BLIP's hard negatives against their law."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from minilib.contrastive import clip_loss, itm_hard_negatives, siglip_loss


def _unit(v: list[float]) -> list[float]:
    n = math.sqrt(sum(a * a for a in v))
    return [a / n for a in v]


def _clip_loop(x: torch.Tensor, y: torch.Tensor, scale: float) -> float:
    xs = [_unit(r) for r in x.tolist()]
    ys = [_unit(r) for r in y.tolist()]
    n = len(xs)
    s = [[scale * sum(a * b for a, b in zip(xs[i], ys[j])) for j in range(n)] for i in range(n)]
    i2t = sum(-s[i][i] + math.log(sum(math.exp(s[i][j]) for j in range(n))) for i in range(n)) / n
    t2i = sum(-s[j][j] + math.log(sum(math.exp(s[i][j]) for i in range(n))) for j in range(n)) / n
    return (i2t + t2i) / 2


def _siglip_loop(x: torch.Tensor, y: torch.Tensor, t: float, b: float) -> float:
    xs = [_unit(r) for r in x.tolist()]
    ys = [_unit(r) for r in y.tolist()]
    n = len(xs)
    total = 0.0
    for i in range(n):
        for j in range(n):
            z = 1.0 if i == j else -1.0
            u = z * (t * sum(a * c for a, c in zip(xs[i], ys[j])) + b)
            total += math.log1p(math.exp(-u))  # -log sigmoid(u)
    return total / n


@settings(max_examples=30, deadline=None)
@given(n=st.integers(1, 6), d=st.integers(1, 5), seed=st.integers(0, 10_000),
       scale=st.floats(0.1, 30.0), b=st.floats(-10.0, 10.0))
def test_losses_against_loops(n, d, seed, scale, b):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, d, generator=g, dtype=torch.float64) + 0.1
    y = torch.randn(n, d, generator=g, dtype=torch.float64) + 0.1
    x[x.norm(dim=1) < 1e-3] += 1.0
    y[y.norm(dim=1) < 1e-3] += 1.0
    assert float(clip_loss(x, y, scale)) == pytest.approx(_clip_loop(x, y, scale), rel=1e-10, abs=1e-10)
    assert float(siglip_loss(x, y, scale, b)) == pytest.approx(_siglip_loop(x, y, scale, b), rel=1e-10, abs=1e-10)


def test_clip_loss_is_symmetric_and_scale_invariant_in_the_embeddings():
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(5, 4, generator=g), torch.randn(5, 4, generator=g)
    a = clip_loss(x, y, 3.0)
    assert torch.allclose(a, clip_loss(y, x, 3.0)) and torch.allclose(a, clip_loss(7 * x, 0.5 * y, 3.0))


def test_gradients_reach_the_temperature_and_stay_on_dtype():
    x = torch.randn(4, 3, dtype=torch.float64)
    log_s = torch.zeros((), dtype=torch.float64, requires_grad=True)
    t, b = torch.tensor(2.0, dtype=torch.float64, requires_grad=True), torch.tensor(-1.0, dtype=torch.float64, requires_grad=True)
    loss = clip_loss(x, x.flip(0), log_s.exp()) + siglip_loss(x, x, t, b)
    loss.backward()
    assert loss.dtype == torch.float64 and log_s.grad is not None and t.grad is not None and b.grad is not None


@pytest.mark.parametrize("fn", [lambda x, y: clip_loss(x, y, 1.0), lambda x, y: siglip_loss(x, y, 1.0, 0.0)])
def test_bad_embeddings(fn):
    with pytest.raises(ValueError, match="same shape"):
        fn(torch.randn(3, 2), torch.randn(4, 2))
    with pytest.raises(ValueError, match="zero row"):
        fn(torch.zeros(2, 2), torch.randn(2, 2))
    with pytest.raises(TypeError, match="text_emb"):
        fn(torch.randn(2, 2), [[1.0, 0.0]])


def test_bad_scales():
    x = torch.randn(3, 2)
    with pytest.raises(ValueError, match="logit_scale"):
        clip_loss(x, x, 0.0)
    with pytest.raises(ValueError, match="logit_scale"):
        clip_loss(x, x, torch.ones(2))
    with pytest.raises(ValueError, match="t must"):
        siglip_loss(x, x, -1.0, 0.0)
    with pytest.raises(ValueError, match="b must"):
        siglip_loss(x, x, 1.0, float("nan"))


def test_hard_negatives_follow_the_softmax_without_the_positive():
    sim = torch.tensor([[5.0, 1.0, 0.0, -1.0], [0.0, 9.0, 2.0, 2.0], [3.0, 0.0, 0.0, 1.0], [0.5, 0.5, 0.5, 0.5]])
    m = 40_000
    g = torch.Generator().manual_seed(0)
    draws = torch.stack([itm_hard_negatives(sim, g) for _ in range(m)])  # (m, 4)
    for i in range(4):
        logits = sim[i].double().clone()
        logits[i] = -math.inf
        p = torch.softmax(logits, 0)
        freq = torch.bincount(draws[:, i], minlength=4).double() / m
        assert freq[i] == 0.0
        # binomial standard error sqrt(p(1-p)/m) <= 0.0025; 5 SE catches a law that ignores the
        # similarities (uniform 1/3) or includes the positive, both off by > 0.05 here
        assert torch.allclose(freq, p, atol=5 * 0.0025), (i, freq, p)


def test_hard_negatives_bad_input():
    with pytest.raises(ValueError, match="square"):
        itm_hard_negatives(torch.zeros(2, 3))
    with pytest.raises(ValueError, match="N >= 2"):
        itm_hard_negatives(torch.zeros(1, 1))
    with pytest.raises(TypeError, match="similarity"):
        itm_hard_negatives(torch.zeros(2, 2, dtype=torch.long))
    with pytest.raises(ValueError, match="finite"):
        itm_hard_negatives(torch.tensor([[0.0, math.inf], [0.0, 0.0]]))
    with pytest.raises(TypeError, match="generator"):
        itm_hard_negatives(torch.zeros(2, 2), 0)


# --- review of ssl/clip-siglip: the derived gradients against autograd ---------------------------
def test_gradients_match_the_derived_formulas():
    """(clip-temp-grad) in log-scale and (siglip-grad) in t and b, each written out by hand."""
    g = torch.Generator().manual_seed(5)
    n = 7
    x = torch.randn(n, 4, generator=g, dtype=torch.float64)
    y = x + torch.randn(n, 4, generator=g, dtype=torch.float64)
    c = torch.nn.functional.normalize(x, dim=1) @ torch.nn.functional.normalize(y, dim=1).T
    lam = 6.0
    log_lam = torch.tensor(math.log(lam), dtype=torch.float64, requires_grad=True)
    clip_loss(x, y, log_lam.exp()).backward()
    p, q = torch.softmax(lam * c, dim=1), torch.softmax(lam * c, dim=0)
    expect = lam / (2 * n) * (((p * c).sum(1) - c.diag()) + ((q * c).sum(0) - c.diag())).sum()
    assert float(log_lam.grad) == pytest.approx(float(expect), rel=1e-10, abs=1e-12)
    # SigLIP: dL/dl_ij = -(1/N) z sigma(-z l) (siglip-grad divided by t); dl/dt = c_ij, dl/db = 1
    t = torch.tensor(3.0, dtype=torch.float64, requires_grad=True)
    b = torch.tensor(-1.5, dtype=torch.float64, requires_grad=True)
    siglip_loss(x, y, t, b).backward()
    z = 2 * torch.eye(n, dtype=torch.float64) - 1
    w = -(1.0 / n) * z * torch.sigmoid(-z * (3.0 * c - 1.5))  # dL/d(logit_ij)
    assert float(t.grad) == pytest.approx(float((w * c).sum()), rel=1e-10, abs=1e-12)
    assert float(b.grad) == pytest.approx(float(w.sum()), rel=1e-10, abs=1e-12)
