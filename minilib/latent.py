"""Latent generative modelling: a small convolutional autoencoder for the glyph images.

The first stage of latent diffusion: compress images of shape ``(B, C, H, W)`` into latents of
shape ``(B, c, H/4, W/4)`` with an encoder :math:`\\mathcal{E}` and map them back with a decoder
:math:`\\mathcal{D}`. A generative model (flow matching or diffusion) is then trained on the
latents, scaled to unit variance by :func:`latent_scale`.
"""

from __future__ import annotations

import copy
import math

import torch
from torch import nn

__all__ = ["ConvAutoencoder", "autoencoder_loss", "cross_attention", "empirical_w1", "latent_scale", "lipschitz_upper_bound"]


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


def _check_float(x: object, name: str, dim: int) -> None:
    if not isinstance(x, torch.Tensor) or not x.is_floating_point():
        raise TypeError(f"{name} must be a floating-point tensor, got {getattr(x, 'dtype', type(x).__name__)}")
    if x.dim() != dim:
        raise ValueError(f"{name} must have {dim} dimensions, got shape {tuple(x.shape)}")


def cross_attention(
    x: torch.Tensor,
    context: torch.Tensor,
    w_q: torch.Tensor,
    w_k: torch.Tensor,
    w_v: torch.Tensor,
    w_o: torch.Tensor | None = None,
    *,
    n_heads: int = 1,
) -> torch.Tensor:
    """Multi-head cross-attention: image (or latent) tokens attend to context (text) tokens.

    Queries come from the ``N`` image tokens, keys and values from the ``M`` context tokens:
    :math:`Q = \\varphi W^Q,\\ K = c W^K,\\ V = c W^V`; head :math:`h` uses the :math:`h`-th block
    of :math:`d_k/H` columns of ``Q, K`` and :math:`d_v/H` columns of ``V``, computes
    :math:`\\operatorname{softmax}(Q_h K_h^\\top / \\sqrt{d_k/H})\\,V_h` (softmax over the ``M``
    context tokens), and the heads are concatenated and multiplied by :math:`W^O`.
    Implements (latent-cross-attention). No residual is added: the caller adds the result to
    ``x``.

    Args:
        x: image tokens :math:`\\varphi`, shape ``(B, N, d)`` (a feature map flattened over positions).
        context: context tokens :math:`c`, shape ``(B, M, d_c)``.
        w_q: ``(d, d_k)``. w_k: ``(d_c, d_k)``. w_v: ``(d_c, d_v)``.
        w_o: optional output projection ``(d_v, d_out)``; without it the output width is ``d_v``.
        n_heads: number of heads ``H``; must divide ``d_k`` and ``d_v``.

    Returns:
        ``(B, N, d_out)`` (or ``(B, N, d_v)``), dtype and device of ``x``.

    Raises:
        TypeError: a non-float tensor or mixed dtypes. ValueError: mismatched shapes or devices,
        ``M = 0``, or a bad ``n_heads``.

    >>> x, c = torch.randn(2, 16, 8), torch.randn(2, 5, 6)
    >>> cross_attention(x, c, torch.randn(8, 4), torch.randn(6, 4), torch.randn(6, 8), n_heads=2).shape
    torch.Size([2, 16, 8])
    """
    _check_float(x, "x", 3)
    _check_float(context, "context", 3)
    for name, w in (("w_q", w_q), ("w_k", w_k), ("w_v", w_v)) + ((("w_o", w_o),) if w_o is not None else ()):
        _check_float(w, name, 2)
    tensors = [x, context, w_q, w_k, w_v] + ([w_o] if w_o is not None else [])
    if any(t.dtype != x.dtype for t in tensors):
        raise TypeError(f"all tensors must share x's dtype {x.dtype}, got {[t.dtype for t in tensors]}")
    if any(t.device != x.device for t in tensors):
        raise ValueError(f"all tensors must be on x's device {x.device}")
    B, N, d = x.shape
    if context.shape[0] != B:
        raise ValueError(f"context must have batch size {B} like x, got {tuple(context.shape)}")
    M, d_c = context.shape[1:]
    if M < 1:
        raise ValueError("context must hold at least one token (M >= 1)")
    if w_q.shape[0] != d:
        raise ValueError(f"w_q must have shape (d, d_k) = ({d}, d_k), got {tuple(w_q.shape)}")
    d_k = w_q.shape[1]
    if w_k.shape != (d_c, d_k):
        raise ValueError(f"w_k must have shape (d_c, d_k) = ({d_c}, {d_k}), got {tuple(w_k.shape)}")
    if w_v.shape[0] != d_c:
        raise ValueError(f"w_v must have shape (d_c, d_v) = ({d_c}, d_v), got {tuple(w_v.shape)}")
    d_v = w_v.shape[1]
    if w_o is not None and w_o.shape[0] != d_v:
        raise ValueError(f"w_o must have shape (d_v, d_out) = ({d_v}, d_out), got {tuple(w_o.shape)}")
    if isinstance(n_heads, bool) or not isinstance(n_heads, int) or n_heads < 1:
        raise ValueError(f"n_heads must be a positive int, got {n_heads!r}")
    if d_k % n_heads or d_v % n_heads:
        raise ValueError(f"n_heads={n_heads} must divide d_k={d_k} and d_v={d_v}")
    H = n_heads
    q = (x @ w_q).view(B, N, H, d_k // H).transpose(1, 2)  # (B, H, N, d_k/H): queries from the image
    k = (context @ w_k).view(B, M, H, d_k // H).transpose(1, 2)  # (B, H, M, d_k/H): keys from the text
    v = (context @ w_v).view(B, M, H, d_v // H).transpose(1, 2)  # (B, H, M, d_v/H): values from the text
    a = (q @ k.transpose(-1, -2) / (d_k // H) ** 0.5).softmax(-1)  # (B, H, N, M): each position's weights over words
    out = (a @ v).transpose(1, 2).reshape(B, N, d_v)  # (B, N, d_v): heads concatenated
    return out @ w_o if w_o is not None else out


def empirical_w1(a: torch.Tensor, b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Exact Wasserstein-1 distance between two empirical distributions of ``n`` points each.

    With equal weights :math:`1/n`, an optimal coupling can be taken to be a permutation
    (Birkhoff's theorem), so :math:`W_1 = \\min_\\sigma \\frac1n \\sum_i \\lVert a_i - b_{\\sigma(i)} \\rVert`,
    solved exactly by the Hungarian algorithm (:func:`minilib.detection.hungarian_match`,
    :math:`O(n^3)`) on the Euclidean cost matrix.
    Used to test (latent-error-split) on samples.

    Args:
        a, b: points ``(n, D)``, floating point, same ``n`` and ``D``.

    Returns:
        ``(w1, perm)``: a 0-d tensor (dtype and device of ``a``) and the optimal matching,
        ``perm[i]`` the index of the point of ``b`` coupled with ``a[i]`` (int64).

    Raises:
        TypeError: non-float input. ValueError: shapes that differ or are not ``(n, D)``.

    >>> w, perm = empirical_w1(torch.tensor([[0.0], [1.0]]), torch.tensor([[1.5], [0.0]]))
    >>> float(w), perm.tolist()
    (0.25, [1, 0])
    """
    _check_float(a, "a", 2)
    _check_float(b, "b", 2)
    if a.shape != b.shape or a.shape[0] < 1:
        raise ValueError(f"a and b must both have shape (n, D) with n >= 1, got {tuple(a.shape)} and {tuple(b.shape)}")
    from minilib.detection import hungarian_match

    cost = torch.cdist(a.detach().double(), b.detach().double().to(a.device))  # (n, n)
    rows, perm = hungarian_match(cost)  # rows = 0..n-1: a square cost matches every row
    w1 = float(cost[rows, perm].mean())
    return torch.tensor(w1, dtype=a.dtype, device=a.device), perm.to(a.device)


def _spectral_norm_upper(a: torch.Tensor, squarings: int = 8) -> float:
    """A guaranteed upper bound on the largest singular value of a matrix, within 1% of it.

    For the Gram matrix :math:`G = A A^\\top` (PSD, largest eigenvalue :math:`\\sigma_1^2`) and any
    :math:`k`, :math:`\\sigma_1^{2k} = \\lambda_1(G^k) \\le \\lVert G^k \\rVert_F \\le \\sqrt{n}\\,\\sigma_1^{2k}`. So
    :math:`\\lVert G^k \\rVert_F^{1/2k}` bounds :math:`\\sigma_1` from above and overshoots by at most
    :math:`n^{1/4k}`; ``k = 2**squarings`` by repeated squaring, rescaled to stay finite. Much
    faster than an SVD for the 1024-wide maps of the lab's decoder.
    """
    a = a.double()
    g = a @ a.T if a.shape[0] <= a.shape[1] else a.T @ a  # the smaller Gram matrix
    log_norm = 0.0  # log ||G^(2^j)||_F accumulated through the rescalings
    for _ in range(squarings):
        c = float(torch.linalg.matrix_norm(g))
        if c == 0.0:
            return 0.0
        g = (g / c) @ (g / c)
        log_norm = 2 * (log_norm + math.log(c))
    log_norm += math.log(float(torch.linalg.matrix_norm(g)))
    k = 2**squarings
    return math.exp(log_norm / (2 * k)) * (1 + 1e-9)  # margin for float64 round-off


# max |f'|, rounded up: SiLU's slope sigma(x)(1 + x(1 - sigma(x))) peaks at 1.099839... near x = 2.40
_ACT_LIPSCHITZ = {nn.SiLU: 1.0999, nn.Tanh: 1.0, nn.ReLU: 1.0, nn.Identity: 1.0}


def lipschitz_upper_bound(net: nn.Sequential, input_shape: tuple[int, ...]) -> float:
    """An upper bound on the Lipschitz constant (Euclidean norms) of a sequential conv net.

    The Lipschitz constant of a composition is at most the product of the constants of its
    layers. A convolution (or transposed convolution) acting on inputs of a fixed shape is a
    linear map plus a bias, so its constant is the largest singular value of that linear map,
    bounded here from above (within 1%) from its full matrix (a float64 copy of the layer applied
    to every basis vector; fine for small maps).
    An activation contributes its largest slope, rounded up (1.0999 for SiLU, whose slope peaks at
    1.09984; 1 for tanh and ReLU). This is the :math:`L` of (latent-error-split).

    Args:
        net: an ``nn.Sequential`` of ``Conv2d``, ``ConvTranspose2d``, ``Linear``, ``SiLU``,
            ``Tanh``, ``ReLU`` or ``Identity`` layers (e.g. ``ConvAutoencoder.decoder``).
        input_shape: the shape of one input without the batch axis, e.g. ``(4, 4, 4)``.

    Returns:
        The bound, a float.

    Raises:
        TypeError: a ``net`` that is not an ``nn.Sequential``, or a layer of another kind.
    """
    if not isinstance(net, nn.Sequential):
        raise TypeError(f"net must be an nn.Sequential, got {type(net).__name__}")
    if not (isinstance(input_shape, tuple) and input_shape and all(isinstance(s, int) and s > 0 for s in input_shape)):
        raise ValueError(f"input_shape must be a tuple of positive ints, got {input_shape!r}")
    p0 = next(net.parameters(), None)
    dtype = p0.dtype if p0 is not None else torch.float32
    device = p0.device if p0 is not None else torch.device("cpu")
    x = torch.zeros(1, *input_shape, dtype=dtype, device=device)
    bound = 1.0
    for layer in net:
        if type(layer) in _ACT_LIPSCHITZ:
            bound *= _ACT_LIPSCHITZ[type(layer)]
        elif isinstance(layer, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear)):
            shape = tuple(x.shape[1:])
            n_in = x[0].numel()
            lin = copy.deepcopy(layer).to(torch.float64)  # float64, so the matrix carries no float32 round-off
            with torch.no_grad():
                basis = torch.eye(n_in, dtype=torch.float64, device=device).view(n_in, *shape)
                # the matrix of the linear part: f(e_i) - f(0) for every basis vector, one row each
                jac = (lin(basis) - lin(torch.zeros(1, *shape, dtype=torch.float64, device=device))).flatten(1)  # (n_in, n_out)
            bound *= _spectral_norm_upper(jac)
        else:
            raise TypeError(f"unsupported layer {type(layer).__name__}: only convolutions, linear layers and 1-Lipschitz-bounded activations")
        with torch.no_grad():
            x = layer(x)
    return bound
