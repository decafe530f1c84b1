"""Data for sequence-to-sequence models: source/target pairs, a joint BPE, padded batches.

Pairs come from a `pairs.tsv` file (one `source<TAB>target` pair a line) or from the built-in
task, which needs no download: summarizing Python code from the standard library that ships
with every CPython. Each pair is a function's source with its docstring removed and the first
sentence of that docstring:

    def readable(self):                       ->  Return whether the file was opened for reading.
        self._check_not_closed()
        return self._mode == _MODE_READ

The split is by top-level module (all of `email` on one side), so validation functions come
from modules the model never saw.
"""

from __future__ import annotations

import ast
import json
import os
import re
import sysconfig
import textwrap
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .data import DataError, atomic_write_text, read_text_file

# One tokenizer serves both sides (a joint BPE); these are its special tokens, in id order
# after the merges. Targets are framed as BART frames them: the decoder reads <s> y1 .. yn
# and predicts y1 .. yn </s>; sources end with </s>.
BOS, PAD, EOS = "<s>", "<pad>", "</s>"
SPECIAL_TOKENS = (BOS, PAD, EOS)


# ---------------------------------------------------------------------------------------
# Pair files
# ---------------------------------------------------------------------------------------
def read_pairs(path) -> list[tuple[str, str]]:
    """The (source, target) pairs of a UTF-8 file with one `source<TAB>target` pair a line.

    Blank lines are skipped; a line without exactly one tab, or with an empty side, is an
    error naming the file and the line.
    """
    path = Path(path)
    text = read_text_file(path)
    pairs = []
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        fields = line.split("\t")
        if len(fields) != 2:
            raise DataError(f"{path}, line {number}: expected one tab between source and target, found "
                            f"{len(fields) - 1}")
        source, target = (field.strip() for field in fields)
        if not source or not target:
            raise DataError(f"{path}, line {number}: the {'source' if not source else 'target'} is empty")
        pairs.append((source, target))
    if not pairs:
        raise DataError(f"{path}: no source/target pairs")
    return pairs


def write_pairs_jsonl(path, pairs) -> None:
    """Pairs as JSON lines (`["source", "target"]`): sources may hold tabs and newlines (code)."""
    lines = (json.dumps([source, target], ensure_ascii=False) + "\n" for source, target in pairs)
    atomic_write_text(path, "".join(lines))


def read_pairs_jsonl(path) -> list[tuple[str, str]]:
    path = Path(path)
    pairs = []
    with open(path, encoding="utf-8") as f:
        for number, line in enumerate(f, 1):
            try:
                source, target = json.loads(line)
            except (json.JSONDecodeError, ValueError, TypeError):
                raise DataError(f"{path}, line {number}: expected a JSON list [source, target]") from None
            pairs.append((source, target))
    return pairs


def split_pairs(pairs, val_fraction: float, seed: int = 0):
    """(train, validation) pairs, shuffled with `seed`; at least one in each."""
    from .data import train_val_split

    train_rows, val_rows = train_val_split(len(pairs), val_fraction, seed)
    return [pairs[i] for i in train_rows], [pairs[i] for i in val_rows]


# ---------------------------------------------------------------------------------------
# The built-in task: summarize standard-library functions
# ---------------------------------------------------------------------------------------
# Folders left out: tests (their docstrings describe tests, not code), vendored or
# third-party code, demos, and 2to3's grammar data.
_SKIPPED_FOLDERS = frozenset({"site-packages", "dist-packages", "test", "tests", "idle_test", "__pycache__",
                              "lib2to3", "ensurepip", "turtledemo"})
_FIRST_SENTENCE = re.compile(r"(.+?[.!?])(?:\s|$)")


@dataclass(frozen=True)
class SummaryPair:
    module: str  # the file, relative to the standard library folder
    function: str
    source: str  # the function without its docstring
    summary: str  # the docstring's first sentence


def first_sentence(docstring: str) -> str | None:
    """The first sentence of a docstring's first paragraph, on one line; None if it has no
    sentence end (a bare phrase or a signature line is not a summary)."""
    paragraph = " ".join(docstring.strip().split("\n\n", 1)[0].split())
    match = _FIRST_SENTENCE.match(paragraph)
    return match.group(1) if match else None


def function_summaries(path, root) -> list[SummaryPair]:
    """Every function (and method) of a Python file that has a docstring and code besides it."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
        tree = ast.parse(text, filename=str(path))
    except (SyntaxError, UnicodeDecodeError, ValueError):
        return []  # a file of another Python version or encoding: not a source of pairs
    lines = text.splitlines()
    module = path.relative_to(root).as_posix()
    found = []
    for node in ast.walk(tree):
        if not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) or len(node.body) < 2:
            continue
        docstring = ast.get_docstring(node)
        summary = first_sentence(docstring) if docstring else None
        if summary is None:
            continue
        doc_node = node.body[0]
        kept = [line for number, line in enumerate(lines[node.lineno - 1 : node.end_lineno], node.lineno)
                if not doc_node.lineno <= number <= doc_node.end_lineno]
        source = textwrap.dedent("\n".join(kept)).strip("\n")
        found.append(SummaryPair(module, node.name, source, summary))
    return found


@dataclass
class BuiltinSummarization:
    train: list[SummaryPair]
    val: list[SummaryPair]
    description: str


def stdlib_summarization(root=None, max_source_chars: int = 600, summary_words: tuple[int, int] = (3, 16),
                         val_fraction: float = 0.1) -> BuiltinSummarization:
    """Code -> summary pairs from the standard library at `root` (default: this Python's).

    Deterministic for a given CPython: files in sorted order, duplicates dropped, and
    validation is the top-level modules taken in order of a fixed hash (CRC-32 of the name)
    until they hold `val_fraction` of the pairs. Lengths are bounded: sources of at most
    `max_source_chars` characters, summaries of `summary_words` words.
    """
    root = Path(root if root is not None else sysconfig.get_path("stdlib"))
    if not root.is_dir():
        raise DataError(f"{root}: the standard library folder does not exist")
    pairs, seen = [], set()
    for folder, subfolders, files in os.walk(root):
        subfolders[:] = sorted(d for d in subfolders if d not in _SKIPPED_FOLDERS and not d.startswith("."))
        for name in sorted(files):
            if not name.endswith(".py"):
                continue
            for pair in function_summaries(Path(folder) / name, root):
                words = len(pair.summary.split())
                key = (pair.source, pair.summary)
                if len(pair.source) <= max_source_chars and summary_words[0] <= words <= summary_words[1] \
                        and key not in seen:
                    seen.add(key)
                    pairs.append(pair)
    if len(pairs) < 10:
        raise DataError(f"{root}: only {len(pairs)} documented functions found; is this a Python standard library?")
    by_module: dict[str, int] = {}
    for pair in pairs:
        top = _top_level(pair.module)
        by_module[top] = by_module.get(top, 0) + 1
    held_out, held = set(), 0
    for top in sorted(by_module, key=lambda m: (zlib.crc32(m.encode("utf-8")), m)):
        if held >= val_fraction * len(pairs):
            break
        held_out.add(top)
        held += by_module[top]
    train = [p for p in pairs if _top_level(p.module) not in held_out]
    val = [p for p in pairs if _top_level(p.module) in held_out]
    description = (f"the Python {'.'.join(map(str, _python_version()))} standard library: {len(pairs)} documented "
                   f"functions -> their docstring's first sentence; {len(train)} train / {len(val)} validation "
                   f"pairs, validation from {len(held_out)} unseen modules")
    return BuiltinSummarization(train, val, description)


def _top_level(module: str) -> str:
    return module.split("/", 1)[0].removesuffix(".py")


def _python_version() -> tuple[int, int]:
    import sys

    return sys.version_info[:2]


# ---------------------------------------------------------------------------------------
# Tokens and batches
# ---------------------------------------------------------------------------------------
def train_joint_bpe(pairs, vocab_size: int, verbose: bool | None = False):
    """One byte-level BPE learned from both sides of `pairs`, with <s>, <pad>, </s>."""
    from .tokenizers import BPETokenizer

    texts = [text for pair in pairs for text in pair]
    return BPETokenizer.train(texts, vocab_size, special_tokens=SPECIAL_TOKENS, verbose=verbose)


def special_ids(tokenizer) -> dict:
    """{"bos", "pad", "eos"} -> id in `tokenizer` (a seq2seq run's joint BPE)."""
    missing = [token for token in SPECIAL_TOKENS if token not in tokenizer.special_tokens]
    if missing:
        raise DataError(f"the tokenizer lacks the special tokens {missing} a sequence-to-sequence model needs")
    return {name: tokenizer.special_tokens[token] for name, token in zip(("bos", "pad", "eos"), SPECIAL_TOKENS)}


def encode_source(tokenizer, text: str, max_length: int) -> list[int]:
    """A source's ids: the text (cut to max_length - 1 tokens) and </s>."""
    return tokenizer.encode_ordinary(text)[: max_length - 1] + [tokenizer.special_tokens[EOS]]


def encode_target(tokenizer, text: str, max_length: int) -> list[int]:
    """A target's ids without framing (cut to max_length - 1 tokens, leaving room for <s> or </s>)."""
    return tokenizer.encode_ordinary(text)[: max_length - 1]


def pad_right(rows, pad_id: int) -> tuple[np.ndarray, np.ndarray]:
    """Lists of ids as one array [B, longest] padded on the right, and its mask (1 = token, 0 = pad)."""
    ids = np.full((len(rows), max(len(row) for row in rows)), pad_id, dtype=np.int64)
    mask = np.zeros(ids.shape, dtype=np.int64)
    for r, row in enumerate(rows):
        ids[r, : len(row)] = row
        mask[r, : len(row)] = 1
    return ids, mask


def collate(sources, targets, ids: dict) -> dict:
    """Padded arrays of a batch of encoded pairs (lists of ids), padding on the right.

    src_ids / src_attention_mask [B, S]; tgt_ids [B, T] = <s> y1 .. yn (the decoder's input),
    labels [B, T] = y1 .. yn </s> with -100 on padding (ignored by the loss), tgt_attention_mask.
    """
    src_ids, src_mask = pad_right(sources, ids["pad"])
    tgt_ids, tgt_mask = pad_right([[ids["bos"], *target] for target in targets], ids["pad"])
    labels, _ = pad_right([[*target, ids["eos"]] for target in targets], -100)
    return {"src_ids": src_ids, "src_attention_mask": src_mask, "tgt_ids": tgt_ids,
            "tgt_attention_mask": tgt_mask, "labels": labels}


def lead_baseline(source: str, words: int) -> str:
    """The lead baseline of summarization: the first `words` whitespace-separated words of the source."""
    return " ".join(source.split()[:words])


# ---------------------------------------------------------------------------------------
# gettext catalogs (.po) as parallel text
# ---------------------------------------------------------------------------------------
_PO_ESCAPES = {"n": "\n", "t": "\t", "r": "\r", '"': '"', "\\": "\\", "a": "\a", "b": "\b", "f": "\f", "v": "\v"}
_PO_KEYWORD = re.compile(r"^(msgctxt|msgid_plural|msgid|msgstr(?:\[(\d+)\])?)\s+(\".*)$")


def _po_string(literal: str, path, number: int) -> str:
    """The text of one quoted .po string literal ("..." with C escapes)."""
    literal = literal.strip()
    if len(literal) < 2 or not (literal.startswith('"') and literal.endswith('"')):
        raise DataError(f"{path}, line {number}: expected a quoted string, got {literal[:40]!r}")
    body, out, i = literal[1:-1], [], 0
    while i < len(body):
        char = body[i]
        if char == "\\":
            if i + 1 >= len(body) or body[i + 1] not in _PO_ESCAPES:
                raise DataError(f"{path}, line {number}: unknown escape {body[i : i + 2]!r}")
            out.append(_PO_ESCAPES[body[i + 1]])
            i += 2
        elif char == '"':
            raise DataError(f"{path}, line {number}: unescaped quote inside a string")
        else:
            out.append(char)
            i += 1
    return "".join(out)


def read_po(path) -> list[tuple[str, str]]:
    """(source, translation) pairs of a gettext catalog: each msgid with its msgstr.

    Multi-line strings are joined; fuzzy entries (unreviewed guesses), obsolete entries (#~),
    untranslated ones and the header (msgid "") are skipped. A plural entry gives two pairs,
    msgid -> msgstr[0] and msgid_plural -> msgstr[1] (the singular and the first plural form).
    """
    path = Path(path)
    lines = read_text_file(path).splitlines()
    pairs = []
    entry: dict = {}  # keyword -> text of the entry being read
    fuzzy = False
    current = None  # the keyword a continuation line ("...") extends

    def finish():
        if entry and not fuzzy and entry.get("msgid"):
            for source_key, target_key in (("msgid", "msgstr"), ("msgid", "msgstr[0]"), ("msgid_plural", "msgstr[1]")):
                if entry.get(source_key) and entry.get(target_key):
                    pairs.append((entry[source_key], entry[target_key]))

    for number, line in enumerate(lines, 1):
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            if stripped.startswith("#,") and "fuzzy" in (flag.strip() for flag in stripped[2:].split(",")):
                finish()
                entry, current, fuzzy = {}, None, True  # the flag precedes its entry
            elif not stripped and entry:
                finish()
                entry, current, fuzzy = {}, None, False
            continue
        if stripped.startswith('"'):
            if current is None:
                raise DataError(f"{path}, line {number}: a string continues no msgid/msgstr")
            entry[current] += _po_string(stripped, path, number)
            continue
        match = _PO_KEYWORD.match(stripped)
        if match is None:
            raise DataError(f"{path}, line {number}: expected msgctxt, msgid, msgid_plural or msgstr, got "
                            f"{stripped[:40]!r}")
        keyword = match.group(1)
        if keyword in ("msgctxt", "msgid") and entry.get("msgstr", entry.get("msgstr[0]")) is not None:
            finish()  # a new entry without a blank line between
            entry, fuzzy = {}, False
        entry[keyword] = _po_string(match.group(3), path, number)
        current = keyword
    finish()
    return pairs
