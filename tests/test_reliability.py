"""Regression tests for issue 16 ("nothing lost, nothing silently wrong"), case by case. The
crash-safety cases (1-3, 7) are in test_fault_injection.py; the loader fuzzing in
test_loader_fuzz.py."""

import json
import math
import os
import stat

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import minilm as ml
from minilm.cli import load_run, main
from minilm.models import GPT, BertConfig, BertModel, CheckpointError, GPTConfig, LSTMConfig, LSTMLanguageModel
from minilm.serialization import SafetensorsError, load_file, save_file
from minilm.tokenizers import BPETokenizer, CharTokenizer, Tokenizer, TokenizerFileError, WordPieceTokenizer


# -- 4. a custom split pattern never drops text ------------------------------------------------
def test_text_a_custom_pattern_does_not_match_is_kept():
    tokenizer = BPETokenizer.train("hello world hello world", 260, pattern=r"\p{L}+", verbose=False)
    assert tokenizer.decode(tokenizer.encode("hello, world! 123")) == "hello, world! 123"


def test_exported_tokenizer_json_encodes_like_hf_tokenizers(tmp_path):
    tokenizers = pytest.importorskip("tokenizers", reason="HF tokenizers reads the exported tokenizer.json")
    tokenizer = BPETokenizer.train("hello world, hello world! 12 34 " * 5, 280, pattern=r"\p{L}+|\d", verbose=False)
    tokenizer.save_tokenizer_json(tmp_path / "tokenizer.json")
    hf = tokenizers.Tokenizer.from_file(str(tmp_path / "tokenizer.json"))
    for text in ("hello, world! 123", "  a,b;; 9x ", "héllo wörld!!"):
        assert tokenizer.encode(text) == hf.encode(text).ids


PIECES = [r"\p{L}+", r"\p{N}", r"\p{N}+", r"\s+", r" ?\p{L}+", r"[a-e]+", r"[x]", r"\p{P}", r"ab|cd", r"\s+(?!\S)",
          r"[^\s\p{L}]+", r"z*", r"(?=a)", r"\b"]


@given(pieces=st.lists(st.sampled_from(PIECES), min_size=1, max_size=4),
       text=st.text(st.sampled_from(list("abcdexyz 19,!é\n\t.")), max_size=40))
def test_every_accepted_pattern_round_trips(pieces, text):
    pattern = "|".join(pieces)
    tokenizer = BPETokenizer.train("abc de xyz, 19! " * 3, 262, pattern=pattern, verbose=False)
    assert tokenizer.decode(tokenizer.encode(text)) == text


# -- 5. config options minilm does not implement are errors ------------------------------------
def _saved_with_changes(model, folder, config_changes):
    """`model` saved in the Hugging Face layout, its config.json then edited."""
    model.save_pretrained(folder)
    config = json.loads((folder / "config.json").read_text())
    config.update(config_changes)
    (folder / "config.json").write_text(json.dumps(config))
    return folder


def _gpt_folder(tmp_path, **config_changes):
    model = GPT(GPTConfig(vocab_size=30, n_layer=2, n_head=2, n_embd=8, block_size=16))
    return _saved_with_changes(model, tmp_path / "gpt", config_changes)


@pytest.mark.parametrize("option,value", [("scale_attn_weights", False), ("scale_attn_by_inverse_layer_idx", True),
                                          ("add_cross_attention", True), ("activation_function", "relu"),
                                          ("rotary_dim", 4)])
def test_gpt_refuses_options_it_does_not_implement(tmp_path, option, value):
    folder = _gpt_folder(tmp_path, **{option: value})
    with pytest.raises(CheckpointError, match=rf"config.json: .*{option}"):
        GPT.from_pretrained(folder)


def test_gpt_accepts_its_own_and_harmless_options(tmp_path):
    folder = _gpt_folder(tmp_path, transformers_version="4.0", torch_dtype="float32", summary_type="cls_index")
    assert GPT.from_pretrained(folder).config.n_layer == 2


def _bert_folder(tmp_path, **config_changes):
    model = BertModel(BertConfig(vocab_size=30, hidden_size=8, num_hidden_layers=2, num_attention_heads=2,
                                 intermediate_size=16, max_position_embeddings=16))
    return _saved_with_changes(model, tmp_path / "bert", config_changes)


@pytest.mark.parametrize("option,value", [("is_decoder", True), ("position_embedding_type", "relative_key"),
                                          ("add_cross_attention", True), ("new_option", 1)])
def test_bert_refuses_options_it_does_not_implement(tmp_path, option, value):
    with pytest.raises(CheckpointError, match=rf"config.json: .*{option}"):
        BertModel.from_pretrained(_bert_folder(tmp_path, **{option: value}))


# -- 6. sizes in config.json are checked against the weights before anything is allocated --------
@pytest.mark.parametrize("key,value,fragment", [("n_layer", 1_000_000_000, "hold 2 layers"),
                                                ("n_embd", 4096, "'wte.weight' has shape [30, 8]"),
                                                ("n_positions", 10**9, "wpe.weight")])
def test_gpt_sizes_are_bounded_by_the_weights(tmp_path, key, value, fragment):
    with pytest.raises(CheckpointError, match=rf"{key} {value}, but .*{fragment}".replace("[", r"\[")
                       .replace("]", r"\]")):
        GPT.from_pretrained(_gpt_folder(tmp_path, **{key: value}))


def test_bert_sizes_are_bounded_by_the_weights(tmp_path):
    with pytest.raises(CheckpointError, match="num_hidden_layers 1000000000, but the weights hold 2 layers"):
        BertModel.from_pretrained(_bert_folder(tmp_path, num_hidden_layers=1_000_000_000))


@pytest.fixture(scope="module")
def run_folder(tmp_path_factory):
    root = tmp_path_factory.mktemp("runs")
    data = root / "data.txt"
    data.write_text("The quick brown fox jumps over the lazy dog. " * 60)
    assert main(["train", "--data", str(data), "--steps", "2", "--eval-interval", "2", "--checkpoint-interval", "2",
                 "--vocab-size", "270", "--layers", "1", "--width", "16", "--heads", "2", "--block-size", "16",
                 "--batch-size", "2", "--samples", "0", "--out-dir", str(root), "--name", "run", "--quiet"]) == 0
    return root / "run"


def _edited_copy(run_folder, tmp_path, edit):
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(run_folder, copy)
    config = json.loads((copy / "config.json").read_text())
    edit(config)
    (copy / "config.json").write_text(json.dumps(config))
    return copy


def test_run_folder_sizes_are_bounded_by_the_weights(run_folder, tmp_path, capsys):
    copy = _edited_copy(run_folder, tmp_path, lambda c: c["model_config"].update(n_layer=1_000_000_000))
    assert main(["generate", str(copy), "--prompt", "The", "--max-new-tokens", "2"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "n_layer 1000000000, but the weights hold 1 layers" in err


def test_unknown_model_kind_in_a_run_folder_is_an_error(run_folder, tmp_path, capsys):
    copy = _edited_copy(run_folder, tmp_path, lambda c: c.update(model="transformer-xl"))
    assert main(["generate", str(copy), "--prompt", "The", "--max-new-tokens", "2"]) == 2
    assert "unknown \"model\" 'transformer-xl'" in capsys.readouterr().err


# -- 8. resume options ---------------------------------------------------------------------------
def test_resume_steps_equal_to_the_default_are_honoured(run_folder):
    from minilm.cli import build_parser
    from minilm.cli.runs import prepare_train_run
    from minilm.cli.train import resolve_run_options

    args = build_parser().parse_args(["train", "--resume", str(run_folder), "--steps", "600", "--quiet"])
    resolve_run_options(args)
    config = prepare_train_run(args)[0]
    assert config["training"]["max_steps"] == 600


@pytest.mark.parametrize("option", [["--layers", "3"], ["--width", "32"], ["--heads", "4"], ["--lr", "0.1"]])
def test_resume_refuses_options_it_would_ignore(run_folder, capsys, option):
    assert main(["train", "--resume", str(run_folder), *option]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and option[0] in err and "only --steps may change" in err


def test_an_edited_n_head_is_checked_against_the_trained_model(run_folder, tmp_path, capsys):
    copy = _edited_copy(run_folder, tmp_path, lambda c: c["model_config"].update(n_head=4))
    assert main(["train", "--resume", str(copy), "--steps", "3", "--quiet"]) == 2
    assert "n_head 4 (the checkpoint has 2)" in capsys.readouterr().err
    assert main(["generate", str(copy), "--prompt", "The", "--max-new-tokens", "2"]) == 2
    assert "n_head 4 (the run was trained with 2)" in capsys.readouterr().err


# -- 9. generation arguments -------------------------------------------------------------------
@pytest.fixture(scope="module")
def gpt():
    ml.manual_seed(0)
    return GPT(GPTConfig(vocab_size=12, n_layer=1, n_head=2, n_embd=8, block_size=32)).eval()


@pytest.mark.parametrize("kwargs,fragment", [
    ({"num_beams": 0}, "num_beams"), ({"repetition_penalty": math.nan}, "repetition_penalty"),
    ({"temperature": math.inf, "do_sample": True}, "temperature"), ({"top_k": 2.5}, "top_k"),
    ({"max_new_tokens": 3.0}, "max_new_tokens"), ({"num_beams": 13}, "larger than the vocabulary"),
])
def test_bad_generation_arguments_are_errors(gpt, kwargs, fragment):
    arguments = {"max_new_tokens": 3} | kwargs
    with pytest.raises(ValueError, match=fragment):
        gpt.generate(np.array([[1, 2]]), **arguments)


def test_float_prompt_ids_are_refused_not_truncated(gpt):
    with pytest.raises(ValueError, match="input_ids must hold integers, got dtype float64"):
        gpt.generate(np.array([[1.7, 2.0]]), max_new_tokens=2)


def test_float_attention_mask_gets_a_message_about_the_mask(gpt):
    with pytest.raises(ValueError, match="attention_mask must hold 0/1 integers or booleans"):
        gpt(np.array([[1, 2]]), attention_mask=np.ones((1, 2), dtype=np.float32))


def test_lstm_beam_search_allocates_as_it_goes():
    import tracemalloc

    ml.manual_seed(0)
    model = LSTMLanguageModel(LSTMConfig(vocab_size=10, n_embd=8, hidden_size=8, num_layers=1)).eval()
    bias = model.head_bias if model.head_bias is not None else model.head.bias
    with ml.no_grad():
        bias.data[...] = -30.0
        bias.data[3] = 30.0  # token 3 (the eos below) is all but certain: every beam ends at once
    tracemalloc.start()
    out = model.generate(np.array([[1, 2]]), max_new_tokens=10**12, num_beams=3, eos_token_id=3)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert out.tolist() == [[1, 2, 3]]
    assert peak < 50_000_000  # preallocating [1, 3, 10**12] int64 would ask for 24 TB


def test_decode_takes_numpy_integers_and_refuses_floats_and_bools(tmp_path):
    char = CharTokenizer.from_text("abc")
    assert char.decode([np.int64(0), np.int32(2)]) == "ac" == char.decode(np.array([0, 2]))
    vocab = tmp_path / "vocab.txt"
    vocab.write_text("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "hello", "world"]) + "\n")
    wordpiece = WordPieceTokenizer.from_pretrained(tmp_path)
    assert wordpiece.decode(np.array([5, 6])) == "hello world" == wordpiece.decode([np.int64(5), 6])
    bpe = BPETokenizer.train("hello world", 260, verbose=False)
    for bad in ([104.0], [True], np.array([104.0]), [np.float32(1)]):
        with pytest.raises(ValueError, match="token ids must be integers"):
            bpe.decode(bad)
        with pytest.raises(ValueError, match="token ids must be integers"):
            char.decode(bad)


# -- 10. loader errors of the right kind, naming the file ---------------------------------------
def _safetensors_with_header(path, header: bytes, data: bytes = b""):
    path.write_bytes(len(header).to_bytes(8, "little") + header + data)
    return path


@pytest.mark.parametrize("header,fragment", [
    (b"[" * 100_000 + b"]" * 100_000, "nested too deeply"),
    (b'{"x": {"dtype": ["F32"], "shape": [1], "data_offsets": [0, 4]}}', "unsupported dtype"),
    (b'{"x": {"dtype": "F32", "shape": [0, 9223372036854775808], "data_offsets": [0, 0]}}', "2\\*\\*63"),
    (b'{"x": {"dtype": "F32", "shape": [0, 4294967296, 4294967296], "data_offsets": [0, 0]}}', "2\\*\\*63"),
    (b'{"x": {"dtype": "F32", "shape": ' + json.dumps([1] * 64 + [0]).encode() + b', "data_offsets": [0, 0]}}',
     "65 dimensions"),
])
def test_malformed_safetensors_headers_are_safetensors_errors(tmp_path, header, fragment):
    path = _safetensors_with_header(tmp_path / "bad.safetensors", header)
    with pytest.raises(SafetensorsError, match=fragment) as info:
        load_file(path)
    assert "bad.safetensors" in str(info.value)


@pytest.mark.parametrize("shard", ["../outside.safetensors", "/tmp/outside.safetensors", "sub/../../x.safetensors"])
def test_shards_outside_the_folder_are_refused(tmp_path, shard):
    folder = _gpt_folder(tmp_path)
    save_file({"x": np.zeros(1, np.float32)}, tmp_path / "outside.safetensors")
    (folder / "model.safetensors").rename(folder / "model-00001.safetensors")
    (folder / "model.safetensors.index.json").write_text(json.dumps({"weight_map": {"x": shard}}))
    with pytest.raises(CheckpointError, match="is not a file name in"):
        GPT.from_pretrained(folder)


@pytest.mark.parametrize("config,fragment", [
    ({}, "missing 'vocab_size'"), ([], "must hold a JSON object"), ({"n_layer": "two"}, "n_layer"),
    ({"n_head": 0}, "n_head"), ({"n_head": 3}, "not divisible"),
])
def test_broken_hf_configs_are_checkpoint_errors(tmp_path, config, fragment):
    folder = _gpt_folder(tmp_path)
    base = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps(base | config if isinstance(config, dict) and config else config))
    with pytest.raises(CheckpointError, match=fragment):
        GPT.from_pretrained(folder)


@pytest.mark.parametrize("bad_id", [-1, 3.5, 2**40, True])
def test_vocab_json_ids_must_be_sane(tmp_path, bad_id):
    tokenizer = BPETokenizer.train("hello world", 258, verbose=False)
    tokenizer.save_vocab_and_merges(tmp_path)
    vocab = json.loads((tmp_path / "vocab.json").read_text())
    vocab[next(iter(vocab))] = bad_id
    (tmp_path / "vocab.json").write_text(json.dumps(vocab))
    with pytest.raises(TokenizerFileError, match="vocab.json"):
        BPETokenizer.from_pretrained(tmp_path)


def test_tokenizer_files_get_the_usual_permissions(tmp_path):
    umask = os.umask(0o022)
    try:
        BPETokenizer.train("hello world", 258, verbose=False).save(tmp_path / "tokenizer.txt")
        save_file({"x": np.zeros(1)}, tmp_path / "w.safetensors")
    finally:
        os.umask(umask)
    assert stat.S_IMODE((tmp_path / "tokenizer.txt").stat().st_mode) == 0o644
    assert stat.S_IMODE((tmp_path / "w.safetensors").stat().st_mode) == 0o644


def test_run_folder_loads(run_folder):
    config, tokenizer, model = load_run(run_folder)
    assert config["model"] == "gpt" and isinstance(tokenizer, Tokenizer) and model.config.n_layer == 1
