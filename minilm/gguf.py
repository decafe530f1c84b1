"""Read GGUF files (llama.cpp's model format): metadata, tensor infos, and tensors
dequantized to float32 NumPy arrays.

A GGUF file (versions 2 and 3; all integers little-endian):

    magic        4 bytes  b"GGUF"
    version      uint32   2 or 3 (3 only added big-endian files, which are refused here)
    n_tensors    uint64
    n_metadata   uint64
    metadata     n_metadata x (key: string, value type: uint32, value)
    tensor infos n_tensors  x (name: string, n_dims: uint32, dims: uint64[n_dims],
                               type: uint32, offset: uint64)
    padding      up to a multiple of `general.alignment` (default 32)
    data         each tensor's bytes at data start + its offset

    string = uint64 byte length + UTF-8 bytes (no terminator)
    array  = element type: uint32 + count: uint64 + the elements

ggml lists dimensions fastest-varying first (dims[0] is the length of a row), the
reverse of NumPy's order; `GGUFTensorInfo.shape` is already in NumPy order.

Quantized types cut each row into blocks of 32 or 256 values; each block stores a
few float16 scales and small integers, and a value is `scale * q` or
`scale * q + min` (or `- min`, for the K-quants). Every dequantizer below decodes all
blocks of a tensor at once with array operations, in the same float32 operation
order as llama.cpp and the `gguf` package, so the results agree bit for bit.

Every count and length read from the file is checked against the bytes that
remain before anything is allocated, so a corrupt or hostile file gets a
`GGUFError` naming the file and the field or byte offset, never a crash or a huge
allocation.
"""

from __future__ import annotations

import os
import struct
from collections.abc import Callable
from typing import Any, NamedTuple

import numpy as np

__all__ = [
    "GGUFError",
    "GGUFFile",
    "GGUFTensorInfo",
    "SUPPORTED_TENSOR_TYPES",
    "reverse_llama_qk_permutation",
]

MAGIC = b"GGUF"
SUPPORTED_VERSIONS = (2, 3)
DEFAULT_ALIGNMENT = 32
# ggml tensors have at most 4 dimensions (GGML_MAX_DIMS).
MAX_DIMS = 4
# Arrays of arrays are legal; real files nest one level at most. A limit keeps a
# hostile file from driving the reader into deep recursion.
MAX_ARRAY_NESTING = 8


class GGUFError(ValueError):
    """A file is not a valid GGUF file. `path` is the offending file."""

    def __init__(self, path: str | os.PathLike, problem: str) -> None:
        self.path = os.fspath(path)
        super().__init__(f"invalid GGUF file {self.path!r}: {problem}")


class GGUFTensorInfo(NamedTuple):
    name: str
    shape: tuple[int, ...]  # NumPy order: the ggml dimensions reversed
    type: str  # ggml type name, e.g. "F32", "Q4_K"
    offset: int  # byte offset from the start of the data section
    nbytes: int


# ------------------------------------------------------------------- metadata values

# GGUF value type code -> (name, struct format) for the fixed-size scalars.
_SCALAR_TYPES = {
    0: ("UINT8", "<B"),
    1: ("INT8", "<b"),
    2: ("UINT16", "<H"),
    3: ("INT16", "<h"),
    4: ("UINT32", "<I"),
    5: ("INT32", "<i"),
    6: ("FLOAT32", "<f"),
    7: ("BOOL", "<B"),
    10: ("UINT64", "<Q"),
    11: ("INT64", "<q"),
    12: ("FLOAT64", "<d"),
}
_STRING = 8
_ARRAY = 9
_BOOL = 7
_VALUE_TYPE_NAMES = {code: name for code, (name, _) in _SCALAR_TYPES.items()} | {_STRING: "STRING", _ARRAY: "ARRAY"}


# ---------------------------------------------------------------------- tensor types


class _TensorType(NamedTuple):
    name: str
    block_size: int  # values per block (1 for plain types)
    block_bytes: int  # bytes per block
    # uint8 [n_blocks, block_bytes] -> float32 [n_blocks, block_size]
    dequantize: Callable[[np.ndarray], np.ndarray] | None


def _f16(column: np.ndarray) -> np.ndarray:
    """A [n, 2] uint8 slice of the blocks -> [n, 1] float32 (an exact conversion)."""
    return np.ascontiguousarray(column).view("<f2").astype(np.float32)


def _split_nibbles(packed: np.ndarray) -> np.ndarray:
    """[n, k] bytes -> [n, 2k]: all low nibbles first, then all high nibbles.

    The 4-bit types store value j in the low nibble of byte j and value j + k in
    the high nibble of the same byte.
    """
    return np.concatenate([packed & 0x0F, packed >> 4], axis=-1)


def _bits_of(words: np.ndarray, count: int) -> np.ndarray:
    """[n, 1] uint32 -> [n, count] uint8: bit i of each word in column i."""
    return ((words >> np.arange(count, dtype=np.uint32)) & 1).astype(np.uint8)


def _dequantize_q8_0(blocks):
    # [d: f16][32 x int8]; x = q * d
    d = _f16(blocks[:, :2])
    q = np.ascontiguousarray(blocks[:, 2:]).view(np.int8).astype(np.float32)
    return q * d


def _dequantize_q4_0(blocks):
    # [d: f16][16 bytes, two 4-bit values each]; x = d * (q - 8)
    d = _f16(blocks[:, :2])
    q = _split_nibbles(blocks[:, 2:]).astype(np.int8) - np.int8(8)
    return d * q.astype(np.float32)


def _dequantize_q4_1(blocks):
    # [d: f16][m: f16][16 bytes of nibbles]; x = d * q + m
    d, m = _f16(blocks[:, :2]), _f16(blocks[:, 2:4])
    q = _split_nibbles(blocks[:, 4:]).astype(np.float32)
    return d * q + m


def _five_bit_values(low_nibbles: np.ndarray, high_bits: np.ndarray) -> np.ndarray:
    """Q5_0/Q5_1: the 32 bits of `high_bits` are the fifth bits of the 32 values."""
    words = np.ascontiguousarray(high_bits).view("<u4").astype(np.uint32)  # [n, 1]
    return _split_nibbles(low_nibbles) | (_bits_of(words, 32) << 4)


def _dequantize_q5_0(blocks):
    # [d: f16][fifth bits: uint32][16 bytes of nibbles]; x = d * (q - 16)
    d = _f16(blocks[:, :2])
    q = _five_bit_values(blocks[:, 6:], blocks[:, 2:6]).astype(np.int8) - np.int8(16)
    return d * q.astype(np.float32)


def _dequantize_q5_1(blocks):
    # [d: f16][m: f16][fifth bits: uint32][16 bytes of nibbles]; x = d * q + m
    d, m = _f16(blocks[:, :2]), _f16(blocks[:, 2:4])
    q = _five_bit_values(blocks[:, 8:], blocks[:, 4:8]).astype(np.float32)
    return d * q + m


def _k_quant_scales_and_mins(packed: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Q4_K/Q5_K: 12 bytes hold eight 6-bit scales and eight 6-bit mins.

    Bytes 0-3: scales 0-3 in the low 6 bits; bytes 4-7: mins 0-3 likewise. The top
    two bits of bytes 0-3 (4-7) are the top bits of scales (mins) 4-7, whose low
    four bits are the low (high) nibbles of bytes 8-11.
    """
    first, second, third = packed[:, 0:4], packed[:, 4:8], packed[:, 8:12]
    scales = np.concatenate([first & 0x3F, (third & 0x0F) | ((first >> 6) << 4)], axis=-1)
    mins = np.concatenate([second & 0x3F, (third >> 4) | ((second >> 6) << 4)], axis=-1)
    return scales, mins  # each [n, 8]


def _k_quant_sub_block_factors(blocks) -> tuple[np.ndarray, np.ndarray]:
    # [d: f16][dmin: f16][12 bytes of scales and mins] -> per sub-block factors [n, 8, 1]
    d, dmin = _f16(blocks[:, :2]), _f16(blocks[:, 2:4])
    scales, mins = _k_quant_scales_and_mins(blocks[:, 4:16])
    return (d * scales.astype(np.float32))[:, :, None], (dmin * mins.astype(np.float32))[:, :, None]


def _k_quant_nibbles(packed: np.ndarray) -> np.ndarray:
    """[n, 128] bytes -> [n, 8, 32]: each 32 bytes hold two sub-blocks (low, then high nibbles)."""
    n = packed.shape[0]
    return _split_nibbles(packed.reshape(n, 4, 32)).reshape(n, 8, 32)


def _dequantize_q4_k(blocks):
    # 256 values in 8 sub-blocks of 32; x = (d * scale) * q - (dmin * min)
    scale, minimum = _k_quant_sub_block_factors(blocks)
    q = _k_quant_nibbles(blocks[:, 16:144]).astype(np.float32)
    return (scale * q - minimum).reshape(-1, 256)


def _dequantize_q5_k(blocks):
    # as Q4_K plus 32 bytes of fifth bits: bit s of byte l is the fifth bit of value l of sub-block s
    scale, minimum = _k_quant_sub_block_factors(blocks)
    high = blocks[:, 16:48]  # [n, 32]
    fifth_bits = (high[:, None, :] >> np.arange(8, dtype=np.uint8)[None, :, None]) & 1  # [n, 8, 32]
    q = (_k_quant_nibbles(blocks[:, 48:176]) | (fifth_bits << 4)).astype(np.float32)
    return (scale * q - minimum).reshape(-1, 256)


def _dequantize_q6_k(blocks):
    # [128 bytes: low 4 bits][64 bytes: high 2 bits][16 x int8 scales][d: f16]
    # 256 values in 16 sub-blocks of 16; x = (d * scale) * (q - 32)
    n = blocks.shape[0]
    d = _f16(blocks[:, 208:210])
    scales = np.ascontiguousarray(blocks[:, 192:208]).view(np.int8).astype(np.float32)
    # Each half of 128 values: 64 low-bit bytes give values 0-63 (low nibbles) and
    # 64-127 (high nibbles); 32 high-bit bytes give 2 bits to each of values l,
    # l + 32, l + 64, l + 96 (bits 0-1, 2-3, 4-5, 6-7).
    low = _split_nibbles(blocks[:, :128].reshape(n, 2, 64)).reshape(n, 2, 4, 32)
    high = blocks[:, 128:192].reshape(n, 2, 1, 32) >> np.array([0, 2, 4, 6], dtype=np.uint8).reshape(1, 1, 4, 1)
    q = ((low | ((high & 3) << 4)).astype(np.int8) - np.int8(32)).reshape(n, 16, 16)
    return ((d * scales)[:, :, None] * q.astype(np.float32)).reshape(n, 256)


def _plain(dtype: str) -> Callable[[np.ndarray], np.ndarray]:
    def convert(blocks):
        return np.ascontiguousarray(blocks).view(dtype).astype(np.float32)

    return convert


def _bf16(blocks):
    # bfloat16 is the top half of a float32, so shifting the bits up is exact.
    return (np.ascontiguousarray(blocks).view("<u2").astype(np.uint32) << 16).view(np.float32)


# ggml type code -> layout and decoder. Types listed with no decoder can be read
# (tensor infos, raw bytes) but not converted to float32.
_TENSOR_TYPES = {
    0: _TensorType("F32", 1, 4, _plain("<f4")),
    1: _TensorType("F16", 1, 2, _plain("<f2")),
    2: _TensorType("Q4_0", 32, 18, _dequantize_q4_0),
    3: _TensorType("Q4_1", 32, 20, _dequantize_q4_1),
    6: _TensorType("Q5_0", 32, 22, _dequantize_q5_0),
    7: _TensorType("Q5_1", 32, 24, _dequantize_q5_1),
    8: _TensorType("Q8_0", 32, 34, _dequantize_q8_0),
    9: _TensorType("Q8_1", 32, 40, None),
    10: _TensorType("Q2_K", 256, 84, None),
    11: _TensorType("Q3_K", 256, 110, None),
    12: _TensorType("Q4_K", 256, 144, _dequantize_q4_k),
    13: _TensorType("Q5_K", 256, 176, _dequantize_q5_k),
    14: _TensorType("Q6_K", 256, 210, _dequantize_q6_k),
    15: _TensorType("Q8_K", 256, 292, None),
    16: _TensorType("IQ2_XXS", 256, 66, None),
    17: _TensorType("IQ2_XS", 256, 74, None),
    18: _TensorType("IQ3_XXS", 256, 98, None),
    19: _TensorType("IQ1_S", 256, 50, None),
    20: _TensorType("IQ4_NL", 32, 18, None),
    21: _TensorType("IQ3_S", 256, 110, None),
    22: _TensorType("IQ2_S", 256, 82, None),
    23: _TensorType("IQ4_XS", 256, 136, None),
    24: _TensorType("I8", 1, 1, None),
    25: _TensorType("I16", 1, 2, None),
    26: _TensorType("I32", 1, 4, None),
    27: _TensorType("I64", 1, 8, None),
    28: _TensorType("F64", 1, 8, _plain("<f8")),
    29: _TensorType("IQ1_M", 256, 56, None),
    30: _TensorType("BF16", 1, 2, _bf16),
}
_TYPES_BY_NAME = {t.name: t for t in _TENSOR_TYPES.values()}
SUPPORTED_TENSOR_TYPES = tuple(t.name for t in _TENSOR_TYPES.values() if t.dequantize is not None)

# Blocks decoded per step: bounds the temporaries (a few bytes per value) for big tensors.
_BLOCKS_PER_CHUNK = 1 << 16


# ---------------------------------------------------------------------------- reader


class _Cursor:
    """Reads little-endian fields from the file's bytes, checking every read against
    the end of the file so that a bad count fails before anything is allocated."""

    def __init__(self, path: str, buffer: memoryview) -> None:
        self.path = path
        self.buffer = buffer
        self.size = len(buffer)
        self.position = 0

    def error(self, problem: str) -> GGUFError:
        return GGUFError(self.path, problem)

    def remaining(self) -> int:
        return self.size - self.position

    def need(self, nbytes: int, what: str) -> None:
        if nbytes > self.remaining():
            raise self.error(
                f"{what} at byte {self.position} needs {nbytes} bytes, but the file ends after "
                f"{self.remaining()} more (truncated?)"
            )

    def scalar(self, fmt: str, what: str):
        size = struct.calcsize(fmt)
        self.need(size, what)
        (value,) = struct.unpack_from(fmt, self.buffer, self.position)
        self.position += size
        return value

    def uint32(self, what: str) -> int:
        return self.scalar("<I", what)

    def uint64(self, what: str) -> int:
        return self.scalar("<Q", what)

    def string(self, what: str) -> str:
        start = self.position
        length = self.uint64(f"length of {what}")
        self.need(length, f"{what} ({length} bytes)")
        raw = bytes(self.buffer[self.position : self.position + length])
        self.position += length
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise self.error(f"{what} at byte {start} is not valid UTF-8 ({exc.reason})") from None


def _read_value(cursor: _Cursor, value_type: int, what: str, depth: int = 0) -> Any:
    scalar = _SCALAR_TYPES.get(value_type)
    if scalar is not None:
        value = cursor.scalar(scalar[1], what)
        if value_type == _BOOL:
            if value > 1:
                raise cursor.error(f"{what} at byte {cursor.position - 1} is a BOOL with byte value {value}, "
                                   "not 0 or 1")
            return bool(value)
        return value
    if value_type == _STRING:
        return cursor.string(what)
    if value_type == _ARRAY:
        return _read_array(cursor, what, depth)
    raise cursor.error(f"{what} at byte {cursor.position - 4} has unknown value type {value_type}")


def _read_array(cursor: _Cursor, what: str, depth: int) -> list:
    if depth >= MAX_ARRAY_NESTING:
        raise cursor.error(f"{what} at byte {cursor.position} nests arrays more than {MAX_ARRAY_NESTING} deep")
    element_type = cursor.uint32(f"element type of {what}")
    count = cursor.uint64(f"element count of {what}")
    scalar = _SCALAR_TYPES.get(element_type)
    if scalar is not None and element_type != _BOOL:
        # Numbers are decoded in one step: token scores and types run to 100 000s.
        nbytes = count * struct.calcsize(scalar[1])
        cursor.need(nbytes, f"{what} ({count} x {scalar[0]})")
        values = np.frombuffer(cursor.buffer, dtype=np.dtype(scalar[1]), count=count, offset=cursor.position)
        cursor.position += nbytes
        return values.tolist()
    # The smallest element of each kind (a BOOL byte, an empty string's length, an
    # empty array's type and count) bounds how many can fit in the rest of the file.
    smallest = {_BOOL: 1, _STRING: 8, _ARRAY: 12}.get(element_type)
    if smallest is None:
        raise cursor.error(f"element type of {what} at byte {cursor.position - 12} is unknown ({element_type})")
    cursor.need(count * smallest, f"{what} ({count} x {_VALUE_TYPE_NAMES[element_type]})")
    return [_read_value(cursor, element_type, f"element {i} of {what}", depth + 1) for i in range(count)]


def _parse_header(path: str, buffer: memoryview):
    cursor = _Cursor(path, buffer)
    cursor.need(4, "the magic number")
    magic = bytes(buffer[:4])
    if magic != MAGIC:
        raise cursor.error(f"magic number is {magic!r}, expected {MAGIC!r} (not a GGUF file)")
    cursor.position = 4
    version = cursor.uint32("version")
    if version not in SUPPORTED_VERSIONS:
        if version & 0xFFFFFF == 0 and version >> 24 in SUPPORTED_VERSIONS:
            raise cursor.error("the file is big-endian, which this reader does not support")
        raise cursor.error(f"version {version} is not supported (this reader reads {SUPPORTED_VERSIONS})")
    tensor_count = cursor.uint64("tensor count")
    metadata_count = cursor.uint64("metadata count")
    # Each metadata entry takes at least 13 bytes (key length, value type, one byte of
    # value) and each tensor info at least 24 (name length, n_dims, type, offset).
    cursor.need(metadata_count * 13 + tensor_count * 24,
                f"{metadata_count} metadata entries and {tensor_count} tensor infos")

    metadata: dict[str, Any] = {}
    for index in range(metadata_count):
        start = cursor.position
        key = cursor.string(f"key of metadata entry {index}")
        if key in metadata:
            raise cursor.error(f"metadata key {key!r} at byte {start} appears twice")
        value_type = cursor.uint32(f"value type of {key!r}")
        metadata[key] = _read_value(cursor, value_type, f"metadata {key!r}")

    alignment = metadata.get("general.alignment", DEFAULT_ALIGNMENT)
    if isinstance(alignment, bool) or not isinstance(alignment, int) or alignment <= 0 or alignment & (alignment - 1):
        raise cursor.error(f"general.alignment must be a positive power of two, got {alignment!r}")

    raw_infos = []
    names = set()
    for index in range(tensor_count):
        start = cursor.position
        name = cursor.string(f"name of tensor {index}")
        if name in names:
            raise cursor.error(f"tensor name {name!r} at byte {start} appears twice")
        names.add(name)
        n_dims = cursor.uint32(f"n_dims of tensor {name!r}")
        if n_dims > MAX_DIMS:
            raise cursor.error(f"tensor {name!r} has {n_dims} dimensions; ggml allows at most {MAX_DIMS}")
        dims = [cursor.uint64(f"dimension {i} of tensor {name!r}") for i in range(n_dims)]
        type_code = cursor.uint32(f"type of tensor {name!r}")
        offset = cursor.uint64(f"data offset of tensor {name!r}")
        raw_infos.append((name, dims, type_code, offset, start))

    data_start = -(-cursor.position // alignment) * alignment
    data_size = max(cursor.size - data_start, 0)
    infos = {}
    for name, dims, type_code, offset, _start in raw_infos:
        infos[name] = _check_tensor(cursor, name, dims, type_code, offset, alignment, data_size)
    return version, metadata, infos, data_start, alignment


def _check_tensor(cursor, name, dims, type_code, offset, alignment, data_size) -> GGUFTensorInfo:
    tensor_type = _TENSOR_TYPES.get(type_code)
    if tensor_type is None:
        raise cursor.error(f"tensor {name!r} has unknown type {type_code}")
    row_length = dims[0] if dims else 1
    if row_length % tensor_type.block_size:
        raise cursor.error(
            f"tensor {name!r}: row length {row_length} is not a multiple of the "
            f"{tensor_type.name} block size {tensor_type.block_size}"
        )
    count = 1
    for d in dims:
        count *= d
    nbytes = count // tensor_type.block_size * tensor_type.block_bytes
    if offset % alignment:
        raise cursor.error(f"tensor {name!r}: data offset {offset} is not a multiple of the alignment {alignment}")
    if offset + nbytes > data_size:
        raise cursor.error(
            f"tensor {name!r}: data at offset {offset} ({nbytes} bytes) runs past the end of the "
            f"data section ({data_size} bytes; truncated?)"
        )
    return GGUFTensorInfo(name, tuple(reversed(dims)), tensor_type.name, offset, nbytes)


class GGUFFile:
    """A GGUF file opened for reading; tensor data stays on disk, memory-mapped.

    `metadata` maps each key to a Python value (int, float, bool, str, or a list
    of these, nested for arrays of arrays). `tensor_infos` maps each tensor name to
    a `GGUFTensorInfo` (shape in NumPy order). `tensor(name)` returns the tensor as
    a new float32 array; `raw(name)` the stored bytes, read-only, without copying.
    """

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = os.fspath(path)
        size = os.path.getsize(self.path)
        if size == 0:  # NumPy refuses to map zero bytes
            raise GGUFError(self.path, "file is empty")
        # A plain ndarray view of the map (results of arithmetic on np.memmap
        # subclasses would otherwise be memmaps too); the map lives as long as
        # any array taken from it.
        self._bytes = np.memmap(self.path, dtype=np.uint8, mode="r").view(np.ndarray)
        self.version, self.metadata, self.tensor_infos, self.data_offset, self.alignment = _parse_header(
            self.path, memoryview(self._bytes)
        )

    def __enter__(self) -> GGUFFile:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    def close(self) -> None:
        """Drop this object's reference to the map (arrays from `raw` keep it alive)."""
        self._bytes = None

    def __repr__(self) -> str:
        return f"GGUFFile({self.path!r}, version={self.version}, tensors={len(self.tensor_infos)})"

    def _info(self, name: str) -> GGUFTensorInfo:
        if self._bytes is None:
            raise ValueError(f"{self.path!r} is closed")
        info = self.tensor_infos.get(name)
        if info is None:
            raise KeyError(f"{self.path!r} has no tensor named {name!r}")
        return info

    def raw(self, name: str) -> np.ndarray:
        """The tensor's stored bytes as a read-only uint8 array (a view of the map)."""
        info = self._info(name)
        start = self.data_offset + info.offset
        return self._bytes[start : start + info.nbytes]

    def tensor(self, name: str) -> np.ndarray:
        """The tensor dequantized to a new float32 array of shape `tensor_infos[name].shape`."""
        info = self._info(name)
        tensor_type = _TYPES_BY_NAME[info.type]
        if tensor_type.dequantize is None:
            raise GGUFError(
                self.path,
                f"tensor {name!r} has type {info.type}, which this reader cannot convert to float32 "
                f"(supported: {', '.join(SUPPORTED_TENSOR_TYPES)})",
            )
        blocks = self.raw(name).reshape(-1, tensor_type.block_bytes)
        out = np.empty((blocks.shape[0], tensor_type.block_size), dtype=np.float32)
        for start in range(0, blocks.shape[0], _BLOCKS_PER_CHUNK):
            stop = start + _BLOCKS_PER_CHUNK
            out[start:stop] = tensor_type.dequantize(blocks[start:stop])
        return out.reshape(info.shape)


# ------------------------------------------------------------- llama.cpp conventions


def reverse_llama_qk_permutation(weight: np.ndarray, num_heads: int) -> np.ndarray:
    """Undo the row order llama.cpp's converter gives the Q and K projections.

    Hugging Face Llama checkpoints apply rotary embedding in "rotate half" form:
    within a head, dimension i pairs with i + head_dim/2. llama.cpp pairs adjacent
    dimensions (2i, 2i+1) instead, so its converter reorders each head's rows: the
    rows of the first half and of the second half are interleaved. This puts them
    back. `weight` is [num_heads * head_dim, ...] (a weight matrix or a bias);
    `num_heads` is the number of query heads for Q and of key-value heads for K.
    """
    weight = np.asarray(weight)
    rows = weight.shape[0] if weight.ndim else 0
    if num_heads <= 0 or rows % (2 * num_heads):
        raise ValueError(
            f"cannot split {rows} rows into {num_heads} heads of an even size (weight shape {weight.shape})"
        )
    head_dim = rows // num_heads
    # [H * D, ...] -> [H, D/2, 2, ...] (llama.cpp: pairs adjacent) -> [H, 2, D/2, ...] (HF: halves)
    split = weight.reshape(num_heads, head_dim // 2, 2, *weight.shape[1:])
    return split.swapaxes(1, 2).reshape(weight.shape)
