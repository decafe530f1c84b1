"""Data for training: token files, batch samplers, the masked-LM collator, labeled text.

A token file is a small binary header followed by the token ids as little-endian uint16
(when the vocabulary fits) or uint32, read back by memory mapping so that a corpus larger
than memory can still be sampled from.

    header (32 bytes): b"MINILMTK" | version u32 | bytes per token u32 | count u64 | vocab u64
"""

from __future__ import annotations

import csv
import json
import os
import struct
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

_MAGIC = b"MINILMTK"
_VERSION = 1
_HEADER = struct.Struct("<8sIIQQ")


class DataError(ValueError):
    """A data file that cannot be used, with the file (and line) named."""


def read_text_file(path, error: type[Exception] = DataError) -> str:
    """The UTF-8 text of `path`; a missing or undecodable file raises `error` naming the file."""
    path = Path(path)
    try:
        return path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise error(f"{path}: no such file") from None
    except UnicodeDecodeError as exc:
        raise error(f"{path}: not UTF-8 text (byte {exc.start}: {exc.reason})") from None


def read_json_file(path, error: type[Exception] = DataError, missing: str = "no such file"):
    """The JSON value in `path`; a missing, unreadable or invalid file raises `error` naming the
    file (and the line, for invalid JSON). `missing` says what a missing file means."""
    path = Path(path)
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except FileNotFoundError:
        raise error(f"{path}: {missing}") from None
    except json.JSONDecodeError as exc:
        raise error(f"{path}, line {exc.lineno}: invalid JSON ({exc.msg})") from None
    except (UnicodeDecodeError, RecursionError) as exc:
        raise error(f"{path}: not a JSON file ({type(exc).__name__})") from None
    except OSError as exc:
        raise error(f"{path}: cannot be read ({exc.strerror})") from None


def atomic_write_bytes(path, payload: bytes) -> None:
    """Write `payload` to `path` through a temporary file and a rename: never half a file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, temporary = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(temporary, 0o666 & ~umask)  # mkstemp makes 0600; give the usual permissions
        with os.fdopen(fd, "wb") as f:
            f.write(payload)
            f.flush()
            os.fsync(f.fileno())
        os.replace(temporary, path)
    except BaseException as error:
        if os.path.exists(temporary):
            os.unlink(temporary)
        if isinstance(error, OSError) and error.errno and error.filename is None:  # name the file
            raise OSError(error.errno, error.strerror, str(path)) from None
        raise


def atomic_write_text(path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


# ---------------------------------------------------------------------------------------
# Token files
# ---------------------------------------------------------------------------------------
def write_token_file(path, ids, vocab_size: int) -> None:
    """Save token ids (any integer sequence) with the smallest dtype that holds the vocabulary."""
    ids = np.asarray(ids)
    if ids.size and (int(ids.min()) < 0 or int(ids.max()) >= vocab_size):
        raise ValueError(f"token ids must lie in [0, {vocab_size}), got [{int(ids.min())}, {int(ids.max())}]")
    dtype = np.dtype("<u2") if vocab_size <= 2**16 else np.dtype("<u4")
    header = _HEADER.pack(_MAGIC, _VERSION, dtype.itemsize, ids.size, vocab_size)
    atomic_write_bytes(path, header + ids.astype(dtype).tobytes())


def read_token_file(path) -> np.ndarray:
    """The ids of a token file as a read-only memory-mapped array (uint16 or uint32)."""
    path = Path(path)
    try:
        with open(path, "rb") as f:
            raw = f.read(_HEADER.size)
    except OSError as error:
        raise DataError(f"cannot read token file {path}: {error}") from error
    if len(raw) < _HEADER.size:
        raise DataError(f"{path}: too short for a token file header ({len(raw)} bytes)")
    magic, version, width, count, _vocab = _HEADER.unpack(raw)
    if magic != _MAGIC:
        raise DataError(f"{path}: not a minilm token file (bad magic bytes)")
    if version != _VERSION or width not in (2, 4):
        raise DataError(f"{path}: unsupported token file version {version} / width {width}")
    expected = _HEADER.size + count * width
    if path.stat().st_size != expected:
        raise DataError(f"{path}: truncated or padded: {path.stat().st_size} bytes, expected {expected}")
    return np.memmap(path, dtype="<u2" if width == 2 else "<u4", mode="r", offset=_HEADER.size, shape=(count,))


# ---------------------------------------------------------------------------------------
# Causal LM batches
# ---------------------------------------------------------------------------------------
class RandomWindowSampler:
    """Random windows of `block_size + 1` tokens: inputs are the first T, targets the last T.

    The generator state is part of the sampler's state_dict, so a resumed run draws the
    same batches as an uninterrupted one.
    """

    def __init__(self, tokens, block_size: int, batch_size: int, seed: int = 0):
        if len(tokens) < block_size + 2:
            raise ValueError(f"need more than block_size + 1 = {block_size + 1} tokens to sample windows, "
                             f"got {len(tokens)}")
        self.tokens, self.block_size, self.batch_size = tokens, block_size, batch_size
        self.rng = np.random.default_rng(seed)

    def next_batch(self) -> tuple[np.ndarray, np.ndarray]:
        starts = self.rng.integers(0, len(self.tokens) - self.block_size - 1, size=self.batch_size)
        offsets = np.arange(self.block_size + 1)
        windows = np.asarray(self.tokens[starts[:, None] + offsets], dtype=np.int64)  # [B, T+1]
        return windows[:, :-1], windows[:, 1:]

    def state_dict(self) -> dict:
        return {"rng": self.rng.bit_generator.state}

    def load_state_dict(self, state: dict) -> None:
        self.rng.bit_generator.state = state["rng"]


def sequential_windows(tokens, block_size: int, batch_size: int):
    """Non-overlapping windows covering `tokens` once, in order (for evaluation)."""
    count = (len(tokens) - 1) // block_size
    for first in range(0, count, batch_size):
        rows = range(first, min(first + batch_size, count))
        windows = np.stack([np.asarray(tokens[r * block_size : r * block_size + block_size + 1], dtype=np.int64)
                            for r in rows])
        yield windows[:, :-1], windows[:, 1:]


# ---------------------------------------------------------------------------------------
# Masked LM
# ---------------------------------------------------------------------------------------
class MaskedLMCollator:
    """BERT's masking: choose `probability` of the maskable tokens; of those, 80% become
    [MASK], 10% a random token and 10% stay. Labels are the original ids at chosen
    positions and -100 (ignored by cross-entropy) elsewhere. Special and padding tokens
    are never chosen."""

    def __init__(self, mask_token_id: int, vocab_size: int, special_ids, probability: float = 0.15, seed: int = 0):
        if not 0.0 < probability < 1.0:
            raise ValueError(f"masking probability must be in (0, 1), got {probability}")
        self.mask_token_id, self.vocab_size = mask_token_id, vocab_size
        self.special_ids = np.array(sorted(set(special_ids)), dtype=np.int64)
        self.probability = probability
        self.rng = np.random.default_rng(seed)

    def __call__(self, input_ids) -> tuple[np.ndarray, np.ndarray]:
        ids = np.array(input_ids, dtype=np.int64)  # a copy: the caller's batch stays intact
        maskable = ~np.isin(ids, self.special_ids)
        chosen = (self.rng.random(ids.shape) < self.probability) & maskable
        labels = np.where(chosen, ids, -100)
        action = self.rng.random(ids.shape)
        to_mask = chosen & (action < 0.8)
        to_random = chosen & (action >= 0.8) & (action < 0.9)
        ids[to_mask] = self.mask_token_id
        ids[to_random] = self.rng.integers(0, self.vocab_size, size=int(to_random.sum()))
        return ids, labels

    def state_dict(self) -> dict:
        return {"rng": self.rng.bit_generator.state}

    def load_state_dict(self, state: dict) -> None:
        self.rng.bit_generator.state = state["rng"]


# ---------------------------------------------------------------------------------------
# Labeled text for classification
# ---------------------------------------------------------------------------------------
@dataclass
class LabeledTexts:
    texts: list[str]
    labels: list[int]
    label_names: list[str]

    def __len__(self) -> int:
        return len(self.texts)

    def subset(self, indices) -> "LabeledTexts":
        return LabeledTexts([self.texts[i] for i in indices], [self.labels[i] for i in indices], self.label_names)


def read_labeled_texts(path, label_names: list[str] | None = None) -> LabeledTexts:
    """Read `text`,`label` rows from a .csv (with a header) or .jsonl file.

    Labels may be names or integers; names are numbered in sorted order unless
    `label_names` fixes the order.
    """
    path = Path(path)
    rows = []
    if path.suffix.lower() == ".jsonl":
        with open(path, encoding="utf-8") as f:
            for number, line in enumerate(f, 1):
                if not line.strip():
                    continue
                try:
                    record = json.loads(line)
                except json.JSONDecodeError as error:
                    raise DataError(f"{path}, line {number}: not valid JSON ({error.msg})") from None
                rows.append(_text_and_label(record, path, number))
    elif path.suffix.lower() == ".csv":
        with open(path, encoding="utf-8", newline="") as f:
            reader = csv.DictReader(f)
            if reader.fieldnames is None or not {"text", "label"} <= set(reader.fieldnames):
                raise DataError(f"{path}, line 1: the CSV header must name the columns 'text' and 'label'")
            for record in reader:
                rows.append(_text_and_label(record, path, reader.line_num))
    else:
        raise DataError(f"{path}: expected a .csv or .jsonl file of text/label rows")
    if not rows:
        raise DataError(f"{path}: no rows")
    raw_labels = [str(label) for _, label in rows]
    names = label_names or sorted(set(raw_labels), key=lambda v: (not v.lstrip("-").isdigit(),
                                                                  int(v) if v.lstrip("-").isdigit() else 0, v))
    index = {name: i for i, name in enumerate(names)}
    unknown = sorted(set(raw_labels) - set(index))
    if unknown:
        raise DataError(f"{path}: labels {unknown} are not among {names}")
    return LabeledTexts([text for text, _ in rows], [index[label] for label in raw_labels], list(names))


def _text_and_label(record, path, number):
    if not isinstance(record, dict) or "text" not in record or "label" not in record:
        raise DataError(f"{path}, line {number}: each row needs 'text' and 'label'")
    if not isinstance(record["text"], str) or not record["text"].strip():
        raise DataError(f"{path}, line {number}: 'text' must be a non-empty string")
    return record["text"], record["label"]


def train_val_split(count: int, val_fraction: float, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Shuffled index arrays (train, validation); at least one item in each."""
    if count < 2:
        raise ValueError(f"need at least 2 items to split into train and validation, got {count}")
    if not 0.0 < val_fraction < 1.0:
        raise ValueError(f"val_fraction must be in (0, 1), got {val_fraction}")
    order = np.random.default_rng(seed).permutation(count)
    n_val = min(max(1, round(count * val_fraction)), count - 1)
    return np.sort(order[n_val:]), np.sort(order[:n_val])
