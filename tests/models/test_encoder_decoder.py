"""The encoder-decoder Transformer against transformers' BART and Marian: logits, float64
gradients of every parameter, generate (greedy and beams) and both checkpoint directions."""

import numpy as np
import pytest

import minilm as ml
from minilm.models import GPT, CheckpointError, GPTConfig, Transformer, TransformerConfig

torch = pytest.importorskip("torch", reason="PyTorch is the reference for the encoder-decoder parity")
transformers = pytest.importorskip("transformers", reason="transformers provides the reference BART and Marian")

SIZES = dict(d_model=16, encoder_layers=2, decoder_layers=2, encoder_attention_heads=4, decoder_attention_heads=2,
             encoder_ffn_dim=32, decoder_ffn_dim=24, max_position_embeddings=24, dropout=0.0)
KINDS = {
    "bart": (lambda: transformers.BartForConditionalGeneration,
             dict(vocab_size=50, activation_function="gelu", pad_token_id=1, bos_token_id=0, eos_token_id=2,
                  decoder_start_token_id=2, forced_eos_token_id=2)),
    "marian": (lambda: transformers.MarianMTModel,
               dict(vocab_size=50, activation_function="swish", scale_embedding=True, pad_token_id=49,
                    eos_token_id=0, decoder_start_token_id=49, forced_eos_token_id=0)),
    # separate source and target vocabularies, output projection not tied
    "marian-separate": (lambda: transformers.MarianMTModel,
                        dict(vocab_size=50, decoder_vocab_size=40, share_encoder_decoder_embeddings=False,
                             tie_word_embeddings=False, activation_function="relu", scale_embedding=True,
                             pad_token_id=39, eos_token_id=0, decoder_start_token_id=39)),
}


def _hf_config(kind):
    make, options = KINDS[kind]
    config_class = transformers.BartConfig if make() is transformers.BartForConditionalGeneration else \
        transformers.MarianConfig
    return make(), config_class(**SIZES, **options)


@pytest.fixture(scope="module", params=list(KINDS))
def checkpoint(request, tmp_path_factory):
    """A randomly initialised transformers model, perturbed so every weight matters, saved."""
    kind = request.param
    model_class, config = _hf_config(kind)
    torch.manual_seed(0)
    reference = model_class(config).eval()
    with torch.no_grad():  # large enough that outputs depend on the source and some rows end early
        for name, p in reference.named_parameters():
            if "embed_positions" not in name or kind == "bart":  # Marian's sinusoids are fixed, not saved
                p.add_((0.3 if p.ndim > 1 else 0.05) * torch.randn_like(p))
        reference.final_logits_bias.add_(0.1 * torch.randn_like(reference.final_logits_bias))
    folder = tmp_path_factory.mktemp(kind)
    reference.save_pretrained(folder)
    return kind, folder, model_class


def _batch(model, rng=None, batch=3, source=7, target=5):
    """Right-padded sources (as tokenizers pad them) with their mask, and decoder inputs."""
    rng = rng or np.random.default_rng(0)
    c = model.config
    src = rng.integers(3, min(c.vocab_size, c.decoder_vocab_size) - 1, (batch, source))
    mask = np.ones((batch, source), dtype=np.int64)
    mask[1, 5:] = 0
    mask[2, 3:] = 0
    src[mask == 0] = c.pad_token_id
    tgt = rng.integers(3, c.decoder_vocab_size - 1, (batch, target))
    tgt[:, 0] = c.decoder_start_token_id
    return src, mask, tgt


def test_logits_equal_transformers(checkpoint):
    _, folder, model_class = checkpoint
    reference = model_class.from_pretrained(folder).eval()
    model = Transformer.from_pretrained(folder)
    src, mask, tgt = _batch(model)
    tgt_mask = np.ones_like(tgt)
    tgt_mask[0, -2:] = 0  # right-padded targets too
    with torch.no_grad():
        expected = reference(input_ids=torch.tensor(src), attention_mask=torch.tensor(mask),
                             decoder_input_ids=torch.tensor(tgt), decoder_attention_mask=torch.tensor(tgt_mask))
    with ml.no_grad():
        got = model(src, tgt, src_attention_mask=mask, tgt_attention_mask=tgt_mask)
    assert got.logits.shape == tuple(expected.logits.shape)
    assert np.abs(got.logits.numpy() - expected.logits.numpy()).max() <= 1e-4
    # encode and decode on their own give the same
    with ml.no_grad():
        memory = model.encode(src, mask)
        np.testing.assert_allclose(memory.numpy(), expected.encoder_last_hidden_state.numpy(), atol=1e-5)
        alone = model.decode(tgt, memory, src_attention_mask=mask, tgt_attention_mask=tgt_mask).logits.numpy()
    np.testing.assert_allclose(alone, got.logits.numpy(), atol=1e-6)


def test_cross_attention_weights_equal_transformers(checkpoint):
    """output_attentions: which source positions each target position reads, per layer and head."""
    _, folder, model_class = checkpoint
    reference = model_class.from_pretrained(folder, attn_implementation="eager").eval()
    model = Transformer.from_pretrained(folder)
    src, mask, tgt = _batch(model)
    with torch.no_grad():
        expected = reference(input_ids=torch.tensor(src), attention_mask=torch.tensor(mask),
                             decoder_input_ids=torch.tensor(tgt), output_attentions=True).cross_attentions
    with ml.no_grad():
        got = model(src, tgt, src_attention_mask=mask, output_attentions=True).attentions
    assert len(got) == len(expected) == model.config.decoder_layers
    for ours, theirs in zip(got, expected):
        assert ours.shape == tuple(theirs.shape)  # [B, H, T, S]
        np.testing.assert_allclose(ours.numpy(), theirs.numpy(), atol=1e-5)
        np.testing.assert_array_equal(ours.numpy()[2, :, :, 3:], 0.0)  # padded source positions get nothing


def test_gradients_equal_torch_for_every_parameter(checkpoint):
    _, folder, model_class = checkpoint
    ml.set_default_dtype(ml.float64)
    try:
        model = Transformer.from_pretrained(folder)
    finally:
        ml.set_default_dtype(ml.float32)
    reference = model_class.from_pretrained(folder).double().eval()
    src, mask, tgt = _batch(model)
    labels = np.roll(tgt, -1, axis=1)
    labels[:, -1] = model.config.eos_token_id
    labels[1, 3:] = -100  # ignored positions
    out = model(src, tgt, src_attention_mask=mask, labels=labels, label_smoothing=0.1)
    out.loss.backward()
    logits = reference(input_ids=torch.tensor(src), attention_mask=torch.tensor(mask),
                       decoder_input_ids=torch.tensor(tgt)).logits
    ref_loss = torch.nn.CrossEntropyLoss(label_smoothing=0.1)(logits.reshape(-1, logits.shape[-1]),
                                                               torch.tensor(labels).reshape(-1))
    ref_loss.backward()
    np.testing.assert_allclose(out.loss.item(), ref_loss.item(), rtol=1e-12)
    theirs = dict(reference.named_parameters())
    ours = dict(model.named_parameters())
    mapping = [m.prefixed(theirs="model.") for m in model._hf_mapping()] + model._hf_head_mapping()
    checked = set()
    for entry in mapping:
        if entry.ours not in ours:  # final_logits_bias: a buffer on both sides
            continue
        expected = np.concatenate([theirs[name].grad.numpy() for name in entry.parts], axis=0)
        np.testing.assert_allclose(ours[entry.ours].grad.numpy(), expected, rtol=1e-8, atol=1e-12,
                                   err_msg=entry.ours)
        checked.add(entry.ours)
    assert checked == set(ours)


def test_labels_alone_are_shifted_right_as_transformers_does(checkpoint):
    _, folder, model_class = checkpoint
    reference = model_class.from_pretrained(folder).eval()
    model = Transformer.from_pretrained(folder)
    src, mask, tgt = _batch(model)
    labels = tgt.copy()
    labels[0, -2:] = -100
    with torch.no_grad():
        expected = reference(input_ids=torch.tensor(src), attention_mask=torch.tensor(mask),
                             labels=torch.tensor(labels))
    with ml.no_grad():
        got = model(src, src_attention_mask=mask, labels=labels)
    np.testing.assert_allclose(got.loss.item(), expected.loss.item(), rtol=1e-5)
    assert np.abs(got.logits.numpy() - expected.logits.numpy()).max() <= 1e-4


@pytest.mark.parametrize("kind", ["bart", "marian"])
def test_save_pretrained_loads_in_transformers(kind, tmp_path):
    ml.manual_seed(1)
    options = dict(vocab_size=50, **{k: v for k, v in SIZES.items()})
    config = TransformerConfig.bart(**options) if kind == "bart" else TransformerConfig.marian(pad_token_id=49,
                                                                                              **options)
    model = Transformer(config)
    with ml.no_grad():  # a non-zero logits bias, so that it must travel too
        model.final_logits_bias.copy_(model.final_logits_bias.device.xp.linspace(-1, 1, 50)[None, :])
    model.save_pretrained(tmp_path)
    reloaded = transformers.AutoModelForSeq2SeqLM.from_pretrained(tmp_path).eval()
    assert type(reloaded).__name__ == ("BartForConditionalGeneration" if kind == "bart" else "MarianMTModel")
    src, mask, tgt = _batch(model)
    with torch.no_grad():
        expected = reloaded(input_ids=torch.tensor(src), attention_mask=torch.tensor(mask),
                            decoder_input_ids=torch.tensor(tgt)).logits.numpy()
    with ml.no_grad():
        got = model(src, tgt, src_attention_mask=mask).logits.numpy()
    assert np.abs(got - expected).max() <= 1e-4
    again = Transformer.from_pretrained(tmp_path)  # and back into minilm, identical
    for name, value in model.state_dict().items():
        np.testing.assert_array_equal(again.state_dict()[name].numpy(), value.numpy(), err_msg=name)


GENERATE_CASES = [
    dict(max_new_tokens=10),
    dict(max_new_tokens=10, num_beams=4),
    dict(max_new_tokens=10, num_beams=4, num_return_sequences=3, length_penalty=0.5),
    dict(max_new_tokens=12, num_beams=4, no_repeat_ngram_size=2, length_penalty=2.0),
    dict(max_new_tokens=12, no_repeat_ngram_size=2),
    dict(max_new_tokens=10, num_beams=4, min_new_tokens=6, early_stopping=True),
    dict(max_new_tokens=8, num_beams=4, forced_bos_token_id=5),
]


@pytest.mark.parametrize("options", GENERATE_CASES, ids=lambda o: ",".join(f"{k}={v}" for k, v in o.items()))
def test_generate_equals_transformers(checkpoint, options):
    _, folder, model_class = checkpoint
    reference = model_class.from_pretrained(folder).eval()
    model = Transformer.from_pretrained(folder)
    src, mask, _ = _batch(model, np.random.default_rng(1))
    with torch.no_grad():
        expected = reference.generate(torch.tensor(src), attention_mask=torch.tensor(mask), do_sample=False,
                                      **options).numpy()
    got = model.generate(src, attention_mask=mask, **options)
    np.testing.assert_array_equal(got, expected)


def test_a_checkpoints_generation_defaults_apply_as_in_transformers(checkpoint, tmp_path):
    """num_beams, length_penalty, no_repeat_ngram_size, min_length and max_length from
    generation_config.json, when generate is not given them (and what it is given wins)."""
    _, folder, model_class = checkpoint
    reference = model_class.from_pretrained(folder).eval()
    reference.generation_config.update(num_beams=3, length_penalty=0.7, no_repeat_ngram_size=2, min_length=4,
                                       max_length=9)
    reference.save_pretrained(tmp_path)
    model = Transformer.from_pretrained(tmp_path)
    src, mask, _ = _batch(model, np.random.default_rng(1))
    for options in ({}, {"max_new_tokens": 5, "num_beams": 1}):
        with torch.no_grad():
            expected = reference.generate(torch.tensor(src), attention_mask=torch.tensor(mask), **options).numpy()
        np.testing.assert_array_equal(model.generate(src, attention_mask=mask, **options), expected)


def test_bad_words_equal_transformers(checkpoint):
    """Banned words taken from the unconstrained output, so that the ban changes it."""
    _, folder, model_class = checkpoint
    reference = model_class.from_pretrained(folder).eval()
    model = Transformer.from_pretrained(folder)
    src, mask, _ = _batch(model, np.random.default_rng(1))
    free = model.generate(src, attention_mask=mask, max_new_tokens=8)
    bad_words = [[int(free[0, 1])], [int(free[0, 3]), int(free[0, 4])]]
    for num_beams in (1, 3):
        with torch.no_grad():
            expected = reference.generate(torch.tensor(src), attention_mask=torch.tensor(mask), do_sample=False,
                                          max_new_tokens=8, num_beams=num_beams, bad_words_ids=bad_words).numpy()
        got = model.generate(src, attention_mask=mask, max_new_tokens=8, num_beams=num_beams, bad_words_ids=bad_words)
        np.testing.assert_array_equal(got, expected)
    assert not np.array_equal(got[:, :free.shape[1]], free[:, :got.shape[1]])


def test_cached_generation_equals_uncached_and_sampling_is_seeded(checkpoint):
    _, folder, _ = checkpoint
    model = Transformer.from_pretrained(folder)
    src, mask, _ = _batch(model)
    for options in (dict(num_beams=3), dict(do_sample=True, top_k=5, seed=3, num_return_sequences=2)):
        cached = model.generate(src, attention_mask=mask, max_new_tokens=8, **options)
        uncached = model.generate(src, attention_mask=mask, max_new_tokens=8, use_cache=False, **options)
        np.testing.assert_array_equal(cached, uncached)
    streamed = np.stack(list(model.generate_stream(src, attention_mask=mask, max_new_tokens=8)), axis=1)
    np.testing.assert_array_equal(streamed, model.generate(src, attention_mask=mask, max_new_tokens=8)[:, 1:])


def test_gpt_gains_the_new_rules(tmp_path):
    """no_repeat_ngram_size and min_new_tokens work for the causal LMs too (same ids as transformers)."""
    torch.manual_seed(0)
    config = transformers.GPT2Config(vocab_size=31, n_positions=32, n_embd=16, n_layer=1, n_head=2,
                                     resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0)
    reference = transformers.GPT2LMHeadModel(config).eval()
    reference.save_pretrained(tmp_path)
    model = GPT.from_pretrained(tmp_path)
    prompt = np.array([[3, 4, 5, 3, 4]])
    for options in (dict(no_repeat_ngram_size=2), dict(min_new_tokens=5, num_beams=3, eos_token_id=7),
                    dict(no_repeat_ngram_size=3, num_beams=3)):
        with torch.no_grad():
            expected = reference.generate(torch.tensor(prompt), max_new_tokens=8, do_sample=False, pad_token_id=0,
                                          **options).numpy()
        np.testing.assert_array_equal(model.generate(prompt, max_new_tokens=8, pad_token_id=0, **options), expected)


# -- bad input --------------------------------------------------------------------------------
def _small():
    return Transformer(TransformerConfig.marian(vocab_size=20, d_model=8, encoder_layers=1, decoder_layers=1,
                                                encoder_attention_heads=2, decoder_attention_heads=2,
                                                encoder_ffn_dim=8, decoder_ffn_dim=8, max_position_embeddings=6))


def test_a_source_longer_than_the_position_table_is_named():
    model = _small()
    with pytest.raises(ValueError, match=r"source has 7 positions, more than the position table holds "
                                         r"\(max_position_embeddings 6\)"):
        model(np.ones((1, 7), dtype=np.int64), np.ones((1, 2), dtype=np.int64))
    with pytest.raises(ValueError, match="target has 8 positions"):
        model(np.ones((1, 2), dtype=np.int64), np.ones((1, 8), dtype=np.int64))
    with pytest.raises(ValueError, match="exceed the position table"):
        model.generate(np.ones((1, 2), dtype=np.int64), max_new_tokens=6)


def test_mismatched_padding_masks_are_named():
    model = _small()
    src, tgt = np.ones((2, 4), dtype=np.int64), np.ones((2, 3), dtype=np.int64)
    with pytest.raises(ValueError, match=r"src_attention_mask has shape \(2, 5\), expected \(2, 4\)"):
        model(src, tgt, src_attention_mask=np.ones((2, 5)))
    with pytest.raises(ValueError, match=r"tgt_attention_mask has shape \(1, 3\), expected \(2, 3\)"):
        model(src, tgt, tgt_attention_mask=np.ones((1, 3)))
    with pytest.raises(ValueError, match=r"attention_mask has shape \(2, 3\), expected \(2, 4\)"):
        model.generate(src, attention_mask=np.ones((2, 3)), max_new_tokens=2)
    with pytest.raises(ValueError, match=r"labels have shape \(2, 2\), expected \(2, 3\)"):
        model(src, tgt, labels=np.ones((2, 2), dtype=np.int64))


def test_a_checkpoint_of_another_architecture_is_named(tmp_path):
    GPT(GPTConfig(vocab_size=20, n_layer=1, n_head=2, n_embd=8, block_size=8)).save_pretrained(tmp_path)
    with pytest.raises(CheckpointError, match=r"model_type 'gpt2' is not an encoder-decoder Transformer"):
        Transformer.from_pretrained(tmp_path)


def test_options_minilm_does_not_implement_are_named(checkpoint, tmp_path):
    _, folder, _ = checkpoint
    import json

    config = json.loads((folder / "config.json").read_text())
    for option, value, message in (("activation_function", "tanh", "activation_function 'tanh' is not implemented"),
                                   ("encoder_layerdrop", 0.1, "LayerDrop"),
                                   ("normalize_before", True, "pre-LN")):
        (tmp_path / "config.json").write_text(json.dumps({**config, option: value}))
        with pytest.raises(CheckpointError, match=message):
            Transformer.from_pretrained(tmp_path)
    with pytest.raises(ValueError, match="position_embedding 'rotary' is not implemented"):
        TransformerConfig(position_embedding="rotary")
