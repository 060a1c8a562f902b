"""Tests for minilib.edm: Karras levels, preconditioning identities, and sampler orders of
convergence against the closed-form PF-ODE solution for Gaussian data.

For data y ~ N(mu, c^2 I), x = y + sigma n has law N(mu, (c^2 + sigma^2) I), the ideal denoiser
is D(x; sigma) = mu + c^2 / (c^2 + sigma^2) (x - mu), and the PF-ODE dx/dsigma = (x - D)/sigma
is solved by x(sigma) = mu + sqrt((c^2 + sigma^2) / (c^2 + sigma0^2)) (x(sigma0) - mu).
"""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from minilib.edm import (
    edm_loss,
    euler_sampler,
    heun_sampler,
    karras_sigmas,
    precond,
    precond_denoiser,
    sample_sigmas,
)
from minilib.score import gmm_posterior_mean

D64 = torch.float64
MU = torch.tensor([0.5, -0.3], dtype=D64)
C = 0.5


def _gauss_denoiser(x, sigma):
    return MU + C * C / (C * C + sigma * sigma) * (x - MU)


def _exact_solution(x_start, sigma0, sigma1):
    return MU + math.sqrt((C * C + sigma1**2) / (C * C + sigma0**2)) * (x_start - MU)


def _x_start(sigma_max=80.0, n=64):
    g = torch.Generator().manual_seed(0)
    return MU + math.sqrt(C * C + sigma_max**2) * torch.randn(n, 2, generator=g, dtype=D64)


def test_karras_sigmas_formula_and_shape():
    s = karras_sigmas(18)
    assert s.dtype == D64 and s.shape == (19,)
    assert float(s[0]) == pytest.approx(80.0) and float(s[-2]) == pytest.approx(0.002) and float(s[-1]) == 0.0
    assert bool((s[1:] < s[:-1]).all())
    # evenly spaced in sigma^(1/rho)
    root = s[:-1] ** (1 / 7)
    steps = root[1:] - root[:-1]
    torch.testing.assert_close(steps, steps.mean().expand_as(steps))
    # rho = 1 is uniform in sigma
    torch.testing.assert_close(karras_sigmas(5, 1.0, 5.0, rho=1.0), torch.tensor([5.0, 4.0, 3.0, 2.0, 1.0, 0.0], dtype=D64))
    assert karras_sigmas(1).tolist() == [80.0, 0.0]


@settings(max_examples=40, deadline=None)
@given(sigma=st.floats(1e-3, 1e3), sigma_data=st.floats(0.05, 5.0))
def test_precond_unit_variance_identities(sigma, sigma_data):
    c_skip, c_out, c_in, c_noise = (float(c) for c in precond(sigma, sigma_data))
    # network input x = y + sigma n has variance sigma_data^2 + sigma^2: c_in scales it to 1
    assert c_in**2 * (sigma_data**2 + sigma**2) == pytest.approx(1.0, rel=1e-9)
    # effective target (y - c_skip x) / c_out has unit variance
    var_target = ((1 - c_skip) ** 2 * sigma_data**2 + c_skip**2 * sigma**2) / c_out**2
    assert var_target == pytest.approx(1.0, rel=1e-9)
    # c_skip minimises the target variance (derivative of the numerator vanishes)
    assert -(1 - c_skip) * sigma_data**2 + c_skip * sigma**2 == pytest.approx(0.0, abs=1e-9 * (sigma**2 + sigma_data**2))
    assert c_noise == pytest.approx(math.log(sigma) / 4)


def test_precond_unit_variance_by_monte_carlo():
    g = torch.Generator().manual_seed(1)
    sigma_data, sigma = 0.7, 2.5
    y = sigma_data * torch.randn(200_000, generator=g, dtype=D64)
    x = y + sigma * torch.randn(200_000, generator=g, dtype=D64)
    c_skip, c_out, c_in, _ = precond(sigma, sigma_data)
    assert float((c_in * x).var()) == pytest.approx(1.0, abs=0.01)
    assert float(((y - c_skip * x) / c_out).var()) == pytest.approx(1.0, abs=0.01)
    # tensor input keeps its dtype and shape
    out = precond(torch.tensor([0.1, 1.0, 10.0]), 0.5)
    assert all(c.shape == (3,) and c.dtype == torch.float32 for c in out)


def test_edm_loss_equals_unit_weight_regression_on_effective_target():
    g = torch.Generator().manual_seed(2)
    net = torch.nn.Linear(2, 2).double()
    f = lambda x_in, c_noise: net(x_in) * (1 + c_noise[:, None])
    y = torch.randn(32, 2, generator=g, dtype=D64)
    sigma = sample_sigmas(32, generator=g, dtype=D64)
    noise = torch.randn(32, 2, generator=g, dtype=D64)
    x = y + sigma[:, None] * noise
    c_skip, c_out, c_in, c_noise = precond(sigma, 0.5)
    target = (y - c_skip[:, None] * x) / c_out[:, None]
    direct = (f(c_in[:, None] * x, c_noise) - target).pow(2).sum(-1).mean()
    torch.testing.assert_close(edm_loss(f, y, sigma, noise, 0.5), direct)


def test_precond_denoiser_with_ideal_network_is_ideal_denoiser():
    # For Gaussian data with std sigma_data around 0, the ideal F makes D the posterior mean.
    sd = 0.5
    def ideal_net(x_in, c_noise):
        sigma = (4 * c_noise).exp()
        c_skip, c_out, c_in, _ = precond(sigma, sd)
        x = x_in / c_in[:, None]
        d = sd**2 / (sd**2 + sigma[:, None] ** 2) * x
        return (d - c_skip[:, None] * x) / c_out[:, None]
    x = torch.randn(10, 2, dtype=D64)
    torch.testing.assert_close(precond_denoiser(ideal_net, x, 1.3, sd), sd**2 / (sd**2 + 1.69) * x)


def _errors(sampler, ns, rho):
    x0 = _x_start()
    exact = _exact_solution(x0, 80.0, 0.0)
    out = []
    for n in ns:
        x, nfe = sampler(_gauss_denoiser, x0, karras_sigmas(n, rho=rho))
        out.append((nfe, float((x - exact).abs().max())))
    return out


def test_heun_is_second_order_and_euler_first_order():
    ns = [16, 32, 64, 128]
    heun = _errors(heun_sampler, ns, 7.0)
    euler = _errors(euler_sampler, ns, 7.0)
    assert [nfe for nfe, _ in heun] == [2 * n - 1 for n in ns]
    assert [nfe for nfe, _ in euler] == ns
    heun_orders = [math.log2(a[1] / b[1]) for a, b in zip(heun, heun[1:])]
    euler_orders = [math.log2(a[1] / b[1]) for a, b in zip(euler, euler[1:])]
    assert all(1.7 < p < 2.5 for p in heun_orders[1:]), heun_orders
    assert all(0.8 < p < 1.2 for p in euler_orders[1:]), euler_orders


def test_heun_beats_euler_at_equal_nfe():
    heun = dict(_errors(heun_sampler, [18], 7.0))  # 35 NFE
    euler = dict(_errors(euler_sampler, [35], 7.0))
    assert heun[35] < euler[35]


def test_churn_zero_is_deterministic_and_churn_keeps_distribution():
    x0 = _x_start()
    s = karras_sigmas(32)
    a, _ = heun_sampler(_gauss_denoiser, x0, s)
    b, _ = heun_sampler(_gauss_denoiser, x0, s, s_churn=0.0)
    assert torch.equal(a, b)
    g = torch.Generator().manual_seed(3)
    xs = MU + math.sqrt(C * C + 80.0**2) * torch.randn(20_000, 2, generator=g, dtype=D64)
    # moderate churn (gamma = 10 / 64 per step); heavy churn with few steps adds a visible bias
    out, nfe = heun_sampler(_gauss_denoiser, xs, karras_sigmas(64), s_churn=10.0, generator=g)
    assert nfe == 127
    assert float((out.mean(0) - MU).abs().max()) < 0.02
    assert float((out.var(0) - C * C).abs().max()) < 0.02


def test_exact_mixture_denoiser_samples_mixture():
    means = torch.tensor([[-1.0, 0.0], [1.0, 0.0]], dtype=D64)
    stds = torch.tensor([0.2, 0.2], dtype=D64)
    weights = torch.tensor([0.25, 0.75], dtype=D64)
    den = lambda x, s: gmm_posterior_mean(x, means, stds, weights, sigma=s)
    g = torch.Generator().manual_seed(4)
    x = 80.0 * torch.randn(4000, 2, generator=g, dtype=D64)
    out, _ = heun_sampler(den, x, karras_sigmas(32))
    assert abs(float((out[:, 0] > 0).double().mean()) - 0.75) < 0.03


def test_bad_inputs():
    with pytest.raises(ValueError, match="n must be a positive int"):
        karras_sigmas(0)
    with pytest.raises(ValueError, match="sigma_min < sigma_max"):
        karras_sigmas(10, sigma_min=1.0, sigma_max=0.5)
    with pytest.raises(ValueError, match="rho must be"):
        karras_sigmas(10, rho=0.0)
    with pytest.raises(ValueError, match="sigma must be positive"):
        precond(torch.tensor([1.0, 0.0]))
    with pytest.raises(ValueError, match="sigma_data"):
        precond(1.0, sigma_data=-0.5)
    with pytest.raises(TypeError, match="floating-point"):
        precond(torch.tensor([1, 2]))
    x = torch.zeros(4, 2)
    with pytest.raises(ValueError, match="strictly decreasing"):
        euler_sampler(_gauss_denoiser, x, torch.tensor([1.0, 2.0, 0.0]))
    with pytest.raises(ValueError, match="at least two"):
        heun_sampler(_gauss_denoiser, x, torch.tensor([1.0]))
    with pytest.raises(TypeError, match="1-D floating"):
        heun_sampler(_gauss_denoiser, x, [1.0, 0.0])
    with pytest.raises(ValueError, match=r"shape \(B, D\)"):
        heun_sampler(_gauss_denoiser, torch.zeros(4), karras_sigmas(3))
    with pytest.raises(ValueError, match="denoiser returned shape"):
        euler_sampler(lambda z, s: z[:, :1], x, karras_sigmas(3))
    with pytest.raises(ValueError, match="s_churn"):
        heun_sampler(_gauss_denoiser, x, karras_sigmas(3), s_churn=-1.0)
    with pytest.raises(ValueError, match="need y, noise"):
        edm_loss(lambda a, b: a, x, torch.ones(3), x)


def test_churn_raises_the_level_by_gamma_capped_at_sqrt2_minus_1():
    # A denoiser that records the levels it is called at: with churn, step i starts at
    # sigma_i (1 + gamma), gamma = min(S_churn / N, sqrt(2) - 1), and only for sigma_i in [s_tmin, s_tmax].
    def first_level(**churn):
        calls = []
        def den(x, s):
            calls.append(s)
            return torch.zeros_like(x)
        heun_sampler(den, torch.zeros(3, 2, dtype=D64), karras_sigmas(4), generator=torch.Generator().manual_seed(0), **churn)
        return calls[0]
    assert first_level(s_churn=1.0) == pytest.approx(80.0 * 1.25, rel=1e-12)  # gamma = 1/4
    assert first_level(s_churn=40.0) == pytest.approx(80.0 * math.sqrt(2), rel=1e-12)  # capped
    assert first_level(s_churn=40.0, s_tmax=50.0) == 80.0  # outside [s_tmin, s_tmax]: no churn


def test_sample_sigmas_is_lognormal():
    g = torch.Generator().manual_seed(5)
    s = sample_sigmas(100_000, generator=g, dtype=D64)
    assert s.shape == (100_000,) and s.dtype == D64 and bool((s > 0).all())
    log_s = s.log()
    # mean within 4 SE (SE = 1.2 / sqrt(1e5) = 3.8e-3); std within 1% (its SE is about 0.2%)
    assert abs(float(log_s.mean()) + 1.2) < 4 * 1.2 / math.sqrt(100_000)
    assert float(log_s.std()) == pytest.approx(1.2, rel=0.01)
    with pytest.raises(ValueError, match="n must be a positive int"):
        sample_sigmas(0)
    with pytest.raises(ValueError, match="p_std"):
        sample_sigmas(4, p_std=0.0)


def test_precond_denoiser_bad_input():
    net = lambda x_in, c_noise: x_in
    with pytest.raises(TypeError, match=r"shape \(B, D\)"):
        precond_denoiser(net, torch.zeros(4), 1.0)
    with pytest.raises(TypeError, match=r"shape \(B, D\)"):
        precond_denoiser(net, torch.zeros(4, 2, dtype=torch.long), 1.0)


# ---- depth (issue 16): flow matching as an EDM schedule, and the SDE with a Langevin term ----
from minilib.edm import fm_schedule, langevin_sde_sampler, ode_rhs  # noqa: E402
from minilib.flows import empirical_fm_velocity, gaussian_fm_velocity  # noqa: E402


@pytest.mark.parametrize("t", [0.01, 0.3, 0.5, 0.9, 0.99])
def test_fm_schedule_factors_the_linear_path_and_derivatives_match_finite_differences(t):
    g = torch.Generator().manual_seed(0)
    y, n = torch.randn(5, 3, generator=g, dtype=D64), torch.randn(5, 3, generator=g, dtype=D64)
    s, ds, sig, dsig = fm_schedule(t)
    torch.testing.assert_close(s * (y + sig * n), (1 - t) * y + t * n, atol=1e-12, rtol=1e-12)
    h = 1e-6
    (s_p, _, sig_p, _), (s_m, _, sig_m, _) = fm_schedule(t + h), fm_schedule(t - h)
    assert ds == pytest.approx((s_p - s_m) / (2 * h), rel=1e-6)
    assert dsig == pytest.approx((sig_p - sig_m) / (2 * h), rel=1e-6)


@pytest.mark.parametrize("t", [0.1, 0.5, 0.9])
def test_ode_rhs_with_fm_schedule_is_minus_the_gaussian_fm_velocity(t):
    x = torch.randn(64, 2, generator=torch.Generator().manual_seed(1), dtype=D64)
    got = ode_rhs(_gauss_denoiser, x, *fm_schedule(t))
    torch.testing.assert_close(got, -gaussian_fm_velocity(1 - t, x, MU, C), atol=1e-10, rtol=1e-10)


@pytest.mark.parametrize("t", [0.2, 0.6])
def test_ode_rhs_with_fm_schedule_is_minus_the_empirical_fm_velocity(t):
    g = torch.Generator().manual_seed(2)
    data = torch.randn(7, 2, generator=g, dtype=D64)

    def point_denoiser(x_hat, sigma):  # E[y | y + sigma n = x_hat] for y uniform over the rows of data
        logits = -((x_hat[:, None, :] - data[None]) ** 2).sum(-1) / (2 * sigma**2)
        return torch.softmax(logits, dim=-1) @ data

    x = 1.5 * torch.randn(32, 2, generator=g, dtype=D64)
    got = ode_rhs(point_denoiser, x, *fm_schedule(t))
    torch.testing.assert_close(got, -empirical_fm_velocity(1 - t, x, data), atol=1e-10, rtol=1e-10)


def test_ode_rhs_with_unit_scale_is_the_edm_slope_and_follows_dtype():
    x = torch.randn(8, 2, generator=torch.Generator().manual_seed(3), dtype=torch.float32)
    sigma = 0.7
    got = ode_rhs(lambda z, s: _gauss_denoiser(z.double(), s).float(), x, 1.0, 0.0, sigma, 1.0)
    assert got.dtype == torch.float32 and got.device == x.device
    torch.testing.assert_close(got, (x - _gauss_denoiser(x.double(), sigma).float()) / sigma)


def test_langevin_sde_sampler_with_beta_zero_is_euler():
    x = 10.0 * torch.randn(50, 2, generator=torch.Generator().manual_seed(4), dtype=D64)
    sig = karras_sigmas(12, sigma_max=10.0)
    a, nfe_a = langevin_sde_sampler(_gauss_denoiser, x, sig, 0.0)
    b, nfe_b = euler_sampler(_gauss_denoiser, x, sig)
    torch.testing.assert_close(a, b, atol=1e-12, rtol=1e-12)  # same steps, rounding order differs
    assert nfe_a == nfe_b == 12


def test_langevin_sde_sampler_keeps_the_gaussian_marginal_and_forgets_a_wrong_start():
    # Gaussian data: the marginal at level sigma is N(MU, (C^2 + sigma^2) I); start with half the right std
    g = torch.Generator().manual_seed(5)
    sig = torch.logspace(1.0, -1.0, 801, dtype=D64)
    x0 = MU + 0.5 * math.sqrt(C * C + 100.0) * torch.randn(20_000, 2, generator=g, dtype=D64)
    x, nfe = langevin_sde_sampler(_gauss_denoiser, x0, sig, 2.0, generator=g)
    assert nfe == 800
    sq = ((x - MU) ** 2).flatten()
    se = float(sq.std()) / math.sqrt(sq.numel())
    assert abs(float(sq.mean()) - (C * C + 0.01)) < 4 * se + 0.003  # step bias at 800 steps: 0.0012 (exact variance recursion)
    assert float((x.mean(0) - MU).abs().max()) < 0.02  # SE of each mean about 0.0036


@pytest.mark.parametrize("t", [0, 1, 1.5, -0.1, True, "0.5", float("nan")])
def test_fm_schedule_rejects_bad_t(t):
    with pytest.raises(ValueError, match="t must"):
        fm_schedule(t)


def test_ode_rhs_rejects_bad_input():
    x = torch.zeros(4, 2, dtype=D64)
    with pytest.raises(TypeError, match="x must"):
        ode_rhs(_gauss_denoiser, torch.zeros(4, 2, dtype=torch.int64), 1.0, 0.0, 1.0, 1.0)
    with pytest.raises(TypeError, match="x must"):
        ode_rhs(_gauss_denoiser, torch.zeros(2, dtype=D64), 1.0, 0.0, 1.0, 1.0)
    with pytest.raises(ValueError, match="s must"):
        ode_rhs(_gauss_denoiser, x, 0.0, 0.0, 1.0, 1.0)
    with pytest.raises(ValueError, match="sigma must"):
        ode_rhs(_gauss_denoiser, x, 1.0, 0.0, -1.0, 1.0)
    with pytest.raises(ValueError, match="dsigma must"):
        ode_rhs(_gauss_denoiser, x, 1.0, 0.0, 1.0, float("inf"))
    with pytest.raises(ValueError, match="denoiser returned shape"):
        ode_rhs(lambda z, s: z[:, :1], x, 1.0, 0.0, 1.0, 1.0)


@pytest.mark.parametrize("beta", [-1.0, float("nan"), float("inf"), True, "1"])
def test_langevin_sde_sampler_rejects_bad_beta(beta):
    with pytest.raises(ValueError, match="beta must"):
        langevin_sde_sampler(_gauss_denoiser, torch.zeros(3, 2, dtype=D64), karras_sigmas(4), beta)


def test_langevin_sde_sampler_drops_the_langevin_terms_on_a_last_step_to_zero():
    # single-point data: D == y0, so one Euler step of (edm-ode) to sigma = 0 lands on y0 exactly; a Langevin
    # drift beta|h|(D - x) or noise sqrt(2 beta|h|) sigma z left in that step would move the output off y0
    y0 = torch.tensor([0.3, -1.2], dtype=D64)
    x = 5.0 * torch.randn(40, 2, generator=torch.Generator().manual_seed(6), dtype=D64)
    out, nfe = langevin_sde_sampler(lambda z, s: y0.expand_as(z), x, torch.tensor([5.0, 0.0], dtype=D64), 3.0,
                                    generator=torch.Generator().manual_seed(7))
    assert nfe == 1
    torch.testing.assert_close(out, y0.expand_as(x), atol=1e-12, rtol=0)
