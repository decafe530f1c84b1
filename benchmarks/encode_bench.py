"""BPE encoding speed on text the tokenizer has not seen, minilm vs tiktoken, same ranks.

A byte-level BPE (gpt4 pattern, vocab 8192) is trained on the first --train-mb of the
standard library's sources; the next --mb are encoded:

1. one thread, cold chunk cache (a fresh tokenizer), against tiktoken's encode_ordinary
   (goal: throughput >= 0.7x tiktoken's); and warm (the same text again); and the merging of
   the text's new chunks alone: in NumPy rounds (merge_batch.PieceMerger, what a cold encode
   does) against one chunk at a time (byte_pair.merge_bytes);
2. a batch of files: minilm's encode_batch (processes, every core) against tiktoken's
   encode_ordinary_batch (threads, every core);
3. one large text (a training corpus): encode_ordinary_parallel (processes) against one
   process, as the data pipeline of `minilm train` uses it.

Every row checks that the ids are identical. Ratios are throughput minilm / peer (above 1.0:
minilm is faster), timed in one run; the best of --rounds counts, and the two sides of a row
take turns round by round, so that a load that comes and goes on a shared machine hits both.

    python benchmarks/encode_bench.py [--mb 2] [--train-mb 1] [--rounds 3] [--cpu-time]
"""

from __future__ import annotations

import argparse
import gc
import os
import time

from machine import describe_machine  # benchmarks/ is the script's folder, first on sys.path
from tokenizer_bench import stdlib_corpus

from minilm.tokenizers import BPETokenizer
from minilm.tokenizers.byte_pair import merge_bytes
from minilm.tokenizers.merge_batch import PieceMerger
from minilm.tokenizers.patterns import splitter


def best_times(functions, rounds: int, clock=time.perf_counter):
    """[(result, best seconds)] for each function, calling them in turn, `rounds` times.

    Each call starts after a full garbage collection and is charged for collecting the young
    objects it leaves: minilm pauses the collector while it encodes, and the collection that
    it puts off would otherwise fall into the next call timed, the peer's."""
    best, results = [float("inf")] * len(functions), [None] * len(functions)
    for _ in range(rounds):
        for index, function in enumerate(functions):
            results[index] = None
            gc.collect()
            start = clock()
            results[index] = function()
            gc.collect(0)
            best[index] = min(best[index], clock() - start)
    return list(zip(results, best))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--mb", type=float, default=2.0, help="unseen text to encode, in MB")
    parser.add_argument("--train-mb", type=float, default=1.0)
    parser.add_argument("--vocab-size", type=int, default=8192)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--cpu-time", action="store_true",
                        help="time the one-thread rows by this process's CPU time, not the wall clock: steadier "
                             "on a loaded machine (the rows with threads or processes keep the wall clock)")
    args = parser.parse_args()
    one_thread_clock = time.process_time if args.cpu_time else time.perf_counter
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

    def fresh():
        return BPETokenizer(tokenizer.mergeable_ranks(), tokenizer.pattern)

    warm_tokenizer = fresh()
    warm_tokenizer.encode_ordinary(unseen)
    (expected, t_peer), (cold, t_cold), (warm, t_warm) = best_times(
        [lambda: reference.encode_ordinary(unseen), lambda: fresh().encode_ordinary(unseen),
         lambda: warm_tokenizer.encode_ordinary(unseen)], args.rounds, one_thread_clock)
    if not cold == warm == expected:
        raise SystemExit("FAIL: minilm's ids differ from tiktoken's")
    rows += [("encode, 1 thread, cold cache", t_cold, "tiktoken 1 thread", t_peer, "throughput >= 0.7"),
             ("encode, 1 thread, warm cache", t_warm, "tiktoken 1 thread", t_peer, "")]

    # The new chunks' merging alone (the part of a cold encode that the cache saves).
    ranks = tokenizer.mergeable_ranks()
    chunks = set(splitter(tokenizer.pattern)(unseen))
    new_pieces = [piece for piece in {chunk.encode("utf-8") for chunk in chunks} if piece not in ranks]
    merger = PieceMerger(ranks, ranks)
    (in_rounds, t_rounds), (one_by_one, t_one) = best_times(
        [lambda: merger.merge(new_pieces),
         lambda: [tuple(map(ranks.__getitem__, merge_bytes(piece, ranks))) for piece in new_pieces]], args.rounds,
        one_thread_clock)
    if in_rounds != one_by_one:
        raise SystemExit("FAIL: merging in rounds differs from merging one piece at a time")
    new_mb = sum(map(len, new_pieces)) / 1e6  # the row's MB/s are of these bytes: times scaled to them
    rows.append((f"merge {len(new_pieces):,} new chunks", t_rounds * size_mb / new_mb, "one at a time",
                 t_one * size_mb / new_mb, f"{new_mb * 1e3:.0f} KB"))

    documents = [unseen[i:i + 20_000] for i in range(0, len(unseen), 20_000)]
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    (batch_expected, t_peer_batch), (batch, t_batch) = best_times(
        [lambda: reference.encode_ordinary_batch(documents, num_threads=cores),
         lambda: fresh().encode_batch(documents, allowed_special="none")], args.rounds)
    if batch != batch_expected:
        raise SystemExit("FAIL: encode_batch's ids differ from tiktoken's")
    rows.append((f"encode_batch, {len(documents)} docs, cold", t_batch, f"tiktoken {cores} threads", t_peer_batch,
                 ""))

    (whole, t_whole), (_, t_one_process) = best_times(
        [lambda: fresh().encode_ordinary_parallel(unseen), lambda: fresh().encode_ordinary(unseen)], args.rounds)
    if whole != expected:
        raise SystemExit("FAIL: encode_ordinary_parallel's ids differ from tiktoken's")
    rows.append((f"one text, {cores} processes, cold", t_whole, "minilm 1 process", t_one_process,
                 "uses every core"))

    print(f"{size_mb:.2f} MB of unseen stdlib sources, {len(expected):,} tokens, vocab {args.vocab_size}, "
          "gpt4 pattern; ids identical to tiktoken's")
    if args.cpu_time:
        print("one-thread rows timed by CPU time (--cpu-time)")
    print(f"{'measure':<34}{'minilm':>11}{'peer':>22}{'peer':>11}{'ratio':>8}   goal")
    for what, ours, peer, theirs, goal in rows:
        rates = f"{size_mb / ours:>7.2f}MB/s{peer:>22}{size_mb / theirs:>7.2f}MB/s"
        print(f"{what:<34}{rates}{theirs / ours:>8.2f}   {goal}")


if __name__ == "__main__":
    main()
