"""Module mechanics: registration, traversal, modes, devices/dtypes, state dicts, containers."""

import numpy as np
import pytest

import minilm as ml
from minilm import nn


class TiedLM(nn.Module):
    """Embedding and output layer sharing one weight, plus a buffer, as a GPT has."""

    def __init__(self, vocab=7, width=4):
        super().__init__()
        self.wte = nn.Embedding(vocab, width)
        self.blocks = nn.ModuleList([nn.Linear(width, width), nn.Linear(width, width)])
        self.ln_f = nn.LayerNorm(width)
        self.head = nn.Linear(width, vocab, bias=False)
        self.head.weight = self.wte.weight
        self.register_buffer("positions", ml.arange(5))
        self.register_buffer("scratch", ml.zeros(3), persistent=False)

    def forward(self, ids):
        x = self.wte(ids)
        for block in self.blocks:
            x = block(x).tanh()
        return self.head(self.ln_f(x))


def test_registration_and_traversal():
    model = TiedLM()
    names = [name for name, _ in model.named_parameters()]
    assert names == ["wte.weight", "blocks.0.weight", "blocks.0.bias", "blocks.1.weight", "blocks.1.bias",
                     "ln_f.weight", "ln_f.bias"]
    assert len(list(model.parameters())) == 7  # the tied weight once
    assert model.num_parameters() == 7 * 4 + 2 * (16 + 4) + 8
    assert [name for name, _ in model.named_modules()] == ["", "wte", "blocks", "blocks.0", "blocks.1", "ln_f", "head"]
    assert [type(m).__name__ for m in model.children()] == ["Embedding", "ModuleList", "LayerNorm", "Linear"]
    assert [name for name, _ in model.named_buffers()] == ["positions", "scratch"]
    assert isinstance(model.wte.weight, nn.Parameter) and model.wte.weight.requires_grad


def test_reassigning_and_deleting_attributes():
    model = nn.Linear(2, 3)
    model.weight = nn.Parameter(ml.zeros(3, 2))
    assert len(list(model.parameters())) == 2
    with pytest.raises(TypeError, match="nn.Parameter"):
        model.weight = ml.zeros(3, 2)
    model.bias = None
    assert [n for n, _ in model.named_parameters()] == ["weight"]
    del model.weight
    assert list(model.parameters()) == []
    with pytest.raises(AttributeError, match="no attribute 'weight'"):
        _ = model.weight


def test_train_eval_and_zero_grad():
    model = nn.Sequential(nn.Linear(3, 3), nn.Dropout(0.5))
    assert all(m.training for m in model.modules())
    model.eval()
    assert not any(m.training for m in model.modules())
    x = ml.randn(4, 3)
    np.testing.assert_array_equal(model(x).numpy(), model(x).numpy())  # dropout is off
    model.train()
    model(x).sum().backward()
    assert model[0].weight.grad is not None
    model.zero_grad(set_to_none=False)
    assert not model[0].weight.grad.numpy().any()
    model.zero_grad()
    assert model[0].weight.grad is None


def test_to_dtype_keeps_parameter_identity_and_ties():
    model = TiedLM()
    weight = model.wte.weight
    model.to(dtype=ml.float64)
    assert model.wte.weight is weight and model.head.weight is weight
    assert all(p.dtype == np.float64 for p in model.parameters())
    assert model.positions.dtype == np.int64  # integer buffers keep their dtype
    assert model(ml.tensor([[1, 2]])).dtype == np.float64
    with pytest.raises(TypeError, match="floating-point"):
        model.to(dtype=ml.int32)


def test_repr_is_a_tree():
    assert repr(nn.Sequential(nn.Linear(2, 3), nn.GELU(approximate="tanh"))) == (
        "Sequential(\n"
        "  (0): Linear(in_features=2, out_features=3, bias=True)\n"
        "  (1): GELU(approximate='tanh')\n"
        ")"
    )


def test_state_dict_has_every_name_and_persistent_buffers_only():
    model = TiedLM()
    state = model.state_dict()
    # PyTorch's order: a module's own parameters and buffers, then its children's.
    assert list(state) == ["positions", "wte.weight", "blocks.0.weight", "blocks.0.bias", "blocks.1.weight",
                           "blocks.1.bias", "ln_f.weight", "ln_f.bias", "head.weight"]
    assert all(isinstance(v, ml.Tensor) and not v.requires_grad for v in state.values())
    np.testing.assert_array_equal(state["head.weight"].numpy(), state["wte.weight"].numpy())


def test_load_state_dict_round_trip_keeps_weights_tied():
    source, target = TiedLM(), TiedLM()
    target.load_state_dict(source.state_dict())
    for (name, p), q in zip(source.named_parameters(), target.parameters()):
        np.testing.assert_array_equal(p.numpy(), q.numpy(), err_msg=name)
    assert target.head.weight is target.wte.weight
    with ml.no_grad():
        target.wte.weight[0, 0] = 42.0
    assert target.head.weight.numpy()[0, 0] == 42.0


def test_load_state_dict_error_lists_missing_unexpected_and_mismatched_keys():
    model = TiedLM()
    state = dict(model.state_dict())
    del state["ln_f.bias"], state["positions"]
    state["extra.weight"] = ml.zeros(2)
    state["blocks.0.weight"] = ml.zeros(4, 5)
    with pytest.raises(RuntimeError) as error:
        model.load_state_dict(state)
    message = str(error.value)
    assert "Error(s) in loading state_dict for TiedLM" in message
    assert "missing keys: 'positions', 'ln_f.bias'" in message
    assert "unexpected keys: 'extra.weight'" in message
    assert "shape mismatch for 'blocks.0.weight': expected (4, 4), got (4, 5)" in message


def test_load_state_dict_non_strict_reports_keys_but_still_checks_shapes():
    model = TiedLM()
    state = {"ln_f.weight": np.full(4, 2.0, dtype=np.float64), "nonsense": np.zeros(1)}
    result = model.load_state_dict(state, strict=False)
    assert result.unexpected_keys == ["nonsense"] and "ln_f.bias" in result.missing_keys
    np.testing.assert_array_equal(model.ln_f.weight.numpy(), np.full(4, 2.0))
    assert model.ln_f.weight.dtype == np.float32  # cast to the parameter's dtype
    with pytest.raises(RuntimeError, match="shape mismatch for 'ln_f.weight'"):
        model.load_state_dict({"ln_f.weight": np.zeros(5)}, strict=False)


def test_load_state_dict_bumps_versions():
    model = nn.Linear(2, 2)
    stale = (model(ml.ones(1, 2)) ** 2).sum()
    model.load_state_dict(nn.Linear(2, 2).state_dict())
    with pytest.raises(ml.GraphError, match="modified in place"):
        stale.backward()


def test_safetensors_helpers_round_trip(tmp_path):
    source, target = TiedLM(), TiedLM()
    source.save_safetensors(tmp_path / "model.safetensors")
    target.load_safetensors(tmp_path / "model.safetensors")
    np.testing.assert_array_equal(source.wte.weight.numpy(), target.head.weight.numpy())


def test_register_buffer_checks():
    module = nn.Module()
    with pytest.raises(TypeError, match="Parameter is trainable"):
        module.register_buffer("w", nn.Parameter(ml.zeros(1)))
    module.register_buffer("mask", ml.ones(2))
    module.mask = ml.zeros(2)  # re-assignment keeps it a buffer
    assert list(module.state_dict()) == ["mask"] and not module.mask.numpy().any()
    with pytest.raises(TypeError, match="buffer 'mask'"):
        module.mask = 3


def test_containers():
    seq = nn.Sequential(nn.Linear(2, 3), nn.ReLU(), nn.Linear(3, 1))
    assert len(seq) == 3 and isinstance(seq[1], nn.ReLU) and seq(ml.ones(5, 2)).shape == (5, 1)
    layers = nn.ModuleList([nn.Linear(2, 2)]).extend([nn.Linear(2, 2)])
    assert len(layers) == 2 and len(list(layers.parameters())) == 4 and len(layers[1:]) == 1
    heads = nn.ModuleDict({"a": nn.Linear(2, 1), "b": nn.Tanh()})
    assert list(heads) == ["a", "b"] and "a" in heads
    assert [n for n, _ in heads.named_parameters()] == ["a.weight", "a.bias"]
    with pytest.raises(TypeError, match="holds Modules"):
        layers.append(ml.zeros(1))


def test_subclass_must_call_super_init():
    class Broken(nn.Module):
        def __init__(self):
            self.fc = nn.Linear(1, 1)

    with pytest.raises(AttributeError, match="super\\(\\).__init__\\(\\)"):
        Broken()


def test_to_device_moves_parameters_grads_and_buffers_in_place():
    try:
        ml.get_device("cuda")
    except ml.BackendError as error:
        pytest.skip(f"no CUDA device: {error}")
    model = TiedLM().to("cpu")
    weight = model.wte.weight
    model(ml.tensor([[1, 2]], device="cpu")).sum().backward()
    model.to("cuda")
    assert model.wte.weight is weight and model.head.weight is weight
    assert all(t.device.name == "cuda" for t in list(model.parameters()) + list(model.buffers()))
    assert weight.grad.device.name == "cuda"
    out = model(ml.tensor([[1, 2]], device="cuda"))
    assert out.device.name == "cuda"
    model.cpu()
    assert weight.device.name == "cpu"
