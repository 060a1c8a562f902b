"""Tests of the masked-language-modelling helpers in minilib.text (chapter book/ssl/bert.md)."""

import itertools
import math

import pytest
import torch

from minilib.text import MarkovLanguage, markov_masked_posterior, mlm_mask

V_ORD, MASK, CLS = 10, 10, 11  # ordinary ids 0..9, [MASK] = 10, [CLS] = 11
VOCAB = 12


def _batch(n=4000, T=50, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randint(0, V_ORD, (n, T), generator=g)
    x[:, 0] = CLS
    return x


def _z_ok(count, n, prob, z=5.0):
    """|count - n prob| <= z * sd: a binomial z-bound. z = 5 is exceeded by chance with
    probability < 1e-6, while a rule off by one percentage point (e.g. 0.16 instead of 0.15)
    moves the count by ~20 sd at these sizes and is caught."""
    sd = math.sqrt(n * prob * (1 - prob))
    return abs(count - n * prob) <= z * sd


def test_mlm_rates_80_10_10():
    x = _batch()
    inp, lab = mlm_mask(x, MASK, VOCAB, p=0.15, special_ids=(CLS,), generator=torch.Generator().manual_seed(1))
    sel = lab != -100
    n_elig = int((x != CLS).sum())
    n_sel = int(sel.sum())
    assert _z_ok(n_sel, n_elig, 0.15)
    is_mask = inp[sel] == MASK
    same = inp[sel] == x[sel]
    other = ~is_mask & ~same
    K = V_ORD  # ordinary ids eligible for random replacement
    assert _z_ok(int(is_mask.sum()), n_sel, 0.8)
    assert _z_ok(int(other.sum()), n_sel, 0.1 * (1 - 1 / K))  # random, and different
    assert _z_ok(int(same.sum()), n_sel, 0.1 + 0.1 / K)  # unchanged, or random == original
    # random replacements are ordinary tokens, never [MASK] or a special id
    assert bool((inp[sel][other] < V_ORD).all())


def test_mlm_labels_and_unselected_positions():
    x = _batch(200, 30, seed=2)
    inp, lab = mlm_mask(x, MASK, VOCAB, p=0.3, special_ids=(CLS,), generator=torch.Generator().manual_seed(3))
    sel = lab != -100
    assert torch.equal(lab[sel], x[sel])
    assert torch.equal(inp[~sel], x[~sel])
    assert bool(sel.any())


def test_mlm_specials_never_selected():
    x = _batch(500, 20, seed=4)
    x[:, 5] = MASK  # a pre-existing [MASK] is not selected either
    inp, lab = mlm_mask(x, MASK, VOCAB, p=0.9, special_ids=[CLS], generator=torch.Generator().manual_seed(5))
    assert bool((lab[:, 0] == -100).all()) and bool((inp[:, 0] == CLS).all())
    assert bool((lab[:, 5] == -100).all())
    assert not bool(((inp == CLS) & (x != CLS)).any())


def test_mlm_deterministic_and_dtype():
    x = _batch(10, 10).to(torch.int32)
    a = mlm_mask(x, MASK, VOCAB, special_ids=(CLS,), generator=torch.Generator().manual_seed(7))
    b = mlm_mask(x, MASK, VOCAB, special_ids=(CLS,), generator=torch.Generator().manual_seed(7))
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    assert a[0].dtype == torch.int32 and a[1].dtype == torch.int32 and a[0].device == x.device


@pytest.mark.parametrize("p", [0, 1, -0.1, 1.5, float("nan"), True, "0.1"])
def test_mlm_bad_p(p):
    with pytest.raises(ValueError, match="p must"):
        mlm_mask(_batch(2, 5), MASK, VOCAB, p=p)


@pytest.mark.parametrize("mask_id", [-1, VOCAB, 3.0])
def test_mlm_bad_mask_id(mask_id):
    with pytest.raises(ValueError, match="mask_id"):
        mlm_mask(_batch(2, 5), mask_id, VOCAB)


def test_mlm_bad_tokens_and_ids():
    with pytest.raises(TypeError, match="integer"):
        mlm_mask(torch.rand(2, 5), MASK, VOCAB)
    with pytest.raises(TypeError, match="integer"):
        mlm_mask([[1, 2]], MASK, VOCAB)
    with pytest.raises(TypeError, match="integer"):
        mlm_mask(torch.ones(2, 5, dtype=torch.bool), MASK, VOCAB)
    with pytest.raises(ValueError, match="tokens must lie"):
        mlm_mask(torch.full((2, 5), VOCAB), MASK, VOCAB)
    with pytest.raises(ValueError, match="special_ids"):
        mlm_mask(_batch(2, 5), MASK, VOCAB, special_ids=(VOCAB,))
    with pytest.raises(TypeError, match="generator"):
        mlm_mask(_batch(2, 5), MASK, VOCAB, generator=0)
    with pytest.raises(ValueError, match="ordinary"):
        mlm_mask(torch.zeros(1, 3, dtype=torch.long), 0, 2, special_ids=(1,))


def _brute_force_posterior(lang, x, m):
    """Marginals by enumerating every filling of the hidden positions, weighted by the
    exact sequence probability lang.log_prob: independent of the forward-backward code."""
    V, T = lang.vocab_size, x.shape[0]
    hidden = [t for t in range(T) if m[t]]
    post = torch.zeros(T, V, dtype=torch.float64)
    for fill in itertools.product(range(V), repeat=len(hidden)):
        y = x.clone()
        for t, v in zip(hidden, fill):
            y[t] = v
        w = float(lang.log_prob(y).exp())
        for t in range(T):
            post[t, y[t]] += w
    return post / post.sum(-1, keepdim=True)


@pytest.mark.parametrize("pattern", ["..X..X.", "X.XX..X", ".XXX...", "XX...XX", "...X..."])
def test_posterior_matches_brute_force(pattern):
    lang = MarkovLanguage(vocab_size=5, branching=3, seed=1)
    x = lang.sample(1, len(pattern), generator=torch.Generator().manual_seed(len(pattern) + pattern.count("X")))[0]
    m = torch.tensor([c == "X" for c in pattern])
    got = markov_masked_posterior(lang, x, m)
    want = _brute_force_posterior(lang, x, m)
    # float64 recursions agree with enumeration to rounding; a wrong transpose or a missing
    # factor changes the posterior at order 0.1
    torch.testing.assert_close(got, want, atol=1e-12, rtol=1e-10)


def test_posterior_batched_and_isolated_formula():
    lang = MarkovLanguage(vocab_size=6, branching=3, seed=2)
    x = lang.sample(8, 12, generator=torch.Generator().manual_seed(0))
    m = torch.zeros_like(x, dtype=torch.bool)
    m[:, 4] = True
    m[:, 9] = True
    xin = torch.where(m, torch.full_like(x, 99), x)  # hidden values are ignored
    post = markov_masked_posterior(lang, xin, m)
    P = lang.transition
    iso = P[x[:, 3]] * P[:, x[:, 5]].T  # (bert-isolated): P[x_{t-1}, v] P[v, x_{t+1}]
    torch.testing.assert_close(post[:, 4], iso / iso.sum(-1, keepdim=True), atol=1e-12, rtol=1e-10)
    # unmasked positions are one-hot at the observed token
    assert torch.equal(post[:, 0].argmax(-1), x[:, 0])
    for b in range(3):  # batched == one at a time
        torch.testing.assert_close(post[b], markov_masked_posterior(lang, xin[b], m[b]))


def test_posterior_bad_input():
    lang = MarkovLanguage(vocab_size=4, branching=2, seed=0)
    x = lang.sample(2, 5, generator=torch.Generator().manual_seed(0))
    m = torch.zeros_like(x, dtype=torch.bool)
    with pytest.raises(TypeError, match="lang"):
        markov_masked_posterior("chain", x, m)
    with pytest.raises(TypeError, match="integer"):
        markov_masked_posterior(lang, x.float(), m)
    with pytest.raises(TypeError, match="mask"):
        markov_masked_posterior(lang, x, m.long())
    with pytest.raises(ValueError, match="shape"):
        markov_masked_posterior(lang, x, m[:, :3])
    with pytest.raises(ValueError, match="observed tokens must lie"):
        markov_masked_posterior(lang, torch.full_like(x, 7), m)
    P = lang.transition
    i, j = (P == 0).nonzero()[0].tolist()
    with pytest.raises(ValueError, match="probability zero"):
        markov_masked_posterior(lang, torch.tensor([i, j]), torch.zeros(2, dtype=torch.bool))


def test_mlm_random_replacements_uniform_over_ordinary_ids():
    """Each ordinary id j replaces a selected token x != j with probability 0.1 / K (uniform draw);
    a draw from a subset of the ids, or one that includes [MASK] / specials, moves some count by
    tens of sd."""
    x = _batch()
    inp, lab = mlm_mask(x, MASK, VOCAB, p=0.15, special_ids=(CLS,), generator=torch.Generator().manual_seed(9))
    sel = lab != -100
    for j in range(V_ORD):
        pool = sel & (x != j)
        assert _z_ok(int((inp[pool] == j).sum()), int(pool.sum()), 0.1 / V_ORD)
