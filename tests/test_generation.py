"""Generation: cached vs uncached logits, parity with transformers' generate, sampling
statistics, seeds, streaming, and argument errors."""

import numpy as np
import pytest

import minilm as ml
from minilm import nn
from minilm.generation import top_k_filter, top_p_filter
from minilm.models import GPT, GPTConfig, LSTMConfig, LSTMLanguageModel

from .helpers import oracle

torch = oracle("torch", reason="PyTorch runs the reference GPT-2")
transformers = oracle("transformers", reason="transformers' generate is the reference")


@pytest.fixture(scope="module")
def pair(tmp_path_factory):
    torch.manual_seed(0)
    config = transformers.GPT2Config(vocab_size=97, n_positions=64, n_embd=32, n_layer=2, n_head=4,
                                     resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0)
    reference = transformers.GPT2LMHeadModel(config).eval()
    with torch.no_grad():  # sharper distributions than the tiny init gives, so choices are clear-cut
        for p in reference.parameters():
            p.add_(0.1 * torch.randn_like(p))
    folder = tmp_path_factory.mktemp("gpt2")
    reference.save_pretrained(folder)
    return reference, GPT.from_pretrained(folder)


PROMPTS = np.random.default_rng(0).integers(0, 97, (2, 5))


def test_cached_logits_equal_uncached_at_every_step(pair):
    _, model = pair
    ids = PROMPTS
    caches = [nn.KVCache(40) for _ in model.blocks]
    with ml.no_grad():
        step_logits = model(ids, caches=caches).logits[:, -1].numpy()
        sequence = ids
        for _ in range(15):
            full = model(sequence).logits[:, -1].numpy()
            assert np.abs(full - step_logits).max() <= 1e-5
            token = full.argmax(-1)[:, None]
            sequence = np.concatenate([sequence, token], axis=1)
            step_logits = model(token, caches=caches).logits[:, -1].numpy()


def _hf(reference, ids, **kwargs):
    kwargs.setdefault("pad_token_id", 0)
    return reference.generate(torch.tensor(ids), do_sample=False, **kwargs).numpy()


@pytest.mark.parametrize("eos", [None, 19, 95])  # 19 and 95 occur mid-generation
def test_greedy_equals_transformers(pair, eos):
    reference, model = pair
    expected = _hf(reference, PROMPTS, max_new_tokens=20, eos_token_id=eos)
    got = model.generate(PROMPTS, max_new_tokens=20, eos_token_id=eos, pad_token_id=0)
    np.testing.assert_array_equal(got, expected)
    np.testing.assert_array_equal(model.generate(PROMPTS, max_new_tokens=20, eos_token_id=eos, pad_token_id=0,
                                                 use_cache=False), expected)


@pytest.mark.parametrize("eos", [None, 19, 69, 95])
def test_beam_search_equals_transformers(pair, eos):
    reference, model = pair
    # A pad id that is neither 0 (transformers fills finished beams with eos when the pad id
    # is 0, a falsy value) nor in the prompts (it would infer an attention mask from it).
    pad = next(t for t in range(1, 97) if t not in PROMPTS)
    expected = _hf(reference, PROMPTS, max_new_tokens=15, num_beams=4, eos_token_id=eos, num_return_sequences=2,
                   pad_token_id=pad)
    got = model.generate(PROMPTS, max_new_tokens=15, num_beams=4, eos_token_id=eos, pad_token_id=pad,
                         num_return_sequences=2)
    np.testing.assert_array_equal(got, expected)


def test_left_padded_batch_and_repetition_penalty_equal_transformers(pair):
    reference, model = pair
    ids, mask = PROMPTS.copy(), np.ones_like(PROMPTS)
    ids[1, :2], mask[1, :2] = 0, 0
    expected = reference.generate(torch.tensor(ids), attention_mask=torch.tensor(mask), max_new_tokens=10,
                                  pad_token_id=0, repetition_penalty=1.3, do_sample=False).numpy()
    got = model.generate(ids, attention_mask=mask, max_new_tokens=10, repetition_penalty=1.3)
    np.testing.assert_array_equal(got, expected)


def test_the_same_seed_gives_the_same_sample_independent_of_the_global_rng(pair):
    _, model = pair
    a = model.generate(PROMPTS, max_new_tokens=12, do_sample=True, seed=7)
    ml.manual_seed(123)
    b = model.generate(PROMPTS, max_new_tokens=12, do_sample=True, seed=7)
    c = model.generate(PROMPTS, max_new_tokens=12, do_sample=True, seed=8)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)


def test_temperature_near_zero_equals_greedy(pair):
    _, model = pair
    greedy = model.generate(PROMPTS, max_new_tokens=12)
    cold = model.generate(PROMPTS, max_new_tokens=12, do_sample=True, temperature=1e-4, seed=0)
    np.testing.assert_array_equal(cold, greedy)


def test_top_k_never_leaves_the_k_most_likely():
    rng = np.random.default_rng(0)
    from minilm.generation import _sample_rows, _softmax

    scores = rng.standard_normal((4, 50)) * 3
    allowed = np.argsort(-scores, axis=-1)[:, :5]
    probabilities = _softmax(top_k_filter(scores.copy(), 5))
    draws = np.stack([_sample_rows(probabilities, rng) for _ in range(2000)], axis=1)  # [4, 2000]
    for row in range(4):
        assert set(draws[row]) <= set(allowed[row])
        assert len(set(draws[row])) == 5  # and all five do occur


def test_top_p_never_leaves_the_nucleus():
    rng = np.random.default_rng(1)
    from minilm.generation import _sample_rows, _softmax

    scores = rng.standard_normal((3, 40)) * 2
    p = 0.7
    probabilities = _softmax(top_p_filter(scores.copy(), p))
    for row in range(3):
        full = _softmax(scores[row : row + 1])[0]
        order = np.argsort(-full)
        needed = int(np.searchsorted(np.cumsum(full[order]), p) + 1)  # smallest set with mass >= p
        nucleus = set(order[:needed])
        kept = set(np.nonzero(probabilities[row])[0])
        assert kept == nucleus
    draws = np.stack([_sample_rows(probabilities, rng) for _ in range(1000)], axis=1)
    for row in range(3):
        assert set(draws[row]) <= set(np.nonzero(probabilities[row])[0])


def test_top_k_sampling_frequencies_follow_the_renormalized_distribution():
    rng = np.random.default_rng(2)
    from minilm.generation import _sample_rows, _softmax

    scores = np.log(np.array([[0.5, 0.3, 0.15, 0.05]]))
    probabilities = _softmax(top_k_filter(scores.copy(), 2))
    draws = np.array([_sample_rows(probabilities, rng)[0] for _ in range(4000)])
    share = (draws == 0).mean()
    assert abs(share - 0.5 / 0.8) < 4 * np.sqrt(0.625 * 0.375 / 4000)


def test_streaming_text_never_splits_a_character(pair):
    from minilm.generation import stream_text
    from minilm.tokenizers import BPETokenizer

    tokenizer = BPETokenizer.train("héllo wörld ünïcode 日本語 " * 20, vocab_size=300)
    config = GPTConfig(vocab_size=tokenizer.vocab_size, n_layer=1, n_head=2, n_embd=16, block_size=64)
    model = GPT(config)
    pieces = list(stream_text(model, tokenizer, "日本", max_new_tokens=30, do_sample=True, seed=3))
    text = "".join(pieces)
    ids = model.generate(tokenizer.encode("日本"), max_new_tokens=30, do_sample=True, seed=3)[0]
    generated = ids[len(tokenizer.encode("日本")):].tolist()
    assert text == tokenizer.decode(generated)
    # The case the streamer exists for really occurs: some token ends inside a character, so
    # decoding token by token (what the streamer must not do) gives other text than `text`.
    assert any(not _is_whole_utf8(tokenizer.token_bytes(token)) for token in generated)
    assert "".join(tokenizer.decode([token]) for token in generated) != text


def _is_whole_utf8(data: bytes) -> bool:
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


def test_stop_strings_end_a_row(pair):
    from minilm.tokenizers import CharTokenizer

    tokenizer = CharTokenizer.from_text("abcdefgh")
    model = GPT(GPTConfig(vocab_size=tokenizer.vocab_size, n_layer=1, n_head=1, n_embd=8, block_size=64))
    free = model.generate([0], max_new_tokens=30, do_sample=True, seed=0)[0]
    text = tokenizer.decode(free[1:].tolist())
    stop = text[5:7]
    cut = model.generate([0], max_new_tokens=30, do_sample=True, seed=0, stop=stop, tokenizer=tokenizer,
                         pad_token_id=0)[0]
    generated = tokenizer.decode(cut[1:].tolist())
    first = text.index(stop) + len(stop)
    assert generated[:first] == text[:first]
    assert set(cut[1 + first:].tolist()) <= {0}


def test_lstm_generates_and_caches_its_state():
    ml.manual_seed(0)
    model = LSTMLanguageModel(LSTMConfig(vocab_size=20, n_embd=8, hidden_size=8, num_layers=2))
    out = model.generate([[1, 2, 3]], max_new_tokens=6)
    assert out.shape == (1, 9)
    # greedy by hand, recomputing the whole sequence each step
    sequence = np.array([[1, 2, 3]])
    with ml.no_grad():
        for _ in range(6):
            token = model(sequence).logits[:, -1].numpy().argmax(-1)
            sequence = np.concatenate([sequence, token[:, None]], axis=1)
    np.testing.assert_array_equal(out, sequence)


@pytest.mark.parametrize("kwargs, message", [
    ({"do_sample": True, "top_p": 0.0}, "top_p must be in"),
    ({"do_sample": True, "top_p": 1.5}, "top_p must be in"),
    ({"do_sample": True, "temperature": 0.0}, "temperature must be > 0"),
    ({"do_sample": True, "top_k": 0}, "top_k must be >= 1"),
])
def test_bad_sampling_arguments(pair, kwargs, message):
    _, model = pair
    with pytest.raises(ValueError, match=message):
        model.generate(PROMPTS, max_new_tokens=3, **kwargs)


def test_bad_prompts(pair):
    _, model = pair
    with pytest.raises(ValueError, match="prompt is empty"):
        model.generate(np.zeros((1, 0), dtype=np.int64), max_new_tokens=3)
    with pytest.raises(ValueError, match="longer than the model's context"):
        model.generate(np.zeros((1, 70), dtype=np.int64), max_new_tokens=3)
    with pytest.raises(ValueError, match="exceeds the model's context"):
        model.generate(np.zeros((1, 60), dtype=np.int64), max_new_tokens=10)


@pytest.mark.parametrize("num_beams", [1, 2])
def test_generate_gives_every_submodule_its_own_mode_back(num_beams):
    model = GPT(GPTConfig(vocab_size=11, n_layer=2, n_head=2, n_embd=8, block_size=16)).train()
    model.blocks[0].eval()  # e.g. a frozen block, kept in eval mode while the rest trains
    model.generate(np.array([[1, 2, 3]]), max_new_tokens=3, num_beams=num_beams)
    assert model.training and model.blocks[1].training and model.blocks[1].attn.training
    assert not model.blocks[0].training and not model.blocks[0].attn.training


def test_a_preallocated_kv_cache_matches_a_growing_one_and_reorders_rows():
    block = nn.TransformerBlock(8, 2, causal=True).to(dtype=ml.float64)
    x = ml.tensor(np.random.default_rng(1).standard_normal((3, 5, 8)))
    growing, preallocated = nn.KVCache(), nn.KVCache(capacity=5)
    with ml.no_grad():
        for cache in (growing, preallocated):
            block(x[:, :3], cache=cache)
            cache.reorder([2, 0, 0])
        steps = [block(x[:, 3:4], cache=cache).numpy() for cache in (growing, preallocated)]
    np.testing.assert_allclose(steps[0], steps[1], rtol=1e-12)
    keys = preallocated.key.numpy()  # [B, H, 4, D]; rows 1 and 2 both continue old row 0
    np.testing.assert_array_equal(keys[1, :, :3], keys[2, :, :3])
    with pytest.raises(ValueError, match="KV cache full"):
        block(x[:, :2], cache=preallocated)
