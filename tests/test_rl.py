"""Tests for minilib.rl against closed forms, brute force and identities from the RL chapters."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from minilib import rl


def random_mdp(seed: int, S: int = 4, A: int = 3, gamma: float = 0.8) -> rl.MDP:
    rng = np.random.default_rng(seed)
    P = rng.random((S, A, S)) ** 3  # skewed rows, some nearly deterministic
    P /= P.sum(axis=2, keepdims=True)
    R = rng.normal(size=(S, A))
    return rl.MDP(P, R, gamma)


def random_policy(seed: int, S: int, A: int) -> np.ndarray:
    pi = np.random.default_rng(seed + 1000).random((S, A))
    return pi / pi.sum(axis=1, keepdims=True)


def all_deterministic_policies(S: int, A: int):
    for actions in itertools.product(range(A), repeat=S):
        yield np.eye(A)[list(actions)]


# ------------------------------------------------------------------------- policy evaluation


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 10_000), gamma=st.floats(0.0, 0.95))
def test_exact_equals_iterative(seed: int, gamma: float) -> None:
    m = random_mdp(seed, gamma=gamma)
    pi = random_policy(seed, m.S, m.A)
    v_exact = rl.policy_evaluation(m, pi, method="exact")
    v_iter = rl.policy_evaluation(m, pi, method="iterative", tol=1e-12)
    np.testing.assert_allclose(v_iter, v_exact, atol=1e-9)


def test_values_satisfy_bellman_equation_and_q_identity() -> None:
    m = random_mdp(1)
    pi = random_policy(1, m.S, m.A)
    v = rl.policy_evaluation(m, pi)
    # elementwise Bellman equation, written out with explicit sums (independent of the matrix form)
    for s in range(m.S):
        rhs = sum(pi[s, a] * (m.R[s, a] + m.gamma * sum(m.P[s, a, t] * v[t] for t in range(m.S))) for a in range(m.A))
        assert v[s] == pytest.approx(rhs, abs=1e-12)
    # v_pi(s) = sum_a pi(a|s) q_pi(s, a)
    np.testing.assert_allclose((pi * rl.q_values(m, v)).sum(axis=1), v, atol=1e-12)


def test_values_match_monte_carlo_free_series() -> None:
    """v = sum_k gamma^k P_pi^k r_pi (the Neumann series behind the closed form)."""
    m = random_mdp(2, gamma=0.7)
    pi = random_policy(2, m.S, m.A)
    P_pi, r_pi = m.P_pi(pi), m.r_pi(pi)
    series, term = np.zeros(m.S), r_pi.copy()
    for _ in range(200):
        series += term
        term = m.gamma * P_pi @ term
    np.testing.assert_allclose(rl.policy_evaluation(m, pi), series, atol=1e-10)


@pytest.mark.parametrize("c", [-2.0, 0.5, 3.0])
@pytest.mark.parametrize("gamma", [0.0, 0.5, 0.9])
def test_reward_shift_moves_values_by_c_over_one_minus_gamma(c: float, gamma: float) -> None:
    m = random_mdp(3, gamma=gamma)
    shifted = rl.MDP(m.P, m.R + c, gamma)
    pi = random_policy(3, m.S, m.A)
    np.testing.assert_allclose(rl.policy_evaluation(shifted, pi), rl.policy_evaluation(m, pi) + c / (1 - gamma), atol=1e-10)
    v_star, pi_star = rl.value_iteration(m)
    v_star_shifted, pi_star_shifted = rl.value_iteration(shifted)
    np.testing.assert_allclose(v_star_shifted, v_star + c / (1 - gamma), atol=1e-8)
    np.testing.assert_array_equal(pi_star_shifted, pi_star)


def test_scaling_rewards_scales_values() -> None:
    m = random_mdp(4)
    pi = random_policy(4, m.S, m.A)
    scaled = rl.MDP(m.P, 3.0 * m.R, m.gamma)
    np.testing.assert_allclose(rl.policy_evaluation(scaled, pi), 3.0 * rl.policy_evaluation(m, pi), atol=1e-10)


# ------------------------------------------------------------------------- terminal states, gamma = 1


def chain(n: int = 4) -> rl.MDP:
    """States 0..n-1 on a line; action 0 moves right, action 1 stays; reward -1 per step; n-1 terminal."""
    P = np.zeros((n, 2, n))
    for s in range(n):
        P[s, 0, min(s + 1, n - 1)] = 1.0
        P[s, 1, s] = 1.0
    R = np.full((n, 2), -1.0)
    terminal = np.zeros(n, dtype=bool)
    terminal[-1] = True
    return rl.MDP(P, R, 1.0, terminal)


def test_terminal_states_with_gamma_one() -> None:
    m = chain(4)
    right = np.eye(2)[[0, 0, 0, 0]]
    expected = -np.array([3.0, 2.0, 1.0, 0.0])  # steps to the end
    np.testing.assert_allclose(rl.policy_evaluation(m, right), expected, atol=1e-12)
    np.testing.assert_allclose(rl.policy_evaluation(m, right, method="iterative"), expected, atol=1e-9)
    # a stochastic policy: expected steps to move one cell with success prob p are 1/p
    p = 0.25
    mixed = np.tile([p, 1 - p], (4, 1))
    np.testing.assert_allclose(rl.policy_evaluation(m, mixed), expected / p, atol=1e-9)
    v, pi = rl.value_iteration(m)
    np.testing.assert_allclose(v, expected, atol=1e-9)
    v_pi, pi_pi, _ = rl.policy_iteration(m)
    np.testing.assert_allclose(v_pi, expected, atol=1e-9)
    assert (pi_pi[:3].argmax(axis=1) == 0).all()


def test_terminal_value_is_zero_whatever_p_and_r_say() -> None:
    m = chain(3)
    R = m.R.copy()
    R[-1] = 100.0  # rewards out of a terminal state are ignored
    m2 = rl.MDP(m.P, R, 1.0, m.terminal)
    right = np.eye(2)[[0, 0, 0]]
    np.testing.assert_allclose(rl.policy_evaluation(m2, right), [-2.0, -1.0, 0.0])
    assert (rl.q_values(m2, np.zeros(3))[-1] == 0).all()


@pytest.mark.parametrize("method", ["exact", "iterative"])
def test_improper_policy_under_gamma_one_raises(method: str) -> None:
    m = chain(4)
    stuck = np.eye(2)[[0, 1, 0, 0]]  # state 1 stays forever
    with pytest.raises(ValueError, match="never does"):
        rl.policy_evaluation(m, stuck, method=method)


# ------------------------------------------------------------------------- optimality


def test_value_iteration_matches_brute_force_over_deterministic_policies() -> None:
    m = random_mdp(5, S=3, A=3, gamma=0.9)
    values = np.stack([rl.policy_evaluation(m, pi) for pi in all_deterministic_policies(m.S, m.A)])
    v_brute = values.max(axis=0)
    # an optimal deterministic policy dominates all others in every state at once
    assert np.isclose(values, v_brute, atol=1e-9).all(axis=1).any()
    v_star, pi_star = rl.value_iteration(m)
    np.testing.assert_allclose(v_star, v_brute, atol=1e-8)
    np.testing.assert_allclose(rl.policy_evaluation(m, pi_star), v_brute, atol=1e-8)


@pytest.mark.parametrize("seed", range(5))
def test_vi_pi_and_truncated_pi_agree(seed: int) -> None:
    m = random_mdp(seed, S=6, A=3, gamma=0.9)
    v_vi, _ = rl.value_iteration(m)
    v_pi, pi_pi, n = rl.policy_iteration(m)
    np.testing.assert_allclose(v_pi, v_vi, atol=1e-8)
    assert 1 <= n <= 20
    for k in (1, 3, 10, float("inf")):
        v_k, pi_k, _ = rl.truncated_policy_iteration(m, k)
        np.testing.assert_allclose(v_k, v_vi, atol=1e-8)
    # the PI policy is greedy for its own values (the optimality equation holds)
    q = rl.q_values(m, v_pi)
    np.testing.assert_allclose((pi_pi * q).sum(axis=1), q.max(axis=1), atol=1e-10)


def test_truncated_pi_with_k_one_is_value_iteration() -> None:
    m = random_mdp(7)
    h_vi: list = []
    h_tpi: list = []
    rl.value_iteration(m, history=h_vi)
    rl.truncated_policy_iteration(m, 1, history=h_tpi)
    np.testing.assert_allclose(h_tpi[5], h_vi[5], atol=1e-12)


def test_value_iteration_error_contracts_by_gamma() -> None:
    m = random_mdp(8, gamma=0.8)
    v_star, _ = rl.value_iteration(m)
    hist: list = []
    rl.value_iteration(m, history=hist, tol=1e-6)
    errs = [np.abs(v - v_star).max() for v in hist[:10]]
    for a, b in zip(errs, errs[1:]):
        assert b <= 0.8 * a + 1e-12


def test_policy_iteration_values_are_monotone() -> None:
    m = random_mdp(9, S=8, A=4, gamma=0.95)
    hist: list = []
    rl.policy_iteration(m, history=hist)
    for a, b in zip(hist[1:], hist[2:]):
        assert (b >= a - 1e-10).all()


# ------------------------------------------------------------------------- grid world


def test_gridworld_rewards_and_indexing() -> None:
    g = rl.GridWorld(3, 4, forbidden=[(1, 1)], target=(2, 3), r_boundary=-2.0, r_forbidden=-5.0, r_target=3.0, r_other=0.5)
    m = g.mdp()
    up, right, down, left, stay = range(5)
    s = g.state(1, 0)
    assert s == 4
    assert m.R[s, left] == -2.0 and m.P[s, left, s] == 1.0  # off the grid: stay, r_boundary
    assert m.R[s, right] == -5.0 and m.P[s, right, g.state(1, 1)] == 1.0  # entering forbidden
    assert m.R[g.state(1, 1), stay] == -5.0
    assert m.R[g.state(2, 2), right] == 3.0 and m.R[g.state(2, 3), stay] == 3.0
    assert m.R[s, up] == 0.5 and m.P[s, up, g.state(0, 0)] == 1.0
    assert m.R[g.state(2, 3), down] == -2.0  # bumping the boundary from the target
    assert not m.terminal.any()


def test_gridworld_optimal_value_at_target() -> None:
    g = rl.GridWorld(5, 5, forbidden=[(1, 1), (1, 2), (2, 2), (3, 1), (3, 3), (4, 1)], target=(3, 2), gamma=0.9)
    v, pi = rl.value_iteration(g.mdp())
    t = g.state(3, 2)
    assert v[t] == pytest.approx(1.0 / (1 - 0.9), abs=1e-8)
    assert pi[t].argmax() == 4  # stay
    # a cell next to the target: one step of r_target then stay forever
    assert v[g.state(2, 2)] == pytest.approx(1.0 + 0.9 / (1 - 0.9), abs=1e-8)


def test_gridworld_render_runs() -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    g = rl.GridWorld(2, 3, forbidden=[(0, 1)], target=(1, 2))
    v, pi = rl.value_iteration(g.mdp())
    ax = g.render(values=v, policy=pi)
    assert len(ax.images) == 1 and len(ax.texts) == 6
    plt.close(ax.figure)
    with pytest.raises(ValueError, match="values must have shape"):
        g.render(values=np.zeros(5))


def test_cliff_walking_optimal_start_value() -> None:
    m, start = rl.cliff_walking()
    v, pi = rl.value_iteration(m)
    assert v[start] == pytest.approx(-13.0)  # up, 11 x right, down
    v_pi, _, _ = rl.policy_iteration(m)
    np.testing.assert_allclose(v_pi, v, atol=1e-9)


# ------------------------------------------------------------------------- sampling


def test_discounted_returns_match_direct_sum() -> None:
    r = np.random.default_rng(0).normal(size=7)
    G = rl.discounted_returns(r, 0.8)
    for t in range(7):
        assert G[t] == pytest.approx(sum(0.8**k * r[t + k] for k in range(7 - t)))


@pytest.mark.parametrize("make_rng", [lambda: np.random.default_rng(0), lambda: torch.Generator().manual_seed(0)])
def test_environment_samples_from_p(make_rng) -> None:
    m = random_mdp(10, S=3, A=2)
    env = rl.Environment(m, make_rng())
    n = 4000
    counts = np.zeros(3)
    for _ in range(n):
        s_next, r = env.step(1, 0)
        counts[s_next] += 1
        assert r == m.R_sas[1, 0, s_next]
    # binomial standard error <= 0.008; allow 4.5 of them
    np.testing.assert_allclose(counts / n, m.P[1, 0], atol=0.036)


def test_transition_rewards_expected_value_and_sampling() -> None:
    """A reward r(s, a, s') that depends on the landing state: R is its P-weighted mean, and the
    environment hands out the reward of the sampled transition (0 or 1 here), not the mean."""
    rng = np.random.default_rng(5)
    S, A = 3, 2
    P = rng.random((S, A, S))
    P /= P.sum(axis=2, keepdims=True)
    R3 = rng.normal(size=(S, A, S))
    m = rl.MDP(P, R3, 0.7)
    expected = np.array([[sum(P[s, a, t] * R3[s, a, t] for t in range(S)) for a in range(A)] for s in range(S)])
    np.testing.assert_allclose(m.R, expected, atol=1e-12)
    np.testing.assert_array_equal(m.R_sas, R3)
    # the value of a policy depends on the rewards only through r(s, a): compare with (S, A) input
    pi = random_policy(5, S, A)
    np.testing.assert_allclose(rl.policy_evaluation(m, pi), rl.policy_evaluation(rl.MDP(P, expected, 0.7), pi), atol=1e-12)
    # a fair coin: reward 1 on landing in state 1, else 0
    coin = rl.MDP([[[0.5, 0.5]], [[0.0, 1.0]]], [[[0.0, 1.0]], [[0.0, 0.0]]], 0.9)
    assert coin.R[0, 0] == pytest.approx(0.5)
    env = rl.Environment(coin, np.random.default_rng(0))
    draws = [env.step(0, 0) for _ in range(4000)]
    assert all(r == float(s_next == 1) for s_next, r in draws)  # the reward follows the transition
    rewards = np.array([r for _, r in draws])
    assert set(rewards.tolist()) == {0.0, 1.0}
    assert abs(rewards.mean() - 0.5) < 4.5 * 0.5 / np.sqrt(len(rewards))  # binomial standard errors
    # editing P keeps R consistent with it (R is computed, not stored)
    coin.P[0, 0] = [0.2, 0.8]
    assert coin.R[0, 0] == pytest.approx(0.8)


def test_environment_is_reproducible_and_episodes_stop_at_terminal() -> None:
    m = chain(5)
    pi = np.tile([0.5, 0.5], (5, 1))
    a = rl.Environment(m, np.random.default_rng(3)).episode(pi, 0, 200)
    b = rl.Environment(m, np.random.default_rng(3)).episode(pi, 0, 200)
    for x, y in zip(a, b):
        np.testing.assert_array_equal(x, y)
    states, actions, rewards = a
    assert not m.terminal[states].any() and len(states) == len(actions) == len(rewards)
    assert (states[1:] - states[:-1] >= 0).all()


# ------------------------------------------------------------------------- model-free methods


def small_stochastic_mdp() -> tuple[rl.MDP, np.ndarray]:
    m = random_mdp(11, S=3, A=2, gamma=0.5)
    return m, random_policy(11, 3, 2)


def test_mc_evaluation_converges_to_v_pi() -> None:
    m, pi = small_stochastic_mdp()
    env = rl.Environment(m, np.random.default_rng(0))
    v_mc = rl.mc_evaluation(env, pi, n_episodes=2000, episode_length=25)
    np.testing.assert_allclose(v_mc, rl.policy_evaluation(m, pi), atol=0.05)


def test_td0_converges_to_v_pi() -> None:
    m, pi = small_stochastic_mdp()
    env = rl.Environment(m, np.random.default_rng(1))
    v_td = rl.td0(env, pi, n_episodes=300, episode_length=100, alpha=lambda n: 1.0 / n**0.7)
    np.testing.assert_allclose(v_td, rl.policy_evaluation(m, pi), atol=0.05)


def test_q_learning_reaches_q_star_on_deterministic_mdp() -> None:
    g = rl.GridWorld(2, 2, forbidden=[(0, 1)], target=(1, 1), gamma=0.8)
    m = g.mdp()
    v_star, _ = rl.value_iteration(m)
    q_star = rl.q_values(m, v_star)
    env = rl.Environment(m, np.random.default_rng(0))
    # behaviour is uniformly random (epsilon = 1): Q-learning is off-policy, it still learns q*
    q, _ = rl.q_learning(env, n_episodes=200, alpha=0.5, epsilon=1.0, max_steps=50)
    np.testing.assert_allclose(q, q_star, atol=1e-3)


def test_sarsa_learns_epsilon_greedy_values() -> None:
    """With a fixed small epsilon Sarsa's q approaches q of the epsilon-greedy policy it follows."""
    g = rl.GridWorld(2, 2, target=(1, 1), gamma=0.5)
    m = g.mdp()
    env = rl.Environment(m, np.random.default_rng(2))
    eps = 0.2
    q, _ = rl.sarsa(env, n_episodes=400, alpha=lambda n: 1.0 / n**0.6, epsilon=eps, max_steps=50)
    pi = rl.epsilon_greedy(q, eps)
    q_pi = rl.q_values(m, rl.policy_evaluation(m, pi))
    greedy = pi.argmax(axis=1)
    rows = np.arange(m.S)
    # the greedy actions are taken most often, so their estimates are the accurate ones
    np.testing.assert_allclose(q[rows, greedy], q_pi[rows, greedy], atol=0.1)
    v_star, _ = rl.value_iteration(m)
    np.testing.assert_allclose(rl.policy_evaluation(m, rl.greedy_policy(q)), v_star, atol=1e-8)


def test_mc_control_and_mc_basic_find_optimal_policy() -> None:
    g = rl.GridWorld(2, 3, forbidden=[(0, 1)], target=(1, 2), gamma=0.8)
    m = g.mdp()
    v_star, _ = rl.value_iteration(m)
    env = rl.Environment(m, np.random.default_rng(0))
    q, pi = rl.mc_basic(env, n_iterations=5, episodes_per_pair=1, episode_length=60)
    np.testing.assert_allclose(rl.policy_evaluation(m, pi), v_star, atol=1e-6)
    env = rl.Environment(m, np.random.default_rng(1))
    q, pi = rl.mc_control(env, n_episodes=800, episode_length=20, epsilon=0.0, exploring_starts=True)
    np.testing.assert_allclose(rl.policy_evaluation(m, pi), v_star, atol=1e-6)


def test_epsilon_greedy_is_epsilon_soft() -> None:
    q = np.random.default_rng(0).normal(size=(4, 5))
    pi = rl.epsilon_greedy(q, 0.3)
    np.testing.assert_allclose(pi.sum(axis=1), 1.0)
    assert (pi >= 0.3 / 5 - 1e-12).all()
    assert (pi.argmax(axis=1) == q.argmax(axis=1)).all()


# ------------------------------------------------------------------------- inputs and bad input


def test_accepts_torch_tensors() -> None:
    m = random_mdp(12)
    mt = rl.MDP(torch.tensor(m.P), torch.tensor(m.R), m.gamma)
    pi = random_policy(12, m.S, m.A)
    np.testing.assert_allclose(rl.policy_evaluation(mt, torch.tensor(pi)), rl.policy_evaluation(m, pi))


def test_bad_input() -> None:
    P = np.full((2, 1, 2), 0.5)
    R = np.zeros((2, 1))
    with pytest.raises(ValueError, match="sum to 1"):
        rl.MDP(np.full((2, 1, 2), 0.6), R, 0.9)
    with pytest.raises(ValueError, match="non-negative"):
        rl.MDP(np.array([[[1.5, -0.5]], [[0.5, 0.5]]]), R, 0.9)
    with pytest.raises(ValueError, match=r"gamma must lie in \[0, 1\]"):
        rl.MDP(P, R, 1.1)
    with pytest.raises(ValueError, match=r"gamma must lie in \[0, 1\]"):
        rl.MDP(P, R, -0.1)
    with pytest.raises(ValueError, match="gamma = 1 needs at least one terminal"):
        rl.MDP(P, R, 1.0)
    with pytest.raises(ValueError, match=r"P must have shape \(S, A, S\)"):
        rl.MDP(np.full((2, 1, 3), 1 / 3), R, 0.9)
    with pytest.raises(ValueError, match="R must have shape"):
        rl.MDP(P, np.zeros((2, 2)), 0.9)
    with pytest.raises(ValueError, match=r"R must have shape .* or \(S, A, S\)"):
        rl.MDP(P, np.zeros((2, 1, 3)), 0.9)
    with pytest.raises(ValueError, match="terminal must be a boolean mask of shape"):
        rl.MDP(P, R, 0.9, terminal=np.array([True]))
    with pytest.raises(TypeError, match="terminal must be a boolean mask"):
        rl.MDP(P, R, 0.9, terminal=np.array([1, 0]))
    with pytest.raises(ValueError, match="finite"):
        rl.MDP(P, np.array([[np.nan], [0.0]]), 0.9)
    with pytest.raises(TypeError, match="gamma must be a real number"):
        rl.MDP(P, R, "0.9")
    m = rl.MDP(P, R, 0.9)
    with pytest.raises(ValueError, match=r"policy must have shape \(S, A\)"):
        rl.policy_evaluation(m, np.ones((2, 2)) / 2)
    with pytest.raises(ValueError, match="every row of policy must sum to 1"):
        rl.policy_evaluation(m, np.array([[1.0], [0.5]]))
    with pytest.raises(ValueError, match="method must be"):
        rl.policy_evaluation(m, np.ones((2, 1)), method="magic")
    with pytest.raises(ValueError, match=r"v must have shape"):
        rl.q_values(m, np.zeros(3))
    with pytest.raises(TypeError, match="mdp must be"):
        rl.value_iteration("not an mdp")
    with pytest.raises(ValueError, match="k must be a positive int"):
        rl.truncated_policy_iteration(m, 0)
    with pytest.raises(ValueError, match="outside the"):
        rl.GridWorld(2, 2, target=(2, 0))
    with pytest.raises(ValueError, match="cannot also be forbidden"):
        rl.GridWorld(2, 2, target=(0, 0), forbidden=[(0, 0)])
    with pytest.raises(TypeError, match="rng must be"):
        rl.Environment(m, 0)
    with pytest.raises(ValueError, match="alpha must lie"):
        rl.td0(rl.Environment(m, np.random.default_rng(0)), np.ones((2, 1)), n_episodes=1, episode_length=1, alpha=2.0)


# ------------------------------------------------------------------------- stochastic approximation


def test_incremental_mean_equals_running_sample_mean() -> None:
    x = np.random.default_rng(0).normal(size=(50, 3))
    expected = np.cumsum(x, axis=0) / np.arange(1, 51)[:, None]
    np.testing.assert_allclose(rl.incremental_mean(x), expected, atol=1e-12)


def test_incremental_mean_constant_step_is_exponential_average() -> None:
    x = np.random.default_rng(1).normal(size=20)
    a = 0.3
    w = rl.incremental_mean(x, alpha=a)
    # closed form: w_K = (1-a)^(K-1) x_1 + sum_{j>=2} a (1-a)^(K-j) x_j
    K = len(x)
    weights = np.array([(1 - a) ** (K - 1)] + [a * (1 - a) ** (K - j) for j in range(2, K + 1)])
    assert w[-1] == pytest.approx(float(weights @ x))


def test_robbins_monro_finds_root_under_noise() -> None:
    rng = np.random.default_rng(0)
    root = np.arctanh(0.5)
    noisy = lambda w, k: np.tanh(w) - 0.5 + rng.normal(size=w.shape)
    w = rl.robbins_monro(noisy, np.full(200, 3.0), 4.0 / np.arange(1, 4001))
    assert np.mean((w[-1] - root) ** 2) < 5e-3
    # step sizes summing to a finite total cannot travel far: a_k = 1/k^2 stalls
    w_stall = rl.robbins_monro(noisy, np.full(200, 3.0), 0.05 / np.arange(1, 4001) ** 2)
    assert np.abs(w_stall[-1] - root).min() > 1.5  # every chain is still far from the root


def test_robbins_monro_constant_step_variance_matches_recursion() -> None:
    """g(w) = c (w - w*) with noise variance s2: E(w_k - w*)^2 -> a s2 / (2c - a c^2)."""
    rng = np.random.default_rng(1)
    a, c, s2 = 0.1, 1.0, 1.0
    noisy = lambda w, k: c * w + rng.normal(scale=np.sqrt(s2), size=w.shape)
    w = rl.robbins_monro(noisy, np.zeros(4000), np.full(300, a))
    assert np.var(w[-1]) == pytest.approx(a * s2 / (2 * c - a * c**2), rel=0.08)


def test_stochastic_approximation_bad_input() -> None:
    with pytest.raises(ValueError, match="alpha must lie"):
        rl.incremental_mean([1.0, 2.0], alpha=1.5)
    with pytest.raises(ValueError, match="samples must have shape"):
        rl.incremental_mean(np.zeros(0))
    with pytest.raises(ValueError, match="non-negative"):
        rl.robbins_monro(lambda w, k: w, 0.0, [-0.1])


# --- off-policy evaluation by importance sampling (chapter: monte-carlo) -----------------------


def _l_step_value(mdp: rl.MDP, policy: np.ndarray, L: int) -> np.ndarray:
    v = np.zeros(mdp.S)
    for _ in range(L):
        v = rl.bellman_operator(mdp, v, policy)
    return v


def test_off_policy_episodes_match_replayed_episodes() -> None:
    # the same seed replays the same draws through Environment.episode; rho and G recomputed by hand
    mdp = random_mdp(3)
    pi, b = random_policy(1, mdp.S, mdp.A), random_policy(2, mdp.S, mdp.A)
    rho, G = rl.off_policy_episodes(rl.Environment(mdp, np.random.default_rng(7)), pi, b,
                                    n_episodes=50, episode_length=6, start=1)
    env = rl.Environment(mdp, np.random.default_rng(7))
    for i in range(50):
        s, a, r = env.episode(b, 1, 6)
        assert rho[i] == pytest.approx(np.prod(pi[s, a] / b[s, a]), rel=1e-12)
        assert G[i] == pytest.approx(rl.discounted_returns(r, mdp.gamma)[0], rel=1e-12, abs=1e-12)


def _brute_force_moments(mdp: rl.MDP, pi: np.ndarray, b: np.ndarray, L: int, s0: int) -> dict:
    # exact sums over every trajectory of L steps (no terminal states): Pr_pi and Pr_b built separately
    out = dict.fromkeys(["rho_G", "rho", "rho_sq", "pi_rho"], 0.0)
    for acts in itertools.product(range(mdp.A), repeat=L):
        for nxt in itertools.product(range(mdp.S), repeat=L):
            s, prob_b, prob_pi, g = s0, 1.0, 1.0, 0.0
            for t in range(L):
                a, s2 = acts[t], nxt[t]
                prob_b *= b[s, a] * mdp.P[s, a, s2]
                prob_pi *= pi[s, a] * mdp.P[s, a, s2]
                g += mdp.gamma ** t * mdp.R_sas[s, a, s2]
                s = s2
            if prob_b > 0:
                rho = prob_pi / prob_b           # the ratio of the trajectory probabilities, model included
                out["rho_G"] += prob_b * rho * g
                out["rho"] += prob_b * rho
                out["rho_sq"] += prob_b * rho**2
                out["pi_rho"] += prob_pi * rho
    return out


def test_importance_sampling_brute_force_unbiased() -> None:
    # E_b[rho G] over all trajectories equals the exact L-step value of pi; E_b[rho] = 1;
    # E_b[rho^2] = E_pi[rho] >= 1
    mdp = random_mdp(5, S=3, A=2, gamma=0.9)
    pi, L, s0 = random_policy(3, 3, 2), 3, 0
    for b in (random_policy(4, 3, 2), np.full((3, 2), 0.5)):
        m = _brute_force_moments(mdp, pi, b, L, s0)
        assert m["rho_G"] == pytest.approx(_l_step_value(mdp, pi, L)[s0], rel=1e-10)
        assert m["rho"] == pytest.approx(1.0, rel=1e-12)
        assert m["rho_sq"] == pytest.approx(m["pi_rho"], rel=1e-10) and m["rho_sq"] > 1.0
    # the implementation's ratios (policy factors only) have these exact moments; with the uniform
    # b the ratios are light-tailed (E_b[rho^2] is small), so 5 sample SEs is a reliable bound
    rho, G = rl.off_policy_episodes(rl.Environment(mdp, np.random.default_rng(1)), pi, b,
                                    n_episodes=20_000, episode_length=L, start=s0)
    for x, exact in ((rho, 1.0), (rho**2, m["rho_sq"]), (rho * G, m["rho_G"])):
        assert abs(x.mean() - exact) < 5 * x.std() / np.sqrt(x.size)


def test_importance_sampling_estimates_statistically() -> None:
    mdp = random_mdp(8)
    pi, b = random_policy(5, mdp.S, mdp.A), random_policy(6, mdp.S, mdp.A)
    L, s0 = 4, 2
    exact = _l_step_value(mdp, pi, L)[s0]
    rho, G = rl.off_policy_episodes(rl.Environment(mdp, np.random.default_rng(0)), pi, b,
                                    n_episodes=20_000, episode_length=L, start=s0)
    x = rho * G
    assert abs(rl.importance_sampling(rho, G) - exact) < 5 * x.std() / np.sqrt(x.size)
    assert rho.mean() == pytest.approx(1.0, abs=5 * rho.std() / np.sqrt(rho.size))  # E_b[rho] = 1
    # weighted IS is consistent: with 20,000 episodes its O(1/n) bias is far below this tolerance
    assert rl.importance_sampling(rho, G, weighted=True) == pytest.approx(exact, abs=10 * x.std() / np.sqrt(x.size))


def test_importance_sampling_closed_forms_and_torch_input() -> None:
    rho, g = torch.tensor([0.5, 2.0, 0.0]), torch.tensor([4.0, 1.0, 7.0])
    assert rl.importance_sampling(rho, g) == pytest.approx((2.0 + 2.0) / 3)
    assert rl.importance_sampling(rho, g, weighted=True) == pytest.approx(4.0 / 2.5)
    assert rl.importance_sampling([0.0, 0.0], [1.0, 2.0], weighted=True) == 0.0


def test_off_policy_bad_input() -> None:
    mdp = random_mdp(1, S=2, A=2)
    env = rl.Environment(mdp, np.random.default_rng(0))
    pi = np.array([[1.0, 0.0], [0.5, 0.5]])
    with pytest.raises(ValueError, match="does not cover"):
        rl.off_policy_episodes(env, pi, [[0.0, 1.0], [0.5, 0.5]], n_episodes=1, episode_length=1, start=0)
    for kw in ({"n_episodes": 0}, {"episode_length": -1}, {"start": 5}, {"n_episodes": 2.0}):
        args = {"n_episodes": 1, "episode_length": 1, "start": 0} | kw
        with pytest.raises(ValueError):
            rl.off_policy_episodes(env, pi, pi, **args)
    with pytest.raises(TypeError, match="env"):
        rl.off_policy_episodes(mdp, pi, pi, n_episodes=1, episode_length=1, start=0)
    with pytest.raises(ValueError, match="non-negative"):
        rl.importance_sampling([-1.0, 1.0], [1.0, 1.0])
    with pytest.raises(ValueError, match="shape"):
        rl.importance_sampling([1.0, 1.0], [1.0])
    with pytest.raises(ValueError, match="shape"):
        rl.importance_sampling([], [])
    with pytest.raises(ValueError, match="finite"):
        rl.importance_sampling([float("nan")], [1.0])


# --- td-learning depth (issue 16): double_q_update ------------------------------------------------


def _double_q_reference(q1, q2, s, a, r, s_next, done, first, alpha, gamma, active):
    """Plain-Python loop over runs and actions, written from (td-learning-double-q)."""
    q1, q2 = q1.tolist(), q2.tolist()
    for n in range(len(s)):
        if not active[n]:
            continue
        upd, other = (q1, q2) if first[n] else (q2, q1)
        row = upd[n][s_next[n]]
        best = max(range(len(row)), key=lambda j: (row[j], -j))  # lowest index among ties
        boot = 0.0 if done[n] else other[n][s_next[n]][best]
        old = upd[n][s[n]][a[n]]
        upd[n][s[n]][a[n]] = old + alpha * (r[n] + gamma * boot - old)
    return np.array(q1), np.array(q2)


@pytest.mark.parametrize("seed", range(5))
def test_double_q_update_matches_loop_reference(seed):
    g = torch.Generator().manual_seed(seed)
    N, S, A = 7, 4, 3
    q1 = torch.randn(N, S, A, generator=g, dtype=torch.float64)
    q2 = torch.randn(N, S, A, generator=g, dtype=torch.float64)
    q1[0, 2] = 0.5  # a tie in a row, broken towards the lowest index
    s, a = torch.randint(S, (N,), generator=g), torch.randint(A, (N,), generator=g)
    s_next = torch.randint(S, (N,), generator=g)
    r = torch.randn(N, generator=g, dtype=torch.float64)
    done = torch.rand(N, generator=g) < 0.3
    first = torch.rand(N, generator=g) < 0.5
    active = torch.rand(N, generator=g) < 0.8
    n1, n2 = rl.double_q_update(q1, q2, s, a, r, s_next, done, first, alpha=0.3, gamma=0.9, active=active)
    e1, e2 = _double_q_reference(q1, q2, s.tolist(), a.tolist(), r.tolist(), s_next.tolist(), done.tolist(),
                                 first.tolist(), 0.3, 0.9, active.tolist())
    np.testing.assert_allclose(n1.numpy(), e1, atol=1e-12)
    np.testing.assert_allclose(n2.numpy(), e2, atol=1e-12)
    assert n1.dtype == q1.dtype and n1.device == q1.device


def test_double_q_update_with_one_table_is_q_learning():
    # Reference: the scalar Q-learning step (td-learning-q-learning) written out by hand.
    q = torch.tensor([[[1.0, 2.0], [3.0, -1.0], [0.0, 0.0]]])
    args = (torch.tensor([0]), torch.tensor([1]), torch.tensor([0.5]), torch.tensor([1]), torch.tensor([False]),
            torch.tensor([True]))
    n1, n2 = rl.double_q_update(q, q, *args, alpha=0.5, gamma=0.9)
    assert n1[0, 0, 1].item() == pytest.approx(2.0 + 0.5 * (0.5 + 0.9 * 3.0 - 2.0))
    assert torch.equal(n2, q) and torch.equal(q[0, 0, 1], torch.tensor(2.0))  # inputs untouched


def test_double_q_update_terminal_rows_of_minus_inf_are_ignored():
    q = torch.zeros(2, 2, 2)
    q[:, 1] = -float("inf")
    n1, _ = rl.double_q_update(q, q.clone(), torch.tensor([0, 0]), torch.tensor([0, 1]), torch.tensor([1.0, -1.0]),
                               torch.tensor([1, 1]), torch.tensor([True, True]), torch.tensor([True, True]), alpha=1.0)
    assert n1[0, 0, 0].item() == 1.0 and n1[1, 0, 1].item() == -1.0


def test_double_q_learning_is_unbiased_where_q_learning_is_not():
    # One state with m actions of true value 0 and N(0, 1) rewards, bootstrapped from a second state:
    # after each action has been tried once into table 1 (resp. into both), the target for (0, 0) is
    # max of m noisy values for Q-learning (mean e_m > 0) and Q2(argmax Q1) (mean 0) for double.
    g = torch.Generator().manual_seed(0)
    N, m = 20_000, 5
    q1 = torch.zeros(N, 2, m, dtype=torch.float64)
    q1[:, 1] = torch.randn(N, m, generator=g, dtype=torch.float64)
    q2 = q1.clone()
    q2[:, 1] = torch.randn(N, m, generator=g, dtype=torch.float64)
    zeros, ones = torch.zeros(N, dtype=torch.long), torch.ones(N, dtype=torch.long)
    no, yes = torch.zeros(N, dtype=torch.bool), torch.ones(N, dtype=torch.bool)
    single, _ = rl.double_q_update(q1, q1, zeros, zeros, torch.zeros(N, dtype=torch.float64), ones, no, yes, alpha=1.0)
    double, _ = rl.double_q_update(q1, q2, zeros, zeros, torch.zeros(N, dtype=torch.float64), ones, no, yes, alpha=1.0)
    x = np.linspace(-10, 10, 100_001)
    from scipy.special import ndtr
    e_m = np.trapezoid(x * m * np.exp(-x**2 / 2) / np.sqrt(2 * np.pi) * ndtr(x) ** (m - 1), x)
    se = 1 / np.sqrt(N)
    assert abs(single[:, 0, 0].mean().item() - e_m) < 5 * se
    assert abs(double[:, 0, 0].mean().item()) < 5 * se


def test_double_q_update_bad_input():
    q = torch.zeros(2, 3, 2)
    i = torch.zeros(2, dtype=torch.long)
    r = torch.zeros(2)
    b = torch.zeros(2, dtype=torch.bool)
    ok = dict(alpha=0.5)
    with pytest.raises(TypeError, match="torch tensors"):
        rl.double_q_update(q.numpy(), q, i, i, r, i, b, b, **ok)
    with pytest.raises(ValueError, match="same shape"):
        rl.double_q_update(q, torch.zeros(2, 3, 3), i, i, r, i, b, b, **ok)
    with pytest.raises(TypeError, match="same dtype"):
        rl.double_q_update(q, q.double(), i, i, r, i, b, b, **ok)
    with pytest.raises(ValueError, match="alpha"):
        rl.double_q_update(q, q, i, i, r, i, b, b, alpha=0.0)
    with pytest.raises(ValueError, match="gamma"):
        rl.double_q_update(q, q, i, i, r, i, b, b, alpha=0.5, gamma=1.5)
    with pytest.raises(ValueError, match="shape \\(2,\\)"):
        rl.double_q_update(q, q, torch.zeros(3, dtype=torch.long), i, r, i, b, b, **ok)
    with pytest.raises(TypeError, match="integer"):
        rl.double_q_update(q, q, i.float(), i, r, i, b, b, **ok)
    with pytest.raises(TypeError, match="bool"):
        rl.double_q_update(q, q, i, i, r, i, i, b, **ok)
    with pytest.raises(ValueError, match="s_next must lie"):
        rl.double_q_update(q, q, i, i, r, torch.tensor([0, 3]), b, b, **ok)
    with pytest.raises(ValueError, match="a must lie"):
        rl.double_q_update(q, q, i, torch.tensor([-1, 0]), r, i, b, b, **ok)


def test_off_policy_episodes_stop_at_terminal_states() -> None:
    # monte-carlo (review): a terminal state ends the episode (no ratio factor, no reward after it),
    # and coverage is not required in terminal rows; the reference is Environment.episode replayed
    mdp0 = random_mdp(11, S=4, A=2)
    mdp = rl.MDP(mdp0.P, mdp0.R, mdp0.gamma, terminal=[False, False, True, False])
    pi, b = random_policy(7, 4, 2), random_policy(8, 4, 2)
    pi[2], b[2] = [1.0, 0.0], [0.0, 1.0]      # uncovered, but only in the terminal state
    rho, G = rl.off_policy_episodes(rl.Environment(mdp, np.random.default_rng(3)), pi, b,
                                    n_episodes=200, episode_length=8, start=0)
    env = rl.Environment(mdp, np.random.default_rng(3))
    n_short = 0
    for i in range(200):
        s, a, r = env.episode(b, 0, 8)
        n_short += len(s) < 8
        assert rho[i] == pytest.approx(np.prod(pi[s, a] / b[s, a]), rel=1e-12)
        assert G[i] == pytest.approx(rl.discounted_returns(r, mdp.gamma)[0], rel=1e-12, abs=1e-12)
    assert n_short > 0  # some episodes did end early, so the terminal path was exercised


# ------------------------------------------------- td-learning (depth): n-step TD and TD(lambda)


def _random_walk(n_live: int = 5, left: float = 0.0) -> rl.MDP:
    S = n_live + 2
    P, R = np.zeros((S, 1, S)), np.zeros((S, 1, S))
    for s in range(1, n_live + 1):
        P[s, 0, s - 1] = P[s, 0, s + 1] = 0.5
    R[1, 0, 0], R[n_live, 0, n_live + 1] = left, 1.0
    P[0, 0, 0] = P[S - 1, 0, S - 1] = 1.0
    terminal = np.zeros(S, dtype=bool)
    terminal[[0, S - 1]] = True
    return rl.MDP(P, R, 1.0, terminal)


def _n_step_direct(r: np.ndarray, v: np.ndarray, t: int, n: int, gamma: float) -> float:
    """G_t^(n) from the recursion G_t^(n) = r_{t+1} + gamma G_{t+1}^(n-1), G_t^(0) = v(S_t), G_T^(n) = v(S_T)."""
    if n == 0 or t == len(r):
        return float(v[t])
    return float(r[t] + gamma * _n_step_direct(r, v, t + 1, n - 1, gamma))


@pytest.mark.parametrize("seed", range(5))
def test_n_step_and_lambda_returns_match_brute_force(seed: int) -> None:
    rng = np.random.default_rng(seed)
    T = int(rng.integers(1, 9))
    r, v = rng.normal(size=T), rng.normal(size=T + 1)
    gamma, lam = float(rng.uniform(0.5, 1.0)), float(rng.uniform(0.05, 0.95))
    G = {n: rl.n_step_returns(r, v, n, gamma) for n in range(1, T + 1)}
    for n in range(1, T + 1):
        np.testing.assert_allclose(G[n], [_n_step_direct(r, v, t, n, gamma) for t in range(T)], atol=1e-12)
    # the lambda-return as the explicit weighted sum of n-step returns, tail weight lam^(T-t-1) on the full one
    brute = np.array([(1 - lam) * sum(lam ** (n - 1) * G[n][t] for n in range(1, T - t))
                      + lam ** (T - t - 1) * G[T - t][t] for t in range(T)])
    np.testing.assert_allclose(rl.lambda_returns(r, v, gamma, lam), brute, atol=1e-12)
    # weights sum to one: adding a constant c to every n-step return adds c to the lambda-return
    np.testing.assert_allclose(sum((1 - lam) * lam ** (n - 1) for n in range(1, T)) + lam ** (T - 1), 1.0)


def test_lambda_return_limits_and_mc_identity() -> None:
    rng = np.random.default_rng(0)
    r, v = rng.normal(size=6), rng.normal(size=7)
    v_term = v.copy()
    v_term[-1] = 0.0                                # the episode ends in a terminal state
    np.testing.assert_allclose(rl.lambda_returns(r, v, 0.9, 0.0), r + 0.9 * v[1:], atol=1e-12)   # TD(0) targets
    np.testing.assert_allclose(rl.lambda_returns(r, v_term, 0.9, 1.0), rl.discounted_returns(r, 0.9), atol=1e-12)
    np.testing.assert_allclose(rl.n_step_returns(r, v_term, 100, 0.9), rl.discounted_returns(r, 0.9), atol=1e-12)


def test_offline_td_lambda_equals_forward_view() -> None:
    # the theorem: summed backward-view increments == alpha * sum (G^lambda_t - v(S_t)), v fixed per episode
    m = _random_walk(7, left=-1.0)
    one = np.ones((m.S, 1))
    v0 = np.random.default_rng(5).normal(size=m.S) * 0.3
    for lam in (0.0, 0.5, 0.9, 1.0):
        v_back = rl.td_lambda(rl.Environment(m, np.random.default_rng(2)), one, n_episodes=6, episode_length=500,
                              alpha=0.1, lam=lam, start=4, v0=v0, offline=True)
        env = rl.Environment(m, np.random.default_rng(2))      # the same draws, replayed
        v = v0.copy()
        v[m.terminal] = 0.0
        for _ in range(6):
            states, _, rewards = env.episode(one, 4, 500)
            values = np.append(v[states], 0.0)                   # every episode here ends at a terminal state
            G = rl.lambda_returns(rewards, values, 1.0, lam)
            dv = np.zeros(m.S)
            np.add.at(dv, states, 0.1 * (G - v[states]))
            v = v + dv
        np.testing.assert_allclose(v_back, v, atol=1e-12)


def test_td_lambda_zero_and_n_step_one_are_td0() -> None:
    m, pi = small_stochastic_mdp()
    kw = dict(n_episodes=30, episode_length=20, alpha=0.2, start=0)
    v_td0 = rl.td0(rl.Environment(m, np.random.default_rng(4)), pi, **kw)
    np.testing.assert_allclose(rl.n_step_td(rl.Environment(m, np.random.default_rng(4)), pi, n=1, **kw), v_td0, atol=1e-12)
    np.testing.assert_allclose(rl.td_lambda(rl.Environment(m, np.random.default_rng(4)), pi, lam=0.0, **kw), v_td0, atol=1e-12)


@pytest.mark.parametrize("n", [2, 4])
def test_n_step_td_converges_to_v_pi(n: int) -> None:
    m = _random_walk(5)
    one = np.ones((m.S, 1))
    v = rl.n_step_td(rl.Environment(m, np.random.default_rng(n)), one, n_episodes=3000, episode_length=1000,
                     alpha=lambda k: 1.0 / k**0.7, n=n, start=3)
    np.testing.assert_allclose(v, rl.policy_evaluation(m, one), atol=0.04)


def test_td_lambda_online_converges_to_v_pi() -> None:
    m, pi = small_stochastic_mdp()
    v = rl.td_lambda(rl.Environment(m, np.random.default_rng(3)), pi, n_episodes=300, episode_length=100,
                     alpha=lambda k: 1.0 / k**0.7, lam=0.7)
    np.testing.assert_allclose(v, rl.policy_evaluation(m, pi), atol=0.05)


def test_expected_n_step_return_is_bellman_power() -> None:
    # E[G^(n) | S_0 = s] = (T_pi^n v)(s) for v held fixed (the proposition's first step), by sampling
    m = _random_walk(5)
    one = np.ones((m.S, 1))
    v = np.array([0.0, 0.9, 0.1, 0.7, 0.2, 0.4, 0.0])
    env = rl.Environment(m, np.random.default_rng(0))
    for n in (1, 3):
        Tn = v.copy()
        for _ in range(n):
            Tn = rl.bellman_operator(m, Tn, one)
        g = []
        for _ in range(4000):
            states, _, rewards = env.episode(one, 2, 1000)
            g.append(rl.n_step_returns(rewards, np.append(v[states], 0.0), n, 1.0)[0])
        g = np.array(g)
        assert abs(g.mean() - Tn[2]) < 4 * g.std() / np.sqrt(len(g)) + 1e-9


def test_n_step_and_lambda_bad_input() -> None:
    r, v = np.zeros(3), np.zeros(4)
    with pytest.raises(ValueError, match="values must have shape"):
        rl.n_step_returns(r, np.zeros(3), 1, 1.0)
    with pytest.raises(ValueError, match="rewards must have shape"):
        rl.lambda_returns(np.zeros((3, 1)), v, 1.0, 0.5)
    with pytest.raises(ValueError, match="n must be a positive int"):
        rl.n_step_returns(r, v, 0, 1.0)
    with pytest.raises(ValueError, match="n must be a positive int"):
        rl.n_step_returns(r, v, 2.0, 1.0)
    with pytest.raises(ValueError, match="gamma"):
        rl.n_step_returns(r, v, 1, 1.5)
    with pytest.raises(ValueError, match="lam must lie"):
        rl.lambda_returns(r, v, 1.0, -0.1)
    with pytest.raises(ValueError, match="finite"):
        rl.lambda_returns(r, np.array([0.0, np.nan, 0.0, 0.0]), 1.0, 0.5)
    m = _random_walk(5)
    one = np.ones((m.S, 1))
    env = rl.Environment(m, np.random.default_rng(0))
    with pytest.raises(TypeError, match="env must be"):
        rl.td_lambda(m, one, n_episodes=1, episode_length=5, alpha=0.1, lam=0.5)
    with pytest.raises(ValueError, match="lam must lie"):
        rl.td_lambda(env, one, n_episodes=1, episode_length=5, alpha=0.1, lam=2.0)
    with pytest.raises(ValueError, match="alpha"):
        rl.n_step_td(env, one, n_episodes=1, episode_length=5, alpha=0.0, n=2)
    with pytest.raises(ValueError, match="n must be a positive int"):
        rl.n_step_td(env, one, n_episodes=1, episode_length=5, alpha=0.1, n=0)
    with pytest.raises(ValueError, match="episode_length"):
        rl.n_step_td(env, one, n_episodes=1, episode_length=0, alpha=0.1, n=2)
    with pytest.raises(ValueError, match="n_episodes"):
        rl.td_lambda(env, one, n_episodes=-1, episode_length=5, alpha=0.1, lam=0.5)


def test_gae_is_importable_from_minilib_rl():
    """The book's API names GAE minilib.rl.gae; it lives in minilib.actor_critic."""
    from minilib import actor_critic

    assert rl.gae is actor_critic.gae


def test_n_step_td_with_long_n_is_sequential_every_visit_mc() -> None:
    # n >= episode length: every update waits for the episode's end and uses the full return, so n-step TD
    # must equal constant-step every-visit Monte Carlo applied visit by visit (an independent replay)
    m = _random_walk(5)
    one = np.ones((m.S, 1))
    v_n = rl.n_step_td(rl.Environment(m, np.random.default_rng(8)), one, n_episodes=5, episode_length=1000,
                       alpha=0.1, n=1000, start=3, v0=np.full(m.S, 0.5))
    env, v = rl.Environment(m, np.random.default_rng(8)), np.full(m.S, 0.5)
    v[m.terminal] = 0.0
    for _ in range(5):
        states, _, rewards = env.episode(one, 3, 1000)
        for s, g in zip(states, rl.discounted_returns(rewards, 1.0)):
            v[s] += 0.1 * (g - v[s])
    np.testing.assert_allclose(v_n, v, atol=1e-12)
