"""Sequence-to-sequence data: pairs.tsv, the built-in code summarization task, batches."""

import ast
import textwrap

import numpy as np
import pytest

from minilm.data import DataError
from minilm.seq2seq_data import (
    collate,
    encode_source,
    first_sentence,
    function_summaries,
    lead_baseline,
    read_pairs,
    read_pairs_jsonl,
    read_po,
    special_ids,
    stdlib_summarization,
    train_joint_bpe,
    write_pairs_jsonl,
)


def test_read_pairs(tmp_path):
    path = tmp_path / "pairs.tsv"
    path.write_text("Hello world\tBonjour le monde\n\n  A cat. \tUn chat.\n", encoding="utf-8")
    assert read_pairs(path) == [("Hello world", "Bonjour le monde"), ("A cat.", "Un chat.")]


@pytest.mark.parametrize("content, message", [
    ("one\ttwo\nno tab here\n", "pairs.tsv, line 2: expected one tab between source and target, found 0"),
    ("a\tb\tc\n", "pairs.tsv, line 1: expected one tab between source and target, found 2"),
    ("a\tb\n\n \tb\n", "pairs.tsv, line 3: the source is empty"),
    ("a\t \n", "pairs.tsv, line 1: the target is empty"),
    ("\n\n", "pairs.tsv: no source/target pairs"),
])
def test_read_pairs_errors_name_file_and_line(tmp_path, content, message):
    path = tmp_path / "pairs.tsv"
    path.write_text(content, encoding="utf-8")
    with pytest.raises(DataError, match=message):
        read_pairs(path)


def test_read_pairs_missing_and_binary(tmp_path):
    with pytest.raises(DataError, match="nope.tsv: no such file"):
        read_pairs(tmp_path / "nope.tsv")
    (tmp_path / "bin.tsv").write_bytes(b"a\t\xff\n")
    with pytest.raises(DataError, match="bin.tsv: not UTF-8"):
        read_pairs(tmp_path / "bin.tsv")


def test_pairs_jsonl_round_trip_keeps_tabs_and_newlines(tmp_path):
    pairs = [("def f(x):\n\treturn x\n", "Return x."), ("é \\n", "ü")]
    write_pairs_jsonl(tmp_path / "p.jsonl", pairs)
    assert read_pairs_jsonl(tmp_path / "p.jsonl") == pairs


def test_first_sentence():
    assert first_sentence("Return the sum.  More text.\n\nDetails.") == "Return the sum."
    assert first_sentence("Return the\n    sum of x. Then more") == "Return the sum of x."
    assert first_sentence("Is it? yes") == "Is it?"
    assert first_sentence("f(x) -> int") is None  # no sentence: not a summary
    assert first_sentence("Version 3.11 is used.") == "Version 3.11 is used."


def test_function_summaries_remove_the_docstring(tmp_path):
    code = textwrap.dedent('''
        class Box:
            def size(self, scale=1):
                """Return the size of the box.

                Longer explanation.
                """
                return self._size * scale

            def empty(self):
                """Only a docstring: no code to summarize."""

        def plain(x):
            return x
    ''')
    (tmp_path / "box.py").write_text(code, encoding="utf-8")
    (tmp_path / "broken.py").write_text("def f(:\n", encoding="utf-8")
    [pair] = function_summaries(tmp_path / "box.py", tmp_path)
    assert (pair.module, pair.function, pair.summary) == ("box.py", "size", "Return the size of the box.")
    assert pair.source == "def size(self, scale=1):\n    return self._size * scale"
    ast.parse(pair.source)  # still valid Python
    assert function_summaries(tmp_path / "broken.py", tmp_path) == []


@pytest.fixture(scope="module")
def builtin():
    return stdlib_summarization()


def test_builtin_task_is_deterministic_bounded_and_split_by_module(builtin):
    assert 2000 <= len(builtin.train) + len(builtin.val) <= 8000
    assert 0.08 <= len(builtin.val) / (len(builtin.train) + len(builtin.val)) <= 0.3
    top = {p.module.split("/")[0] for p in builtin.val}
    assert not top & {p.module.split("/")[0] for p in builtin.train}  # validation modules are unseen
    for pair in builtin.train[:300] + builtin.val[:300]:
        assert len(pair.source) <= 600 and 3 <= len(pair.summary.split()) <= 16
        assert pair.source.startswith(("def ", "async def ")) and '"""' + pair.summary not in pair.source
    again = stdlib_summarization()
    assert [p.summary for p in again.val] == [p.summary for p in builtin.val]
    assert "standard library" in builtin.description


def test_builtin_task_errors_on_a_folder_without_python(tmp_path):
    with pytest.raises(DataError, match="only 0 documented functions"):
        stdlib_summarization(tmp_path)
    with pytest.raises(DataError, match="does not exist"):
        stdlib_summarization(tmp_path / "nowhere")


def test_joint_bpe_and_collate():
    pairs = [("the cat sat on the mat", "le chat"), ("the dog", "le chien est sur le tapis")] * 5
    tokenizer = train_joint_bpe(pairs, 280)
    ids = special_ids(tokenizer)
    assert len({ids["bos"], ids["pad"], ids["eos"]}) == 3
    sources = [encode_source(tokenizer, s, 64) for s, _ in pairs[:2]]
    targets = [tokenizer.encode_ordinary(t) for _, t in pairs[:2]]
    assert tokenizer.decode(sources[0][:-1]) == "the cat sat on the mat" and sources[0][-1] == ids["eos"]
    assert len(encode_source(tokenizer, "the cat sat on the mat", 3)) == 3
    batch = collate(sources, targets, ids)
    b, s = batch["src_ids"].shape
    assert (b, s) == (2, max(map(len, sources)))
    assert batch["src_attention_mask"].sum(1).tolist() == [len(x) for x in sources]
    row = 0
    n = len(targets[row])
    assert batch["tgt_ids"][row, 0] == ids["bos"] and batch["tgt_ids"][row, 1 : n + 1].tolist() == targets[row]
    assert batch["labels"][row, :n].tolist() == targets[row] and batch["labels"][row, n] == ids["eos"]
    assert (batch["labels"][row, n + 1 :] == -100).all() and (batch["tgt_ids"][row, n + 1 :] == ids["pad"]).all()
    # the decoder input is the labels shifted right by one, wherever labels are set
    set_ = batch["labels"] != -100
    assert np.array_equal(batch["tgt_attention_mask"].astype(bool), set_)
    assert np.array_equal(batch["tgt_ids"][:, 1:][set_[:, 1:]], batch["labels"][:, :-1][set_[:, 1:]])


def test_lead_baseline():
    assert lead_baseline("def f(x):\n    return  x + 1", 3) == "def f(x): return"


PO = r'''# A catalog with every kind of entry.
msgid ""
msgstr ""
"Content-Type: text/plain; charset=UTF-8\n"
"Plural-Forms: nplurals=2; plural=(n > 1);\n"

#: models.py:10
msgid "Hello"
msgstr "Bonjour"

msgid ""
"A long message "
"on two lines with \"quotes\"."
msgstr "Un long message "
"sur deux lignes avec « guillemets »."

#, fuzzy
msgid "Guess"
msgstr "Devinette"

#, python-format
msgid "%(count)s item"
msgid_plural "%(count)s items"
msgstr[0] "%(count)s élément"
msgstr[1] "%(count)s éléments"

msgctxt "month"
msgid "May"
msgstr "mai"

msgid "Untranslated"
msgstr ""

#~ msgid "Old"
#~ msgstr "Ancien"
msgid "Tab\there"
msgstr "Tab\tici"
'''


def test_read_po(tmp_path):
    path = tmp_path / "django.po"
    path.write_text(PO, encoding="utf-8")
    assert read_po(path) == [
        ("Hello", "Bonjour"),
        ('A long message on two lines with "quotes".', "Un long message sur deux lignes avec « guillemets »."),
        ("%(count)s item", "%(count)s élément"),
        ("%(count)s items", "%(count)s éléments"),
        ("May", "mai"),
        ("Tab\there", "Tab\tici"),
    ]


@pytest.mark.parametrize("content, message", [
    ('msgid "a"\nmsgstr "b\n', r'bad.po, line 2: expected a quoted string'),
    ('msgid "a"\nmsgstr "b\\q"\n', r"bad.po, line 2: unknown escape"),
    ('msgid "a"\nmsgsrt "b"\n', r"bad.po, line 2: expected msgctxt, msgid, msgid_plural or msgstr"),
    ('"orphan"\n', r"bad.po, line 1: a string continues no msgid/msgstr"),
])
def test_read_po_errors_name_file_and_line(tmp_path, content, message):
    (tmp_path / "bad.po").write_text(content, encoding="utf-8")
    with pytest.raises(DataError, match=message):
        read_po(tmp_path / "bad.po")
