"""Actor–critic methods: generalised advantage estimation, PPO with a learned critic, CartPole.

The chapter ``book/rl/actor-critic.md`` derives every equation named here.

Conventions (the same as the rest of the book's RL part):

* A rollout has ``T`` steps. ``rewards[t]`` is :math:`R_{t+1}`, the reward received after the
  action at step ``t``; ``values[t]`` is the critic's :math:`V(S_t)`, and ``values[T]`` is the
  bootstrap value of the state the rollout stopped in, so ``values`` has ``T + 1`` entries.
* ``dones[t]`` is true when the episode ended at step ``t`` (the transition out of ``S_t`` was its
  last). Then nothing is bootstrapped from ``values[t + 1]`` (which, in a vectorised environment
  that resets itself, is the value of the *next* episode's first state) and no advantage flows
  back across that boundary.
* Batched rollouts of ``B`` parallel environments have shape ``(T, B)``: time first.
* Tensors keep the device and dtype of their inputs.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn

from minilib._validate import float_tensor as _check_float
from minilib.alignment import ppo_clip_loss

__all__ = [
    "ActorCritic",
    "CartPole",
    "actor_critic_loss",
    "cartpole_step",
    "collect_rollout",
    "gae",
]


def _check_unit(name: str, x: Any) -> float:
    if isinstance(x, bool) or not isinstance(x, (int, float)):
        raise TypeError(f"{name} must be a real number in [0, 1], got {type(x).__name__}")
    x = float(x)
    if not 0.0 <= x <= 1.0:
        raise ValueError(f"{name} must lie in [0, 1], got {x}")
    return x


def gae(
    rewards: torch.Tensor, values: torch.Tensor, dones: torch.Tensor, gamma: float, lam: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """Generalised advantage estimates and the critic's regression targets for one rollout.

    Implements (actor-critic-td-error) and (actor-critic-gae-recursion):
    :math:`\\delta_t = r_t + \\gamma (1 - d_t) V(s_{t+1}) - V(s_t)` and, backwards from the end,
    :math:`\\hat A_t = \\delta_t + \\gamma\\lambda (1 - d_t) \\hat A_{t+1}` with
    :math:`\\hat A_T = 0`, which unrolls to (actor-critic-gae)
    :math:`\\hat A_t = \\sum_{l \\ge 0} (\\gamma\\lambda)^l \\delta_{t+l}`, the sum stopping at the
    end of the episode or of the rollout. ``lam = 0`` gives the one-step TD errors and ``lam = 1``
    the (bootstrapped) Monte Carlo return minus the value. The returns are
    :math:`\\hat A_t + V(s_t)`, the :math:`\\lambda`-return targets of (actor-critic-lambda-return).

    All inputs are detached: advantages and returns are targets, not functions of the parameters.

    Args:
        rewards: ``(T,)`` or ``(T, B)`` float tensor; ``rewards[t]`` follows the action at step ``t``.
        values: ``(T + 1,)`` or ``(T + 1, B)``, the same dtype and device; ``values[T]`` is the
            bootstrap value :math:`V(s_T)` (use 0 if the rollout ended with a terminal state).
        dones: ``(T,)`` or ``(T, B)``, boolean or 0/1 numbers: ``dones[t]`` means the episode
            ended at step ``t``.
        gamma: discount :math:`\\gamma \\in [0, 1]`.
        lam: :math:`\\lambda \\in [0, 1]`.

    Returns:
        ``(advantages, returns)``, each the shape, dtype and device of ``rewards``.

    Raises:
        TypeError: on non-tensors, non-float rewards/values, non-number ``gamma``/``lam``.
        ValueError: on mismatched shapes, dtypes or devices, ``dones`` not boolean/0-1, or
            ``gamma``/``lam`` outside ``[0, 1]``.

    >>> r = torch.tensor([1.0, 1.0, 1.0])
    >>> v = torch.zeros(4)
    >>> adv, ret = gae(r, v, torch.tensor([False, False, True]), gamma=0.5, lam=1.0)
    >>> ret.tolist()  # Monte Carlo returns 1 + 0.5 + 0.25, 1 + 0.5, 1
    [1.75, 1.5, 1.0]
    """
    _check_float("rewards", rewards)
    _check_float("values", values)
    if not isinstance(dones, torch.Tensor):
        raise TypeError(f"dones must be a torch.Tensor, got {type(dones).__name__}")
    gamma = _check_unit("gamma", gamma)
    lam = _check_unit("lam", lam)
    if rewards.dim() not in (1, 2) or rewards.shape[0] == 0:
        raise ValueError(f"rewards must have shape (T,) or (T, B) with T >= 1, got {tuple(rewards.shape)}")
    T = rewards.shape[0]
    if values.shape != (T + 1, *rewards.shape[1:]):
        raise ValueError(
            f"values must have shape {(T + 1, *rewards.shape[1:])} (one more step than rewards: the "
            f"bootstrap value V(s_T) comes last), got {tuple(values.shape)}"
        )
    if values.dtype != rewards.dtype or values.device != rewards.device:
        raise ValueError(
            f"values must have the dtype and device of rewards ({rewards.dtype}, {rewards.device}), "
            f"got ({values.dtype}, {values.device})"
        )
    if dones.shape != rewards.shape:
        raise ValueError(f"dones must have the shape of rewards {tuple(rewards.shape)}, got {tuple(dones.shape)}")
    if dones.device != rewards.device:
        raise ValueError(f"dones must be on the device of rewards ({rewards.device}), got {dones.device}")
    if dones.dtype != torch.bool:
        if dones.is_complex() or not ((dones == 0) | (dones == 1)).all():
            raise ValueError("dones must be boolean or hold only 0 and 1 (1 = the episode ended at that step)")
    rewards, values = rewards.detach(), values.detach()
    live = 1.0 - dones.detach().to(rewards.dtype)  # (T, ...) 0 where an episode ended
    # (actor-critic-td-error): no bootstrap from values[t + 1] across an episode's end
    deltas = rewards + gamma * live * values[1:] - values[:-1]
    adv = torch.empty_like(rewards)
    acc = torch.zeros_like(rewards[0])
    for t in range(T - 1, -1, -1):  # (actor-critic-gae-recursion), cut at episode ends
        acc = deltas[t] + gamma * lam * live[t] * acc
        adv[t] = acc
    return adv, adv + values[:-1]


# --------------------------------------------------------------------------------------------
# CartPole (Barto, Sutton & Anderson 1983), vectorised
# --------------------------------------------------------------------------------------------

GRAVITY, CART_MASS, POLE_MASS, HALF_LENGTH, FORCE, TAU = 9.8, 1.0, 0.1, 0.5, 10.0, 0.02
X_LIMIT, ANGLE_LIMIT = 2.4, 12 * 2 * math.pi / 360


def cartpole_step(state: torch.Tensor, action: torch.Tensor) -> torch.Tensor:
    """One Euler step of the frictionless cart–pole, for a batch of states.

    Implements (actor-critic-cartpole): with the force :math:`F = \\pm 10` N (action 1 pushes
    right), total mass :math:`m = m_c + m_p` and pole half-length :math:`\\ell`,

    .. math::
        \\ddot\\theta = \\frac{g\\sin\\theta - \\cos\\theta\\,u}{\\ell\\,(4/3 - m_p\\cos^2\\theta / m)},
        \\quad u = \\frac{F + m_p \\ell \\dot\\theta^2 \\sin\\theta}{m},\\quad
        \\ddot x = u - \\frac{m_p \\ell\\, \\ddot\\theta \\cos\\theta}{m},

    then :math:`x \\leftarrow x + \\tau \\dot x`, :math:`\\dot x \\leftarrow \\dot x + \\tau\\ddot x`
    (and the same for :math:`\\theta`), with :math:`\\tau = 0.02` s: positions move with the *old*
    velocities. The constants are those of Barto, Sutton & Anderson (1983).

    Args:
        state: ``(..., 4)`` float tensor :math:`(x, \\dot x, \\theta, \\dot\\theta)`, with
            :math:`\\theta = 0` upright and positive to the right.
        action: ``(...)`` integer tensor of 0 (push left) or 1 (push right).

    Returns:
        ``(..., 4)`` the next state, same dtype and device.

    >>> s = cartpole_step(torch.zeros(4, dtype=torch.float64), torch.tensor(1))
    >>> [round(v, 4) for v in s.tolist()]  # a push right: the cart speeds up, the pole tips left
    [0.0, 0.1951, 0.0, -0.2927]
    """
    _check_float("state", state)
    if not isinstance(action, torch.Tensor) or action.is_floating_point() or action.is_complex():
        raise TypeError("action must be an integer or boolean torch.Tensor of 0/1")
    if state.shape[-1:] != (4,) or action.shape != state.shape[:-1]:
        raise ValueError(f"state must be (..., 4) and action (...); got {tuple(state.shape)} and {tuple(action.shape)}")
    if not ((action == 0) | (action == 1)).all():
        raise ValueError("action must hold only 0 (left) and 1 (right)")
    x, x_dot, th, th_dot = state.unbind(-1)
    force = torch.where(action.bool(), FORCE, -FORCE).to(state.dtype)
    total = CART_MASS + POLE_MASS
    cos, sin = torch.cos(th), torch.sin(th)
    u = (force + POLE_MASS * HALF_LENGTH * th_dot**2 * sin) / total
    th_acc = (GRAVITY * sin - cos * u) / (HALF_LENGTH * (4.0 / 3.0 - POLE_MASS * cos**2 / total))
    x_acc = u - POLE_MASS * HALF_LENGTH * th_acc * cos / total
    return torch.stack([x + TAU * x_dot, x_dot + TAU * x_acc, th + TAU * th_dot, th_dot + TAU * th_acc], -1)


class CartPole:
    """``n`` cart–poles stepped together; an episode ends when the pole falls or time runs out.

    Reward 1 per step (the last one included). An episode *terminates* when
    :math:`|x| > 2.4` m or :math:`|\\theta| > 12°`, and is *truncated* after ``max_steps``
    steps. Ended environments restart at once from a uniform draw in
    :math:`[-0.05, 0.05]^4`, so :meth:`step` always returns a live state.

    Args:
        n: number of parallel environments.
        max_steps: the time limit.
        generator: a ``torch.Generator`` for the start states (reproducible runs).
        dtype, device: of the state tensors.

    >>> env = CartPole(3, generator=torch.Generator().manual_seed(0))
    >>> obs = env.reset()
    >>> obs.shape, bool(obs.abs().max() <= 0.05)
    (torch.Size([3, 4]), True)
    """

    def __init__(
        self,
        n: int,
        *,
        max_steps: int = 200,
        generator: torch.Generator | None = None,
        dtype: torch.dtype = torch.float32,
        device: torch.device | str | None = None,
    ) -> None:
        if isinstance(n, bool) or not isinstance(n, int) or n < 1:
            raise ValueError(f"n must be a positive int, got {n!r}")
        if isinstance(max_steps, bool) or not isinstance(max_steps, int) or max_steps < 1:
            raise ValueError(f"max_steps must be a positive int, got {max_steps!r}")
        self.n, self.max_steps, self.generator = n, max_steps, generator
        self.dtype, self.device = dtype, torch.device(device) if device is not None else torch.device("cpu")
        self.state = torch.zeros(n, 4, dtype=dtype, device=self.device)
        self.t = torch.zeros(n, dtype=torch.long, device=self.device)

    def _starts(self, k: int) -> torch.Tensor:
        u = torch.rand(k, 4, generator=self.generator, dtype=self.dtype)
        return (0.1 * u - 0.05).to(self.device)

    def reset(self) -> torch.Tensor:
        """Restart every environment; returns the ``(n, 4)`` start states."""
        self.state = self._starts(self.n)
        self.t.zero_()
        return self.state.clone()

    def step(self, action: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """Apply ``action`` (``(n,)`` of 0/1) to every environment.

        Returns:
            ``(obs, reward, terminated, truncated, final_obs)``: the next observations
            ``(n, 4)`` (a fresh start state where an episode ended), rewards ``(n,)``, the two
            boolean ``(n,)`` end flags, and ``final_obs`` ``(n, 4)``, the state each
            environment reached before any restart (needed to bootstrap a truncated episode).
        """
        nxt = cartpole_step(self.state, action)
        self.t += 1
        terminated = (nxt[:, 0].abs() > X_LIMIT) | (nxt[:, 2].abs() > ANGLE_LIMIT)
        truncated = (self.t >= self.max_steps) & ~terminated
        reward = torch.ones(self.n, dtype=self.dtype, device=self.device)
        done = terminated | truncated
        self.state = nxt.clone()
        if done.any():
            self.state[done] = self._starts(int(done.sum()))
            self.t[done] = 0
        return self.state.clone(), reward, terminated, truncated, nxt


# --------------------------------------------------------------------------------------------
# The agent, a rollout, and the PPO loss with a critic
# --------------------------------------------------------------------------------------------


class ActorCritic(nn.Module):
    """Two small MLPs: the actor's logits :math:`z_\\theta(s)` and the critic's :math:`V_w(s)`.

    Separate networks (no shared trunk), so the critic's regression cannot disturb the policy's
    features. The actor's last layer starts small, so the initial policy is near uniform.

    Args:
        obs_dim: size of an observation.
        n_actions: number of discrete actions.
        hidden: width of the two hidden layers of each network.

    >>> net = ActorCritic(4, 2)
    >>> logits, v = net(torch.zeros(5, 4))
    >>> logits.shape, v.shape
    (torch.Size([5, 2]), torch.Size([5]))
    """

    def __init__(self, obs_dim: int, n_actions: int, hidden: int = 64) -> None:
        super().__init__()
        for name, val in (("obs_dim", obs_dim), ("n_actions", n_actions), ("hidden", hidden)):
            if isinstance(val, bool) or not isinstance(val, int) or val < 1:
                raise ValueError(f"{name} must be a positive int, got {val!r}")

        def mlp(out: int) -> nn.Sequential:
            return nn.Sequential(nn.Linear(obs_dim, hidden), nn.Tanh(), nn.Linear(hidden, hidden), nn.Tanh(), nn.Linear(hidden, out))

        self.actor, self.critic = mlp(n_actions), mlp(1)
        with torch.no_grad():
            self.actor[-1].weight.mul_(0.01)
            self.actor[-1].bias.zero_()

    def forward(self, obs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``obs`` ``(..., obs_dim)`` -> (logits ``(..., n_actions)``, values ``(...)``)."""
        return self.actor(obs), self.critic(obs).squeeze(-1)


def collect_rollout(
    env: CartPole, model: ActorCritic, obs: torch.Tensor, steps: int, *, gamma: float, generator: torch.Generator | None = None
) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    """Run the current policy for ``steps`` steps in every environment of ``env``.

    A *truncated* episode (time limit) did not really end: its return continues. We fold the
    bootstrap :math:`\\gamma V(s_{\\text{final}})` into that step's reward and mark the step done,
    which is (actor-critic-truncation); a *terminated* one bootstraps nothing.

    Returns:
        ``(batch, obs)``: ``batch`` holds ``obs`` ``(T, n, 4)``, ``actions`` ``(T, n)``, ``logp``
        (of the taken actions), ``rewards``, ``dones`` ``(T, n)`` and ``values`` ``(T + 1, n)``
        (the last row is the bootstrap value), all detached; ``obs`` is the state to continue
        from. Also ``episode_returns``, a 1-D tensor of the undiscounted returns of the episodes
        that ended during the rollout.
    """
    gamma = _check_unit("gamma", gamma)
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise ValueError(f"steps must be a positive int, got {steps!r}")
    O, A, L, R, D, V = [], [], [], [], [], []
    finished = []
    if not hasattr(env, "_running"):
        env._running = torch.zeros(env.n, dtype=env.dtype, device=env.device)
    with torch.no_grad():
        for _ in range(steps):
            logits, v = model(obs)
            a = torch.multinomial(torch.softmax(logits, -1), 1, generator=generator)[:, 0]
            nxt, r, term, trunc, final = env.step(a)
            env._running += r
            done = term | trunc
            if done.any():
                finished.append(env._running[done].clone())
                env._running[done] = 0.0
            if trunc.any():  # (actor-critic-truncation): the return goes on past the time limit
                r = r + gamma * trunc.to(r.dtype) * model(final)[1]
            O.append(obs), A.append(a), L.append(torch.log_softmax(logits, -1).gather(-1, a[:, None])[:, 0])
            R.append(r), D.append(done), V.append(v)
            obs = nxt
        V.append(model(obs)[1])
    batch = {k: torch.stack(x) for k, x in zip(("obs", "actions", "logp", "rewards", "dones", "values"), (O, A, L, R, D, V))}
    batch["episode_returns"] = torch.cat(finished) if finished else torch.zeros(0, dtype=env.dtype, device=env.device)
    return batch, obs


def actor_critic_loss(
    logits: torch.Tensor,
    values: torch.Tensor,
    actions: torch.Tensor,
    old_logp: torch.Tensor,
    advantages: torch.Tensor,
    returns: torch.Tensor,
    *,
    clip: float | None = 0.2,
    value_coef: float = 0.5,
    entropy_coef: float = 0.01,
) -> tuple[torch.Tensor, dict[str, float]]:
    """PPO's combined loss with a learned critic (or the advantage actor–critic loss if ``clip=None``).

    Implements (actor-critic-ppo-loss): the mean of
    :math:`-\\min(\\rho \\hat A, \\operatorname{clip}(\\rho, 1\\pm\\epsilon)\\hat A)`
    (from :func:`minilib.alignment.ppo_clip_loss`) plus ``value_coef`` times the mean of
    :math:`(V_w(s) - \\hat G^\\lambda)^2` minus ``entropy_coef`` times the mean policy entropy.
    With ``clip=None`` the policy term is :math:`-\\hat A \\log\\pi_\\theta(a\\mid s)`, the
    actor–critic gradient (actor-critic-a2c) (at the data-collecting policy the two have the
    same gradient).

    Args:
        logits: ``(N, A)`` current actor logits; values: ``(N,)`` current critic outputs.
        actions: ``(N,)`` long; old_logp, advantages, returns: ``(N,)`` from the rollout.
        clip: PPO's :math:`\\epsilon`, or ``None`` for the unclipped actor–critic loss.
        value_coef, entropy_coef: non-negative weights.

    Returns:
        ``(loss, stats)`` with the scalar loss to minimise and the float value of each term.
    """
    for name, t in (("logits", logits), ("values", values), ("old_logp", old_logp), ("advantages", advantages), ("returns", returns)):
        _check_float(name, t)
    if logits.dim() != 2 or any(t.shape != logits.shape[:1] for t in (values, actions, old_logp, advantages, returns)):
        raise ValueError("logits must be (N, A) and values, actions, old_logp, advantages, returns all (N,)")
    if value_coef < 0 or entropy_coef < 0:
        raise ValueError(f"value_coef and entropy_coef must be non-negative, got {value_coef}, {entropy_coef}")
    logp_all = torch.log_softmax(logits, -1)
    logp = logp_all.gather(-1, actions[:, None])[:, 0]
    if clip is None:
        policy = (-advantages.detach() * logp).mean()
    else:
        policy = ppo_clip_loss(logp, old_logp, advantages, clip=clip).mean()
    value = ((values - returns.detach()) ** 2).mean()
    entropy = -(logp_all.exp() * logp_all).sum(-1).mean()
    loss = policy + value_coef * value - entropy_coef * entropy
    return loss, {"policy": policy.item(), "value": value.item(), "entropy": entropy.item()}
