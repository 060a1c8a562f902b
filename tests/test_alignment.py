"""Tests for minilib.alignment against closed forms, brute force and autograd identities."""

from __future__ import annotations

import math
import statistics

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from minilib.alignment import (
    bradley_terry_loss,
    dpo_loss,
    grpo_advantages,
    kl_k3,
    kl_regularized_policy,
    policy_gradient_loss,
    ppo_clip_loss,
)

floats = st.floats(-5, 5, allow_nan=False, width=32)


# ---------------------------------------------------------------- policy gradients
@pytest.mark.parametrize("baseline", [0.0, 2.0])
def test_reinforce_is_unbiased_for_a_softmax_bandit(baseline):
    # J(theta) = sum_a pi_a mu_a; exact gradient dJ/dtheta_a = pi_a (mu_a - J)
    theta = torch.tensor([0.3, -0.5, 1.0, 0.0], dtype=torch.float64, requires_grad=True)
    mu = torch.tensor([1.0, 0.0, 2.0, -1.0], dtype=torch.float64)
    pi = torch.softmax(theta, 0)
    exact = (pi * (mu - (pi * mu).sum())).detach()
    # expected surrogate gradient, computed exactly by summing over actions (not sampling)
    logp = torch.log_softmax(theta, 0)
    loss = (pi.detach() * policy_gradient_loss(logp, mu - baseline)).sum()
    (grad,) = torch.autograd.grad(loss, theta)
    assert torch.allclose(-grad, exact, atol=1e-12)


def test_policy_gradient_loss_detaches_advantages():
    logp = torch.tensor([-0.5], requires_grad=True)
    adv = torch.tensor([3.0], requires_grad=True)
    policy_gradient_loss(logp, adv).sum().backward()
    assert adv.grad is None and logp.grad.item() == -3.0


@settings(max_examples=60, deadline=None)
@given(floats, floats, floats, st.floats(0.05, 0.5))
def test_ppo_clip_matches_piecewise_definition(logp, old, adv, eps):
    lp, ol, A = (torch.tensor([v], dtype=torch.float64) for v in (logp, old, adv))
    r = math.exp(logp - old)
    clipped_r = min(max(r, 1 - eps), 1 + eps)
    expected = -min(r * adv, clipped_r * adv)
    assert ppo_clip_loss(lp, ol, A, clip=eps).item() == pytest.approx(expected, rel=1e-9, abs=1e-12)


def test_ppo_clip_gradient_is_policy_gradient_at_ratio_one_and_zero_outside():
    logp = torch.tensor([-1.0, -1.0, -1.0], requires_grad=True)
    adv = torch.tensor([2.0, -1.0, 0.5])
    ppo_clip_loss(logp, logp.detach(), adv).sum().backward()
    assert torch.allclose(logp.grad, -adv)  # d/dlogp of -rho A at rho = 1 is -A
    # ratio 1.5 > 1 + eps with A > 0: the objective is flat, no incentive to push further
    logp2 = torch.tensor([math.log(1.5)], requires_grad=True)
    ppo_clip_loss(logp2, torch.zeros(1), torch.ones(1)).sum().backward()
    assert logp2.grad.item() == 0.0
    # ratio 1.5 with A < 0: the unclipped term is the minimum, the gradient still pulls back
    logp3 = torch.tensor([math.log(1.5)], requires_grad=True)
    ppo_clip_loss(logp3, torch.zeros(1), -torch.ones(1)).sum().backward()
    assert logp3.grad.item() == pytest.approx(1.5)


# ---------------------------------------------------------------- Bradley–Terry
@settings(max_examples=40, deadline=None)
@given(floats, floats)
def test_bradley_terry_is_minus_log_sigmoid(rc, rr):
    loss = bradley_terry_loss(torch.tensor(rc, dtype=torch.float64), torch.tensor(rr, dtype=torch.float64))
    assert loss.item() == pytest.approx(-math.log(1 / (1 + math.exp(-(rc - rr)))), rel=1e-9)


def test_bradley_terry_stable_and_shift_invariant():
    big = bradley_terry_loss(torch.tensor([1000.0]), torch.tensor([-1000.0]))
    assert torch.isfinite(big).all() and big.item() == 0.0
    assert bradley_terry_loss(torch.tensor([-1000.0]), torch.tensor([1000.0])).item() == pytest.approx(2000.0)
    rc, rr = torch.randn(5), torch.randn(5)
    assert torch.allclose(bradley_terry_loss(rc, rr), bradley_terry_loss(rc + 7, rr + 7), atol=1e-6)


def test_bradley_terry_mle_recovers_linear_reward():
    g = torch.Generator().manual_seed(0)
    w_true = torch.tensor([1.5, -1.0, 0.5])
    xa, xb = torch.randn(2, 20000, 3, generator=g).unbind(0)
    pref_a = torch.rand(20000, generator=g) < torch.sigmoid((xa - xb) @ w_true)
    chosen = torch.where(pref_a[:, None], xa, xb)
    rejected = torch.where(pref_a[:, None], xb, xa)
    w = torch.zeros(3, requires_grad=True)
    opt = torch.optim.LBFGS([w], max_iter=100, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        loss = bradley_terry_loss(chosen @ w, rejected @ w).mean()
        loss.backward()
        return loss

    opt.step(closure)
    assert torch.allclose(w.detach(), w_true, atol=0.1)


# ---------------------------------------------------------------- KL-regularised optimum and DPO
def test_kl_regularized_policy_maximises_objective():
    g = torch.Generator().manual_seed(1)
    ref = torch.log_softmax(torch.randn(6, generator=g, dtype=torch.float64), 0)
    r = torch.randn(6, generator=g, dtype=torch.float64)
    beta = 0.7

    def objective(logq):
        q = logq.exp()
        return (q * r).sum() - beta * (q * (logq - ref)).sum()

    best = kl_regularized_policy(ref, r, beta=beta)
    # closed-form optimal value: beta * log Z with Z = sum ref * exp(r / beta)
    assert objective(best).item() == pytest.approx(beta * torch.logsumexp(ref + r / beta, 0).item())
    for _ in range(200):
        other = torch.log_softmax(best + 0.3 * torch.randn(6, generator=g, dtype=torch.float64), 0)
        assert objective(other) <= objective(best) + 1e-12


def test_dpo_is_log2_at_reference_and_matches_bt_of_implicit_rewards():
    g = torch.Generator().manual_seed(2)
    ref_c, ref_r = torch.randn(2, 8, generator=g).unbind(0)
    losses, rc, rr = dpo_loss(ref_c, ref_r, ref_c, ref_r, beta=0.3)
    assert torch.allclose(losses, torch.full((8,), math.log(2)))
    assert torch.equal(rc, torch.zeros(8)) and torch.equal(rr, torch.zeros(8))
    pc, pr = torch.randn(2, 8, generator=g).unbind(0)
    losses, rc, rr = dpo_loss(pc, pr, ref_c, ref_r, beta=0.3)
    assert torch.allclose(rc, 0.3 * (pc - ref_c)) and torch.allclose(rr, 0.3 * (pr - ref_r))
    assert torch.allclose(losses, bradley_terry_loss(rc, rr))


def test_dpo_gradient_raises_chosen_and_lowers_rejected():
    pc = torch.randn(5, requires_grad=True)
    pr = torch.randn(5, requires_grad=True)
    ref = torch.randn(5)
    losses, _, _ = dpo_loss(pc, pr, ref, ref, beta=0.5)
    losses.sum().backward()
    assert (pc.grad < 0).all() and (pr.grad > 0).all()  # descent raises chosen, lowers rejected
    # the weight is beta * sigma(rejected margin - chosen margin), by hand
    margin = 0.5 * (pc - pr).detach()
    assert torch.allclose(-pc.grad, 0.5 * torch.sigmoid(-margin), atol=1e-6)


def test_dpo_optimum_is_the_kl_regularized_policy():
    # at pi = pi*, the implicit reward equals the true reward up to the constant beta log Z
    g = torch.Generator().manual_seed(3)
    ref = torch.log_softmax(torch.randn(5, generator=g, dtype=torch.float64), 0)
    r = torch.randn(5, generator=g, dtype=torch.float64)
    beta = 0.4
    star = kl_regularized_policy(ref, r, beta=beta)
    implicit = beta * (star - ref)
    assert torch.allclose(implicit - r, (implicit - r)[0].expand(5), atol=1e-12)


# ---------------------------------------------------------------- GRPO
@settings(max_examples=50, deadline=None)
@given(st.integers(2, 6), st.integers(1, 4), st.integers(0, 10_000))
def test_grpo_advantages_standardise_each_group(G, n_groups, seed):
    g = torch.Generator().manual_seed(seed)
    r = torch.randn(n_groups * G, generator=g, dtype=torch.float64)
    A = grpo_advantages(r, G, eps=0.0)
    for k in range(n_groups):
        grp = r[k * G:(k + 1) * G].tolist()
        mean, std = statistics.fmean(grp), statistics.stdev(grp)
        expected = torch.tensor([(x - mean) / std for x in grp], dtype=torch.float64)
        assert torch.allclose(A[k * G:(k + 1) * G], expected, atol=1e-9)
        assert abs(A[k * G:(k + 1) * G].sum().item()) < 1e-9


def test_grpo_constant_group_gets_zero_advantage():
    A = grpo_advantages(torch.tensor([1.0, 1.0, 1.0, 0.0, 1.0, 0.0]), 3)
    assert torch.equal(A[:3], torch.zeros(3))
    assert A[3:].sum().abs() < 1e-6


@pytest.mark.parametrize("G", [2, 3, 5])
def test_grpo_expected_update_is_weighted_gradient_of_success_rate(G):
    # (grpo-weight): for 0/1 rewards the expected update (1/G) sum_i A_i grad log pi(y_i), over
    # groups drawn i.i.d. from pi, is w_G(p) grad p. Brute force: enumerate all 4^G groups.
    import itertools

    theta = torch.tensor([0.4, -0.3, 0.9, -1.2], dtype=torch.float64, requires_grad=True)
    correct = torch.tensor([1.0, 1.0, 0.0, 0.0], dtype=torch.float64)
    logpi = torch.log_softmax(theta, 0)
    pi = logpi.exp().detach()
    p = (logpi.exp() * correct).sum()
    (grad_p,) = torch.autograd.grad(p, theta, retain_graph=True)
    expected = torch.zeros(4, dtype=torch.float64)
    for group in itertools.product(range(4), repeat=G):
        ys = torch.tensor(group)
        adv = grpo_advantages(correct[ys], G, eps=0.0)
        (g_hat,) = torch.autograd.grad((adv * logpi[ys]).mean(), theta, retain_graph=True)
        expected += pi[ys].prod() * g_hat
    pv = p.item()
    mean_sqrt = sum(math.comb(G, k) * pv**k * (1 - pv) ** (G - k) * math.sqrt(k * (G - k)) for k in range(G + 1))
    w = math.sqrt(G * (G - 1)) / (G**2 * pv * (1 - pv)) * mean_sqrt
    assert torch.allclose(expected, w * grad_p, atol=1e-12)
    # and it is not the expected-reward gradient scaled by the centring factor (G - 1)/G alone
    assert not torch.allclose(expected, (G - 1) / G * grad_p, atol=1e-3)

def test_kl_k3_nonnegative_zero_at_equality_and_unbiased():
    g = torch.Generator().manual_seed(4)
    x = torch.randn(1000, generator=g)
    assert (kl_k3(x, x) == 0).all()
    assert (kl_k3(x, torch.randn(1000, generator=g)) >= 0).all()
    # exact expectation over a finite distribution equals the exact KL
    logp = torch.log_softmax(torch.randn(7, generator=g, dtype=torch.float64), 0)
    ref = torch.log_softmax(torch.randn(7, generator=g, dtype=torch.float64), 0)
    p = logp.exp()
    kl = (p * (logp - ref)).sum()
    assert (p * kl_k3(logp, ref)).sum().item() == pytest.approx(kl.item(), rel=1e-12)
    # and a Monte Carlo average converges to it
    idx = torch.multinomial(p, 200_000, replacement=True, generator=g)
    mc = kl_k3(logp[idx], ref[idx])
    assert abs(mc.mean().item() - kl.item()) < 5 * mc.std().item() / math.sqrt(200_000)


def test_kl_k3_is_biased_when_the_reference_has_mass_outside_the_policy_support():
    # (grpo-k3-unbiased) needs supp pi_ref inside supp pi as well: with pi a point mass on y0,
    # E_pi[k3] = k3(y0) = pi_ref(y0) - log pi_ref(y0) - 1, while KL(pi || pi_ref) = -log pi_ref(y0):
    # the estimate falls short by the reference mass outside y0.
    ref = torch.tensor([0.25, 0.5, 0.25], dtype=torch.float64).log()
    logp_y0 = torch.zeros(1, dtype=torch.float64)  # log pi(y0) = 0
    expectation = kl_k3(logp_y0, ref[:1]).item()
    kl = -ref[0].item()
    assert expectation == pytest.approx(kl - (1 - 0.25), rel=1e-12)


# ---------------------------------------------------------------- bad inputs
def test_bad_inputs():
    f, i = torch.zeros(3), torch.zeros(3, dtype=torch.int64)
    with pytest.raises(TypeError, match="floating-point"):
        policy_gradient_loss(i, f)
    with pytest.raises(ValueError, match="shape"):
        policy_gradient_loss(f, torch.zeros(4))
    with pytest.raises(ValueError, match="clip"):
        ppo_clip_loss(f, f, f, clip=0.0)
    with pytest.raises(TypeError, match="old_logp"):
        ppo_clip_loss(f, i, f)
    with pytest.raises(ValueError, match="r_rejected"):
        bradley_terry_loss(f, torch.zeros(2))
    with pytest.raises(ValueError, match="beta"):
        dpo_loss(f, f, f, f, beta=-1.0)
    with pytest.raises(ValueError, match="ref_rejected_logps"):
        dpo_loss(f, f, f, torch.zeros(2))
    with pytest.raises(TypeError, match="torch.Tensor"):
        dpo_loss([0.0], f, f, f)
    with pytest.raises(ValueError, match="beta"):
        kl_regularized_policy(f, f, beta=0)
    with pytest.raises(ValueError, match="multiple"):
        grpo_advantages(torch.zeros(5), 2)
    with pytest.raises(ValueError, match="group_size"):
        grpo_advantages(torch.zeros(4), 1)
    with pytest.raises(ValueError, match="1-D"):
        grpo_advantages(torch.zeros(2, 2), 2)
    with pytest.raises(TypeError, match="floating-point"):
        grpo_advantages(torch.zeros(4, dtype=torch.int64), 2)
    with pytest.raises(ValueError, match="shape"):
        kl_k3(f, torch.zeros(2))


# ---------------------------------------------------------------- GRPO depth: length normalisation (issue 16)
def _token_weights(aggregation, lengths, adv, G, max_len=None, dtype=torch.float64):
    """Autograd per-token gradient weights d(objective)/d logp under ppo_clip_loss at rho = 1."""
    from minilib.alignment import grpo_aggregate

    n, T = len(lengths), max(lengths) + 2  # two padding columns beyond the longest completion
    mask = torch.arange(T)[None, :] < torch.tensor(lengths)[:, None]
    logp = torch.randn(n, T, dtype=dtype, generator=torch.Generator().manual_seed(0)).requires_grad_(True)
    advantages = adv[:, None].expand(n, T).to(dtype)
    loss = grpo_aggregate(ppo_clip_loss(logp, logp.detach(), advantages), mask, G,
                          aggregation=aggregation, max_len=max_len)
    loss.backward()
    return -logp.grad, mask  # the objective is minus the loss


@pytest.mark.parametrize("aggregation", ["sequence", "token", "constant"])
def test_grpo_aggregate_token_weights_match_closed_form(aggregation):
    # two groups of G = 3, lengths differ within and across groups; closed forms typed by hand:
    # sequence A_i / (G L_i), token A_i / sum_j L_j, constant A_i / (G L_max), then / n_groups
    G, lengths, L_max = 3, [2, 5, 7, 1, 4, 4], 20
    adv = torch.tensor([1.5, -0.5, -1.0, 0.7, 0.2, -0.9], dtype=torch.float64)
    w, mask = _token_weights(aggregation, lengths, adv, G, max_len=L_max)
    L = torch.tensor(lengths, dtype=torch.float64)
    group_tokens = L.view(2, G).sum(1).repeat_interleave(G)
    kappa = {"sequence": 1 / (G * L), "token": 1 / group_tokens,
             "constant": torch.full_like(L, 1 / (G * L_max))}[aggregation]
    expected = (kappa * adv / 2)[:, None] * mask  # 2 groups averaged
    torch.testing.assert_close(w, expected, rtol=1e-12, atol=1e-15)


def test_grpo_aggregate_length_ratio_and_defaults():
    from minilib.alignment import grpo_aggregate

    # equal advantages, lengths 3 and 12: sequence weights differ by the length ratio 4, the others are equal
    adv = torch.tensor([-1.0, -1.0], dtype=torch.float64)
    ws, mask = _token_weights("sequence", [3, 12], adv, 2)
    assert math.isclose(ws[0, 0].item() / ws[1, 0].item(), 4.0, rel_tol=1e-12)
    for agg in ("token", "constant"):
        w, _ = _token_weights(agg, [3, 12], adv, 2, max_len=16)
        assert math.isclose(w[0, 0].item(), w[1, 0].item(), rel_tol=1e-12)
    # equal lengths: all three reduce to the plain mean over tokens (up to L_max / L for constant)
    x = torch.randn(4, 5)
    full = torch.ones(4, 5, dtype=torch.bool)
    for agg in ("sequence", "token", "constant"):
        torch.testing.assert_close(grpo_aggregate(x, full, 2, aggregation=agg), x.mean())
    # padding values never matter, and dtype/device follow the input
    y = x.clone().double()
    mask = torch.tensor([[1, 1, 0, 0, 0]] * 4)
    y2 = y.clone()
    y2[:, 2:] = 1e6
    for agg in ("sequence", "token", "constant"):
        out = grpo_aggregate(y, mask, 4, aggregation=agg)
        assert out.dtype == torch.float64 and out.device == y.device and out.dim() == 0
        torch.testing.assert_close(out, grpo_aggregate(y2, mask, 4, aggregation=agg))


def test_grpo_advantages_without_std_is_centring():
    r = torch.tensor([1.0, 0.0, 0.0, 0.0, 2.0, 2.0])
    torch.testing.assert_close(grpo_advantages(r, 3, scale_by_std=False),
                               torch.tensor([2 / 3, -1 / 3, -1 / 3, 0.0, 2 / 3, 2 / 3]) - torch.tensor([0, 0, 0, 4 / 3, 0, 0]))
    with pytest.raises(TypeError, match="scale_by_std"):
        grpo_advantages(r, 3, scale_by_std=1)


def test_grpo_aggregate_bad_inputs():
    from minilib.alignment import grpo_aggregate

    x, m = torch.zeros(4, 3), torch.ones(4, 3)
    with pytest.raises(TypeError, match="token_losses"):
        grpo_aggregate(torch.zeros(4, 3, dtype=torch.int64), m, 2)
    with pytest.raises(TypeError, match="mask"):
        grpo_aggregate(x, [[1, 1, 1]] * 4, 2)
    with pytest.raises(ValueError, match="2-D"):
        grpo_aggregate(torch.zeros(4), torch.ones(4), 2)
    with pytest.raises(ValueError, match="shape"):
        grpo_aggregate(x, torch.ones(4, 2), 2)
    with pytest.raises(ValueError, match="multiple"):
        grpo_aggregate(x, m, 3)
    with pytest.raises(ValueError, match="group_size"):
        grpo_aggregate(x, m, 0)
    with pytest.raises(ValueError, match="aggregation"):
        grpo_aggregate(x, m, 2, aggregation="mean")
    with pytest.raises(ValueError, match="0 and 1"):
        grpo_aggregate(x, 2 * m, 2)
    with pytest.raises(ValueError, match="at least one token"):
        grpo_aggregate(x, torch.tensor([[1, 1, 1]] * 3 + [[0, 0, 0]]), 2)
    with pytest.raises(ValueError, match="max_len"):
        grpo_aggregate(x, m, 2, aggregation="constant", max_len=2)


def test_grpo_aggregate_ignores_nonfinite_padding():
    # review: padding positions may hold NaN/inf (e.g. log-probs of pad tokens); they must not
    # reach the loss nor its gradient. Reference: the same rows with the padding cut off by hand.
    from minilib.alignment import grpo_aggregate

    x = torch.randn(4, 5, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    mask = torch.tensor([[1, 1, 1, 0, 0], [1, 0, 0, 0, 0], [1, 1, 1, 1, 1], [1, 1, 0, 0, 0]])
    bad = x.clone()
    bad[mask == 0] = float("nan")
    bad[0, 4] = float("inf")
    for agg in ("sequence", "token", "constant"):
        leaf = bad.clone().requires_grad_(True)
        out = grpo_aggregate(leaf, mask, 2, aggregation=agg, max_len=5)
        out.backward()
        rows = [x[i, : int(mask[i].sum())] for i in range(4)]
        L = [len(r) for r in rows]
        if agg == "sequence":
            ref = sum(r.mean() for r in rows) / 4
        elif agg == "token":
            ref = (sum(r.sum() for r in rows[:2]) / sum(L[:2]) + sum(r.sum() for r in rows[2:]) / sum(L[2:])) / 2
        else:
            ref = sum(r.sum() for r in rows) / (2 * 2 * 5)
        torch.testing.assert_close(out, ref)
        assert torch.isfinite(leaf.grad).all() and (leaf.grad[mask == 0] == 0).all()
