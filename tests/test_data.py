"""Tests for minilib.data: shapes, scale, determinism, the mixture's density, glyphs."""

from __future__ import annotations

import math

import pytest
import torch

from minilib.data import (
    GaussianMixture,
    checkerboard,
    eight_gaussians,
    glyphs,
    mixture_2d,
    swiss_roll,
    two_moons,
)

SETS = [two_moons, eight_gaussians, checkerboard, swiss_roll]

torch.set_num_threads(1)  # tiny ops: on a shared CPU a second thread only adds overhead


@pytest.mark.parametrize("fn", SETS)
def test_2d_sets_shape_scale_determinism(fn) -> None:
    x = fn(4000, generator=torch.Generator().manual_seed(1))
    assert x.shape == (4000, 2) and x.dtype == torch.float32
    # the documented scale: centred near 0, each coordinate's std in [0.5, 1.5]
    assert x.mean(0).abs().max() < 0.2
    std = x.std(0)
    assert ((std > 0.5) & (std < 1.5)).all(), std
    y = fn(4000, generator=torch.Generator().manual_seed(1))
    assert torch.equal(x, y)
    z = fn(4000, generator=torch.Generator().manual_seed(2))
    assert not torch.equal(x, z)
    assert fn(3, dtype=torch.float64).dtype == torch.float64
    assert fn(0).shape == (0, 2)


@pytest.mark.parametrize("fn", SETS)
def test_2d_sets_bad_input(fn) -> None:
    with pytest.raises(ValueError, match="n must be non-negative"):
        fn(-1)
    with pytest.raises(TypeError, match="n must be an int"):
        fn(2.5)
    with pytest.raises(TypeError, match="dtype must be a floating"):
        fn(3, dtype=torch.int64)
    with pytest.raises(TypeError, match="generator"):
        fn(3, generator=0)


def test_eight_gaussians_std_matches_formula() -> None:
    x = eight_gaussians(40000, radius=2.0, std=0.1, generator=torch.Generator().manual_seed(0))
    expected = math.sqrt(2.0**2 / 2 + 0.1**2)
    assert torch.allclose(x.std(0), torch.full((2,), expected), atol=0.03)
    # every point lies within a few stds of the circle of radius 2
    r = x.norm(dim=1)
    assert ((r - 2.0).abs() < 0.6).all()


def test_checkerboard_only_dark_squares() -> None:
    x = checkerboard(5000, generator=torch.Generator().manual_seed(0)).double()
    assert (x.abs() <= 2).all()
    cells = torch.floor(x).long()
    assert ((cells[:, 0] + cells[:, 1]) % 2 == 0).all()
    # uniform over the 8 dark squares: each gets about 1/8
    counts = torch.unique(cells, dim=0, return_counts=True)[1]
    assert len(counts) == 8 and (counts.float() / 5000 - 1 / 8).abs().max() < 0.03


def test_two_moons_noiseless_lies_on_circles() -> None:
    x = two_moons(1000, noise=0.0, generator=torch.Generator().manual_seed(0)).double()
    p = x * 0.7 + torch.tensor([0.5, 0.25], dtype=torch.float64)
    on_upper = (p.norm(dim=1) - 1).abs() < 1e-5
    on_lower = ((p - torch.tensor([1.0, 0.5], dtype=torch.float64)).norm(dim=1) - 1).abs() < 1e-5
    assert (on_upper | on_lower).all()
    assert on_upper.sum() == 500


def _brute_mixture_log_prob(gm: GaussianMixture, x: torch.Tensor) -> torch.Tensor:
    """Sum of weighted torch.distributions densities, in float64 (no log-sum-exp)."""
    total = torch.zeros(x.shape[0], dtype=torch.float64)
    for mu, s, w in zip(gm.means.double(), gm.stds.double(), gm.weights.double()):
        comp = torch.distributions.MultivariateNormal(mu, covariance_matrix=s**2 * torch.eye(gm.dim, dtype=torch.float64))
        total += w * comp.log_prob(x.double()).exp()
    return total.log()


def test_mixture_log_prob_vs_torch_distributions() -> None:
    gm = mixture_2d("five", dtype=torch.float64)
    x = torch.randn(50, 2, generator=torch.Generator().manual_seed(0), dtype=torch.float64) * 2
    assert torch.allclose(gm.log_prob(x), _brute_mixture_log_prob(gm, x), atol=1e-10)


def test_mixture_log_prob_stable_far_away() -> None:
    gm = mixture_2d("eight")
    x = torch.tensor([[60.0, -40.0]])
    lp = gm.log_prob(x)
    assert torch.isfinite(lp).all()
    # far away, the nearest-in-distance component dominates: compare with it in float64
    d = gm.means.double() - x.double()
    ref = torch.logsumexp(torch.log(gm.weights.double()) - math.log(2 * math.pi * 0.01) - 0.5 * (d**2).sum(1) / 0.01, 0)
    assert abs(float(lp) - float(ref)) / abs(float(ref)) < 1e-5


def test_mixture_sample_moments_and_labels() -> None:
    gm = mixture_2d("five", dtype=torch.float64)
    x, labels = gm.sample(40000, generator=torch.Generator().manual_seed(0))
    assert x.shape == (40000, 2) and labels.shape == (40000,) and labels.dtype == torch.int64
    freq = torch.bincount(labels, minlength=5).double() / 40000
    assert (freq - gm.weights).abs().max() < 0.01
    mean = (gm.weights[:, None] * gm.means).sum(0)
    assert (x.mean(0) - mean).abs().max() < 0.02
    # each component's samples have its mean and std
    for k in range(5):
        xk = x[labels == k]
        assert (xk.mean(0) - gm.means[k]).abs().max() < 0.03
        assert abs(float(xk.std(0).mean()) - float(gm.stds[k])) < 0.02


def test_mixture_density_integrates_to_one() -> None:
    gm = mixture_2d("five", dtype=torch.float64)
    g = torch.linspace(-4, 4, 321, dtype=torch.float64)
    xx, yy = torch.meshgrid(g, g, indexing="ij")
    p = gm.log_prob(torch.stack((xx.flatten(), yy.flatten()), 1)).exp()
    mass = float(p.sum()) * float(g[1] - g[0]) ** 2
    assert abs(mass - 1) < 1e-3


def test_mixture_bad_input() -> None:
    m, s, w = torch.zeros(2, 2), torch.ones(2), torch.tensor([0.5, 0.5])
    with pytest.raises(ValueError, match="weights must sum to 1"):
        GaussianMixture(m, s, torch.tensor([0.5, 0.6]))
    with pytest.raises(ValueError, match="weights must be non-negative"):
        GaussianMixture(m, s, torch.tensor([1.5, -0.5]))
    with pytest.raises(ValueError, match="stds must all be positive"):
        GaussianMixture(m, torch.tensor([1.0, 0.0]), w)
    with pytest.raises(ValueError, match="stds must have shape"):
        GaussianMixture(m, torch.ones(3), w)
    with pytest.raises(ValueError, match="means must have shape"):
        GaussianMixture(torch.zeros(2), s, w)
    with pytest.raises(TypeError, match="floating"):
        GaussianMixture(torch.zeros(2, 2, dtype=torch.long), s, w)
    gm = GaussianMixture(m, s, w)
    with pytest.raises(ValueError, match="x must have shape"):
        gm.log_prob(torch.zeros(3, 3))
    with pytest.raises(ValueError, match="kind"):
        mixture_2d("nine")


def test_glyphs_shapes_range_determinism() -> None:
    x, y = glyphs(64, generator=torch.Generator().manual_seed(0))
    assert x.shape == (64, 1, 16, 16) and x.dtype == torch.float32 and y.dtype == torch.int64
    assert x.min() >= -1 and x.max() <= 1
    assert ((y >= 0) & (y <= 9)).all()
    x2, y2 = glyphs(64, generator=torch.Generator().manual_seed(0))
    assert torch.equal(x, x2) and torch.equal(y, y2)
    x3, _ = glyphs(8, size=28, digits=(3, 7), generator=torch.Generator().manual_seed(0))
    assert x3.shape == (8, 1, 28, 28)


def test_glyphs_digits_differ_and_have_ink() -> None:
    x, y = glyphs(2000, jitter=False, generator=torch.Generator().manual_seed(0))
    ink = (x > 0).float().mean(dim=(1, 2, 3))
    assert (ink > 0.03).all() and (ink < 0.6).all()
    # background (the corners) is -1 without jitter
    assert (x[:, 0, 0, 0] == -1).all()
    # class means are distinct: a nearest-class-mean classifier is far above chance (10%)
    means = torch.stack([x[y == d].mean(0) for d in range(10)])
    pred = ((x[:, None] - means[None]) ** 2).sum(dim=(2, 3, 4)).argmin(1)
    assert (pred == y).float().mean() > 0.6


def test_glyphs_jitter_changes_images() -> None:
    plain, _ = glyphs(100, jitter=False, generator=torch.Generator().manual_seed(0))
    jit, _ = glyphs(100, jitter=True, generator=torch.Generator().manual_seed(0))
    assert not torch.equal(plain, jit)


def test_glyphs_bad_input() -> None:
    with pytest.raises(ValueError, match="size must be an int in"):
        glyphs(4, size=4)
    with pytest.raises(ValueError, match="digits"):
        glyphs(4, digits=(10,))
    with pytest.raises(ValueError, match="n must be non-negative"):
        glyphs(-2)


# ---------------------------------------------------------------------------------------------
# shapes: a toy detection set (appended with minilib.data.shapes)

from minilib.data import shapes  # noqa: E402


def _foreground(img: torch.Tensor, background: torch.Tensor) -> torch.Tensor:
    """Pixels farther than 0.2 from the background model in some channel.

    The model is one colour plus noise within 0.05, and objects differ by at least 0.4 in one
    channel, so 0.2 separates the two; the background colour is estimated from the pixels
    outside the boxes (median), so a box that is too small or too large shows up.
    """
    b = img[:, background].median(dim=1).values  # (3,)
    return (img - b[:, None, None]).abs().amax(0) > 0.2


def test_shapes_determinism_shapes_and_dtypes() -> None:
    x, t = shapes(20, size=48, max_objects=3, generator=torch.Generator().manual_seed(0))
    y, u = shapes(20, size=48, max_objects=3, generator=torch.Generator().manual_seed(0))
    z, _ = shapes(20, size=48, max_objects=3, generator=torch.Generator().manual_seed(1))
    assert torch.equal(x, y) and not torch.equal(x, z)
    assert all(torch.equal(a["boxes"], b["boxes"]) and torch.equal(a["labels"], b["labels"]) for a, b in zip(t, u))
    assert x.shape == (20, 3, 48, 48) and x.dtype == torch.float32 and len(t) == 20
    assert x.min() >= 0 and x.max() <= 1
    counts = set()
    for d in t:
        k = d["labels"].shape[0]
        counts.add(k)
        assert 1 <= k <= 3 and d["boxes"].shape == (k, 4)
        assert d["boxes"].dtype == torch.float32 and d["labels"].dtype == torch.int64
        bx = d["boxes"]
        assert (bx[:, 0] >= 0).all() and (bx[:, 1] >= 0).all() and (bx[:, 2] <= 48).all() and (bx[:, 3] <= 48).all()
        assert (bx[:, 2] > bx[:, 0]).all() and (bx[:, 3] > bx[:, 1]).all()
        assert torch.equal(bx, bx.round())  # pixel-edge coordinates
        wh = bx[:, 2:] - bx[:, :2]  # sides of 10-40% of the image (a pixel either way from rasterizing)
        assert (wh.amax(1) >= 0.1 * 48 - 1).all() and (wh.amax(1) <= 0.4 * 48 + 1).all()
    assert counts == {1, 2, 3}
    xs, ts = shapes(0)
    assert xs.shape == (0, 3, 64, 64) and ts == []


def test_shapes_single_object_box_is_the_tight_box_of_its_pixels() -> None:
    x, t = shapes(60, size=40, max_objects=1, generator=torch.Generator().manual_seed(2))
    for img, d in zip(x, t):
        x1, y1, x2, y2 = (int(v) for v in d["boxes"][0])
        inside = torch.zeros(40, 40, dtype=torch.bool)
        inside[y1:y2, x1:x2] = True
        fg = _foreground(img, ~inside)
        rows, cols = fg.any(1).nonzero().flatten(), fg.any(0).nonzero().flatten()
        assert (int(cols[0]), int(rows[0]), int(cols[-1]) + 1, int(rows[-1]) + 1) == (x1, y1, x2, y2)


def test_shapes_multi_object_boxes_cover_and_touch_the_foreground() -> None:
    x, t = shapes(60, size=64, max_objects=4, generator=torch.Generator().manual_seed(3))
    checked = 0
    for img, d in zip(x, t):
        union = torch.zeros(64, 64, dtype=torch.bool)
        for x1, y1, x2, y2 in d["boxes"].int().tolist():
            union[y1:y2, x1:x2] = True
        if (~union).sum() < 200:
            continue
        fg = _foreground(img, ~union)
        assert not (fg & ~union).any()  # every object pixel lies in some box
        for x1, y1, x2, y2 in d["boxes"].int().tolist():  # each box edge touches object pixels (tight)
            assert fg[y1, x1:x2].any() and fg[y2 - 1, x1:x2].any()
            assert fg[y1:y2, x1].any() and fg[y1:y2, x2 - 1].any()
        checked += 1
    assert checked > 40
    # placements overlap little: IoU <= 0.1 between the boxes of one image
    for d in t:
        b = d["boxes"]
        for i in range(len(b)):
            for j in range(i):
                lt, rb = torch.maximum(b[i, :2], b[j, :2]), torch.minimum(b[i, 2:], b[j, 2:])
                inter = float((rb - lt).clamp(min=0).prod())
                union_area = float((b[i, 2:] - b[i, :2]).prod() + (b[j, 2:] - b[j, :2]).prod()) - inter
                assert inter / union_area <= 0.1 + 1e-6


def test_shapes_class_balance_and_subset() -> None:
    _, t = shapes(600, size=32, generator=torch.Generator().manual_seed(4))
    labels = torch.cat([d["labels"] for d in t])
    frac = torch.bincount(labels, minlength=3).float() / labels.numel()
    assert labels.numel() > 1000 and ((frac > 0.28) & (frac < 0.39)).all(), frac
    _, t = shapes(50, size=32, classes=("triangle",), generator=torch.Generator().manual_seed(5))
    assert all((d["labels"] == 0).all() for d in t)


def test_shapes_bad_input() -> None:
    with pytest.raises(ValueError, match="size must be an int >= 16"):
        shapes(2, size=8)
    with pytest.raises(ValueError, match="max_objects"):
        shapes(2, max_objects=0)
    with pytest.raises(ValueError, match="classes"):
        shapes(2, classes=("circle", "hexagon"))
    with pytest.raises(ValueError, match="classes"):
        shapes(2, classes=())
    with pytest.raises(ValueError, match="n must be non-negative"):
        shapes(-1)
    with pytest.raises(TypeError, match="generator"):
        shapes(2, generator=0)


# --- all_captions: the whole caption space of captioned_shapes ---------------------------------
def test_all_captions_lists_every_caption_once_in_the_documented_order():
    from minilib.data import (
        CAPTION_COLOURS,
        CAPTION_SHAPES,
        all_captions,
        captioned_shapes,
        decode_caption,
    )

    caps = all_captions()
    words = [decode_caption(row) for row in caps]
    singles = [f"a {c} {s}" for c in CAPTION_COLOURS for s in CAPTION_SHAPES]  # built from strings
    assert words == singles + [f"{a} left of {b}" for a in singles for b in singles]
    assert len(set(map(tuple, caps.tolist()))) == len(caps) == 12 + 144
    # Every caption the generator writes is one of the rows (padded alike).
    d = captioned_shapes(400, size=16, max_shapes=2, generator=torch.Generator().manual_seed(0))
    padded = all_captions(length=d.tokens.shape[1])
    rows = set(map(tuple, padded.tolist()))
    assert all(tuple(t) in rows for t in d.tokens.tolist())
    assert len(all_captions(3)) == 12 + 12**2 + 12**3
    assert all_captions(1, length=7).shape == (12, 7) and all_captions(1)[:, -1].eq(2).all()  # ends in <eos>


@pytest.mark.parametrize("kwargs, match", [({"max_shapes": 0}, "max_shapes"), ({"max_shapes": 1.5}, "max_shapes"),
                                           ({"length": 9}, "length"), ({"length": 10.0}, "length")])
def test_all_captions_rejects_bad_arguments(kwargs, match):
    from minilib.data import all_captions

    with pytest.raises(ValueError, match=match):
        all_captions(**kwargs)
