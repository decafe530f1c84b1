"""Tests for minilm.serialization: the safetensors reader and writer.

Peer parity runs against the `safetensors` package (and PyTorch for bfloat16); those
tests skip with a reason when the peer is not installed.
"""

import json
import os
import struct

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from minilm.serialization import (
    BFloat16Array,
    SafetensorsError,
    as_bfloat16,
    load_file,
    read_header,
    save_file,
)

from .helpers import oracle

DTYPES = [
    np.bool_,
    np.int8, np.int16, np.int32, np.int64,
    np.uint8, np.uint16, np.uint32, np.uint64,
    np.float16, np.float32, np.float64,
]
CODES = ["BOOL", "I8", "I16", "I32", "I64", "U8", "U16", "U32", "U64", "F16", "F32", "F64"]
SHAPES = [(), (0,), (3, 0, 2), (1,), (2, 3), (2, 1, 4, 3)]


def sample(dtype, shape, seed=0):
    """Values spanning the dtype's range (extremes included), deterministic per seed."""
    rng = np.random.default_rng(seed)
    dtype = np.dtype(dtype)
    if dtype == np.bool_:
        values = rng.integers(0, 2, shape)
    elif dtype.kind in "iu":
        info = np.iinfo(dtype)
        values = rng.integers(info.min, info.max, shape, dtype=dtype, endpoint=True)
    else:
        values = rng.standard_normal(shape) * 10.0 ** rng.integers(-3, 4, shape)
    return np.asarray(values, dtype=dtype)  # an array even for shape ()


def assert_same_arrays(actual, expected):
    assert actual.keys() == expected.keys()
    for name, value in expected.items():
        value = np.asarray(value)
        assert actual[name].dtype == value.dtype, name
        assert actual[name].shape == value.shape, name
        np.testing.assert_array_equal(actual[name], value, err_msg=name)


def write_raw(path, header, data=b"", header_length=None):
    """Write a hand-made file; `header` is a JSON-able object or raw bytes."""
    text = header if isinstance(header, bytes) else json.dumps(header).encode("utf-8")
    length = len(text) if header_length is None else header_length
    path.write_bytes(struct.pack("<Q", length) + text + data)
    return path


def entry(dtype, shape, begin, end):
    return {"dtype": dtype, "shape": shape, "data_offsets": [begin, end]}


# ------------------------------------------------------------------------ round trips


@pytest.mark.parametrize("shape", SHAPES, ids=str)
@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
def test_round_trip_every_dtype_and_shape(tmp_path, dtype, shape):
    arrays = {"x": sample(dtype, shape)}
    save_file(arrays, tmp_path / "t.safetensors")
    assert_same_arrays(load_file(tmp_path / "t.safetensors"), arrays)


def test_header_uses_the_format_dtype_codes(tmp_path):
    arrays = {code: sample(dtype, (2,)) for code, dtype in zip(CODES, DTYPES)}
    save_file(arrays, tmp_path / "t.safetensors")
    tensors, metadata = read_header(tmp_path / "t.safetensors")
    assert {name: info["dtype"] for name, info in tensors.items()} == {c: c for c in CODES}
    assert metadata == {}


def test_many_tensors_and_a_large_one(tmp_path):
    arrays = {f"layer.{i}.weight": sample(DTYPES[i % len(DTYPES)], (i % 5, 3), seed=i) for i in range(40)}
    arrays["big"] = sample(np.float32, (1024, 1024))
    save_file(arrays, tmp_path / "t.safetensors")
    assert_same_arrays(load_file(tmp_path / "t.safetensors"), arrays)


def test_metadata_round_trip(tmp_path):
    metadata = {"format": "np", "note": "ünïcödé ✓", "empty": "", "json": '{"a": [1, 2]}'}
    save_file({"x": np.ones(2, np.float32)}, tmp_path / "t.safetensors", metadata=metadata)
    assert read_header(tmp_path / "t.safetensors")[1] == metadata


def test_no_tensors_at_all(tmp_path):
    save_file({}, tmp_path / "t.safetensors", metadata={"k": "v"})
    assert load_file(tmp_path / "t.safetensors") == {}
    assert read_header(tmp_path / "t.safetensors") == ({}, {"k": "v"})


def test_unicode_tensor_names(tmp_path):
    arrays = {"wörd/émbed.weight": np.arange(3, dtype=np.int32), "日本": np.zeros(1, np.uint8)}
    save_file(arrays, tmp_path / "t.safetensors")
    assert_same_arrays(load_file(tmp_path / "t.safetensors"), arrays)


def test_layout_is_aligned_contiguous_and_deterministic(tmp_path):
    arrays = {"c": np.ones(3, np.uint8), "a": np.ones(3, np.float16), "b": np.ones(1, np.float64),
              "d": np.ones(2, np.float32)}
    save_file(arrays, tmp_path / "one.safetensors")
    save_file(dict(reversed(arrays.items())), tmp_path / "two.safetensors")
    raw = (tmp_path / "one.safetensors").read_bytes()
    assert raw == (tmp_path / "two.safetensors").read_bytes()

    header_length = struct.unpack("<Q", raw[:8])[0]
    assert (8 + header_length) % 8 == 0
    tensors, _ = read_header(tmp_path / "one.safetensors")
    offsets = sorted(info["data_offsets"] for info in tensors.values())
    assert offsets[0][0] == 0 and offsets[-1][1] == len(raw) - 8 - header_length
    assert all(prev[1] == cur[0] for prev, cur in zip(offsets, offsets[1:]))
    for name, info in tensors.items():  # each tensor starts at a multiple of its itemsize
        assert info["data_offsets"][0] % arrays[name].itemsize == 0


def test_non_contiguous_and_big_endian_inputs(tmp_path):
    base = np.arange(24, dtype=np.float64).reshape(4, 6)
    arrays = {
        "transposed": base.T,
        "strided": base[::2, 1::3],
        "fortran": np.asfortranarray(base),
        "big_endian_f": base.astype(">f4"),
        "big_endian_i": np.arange(5, dtype=">i8"),
        "negative_stride": base[::-1],
    }
    save_file(arrays, tmp_path / "t.safetensors")
    loaded = load_file(tmp_path / "t.safetensors")
    for name, value in arrays.items():
        assert loaded[name].dtype.isnative
        assert loaded[name].dtype == value.dtype.newbyteorder("=")
        np.testing.assert_array_equal(loaded[name], value)


class WithArrayProtocol:
    def __array__(self, dtype=None, copy=None):
        return np.arange(4, dtype=np.int16)


class WithNumpyMethod:  # like minilm.Tensor
    def numpy(self):
        return np.full((2, 2), 7.0, dtype=np.float32)


class FakeCupyArray:
    """Duck-types the two things save_file uses from a CuPy array."""

    __cuda_array_interface__ = {}

    def get(self):
        return np.array([1.5, 2.5], dtype=np.float16)


def test_accepted_input_kinds(tmp_path):
    save_file(
        {
            "protocol": WithArrayProtocol(),
            "tensor": WithNumpyMethod(),
            "cupy": FakeCupyArray(),
            "list": [[1, 2], [3, 4]],
            "scalar": np.float32(3.0),
        },
        tmp_path / "t.safetensors",
    )
    loaded = load_file(tmp_path / "t.safetensors")
    np.testing.assert_array_equal(loaded["protocol"], np.arange(4, dtype=np.int16))
    np.testing.assert_array_equal(loaded["tensor"], np.full((2, 2), 7.0, dtype=np.float32))
    np.testing.assert_array_equal(loaded["cupy"], np.array([1.5, 2.5], dtype=np.float16))
    assert loaded["list"].shape == (2, 2) and loaded["list"].dtype.kind == "i"
    assert loaded["scalar"].shape == () and loaded["scalar"] == np.float32(3.0)


def test_save_does_not_modify_its_inputs(tmp_path):
    value = np.arange(6, dtype=">i4").reshape(2, 3).T
    before = value.copy()
    save_file({"x": value}, tmp_path / "t.safetensors")
    np.testing.assert_array_equal(value, before)
    assert value.dtype == np.dtype(">i4")


def test_loaded_arrays_are_writable_and_independent(tmp_path):
    save_file({"a": np.zeros(4, np.float32), "b": np.zeros(4, np.float32)}, tmp_path / "t.safetensors")
    loaded = load_file(tmp_path / "t.safetensors")
    assert all(a.flags.writeable and a.flags.owndata for a in loaded.values())
    loaded["a"][:] = 1.0
    np.testing.assert_array_equal(loaded["b"], 0.0)
    np.testing.assert_array_equal(load_file(tmp_path / "t.safetensors")["a"], 0.0)


def test_load_a_subset_of_names(tmp_path):
    arrays = {name: sample(np.float32, (3,), seed=i) for i, name in enumerate("abcd")}
    save_file(arrays, tmp_path / "t.safetensors")
    loaded = load_file(tmp_path / "t.safetensors", names=["d", "b"])
    assert_same_arrays(loaded, {"b": arrays["b"], "d": arrays["d"]})
    assert load_file(tmp_path / "t.safetensors", names=[]) == {}
    with pytest.raises(KeyError, match="'zz'"):
        load_file(tmp_path / "t.safetensors", names=["a", "zz"])
    with pytest.raises(TypeError, match="single str"):
        load_file(tmp_path / "t.safetensors", names="a")


def test_mmap_loading(tmp_path):
    arrays = {"w": sample(np.float32, (5, 7)), "i": sample(np.int64, ()), "e": np.zeros((0, 2), np.uint8),
              "b": sample(np.bool_, (4,)), "h": as_bfloat16(np.array([1.0, -2.5], np.float32))}
    save_file(arrays, tmp_path / "t.safetensors")
    mapped = load_file(tmp_path / "t.safetensors", mmap=True)
    assert_same_arrays(mapped, load_file(tmp_path / "t.safetensors"))
    assert type(mapped["w"]) is np.ndarray
    assert not mapped["w"].flags.writeable
    with pytest.raises(ValueError):
        mapped["w"][0, 0] = 1.0


def test_mmap_of_a_file_without_data(tmp_path):
    save_file({"e": np.zeros(0, np.float32)}, tmp_path / "t.safetensors")
    assert load_file(tmp_path / "t.safetensors", mmap=True)["e"].shape == (0,)


def test_bool_bytes_other_than_0_and_1_read_as_true(tmp_path):
    # The reference reader accepts these; NumPy would misbehave on a raw view.
    path = write_raw(tmp_path / "t.safetensors", {"m": entry("BOOL", [3], 0, 3)}, b"\x00\x02\xff")
    for mmap in (False, True):
        mask = load_file(path, mmap=mmap)["m"]
        np.testing.assert_array_equal(mask, [False, True, True])
        assert mask.sum() == 2


@settings(deadline=None, max_examples=60)
@given(
    arrays=st.dictionaries(
        keys=st.text(st.characters(exclude_categories=["Cs"]), min_size=1, max_size=8).filter(
            lambda s: s != "__metadata__"
        ),
        values=hnp.arrays(
            dtype=st.sampled_from([np.dtype(d) for d in DTYPES]),
            shape=hnp.array_shapes(min_dims=0, max_dims=4, min_side=0, max_side=5),
        ),
        max_size=5,
    ),
    metadata=st.dictionaries(st.text(max_size=5), st.text(max_size=10), max_size=3),
)
def test_round_trip_property(tmp_path_factory, arrays, metadata):
    path = tmp_path_factory.mktemp("prop") / "t.safetensors"
    save_file(arrays, path, metadata=metadata)
    loaded = load_file(path)
    assert loaded.keys() == arrays.keys()
    for name, value in arrays.items():
        assert loaded[name].dtype == value.dtype and loaded[name].shape == value.shape
        # Compare bytes: NaN payloads and signed zeros must survive too.
        assert loaded[name].tobytes() == value.tobytes()
    assert read_header(path)[1] == metadata


# --------------------------------------------------------------------------- bfloat16

BF16_SPECIALS = np.array(
    [0.0, -0.0, 1.0, -1.0, 1.00390625, 1.01171875, 3.0e38, 3.3895e38, 3.4e38, -3.4e38,
     1e-40, -1e-45, 1.17549435e-38, np.inf, -np.inf, np.nan, -np.nan, 65504.0, 1.0 / 3.0],
    dtype=np.float32,
)


def test_as_bfloat16_rounds_to_nearest_even():
    # 1 + 2**-8 lies halfway between 1 and 1 + 2**-7: ties go to the even one (1).
    # 1 + 3 * 2**-8 is halfway between 1 + 2**-7 and 1 + 2**-6: rounds up to even.
    values = np.array([1.0 + 2**-8, 1.0 + 3 * 2**-8, 1.0 + 2**-8 + 2**-20], np.float32)
    np.testing.assert_array_equal(as_bfloat16(values).to_float32(), [1.0, 1.0 + 2**-6, 1.0 + 2**-7])
    # A NaN whose payload lies only in the dropped bits must stay NaN, not become inf.
    sneaky_nan = np.array([0x7F800001, 0xFF800001], np.uint32).view(np.float32)
    result = as_bfloat16(sneaky_nan).to_float32()
    assert np.isnan(result).all() and np.signbit(result).tolist() == [False, True]


def test_as_bfloat16_matches_torch():
    torch = oracle("torch", reason="PyTorch is the bfloat16 rounding oracle")
    rng = np.random.default_rng(0)
    random_bits = rng.integers(0, 2**32, 5000, dtype=np.uint64).astype(np.uint32)
    values = np.concatenate(
        [BF16_SPECIALS, rng.standard_normal(5000).astype(np.float32) * 1e3, random_bits.view(np.float32)]
    )
    expected = torch.from_numpy(values).to(torch.bfloat16).view(torch.int16).numpy().view(np.uint16)
    ours = as_bfloat16(values).bits
    finite = ~np.isnan(values)
    np.testing.assert_array_equal(ours[finite], expected[finite])
    assert np.isnan(as_bfloat16(values).to_float32()[~finite]).all()


def test_bfloat16_round_trip_loads_as_float32(tmp_path):
    values = np.array([[1.0, -2.5, 0.15625], [np.inf, -0.0, 3.0e38]], np.float32)
    marked = as_bfloat16(values)
    save_file({"w": marked, "other": np.ones(1, np.float64)}, tmp_path / "t.safetensors")
    assert read_header(tmp_path / "t.safetensors")[0]["w"]["dtype"] == "BF16"
    loaded = load_file(tmp_path / "t.safetensors")["w"]
    assert loaded.dtype == np.float32 and loaded.shape == (2, 3)
    np.testing.assert_array_equal(loaded, marked.to_float32())
    # The values above are exactly representable except 3.0e38, which rounds.
    np.testing.assert_array_equal(loaded[0], values[0])
    # Saving the loaded float32 values as bfloat16 again reproduces the same bits.
    assert as_bfloat16(loaded).bits.tobytes() == marked.bits.tobytes()


def test_bfloat16_array_checks_its_bits():
    with pytest.raises(TypeError, match="uint16"):
        BFloat16Array(np.zeros(3, np.float32))
    assert as_bfloat16(np.zeros(2)).shape == (2,)
    zero_d = as_bfloat16(np.float64(1.5))
    assert zero_d.shape == () and zero_d.to_float32() == 1.5


# ------------------------------------------------------------- compatibility with peers


def test_files_we_write_load_in_safetensors_numpy(tmp_path):
    sf_numpy = oracle("safetensors.numpy", reason="safetensors is the reference format reader")
    arrays = {f"{np.dtype(d).name}{i}": sample(d, shape, seed=i)
              for i, shape in enumerate(SHAPES) for d in DTYPES}
    save_file(arrays, tmp_path / "t.safetensors", metadata={"format": "np"})
    assert_same_arrays(sf_numpy.load_file(tmp_path / "t.safetensors"), arrays)
    safe_open = oracle("safetensors").safe_open
    with safe_open(tmp_path / "t.safetensors", framework="np") as f:
        assert f.metadata() == {"format": "np"}


def test_bfloat16_we_write_loads_in_safetensors_torch(tmp_path):
    torch = oracle("torch", reason="PyTorch is needed to read bfloat16 with safetensors")
    sf_torch = oracle("safetensors.torch", reason="safetensors is the reference format reader")
    values = np.concatenate([BF16_SPECIALS, np.random.default_rng(1).standard_normal(100).astype(np.float32)])
    save_file({"w": as_bfloat16(values.reshape(-1, 7))}, tmp_path / "t.safetensors")
    loaded = sf_torch.load_file(tmp_path / "t.safetensors")["w"]
    expected = torch.from_numpy(values.reshape(-1, 7)).to(torch.bfloat16)
    assert loaded.dtype == torch.bfloat16
    torch.testing.assert_close(loaded, expected, rtol=0, atol=0, equal_nan=True)


def test_files_from_safetensors_numpy_load_here(tmp_path):
    sf_numpy = oracle("safetensors.numpy", reason="safetensors is the reference format writer")
    arrays = {f"{np.dtype(d).name}{i}": sample(d, shape, seed=i)
              for i, shape in enumerate(SHAPES) for d in DTYPES}
    sf_numpy.save_file(arrays, str(tmp_path / "t.safetensors"), metadata={"a": "b"})
    assert_same_arrays(load_file(tmp_path / "t.safetensors"), arrays)
    assert_same_arrays(load_file(tmp_path / "t.safetensors", mmap=True), arrays)
    assert read_header(tmp_path / "t.safetensors")[1] == {"a": "b"}


def test_files_from_safetensors_torch_load_here(tmp_path):
    torch = oracle("torch", reason="PyTorch is needed to write bfloat16 with safetensors")
    sf_torch = oracle("safetensors.torch", reason="safetensors is the reference format writer")
    generator = torch.Generator().manual_seed(0)
    weights = torch.randn(17, 9, generator=generator) * 100
    tensors = {
        "bf16": weights.to(torch.bfloat16),
        "f16": weights.to(torch.float16),
        "f32": weights,
        "i64": torch.arange(-5, 5),
        "mask": weights > 0,
        "scalar_bf16": torch.tensor(3.140625, dtype=torch.bfloat16),
        "empty_bf16": torch.zeros(0, 4, dtype=torch.bfloat16),
    }
    sf_torch.save_file(tensors, str(tmp_path / "t.safetensors"))
    loaded = load_file(tmp_path / "t.safetensors")
    for name, tensor in tensors.items():
        expected = tensor.float().numpy() if tensor.dtype == torch.bfloat16 else tensor.numpy()
        assert loaded[name].dtype == expected.dtype, name
        assert loaded[name].shape == expected.shape, name
        np.testing.assert_array_equal(loaded[name], expected, err_msg=name)


# ------------------------------------------------------------------ bad save arguments


@pytest.mark.parametrize(
    "arrays, metadata, error, match",
    [
        ({1: np.zeros(1)}, None, TypeError, "names must be str"),
        ({"": np.zeros(1)}, None, ValueError, "non-empty"),
        ({"__metadata__": np.zeros(1)}, None, ValueError, "reserved"),
        ({"c": np.zeros(2, np.complex64)}, None, TypeError, "complex64"),
        ({"o": np.array([object()])}, None, TypeError, "object"),
        ({"s": np.array(["text"])}, None, TypeError, "cannot store"),
        ({"x": np.zeros(1)}, {"k": 1}, TypeError, "metadata"),
        ({"x": np.zeros(1)}, {2: "v"}, TypeError, "metadata"),
        ({"x": np.zeros(1)}, [("k", "v")], TypeError, "metadata"),
        ([("x", np.zeros(1))], None, TypeError, "mapping"),
    ],
)
def test_save_rejects_bad_arguments(tmp_path, arrays, metadata, error, match):
    with pytest.raises(error, match=match):
        save_file(arrays, tmp_path / "t.safetensors", metadata=metadata)
    assert list(tmp_path.iterdir()) == []


# --------------------------------------------------------------------- atomic writing


class RaisesOnConversion:
    def numpy(self):
        raise RuntimeError("device lost")


@pytest.fixture
def existing_file(tmp_path):
    path = tmp_path / "model.safetensors"
    save_file({"old": np.arange(10, dtype=np.int32)}, path)
    return path, path.read_bytes()


def assert_untouched(path, original):
    assert path.read_bytes() == original
    assert sorted(p.name for p in path.parent.iterdir()) == [path.name], "temporary file left behind"


@pytest.mark.parametrize(
    "bad_value, error",
    [(np.zeros(3, np.complex128), TypeError), (RaisesOnConversion(), RuntimeError)],
    ids=["unsupported_dtype", "raising_object"],
)
def test_failed_save_leaves_existing_file_untouched(existing_file, bad_value, error):
    path, original = existing_file
    with pytest.raises(error):
        save_file({"good": np.ones(1000, np.float32), "bad": bad_value}, path)
    assert_untouched(path, original)


@pytest.mark.parametrize("failing_call", ["fsync", "replace"])
def test_failure_mid_write_leaves_existing_file_untouched(existing_file, monkeypatch, failing_call):
    path, original = existing_file

    def fail(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(os, failing_call, fail)
    with pytest.raises(OSError, match="disk full"):
        save_file({"new": np.ones(1000, np.float32)}, path)
    monkeypatch.undo()
    assert_untouched(path, original)


def test_interrupt_mid_write_leaves_no_temporary_file(existing_file, monkeypatch):
    path, original = existing_file

    def interrupt(fd):
        raise KeyboardInterrupt

    monkeypatch.setattr(os, "fsync", interrupt)
    with pytest.raises(KeyboardInterrupt):
        save_file({"new": np.ones(10, np.float32)}, path)
    monkeypatch.undo()
    assert_untouched(path, original)


def test_save_replaces_an_existing_file(existing_file):
    path, _ = existing_file
    save_file({"new": np.ones(2, np.float32)}, str(path))
    assert list(load_file(path)) == ["new"]
    assert sorted(p.name for p in path.parent.iterdir()) == [path.name]


@pytest.mark.skipif(os.name != "posix", reason="POSIX permission bits")
def test_new_file_permissions_follow_the_umask(tmp_path):
    old_umask = os.umask(0o027)
    try:
        save_file({"x": np.zeros(1)}, tmp_path / "t.safetensors")
    finally:
        os.umask(old_umask)
    assert (tmp_path / "t.safetensors").stat().st_mode & 0o777 == 0o640


def test_save_into_a_missing_directory_fails_cleanly(tmp_path):
    with pytest.raises(FileNotFoundError):
        save_file({"x": np.zeros(1)}, tmp_path / "missing" / "t.safetensors")


# --------------------------------------------------------------------- malformed files

GOOD = {"a": entry("F32", [2], 0, 8)}
EIGHT_BYTES = b"\x00" * 8

# name -> (header, data, header_length override, expected words in the message)
MALFORMED = {
    "empty_file": (None, b"", None, "too short"),
    "shorter_than_8_bytes": (None, b"\x05\x00\x00", None, "too short"),
    "header_length_past_end": (GOOD, EIGHT_BYTES, 10_000, "past the end"),
    "header_length_absurd": (GOOD, EIGHT_BYTES, 2**62, "limit"),
    "header_not_utf8": (b'{"\xff\xfe": 1}', b"", None, "UTF-8"),
    "header_not_json": (b"{not json", b"", None, "JSON"),
    "header_with_nul_padding": (b"{}\x00\x00", b"", None, "JSON"),
    "header_is_a_list": ([], b"", None, "object"),
    "header_is_a_string": ("abc", b"", None, "object"),
    "entry_not_an_object": ({"a": [1, 2]}, b"", None, "entry must be an object"),
    "missing_dtype": ({"a": {"shape": [2], "data_offsets": [0, 8]}}, EIGHT_BYTES, None, "'dtype'"),
    "missing_shape": ({"a": {"dtype": "F32", "data_offsets": [0, 8]}}, EIGHT_BYTES, None, "'shape'"),
    "missing_offsets": ({"a": {"dtype": "F32", "shape": [2]}}, EIGHT_BYTES, None, "'data_offsets'"),
    "unknown_dtype": ({"a": entry("F8_E4M3", [8], 0, 8)}, EIGHT_BYTES, None, "unsupported dtype"),
    "dtype_not_a_string": ({"a": entry(4, [2], 0, 8)}, EIGHT_BYTES, None, "unsupported dtype"),
    "negative_shape": ({"a": entry("F32", [-2], 0, 8)}, EIGHT_BYTES, None, "shape"),
    "float_shape": ({"a": entry("F32", [2.0], 0, 8)}, EIGHT_BYTES, None, "shape"),
    "bool_shape": ({"a": entry("U8", [True], 0, 1)}, b"\x00", None, "shape"),
    "shape_not_a_list": ({"a": entry("F32", 2, 0, 8)}, EIGHT_BYTES, None, "shape"),
    "offsets_wrong_length": ({"a": {"dtype": "F32", "shape": [2], "data_offsets": [0]}}, EIGHT_BYTES, None,
                             "data_offsets"),
    "negative_offset": ({"a": entry("F32", [2], -8, 0)}, EIGHT_BYTES, None, "data_offsets"),
    "offsets_reversed": ({"a": entry("U8", [0], 8, 0)}, EIGHT_BYTES, None, "end before"),
    "offsets_not_matching_shape": ({"a": entry("F32", [3], 0, 8)}, EIGHT_BYTES, None, "needs 12"),
    "offsets_out_of_range": ({"a": entry("F32", [2], 0, 8)}, b"\x00" * 4, None, "truncated"),
    "data_truncated": ({"a": entry("F32", [1], 0, 4), "b": entry("F32", [2], 4, 12)}, EIGHT_BYTES, None,
                       "truncated"),
    "overlapping_offsets": ({"a": entry("F32", [2], 0, 8), "b": entry("F32", [1], 4, 8)}, EIGHT_BYTES, None,
                            "overlaps"),
    "gap_between_tensors": ({"a": entry("F32", [1], 0, 4), "b": entry("F32", [1], 8, 12)}, b"\x00" * 12, None,
                            "gap"),
    "gap_at_start": ({"a": entry("F32", [1], 4, 8)}, EIGHT_BYTES, None, "gap"),
    "trailing_bytes": ({"a": entry("F32", [1], 0, 4)}, EIGHT_BYTES, None, "trailing"),
    "metadata_not_strings": ({"__metadata__": {"k": 1}}, b"", None, "__metadata__"),
    "metadata_not_an_object": ({"__metadata__": ["k"]}, b"", None, "__metadata__"),
}


def write_malformed(directory, case):
    header, data, header_length, _ = MALFORMED[case]
    path = directory / f"{case}.safetensors"
    if header is None:
        path.write_bytes(data)
        return path
    return write_raw(path, header, data, header_length)


@pytest.mark.parametrize("case", MALFORMED)
def test_malformed_file_raises_naming_file_and_problem(tmp_path, case):
    path = write_malformed(tmp_path, case)
    expected_words = MALFORMED[case][3]
    for read in (load_file, read_header, lambda p: load_file(p, mmap=True)):
        with pytest.raises(SafetensorsError, match=expected_words) as info:
            read(path)
        assert str(path) in str(info.value)
        assert info.value.path == str(path)
        assert isinstance(info.value, ValueError)


@pytest.mark.parametrize("case", MALFORMED)
def test_reference_reader_also_rejects_each_malformed_file(tmp_path, case):
    # Keeps our checks no stricter and no looser than the format's own reader.
    sf_numpy = oracle("safetensors.numpy", reason="safetensors is the reference format reader")
    path = write_malformed(tmp_path, case)
    with pytest.raises(Exception):  # noqa: B017 (any error the reference reader raises will do)
        sf_numpy.load_file(str(path))


def test_duplicate_tensor_names_are_rejected(tmp_path):
    # Stricter than the reference reader, which keeps one of the two silently.
    one = b'{"dtype": "U8", "shape": [1], "data_offsets": [0, 1]}'
    text = b'{"a": ' + one + b', "a": ' + one + b"}"
    path = write_raw(tmp_path / "dup.safetensors", text, b"\x00")
    with pytest.raises(SafetensorsError, match="duplicate key 'a'"):
        load_file(path)


def test_lenient_cases_the_reference_reader_accepts(tmp_path):
    header = {
        "__metadata__": None,
        "b": entry("F32", [1], 4, 8),  # entries need not be listed in offset order
        "a": {**entry("F32", [1], 0, 4), "future_field": 1},  # unknown fields are ignored
        "z": entry("I64", [0, 3], 8, 8),
    }
    path = write_raw(tmp_path / "t.safetensors", b"  " + json.dumps(header).encode() + b"\t\n ",
                     struct.pack("<2f", 1.0, 2.0))
    tensors, metadata = read_header(path)
    assert list(tensors) == ["a", "b", "z"] and metadata == {}
    loaded = load_file(path)
    assert loaded["a"] == 1.0 and loaded["b"] == 2.0 and loaded["z"].shape == (0, 3)
