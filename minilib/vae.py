"""Latent-variable models: the Gaussian KL, and a small variational autoencoder with IWAE bounds.

Conventions: the prior is :math:`p(z) = \\mathcal{N}(0, I)`; the encoder returns the mean and
the *log-variance* of a diagonal Gaussian :math:`q_\\phi(z \\mid x)`; the decoder is a Gaussian
:math:`p_\\theta(x \\mid z) = \\mathcal{N}(\\mu_\\theta(z), s^2 I)` with a fixed observation std
``s`` (``obs_std``). All log-densities are in nats and include every normalizing constant, so
the bounds are true bounds on :math:`\\log p_\\theta(x)`.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from minilib._validate import float_tensor as _check_float

__all__ = ["VAE", "diag_gaussian_log_prob", "gaussian_kl", "vector_quantize"]


def gaussian_kl(mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """:math:`\\mathrm{KL}(\\mathcal{N}(\\mu, \\mathrm{diag}(e^{v}))\\,\\Vert\\,\\mathcal{N}(0, I))`, summed over the last dim.

    Per coordinate the KL is :math:`\\frac12(\\mu^2 + e^{v} - 1 - v)` with ``v = logvar``.
    Implements (vae-gaussian-kl).

    Args:
        mu: means, shape ``(..., d)``.
        logvar: log-variances, same shape.

    Returns:
        Tensor ``(...)``, non-negative, in the dtype of ``mu``.

    Raises:
        TypeError: on non-floating inputs. ValueError: on mismatched or 0-d shapes.

    >>> gaussian_kl(torch.zeros(3, 2), torch.zeros(3, 2))
    tensor([0., 0., 0.])
    """
    _check_float("mu", mu)
    _check_float("logvar", logvar)
    if mu.ndim == 0:
        raise ValueError("mu must have at least one dimension (the latent dimension)")
    if mu.shape != logvar.shape:
        raise ValueError(f"mu and logvar must have the same shape, got {tuple(mu.shape)} and {tuple(logvar.shape)}")
    return 0.5 * (mu**2 + logvar.exp() - 1.0 - logvar).sum(-1)


def diag_gaussian_log_prob(x: torch.Tensor, mean: torch.Tensor, logvar: torch.Tensor | float) -> torch.Tensor:
    """:math:`\\log \\mathcal{N}(x; \\mathrm{mean}, \\mathrm{diag}(e^{\\mathrm{logvar}}))`, summed over the last dim.

    Args:
        x: points ``(..., d)``.
        mean: means, broadcastable against ``x``.
        logvar: log-variances, a float or broadcastable against ``x``.

    Returns:
        Tensor of the broadcast shape without its last dim.
    """
    _check_float("x", x)
    logvar = torch.as_tensor(logvar, dtype=x.dtype, device=x.device)
    return -0.5 * (math.log(2 * math.pi) + logvar + (x - mean) ** 2 / logvar.exp()).sum(-1)


class VAE(nn.Module):
    """A small MLP variational autoencoder for flattened data.

    Encoder: ``x -> (mu, logvar)`` of :math:`q_\\phi(z \\mid x)`. Decoder: ``z -> mean`` of
    :math:`p_\\theta(x \\mid z) = \\mathcal{N}(\\mathrm{mean}, s^2 I)` with ``s = obs_std``.
    Inputs of shape ``(B, ...)`` are flattened to ``(B, data_dim)``.

    Args:
        data_dim: number of input features (e.g. 256 for 16 x 16 images).
        latent_dim: dimension of z.
        hidden: width of the hidden layers (two in each network).
        obs_std: the decoder's fixed observation standard deviation, positive.

    >>> vae = VAE(4, latent_dim=2, hidden=8)
    >>> vae.elbo(torch.zeros(3, 4)).shape
    torch.Size([3])
    """

    def __init__(self, data_dim: int, *, latent_dim: int = 2, hidden: int = 256, obs_std: float = 0.3) -> None:
        super().__init__()
        for name, v in (("data_dim", data_dim), ("latent_dim", latent_dim), ("hidden", hidden)):
            if not isinstance(v, int) or isinstance(v, bool) or v < 1:
                raise ValueError(f"{name} must be a positive int, got {v!r}")
        if not (isinstance(obs_std, (int, float)) and obs_std > 0):
            raise ValueError(f"obs_std must be positive, got {obs_std!r}")
        self.data_dim, self.latent_dim, self.obs_std = data_dim, latent_dim, float(obs_std)
        self.encoder = nn.Sequential(
            nn.Linear(data_dim, hidden), nn.SiLU(), nn.Linear(hidden, hidden), nn.SiLU(), nn.Linear(hidden, 2 * latent_dim)
        )
        self.decoder = nn.Sequential(
            nn.Linear(latent_dim, hidden), nn.SiLU(), nn.Linear(hidden, hidden), nn.SiLU(), nn.Linear(hidden, data_dim)
        )

    def _flat(self, x: torch.Tensor) -> torch.Tensor:
        _check_float("x", x)
        if x.ndim < 2 or x[0].numel() != self.data_dim:
            raise ValueError(f"x must have shape (B, ...) with {self.data_dim} features per example, got {tuple(x.shape)}")
        return x.reshape(x.shape[0], -1)  # (B, data_dim)

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(mu, logvar)`` of :math:`q_\\phi(z \\mid x)`, each ``(B, latent_dim)``."""
        h = self.encoder(self._flat(x))
        mu, logvar = h.chunk(2, dim=-1)
        return mu, logvar

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """The decoder mean :math:`\\mu_\\theta(z)`, shape ``(..., data_dim)``."""
        _check_float("z", z)
        if z.shape[-1] != self.latent_dim:
            raise ValueError(f"z must have last dim {self.latent_dim}, got {tuple(z.shape)}")
        return self.decoder(z)

    def log_likelihood(self, x_flat: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        """:math:`\\log p_\\theta(x \\mid z)`; ``x_flat`` ``(B, data_dim)``, ``z`` ``(..., B, latent_dim)`` -> ``(..., B)``."""
        return diag_gaussian_log_prob(x_flat, self.decode(z), 2 * math.log(self.obs_std))

    def elbo(self, x: torch.Tensor, *, generator: torch.Generator | None = None) -> torch.Tensor:
        """A one-sample reparameterized estimate of the ELBO per example.

        ``z = mu + exp(logvar / 2) * e`` with ``e ~ N(0, I)`` (the reparameterization trick,
        so gradients flow into the encoder), then ``log p(x | z) - KL(q(z | x) || p(z))`` with
        the KL in closed form. Implements (vae-elbo-kl) and (vae-reparam).

        Args:
            x: data ``(B, ...)``.
            generator: CPU generator for ``e``.

        Returns:
            Tensor ``(B,)``; its mean is an unbiased estimate of the average ELBO.
        """
        x_flat = self._flat(x)
        mu, logvar = self.encode(x_flat)
        e = torch.randn(mu.shape, generator=generator, dtype=mu.dtype).to(mu.device)
        z = mu + (0.5 * logvar).exp() * e
        return self.log_likelihood(x_flat, z) - gaussian_kl(mu, logvar)

    def rate_distortion(self, x: torch.Tensor, *, generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-example rate and distortion, whose sum is minus the one-sample ELBO of ``elbo``.

        Rate :math:`R = \\mathrm{KL}(q_\\phi(z \\mid x)\\,\\Vert\\,p(z))` in closed form, distortion
        :math:`D = -\\log p_\\theta(x \\mid z)` at one reparameterized draw ``z``. A beta-VAE
        minimizes ``D + beta * R``. Implements (vae-rate-distortion).

        Args:
            x: data ``(B, ...)``.
            generator: CPU generator for the reparameterization noise.

        Returns:
            ``(rate, distortion)``, each ``(B,)`` in nats, differentiable.
        """
        x_flat = self._flat(x)
        mu, logvar = self.encode(x_flat)
        e = torch.randn(mu.shape, generator=generator, dtype=mu.dtype).to(mu.device)
        z = mu + (0.5 * logvar).exp() * e
        return gaussian_kl(mu, logvar), -self.log_likelihood(x_flat, z)

    @torch.no_grad()
    def iwae_bound(self, x: torch.Tensor, k: int, *, generator: torch.Generator | None = None, chunk: int = 256) -> torch.Tensor:
        """The importance-weighted bound :math:`\\log \\frac1K \\sum_k p(x, z_k) / q(z_k \\mid x)` per example.

        With :math:`z_k \\sim q_\\phi(z \\mid x)` i.i.d. Its expectation increases with ``k``
        towards :math:`\\log p_\\theta(x)`; ``k = 1`` is the ELBO. Implements (vae-iwae).

        Args:
            x: data ``(B, ...)``.
            k: number of importance samples, positive.
            generator: CPU generator for the samples.
            chunk: samples processed at once (memory only; the result does not depend on it).

        Returns:
            Tensor ``(B,)`` (no gradient).
        """
        if not isinstance(k, int) or isinstance(k, bool) or k < 1:
            raise ValueError(f"k must be a positive int, got {k!r}")
        x_flat = self._flat(x)
        mu, logvar = self.encode(x_flat)
        std = (0.5 * logvar).exp()
        log_w = []
        for start in range(0, k, chunk):
            m = min(chunk, k - start)
            e = torch.randn((m, *mu.shape), generator=generator, dtype=mu.dtype).to(mu.device)  # (m, B, d)
            z = mu + std * e
            log_q = diag_gaussian_log_prob(z, mu, logvar)  # (m, B)
            log_prior = diag_gaussian_log_prob(z, torch.zeros_like(z), 0.0)
            log_w.append(self.log_likelihood(x_flat, z) + log_prior - log_q)
        log_w_all = torch.cat(log_w, dim=0)  # (k, B)
        return torch.logsumexp(log_w_all, dim=0) - math.log(k)


def vector_quantize(
    z: torch.Tensor, codebook: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Nearest-neighbour vector quantization with a straight-through gradient (VQ-VAE).

    Each vector ``z[..., :]`` is replaced by its nearest codebook row in Euclidean distance,
    :math:`k^* = \\arg\\min_k \\lVert z - e_k \\rVert^2` (ties go to the lowest index). The
    returned ``quantized`` equals :math:`e_{k^*}` in value, but is computed as
    ``z + (e - z).detach()``, so its gradient with respect to ``z`` is the identity (the
    straight-through estimator) and no gradient reaches the codebook through it.
    Implements (vae-vq-nearest), (vae-vq-straight-through) and the two losses of (vae-vq-loss):
    ``codebook_loss`` :math:`= \\lVert \\mathrm{sg}[z] - e_{k^*} \\rVert^2` (moves the codes only)
    and ``commitment_loss`` :math:`= \\lVert z - \\mathrm{sg}[e_{k^*}] \\rVert^2` (moves the
    encoder only), each summed over the last dim and averaged over all vectors. The caller
    weights the commitment loss by its beta.

    Args:
        z: encoder outputs ``(..., d)``, floating point.
        codebook: ``(K, d)`` code vectors, same dtype and device as ``z``.

    Returns:
        ``(quantized, indices, codebook_loss, commitment_loss)``: ``quantized`` ``(..., d)``;
        ``indices`` ``(...)`` int64 in ``[0, K)``; the two losses are 0-d tensors.

    Raises:
        TypeError: on non-floating inputs or mismatched dtypes. ValueError: on bad shapes.

    >>> q, idx, _, _ = vector_quantize(torch.tensor([[0.9, 0.1]]), torch.eye(2))
    >>> q, idx
    (tensor([[1., 0.]]), tensor([0]))
    """
    _check_float("z", z)
    _check_float("codebook", codebook)
    if codebook.ndim != 2 or codebook.shape[0] < 1:
        raise ValueError(f"codebook must have shape (K, d) with K >= 1, got {tuple(codebook.shape)}")
    if z.ndim < 1 or z.shape[-1] != codebook.shape[1]:
        raise ValueError(f"z must have shape (..., d) with d = {codebook.shape[1]} (the codebook's width), got {tuple(z.shape)}")
    if z.dtype != codebook.dtype or z.device != codebook.device:
        raise TypeError(f"z and codebook must share dtype and device, got {z.dtype}/{z.device} and {codebook.dtype}/{codebook.device}")
    flat = z.reshape(-1, z.shape[-1])  # (N, d)
    # squared distances (N, K) by expanding the square; the argmin does not need the gradient
    with torch.no_grad():
        d2 = (flat**2).sum(1, keepdim=True) - 2 * flat @ codebook.T + (codebook**2).sum(1)[None]
        indices = d2.argmin(dim=1)  # (N,)
    e = codebook[indices]  # (N, d), differentiable w.r.t. the codebook
    codebook_loss = ((flat.detach() - e) ** 2).sum(-1).mean()
    commitment_loss = ((flat - e.detach()) ** 2).sum(-1).mean()
    quantized = flat + (e - flat).detach()
    return quantized.reshape(z.shape), indices.reshape(z.shape[:-1]), codebook_loss, commitment_loss
