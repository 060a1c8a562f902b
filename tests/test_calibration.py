"""Tests for minilib.calibration: ECE and the reliability curve against explicit loops over bins,
AUROC against the rank-sum formula, brute force over pairs and scipy's Mann-Whitney U, the fact
base against its definition, and bad input."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.stats import mannwhitneyu

from minilib.calibration import auroc, expected_calibration_error, fact_base, reliability_curve


def _bins_by_loop(conf: list[float], right: list[float], m: int):
    """Per-bin (count, mean confidence, accuracy) with explicit interval tests (b/m, (b+1)/m]."""
    out = []
    for b in range(m):
        lo, hi = b / m, (b + 1) / m
        idx = [i for i, c in enumerate(conf) if lo < c <= hi or (b == 0 and c == 0.0)]
        if idx:
            out.append((len(idx), sum(conf[i] for i in idx) / len(idx), sum(right[i] for i in idx) / len(idx)))
        else:
            out.append((0, float("nan"), float("nan")))
    return out


def _ece_loop(conf, right, m):
    n = len(conf)
    return sum(k / n * abs(a - c) for k, c, a in _bins_by_loop(conf, right, m) if k > 0)


@pytest.mark.parametrize("m", [1, 2, 5, 10, 15])
def test_reliability_curve_and_ece_match_loops(m):
    g = torch.Generator().manual_seed(m)
    conf = torch.rand(300, generator=g, dtype=torch.float64)
    conf[:6] = torch.tensor([0.0, 1.0, 0.5, 0.2, 0.4, 1 / 3], dtype=torch.float64)  # edges, incl. exact b/m
    right = torch.rand(300, generator=g, dtype=torch.float64) < conf
    curve = reliability_curve(conf, right, m)
    loop = _bins_by_loop(conf.tolist(), right.double().tolist(), m)
    counts = torch.tensor([x[0] for x in loop], dtype=torch.float64)
    assert torch.equal(curve.counts, counts)
    assert torch.allclose(curve.confidence, torch.tensor([x[1] for x in loop], dtype=torch.float64), equal_nan=True)
    assert torch.allclose(curve.accuracy, torch.tensor([x[2] for x in loop], dtype=torch.float64), equal_nan=True)
    assert torch.allclose(curve.lower, torch.arange(m, dtype=torch.float64) / m)
    ece = expected_calibration_error(conf, right, m)
    assert ece == pytest.approx(_ece_loop(conf.tolist(), right.double().tolist(), m), abs=1e-12)


@settings(max_examples=40, deadline=None)
@given(st.lists(st.tuples(st.floats(0, 1), st.booleans()), min_size=1, max_size=40), st.integers(1, 20))
def test_ece_property_matches_loop(items, m):
    conf = torch.tensor([c for c, _ in items], dtype=torch.float64)
    right = torch.tensor([r for _, r in items])
    ece = expected_calibration_error(conf, right, m)
    assert ece == pytest.approx(_ece_loop(conf.tolist(), [float(r) for r in right.tolist()], m), abs=1e-12)
    assert 0.0 <= ece <= 1.0


def test_ece_is_zero_when_accuracy_equals_confidence_per_bin():
    conf = torch.tensor([0.25, 0.25, 0.25, 0.25, 1.0, 1.0])
    right = torch.tensor([1, 0, 0, 0, 1, 1])
    assert expected_calibration_error(conf, right, n_bins=4) == pytest.approx(0.0, abs=1e-7)


def test_curve_follows_dtype_and_accepts_01_labels():
    conf = torch.tensor([0.1, 0.9], dtype=torch.float32)
    curve = reliability_curve(conf, torch.tensor([0, 1]), 3)
    assert curve.counts.dtype == torch.float32 and curve.accuracy.dtype == torch.float32
    assert curve.counts.device == conf.device


def _auroc_pairs(s, y):
    pos = [a for a, l in zip(s, y) if l]
    neg = [a for a, l in zip(s, y) if not l]
    return sum((a > b) + 0.5 * (a == b) for a in pos for b in neg) / (len(pos) * len(neg))


def _auroc_ranks(s, y):
    s = np.asarray(s, dtype=float)
    order = np.argsort(s, kind="stable")
    ranks = np.empty(len(s))
    sorted_s = s[order]
    i = 0
    while i < len(s):  # average ranks over runs of ties
        j = i
        while j + 1 < len(s) and sorted_s[j + 1] == sorted_s[i]:
            j += 1
        ranks[order[i:j + 1]] = (i + j) / 2 + 1
        i = j + 1
    y = np.asarray(y, dtype=bool)
    n1, n0 = y.sum(), (~y).sum()
    return (ranks[y].sum() - n1 * (n1 + 1) / 2) / (n1 * n0)


@pytest.mark.parametrize("seed", range(5))
def test_auroc_against_pairs_ranks_and_scipy(seed):
    g = torch.Generator().manual_seed(seed)
    y = torch.rand(60, generator=g) < 0.4
    y[0], y[1] = True, False
    s = torch.randint(0, 8, (60,), generator=g).double() + y.double()  # many ties
    a = auroc(s, y)
    assert a == pytest.approx(_auroc_pairs(s.tolist(), y.tolist()), abs=1e-12)
    assert a == pytest.approx(_auroc_ranks(s.tolist(), y.tolist()), abs=1e-12)
    u = mannwhitneyu(s[y].numpy(), s[~y].numpy(), alternative="two-sided", method="asymptotic").statistic
    assert a == pytest.approx(u / (int(y.sum()) * int((~y).sum())), abs=1e-12)


@settings(max_examples=40, deadline=None)
@given(st.lists(st.tuples(st.integers(-3, 3), st.booleans()), min_size=2, max_size=30))
def test_auroc_property_matches_pairs(items):
    y = [b for _, b in items]
    if all(y) or not any(y):
        return
    s = torch.tensor([float(v) for v, _ in items])
    assert auroc(s, torch.tensor(y)) == pytest.approx(_auroc_pairs(s.tolist(), y), abs=1e-12)


def test_auroc_extremes():
    y = torch.tensor([0, 0, 1, 1])
    assert auroc(torch.tensor([0.0, 1.0, 2.0, 3.0]), y) == 1.0
    assert auroc(torch.tensor([3.0, 2.0, 1.0, 0.0]), y) == 0.0
    assert auroc(torch.zeros(4), y) == 0.5


def test_fact_base_definition():
    fb = fact_base(30, 3, 7, 500, zipf=1.2, generator=torch.Generator().manual_seed(0))
    assert fb.answers.shape == (30, 3) and fb.answers.min() >= 0 and fb.answers.max() < 7
    assert torch.equal(fb.counts.flatten(), torch.bincount(fb.train[:, 0] * 3 + fb.train[:, 1], minlength=90))
    assert fb.singleton_rate() == pytest.approx(float((fb.counts == 1).sum()) / 500)
    assert fb.missing_mass() == pytest.approx(float(fb.probs[fb.counts == 0].sum()))
    ratios = torch.sort(fb.probs.flatten(), descending=True).values
    expected = torch.arange(1, 91, dtype=torch.float64) ** -1.2
    assert torch.allclose(ratios, expected / expected.sum())  # Zipf over ranks
    fb2 = fact_base(30, 3, 7, 500, zipf=1.2, generator=torch.Generator().manual_seed(0))
    assert torch.equal(fb.train, fb2.train)
    q = fb.sample(5, generator=torch.Generator().manual_seed(1))
    assert q.shape == (5, 2) and (q[:, 1] < 3).all()


def test_bad_input():
    c, r = torch.tensor([0.2, 0.8]), torch.tensor([True, False])
    with pytest.raises(ValueError, match="confidences must lie in"):
        expected_calibration_error(torch.tensor([0.2, 1.5]), r)
    with pytest.raises(ValueError, match="confidences must lie in"):
        reliability_curve(torch.tensor([-0.1, 0.5]), r)
    with pytest.raises(ValueError, match="correct must have the shape"):
        expected_calibration_error(c, torch.tensor([True]))
    with pytest.raises(ValueError, match="n_bins"):
        expected_calibration_error(c, r, n_bins=0)
    with pytest.raises(ValueError, match="n_bins"):
        reliability_curve(c, r, n_bins=2.5)
    with pytest.raises(TypeError, match="confidences must be a torch.Tensor"):
        expected_calibration_error([0.2, 0.8], r)
    with pytest.raises(TypeError, match="floating-point"):
        expected_calibration_error(torch.tensor([0, 1]), r)
    with pytest.raises(ValueError, match="correct must be boolean"):
        expected_calibration_error(c, torch.tensor([2, 0]))
    with pytest.raises(ValueError, match="both classes"):
        auroc(torch.tensor([0.1, 0.2]), torch.tensor([1, 1]))
    with pytest.raises(ValueError, match="labels must have the shape"):
        auroc(torch.tensor([0.1, 0.2]), torch.tensor([1, 0, 1]))
    with pytest.raises(ValueError, match="NaN"):
        auroc(torch.tensor([float("nan"), 0.2]), torch.tensor([1, 0]))
    with pytest.raises(ValueError, match="n_values"):
        fact_base(3, 2, 1, 10)
    with pytest.raises(ValueError, match="zipf"):
        fact_base(3, 2, 4, 10, zipf=-1.0)
    with pytest.raises(TypeError, match="generator"):
        fact_base(3, 2, 4, 10, generator=0)
