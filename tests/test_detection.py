"""Tests for minilib.detection, each against an independent reference.

References: per-pair Python loops (IoU, GIoU, NMS, anchors, assignment, DETR cost), per-bin and
per-sample plain-Python loops that transcribe torchvision's RoIPool / RoIAlign CPU kernels,
``torch.nn.functional`` (adaptive max pooling, smooth L1), hand-computed PR curves,
``pycocotools.cocoeval.COCOeval`` (mAP) and ``scipy.optimize.linear_sum_assignment`` plus brute
force over permutations (Hungarian matching).
"""

from __future__ import annotations

import contextlib
import io
import itertools
import math
import random

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from minilib import detection as D

SET = settings(max_examples=40, deadline=None, derandomize=True)


# ---------------------------------------------------------------------------------------------
# helpers and references
# ---------------------------------------------------------------------------------------------
def rand_boxes(n: int, gen: torch.Generator, size: float = 50.0, dtype=torch.float64) -> torch.Tensor:
    xy = torch.rand(n, 2, generator=gen, dtype=torch.float64) * size
    wh = torch.rand(n, 2, generator=gen, dtype=torch.float64) * size / 2
    return torch.cat([xy, xy + wh], 1).to(dtype)


def ref_iou(a, b) -> float:
    iw = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    ih = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = iw * ih
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def ref_giou(a, b) -> float:
    iou = ref_iou(a, b)
    iw = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    ih = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - iw * ih
    hull = (max(a[2], b[2]) - min(a[0], b[0])) * (max(a[3], b[3]) - min(a[1], b[1]))
    return iou - (hull - union) / hull if hull > 0 else iou


def ref_nms(boxes, scores, thr, labels=None):
    n = len(boxes)
    order = sorted(range(n), key=lambda i: (-scores[i], i))
    keep = []
    for i in order:
        if all(
            ref_iou(boxes[i], boxes[k]) <= thr or (labels is not None and labels[i] != labels[k]) for k in keep
        ):
            keep.append(i)
    return keep


box_strategy = st.tuples(
    st.floats(-20, 20), st.floats(-20, 20), st.floats(0, 15), st.floats(0, 15)
).map(lambda t: [t[0], t[1], t[0] + t[2], t[1] + t[3]])


# ---------------------------------------------------------------------------------------------
# IoU, GIoU, area
# ---------------------------------------------------------------------------------------------
@SET
@given(st.lists(box_strategy, min_size=0, max_size=6), st.lists(box_strategy, min_size=0, max_size=6))
def test_iou_and_giou_match_per_pair_loop(a, b):
    ta = torch.tensor(a, dtype=torch.float64).reshape(-1, 4)
    tb = torch.tensor(b, dtype=torch.float64).reshape(-1, 4)
    iou, giou = D.box_iou(ta, tb), D.generalized_box_iou(ta, tb)
    assert iou.shape == giou.shape == (len(a), len(b))
    for i, x in enumerate(a):
        for j, y in enumerate(b):
            assert iou[i, j].item() == pytest.approx(ref_iou(x, y), abs=1e-12)
            assert giou[i, j].item() == pytest.approx(ref_giou(x, y), abs=1e-12)
    assert bool((giou <= iou + 1e-12).all()) and bool((giou >= -1 - 1e-12).all())


def test_area_and_dtype_device_follow_input():
    b = torch.tensor([[0.0, 0.0, 2.0, 3.0], [1.0, 1.0, 4.0, 2.0]], dtype=torch.float32)
    assert D.box_area(b).tolist() == [6.0, 3.0]
    assert D.box_iou(b, b).dtype == torch.float32
    assert torch.allclose(D.box_iou(b, b).diagonal(), torch.ones(2))
    assert D.generalized_box_iou(b, b).dtype == torch.float32
    assert D.box_xyxy_to_cxcywh(torch.tensor([[0.0, 0, 2, 4]])).tolist() == [[1.0, 2.0, 2.0, 4.0]]
    c = torch.tensor([[3.0, 1.0, 2.0, 4.0]], dtype=torch.float64)
    assert torch.equal(D.box_xyxy_to_cxcywh(D.box_cxcywh_to_xyxy(c)), c)
    # zero-area boxes: IoU 0 (not nan) against themselves
    z = torch.tensor([[1.0, 1.0, 1.0, 1.0]])
    assert D.box_iou(z, z).item() == 0.0 and D.generalized_box_iou(z, z).item() == 0.0


def test_box_bad_inputs():
    good = torch.tensor([[0.0, 0.0, 1.0, 1.0]])
    with pytest.raises(ValueError, match="x2 < x1"):
        D.box_area(torch.tensor([[2.0, 0.0, 1.0, 1.0]]))
    with pytest.raises(ValueError, match="x2 < x1"):
        D.box_iou(good, torch.tensor([[0.0, 2.0, 1.0, 1.0]]))
    with pytest.raises(ValueError, match="finite"):
        D.generalized_box_iou(good, torch.tensor([[0.0, 0.0, math.nan, 1.0]]))
    with pytest.raises(ValueError, match="finite"):
        D.box_iou(torch.tensor([[0.0, 0.0, math.inf, 1.0]]), good)
    with pytest.raises(ValueError, match=r"shape \(N, 4\)"):
        D.box_iou(torch.zeros(3), good)
    with pytest.raises(TypeError, match="floating-point"):
        D.box_iou(torch.zeros(1, 4, dtype=torch.long), good)
    with pytest.raises(TypeError, match="share a dtype"):
        D.box_iou(good.double(), good)
    assert D.box_iou(torch.zeros(0, 4), good).shape == (0, 1)
    assert D.generalized_box_iou(good, torch.zeros(0, 4)).shape == (1, 0)
    with pytest.raises(ValueError, match="w >= 0"):
        D.box_cxcywh_to_xyxy(torch.tensor([[0.0, 0.0, -1.0, 1.0]]))


# ---------------------------------------------------------------------------------------------
# NMS
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("thr", [0.0, 0.3, 0.5, 0.9])
def test_nms_matches_python_greedy_loop(seed, thr):
    g = torch.Generator().manual_seed(seed)
    boxes = rand_boxes(40, g, size=30.0)
    scores = torch.rand(40, generator=g, dtype=torch.float64)
    if seed % 2:  # many ties
        scores = torch.round(scores * 4) / 4
    keep = D.nms(boxes, scores, thr)
    assert keep.dtype == torch.int64
    assert keep.tolist() == ref_nms(boxes.tolist(), scores.tolist(), thr)
    labels = torch.randint(0, 3, (40,), generator=g)
    kb = D.batched_nms(boxes, scores, labels, thr)
    assert kb.tolist() == ref_nms(boxes.tolist(), scores.tolist(), thr, labels.tolist())
    # batched == per-label nms merged by score
    merged = []
    for c in labels.unique():
        idx = torch.nonzero(labels == c).flatten()
        merged += idx[D.nms(boxes[idx], scores[idx], thr)].tolist()
    assert sorted(merged) == sorted(kb.tolist())
    assert (scores[kb].diff() <= 0).all()


def test_nms_threshold_is_strict_and_ties_and_empty():
    # IoU of these two boxes is exactly 0.5: not suppressed at threshold 0.5, suppressed below.
    b = torch.tensor([[0.0, 0.0, 3.0, 1.0], [1.0, 0.0, 4.0, 1.0]], dtype=torch.float64)
    assert D.box_iou(b, b)[0, 1].item() == 0.5
    s = torch.tensor([0.5, 0.9], dtype=torch.float64)
    assert D.nms(b, s, 0.5).tolist() == [1, 0]
    assert D.nms(b, s, 0.49).tolist() == [1]
    # equal scores: lower index first
    same = torch.tensor([[0.0, 0.0, 1.0, 1.0]] * 3)
    assert D.nms(same, torch.ones(3), 0.5).tolist() == [0]
    assert D.nms(same, torch.ones(3), 1.0).tolist() == [0, 1, 2]
    e = D.nms(torch.zeros(0, 4), torch.zeros(0), 0.5)
    assert e.dtype == torch.int64 and e.shape == (0,)
    assert D.batched_nms(torch.zeros(0, 4), torch.zeros(0), torch.zeros(0, dtype=torch.long), 0.5).shape == (0,)


def test_nms_bad_inputs():
    b = torch.tensor([[0.0, 0.0, 1.0, 1.0]])
    with pytest.raises(ValueError, match="scores"):
        D.nms(b, torch.ones(2), 0.5)
    with pytest.raises(ValueError, match="finite"):
        D.nms(b, torch.tensor([math.nan]), 0.5)
    with pytest.raises(ValueError, match="x2 < x1"):
        D.nms(torch.tensor([[1.0, 0.0, 0.0, 1.0]]), torch.ones(1), 0.5)
    with pytest.raises(ValueError, match="iou_threshold"):
        D.nms(b, torch.ones(1), math.nan)
    with pytest.raises(TypeError, match="integer"):
        D.batched_nms(b, torch.ones(1), torch.ones(1), 0.5)
    with pytest.raises(ValueError, match="labels"):
        D.batched_nms(b, torch.ones(1), torch.ones(2, dtype=torch.long), 0.5)


# ---------------------------------------------------------------------------------------------
# box coding and anchors
# ---------------------------------------------------------------------------------------------
def test_encode_hand_computed_and_round_trip():
    anchor = torch.tensor([[0.0, 0.0, 4.0, 2.0]], dtype=torch.float64)  # centre (2, 1), 4 x 2
    box = torch.tensor([[3.0, 0.0, 5.0, 4.0]], dtype=torch.float64)  # centre (4, 2), 2 x 4
    w = (10.0, 10.0, 5.0, 5.0)
    expected = [10 * 2 / 4, 10 * 1 / 2, 5 * math.log(2 / 4), 5 * math.log(4 / 2)]
    assert D.encode_boxes(box, anchor, w)[0].tolist() == pytest.approx(expected, abs=1e-12)
    assert D.decode_boxes(torch.tensor([expected], dtype=torch.float64), anchor, w).tolist()[0] == pytest.approx(
        [3.0, 0.0, 5.0, 4.0], abs=1e-12
    )
    g = torch.Generator().manual_seed(0)
    anchors = rand_boxes(100, g) + torch.tensor([0, 0, 0.5, 0.5], dtype=torch.float64)
    boxes = rand_boxes(100, g) + torch.tensor([0, 0, 0.5, 0.5], dtype=torch.float64)
    for weights in [(1, 1, 1, 1), (10.0, 10.0, 5.0, 5.0)]:
        rt = D.decode_boxes(D.encode_boxes(boxes, anchors, weights), anchors, weights)
        assert torch.allclose(rt, boxes, atol=1e-9)
    # float32 stays float32
    assert D.encode_boxes(boxes.float(), anchors.float()).dtype == torch.float32


def test_decode_clamps_large_dw():
    anchor = torch.tensor([[0.0, 0.0, 16.0, 16.0]])
    out = D.decode_boxes(torch.tensor([[0.0, 0.0, 100.0, 100.0]]), anchor)
    assert torch.allclose(out, torch.tensor([[-492.0, -492.0, 508.0, 508.0]]), rtol=1e-5)


def test_coding_bad_inputs():
    a = torch.tensor([[0.0, 0.0, 1.0, 1.0]])
    with pytest.raises(ValueError, match="positive width"):
        D.encode_boxes(torch.tensor([[0.0, 0.0, 0.0, 1.0]]), a)
    with pytest.raises(ValueError, match="same shape"):
        D.encode_boxes(a, torch.zeros(2, 4) + a)
    with pytest.raises(ValueError, match="weights"):
        D.decode_boxes(torch.zeros(1, 4), a, (1, 1, 0, 1))
    with pytest.raises(ValueError, match="finite"):
        D.decode_boxes(torch.tensor([[math.inf, 0.0, 0.0, 0.0]]), a)
    assert D.decode_boxes(torch.zeros(0, 4), torch.zeros(0, 4)).shape == (0, 4)


def test_make_anchors_matches_loop():
    H, W, stride, sizes, ratios = 3, 4, 8, [16, 32], [0.5, 1.0, 2.0]
    out = D.make_anchors((H, W), stride, sizes, ratios, dtype=torch.float64)
    ref = []
    for i in range(H):
        for j in range(W):
            cx, cy = (j + 0.5) * stride, (i + 0.5) * stride
            for s in sizes:
                for r in ratios:
                    w, h = s / math.sqrt(r), s * math.sqrt(r)
                    ref.append([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2])
    assert out.shape == (H * W * 6, 4)
    assert torch.allclose(out, torch.tensor(ref, dtype=torch.float64), atol=1e-12)
    area = D.box_area(out)
    assert torch.allclose(area.reshape(H * W, 2, 3), torch.tensor([256.0, 1024.0], dtype=torch.float64)[:, None].expand(2, 3))
    with pytest.raises(ValueError, match="ratios"):
        D.make_anchors(2, 8, [16], [])
    with pytest.raises(ValueError, match="feature_size"):
        D.make_anchors((0, 2), 8, [16], [1.0])
    with pytest.raises(ValueError, match="stride"):
        D.make_anchors(2, -1, [16], [1.0])


# ---------------------------------------------------------------------------------------------
# RoIAlign / RoIPool / SPP
# ---------------------------------------------------------------------------------------------
def ref_bilinear(fm, H, W, y, x):
    if y < -1.0 or y > H or x < -1.0 or x > W:
        return 0.0
    y, x = max(y, 0.0), max(x, 0.0)
    yl, xl = int(y), int(x)
    if yl >= H - 1:
        yh = yl = H - 1
        y = float(yl)
    else:
        yh = yl + 1
    if xl >= W - 1:
        xh = xl = W - 1
        x = float(xl)
    else:
        xh = xl + 1
    ly, lx = y - yl, x - xl
    hy, hx = 1 - ly, 1 - lx
    return hy * hx * fm[yl][xl] + hy * lx * fm[yl][xh] + ly * hx * fm[yh][xl] + ly * lx * fm[yh][xh]


def ref_roi_align(feat, rois, out, scale, sr, aligned):
    B, C, H, W = feat.shape
    PH, PW = out
    f = feat.tolist()
    res = torch.zeros(len(rois), C, PH, PW, dtype=torch.float64)
    off = 0.5 if aligned else 0.0
    for k, (b, x1, y1, x2, y2) in enumerate(rois.tolist()):
        sx, sy, ex, ey = x1 * scale - off, y1 * scale - off, x2 * scale - off, y2 * scale - off
        rw, rh = ex - sx, ey - sy
        if not aligned:
            rw, rh = max(rw, 1.0), max(rh, 1.0)
        bh, bw = rh / PH, rw / PW
        gh = sr if sr > 0 else math.ceil(rh / PH)
        gw = sr if sr > 0 else math.ceil(rw / PW)
        count = max(gh * gw, 1)
        for c in range(C):
            fm = f[int(b)][c]
            for ph in range(PH):
                for pw in range(PW):
                    acc = 0.0
                    for iy in range(gh):
                        y = sy + ph * bh + (iy + 0.5) * bh / gh
                        for ix in range(gw):
                            x = sx + pw * bw + (ix + 0.5) * bw / gw
                            acc += ref_bilinear(fm, H, W, y, x)
                    res[k, c, ph, pw] = acc / count
    return res


def ref_roi_pool(feat, rois, out, scale):
    B, C, H, W = feat.shape
    PH, PW = out
    f = feat.tolist()

    def rnd(v):
        return math.floor(v + 0.5) if v >= 0 else -math.floor(-v + 0.5)

    res = torch.zeros(len(rois), C, PH, PW, dtype=torch.float64)
    for k, (b, x1, y1, x2, y2) in enumerate(rois.tolist()):
        sw, sh, ew, eh = rnd(x1 * scale), rnd(y1 * scale), rnd(x2 * scale), rnd(y2 * scale)
        rw, rh = max(ew - sw + 1, 1), max(eh - sh + 1, 1)
        for c in range(C):
            for ph in range(PH):
                for pw in range(PW):
                    hs = min(max(math.floor(ph * rh / PH) + sh, 0), H)
                    he = min(max(math.ceil((ph + 1) * rh / PH) + sh, 0), H)
                    ws = min(max(math.floor(pw * rw / PW) + sw, 0), W)
                    we = min(max(math.ceil((pw + 1) * rw / PW) + sw, 0), W)
                    vals = [f[int(b)][c][h][w] for h in range(hs, he) for w in range(ws, we)]
                    res[k, c, ph, pw] = max(vals) if vals else 0.0
    return res


def roi_scene(seed):
    g = torch.Generator().manual_seed(seed)
    feat = torch.randn(2, 3, 9, 11, generator=g, dtype=torch.float64)
    rois = []
    for _ in range(7):
        x1, y1 = (torch.rand(2, generator=g, dtype=torch.float64) * 60 - 12).tolist()  # some outside
        w, h = (torch.rand(2, generator=g, dtype=torch.float64) * 40).tolist()
        rois.append([float(torch.randint(0, 2, (1,), generator=g)), x1, y1, x1 + w, y1 + h])
    rois.append([0.0, 4.0, 4.0, 4.0, 4.0])  # zero-size roi
    rois.append([1.0, -30.0, -30.0, -20.0, -20.0])  # entirely outside
    rois.append([1.0, 0.0, 0.0, 43.9, 35.9])  # whole map
    return feat, torch.tensor(rois, dtype=torch.float64)


@pytest.mark.parametrize("seed", [0, 1])
@pytest.mark.parametrize("aligned", [True, False])
@pytest.mark.parametrize("sr", [2, -1, 0])
@pytest.mark.parametrize("out", [(3, 2), (1, 1)])
def test_roi_align_matches_per_sample_loop(seed, aligned, sr, out):
    feat, rois = roi_scene(seed)
    scale = 0.25
    got = D.roi_align(feat, rois, out, scale, sr, aligned)
    ref = ref_roi_align(feat, rois, out, scale, sr, aligned)
    assert got.shape == ref.shape
    assert torch.allclose(got, ref, atol=1e-12, rtol=0)


def test_roi_align_float32_and_sign_of_shift():
    feat, rois = roi_scene(3)
    got = D.roi_align(feat.float(), rois.float(), 2, 0.25, -1, True)
    assert got.dtype == torch.float32
    assert torch.allclose(got.double(), ref_roi_align(feat, rois, (2, 2), 0.25, -1, True), atol=1e-5)
    # a linear ramp is reproduced exactly at bin centres: aligned=True samples pixel centres
    ramp = torch.arange(8.0, dtype=torch.float64).repeat(8, 1)[None, None]  # value = column index
    o = D.roi_align(ramp, torch.tensor([[0.0, 1.0, 1.0, 5.0, 5.0]], dtype=torch.float64), (1, 2), 1.0, 2, True)
    # bins span x in [0.5, 2.5] and [2.5, 4.5] after the -0.5 shift: means 1.5 and 3.5
    assert o.flatten().tolist() == pytest.approx([1.5, 3.5])


@pytest.mark.parametrize("aligned", [True, False])
def test_roi_align_samples_exactly_on_the_border(aligned):
    # samples land exactly on x = W, y = H, x = -1 and y = -1: torchvision keeps x = W (clamped to
    # the last column) and x = -1 (clamped to 0), and zeroes only strictly outside [-1, W].
    feat = torch.randn(1, 2, 4, 5, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    o = 0.5 if aligned else 0.0
    rois = torch.tensor(
        [[0.0, 4 + o, 3 + o, 6 + o, 5 + o], [0.0, -2 + o, -2 + o, 0 + o, 0 + o], [0.0, 5 + o, 4 + o, 7 + o, 6 + o]],
        dtype=torch.float64,
    )
    got = D.roi_align(feat, rois, 1, 1.0, 1, aligned)
    ref = ref_roi_align(feat, rois, (1, 1), 1.0, 1, aligned)
    assert torch.allclose(got, ref, atol=1e-12)
    assert bool((got[:2] != 0).all())  # on the border: clamped, not zeroed


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("out", [(2, 2), (3, 4), (7, 7)])
def test_roi_pool_matches_loop(seed, out):
    feat, rois = roi_scene(seed)
    rois[0, 1:] = torch.tensor([5.0, 3.0, 21.0, 13.0])  # scaled: 2.5, 1.5, 10.5, 6.5, exact halves
    rois[1, 1:] = torch.tensor([-5.0, -3.0, 1.0, 3.0])  # negative halves round away from zero
    got = D.roi_pool(feat, rois, out, 0.5)
    assert torch.equal(got, ref_roi_pool(feat, rois, out, 0.5))


def test_roi_bad_inputs():
    feat = torch.zeros(2, 1, 4, 4)
    with pytest.raises(ValueError, match="rois"):
        D.roi_align(feat, torch.zeros(1, 4), 2)
    with pytest.raises(ValueError, match="batch indices"):
        D.roi_align(feat, torch.tensor([[2.0, 0, 0, 1, 1]]), 2)
    with pytest.raises(ValueError, match="batch indices"):
        D.roi_pool(feat, torch.tensor([[0.5, 0, 0, 1, 1]]), 2)
    with pytest.raises(ValueError, match="x2 < x1"):
        D.roi_pool(feat, torch.tensor([[0.0, 2, 0, 1, 1]]), 2)
    with pytest.raises(ValueError, match="finite"):
        D.roi_align(feat, torch.tensor([[0.0, 0, 0, math.nan, 1]]), 2)
    with pytest.raises(ValueError, match="features"):
        D.roi_align(torch.zeros(4, 4), torch.zeros(0, 5), 2)
    with pytest.raises(ValueError, match="output_size"):
        D.roi_pool(feat, torch.zeros(0, 5), 0)
    with pytest.raises(ValueError, match="spatial_scale"):
        D.roi_align(feat, torch.zeros(0, 5), 2, spatial_scale=0.0)
    assert D.roi_align(feat, torch.zeros(0, 5), (2, 3)).shape == (0, 1, 2, 3)
    assert D.roi_pool(feat, torch.zeros(0, 5), 2).shape == (0, 1, 2, 2)


@pytest.mark.parametrize("shape", [(2, 3, 7, 5), (1, 2, 1, 1), (1, 1, 3, 13), (2, 2, 16, 16)])
def test_spp_matches_adaptive_max_pool(shape):
    x = torch.randn(*shape, generator=torch.Generator().manual_seed(0))
    levels = (1, 2, 3, 4)
    got = D.spatial_pyramid_pool(x, levels)
    ref = torch.cat([F.adaptive_max_pool2d(x, lv).flatten(1) for lv in levels], 1)
    assert got.shape == (shape[0], shape[1] * sum(lv * lv for lv in levels))
    assert torch.equal(got, ref)
    with pytest.raises(ValueError, match="levels"):
        D.spatial_pyramid_pool(x, (0,))
    with pytest.raises(ValueError, match="features"):
        D.spatial_pyramid_pool(x[0], (1,))


# ---------------------------------------------------------------------------------------------
# anchor assignment and smooth L1
# ---------------------------------------------------------------------------------------------
def ref_assign(anchors, gts, pos, neg):
    A, G = len(anchors), len(gts)
    if G == 0:
        return [0] * A, [-1] * A
    iou = [[ref_iou(a, g) for g in gts] for a in anchors]
    labels, matched = [], []
    for a in range(A):
        best = max(iou[a])
        matched.append(iou[a].index(best))
        labels.append(1 if best >= pos else (0 if best < neg else -1))
    for g in range(G):
        col = [iou[a][g] for a in range(A)]
        m = max(col) if col else 0.0
        if m > 0:
            for a in range(A):
                if iou[a][g] == m:
                    labels[a] = 1
    return labels, matched


@pytest.mark.parametrize("seed", range(5))
def test_assign_anchors_matches_loop(seed):
    g = torch.Generator().manual_seed(seed)
    anchors = D.make_anchors((4, 4), 8, [8, 16], [0.5, 1.0, 2.0], dtype=torch.float64)
    gts = rand_boxes(3 + seed, g, size=28.0)
    labels, matched = D.assign_anchors(anchors, gts, 0.6, 0.3)
    rl, rm = ref_assign(anchors.tolist(), gts.tolist(), 0.6, 0.3)
    assert labels.tolist() == rl and matched.tolist() == rm
    assert set(labels.tolist()) <= {-1, 0, 1}


def test_assign_anchors_best_anchor_rule_with_ties_and_empty():
    # gt overlaps two anchors equally (IoU 1/3 each, below pos_iou): both become positive.
    anchors = torch.tensor([[0.0, 0, 2, 2], [2.0, 0, 4, 2], [10.0, 10, 12, 12]], dtype=torch.float64)
    gt = torch.tensor([[1.0, 0, 3, 2]], dtype=torch.float64)
    labels, matched = D.assign_anchors(anchors, gt)
    assert labels.tolist() == [1, 1, 0] and matched.tolist() == [0, 0, 0]
    assert (labels.tolist(), matched.tolist()) == ref_assign(anchors.tolist(), gt.tolist(), 0.7, 0.3)
    # a gt that touches no anchor (best IoU 0) does not make anything positive
    labels, _ = D.assign_anchors(anchors, torch.tensor([[50.0, 50, 51, 51]], dtype=torch.float64))
    assert labels.tolist() == [0, 0, 0]
    labels, matched = D.assign_anchors(anchors, torch.zeros(0, 4, dtype=torch.float64))
    assert labels.tolist() == [0, 0, 0] and matched.tolist() == [-1, -1, -1]
    labels, matched = D.assign_anchors(torch.zeros(0, 4, dtype=torch.float64), gt)
    assert labels.shape == matched.shape == (0,)
    with pytest.raises(ValueError, match="neg_iou <= pos_iou"):
        D.assign_anchors(anchors, gt, 0.3, 0.7)
    with pytest.raises(ValueError, match="x2 < x1"):
        D.assign_anchors(anchors, torch.tensor([[1.0, 0, 0, 2]], dtype=torch.float64))


@SET
@given(
    st.lists(st.floats(-5, 5), min_size=1, max_size=20),
    st.sampled_from([0.0, 0.1, 1.0, 1 / 9, 2.5]),
)
def test_smooth_l1_closed_form_and_torch(xs, beta):
    x = torch.tensor(xs, dtype=torch.float64)
    got = D.smooth_l1(x, beta)
    closed = [0.5 * v * v / beta if abs(v) < beta else abs(v) - 0.5 * beta for v in xs]
    assert got.tolist() == pytest.approx(closed, abs=1e-12)
    ref = F.smooth_l1_loss(x, torch.zeros_like(x), reduction="none", beta=beta)
    assert torch.allclose(got, ref, atol=1e-12)


def test_smooth_l1_bad_inputs():
    with pytest.raises(ValueError, match="beta"):
        D.smooth_l1(torch.zeros(2), -1.0)
    with pytest.raises(TypeError, match="floating-point"):
        D.smooth_l1(torch.zeros(2, dtype=torch.long))
    assert D.smooth_l1(torch.zeros(0)).shape == (0,)


# ---------------------------------------------------------------------------------------------
# average precision and mAP
# ---------------------------------------------------------------------------------------------
def test_average_precision_hand_computed():
    # ranks: TP, FP, TP, FP, TP with 4 ground truths.
    # recall   .25 .25 .5  .5  .75 ; precision 1 1/2 2/3 1/2 3/5 ; envelope 1 2/3 2/3 3/5 3/5
    s = torch.tensor([0.9, 0.8, 0.7, 0.6, 0.5])
    tp = torch.tensor([True, False, True, False, True])
    voc = 0.25 * 1 + 0.25 * (2 / 3) + 0.25 * (3 / 5)
    assert D.average_precision(s, tp, 4, "voc") == pytest.approx(voc, abs=1e-12)
    # coco: r in [0, .25] -> 1 (26 levels), (.25, .5] -> 2/3 (25), (.5, .75] -> 3/5 (25), > .75 -> 0
    coco = (26 * 1 + 25 * (2 / 3) + 25 * (3 / 5)) / 101
    assert D.average_precision(s, tp, 4, "coco") == pytest.approx(coco, abs=1e-12)
    # order is by score, not by position
    perm = torch.tensor([4, 2, 0, 3, 1])
    assert D.average_precision(s[perm], tp[perm], 4, "voc") == pytest.approx(voc, abs=1e-12)
    # perfect and empty
    assert D.average_precision(torch.ones(3), torch.ones(3, dtype=torch.bool), 3, "coco") == 1.0
    assert D.average_precision(torch.ones(3), torch.ones(3, dtype=torch.bool), 3, "voc") == 1.0
    assert D.average_precision(torch.zeros(0), torch.zeros(0, dtype=torch.bool), 2) == 0.0
    assert D.average_precision(torch.zeros(0), torch.zeros(0, dtype=torch.bool), 2, "voc") == 0.0


def test_average_precision_bad_inputs():
    s, tp = torch.ones(2), torch.ones(2, dtype=torch.bool)
    with pytest.raises(ValueError, match="n_ground_truth"):
        D.average_precision(s, tp, 0)
    with pytest.raises(ValueError, match="more true positives"):
        D.average_precision(s, tp, 1)
    with pytest.raises(ValueError, match="interpolation"):
        D.average_precision(s, tp, 2, "11point")
    with pytest.raises(ValueError, match="finite"):
        D.average_precision(torch.tensor([math.nan, 1.0]), tp, 2)
    with pytest.raises(TypeError, match="bool"):
        D.average_precision(s, torch.ones(2), 2)
    with pytest.raises(ValueError, match="shape"):
        D.average_precision(s, torch.ones(3, dtype=torch.bool), 3)


def coco_scene(seed):
    """Random images with boxes on a 0.25 grid (exact in xywh), jittered true detections,
    false positives, an image without predictions, a class with ground truth but no prediction
    (4) and a class predicted but absent from the ground truth (5)."""
    rng = random.Random(seed)
    preds, targets = [], []
    for img in range(6):
        ng = rng.randint(0 if img == 5 else 1, 5)
        gb, gl = [], []
        for _ in range(ng):
            x, y = rng.randint(0, 200) / 4, rng.randint(0, 200) / 4
            w, h = rng.randint(4, 120) / 4, rng.randint(4, 120) / 4
            gb.append([x, y, x + w, y + h])
            gl.append(rng.choice([1, 2, 3, 3, 4]))
        pb, pl, ps = [], [], []
        if img != 2:
            for b, c in zip(gb, gl):
                if c == 4:
                    continue
                for _ in range(rng.randint(0, 2)):
                    j = [v + rng.randint(-6, 6) / 4 for v in b]
                    j = [min(j[0], j[2]), min(j[1], j[3]), max(j[0], j[2]), max(j[1], j[3])]
                    pb.append(j)
                    pl.append(c if rng.random() < 0.85 else rng.choice([1, 2, 3]))
                    ps.append(rng.random())
            for _ in range(rng.randint(0, 4)):
                x, y = rng.randint(0, 200) / 4, rng.randint(0, 200) / 4
                pb.append([x, y, x + rng.randint(4, 80) / 4, y + rng.randint(4, 80) / 4])
                pl.append(rng.choice([1, 2, 3, 5]))
                ps.append(rng.random())
        targets.append(
            {"boxes": torch.tensor(gb, dtype=torch.float64).reshape(-1, 4), "labels": torch.tensor(gl, dtype=torch.long)}
        )
        preds.append(
            {
                "boxes": torch.tensor(pb, dtype=torch.float64).reshape(-1, 4),
                "scores": torch.tensor(ps, dtype=torch.float64),
                "labels": torch.tensor(pl, dtype=torch.long),
            }
        )
    return preds, targets


def cocoeval(preds, targets):
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    def xywh(b):
        return [b[0], b[1], b[2] - b[0], b[3] - b[1]]

    cats = sorted({int(c) for t in targets for c in t["labels"]} | {int(c) for p in preds for c in p["labels"]})
    gt = {"images": [{"id": i + 1} for i in range(len(targets))], "categories": [{"id": c} for c in cats], "annotations": []}
    for i, t in enumerate(targets):
        for b, c in zip(t["boxes"].tolist(), t["labels"].tolist()):
            bb = xywh(b)
            gt["annotations"].append(
                {"id": len(gt["annotations"]) + 1, "image_id": i + 1, "category_id": c, "bbox": bb, "area": bb[2] * bb[3], "iscrowd": 0}
            )
    res = []
    for i, p in enumerate(preds):
        for b, s, c in zip(p["boxes"].tolist(), p["scores"].tolist(), p["labels"].tolist()):
            res.append({"image_id": i + 1, "category_id": c, "bbox": xywh(b), "score": s})
    with contextlib.redirect_stdout(io.StringIO()):
        coco = COCO()
        coco.dataset = gt
        coco.createIndex()
        dt = coco.loadRes(res)
        E = COCOeval(coco, dt, "bbox")
        E.evaluate()
        E.accumulate()
        E.summarize()
    return E


@pytest.mark.parametrize("seed", range(6))
def test_map_matches_pycocotools(seed):
    preds, targets = coco_scene(seed)
    E = cocoeval(preds, targets)
    thrs = tuple(float(t) for t in np.linspace(0.5, 0.95, 10))
    assert D.mean_average_precision(preds, targets, thrs) == pytest.approx(E.stats[0], abs=1e-6)
    assert D.mean_average_precision(preds, targets, (0.5,)) == pytest.approx(E.stats[1], abs=1e-6)
    assert D.mean_average_precision(preds, targets, (0.75,)) == pytest.approx(E.stats[2], abs=1e-6)
    # per threshold, against COCOeval's precision array (T, R, K, A, M), area "all", maxDets 100
    prec = E.eval["precision"][:, :, :, 0, 2]
    for ti, t in enumerate(thrs):
        p = prec[ti]
        want = float(np.mean(p[p > -1]))
        assert D.mean_average_precision(preds, targets, (t,)) == pytest.approx(want, abs=1e-6)
    # the scene exercises what it claims to
    assert any(len(p["scores"]) == 0 for p in preds)
    assert 4 in {int(c) for t in targets for c in t["labels"]}
    assert 4 not in {int(c) for p in preds for c in p["labels"]}


def test_map_equal_iou_goes_to_the_later_ground_truth_as_in_pycocotools():
    # det 0 has IoU 0.5 with both gts; COCOeval gives it the later one (gt 1), leaving gt 0 for
    # det 1 (IoU 1 with gt 0, 1/3 with gt 1). Taking the first gt instead would make det 1 a FP.
    t = [{"boxes": torch.tensor([[0.0, 0, 10, 20], [0.0, -10, 10, 10]]), "labels": torch.tensor([1, 1])}]
    p = [{"boxes": torch.tensor([[0.0, 0, 10, 10], [0.0, 0, 10, 20]]), "scores": torch.tensor([0.9, 0.8]), "labels": torch.tensor([1, 1])}]
    E = cocoeval(p, t)
    assert E.stats[1] == pytest.approx(1.0)
    assert D.mean_average_precision(p, t, (0.5,)) == pytest.approx(E.stats[1], abs=1e-6)


def test_map_max_detections_and_ties_match_pycocotools():
    # 120 detections of one class on one image, many with tied scores: only the top 100 count.
    rng = random.Random(7)
    gb = [[i * 10.0, 0.0, i * 10.0 + 8, 8.0] for i in range(30)]
    pb, ps = [], []
    for _ in range(120):
        i = rng.randrange(30)
        pb.append([i * 10.0 + rng.randint(-2, 2), rng.randint(-2, 2), i * 10.0 + 8 + rng.randint(-2, 2), 8.0 + rng.randint(-2, 2)])
        ps.append(rng.randint(0, 5) / 5)
    preds = [{"boxes": torch.tensor(pb), "scores": torch.tensor(ps), "labels": torch.ones(120, dtype=torch.long)}]
    targets = [{"boxes": torch.tensor(gb), "labels": torch.ones(30, dtype=torch.long)}]
    E = cocoeval(preds, targets)
    thrs = tuple(float(t) for t in np.linspace(0.5, 0.95, 10))
    assert D.mean_average_precision(preds, targets, thrs) == pytest.approx(E.stats[0], abs=1e-6)
    assert D.mean_average_precision(preds, targets, (0.5,)) == pytest.approx(E.stats[1], abs=1e-6)


def test_map_voc_and_edge_cases():
    t = [{"boxes": torch.tensor([[0.0, 0, 10, 10], [20.0, 20, 30, 30]]), "labels": torch.tensor([1, 1])}]
    p = [{"boxes": torch.tensor([[0.0, 0, 10, 10], [50.0, 50, 60, 60], [20.0, 20, 30, 29]]),
          "scores": torch.tensor([0.9, 0.8, 0.7]), "labels": torch.tensor([1, 1, 1])}]
    # TP, FP, TP (IoU 0.9): recall .5 .5 1, precision 1 .5 2/3 -> VOC 0.5 + 0.5 * 2/3
    assert D.mean_average_precision(p, t, (0.5,), "voc") == pytest.approx(0.5 + 0.5 * 2 / 3)
    # at IoU 0.95 the third is a FP: VOC 0.5
    assert D.mean_average_precision(p, t, (0.95,), "voc") == pytest.approx(0.5)
    # no predictions at all: AP 0; no ground truth at all: nan
    empty_p = [{"boxes": torch.zeros(0, 4), "scores": torch.zeros(0), "labels": torch.zeros(0, dtype=torch.long)}]
    assert D.mean_average_precision(empty_p, t) == 0.0
    empty_t = [{"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.long)}]
    assert math.isnan(D.mean_average_precision(p, empty_t))
    assert math.isnan(D.mean_average_precision([], []))


def test_map_bad_inputs():
    t = [{"boxes": torch.tensor([[0.0, 0, 10, 10]]), "labels": torch.tensor([1])}]
    p = [{"boxes": torch.tensor([[0.0, 0, 10, 10]]), "scores": torch.tensor([0.5]), "labels": torch.tensor([1])}]
    with pytest.raises(ValueError, match="one entry per image"):
        D.mean_average_precision(p, t + t)
    with pytest.raises(ValueError, match="scores"):
        D.mean_average_precision([{"boxes": p[0]["boxes"], "labels": p[0]["labels"]}], t)
    with pytest.raises(ValueError, match="finite"):
        D.mean_average_precision([dict(p[0], scores=torch.tensor([math.inf]))], t)
    with pytest.raises(ValueError, match="x2 < x1"):
        D.mean_average_precision(p, [dict(t[0], boxes=torch.tensor([[10.0, 0, 0, 10]]))])
    with pytest.raises(ValueError, match="iou_thresholds"):
        D.mean_average_precision(p, t, (1.5,))
    with pytest.raises(ValueError, match="interpolation"):
        D.mean_average_precision(p, t, interpolation="area")
    with pytest.raises(ValueError, match="labels"):
        D.mean_average_precision(p, [dict(t[0], labels=torch.tensor([1, 2]))])


# ---------------------------------------------------------------------------------------------
# Hungarian matching and the DETR cost
# ---------------------------------------------------------------------------------------------
def brute_force(cost: np.ndarray) -> float:
    n, m = cost.shape
    if n <= m:
        return min(sum(cost[i, c] for i, c in enumerate(cols)) for cols in itertools.permutations(range(m), n))
    return brute_force(cost.T)


def check_matching(cost: np.ndarray, rows: torch.Tensor, cols: torch.Tensor) -> float:
    n, m = cost.shape
    assert rows.dtype == cols.dtype == torch.int64
    assert len(rows) == len(cols) == min(n, m)
    assert rows.tolist() == sorted(set(rows.tolist())) and len(set(cols.tolist())) == len(cols)
    return float(cost[rows.numpy(), cols.numpy()].sum())


@pytest.mark.parametrize("seed", range(8))
@pytest.mark.parametrize("shape", [(1, 1), (5, 5), (7, 12), (12, 7), (30, 30), (20, 45)])
def test_hungarian_matches_scipy(seed, shape):
    from scipy.optimize import linear_sum_assignment

    rng = np.random.default_rng(seed)
    for cost in [rng.standard_normal(shape) * 10, rng.integers(0, 4, shape).astype(float), rng.integers(-3, 3, shape) * 1e6]:
        rows, cols = D.hungarian_match(torch.tensor(cost))
        r, c = linear_sum_assignment(cost)
        assert check_matching(cost, rows, cols) == pytest.approx(float(cost[r, c].sum()), abs=1e-9 * max(1.0, abs(cost).max()))


@SET
@given(st.integers(1, 5), st.integers(1, 5), st.data())
def test_hungarian_matches_brute_force(n, m, data):
    vals = data.draw(st.lists(st.integers(-5, 5), min_size=n * m, max_size=n * m))
    cost = np.array(vals, dtype=float).reshape(n, m)
    rows, cols = D.hungarian_match(torch.tensor(cost, dtype=torch.float32))
    assert check_matching(cost, rows, cols) == brute_force(cost)


def test_hungarian_edge_and_bad_inputs():
    r, c = D.hungarian_match(torch.zeros(0, 3))
    assert r.shape == c.shape == (0,) and r.dtype == torch.int64
    assert D.hungarian_match(torch.zeros(3, 0))[0].shape == (0,)
    r, c = D.hungarian_match(torch.tensor([[5, 1], [1, 5]]))  # integer costs accepted
    assert r.tolist() == [0, 1] and c.tolist() == [1, 0]
    with pytest.raises(ValueError, match="finite"):
        D.hungarian_match(torch.tensor([[0.0, math.inf]]))
    with pytest.raises(ValueError, match="finite"):
        D.hungarian_match(torch.tensor([[math.nan]]))
    with pytest.raises(ValueError, match=r"\(N, M\)"):
        D.hungarian_match(torch.zeros(3))
    with pytest.raises(TypeError, match="cost"):
        D.hungarian_match([[1.0]])


def test_detr_cost_matches_loop():
    g = torch.Generator().manual_seed(0)
    Q, G, K = 6, 4, 5
    logits = torch.randn(Q, K, generator=g, dtype=torch.float64)
    boxes = torch.cat([torch.rand(Q, 2, generator=g, dtype=torch.float64), torch.rand(Q, 2, generator=g, dtype=torch.float64) * 0.5], 1)
    gtb = torch.cat([torch.rand(G, 2, generator=g, dtype=torch.float64), torch.rand(G, 2, generator=g, dtype=torch.float64) * 0.5], 1)
    gtl = torch.tensor([0, 3, 3, 1])
    got = D.detr_matching_cost(logits, boxes, gtl, gtb, 1.0, 5.0, 2.0)
    assert got.shape == (Q, G)
    for q in range(Q):
        z = [math.exp(v) for v in logits[q].tolist()]
        for j in range(G):
            prob = z[int(gtl[j])] / sum(z)
            l1 = sum(abs(a - b) for a, b in zip(boxes[q].tolist(), gtb[j].tolist()))

            def xyxy(b):
                return [b[0] - b[2] / 2, b[1] - b[3] / 2, b[0] + b[2] / 2, b[1] + b[3] / 2]

            want = -prob + 5 * l1 - 2 * ref_giou(xyxy(boxes[q].tolist()), xyxy(gtb[j].tolist()))
            assert got[q, j].item() == pytest.approx(want, abs=1e-12)
    rows, cols = D.hungarian_match(got)
    assert len(rows) == G
    assert D.detr_matching_cost(logits, boxes, gtl[:0], gtb[:0]).shape == (Q, 0)


def test_detr_cost_bad_inputs():
    lg, b = torch.zeros(2, 3), torch.tensor([[0.5, 0.5, 0.1, 0.1]] * 2)
    with pytest.raises(ValueError, match="gt_labels"):
        D.detr_matching_cost(lg, b, torch.tensor([3, 0]), b)
    with pytest.raises(ValueError, match="boxes must have shape"):
        D.detr_matching_cost(lg, b[:1], torch.tensor([0, 0]), b)
    with pytest.raises(ValueError, match="finite"):
        D.detr_matching_cost(torch.tensor([[math.nan, 0, 0], [0, 0, 0]]), b, torch.tensor([0, 0]), b)
    with pytest.raises(ValueError, match="w >= 0"):
        D.detr_matching_cost(lg, b, torch.tensor([0, 0]), -b)
    with pytest.raises(ValueError, match="gt_labels"):
        D.detr_matching_cost(lg, b, torch.tensor([0]), b)
