"""Flows: coupling layers, ODE integration, flow matching and rectified flow.

The chapters of the part "Flows and beyond" build on each other: a normalizing flow is a
stack of invertible maps (``AffineCoupling``), a continuous normalizing flow is the limit of
infinitely many small ones (``odeint`` and ``divergence``), flow matching trains its velocity
field by regression (``cfm_pair``), and rectified flow straightens it (``straightness``).

Convention: in this part time runs from **noise at t = 0** to **data at t = 1**, as in the
flow-matching literature. (The diffusion part runs the other way.) A normalizing flow's
``forward`` maps data to noise (the "normalizing" direction) and its ``inverse`` generates.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch
from torch import nn

from minilib._validate import float_tensor as _float_tensor

__all__ = [
    "AffineCoupling",
    "Inverted",
    "Invertible1x1Conv",
    "MaskedAffineAutoregressive",
    "assignment",
    "cfm_pair",
    "cnf_log_prob",
    "divergence",
    "empirical_fm_velocity",
    "flow_log_prob",
    "flow_sample",
    "fm_sde_sample",
    "gaussian_fm_velocity",
    "logit_normal_times",
    "minibatch_ot_pair",
    "odeint",
    "path_coefficients",
    "score_from_velocity",
    "straightness",
    "velocity_from_score",
]

#: An ODE state: one tensor, or a tuple of tensors integrated together (an augmented state).
State = torch.Tensor | tuple[torch.Tensor, ...]

_METHODS = ("euler", "midpoint", "heun", "rk4")
_PATHS = ("condot", "vp")


def _check_pos_int(n: object, name: str) -> int:
    if not isinstance(n, int) or isinstance(n, bool):
        raise TypeError(f"{name} must be an int, got {type(n).__name__}")
    if n < 1:
        raise ValueError(f"{name} must be a positive int, got {n}")
    return n


def _check_real(v: object, name: str) -> float:
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        raise TypeError(f"{name} must be a real number, got {type(v).__name__}")
    if not math.isfinite(v):
        raise ValueError(f"{name} must be finite, got {v}")
    return float(v)


# --------------------------------------------------------------------------------------------
# Normalizing flows
# --------------------------------------------------------------------------------------------


class AffineCoupling(nn.Module):
    """An affine coupling layer (RealNVP): half the coordinates rescale and shift the rest.

    With a binary ``mask`` :math:`m` (1 = coordinate passes through unchanged), the forward
    map is :math:`y = m \\odot x + (1-m) \\odot \\big(x \\odot e^{s(m \\odot x)} + b(m \\odot x)\\big)`,
    and :math:`\\log|\\det \\partial y/\\partial x| = \\sum_i (1-m_i)\\,s_i(m \\odot x)`.
    The conditioner is an MLP whose last layer starts at zero, so a fresh layer is the
    identity. The log-scale is bounded, :math:`s = a \\tanh(\\cdot)` with a learnable
    :math:`a` per coordinate, which keeps training stable.
    Implements (normalizing-flows-coupling), (normalizing-flows-coupling-inverse) and (normalizing-flows-coupling-logdet).

    Args:
        mask: tensor of shape ``(d,)`` holding only 0s and 1s, at least one of each.
        hidden: width of the conditioner's hidden layers.
        n_hidden: number of hidden layers of the conditioner (at least 1).

    Raises:
        TypeError: if ``mask`` is not a tensor or ``hidden``/``n_hidden`` are not ints.
        ValueError: if ``mask`` is not 1-D, not binary, or all 0s or all 1s.

    >>> layer = AffineCoupling(torch.tensor([1.0, 0.0]))
    >>> x = torch.randn(5, 2)
    >>> y, logdet = layer(x)
    >>> torch.allclose(layer.inverse(y)[0], x), logdet.shape
    (True, torch.Size([5]))
    """

    def __init__(self, mask: torch.Tensor, hidden: int = 64, n_hidden: int = 2) -> None:
        super().__init__()
        if not isinstance(mask, torch.Tensor):
            raise TypeError(f"mask must be a torch.Tensor, got {type(mask).__name__}")
        if mask.ndim != 1:
            raise ValueError(f"mask must have shape (d,), got {tuple(mask.shape)}")
        if not bool(((mask == 0) | (mask == 1)).all()):
            raise ValueError("mask must hold only 0s and 1s")
        if bool((mask == 0).all()) or bool((mask == 1).all()):
            raise ValueError("mask must hold at least one 0 and at least one 1")
        _check_pos_int(hidden, "hidden")
        _check_pos_int(n_hidden, "n_hidden")
        d = mask.numel()
        self.dim = d
        self.register_buffer("mask", mask.to(torch.get_default_dtype()))
        layers: list[nn.Module] = [nn.Linear(d, hidden), nn.SiLU()]
        for _ in range(n_hidden - 1):
            layers += [nn.Linear(hidden, hidden), nn.SiLU()]
        last = nn.Linear(hidden, 2 * d)
        nn.init.zeros_(last.weight)  # start as the identity map
        nn.init.zeros_(last.bias)
        self.net = nn.Sequential(*layers, last)
        self.log_scale_bound = nn.Parameter(torch.ones(d))

    def _check_input(self, x: object, name: str) -> torch.Tensor:
        x = _float_tensor(name, x)
        if x.ndim != 2 or x.shape[1] != self.dim:
            raise ValueError(f"{name} must have shape (B, {self.dim}), got {tuple(x.shape)}")
        return x

    def _scale_shift(self, x_cond: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        s_raw, b = self.net(x_cond).chunk(2, dim=-1)  # (B, d) each
        keep = 1 - self.mask
        # only the transformed coordinates (mask 0) get a scale and a shift
        s = keep * self.log_scale_bound * torch.tanh(s_raw)
        return s, keep * b

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Map ``x`` (B, d) to ``(y, logdet)``, logdet = log|det dy/dx| of shape (B,)."""
        x = self._check_input(x, "x")
        s, b = self._scale_shift(self.mask * x)
        y = x * torch.exp(s) + b  # s = b = 0 on the pass-through coordinates
        return y, s.sum(dim=-1)

    def inverse(self, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Map ``y`` (B, d) back to ``(x, logdet)``, logdet = log|det dx/dy| = -forward's."""
        y = self._check_input(y, "y")
        # m * y = m * x, so the conditioner sees exactly what it saw in forward
        s, b = self._scale_shift(self.mask * y)
        x = (y - b) * torch.exp(-s)
        return x, -s.sum(dim=-1)


def _check_layers(layers: object) -> list[nn.Module]:
    if isinstance(layers, nn.Module) and not isinstance(layers, (nn.ModuleList, nn.Sequential)):
        raise TypeError("layers must be a sequence of flow layers (e.g. nn.ModuleList), not one module")
    if not isinstance(layers, (Sequence, nn.ModuleList, nn.Sequential)):
        raise TypeError(f"layers must be a sequence of flow layers, got {type(layers).__name__}")
    layers = list(layers)
    if not layers:
        raise ValueError("layers must hold at least one layer")
    for i, layer in enumerate(layers):
        if not (callable(layer) and hasattr(layer, "inverse")):
            raise TypeError(f"layers[{i}] must be callable and have an inverse method")
    return layers


def _std_normal_log_prob(z: torch.Tensor) -> torch.Tensor:
    d = z.shape[-1]
    return -0.5 * (z**2).sum(dim=-1) - 0.5 * d * math.log(2 * math.pi)


def flow_log_prob(layers: Sequence[nn.Module], x: torch.Tensor) -> torch.Tensor:
    """Log-density of ``x`` under a stack of flow layers on a standard normal base.

    Runs ``z = f_K(... f_1(x))`` through each layer's ``forward`` (data -> noise) and adds
    the log-determinants to the base log-density, :math:`\\log p(x) = \\log \\mathcal{N}(z; 0, I)
    + \\sum_k \\log|\\det J_{f_k}|`. Implements (normalizing-flows-composition).

    Args:
        layers: a sequence (list, ``nn.ModuleList``) of layers whose ``forward(x)`` returns
            ``(y, logdet)`` with logdet of shape (B,), and which have an ``inverse``.
        x: data of shape (B, d), floating.

    Returns:
        Tensor of shape (B,): the log-density of each row.

    Raises:
        TypeError: if ``layers`` is not a sequence of flow layers or ``x`` is not a float tensor.
        ValueError: if ``layers`` is empty or ``x`` is not 2-D.

    >>> layers = [AffineCoupling(torch.tensor([1.0, 0.0]))]  # identity at init
    >>> x = torch.zeros(1, 2)
    >>> round(flow_log_prob(layers, x).item(), 4) == round(-math.log(2 * math.pi), 4)
    True
    """
    layers = _check_layers(layers)
    x = _float_tensor("x", x)
    if x.ndim != 2:
        raise ValueError(f"x must have shape (B, d), got {tuple(x.shape)}")
    z, total = x, torch.zeros(x.shape[0], device=x.device, dtype=x.dtype)
    for layer in layers:
        z, logdet = layer(z)
        total = total + logdet
    return _std_normal_log_prob(z) + total


def flow_sample(layers: Sequence[nn.Module], z: torch.Tensor) -> torch.Tensor:
    """Generate: push base samples ``z`` (B, d) back through the inverses, last layer first.

    Args:
        layers: as in :func:`flow_log_prob`.
        z: base (noise) samples of shape (B, d).

    Returns:
        Tensor of shape (B, d): :math:`f_1^{-1}(\\cdots f_K^{-1}(z))`.

    Raises:
        TypeError, ValueError: as in :func:`flow_log_prob`.
    """
    layers = _check_layers(layers)
    z = _float_tensor("z", z)
    if z.ndim != 2:
        raise ValueError(f"z must have shape (B, d), got {tuple(z.shape)}")
    x = z
    for layer in reversed(layers):
        x, _ = layer.inverse(x)
    return x


# --------------------------------------------------------------------------------------------
# ODEs and continuous normalizing flows
# --------------------------------------------------------------------------------------------


def _lin(x: State, h: float, k: State) -> State:
    """x + h * k for a tensor or a tuple of tensors."""
    if isinstance(x, tuple):
        return tuple(xi + h * ki for xi, ki in zip(x, k))
    return x + h * k


def _combo(x: State, h: float, ks: Sequence[State], ws: Sequence[float]) -> State:
    """x + h * sum_j w_j k_j for a tensor or a tuple of tensors."""
    if isinstance(x, tuple):
        return tuple(xi + h * sum(w * k[i] for w, k in zip(ws, ks)) for i, xi in enumerate(x))
    return x + h * sum(w * k for w, k in zip(ws, ks))


def _shapes(x: State) -> list[tuple[int, ...]]:
    return [tuple(t.shape) for t in x] if isinstance(x, tuple) else [tuple(x.shape)]


def odeint(
    f: Callable[[float, State], State],
    x0: State,
    *,
    t0: float = 0.0,
    t1: float = 1.0,
    steps: int,
    method: str = "euler",
    return_path: bool = False,
) -> State:
    """Integrate ``dx/dt = f(t, x)`` from ``t0`` to ``t1`` with a fixed-step method.

    The state may be one tensor or a **tuple of tensors** integrated together, e.g.
    ``(x, delta_logp)`` for a continuous normalizing flow (see :func:`cnf_log_prob`); ``f``
    then returns a tuple of the same shapes. ``t1 < t0`` integrates backwards (negative step).
    The step is ``h = (t1 - t0) / steps``. Methods and their global error orders: ``euler``
    (1), ``midpoint`` (2), ``heun`` (2, the explicit trapezoid), ``rk4`` (4, classical
    Runge-Kutta). Implements (cnf-euler), (cnf-midpoint), (cnf-heun) and (cnf-rk4).

    Args:
        f: the velocity, called as ``f(t, x)`` with ``t`` a Python float and ``x`` the state.
        x0: the initial state, a floating tensor or a non-empty tuple of floating tensors.
        t0: start time. In this part t = 0 is noise and t = 1 is data.
        t1: end time.
        steps: number of steps, a positive int (``f`` is evaluated 1, 2, 2 or 4 times per step).
        method: ``"euler"``, ``"midpoint"``, ``"heun"`` or ``"rk4"``.
        return_path: if True, also return every intermediate state.

    Returns:
        The state at ``t1`` (same structure as ``x0``). With ``return_path=True``, the states
        at the ``steps + 1`` grid times stacked on a new leading axis: a tensor of shape
        ``(steps + 1, *x0.shape)`` (or a tuple of such tensors).

    Raises:
        TypeError: if ``f`` is not callable, ``x0`` is not a float tensor (or tuple of them),
            or ``steps`` is not an int.
        ValueError: if ``steps < 1``, ``method`` is unknown, the times are not finite, or ``f``
            returns a state of another shape.

    >>> x1 = odeint(lambda t, x: -x, torch.ones(1, dtype=torch.float64), steps=100, method="rk4")
    >>> abs(x1.item() - math.exp(-1)) < 1e-9
    True
    """
    if not callable(f):
        raise TypeError(f"f must be callable as f(t, x), got {type(f).__name__}")
    if isinstance(x0, tuple):
        if not x0:
            raise ValueError("x0 must be a tensor or a non-empty tuple of tensors")
        for i, xi in enumerate(x0):
            _float_tensor(f"x0[{i}]", xi)
    else:
        _float_tensor("x0", x0)
    t0 = _check_real(t0, "t0")
    t1 = _check_real(t1, "t1")
    _check_pos_int(steps, "steps")
    if method not in _METHODS:
        raise ValueError(f"method must be one of {_METHODS}, got {method!r}")
    if not isinstance(return_path, bool):
        raise TypeError(f"return_path must be a bool, got {type(return_path).__name__}")

    want = _shapes(x0)

    def call(t: float, x: State) -> State:
        k = f(t, x)
        if isinstance(x0, tuple) != isinstance(k, tuple) or _shapes(k) != want:
            raise ValueError(f"f(t, x) must return a state shaped like x0 {want}, got {_shapes(k)}")
        return k

    h = (t1 - t0) / steps
    x = x0
    path = [x0]
    for n in range(steps):
        t = t0 + n * h
        if method == "euler":
            x = _lin(x, h, call(t, x))
        elif method == "midpoint":
            k1 = call(t, x)
            x = _lin(x, h, call(t + h / 2, _lin(x, h / 2, k1)))
        elif method == "heun":
            k1 = call(t, x)
            k2 = call(t + h, _lin(x, h, k1))
            x = _combo(x, h, (k1, k2), (0.5, 0.5))
        else:  # rk4
            k1 = call(t, x)
            k2 = call(t + h / 2, _lin(x, h / 2, k1))
            k3 = call(t + h / 2, _lin(x, h / 2, k2))
            k4 = call(t + h, _lin(x, h, k3))
            x = _combo(x, h, (k1, k2, k3, k4), (1 / 6, 1 / 3, 1 / 3, 1 / 6))
        if return_path:
            path.append(x)
    if not return_path:
        return x
    if isinstance(x0, tuple):
        return tuple(torch.stack([p[i] for p in path]) for i in range(len(x0)))
    return torch.stack(path)


def divergence(
    f: Callable[[float, torch.Tensor], torch.Tensor],
    t: float,
    x: torch.Tensor,
    *,
    method: str = "exact",
    n_probes: int = 1,
    generator: torch.Generator | None = None,
    create_graph: bool = False,
) -> torch.Tensor:
    """The divergence :math:`\\nabla_x \\cdot f(t, x) = \\operatorname{tr} \\partial f/\\partial x` per row.

    ``f`` must act on each row of ``x`` independently (as a batched network does), so that
    the Jacobian of the batch is block diagonal. ``"exact"`` takes one vector-Jacobian
    product per coordinate (d of them). ``"hutchinson"`` averages
    :math:`\\varepsilon^\\top (\\partial f/\\partial x)\\, \\varepsilon` over ``n_probes``
    Rademacher probes (entries ±1), one vector-Jacobian product each: unbiased, with variance
    :math:`2(\\lVert S\\rVert_F^2 - \\sum_i S_{ii}^2)/n_{\\text{probes}}` where
    :math:`S = (J + J^\\top)/2` is the symmetric part of the Jacobian :math:`J`.
    Implements (cnf-divergence-exact) and (cnf-hutchinson).

    Args:
        f: the velocity, called as ``f(t, x)`` with ``x`` of shape (B, d); returns (B, d).
        t: the time passed to ``f``.
        x: points of shape (B, d), floating.
        method: ``"exact"`` or ``"hutchinson"``.
        n_probes: number of probe vectors for Hutchinson (ignored by ``"exact"``).
        generator: a ``torch.Generator`` for the probes (on ``x``'s device), for reproducibility.
        create_graph: keep the graph so the result can be differentiated (training a CNF).

    Returns:
        Tensor of shape (B,).

    Raises:
        TypeError: if ``f`` is not callable, ``x`` is not a float tensor, or ``n_probes`` is
            not an int.
        ValueError: if ``x`` is not 2-D, ``method`` is unknown, ``n_probes < 1``, or ``f``
            returns another shape.

    >>> A = torch.tensor([[1.0, 2.0], [3.0, 4.0]])
    >>> divergence(lambda t, x: x @ A.T, 0.0, torch.randn(3, 2))
    tensor([5., 5., 5.])
    """
    if not callable(f):
        raise TypeError(f"f must be callable as f(t, x), got {type(f).__name__}")
    x = _float_tensor("x", x)
    if x.ndim != 2:
        raise ValueError(f"x must have shape (B, d), got {tuple(x.shape)}")
    if method not in ("exact", "hutchinson"):
        raise ValueError(f"method must be 'exact' or 'hutchinson', got {method!r}")
    _check_pos_int(n_probes, "n_probes")
    if generator is not None and not isinstance(generator, torch.Generator):
        raise TypeError(f"generator must be a torch.Generator or None, got {type(generator).__name__}")
    with torch.enable_grad():
        if not x.requires_grad:
            x = x.detach().requires_grad_(True)
        fx = f(t, x)
        if not isinstance(fx, torch.Tensor) or fx.shape != x.shape:
            got = tuple(fx.shape) if isinstance(fx, torch.Tensor) else type(fx).__name__
            raise ValueError(f"f(t, x) must return a tensor of shape {tuple(x.shape)}, got {got}")
        return _divergence_of(fx, x, method, n_probes, generator, create_graph)


def _divergence_of(fx: torch.Tensor, x: torch.Tensor, method: str, n_probes: int,
                   generator: torch.Generator | None, create_graph: bool) -> torch.Tensor:
    """Trace of d fx / d x per row, for fx computed from x (which requires grad)."""
    if method == "exact":
        div = torch.zeros(x.shape[0], device=x.device, dtype=x.dtype)
        for i in range(x.shape[1]):
            # row b of the gradient is d f_i(x_b) / d x_b, since rows do not interact
            (g,) = torch.autograd.grad(fx[:, i].sum(), x, create_graph=create_graph, retain_graph=True)
            div = div + g[:, i]
        return div
    est = torch.zeros(x.shape[0], device=x.device, dtype=x.dtype)
    for _ in range(n_probes):
        # Rademacher probe: entries +1 or -1 with probability 1/2 each
        bits = torch.randint(0, 2, x.shape, generator=generator, device=x.device)
        eps = (2 * bits - 1).to(x.dtype)
        (eps_j,) = torch.autograd.grad((fx * eps).sum(), x, create_graph=create_graph, retain_graph=True)
        est = est + (eps_j * eps).sum(dim=-1)  # eps^T J eps per row
    return est / n_probes


def cnf_log_prob(
    f: Callable[[float, torch.Tensor], torch.Tensor],
    x1: torch.Tensor,
    *,
    steps: int,
    method: str = "rk4",
    divergence_method: str = "exact",
    n_probes: int = 1,
    generator: torch.Generator | None = None,
    create_graph: bool = False,
) -> torch.Tensor:
    """Log-density of data ``x1`` under a CNF whose base (t = 0) is a standard normal.

    Integrates the augmented state ``(x, a)`` backwards from t = 1 to t = 0 with
    ``dx/dt = f(t, x)`` and ``da/dt = div f(t, x)``, ``a(1) = 0``; then
    :math:`\\log p_1(x_1) = \\log \\mathcal{N}(x(0); 0, I) + a(0)`.
    Implements (cnf-augmented) and (cnf-logp-integral).

    Args:
        f: the velocity field, ``f(t, x)`` with ``x`` of shape (B, d).
        x1: data points of shape (B, d).
        steps: ODE steps (see :func:`odeint`).
        method: the ODE method (see :func:`odeint`).
        divergence_method: ``"exact"`` or ``"hutchinson"`` (see :func:`divergence`).
        n_probes: Hutchinson probes per divergence evaluation.
        generator: random generator for the probes.
        create_graph: keep the graph, to train by maximum likelihood.

    Returns:
        Tensor of shape (B,).

    Raises:
        TypeError, ValueError: as in :func:`odeint` and :func:`divergence`.
    """
    x1 = _float_tensor("x1", x1)
    if x1.ndim != 2:
        raise ValueError(f"x1 must have shape (B, d), got {tuple(x1.shape)}")

    if not callable(f):
        raise TypeError(f"f must be callable as f(t, x), got {type(f).__name__}")
    if divergence_method not in ("exact", "hutchinson"):
        raise ValueError(f"divergence_method must be 'exact' or 'hutchinson', got {divergence_method!r}")
    _check_pos_int(n_probes, "n_probes")

    def augmented(t: float, state: tuple[torch.Tensor, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        x, _ = state
        with torch.enable_grad():
            if not x.requires_grad:
                x = x.detach().requires_grad_(True)
            v = f(t, x)  # one evaluation serves both the velocity and its divergence
            if not isinstance(v, torch.Tensor) or v.shape != x.shape:
                raise ValueError(f"f(t, x) must return a tensor of shape {tuple(x.shape)}")
            div = _divergence_of(v, x, divergence_method, n_probes, generator, create_graph)
        if not create_graph:
            v, div = v.detach(), div.detach()
        return v, div

    a1 = torch.zeros(x1.shape[0], device=x1.device, dtype=x1.dtype)
    x0, a0 = odeint(augmented, (x1, a1), t0=1.0, t1=0.0, steps=steps, method=method)
    return _std_normal_log_prob(x0) + a0


# --------------------------------------------------------------------------------------------
# Flow matching
# --------------------------------------------------------------------------------------------


def _time_column(t: object, x: torch.Tensor, name: str = "t") -> torch.Tensor:
    """Reshape t of shape (B,) or (B, 1) to (B, 1, ..., 1) so it broadcasts over x's data dims."""
    t = _float_tensor(name, t)
    B = x.shape[0]
    if not (t.shape == (B,) or t.shape == (B, 1)):
        raise ValueError(f"{name} must have shape ({B},) or ({B}, 1), got {tuple(t.shape)}")
    return t.reshape(B, *([1] * (x.ndim - 1)))


def cfm_pair(x0: torch.Tensor, x1: torch.Tensor, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The point and the target velocity of the linear (CondOT) conditional path.

    :math:`x_t = (1-t)\\,x_0 + t\\,x_1` and :math:`u_t = x_1 - x_0`, with ``x0`` the noise
    (t = 0) and ``x1`` the data (t = 1). Implements (flow-matching-linear-path).

    Args:
        x0: source (noise) samples of shape (B, ...), floating.
        x1: target (data) samples, same shape as ``x0``.
        t: times of shape (B,) or (B, 1), broadcast over the data dimensions.

    Returns:
        ``(x_t, u_t)``, each of the shape of ``x0``.

    Raises:
        TypeError: if an argument is not a floating tensor.
        ValueError: if the shapes disagree or ``x0`` has no batch dimension.

    >>> x_t, u_t = cfm_pair(torch.zeros(2, 3), torch.ones(2, 3), torch.tensor([0.25, 1.0]))
    >>> x_t[:, 0].tolist(), u_t[0].tolist()
    ([0.25, 1.0], [1.0, 1.0, 1.0])
    """
    x0 = _float_tensor("x0", x0)
    x1 = _float_tensor("x1", x1)
    if x0.ndim < 1:
        raise ValueError("x0 must have a batch dimension, shape (B, ...)")
    if x0.shape != x1.shape:
        raise ValueError(f"x0 and x1 must have the same shape, got {tuple(x0.shape)} and {tuple(x1.shape)}")
    tc = _time_column(t, x0)  # (B, 1, ..., 1)
    return (1 - tc) * x0 + tc * x1, x1 - x0


def gaussian_fm_velocity(
    t: float | torch.Tensor, x: torch.Tensor, mean: torch.Tensor, std: float | torch.Tensor
) -> torch.Tensor:
    """The exact marginal velocity of the linear path from N(0, I) to N(mean, diag(std^2)).

    With independent :math:`x_0 \\sim \\mathcal{N}(0, I)` and :math:`x_1 \\sim \\mathcal{N}(\\mu,
    \\operatorname{diag} s^2)`, per coordinate
    :math:`u_t(x) = \\mu + \\frac{t s^2 - (1-t)}{(1-t)^2 + t^2 s^2}\\,(x - t\\mu)`; its flow maps
    :math:`x_0 \\mapsto \\mu + s \\odot x_0`. Implements (flow-matching-gaussian-velocity).

    Args:
        t: a time in [0, 1] (float), or a tensor of shape (B,) or (B, 1).
        x: points of shape (B, d).
        mean: the target mean, shape (d,).
        std: the target standard deviation, a positive float or a tensor of shape (d,).

    Returns:
        Tensor of shape (B, d).

    Raises:
        TypeError: if ``x`` or ``mean`` are not float tensors.
        ValueError: if shapes disagree, ``t`` is outside [0, 1] or ``std`` is not positive.

    >>> gaussian_fm_velocity(0.5, torch.zeros(1, 1), torch.zeros(1), 1.0)
    tensor([[0.]])
    """
    x = _float_tensor("x", x)
    mean = _float_tensor("mean", mean)
    if x.ndim != 2 or mean.shape != (x.shape[1],):
        raise ValueError(f"x must be (B, d) and mean (d,), got {tuple(x.shape)} and {tuple(mean.shape)}")
    if isinstance(std, torch.Tensor):
        _float_tensor("std", std)
        if std.shape != mean.shape:
            raise ValueError(f"std must be a float or have shape {tuple(mean.shape)}, got {tuple(std.shape)}")
        if not bool((std > 0).all()):
            raise ValueError("std must be positive")
    elif _check_real(std, "std") <= 0:
        raise ValueError(f"std must be positive, got {std}")
    if isinstance(t, torch.Tensor):
        tc = _time_column(t, x)
        if not bool(((tc >= 0) & (tc <= 1)).all()):
            raise ValueError("t must lie in [0, 1]")
    else:
        tc = _check_real(t, "t")
        if not 0 <= tc <= 1:
            raise ValueError(f"t must lie in [0, 1], got {t}")
    var_t = (1 - tc) ** 2 + tc**2 * std**2  # Var(x_t), per coordinate
    cov_t = tc * std**2 - (1 - tc)  # Cov(x_1 - x_0, x_t), per coordinate
    return mean + cov_t / var_t * (x - tc * mean)


def path_coefficients(t: torch.Tensor, path: str = "condot") -> tuple[torch.Tensor, ...]:
    """The coefficients of an affine Gaussian path :math:`x_t = \\alpha_t x_1 + \\sigma_t x_0`.

    ``"condot"``: :math:`\\alpha_t = t,\\ \\sigma_t = 1 - t`. ``"vp"`` (the cosine
    variance-preserving path): :math:`\\alpha_t = \\sin(\\pi t/2),\\ \\sigma_t = \\cos(\\pi t/2)`.
    Both go from noise at t = 0 to data at t = 1. Implements (flow-matching-affine-path).

    Args:
        t: times, a floating tensor of any shape, in [0, 1].
        path: ``"condot"`` or ``"vp"``.

    Returns:
        ``(alpha, sigma, dalpha, dsigma)``, each shaped like ``t``; the last two are time
        derivatives.

    Raises:
        TypeError: if ``t`` is not a floating tensor.
        ValueError: if ``path`` is unknown.

    >>> [c.item() for c in path_coefficients(torch.tensor(0.5))]
    [0.5, 0.5, 1.0, -1.0]
    """
    t = _float_tensor("t", t)
    if path not in _PATHS:
        raise ValueError(f"path must be one of {_PATHS}, got {path!r}")
    if path == "condot":
        return t, 1 - t, torch.ones_like(t), -torch.ones_like(t)
    half_pi = math.pi / 2
    return (torch.sin(half_pi * t), torch.cos(half_pi * t),
            half_pi * torch.cos(half_pi * t), -half_pi * torch.sin(half_pi * t))


def _conversion_inputs(field: object, x: object, t: object, name: str, path: str):
    field = _float_tensor(name, field)
    x = _float_tensor("x", x)
    if field.shape != x.shape or x.ndim < 1:
        raise ValueError(f"{name} and x must have the same shape (B, ...), got {tuple(field.shape)} and {tuple(x.shape)}")
    tc = _time_column(t, x)
    if not bool(((tc > 0) & (tc < 1)).all()):
        raise ValueError("t must lie strictly inside (0, 1): the conversion divides by alpha_t and sigma_t")
    return field, x, path_coefficients(tc, path)


def velocity_from_score(score: torch.Tensor, x: torch.Tensor, t: torch.Tensor, *, path: str = "condot") -> torch.Tensor:
    """Convert a score :math:`\\nabla \\log p_t(x)` to the marginal velocity of an affine path.

    :math:`u_t(x) = \\frac{\\dot\\alpha_t}{\\alpha_t} x + \\Big(\\frac{\\dot\\alpha_t}{\\alpha_t}
    \\sigma_t^2 - \\dot\\sigma_t \\sigma_t\\Big) \\nabla \\log p_t(x)`. The noise prediction is
    :math:`\\hat\\varepsilon = -\\sigma_t \\nabla \\log p_t(x)`. Implements (flow-matching-v-from-score).

    Args:
        score: the score at ``x``, shape (B, ...).
        x: points, same shape.
        t: times of shape (B,) or (B, 1), strictly inside (0, 1).
        path: ``"condot"`` or ``"vp"`` (see :func:`path_coefficients`).

    Returns:
        The velocity, shape of ``x``.

    Raises:
        TypeError: if an argument is not a floating tensor.
        ValueError: on shape mismatch, unknown path, or t outside (0, 1).
    """
    score, x, (a, s, da, ds) = _conversion_inputs(score, x, t, "score", path)
    return da / a * x + (da / a * s**2 - ds * s) * score


def score_from_velocity(velocity: torch.Tensor, x: torch.Tensor, t: torch.Tensor, *, path: str = "condot") -> torch.Tensor:
    """Invert :func:`velocity_from_score`: the score from the marginal velocity.

    :math:`\\nabla \\log p_t(x) = \\big(u_t(x) - \\frac{\\dot\\alpha_t}{\\alpha_t} x\\big) \\big/
    \\big(\\frac{\\dot\\alpha_t}{\\alpha_t}\\sigma_t^2 - \\dot\\sigma_t\\sigma_t\\big)`.
    Implements (flow-matching-score-from-v).

    Args:
        velocity: the velocity at ``x``, shape (B, ...).
        x: points, same shape.
        t: times of shape (B,) or (B, 1), strictly inside (0, 1).
        path: ``"condot"`` or ``"vp"``.

    Returns:
        The score, shape of ``x``.

    Raises:
        TypeError: if an argument is not a floating tensor.
        ValueError: on shape mismatch, unknown path, or t outside (0, 1).
    """
    velocity, x, (a, s, da, ds) = _conversion_inputs(velocity, x, t, "velocity", path)
    # the denominator is sigma_t (dalpha sigma - alpha dsigma) / alpha > 0 for both paths
    return (velocity - da / a * x) / (da / a * s**2 - ds * s)


# --------------------------------------------------------------------------------------------
# Rectified flow
# --------------------------------------------------------------------------------------------


def straightness(path: torch.Tensor) -> torch.Tensor:
    """How far sampled ODE trajectories are from straight lines (0 = perfectly straight).

    For trajectories sampled on the uniform grid :math:`t_k = k/K`, ``k = 0..K``, with
    step velocities :math:`v_k = K (x_{t_{k+1}} - x_{t_k})`, returns
    :math:`S = \\frac{1}{K} \\sum_{k} \\frac{1}{B} \\sum_b \\lVert (x_1 - x_0) - v_k \\rVert^2`,
    the discretized :math:`\\int_0^1 \\mathbb{E} \\lVert (X_1 - X_0) - \\dot X_t \\rVert^2 dt`
    of Liu et al. With Euler paths (``odeint(..., method="euler", return_path=True)``) each
    :math:`v_k` is exactly the model's velocity at the grid point.
    Implements (rectified-flow-straightness).

    Args:
        path: trajectories of shape (K + 1, B, ...) with K >= 1, time along the first axis,
            from t = 0 (noise) to t = 1 (data).

    Returns:
        A 0-dim tensor (dtype and device of ``path``).

    Raises:
        TypeError: if ``path`` is not a floating tensor.
        ValueError: if ``path`` has fewer than 2 dimensions or fewer than 2 time points.

    >>> t = torch.linspace(0, 1, 5)[:, None, None]
    >>> straightness(t * torch.ones(1, 3, 2)).item()
    0.0
    """
    path = _float_tensor("path", path)
    if path.ndim < 2 or path.shape[0] < 2:
        raise ValueError(f"path must have shape (K + 1, B, ...) with K >= 1, got {tuple(path.shape)}")
    K = path.shape[0] - 1
    chord = path[-1] - path[0]  # (B, ...)
    v = K * (path[1:] - path[:-1])  # (K, B, ...)
    sq = ((chord - v) ** 2).flatten(2).sum(dim=-1)  # (K, B)
    return sq.mean()


def empirical_fm_velocity(t: float | torch.Tensor, x: torch.Tensor, data: torch.Tensor) -> torch.Tensor:
    """The exact marginal velocity of the linear path from N(0, I) to the points in ``data``.

    With :math:`X_0 \\sim \\mathcal{N}(0, I)` independent of :math:`X_1`, uniform over the
    rows :math:`y_1, \\dots, y_N` of ``data`` (the empirical distribution a network is trained
    on), the path :math:`X_t = (1-t)X_0 + tX_1` has the marginal velocity
    :math:`u_t(x) = \\big(\\sum_n w_n(t, x)\\, y_n - x\\big) / (1 - t)` with posterior weights
    :math:`w_n \\propto \\exp\\!\\big(-\\lVert x - t y_n\\rVert^2 / (2(1-t)^2)\\big)` (a softmax
    over n). At ``t = 0`` the weights are uniform and :math:`u_0(x) = \\bar y - x`, the data
    mean minus the point. Implements (rectified-flow-empirical-velocity).

    Args:
        t: a time in [0, 1) (float), or a tensor of shape (B,) or (B, 1) with entries in [0, 1).
        x: points of shape (B, d), floating.
        data: the data points, shape (N, d) with N >= 1, same dtype and device as ``x``.

    Returns:
        Tensor of shape (B, d).

    Raises:
        TypeError: if ``x`` or ``data`` is not a floating tensor.
        ValueError: if the shapes disagree, ``data`` is empty or ``t`` is outside [0, 1)
            (at t = 1 the field is singular: every point is a data point).

    >>> data = torch.tensor([[1.0, 0.0], [3.0, 2.0]])
    >>> empirical_fm_velocity(0.0, torch.zeros(1, 2), data)  # the data mean minus x
    tensor([[2., 1.]])
    """
    x = _float_tensor("x", x)
    data = _float_tensor("data", data)
    if x.ndim != 2 or data.ndim != 2 or data.shape[1] != x.shape[1]:
        raise ValueError(f"x must be (B, d) and data (N, d), got {tuple(x.shape)} and {tuple(data.shape)}")
    if data.shape[0] == 0:
        raise ValueError("data must hold at least one point")
    if data.dtype != x.dtype or data.device != x.device:
        raise ValueError("data must have the dtype and device of x")
    if isinstance(t, torch.Tensor):
        tc = _time_column(t, x).to(x.dtype)  # (B, 1)
        if not bool(((tc >= 0) & (tc < 1)).all()):
            raise ValueError("t must lie in [0, 1)")
    else:
        tc = _check_real(t, "t")
        if not 0 <= tc < 1:
            raise ValueError(f"t must lie in [0, 1), got {t}")
        tc = torch.full((x.shape[0], 1), tc, dtype=x.dtype, device=x.device)
    # ||x - t y_n||^2 = ||x||^2 - 2 t x.y_n + t^2 ||y_n||^2, for all (b, n) at once: (B, N)
    sq = (x**2).sum(-1, keepdim=True) - 2 * tc * (x @ data.T) + tc**2 * (data**2).sum(-1)
    w = torch.softmax(-sq.clamp_min(0) / (2 * (1 - tc) ** 2), dim=-1)  # posterior over the N points
    return (w @ data - x) / (1 - tc)  # (E[X_1 | X_t = x] - x) / (1 - t)


# --------------------------------------------------------------------------------------------
# Normalizing flows (depth): autoregressive flows (MAF / IAF) and Glow's invertible 1x1 conv
# --------------------------------------------------------------------------------------------


class _MaskedLinear(nn.Linear):
    """A linear layer whose weight is multiplied by a fixed 0/1 mask (MADE)."""

    def __init__(self, n_in: int, n_out: int, mask: torch.Tensor) -> None:
        super().__init__(n_in, n_out)
        self.register_buffer("mask", mask.to(torch.get_default_dtype()))  # (n_out, n_in)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return nn.functional.linear(x, self.weight * self.mask, self.bias)


class MaskedAffineAutoregressive(nn.Module):
    """A masked affine autoregressive layer (MAF), with a MADE conditioner.

    Coordinates are processed in the order ``order`` (default ``0, 1, ..., d-1``). With
    :math:`x_{<i}` the coordinates before :math:`i` in that order, the forward map (data to
    noise, the normalizing direction) is
    :math:`z_i = x_i\\, e^{s_i(x_{<i})} + b_i(x_{<i})`, all :math:`i` at once in **one**
    conditioner pass, with :math:`\\log|\\det \\partial z/\\partial x| = \\sum_i s_i(x_{<i})`.
    The inverse (generation) :math:`x_i = (z_i - b_i(x_{<i}))\\, e^{-s_i(x_{<i})}` needs
    :math:`x_{<i}` first, so it takes **d sequential** conditioner passes.
    ``Inverted(layer)`` swaps the two directions, which is an IAF.
    The conditioner is an MLP whose weights are masked so that output :math:`i` depends only
    on inputs before :math:`i` (MADE degrees); its last layer starts at zero (identity map),
    and :math:`s = a \\tanh(\\cdot)` with a learnable bound :math:`a` as in ``AffineCoupling``.
    Implements (normalizing-flows-maf), (normalizing-flows-maf-inverse) and (normalizing-flows-ar-logdet).

    Args:
        dim: number of coordinates d (at least 2).
        hidden: width of the conditioner's hidden layers (at least d - 1, so that every
            degree 1..d-1 has a hidden unit).
        n_hidden: number of hidden layers (at least 1).
        order: optional permutation of ``0..d-1`` (a 1-D integer tensor): ``order[k]`` is the
            coordinate processed k-th.

    Attributes:
        n_passes: number of conditioner evaluations so far (reset it to 0 to count).

    Raises:
        TypeError: if ``dim``/``hidden``/``n_hidden`` are not ints or ``order`` not a tensor.
        ValueError: if ``dim < 2``, ``hidden < dim - 1`` or ``order`` is not a permutation.

    >>> layer = MaskedAffineAutoregressive(3, hidden=8)
    >>> x = torch.randn(4, 3)
    >>> z, logdet = layer(x)
    >>> torch.allclose(layer.inverse(z)[0], x), logdet.shape
    (True, torch.Size([4]))
    """

    def __init__(self, dim: int, hidden: int = 64, n_hidden: int = 2, order: torch.Tensor | None = None) -> None:
        super().__init__()
        _check_pos_int(dim, "dim")
        _check_pos_int(hidden, "hidden")
        _check_pos_int(n_hidden, "n_hidden")
        if dim < 2:
            raise ValueError(f"dim must be at least 2, got {dim}")
        if hidden < dim - 1:
            raise ValueError(f"hidden must be at least dim - 1 = {dim - 1}, got {hidden}")
        if order is None:
            order = torch.arange(dim)
        if not isinstance(order, torch.Tensor):
            raise TypeError(f"order must be a torch.Tensor, got {type(order).__name__}")
        order = order.detach().cpu()  # the degrees are built on the CPU; buffers move with .to()
        if order.dtype.is_floating_point or order.ndim != 1 or not torch.equal(order.sort().values, torch.arange(dim)):
            raise ValueError(f"order must be an integer permutation of 0..{dim - 1}")
        self.dim = dim
        self.n_passes = 0
        # MADE degrees: input coordinate order[k] has degree k + 1; hidden units 1..d-1
        deg_in = torch.empty(dim, dtype=torch.long)
        deg_in[order] = torch.arange(1, dim + 1)
        self.register_buffer("degree", deg_in)
        deg_h = torch.arange(hidden) % (dim - 1) + 1  # (hidden,), cycles through 1..d-1
        layers: list[nn.Module] = [_MaskedLinear(dim, hidden, deg_h[:, None] >= deg_in[None, :]), nn.SiLU()]
        for _ in range(n_hidden - 1):
            layers += [_MaskedLinear(hidden, hidden, deg_h[:, None] >= deg_h[None, :]), nn.SiLU()]
        out_mask = deg_in[:, None] > deg_h[None, :]  # output i sees hidden units of degree < deg(i)
        last = _MaskedLinear(hidden, 2 * dim, torch.cat([out_mask, out_mask]))
        nn.init.zeros_(last.weight)  # start as the identity map
        nn.init.zeros_(last.bias)
        self.net = nn.Sequential(*layers, last)
        self.log_scale_bound = nn.Parameter(torch.ones(dim))

    def _check_input(self, x: object, name: str) -> torch.Tensor:
        x = _float_tensor(name, x)
        if x.ndim != 2 or x.shape[1] != self.dim:
            raise ValueError(f"{name} must have shape (B, {self.dim}), got {tuple(x.shape)}")
        return x

    def _scale_shift(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        self.n_passes += 1
        s_raw, b = self.net(x).chunk(2, dim=-1)  # (B, d) each; column i depends on x_{<i} only
        return self.log_scale_bound * torch.tanh(s_raw), b

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Map data ``x`` (B, d) to ``(z, logdet)`` in one pass; logdet = log|det dz/dx|, (B,)."""
        x = self._check_input(x, "x")
        s, b = self._scale_shift(x)
        return x * torch.exp(s) + b, s.sum(dim=-1)

    def inverse(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Map ``z`` (B, d) back to ``(x, logdet)`` in d sequential passes; logdet = log|det dx/dz|."""
        z = self._check_input(z, "z")
        x = torch.zeros_like(z)
        for _ in range(self.dim):
            # after pass k the first k coordinates (in order) are exact: each needs only earlier ones
            s, b = self._scale_shift(x)
            x = (z - b) * torch.exp(-s)
        # the last pass saw the exact x_{<i} for every i, so s is s(x): no extra pass needed
        return x, -s.sum(dim=-1)


class Inverted(nn.Module):
    """A flow layer with its two directions swapped: ``forward`` is ``layer.inverse`` and back.

    ``Inverted(MaskedAffineAutoregressive(d))`` is an inverse autoregressive flow (IAF)
    layer: generation :math:`x_i = z_i e^{s_i(z_{<i})} + b_i(z_{<i})` is one pass, and the
    density of a given ``x`` takes d sequential passes. Implements (normalizing-flows-iaf).

    Args:
        layer: a module returning ``(output, logdet)`` from ``forward`` and ``inverse``.

    Raises:
        TypeError: if ``layer`` is not an ``nn.Module`` with an ``inverse`` method.

    >>> iaf = Inverted(MaskedAffineAutoregressive(2, hidden=4))
    >>> x = torch.randn(3, 2)
    >>> torch.allclose(iaf.inverse(iaf(x)[0])[0], x)
    True
    """

    def __init__(self, layer: nn.Module) -> None:
        super().__init__()
        if not isinstance(layer, nn.Module) or not callable(getattr(layer, "inverse", None)):
            raise TypeError("layer must be an nn.Module with an inverse method")
        self.layer = layer

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``layer.inverse(x)``: ``(output, log|det d output / dx|)``."""
        return self.layer.inverse(x)

    def inverse(self, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``layer(y)``: ``(output, log|det d output / dy|)``."""
        return self.layer(y)


class Invertible1x1Conv(nn.Module):
    """Glow's invertible 1x1 convolution, LU-parametrised: the same C x C map at every pixel.

    For ``x`` of shape (B, C, H, W), ``y[b, :, h, w] = W @ x[b, :, h, w]`` with
    :math:`W = P L (U + \\operatorname{diag}(\\sigma \\odot e^{\\lambda}))`: a fixed permutation
    :math:`P`, a unit lower-triangular :math:`L`, a strictly upper-triangular :math:`U`, fixed
    signs :math:`\\sigma` and learnable log-magnitudes :math:`\\lambda`. Then
    :math:`\\log|\\det \\partial y/\\partial x| = H W \\log|\\det W| = H W \\sum_c \\lambda_c`,
    O(C) instead of the O(C^3) of a general determinant. Starts at a random orthogonal matrix
    (seeded by the global RNG). Implements (normalizing-flows-conv1x1-logdet) and (normalizing-flows-lu).

    Args:
        channels: number of channels C (at least 1).

    Raises:
        TypeError: if ``channels`` is not an int, or an input is not a floating tensor.
        ValueError: if ``channels < 1`` or an input is not of shape (B, C, H, W).

    >>> conv = Invertible1x1Conv(3)
    >>> x = torch.randn(2, 3, 4, 4)
    >>> y, logdet = conv(x)
    >>> torch.allclose(conv.inverse(y)[0], x, atol=1e-5), logdet.shape
    (True, torch.Size([2]))
    """

    def __init__(self, channels: int) -> None:
        super().__init__()
        _check_pos_int(channels, "channels")
        self.channels = channels
        q, _ = torch.linalg.qr(torch.randn(channels, channels))  # a random orthogonal matrix
        p, lower, upper = torch.linalg.lu(q)
        diag = torch.diagonal(upper)
        self.register_buffer("perm", p)
        self.register_buffer("sign", torch.sign(diag))
        self.register_buffer("lower_mask", torch.tril(torch.ones(channels, channels), -1))
        self.lower = nn.Parameter(lower)
        self.upper = nn.Parameter(torch.triu(upper, 1))
        self.log_abs_diag = nn.Parameter(diag.abs().log())

    def weight(self) -> torch.Tensor:
        """The C x C matrix :math:`W = P L (U + \\operatorname{diag}(\\sigma e^{\\lambda}))`."""
        eye = torch.eye(self.channels, dtype=self.lower.dtype, device=self.lower.device)
        lower = self.lower * self.lower_mask + eye
        upper = self.upper * self.lower_mask.T + torch.diag(self.sign * self.log_abs_diag.exp())
        return self.perm @ lower @ upper

    def _check_input(self, x: object, name: str) -> torch.Tensor:
        x = _float_tensor(name, x)
        if x.ndim != 4 or x.shape[1] != self.channels:
            raise ValueError(f"{name} must have shape (B, {self.channels}, H, W), got {tuple(x.shape)}")
        return x

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Map ``x`` (B, C, H, W) to ``(y, logdet)``, logdet = H W sum(log|diag|) of shape (B,)."""
        x = self._check_input(x, "x")
        y = torch.einsum("ij,bjhw->bihw", self.weight(), x)
        logdet = x.shape[2] * x.shape[3] * self.log_abs_diag.sum()
        return y, logdet.expand(x.shape[0])

    def inverse(self, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Map ``y`` (B, C, H, W) back to ``(x, logdet)``, logdet = log|det dx/dy| = -forward's."""
        y = self._check_input(y, "y")
        x = torch.einsum("ij,bjhw->bihw", torch.linalg.inv(self.weight()), y)
        logdet = -y.shape[2] * y.shape[3] * self.log_abs_diag.sum()
        return x, logdet.expand(y.shape[0])


# --------------------------------------------------------------------------------------------
# Flow matching, depth (issue 16): stochastic sampling, minibatch OT couplings, time sampling
# --------------------------------------------------------------------------------------------


def fm_sde_sample(
    velocity: Callable[[float, torch.Tensor], torch.Tensor],
    x0: torch.Tensor,
    g: Callable[[float], float],
    *,
    steps: int,
    generator: torch.Generator | None = None,
    return_path: bool = False,
) -> torch.Tensor:
    """Euler-Maruyama for the SDE with the marginals of the linear-path flow-matching ODE.

    Integrates :math:`dx = [u_t(x) + \\tfrac{g_t^2}{2}\\nabla\\log p_t(x)]\\,dt + g_t\\,dW` from
    t = 0 (noise, :math:`x_0 \\sim \\mathcal{N}(0, I)`) to t = 1 (data), with the score read
    off the velocity of the linear path, :math:`\\nabla\\log p_t(x) = (t\\,u_t(x) - x)/(1-t)`.
    One step from :math:`t_k = k/K`: :math:`x \\leftarrow x + h\\,[u + \\tfrac{g^2}{2}\\,
    \\tfrac{t u - x}{1 - t}] + g\\sqrt{h}\\,\\xi`, :math:`\\xi \\sim \\mathcal{N}(0, I)`. The
    times :math:`t_k < 1`, so the score is never evaluated at t = 1. The Langevin term equals
    :math:`\\tfrac{g_t^2}{2(1-t)^2}\\,(t\\,\\hat x_1(x) - x)` with :math:`\\hat x_1 = \\mathbb{E}[X_1 \\mid X_t = x]`,
    so choose ``g`` with :math:`g_t/(1-t)` bounded (e.g. :math:`g_t = \\sqrt{\\gamma}\\,(1-t)`) to keep
    it bounded near the data. ``g = lambda t: 0.0`` is Euler for the ODE.
    Implements (flow-matching-sde) and (flow-matching-score-condot).

    Args:
        velocity: the marginal velocity of the linear path, called as ``velocity(t, x)`` with
            ``t`` a Python float and ``x`` of shape (B, ...); returns the shape of ``x``.
        x0: standard normal samples at t = 0, shape (B, ...), floating.
        g: the diffusion coefficient, ``g(t)`` a finite real >= 0.
        steps: number of steps K, a positive int.
        generator: optional ``torch.Generator`` for the Brownian increments.
        return_path: if True, return the states at the K + 1 grid times, shape (K + 1, B, ...).

    Returns:
        Samples at t = 1 with the shape, dtype and device of ``x0`` (or the path).

    Raises:
        TypeError: if ``velocity`` or ``g`` is not callable, ``x0`` is not a floating tensor,
            ``steps`` is not an int or ``generator`` is not a ``torch.Generator``.
        ValueError: if ``steps < 1``, ``g(t)`` is negative or not finite, or ``velocity``
            returns another shape.

    >>> x = fm_sde_sample(lambda t, x: -x, torch.zeros(3, 2), lambda t: 0.0, steps=4)
    >>> x.abs().max().item()
    0.0
    """
    if not callable(velocity):
        raise TypeError(f"velocity must be callable as velocity(t, x), got {type(velocity).__name__}")
    if not callable(g):
        raise TypeError(f"g must be callable as g(t), got {type(g).__name__}")
    x = _float_tensor("x0", x0)
    if x.ndim < 1:
        raise ValueError("x0 must have a batch dimension, shape (B, ...)")
    K = _check_pos_int(steps, "steps")
    if generator is not None and not isinstance(generator, torch.Generator):
        raise TypeError(f"generator must be a torch.Generator or None, got {type(generator).__name__}")
    h = 1.0 / K
    path = [x]
    for k in range(K):
        t = k * h
        gt = g(t)
        if isinstance(gt, torch.Tensor):
            gt = gt.item()
        gt = _check_real(gt, f"g({t:g})")
        if gt < 0:
            raise ValueError(f"g(t) must be >= 0, got g({t:g}) = {gt}")
        u = velocity(t, x)
        if not isinstance(u, torch.Tensor) or u.shape != x.shape:
            raise ValueError(f"velocity(t, x) must return a tensor of shape {tuple(x.shape)}")
        drift = u + (gt**2 / 2) * (t * u - x) / (1 - t)  # u + (g^2/2) * score
        x = x + h * drift
        if gt > 0:
            dev = generator.device if generator is not None else x.device
            xi = torch.randn(x.shape, generator=generator, dtype=x.dtype, device=dev).to(x.device)
            x = x + gt * math.sqrt(h) * xi
        if return_path:
            path.append(x)
    return torch.stack(path) if return_path else x


def assignment(cost: torch.Tensor) -> torch.Tensor:
    """An exact minimum-cost perfect matching of a square cost matrix (Hungarian algorithm).

    Returns the permutation :math:`\\sigma` minimizing :math:`\\sum_i C_{i\\sigma(i)}`, found by
    successive shortest augmenting paths with dual potentials (Kuhn-Munkres, in the
    :math:`O(n^3)` form of Jonker-Volgenant style implementations; the solver of
    :func:`minilib.detection.hungarian_match`, derived in the DETR chapter). Runs on the CPU in
    float64; the result is on the device of ``cost``. Implements (flow-matching-minibatch-ot).

    Args:
        cost: a finite floating tensor of shape (n, n), n >= 1.

    Returns:
        A long tensor ``perm`` of shape (n,): row i is matched to column ``perm[i]``.

    Raises:
        TypeError: if ``cost`` is not a floating tensor.
        ValueError: if ``cost`` is not square (n, n) with n >= 1 or has non-finite entries.

    >>> assignment(torch.tensor([[4.0, 1.0, 3.0], [2.0, 0.0, 5.0], [3.0, 2.0, 2.0]])).tolist()
    [1, 0, 2]
    """

    cost = _float_tensor("cost", cost)
    if cost.ndim != 2 or cost.shape[0] != cost.shape[1] or cost.shape[0] < 1:
        raise ValueError(f"cost must be a square matrix (n, n) with n >= 1, got {tuple(cost.shape)}")
    if not bool(torch.isfinite(cost).all()):
        raise ValueError("cost must have finite entries")
    # The same shortest-augmenting-path solver as DETR's matching (minilib.detection.hungarian_match),
    # on the float64 copy; for a square cost, row i goes to column perm[i].
    from minilib.detection import _lsa_rows_le_cols

    perm = _lsa_rows_le_cols(cost.detach().to("cpu", torch.float64).numpy())
    return torch.as_tensor(perm, device=cost.device)


def minibatch_ot_pair(x0: torch.Tensor, x1: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Re-pair a minibatch of noise and data by exact optimal transport (squared distance).

    Solves :math:`\\min_\\sigma \\sum_i \\lVert x_0^{(i)} - x_1^{(\\sigma(i))}\\rVert^2` with
    :func:`assignment` and returns ``(x0, x1[sigma])``; each point is used once, so the two
    marginals of the batch are unchanged. Implements (flow-matching-minibatch-ot).

    Args:
        x0: noise samples, shape (B, ...), floating.
        x1: data samples, same shape and dtype as ``x0``.

    Returns:
        ``(x0, x1_paired)``, both of shape (B, ...), on the device of the inputs.

    Raises:
        TypeError: if an argument is not a floating tensor.
        ValueError: if the shapes disagree or there is no batch dimension.

    >>> x0 = torch.tensor([[0.0], [1.0]]); x1 = torch.tensor([[1.1], [0.1]])
    >>> minibatch_ot_pair(x0, x1)[1].flatten().tolist()
    [0.10000000149011612, 1.100000023841858]
    """
    x0 = _float_tensor("x0", x0)
    x1 = _float_tensor("x1", x1)
    if x0.ndim < 1 or x0.shape[0] < 1:
        raise ValueError("x0 must have a non-empty batch dimension, shape (B, ...)")
    if x0.shape != x1.shape:
        raise ValueError(f"x0 and x1 must have the same shape, got {tuple(x0.shape)} and {tuple(x1.shape)}")
    a, b = x0.flatten(1), x1.flatten(1)
    cost = (a**2).sum(-1, keepdim=True) - 2 * a @ b.T + (b**2).sum(-1)  # (B, B) squared distances
    return x0, x1[assignment(cost.detach())]


def logit_normal_times(
    n: int,
    *,
    loc: float = 0.0,
    scale: float = 1.0,
    generator: torch.Generator | None = None,
    device: torch.device | str | None = None,
    dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """Training times from the logit-normal distribution (the time sampler of Stable Diffusion 3).

    :math:`t = 1/(1 + e^{-(m + s z)})`, :math:`z \\sim \\mathcal{N}(0, 1)`, with density
    :math:`\\frac{1}{s\\sqrt{2\\pi}}\\frac{1}{t(1-t)}\\exp\\!\\big(-\\frac{(\\operatorname{logit} t
    - m)^2}{2 s^2}\\big)` on (0, 1). Implements (flow-matching-logit-normal).

    Args:
        n: number of times, a positive int.
        loc: the mean m of the logit (0 centres the mass at t = 1/2).
        scale: the standard deviation s > 0 of the logit.
        generator: optional CPU ``torch.Generator``.
        device: device of the result.
        dtype: floating dtype of the result.

    Returns:
        A tensor of shape (n,) with entries in (0, 1).

    Raises:
        TypeError: if ``n`` is not an int or ``loc``/``scale`` are not real numbers.
        ValueError: if ``n < 1``, ``scale <= 0`` or ``dtype`` is not floating.

    >>> t = logit_normal_times(5, generator=torch.Generator().manual_seed(0))
    >>> bool(((t > 0) & (t < 1)).all())
    True
    """
    _check_pos_int(n, "n")
    loc = _check_real(loc, "loc")
    if _check_real(scale, "scale") <= 0:
        raise ValueError(f"scale must be positive, got {scale}")
    if not isinstance(dtype, torch.dtype) or not dtype.is_floating_point:
        raise ValueError(f"dtype must be a floating torch.dtype, got {dtype}")
    z = torch.randn(n, generator=generator, dtype=torch.float64)
    return torch.sigmoid(loc + scale * z).to(device=device, dtype=dtype)
