"""Read and write the safetensors format, at the level of NumPy arrays.

A safetensors file is three parts:

    [8 bytes]  N, the header length, as a little-endian unsigned 64-bit integer
    [N bytes]  a UTF-8 JSON object:
                 {"name": {"dtype": "F32", "shape": [2, 3], "data_offsets": [begin, end]},
                  ...,
                  "__metadata__": {"key": "value"}}      (optional, str -> str only)
    [rest]     the data buffer; each tensor's bytes, little-endian, C order, lie at
               [begin, end) counted from the first byte after the header

The format is deliberately dumb: no code runs on load (unlike pickle), so a file from
the internet can be read safely, and every check a reader needs can be done on the
header before a single data byte is touched. This module performs all those checks
and raises `SafetensorsError`, naming the file and the problem, for anything malformed.

bfloat16: NumPy has no bfloat16 dtype, so
  * `load_file` returns BF16 tensors as float32. The conversion is exact: a bfloat16 is
    the high 16 bits of a float32, so shifting the bits up by 16 recovers the value.
  * `save_file` writes BF16 for arrays wrapped with `as_bfloat16(x)`, which rounds
    float32 values to the nearest bfloat16 (ties to even, as PyTorch does).
  A BF16 tensor that is loaded and saved again without `as_bfloat16` is written as F32.

Checksums: `save_file(..., checksum=True)` (what minilm uses for its own weights and
checkpoints) records the SHA-256 of the data buffer in the metadata (`minilm.sha256`),
and `load_file` checks it when it reads the whole file, so bytes flipped on disk are an
error instead of weights that silently generate garbage. Files written elsewhere have no
such entry and load as before.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import secrets
from collections.abc import Iterable, Mapping
from typing import Any, NamedTuple

import numpy as np

__all__ = [
    "BFloat16Array",
    "SafetensorsError",
    "as_bfloat16",
    "load_file",
    "read_header",
    "save_file",
]

# The reference implementation refuses headers above 100 MB; a real header (names,
# shapes and offsets of a few thousand tensors) is a few hundred KB at most, so a
# larger value means a corrupt or hostile file, and we must not allocate it.
MAX_HEADER_BYTES = 100_000_000

_METADATA_KEY = "__metadata__"
CHECKSUM_KEY = "minilm.sha256"  # metadata entry: hex SHA-256 of the data buffer

# NumPy's limit on array dimensions (and the most any real tensor has by far).
MAX_DIMS = 64

# dtype code -> NumPy dtype of the bytes as stored. BF16 is kept as its raw uint16
# bits and BOOL as uint8 (see _bool_from_bytes); both are converted after reading.
_STORED_DTYPES = {
    "BOOL": np.dtype("u1"),
    "U8": np.dtype("u1"),
    "I8": np.dtype("i1"),
    "U16": np.dtype("<u2"),
    "I16": np.dtype("<i2"),
    "F16": np.dtype("<f2"),
    "BF16": np.dtype("<u2"),
    "U32": np.dtype("<u4"),
    "I32": np.dtype("<i4"),
    "F32": np.dtype("<f4"),
    "U64": np.dtype("<u8"),
    "I64": np.dtype("<i8"),
    "F64": np.dtype("<f8"),
}

# (NumPy dtype kind, itemsize) -> dtype code. Keyed on kind and size rather than on
# dtype objects because NumPy has several distinct, equal-sized aliases (int64 and
# longlong on Linux) and byte-order variants that must all map to one code.
_CODES_BY_KIND_AND_SIZE = {
    ("b", 1): "BOOL",
    ("u", 1): "U8",
    ("i", 1): "I8",
    ("u", 2): "U16",
    ("i", 2): "I16",
    ("f", 2): "F16",
    ("u", 4): "U32",
    ("i", 4): "I32",
    ("f", 4): "F32",
    ("u", 8): "U64",
    ("i", 8): "I64",
    ("f", 8): "F64",
}


class SafetensorsError(ValueError):
    """A file is not a valid safetensors file. `path` is the offending file."""

    def __init__(self, path: str | os.PathLike, problem: str) -> None:
        self.path = os.fspath(path)
        super().__init__(f"invalid safetensors file {self.path!r}: {problem}")


# --------------------------------------------------------------------------- bfloat16


class BFloat16Array:
    """An array marked to be saved as BF16; `bits` holds the raw bfloat16 bit patterns.

    Build one with `as_bfloat16(x)`; construct directly only if you already have bits.
    """

    def __init__(self, bits: np.ndarray) -> None:
        bits = np.asarray(bits)
        if bits.dtype != np.uint16:
            raise TypeError(f"bfloat16 bits must be a uint16 array, got {bits.dtype}")
        self.bits = bits

    @property
    def shape(self) -> tuple[int, ...]:
        return self.bits.shape

    def to_float32(self) -> np.ndarray:
        return _bfloat16_bits_to_float32(self.bits)

    def __repr__(self) -> str:
        return f"BFloat16Array(shape={self.shape})"


def as_bfloat16(x: Any) -> BFloat16Array:
    """Round `x` to bfloat16 (nearest, ties to even) and mark it to be saved as BF16.

    Non-float32 input is first converted to float32. NaN stays NaN (canonical quiet
    NaN, sign kept); values beyond the bfloat16 range round to +-inf, as in PyTorch.
    """
    if isinstance(x, BFloat16Array):
        return x
    f32 = np.asarray(_to_numpy(x), dtype=np.float32, order="C")
    bits = f32.view(np.uint32)
    # Round to nearest even on the 16 bits that are dropped: adding 0x7FFF rounds
    # halfway cases down, and adding the lowest kept bit on top turns that into
    # "round half to even". Carries ripple into the exponent, which is what makes
    # the largest finite values round up to infinity.
    lowest_kept_bit = (bits >> 16) & 1
    rounded = ((bits + 0x7FFF + lowest_kept_bit) >> 16).astype(np.uint16)
    # The rounding above would turn a NaN with only low mantissa bits set into inf.
    quiet_nan = ((bits >> 16) & 0x8000).astype(np.uint16) | np.uint16(0x7FC0)
    return BFloat16Array(np.where(np.isnan(f32), quiet_nan, rounded))


def _bfloat16_bits_to_float32(bits: np.ndarray) -> np.ndarray:
    # bfloat16 is the top half of a float32, so this is exact.
    return (bits.astype(np.uint32) << 16).view(np.float32)


# ----------------------------------------------------------------------------- saving


class _PreparedTensor(NamedTuple):
    name: str
    code: str
    data: np.ndarray  # C-contiguous, little-endian; written as raw bytes


def save_file(
    arrays: Mapping[str, Any],
    path: str | os.PathLike,
    metadata: Mapping[str, str] | None = None,
    checksum: bool = False,
) -> None:
    """Write `arrays` (name -> array) to `path` in the safetensors format.

    Values may be NumPy arrays, anything `numpy.asarray` accepts (objects with
    `__array__`), objects with a `.numpy()` method (minilm Tensors), CuPy arrays
    (copied to the host) and `BFloat16Array`s from `as_bfloat16`. `metadata` is an
    optional str -> str mapping stored in the header; `checksum` adds the SHA-256 of the
    data to it (see the module docstring).

    The write is atomic: the file is written under a temporary name in the same
    directory, synced to disk and renamed over `path`. If anything fails, `path` is
    left as it was and the temporary file is removed.
    """
    # Convert and validate everything before touching the disk, so that bad input
    # never leaves a partial file behind.
    tensors = _prepare_tensors(arrays)
    metadata = _check_metadata(metadata)
    if checksum:
        digest = hashlib.sha256()
        for tensor in tensors:
            if tensor.data.size:
                digest.update(tensor.data.reshape(-1).view(np.uint8))
        metadata[CHECKSUM_KEY] = digest.hexdigest()
    header = _encode_header(tensors, metadata)

    def write(f):
        f.write(header)
        for tensor in tensors:
            if tensor.data.size:
                f.write(tensor.data.reshape(-1).view(np.uint8))

    _write_atomically(path, write)


def _prepare_tensors(arrays: Mapping[str, Any]) -> list[_PreparedTensor]:
    if not isinstance(arrays, Mapping):
        raise TypeError(f"arrays must be a mapping of name -> array, got {type(arrays).__name__}")
    tensors = []
    for name, value in arrays.items():
        if not isinstance(name, str):
            raise TypeError(f"tensor names must be str, got {type(name).__name__}: {name!r}")
        if not name:
            raise ValueError("tensor names must be non-empty")
        if name == _METADATA_KEY:
            raise ValueError(f"{_METADATA_KEY!r} is reserved for the metadata and cannot name a tensor")
        if isinstance(value, BFloat16Array):
            code, data = "BF16", value.bits
        else:
            data = _to_numpy(value)
            code = _CODES_BY_KIND_AND_SIZE.get((data.dtype.kind, data.dtype.itemsize))
            if code is None:
                raise TypeError(
                    f"tensor {name!r} has dtype {data.dtype}, which safetensors cannot store "
                    f"(supported: bool, int8-64, uint8-64, float16/32/64; "
                    f"bfloat16 via as_bfloat16)"
                )
        # The format is little-endian and C-ordered; this is a no-op for the usual
        # contiguous little-endian array.
        data = np.asarray(data, dtype=data.dtype.newbyteorder("<"), order="C")
        tensors.append(_PreparedTensor(name, code, data))
    # Largest items first (the reference writer's order): with the data starting
    # 8-byte aligned, every tensor then starts at a multiple of its itemsize, which
    # lets memory-mapped readers use the bytes in place. Names break ties so that
    # the same input always gives the same file.
    tensors.sort(key=lambda t: (-t.data.dtype.itemsize, t.name))
    return tensors


def _to_numpy(x: Any) -> np.ndarray:
    if isinstance(x, np.ndarray):
        return x
    # CuPy arrays: `.get()` copies device memory to the host. Checking the CUDA
    # interface too keeps unrelated objects with a `get` method (dicts) out.
    if hasattr(x, "__cuda_array_interface__") and callable(getattr(x, "get", None)):
        return np.asarray(x.get())
    if callable(getattr(x, "numpy", None)):
        return np.asarray(x.numpy())
    return np.asarray(x)


def _check_metadata(metadata: Mapping[str, str] | None) -> dict[str, str]:
    if metadata is None:
        return {}
    if not isinstance(metadata, Mapping):
        raise TypeError(f"metadata must be a mapping of str -> str, got {type(metadata).__name__}")
    for key, value in metadata.items():
        if not isinstance(key, str) or not isinstance(value, str):
            raise TypeError(
                f"metadata keys and values must be str, got {key!r}: {value!r} "
                f"({type(key).__name__}: {type(value).__name__})"
            )
    return dict(metadata)


def _encode_header(tensors: list[_PreparedTensor], metadata: dict[str, str]) -> bytes:
    """The length prefix and JSON header, padded so that the data starts 8-byte aligned."""
    header: dict[str, Any] = {}
    if metadata:
        header[_METADATA_KEY] = metadata
    offset = 0
    for tensor in tensors:
        end = offset + tensor.data.nbytes
        header[tensor.name] = {
            "dtype": tensor.code,
            "shape": list(tensor.data.shape),
            "data_offsets": [offset, end],
        }
        offset = end
    text = json.dumps(header, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
    # Spaces are JSON whitespace, so readers parse the padded header unchanged.
    text += b" " * (-(8 + len(text)) % 8)
    return len(text).to_bytes(8, "little") + text


def _write_atomically(path: str | os.PathLike, write) -> None:
    path = os.fspath(path)
    directory = os.path.dirname(os.path.abspath(path))
    # os.open with mode 0o666 lets the umask decide the permissions, so the result
    # looks like any newly created file (tempfile.mkstemp would force 0o600).
    # O_EXCL plus a random suffix makes the name ours alone.
    while True:
        tmp_path = os.path.join(directory, f".{os.path.basename(path)}.{secrets.token_hex(6)}.tmp")
        try:
            fd = os.open(tmp_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0), 0o666)
            break
        except FileExistsError:
            continue
    try:
        with open(fd, "wb") as f:
            write(f)
            f.flush()
            # Without fsync, a crash shortly after the rename could leave `path`
            # pointing at a file whose data never reached the disk.
            os.fsync(f.fileno())
        os.replace(tmp_path, path)
    except BaseException as error:
        # BaseException: a Ctrl-C mid-write must not leave the temporary file behind.
        try:
            os.remove(tmp_path)
        except FileNotFoundError:
            pass
        if isinstance(error, OSError) and error.errno and error.filename is None:  # name the file
            raise OSError(error.errno, error.strerror, path) from None
        raise
    fsync_directory(directory)


def fsync_directory(directory) -> None:
    # The rename itself lives in the directory; syncing it makes the new name
    # durable. Windows has no way to open a directory for this, so skip it there.
    # Best effort: the file itself is complete by now, and some file systems refuse
    # to sync a directory, which must not turn a successful save into an error.
    if not hasattr(os, "O_DIRECTORY"):
        return
    try:
        fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
    except OSError:
        pass


# ---------------------------------------------------------------------------- loading


class _TensorInfo(NamedTuple):
    name: str
    dtype: str
    shape: tuple[int, ...]
    begin: int  # byte offsets into the data buffer
    end: int


class _Header(NamedTuple):
    tensors: list[_TensorInfo]  # sorted by offset
    metadata: dict[str, str]
    data_start: int  # absolute file offset of the data buffer


def read_header(path: str | os.PathLike) -> tuple[dict[str, dict[str, Any]], dict[str, str]]:
    """Return the validated header of a safetensors file without reading any data.

    Returns `(tensors, metadata)`: `tensors` maps each name (in data-offset order) to
    `{"dtype": str, "shape": list[int], "data_offsets": [begin, end]}`.
    """
    with open(path, "rb") as f:
        header = _read_header(f, path)
    tensors = {
        t.name: {"dtype": t.dtype, "shape": list(t.shape), "data_offsets": [t.begin, t.end]}
        for t in header.tensors
    }
    return tensors, header.metadata


def load_file(
    path: str | os.PathLike,
    names: Iterable[str] | None = None,
    *,
    mmap: bool = False,
) -> dict[str, np.ndarray]:
    """Load the tensors of a safetensors file as NumPy arrays (name -> array).

    `names` restricts loading to those tensors; only their bytes are read.
    BF16 tensors come back as float32 (exactly; see the module docstring) and BOOL
    as bool.

    By default every array owns its memory and is writable. With `mmap=True` the
    arrays are read-only views of a memory map of the file, so loading costs no
    reads up front and pages come in on first use; BF16 and non-0/1 BOOL tensors
    are still converted into ordinary arrays. (On Windows a mapped file cannot be
    replaced until the arrays are gone.)
    """
    if isinstance(names, str):
        raise TypeError("names must be an iterable of str, not a single str")
    with open(path, "rb") as f:
        header = _read_header(f, path)
        tensors = header.tensors
        if names is not None:
            wanted = set(names)
            missing = wanted - {t.name for t in tensors}
            if missing:
                listed = ", ".join(map(repr, sorted(missing)))
                raise KeyError(f"{os.fspath(path)!r} has no tensor named {listed}")
            tensors = [t for t in tensors if t.name in wanted]
        if mmap:
            return _map_tensors(path, header.data_start, tensors)
        if names is None and CHECKSUM_KEY in header.metadata:
            _verify_checksum(f, path, header)
        return {t.name: _read_tensor(f, path, header.data_start, t) for t in tensors}


def _verify_checksum(f, path, header: _Header) -> None:
    """The data buffer must hash to the SHA-256 recorded when the file was written."""
    digest = hashlib.sha256()
    f.seek(header.data_start)
    for chunk in iter(lambda: f.read(1 << 20), b""):
        digest.update(chunk)
    if digest.hexdigest() != header.metadata[CHECKSUM_KEY]:
        raise SafetensorsError(path, "the data does not match the checksum recorded when the file was written "
                                     "(the file is corrupted: bytes changed on disk or in a copy)")


def _read_tensor(f, path, data_start: int, info: _TensorInfo) -> np.ndarray:
    # One array per tensor, filled by reading straight into it: every result owns
    # its memory (no tensor aliases another through a shared buffer), and no second
    # copy of the file's data is ever held.
    stored = np.empty(info.shape, dtype=_STORED_DTYPES[info.dtype])
    f.seek(data_start + info.begin)
    n_read = f.readinto(stored.reshape(-1).view(np.uint8))
    if n_read != stored.nbytes:
        # The size was checked against the header, so the file changed under us.
        raise SafetensorsError(path, f"data of tensor {info.name!r} is truncated")
    return _to_user_dtype(stored, info.dtype)


def _map_tensors(path, data_start: int, tensors: list[_TensorInfo]) -> dict[str, np.ndarray]:
    data_size = max((t.end for t in tensors), default=0)
    if data_size == 0:  # NumPy refuses to map zero bytes
        buffer = np.empty(0, dtype=np.uint8)
    else:
        mapped = np.memmap(path, dtype=np.uint8, mode="r", offset=data_start, shape=(data_size,))
        # Plain ndarray views (which keep the map alive through .base): results of
        # arithmetic on np.memmap subclasses would otherwise be memmaps too.
        buffer = mapped.view(np.ndarray)
    arrays = {}
    for t in tensors:
        stored = buffer[t.begin : t.end].view(_STORED_DTYPES[t.dtype]).reshape(t.shape)
        arrays[t.name] = _to_user_dtype(stored, t.dtype)
    return arrays


def _to_user_dtype(stored: np.ndarray, code: str) -> np.ndarray:
    if code == "BF16":
        return _bfloat16_bits_to_float32(stored)
    if code == "BOOL":
        return _bool_from_bytes(stored)
    if not stored.dtype.isnative:  # only on big-endian machines
        return stored.astype(stored.dtype.newbyteorder("="))
    return stored


def _bool_from_bytes(stored: np.ndarray) -> np.ndarray:
    # NumPy assumes a bool byte is 0 or 1; other values (which the reference
    # reader accepts as True) would make comparisons and sums misbehave.
    if stored.size == 0 or stored.max() <= 1:
        return stored.view(np.bool_)
    return stored != 0


def _read_header(f, path) -> _Header:
    """Parse and fully validate the header; raises SafetensorsError on any problem."""
    file_size = os.fstat(f.fileno()).st_size
    if file_size < 8:
        raise SafetensorsError(path, f"file is {file_size} bytes, too short for the 8-byte header length")
    header_size = int.from_bytes(f.read(8), "little")
    if header_size > MAX_HEADER_BYTES:
        raise SafetensorsError(path, f"header length {header_size} exceeds the {MAX_HEADER_BYTES}-byte limit")
    if 8 + header_size > file_size:
        raise SafetensorsError(
            path, f"header length {header_size} runs past the end of the file ({file_size} bytes)"
        )
    try:
        text = f.read(header_size).decode("utf-8")
    except UnicodeDecodeError as e:
        raise SafetensorsError(path, f"header is not valid UTF-8 ({e})") from None
    try:
        raw = json.loads(text, object_pairs_hook=lambda pairs: _reject_duplicate_keys(path, pairs))
    except json.JSONDecodeError as e:
        raise SafetensorsError(path, f"header is not valid JSON ({e})") from None
    except RecursionError:
        raise SafetensorsError(path, "header JSON is nested too deeply") from None
    if not isinstance(raw, dict):
        raise SafetensorsError(path, f"header must be a JSON object, got {type(raw).__name__}")

    metadata = raw.pop(_METADATA_KEY, None)
    if metadata is None:
        metadata = {}
    elif not isinstance(metadata, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in metadata.items()
    ):
        raise SafetensorsError(path, f"{_METADATA_KEY} must be an object of string -> string")

    tensors = [_parse_entry(path, name, entry) for name, entry in raw.items()]
    data_start = 8 + header_size
    _check_layout(path, tensors, file_size - data_start)
    return _Header(tensors, metadata, data_start)


def _reject_duplicate_keys(path, pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    # json.loads would silently keep the last duplicate; a file naming a tensor
    # twice is ambiguous, so refuse it.
    result = dict(pairs)
    if len(result) != len(pairs):
        seen = set()
        duplicate = next(k for k, _ in pairs if k in seen or seen.add(k))
        raise SafetensorsError(path, f"header has duplicate key {duplicate!r}")
    return result


def _is_count(x: Any) -> bool:
    # JSON true/false parse to Python bools, which are ints; they are not counts.
    return isinstance(x, int) and not isinstance(x, bool) and x >= 0


def _parse_entry(path, name: str, entry: Any) -> _TensorInfo:
    where = f"tensor {name!r}"
    if not isinstance(entry, dict):
        raise SafetensorsError(path, f"{where}: entry must be an object, got {type(entry).__name__}")
    for key in ("dtype", "shape", "data_offsets"):
        if key not in entry:
            raise SafetensorsError(path, f"{where}: entry is missing {key!r}")
    dtype, shape, offsets = entry["dtype"], entry["shape"], entry["data_offsets"]
    if not isinstance(dtype, str) or dtype not in _STORED_DTYPES:
        raise SafetensorsError(
            path, f"{where}: unsupported dtype {dtype!r} (supported: {', '.join(_STORED_DTYPES)})"
        )
    if not isinstance(shape, list) or not all(_is_count(d) for d in shape):
        raise SafetensorsError(path, f"{where}: shape must be a list of non-negative integers, got {shape!r}")
    # The reference reader (and NumPy) hold dimensions, element counts and offsets in 64 bits
    # and allow at most 64 dimensions; a zero dimension would otherwise let any other pass.
    if len(shape) > MAX_DIMS:
        raise SafetensorsError(path, f"{where}: shape has {len(shape)} dimensions, more than {MAX_DIMS}")
    if any(d >= 2**63 for d in shape) or math.prod(d for d in shape if d) >= 2**63:
        raise SafetensorsError(path, f"{where}: shape {shape} has more than 2**63 elements")
    if not (isinstance(offsets, list) and len(offsets) == 2 and all(_is_count(o) for o in offsets)):
        raise SafetensorsError(
            path, f"{where}: data_offsets must be two non-negative integers, got {offsets!r}"
        )
    begin, end = offsets
    if begin > end:
        raise SafetensorsError(path, f"{where}: data_offsets {offsets} end before they begin")
    expected = math.prod(shape) * _STORED_DTYPES[dtype].itemsize
    if end - begin != expected:
        raise SafetensorsError(
            path,
            f"{where}: data_offsets {offsets} span {end - begin} bytes, "
            f"but shape {shape} of {dtype} needs {expected}",
        )
    return _TensorInfo(name, dtype, tuple(shape), begin, end)


def _check_layout(path, tensors: list[_TensorInfo], data_size: int) -> None:
    """Require the tensors to tile the data buffer exactly, as the reference reader does.

    Overlaps would let two tensors share bytes; gaps and trailing bytes are data no
    tensor owns, which in practice means a corrupt or hand-edited file.
    """
    tensors.sort(key=lambda t: (t.begin, t.end))
    position = 0
    for t in tensors:
        if t.begin < position:
            raise SafetensorsError(
                path, f"tensor {t.name!r} at bytes [{t.begin}, {t.end}) overlaps the previous tensor"
            )
        if t.begin > position:
            raise SafetensorsError(
                path,
                f"gap in the data buffer: no tensor covers bytes [{position}, {t.begin}) before {t.name!r}",
            )
        position = t.end
    if position > data_size:
        raise SafetensorsError(
            path, f"data is truncated: the header needs {position} data bytes, the file has {data_size}"
        )
    if position < data_size:
        raise SafetensorsError(
            path, f"{data_size - position} trailing bytes after the last tensor are not covered by the header"
        )
