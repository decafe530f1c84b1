"""Benchmark minilm's byte-level BPE against its peers, measured in the same run.

    python benchmarks/tokenizer_bench.py            # ~10 MB of stdlib sources, vocab 8192
    python benchmarks/tokenizer_bench.py --mb 1     # quick run

The corpus is Python's own standard library: .py files in sorted path order until
about --mb megabytes. Rows:

1. training time vs Hugging Face `tokenizers` BpeTrainer, which splits with the
   same regex (Split + ByteLevel) (goal: minilm <= 2x its time);
2. training vs a naive trainer that recounts every pair after every merge, on a
   small slice (the naive trainer is below, for the record);
3. encode throughput vs tiktoken built from minilm's own ranks, one thread,
   checking that the ids are identical (goal: >= 0.7x, cold). Like for like:
   "cold" is the first pass of each over the text (minilm: a fresh tokenizer, empty
   chunk cache; tiktoken: a fresh Encoding), "warm" the second pass of each over the
   same text (minilm's chunks are all cached then). Each is compared with the peer's
   pass of the same kind, measured in this run.

Peers that are not installed are skipped. Machines are noisy: compare the ratios,
not the absolute times.
"""

from __future__ import annotations

import argparse
import os
import pathlib
import sysconfig
import time
from collections import Counter

import regex

from minilm.tokenizers import BPETokenizer


def stdlib_corpus(megabytes: float) -> str:
    root = pathlib.Path(sysconfig.get_paths()["stdlib"])
    limit = int(megabytes * 1_000_000)
    parts, size = [], 0
    for path in sorted(root.rglob("*.py")):
        if "site-packages" in path.parts:
            continue
        try:
            text = path.read_text(encoding="utf-8")
        except (UnicodeDecodeError, OSError):
            continue
        parts.append(text)
        size += len(text.encode("utf-8"))
        if size >= limit:
            break
    return "".join(parts)


def timed(function, *args, **kwargs):
    started = time.perf_counter()
    result = function(*args, **kwargs)
    return result, time.perf_counter() - started


def naive_train(text: str, vocab_size: int, pattern: str) -> dict[bytes, int]:
    """The textbook trainer: after every merge, recount every pair of every chunk.

    Same tie rule as minilm (equal counts: smallest (left id, right id)), so the
    result must equal minilm's with min_frequency=1.
    """
    chunks = [list(chunk.encode("utf-8")) for chunk in regex.findall(pattern, text)]
    token_bytes = [bytes([b]) for b in range(256)]
    while len(token_bytes) < vocab_size:
        counts = Counter(pair for chunk in chunks for pair in zip(chunk, chunk[1:]))
        if not counts:
            break
        best = min(counts, key=lambda pair: (-counts[pair], pair))
        new_id = len(token_bytes)
        token_bytes.append(token_bytes[best[0]] + token_bytes[best[1]])
        for index, chunk in enumerate(chunks):
            merged, i = [], 0
            while i < len(chunk):
                if i + 1 < len(chunk) and (chunk[i], chunk[i + 1]) == best:
                    merged.append(new_id)
                    i += 2
                else:
                    merged.append(chunk[i])
                    i += 1
            chunks[index] = merged
    return {token: rank for rank, token in enumerate(token_bytes)}


def train_hf(text: str, vocab_size: int, pattern: str):
    import tokenizers as hf

    tokenizer = hf.Tokenizer(hf.models.BPE())
    tokenizer.pre_tokenizer = hf.pre_tokenizers.Sequence(
        [
            hf.pre_tokenizers.Split(hf.Regex(pattern), behavior="isolated"),
            hf.pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    trainer = hf.trainers.BpeTrainer(
        vocab_size=vocab_size, initial_alphabet=hf.pre_tokenizers.ByteLevel.alphabet(), show_progress=False
    )
    tokenizer.train_from_iterator([text], trainer=trainer)
    return tokenizer


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--mb", type=float, default=10.0, help="corpus size in MB (default 10)")
    parser.add_argument("--vocab-size", type=int, default=8192)
    parser.add_argument("--pattern", default="gpt4", help="gpt2, gpt4 or a regex")
    parser.add_argument("--naive-kb", type=float, default=100.0, help="slice for the naive trainer, in KB")
    parser.add_argument("--naive-vocab-size", type=int, default=512)
    args = parser.parse_args()

    text = stdlib_corpus(args.mb)
    size_mb = len(text.encode("utf-8")) / 1e6
    print(f"corpus: {size_mb:.2f} MB of stdlib sources, vocab {args.vocab_size}, pattern {args.pattern!r}, "
          f"{os.cpu_count()} CPUs")
    rows = []  # (what, minilm seconds, peer, peer seconds, ratio, goal)

    tok, minilm_train = timed(BPETokenizer.train, text, args.vocab_size, pattern=args.pattern, verbose=False)
    print(f"  minilm trained in {minilm_train:.2f} s ({tok.vocab_size} ids)")
    try:
        _, hf_train = timed(train_hf, text, args.vocab_size, tok.pattern)
        print(f"  HF BpeTrainer trained in {hf_train:.2f} s (its default threads)")
        rows.append(("train", minilm_train, "HF tokenizers", hf_train, minilm_train / hf_train, "time ratio <= 2"))
    except ImportError:
        print("  HF tokenizers not installed: training comparison skipped")

    slice_text = text[: int(args.naive_kb * 1000)]
    small, small_train = timed(BPETokenizer.train, slice_text, args.naive_vocab_size, pattern=args.pattern,
                               min_frequency=1, verbose=False)
    naive_ranks, naive_train_time = timed(naive_train, slice_text, args.naive_vocab_size, tok.pattern)
    same = naive_ranks == small.mergeable_ranks()
    print(f"  naive trainer on {args.naive_kb:.0f} KB, vocab {args.naive_vocab_size}: {naive_train_time:.2f} s "
          f"vs minilm {small_train:.3f} s; same merges: {same}")
    rows.append((f"train {args.naive_kb:.0f} KB", small_train, "naive recount", naive_train_time,
                 naive_train_time / small_train, "speed-up (x)"))

    try:
        import tiktoken
    except ImportError:
        print("  tiktoken not installed: encode comparison skipped")
    else:
        reference = tiktoken.Encoding("bench", pat_str=tok.pattern, mergeable_ranks=tok.mergeable_ranks(),
                                      special_tokens=tok.special_tokens)
        fresh = BPETokenizer(tok.mergeable_ranks(), tok.pattern, tok.special_tokens)
        expected, tiktoken_cold = timed(reference.encode_ordinary, text)
        expected_again, tiktoken_warm = timed(reference.encode_ordinary, text)
        cold_ids, cold_time = timed(fresh.encode_ordinary, text)
        warm_ids, warm_time = timed(fresh.encode_ordinary, text)
        identical = cold_ids == expected and warm_ids == expected and expected_again == expected
        print(f"  encode: {len(expected)} tokens, ids identical to tiktoken: {identical}")
        if not identical:
            raise SystemExit("FAIL: minilm's ids differ from tiktoken's")
        rows.append(("encode, 1st pass", cold_time, "tiktoken 1st", tiktoken_cold, tiktoken_cold / cold_time,
                     "throughput >= 0.7"))
        rows.append(("encode, 2nd pass", warm_time, "tiktoken 2nd", tiktoken_warm, tiktoken_warm / warm_time,
                     "(same text again)"))
        # One long piece (no cache can help): merging must stay near-linear, not quadratic.
        for length in (10_000, 100_000):
            piece = "a" * length
            _, long_time = timed(fresh.encode_ordinary, piece)
            _, long_reference = timed(reference.encode_ordinary, piece)
            print(f"  one piece of {length:,} 'a's: minilm {long_time:.3f} s, tiktoken {long_reference:.3f} s")

    print()
    print(f"{'measure':<22}{'minilm':>12}{'peer':>16}{'peer time':>12}{'ratio':>9}   goal")
    for what, ours, peer, theirs, ratio, goal in rows:
        if what.startswith("encode"):
            print(f"{what:<22}{size_mb / ours:>8.2f}MB/s{peer:>16}{size_mb / theirs:>7.2f}MB/s{ratio:>9.2f}   {goal}")
        else:
            print(f"{what:<22}{ours:>11.2f}s{peer:>16}{theirs:>11.2f}s{ratio:>9.2f}   {goal}")


if __name__ == "__main__":
    main()
