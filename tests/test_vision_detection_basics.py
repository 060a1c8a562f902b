"""Tests for the detection-basics chapter's code in minilib.detection.

References: torch's ``adaptive_max_pool2d`` (values and gradients of the separable SPP), the
characterization of greedy NMS (det-thm-nms) checked by brute force over all subsets, and
the closed forms of the chapter's exercises.
"""

from __future__ import annotations

import itertools
import math

import pytest
import torch
import torch.nn.functional as F

from minilib import detection as D


def _spp_ref(f: torch.Tensor, levels) -> torch.Tensor:
    return torch.cat([F.adaptive_max_pool2d(f, lv).flatten(1) for lv in levels], 1)


@pytest.mark.parametrize("shape", [(2, 3, 1, 1), (1, 4, 5, 3), (3, 2, 17, 23), (1, 1, 2, 9)])
@pytest.mark.parametrize("levels", [(1, 2, 4), (3,), (1, 6)])
def test_spp_values_and_gradients_match_adaptive_max_pool(shape, levels):
    gen = torch.Generator().manual_seed(sum(shape))
    x = torch.randn(*shape, generator=gen, dtype=torch.float64)  # continuous: no ties
    a = x.clone().requires_grad_(True)
    b = x.clone().requires_grad_(True)
    out, ref = D.spatial_pyramid_pool(a, levels), _spp_ref(b, levels)
    assert out.shape == (shape[0], shape[1] * sum(lv * lv for lv in levels))
    torch.testing.assert_close(out, ref, rtol=0, atol=0)
    w = torch.randn(out.shape, generator=gen, dtype=torch.float64)
    (out * w).sum().backward()
    (ref * w).sum().backward()
    torch.testing.assert_close(a.grad, b.grad, rtol=0, atol=1e-12)


def test_spp_keeps_dtype_and_bad_inputs():
    x = torch.randn(1, 2, 5, 5, dtype=torch.float64)
    assert D.spatial_pyramid_pool(x).dtype == torch.float64
    with pytest.raises(ValueError, match="features"):
        D.spatial_pyramid_pool(torch.randn(2, 5, 5))
    with pytest.raises(ValueError, match="levels"):
        D.spatial_pyramid_pool(x, levels=(0, 2))
    with pytest.raises(ValueError, match="levels"):
        D.spatial_pyramid_pool(x, levels=())
    with pytest.raises(TypeError):
        D.spatial_pyramid_pool(x.long())


def _independent_and_covering(boxes, scores, keep, tau) -> bool:
    n = len(scores)
    order = sorted(range(n), key=lambda i: (-float(scores[i]), i))
    rank = {i: r for r, i in enumerate(order)}
    iou = D.box_iou(boxes, boxes)
    kept = set(keep)
    for i, j in itertools.combinations(kept, 2):
        if iou[i, j] > tau:
            return False
    return all(any(iou[i, k] > tau and rank[k] < rank[i] for k in kept) for i in range(n) if i not in kept)


@pytest.mark.parametrize("seed", range(12))
def test_nms_is_the_unique_independent_covering_subset(seed):
    gen = torch.Generator().manual_seed(seed)
    n = 8
    xy = torch.rand(n, 2, generator=gen, dtype=torch.float64) * 30
    boxes = torch.cat([xy, xy + 5 + 15 * torch.rand(n, 2, generator=gen, dtype=torch.float64)], 1)
    scores = torch.rand(n, generator=gen, dtype=torch.float64)
    tau = [0.1, 0.3, 0.5, 0.7][seed % 4]
    sols = [
        {i for i in range(n) if bits[i]}
        for bits in itertools.product([0, 1], repeat=n)
        if _independent_and_covering(boxes, scores, {i for i in range(n) if bits[i]}, tau)
    ]
    assert sols == [set(D.nms(boxes, scores, tau).tolist())]


def test_exercise_closed_forms():
    s = 10.0
    d = torch.linspace(0, 40, 81, dtype=torch.float64)
    a = torch.tensor([[0.0, 0.0, s, s]], dtype=torch.float64)
    b = torch.stack([d, torch.zeros_like(d), d + s, torch.full_like(d, s)], 1)
    torch.testing.assert_close(D.generalized_box_iou(a, b)[0], (s - d) / (s + d), rtol=0, atol=1e-12)
    # exercise 2: k unit cells tiling a central box; greedy keeps only the centre
    k = 4
    boxes = torch.tensor([[0.0, 0, k, 1]] + [[m - 1.0, 0, m, 1] for m in range(1, k + 1)])
    scores = torch.tensor([1.0] + [0.99] * k)
    assert D.nms(boxes, scores, 0.2).tolist() == [0]
    # SPP-net's descriptor length, 256 (1 + 4 + 9 + 36)
    assert D.spatial_pyramid_pool(torch.zeros(1, 256, 13, 13), levels=(1, 2, 3, 6)).shape[1] == 12800
    # exercise 3: two 32-px boxes offset by (8, 8)
    iou = D.box_iou(torch.tensor([[0.0, 0, 32, 32]]), torch.tensor([[8.0, 8, 40, 40]]))
    assert math.isclose(float(iou), 576 / 1472, rel_tol=1e-6)


def test_spp_bins_match_adaptive_max_pool_for_every_small_size():
    # (det-spp-bins) against torch for every H, W in 1..12 and level 1..7, including H, W < l
    gen = torch.Generator().manual_seed(7)
    for H, W in itertools.product(range(1, 13), repeat=2):
        x = torch.randn(1, 2, H, W, generator=gen, dtype=torch.float64)
        for lv in range(1, 8):
            assert torch.equal(D.spatial_pyramid_pool(x, (lv,)), F.adaptive_max_pool2d(x, lv).flatten(1)), (H, W, lv)


@pytest.mark.parametrize("x1", [0.0, 3.0, 4.0, 8.0, 21.0, 29.5])
def test_roi_pool_worst_lag_is_half_stride_plus_corner_error(x1):
    # (det-thm-roipool-error) part 3: over one stride of shifts the lag's supremum is s/2 + |e(x1)|,
    # e(x) = s round(x/s) - x; on a grid of step 1/16 the maximum is within 1/16 of it.
    s, W = 8, 16
    ramp = (s * (torch.arange(W, dtype=torch.float64) + 0.5)).expand(4, W)[None, None].clone()
    deltas = torch.arange(0, s, 1 / 16, dtype=torch.float64)
    rois = torch.stack([torch.zeros_like(deltas), x1 + deltas, torch.zeros_like(deltas), x1 + 32 + deltas,
                        torch.full_like(deltas, 8.0)], 1)
    out = D.roi_pool(ramp, rois, (1, 1), 1 / s)[:, 0, 0, 0]  # max over the whole roi: the last cell read
    lag = (out - out[0]) - deltas
    e = s * math.floor(x1 / s + 0.5) - x1
    assert lag.abs().max() < s
    assert s / 2 + abs(e) - 1 / 16 <= lag.abs().max() <= s / 2 + abs(e)


def test_roi_align_exact_on_affine_inside_and_clamped_at_the_border():
    # (det-thm-align-linear): exact when every sample lies in [0, W-1]; at the border it is not
    s, W = 8, 12
    ramp = (s * (torch.arange(W, dtype=torch.float64) + 0.5)).expand(W, W)[None, None].clone()
    gen = torch.Generator().manual_seed(3)
    for _ in range(20):
        x1 = 4 + float(torch.rand(1, generator=gen)) * 40
        w = 8 + float(torch.rand(1, generator=gen)) * (s * W - 4 - x1 - 8)
        roi = torch.tensor([[0.0, x1, 10, x1 + w, 30]], dtype=torch.float64)
        for sr in (1, 2, 3):
            got = D.roi_align(ramp, roi, (1, 3), 1 / s, sr)[0, 0, 0]
            centres = x1 + w * (torch.arange(3, dtype=torch.float64) + 0.5) / 3
            torch.testing.assert_close(got, centres, rtol=0, atol=1e-9)
    border = D.roi_align(ramp, torch.tensor([[0.0, 0, 0, 8, 8]], dtype=torch.float64), 2, 1 / s, 2)[0, 0, 0]
    assert border.tolist() == [4.0, 6.0]  # left bin clamped to cell 0's centre 4, not its own centre 2
