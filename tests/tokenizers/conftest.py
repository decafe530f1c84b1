"""Shared fixtures: a small training corpus, tokenizers trained on it, varied texts."""

import pathlib
import sysconfig

import pytest

from minilm.tokenizers import BPETokenizer

# Text that exercises the pre-tokenization patterns: prose, code, CJK, emoji,
# whitespace runs, contractions, numbers, and endings in newline + space.
VARIED_TEXTS = [
    "Hello, world! It's a test. We'll see, they've done it; I'd say YOU'RE right.",
    "def f(x):\n    return x ** 2  # square\n\n\nclass A:\n\tpass\n",
    "中文文本，混合English和数字12345678。日本語のテキストもあります。",
    "emoji: 😀👍🏽🇫🇷 ... 👨‍👩‍👧‍👦 done",
    "   leading and trailing spaces   ",
    "line one\nline two\r\nline three\n ",
    "\n\n\n    \t\t  \n",
    "numbers 1 12 123 1234 12345 3.14159 1e-10 0xFF",
    "Ünïcödé àccents: café naïve résumé Σίσυφος Привет мир",
    "a" * 3000,
    " x" * 500,
    "",
    " ",
    "<|endoftext|> is a special token's text",
]


def _training_text() -> str:
    """About 600 KB: pydoc's topic help plus a few standard library modules."""
    import pydoc_data.topics

    parts = list(pydoc_data.topics.topics.values())
    stdlib = pathlib.Path(sysconfig.get_paths()["stdlib"])
    for name in ("textwrap.py", "json/decoder.py", "argparse.py"):
        parts.append((stdlib / name).read_text(encoding="utf-8"))
    parts.append("中文文本，混合数字。日本語のテキスト。😀👍 Привет мир café naïve\n" * 20)
    return "\n".join(parts)


@pytest.fixture(scope="session")
def training_text() -> str:
    return _training_text()


@pytest.fixture(params=VARIED_TEXTS, ids=range(len(VARIED_TEXTS)))
def varied_text(request) -> str:
    return request.param


@pytest.fixture(scope="session", params=["gpt2", "gpt4"])
def trained(request, training_text) -> BPETokenizer:
    return BPETokenizer.train(training_text, 700, pattern=request.param, special_tokens=["<|endoftext|>", "<|fim|>"])
