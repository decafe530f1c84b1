"""BLEU against sacreBLEU and ROUGE-L against rouge-score, on fixed and generated corpora."""

import pytest
from hypothesis import given
from hypothesis import strategies as st

from minilm.metrics import (
    bleu_from_counts,
    corpus_bleu,
    corpus_rouge_l,
    lcs_length,
    rouge_l,
    rouge_tokenize,
    tokenize_13a,
)

sacrebleu = pytest.importorskip("sacrebleu", reason="sacreBLEU is the oracle for BLEU")

# Words chosen to exercise every 13a rule: punctuation glued to words, numbers with periods,
# commas and hyphens, entities, apostrophes, case, non-ASCII letters.
WORDS = ["the", "The", "cat", "sat", "on", "mat", "a", "dog", "3.14", "1,000", "1990-2000", "x-ray", "end.",
         "(note)", "don't", "&amp;", "&quot;hi&quot;", "é", "naïve", "42", "A.B.", "e.g.,", "C++", "$5", "?!",
         "wait...", "path/to", "[1]", "{k:v}", "50%", "'quoted'", "-", "--", ".", ",", "<skipped>", "U.S.A"]

sentence = st.lists(st.sampled_from(WORDS), min_size=0, max_size=14).map(" ".join)


@st.composite
def corpus(draw):
    """(hypotheses, reference streams): hypotheses are references edited (words dropped,
    swapped or replaced) so that n-grams match partly; some streams miss a reference."""
    size = draw(st.integers(1, 6))
    streams = draw(st.integers(1, 3))
    references = [[draw(sentence) for _ in range(size)] for _ in range(streams)]
    hypotheses = []
    for i in range(size):
        words = references[0][i].split()
        edits = draw(st.lists(st.tuples(st.integers(0, 20), st.sampled_from(WORDS), st.booleans()), max_size=4))
        for position, word, insert in edits:
            if insert or not words:
                words.insert(position % (len(words) + 1), word)
            else:
                del words[position % len(words)]
        hypotheses.append(draw(st.sampled_from([" ".join(words), " ".join(words) + "  ", draw(sentence)])))
    for stream in references[1:]:  # a later stream may lack some references
        for i in range(size):
            if draw(st.booleans()) and draw(st.booleans()):
                stream[i] = None
    return hypotheses, references


def oracle_bleu(hypotheses, references, **options):
    return sacrebleu.corpus_bleu(hypotheses, references, **options)


@given(st.text(alphabet=st.sampled_from(list("ab1.,-&;:/'\"()?! \n<>skiped")), max_size=40))
def test_13a_tokens_match_sacrebleu(line):
    from sacrebleu.tokenizers.tokenizer_13a import Tokenizer13a

    assert " ".join(tokenize_13a(line)) == Tokenizer13a()(line)


@given(corpus())
def test_corpus_bleu_matches_sacrebleu(data):
    hypotheses, references = data
    ours = corpus_bleu(hypotheses, references)
    theirs = oracle_bleu(hypotheses, references)
    assert ours.score == pytest.approx(theirs.score, abs=1e-6)
    assert list(ours.counts) == list(theirs.counts) and list(ours.totals) == list(theirs.totals)
    assert (ours.hyp_len, ours.ref_len) == (theirs.sys_len, theirs.ref_len)
    assert ours.brevity_penalty == pytest.approx(theirs.bp, abs=1e-12)
    assert list(ours.precisions) == pytest.approx(list(theirs.precisions), abs=1e-9)


@given(corpus())
def test_bleu_options_match_sacrebleu(data):
    hypotheses, references = data
    for options, theirs_options in [({"lowercase": True}, {"lowercase": True}),
                                    ({"smooth": "none"}, {"smooth_method": "none"}),
                                    ({"effective_order": True}, {"use_effective_order": True})]:
        ours = corpus_bleu(hypotheses, references, **options).score
        assert ours == pytest.approx(oracle_bleu(hypotheses, references, **theirs_options).score, abs=1e-6), options


@pytest.mark.parametrize("hypotheses, references", [
    (["The cat sat on the mat."], [["The cat sat on the mat."]]),  # perfect: 100
    (["the cat"], [["the cat sat on the mat"]]),  # no 3- or 4-grams: 0 without effective order
    ([""], [["a reference"]]),  # empty hypothesis
    (["", ""], [["", "x"]]),  # empty everything
    (["It is a guide to action which ensures that the military always obeys the commands of the party.",
      "he read the book because he was interested in world history"],
     [["It is a guide to action that ensures that the military will forever heed Party commands.",
       "he was interested in world history because he read the book"],
      ["It is the guiding principle which guarantees the military forces always being under the command of the Party.",
       None]]),
    (["3.14 is pi, 1,000 is a thousand; 1990-2000 was a decade."], [["3.14 is pi , 1,000 is a thousand ; 1990 - 2000."]]),
])
def test_bleu_fixed_cases(hypotheses, references):
    assert corpus_bleu(hypotheses, references).score == pytest.approx(oracle_bleu(hypotheses, references).score, abs=1e-6)


def test_bleu_perfect_and_parts():
    score = corpus_bleu(["The cat sat on the mat."], ["The cat sat on the mat."])
    assert score.score == pytest.approx(100.0)
    assert score.counts == (7, 6, 5, 4) and score.brevity_penalty == 1.0
    assert "BLEU = 100.00" in str(score)


def test_bleu_brevity_penalty_and_smoothing_by_hand():
    # 2 of 4 unigrams, 1 of 3 bigrams, no trigram of 2, no 4-gram of 1; hypothesis 4 vs reference 8 tokens.
    score = bleu_from_counts([2, 1, 0, 0], [4, 3, 2, 1], hyp_len=4, ref_len=8)
    import math

    precisions = [50.0, 100 / 3, 100 / (2 * 2), 100 / (4 * 1)]
    expected = math.exp(1 - 8 / 4) * math.exp(sum(math.log(p) for p in precisions) / 4)
    assert score.score == pytest.approx(expected, rel=1e-12)


def test_bleu_bad_input_is_named():
    with pytest.raises(ValueError, match="reference stream 0 has 1 references; expected one per hypothesis"):
        corpus_bleu(["a", "b"], [["a"]])
    with pytest.raises(TypeError, match="hypothesis 1 is int"):
        corpus_bleu(["a", 3], ["a", "b"])
    with pytest.raises(ValueError, match="hypothesis 0 has no reference"):
        corpus_bleu(["a"], [[None]])
    with pytest.raises(ValueError, match="smooth must be"):
        corpus_bleu(["a"], ["a"], smooth="floor")


# ---------------------------------------------------------------------------------------
# ROUGE-L
# ---------------------------------------------------------------------------------------
rouge_text = st.lists(st.sampled_from(WORDS + ["Cat", "MAT", "sat-on", "2nd"]), max_size=12).map(" ".join)


@given(rouge_text, rouge_text)
def test_rouge_l_matches_rouge_score(reference, prediction):
    rouge_scorer = pytest.importorskip("rouge_score.rouge_scorer", reason="rouge-score is the oracle for ROUGE-L")
    theirs = rouge_scorer.RougeScorer(["rougeL"]).score(reference, prediction)["rougeL"]
    ours = rouge_l(reference, prediction)
    assert (ours.precision, ours.recall, ours.fmeasure) == pytest.approx(
        (theirs.precision, theirs.recall, theirs.fmeasure), abs=1e-12)


@given(st.lists(st.tuples(rouge_text, st.lists(rouge_text, min_size=1, max_size=3)), min_size=1, max_size=5))
def test_corpus_rouge_l_is_the_mean_of_rouge_score_multi(pairs):
    rouge_scorer = pytest.importorskip("rouge_score.rouge_scorer", reason="rouge-score is the oracle for ROUGE-L")
    scorer = rouge_scorer.RougeScorer(["rougeL"])
    expected = [scorer.score_multi(references, prediction)["rougeL"].fmeasure for prediction, references in pairs]
    ours = corpus_rouge_l([p for p, _ in pairs], [r for _, r in pairs])
    assert ours.fmeasure == pytest.approx(sum(expected) / len(expected), abs=1e-12)


def test_rouge_tokens_and_lcs():
    assert rouge_tokenize("The cat's 2nd-best MAT, naïve!") == ["the", "cat", "s", "2nd", "best", "mat", "na", "ve"]
    assert lcs_length("ABCBDAB", "BDCABA") == 4
    assert rouge_l("the cat sat on the mat", "the cat on the mat").fmeasure == pytest.approx(2 * 1 * (5 / 6) / (1 + 5 / 6))
    with pytest.raises(ValueError, match="2 predictions but 1 references"):
        corpus_rouge_l(["a", "b"], ["a"])
