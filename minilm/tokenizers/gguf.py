"""Building a byte-level BPE tokenizer from the metadata of a GGUF model file.

A GGUF file holds its tokenizer as metadata under llama.cpp's key names:

    tokenizer.ggml.model        "gpt2" for byte-level BPE (the only kind read here)
    tokenizer.ggml.pre          which pre-tokenizer regex the vocabulary was trained with
    tokenizer.ggml.tokens       every token, in id order, in GPT-2's printable byte alphabet
    tokenizer.ggml.merges       "left right" merges in rank order
    tokenizer.ggml.token_type   per token: 1 normal, 3 control, 4 user-defined, ...
    tokenizer.ggml.bos_token_id / eos_token_id, tokenizer.ggml.add_bos_token / add_eos_token
    tokenizer.chat_template     the model's Jinja chat template

Control and user-defined tokens (such as "<|im_start|>") become special tokens: their
text is cut out before BPE runs, as llama.cpp and Hugging Face do.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from .formats import build_from_vocab_and_merges
from .patterns import GPT2_PATTERN, LLAMA3_PATTERN, QWEN2_PATTERN, SMOLLM_PATTERN

# tokenizer.ggml.pre -> pattern. llama.cpp gives several names the same splitting rules.
PRE_TOKENIZER_PATTERNS = {
    "gpt-2": GPT2_PATTERN,
    "smollm": SMOLLM_PATTERN,
    "starcoder": SMOLLM_PATTERN,
    "refact": SMOLLM_PATTERN,
    "codeshell": SMOLLM_PATTERN,
    "llama-bpe": LLAMA3_PATTERN,
    "llama3": LLAMA3_PATTERN,
    "llama-v3": LLAMA3_PATTERN,
    "falcon3": LLAMA3_PATTERN,
    "qwen2": QWEN2_PATTERN,
    "deepseek-r1-qwen": QWEN2_PATTERN,
}

# tokenizer.ggml.token_type values (llama.cpp's llama_token_type)
CONTROL = 3
USER_DEFINED = 4


@dataclass
class GGUFTokenizerData:
    """Everything `BPETokenizer` needs, read from a GGUF file's metadata."""

    ranks: dict[bytes, int]
    token_ids: dict[bytes, int]
    special_tokens: dict[str, int]
    pattern: str
    bos_token_id: int | None
    eos_token_id: int | None
    add_bos_token: bool
    add_eos_token: bool
    chat_template: str | None


def read_gguf_tokenizer(path: str | os.PathLike, pattern: str | None = None) -> GGUFTokenizerData:
    """Read the tokenizer of a GGUF file; `pattern` overrides the one `tokenizer.ggml.pre` names."""
    from ..gguf import GGUFFile  # the file-format layer; numpy only

    source = os.fspath(path)
    with GGUFFile(path) as gguf_file:
        metadata = gguf_file.metadata

    def field(key, kind, default=None):
        value = metadata.get(key, default)
        if value is None and default is None:
            raise ValueError(f"{source}: the GGUF metadata has no {key!r}")
        if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
            raise ValueError(f"{source}: {key!r} is a {type(value).__name__}, expected {kind.__name__}")
        return value

    model = metadata.get("tokenizer.ggml.model")
    if model != "gpt2":
        raise ValueError(
            f"{source}: tokenizer.ggml.model is {model!r}; only byte-level BPE ('gpt2') tokenizers are supported"
        )
    if pattern is None:
        pre = field("tokenizer.ggml.pre", str)
        pattern = PRE_TOKENIZER_PATTERNS.get(pre)
        if pattern is None:
            known = ", ".join(sorted(PRE_TOKENIZER_PATTERNS))
            raise ValueError(
                f"{source}: unknown pre-tokenizer tokenizer.ggml.pre={pre!r} (known: {known}); "
                "pass pattern=... to give its regex"
            )
    tokens = field("tokenizer.ggml.tokens", list)
    merges = field("tokenizer.ggml.merges", list)
    token_types = field("tokenizer.ggml.token_type", list, [1] * len(tokens))
    if len(token_types) != len(tokens) or not all(isinstance(t, str) for t in tokens):
        raise ValueError(f"{source}: tokenizer.ggml.tokens must be strings, one token_type per token")

    specials = {token: i for i, (token, kind) in enumerate(zip(tokens, token_types)) if kind in (CONTROL, USER_DEFINED)}
    vocab = {token: i for i, token in enumerate(tokens) if token not in specials}
    pairs = []
    for number, merge in enumerate(merges, start=1):
        pair = merge.split(" ") if isinstance(merge, str) else ()
        if len(pair) != 2:
            raise ValueError(f"{source}: merge {number} is {merge!r}, expected 'left right'")
        pairs.append((pair[0], pair[1]))
    # Vocabularies such as SmolLM2's lack the bytes that never occur in UTF-8 text;
    # llama.cpp and Hugging Face drop such bytes when encoding, and so do we.
    imported = build_from_vocab_and_merges(vocab, pairs, specials, source, allow_missing_bytes=True)

    def token_id(key):
        value = metadata.get(key)
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < len(tokens):
            raise ValueError(f"{source}: {key!r} is {value!r}, not a token id")
        return value

    return GGUFTokenizerData(
        ranks=imported.ranks,
        token_ids=imported.token_ids,
        special_tokens=imported.special_tokens,
        pattern=pattern,
        bos_token_id=token_id("tokenizer.ggml.bos_token_id"),
        eos_token_id=token_id("tokenizer.ggml.eos_token_id"),
        add_bos_token=field("tokenizer.ggml.add_bos_token", bool, False),
        add_eos_token=field("tokenizer.ggml.add_eos_token", bool, False),
        chat_template=field("tokenizer.chat_template", str, "") or None,
    )
