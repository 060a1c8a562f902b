"""Tests of minilib.scaling against independent references (brute force, known laws, scipy)."""

import math

import numpy as np
import pytest

from minilib.scaling import (
    ScalingLaw,
    compute_optimal,
    fit_scaling_law,
    transformer_flops,
    warmup_cosine,
)

TRUE = ScalingLaw(E=1.2, A=30.0, B=80.0, alpha=0.4, beta=0.3)


def _grid_data(law, noise=0.0, seed=0):
    Ns = np.geomspace(1e3, 1e6, 6)
    Ds = np.geomspace(1e4, 1e7, 6)
    NN, DD = (a.ravel() for a in np.meshgrid(Ns, Ds))
    L = np.array([law(n, d) for n, d in zip(NN, DD)])
    if noise:
        L = L * np.exp(np.random.default_rng(seed).normal(0.0, noise, L.shape))
    return NN, DD, L


def test_flops_is_six_n_d():
    assert transformer_flops(70e9, 1.4e12) == pytest.approx(5.88e23)
    # forward 2N + backward 4N per token, counted token by token
    assert transformer_flops(10, 3) == sum(2 * 10 + 4 * 10 for _ in range(3))


def test_fit_recovers_noise_free_law():
    fit = fit_scaling_law(*_grid_data(TRUE))
    for name in ("E", "A", "B", "alpha", "beta"):
        assert getattr(fit, name) == pytest.approx(getattr(TRUE, name), rel=1e-4), name


def test_fit_recovers_noisy_law():
    # 1% multiplicative noise: E within 0.1 nats and exponents within 0.05 (a wrong model is far off)
    fit = fit_scaling_law(*_grid_data(TRUE, noise=0.01))
    assert abs(fit.E - TRUE.E) < 0.1
    assert abs(fit.alpha - TRUE.alpha) < 0.05
    assert abs(fit.beta - TRUE.beta) < 0.05


def test_fit_is_robust_to_an_outlier():
    N, D, L = _grid_data(TRUE)
    L[0] *= 1.5  # one diverged run: the Huber loss should ignore it
    fit = fit_scaling_law(N, D, L)
    assert fit.E == pytest.approx(TRUE.E, rel=1e-3)
    assert fit.alpha == pytest.approx(TRUE.alpha, rel=1e-3)


def test_fit_matches_scipy_objective_minimum():
    scipy_opt = pytest.importorskip("scipy.optimize")
    N, D, L = _grid_data(TRUE, noise=0.02, seed=3)
    fit = fit_scaling_law(N, D, L)

    def obj(t):
        a, b, e, al, be = t
        pred = np.logaddexp(np.logaddexp(a - al * np.log(N), b - be * np.log(D)), e)
        r = np.abs(pred - np.log(L))
        return np.where(r <= 1e-3, 0.5 * r**2, 1e-3 * (r - 0.5e-3)).sum()

    ours = obj([math.log(fit.A), math.log(fit.B), math.log(fit.E), fit.alpha, fit.beta])
    ref = scipy_opt.minimize(obj, [math.log(30), math.log(80), math.log(1.2), 0.4, 0.3], method="Nelder-Mead",
                             options={"xatol": 1e-10, "fatol": 1e-14, "maxiter": 20000}).fun
    assert ours <= ref * (1 + 1e-3) + 1e-12


@pytest.mark.parametrize("C", [1e15, 1e20, 5.88e23])
def test_compute_optimal_lagrange_and_brute_force(C):
    law = ScalingLaw(E=1.69, A=406.4, B=410.7, alpha=0.34, beta=0.28)
    N, D = compute_optimal(C, law)
    assert 6 * N * D == pytest.approx(C, rel=1e-12)
    # Lagrange condition: alpha A N^-alpha == beta B D^-beta
    assert law.alpha * law.A * N ** -law.alpha == pytest.approx(law.beta * law.B * D ** -law.beta, rel=1e-9)
    # brute force along the constraint D = C / 6N
    Ns = N * np.exp(np.linspace(-3, 3, 6001))
    losses = law.E + law.A * Ns ** -law.alpha + law.B * (C / (6 * Ns)) ** -law.beta
    assert Ns[losses.argmin()] == pytest.approx(N, rel=2e-3)
    assert law(N, D) <= losses.min() + 1e-12
    for f in (0.9, 1.1):
        assert law(N, D) < law(N * f, D / f)


def test_compute_optimal_exponents():
    law = ScalingLaw(E=1.0, A=5.0, B=7.0, alpha=0.5, beta=0.25)
    (n1, d1), (n2, d2) = compute_optimal(1e18, law), compute_optimal(1e20, law)
    assert math.log(n2 / n1) / math.log(100) == pytest.approx(0.25 / 0.75)
    assert math.log(d2 / d1) / math.log(100) == pytest.approx(0.5 / 0.75)


def test_warmup_cosine_shape():
    S, W, peak, lo = 100, 10, 1.0, 0.1
    assert warmup_cosine(0, S, W, peak, lo) == 0.0
    assert warmup_cosine(W, S, W, peak, lo) == pytest.approx(peak)
    assert warmup_cosine(S, S, W, peak, lo) == pytest.approx(lo)
    assert warmup_cosine(W + (S - W) / 2, S, W, peak, lo) == pytest.approx((peak + lo) / 2)
    warm = [warmup_cosine(s, S, W, peak, lo) for s in range(W + 1)]
    assert np.all(np.diff(warm) > 0) and np.allclose(np.diff(warm), peak / W)
    decay = [warmup_cosine(s, S, W, peak, lo) for s in range(W, S + 1)]
    assert np.all(np.diff(decay) < 0)
    assert warmup_cosine(0, S, 0, peak, lo) == pytest.approx(peak)
    assert warmup_cosine(5, 5, 5, peak) == pytest.approx(peak)


def test_bad_input():
    with pytest.raises(ValueError, match="n_params"):
        transformer_flops(-1, 10)
    with pytest.raises(ValueError, match="n_tokens"):
        transformer_flops(1, float("nan"))
    with pytest.raises(ValueError, match="alpha"):
        ScalingLaw(E=1.0, A=1.0, B=1.0, alpha=0.0, beta=0.3)
    with pytest.raises(ValueError, match="same length"):
        fit_scaling_law([1, 2, 3, 4, 5], [1, 2, 3, 4, 5], [1, 2, 3, 4])
    with pytest.raises(ValueError, match="at least 5"):
        fit_scaling_law([1, 2], [1, 2], [1, 2])
    with pytest.raises(ValueError, match="losses"):
        fit_scaling_law([1, 2, 3, 4, 5], [1, 2, 3, 4, 5], [1, 2, 3, 4, -5])
    with pytest.raises(TypeError, match="n_params"):
        fit_scaling_law("abc", [1], [1])
    with pytest.raises(TypeError, match="law"):
        compute_optimal(1e20, (1.0, 2.0))
    with pytest.raises(ValueError, match="compute"):
        compute_optimal(0.0, TRUE)
    with pytest.raises(ValueError, match="warmup_steps"):
        warmup_cosine(0, 10, 11, 1.0)
    with pytest.raises(ValueError, match="step"):
        warmup_cosine(11, 10, 1, 1.0)
    with pytest.raises(ValueError, match="min_lr"):
        warmup_cosine(1, 10, 1, 1.0, min_lr=2.0)
    with pytest.raises(ValueError, match="total_steps"):
        warmup_cosine(0, 0, 0, 1.0)
    with pytest.raises(ValueError, match="peak_lr"):
        warmup_cosine(0, 10, 1, 0.0)


def test_compute_optimal_property_based():
    hyp = pytest.importorskip("hypothesis")
    st = hyp.strategies

    @hyp.settings(max_examples=60, deadline=None)
    @hyp.given(A=st.floats(1e-2, 1e4), B=st.floats(1e-2, 1e4), alpha=st.floats(0.05, 2.0),
               beta=st.floats(0.05, 2.0), log10_C=st.floats(5.0, 25.0))
    def check(A, B, alpha, beta, log10_C):
        law = ScalingLaw(E=1.0, A=A, B=B, alpha=alpha, beta=beta)
        C = 10.0**log10_C
        N, D = compute_optimal(C, law)
        assert 6 * N * D == pytest.approx(C, rel=1e-9)
        # moving along the constraint in either direction never lowers the loss
        for f in (0.97, 1.03):
            assert law(N, D) <= law(N * f, D / f) * (1 + 1e-12)

    check()


def test_fit_bad_options():
    N, D, L = _grid_data(TRUE)
    with pytest.raises(ValueError, match="delta"):
        fit_scaling_law(N, D, L, delta=0.0)
    with pytest.raises(ValueError, match="n_starts"):
        fit_scaling_law(N, D, L, n_starts=0)
    with pytest.raises(ValueError, match="n_params"):
        TRUE(0.0, 1e6)
