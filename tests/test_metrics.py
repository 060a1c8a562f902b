"""Tests for minilib.metrics against closed forms and brute force."""

from __future__ import annotations

import itertools
import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from minilib.metrics import PairedDifference, mean_se, mmd, paired_difference, sliced_wasserstein

torch.set_num_threads(1)  # tiny ops: on a shared CPU a second thread only adds overhead


def _brute_w2_sq_1d(u: list[float], v: list[float]) -> float:
    """W2^2 between two equal-size empirical measures: the best of all n! matchings."""
    n = len(u)
    return min(sum((u[i] - v[p[i]]) ** 2 for i in range(n)) / n for p in itertools.permutations(range(n)))


@given(
    u=st.lists(st.floats(-5, 5), min_size=1, max_size=6),
    data=st.data(),
)
@settings(max_examples=30, deadline=None)
def test_sw_in_1d_is_exact_w2(u: list[float], data) -> None:
    # in D = 1 every direction is +1 or -1, and W2 is invariant to the sign: SW2 = W2 exactly
    v = data.draw(st.lists(st.floats(-5, 5), min_size=len(u), max_size=len(u)))
    x = torch.tensor(u, dtype=torch.float64)[:, None]
    y = torch.tensor(v, dtype=torch.float64)[:, None]
    got = float(sliced_wasserstein(x, y, n_projections=3))
    assert got == pytest.approx(math.sqrt(_brute_w2_sq_1d(u, v)), abs=1e-9)


def test_sw_of_a_shift_matches_closed_form() -> None:
    # y = x + s: along theta the optimal 1D coupling is the shift, W2^2 = (theta.s)^2 exactly,
    # and E (theta.s)^2 = |s|^2 / D for theta uniform on the sphere.
    g = torch.Generator().manual_seed(0)
    x = torch.randn(300, 3, generator=g, dtype=torch.float64)
    s = torch.tensor([1.0, -2.0, 0.5], dtype=torch.float64)
    got = float(sliced_wasserstein(x, x + s, n_projections=20000, seed=3))
    assert got == pytest.approx(float(s.norm()) / math.sqrt(3), rel=0.01)


def test_sw_identity_symmetry_and_seed() -> None:
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(100, 2, generator=g), torch.randn(100, 2, generator=g) + 1
    assert float(sliced_wasserstein(x, x)) == 0.0
    # invariant to reordering the samples, symmetric in its arguments
    perm = torch.randperm(100, generator=g)
    assert float(sliced_wasserstein(x[perm], y)) == pytest.approx(float(sliced_wasserstein(x, y)), rel=1e-6)
    assert float(sliced_wasserstein(y, x)) == pytest.approx(float(sliced_wasserstein(x, y)), rel=1e-6)
    assert float(sliced_wasserstein(x, y, seed=1)) != float(sliced_wasserstein(x, y, seed=2))
    assert sliced_wasserstein(x.double(), y.double()).dtype == torch.float64


def test_sw_bad_input() -> None:
    x = torch.zeros(5, 2)
    with pytest.raises(ValueError, match="same number of samples"):
        sliced_wasserstein(x, torch.zeros(6, 2))
    with pytest.raises(ValueError, match="same dimension"):
        sliced_wasserstein(x, torch.zeros(5, 3))
    with pytest.raises(ValueError, match=r"shape \(N, D\)"):
        sliced_wasserstein(torch.zeros(5), torch.zeros(5))
    with pytest.raises(TypeError, match="floating"):
        sliced_wasserstein(torch.zeros(5, 2, dtype=torch.long), x)
    with pytest.raises(ValueError, match="n_projections"):
        sliced_wasserstein(x, x, n_projections=0)
    with pytest.raises(ValueError, match="seed"):
        sliced_wasserstein(x, x, seed=-1)
    with pytest.raises(ValueError, match="at least one sample"):
        sliced_wasserstein(torch.zeros(0, 2), torch.zeros(0, 2))


def _gaussian_mmd2(shift: torch.Tensor, s: float, bandwidths: list[float]) -> float:
    """Closed form MMD^2 between N(0, s^2 I) and N(shift, s^2 I) with a sum of RBF kernels.

    For independent X ~ N(a, s^2 I), Y ~ N(b, s^2 I), X - Y ~ N(a - b, 2 s^2 I) and
    E exp(-|X - Y|^2 / 2h^2) = (h^2 / (h^2 + 2 s^2))^(D/2) exp(-|a - b|^2 / (2 (h^2 + 2 s^2))).
    """
    D = shift.numel()
    m2 = float((shift**2).sum())
    total = 0.0
    for h in bandwidths:
        c = (h**2 / (h**2 + 2 * s**2)) ** (D / 2)
        total += 2 * c - 2 * c * math.exp(-m2 / (2 * (h**2 + 2 * s**2)))
    return total


def test_mmd_matches_gaussian_closed_form() -> None:
    bws = [0.5, 1.0, 2.0]
    shift = torch.tensor([0.8, -0.3], dtype=torch.float64)
    g = torch.Generator().manual_seed(0)
    ests = []
    for _ in range(5):
        x = 0.7 * torch.randn(800, 2, generator=g, dtype=torch.float64)
        y = 0.7 * torch.randn(800, 2, generator=g, dtype=torch.float64) + shift
        ests.append(float(mmd(x, y, bandwidths=bws)))
    exact = _gaussian_mmd2(shift, 0.7, bws)
    assert sum(ests) / len(ests) == pytest.approx(exact, rel=0.05)


def test_mmd_is_unbiased_for_equal_distributions() -> None:
    # unbiased: averaged over many independent pairs the estimate is ~0 (and can be negative)
    g = torch.Generator().manual_seed(1)
    ests = torch.tensor([float(mmd(torch.randn(100, 2, generator=g), torch.randn(100, 2, generator=g))) for _ in range(200)])
    assert abs(float(ests.mean())) < 3 * float(ests.std()) / math.sqrt(200)
    assert (ests < 0).any()


def test_mmd_bad_input() -> None:
    x = torch.zeros(5, 2)
    with pytest.raises(ValueError, match="bandwidths"):
        mmd(x, x, bandwidths=[1.0, -1.0])
    with pytest.raises(ValueError, match="at least 2 samples"):
        mmd(torch.zeros(1, 2), x)
    with pytest.raises(ValueError, match="same dimension"):
        mmd(x, torch.zeros(5, 3))


# --- mean_se and paired_difference: checked against hand computations ---------------------------


def test_mean_se_by_hand() -> None:
    # values 2, 4, 4, 4, 5, 5, 7, 9: mean 5, sum of squared deviations 32, s^2 = 32/7, se = s/sqrt(8)
    values = [2.0, 4.0, 4.0, 4.0, 5.0, 5.0, 7.0, 9.0]
    mean, se = mean_se(values)
    assert mean == pytest.approx(5.0, abs=1e-12)
    assert se == pytest.approx(math.sqrt(32 / 7) / math.sqrt(8), abs=1e-12)
    # any 1-D input form (list, tuple, tensor) gives the same numbers
    assert mean_se(torch.tensor(values)) == pytest.approx((mean, se), abs=1e-6)
    assert mean_se(tuple(values)) == (mean, se)
    assert isinstance(mean_se(values)[0], float) and isinstance(mean_se(values)[1], float)


def test_paired_difference_by_hand() -> None:
    # differences 2, 3, 3: mean 8/3, s^2 = ((2/3)^2 + 2 (1/3)^2) / 2 = 1/3, se = sqrt(1/9) = 1/3, z = 8
    got = paired_difference([3.0, 4.0, 5.0], [1.0, 1.0, 2.0])
    assert isinstance(got, PairedDifference)
    assert got.mean == pytest.approx(8 / 3, abs=1e-12)
    assert got.se == pytest.approx(1 / 3, abs=1e-12)
    assert got.z == pytest.approx(8.0, abs=1e-9)
    # pairing matters: a shared offset per repetition cancels, so z is large although both spread widely
    offsets = torch.tensor([0.0, 10.0, -7.0, 3.0])
    assert paired_difference(offsets + 1.0 + torch.tensor([0.01, -0.01, 0.0, 0.0]), offsets).z > 50
    # swapping the arguments flips the sign
    assert paired_difference([1.0, 1.0, 2.0], [3.0, 4.0, 5.0]).z == pytest.approx(-8.0, abs=1e-9)


def test_paired_difference_degenerate_spread() -> None:
    assert paired_difference([1.0, 2.0], [1.0, 2.0]) == (0.0, 0.0, 0.0)
    assert paired_difference([2.0, 3.0], [1.0, 2.0]).z == math.inf
    assert paired_difference([1.0, 2.0], [2.0, 3.0]).z == -math.inf


def test_mean_se_and_paired_difference_bad_input() -> None:
    with pytest.raises(ValueError, match="at least 2 values"):
        mean_se([1.0])
    with pytest.raises(ValueError, match="1-D"):
        mean_se(torch.zeros(2, 3))
    with pytest.raises(ValueError, match="finite"):
        mean_se([1.0, float("nan")])
    with pytest.raises(TypeError, match="values must be"):
        mean_se(["a", "b"])
    with pytest.raises(ValueError, match="same number of repetitions"):
        paired_difference([1.0, 2.0, 3.0], [1.0, 2.0])
    with pytest.raises(ValueError, match="b must hold at least 2"):
        paired_difference([1.0, 2.0], [1.0])
    with pytest.raises(ValueError, match="a must be finite"):
        paired_difference([1.0, float("inf")], [1.0, 2.0])
