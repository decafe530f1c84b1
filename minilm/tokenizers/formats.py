"""Reading and writing other libraries' BPE files: tiktoken rank files, Hugging Face
`tokenizer.json`, and GPT-2's `vocab.json` + `merges.txt`.

These functions deal in plain data (ranks, ids, special tokens, a pattern) so that
`bpe.py` stays about tokenizing.

Hugging Face byte-level files store each token as a printable string: GPT-2 maps
every byte to one visible character (printable Latin-1 bytes to themselves, the
rest, such as space and control bytes, to U+0100 onwards; a space becomes "Ġ").
Their ids need not follow the merge order (GPT-2 numbers printable bytes first), so
importing yields ranks (merge order, what encoding uses) and ids (what the file
says) separately.
"""

from __future__ import annotations

import base64
import binascii
import json
import os
from dataclasses import dataclass
from pathlib import Path

import regex

from .base import LineReader, TokenizerFileError, write_text_atomic
from .byte_pair import recover_merges
from .patterns import GPT2_PATTERN


def _gpt2_byte_to_unicode() -> dict[int, str]:
    visible = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    mapping = {byte: chr(byte) for byte in visible}
    next_free = 256
    for byte in range(256):
        if byte not in mapping:
            mapping[byte] = chr(next_free)
            next_free += 1
    return mapping


BYTE_TO_UNICODE = _gpt2_byte_to_unicode()
UNICODE_TO_BYTE = {char: byte for byte, char in BYTE_TO_UNICODE.items()}

# The regex of Hugging Face's ByteLevel pre-tokenizer (use_regex=true). It splits
# exactly as GPT2_PATTERN, which is the faster way to write it.
HF_BYTE_LEVEL_REGEX = r"""'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"""


def bytes_to_printable(token: bytes) -> str:
    return "".join(BYTE_TO_UNICODE[byte] for byte in token)


def printable_to_bytes(text: str) -> bytes | None:
    """Inverse of `bytes_to_printable`; None when `text` is not in that alphabet."""
    try:
        return bytes(UNICODE_TO_BYTE[char] for char in text)
    except KeyError:
        return None


@dataclass
class ImportedBPE:
    ranks: dict[bytes, int]
    token_ids: dict[bytes, int]
    special_tokens: dict[str, int]
    pattern: str | None  # None when the file does not say


# ---- tiktoken ----------------------------------------------------------------------


def read_tiktoken_ranks(path: str | os.PathLike) -> dict[bytes, int]:
    """Read "base64-token rank" lines (blank lines are skipped, as tiktoken does)."""
    reader = LineReader(path)
    ranks: dict[bytes, int] = {}
    while not reader.at_end():
        line = reader.next_line("a 'base64 rank' line")
        if not line.strip():
            continue
        fields = line.split()
        if len(fields) != 2 or not fields[1].isdigit():
            raise reader.error(f"expected 'base64-token rank', found {line[:60]!r}")
        try:
            token = base64.b64decode(fields[0], validate=True)
        except binascii.Error:
            raise reader.error(f"invalid base64 {fields[0][:60]!r}") from None
        if token in ranks:
            raise reader.error(f"token {token!r} appears twice")
        ranks[token] = int(fields[1])
    if not ranks:
        raise TokenizerFileError(path, reader.line_number, "no ranks in file")
    return ranks


def write_tiktoken_ranks(path: str | os.PathLike, ranks: dict[bytes, int]) -> None:
    lines = [f"{base64.b64encode(token).decode('ascii')} {rank}"
             for token, rank in sorted(ranks.items(), key=lambda item: item[1])]
    write_text_atomic(path, "\n".join(lines) + "\n")


# ---- Hugging Face --------------------------------------------------------------------


def build_from_vocab_and_merges(
    vocab: dict[str, int],
    merges: list[tuple[str, str]],
    added_tokens: dict[str, int],
    source: str,
    allow_missing_bytes: bool = False,
) -> ImportedBPE:
    """Turn a byte-level vocabulary and merge list into ranks, ids and special tokens.

    Ranks: the 256 bytes first (ordered by their ids), then one rank per merge in
    file order. A merge whose result was already made by an earlier merge (two
    splits of the same bytes) adds nothing: rank-based encoding already forms
    that token at its first rank. Vocabulary entries that are neither bytes nor
    merge results (GPT-2's "<|endoftext|>") become special tokens.
    `allow_missing_bytes` accepts a vocabulary without some single bytes (see
    `BPETokenizer`'s `missing_bytes="skip"`).
    """
    byte_ids = {}
    for byte in range(256):
        char = BYTE_TO_UNICODE[byte]
        if char not in vocab:
            if allow_missing_bytes:
                continue
            raise ValueError(
                f"{source}: the vocabulary lacks byte 0x{byte:02x} ({char!r}); a byte-level BPE needs all "
                "256 bytes (with Hugging Face's BpeTrainer pass initial_alphabet=pre_tokenizers.ByteLevel.alphabet())"
            )
        byte_ids[bytes([byte])] = vocab[char]
    ranks = {token: rank for rank, token in enumerate(sorted(byte_ids, key=byte_ids.__getitem__))}
    token_ids = dict(byte_ids)
    for number, (left, right) in enumerate(merges, start=1):
        left_bytes, right_bytes = printable_to_bytes(left), printable_to_bytes(right)
        if left_bytes not in ranks or right_bytes not in ranks:
            raise ValueError(f"{source}: merge {number} ({left!r} {right!r}) uses a token no earlier merge made")
        merged = left_bytes + right_bytes
        if merged in ranks:
            continue
        if left + right not in vocab:
            raise ValueError(f"{source}: merge {number} makes {left + right!r}, which is not in the vocabulary")
        ranks[merged] = len(ranks)
        token_ids[merged] = vocab[left + right]

    special_tokens = dict(added_tokens)
    used_ids = set(token_ids.values()) | set(special_tokens.values())
    for text, token_id in vocab.items():
        if token_id not in used_ids:
            raw = printable_to_bytes(text)
            try:
                special_tokens[raw.decode("utf-8") if raw is not None else text] = token_id
            except UnicodeDecodeError:
                special_tokens[text] = token_id
    return ImportedBPE(ranks, token_ids, special_tokens, pattern=None)


def _load_json(path: str | os.PathLike):
    try:
        with open(path, encoding="utf-8") as file:
            return json.load(file)
    except json.JSONDecodeError as exc:
        raise TokenizerFileError(path, exc.lineno, f"invalid JSON: {exc.msg}") from None
    except UnicodeDecodeError as exc:
        raise ValueError(f"{os.fspath(path)}: not valid UTF-8 ({exc.reason})") from None


def _pattern_from_pre_tokenizer(pre_tokenizer: dict | None, source: str) -> str:
    """The regex a Hugging Face byte-level pre-tokenizer splits with."""

    def byte_level_pattern(step: dict) -> str | None:
        if step.get("add_prefix_space"):
            raise ValueError(f"{source}: ByteLevel add_prefix_space=true is not supported")
        return GPT2_PATTERN if step.get("use_regex", True) else None

    kind = (pre_tokenizer or {}).get("type")
    if kind == "ByteLevel":
        pattern = byte_level_pattern(pre_tokenizer)
        if pattern is not None:
            return pattern
    elif kind == "Sequence":
        steps = pre_tokenizer.get("pretokenizers", [])
        if len(steps) == 2 and steps[0].get("type") == "Split" and steps[1].get("type") == "ByteLevel":
            split, byte_level = steps
            isolated = split.get("behavior") == "Isolated" and not split.get("invert")
            if byte_level_pattern(byte_level) is None and isolated:
                if "Regex" in split["pattern"]:
                    return split["pattern"]["Regex"]
                return regex.escape(split["pattern"]["String"])
    raise ValueError(
        f"{source}: unsupported pre_tokenizer {json.dumps(pre_tokenizer)[:200]}; expected ByteLevel, or "
        "Split(regex, Isolated) followed by ByteLevel(use_regex=false); pass pattern=... to override"
    )


def read_tokenizer_json(path: str | os.PathLike) -> ImportedBPE:
    source = os.fspath(path)
    data = _load_json(path)
    model = data.get("model") or {}
    if model.get("type") != "BPE":
        raise ValueError(f"{source}: model type is {model.get('type')!r}, expected 'BPE'")
    for option in ("continuing_subword_prefix", "end_of_word_suffix", "byte_fallback", "dropout"):
        if model.get(option):
            raise ValueError(f"{source}: BPE option {option}={model[option]!r} is not supported")
    if data.get("normalizer") is not None:
        raise ValueError(f"{source}: normalizers are not supported (found {data['normalizer'].get('type')!r})")
    merges = []
    for number, merge in enumerate(model.get("merges", []), start=1):
        pair = merge.split(" ") if isinstance(merge, str) else merge  # old "a b" or new ["a", "b"] format
        if len(pair) != 2:
            raise ValueError(f"{source}: merge {number} is {merge!r}, expected two tokens")
        merges.append((pair[0], pair[1]))
    added = {token["content"]: token["id"] for token in data.get("added_tokens", [])}
    imported = build_from_vocab_and_merges(model.get("vocab", {}), merges, added, source)
    imported.pattern = _pattern_from_pre_tokenizer(data.get("pre_tokenizer"), source)
    return imported


def write_tokenizer_json(
    path: str | os.PathLike,
    ranks: dict[bytes, int],
    token_ids: dict[bytes, int],
    special_tokens: dict[str, int],
    pattern: str,
) -> None:
    """Write a Hugging Face `tokenizer.json` (merges in the newer [left, right] form)."""
    vocab = {bytes_to_printable(token): token_id
             for token, token_id in sorted(token_ids.items(), key=lambda item: item[1])}
    merges = [[bytes_to_printable(left), bytes_to_printable(right)] for left, right in recover_merges(ranks)]
    added_tokens = [
        {"id": token_id, "content": text, "single_word": False, "lstrip": False, "rstrip": False,
         "normalized": False, "special": True}
        for text, token_id in sorted(special_tokens.items(), key=lambda item: item[1])
    ]
    byte_level = {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": False}
    document = {
        "version": "1.0",
        "truncation": None,
        "padding": None,
        "added_tokens": added_tokens,
        "normalizer": None,
        "pre_tokenizer": {
            "type": "Sequence",
            "pretokenizers": [
                {"type": "Split", "pattern": {"Regex": pattern}, "behavior": "Isolated", "invert": False},
                byte_level,
            ],
        },
        "post_processor": None,
        "decoder": byte_level,
        "model": {
            "type": "BPE", "dropout": None, "unk_token": None, "continuing_subword_prefix": None,
            "end_of_word_suffix": None, "fuse_unk": False, "byte_fallback": False, "ignore_merges": False,
            "vocab": vocab, "merges": merges,
        },
    }
    write_text_atomic(path, json.dumps(document, ensure_ascii=False, indent=1) + "\n")


def read_vocab_and_merges(vocab_path: str | os.PathLike, merges_path: str | os.PathLike) -> ImportedBPE:
    """Read GPT-2's `vocab.json` (token -> id) and `merges.txt` ("left right" lines
    after an optional "#version" line). The pattern is not in these files."""
    vocab = _load_json(vocab_path)
    reader = LineReader(merges_path)
    merges = []
    while not reader.at_end():
        line = reader.next_line("a merge")
        if (reader.line_number == 1 and line.startswith("#version")) or not line:
            continue
        pair = line.split(" ")
        if len(pair) != 2:
            raise reader.error(f"expected 'left right', found {line[:60]!r}")
        merges.append((pair[0], pair[1]))
    return build_from_vocab_and_merges(vocab, merges, {}, f"{os.fspath(vocab_path)} + {os.fspath(merges_path)}")


def write_vocab_and_merges(
    directory: str | os.PathLike, ranks: dict[bytes, int], token_ids: dict[bytes, int], special_tokens: dict[str, int]
) -> None:
    """Write `vocab.json` and `merges.txt`; special tokens go into vocab.json
    (as GPT-2 stores "<|endoftext|>"), in the same printable byte form."""
    directory = Path(directory)
    vocab = {bytes_to_printable(token): token_id for token, token_id in token_ids.items()}
    for text, token_id in special_tokens.items():
        vocab[bytes_to_printable(text.encode("utf-8"))] = token_id
    vocab = dict(sorted(vocab.items(), key=lambda item: item[1]))
    merges = [f"{bytes_to_printable(left)} {bytes_to_printable(right)}" for left, right in recover_merges(ranks)]
    write_text_atomic(directory / "vocab.json", json.dumps(vocab, ensure_ascii=False) + "\n")
    write_text_atomic(directory / "merges.txt", "\n".join(["#version: 0.2", *merges]) + "\n")


def read_tokenizer_config(directory: str | os.PathLike, special_tokens: dict[str, int]) -> dict:
    """The chat-model settings of a Hugging Face tokenizer folder, as keyword arguments
    for `BPETokenizer._set_model_options` (empty when the folder has none).

    `tokenizer_config.json` names BOS and EOS by their text (a string, or an added-token
    object with "content"); `chat_template` there is a string or a list of named
    templates (the one named "default" is used). A `chat_template.jinja` file, which
    newer transformers versions write instead, takes precedence.
    """
    directory = Path(directory)
    config_path = directory / "tokenizer_config.json"
    config = _load_json(config_path) if config_path.is_file() else {}
    if not isinstance(config, dict):
        raise ValueError(f"{config_path}: expected a JSON object")
    options: dict = {}
    for name in ("bos", "eos"):
        token = config.get(f"{name}_token")
        if isinstance(token, dict):
            token = token.get("content")
        if isinstance(token, str) and token in special_tokens:
            options[f"{name}_token_id"] = special_tokens[token]
    for flag in ("add_bos_token", "add_eos_token"):
        if flag in config:
            options[flag] = config[flag]
    template = config.get("chat_template")
    if isinstance(template, list):
        named = {entry.get("name"): entry.get("template") for entry in template if isinstance(entry, dict)}
        template = named.get("default")
    if (directory / "chat_template.jinja").is_file():
        template = (directory / "chat_template.jinja").read_text(encoding="utf-8")
    if template is not None:
        options["chat_template"] = template
    return options
