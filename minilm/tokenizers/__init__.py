"""Tokenizers: byte-level BPE (GPT-2/GPT-4, and from GGUF model files), WordPiece (BERT)
and characters; chat templates (`BPETokenizer.apply_chat_template`).

Depends on `regex` and the standard library; reading GGUF files uses `minilm.gguf`
(NumPy) and chat templates use Jinja2, each imported only when first needed.
"""

from .base import Tokenizer, TokenizerFileError
from .bpe import BPETokenizer
from .char import CharTokenizer
from .chat import ChatTemplateError
from .patterns import (
    GPT2_PATTERN,
    GPT4_PATTERN,
    LLAMA3_PATTERN,
    NAMED_PATTERNS,
    QWEN2_PATTERN,
    SMOLLM_PATTERN,
)
from .wordpiece import WordPieceTokenizer

__all__ = [
    "Tokenizer",
    "TokenizerFileError",
    "BPETokenizer",
    "WordPieceTokenizer",
    "CharTokenizer",
    "GPT2_PATTERN",
    "GPT4_PATTERN",
    "LLAMA3_PATTERN",
    "QWEN2_PATTERN",
    "SMOLLM_PATTERN",
    "NAMED_PATTERNS",
    "ChatTemplateError",
]
