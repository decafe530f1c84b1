"""WordPiece, the BERT tokenizer, matching Hugging Face's (`tokenizers` / `BertTokenizer`).

Three stages, in Hugging Face's order:

1. Special tokens ("[CLS]", "[SEP]", ...) are cut out of the raw text first, exactly
   as written (case-sensitive); they are never normalized or split.
2. The basic tokenizer normalizes the rest (drop control characters, turn any
   whitespace into a space, surround CJK ideographs with spaces, strip accents,
   lowercase) and splits it into words at whitespace and at every punctuation
   character.
3. WordPiece cuts each word greedily into the longest vocabulary entries, pieces
   after the first carrying a "##" prefix; a word that cannot be cut that way, or
   is longer than `max_input_chars_per_word` characters, becomes "[UNK]".
"""

from __future__ import annotations

import json
import os
import unicodedata
from collections.abc import Iterable, Sequence
from functools import lru_cache
from pathlib import Path

import regex

from .base import LineReader, Tokenizer, TokenizerFileError, as_token_ids, tokenizer_file

CONTINUATION_PREFIX = "##"
MAX_CACHED_WORDS = 1 << 18  # word -> ids results kept before the cache is emptied
SPECIAL_TOKEN_ROLES = ("unk_token", "sep_token", "pad_token", "cls_token", "mask_token")


# ---- basic tokenizer ------------------------------------------------------------------


def _is_cjk_ideograph(code_point: int) -> bool:
    """The CJK Unified Ideographs blocks BERT splits into single characters (not
    Hangul or kana, which are written with spaces or tokenized as words)."""
    return (
        0x4E00 <= code_point <= 0x9FFF
        or 0x3400 <= code_point <= 0x4DBF
        or 0x20000 <= code_point <= 0x2A6DF
        or 0x2A700 <= code_point <= 0x2B73F
        or 0x2B740 <= code_point <= 0x2B81F
        or 0x2B820 <= code_point <= 0x2CEAF
        or 0xF900 <= code_point <= 0xFAFF
        or 0x2F800 <= code_point <= 0x2FA1F
    )


def _is_punctuation(char: str) -> bool:
    """ASCII symbols such as "$" and "^" count too, though Unicode calls them symbols."""
    code_point = ord(char)
    if 33 <= code_point <= 47 or 58 <= code_point <= 64 or 91 <= code_point <= 96 or 123 <= code_point <= 126:
        return True
    return unicodedata.category(char).startswith("P")


@lru_cache(maxsize=1 << 16)
def _clean_char(char: str, split_cjk: bool) -> str:
    """What one character becomes before lowercasing: "" (dropped), " ", itself,
    or itself between spaces (CJK ideographs)."""
    if char in "\t\n\r":
        return " "
    if char in "\x00\ufffd" or unicodedata.category(char).startswith("C"):
        return ""
    if char.isspace():
        return " "
    if split_cjk and _is_cjk_ideograph(ord(char)):
        return f" {char} "
    return char


def _strip_accents(text: str) -> str:
    return "".join(char for char in unicodedata.normalize("NFD", text) if unicodedata.category(char) != "Mn")


@lru_cache(maxsize=1 << 16)
def _split_punctuation(word: str) -> tuple[str, ...]:
    pieces: list[str] = []
    start = 0
    for index, char in enumerate(word):
        if _is_punctuation(char):
            if start < index:
                pieces.append(word[start:index])
            pieces.append(char)
            start = index + 1
    if start < len(word):
        pieces.append(word[start:])
    return tuple(pieces)


def basic_tokenize(text: str, lowercase: bool, strip_accents: bool, split_cjk: bool) -> list[str]:
    """Normalize `text` and split it into words, as Hugging Face's BertNormalizer
    followed by BertPreTokenizer do."""
    text = "".join([_clean_char(char, split_cjk) for char in text])
    if strip_accents:
        text = _strip_accents(text)
    if lowercase:
        # Character by character, as the Rust implementation does: str.lower on
        # the whole text would turn a word-final capital sigma into "ς", not "σ".
        text = "".join([char.lower() for char in text])
    words: list[str] = []
    for word in text.split():
        words.extend(_split_punctuation(word))
    return words


# ---- the tokenizer ---------------------------------------------------------------------


class WordPieceTokenizer(Tokenizer):
    """BERT's tokenizer. `vocab` lists the tokens in id order (as `vocab.txt` does).

    `strip_accents=None` means "strip them when lowercasing" (BERT's rule).
    `model_max_length` is the length `truncation=True` and `padding="max_length"`
    use when no `max_length` is given.
    """

    file_kind = "wordpiece"

    def __init__(
        self,
        vocab: Sequence[str],
        *,
        do_lower_case: bool = True,
        strip_accents: bool | None = None,
        tokenize_chinese_chars: bool = True,
        unk_token: str = "[UNK]",
        sep_token: str = "[SEP]",
        pad_token: str = "[PAD]",
        cls_token: str = "[CLS]",
        mask_token: str = "[MASK]",
        never_split: Iterable[str] = (),
        max_input_chars_per_word: int = 100,
        model_max_length: int | None = 512,
    ):
        self.vocab = list(vocab)
        # When a token is listed twice the later line wins, as in Hugging Face.
        self.token_to_id = {token: index for index, token in enumerate(self.vocab)}
        self.do_lower_case = do_lower_case
        self.strip_accents = strip_accents
        self.tokenize_chinese_chars = tokenize_chinese_chars
        self.unk_token, self.sep_token, self.pad_token = unk_token, sep_token, pad_token
        self.cls_token, self.mask_token = cls_token, mask_token
        self.never_split = list(never_split)
        self.max_input_chars_per_word = max_input_chars_per_word
        self.model_max_length = model_max_length
        self.special_tokens = {}
        for role in SPECIAL_TOKEN_ROLES:
            token = getattr(self, role)
            if token not in self.token_to_id:
                raise ValueError(f"{role} {token!r} is not in the vocabulary")
            self.special_tokens[token] = self.token_to_id[token]
        unsplittable = sorted({*self.special_tokens, *self.never_split}, key=lambda t: (-len(t), t))
        self._unsplittable = regex.compile("(" + "|".join(regex.escape(t) for t in unsplittable) + ")")
        self._word_cache: dict[str, tuple[int, ...]] = {}

    @classmethod
    def from_pretrained(cls, directory: str | os.PathLike) -> WordPieceTokenizer:
        """Load `vocab.txt` and, when present, `tokenizer_config.json` (lowercasing,
        accents, CJK splitting, special tokens, model_max_length)."""
        directory = Path(directory)
        with tokenizer_file(directory):
            return cls._from_directory(directory)

    @classmethod
    def _from_directory(cls, directory: Path) -> WordPieceTokenizer:
        reader = LineReader(directory / "vocab.txt")
        vocab = []
        while not reader.at_end():
            vocab.append(reader.next_line("a token"))
        options = {}
        config_path = directory / "tokenizer_config.json"
        if config_path.is_file():
            with open(config_path, encoding="utf-8") as file:
                config = json.load(file)
            if not isinstance(config, dict):
                raise TokenizerFileError(config_path, None, "must hold a JSON object")
            for key in ("do_lower_case", "strip_accents", "tokenize_chinese_chars", "model_max_length"):
                if config.get(key) is not None or key == "strip_accents":
                    options[key] = config.get(key)
            for role in SPECIAL_TOKEN_ROLES:
                token = config.get(role)
                if token is not None:
                    options[role] = token["content"] if isinstance(token, dict) else token
            options["never_split"] = config.get("never_split") or ()
        return cls(vocab, **options)

    # ---- vocabulary ----------------------------------------------------------------------

    @property
    def vocab_size(self) -> int:
        return len(self.vocab)

    @property
    def unk_token_id(self) -> int:
        return self.token_to_id[self.unk_token]

    @property
    def sep_token_id(self) -> int:
        return self.token_to_id[self.sep_token]

    @property
    def pad_token_id(self) -> int:
        return self.token_to_id[self.pad_token]

    @property
    def cls_token_id(self) -> int:
        return self.token_to_id[self.cls_token]

    @property
    def mask_token_id(self) -> int:
        return self.token_to_id[self.mask_token]

    def convert_tokens_to_ids(self, tokens: str | Iterable[str]) -> int | list[int]:
        """Unknown tokens map to the unk id."""
        unk = self.unk_token_id
        if isinstance(tokens, str):
            return self.token_to_id.get(tokens, unk)
        return [self.token_to_id.get(token, unk) for token in tokens]

    def convert_ids_to_tokens(self, ids: int | Iterable[int]) -> str | list[str]:
        if isinstance(ids, int):
            return self._token_for_id(ids)
        return [self._token_for_id(token_id) for token_id in ids]

    def _token_for_id(self, token_id: int) -> str:
        if not isinstance(token_id, int) or not 0 <= token_id < len(self.vocab):
            raise ValueError(f"token id {token_id!r} is not in the vocabulary (0..{len(self.vocab) - 1})")
        return self.vocab[token_id]

    # ---- encoding ------------------------------------------------------------------------

    def tokenize(self, text: str) -> list[str]:
        """The tokens for `text`, without [CLS]/[SEP]."""
        return self.convert_ids_to_tokens(self._encode_text(text))

    def _encode_text(self, text: str) -> list[int]:
        if not isinstance(text, str):
            raise TypeError(f"text must be a str, got {type(text).__name__}")
        lowercase = self.do_lower_case
        strip = lowercase if self.strip_accents is None else self.strip_accents
        ids: list[int] = []
        # split with a capturing group: odd positions are the special tokens
        for position, segment in enumerate(self._unsplittable.split(text)):
            if position % 2:
                ids.append(self.token_to_id.get(segment, self.unk_token_id))
                continue
            for word in basic_tokenize(segment, lowercase, strip, self.tokenize_chinese_chars):
                word_ids = self._word_cache.get(word)
                if word_ids is None:
                    if len(self._word_cache) >= MAX_CACHED_WORDS:
                        self._word_cache.clear()
                    word_ids = self._word_cache[word] = self._wordpiece(word)
                ids.extend(word_ids)
        return ids

    def _wordpiece(self, word: str) -> tuple[int, ...]:
        """Greedy longest-match-first: take the longest vocabulary entry the word
        starts with, then the longest "##" entry the rest starts with, and so on."""
        if len(word) > self.max_input_chars_per_word:
            return (self.unk_token_id,)
        ids = []
        start = 0
        while start < len(word):
            for end in range(len(word), start, -1):
                piece = word[start:end] if start == 0 else CONTINUATION_PREFIX + word[start:end]
                piece_id = self.token_to_id.get(piece)
                if piece_id is not None:
                    ids.append(piece_id)
                    start = end
                    break
            else:
                return (self.unk_token_id,)  # some part matches nothing: the whole word is unknown
        return tuple(ids)

    def encode(self, text: str, text_pair: str | None = None, add_special_tokens: bool = True) -> list[int]:
        """Ids of `text` (and `text_pair`), by default as "[CLS] text [SEP] pair [SEP]"."""
        first = self._encode_text(text)
        second = None if text_pair is None else self._encode_text(text_pair)
        return self._assemble(first, second, add_special_tokens)[0]

    def _assemble(
        self, first: list[int], second: list[int] | None, add_special_tokens: bool
    ) -> tuple[list[int], list[int]]:
        """Ids and token type ids of one (possibly paired) input."""
        if not add_special_tokens:
            ids = first + (second or [])
            return ids, [0] * len(first) + [1] * len(second or [])
        ids = [self.cls_token_id, *first, self.sep_token_id]
        types = [0] * len(ids)
        if second is not None:
            ids += [*second, self.sep_token_id]
            types += [1] * (len(second) + 1)
        return ids, types

    def __call__(
        self,
        text: str | Sequence[str],
        text_pair: str | Sequence[str] | None = None,
        *,
        add_special_tokens: bool = True,
        padding: bool | str = False,
        truncation: bool | str = False,
        max_length: int | None = None,
    ) -> dict[str, list]:
        """Encode one text or a batch, Hugging Face style.

        Returns {"input_ids", "token_type_ids", "attention_mask"}: flat lists for
        one text, lists of lists for a batch. `padding`: False, True / "longest"
        (to the longest row), or "max_length"; rows are padded on the right with
        the pad id (attention 0). `truncation`: False, True / "longest_first"
        (take tokens off the longer of a pair first), "only_first" or
        "only_second"; the special tokens count towards `max_length`.
        """
        single = isinstance(text, str)
        texts = [text] if single else list(text)
        if text_pair is None:
            pairs: list[str | None] = [None] * len(texts)
        else:
            pairs = [text_pair] if isinstance(text_pair, str) else list(text_pair)
            if len(pairs) != len(texts):
                raise ValueError(f"got {len(texts)} texts but {len(pairs)} text pairs")
        padding = {False: "do_not_pad", True: "longest"}.get(padding, padding)
        truncation = {False: "do_not_truncate", True: "longest_first"}.get(truncation, truncation)
        if padding not in ("do_not_pad", "longest", "max_length"):
            raise ValueError(f"padding must be True, False, 'longest' or 'max_length', got {padding!r}")
        if truncation not in ("do_not_truncate", "longest_first", "only_first", "only_second"):
            raise ValueError(
                f"truncation must be True, False, 'longest_first', 'only_first' or 'only_second', got {truncation!r}"
            )
        if max_length is None and (truncation != "do_not_truncate" or padding == "max_length"):
            max_length = self.model_max_length
            if max_length is None:
                raise ValueError("max_length is needed: this tokenizer has no model_max_length")

        rows = []
        for first_text, second_text in zip(texts, pairs):
            first = self._encode_text(first_text)
            second = None if second_text is None else self._encode_text(second_text)
            if truncation != "do_not_truncate":
                added = 0 if not add_special_tokens else (2 if second is None else 3)
                first, second = _truncate(first, second, max_length - added, truncation)
            rows.append(self._assemble(first, second, add_special_tokens))

        if padding == "longest":
            padded_length = max((len(ids) for ids, _ in rows), default=0)
        elif padding == "max_length":
            padded_length = max_length
        else:
            padded_length = 0
        batch: dict[str, list] = {"input_ids": [], "token_type_ids": [], "attention_mask": []}
        for ids, types in rows:
            fill = max(padded_length - len(ids), 0)
            batch["input_ids"].append(ids + [self.pad_token_id] * fill)
            batch["token_type_ids"].append(types + [0] * fill)
            batch["attention_mask"].append([1] * len(ids) + [0] * fill)
        if single:
            return {key: rows[0] for key, rows in batch.items()}
        return batch

    # ---- decoding ------------------------------------------------------------------------

    def decode(
        self, ids: Iterable[int], skip_special_tokens: bool = False, clean_up_tokenization_spaces: bool = True
    ) -> str:
        """Join tokens with spaces, gluing "##" pieces to the token before them.

        `clean_up_tokenization_spaces` removes the space before ". , ? !" as
        Hugging Face's WordPiece decoder does.
        """
        tokens = self.convert_ids_to_tokens(as_token_ids(ids))
        if skip_special_tokens:
            tokens = [token for token in tokens if token not in self.special_tokens]
        pieces = []
        for index, token in enumerate(tokens):
            if index > 0:
                token = token[len(CONTINUATION_PREFIX) :] if token.startswith(CONTINUATION_PREFIX) else " " + token
            if clean_up_tokenization_spaces:
                token = _clean_up_spaces(token)
            pieces.append(token)
        return "".join(pieces)

    # ---- minilm's own file format ----------------------------------------------------------
    #
    #   minilm-wordpiece v1
    #   config {"do_lower_case": true, ...}      (one JSON object)
    #   tokens <N>
    #   <one JSON string per line>              N lines, in id order

    def _config(self) -> dict:
        config = {
            "do_lower_case": self.do_lower_case,
            "strip_accents": self.strip_accents,
            "tokenize_chinese_chars": self.tokenize_chinese_chars,
            "never_split": self.never_split,
            "max_input_chars_per_word": self.max_input_chars_per_word,
            "model_max_length": self.model_max_length,
        }
        config.update({role: getattr(self, role) for role in SPECIAL_TOKEN_ROLES})
        return config

    def _format_lines(self) -> list[str]:
        return [
            f"config {json.dumps(self._config(), ensure_ascii=False)}",
            f"tokens {len(self.vocab)}",
            *(json.dumps(token, ensure_ascii=False) for token in self.vocab),
        ]

    @classmethod
    def _from_lines(cls, reader: LineReader) -> WordPieceTokenizer:
        config_text = reader.next_field("config")
        try:
            config = json.loads(config_text)
        except json.JSONDecodeError as exc:
            raise reader.error(f"invalid JSON ({exc.msg})") from None
        config_line = reader.line_number
        vocab = []
        for _ in range(reader.next_count("tokens")):
            line = reader.next_line("a token (JSON string)")
            try:
                token = json.loads(line)
            except json.JSONDecodeError as exc:
                raise reader.error(f"invalid JSON string ({exc.msg})") from None
            if not isinstance(token, str):
                raise reader.error("expected a JSON string")
            vocab.append(token)
        try:
            return cls(vocab, **config)
        except (TypeError, ValueError) as exc:
            raise reader.error(f"bad config: {exc}", config_line) from None


def _truncate(
    first: list[int], second: list[int] | None, budget: int, strategy: str
) -> tuple[list[int], list[int] | None]:
    """Cut `first` and `second` to at most `budget` tokens together.

    "longest_first" follows Hugging Face `tokenizers`: the shorter sequence keeps
    all its tokens when the longer one can absorb the cut; otherwise both get
    half the budget, the first sequence the smaller half when they tie in length.
    """
    if budget < 0:
        raise ValueError("max_length is smaller than the number of special tokens it must hold")
    if second is None:
        if strategy == "only_second":
            raise ValueError("truncation='only_second' needs a text pair")
        return first[:budget], None
    if len(first) + len(second) <= budget:
        return first, second
    if strategy == "only_first":
        keep = budget - len(second)
        if keep < 0:
            raise ValueError("the second sequence alone is longer than max_length; cannot truncate only the first")
        return first[:keep], second
    if strategy == "only_second":
        keep = budget - len(first)
        if keep < 0:
            raise ValueError("the first sequence alone is longer than max_length; cannot truncate only the second")
        return first, second[:keep]
    shorter, longer = sorted((len(first), len(second)))
    keep_shorter = shorter
    keep_longer = budget - shorter
    if keep_longer < shorter:  # both must give up tokens: split the budget
        keep_shorter = budget // 2
        keep_longer = budget - keep_shorter
    if len(first) > len(second):
        return first[:keep_longer], second[:keep_shorter]
    return first[:keep_shorter], second[:keep_longer]


_CLEANUPS = ((" .", "."), (" ?", "?"), (" !", "!"), (" ,", ","), (" ' ", "'"), (" n't", "n't"),
             (" 'm", "'m"), (" do not", " don't"), (" 's", "'s"), (" 've", "'ve"), (" 're", "'re"))


def _clean_up_spaces(text: str) -> str:
    for before, after in _CLEANUPS:
        text = text.replace(before, after)
    return text
