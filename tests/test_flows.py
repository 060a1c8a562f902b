"""Tests for minilib.flows against closed forms, autograd and brute force."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from minilib import flows
from minilib.flows import (
    AffineCoupling,
    cfm_pair,
    cnf_log_prob,
    divergence,
    flow_log_prob,
    flow_sample,
    gaussian_fm_velocity,
    odeint,
    path_coefficients,
    score_from_velocity,
    straightness,
    velocity_from_score,
)


def _randomized_coupling(mask: list[float], seed: int, dtype=torch.float64, scale: float = 0.7) -> AffineCoupling:
    """A coupling layer with random (non-identity) weights."""
    torch.manual_seed(seed)
    layer = AffineCoupling(torch.tensor(mask), hidden=16).to(dtype)
    with torch.no_grad():
        for p in layer.parameters():
            p.copy_(torch.randn_like(p) * scale)
    return layer


# ------------------------------------------------------------------ normalizing flows
@pytest.mark.parametrize("mask", [[1.0, 0.0], [0.0, 1.0], [1.0, 0.0, 1.0, 0.0]])
def test_coupling_invertible(mask):
    layer = _randomized_coupling(mask, 0, torch.float32)
    x = torch.randn(256, len(mask))
    y, logdet = layer(x)
    x_back, logdet_inv = layer.inverse(y)
    assert (x_back - x).abs().max() < 1e-5
    assert torch.allclose(logdet_inv, -logdet, atol=1e-6)
    assert not torch.allclose(y, x)  # the layer is not trivially the identity


@pytest.mark.parametrize("mask", [[1.0, 0.0], [0.0, 1.0]])
def test_coupling_logdet_matches_autograd_jacobian(mask):
    layer = _randomized_coupling(mask, 1)
    xs = torch.randn(6, 2, dtype=torch.float64)
    _, logdet = layer(xs)
    for b in range(xs.shape[0]):
        jac = torch.autograd.functional.jacobian(lambda v: layer(v[None])[0][0], xs[b])  # (2, 2)
        assert torch.allclose(logdet[b], torch.linalg.slogdet(jac).logabsdet, atol=1e-10)
        # the Jacobian is triangular: the pass-through coordinate does not depend on the other
        keep = mask.index(1.0)
        assert jac[keep, 1 - keep] == 0


def test_flow_log_prob_matches_brute_force_stack():
    layers = [_randomized_coupling([1.0, 0.0], 2), _randomized_coupling([0.0, 1.0], 3)]
    x = torch.randn(5, 2, dtype=torch.float64)

    def full_map(v):
        for layer in layers:
            v = layer(v[None])[0][0]
        return v

    lp = flow_log_prob(layers, x)
    for b in range(5):
        z = full_map(x[b])
        jac = torch.autograd.functional.jacobian(full_map, x[b])
        ref = torch.distributions.MultivariateNormal(torch.zeros(2, dtype=torch.float64),
                                                     torch.eye(2, dtype=torch.float64)).log_prob(z)
        assert torch.allclose(lp[b], ref + torch.linalg.slogdet(jac).logabsdet, atol=1e-10)
    z = torch.randn(7, 2, dtype=torch.float64)
    x_gen = flow_sample(layers, z)
    z_back = x_gen
    for layer in layers:
        z_back, _ = layer(z_back)
    assert torch.allclose(z_back, z, atol=1e-10)


def test_flow_density_integrates_to_one():
    layers = [_randomized_coupling([1.0, 0.0], 4, scale=0.3), _randomized_coupling([0.0, 1.0], 5, scale=0.3)]
    g = torch.linspace(-12, 12, 401, dtype=torch.float64)
    xx, yy = torch.meshgrid(g, g, indexing="xy")
    pts = torch.stack([xx.flatten(), yy.flatten()], -1)
    with torch.no_grad():
        mass = flow_log_prob(layers, pts).exp().sum() * (g[1] - g[0]) ** 2
    assert abs(mass.item() - 1) < 1e-2


def test_coupling_bad_inputs():
    with pytest.raises(TypeError, match="mask"):
        AffineCoupling([1, 0])
    with pytest.raises(ValueError, match="0s and 1s"):
        AffineCoupling(torch.tensor([0.5, 1.0]))
    with pytest.raises(ValueError, match="at least one"):
        AffineCoupling(torch.tensor([1.0, 1.0]))
    with pytest.raises(ValueError, match="shape"):
        AffineCoupling(torch.ones(2, 2))
    with pytest.raises(ValueError, match="hidden"):
        AffineCoupling(torch.tensor([1.0, 0.0]), hidden=0)
    layer = AffineCoupling(torch.tensor([1.0, 0.0]))
    with pytest.raises(ValueError, match=r"shape \(B, 2\)"):
        layer(torch.randn(4, 3))
    with pytest.raises(TypeError, match="floating"):
        layer.inverse(torch.ones(4, 2, dtype=torch.long))
    with pytest.raises(TypeError, match="sequence"):
        flow_log_prob(layer, torch.randn(3, 2))
    with pytest.raises(ValueError, match="at least one layer"):
        flow_log_prob([], torch.randn(3, 2))
    with pytest.raises(ValueError, match="x must have shape"):
        flow_log_prob([layer], torch.randn(3))
    with pytest.raises(TypeError, match="inverse"):
        flow_sample([torch.nn.Linear(2, 2)], torch.randn(3, 2))
    with pytest.raises(TypeError, match="z must be"):
        flow_sample([layer], [[0.0, 0.0]])


# ------------------------------------------------------------------ ODE integration
@pytest.mark.parametrize("method,order", [("euler", 1), ("midpoint", 2), ("heun", 2), ("rk4", 4)])
def test_odeint_convergence_order(method, order):
    # dx/dt = cos(t) x has the solution x(t) = x0 exp(sin t)
    x0 = torch.tensor([1.0, -0.5], dtype=torch.float64)
    exact = x0 * math.exp(math.sin(2.0))
    f = lambda t, x: math.cos(t) * x
    errs = [(odeint(f, x0, t1=2.0, steps=n, method=method) - exact).abs().max().item() for n in (16, 32, 64)]
    for coarse, fine in zip(errs, errs[1:]):
        ratio = coarse / fine
        assert 2**order * 0.8 < ratio < 2**order * 1.25, (method, errs)


def test_odeint_backwards_and_tuple_state_and_path():
    # integrate forward then backward: recovers x0 to the method's accuracy
    f = lambda t, x: torch.sin(x) + t
    x0 = torch.randn(10, 2, dtype=torch.float64)
    x1 = odeint(f, x0, steps=200, method="rk4")
    back = odeint(f, x1, t0=1.0, t1=0.0, steps=200, method="rk4")
    assert torch.allclose(back, x0, atol=1e-9)
    # a tuple state integrates each part; here (x, integral of x dt) for x' = -x
    g = lambda t, s: (-s[0], s[0])
    x, area = odeint(g, (torch.ones(3, dtype=torch.float64), torch.zeros(3, dtype=torch.float64)),
                     steps=100, method="rk4")
    assert torch.allclose(x, torch.full((3,), math.exp(-1), dtype=torch.float64), atol=1e-9)
    assert torch.allclose(area, torch.full((3,), 1 - math.exp(-1), dtype=torch.float64), atol=1e-9)
    path = odeint(f, x0, steps=5, return_path=True)
    assert path.shape == (6, 10, 2) and torch.equal(path[0], x0)
    assert torch.equal(path[-1], odeint(f, x0, steps=5))
    tpath = odeint(g, (x0, x0), steps=3, return_path=True)
    assert isinstance(tpath, tuple) and tpath[0].shape == (4, 10, 2)


def test_odeint_bad_inputs():
    f = lambda t, x: x
    x0 = torch.zeros(3)
    with pytest.raises(TypeError, match="callable"):
        odeint(None, x0, steps=2)
    with pytest.raises(TypeError, match="floating"):
        odeint(f, torch.zeros(3, dtype=torch.long), steps=2)
    with pytest.raises(ValueError, match="non-empty"):
        odeint(f, (), steps=2)
    with pytest.raises(ValueError, match="steps"):
        odeint(f, x0, steps=0)
    with pytest.raises(TypeError, match="steps"):
        odeint(f, x0, steps=2.0)
    with pytest.raises(ValueError, match="method"):
        odeint(f, x0, steps=2, method="rk45")
    with pytest.raises(ValueError, match="t1"):
        odeint(f, x0, steps=2, t1=float("nan"))
    with pytest.raises(ValueError, match="shaped like x0"):
        odeint(lambda t, x: x[:2], x0, steps=2)
    with pytest.raises(ValueError, match="shaped like x0"):
        odeint(lambda t, s: s[0], (x0, x0), steps=2)


# ------------------------------------------------------------------ divergence
def _mlp_field(seed: int):
    torch.manual_seed(seed)
    net = torch.nn.Sequential(torch.nn.Linear(3, 32), torch.nn.Tanh(), torch.nn.Linear(32, 3)).double()
    return lambda t, x: net(x) * (1 + t)


def test_divergence_exact_matches_jacobian_trace():
    f = _mlp_field(0)
    x = torch.randn(5, 3, dtype=torch.float64)
    div = divergence(f, 0.3, x)
    for b in range(5):
        jac = torch.autograd.functional.jacobian(lambda v: f(0.3, v[None])[0], x[b])
        assert torch.allclose(div[b], torch.trace(jac), atol=1e-10)


def test_hutchinson_unbiased():
    f = _mlp_field(1)
    x = torch.randn(4, 3, dtype=torch.float64)
    exact = divergence(f, 0.0, x)
    g = torch.Generator().manual_seed(0)
    # f acts row by row, so repeating each point n times gives n independent probes of it
    n = 5000
    est = divergence(f, 0.0, x.repeat_interleave(n, dim=0), method="hutchinson", n_probes=2,
                     generator=g).reshape(4, n).mean(dim=1)
    # the standard error of the mean is sqrt(Var / (2n)), Var = 2 (|S|_F^2 - sum S_ii^2), S = (J + J^T)/2
    for b in range(4):
        jac = torch.autograd.functional.jacobian(lambda v: f(0.0, v[None])[0], x[b])
        sym = (jac + jac.T) / 2
        var = 2 * ((sym**2).sum() - (torch.diagonal(sym) ** 2).sum())
        assert abs(est[b] - exact[b]) < 5 * math.sqrt(var / (2 * n)) + 1e-12


def test_hutchinson_variance_formula():
    # linear field f(x) = A x: each single-probe estimate has the predicted variance
    torch.manual_seed(0)
    A = torch.randn(3, 3, dtype=torch.float64)
    x = torch.zeros(20000, 3, dtype=torch.float64)
    g = torch.Generator().manual_seed(1)
    est = divergence(lambda t, v: v @ A.T, 0.0, x, method="hutchinson", generator=g)
    S = (A + A.T) / 2  # only the symmetric part matters: eps^T A eps = eps^T S eps
    var_pred = 2 * ((S**2).sum() - (torch.diagonal(S) ** 2).sum())
    assert abs(est.mean() - torch.trace(A)) < 5 * math.sqrt(var_pred / 20000)
    assert abs(est.var() / var_pred - 1) < 0.05


def test_divergence_bad_inputs():
    f = lambda t, x: x
    with pytest.raises(TypeError, match="callable"):
        divergence(3, 0.0, torch.zeros(2, 2))
    with pytest.raises(ValueError, match=r"shape \(B, d\)"):
        divergence(f, 0.0, torch.zeros(2))
    with pytest.raises(TypeError, match="floating"):
        divergence(f, 0.0, torch.zeros(2, 2, dtype=torch.int32))
    with pytest.raises(ValueError, match="method"):
        divergence(f, 0.0, torch.zeros(2, 2), method="auto")
    with pytest.raises(ValueError, match="n_probes"):
        divergence(f, 0.0, torch.zeros(2, 2), method="hutchinson", n_probes=0)
    with pytest.raises(TypeError, match="generator"):
        divergence(f, 0.0, torch.zeros(2, 2), generator=0)
    with pytest.raises(ValueError, match="must return a tensor of shape"):
        divergence(lambda t, x: x[:, :1], 0.0, torch.zeros(2, 2))


def test_cnf_log_prob_of_linear_flow():
    # f(t, x) = x pushes N(0, I) at t=0 to N(0, e^2 I) at t=1
    x1 = torch.randn(50, 2, dtype=torch.float64) * 3
    lp = cnf_log_prob(lambda t, x: x, x1, steps=50, method="rk4")
    ref = torch.distributions.Normal(0.0, math.e).log_prob(x1).sum(-1)
    assert torch.allclose(lp, ref, atol=1e-8)
    lp_h = cnf_log_prob(lambda t, x: x, x1, steps=10, divergence_method="hutchinson")
    # for a diagonal Jacobian Hutchinson is exact (eps_i^2 = 1)
    assert torch.allclose(lp_h, cnf_log_prob(lambda t, x: x, x1, steps=10), atol=1e-10)
    with pytest.raises(ValueError, match="divergence_method"):
        cnf_log_prob(lambda t, x: x, x1, steps=2, divergence_method="none")
    with pytest.raises(ValueError, match="x1 must have shape"):
        cnf_log_prob(lambda t, x: x, x1[0], steps=2)
    with pytest.raises(TypeError, match="callable"):
        cnf_log_prob("f", x1, steps=2)


def test_cnf_log_prob_differentiable():
    net = torch.nn.Linear(2, 2).double()
    lp = cnf_log_prob(lambda t, x: net(x), torch.randn(8, 2, dtype=torch.float64), steps=4,
                      create_graph=True)
    lp.mean().backward()
    assert net.weight.grad is not None and torch.isfinite(net.weight.grad).all()


# ------------------------------------------------------------------ flow matching
@given(st.integers(1, 5), st.integers(1, 4), st.booleans())
@settings(max_examples=25, deadline=None)
def test_cfm_pair_broadcasts(B, d, column):
    x0, x1 = torch.randn(B, d, 2, dtype=torch.float64), torch.randn(B, d, 2, dtype=torch.float64)
    t = torch.rand(B, 1, dtype=torch.float64) if column else torch.rand(B, dtype=torch.float64)
    x_t, u_t = cfm_pair(x0, x1, t)
    for b in range(B):
        tb = t.flatten()[b]
        assert torch.allclose(x_t[b], (1 - tb) * x0[b] + tb * x1[b])
    assert torch.equal(u_t, x1 - x0)
    # u_t is the time derivative of x_t along the path
    eps = 1e-3
    x_t2, _ = cfm_pair(x0, x1, t + eps)
    assert torch.allclose((x_t2 - x_t) / eps, u_t, atol=1e-8)


def test_cfm_pair_bad_inputs():
    x = torch.zeros(3, 2)
    with pytest.raises(ValueError, match="same shape"):
        cfm_pair(x, torch.zeros(3, 3), torch.zeros(3))
    with pytest.raises(ValueError, match=r"t must have shape"):
        cfm_pair(x, x, torch.zeros(3, 2))
    with pytest.raises(TypeError, match="floating"):
        cfm_pair(x, x, torch.zeros(3, dtype=torch.long))
    with pytest.raises(TypeError, match="x0 must be"):
        cfm_pair([0.0], x, torch.zeros(3))


@pytest.mark.parametrize("std", [0.5, 2.0])
def test_gaussian_velocity_integrates_to_affine_map(std):
    mean = torch.tensor([1.0, -2.0], dtype=torch.float64)
    x0 = torch.randn(100, 2, dtype=torch.float64)
    x1 = odeint(lambda t, x: gaussian_fm_velocity(t, x, mean, std), x0, steps=200, method="rk4")
    assert torch.allclose(x1, mean + std * x0, atol=1e-7)
    # per-coordinate std as a tensor
    s = torch.tensor([0.5, 3.0], dtype=torch.float64)
    x1 = odeint(lambda t, x: gaussian_fm_velocity(t, x, mean, s), x0, steps=200, method="rk4")
    assert torch.allclose(x1, mean + s * x0, atol=1e-7)


def test_gaussian_velocity_is_conditional_expectation():
    # Monte Carlo: E[x1 - x0 | x_t near x] from samples, against the closed form
    g = torch.Generator().manual_seed(0)
    n, t = 400000, 0.4
    mean, std = torch.tensor([1.5], dtype=torch.float64), 0.5
    x0 = torch.randn(n, 1, generator=g, dtype=torch.float64)
    x1 = mean + std * torch.randn(n, 1, generator=g, dtype=torch.float64)
    x_t, u = cfm_pair(x0, x1, torch.full((n,), t, dtype=torch.float64))
    for centre in (-0.5, 0.3, 1.0):
        near = (x_t[:, 0] - centre).abs() < 0.02
        mc = u[near].mean()
        exact = gaussian_fm_velocity(t, torch.tensor([[centre]], dtype=torch.float64), mean, std)
        assert abs(mc - exact.item()) < 0.03


def test_gaussian_velocity_bad_inputs():
    x, m = torch.zeros(3, 2), torch.zeros(2)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        gaussian_fm_velocity(1.5, x, m, 1.0)
    with pytest.raises(ValueError, match="positive"):
        gaussian_fm_velocity(0.5, x, m, 0.0)
    with pytest.raises(ValueError, match="mean"):
        gaussian_fm_velocity(0.5, x, torch.zeros(3), 1.0)
    with pytest.raises(ValueError, match="std must"):
        gaussian_fm_velocity(0.5, x, m, torch.ones(3))
    with pytest.raises(TypeError, match="floating"):
        gaussian_fm_velocity(0.5, x.long(), m, 1.0)


@pytest.mark.parametrize("path", ["condot", "vp"])
def test_path_coefficients_endpoints_and_derivatives(path):
    t = torch.tensor([0.0, 1.0], dtype=torch.float64)
    a, s, _, _ = path_coefficients(t, path)
    assert torch.allclose(a, torch.tensor([0.0, 1.0], dtype=torch.float64), atol=1e-12)
    assert torch.allclose(s, torch.tensor([1.0, 0.0], dtype=torch.float64), atol=1e-12)
    t = torch.rand(10, dtype=torch.float64, requires_grad=True)
    a, s, da, ds = path_coefficients(t, path)
    (ga,) = torch.autograd.grad(a.sum(), t)
    (gs,) = torch.autograd.grad(s.sum(), t)
    assert torch.allclose(ga, da) and torch.allclose(gs, ds)
    with pytest.raises(ValueError, match="path"):
        path_coefficients(t, "ve")
    with pytest.raises(TypeError, match="floating"):
        path_coefficients(torch.tensor([1]), path)


@pytest.mark.parametrize("path", ["condot", "vp"])
def test_score_velocity_conversion_gaussian(path):
    # data N(mu, s^2 I): along x_t = a x1 + sig x0 the marginal is N(a mu, (a^2 s^2 + sig^2) I);
    # its velocity is E[da x1 + dsig x0 | x_t], computed here from Gaussian conditioning
    torch.manual_seed(0)
    mu, s = torch.tensor([0.7, -1.2], dtype=torch.float64), 1.7
    t = torch.rand(64, dtype=torch.float64) * 0.98 + 0.01
    x = torch.randn(64, 2, dtype=torch.float64) * 2
    a, sig, da, dsig = (c[:, None] for c in path_coefficients(t, path))
    var = a**2 * s**2 + sig**2
    score = -(x - a * mu) / var
    velocity = da * mu + (da * a * s**2 + dsig * sig) / var * (x - a * mu)
    assert torch.allclose(velocity_from_score(score, x, t, path=path), velocity, atol=1e-10)
    assert torch.allclose(score_from_velocity(velocity, x, t[:, None], path=path), score, atol=1e-10)
    if path == "condot":  # agrees with the dedicated closed form
        ref = gaussian_fm_velocity(t, x, mu, s)
        assert torch.allclose(velocity, ref, atol=1e-10)


def test_conversion_bad_inputs():
    x = torch.zeros(3, 2)
    with pytest.raises(ValueError, match="strictly inside"):
        velocity_from_score(x, x, torch.zeros(3))
    with pytest.raises(ValueError, match="same shape"):
        score_from_velocity(torch.zeros(3, 3), x, torch.full((3,), 0.5))
    with pytest.raises(ValueError, match="path"):
        score_from_velocity(x, x, torch.full((3,), 0.5), path="edm")
    with pytest.raises(TypeError, match="score must be"):
        velocity_from_score(None, x, torch.full((3,), 0.5))


# ------------------------------------------------------------------ rectified flow
def test_straightness_zero_for_lines_positive_for_curves():
    t = torch.linspace(0, 1, 11, dtype=torch.float64)[:, None, None]
    a, b = torch.randn(1, 5, 2, dtype=torch.float64), torch.randn(1, 5, 2, dtype=torch.float64)
    assert straightness((1 - t) * a + t * b).abs() < 1e-20
    # a quarter circle of radius 1 at unit angular speed pi/2: |chord - v|^2 has a closed form
    K = 2000
    th = torch.linspace(0, math.pi / 2, K + 1, dtype=torch.float64)
    circle = torch.stack([torch.cos(th), torch.sin(th)], -1)[:, None, :]  # (K+1, 1, 2)
    # chord = (-1, 1), v(t) = (pi/2)(-sin, cos); E|chord - v|^2 = 2 + pi^2/4 - 2 (pi/2)(4/pi)
    exact = 2 + math.pi**2 / 4 - 4
    assert abs(straightness(circle).item() - exact) < 1e-3
    # Brute force on a random path
    p = torch.randn(4, 3, 2, dtype=torch.float64)
    brute = sum(((p[-1] - p[0]) - 3 * (p[k + 1] - p[k])).pow(2).sum(-1).mean() for k in range(3)) / 3
    assert torch.allclose(straightness(p), brute)


def test_straightness_bad_inputs():
    with pytest.raises(ValueError, match="K >= 1"):
        straightness(torch.zeros(1, 3, 2))
    with pytest.raises(ValueError, match="K >= 1"):
        straightness(torch.zeros(5))
    with pytest.raises(TypeError, match="floating"):
        straightness(torch.zeros(3, 3, dtype=torch.long))


def test_public_api_listed():
    for name in flows.__all__:
        assert hasattr(flows, name)


# ------------------------------------------------------------------ empirical (exact) velocity
def test_empirical_velocity_matches_brute_force_posterior():
    torch.manual_seed(0)
    data = torch.randn(7, 3, dtype=torch.float64)
    x = torch.randn(5, 3, dtype=torch.float64) * 2
    for t in (0.0, 0.3, 0.9):
        got = flows.empirical_fm_velocity(t, x, data)
        want = []
        for xb in x:  # Bayes' rule one point at a time, in log space
            logw = torch.stack([-((xb - t * y) ** 2).sum() / (2 * (1 - t) ** 2) for y in data])
            w = torch.exp(logw - logw.max())
            w = w / w.sum()
            want.append(((w[:, None] * data).sum(0) - xb) / (1 - t))
        assert torch.allclose(got, torch.stack(want), atol=1e-12)
    # t as a tensor per row gives the same as the floats
    ts = torch.tensor([0.0, 0.3, 0.9, 0.3, 0.0], dtype=torch.float64)
    per_row = torch.stack([flows.empirical_fm_velocity(float(tb), x[b:b + 1], data)[0] for b, tb in enumerate(ts)])
    assert torch.allclose(flows.empirical_fm_velocity(ts, x, data), per_row, atol=1e-12)


def test_empirical_velocity_one_point_and_t0_collapse():
    c = torch.tensor([[1.5, -2.0]], dtype=torch.float64)
    x = torch.randn(4, 2, dtype=torch.float64)
    # a single data point: every path through x goes to c, so u_t(x) = (c - x) / (1 - t)
    assert torch.allclose(flows.empirical_fm_velocity(0.4, x, c), (c - x) / 0.6, atol=1e-12)
    # at t = 0 the field is the data mean minus x, so one Euler step lands every point on the mean
    data = torch.randn(50, 2, dtype=torch.float64)
    one_step = odeint(lambda t, z: flows.empirical_fm_velocity(t, z, data), x, steps=1)
    assert torch.allclose(one_step, data.mean(0).expand_as(x), atol=1e-12)


def test_empirical_velocity_approaches_gaussian_closed_form():
    # many samples of N(mu, s^2 I): the empirical field tends to (flow-matching-gaussian-velocity)
    g = torch.Generator().manual_seed(0)
    mu, s = torch.tensor([1.0, -0.5], dtype=torch.float64), 0.7
    data = mu + s * torch.randn(200_000, 2, dtype=torch.float64, generator=g)
    # typical points of p_t = N(t mu, sigma_t^2 I), where the posterior has many effective samples
    x = 0.5 * mu + 0.6 * torch.randn(20, 2, dtype=torch.float64, generator=g)
    got = flows.empirical_fm_velocity(0.5, x, data)
    want = gaussian_fm_velocity(0.5, x, mu, s)
    # Monte Carlo error of a posterior mean with ~1e5 effective samples is ~5e-3; a wrong weight
    # (e.g. (1 - t) instead of (1 - t)^2) moves the field by O(1)
    assert (got - want).abs().max() < 0.03


def test_empirical_velocity_keeps_dtype_and_bad_inputs():
    data = torch.randn(10, 2)
    out = flows.empirical_fm_velocity(0.5, torch.randn(3, 2), data)
    assert out.dtype == torch.float32 and out.shape == (3, 2)
    x = torch.randn(3, 2)
    with pytest.raises(ValueError, match="t must lie"):
        flows.empirical_fm_velocity(1.0, x, data)
    with pytest.raises(ValueError, match="t must lie"):
        flows.empirical_fm_velocity(torch.tensor([0.1, 1.0, 0.2]), x, data)
    with pytest.raises(ValueError, match="x must be"):
        flows.empirical_fm_velocity(0.5, x, torch.randn(10, 3))
    with pytest.raises(ValueError, match="at least one point"):
        flows.empirical_fm_velocity(0.5, x, torch.randn(0, 2))
    with pytest.raises(ValueError, match="dtype and device"):
        flows.empirical_fm_velocity(0.5, x, data.double())
    with pytest.raises(TypeError):
        flows.empirical_fm_velocity(0.5, [[0.0, 0.0]], data)
    with pytest.raises(TypeError):
        flows.empirical_fm_velocity("0.5", x, data)
