"""Tests for the issue-16 depth addition to minilib.discrete: score entropy (SEDD) and the block-diffusion mask."""

from __future__ import annotations

import itertools
import math

import pytest
import torch

from minilib.discrete import (
    block_diffusion_mask,
    markov_denoiser,
    masked_diffusion_loss,
    score_entropy,
)

P = torch.tensor([[0.5, 0.5, 0.0], [0.0, 0.2, 0.8], [0.6, 0.1, 0.3]], dtype=torch.float64)


def _stationary(P: torch.Tensor) -> torch.Tensor:
    evals, evecs = torch.linalg.eig(P.T)
    v = evecs[:, evals.real.argmax()].real
    return v / v.sum()


PI = _stationary(P)


def test_score_entropy_matches_loop() -> None:
    g = torch.Generator().manual_seed(0)
    s = torch.rand(4, 5, generator=g, dtype=torch.float64) * 3 + 0.05
    a = torch.rand(4, 5, generator=g, dtype=torch.float64) * 2
    a[0, 1] = 0.0
    w = torch.rand(4, 5, generator=g, dtype=torch.float64)
    out = score_entropy(s, a, w)
    for i in range(4):
        ref = 0.0
        for j in range(5):
            si, ai, wi = float(s[i, j]), float(a[i, j]), float(w[i, j])
            k = ai * (math.log(ai) - 1) if ai > 0 else 0.0
            ref += wi * (si - ai * math.log(si) + k)
        assert abs(float(out[i]) - ref) < 1e-12


def test_score_entropy_minimised_at_ratios() -> None:
    g = torch.Generator().manual_seed(1)
    a = torch.rand(50, generator=g, dtype=torch.float64) * 4 + 0.01
    assert float(score_entropy(a, a)) == pytest.approx(0.0, abs=1e-12)
    s = a.clone().requires_grad_(True)
    score_entropy(s, a).backward()
    assert float(s.grad.abs().max()) < 1e-12  # stationary point
    for eps in (0.5, 0.9, 1.1, 2.0):  # any other s is strictly worse
        assert float(score_entropy(a * eps, a)) > 0


def test_dse_equals_se_up_to_constant_brute_force() -> None:
    """Finite state space, random kernel: SE with the marginal's ratios minus DSE with the kernel's ratios is constant in s."""
    g = torch.Generator().manual_seed(2)
    N = 5
    p0 = torch.rand(N, generator=g, dtype=torch.float64)
    p0 = p0 / p0.sum()
    kern = torch.rand(N, N, generator=g, dtype=torch.float64) + 0.1  # kern[x0, x] = q(x | x0)
    kern = kern / kern.sum(1, keepdim=True)
    pt = p0 @ kern
    w = torch.rand(N, N, generator=g, dtype=torch.float64)
    diffs = []
    for _ in range(4):
        s = torch.rand(N, N, generator=g, dtype=torch.float64) * 3 + 0.05
        se = dse = 0.0
        for x in range(N):
            for y in range(N):
                if y == x:
                    continue
                a = float(pt[y] / pt[x])
                se += float(pt[x]) * float(w[x, y]) * (float(s[x, y]) - a * math.log(float(s[x, y])) + a * (math.log(a) - 1))
                for x0 in range(N):
                    r = float(kern[x0, y] / kern[x0, x])
                    wt = float(p0[x0] * kern[x0, x] * w[x, y])
                    dse += wt * (float(s[x, y]) - r * math.log(float(s[x, y])) + r * (math.log(r) - 1))
        diffs.append(se - dse)
        # the library function reproduces both sums
        off = 1.0 - torch.eye(N, dtype=torch.float64)
        lib_se = float((pt * score_entropy(s, pt[None, :] / pt[:, None], w * off)).sum())
        ratios = kern[:, None, :] / kern[:, :, None]  # [x0, x, y]
        lib_dse = float((p0[:, None] * kern * score_entropy(s.expand(N, N, N), ratios, w * off)).sum())
        assert lib_se == pytest.approx(se, rel=1e-12)
        assert lib_dse == pytest.approx(dse, rel=1e-12)
    assert max(diffs) - min(diffs) < 1e-12
    assert max(diffs) <= 1e-12  # C <= 0: DSE >= SE, as DSE >= 0 and min SE = 0


def test_absorbing_concrete_score_brute_force() -> None:
    """(discrete-concrete-score): p_t(y)/p_t(x_t) = (alpha/(1-alpha)) q(x_0^l = v | x_t), by enumeration."""
    V, L, MASK, t = 3, 4, 3, 0.4
    seqs = list(itertools.product(range(V), repeat=L))

    def p_data(x0: tuple[int, ...]) -> float:
        p = float(PI[x0[0]])
        for a, b in zip(x0[:-1], x0[1:]):
            p *= float(P[a, b])
        return p

    def p_t(xt: tuple[int, ...]) -> float:
        tot = 0.0
        for x0 in seqs:
            q = 1.0
            for u, v in zip(xt, x0):
                q *= t if u == MASK else ((1 - t) if u == v else 0.0)
            tot += p_data(x0) * q
        return tot

    for xt in [(MASK, 1, MASK, MASK), (0, MASK, MASK, 2), (MASK, MASK, MASK, MASK)]:
        den = markov_denoiser(P, PI, torch.tensor([xt]), MASK).exp()[0]  # (L, V)
        for l in range(L):
            if xt[l] != MASK:
                continue
            for v in range(V):
                y = list(xt)
                y[l] = v
                ratio = p_t(tuple(y)) / p_t(xt)
                assert ratio == pytest.approx((1 - t) / t * float(den[l, v]), abs=1e-12)


def test_absorbing_dse_is_mdlm_loss() -> None:
    """(discrete-dse-absorbing): normalised scores and weight -alpha'/alpha give the 1/t cross-entropy exactly."""
    g = torch.Generator().manual_seed(3)
    B, L, V, MASK, t = 3, 6, 4, 4, 0.3
    x0 = torch.randint(0, V, (B, L), generator=g)
    x_t = torch.where(torch.rand(B, L, generator=g) < 0.5, torch.full_like(x0, MASK), x0)
    logits = torch.randn(B, L, V, generator=g, dtype=torch.float64)
    c = (1 - t) / t  # alpha / (1 - alpha) for alpha = 1 - t
    scores = c * logits.softmax(-1)
    ratios = c * torch.nn.functional.one_hot(x0, V).double()
    w = 1 / (1 - t)  # forward masking rate -alpha'/alpha
    per_pos = score_entropy(scores, ratios, w)  # (B, L)
    dse = (per_pos * (x_t == MASK)).sum(-1).mean()
    torch.testing.assert_close(dse, masked_diffusion_loss(logits, x0, x_t, t, MASK))


@pytest.mark.parametrize(("length", "block"), [(1, 1), (4, 1), (4, 2), (6, 3), (8, 8)])
def test_block_mask_brute_force(length: int, block: int) -> None:
    m = block_diffusion_mask(length, block)
    assert m.shape == (2 * length, 2 * length) and m.dtype == torch.bool
    for i in range(2 * length):
        for j in range(2 * length):
            qi_noisy, kj_noisy = i < length, j < length
            bi, bj = (i % length) // block, (j % length) // block
            if qi_noisy and kj_noisy:
                ok = bi == bj
            elif qi_noisy:
                ok = bj < bi
            elif kj_noisy:
                ok = False
            else:
                ok = bj <= bi
            assert bool(m[i, j]) == ok, (i, j)


def test_block_mask_extremes() -> None:
    # block size L: noisy tokens see all noisy tokens and no clean one (plain masked diffusion)
    m = block_diffusion_mask(4, 4)
    assert bool(m[:4, :4].all()) and not bool(m[:4, 4:].any())
    # block size 1: the clean half is causal attention
    m1 = block_diffusion_mask(5, 1)
    assert torch.equal(m1[5:, 5:], torch.ones(5, 5, dtype=torch.bool).tril())


def test_depth_bad_inputs() -> None:
    s = torch.ones(3)
    with pytest.raises(TypeError, match="scores"):
        score_entropy(s.long(), s)
    with pytest.raises(ValueError, match="same shape"):
        score_entropy(s, torch.ones(4))
    with pytest.raises(ValueError, match="strictly positive"):
        score_entropy(torch.tensor([1.0, 0.0, 1.0]), s)
    with pytest.raises(ValueError, match="non-negative"):
        score_entropy(s, -s)
    with pytest.raises(ValueError, match="weights must be"):
        score_entropy(s, s, -1.0)
    with pytest.raises(ValueError, match="broadcast"):
        score_entropy(s, s, torch.ones(2))
    with pytest.raises(ValueError, match="divide"):
        block_diffusion_mask(6, 4)
    with pytest.raises(ValueError, match="block_size"):
        block_diffusion_mask(6, 0)
    with pytest.raises(ValueError, match="length"):
        block_diffusion_mask(2.0, 1)  # type: ignore[arg-type]


def test_depth_dtype_device() -> None:
    s = torch.ones(2, 3, dtype=torch.float32)
    assert score_entropy(s, s).dtype == torch.float32
    assert score_entropy(s.double(), s.double()).dtype == torch.float64
    meta = torch.ones(2, 3, device="meta")
    assert score_entropy(meta, meta).device.type == "meta"
    assert block_diffusion_mask(4, 2, device="meta").device.type == "meta"
