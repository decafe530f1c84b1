"""Byte-level BPE, as in GPT-2 and GPT-4 (and token for token equal to tiktoken).

Text is cut into chunks by a regex (the *pattern*); each chunk's UTF-8 bytes are
merged by rank (see `byte_pair.py`); the resulting tokens map to ids. Special
tokens (such as "<|endoftext|>") are whole strings with ids of their own that
bypass all of that.

Ranks and ids: tiktoken uses a token's merge rank as its id, and so does every
tokenizer trained or saved here. Files from Hugging Face may number tokens
differently (GPT-2 puts printable bytes first), so the tokenizer keeps both
maps: ranks decide how to merge, ids are what `encode` returns.
"""

from __future__ import annotations

import base64
import binascii
import codecs
import gc
import json
import multiprocessing
import os
import threading
from array import array
from collections import Counter
from collections.abc import Collection, Iterable, Set
from itertools import chain
from pathlib import Path
from typing import Any, Literal

import regex

from . import formats
from .base import LineReader, Tokenizer, as_token_ids, tokenizer_file
from .bpe_training import learn_merges
from .byte_pair import merge_to_ids
from .chat import render_chat_template
from .gguf import read_gguf_tokenizer
from .merge_batch import PieceMerger
from .patterns import resolve_pattern, splitter
from .pretokenize import can_cut, cut_points
from .progress import ProgressBar, progress_wanted

AllowedSpecial = Literal["all", "none", "none_raise"] | Set[str]
Corpus = str | os.PathLike | Iterable[str | os.PathLike]

# Below this many characters in all, encode_batch / encode_ordinary_parallel stay in this
# process (forking and sending the ids back cost more than they save).
PARALLEL_MIN_CHARS = 1 << 18

# Chunk -> ids results kept at most; past this the cache is emptied before the
# next call (10 MB of source code has about 60 000 distinct chunks).
MAX_CACHED_CHUNKS = 1 << 20

# The new chunks of one call are merged in NumPy rounds (merge_batch.py) when they hold at least
# MERGER_MIN_BYTES: below that, rounds save little or nothing over merging one at a time (a text
# of 20 KB brings 1-2 KB). Building the merger's pair table costs about as much as merging
# MERGER_BYTES_PER_TOKEN bytes per token of the vocabulary one at a time (both measured with
# benchmarks/encode_bench.py's tables).
MERGER_MIN_BYTES = 4096
MERGER_BYTES_PER_TOKEN = 2


class BPETokenizer(Tokenizer):
    """Byte-level BPE tokenizer.

    `mergeable_ranks` maps every token's bytes to its merge rank (all 256 single
    bytes must be present, unless `missing_bytes="skip"`); `token_ids` maps the same
    bytes to ids when ids differ from ranks (default: id = rank); `special_tokens`
    maps text to id.

    `missing_bytes="skip"` accepts a table without some single bytes and drops those
    bytes when encoding, as Hugging Face and llama.cpp do for vocabularies (such as
    SmolLM2's) that lack bytes which never occur in UTF-8 text.

    Tokenizers of chat models also carry `bos_token_id` / `eos_token_id`, whether
    `encode` adds them (`add_bos_token` / `add_eos_token`), and the model's
    `chat_template` (see `apply_chat_template`); `from_pretrained` sets them.
    """

    file_kind = "bpe"

    def __init__(
        self,
        mergeable_ranks: dict[bytes, int],
        pattern: str = "gpt4",
        special_tokens: dict[str, int] | None = None,
        token_ids: dict[bytes, int] | None = None,
        *,
        missing_bytes: Literal["error", "skip"] = "error",
    ):
        if missing_bytes not in ("error", "skip"):
            raise ValueError(f"missing_bytes must be 'error' or 'skip', got {missing_bytes!r}")
        self.missing_bytes = missing_bytes
        self.pattern = resolve_pattern(pattern)
        try:
            self._split = splitter(self.pattern)
        except regex.error as exc:
            raise ValueError(f"pattern does not compile: {exc}") from None
        self._ranks = dict(mergeable_ranks)
        self._token_ids = self._ranks if token_ids is None else dict(token_ids)
        self.special_tokens = dict(special_tokens or {})
        self._check_tables()
        self._bytes_by_id = {token_id: token for token, token_id in self._token_ids.items()}
        for text, token_id in self.special_tokens.items():
            self._bytes_by_id[token_id] = text.encode("utf-8")
        self._vocab_size = max(self._bytes_by_id) + 1
        self._chunk_cache: dict[str, tuple[int, ...]] = {}
        self._merger: PieceMerger | None = None  # built when first worth it (see _piece_merger)
        self._bytes_merged_one_at_a_time = 0
        self._special_regexes: dict[frozenset[str], regex.Pattern] = {}
        self.bos_token_id: int | None = None
        self.eos_token_id: int | None = None
        self.add_bos_token = False
        self.add_eos_token = False
        self.chat_template: str | None = None

    def _check_tables(self) -> None:
        missing = [byte for byte in range(256) if bytes([byte]) not in self._ranks]
        if missing and self.missing_bytes == "error":
            raise ValueError(f"mergeable_ranks lacks {len(missing)} single bytes (first: 0x{missing[0]:02x}); "
                             "all 256 are needed")
        if len(set(self._ranks.values())) != len(self._ranks):
            raise ValueError("mergeable_ranks gives the same rank to two tokens")
        if self._token_ids.keys() != self._ranks.keys():
            raise ValueError("token_ids must have exactly the tokens of mergeable_ranks")
        ids = set(self._token_ids.values())
        if len(ids) != len(self._token_ids):
            raise ValueError("token_ids gives the same id to two tokens")
        for text, token_id in self.special_tokens.items():
            if not isinstance(text, str) or not text:
                raise ValueError(f"special token {text!r} must be a non-empty str")
            if token_id in ids:
                raise ValueError(f"special token {text!r} has id {token_id}, which is already taken")
            ids.add(token_id)
            try:
                text.encode("utf-8")
            except UnicodeEncodeError:
                raise ValueError(f"special token {text!r} contains a lone surrogate, which has no UTF-8 form") from None

    # ---- training ------------------------------------------------------------------

    @classmethod
    def train(
        cls,
        corpus: Corpus,
        vocab_size: int,
        pattern: str = "gpt4",
        special_tokens: Iterable[str] = (),
        min_frequency: int = 2,
        verbose: bool | None = None,
    ) -> BPETokenizer:
        """Learn a tokenizer of `vocab_size` ids (256 bytes + merges + specials).

        `corpus` is text, a file, or an iterable of texts and files: a `str` is
        always text, an `os.PathLike` (e.g. `pathlib.Path`) is a UTF-8 file to read.
        Text equal to a special token is cut out before counting, so it is never
        learned as ordinary text. Training stops early (giving a smaller
        vocabulary) when no pair occurs `min_frequency` times. `verbose=None`
        shows a progress bar only when stderr is a terminal.
        """
        special_tokens = list(dict.fromkeys(special_tokens))
        num_merges = vocab_size - 256 - len(special_tokens)
        if num_merges < 0:
            raise ValueError(
                f"vocab_size={vocab_size} is too small: it must be at least 256 (bytes) + "
                f"{len(special_tokens)} (special tokens) = {256 + len(special_tokens)}"
            )
        if min_frequency < 1:
            raise ValueError(f"min_frequency must be at least 1, got {min_frequency}")
        pattern = resolve_pattern(pattern)
        split = splitter(pattern)
        cut_specials = (
            regex.compile("|".join(regex.escape(s) for s in sorted(special_tokens, key=len, reverse=True))).split
            if special_tokens
            else None
        )
        chunk_counts: Counter[str] = Counter()
        for text in _iterate_corpus(corpus):
            for piece in cut_specials(text) if cut_specials else (text,):
                chunk_counts.update(split(piece))

        progress = ProgressBar("BPE merges", num_merges) if progress_wanted(verbose) else None
        try:
            new_tokens = learn_merges(chunk_counts, num_merges, min_frequency, progress.update if progress else None)
        finally:
            if progress:
                progress.close()
        ranks = {bytes([byte]): byte for byte in range(256)}
        for token in new_tokens:
            ranks[token] = len(ranks)
        specials = {text: len(ranks) + index for index, text in enumerate(special_tokens)}
        return cls(ranks, pattern, specials)

    # ---- encoding ------------------------------------------------------------------

    def encode(
        self,
        text: str,
        *,
        allowed_special: AllowedSpecial = "none_raise",
        disallowed_special: Literal["all"] | Collection[str] = "all",
        add_special_tokens: bool = True,
    ) -> list[int]:
        """Token ids for `text`, with tiktoken's rules for special-token text.

        `allowed_special`: which special tokens' text becomes their special id:
        "all", a set of them, or none ("none_raise", the default, or "none").
        `disallowed_special`: special tokens whose text raises ValueError; "all"
        (default) means every special token not allowed. "none" is shorthand for
        "allow none, disallow none": the text is encoded as ordinary text.
        `encode(text, allowed_special=A, disallowed_special=D)` with a set A
        behaves as tiktoken's `Encoding.encode` with the same arguments.
        `add_special_tokens`: add BOS / EOS where `add_bos_token` / `add_eos_token`
        say so (as Hugging Face's `encode` does; both are off unless a model's
        tokenizer file turns them on).
        """
        if not isinstance(text, str):
            raise TypeError(f"encode: expected a str, got {type(text).__name__}")
        ids = self._encode_with_specials(text, allowed_special, disallowed_special)
        if add_special_tokens:
            if self.add_bos_token and self.bos_token_id is not None:
                ids.insert(0, self.bos_token_id)
            if self.add_eos_token and self.eos_token_id is not None:
                ids.append(self.eos_token_id)
        return ids

    def _encode_with_specials(
        self, text: str, allowed_special: AllowedSpecial, disallowed_special: Literal["all"] | Collection[str]
    ) -> list[int]:
        allowed = self._allowed_specials(allowed_special)
        if allowed_special == "none":
            disallowed: Collection[str] = ()
        elif disallowed_special == "all":
            disallowed = self.special_tokens.keys() - allowed
        else:
            disallowed = disallowed_special
        if disallowed:
            found = self._special_regex(frozenset(disallowed)).search(text)
            if found:
                raise ValueError(
                    f"text contains the special token {found.group()!r}, which is not allowed; pass "
                    f"allowed_special={{{found.group()!r}}} (or 'all') to encode it as a special token, or "
                    "allowed_special='none' to encode it as ordinary text"
                )
        if not allowed:
            return self.encode_ordinary(text)
        ids: list[int] = []
        start = 0
        for match in self._special_regex(allowed).finditer(text):
            ids += self.encode_ordinary(text[start : match.start()])
            ids.append(self.special_tokens[match.group()])
            start = match.end()
        ids += self.encode_ordinary(text[start:])
        return ids

    def _allowed_specials(self, allowed_special: AllowedSpecial) -> frozenset[str]:
        if isinstance(allowed_special, str):
            if allowed_special == "all":
                return frozenset(self.special_tokens)
            if allowed_special in ("none", "none_raise"):
                return frozenset()
            raise ValueError(f"allowed_special must be 'all', 'none', 'none_raise' or a set, got {allowed_special!r}")
        if not isinstance(allowed_special, Set):
            raise TypeError(f"allowed_special must be a str or a set, got {type(allowed_special).__name__}")
        unknown = set(allowed_special) - self.special_tokens.keys()
        if unknown:
            raise ValueError(f"allowed_special names unknown special tokens: {sorted(unknown)}")
        return frozenset(allowed_special)

    def _special_regex(self, specials: frozenset[str]) -> regex.Pattern:
        compiled = self._special_regexes.get(specials)
        if compiled is None:
            # longest first, so that of two specials starting at one place the longer wins
            alternatives = sorted(specials, key=lambda s: (-len(s), s))
            compiled = regex.compile("|".join(regex.escape(s) for s in alternatives))
            self._special_regexes[specials] = compiled
        return compiled

    def encode_ordinary(self, text: str) -> list[int]:
        """Token ids for `text`, treating special-token text as ordinary text."""
        if not isinstance(text, str):
            raise TypeError(f"encode_ordinary: expected a str, got {type(text).__name__}")
        # The cyclic garbage collector is paused while a text is encoded. Its young-generation
        # passes walk every young container, and the text's list of chunks (one entry per
        # chunk, ~200k for 1 MB of code) is young until the encode ends: with the collector on,
        # a cold encode of 2 MB spent ~24 ms of ~230 in 24 collections that found nothing
        # (encoding makes no reference cycles). Paused, the objects are walked once, by the
        # first collection after the encode: repeated cold encodes take 5-7% less time. It is
        # resumed only if it was on.
        collecting = gc.isenabled()
        gc.disable()
        try:
            return self._encode_chunks(self._split(text))
        except UnicodeEncodeError:
            # Lone surrogates have no UTF-8 form; like tiktoken, replace them by U+FFFD.
            text = text.encode("utf-16", "surrogatepass").decode("utf-16", "replace")
            return self._encode_chunks(self._split(text))
        finally:
            if collecting:
                gc.enable()

    def encode_batch(self, texts: Iterable[str], *, workers: int | None = None, **encode_options) -> list[list[int]]:
        """`[encode(text, **encode_options) for text in texts]`, spread over `workers` processes
        (default: every core when the texts add up to PARALLEL_MIN_CHARS or more; 1 = here).
        The GIL keeps threads from encoding in parallel; forked processes share the tables."""
        texts = list(texts)
        workers = _worker_count(workers, sum(map(len, texts)))
        if workers == 1 or len(texts) < 2:
            return [self.encode(text, **encode_options) for text in texts]
        return [ids.tolist() for ids in _in_processes(self, texts, encode_options, workers)]

    def encode_ordinary_parallel(self, text: str, workers: int | None = None) -> list[int]:
        """`encode_ordinary(text)` for one large text (a training corpus), over `workers`
        processes (default: every core when the text has PARALLEL_MIN_CHARS or more). The text
        is cut where the pattern's chunks cannot cross (pretokenize.cut_points), so the ids are
        exactly encode_ordinary's; custom patterns, which cannot be cut safely, run here."""
        workers = _worker_count(workers, len(text))
        if workers == 1 or not can_cut(self.pattern):
            return self.encode_ordinary(text)
        points = cut_points(text, -(-len(text) // workers))
        parts = [text[start:stop] for start, stop in zip(points[:-1], points[1:])]
        return list(chain.from_iterable(_in_processes(self, parts, {"allowed_special": "none"}, workers)))

    def _encode_chunks(self, chunks: list[str]) -> list[int]:
        # The hot path. Real text repeats its chunks, so almost all come from the
        # cache; map, set difference and chain run the loops in C.
        cache = self._chunk_cache
        if len(cache) > MAX_CACHED_CHUNKS:
            cache.clear()
        if cache:  # an empty cache (a fresh tokenizer) has every chunk new: no lookups to try
            pieces = list(map(cache.get, chunks))
            if None not in pieces:
                return list(chain.from_iterable(pieces))
            # Some chunks are new. `pieces` goes first: while the new chunks' ids are made, the garbage
            # collector may walk every young list, and this one is as long as the text's chunks.
            del pieces
        new_chunks = list(set(chunks).difference(cache))
        cache.update(zip(new_chunks, self._encode_new_chunks(new_chunks)))
        return list(chain.from_iterable(map(cache.__getitem__, chunks)))

    def _encode_new_chunks(self, chunks: list[str]) -> list[tuple[int, ...]]:
        pieces = list(map(str.encode, chunks))  # UTF-8
        # A chunk that is one token whole is that token (tiktoken's shortcut); the others are merged.
        encoded = [None if token_id is None else (token_id,) for token_id in map(self._token_ids.get, pieces)]
        to_merge = [index for index, ids in enumerate(encoded) if ids is None]
        for index, ids in zip(to_merge, self._merge_pieces([pieces[index] for index in to_merge])):
            encoded[index] = ids
        return encoded

    def _merge_pieces(self, pieces: list[bytes]) -> list[tuple[int, ...]]:
        pending_bytes = sum(map(len, pieces))
        merger = self._piece_merger(pending_bytes) if pending_bytes >= MERGER_MIN_BYTES else None
        if merger is not None:
            return merger.merge(pieces)
        return [merge_to_ids(piece, self._ranks, self._token_ids) for piece in pieces]

    def _piece_merger(self, pending_bytes: int) -> PieceMerger | None:
        """The NumPy merger, once it pays for its pair table: it is built when the bytes of large
        calls merged one at a time, these included, reach MERGER_BYTES_PER_TOKEN per token (the
        cost of the table), so that a cold start costs at most twice the best choice."""
        if self._merger is None:
            self._bytes_merged_one_at_a_time += pending_bytes
            if self._bytes_merged_one_at_a_time >= MERGER_BYTES_PER_TOKEN * len(self._ranks):
                self._merger = PieceMerger(self._ranks, self._token_ids)
        return self._merger

    # ---- decoding ------------------------------------------------------------------

    def decode_bytes(self, ids: Iterable[int]) -> bytes:
        table = self._bytes_by_id
        ids = as_token_ids(ids)  # floats and bools are refused (a float key would find 2.0 as 2)
        try:
            return b"".join([table[token_id] for token_id in ids])
        except (KeyError, TypeError):
            bad = next(token_id for token_id in ids if token_id not in table)
            raise ValueError(f"token id {bad!r} is not in the vocabulary") from None

    def decode(self, ids: Iterable[int]) -> str:
        """Text for `ids`; byte sequences that are not valid UTF-8 become U+FFFD."""
        return self.decode_bytes(ids).decode("utf-8", errors="replace")

    def token_bytes(self, token_id: int) -> bytes:
        return self.decode_bytes((token_id,))

    def stream_decoder(self) -> StreamDecoder:
        """A decoder for ids arriving one at a time (e.g. during generation)."""
        return StreamDecoder(self)

    # ---- vocabulary ------------------------------------------------------------------

    @property
    def vocab_size(self) -> int:
        return self._vocab_size

    def mergeable_ranks(self) -> dict[bytes, int]:
        """Token bytes -> merge rank, as tiktoken's `Encoding(mergeable_ranks=...)` takes it."""
        return dict(self._ranks)

    def token_ids(self) -> dict[bytes, int]:
        """Token bytes -> id (equal to `mergeable_ranks()` unless imported otherwise)."""
        return dict(self._token_ids)

    @property
    def ids_are_ranks(self) -> bool:
        return self._token_ids == self._ranks

    # ---- minilm's own file format ---------------------------------------------------
    #
    #   minilm-bpe v1
    #   pattern "<pattern as a JSON string>"
    #   tokens <N>
    #   <rank> <id> <token bytes in base64>        N lines, by rank
    #   specials <M>
    #   <id> "<special token text as a JSON string>"   M lines
    #   option <name> <JSON value>                 optional lines, only for settings
    #                                              that differ from the defaults

    _OPTIONS = ("missing_bytes", "bos_token_id", "eos_token_id", "add_bos_token", "add_eos_token", "chat_template")

    def _format_lines(self) -> list[str]:
        lines = [f"pattern {json.dumps(self.pattern, ensure_ascii=False)}", f"tokens {len(self._ranks)}"]
        for token, rank in sorted(self._ranks.items(), key=lambda item: item[1]):
            lines.append(f"{rank} {self._token_ids[token]} {base64.b64encode(token).decode('ascii')}")
        lines.append(f"specials {len(self.special_tokens)}")
        for text, token_id in sorted(self.special_tokens.items(), key=lambda item: item[1]):
            lines.append(f"{token_id} {json.dumps(text, ensure_ascii=False)}")
        defaults = BPETokenizer({bytes([byte]): byte for byte in range(256)})
        for name in self._OPTIONS:
            if getattr(self, name) != getattr(defaults, name):
                lines.append(f"option {name} {json.dumps(getattr(self, name), ensure_ascii=False)}")
        return lines

    @classmethod
    def _from_lines(cls, reader: LineReader) -> BPETokenizer:
        pattern = _parse_json_string(reader, reader.next_field("pattern"))
        ranks: dict[bytes, int] = {}
        token_ids: dict[bytes, int] = {}
        for _ in range(reader.next_count("tokens")):
            fields = reader.next_line("a token line '<rank> <id> <base64>'").split(" ")
            if len(fields) != 3 or not fields[0].isdigit() or not fields[1].isdigit():
                raise reader.error("expected '<rank> <id> <base64 bytes>'")
            try:
                token = base64.b64decode(fields[2], validate=True)
            except binascii.Error:
                raise reader.error(f"invalid base64 {fields[2][:60]!r}") from None
            if token in ranks:
                raise reader.error(f"token {token!r} appears twice")
            ranks[token], token_ids[token] = int(fields[0]), int(fields[1])
        special_tokens: dict[str, int] = {}
        for _ in range(reader.next_count("specials")):
            token_id, _, text = reader.next_line("a special token line '<id> \"<text>\"'").partition(" ")
            if not token_id.isdigit():
                raise reader.error("expected '<id> \"<text>\"'")
            special_tokens[_parse_json_string(reader, text)] = int(token_id)
        options = {}
        while not reader.at_end():
            keyword, _, setting = reader.next_line("an option line").partition(" ")
            if keyword != "option":
                raise reader.error("unexpected content after the end of the data")
            name, _, value = setting.partition(" ")
            if name not in cls._OPTIONS:
                raise reader.error(f"unknown option {name!r}")
            try:
                options[name] = json.loads(value)
            except json.JSONDecodeError as exc:
                raise reader.error(f"invalid JSON value ({exc.msg})") from None
        try:
            tokenizer = cls(ranks, pattern, special_tokens, token_ids,
                            missing_bytes=options.pop("missing_bytes", "error"))
            tokenizer._set_model_options(**options)
        except (TypeError, ValueError) as exc:
            raise reader.error(f"inconsistent tokenizer: {exc}") from None
        return tokenizer

    def _set_model_options(
        self,
        bos_token_id: int | None = None,
        eos_token_id: int | None = None,
        add_bos_token: bool = False,
        add_eos_token: bool = False,
        chat_template: str | None = None,
    ) -> None:
        """Set the chat-model settings (see the class docstring), checking them."""
        for name, token_id in (("bos_token_id", bos_token_id), ("eos_token_id", eos_token_id)):
            if token_id is not None and (isinstance(token_id, bool) or token_id not in self._bytes_by_id):
                raise ValueError(f"{name}={token_id!r} is not a token id of this tokenizer")
        for name, flag in (("add_bos_token", add_bos_token), ("add_eos_token", add_eos_token)):
            if not isinstance(flag, bool):
                raise TypeError(f"{name} must be a bool, got {flag!r}")
        if chat_template is not None and not isinstance(chat_template, str):
            raise TypeError(f"chat_template must be a str, got {type(chat_template).__name__}")
        self.bos_token_id, self.eos_token_id = bos_token_id, eos_token_id
        self.add_bos_token, self.add_eos_token = add_bos_token, add_eos_token
        self.chat_template = chat_template

    # ---- chat ------------------------------------------------------------------------

    def apply_chat_template(
        self,
        messages: list[dict[str, Any]],
        add_generation_prompt: bool = False,
        tokenize: bool = True,
        chat_template: str | None = None,
        **template_variables: Any,
    ) -> list[int] | str:
        """Render a conversation with the model's chat template, as Hugging Face does.

        `messages` is a list of {"role": "system" | "user" | "assistant", "content": str}.
        `add_generation_prompt=True` ends the prompt with the opening of the assistant's
        turn (what to pass when asking the model for a reply). Returns token ids (special
        tokens in the text become their ids; no BOS is added beyond what the template
        writes), or the text with `tokenize=False`. `chat_template` overrides the
        tokenizer's own; other keyword arguments become template variables. Needs Jinja2
        (`pip install minilm[chat]`).
        """
        template = chat_template if chat_template is not None else self.chat_template
        if template is None:
            raise ValueError(
                "this tokenizer has no chat template (none came with its files); pass chat_template=..."
            )
        for name in ("bos", "eos"):
            token_id = getattr(self, f"{name}_token_id")
            if token_id is not None:
                template_variables.setdefault(f"{name}_token", self.decode([token_id]))
        text = render_chat_template(template, messages, add_generation_prompt, **template_variables)
        if not tokenize:
            return text
        return self.encode(text, allowed_special="all", add_special_tokens=False)

    # ---- other libraries' files ------------------------------------------------------

    @classmethod
    def from_tiktoken_file(
        cls, path: str | os.PathLike, pattern: str, special_tokens: dict[str, int] | None = None
    ) -> BPETokenizer:
        """Load a tiktoken rank file ("base64 rank" lines). Such files hold neither
        the pattern nor the special tokens, so both are given here."""
        return cls(formats.read_tiktoken_ranks(path), pattern, special_tokens)

    def save_tiktoken(self, path: str | os.PathLike) -> None:
        """Write the ranks as a tiktoken file (special tokens are not part of it)."""
        if not self.ids_are_ranks:
            raise ValueError("this tokenizer's ids differ from its merge ranks; a tiktoken file cannot keep its ids")
        formats.write_tiktoken_ranks(path, self._ranks)

    @classmethod
    def from_tokenizer_json(cls, path: str | os.PathLike, pattern: str | None = None) -> BPETokenizer:
        """Load a Hugging Face byte-level BPE `tokenizer.json` (old or new merge format)."""
        with tokenizer_file(path):
            imported = formats.read_tokenizer_json(path)
            return cls(imported.ranks, pattern or imported.pattern, imported.special_tokens, imported.token_ids)

    def save_tokenizer_json(self, path: str | os.PathLike) -> None:
        """Write a Hugging Face `tokenizer.json` that encodes exactly as this tokenizer."""
        formats.write_tokenizer_json(path, self._ranks, self._token_ids, self.special_tokens, self.pattern)

    @classmethod
    def from_vocab_and_merges(
        cls, vocab_path: str | os.PathLike, merges_path: str | os.PathLike, pattern: str = "gpt2"
    ) -> BPETokenizer:
        """Load GPT-2 style `vocab.json` + `merges.txt` (which do not hold the pattern)."""
        with tokenizer_file(vocab_path):
            imported = formats.read_vocab_and_merges(vocab_path, merges_path)
            return cls(imported.ranks, pattern, imported.special_tokens, imported.token_ids)

    def save_vocab_and_merges(self, directory: str | os.PathLike) -> None:
        """Write `vocab.json` and `merges.txt` into `directory`."""
        formats.write_vocab_and_merges(directory, self._ranks, self._token_ids, self.special_tokens)

    @classmethod
    def from_gguf(cls, path: str | os.PathLike, pattern: str | None = None) -> BPETokenizer:
        """Load the tokenizer stored in a GGUF model file's metadata (see `gguf.py`):
        vocabulary, merges, the pre-tokenizer that `tokenizer.ggml.pre` names (or
        `pattern`), control tokens, BOS/EOS and the chat template."""
        data = read_gguf_tokenizer(path, pattern)
        tokenizer = cls(data.ranks, data.pattern, data.special_tokens, data.token_ids, missing_bytes="skip")
        tokenizer._set_model_options(
            data.bos_token_id, data.eos_token_id, data.add_bos_token, data.add_eos_token, data.chat_template
        )
        return tokenizer

    @classmethod
    def from_pretrained(cls, path: str | os.PathLike, pattern: str | None = None) -> BPETokenizer:
        """Load from a `.gguf` model file, or from a directory holding `tokenizer.json`,
        or else `vocab.json` + `merges.txt` (then the pattern defaults to GPT-2's).

        In a directory, `tokenizer_config.json` (and `chat_template.jinja`), where
        present, give the chat template, BOS/EOS and `add_bos_token`/`add_eos_token`.
        """
        path = Path(path)
        if path.is_file() and path.suffix.lower() == ".gguf":
            return cls.from_gguf(path, pattern)
        if (path / "tokenizer.json").is_file():
            tokenizer = cls.from_tokenizer_json(path / "tokenizer.json", pattern)
        elif (path / "vocab.json").is_file() and (path / "merges.txt").is_file():
            tokenizer = cls.from_vocab_and_merges(path / "vocab.json", path / "merges.txt", pattern or "gpt2")
        else:
            raise FileNotFoundError(f"{path} is not a .gguf file and holds neither tokenizer.json "
                                    "nor vocab.json + merges.txt")
        with tokenizer_file(path / "tokenizer_config.json"):
            options = formats.read_tokenizer_config(path, tokenizer.special_tokens)
            if options:
                tokenizer._set_model_options(**options)
        return tokenizer


class StreamDecoder:
    """Decodes ids one at a time, holding back the bytes of a character that is
    split across tokens until its last byte arrives (`push` never returns half a
    character). `flush` ends the stream; bytes still pending become U+FFFD."""

    def __init__(self, tokenizer: BPETokenizer):
        self._tokenizer = tokenizer
        self._utf8 = codecs.getincrementaldecoder("utf-8")(errors="replace")

    def push(self, token_id: int) -> str:
        return self._utf8.decode(self._tokenizer.token_bytes(token_id))

    def flush(self) -> str:
        text = self._utf8.decode(b"", final=True)
        self._utf8.reset()
        return text


def _iterate_corpus(corpus: Corpus) -> Iterable[str]:
    if isinstance(corpus, (str, os.PathLike)):
        corpus = (corpus,)
    elif isinstance(corpus, (bytes, bytearray)):
        raise TypeError("corpus must be text (str), a path (os.PathLike), or an iterable of those; got bytes")
    for item in corpus:
        if isinstance(item, str):
            yield item
        elif isinstance(item, os.PathLike):
            with open(item, encoding="utf-8") as file:
                yield file.read()
        else:
            raise TypeError(f"corpus items must be str (text) or os.PathLike (a file), got {type(item).__name__}")


def _parse_json_string(reader: LineReader, text: str) -> str:
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise reader.error(f"invalid JSON string ({exc.msg})") from None
    if not isinstance(value, str):
        raise reader.error("expected a JSON string")
    return value


def _worker_count(workers: int | None, total_chars: int) -> int:
    if workers is not None:
        if workers < 1:
            raise ValueError(f"workers must be at least 1, got {workers}")
        return workers
    if total_chars < PARALLEL_MIN_CHARS or "fork" not in multiprocessing.get_all_start_methods():
        return 1
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:
        cores = os.cpu_count() or 1
    return max(1, min(cores, 8))


# What the forked workers encode: (tokenizer, texts, options), set just before the pool forks,
# so that each worker inherits the tokenizer (and its chunk cache) and the texts instead of
# receiving pickled copies through a pipe. A job is then only the index of a text.
_worker_jobs: tuple[BPETokenizer, list[str], dict] | None = None
_fork_lock = threading.Lock()


def _encode_in_worker(index: int) -> array:
    tokenizer, texts, options = _worker_jobs
    # Sent back as an array of 64-bit ints: pickled as one block of bytes, where a list of
    # a million ints pickles (and unpickles, in the waiting parent) one int at a time.
    return array("q", tokenizer.encode(texts[index], **options))


def _in_processes(tokenizer: BPETokenizer, texts: list[str], options: dict, workers: int) -> list[array]:
    """encode(text, **options) for each text, in `workers` forked processes, in order, each
    as an array of ids (the caller makes the lists: one pass, not two)."""
    global _worker_jobs
    if "fork" not in multiprocessing.get_all_start_methods():
        return [array("q", tokenizer.encode(text, **options)) for text in texts]
    with _fork_lock:
        _worker_jobs = (tokenizer, texts, options)
        try:
            with multiprocessing.get_context("fork").Pool(min(workers, len(texts))) as pool:
                chunksize = max(1, len(texts) // (4 * workers))
                return pool.map(_encode_in_worker, range(len(texts)), chunksize=chunksize)
        finally:
            _worker_jobs = None
