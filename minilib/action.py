"""Online action detection: causal windows, a tiny OadTR, and per-frame (calibrated) AP.

Conventions: a stream is a tensor of frame features ``(B, T, D)`` with per-frame labels
``(B, T)`` in ``0..C`` where ``0`` is background. An *online* detector's output at frame ``t``
may depend on frames ``1..t`` only (equation (oad-online)). Scores are per frame and per class,
``(T, C + 1)``; evaluation ranks all frames of a test set by one class's score.

Everything follows the device and dtype of its inputs.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from minilib._validate import float_tensor as _check_float

__all__ = [
    "OadTR",
    "causal_windows",
    "frame_average_precision",
    "per_frame_map",
]


def _positive_int(name: str, v: object) -> int:
    if not isinstance(v, int) or isinstance(v, bool) or v < 1:
        raise ValueError(f"{name} must be a positive int, got {v!r}")
    return v


def causal_windows(x: torch.Tensor, window: int) -> torch.Tensor:
    """The last ``window`` frames up to and including each frame, zero-padded before the start.

    Implements (oad-window): ``out[b, t, j] = x[b, t - window + 1 + j]`` for
    ``j = 0..window-1`` (oldest first, the current frame last), and zeros where that index is
    negative. Nothing after frame ``t`` enters ``out[b, t]``.

    Args:
        x: ``(B, T, D)`` float features.
        window: ``W >= 1`` frames per window.

    Returns:
        ``(B, T, W, D)``.

    >>> x = torch.arange(4.0).reshape(1, 4, 1)
    >>> causal_windows(x, 3)[0, :, :, 0].tolist()
    [[0.0, 0.0, 0.0], [0.0, 0.0, 1.0], [0.0, 1.0, 2.0], [1.0, 2.0, 3.0]]
    """
    _check_float("x", x)
    if x.dim() != 3:
        raise ValueError(f"x must have shape (B, T, D), got {tuple(x.shape)}")
    _positive_int("window", window)
    padded = F.pad(x, (0, 0, window - 1, 0))  # (B, W - 1 + T, D): zeros before frame 0
    return padded.unfold(1, window, 1).permute(0, 1, 3, 2)  # (B, T, D, W) -> (B, T, W, D)


class OadTR(nn.Module):
    """A tiny OadTR: an encoder over a window of past frames with a task token, and a decoder
    whose queries anticipate the next frames.

    Implements (oad-encoder), (oad-decoder) and (oad-head): the window's frames are embedded
    linearly, a learned task token is put first, learned position embeddings are added, and a
    transformer encoder runs over the ``W + 1`` tokens; ``future`` learned queries cross-attend
    to the encoder's output (and causally to each other: query ``k`` reads queries ``1..k``)
    and each predicts the class of one future frame; the current
    frame's class is predicted from the task token's output concatenated with the mean of the
    decoder's outputs. Pre-norm layers, no dropout (the lab's data is small and clean).

    Args:
        in_dim: frame feature dimension ``D``.
        n_classes: number of outputs, background included (``C + 1``).
        window: ``W``, frames per window.
        future: number of anticipated frames (decoder queries), ``>= 1``.
        d_model, heads, enc_layers, dec_layers, ff: transformer sizes.

    ``forward(windows)`` takes ``(N, W, D)`` and returns ``(current (N, C + 1),
    future (N, future, C + 1))`` logits.
    """

    def __init__(self, in_dim: int, n_classes: int, window: int, future: int = 4, d_model: int = 32,
                 heads: int = 4, enc_layers: int = 2, dec_layers: int = 1, ff: int = 64) -> None:
        super().__init__()
        for name, v in (("in_dim", in_dim), ("n_classes", n_classes), ("window", window), ("future", future),
                        ("d_model", d_model), ("heads", heads), ("enc_layers", enc_layers),
                        ("dec_layers", dec_layers), ("ff", ff)):
            _positive_int(name, v)
        if d_model % heads:
            raise ValueError(f"d_model ({d_model}) must be divisible by heads ({heads})")
        self.window, self.future = window, future
        self.embed = nn.Linear(in_dim, d_model)
        self.task_token = nn.Parameter(0.02 * torch.randn(1, 1, d_model))
        self.pos = nn.Parameter(0.02 * torch.randn(1, window + 1, d_model))
        enc = nn.TransformerEncoderLayer(d_model, heads, ff, dropout=0.0, batch_first=True, norm_first=True)
        self.encoder = nn.TransformerEncoder(enc, enc_layers, enable_nested_tensor=False)
        self.queries = nn.Parameter(0.02 * torch.randn(1, future, d_model))
        dec = nn.TransformerDecoderLayer(d_model, heads, ff, dropout=0.0, batch_first=True, norm_first=True)
        self.decoder = nn.TransformerDecoder(dec, dec_layers)
        self.future_head = nn.Linear(d_model, n_classes)
        self.head = nn.Linear(2 * d_model, n_classes)

    def forward(self, windows: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        _check_float("windows", windows)
        if windows.dim() != 3 or windows.shape[1] != self.window:
            raise ValueError(f"windows must have shape (N, {self.window}, D), got {tuple(windows.shape)}")
        n = windows.shape[0]
        tokens = torch.cat([self.task_token.expand(n, -1, -1), self.embed(windows)], 1) + self.pos  # (N, W+1, d)
        memory = self.encoder(tokens)  # (N, W+1, d)
        # query k may read queries 1..k (as in the reference implementation): a causal self-attention mask
        causal = nn.Transformer.generate_square_subsequent_mask(self.future, device=windows.device, dtype=windows.dtype)
        q = self.decoder(self.queries.expand(n, -1, -1), memory, tgt_mask=causal)  # (N, future, d)
        current = self.head(torch.cat([memory[:, 0], q.mean(1)], -1))  # (oad-head)
        return current, self.future_head(q)


def _check_scores_targets(scores: object, targets: object) -> tuple[torch.Tensor, torch.Tensor]:
    scores = _check_float("scores", scores)
    if scores.dim() != 1:
        raise ValueError(f"scores must be 1-D (one score per frame), got shape {tuple(scores.shape)}")
    if not isinstance(targets, torch.Tensor) or targets.shape != scores.shape:
        raise ValueError(f"targets must be a tensor of the shape of scores {tuple(scores.shape)}")
    if not torch.isfinite(scores).all():
        raise ValueError("scores must be finite")
    if targets.dtype != torch.bool and not ((targets == 0) | (targets == 1)).all():
        raise ValueError("targets must be booleans or 0/1 values")
    return scores, targets.to(device=scores.device, dtype=torch.bool)


def frame_average_precision(scores: torch.Tensor, targets: torch.Tensor, calibrated: bool = False) -> float:
    """Average precision of one class over frames, optionally calibrated (De Geest et al.).

    Implements (oad-ap) and, with ``calibrated=True``, (oad-cap): frames are ranked by
    decreasing score (ties keep their order in the input); at rank ``k`` with ``TP(k)`` true and
    ``FP(k)`` false positives the precision is ``w TP / (w TP + FP)`` with ``w = 1``, or
    ``w = N / P`` (negatives over positives) when calibrated (equation (oad-cprec)); AP is the
    mean of the precision over the ranks of the ``P`` positive frames. Not interpolated.

    Args:
        scores: ``(T,)`` float scores.
        targets: ``(T,)`` booleans (or 0/1), whether each frame belongs to the class.
        calibrated: use calibrated precision.

    Returns:
        The AP in ``[0, 1]`` (``1.0`` when every frame is positive); ``ValueError`` if there
        is no positive frame.

    >>> frame_average_precision(torch.tensor([0.9, 0.8, 0.1]), torch.tensor([1, 0, 1]))
    0.8333333333333333
    """
    scores, targets = _check_scores_targets(scores, targets)
    p = int(targets.sum())
    if p == 0:
        raise ValueError("targets must contain at least one positive frame")
    n = targets.numel() - p
    if n == 0:
        return 1.0  # no negative frame: every rank has precision 1 (and w = N / P = 0 would give 0/0)
    order = torch.sort(scores, descending=True, stable=True).indices
    hit = targets[order].double()
    tp, fp = hit.cumsum(0), (1 - hit).cumsum(0)
    w = n / p if calibrated else 1.0
    precision = w * tp / (w * tp + fp)  # (oad-cprec); never 0/0 at a positive rank since tp >= 1
    return float((precision * hit).sum() / p)


def per_frame_map(
    scores: torch.Tensor, labels: torch.Tensor, calibrated: bool = False
) -> tuple[float, torch.Tensor]:
    """Mean over action classes of the per-frame AP (background, class 0, is not a class here).

    Args:
        scores: ``(T, C + 1)`` per-frame scores (logits or probabilities; only the ranking of
            frames within a class matters).
        labels: ``(T,)`` ints in ``0..C``.
        calibrated: mean calibrated AP (mcAP) instead of mAP.

    Returns:
        ``(mean, per_class)`` where ``per_class`` is ``(C,)`` float64 with ``nan`` for a class
        with no frame in ``labels`` (left out of the mean).

    >>> s = torch.tensor([[0.0, 0.9, 0.1], [0.0, 0.2, 0.8], [1.0, 0.1, 0.1]])
    >>> per_frame_map(s, torch.tensor([1, 2, 0]))[0]
    1.0
    """
    scores = _check_float("scores", scores)
    if scores.dim() != 2 or scores.shape[1] < 2:
        raise ValueError(f"scores must have shape (T, C + 1) with C >= 1, got {tuple(scores.shape)}")
    if not isinstance(labels, torch.Tensor) or labels.shape != scores.shape[:1]:
        raise ValueError(f"labels must be a tensor of shape ({scores.shape[0]},)")
    if scores.shape[0] == 0:
        raise ValueError("scores must have at least one frame, got shape (0, C + 1)")
    if labels.is_floating_point() or labels.min() < 0 or labels.max() >= scores.shape[1]:
        raise ValueError(f"labels must be ints in 0..{scores.shape[1] - 1}")
    per_class = torch.full((scores.shape[1] - 1,), float("nan"), dtype=torch.float64)
    for c in range(1, scores.shape[1]):
        if (labels == c).any():
            per_class[c - 1] = frame_average_precision(scores[:, c], labels == c, calibrated)
    present = ~per_class.isnan()
    if not present.any():
        raise ValueError("labels contain no action frame (every frame is background)")
    return float(per_class[present].mean()), per_class
