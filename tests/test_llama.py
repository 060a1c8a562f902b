"""Tests for minilib.llama against torch built-ins, complex arithmetic and brute force."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from minilib.llama import (
    TinyLlama,
    TinyLlamaConfig,
    apply_rope,
    generate,
    kv_cache_bytes,
    param_count,
    repeat_kv,
    rms_norm,
)

SMALL = dict(vocab_size=13, d_model=16, n_layers=2, d_ff=24, max_seq_len=40)


def test_rms_norm_matches_torch() -> None:
    torch.manual_seed(0)
    x = torch.randn(3, 5, 8, dtype=torch.float64)
    w = torch.randn(8, dtype=torch.float64)
    torch.testing.assert_close(rms_norm(x, w, 1e-6), torch.nn.functional.rms_norm(x, (8,), w, 1e-6))
    xh = torch.randn(4, 8, dtype=torch.float16) * 100
    got = rms_norm(xh, torch.ones(8, dtype=torch.float16))
    assert got.dtype == torch.float16
    torch.testing.assert_close(got.float(), torch.nn.functional.rms_norm(xh.float(), (8,), eps=1e-6), atol=2e-3, rtol=2e-3)


def test_rope_matches_complex_multiplication() -> None:
    # independent reference: each pair is a complex number multiplied by exp(i p omega)
    torch.manual_seed(1)
    x = torch.randn(2, 3, 7, 10, dtype=torch.float64)
    pos = torch.tensor([0, 1, 2, 5, 9, 30, 100])
    omega = 500.0 ** (-torch.arange(0, 10, 2, dtype=torch.float64) / 10)
    z = torch.view_as_complex(x.reshape(2, 3, 7, 5, 2).contiguous())
    want = torch.view_as_real(z * torch.polar(torch.ones(7, 5, dtype=torch.float64), pos[:, None] * omega)).reshape(x.shape)
    torch.testing.assert_close(apply_rope(x, pos, base=500.0), want)


@given(m=st.integers(0, 200), n=st.integers(0, 200), shift=st.integers(-50, 50))
@settings(max_examples=20, deadline=None)
def test_rope_score_depends_only_on_offset(m: int, n: int, shift: int) -> None:
    g = torch.Generator().manual_seed(m * 1000 + n)
    q = torch.randn(1, 16, generator=g, dtype=torch.float64)
    k = torch.randn(1, 16, generator=g, dtype=torch.float64)
    def score(a: int, b: int) -> torch.Tensor:
        return (apply_rope(q, torch.tensor([a])) * apply_rope(k, torch.tensor([b]))).sum()
    base_m, base_n = m + 60, n + 60  # keep shifted positions non-negative (not required, but tidy)
    torch.testing.assert_close(score(base_m, base_n), score(base_m + shift, base_n + shift))
    # and rotations preserve norms
    torch.testing.assert_close(apply_rope(q, torch.tensor([m])).norm(), q.norm())


def test_repeat_kv_matches_repeat_interleave() -> None:
    x = torch.randn(2, 3, 5, 4)
    for n_rep in (1, 2, 4):
        torch.testing.assert_close(repeat_kv(x, n_rep), x.repeat_interleave(n_rep, dim=1))


def _gqa_as_mha(gqa: TinyLlama) -> TinyLlama:
    """An n_kv_heads == n_heads model whose K/V projections duplicate the GQA model's, group by group."""
    c = gqa.config
    mha = TinyLlama(TinyLlamaConfig(**{**c.__dict__, "n_kv_heads": c.n_heads}))
    state = gqa.state_dict()
    n_rep, d_h = c.n_heads // c.n_kv_heads, c.d_head
    for key in list(state):
        if key.endswith(("wk.weight", "wv.weight")):
            w = state[key].view(c.n_kv_heads, d_h, c.d_model)
            state[key] = w.repeat_interleave(n_rep, dim=0).reshape(c.n_heads * d_h, c.d_model)
    mha.load_state_dict(state)
    return mha


def _brute_force_forward(model: TinyLlama, tokens: torch.Tensor) -> torch.Tensor:
    """The same network written with an explicit per-head softmax and explicit K/V head lookup."""
    c = model.config
    B, T = tokens.shape
    x = model.tok_emb(tokens)
    pos = torch.arange(T)
    causal = torch.ones(T, T, dtype=torch.bool).tril()
    for blk in model.blocks:
        h = rms_norm(x, blk.attn_norm, c.norm_eps)
        q = apply_rope(blk.attn.wq(h).view(B, T, c.n_heads, c.d_head).transpose(1, 2), pos)
        k = apply_rope(blk.attn.wk(h).view(B, T, c.n_kv_heads, c.d_head).transpose(1, 2), pos)
        v = blk.attn.wv(h).view(B, T, c.n_kv_heads, c.d_head).transpose(1, 2)
        heads = []
        for i in range(c.n_heads):
            j = i // (c.n_heads // c.n_kv_heads)  # the K/V head of query head i
            s = (q[:, i] @ k[:, j].transpose(-1, -2)) / c.d_head**0.5
            heads.append(torch.softmax(s.masked_fill(~causal, float("-inf")), -1) @ v[:, j])
        x = x + blk.attn.wo(torch.cat(heads, -1))
        h = rms_norm(x, blk.mlp_norm, c.norm_eps)
        x = x + blk.w_down(torch.nn.functional.silu(blk.w_gate(h)) * blk.w_up(h))
    return model.head(rms_norm(x, model.norm, c.norm_eps))


@pytest.mark.parametrize("n_kv_heads", [1, 2, 4])
def test_model_matches_brute_force_and_gqa_equals_duplicated_mha(n_kv_heads: int) -> None:
    torch.manual_seed(2)
    model = TinyLlama(TinyLlamaConfig(**SMALL, n_heads=4, n_kv_heads=n_kv_heads)).double()
    tokens = torch.randint(0, 13, (2, 9))
    out = model(tokens)
    torch.testing.assert_close(out, _brute_force_forward(model, tokens))
    torch.testing.assert_close(_gqa_as_mha(model).double()(tokens), out)


def test_kv_cache_decoding_equals_recomputation() -> None:
    torch.manual_seed(3)
    model = TinyLlama(TinyLlamaConfig(**SMALL, n_heads=4, n_kv_heads=2)).double()
    tokens = torch.randint(0, 13, (3, 12))
    full = model(tokens)
    cache = model.new_cache(3)
    parts = [model(tokens[:, :5], cache=cache)] + [model(tokens[:, t:t + 1], cache=cache) for t in range(5, 12)]
    torch.testing.assert_close(torch.cat(parts, 1), full)
    assert cache.length == 12
    prompt = tokens[:, :3]
    a = generate(model, prompt, 10, use_cache=True, generator=torch.Generator().manual_seed(0))
    b = generate(model, prompt, 10, use_cache=False, generator=torch.Generator().manual_seed(0))
    assert torch.equal(a, b) and a.shape == (3, 13)


def test_param_count_and_kv_memory_formulas() -> None:
    for n_kv in (1, 2, 4):
        c = TinyLlamaConfig(**SMALL, n_heads=4, n_kv_heads=n_kv)
        assert param_count(c) == sum(p.numel() for p in TinyLlama(c).parameters())
        cache = TinyLlama(c).new_cache(3)
        assert kv_cache_bytes(c, batch=3, seq_len=c.max_seq_len, bytes_per_element=4) == (
            cache.k.numel() + cache.v.numel()) * 4


def test_bad_inputs() -> None:
    with pytest.raises(TypeError, match="x must be a floating"):
        rms_norm(torch.ones(3, dtype=torch.long), torch.ones(3))
    with pytest.raises(ValueError, match="weight must have shape"):
        rms_norm(torch.ones(3), torch.ones(4))
    with pytest.raises(ValueError, match="d even"):
        apply_rope(torch.ones(2, 3), torch.arange(2))
    with pytest.raises(ValueError, match="positions must have shape"):
        apply_rope(torch.ones(2, 4), torch.arange(3))
    with pytest.raises(TypeError, match="positions must be"):
        apply_rope(torch.ones(2, 4), [0, 1])  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="base must be"):
        apply_rope(torch.ones(2, 4), torch.arange(2), base=-1.0)
    with pytest.raises(ValueError, match="x must have shape"):
        repeat_kv(torch.ones(2, 3, 4), 2)
    with pytest.raises(ValueError, match="n_rep must be a positive int"):
        repeat_kv(torch.ones(1, 2, 3, 4), 0)
    with pytest.raises(ValueError, match="must divide n_heads"):
        TinyLlamaConfig(n_heads=4, n_kv_heads=3)
    with pytest.raises(ValueError, match="divisible by n_heads"):
        TinyLlamaConfig(d_model=30, n_heads=4)
    model = TinyLlama(TinyLlamaConfig(**SMALL, n_heads=4, n_kv_heads=2))
    with pytest.raises(TypeError, match="tokens must be an integer"):
        model(torch.zeros(1, 3))
    with pytest.raises(ValueError, match="exceeds max_seq_len"):
        model(torch.zeros(1, 41, dtype=torch.long))
    with pytest.raises(ValueError, match="exceeds max_seq_len"):
        generate(model, torch.zeros(1, 30, dtype=torch.long), 20)
    with pytest.raises(TypeError, match="config must be"):
        TinyLlama({"d_model": 8})  # type: ignore[arg-type]


# --- context extension (issue 16): rope_frequencies, yarn_attention_scale -------------------------
def test_rope_frequencies_plain_and_linear_scaling() -> None:
    from minilib.llama import rope_frequencies

    d, base, s = 16, 500.0, 4.0
    ref = torch.tensor([base ** (-2 * i / d) for i in range(d // 2)], dtype=torch.float64)
    torch.testing.assert_close(rope_frequencies(d, base), ref, rtol=1e-15, atol=0)
    # position interpolation == plain RoPE evaluated at positions p / s
    x = torch.randn(3, 40, d, dtype=torch.float64)
    pos = torch.arange(40)
    pi = apply_rope(x, pos, frequencies=rope_frequencies(d, base, scaling="linear", factor=s))
    torch.testing.assert_close(pi, apply_rope(x, pos / s, base=base), rtol=0, atol=1e-12)
    # and plain frequencies through `frequencies=` reproduce the default path
    torch.testing.assert_close(apply_rope(x, pos, frequencies=rope_frequencies(d, base)),
                               apply_rope(x, pos, base=base), rtol=0, atol=1e-12)


def test_rope_frequencies_ntk_closed_form() -> None:
    from minilib.llama import rope_frequencies

    d, base, s = 64, 10000.0, 8.0
    w = rope_frequencies(d, base)
    ntk = rope_frequencies(d, base, scaling="ntk", factor=s)
    assert ntk[0].item() == 1.0  # the highest frequency is kept
    torch.testing.assert_close(ntk[-1], w[-1] / s, rtol=1e-12, atol=0)  # the lowest is divided by s
    i = torch.arange(d // 2, dtype=torch.float64)
    torch.testing.assert_close(ntk, w * s ** (-2 * i / (d - 2)), rtol=1e-12, atol=0)


def test_rope_frequencies_yarn_ramp_endpoints() -> None:
    import math

    from minilib.llama import rope_frequencies, yarn_attention_scale

    d, base, s, L = 64, 10000.0, 4.0, 2048
    w = rope_frequencies(d, base)
    y = rope_frequencies(d, base, scaling="yarn", factor=s, original_length=L)
    turns = L * w / (2 * math.pi)
    lo, hi = turns < 1.0, turns > 32.0
    assert lo.any() and hi.any() and (~lo & ~hi).any()
    torch.testing.assert_close(y[lo], w[lo] / s, rtol=1e-12, atol=0)  # r < alpha: interpolation
    torch.testing.assert_close(y[hi], w[hi], rtol=1e-12, atol=0)  # r > beta: extrapolation
    mid = (~lo & ~hi).nonzero()[0].item()
    g = (turns[mid].item() - 1.0) / 31.0
    assert math.isclose(y[mid].item(), (1 - g) * w[mid].item() / s + g * w[mid].item(), rel_tol=1e-12)
    # factor 1 changes nothing, for every rule
    for rule in ("linear", "ntk", "yarn"):
        torch.testing.assert_close(rope_frequencies(d, base, scaling=rule, factor=1.0, original_length=L), w)
    assert yarn_attention_scale(1.0) == 1.0
    assert math.isclose(yarn_attention_scale(math.e ** 2), 1.2)


def test_rope_frequencies_bad_inputs() -> None:
    from minilib.llama import rope_frequencies, yarn_attention_scale

    with pytest.raises(ValueError, match="d must"):
        rope_frequencies(7)
    with pytest.raises(ValueError, match="base"):
        rope_frequencies(8, 0.0)
    with pytest.raises(ValueError, match="scaling"):
        rope_frequencies(8, scaling="dynamic")
    with pytest.raises(ValueError, match="factor"):
        rope_frequencies(8, scaling="linear", factor=0.5)
    with pytest.raises(ValueError, match="original_length"):
        rope_frequencies(8, scaling="yarn", factor=2.0)
    with pytest.raises(ValueError, match="alpha"):
        rope_frequencies(8, scaling="yarn", factor=2.0, original_length=64, alpha=5.0, beta=2.0)
    with pytest.raises(ValueError, match="frequencies"):
        apply_rope(torch.randn(3, 8), torch.arange(3), frequencies=torch.ones(3))
    with pytest.raises(ValueError, match="factor"):
        yarn_attention_scale(0.9)
