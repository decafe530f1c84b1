"""Pre-tokenization patterns: text is cut into chunks by one regex before BPE runs.

BPE never merges across chunk boundaries, so the pattern decides what a token can
span (a word with its leading space, a run of digits, a run of whitespace ...).
The strings are the ones tiktoken uses, so a tokenizer built with them splits text
exactly as tiktoken does.
"""

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

NAMED_PATTERNS = {"gpt2": GPT2_PATTERN, "gpt4": GPT4_PATTERN}


def resolve_pattern(pattern: str) -> str:
    """Return the regex for a pattern name ("gpt2", "gpt4") or a custom pattern string.

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
