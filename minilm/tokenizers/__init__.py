"""Tokenizers: byte-level BPE (GPT-2/GPT-4), WordPiece (BERT) and characters.

Depends on `regex` and the standard library only.
"""

from .base import Tokenizer, TokenizerFileError
from .bpe import BPETokenizer
from .char import CharTokenizer
from .patterns import GPT2_PATTERN, GPT4_PATTERN, NAMED_PATTERNS
from .wordpiece import WordPieceTokenizer

__all__ = [
    "Tokenizer",
    "TokenizerFileError",
    "BPETokenizer",
    "WordPieceTokenizer",
    "CharTokenizer",
    "GPT2_PATTERN",
    "GPT4_PATTERN",
    "NAMED_PATTERNS",
]
