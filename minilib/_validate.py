"""Argument checks shared by the ``minilib`` modules.

Each raises ``TypeError`` or ``ValueError`` with a message that names the argument and says
what was expected, so the public functions can validate their inputs in one line.
"""

from __future__ import annotations

import torch


def float_tensor(name: str, x: object) -> torch.Tensor:
    """``x`` itself, after checking that it is a floating-point ``torch.Tensor``.

    >>> float_tensor("x", torch.zeros(2)).shape
    torch.Size([2])
    >>> float_tensor("x", torch.zeros(2, dtype=torch.long))
    Traceback (most recent call last):
    ...
    TypeError: x must be a floating-point tensor, got dtype torch.int64
    >>> float_tensor("x", [1.0])
    Traceback (most recent call last):
    ...
    TypeError: x must be a torch.Tensor, got list
    """
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    if not x.is_floating_point():
        raise TypeError(f"{name} must be a floating-point tensor, got dtype {x.dtype}")
    return x
