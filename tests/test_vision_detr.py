"""Tests for the DETR chapter's additions to minilib.detection (``detr_loss``).

References: brute force over every injective query assignment for the matching, and a plain
Python loop (explicit softmax, explicit weighted mean, scalar GIoU) for the loss; the weighted
cross-entropy with ``no_object_weight = 1`` is also compared with ``F.cross_entropy``.
"""

from __future__ import annotations

import itertools
import math

import pytest
import torch
import torch.nn.functional as F

from minilib import detection as D


def _xyxy(b):
    return [b[0] - b[2] / 2, b[1] - b[3] / 2, b[0] + b[2] / 2, b[1] + b[3] / 2]


def _giou(a, b):
    a, b = _xyxy(a), _xyxy(b)
    iw = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    ih = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = iw * ih
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    hull = (max(a[2], b[2]) - min(a[0], b[0])) * (max(a[3], b[3]) - min(a[1], b[1]))
    return inter / union - (hull - union) / hull


def _rand_cxcywh(n, g):
    c = torch.rand(n, 2, generator=g, dtype=torch.float64) * 0.6 + 0.2
    wh = torch.rand(n, 2, generator=g, dtype=torch.float64) * 0.3 + 0.05
    return torch.cat([c, wh], 1)


def _reference(logits, boxes, targets, w_noobj, wc, w1, wg):
    """Brute-force matching + loop losses."""
    B, Q, K1 = logits.shape
    num, den, l1, gi, n = 0.0, 0.0, 0.0, 0.0, 0
    matches = []
    for b in range(B):
        lab, gtb = targets[b]["labels"].tolist(), targets[b]["boxes"].tolist()
        lg, bx = logits[b].tolist(), boxes[b].tolist()
        prob = [[math.exp(v) / sum(math.exp(u) for u in row) for v in row] for row in lg]

        def cost(q, g, prob=prob, bx=bx, lab=lab, gtb=gtb):
            return -wc * prob[q][lab[g]] + w1 * sum(abs(x - y) for x, y in zip(bx[q], gtb[g])) - wg * _giou(bx[q], gtb[g])

        G = len(lab)
        best = min(itertools.permutations(range(Q), G), key=lambda qs, cost=cost: sum(cost(q, g) for g, q in enumerate(qs)))
        matches.append(best)
        target = [K1 - 1] * Q
        for g, q in enumerate(best):
            target[q] = lab[g]
            l1 += sum(abs(x - y) for x, y in zip(bx[q], gtb[g]))
            gi += 1 - _giou(bx[q], gtb[g])
            n += 1
        for q in range(Q):
            w = w_noobj if target[q] == K1 - 1 else 1.0
            num += -w * math.log(prob[q][target[q]])
            den += w
    n = max(n, 1)
    cls = num / den
    return {"class": cls, "l1": l1 / n, "giou": gi / n, "loss": wc * cls + w1 * l1 / n + wg * gi / n}, matches


@pytest.mark.parametrize("seed", range(6))
def test_detr_loss_matches_brute_force_reference(seed):
    g = torch.Generator().manual_seed(seed)
    B, Q, K = 3, 5, 3
    logits = torch.randn(B, Q, K + 1, generator=g, dtype=torch.float64) * 2
    boxes = torch.stack([_rand_cxcywh(Q, g) for _ in range(B)])
    targets = []
    for G in (1, 3, 0 if seed % 2 else 4):
        targets.append({"labels": torch.randint(0, K, (G,), generator=g), "boxes": _rand_cxcywh(G, g)})
    w = (0.1, 1.0, 5.0, 2.0) if seed < 3 else (0.3, 2.0, 1.0, 0.5)
    parts, matches = D.detr_loss(logits, boxes, targets, *w)
    want, want_matches = _reference(logits, boxes, targets, *w)
    for k in ("loss", "class", "l1", "giou"):
        assert parts[k].item() == pytest.approx(want[k], abs=1e-10)
    for (q, o), best, t in zip(matches, want_matches, targets):
        assert o.tolist() == list(range(len(t["labels"])))
        # random real costs have no ties, so the optimal matching is unique
        assert q.tolist() == list(best)


def test_detr_loss_no_object_weight_one_is_plain_cross_entropy_and_grads_flow():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(2, 4, 3, generator=g, requires_grad=True)
    boxes = torch.stack([_rand_cxcywh(4, g) for _ in range(2)]).float().requires_grad_(True)
    targets = [{"labels": torch.tensor([1]), "boxes": _rand_cxcywh(1, g).float()},
               {"labels": torch.tensor([0, 1]), "boxes": _rand_cxcywh(2, g).float()}]
    parts, matches = D.detr_loss(logits, boxes, targets, no_object_weight=1.0)
    tc = torch.full((2, 4), 2)
    for b, (q, o) in enumerate(matches):
        tc[b, q] = targets[b]["labels"][o]
    assert parts["class"].item() == pytest.approx(F.cross_entropy(logits.reshape(8, 3), tc.reshape(-1)).item(), rel=1e-6)
    assert parts["loss"].dtype == torch.float32
    parts["loss"].backward()
    assert logits.grad is not None and boxes.grad is not None
    # unmatched queries get no box gradient
    unmatched = torch.ones(2, 4, dtype=torch.bool)
    for b, (q, _) in enumerate(matches):
        unmatched[b, q] = False
    assert boxes.grad[unmatched].abs().max() == 0 and boxes.grad[~unmatched].abs().max() > 0


def test_detr_loss_down_weights_no_object():
    # One query, no objects: the loss is -log p(∅) whatever the weight (a weighted mean of one term);
    # with one matched and one unmatched query, lowering the weight moves the mean towards the matched term.
    logits = torch.tensor([[[0.0, 0.0, 0.0], [0.0, 0.0, 0.0]]])
    boxes = torch.tensor([[[0.5, 0.5, 0.2, 0.2], [0.3, 0.3, 0.1, 0.1]]])
    empty = [{"labels": torch.zeros(0, dtype=torch.long), "boxes": torch.zeros(0, 4)}]
    parts, m = D.detr_loss(logits, boxes, empty)
    assert parts["class"].item() == pytest.approx(math.log(3), rel=1e-6)
    assert parts["l1"].item() == 0 and parts["giou"].item() == 0 and m[0][0].numel() == 0
    logits2 = torch.tensor([[[2.0, 0.0, 0.0], [0.0, 0.0, 3.0]]])
    one = [{"labels": torch.tensor([0]), "boxes": torch.tensor([[0.5, 0.5, 0.2, 0.2]])}]
    ce_obj = -torch.log_softmax(logits2[0, 0], -1)[0].item()
    ce_bg = -torch.log_softmax(logits2[0, 1], -1)[2].item()
    for w in (0.1, 0.5, 1.0):
        parts, _ = D.detr_loss(logits2, boxes, one, no_object_weight=w)
        assert parts["class"].item() == pytest.approx((ce_obj + w * ce_bg) / (1 + w), rel=1e-6)


def test_detr_loss_more_objects_than_queries():
    g = torch.Generator().manual_seed(1)
    logits = torch.randn(1, 2, 4, generator=g, dtype=torch.float64)
    boxes = _rand_cxcywh(2, g)[None]
    t = [{"labels": torch.tensor([0, 1, 2]), "boxes": _rand_cxcywh(3, g)}]
    parts, (m,) = D.detr_loss(logits, boxes, t)
    assert len(m[0]) == 2 and len(set(m[0].tolist())) == 2 and len(set(m[1].tolist())) == 2
    assert torch.isfinite(parts["loss"])


def test_detr_loss_bad_inputs():
    lg = torch.zeros(1, 2, 3)
    bx = torch.tensor([[[0.5, 0.5, 0.2, 0.2]] * 2])
    t = [{"labels": torch.tensor([0]), "boxes": torch.tensor([[0.5, 0.5, 0.2, 0.2]])}]
    with pytest.raises(ValueError, match=r"logits must have shape \(B, Q, K \+ 1\)"):
        D.detr_loss(lg[0], bx, t)
    with pytest.raises(TypeError, match="logits"):
        D.detr_loss(lg.long(), bx, t)
    with pytest.raises(ValueError, match="finite"):
        D.detr_loss(torch.full((1, 2, 3), math.nan), bx, t)
    with pytest.raises(ValueError, match="boxes must have shape"):
        D.detr_loss(lg, bx[:, :1], t)
    with pytest.raises(ValueError, match="one per image"):
        D.detr_loss(lg, bx, t * 2)
    with pytest.raises(ValueError, match="labels and boxes"):
        D.detr_loss(lg, bx, [{"labels": torch.tensor([0])}])
    with pytest.raises(ValueError, match="no-object"):
        D.detr_loss(lg, bx, [{"labels": torch.tensor([2]), "boxes": t[0]["boxes"]}])
    with pytest.raises(TypeError, match="integer"):
        D.detr_loss(lg, bx, [{"labels": torch.tensor([0.0]), "boxes": t[0]["boxes"]}])
    with pytest.raises(ValueError, match="no_object_weight"):
        D.detr_loss(lg, bx, t, no_object_weight=0.0)
    with pytest.raises(ValueError, match="w_l1"):
        D.detr_loss(lg, bx, t, w_l1=math.inf)
    with pytest.raises(TypeError, match="dtype"):
        D.detr_loss(lg, bx.double(), t)
