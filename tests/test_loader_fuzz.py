"""Seeded, bounded fuzzing of every file loader: each mutated file either loads or raises the
loader's own error type (naming the file), never a KeyError, TypeError, RecursionError ...

    safetensors                                   SafetensorsError
    Hugging Face folders (config.json + weights)  CheckpointError
    tokenizer files (vocab.json + merges.txt, tokenizer.json, tokenizer.txt, vocab.txt)
                                                  TokenizerFileError
"""

import json
import random
import shutil
from pathlib import Path

import numpy as np
import pytest

from minilm.models import GPT, BertConfig, BertModel, CheckpointError, GPTConfig
from minilm.serialization import SafetensorsError, load_file, save_file
from minilm.tokenizers import BPETokenizer, CharTokenizer, Tokenizer, TokenizerFileError, WordPieceTokenizer

WEIRD_VALUES = [None, True, False, 0, -1, 1, 2, 3, 7, 2**31, 2**63, 2**64 + 1, 2**70, -(2**63), 0.5, -2.5, 1e308,
                float("nan"), float("inf"), "", "x", "F32", "gelu", "../x", [], [1], [0, 2**64], ["F32"], {},
                {"a": 1}, {"0": "a"}, [[[[[]]]]], "[" * 5]


def _random_value(rng: random.Random, depth: int = 0):
    roll = rng.random()
    if roll < 0.6 or depth > 3:
        return rng.choice(WEIRD_VALUES)
    if roll < 0.8:
        return [_random_value(rng, depth + 1) for _ in range(rng.randrange(4))]
    return {rng.choice(["dtype", "shape", "data_offsets", "a", "0"]): _random_value(rng, depth + 1)
            for _ in range(rng.randrange(4))}


def _mutate_json(value, rng: random.Random):
    """A copy of the JSON value with one random part replaced, deleted or added."""
    if isinstance(value, dict) and value and rng.random() < 0.8:
        key = rng.choice(list(value))
        copy = dict(value)
        roll = rng.random()
        if roll < 0.2:
            del copy[key]
        elif roll < 0.3:
            copy[rng.choice(["extra", "__metadata__", key + "x"])] = _random_value(rng)
        else:
            copy[key] = _mutate_json(value[key], rng) if rng.random() < 0.5 else _random_value(rng)
        return copy
    if isinstance(value, list) and value and rng.random() < 0.8:
        copy = list(value)
        index = rng.randrange(len(copy))
        copy[index] = _mutate_json(copy[index], rng) if rng.random() < 0.5 else _random_value(rng)
        if rng.random() < 0.2:
            copy.pop(rng.randrange(len(copy)))
        return copy
    return _random_value(rng)


def _mutate_bytes(data: bytes, rng: random.Random) -> bytes:
    data = bytearray(data)
    for _ in range(rng.randrange(1, 4)):
        roll = rng.random()
        position = rng.randrange(len(data) + 1)
        if roll < 0.4 and data:
            data[min(position, len(data) - 1)] = rng.randrange(256)
        elif roll < 0.6:
            data[position:position] = bytes(rng.randrange(256) for _ in range(rng.randrange(1, 8)))
        elif roll < 0.8:
            del data[position:position + rng.randrange(1, 16)]
        else:
            del data[position:]
    return bytes(data)


def _expect_own_error(load, error_type, path_fragment: str):
    try:
        load()
    except error_type as error:
        assert path_fragment in str(error), f"the error does not name the file: {error}"


# -- safetensors ----------------------------------------------------------------------------------
def _safetensors_parts():
    arrays = {"a": np.arange(6, dtype=np.float32).reshape(2, 3), "b": np.array([1, 2], dtype=np.int64),
              "c": np.zeros((0, 4), dtype=np.float16)}
    return arrays


def test_fuzzed_safetensors_raise_only_safetensors_errors(tmp_path):
    rng = random.Random(16)
    path = tmp_path / "model.safetensors"
    save_file(_safetensors_parts(), path, metadata={"k": "v"})
    valid = path.read_bytes()
    header_length = int.from_bytes(valid[:8], "little")
    header = json.loads(valid[8:8 + header_length])
    data = valid[8 + header_length:]
    for _ in range(400):
        if rng.random() < 0.5:
            payload = _mutate_bytes(valid, rng)
        else:
            text = json.dumps(_mutate_json(header, rng)).encode()
            if rng.random() < 0.1:
                text = b"[" * rng.randrange(1000, 200_000) + text
            payload = len(text).to_bytes(8, "little") + text + data
        path.write_bytes(payload)
        _expect_own_error(lambda: load_file(path), SafetensorsError, "model.safetensors")


# -- Hugging Face folders -------------------------------------------------------------------------
@pytest.fixture(scope="module")
def hf_folders(tmp_path_factory):
    root = tmp_path_factory.mktemp("hf")
    GPT(GPTConfig(vocab_size=20, n_layer=2, n_head=2, n_embd=8, block_size=8)).save_pretrained(root / "gpt")
    BertModel(BertConfig(vocab_size=20, hidden_size=8, num_hidden_layers=2, num_attention_heads=2,
                         intermediate_size=16, max_position_embeddings=8)).save_pretrained(root / "bert")
    return root


@pytest.mark.parametrize("kind,model_class", [("gpt", GPT), ("bert", BertModel)])
def test_fuzzed_hf_folders_raise_only_checkpoint_errors(hf_folders, tmp_path, kind, model_class):
    rng = random.Random({"gpt": 1, "bert": 2}[kind])
    source = hf_folders / kind
    config = json.loads((source / "config.json").read_text())
    weights = (source / "model.safetensors").read_bytes()
    folder = tmp_path / kind
    for _ in range(60):
        if folder.exists():
            shutil.rmtree(folder)
        shutil.copytree(source, folder)
        roll = rng.random()
        if roll < 0.6:
            (folder / "config.json").write_text(json.dumps(_mutate_json(config, rng)))
        elif roll < 0.75:
            (folder / "config.json").write_bytes(_mutate_bytes((source / "config.json").read_bytes(), rng))
        elif roll < 0.9:
            (folder / "model.safetensors").write_bytes(_mutate_bytes(weights, rng))
        else:
            (folder / "model.safetensors").rename(folder / "shard.safetensors")
            index = {"weight_map": {"x": rng.choice(["shard.safetensors", "../gpt/model.safetensors", "/etc/passwd",
                                                     "missing.safetensors", 3, None])}}
            (folder / "model.safetensors.index.json").write_text(json.dumps(_mutate_json(index, rng)
                                                                            if rng.random() < 0.5 else index))
        _expect_own_error(lambda: model_class.from_pretrained(folder), CheckpointError, str(folder))


# -- tokenizer files ------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def tokenizer_files(tmp_path_factory):
    root = tmp_path_factory.mktemp("tokenizers")
    text = "hello world, hello tokenizer! 123 " * 4
    bpe = BPETokenizer.train(text, 270, special_tokens=("<|endoftext|>",), verbose=False)
    (root / "pair").mkdir()
    bpe.save_vocab_and_merges(root / "pair")
    (root / "json").mkdir()
    bpe.save_tokenizer_json(root / "json" / "tokenizer.json")
    bpe.save(root / "bpe.txt")
    CharTokenizer.from_text(text).save(root / "char.txt")
    (root / "wordpiece").mkdir()
    (root / "wordpiece" / "vocab.txt").write_text("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "hello",
                                                             "##s", "world"]) + "\n")
    (root / "wordpiece" / "tokenizer_config.json").write_text(json.dumps({"do_lower_case": True}))
    WordPieceTokenizer.from_pretrained(root / "wordpiece").save(root / "wordpiece.txt")
    return root


def _fuzz_file(path: Path, rng: random.Random, as_json: bool) -> None:
    original = path.read_bytes()
    if as_json and rng.random() < 0.6:
        path.write_text(json.dumps(_mutate_json(json.loads(original), rng)))
    else:
        path.write_bytes(_mutate_bytes(original, rng))


CASES = [  # (folder or file under the fixture, files to mutate (name, is JSON), loader)
    ("pair", [("vocab.json", True), ("merges.txt", False)], BPETokenizer.from_pretrained),
    ("json", [("tokenizer.json", True)], BPETokenizer.from_pretrained),
    ("bpe.txt", [("", False)], Tokenizer.load),
    ("char.txt", [("", False)], Tokenizer.load),
    ("wordpiece.txt", [("", False)], Tokenizer.load),
    ("wordpiece", [("vocab.txt", False), ("tokenizer_config.json", True)], WordPieceTokenizer.from_pretrained),
]


@pytest.mark.parametrize("name,files,load", CASES, ids=[case[0] for case in CASES])
def test_fuzzed_tokenizer_files_raise_only_tokenizer_file_errors(tokenizer_files, tmp_path, name, files, load):
    rng = random.Random(len(name) * 7919)
    source, target = tokenizer_files / name, tmp_path / name
    for _ in range(120):
        if target.is_dir():
            shutil.rmtree(target)
        (shutil.copytree if source.is_dir() else shutil.copy)(source, target)
        file_name, as_json = rng.choice(files)
        _fuzz_file(target / file_name if file_name else target, rng, as_json)
        _expect_own_error(lambda: load(target), TokenizerFileError, str(tmp_path))
