"""The GGUF reader: tensors of every supported type against the `gguf` package's own
dequantizer, metadata of every value type, malformed files, and the real SmolLM2 file."""

import struct

import numpy as np
import pytest

from minilm.gguf import (
    SUPPORTED_TENSOR_TYPES,
    GGUFError,
    GGUFFile,
    reverse_llama_qk_permutation,
)

from .helpers import oracle, smollm2_gguf_path

# --------------------------------------------------- a small GGUF writer for tests
#
# Written here from the format description so that the malformed-file tests need no
# other package; files from the `gguf` package's writer are tested separately.

U8, I8, U16, I16, U32, I32, F32, BOOL, STRING, ARRAY, U64, I64, F64 = 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12
FORMATS = {U8: "<B", I8: "<b", U16: "<H", I16: "<h", U32: "<I", I32: "<i", F32: "<f", BOOL: "<?",
           U64: "<Q", I64: "<q", F64: "<d"}


def pack_string(text):
    raw = text.encode("utf-8") if isinstance(text, str) else text
    return struct.pack("<Q", len(raw)) + raw


def pack_value(value_type, value):
    if value_type == STRING:
        return pack_string(value)
    if value_type == ARRAY:
        element_type, items = value
        return struct.pack("<IQ", element_type, len(items)) + b"".join(pack_value(element_type, v) for v in items)
    return struct.pack(FORMATS[value_type], value)


def build_gguf(metadata=(), tensors=(), version=3, alignment=32):
    """metadata: (key, type, value) triples; tensors: (name, numpy shape, ggml type code, bytes)."""
    out = b"GGUF" + struct.pack("<IQQ", version, len(tensors), len(metadata))
    for key, value_type, value in metadata:
        out += pack_string(key) + struct.pack("<I", value_type) + pack_value(value_type, value)
    offset, data = 0, b""
    for name, shape, type_code, raw in tensors:
        out += pack_string(name) + struct.pack("<I", len(shape)) + struct.pack(f"<{len(shape)}Q", *reversed(shape))
        out += struct.pack("<IQ", type_code, offset)
        padded = raw + b"\x00" * (-len(raw) % alignment)
        data += padded
        offset += len(padded)
    out += b"\x00" * (-len(out) % alignment)
    return out + data


def small_file_bytes():
    """A valid file with a bit of everything, for the malformed-file tests."""
    metadata = [
        ("general.architecture", STRING, "llama"),
        ("count", U32, 7),
        ("flag", BOOL, True),
        ("names", ARRAY, (STRING, ["a", "bc", ""])),
        ("nested", ARRAY, (ARRAY, [(I32, [1, 2]), (I32, [3])])),
        ("scores", ARRAY, (F32, [0.5, -1.0])),
    ]
    q8_block = struct.pack("<e", 0.5) + bytes(range(32))
    tensors = [
        ("weight", (2, 3), 0, np.arange(6, dtype="<f4").tobytes()),
        ("quantized", (1, 32), 8, q8_block),
    ]
    return build_gguf(metadata, tensors)


def write(tmp_path, data, name="t.gguf"):
    path = tmp_path / name
    path.write_bytes(data)
    return path


# ---------------------------------------------------------------------- basics


def test_small_file_reads(tmp_path):
    with GGUFFile(write(tmp_path, small_file_bytes())) as f:
        assert f.version == 3
        assert f.metadata == {
            "general.architecture": "llama",
            "count": 7,
            "flag": True,
            "names": ["a", "bc", ""],
            "nested": [[1, 2], [3]],
            "scores": [0.5, -1.0],
        }
        assert f.tensor_infos["weight"].shape == (2, 3) and f.tensor_infos["weight"].type == "F32"
        np.testing.assert_array_equal(f.tensor("weight"), np.arange(6, dtype=np.float32).reshape(2, 3))
        expected = 0.5 * np.arange(32, dtype=np.int8).astype(np.float32)
        np.testing.assert_array_equal(f.tensor("quantized"), expected.reshape(1, 32))
        raw = f.raw("quantized")
        assert raw.dtype == np.uint8 and raw.nbytes == 34 and not raw.flags.writeable
        with pytest.raises(KeyError, match="nope"):
            f.tensor("nope")


def test_version_2_and_custom_alignment(tmp_path):
    data = build_gguf([("general.alignment", U32, 64)], [("x", (4,), 0, np.ones(4, "<f4").tobytes())],
                      version=2, alignment=64)
    with GGUFFile(write(tmp_path, data)) as f:
        assert f.version == 2 and f.alignment == 64 and f.data_offset % 64 == 0
        np.testing.assert_array_equal(f.tensor("x"), np.ones(4, np.float32))


def test_tensor_is_a_fresh_writable_array_that_survives_close(tmp_path):
    f = GGUFFile(write(tmp_path, small_file_bytes()))
    x = f.tensor("weight")
    f.close()
    x[0, 0] = 42.0
    assert x.flags.writeable and x.dtype == np.float32
    with pytest.raises(ValueError, match="closed"):
        f.tensor("weight")


def test_unsupported_tensor_type_is_a_clear_error(tmp_path):
    data = build_gguf(tensors=[("q2", (256,), 10, b"\x00" * 84)])  # Q2_K: readable, not decodable
    with GGUFFile(write(tmp_path, data)) as f:
        assert f.tensor_infos["q2"].type == "Q2_K" and f.raw("q2").nbytes == 84
        with pytest.raises(GGUFError, match="Q2_K.*supported: F32"):
            f.tensor("q2")


# ------------------------------------------- files written by the gguf package


@pytest.fixture(scope="module")
def gguf():
    return oracle("gguf", reason="the gguf package's writer and dequantizer are the oracle")


PACKAGE_QUANTIZED = ["F16", "BF16", "Q8_0", "Q4_0", "Q4_1", "Q5_0", "Q5_1"]
K_QUANTS = ["Q4_K", "Q5_K", "Q6_K"]


def test_every_supported_type_is_covered():
    assert set(SUPPORTED_TENSOR_TYPES) == {"F32", "F64", *PACKAGE_QUANTIZED, *K_QUANTS}


def random_k_quant_blocks(gguf, type_name, n_blocks, rng):
    """Random block bytes whose float16 scale fields are finite (random bits can be inf/NaN)."""
    qtype = gguf.GGMLQuantizationType[type_name]
    _, block_bytes = gguf.GGML_QUANT_SIZES[qtype]
    blocks = rng.integers(0, 256, (n_blocks, block_bytes), dtype=np.uint8)
    # where the float16 scales lie: Q4_K/Q5_K start with d and dmin, Q6_K ends with d
    scale_fields = [slice(0, 2), slice(2, 4)] if type_name != "Q6_K" else [slice(block_bytes - 2, block_bytes)]
    for field in scale_fields:
        blocks[:, field] = np.ascontiguousarray(
            rng.uniform(-2.0, 2.0, n_blocks).astype("<f2")).view(np.uint8).reshape(n_blocks, 2)
    return blocks


@pytest.fixture(scope="module")
def package_written_file(gguf, tmp_path_factory):
    """One file from gguf.GGUFWriter holding a tensor of every supported type.

    Returns (path, {name: (type name, expected float32 from gguf.quants.dequantize)}).
    """
    rng = np.random.default_rng(0)
    path = tmp_path_factory.mktemp("gguf") / "types.gguf"
    writer = gguf.GGUFWriter(str(path), "llama")
    expected = {}
    values = (rng.standard_normal((6, 512)) * np.logspace(-3, 1, 512)).astype(np.float32)
    writer.add_tensor("f32", values)
    expected["f32"] = ("F32", values)
    for type_name in PACKAGE_QUANTIZED:
        qtype = gguf.GGMLQuantizationType[type_name]
        stored = gguf.quants.quantize(values, qtype)
        writer.add_tensor(type_name.lower(), stored, raw_dtype=qtype)
        expected[type_name.lower()] = (type_name, gguf.quants.dequantize(stored, qtype))
    for type_name in K_QUANTS:
        qtype = gguf.GGMLQuantizationType[type_name]
        stored = random_k_quant_blocks(gguf, type_name, 3 * 4, rng).reshape(3, -1)  # 3 rows of 1024 values
        writer.add_tensor(type_name.lower(), stored, raw_dtype=qtype)
        expected[type_name.lower()] = (type_name, gguf.quants.dequantize(stored, qtype))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path, expected


@pytest.mark.parametrize("name", ["f32", *(t.lower() for t in PACKAGE_QUANTIZED + K_QUANTS)])
def test_dequantizes_exactly_as_the_gguf_package(package_written_file, name):
    path, expected = package_written_file
    type_name, values = expected[name]
    with GGUFFile(path) as f:
        info = f.tensor_infos[name]
        assert info.type == type_name and info.shape == values.shape
        actual = f.tensor(name)
    assert actual.dtype == np.float32
    assert np.isfinite(actual).all()
    np.testing.assert_array_equal(actual, values)


def test_metadata_of_every_value_type_round_trips(gguf, tmp_path):
    T = gguf.GGUFValueType
    entries = {
        "u8": (255, T.UINT8), "i8": (-128, T.INT8), "u16": (65535, T.UINT16), "i16": (-32768, T.INT16),
        "u32": (2**32 - 1, T.UINT32), "i32": (-(2**31), T.INT32), "u64": (2**64 - 1, T.UINT64),
        "i64": (-(2**63), T.INT64), "f32": (0.25, T.FLOAT32), "f64": (1 / 3, T.FLOAT64),
        "yes": (True, T.BOOL), "no": (False, T.BOOL), "text": ("héllo, 世界 😀\n", T.STRING), "empty": ("", T.STRING),
    }
    path = tmp_path / "meta.gguf"
    writer = gguf.GGUFWriter(str(path), "llama")
    for key, (value, value_type) in entries.items():
        writer.add_key_value(key, value, value_type)
    arrays = {
        "ints": ([3, -1, 4], T.INT32), "floats": ([0.5, 1.5], T.FLOAT32), "bools": ([True, False], T.BOOL),
        "strings": (["a", "ü", ""], T.STRING), "u64s": ([2**64 - 1, 0], T.UINT64), "f64s": ([1e300, -2.5], T.FLOAT64),
        "u8s": ([0, 255], T.UINT8), "i16s": ([-5, 5], T.INT16),
    }
    for key, (value, sub_type) in arrays.items():
        writer.add_key_value(key, value, T.ARRAY, sub_type=sub_type)
    writer.add_array("nested", [[1, 2], [3]])
    writer.add_array("nested_strings", [["x"], ["y", "z"]])
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()

    with GGUFFile(path) as f:
        metadata = f.metadata
        assert metadata["general.architecture"] == "llama"
        for key, (value, _) in {**entries, **arrays}.items():
            assert metadata[key] == value, key
            assert type(metadata[key]) is type(value), key
        assert metadata["nested"] == [[1, 2], [3]]
        assert metadata["nested_strings"] == [["x"], ["y", "z"]]
        assert f.tensor_infos == {}


# ------------------------------------------------------------------ malformed files


def header(version=3, n_tensors=0, n_metadata=0):
    return b"GGUF" + struct.pack("<IQQ", version, n_tensors, n_metadata)


def kv(key, value_type, payload):
    return pack_string(key) + struct.pack("<I", value_type) + payload


# name -> (file bytes, words the message must contain)
MALFORMED = {
    "empty": (b"", "empty"),
    "short_magic": (b"GG", "magic number"),
    "wrong_magic": (b"GGML" + bytes(20), "magic number"),
    "no_version": (b"GGUF\x03", "version"),
    "version_1": (header(version=1), "version 1"),
    "version_99": (header(version=99), "version 99"),
    "big_endian": (b"GGUF" + struct.pack(">IQQ", 3, 0, 0), "big-endian"),
    "huge_tensor_count": (header(n_tensors=2**63), "truncated"),
    "huge_metadata_count": (header(n_metadata=2**40), "truncated"),
    "huge_key_length": (header(n_metadata=1) + struct.pack("<Q", 2**62) + bytes(16), "key of metadata entry 0"),
    "key_not_utf8": (header(n_metadata=1) + kv(b"\xff\xfe", U8, b"\x01"), "UTF-8"),
    "unknown_value_type": (header(n_metadata=1) + kv("k", 13, b"\x00" * 8), "unknown value type 13"),
    "bool_not_0_or_1": (header(n_metadata=1) + kv("k", BOOL, b"\x02"), "BOOL"),
    "value_truncated": (header(n_metadata=1) + kv("k", U64, b"\x00\x00"), "metadata 'k'"),
    "string_value_too_long": (header(n_metadata=1) + kv("k", STRING, struct.pack("<Q", 2**60)), "metadata 'k'"),
    "huge_array": (header(n_metadata=1) + kv("k", ARRAY, struct.pack("<IQ", U64, 2**61)), "metadata 'k'"),
    "huge_string_array": (header(n_metadata=1) + kv("k", ARRAY, struct.pack("<IQ", STRING, 2**40)), "metadata 'k'"),
    "huge_bool_array": (header(n_metadata=1) + kv("k", ARRAY, struct.pack("<IQ", BOOL, 2**40)), "metadata 'k'"),
    "array_of_unknown_type": (header(n_metadata=1) + kv("k", ARRAY, struct.pack("<IQ", 77, 1) + bytes(8)), "unknown"),
    "deep_nesting": (header(n_metadata=1) + kv("k", ARRAY, struct.pack("<IQ", ARRAY, 1) * 5000), "nests arrays"),
    "duplicate_key": (header(n_metadata=2) + kv("k", U8, b"\x01") + kv("k", U8, b"\x02"), "appears twice"),
    "bad_alignment": (header(n_metadata=1) + kv("general.alignment", U32, struct.pack("<I", 24)), "power of two"),
    "alignment_zero": (header(n_metadata=1) + kv("general.alignment", U32, struct.pack("<I", 0)), "power of two"),
    "alignment_a_string": (header(n_metadata=1) + kv("general.alignment", STRING, pack_string("32")), "alignment"),
    "too_many_dims": (header(n_tensors=1) + pack_string("t") + struct.pack("<I", 5) + bytes(60), "dimensions"),
    "huge_dims": (header(n_tensors=1) + pack_string("t") + struct.pack("<I2QIQ", 2, 2**40, 2**40, 0, 0) + bytes(32),
                  "runs past the end"),
    "unknown_tensor_type": (build_gguf(tensors=[("t", (1,), 99, b"\x00" * 4)]), "unknown type 99"),
    "row_not_whole_blocks": (build_gguf(tensors=[("t", (2, 16), 8, b"\x00" * 34)]), "block size 32"),
    "offset_not_aligned": (header(n_tensors=1) + pack_string("t") + struct.pack("<I1QIQ", 1, 1, 0, 4) + bytes(64),
                           "not a multiple of the alignment"),
    "data_truncated": (build_gguf(tensors=[("t", (64,), 0, b"\x00" * 256)])[:-100], "runs past the end"),
    "duplicate_tensor": (build_gguf(tensors=[("t", (1,), 0, b"\x00" * 4), ("t", (1,), 0, b"\x00" * 4)]),
                         "appears twice"),
}


@pytest.mark.parametrize("case", MALFORMED)
def test_malformed_file_raises_naming_file_and_problem(tmp_path, case):
    data, words = MALFORMED[case]
    path = write(tmp_path, data, f"{case}.gguf")
    with pytest.raises(GGUFError, match=words) as info:
        GGUFFile(path)
    assert str(path) in str(info.value) and info.value.path == str(path)
    assert isinstance(info.value, ValueError)


@pytest.mark.parametrize("case", ["data_truncated", "huge_dims", "unknown_tensor_type", "duplicate_key"])
def test_reference_reader_also_rejects(gguf, tmp_path, case):
    # Keeps our checks in line with the format's own Python reader.
    path = write(tmp_path, MALFORMED[case][0])
    with pytest.raises((ValueError, KeyError)):  # the errors gguf-py raises for these
        gguf.GGUFReader(str(path))


def mutations(data, rng, count):
    """Truncations, bit flips, and huge counts/lengths written over 8-byte fields."""
    for _ in range(count):
        kind = rng.integers(3)
        if kind == 0:
            yield data[: rng.integers(len(data))]
        elif kind == 1:
            mutated = bytearray(data)
            for position in rng.integers(0, len(data), rng.integers(1, 4)):
                mutated[position] ^= 1 << rng.integers(8)
            yield bytes(mutated)
        else:
            mutated = bytearray(data)
            position = int(rng.integers(0, len(data) - 8))
            choices = [2**63, 2**64 - 1, 2**32, 2**40 + 3, len(data) + 1]
            huge = choices[rng.integers(len(choices))]
            mutated[position : position + 8] = huge.to_bytes(8, "little")
            yield bytes(mutated)


def test_fuzzed_files_only_ever_raise_gguf_error(tmp_path):
    data = small_file_bytes()
    rng = np.random.default_rng(1234)
    path = tmp_path / "fuzz.gguf"
    outcomes = {"read": 0, "rejected": 0}
    for mutated in mutations(data, rng, 600):
        path.write_bytes(mutated)
        try:
            with GGUFFile(path) as f:
                for name in f.tensor_infos:
                    if f.tensor_infos[name].type in SUPPORTED_TENSOR_TYPES:
                        f.tensor(name)
            outcomes["read"] += 1
        except GGUFError as error:
            assert str(path) in str(error)
            outcomes["rejected"] += 1
    # Both outcomes happen, so the fuzzing reaches past the first check.
    assert outcomes["read"] > 20 and outcomes["rejected"] > 100, outcomes


# --------------------------------------------------------- the Q/K row permutation


def llama_cpp_permutation(weight, num_heads):
    """The converter's reordering, written from its description: in each head, row i
    of the first half and row i of the second half become rows 2i and 2i + 1."""
    head_dim = weight.shape[0] // num_heads
    out = np.empty_like(weight)
    for head in range(num_heads):
        base = head * head_dim
        for i in range(head_dim // 2):
            out[base + 2 * i] = weight[base + i]
            out[base + 2 * i + 1] = weight[base + head_dim // 2 + i]
    return out


@pytest.mark.parametrize("shape, heads", [((24, 5), 3), ((16,), 2), ((8, 3), 1)])
def test_reverse_qk_permutation_undoes_llama_cpp_order(shape, heads):
    weight = np.arange(np.prod(shape), dtype=np.float32).reshape(shape)
    np.testing.assert_array_equal(reverse_llama_qk_permutation(llama_cpp_permutation(weight, heads), heads), weight)


def test_reverse_qk_permutation_checks_the_head_split():
    with pytest.raises(ValueError, match="10 rows into 4 heads"):
        reverse_llama_qk_permutation(np.zeros((10, 3)), 4)


# ------------------------------------------------------------ the real SmolLM2 file


@pytest.fixture(scope="module")
def smollm2():
    with GGUFFile(smollm2_gguf_path()) as f:
        yield f


def test_smollm2_header(smollm2):
    metadata = smollm2.metadata
    assert metadata["general.architecture"] == "llama"
    assert metadata["llama.block_count"] == 30 and metadata["llama.embedding_length"] == 576
    assert metadata["llama.attention.head_count"] == 9 and metadata["llama.attention.head_count_kv"] == 3
    assert len(metadata["tokenizer.ggml.tokens"]) == 49152
    types = {info.type for info in smollm2.tensor_infos.values()}
    assert types == {"F32", "Q4_1", "Q8_0"}
    assert smollm2.tensor_infos["blk.0.attn_k.weight"].shape == (192, 576)


def test_smollm2_tensors_match_the_gguf_package(gguf, smollm2):
    reader = gguf.GGUFReader(str(smollm2.path))
    checked = 0
    for tensor in reader.tensors:
        if tensor.name.startswith(("blk.0.", "blk.29.", "token_embd", "output_norm")):
            expected = gguf.quants.dequantize(tensor.data, tensor.tensor_type)
            np.testing.assert_array_equal(smollm2.tensor(tensor.name), expected.reshape(smollm2.tensor_infos[tensor.name].shape))
            checked += 1
    assert checked == 20


def test_smollm2_weights_match_transformers_loading(smollm2):
    """transformers undoes the Q/K permutation itself when it loads a GGUF; its weights
    must equal ours after `reverse_llama_qk_permutation`."""
    oracle("torch", reason="transformers needs torch")
    transformers = oracle("transformers", reason="transformers' GGUF loading is the oracle")
    path = smollm2_gguf_path()
    model = transformers.AutoModelForCausalLM.from_pretrained(str(path.parent), gguf_file=path.name)
    state = {name: value.detach().float().numpy() for name, value in model.state_dict().items()}
    heads, kv_heads = 9, 3
    for layer in (0, 17):
        prefix = f"model.layers.{layer}."
        q = reverse_llama_qk_permutation(smollm2.tensor(f"blk.{layer}.attn_q.weight"), heads)
        k = reverse_llama_qk_permutation(smollm2.tensor(f"blk.{layer}.attn_k.weight"), kv_heads)
        np.testing.assert_array_equal(q, state[prefix + "self_attn.q_proj.weight"])
        np.testing.assert_array_equal(k, state[prefix + "self_attn.k_proj.weight"])
        np.testing.assert_array_equal(smollm2.tensor(f"blk.{layer}.attn_v.weight"), state[prefix + "self_attn.v_proj.weight"])
        np.testing.assert_array_equal(smollm2.tensor(f"blk.{layer}.ffn_down.weight"), state[prefix + "mlp.down_proj.weight"])
        np.testing.assert_array_equal(smollm2.tensor(f"blk.{layer}.attn_norm.weight"), state[prefix + "input_layernorm.weight"])
    np.testing.assert_array_equal(smollm2.tensor("token_embd.weight"), state["model.embed_tokens.weight"])
