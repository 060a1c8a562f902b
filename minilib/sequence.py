"""Recurrent cells, backpropagation through time written out, and cross-attention.

The pieces of the chapter "From RNNs to Transformers" that are not in :mod:`minilib.nn`:
an LSTM cell (PyTorch's gate order and weight layout), a hand-written backward pass of the
tanh RNN that can truncate the gradient every ``window`` steps, and the encoder-decoder
cross-attention (queries from the decoder, keys and values from the encoder).

Conventions: batch first inside a time step, time first across steps: a sequence of inputs is
``(T, B, D)``, a state ``(B, n)``. Weights of the recurrent pieces follow ``torch.nn``
(``(out, in)``, applied as ``x @ w.T``); the cross-attention weights follow the page's
``X W`` convention (``(in, out)``, applied as ``x @ w``). Everything follows the device and
dtype of its inputs.
"""

from __future__ import annotations

import math

import torch

__all__ = ["cross_attention", "lstm_cell", "rnn_bptt"]


def _tensor(x: object, name: str, dim: int | None = None) -> torch.Tensor:
    if not isinstance(x, torch.Tensor) or not x.is_floating_point():
        raise TypeError(f"{name} must be a floating-point torch.Tensor, got {type(x).__name__}"
                        + (f" of dtype {x.dtype}" if isinstance(x, torch.Tensor) else ""))
    if dim is not None and x.dim() != dim:
        raise ValueError(f"{name} must have {dim} dimensions, got shape {tuple(x.shape)}")
    return x


def _shape(x: torch.Tensor, want: tuple[int, ...], name: str, what: str) -> None:
    if tuple(x.shape) != want:
        raise ValueError(f"{name} must have shape {what} = {want}, got {tuple(x.shape)}")


def lstm_cell(
    x: torch.Tensor,
    h: torch.Tensor,
    c: torch.Tensor,
    w_ih: torch.Tensor,
    w_hh: torch.Tensor,
    b_ih: torch.Tensor | None = None,
    b_hh: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """One step of an LSTM: gates, cell state and output. Implements (rnn-lstm).

    With pre-activations ``[a_i, a_f, a_g, a_o] = x @ w_ih.T + h @ w_hh.T + b_ih + b_hh``
    (the four blocks in PyTorch's order), ``i, f, o = sigmoid(a_i, a_f, a_o)``,
    ``g = tanh(a_g)``, ``c' = f * c + i * g`` and ``h' = o * tanh(c')``. The weights have the
    layout of ``torch.nn.LSTMCell`` (``weight_ih``, ``weight_hh``, ``bias_ih``, ``bias_hh``).

    Args:
        x: input ``(B, D)``.
        h: previous output ``(B, n)``.
        c: previous cell state ``(B, n)``.
        w_ih: ``(4n, D)``; w_hh: ``(4n, n)``.
        b_ih, b_hh: optional biases ``(4n,)``.

    Returns:
        ``(h', c')``, each ``(B, n)``.

    Raises:
        TypeError: if an argument is not a floating tensor.
        ValueError: if the shapes do not match.

    >>> n, D = 3, 2
    >>> h, c = lstm_cell(torch.zeros(1, D), torch.zeros(1, n), torch.ones(1, n), torch.zeros(4 * n, D), torch.zeros(4 * n, n))
    >>> c.tolist()  # f = i = 1/2, g = 0: half the old cell state survives
    [[0.5, 0.5, 0.5]]
    """
    x, h, c = _tensor(x, "x", 2), _tensor(h, "h", 2), _tensor(c, "c", 2)
    w_ih, w_hh = _tensor(w_ih, "w_ih", 2), _tensor(w_hh, "w_hh", 2)
    (batch, d_in), n = x.shape, h.shape[1]
    _shape(h, (batch, n), "h", "(B, n)")
    _shape(c, (batch, n), "c", "(B, n)")
    _shape(w_ih, (4 * n, d_in), "w_ih", "(4n, D)")
    _shape(w_hh, (4 * n, n), "w_hh", "(4n, n)")
    a = x @ w_ih.T + h @ w_hh.T
    for name, bias in (("b_ih", b_ih), ("b_hh", b_hh)):
        if bias is not None:
            _shape(_tensor(bias, name, 1), (4 * n,), name, "(4n,)")
            a = a + bias
    a_i, a_f, a_g, a_o = a.chunk(4, dim=1)
    i, f, o, g = torch.sigmoid(a_i), torch.sigmoid(a_f), torch.sigmoid(a_o), torch.tanh(a_g)
    c_new = f * c + i * g
    return o * torch.tanh(c_new), c_new


def rnn_bptt(
    xs: torch.Tensor,
    h0: torch.Tensor,
    w_h: torch.Tensor,
    w_x: torch.Tensor,
    b: torch.Tensor,
    grad_h: torch.Tensor,
    *,
    window: int | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Backpropagation through time for the tanh RNN, by hand, optionally truncated.

    Runs ``h_t = tanh(h_{t-1} @ w_h.T + x_t @ w_x.T + b)`` forward from ``h0`` and then the
    backward recursion: the adjoint ``delta_t = grad_h[t] + (delta_{t+1} * tanh'(a_{t+1})) @ w_h``
    of the loss ``sum_t <grad_h[t], h_t>``. With ``window = k`` the carry into step ``t`` is
    dropped whenever ``t`` is a multiple of ``k`` (0-based): the gradient of training on
    chunks of ``k`` steps with the state detached between chunks. Implements (rnn-bptt),
    (rnn-jacobian) and (rnn-tbptt); ``window=None`` is full BPTT.

    Args:
        xs: inputs ``(T, B, D)``.
        h0: initial state ``(B, n)``, treated as a constant.
        w_h: ``(n, n)``; w_x: ``(n, D)``; b: ``(n,)``.
        grad_h: ``(T, B, n)``, the direct gradient of the loss with respect to each ``h_t``.
        window: chunk length ``k >= 1``, or None for no truncation.

    Returns:
        The gradients ``(dw_h, dw_x, db)`` with the shapes of ``w_h, w_x, b``.

    Raises:
        TypeError: if an argument is not a floating tensor or ``window`` is not an int.
        ValueError: if the shapes do not match or ``window < 1``.
    """
    xs, h0 = _tensor(xs, "xs", 3), _tensor(h0, "h0", 2)
    w_h, w_x, b = _tensor(w_h, "w_h", 2), _tensor(w_x, "w_x", 2), _tensor(b, "b", 1)
    grad_h = _tensor(grad_h, "grad_h", 3)
    steps, batch, d_in = xs.shape
    n = h0.shape[1]
    _shape(h0, (batch, n), "h0", "(B, n)")
    _shape(w_h, (n, n), "w_h", "(n, n)")
    _shape(w_x, (n, d_in), "w_x", "(n, D)")
    _shape(b, (n,), "b", "(n,)")
    _shape(grad_h, (steps, batch, n), "grad_h", "(T, B, n)")
    if window is not None and (not isinstance(window, int) or isinstance(window, bool)):
        raise TypeError(f"window must be an int or None, got {type(window).__name__}")
    if window is not None and window < 1:
        raise ValueError(f"window must be >= 1, got {window}")
    with torch.no_grad():
        hs = [h0]
        for t in range(steps):  # forward pass, (rnn-recurrence)
            hs.append(torch.tanh(hs[-1] @ w_h.T + xs[t] @ w_x.T + b))
        dw_h, dw_x, db = torch.zeros_like(w_h), torch.zeros_like(w_x), torch.zeros_like(b)
        carry = torch.zeros_like(h0)
        for t in reversed(range(steps)):
            delta = grad_h[t] + carry  # dL/dh_t, summed over the losses that reach it
            delta_a = delta * (1 - hs[t + 1] ** 2)  # through tanh: diag(phi'(a_t)), (rnn-jacobian)
            dw_h += delta_a.T @ hs[t]
            dw_x += delta_a.T @ xs[t]
            db += delta_a.sum(0)
            cut = window is not None and t % window == 0  # h_{t-1} was detached before step t
            carry = torch.zeros_like(h0) if cut else delta_a @ w_h  # times J_t, (rnn-bptt)
    return dw_h, dw_x, db


def cross_attention(
    y: torch.Tensor,
    z: torch.Tensor,
    w_q: torch.Tensor,
    w_k: torch.Tensor,
    w_v: torch.Tensor,
    w_o: torch.Tensor,
    n_heads: int,
    *,
    key_padding_mask: torch.Tensor | None = None,
) -> torch.Tensor:
    """Multi-head cross-attention: decoder queries, encoder keys and values. Implements (rnn-cross-attention).

    ``Q = y @ w_q``, ``K = z @ w_k``, ``V = z @ w_v`` are split into ``n_heads`` heads of width
    ``d_h = d_model / n_heads``; each head computes ``softmax(Q_h K_h^T / sqrt(d_h)) V_h`` with
    padded encoder positions removed (score ``-inf``); the heads are concatenated and mixed by
    ``w_o``. No causal mask: every decoder position may see the whole source. Written out
    explicitly (no fused kernel), so that it can be checked against one.

    Args:
        y: decoder states ``(B, N_q, d_model)``.
        z: encoder output ``(B, N_k, d_enc)``.
        w_q: ``(d_model, d_model)``; w_k, w_v: ``(d_enc, d_model)``; w_o: ``(d_model, d_model)``.
        n_heads: number of heads ``H``, dividing ``d_model``.
        key_padding_mask: optional bool ``(B, N_k)``, True where an encoder position is padding.

    Returns:
        ``(B, N_q, d_model)``.

    Raises:
        TypeError: if a tensor is not floating, ``n_heads`` is not an int or the mask not bool.
        ValueError: if shapes do not match, ``H`` does not divide ``d_model``, or a mask
            hides every key of some sequence.

    >>> out = cross_attention(torch.randn(2, 3, 4), torch.randn(2, 5, 6), torch.randn(4, 4),
    ...                       torch.randn(6, 4), torch.randn(6, 4), torch.randn(4, 4), 2)
    >>> out.shape
    torch.Size([2, 3, 4])
    """
    y, z = _tensor(y, "y", 3), _tensor(z, "z", 3)
    w_q, w_k, w_v, w_o = (_tensor(w, name, 2) for w, name in ((w_q, "w_q"), (w_k, "w_k"), (w_v, "w_v"), (w_o, "w_o")))
    batch, _, d_model = y.shape
    n_k, d_enc = z.shape[1], z.shape[2]
    if z.shape[0] != batch:
        raise ValueError(f"y and z must have the same batch size, got {batch} and {z.shape[0]}")
    if not isinstance(n_heads, int) or isinstance(n_heads, bool):
        raise TypeError(f"n_heads must be an int, got {type(n_heads).__name__}")
    if n_heads < 1 or d_model % n_heads != 0:
        raise ValueError(f"n_heads must be a positive divisor of d_model = {d_model}, got {n_heads}")
    _shape(w_q, (d_model, d_model), "w_q", "(d_model, d_model)")
    _shape(w_k, (d_enc, d_model), "w_k", "(d_enc, d_model)")
    _shape(w_v, (d_enc, d_model), "w_v", "(d_enc, d_model)")
    _shape(w_o, (d_model, d_model), "w_o", "(d_model, d_model)")
    d_h = d_model // n_heads

    def heads(t: torch.Tensor) -> torch.Tensor:  # (B, N, d_model) -> (B, H, N, d_h)
        return t.reshape(batch, t.shape[1], n_heads, d_h).transpose(1, 2)

    q, k, v = heads(y @ w_q), heads(z @ w_k), heads(z @ w_v)
    s = q @ k.transpose(-1, -2) / math.sqrt(d_h)  # (B, H, N_q, N_k)
    if key_padding_mask is not None:
        if not isinstance(key_padding_mask, torch.Tensor) or key_padding_mask.dtype != torch.bool:
            raise TypeError("key_padding_mask must be a bool tensor of shape (B, N_k)")
        _shape(key_padding_mask, (batch, n_k), "key_padding_mask", "(B, N_k)")
        if bool(key_padding_mask.all(dim=1).any()):
            raise ValueError("key_padding_mask hides every encoder position of some sequence")
        s = s.masked_fill(key_padding_mask[:, None, None, :], float("-inf"))
    o = torch.softmax(s, dim=-1) @ v  # (B, H, N_q, d_h)
    return o.transpose(1, 2).reshape(batch, -1, d_model) @ w_o
