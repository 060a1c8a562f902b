"""captioned_shapes: each caption is read back from the pixels by an independent decoder."""

from __future__ import annotations

import pytest
import torch

from minilib.data import (
    CAPTION_COLOURS,
    CAPTION_SHAPES,
    CAPTION_VOCAB,
    captioned_shapes,
    decode_caption,
)


def _read_scene(img: torch.Tensor, k: int) -> list[tuple[str, str]]:
    """(colour, kind) of each of the ``k`` bands, decoded from the pixels alone.

    A pixel belongs to a shape when it is within 0.15 (per channel, more than the 0.05 noise)
    of a palette colour; the background grey is at least 0.4 away from every palette colour in
    some channel. The kind follows from the fill ratio of the shape's tight box: a square fills
    it (1), a disc fills pi/4 (0.785) and the triangle half of it (0.5); the thresholds sit
    between these.
    """
    size = img.shape[-1]
    out = []
    for j in range(k):
        lo, hi = round(j * size / k), round((j + 1) * size / k)
        band = img[:, :, lo:hi]
        best = None
        for name, rgb in CAPTION_COLOURS.items():
            hit = ((band - torch.tensor(rgb)[:, None, None]).abs() <= 0.15).all(0)
            if best is None or hit.sum() > best[1].sum():
                best = (name, hit)
        name, hit = best
        rows, cols = hit.any(1).nonzero().flatten(), hit.any(0).nonzero().flatten()
        fill = float(hit.sum()) / ((rows[-1] - rows[0] + 1) * (cols[-1] - cols[0] + 1))
        kind = "square" if fill > 0.9 else "circle" if fill > 0.65 else "triangle"
        out.append((name, kind))
    return out


def test_captions_agree_with_the_pixels():
    d = captioned_shapes(300, size=32, max_shapes=3, generator=torch.Generator().manual_seed(1))
    agree = 0
    for i in range(len(d)):
        k = int(d.counts[i])
        words = decode_caption(d.tokens[i]).split(" left of ")
        said = [tuple(w.split()[1:]) for w in words]
        agree += said == _read_scene(d.images[i], k)
    # the decoder can misread a tiny triangle's fill ratio on a coarse grid; 97% agreement
    # still catches a swapped colour table, reversed order or a wrong band (each ~1/3 or less)
    assert agree >= 0.97 * len(d), agree


def test_structure_and_vocabulary():
    d = captioned_shapes(200, size=16, min_shapes=2, max_shapes=3, generator=torch.Generator().manual_seed(0))
    assert set(d.counts.tolist()) == {2, 3}
    for i in range(len(d)):
        k = int(d.counts[i])
        toks = d.tokens[i, : int(d.lengths[i])].tolist()
        assert toks[0] == CAPTION_VOCAB.index("<bos>") and toks[-1] == CAPTION_VOCAB.index("<eos>")
        assert (d.tokens[i, int(d.lengths[i]):] == 0).all()
        assert int(d.lengths[i]) == 2 + 3 * k + 2 * (k - 1)
        assert (d.colours[i, k:] == -1).all() and (d.kinds[i, :k] >= 0).all()
        names = list(CAPTION_COLOURS)
        expect = " left of ".join(f"a {names[c]} {CAPTION_SHAPES[s]}"
                                  for c, s in zip(d.colours[i, :k].tolist(), d.kinds[i, :k].tolist()))
        assert decode_caption(d.tokens[i]) == expect
    assert 0.0 <= float(d.images.min()) and float(d.images.max()) <= 1.0


def test_deterministic_and_follows_dtype():
    a = captioned_shapes(5, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    b = captioned_shapes(5, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    assert a.images.dtype == torch.float64 and torch.equal(a.images, b.images) and torch.equal(a.tokens, b.tokens)
    c = captioned_shapes(5, generator=torch.Generator().manual_seed(4), dtype=torch.float64)
    assert not torch.equal(a.images, c.images)


@pytest.mark.parametrize("kwargs, match", [
    ({"size": 8}, "size"), ({"max_shapes": 4}, "max_shapes"), ({"min_shapes": 0}, "min_shapes"),
    ({"min_shapes": 3, "max_shapes": 2}, "min_shapes"), ({"dtype": torch.int64}, "dtype"),
])
def test_bad_input(kwargs, match):
    with pytest.raises((ValueError, TypeError), match=match):
        captioned_shapes(2, **kwargs)


def test_decode_caption_bad_input():
    with pytest.raises(TypeError, match="tokens"):
        decode_caption(torch.zeros(2, 3, dtype=torch.int64))
    with pytest.raises(ValueError, match="tokens"):
        decode_caption(torch.tensor([1, 99]))
