"""Tests for the faster-rcnn chapter's additions to minilib.detection: sample_labels,
rpn_proposals and faster_rcnn_loss, against plain-Python references and torch built-ins."""

import math

import pytest
import torch
import torch.nn.functional as F

from minilib import detection as D


# ---------------------------------------------------------------------------------------------
# sample_labels
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("batch,frac", [(8, 0.5), (5, 0.25), (64, 0.5), (3, 1.0), (4, 0.0)])
def test_sample_labels_counts_and_subset(seed, batch, frac):
    g = torch.Generator().manual_seed(seed)
    labels = torch.randint(-1, 4, (40,), generator=g)  # classes 1..3, background 0, ignored -1
    out = D.sample_labels(labels, batch, frac, torch.Generator().manual_seed(seed))
    P, Q = int((labels >= 1).sum()), int((labels == 0).sum())
    n_pos = min(P, math.floor(frac * batch))  # the rule, computed by hand
    n_neg = min(Q, batch - n_pos)
    assert int((out >= 1).sum()) == n_pos and int((out == 0).sum()) == n_neg
    kept = out != -1
    assert torch.equal(out[kept], labels[kept])  # kept rows keep their label (class index too)
    assert out.dtype == labels.dtype


def test_sample_labels_uniform_and_seeded():
    labels = torch.tensor([1, 1, 1, 1, 0, 0])
    counts = torch.zeros(6)
    g = torch.Generator().manual_seed(0)
    n = 4000
    for _ in range(n):
        counts += (D.sample_labels(labels, 2, 0.5, g) == 1).float()
    # each of the 4 positives is drawn with probability 1/4: binomial sd sqrt(n p (1-p)) ~ 27
    assert torch.allclose(counts[:4], torch.full((4,), n / 4), atol=5 * math.sqrt(n * 0.25 * 0.75))
    a = D.sample_labels(labels, 3, 0.5, torch.Generator().manual_seed(7))
    b = D.sample_labels(labels, 3, 0.5, torch.Generator().manual_seed(7))
    assert torch.equal(a, b)


def test_sample_labels_bad_inputs():
    lab = torch.tensor([1, 0, -1])
    with pytest.raises(TypeError, match="integer"):
        D.sample_labels(lab.float(), 2)
    with pytest.raises(TypeError, match="torch.Tensor"):
        D.sample_labels([1, 0], 2)
    with pytest.raises(ValueError, match="shape"):
        D.sample_labels(lab[None], 2)
    with pytest.raises(ValueError, match="below -1"):
        D.sample_labels(torch.tensor([-2, 0]), 2)
    with pytest.raises(ValueError, match="batch_size"):
        D.sample_labels(lab, 0)
    with pytest.raises(ValueError, match="positive_fraction"):
        D.sample_labels(lab, 2, 1.5)
    with pytest.raises(TypeError, match="generator"):
        D.sample_labels(lab, 2, 0.5, generator=0)
    assert D.sample_labels(torch.zeros(0, dtype=torch.long), 4).shape == (0,)


# ---------------------------------------------------------------------------------------------
# rpn_proposals
# ---------------------------------------------------------------------------------------------
def ref_iou(a, b):
    iw = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    ih = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = iw * ih
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def ref_proposals(obj, deltas, anchors, H, W, pre, post, thr, min_size):
    order = sorted(range(len(obj)), key=lambda i: -obj[i])[:pre]
    cand = []
    for i in order:
        x1, y1, x2, y2 = anchors[i]
        wa, ha = x2 - x1, y2 - y1
        xa, ya = x1 + wa / 2, y1 + ha / 2
        tx, ty, tw, th = deltas[i]
        x, y = xa + tx * wa, ya + ty * ha
        w, h = wa * math.exp(min(tw, math.log(1000 / 16))), ha * math.exp(min(th, math.log(1000 / 16)))
        b = [min(max(x - w / 2, 0), W), min(max(y - h / 2, 0), H), min(max(x + w / 2, 0), W), min(max(y + h / 2, 0), H)]
        if b[2] - b[0] >= min_size and b[3] - b[1] >= min_size:
            cand.append((obj[i], b))
    kept = []
    for s, b in cand:  # already sorted by score
        if all(ref_iou(b, kb) <= thr for _, kb in kept):
            kept.append((s, b))
    return kept[:post]


@pytest.mark.parametrize("seed", range(5))
def test_rpn_proposals_matches_python_reference(seed):
    g = torch.Generator().manual_seed(seed)
    anchors = D.make_anchors((6, 5), 4, [6, 12], [0.5, 1.0], dtype=torch.float64)
    A = anchors.shape[0]
    obj = torch.randn(A, generator=g, dtype=torch.float64)
    deltas = 0.3 * torch.randn(A, 4, generator=g, dtype=torch.float64)
    boxes, scores = D.rpn_proposals(obj, deltas, anchors, (24, 20), pre_nms_top_n=60, post_nms_top_n=15,
                                    iou_threshold=0.5, min_size=2.0)
    ref = ref_proposals(obj.tolist(), deltas.tolist(), anchors.tolist(), 24, 20, 60, 15, 0.5, 2.0)
    assert scores.tolist() == pytest.approx([s for s, _ in ref], abs=1e-12)
    assert torch.allclose(boxes, torch.tensor([b for _, b in ref], dtype=torch.float64).reshape(-1, 4), atol=1e-9)
    assert boxes.dtype == torch.float64
    assert bool((boxes[:, 2] <= 20).all()) and bool((boxes[:, 3] <= 24).all())


def test_rpn_proposals_bad_inputs_and_gradients():
    anchors = torch.tensor([[0.0, 0, 8, 8], [4.0, 4, 12, 12]])
    obj = torch.zeros(2, requires_grad=True)
    deltas = torch.zeros(2, 4, requires_grad=True)
    b, s = D.rpn_proposals(obj, deltas, anchors, 16)
    (b.sum() + s.sum()).backward()  # differentiable if a caller wants it
    assert deltas.grad is not None
    with pytest.raises(ValueError, match="deltas must have shape"):
        D.rpn_proposals(obj, torch.zeros(3, 4), anchors, 16)
    with pytest.raises(ValueError, match="objectness"):
        D.rpn_proposals(torch.zeros(3), deltas, anchors, 16)
    with pytest.raises(TypeError, match="floating-point"):
        D.rpn_proposals(torch.zeros(2, dtype=torch.long), deltas, anchors, 16)
    with pytest.raises(ValueError, match="image_size"):
        D.rpn_proposals(obj, deltas, anchors, 0)
    with pytest.raises(ValueError, match="post_nms_top_n"):
        D.rpn_proposals(obj, deltas, anchors, 16, post_nms_top_n=0)
    with pytest.raises(ValueError, match="min_size"):
        D.rpn_proposals(obj, deltas, anchors, 16, min_size=-1.0)


# ---------------------------------------------------------------------------------------------
# faster_rcnn_loss
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("seed", range(4))
def test_faster_rcnn_loss_binary_matches_loop(seed):
    g = torch.Generator().manual_seed(seed)
    N = 30
    logits = torch.randn(N, generator=g, dtype=torch.float64)
    labels = torch.randint(-1, 2, (N,), generator=g)
    d, t = torch.randn(N, 4, generator=g, dtype=torch.float64), torch.randn(N, 4, generator=g, dtype=torch.float64)
    cls, box = D.faster_rcnn_loss(logits, d, labels, t, beta=1 / 9)
    n = sum(1 for v in labels.tolist() if v >= 0)
    ce = 0.0
    for z, y in zip(logits.tolist(), labels.tolist()):
        if y >= 0:
            p = 1 / (1 + math.exp(-z))
            ce -= math.log(p) if y == 1 else math.log(1 - p)
    sl1 = F.smooth_l1_loss(d, t, reduction="none", beta=1 / 9).sum(1)  # torch built-in
    assert float(cls) == pytest.approx(ce / n, abs=1e-12)
    assert float(box) == pytest.approx(float(sl1[labels == 1].sum()) / n, abs=1e-12)


def test_faster_rcnn_loss_multiclass_matches_torch():
    g = torch.Generator().manual_seed(0)
    N, C = 25, 3
    logits = torch.randn(N, C + 1, generator=g)
    labels = torch.randint(-1, C + 1, (N,), generator=g)
    d, t = torch.randn(N, 4, generator=g), torch.randn(N, 4, generator=g)
    cls, box = D.faster_rcnn_loss(logits, d, labels, t, beta=1.0)
    assert torch.allclose(cls, F.cross_entropy(logits, labels, ignore_index=-1), atol=1e-6)
    pos = labels >= 1
    ref = F.smooth_l1_loss(d[pos], t[pos], reduction="sum", beta=1.0) / (labels >= 0).sum()
    assert torch.allclose(box, ref, atol=1e-6)


def test_faster_rcnn_loss_all_ignored_and_bad_inputs():
    x = torch.zeros(3, requires_grad=True)
    cls, box = D.faster_rcnn_loss(x, torch.zeros(3, 4), torch.full((3,), -1), torch.zeros(3, 4))
    assert cls.item() == 0.0 and box.item() == 0.0
    (cls + box).backward()
    with pytest.raises(ValueError, match="binary logits"):
        D.faster_rcnn_loss(torch.zeros(2), torch.zeros(2, 4), torch.tensor([2, 0]), torch.zeros(2, 4))
    with pytest.raises(ValueError, match="labels must be <= 2"):
        D.faster_rcnn_loss(torch.zeros(2, 3), torch.zeros(2, 4), torch.tensor([3, 0]), torch.zeros(2, 4))
    with pytest.raises(ValueError, match="box_deltas must have shape"):
        D.faster_rcnn_loss(torch.zeros(2), torch.zeros(2, 3), torch.tensor([1, 0]), torch.zeros(2, 4))
    with pytest.raises(TypeError, match="integer"):
        D.faster_rcnn_loss(torch.zeros(2), torch.zeros(2, 4), torch.tensor([1.0, 0.0]), torch.zeros(2, 4))
    with pytest.raises(ValueError, match="beta"):
        D.faster_rcnn_loss(torch.zeros(2), torch.zeros(2, 4), torch.tensor([1, 0]), torch.zeros(2, 4), beta=-1.0)
    with pytest.raises(ValueError, match="finite"):
        D.faster_rcnn_loss(torch.zeros(2), torch.zeros(2, 4), torch.tensor([1, 0]), torch.full((2, 4), math.nan))


# ---------------------------------------------------------------------------------------------
# assign_anchors: the threshold's boundary and the box a low-quality positive regresses to
# ---------------------------------------------------------------------------------------------
def test_assign_anchors_boundary_is_inclusive():
    # IoU of [0,0,10,7] with [0,0,10,10] is 70/100, the double nearest 0.7: the book (and torchvision)
    # use >=, the paper "higher than 0.7". The gt's best anchor (IoU 1) is another one, so anchor 0 is
    # positive through the threshold alone; anchor 2 (IoU 48/70, just below 0.7) is in the ignored band.
    anchors = torch.tensor([[0.0, 0, 10, 10], [0.0, 0, 10, 7], [0.0, 0, 10, 4.8]], dtype=torch.float64)
    gt = torch.tensor([[0.0, 0, 10, 7]], dtype=torch.float64)
    iou = D.box_iou(anchors, gt)[:, 0]
    assert float(iou[0]) == 0.7 and float(iou[1]) == 1.0 and float(iou[2]) == pytest.approx(48 / 70)
    labels, matched = D.assign_anchors(anchors, gt)
    assert labels.tolist() == [1, 1, -1] and matched.tolist() == [0, 0, 0]


def test_assign_anchors_low_quality_positive_keeps_its_best_box():
    # anchor 0 is the best anchor of the small box 0 (IoU 8/108) but overlaps box 1 more (IoU 1/2,
    # while anchor 1 has IoU 0.8 with box 1): it is positive only through box 0, yet matched to box 1,
    # the torchvision/Detectron convention documented on the page.
    anchors = torch.tensor([[0.0, 0, 10, 10], [0.0, 2, 10, 18], [50.0, 50, 60, 60]], dtype=torch.float64)
    gts = torch.tensor([[8.0, 0, 12, 4], [0.0, 0, 10, 20]], dtype=torch.float64)
    iou = D.box_iou(anchors, gts)
    assert torch.allclose(iou, torch.tensor([[8 / 108, 0.5], [4 / 172, 0.8], [0.0, 0.0]], dtype=torch.float64))
    labels, matched = D.assign_anchors(anchors, gts)
    assert labels.tolist() == [1, 1, 0] and matched.tolist() == [1, 1, 0]
    # without box 0, anchor 0 (IoU 0.5 with box 1) falls in the ignored band
    assert D.assign_anchors(anchors, gts[1:])[0].tolist() == [-1, 1, 0]
