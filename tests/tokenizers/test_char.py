"""CharTokenizer: one id per character."""

import pytest
from hypothesis import given
from hypothesis import strategies as st

from minilm.tokenizers import CharTokenizer, Tokenizer


def test_from_text_builds_sorted_vocabulary():
    tok = CharTokenizer.from_text("hello")
    assert tok.chars == ["e", "h", "l", "o"]
    assert tok.encode("hole") == [1, 3, 2, 0]
    assert tok.vocab_size == 4


@given(st.text(min_size=1))
def test_decode_inverts_encode(text):
    tok = CharTokenizer.from_text(text)
    assert tok.decode(tok.encode(text)) == text


def test_unknown_characters_raise_or_map_to_unk():
    with pytest.raises(ValueError, match="'z' .* at position 2"):
        CharTokenizer.from_text("abc").encode("abz")
    tok = CharTokenizer.from_text("abc", unk_token="<unk>")
    assert tok.encode("abz") == [0, 1, 3]
    assert tok.decode([0, 3]) == "a<unk>"
    assert tok.special_tokens == {"<unk>": 3}


@given(text=st.text(max_size=50), ids=st.lists(st.integers(0, 10), max_size=20))
def test_decode_of_any_ids_never_raises_and_save_load_keeps_ids(tmp_path_factory, text, ids):
    tok = CharTokenizer.from_text("abcdefghij\n\u2028\"", unk_token="\n?")
    assert isinstance(tok.decode(ids), str)
    path = tmp_path_factory.mktemp("char") / "tok.txt"
    tok.save(path)
    loaded = Tokenizer.load(path)
    assert loaded.encode(text) == tok.encode(text)
    assert loaded.chars == tok.chars and loaded.unk_token == tok.unk_token


def test_decode_rejects_unknown_ids():
    with pytest.raises(ValueError, match="not in the vocabulary"):
        CharTokenizer.from_text("ab").decode([2])
