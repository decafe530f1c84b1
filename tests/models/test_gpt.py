"""GPT against Hugging Face's GPT-2: the same logits and gradients, both checkpoint directions."""

import numpy as np
import pytest

import minilm as ml
from minilm.models import GPT, CheckpointError, GPTConfig

from ..helpers import oracle

torch = oracle("torch", reason="PyTorch is the reference for GPT-2 parity")
transformers = oracle("transformers", reason="transformers provides the reference GPT-2")


@pytest.fixture(scope="module")
def hf_checkpoint(tmp_path_factory):
    torch.manual_seed(0)
    config = transformers.GPT2Config(vocab_size=97, n_positions=32, n_embd=32, n_layer=2, n_head=4,
                                     resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0)
    model = transformers.GPT2LMHeadModel(config).eval()
    with torch.no_grad():  # non-trivial biases and norms, so every weight matters
        for p in model.parameters():
            p.add_(0.02 * torch.randn_like(p))
    folder = tmp_path_factory.mktemp("gpt2")
    model.save_pretrained(folder)
    return folder, model


def _ids(batch=2, length=16, vocab=97):
    return np.random.default_rng(0).integers(0, vocab, (batch, length))


def test_logits_equal_transformers(hf_checkpoint):
    folder, reference = hf_checkpoint
    model = GPT.from_pretrained(folder)
    ids = _ids()
    with torch.no_grad():
        expected = reference(torch.tensor(ids)).logits.numpy()
    with ml.no_grad():
        got = model(ids).logits.numpy()
    assert np.abs(got - expected).max() <= 1e-4


def test_save_pretrained_loads_in_transformers(hf_checkpoint, tmp_path):
    ml.manual_seed(1)
    model = GPT(GPTConfig(vocab_size=97, n_layer=2, n_head=4, n_embd=32, block_size=32))
    model.save_pretrained(tmp_path)
    reloaded = transformers.GPT2LMHeadModel.from_pretrained(tmp_path).eval()
    ids = _ids()
    with torch.no_grad():
        expected = reloaded(torch.tensor(ids)).logits.numpy()
    with ml.no_grad():
        got = model(ids).logits.numpy()
    assert np.abs(got - expected).max() <= 1e-4


def test_gradients_equal_torch_for_every_parameter(hf_checkpoint):
    folder, reference = hf_checkpoint
    ml.set_default_dtype(ml.float64)
    try:
        model = GPT.from_pretrained(folder)
    finally:
        ml.set_default_dtype(ml.float32)
    reference = transformers.GPT2LMHeadModel.from_pretrained(folder).double().eval()
    ids = _ids()
    targets = np.roll(ids, -1, axis=1)
    _, loss = model(ids, targets=targets)
    loss.backward()
    ref_loss = torch.nn.functional.cross_entropy(reference(torch.tensor(ids)).logits.reshape(-1, 97),
                                                 torch.tensor(targets).reshape(-1))
    ref_loss.backward()
    np.testing.assert_allclose(loss.item(), ref_loss.item(), rtol=1e-12)
    ref_params = dict(reference.named_parameters())
    ours = dict(model.named_parameters())
    for entry in model._hf_mapping():
        expected = ref_params["transformer." + entry.theirs].grad.numpy()
        got = ours[entry.ours].grad.numpy()
        np.testing.assert_allclose(got.T if entry.transposed else got, expected, rtol=1e-8, atol=1e-12,
                                   err_msg=entry.ours)


def test_token_ids_out_of_range_raise():
    model = GPT(GPTConfig(vocab_size=10, n_layer=1, n_head=1, n_embd=8, block_size=8))
    with pytest.raises(IndexError, match="token id 10 is out of range"):
        model(np.array([[1, 10]]))
    with pytest.raises(IndexError, match="-1"):
        model(np.array([[-1, 2]]))


def test_sequence_longer_than_block_size_raises():
    model = GPT(GPTConfig(vocab_size=10, n_layer=1, n_head=1, n_embd=8, block_size=4))
    with pytest.raises(ValueError, match="longer than the model's context"):
        model(np.zeros((1, 5), dtype=np.int64))


def test_checkpoint_with_missing_or_misshapen_tensor_names_it(hf_checkpoint, tmp_path):
    folder, _ = hf_checkpoint
    from minilm.serialization import load_file, save_file

    tensors = load_file(folder / "model.safetensors")
    (tmp_path / "config.json").write_text((folder / "config.json").read_text())
    broken = dict(tensors)
    del broken["transformer.h.1.mlp.c_fc.bias"]
    broken["transformer.h.0.attn.c_attn.weight"] = np.zeros((32, 64), dtype=np.float32)
    save_file(broken, tmp_path / "model.safetensors")
    with pytest.raises(CheckpointError) as error:
        GPT.from_pretrained(tmp_path)
    message = str(error.value)
    assert "missing tensor 'transformer.h.1.mlp.c_fc.bias'" in message
    assert "'transformer.h.0.attn.c_attn.weight' has shape (32, 64), the model expects (32, 96)" in message
