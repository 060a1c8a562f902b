"""Object detection: boxes, IoU, NMS, anchors, RoI pooling, matching and mean average precision.

Conventions: boxes are ``xyxy`` in pixels, float tensors of shape ``(N, 4)`` holding
``(x1, y1, x2, y2)`` with ``x1 <= x2`` and ``y1 <= y2``, in continuous coordinates: the area is
``(x2 - x1) * (y2 - y1)`` with no ``+ 1`` (as torchvision and pycocotools). A pixel ``(i, j)``
(row ``i``, column ``j``) covers ``[j, j + 1) x [i, i + 1)``, so its centre is
``(j + 0.5, i + 0.5)``. Every function raises ``ValueError`` for a box with ``x2 < x1`` or
``y2 < y1`` and for non-finite boxes, scores or costs; empty box sets ``(0, 4)`` are allowed.

Everything follows the device and dtype of its inputs; index outputs are ``int64``. Nothing here
imports torchvision: the functions are written from the formulas in their docstrings, and the
tests compare them with plain-Python loops, ``torch.nn.functional``, ``scipy`` and ``pycocotools``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from minilib._validate import float_tensor as _check_float

__all__ = [
    "assign_anchors",
    "average_precision",
    "batched_nms",
    "box_area",
    "box_cxcywh_to_xyxy",
    "box_iou",
    "box_xyxy_to_cxcywh",
    "decode_boxes",
    "detr_loss",
    "detr_matching_cost",
    "encode_boxes",
    "faster_rcnn_loss",
    "fpn_level",
    "generalized_box_iou",
    "hungarian_match",
    "make_anchors",
    "mean_average_precision",
    "nms",
    "roi_align",
    "roi_pool",
    "rpn_proposals",
    "sample_labels",
    "smooth_l1",
    "spatial_pyramid_pool",
    "yolo_decode",
    "yolo_loss",
    "yolo_targets",
]

#: Largest ``dw``/``dh`` that :func:`decode_boxes` exponentiates, ``log(1000 / 16)``, as in
#: torchvision's ``BoxCoder``: a box never grows more than 62.5 times its anchor per step.
BBOX_XFORM_CLIP = math.log(1000.0 / 16)


# ---------------------------------------------------------------------------------------------
# validation
# ---------------------------------------------------------------------------------------------
def _check_boxes(name: str, boxes: Any) -> torch.Tensor:
    _check_float(name, boxes)
    if boxes.dim() != 2 or boxes.shape[-1] != 4:
        raise ValueError(f"{name} must have shape (N, 4) in xyxy, got {tuple(boxes.shape)}")
    if not bool(torch.isfinite(boxes).all()):
        raise ValueError(f"{name} must be finite, got NaN or inf")
    if bool((boxes[:, 2] < boxes[:, 0]).any()) or bool((boxes[:, 3] < boxes[:, 1]).any()):
        raise ValueError(f"{name} must be xyxy with x1 <= x2 and y1 <= y2, got a box with x2 < x1 or y2 < y1")
    return boxes


def _check_scores(name: str, scores: Any, n: int) -> torch.Tensor:
    _check_float(name, scores)
    if scores.dim() != 1 or scores.shape[0] != n:
        raise ValueError(f"{name} must have shape ({n},), got {tuple(scores.shape)}")
    if not bool(torch.isfinite(scores).all()):
        raise ValueError(f"{name} must be finite, got NaN or inf")
    return scores


def _check_labels(name: str, labels: Any, n: int) -> torch.Tensor:
    if not isinstance(labels, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(labels).__name__}")
    if labels.dtype.is_floating_point or labels.dtype.is_complex or labels.dtype == torch.bool:
        raise TypeError(f"{name} must be an integer tensor, got dtype {labels.dtype}")
    if labels.dim() != 1 or labels.shape[0] != n:
        raise ValueError(f"{name} must have shape ({n},), got {tuple(labels.shape)}")
    return labels


def _check_same(name_a: str, a: torch.Tensor, name_b: str, b: torch.Tensor) -> None:
    if a.dtype != b.dtype:
        raise TypeError(f"{name_a} and {name_b} must share a dtype, got {a.dtype} and {b.dtype}")
    if a.device != b.device:
        raise ValueError(f"{name_a} and {name_b} must be on one device, got {a.device} and {b.device}")


def _check_threshold(name: str, t: Any) -> float:
    if isinstance(t, bool) or not isinstance(t, (int, float)) or not math.isfinite(t):
        raise ValueError(f"{name} must be a finite number, got {t!r}")
    return float(t)


def _pair(name: str, v: Any) -> tuple[int, int]:
    if isinstance(v, int) and not isinstance(v, bool):
        v = (v, v)
    if (
        not isinstance(v, (tuple, list))
        or len(v) != 2
        or not all(isinstance(u, int) and not isinstance(u, bool) and u >= 1 for u in v)
    ):
        raise ValueError(f"{name} must be a positive int or a pair of positive ints, got {v!r}")
    return int(v[0]), int(v[1])


# ---------------------------------------------------------------------------------------------
# boxes
# ---------------------------------------------------------------------------------------------
def box_area(boxes: torch.Tensor) -> torch.Tensor:
    """Areas ``(x2 - x1) * (y2 - y1)`` of ``(N, 4)`` xyxy boxes, shape ``(N,)``.

    Implements (det-area).

    >>> box_area(torch.tensor([[0.0, 0.0, 2.0, 3.0], [1.0, 1.0, 1.0, 5.0]]))
    tensor([6., 0.])
    """
    _check_boxes("boxes", boxes)
    return (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])


def _inter_union(a: torch.Tensor, b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    lt = torch.maximum(a[:, None, :2], b[None, :, :2])
    rb = torch.minimum(a[:, None, 2:], b[None, :, 2:])
    wh = (rb - lt).clamp(min=0)
    inter = wh[..., 0] * wh[..., 1]
    area_a = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1])
    area_b = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    return inter, area_a[:, None] + area_b[None, :] - inter


def box_iou(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Intersection over union of every pair, shape ``(N, M)`` for ``a`` ``(N, 4)``, ``b`` ``(M, 4)``.

    ``IoU(A, B) = |A ∩ B| / |A ∪ B|``, with ``|A ∪ B| = |A| + |B| - |A ∩ B|``. When the union
    is empty (two zero-area boxes) the IoU is defined as 0 rather than ``0 / 0``.
    Implements (det-inter) and (det-iou).

    >>> box_iou(torch.tensor([[0.0, 0.0, 2.0, 2.0]]), torch.tensor([[1.0, 0.0, 3.0, 2.0]]))
    tensor([[0.3333]])
    """
    _check_boxes("a", a)
    _check_boxes("b", b)
    _check_same("a", a, "b", b)
    inter, union = _inter_union(a, b)
    return torch.where(union > 0, inter / torch.where(union > 0, union, torch.ones_like(union)), torch.zeros_like(union))


def generalized_box_iou(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Generalized IoU of every pair, shape ``(N, M)``, in ``[-1, 1]``.

    ``GIoU(A, B) = IoU(A, B) - |C \\ (A ∪ B)| / |C|`` where ``C`` is the smallest box that
    encloses both (Rezatofighi et al., 2019). If ``|C| = 0`` (both boxes the same point) the
    penalty is taken as 0. Implements (det-giou).

    >>> generalized_box_iou(torch.tensor([[0.0, 0.0, 1.0, 1.0]]), torch.tensor([[2.0, 0.0, 3.0, 1.0]]))
    tensor([[-0.3333]])
    """
    iou = box_iou(a, b)
    _, union = _inter_union(a, b)
    lt = torch.minimum(a[:, None, :2], b[None, :, :2])
    rb = torch.maximum(a[:, None, 2:], b[None, :, 2:])
    wh = rb - lt
    hull = wh[..., 0] * wh[..., 1]
    safe = torch.where(hull > 0, hull, torch.ones_like(hull))
    return iou - torch.where(hull > 0, (hull - union) / safe, torch.zeros_like(hull))


def box_cxcywh_to_xyxy(boxes: torch.Tensor) -> torch.Tensor:
    """``(cx, cy, w, h)`` to ``(cx - w/2, cy - h/2, cx + w/2, cy + h/2)``, shape ``(N, 4)``.

    Implements (det-cxcywh), right to left.

    >>> box_cxcywh_to_xyxy(torch.tensor([[1.0, 2.0, 2.0, 4.0]]))
    tensor([[0., 0., 2., 4.]])
    """
    _check_float("boxes", boxes)
    if boxes.dim() != 2 or boxes.shape[-1] != 4:
        raise ValueError(f"boxes must have shape (N, 4) in cxcywh, got {tuple(boxes.shape)}")
    if not bool(torch.isfinite(boxes).all()):
        raise ValueError("boxes must be finite, got NaN or inf")
    if bool((boxes[:, 2:] < 0).any()):
        raise ValueError("boxes must have w >= 0 and h >= 0 in cxcywh")
    c, wh = boxes[:, :2], boxes[:, 2:]
    return torch.cat([c - 0.5 * wh, c + 0.5 * wh], dim=1)


def box_xyxy_to_cxcywh(boxes: torch.Tensor) -> torch.Tensor:
    """``(x1, y1, x2, y2)`` to ``((x1 + x2)/2, (y1 + y2)/2, x2 - x1, y2 - y1)``, shape ``(N, 4)``.

    Implements (det-cxcywh), left to right.

    >>> box_xyxy_to_cxcywh(torch.tensor([[0.0, 0.0, 2.0, 4.0]]))
    tensor([[1., 2., 2., 4.]])
    """
    _check_boxes("boxes", boxes)
    return torch.cat([(boxes[:, :2] + boxes[:, 2:]) / 2, boxes[:, 2:] - boxes[:, :2]], dim=1)


# ---------------------------------------------------------------------------------------------
# non-maximum suppression
# ---------------------------------------------------------------------------------------------
def _greedy_nms(iou: torch.Tensor, order: torch.Tensor, threshold: float) -> torch.Tensor:
    # iou: (N, N) with pairs that must not suppress each other already set to 0.
    iou = iou[order][:, order]
    n = order.numel()
    removed = torch.zeros(n, dtype=torch.bool, device=iou.device)
    keep = []
    over = (iou > threshold).cpu()
    removed_cpu = removed.cpu()
    for i in range(n):
        if removed_cpu[i]:
            continue
        keep.append(i)
        removed_cpu |= over[i]
    idx = torch.tensor(keep, dtype=torch.int64, device=order.device)
    return order[idx]


def nms(boxes: torch.Tensor, scores: torch.Tensor, iou_threshold: float) -> torch.Tensor:
    """Greedy non-maximum suppression; kept indices (``int64``) by decreasing score.

    Visit boxes by decreasing score (equal scores: lower index first); keep a box unless its
    IoU with an already kept box is *strictly greater* than ``iou_threshold``. Boxes ``(N, 4)``
    xyxy, scores ``(N,)``; ``N = 0`` gives an empty result. Implements (det-nms-keep): the
    full ``(N, N)`` IoU matrix is computed at once, then one greedy pass over the sorted rows.

    >>> b = torch.tensor([[0.0, 0, 10, 10], [1, 1, 10, 10], [20, 20, 30, 30]])
    >>> nms(b, torch.tensor([0.9, 0.8, 0.7]), 0.5)
    tensor([0, 2])
    """
    _check_boxes("boxes", boxes)
    _check_scores("scores", scores, boxes.shape[0])
    t = _check_threshold("iou_threshold", iou_threshold)
    order = torch.sort(scores, descending=True, stable=True).indices
    return _greedy_nms(box_iou(boxes, boxes), order, t)


def batched_nms(
    boxes: torch.Tensor, scores: torch.Tensor, labels: torch.Tensor, iou_threshold: float
) -> torch.Tensor:
    """:func:`nms` run separately within each label; kept indices by decreasing score.

    A box is suppressed only by a kept box with the same label. ``labels`` is an ``(N,)``
    integer tensor. Equivalent to running :func:`nms` per label and merging by score.
    Implements (det-nms-keep) with the IoU of (det-batched-iou), zero across labels.

    >>> b = torch.tensor([[0.0, 0, 10, 10], [1, 1, 10, 10], [1, 1, 10, 10]])
    >>> batched_nms(b, torch.tensor([0.9, 0.8, 0.7]), torch.tensor([0, 1, 0]), 0.5)
    tensor([0, 1])
    """
    _check_boxes("boxes", boxes)
    _check_scores("scores", scores, boxes.shape[0])
    _check_labels("labels", labels, boxes.shape[0])
    t = _check_threshold("iou_threshold", iou_threshold)
    iou = box_iou(boxes, boxes)
    iou = torch.where(labels[:, None] == labels[None, :], iou, torch.zeros_like(iou))
    order = torch.sort(scores, descending=True, stable=True).indices
    return _greedy_nms(iou, order, t)


# ---------------------------------------------------------------------------------------------
# box coding and anchors
# ---------------------------------------------------------------------------------------------
def _check_weights(weights: Any) -> tuple[float, float, float, float]:
    if (
        not isinstance(weights, (tuple, list))
        or len(weights) != 4
        or not all(isinstance(w, (int, float)) and not isinstance(w, bool) and math.isfinite(w) and w > 0 for w in weights)
    ):
        raise ValueError(f"weights must be four positive finite numbers (wx, wy, ww, wh), got {weights!r}")
    return tuple(float(w) for w in weights)  # type: ignore[return-value]


def _positive_size(name: str, boxes: torch.Tensor) -> None:
    if bool(((boxes[:, 2] - boxes[:, 0]) <= 0).any()) or bool(((boxes[:, 3] - boxes[:, 1]) <= 0).any()):
        raise ValueError(f"{name} must have positive width and height")


def encode_boxes(
    boxes: torch.Tensor, anchors: torch.Tensor, weights: Sequence[float] = (1, 1, 1, 1)
) -> torch.Tensor:
    """Regression targets ``(N, 4)`` of boxes relative to their anchors (Faster R-CNN coding).

    With anchor centre ``(x_a, y_a)``, size ``(w_a, h_a)`` and box centre and size
    ``(x, y, w, h)``: ``t_x = w_x (x - x_a) / w_a``, ``t_y = w_y (y - y_a) / h_a``,
    ``t_w = w_w log(w / w_a)``, ``t_h = w_h log(h / h_a)``, as torchvision's ``BoxCoder.encode``
    with ``weights = (w_x, w_y, w_w, w_h)``. Both sets must have positive widths and heights.
    Implements (det-encode).

    >>> encode_boxes(torch.tensor([[1.0, 0.0, 3.0, 4.0]]), torch.tensor([[0.0, 0.0, 2.0, 2.0]]))
    tensor([[0.5000, 0.5000, 0.0000, 0.6931]])
    """
    _check_boxes("boxes", boxes)
    _check_boxes("anchors", anchors)
    _check_same("boxes", boxes, "anchors", anchors)
    if boxes.shape != anchors.shape:
        raise ValueError(f"boxes and anchors must have the same shape, got {tuple(boxes.shape)} and {tuple(anchors.shape)}")
    _positive_size("boxes", boxes)
    _positive_size("anchors", anchors)
    wx, wy, ww, wh = _check_weights(weights)
    aw, ah = anchors[:, 2] - anchors[:, 0], anchors[:, 3] - anchors[:, 1]
    ax, ay = anchors[:, 0] + 0.5 * aw, anchors[:, 1] + 0.5 * ah
    gw, gh = boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]
    gx, gy = boxes[:, 0] + 0.5 * gw, boxes[:, 1] + 0.5 * gh
    return torch.stack(
        [wx * (gx - ax) / aw, wy * (gy - ay) / ah, ww * torch.log(gw / aw), wh * torch.log(gh / ah)], dim=1
    )


def decode_boxes(
    deltas: torch.Tensor, anchors: torch.Tensor, weights: Sequence[float] = (1, 1, 1, 1)
) -> torch.Tensor:
    """Boxes ``(N, 4)`` xyxy from regression deltas ``(N, 4)``: the inverse of :func:`encode_boxes`.

    ``x = x_a + (t_x / w_x) w_a``, ``w = w_a exp(min(t_w / w_w, log(1000/16)))`` (and the same
    for ``y``, ``h``), then ``(x - w/2, y - h/2, x + w/2, y + h/2)``; the clamp keeps ``exp``
    from overflowing, as torchvision's ``BoxCoder.decode``. Implements (det-decode), then
    (det-cxcywh).

    >>> decode_boxes(torch.tensor([[0.5, 0.5, 0.0, math.log(2)]]), torch.tensor([[0.0, 0.0, 2.0, 2.0]]))
    tensor([[1., 0., 3., 4.]])
    """
    _check_float("deltas", deltas)
    if deltas.dim() != 2 or deltas.shape[-1] != 4:
        raise ValueError(f"deltas must have shape (N, 4), got {tuple(deltas.shape)}")
    if not bool(torch.isfinite(deltas).all()):
        raise ValueError("deltas must be finite, got NaN or inf")
    _check_boxes("anchors", anchors)
    _check_same("deltas", deltas, "anchors", anchors)
    if deltas.shape != anchors.shape:
        raise ValueError(f"deltas and anchors must have the same shape, got {tuple(deltas.shape)} and {tuple(anchors.shape)}")
    wx, wy, ww, wh = _check_weights(weights)
    aw, ah = anchors[:, 2] - anchors[:, 0], anchors[:, 3] - anchors[:, 1]
    ax, ay = anchors[:, 0] + 0.5 * aw, anchors[:, 1] + 0.5 * ah
    dx, dy = deltas[:, 0] / wx, deltas[:, 1] / wy
    dw = (deltas[:, 2] / ww).clamp(max=BBOX_XFORM_CLIP)
    dh = (deltas[:, 3] / wh).clamp(max=BBOX_XFORM_CLIP)
    cx, cy = dx * aw + ax, dy * ah + ay
    w, h = torch.exp(dw) * aw, torch.exp(dh) * ah
    return torch.stack([cx - 0.5 * w, cy - 0.5 * h, cx + 0.5 * w, cy + 0.5 * h], dim=1)


def make_anchors(
    feature_size: int | tuple[int, int],
    stride: float | tuple[float, float],
    sizes: Sequence[float],
    ratios: Sequence[float],
    *,
    dtype: torch.dtype = torch.float32,
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """Anchor boxes ``(H * W * len(sizes) * len(ratios), 4)`` xyxy on an ``H x W`` feature map.

    The anchor for cell ``(i, j)``, size ``s`` and ratio ``r = h / w`` has area ``s²``, so
    ``w = s / sqrt(r)``, ``h = s sqrt(r)``, and is centred on ``((j + 0.5) stride_x,
    (i + 0.5) stride_y)``. Rows are ordered by cell (row-major), then size, then ratio. Unlike
    torchvision's ``AnchorGenerator`` the corners are not rounded to integers and the centre is
    the cell's centre, not its corner. ``stride`` is a number or ``(stride_y, stride_x)``.
    Implements (det-anchor).

    >>> make_anchors((1, 2), 16, sizes=[8], ratios=[1.0, 4.0])
    tensor([[ 4.,  4., 12., 12.],
            [ 6.,  0., 10., 16.],
            [20.,  4., 28., 12.],
            [22.,  0., 26., 16.]])
    """
    H, W = _pair("feature_size", feature_size)
    if isinstance(stride, (int, float)) and not isinstance(stride, bool):
        stride = (stride, stride)
    if not isinstance(stride, (tuple, list)) or len(stride) != 2 or not all(
        isinstance(s, (int, float)) and not isinstance(s, bool) and math.isfinite(s) and s > 0 for s in stride
    ):
        raise ValueError(f"stride must be a positive number or a pair of them, got {stride!r}")
    for name, seq in (("sizes", sizes), ("ratios", ratios)):
        if len(seq) == 0 or not all(
            isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) and v > 0 for v in seq
        ):
            raise ValueError(f"{name} must be a non-empty sequence of positive finite numbers, got {seq!r}")
    s = torch.tensor([float(v) for v in sizes], dtype=dtype, device=device)
    r = torch.tensor([float(v) for v in ratios], dtype=dtype, device=device)
    w = (s[:, None] / torch.sqrt(r)[None, :]).reshape(-1)  # (S*R,) size-major, ratio-minor
    h = (s[:, None] * torch.sqrt(r)[None, :]).reshape(-1)
    cy = (torch.arange(H, dtype=dtype, device=device) + 0.5) * float(stride[0])
    cx = (torch.arange(W, dtype=dtype, device=device) + 0.5) * float(stride[1])
    cy, cx = torch.meshgrid(cy, cx, indexing="ij")
    cx, cy = cx.reshape(-1, 1), cy.reshape(-1, 1)
    boxes = torch.stack([cx - 0.5 * w, cy - 0.5 * h, cx + 0.5 * w, cy + 0.5 * h], dim=-1)
    return boxes.reshape(-1, 4)


# ---------------------------------------------------------------------------------------------
# region pooling
# ---------------------------------------------------------------------------------------------
def _check_features_rois(features: Any, rois: Any) -> torch.Tensor:
    _check_float("features", features)
    if features.dim() != 4:
        raise ValueError(f"features must have shape (B, C, H, W), got {tuple(features.shape)}")
    _check_float("rois", rois)
    if rois.dim() != 2 or rois.shape[-1] != 5:
        raise ValueError(f"rois must have shape (K, 5) as (batch_index, x1, y1, x2, y2), got {tuple(rois.shape)}")
    _check_boxes("rois[:, 1:]", rois[:, 1:])
    if rois.device != features.device:
        raise ValueError(f"rois and features must be on one device, got {rois.device} and {features.device}")
    b = rois[:, 0]
    if bool((b != torch.round(b)).any()) or bool(((b < 0) | (b >= features.shape[0])).any()):
        raise ValueError(f"rois[:, 0] must hold integer batch indices in [0, {features.shape[0]})")
    return b.long()


def _rect_max(x: torch.Tensor, mh: torch.Tensor, mw: torch.Tensor) -> torch.Tensor:
    """Max of ``x (K, C, H, W)`` over rectangles ``mh (K, P, H) x mw (K, Q, W)``; empty -> 0."""
    neg = torch.tensor(-math.inf, dtype=x.dtype, device=x.device)
    t = torch.where(mw[:, None, None, :, :], x[:, :, :, None, :], neg).amax(-1)  # (K, C, H, Q)
    t = torch.where(mh[:, None, :, :, None], t[:, :, None, :, :], neg).amax(-2)  # (K, C, P, Q)
    empty = ~(mh.any(-1)[:, :, None] & mw.any(-1)[:, None, :])  # (K, P, Q)
    return t.masked_fill(empty[:, None], 0)


def _round_half_away(x: torch.Tensor) -> torch.Tensor:
    return torch.sign(x) * torch.floor(x.abs() + 0.5)


def _check_roi_args(features: Any, rois: Any, output_size: Any, spatial_scale: Any) -> tuple[torch.Tensor, int, int, float]:
    """Shared validation of roi_pool and roi_align: (batch indices, out height, out width, scale)."""
    bidx = _check_features_rois(features, rois)
    PH, PW = _pair("output_size", output_size)
    scale = _check_threshold("spatial_scale", spatial_scale)
    if scale <= 0:
        raise ValueError(f"spatial_scale must be positive, got {spatial_scale}")
    return bidx, PH, PW, scale


def roi_pool(
    features: torch.Tensor,
    rois: torch.Tensor,
    output_size: int | tuple[int, int],
    spatial_scale: float = 1.0,
) -> torch.Tensor:
    """RoI max pooling (Fast R-CNN) with torchvision's quantization; output ``(K, C, PH, PW)``.

    ``features`` is ``(B, C, H, W)``; ``rois`` is ``(K, 5)`` rows ``(b, x1, y1, x2, y2)`` in input
    pixels. Corners are scaled by ``spatial_scale`` and rounded (half away from zero) to
    integer cells ``x1', y1', x2', y2'``; the roi spans ``h = max(y2' - y1' + 1, 1)`` cells
    (inclusive ends). Bin ``ph`` covers rows ``[y1' + floor(ph h / PH), y1' + ceil((ph + 1) h / PH))``
    clipped to ``[0, H]`` (likewise columns); the output is the max over the bin, or 0 if the
    clipped bin is empty. Implements (det-roipool-round) and (det-roipool-bins).

    >>> f = torch.arange(16.0).reshape(1, 1, 4, 4)
    >>> roi_pool(f, torch.tensor([[0.0, 0, 0, 3, 3]]), 2)
    tensor([[[[ 5.,  7.],
              [13., 15.]]]])
    """
    bidx, PH, PW, scale = _check_roi_args(features, rois, output_size, spatial_scale)
    _, C, H, W = features.shape
    K = rois.shape[0]
    if K == 0:
        return features.new_zeros(0, C, PH, PW)
    r = _round_half_away(rois[:, 1:].to(features.dtype) * scale).long()
    x1, y1, x2, y2 = r.unbind(1)
    rw = (x2 - x1 + 1).clamp(min=1).to(features.dtype)
    rh = (y2 - y1 + 1).clamp(min=1).to(features.dtype)

    def masks(start: torch.Tensor, size: torch.Tensor, P: int, L: int) -> torch.Tensor:
        p = torch.arange(P, dtype=features.dtype, device=features.device)
        binsz = size / P  # (K,)
        lo = torch.floor(p[None] * binsz[:, None]).long() + start[:, None]
        hi = torch.ceil((p[None] + 1) * binsz[:, None]).long() + start[:, None]
        lo, hi = lo.clamp(0, L), hi.clamp(0, L)
        ar = torch.arange(L, device=features.device)
        return (ar[None, None] >= lo[..., None]) & (ar[None, None] < hi[..., None])  # (K, P, L)

    return _rect_max(features[bidx], masks(y1, rh, PH, H), masks(x1, rw, PW, W))


def _bilinear_matrix(
    coord: torch.Tensor, valid_grid: torch.Tensor, L: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Weights ``(K, P, L)`` summing, over the samples ``coord (K, P, G)``, the 1-D bilinear
    weights of torchvision's ``bilinear_interpolate``, and the in-range mask ``(K, P, G)``."""
    inside = (coord >= -1.0) & (coord <= L) & valid_grid
    c = coord.clamp(min=0)
    low = torch.floor(c).long()
    edge = low >= L - 1
    low = torch.where(edge, torch.full_like(low, L - 1), low)
    high = torch.where(edge, low, low + 1)
    c = torch.where(edge, low.to(c.dtype), c)
    lw = c - low.to(c.dtype)
    hw = 1 - lw
    zero = torch.zeros((), dtype=c.dtype, device=c.device)
    lw, hw = torch.where(inside, lw, zero), torch.where(inside, hw, zero)
    m = hw[..., None] * F.one_hot(low, L).to(c.dtype) + lw[..., None] * F.one_hot(high, L).to(c.dtype)
    return m.sum(-2), inside


def roi_align(
    features: torch.Tensor,
    rois: torch.Tensor,
    output_size: int | tuple[int, int],
    spatial_scale: float = 1.0,
    sampling_ratio: int = -1,
    aligned: bool = True,
) -> torch.Tensor:
    """RoIAlign (Mask R-CNN) with torchvision's semantics; output ``(K, C, PH, PW)``.

    ``rois`` rows are ``(b, x1, y1, x2, y2)``. With ``o = 0.5`` if ``aligned`` else 0, the roi
    on the feature map starts at ``(x1 s - o, y1 s - o)`` (``s = spatial_scale``) and has size
    ``w = (x2 - x1) s``, ``h = (y2 - y1) s`` (each at least 1 when not aligned). Bin
    ``(ph, pw)`` averages ``g_h x g_w`` bilinear samples at
    ``y = y1 s - o + ph h/PH + (iy + 0.5) h / (PH g_h)`` (likewise ``x``), where
    ``g_h = sampling_ratio`` if positive else ``ceil(h / PH)``. A sample with ``y < -1``,
    ``y > H``, ``x < -1`` or ``x > W`` contributes 0 (but still counts in the average);
    otherwise the coordinate is clamped to ``>= 0`` and, at or past the last row/column,
    snapped to it, as torchvision's ``bilinear_interpolate``. Vectorized: bilinear weights are
    separable, so each roi is ``A_y F_b A_xᵀ / (g_h g_w)`` with ``(PH, H)`` and ``(PW, W)``
    weight matrices (the only Python loop is over the images that the rois refer to).
    Implements (det-roialign) and (det-bilinear).

    >>> f = torch.arange(16.0).reshape(1, 1, 4, 4)
    >>> roi_align(f, torch.tensor([[0.0, 0.5, 0.5, 2.5, 2.5]]), 2)
    tensor([[[[2.5000, 3.5000],
              [6.5000, 7.5000]]]])
    """
    bidx, PH, PW, scale = _check_roi_args(features, rois, output_size, spatial_scale)
    if isinstance(sampling_ratio, bool) or not isinstance(sampling_ratio, int):
        raise ValueError(f"sampling_ratio must be an int, got {sampling_ratio!r}")
    _, C, H, W = features.shape
    K = rois.shape[0]
    if K == 0:
        return features.new_zeros(0, C, PH, PW)
    dt, dev = features.dtype, features.device
    off = 0.5 if aligned else 0.0
    r = rois[:, 1:].to(dt)
    x1, y1 = r[:, 0] * scale - off, r[:, 1] * scale - off
    rw, rh = r[:, 2] * scale - off - x1, r[:, 3] * scale - off - y1
    if not aligned:
        rw, rh = rw.clamp(min=1.0), rh.clamp(min=1.0)
    bw, bh = rw / PW, rh / PH
    if sampling_ratio > 0:
        gw = torch.full((K,), sampling_ratio, dtype=torch.long, device=dev)
        gh = gw.clone()
    else:
        gw, gh = torch.ceil(rw / PW).long(), torch.ceil(rh / PH).long()
    Gh, Gw = max(int(gh.max()), 1), max(int(gw.max()), 1)

    def coords(start, binsz, g, P, G):
        p = torch.arange(P, dtype=dt, device=dev)
        i = torch.arange(G, dtype=dt, device=dev)
        base = start[:, None, None] + p[None, :, None] * binsz[:, None, None]
        step = (i[None, None, :] + 0.5) * binsz[:, None, None] / g.to(dt).clamp(min=1)[:, None, None]
        valid = (torch.arange(G, device=dev)[None, :] < g[:, None])[:, None, :].expand(-1, P, -1)
        return base + step, valid

    ycoord, yvalid = coords(y1, bh, gh, PH, Gh)
    xcoord, xvalid = coords(x1, bw, gw, PW, Gw)
    Ay, _ = _bilinear_matrix(ycoord, yvalid, H)  # (K, PH, H)
    Ax, _ = _bilinear_matrix(xcoord, xvalid, W)  # (K, PW, W)
    count = (gh * gw).clamp(min=1).to(dt)
    out = features.new_empty(K, C, PH, PW)
    for b in torch.unique(bidx).tolist():  # one pass per image, never per bin or sample
        sel = torch.nonzero(bidx == b).flatten()
        t = torch.einsum("kph,chw->kcpw", Ay[sel], features[b])
        out[sel] = torch.einsum("kcpw,kqw->kcpq", t, Ax[sel])
    return out / count[:, None, None, None]


def spatial_pyramid_pool(features: torch.Tensor, levels: Sequence[int] = (1, 2, 4)) -> torch.Tensor:
    """Spatial pyramid pooling (He et al., 2014): ``(B, C, H, W)`` to ``(B, C * Σ l²)``.

    For each level ``l`` the map is max-pooled adaptively into ``l x l`` bins, bin ``i`` covering
    rows ``[floor(i H / l), ceil((i + 1) H / l))`` (likewise columns, the bins of
    ``adaptive_max_pool2d``), and flattened as ``(C, l, l)`` row-major; the levels are
    concatenated in order. Implements (det-spp-bins).

    >>> spatial_pyramid_pool(torch.arange(16.0).reshape(1, 1, 4, 4), levels=(1, 2))
    tensor([[15.,  5.,  7., 13., 15.]])
    """
    _check_float("features", features)
    if features.dim() != 4 or min(features.shape[2:]) < 1:
        raise ValueError(f"features must have shape (B, C, H, W) with H, W >= 1, got {tuple(features.shape)}")
    if len(levels) == 0 or not all(isinstance(lv, int) and not isinstance(lv, bool) and lv >= 1 for lv in levels):
        raise ValueError(f"levels must be a non-empty sequence of positive ints, got {levels!r}")
    B, C, H, W = features.shape

    def bins(n: int, L: int) -> list[tuple[int, int]]:  # (det-spp-bins): [floor(iL/n), ceil((i+1)L/n))
        return [((i * L) // n, -((-(i + 1) * L) // n)) for i in range(n)]

    outs = []
    for lv in levels:
        # a max over a rectangle is a max over its rows, then over its columns (separable)
        rows = torch.stack([features[:, :, lo:hi].amax(2) for lo, hi in bins(lv, H)], 2)  # (B, C, l, W)
        cells = torch.stack([rows[..., lo:hi].amax(-1) for lo, hi in bins(lv, W)], -1)  # (B, C, l, l)
        outs.append(cells.reshape(B, -1))
    return torch.cat(outs, dim=1)


# ---------------------------------------------------------------------------------------------
# training targets and losses
# ---------------------------------------------------------------------------------------------
def assign_anchors(
    anchors: torch.Tensor, gt_boxes: torch.Tensor, pos_iou: float = 0.7, neg_iou: float = 0.3
) -> tuple[torch.Tensor, torch.Tensor]:
    """Label anchors for an RPN: ``(labels, matched_gt)``, both ``(A,)`` ``int64``.

    With ``IoU`` the ``(A, G)`` matrix, ``best_a = max_g IoU[a, g]``: label 1 if
    ``best_a >= pos_iou`` (torchvision's ``Matcher``; the paper writes "higher than 0.7"), 0 if
    ``best_a < neg_iou``, -1 (ignored) in between. Then, for each
    ground truth ``g`` with ``m_g = max_a IoU[a, g] > 0``, every anchor with ``IoU[a, g] = m_g``
    (ties included) is labelled 1 too (Faster R-CNN's rule, torchvision's
    ``allow_low_quality_matches``). ``matched_gt[a]`` is the lowest-index ``g`` attaining
    ``best_a``, also for such low-quality positives: it may differ from the ``g`` that made the
    anchor positive (as in torchvision and Detectron). With no ground truth every label is 0 and
    ``matched_gt`` is -1.

    Implements (frcnn-assign)

    >>> a = torch.tensor([[0.0, 0, 8, 8], [0, 0, 4, 4], [50, 50, 60, 60]])
    >>> assign_anchors(a, torch.tensor([[0.0, 0, 5, 5]]))
    (tensor([-1,  1,  0]), tensor([0, 0, 0]))
    """
    _check_boxes("anchors", anchors)
    _check_boxes("gt_boxes", gt_boxes)
    _check_same("anchors", anchors, "gt_boxes", gt_boxes)
    pos, neg = _check_threshold("pos_iou", pos_iou), _check_threshold("neg_iou", neg_iou)
    if not 0 <= neg <= pos <= 1:
        raise ValueError(f"need 0 <= neg_iou <= pos_iou <= 1, got neg_iou={neg_iou}, pos_iou={pos_iou}")
    A, G = anchors.shape[0], gt_boxes.shape[0]
    dev = anchors.device
    if G == 0:
        return torch.zeros(A, dtype=torch.long, device=dev), torch.full((A,), -1, dtype=torch.long, device=dev)
    iou = box_iou(anchors, gt_boxes)
    if A == 0:
        return torch.zeros(0, dtype=torch.long, device=dev), torch.zeros(0, dtype=torch.long, device=dev)
    best = iou.amax(dim=1)
    gidx = torch.arange(G, device=dev).expand(A, G)
    matched = torch.where(iou == best[:, None], gidx, torch.full_like(gidx, G)).amin(dim=1)
    labels = torch.full((A,), -1, dtype=torch.long, device=dev)
    labels[best < neg] = 0
    labels[best >= pos] = 1
    gt_best = iou.amax(dim=0)
    low_quality = ((iou == gt_best[None, :]) & (gt_best[None, :] > 0)).any(dim=1)
    labels[low_quality] = 1
    return labels, matched


def smooth_l1(x: torch.Tensor, beta: float = 1.0) -> torch.Tensor:
    """Elementwise smooth L1 (Huber / β): ``0.5 x² / β`` if ``|x| < β`` else ``|x| - 0.5 β``.

    ``beta = 0`` is the L1 loss ``|x|``. Same shape, dtype and device as ``x``. Its derivative
    is ``x / β`` inside ``|x| < β`` and ``sign(x)`` outside: bounded by 1, so one badly placed
    box cannot dominate a gradient step.

    Implements (frcnn-smooth-l1)

    >>> smooth_l1(torch.tensor([-2.0, 0.5, 0.0]))
    tensor([1.5000, 0.1250, 0.0000])
    """
    _check_float("x", x)
    b = _check_threshold("beta", beta)
    if b < 0:
        raise ValueError(f"beta must be >= 0, got {beta}")
    if b == 0:
        return x.abs()
    ax = x.abs()
    return torch.where(ax < b, 0.5 * x * x / b, ax - 0.5 * b)


# ---------------------------------------------------------------------------------------------
# average precision
# ---------------------------------------------------------------------------------------------
def _recall_thresholds() -> torch.Tensor:
    # Bit-identical to COCOeval's np.linspace(0, 1, 101): i * 0.01 in float64, last exactly 1.
    t = torch.arange(101, dtype=torch.float64) * 0.01
    t[-1] = 1.0
    return t


def _ap_sorted(tp: torch.Tensor, n_gt: int, interpolation: str) -> float:
    """AP from true-positive flags ``tp`` (D,) already in decreasing-score order (float64 CPU)."""
    tpc = torch.cumsum(tp.double(), 0)
    fpc = torch.cumsum(1 - tp.double(), 0)
    recall = tpc / n_gt
    precision = tpc / (tpc + fpc)
    if precision.numel():
        precision = torch.flip(torch.cummax(torch.flip(precision, [0]), 0).values, [0])
    if interpolation == "coco":
        thr = _recall_thresholds()
        idx = torch.searchsorted(recall, thr, side="left")
        q = torch.where(
            idx < recall.numel(),
            precision[idx.clamp(max=max(recall.numel() - 1, 0))] if recall.numel() else torch.zeros(101, dtype=torch.float64),
            torch.zeros((), dtype=torch.float64),
        )
        return float(q.mean())
    # voc: all-point area under the monotone envelope
    prev = torch.cat([torch.zeros(1, dtype=torch.float64), recall])
    return float(((prev[1:] - prev[:-1]) * precision).sum())


def _check_interp(interpolation: Any) -> str:
    if interpolation not in ("coco", "voc"):
        raise ValueError(f"interpolation must be 'coco' or 'voc', got {interpolation!r}")
    return interpolation


def average_precision(
    scores: torch.Tensor,
    is_true_positive: torch.Tensor,
    n_ground_truth: int,
    interpolation: str = "coco",
) -> float:
    """Average precision of ``D`` ranked detections against ``n_ground_truth`` objects.

    Detections are sorted by decreasing score (stable: equal scores keep their order); after
    the first ``k`` of them, recall ``R_k = TP_k / n_ground_truth`` and precision
    ``P_k = TP_k / k``. The envelope ``P̂_k = max_{j >= k} P_j`` makes precision monotone.
    ``"coco"``: mean over the 101 recall levels ``r ∈ {0, 0.01, …, 1}`` of ``P̂`` at the first
    ``k`` with ``R_k >= r`` (0 if recall never reaches ``r``), as COCOeval. The levels are
    COCOeval's float64 ``np.linspace(0, 1, 101)``, ten of which (0.35, 0.41, 0.47, 0.57, 0.69,
    0.70, 0.82, 0.83, 0.94, 0.95) lie one rounding error above ``i / 100``: a recall exactly
    equal to one of them (7 of 20 objects) does not reach it, as in pycocotools.
    ``"voc"``: all-point area ``Σ_k (R_k - R_{k-1}) P̂_k`` (PASCAL VOC 2010+). Unmatched ground
    truth simply caps the recall. Implements (fpn-yolo-pr), (fpn-yolo-envelope),
    (fpn-yolo-ap-coco) and (fpn-yolo-ap-voc).

    >>> average_precision(torch.tensor([0.9, 0.8, 0.7]), torch.tensor([True, False, True]), 2, "voc")
    0.8333333333333333
    """
    _check_float("scores", scores)
    if scores.dim() != 1:
        raise ValueError(f"scores must have shape (D,), got {tuple(scores.shape)}")
    _check_scores("scores", scores, scores.shape[0])
    if not isinstance(is_true_positive, torch.Tensor) or is_true_positive.dtype != torch.bool:
        raise TypeError("is_true_positive must be a bool tensor")
    if is_true_positive.shape != scores.shape:
        raise ValueError(f"is_true_positive must have shape {tuple(scores.shape)}, got {tuple(is_true_positive.shape)}")
    if isinstance(n_ground_truth, bool) or not isinstance(n_ground_truth, int) or n_ground_truth < 1:
        raise ValueError(f"n_ground_truth must be a positive int, got {n_ground_truth!r}")
    if int(is_true_positive.sum()) > n_ground_truth:
        raise ValueError("more true positives than ground-truth objects")
    interp = _check_interp(interpolation)
    order = torch.sort(scores.detach().cpu().double(), descending=True, stable=True).indices
    return _ap_sorted(is_true_positive.cpu()[order], n_ground_truth, interp)


def _check_image_dict(name: str, d: Any, with_scores: bool) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    if not isinstance(d, dict) or "boxes" not in d or "labels" not in d or (with_scores and "scores" not in d):
        keys = "boxes, scores and labels" if with_scores else "boxes and labels"
        raise ValueError(f"{name} must be a dict with {keys}")
    boxes = _check_boxes(f"{name}['boxes']", d["boxes"])
    labels = _check_labels(f"{name}['labels']", d["labels"], boxes.shape[0])
    scores = _check_scores(f"{name}['scores']", d["scores"], boxes.shape[0]) if with_scores else None
    return boxes, labels, scores


def mean_average_precision(
    predictions: Sequence[dict[str, torch.Tensor]],
    targets: Sequence[dict[str, torch.Tensor]],
    iou_thresholds: Sequence[float] = (0.5,),
    interpolation: str = "coco",
    max_detections: int = 100,
) -> float:
    """Mean average precision over classes and IoU thresholds, matching as COCOeval does.

    ``predictions[i]`` holds ``boxes (D_i, 4)`` xyxy, ``scores (D_i,)``, ``labels (D_i,)``;
    ``targets[i]`` holds ``boxes`` and ``labels``. Per image and class, the ``max_detections``
    highest-scoring predictions (stable order) are matched greedily by decreasing score, each to
    the still-unmatched ground truth of highest IoU with ``IoU >= min(t, 1 - 1e-10)`` (equal
    IoUs: the later ground truth, as COCOeval's loop); the rest are false positives. Per class the
    detections of all images are ranked by score and scored with :func:`average_precision`; the
    result is the mean over classes with at least one ground-truth box (a class with ground
    truth but no prediction scores 0; predicted classes without ground truth are ignored),
    then over thresholds.

    With ``iou_thresholds = 0.5 + 0.05 k`` (``k = 0..9``, ``np.linspace(.5, .95, 10)``) and
    ``"coco"`` this equals COCOeval's ``stats[0]`` (AP@[.5:.95], area "all", maxDets 100);
    with ``(0.5,)`` its ``stats[1]``. Differences from pycocotools: there are no crowd boxes and
    no area ranges (COCOeval's "all" range is ``[0, 1e10]`` px², so it would ignore a ground
    truth larger than that, this function never does); IoU uses the same continuous
    ``w * h`` areas with no ``+1`` (pycocotools computes it from xywh, which agrees up to
    float64 rounding of ``x1 + (x2 - x1)``); COCOeval returns -1 when no class has ground truth,
    this function returns ``nan``. ``"voc"`` changes only the interpolation of the PR curve,
    not the matching: the VOC devkit instead requires ``IoU > 0.5`` strictly and marks a
    detection whose best ground truth is already taken as a false positive. Implements
    (fpn-yolo-match) and (fpn-yolo-map).

    >>> p = [{"boxes": torch.tensor([[0.0, 0, 10, 10]]), "scores": torch.tensor([0.9]), "labels": torch.tensor([1])}]
    >>> t = [{"boxes": torch.tensor([[0.0, 0, 10, 10], [20.0, 20, 30, 30]]), "labels": torch.tensor([1, 1])}]
    >>> round(mean_average_precision(p, t), 4)
    0.505
    """
    if not isinstance(predictions, Sequence) or not isinstance(targets, Sequence):
        raise TypeError("predictions and targets must be lists of dicts, one per image")
    if len(predictions) != len(targets):
        raise ValueError(f"predictions and targets must have one entry per image, got {len(predictions)} and {len(targets)}")
    if len(iou_thresholds) == 0:
        raise ValueError("iou_thresholds must be non-empty")
    thrs = [_check_threshold("iou_thresholds", t) for t in iou_thresholds]
    if not all(0 <= t <= 1 for t in thrs):
        raise ValueError(f"iou_thresholds must lie in [0, 1], got {iou_thresholds!r}")
    interp = _check_interp(interpolation)
    if isinstance(max_detections, bool) or not isinstance(max_detections, int) or max_detections < 1:
        raise ValueError(f"max_detections must be a positive int, got {max_detections!r}")
    preds, gts = [], []
    for i, (p, t) in enumerate(zip(predictions, targets)):
        pb, pl, ps = _check_image_dict(f"predictions[{i}]", p, True)
        tb, tl, _ = _check_image_dict(f"targets[{i}]", t, False)
        preds.append((pb.detach().cpu().double(), pl.cpu(), ps.detach().cpu().double()))
        gts.append((tb.detach().cpu().double(), tl.cpu()))
    classes = sorted({int(c) for _, tl in gts for c in tl.tolist()})
    if not classes:
        return math.nan
    per_thr = []
    # Per (class, image): scores of the kept detections, their IoU with the class's ground truth.
    cache: dict[int, list[tuple[torch.Tensor, torch.Tensor]]] = {}
    n_gt: dict[int, int] = {}
    for c in classes:
        items = []
        n = 0
        for (pb, pl, ps), (tb, tl) in zip(preds, gts):
            dmask, gmask = pl == c, tl == c
            db, ds, gb = pb[dmask], ps[dmask], tb[gmask]
            order = torch.sort(ds, descending=True, stable=True).indices[:max_detections]
            db, ds = db[order], ds[order]
            items.append((ds, box_iou(db, gb)))
            n += gb.shape[0]
        cache[c], n_gt[c] = items, n
    for t in thrs:
        thr = min(t, 1 - 1e-10)
        aps = []
        for c in classes:
            all_scores, all_tp = [], []
            for ds, iou in cache[c]:
                D, G = iou.shape
                tp = torch.zeros(D, dtype=torch.bool)
                taken = torch.zeros(G, dtype=torch.bool)
                for d in range(D if G else 0):
                    row = torch.where(taken, torch.full_like(iou[d], -1.0), iou[d])
                    ok = row >= thr
                    if not bool(ok.any()):
                        continue
                    best = row[ok].max()
                    m = int(torch.nonzero(ok & (row == best)).max())  # ties: last gt, as COCOeval
                    taken[m] = True
                    tp[d] = True
                all_scores.append(ds)
                all_tp.append(tp)
            scores = torch.cat(all_scores)
            tps = torch.cat(all_tp)
            order = torch.sort(scores, descending=True, stable=True).indices
            aps.append(_ap_sorted(tps[order], n_gt[c], interp))
        per_thr.append(sum(aps) / len(aps))
    return float(sum(per_thr) / len(per_thr))


# ---------------------------------------------------------------------------------------------
# bipartite matching (DETR)
# ---------------------------------------------------------------------------------------------
def _lsa_rows_le_cols(a: np.ndarray) -> np.ndarray:
    """Shortest augmenting paths with potentials for an ``n x m`` cost, ``n <= m``.

    Returns ``col[i]`` for every row. Each row is added by a Dijkstra-like search over columns
    on reduced costs ``a[i, j] - u[i] - v[j] >= 0`` (detr-reduced-cost), moving the potentials
    by (detr-potential-update); O(n² m), vectorized over columns.
    """
    n, m = a.shape
    u = np.zeros(n + 1)
    v = np.zeros(m + 1)
    p = np.zeros(m + 1, dtype=np.int64)  # p[j]: row (1-based) matched to column j; column 0 is virtual
    way = np.zeros(m + 1, dtype=np.int64)
    for i in range(1, n + 1):
        p[0] = i
        j0 = 0
        minv = np.full(m + 1, np.inf)
        used = np.zeros(m + 1, dtype=bool)
        while True:
            used[j0] = True
            i0 = p[j0]
            free = ~used[1:]
            cur = a[i0 - 1] - u[i0] - v[1:]
            better = free & (cur < minv[1:])
            minv[1:][better] = cur[better]
            way[1:][better] = j0
            cand = np.where(free, minv[1:], np.inf)
            j1 = int(np.argmin(cand)) + 1
            delta = cand[j1 - 1]
            u[p[used]] += delta
            v[used] -= delta
            minv[1:][free] -= delta
            j0 = j1
            if p[j0] == 0:
                break
        while j0:
            j1 = way[j0]
            p[j0] = p[j1]
            j0 = j1
    col = np.empty(n, dtype=np.int64)
    for j in range(1, m + 1):
        if p[j]:
            col[p[j] - 1] = j - 1
    return col


def hungarian_match(cost: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Minimum-cost matching of size ``min(N, M)`` for an ``(N, M)`` cost: ``(rows, cols)`` int64.

    Minimizes ``Σ_k cost[rows[k], cols[k]]`` over matchings that use each row and column at most
    once and have ``min(N, M)`` pairs; ``rows`` is increasing. Kuhn–Munkres in the
    shortest-augmenting-path form (Jonker–Volgenant): rows are inserted one at a time along a
    shortest alternating path under reduced costs ``c_ij - u_i - v_j >= 0``, keeping dual
    potentials ``u, v``; O(N² M) for ``N <= M`` (``N > M`` is solved transposed). Computed in
    float64 on the CPU; indices come back on ``cost``'s device. With ties any optimal
    matching may be returned. Implements (detr-assignment) with the dual (detr-dual); each
    search step is the potential update (detr-potential-update).

    >>> hungarian_match(torch.tensor([[4.0, 1.0, 3.0], [2.0, 0.0, 5.0], [3.0, 2.0, 2.0]]))
    (tensor([0, 1, 2]), tensor([1, 0, 2]))
    """
    if not isinstance(cost, torch.Tensor):
        raise TypeError(f"cost must be a torch.Tensor, got {type(cost).__name__}")
    if cost.dim() != 2:
        raise ValueError(f"cost must have shape (N, M), got {tuple(cost.shape)}")
    if cost.dtype == torch.bool or cost.is_complex():
        raise TypeError(f"cost must be a real tensor, got dtype {cost.dtype}")
    c = cost.detach().cpu().double().numpy()
    if not np.isfinite(c).all():
        raise ValueError("cost must be finite, got NaN or inf")
    rows, cols = _hungarian_np(c)
    dev = cost.device
    return torch.as_tensor(rows, dtype=torch.long, device=dev), torch.as_tensor(cols, dtype=torch.long, device=dev)


def _hungarian_np(c: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """:func:`hungarian_match` on a finite float64 array, without checks: ``(rows, cols)`` int64."""
    N, M = c.shape
    if N == 0 or M == 0:
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64)
    if N <= M:
        return np.arange(N), _lsa_rows_le_cols(c)
    cols_t = _lsa_rows_le_cols(c.T)  # for every column, its row
    order = np.argsort(cols_t)
    return cols_t[order], np.arange(M)[order]


def detr_matching_cost(
    logits: torch.Tensor,
    boxes: torch.Tensor,
    gt_labels: torch.Tensor,
    gt_boxes: torch.Tensor,
    w_class: float = 1.0,
    w_l1: float = 5.0,
    w_giou: float = 2.0,
) -> torch.Tensor:
    """DETR's bipartite-matching cost ``(Q, G)`` between predictions and ground truth.

    ``C[q, g] = -w_class softmax(logits[q])[gt_labels[g]] + w_l1 ‖b_q - b̂_g‖₁
    - w_giou GIoU(b_q, b̂_g)``. As in DETR, ``boxes (Q, 4)`` and ``gt_boxes (G, 4)`` are
    normalized **cxcywh** ``(cx, cy, w, h)``; the L1 term is taken on these cxcywh coordinates
    and the GIoU after converting to xyxy. ``logits`` is ``(Q, K)`` (including any no-object
    class), ``gt_labels`` ``(G,)`` integers in ``[0, K)``. Feed the result to
    :func:`hungarian_match`. Implements (detr-match-cost).

    >>> lg = torch.tensor([[0.0, 0.0]])
    >>> b = torch.tensor([[0.5, 0.5, 0.2, 0.2]])
    >>> detr_matching_cost(lg, b, torch.tensor([1]), b)
    tensor([[-2.5000]])
    """
    _check_float("logits", logits)
    if logits.dim() != 2:
        raise ValueError(f"logits must have shape (Q, K), got {tuple(logits.shape)}")
    if not bool(torch.isfinite(logits).all()):
        raise ValueError("logits must be finite, got NaN or inf")
    Q, K = logits.shape
    pb = box_cxcywh_to_xyxy(boxes)
    gb = box_cxcywh_to_xyxy(gt_boxes)
    if boxes.shape[0] != Q:
        raise ValueError(f"boxes must have shape ({Q}, 4) to match logits, got {tuple(boxes.shape)}")
    _check_labels("gt_labels", gt_labels, gt_boxes.shape[0])
    _check_same("logits", logits, "boxes", boxes)
    _check_same("boxes", boxes, "gt_boxes", gt_boxes)
    if gt_labels.numel() and (int(gt_labels.min()) < 0 or int(gt_labels.max()) >= K):
        raise ValueError(f"gt_labels must lie in [0, {K}), got values outside")
    for name, w in (("w_class", w_class), ("w_l1", w_l1), ("w_giou", w_giou)):
        _check_threshold(name, w)
    prob = logits.softmax(dim=-1)[:, gt_labels.to(logits.device)]
    l1 = (boxes[:, None, :] - gt_boxes[None, :, :]).abs().sum(-1)
    return -w_class * prob + w_l1 * l1 - w_giou * generalized_box_iou(pb, gb)


# ---------------------------------------------------------------------------------------------
# fpn-yolo chapter: the FPN level rule, YOLO targets, loss and decoding
# ---------------------------------------------------------------------------------------------
def _int_arg(name: str, v: Any, low: int) -> int:
    if isinstance(v, bool) or not isinstance(v, int) or v < low:
        raise ValueError(f"{name} must be an int >= {low}, got {v!r}")
    return int(v)


def fpn_level(
    boxes: torch.Tensor, k0: int = 4, canonical: float = 224.0, k_min: int = 2, k_max: int = 5
) -> torch.Tensor:
    """The FPN pyramid level each box is pooled from, ``(N,)`` int64 (Lin et al., 2017).

    ``k = clamp(floor(k0 + log2(sqrt(w h) / canonical)), k_min, k_max)``: a box of side
    ``canonical`` goes to level ``k0``, and each halving of its side moves it one level down
    (finer). The floor is computed exactly: ``k`` is the largest integer with
    ``(canonical 2^(k - k0))² <= w h`` (float64), so boxes exactly on a boundary go up, with no
    ``eps`` (torchvision's ``LevelMapper`` adds ``1e-6`` inside the floor instead). A zero-area
    box goes to ``k_min``. Output on ``boxes``' device. Implements (fpn-yolo-level).

    >>> fpn_level(torch.tensor([[0.0, 0, 224, 224], [0, 0, 112, 112], [0, 0, 111, 112], [0, 0, 900, 900]]))
    tensor([4, 3, 2, 5])
    """
    _check_boxes("boxes", boxes)
    k0 = _int_arg("k0", k0, -(10**6))
    k_min, k_max = _int_arg("k_min", k_min, -(10**6)), _int_arg("k_max", k_max, -(10**6))
    if k_min > k_max:
        raise ValueError(f"need k_min <= k_max, got k_min={k_min}, k_max={k_max}")
    c = _check_threshold("canonical", canonical)
    if c <= 0:
        raise ValueError(f"canonical must be positive, got {canonical!r}")
    b = boxes.detach().double()
    area = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    pos = area > 0
    safe = torch.where(pos, area, torch.ones_like(area))
    k = torch.floor(k0 + 0.5 * torch.log2(safe / (c * c)))
    # exact floor: fix the (rare) off-by-one of log2's rounding at the boundaries
    k = torch.where((c * torch.exp2(k - k0)) ** 2 > safe, k - 1, k)
    k = torch.where((c * torch.exp2(k + 1 - k0)) ** 2 <= safe, k + 1, k)
    k = torch.where(pos, k, torch.full_like(k, float(k_min)))
    return k.clamp(k_min, k_max).long()


def yolo_targets(
    boxes: torch.Tensor, labels: torch.Tensor, grid: int, image_size: float
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """YOLO training targets of one image on an ``S x S`` grid: ``(obj, box, cls)``.

    The cell responsible for a box is the one containing its centre ``(c_x, c_y)``:
    ``j = floor(c_x / s)``, ``i = floor(c_y / s)`` with cell side ``s = image_size / S`` (a
    centre on the far edge goes to the last cell). Its box target is
    ``(c_x / s - j, c_y / s - i, sqrt(w / image_size), sqrt(h / image_size))``, every entry in
    ``[0, 1]``. A cell holds one object: when several centres share a cell the largest box
    (by area; equal areas: the later one) is kept, and the others are lost to the grid.

    Args:
        boxes: ``(G, 4)`` xyxy in pixels, inside ``[0, image_size]``.
        labels: ``(G,)`` integer class indices.
        grid: ``S``, cells per side.
        image_size: side of the square image in pixels.

    Returns:
        ``obj (S, S)`` bool (row ``i``, column ``j``), ``box (S, S, 4)`` in ``boxes``' dtype
        (zeros where ``obj`` is false), ``cls (S, S)`` int64 (``-1`` where ``obj`` is false), all
        on ``boxes``' device. Implements (fpn-yolo-responsible) and (fpn-yolo-box-target).

    >>> obj, box, cls = yolo_targets(torch.tensor([[4.0, 4, 12, 20]]), torch.tensor([2]), 2, 32)
    >>> obj.tolist(), [round(v, 4) for v in box[0, 0].tolist()], cls.tolist()
    ([[True, False], [False, False]], [0.5, 0.75, 0.5, 0.7071], [[2, -1], [-1, -1]])
    """
    _check_boxes("boxes", boxes)
    _check_labels("labels", labels, boxes.shape[0])
    S = _int_arg("grid", grid, 1)
    size = _check_threshold("image_size", image_size)
    if size <= 0:
        raise ValueError(f"image_size must be positive, got {image_size!r}")
    if boxes.numel() and (float(boxes.min()) < 0 or float(boxes.max()) > size):
        raise ValueError(f"boxes must lie inside [0, image_size] = [0, {size}]")
    dev, dt = boxes.device, boxes.dtype
    obj = torch.zeros(S, S, dtype=torch.bool, device=dev)
    box = torch.zeros(S, S, 4, dtype=dt, device=dev)
    cls = torch.full((S, S), -1, dtype=torch.long, device=dev)
    if boxes.shape[0] == 0:
        return obj, box, cls
    s = size / S
    w, h = boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]
    cx, cy = boxes[:, 0] + 0.5 * w, boxes[:, 1] + 0.5 * h
    j = torch.floor(cx / s).long().clamp(0, S - 1)
    i = torch.floor(cy / s).long().clamp(0, S - 1)
    t = torch.stack([cx / s - j, cy / s - i, torch.sqrt(w / size), torch.sqrt(h / size)], dim=1)
    # write smallest first, so that in a shared cell the largest box is written last and kept
    for g in torch.sort(w * h, stable=True).indices.tolist():
        obj[i[g], j[g]] = True
        box[i[g], j[g]] = t[g]
        cls[i[g], j[g]] = labels[g].to(dev)
    return obj, box, cls


def _check_yolo_pred(pred: Any) -> tuple[int, int, int]:
    _check_float("pred", pred)
    if pred.dim() != 4 or pred.shape[1] != pred.shape[2] or pred.shape[3] < 6:
        raise ValueError(f"pred must have shape (B, S, S, 5 + C) with C >= 1, got {tuple(pred.shape)}")
    return pred.shape[0], pred.shape[1], pred.shape[3] - 5


def _yolo_cell_boxes(p: torch.Tensor, S: int) -> torch.Tensor:
    """Squashed ``(..., S, S, 4)`` cell outputs ``(x, y, sqrt w, sqrt h)`` to boxes in image units."""
    j = torch.arange(S, dtype=p.dtype, device=p.device)
    cx = (j[None, :] + p[..., 0]) / S
    cy = (j[:, None] + p[..., 1]) / S
    w, h = p[..., 2] ** 2, p[..., 3] ** 2
    return torch.stack([cx - 0.5 * w, cy - 0.5 * h, cx + 0.5 * w, cy + 0.5 * h], dim=-1)


def yolo_loss(
    pred: torch.Tensor,
    obj: torch.Tensor,
    box: torch.Tensor,
    cls: torch.Tensor,
    lambda_coord: float = 5.0,
    lambda_noobj: float = 0.5,
    objectness: str = "iou",
) -> torch.Tensor:
    """YOLO's sum-squared loss with one box per cell, averaged over the batch (a scalar).

    ``pred`` is the raw head output ``(B, S, S, 5 + C)`` with channels
    ``(x, y, sqrt w, sqrt h, conf, class logits)``; the first five go through a sigmoid and
    the logits through a softmax, so every prediction lies in its target's range. With
    ``obj (B, S, S)``, ``box (B, S, S, 4)`` and ``cls (B, S, S)`` from :func:`yolo_targets`:

    ``L = (1/B) Σ_cells [ λ_coord 1_obj ‖b̂ - b‖² + 1_obj (Ĉ - C)² + λ_noobj 1_noobj Ĉ²
    + 1_obj ‖p̂ - onehot(cls)‖² ]``

    where ``C = IoU(decoded b̂, decoded b)`` (no gradient) if ``objectness == "iou"``, as in
    YOLO, or ``C = 1`` if ``"one"``. Implements (fpn-yolo-loss).
    """
    B, S, C = _check_yolo_pred(pred)
    if not isinstance(obj, torch.Tensor) or obj.dtype != torch.bool or obj.shape != (B, S, S):
        raise ValueError(f"obj must be a bool tensor of shape {(B, S, S)}")
    _check_float("box", box)
    if box.shape != (B, S, S, 4):
        raise ValueError(f"box must have shape {(B, S, S, 4)}, got {tuple(box.shape)}")
    if not isinstance(cls, torch.Tensor) or cls.dtype != torch.long or cls.shape != (B, S, S):
        raise ValueError(f"cls must be an int64 tensor of shape {(B, S, S)}")
    if bool((cls[obj] < 0).any()) or bool((cls[obj] >= C).any()):
        raise ValueError(f"cls must lie in [0, {C}) wherever obj is true")
    lc, ln = _check_threshold("lambda_coord", lambda_coord), _check_threshold("lambda_noobj", lambda_noobj)
    if lc < 0 or ln < 0:
        raise ValueError(f"lambda_coord and lambda_noobj must be >= 0, got {lambda_coord!r} and {lambda_noobj!r}")
    if objectness not in ("iou", "one"):
        raise ValueError(f"objectness must be 'iou' or 'one', got {objectness!r}")
    p = torch.sigmoid(pred[..., :5])
    prob = torch.softmax(pred[..., 5:], dim=-1)
    m = obj.to(pred.dtype)
    coord = ((p[..., :4] - box.to(pred.dtype)) ** 2).sum(-1)
    if objectness == "iou":
        with torch.no_grad():
            a = _yolo_cell_boxes(p[..., :4], S)[obj]
            b = _yolo_cell_boxes(box.to(pred.dtype), S)[obj]
            target = torch.zeros_like(p[..., 4])
            if a.shape[0]:
                target[obj] = box_iou(a, b).diagonal()
    else:
        target = m
    onehot = F.one_hot(cls.clamp(min=0), C).to(pred.dtype)
    per_cell = (
        lc * m * coord
        + m * (p[..., 4] - target) ** 2
        + ln * (1 - m) * p[..., 4] ** 2
        + m * ((prob - onehot) ** 2).sum(-1)
    )
    return per_cell.sum() / B


def yolo_decode(
    pred: torch.Tensor,
    image_size: float,
    score_threshold: float = 0.01,
    iou_threshold: float = 0.5,
    max_detections: int = 100,
) -> list[dict[str, torch.Tensor]]:
    """Detections from a YOLO head: one dict per image with ``boxes``, ``scores``, ``labels``.

    Cell ``(i, j)`` of ``pred (B, S, S, 5 + C)`` gives the box with centre
    ``((j + σ(x)) s, (i + σ(y)) s)`` and size ``(σ(√w)² L, σ(√h)² L)`` (``s = L / S``,
    ``L = image_size``), class ``argmax_c p̂_c`` and score ``σ(conf) max_c p̂_c`` (YOLO's
    class-specific confidence). Boxes scoring below ``score_threshold`` are dropped, then
    :func:`batched_nms` at ``iou_threshold``, then the ``max_detections`` best are kept, by
    decreasing score. Boxes are xyxy pixels (not clipped to the image). Implements
    (fpn-yolo-decode).
    """
    B, S, C = _check_yolo_pred(pred)
    size = _check_threshold("image_size", image_size)
    if size <= 0:
        raise ValueError(f"image_size must be positive, got {image_size!r}")
    thr = _check_threshold("score_threshold", score_threshold)
    _check_threshold("iou_threshold", iou_threshold)
    k = _int_arg("max_detections", max_detections, 1)
    with torch.no_grad():
        p = torch.sigmoid(pred[..., :5])
        prob = torch.softmax(pred[..., 5:], dim=-1)
        boxes = _yolo_cell_boxes(p[..., :4], S) * size
        best, label = prob.max(-1)
        score = p[..., 4] * best
        out = []
        for b in range(B):
            bx, sc, lb = boxes[b].reshape(-1, 4), score[b].reshape(-1), label[b].reshape(-1)
            keep = sc >= thr
            bx, sc, lb = bx[keep], sc[keep], lb[keep]
            keep = batched_nms(bx, sc, lb, iou_threshold)[:k]
            out.append({"boxes": bx[keep], "scores": sc[keep], "labels": lb[keep]})
    return out


# ---------------------------------------------------------------------------------------------
# faster-rcnn chapter: sampling anchors/RoIs, RPN proposals, the two-term detection loss
# ---------------------------------------------------------------------------------------------
def sample_labels(
    labels: torch.Tensor,
    batch_size: int,
    positive_fraction: float = 0.5,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Keep a random minibatch of labelled anchors (or RoIs); the rest become -1 (ignored).

    ``labels`` is ``(N,)`` integer: ``-1`` ignored, ``0`` negative (background), ``>= 1``
    positive (an RPN's 1, or a class index for the RoI head). With ``P`` positives and ``Q``
    negatives it keeps ``n_+ = min(P, floor(f B))`` positives and ``n_- = min(Q, B - n_+)``
    negatives, each drawn uniformly without replacement (``f = positive_fraction``,
    ``B = batch_size``): when an image has few positives the minibatch is filled up with
    negatives, as in Faster R-CNN. Random numbers come from ``generator`` (a CPU generator)
    so a seed fixes the draw. Returns a new tensor on ``labels``' device and dtype.

    Implements (frcnn-sample)

    >>> lab = torch.tensor([1, 0, 0, 0, -1, 1, 0])
    >>> out = sample_labels(lab, 4, 0.25, torch.Generator().manual_seed(0))
    >>> int((out >= 1).sum()), int((out == 0).sum()), int((out == -1).sum())
    (1, 3, 3)
    """
    if not isinstance(labels, torch.Tensor):
        raise TypeError(f"labels must be a torch.Tensor, got {type(labels).__name__}")
    if labels.dtype.is_floating_point or labels.dtype.is_complex or labels.dtype == torch.bool:
        raise TypeError(f"labels must be an integer tensor, got dtype {labels.dtype}")
    if labels.dim() != 1:
        raise ValueError(f"labels must have shape (N,), got {tuple(labels.shape)}")
    if labels.numel() and int(labels.min()) < -1:
        raise ValueError("labels must be -1 (ignored), 0 (negative) or >= 1 (positive), got a value below -1")
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")
    f = _check_threshold("positive_fraction", positive_fraction)
    if not 0 <= f <= 1:
        raise ValueError(f"positive_fraction must lie in [0, 1], got {positive_fraction!r}")
    if generator is not None and (not isinstance(generator, torch.Generator) or generator.device.type != "cpu"):
        raise TypeError("generator must be a CPU torch.Generator or None")
    lab = labels.cpu()
    pos = torch.nonzero(lab >= 1).flatten()
    neg = torch.nonzero(lab == 0).flatten()
    n_pos = min(pos.numel(), int(math.floor(f * batch_size)))  # (frcnn-sample)
    n_neg = min(neg.numel(), batch_size - n_pos)
    pos = pos[torch.randperm(pos.numel(), generator=generator)[:n_pos]]
    neg = neg[torch.randperm(neg.numel(), generator=generator)[:n_neg]]
    out = torch.full_like(lab, -1)
    out[pos] = lab[pos]
    out[neg] = 0
    return out.to(labels.device)


def rpn_proposals(
    objectness: torch.Tensor,
    deltas: torch.Tensor,
    anchors: torch.Tensor,
    image_size: int | tuple[int, int],
    *,
    pre_nms_top_n: int = 100,
    post_nms_top_n: int = 20,
    iou_threshold: float = 0.7,
    min_size: float = 1.0,
    weights: Sequence[float] = (1, 1, 1, 1),
) -> tuple[torch.Tensor, torch.Tensor]:
    """Turn one image's RPN outputs into proposals: ``(boxes (P, 4) xyxy, scores (P,))``.

    ``objectness`` is ``(A,)`` logits, ``deltas`` ``(A, 4)``, ``anchors`` ``(A, 4)`` xyxy, in the
    same order. Steps: keep the ``pre_nms_top_n`` highest logits; decode their deltas against
    their anchors (:func:`decode_boxes` with ``weights``); clip to the image
    ``[0, W] x [0, H]`` (``image_size`` is ``S`` or ``(H, W)``); drop boxes narrower or
    shorter than ``min_size``; :func:`nms` at ``iou_threshold``; keep the first
    ``post_nms_top_n``. Scores are the logits (monotone in the probability, so the ranking is
    the same). ``P <= post_nms_top_n``. Works under ``torch.no_grad`` or with gradients; a
    two-stage detector detaches the proposals (approximate joint training).

    Implements (frcnn-decode)

    >>> a = torch.tensor([[0.0, 0, 8, 8], [0.5, 0.5, 8.5, 8.5], [20, 20, 28, 28]])
    >>> b, s = rpn_proposals(torch.tensor([2.0, 1.0, 0.5]), torch.zeros(3, 4), a, 32)
    >>> b, s
    (tensor([[ 0.,  0.,  8.,  8.],
            [20., 20., 28., 28.]]), tensor([2.0000, 0.5000]))
    """
    _check_boxes("anchors", anchors)
    A = anchors.shape[0]
    _check_scores("objectness", objectness, A)
    _check_same("objectness", objectness, "anchors", anchors)
    _check_float("deltas", deltas)
    if deltas.shape != (A, 4):
        raise ValueError(f"deltas must have shape ({A}, 4) to match anchors, got {tuple(deltas.shape)}")
    H, W = _pair("image_size", image_size)
    for name, v in (("pre_nms_top_n", pre_nms_top_n), ("post_nms_top_n", post_nms_top_n)):
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise ValueError(f"{name} must be a positive int, got {v!r}")
    t = _check_threshold("iou_threshold", iou_threshold)
    m = _check_threshold("min_size", min_size)
    if m < 0:
        raise ValueError(f"min_size must be >= 0, got {min_size!r}")
    k = min(pre_nms_top_n, A)
    scores, idx = objectness.topk(k)  # sorted, highest first
    boxes = decode_boxes(deltas[idx], anchors[idx], weights)  # (frcnn-decode)
    boxes = torch.stack(
        [boxes[:, 0].clamp(0, W), boxes[:, 1].clamp(0, H), boxes[:, 2].clamp(0, W), boxes[:, 3].clamp(0, H)], dim=1
    )
    ok = ((boxes[:, 2] - boxes[:, 0]) >= m) & ((boxes[:, 3] - boxes[:, 1]) >= m)
    boxes, scores = boxes[ok], scores[ok]
    keep = nms(boxes.detach(), scores.detach(), t)[:post_nms_top_n]
    return boxes[keep], scores[keep]


def faster_rcnn_loss(
    class_logits: torch.Tensor,
    box_deltas: torch.Tensor,
    labels: torch.Tensor,
    target_deltas: torch.Tensor,
    beta: float = 1.0 / 9,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The two terms of the (Fast/Faster R-CNN) detection loss: ``(L_cls, L_box)``, scalars.

    ``labels`` ``(N,)`` integer: -1 ignored, 0 background, ``c >= 1`` object (class ``c``).
    ``class_logits`` is ``(N,)`` for a binary RPN (``labels`` in {-1, 0, 1}: binary
    cross-entropy with logits) or ``(N, C + 1)`` for the RoI head (softmax cross-entropy, column
    0 background). ``box_deltas`` and ``target_deltas`` are ``(N, 4)``: the predicted and the
    encoded ground-truth deltas (for the RoI head, the predicted deltas of the labelled
    class). With ``n`` the number of non-ignored rows,
    ``L_cls = (1/n) Σ_{ℓ_i ≠ -1} CE_i`` and
    ``L_box = (1/n) Σ_{ℓ_i >= 1} Σ_{j=1..4} smooth_l1(t_ij - t*_ij, beta)``; the total is
    ``L_cls + λ L_box``. If every row is ignored both terms are 0 (still differentiable).
    Differences from the paper's normalisation are discussed on the chapter's page.

    Implements (frcnn-loss)

    >>> lab = torch.tensor([1, 0, -1])
    >>> cls, box = faster_rcnn_loss(torch.zeros(3), torch.zeros(3, 4), lab, torch.ones(3, 4), beta=1.0)
    >>> round(float(cls), 4), float(box)
    (0.6931, 1.0)
    """
    _check_float("class_logits", class_logits)
    if class_logits.dim() not in (1, 2):
        raise ValueError(f"class_logits must have shape (N,) or (N, C + 1), got {tuple(class_logits.shape)}")
    N = class_logits.shape[0]
    _check_labels("labels", labels, N)
    for name, d in (("box_deltas", box_deltas), ("target_deltas", target_deltas)):
        _check_float(name, d)
        if d.shape != (N, 4):
            raise ValueError(f"{name} must have shape ({N}, 4), got {tuple(d.shape)}")
    if not bool(torch.isfinite(target_deltas).all()):
        raise ValueError("target_deltas must be finite, got NaN or inf")
    b = _check_threshold("beta", beta)
    if b < 0:
        raise ValueError(f"beta must be >= 0, got {beta}")
    if N and int(labels.min()) < -1:
        raise ValueError("labels must be -1, 0 or a positive class index")
    n_cls = 1 if class_logits.dim() == 1 else class_logits.shape[1] - 1
    if N and int(labels.max()) > n_cls:
        what = "binary logits need labels in {-1, 0, 1}" if class_logits.dim() == 1 else f"labels must be <= {n_cls}"
        raise ValueError(f"labels out of range: {what}")
    labels = labels.to(class_logits.device)
    valid = labels >= 0
    pos = labels >= 1
    n = valid.sum().clamp(min=1).to(class_logits.dtype)
    if class_logits.dim() == 1:
        ce = F.binary_cross_entropy_with_logits(class_logits[valid], labels[valid].to(class_logits.dtype), reduction="sum")
    else:
        ce = F.cross_entropy(class_logits[valid], labels[valid], reduction="sum")
    box = smooth_l1(box_deltas[pos] - target_deltas[pos], beta).sum()
    return ce / n, box / n


# ---------------------------------------------------------------------------------------------
# DETR set loss (chapter: detr)
# ---------------------------------------------------------------------------------------------
def detr_loss(
    logits: torch.Tensor,
    boxes: torch.Tensor,
    targets: Sequence[dict[str, torch.Tensor]],
    no_object_weight: float = 0.1,
    w_class: float = 1.0,
    w_l1: float = 5.0,
    w_giou: float = 2.0,
) -> tuple[dict[str, torch.Tensor], list[tuple[torch.Tensor, torch.Tensor]]]:
    """DETR's set loss: Hungarian matching per image, then class, L1 and GIoU losses.

    ``logits`` ``(B, Q, K + 1)``: ``K`` object classes and, last (index ``K``), the no-object
    class ``∅``. ``boxes`` ``(B, Q, 4)`` normalized **cxcywh** in ``[0, 1]`` (as DETR).
    ``targets[b]`` holds ``labels`` ``(G_b,)`` integers in ``[0, K)`` and ``boxes`` ``(G_b, 4)``
    normalized cxcywh; ``G_b <= Q`` is not required (``G_b > Q`` leaves objects unmatched).

    For each image the cost of :func:`detr_matching_cost` is minimized by
    :func:`hungarian_match` (without gradient), giving the query ``σ̂(g)`` of each object
    ``g``. The losses, with ``n = max(1, Σ_b G_b)`` matched objects in the batch::

        class = Σ_{b,q} ω_{t_bq} (-log softmax(logits[b, q])[t_bq]) / Σ_{b,q} ω_{t_bq}
        l1    = Σ_g ‖b_σ̂(g) - b̂_g‖₁ / n
        giou  = Σ_g (1 - GIoU(b_σ̂(g), b̂_g)) / n
        loss  = w_class · class + w_l1 · l1 + w_giou · giou

    where ``t_bq`` is the matched object's class, or ``∅ = K`` for an unmatched query, and
    ``ω_∅ = no_object_weight``, ``ω_c = 1`` otherwise (a weighted mean, as
    ``F.cross_entropy(weight=...)`` and DETR's ``eos_coef``). Implements (detr-set-loss).

    Returns:
        ``(parts, matches)``: ``parts`` a dict of scalar tensors ``loss``, ``class``, ``l1``,
        ``giou`` (``loss`` carries the gradient); ``matches[b] = (queries, objects)``, int64
        index tensors on ``logits``'s device, sorted by object.

    >>> lg = torch.tensor([[[0.0, 5.0, 0.0], [5.0, 0.0, 0.0]]])  # 2 queries, K = 2
    >>> bx = torch.tensor([[[0.5, 0.5, 0.2, 0.2], [0.2, 0.2, 0.1, 0.1]]])
    >>> t = [{"labels": torch.tensor([0]), "boxes": torch.tensor([[0.2, 0.2, 0.1, 0.1]])}]
    >>> parts, m = detr_loss(lg, bx, t)
    >>> m[0], round(float(parts["l1"]), 4), round(float(parts["giou"]), 4)
    ((tensor([1]), tensor([0])), 0.0, 0.0)
    """
    _check_float("logits", logits)
    if logits.dim() != 3 or logits.shape[-1] < 2:
        raise ValueError(f"logits must have shape (B, Q, K + 1) with K >= 1, got {tuple(logits.shape)}")
    if not bool(torch.isfinite(logits).all()):
        raise ValueError("logits must be finite, got NaN or inf")
    B, Q, K1 = logits.shape
    _check_float("boxes", boxes)
    if boxes.shape != (B, Q, 4):
        raise ValueError(f"boxes must have shape ({B}, {Q}, 4) to match logits, got {tuple(boxes.shape)}")
    _check_same("logits", logits, "boxes", boxes)
    if not isinstance(targets, Sequence) or len(targets) != B:
        raise ValueError(f"targets must be a list of {B} dicts (one per image) with labels and boxes")
    for name, w in (("w_class", w_class), ("w_l1", w_l1), ("w_giou", w_giou)):
        _check_threshold(name, w)
    if _check_threshold("no_object_weight", no_object_weight) <= 0:
        raise ValueError(f"no_object_weight must be > 0, got {no_object_weight!r}")
    gl, gb, sizes = [], [], []
    for b, t in enumerate(targets):
        if not isinstance(t, dict) or "labels" not in t or "boxes" not in t:
            raise ValueError(f"targets[{b}] must be a dict with labels and boxes")
        tb = t["boxes"]
        _check_float(f"targets[{b}]['boxes']", tb)
        if tb.dim() != 2 or tb.shape[-1] != 4:
            raise ValueError(f"targets[{b}]['boxes'] must have shape (G, 4) in cxcywh, got {tuple(tb.shape)}")
        tl = _check_labels(f"targets[{b}]['labels']", t["labels"], tb.shape[0])
        if tl.numel() and (int(tl.min()) < 0 or int(tl.max()) >= K1 - 1):
            raise ValueError(f"targets[{b}]['labels'] must lie in [0, {K1 - 1}) (index {K1 - 1} is no-object)")
        gl.append(tl.to(logits.device))
        gb.append(tb.to(device=boxes.device, dtype=boxes.dtype))
        sizes.append(int(tb.shape[0]))
    labels, gboxes = torch.cat(gl), torch.cat(gb)
    with torch.no_grad():  # the matching is a constant of the loss: no gradient through σ̂
        cost = detr_matching_cost(logits.reshape(B * Q, K1), boxes.reshape(B * Q, 4), labels, gboxes,
                                  w_class, w_l1, w_giou).reshape(B, Q, -1)  # (B, Q, ΣG): one batched call
    cost_np = cost.cpu().double().numpy()  # one transfer; the per-image solves run on NumPy blocks
    dev = logits.device
    matches: list[tuple[torch.Tensor, torch.Tensor]] = []
    img, qry, obj = [], [], []
    off = 0
    for b, g in enumerate(sizes):
        r, c = _hungarian_np(cost_np[b, :, off:off + g])  # (detr-matching) for image b, as hungarian_match
        order = np.argsort(c)
        r_t = torch.as_tensor(r[order], dtype=torch.long, device=dev)
        c_t = torch.as_tensor(c[order], dtype=torch.long, device=dev)
        matches.append((r_t, c_t))
        img.append(torch.full_like(r_t, b))
        qry.append(r_t)
        obj.append(c_t + off)
        off += g
    bi, qi, gi = torch.cat(img), torch.cat(qry), torch.cat(obj)
    target_class = torch.full((B, Q), K1 - 1, dtype=torch.long, device=logits.device)  # ∅ everywhere ...
    target_class[bi, qi] = labels[gi]  # ... except at the matched queries
    weight = torch.ones(K1, dtype=logits.dtype, device=logits.device)
    weight[-1] = no_object_weight
    l_class = F.cross_entropy(logits.reshape(B * Q, K1), target_class.reshape(-1), weight=weight)
    n = max(1, int(gi.numel()))
    pm, gm = boxes[bi, qi], gboxes[gi]  # (n, 4) matched pairs
    l_l1 = (pm - gm).abs().sum() / n
    if gi.numel():
        giou = generalized_box_iou(box_cxcywh_to_xyxy(pm), box_cxcywh_to_xyxy(gm)).diagonal()
        l_giou = (1 - giou).sum() / n
    else:
        l_giou = boxes.sum() * 0
    loss = w_class * l_class + w_l1 * l_l1 + w_giou * l_giou
    return {"loss": loss, "class": l_class, "l1": l_l1, "giou": l_giou}, matches
