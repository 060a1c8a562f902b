"""Latent generative modelling: a small convolutional autoencoder for the glyph images.

The first stage of latent diffusion: compress images of shape ``(B, C, H, W)`` into latents of
shape ``(B, c, H/4, W/4)`` with an encoder :math:`\\mathcal{E}` and map them back with a decoder
:math:`\\mathcal{D}`. A generative model (flow matching or diffusion) is then trained on the
latents, scaled to unit variance by :func:`latent_scale`.
"""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["ConvAutoencoder", "autoencoder_loss", "latent_scale"]


def _check_images(x: torch.Tensor, channels: int, name: str = "x") -> None:
    if not isinstance(x, torch.Tensor) or not x.is_floating_point():
        raise TypeError(f"{name} must be a floating-point tensor, got {getattr(x, 'dtype', type(x).__name__)}")
    if x.dim() != 4 or x.shape[1] != channels:
        raise ValueError(f"{name} must have shape (B, {channels}, H, W), got {tuple(x.shape)}")
    if x.shape[2] % 4 or x.shape[3] % 4:
        raise ValueError(f"{name} must have H and W divisible by 4, got {tuple(x.shape[2:])}")


class ConvAutoencoder(nn.Module):
    """A convolutional autoencoder with a 4x spatial downsampling.

    Encoder: conv (stride 1) then two stride-2 convs, each followed by SiLU, then a 1x1 conv to
    ``latent_channels``. Decoder: the mirror image with transposed convolutions, ending in
    ``tanh`` so that outputs lie in ``[-1, 1]`` like the glyph images.

    Args:
        in_channels: image channels ``C``.
        latent_channels: latent channels ``c``; the latent of an ``H x W`` image has
            ``c * H * W / 16`` numbers.
        width: channels of the hidden feature maps.

    >>> ae = ConvAutoencoder(1, 4, width=8)
    >>> z = ae.encode(torch.zeros(2, 1, 16, 16))
    >>> z.shape, ae.decode(z).shape
    (torch.Size([2, 4, 4, 4]), torch.Size([2, 1, 16, 16]))
    """

    def __init__(self, in_channels: int = 1, latent_channels: int = 4, *, width: int = 32) -> None:
        super().__init__()
        for name, v in (("in_channels", in_channels), ("latent_channels", latent_channels), ("width", width)):
            if not isinstance(v, int) or isinstance(v, bool) or v < 1:
                raise ValueError(f"{name} must be a positive int, got {v!r}")
        self.in_channels, self.latent_channels = in_channels, latent_channels
        self.encoder = nn.Sequential(
            nn.Conv2d(in_channels, width, 3, padding=1), nn.SiLU(),
            nn.Conv2d(width, width, 4, stride=2, padding=1), nn.SiLU(),  # H -> H/2
            nn.Conv2d(width, width, 4, stride=2, padding=1), nn.SiLU(),  # H/2 -> H/4
            nn.Conv2d(width, latent_channels, 1),
        )
        self.decoder = nn.Sequential(
            nn.Conv2d(latent_channels, width, 3, padding=1), nn.SiLU(),
            nn.ConvTranspose2d(width, width, 4, stride=2, padding=1), nn.SiLU(),  # H/4 -> H/2
            nn.ConvTranspose2d(width, width, 4, stride=2, padding=1), nn.SiLU(),  # H/2 -> H
            nn.Conv2d(width, in_channels, 3, padding=1), nn.Tanh(),
        )

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """Images ``(B, C, H, W)`` to latents ``(B, c, H/4, W/4)``."""
        _check_images(x, self.in_channels)
        return self.encoder(x)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """Latents ``(B, c, h, w)`` to images ``(B, C, 4h, 4w)`` in ``[-1, 1]``."""
        if not isinstance(z, torch.Tensor) or not z.is_floating_point():
            raise TypeError("z must be a floating-point tensor")
        if z.dim() != 4 or z.shape[1] != self.latent_channels:
            raise ValueError(f"z must have shape (B, {self.latent_channels}, h, w), got {tuple(z.shape)}")
        return self.decoder(z)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Return ``(reconstruction, latent)``."""
        z = self.encode(x)
        return self.decode(z), z


def autoencoder_loss(model: ConvAutoencoder, x: torch.Tensor, *, beta: float = 1e-3) -> torch.Tensor:
    """Reconstruction error plus a small penalty that keeps the latents near the origin.

    :math:`\\frac{1}{B}\\sum_b \\big(\\lVert x_b - \\mathcal{D}(\\mathcal{E}(x_b))\\rVert^2 / n_x
    + \\beta\\,\\lVert \\mathcal{E}(x_b) \\rVert^2 / n_z\\big)`, with :math:`n_x, n_z` the numbers of
    pixels and latent entries. The penalty plays the role of the weak KL term of Stable
    Diffusion's autoencoder: without it the latent scale drifts freely.
    Implements (latent-ae-loss).

    Args:
        model: the autoencoder.
        x: images ``(B, C, H, W)``.
        beta: weight of the latent penalty, non-negative.

    Returns:
        A scalar tensor.

    Raises:
        ValueError: a negative ``beta`` (and the shape errors of :meth:`ConvAutoencoder.encode`).
    """
    if not isinstance(beta, (int, float)) or isinstance(beta, bool) or beta < 0:
        raise ValueError(f"beta must be a non-negative number, got {beta!r}")
    x_hat, z = model(x)
    return ((x_hat - x) ** 2).mean() + beta * (z**2).mean()


def latent_scale(z: torch.Tensor) -> torch.Tensor:
    """The factor that gives latents unit variance: :math:`1/\\operatorname{std}(z)` over all entries.

    Stable Diffusion multiplies its latents by such a constant (0.18215) before diffusion, so
    that the data end of the path has roughly the variance of the noise end.
    Implements (latent-scale).

    Args:
        z: a batch of latents, any shape with at least two entries.

    Returns:
        A 0-d tensor.

    Raises:
        TypeError: a non-float ``z``. ValueError: fewer than two entries or zero variance.

    >>> float(latent_scale(torch.tensor([1.0, -1.0, 1.0, -1.0]) * 2))  # std 2 (unbiased: 2.31)
    0.4330127239227295
    """
    if not isinstance(z, torch.Tensor) or not z.is_floating_point():
        raise TypeError("z must be a floating-point tensor")
    if z.numel() < 2:
        raise ValueError("z must have at least two entries")
    s = z.detach().std()
    if z.device.type != "meta" and float(s) == 0.0:
        raise ValueError("z has zero variance")
    return 1.0 / s
