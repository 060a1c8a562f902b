"""Tests for minilib.reasoning against independent references (enumeration, math.comb, Counter)."""

from __future__ import annotations

import itertools
import math
import random
from collections import Counter

import pytest
import torch

from minilib.reasoning import majority_vote, pass_at_k, rejection_sample


def test_pass_at_k_brute_force_subsets():
    # fraction of k-subsets of the n samples that contain a correct one, by enumeration
    for n in range(1, 8):
        for c in range(n + 1):
            samples = [1] * c + [0] * (n - c)
            for k in range(1, n + 1):
                subsets = list(itertools.combinations(range(n), k))
                brute = sum(any(samples[i] for i in s) for s in subsets) / len(subsets)
                assert pass_at_k(n, c, k) == pytest.approx(brute, abs=1e-12)


def test_pass_at_k_math_comb_and_tensor():
    n = torch.tensor([20, 50, 100, 200])
    c = torch.tensor([3, 10, 1, 150])
    for k in (1, 5, 20):
        got = pass_at_k(n, c, k)
        assert got.dtype == torch.float64 and got.shape == (4,)
        for j in range(4):
            ref = 1 - math.comb(int(n[j] - c[j]), k) / math.comb(int(n[j]), k)
            assert got[j].item() == pytest.approx(ref, rel=1e-12, abs=1e-14)
            assert pass_at_k(int(n[j]), int(c[j]), k) == pytest.approx(ref, rel=1e-12, abs=1e-14)


def test_pass_at_k_large_n_is_finite():
    # math.comb(2000, 1000) overflows a float; the product form does not
    ref = 1 - math.comb(1990, 1000) / math.comb(2000, 1000)  # exact rational arithmetic in ints
    assert pass_at_k(2000, 10, 1000) == pytest.approx(ref, rel=1e-10)


def test_pass_at_k_unbiased_over_binomial():
    # E_{c ~ Bin(n, p)}[pass_at_k(n, c, k)] = 1 - (1 - p)^k exactly; the plug-in estimator is biased low
    for n, k, p in [(10, 3, 0.2), (16, 8, 0.05), (7, 7, 0.5), (12, 1, 0.9)]:
        w = [math.comb(n, c) * p**c * (1 - p) ** (n - c) for c in range(n + 1)]
        unbiased = sum(wc * pass_at_k(n, c, k) for c, wc in enumerate(w))
        plug_in = sum(wc * (1 - (1 - c / n) ** k) for c, wc in enumerate(w))
        truth = 1 - (1 - p) ** k
        assert unbiased == pytest.approx(truth, abs=1e-12)
        if k > 1:
            assert plug_in < truth - 1e-6


def test_pass_at_k_bad_input():
    with pytest.raises(ValueError, match="c must"):
        pass_at_k(5, 6, 1)
    with pytest.raises(ValueError, match="k must"):
        pass_at_k(5, 2, 6)
    with pytest.raises(ValueError, match="n must"):
        pass_at_k(0, 0, 1)
    with pytest.raises(ValueError, match="c must"):
        pass_at_k(5, -1, 1)
    with pytest.raises(ValueError, match="k must"):
        pass_at_k(5, 1, -2)
    with pytest.raises(ValueError, match="k must"):
        pass_at_k(5, 1, 0)
    with pytest.raises(TypeError, match="n must"):
        pass_at_k(5.0, 1, 1)
    with pytest.raises(TypeError, match="c must"):
        pass_at_k(5, torch.tensor([1.0]), 1)
    with pytest.raises(TypeError, match="k must"):
        pass_at_k(5, 1, True)
    with pytest.raises(ValueError, match="broadcast"):
        pass_at_k(torch.tensor([5, 5]), torch.tensor([1, 1, 1]), 1)


def test_majority_vote_matches_counter():
    rng = random.Random(0)
    for _ in range(300):
        answers = [rng.randint(0, 4) for _ in range(rng.randint(1, 12))]
        assert majority_vote(answers) == Counter(answers).most_common(1)[0][0]
        assert majority_vote(torch.tensor(answers)).item() == Counter(answers).most_common(1)[0][0]
    assert majority_vote(["b", "a", "a", "b"]) == "b"  # tie: first occurrence wins


def test_majority_vote_batched_rows():
    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, 5, (50, 3, 9), generator=g, dtype=torch.int32)
    got = majority_vote(x)
    assert got.shape == (50, 3) and got.dtype == torch.int32
    for idx in itertools.product(range(50), range(3)):
        assert got[idx].item() == Counter(x[idx].tolist()).most_common(1)[0][0]


def test_majority_vote_bad_input():
    with pytest.raises(ValueError):
        majority_vote([])
    with pytest.raises(ValueError):
        majority_vote(torch.zeros(3, 0, dtype=torch.long))
    with pytest.raises(TypeError):
        majority_vote(torch.tensor([1.0, 2.0]))
    with pytest.raises(TypeError):
        majority_vote("aab")
    with pytest.raises(TypeError):
        majority_vote(5)


def test_rejection_sample_toy_generator():
    g = torch.Generator().manual_seed(0)

    def generate(m):
        x = torch.randint(0, 10, (m,), generator=g)
        return x, x * 2

    kept, rate = rejection_sample(generate, lambda s: s[0] < 3, 20_000)
    x, y = kept
    assert bool((x < 3).all()) and bool((y == 2 * x).all())
    assert rate == len(x) / 20_000
    assert abs(rate - 0.3) < 4 * math.sqrt(0.3 * 0.7 / 20_000)  # acceptance rate ~ P(accept)
    # accepted samples follow the conditional law: uniform on {0, 1, 2}
    freq = torch.bincount(x, minlength=3).double() / len(x)
    assert torch.allclose(freq, torch.full((3,), 1 / 3, dtype=torch.float64), atol=0.02)
    kept1, rate1 = rejection_sample(lambda m: torch.arange(m), lambda s: s >= 0, 5)
    assert kept1.tolist() == [0, 1, 2, 3, 4] and rate1 == 1.0


def test_rejection_sample_bad_input():
    gen = lambda m: torch.arange(m)  # noqa: E731
    with pytest.raises(TypeError):
        rejection_sample(gen, lambda s: s > 0, 2.0)
    with pytest.raises(ValueError):
        rejection_sample(gen, lambda s: s > 0, 0)
    with pytest.raises(TypeError):
        rejection_sample(5, lambda s: s > 0, 3)
    with pytest.raises(ValueError):
        rejection_sample(lambda m: torch.arange(m + 1), lambda s: s > 0, 3)
    with pytest.raises(TypeError):
        rejection_sample(gen, lambda s: (s > 0).long(), 3)
    with pytest.raises(ValueError):
        rejection_sample(gen, lambda s: torch.ones(2, dtype=torch.bool), 3)
    with pytest.raises(TypeError):
        rejection_sample(lambda m: list(range(m)), lambda s: torch.ones(3, dtype=torch.bool), 3)
