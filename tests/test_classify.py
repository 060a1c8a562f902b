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


# --- depth section: entropy, KL, label smoothing ---

from minilib.classify import (  # noqa: E402
    entropy,
    kl_divergence,
    label_smoothed_cross_entropy,
    label_smoothing_logit_gap,
    soft_cross_entropy,
)


@given(seed=st.integers(0, 1000), k=st.integers(2, 12))
@settings(max_examples=30, deadline=None)
def test_entropy_kl_cross_entropy_match_torch_distributions(seed: int, k: int) -> None:
    g = torch.Generator().manual_seed(seed)
    zp, zq = torch.randn(5, k, generator=g, dtype=torch.float64) * 2, torch.randn(5, k, generator=g, dtype=torch.float64) * 2
    p, q = torch.softmax(zp, -1), torch.softmax(zq, -1)
    P, Q = torch.distributions.Categorical(probs=p), torch.distributions.Categorical(probs=q)
    torch.testing.assert_close(entropy(p), P.entropy())
    torch.testing.assert_close(kl_divergence(p, q), torch.distributions.kl_divergence(P, Q))
    ref = torch.nn.functional.cross_entropy(zq, p, reduction="none")  # probability targets
    torch.testing.assert_close(soft_cross_entropy(zq, p), ref)
    torch.testing.assert_close(entropy(p) + kl_divergence(p, q), ref)
    assert bool((kl_divergence(p, q) >= 0).all())


def test_zero_probabilities_follow_the_conventions() -> None:
    p = torch.tensor([1.0, 0.0, 0.0])
    assert entropy(p).item() == 0.0
    assert kl_divergence(p, torch.tensor([0.5, 0.5, 0.0])).item() == pytest.approx(math.log(2))
    assert math.isinf(kl_divergence(torch.tensor([0.5, 0.5]), torch.tensor([1.0, 0.0])).item())


@given(seed=st.integers(0, 1000), k=st.integers(2, 10), eps=st.floats(0.0, 1.0))
@settings(max_examples=30, deadline=None)
def test_label_smoothing_matches_torch(seed: int, k: int, eps: float) -> None:
    g = torch.Generator().manual_seed(seed)
    z = torch.randn(6, k, generator=g, dtype=torch.float64) * 3
    y = torch.randint(0, k, (6,), generator=g)
    ref = torch.nn.functional.cross_entropy(z, y, label_smoothing=eps, reduction="none")
    torch.testing.assert_close(label_smoothed_cross_entropy(z, y, eps), ref)
    t = (1 - eps) * torch.nn.functional.one_hot(y, k).double() + eps / k
    torch.testing.assert_close(soft_cross_entropy(z, t), ref)


def test_label_smoothing_gap_is_the_minimiser() -> None:
    # minimise over free logits with autograd + LBFGS and compare with the closed form
    for k, eps in [(3, 0.1), (10, 0.2), (2, 0.5)]:
        z = torch.zeros(1, k, dtype=torch.float64, requires_grad=True)
        y = torch.tensor([0])
        opt = torch.optim.LBFGS([z], max_iter=200, tolerance_grad=1e-12, line_search_fn="strong_wolfe")

        def closure(opt=opt, z=z, y=y, eps=eps) -> torch.Tensor:  # type: ignore[no-untyped-def]
            opt.zero_grad()
            loss = torch.nn.functional.cross_entropy(z, y, label_smoothing=eps)
            loss.backward()
            return loss

        opt.step(closure)
        gaps = (z[0, 0] - z[0, 1:]).detach()
        torch.testing.assert_close(gaps, torch.full_like(gaps, label_smoothing_logit_gap(k, eps)), atol=1e-4, rtol=0)  # wrong formulas are off by > 0.03
    assert label_smoothing_logit_gap(3, 0.0) == math.inf
    assert label_smoothing_logit_gap(4, 1.0) == 0.0


def test_depth_functions_follow_dtype_and_reject_bad_input() -> None:
    p = torch.tensor([0.25, 0.75], dtype=torch.float64)
    assert entropy(p).dtype == torch.float64 and kl_divergence(p, p).dtype == torch.float64
    assert label_smoothed_cross_entropy(torch.zeros(2, 3, dtype=torch.float16), torch.tensor([0, 1]), 0.1).dtype == torch.float16
    with pytest.raises(ValueError, match="sum to one"):
        entropy(torch.tensor([0.5, 0.6]))
    with pytest.raises(ValueError, match="non-negative"):
        kl_divergence(torch.tensor([1.5, -0.5]), torch.tensor([0.5, 0.5]))
    with pytest.raises(TypeError, match="p must be a torch.Tensor"):
        entropy([0.5, 0.5])  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="floating"):
        entropy(torch.tensor([1, 0]))
    with pytest.raises(ValueError, match="same shape"):
        kl_divergence(torch.tensor([0.5, 0.5]), torch.tensor([0.2, 0.3, 0.5]))
    with pytest.raises(ValueError, match="target_probs must have the shape"):
        soft_cross_entropy(torch.zeros(2, 3), torch.tensor([0.5, 0.5]))
    with pytest.raises(ValueError, match="eps must be a number in"):
        label_smoothed_cross_entropy(torch.zeros(2, 3), torch.tensor([0, 1]), 1.5)
    with pytest.raises(TypeError, match="targets must be an integer"):
        label_smoothed_cross_entropy(torch.zeros(2, 3), torch.zeros(2), 0.1)
    with pytest.raises(ValueError, match="num_classes must be an integer"):
        label_smoothing_logit_gap(1, 0.1)
