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
