"""Tests of minilib.actor_critic against independent references (brute-force sums, hand Euler steps)."""

from __future__ import annotations

import math

import pytest
import torch

from minilib.actor_critic import (
    ActorCritic,
    CartPole,
    actor_critic_loss,
    cartpole_step,
    collect_rollout,
    gae,
)


def brute_gae(r, v, d, gamma, lam):
    """Double sum over l of (gamma lam)^l delta_{t+l}, stopping after the step where an episode ends."""
    T = len(r)
    delta = [r[t] + (0.0 if d[t] else gamma * v[t + 1]) - v[t] for t in range(T)]
    out = []
    for t in range(T):
        total = 0.0
        for l in range(T - t):
            total += (gamma * lam) ** l * delta[t + l]
            if d[t + l]:
                break
        out.append(total)
    return out


def mc_returns(r, v, d, gamma):
    """Discounted returns to the episode's end, bootstrapped with v[T] if the rollout stops mid-episode."""
    T = len(r)
    out = []
    for t in range(T):
        g, disc, k = 0.0, 1.0, t
        while True:
            g += disc * r[k]
            if d[k]:
                break
            disc *= gamma
            k += 1
            if k == T:
                g += disc * v[T]
                break
        out.append(g)
    return out


def random_rollout(T, seed, p_done=0.2):
    gen = torch.Generator().manual_seed(seed)
    r = torch.randn(T, generator=gen, dtype=torch.float64)
    v = torch.randn(T + 1, generator=gen, dtype=torch.float64)
    d = torch.rand(T, generator=gen) < p_done
    return r, v, d


@pytest.mark.parametrize("seed", range(5))
@pytest.mark.parametrize("gamma,lam", [(0.99, 0.95), (0.9, 0.5), (1.0, 1.0), (0.7, 0.0), (0.0, 0.3)])
def test_gae_matches_brute_force(seed, gamma, lam):
    r, v, d = random_rollout(13, seed)
    adv, ret = gae(r, v, d, gamma, lam)
    ref = torch.tensor(brute_gae(r.tolist(), v.tolist(), d.tolist(), gamma, lam), dtype=torch.float64)
    torch.testing.assert_close(adv, ref, atol=1e-12, rtol=0)
    torch.testing.assert_close(ret, ref + v[:-1], atol=1e-12, rtol=0)


@pytest.mark.parametrize("seed", range(5))
def test_gae_lambda_one_is_monte_carlo_minus_value(seed):
    r, v, d = random_rollout(17, seed)
    adv, ret = gae(r, v, d, 0.9, 1.0)
    G = torch.tensor(mc_returns(r.tolist(), v.tolist(), d.tolist(), 0.9), dtype=torch.float64)
    torch.testing.assert_close(ret, G, atol=1e-12, rtol=0)
    torch.testing.assert_close(adv, G - v[:-1], atol=1e-12, rtol=0)


@pytest.mark.parametrize("seed", range(3))
def test_gae_lambda_zero_is_td_error(seed):
    r, v, d = random_rollout(9, seed)
    adv, _ = gae(r, v, d, 0.8, 0.0)
    td = [r[t].item() + (0.0 if d[t] else 0.8 * v[t + 1].item()) - v[t].item() for t in range(9)]
    torch.testing.assert_close(adv, torch.tensor(td, dtype=torch.float64), atol=1e-12, rtol=0)


def test_gae_done_cuts_the_recursion():
    # changing anything after an episode end must not change the advantages before it
    r, v, d = random_rollout(10, 0, p_done=0.0)
    d[4] = True
    a1, _ = gae(r, v, d, 0.95, 0.9)
    r2, v2 = r.clone(), v.clone()
    r2[5:] += 10.0
    v2[5:] -= 7.0  # includes V(s_5), the next episode's first state: no bootstrap from it
    a2, _ = gae(r2, v2, d, 0.95, 0.9)
    torch.testing.assert_close(a1[:5], a2[:5], atol=0, rtol=0)
    assert not torch.allclose(a1[5:], a2[5:])
    assert a1[4].item() == pytest.approx(r[4].item() - v[4].item())


def test_gae_batched_and_dtypes():
    cols = [random_rollout(8, s) for s in range(3)]
    r = torch.stack([c[0] for c in cols], 1)
    v = torch.stack([c[1] for c in cols], 1)
    d = torch.stack([c[2] for c in cols], 1).to(torch.float64)  # 0/1 numbers are accepted
    adv, ret = gae(r, v, d, 0.9, 0.7)
    for b in range(3):
        torch.testing.assert_close(adv[:, b], gae(cols[b][0], cols[b][1], cols[b][2], 0.9, 0.7)[0])
    a32, r32 = gae(r.float(), v.float(), d.bool(), 0.9, 0.7)
    assert a32.dtype == torch.float32 and r32.dtype == torch.float32 and a32.shape == (8, 3)


def test_gae_bad_inputs():
    r, v, d = random_rollout(5, 0)
    with pytest.raises(ValueError, match="values"):
        gae(r, v[:-1], d, 0.9, 0.9)
    with pytest.raises(ValueError, match="gamma"):
        gae(r, v, d, 1.5, 0.9)
    with pytest.raises(ValueError, match="lam"):
        gae(r, v, d, 0.9, -0.1)
    with pytest.raises(TypeError, match="gamma"):
        gae(r, v, d, "0.9", 0.9)
    with pytest.raises(ValueError, match="dones"):
        gae(r, v, torch.full((5,), 0.5, dtype=torch.float64), 0.9, 0.9)
    with pytest.raises(ValueError, match="dones"):
        gae(r, v, d[:-1], 0.9, 0.9)
    with pytest.raises(TypeError, match="rewards"):
        gae(r.long(), v, d, 0.9, 0.9)
    with pytest.raises(TypeError, match="dones"):
        gae(r, v, [0, 0, 0, 0, 1], 0.9, 0.9)
    with pytest.raises(ValueError, match="dtype"):
        gae(r, v.float(), d, 0.9, 0.9)


def hand_euler(x, xd, th, thd, force):
    """The cart-pole equations of Barto, Sutton & Anderson (1983), written out once more by hand."""
    g, mc, mp, l, tau = 9.8, 1.0, 0.1, 0.5, 0.02
    m = mc + mp
    tmp = (force + mp * l * thd * thd * math.sin(th)) / m
    thacc = (g * math.sin(th) - math.cos(th) * tmp) / (l * (4.0 / 3.0 - mp * math.cos(th) ** 2 / m))
    xacc = tmp - mp * l * thacc * math.cos(th) / m
    return [x + tau * xd, xd + tau * xacc, th + tau * thd, thd + tau * thacc]


def test_cartpole_step_matches_hand_euler():
    states = [[0.0, 0.0, 0.0, 0.0], [0.1, -0.3, 0.05, 0.4], [-1.0, 1.0, -0.15, -1.2]]
    for a in (0, 1):
        out = cartpole_step(torch.tensor(states, dtype=torch.float64), torch.full((3,), a))
        ref = torch.tensor([hand_euler(*s, 10.0 if a else -10.0) for s in states], dtype=torch.float64)
        torch.testing.assert_close(out, ref, atol=1e-12, rtol=0)
    # upright and still, a push right gives the cart 10 / 1.1 * (1 - ...) : the analytic value at theta = 0
    out = cartpole_step(torch.zeros(4, dtype=torch.float64), torch.tensor(1))
    xacc = 10 / 1.1 - 0.1 * 0.5 * (-10 / 1.1 / (0.5 * (4 / 3 - 0.1 / 1.1))) / 1.1
    assert out[1].item() == pytest.approx(0.02 * xacc, abs=1e-12)
    with pytest.raises(ValueError, match="action"):
        cartpole_step(torch.zeros(4), torch.tensor(2))
    with pytest.raises(TypeError, match="action"):
        cartpole_step(torch.zeros(4), torch.tensor(1.0))
    with pytest.raises(ValueError, match="state"):
        cartpole_step(torch.zeros(3), torch.tensor(1))


def test_cartpole_env_ends_and_restarts():
    env = CartPole(2, max_steps=5, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    env.reset()
    for _ in range(5):
        obs, r, term, trunc, final = env.step(torch.tensor([0, 1]))
    assert bool(trunc.all()) and not bool(term.any())  # five steps cannot tip the pole
    assert obs.abs().max() <= 0.05 and final.abs().max() > 0.05  # restarted, final state kept
    env.state = torch.tensor([[2.39, 1.0, 0.0, 0.0], [0.0, 0.0, 0.2, 1.0]], dtype=torch.float64)
    _, _, term, _, _ = env.step(torch.tensor([1, 1]))
    assert term.tolist() == [True, True]
    with pytest.raises(ValueError, match="n"):
        CartPole(0)


def test_rollout_and_loss_shapes_and_errors():
    gen = torch.Generator().manual_seed(0)
    torch.manual_seed(0)
    env, net = CartPole(3, max_steps=7, generator=gen), ActorCritic(4, 2, 8)
    batch, obs = collect_rollout(env, net, env.reset(), 10, gamma=0.9, generator=gen)
    assert batch["values"].shape == (11, 3) and batch["rewards"].shape == (10, 3)
    assert batch["dones"][6].all()  # the time limit of 7 steps
    # a truncated step carries the bootstrap gamma V(s_final) in its reward
    assert not torch.allclose(batch["rewards"][6], torch.ones(3))
    logits, v = net(batch["obs"].reshape(30, 4))
    adv, ret = gae(batch["rewards"], batch["values"], batch["dones"], 0.9, 0.9)
    loss, stats = actor_critic_loss(logits, v, batch["actions"].reshape(30), batch["logp"].reshape(30), adv.reshape(30), ret.reshape(30))
    loss.backward()
    assert stats["entropy"] == pytest.approx(math.log(2), abs=0.01)  # near-uniform start
    with pytest.raises(ValueError, match="logits"):
        actor_critic_loss(logits[:3], v, batch["actions"].reshape(30), batch["logp"].reshape(30), adv.reshape(30), ret.reshape(30))
    with pytest.raises(ValueError, match="gamma"):
        collect_rollout(env, net, obs, 3, gamma=2.0)


def test_actor_critic_loss_matches_hand_computation():
    # an independent, loop-by-hand evaluation of (actor-critic-ppo-loss) and of the A2C policy term
    gen = torch.Generator().manual_seed(3)
    logits = torch.randn(6, 3, generator=gen, dtype=torch.float64)
    values = torch.randn(6, generator=gen, dtype=torch.float64)
    actions = torch.randint(0, 3, (6,), generator=gen)
    old_logp = torch.randn(6, generator=gen, dtype=torch.float64) - 1.0
    adv = torch.randn(6, generator=gen, dtype=torch.float64)
    ret = torch.randn(6, generator=gen, dtype=torch.float64)
    eps, cv, ch = 0.2, 0.5, 0.01
    pol, pg, val, ent = 0.0, 0.0, 0.0, 0.0
    for i in range(6):
        z = [math.exp(x) for x in logits[i].tolist()]
        p = [x / sum(z) for x in z]
        lp = math.log(p[actions[i]])
        rho = math.exp(lp - old_logp[i].item())
        a = adv[i].item()
        pol += -min(rho * a, min(max(rho, 1 - eps), 1 + eps) * a) / 6
        pg += -a * lp / 6
        val += (values[i].item() - ret[i].item()) ** 2 / 6
        ent += -sum(q * math.log(q) for q in p) / 6
    loss, stats = actor_critic_loss(logits, values, actions, old_logp, adv, ret, clip=eps, value_coef=cv, entropy_coef=ch)
    assert loss.item() == pytest.approx(pol + cv * val - ch * ent, abs=1e-12)
    assert stats["entropy"] == pytest.approx(ent, abs=1e-12)
    loss_a2c, stats_a2c = actor_critic_loss(logits, values, actions, old_logp, adv, ret, clip=None)
    assert stats_a2c["policy"] == pytest.approx(pg, abs=1e-12)
    with pytest.raises(ValueError, match="non-negative"):
        actor_critic_loss(logits, values, actions, old_logp, adv, ret, value_coef=-1.0)


def test_rollout_truncation_bootstrap_is_gamma_times_final_value():
    # (actor-critic-truncation): the reward of a time-limited step is 1 + gamma V(s_final)
    gen = torch.Generator().manual_seed(1)
    torch.manual_seed(1)
    env, net = CartPole(2, max_steps=4, generator=gen, dtype=torch.float64), ActorCritic(4, 2, 8).double()
    obs = env.reset()
    states = [obs.clone()]
    batch, _ = collect_rollout(env, net, obs, 4, gamma=0.9, generator=gen)
    for t in range(4):  # replay the recorded actions from the recorded start to get the final state
        states.append(cartpole_step(states[-1], batch["actions"][t]))
    with torch.no_grad():
        expected = 1.0 + 0.9 * net(states[-1])[1]
    torch.testing.assert_close(batch["rewards"][3], expected, atol=1e-12, rtol=0)
    torch.testing.assert_close(batch["rewards"][:3], torch.ones(3, 2, dtype=torch.float64))
    assert batch["dones"][3].all() and not batch["dones"][:3].any()
