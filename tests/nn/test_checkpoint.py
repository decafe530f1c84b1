"""Activation checkpointing: the same gradients as the plain backward (dropout included), fewer
arrays kept between forward and backward, and models switched on with one call."""

import numpy as np
import pytest

import minilm as ml
from minilm import nn
from minilm.autograd import GraphError
from minilm.models import GPT, GPTConfig, Llama, LlamaConfig


class Block(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc, self.drop, self.out = nn.Linear(6, 12), nn.Dropout(0.3), nn.Linear(12, 6)

    def forward(self, x, scale, mask=None):
        h = self.drop(self.fc(x).relu()) * scale
        if mask is not None:
            h = h * ml.tensor(mask)
        return x + self.out(h), "extra"


def _gradients(model):
    return {name: p.grad.numpy().copy() for name, p in model.named_parameters() if p.grad is not None}


def test_checkpoint_equals_plain_backward_with_dropout():
    ml.manual_seed(0)
    block = Block()
    x = ml.tensor(np.random.default_rng(0).standard_normal((3, 6)), requires_grad=True)
    scale = ml.tensor(np.full((3, 12), 1.5), requires_grad=True)
    mask = np.random.default_rng(1).integers(0, 2, (3, 12))

    results = []
    for use_checkpoint in (False, True):
        block.zero_grad()
        x.grad = scale.grad = None
        ml.manual_seed(7)
        if use_checkpoint:
            y, extra = nn.checkpoint(block, x, scale=scale, mask=mask)
        else:
            y, extra = block(x, scale=scale, mask=mask)
        after_forward = ml.default_device().rng.random()  # the caller's random stream goes on as without
        (y * y).sum().backward()
        assert extra == "extra"
        results.append((y.numpy(), _gradients(block), x.grad.numpy(), scale.grad.numpy(), after_forward))
    (y0, g0, x0, s0, r0), (y1, g1, x1, s1, r1) = results
    np.testing.assert_array_equal(y1, y0)
    assert g0.keys() == g1.keys() == {"fc.weight", "fc.bias", "out.weight", "out.bias"}
    for name in g0:
        np.testing.assert_array_equal(g1[name], g0[name], err_msg=name)
    np.testing.assert_array_equal(x1, x0)
    np.testing.assert_array_equal(s1, s0)
    assert r1 == r0


def _tiny_gpt(dropout):
    ml.manual_seed(0)
    return GPT(GPTConfig(vocab_size=50, n_layer=3, n_head=2, n_embd=16, block_size=16, dropout=dropout))


def _tiny_llama():
    ml.manual_seed(0)
    return Llama(LlamaConfig(vocab_size=50, hidden_size=16, intermediate_size=24, num_hidden_layers=3,
                             num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=16,
                             attention_dropout=0.1))


@pytest.mark.parametrize("make", [lambda: _tiny_gpt(0.2), _tiny_llama], ids=["gpt-dropout", "llama"])
def test_model_gradients_identical_with_checkpointing(make):
    ids = np.random.default_rng(0).integers(0, 50, (2, 10))
    targets = np.roll(ids, -1, axis=1)
    runs = []
    for enable in (False, True):
        model = make().train()
        if enable:
            model.gradient_checkpointing_enable()
        ml.manual_seed(3)
        _, loss = model(ids, targets=targets)  # a tuple or a ModelOutput
        loss.backward()
        runs.append(_gradients(model))
    plain, checkpointed = runs
    assert plain.keys() == checkpointed.keys() and len(plain) == len(dict(make().named_parameters()))
    for name in plain:
        np.testing.assert_allclose(checkpointed[name], plain[name], rtol=1e-6, atol=1e-9, err_msg=name)


def test_lora_adapters_behind_frozen_embeddings_get_gradients():
    """No activation entering the first block requires grad (the embedding is frozen): the
    block's own trainable weights must still make the checkpoint part of the graph."""
    ids = np.random.default_rng(0).integers(0, 50, (2, 10))
    runs = []
    for enable in (False, True):
        model = _tiny_llama()
        nn.lora.add_adapters(model, nn.lora.LoraConfig(r=2, target_modules=r"model\.layers\.0\.self_attn\.q_proj"))
        with ml.no_grad():
            for name, p in model.named_parameters():
                if "lora_B" in name:
                    p.fill_(0.1)
        if enable:
            model.gradient_checkpointing_enable()
        model(ids, targets=ids).loss.backward()
        runs.append(_gradients(model))
    assert list(runs[1]) == list(runs[0]) == ["blocks.0.attn.in_proj.lora_A.q_proj.weight",
                                              "blocks.0.attn.in_proj.lora_B.q_proj.weight"]
    for name in runs[0]:
        np.testing.assert_allclose(runs[1][name], runs[0][name], rtol=1e-6, atol=1e-9)


def _retained_arrays(loss) -> tuple[int, int]:
    """(count, bytes) of the distinct arrays the graph behind `loss` keeps alive for backward."""
    array_type = type(ml.default_device().xp.empty(0))  # NumPy's or CuPy's ndarray
    seen_functions, arrays, stack = set(), {}, [loss.creator]
    while stack:
        fn = stack.pop()
        if fn is None or id(fn) in seen_functions:
            continue
        seen_functions.add(id(fn))
        for value in vars(fn).values():
            for item in value if isinstance(value, (tuple, list)) else (value,):
                array = item.data if isinstance(item, ml.Tensor) else item
                if isinstance(array, array_type) and array.size > 1:
                    arrays[id(array)] = array.nbytes
        stack.extend(x.creator for x in fn.inputs or ())
    return len(arrays), sum(arrays.values())


def test_checkpointing_keeps_fewer_arrays_for_backward():
    ids = np.random.default_rng(0).integers(0, 50, (2, 16))
    kept = {}
    for enable in (False, True):
        model = _tiny_gpt(0.0).train()
        if enable:
            model.gradient_checkpointing_enable()
        _, loss = model(ids, targets=ids)
        kept[enable] = _retained_arrays(loss)
        loss.backward()
    (plain_count, plain_bytes), (count, nbytes) = kept[False], kept[True]
    assert count < plain_count / 2 and nbytes < plain_bytes / 2, kept


def test_checkpoint_passes_through_under_no_grad_and_refuses_double_backward():
    block = Block().eval()
    x = ml.tensor(np.ones((2, 6)), requires_grad=True)
    with ml.no_grad():
        y, _ = nn.checkpoint(block, x, 1.0)
        assert y.creator is None
    y, _ = nn.checkpoint(block, x, 1.0)
    with pytest.raises(GraphError, match="checkpoint"):
        y.sum().backward(create_graph=True)


def test_generation_is_unchanged_by_checkpointing():
    model = _tiny_llama().eval()
    prompt = np.array([[3, 4, 5]])
    expected = model.generate(prompt, max_new_tokens=5).tolist()
    model.gradient_checkpointing_enable()
    assert model.generate(prompt, max_new_tokens=5).tolist() == expected
    model.gradient_checkpointing_disable()
    assert "forward" not in vars(model.blocks[0])
