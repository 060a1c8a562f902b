"""Tests of the masked-autoencoder pieces of minilib.vision (chapter: mae)."""

from __future__ import annotations

import math

import pytest
import torch

from minilib.vision import mae_loss, random_masking


def _unshuffle(kept: torch.Tensor, ids_restore: torch.Tensor, fill: float) -> torch.Tensor:
    """Append N - n_keep constant mask tokens and gather back to the original order (as the MAE decoder)."""
    B, n_keep, D = kept.shape
    N = ids_restore.shape[1]
    full = torch.cat([kept, torch.full((B, N - n_keep, D), fill, dtype=kept.dtype)], dim=1)
    return torch.gather(full, 1, ids_restore[..., None].expand(B, N, D))


@pytest.mark.parametrize("N,ratio", [(16, 0.75), (10, 0.9), (7, 0.0), (49, 0.5), (5, 0.3)])
def test_round_trip_count_and_mask(N, ratio):
    g = torch.Generator().manual_seed(N)
    x = torch.randn(6, N, 3, generator=g)
    kept, mask, ids_restore = random_masking(x, ratio, generator=g)
    n_keep = math.floor(round(N * (1 - ratio), 9))
    assert kept.shape == (6, n_keep, 3)
    # mask counts: N - n_keep removed per sample
    assert torch.equal(mask.sum(1), torch.full((6,), float(N - n_keep)))
    restored = _unshuffle(kept, ids_restore, fill=float("nan"))
    visible = ~torch.isnan(restored).any(-1)  # (B, N): where a kept token landed
    # kept tokens return to their own positions, and exactly the positions with mask = 0
    assert torch.equal(visible, mask == 0)
    assert torch.equal(restored[visible], x[visible])
    # every kept token is a distinct original token (brute force: find each one in x)
    for b in range(6):
        found = sorted(int((x[b] == t).all(-1).nonzero()) for t in kept[b])
        assert found == sorted((mask[b] == 0).nonzero().flatten().tolist())


def test_ids_restore_is_inverse_permutation():
    x = torch.randn(4, 12, 2)
    _, _, ids_restore = random_masking(x, 0.5, torch.Generator().manual_seed(1))
    for row in ids_restore:
        assert sorted(row.tolist()) == list(range(12))


def test_subsets_are_uniform():
    # each token should be kept with probability n_keep / N = 1/4
    x = torch.zeros(4000, 8, 1)
    _, mask, _ = random_masking(x, 0.75, torch.Generator().manual_seed(2))
    freq = 1 - mask.mean(0)
    se = math.sqrt(0.25 * 0.75 / 4000)
    assert torch.all((freq - 0.25).abs() < 5 * se)


def test_determinism_dtype_device():
    x = torch.randn(3, 9, 4, dtype=torch.float64)
    a = random_masking(x, 0.6, torch.Generator().manual_seed(5))
    b = random_masking(x, 0.6, torch.Generator().manual_seed(5))
    for u, v in zip(a, b):
        assert torch.equal(u, v)
    assert a[0].dtype == torch.float64 and a[1].dtype == torch.float64 and a[2].dtype == torch.int64
    assert a[0].device == x.device


def test_bad_input():
    x = torch.randn(2, 4, 3)
    for r in (-0.1, 1.0, 1.5, True, "0.5"):
        with pytest.raises(ValueError, match="mask_ratio"):
            random_masking(x, r)
    with pytest.raises(ValueError, match="keeps no token"):
        random_masking(x, 0.9)
    with pytest.raises(ValueError, match=r"\(B, N, D\)"):
        random_masking(torch.randn(4, 3), 0.5)
    with pytest.raises(TypeError, match="x must be"):
        random_masking(torch.ones(2, 4, 3, dtype=torch.long), 0.5)
    with pytest.raises(TypeError, match="generator"):
        random_masking(x, 0.5, generator=0)


def _loss_loop(pred, target, mask, norm_pix):
    total, count = 0.0, 0.0
    B, N, P = pred.shape
    for b in range(B):
        for n in range(N):
            if mask[b, n] == 0:
                continue
            t = [float(v) for v in target[b, n]]
            if norm_pix:
                mu = sum(t) / P
                var = sum((v - mu) ** 2 for v in t) / (P - 1)
                t = [(v - mu) / math.sqrt(var + 1e-6) for v in t]
            total += sum((float(p) - v) ** 2 for p, v in zip(pred[b, n], t)) / P
            count += 1
    return total / count


@pytest.mark.parametrize("norm_pix", [True, False])
def test_mae_loss_against_loop(norm_pix):
    g = torch.Generator().manual_seed(3)
    pred, target = torch.randn(3, 7, 5, generator=g, dtype=torch.float64), torch.randn(3, 7, 5, generator=g, dtype=torch.float64)
    mask = (torch.rand(3, 7, generator=g) < 0.6).double()
    mask[0, 0] = 1
    got = mae_loss(pred, target, mask, norm_pix=norm_pix)
    assert got.item() == pytest.approx(_loss_loop(pred, target, mask, norm_pix), rel=1e-12)
    # visible patches do not count: changing the prediction there leaves the loss unchanged
    pred2 = pred.clone()
    pred2[mask == 0] += 10.0
    assert mae_loss(pred2, target, mask, norm_pix=norm_pix).item() == pytest.approx(got.item(), rel=1e-12)


def test_mae_loss_constant_patch_and_dtype():
    target = torch.full((1, 2, 4), -1.0)  # flat background patch: normalised target is 0
    pred = torch.zeros(1, 2, 4, dtype=torch.float32)
    assert mae_loss(pred, target, torch.ones(1, 2)).item() == 0.0
    assert mae_loss(pred, target, torch.ones(1, 2)).dtype == torch.float32


def test_mae_loss_bad_input():
    p, t, m = torch.randn(2, 3, 4), torch.randn(2, 3, 4), torch.ones(2, 3)
    with pytest.raises(ValueError, match="same shape"):
        mae_loss(p, t[:, :2], m)
    with pytest.raises(ValueError, match="same shape"):
        mae_loss(p[0], t[0], m[0])
    with pytest.raises(ValueError, match="mask must have shape"):
        mae_loss(p, t, m[:, :2])
    with pytest.raises(ValueError, match="at least one"):
        mae_loss(p, t, torch.zeros(2, 3))
    with pytest.raises(ValueError, match="P >= 2"):
        mae_loss(p[..., :1], t[..., :1], m)
    with pytest.raises(TypeError, match="pred"):
        mae_loss(p.long(), t, m)


@pytest.mark.parametrize("eps", [-1e-6, float("nan"), "1e-6", True])
def test_mae_loss_rejects_a_bad_eps(eps):
    p, t, m = torch.randn(2, 3, 4), torch.randn(2, 3, 4), torch.ones(2, 3)
    with pytest.raises(ValueError, match="eps must be a number >= 0"):
        mae_loss(p, t, m, eps=eps)
