"""BPE training against the naive trainer: recount every pair after every merge.

minilm's trainer keeps pair counts up to date incrementally (a merge adds and removes counts
in the words it touches). Here the slow, obviously right algorithm recounts all pairs from
scratch before each merge, on real text (a standard library module's source), and both must
learn the same merges in the same order. The tie rule is the documented one: among equally
frequent pairs, the smallest (left id, right id).
"""

import pathlib
import sysconfig
from collections import Counter

import regex

from minilm.tokenizers import GPT4_PATTERN, BPETokenizer


def _naive_merges(text, num_merges, min_frequency):
    chunk_counts = Counter(regex.findall(GPT4_PATTERN, text))
    words = [(list(chunk.encode("utf-8")), count) for chunk, count in chunk_counts.items()]
    token_bytes = [bytes([b]) for b in range(256)]
    for _ in range(num_merges):
        pair_counts = Counter()
        for word, count in words:
            for pair in zip(word, word[1:]):
                pair_counts[pair] += count
        if not pair_counts:
            break
        best = min(pair_counts, key=lambda pair: (-pair_counts[pair], pair))
        if pair_counts[best] < min_frequency:
            break
        new_id = len(token_bytes)
        token_bytes.append(token_bytes[best[0]] + token_bytes[best[1]])
        for index, (word, count) in enumerate(words):
            merged, i = [], 0
            while i < len(word):
                if i + 1 < len(word) and (word[i], word[i + 1]) == best:
                    merged.append(new_id)
                    i += 2
                else:
                    merged.append(word[i])
                    i += 1
            words[index] = (merged, count)
    return token_bytes[256:]


def test_merges_equal_the_naive_recounting_trainer_on_real_text():
    stdlib = pathlib.Path(sysconfig.get_paths()["stdlib"])
    text = (stdlib / "textwrap.py").read_text(encoding="utf-8")[:12_000]
    num_merges = 250
    tokenizer = BPETokenizer.train(text, 256 + num_merges, pattern="gpt4", min_frequency=2)
    learned = sorted(tokenizer.mergeable_ranks().items(), key=lambda item: item[1])
    assert [rank for _, rank in learned] == list(range(len(learned)))
    expected = _naive_merges(text, num_merges, min_frequency=2)
    assert len(expected) == num_merges  # the slice is large enough that no early stop hides a difference
    assert [token for token, _ in learned[256:]] == expected
