"""Cutting text into chunks by the pattern, fast and exact, and into pieces for other cores.

The `regex` module is needed for the patterns' Unicode classes (\\p{L}, \\p{N}), but on
ASCII text Python's own `re` runs the same patterns, with the classes spelled out for
ASCII, about 2.5x faster. `Splitter` uses `re` on the ASCII stretches of a text and
`regex` on the rest, for the named patterns whose ASCII forms are written below (other
patterns always use `regex`). The chunks are identical to `regex.findall` on the whole text:

Where a text may be cut. Each named pattern matches every character, and its matches follow
each other without gaps, so `findall` on the whole text equals `findall` on two parts cut at
a position p that is the end of a match, provided no match before p looks past p (no
lookahead reaches over the cut) and nothing after p looks back (the patterns have no
lookbehind). p just after an ASCII letter that is followed by a space is such a place: the
only alternatives that match a letter (the contractions and the letter runs, possessive)
end at the first non-letter, the space, and they have no lookahead. So `cut_points` cuts
there, and tests/tokenizers/test_pretokenize.py checks the equality on mixed texts.
"""

from __future__ import annotations

import re

import regex

from .patterns import GPT2_PATTERN, GPT4_PATTERN

_LETTER, _DIGIT, _SPACE = "A-Za-z", "0-9", r"\t\n\x0b\x0c\r "  # regex's \p{L}, \p{N}, \s on ASCII

# The named patterns on ASCII text: \p{L} -> [A-Za-z], \p{N} -> [0-9], \s -> the six ASCII
# spaces, $ -> \Z (after the possessive \s++ the two mean the same: the run takes any final
# newline). Python's re has possessive quantifiers since 3.11.
_ASCII_FORMS = {
    GPT2_PATTERN: (
        rf"""'(?:[sdmt]|ll|ve|re)| ?[{_LETTER}]++| ?[{_DIGIT}]++| ?[^{_SPACE}{_LETTER}{_DIGIT}]++"""
        rf"""|[{_SPACE}]++\Z|[{_SPACE}]+(?![^{_SPACE}])|[{_SPACE}]"""
    ),
    GPT4_PATTERN: (
        rf"""'(?i:[sdmt]|ll|ve|re)|[^\r\n{_LETTER}{_DIGIT}]?+[{_LETTER}]++|[{_DIGIT}]{{1,3}}+"""
        rf"""| ?[^{_SPACE}{_LETTER}{_DIGIT}]++[\r\n]*+|[{_SPACE}]++\Z|[{_SPACE}]*[\r\n]"""
        rf"""|[{_SPACE}]+(?![^{_SPACE}])|[{_SPACE}]"""
    ),
}

_CUT = re.compile(r"[A-Za-z](?= )")  # the cut goes after the letter, before the space

# Mixed texts are looked at in stretches of about this many characters (ASCII ones go to re).
SEGMENT_CHARS = 1 << 16


def can_cut(pattern: str) -> bool:
    """True when texts may be cut at `cut_points` for this pattern (the named ones)."""
    return pattern in _ASCII_FORMS


def cut_points(text: str, size: int) -> list[int]:
    """Positions (0 first, len(text) last) about `size` characters apart where the pattern's
    chunks of the whole text are the chunks of the parts (see the module's docstring)."""
    points = [0]
    while points[-1] + size < len(text):
        found = _CUT.search(text, points[-1] + size)
        if found is None:
            break
        points.append(found.end())
    points.append(len(text))
    return points


class Splitter:
    """`Splitter(pattern)(text)`: the chunks `regex.findall(pattern, text)` gives, faster."""

    def __init__(self, pattern: str):
        self.pattern = pattern
        self._findall = regex.compile(pattern).findall
        ascii_form = _ASCII_FORMS.get(pattern)
        self._ascii_findall = re.compile(ascii_form).findall if ascii_form else None

    def __call__(self, text: str) -> list[str]:
        if self._ascii_findall is None:
            return self._findall(text)
        if text.isascii():
            return self._ascii_findall(text)
        if len(text) <= SEGMENT_CHARS:
            return self._findall(text)
        chunks: list[str] = []
        points = cut_points(text, SEGMENT_CHARS)
        for start, stop in zip(points[:-1], points[1:]):
            segment = text[start:stop]
            chunks += self._ascii_findall(segment) if segment.isascii() else self._findall(segment)
        return chunks
