"""Tests for minilib.action and minilib.data.event_streams, against independent references:
a per-frame Python loop for the causal windows, a brute-force count of true and false
positives above each positive's score for (calibrated) AP, the closed form of AP for perfect
and reversed rankings, and an input-perturbation test of causality for OadTR."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from minilib.action import OadTR, causal_windows, frame_average_precision, per_frame_map
from minilib.data import event_streams

SET = settings(max_examples=40, deadline=None, derandomize=True)


def test_causal_windows_match_a_loop():
    x = torch.randn(2, 7, 3, generator=torch.Generator().manual_seed(0))
    out = causal_windows(x, 4)
    for b in range(2):
        for t in range(7):
            for j in range(4):
                src = t - 4 + 1 + j
                want = x[b, src] if src >= 0 else torch.zeros(3)
                assert torch.equal(out[b, t, j], want)


def test_causal_windows_keep_dtype_and_reject_bad_input():
    x = torch.randn(1, 5, 2, dtype=torch.float64)
    assert causal_windows(x, 2).dtype == torch.float64
    with pytest.raises(ValueError, match="window"):
        causal_windows(x, 0)
    with pytest.raises(ValueError, match=r"\(B, T, D\)"):
        causal_windows(x[0], 2)
    with pytest.raises(TypeError, match="x must be a floating-point"):
        causal_windows(torch.zeros(1, 5, 2, dtype=torch.long), 2)


def brute_ap(scores, targets, calibrated):
    s, t = scores.tolist(), targets.tolist()
    p = sum(t)
    n = len(t) - p
    if n == 0:
        return 1.0
    w = n / p if calibrated else 1.0
    total = 0.0
    for i in range(len(s)):
        if t[i]:
            tp = sum(1 for j in range(len(s)) if t[j] and s[j] >= s[i])
            fp = sum(1 for j in range(len(s)) if not t[j] and s[j] >= s[i])
            total += w * tp / (w * tp + fp)
    return total / p


@SET
@given(st.lists(st.tuples(st.floats(-5, 5, allow_nan=False), st.booleans()), min_size=2, max_size=30),
       st.booleans())
def test_frame_ap_matches_brute_force(pairs, calibrated):
    # distinct scores: with ties the brute force counts all tied frames, the ranking only earlier ones
    scores = torch.tensor([s for s, _ in pairs], dtype=torch.float64) + 1e-9 * torch.arange(len(pairs))
    targets = torch.tensor([t for _, t in pairs])
    if not targets.any() or len(set(scores.tolist())) < len(pairs):
        return
    got = frame_average_precision(scores, targets, calibrated)
    assert got == pytest.approx(brute_ap(scores, targets, calibrated), abs=1e-12)


def test_frame_ap_closed_forms():
    # perfect ranking: AP = cAP = 1; fully reversed, P positives after N negatives:
    # AP = (1/P) sum_j j / (N + j)
    P, N = 3, 5
    perfect = torch.tensor([1.0] * P + [0.0] * N) + torch.linspace(0, 0.1, P + N)
    targets = torch.tensor([True] * P + [False] * N)
    assert frame_average_precision(torch.tensor([3.0, 2, 1, 0.5, 0.4, 0.3, 0.2, 0.1]), targets) == 1.0
    reversed_scores = -perfect
    want = sum(j / (N + j) for j in range(1, P + 1)) / P
    assert frame_average_precision(reversed_scores, targets) == pytest.approx(want)
    w = N / P
    want_c = sum(w * j / (w * j + N) for j in range(1, P + 1)) / P
    assert frame_average_precision(reversed_scores, targets, calibrated=True) == pytest.approx(want_c)


def test_calibrated_ap_ignores_how_many_negatives_there_are():
    g = torch.Generator().manual_seed(1)
    scores = torch.randn(50, generator=g, dtype=torch.float64)
    targets = torch.rand(50, generator=g) < 0.3
    neg = ~targets
    more_s = torch.cat([scores, scores[neg], scores[neg]])  # every negative three times
    more_t = torch.cat([targets, targets[neg], targets[neg]])
    assert frame_average_precision(more_s, more_t, True) == pytest.approx(
        frame_average_precision(scores, targets, True), abs=1e-12)
    assert frame_average_precision(more_s, more_t) < frame_average_precision(scores, targets)


def test_frame_ap_bad_input():
    with pytest.raises(ValueError, match="at least one positive"):
        frame_average_precision(torch.tensor([0.1, 0.2]), torch.tensor([0, 0]))
    with pytest.raises(ValueError, match="shape of scores"):
        frame_average_precision(torch.tensor([0.1, 0.2]), torch.tensor([0, 1, 0]))
    with pytest.raises(ValueError, match="finite"):
        frame_average_precision(torch.tensor([float("nan"), 0.2]), torch.tensor([0, 1]))
    with pytest.raises(ValueError, match="1-D"):
        frame_average_precision(torch.zeros(2, 2), torch.zeros(2, 2))


def test_per_frame_map_averages_present_classes_only():
    scores = torch.tensor([[0.0, 0.9, 0.1, 0.0], [0.0, 0.2, 0.8, 0.0], [1.0, 0.1, 0.1, 0.0]])
    labels = torch.tensor([1, 2, 0])  # class 3 absent
    mean, per = per_frame_map(scores, labels)
    assert mean == 1.0 and per[:2].tolist() == [1.0, 1.0] and per[2].isnan()
    with pytest.raises(ValueError, match="labels must be ints"):
        per_frame_map(scores, torch.tensor([1, 2, 4]))
    with pytest.raises(ValueError, match="no action frame"):
        per_frame_map(scores, torch.tensor([0, 0, 0]))


def test_oadtr_is_causal_and_shapes():
    torch.manual_seed(0)
    m = OadTR(in_dim=5, n_classes=4, window=6, future=3, d_model=16, heads=2).eval()
    x = torch.randn(1, 20, 5)
    y = x.clone()
    y[:, 12:] = torch.randn(1, 8, 5)  # change the future of frame 11
    with torch.no_grad():
        a, fa = m(causal_windows(x, 6)[0])
        b, fb = m(causal_windows(y, 6)[0])
    assert a.shape == (20, 4) and fa.shape == (20, 3, 4)
    assert torch.equal(a[:12], b[:12]) and torch.equal(fa[:12], fb[:12])
    assert not torch.allclose(a[12:], b[12:])
    with pytest.raises(ValueError, match="windows must have shape"):
        m(torch.randn(3, 5, 5))
    with pytest.raises(ValueError, match="divisible"):
        OadTR(5, 4, 6, d_model=10, heads=4)


def test_event_streams_structure():
    g = torch.Generator().manual_seed(0)
    x, y = event_streams(4, 96, noise=0.0, distractor=0.0, generator=g)
    x2, y2 = event_streams(4, 96, noise=0.0, distractor=0.0, generator=torch.Generator().manual_seed(0))
    assert torch.equal(x, x2) and torch.equal(y, y2)
    motifs = x[y > 0].unique(dim=0)
    assert len(motifs) == 3 and torch.allclose(motifs.norm(dim=1), torch.full((3,), 2.0))
    assert torch.equal(x[y == 0], torch.zeros_like(x[y == 0]))  # no distractors, no noise
    # an action c uses exactly its two motifs, and runs alternate between them
    ids = (x @ motifs.T).argmax(-1)
    for c in (1, 2, 3):
        used = set(ids[y == c].tolist())
        assert len(used) == 2
    for c in (1, 2, 3):
        other = [set(ids[y == d].tolist()) for d in (1, 2, 3) if d != c]
        assert all(set(ids[y == c].tolist()) & o for o in other)  # each motif is shared


def test_event_streams_bad_input():
    with pytest.raises(ValueError, match="segment"):
        event_streams(1, segment=(3, 2))
    with pytest.raises(ValueError, match="n_classes"):
        event_streams(1, n_classes=9, dim=8)
    with pytest.raises(ValueError, match="distractor"):
        event_streams(1, distractor=1.5)
    with pytest.raises(ValueError, match="noise"):
        event_streams(1, noise=-1.0)


def test_frame_ap_rejects_non_binary_targets_and_empty_streams():
    with pytest.raises(ValueError, match="0/1"):
        frame_average_precision(torch.tensor([0.5, 0.2]), torch.tensor([0.3, 0.0]))
    with pytest.raises(ValueError, match="at least one frame"):
        per_frame_map(torch.zeros(0, 4), torch.zeros(0, dtype=torch.long))


def test_event_streams_distractors_never_touch_an_action_end():
    # the window proposition relies on this: at least one plain background frame follows every
    # action (a distractor may touch the *start* of the next action, never the end of one)
    x, y = event_streams(200, 128, noise=0.0, distractor=1.0, generator=torch.Generator().manual_seed(3))
    ends = (y[:, :-1] > 0) & (y[:, 1:] == 0)  # frame t is the last of an action, t + 1 background
    after = x[:, 1:][ends]
    assert ends.any() and torch.equal(after, torch.zeros_like(after))
