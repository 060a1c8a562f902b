"""Tests for minilib.sde against closed forms for Gaussian data.

For data x0 ~ N(mu, c^2 I) and a kernel x_t = a(t) x0 + n(t) eps, the marginal is
N(a mu, v(t) I) with v = a^2 c^2 + n^2, its score is -(x - a mu) / v, and the PF-ODE moves
points affinely: x(t) = a(t) mu + sqrt(v(t) / v(s)) (x(s) - a(s) mu).
"""

from __future__ import annotations

import math

import pytest
import torch

from minilib.score import gmm_log_prob, gmm_score
from minilib.sde import VESDE, VPSDE, pf_ode_log_likelihood, pf_ode_sample, reverse_sde_sample

D64 = torch.float64
MU = torch.tensor([1.0, -2.0], dtype=D64)
C = 0.5


def _var(sde, t):
    a, n = sde.marginal(t)
    return a * a * C * C + n * n


def _gauss_score(sde):
    def score(x, t):
        a, _ = sde.marginal(t)
        return -(x - a * MU) / _var(sde, t)

    return score


def _gauss_log_prob(sde, x, t):
    a, _ = sde.marginal(t)
    v = _var(sde, t)
    return -0.5 * x.shape[1] * math.log(2 * math.pi * v) - 0.5 * (x - a * MU).pow(2).sum(-1) / v


SDES = [VPSDE(), VESDE(0.01, 10.0)]


def test_vp_is_the_limit_of_the_discrete_chain():
    # Linear DDPM betas 1e-4..0.02 at T = 1000 (the diffusers convention alpha_bars[t] =
    # prod_{s<=t} (1 - betas[s])) against the continuous alpha_bar at t = (i + 1) / T.
    T = 1000
    betas = torch.linspace(1e-4, 0.02, T, dtype=D64)
    discrete = torch.cumprod(1 - betas, 0)
    sde = VPSDE(0.1, 20.0)
    cont = torch.tensor([sde.alpha_bar((i + 1) / T) for i in range(T)], dtype=D64)
    # log(1 - b) = -b - b^2/2 - ..., and the Riemann sum differs from the integral by O(1/T)
    gap = (discrete.log() - cont.log()).abs()
    bound = float((betas**2).sum()) + 0.5 * 20 / T
    assert float(gap.max()) < bound
    assert float(gap[:100].max()) < 2e-3  # close agreement where alpha_bar is not tiny


@pytest.mark.parametrize("sde", SDES, ids=["vp", "ve"])
def test_diffusion_coefficient_matches_marginal_variance(sde):
    # (sde-linear-moments) with the linear drift f = k(t) x, k = -beta/2 (VP) or 0 (VE): the kernel's
    # a(t) solves da/dt = k a and n(t)^2 solves dn^2/dt = 2 k n^2 + g^2; checked by central differences.
    for t in (0.1, 0.5, 0.9):
        h = 1e-6
        dn2 = (sde.marginal(t + h)[1] ** 2 - sde.marginal(t - h)[1] ** 2) / (2 * h)
        k = -0.5 * sde.beta(t) if isinstance(sde, VPSDE) else 0.0
        assert dn2 == pytest.approx(2 * k * sde.marginal(t)[1] ** 2 + sde.diffusion(t) ** 2, rel=1e-5)
        da = (sde.marginal(t + h)[0] - sde.marginal(t - h)[0]) / (2 * h)
        assert da == pytest.approx(k * sde.marginal(t)[0], rel=1e-5, abs=1e-9)


@pytest.mark.parametrize("sde", SDES, ids=["vp", "ve"])
def test_pf_ode_matches_closed_form_affine_map(sde):
    g = torch.Generator().manual_seed(0)
    a1, _ = sde.marginal(1.0)
    x1 = a1 * MU + math.sqrt(_var(sde, 1.0)) * torch.randn(200, 2, generator=g, dtype=D64)
    t_end = 1e-3
    a0, _ = sde.marginal(t_end)
    exact = a0 * MU + math.sqrt(_var(sde, t_end) / _var(sde, 1.0)) * (x1 - a1 * MU)
    errs = []
    for n in (50, 100, 200):
        out = pf_ode_sample(sde, _gauss_score(sde), x1, n, t_end=t_end, method="heun")
        errs.append(float((out - exact).abs().max()))
    assert errs[-1] < 2e-3 * max(1.0, float(exact.abs().max()))
    # Heun is second order: doubling the steps divides the error by about 4
    assert errs[1] / errs[2] > 3.0
    euler = pf_ode_sample(sde, _gauss_score(sde), x1, 200, t_end=t_end, method="euler")
    assert float((euler - exact).abs().max()) > errs[-1]


@pytest.mark.parametrize("sde", SDES, ids=["vp", "ve"])
def test_reverse_sde_recovers_gaussian_marginal(sde):
    g = torch.Generator().manual_seed(1)
    n = 5_000
    a1, _ = sde.marginal(1.0)
    x1 = a1 * MU + math.sqrt(_var(sde, 1.0)) * torch.randn(n, 2, generator=g, dtype=D64)
    t_end = 1e-3
    out = reverse_sde_sample(sde, _gauss_score(sde), x1, 200, t_end=t_end, generator=g)
    a0, _ = sde.marginal(t_end)
    mean_err = (out.mean(0) - a0 * MU).abs().max()
    # v(t_end) is about C^2 = 0.25: the mean's SE is 0.5 / sqrt(5000) = 0.007 and the variance's about
    # 0.25 sqrt(2 / 5000) = 0.005, so 0.03 is over 4 SE for either; dropping the factor g^2 on the score
    # moves the variance by more than 1 (VP and VE), and a wrong drift sign moves the VP mean by about 0.5
    assert float(mean_err) < 0.03
    assert float(out.var(0).sub(_var(sde, t_end)).abs().max()) < 0.03


@pytest.mark.parametrize("sde", SDES, ids=["vp", "ve"])
def test_pf_ode_log_likelihood_gaussian(sde):
    g = torch.Generator().manual_seed(2)
    t0 = 1e-3
    a0, _ = sde.marginal(t0)
    x = a0 * MU + math.sqrt(_var(sde, t0)) * torch.randn(64, 2, generator=g, dtype=D64)
    prior = lambda z: _gauss_log_prob(sde, z, 1.0)
    logp, x1 = pf_ode_log_likelihood(sde, _gauss_score(sde), x, 200, t_start=t0, prior_log_prob=prior)
    torch.testing.assert_close(logp, _gauss_log_prob(sde, x, t0), atol=5e-3, rtol=1e-3)
    a1, _ = sde.marginal(1.0)
    exact_x1 = a1 * MU + math.sqrt(_var(sde, 1.0) / _var(sde, t0)) * (x - a0 * MU)
    torch.testing.assert_close(x1, exact_x1, atol=5e-3, rtol=1e-3)


def test_pf_ode_log_likelihood_mixture_with_exact_score():
    means = torch.tensor([[-1.0, 0.0], [1.0, 0.5]], dtype=D64)
    stds = torch.tensor([0.3, 0.5], dtype=D64)
    weights = torch.tensor([0.4, 0.6], dtype=D64)
    sde = VPSDE()
    score = lambda x, t: gmm_score(x, means, stds, weights, **sde.noise_kwargs(t))
    x = torch.tensor([[-1.0, 0.1], [1.2, 0.4], [0.0, 0.0]], dtype=D64)
    t0 = 1e-2
    logp, _ = pf_ode_log_likelihood(sde, score, x, 100, t_start=t0)
    exact = gmm_log_prob(x, means, stds, weights, **sde.noise_kwargs(t0))
    torch.testing.assert_close(logp, exact, atol=2e-2, rtol=0)


def test_paths_and_dtype_device_follow_input():
    sde = VPSDE()
    x = torch.randn(5, 3)
    out, path = pf_ode_sample(sde, lambda z, t: -z, x, 4, return_path=True)
    assert out.dtype == torch.float32 and path.shape == (5, 5, 3)
    torch.testing.assert_close(path[0], x)
    out, path = reverse_sde_sample(sde, lambda z, t: -z, x, 3, return_path=True,
                                   generator=torch.Generator().manual_seed(0))
    assert path.shape == (4, 5, 3) and out.dtype == torch.float32


def test_bad_inputs():
    with pytest.raises(ValueError, match="beta_min < beta_max"):
        VPSDE(20.0, 0.1)
    with pytest.raises(ValueError, match="sigma_min < sigma_max"):
        VESDE(1.0, 1.0)
    with pytest.raises(ValueError, match=r"t must lie in \[0, 1\]"):
        VPSDE().alpha_bar(1.5)
    x = torch.zeros(4, 2)
    s = lambda z, t: -z
    with pytest.raises(ValueError, match="n_steps"):
        pf_ode_sample(VPSDE(), s, x, 0)
    with pytest.raises(ValueError, match="t_end"):
        reverse_sde_sample(VPSDE(), s, x, 10, t_end=0.0)
    with pytest.raises(ValueError, match="method"):
        pf_ode_sample(VPSDE(), s, x, 10, method="rk4")
    with pytest.raises(ValueError, match=r"shape \(B, D\)"):
        pf_ode_sample(VPSDE(), s, torch.zeros(2, 2, 2), 10)
    with pytest.raises(TypeError, match="floating"):
        pf_ode_sample(VPSDE(), s, torch.zeros(4, 2, dtype=torch.long), 10)
    with pytest.raises(TypeError, match="VPSDE or VESDE"):
        pf_ode_sample("vp", s, x, 10)
    with pytest.raises(ValueError, match="score_fn returned shape"):
        reverse_sde_sample(VPSDE(), lambda z, t: z[:, :1], x, 2)
    with pytest.raises(ValueError, match="prior_log_prob"):
        pf_ode_log_likelihood(VPSDE(), s, x, 2, prior_log_prob=lambda z: z)
