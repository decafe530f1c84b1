"""BPETokenizer: training, encoding and decoding, token for token against tiktoken."""


import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from minilm.tokenizers import GPT2_PATTERN, GPT4_PATTERN, BPETokenizer

from ..helpers import oracle

tiktoken = oracle("tiktoken", reason="tiktoken is the reference for byte-level BPE")

fixture_settings = settings(deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


def tiktoken_twin(tok: BPETokenizer):
    return tiktoken.Encoding(
        "minilm-test", pat_str=tok.pattern, mergeable_ranks=tok.mergeable_ranks(), special_tokens=tok.special_tokens
    )


# ---- training ---------------------------------------------------------------------------


def test_training_gives_requested_size_and_layout(trained):
    assert trained.vocab_size == 700
    ranks = trained.mergeable_ranks()
    assert sorted(ranks.values()) == list(range(698))
    assert all(ranks[bytes([b])] == b for b in range(256))
    assert trained.special_tokens == {"<|endoftext|>": 698, "<|fim|>": 699}


def test_every_merged_token_ranks_after_its_parts(trained):
    from minilm.tokenizers.byte_pair import recover_merges

    ranks = trained.mergeable_ranks()
    for left, right in recover_merges(ranks):
        assert ranks[left + right] > max(ranks[left], ranks[right])


def test_pattern_names_resolve_to_exact_strings(training_text):
    assert BPETokenizer.train("abc abc", 256, pattern="gpt2").pattern == GPT2_PATTERN
    assert BPETokenizer.train("abc abc", 256, pattern="gpt4").pattern == GPT4_PATTERN
    custom = r"\w+|\s+|[^\w\s]+"
    assert BPETokenizer.train("abc abc", 256, pattern=custom).pattern == custom


def test_training_is_deterministic_and_breaks_ties_by_smallest_pair():
    # "ab" and "cd" occur equally often: the pair with the smaller ids (a=97, b=98) wins.
    tok = BPETokenizer.train("ab cd " * 10, 258, pattern=r"\S+|\s+")
    ranks = tok.mergeable_ranks()
    assert ranks[b"ab"] == 256 and ranks[b"cd"] == 257
    again = BPETokenizer.train("ab cd " * 10, 258, pattern=r"\S+|\s+")
    assert again.mergeable_ranks() == ranks


def test_min_frequency_stops_training_early():
    tok = BPETokenizer.train("ab ab cd", 300, pattern=r"\S+|\s+", min_frequency=2)
    assert set(tok.mergeable_ranks()) - {bytes([b]) for b in range(256)} == {b"ab"}


def test_corpus_may_be_texts_and_paths(tmp_path):
    path = tmp_path / "corpus.txt"
    path.write_text("hello hello hello world", encoding="utf-8")
    from_path = BPETokenizer.train(path, 270)
    from_list = BPETokenizer.train([path, "extra text"], 270)
    from_text = BPETokenizer.train("hello hello hello world", 270)
    assert from_path.mergeable_ranks() == from_text.mergeable_ranks()
    assert from_list.vocab_size >= 257
    with pytest.raises(TypeError, match="corpus"):
        BPETokenizer.train([b"bytes"], 270)


def test_special_token_text_is_not_learned():
    tok = BPETokenizer.train("<|eot|>" * 50, 300, special_tokens=["<|eot|>"])
    assert len(tok.mergeable_ranks()) == 256


def test_progress_bar_goes_to_stderr_when_verbose(capsys):
    BPETokenizer.train("abc abd abe " * 20, 260, verbose=True)
    assert "BPE merges" in capsys.readouterr().err
    BPETokenizer.train("abc abd abe " * 20, 260, verbose=False)
    assert capsys.readouterr().err == ""


# ---- exactness against tiktoken -------------------------------------------------------------


def test_encode_matches_tiktoken(trained, varied_text):
    text = varied_text
    reference = tiktoken_twin(trained)
    assert trained.encode_ordinary(text) == reference.encode_ordinary(text)
    assert trained.encode(text, allowed_special="all") == reference.encode(text, allowed_special="all")


def test_encode_training_text_matches_tiktoken(trained, training_text):
    assert trained.encode_ordinary(training_text) == tiktoken_twin(trained).encode_ordinary(training_text)


@fixture_settings
@given(text=st.text(max_size=300))
def test_random_text_matches_tiktoken(trained, text):
    assert trained.encode_ordinary(text) == tiktoken_twin(trained).encode_ordinary(text)


@fixture_settings
@given(text=st.text(alphabet=st.sampled_from("ab \n\t'sé中😀1.<|>endoftx"), max_size=200))
def test_random_text_from_small_alphabet_matches_tiktoken(trained, text):
    reference = tiktoken_twin(trained)
    assert trained.encode(text, allowed_special="all") == reference.encode(text, allowed_special="all")


def test_long_single_piece_is_exact(trained):
    # Its speed (heap-based merging, not quadratic) is measured in benchmarks/tokenizer_bench.py.
    reference = tiktoken_twin(trained)
    for text in ("a" * 100_000, "ab" * 50_000, "\u4e2d" * 30_000):
        assert trained.encode_ordinary(text) == reference.encode_ordinary(text)


def test_lone_surrogates_are_replaced_like_tiktoken(trained):
    text = "ab\ud800cd"
    assert trained.encode_ordinary(text) == tiktoken_twin(trained).encode_ordinary(text)


def test_encode_pauses_the_garbage_collector_and_restores_it(trained, training_text):
    # A cold encode of a long text runs no collection (they walk the young list of chunks and
    # find nothing), and the collector is left as it was, on or off; a text that is not a str
    # gets a clear error.
    import gc

    collections = []
    fresh = BPETokenizer(trained.mergeable_ranks(), trained.pattern)
    text = training_text * 3
    gc.callbacks.append(lambda phase, info: collections.append(info["generation"]) if phase == "start" else None)
    try:
        ids = fresh.encode_ordinary(text)
    finally:
        gc.callbacks.pop()
    assert ids == tiktoken_twin(trained).encode_ordinary(text)
    assert collections == [] and gc.isenabled()
    gc.disable()
    try:
        fresh.encode_ordinary("ab\ud800cd")  # the surrogate path's retry
        assert not gc.isenabled()
    finally:
        gc.enable()
    with pytest.raises(TypeError, match="encode_ordinary: expected a str, got NoneType"):
        fresh.encode_ordinary(None)
    with pytest.raises(TypeError, match="encode: expected a str, got bytes"):
        fresh.encode(b"abc")
    assert gc.isenabled()


# ---- special tokens ----------------------------------------------------------------------------


def test_special_token_text_raises_by_default(trained):
    with pytest.raises(ValueError, match="<\\|endoftext\\|>"):
        trained.encode("before <|endoftext|> after")


@pytest.mark.parametrize(
    "allowed, disallowed",
    [("all", "all"), ({"<|fim|>"}, ()), ({"<|endoftext|>"}, "all"), (set(), ())],
)
def test_special_token_handling_matches_tiktoken(trained, allowed, disallowed):
    reference = tiktoken_twin(trained)
    text = "x<|endoftext|>y <|fim|><|fim|>z"
    ours = _outcome(lambda: trained.encode(text, allowed_special=allowed, disallowed_special=disallowed))
    theirs = _outcome(lambda: reference.encode(text, allowed_special=allowed, disallowed_special=disallowed))
    assert ours == theirs


def _outcome(call):
    try:
        return call()
    except ValueError:
        return "ValueError"


def test_none_allows_special_text_as_ordinary_text(trained):
    text = "a <|endoftext|>"
    assert trained.encode(text, allowed_special="none") == trained.encode_ordinary(text)
    assert trained.special_tokens["<|endoftext|>"] not in trained.encode(text, allowed_special="none")


def test_bad_allowed_special_is_rejected(trained):
    with pytest.raises(ValueError, match="unknown special"):
        trained.encode("x", allowed_special={"<|nope|>"})
    with pytest.raises(ValueError, match="allowed_special"):
        trained.encode("x", allowed_special="some")


def test_encode_batch(trained):
    texts = ["one", "two <|fim|>", ""]
    expected = [trained.encode(t, allowed_special="all") for t in texts]
    assert trained.encode_batch(texts, allowed_special="all") == expected


# ---- decoding --------------------------------------------------------------------------------


@fixture_settings
@given(text=st.text(max_size=300))
def test_decode_inverts_encode(trained, text):
    assert trained.decode(trained.encode_ordinary(text)) == text


@fixture_settings
@given(data=st.data())
def test_decode_of_any_ids_never_raises_and_matches_tiktoken(trained, data):
    ids = data.draw(st.lists(st.integers(0, trained.vocab_size - 1), max_size=50))
    assert trained.decode(ids) == tiktoken_twin(trained).decode(ids)
    assert trained.decode_bytes(ids) == tiktoken_twin(trained).decode_bytes(ids)


def test_decode_rejects_unknown_ids(trained):
    with pytest.raises(ValueError, match="not in the vocabulary"):
        trained.decode([0, trained.vocab_size])
    with pytest.raises(ValueError, match="not in the vocabulary"):
        trained.token_bytes(-1)


def test_token_bytes(trained):
    assert trained.token_bytes(65) == b"A"
    assert trained.token_bytes(trained.special_tokens["<|fim|>"]) == b"<|fim|>"


@fixture_settings
@given(data=st.data())
def test_stream_decoder_equals_decode_and_holds_back_partial_characters(trained, data):
    ids = data.draw(st.lists(st.integers(0, trained.vocab_size - 1), max_size=40))
    stream = trained.stream_decoder()
    pieces = [stream.push(token_id) for token_id in ids]
    assert "".join(pieces) + stream.flush() == trained.decode(ids)


def test_stream_decoder_waits_for_the_last_byte(trained):
    stream = trained.stream_decoder()
    euro = "€".encode("utf-8")  # three bytes, three single-byte tokens
    assert stream.push(euro[0]) == ""
    assert stream.push(euro[1]) == ""
    assert stream.push(euro[2]) == "€"
    assert stream.push(euro[0]) == ""
    assert stream.flush() == "\ufffd"


# ---- save / load -----------------------------------------------------------------------------


@fixture_settings
@given(text=st.text(max_size=200))
def test_save_load_gives_identical_ids(trained, tmp_path_factory, text):
    path = tmp_path_factory.mktemp("bpe") / "tok.txt"
    trained.save(path)
    loaded = BPETokenizer.load(path)
    assert loaded.encode(text, allowed_special="all") == trained.encode(text, allowed_special="all")


def test_save_load_keeps_odd_special_tokens_and_patterns(tmp_path):
    specials = ["<|a b|>", "line\nbreak", "tab\there", "\u2028sep", "引号\"'", " "]
    pattern = "[ ]?\\w+|\\s+|\n|[^\\w\\s]+"
    tok = BPETokenizer.train("some text here\n" * 20, 300, pattern=pattern, special_tokens=specials)
    tok.save(tmp_path / "tok.txt")
    loaded = BPETokenizer.load(tmp_path / "tok.txt")
    assert loaded.pattern == pattern
    assert loaded.special_tokens == tok.special_tokens
    assert loaded.mergeable_ranks() == tok.mergeable_ranks()
    text = "some line\nbreak text \u2028sep here"
    assert loaded.encode(text, allowed_special="all") == tok.encode(text, allowed_special="all")
    assert (tmp_path / "tok.txt").read_bytes().startswith(b"minilm-bpe v1\n")


def test_save_leaves_no_temporary_files(trained, tmp_path):
    trained.save(tmp_path / "tok.txt")
    trained.save(tmp_path / "tok.txt")
    assert [p.name for p in tmp_path.iterdir()] == ["tok.txt"]


# ---- bad input ---------------------------------------------------------------------------------


def test_vocab_size_below_bytes_plus_specials_is_rejected():
    with pytest.raises(ValueError, match="vocab_size=256 is too small.*257"):
        BPETokenizer.train("text", 256, special_tokens=["<|x|>"])
    with pytest.raises(ValueError, match="too small"):
        BPETokenizer.train("text", 100)


def test_unknown_pattern_name_is_rejected():
    with pytest.raises(ValueError, match="unknown pattern name 'gpt5'"):
        BPETokenizer.train("text", 300, pattern="gpt5")
    with pytest.raises(ValueError, match="does not compile"):
        BPETokenizer({bytes([b]): b for b in range(256)}, pattern="(unclosed")


def test_incomplete_ranks_are_rejected():
    with pytest.raises(ValueError, match="single bytes"):
        BPETokenizer({b"a": 0})
    ranks = {bytes([b]): b for b in range(256)}
    with pytest.raises(ValueError, match="already taken"):
        BPETokenizer(ranks, special_tokens={"<|x|>": 5})
