"""Layers against PyTorch with the same weights: outputs, input gradients and parameter
gradients. Tolerances: float64 rtol 1e-10 (atol 1e-12); float32 rtol 1e-5 (atol 1e-5,
since the two libraries sum in different orders)."""

import numpy as np
import pytest

import minilm as ml
import minilm.functional as F
from minilm import nn

from ..helpers import oracle

torch = oracle("torch", reason="PyTorch is the reference for layer parity; pip install torch")
tnn = torch.nn

TOLERANCES = {
    np.float64: dict(rtol=1e-10, atol=1e-12),
    np.float32: dict(rtol=1e-5, atol=1e-5),
}
DTYPES = pytest.mark.parametrize("dtype", [np.float64, np.float32], ids=["float64", "float32"])
TORCH_DTYPE = {np.float64: torch.float64, np.float32: torch.float32}


def copy_weights(ours, theirs, names=None):
    """Give the torch module our weights; `names` maps torch names to ours (default: equal)."""
    state = ours.state_dict()
    with torch.no_grad():
        for name, p in theirs.named_parameters():
            p.copy_(torch.from_numpy(state[(names or {}).get(name, name)].numpy()))


def compare(ours, theirs, inputs, dtype, forward, torch_forward, names=None, seed=0):
    """Run both modules on the same inputs, push the same random output gradient back, and
    compare outputs, input gradients and parameter gradients."""
    tol = TOLERANCES[dtype]
    ours.to(dtype=dtype)
    theirs.to(TORCH_DTYPE[dtype])
    copy_weights(ours, theirs, names)
    inputs = [a.astype(dtype) if a.dtype.kind == "f" else a for a in inputs]  # integer ids stay integers
    xs = [ml.tensor(a, device=ml.default_device(), requires_grad=a.dtype.kind == "f") for a in inputs]
    txs = [torch.tensor(a, requires_grad=a.dtype.kind == "f") for a in inputs]
    outs, touts = forward(*xs), torch_forward(*txs)
    rng = np.random.default_rng(seed)
    loss, torch_loss = 0.0, 0.0
    for y, ty in zip(outs, touts):
        np.testing.assert_allclose(y.numpy(), ty.detach().numpy(), **tol, err_msg="output")
        direction = rng.standard_normal(y.shape).astype(dtype)
        loss = loss + (y * ml.tensor(direction, device=ml.default_device())).sum()
        torch_loss = torch_loss + (ty * torch.from_numpy(direction)).sum()
    loss.backward()
    torch_loss.backward()
    for i, (x, tx) in enumerate(zip(xs, txs)):
        if x.requires_grad:
            np.testing.assert_allclose(x.grad.numpy(), tx.grad.numpy(), **tol, err_msg=f"gradient of input {i}")
    grads = {name: p.grad for name, p in ours.named_parameters()}
    for name, p in theirs.named_parameters():
        ours_name = (names or {}).get(name, name)
        np.testing.assert_allclose(grads[ours_name].numpy(), p.grad.numpy(), **tol, err_msg=f"gradient of {name}")


def rand(*shape, seed=0):
    return np.random.default_rng(seed).standard_normal(shape)


@DTYPES
@pytest.mark.parametrize("bias", [True, False])
def test_linear(dtype, bias):
    ours, theirs = nn.Linear(5, 3, bias=bias), tnn.Linear(5, 3, bias=bias)
    compare(ours, theirs, [rand(2, 4, 5)], dtype, lambda x: [ours(x)], lambda x: [theirs(x)])


@DTYPES
@pytest.mark.parametrize("padding_idx", [None, 2])
def test_embedding(dtype, padding_idx):
    ours, theirs = nn.Embedding(6, 4, padding_idx=padding_idx), tnn.Embedding(6, 4, padding_idx=padding_idx)
    ids = np.array([[0, 2, 5, 2], [1, 1, 3, 2]])
    compare(ours, theirs, [ids], dtype, lambda i: [ours(i)], lambda i: [theirs(i)])


@DTYPES
def test_layer_norm(dtype):
    ours, theirs = nn.LayerNorm(6, eps=1e-6), tnn.LayerNorm(6, eps=1e-6)
    with ml.no_grad():
        ours.weight.copy_(rand(6, seed=1) * 0.5 + 1)
        ours.bias.copy_(rand(6, seed=2))
    compare(ours, theirs, [rand(3, 2, 6) * 3 + 1], dtype, lambda x: [ours(x)], lambda x: [theirs(x)])


@DTYPES
@pytest.mark.parametrize("ours, theirs", [
    (nn.GELU(), tnn.GELU()), (nn.GELU("tanh"), tnn.GELU("tanh")), (nn.ReLU(), tnn.ReLU()),
    (nn.Tanh(), tnn.Tanh()), (nn.Sigmoid(), tnn.Sigmoid()),
], ids=["gelu", "gelu_tanh", "relu", "tanh", "sigmoid"])
def test_activations(dtype, ours, theirs):
    compare(ours, theirs, [rand(4, 5) * 3], dtype, lambda x: [ours(x)], lambda x: [theirs(x)])


MHA_NAMES = {"in_proj_weight": "in_proj.weight", "in_proj_bias": "in_proj.bias"}


@DTYPES
@pytest.mark.parametrize("mode", ["self", "self-causal-padded", "cross", "cross-kv", "per-head"])
def test_multi_head_attention(dtype, mode):
    ours, theirs = nn.MultiHeadAttention(8, 2), tnn.MultiheadAttention(8, 2, batch_first=True)
    padding = np.array([[False, False, False, True], [False, False, False, False]])
    causal = np.triu(np.ones((4, 4), dtype=bool), 1)  # torch: True = not allowed
    average = mode != "per-head"
    inputs = [rand(2, 4, 8)]
    if mode.startswith("cross"):
        inputs.append(rand(2, 3, 8, seed=1))
    if mode == "cross-kv":
        inputs.append(rand(2, 3, 8, seed=2))

    def forward(*xs):
        kwargs = dict(key_padding_mask=padding, is_causal=True) if mode == "self-causal-padded" else {}
        out, w = ours(xs[0], *xs[1:], need_weights=True, average_attn_weights=average, **kwargs)
        return [out, w]

    def torch_forward(*xs):
        key = xs[1] if len(xs) > 1 else xs[0]
        value = xs[2] if len(xs) > 2 else key
        kwargs = {}
        if mode == "self-causal-padded":
            kwargs = dict(key_padding_mask=torch.from_numpy(padding), attn_mask=torch.from_numpy(causal))
        out, w = theirs(xs[0], key, value, need_weights=True, average_attn_weights=average, **kwargs)
        return [out, w]

    compare(ours, theirs, inputs, dtype, forward, torch_forward, names=MHA_NAMES)


BLOCK_NAMES = {
    "self_attn.in_proj_weight": "attn.in_proj.weight", "self_attn.in_proj_bias": "attn.in_proj.bias",
    "self_attn.out_proj.weight": "attn.out_proj.weight", "self_attn.out_proj.bias": "attn.out_proj.bias",
    "linear1.weight": "mlp.fc.weight", "linear1.bias": "mlp.fc.bias",
    "linear2.weight": "mlp.proj.weight", "linear2.bias": "mlp.proj.bias",
    "norm1.weight": "ln_1.weight", "norm1.bias": "ln_1.bias", "norm2.weight": "ln_2.weight", "norm2.bias": "ln_2.bias",
}


@DTYPES
@pytest.mark.parametrize("norm_first", [True, False], ids=["pre_ln_gpt", "post_ln_bert"])
@pytest.mark.parametrize("activation", ["gelu", "gelu_tanh"])
@pytest.mark.parametrize("causal", [True, False], ids=["causal", "bidirectional"])
def test_transformer_block_matches_transformer_encoder_layer(dtype, norm_first, activation, causal):
    ours = nn.TransformerBlock(8, 2, d_ff=16, dropout=0.0, norm_first=norm_first, activation=activation, causal=causal)
    torch_activation = "gelu" if activation == "gelu" else (lambda x: torch.nn.functional.gelu(x, approximate="tanh"))
    theirs = tnn.TransformerEncoderLayer(8, 2, dim_feedforward=16, dropout=0.0, activation=torch_activation,
                                         batch_first=True, norm_first=norm_first)
    padding = np.array([[False, False, False, False, True], [False] * 5])
    mask = torch.from_numpy(np.triu(np.ones((5, 5), dtype=bool), 1)) if causal else None
    compare(ours, theirs, [rand(2, 5, 8)], dtype,
            lambda x: [ours(x, key_padding_mask=padding)],
            lambda x: [theirs(x, src_mask=mask, src_key_padding_mask=torch.from_numpy(padding))],
            names=BLOCK_NAMES)


@DTYPES
@pytest.mark.parametrize("num_layers", [1, 2])
@pytest.mark.parametrize("batch_first", [True, False])
def test_rnn(dtype, num_layers, batch_first):
    ours = nn.RNN(3, 4, num_layers=num_layers, batch_first=batch_first)
    theirs = tnn.RNN(3, 4, num_layers=num_layers, batch_first=batch_first)
    x = rand(2, 5, 3) if batch_first else rand(5, 2, 3)
    compare(ours, theirs, [x, rand(num_layers, 2, 4, seed=1) * 0.5], dtype,
            lambda x, h: list(ours(x, h)), lambda x, h: list(theirs(x, h)))


@DTYPES
@pytest.mark.parametrize("num_layers", [1, 2])
@pytest.mark.parametrize("batch_first", [True, False])
@pytest.mark.parametrize("bias", [True, False])
def test_lstm(dtype, num_layers, batch_first, bias):
    ours = nn.LSTM(3, 4, num_layers=num_layers, batch_first=batch_first, bias=bias)
    theirs = tnn.LSTM(3, 4, num_layers=num_layers, batch_first=batch_first, bias=bias)
    x = rand(2, 6, 3) if batch_first else rand(6, 2, 3)
    h0, c0 = rand(num_layers, 2, 4, seed=1) * 0.5, rand(num_layers, 2, 4, seed=2) * 0.5

    def forward(x, h, c):
        out, (h_n, c_n) = ours(x, (h, c))
        return [out, h_n, c_n]

    def torch_forward(x, h, c):
        out, (h_n, c_n) = theirs(x, (h, c))
        return [out, h_n, c_n]

    compare(ours, theirs, [x, h0, c0], dtype, forward, torch_forward)


@DTYPES
@pytest.mark.parametrize(("small_gemm", "hidden"), [(70, 5), (10, 5), (900, 23)])
def test_lstm_with_the_step_gemm_in_blocks(monkeypatch, dtype, small_gemm, hidden):
    """The time loop cuts each step's GEMM into row blocks under OpenBLAS's small-matrix
    size; at these tiny sizes only a lowered limit exercises it: equal blocks as one stacked
    call (70: the forward's 20 rows as 4 blocks of 5; 10: 20 blocks of one row), unequal
    blocks where the row count has no divisor near the blocks needed (900, H=23: 92 rows in
    5 blocks of 19), and one product when even one row is too big (the backward at 10)."""
    monkeypatch.setattr(F, "_SMALL_GEMM", small_gemm)
    rng = np.random.default_rng(0)
    for rows in (4 * hidden, hidden):  # the forward's W_hh [4H, H] @ h, the backward's W_hh^T [H, 4H] @ dgates
        matrix = rng.standard_normal((rows, 4 * hidden if rows == hidden else hidden))
        v, out = rng.standard_normal((matrix.shape[1], 2)), np.empty((rows, 2))
        F._step_product(matrix, out)(v)
        np.testing.assert_allclose(out, matrix @ v, rtol=1e-13)
    ours, theirs = nn.LSTM(3, hidden, num_layers=2), tnn.LSTM(3, hidden, num_layers=2)

    def forward(module, x, h, c):
        out, (h_n, c_n) = module(x, (h, c))
        return [out, h_n, c_n]

    compare(ours, theirs, [rand(4, 2, 3), rand(2, 2, hidden, seed=1) * 0.5, rand(2, 2, hidden, seed=2) * 0.5], dtype,
            lambda *xs: forward(ours, *xs), lambda *xs: forward(theirs, *xs))


def test_lstm_backward_in_pieces_matches_torch(monkeypatch):
    """Forward projects the input and backward prepares its gate factors and hands its gate
    gradients on in pieces of F._LSTM_PIECE steps (W_hh's gradient summed over them); at 3
    steps a piece, 8 steps make the forward's pieces 0, 1-2 (the first one in halves), 3-5 and
    6-7, and the backward's 6-7, 3-5 and 0-2."""
    monkeypatch.setattr(F, "_LSTM_PIECE", 3)
    ours, theirs = nn.LSTM(3, 4, num_layers=2), tnn.LSTM(3, 4, num_layers=2)
    compare(ours, theirs, [rand(8, 2, 3)], np.float64, lambda x: [ours(x)[0]], lambda x: [theirs(x)[0]])


def test_lstm_zero_initial_state_matches_torch_default():
    ours, theirs = nn.LSTM(3, 4, batch_first=True), tnn.LSTM(3, 4, batch_first=True)
    compare(ours, theirs, [rand(2, 3, 3)], np.float64, lambda x: [ours(x)[0]], lambda x: [theirs(x)[0]])


def test_initialisation_matches_torch_distributions():
    """Same bounds as PyTorch's defaults (the values differ: different generators)."""
    torch.manual_seed(0)
    for ours, theirs in [(nn.Linear(64, 32), tnn.Linear(64, 32)), (nn.LSTM(16, 32), tnn.LSTM(16, 32))]:
        for (name, p), (_, q) in zip(ours.named_parameters(), theirs.named_parameters()):
            assert abs(p.numpy()).max() <= abs(q.detach().numpy()).max() * 1.05, name
            assert abs(p.numpy()).max() >= abs(q.detach().numpy()).max() * 0.9, name
