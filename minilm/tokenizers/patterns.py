"""Pre-tokenization patterns: text is cut into chunks by one regex before BPE runs.

BPE never merges across chunk boundaries, so the pattern decides what a token can
span (a word with its leading space, a run of digits, a run of whitespace ...).
The strings are the ones tiktoken uses, so a tokenizer built with them splits text
exactly as tiktoken does.
"""

import regex

# GPT-2 (tiktoken's "gpt2" / "r50k_base"). The possessive quantifiers (++) and the
# `\s++$|\s+(?!\S)|\s` tail are an equivalent, faster form of the original
# `'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+`.
GPT2_PATTERN = (
    r"""'(?:[sdmt]|ll|ve|re)| ?\p{L}++| ?\p{N}++| ?[^\s\p{L}\p{N}]++|\s++$|\s+(?!\S)|\s"""
)

# GPT-4 (tiktoken's "cl100k_base", current form): case-insensitive contractions,
# a letter run may take one leading non-letter, digits in groups of at most three,
# and newlines are kept apart from the spaces that follow them.
GPT4_PATTERN = (
    r"""'(?i:[sdmt]|ll|ve|re)|[^\r\n\p{L}\p{N}]?+\p{L}++|\p{N}{1,3}+"""
    r"""| ?[^\s\p{L}\p{N}]++[\r\n]*+|\s++$|\s*[\r\n]|\s+(?!\S)|\s"""
)

# Llama 3 (Hugging Face's Split regex; llama.cpp's "llama-bpe"): GPT-4's rules, but a
# newline run keeps the whitespace before it, and the non-possessive original form.
LLAMA3_PATTERN = (
    r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}"""
    r"""| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"""
)

# Qwen2: Llama 3's pattern with every digit a chunk of its own.
QWEN2_PATTERN = (
    r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}"""
    r"""| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"""
)

# SmolLM (and StarCoder): two passes, every digit cut out first, then GPT-2's regex
# on the text between digits. One regex does the same: digits alone come first, and
# GPT-2's " ?\p{N}+" is gone. What GPT-2's regex sees at the end of a stretch between
# digits is the end of the text, so a whitespace run before a digit stays whole
# ("a  1" -> "a", "  ", "1"): that is the `\s+(?=\p{N})` alternative.
SMOLLM_PATTERN = (
    r"""\p{N}|'(?:[sdmt]|ll|ve|re)| ?\p{L}++| ?[^\s\p{L}\p{N}]++|\s+(?=\p{N})|\s++$|\s+(?!\S)|\s"""
)

NAMED_PATTERNS = {
    "gpt2": GPT2_PATTERN,
    "gpt4": GPT4_PATTERN,
    "llama3": LLAMA3_PATTERN,
    "qwen2": QWEN2_PATTERN,
    "smollm": SMOLLM_PATTERN,
}


def resolve_pattern(pattern: str) -> str:
    """Return the regex for a pattern name (a key of NAMED_PATTERNS) or a custom pattern string.

    A string is taken as a name when it is a bare identifier (letters, digits, "_"),
    since no useful pre-tokenization regex looks like that; an unknown name is an
    error rather than a regex that would silently match the name literally.
    """
    if not isinstance(pattern, str):
        raise TypeError(f"pattern must be a str, got {type(pattern).__name__}")
    if pattern in NAMED_PATTERNS:
        return NAMED_PATTERNS[pattern]
    if pattern.isidentifier():
        known = ", ".join(repr(name) for name in NAMED_PATTERNS)
        raise ValueError(f"unknown pattern name {pattern!r}; known names: {known}, or pass a regex")
    if not pattern:
        raise ValueError("pattern must not be empty")
    return pattern


def splitter(pattern: str):
    """The function that cuts text into chunks for `pattern` (already resolved), such that the
    chunks always join back to the whole text.

    The named patterns match every character, so their `findall` loses nothing. A custom pattern
    may not (r"\\p{L}+" skips ", 123"): there, the text between two matches becomes a chunk of its
    own, and empty matches are ignored, which is what Hugging Face's Split pre-tokenizer with
    behavior "Isolated" (the one minilm exports in tokenizer.json) does, so both encode alike.
    Raises regex.error for a pattern that does not compile.
    """
    compiled = regex.compile(pattern)
    if pattern in NAMED_PATTERNS.values():
        return compiled.findall
    finditer = compiled.finditer

    def split(text: str) -> list[str]:
        chunks, position = [], 0
        for match in finditer(text):
            start, end = match.span()
            if start == end:
                continue
            if start > position:
                chunks.append(text[position:start])  # text the pattern does not match: kept, not dropped
            chunks.append(match.group())
            position = end
        if position < len(text):
            chunks.append(text[position:])
        return chunks

    return split
