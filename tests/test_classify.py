"""Tests for minilib.classify against torch built-ins, autograd and brute-force Bayes."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from minilib.classify import (
    cross_entropy,
    cross_entropy_grad,
    gaussian_posterior_params,
    log_softmax,
    logsumexp,
    naive_softmax,
    stable_softmax,
)


@given(scale=st.floats(0.1, 1e4), temperature=st.floats(0.05, 20.0), seed=st.integers(0, 1000))
@settings(max_examples=40, deadline=None)
def test_softmax_matches_torch_at_any_scale(scale: float, temperature: float, seed: int) -> None:
    z = torch.randn(4, 7, generator=torch.Generator().manual_seed(seed), dtype=torch.float64) * scale
    torch.testing.assert_close(stable_softmax(z, temperature=temperature), torch.softmax(z / temperature, -1))
    torch.testing.assert_close(log_softmax(z, temperature=temperature), torch.log_softmax(z / temperature, -1))
    torch.testing.assert_close(logsumexp(z), torch.logsumexp(z, -1))


def test_naive_softmax_agrees_when_small_and_overflows_when_large() -> None:
    z = torch.randn(3, 5)
    torch.testing.assert_close(naive_softmax(z), torch.softmax(z, -1))
    big = torch.tensor([[89.0, 0.0]])  # e^89 > float32 max ~ 3.4e38
    assert torch.isnan(naive_softmax(big)).any()
    assert torch.isfinite(stable_softmax(big)).all()


def test_logsumexp_of_fully_masked_row_is_minus_inf() -> None:
    z = torch.tensor([[-math.inf, -math.inf], [0.0, -math.inf]])
    out = logsumexp(z)
    assert out[0] == -math.inf and out[1] == 0.0


def test_cross_entropy_matches_torch_and_gradient_is_p_minus_y() -> None:
    torch.manual_seed(0)
    z = torch.randn(2, 6, 4, dtype=torch.float64, requires_grad=True)
    y = torch.randint(0, 4, (2, 6))
    loss = cross_entropy(z, y)
    want = torch.nn.functional.cross_entropy(z.reshape(-1, 4), y.reshape(-1), reduction="none").reshape(2, 6)
    torch.testing.assert_close(loss, want)
    (g,) = torch.autograd.grad(loss.sum(), z)
    torch.testing.assert_close(cross_entropy_grad(z.detach(), y), g)
    torch.testing.assert_close(g.sum(-1), torch.zeros(2, 6, dtype=torch.float64))


def test_gaussian_posterior_equals_bayes_rule() -> None:
    torch.manual_seed(1)
    K, D = 3, 2
    means = torch.randn(K, D, dtype=torch.float64) * 2
    A = torch.randn(D, D, dtype=torch.float64)
    cov = A @ A.T + 0.5 * torch.eye(D, dtype=torch.float64)
    priors = torch.tensor([0.2, 0.5, 0.3], dtype=torch.float64)
    W, b = gaussian_posterior_params(means, cov, priors)
    x = torch.randn(50, D, dtype=torch.float64) * 3
    # brute force: prior times the full Gaussian density, normalised over classes
    dens = torch.stack(
        [torch.distributions.MultivariateNormal(means[k], cov).log_prob(x) for k in range(K)], -1
    ) + priors.log()
    torch.testing.assert_close(stable_softmax(x @ W.T + b), torch.softmax(dens, -1))


def test_bad_inputs() -> None:
    with pytest.raises(TypeError, match="z must be a floating tensor"):
        stable_softmax(torch.tensor([1, 2]))
    with pytest.raises(TypeError, match="z must be a torch.Tensor"):
        log_softmax([1.0, 2.0])  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="K >= 1"):
        logsumexp(torch.tensor(1.0))
    with pytest.raises(ValueError, match="temperature must be a positive"):
        stable_softmax(torch.zeros(3), temperature=0.0)
    with pytest.raises(TypeError, match="targets must be an integer"):
        cross_entropy(torch.zeros(2, 3), torch.zeros(2))
    with pytest.raises(ValueError, match="targets must have shape"):
        cross_entropy_grad(torch.zeros(2, 3), torch.zeros(3, dtype=torch.long))
    with pytest.raises(ValueError, match="targets must lie in"):
        cross_entropy(torch.zeros(2, 3), torch.tensor([0, 3]))
    eye = torch.eye(2)
    with pytest.raises(ValueError, match="priors must be positive"):
        gaussian_posterior_params(torch.zeros(2, 2), eye, torch.tensor([0.7, 0.7]))
    with pytest.raises(ValueError, match="symmetric positive definite"):
        gaussian_posterior_params(torch.zeros(2, 2), -eye, torch.tensor([0.5, 0.5]))
    with pytest.raises(ValueError, match="cov must have shape"):
        gaussian_posterior_params(torch.zeros(2, 2), torch.eye(3), torch.tensor([0.5, 0.5]))
    with pytest.raises(TypeError, match="means must be a floating"):
        gaussian_posterior_params(torch.zeros(2, 2, dtype=torch.long), eye, torch.tensor([0.5, 0.5]))
