"""Learning byte-level BPE merges from counted chunks.

The corpus has already been cut into chunks by the pre-tokenization regex and the
distinct chunks counted, so every step below costs in proportion to the number of
*distinct* chunks, not the corpus size. Each chunk becomes a "word": a list of
token ids, starting from its UTF-8 bytes (ids 0..255).

Per merge, the naive trainer recounts every pair in every word. Here the counts
are kept up to date instead:

- `pair_counts[pair]`: how often the pair occurs, each word weighted by its count;
- `words_with_pair[pair]`: indices of the words containing it, so a merge only
  revisits the words it changes;
- a max-heap of (-count, pair) entries. When a count changes a new entry is pushed
  and the old one is left behind ("lazy deletion"): a popped entry whose count
  differs from `pair_counts` is stale and skipped.

Tie rule (deterministic): among pairs with the same count, the pair with the
smallest (left id, right id) wins, which is the heap's tuple order. Ids are ranks,
so this prefers pairs of earlier-learned tokens, and bytes in byte order.
"""

from __future__ import annotations

import heapq
from collections import defaultdict
from collections.abc import Callable, Mapping

Pair = tuple[int, int]


def learn_merges(
    chunk_counts: Mapping[str, int],
    num_merges: int,
    min_frequency: int,
    on_merge: Callable[[int], None] | None = None,
) -> list[bytes]:
    """Return the bytes of each new token, in the order learned (rank 256, 257, ...).

    Stops early when no pair occurs at least `min_frequency` times. `on_merge` is
    called with the number of merges done so far (for a progress bar).
    """
    words: list[list[int]] = []
    weights: list[int] = []
    for chunk, count in chunk_counts.items():
        encoded = chunk.encode("utf-8")
        if len(encoded) > 1:  # a single byte has no pair to merge
            words.append(list(encoded))
            weights.append(count)

    pair_counts: dict[Pair, int] = defaultdict(int)
    words_with_pair: dict[Pair, set[int]] = defaultdict(set)
    for index, word in enumerate(words):
        weight = weights[index]
        for pair in zip(word, word[1:]):
            pair_counts[pair] += weight
            words_with_pair[pair].add(index)
    heap = [(-count, pair) for pair, count in pair_counts.items()]
    heapq.heapify(heap)

    token_bytes = [bytes([b]) for b in range(256)]
    new_tokens: list[bytes] = []
    while len(new_tokens) < num_merges:
        best = _pop_most_frequent(heap, pair_counts)
        if best is None or pair_counts[best] < min_frequency:
            break
        new_id = len(token_bytes)
        token_bytes.append(token_bytes[best[0]] + token_bytes[best[1]])
        new_tokens.append(token_bytes[-1])
        changed = _merge_pair_everywhere(best, new_id, words, weights, pair_counts, words_with_pair)
        for pair in changed:
            count = pair_counts.get(pair, 0)
            if count > 0:
                heapq.heappush(heap, (-count, pair))
        if on_merge is not None:
            on_merge(len(new_tokens))
    return new_tokens


def _pop_most_frequent(heap: list[tuple[int, Pair]], pair_counts: dict[Pair, int]) -> Pair | None:
    while heap:
        negative_count, pair = heapq.heappop(heap)
        if pair_counts.get(pair, 0) == -negative_count:
            return pair
    return None


def _merge_pair_everywhere(
    pair: Pair,
    new_id: int,
    words: list[list[int]],
    weights: list[int],
    pair_counts: dict[Pair, int],
    words_with_pair: dict[Pair, set[int]],
) -> set[Pair]:
    """Replace `pair` by `new_id` in every word that has it; update the counts
    and the word index; return the pairs whose counts changed."""
    left, right = pair
    count_changes: dict[Pair, int] = defaultdict(int)
    for index in words_with_pair.pop(pair):
        word = words[index]
        merged = []
        i, n = 0, len(word)
        while i < n:
            if word[i] == left and i + 1 < n and word[i + 1] == right:
                merged.append(new_id)
                i += 2
            else:
                merged.append(word[i])
                i += 1
        # Recounting this one (short) word's pairs before and after is simpler
        # and no slower than patching neighbours, and it gets overlaps such as
        # merging (a, a) in "aaa" right without special cases.
        weight = weights[index]
        old_pairs = set(zip(word, word[1:]))
        new_pairs = set(zip(merged, merged[1:]))
        for old_pair in zip(word, word[1:]):
            count_changes[old_pair] -= weight
        for new_pair in zip(merged, merged[1:]):
            count_changes[new_pair] += weight
        for gone in old_pairs - new_pairs:
            if gone != pair:
                words_with_pair[gone].discard(index)
        for added in new_pairs - old_pairs:
            words_with_pair[added].add(index)
        words[index] = merged

    changed = set()
    for changed_pair, change in count_changes.items():
        if change:
            changed.add(changed_pair)
            count = pair_counts[changed_pair] + change
            if count:
                pair_counts[changed_pair] = count
            else:
                del pair_counts[changed_pair]
    return changed
