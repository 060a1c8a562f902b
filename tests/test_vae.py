"""Tests for minilib.vae: the Gaussian KL against torch.distributions and Monte Carlo, and the
VAE bounds against brute-force numerical integration of log p(x)."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from minilib.vae import VAE, diag_gaussian_log_prob, gaussian_kl

torch.set_num_threads(1)  # tiny ops: on a shared CPU a second thread only adds overhead


@given(d=st.integers(1, 6), seed=st.integers(0, 10_000))
@settings(max_examples=40, deadline=None)
def test_gaussian_kl_matches_torch_distributions(d: int, seed: int) -> None:
    g = torch.Generator().manual_seed(seed)
    mu = 3 * torch.randn(4, d, generator=g, dtype=torch.float64)
    logvar = 2 * torch.randn(4, d, generator=g, dtype=torch.float64)
    q = torch.distributions.Normal(mu, (0.5 * logvar).exp())
    p = torch.distributions.Normal(torch.zeros_like(mu), torch.ones_like(mu))
    ref = torch.distributions.kl_divergence(q, p).sum(-1)
    assert torch.allclose(gaussian_kl(mu, logvar), ref, rtol=1e-10, atol=1e-12)


def test_gaussian_kl_monte_carlo() -> None:
    # KL(q || p) = E_q[log q(z) - log p(z)], estimated with many samples
    g = torch.Generator().manual_seed(0)
    mu = torch.tensor([0.5, -1.0, 2.0], dtype=torch.float64)
    logvar = torch.tensor([-1.0, 0.3, 0.0], dtype=torch.float64)
    z = mu + (0.5 * logvar).exp() * torch.randn(400_000, 3, generator=g, dtype=torch.float64)
    mc = (diag_gaussian_log_prob(z, mu, logvar) - diag_gaussian_log_prob(z, torch.zeros(3, dtype=torch.float64), 0.0)).mean()
    assert float(mc) == pytest.approx(float(gaussian_kl(mu, logvar)), abs=0.01)


def test_gaussian_kl_is_zero_only_at_the_prior() -> None:
    assert float(gaussian_kl(torch.zeros(5), torch.zeros(5))) == 0.0
    assert float(gaussian_kl(torch.tensor([0.1]), torch.zeros(1))) > 0
    assert float(gaussian_kl(torch.zeros(1), torch.tensor([0.1]))) > 0


def test_diag_gaussian_log_prob_matches_torch() -> None:
    g = torch.Generator().manual_seed(0)
    x, m, lv = (torch.randn(5, 3, generator=g, dtype=torch.float64) for _ in range(3))
    ref = torch.distributions.Normal(m, (0.5 * lv).exp()).log_prob(x).sum(-1)
    assert torch.allclose(diag_gaussian_log_prob(x, m, lv), ref)


def test_gaussian_kl_bad_input() -> None:
    with pytest.raises(ValueError, match="same shape"):
        gaussian_kl(torch.zeros(3, 2), torch.zeros(3, 3))
    with pytest.raises(TypeError, match="floating"):
        gaussian_kl(torch.zeros(3, dtype=torch.long), torch.zeros(3))
    with pytest.raises(ValueError, match="at least one dimension"):
        gaussian_kl(torch.tensor(0.0), torch.tensor(0.0))


def _grid_log_px(vae: VAE, x: torch.Tensor) -> torch.Tensor:
    """log p(x) = log int p(x|z) p(z) dz for a 1-D latent, by a fine Riemann sum."""
    z = torch.linspace(-8, 8, 8001, dtype=torch.float64)[:, None, None]  # (G, 1, 1)
    dz = 16 / 8000
    with torch.no_grad():
        log_joint = vae.log_likelihood(x, z.expand(-1, x.shape[0], 1)) + diag_gaussian_log_prob(z, torch.zeros(1, dtype=torch.float64), 0.0)
    return torch.logsumexp(log_joint, dim=0) + math.log(dz)  # (B,)


def test_iwae_bounds_against_numerical_log_likelihood() -> None:
    torch.manual_seed(0)
    vae = VAE(3, latent_dim=1, hidden=16, obs_std=0.5).double()
    x = torch.randn(4, 3, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    log_px = _grid_log_px(vae, x)
    g = torch.Generator().manual_seed(2)
    # average many independent estimates: replicate the batch, (R * B, 3) -> mean over R
    rep = lambda v, r: v.reshape(r, x.shape[0]).mean(0)
    elbo = rep(vae.elbo(x.repeat(4000, 1), generator=g).detach(), 4000)
    iwae_10 = rep(vae.iwae_bound(x.repeat(400, 1), 10, generator=g), 400)
    iwae_big = vae.iwae_bound(x, 20000, generator=g)
    # ELBO <= IWAE_10 <= log p(x) (Burda et al.), and IWAE_K -> log p(x)
    assert (elbo <= iwae_10 + 0.02).all()
    assert (iwae_10 <= log_px + 0.02).all()
    assert torch.allclose(iwae_big, log_px, atol=0.05)
    # the ELBO gap is KL(q(z|x) || p(z|x)) >= 0, and strictly positive for some example here
    assert (log_px - elbo > -0.02).all() and (log_px - elbo).max() > 0.05


def test_iwae_with_k1_is_the_elbo_in_expectation() -> None:
    torch.manual_seed(0)
    vae = VAE(3, latent_dim=2, hidden=8).double()
    x = torch.randn(2, 3, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    g = torch.Generator().manual_seed(3)
    a = vae.elbo(x.repeat(20000, 1), generator=g).detach().reshape(20000, 2).mean(0)
    b = vae.iwae_bound(x.repeat(20000, 1), 1, generator=g).reshape(20000, 2).mean(0)
    assert torch.allclose(a, b, atol=0.1)


def test_vae_shapes_gradients_and_bad_input() -> None:
    vae = VAE(16, latent_dim=3, hidden=8)
    x = torch.randn(5, 1, 4, 4)
    mu, logvar = vae.encode(x)
    assert mu.shape == (5, 3) and logvar.shape == (5, 3)
    assert vae.decode(mu).shape == (5, 16)
    loss = -vae.elbo(x).mean()
    loss.backward()
    # the reparameterization trick: the encoder receives gradient through z
    assert vae.encoder[0].weight.grad is not None and vae.encoder[0].weight.grad.abs().sum() > 0
    assert vae.iwae_bound(x, 7, chunk=3).shape == (5,)
    with pytest.raises(ValueError, match="16 features"):
        vae.elbo(torch.zeros(5, 15))
    with pytest.raises(ValueError, match="k must be a positive int"):
        vae.iwae_bound(x, 0)
    with pytest.raises(ValueError, match="obs_std"):
        VAE(4, obs_std=0.0)
    with pytest.raises(ValueError, match="last dim 3"):
        vae.decode(torch.zeros(2, 2))
