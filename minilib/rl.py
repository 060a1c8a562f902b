"""Tabular reinforcement learning from samples: stochastic approximation, Monte Carlo, TD and off-policy methods.

This is the learning half of the book's tabular RL (chapters stochastic-approximation, monte-carlo and
td-learning): the methods here see only sampled transitions from an :class:`~minilib.mdp.Environment`.
The models, the Bellman operators and dynamic programming live in :mod:`minilib.mdp`; their names
are importable from here too (``from minilib.rl import MDP`` and ``rl.value_iteration`` keep
working), so a lab needs one import for the whole tabular part. Conventions (states, actions,
``P[s, a, s']``, policies as ``(S, A)`` arrays, ``float64`` NumPy outputs) are those of
:mod:`minilib.mdp`.

>>> g = GridWorld(1, 3, target=(0, 2), gamma=0.9)
>>> env = Environment(g.mdp(), np.random.default_rng(0))
>>> v = td0(env, np.full((3, 5), 0.2), n_episodes=2, episode_length=5, alpha=0.5, start=0)
>>> v.shape
(3,)
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

# GAE lives with the actor-critic methods; the book's API names it minilib.rl.gae.
from minilib.actor_critic import gae  # noqa: F401
from minilib.mdp import (  # noqa: F401  (re-exported: the tabular part's names in one module)
    ACTIONS,
    MDP,
    Environment,
    GridWorld,
    _as_float_array,
    _check_value,
    bellman_operator,
    bellman_optimality_operator,
    cliff_walking,
    discounted_returns,
    epsilon_greedy,
    greedy_policy,
    policy_evaluation,
    policy_iteration,
    q_values,
    truncated_policy_iteration,
    value_iteration,
)

__all__ = [
    "double_q_update",
    "importance_sampling",
    "incremental_mean",
    "lambda_returns",
    "mc_basic",
    "mc_control",
    "mc_evaluation",
    "n_step_returns",
    "n_step_td",
    "off_policy_episodes",
    "q_learning",
    "robbins_monro",
    "sarsa",
    "td0",
    "td_lambda",
]


# --------------------------------------------------------------------------------------------
# Stochastic approximation
# --------------------------------------------------------------------------------------------


def incremental_mean(samples: Any, *, alpha: float | None = None) -> np.ndarray:
    """Running estimates ``w_k`` of a mean from ``w_{k+1} = w_k - alpha_k (w_k - x_k)``.

    With ``alpha=None`` the step is ``alpha_k = 1/k`` and ``w_k`` is exactly the sample mean of
    the first ``k`` samples; a constant ``alpha`` gives an exponentially weighted average
    started from ``w_1 = x_1``. Implements (stochastic-approximation-incremental-mean).

    Args:
        samples: shape ``(K, ...)``; the first axis is time, any trailing axes are independent
            estimates run side by side.

    Returns:
        ``w`` of shape ``(K, ...)``: ``w[k-1]`` is the estimate after ``k`` samples.

    >>> incremental_mean([2.0, 4.0, 9.0]).tolist()
    [2.0, 3.0, 5.0]
    """
    x = _as_float_array(samples, "samples")
    if x.ndim == 0 or x.shape[0] == 0:
        raise ValueError(f"samples must have shape (K, ...) with K >= 1, got {x.shape}")
    if alpha is not None and not 0.0 < alpha <= 1.0:
        raise ValueError(f"alpha must lie in (0, 1] or be None, got {alpha}")
    w = np.empty_like(x)
    w[0] = x[0]  # alpha_1 = 1 for the sample mean; a constant alpha also starts from x_1
    for k in range(1, x.shape[0]):
        a = 1.0 / (k + 1) if alpha is None else alpha
        w[k] = w[k - 1] - a * (w[k - 1] - x[k])
    return w


def robbins_monro(noisy_g: Callable[[np.ndarray, int], np.ndarray], w0: Any, alphas: Any) -> np.ndarray:
    """The Robbins-Monro iteration ``w_{k+1} = w_k - a_k g~(w_k)`` for a root of ``g``.

    Implements (stochastic-approximation-rm).

    Args:
        noisy_g: ``noisy_g(w, k)`` returns a noisy observation of ``g(w)`` with the shape of
            ``w`` (draw the noise inside, from a generator you seeded).
        w0: the starting point(s); any shape, e.g. ``(n_chains,)`` to run chains side by side.
        alphas: the step sizes ``a_1, ..., a_K``, shape ``(K,)``.

    Returns:
        The iterates ``w_0, ..., w_K``, shape ``(K + 1, *w0.shape)``.

    >>> w = robbins_monro(lambda w, k: w - 3.0, 0.0, [1.0, 0.5])  # no noise: one step lands on 3
    >>> w.tolist()
    [0.0, 3.0, 3.0]
    """
    w = _as_float_array(w0, "w0")
    a = _as_float_array(alphas, "alphas").reshape(-1)
    if (a < 0).any():
        raise ValueError("alphas must be non-negative step sizes")
    out = np.empty((len(a) + 1, *w.shape))
    out[0] = w
    for k in range(len(a)):
        w = w - a[k] * np.asarray(noisy_g(w, k + 1), dtype=np.float64)
        out[k + 1] = w
    return out


def _step_size(alpha: float | Callable[[int], float]) -> Callable[[int], float]:
    if callable(alpha):
        return alpha
    if not 0.0 < float(alpha) <= 1.0:
        raise ValueError(f"alpha must lie in (0, 1] or be a callable of the visit count, got {alpha}")
    a = float(alpha)
    return lambda n: a


def _check_env(env: Any) -> Environment:
    if not isinstance(env, Environment):
        raise TypeError(f"env must be a minilib.rl.Environment, got {type(env).__name__}")
    return env


def _start_state(env: Environment, start: int | None) -> int:
    if start is not None:
        return int(start)
    live = np.flatnonzero(~env.mdp.terminal)
    return int(live[env.uniform(len(live))])


def mc_evaluation(
    env: Environment,
    policy: Any,
    *,
    n_episodes: int,
    episode_length: int,
    start: int | None = None,
) -> np.ndarray:
    """Every-visit Monte Carlo estimate of ``v_pi``: the average of the returns that follow each visit.

    Each episode starts at ``start`` (or a uniformly random non-terminal state) and runs for
    ``episode_length`` steps or until a terminal state. Returns are truncated at the episode's
    end, so with ``gamma < 1`` the bias is at most ``gamma^(remaining steps) * max|r| / (1 -
    gamma)``. Implements (monte-carlo-incremental).

    Returns:
        The estimate, shape ``(S,)``; never-visited states get 0.
    """
    env = _check_env(env)
    pi = env.mdp.check_policy(policy)
    total, count = np.zeros(env.mdp.S), np.zeros(env.mdp.S)
    for _ in range(n_episodes):
        states, _, rewards = env.episode(pi, _start_state(env, start), episode_length)
        G = discounted_returns(rewards, env.mdp.gamma)
        np.add.at(total, states, G)
        np.add.at(count, states, 1.0)
    return np.divide(total, count, out=np.zeros_like(total), where=count > 0)


def mc_basic(
    env: Environment,
    *,
    n_iterations: int,
    episodes_per_pair: int,
    episode_length: int,
    history: list | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """MC basic: policy iteration with every ``q_pi(s, a)`` estimated from sampled returns.

    Each iteration starts ``episodes_per_pair`` episodes at every non-terminal ``(s, a)``, follows
    the current policy, averages the (truncated) returns into ``q``, and makes the policy greedy.
    Implements (monte-carlo-q-estimate) and (bellman-optimality-greedy).

    Args:
        env: the environment.
        n_iterations: policy-iteration rounds.
        episodes_per_pair: returns averaged per state-action pair.
        episode_length: steps per episode.
        history: if a list is given, ``(q, policy)`` of every iteration is appended.

    Returns:
        ``(q, policy)``: the last estimate ``(S, A)`` and the greedy one-hot policy ``(S, A)``.
    """
    env = _check_env(env)
    S, A, gamma = env.mdp.S, env.mdp.A, env.mdp.gamma
    policy = np.eye(A)[np.zeros(S, dtype=int)]
    q = np.zeros((S, A))
    for _ in range(n_iterations):
        q = np.zeros((S, A))
        for s in np.flatnonzero(~env.mdp.terminal):
            for a in range(A):
                g = 0.0
                for _ in range(episodes_per_pair):
                    _, _, rewards = env.episode(policy, int(s), episode_length, a0=a)
                    g += discounted_returns(rewards, gamma)[0]
                q[s, a] = g / episodes_per_pair
        policy = greedy_policy(q)
        if history is not None:
            history.append((q.copy(), policy.copy()))
    return q, policy


def mc_control(
    env: Environment,
    *,
    n_episodes: int,
    episode_length: int,
    epsilon: float,
    exploring_starts: bool = False,
    start: int | None = None,
    q0: Any = None,
) -> tuple[np.ndarray, np.ndarray]:
    """On-policy every-visit Monte Carlo control with an epsilon-greedy policy.

    After each episode, every visited ``(s, a)`` has its ``q`` moved to the running mean of the
    returns that followed it, and the policy becomes epsilon-greedy in the new ``q`` at the states
    visited. ``epsilon = 0`` with ``exploring_starts=True`` is MC exploring starts; ``epsilon > 0``
    is MC epsilon-greedy. Implements (monte-carlo-incremental) and (monte-carlo-epsilon-greedy).

    Args:
        env: the environment.
        n_episodes: episodes to run.
        episode_length: steps per episode (or fewer, at a terminal state).
        epsilon: exploration rate in ``[0, 1]``.
        exploring_starts: start each episode at a uniformly random non-terminal state with a
            uniformly random first action.
        start: the start state when not ``exploring_starts`` (default: uniformly random).
        q0: initial action values ``(S, A)`` (default 0).

    Returns:
        ``(q, policy)``: the estimates ``(S, A)`` and the final epsilon-greedy policy ``(S, A)``.
    """
    env = _check_env(env)
    S, A, gamma = env.mdp.S, env.mdp.A, env.mdp.gamma
    q = np.zeros((S, A)) if q0 is None else _as_float_array(q0, "q0").copy()
    count = np.zeros((S, A))
    policy = epsilon_greedy(q, epsilon)
    for _ in range(n_episodes):
        s0 = _start_state(env, None if exploring_starts else start)
        a0 = env.uniform(A) if exploring_starts else None
        states, actions, rewards = env.episode(policy, s0, episode_length, a0=a0)
        G = discounted_returns(rewards, gamma)
        for s, a, g in zip(states, actions, G):
            count[s, a] += 1.0
            q[s, a] += (g - q[s, a]) / count[s, a]  # incremental mean of the returns
        visited = np.unique(states)
        policy[visited] = epsilon_greedy(q[visited], epsilon)
    return q, policy


def td0(
    env: Environment,
    policy: Any,
    *,
    n_episodes: int,
    episode_length: int,
    alpha: float | Callable[[int], float],
    start: int | None = None,
    v0: Any = None,
) -> np.ndarray:
    """TD(0) estimate of ``v_pi``: ``v(s) <- v(s) + alpha (r + gamma v(s') - v(s))`` along sampled steps.

    Implements (td-learning-td0).

    Args:
        env: the environment.
        policy: ``(S, A)`` policy to evaluate.
        n_episodes: episodes to run.
        episode_length: steps per episode (or fewer, at a terminal state).
        alpha: a constant step size, or a function of the visit count ``n >= 1`` of the state
            being updated (e.g. ``lambda n: 1 / n``).
        start: start state (default: a uniformly random non-terminal state per episode).
        v0: initial values ``(S,)`` (default 0).

    Returns:
        The estimate, shape ``(S,)``.
    """
    env, mdp, pi, step_size, v = _prediction_setup(env, policy, alpha, v0)
    visits = np.zeros(mdp.S, dtype=int)
    pi_cdf, terminal = env.policy_cdf(pi), mdp.terminal.tolist()
    for _ in range(n_episodes):
        s = _start_state(env, start)
        for _ in range(episode_length):
            if terminal[s]:
                break
            s_next, r = env.step(s, env.action(pi_cdf, s))
            visits[s] += 1
            td_target = r + mdp.gamma * v[s_next]  # v of a terminal state stays 0
            v[s] += step_size(visits[s]) * (td_target - v[s])
            s = s_next
    return v


def _eps_greedy_action(env: Environment, q_s: list[float], epsilon: float) -> int:
    """Epsilon-greedy draw: uniform with probability epsilon, else greedy with random tie-breaks."""
    A = len(q_s)
    if env._random() < epsilon:
        return env.uniform(A)
    top = max(q_s)
    best = [a for a in range(A) if q_s[a] == top]
    return best[0] if len(best) == 1 else best[env.uniform(len(best))]


def _td_control(
    env: Environment, *, n_episodes: int, alpha: float | Callable[[int], float], epsilon: float,
    start: int | None, max_steps: int, q0: Any, off_policy: bool,
) -> tuple[np.ndarray, np.ndarray]:
    env = _check_env(env)
    mdp = env.mdp
    if not 0.0 <= epsilon <= 1.0:
        raise ValueError(f"epsilon must lie in [0, 1], got {epsilon}")
    step_size = _step_size(alpha)
    q_init = np.zeros((mdp.S, mdp.A)) if q0 is None else _as_float_array(q0, "q0").copy()
    if q_init.shape != (mdp.S, mdp.A):
        raise ValueError(f"q0 must have shape (S, A) = {(mdp.S, mdp.A)}, got {q_init.shape}")
    q_init[mdp.terminal] = 0.0
    # per-step work on Python lists (fast for tiny rows); converted back to an array at the end
    q, visits = q_init.tolist(), [[0] * mdp.A for _ in range(mdp.S)]
    terminal, gamma = mdp.terminal.tolist(), mdp.gamma
    episode_rewards = np.zeros(n_episodes)
    for ep in range(n_episodes):
        s = _start_state(env, start)
        a = _eps_greedy_action(env, q[s], epsilon)
        total = 0.0
        for _ in range(max_steps):
            if terminal[s]:
                break
            s_next, r = env.step(s, a)
            total += r
            a_next = _eps_greedy_action(env, q[s_next], epsilon)
            # Q-learning bootstraps on the greedy action, Sarsa on the one it will actually take
            bootstrap = max(q[s_next]) if off_policy else q[s_next][a_next]
            visits[s][a] += 1
            q[s][a] += step_size(visits[s][a]) * (r + gamma * bootstrap - q[s][a])
            s, a = s_next, a_next
        episode_rewards[ep] = total
    return np.array(q), episode_rewards


def sarsa(
    env: Environment,
    *,
    n_episodes: int,
    alpha: float | Callable[[int], float],
    epsilon: float,
    start: int | None = None,
    max_steps: int = 10_000,
    q0: Any = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Sarsa: on-policy TD control with an epsilon-greedy behaviour policy.

    ``q(s,a) <- q(s,a) + alpha (r + gamma q(s',a') - q(s,a))`` where ``a'`` is the action the
    epsilon-greedy policy takes next. Implements (td-learning-sarsa).

    Args:
        env: the environment.
        n_episodes: episodes to run.
        alpha: a constant step size, or a function of the visit count of ``(s, a)``.
        epsilon: exploration rate in ``[0, 1]``.
        start: start state (default: a uniformly random non-terminal state per episode).
        max_steps: the most steps per episode.
        q0: initial action values ``(S, A)`` (default 0).

    Returns:
        ``(q, episode_rewards)``: the estimates ``(S, A)`` and each episode's undiscounted sum of
        rewards ``(n_episodes,)`` (the "online" reward earned while learning).
    """
    return _td_control(env, n_episodes=n_episodes, alpha=alpha, epsilon=epsilon, start=start,
                       max_steps=max_steps, q0=q0, off_policy=False)


def q_learning(
    env: Environment,
    *,
    n_episodes: int,
    alpha: float | Callable[[int], float],
    epsilon: float,
    start: int | None = None,
    max_steps: int = 10_000,
    q0: Any = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Q-learning: off-policy TD control, learning ``q*`` while acting epsilon-greedily.

    ``q(s,a) <- q(s,a) + alpha (r + gamma max_a' q(s',a') - q(s,a))``. Implements
    (td-learning-q-learning).

    The arguments and the return value are those of :func:`sarsa`.
    """
    return _td_control(env, n_episodes=n_episodes, alpha=alpha, epsilon=epsilon, start=start,
                       max_steps=max_steps, q0=q0, off_policy=True)


# --------------------------------------------------------------------------------------------
# Off-policy evaluation by importance sampling (chapter: monte-carlo)
# --------------------------------------------------------------------------------------------


def off_policy_episodes(
    env: Environment,
    target: Any,
    behaviour: Any,
    *,
    n_episodes: int,
    episode_length: int,
    start: int,
) -> tuple[np.ndarray, np.ndarray]:
    """Run ``behaviour`` and return each episode's importance-sampling ratio and return.

    Episode ``i`` starts in ``start``, follows ``behaviour`` for ``episode_length`` steps (fewer
    if it enters a terminal state), and yields the trajectory ratio
    ``rho_i = prod_t target[s_t, a_t] / behaviour[s_t, a_t]`` (the transition probabilities
    cancel, so no model is needed) and its discounted return ``G_i = sum_t gamma^t r_{t+1}``.
    Implements (monte-carlo-is-ratio).

    Args:
        env: the environment (its generator draws the episodes).
        target: the policy ``pi`` to evaluate, shape ``(S, A)``.
        behaviour: the policy ``b`` that acts, shape ``(S, A)``; it must *cover* ``pi``:
            ``pi(a|s) > 0`` implies ``b(a|s) > 0`` in every non-terminal state.
        n_episodes: number of episodes, ``>= 1``.
        episode_length: the most steps per episode, ``>= 1``.
        start: the start state ``s0``.

    Returns:
        ``(rho, G)``, both shape ``(n_episodes,)``, ``float64``. ``mean(rho * G)`` is the ordinary
        estimate of the (truncated) ``v_pi(s0)``; see :func:`importance_sampling`.

    Raises:
        ValueError: if ``b`` does not cover ``pi``, or on a bad count, length or start state.

    >>> m = MDP([[[1.0], [1.0]]], [[1.0, 0.0]], 0.5)  # one state; action 0 pays 1, action 1 pays 0
    >>> env = Environment(m, np.random.default_rng(0))
    >>> rho, G = off_policy_episodes(env, [[1.0, 0.0]], [[0.5, 0.5]], n_episodes=3, episode_length=1, start=0)
    >>> sorted(set(zip(rho.tolist(), G.tolist())))  # action 0: ratio 1/0.5 = 2, return 1
    [(0.0, 0.0), (2.0, 1.0)]
    """
    env = _check_env(env)
    mdp = env.mdp
    pi = mdp.check_policy(target)
    b = mdp.check_policy(behaviour)
    for name, n in (("n_episodes", n_episodes), ("episode_length", episode_length)):
        if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
            raise ValueError(f"{name} must be a positive int, got {n!r}")
    if isinstance(start, bool) or not isinstance(start, (int, np.integer)) or not 0 <= start < mdp.S:
        raise ValueError(f"start must be a state in 0..{mdp.S - 1}, got {start!r}")
    uncovered = (pi > 0) & (b <= 0) & ~mdp.terminal[:, None]
    if uncovered.any():
        s, a = (int(i) for i in np.argwhere(uncovered)[0])
        raise ValueError(
            f"behaviour does not cover target: target[{s}, {a}] = {pi[s, a]:.3g} > 0 but behaviour[{s}, {a}] = 0 "
            "(importance sampling needs b(a|s) > 0 wherever pi(a|s) > 0)"
        )
    # b = 0 actions are never drawn. Plain lists and an inlined episode loop (the same draws as
    # Environment.episode): per-step NumPy calls would dominate the run time.
    ratio = np.divide(pi, b, out=np.zeros_like(pi), where=b > 0).tolist()
    b_cdf = env.policy_cdf(b)
    terminal = mdp.terminal.tolist()
    gamma = mdp.gamma
    rho, G = np.empty(n_episodes), np.empty(n_episodes)
    for i in range(n_episodes):
        s, w, g, disc = int(start), 1.0, 0.0, 1.0
        for _ in range(int(episode_length)):
            if terminal[s]:
                break
            a = env.action(b_cdf, s)
            s_next, r = env.step(s, a)
            w *= ratio[s][a]
            g += disc * r
            disc *= gamma
            s = s_next
        rho[i], G[i] = w, g
    return rho, G


def importance_sampling(ratios: Any, returns: Any, *, weighted: bool = False) -> float:
    """Ordinary or weighted importance-sampling estimate of ``v_pi`` from behaviour episodes.

    Ordinary: ``sum_i rho_i G_i / n``, unbiased, implements (monte-carlo-ois). Weighted:
    ``sum_i rho_i G_i / sum_i rho_i``, biased but consistent, with weights ``rho_i / sum_j rho_j``
    in ``[0, 1]``, implements (monte-carlo-wis); it is 0 when every ``rho_i`` is 0 (no episode
    the target policy could have produced).

    Args:
        ratios: the trajectory ratios ``rho_i >= 0``, shape ``(n,)``.
        returns: the returns ``G_i``, shape ``(n,)``.
        weighted: use the weighted estimator.

    >>> importance_sampling([2.0, 0.0, 2.0, 0.0], [1.0, 5.0, 3.0, 0.0])
    2.0
    >>> importance_sampling([2.0, 0.0, 2.0, 0.0], [1.0, 5.0, 3.0, 0.0], weighted=True)
    2.0
    >>> importance_sampling([3.0, 1.0], [1.0, 0.0]), importance_sampling([3.0, 1.0], [1.0, 0.0], weighted=True)
    (1.5, 0.75)
    """
    rho = _as_float_array(ratios, "ratios")
    g = _as_float_array(returns, "returns")
    if rho.ndim != 1 or rho.size == 0:
        raise ValueError(f"ratios must have shape (n,) with n >= 1, got {rho.shape}")
    if g.shape != rho.shape:
        raise ValueError(f"returns must have the shape of ratios {rho.shape}, got {g.shape}")
    if not (np.isfinite(rho).all() and np.isfinite(g).all()):
        raise ValueError("ratios and returns must be finite")
    if (rho < 0).any():
        raise ValueError("ratios must be non-negative (they are products of probability ratios)")
    if not weighted:
        return float((rho * g).mean())
    total = float(rho.sum())
    return float((rho * g).sum() / total) if total > 0 else 0.0


# --- td-learning (depth, issue 16): maximisation bias and double Q-learning -----------------------


def double_q_update(
    q1: Any,
    q2: Any,
    s: Any,
    a: Any,
    r: Any,
    s_next: Any,
    done: Any,
    update_first: Any,
    *,
    alpha: float,
    gamma: float = 1.0,
    active: Any = None,
) -> tuple[Any, Any]:
    """One double Q-learning step for a batch of independent runs (torch).

    Implements (td-learning-double-q): in run ``n``, if ``update_first[n]`` the first table moves
    towards ``r + gamma * q2[s', argmax_a' q1[s', a']]``, otherwise the second table moves towards
    ``r + gamma * q1[s', argmax_a' q2[s', a']]``: one table picks the action, the other evaluates
    it. Passing the same tensor as ``q1`` and ``q2`` with ``update_first`` all true gives the
    Q-learning step (td-learning-q-learning), since then ``q2[s', argmax q1[s']] = max q1[s']``.

    Args:
        q1, q2: action values of shape ``(N, S, A)`` for ``N`` runs (same shape, dtype, device).
            Entries for actions that do not exist in a state may be ``-inf``; they are never
            chosen by the argmax unless a whole row is ``-inf`` (a terminal state, which the
            target ignores when ``done``).
        s, a, s_next: ``(N,)`` integer tensors, the transition ``s -a-> s_next`` of each run.
        r: ``(N,)`` rewards. done: ``(N,)`` bool, true when ``s_next`` is terminal (value 0).
        update_first: ``(N,)`` bool, which table each run updates (a fair coin in the algorithm).
        alpha: step size in ``(0, 1]``. gamma: discount in ``[0, 1]``.
        active: optional ``(N,)`` bool; runs where it is false are left unchanged.

    Returns:
        New tensors ``(q1, q2)`` (the inputs are not modified). Greedy ties go to the lowest
        action index.

    >>> import torch
    >>> q1 = torch.tensor([[[0.0, 0.0], [1.0, 3.0]]])   # 1 run, 2 states, 2 actions
    >>> q2 = torch.tensor([[[0.0, 0.0], [2.0, -1.0]]])
    >>> one = torch.tensor([1]); zero = torch.tensor([0])
    >>> n1, n2 = double_q_update(q1, q2, zero, zero, torch.tensor([0.5]), one,
    ...                          torch.tensor([False]), torch.tensor([True]), alpha=1.0)
    >>> float(n1[0, 0, 0])   # 0.5 + q2[1, argmax q1[1]] = 0.5 + q2[1, 1] = -0.5
    -0.5
    """
    import torch

    if not (isinstance(q1, torch.Tensor) and isinstance(q2, torch.Tensor)):
        raise TypeError(f"q1 and q2 must be torch tensors, got {type(q1).__name__} and {type(q2).__name__}")
    if q1.dim() != 3 or q1.shape != q2.shape:
        raise ValueError(f"q1 and q2 must have the same shape (N, S, A), got {tuple(q1.shape)} and {tuple(q2.shape)}")
    if q1.dtype != q2.dtype or q1.device != q2.device or not q1.is_floating_point():
        raise TypeError("q1 and q2 must be floating tensors with the same dtype and device")
    if not 0.0 < float(alpha) <= 1.0:
        raise ValueError(f"alpha must be in (0, 1], got {alpha}")
    if not 0.0 <= float(gamma) <= 1.0:
        raise ValueError(f"gamma must be in [0, 1], got {gamma}")
    n, n_states, n_actions = q1.shape
    if active is None:
        active = torch.ones(n, dtype=torch.bool, device=q1.device)

    def _vec(x: Any, name: str, kind: str) -> torch.Tensor:
        if not isinstance(x, torch.Tensor) or x.shape != (n,):
            got = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
            raise ValueError(f"{name} must be a torch tensor of shape ({n},), got {got}")
        if kind == "int" and (x.is_floating_point() or x.dtype == torch.bool):
            raise TypeError(f"{name} must be an integer tensor, got {x.dtype}")
        if kind == "bool" and x.dtype != torch.bool:
            raise TypeError(f"{name} must be a bool tensor, got {x.dtype}")
        return x.to(q1.device)

    s, a, s_next = (_vec(x, nm, "int") for x, nm in ((s, "s"), (a, "a"), (s_next, "s_next")))
    done, update_first, active = (_vec(x, nm, "bool") for x, nm in
                                  ((done, "done"), (update_first, "update_first"), (active, "active")))
    r = _vec(r, "r", "float").to(q1.dtype)
    for x, nm, hi in ((s, "s", n_states), (s_next, "s_next", n_states), (a, "a", n_actions)):
        if ((x < 0) | (x >= hi)).any():
            raise ValueError(f"{nm} must lie in [0, {hi - 1}]")

    idx = torch.arange(n, device=q1.device)
    # the table being updated picks the action at s', the other one evaluates it
    picker = torch.where(update_first[:, None], q1[idx, s_next], q2[idx, s_next])      # (N, A)
    judge = torch.where(update_first[:, None], q2[idx, s_next], q1[idx, s_next])
    a_star = picker.argmax(dim=1)
    boot = judge[idx, a_star]
    target = r + gamma * torch.where(done, torch.zeros_like(boot), boot)
    new1, new2 = q1.clone(), q2.clone()
    for table, new, mine in ((q1, new1, update_first), (q2, new2, ~update_first)):
        m = active & mine
        old = table[idx, s, a]
        new[idx[m], s[m], a[m]] = (old + alpha * (target - old))[m]
    return new1, new2


# --- td-learning (depth, issue 16): n-step TD and TD(lambda) ------------------------------------


def _episode_arrays(rewards: Any, values: Any) -> tuple[np.ndarray, np.ndarray]:
    r = _as_float_array(rewards, "rewards")
    v = _as_float_array(values, "values")
    if r.ndim != 1:
        raise ValueError(f"rewards must have shape (T,), got {r.shape}")
    if v.shape != (r.shape[0] + 1,):
        raise ValueError(f"values must have shape (T + 1,) = ({r.shape[0] + 1},): v(S_0), ..., v(S_T); got {v.shape}")
    if not (np.isfinite(r).all() and np.isfinite(v).all()):
        raise ValueError("rewards and values must be finite")
    return r, v


def _check_gamma(gamma: float) -> float:
    if isinstance(gamma, bool) or not 0.0 <= float(gamma) <= 1.0:
        raise ValueError(f"gamma must lie in [0, 1], got {gamma!r}")
    return float(gamma)


def _check_lam(lam: float) -> float:
    if isinstance(lam, bool) or not 0.0 <= float(lam) <= 1.0:
        raise ValueError(f"lam must lie in [0, 1], got {lam!r}")
    return float(lam)


def _check_n(n: int) -> int:
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
        raise ValueError(f"n must be a positive int, got {n!r}")
    return int(n)


def n_step_returns(rewards: Any, values: Any, n: int, gamma: float) -> np.ndarray:
    """The n-step returns ``G_t^(n)`` of every step of one episode, truncated at its end.

    ``G_t^(n) = r_{t+1} + gamma r_{t+2} + ... + gamma^(m-1) r_{t+m} + gamma^m v(S_{t+m})`` with
    ``m = min(n, T - t)``. Implements (td-learning-n-step-return). ``n = 1`` is the TD(0) target;
    ``n >= T`` gives the full (Monte Carlo) return when ``values[T] = 0`` (a terminal state).

    Args:
        rewards: ``(T,)``, ``rewards[t]`` is ``r_{t+1}``, received after the action at step ``t``.
        values: ``(T + 1,)``, ``values[t] = v(S_t)``; ``values[T]`` is the value of the state the
            episode ends in (0 if terminal; the bootstrap value if the episode was cut short).
        n: the number of steps, ``>= 1``.
        gamma: discount in ``[0, 1]``.

    Returns:
        ``(T,)`` float64 array.

    >>> n_step_returns([1.0, 0.0, 2.0], [0.0, 10.0, 20.0, 0.0], 2, 0.5).tolist()
    [6.0, 1.0, 2.0]
    """
    r, v = _episode_arrays(rewards, values)
    n, gamma = _check_n(n), _check_gamma(gamma)
    T = r.shape[0]
    G = np.empty(T)
    for t in range(T):
        m = min(n, T - t)
        G[t] = float(np.sum(gamma ** np.arange(m) * r[t:t + m])) + gamma**m * v[t + m]
    return G


def lambda_returns(rewards: Any, values: Any, gamma: float, lam: float) -> np.ndarray:
    """The lambda-returns ``G_t^lambda`` of every step of one episode (the forward view of TD(lambda)).

    ``G_t^lambda = (1 - lam) sum_{n=1}^{T-t-1} lam^(n-1) G_t^(n) + lam^(T-t-1) G_t^(T-t)``, computed
    backwards with the recursion ``G_t^lambda = r_{t+1} + gamma ((1 - lam) v(S_{t+1}) + lam
    G_{t+1}^lambda)``, ``G_T^lambda = v(S_T)``. Implements (td-learning-lambda-return) through
    (td-learning-lambda-recursion). ``lam = 0`` gives the TD(0) targets, ``lam = 1`` the full returns.

    Args:
        rewards: ``(T,)``; values: ``(T + 1,)``, as in :func:`n_step_returns`.
        gamma: discount in ``[0, 1]``. lam: ``lambda`` in ``[0, 1]``.

    Returns:
        ``(T,)`` float64 array.

    >>> lambda_returns([0.0, 1.0], [0.5, 0.5, 0.0], 1.0, 0.5).tolist()   # G^(1)_0 = 0.5, G^(2)_0 = 1
    [0.75, 1.0]
    """
    r, v = _episode_arrays(rewards, values)
    gamma, lam = _check_gamma(gamma), _check_lam(lam)
    T = r.shape[0]
    G = np.empty(T)
    acc = v[T]
    for t in range(T - 1, -1, -1):
        acc = r[t] + gamma * ((1.0 - lam) * v[t + 1] + lam * acc)
        G[t] = acc
    return G


def _prediction_setup(env: Any, policy: Any, alpha: Any, v0: Any) -> tuple:
    """What every tabular prediction method starts from: the checked environment, its model and
    the policy, the step-size schedule, and the initial values (``v0`` copied, or zeros; zero at
    terminal states)."""
    env = _check_env(env)
    mdp = env.mdp
    pi = mdp.check_policy(policy)
    v = np.zeros(mdp.S) if v0 is None else _check_value(mdp, v0, "v0").copy()
    v[mdp.terminal] = 0.0
    return env, mdp, pi, _step_size(alpha), v


def _check_count(x: Any, name: str) -> int:
    if isinstance(x, bool) or not isinstance(x, (int, np.integer)) or x < 1:
        raise ValueError(f"{name} must be a positive int, got {x!r}")
    return int(x)


def n_step_td(
    env: Environment,
    policy: Any,
    *,
    n_episodes: int,
    episode_length: int,
    alpha: float | Callable[[int], float],
    n: int,
    start: int | None = None,
    v0: Any = None,
) -> np.ndarray:
    """Online n-step TD estimate of ``v_pi``: ``v(S_t) <- v(S_t) + alpha (G_t^(n) - v(S_t))``.

    The update of ``v(S_t)`` is made as soon as ``r_{t+n}`` and ``S_{t+n}`` are observed, with the
    current ``v(S_{t+n})`` in the target; the last ``n - 1`` states of an episode are updated at its
    end with truncated returns (bootstrapping on the value of the state the episode ends in, 0 if
    terminal). ``n = 1`` is :func:`td0` (the same draws and the same result); ``n >= episode_length``
    is constant-step every-visit Monte Carlo. Implements (td-learning-n-step-td).

    Args:
        env, policy, n_episodes, episode_length, alpha, start, v0: as in :func:`td0`.
        n: the number of steps, ``>= 1``.

    Returns:
        The estimate, shape ``(S,)``.
    """
    env, mdp, pi, step_size, v = _prediction_setup(env, policy, alpha, v0)
    n = _check_n(n)
    n_episodes, episode_length = _check_count(n_episodes, "n_episodes"), _check_count(episode_length, "episode_length")
    pi_cdf, terminal, gamma = env.policy_cdf(pi), mdp.terminal.tolist(), mdp.gamma
    n = min(n, episode_length)                  # a longer look-ahead never fits in an episode
    disc = [gamma**k for k in range(n + 1)]
    vl, visits = v.tolist(), [0] * mdp.S       # Python lists: the loop runs one step at a time

    for _ in range(n_episodes):
        states, rewards = [_start_state(env, start)], []
        for t in range(episode_length):
            s = states[t]
            if terminal[s]:
                break
            s_next, r = env.step(s, env.action(pi_cdf, s))
            states.append(s_next)
            rewards.append(r)
            tau = t + 1 - n
            if tau >= 0:                        # S_{t+1} observed: S_tau has its n-step return, (td-learning-n-step-return)
                g = disc[n] * vl[s_next]
                for k in range(n):
                    g += disc[k] * rewards[tau + k]
                s_tau = states[tau]
                visits[s_tau] += 1
                vl[s_tau] += step_size(visits[s_tau]) * (g - vl[s_tau])
        T = len(rewards)
        first = max(T - n + 1, 0)
        tail = [0.0] * (T - first + 1)         # tail[i] = sum_k gamma^k r_{first+i+k}, up to the end
        for i in range(T - first - 1, -1, -1):
            tail[i] = rewards[first + i] + gamma * tail[i + 1]
        for tau in range(first, T):            # the last states: truncated returns, bootstrapping on v(S_T)
            s = states[tau]
            visits[s] += 1
            vl[s] += step_size(visits[s]) * (tail[tau - first] + disc[T - tau] * vl[states[T]] - vl[s])
    return np.array(vl)


def td_lambda(
    env: Environment,
    policy: Any,
    *,
    n_episodes: int,
    episode_length: int,
    alpha: float | Callable[[int], float],
    lam: float,
    start: int | None = None,
    v0: Any = None,
    offline: bool = False,
) -> np.ndarray:
    """TD(lambda) with accumulating eligibility traces (the backward view) for ``v_pi``.

    At every step: ``delta = r + gamma v(s') - v(s)``, ``e <- gamma lam e``, ``e(s) <- e(s) + 1``,
    and ``v <- v + alpha delta e``. Implements (td-learning-trace) and (td-learning-td-lambda). With
    ``offline=True`` the increments are summed over the episode and applied at its end (``v`` is
    held fixed within an episode); with a constant ``alpha`` and episodes that end at terminal
    states this equals, by (td-learning-thm-forward-backward), the forward view: ``alpha`` times
    the sum of ``G_t^lambda - v(S_t)`` over the visits. ``lam = 0``
    is :func:`td0`; ``lam = 1`` with ``offline=True`` is constant-step every-visit Monte Carlo.

    Args:
        env, policy, n_episodes, episode_length, start, v0: as in :func:`td0`.
        alpha: a constant step size, or a function of the visit count ``n >= 1`` of the state
            just visited; that step scales the whole update ``alpha delta e`` of this step.
        lam: ``lambda`` in ``[0, 1]``.
        offline: apply the summed increments at the end of each episode.

    Returns:
        The estimate, shape ``(S,)``.
    """
    env, mdp, pi, step_size, v = _prediction_setup(env, policy, alpha, v0)
    lam = _check_lam(lam)
    n_episodes, episode_length = _check_count(n_episodes, "n_episodes"), _check_count(episode_length, "episode_length")
    visits = np.zeros(mdp.S, dtype=int)
    pi_cdf, terminal, gamma = env.policy_cdf(pi), mdp.terminal.tolist(), mdp.gamma
    for _ in range(n_episodes):
        s = _start_state(env, start)
        e = np.zeros(mdp.S)
        dv = np.zeros(mdp.S)                          # summed increments (offline)
        for _ in range(episode_length):
            if terminal[s]:
                break
            s_next, r = env.step(s, env.action(pi_cdf, s))
            visits[s] += 1
            delta = r + gamma * v[s_next] - v[s]      # v of a terminal state stays 0
            e *= gamma * lam
            e[s] += 1.0                               # accumulating trace
            if offline:
                dv += step_size(visits[s]) * delta * e
            else:
                v += step_size(visits[s]) * delta * e
            s = s_next
        if offline:
            v += dv
    return v
