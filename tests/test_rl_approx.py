"""Tests for minilib.rl_approx against brute force, hand computations and independent algorithms."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from minilib import mdp as M
from minilib import rl_approx as ra


def random_continuing(seed: int, S: int = 6, gamma: float = 0.9) -> M.MDP:
    rng = np.random.default_rng(seed)
    P = rng.random((S, 2, S)) + 0.05  # every transition possible: one recurrent class
    P /= P.sum(axis=2, keepdims=True)
    return M.MDP(P, rng.normal(size=(S, 2, S)), gamma)


def random_policy(seed: int, S: int, A: int = 2) -> np.ndarray:
    pi = np.random.default_rng(seed + 7).random((S, A)) + 0.1
    return pi / pi.sum(axis=1, keepdims=True)


# ------------------------------------------------------------------------ tasks and features


def test_random_walk_rows_and_rewards_by_hand() -> None:
    m, start = ra.random_walk_mdp(5, jump=2, gamma=0.9)
    assert m.S == 7 and start == 2
    # from state 0: left by 1 or 2 -> left terminal (5); right by 1 or 2 -> states 1, 2
    np.testing.assert_allclose(m.P[0, 0], [0, 0.25, 0.25, 0, 0, 0.5, 0])
    np.testing.assert_allclose(m.P[4, 0], [0, 0, 0.25, 0.25, 0, 0, 0.5])
    assert m.R[0, 0] == pytest.approx(-0.5) and m.R[4, 0] == pytest.approx(0.5) and m.R[2, 0] == 0.0


def test_features_shapes_and_values() -> None:
    agg = ra.features("aggregation", 1000, 10, n_terminal=2)
    assert agg.shape == (1002, 10) and (agg[:1000].sum(1) == 1).all() and (agg[1000:] == 0).all()
    assert agg[99, 0] == 1 and agg[100, 1] == 1
    poly = ra.features("polynomial", 3, 3)
    np.testing.assert_allclose(poly, [[1, -1, 1], [1, 0, 0], [1, 1, 1]])
    four = ra.features("fourier", 3, 2)
    np.testing.assert_allclose(four, [[1, 1], [1, 0], [1, -1]], atol=1e-12)


def test_features_bad_input() -> None:
    with pytest.raises(ValueError, match="kind"):
        ra.features("tiles", 10, 2)
    with pytest.raises(ValueError, match="n_features"):
        ra.features("polynomial", 10, 11)
    with pytest.raises(ValueError, match="n_states"):
        ra.features("polynomial", 1, 1)


# ------------------------------------------------------------------------ on-policy distribution


def test_stationary_distribution_matches_power_iteration() -> None:
    m = random_continuing(0)
    pi = random_policy(0, m.S)
    d = ra.state_distribution(m, pi)
    P = m.P_pi(pi)
    x = np.full(m.S, 1 / m.S)
    for _ in range(2000):  # brute force: run the chain's distribution forward
        x = x @ P
    np.testing.assert_allclose(d, x, atol=1e-10)


def test_episodic_distribution_matches_monte_carlo_visits() -> None:
    m, start = ra.random_walk_mdp(6, jump=2)
    pi = np.ones((m.S, 1))
    d = ra.state_distribution(m, pi, start=start)
    env = M.Environment(m, np.random.default_rng(0))
    counts = np.zeros(m.S)
    for _ in range(4000):
        states, _, _ = env.episode(pi, start, 1000)
        np.add.at(counts, states, 1)
    np.testing.assert_allclose(counts / counts.sum(), d, atol=0.01)


def test_state_distribution_bad_input() -> None:
    m, start = ra.random_walk_mdp(4, jump=1)
    pi = np.ones((m.S, 1))
    with pytest.raises(ValueError, match="start"):
        ra.state_distribution(m, pi)
    with pytest.raises(ValueError, match="start"):
        ra.state_distribution(m, pi, start=99)
    with pytest.raises(ValueError, match="start"):
        ra.state_distribution(random_continuing(1), random_policy(1, 6), start=0)
    with pytest.raises(TypeError, match="mdp"):
        ra.state_distribution("walk", pi)
    two_classes = M.MDP(np.eye(2)[:, None, :], np.zeros((2, 1)), 0.9)  # two absorbing states
    with pytest.raises(ValueError, match="not unique"):
        ra.state_distribution(two_classes, np.ones((2, 1)))


# ------------------------------------------------------------------------ A, b and the fixed point


@settings(max_examples=15, deadline=None)
@given(seed=st.integers(0, 10_000), gamma=st.floats(0.0, 0.97))
def test_expected_update_by_enumeration(seed: int, gamma: float) -> None:
    m = random_continuing(seed, gamma=gamma)
    pi = random_policy(seed, m.S)
    rng = np.random.default_rng(seed)
    Phi, w = rng.normal(size=(m.S, 3)), rng.normal(size=3)
    d = ra.state_distribution(m, pi)
    A, b = ra.td_matrices(m, pi, Phi, d)
    expected = np.zeros(3)  # sum over s, a, s' of d(s) pi(a|s) p(s'|s,a) delta phi(s), term by term
    for s in range(m.S):
        for a in range(m.A):
            for s2 in range(m.S):
                delta = m.R_sas[s, a, s2] + gamma * Phi[s2] @ w - Phi[s] @ w
                expected += d[s] * pi[s, a] * m.P[s, a, s2] * delta * Phi[s]
    np.testing.assert_allclose(b - A @ w, expected, atol=1e-10)


@settings(max_examples=15, deadline=None)
@given(seed=st.integers(0, 10_000), gamma=st.floats(0.0, 0.95))
def test_td_fixed_point_equals_projected_bellman_iteration_and_bound(seed: int, gamma: float) -> None:
    m = random_continuing(seed, S=8, gamma=gamma)
    pi = random_policy(seed, m.S)
    Phi = np.random.default_rng(seed + 1).normal(size=(m.S, 3))
    d = ra.state_distribution(m, pi)
    w = ra.td_fixed_point(m, pi, Phi, d)
    np.testing.assert_allclose(ra.projected_bellman_fixed_point(m, pi, Phi, d), w, atol=1e-8)
    # A positive definite on-policy, and the Tsitsiklis-Van Roy bound
    A, _ = ra.td_matrices(m, pi, Phi, d)
    assert np.linalg.eigvalsh((A + A.T) / 2).min() > 0
    v = M.policy_evaluation(m, pi)
    X = np.sqrt(d)[:, None] * Phi
    best = np.sqrt(np.sum(d * (Phi @ np.linalg.lstsq(X, np.sqrt(d) * v, rcond=None)[0] - v) ** 2))
    td = np.sqrt(np.sum(d * (Phi @ w - v) ** 2))
    assert best * (1 - 1e-9) <= td <= best / np.sqrt(1 - gamma**2) + 1e-9


def test_tabular_features_recover_v_pi() -> None:
    m, start = ra.random_walk_mdp(8, jump=3, gamma=0.95)
    pi = np.ones((m.S, 1))
    d = ra.state_distribution(m, pi, start=start)
    w = ra.td_fixed_point(m, pi, np.eye(m.S)[:, :8], d)
    np.testing.assert_allclose(w, M.policy_evaluation(m, pi)[:8], atol=1e-10)


def test_lstd_from_many_samples_approaches_fixed_point() -> None:
    m, start = ra.random_walk_mdp(20, jump=4, gamma=0.9)
    pi = np.ones((m.S, 1))
    Phi = ra.features("polynomial", 20, 3, n_terminal=2)
    env = M.Environment(m, np.random.default_rng(0))
    _, _, (s, r, s2) = ra.linear_td0(env, pi, Phi, n_episodes=3000, alpha=0.01, start=start, transitions=True)
    w_hat = ra.lstd(Phi[s], r, Phi[s2], 0.9)
    w = ra.td_fixed_point(m, pi, Phi, ra.state_distribution(m, pi, start=start))
    np.testing.assert_allclose(w_hat, w, atol=0.05)


def test_linear_td0_one_step_by_hand() -> None:
    m = M.MDP([[[0.0, 1.0]], [[0.0, 1.0]]], [[[0.0, 2.0]], [[0.0, 0.0]]], 0.5, terminal=np.array([False, True]))
    env = M.Environment(m, np.random.default_rng(0))
    Phi = np.array([[3.0], [7.0]])  # the terminal row is ignored
    w, W = ra.linear_td0(env, np.ones((2, 1)), Phi, n_episodes=1, alpha=0.1, start=0, w0=[1.0])
    # delta = 2 + 0.5 * 0 - 3 * 1 = -1, w = 1 + 0.1 * (-1) * 3 = 0.7
    np.testing.assert_allclose(w, [0.7])
    np.testing.assert_allclose(W, [[0.7]])


def test_linear_bad_input() -> None:
    m, start = ra.random_walk_mdp(4, jump=1, gamma=0.9)
    pi = np.ones((m.S, 1))
    d = ra.state_distribution(m, pi, start=start)
    with pytest.raises(ValueError, match="Phi"):
        ra.td_matrices(m, pi, np.ones((3, 2)), d)
    with pytest.raises(ValueError, match="d must"):
        ra.td_matrices(m, pi, np.ones((m.S, 2)), np.ones(m.S))
    with pytest.raises(ValueError, match="singular"):
        ra.td_fixed_point(m, pi, np.ones((m.S, 2)), d)  # two identical features
    env = M.Environment(m, np.random.default_rng(0))
    with pytest.raises(ValueError, match="alpha"):
        ra.linear_td0(env, pi, np.eye(m.S), n_episodes=1, alpha=0.0, start=start)
    with pytest.raises(ValueError, match="start"):
        ra.linear_td0(env, pi, np.eye(m.S), n_episodes=1, alpha=0.1, start=m.S - 1)
    with pytest.raises(TypeError, match="env"):
        ra.linear_td0(m, pi, np.eye(m.S), n_episodes=1, alpha=0.1, start=start)
    with pytest.raises(ValueError, match="phi_next"):
        ra.lstd(np.ones((3, 2)), np.ones(3), np.ones((2, 2)), 0.9)
    with pytest.raises(ValueError, match="gamma"):
        ra.lstd(np.ones((3, 2)), np.ones(3), np.ones((3, 2)), 1.5)


# ------------------------------------------------------------------------ DQN pieces


def test_pointmass_step_by_hand_and_batching() -> None:
    task = ra.PointMass(dt=0.1, cost_v=0.1)
    s2, r = task.step(torch.tensor([[0.0, 0.0], [-0.98, -0.5]], dtype=torch.float64), torch.tensor([2, 1]))
    # push right from rest: v' = 0.1, x' = 0.01; coast left into the wall: x' = -1.03 -> -1, v' = 0
    np.testing.assert_allclose(s2.numpy(), [[0.01, 0.1], [-1.0, 0.0]], atol=1e-12)
    np.testing.assert_allclose(r.numpy(), [-(0.01**2 + 0.1 * 0.01), -1.0], atol=1e-12)
    assert s2.dtype == torch.float64
    s3, r3 = task.step(torch.zeros(2, 5, 2), torch.ones(2, 5, dtype=torch.long))
    assert s3.shape == (2, 5, 2) and r3.shape == (2, 5)


def test_pointmass_evaluate_matches_loop() -> None:
    task = ra.PointMass(horizon=7, gamma=0.8)
    s0 = torch.tensor([[0.3, 0.0]], dtype=torch.float64)
    act = lambda s: torch.zeros(s.shape[0], dtype=torch.long)  # noqa: E731
    G, s = 0.0, s0
    for t in range(7):
        s, r = task.step(s, act(s))
        G += 0.8**t * float(r[0])
    assert float(task.evaluate(act, s0)[0]) == pytest.approx(G, abs=1e-12)


def test_pointmass_bad_input() -> None:
    task = ra.PointMass()
    with pytest.raises(ValueError, match="a must"):
        task.step(torch.zeros(3, 2), torch.tensor([0, 1, 3]))
    with pytest.raises(ValueError, match="a must"):
        task.step(torch.zeros(3, 2), torch.zeros(3))
    with pytest.raises(ValueError, match="s must"):
        task.step(torch.zeros(3, 3), torch.zeros(3, dtype=torch.long))
    with pytest.raises(ValueError, match="gamma"):
        ra.PointMass(gamma=1.0)
    with pytest.raises(ValueError, match="horizon"):
        ra.PointMass(horizon=0)


def test_replay_buffer_ring_and_sampling() -> None:
    buf = ra.ReplayBuffer(5, state_dim=1)
    for i in range(3):  # 3 batches of 3: 9 transitions, the last 5 survive
        s = torch.arange(3 * i, 3 * i + 3, dtype=torch.float32)[:, None]
        buf.add(s, torch.zeros(3, dtype=torch.long), s[:, 0], s + 1, torch.zeros(3))
    assert len(buf) == 5
    assert sorted(buf.s[:, 0].tolist()) == [4.0, 5.0, 6.0, 7.0, 8.0]
    s, a, r, s2, done = buf.sample(200, generator=torch.Generator().manual_seed(0))
    assert set(s[:, 0].tolist()) == {4.0, 5.0, 6.0, 7.0, 8.0}
    torch.testing.assert_close(r, s[:, 0])
    torch.testing.assert_close(s2, s + 1)
    assert buf.latest(2)[0][:, 0].tolist() == [7.0, 8.0]


def test_replay_buffer_bad_input() -> None:
    buf = ra.ReplayBuffer(4, state_dim=2)
    with pytest.raises(ValueError, match="empty"):
        buf.sample(2)
    with pytest.raises(ValueError, match="s must"):
        buf.add(torch.zeros(3, 3), torch.zeros(3, dtype=torch.long), torch.zeros(3), torch.zeros(3, 3), torch.zeros(3))
    with pytest.raises(ValueError, match="r must"):
        buf.add(torch.zeros(3, 2), torch.zeros(3, dtype=torch.long), torch.zeros(2), torch.zeros(3, 2), torch.zeros(3))
    with pytest.raises(ValueError, match="capacity"):
        ra.ReplayBuffer(0, state_dim=2)


def test_dqn_loss_matches_manual_and_no_target_gradient() -> None:
    torch.manual_seed(0)
    q_net, t_net = nn.Linear(2, 3), nn.Linear(2, 3)
    s, s2 = torch.randn(8, 2), torch.randn(8, 2)
    a, r, done = torch.randint(3, (8,)), torch.randn(8), torch.tensor([0, 1, 0, 0, 1, 0, 0, 0.0])
    y = r + 0.9 * (1 - done) * t_net(s2).max(1).values.detach()
    q_sa = q_net(s)[torch.arange(8), a]
    manual = torch.nn.functional.huber_loss(q_sa, y, delta=1.0)
    got = ra.dqn_loss(q_net, t_net, (s, a, r, s2, done), 0.9)
    torch.testing.assert_close(got, manual)
    got.backward()
    assert all(p.grad is None for p in t_net.parameters())
    mse = ra.dqn_loss(q_net, None, (s, a, r, s2, done), 0.9, huber=False)
    y_self = r + 0.9 * (1 - done) * q_net(s2).max(1).values.detach()
    torch.testing.assert_close(mse, 0.5 * ((y_self - q_net(s)[torch.arange(8), a]) ** 2).mean())


def test_dqn_loss_bad_input() -> None:
    q = nn.Linear(2, 3)
    s = torch.zeros(4, 2)
    with pytest.raises(ValueError, match="a must"):
        ra.dqn_loss(q, None, (s, torch.zeros(4), torch.zeros(4), s, torch.zeros(4)), 0.9)
    with pytest.raises(ValueError, match="gamma"):
        ra.dqn_loss(q, None, (s, torch.zeros(4, dtype=torch.long), torch.zeros(4), s, torch.zeros(4)), 2.0)
    with pytest.raises(ValueError, match="batch"):
        ra.dqn_loss(q, None, (s,), 0.9)


def test_train_dqn_learns_and_validates() -> None:
    torch.manual_seed(0)
    task = ra.PointMass()
    net = nn.Sequential(nn.Linear(2, 32), nn.ReLU(), nn.Linear(32, 32), nn.ReLU(), nn.Linear(32, 3))
    hist = ra.train_dqn(task, net, steps=1200, generator=torch.Generator().manual_seed(0), snapshot_every=600)
    assert [it for it, _ in hist["snapshots"]] == [0, 600, 1200]
    starts = task.reset(64, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        G = task.evaluate(lambda s: net(s).argmax(1), starts).mean().item()
    assert G > -3.0  # doing nothing scores about -6, a good controller about -1.7
    with pytest.raises(ValueError, match="steps"):
        ra.train_dqn(task, net, steps=0)
    with pytest.raises(ValueError, match="target_update"):
        ra.train_dqn(task, net, steps=1, target_update=0)
    with pytest.raises(TypeError, match="task"):
        ra.train_dqn("cartpole", net, steps=1)
