"""Finite MDPs and planning: models, the Bellman operators, dynamic programming, grid worlds and a sampler.

This is the planning half of the book's tabular RL (chapters bellman and bellman-optimality): every
function here knows the model ``P``, ``R``. :class:`Environment` turns a model into a sampler, which
the learning methods of :mod:`minilib.rl` (they only see samples) and :mod:`minilib.rl_approx` use.

Conventions used throughout (the same as the book's RL part):

* States are ``0, ..., S-1`` and actions ``0, ..., A-1``.
* ``P[s, a, s']`` is the probability of moving to ``s'`` after taking ``a`` in ``s``; shape
  ``(S, A, S)``. The reward of a transition may depend on where it lands: ``R_sas[s, a, s']``,
  shape ``(S, A, S)``, is the reward received on the transition ``s -a-> s'``, and
  ``R[s, a] = sum_s' P[s, a, s'] R_sas[s, a, s']`` is the *expected* immediate reward, shape
  ``(S, A)``. Dynamic programming only needs ``R``; :class:`Environment` hands out the reward of
  the sampled transition, ``R_sas[s, a, s']``.
* A policy is an ``(S, A)`` array whose row ``s`` is the distribution ``pi(. | s)``.
* Value functions are ``(S,)`` arrays, action values ``(S, A)`` arrays.
* ``terminal`` marks absorbing states whose value is defined to be 0; what ``P`` and ``R`` say
  about them is ignored. An episode ends when it enters one.

The tabular core works in NumPy ``float64``: the MDPs are small, and exact linear algebra and
long fixed-point iterations are the point, so double precision is the right tool. Inputs may be
NumPy arrays, nested lists or torch tensors (they are copied to ``float64`` arrays); outputs are
NumPy arrays. The samplers accept a ``numpy.random.Generator`` or a ``torch.Generator``.

>>> g = GridWorld(2, 2, target=(1, 1), gamma=0.5)
>>> v, pi = value_iteration(g.mdp())
>>> round(float(v[3]), 6)  # stay on the target forever: 1 / (1 - 0.5)
2.0
"""

from __future__ import annotations

import bisect
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np

__all__ = [
    "ACTIONS",
    "Environment",
    "GridWorld",
    "MDP",
    "bellman_operator",
    "bellman_optimality_operator",
    "cliff_walking",
    "discounted_returns",
    "epsilon_greedy",
    "greedy_policy",
    "policy_evaluation",
    "policy_iteration",
    "q_values",
    "truncated_policy_iteration",
    "value_iteration",
]

#: Grid-world actions as (row step, column step), in the order [up, right, down, left, stay].
ACTIONS: tuple[tuple[int, int], ...] = ((-1, 0), (0, 1), (1, 0), (0, -1), (0, 0))

_PROB_ATOL = 1e-8


def _as_float_array(x: Any, name: str) -> np.ndarray:
    """Copy ``x`` (array, list or tensor) to a float64 NumPy array, rejecting non-numbers."""
    if hasattr(x, "detach") and hasattr(x, "cpu"):  # a torch tensor, without importing torch
        x = x.detach().cpu().numpy()
    try:
        arr = np.array(x, dtype=np.float64)
    except (TypeError, ValueError) as err:
        raise TypeError(f"{name} must be an array of numbers, got {type(x).__name__}") from err
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{name} must be finite (no NaN or inf)")
    return arr


def _check_distribution_rows(arr: np.ndarray, name: str) -> None:
    if (arr < -_PROB_ATOL).any():
        raise ValueError(f"{name} must be non-negative; found the entry {arr.min():.3g}")
    sums = arr.sum(axis=-1)
    bad = np.abs(sums - 1.0) > 1e-6
    if bad.any():
        idx = tuple(int(i) for i in np.argwhere(bad)[0])
        raise ValueError(
            f"every row of {name} must sum to 1 (a probability distribution); the row at {idx} sums to {sums[idx]:.6g}"
        )


class MDP:
    """A finite Markov decision process whose rewards may depend on the whole transition.

    Args:
        P: transition probabilities, shape ``(S, A, S)``; ``P[s, a]`` is a distribution.
        R: the rewards, either ``r(s, a, s')`` of every transition, shape ``(S, A, S)``, or
            ``r(s, a)``, shape ``(S, A)``, for a reward that does not depend on ``s'``.
        gamma: the discount factor in ``[0, 1]``. ``gamma = 1`` requires a ``terminal`` mask.
        terminal: optional boolean mask of shape ``(S,)`` of absorbing states with value 0.

    Attributes:
        R_sas: the reward of each transition, shape ``(S, A, S)`` (``R`` broadcast over ``s'``
            when ``R`` was given as ``(S, A)``).

    Raises:
        ValueError: on mis-shaped ``P``/``R``/``terminal``, rows of ``P`` that are not
            distributions, or ``gamma`` outside ``[0, 1]`` (or ``gamma = 1`` with no terminal
            state).
        TypeError: on non-numeric input.

    >>> m = MDP([[[1.0]]], [[2.0]], 0.5)
    >>> m.S, m.A, m.gamma
    (1, 1, 0.5)
    >>> coin = MDP([[[0.5, 0.5]], [[0.0, 1.0]]], [[[0.0, 1.0]], [[0.0, 0.0]]], 0.9)
    >>> coin.R.tolist()  # reward 1 only on landing in state 1, reached with probability 1/2
    [[0.5], [0.0]]
    """

    def __init__(self, P: Any, R: Any, gamma: float, terminal: Any = None) -> None:
        P = _as_float_array(P, "P")
        R = _as_float_array(R, "R")
        if P.ndim != 3 or P.shape[0] != P.shape[2] or P.shape[0] == 0 or P.shape[1] == 0:
            raise ValueError(f"P must have shape (S, A, S) with S, A >= 1, got {P.shape}")
        S, A = P.shape[0], P.shape[1]
        if R.shape == (S, A):
            R = np.repeat(R[:, :, None], S, axis=2)  # the same reward whatever s' is
        elif R.shape != (S, A, S):
            raise ValueError(f"R must have shape (S, A) = {(S, A)} or (S, A, S) = {(S, A, S)} to match P, got {R.shape}")
        _check_distribution_rows(P, "P")
        if isinstance(gamma, bool) or not isinstance(gamma, (int, float, np.floating, np.integer)):
            raise TypeError(f"gamma must be a real number, got {type(gamma).__name__}")
        gamma = float(gamma)
        if not 0.0 <= gamma <= 1.0:
            raise ValueError(f"gamma must lie in [0, 1], got {gamma}")
        if terminal is None:
            term = np.zeros(S, dtype=bool)
        else:
            if hasattr(terminal, "detach"):
                terminal = terminal.detach().cpu().numpy()
            term = np.asarray(terminal)
            if term.shape != (S,):
                raise ValueError(f"terminal must be a boolean mask of shape (S,) = ({S},), got {term.shape}")
            if term.dtype != bool:
                raise TypeError(f"terminal must be a boolean mask, got dtype {term.dtype}")
            term = term.copy()
        if gamma == 1.0 and not term.any():
            raise ValueError(
                "gamma = 1 needs at least one terminal state (pass a terminal mask); without one "
                "the return of a continuing task is an infinite sum"
            )
        self.P: np.ndarray = P
        self.R_sas: np.ndarray = R
        self.gamma: float = gamma
        self.terminal: np.ndarray = term

    @property
    def R(self) -> np.ndarray:
        """The expected immediate reward ``r(s, a) = sum_s' P[s, a, s'] R_sas[s, a, s']``; shape ``(S, A)``.

        Computed from the current ``P``; it is all that dynamic programming uses.

        Implements (bellman-expected-reward).
        """
        return np.einsum("sat,sat->sa", self.P, self.R_sas)

    @property
    def S(self) -> int:
        """The number of states."""
        return self.P.shape[0]

    @property
    def A(self) -> int:
        """The number of actions."""
        return self.P.shape[1]

    def check_policy(self, policy: Any) -> np.ndarray:
        """Validate a policy and return it as an ``(S, A)`` float64 array of distributions.

        Raises:
            ValueError: if the shape is not ``(S, A)`` or a row is not a distribution.
        """
        pi = _as_float_array(policy, "policy")
        if pi.shape != (self.S, self.A):
            raise ValueError(f"policy must have shape (S, A) = {(self.S, self.A)}, got {pi.shape}")
        _check_distribution_rows(pi, "policy")
        return pi

    def r_pi(self, policy: Any) -> np.ndarray:
        """The expected one-step reward under a policy, ``r_pi[s] = sum_a pi(a|s) r(s,a)``; shape ``(S,)``.

        Terminal states get 0. Implements (bellman-matrix).
        """
        pi = self.check_policy(policy)
        return np.where(self.terminal, 0.0, (pi * self.R).sum(axis=1))

    def P_pi(self, policy: Any) -> np.ndarray:
        """The state transition matrix under a policy, ``P_pi[s, s'] = sum_a pi(a|s) P[s,a,s']``.

        Rows of terminal states are zero, so that their value stays 0. Shape ``(S, S)``.
        Implements (bellman-matrix).
        """
        pi = self.check_policy(policy)
        P_pi = np.einsum("sa,sat->st", pi, self.P)
        P_pi[self.terminal] = 0.0
        return P_pi

    def __repr__(self) -> str:
        return f"MDP(S={self.S}, A={self.A}, gamma={self.gamma}, terminal={int(self.terminal.sum())} states)"


def _check_mdp(mdp: Any) -> MDP:
    if not isinstance(mdp, MDP):
        raise TypeError(f"mdp must be a minilib.rl.MDP, got {type(mdp).__name__}")
    return mdp


def _check_value(mdp: MDP, v: Any, name: str = "v") -> np.ndarray:
    v = _as_float_array(v, name)
    if v.shape != (mdp.S,):
        raise ValueError(f"{name} must have shape (S,) = ({mdp.S},), got {v.shape}")
    return v


def _require_proper(mdp: MDP, P_pi: np.ndarray) -> None:
    """With gamma = 1, check that every state reaches a terminal state with probability 1.

    A finite chain restricted to the non-terminal states has ``I - P`` invertible exactly when
    every state has a positive-probability path to the terminal set; otherwise some closed set of
    non-terminal states traps the agent and its undiscounted return is not defined.
    """
    if mdp.gamma < 1.0:
        return
    reach = mdp.terminal.copy()
    edges = P_pi > 0
    while True:  # backward reachability: states with an edge into the reaching set
        new = reach | (edges[:, reach].any(axis=1))
        if (new == reach).all():
            break
        reach = new
    if not reach.all():
        trapped = np.flatnonzero(~reach).tolist()
        raise ValueError(
            f"with gamma = 1 the policy must reach a terminal state from every state, but from states "
            f"{trapped[:10]}{'...' if len(trapped) > 10 else ''} it never does (their return is undefined)"
        )


def bellman_operator(mdp: MDP, v: Any, policy: Any) -> np.ndarray:
    """One Bellman expectation update, ``(T_pi v) = r_pi + gamma P_pi v``; shape ``(S,)``.

    Implements (bellman-iteration).

    >>> m = MDP([[[1.0]]], [[1.0]], 0.5)
    >>> bellman_operator(m, [0.0], [[1.0]]).tolist()
    [1.0]
    """
    mdp = _check_mdp(mdp)
    v = _check_value(mdp, v)
    return mdp.r_pi(policy) + mdp.gamma * mdp.P_pi(policy) @ v


def policy_evaluation(
    mdp: MDP,
    policy: Any,
    *,
    method: str = "exact",
    tol: float = 1e-10,
    max_iter: int = 100_000,
    v0: Any = None,
) -> np.ndarray:
    """The state values ``v_pi`` of a policy.

    ``"exact"`` solves ``(I - gamma P_pi) v = r_pi`` over the non-terminal states (terminal
    values are 0). ``"iterative"`` repeats ``v <- r_pi + gamma P_pi v`` from ``v0`` (default 0)
    until the largest change is below ``tol``.

    Implements (bellman-closed-form) and (bellman-iteration).

    Args:
        mdp: the MDP.
        policy: shape ``(S, A)``, rows are distributions over actions.
        method: ``"exact"`` or ``"iterative"``.
        tol: stopping threshold on ``max |v_{k+1} - v_k|`` for ``"iterative"``.
        max_iter: the most sweeps ``"iterative"`` may take.
        v0: starting values for ``"iterative"``, shape ``(S,)``.

    Returns:
        ``v`` of shape ``(S,)``.

    Raises:
        ValueError: on a bad policy or method, or if ``gamma = 1`` and the policy does not reach
            a terminal state from every state.
        RuntimeError: if ``"iterative"`` has not converged after ``max_iter`` sweeps.

    >>> m = MDP([[[1.0]]], [[1.0]], 0.9)
    >>> round(float(policy_evaluation(m, [[1.0]])[0]), 6)
    10.0
    """
    mdp = _check_mdp(mdp)
    if method not in ("exact", "iterative"):
        raise ValueError(f"method must be 'exact' or 'iterative', got {method!r}")
    if not tol > 0:
        raise ValueError(f"tol must be positive, got {tol}")
    if not isinstance(max_iter, int) or max_iter < 1:
        raise ValueError(f"max_iter must be a positive int, got {max_iter!r}")
    r_pi, P_pi = mdp.r_pi(policy), mdp.P_pi(policy)
    _require_proper(mdp, P_pi)
    live = ~mdp.terminal
    if method == "exact":
        v = np.zeros(mdp.S)
        n = int(live.sum())
        # (I - gamma P_pi) v = r_pi restricted to non-terminal states: terminal values are 0
        A_mat = np.eye(n) - mdp.gamma * P_pi[np.ix_(live, live)]
        v[live] = np.linalg.solve(A_mat, r_pi[live])
        return v
    v = np.zeros(mdp.S) if v0 is None else _check_value(mdp, v0, "v0").copy()
    v[mdp.terminal] = 0.0
    for _ in range(max_iter):
        v_new = r_pi + mdp.gamma * P_pi @ v
        if np.max(np.abs(v_new - v)) < tol:
            return v_new
        v = v_new
    raise RuntimeError(f"iterative policy evaluation did not converge to tol={tol} in {max_iter} sweeps")


def q_values(mdp: MDP, v: Any) -> np.ndarray:
    """Action values from state values, ``q(s, a) = r(s, a) + gamma sum_s' P(s'|s,a) v(s')``.

    Terminal states have ``q = 0`` for every action, and their entries of ``v`` are read as 0.
    Implements (bellman-q).

    Args:
        mdp: the MDP.
        v: state values, shape ``(S,)``.

    Returns:
        ``q`` of shape ``(S, A)``.

    >>> m = MDP([[[1.0], [1.0]]], [[1.0, 0.0]], 0.5)
    >>> q_values(m, [2.0]).tolist()
    [[2.0, 1.0]]
    """
    mdp = _check_mdp(mdp)
    v = np.where(mdp.terminal, 0.0, _check_value(mdp, v))
    q = mdp.R + mdp.gamma * mdp.P @ v  # (S, A, S) @ (S,) -> (S, A)
    q[mdp.terminal] = 0.0
    return q


def greedy_policy(q: Any, *, prefer: np.ndarray | None = None, tol: float = 1e-9) -> np.ndarray:
    """The one-hot greedy policy ``argmax_a q(s, a)``; shape ``(S, A)``.

    Ties are broken towards the lowest action index, or towards ``prefer[s]`` (an action index
    per state) when that action is within ``tol`` of the maximum; policy iteration uses this to
    stop at the first policy that is already greedy. Implements (bellman-optimality-greedy).

    >>> greedy_policy([[0.0, 1.0], [3.0, 3.0]]).tolist()
    [[0.0, 1.0], [1.0, 0.0]]
    """
    q = _as_float_array(q, "q")
    if q.ndim != 2:
        raise ValueError(f"q must have shape (S, A), got {q.shape}")
    best = q.max(axis=1, keepdims=True)
    is_best = q >= best - tol * (1.0 + np.abs(best))
    a = np.argmax(is_best, axis=1)  # first maximiser
    if prefer is not None:
        prefer = np.asarray(prefer)
        keep = is_best[np.arange(q.shape[0]), prefer]
        a = np.where(keep, prefer, a)
    return np.eye(q.shape[1])[a]


def epsilon_greedy(q: Any, epsilon: float) -> np.ndarray:
    """The epsilon-greedy policy of ``q``: ``1 - epsilon (A-1)/A`` on the greedy action, ``epsilon/A`` elsewhere.

    Shape ``(S, A)``; ties go to the lowest index. Implements (monte-carlo-epsilon-greedy).

    >>> epsilon_greedy([[0.0, 1.0]], 0.5).tolist()
    [[0.25, 0.75]]
    """
    if not 0.0 <= epsilon <= 1.0:
        raise ValueError(f"epsilon must lie in [0, 1], got {epsilon}")
    g = greedy_policy(q)
    A = g.shape[1]
    return (1.0 - epsilon) * g + epsilon / A


def bellman_optimality_operator(mdp: MDP, v: Any) -> np.ndarray:
    """One Bellman optimality update, ``(T v)(s) = max_a q(s, a)``; shape ``(S,)``.

    Implements (bellman-optimality-vi).

    >>> m = MDP([[[1.0], [1.0]]], [[1.0, 0.0]], 0.5)
    >>> bellman_optimality_operator(m, [2.0]).tolist()
    [2.0]
    """
    return q_values(mdp, v).max(axis=1)


def _record(history: list | None, v: np.ndarray) -> None:
    if history is not None:
        history.append(v.copy())


def value_iteration(
    mdp: MDP,
    *,
    tol: float = 1e-10,
    max_iter: int = 100_000,
    v0: Any = None,
    history: list | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Value iteration: ``v_{k+1} = max_a q_k(s, a)`` until ``max |v_{k+1} - v_k| < tol``.

    Implements (bellman-optimality-vi).

    Args:
        mdp: the MDP.
        tol: stopping threshold on the sup-norm change of ``v``.
        max_iter: the most sweeps.
        v0: starting values, shape ``(S,)`` (default 0).
        history: if a list is given, every iterate ``v_k`` (from ``v_0``) is appended to it.

    Returns:
        ``(v, policy)``: the optimal values, shape ``(S,)``, and a one-hot greedy policy,
        shape ``(S, A)``.

    Raises:
        RuntimeError: if not converged in ``max_iter`` sweeps (e.g. ``gamma = 1`` with a
            positive-reward loop).
    """
    mdp = _check_mdp(mdp)
    if not tol > 0:
        raise ValueError(f"tol must be positive, got {tol}")
    v = np.zeros(mdp.S) if v0 is None else _check_value(mdp, v0, "v0").copy()
    v[mdp.terminal] = 0.0
    _record(history, v)
    for _ in range(max_iter):
        v_new = bellman_optimality_operator(mdp, v)
        _record(history, v_new)
        if np.max(np.abs(v_new - v)) < tol:
            return v_new, greedy_policy(q_values(mdp, v_new))
        v = v_new
    raise RuntimeError(f"value iteration did not converge to tol={tol} in {max_iter} sweeps")


def truncated_policy_iteration(
    mdp: MDP,
    k: int | float,
    *,
    tol: float = 1e-10,
    max_iter: int = 100_000,
    v0: Any = None,
    history: list | None = None,
) -> tuple[np.ndarray, np.ndarray, int]:
    """Truncated policy iteration: improve greedily, then ``k`` evaluation sweeps; repeat.

    ``k = 1`` is value iteration, ``k = inf`` is policy iteration (exact evaluation). Stops when
    the values change by less than ``tol`` over one improvement-evaluation round (for ``k =
    inf``, when the greedy policy no longer changes). Implements (bellman-optimality-tpi).

    Args:
        mdp: the MDP.
        k: evaluation sweeps per improvement, a positive int or ``float("inf")``.
        tol: stopping threshold on the sup-norm change of ``v`` per round.
        max_iter: the most rounds.
        v0: starting values, shape ``(S,)`` (default 0).
        history: if a list is given, the values after every round are appended (from ``v_0``).

    Returns:
        ``(v, policy, n_iterations)``: values ``(S,)``, a one-hot greedy policy ``(S, A)`` and
        the number of improvement rounds.
    """
    mdp = _check_mdp(mdp)
    if not (k == float("inf") or (isinstance(k, (int, np.integer)) and not isinstance(k, bool) and k >= 1)):
        raise ValueError(f"k must be a positive int or float('inf'), got {k!r}")
    if k == float("inf"):
        return policy_iteration(mdp, max_iter=max_iter, history=history, v0=v0)
    v = np.zeros(mdp.S) if v0 is None else _check_value(mdp, v0, "v0").copy()
    v[mdp.terminal] = 0.0
    _record(history, v)
    for it in range(1, max_iter + 1):
        policy = greedy_policy(q_values(mdp, v))
        r_pi, P_pi = mdp.r_pi(policy), mdp.P_pi(policy)
        v_new = v
        for _ in range(int(k)):
            v_new = r_pi + mdp.gamma * P_pi @ v_new
        _record(history, v_new)
        if np.max(np.abs(v_new - v)) < tol:
            return v_new, greedy_policy(q_values(mdp, v_new)), it
        v = v_new
    raise RuntimeError(f"truncated policy iteration did not converge to tol={tol} in {max_iter} rounds")


def policy_iteration(
    mdp: MDP,
    *,
    policy0: Any = None,
    max_iter: int = 10_000,
    v0: Any = None,
    history: list | None = None,
) -> tuple[np.ndarray, np.ndarray, int]:
    """Policy iteration: exact evaluation, greedy improvement, until the policy is stable.

    Implements (bellman-optimality-pi-eval) and (bellman-optimality-greedy).

    Args:
        mdp: the MDP.
        policy0: the starting policy, shape ``(S, A)``. Default: greedy with respect to ``v0``
            (or the uniform policy when ``v0`` is not given, which, under ``gamma = 1``,
            reaches the terminal set whenever any policy can).
        max_iter: the most improvement rounds.
        v0: starting values, used only to pick the default first policy.
        history: if a list is given, ``v0`` (or zeros) and then ``v_{pi_k}`` after every
            evaluation are appended.

    Returns:
        ``(v, policy, n_iterations)``: optimal values ``(S,)``, a one-hot optimal policy
        ``(S, A)`` and the number of evaluations performed.
    """
    mdp = _check_mdp(mdp)
    if policy0 is not None:
        policy = mdp.check_policy(policy0)
    elif v0 is not None:
        policy = greedy_policy(q_values(mdp, _check_value(mdp, v0, "v0")))
    else:
        policy = np.full((mdp.S, mdp.A), 1.0 / mdp.A)
    start = np.zeros(mdp.S) if v0 is None else _check_value(mdp, v0, "v0").copy()
    _record(history, start)
    prev_actions = None
    for it in range(1, max_iter + 1):
        v = policy_evaluation(mdp, policy, method="exact")
        _record(history, v)
        q = q_values(mdp, v)
        # keep the current action when it is already (within rounding) greedy: no cycling
        new_policy = greedy_policy(q, prefer=prev_actions)
        actions = new_policy.argmax(axis=1)
        if prev_actions is not None and (actions == prev_actions).all():
            return v, new_policy, it
        prev_actions, policy = actions, new_policy
    raise RuntimeError(f"policy iteration did not stabilise in {max_iter} rounds")


# --------------------------------------------------------------------------------------------
# Grid worlds
# --------------------------------------------------------------------------------------------


def _cell(x: Any, rows: int, cols: int, name: str) -> tuple[int, int]:
    try:
        r, c = (int(i) for i in x)
    except (TypeError, ValueError) as err:
        raise TypeError(f"{name} must be a (row, col) pair, got {x!r}") from err
    if not (0 <= r < rows and 0 <= c < cols):
        raise ValueError(f"{name} = {(r, c)} lies outside the {rows}x{cols} grid")
    return r, c


class GridWorld:
    """A rectangular grid world with forbidden cells and one target cell.

    Cells are ``(row, col)`` from the top-left; state ``s = row * cols + col``. Actions are
    :data:`ACTIONS`, in the order [up, right, down, left, stay]. Moves are deterministic. The
    reward depends on where the move ends:

    * a move off the grid leaves the agent in place and earns ``r_boundary``;
    * otherwise, ending in (or staying in) the target earns ``r_target``; the target is not
      terminal, so an optimal agent stays there;
    * ending in (or staying in) a forbidden cell earns ``r_forbidden``: entering is allowed;
    * any other move earns ``r_other``.

    Args:
        rows, cols: the grid size.
        forbidden: the forbidden cells, ``(row, col)`` pairs.
        target: the target cell.
        r_boundary, r_forbidden, r_target, r_other: the rewards above.
        gamma: the discount factor.

    >>> g = GridWorld(1, 3, target=(0, 2))
    >>> g.mdp().R.tolist()[0]  # from the left cell: up, right, down, left, stay
    [-1.0, 0.0, -1.0, -1.0, 0.0]
    """

    ARROWS = ("↑", "→", "↓", "←", "○")

    def __init__(
        self,
        rows: int,
        cols: int,
        *,
        forbidden: Iterable[Sequence[int]] = (),
        target: Sequence[int],
        r_boundary: float = -1.0,
        r_forbidden: float = -1.0,
        r_target: float = 1.0,
        r_other: float = 0.0,
        gamma: float = 0.9,
    ) -> None:
        for name, n in (("rows", rows), ("cols", cols)):
            if not isinstance(n, (int, np.integer)) or isinstance(n, bool) or n < 1:
                raise ValueError(f"{name} must be a positive int, got {n!r}")
        self.rows, self.cols = int(rows), int(cols)
        self.target = _cell(target, self.rows, self.cols, "target")
        self.forbidden = tuple(sorted({_cell(f, self.rows, self.cols, "forbidden cell") for f in forbidden}))
        if self.target in self.forbidden:
            raise ValueError(f"the target {self.target} cannot also be forbidden")
        self.r_boundary, self.r_forbidden = float(r_boundary), float(r_forbidden)
        self.r_target, self.r_other = float(r_target), float(r_other)
        self.gamma = gamma
        self._mdp = self._build()

    @property
    def S(self) -> int:
        """The number of states, ``rows * cols``."""
        return self.rows * self.cols

    def state(self, row: int, col: int) -> int:
        """The state index of a cell, ``row * cols + col``."""
        return row * self.cols + col

    def _build(self) -> MDP:
        S, A = self.S, len(ACTIONS)
        P = np.zeros((S, A, S))
        R = np.zeros((S, A))
        for r in range(self.rows):
            for c in range(self.cols):
                s = self.state(r, c)
                for a, (dr, dc) in enumerate(ACTIONS):
                    nr, nc = r + dr, c + dc
                    if not (0 <= nr < self.rows and 0 <= nc < self.cols):
                        P[s, a, s], R[s, a] = 1.0, self.r_boundary
                        continue
                    P[s, a, self.state(nr, nc)] = 1.0
                    if (nr, nc) == self.target:
                        R[s, a] = self.r_target
                    elif (nr, nc) in self.forbidden:
                        R[s, a] = self.r_forbidden
                    else:
                        R[s, a] = self.r_other
        return MDP(P, R, self.gamma)

    def mdp(self) -> MDP:
        """The grid world as an :class:`MDP` (a fresh copy each call)."""
        m = self._mdp
        return MDP(m.P.copy(), m.R_sas.copy(), m.gamma)

    def render(self, values: Any = None, policy: Any = None, ax: Any = None, *, fmt: str = ".1f") -> Any:
        """Draw the grid: forbidden cells orange, the target blue, values as numbers, policy as arrows.

        Args:
            values: optional ``(S,)`` state values, written in each cell and shading it.
            policy: optional ``(S, A)`` policy; an arrow per action with probability > 0.05,
                longer for likelier actions, and a ring for "stay".
            ax: a matplotlib Axes to draw on (default: a new figure).
            fmt: the number format for ``values``.

        Returns:
            The matplotlib Axes.
        """
        import matplotlib.pyplot as plt
        from matplotlib.colors import to_rgb

        if ax is None:
            _, ax = plt.subplots(figsize=(0.6 * self.cols + 0.4, 0.6 * self.rows + 0.4))
        v = None if values is None else _as_float_array(values, "values").reshape(-1)
        if v is not None and v.shape != (self.S,):
            raise ValueError(f"values must have shape (S,) = ({self.S},), got {v.shape}")
        pi = None if policy is None else self._mdp.check_policy(policy)
        # One image for all cell colours and one quiver for all arrows: a handful of artists
        # instead of one per cell keeps explorers (which redraw this often) fast.
        image = np.ones((self.rows, self.cols, 3))
        if v is not None:
            span = max(float(np.abs(v).max()), 1e-12)
            grey = 1.0 - 0.22 * (1.0 - v.reshape(self.rows, self.cols) / span) / 2  # darker = lower value
            image[:] = grey[..., None]
        for r, c in self.forbidden:
            image[r, c] = to_rgb("#E69F00")
        image[self.target] = to_rgb("#56B4E9")
        ax.imshow(image, extent=(0, self.cols, self.rows, 0), interpolation="nearest")
        ax.hlines(np.arange(self.rows + 1), 0, self.cols, color="#444", lw=0.8, clip_on=False)
        ax.vlines(np.arange(self.cols + 1), 0, self.rows, color="#444", lw=0.8, clip_on=False)
        if v is not None:
            for s in range(self.S):
                r, c = divmod(s, self.cols)
                ax.text(c + 0.5, r + 0.82, format(v[s], fmt), ha="center", va="center", fontsize=7, color="#111")
        if pi is not None:
            rr, cc = np.divmod(np.arange(self.S), self.cols)
            moves = np.array(ACTIONS[:4], dtype=float)  # (4, 2) row and column steps
            for a in range(4):
                p = pi[:, a]
                keep = p > 0.05
                if keep.any():
                    # quiver's y axis points up in data units, and rows grow downwards here
                    length = 0.1 + 0.22 * p[keep]  # visible even for small probabilities
                    ax.quiver(cc[keep] + 0.5, rr[keep] + 0.38, moves[a, 1] * length, moves[a, 0] * length,
                              angles="xy", scale_units="xy", scale=1, width=0.007, headwidth=3.2,
                              headlength=2.6, headaxislength=2.3, color="#D55E00")
            if pi.shape[1] > 4:
                stay = pi[:, 4] > 0.05
                if stay.any():
                    ax.scatter(cc[stay] + 0.5, rr[stay] + 0.38, s=30 * pi[stay, 4] + 8, facecolors="none",
                               edgecolors="#D55E00", linewidths=1.2)
        ax.set_xlim(0, self.cols)
        ax.set_ylim(self.rows, 0)
        ax.set_aspect("equal")
        ax.set_xticks([])
        ax.set_yticks([])
        ax.grid(False)
        for side in ax.spines.values():
            side.set_visible(False)
        return ax


def cliff_walking(rows: int = 4, cols: int = 12) -> tuple[MDP, int]:
    """The cliff-walking task of Sutton and Barto (Example 6.6), undiscounted.

    The start is the bottom-left cell, the goal (terminal) the bottom-right, and the cells
    between them on the bottom row are the cliff. Actions are [up, right, down, left] (no
    "stay"). Every step earns -1; stepping into the cliff earns -100 and sends the agent back to
    the start; a move off the grid leaves it in place. ``gamma = 1``.

    Returns:
        ``(mdp, start)``: the MDP and the start state index ``(rows - 1) * cols``.

    >>> m, start = cliff_walking()
    >>> m.S, m.A, start, int(m.terminal.sum())
    (48, 4, 36, 1)
    """
    if rows < 2 or cols < 3:
        raise ValueError(f"cliff walking needs rows >= 2 and cols >= 3, got {rows}x{cols}")
    S, A = rows * cols, 4
    start, goal = (rows - 1) * cols, rows * cols - 1
    P = np.zeros((S, A, S))
    R = np.full((S, A), -1.0)
    for r in range(rows):
        for c in range(cols):
            s = r * cols + c
            for a, (dr, dc) in enumerate(ACTIONS[:4]):
                nr, nc = min(max(r + dr, 0), rows - 1), min(max(c + dc, 0), cols - 1)
                if nr == rows - 1 and 0 < nc < cols - 1:  # fell off the cliff
                    P[s, a, start], R[s, a] = 1.0, -100.0
                else:
                    P[s, a, nr * cols + nc] = 1.0
    terminal = np.zeros(S, dtype=bool)
    terminal[goal] = True
    return MDP(P, R, 1.0, terminal), start


# --------------------------------------------------------------------------------------------
# Sampling
# --------------------------------------------------------------------------------------------


def discounted_returns(rewards: Any, gamma: float) -> np.ndarray:
    """The returns ``G_t = sum_k gamma^k r_{t+k+1}`` of every step of one episode; shape ``(T,)``.

    ``rewards[t]`` is the reward received after the action at step ``t``. Computed backwards with
    ``G_t = r_{t+1} + gamma G_{t+1}``. Implements (bellman-return) through the recursion (bellman-return-recursion).

    >>> discounted_returns([1.0, 1.0, 1.0], 0.5).tolist()
    [1.75, 1.5, 1.0]
    """
    r = _as_float_array(rewards, "rewards").reshape(-1)
    if not 0.0 <= gamma <= 1.0:
        raise ValueError(f"gamma must lie in [0, 1], got {gamma}")
    G = np.zeros_like(r)
    acc = 0.0
    for t in range(len(r) - 1, -1, -1):
        acc = r[t] + gamma * acc
        G[t] = acc
    return G


class Environment:
    """Draws transitions ``(s', r)`` from an :class:`MDP`, for the model-free methods.

    The next state ``s'`` is drawn from ``P[s, a]``, and the reward is the reward of that
    transition, ``R_sas[s, a, s']``: a random quantity whenever ``s'`` is, whose mean is
    ``R[s, a]``. (Handing out the mean ``R[s, a]`` instead would be a different environment,
    with different noise.)

    Args:
        mdp: the MDP to sample.
        rng: a ``numpy.random.Generator`` or a ``torch.Generator``; every random draw (next
            states, actions, start states) comes from it, so a seeded generator makes runs
            reproducible.

    >>> env = Environment(GridWorld(1, 2, target=(0, 1)).mdp(), np.random.default_rng(0))
    >>> env.step(0, 1)  # move right onto the target
    (1, 1.0)
    """

    def __init__(self, mdp: MDP, rng: Any) -> None:
        self.mdp = _check_mdp(mdp)
        if isinstance(rng, np.random.Generator):
            self._random = rng.random
        elif type(rng).__name__ == "Generator" and type(rng).__module__.startswith("torch"):
            import torch

            self._random = lambda: float(torch.rand((), generator=rng, dtype=torch.float64))
        else:
            raise TypeError(f"rng must be a numpy.random.Generator or a torch.Generator, got {type(rng).__name__}")
        self.rng = rng
        # Python lists, not arrays: the samplers run one step at a time, where list indexing and
        # bisect are several times faster than NumPy's per-call overhead.
        self._cdf = np.cumsum(mdp.P, axis=2).tolist()  # [S][A][S] for inverse-CDF sampling
        deterministic = mdp.P.max(axis=2) >= 1.0 - 1e-12
        # -1 marks a stochastic (s, a); otherwise the only possible next state
        self._next = np.where(deterministic, mdp.P.argmax(axis=2), -1).tolist()
        self._R = mdp.R_sas.tolist()  # [S][A][S]: the reward of each transition

    def _sample(self, cdf: list[float]) -> int:
        i = bisect.bisect_right(cdf, self._random() * cdf[-1])
        return min(i, len(cdf) - 1)

    def step(self, s: int, a: int) -> tuple[int, float]:
        """Take action ``a`` in state ``s``; return ``(s', r)`` with ``s' ~ P[s, a]`` and ``r = R_sas[s, a, s']``."""
        nxt = self._next[s][a]
        if nxt < 0:
            nxt = self._sample(self._cdf[s][a])
        return nxt, self._R[s][a][nxt]

    def action(self, policy: Any, s: int) -> int:
        """Draw an action from ``policy[s]`` (an ``(S, A)`` array, or a list of per-state CDFs)."""
        row = policy[s]
        cdf = row if isinstance(row, list) else np.cumsum(row).tolist()
        return self._sample(cdf)

    @staticmethod
    def policy_cdf(policy: np.ndarray) -> list[list[float]]:
        """Per-state cumulative action probabilities, the fast form :meth:`action` accepts."""
        return np.cumsum(policy, axis=1).tolist()

    def uniform(self, n: int) -> int:
        """A uniform draw from ``{0, ..., n-1}``."""
        return min(int(self._random() * n), n - 1)

    def episode(
        self, policy: Any, s0: int, length: int, *, a0: int | None = None
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Roll out ``policy`` from ``s0`` for at most ``length`` steps (fewer if a terminal state is hit).

        Args:
            policy: ``(S, A)`` policy.
            s0: the start state.
            length: the most steps.
            a0: if given, the first action (an exploring start), then ``policy``.

        Returns:
            ``(states, actions, rewards)``, each of shape ``(T,)``, ``T <= length``: the step
            ``t`` visits ``states[t]``, takes ``actions[t]`` and then receives ``rewards[t]``.
        """
        pi = self.policy_cdf(self.mdp.check_policy(policy))
        if not isinstance(length, (int, np.integer)) or length < 1:
            raise ValueError(f"length must be a positive int, got {length!r}")
        states, actions, rewards = [], [], []
        s = int(s0)
        terminal = self.mdp.terminal.tolist()
        for t in range(length):
            if terminal[s]:
                break
            a = int(a0) if (t == 0 and a0 is not None) else self.action(pi, s)
            s_next, r = self.step(s, a)
            states.append(s)
            actions.append(a)
            rewards.append(r)
            s = s_next
        return np.array(states, dtype=int), np.array(actions, dtype=int), np.array(rewards, dtype=float)
