"""The shared file format: header dispatch, corrupt and truncated files."""

import pytest

from minilm.tokenizers import BPETokenizer, CharTokenizer, Tokenizer, TokenizerFileError


@pytest.fixture(scope="module")
def small_bpe():
    return BPETokenizer.train("hello world, hello tokenizer " * 20, 280, special_tokens=["<|end|>"])


def saved_lines(tokenizer, tmp_path):
    tokenizer.save(tmp_path / "tok.txt")
    return (tmp_path / "tok.txt").read_text(encoding="utf-8").split("\n")


def write(tmp_path, lines):
    (tmp_path / "tok.txt").write_text("\n".join(lines), encoding="utf-8")
    return tmp_path / "tok.txt"


def test_load_dispatches_on_the_header(small_bpe, tmp_path):
    small_bpe.save(tmp_path / "tok.txt")
    assert isinstance(Tokenizer.load(tmp_path / "tok.txt"), BPETokenizer)
    with pytest.raises(TokenizerFileError, match="holds a BPETokenizer, not a CharTokenizer"):
        CharTokenizer.load(tmp_path / "tok.txt")


@pytest.mark.parametrize("drop_lines", [1, 2, 3, 100])
def test_truncated_file_names_file_and_line(small_bpe, tmp_path, drop_lines):
    lines = saved_lines(small_bpe, tmp_path)[:-1]  # the last element is the "" after the final newline
    keep_lines = len(lines) - drop_lines
    lines = lines[:keep_lines]
    path = write(tmp_path, lines)
    with pytest.raises(TokenizerFileError) as error:
        BPETokenizer.load(path)
    assert str(path) in str(error.value)
    assert f"line {keep_lines + 1}" in str(error.value)
    assert "truncated" in str(error.value)


def test_file_cut_mid_line_is_reported(small_bpe, tmp_path):
    text = "\n".join(saved_lines(small_bpe, tmp_path))
    (tmp_path / "tok.txt").write_text(text[: len(text) // 2], encoding="utf-8")
    with pytest.raises(TokenizerFileError, match=r"tok\.txt, line \d+"):
        BPETokenizer.load(tmp_path / "tok.txt")


@pytest.mark.parametrize(
    "line_index, replacement, message",
    [
        (0, "minilm-bpe v9", "unsupported format version 9"),
        (0, "something else", "not a minilm tokenizer file"),
        (1, "pattern not-json", "invalid JSON string"),
        (2, "tokens many", "expected a count"),
        (10, "7 7 !!!!", "invalid base64"),
        (10, "7 7", "expected '<rank> <id> <base64 bytes>'"),
        (10, "7 7 AA==", "token .+ appears twice"),
    ],
)
def test_corrupt_line_is_reported_with_its_number(small_bpe, tmp_path, line_index, replacement, message):
    lines = saved_lines(small_bpe, tmp_path)
    lines[line_index] = replacement
    path = write(tmp_path, lines)
    with pytest.raises(TokenizerFileError, match=f"tok.txt, line {line_index + 1}: {message}"):
        BPETokenizer.load(path)


def test_invalid_utf8_and_trailing_garbage_are_reported(small_bpe, tmp_path):
    lines = saved_lines(small_bpe, tmp_path)
    raw = "\n".join(lines).encode("utf-8").replace(b'"<|end|>"', b'"\xff"')
    (tmp_path / "tok.txt").write_bytes(raw)
    with pytest.raises(TokenizerFileError, match=f"line {len(lines) - 1}: not valid UTF-8"):
        BPETokenizer.load(tmp_path / "tok.txt")
    path = write(tmp_path, [*lines[:-1], "extra"])
    with pytest.raises(TokenizerFileError, match=f"line {len(lines)}: unexpected content"):
        BPETokenizer.load(path)


def test_errors_are_value_errors():
    assert issubclass(TokenizerFileError, ValueError)
