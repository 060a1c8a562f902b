"""Tests of the decay/gating and delta-rule recurrences (chapter linear-attention, issue 16)."""

import pytest
import torch
import torch.nn.functional as F

from minilib.attention import delta_rule_attention, gated_linear_attention, linear_attention


def _parallel_gated(q, k, v, a):
    """The masked, decay-weighted parallel form: o_t = sum_{j <= t} (q_t * b_t / b_j)^T k_j v_j,
    with b_t = prod_{i <= t} a_i computed as exp of a cumulative sum of logs. a: (..., N, d)."""
    log_b = torch.log(a).cumsum(-2)  # (..., N, d)
    n = q.shape[-2]
    diff = log_b[..., :, None, :] - log_b[..., None, :, :]  # (..., N_t, N_j, d): log(b_t / b_j)
    mask = torch.ones(n, n, dtype=torch.bool).tril()[..., None]
    weights = torch.where(mask, diff, torch.tensor(-torch.inf, dtype=q.dtype)).exp()  # 0 above the diagonal
    scores = (q[..., :, None, :] * weights * k[..., None, :, :]).sum(-1)  # (..., N, N)
    return scores @ v


def _qkv(seed, *shape, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(*shape, generator=g, dtype=dtype) for _ in range(3))


@pytest.mark.parametrize("kind", ["float", "scalar-tensor", "per-step", "per-channel"])
def test_gated_matches_parallel_masked_form(kind):
    q, k, v = _qkv(0, 2, 3, 20, 4)
    v = v[..., :3].contiguous()  # d_v = 3 != d = 4
    g = torch.Generator().manual_seed(1)
    decay = {
        "float": 0.9,
        "scalar-tensor": torch.tensor(0.8, dtype=torch.float64),
        "per-step": torch.rand(2, 3, 20, generator=g, dtype=torch.float64) * 0.5 + 0.5,
        "per-channel": torch.rand(2, 3, 20, 4, generator=g, dtype=torch.float64) * 0.9 + 0.1,
    }[kind]
    a = torch.as_tensor(decay, dtype=torch.float64)
    a = a.expand(2, 3, 20, 4) if a.dim() < 3 else (a[..., None].expand(2, 3, 20, 4) if a.dim() == 3 else a)
    torch.testing.assert_close(gated_linear_attention(q, k, v, decay), _parallel_gated(q, k, v, a))


def test_gated_retnet_closed_form():
    # constant decay gamma: the weight of key j at query t is gamma^(t - j) (RetNet's D matrix)
    q, k, v = _qkv(2, 12, 5)
    t = torch.arange(12.0, dtype=torch.float64)
    d = torch.where(t[:, None] >= t, 0.7 ** (t[:, None] - t), torch.zeros((), dtype=torch.float64))
    torch.testing.assert_close(gated_linear_attention(q, k, v, 0.7), ((q @ k.T) * d) @ v)


def test_gated_decay_one_is_causal_linear_attention():
    # with phi applied by hand and the normaliser as the same recurrence on a column of ones
    q, k, v = _qkv(3, 2, 40, 6)
    phi = lambda x: F.elu(x) + 1  # noqa: E731
    ones = torch.ones(*v.shape[:-1], 1, dtype=v.dtype)
    out = gated_linear_attention(phi(q), phi(k), torch.cat([v, ones], -1), 1.0)
    ref = linear_attention(q, k, v, causal=True, chunk_size=7, eps=0.0)
    torch.testing.assert_close(out[..., :-1] / out[..., -1:], ref)


def test_gated_follows_dtype_and_device():
    q, k, v = _qkv(4, 3, 5, 2, dtype=torch.float32)
    out = gated_linear_attention(q, k, v, torch.full((3, 5), 0.5))
    assert out.dtype == torch.float32 and out.shape == (3, 5, 2)
    assert out.device == q.device
    out = delta_rule_attention(q, k, v, torch.full((3, 5), 0.5))
    assert out.dtype == torch.float32 and out.shape == (3, 5, 2) and out.device == q.device


def _delta_by_autograd(q, k, v, beta):
    """Brute force: at each step take one explicit gradient step, computed by autograd, on 0.5 |S^T k_t - v_t|^2."""
    s = torch.zeros(k.shape[-1], v.shape[-1], dtype=k.dtype)
    outs = []
    for t in range(k.shape[0]):
        s = s.detach().requires_grad_(True)
        loss = 0.5 * ((s.T @ k[t] - v[t]) ** 2).sum()
        (grad,) = torch.autograd.grad(loss, s)
        s = (s - beta[t] * grad).detach()
        outs.append(s.T @ q[t])
    return torch.stack(outs)


def test_delta_rule_is_online_gradient_descent():
    q, k, v = _qkv(5, 25, 4)
    beta = torch.rand(25, generator=torch.Generator().manual_seed(6), dtype=torch.float64)
    torch.testing.assert_close(delta_rule_attention(q, k, v, beta), _delta_by_autograd(q, k, v, beta))


def test_delta_rule_batched_matches_per_sequence():
    q, k, v = _qkv(7, 3, 10, 4)
    beta = torch.rand(3, 10, generator=torch.Generator().manual_seed(8), dtype=torch.float64)
    out = delta_rule_attention(q, k, v, beta)
    for b in range(3):
        torch.testing.assert_close(out[b], _delta_by_autograd(q[b], k[b], v[b], beta[b]))


def test_delta_rule_overwrites_orthonormal_keys():
    # keys from an orthonormal basis, some written several times: with beta = 1 the state reads back
    # the latest value of every key exactly; plain linear attention (decay 1) reads back their sum
    g = torch.Generator().manual_seed(9)
    basis = torch.linalg.qr(torch.randn(8, 8, generator=g, dtype=torch.float64))[0].T  # rows orthonormal
    idx = torch.tensor([0, 1, 2, 3, 1, 4, 1, 0])
    k, v = basis[idx], torch.randn(8, 3, generator=g, dtype=torch.float64)
    q = torch.cat([torch.zeros(8, 8, dtype=torch.float64), basis[:5]])  # read after all writes
    kk, vv = torch.cat([k, torch.zeros(5, 8, dtype=torch.float64)]), torch.cat([v, torch.zeros(5, 3, dtype=torch.float64)])
    beta = torch.cat([torch.ones(8), torch.zeros(5)]).double()
    latest = torch.stack([v[(idx == i).nonzero().max()] for i in range(5)])
    total = torch.stack([v[idx == i].sum(0) for i in range(5)])
    torch.testing.assert_close(delta_rule_attention(q, kk, vv, beta)[8:], latest)
    torch.testing.assert_close(gated_linear_attention(q, kk, vv, 1.0)[8:], total)


def test_delta_rule_partial_step():
    # writing one pair m times with step beta leaves the fraction (1 - beta)^m of the gap (unit key)
    k = torch.zeros(6, 3, dtype=torch.float64)
    k[:, 1] = 1.0
    v = torch.full((6, 2), 4.0, dtype=torch.float64)
    out = delta_rule_attention(k, k, v, 0.25)
    expected = 4.0 * (1 - 0.75 ** torch.arange(1, 7, dtype=torch.float64))
    torch.testing.assert_close(out, expected[:, None].expand(6, 2))


@pytest.mark.parametrize("fn,name", [(gated_linear_attention, "decay"), (delta_rule_attention, "beta")])
def test_bad_input(fn, name):
    q, k, v = _qkv(10, 2, 6, 4, dtype=torch.float32)
    bad_value = 0.0 if name == "decay" else -0.1
    with pytest.raises(ValueError, match=name):
        fn(q, k, v, bad_value)
    with pytest.raises(ValueError, match=name):
        fn(q, k, v, 1.5)
    with pytest.raises(ValueError, match=name):
        fn(q, k, v, float("nan"))
    with pytest.raises(ValueError, match=f"{name} must be a scalar or have shape"):
        fn(q, k, v, torch.full((2, 5), 0.5))
    with pytest.raises(TypeError, match=name):
        fn(q, k, v, torch.full((2, 6), 0.5, dtype=torch.float64))
    with pytest.raises(TypeError, match=name):
        fn(q, k, v, "0.5")
    with pytest.raises(TypeError, match=name):
        fn(q, k, v, True)
    with pytest.raises(ValueError, match="N_q == N_k"):
        fn(q[:, :3], k, v, 0.5)
    with pytest.raises(TypeError, match="dtype"):
        fn(q.double(), k, v, 0.5)
    with pytest.raises(ValueError, match="head dim"):
        fn(q[..., :3], k, v, 0.5)
    with pytest.raises(TypeError, match="q"):
        fn(q.long(), k, v, 0.5)


def test_delta_beta_per_channel_rejected():
    q, k, v = _qkv(11, 5, 3, dtype=torch.float32)
    with pytest.raises(ValueError, match="beta must be a scalar or have shape"):
        delta_rule_attention(q, k, v, torch.full((5, 3), 0.5))
    # the gated form accepts a per-channel gate of shape (..., N, d)
    assert gated_linear_attention(q, k, v, torch.full((5, 3), 0.5)).shape == (5, 3)
