"""Toy data generated in code: 2D point clouds, a Gaussian mixture with known density, glyphs.

Nothing here downloads anything. Every sampler takes an optional ``torch.Generator`` and is
deterministic under it: random numbers are always drawn on the CPU (so a seed gives the same
data on every device) and the result is then moved to ``device`` and cast to ``dtype``.

Scale convention for the 2D sets: each is centred near the origin and scaled so that each
coordinate has a standard deviation between about 0.5 and 1.5, which is the scale the
diffusion schedules and the flow-matching Gaussian source assume.
"""

from __future__ import annotations

import functools
import math
import os

import torch

__all__ = [
    "GaussianMixture",
    "augment",
    "checkerboard",
    "correlated_gaussians",
    "eight_gaussians",
    "glyphs",
    "mixture_2d",
    "swiss_roll",
    "two_moons",
]


# ---------------------------------------------------------------------------------------------
# validation helpers
def _check_n(n: int) -> None:
    if not isinstance(n, int) or isinstance(n, bool):
        raise TypeError(f"n must be an int, got {type(n).__name__}")
    if n < 0:
        raise ValueError(f"n must be non-negative, got {n}")


def _check_generator(generator: torch.Generator | None) -> None:
    if generator is not None and not isinstance(generator, torch.Generator):
        raise TypeError(f"generator must be a torch.Generator or None, got {type(generator).__name__}")


def _check_float_dtype(dtype: torch.dtype) -> None:
    if not isinstance(dtype, torch.dtype) or not dtype.is_floating_point:
        raise TypeError(f"dtype must be a floating torch dtype, got {dtype!r}")


def _check_positive(value: float, name: str) -> None:
    if not isinstance(value, (int, float)) or isinstance(value, bool) or not value > 0:
        raise ValueError(f"{name} must be a positive number, got {value!r}")


def _finish(x: torch.Tensor, device: torch.device | str | None, dtype: torch.dtype) -> torch.Tensor:
    return x.to(device=device if device is not None else x.device, dtype=dtype)


def _prologue(n: int, generator: torch.Generator | None, dtype: torch.dtype) -> None:
    _check_n(n)
    _check_generator(generator)
    _check_float_dtype(dtype)


# ---------------------------------------------------------------------------------------------
# 2D point clouds
def two_moons(
    n: int,
    *,
    noise: float = 0.05,
    generator: torch.Generator | None = None,
    device: torch.device | str | None = None,
    dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """Two interleaved half circles, centred and scaled to unit order.

    The upper moon is the unit half circle, the lower one is it flipped and shifted by
    ``(1, -0.5)`` (the usual construction); the cloud is then centred at the origin and
    scaled by 1/0.7, after which ``noise`` (isotropic Gaussian, in the scaled units) is added.

    Args:
        n: number of points; ``n // 2`` (rounded up) go to the upper moon.
        noise: standard deviation of the Gaussian noise, non-negative.
        generator: CPU generator for reproducibility.
        device: where the result lives (default CPU).
        dtype: floating dtype of the result.

    Returns:
        Tensor of shape ``(n, 2)``.

    >>> two_moons(5, generator=torch.Generator().manual_seed(0)).shape
    torch.Size([5, 2])
    """
    _prologue(n, generator, dtype)
    if not isinstance(noise, (int, float)) or isinstance(noise, bool) or noise < 0:
        raise ValueError(f"noise must be a non-negative number, got {noise!r}")
    n_upper = (n + 1) // 2
    angle = math.pi * torch.rand(n, generator=generator, dtype=torch.float64)
    upper = torch.stack((torch.cos(angle), torch.sin(angle)), dim=-1)
    lower = torch.stack((1.0 - torch.cos(angle), 0.5 - torch.sin(angle)), dim=-1)
    is_upper = (torch.arange(n) < n_upper)[:, None]
    x = torch.where(is_upper, upper, lower)
    x = (x - torch.tensor([0.5, 0.25], dtype=torch.float64)) / 0.7
    x = x + noise * torch.randn(n, 2, generator=generator, dtype=torch.float64)
    return _finish(x, device, dtype)


def eight_gaussians(
    n: int,
    *,
    radius: float = 2.0,
    std: float = 0.1,
    generator: torch.Generator | None = None,
    device: torch.device | str | None = None,
    dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """Eight equal-weight isotropic Gaussians with centres evenly spaced on a circle.

    Centre ``k`` is ``radius * (cos(k pi/4), sin(k pi/4))``. Each coordinate has standard
    deviation ``sqrt(radius**2 / 2 + std**2)`` (1.42 with the defaults). The same
    distribution, with its exact density, is ``mixture_2d("eight")``.

    Args:
        n: number of points.
        radius: radius of the circle of centres, positive.
        std: standard deviation of each component, positive.
        generator: CPU generator for reproducibility.
        device: where the result lives (default CPU).
        dtype: floating dtype of the result.

    Returns:
        Tensor of shape ``(n, 2)``.
    """
    _prologue(n, generator, dtype)
    _check_positive(radius, "radius")
    _check_positive(std, "std")
    k = torch.randint(8, (n,), generator=generator)
    angle = k.to(torch.float64) * (math.pi / 4)
    centres = radius * torch.stack((torch.cos(angle), torch.sin(angle)), dim=-1)
    x = centres + std * torch.randn(n, 2, generator=generator, dtype=torch.float64)
    return _finish(x, device, dtype)


def checkerboard(
    n: int,
    *,
    generator: torch.Generator | None = None,
    device: torch.device | str | None = None,
    dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """Uniform on the dark squares of a 4 x 4 checkerboard covering ``[-2, 2]^2``.

    The dark squares are those whose integer corner ``(i, j)`` has ``i + j`` even. Each
    coordinate is uniform on ``[-2, 2]``, so it has standard deviation ``4 / sqrt(12)`` (1.15).

    Args:
        n: number of points.
        generator: CPU generator for reproducibility.
        device: where the result lives (default CPU).
        dtype: floating dtype of the result.

    Returns:
        Tensor of shape ``(n, 2)``.
    """
    _prologue(n, generator, dtype)
    x1 = 4.0 * torch.rand(n, generator=generator, dtype=torch.float64) - 2.0
    u = torch.rand(n, generator=generator, dtype=torch.float64)  # position inside a column
    half = torch.randint(2, (n,), generator=generator).to(torch.float64)  # which dark square
    # column floor(x1) = c; the dark squares in that column start at rows r with (c + r) even
    col = torch.floor(x1)
    parity = torch.remainder(col, 2.0)  # 0 if c even, 1 if odd
    row = -2.0 + parity + 2.0 * half  # r in {-2, 0} for even c, {-1, 1} for odd c
    x2 = row + u
    x = torch.stack((x1, x2), dim=-1)
    return _finish(x, device, dtype)


def swiss_roll(
    n: int,
    *,
    noise: float = 0.05,
    generator: torch.Generator | None = None,
    device: torch.device | str | None = None,
    dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """A 2D spiral: ``s (cos s, sin s) / 7 - m`` with ``s`` uniform on ``[1.5 pi, 4.5 pi]``.

    Dividing by 7 gives each coordinate a standard deviation near 1; ``m = (2/7, 2/(21 pi))``
    is the exact mean of the scaled spiral, so the result is centred. Gaussian ``noise`` is
    added after scaling.

    Args:
        n: number of points.
        noise: standard deviation of the Gaussian noise, non-negative.
        generator: CPU generator for reproducibility.
        device: where the result lives (default CPU).
        dtype: floating dtype of the result.

    Returns:
        Tensor of shape ``(n, 2)``.
    """
    _prologue(n, generator, dtype)
    if not isinstance(noise, (int, float)) or isinstance(noise, bool) or noise < 0:
        raise ValueError(f"noise must be a non-negative number, got {noise!r}")
    s = 1.5 * math.pi * (1.0 + 2.0 * torch.rand(n, generator=generator, dtype=torch.float64))
    x = torch.stack((s * torch.cos(s), s * torch.sin(s)), dim=-1) / 7.0
    # E[s cos s] = 2 and E[s sin s] = 2 / (3 pi) for s ~ U[1.5 pi, 4.5 pi] (integrate by parts)
    x = x - torch.tensor([2.0 / 7.0, 2.0 / (21.0 * math.pi)], dtype=torch.float64)
    x = x + noise * torch.randn(n, 2, generator=generator, dtype=torch.float64)
    return _finish(x, device, dtype)


# ---------------------------------------------------------------------------------------------
# a Gaussian mixture with known density
class GaussianMixture:
    """An isotropic Gaussian mixture :math:`p(x) = \\sum_k w_k\\, \\mathcal{N}(x; \\mu_k, s_k^2 I)`.

    Args:
        means: tensor ``(K, D)`` of component means.
        stds: tensor ``(K,)`` of positive component standard deviations.
        weights: tensor ``(K,)`` of non-negative weights summing to 1 (within 1e-6).

    Raises:
        TypeError: if an argument is not a floating tensor.
        ValueError: on mismatched shapes, non-positive stds, negative weights or weights
            that do not sum to 1.

    The three tensors are converted to the dtype and device of ``means``.

    >>> gm = GaussianMixture(torch.zeros(1, 2), torch.ones(1), torch.ones(1))
    >>> round(float(gm.log_prob(torch.zeros(1, 2))[0]), 4)  # -log(2 pi)
    -1.8379
    """

    def __init__(self, means: torch.Tensor, stds: torch.Tensor, weights: torch.Tensor) -> None:
        for name, t in (("means", means), ("stds", stds), ("weights", weights)):
            if not isinstance(t, torch.Tensor):
                raise TypeError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
            if not t.is_floating_point():
                raise TypeError(f"{name} must be a floating tensor, got {t.dtype}")
        if means.ndim != 2 or means.shape[0] == 0 or means.shape[1] == 0:
            raise ValueError(f"means must have shape (K, D) with K, D >= 1, got {tuple(means.shape)}")
        K = means.shape[0]
        if stds.shape != (K,):
            raise ValueError(f"stds must have shape (K,) = ({K},), got {tuple(stds.shape)}")
        if weights.shape != (K,):
            raise ValueError(f"weights must have shape (K,) = ({K},), got {tuple(weights.shape)}")
        stds = stds.to(device=means.device, dtype=means.dtype)
        weights = weights.to(device=means.device, dtype=means.dtype)
        if means.device.type != "meta":
            if not bool((stds > 0).all()):
                raise ValueError("stds must all be positive")
            if not bool((weights >= 0).all()):
                raise ValueError("weights must be non-negative")
            if abs(float(weights.sum()) - 1.0) > 1e-6:
                raise ValueError(f"weights must sum to 1, got sum {float(weights.sum()):.6g}")
        self.means = means
        self.stds = stds
        self.weights = weights

    @property
    def n_components(self) -> int:
        """K, the number of components."""
        return self.means.shape[0]

    @property
    def dim(self) -> int:
        """D, the dimension of the data."""
        return self.means.shape[1]

    def to(self, device: torch.device | str | None = None, dtype: torch.dtype | None = None) -> GaussianMixture:
        """A copy with all parameters on ``device`` in ``dtype``."""
        kw = {"device": device, "dtype": dtype}
        return GaussianMixture(self.means.to(**kw), self.stds.to(**kw), self.weights.to(**kw))

    def sample(self, n: int, generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Draw ``n`` samples: a component ``k ~ w``, then ``x ~ N(mu_k, s_k^2 I)``.

        Args:
            n: number of samples.
            generator: CPU generator for reproducibility.

        Returns:
            ``(x, labels)``: ``x`` of shape ``(n, D)`` in the mixture's dtype and device, and
            the component indices ``labels`` of shape ``(n,)``, int64.
        """
        _check_n(n)
        _check_generator(generator)
        w = self.weights.detach().to("cpu", torch.float64)
        labels = torch.multinomial(w, n, replacement=True, generator=generator) if n > 0 else torch.zeros(0, dtype=torch.int64)
        z = torch.randn(n, self.dim, generator=generator, dtype=torch.float64)
        mu = self.means.detach().to("cpu", torch.float64)[labels]
        s = self.stds.detach().to("cpu", torch.float64)[labels]
        x = mu + s[:, None] * z
        return x.to(self.means.device, self.means.dtype), labels.to(self.means.device)

    def component_log_prob(self, x: torch.Tensor) -> torch.Tensor:
        """``log w_k + log N(x; mu_k, s_k^2 I)`` for every point and component.

        Args:
            x: tensor ``(N, D)``.

        Returns:
            Tensor ``(N, K)``.
        """
        if not isinstance(x, torch.Tensor) or not x.is_floating_point():
            raise TypeError("x must be a floating torch.Tensor")
        if x.ndim != 2 or x.shape[1] != self.dim:
            raise ValueError(f"x must have shape (N, {self.dim}), got {tuple(x.shape)}")
        D = self.dim
        mu = self.means.to(x.dtype)
        s2 = self.stds.to(x.dtype) ** 2
        sq = ((x[:, None, :] - mu[None, :, :]) ** 2).sum(-1)  # (N, K)
        log_norm = -0.5 * D * torch.log(2 * math.pi * s2)  # (K,)
        return torch.log(self.weights.to(x.dtype)) + log_norm - 0.5 * sq / s2

    def log_prob(self, x: torch.Tensor) -> torch.Tensor:
        """The exact log-density :math:`\\log p(x)`, computed with log-sum-exp (stable far away).

        Args:
            x: tensor ``(N, D)``.

        Returns:
            Tensor ``(N,)`` in the dtype of ``x``.
        """
        return torch.logsumexp(self.component_log_prob(x), dim=-1)

    def __repr__(self) -> str:
        return f"GaussianMixture(K={self.n_components}, D={self.dim}, dtype={self.means.dtype})"


def mixture_2d(
    kind: str = "five",
    *,
    device: torch.device | str | None = None,
    dtype: torch.dtype = torch.float32,
) -> GaussianMixture:
    """Ready-made 2D mixtures with known parameters.

    * ``"five"``: five components with unequal weights (0.3, 0.25, 0.2, 0.15, 0.1) and
      unequal stds (0.15 to 0.4): a centre blob and four satellites at radius 1.5.
    * ``"eight"``: the :func:`eight_gaussians` distribution (radius 2, std 0.1).

    Args:
        kind: ``"five"`` or ``"eight"``.
        device: where the parameters live.
        dtype: floating dtype of the parameters.

    Returns:
        A :class:`GaussianMixture` with ``D = 2``.

    >>> mixture_2d().n_components
    5
    """
    _check_float_dtype(dtype)
    if kind == "five":
        means = torch.tensor([[0.0, 0.0], [1.5, 0.0], [0.0, 1.5], [-1.5, 0.0], [0.0, -1.5]], dtype=torch.float64)
        stds = torch.tensor([0.4, 0.15, 0.2, 0.25, 0.3], dtype=torch.float64)
        weights = torch.tensor([0.3, 0.25, 0.2, 0.15, 0.1], dtype=torch.float64)
    elif kind == "eight":
        angle = torch.arange(8, dtype=torch.float64) * (math.pi / 4)
        means = 2.0 * torch.stack((torch.cos(angle), torch.sin(angle)), dim=-1)
        stds = torch.full((8,), 0.1, dtype=torch.float64)
        weights = torch.full((8,), 1 / 8, dtype=torch.float64)
    else:
        raise ValueError(f"kind must be 'five' or 'eight', got {kind!r}")
    return GaussianMixture(means, stds, weights).to(device=device, dtype=dtype)


# ---------------------------------------------------------------------------------------------
# digit glyphs
_FONTS = (
    "DejaVuSans.ttf",
    "DejaVuSans-Bold.ttf",
    "DejaVuSans-Oblique.ttf",
    "DejaVuSerif.ttf",
    "DejaVuSerif-Bold.ttf",
    "DejaVuSansMono.ttf",
)
_RENDER_PX = 64  # glyphs are rasterized large, then area-downsampled to the requested size


def _render_digit(font_file: str, digit: int) -> torch.Tensor:
    """One digit in one font, as a float tensor in [0, 1] of shape (_RENDER_PX, _RENDER_PX)."""
    import matplotlib
    import numpy as np
    from matplotlib.ft2font import FT2Font

    font = FT2Font(os.path.join(matplotlib.get_data_path(), "fonts", "ttf", font_file))
    font.set_size(60, 72)  # 60 pt at 72 dpi: a 60 px em, digits about 44 px tall
    font.set_text(str(digit), 0.0)
    font.draw_glyphs_to_bitmap(antialiased=True)
    ink = torch.from_numpy(np.asarray(font.get_image()).astype(np.float32) / 255.0)
    h, w = ink.shape
    canvas = torch.zeros(_RENDER_PX, _RENDER_PX)
    # centre the ink's bounding box, so every template is aligned the same way
    top, left = (_RENDER_PX - h) // 2, (_RENDER_PX - w) // 2
    canvas[top : top + h, left : left + w] = ink
    return canvas


@functools.lru_cache(maxsize=8)
def _templates(size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """All (font, digit) templates at ``size`` px: images (F*10, size, size) in [0, 1], labels."""
    big = torch.stack([_render_digit(f, d) for f in _FONTS for d in range(10)])  # (F*10, 64, 64)
    small = torch.nn.functional.interpolate(big[:, None], size=(size, size), mode="area")[:, 0]
    # thin strokes lose contrast when averaged down; stretch each template to peak ink 1
    small = small / small.amax(dim=(-2, -1), keepdim=True)
    labels = torch.arange(10).repeat(len(_FONTS))
    return small, labels


def glyphs(
    n: int,
    *,
    size: int = 16,
    digits: tuple[int, ...] = tuple(range(10)),
    jitter: bool = True,
    generator: torch.Generator | None = None,
    device: torch.device | str | None = None,
    dtype: torch.dtype = torch.float32,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Digit images rendered from matplotlib's bundled DejaVu fonts, with random jitter.

    Each of the six bundled DejaVu faces (Sans, Sans Bold, Sans Oblique, Serif, Serif Bold,
    Sans Mono) is rasterized once per digit and cached; each sample picks a digit uniformly
    from ``digits`` and a face uniformly, then (if ``jitter``) applies a random affine map
    (rotation within 12 degrees, scale 0.85 to 1.1, shift within 1/16 of the frame) with
    bilinear resampling and a random stroke-thickness change (a partial blend towards a
    3 x 3 max- or min-filter, smaller for small images). Ink is +1 and background -1.

    Args:
        n: number of images.
        size: side length in pixels, 8 to 64 (the book uses 16 to 28).
        digits: which digits to draw from.
        jitter: apply the random affine map and thickness change.
        generator: CPU generator for reproducibility.
        device: where the result lives (default CPU).
        dtype: floating dtype of the images.

    Returns:
        ``(images, labels)``: images ``(n, 1, size, size)`` with values in ``[-1, 1]``,
        labels ``(n,)`` int64 (the digit drawn).

    >>> x, y = glyphs(4, generator=torch.Generator().manual_seed(0))
    >>> x.shape, y.dtype, bool(x.min() >= -1 and x.max() <= 1)
    (torch.Size([4, 1, 16, 16]), torch.int64, True)
    """
    _prologue(n, generator, dtype)
    if not isinstance(size, int) or isinstance(size, bool) or not 8 <= size <= 64:
        raise ValueError(f"size must be an int in [8, 64], got {size!r}")
    digits = tuple(digits)
    if not digits or any(not isinstance(d, int) or isinstance(d, bool) or not 0 <= d <= 9 for d in digits):
        raise ValueError(f"digits must be a non-empty tuple of ints in 0..9, got {digits!r}")
    templates, _ = _templates(size)  # (F*10, size, size)
    digit_pool = torch.tensor(digits, dtype=torch.int64)
    labels = digit_pool[torch.randint(len(digits), (n,), generator=generator)]
    face = torch.randint(len(_FONTS), (n,), generator=generator)
    img = templates[face * 10 + labels][:, None]  # (n, 1, size, size)
    if jitter and n > 0:
        angle = (torch.rand(n, generator=generator) * 2 - 1) * math.radians(12)
        scale = 0.85 + 0.25 * torch.rand(n, generator=generator)
        shift = (torch.rand(n, 2, generator=generator) * 2 - 1) * (2 / 16)  # in [-1, 1] coords
        # <0 thins, >0 thickens; a 3 x 3 filter is a bigger change on a smaller image
        thick = (torch.rand(n, generator=generator) - 0.4) * min(1.0, size / 28)
        # affine_grid maps output coords to input coords, so use the inverse of (rotate, scale)
        cos, sin = torch.cos(angle) / scale, torch.sin(angle) / scale
        theta = torch.stack(
            (torch.stack((cos, -sin, shift[:, 0]), -1), torch.stack((sin, cos, shift[:, 1]), -1)), 1
        )  # (n, 2, 3)
        grid = torch.nn.functional.affine_grid(theta, list(img.shape), align_corners=False)
        img = torch.nn.functional.grid_sample(img, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
        dilated = torch.nn.functional.max_pool2d(img, 3, stride=1, padding=1)
        eroded = -torch.nn.functional.max_pool2d(-img, 3, stride=1, padding=1)
        t = thick[:, None, None, None]
        img = torch.where(t >= 0, img + t * (dilated - img), img + (-t) * (eroded - img))
    img = (2.0 * img.clamp(0.0, 1.0) - 1.0).to(device=device, dtype=dtype)
    return img, labels.to(device=img.device)


# ---------------------------------------------------------------------------------------------
# a toy detection set

_SHAPE_KINDS = ("circle", "square", "triangle")
__all__ += ["shapes"]


def _shape_mask(kind: str, x0: float, y0: float, side: float, yc: torch.Tensor, xc: torch.Tensor) -> torch.Tensor:
    """Boolean ``(size, size)`` mask of the pixels whose centres ``(yc, xc)`` lie inside the shape."""
    if kind == "square":  # axis-aligned, [x0, x0 + side) x [y0, y0 + side)
        return (xc >= x0) & (xc < x0 + side) & (yc >= y0) & (yc < y0 + side)
    cx = x0 + side / 2
    if kind == "circle":  # inscribed in the square
        return (xc - cx) ** 2 + (yc - (y0 + side / 2)) ** 2 <= (side / 2) ** 2
    # isosceles triangle, apex (cx, y0) at the top, base from (x0, y0 + side) to (x0 + side, y0 + side)
    return (yc >= y0) & (yc <= y0 + side) & ((xc - cx).abs() <= (yc - y0) / 2)


def _box_iou(boxes: torch.Tensor, box: torch.Tensor) -> torch.Tensor:
    """IoU of each of ``boxes (k, 4)`` with ``box (4,)``, all xyxy."""
    lt, rb = torch.maximum(boxes[:, :2], box[:2]), torch.minimum(boxes[:, 2:], box[2:])
    inter = (rb - lt).clamp(min=0).prod(-1)
    area = (boxes[:, 2:] - boxes[:, :2]).prod(-1)
    return inter / (area + (box[2:] - box[:2]).prod() - inter)


def shapes(
    n: int,
    size: int = 64,
    max_objects: int = 4,
    classes: tuple[str, ...] = _SHAPE_KINDS,
    generator: torch.Generator | None = None,
) -> tuple[torch.Tensor, list[dict[str, torch.Tensor]]]:
    """A toy object-detection set: coloured circles, squares and triangles on a noisy background.

    Each image has a background of one random colour ``b`` (uniform in ``[0, 1]^3``). It gets
    ``k_target`` objects, ``k_target`` uniform in ``1..max_objects``; each object draws its class
    uniformly from ``classes``, a side of 10% to 40% of ``size`` and a position inside the image,
    and a placement whose tight box has IoU above 0.1 with an earlier object's box is redrawn (up
    to 20 times, then that object is dropped, so ``1 <= k <= k_target``; later objects may cover
    a little of earlier ones). An object is one flat colour that differs from ``b`` by at least
    0.4 in one random channel. Shapes are rasterized for all pixels at once: a pixel belongs to
    the shape when its centre ``(i + 0.5, j + 0.5)`` lies inside (square: the axis-aligned
    square; circle: the inscribed disc; triangle: apex at the top middle, base along the
    bottom). Last, every pixel gets independent uniform noise in ``[-0.05, 0.05]`` per channel,
    and the image is clipped to ``[0, 1]``. Random numbers are drawn on the CPU from
    ``generator``, so a seed fixes the data.

    Boxes are in pixel-edge coordinates: an object covering pixel columns ``j1..j2`` and rows
    ``i1..i2`` (inclusive) has box ``(j1, i1, j2 + 1, i2 + 1)``, the tight box of its drawn mask
    (before any later object covers part of it), so ``0 <= x1 < x2 <= size``.

    Args:
        n: number of images.
        size: image side in pixels, at least 16.
        max_objects: the most objects per image, at least 1.
        classes: a non-empty tuple of distinct names from ``("circle", "square", "triangle")``;
            ``labels`` index into it.
        generator: CPU generator for reproducibility.

    Returns:
        ``(images, targets)``: images ``(n, 3, size, size)`` float32 in ``[0, 1]``; targets a list
        of ``n`` dicts with ``boxes`` ``(k, 4)`` float32 xyxy and ``labels`` ``(k,)`` int64.

    >>> x, t = shapes(2, size=32, generator=torch.Generator().manual_seed(0))
    >>> x.shape, t[0]["boxes"].shape[1], t[0]["labels"].dtype
    (torch.Size([2, 3, 32, 32]), 4, torch.int64)
    """
    _check_n(n)
    _check_generator(generator)
    if not isinstance(size, int) or isinstance(size, bool) or size < 16:
        raise ValueError(f"size must be an int >= 16, got {size!r}")
    if not isinstance(max_objects, int) or isinstance(max_objects, bool) or max_objects < 1:
        raise ValueError(f"max_objects must be a positive int, got {max_objects!r}")
    classes = tuple(classes) if isinstance(classes, (tuple, list)) else classes
    if (not isinstance(classes, tuple) or not classes or len(set(classes)) != len(classes)
            or any(c not in _SHAPE_KINDS for c in classes)):
        raise ValueError(f"classes must be a non-empty tuple of distinct names from {_SHAPE_KINDS}, got {classes!r}")
    centres = torch.arange(size, dtype=torch.float64) + 0.5
    yc, xc = centres[:, None], centres[None, :]  # broadcast to (size, size)
    images = torch.empty(n, 3, size, size)
    targets: list[dict[str, torch.Tensor]] = []
    for b in range(n):
        bg = torch.rand(3, generator=generator)
        img = bg[:, None, None].expand(3, size, size).clone()
        k_target = int(torch.randint(1, max_objects + 1, (1,), generator=generator))
        boxes: list[torch.Tensor] = []
        labels: list[int] = []
        for obj in range(k_target):
            label = int(torch.randint(len(classes), (1,), generator=generator))
            for _ in range(100 if obj == 0 else 20):  # the first object always finds a place
                u = torch.rand(3, generator=generator, dtype=torch.float64).tolist()
                side = (0.1 + 0.3 * u[0]) * size
                x0, y0 = u[1] * (size - side), u[2] * (size - side)
                mask = _shape_mask(classes[label], x0, y0, side, yc, xc)
                rows, cols = mask.any(1).nonzero().flatten(), mask.any(0).nonzero().flatten()
                if rows.numel() == 0:
                    continue
                box = torch.tensor([cols[0], rows[0], cols[-1] + 1, rows[-1] + 1], dtype=torch.float32)
                if boxes and float(_box_iou(torch.stack(boxes), box).max()) > 0.1:
                    continue
                colour = torch.rand(3, generator=generator)
                ch = int(torch.randint(3, (1,), generator=generator))
                v = float(torch.rand(1, generator=generator))
                base = float(bg[ch])  # push one channel at least 0.4 away from the background
                colour[ch] = base + 0.4 + v * (0.6 - base) if base < 0.5 else v * (base - 0.4)
                img[:, mask] = colour[:, None]
                boxes.append(box)
                labels.append(label)
                break
        img += (torch.rand(3, size, size, generator=generator) * 2 - 1) * 0.05
        images[b] = img.clamp_(0.0, 1.0)
        targets.append({"boxes": torch.stack(boxes), "labels": torch.tensor(labels, dtype=torch.int64)})
    return images, targets


# ---------------------------------------------------------------------------------------------
# event streams (the online-action-detection chapter)
__all__ += ["event_streams"]


def _check_range(value: object, name: str) -> tuple[int, int]:
    ok = (isinstance(value, tuple) and len(value) == 2
          and all(isinstance(v, int) and not isinstance(v, bool) for v in value))
    if not ok or not 1 <= value[0] <= value[1]:
        raise ValueError(f"{name} must be a pair of ints (low, high) with 1 <= low <= high, got {value!r}")
    return value


def event_streams(
    n: int,
    length: int = 128,
    *,
    n_classes: int = 3,
    dim: int = 8,
    segment: tuple[int, int] = (2, 4),
    segments: tuple[int, int] = (2, 5),
    gap: tuple[int, int] = (4, 16),
    noise: float = 0.6,
    distractor: float = 0.5,
    generator: torch.Generator | None = None,
    device: torch.device | str | None = None,
    dtype: torch.dtype = torch.float32,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Streams of feature vectors in which actions start and stop, for online action detection.

    The world has ``n_classes`` *motifs*, fixed unit-norm-times-two vectors in ``R^dim`` (the
    same for every call, so train and test streams share them). Action ``c`` (labels
    ``1..n_classes``; ``0`` is background) alternates between motif ``c - 1`` and motif
    ``c mod n_classes``, starting with either, each held for a *segment* of
    ``segment = (low, high)`` frames; an action lasts ``segments`` such segments. So every motif
    belongs to two actions, and one frame (or one segment) cannot tell which action is on: that
    takes the last change of motif, which lies at most ``segment[1]`` frames back. Between
    actions, background gaps of ``gap`` frames are pure noise, except that with probability
    ``distractor`` a gap holds one lone segment of a random motif, labelled background; it starts
    at least one frame after the previous action and may end exactly where the next action
    begins (cut short if the gap is too short for it). A stream opens a few frames into its first
    gap's timeline, possibly already inside the first action (the part before frame 0 is cut
    off). Every frame gets Gaussian noise of standard deviation ``noise`` per coordinate. With
    ``n_classes=2`` the two actions use the same two motifs and have the same distribution.

    Args:
        n: number of streams.
        length: frames per stream.
        n_classes: number of action classes (2 to ``dim``).
        dim: feature dimension.
        segment, segments, gap: ``(low, high)`` inclusive ranges of a segment's length in
            frames, of the number of segments in an action, and of a gap's length.
        noise: per-coordinate noise standard deviation (>= 0).
        distractor: probability that a gap holds a lone motif segment.
        generator: CPU generator for reproducibility.
        device, dtype: of the features (labels are int64 on ``device``).

    Returns:
        ``features (n, length, dim)`` and ``labels (n, length)`` with values in ``0..n_classes``.

    >>> x, y = event_streams(2, 64, generator=torch.Generator().manual_seed(0))
    >>> tuple(x.shape), tuple(y.shape), int(y.max()) <= 3
    ((2, 64, 8), (2, 64), True)
    """
    _prologue(n, generator, dtype)
    for name, v in (("length", length), ("n_classes", n_classes), ("dim", dim)):
        if not isinstance(v, int) or isinstance(v, bool) or v < 1:
            raise ValueError(f"{name} must be a positive int, got {v!r}")
    if not 2 <= n_classes <= dim:
        raise ValueError(f"n_classes must be between 2 and dim={dim}, got {n_classes}")
    seg, nseg, gp = _check_range(segment, "segment"), _check_range(segments, "segments"), _check_range(gap, "gap")
    if not isinstance(noise, (int, float)) or isinstance(noise, bool) or noise < 0:
        raise ValueError(f"noise must be a non-negative number, got {noise!r}")
    if not isinstance(distractor, (int, float)) or not 0 <= distractor <= 1:
        raise ValueError(f"distractor must be a probability in [0, 1], got {distractor!r}")
    # fixed motifs: orthonormal directions (from a fixed seed) scaled to norm 2
    q, _ = torch.linalg.qr(torch.randn(dim, dim, generator=torch.Generator().manual_seed(20210817)))
    motifs = 2.0 * q[:, :n_classes].T  # (n_classes, dim)

    def draw(r: tuple[int, int]) -> int:
        return int(torch.randint(r[0], r[1] + 1, (1,), generator=generator))

    motif_id = torch.full((n, length), -1, dtype=torch.int64)  # -1: no motif (pure noise)
    labels = torch.zeros(n, length, dtype=torch.int64)
    for i in range(n):
        t = -draw(gp) // 2  # streams may open mid-gap
        while t < length:
            g = draw(gp)
            if float(torch.rand(1, generator=generator)) < distractor:
                s = draw(seg)
                start = t + draw((1, max(1, g - s)))
                lo, hi = max(start, 0), min(start + s, length, t + g)
                if lo < hi:
                    motif_id[i, lo:hi] = int(torch.randint(n_classes, (1,), generator=generator))
            t += g
            c = int(torch.randint(n_classes, (1,), generator=generator))  # action c + 1
            pair = (c, (c + 1) % n_classes)
            which = int(torch.randint(2, (1,), generator=generator))
            for _ in range(draw(nseg)):
                s = draw(seg)
                lo, hi = max(t, 0), min(t + s, length)
                if lo < hi:
                    motif_id[i, lo:hi] = pair[which]
                    labels[i, lo:hi] = c + 1
                which, t = 1 - which, t + s
    feats = torch.randn(n, length, dim, generator=generator) * noise
    on = motif_id >= 0
    feats[on] += motifs[motif_id[on]]
    return _finish(feats, device, dtype), labels.to(feats.device if device is None else device)


# ---------------------------------------------------------------------------------------------
# augmentations for self-supervised learning (chapter ssl/contrastive)


def augment(
    images: torch.Tensor,
    generator: torch.Generator | None = None,
    *,
    crop_scale: tuple[float, float] = (0.6, 1.0),
    max_rotation: float = 15.0,
    jitter: float = 0.2,
    noise: float = 0.05,
) -> torch.Tensor:
    """A random view of each image: crop-and-resize, small rotation, brightness/contrast, noise.

    Each sample gets its own randomness, drawn on the CPU from ``generator`` (so a seed gives the
    same views on every device): a square crop covering a fraction ``a ~ U(crop_scale)`` of the
    image area (side ``sqrt(a)``, placed uniformly inside the frame) resized back to ``H x W``
    and rotated by an angle uniform in ``[-max_rotation, max_rotation]`` degrees (one bilinear
    resampling, pixels from outside the frame repeat the border, which for glyphs is
    background); then contrast ``c ~ U(1 - jitter, 1 + jitter)`` about each image's mean and
    brightness ``b ~ U(-jitter, jitter)`` (``x <- mean + c (x - mean) + b``, in the units of the
    images, e.g. glyphs in ``[-1, 1]``); then Gaussian noise of standard deviation ``noise``.
    Values are not clamped. Two calls on the same batch give two views, the positive pair of a
    contrastive loss. Implements the view sampler ``t ~ T`` of (ctr-views).

    Args:
        images: ``(B, C, H, W)`` floating tensor (``C`` is 1 for glyphs).
        generator: CPU generator for reproducibility.
        crop_scale: ``(low, high)`` range of the crop's area fraction, ``0 < low <= high <= 1``.
        max_rotation: largest rotation in degrees, ``>= 0``.
        jitter: brightness/contrast strength, in ``[0, 1)``.
        noise: standard deviation of the additive noise, ``>= 0``.

    Returns:
        ``(B, C, H, W)``, same device and dtype as ``images``.

    >>> x, _ = glyphs(2, generator=torch.Generator().manual_seed(0))
    >>> v = augment(x, torch.Generator().manual_seed(1))
    >>> v.shape, v.dtype, bool((v - x).abs().mean() > 0.01)
    (torch.Size([2, 1, 16, 16]), torch.float32, True)
    """
    if not isinstance(images, torch.Tensor):
        raise TypeError(f"images must be a torch.Tensor, got {type(images).__name__}")
    if images.dim() != 4:
        raise ValueError(f"images must be (B, C, H, W), got shape {tuple(images.shape)}")
    if not images.dtype.is_floating_point:
        raise TypeError(f"images must be floating point, got {images.dtype}")
    _check_generator(generator)
    try:
        lo, hi = (float(v) for v in crop_scale)
    except (TypeError, ValueError):
        raise ValueError(f"crop_scale must be a pair (low, high), got {crop_scale!r}") from None
    if not 0.0 < lo <= hi <= 1.0:
        raise ValueError(f"crop_scale must satisfy 0 < low <= high <= 1, got {crop_scale!r}")
    for value, name in ((max_rotation, "max_rotation"), (noise, "noise")):
        if not isinstance(value, (int, float)) or isinstance(value, bool) or not value >= 0:
            raise ValueError(f"{name} must be a non-negative number, got {value!r}")
    if not isinstance(jitter, (int, float)) or isinstance(jitter, bool) or not 0 <= jitter < 1:
        raise ValueError(f"jitter must be a number in [0, 1), got {jitter!r}")
    b, c, h, w = images.shape
    area = lo + (hi - lo) * torch.rand(b, generator=generator)
    side = area.sqrt()  # crop side as a fraction of the frame
    centre = (torch.rand(b, 2, generator=generator) * 2 - 1) * (1 - side)[:, None]  # crop inside frame
    angle = (torch.rand(b, generator=generator) * 2 - 1) * math.radians(float(max_rotation))
    contrast = 1 + (torch.rand(b, generator=generator) * 2 - 1) * float(jitter)
    bright = (torch.rand(b, generator=generator) * 2 - 1) * float(jitter)
    eps = torch.randn(b, c, h, w, generator=generator) * float(noise)
    # affine_grid maps output coords u in [-1, 1]^2 to input coords: centre + side * R(angle) u
    cos, sin = torch.cos(angle) * side, torch.sin(angle) * side
    theta = torch.stack(
        (torch.stack((cos, -sin, centre[:, 0]), -1), torch.stack((sin, cos, centre[:, 1]), -1)), 1
    )  # (B, 2, 3)
    work = images.float()
    grid = torch.nn.functional.affine_grid(theta.to(work.device), [b, c, h, w], align_corners=False)
    out = torch.nn.functional.grid_sample(work, grid, mode="bilinear", padding_mode="border", align_corners=False)
    mean = out.mean(dim=(1, 2, 3), keepdim=True)
    shape = (b, 1, 1, 1)
    out = mean + contrast.to(work.device).view(shape) * (out - mean) + bright.to(work.device).view(shape)
    out = out + eps.to(work.device)
    return out.to(dtype=images.dtype)


# ---------------------------------------------------------------------------------------------
# captioned shapes (the image-text set of the self-supervised and multimodal part)
from dataclasses import dataclass  # noqa: E402

__all__ += ["CAPTION_COLOURS", "CAPTION_SHAPES", "CAPTION_VOCAB", "CaptionedShapes", "all_captions", "captioned_shapes",
            "decode_caption"]

#: Colour words of :func:`captioned_shapes` and their RGB values in ``[0, 1]``.
CAPTION_COLOURS: dict[str, tuple[float, float, float]] = {
    "red": (0.90, 0.15, 0.15),
    "green": (0.15, 0.75, 0.20),
    "blue": (0.20, 0.35, 0.95),
    "yellow": (0.95, 0.85, 0.10),
}
#: Shape words of :func:`captioned_shapes` (the kinds that :func:`shapes` draws).
CAPTION_SHAPES: tuple[str, ...] = ("circle", "square", "triangle")
#: The caption vocabulary; a token is an index into it. ``<pad>`` is 0, ``<bos>`` 1, ``<eos>`` 2.
CAPTION_VOCAB: tuple[str, ...] = ("<pad>", "<bos>", "<eos>", "a", "left", "of",
                                  *CAPTION_COLOURS, *CAPTION_SHAPES)


@dataclass(frozen=True)
class CaptionedShapes:
    """What :func:`captioned_shapes` returns.

    Attributes:
        images: ``(n, 3, size, size)`` in ``[0, 1]``.
        tokens: ``(n, L)`` int64 captions, ``<bos> ... <eos>`` then ``<pad>`` (0) up to the longest.
        lengths: ``(n,)`` int64, tokens per caption including ``<bos>`` and ``<eos>``.
        colours, kinds: ``(n, max_shapes)`` int64 indices into ``CAPTION_COLOURS`` (in its order)
            and ``CAPTION_SHAPES``, the objects from left to right; ``-1`` past ``counts``.
        counts: ``(n,)`` int64, the number of objects in each image.
    """

    images: torch.Tensor
    tokens: torch.Tensor
    lengths: torch.Tensor
    colours: torch.Tensor
    kinds: torch.Tensor
    counts: torch.Tensor

    def __len__(self) -> int:
        return self.images.shape[0]


def _caption_ids(colours: list[int], kinds: list[int]) -> list[int]:
    ids = CAPTION_VOCAB.index
    colour_names = list(CAPTION_COLOURS)
    out = [ids("<bos>")]
    for j, (c, k) in enumerate(zip(colours, kinds)):
        if j:
            out += [ids("left"), ids("of")]
        out += [ids("a"), ids(colour_names[c]), ids(CAPTION_SHAPES[k])]
    return out + [ids("<eos>")]


def captioned_shapes(
    n: int,
    *,
    size: int = 32,
    max_shapes: int = 2,
    min_shapes: int = 1,
    generator: torch.Generator | None = None,
    device: torch.device | str | None = None,
    dtype: torch.dtype = torch.float32,
) -> CaptionedShapes:
    """Small images of one to ``max_shapes`` coloured shapes, each with a templated caption.

    An image is split into ``k`` equal vertical bands (``k`` uniform in ``min_shapes..max_shapes``),
    and band ``j`` holds object ``j``: a kind uniform over ``CAPTION_SHAPES``, a colour uniform
    over ``CAPTION_COLOURS``, a side of 55% to 90% of ``min(size / k, size / 2)``, placed
    uniformly inside its band and the image. The background is a uniform grey level in
    ``[0.05, 0.35]``; every pixel gets independent uniform noise in ``[-0.05, 0.05]`` per channel and
    the image is clipped to ``[0, 1]``. Shapes are rasterized as in :func:`shapes`. The caption
    names the objects from left to right, for example ``"a red circle left of a blue square"``,
    tokenized by ``CAPTION_VOCAB`` with ``<bos>`` and ``<eos>``. Random numbers are drawn on the
    CPU from ``generator``, so a seed fixes the data.

    Args:
        n: number of images.
        size: image side in pixels, at least 16.
        max_shapes, min_shapes: the most and fewest objects per image, ``1 <= min <= max <= 3``.
        generator: CPU generator for reproducibility.
        device, dtype: of the images (the integer fields are int64 on ``device``).

    Returns:
        A :class:`CaptionedShapes`.

    >>> d = captioned_shapes(3, size=16, max_shapes=2, generator=torch.Generator().manual_seed(0))
    >>> tuple(d.images.shape), d.tokens.dtype
    ((3, 3, 16, 16), torch.int64)
    >>> decode_caption(d.tokens[0]) in {"a " + c + " " + s for c in CAPTION_COLOURS for s in CAPTION_SHAPES} or "left of" in decode_caption(d.tokens[0])
    True
    """
    _check_n(n)
    _check_generator(generator)
    _check_float_dtype(dtype)
    if not isinstance(size, int) or isinstance(size, bool) or size < 16:
        raise ValueError(f"size must be an int >= 16, got {size!r}")
    for name, v in (("min_shapes", min_shapes), ("max_shapes", max_shapes)):
        if not isinstance(v, int) or isinstance(v, bool) or not 1 <= v <= 3:
            raise ValueError(f"{name} must be an int in 1..3, got {v!r}")
    if min_shapes > max_shapes:
        raise ValueError(f"min_shapes must be <= max_shapes, got {min_shapes} > {max_shapes}")
    centres = torch.arange(size, dtype=torch.float64) + 0.5
    yc, xc = centres[:, None], centres[None, :]
    palette = torch.tensor(list(CAPTION_COLOURS.values()))
    images = torch.empty(n, 3, size, size)
    colours = torch.full((n, max_shapes), -1, dtype=torch.int64)
    kinds = torch.full((n, max_shapes), -1, dtype=torch.int64)
    counts = torch.empty(n, dtype=torch.int64)
    captions: list[list[int]] = []
    for i in range(n):
        k = int(torch.randint(min_shapes, max_shapes + 1, (1,), generator=generator))
        grey = 0.05 + 0.3 * float(torch.rand(1, generator=generator))
        img = torch.full((3, size, size), grey)
        band = size / k
        for j in range(k):
            kind = int(torch.randint(len(CAPTION_SHAPES), (1,), generator=generator))
            colour = int(torch.randint(len(CAPTION_COLOURS), (1,), generator=generator))
            u = torch.rand(3, generator=generator, dtype=torch.float64).tolist()
            side = (0.55 + 0.35 * u[0]) * min(band, size / 2)
            x0 = j * band + u[1] * (band - side)
            y0 = u[2] * (size - side)
            mask = _shape_mask(CAPTION_SHAPES[kind], x0, y0, side, yc, xc)
            img[:, mask] = palette[colour][:, None]
            colours[i, j], kinds[i, j] = colour, kind
        counts[i] = k
        img += (torch.rand(3, size, size, generator=generator) * 2 - 1) * 0.05
        images[i] = img.clamp_(0.0, 1.0)
        captions.append(_caption_ids(colours[i, :k].tolist(), kinds[i, :k].tolist()))
    longest = max(len(c) for c in captions)
    tokens = torch.zeros(n, longest, dtype=torch.int64)
    for i, c in enumerate(captions):
        tokens[i, : len(c)] = torch.tensor(c)
    lengths = torch.tensor([len(c) for c in captions], dtype=torch.int64)
    images = _finish(images, device, dtype)
    dev = images.device
    return CaptionedShapes(images, tokens.to(dev), lengths.to(dev), colours.to(dev), kinds.to(dev), counts.to(dev))


def all_captions(
    max_shapes: int = 2, *, length: int | None = None, device: torch.device | str | None = None
) -> torch.Tensor:
    """Every caption :func:`captioned_shapes` can write with up to ``max_shapes`` objects, as
    token ids ``(C, length)``, right-padded with ``<pad>`` (id 0).

    The order: all one-object captions, then all two-object captions, and so on; within ``k``
    objects, the ``k``-tuples of (colour, shape) pairs in lexicographic order, a pair ordered
    colour first (in the order of ``CAPTION_COLOURS``, then ``CAPTION_SHAPES``). With ``P`` pairs
    there are ``C = P + P^2 + ... + P^max_shapes`` captions (156 for the default 4 colours x 3
    shapes and ``max_shapes=2``). Zero-shot classification and retrieval over the whole caption
    space score an image against these rows.

    Args:
        max_shapes: largest number of objects in a caption, ``>= 1``.
        length: number of columns; ``None`` gives the longest caption's length, ``5 + 5 (k - 1)``
            tokens for ``k = max_shapes``. Must be at least that.
        device: where the tensor goes.

    >>> caps = all_captions()
    >>> tuple(caps.shape), decode_caption(caps[0]), decode_caption(caps[-1])
    ((156, 10), 'a red circle', 'a yellow triangle left of a yellow triangle')
    """
    if not isinstance(max_shapes, int) or isinstance(max_shapes, bool) or max_shapes < 1:
        raise ValueError(f"max_shapes must be an int >= 1, got {max_shapes!r}")
    longest = 5 * max_shapes
    if length is None:
        length = longest
    elif not isinstance(length, int) or isinstance(length, bool) or length < longest:
        raise ValueError(f"length must be an int >= {longest} (the longest caption), got {length!r}")
    import itertools

    pairs = [(c, k) for c in range(len(CAPTION_COLOURS)) for k in range(len(CAPTION_SHAPES))]
    rows = []
    for k in range(1, max_shapes + 1):
        for objects in itertools.product(pairs, repeat=k):
            ids = _caption_ids([c for c, _ in objects], [s for _, s in objects])
            rows.append(ids + [0] * (length - len(ids)))
    return torch.tensor(rows, dtype=torch.int64, device=device)


def decode_caption(tokens: torch.Tensor) -> str:
    """The words of one caption ``(L,)``, without ``<bos>``, ``<eos>`` and ``<pad>``.

    >>> decode_caption(torch.tensor([1, 3, 6, 10, 2, 0]))
    'a red circle'
    """
    if not isinstance(tokens, torch.Tensor) or tokens.dim() != 1 or tokens.is_floating_point():
        raise TypeError("tokens must be a 1-D integer tensor (one caption)")
    if ((tokens < 0) | (tokens >= len(CAPTION_VOCAB))).any():
        raise ValueError(f"tokens must lie in [0, {len(CAPTION_VOCAB) - 1}]")
    return " ".join(CAPTION_VOCAB[t] for t in tokens.tolist() if t > 2)


# ---------------------------------------------------------------------------------------------
# Correlated Gaussians with known mutual information (chapter ssl/infonce)
def correlated_gaussians(
    n: int,
    rho: float,
    dim: int = 1,
    generator: torch.Generator | None = None,
    device: torch.device | str | None = None,
    dtype: torch.dtype = torch.float32,
) -> tuple[torch.Tensor, torch.Tensor]:
    r"""``n`` pairs ``(x, y)`` of ``dim``-vectors, standard Gaussian, coordinate ``k`` of ``y``
    correlated with coordinate ``k`` of ``x`` by ``rho`` and independent of the others.

    Drawn as :math:`x \sim \mathcal N(0, I)`, :math:`y = \rho x + \sqrt{1 - \rho^2}\,\varepsilon`
    with :math:`\varepsilon \sim \mathcal N(0, I)`, so :math:`y \sim \mathcal N(0, I)` too and
    :math:`I(x; y) = -\frac{d}{2}\log(1-\rho^2)` (``minilib.contrastive.gaussian_mi``).
    Implements (infonce-gaussian-pairs).

    Args:
        n: number of pairs.
        rho: correlation of each coordinate pair, ``|rho| < 1``.
        dim: number of coordinates ``d``.
        generator, device, dtype: as everywhere in this module (draws on the CPU, then moves).

    Returns:
        ``(x, y)``, each ``(n, dim)``.

    >>> x, y = correlated_gaussians(4, 0.9, dim=2, generator=torch.Generator().manual_seed(0))
    >>> tuple(x.shape), tuple(y.shape)
    ((4, 2), (4, 2))
    """
    _prologue(n, generator, dtype)
    if not isinstance(dim, int) or isinstance(dim, bool) or dim < 1:
        raise ValueError(f"dim must be a positive int, got {dim!r}")
    if not isinstance(rho, (int, float)) or isinstance(rho, bool):
        raise TypeError(f"rho must be a float, got {type(rho).__name__}")
    if not abs(rho) < 1:
        raise ValueError(f"rho must satisfy |rho| < 1, got {rho!r}")
    x = torch.randn(n, dim, generator=generator, dtype=torch.float64)
    eps = torch.randn(n, dim, generator=generator, dtype=torch.float64)
    y = rho * x + math.sqrt(1.0 - rho * rho) * eps
    return _finish(x, device, dtype), _finish(y, device, dtype)
