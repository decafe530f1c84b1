"""Applying learned merges to one chunk of bytes, the way tiktoken does it.

The model is a table of *mergeable ranks*: every token's bytes map to a rank, the
256 single bytes first, then each merged token in the order it was learned. To
tokenize a chunk, start from single bytes and repeatedly join the adjacent pair
whose concatenation has the lowest rank (the leftmost such pair on ties) until no
adjacent pair forms a token. Because a token is always learned after its two
parts, this replays the training merges in order.
"""

from __future__ import annotations

import heapq
import sys
from itertools import repeat

NO_MERGE = sys.maxsize  # the "rank" of an adjacent pair that forms no token

# Below this many bytes the list scan wins (its loops run in C); above it the
# heap keeps long pieces such as "a" * 100000 at O(n log n) instead of O(n^2).
LONG_PIECE_BYTES = 256

SINGLE_BYTES = [bytes([byte]) for byte in range(256)]  # b"\x00" ... b"\xff", made once


def merge_bytes(piece: bytes, ranks: dict[bytes, int], rank_limit: int = NO_MERGE) -> list[bytes]:
    """Split `piece` into tokens by rank-ordered merging; only ranks below
    `rank_limit` are used (that is how a token is split into the two parts it was
    made from: merge its bytes with the ranks learned before it)."""
    if len(piece) > LONG_PIECE_BYTES:
        return _merge_with_heap(piece, ranks, rank_limit)
    return _merge_with_scan(piece, ranks, rank_limit)


def merge_to_ids(piece: bytes, ranks: dict[bytes, int], token_ids: dict[bytes, int]) -> tuple[int, ...]:
    """The ids of `merge_bytes(piece, ranks)`'s parts. A single byte that has no token (in a
    table that lacks some bytes) stays a part of its own, and is left out."""
    parts = merge_bytes(piece, ranks)
    try:
        return tuple(map(token_ids.__getitem__, parts))
    except KeyError:
        return tuple(token_ids[part] for part in parts if part in token_ids)


def _merge_with_scan(piece: bytes, ranks: dict[bytes, int], rank_limit: int) -> list[bytes]:
    # map() runs the set-up loops in C (this is the cold-encode path of small calls).
    parts = list(map(SINGLE_BYTES.__getitem__, piece))
    get = ranks.get
    # pair_ranks[i] is the rank of parts[i] + parts[i + 1]
    pair_ranks = list(map(get, map(bytes.__add__, parts, parts[1:]), repeat(NO_MERGE)))
    while pair_ranks:
        best = min(pair_ranks)
        if best >= rank_limit:
            break
        i = pair_ranks.index(best)  # leftmost lowest rank
        parts[i] += parts.pop(i + 1)
        del pair_ranks[i]
        if i < len(pair_ranks):
            pair_ranks[i] = get(parts[i] + parts[i + 1], NO_MERGE)
        if i > 0:
            pair_ranks[i - 1] = get(parts[i - 1] + parts[i], NO_MERGE)
    return parts


def _merge_with_heap(piece: bytes, ranks: dict[bytes, int], rank_limit: int) -> list[bytes]:
    """Same result as the scan, for long pieces.

    Parts are spans of `piece` kept as a doubly linked list keyed by start offset.
    The heap holds (rank, start) for candidate pairs; an entry is stale when its
    start is no longer a part or the pair starting there now has another rank.
    Popping the smallest (rank, start) picks the lowest rank, leftmost first.
    """
    n = len(piece)
    end = list(range(1, n + 1))  # end[start]: where the part beginning at start ends
    previous = list(range(-1, n - 1))  # previous[start]: start of the part before it
    alive = [True] * n
    pair_rank = [ranks.get(piece[i : i + 2], NO_MERGE) for i in range(n - 1)] + [NO_MERGE]
    heap = [(rank, start) for start, rank in enumerate(pair_rank) if rank < rank_limit]
    heapq.heapify(heap)

    while heap:
        rank, start = heapq.heappop(heap)
        if not alive[start] or pair_rank[start] != rank:
            continue
        right = end[start]
        new_end = end[right]
        alive[right] = False
        end[start] = new_end
        if new_end < n:
            previous[new_end] = start
            pair_rank[start] = ranks.get(piece[start : end[new_end]], NO_MERGE)
            if pair_rank[start] < rank_limit:
                heapq.heappush(heap, (pair_rank[start], start))
        else:
            pair_rank[start] = NO_MERGE
        before = previous[start]
        if before >= 0:
            pair_rank[before] = ranks.get(piece[before:new_end], NO_MERGE)
            if pair_rank[before] < rank_limit:
                heapq.heappush(heap, (pair_rank[before], before))

    parts = []
    start = 0
    while start < n:
        parts.append(piece[start : end[start]])
        start = end[start]
    return parts


def recover_merges(ranks: dict[bytes, int]) -> list[tuple[bytes, bytes]]:
    """The (left, right) merge that made each multi-byte token, in rank order.

    Formats such as Hugging Face's store merges rather than ranks. A token's parts
    are what merging its bytes with the ranks *below* its own produces; in a
    consistent BPE table that is exactly two tokens.
    """
    merges = []
    for token, rank in sorted(ranks.items(), key=lambda item: item[1]):
        if len(token) == 1:
            continue
        parts = merge_bytes(token, ranks, rank_limit=rank)
        if len(parts) != 2:
            raise ValueError(
                f"token {token!r} (rank {rank}) is not the merge of two lower-ranked tokens "
                f"(lower ranks split it into {len(parts)} parts); these ranks are not a BPE merge list"
            )
        merges.append((parts[0], parts[1]))
    return merges
