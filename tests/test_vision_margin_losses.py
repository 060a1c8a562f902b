"""Tests for minilib.vision.margin_logits (chapter margin-losses): closed forms, gradients at the
ends of [0, pi], the margins' decision boundaries, dtype/device and bad input."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from minilib.vision import margin_logits


def _psi(kind: str, theta: float, m: float) -> float:
    """The issue's formulas, with Python scalars (no Chebyshev, no sqrt(1 - c^2))."""
    if kind == "arcface":
        return math.cos(theta + m) if theta + m <= math.pi else math.cos(theta) - m * math.sin(m)
    if kind == "cosface":
        return math.cos(theta) - m
    k = min(math.floor(theta * m / math.pi), m - 1)
    return (-1) ** k * math.cos(m * theta) - 2 * k


def _dpsi_dcos(kind: str, theta: float, m: float) -> float:
    if kind == "arcface":
        return math.sin(theta + m) / math.sin(theta) if theta + m <= math.pi else 1.0
    if kind == "cosface":
        return 1.0
    k = min(math.floor(theta * m / math.pi), m - 1)
    return (-1) ** k * m * math.sin(m * theta) / math.sin(theta)


CASES = [("arcface", 0.5), ("arcface", 0.2), ("arcface", 1.3), ("cosface", 0.35), ("sphereface", 4),
         ("sphereface", 2), ("sphereface", 1), ("sphereface", 5)]


@pytest.mark.parametrize("kind, m", CASES)
def test_closed_form_and_scale(kind, m) -> None:
    theta = torch.linspace(0, math.pi, 97, dtype=torch.float64)
    cos = torch.stack([torch.cos(theta), -0.3 * torch.ones_like(theta)], 1)  # (97, 2)
    out = margin_logits(cos, torch.zeros(97, dtype=torch.long), kind, s=7.5, m=m)
    want = torch.tensor([7.5 * _psi(kind, float(t), m) for t in theta], dtype=torch.float64)
    torch.testing.assert_close(out[:, 0], want, atol=1e-10, rtol=1e-10)
    torch.testing.assert_close(out[:, 1], torch.full((97,), -2.25, dtype=torch.float64))


@pytest.mark.parametrize("kind, m", CASES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_gradient_finite_at_ends_and_matches_derivative(kind, m, dtype) -> None:
    theta = torch.tensor([0.0, 0.3, 1.0, 2.0, math.pi], dtype=torch.float64)
    cos = torch.cos(theta).to(dtype)
    cos[0], cos[-1] = 1.0, -1.0  # exactly the ends
    cos = cos[:, None].clone().requires_grad_()
    out = margin_logits(cos, torch.zeros(5, dtype=torch.long), kind, s=3.0, m=m)
    assert out.dtype == dtype
    out.sum().backward()
    assert torch.isfinite(cos.grad).all(), (kind, m, cos.grad)
    for i in (1, 2, 3):  # interior: autograd == derivative of the closed form (away from the switch)
        t = float(theta[i])
        if kind == "arcface" and abs(t + m - math.pi) < 1e-3:
            continue
        want = 3.0 * _dpsi_dcos(kind, t, m)
        tol = 1e-9 if dtype == torch.float64 else 2e-3 * max(1.0, abs(want))
        assert math.isclose(float(cos.grad[i, 0]), want, abs_tol=tol), (kind, m, t)


def test_sphereface_joins_and_ends() -> None:
    for m in (2, 3, 4, 6):
        th = torch.tensor([k * math.pi / m for k in range(m + 1)], dtype=torch.float64)
        psi = margin_logits(torch.cos(th)[:, None], torch.zeros(m + 1, dtype=torch.long), "sphereface", s=1.0, m=m)[:, 0]
        torch.testing.assert_close(psi, torch.tensor([1.0 - 2 * k for k in range(m + 1)], dtype=torch.float64),
                                   atol=1e-9, rtol=0)


def _bisect_boundary(kind: str, m: float, alpha: float) -> float:
    lo, hi = 0.0, alpha
    for _ in range(60):
        mid = (lo + hi) / 2
        c = torch.tensor([[math.cos(mid), math.cos(alpha - mid)]], dtype=torch.float64)
        z = margin_logits(c, torch.tensor([0]), kind, s=1.0, m=m)[0]
        lo, hi = (mid, hi) if z[0] > z[1] else (lo, mid)
    return (lo + hi) / 2


@pytest.mark.parametrize("alpha", [1.0, 1.5, 2.8])  # CosFace needs m < 1 - cos(alpha)
def test_angular_gap_closed_forms(alpha) -> None:
    """Theorem margin-losses-thm-gap: gap m (ArcFace), 2 asin(m / 2 sin(a/2)) (CosFace), a(m-1)/(m+1)."""
    assert math.isclose(alpha - 2 * _bisect_boundary("arcface", 0.5, alpha), 0.5, abs_tol=1e-9)
    want = 2 * math.asin(0.35 / (2 * math.sin(alpha / 2)))
    assert math.isclose(alpha - 2 * _bisect_boundary("cosface", 0.35, alpha), want, abs_tol=1e-9)
    assert math.isclose(alpha - 2 * _bisect_boundary("sphereface", 4, alpha), alpha * 3 / 5, abs_tol=1e-9)


@settings(max_examples=60, deadline=None)
@given(c=st.floats(-1.0, 1.0), kind=st.sampled_from(["arcface", "cosface", "sphereface"]))
def test_margin_lies_below_cosine(c, kind) -> None:
    out = margin_logits(torch.tensor([[c, 0.0]], dtype=torch.float64), torch.tensor([0]), kind, s=1.0)
    assert float(out[0, 0]) <= c + 1e-12
    assert float(out[0, 1]) == 0.0


def test_dtype_device_and_labels_int32() -> None:
    cos = torch.rand(4, 3) * 2 - 1
    out = margin_logits(cos, torch.tensor([0, 1, 2, 0], dtype=torch.int32), "arcface")
    assert out.dtype == torch.float32 and out.device == cos.device and out.shape == (4, 3)


def test_bad_input() -> None:
    c, y = torch.zeros(2, 3), torch.tensor([0, 1])
    with pytest.raises(ValueError, match="m must be a number in"):
        margin_logits(c, y, "arcface", m=-0.1)
    with pytest.raises(ValueError, match="m must be a number in"):
        margin_logits(c, y, "cosface", m=math.pi)
    with pytest.raises(ValueError, match="positive int for sphereface"):
        margin_logits(c, y, "sphereface", m=0)
    with pytest.raises(ValueError, match="s must be"):
        margin_logits(c, y, s=-1.0)
    with pytest.raises((TypeError, ValueError), match="cos"):
        margin_logits(torch.zeros(2, 3, dtype=torch.long), y)


# --- added in review ---------------------------------------------------------------------------


def test_arcface_gradient_at_cos_one_is_documented_stand_in() -> None:
    """At exactly cos = 1 the floor passes no gradient to sqrt: d logit/d cos = s cos m (finite),
    while just inside it is the true s sin(theta + m) / sin(theta)."""
    c = torch.tensor([[1.0], [0.999]], dtype=torch.float64, requires_grad=True)
    margin_logits(c, torch.zeros(2, dtype=torch.long), "arcface", s=2.0, m=0.5).sum().backward()
    assert math.isclose(float(c.grad[0, 0]), 2.0 * math.cos(0.5), rel_tol=1e-12)
    t = math.acos(0.999)
    assert math.isclose(float(c.grad[1, 0]), 2.0 * math.sin(t + 0.5) / math.sin(t), rel_tol=1e-9)


@pytest.mark.parametrize("m", [3, 7, 8])
def test_sphereface_any_integer_m_matches_cos_m_theta(m) -> None:
    theta = torch.linspace(0, math.pi, 61, dtype=torch.float64)
    out = margin_logits(torch.cos(theta)[:, None], torch.zeros(61, dtype=torch.long), "sphereface", s=1.0, m=m)
    want = torch.tensor([_psi("sphereface", float(t), m) for t in theta], dtype=torch.float64)
    torch.testing.assert_close(out[:, 0], want, atol=1e-9, rtol=0)
    assert bool((out[1:, 0] < out[:-1, 0]).all())  # strictly decreasing (theorem margin-losses-thm-sphereface)


@pytest.mark.parametrize("m", [2.5, 4.0, True, -2])
def test_sphereface_rejects_non_integer_m(m) -> None:
    with pytest.raises(ValueError, match="positive int for sphereface"):
        margin_logits(torch.zeros(2, 3), torch.tensor([0, 1]), "sphereface", m=m)


def test_arcface_fallback_jumps_down_for_m_up_to_half_pi() -> None:
    """Theorem margin-losses-thm-arcface: psi decreasing for m <= pi/2 (the fallback starts below -1)."""
    for m in (0.1, 0.5, 1.0, math.pi / 2):
        theta = torch.linspace(0, math.pi, 2001, dtype=torch.float64)
        psi = margin_logits(torch.cos(theta)[:, None], torch.zeros(2001, dtype=torch.long), "arcface", s=1.0, m=m)[:, 0]
        assert bool((psi[1:] < psi[:-1]).all()), m
