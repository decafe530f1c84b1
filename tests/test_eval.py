"""minilm.eval.perplexity against exp(mean cross-entropy) computed by hand on sliding windows."""

import math

import numpy as np
import pytest

import minilm as ml
from minilm.eval import perplexity
from minilm.models import GPT, GPTConfig


def _log_softmax_rows(model, inputs):
    """float64 log-probabilities [T, V] of the next token after each prefix of `inputs`."""
    with ml.no_grad():
        out = model(np.asarray(inputs)[None, :])
    logits = getattr(out, "logits", out).numpy()[0].astype(np.float64)
    shifted = logits - logits.max(axis=-1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True))


def _sliding_window_nll(model, ids, block_size, stride):
    """The Hugging Face recipe for a fixed-length model, written out: windows of block_size
    inputs start every `stride` tokens; each window scores only the targets no earlier window
    scored, every one from as much context as the window holds. Returns (sum of NLL, count)."""
    total, count, scored_until = 0.0, 0, 0  # target positions 1..scored_until are done
    for begin in range(0, len(ids), stride):
        end = min(begin + block_size + 1, len(ids))  # inputs ids[begin:end-1], targets ids[begin+1:end]
        log_probs = _log_softmax_rows(model, ids[begin : end - 1])
        for row, position in enumerate(range(begin + 1, end)):
            if position > scored_until:
                total -= log_probs[row, ids[position]]
                count += 1
        scored_until = end - 1
        if end == len(ids):
            break
    return total, count


@pytest.mark.parametrize("length, block_size, stride", [(100, 16, None), (100, 16, 5), (37, 16, 16), (17, 16, 1)])
def test_perplexity_is_exp_of_the_mean_cross_entropy(length, block_size, stride):
    ml.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=50, n_layer=2, n_head=2, n_embd=16, block_size=block_size)).to(dtype=ml.float64)
    with ml.no_grad():  # larger weights than the initialiser's, so predictions are far from uniform
        for p in model.parameters():
            p.data[...] = p.data * 8
    ids = np.random.default_rng(1).integers(0, 50, length)
    total, count = _sliding_window_nll(model, ids, block_size, stride or block_size)
    assert count == length - 1  # every token after the first is scored exactly once
    expected = math.exp(total / count)
    assert abs(math.log(expected) - math.log(50)) > 0.1  # not the uniform model's value by accident
    assert perplexity(model, ids, block_size=block_size, stride=stride, batch_size=3) == pytest.approx(expected,
                                                                                                       rel=1e-10)
    assert model.training  # evaluation restores the mode it found
