"""Test-time compute for reasoning models: pass@k, majority voting, rejection sampling.

Chapter: ``book/llm/reasoning.md``. Conventions: a *problem* gets ``n`` independent samples
from the model, ``c`` of which the verifier accepts; ``k`` is the number of attempts the
metric allows.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch

__all__ = ["pass_at_k", "majority_vote", "rejection_sample"]


def _check_int_tensor(name: str, x: torch.Tensor) -> None:
    if x.is_floating_point() or x.is_complex() or x.dtype == torch.bool:
        raise TypeError(f"{name} must be an integer tensor or int, got dtype {x.dtype}")


def pass_at_k(
    n: int | torch.Tensor, c: int | torch.Tensor, k: int | torch.Tensor
) -> float | torch.Tensor:
    """Unbiased estimate of pass@k from ``n`` samples of which ``c`` are correct.

    Implements (reasoning-passk-unbiased), ``1 - C(n - c, k) / C(n, k)``, in the product form
    (reasoning-passk-product), ``1 - prod_{i = n - c + 1}^{n} (1 - k / i)``, which never forms
    a binomial coefficient (they overflow float64 beyond ``n`` of about 1000). The value is 1
    when ``n - c < k`` (every subset of ``k`` samples contains a correct one).

    Args:
        n: number of samples per problem (>= 1).
        c: number of correct samples, ``0 <= c <= n``.
        k: attempts allowed, ``1 <= k <= n``.
        Python ints, or integer tensors that broadcast against each other.

    Returns:
        A Python float if all three are ints; otherwise a float64 tensor of the broadcast
        shape, on the device of the tensor inputs.

    Raises:
        TypeError: on a float, bool or non-integer input.
        ValueError: if ``n < 1``, ``c < 0``, ``c > n``, ``k < 1`` or ``k > n``.

    >>> pass_at_k(10, 0, 5), pass_at_k(10, 10, 1), pass_at_k(10, 6, 5)
    (0.0, 1.0, 1.0)
    >>> round(pass_at_k(10, 3, 1), 12)
    0.3
    >>> pass_at_k(torch.tensor([4, 4]), torch.tensor([1, 2]), 2)
    tensor([0.5000, 0.8333], dtype=torch.float64)
    """
    args = {"n": n, "c": c, "k": k}
    as_python = all(isinstance(v, int) and not isinstance(v, bool) for v in args.values())
    device = None
    tensors = {}
    for name, v in args.items():
        if isinstance(v, bool) or not isinstance(v, (int, torch.Tensor)):
            raise TypeError(f"{name} must be an int or an integer tensor, got {type(v).__name__}")
        if isinstance(v, torch.Tensor):
            _check_int_tensor(name, v)
            device = v.device if device is None else device
    for name, v in args.items():
        tensors[name] = torch.as_tensor(v, dtype=torch.int64, device=device)
    try:
        nt, ct, kt = torch.broadcast_tensors(tensors["n"], tensors["c"], tensors["k"])
    except RuntimeError as err:
        raise ValueError(f"n, c and k must broadcast against each other: {err}") from None
    if bool((nt < 1).any()):
        raise ValueError("n must be >= 1 (the number of samples)")
    if bool((ct < 0).any()) or bool((ct > nt).any()):
        raise ValueError("c must satisfy 0 <= c <= n (the number of correct samples)")
    if bool((kt < 1).any()) or bool((kt > nt).any()):
        raise ValueError("k must satisfy 1 <= k <= n (pass@k needs at least k samples)")
    # (reasoning-passk-product): factors (1 - k/i) for i = n-c+1 .. n, padded with 1
    i_max = int(nt.max()) if nt.numel() else 1
    i = torch.arange(1, i_max + 1, device=nt.device, dtype=torch.float64)  # (i_max,)
    n_, c_, k_ = (t.unsqueeze(-1).to(torch.float64) for t in (nt, ct, kt))  # (..., 1)
    use = (i > n_ - c_) & (i <= n_)  # (..., i_max)
    factors = torch.where(use, 1.0 - k_ / i, torch.ones((), dtype=torch.float64, device=nt.device))
    out = 1.0 - factors.prod(dim=-1)
    out = torch.where(nt - ct < kt, torch.ones_like(out), out)  # a factor is <= 0: certain success
    return float(out) if as_python else out


def majority_vote(answers: Sequence[Any] | torch.Tensor) -> Any:
    """The most frequent answer (self-consistency); ties go to the answer that appears first.

    Implements (reasoning-majority). Tie rule: among the answers with the largest count, the
    one whose *first occurrence* is earliest wins. This is what
    ``collections.Counter(answers).most_common(1)[0][0]`` returns (Counter keeps insertion
    order and sorts stably), so the rule is easy to reproduce.

    Args:
        answers: a non-empty sequence of hashable answers, or an integer tensor of shape
            ``(..., N)``, voted along the last dimension (the tensor path compares all pairs,
            ``O(N^2)`` memory per row: fine for ``N`` up to a few thousand).

    Returns:
        For a sequence, the winning element. For a tensor, a tensor of shape ``(...)`` with
        the winner of each row, same dtype and device.

    Raises:
        TypeError: for a float tensor (equal answers should be compared exactly), a string,
            or a non-sequence.
        ValueError: for an empty input.

    >>> majority_vote([3, 5, 5, 3, 7])  # 3 and 5 tie, 3 came first
    3
    >>> majority_vote(torch.tensor([[1, 2, 2], [4, 4, 9]]))
    tensor([2, 4])
    """
    if isinstance(answers, torch.Tensor):
        _check_int_tensor("answers", answers)
        if answers.dim() == 0 or answers.shape[-1] == 0:
            raise ValueError(f"answers must have shape (..., N) with N >= 1, got {tuple(answers.shape)}")
        # counts[..., j] = how often answers[..., j] occurs in its row
        counts = (answers.unsqueeze(-1) == answers.unsqueeze(-2)).sum(-1)  # (..., N)
        best = counts.max(dim=-1, keepdim=True).values
        N = answers.shape[-1]
        pos = torch.arange(N, device=answers.device).expand_as(answers)
        # earliest position holding a most frequent answer = that answer's first occurrence
        first = torch.where(counts == best, pos, torch.full_like(pos, N)).min(dim=-1, keepdim=True).values
        return answers.gather(-1, first).squeeze(-1)
    if isinstance(answers, (str, bytes)) or not isinstance(answers, Sequence):
        raise TypeError(f"answers must be a sequence or an integer tensor, got {type(answers).__name__}")
    if len(answers) == 0:
        raise ValueError("answers must be non-empty")
    counts: dict[Any, int] = {}
    for a in answers:  # dicts keep insertion order: the first occurrence decides ties
        counts[a] = counts.get(a, 0) + 1
    best = max(counts.values())
    return next(a for a, m in counts.items() if m == best)


def rejection_sample(
    generate: Callable[[int], Any], verify: Callable[[Any], torch.Tensor], n: int
) -> tuple[Any, float]:
    """Draw ``n`` candidates, keep those the verifier accepts (rejection-sampling fine-tuning data).

    Implements (reasoning-rejection): the kept samples are distributed as the model's samples
    conditioned on being accepted, ``pi(y | x, accepted)``.

    Args:
        generate: ``generate(n)`` returns ``n`` candidates: a tensor whose first dimension is
            ``n``, or a tuple of such tensors (e.g. ``(prompts, completions)``).
        verify: ``verify(candidates)`` returns a bool tensor of shape ``(n,)``, True = accept.
        n: number of candidates to draw (>= 1); ``generate`` is called once.

    Returns:
        ``(kept, rate)``: the accepted candidates in the same structure as ``generate``'s
        output (each tensor indexed by the acceptance mask, order preserved), and the
        acceptance rate ``accepted / n`` as a float.

    Raises:
        TypeError: if ``generate`` or ``verify`` is not callable, ``n`` is not an int, or they
            return the wrong types.
        ValueError: if ``n < 1`` or the shapes do not match ``n``.

    >>> gen = lambda m: torch.arange(m)
    >>> kept, rate = rejection_sample(gen, lambda x: x % 2 == 0, 10)
    >>> kept.tolist(), rate
    ([0, 2, 4, 6, 8], 0.5)
    """
    if not callable(generate) or not callable(verify):
        raise TypeError("generate and verify must be callables")
    if isinstance(n, bool) or not isinstance(n, int):
        raise TypeError(f"n must be an int, got {type(n).__name__}")
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    samples = generate(n)
    parts = samples if isinstance(samples, tuple) else (samples,)
    for p in parts:
        if not isinstance(p, torch.Tensor):
            raise TypeError(f"generate must return a tensor or a tuple of tensors, got {type(p).__name__}")
        if p.dim() == 0 or p.shape[0] != n:
            raise ValueError(f"generate({n}) must return tensors with first dimension {n}, got {tuple(p.shape)}")
    ok = verify(samples)
    if not isinstance(ok, torch.Tensor) or ok.dtype != torch.bool:
        raise TypeError("verify must return a bool tensor")
    if ok.shape != (n,):
        raise ValueError(f"verify must return shape ({n},), got {tuple(ok.shape)}")
    kept = tuple(p[ok.to(p.device)] for p in parts)
    rate = float(ok.sum()) / n
    return (kept if isinstance(samples, tuple) else kept[0]), rate
