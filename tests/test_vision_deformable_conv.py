"""Tests for the deformable-conv chapter: deform_conv2d's offset gradient and DeformConv2d.

tests/test_vision.py already covers deform_conv2d against F.conv2d (zero offsets), shifted
convolutions (integer offsets), a Python bilinear loop (fractional offsets, with and without
mask), gradcheck in float64, and bad shapes; these tests add the closed-form offset gradient,
float64 exactness, more bad inputs, and the module.
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from minilib.vision import DeformConv2d, conv_output_size, deform_conv2d


@pytest.mark.parametrize("kernel, stride, padding, dilation", [((3, 3), 1, 1, 1), ((2, 3), (2, 1), (0, 1), (1, 2)), ((1, 1), 2, 0, 1)])
def test_zero_offsets_equal_conv2d_in_float64(kernel, stride, padding, dilation) -> None:
    g = torch.Generator().manual_seed(10)
    x = torch.randn(2, 3, 9, 10, generator=g, dtype=torch.float64)
    w = torch.randn(4, 3, *kernel, generator=g, dtype=torch.float64)
    b = torch.randn(4, generator=g, dtype=torch.float64)
    ref = F.conv2d(x, w, b, stride, padding, dilation)
    off = torch.zeros(2, 2 * kernel[0] * kernel[1], *ref.shape[2:], dtype=torch.float64)
    # only the summation order differs from conv2d: agreement to float64 rounding
    torch.testing.assert_close(deform_conv2d(x, off, w, b, stride, padding, dilation), ref, atol=1e-12, rtol=1e-12)


def _offset_grad_by_hand(img: torch.Tensor, y: float, x: float) -> tuple[float, float]:
    """(dcn-offset-grad) for one channel: d/dy and d/dx of bilinear sampling at (y, x), right-hand at integers."""
    H, W = img.shape
    y0, x0 = math.floor(y), math.floor(x)
    fy, fx = y - y0, x - x0

    def at(i: int, j: int) -> float:
        return float(img[i, j]) if 0 <= i < H and 0 <= j < W else 0.0

    gy = (1 - fx) * (at(y0 + 1, x0) - at(y0, x0)) + fx * (at(y0 + 1, x0 + 1) - at(y0, x0 + 1))
    gx = (1 - fy) * (at(y0, x0 + 1) - at(y0, x0)) + fy * (at(y0 + 1, x0 + 1) - at(y0 + 1, x0))
    return gy, gx


def test_offset_gradient_matches_closed_form() -> None:
    g = torch.Generator().manual_seed(11)
    C, O, H, W, k = 2, 3, 6, 7, 3
    x = torch.randn(1, C, H, W, generator=g, dtype=torch.float64)
    w = torch.randn(O, C, k, k, generator=g, dtype=torch.float64)
    ho, wo = conv_output_size(H, k, 1, 1), conv_output_size(W, k, 1, 1)
    off = (torch.rand(1, 2 * k * k, ho, wo, generator=g, dtype=torch.float64) - 0.5) * 4
    off[0, :4] = torch.round(off[0, :4])  # some integer coordinates: autograd takes the right-hand derivative
    mask = torch.rand(1, k * k, ho, wo, generator=g, dtype=torch.float64)
    gout = torch.randn(1, O, ho, wo, generator=g, dtype=torch.float64)
    off.requires_grad_(True)
    (deform_conv2d(x, off, w, None, 1, 1, 1, mask) * gout).sum().backward()
    ref = torch.zeros_like(off)
    for i in range(ho):
        for j in range(wo):
            for a in range(k):
                for b in range(k):
                    t = a * k + b
                    py, px = i - 1 + a + float(off.detach()[0, 2 * t, i, j]), j - 1 + b + float(off.detach()[0, 2 * t + 1, i, j])
                    for c in range(C):
                        gy, gx = _offset_grad_by_hand(x[0, c], py, px)
                        coef = float((gout[0, :, i, j] * w[:, c, a, b]).sum() * mask[0, t, i, j])
                        ref[0, 2 * t, i, j] += coef * gy
                        ref[0, 2 * t + 1, i, j] += coef * gx
    torch.testing.assert_close(off.grad, ref, atol=1e-10, rtol=1e-10)


def test_offset_gradient_is_one_sided_at_integers() -> None:
    # one pixel row 0, 1, 4: the sample at x = 1 has left slope 1 and right slope 3; autograd gives 3
    x = torch.tensor([[[[0.0, 1.0, 4.0]]]], dtype=torch.float64)
    w = torch.ones(1, 1, 1, 1, dtype=torch.float64)
    off = torch.zeros(1, 2, 1, 3, dtype=torch.float64)
    off[0, 1, 0, 0] = 1.0  # output column 0 reads x at column 0 + 1, an integer
    off.requires_grad_(True)
    deform_conv2d(x, off, w)[0, 0, 0, 0].backward()
    assert float(off.grad[0, 1, 0, 0]) == pytest.approx(3.0)  # x[2] - x[1], not x[1] - x[0] = 1


def test_bad_offsets_and_masks_raise() -> None:
    x, w = torch.randn(2, 2, 5, 5), torch.randn(3, 2, 3, 3)
    for bad in (torch.zeros(2, 18, 4, 3), torch.zeros(1, 18, 3, 3), torch.zeros(2, 18, 3), torch.zeros(2, 9, 2, 3, 3)):
        with pytest.raises(ValueError, match="offset must have shape"):
            deform_conv2d(x, bad, w)
    with pytest.raises(TypeError, match="offset must be a floating-point"):
        deform_conv2d(x, torch.zeros(2, 18, 3, 3, dtype=torch.long), w)
    with pytest.raises(TypeError, match="mask must be a floating-point"):
        deform_conv2d(x, torch.zeros(2, 18, 3, 3), w, mask=torch.ones(2, 9, 3, 3, dtype=torch.long))
    with pytest.raises(ValueError, match="stride"):
        deform_conv2d(x, torch.zeros(2, 18, 3, 3), w, stride=0)


def test_module_starts_as_conv2d_and_learns_offsets() -> None:
    torch.manual_seed(0)
    layer = DeformConv2d(2, 3, (3, 2), stride=2, padding=1, dilation=(1, 2))
    x = torch.randn(2, 2, 8, 9, dtype=torch.float64)
    layer = layer.double()
    ref = F.conv2d(x, layer.weight, layer.bias, 2, 1, (1, 2))
    torch.testing.assert_close(layer(x), ref, atol=1e-12, rtol=1e-12)
    layer(x).square().sum().backward()
    assert layer.offset_conv.weight.grad.abs().sum() > 0  # the zero-initialised offsets still get a gradient

    mod = DeformConv2d(2, 3, 3, padding=1, bias=False, modulated=True).double()
    off, mask = mod.offsets(x)
    assert off.shape == (2, 18, 8, 9) and mask.shape == (2, 9, 8, 9)
    # sigmoid(0) = 1/2 on every tap: half of the plain convolution
    torch.testing.assert_close(mod(x), 0.5 * F.conv2d(x, mod.weight, None, 1, 1), atol=1e-12, rtol=1e-12)


def test_module_bad_arguments() -> None:
    with pytest.raises(ValueError, match="in_ch"):
        DeformConv2d(0, 3)
    with pytest.raises(ValueError, match="kernel"):
        DeformConv2d(1, 3, (3, 3, 3))
    with pytest.raises(ValueError, match="padding"):
        DeformConv2d(1, 3, 3, padding=-1)
