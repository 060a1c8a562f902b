"""The training loop shared by the diffusion and flow chapters, and a small time-conditioned MLP.

``fit`` is deliberately plain: sample a minibatch with replacement, evaluate ``loss_fn``,
take an Adam step, record the loss. Everything model-specific lives in ``loss_fn``, so the
same loop trains an epsilon-model (DDPM), a denoiser (EDM) or a velocity field (flow matching).
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from minilib.nn import sinusoidal_embedding

__all__ = ["TimeMLP", "fit"]

Batch = Any


def _sampler(data: Any, generator: torch.Generator | None) -> Callable[[int], Batch]:
    """Turn ``data`` (tensor, tuple of tensors, or callable) into ``batch_size -> batch``."""
    if callable(data) and not isinstance(data, torch.Tensor):
        return data
    tensors = data if isinstance(data, (tuple, list)) else (data,)
    if not tensors or not all(isinstance(t, torch.Tensor) for t in tensors):
        raise TypeError("data must be a tensor, a tuple of tensors, or a callable batch_size -> batch")
    n = tensors[0].shape[0] if tensors[0].ndim > 0 else 0
    if n == 0:
        raise ValueError("data must hold at least one example along dim 0")
    if any(t.ndim == 0 or t.shape[0] != n for t in tensors):
        raise ValueError(f"all tensors in data must have the same length along dim 0, got {[tuple(t.shape) for t in tensors]}")

    def sample(batch_size: int) -> Batch:
        # indices on the CPU, so a CPU generator works whatever device the data is on
        idx = torch.randint(n, (batch_size,), generator=generator)
        picked = tuple(t[idx.to(t.device)] for t in tensors)
        return picked if isinstance(data, (tuple, list)) else picked[0]

    return sample


def fit(
    model: nn.Module,
    loss_fn: Callable[[nn.Module, Batch], torch.Tensor],
    data: torch.Tensor | tuple[torch.Tensor, ...] | Callable[[int], Batch],
    *,
    steps: int,
    batch_size: int,
    lr: float = 1e-3,
    weight_decay: float = 0.0,
    ema_decay: float | None = None,
    grad_clip: float | None = None,
    generator: torch.Generator | None = None,
    progress: bool = True,
) -> list[float]:
    """Minimize ``loss_fn(model, batch)`` with Adam on minibatches drawn with replacement.

    Args:
        model: the module to train (in place).
        loss_fn: ``loss_fn(model, batch)`` returns a scalar tensor. Any randomness it needs
            (noise levels, noise) it draws itself.
        data: a tensor ``(N, ...)`` or a tuple of tensors with equal first dimension (then
            the batch is a tuple, e.g. ``(x, labels)``), from which ``batch_size`` rows are
            drawn uniformly with replacement each step; or a callable ``data(batch_size)``
            that returns a fresh batch (for data sampled on the fly).
        steps: number of optimizer steps, non-negative.
        batch_size: minibatch size, positive.
        lr: Adam learning rate, positive.
        weight_decay: decoupled weight decay (AdamW) if positive, else plain Adam.
        ema_decay: if given (in ``[0, 1)``), keep an exponential moving average of the
            parameters, ``ema = decay * ema + (1 - decay) * param`` after every step, and copy
            it into ``model`` at the end. Averaged weights usually sample better.
        grad_clip: if given, clip the global gradient norm to this value.
        generator: CPU generator for the minibatch indices (reproducibility).
        progress: show a ``tqdm.auto`` progress bar with the running loss.

    Returns:
        The loss at every step, as a list of ``steps`` floats.

    Raises:
        TypeError: if ``loss_fn`` is not callable or ``data`` has the wrong type.
        ValueError: on bad sizes or hyperparameters, or if ``loss_fn`` does not return a
            scalar.
        FloatingPointError: if the loss becomes NaN or infinite.

    >>> w = nn.Linear(1, 1, bias=False)
    >>> data = torch.full((8, 1), 3.0)
    >>> losses = fit(w, lambda m, x: ((m.weight - x) ** 2).mean(), data, steps=300,
    ...              batch_size=4, lr=0.1, progress=False)
    >>> round(float(w.weight.detach()), 3)
    3.0
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    if not callable(loss_fn):
        raise TypeError(f"loss_fn must be callable, got {type(loss_fn).__name__}")
    for name, v in (("steps", steps), ("batch_size", batch_size)):
        if not isinstance(v, int) or isinstance(v, bool):
            raise TypeError(f"{name} must be an int, got {type(v).__name__}")
    if steps < 0:
        raise ValueError(f"steps must be non-negative, got {steps}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be positive, got {batch_size}")
    if not (isinstance(lr, (int, float)) and lr > 0):
        raise ValueError(f"lr must be positive, got {lr!r}")
    if not (isinstance(weight_decay, (int, float)) and weight_decay >= 0):
        raise ValueError(f"weight_decay must be non-negative, got {weight_decay!r}")
    if ema_decay is not None and not (isinstance(ema_decay, (int, float)) and 0 <= ema_decay < 1):
        raise ValueError(f"ema_decay must be None or in [0, 1), got {ema_decay!r}")
    if grad_clip is not None and not (isinstance(grad_clip, (int, float)) and grad_clip > 0):
        raise ValueError(f"grad_clip must be None or positive, got {grad_clip!r}")
    if generator is not None and not isinstance(generator, torch.Generator):
        raise TypeError(f"generator must be a torch.Generator or None, got {type(generator).__name__}")
    sample = _sampler(data, generator)
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise ValueError("model has no trainable parameters")
    if weight_decay > 0:
        opt: torch.optim.Optimizer = torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)
    else:
        opt = torch.optim.Adam(params, lr=lr)
    ema = copy.deepcopy(model).requires_grad_(False) if ema_decay is not None else None

    from tqdm.auto import tqdm

    bar = tqdm(range(steps), disable=not progress, leave=False, desc="fit")
    losses: list[float] = []
    model.train()
    for step in bar:
        loss = loss_fn(model, sample(batch_size))
        if not isinstance(loss, torch.Tensor) or loss.numel() != 1:
            raise ValueError("loss_fn must return a scalar tensor")
        value = float(loss.detach())
        if not math.isfinite(value):
            raise FloatingPointError(f"loss became {value} at step {step}; try a smaller lr")
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if grad_clip is not None:
            nn.utils.clip_grad_norm_(params, grad_clip)
        opt.step()
        if ema is not None:
            with torch.no_grad():
                for p_ema, p in zip(ema.parameters(), model.parameters()):
                    p_ema.lerp_(p, 1.0 - ema_decay)
        losses.append(value)
        if progress and (step % 50 == 0 or step == steps - 1):
            bar.set_postfix(loss=f"{sum(losses[-50:]) / len(losses[-50:]):.4f}")
    bar.close()
    if ema is not None:
        model.load_state_dict(ema.state_dict())
    model.eval()
    return losses


class TimeMLP(nn.Module):
    """An MLP for D-dimensional data conditioned on a time (or noise level) and optionally a class.

    The time ``t`` is multiplied by ``time_scale``, embedded with
    :func:`minilib.nn.sinusoidal_embedding` and passed through a small MLP; an optional class
    embedding is added to it. The result conditions every residual block by addition:
    ``h = h + W2 silu(W1 silu(h) + P c)``, where ``c`` is the conditioning vector. The same
    network serves as an epsilon-predictor, a denoiser, a score or a velocity field; the
    loss decides which.

    Choose ``time_scale`` so that the scaled time spans hundreds of units: 1 for integer
    diffusion steps ``t = 0..999``, about 1000 for continuous ``t`` in ``[0, 1]``.

    Args:
        dim: data dimension D (input and, by default, output).
        hidden: width of the hidden layers.
        depth: number of residual blocks.
        emb_dim: size of the sinusoidal embedding (even).
        n_classes: if given, a class-conditional model with ``n_classes`` labels plus one
            extra "null" label (index ``n_classes``, also ``self.null_class``) used for the
            unconditional branch of classifier-free guidance.
        out_dim: output dimension (default ``dim``).
        time_scale: factor applied to ``t`` before the embedding.

    >>> net = TimeMLP(2, hidden=32, depth=2)
    >>> net(torch.zeros(5, 2), torch.arange(5)).shape
    torch.Size([5, 2])
    """

    def __init__(
        self,
        dim: int = 2,
        *,
        hidden: int = 128,
        depth: int = 3,
        emb_dim: int = 64,
        n_classes: int | None = None,
        out_dim: int | None = None,
        time_scale: float = 1.0,
    ) -> None:
        super().__init__()
        for name, v in (("dim", dim), ("hidden", hidden), ("depth", depth), ("emb_dim", emb_dim)):
            if not isinstance(v, int) or isinstance(v, bool) or v < 1:
                raise ValueError(f"{name} must be a positive int, got {v!r}")
        if emb_dim % 2:
            raise ValueError(f"emb_dim must be even, got {emb_dim}")
        if n_classes is not None and (not isinstance(n_classes, int) or isinstance(n_classes, bool) or n_classes < 1):
            raise ValueError(f"n_classes must be None or a positive int, got {n_classes!r}")
        if out_dim is not None and (not isinstance(out_dim, int) or out_dim < 1):
            raise ValueError(f"out_dim must be None or a positive int, got {out_dim!r}")
        if not (isinstance(time_scale, (int, float)) and time_scale > 0):
            raise ValueError(f"time_scale must be positive, got {time_scale!r}")
        self.dim, self.emb_dim, self.n_classes, self.time_scale = dim, emb_dim, n_classes, float(time_scale)
        #: label index of the unconditional ("null") class, or None for an unconditional model
        self.null_class: int | None = n_classes
        self.time_mlp = nn.Sequential(nn.Linear(emb_dim, hidden), nn.SiLU(), nn.Linear(hidden, hidden))
        self.class_emb = nn.Embedding(n_classes + 1, hidden) if n_classes is not None else None
        self.inp = nn.Linear(dim, hidden)
        self.blocks = nn.ModuleList(
            nn.ModuleDict({"lin1": nn.Linear(hidden, hidden), "cond": nn.Linear(hidden, hidden), "lin2": nn.Linear(hidden, hidden)})
            for _ in range(depth)
        )
        self.out = nn.Linear(hidden, out_dim or dim)

    def forward(self, x: torch.Tensor, t: torch.Tensor | float, y: torch.Tensor | None = None) -> torch.Tensor:
        """Evaluate the network.

        Args:
            x: data ``(B, dim)``.
            t: time or noise level: a number, or a tensor of shape ``()``, ``(B,)`` or
                ``(B, 1)``, integer or floating.
            y: class labels ``(B,)`` int64 in ``0..n_classes`` (``n_classes`` is the null
                class), or None for the null class. Only for class-conditional models.

        Returns:
            Tensor ``(B, out_dim)`` in the dtype of ``x``.
        """
        if not isinstance(x, torch.Tensor) or not x.is_floating_point():
            raise TypeError("x must be a floating torch.Tensor")
        if x.ndim != 2 or x.shape[1] != self.dim:
            raise ValueError(f"x must have shape (B, {self.dim}), got {tuple(x.shape)}")
        B = x.shape[0]
        t = torch.as_tensor(t, device=x.device)
        if t.ndim == 2 and t.shape[1] == 1:
            t = t[:, 0]
        if t.ndim == 0:
            t = t.expand(B)
        if t.shape != (B,):
            raise ValueError(f"t must be a number or have shape (B,) or (B, 1) with B = {B}, got {tuple(t.shape)}")
        t = t.to(x.dtype) * self.time_scale
        c = self.time_mlp(sinusoidal_embedding(t, self.emb_dim))  # (B, hidden)
        if self.class_emb is not None:
            if y is None:
                y = torch.full((B,), self.n_classes, dtype=torch.long, device=x.device)
            if not isinstance(y, torch.Tensor) or y.dtype not in (torch.int64, torch.int32) or y.shape != (B,):
                raise ValueError(f"y must be an integer tensor of shape ({B},)")
            if x.device.type != "meta" and bool(((y < 0) | (y > self.n_classes)).any()):
                raise ValueError(f"y must hold labels in 0..{self.n_classes} ({self.n_classes} is the null class)")
            c = c + self.class_emb(y)
        elif y is not None:
            raise ValueError("y was given but this TimeMLP has n_classes=None")
        h = self.inp(x)
        for blk in self.blocks:
            h = h + blk["lin2"](nn.functional.silu(blk["lin1"](nn.functional.silu(h)) + blk["cond"](c)))
        return self.out(nn.functional.silu(h))
