"""The Llama family's layers: RMSNorm, SiLU / SwiGLU, rotary embedding, grouped-query attention.

Each is checked against finite differences in float64 (minilm.testing) and against PyTorch
(or transformers' own rotary code) with the same weights.
"""

import numpy as np
import pytest

import minilm as ml
import minilm.functional as F
from minilm import nn
from minilm.nn.rotary import rope_inverse_frequencies
from minilm.testing import gradcheck, gradgradcheck
from tests.helpers import leaf
from tests.nn.test_torch_parity import DTYPES, TORCH_DTYPE, compare, rand

torch = pytest.importorskip("torch", reason="PyTorch is the reference for layer parity; pip install torch")

LLAMA3 = {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
          "original_max_position_embeddings": 64}


# -- RMSNorm -------------------------------------------------------------------------------
def test_rms_norm_gradients_match_finite_differences():
    x, w = leaf(rand(2, 3, 5)), leaf(rand(5, seed=1))
    gradcheck(lambda x, w: F.rms_norm(x, w, eps=1e-6), [x, w])
    gradgradcheck(lambda x, w: F.rms_norm(x, w, eps=1e-6), [x, w])
    gradcheck(lambda x: F.rms_norm(x, eps=1e-3), [x])


@DTYPES
def test_rms_norm_matches_torch(dtype):
    ours, theirs = nn.RMSNorm(6, eps=1e-5), torch.nn.RMSNorm(6, eps=1e-5)
    with ml.no_grad():
        ours.weight.copy_(rand(6, seed=3))
    compare(ours, theirs, [rand(2, 4, 6)], dtype, lambda x: [ours(x)], lambda x: [theirs(x)])


def test_rms_norm_half_precision_is_normalised_in_float32():
    x = (rand(3, 8) * 300).astype(np.float16)  # squares overflow float16's range (65504)
    out = F.rms_norm(ml.tensor(x), eps=1e-6).numpy()
    wide = x.astype(np.float32)
    expected = (wide / np.sqrt((wide * wide).mean(-1, keepdims=True) + 1e-6)).astype(np.float16)
    assert out.dtype == np.float16 and np.isfinite(out).all()
    np.testing.assert_array_equal(out, expected)


def test_rms_norm_rejects_a_wrong_weight_shape():
    with pytest.raises(ValueError, match="rms_norm: weight has shape"):
        F.rms_norm(ml.tensor(rand(2, 4)), ml.tensor(rand(3)))


# -- SiLU and the SwiGLU MLP ---------------------------------------------------------------
def test_silu_gradients_match_finite_differences():
    x = leaf(rand(3, 4) * 3)
    gradcheck(F.silu, [x])
    gradgradcheck(F.silu, [x])


@DTYPES
def test_swiglu_matches_torch(dtype):
    ours = nn.SwiGLU(6, 10, bias=True)
    gate, up, down = torch.nn.Linear(6, 10), torch.nn.Linear(6, 10), torch.nn.Linear(10, 6)
    theirs = torch.nn.ModuleDict({"gate": gate, "up": up, "down": down})
    state = ours.state_dict()
    names = {"down.weight": "down.weight", "down.bias": "down.bias"}
    for torch_name in ("gate", "up"):
        names[f"{torch_name}.weight"] = names[f"{torch_name}.bias"] = None
    ours.to(dtype=dtype)
    theirs.to(TORCH_DTYPE[dtype])
    with torch.no_grad():  # gate_up's rows are [W_gate; W_up]
        gate_w, up_w = np.split(state["gate_up.weight"].numpy(), 2)
        gate_b, up_b = np.split(state["gate_up.bias"].numpy(), 2)
        for module, w, b in ((gate, gate_w, gate_b), (up, up_w, up_b)):
            module.weight.copy_(torch.from_numpy(w))
            module.bias.copy_(torch.from_numpy(b))
        down.weight.copy_(torch.from_numpy(state["down.weight"].numpy()))
        down.bias.copy_(torch.from_numpy(state["down.bias"].numpy()))
    x = rand(2, 3, 6).astype(dtype)
    ours_x, torch_x = ml.tensor(x, requires_grad=True), torch.tensor(x, requires_grad=True)
    y = ours(ours_x)
    ty = down(torch.nn.functional.silu(gate(torch_x)) * up(torch_x))
    tol = dict(rtol=1e-10, atol=1e-12) if dtype == np.float64 else dict(rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(y.numpy(), ty.detach().numpy(), **tol)
    direction = rand(*y.shape, seed=5).astype(dtype)
    (y * ml.tensor(direction)).sum().backward()
    (ty * torch.from_numpy(direction)).sum().backward()
    np.testing.assert_allclose(ours_x.grad.numpy(), torch_x.grad.numpy(), **tol)
    grads = {name: p.grad.numpy() for name, p in ours.named_parameters()}
    np.testing.assert_allclose(grads["gate_up.weight"], np.concatenate([gate.weight.grad, up.weight.grad]), **tol)
    np.testing.assert_allclose(grads["gate_up.bias"], np.concatenate([gate.bias.grad, up.bias.grad]), **tol)
    np.testing.assert_allclose(grads["down.weight"], down.weight.grad.numpy(), **tol)


# -- rotary position embedding -------------------------------------------------------------
def test_rotary_gradients_match_finite_differences():
    cos, sin = nn.RotaryEmbedding(6)(np.arange(3)[None], np.float64)
    x = leaf(rand(2, 2, 3, 6))
    gradcheck(lambda x: F.apply_rotary(x, cos, sin), [x])
    gradgradcheck(lambda x: F.apply_rotary(x, cos, sin), [x])


@pytest.mark.parametrize("scaling", [None, LLAMA3, {"rope_type": "linear", "factor": 4.0}],
                         ids=["default", "llama3", "linear"])
def test_rotary_matches_transformers(scaling):
    transformers = pytest.importorskip("transformers")
    from transformers.models.llama.modeling_llama import LlamaRotaryEmbedding, apply_rotary_pos_emb

    parameters = {"rope_theta": 500000.0, "rope_type": "default", **(scaling or {})}
    config = transformers.LlamaConfig(hidden_size=64, num_attention_heads=4, rope_parameters=parameters)
    reference = LlamaRotaryEmbedding(config)
    ours = nn.RotaryEmbedding(16, theta=500000.0, scaling=scaling)
    np.testing.assert_allclose(ours.inv_freq, reference.inv_freq.numpy(), rtol=1e-6)

    positions = np.array([[0, 1, 2, 3, 90, 91], [1, 1, 0, 1, 2, 3]])  # a left-padded row restarts at 0
    q, k = rand(2, 4, 6, 16), rand(2, 2, 6, 16, seed=1)
    cos, sin = reference(torch.zeros(1, dtype=torch.float64), torch.tensor(positions))
    expected_q, expected_k = apply_rotary_pos_emb(torch.tensor(q), torch.tensor(k), cos, sin)
    ours_cos, ours_sin = ours(positions, np.float64)
    np.testing.assert_allclose(F.apply_rotary(ml.tensor(q), ours_cos, ours_sin).numpy(), expected_q.numpy(), atol=1e-5)
    np.testing.assert_allclose(F.apply_rotary(ml.tensor(k), ours_cos, ours_sin).numpy(), expected_k.numpy(), atol=1e-5)


def test_rotary_scores_depend_on_relative_position_only():
    rotary = nn.RotaryEmbedding(8, theta=100.0)
    q, k = rand(1, 1, 1, 8), rand(1, 1, 1, 8, seed=1)

    def score(m, n):
        rq = F.apply_rotary(ml.tensor(q), *rotary(np.array([[m]]), np.float64)).numpy()
        rk = F.apply_rotary(ml.tensor(k), *rotary(np.array([[n]]), np.float64)).numpy()
        return float((rq * rk).sum())

    assert score(7, 3) == pytest.approx(score(24, 20), rel=1e-10)
    assert score(7, 3) != pytest.approx(score(7, 4), rel=1e-3)


def test_unsupported_rope_scaling_is_an_error():
    with pytest.raises(ValueError, match="'yarn' is not supported"):
        rope_inverse_frequencies(16, scaling={"rope_type": "yarn", "factor": 4.0})
    with pytest.raises(ValueError, match="needs 'low_freq_factor'"):
        rope_inverse_frequencies(16, scaling={"rope_type": "llama3", "factor": 8.0})


# -- grouped-query attention ---------------------------------------------------------------
def _torch_gqa(attention, x, heads, kv_heads, mask=None, rotary=None):
    """The reference: PyTorch's scaled_dot_product_attention with enable_gqa on our weights."""
    state = attention.state_dict()
    weight = torch.from_numpy(state["in_proj.weight"].numpy())
    c, kv = attention.embed_dim, attention.kv_dim
    batch, length, _ = x.shape
    qkv = x @ weight.T
    if "in_proj.bias" in state:
        qkv = qkv + torch.from_numpy(state["in_proj.bias"].numpy())
    q, k, v = qkv[..., :c], qkv[..., c:c + kv], qkv[..., c + kv:]
    q, k, v = (t.reshape(batch, length, n, -1).transpose(1, 2) for t, n in ((q, heads), (k, kv_heads), (v, kv_heads)))
    if rotary is not None:
        from transformers.models.llama.modeling_llama import apply_rotary_pos_emb

        cos, sin = (torch.from_numpy(np.concatenate([a, a], axis=-1)[:, 0]) for a in rotary)
        q, k = apply_rotary_pos_emb(q, k, cos, sin)
    out = torch.nn.functional.scaled_dot_product_attention(q, k, v, attn_mask=mask, enable_gqa=True,
                                                           is_causal=mask is None)
    out = out.transpose(1, 2).reshape(batch, length, c)
    return out @ torch.from_numpy(state["out_proj.weight"].numpy()).T


@pytest.mark.parametrize("padded", [False, True], ids=["causal", "causal+padding"])
def test_grouped_query_attention_matches_torch(padded):
    pytest.importorskip("transformers")
    ml.set_default_dtype(ml.float64)
    try:
        attention = nn.MultiHeadAttention(12, 6, num_kv_heads=2, bias=False)
    finally:
        ml.set_default_dtype(ml.float32)
    x = rand(2, 5, 12)
    keep = np.ones((2, 5), dtype=bool)
    if padded:
        keep[1, :2] = False  # left padding
    padding = np.where(keep, 0.0, np.finfo(np.float64).min)
    rotary = nn.RotaryEmbedding(2)(np.maximum(np.cumsum(keep, axis=1) - 1, 0), np.float64)
    tx = torch.tensor(x, requires_grad=True)
    causal = torch.tril(torch.ones(5, 5, dtype=torch.bool))
    mask = torch.zeros(2, 1, 5, 5, dtype=torch.float64).masked_fill(~causal, -torch.inf) + \
        torch.from_numpy(padding)[:, None, None, :]
    expected = _torch_gqa(attention, tx, 6, 2, mask=mask, rotary=rotary)
    ours_x = ml.tensor(x, requires_grad=True)
    out, _ = attention(ours_x, is_causal=True, key_padding_mask=padding, rotary=rotary)
    np.testing.assert_allclose(out.numpy(), expected.detach().numpy(), rtol=1e-10, atol=1e-12)
    direction = rand(2, 5, 12, seed=9)
    (out * ml.tensor(direction)).sum().backward()
    (expected * torch.from_numpy(direction)).sum().backward()
    # Padded positions' own gradients depend on how finfo.min swallowed their scores: compare real ones.
    np.testing.assert_allclose(ours_x.grad.numpy()[keep], tx.grad.numpy()[keep], rtol=1e-10, atol=1e-12)


def test_grouped_query_attention_gradients_match_finite_differences():
    ml.set_default_dtype(ml.float64)
    try:
        attention = nn.MultiHeadAttention(8, 4, num_kv_heads=2, bias=True, out_bias=False)
    finally:
        ml.set_default_dtype(ml.float32)
    assert attention.out_proj.bias is None and attention.in_proj.weight.shape == (16, 8)
    rotary = nn.RotaryEmbedding(2)(np.arange(3)[None], np.float64)
    x = leaf(rand(2, 3, 8))
    weight = attention.in_proj.weight
    gradcheck(lambda x, w: attention(x, is_causal=True, rotary=rotary)[0], [x, weight])


def test_grouped_query_cache_decoding_equals_full_forward():
    attention = nn.MultiHeadAttention(12, 6, num_kv_heads=3).eval()
    rotary = nn.RotaryEmbedding(2)
    x = ml.tensor(rand(2, 6, 12).astype(np.float32))
    with ml.no_grad():
        full, weights = attention(x, is_causal=True, rotary=rotary(np.arange(6)[None], np.float32), need_weights=True,
                                  average_attn_weights=False)
        cache = nn.KVCache()
        steps = [attention(x[:, :4], is_causal=True, cache=cache, rotary=rotary(np.arange(4)[None], np.float32))[0]]
        for t in (4, 5):
            steps.append(attention(x[:, t:t + 1], is_causal=True, cache=cache,
                                   rotary=rotary(np.array([[t]]), np.float32))[0])
    assert cache.key.shape == (2, 3, 6, 2)  # the cache holds the 3 key/value heads, not 6
    assert weights.shape == (2, 6, 6, 6)
    np.testing.assert_allclose(ml.concatenate(steps, axis=1).numpy(), full.numpy(), rtol=1e-5, atol=1e-6)


def test_grouped_query_attention_rejects_indivisible_heads():
    with pytest.raises(ValueError, match="num_heads 6 is not a multiple of num_kv_heads 4"):
        nn.MultiHeadAttention(12, 6, num_kv_heads=4)


def test_swiglu_gradients_match_finite_differences_and_the_composite():
    x = leaf(rand(2, 3, 8) * 2)
    gradcheck(F.swiglu, [x])
    gradgradcheck(F.swiglu, [x])
    gate, up = x[..., :4], x[..., 4:]
    np.testing.assert_allclose(F.swiglu(x).numpy(), (F.silu(gate) * up).numpy(), rtol=1e-12)


def test_skip_init_leaves_weights_unset_for_loading():
    with nn.init.skip_init():
        layer = nn.Linear(4, 3)
    assert not layer.weight.numpy().any()
    assert nn.Linear(4, 3).weight.numpy().any()  # outside, initialised as usual
