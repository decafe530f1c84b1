"""Character-level tokenizer for small experiments (one id per distinct character)."""

from __future__ import annotations

import json
from collections.abc import Iterable

from .base import LineReader, Tokenizer, as_token_ids


class CharTokenizer(Tokenizer):
    """Each character of the vocabulary is one token, numbered in sorted order.

    A character outside the vocabulary raises ValueError, unless the tokenizer
    has an `unk_token`: then it maps to that token's id (the last id), and
    decoding gives the `unk_token` text back.
    """

    file_kind = "char"

    def __init__(self, chars: Iterable[str], unk_token: str | None = None):
        self.chars = list(chars)
        for char in self.chars:
            if not isinstance(char, str) or len(char) != 1:
                raise ValueError(f"vocabulary entries must be single characters, got {char!r}")
        self.char_to_id = {char: index for index, char in enumerate(self.chars)}
        if len(self.char_to_id) != len(self.chars):
            raise ValueError("the vocabulary lists a character twice")
        if unk_token is not None and (not isinstance(unk_token, str) or not unk_token):
            raise ValueError(f"unk_token must be a non-empty str or None, got {unk_token!r}")
        self.unk_token = unk_token
        self.unk_token_id = len(self.chars) if unk_token is not None else None
        self.special_tokens = {unk_token: self.unk_token_id} if unk_token is not None else {}

    @classmethod
    def from_text(cls, text: str, unk_token: str | None = None) -> CharTokenizer:
        """The vocabulary is every distinct character of `text`."""
        if not isinstance(text, str):
            raise TypeError(f"text must be a str, got {type(text).__name__}")
        return cls(sorted(set(text)), unk_token)

    @property
    def vocab_size(self) -> int:
        return len(self.chars) + (1 if self.unk_token is not None else 0)

    def encode(self, text: str) -> list[int]:
        lookup = self.char_to_id
        if self.unk_token_id is not None:
            unk = self.unk_token_id
            return [lookup.get(char, unk) for char in text]
        try:
            return [lookup[char] for char in text]
        except KeyError:
            position, char = next((i, c) for i, c in enumerate(text) if c not in lookup)
            raise ValueError(
                f"character {char!r} (U+{ord(char):04X}) at position {position} is not in the vocabulary "
                "(build the tokenizer with unk_token=... to map unknown characters to it)"
            ) from None

    def decode(self, ids: Iterable[int]) -> str:
        pieces = []
        for token_id in as_token_ids(ids):
            if token_id == self.unk_token_id:
                pieces.append(self.unk_token)
            elif isinstance(token_id, int) and 0 <= token_id < len(self.chars):
                pieces.append(self.chars[token_id])
            else:
                raise ValueError(f"token id {token_id!r} is not in the vocabulary (0..{self.vocab_size - 1})")
        return "".join(pieces)

    # File body:
    #   unk_token <JSON string or null>
    #   chars <N>
    #   <one JSON string per line>       N lines, in id order

    def _format_lines(self) -> list[str]:
        return [
            f"unk_token {json.dumps(self.unk_token, ensure_ascii=False)}",
            f"chars {len(self.chars)}",
            *(json.dumps(char, ensure_ascii=False) for char in self.chars),
        ]

    @classmethod
    def _from_lines(cls, reader: LineReader) -> CharTokenizer:
        unk_token = _parse_json(reader, reader.next_field("unk_token"))
        chars = [_parse_json(reader, reader.next_line("a character")) for _ in range(reader.next_count("chars"))]
        try:
            return cls(chars, unk_token)
        except ValueError as exc:
            raise reader.error(f"inconsistent tokenizer: {exc}") from None


def _parse_json(reader: LineReader, text: str):
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise reader.error(f"invalid JSON ({exc.msg})") from None
