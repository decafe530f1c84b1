"""What every command shares: the user-facing error, the built-in text, reading text files."""

from __future__ import annotations

import sys

from ..data import read_text_file


class CommandError(Exception):
    """A user-facing error: printed as one line, exit status 2."""


def builtin_text() -> str:
    """The Python documentation that ships with every CPython (pydoc's topic help texts)."""
    from pydoc_data.topics import topics

    return "\n\n".join(topics[key].strip() for key in sorted(topics)) + "\n"


def read_texts(paths) -> str:
    parts = []
    for path in paths:
        parts.append(read_text_file(path, CommandError))
    text = "\n".join(parts)
    if not text.strip():
        raise CommandError("the data files are empty")
    return text


def say(args, text: str) -> None:
    """A progress line on stderr, unless the command was given --quiet."""
    if not getattr(args, "quiet", False):
        print(text, file=sys.stderr, flush=True)
