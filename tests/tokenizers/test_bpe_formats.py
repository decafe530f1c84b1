"""BPE import and export: tiktoken rank files, Hugging Face tokenizer.json,
GPT-2 vocab.json + merges.txt; exact against Hugging Face `tokenizers`."""

import json

import pytest

from minilm.tokenizers import BPETokenizer
from minilm.tokenizers.formats import BYTE_TO_UNICODE

from ..helpers import oracle

hf = oracle("tokenizers", reason="Hugging Face tokenizers is the reference for its file formats")


def hf_encode(hf_tokenizer, text):
    return hf_tokenizer.encode(text, add_special_tokens=False).ids


def test_tiktoken_file_round_trip(trained, tmp_path, varied_text):
    trained.save_tiktoken(tmp_path / "ranks.tiktoken")
    loaded = BPETokenizer.from_tiktoken_file(tmp_path / "ranks.tiktoken", trained.pattern, trained.special_tokens)
    assert loaded.mergeable_ranks() == trained.mergeable_ranks()
    assert loaded.encode(varied_text, allowed_special="all") == trained.encode(varied_text, allowed_special="all")


def test_tiktoken_file_is_readable_by_tiktoken(trained, tmp_path):
    load = oracle("tiktoken.load", reason="tiktoken reads its own rank files")
    trained.save_tiktoken(tmp_path / "ranks.tiktoken")
    assert load.load_tiktoken_bpe(str(tmp_path / "ranks.tiktoken")) == trained.mergeable_ranks()


def test_exported_tokenizer_json_encodes_like_hf(trained, tmp_path, varied_text):
    trained.save_tokenizer_json(tmp_path / "tokenizer.json")
    reference = hf.Tokenizer.from_file(str(tmp_path / "tokenizer.json"))
    assert hf_encode(reference, varied_text) == trained.encode(varied_text, allowed_special="all")
    ids = trained.encode(varied_text, allowed_special="all")
    assert reference.decode(ids, skip_special_tokens=False) == trained.decode(ids)


def test_exported_tokenizer_json_encodes_training_text_like_hf(trained, tmp_path, training_text):
    trained.save_tokenizer_json(tmp_path / "tokenizer.json")
    reference = hf.Tokenizer.from_file(str(tmp_path / "tokenizer.json"))
    assert hf_encode(reference, training_text) == trained.encode_ordinary(training_text)


def test_tokenizer_json_round_trip(trained, tmp_path, varied_text):
    trained.save_tokenizer_json(tmp_path / "tokenizer.json")
    loaded = BPETokenizer.from_pretrained(tmp_path)
    assert loaded.pattern == trained.pattern
    assert loaded.special_tokens == trained.special_tokens
    assert loaded.encode(varied_text, allowed_special="all") == trained.encode(varied_text, allowed_special="all")


def _hf_from_vocab_and_merges(directory, pattern, special_tokens):
    model = hf.models.BPE.from_file(str(directory / "vocab.json"), str(directory / "merges.txt"))
    reference = hf.Tokenizer(model)
    reference.pre_tokenizer = hf.pre_tokenizers.Sequence(
        [
            hf.pre_tokenizers.Split(hf.Regex(pattern), behavior="isolated"),
            hf.pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    reference.add_special_tokens(list(special_tokens))
    return reference


def test_vocab_and_merges_export_encodes_like_hf(trained, tmp_path, varied_text):
    trained.save_vocab_and_merges(tmp_path)
    reference = _hf_from_vocab_and_merges(tmp_path, trained.pattern, trained.special_tokens)
    loaded = BPETokenizer.from_pretrained(tmp_path, pattern=trained.pattern)
    expected = trained.encode(varied_text, allowed_special="all")
    assert hf_encode(reference, varied_text) == expected
    assert loaded.encode(varied_text, allowed_special="all") == expected
    assert loaded.special_tokens == trained.special_tokens


def test_ids_that_differ_from_ranks(trained, tmp_path, varied_text):
    """Ids in files need not follow merge order: here the bytes come in GPT-2's
    order (printable first), then the special tokens, then the merged tokens in
    reverse merge order. Encoding must still merge by rank and return file ids."""
    trained.save_vocab_and_merges(tmp_path)
    vocab = json.loads((tmp_path / "vocab.json").read_text(encoding="utf-8"))
    byte_chars = list(BYTE_TO_UNICODE.values())
    special_chars = [token for token in vocab if vocab[token] in trained.special_tokens.values()]
    merged_chars = sorted(set(vocab) - set(byte_chars) - set(special_chars), key=vocab.__getitem__, reverse=True)
    renumbered = {token: index for index, token in enumerate(byte_chars + special_chars + merged_chars)}
    (tmp_path / "vocab.json").write_text(json.dumps(renumbered), encoding="utf-8")

    reference = _hf_from_vocab_and_merges(tmp_path, trained.pattern, trained.special_tokens)
    loaded = BPETokenizer.from_vocab_and_merges(tmp_path / "vocab.json", tmp_path / "merges.txt", trained.pattern)
    assert not loaded.ids_are_ranks
    ids = loaded.encode(varied_text, allowed_special="all")
    assert ids == hf_encode(reference, varied_text)
    assert loaded.decode(ids) == varied_text
    with pytest.raises(ValueError, match="tiktoken file cannot keep its ids"):
        loaded.save_tiktoken(tmp_path / "ranks.tiktoken")
    loaded.save(tmp_path / "tok.txt")
    assert BPETokenizer.load(tmp_path / "tok.txt").encode(varied_text, allowed_special="all") == ids


@pytest.fixture(scope="module")
def hf_trained_dir(tmp_path_factory, training_text):
    """A tokenizer.json written by Hugging Face's own BpeTrainer (ByteLevel)."""
    directory = tmp_path_factory.mktemp("hf_trained")
    reference = hf.Tokenizer(hf.models.BPE())
    reference.pre_tokenizer = hf.pre_tokenizers.ByteLevel(add_prefix_space=False)
    reference.decoder = hf.decoders.ByteLevel()
    trainer = hf.trainers.BpeTrainer(
        vocab_size=900,
        special_tokens=["<|endoftext|>"],
        initial_alphabet=hf.pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    reference.train_from_iterator([training_text], trainer=trainer)
    reference.save(str(directory / "tokenizer.json"))
    return directory


def test_import_of_hf_trained_tokenizer_json(hf_trained_dir, varied_text):
    reference = hf.Tokenizer.from_file(str(hf_trained_dir / "tokenizer.json"))
    loaded = BPETokenizer.from_pretrained(hf_trained_dir)
    assert loaded.special_tokens == {"<|endoftext|>": 0}
    assert loaded.encode(varied_text, allowed_special="all") == reference.encode(varied_text).ids


def test_import_of_old_merges_format(hf_trained_dir, tmp_path, varied_text):
    document = json.loads((hf_trained_dir / "tokenizer.json").read_text(encoding="utf-8"))
    merges = document["model"]["merges"]
    document["model"]["merges"] = [" ".join(pair) if isinstance(pair, list) else pair for pair in merges]
    (tmp_path / "tokenizer.json").write_text(json.dumps(document), encoding="utf-8")
    reference = hf.Tokenizer.from_file(str(tmp_path / "tokenizer.json"))
    loaded = BPETokenizer.from_tokenizer_json(tmp_path / "tokenizer.json")
    assert loaded.encode(varied_text, allowed_special="all") == reference.encode(varied_text).ids


def test_vocabulary_without_all_bytes_is_rejected(tmp_path):
    reference = hf.Tokenizer(hf.models.BPE())
    reference.pre_tokenizer = hf.pre_tokenizers.ByteLevel(add_prefix_space=False)
    reference.train_from_iterator(["abc abc"], trainer=hf.trainers.BpeTrainer(vocab_size=300, show_progress=False))
    reference.save(str(tmp_path / "tokenizer.json"))
    with pytest.raises(ValueError, match="lacks byte .*initial_alphabet"):
        BPETokenizer.from_tokenizer_json(tmp_path / "tokenizer.json")


def test_corrupt_tiktoken_and_merges_files_name_the_line(trained, tmp_path):
    trained.save_tiktoken(tmp_path / "ranks.tiktoken")
    lines = (tmp_path / "ranks.tiktoken").read_text(encoding="utf-8").splitlines()
    lines[10] = "not-base64!! 10"
    (tmp_path / "ranks.tiktoken").write_text("\n".join(lines), encoding="utf-8")
    with pytest.raises(ValueError, match=r"ranks\.tiktoken, line 11: invalid base64"):
        BPETokenizer.from_tiktoken_file(tmp_path / "ranks.tiktoken", "gpt2")

    trained.save_vocab_and_merges(tmp_path)
    lines = (tmp_path / "merges.txt").read_text(encoding="utf-8").splitlines()
    lines[5] = "onlyone"
    (tmp_path / "merges.txt").write_text("\n".join(lines), encoding="utf-8")
    with pytest.raises(ValueError, match=r"merges\.txt, line 6: expected 'left right'"):
        BPETokenizer.from_pretrained(tmp_path)

    (tmp_path / "tokenizer.json").write_text('{"model": {\n"type": "BPE",\n oops}', encoding="utf-8")
    with pytest.raises(ValueError, match=r"tokenizer\.json, line 3: invalid JSON"):
        BPETokenizer.from_pretrained(tmp_path)
