"""Every layer's gradients (input and parameters) against finite differences, float64,
over small random shapes and options drawn by hypothesis; plus the layers' behaviours
(padding rows, masks, dropout modes, the KV cache)."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import minilm as ml
from minilm import nn
from minilm.testing import arrays, gradcheck, gradgradcheck

from ..helpers import leaf

# Layers with many parameters are probed along random directions (6 per tensor) rather
# than element by element, which keeps each example to ~100 forward passes.
PROBES = dict(max_full_elements=12)
FEW = settings(max_examples=8)


def check_layer(module, x, forward=None, **kwargs):
    """gradcheck of module(x) w.r.t. x (if it requires grad) and every parameter, in float64."""
    module.to(dtype=ml.float64)
    forward = forward or module
    params = list(module.parameters())
    gradcheck(lambda x, *ps: forward(x), [x] + params, **{**PROBES, **kwargs})


@given(data=st.data(), bias=st.booleans())
def test_linear(data, bias):
    batch = data.draw(st.sampled_from([(), (2,), (2, 3)]))
    n_in, n_out = data.draw(st.integers(1, 4)), data.draw(st.integers(1, 4))
    check_layer(nn.Linear(n_in, n_out, bias=bias), leaf(data.draw(arrays(batch + (n_in,)))))


@given(data=st.data())
def test_embedding(data):
    vocab, width = data.draw(st.integers(2, 5)), data.draw(st.integers(1, 3))
    ids = np.asarray(data.draw(st.lists(st.integers(0, vocab - 1), min_size=1, max_size=6)))
    grid = ids.reshape(-1, 1 if ids.size % 2 else 2)
    check_layer(nn.Embedding(vocab, width), ml.tensor(grid, device=ml.default_device()))
    # With a padding_idx the padding row's gradient is zero by design (not the true
    # derivative), so it is checked on its own: every other row still matches.
    padding_idx = data.draw(st.integers(0, vocab - 1))
    padded = nn.Embedding(vocab, width, padding_idx=padding_idx).to(dtype=ml.float64)
    plain = nn.Embedding(vocab, width).to(dtype=ml.float64)
    plain.load_state_dict(padded.state_dict())
    for layer in (padded, plain):
        (layer(ml.tensor(ids, device=ml.default_device())) ** 2).sum().backward()
    expected = plain.weight.grad.numpy()
    expected[padding_idx] = 0.0
    np.testing.assert_array_equal(padded.weight.grad.numpy(), expected)


def test_embedding_padding_row_is_zero_and_only_this_lookup_skips_it():
    layer = nn.Embedding(4, 3, padding_idx=-1)
    assert layer.padding_idx == 3 and not layer.weight.numpy()[3].any()
    out = layer(ml.tensor([3, 1, 3]))
    tied = (layer.weight * 2.0).sum()  # another use of the same weight, e.g. a tied output layer
    (out.sum() + tied).backward()
    np.testing.assert_array_equal(layer.weight.grad.numpy()[3], [2.0, 2.0, 2.0])
    np.testing.assert_array_equal(layer.weight.grad.numpy()[1], [3.0, 3.0, 3.0])
    with pytest.raises(ValueError, match="padding_idx 4 is out of range"):
        nn.Embedding(4, 3, padding_idx=4)


@given(data=st.data(), affine=st.booleans())
def test_layer_norm(data, affine):
    shape = data.draw(st.sampled_from([(3,), (2, 4), (2, 1, 5)]))
    layer = nn.LayerNorm(shape[-1], elementwise_affine=affine)
    if affine:  # away from the defaults 1/0 so the parameter gradients are general
        with ml.no_grad():
            layer.weight.copy_(np.linspace(0.5, 1.5, shape[-1]))
            layer.bias.copy_(np.linspace(-0.3, 0.3, shape[-1]))
    check_layer(layer, leaf(data.draw(arrays(shape))))


@pytest.mark.parametrize("layer, away_from", [
    (nn.GELU(), ()), (nn.GELU(approximate="tanh"), ()), (nn.ReLU(), (0.0,)), (nn.Tanh(), ()), (nn.Sigmoid(), ()),
], ids=["gelu", "gelu_tanh", "relu", "tanh", "sigmoid"])
@given(data=st.data())
def test_activations(layer, away_from, data):
    shape = data.draw(st.sampled_from([(1,), (3,), (2, 3)]))
    check_layer(layer, leaf(data.draw(arrays(shape, -3, 3, away_from=away_from))))


@given(data=st.data(), p=st.sampled_from([0.0, 0.3, 0.7]))
def test_dropout(data, p):
    layer = nn.Dropout(p)
    x = leaf(data.draw(arrays((3, 4))))

    def seeded(x):
        ml.manual_seed(7)  # the same mask at every finite-difference probe
        return layer(x)

    check_layer(layer, x, forward=seeded)


def test_dropout_modes_and_scaling():
    layer = nn.Dropout(0.25)
    x = ml.ones(200, 200)
    y = layer(x).numpy()
    assert set(np.unique(y)) == {0.0, np.float32(1 / 0.75)}
    assert abs((y == 0).mean() - 0.25) < 0.01
    layer.eval()
    assert layer(x) is x


def mha_inputs(data):
    batch, length = data.draw(st.integers(1, 2)), data.draw(st.integers(1, 3))
    heads, head_dim = data.draw(st.integers(1, 2)), data.draw(st.integers(1, 2))
    cross = data.draw(st.booleans())
    source = data.draw(st.integers(1, 3)) if cross else length
    causal = not cross and data.draw(st.booleans())
    padding = None
    if data.draw(st.booleans()):
        padding = np.zeros((batch, source), dtype=bool)
        padding[:, 1:] = data.draw(arrays((batch, source - 1))) > 0.5  # key 0 always visible: no empty rows
    width = heads * head_dim
    x = leaf(data.draw(arrays((batch, length, width))))
    memory = leaf(data.draw(arrays((batch, source, width)))) if cross else None
    return heads, width, x, memory, causal, padding


@FEW
@given(data=st.data())
def test_multi_head_attention(data):
    heads, width, x, memory, causal, padding = mha_inputs(data)
    layer = nn.MultiHeadAttention(width, heads)
    layer.to(dtype=ml.float64)
    inputs = [x] + ([memory] if memory is not None else []) + list(layer.parameters())

    def forward(x, *rest):
        kv = rest[0] if memory is not None else None
        out, weights = layer(x, kv, key_padding_mask=padding, is_causal=causal, need_weights=True)
        return out + weights.sum(axis=-1, keepdims=True) * 0.5  # the weights' gradient is checked too

    gradcheck(forward, inputs, **PROBES)


def test_attention_masks_and_weights():
    layer = nn.MultiHeadAttention(4, 2)
    x = ml.randn(2, 3, 4)
    padding = np.array([[False, False, True], [False, False, False]])
    _, per_head = layer(x, key_padding_mask=padding, is_causal=True, need_weights=True, average_attn_weights=False)
    assert per_head.shape == (2, 2, 3, 3)
    w = per_head.numpy()
    assert np.allclose(w.sum(-1), 1.0)
    assert not w[:, :, np.triu_indices(3, 1)[0], np.triu_indices(3, 1)[1]].any()  # nothing above the diagonal
    assert not w[0, :, :, 2].any()  # the padded key
    _, averaged = layer(x, key_padding_mask=padding, is_causal=True, need_weights=True)
    np.testing.assert_allclose(averaged.numpy(), w.mean(axis=1), rtol=1e-6)
    # A float attn_mask adds to the scores; a boolean one marks forbidden pairs (True), as PyTorch's MHA.
    forbid = np.triu(np.ones((3, 3), dtype=bool), 1)
    additive = np.where(forbid, -np.inf, 0.0).astype(np.float32)
    a, _ = layer(x, attn_mask=forbid)
    b, _ = layer(x, attn_mask=additive)
    c, _ = layer(x, is_causal=True)
    np.testing.assert_allclose(a.numpy(), c.numpy(), rtol=1e-6)
    np.testing.assert_allclose(b.numpy(), c.numpy(), rtol=1e-6)
    with pytest.raises(ValueError, match="key_padding_mask has shape \\(3,\\), expected \\(2, 3\\)"):
        layer(x, key_padding_mask=np.zeros(3, dtype=bool))
    with pytest.raises(ValueError, match="not divisible"):
        nn.MultiHeadAttention(5, 2)


@pytest.mark.parametrize("causal", [False, True], ids=["bidirectional", "causal"])
def test_packed_attention_equals_the_padded_pass_at_real_tokens(causal):
    # tokens=: the query is the real tokens' rows [N, C]; the result is the padded pass's
    # output at those tokens, for right, left and no padding, with the weights as well.
    ml.manual_seed(0)
    layer = nn.MultiHeadAttention(8, 2).to(dtype=ml.float64)
    tokens = np.array([[True, True, True, False], [False, True, True, True], [True, True, True, True]])
    x = ml.tensor(np.random.default_rng(0).standard_normal((3, 4, 8)))
    full, full_weights = layer(x, key_padding_mask=~tokens, is_causal=causal, need_weights=True)
    packed, weights = layer(x[tokens], key_padding_mask=~tokens, is_causal=causal, need_weights=True, tokens=tokens)
    assert packed.shape == (int(tokens.sum()), 8)
    np.testing.assert_allclose(packed.numpy(), full.numpy()[tokens], rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(weights.numpy()[tokens], full_weights.numpy()[tokens], rtol=1e-12, atol=1e-12)
    with pytest.raises(ValueError, match=r"packed query must be \[10, 8\]"):
        layer(x[tokens][:5], key_padding_mask=~tokens, tokens=tokens)
    with pytest.raises(ValueError, match="tokens must be a boolean"):
        layer(x[tokens], tokens=tokens.astype(int))
    with pytest.raises(ValueError, match="plain self-attention only"):
        layer(x[tokens], x, tokens=tokens)


@pytest.mark.parametrize("norm_first", [True, False], ids=["pre_ln", "post_ln"])
def test_kv_cache_decoding_equals_the_full_causal_pass(norm_first):
    block = nn.TransformerBlock(8, 2, causal=True, norm_first=norm_first).to(dtype=ml.float64)
    x = leaf(np.random.default_rng(0).standard_normal((2, 6, 8)), requires_grad=False)
    full = block(x).numpy()
    cache = nn.KVCache()
    with ml.no_grad():
        prefix = block(x[:, :4], cache=cache).numpy()  # a prompt of 4 positions at once
        steps = [block(x[:, t : t + 1], cache=cache).numpy() for t in (4, 5)]  # then one at a time
    assert len(cache) == 6
    np.testing.assert_allclose(np.concatenate([prefix] + steps, axis=1), full, rtol=1e-12, atol=1e-12)


@FEW
@given(data=st.data(), norm_first=st.booleans(), activation=st.sampled_from(["gelu", "gelu_tanh", "relu"]),
       causal=st.booleans())
def test_transformer_block(data, norm_first, activation, causal):
    width = data.draw(st.sampled_from([2, 4]))
    block = nn.TransformerBlock(width, 2, d_ff=3, norm_first=norm_first, activation=activation, causal=causal)
    shape = (data.draw(st.integers(1, 2)), data.draw(st.integers(1, 3)), width)
    check_layer(block, leaf(data.draw(arrays(shape, away_from=(0.0,) if activation == "relu" else ()))))


def recurrent_inputs(data, lstm):
    input_size, hidden = data.draw(st.integers(1, 3)), data.draw(st.integers(1, 3))
    layers, batch_first, bias = data.draw(st.integers(1, 2)), data.draw(st.booleans()), data.draw(st.booleans())
    steps, batch = data.draw(st.integers(1, 4)), data.draw(st.integers(1, 2))
    cls = nn.LSTM if lstm else nn.RNN
    layer = cls(input_size, hidden, num_layers=layers, batch_first=batch_first, bias=bias)
    x = leaf(data.draw(arrays((batch, steps, input_size) if batch_first else (steps, batch, input_size))))
    state = [leaf(data.draw(arrays((layers, batch, hidden), -1, 1))) for _ in range(2 if lstm else 1)]
    return layer, x, state


@FEW
@given(data=st.data())
def test_rnn(data):
    layer, x, (h0,) = recurrent_inputs(data, lstm=False)
    layer.to(dtype=ml.float64)

    def forward(x, h0, *params):
        out, h_n = layer(x, h0)
        return out.sum() + (h_n * h_n).sum()

    gradcheck(forward, [x, h0] + list(layer.parameters()), **PROBES)


@FEW
@given(data=st.data())
def test_lstm(data):
    layer, x, (h0, c0) = recurrent_inputs(data, lstm=True)
    layer.to(dtype=ml.float64)

    def forward(x, h0, c0, *params):
        out, (h_n, c_n) = layer(x, (h0, c0))
        return out.sum() + (h_n * c_n).sum()

    gradcheck(forward, [x, h0, c0] + list(layer.parameters()), **PROBES)


def test_lstm_second_derivatives():
    layer = nn.LSTM(2, 3, num_layers=2).to(dtype=ml.float64)
    x = leaf(np.random.default_rng(0).uniform(-1, 1, (3, 2, 2)))
    gradgradcheck(lambda x, *params: (layer(x)[0] ** 2).sum(), [x] + list(layer.parameters()), max_full_elements=12)


def test_recurrent_shapes_and_errors():
    lstm = nn.LSTM(3, 5, num_layers=2, batch_first=True)
    out, (h, c) = lstm(ml.randn(4, 7, 3))
    assert out.shape == (4, 7, 5) and h.shape == c.shape == (2, 4, 5)
    assert [n for n, _ in lstm.named_parameters()][:4] == ["weight_ih_l0", "weight_hh_l0", "bias_ih_l0", "bias_hh_l0"]
    assert lstm.weight_ih_l0.shape == (20, 3) and lstm.weight_ih_l1.shape == (20, 5)
    with pytest.raises(ValueError, match="expected input \\[B, T, I\\] with I=3, got shape \\(4, 7, 2\\)"):
        lstm(ml.randn(4, 7, 2))
    rnn = nn.RNN(3, 5)
    with pytest.raises(ValueError, match="h0 must have shape \\(1, 2, 5\\)"):
        rnn(ml.randn(7, 2, 3), ml.zeros(2, 2, 5))


def test_default_dtype_is_float32_end_to_end():
    block = nn.TransformerBlock(8, 2, causal=True)
    lstm = nn.LSTM(8, 8, batch_first=True)
    assert all(p.dtype == np.float32 for p in list(block.parameters()) + list(lstm.parameters()))
    x = ml.randn(2, 3, 8, requires_grad=True)
    y = lstm(block(x))[0]
    assert y.dtype == np.float32
    y.sum().backward()
    assert x.grad.dtype == np.float32 and block.attn.in_proj.weight.grad.dtype == np.float32
