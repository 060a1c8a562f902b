"""Tests for the fpn-yolo chapter's additions to minilib.detection, against independent references.

References: exact rational arithmetic (``fractions``) for the FPN level rule, plain-Python loops
over cells for YOLO targets, loss and decoding, an exact step-function integral and a direct
transcription of COCO's 101-point rule for average precision, and ``pycocotools.COCOeval`` run
on the decoded output of a (noisy) YOLO head.
"""

from __future__ import annotations

import math
import random
from fractions import Fraction

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from minilib import detection as D

SET = settings(max_examples=40, deadline=None, derandomize=True)


# ---------------------------------------------------------------------------------------------
# FPN level rule
# ---------------------------------------------------------------------------------------------
def level_ref(w: float, h: float, k0=4, canonical=224, k_min=2, k_max=5) -> int:
    """Largest integer k with canonical * 2^(k - k0) <= sqrt(w h), in exact rationals, clamped."""
    area = Fraction(w) * Fraction(h)
    if area == 0:
        return k_min
    c = Fraction(canonical)
    k = -200
    while (c * Fraction(2) ** (k + 1 - k0)) ** 2 <= area:
        k += 1
    return max(k_min, min(k_max, k))


def test_fpn_level_boundaries_and_paper_examples():
    # the paper's rule: a 224² box to k0 = 4, 112² to 3, 448² to 5; and just below each boundary
    sides = [224, 112, 56, 28, 448, 896, 223.999, 111.999, 55.999, 447.999, 1, 0]
    b = torch.tensor([[0.0, 0.0, s, s] for s in sides], dtype=torch.float64)
    got = D.fpn_level(b).tolist()
    assert got == [level_ref(s, s) for s in sides]
    assert got[:4] == [4, 3, 2, 2] and got[4] == 5 and got[6] == 3


@SET
@given(st.lists(st.tuples(st.floats(0, 2000), st.floats(0, 2000)), min_size=1, max_size=20),
       st.integers(2, 5), st.sampled_from([224.0, 32.0, 100.0]))
def test_fpn_level_matches_exact_rule(whs, k0, canonical):
    b = torch.tensor([[0.0, 0.0, w, h] for w, h in whs], dtype=torch.float64)
    got = D.fpn_level(b, k0=k0, canonical=canonical, k_min=0, k_max=9).tolist()
    assert got == [level_ref(w, h, k0, canonical, 0, 9) for w, h in whs]


def test_fpn_level_power_of_two_sides_exact():
    # side canonical * 2^m must land on k0 + m exactly (float log2 must not round it down)
    for c in (224.0, 100.0, 3.0):
        for m in range(-6, 6):
            s = c * 2.0**m
            b = torch.tensor([[0.0, 0.0, s, s]], dtype=torch.float64)
            assert int(D.fpn_level(b, k0=10, canonical=c, k_min=0, k_max=20)) == 10 + m


def test_fpn_level_device_dtype_and_bad_inputs():
    out = D.fpn_level(torch.tensor([[0.0, 0.0, 10.0, 10.0]], dtype=torch.float32))
    assert out.dtype == torch.int64 and out.device.type == "cpu"
    with pytest.raises(ValueError, match="k_min <= k_max"):
        D.fpn_level(torch.zeros(1, 4), k_min=5, k_max=2)
    with pytest.raises(ValueError, match="canonical"):
        D.fpn_level(torch.zeros(1, 4), canonical=0)
    with pytest.raises(ValueError, match="k0"):
        D.fpn_level(torch.zeros(1, 4), k0=4.5)
    with pytest.raises(ValueError, match="x2 < x1"):
        D.fpn_level(torch.tensor([[2.0, 0, 1, 1]]))
    with pytest.raises(TypeError):
        D.fpn_level(torch.zeros(1, 4, dtype=torch.long))


# ---------------------------------------------------------------------------------------------
# YOLO targets
# ---------------------------------------------------------------------------------------------
def targets_ref(boxes, labels, S, L):
    """Per-box loop: centre cell by math.floor, the largest box of a cell wins (later on ties)."""
    cells = {}
    s = L / S
    for (x1, y1, x2, y2), c in zip(boxes, labels):
        cx, cy, w, h = (x1 + x2) / 2, (y1 + y2) / 2, x2 - x1, y2 - y1
        j, i = min(math.floor(cx / s), S - 1), min(math.floor(cy / s), S - 1)
        t = (cx / s - j, cy / s - i, math.sqrt(w / L), math.sqrt(h / L))
        if (i, j) not in cells or w * h >= cells[(i, j)][0]:
            cells[(i, j)] = (w * h, t, c)
    return cells


@pytest.mark.parametrize("seed", range(5))
def test_yolo_targets_match_loop(seed):
    rng = random.Random(seed)
    L, S = 48.0, rng.choice([1, 3, 6, 7])
    boxes, labels = [], []
    for _ in range(rng.randint(0, 12)):
        x1, y1 = rng.uniform(0, L - 1), rng.uniform(0, L - 1)
        boxes.append([x1, y1, rng.uniform(x1, L), rng.uniform(y1, L)])
        labels.append(rng.randrange(4))
    boxes.append([40.0, 40.0, 48.0, 48.0])  # centre 44 in the last cell
    labels.append(1)
    b = torch.tensor(boxes, dtype=torch.float64)
    obj, box, cls = D.yolo_targets(b, torch.tensor(labels), S, L)
    ref = targets_ref(boxes, labels, S, L)
    assert obj.sum() == len(ref)
    for (i, j), (_, t, c) in ref.items():
        assert bool(obj[i, j]) and int(cls[i, j]) == c
        assert box[i, j].tolist() == pytest.approx(list(t), abs=1e-12)
    assert bool((cls[~obj] == -1).all()) and bool((box[~obj] == 0).all())
    assert bool(((box >= 0) & (box <= 1)).all())


def test_yolo_targets_edge_and_bad_inputs():
    obj, box, cls = D.yolo_targets(torch.tensor([[0.0, 0.0, 32.0, 32.0]]), torch.tensor([0]), 4, 32)
    assert obj.nonzero().tolist() == [[2, 2]]  # centre 16 = 2 * 8: the lower cell boundary belongs to cell 2
    assert box[2, 2].tolist() == pytest.approx([0.0, 0.0, 1.0, 1.0])
    obj, box, cls = D.yolo_targets(torch.zeros(0, 4), torch.zeros(0, dtype=torch.long), 3, 32)
    assert not obj.any() and box.dtype == torch.float32
    with pytest.raises(ValueError, match="inside"):
        D.yolo_targets(torch.tensor([[0.0, 0, 40, 10]]), torch.tensor([0]), 4, 32)
    with pytest.raises(ValueError, match="grid"):
        D.yolo_targets(torch.tensor([[0.0, 0, 4, 4]]), torch.tensor([0]), 0, 32)
    with pytest.raises(ValueError, match="image_size"):
        D.yolo_targets(torch.tensor([[0.0, 0, 4, 4]]), torch.tensor([0]), 2, -1)
    with pytest.raises(TypeError, match="labels"):
        D.yolo_targets(torch.tensor([[0.0, 0, 4, 4]]), torch.tensor([0.0]), 2, 32)


# ---------------------------------------------------------------------------------------------
# YOLO loss
# ---------------------------------------------------------------------------------------------
def sig(v):
    return 1 / (1 + math.exp(-v))


def iou_ref(a, b):
    iw = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    ih = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = iw * ih
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def cell_box(t, i, j, S):
    cx, cy, w, h = (j + t[0]) / S, (i + t[1]) / S, t[2] ** 2, t[3] ** 2
    return (cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2)


def loss_ref(pred, obj, box, cls, lc, ln, objectness):
    B, S, _, K = pred.shape
    total = 0.0
    for b in range(B):
        for i in range(S):
            for j in range(S):
                v = pred[b, i, j].tolist()
                p = [sig(u) for u in v[:5]]
                e = [math.exp(u) for u in v[5:]]
                prob = [u / sum(e) for u in e]
                if obj[b, i, j]:
                    t = box[b, i, j].tolist()
                    total += lc * sum((p[k] - t[k]) ** 2 for k in range(4))
                    c = iou_ref(cell_box(p, i, j, S), cell_box(t, i, j, S)) if objectness == "iou" else 1.0
                    total += (p[4] - c) ** 2
                    total += sum((prob[k] - (k == int(cls[b, i, j]))) ** 2 for k in range(K - 5))
                else:
                    total += ln * p[4] ** 2
    return total / B


@pytest.mark.parametrize("objectness", ["iou", "one"])
@pytest.mark.parametrize("seed", range(3))
def test_yolo_loss_matches_loop(objectness, seed):
    g = torch.Generator().manual_seed(seed)
    B, S, C = 3, 4, 3
    pred = torch.randn(B, S, S, 5 + C, generator=g, dtype=torch.float64)
    obj = torch.rand(B, S, S, generator=g) < 0.4
    box = torch.rand(B, S, S, 4, generator=g, dtype=torch.float64) * obj[..., None]
    cls = torch.where(obj, torch.randint(C, (B, S, S), generator=g), torch.full((B, S, S), -1))
    got = D.yolo_loss(pred, obj, box, cls, 5.0, 0.5, objectness)
    assert float(got) == pytest.approx(loss_ref(pred, obj, box, cls, 5.0, 0.5, objectness), rel=1e-10)
    got2 = D.yolo_loss(pred, obj, box, cls, 2.0, 0.1, objectness)
    assert float(got2) == pytest.approx(loss_ref(pred, obj, box, cls, 2.0, 0.1, objectness), rel=1e-10)


def test_yolo_loss_gradient_skips_iou_target_and_bad_inputs():
    g = torch.Generator().manual_seed(0)
    pred = torch.randn(2, 3, 3, 7, generator=g, requires_grad=True)
    obj = torch.zeros(2, 3, 3, dtype=torch.bool)
    obj[0, 1, 1] = True
    box = torch.zeros(2, 3, 3, 4)
    box[0, 1, 1] = torch.tensor([0.5, 0.5, 0.4, 0.4])
    cls = torch.full((2, 3, 3), -1)
    cls[0, 1, 1] = 1
    loss = D.yolo_loss(pred, obj, box, cls)
    loss.backward()
    # the confidence target C = IoU is a constant: d/dconf of (σ(conf) - C)² only
    p = torch.sigmoid(pred.detach()[0, 1, 1])
    a = cell_box(p[:4].tolist(), 1, 1, 3)
    c = iou_ref(a, cell_box([0.5, 0.5, 0.4, 0.4], 1, 1, 3))
    want = 2 * (float(p[4]) - c) * float(p[4]) * (1 - float(p[4])) / 2
    assert float(pred.grad[0, 1, 1, 4]) == pytest.approx(want, rel=1e-5)
    assert loss.dtype == pred.dtype
    with pytest.raises(ValueError, match="pred"):
        D.yolo_loss(torch.zeros(2, 3, 4, 7), obj, box, cls)
    with pytest.raises(ValueError, match="obj"):
        D.yolo_loss(pred, obj.long(), box, cls)
    with pytest.raises(ValueError, match="cls"):
        D.yolo_loss(pred, obj, box, torch.where(obj, 5, -1))
    with pytest.raises(ValueError, match="objectness"):
        D.yolo_loss(pred, obj, box, cls, objectness="max")
    with pytest.raises(ValueError, match="lambda"):
        D.yolo_loss(pred, obj, box, cls, lambda_noobj=-0.5)


# ---------------------------------------------------------------------------------------------
# YOLO decoding: a loop reference, and the round trip targets -> perfect head -> GT boxes
# ---------------------------------------------------------------------------------------------
def logit(x):
    x = x.clamp(1e-9, 1 - 1e-9)
    return torch.log(x) - torch.log1p(-x)


def perfect_head(obj, box, cls, C):
    """Raw outputs whose squashed values are the targets: the inverse of the head's activations."""
    B, S = obj.shape[:2]
    pred = torch.full((B, S, S, 5 + C), -20.0, dtype=torch.float64)
    pred[..., :4] = logit(box.double())
    pred[..., 4] = torch.where(obj, 20.0, -20.0)
    pred[..., 5:] = 10.0 * torch.nn.functional.one_hot(cls.clamp(min=0), C) * obj[..., None]
    return pred


def test_yolo_decode_matches_loop_without_suppression():
    g = torch.Generator().manual_seed(1)
    B, S, C, L = 2, 3, 2, 30.0
    pred = torch.randn(B, S, S, 5 + C, generator=g, dtype=torch.float64)
    out = D.yolo_decode(pred, L, score_threshold=0.2, iou_threshold=1.0)  # IoU never > 1: no NMS
    for b in range(B):
        ref = []
        for i in range(S):
            for j in range(S):
                v = pred[b, i, j].tolist()
                p = [sig(u) for u in v[:5]]
                e = [math.exp(u) for u in v[5:]]
                k = max(range(C), key=lambda c: e[c])
                score = p[4] * e[k] / sum(e)
                if score >= 0.2:
                    ref.append((score, [L * u for u in cell_box(p, i, j, S)], k))
        ref.sort(key=lambda r: -r[0])
        assert out[b]["scores"].tolist() == pytest.approx([r[0] for r in ref], abs=1e-12)
        assert np.allclose(out[b]["boxes"].numpy().reshape(-1, 4), np.array([r[1] for r in ref]).reshape(-1, 4), atol=1e-9)
        assert out[b]["labels"].tolist() == [r[2] for r in ref]


def test_yolo_round_trip_recovers_boxes_and_bad_inputs():
    from minilib.data import shapes

    x, t = shapes(6, size=48, max_objects=3, generator=torch.Generator().manual_seed(3))
    tg = [D.yolo_targets(u["boxes"], u["labels"], 6, 48) for u in t]
    obj, box, cls = (torch.stack(z) for z in zip(*tg))
    out = D.yolo_decode(perfect_head(obj, box, cls, 3), 48)
    for o, u in zip(out, t):
        got = np.array(sorted(map(tuple, o["boxes"].round(decimals=6).tolist())))
        want = np.array(sorted(map(tuple, u["boxes"].double().tolist())))
        assert got.shape == want.shape and np.allclose(got, want, atol=1e-6)
    assert D.mean_average_precision(out, t, (0.95,)) == pytest.approx(1.0)
    with pytest.raises(ValueError, match="image_size"):
        D.yolo_decode(torch.zeros(1, 2, 2, 6), 0)
    with pytest.raises(ValueError, match="max_detections"):
        D.yolo_decode(torch.zeros(1, 2, 2, 6), 8, max_detections=0)
    with pytest.raises(ValueError, match="pred"):
        D.yolo_decode(torch.zeros(1, 2, 2, 5), 8)


# ---------------------------------------------------------------------------------------------
# average precision: exact integral, 101-point transcription, the 1/101 bound, and pycocotools
# ---------------------------------------------------------------------------------------------
def envelope_ref(tp, n):
    """The monotone step function p̂(r) as a list of (recall, envelope precision), in Fractions."""
    pts, k_tp = [], 0
    for k, t in enumerate(tp, 1):
        k_tp += t
        pts.append((Fraction(k_tp, n), Fraction(k_tp, k)))
    env = [max(p for _, p in pts[k:]) for k in range(len(pts))]
    return [(r, e) for (r, _), e in zip(pts, env)]


def p_hat(pts, r):
    for rk, e in pts:
        if rk >= r:
            return e
    return Fraction(0)


@SET
@given(st.lists(st.booleans(), min_size=0, max_size=30), st.integers(0, 5))
def test_average_precision_against_exact_integral_and_101_points(tp, extra):
    n = max(sum(tp) + extra, 1)
    scores = torch.linspace(1, 0, len(tp), dtype=torch.float64)
    flags = torch.tensor(tp, dtype=torch.bool)
    pts = envelope_ref(tp, n)
    # all-point: ∫ p̂(r) dr, integrating the step function piece by piece
    voc, prev = Fraction(0), Fraction(0)
    for r, e in pts:
        voc += (r - prev) * e
        prev = r
    # COCOeval compares float64 recalls k/n (correctly rounded) with its float64 levels
    # np.linspace(0, 1, 101), ten of which lie one rounding error above i/100
    coco = sum(next((e for rk, e in pts if float(rk) >= r), Fraction(0)) for r in np.linspace(0, 1, 101).tolist()) / 101
    got_voc = D.average_precision(scores, flags, n, "voc")
    got_coco = D.average_precision(scores, flags, n, "coco")
    assert got_voc == pytest.approx(float(voc), abs=1e-12)
    assert got_coco == pytest.approx(float(coco), abs=1e-12)
    assert abs(got_coco - got_voc) <= 1 / 101 + 1e-12  # the bound derived in the chapter


def test_average_precision_exercise_example():
    # TP, FP, TP with two objects: all-point 1/2 + (1/2)(2/3); 101-point (51 + 50 * 2/3) / 101
    s, tp = torch.tensor([0.9, 0.8, 0.7]), torch.tensor([True, False, True])
    assert D.average_precision(s, tp, 2, "voc") == pytest.approx(5 / 6, abs=1e-12)
    assert D.average_precision(s, tp, 2, "coco") == pytest.approx((51 + 100 / 3) / 101, abs=1e-12)


def cocoeval_stats(preds, targets):
    """pycocotools' summary numbers, from the COCOeval driver shared with tests/test_detection.py."""
    from test_detection import cocoeval

    return cocoeval(preds, targets).stats


@pytest.mark.parametrize("noise", [0.3, 1.0, 2.0])
def test_map_of_a_noisy_yolo_head_matches_pycocotools(noise):
    pytest.importorskip("pycocotools")
    from minilib.data import shapes

    x, t = shapes(24, size=48, max_objects=4, generator=torch.Generator().manual_seed(5))
    tg = [D.yolo_targets(u["boxes"], u["labels"], 6, 48) for u in t]
    obj, box, cls = (torch.stack(z) for z in zip(*tg))
    g = torch.Generator().manual_seed(int(noise * 10))
    pred = perfect_head(obj, box, cls, 3) * 0.25 + noise * torch.randn(24, 6, 6, 8, generator=g, dtype=torch.float64)
    preds = D.yolo_decode(pred, 48, score_threshold=0.0)
    stats = cocoeval_stats(preds, t)
    thrs = tuple(float(v) for v in np.linspace(0.5, 0.95, 10))
    assert D.mean_average_precision(preds, t, thrs) == pytest.approx(stats[0], abs=1e-6)
    assert D.mean_average_precision(preds, t, (0.5,)) == pytest.approx(stats[1], abs=1e-6)
    assert D.mean_average_precision(preds, t, (0.75,)) == pytest.approx(stats[2], abs=1e-6)
    assert 0.0 < stats[1] < 1.0  # a detector-like case: neither empty nor perfect


def test_101_point_levels_are_cocoevals_float_grid():
    # 7 of 20 objects found, then 7 false positives, then 2 more: recall 7/20 = 0.35 lands on a
    # level that np.linspace puts one rounding error above 0.35. COCOeval reads the envelope just
    # to its right (precision 9/16); exact i/100 levels would read 1 there.
    pytest.importorskip("pycocotools")
    gtb = torch.tensor([[10.0 * i, 0, 10.0 * i + 8, 8] for i in range(20)])
    hit = list(range(7)) + [None] * 7 + [7, 8]
    boxes = [gtb[i].tolist() if i is not None else [300.0 + 10 * k, 300, 308 + 10 * k, 308] for k, i in enumerate(hit)]
    p = [{"boxes": torch.tensor(boxes), "scores": torch.linspace(0.99, 0.5, len(hit)),
          "labels": torch.zeros(len(hit), dtype=torch.long)}]
    t = [{"boxes": gtb, "labels": torch.zeros(20, dtype=torch.long)}]
    stats = cocoeval_stats(p, t)
    got = D.mean_average_precision(p, t, (0.5,))
    assert got == pytest.approx(stats[1], abs=1e-12)
    pts = envelope_ref([i is not None for i in hit], 20)
    exact = float(sum(p_hat(pts, Fraction(i, 100)) for i in range(101)) / 101)
    assert exact - got == pytest.approx((1 - Fraction(9, 16)) / 101, abs=1e-12)
