"""The fast pre-tokenization (re on ASCII stretches, cut points) gives regex's exact chunks,
and the multi-process encoders give encode's exact ids (tiktoken's, checked in test_bpe)."""

import random

import pytest
import regex

from minilm.tokenizers import GPT2_PATTERN, GPT4_PATTERN, BPETokenizer, pretokenize

from ..helpers import oracle
from .conftest import VARIED_TEXTS

tiktoken = oracle("tiktoken", reason="tiktoken is the reference for byte-level BPE")

# Pieces that stress the patterns' edges: contractions in both cases, whitespace before
# letters / newlines / the end, digit runs, punctuation runs with newlines, non-ASCII.
_PIECES = ["'s", "'S", "'ll", "'VE", "'re", "'d", "don't", " ", "  ", "\t", "\n", "\r\n", " \n", "\n ", "   \n\n",
           "word", "Word", "x", "12", "12345", "3.14", "!!", "?\n", "();", "#", "é", "naïve", "中文", "😀",
           "\x0b", "\x0c", "\x1c", "_", "ab cd", "Σ", "١٢٣", "²"]


def _mixed_text(seed: int, pieces: int = 4000) -> str:
    rng = random.Random(seed)
    return "".join(rng.choice(_PIECES) for _ in range(pieces))


@pytest.mark.parametrize("pattern", [GPT2_PATTERN, GPT4_PATTERN], ids=["gpt2", "gpt4"])
@pytest.mark.parametrize("seed", range(4))
def test_splitter_gives_regex_chunks_on_mixed_and_ascii_text(pattern, seed, monkeypatch):
    monkeypatch.setattr(pretokenize, "SEGMENT_CHARS", 40)  # many cut points and ASCII segments
    split = pretokenize.Splitter(pattern)
    reference = regex.compile(pattern).findall
    text = _mixed_text(seed)
    assert split(text) == reference(text)
    ascii_text = text.encode("ascii", "ignore").decode()
    assert split(ascii_text) == reference(ascii_text)
    for varied in VARIED_TEXTS:
        assert split(varied) == reference(varied)


@pytest.mark.parametrize("pattern", [GPT2_PATTERN, GPT4_PATTERN], ids=["gpt2", "gpt4"])
def test_cut_points_never_split_a_chunk(pattern):
    reference = regex.compile(pattern).findall
    text = _mixed_text(7, pieces=20000)
    points = pretokenize.cut_points(text, 50)
    assert points[0] == 0 and points[-1] == len(text) and len(points) > 100
    parts = [text[a:b] for a, b in zip(points[:-1], points[1:])]
    assert [chunk for part in parts for chunk in reference(part)] == reference(text)


def test_custom_patterns_keep_the_regex_module():
    split = pretokenize.Splitter(r"\p{L}+|\s+|.")
    assert split("ab cd") == ["ab", " ", "cd"] and not pretokenize.can_cut(r"\p{L}+|\s+|.")


@pytest.fixture(scope="module")
def tokenizer(training_text):
    return BPETokenizer.train(training_text, 600, special_tokens=["<|endoftext|>"])


def test_encode_batch_in_processes_gives_the_same_ids(tokenizer):
    texts = [_mixed_text(seed, 300) for seed in range(12)] + VARIED_TEXTS
    expected = [tokenizer.encode(text, allowed_special="all") for text in texts]
    assert tokenizer.encode_batch(texts, workers=2, allowed_special="all") == expected
    reference = tiktoken.Encoding("t", pat_str=tokenizer.pattern, mergeable_ranks=tokenizer.mergeable_ranks(),
                                  special_tokens=tokenizer.special_tokens)
    assert expected == reference.encode_batch(texts, allowed_special="all")
    with pytest.raises(ValueError, match="workers must be at least 1"):
        tokenizer.encode_batch(texts, workers=0)


def test_encode_ordinary_parallel_gives_the_same_ids(tokenizer, training_text):
    text = training_text[:200_000] + "<|endoftext|>" + _mixed_text(3)
    assert tokenizer.encode_ordinary_parallel(text, workers=2) == tokenizer.encode_ordinary(text)
