"""The NumPy merger (many pieces per round) against merging one piece at a time, and
cold-cache encoding through it against tiktoken."""

import random

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from minilm.tokenizers import BPETokenizer
from minilm.tokenizers.byte_pair import merge_bytes
from minilm.tokenizers.merge_batch import PieceMerger

from ..helpers import oracle

tiktoken = oracle("tiktoken", reason="tiktoken is the reference for byte-level BPE")

SINGLE_BYTES = [bytes([byte]) for byte in range(256)]
ALPHABET = b"abc\xe4"  # few letters, so that random tokens meet in random pieces; 0xe4 starts UTF-8 "ä"


def one_at_a_time(pieces, ranks, token_ids):
    """merge_bytes on each piece; single bytes the table lacks are left out."""
    return [tuple(token_ids[part] for part in merge_bytes(piece, ranks) if part in token_ids) for piece in pieces]


def merge_all_in_rounds(pieces, ranks, token_ids=None):
    """PieceMerger with no hand-over to merge_bytes at the end: every merge happens in rounds."""
    merger = PieceMerger(ranks, token_ids or ranks, few_pieces_left=0, few_bytes_left=0)
    return merger.merge(pieces), merger


def table_of(tokens: list[bytes]) -> dict[bytes, int]:
    """Ranks in the order given, after the 256 bytes."""
    return {token: rank for rank, token in enumerate(SINGLE_BYTES + tokens)}


# ---- against merge_bytes ------------------------------------------------------------------------

alphabet_bytes = st.lists(st.sampled_from(ALPHABET), min_size=1, max_size=24).map(bytes)


@settings(deadline=None, max_examples=150)
@given(
    extra_tokens=st.lists(alphabet_bytes.filter(lambda token: len(token) >= 2), unique=True, max_size=40),
    tokenless=st.sets(st.sampled_from(ALPHABET), max_size=2),
    order=st.randoms(use_true_random=False),
    pieces=st.lists(alphabet_bytes, min_size=1, max_size=30),
)
def test_rounds_equal_one_at_a_time_on_random_rank_tables(extra_tokens, tokenless, order, pieces):
    # Any order of ranks, single bytes among them: most such tables are not what training
    # makes, so merges often create pairs ranked below the merged token. Some tables lack a
    # byte or two (as SmolLM2's does): such a byte is left out unless a merge takes it in.
    tokens = [byte for byte in SINGLE_BYTES if byte[0] not in tokenless] + extra_tokens
    ranks = dict(zip(tokens, order.sample(range(len(tokens)), len(tokens))))
    token_ids = dict(zip(tokens, order.sample(range(10 * len(tokens)), len(tokens))))
    merged, _ = merge_all_in_rounds(pieces, ranks, token_ids)
    assert merged == one_at_a_time(pieces, ranks, token_ids)


def test_learned_table_merges_in_rounds_and_equals_one_at_a_time(trained, training_text):
    ranks = trained.mergeable_ranks()
    chunks = sorted(set(trained._split(training_text[:200_000])))
    pieces = [chunk.encode("utf-8") for chunk in chunks]
    merged, merger = merge_all_in_rounds(pieces, ranks)
    assert merged == one_at_a_time(pieces, ranks, ranks)
    # In a table learned by training, merges rarely create a pair ranked below themselves,
    # so nearly every piece is merged in rounds, not handed to merge_bytes.
    assert merger.merged_one_at_a_time <= len(pieces) // 100


@pytest.mark.parametrize("piece", [b"aa", b"aaa", b"aaaa", b"aaaaa", b"aaaaaaa", b"ab" * 9 + b"a"])
def test_runs_of_one_pair_merge_left_to_right(piece):
    # "aaa" -> "aa" "a", not "a" "aa": of overlapping pairs of one rank, the leftmost goes first.
    ranks = table_of([b"aa", b"ab", b"ba", b"aaaa", b"abab"])
    merged, merger = merge_all_in_rounds([piece], ranks)
    assert merged == one_at_a_time([piece], ranks, ranks)
    assert merger.merged_one_at_a_time == 0


def test_pair_that_forms_a_token_by_several_cuts():
    # b"abc" is both "ab"+"c" and "a"+"bc": the lookup goes by bytes, whatever the cut.
    ranks = table_of([b"bc", b"ab", b"abc", b"abcabc"])
    pieces = [b"abc", b"abcabc", b"aabcc", b"cabcab"]
    merged, _ = merge_all_in_rounds(pieces, ranks)
    assert merged == one_at_a_time(pieces, ranks, ranks)


def test_merge_that_creates_a_lower_ranked_pair_is_handed_over():
    # "cd" (rank 257) then "cdc" (rank 256, lower): in "cdcd", merging the first "cd" creates
    # ("cd", "c") of rank 256, which the one-at-a-time merge takes next: "cdc" "d", whereas
    # merging both "cd" at once would give "cd" "cd". The round sees it and hands the piece over.
    ranks = table_of([b"cdc", b"cd"])
    merged, merger = merge_all_in_rounds([b"cdcd", b"xcdy"], ranks)
    assert merged == [(ranks[b"cdc"], ranks[b"d"]), (ranks[b"x"], ranks[b"cd"], ranks[b"y"])]
    assert merger.merged_one_at_a_time == 1


def test_merge_that_creates_a_lower_ranked_pair_before_it_is_handed_over():
    # In "xcdcd", merging the first "cd" (rank 258) creates ("x", "cd"), rank 256: taken next,
    # then "xcd" + "c" (rank 257), which takes the "c" of the second "cd": "xcdc" "d".
    # Merging both "cd" in one round would give "xcd" "cd".
    ranks = table_of([b"xcd", b"xcdc", b"cd"])
    merged, merger = merge_all_in_rounds([b"xcdcd"], ranks)
    assert merged == [(ranks[b"xcdc"], ranks[b"d"])] == one_at_a_time([b"xcdcd"], ranks, ranks)
    assert merger.merged_one_at_a_time == 1


def test_pieces_in_utf8_keep_their_multibyte_tokens():
    ranks = table_of(["ä".encode(), "中".encode()[:2], "中".encode(), "äb".encode()])
    pieces = ["ääb中中".encode(), "中".encode()[:2] + b"\xe4", b"\xff\xfe"]
    merged, _ = merge_all_in_rounds(pieces, ranks)
    assert merged == one_at_a_time(pieces, ranks, ranks)


def test_bytes_without_a_token_are_left_out_unless_merged():
    ranks = {token: rank for token, rank in table_of([b"\xffa", b"a\xff"]).items() if token != b"\xff"}
    pieces = [b"\xff", b"b\xffb", b"\xffab\xff\xff", b"a\xff\xffa"] * 3
    merged, _ = merge_all_in_rounds(pieces, ranks)
    assert merged[:4] == [(), (ranks[b"b"], ranks[b"b"]), (ranks[b"\xffa"], ranks[b"b"]), (ranks[b"a\xff"], ranks[b"\xffa"])]
    assert merged == one_at_a_time(pieces, ranks, ranks)


def test_bad_input_is_refused():
    ranks = table_of([])
    with pytest.raises(ValueError, match="empty piece"):
        PieceMerger(ranks, ranks).merge([b"a", b""])
    assert PieceMerger(ranks, ranks).merge([]) == []


# ---- cold encoding against tiktoken ------------------------------------------------------------


def random_words(seed: int, alphabet: str, size: int) -> str:
    rng = random.Random(seed)
    return " ".join("".join(rng.choices(alphabet, k=rng.randint(1, 12))) for _ in range(size))


def test_cold_encode_of_unseen_text_matches_tiktoken(trained):
    # Words never seen in training: thousands of new chunks, merged in rounds on the first call.
    text = random_words(0, "etaoinshrdlucmfwyp", 6000) + "\n" + random_words(1, "äöüßéè中文字", 2000)
    fresh = BPETokenizer(trained.mergeable_ranks(), trained.pattern)
    reference = tiktoken.Encoding("cold", pat_str=trained.pattern, mergeable_ranks=trained.mergeable_ranks(),
                                  special_tokens={})
    assert fresh.encode_ordinary(text) == reference.encode_ordinary(text)
    assert fresh._merger is not None  # the rounds did run
    assert fresh.encode_ordinary(text) == reference.encode_ordinary(text)  # and the cache keeps their ids


@settings(deadline=None, max_examples=12, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 2**32 - 1))
def test_cold_encode_with_random_rank_tables_matches_tiktoken(seed):
    # tiktoken merges by rank whatever the table, so it is the oracle for tables no training
    # would make; ids that differ from ranks are mapped from tiktoken's rank ids.
    rng = random.Random(seed)
    extra = {"".join(rng.choices("abcä ", k=rng.randint(2, 5))).encode() for _ in range(60)}
    tokens = SINGLE_BYTES + sorted(extra - set(SINGLE_BYTES))
    ranks = dict(zip(tokens, rng.sample(range(len(tokens)), len(tokens))))
    token_ids = dict(zip(tokens, rng.sample(range(len(tokens)), len(tokens))))
    text = random_words(seed, "abcä", 3000)
    tokenizer = BPETokenizer(ranks, "gpt2", token_ids=token_ids)
    reference = tiktoken.Encoding("random", pat_str=tokenizer.pattern, mergeable_ranks=ranks, special_tokens={})
    bytes_of_rank = {rank: token for token, rank in ranks.items()}
    expected = [token_ids[bytes_of_rank[rank]] for rank in reference.encode_ordinary(text)]
    assert tokenizer.encode_ordinary(text) == expected
    assert tokenizer._merger is not None
