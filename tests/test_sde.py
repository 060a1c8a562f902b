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


# --- ancestral step vs Euler-Maruyama, Langevin corrector, predictor-corrector (sde-ode depth section) ---

from minilib.sde import langevin_corrector, predictor_corrector_sample, reverse_step  # noqa: E402


def test_ancestral_minus_euler_maruyama_is_the_closed_form_remainder():
    # (sde-ancestral-em-gap): A - E = r(b) (x + b s) + b^2 s / 2 with r(b) = 1/sqrt(1-b) - 1 - b/2, exactly
    sde = VPSDE()
    g = torch.Generator().manual_seed(3)
    x = torch.randn(64, 2, generator=g, dtype=D64)
    z = torch.randn(64, 2, generator=g, dtype=D64)
    score = _gauss_score(sde)
    t = 0.6
    for h in (1e-2, 1e-3):
        b = sde.beta(t) * h
        s = score(x, t)
        r = 1 / math.sqrt(1 - b) - 1 - b / 2
        gap = reverse_step(sde, score, x, t, h, z, method="ancestral") - reverse_step(sde, score, x, t, h, z)
        torch.testing.assert_close(gap, r * (x + b * s) + 0.5 * b * b * s, atol=1e-13, rtol=1e-9)
        assert r <= 3 * b * b / (8 * (1 - b))  # the bound of the proposition


@pytest.mark.parametrize("method", ["euler_maruyama", "ancestral"])
def test_reverse_step_sampler_recovers_gaussian_marginal(method):
    # 200 uniform steps from 1 to t_end, noise-free last step: as test_reverse_sde_recovers_gaussian_marginal
    sde = VPSDE()
    g = torch.Generator().manual_seed(4)
    x = math.sqrt(_var(sde, 1.0)) * torch.randn(5_000, 2, generator=g, dtype=D64) + sde.marginal(1.0)[0] * MU
    t_end = 1e-3
    out = predictor_corrector_sample(sde, _gauss_score(sde), x, 200, n_corrector=0, predictor=method,
                                     t_end=t_end, generator=g)
    assert float((out.mean(0) - sde.marginal(t_end)[0] * MU).abs().max()) < 0.03  # > 4 SE, see above
    assert float(out.var(0).sub(_var(sde, t_end)).abs().max()) < 0.03


@pytest.mark.parametrize("sde", SDES, ids=["vp", "ve"])
def test_predictor_corrector_recovers_gaussian_marginal(sde):
    g = torch.Generator().manual_seed(5)
    a1 = sde.marginal(1.0)[0]
    x = a1 * MU + math.sqrt(_var(sde, 1.0)) * torch.randn(5_000, 2, generator=g, dtype=D64)
    t_end = 1e-3
    out = predictor_corrector_sample(sde, _gauss_score(sde), x, 100, n_corrector=1, snr=0.16, t_end=t_end, generator=g)
    # Same 4-SE tolerances as above; the corrector's own bias inflates the variance by a factor about
    # 1 / (1 - r^2), under 3% of 0.25 here (exercise sde-ex-ula-bias), so well inside 0.03
    assert float((out.mean(0) - sde.marginal(t_end)[0] * MU).abs().max()) < 0.03
    assert float(out.var(0).sub(_var(sde, t_end)).abs().max()) < 0.03


def test_langevin_corrector_keeps_exact_gaussian_and_matches_ula_variance():
    # Exact samples of N(m, v I); one step with eps: mean stays m exactly, variance becomes v + eps^2 / v.
    g = torch.Generator().manual_seed(6)
    m, v, n = torch.tensor([0.5, -1.0], dtype=D64), 0.3, 200_000
    x = m + math.sqrt(v) * torch.randn(n, 2, generator=g, dtype=D64)
    score = lambda y, t: -(y - m) / v
    eps = 0.1
    out = langevin_corrector(score, x, 0.5, step_size=eps, generator=g)
    se_mean, se_var = math.sqrt(v / n), v * math.sqrt(2 / n)
    assert float((out.mean(0) - m).abs().max()) < 4 * se_mean
    # one step adds eps^2 / v = 0.033 to the variance: 35 SE (se_var = 9.5e-4), so this tells v + eps^2/v from v
    assert float((out.var(0) - (v + eps * eps / v)).abs().max()) < 4 * se_var
    # many steps with a large eps reach the ULA stationary variance v / (1 - eps / (2 v)), not v
    big = 0.2
    out = langevin_corrector(score, x[:20_000], 0.5, step_size=big, n_steps=60, generator=g)
    ula = v / (1 - big / (2 * v))  # 0.45 vs v = 0.3
    assert float((out.var(0) - ula).abs().max()) < 4 * ula * math.sqrt(2 / 20_000)
    # the SNR rule: eps = 2 alpha (r mean|z| / mean|s|)^2, roughly 2 r^2 v for Gaussian data in 2D
    out = langevin_corrector(score, x[:20_000], 0.5, snr=0.16, generator=torch.Generator().manual_seed(7))
    ref = x[:20_000]
    gz = torch.Generator().manual_seed(7)
    z = torch.randn(ref.shape, generator=gz, dtype=D64)
    s = score(ref, 0.5)
    e = 2 * (0.16 * z.norm(dim=-1).mean() / s.norm(dim=-1).mean()) ** 2
    torch.testing.assert_close(out, ref + e * s + (2 * e).sqrt() * z)
    assert 0.5 * 2 * 0.16**2 * v < float(e) < 2 * 2 * 0.16**2 * v


def test_pc_bad_inputs_and_dtype():
    sde, x, s = VPSDE(), torch.zeros(4, 2), lambda z, t: -z
    with pytest.raises(ValueError, match="beta\\(t\\) \\* h < 1"):
        reverse_step(sde, s, x, 1.0, 0.1, None, method="ancestral")
    with pytest.raises(ValueError, match="needs a VPSDE"):
        reverse_step(VESDE(), s, x, 0.5, 0.01, None, method="ancestral")
    with pytest.raises(ValueError, match="method"):
        reverse_step(sde, s, x, 0.5, 0.01, None, method="heun")
    with pytest.raises(ValueError, match="0 < h <= t"):
        reverse_step(sde, s, x, 0.5, 0.6, None)
    with pytest.raises(ValueError, match="noise must be"):
        reverse_step(sde, s, x, 0.5, 0.01, torch.zeros(3, 2))
    with pytest.raises(ValueError, match="snr"):
        langevin_corrector(s, x, 0.5, snr=0.0)
    with pytest.raises(ValueError, match="n_steps"):
        langevin_corrector(s, x, 0.5, n_steps=0)
    with pytest.raises(ValueError, match="step_size"):
        langevin_corrector(s, x, 0.5, step_size=-1.0)
    with pytest.raises(TypeError, match="floating"):
        langevin_corrector(s, x.long(), 0.5)
    with pytest.raises(ValueError, match="n_corrector"):
        predictor_corrector_sample(sde, s, x, 5, n_corrector=-1)
    with pytest.raises(ValueError, match="predictor"):
        predictor_corrector_sample(sde, s, x, 5, predictor="heun")
    out = predictor_corrector_sample(sde, s, torch.randn(4, 3), 5, generator=torch.Generator().manual_seed(0))
    assert out.dtype == torch.float32 and out.shape == (4, 3)


def test_predictor_corrector_vp_alpha_is_one_step_of_the_forward_chain():
    # One PC step on a coarse grid (n_steps=1: corrector at t=1, then a noise-free EM step to t_end), rebuilt
    # by hand. The VP factor alpha must be exp(-int_{t_end}^1 beta) in (0, 1), the fraction of signal kept by
    # the forward step (Song et al.'s 1 - beta_i); its inverse (> 1) would inflate the corrector step.
    sde, t_end = VPSDE(), 0.6
    score = _gauss_score(sde)
    x = torch.randn(256, 2, generator=torch.Generator().manual_seed(8), dtype=D64)
    out = predictor_corrector_sample(sde, score, x, 1, n_corrector=1, snr=0.16, t_end=t_end,
                                     generator=torch.Generator().manual_seed(9))
    integral = sde.beta_min * (1 - t_end) + 0.5 * (sde.beta_max - sde.beta_min) * (1 - t_end**2)
    alpha = math.exp(-integral)
    z = torch.randn(x.shape, generator=torch.Generator().manual_seed(9), dtype=D64)
    s = score(x, 1.0)
    eps = 2 * alpha * (0.16 * z.norm(dim=-1).mean() / s.norm(dim=-1).mean()) ** 2
    xc = x + eps * s + (2 * eps).sqrt() * z
    b = sde.beta(1.0)
    ref = xc + (0.5 * b * xc + b * score(xc, 1.0)) * (1 - t_end)
    torch.testing.assert_close(out, ref)
