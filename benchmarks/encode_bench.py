"""BPE encoding speed on text the tokenizer has not seen, minilm vs tiktoken, same ranks.

A byte-level BPE (gpt4 pattern, vocab 8192) is trained on the first --train-mb of the
standard library's sources; the next --mb are encoded:

1. one thread, cold chunk cache (a fresh tokenizer), against tiktoken's encode_ordinary
   (goal: throughput >= 0.7x tiktoken's); and warm (the same text again);
2. a batch of files: minilm's encode_batch (processes, every core) against tiktoken's
   encode_ordinary_batch (threads, every core);
3. one large text (a training corpus): encode_ordinary_parallel (processes) against one
   process, as the data pipeline of `minilm train` uses it.

Every row checks that the ids are identical. Ratios are throughput minilm / peer (above 1.0:
minilm is faster), timed in one run; the best of --rounds counts.

    python benchmarks/encode_bench.py [--mb 2] [--train-mb 1] [--rounds 3]
"""

from __future__ import annotations

import argparse
import os
import time

from machine import describe_machine  # benchmarks/ is the script's folder, first on sys.path
from tokenizer_bench import stdlib_corpus

from minilm.tokenizers import BPETokenizer


def best_time(function, rounds: int):
    best, result = float("inf"), None
    for _ in range(rounds):
        start = time.perf_counter()
        result = function()
        best = min(best, time.perf_counter() - start)
    return result, best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--mb", type=float, default=2.0, help="unseen text to encode, in MB")
    parser.add_argument("--train-mb", type=float, default=1.0)
    parser.add_argument("--vocab-size", type=int, default=8192)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    import tiktoken

    print(describe_machine(f"tiktoken {tiktoken.__version__ if hasattr(tiktoken, '__version__') else ''}"))
    corpus = stdlib_corpus(args.train_mb + args.mb)
    cut = int(args.train_mb * 1_000_000)
    train, unseen = corpus[:cut], corpus[cut:]
    size_mb = len(unseen.encode("utf-8")) / 1e6
    tokenizer = BPETokenizer.train(train, args.vocab_size, verbose=False)
    reference = tiktoken.Encoding("bench", pat_str=tokenizer.pattern, mergeable_ranks=tokenizer.mergeable_ranks(),
                                  special_tokens={})
    rows = []

    expected, t_peer = best_time(lambda: reference.encode_ordinary(unseen), args.rounds)
    cold, t_cold = best_time(lambda: BPETokenizer(tokenizer.mergeable_ranks(), tokenizer.pattern)
                             .encode_ordinary(unseen), args.rounds)
    warm_tokenizer = BPETokenizer(tokenizer.mergeable_ranks(), tokenizer.pattern)
    warm_tokenizer.encode_ordinary(unseen)
    warm, t_warm = best_time(lambda: warm_tokenizer.encode_ordinary(unseen), args.rounds)
    if not cold == warm == expected:
        raise SystemExit("FAIL: minilm's ids differ from tiktoken's")
    rows += [("encode, 1 thread, cold cache", t_cold, "tiktoken 1 thread", t_peer, "throughput >= 0.7"),
             ("encode, 1 thread, warm cache", t_warm, "tiktoken 1 thread", t_peer, "")]

    documents = [unseen[i:i + 20_000] for i in range(0, len(unseen), 20_000)]
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    batch_expected, t_peer_batch = best_time(lambda: reference.encode_ordinary_batch(documents, num_threads=cores),
                                             args.rounds)
    batch, t_batch = best_time(lambda: BPETokenizer(tokenizer.mergeable_ranks(), tokenizer.pattern)
                               .encode_batch(documents, allowed_special="none"), args.rounds)
    if batch != batch_expected:
        raise SystemExit("FAIL: encode_batch's ids differ from tiktoken's")
    rows.append((f"encode_batch, {len(documents)} docs, cold", t_batch, f"tiktoken {cores} threads", t_peer_batch,
                 ""))

    whole, t_whole = best_time(lambda: BPETokenizer(tokenizer.mergeable_ranks(), tokenizer.pattern)
                               .encode_ordinary_parallel(unseen), args.rounds)
    if whole != expected:
        raise SystemExit("FAIL: encode_ordinary_parallel's ids differ from tiktoken's")
    rows.append((f"one text, {cores} processes, cold", t_whole, "minilm 1 process", t_cold, "uses every core"))

    print(f"{size_mb:.2f} MB of unseen stdlib sources, {len(expected):,} tokens, vocab {args.vocab_size}, "
          "gpt4 pattern; ids identical to tiktoken's")
    print(f"{'measure':<34}{'minilm':>11}{'peer':>22}{'peer':>11}{'ratio':>8}   goal")
    for what, ours, peer, theirs, goal in rows:
        rates = f"{size_mb / ours:>7.2f}MB/s{peer:>22}{size_mb / theirs:>7.2f}MB/s"
        print(f"{what:<34}{rates}{theirs / ours:>8.2f}   {goal}")


if __name__ == "__main__":
    main()
