"""Tests for the ViT chapter's additions to minilib.vision (book/vision/vit.md)."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from minilib.vision import (
    TinyViT,
    interpolate_pos_embed,
    pack_images,
    patchify,
    rope_2d,
    sincos_pos_embed_2d,
    unpatchify,
)


def test_patchify_matches_unfold_keeps_dtype() -> None:
    x = torch.randn(3, 2, 6, 9, dtype=torch.float64)
    t = patchify(x, 3)
    assert t.dtype == torch.float64 and t.shape == (3, 6, 18)
    u = F.unfold(x, 3, stride=3).transpose(1, 2).reshape(3, 6, 2, 3, 3).permute(0, 1, 3, 4, 2).reshape(3, 6, 18)
    assert torch.equal(t, u)
    assert torch.equal(unpatchify(t, 3, 6, 9), x)
    with pytest.raises(ValueError, match="images must be a"):
        patchify(torch.randn(2, 6, 9), 3)
    with pytest.raises(ValueError, match="patch must be"):
        patchify(x, 0)


def test_patch_embedding_is_strided_conv() -> None:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 3, 8, 12, generator=g)
    conv = torch.nn.Conv2d(3, 5, 4, stride=4)
    w = conv.weight.detach().permute(0, 2, 3, 1).reshape(5, -1)
    torch.testing.assert_close(patchify(x, 4) @ w.T + conv.bias.detach(),
                               conv(x).detach().flatten(2).transpose(1, 2), atol=1e-5, rtol=1e-5)


def test_sincos_pos_embed_2d_matches_formula() -> None:
    rows, cols = torch.tensor([0, 2, 5]), torch.tensor([1, 0, 3])
    e = sincos_pos_embed_2d(rows, cols, 8, base=100.0)
    assert e.shape == (3, 8) and e.dtype == torch.float32
    for t in range(3):
        for half, s in ((0, rows[t].item()), (1, cols[t].item())):
            for i in range(2):
                w = 100.0 ** (-2 * i / 4)
                assert math.isclose(e[t, 4 * half + 2 * i].item(), math.sin(s * w), abs_tol=1e-6)
                assert math.isclose(e[t, 4 * half + 2 * i + 1].item(), math.cos(s * w), abs_tol=1e-6)
    assert sincos_pos_embed_2d(rows.double(), cols.double(), 8).dtype == torch.float64
    with pytest.raises(ValueError, match="divisible by 4"):
        sincos_pos_embed_2d(rows, cols, 6)
    with pytest.raises(ValueError, match="same shape"):
        sincos_pos_embed_2d(rows, cols[:2], 8)
    with pytest.raises(TypeError, match="rows"):
        sincos_pos_embed_2d(rows.bool(), cols, 8)


def test_interpolated_sincos_within_linear_interpolation_bound() -> None:
    # (vit-interp) and theorem vit-thm-interp: inside the grid, channel i errs by at most omega_i^2 / 8
    g, g2, D = 5, 13, 16
    r = torch.arange(g, dtype=torch.float64)
    table = sincos_pos_embed_2d(r.repeat_interleave(g), r.repeat(g), D)
    new = interpolate_pos_embed(table, g, g2, mode="bilinear")
    u = (torch.arange(g2, dtype=torch.float64) + 0.5) * g / g2 - 0.5
    exact = sincos_pos_embed_2d(u.repeat_interleave(g2), u.repeat(g2), D)
    ok = (u >= 0) & (u <= g - 1)
    inside = (ok[:, None] & ok[None, :]).reshape(-1)
    omega = 10000.0 ** (-torch.arange(0, D // 2, 2, dtype=torch.float64) / (D // 2))
    bound = (omega**2 / 8).repeat_interleave(2).repeat(2)
    assert ((new - exact)[inside].abs().amax(0) <= bound + 1e-12).all()


def test_rope_2d_relative_along_rows_and_columns_complex_reference() -> None:
    g = torch.Generator().manual_seed(1)
    q, k = torch.randn(2, 8, generator=g, dtype=torch.float64)
    zq, zk = torch.view_as_complex(q.view(4, 2)), torch.view_as_complex(k.view(4, 2))
    om = 10000.0 ** (-torch.arange(0, 4, 2, dtype=torch.float64) / 4)

    def score(r1, c1, r2, c2):
        a = rope_2d(q[None], torch.tensor([r1]), torch.tensor([c1]))
        b = rope_2d(k[None], torch.tensor([r2]), torch.tensor([c2]))
        return float((a * b).sum())

    def ref(dr, dc):  # Re sum z_q conj(z_k) e^{i (theta_1 - theta_2)}
        ang = torch.cat([dr * om, dc * om])
        return float((zq * zk.conj() * torch.polar(torch.ones(4, dtype=torch.float64), ang)).real.sum())

    for r1, c1, r2, c2 in [(0, 0, 3, 1), (5, 2, 5, 9), (7, 7, 1, 4), (2, 11, 6, 11)]:
        s = score(r1, c1, r2, c2)
        assert math.isclose(s, ref(r1 - r2, c1 - c2), abs_tol=1e-12)
        assert math.isclose(s, score(r1 + 4, c1, r2 + 4, c2), abs_tol=1e-12)  # along rows
        assert math.isclose(s, score(r1, c1 + 6, r2, c2 + 6), abs_tol=1e-12)  # along columns
    with pytest.raises(ValueError, match="rows must have shape"):
        rope_2d(torch.randn(3, 8), torch.arange(2), torch.arange(3))
    with pytest.raises(TypeError, match="cols"):
        rope_2d(torch.randn(3, 8), torch.arange(3), torch.ones(3, dtype=torch.bool))


@pytest.mark.parametrize("pos", ["rope2d", "sincos2d", "none"])
def test_tinyvit_packed_equals_one_at_a_time(pos: str) -> None:
    torch.manual_seed(0)
    m = TinyViT(image_size=8, patch=2, d_model=16, depth=2, n_heads=2, pos=pos, pool="mean").eval()
    g = torch.Generator().manual_seed(2)
    ims = [torch.randn(1, h, w, generator=g) for h, w in [(4, 6), (8, 8), (2, 10)]]
    t, p, cu = pack_images(ims, 2)
    with torch.no_grad():
        packed = m.forward_packed(t, p, cu)
        alone = torch.cat([m(im[None]) for im in ims])
    torch.testing.assert_close(packed, alone, atol=1e-5, rtol=1e-5)


def test_tinyvit_shapes_attention_and_permutation() -> None:
    torch.manual_seed(0)
    m = TinyViT(image_size=8, patch=4, d_model=16, depth=2, n_heads=4).eval()
    x = torch.randn(3, 1, 8, 8)
    logits, attn = m(x, return_attention=True)
    assert logits.shape == (3, 10) and len(attn) == 2 and attn[0].shape == (3, 4, 5, 5)
    torch.testing.assert_close(attn[1].sum(-1), torch.ones(3, 4, 5))
    torch.testing.assert_close(m(x), logits)  # the written-out attention == scaled_dot_product_attention
    assert m(torch.randn(2, 1, 12, 16)).shape == (2, 10)  # the learned table is resampled
    # no positions + mean pooling: invariant to shuffling the patches (proposition vit-prop-perm)
    m0 = TinyViT(image_size=8, patch=2, d_model=16, depth=1, n_heads=2, pos="none", pool="mean").eval()
    perm = torch.randperm(16)
    shuffled = unpatchify(patchify(x, 2)[:, perm], 2, 8, 8)
    torch.testing.assert_close(m0(shuffled), m0(x), atol=1e-5, rtol=1e-5)


def test_tinyvit_bad_input() -> None:
    with pytest.raises(ValueError, match="pos must be"):
        TinyViT(pos="absolute")
    with pytest.raises(ValueError, match="pool must be"):
        TinyViT(pool="max")
    with pytest.raises(ValueError, match="divisible by patch"):
        TinyViT(image_size=10, patch=4)
    with pytest.raises(ValueError, match="head width divisible by 4"):
        TinyViT(d_model=24, n_heads=4, pos="rope2d")
    with pytest.raises(ValueError, match="forward_packed needs"):
        TinyViT().forward_packed(torch.zeros(4, 16), torch.zeros(4, 2, dtype=torch.long), torch.tensor([0, 4]))
    with pytest.raises(TypeError, match="images"):
        TinyViT()(torch.zeros(1, 1, 16, 16, dtype=torch.long))


def _kernel(s: float, mode: str) -> float:
    s = abs(s)
    if mode == "bilinear":
        return max(0.0, 1.0 - s)
    a = -0.75  # Keys' cubic with a = -0.75, as PyTorch's bicubic
    if s <= 1:
        return (a + 2) * s**3 - (a + 3) * s**2 + 1
    return a * s**3 - 5 * a * s**2 + 8 * a * s - 4 * a if s < 2 else 0.0


@pytest.mark.parametrize("mode", ["bilinear", "bicubic"])
def test_interpolate_pos_embed_matches_brute_force_formula(mode: str) -> None:
    # (vit-interp) written out: new cell i' reads u = (i' + 1/2) g / g' - 1/2; taps outside the grid
    # read the nearest border cell (for bicubic the coordinate itself is not clamped)
    g = torch.Generator().manual_seed(3)
    (gh, gw), (nh, nw) = (3, 4), (7, 5)
    pos = torch.randn(1 + gh * gw, 2, generator=g, dtype=torch.float64)
    new = interpolate_pos_embed(pos, (gh, gw), (nh, nw), num_prefix_tokens=1, mode=mode)
    grid = pos[1:].view(gh, gw, 2)
    taps = range(-1, 3) if mode == "bicubic" else range(0, 2)
    for i in range(nh):
        for j in range(nw):
            u, w = (i + 0.5) * gh / nh - 0.5, (j + 0.5) * gw / nw - 0.5
            if mode == "bilinear":
                u, w = max(u, 0.0), max(w, 0.0)
            a0, b0 = math.floor(u), math.floor(w)
            ref = sum(_kernel(u - (a0 + da), mode) * _kernel(w - (b0 + db), mode)
                      * grid[min(max(a0 + da, 0), gh - 1), min(max(b0 + db, 0), gw - 1)]
                      for da in taps for db in taps)
            torch.testing.assert_close(new[1 + i * nw + j], ref, atol=1e-10, rtol=1e-10)
    assert torch.equal(new[0], pos[0])
