"""minilib.sequence against torch built-ins: LSTMCell, nn.RNN with autograd, nn.MultiheadAttention."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from minilib.sequence import cross_attention, lstm_cell, rnn_bptt


def test_lstm_cell_matches_torch() -> None:
    torch.manual_seed(0)
    ref = nn.LSTMCell(5, 7).double()
    x, h, c = torch.randn(3, 5).double(), torch.randn(3, 7).double(), torch.randn(3, 7).double()
    want_h, want_c = ref(x, (h, c))
    got_h, got_c = lstm_cell(x, h, c, ref.weight_ih, ref.weight_hh, ref.bias_ih, ref.bias_hh)
    torch.testing.assert_close(got_h, want_h, atol=1e-12, rtol=0)
    torch.testing.assert_close(got_c, want_c, atol=1e-12, rtol=0)
    assert got_h.dtype == torch.float64


def _torch_rnn_grads(xs, h0, rnn, G, window):
    """Autograd through torch.nn.RNN, run chunk by chunk with the state detached in between."""
    rnn.zero_grad()
    steps = xs.shape[0]
    window = window or steps
    h, outs = h0[None], []
    for start in range(0, steps, window):
        out, h = rnn(xs[start:start + window], h.detach())
        outs.append(out)
    (torch.cat(outs) * G).sum().backward()
    return rnn.weight_hh_l0.grad, rnn.weight_ih_l0.grad, rnn.bias_ih_l0.grad


@pytest.mark.parametrize("window", [None, 1, 3, 5, 12])
def test_rnn_bptt_matches_autograd(window: int | None) -> None:
    torch.manual_seed(1)
    T, B, D, n = 12, 2, 3, 4
    rnn = nn.RNN(D, n).double()
    with torch.no_grad():
        rnn.bias_hh_l0.zero_()  # one bias b, as in (rnn-recurrence)
    xs, h0, G = torch.randn(T, B, D).double(), torch.randn(B, n).double(), torch.randn(T, B, n).double()
    want = _torch_rnn_grads(xs, h0, rnn, G, window)
    got = rnn_bptt(xs, h0, rnn.weight_hh_l0.detach(), rnn.weight_ih_l0.detach(), rnn.bias_ih_l0.detach(), G, window=window)
    for g, w in zip(got, want):
        torch.testing.assert_close(g, w, atol=1e-12, rtol=0)


def test_rnn_bptt_truncation_changes_the_gradient() -> None:
    torch.manual_seed(2)
    T, B, D, n = 10, 2, 3, 4
    args = (torch.randn(T, B, D), torch.zeros(B, n), torch.randn(n, n), torch.randn(n, D), torch.randn(n), torch.randn(T, B, n))
    full, trunc = rnn_bptt(*args), rnn_bptt(*args, window=2)
    assert (full[0] - trunc[0]).abs().max() > 1e-3
    torch.testing.assert_close(rnn_bptt(*args, window=T)[0], full[0])  # one chunk: no truncation


def test_cross_attention_matches_multihead_attention() -> None:
    torch.manual_seed(3)
    d_model, d_enc, H = 8, 6, 2
    ref = nn.MultiheadAttention(d_model, H, kdim=d_enc, vdim=d_enc, bias=False, batch_first=True).double()
    y, z = torch.randn(2, 4, d_model).double(), torch.randn(2, 5, d_enc).double()
    pad = torch.tensor([[False] * 5, [False, False, False, True, True]])
    want, _ = ref(y, z, z, key_padding_mask=pad)
    got = cross_attention(y, z, ref.q_proj_weight.T, ref.k_proj_weight.T, ref.v_proj_weight.T, ref.out_proj.weight.T, H,
                          key_padding_mask=pad)
    torch.testing.assert_close(got, want, atol=1e-12, rtol=0)


def test_bad_inputs() -> None:
    n, D = 3, 2
    x, h = torch.zeros(1, D), torch.zeros(1, n)
    with pytest.raises(ValueError, match="w_ih"):
        lstm_cell(x, h, h, torch.zeros(3 * n, D), torch.zeros(4 * n, n))
    with pytest.raises(TypeError, match="x must be"):
        lstm_cell(torch.zeros(1, D, dtype=torch.long), h, h, torch.zeros(4 * n, D), torch.zeros(4 * n, n))
    args = (torch.zeros(4, 1, D), h, torch.zeros(n, n), torch.zeros(n, D), torch.zeros(n), torch.zeros(4, 1, n))
    with pytest.raises(ValueError, match="window"):
        rnn_bptt(*args, window=0)
    with pytest.raises(TypeError, match="window"):
        rnn_bptt(*args, window=2.0)
    with pytest.raises(ValueError, match="grad_h"):
        rnn_bptt(*args[:5], torch.zeros(3, 1, n))
    y, z, w = torch.zeros(1, 2, 4), torch.zeros(1, 3, 4), torch.zeros(4, 4)
    with pytest.raises(ValueError, match="n_heads"):
        cross_attention(y, z, w, w, w, w, 3)
    with pytest.raises(ValueError, match="every encoder position"):
        cross_attention(y, z, w, w, w, w, 2, key_padding_mask=torch.ones(1, 3, dtype=torch.bool))
    with pytest.raises(TypeError, match="key_padding_mask"):
        cross_attention(y, z, w, w, w, w, 2, key_padding_mask=torch.ones(1, 3))
    with pytest.raises(ValueError, match="batch"):
        cross_attention(y, torch.zeros(2, 3, 4), w, w, w, w, 2)
