"""Tests for minilib.score: mixture scores against autograd, Tweedie, Langevin, bad input."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from minilib.score import (
    annealed_langevin,
    dsm_loss,
    gmm_log_prob,
    gmm_posterior_mean,
    gmm_score,
    langevin,
)

D64 = torch.float64


def _mixture(k: int = 3, d: int = 2, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    means = 2.0 * torch.randn(k, d, generator=g, dtype=D64)
    stds = 0.2 + torch.rand(k, generator=g, dtype=D64)
    weights = torch.rand(k, generator=g, dtype=D64) + 0.1
    return means, stds, weights / weights.sum()


def _reference_log_prob(x, means, stds, weights, scale, noise_var):
    """Independent reference: torch.distributions, with the noised parameters written out."""
    comp_std = torch.sqrt(scale**2 * stds**2 + noise_var)  # (K,)
    comp = torch.distributions.Independent(
        torch.distributions.Normal(scale * means, comp_std[:, None].expand_as(means)), 1
    )
    mix = torch.distributions.MixtureSameFamily(torch.distributions.Categorical(probs=weights), comp)
    return mix.log_prob(x)


def _autograd_score(x, means, stds, weights, scale, noise_var):
    x = x.clone().requires_grad_(True)
    (g,) = torch.autograd.grad(_reference_log_prob(x, means, stds, weights, scale, noise_var).sum(), x)
    return g


@pytest.mark.parametrize(
    "kw, scale, noise_var",
    [
        ({}, 1.0, 0.0),
        ({"sigma": 0.7}, 1.0, 0.49),
        ({"alpha_bar": 0.3}, math.sqrt(0.3), 0.7),
        ({"alpha_bar": 1.0}, 1.0, 0.0),
        ({"sigma": 0.0}, 1.0, 0.0),
    ],
)
def test_score_and_log_prob_match_autograd_of_reference(kw, scale, noise_var):
    means, stds, weights = _mixture(4, 3)
    x = 3.0 * torch.randn(50, 3, generator=torch.Generator().manual_seed(1), dtype=D64)
    ref_lp = _reference_log_prob(x, means, stds, weights, scale, noise_var)
    torch.testing.assert_close(gmm_log_prob(x, means, stds, weights, **kw), ref_lp)
    ref = _autograd_score(x, means, stds, weights, scale, noise_var)
    torch.testing.assert_close(gmm_score(x, means, stds, weights, **kw), ref)


@pytest.mark.parametrize("radius", [1e2, 1e3, 1e4])
def test_score_far_from_modes(radius):
    means, stds, weights = _mixture(5, 2)
    angles = torch.linspace(0, 2 * math.pi, 17, dtype=D64)
    x = radius * torch.stack((angles.cos(), angles.sin()), -1)
    # a naive sum of densities underflows here: every component density is exp(-huge) == 0
    assert bool((torch.exp(-0.5 * ((x[:, None] - means) ** 2).sum(-1) / stds**2) == 0).all())
    s = gmm_score(x, means, stds, weights, sigma=0.5)
    assert torch.isfinite(s).all()
    ref = _autograd_score(x, means, stds, weights, 1.0, 0.25)
    torch.testing.assert_close(s, ref, rtol=1e-9, atol=1e-9 * radius)
    # float32 stays finite and close
    s32 = gmm_score(x.float(), means.float(), stds.float(), weights.float(), sigma=0.5)
    assert s32.dtype == torch.float32 and torch.isfinite(s32).all()
    torch.testing.assert_close(s32.double(), ref, rtol=1e-4, atol=1e-3)


def test_far_score_points_back_along_widest_component():
    # Far away the widest component wins the responsibilities: score ~ -(x - m) / v_max.
    means = torch.tensor([[0.0, 0.0], [1.0, 0.0]], dtype=D64)
    stds = torch.tensor([0.1, 1.0], dtype=D64)
    weights = torch.tensor([0.99, 0.01], dtype=D64)
    x = torch.tensor([[1e3, 0.0]], dtype=D64)
    torch.testing.assert_close(gmm_score(x, means, stds, weights), -(x - means[1]) / 1.0)


def test_per_sample_noise_levels_broadcast():
    means, stds, weights = _mixture()
    x = torch.randn(6, 2, dtype=D64)
    ab = torch.linspace(0.05, 1.0, 6, dtype=D64)
    batched = gmm_score(x, means, stds, weights, alpha_bar=ab)
    one_by_one = torch.stack([gmm_score(x[i], means, stds, weights, alpha_bar=float(ab[i])) for i in range(6)])
    torch.testing.assert_close(batched, one_by_one)
    # extra leading dims work too
    x3 = torch.randn(2, 5, 2, dtype=D64)
    out = gmm_score(x3, means, stds, weights, sigma=torch.tensor([[0.1], [2.0]], dtype=D64))
    assert out.shape == (2, 5, 2)


@settings(max_examples=30, deadline=None)
@given(
    ab=st.floats(0.01, 1.0),
    sigma=st.floats(0.0, 5.0),
    seed=st.integers(0, 10_000),
)
def test_tweedie_matches_direct_posterior_mean(ab, sigma, seed):
    """Tweedie: E[x0|x] = (x + (1 - a_bar) score) / sqrt(a_bar) (VP) and x + sigma^2 score (VE)."""
    means, stds, weights = _mixture(3, 2, seed)
    x = 2.0 * torch.randn(20, 2, generator=torch.Generator().manual_seed(seed + 1), dtype=D64)
    vp = gmm_posterior_mean(x, means, stds, weights, alpha_bar=ab)
    tweedie_vp = (x + (1 - ab) * gmm_score(x, means, stds, weights, alpha_bar=ab)) / math.sqrt(ab)
    torch.testing.assert_close(vp, tweedie_vp)
    ve = gmm_posterior_mean(x, means, stds, weights, sigma=sigma)
    torch.testing.assert_close(ve, x + sigma**2 * gmm_score(x, means, stds, weights, sigma=sigma))


def test_posterior_mean_by_monte_carlo():
    means, stds, weights = _mixture(2, 2)
    g = torch.Generator().manual_seed(3)
    n = 400_000
    k = torch.multinomial(weights, n, replacement=True, generator=g)
    x0 = means[k] + stds[k, None] * torch.randn(n, 2, generator=g, dtype=D64)
    xt = x0 + 1.0 * torch.randn(n, 2, generator=g, dtype=D64)
    # E[x0 | xt] is characterised by E[(x0 - f(xt)) h(xt)] = 0 for every h; test a few h.
    resid = x0 - gmm_posterior_mean(xt, means, stds, weights, sigma=1.0)
    for h in (torch.ones(n, dtype=D64), xt[:, 0], torch.tanh(xt[:, 1])):
        assert float((resid * h[:, None]).mean(0).abs().max()) < 0.01


def test_annealed_langevin_samples_a_gaussian_mixture():
    means = torch.tensor([[-2.0, 0.0], [2.0, 0.0]], dtype=D64)
    stds = torch.tensor([0.5, 0.5], dtype=D64)
    weights = torch.tensor([0.3, 0.7], dtype=D64)
    g = torch.Generator().manual_seed(0)
    x = 3.0 * torch.randn(2000, 2, generator=g, dtype=D64)
    sigmas = torch.logspace(math.log10(3.0), math.log10(0.05), 10, dtype=D64)
    x = annealed_langevin(
        lambda y, s: gmm_score(y, means, stds, weights, sigma=s), x, sigmas, 2.5e-4, 30, generator=g
    )
    frac_right = float((x[:, 0] > 0).double().mean())
    assert abs(frac_right - 0.7) < 0.04
    right = x[x[:, 0] > 0]
    assert abs(float(right[:, 0].mean()) - 2.0) < 0.05
    assert abs(float(right[:, 1].std()) - math.sqrt(0.25 + 0.05**2)) < 0.05


def test_langevin_gaussian_stationary_variance_matches_discretisation():
    # For s(x) = -x, the chain x' = (1 - e) x + sqrt(2e) z has stationary variance 2e / (1 - (1-e)^2).
    e = 0.2
    g = torch.Generator().manual_seed(0)
    x = langevin(lambda y: -y, torch.zeros(20000, 1, dtype=D64), e, 100, generator=g)
    expected = 2 * e / (1 - (1 - e) ** 2)
    assert abs(float(x.var()) - expected) < 0.04
    # determinism under a generator
    a = langevin(lambda y: -y, torch.zeros(5, 2), e, 3, generator=torch.Generator().manual_seed(7))
    b = langevin(lambda y: -y, torch.zeros(5, 2), e, 3, generator=torch.Generator().manual_seed(7))
    assert torch.equal(a, b)
    assert torch.equal(langevin(lambda y: -y, a, e, 0), a)


def test_dsm_loss_minimised_by_true_score():
    """DSM = ESM + const: the exact noised score has lower DSM loss than a perturbed one,
    and the difference equals the Fisher divergence term (checked by Monte Carlo)."""
    means, stds, weights = _mixture(2, 2)
    g = torch.Generator().manual_seed(5)
    n = 200_000
    k = torch.multinomial(weights, n, replacement=True, generator=g)
    x0 = means[k] + stds[k, None] * torch.randn(n, 2, generator=g, dtype=D64)
    noise = torch.randn(n, 2, generator=g, dtype=D64)
    sigma = torch.full((n,), 0.8, dtype=D64)
    exact = lambda y, s: gmm_score(y, means, stds, weights, sigma=s)
    shift = torch.tensor([0.3, -0.2], dtype=D64)
    wrong = lambda y, s: exact(y, s) + shift
    gap = dsm_loss(wrong, x0, sigma, noise) - dsm_loss(exact, x0, sigma, noise)
    # ESM gap for a constant shift c: sigma^2 |c|^2
    assert abs(float(gap) - 0.64 * float(shift @ shift)) < 0.01


def test_meta_tensors_give_shapes():
    means = torch.zeros(3, 2, device="meta")
    out = gmm_score(torch.zeros(7, 2, device="meta"), means, torch.ones(3, device="meta"),
                    torch.ones(3, device="meta") / 3, sigma=0.5)
    assert out.shape == (7, 2) and out.device.type == "meta"


# ---------------------------------------------------------------------------------------------
# bad input
def test_bad_inputs():
    means, stds, weights = _mixture()
    x = torch.zeros(4, 2, dtype=D64)
    with pytest.raises(ValueError, match="sum to 1"):
        gmm_score(x, means, stds, weights * 1.1)
    with pytest.raises(ValueError, match="non-negative"):
        gmm_score(x, means, stds, torch.tensor([1.5, -0.25, -0.25], dtype=D64))
    with pytest.raises(ValueError, match="not both"):
        gmm_score(x, means, stds, weights, alpha_bar=0.5, sigma=0.5)
    with pytest.raises(ValueError, match="last dimension"):
        gmm_score(torch.zeros(4, 3, dtype=D64), means, stds, weights)
    with pytest.raises(ValueError, match="stds must have shape"):
        gmm_score(x, means, stds[:2], weights)
    with pytest.raises(ValueError, match="weights must have shape"):
        gmm_score(x, means, stds, weights[None])
    with pytest.raises(ValueError, match=r"means must have shape \(K, D\)"):
        gmm_score(x, means[0], stds, weights)
    with pytest.raises(ValueError, match="stds must be positive"):
        gmm_score(x, means, torch.zeros(3, dtype=D64), weights)
    with pytest.raises(ValueError, match=r"alpha_bar must lie in \(0, 1\]"):
        gmm_score(x, means, stds, weights, alpha_bar=0.0)
    with pytest.raises(ValueError, match="sigma must be non-negative"):
        gmm_score(x, means, stds, weights, sigma=-1.0)
    with pytest.raises(ValueError, match="does not broadcast"):
        gmm_score(x, means, stds, weights, sigma=torch.ones(3, dtype=D64))
    with pytest.raises(TypeError, match="floating-point"):
        gmm_score(torch.zeros(4, 2, dtype=torch.long), means, stds, weights)
    with pytest.raises(TypeError, match="alpha_bar must be a float"):
        gmm_score(x, means, stds, weights, alpha_bar="0.5")
    with pytest.raises(ValueError, match="step_size"):
        langevin(lambda y: -y, x, 0.0, 3)
    with pytest.raises(ValueError, match="n_steps"):
        langevin(lambda y: -y, x, 0.1, -1)
    with pytest.raises(ValueError, match="score_fn returned shape"):
        langevin(lambda y: y[:, :1], x, 0.1, 1)
    with pytest.raises(ValueError, match="strictly decreasing"):
        annealed_langevin(lambda y, s: -y, x, torch.tensor([1.0, 2.0]), 0.1, 1)
    with pytest.raises(ValueError, match=r"sigma must have shape \(B,\)"):
        dsm_loss(lambda y, s: y, x, torch.ones(3, dtype=D64), x)
