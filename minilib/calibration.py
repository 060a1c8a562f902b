"""Calibration, error detection and a synthetic fact base, for the hallucination chapter.

* :func:`expected_calibration_error` and :func:`reliability_curve`: equal-width binning of
  confidences in ``[0, 1]``, as in the reliability diagrams of Guo et al. (2017) and the ECE
  of Naeini et al. (2015).
* :func:`auroc`: the area under the ROC curve as a rank statistic (ties count one half).
* :func:`fact_base`: a world of arbitrary facts "entity attribute -> value" and a training
  corpus that samples them from a Zipf-like distribution, so that many facts are seen once
  (singletons) and many never.

Conventions: confidences are the probability a model gives to its own answer; ``correct`` is
``True`` (or 1) when that answer is right. Bin ``b`` (0-based) of ``n_bins`` equal-width bins
is the interval ``(b / n_bins, (b + 1) / n_bins]``; a confidence of exactly 0 goes to bin 0.

>>> conf = torch.tensor([0.95, 0.9, 0.3, 0.2])
>>> correct = torch.tensor([True, True, False, True])
>>> round(expected_calibration_error(conf, correct, n_bins=2), 4)
0.1625
>>> auroc(torch.tensor([0.1, 0.4, 0.35, 0.8]), torch.tensor([0, 0, 1, 1]))
0.75
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

__all__ = [
    "FactBase",
    "ReliabilityCurve",
    "auroc",
    "expected_calibration_error",
    "fact_base",
    "reliability_curve",
]


def _check_n_bins(n_bins: object) -> int:
    if not isinstance(n_bins, int) or isinstance(n_bins, bool) or n_bins < 1:
        raise ValueError(f"n_bins must be an int >= 1, got {n_bins!r}")
    return n_bins


def _check_confidences(confidences: object, correct: object) -> tuple[torch.Tensor, torch.Tensor]:
    if not isinstance(confidences, torch.Tensor):
        raise TypeError(f"confidences must be a torch.Tensor, got {type(confidences).__name__}")
    if not confidences.is_floating_point():
        raise TypeError(f"confidences must be a floating-point tensor, got dtype {confidences.dtype}")
    if confidences.dim() != 1 or confidences.numel() == 0:
        raise ValueError(f"confidences must be a non-empty 1-D tensor, got shape {tuple(confidences.shape)}")
    if not isinstance(correct, torch.Tensor):
        raise TypeError(f"correct must be a torch.Tensor, got {type(correct).__name__}")
    if correct.shape != confidences.shape:
        raise ValueError(
            f"correct must have the shape of confidences {tuple(confidences.shape)}, got {tuple(correct.shape)}"
        )
    if torch.isnan(confidences).any() or (confidences < 0).any() or (confidences > 1).any():
        raise ValueError("confidences must lie in [0, 1]")
    if correct.dtype != torch.bool:
        if not ((correct == 0) | (correct == 1)).all():
            raise ValueError("correct must be boolean or contain only 0 and 1")
    return confidences, correct.to(confidences.dtype)


@dataclass
class ReliabilityCurve:
    """Per-bin statistics of a reliability diagram; every field has shape ``(n_bins,)``.

    Attributes:
        lower, upper: the bin edges; bin ``b`` is ``(lower[b], upper[b]]``.
        counts: how many confidences fall in each bin (float, in the confidences' dtype).
        confidence: the mean confidence in each bin (NaN for an empty bin).
        accuracy: the fraction correct in each bin (NaN for an empty bin).
    """

    lower: torch.Tensor
    upper: torch.Tensor
    counts: torch.Tensor
    confidence: torch.Tensor
    accuracy: torch.Tensor


def reliability_curve(confidences: torch.Tensor, correct: torch.Tensor, n_bins: int = 15) -> ReliabilityCurve:
    """Bin ``confidences`` into ``n_bins`` equal-width bins and average confidence and accuracy.

    Implements the per-bin terms of (hallucination-ece): for bin ``B_b``, ``conf(B_b)`` is the
    mean confidence and ``acc(B_b)`` the fraction correct. Bin ``b`` is
    ``(b / n_bins, (b + 1) / n_bins]`` (0 goes to bin 0).

    Args:
        confidences: ``(N,)`` floats in ``[0, 1]``, the probability the model gives its answer.
        correct: ``(N,)`` bool (or 0/1) tensor, whether each answer is right.
        n_bins: the number of bins, ``>= 1``.

    Returns:
        A :class:`ReliabilityCurve` whose tensors are on the device, and in the dtype, of
        ``confidences``.
    """
    n_bins = _check_n_bins(n_bins)
    conf, corr = _check_confidences(confidences, correct)
    edges = torch.arange(n_bins + 1, dtype=torch.float64, device=conf.device) / n_bins  # b / n_bins exactly
    # bucketize(right=False) gives b with edges[b-1] < c <= edges[b] over the inner edges: bin (b/M, (b+1)/M]
    idx = torch.bucketize(conf.to(torch.float64), edges[1:-1], right=False)  # (N,)
    counts = torch.zeros(n_bins, dtype=conf.dtype, device=conf.device).index_add_(0, idx, torch.ones_like(conf))
    sum_conf = torch.zeros_like(counts).index_add_(0, idx, conf)
    sum_corr = torch.zeros_like(counts).index_add_(0, idx, corr)
    nan = torch.full_like(counts, float("nan"))
    nonempty = counts > 0
    mean_conf = torch.where(nonempty, sum_conf / counts.clamp_min(1), nan)
    acc = torch.where(nonempty, sum_corr / counts.clamp_min(1), nan)
    return ReliabilityCurve(edges[:-1].to(conf.dtype), edges[1:].to(conf.dtype), counts, mean_conf, acc)


def expected_calibration_error(confidences: torch.Tensor, correct: torch.Tensor, n_bins: int = 15) -> float:
    """The expected calibration error with equal-width bins, weighted by bin counts.

    Implements (hallucination-ece): ``sum_b |B_b| / N * |acc(B_b) - conf(B_b)|`` over the
    non-empty bins of :func:`reliability_curve`. It is 0 for a perfectly calibrated model (in
    every bin the fraction correct equals the mean confidence) and at most 1.

    Args:
        confidences: ``(N,)`` floats in ``[0, 1]``.
        correct: ``(N,)`` bool (or 0/1) tensor.
        n_bins: the number of equal-width bins, ``>= 1``.

    Returns:
        The ECE as a Python float.
    """
    curve = reliability_curve(confidences, correct, n_bins)
    nonempty = curve.counts > 0
    gaps = (curve.accuracy[nonempty] - curve.confidence[nonempty]).abs()
    return float((curve.counts[nonempty] * gaps).sum() / curve.counts.sum())


def auroc(scores: torch.Tensor, labels: torch.Tensor) -> float:
    """The area under the ROC curve of ``scores`` for detecting ``labels == 1``.

    Implements (hallucination-auroc): the probability that a random positive scores higher
    than a random negative, ties counting one half, computed from mid-ranks as
    ``(R_pos - n_pos (n_pos + 1) / 2) / (n_pos n_neg)``, where ``R_pos`` is the sum of the
    positives' ranks among all scores (1-based, tied scores sharing their mean rank).

    Args:
        scores: ``(N,)`` real scores; larger means "more likely positive". No NaN.
        labels: ``(N,)`` bool or 0/1 tensor with at least one positive and one negative.

    Returns:
        The AUROC as a Python float in ``[0, 1]``; 0.5 is chance.
    """
    if not isinstance(scores, torch.Tensor):
        raise TypeError(f"scores must be a torch.Tensor, got {type(scores).__name__}")
    if not isinstance(labels, torch.Tensor):
        raise TypeError(f"labels must be a torch.Tensor, got {type(labels).__name__}")
    if scores.dim() != 1:
        raise ValueError(f"scores must be a 1-D tensor, got shape {tuple(scores.shape)}")
    if labels.shape != scores.shape:
        raise ValueError(f"labels must have the shape of scores {tuple(scores.shape)}, got {tuple(labels.shape)}")
    if scores.is_floating_point() and torch.isnan(scores).any():
        raise ValueError("scores must not contain NaN")
    if labels.dtype != torch.bool and not ((labels == 0) | (labels == 1)).all():
        raise ValueError("labels must be boolean or contain only 0 and 1")
    pos = labels.bool()
    n_pos, n_neg = int(pos.sum()), int((~pos).sum())
    if n_pos == 0 or n_neg == 0:
        raise ValueError(f"labels must contain both classes, got {n_pos} positives and {n_neg} negatives")
    _, inverse, counts = torch.unique(scores, sorted=True, return_inverse=True, return_counts=True)
    counts = counts.to(torch.float64)
    below = torch.cumsum(counts, 0) - counts  # how many scores are strictly smaller
    midrank = below + (counts + 1) / 2  # (n_unique,) 1-based mean rank of each distinct value
    r_pos = midrank[inverse][pos].sum()
    return float((r_pos - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


@dataclass
class FactBase:
    """A world of arbitrary facts and a training corpus drawn from it.

    Attributes:
        answers: ``(n_entities, n_attributes)`` int64, the true value of each (entity, attribute)
            prompt, uniform over ``0 .. n_values - 1`` and independent across prompts.
        probs: ``(n_entities, n_attributes)`` float64, the probability ``D(q)`` with which the
            world mentions prompt ``q``; it sums to 1.
        train: ``(n_train, 2)`` int64 rows ``(entity, attribute)``, i.i.d. draws from ``probs``.
        counts: ``(n_entities, n_attributes)`` int64, how often each prompt occurs in ``train``.
        n_values: the number of possible values.
    """

    answers: torch.Tensor
    probs: torch.Tensor
    train: torch.Tensor
    counts: torch.Tensor
    n_values: int

    def singleton_rate(self) -> float:
        """``N_1 / n``: the fraction of training statements whose fact occurs exactly once.

        This is the Good-Turing estimate (hallucination-good-turing) of the missing mass.
        """
        return float((self.counts == 1).sum()) / self.train.shape[0]

    def missing_mass(self) -> float:
        """``M_0``: the probability under ``probs`` of the prompts never seen in ``train``.

        Implements (hallucination-missing-mass).
        """
        return float(self.probs[self.counts == 0].sum())

    def sample(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """``(n, 2)`` fresh i.i.d. prompts ``(entity, attribute)`` from ``probs``."""
        if not isinstance(n, int) or isinstance(n, bool) or n < 1:
            raise ValueError(f"n must be an int >= 1, got {n!r}")
        flat = torch.multinomial(self.probs.flatten(), n, replacement=True, generator=generator)
        n_attr = self.probs.shape[1]
        return torch.stack([flat // n_attr, flat % n_attr], dim=1)


def fact_base(
    n_entities: int,
    n_attributes: int,
    n_values: int,
    n_train: int,
    *,
    zipf: float = 1.0,
    generator: torch.Generator | None = None,
) -> FactBase:
    """Make a world of arbitrary facts and a corpus of ``n_train`` statements about it.

    Every prompt ``q = (entity, attribute)`` gets a true value uniform over ``n_values`` values,
    independently: an arbitrary fact, which nothing else in the world predicts. The world
    mentions prompts with Zipf-like probabilities ``D(q) ∝ rank(q) ** -zipf`` over a random
    ordering of the prompts, and the corpus is ``n_train`` i.i.d. draws from ``D``, each with its
    true value. These are the hypotheses of theorem hallucination-thm-arbitrary.

    Args:
        n_entities, n_attributes: sizes of the prompt grid (``>= 1``).
        n_values: number of possible values (``>= 2``).
        n_train: number of training statements (``>= 1``).
        zipf: the Zipf exponent (``>= 0``; 0 is uniform).
        generator: optional ``torch.Generator`` for reproducibility.

    >>> fb = fact_base(50, 2, 10, 200, generator=torch.Generator().manual_seed(0))
    >>> fb.answers.shape, int(fb.counts.sum()), round(float(fb.probs.sum()), 6)
    (torch.Size([50, 2]), 200, 1.0)
    """
    for name, value, minimum in [("n_entities", n_entities, 1), ("n_attributes", n_attributes, 1),
                                 ("n_values", n_values, 2), ("n_train", n_train, 1)]:
        if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
            raise ValueError(f"{name} must be an int >= {minimum}, got {value!r}")
    if not isinstance(zipf, (int, float)) or isinstance(zipf, bool) or not zipf >= 0:
        raise ValueError(f"zipf must be a number >= 0, got {zipf!r}")
    if generator is not None and not isinstance(generator, torch.Generator):
        raise TypeError(f"generator must be a torch.Generator or None, got {type(generator).__name__}")
    n_prompts = n_entities * n_attributes
    answers = torch.randint(n_values, (n_entities, n_attributes), generator=generator)
    rank = torch.randperm(n_prompts, generator=generator).to(torch.float64) + 1  # random order of popularity
    weights = rank ** (-float(zipf))
    probs = (weights / weights.sum()).reshape(n_entities, n_attributes)
    flat = torch.multinomial(probs.flatten(), n_train, replacement=True, generator=generator)
    train = torch.stack([flat // n_attributes, flat % n_attributes], dim=1)
    counts = torch.bincount(flat, minlength=n_prompts).reshape(n_entities, n_attributes)
    return FactBase(answers, probs, train, counts, n_values)
