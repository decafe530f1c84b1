"""The shared tokenizer interface and the file helpers every tokenizer uses.

Every tokenizer saves itself as a versioned UTF-8 text file whose first line names
its kind and version, e.g. ``minilm-bpe v1``. `Tokenizer.load` reads that line and
hands the rest of the file to the matching subclass, so one call loads any of them.
"""

from __future__ import annotations

import os
from abc import ABC, abstractmethod
from collections.abc import Iterable, Sequence
from contextlib import contextmanager
from typing import ClassVar

FORMAT_VERSION = 1


class TokenizerFileError(ValueError):
    """A tokenizer file is corrupt or truncated; the message names the file and line (when one
    line is at fault). Every tokenizer loader raises this type and no other for a bad file."""

    def __init__(self, path: str | os.PathLike, line_number: int | None, problem: str):
        where = f", line {line_number}" if line_number is not None else ""
        super().__init__(f"{os.fspath(path)}{where}: {problem}")
        self.path = os.fspath(path)
        self.line_number = line_number
        self.problem = problem


def write_text_atomic(path: str | os.PathLike, text: str) -> None:
    """Write `text` as UTF-8 so that `path` holds either the old or the new content, with the
    permissions every other minilm file gets (0644 under the usual umask): see
    `minilm.data.atomic_write_bytes`."""
    from ..data import atomic_write_bytes

    atomic_write_bytes(path, text.encode("utf-8"))


@contextmanager
def tokenizer_file(path: str | os.PathLike):
    """Run a tokenizer loader's parsing inside this, so that whatever a malformed file makes it
    trip over (a missing key, a value of the wrong type, a nesting too deep) comes out as one
    TokenizerFileError naming the file, never as a KeyError or TypeError from deep inside."""
    try:
        yield
    except TokenizerFileError:
        raise
    except (ValueError, KeyError, TypeError, AttributeError, IndexError, RecursionError, OverflowError) as error:
        problem = str(error) if isinstance(error, ValueError) else f"{type(error).__name__}: {error}"
        prefix = f"{os.fspath(path)}: "
        raise TokenizerFileError(path, None, problem.removeprefix(prefix)) from None


def as_token_ids(ids: Iterable) -> list[int]:
    """`ids` as a list of Python ints, the one check every `decode` makes: Python and NumPy
    integers (and integer arrays) pass; floats, bools and anything else are a ValueError, never
    truncated or read as 0/1."""
    if hasattr(ids, "dtype") and hasattr(ids, "tolist"):  # a NumPy (or CuPy) array: check once
        if ids.dtype.kind not in "iu":
            raise ValueError(f"token ids must be integers, got an array of dtype {ids.dtype}")
        ids = ids.tolist()
        return ids if isinstance(ids, list) else [ids]
    result = []
    for token_id in ids:
        if type(token_id) is not int:
            if isinstance(token_id, bool) or not hasattr(token_id, "__index__") or hasattr(token_id, "dtype") \
                    and token_id.dtype.kind not in "iu":
                raise ValueError(f"token ids must be integers, got {token_id!r} ({type(token_id).__name__})")
            token_id = token_id.__index__()
        result.append(token_id)
    return result


class LineReader:
    """Reads a text file line by line and reports problems with the line number.

    Lines are split on "\\n" only: characters such as U+2028 that `str.splitlines`
    would treat as line breaks may legitimately occur inside a line.
    """

    def __init__(self, path: str | os.PathLike):
        self.path = os.fspath(path)
        with open(self.path, "rb") as file:
            raw_lines = file.read().split(b"\n")
        if raw_lines and raw_lines[-1] == b"":
            raw_lines.pop()  # the final newline ends the last line; it does not start a new one
        self._raw_lines = raw_lines
        self.line_number = 0  # number of the line most recently returned

    def error(self, problem: str, line_number: int | None = None) -> TokenizerFileError:
        return TokenizerFileError(self.path, self.line_number if line_number is None else line_number, problem)

    def next_line(self, expected: str) -> str:
        """Return the next line; `expected` describes it for the truncation error."""
        if self.line_number >= len(self._raw_lines):
            raise TokenizerFileError(
                self.path, self.line_number + 1, f"file ends here (truncated?), expected {expected}"
            )
        raw = self._raw_lines[self.line_number]
        self.line_number += 1
        try:
            return raw.decode("utf-8").removesuffix("\r")
        except UnicodeDecodeError as exc:
            raise self.error(f"not valid UTF-8 ({exc.reason} at byte {exc.start})") from None

    def next_field(self, keyword: str) -> str:
        """Read a line of the form "`keyword` value" and return the value."""
        line = self.next_line(f"a {keyword!r} line")
        name, _, value = line.partition(" ")
        if name != keyword:
            raise self.error(f"expected a {keyword!r} line, found {line[:60]!r}")
        return value

    def next_count(self, keyword: str) -> int:
        """Read a line of the form "`keyword` N" with N a non-negative integer."""
        value = self.next_field(keyword)
        if not value.isdigit():
            raise self.error(f"expected a count after {keyword!r}, found {value[:60]!r}")
        return int(value)

    def at_end(self) -> bool:
        return self.line_number >= len(self._raw_lines)

    def expect_end(self) -> None:
        if self.line_number < len(self._raw_lines):
            raise self.error("unexpected content after the end of the data", self.line_number + 1)


class Tokenizer(ABC):
    """Maps text to token ids and back.

    Subclasses implement `encode`, `decode`, `vocab_size` and the two halves of
    their file format (`_format_lines` and `_from_lines`); `save` and `load` wrap
    those with the header line, atomic writing and line-numbered errors.
    """

    file_kind: ClassVar[str]  # the header names it: "minilm-<file_kind> v1"
    _kinds: ClassVar[dict[str, type[Tokenizer]]] = {}

    special_tokens: dict[str, int]

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        if "file_kind" in cls.__dict__:
            Tokenizer._kinds[cls.file_kind] = cls

    @abstractmethod
    def encode(self, text: str) -> list[int]:
        """Token ids for `text`."""

    @abstractmethod
    def decode(self, ids: Sequence[int]) -> str:
        """Text for token ids."""

    @property
    @abstractmethod
    def vocab_size(self) -> int:
        """One more than the largest token id."""

    def encode_batch(self, texts: Iterable[str]) -> list[list[int]]:
        return [self.encode(text) for text in texts]

    # ---- save / load ------------------------------------------------------------

    @abstractmethod
    def _format_lines(self) -> list[str]:
        """The file body (everything after the header), one string per line."""

    @classmethod
    @abstractmethod
    def _from_lines(cls, reader: LineReader) -> Tokenizer:
        """Rebuild a tokenizer from the file body; raise `reader.error(...)` on bad lines."""

    def save(self, path: str | os.PathLike) -> None:
        """Write the tokenizer to `path` (UTF-8 text, replaced atomically)."""
        header = f"minilm-{self.file_kind} v{FORMAT_VERSION}"
        write_text_atomic(path, "\n".join([header, *self._format_lines()]) + "\n")

    @classmethod
    def load(cls, path: str | os.PathLike) -> Tokenizer:
        """Read a file written by `save`. `Tokenizer.load` accepts any kind;
        a subclass's `load` insists on its own kind."""
        reader = LineReader(path)
        header = reader.next_line("the header line 'minilm-<kind> v<version>'")
        kind, version = _parse_header(header)
        if kind is None:
            raise reader.error(f"not a minilm tokenizer file (header {header[:60]!r})")
        if version != FORMAT_VERSION:
            raise reader.error(f"unsupported format version {version} (this minilm reads v{FORMAT_VERSION})")
        tokenizer_class = cls._kinds.get(kind)
        if tokenizer_class is None:
            raise reader.error(f"unknown tokenizer kind {kind!r}")
        if cls is not Tokenizer and tokenizer_class is not cls:
            raise reader.error(f"this file holds a {tokenizer_class.__name__}, not a {cls.__name__}")
        with tokenizer_file(path):
            tokenizer = tokenizer_class._from_lines(reader)
        reader.expect_end()
        return tokenizer


def _parse_header(header: str) -> tuple[str | None, int | None]:
    """Split "minilm-bpe v1" into ("bpe", 1); (None, None) if it is no such header."""
    name, _, version = header.partition(" ")
    if not name.startswith("minilm-") or not version.startswith("v") or not version[1:].isdigit():
        return None, None
    return name.removeprefix("minilm-"), int(version[1:])
