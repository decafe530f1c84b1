"""Merging many pieces at once with NumPy: the path for text the tokenizer has not seen.

`byte_pair.merge_bytes` merges one piece at a time, one merge at a time, in Python. A
text seen for the first time brings thousands of new pieces (2 MB of source code: 15 000
pieces of 7 bytes on average), and that per-merge Python cost is most of a cold encode.
`PieceMerger` merges them all together, so that Python runs once per *round* instead of
once per merge:

    the pieces, concatenated        tokens  [n]  b"low" b"lower" -> l o w l o w e r
    where each piece ends           lengths [S]                      3 5
    rank of each adjacent pair      pair_ranks [n]  (no_pair at the end of each piece)

and each round does, for every piece at once:

1. find the piece's lowest pair rank r (np.minimum.reduceat over the pieces);
2. merge every pair of rank r in the piece, left to right without overlap (in "aaaa",
   with "aa" ranked lowest, the pairs at 0 and 2, not the one at 1);
3. look up the ranks of the pairs next to each merged token;
4. take out the pieces that have no pair left to merge: they are done.

Why one round equals several steps of the one-at-a-time merge. That merge joins the
leftmost lowest-ranked pair, looks up the two pairs this creates, and repeats. A created
pair never has rank r itself (its bytes are longer than the token of rank r), so while
the created pairs rank above r the next step joins the next pair of rank r: the round does
exactly those steps. When a created pair ranks below r, the one-at-a-time merge would join
it before the remaining pairs of rank r. That happens in rank tables not learned by
training (and rarely in learned ones); such a piece is taken out and merged by
`merge_bytes` from its bytes, so the result is always the one-at-a-time merge's, which is
tiktoken's.

Tokens are numbered here by *position in rank order* (0 for the lowest rank): comparing
positions compares ranks, the rank of a merged token is its position, and positions are
dense, so a pair (left, right) packs into one int64 key left * vocabulary + right. The
per-part arrays are int32 (half the memory traffic of int64; vocabularies are far smaller).
"""

from __future__ import annotations

import numpy as np

from .byte_pair import SINGLE_BYTES, merge_to_ids

# Once fewer pieces than FEW_PIECES_LEFT are still merging, holding fewer bytes than
# FEW_BYTES_LEFT in all (from the start, for a small call), they are merged one at a time by
# merge_bytes: a round costs the same few dozen NumPy calls however little it does. (Not on bytes
# alone: the last pieces to merge are the longest, slow to merge again one at a time.)
FEW_PIECES_LEFT = 32
FEW_BYTES_LEFT = 1024

# Pairs of tokens both among the first NEAR_POSITIONS in rank order (the bytes and the most
# common merges, most of the pairs looked up) are found in a dense square table by indexing;
# the others by binary search in the sorted keys.
NEAR_POSITIONS = 1024


class PieceMerger:
    """Merges byte pieces into token ids by rank, many pieces at a time.

    `ranks` maps token bytes to merge rank; `token_ids` maps the same bytes to the ids to
    return. Single bytes that `ranks` lacks stay parts of their own and are left out of the
    ids (what BPETokenizer's missing_bytes="skip" asks). Once fewer than `few_pieces_left`
    pieces are still merging, with fewer than `few_bytes_left` bytes in all, they are merged
    one at a time. `merged_one_at_a_time` counts the pieces that merge_bytes merged.
    """

    def __init__(self, ranks: dict[bytes, int], token_ids: dict[bytes, int],
                 few_pieces_left: int = FEW_PIECES_LEFT, few_bytes_left: int = FEW_BYTES_LEFT):
        self._ranks = ranks
        self._token_ids = token_ids
        self.few_pieces_left = few_pieces_left
        self.few_bytes_left = few_bytes_left
        self.merged_one_at_a_time = 0
        tokens = sorted(ranks, key=ranks.__getitem__)
        # Bytes without a token come after every token: never made by a merge, but a pair may
        # start from them (b"\xff" + b"\xfe" may be a token even where b"\xff" is not).
        tokenless_bytes = [byte for byte in SINGLE_BYTES if byte not in ranks]
        position = {token: index for index, token in enumerate(tokens + tokenless_bytes)}
        self.vocabulary = len(position)
        self.no_pair = self.vocabulary  # the "rank" of a pair that forms no token: above them all
        # position -> id; -1 for a byte without a token, to be left out
        self._id_at = np.array([token_ids[token] for token in tokens] + [-1] * len(tokenless_bytes), dtype=np.int64)
        self._drops_bytes = bool(tokenless_bytes)
        self._byte_position = np.array([position[byte] for byte in SINGLE_BYTES], dtype=np.int32)
        self._pair_keys, self._pair_merged = self._pair_table(tokens, position)
        self._near = min(NEAR_POSITIONS, self.vocabulary)
        self._near_pairs = self._dense_table()

    def _pair_table(self, tokens: list[bytes], position: dict[bytes, int]) -> tuple[np.ndarray, np.ndarray]:
        """Every pair of tokens whose bytes joined form a token: sorted keys left * vocabulary + right,
        and the position of the token they form. Every cut of every token counts, not only the merge
        that made it, because merging looks pairs up by their bytes (b"ab" + b"c" and b"a" + b"bc"
        both form b"abc")."""
        keys, merged = [], []
        for index, token in enumerate(tokens):
            for cut in range(1, len(token)):
                left = position.get(token[:cut])
                if left is not None:
                    right = position.get(token[cut:])
                    if right is not None:
                        keys.append(left * self.vocabulary + right)
                        merged.append(index)
        # a last key above every real one, so that a search never runs off the end
        keys.append(self.vocabulary * self.vocabulary)
        merged.append(self.no_pair)
        keys_array = np.array(keys, dtype=np.int64)
        order = np.argsort(keys_array, kind="stable")
        return keys_array[order], np.array(merged, dtype=np.int32)[order]

    def _dense_table(self) -> np.ndarray:
        """[(near + 1)^2] the rank of pair (left, right) at left * (near + 1) + right, for positions
        below near = min(NEAR_POSITIONS, vocabulary); row and column `near` stand for every position
        from near on and hold -1: "search the sorted keys"."""
        near = self._near
        table = np.full((near + 1, near + 1), self.no_pair, dtype=np.int32)
        table[near, :] = table[:, near] = -1
        left, right = np.divmod(self._pair_keys[:-1], self.vocabulary)
        both_near = (left < near) & (right < near)
        table[left[both_near], right[both_near]] = self._pair_merged[:-1][both_near]
        return table.ravel()

    def pair_ranks(self, left: np.ndarray, right: np.ndarray) -> np.ndarray:
        """[k], [k] int32 token positions -> [k] position of the token each pair forms, or no_pair."""
        near = self._near
        found = self._near_pairs[np.minimum(left, near) * (near + 1) + np.minimum(right, near)]
        far = np.flatnonzero(found < 0)
        if len(far):
            keys = left[far].astype(np.int64) * self.vocabulary + right[far]
            slot = np.searchsorted(self._pair_keys, keys)  # the last key is above all, so slot < len
            found[far] = np.where(self._pair_keys[slot] == keys, self._pair_merged[slot], self.no_pair)
        return found

    def merge(self, pieces: list[bytes]) -> list[tuple[int, ...]]:
        """The token ids of each piece (each at least one byte), as merge_bytes merges it."""
        if not pieces:
            return []
        results: list[tuple[int, ...] | None] = [None] * len(pieces)
        lengths = np.fromiter(map(len, pieces), dtype=np.int64, count=len(pieces))  # [S] parts per piece
        if not lengths.all():
            raise ValueError("cannot merge an empty piece")
        piece_at = np.arange(len(pieces))  # [S] which piece each segment still merging is
        tokens = self._byte_position[np.frombuffer(b"".join(pieces), dtype=np.uint8)]  # [n] one part per byte
        ends = np.cumsum(lengths)  # [S] where each segment ends in `tokens`
        pair_ranks = np.empty_like(tokens)  # [n] rank of (tokens[i], tokens[i + 1]) within a piece
        pair_ranks[:-1] = self.pair_ranks(tokens[:-1], tokens[1:])
        pair_ranks[ends - 1] = self.no_pair  # no pair across the end of a piece
        broken = np.zeros(len(pieces), dtype=bool)  # [S] pieces a round cannot merge exactly

        while True:
            lowest = np.minimum.reduceat(pair_ranks, ends - lengths)  # [S] each segment's lowest pair rank
            leaving = (lowest == self.no_pair) | broken
            if leaving.any():
                self._take_out(pieces, results, leaving & ~broken, broken, piece_at, tokens, lengths)
                staying = ~leaving
                kept_parts = np.repeat(staying, lengths)
                tokens, pair_ranks = tokens[kept_parts], pair_ranks[kept_parts]
                piece_at, lengths, lowest = piece_at[staying], lengths[staying], lowest[staying]
                ends = np.cumsum(lengths)
            if (len(lengths) < self.few_pieces_left and len(tokens) < self.few_bytes_left) or not len(lengths):
                for piece in piece_at.tolist():
                    results[piece] = self._merge_one(pieces[piece])
                return results

            # The pairs to merge: every pair of its segment's lowest rank, left to right without
            # overlap. In a run of adjacent such pairs ("aaaa"), the 1st, 3rd, ... of the run.
            lowest_here = np.repeat(lowest, lengths)  # [n]
            candidates = np.flatnonzero(pair_ranks == lowest_here)  # [c], increasing
            run_begins = np.ones(len(candidates), dtype=bool)
            run_begins[1:] = candidates[1:] != candidates[:-1] + 1
            run_start = np.maximum.accumulate(np.where(run_begins, candidates, 0))
            chosen = candidates[(candidates - run_start) % 2 == 0]  # [k] left part of each merge
            merged = lowest_here[chosen]  # [k] the token each merge makes
            segment = np.searchsorted(ends, chosen, side="right")  # [k] the segment it is in

            # Right after a merge, the one-at-a-time merge sees the pair (merged token, part after
            # the pair), even where that part is merged next in this round: it must rank above.
            has_next = chosen + 2 < ends[segment]
            created_after = self.pair_ranks(merged[has_next], tokens[chosen[has_next] + 2])
            broken = np.zeros(len(lengths), dtype=bool)
            broken[segment[has_next][created_after < merged[has_next]]] = True

            # Merge: the left part becomes the merged token, the right part goes.
            tokens[chosen] = merged
            kept_parts = np.ones(len(tokens), dtype=bool)
            kept_parts[chosen + 1] = False
            tokens, pair_ranks = tokens[kept_parts], pair_ranks[kept_parts]
            lengths = lengths - np.bincount(segment, minlength=len(lengths))
            ends = np.cumsum(lengths)
            at = chosen - np.arange(len(chosen))  # [k] where the merged tokens are now

            # New pair ranks next to each merged token. The pair after it is the one just looked
            # up, except where the next part was merged too: then it is that merge's pair before,
            # written next. The pair before a merged token must rank above it too.
            pair_ranks[ends - 1] = self.no_pair
            pair_ranks[at[has_next]] = created_after
            has_before = at > ends[segment] - lengths[segment]  # not the first part of its segment
            before = at[has_before] - 1
            pair_ranks[before] = self.pair_ranks(tokens[before], merged[has_before])
            broken[segment[has_before][pair_ranks[before] < merged[has_before]]] = True

    def _take_out(self, pieces, results, done, broken, piece_at, tokens, lengths) -> None:
        """Fill `results` for the segments that are `done` (their ids) or `broken` (merged
        again, one at a time)."""
        done_ids = self._id_at[tokens[np.repeat(done, lengths)]]
        done_lengths = lengths[done]
        if self._drops_bytes:  # leave out the bytes without a token
            kept = done_ids >= 0
            done_lengths = np.add.reduceat(kept, np.cumsum(done_lengths) - done_lengths, dtype=np.int64)
            done_ids = done_ids[kept]
        done_ids = done_ids.tolist()
        stops = np.cumsum(done_lengths)
        # one tuple per piece, made by map (in C): these are the entries of the chunk cache
        slices = map(slice, (stops - done_lengths).tolist(), stops.tolist())
        for piece, ids in zip(piece_at[done].tolist(), map(tuple, map(done_ids.__getitem__, slices))):
            results[piece] = ids
        for piece in piece_at[broken].tolist():
            results[piece] = self._merge_one(pieces[piece])

    def _merge_one(self, piece: bytes) -> tuple[int, ...]:
        self.merged_one_at_a_time += 1
        return merge_to_ids(piece, self._ranks, self._token_ids)
