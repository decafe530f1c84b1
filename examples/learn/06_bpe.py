"""06 - Byte-pair encoding, one merge at a time.

    python examples/learn/06_bpe.py [--out learn_out] [--merges 40]

A BPE tokenizer starts from the 256 byte values and learns merges: repeatedly find the
pair of adjacent tokens that occurs most often and make it a new token. Frequent words end
up as one token, rare words as several pieces, and any text at all stays encodable (the
bytes are always there). First the text is cut into chunks (words with their leading
space, numbers, punctuation) by a regular expression, so merges never cross a chunk.

The loop below is the whole algorithm, written for reading (it recounts every pair at
every step). The library's `BPETokenizer.train` learns the same merges, much faster, by
updating the counts incrementally; the script checks that both agree. Picture: a sentence
split into tokens after 0, 10 and all the merges (alternating colours = token boundaries).
"""

import argparse
from collections import Counter
from pathlib import Path

import numpy as np
import regex

from minilm import viz
from minilm.cli import builtin_text
from minilm.tokenizers import BPETokenizer
from minilm.tokenizers.patterns import resolve_pattern

SENTENCE = "The for statement iterates over the items of any sequence."


def learn_merges_slowly(text: str, merges: int, verbose: bool = True) -> list[bytes]:
    chunks = Counter(regex.findall(resolve_pattern("gpt4"), text))  # distinct chunks and their counts
    words = {chunk: list(chunk.encode("utf-8")) for chunk in chunks}  # each chunk as token ids
    vocabulary = [bytes([b]) for b in range(256)]
    if verbose:
        print(f"{'step':>4}  {'pair':<22} {'count':>6}  new token   tokens in the text")
    for step in range(merges):
        pairs = Counter()
        for chunk, ids in words.items():
            for pair in zip(ids, ids[1:]):
                pairs[pair] += chunks[chunk]
        if not pairs:
            break
        # The most frequent pair; ties go to the smallest ids (the library's rule).
        best = min(pairs, key=lambda pair: (-pairs[pair], pair))
        if pairs[best] < 2:
            break
        new_id = len(vocabulary)
        vocabulary.append(vocabulary[best[0]] + vocabulary[best[1]])
        for chunk, ids in words.items():
            merged, i = [], 0
            while i < len(ids):
                if i + 1 < len(ids) and (ids[i], ids[i + 1]) == best:
                    merged.append(new_id)
                    i += 2
                else:
                    merged.append(ids[i])
                    i += 1
            words[chunk] = merged
        if verbose:
            total = sum(len(ids) * chunks[chunk] for chunk, ids in words.items())
            left, right = (vocabulary[i].decode("utf-8", "replace") for i in best)
            print(f"{step + 1:>4}  {left!r:>10} + {right!r:<9} {pairs[best]:>6}  "
                  f"{vocabulary[new_id].decode('utf-8', 'replace')!r:<11} {total:,}")
    return vocabulary[256:]


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="learn_out", help="folder for the pictures")
    parser.add_argument("--merges", type=int, default=40)
    parser.add_argument("--chars", type=int, default=20_000, help="characters of the docs to learn from")
    args = parser.parse_args(argv)
    out = Path(args.out)

    text = builtin_text()[: args.chars]
    print(f"learning {args.merges} merges from {len(text):,} characters ({len(text.encode()):,} bytes)\n")
    slow = learn_merges_slowly(text, args.merges)
    tokenizer = BPETokenizer.train(text, 256 + args.merges, verbose=False)
    ranks = tokenizer.mergeable_ranks()
    fast = sorted((token for token, rank in ranks.items() if rank >= 256), key=ranks.get)  # in the order learned
    print(f"\nBPETokenizer.train learned the same {len(fast)} merges: {slow == fast}")

    rows = {}
    for merges in sorted({0, min(10, len(fast)), len(fast)}):
        partial = BPETokenizer.train(text, 256 + merges, verbose=False)
        ids = partial.encode(SENTENCE)
        rows[merges] = [partial.token_bytes(i).decode("utf-8", "replace") for i in ids]
        print(f"after {merges:>3} merges: {len(ids):>3} tokens  " + "|".join(rows[merges]))
    for merges, tokens in rows.items():
        boundaries = np.resize([1.0, -1.0], len(tokens))  # alternate colours to show where tokens end
        viz.save_colored_tokens(tokens, boundaries * 0.5, out / f"06_bpe_after_{merges}_merges.svg",
                                title=f"{len(tokens)} tokens after {merges} merges")
    print(f"\npictures in {out}/: " + ", ".join(f"06_bpe_after_{m}_merges.svg" for m in rows))
    return slow == fast


if __name__ == "__main__":
    main()
