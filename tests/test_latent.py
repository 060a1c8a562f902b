"""Tests for minilib.latent: shapes, the loss against its formula, the scale, and bad input."""

from __future__ import annotations

import pytest
import torch

from minilib.latent import ConvAutoencoder, autoencoder_loss, latent_scale


def test_shapes_and_range() -> None:
    ae = ConvAutoencoder(1, 4, width=8)
    x = torch.rand(3, 1, 16, 16) * 2 - 1
    with torch.no_grad():
        x_hat, z = ae(x)
    assert z.shape == (3, 4, 4, 4) and x_hat.shape == x.shape
    assert float(x_hat.abs().max()) <= 1.0
    assert ConvAutoencoder(3, 2, width=8).encode(torch.zeros(1, 3, 32, 8)).shape == (1, 2, 8, 2)


def test_loss_matches_formula() -> None:
    torch.manual_seed(0)
    ae = ConvAutoencoder(1, 4, width=8)
    x = torch.rand(5, 1, 16, 16) * 2 - 1
    x_hat, z = ae(x)
    expected = ((x_hat - x) ** 2).sum() / x.numel() + 0.1 * (z**2).sum() / z.numel()
    torch.testing.assert_close(autoencoder_loss(ae, x, beta=0.1), expected)


def test_autoencoder_learns_identity_on_a_tiny_set() -> None:
    """A few hundred Adam steps on 4 images must cut the reconstruction error by a factor of 5."""
    torch.manual_seed(0)
    ae = ConvAutoencoder(1, 4, width=16)
    x = (torch.rand(4, 1, 16, 16) > 0.5).float() * 2 - 1
    opt = torch.optim.Adam(ae.parameters(), lr=3e-3)
    first = float(autoencoder_loss(ae, x, beta=0.0).detach())
    for _ in range(300):
        opt.zero_grad()
        loss = autoencoder_loss(ae, x, beta=0.0)
        loss.backward()
        opt.step()
    assert float(loss.detach()) < first / 5


def test_latent_scale_gives_unit_std() -> None:
    z = torch.randn(1000, 4) * 3.7 + 0.5
    assert abs(float((z * latent_scale(z)).std()) - 1.0) < 1e-5


def test_bad_inputs() -> None:
    ae = ConvAutoencoder(1, 4, width=8)
    with pytest.raises(TypeError, match="floating"):
        ae.encode(torch.zeros(1, 1, 16, 16, dtype=torch.long))
    with pytest.raises(ValueError, match="divisible by 4"):
        ae.encode(torch.zeros(1, 1, 15, 16))
    with pytest.raises(ValueError, match=r"\(B, 1, H, W\)"):
        ae.encode(torch.zeros(1, 2, 16, 16))
    with pytest.raises(ValueError, match="z must have shape"):
        ae.decode(torch.zeros(1, 3, 4, 4))
    with pytest.raises(ValueError, match="beta"):
        autoencoder_loss(ae, torch.zeros(1, 1, 16, 16), beta=-1.0)
    with pytest.raises(ValueError, match="positive int"):
        ConvAutoencoder(0)
    with pytest.raises(ValueError, match="zero variance"):
        latent_scale(torch.ones(4))
    with pytest.raises(TypeError, match="floating"):
        latent_scale(torch.ones(4, dtype=torch.long))


# ---- cross-attention, exact W1, the Lipschitz bound and the error-split theorem ----

import itertools  # noqa: E402

import torch.nn.functional as F  # noqa: E402
from torch import nn  # noqa: E402

from minilib.latent import cross_attention, empirical_w1, lipschitz_upper_bound  # noqa: E402


@pytest.mark.parametrize("n_heads", [1, 2, 4])
def test_cross_attention_matches_sdpa(n_heads: int) -> None:
    torch.manual_seed(0)
    B, N, M, d, d_c, d_k, d_v, d_out = 2, 16, 5, 8, 6, 12, 8, 8
    x, c = torch.randn(B, N, d, dtype=torch.float64), torch.randn(B, M, d_c, dtype=torch.float64)
    wq, wk, wv, wo = (torch.randn(*s, dtype=torch.float64) for s in ((d, d_k), (d_c, d_k), (d_c, d_v), (d_v, d_out)))
    out = cross_attention(x, c, wq, wk, wv, wo, n_heads=n_heads)
    H = n_heads
    q = (x @ wq).view(B, N, H, -1).transpose(1, 2)
    k = (c @ wk).view(B, M, H, -1).transpose(1, 2)
    v = (c @ wv).view(B, M, H, -1).transpose(1, 2)
    ref = F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(B, N, d_v) @ wo
    torch.testing.assert_close(out, ref)
    assert out.dtype == torch.float64 and out.shape == (B, N, d_out)


def test_cross_attention_matches_a_loop() -> None:
    """Brute force: one position, one head, one softmax at a time."""
    torch.manual_seed(1)
    x, c = torch.randn(1, 3, 4), torch.randn(1, 7, 5)
    wq, wk, wv = torch.randn(4, 6), torch.randn(5, 6), torch.randn(5, 4)
    out = cross_attention(x, c, wq, wk, wv, n_heads=2)
    for i in range(3):
        for h in range(2):
            q = x[0, i] @ wq[:, 3 * h:3 * h + 3]
            scores = torch.stack([q @ (c[0, j] @ wk[:, 3 * h:3 * h + 3]) / 3**0.5 for j in range(7)])
            a = scores.exp() / scores.exp().sum()
            expected = sum(a[j] * (c[0, j] @ wv[:, 2 * h:2 * h + 2]) for j in range(7))
            torch.testing.assert_close(out[0, i, 2 * h:2 * h + 2], expected, rtol=1e-5, atol=1e-5)


def test_cross_attention_identical_keys_give_the_mean_value() -> None:
    """Exercise latent-ex-crossattn: identical keys make the softmax uniform at every position."""
    x = torch.randn(2, 9, 4)
    c = torch.randn(2, 6, 3)
    wk = torch.zeros(3, 4)  # every key is 0: identical
    wv = torch.randn(3, 5)
    out = cross_attention(x, c, torch.randn(4, 4), wk, wv)
    torch.testing.assert_close(out, (c @ wv).mean(1, keepdim=True).expand(2, 9, 5))


def test_cross_attention_bad_inputs() -> None:
    x, c = torch.randn(2, 4, 8), torch.randn(2, 3, 6)
    wq, wk, wv = torch.randn(8, 4), torch.randn(6, 4), torch.randn(6, 8)
    with pytest.raises(TypeError, match="x must be a floating"):
        cross_attention(x.long(), c, wq, wk, wv)
    with pytest.raises(ValueError, match="context must have 3"):
        cross_attention(x, c[0], wq, wk, wv)
    with pytest.raises(ValueError, match="batch size"):
        cross_attention(x, c[:1], wq, wk, wv)
    with pytest.raises(ValueError, match="w_q must have shape"):
        cross_attention(x, c, torch.randn(7, 4), wk, wv)
    with pytest.raises(ValueError, match="w_k must have shape"):
        cross_attention(x, c, wq, torch.randn(6, 5), wv)
    with pytest.raises(ValueError, match="w_v must have shape"):
        cross_attention(x, c, wq, wk, torch.randn(5, 8))
    with pytest.raises(ValueError, match="w_o must have shape"):
        cross_attention(x, c, wq, wk, wv, torch.randn(3, 8))
    with pytest.raises(ValueError, match="must divide"):
        cross_attention(x, c, wq, wk, wv, n_heads=3)
    with pytest.raises(ValueError, match="n_heads must be a positive int"):
        cross_attention(x, c, wq, wk, wv, n_heads=0)
    with pytest.raises(TypeError, match="dtype"):
        cross_attention(x, c.double(), wq, wk, wv)
    with pytest.raises(ValueError, match="at least one token"):
        cross_attention(x, torch.randn(2, 0, 6), wq, wk, wv)


def _brute_w1(a: torch.Tensor, b: torch.Tensor) -> float:
    cost = torch.cdist(a.double(), b.double())
    n = a.shape[0]
    return min(float(cost[torch.arange(n), torch.tensor(p)].mean()) for p in itertools.permutations(range(n)))


@pytest.mark.parametrize("n", [1, 2, 4, 6])
def test_empirical_w1_matches_brute_force(n: int) -> None:
    g = torch.Generator().manual_seed(n)
    for _ in range(5):
        a, b = torch.randn(n, 3, generator=g), torch.randn(n, 3, generator=g)
        w, perm = empirical_w1(a, b)
        assert abs(float(w) - _brute_w1(a, b)) < 1e-6
        assert sorted(perm.tolist()) == list(range(n))
        assert abs(float((a - b[perm]).norm(dim=-1).mean()) - float(w)) < 1e-6


def test_empirical_w1_of_a_translation() -> None:
    """Shifting every point by c moves the distribution by exactly |c| (the identity coupling is optimal)."""
    a = torch.randn(50, 4, generator=torch.Generator().manual_seed(0))
    shift = torch.tensor([0.3, -0.4, 0.0, 1.2])
    w, _ = empirical_w1(a, a[torch.randperm(50)] + shift)
    assert abs(float(w) - float(shift.norm())) < 1e-5
    with pytest.raises(ValueError, match="same|shape"):
        empirical_w1(a, a[:10])
    with pytest.raises(TypeError, match="floating"):
        empirical_w1(a.long(), a.long())


def test_lipschitz_bound_against_svd() -> None:
    torch.manual_seed(0)
    conv = nn.Conv2d(2, 3, 3, padding=1)
    n_in = 2 * 5 * 5
    with torch.no_grad():
        mat = (conv(torch.eye(n_in).view(n_in, 2, 5, 5)) - conv(torch.zeros(1, 2, 5, 5))).flatten(1)
    sigma = float(torch.linalg.matrix_norm(mat.double(), ord=2))
    bound = lipschitz_upper_bound(nn.Sequential(conv), (2, 5, 5))
    assert sigma <= bound <= 1.01 * sigma  # an upper bound, within the 1% the method promises
    lin, lin2 = nn.Linear(4, 3), nn.Linear(3, 2)
    both = lipschitz_upper_bound(nn.Sequential(lin, nn.Tanh(), lin2), (4,))
    product = float(torch.linalg.matrix_norm(lin.weight.double(), ord=2) * torch.linalg.matrix_norm(lin2.weight.double(), ord=2))
    assert product <= both <= 1.01 * product  # tanh contributes a factor 1
    with pytest.raises(TypeError, match="unsupported layer"):
        lipschitz_upper_bound(nn.Sequential(nn.Linear(2, 2), nn.Softmax(-1)), (2,))
    with pytest.raises(TypeError, match="nn.Sequential"):
        lipschitz_upper_bound(lin, (4,))


def test_lipschitz_bound_bounds_difference_quotients() -> None:
    """No pair of inputs may stretch more than the bound: a direct check of the Lipschitz property."""
    torch.manual_seed(2)
    dec = ConvAutoencoder(1, 2, width=4).decoder
    L = lipschitz_upper_bound(dec, (2, 2, 2))
    z1, z2 = torch.randn(200, 2, 2, 2), torch.randn(200, 2, 2, 2)
    with torch.no_grad():
        ratio = (dec(z1) - dec(z2)).flatten(1).norm(dim=-1) / (z1 - z2).flatten(1).norm(dim=-1)
    assert float(ratio.max()) <= L


@pytest.mark.parametrize("seed", range(5))
def test_error_split_theorem_on_samples(seed: int) -> None:
    """(latent-error-split) for empirical distributions, every W1 computed by brute force.

    The decoder is tanh after a random linear map (Lipschitz constant at most the spectral norm),
    the encoder an arbitrary map, so the reconstruction error is not small and both terms matter.
    """
    g = torch.Generator().manual_seed(seed)
    n, D, d = 6, 5, 2
    A = torch.randn(D, d, generator=g, dtype=torch.float64)
    decode = lambda z: torch.tanh(z @ A.T)  # noqa: E731
    x = torch.rand(n, D, generator=g, dtype=torch.float64) * 2 - 1  # the "data"
    E = torch.randn(d, D, generator=g, dtype=torch.float64)
    z = x @ E.T  # the encoded data (q)
    z_hat = torch.randn(n, d, generator=g, dtype=torch.float64)  # the generative model's samples
    L = float(torch.linalg.matrix_norm(A, ord=2))
    lhs = _brute_w1(decode(z_hat), x)
    rhs = L * _brute_w1(z_hat, z) + float((decode(z) - x).norm(dim=-1).mean())
    assert lhs <= rhs + 1e-12


def test_activation_slopes_are_upper_bounds() -> None:
    """The slope used for each activation must be at least its true largest slope (checked on a fine grid)."""
    from minilib.latent import _ACT_LIPSCHITZ

    x = torch.linspace(-20, 20, 400001, dtype=torch.float64, requires_grad=True)
    for kind, bound in _ACT_LIPSCHITZ.items():
        (slope,) = torch.autograd.grad(kind()(x).sum(), x)
        assert float(slope.abs().max()) <= bound, kind.__name__
    assert _ACT_LIPSCHITZ[nn.SiLU] - 1.09984 < 1e-3  # and not loose: within 1e-3 of SiLU's peak slope
