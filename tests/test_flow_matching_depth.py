"""Tests for the flow-matching depth additions of minilib.flows (issue 16): the exact
assignment solver against scipy and brute force, minibatch OT pairing against the sorted 1D
coupling, the marginal-preserving SDE sampler against Gaussian closed forms, and logit-normal
times against the normal CDF."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.optimize import linear_sum_assignment

from minilib.flows import (
    assignment,
    fm_sde_sample,
    gaussian_fm_velocity,
    logit_normal_times,
    minibatch_ot_pair,
    odeint,
)


def _cost(C: torch.Tensor, perm: torch.Tensor) -> float:
    return C[torch.arange(len(perm)), perm].sum().item()


@pytest.mark.parametrize("n", [1, 2, 3, 7, 20, 50])
def test_assignment_matches_scipy(n):
    rng = np.random.default_rng(n)
    for _ in range(10):
        C = torch.tensor(rng.normal(size=(n, n)))
        perm = assignment(C)
        assert perm.dtype == torch.long and perm.shape == (n,)
        assert sorted(perm.tolist()) == list(range(n))
        r, c = linear_sum_assignment(C.numpy())
        assert _cost(C, perm) == pytest.approx(C.numpy()[r, c].sum(), abs=1e-9)


@settings(max_examples=40, deadline=None)
@given(st.integers(1, 6), st.integers(0, 10_000))
def test_assignment_matches_brute_force_with_ties(n, seed):
    # small integer costs create many ties: the optimal value must still be the minimum
    C = torch.randint(0, 4, (n, n), generator=torch.Generator().manual_seed(seed)).double()
    best = min(_cost(C, torch.tensor(p)) for p in itertools.permutations(range(n)))
    assert _cost(C, assignment(C)) == best


def test_assignment_float32_and_device():
    C = torch.rand(5, 5, dtype=torch.float32)
    perm = assignment(C)
    assert perm.device == C.device
    r, c = linear_sum_assignment(C.double().numpy())
    assert _cost(C.double(), perm) == pytest.approx(C.double().numpy()[r, c].sum(), abs=1e-6)


@pytest.mark.parametrize(
    "bad, exc",
    [
        (torch.zeros(2, 3), ValueError),
        (torch.zeros(0, 0), ValueError),
        (torch.zeros(3), ValueError),
        (torch.tensor([[0.0, float("nan")], [1.0, 2.0]]), ValueError),
        (torch.zeros(2, 2, dtype=torch.long), TypeError),
        ([[0.0]], TypeError),
    ],
)
def test_assignment_bad_input(bad, exc):
    with pytest.raises(exc):
        assignment(bad)


def test_minibatch_ot_pair_is_sorted_coupling_in_1d():
    # in 1D the optimal coupling for the squared distance is monotone: i-th smallest to i-th smallest
    g = torch.Generator().manual_seed(0)
    x0, x1 = torch.randn(40, 1, generator=g), 3 + torch.randn(40, 1, generator=g)
    a, b = minibatch_ot_pair(x0, x1)
    assert torch.equal(a, x0)
    assert torch.equal(torch.sort(b, dim=0).values, torch.sort(x1, dim=0).values)  # a permutation
    order = torch.argsort(x0[:, 0])
    assert torch.equal(b[order, 0], torch.sort(x1[:, 0]).values)


def test_minibatch_ot_pair_2d_matches_scipy_cost():
    g = torch.Generator().manual_seed(1)
    x0, x1 = torch.randn(30, 2, generator=g, dtype=torch.float64), torch.randn(30, 2, generator=g, dtype=torch.float64)
    _, b = minibatch_ot_pair(x0, x1)
    C = torch.cdist(x0, x1) ** 2
    r, c = linear_sum_assignment(C.numpy())
    assert ((x0 - b) ** 2).sum().item() == pytest.approx(C.numpy()[r, c].sum(), rel=1e-10)
    assert ((x0 - b) ** 2).sum() <= ((x0 - x1) ** 2).sum()


def test_minibatch_ot_pair_bad_input():
    with pytest.raises(ValueError, match="same shape"):
        minibatch_ot_pair(torch.zeros(3, 2), torch.zeros(4, 2))
    with pytest.raises(TypeError):
        minibatch_ot_pair(torch.zeros(3, 2, dtype=torch.long), torch.zeros(3, 2, dtype=torch.long))
    with pytest.raises(ValueError):
        minibatch_ot_pair(torch.zeros(()), torch.zeros(()))


@pytest.mark.parametrize("gamma", [0.0, 1.0, 4.0])
def test_fm_sde_sample_gaussian_marginals(gamma):
    # N(0, I) -> N(mu, s^2 I): every marginal is N(t mu, ((1-t)^2 + t^2 s^2) I), closed form
    mu, s, n, K = torch.tensor([1.5, -1.0], dtype=torch.float64), 0.5, 20_000, 200
    x0 = torch.randn(n, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    path = fm_sde_sample(lambda t, x: gaussian_fm_velocity(t, x, mu, s), x0,
                         lambda t: math.sqrt(gamma) * (1 - t), steps=K,
                         generator=torch.Generator().manual_seed(1), return_path=True)
    assert path.shape == (K + 1, n, 2) and path.dtype == torch.float64
    for k in (K // 2, K):
        t = k / K
        x, var = path[k], (1 - t) ** 2 + t**2 * s**2
        # standard errors: sqrt(var / n) for the mean, var sqrt(2 / n) for the variance; 5 SE
        # plus an O(1/K) Euler-Maruyama bias allowance
        assert torch.allclose(x.mean(0), t * mu, atol=5 * math.sqrt(var / n) + 2e-3)
        assert torch.allclose(x.var(0), torch.full((2,), var, dtype=torch.float64),
                              atol=5 * var * math.sqrt(2 / n) + 5e-3)


def test_fm_sde_sample_without_correction_would_fail():
    # the same noise without the score term inflates the variance: the test above can fail
    mu, s, n, K = torch.zeros(1, dtype=torch.float64), 0.5, 20_000, 200
    x0 = torch.randn(n, 1, dtype=torch.float64, generator=torch.Generator().manual_seed(0))

    def no_correction(t, x):  # fm_sde_sample's drift v + a (t v - x), a = g^2 / (2 (1 - t)), is then exactly u
        a = (1 - t) ** 2 / (2 * (1 - t))
        return (gaussian_fm_velocity(t, x, mu, s) + a * x) / (1 + a * t)

    x = fm_sde_sample(no_correction, x0, lambda t: 1 - t, steps=K, generator=torch.Generator().manual_seed(1))
    assert x.var().item() > s**2 + 0.05


def test_fm_sde_sample_zero_noise_is_euler():
    x0 = torch.randn(50, 2, dtype=torch.float64)
    mu = torch.tensor([1.0, 2.0], dtype=torch.float64)
    f = lambda t, x: gaussian_fm_velocity(t, x, mu, 0.7)  # noqa: E731
    a = fm_sde_sample(f, x0, lambda t: 0.0, steps=17)
    b = odeint(f, x0, steps=17, method="euler")
    assert torch.allclose(a, b, atol=1e-12)


def test_fm_sde_sample_bad_input():
    x0 = torch.zeros(4, 2)
    f = lambda t, x: -x  # noqa: E731
    with pytest.raises(ValueError, match=">= 0"):
        fm_sde_sample(f, x0, lambda t: -1.0, steps=3)
    with pytest.raises(ValueError):
        fm_sde_sample(f, x0, lambda t: float("inf"), steps=3)
    with pytest.raises(TypeError):
        fm_sde_sample(f, x0, 1.0, steps=3)
    with pytest.raises(TypeError):
        fm_sde_sample(None, x0, lambda t: 0.0, steps=3)
    with pytest.raises(ValueError):
        fm_sde_sample(f, x0, lambda t: 0.0, steps=0)
    with pytest.raises(ValueError, match="shape"):
        fm_sde_sample(lambda t, x: x[:, :1], x0, lambda t: 0.0, steps=3)
    with pytest.raises(TypeError):
        fm_sde_sample(f, x0.long(), lambda t: 0.0, steps=3)
    with pytest.raises(TypeError):
        fm_sde_sample(f, x0, lambda t: 0.0, steps=3, generator=0)


def test_logit_normal_times_cdf():
    # P(T <= sigmoid(a)) = Phi((a - m) / s); compare the empirical CDF (Kolmogorov-Smirnov bound)
    n, m, s = 50_000, -0.5, 0.8
    t = logit_normal_times(n, loc=m, scale=s, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    assert t.shape == (n,) and t.dtype == torch.float64 and bool(((t > 0) & (t < 1)).all())
    for a in (-2.0, -0.5, 0.0, 1.0):
        emp = (t <= 1 / (1 + math.exp(-a))).double().mean().item()
        exact = 0.5 * (1 + math.erf((a - m) / (s * math.sqrt(2))))
        assert abs(emp - exact) < 5 * math.sqrt(0.25 / n)


def test_logit_normal_times_bad_input():
    with pytest.raises(ValueError):
        logit_normal_times(0)
    with pytest.raises(TypeError):
        logit_normal_times(2.0)
    with pytest.raises(ValueError):
        logit_normal_times(3, scale=0.0)
    with pytest.raises(TypeError):
        logit_normal_times(3, loc="a")
    with pytest.raises(ValueError):
        logit_normal_times(3, dtype=torch.long)
