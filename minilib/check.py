"""One-line verdicts for labs: each helper prints ``✓ what (...)`` or raises ``CheckFailed``.

The printed numbers use a fixed format (``max abs err 3.0e-08``) so that the test suite can
mask them when it compares a lab's outputs across CPUs.

>>> close(0.1 + 0.2, 0.3, "float addition")
✓ float addition (max abs err 5.6e-17)
>>> true(2 > 1, "two exceeds one")
✓ two exceeds one
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np
import torch

__all__ = ["CheckFailed", "between", "close", "equal", "greater", "less", "monotone", "raises", "true", "within_se"]


class CheckFailed(AssertionError):
    """Raised by every helper in :mod:`minilib.check` when its check fails."""


def _as_numpy(x: Any, name: str) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        if x.device.type == "meta":
            raise TypeError(f"{name} is a meta tensor and has no values to check")
        return x.detach().to("cpu", torch.float64 if x.is_floating_point() else x.dtype).numpy()
    try:
        return np.asarray(x, dtype=np.float64) if not isinstance(x, np.ndarray) else x
    except (TypeError, ValueError) as err:
        raise TypeError(f"{name} must be a number, array or tensor, got {type(x).__name__}") from err


def _what(what: Any) -> str:
    if not isinstance(what, str) or not what.strip():
        raise TypeError(f"what must be a non-empty description string, got {what!r}")
    return what.strip()


def _pass(msg: str) -> None:
    print(f"✓ {msg}")


def _fail(msg: str) -> None:
    raise CheckFailed(f"✗ {msg}")


def close(actual: Any, expected: Any, what: str, *, atol: float = 1e-6, rtol: float = 1e-5) -> None:
    """Check ``|actual - expected| <= atol + rtol * |expected|`` elementwise.

    Shapes must match exactly (no silent broadcasting). Helpers return None, so a check as the
    last line of a cell prints only its verdict.

    >>> import torch
    >>> close(torch.ones(3), torch.ones(3), "ones")
    ✓ ones (max abs err 0.0e+00)
    """
    what = _what(what)
    if not (atol >= 0 and rtol >= 0):
        raise ValueError(f"atol and rtol must be non-negative, got atol={atol}, rtol={rtol}")
    a, e = _as_numpy(actual, "actual"), _as_numpy(expected, "expected")
    if a.shape != e.shape:
        _fail(f"{what}: shape {tuple(a.shape)} != expected {tuple(e.shape)}")
    a64, e64 = a.astype(np.float64), e.astype(np.float64)
    if a64.size == 0:
        _pass(f"{what} (empty)")
        return
    a_nan, e_nan = np.isnan(a64), np.isnan(e64)
    if (a_nan != e_nan).any():
        _fail(f"{what}: NaN where the reference has none (or the other way round)")
    a_inf, e_inf = np.isinf(a64), np.isinf(e64)
    if ((a_inf | e_inf) & (a64 != e64)).any():
        _fail(f"{what}: infinite values differ from the reference")
    finite = ~(a_nan | a_inf | e_inf)
    diff = np.zeros_like(a64)
    diff[finite] = np.abs(a64[finite] - e64[finite])
    err = float(diff.max())
    bad = diff > atol + rtol * np.abs(np.where(finite, e64, 0.0))
    if bad.any():
        idx = tuple(int(i) for i in np.argwhere(bad)[0])
        _fail(
            f"{what}: max abs err {err:.1e} exceeds atol={atol:g}, rtol={rtol:g} "
            f"({int(bad.sum())} of {bad.size} elements; first at index {idx})"
        )
    _pass(f"{what} (max abs err {err:.1e})")


def equal(actual: Any, expected: Any, what: str) -> None:
    """Check exact equality: of tensors and arrays elementwise (and in shape), else with ``==``.

    >>> equal([1, 2], [1, 2], "lists")
    ✓ lists
    """
    what = _what(what)
    if isinstance(actual, (torch.Tensor, np.ndarray)) or isinstance(expected, (torch.Tensor, np.ndarray)):
        a, e = _as_numpy(actual, "actual"), _as_numpy(expected, "expected")
        if a.shape != e.shape or not np.array_equal(a, e):
            _fail(f"{what}: arrays differ")
    elif actual != expected:
        _fail(f"{what}: {actual!r} != {expected!r}")
    _pass(what)


def true(cond: Any, what: str) -> None:
    """Check that a condition holds (a bool, or a one-element tensor or array)."""
    what = _what(what)
    if isinstance(cond, (torch.Tensor, np.ndarray)):
        if cond.size == 0 if isinstance(cond, np.ndarray) else cond.numel() == 0:
            raise ValueError("cond must hold exactly one element, got an empty array")
        cond = bool(cond.all())
    if not isinstance(cond, (bool, np.bool_)):
        raise TypeError(f"cond must be a bool, got {type(cond).__name__}")
    if not cond:
        _fail(what)
    _pass(what)


def less(value: Any, bound: float, what: str, *, fmt: str = ".1e") -> None:
    """Check ``value < bound`` and print ``✓ what (value < bound)``, the value formatted.

    >>> less(0.004, 0.01, "error", fmt=".3f")
    ✓ error (0.004 < 0.010)
    """
    what = _what(what)
    v = float(_as_numpy(value, "value").max())
    if math.isnan(v) or not v < bound:
        _fail(f"{what}: {v:{fmt}} is not < {bound:{fmt}}")
    _pass(f"{what} ({v:{fmt}} < {bound:{fmt}})")


def greater(value: Any, bound: float, what: str, *, fmt: str = ".1e") -> None:
    """Check ``value > bound`` and print ``✓ what (value > bound)``, the value formatted.

    >>> greater(0.9, 0.5, "accuracy beats chance", fmt=".2f")
    ✓ accuracy beats chance (0.90 > 0.50)
    """
    what = _what(what)
    v = float(_as_numpy(value, "value").min())
    if math.isnan(v) or not v > bound:
        _fail(f"{what}: {v:{fmt}} is not > {bound:{fmt}}")
    _pass(f"{what} ({v:{fmt}} > {bound:{fmt}})")


def between(value: Any, low: float, high: float, what: str, *, fmt: str = ".1e") -> None:
    """Check ``low <= value <= high`` (every element) and print ``✓ what (value in [low, high])``.

    >>> between(0.52, 0.4, 0.6, "inner share near one half", fmt=".2f")
    ✓ inner share near one half (0.52 in [0.40, 0.60])
    """
    what = _what(what)
    if not low <= high:
        raise ValueError(f"low must be <= high, got low={low}, high={high}")
    arr = _as_numpy(value, "value")
    if arr.size == 0:
        raise ValueError("value must hold at least one element, got an empty array")
    lo, hi = float(arr.min()), float(arr.max())
    if math.isnan(lo) or math.isnan(hi) or np.isnan(arr).any() or lo < low or hi > high:
        shown = lo if (math.isnan(lo) or lo < low) else hi
        _fail(f"{what}: {shown:{fmt}} is not in [{low:{fmt}}, {high:{fmt}}]")
    shown = lo if arr.size == 1 else hi
    _pass(f"{what} ({shown:{fmt}} in [{low:{fmt}}, {high:{fmt}}])")


def within_se(samples: Any, expected: float, what: str, *, z: float = 4.0) -> None:
    """Check that the mean of i.i.d. ``samples`` matches ``expected`` within ``z`` standard errors.

    The tolerance is the Monte Carlo error itself, ``z * std(samples) / sqrt(n)``, so the check
    is as tight as the sample allows: a biased estimator fails once its bias exceeds a few
    standard errors. With ``z = 4`` an unbiased estimator fails about once in 16,000 runs when
    ``n`` is large (the normal approximation); with few samples the estimated standard error
    is itself noisy and the ratio follows Student's t with ``n - 1`` degrees of freedom, so the
    rate is higher (about 1% for ``n = 6``): use tens of samples, or a larger ``z``.

    >>> within_se([0.9, 1.1, 1.0, 0.95, 1.05], 1.0, "unbiased mean")
    ✓ unbiased mean (|mean - reference| = 0.0e+00 <= 4.0 SE = 1.4e-01, n = 5)
    """
    what = _what(what)
    if not (isinstance(z, (int, float)) and z > 0):
        raise ValueError(f"z must be a positive number of standard errors, got {z!r}")
    x = _as_numpy(samples, "samples").astype(np.float64).ravel()
    if x.size < 2:
        raise ValueError(f"samples must hold at least 2 values to estimate a standard error, got {x.size}")
    if not np.isfinite(x).all():
        _fail(f"{what}: the samples contain NaN or infinite values")
    mean, se = float(x.mean()), float(x.std(ddof=1) / math.sqrt(x.size))
    gap = abs(mean - float(expected))
    if not gap <= z * se:
        _fail(f"{what}: |mean - reference| = {gap:.1e} > {z:.1f} SE = {z * se:.1e} (n = {x.size})")
    _pass(f"{what} (|mean - reference| = {gap:.1e} <= {z:.1f} SE = {z * se:.1e}, n = {x.size})")


def monotone(values: Any, what: str, *, increasing: bool = True, slack: float = 0.0) -> None:
    """Check that a sequence rises (or falls) step by step, allowing each step ``slack`` the wrong way.

    >>> monotone([3.0, 2.1, 2.0, 1.2], "error falls with steps", increasing=False)
    ✓ error falls with steps (4 values, decreasing)
    """
    what = _what(what)
    if slack < 0:
        raise ValueError(f"slack must be non-negative, got {slack}")
    x = _as_numpy(values, "values").astype(np.float64).ravel()
    if x.size < 2:
        raise ValueError(f"values must hold at least 2 values, got {x.size}")
    steps = np.diff(x) if increasing else -np.diff(x)
    word = "increasing" if increasing else "decreasing"
    if np.isnan(x).any() or (steps < -slack).any():
        i = int(np.argmax(np.isnan(steps) | (steps < -slack)))
        _fail(f"{what}: not {word} at step {i} -> {i + 1} ({x[i]:.3g} -> {x[i + 1]:.3g}, slack {slack:g})")
    _pass(f"{what} ({x.size} values, {word})")


def raises(exc: type[BaseException] | tuple[type[BaseException], ...], fn: Callable[[], Any], what: str) -> None:
    """Check that ``fn()`` raises ``exc`` and print its message.

    >>> raises(ValueError, lambda: int("x"), "int() rejects letters")
    ✓ int() rejects letters: ValueError: invalid literal for int() with base 10: 'x'
    """
    what = _what(what)
    try:
        fn()
    except exc as err:
        _pass(f"{what}: {type(err).__name__}: {err}")
        return
    _fail(f"{what}: no {exc} was raised")
