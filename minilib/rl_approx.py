"""Value-function approximation: linear TD(0), its fixed point (LSTD), and DQN.

The chapter value-approximation of the book's RL part. The first half is linear and exact: a
feature matrix ``Phi`` of shape ``(S, d)`` gives the approximate values ``v_hat = Phi @ w``, and
for a finite MDP from :mod:`minilib.mdp` everything about semi-gradient TD(0) (its expected
update ``b - A w``, its fixed point, the projected Bellman equation) is a small linear-algebra
computation. The second half is deep: a replay buffer, the DQN loss with a target network, the
training loop, and a small continuous-state control task (:class:`PointMass`) to run it on.

Conventions (as in :mod:`minilib.mdp`): states ``0, ..., S-1``; terminal states have value 0,
so their rows of ``Phi`` are treated as zero; ``d`` is a distribution over states, shape
``(S,)``, and ``D = diag(d)``; the weighted norm is ``||x||_D = sqrt(sum_s d(s) x(s)^2)``.
The linear half works in NumPy ``float64``; the DQN half in torch, on the device and dtype of
its inputs.

>>> mdp, start = random_walk_mdp(10, jump=2, gamma=0.9)
>>> Phi = features("aggregation", 10, 5, n_terminal=2)
>>> d = state_distribution(mdp, np.ones((mdp.S, 1)), start=start)
>>> w = td_fixed_point(mdp, np.ones((mdp.S, 1)), Phi, d)
>>> w.shape
(5,)
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from torch import nn

from minilib.mdp import MDP, Environment, _as_float_array

__all__ = [
    "PointMass",
    "ReplayBuffer",
    "dqn_loss",
    "features",
    "linear_td0",
    "lstd",
    "projected_bellman_fixed_point",
    "random_walk_mdp",
    "state_distribution",
    "td_fixed_point",
    "td_matrices",
    "train_dqn",
]


# --------------------------------------------------------------------------------------------
# Tasks and features
# --------------------------------------------------------------------------------------------


def random_walk_mdp(n_states: int = 1000, *, jump: int = 100, gamma: float = 1.0) -> tuple[MDP, int]:
    """Sutton and Barto's long random walk (Example 9.1) as an :class:`~minilib.mdp.MDP`.

    States ``0, ..., n_states - 1`` lie on a line; the walk starts in the middle. Each step jumps
    to one of the ``jump`` states to the left or the ``jump`` states to the right, all ``2 jump``
    equally likely; a jump past an end terminates the episode with reward ``-1`` (left) or ``+1``
    (right), every other step has reward 0. Two terminal states are appended: ``n_states`` (left
    end) and ``n_states + 1`` (right end). There is one action.

    Args:
        n_states: the number of non-terminal states (``>= 2``).
        jump: the largest jump (``1 <= jump``).
        gamma: the discount factor; ``1`` is the book's episodic setting.

    Returns:
        ``(mdp, start)`` with ``mdp.S = n_states + 2`` and ``start = n_states // 2``.

    >>> m, start = random_walk_mdp(4, jump=1)
    >>> m.S, start, float(m.P[0, 0, 4]), float(m.R_sas[3, 0, 5])
    (6, 2, 0.5, 1.0)
    """
    if not isinstance(n_states, (int, np.integer)) or n_states < 2:
        raise ValueError(f"n_states must be an int >= 2, got {n_states!r}")
    if not isinstance(jump, (int, np.integer)) or jump < 1:
        raise ValueError(f"jump must be a positive int, got {jump!r}")
    n = int(n_states)
    S = n + 2
    left, right = n, n + 1
    P = np.zeros((S, 1, S))
    R = np.zeros((S, 1, S))
    p = 1.0 / (2 * jump)
    for s in range(n):
        for k in range(1, jump + 1):
            for t in (s - k, s + k):
                dest = left if t < 0 else right if t >= n else t
                P[s, 0, dest] += p
    R[:, 0, left] = -1.0
    R[:, 0, right] = 1.0
    P[left, 0, left] = P[right, 0, right] = 1.0
    terminal = np.zeros(S, dtype=bool)
    terminal[[left, right]] = True
    return MDP(P, R, gamma, terminal), n // 2


def features(kind: str, n_states: int, n_features: int, *, n_terminal: int = 0) -> np.ndarray:
    """A feature matrix ``Phi`` for states on a line; ``v_hat = Phi @ w``. Implements (value-approximation-linear).

    The states ``0, ..., n_states - 1`` are scaled to ``x = s / (n_states - 1)`` in ``[0, 1]``.

    * ``"aggregation"``: ``n_features`` groups of consecutive states; ``phi_i(s) = 1`` if ``s``
      is in group ``i`` (state aggregation, a one-hot group indicator).
    * ``"polynomial"``: ``phi_i(s) = (2x - 1)^i`` for ``i = 0, ..., n_features - 1``.
    * ``"fourier"``: ``phi_i(s) = cos(i pi x)`` for ``i = 0, ..., n_features - 1`` (Konidaris et
      al.'s Fourier cosine basis in one dimension).

    Args:
        kind: ``"aggregation"``, ``"polynomial"`` or ``"fourier"``.
        n_states: the number of non-terminal states.
        n_features: ``d``, between 1 and ``n_states``.
        n_terminal: zero rows appended for terminal states (their value is 0).

    Returns:
        ``Phi`` of shape ``(n_states + n_terminal, n_features)``, float64.

    >>> features("aggregation", 4, 2).tolist()
    [[1.0, 0.0], [1.0, 0.0], [0.0, 1.0], [0.0, 1.0]]
    """
    if kind not in ("aggregation", "polynomial", "fourier"):
        raise ValueError(f"kind must be 'aggregation', 'polynomial' or 'fourier', got {kind!r}")
    for name, val, low in (("n_states", n_states, 2), ("n_features", n_features, 1), ("n_terminal", n_terminal, 0)):
        if not isinstance(val, (int, np.integer)) or isinstance(val, bool) or val < low:
            raise ValueError(f"{name} must be an int >= {low}, got {val!r}")
    if n_features > n_states:
        raise ValueError(f"n_features must be at most n_states = {n_states}, got {n_features}")
    s = np.arange(n_states)
    x = s / (n_states - 1)
    if kind == "aggregation":
        group = (s * n_features) // n_states  # (S,) group index, groups of (nearly) equal size
        Phi = np.eye(n_features)[group]
    elif kind == "polynomial":
        Phi = (2 * x[:, None] - 1) ** np.arange(n_features)[None, :]
    else:
        Phi = np.cos(np.pi * x[:, None] * np.arange(n_features)[None, :])
    return np.vstack([Phi, np.zeros((n_terminal, n_features))])


# --------------------------------------------------------------------------------------------
# The linear theory: on-policy distribution, A and b, the TD fixed point
# --------------------------------------------------------------------------------------------


def _check_phi(mdp: MDP, Phi: Any) -> np.ndarray:
    Phi = _as_float_array(Phi, "Phi")
    if Phi.ndim != 2 or Phi.shape[0] != mdp.S or Phi.shape[1] < 1:
        raise ValueError(f"Phi must have shape (S, d) = ({mdp.S}, d) with d >= 1, got {Phi.shape}")
    Phi = Phi.copy()
    Phi[mdp.terminal] = 0.0  # terminal values are 0 whatever the features say
    return Phi


def _check_dist(mdp: MDP, d: Any) -> np.ndarray:
    d = _as_float_array(d, "d")
    if d.shape != (mdp.S,):
        raise ValueError(f"d must have shape (S,) = ({mdp.S},), got {d.shape}")
    if (d < 0).any() or abs(d.sum() - 1.0) > 1e-6:
        raise ValueError("d must be a probability distribution over states (non-negative, summing to 1)")
    return d


def state_distribution(mdp: MDP, policy: Any, *, start: Any = None) -> np.ndarray:
    """The on-policy state distribution ``d_pi``; shape ``(S,)``. Implements (value-approximation-onpolicy).

    * Episodic MDP (some terminal state), episodes starting from ``start`` (a state index or a
      distribution ``h`` of shape ``(S,)``): the expected number of visits ``eta`` solves
      ``eta = h + P_pi^T eta`` on the non-terminal states, and ``d = eta / sum(eta)``.
      Terminal states get 0.
    * Continuing MDP (no terminal state; ``start`` must be None): the stationary distribution,
      ``d^T P_pi = d^T`` with ``sum(d) = 1``; it must be unique (one recurrent class).

    Raises:
        ValueError: on a missing/needless ``start``, a non-unique stationary distribution, or an
            episodic policy that does not terminate from the start.

    >>> m, start = random_walk_mdp(3, jump=1)
    >>> state_distribution(m, np.ones((5, 1)), start=start).round(3).tolist()
    [0.25, 0.5, 0.25, 0.0, 0.0]
    """
    if not isinstance(mdp, MDP):
        raise TypeError(f"mdp must be a minilib.mdp.MDP, got {type(mdp).__name__}")
    P_pi = mdp.P_pi(policy)
    live = ~mdp.terminal
    if mdp.terminal.any():
        if start is None:
            raise ValueError("an episodic MDP needs start (a state index or a start distribution)")
        if isinstance(start, (int, np.integer)):
            if not 0 <= start < mdp.S:
                raise ValueError(f"start must be a state index in [0, {mdp.S}), got {start}")
            h = np.zeros(mdp.S)
            h[int(start)] = 1.0
        else:
            h = _check_dist(mdp, start)
        P_NN = P_pi[np.ix_(live, live)]
        try:
            eta_live = np.linalg.solve(np.eye(int(live.sum())) - P_NN.T, h[live])
        except np.linalg.LinAlgError as err:
            raise ValueError("the policy does not terminate from every state (I - P_NN is singular)") from err
        if not np.all(np.isfinite(eta_live)) or (eta_live < -1e-9).any():
            raise ValueError("the policy does not terminate from every state (no finite visit counts)")
        eta = np.zeros(mdp.S)
        eta[live] = np.maximum(eta_live, 0.0)
        return eta / eta.sum()
    if start is not None:
        raise ValueError("start is only used for episodic MDPs (with terminal states); pass start=None")
    S = mdp.S
    # d^T (I - P) = 0 and 1^T d = 1, stacked into one least-squares system
    M = np.vstack([(np.eye(S) - P_pi).T, np.ones((1, S))])
    rhs = np.zeros(S + 1)
    rhs[-1] = 1.0
    d, _, rank, _ = np.linalg.lstsq(M, rhs, rcond=None)
    if rank < S:
        raise ValueError("the stationary distribution of P_pi is not unique (more than one recurrent class)")
    d = np.maximum(d, 0.0)
    return d / d.sum()


def td_matrices(mdp: MDP, policy: Any, Phi: Any, d: Any) -> tuple[np.ndarray, np.ndarray]:
    """The matrices of the expected semi-gradient TD(0) update ``E[delta phi(S)] = b - A w``.

    ``A = Phi^T D (I - gamma P_pi) Phi`` (shape ``(d, d)``) and ``b = Phi^T D r_pi`` (shape
    ``(d,)``), with ``D = diag(d)``. Rows of ``Phi`` at terminal states are taken as zero.
    Implements (value-approximation-A-b).

    >>> m, start = random_walk_mdp(3, jump=1, gamma=0.5)
    >>> pi = np.ones((5, 1))
    >>> A, b = td_matrices(m, pi, np.eye(5), state_distribution(m, pi, start=start))
    >>> A.shape, b.shape
    ((5, 5), (5,))
    """
    if not isinstance(mdp, MDP):
        raise TypeError(f"mdp must be a minilib.mdp.MDP, got {type(mdp).__name__}")
    Phi = _check_phi(mdp, Phi)
    d = _check_dist(mdp, d)
    P_pi, r_pi = mdp.P_pi(policy), mdp.r_pi(policy)
    DPhi = d[:, None] * Phi  # D Phi, (S, d)
    A = DPhi.T @ (Phi - mdp.gamma * P_pi @ Phi)
    b = DPhi.T @ r_pi
    return A, b


def td_fixed_point(mdp: MDP, policy: Any, Phi: Any, d: Any) -> np.ndarray:
    """The TD fixed point ``w_TD``, the solution of ``A w = b``; shape ``(d,)``.

    This is the exact, model-based solution of the projected Bellman equation
    ``Phi w = Pi_D T_pi (Phi w)``; :func:`lstd` estimates the same ``w`` from samples.
    Implements (value-approximation-lstd).

    Raises:
        ValueError: if ``A`` is singular (e.g. linearly dependent features on the support of ``d``).
    """
    A, b = td_matrices(mdp, policy, Phi, d)
    try:
        return np.linalg.solve(A, b)
    except np.linalg.LinAlgError as err:
        raise ValueError("A is singular: are the features linearly independent on the states d weights?") from err


def projected_bellman_fixed_point(
    mdp: MDP, policy: Any, Phi: Any, d: Any, *, tol: float = 1e-12, max_iter: int = 100_000
) -> np.ndarray:
    """Solve ``Phi w = Pi_D T_pi(Phi w)`` by iteration: ``w <- argmin_u ||Phi u - T_pi(Phi w)||_D``.

    Each step is a weighted least-squares fit (NumPy ``lstsq``) of the Bellman backup of the
    current approximation. When ``Pi_D T_pi`` is a contraction in ``||.||_D`` (on-policy ``d``,
    ``gamma < 1``) this converges to the TD fixed point; it does not use ``A`` or ``b``, so it is
    an independent reference for :func:`td_fixed_point`. Implements (value-approximation-pbe).

    Raises:
        RuntimeError: if the change in ``w`` is still above ``tol`` after ``max_iter`` steps.
    """
    if not isinstance(mdp, MDP):
        raise TypeError(f"mdp must be a minilib.mdp.MDP, got {type(mdp).__name__}")
    Phi = _check_phi(mdp, Phi)
    d = _check_dist(mdp, d)
    if not tol > 0:
        raise ValueError(f"tol must be positive, got {tol}")
    P_pi, r_pi = mdp.P_pi(policy), mdp.r_pi(policy)
    root = np.sqrt(d)[:, None]
    X = root * Phi  # ||Phi u - y||_D = ||sqrt(D) Phi u - sqrt(D) y||_2
    fit = np.linalg.pinv(X) * root[:, 0]  # (d, S): y -> argmin_u ||Phi u - y||_D
    # T_pi(Phi w) = r_pi + gamma (P_pi Phi) w, so each projected backup is affine in w
    fit_r, fit_P = fit @ r_pi, fit @ (P_pi @ Phi)
    w = np.zeros(Phi.shape[1])
    for _ in range(max_iter):
        w_new = fit_r + mdp.gamma * fit_P @ w  # = fit @ T_pi(Phi w)
        if np.max(np.abs(w_new - w)) < tol:
            return w_new
        w = w_new
    raise RuntimeError(f"projected Bellman iteration did not converge to tol={tol} in {max_iter} steps")


def lstd(phi: Any, rewards: Any, phi_next: Any, gamma: float, *, ridge: float = 0.0) -> np.ndarray:
    """Least-squares TD from sampled transitions: solve ``A_hat w = b_hat``.

    ``A_hat = sum_t phi_t (phi_t - gamma phi'_t)^T`` and ``b_hat = sum_t phi_t r_t`` over
    transitions ``t``; ``phi'_t`` is the feature vector of the next state (zero if it is
    terminal). Implements (value-approximation-lstd) with sample averages in place of ``D``
    and ``P_pi``.

    Args:
        phi: ``(T, d)`` features of the states left.
        rewards: ``(T,)`` rewards.
        phi_next: ``(T, d)`` features of the next states (zero rows for terminal ones).
        gamma: discount in ``[0, 1]``.
        ridge: optional ``lambda >= 0`` added to the diagonal of ``A_hat / T``.

    >>> lstd([[1.0]], [1.0], [[1.0]], 0.5).tolist()  # v = 1 + 0.5 v
    [2.0]
    """
    phi = _as_float_array(phi, "phi")
    phi_next = _as_float_array(phi_next, "phi_next")
    r = _as_float_array(rewards, "rewards")
    if phi.ndim != 2 or phi.shape[0] == 0:
        raise ValueError(f"phi must have shape (T, d) with T >= 1, got {phi.shape}")
    if phi_next.shape != phi.shape:
        raise ValueError(f"phi_next must have the shape of phi {phi.shape}, got {phi_next.shape}")
    if r.shape != (phi.shape[0],):
        raise ValueError(f"rewards must have shape (T,) = ({phi.shape[0]},), got {r.shape}")
    if not 0.0 <= gamma <= 1.0:
        raise ValueError(f"gamma must lie in [0, 1], got {gamma}")
    if ridge < 0:
        raise ValueError(f"ridge must be >= 0, got {ridge}")
    T = phi.shape[0]
    A = phi.T @ (phi - gamma * phi_next) / T + ridge * np.eye(phi.shape[1])
    b = phi.T @ r / T
    try:
        return np.linalg.solve(A, b)
    except np.linalg.LinAlgError as err:
        raise ValueError("A_hat is singular: too few transitions for these features (try ridge > 0)") from err


def linear_td0(
    env: Environment,
    policy: Any,
    Phi: Any,
    *,
    n_episodes: int,
    alpha: float | Callable[[int], float],
    start: int,
    w0: Any = None,
    episode_length: int = 100_000,
    transitions: bool = False,
) -> tuple[np.ndarray, np.ndarray] | tuple[np.ndarray, np.ndarray, tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """Semi-gradient TD(0) with linear features along sampled episodes.

    After each transition ``(s, r, s')``: ``delta = r + gamma phi(s')^T w - phi(s)^T w`` and
    ``w <- w + alpha_k delta phi(s)``, with ``phi(s') = 0`` at a terminal ``s'``.
    Implements (value-approximation-semi-gradient).

    Args:
        env: an :class:`~minilib.mdp.Environment`; its MDP supplies ``gamma`` and the terminals.
        policy: ``(S, A)`` policy.
        Phi: ``(S, d)`` features.
        n_episodes: episodes to run, each from ``start``.
        alpha: a constant step, or a function of the update count ``k = 1, 2, ...``.
        start: the start state of every episode.
        w0: initial weights, shape ``(d,)`` (default 0).
        episode_length: the most steps of an episode.
        transitions: also return the visited ``(states, rewards, next_states)`` arrays.

    Returns:
        ``(w, W)``: the final weights ``(d,)`` and ``W`` of shape ``(n_episodes, d)``, the
        weights after each episode; plus the transitions when ``transitions=True``.
    """
    if not isinstance(env, Environment):
        raise TypeError(f"env must be a minilib.mdp.Environment, got {type(env).__name__}")
    mdp = env.mdp
    Phi = _check_phi(mdp, Phi)
    if not isinstance(n_episodes, (int, np.integer)) or n_episodes < 1:
        raise ValueError(f"n_episodes must be a positive int, got {n_episodes!r}")
    if not isinstance(start, (int, np.integer)) or not 0 <= start < mdp.S or mdp.terminal[start]:
        raise ValueError(f"start must be a non-terminal state index in [0, {mdp.S}), got {start!r}")
    if callable(alpha):
        step = alpha
    else:
        if not alpha > 0:
            raise ValueError(f"alpha must be positive (or a function of the update count), got {alpha}")
        step = lambda k: alpha  # noqa: E731
    w = np.zeros(Phi.shape[1]) if w0 is None else _as_float_array(w0, "w0").copy()
    if w.shape != (Phi.shape[1],):
        raise ValueError(f"w0 must have shape (d,) = ({Phi.shape[1]},), got {w.shape}")
    cdf = env.policy_cdf(mdp.check_policy(policy))
    terminal = mdp.terminal.tolist()
    gamma = mdp.gamma
    W = np.zeros((n_episodes, Phi.shape[1]))
    log_s: list[int] = []
    log_r: list[float] = []
    log_s2: list[int] = []
    k = 0
    for ep in range(n_episodes):
        s = int(start)
        for _ in range(episode_length):
            a = env.action(cdf, s)
            s2, r = env.step(s, a)
            k += 1
            phi_s = Phi[s]
            delta = r + gamma * (Phi[s2] @ w) - phi_s @ w  # Phi[s2] is 0 at a terminal s2
            w += step(k) * delta * phi_s  # semi-gradient: no derivative through the target
            if transitions:
                log_s.append(s)
                log_r.append(r)
                log_s2.append(s2)
            if terminal[s2]:
                break
            s = s2
        W[ep] = w
    if transitions:
        return w, W, (np.array(log_s, dtype=int), np.array(log_r), np.array(log_s2, dtype=int))
    return w, W


# --------------------------------------------------------------------------------------------
# DQN: a continuous-state task, a replay buffer, the loss and the loop
# --------------------------------------------------------------------------------------------


class PointMass:
    """A point mass on a walled track, pushed left, not at all, or right: a double integrator.

    The state is ``s = (x, v)``, position and velocity. Action ``a in {0, 1, 2}`` applies the
    force ``u = a - 1 in {-1, 0, +1}`` for one step of length ``dt`` (semi-implicit Euler):
    ``v' = clip(v + u dt, -v_max, v_max)``, ``x' = x + v' dt``; if ``|x'| > x_max`` the mass
    stops at the wall (``x' = +-x_max``, ``v' = 0``). The reward is the negative quadratic cost
    of the new state, ``r = -(x'^2 + c_v v'^2)``: the task is to bring the mass to rest at the
    origin. Episodes last ``horizon`` steps with no terminal state (the time limit is a
    truncation, so targets bootstrap through it). Starts: ``x ~ U[-x_max, x_max]``, ``v = 0``.
    Implements (value-approximation-pointmass).

    All methods are batched over leading dimensions and keep the dtype and device of ``s``.

    >>> task = PointMass()
    >>> s2, r = task.step(torch.tensor([[0.5, 0.0]]), torch.tensor([2]))
    >>> [round(float(z), 4) for z in s2[0]], round(float(r[0]), 5)
    ([0.51, 0.1], -0.2611)
    """

    n_actions: int = 3
    state_dim: int = 2

    def __init__(
        self, *, dt: float = 0.1, x_max: float = 1.0, v_max: float = 1.0, cost_v: float = 0.1,
        horizon: int = 100, gamma: float = 0.95,
    ) -> None:
        for name, val in (("dt", dt), ("x_max", x_max), ("v_max", v_max)):
            if not val > 0:
                raise ValueError(f"{name} must be positive, got {val}")
        if not cost_v >= 0:
            raise ValueError(f"cost_v must be >= 0, got {cost_v}")
        if not isinstance(horizon, int) or horizon < 1:
            raise ValueError(f"horizon must be a positive int, got {horizon!r}")
        if not 0.0 <= gamma < 1.0:
            raise ValueError(f"gamma must lie in [0, 1), got {gamma}")
        self.dt, self.x_max, self.v_max, self.cost_v = float(dt), float(x_max), float(v_max), float(cost_v)
        self.horizon, self.gamma = horizon, float(gamma)

    def reset(self, n: int, *, generator: torch.Generator | None = None, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        """``n`` start states, shape ``(n, 2)``: ``x ~ U[-x_max, x_max]``, ``v = 0``."""
        if not isinstance(n, int) or n < 1:
            raise ValueError(f"n must be a positive int, got {n!r}")
        x = (2 * torch.rand(n, generator=generator, dtype=dtype) - 1) * self.x_max
        return torch.stack([x, torch.zeros_like(x)], dim=-1)

    def step(self, s: torch.Tensor, a: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """One step from states ``s`` (``(..., 2)``) with actions ``a`` (``(...)``, integers in 0..2).

        Returns ``(s', r)`` with shapes ``(..., 2)`` and ``(...)``.
        """
        if not isinstance(s, torch.Tensor) or s.shape[-1:] != (2,):
            raise ValueError(f"s must be a tensor of shape (..., 2), got {getattr(s, 'shape', type(s))}")
        if not isinstance(a, torch.Tensor) or a.shape != s.shape[:-1] or a.dtype.is_floating_point:
            raise ValueError(f"a must be an integer tensor of shape {tuple(s.shape[:-1])}, got {getattr(a, 'shape', type(a))}")
        if a.numel() and (int(a.min()) < 0 or int(a.max()) > 2):
            raise ValueError("a must hold actions in {0, 1, 2}")
        x, v = s[..., 0], s[..., 1]
        u = (a - 1).to(s.dtype)
        v2 = torch.clamp(v + u * self.dt, -self.v_max, self.v_max)
        x2 = x + v2 * self.dt
        hit = x2.abs() > self.x_max
        x2 = torch.clamp(x2, -self.x_max, self.x_max)
        v2 = torch.where(hit, torch.zeros_like(v2), v2)
        r = -(x2**2 + self.cost_v * v2**2)
        return torch.stack([x2, v2], dim=-1), r

    def evaluate(self, act: Callable[[torch.Tensor], torch.Tensor], starts: torch.Tensor) -> torch.Tensor:
        """The discounted return ``sum_t gamma^t r_{t+1}`` over one episode from each start; shape ``(n,)``.

        ``act`` maps states ``(n, 2)`` to actions ``(n,)``.
        """
        s = starts
        G = torch.zeros(s.shape[:-1], dtype=s.dtype, device=s.device)
        disc = 1.0
        for _ in range(self.horizon):
            s, r = self.step(s, act(s))
            G = G + disc * r
            disc *= self.gamma
        return G


class ReplayBuffer:
    """A fixed-size ring buffer of transitions ``(s, a, r, s', done)``, sampled uniformly.

    Once ``capacity`` transitions are stored, each new one overwrites the oldest. Tensors are
    kept on ``device`` in ``dtype`` (states, rewards) and ``int64`` (actions).

    >>> buf = ReplayBuffer(3, state_dim=1)
    >>> for i in range(5):
    ...     buf.add(torch.tensor([[float(i)]]), torch.tensor([0]), torch.tensor([0.0]), torch.tensor([[0.0]]), torch.tensor([False]))
    >>> len(buf), sorted(buf.s[:, 0].tolist())
    (3, [2.0, 3.0, 4.0])
    """

    def __init__(self, capacity: int, state_dim: int, *, device: torch.device | str | None = None,
                 dtype: torch.dtype = torch.float32) -> None:
        if not isinstance(capacity, int) or capacity < 1:
            raise ValueError(f"capacity must be a positive int, got {capacity!r}")
        if not isinstance(state_dim, int) or state_dim < 1:
            raise ValueError(f"state_dim must be a positive int, got {state_dim!r}")
        self.capacity = capacity
        self.s = torch.zeros(capacity, state_dim, dtype=dtype, device=device)
        self.a = torch.zeros(capacity, dtype=torch.int64, device=device)
        self.r = torch.zeros(capacity, dtype=dtype, device=device)
        self.s2 = torch.zeros(capacity, state_dim, dtype=dtype, device=device)
        self.done = torch.zeros(capacity, dtype=dtype, device=device)
        self._next = 0  # the slot the next transition goes to
        self._size = 0

    def __len__(self) -> int:
        return self._size

    def add(self, s: torch.Tensor, a: torch.Tensor, r: torch.Tensor, s2: torch.Tensor, done: torch.Tensor) -> None:
        """Store a batch of ``n`` transitions: ``s, s2`` of shape ``(n, state_dim)``, ``a, r, done`` of shape ``(n,)``."""
        n = s.shape[0] if isinstance(s, torch.Tensor) and s.ndim == 2 else -1
        if n < 1 or s.shape[1] != self.s.shape[1]:
            raise ValueError(f"s must have shape (n, {self.s.shape[1]}), got {getattr(s, 'shape', type(s))}")
        if not isinstance(s2, torch.Tensor) or s2.shape != s.shape:
            raise ValueError(f"s2 must have the shape of s {tuple(s.shape)}")
        for name, t in (("a", a), ("r", r), ("done", done)):
            if not isinstance(t, torch.Tensor) or t.shape != (n,):
                raise ValueError(f"{name} must be a tensor of shape ({n},), got {getattr(t, 'shape', type(t))}")
        idx = (self._next + torch.arange(n)) % self.capacity
        idx = idx.to(self.s.device)
        self.s[idx] = s.to(self.s)
        self.a[idx] = a.to(self.a)
        self.r[idx] = r.to(self.r)
        self.s2[idx] = s2.to(self.s2)
        self.done[idx] = done.to(self.done)
        self._next = (self._next + n) % self.capacity
        self._size = min(self._size + n, self.capacity)

    def sample(self, batch_size: int, *, generator: torch.Generator | None = None) -> tuple[torch.Tensor, ...]:
        """``batch_size`` transitions drawn uniformly with replacement from those stored: ``(s, a, r, s2, done)``."""
        if self._size == 0:
            raise ValueError("cannot sample from an empty ReplayBuffer")
        if not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")
        idx = torch.randint(self._size, (batch_size,), generator=generator).to(self.s.device)
        return self.s[idx], self.a[idx], self.r[idx], self.s2[idx], self.done[idx]

    def latest(self, n: int) -> tuple[torch.Tensor, ...]:
        """The ``n`` most recently added transitions (fewer if fewer are stored), oldest first."""
        n = min(n, self._size)
        if n < 1:
            raise ValueError("cannot take transitions from an empty ReplayBuffer")
        idx = ((self._next - n + torch.arange(n)) % self.capacity).to(self.s.device)
        return self.s[idx], self.a[idx], self.r[idx], self.s2[idx], self.done[idx]


def dqn_loss(
    q_net: nn.Module, target_net: nn.Module | None, batch: tuple[torch.Tensor, ...], gamma: float,
    *, huber: bool = True,
) -> torch.Tensor:
    """The DQN loss on a batch of transitions. Implements (value-approximation-dqn-loss).

    ``y = r + gamma (1 - done) max_a' Q(s', a'; theta^-)`` is computed with the target network
    (or with ``q_net`` itself, detached, when ``target_net`` is None) and no gradient flows
    through it; the loss is the mean of ``huber(y - Q(s, a; theta))`` (Huber with threshold 1,
    the error clipping of Mnih et al.) or of ``(y - Q(s, a; theta))^2 / 2`` with ``huber=False``.

    Args:
        q_net: maps states ``(B, state_dim)`` to action values ``(B, n_actions)``.
        target_net: the frozen copy, or None.
        batch: ``(s, a, r, s2, done)`` with shapes ``(B, state_dim)``, ``(B,)`` int64, ``(B,)``,
            ``(B, state_dim)``, ``(B,)`` (1 where ``s2`` is terminal).
        gamma: discount in ``[0, 1]``.

    Returns:
        A scalar tensor.
    """
    if not (isinstance(batch, (tuple, list)) and len(batch) == 5):
        raise ValueError("batch must be a tuple (s, a, r, s2, done)")
    s, a, r, s2, done = batch
    if not 0.0 <= gamma <= 1.0:
        raise ValueError(f"gamma must lie in [0, 1], got {gamma}")
    if a.dtype != torch.int64 or a.ndim != 1:
        raise ValueError(f"a must be an int64 tensor of shape (B,), got {a.dtype} {tuple(a.shape)}")
    q = q_net(s)
    if q.ndim != 2 or q.shape[0] != a.shape[0]:
        raise ValueError(f"q_net(s) must have shape (B, n_actions) = ({a.shape[0]}, A), got {tuple(q.shape)}")
    q_sa = q.gather(1, a[:, None])[:, 0]  # Q(s, a; theta), (B,)
    with torch.no_grad():
        q_next = (target_net if target_net is not None else q_net)(s2)  # (B, A)
        y = r + gamma * (1.0 - done) * q_next.max(dim=1).values  # the target, held fixed
    err = y - q_sa
    if huber:
        return torch.nn.functional.smooth_l1_loss(q_sa, y, beta=1.0)
    return 0.5 * (err**2).mean()


def train_dqn(
    task: PointMass,
    q_net: nn.Module,
    *,
    steps: int,
    n_envs: int = 4,
    batch_size: int = 64,
    lr: float = 1e-3,
    buffer_size: int = 20_000,
    replay: bool = True,
    target_update: int | None = 200,
    eps_start: float = 1.0,
    eps_end: float = 0.05,
    eps_decay_frac: float = 0.5,
    learning_starts: int = 200,
    generator: torch.Generator | None = None,
    snapshot_every: int | None = None,
    progress: bool = False,
) -> dict[str, Any]:
    """Train ``q_net`` in place with DQN on ``task``. Implements (value-approximation-dqn-loss).

    Each iteration: ``n_envs`` parallel episodes take one epsilon-greedy step each (epsilon
    decays linearly from ``eps_start`` to ``eps_end`` over the first ``eps_decay_frac`` of the
    iterations), the transitions go into the buffer, and one Adam step is taken on
    :func:`dqn_loss`. An episode that reaches ``task.horizon`` steps restarts (a truncation:
    ``done = 0``, the target still bootstraps).

    Args:
        steps: iterations (= gradient steps once ``learning_starts`` transitions are stored).
        replay: sample minibatches uniformly from a buffer of ``buffer_size``; if False, train on
            the ``batch_size`` most recent transitions only (the "no replay" ablation).
        target_update: copy ``q_net`` into the target network every this many gradient steps;
            None means no target network (the target uses ``q_net`` itself).
        snapshot_every: keep a copy of ``q_net``'s state every this many iterations.

    Returns:
        ``{"loss": list of losses, "snapshots": list of (iteration, state_dict)}``.
    """
    if not isinstance(task, PointMass):
        raise TypeError(f"task must be a PointMass, got {type(task).__name__}")
    for name, val in (("steps", steps), ("n_envs", n_envs), ("batch_size", batch_size), ("buffer_size", buffer_size)):
        if not isinstance(val, int) or val < 1:
            raise ValueError(f"{name} must be a positive int, got {val!r}")
    if target_update is not None and (not isinstance(target_update, int) or target_update < 1):
        raise ValueError(f"target_update must be a positive int or None, got {target_update!r}")
    if not (0.0 <= eps_end <= 1.0 and 0.0 <= eps_start <= 1.0 and 0.0 < eps_decay_frac <= 1.0):
        raise ValueError("eps_start and eps_end must lie in [0, 1] and eps_decay_frac in (0, 1]")
    param = next(q_net.parameters())
    device, dtype = param.device, param.dtype
    buf = ReplayBuffer(buffer_size if replay else batch_size, task.state_dim, device=device, dtype=dtype)
    target_net = None
    if target_update is not None:
        target_net = copy.deepcopy(q_net)
        target_net.requires_grad_(False)
    opt = torch.optim.Adam(q_net.parameters(), lr=lr)
    s = task.reset(n_envs, generator=generator, dtype=dtype).to(device)
    t_ep = 0
    losses: list[float] = []
    snapshots: list[tuple[int, dict[str, torch.Tensor]]] = []
    decay_iters = max(1, int(eps_decay_frac * steps))
    it_range = range(steps)
    if progress:
        from tqdm.auto import tqdm

        it_range = tqdm(it_range, desc="DQN", leave=False)
    n_updates = 0
    for it in it_range:
        if snapshot_every is not None and it % snapshot_every == 0:
            snapshots.append((it, {k: v.detach().clone() for k, v in q_net.state_dict().items()}))
        eps = eps_start + (eps_end - eps_start) * min(1.0, it / decay_iters)
        with torch.no_grad():
            greedy = q_net(s).argmax(dim=1)
        explore = torch.rand(n_envs, generator=generator).to(device) < eps
        random_a = torch.randint(task.n_actions, (n_envs,), generator=generator).to(device)
        a = torch.where(explore, random_a, greedy)
        s2, r = task.step(s, a)
        buf.add(s, a, r, s2, torch.zeros(n_envs, dtype=dtype, device=device))
        t_ep += 1
        if t_ep == task.horizon:  # truncation: start new episodes
            s2 = task.reset(n_envs, generator=generator, dtype=dtype).to(device)
            t_ep = 0
        s = s2
        if len(buf) < min(learning_starts, buf.capacity):
            continue
        batch = buf.sample(batch_size, generator=generator) if replay else buf.latest(batch_size)
        loss = dqn_loss(q_net, target_net, batch, task.gamma)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
        n_updates += 1
        if target_net is not None and n_updates % target_update == 0:
            target_net.load_state_dict(q_net.state_dict())
    if snapshot_every is not None:
        snapshots.append((steps, {k: v.detach().clone() for k, v in q_net.state_dict().items()}))
    return {"loss": losses, "snapshots": snapshots}
