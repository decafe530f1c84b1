"""01 - A language model assigns a probability to text, one token at a time.

    python examples/learn/01_lm_probability.py [--out learn_out] [--steps 800]

The chain rule of probability turns the probability of a whole text into a product of
next-token probabilities:

    P(x_1 ... x_n) = P(x_1) * P(x_2 | x_1) * P(x_3 | x_1 x_2) * ... * P(x_n | x_1 ... x_n-1)

A language model is anything that gives those conditional probabilities. Perplexity,
exp(-mean log P(x_t | x_<t)), is "how many characters the model is choosing between, on
average": lower is better. Three models on the same characters of the Python docs:

- unigram: P(x_t), ignoring the context (counts of each character);
- bigram:  P(x_t | x_t-1), counts of character pairs (add-k smoothed);
- a small GPT, trained by gradient descent, conditioning on the whole preceding window.

Pictures: the bigram table as a heatmap, and a sentence coloured by each model's surprise.
"""

import argparse
import math
from pathlib import Path

import numpy as np

import minilm as ml
import minilm.functional as F
from minilm import viz
from minilm.cli import builtin_text
from minilm.eval import perplexity
from minilm.models import GPT, GPTConfig
from minilm.tokenizers import CharTokenizer
from minilm.train import CausalLMTask, Trainer, TrainingConfig

SENTENCE = "for item in range(10):"
SMOOTHING = 0.1  # add-k: a pair never seen in training still gets a little probability


def count_models(ids: np.ndarray, vocab: int):
    """Unigram probabilities [V] and bigram conditional probabilities [V, V] (row = previous)."""
    unigram = np.bincount(ids, minlength=vocab) + SMOOTHING
    pairs = np.zeros((vocab, vocab))
    np.add.at(pairs, (ids[:-1], ids[1:]), 1)  # pairs[a, b] = how often b follows a
    pairs += SMOOTHING
    return unigram / unigram.sum(), pairs / pairs.sum(axis=1, keepdims=True)


def gpt_next_token_probabilities(model, ids: np.ndarray) -> np.ndarray:
    """P(x_t | x_<t) under the GPT for t = 1 .. n-1."""
    with ml.no_grad():
        log_probabilities = F.log_softmax(model.eval()(ids[None, :-1]).logits, axis=-1).numpy()[0]  # [T-1, V]
    return np.exp(log_probabilities[np.arange(len(ids) - 1), ids[1:]])


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="learn_out", help="folder for the pictures")
    parser.add_argument("--chars", type=int, default=200_000, help="characters of the docs to use")
    parser.add_argument("--steps", type=int, default=800, help="GPT training steps")
    parser.add_argument("--width", type=int, default=64)
    args = parser.parse_args(argv)
    out = Path(args.out)

    text = builtin_text()[: args.chars]
    tokenizer = CharTokenizer.from_text(text + SENTENCE)
    ids = np.array(tokenizer.encode(text))
    split = int(0.9 * len(ids))
    train, val = ids[:split], ids[split:split + 5_000]
    unigram, bigram = count_models(train, tokenizer.vocab_size)

    block = 32
    ml.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=tokenizer.vocab_size, n_layer=2, n_head=4, n_embd=args.width, block_size=block))
    task = CausalLMTask(train, val, block, batch_size=16)
    config = TrainingConfig(max_steps=args.steps, lr=3e-3, warmup_steps=min(30, args.steps),
                            eval_interval=args.steps, eval_batches=4, log_interval=max(1, args.steps))
    Trainer(model, task, config, quiet=True).fit()

    # Perplexity on the same held-out characters (the first one has no predecessor).
    ppl = {
        "unigram": math.exp(-np.mean(np.log(unigram[val[1:]]))),
        "bigram": math.exp(-np.mean(np.log(bigram[val[:-1], val[1:]]))),
        f"GPT ({args.steps} steps)": perplexity(model, val, block),
    }
    print(f"held-out perplexity on {len(val):,} characters (vocabulary {tokenizer.vocab_size}):")
    for name, value in ppl.items():
        print(f"  {name:<18} {value:7.2f}")

    # The chain rule, factor by factor, for one sentence.
    s = np.array(tokenizer.encode(SENTENCE))
    p_unigram = unigram[s]
    p_bigram = np.concatenate([[unigram[s[0]]], bigram[s[:-1], s[1:]]])
    p_gpt = np.concatenate([[unigram[s[0]]], gpt_next_token_probabilities(model, s)])
    print(f"\nP({SENTENCE!r}) as a product of next-character probabilities:")
    print(f"  {'t':>2}  {'char':<5} {'unigram':>8} {'bigram':>8} {'GPT':>8}   log P so far (GPT)")
    running = 0.0
    for t, char_id in enumerate(s):
        running += math.log(p_gpt[t])
        char = viz.display_token(tokenizer.decode([int(char_id)]))
        print(f"  {t:>2}  {char:<5} {p_unigram[t]:8.4f} {p_bigram[t]:8.4f} {p_gpt[t]:8.4f}   {running:8.2f}")
    for name, p in (("unigram", p_unigram), ("bigram", p_bigram), ("GPT", p_gpt)):
        print(f"  {name:<8} log P(sentence) = {np.log(p).sum():8.2f}   perplexity {math.exp(-np.mean(np.log(p))):6.2f}")

    # Pictures
    top = np.argsort(-unigram)[:20]
    labels = [tokenizer.decode([int(i)]) for i in top]
    table = bigram[np.ix_(top, top)]
    viz.save_heatmap(table, labels, labels, out / "01_bigram_table.svg",
                     title="bigram P(next | previous), 20 most frequent characters",
                     xlabel="next character", ylabel="previous character", vmin=0.0)
    tokens = [tokenizer.decode([int(i)]) for i in s]
    for name, p in (("bigram", p_bigram), ("gpt", p_gpt)):
        viz.save_colored_tokens(tokens, -np.log(p), out / f"01_surprisal_{name}.svg",
                                title=f"surprisal -log P(x_t | x_<t) under the {name} model (red = surprising)",
                                scale=6.0)
    print(f"\npictures in {out}/: 01_bigram_table.svg, 01_surprisal_bigram.svg, 01_surprisal_gpt.svg")
    return ppl


if __name__ == "__main__":
    main()
