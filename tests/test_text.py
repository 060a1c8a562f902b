"""Tests for minilib.text: the Markov language against brute force, Monte Carlo and power
iteration; the arithmetic verifier against Python's own integer arithmetic."""

from __future__ import annotations

import itertools
import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from minilib.text import (
    ARITH_EOS,
    ARITH_PAD,
    MarkovLanguage,
    arithmetic_problems,
    decode_arithmetic,
    verify_arithmetic,
)


@pytest.fixture(scope="module")
def lang() -> MarkovLanguage:
    return MarkovLanguage(vocab_size=6, branching=3, logit_scale=1.0, seed=3)


def test_rows_are_distributions_with_branching_successors(lang):
    P = lang.transition
    assert torch.allclose(P.sum(1), torch.ones(6, dtype=torch.float64))
    assert ((P > 0).sum(1) == 3).all()


def test_stationary_matches_power_iteration(lang):
    p = torch.full((6,), 1 / 6, dtype=torch.float64)
    for _ in range(5000):
        p = p @ lang.transition
    assert torch.allclose(lang.stationary(), p, atol=1e-10)


def test_log_prob_matches_brute_force_and_sums_to_one(lang):
    T = 4
    P, pi = lang.transition, lang.initial
    seqs = torch.tensor(list(itertools.product(range(6), repeat=T)))
    lp = lang.log_prob(seqs)
    # brute force: a Python product over each sequence
    for s, val in zip(seqs[::97].tolist(), lp[::97].tolist()):
        prob = pi[s[0]].item()
        for a, b in zip(s[:-1], s[1:]):
            prob *= P[a, b].item()
        assert (math.log(prob) if prob > 0 else -math.inf) == pytest.approx(val, abs=1e-9)
    assert torch.logsumexp(lp, 0).item() == pytest.approx(0.0, abs=1e-9)


def test_entropy_rate_matches_monte_carlo(lang):
    g = torch.Generator().manual_seed(0)
    n, T = 2000, 200
    x = lang.sample(n, T, generator=g)
    # -(1/T) log p(x_{1:T}) -> H (Shannon–McMillan–Breiman); subtract the first-token term
    per_token = -(lang.log_prob(x) - lang.initial.log()[x[:, 0]]) / (T - 1)
    mc, se = per_token.mean().item(), per_token.std().item() / math.sqrt(n)
    assert abs(mc - lang.entropy_rate()) < 5 * se + 1e-3


def test_samples_have_stationary_marginals(lang):
    x = lang.sample(20000, 3, generator=torch.Generator().manual_seed(1))
    freq = torch.bincount(x[:, 2], minlength=6).double() / 20000
    assert torch.allclose(freq, lang.stationary(), atol=0.015)


def test_sampling_is_reproducible(lang):
    a = lang.sample(3, 7, generator=torch.Generator().manual_seed(5))
    b = lang.sample(3, 7, generator=torch.Generator().manual_seed(5))
    assert torch.equal(a, b)


def test_construction_is_seeded():
    assert torch.equal(MarkovLanguage(8, seed=1).transition, MarkovLanguage(8, seed=1).transition)
    assert not torch.equal(MarkovLanguage(8, seed=1).transition, MarkovLanguage(8, seed=2).transition)


def test_uniform_full_branching_has_log_v_entropy():
    lang = MarkovLanguage(5, branching=5, logit_scale=0.0)
    assert lang.entropy_rate() == pytest.approx(math.log(5))


def test_markov_bad_inputs(lang):
    with pytest.raises(ValueError, match="vocab_size"):
        MarkovLanguage(1)
    with pytest.raises(ValueError, match="branching"):
        MarkovLanguage(4, branching=5)
    with pytest.raises(ValueError, match="logit_scale"):
        MarkovLanguage(4, logit_scale=-1.0)
    with pytest.raises(TypeError, match="integer"):
        lang.log_prob(torch.zeros(2, 3))
    with pytest.raises(ValueError, match="lie in"):
        lang.log_prob(torch.tensor([[0, 6]]))
    with pytest.raises(ValueError, match="n_seqs"):
        lang.sample(0, 3)
    with pytest.raises(TypeError, match="generator"):
        lang.sample(2, 3, generator=0)


@settings(max_examples=30, deadline=None)
@given(st.integers(1, 999), st.integers(0, 2**31 - 1))
def test_arithmetic_answers_are_verified_correct(max_operand, seed):
    p = arithmetic_problems(16, max_operand, generator=torch.Generator().manual_seed(seed))
    assert p.operands.max() <= max_operand
    strings = decode_arithmetic(torch.cat([p.prompts, p.answers], 1))
    for s, (a, b) in zip(strings, p.operands.tolist()):
        lhs, rhs = s.split("=")
        x, y = lhs.split("+")
        assert (int(x), int(y), int(rhs)) == (a, b, a + b)
    assert verify_arithmetic(p.prompts, p.answers).all()
    # an EOS after the answer is fine; a wrong last digit is not
    with_eos = torch.cat([p.answers, torch.full((16, 1), ARITH_EOS)], 1)
    assert verify_arithmetic(p.prompts, with_eos).all()
    wrong = p.answers.clone()
    wrong[:, -1] = (wrong[:, -1] + 1) % 10
    assert not verify_arithmetic(p.prompts, wrong).any()


def test_verifier_rejects_empty_and_accepts_unpadded():
    p = arithmetic_problems(1, 9, generator=torch.Generator().manual_seed(0))
    a, b = p.operands[0].tolist()
    digits = [int(c) for c in str(a + b)]
    unpadded = torch.tensor([digits + [ARITH_EOS] * (3 - len(digits))])
    assert verify_arithmetic(p.prompts, unpadded).all()
    empty = torch.tensor([[ARITH_EOS, 1, 2]])
    assert not verify_arithmetic(p.prompts, empty).any()
    pad = torch.tensor([[ARITH_PAD, ARITH_PAD]])
    assert not verify_arithmetic(p.prompts, pad).any()


def test_arithmetic_bad_inputs():
    p = arithmetic_problems(2, 9)
    with pytest.raises(ValueError, match="max_operand"):
        arithmetic_problems(2, 0)
    with pytest.raises(TypeError, match="integer"):
        verify_arithmetic(p.prompts.float(), p.answers)
    with pytest.raises(ValueError, match="batch size"):
        verify_arithmetic(p.prompts, p.answers[:1])
    with pytest.raises(ValueError, match="digits"):
        verify_arithmetic(p.answers.new_zeros(2, 4), p.answers)
    with pytest.raises(ValueError, match="lie in"):
        decode_arithmetic(torch.tensor([[99]]))
