"""08 - Generation strategies on one prompt: greedy, beam search, temperature, top-k, top-p.

    python examples/learn/08_generation.py [--out learn_out] [--steps 800]

A language model gives a distribution over the next token; a decoding strategy decides
what to do with it, then appends the choice and repeats:

- greedy: always the most probable token. Deterministic, and prone to loops.
- beam search: keep the k best partial sequences by total log-probability; finds more
  probable sequences than greedy, which are often blander still.
- sampling with temperature T: draw from softmax(logits / T). T < 1 sharpens the
  distribution (safer), T > 1 flattens it (more varied, more mistakes).
- top-k: sample only among the k most probable tokens.
- top-p (nucleus): sample among the fewest tokens whose probabilities add up to p.

A small character GPT is trained on the Python docs first. Printed: each strategy's text,
its average log-probability per character under the model and its share of distinct
character 3-grams (a crude diversity measure). Picture: the next-character distribution
after the prompt at several temperatures.
"""

import argparse
from pathlib import Path

import numpy as np

import minilm as ml
import minilm.functional as F
from minilm import viz
from minilm.cli import builtin_text
from minilm.models import GPT, GPTConfig
from minilm.tokenizers import CharTokenizer
from minilm.train import CausalLMTask, Trainer, TrainingConfig

PROMPT = "The return statement "
STRATEGIES = {
    "greedy": {},
    "beam search, 4 beams": {"num_beams": 4},
    "sampling, T = 0.5": {"do_sample": True, "temperature": 0.5},
    "sampling, T = 1.0": {"do_sample": True, "temperature": 1.0},
    "sampling, T = 1.5": {"do_sample": True, "temperature": 1.5},
    "top-k = 5": {"do_sample": True, "top_k": 5},
    "top-p = 0.9": {"do_sample": True, "top_p": 0.9},
}


def mean_log_probability(model, ids: np.ndarray, start: int) -> float:
    """Average log P(x_t | x_<t) over the generated positions t >= start."""
    with ml.no_grad():
        log_probabilities = F.log_softmax(model(ids[None, :-1]).logits, axis=-1).numpy()[0]  # [T-1, V]
    picked = log_probabilities[np.arange(len(ids) - 1), ids[1:]]
    return float(picked[start - 1:].mean())


def distinct_trigrams(text: str) -> float:
    grams = [text[i:i + 3] for i in range(len(text) - 2)]
    return len(set(grams)) / max(len(grams), 1)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="learn_out", help="folder for the pictures")
    parser.add_argument("--steps", type=int, default=800, help="training steps of the character GPT")
    parser.add_argument("--new", type=int, default=60, help="characters to generate")
    args = parser.parse_args(argv)
    out = Path(args.out)

    text = builtin_text()[:300_000]
    tokenizer = CharTokenizer.from_text(text + PROMPT)
    ids = np.array(tokenizer.encode(text))
    split = int(0.95 * len(ids))
    block = len(PROMPT) + args.new
    ml.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=tokenizer.vocab_size, n_layer=2, n_head=4, n_embd=64, block_size=block))
    config = TrainingConfig(max_steps=args.steps, lr=3e-3, warmup_steps=min(30, args.steps), eval_interval=args.steps,
                            eval_batches=2, log_interval=args.steps)
    Trainer(model, CausalLMTask(ids[:split], ids[split:], min(48, block), batch_size=16), config, quiet=True).fit()
    model.eval()

    prompt = np.array([tokenizer.encode(PROMPT)])
    results = {}
    print(f"prompt: {PROMPT!r}\n")
    print(f"{'strategy':<22} {'log P/char':>10} {'distinct 3-grams':>17}  text")
    for name, options in STRATEGIES.items():
        sequence = model.generate(prompt, max_new_tokens=args.new, seed=0, **options)[0]
        continuation = tokenizer.decode(sequence[prompt.shape[1]:].tolist())
        results[name] = continuation
        score = mean_log_probability(model, sequence, prompt.shape[1])
        print(f"{name:<22} {score:10.3f} {distinct_trigrams(continuation):17.2f}  {continuation!r}")

    with ml.no_grad():
        logits = model(prompt).logits.numpy()[0, -1]  # [V] scores for the character after the prompt
    top = np.argsort(-logits)[:15]
    temperatures = [0.5, 1.0, 1.5, 2.0]
    table = []
    for t in temperatures:
        scaled = np.exp((logits - logits.max()) / t)
        table.append((scaled / scaled.sum())[top])
    picture = viz.save_heatmap(np.array(table), [f"T = {t}" for t in temperatures],
                               [tokenizer.decode([int(i)]) for i in top], out / "08_temperature.svg",
                               title=f"P(next character | {PROMPT!r}) at several temperatures",
                               xlabel="the 15 most probable next characters", ylabel="temperature", vmin=0.0)
    print(f"\npicture: {picture} (low T piles the probability on the favourite; high T spreads it)")
    return results


if __name__ == "__main__":
    main()
