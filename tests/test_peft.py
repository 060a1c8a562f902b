"""Tests for minilib.peft against dense layers, torch's attention and a real KV cache."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from minilib.llama import TinyLlama, TinyLlamaConfig, param_count
from minilib.peft import (
    Adapter,
    LoRALinear,
    PrefixTuning,
    add_adapters,
    add_lora,
    count_parameters,
    finetune_memory_bytes,
    merge_lora,
    prefix_attention,
)

CFG = TinyLlamaConfig(vocab_size=11, d_model=16, n_layers=2, n_heads=4, n_kv_heads=2, d_ff=24, max_seq_len=32)


def _model(seed: int = 0) -> TinyLlama:
    torch.manual_seed(seed)
    return TinyLlama(CFG).eval()


def test_lora_zero_b_is_base() -> None:
    torch.manual_seed(0)
    base = nn.Linear(7, 5)
    layer = LoRALinear(base, r=3, alpha=6.0)
    x = torch.randn(4, 2, 7)
    torch.testing.assert_close(layer(x), x @ base.weight.T + base.bias, rtol=0, atol=1e-6)


def test_lora_merge_equals_unmerged_and_dense_formula() -> None:
    torch.manual_seed(1)
    base = nn.Linear(9, 6)
    layer = LoRALinear(base, r=2, alpha=5.0)
    with torch.no_grad():
        layer.lora_B.normal_()
    x = torch.randn(10, 9, dtype=torch.float32)
    merged = layer.merge()
    assert type(merged) is nn.Linear
    torch.testing.assert_close(merged(x), layer(x), rtol=1e-5, atol=1e-5)
    # dense reference built by hand in float64
    W = base.weight.double() + 2.5 * layer.lora_B.double() @ layer.lora_A.double()
    torch.testing.assert_close(merged(x).double(), x.double() @ W.T + base.bias.double(), rtol=1e-5, atol=1e-5)


def test_lora_only_a_and_b_train() -> None:
    layer = LoRALinear(nn.Linear(4, 3), r=2, alpha=2.0)
    trainable = {n for n, p in layer.named_parameters() if p.requires_grad}
    assert trainable == {"lora_A", "lora_B"}
    assert count_parameters(layer) == 2 * 4 + 3 * 2


def test_lora_gradient_is_projected_dense_gradient() -> None:
    """dL/dB = s G A^T and dL/dA = s B^T G, with G the gradient of the dense weight W + s B A."""
    torch.manual_seed(2)
    base = nn.Linear(8, 5, bias=False).double()
    layer = LoRALinear(base, r=3, alpha=1.5)
    with torch.no_grad():
        layer.lora_B.normal_()
    x, y = torch.randn(20, 8, dtype=torch.float64), torch.randn(20, 5, dtype=torch.float64)
    ((layer(x) - y) ** 2).sum().backward()
    W = (base.weight + layer.delta_weight()).detach().requires_grad_(True)
    ((x @ W.T - y) ** 2).sum().backward()
    s, G = layer.scaling, W.grad
    torch.testing.assert_close(layer.lora_B.grad, s * G @ layer.lora_A.detach().T)
    torch.testing.assert_close(layer.lora_A.grad, s * layer.lora_B.detach().T @ G)


def test_lora_follows_dtype() -> None:
    layer = LoRALinear(nn.Linear(4, 3).double(), r=1, alpha=1.0)
    assert layer.lora_A.dtype == torch.float64 and layer(torch.randn(2, 4, dtype=torch.float64)).dtype == torch.float64


@pytest.mark.parametrize("kw", [dict(r=0, alpha=1.0), dict(r=-1, alpha=1.0), dict(r=1.5, alpha=1.0),
                                dict(r=2, alpha=0.0), dict(r=2, alpha=1.0, dropout=1.0)])
def test_lora_bad_input(kw: dict) -> None:
    with pytest.raises(ValueError):
        LoRALinear(nn.Linear(3, 3), **kw)


def test_lora_base_type() -> None:
    with pytest.raises(TypeError, match="base"):
        LoRALinear(nn.Conv1d(3, 3, 1), r=1, alpha=1.0)  # type: ignore[arg-type]


def test_add_lora_keeps_output_and_freezes() -> None:
    m = _model()
    tokens = torch.randint(0, 11, (3, 9))
    before = m(tokens)
    names = add_lora(m, r=2, alpha=4.0)
    assert names == [f"blocks.{i}.attn.{w}" for i in range(2) for w in ("wq", "wv")]
    torch.testing.assert_close(m(tokens), before, rtol=0, atol=1e-6)
    trainable = [n for n, p in m.named_parameters() if p.requires_grad]
    assert all(n.endswith(("lora_A", "lora_B")) for n in trainable) and len(trainable) == 8
    # per wrapped layer: r * (in + out)
    assert count_parameters(m) == 2 * (2 * (16 + 16) + 2 * (16 + 8))


def test_add_lora_no_match_is_clear() -> None:
    with pytest.raises(ValueError, match="q_proj.*linear layers are"):
        add_lora(_model(), r=2, alpha=2.0, target=("q_proj", "v_proj"))
    with pytest.raises(TypeError, match="target"):
        add_lora(_model(), r=2, alpha=2.0, target=())


def test_merge_lora_on_model() -> None:
    m = _model()
    add_lora(m, r=3, alpha=3.0, target=("wq", "wv", "w_up"))
    with torch.no_grad():
        for name, p in m.named_parameters():
            if name.endswith("lora_B"):
                p.normal_(std=0.3)
    tokens = torch.randint(0, 11, (2, 12))
    out = m(tokens)
    assert merge_lora(m) == 6
    assert not any(isinstance(x, LoRALinear) for x in m.modules())
    torch.testing.assert_close(m(tokens), out, rtol=1e-4, atol=1e-5)
    assert count_parameters(m, trainable_only=False) == param_count(CFG)


def test_count_parameters_manual_sum() -> None:
    m = _model()
    assert count_parameters(m, trainable_only=False) == sum(p.numel() for p in m.parameters()) == param_count(CFG)
    m.head.weight.requires_grad_(False)
    assert count_parameters(m) == param_count(CFG) - 11 * 16
    with pytest.raises(TypeError):
        count_parameters(torch.zeros(3))  # type: ignore[arg-type]


def test_adapter_identity_at_init_and_count() -> None:
    a = Adapter(10, 3)
    u = torch.randn(4, 10)
    torch.testing.assert_close(a(u), u, rtol=0, atol=0)
    assert count_parameters(a) == 2 * 10 * 3 + 3 + 10
    with pytest.raises(ValueError, match="bottleneck"):
        Adapter(10, 0)
    with pytest.raises(ValueError, match="last dimension"):
        a(torch.randn(2, 9))


def test_add_adapters_on_model() -> None:
    m = _model()
    tokens = torch.randint(0, 11, (2, 7))
    before = m(tokens)
    names = add_adapters(m, 4)
    assert names == [f"blocks.{i}.{w}" for i in range(2) for w in ("attn.wo", "w_down")]
    torch.testing.assert_close(m(tokens), before, rtol=0, atol=1e-6)
    assert count_parameters(m) == 4 * (2 * 16 * 4 + 4 + 16)


def _sdpa_reference(q, k, v, pk, pv, mask=None):
    B = q.shape[0]
    keys = torch.cat([pk.expand(B, *pk.shape[-3:]), k], 2)
    values = torch.cat([pv.expand(B, *pv.shape[-3:]), v], 2)
    return F.scaled_dot_product_attention(q, keys, values, attn_mask=mask)


@pytest.mark.parametrize("batched_prefix", [False, True])
def test_prefix_attention_matches_sdpa(batched_prefix: bool) -> None:
    torch.manual_seed(3)
    B, H, T, P, d, dv = 2, 3, 5, 4, 8, 6
    q, k, v = torch.randn(B, H, T, d), torch.randn(B, H, T, d), torch.randn(B, H, T, dv)
    pk, pv = torch.randn(H, P, d), torch.randn(H, P, dv)
    if batched_prefix:
        pk, pv = pk.expand(B, H, P, d), pv.expand(B, H, P, dv)
    torch.testing.assert_close(prefix_attention(q, k, v, pk, pv), _sdpa_reference(q, k, v, pk, pv),
                               rtol=1e-5, atol=1e-6)


def test_prefix_attention_causal_explicit_mask() -> None:
    torch.manual_seed(4)
    B, H, T, S, P, d = 2, 2, 3, 6, 4, 8  # T < S: queries are the last T of S positions
    q, k, v = torch.randn(B, H, T, d), torch.randn(B, H, S, d), torch.randn(B, H, S, d)
    pk, pv = torch.randn(H, P, d), torch.randn(H, P, d)
    mask = torch.zeros(T, P + S, dtype=torch.bool)
    mask[:, :P] = True
    for i in range(T):
        mask[i, P:P + S - T + i + 1] = True  # query i sits at sequence position S - T + i
    torch.testing.assert_close(prefix_attention(q, k, v, pk, pv, causal=True),
                               _sdpa_reference(q, k, v, pk, pv, mask), rtol=1e-5, atol=1e-6)


def test_prefix_attention_bad_shapes() -> None:
    q = k = v = torch.randn(1, 2, 3, 4)
    with pytest.raises(ValueError, match="prefix_k"):
        prefix_attention(q, k, v, torch.randn(3, 5, 4), torch.randn(2, 5, 4))
    with pytest.raises(ValueError, match="prefix_v"):
        prefix_attention(q, k, v, torch.randn(2, 5, 4), torch.randn(2, 6, 4))
    with pytest.raises(ValueError, match="prefix_k"):
        prefix_attention(q, k, v, torch.randn(2, 5, 3), torch.randn(2, 5, 4))
    with pytest.raises(TypeError, match="prefix_k"):
        prefix_attention(q, k, v, torch.zeros(2, 5, 4, dtype=torch.long), torch.randn(2, 5, 4))
    with pytest.raises(ValueError, match="causal"):
        prefix_attention(q, torch.randn(1, 2, 2, 4), torch.randn(1, 2, 2, 4),
                         torch.randn(2, 5, 4), torch.randn(2, 5, 4), causal=True)


def test_prefix_tuning_equals_real_context() -> None:
    """A real prompt's KV cache is one particular prefix: same logits as running prompt + sequence."""
    m = _model(5)
    ctx = torch.randint(0, 11, (1, 4)).expand(3, 4)
    x = torch.randint(0, 11, (3, 6))
    with torch.no_grad():
        full = m(torch.cat([ctx, x], 1))[:, 4:]
        cache = m.new_cache(3)
        m(ctx, cache=cache)
    pt = PrefixTuning(copy.deepcopy(m), 4, hidden=None)
    with torch.no_grad():
        pt.prefix.copy_(torch.stack([cache.k[:, 0, :, :4], cache.v[:, 0, :, :4]], 1))
    torch.testing.assert_close(pt(x), full, rtol=1e-4, atol=1e-5)


def test_prefix_tuning_trainable_and_materialize() -> None:
    m = _model()
    pt = PrefixTuning(m, 3, hidden=8)
    n_prefix = 2 * 2 * 2 * 3 * 4  # layers * (k, v) * kv heads * P * d_head
    n_mlp = 3 * 16 + (16 * 8 + 8) + (8 * n_prefix // 3 + n_prefix // 3)
    assert count_parameters(pt) == n_mlp
    x = torch.randint(0, 11, (2, 5))
    out = pt(x)
    pt.materialize()
    assert count_parameters(pt) == n_prefix
    torch.testing.assert_close(pt(x), out)
    with pytest.raises(ValueError, match="n_prefix"):
        PrefixTuning(_model(), 0)
    with pytest.raises(TypeError, match="TinyLlama"):
        PrefixTuning(nn.Linear(2, 2), 2)  # type: ignore[arg-type]


def test_finetune_memory() -> None:
    assert finetune_memory_bytes(100, 100) == 1600
    assert finetune_memory_bytes(100, 0) == 200
    assert finetune_memory_bytes(100, 10, frozen_bytes=4) == 4 * 90 + 16 * 10
    with pytest.raises(ValueError, match="n_trainable"):
        finetune_memory_bytes(10, 11)
    with pytest.raises(ValueError, match="n_total"):
        finetune_memory_bytes(-1, 0)


def test_add_lora_bad_alpha_leaves_model_untouched() -> None:
    m = _model()
    with pytest.raises(ValueError, match="alpha"):
        add_lora(m, r=2, alpha=-1.0)
    assert all(p.requires_grad for p in m.parameters())
    assert not any(isinstance(x, LoRALinear) for x in m.modules())
    with pytest.raises(ValueError, match="r must be"):
        add_lora(m, r=0, alpha=1.0)


def test_prefix_tuning_bad_tokens() -> None:
    pt = PrefixTuning(_model(), 2, hidden=None)
    with pytest.raises(TypeError, match="tokens"):
        pt(torch.zeros(2, 3))
    with pytest.raises(ValueError, match="tokens"):
        pt(torch.zeros(3, dtype=torch.long))
    with pytest.raises(ValueError, match="max_seq_len"):
        pt(torch.zeros(1, 31, dtype=torch.long))


def test_adapter_matches_formula_with_trained_weights() -> None:
    """(peft-adapter) written out by hand: u + W_up gelu(W_down u + b_down) + b_up, with W_up nonzero."""
    torch.manual_seed(6)
    a = Adapter(6, 2)
    with torch.no_grad():
        a.up.weight.normal_()
        a.up.bias.normal_()
    u = torch.randn(5, 6)
    h = u @ a.down.weight.T + a.down.bias
    gelu = 0.5 * h * (1 + torch.erf(h / 2 ** 0.5))
    torch.testing.assert_close(a(u), u + gelu @ a.up.weight.T + a.up.bias)
    # at init only W_up's gradient is nonzero (W_down's vanishes because W_up = 0), as the page says
    b = Adapter(6, 2)
    (b(u) ** 2).sum().backward()
    assert b.up.weight.grad.abs().sum() > 0 and b.down.weight.grad.abs().sum() == 0
