"""Llama (and Qwen2) against transformers: logits, float64 gradients, generate's ids, and
checkpoints in both directions, on tiny random models saved by transformers itself."""

import json

import numpy as np
import pytest

import minilm as ml
from minilm.models import CheckpointError, Llama, LlamaConfig

torch = pytest.importorskip("torch", reason="PyTorch is the reference for Llama parity")
transformers = pytest.importorskip("transformers", reason="transformers provides the reference Llama")

VOCAB = 89
LLAMA3 = {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
          "original_max_position_embeddings": 8}  # short, so the scaling changes positions 0..20
VARIANTS = {
    # name: (transformers config class, its arguments)
    "llama-gqa": ("LlamaConfig", dict(num_attention_heads=4, num_key_value_heads=2)),
    "llama3-tied": ("LlamaConfig", dict(num_attention_heads=4, num_key_value_heads=1, tie_word_embeddings=True,
                                        rope_parameters={"rope_theta": 500000.0, **LLAMA3})),
    "llama-biases": ("LlamaConfig", dict(num_attention_heads=4, attention_bias=True, mlp_bias=True)),
    "qwen2": ("Qwen2Config", dict(num_attention_heads=4, num_key_value_heads=2)),
}


def _reference_model(name):
    config_class, arguments = VARIANTS[name]
    config = getattr(transformers, config_class)(
        vocab_size=VOCAB, hidden_size=32, intermediate_size=48, num_hidden_layers=2, max_position_embeddings=64,
        rms_norm_eps=1e-5, bos_token_id=1, eos_token_id=2, **arguments)
    torch.manual_seed(0)
    model = getattr(transformers, config_class.replace("Config", "ForCausalLM"))(config).eval()
    with torch.no_grad():  # non-trivial norms and biases, so every weight matters
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return model


@pytest.fixture(scope="module", params=list(VARIANTS))
def checkpoint(request, tmp_path_factory):
    reference = _reference_model(request.param)
    folder = tmp_path_factory.mktemp(request.param)
    reference.save_pretrained(folder)
    return folder, reference, Llama.from_pretrained(folder)


def _ids(batch=2, length=12, seed=0):
    return np.random.default_rng(seed).integers(3, VOCAB, (batch, length))


def _left_padded():
    ids, mask = _ids(3, 10), np.ones((3, 10), dtype=np.int64)
    ids[1, :3], mask[1, :3] = 0, 0
    ids[2, :6], mask[2, :6] = 0, 0
    return ids, mask


def assert_logits_match(model, reference, ids, tolerance=1e-4):
    """minilm's and transformers' logits for `ids` agree within `tolerance`."""
    with torch.no_grad():
        expected = reference(torch.tensor(ids)).logits.numpy()
    with ml.no_grad():
        got = model(ids).logits.numpy()
    assert np.abs(got - expected).max() <= tolerance


def test_logits_equal_transformers(checkpoint):
    _, reference, model = checkpoint
    assert_logits_match(model, reference, _ids())


def test_left_padded_logits_equal_transformers(checkpoint):
    _, reference, model = checkpoint
    ids, mask = _left_padded()
    positions = np.maximum(np.cumsum(mask, axis=1) - 1, 0)  # what generate gives transformers
    with torch.no_grad():
        expected = reference(torch.tensor(ids), attention_mask=torch.tensor(mask),
                             position_ids=torch.tensor(positions)).logits.numpy()
    with ml.no_grad():
        got = model(ids, attention_mask=mask).logits.numpy()
    real = mask.astype(bool)
    assert np.abs(got[real] - expected[real]).max() <= 1e-4


def _float64_reference(reference, model, monkeypatch):
    """The reference in float64 throughout. transformers computes RMSNorm and the rotary
    tables in float32 even in a float64 model; for a float64 comparison of gradients they
    are done here in the model's dtype, with our rotation frequencies."""
    reference = reference.double()
    norm_class = type(reference.model.norm)
    rotary = reference.model.rotary_emb

    def rms_norm(self, hidden):
        return self.weight * (hidden * torch.rsqrt(hidden.pow(2).mean(-1, keepdim=True) + self.variance_epsilon))

    def rotary_tables(self, x, position_ids):
        angles = position_ids[..., None].double() * torch.from_numpy(model.rotary.inv_freq)
        angles = torch.cat([angles, angles], dim=-1)
        return angles.cos().to(x.dtype), angles.sin().to(x.dtype)

    monkeypatch.setattr(norm_class, "forward", rms_norm)
    monkeypatch.setattr(type(rotary), "forward", rotary_tables)
    return reference


def test_gradients_equal_torch_for_every_parameter(checkpoint, monkeypatch):
    folder, _, _ = checkpoint
    ml.set_default_dtype(ml.float64)
    try:
        model = Llama.from_pretrained(folder)
    finally:
        ml.set_default_dtype(ml.float32)
    reference_class = type(checkpoint[1])
    reference = _float64_reference(reference_class.from_pretrained(folder).eval(), model, monkeypatch)
    ids = _ids()
    targets = np.roll(ids, -1, axis=1)
    targets[:, -1] = -100
    loss = model(ids, targets=targets).loss
    loss.backward()
    logits = reference(torch.tensor(ids)).logits
    ref_loss = torch.nn.functional.cross_entropy(logits.reshape(-1, VOCAB), torch.tensor(targets).reshape(-1))
    ref_loss.backward()
    np.testing.assert_allclose(loss.item(), ref_loss.item(), rtol=1e-12)
    ref_params = dict(reference.named_parameters())
    ours = dict(model.named_parameters())
    for entry in model._hf_mapping():
        expected = np.concatenate([ref_params[part].grad.numpy() for part in entry.parts])
        np.testing.assert_allclose(ours[entry.ours].grad.numpy(), expected, rtol=1e-8, atol=1e-12, err_msg=entry.ours)


def _hf_generate(reference, ids, **kwargs):
    return reference.generate(torch.tensor(ids), do_sample=False, **kwargs).numpy()


def test_greedy_and_beam_search_equal_transformers(checkpoint):
    _, reference, model = checkpoint
    ids = _ids(2, 6)
    pad = next(t for t in range(3, VOCAB) if t not in ids)  # see test_generation: neither 0 nor in the prompts
    for kwargs in (dict(max_new_tokens=15), dict(max_new_tokens=10, num_beams=3, num_return_sequences=2)):
        expected = _hf_generate(reference, ids, eos_token_id=2, pad_token_id=pad, **kwargs)
        np.testing.assert_array_equal(model.generate(ids, eos_token_id=2, pad_token_id=pad, **kwargs), expected)


def test_left_padded_batch_generates_as_transformers(checkpoint):
    _, reference, model = checkpoint
    ids, mask = _left_padded()
    for kwargs in (dict(max_new_tokens=12), dict(max_new_tokens=8, num_beams=3)):
        expected = _hf_generate(reference, ids, attention_mask=torch.tensor(mask), pad_token_id=0, eos_token_id=2,
                                **kwargs)
        got = model.generate(ids, attention_mask=mask, pad_token_id=0, eos_token_id=2, **kwargs)
        np.testing.assert_array_equal(got, expected)


def test_save_pretrained_loads_in_transformers(checkpoint, tmp_path):
    _, reference, _ = checkpoint
    config = LlamaConfig.from_hf(reference.config.to_dict())
    ml.manual_seed(3)
    model = Llama(config)
    model.save_pretrained(tmp_path)
    assert_logits_match(model, type(reference).from_pretrained(tmp_path).eval(), _ids())
    assert Llama.from_pretrained(tmp_path).config == config


def test_sharded_checkpoint_loads(tmp_path):
    reference = _reference_model("llama-gqa")
    reference.save_pretrained(tmp_path, max_shard_size="20KB")
    assert (tmp_path / "model.safetensors.index.json").exists()
    assert_logits_match(Llama.from_pretrained(tmp_path), reference, _ids())


def test_shard_outside_the_folder_is_refused(tmp_path):
    reference = _reference_model("llama-gqa")
    reference.save_pretrained(tmp_path, max_shard_size="20KB")
    index = tmp_path / "model.safetensors.index.json"
    content = json.loads(index.read_text())
    first = next(iter(content["weight_map"]))
    content["weight_map"][first] = "../elsewhere.safetensors"
    index.write_text(json.dumps(content))
    with pytest.raises(CheckpointError, match="outside the checkpoint folder"):
        Llama.from_pretrained(tmp_path)


@pytest.mark.parametrize("change, message", [
    (dict(hidden_act="gelu"), "hidden_act 'gelu'"),
    (dict(rope_scaling={"rope_type": "yarn", "factor": 4.0}), "'yarn' is not supported"),
    (dict(model_type="mixtral"), "model_type 'mixtral'"),
    (dict(model_type="qwen2", use_sliding_window=True), "use_sliding_window"),
    (dict(head_dim=16), "head_dim 16"),
])
def test_unsupported_options_are_named(tmp_path, change, message):
    config = LlamaConfig(vocab_size=VOCAB, hidden_size=32, intermediate_size=48, num_hidden_layers=1,
                         num_attention_heads=4).to_hf()
    (tmp_path / "config.json").write_text(json.dumps({**config, **change}))
    with pytest.raises((CheckpointError, ValueError), match=message):
        Llama.from_pretrained(tmp_path)


def test_loss_ignores_minus_100_and_cache_matches_full_forward():
    model = Llama(LlamaConfig(vocab_size=VOCAB, hidden_size=32, intermediate_size=48, num_hidden_layers=2,
                              num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=32)).eval()
    ids = _ids()
    targets = np.roll(ids, -1, axis=1)
    targets[:, -4:] = -100
    with ml.no_grad():
        full = model(ids, targets=targets)
        kept = model(ids[:, :-3], targets=targets[:, :-3])
        assert full.loss.item() == pytest.approx(kept.loss.item(), rel=1e-6)
        decoder = model.decoder(ids.shape[1], use_cache=True)
        decoder.start(ids[:, :5], None)
        for t in range(5, ids.shape[1]):
            step = decoder.advance(ids[:, t], None)
            np.testing.assert_allclose(step, full.logits.numpy()[:, t], rtol=1e-4, atol=1e-5)
    with pytest.raises(ValueError, match="longer than the model's context"):
        model(np.zeros((1, 33), dtype=np.int64))
