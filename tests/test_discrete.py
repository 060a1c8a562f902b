"""Tests for minilib.discrete: brute force on tiny vocabularies, and the exactness of the NELBO."""

from __future__ import annotations

import itertools
import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from minilib.discrete import markov_denoiser, mask_tokens, masked_diffusion_loss, masked_sample

V, L, MASK = 3, 4, 3
P = torch.tensor([[0.5, 0.5, 0.0], [0.0, 0.2, 0.8], [0.6, 0.1, 0.3]], dtype=torch.float64)


def stationary(P: torch.Tensor) -> torch.Tensor:
    evals, evecs = torch.linalg.eig(P.T)
    v = evecs[:, evals.real.argmax()].real
    return v / v.sum()


PI = stationary(P)


def seq_prob(x: tuple[int, ...]) -> float:
    p = float(PI[x[0]])
    for a, b in zip(x[:-1], x[1:]):
        p *= float(P[a, b])
    return p


ALL = list(itertools.product(range(V), repeat=L))


def brute_posterior(x_t: tuple[int, ...], l: int) -> torch.Tensor:
    """p(x^l | visible tokens of x_t) by enumerating every sequence consistent with x_t."""
    out = torch.zeros(V, dtype=torch.float64)
    for x in ALL:
        if all(xt == MASK or xt == xi for xt, xi in zip(x_t, x)):
            out[x[l]] += seq_prob(x)
    return out / out.sum()


def test_mask_rate() -> None:
    g = torch.Generator().manual_seed(0)
    x0 = torch.zeros(400, 500, dtype=torch.long)
    for t in (0.1, 0.5, 0.9):
        rate = float((mask_tokens(x0, t, 7, generator=g) == 7).float().mean())
        assert abs(rate - t) < 0.005  # 200k Bernoulli draws: std < 0.0012
    t = torch.linspace(0, 1, 400)
    per_seq = (mask_tokens(x0, t, 7, generator=g) == 7).float().mean(-1)
    assert float((per_seq - t).abs().max()) < 0.1
    assert bool((mask_tokens(x0, t, 7, generator=g)[0] == 0).all())  # t = 0 masks nothing


def test_loss_matches_brute_force() -> None:
    g = torch.Generator().manual_seed(1)
    B = 5
    x0 = torch.randint(0, V, (B, L), generator=g)
    t = torch.rand(B, generator=g) * 0.9 + 0.1
    x_t = mask_tokens(x0, t, MASK, generator=g)
    logits = torch.randn(B, L, V, generator=g, dtype=torch.float64)
    expected = 0.0
    for b in range(B):
        for l in range(L):
            if int(x_t[b, l]) == MASK:
                z = [math.exp(float(v)) for v in logits[b, l]]
                expected += -math.log(z[int(x0[b, l])] / sum(z)) / float(t[b])
    expected /= B
    assert abs(float(masked_diffusion_loss(logits, x0, x_t, t, MASK)) - expected) < 1e-10


def test_markov_denoiser_matches_enumeration() -> None:
    for x_t in [(MASK, 1, MASK, MASK), (0, MASK, MASK, 2), (MASK,) * L, (MASK, MASK, 2, MASK)]:
        logp = markov_denoiser(P, PI, torch.tensor([x_t]), MASK)[0]
        for l in range(L):
            if x_t[l] == MASK:
                torch.testing.assert_close(logp[l].exp(), brute_posterior(x_t, l))
            else:
                assert float(logp[l, x_t[l]]) == 0.0


def test_exact_denoiser_nelbo_equals_nll() -> None:
    """With the exact denoiser, E_t E_mask[loss] = -log p(x0) (the bound is tight).

    Integrate over t in closed form: a mask set M has probability t^|M| (1 - t)^(L - |M|), and
    int_0^1 t^(m - 1) (1 - t)^(L - m) dt = B(m, L - m + 1).
    """
    for x0 in [(0, 1, 2, 0), (2, 2, 0, 0), (1, 2, 1, 2)]:
        nelbo = 0.0
        for M in itertools.product([False, True], repeat=L):
            m = sum(M)
            if m == 0:
                continue
            x_t = torch.tensor([[MASK if mk else xi for mk, xi in zip(M, x0)]])
            logp = markov_denoiser(P, PI, x_t, MASK)
            # loss at t = 1 is the sum over masked positions; the 1/t weight goes into the beta integral
            s = float(masked_diffusion_loss(logp, torch.tensor([x0]), x_t, 1.0, MASK))
            nelbo += s * math.gamma(m) * math.gamma(L - m + 1) / math.gamma(L + 1)
        assert abs(nelbo + math.log(seq_prob(x0))) < 1e-9


def test_sampler_with_exact_denoiser_is_exact() -> None:
    """One token per step in random order with exact conditionals samples p exactly."""
    g = torch.Generator().manual_seed(2)
    n = 6000
    x = masked_sample(lambda z: markov_denoiser(P, PI, z, MASK), n, L, steps=L, mask_id=MASK, generator=g)
    counts = {}
    for row in x.tolist():
        counts[tuple(row)] = counts.get(tuple(row), 0) + 1
    tv = 0.5 * sum(abs(counts.get(s, 0) / n - seq_prob(s)) for s in ALL)
    assert tv < 0.06
    assert all(seq_prob(tuple(r)) > 0 for r in x.tolist())


@pytest.mark.parametrize("strategy", ["random", "confidence"])
@pytest.mark.parametrize("block_size", [None, 2])
def test_sampler_fills_everything(strategy: str, block_size: int | None) -> None:
    g = torch.Generator().manual_seed(3)
    calls = []

    def den(z: torch.Tensor) -> torch.Tensor:
        calls.append((z == MASK).sum().item())
        return torch.zeros(*z.shape, V)

    x = masked_sample(den, 3, 6, steps=3, mask_id=MASK, strategy=strategy, block_size=block_size, generator=g)
    assert x.shape == (3, 6) and not bool((x == MASK).any())
    assert calls == sorted(calls, reverse=True)  # masks only ever decrease


@settings(max_examples=25, deadline=None)
@given(t=st.floats(0.05, 1.0), seed=st.integers(0, 10_000))
def test_loss_scales_as_one_over_t(t: float, seed: int) -> None:
    g = torch.Generator().manual_seed(seed)
    x0 = torch.randint(0, V, (2, L), generator=g)
    x_t = x0.clone()
    x_t[:, 0] = MASK
    logits = torch.randn(2, L, V, generator=g)
    a = masked_diffusion_loss(logits, x0, x_t, t, MASK)
    b = masked_diffusion_loss(logits, x0, x_t, 1.0, MASK)
    torch.testing.assert_close(a * t, b)


def test_bad_inputs() -> None:
    x0 = torch.zeros(2, 3, dtype=torch.long)
    with pytest.raises(TypeError, match="integer"):
        mask_tokens(x0.float(), 0.5, 5)
    with pytest.raises(ValueError, match="lie in"):
        mask_tokens(x0, 1.5, 5)
    with pytest.raises(ValueError, match="must not contain"):
        mask_tokens(x0 + 5, 0.5, 5)
    with pytest.raises(ValueError, match="shape"):
        mask_tokens(x0, torch.ones(3), 5)
    with pytest.raises(ValueError, match="mask_id"):
        mask_tokens(x0, 0.5, -1)
    logits = torch.zeros(2, 3, 4)
    with pytest.raises(ValueError, match=r"\(0, 1\]"):
        masked_diffusion_loss(logits, x0, x0, 0.0, 5)
    with pytest.raises(ValueError, match="equal x0"):
        masked_diffusion_loss(logits, x0, x0 + 1, 0.5, 5)
    with pytest.raises(ValueError, match="logits must be"):
        masked_diffusion_loss(torch.zeros(2, 4, 4), x0, x0, 0.5, 5)
    with pytest.raises(TypeError, match="floating"):
        masked_diffusion_loss(logits.long(), x0, x0, 0.5, 5)
    with pytest.raises(ValueError, match="token ids"):
        masked_diffusion_loss(logits, x0 + 4, torch.full_like(x0, 5), 0.5, 5)
    with pytest.raises(ValueError, match="strategy"):
        masked_sample(lambda z: torch.zeros(*z.shape, 2), 1, 4, steps=2, mask_id=2, strategy="greedy")
    with pytest.raises(ValueError, match="divisor"):
        masked_sample(lambda z: torch.zeros(*z.shape, 2), 1, 4, steps=2, mask_id=2, block_size=3)
    with pytest.raises(ValueError, match="mask_id must be >= V"):
        markov_denoiser(P, PI, x0, 1)


def test_meta_tensors() -> None:
    x0 = torch.zeros(2, 3, dtype=torch.long, device="meta")
    assert mask_tokens(x0, 0.5, 5).device.type == "meta"
    loss = masked_diffusion_loss(torch.zeros(2, 3, 4, device="meta"), x0, x0, 0.5, 5)
    assert loss.device.type == "meta" and loss.shape == ()
