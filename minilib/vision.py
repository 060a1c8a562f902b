"""Vision building blocks: convolution arithmetic, EfficientNet's MBConv, deformable convolution,
ViT patches and 2D positions, packed variable-resolution images, and angular-margin logits.

Conventions: images are ``(B, C, H, W)`` (channels first, as ``torch.nn.functional.conv2d``);
pixel ``(i, j)`` is row ``i`` (down) and column ``j`` (right). Token sequences are ``(B, N, D)``
with patches in *row-major* order over the patch grid (patch ``(r, c)`` is token ``r * W/p + c``).
Positions in sampling code are in pixel-index units: the centre of pixel ``(i, j)`` is at
``y = i, x = j`` (``align_corners=True``-style), as torchvision's ``deform_conv2d`` uses.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ._validate import float_tensor
from .llama import apply_rope

__all__ = [
    "DeformConv2d",
    "MBConv",
    "SqueezeExcite",
    "TinyViT",
    "compound_scaling",
    "conv_cost",
    "conv_output_size",
    "deform_conv2d",
    "interpolate_pos_embed",
    "mae_loss",
    "margin_logits",
    "pack_images",
    "patchify",
    "random_masking",
    "receptive_field",
    "rope_2d",
    "sincos_pos_embed_2d",
    "unpatchify",
]


def _int(v: object, name: str, low: int) -> int:
    if not isinstance(v, int) or isinstance(v, bool) or v < low:
        kind = "positive" if low == 1 else "non-negative" if low == 0 else f">= {low}"
        raise ValueError(f"{name} must be a {kind} int, got {v!r}")
    return v


def _pair(v: object, name: str, low: int) -> tuple[int, int]:
    if isinstance(v, (tuple, list)):
        if len(v) != 2:
            raise ValueError(f"{name} must be an int or a pair of ints, got {v!r}")
        return _int(v[0], name, low), _int(v[1], name, low)
    i = _int(v, name, low)
    return i, i


# ---------------------------------------------------------------------------------------------
# convolution arithmetic


def conv_output_size(n: int, kernel: int, stride: int = 1, padding: int = 0, dilation: int = 1) -> int:
    """Output length of a convolution along one axis.

    :math:`n_{\\text{out}} = \\lfloor (n + 2p - d(k - 1) - 1)/s \\rfloor + 1`, the number of
    positions a dilated kernel of extent :math:`d(k-1) + 1` fits into the padded input when it
    moves in steps of :math:`s`. Implements (cnn-output-size).

    Args:
        n: input length, positive.
        kernel: kernel size ``k``, positive.
        stride: step ``s``, positive.
        padding: zeros added on *each* side, ``p >= 0``.
        dilation: spacing ``d`` between kernel taps, positive.

    Returns:
        The output length, a positive int.

    Raises:
        ValueError: on a non-int or out-of-range argument, or if the dilated kernel is larger
            than the padded input (the output would be empty).

    >>> conv_output_size(32, 3, stride=2, padding=1)
    16
    >>> conv_output_size(7, 3, dilation=2)
    3
    """
    n, kernel, stride = _int(n, "n", 1), _int(kernel, "kernel", 1), _int(stride, "stride", 1)
    padding, dilation = _int(padding, "padding", 0), _int(dilation, "dilation", 1)
    span = dilation * (kernel - 1) + 1
    if n + 2 * padding < span:
        raise ValueError(f"the dilated kernel (extent {span}) is larger than the padded input (n + 2*padding = "
                         f"{n + 2 * padding}); the output would be empty")
    return (n + 2 * padding - span) // stride + 1


def receptive_field(layers: Sequence[tuple[int, int, int]]) -> tuple[int, int]:
    """Receptive field size and jump of a stack of convolutions (or pools), along one axis.

    Starting from :math:`(r, j) = (1, 1)` (one input pixel, unit spacing), each layer
    ``(k, s, d)`` updates :math:`r \\leftarrow r + (k - 1)\\,d\\,j` and then
    :math:`j \\leftarrow j\\,s`. ``r`` is how many input pixels one output unit sees and ``j`` is
    the distance in input pixels between neighbouring output units. Padding moves the field
    but does not change its size. Implements (cnn-rf-recursion); the size equals the closed
    form (cnn-rf-closed).

    Args:
        layers: a sequence of ``(kernel, stride, dilation)`` triples of positive ints, input first.

    Returns:
        ``(size, jump)``.

    >>> receptive_field([(3, 1, 1), (3, 1, 1)])   # two 3x3 convs see 5x5
    (5, 1)
    >>> receptive_field([(7, 2, 1), (3, 2, 1), (3, 1, 1)])  # ResNet stem + one 3x3
    (19, 4)
    """
    if isinstance(layers, (str, bytes)) or not isinstance(layers, Sequence):
        raise TypeError(f"layers must be a sequence of (kernel, stride, dilation) triples, got {type(layers).__name__}")
    r, j = 1, 1
    for idx, layer in enumerate(layers):
        if not isinstance(layer, (tuple, list)) or len(layer) != 3:
            raise ValueError(f"layers[{idx}] must be a (kernel, stride, dilation) triple, got {layer!r}")
        k, s, d = (_int(v, f"layers[{idx}] entries", 1) for v in layer)
        r += (k - 1) * d * j
        j *= s
    return r, j


def compound_scaling(
    phi: float, alpha: float = 1.2, beta: float = 1.1, gamma: float = 1.15
) -> tuple[float, float, float]:
    """EfficientNet's compound scaling: depth, width and resolution multipliers for budget ``phi``.

    Returns :math:`(\\alpha^\\phi, \\beta^\\phi, \\gamma^\\phi)`. With the paper's constants
    :math:`\\alpha\\beta^2\\gamma^2 \\approx 2`, so the FLOPs of a convolutional network (linear in
    depth, quadratic in width and in resolution) grow by about :math:`2^\\phi`. Implements
    (cnn-compound); the FLOP multiplier is (cnn-flops-dwr).

    Args:
        phi: the compound coefficient (any real; 0 gives the base network).
        alpha, beta, gamma: positive base multipliers for depth, width and resolution.

    >>> [round(v, 4) for v in compound_scaling(1.0)]
    [1.2, 1.1, 1.15]
    >>> d, w, r = compound_scaling(2.0)
    >>> round(d * w**2 * r**2, 3)   # FLOP multiplier, about 2**phi = 4
    3.687
    """
    if not isinstance(phi, (int, float)) or isinstance(phi, bool) or not math.isfinite(phi):
        raise ValueError(f"phi must be a finite number, got {phi!r}")
    for name, v in (("alpha", alpha), ("beta", beta), ("gamma", gamma)):
        if not isinstance(v, (int, float)) or isinstance(v, bool) or not v > 0 or not math.isfinite(v):
            raise ValueError(f"{name} must be a positive finite number, got {v!r}")
    return float(alpha) ** phi, float(beta) ** phi, float(gamma) ** phi


def conv_cost(
    in_ch: int,
    out_ch: int,
    kernel: int,
    out_hw: tuple[int, int] | int,
    kind: str = "standard",
    bias: bool = False,
) -> tuple[int, int]:
    """Parameters and multiply-adds (MACs) of one 2D convolution, in closed form.

    With a ``k x k`` kernel, ``C_in`` input and ``C_out`` output channels and an output map of
    ``H x W`` positions:

    - ``"standard"``: params :math:`k^2 C_{in} C_{out}`, MACs :math:`k^2 C_{in} C_{out} H W`.
    - ``"depthwise"`` (``groups = C_in``, requires ``C_out = C_in``): params :math:`k^2 C_{in}`,
      MACs :math:`k^2 C_{in} H W`.
    - ``"separable"`` (depthwise ``k x k`` then pointwise ``1 x 1``): params
      :math:`k^2 C_{in} + C_{in} C_{out}`, MACs :math:`(k^2 C_{in} + C_{in} C_{out}) H W`, a
      fraction :math:`1/C_{out} + 1/k^2` of the standard cost.

    ``bias`` adds one parameter per output channel of each convolution (biases are counted as
    parameters, not as MACs). One MAC is one multiply and one add, so FLOPs are about 2x MACs.
    Implements (cnn-cost-standard), (cnn-cost-depthwise) and (cnn-cost-separable).

    Args:
        in_ch, out_ch: channel counts, positive.
        kernel: kernel side ``k``, positive.
        out_hw: output ``(H, W)`` (or one int for a square map).
        kind: ``"standard"``, ``"depthwise"`` or ``"separable"``.
        bias: whether the convolution(s) carry a bias.

    Returns:
        ``(params, macs)``.

    >>> conv_cost(32, 64, 3, 16)
    (18432, 4718592)
    >>> conv_cost(32, 64, 3, 16, kind="separable")
    (2336, 598016)
    """
    in_ch, out_ch, kernel = _int(in_ch, "in_ch", 1), _int(out_ch, "out_ch", 1), _int(kernel, "kernel", 1)
    h, w = _pair(out_hw, "out_hw", 1)
    hw, k2 = h * w, kernel * kernel
    if kind == "standard":
        params, macs = k2 * in_ch * out_ch, k2 * in_ch * out_ch * hw
        params += out_ch if bias else 0
    elif kind == "depthwise":
        if out_ch != in_ch:
            raise ValueError(f"a depthwise convolution has out_ch == in_ch, got in_ch={in_ch}, out_ch={out_ch}")
        params, macs = k2 * in_ch, k2 * in_ch * hw
        params += in_ch if bias else 0
    elif kind == "separable":
        params, macs = k2 * in_ch + in_ch * out_ch, (k2 * in_ch + in_ch * out_ch) * hw
        params += in_ch + out_ch if bias else 0
    else:
        raise ValueError(f"kind must be 'standard', 'depthwise' or 'separable', got {kind!r}")
    return params, macs


# ---------------------------------------------------------------------------------------------
# EfficientNet blocks


class SqueezeExcite(nn.Module):
    """Squeeze-and-excitation: rescale each channel by a gate computed from global context.

    :math:`y = x \\odot \\sigma(W_2\\,\\mathrm{SiLU}(W_1\\,\\bar x + b_1) + b_2)` where
    :math:`\\bar x` is the spatial mean of ``x`` per channel (the squeeze), :math:`W_1` maps
    ``C`` to ``max(1, C // reduction)`` and :math:`W_2` back to ``C`` (the excitation; 1x1
    convolutions with bias). Input and output are ``(B, C, H, W)``. Implements (cnn-se).

    >>> se = SqueezeExcite(8)
    >>> _ = [nn.init.zeros_(p) for p in se.expand.parameters()]   # gate sigmoid(0) = 0.5
    >>> x = torch.randn(2, 8, 4, 4)
    >>> torch.allclose(se(x), 0.5 * x)
    True
    """

    def __init__(self, channels: int, reduction: int = 4) -> None:
        super().__init__()
        channels, reduction = _int(channels, "channels", 1), _int(reduction, "reduction", 1)
        hidden = max(1, channels // reduction)
        self.reduce = nn.Conv2d(channels, hidden, 1)
        self.expand = nn.Conv2d(hidden, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = x.mean(dim=(-2, -1), keepdim=True)  # (B, C, 1, 1)
        gate = torch.sigmoid(self.expand(F.silu(self.reduce(s))))
        return x * gate


class MBConv(nn.Module):
    """EfficientNet's mobile inverted bottleneck block (MBConv) with squeeze-and-excitation.

    ``x (B, in_ch, H, W)`` goes through: a 1x1 expansion to ``in_ch * expand`` channels
    (skipped when ``expand == 1``), BatchNorm, SiLU; a depthwise ``kernel x kernel`` convolution
    with ``stride`` and padding ``kernel // 2``, BatchNorm, SiLU; squeeze-and-excitation whose
    hidden width is ``max(1, in_ch // se_reduction)`` (relative to the block's *input*, as in
    EfficientNet; ``se_reduction=None`` removes it); a 1x1 projection to ``out_ch``, BatchNorm
    and *no* activation (a linear bottleneck). When ``stride == 1`` and ``in_ch == out_ch`` the
    input is added back (the residual). Stochastic depth is left out. The output is
    ``(B, out_ch, H', W')`` with ``H' = conv_output_size(H, kernel, stride, kernel // 2)``.
    Implements (cnn-mbconv); its cost is (cnn-mbconv-cost).

    >>> blk = MBConv(16, 16).eval()
    >>> blk(torch.randn(2, 16, 8, 8)).shape, blk.residual
    (torch.Size([2, 16, 8, 8]), True)
    >>> MBConv(16, 24, stride=2)(torch.randn(2, 16, 8, 8)).shape
    torch.Size([2, 24, 4, 4])
    """

    def __init__(self, in_ch: int, out_ch: int, expand: int = 4, kernel: int = 3, stride: int = 1,
                 se_reduction: int | None = 4) -> None:
        super().__init__()
        in_ch, out_ch = _int(in_ch, "in_ch", 1), _int(out_ch, "out_ch", 1)
        expand, stride = _int(expand, "expand", 1), _int(stride, "stride", 1)
        if _int(kernel, "kernel", 1) % 2 == 0:
            raise ValueError(f"kernel must be odd (so padding kernel // 2 keeps the size), got {kernel}")
        hid = in_ch * expand
        layers: list[nn.Module] = []
        if expand != 1:
            layers += [nn.Conv2d(in_ch, hid, 1, bias=False), nn.BatchNorm2d(hid), nn.SiLU()]
        layers += [nn.Conv2d(hid, hid, kernel, stride, kernel // 2, groups=hid, bias=False),
                   nn.BatchNorm2d(hid), nn.SiLU()]
        if se_reduction is not None:
            # hidden width in_ch // se_reduction = hid // (se_reduction * expand)
            layers.append(SqueezeExcite(hid, _int(se_reduction, "se_reduction", 1) * expand))
        layers += [nn.Conv2d(hid, out_ch, 1, bias=False), nn.BatchNorm2d(out_ch)]
        self.block = nn.Sequential(*layers)
        self.residual = stride == 1 and in_ch == out_ch

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.block(x)
        return x + y if self.residual else y


# ---------------------------------------------------------------------------------------------
# deformable convolution


def deform_conv2d(
    x: torch.Tensor,
    offset: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None = None,
    stride: int | tuple[int, int] = 1,
    padding: int | tuple[int, int] = 0,
    dilation: int | tuple[int, int] = 1,
    mask: torch.Tensor | None = None,
) -> torch.Tensor:
    """Deformable convolution (v1, or v2 with ``mask``), in torchvision's layout.

    Output ``(b, o, i, j)`` is

    .. math:: \\sum_{c}\\sum_{a,b'} w_{o,c,a,b'}\\; m_{k}\\; x_c\\big(i s_h - p_h + a d_h + \\Delta y_k,\\;
              j s_w - p_w + b' d_w + \\Delta x_k\\big) + \\text{bias}_o

    where ``k = a * kw + b'`` is the kernel tap in row-major order, :math:`(\\Delta y_k, \\Delta
    x_k)` = ``offset[b, 2k], offset[b, 2k+1]`` at ``(i, j)`` (the pairs are *(dy, dx)*),
    :math:`m_k` = ``mask[b, k, i, j]`` (1 without a mask), and :math:`x_c(y, x)` is bilinear
    interpolation of channel ``c`` at the real point ``(y, x)`` in pixel-index units, with pixels
    outside the image read as zero (each of the four corners is dropped if out of range). The
    computation gathers all ``kh*kw`` sampled columns at once (no loop over pixels) and is
    differentiable by autograd in ``x``, ``offset``, ``weight``, ``bias`` and ``mask``. One offset
    group and ``groups = 1``. Implements (dcn-deform), with (dcn-bilinear) for :math:`x_c(y, x)`
    and the mask of (dcn-modulated); autograd's offset gradient is (dcn-offset-grad), taking the
    right-hand derivative where a sampling coordinate is an integer (``floor`` is flat there).

    Args:
        x: ``(B, C_in, H, W)`` floating.
        offset: ``(B, 2*kh*kw, H_out, W_out)``.
        weight: ``(C_out, C_in, kh, kw)``.
        bias: ``(C_out,)`` or None.
        stride, padding, dilation: ints or ``(h, w)`` pairs, as in ``F.conv2d``.
        mask: ``(B, kh*kw, H_out, W_out)`` modulation scalars, or None.

    Returns:
        ``(B, C_out, H_out, W_out)`` with ``H_out = conv_output_size(H, kh, s_h, p_h, d_h)``,
        in the dtype and device of ``x``.

    >>> x, w = torch.randn(1, 2, 5, 5), torch.randn(3, 2, 3, 3)
    >>> off = torch.zeros(1, 18, 3, 3)
    >>> torch.allclose(deform_conv2d(x, off, w), F.conv2d(x, w), atol=1e-5)
    True
    """
    float_tensor("x", x)
    float_tensor("offset", offset)
    float_tensor("weight", weight)
    if x.dim() != 4:
        raise ValueError(f"x must have shape (B, C_in, H, W), got {tuple(x.shape)}")
    if weight.dim() != 4 or weight.shape[1] != x.shape[1]:
        raise ValueError(f"weight must have shape (C_out, {x.shape[1]}, kh, kw), got {tuple(weight.shape)}")
    (sh, sw), (ph, pw), (dh, dw) = _pair(stride, "stride", 1), _pair(padding, "padding", 0), _pair(dilation, "dilation", 1)
    B, C, H, W = x.shape
    cout, _, kh, kw = weight.shape
    K = kh * kw
    ho, wo = conv_output_size(H, kh, sh, ph, dh), conv_output_size(W, kw, sw, pw, dw)
    if tuple(offset.shape) != (B, 2 * K, ho, wo):
        raise ValueError(f"offset must have shape {(B, 2 * K, ho, wo)} = (B, 2*kh*kw, H_out, W_out), got {tuple(offset.shape)}")
    if bias is not None and (float_tensor("bias", bias).shape != (cout,)):
        raise ValueError(f"bias must have shape ({cout},), got {tuple(bias.shape)}")
    if mask is not None and tuple(float_tensor("mask", mask).shape) != (B, K, ho, wo):
        raise ValueError(f"mask must have shape {(B, K, ho, wo)} = (B, kh*kw, H_out, W_out), got {tuple(mask.shape)}")

    dev, dt = x.device, x.dtype
    off = offset.to(dt).view(B, K, 2, ho, wo)
    tap_y = (torch.arange(kh, device=dev, dtype=dt) * dh).repeat_interleave(kw)  # (K,) row-major taps
    tap_x = (torch.arange(kw, device=dev, dtype=dt) * dw).repeat(kh)
    out_y = torch.arange(ho, device=dev, dtype=dt) * sh - ph
    out_x = torch.arange(wo, device=dev, dtype=dt) * sw - pw
    py = tap_y[:, None, None] + out_y[None, :, None] + off[:, :, 0]  # (B, K, ho, wo)
    px = tap_x[:, None, None] + out_x[None, None, :] + off[:, :, 1]
    y0, x0 = torch.floor(py), torch.floor(px)
    fy, fx = py - y0, px - x0  # fractional parts carry the gradient w.r.t. the offsets
    y0, x0 = y0.long(), x0.long()
    flat = x.reshape(B, C, H * W)
    cols = x.new_zeros(B, C, K * ho * wo)
    for cy, wy in ((y0, 1 - fy), (y0 + 1, fy)):
        for cx, wx in ((x0, 1 - fx), (x0 + 1, fx)):
            valid = (cy >= 0) & (cy < H) & (cx >= 0) & (cx < W)
            idx = (cy.clamp(0, H - 1) * W + cx.clamp(0, W - 1)).view(B, 1, -1).expand(B, C, -1)
            wgt = (wy * wx * valid).view(B, 1, -1)
            cols = cols + flat.gather(2, idx) * wgt
    cols = cols.view(B, C, K, ho, wo)
    if mask is not None:
        cols = cols * mask.to(dt)[:, None]
    out = torch.einsum("bckhw,ock->bohw", cols, weight.to(dt).reshape(cout, C, K))
    if bias is not None:
        out = out + bias.to(dt)[None, :, None, None]
    return out


# ---------------------------------------------------------------------------------------------
# patches and positions


def patchify(images: torch.Tensor, patch: int) -> torch.Tensor:
    """Cut images into non-overlapping ``patch x patch`` tokens, as a ViT's input.

    Token ``n = r * (W/p) + c`` is the patch in patch-row ``r`` and patch-column ``c``
    (row-major over the grid). Within a token, features are ordered *(row, col, channel)*:
    feature ``(u * p + v) * C + ch`` is pixel ``(r p + u, c p + v)`` of channel ``ch``. (This is
    the order of ``einops`` ``'b c (h p1) (w p2) -> b (h w) (p1 p2 c)'``; ``F.unfold`` lists the
    same features in *(channel, row, col)* order instead.) Implements (vit-patchify).

    Args:
        images: ``(B, C, H, W)`` with ``H`` and ``W`` divisible by ``patch``.
        patch: patch side ``p``, positive.

    Returns:
        ``(B, N, p*p*C)`` with ``N = (H/p)(W/p)``, same dtype and device.

    >>> patchify(torch.arange(16.0).view(1, 1, 4, 4), 2)[0, 1].tolist()   # top-right patch
    [2.0, 3.0, 6.0, 7.0]
    """
    if not isinstance(images, torch.Tensor) or images.dim() != 4:
        raise ValueError(f"images must be a (B, C, H, W) tensor, got {getattr(images, 'shape', type(images).__name__)}")
    p = _int(patch, "patch", 1)
    B, C, H, W = images.shape
    if H % p or W % p:
        raise ValueError(f"image height and width ({H}, {W}) must be divisible by patch={p}")
    t = images.reshape(B, C, H // p, p, W // p, p).permute(0, 2, 4, 3, 5, 1)  # (B, gh, gw, p, p, C)
    return t.reshape(B, (H // p) * (W // p), p * p * C)


def unpatchify(tokens: torch.Tensor, patch: int, height: int, width: int) -> torch.Tensor:
    """Inverse of :func:`patchify`: ``(B, N, p*p*C)`` tokens back to ``(B, C, height, width)``.

    Inverts (vit-patchify): token ``r * (W/p) + c`` fills the block of rows ``r p .. r p + p - 1``
    and columns ``c p .. c p + p - 1``.

    >>> x = torch.randn(2, 3, 8, 4)
    >>> torch.equal(unpatchify(patchify(x, 2), 2, 8, 4), x)
    True
    """
    if not isinstance(tokens, torch.Tensor) or tokens.dim() != 3:
        raise ValueError(f"tokens must be a (B, N, p*p*C) tensor, got {getattr(tokens, 'shape', type(tokens).__name__)}")
    p, H, W = _int(patch, "patch", 1), _int(height, "height", 1), _int(width, "width", 1)
    if H % p or W % p:
        raise ValueError(f"height and width ({H}, {W}) must be divisible by patch={p}")
    B, N, D = tokens.shape
    gh, gw = H // p, W // p
    if N != gh * gw or D % (p * p):
        raise ValueError(f"tokens must have shape (B, {gh * gw}, p*p*C) for a {H}x{W} image and patch {p}, "
                         f"got {tuple(tokens.shape)}")
    C = D // (p * p)
    t = tokens.reshape(B, gh, gw, p, p, C).permute(0, 5, 1, 3, 2, 4)  # (B, C, gh, p, gw, p)
    return t.reshape(B, C, H, W)


def interpolate_pos_embed(
    pos: torch.Tensor,
    old_grid: int | tuple[int, int],
    new_grid: int | tuple[int, int],
    *,
    num_prefix_tokens: int = 0,
    mode: str = "bicubic",
) -> torch.Tensor:
    """Resample a learned 2D position embedding to a new patch grid (fine-tuning at a new resolution).

    Convention: ``pos`` is ``(num_prefix_tokens + gh*gw, D)``: first the prefix tokens (a class
    token, registers), which are kept unchanged, then the grid embeddings in row-major order
    (as :func:`patchify` orders patches). The grid part is viewed as a ``D``-channel image
    ``(D, gh, gw)`` and resized with ``F.interpolate(mode, align_corners=False)`` (pixel
    centres aligned, as in DeiT and timm). With ``new_grid == old_grid`` this is the identity
    up to rounding (both kernels interpolate: weight 1 at distance 0, 0 at the other taps).
    Implements (vit-interp): new row ``i'`` reads old row ``(i' + 1/2) gh/nh - 1/2``, and likewise
    for columns; kernel taps outside the grid read the nearest border row/column (for bilinear,
    the same as clamping the coordinate; for bicubic, not).

    Args:
        pos: ``(num_prefix_tokens + gh*gw, D)`` floating.
        old_grid, new_grid: ``(rows, cols)`` or one int for a square grid.
        num_prefix_tokens: how many leading tokens are not on the grid.
        mode: ``"bicubic"`` or ``"bilinear"``.

    Returns:
        ``(num_prefix_tokens + new_rows*new_cols, D)``, dtype and device of ``pos``.

    >>> interpolate_pos_embed(torch.randn(1 + 16, 8), 4, (6, 5), num_prefix_tokens=1).shape
    torch.Size([31, 8])
    """
    float_tensor("pos", pos)
    (gh, gw), (nh, nw) = _pair(old_grid, "old_grid", 1), _pair(new_grid, "new_grid", 1)
    npre = _int(num_prefix_tokens, "num_prefix_tokens", 0)
    if mode not in ("bicubic", "bilinear"):
        raise ValueError(f"mode must be 'bicubic' or 'bilinear', got {mode!r}")
    if pos.dim() != 2 or pos.shape[0] != npre + gh * gw:
        raise ValueError(f"pos must have shape ({npre} + {gh}*{gw}, D) = ({npre + gh * gw}, D), got {tuple(pos.shape)}")
    D = pos.shape[1]
    grid = pos[npre:].reshape(gh, gw, D).permute(2, 0, 1)[None]  # (1, D, gh, gw)
    work = grid.float() if grid.dtype in (torch.float16, torch.bfloat16) else grid
    new = F.interpolate(work, size=(nh, nw), mode=mode, align_corners=False).to(pos.dtype)
    return torch.cat([pos[:npre], new[0].permute(1, 2, 0).reshape(nh * nw, D)], dim=0)


def rope_2d(x: torch.Tensor, rows: torch.Tensor, cols: torch.Tensor, base: float = 10000.0) -> torch.Tensor:
    """Axial 2D rotary embedding: the first half of the features rotates with the row, the second with the column.

    With ``x = [x_r, x_c]`` split at ``d/2``, the output is
    ``[RoPE(x_r, rows), RoPE(x_c, cols)]`` where each ``RoPE`` is :func:`minilib.llama.apply_rope`
    on ``d/2`` features (interleaved pairs ``(2i, 2i+1)``, frequencies
    :math:`\\omega_i = \\mathrm{base}^{-2i/(d/2)}`). Each half is a rotation, so norms are kept,
    and :math:`\\langle R(q, r_1, c_1), R(k, r_2, c_2)\\rangle` depends on the positions only
    through :math:`(r_1 - r_2, c_1 - c_2)`. Implements (vit-rope2d); the relative property is
    (vit-rope2d-relative).

    Args:
        x: ``(..., T, d)`` floating with ``d`` divisible by 4.
        rows, cols: ``(T,)`` integer (or floating) row and column of each token, e.g. the two
            columns of :func:`pack_images`' position ids.
        base: the frequency base, positive.

    Returns:
        Tensor of the shape, dtype and device of ``x``.

    >>> q = torch.tensor([[1.0, 0.0, 1.0, 0.0]])
    >>> rope_2d(q, torch.tensor([0]), torch.tensor([1]), base=1.0)
    tensor([[1.0000, 0.0000, 0.5403, 0.8415]])
    """
    float_tensor("x", x)
    if x.dim() < 2 or x.shape[-1] % 4 != 0:
        raise ValueError(f"x must have shape (..., T, d) with d divisible by 4, got {tuple(x.shape)}")
    for name, t in (("rows", rows), ("cols", cols)):
        if not isinstance(t, torch.Tensor) or t.dtype == torch.bool or t.is_complex():
            raise TypeError(f"{name} must be an integer or real floating tensor")
        if tuple(t.shape) != (x.shape[-2],):
            raise ValueError(f"{name} must have shape ({x.shape[-2]},) to match x's T, got {tuple(t.shape)}")
    h = x.shape[-1] // 2
    return torch.cat([apply_rope(x[..., :h], rows, base=base), apply_rope(x[..., h:], cols, base=base)], dim=-1)


def pack_images(
    images: Sequence[torch.Tensor], patch: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Patchify images of different sizes and pack their tokens into one stream (NaViT-style).

    Image ``b`` of shape ``(C, H_b, W_b)`` becomes ``N_b = (H_b/p)(W_b/p)`` tokens in
    :func:`patchify`'s order; the streams are concatenated, and ``cu_seqlens`` marks where each
    image starts, so :func:`minilib.packing.varlen_attention` (``causal=False``) lets each
    image attend only to itself. Implements (vit-pack).

    Args:
        images: a non-empty list of ``(C, H_b, W_b)`` tensors, same ``C``, dtype and device,
            each side divisible by ``patch``.
        patch: patch side ``p``.

    Returns:
        ``(tokens, positions, cu_seqlens)``: tokens ``(sum N_b, p*p*C)``; positions
        ``(sum N_b, 2)`` int64, the ``(row, col)`` of each patch in its own image's grid;
        cu_seqlens ``(B + 1,)`` int32, ``(0, N_1, N_1 + N_2, ...)``.

    >>> t, pos, cu = pack_images([torch.zeros(3, 4, 6), torch.zeros(3, 2, 2)], 2)
    >>> t.shape, cu.tolist(), pos[:4].tolist()
    (torch.Size([7, 12]), [0, 6, 7], [[0, 0], [0, 1], [0, 2], [1, 0]])
    """
    if isinstance(images, torch.Tensor) or not isinstance(images, Sequence) or len(images) == 0:
        raise TypeError("images must be a non-empty list of (C, H, W) tensors")
    p = _int(patch, "patch", 1)
    toks, poss, lens = [], [], [0]
    for i, im in enumerate(images):
        if not isinstance(im, torch.Tensor) or im.dim() != 3:
            raise ValueError(f"images[{i}] must be a (C, H, W) tensor, got {getattr(im, 'shape', type(im).__name__)}")
        if im.shape[0] != images[0].shape[0] or im.dtype != images[0].dtype or im.device != images[0].device:
            raise ValueError(f"images[{i}] has channels/dtype/device {im.shape[0]}/{im.dtype}/{im.device}, but images[0] "
                             f"has {images[0].shape[0]}/{images[0].dtype}/{images[0].device}")
        _, H, W = im.shape
        if H % p or W % p:
            raise ValueError(f"images[{i}] has size ({H}, {W}), not divisible by patch={p}")
        toks.append(patchify(im[None], p)[0])
        r, c = torch.meshgrid(torch.arange(H // p, device=im.device), torch.arange(W // p, device=im.device), indexing="ij")
        poss.append(torch.stack((r.reshape(-1), c.reshape(-1)), dim=-1))
        lens.append(toks[-1].shape[0])
    cu = torch.tensor(lens, device=images[0].device).cumsum(0).to(torch.int32)
    return torch.cat(toks), torch.cat(poss), cu


# ---------------------------------------------------------------------------------------------
# angular-margin face-recognition logits


def margin_logits(
    cos: torch.Tensor,
    labels: torch.Tensor,
    kind: str = "arcface",
    s: float = 64.0,
    m: float | None = None,
) -> torch.Tensor:
    """Angular-margin logits for cross-entropy (ArcFace, CosFace, SphereFace).

    ``cos[b, j]`` is the cosine between embedding ``b`` and class centre ``j``; it is first
    clamped to ``[-1, 1]`` (rounding can push a normalised dot product slightly outside, where
    ``acos`` is NaN), and :math:`\\theta = \\arccos(\\cos)`. Non-target logits are
    :math:`s\\cos\\theta_j`; the target class ``y = labels[b]`` gets :math:`s\\,\\psi(\\theta_y)`:

    - ``"arcface"`` (additive angular, default ``m = 0.5``): :math:`\\psi = \\cos(\\theta + m)` if
      :math:`\\theta + m \\le \\pi`, else :math:`\\cos\\theta - m\\sin m` (keeps ψ decreasing in θ
      for ``m <= pi/2``; larger ``m`` is accepted but ψ may then jump up at the switch).
    - ``"cosface"`` (additive cosine, default ``m = 0.35``): :math:`\\psi = \\cos\\theta - m`.
    - ``"sphereface"`` (multiplicative angular, integer ``m``, default 4):
      :math:`\\psi = (-1)^k\\cos(m\\theta) - 2k` for :math:`\\theta \\in [k\\pi/m, (k+1)\\pi/m]`,
      which is monotone decreasing on :math:`[0, \\pi]`.

    Nothing differentiates through ``acos`` (whose derivative is infinite at ``±1``): θ only
    selects the branch (ArcFace) or the piece ``k`` (SphereFace), without gradient. ArcFace's
    :math:`\\cos(\\theta + m)` is evaluated as :math:`\\cos\\theta\\cos m - \\sin\\theta\\sin m`
    with :math:`\\sin\\theta = \\sqrt{\\max(1 - \\cos^2\\theta, \\epsilon)}` (``ε`` the dtype's
    smallest normal number, so the value is exact to rounding and the gradient is finite; at
    exactly ``cos = 1`` the floor passes no gradient to the square root and autograd returns
    ``s cos m``, a finite stand-in for the true derivative, which is infinite there, while just
    inside it returns the true, large :math:`s\\sin(\\theta + m)/\\sin\\theta`); SphereFace's
    :math:`\\cos(m\\theta) = T_m(\\cos\\theta)` is the Chebyshev polynomial, evaluated by its
    recurrence for any integer ``m >= 1``: its gradient is the true derivative everywhere
    (:math:`s m^2` at θ = 0). A non-integer ``m`` is rejected. Implements (margin-losses-arcface),
    (margin-losses-cosface), (margin-losses-sphereface) and (margin-losses-logits).

    Args:
        cos: ``(B, K)`` floating cosines.
        labels: ``(B,)`` int64 target classes in ``[0, K)``.
        kind: ``"arcface"``, ``"cosface"`` or ``"sphereface"``.
        s: positive scale.
        m: the margin (``None``: the default of ``kind``).

    Returns:
        ``(B, K)`` logits, dtype and device of ``cos``.

    >>> c = torch.tensor([[1.0, 0.0]])
    >>> margin_logits(c, torch.tensor([0]), kind="cosface", s=1.0, m=0.25)
    tensor([[0.7500, 0.0000]])
    """
    float_tensor("cos", cos)
    if cos.dim() != 2:
        raise ValueError(f"cos must have shape (B, K), got {tuple(cos.shape)}")
    if not isinstance(labels, torch.Tensor) or labels.dtype not in (torch.int64, torch.int32):
        raise TypeError("labels must be an int64 (or int32) tensor")
    if tuple(labels.shape) != (cos.shape[0],):
        raise ValueError(f"labels must have shape ({cos.shape[0]},), got {tuple(labels.shape)}")
    if labels.numel() and (int(labels.min()) < 0 or int(labels.max()) >= cos.shape[1]):
        raise ValueError(f"labels must lie in [0, {cos.shape[1]}), got range [{int(labels.min())}, {int(labels.max())}]")
    if not isinstance(s, (int, float)) or isinstance(s, bool) or not s > 0:
        raise ValueError(f"s must be a positive number, got {s!r}")
    defaults = {"arcface": 0.5, "cosface": 0.35, "sphereface": 4}
    if kind not in defaults:
        raise ValueError(f"kind must be 'arcface', 'cosface' or 'sphereface', got {kind!r}")
    m = defaults[kind] if m is None else m
    if kind == "sphereface":
        if not isinstance(m, int) or isinstance(m, bool) or m < 1:
            raise ValueError(f"m must be a positive int for sphereface, got {m!r}")
    elif not isinstance(m, (int, float)) or isinstance(m, bool) or not 0 <= m < math.pi:
        raise ValueError(f"m must be a number in [0, pi) for {kind}, got {m!r}")

    c = cos.clamp(-1.0, 1.0)
    ct = c.gather(1, labels.long()[:, None])  # (B, 1) target cosines
    if kind == "cosface":
        psi = ct - m  # (margin-losses-cosface)
    else:
        with torch.no_grad():  # theta picks a branch / piece only; acos' gradient is infinite at +-1
            theta = torch.acos(ct)
        if kind == "arcface":  # (margin-losses-arcface)
            sin_t = torch.sqrt((1 - ct * ct).clamp_min(torch.finfo(ct.dtype).tiny))
            cos_tm = ct * math.cos(m) - sin_t * math.sin(m)  # cos(theta + m)
            psi = torch.where(theta + m <= math.pi, cos_tm, ct - m * math.sin(m))
        else:  # (margin-losses-sphereface)
            k = torch.floor(theta * m / math.pi).clamp(0, m - 1)  # theta = pi lies in the last piece
            t_prev, t_cur = torch.ones_like(ct), ct  # Chebyshev T_0, T_1: T_m(cos theta) = cos(m theta)
            for _ in range(m - 1):
                t_prev, t_cur = t_cur, 2 * ct * t_cur - t_prev
            sign = 1.0 - 2.0 * torch.remainder(k, 2)  # (-1)^k
            psi = sign * t_cur - 2.0 * k
    out = c.scatter(1, labels.long()[:, None], psi)
    return s * out  # (margin-losses-logits)


# ---------------------------------------------------------------------------------------------
# Vision Transformers (chapter vit): 2D sinusoidal positions and a tiny ViT


def sincos_pos_embed_2d(rows: torch.Tensor, cols: torch.Tensor, dim: int, *, base: float = 10000.0) -> torch.Tensor:
    """Fixed 2D sinusoidal position embedding: half the features encode the row, half the column.

    ``out = [sinusoidal(rows, dim/2), sinusoidal(cols, dim/2)]`` with
    :func:`minilib.nn.sinusoidal_embedding` (sine and cosine interleaved, frequencies
    :math:`\\omega_i = \\mathrm{base}^{-2i/(\\mathrm{dim}/2)}`), the axial layout of MAE and of
    many ViT codebases. Positions may be fractional (a point between grid cells).
    Implements (vit-sincos2d).

    Args:
        rows, cols: ``(T,)`` integer or floating tensors, same shape.
        dim: embedding width, divisible by 4.
        base: the frequency base, positive.

    Returns:
        ``(T, dim)``: float32 for integer positions, otherwise the dtype of ``rows``; on the
        device of ``rows``.

    >>> sincos_pos_embed_2d(torch.tensor([0]), torch.tensor([0]), 4).tolist()   # sin 0, cos 0 twice
    [[0.0, 1.0, 0.0, 1.0]]
    """
    from .nn import sinusoidal_embedding

    for name, t in (("rows", rows), ("cols", cols)):
        if not isinstance(t, torch.Tensor) or t.dtype == torch.bool or t.is_complex():
            raise TypeError(f"{name} must be an integer or real floating tensor")
        if t.dim() != 1:
            raise ValueError(f"{name} must have shape (T,), got {tuple(t.shape)}")
    if rows.shape != cols.shape:
        raise ValueError(f"rows and cols must have the same shape, got {tuple(rows.shape)} and {tuple(cols.shape)}")
    if not isinstance(dim, int) or isinstance(dim, bool) or dim <= 0 or dim % 4:
        raise ValueError(f"dim must be a positive int divisible by 4, got {dim!r}")
    return torch.cat([sinusoidal_embedding(rows, dim // 2, base=base),
                      sinusoidal_embedding(cols.to(rows.dtype), dim // 2, base=base)], dim=-1)


def _grid_positions(gh: int, gw: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """Row and column of each token of a ``gh x gw`` grid in row-major order, each ``(gh*gw,)``."""
    n = torch.arange(gh * gw, device=device)
    return n // gw, n % gw


class _ViTBlock(nn.Module):
    """Pre-norm block ``x + MHA(LN x)``, ``x + MLP(LN x)``; 2D RoPE on the grid tokens' q and k if asked."""

    def __init__(self, d: int, heads: int, d_ff: int) -> None:
        super().__init__()
        self.heads = heads
        self.norm1, self.norm2 = nn.LayerNorm(d), nn.LayerNorm(d)
        self.qkv, self.out = nn.Linear(d, 3 * d), nn.Linear(d, d)
        self.mlp = nn.Sequential(nn.Linear(d, d_ff), nn.GELU(), nn.Linear(d_ff, d))

    def forward(self, x: torch.Tensor, rope: tuple[torch.Tensor, torch.Tensor] | None, n_prefix: int,
                cu_seqlens: torch.Tensor | None = None, weights: list | None = None) -> torch.Tensor:
        B, N, D = x.shape
        q, k, v = self.qkv(self.norm1(x)).view(B, N, 3, self.heads, D // self.heads).permute(2, 0, 3, 1, 4)
        if rope is not None:  # rotate the grid tokens only; prefix tokens (a class token) stay unrotated
            q = torch.cat([q[..., :n_prefix, :], rope_2d(q[..., n_prefix:, :], *rope)], dim=-2)
            k = torch.cat([k[..., :n_prefix, :], rope_2d(k[..., n_prefix:, :], *rope)], dim=-2)
        if cu_seqlens is not None:  # packed stream: each image attends to itself only
            from .packing import varlen_attention

            a = varlen_attention(q, k, v, cu_seqlens, causal=False)
        elif weights is not None:  # written out, to keep the attention maps
            w = torch.softmax(q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1]), dim=-1)  # (B, H, N, N)
            weights.append(w)
            a = w @ v
        else:
            a = F.scaled_dot_product_attention(q, k, v)
        x = x + self.out(a.transpose(1, 2).reshape(B, N, D))  # (B, N, D)
        return x + self.mlp(self.norm2(x))


class TinyViT(nn.Module):
    """A small Vision Transformer: patchify, embed, add positions, pre-norm blocks, pool, classify.

    ``images (B, C, H, W)`` are cut by :func:`patchify` into ``N = (H/p)(W/p)`` tokens, embedded
    by one linear map (the strided convolution of (vit-patch-embed)), given positions, passed
    through ``depth`` pre-norm Transformer blocks and a final LayerNorm, pooled, and mapped to
    ``n_classes`` logits. Implements (vit-input) and (vit-pool).

    - ``pos="learned"``: a learned table for the ``image_size/p`` grid; at another grid it is
      resampled with :func:`interpolate_pos_embed` (bicubic). ``"sincos2d"``: the fixed
      :func:`sincos_pos_embed_2d` of each patch's (row, col), added to the tokens.
      ``"rope2d"``: :func:`rope_2d` on every head's queries and keys (grid tokens only).
      ``"none"``: no position information (the model is then permutation-equivariant).
    - ``pool="cls"``: a learned class token is prepended and its final state classifies.
      ``pool="mean"``: the mean of the final token states.

    Args:
        image_size: training image side (sets the learned table's grid); divisible by ``patch``.
        patch, channels, d_model, depth, n_heads, n_classes: positive ints; ``d_model`` divisible
            by ``n_heads`` (and the head width by 4 for ``"rope2d"``).
        d_ff: MLP width (default ``2 * d_model``).

    >>> m = TinyViT(image_size=8, patch=4, d_model=16, depth=1, n_heads=2)
    >>> m(torch.zeros(3, 1, 8, 8)).shape, m(torch.zeros(3, 1, 12, 8)).shape
    (torch.Size([3, 10]), torch.Size([3, 10]))
    """

    def __init__(self, *, image_size: int = 16, patch: int = 4, channels: int = 1, d_model: int = 48,
                 depth: int = 2, n_heads: int = 4, d_ff: int | None = None, n_classes: int = 10,
                 pos: str = "learned", pool: str = "cls") -> None:
        super().__init__()
        image_size, patch, channels = _int(image_size, "image_size", 1), _int(patch, "patch", 1), _int(channels, "channels", 1)
        d_model, depth, n_heads = _int(d_model, "d_model", 1), _int(depth, "depth", 1), _int(n_heads, "n_heads", 1)
        n_classes = _int(n_classes, "n_classes", 1)
        d_ff = 2 * d_model if d_ff is None else _int(d_ff, "d_ff", 1)
        if pos not in ("learned", "sincos2d", "rope2d", "none"):
            raise ValueError(f"pos must be 'learned', 'sincos2d', 'rope2d' or 'none', got {pos!r}")
        if pool not in ("cls", "mean"):
            raise ValueError(f"pool must be 'cls' or 'mean', got {pool!r}")
        if image_size % patch:
            raise ValueError(f"image_size ({image_size}) must be divisible by patch ({patch})")
        if d_model % n_heads:
            raise ValueError(f"d_model ({d_model}) must be divisible by n_heads ({n_heads})")
        if pos == "rope2d" and (d_model // n_heads) % 4:
            raise ValueError(f"rope2d needs a head width divisible by 4, got {d_model // n_heads}")
        if pos == "sincos2d" and d_model % 4:
            raise ValueError(f"sincos2d needs d_model divisible by 4, got {d_model}")
        self.patch, self.grid, self.pos, self.pool, self.d_model = patch, image_size // patch, pos, pool, d_model
        self.embed = nn.Linear(patch * patch * channels, d_model)  # = Conv2d(C, d, p, stride=p), (vit-patch-embed)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, d_model)) if pool == "cls" else None
        self.pos_embed = nn.Parameter(0.02 * torch.randn(self.grid ** 2, d_model)) if pos == "learned" else None
        self.blocks = nn.ModuleList([_ViTBlock(d_model, n_heads, d_ff) for _ in range(depth)])
        self.norm = nn.LayerNorm(d_model)
        self.head = nn.Linear(d_model, n_classes)

    def _positions(self, z: torch.Tensor, rows: torch.Tensor, cols: torch.Tensor,
                   grid: tuple[int, int] | None) -> tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor] | None]:
        if self.pos == "learned":
            pe = self.pos_embed
            if grid != (self.grid, self.grid):
                pe = interpolate_pos_embed(pe, self.grid, grid)
            z = z + pe
        elif self.pos == "sincos2d":
            z = z + sincos_pos_embed_2d(rows, cols, self.d_model).to(z.dtype)
        return z, ((rows, cols) if self.pos == "rope2d" else None)

    def forward(self, images: torch.Tensor, *, return_attention: bool = False):
        """Logits ``(B, n_classes)`` for ``images (B, C, H, W)``; with ``return_attention`` also a list
        (one per block) of attention weights ``(B, H, T, T)``, ``T = N + 1`` with a class token (index 0)."""
        float_tensor("images", images)
        z = self.embed(patchify(images, self.patch))  # (B, N, d)
        gh, gw = images.shape[-2] // self.patch, images.shape[-1] // self.patch
        rows, cols = _grid_positions(gh, gw, images.device)
        z, rope = self._positions(z, rows, cols, (gh, gw))
        n_prefix = 0
        if self.cls_token is not None:
            z = torch.cat([self.cls_token.expand(z.shape[0], -1, -1), z], dim=1)  # (B, 1 + N, d)
            n_prefix = 1
        weights: list | None = [] if return_attention else None
        for blk in self.blocks:
            z = blk(z, rope, n_prefix, weights=weights)
        z = self.norm(z)
        logits = self.head(z[:, 0] if self.pool == "cls" else z.mean(dim=1))  # (vit-pool)
        return (logits, weights) if return_attention else logits

    def forward_packed(self, tokens: torch.Tensor, positions: torch.Tensor, cu_seqlens: torch.Tensor) -> torch.Tensor:
        """Logits ``(B, n_classes)`` for a packed stream from :func:`pack_images` (NaViT-style).

        Needs ``pool="mean"`` (pooling per image) and ``pos`` in ``"rope2d"``, ``"sincos2d"``,
        ``"none"`` (positions come from ``positions``, the (row, col) of each patch in its image).
        Attention is :func:`minilib.packing.varlen_attention` with ``causal=False``, so each image
        attends only to itself: the result equals running :meth:`forward` on each image alone.
        """
        if self.pool != "mean" or self.pos == "learned":
            raise ValueError("forward_packed needs pool='mean' and pos in ('rope2d', 'sincos2d', 'none'), "
                             f"got pool={self.pool!r}, pos={self.pos!r}")
        float_tensor("tokens", tokens)
        if tokens.dim() != 2 or positions.dim() != 2 or positions.shape != (tokens.shape[0], 2):
            raise ValueError(f"tokens must be (N, p*p*C) and positions (N, 2), got {tuple(tokens.shape)} and "
                             f"{tuple(positions.shape)}")
        from .packing import segment_ids

        z = self.embed(tokens)[None]  # (1, N, d): the stream is one long sequence
        z, rope = self._positions(z, positions[:, 0], positions[:, 1], None)
        for blk in self.blocks:
            z = blk(z, rope, 0, cu_seqlens=cu_seqlens)
        z = self.norm(z)[0]  # (N, d)
        seg = segment_ids(cu_seqlens)
        counts = torch.diff(cu_seqlens).to(z.dtype)[:, None]  # (B, 1)
        pooled = z.new_zeros(counts.shape[0], z.shape[1]).index_add(0, seg, z) / counts  # mean per image
        return self.head(pooled)


# ---------------------------------------------------------------------------------------------
# deformable convolution as a module (chapter: deformable-conv)


class DeformConv2d(nn.Module):
    """A deformable convolution whose offsets (and, if ``modulated``, masks) come from a plain conv.

    As in Dai et al. (v1) and Zhu et al. (v2): the offset branch is an ``nn.Conv2d`` over the
    *same* input with the same kernel size, stride, padding and dilation as the main kernel, so
    its output ``(B, 2*kh*kw [+ kh*kw], H_out, W_out)`` lines up with the output grid. It is
    initialised to zero, so a fresh layer samples the rigid grid (offsets 0) and, if modulated,
    weights every tap by ``sigmoid(0) = 0.5``; the mask is ``sigmoid`` of the last ``kh*kw``
    channels. ``forward(x)`` returns ``(B, C_out, H_out, W_out)``; ``offsets(x)`` returns
    ``(offset, mask)`` (mask None without modulation), in torchvision's layout: ``offset[:, 2k]``
    is :math:`\\Delta y_k` and ``offset[:, 2k+1]`` is :math:`\\Delta x_k` for the row-major tap
    ``k``. Implements (dcn-deform) with offsets predicted as in (dcn-offset-branch), and
    (dcn-modulated) when ``modulated``.

    >>> layer = DeformConv2d(2, 3, 3, padding=1)
    >>> x = torch.randn(1, 2, 6, 6)
    >>> ref = F.conv2d(x, layer.weight, layer.bias, padding=1)
    >>> torch.allclose(layer(x), ref, atol=1e-5)  # zero-initialised offsets: a plain convolution
    True
    """

    def __init__(self, in_ch: int, out_ch: int, kernel: int | tuple[int, int] = 3,
                 stride: int | tuple[int, int] = 1, padding: int | tuple[int, int] = 0,
                 dilation: int | tuple[int, int] = 1, bias: bool = True, modulated: bool = False) -> None:
        super().__init__()
        in_ch, out_ch = _int(in_ch, "in_ch", 1), _int(out_ch, "out_ch", 1)
        kh, kw = _pair(kernel, "kernel", 1)
        self.stride, self.padding = _pair(stride, "stride", 1), _pair(padding, "padding", 0)
        self.dilation, self.modulated = _pair(dilation, "dilation", 1), bool(modulated)
        self.weight = nn.Parameter(torch.empty(out_ch, in_ch, kh, kw))
        nn.init.kaiming_uniform_(self.weight, a=math.sqrt(5))  # nn.Conv2d's default
        self.bias = nn.Parameter(torch.zeros(out_ch)) if bias else None
        n_out = (3 if self.modulated else 2) * kh * kw
        self.offset_conv = nn.Conv2d(in_ch, n_out, (kh, kw), self.stride, self.padding, self.dilation)
        nn.init.zeros_(self.offset_conv.weight)  # start on the rigid grid, as in the papers
        nn.init.zeros_(self.offset_conv.bias)

    def offsets(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """``(offset (B, 2K, H_out, W_out), mask (B, K, H_out, W_out) or None)``, ``K = kh*kw``."""
        z = self.offset_conv(x)
        K = self.weight.shape[2] * self.weight.shape[3]
        if not self.modulated:
            return z, None
        return z[:, : 2 * K], torch.sigmoid(z[:, 2 * K:])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        offset, mask = self.offsets(x)
        return deform_conv2d(x, offset, self.weight, self.bias, self.stride, self.padding, self.dilation, mask)


# ---------------------------------------------------------------------------------------------
# Masked autoencoders (chapter: mae): random masking of tokens and the masked-patch loss


def random_masking(
    x: torch.Tensor, mask_ratio: float, generator: torch.Generator | None = None
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Keep a random subset of each sample's tokens, as the MAE encoder does.

    Each sample draws ``N`` uniform numbers, sorts them, and keeps the tokens of the
    ``n_keep = floor(N (1 - mask_ratio))`` smallest (a uniformly random subset of that size),
    in the sorted order. Implements (mae-masking).

    Conventions (as in the MAE reference code): ``mask[b, n] = 1`` when token ``n`` (original
    order) was *removed* and ``0`` when it was kept; ``ids_restore`` is the inverse of the
    shuffling permutation, so that concatenating the kept tokens with ``N - n_keep`` mask
    tokens and gathering with ``ids_restore`` puts every token back at its original position.
    The floor is taken with a ``1e-9`` slack so that ``N (1 - r)`` that is an integer up to
    float rounding (``10 * (1 - 0.9)``) is not rounded down.

    Args:
        x: ``(B, N, D)`` tokens.
        mask_ratio: fraction of tokens to remove, in ``[0, 1)``; must keep at least one token.
        generator: optional ``torch.Generator`` for the noise (drawn on its device, then moved).

    Returns:
        ``(kept, mask, ids_restore)``: ``kept (B, n_keep, D)`` like ``x``; ``mask (B, N)`` in
        ``x``'s dtype; ``ids_restore (B, N)`` int64. All on ``x``'s device.

    >>> x = torch.arange(8.0).view(1, 4, 2)
    >>> kept, mask, ids_restore = random_masking(x, 0.5, torch.Generator().manual_seed(0))
    >>> kept.shape, int(mask.sum())
    (torch.Size([1, 2, 2]), 2)
    """
    float_tensor("x", x)
    if x.dim() != 3:
        raise ValueError(f"x must be a (B, N, D) tensor of tokens, got shape {tuple(x.shape)}")
    if isinstance(mask_ratio, bool) or not isinstance(mask_ratio, (int, float)) or not 0.0 <= mask_ratio < 1.0:
        raise ValueError(f"mask_ratio must be a number in [0, 1), got {mask_ratio!r}")
    if generator is not None and not isinstance(generator, torch.Generator):
        raise TypeError(f"generator must be a torch.Generator or None, got {type(generator).__name__}")
    B, N, D = x.shape
    n_keep = math.floor(N * (1.0 - mask_ratio) + 1e-9)
    if n_keep < 1:
        raise ValueError(f"mask_ratio={mask_ratio} keeps no token of N={N}; use a smaller mask_ratio")
    noise_device = generator.device if generator is not None else x.device
    noise = torch.rand(B, N, generator=generator, device=noise_device).to(x.device)  # (B, N)
    ids_shuffle = torch.argsort(noise, dim=1)  # (B, N): the smallest noise values are kept
    ids_restore = torch.argsort(ids_shuffle, dim=1)  # inverse permutation
    ids_keep = ids_shuffle[:, :n_keep]  # (B, n_keep)
    kept = torch.gather(x, 1, ids_keep[..., None].expand(B, n_keep, D))  # (B, n_keep, D)
    mask = torch.ones(B, N, dtype=x.dtype, device=x.device)
    mask[:, :n_keep] = 0  # in shuffled order: the first n_keep are kept
    mask = torch.gather(mask, 1, ids_restore)  # back to the original order
    return kept, mask, ids_restore


def mae_loss(pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor, norm_pix: bool = True,
             eps: float = 1e-6) -> torch.Tensor:
    """The MAE reconstruction loss: mean squared error over the masked patches only.

    With ``norm_pix`` each target patch is standardised by its own mean and (unbiased, as in the
    MAE reference code) variance, ``(t - mean) / sqrt(var + eps)``, Implements (mae-normpix);
    then the per-patch mean squared error is averaged over the patches with ``mask = 1``,
    Implements (mae-loss).

    Args:
        pred: ``(B, N, P)`` predicted patches (the decoder's output for every position).
        target: ``(B, N, P)`` true patches, e.g. ``patchify(images, p)``; ``P >= 2`` with ``norm_pix``.
        mask: ``(B, N)``, 1 for masked (removed) patches, 0 for visible ones, as from
            :func:`random_masking`; at least one entry must be positive.
        norm_pix: standardise each target patch first.
        eps: added to the variance.

    Returns:
        A scalar tensor in ``pred``'s dtype.

    >>> t = torch.zeros(1, 2, 4); m = torch.tensor([[1.0, 0.0]])
    >>> float(mae_loss(torch.ones(1, 2, 4), t, m, norm_pix=False))
    1.0
    """
    float_tensor("pred", pred)
    float_tensor("target", target)
    float_tensor("mask", mask)
    if pred.dim() != 3 or pred.shape != target.shape:
        raise ValueError(f"pred and target must be (B, N, P) of the same shape, got {tuple(pred.shape)} and "
                         f"{tuple(target.shape)}")
    if mask.shape != pred.shape[:2]:
        raise ValueError(f"mask must have shape {tuple(pred.shape[:2])} (B, N), got {tuple(mask.shape)}")
    if norm_pix and pred.shape[-1] < 2:
        raise ValueError("norm_pix needs patches of at least 2 values (P >= 2)")
    if not mask.sum() > 0:
        raise ValueError("mask must mark at least one patch as masked (mask = 1)")
    if isinstance(eps, bool) or not isinstance(eps, (int, float)) or not eps >= 0:
        raise ValueError(f"eps must be a number >= 0, got {eps!r}")
    if norm_pix:
        mean = target.mean(dim=-1, keepdim=True)
        var = target.var(dim=-1, keepdim=True)  # unbiased, as the reference code
        target = (target - mean) / (var + eps).sqrt()  # (mae-normpix)
    per_patch = ((pred - target) ** 2).mean(dim=-1)  # (B, N)
    return (per_patch * mask).sum() / mask.sum()  # (mae-loss): masked patches only
