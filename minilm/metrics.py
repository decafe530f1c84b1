"""Metrics for generated text: corpus BLEU (as sacreBLEU computes it) and ROUGE-L.

BLEU (Papineni et al., 2002) counts the n-grams (n = 1..4) of each hypothesis that also occur
in one of its references, clipped to the most times any one reference holds them, sums the
counts over the corpus, and takes the geometric mean of the four precisions times a brevity
penalty for a corpus shorter than its references. The defaults are sacreBLEU's, so a score
here is a score there: the mteval-v13a tokenization, case kept, "exp" smoothing (an order
with no match counts as 1 / 2^k matches, k = 1, 2, ... for each such order in turn), and no
effective order (an order with no n-grams at all makes the score 0).

ROUGE-L (Lin, 2004) is the F-measure of the longest common subsequence of tokens between a
prediction and its reference, with the tokenization of Google's `rouge-score` package:
lowercase, runs of [a-z0-9] as tokens, no stemming (`rouge-score`'s Porter stemmer is not
reproduced here, so compare with its `use_stemmer=False`, its default).
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache

# ---------------------------------------------------------------------------------------
# BLEU
# ---------------------------------------------------------------------------------------
# mteval-v13a's tokenization as a sequence of substitutions, each applied to the whole line
# before the next (the order matters: a period is split off by the second or the third rule).
# All ASCII punctuation but the apostrophe, comma, hyphen and period stands alone.
_13A_RULES = (
    (re.compile(r"([!-&(-+/:-@\[-`{-~ ])"), r" \1 "),
    (re.compile(r"([^0-9])([.,])"), r"\1 \2 "),  # a period or comma after a non-digit
    (re.compile(r"([.,])([^0-9])"), r" \1 \2"),  # ... or before a non-digit (keeps 3.14, 1,000)
    (re.compile(r"([0-9])(-)"), r"\1 \2 "),  # a hyphen after a digit (ranges such as 1990-2000)
)


@lru_cache(maxsize=2**16)
def tokenize_13a(line: str) -> tuple[str, ...]:
    """The tokens of `line` under mteval-v13a (sacreBLEU's default tokenizer)."""
    line = line.replace("<skipped>", "").replace("-\n", "").replace("\n", " ")
    if "&" in line:  # the four XML entities mteval unescapes (&amp; last, as mteval does)
        line = line.replace("&quot;", '"').replace("&amp;", "&").replace("&lt;", "<").replace("&gt;", ">")
    line = f" {line} "
    for pattern, replacement in _13A_RULES:
        line = pattern.sub(replacement, line)
    return tuple(line.split())


@dataclass(frozen=True)
class BLEUScore:
    """A corpus BLEU score (0-100) and the statistics it was computed from."""

    score: float
    counts: tuple[int, ...]  # matched n-grams of each order, clipped by the references
    totals: tuple[int, ...]  # n-grams of each order in the hypotheses
    precisions: tuple[float, ...]  # percent, after smoothing
    brevity_penalty: float
    hyp_len: int  # hypothesis tokens in the corpus
    ref_len: int  # reference tokens, the closest reference length of each sentence summed

    def __str__(self) -> str:
        precisions = "/".join(f"{p:.1f}" for p in self.precisions)
        return (f"BLEU = {self.score:.2f} {precisions} (BP = {self.brevity_penalty:.3f} "
                f"hyp_len = {self.hyp_len} ref_len = {self.ref_len})")


def _ngrams(tokens: Sequence[str], max_order: int) -> Counter:
    return Counter(tuple(tokens[i : i + n]) for n in range(1, max_order + 1) for i in range(len(tokens) - n + 1))


def _closest_length(hyp_len: int, ref_lens: list[int]) -> int:
    """The reference length nearest the hypothesis length; the shorter one on a tie."""
    return min(ref_lens, key=lambda length: (abs(length - hyp_len), length))


def _reference_streams(references, count: int) -> list[Sequence]:
    if isinstance(references, str):
        raise TypeError("references must be a list of reference streams (or one list of strings), not a string")
    streams = list(references)
    if streams and all(isinstance(item, str) for item in streams):
        streams = [streams]  # one reference per hypothesis, given as a plain list
    if not streams:
        raise ValueError("BLEU needs at least one reference stream")
    for index, stream in enumerate(streams):
        if isinstance(stream, str) or len(stream) != count:
            length = "a string" if isinstance(stream, str) else f"{len(stream)} references"
            raise ValueError(f"reference stream {index} has {length}; expected one per hypothesis ({count})")
    return streams


def corpus_bleu(hypotheses: Sequence[str], references, *, max_order: int = 4, smooth: str = "exp",
                lowercase: bool = False, effective_order: bool = False) -> BLEUScore:
    """Corpus BLEU of `hypotheses` against `references`, equal to `sacrebleu.corpus_bleu`.

    references: reference streams as sacreBLEU takes them, `[[ref of hyp 0, ref of hyp 1, ...],
    [second ref of hyp 0, ...]]` (a reference may be None where a sentence has fewer), or one
    plain list of strings when each hypothesis has one reference.
    smooth: "exp" (sacreBLEU's default) or "none".
    effective_order: ignore the orders above the longest n-gram the hypotheses hold
    (sacreBLEU's option for sentence-level BLEU; off by default, as there).
    """
    if smooth not in ("exp", "none"):
        raise ValueError(f"smooth must be 'exp' or 'none', got {smooth!r}")
    if max_order < 1:
        raise ValueError(f"max_order must be >= 1, got {max_order}")
    hypotheses = list(hypotheses)
    for index, hypothesis in enumerate(hypotheses):
        if not isinstance(hypothesis, str):
            raise TypeError(f"hypothesis {index} is {type(hypothesis).__name__}, not a string")
    streams = _reference_streams(references, len(hypotheses))

    def tokens(text: str) -> tuple[str, ...]:
        text = text.rstrip()
        return tokenize_13a(text.lower() if lowercase else text)

    counts, totals = [0] * max_order, [0] * max_order
    hyp_len = ref_len = 0
    for index, hypothesis in enumerate(hypotheses):
        refs = [stream[index] for stream in streams if stream[index] is not None]
        if not refs:
            raise ValueError(f"hypothesis {index} has no reference (every stream holds None there)")
        best: Counter = Counter()  # each n-gram's count in the reference holding it most often
        ref_lens = []
        for ref in refs:
            ref_tokens = tokens(ref)
            ref_lens.append(len(ref_tokens))
            best |= _ngrams(ref_tokens, max_order)  # | keeps the larger count
        hyp_tokens = tokens(hypothesis)
        hyp_len += len(hyp_tokens)
        ref_len += _closest_length(len(hyp_tokens), ref_lens)
        for ngram, count in _ngrams(hyp_tokens, max_order).items():
            totals[len(ngram) - 1] += count
            counts[len(ngram) - 1] += min(count, best[ngram])
    return bleu_from_counts(counts, totals, hyp_len, ref_len, smooth=smooth, effective_order=effective_order)


def bleu_from_counts(counts, totals, hyp_len: int, ref_len: int, *, smooth: str = "exp",
                     effective_order: bool = False) -> BLEUScore:
    """BLEU from its sufficient statistics (matched and total n-grams per order, lengths)."""
    max_order = len(counts)
    if hyp_len < ref_len:
        penalty = math.exp(1.0 - ref_len / hyp_len) if hyp_len > 0 else 0.0
    else:
        penalty = 1.0
    precisions = [0.0] * max_order
    result = {"counts": tuple(counts), "totals": tuple(totals), "brevity_penalty": penalty, "hyp_len": hyp_len,
              "ref_len": ref_len}
    if not any(counts):
        return BLEUScore(score=0.0, precisions=tuple(precisions), **result)
    orders = max_order  # how many precisions enter the geometric mean
    missing = 1.0  # exp smoothing: the k-th order without a match counts 1 / 2^k matches
    for n in range(max_order):
        if totals[n] == 0:
            break  # no n-grams this long (and none longer); their precisions stay 0
        if effective_order:
            orders = n + 1
        if counts[n] > 0:
            precisions[n] = 100.0 * counts[n] / totals[n]
        elif smooth == "exp":
            missing *= 2.0
            precisions[n] = 100.0 / (missing * totals[n])
    used = precisions[:orders]
    # A zero precision makes the geometric mean, and so the score, zero.
    score = penalty * math.exp(sum(math.log(p) for p in used) / orders) if all(p > 0 for p in used) else 0.0
    return BLEUScore(score=score, precisions=tuple(precisions), **result)


# ---------------------------------------------------------------------------------------
# ROUGE-L
# ---------------------------------------------------------------------------------------
_ROUGE_TOKEN = re.compile(r"[a-z0-9]+")


def rouge_tokenize(text: str) -> list[str]:
    """rouge-score's default tokens: lowercase, maximal runs of ASCII letters and digits."""
    return _ROUGE_TOKEN.findall(text.lower())


@dataclass(frozen=True)
class RougeScore:
    precision: float
    recall: float
    fmeasure: float


def lcs_length(a: Sequence, b: Sequence) -> int:
    """Length of the longest common subsequence of `a` and `b` (dynamic programming, one row)."""
    if len(a) < len(b):
        a, b = b, a
    row = [0] * (len(b) + 1)  # row[j]: LCS of the prefix of `a` seen so far and b[:j]
    for item in a:
        diagonal = 0  # the previous row's value at j - 1
        for j, other in enumerate(b, 1):
            above = row[j]
            row[j] = diagonal + 1 if item == other else max(above, row[j - 1])
            diagonal = above
    return row[-1]


def rouge_l(reference: str, prediction: str) -> RougeScore:
    """ROUGE-L of one prediction against one reference (rouge-score's `score(target, prediction)`)."""
    reference_tokens, prediction_tokens = rouge_tokenize(reference), rouge_tokenize(prediction)
    if not reference_tokens or not prediction_tokens:
        return RougeScore(0.0, 0.0, 0.0)
    common = lcs_length(reference_tokens, prediction_tokens)
    precision, recall = common / len(prediction_tokens), common / len(reference_tokens)
    fmeasure = 2 * precision * recall / (precision + recall) if precision + recall > 0 else 0.0
    return RougeScore(precision, recall, fmeasure)


def corpus_rouge_l(predictions: Sequence[str], references) -> RougeScore:
    """Mean ROUGE-L over sentences; a reference may be a list of references, of which the one
    with the highest F-measure counts (the first on a tie, as rouge-score's `score_multi`)."""
    predictions, references = list(predictions), list(references)
    if len(predictions) != len(references):
        raise ValueError(f"{len(predictions)} predictions but {len(references)} references")
    if not predictions:
        raise ValueError("ROUGE-L needs at least one prediction")
    scores = []
    for prediction, reference in zip(predictions, references):
        candidates = [reference] if isinstance(reference, str) else list(reference)
        if not candidates:
            raise ValueError("a prediction has an empty list of references")
        per_reference = [rouge_l(candidate, prediction) for candidate in candidates]
        scores.append(max(per_reference, key=lambda s: s.fmeasure))  # max keeps the first of equals
    count = len(scores)
    return RougeScore(sum(s.precision for s in scores) / count, sum(s.recall for s in scores) / count,
                      sum(s.fmeasure for s in scores) / count)
