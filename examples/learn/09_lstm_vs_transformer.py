"""09 - The LSTM language model against the Transformer, on the same data and budget.

    python examples/learn/09_lstm_vs_transformer.py [--out learn_out] [--steps 400]

Two answers to "how does the model see the context?":

- the LSTM reads the text one character after another and carries everything it knows
  in a fixed-size state (h, c); gates decide what to keep and what to forget. The steps
  are sequential, so training cannot run the positions in parallel.
- the Transformer (GPT) looks at every earlier position directly through attention; all
  positions are computed at once, and nothing has to survive a long chain of updates.

Both are trained here on the same characters, with the same optimizer, batches, steps
and a similar number of parameters. Printed: parameters, time per step, held-out loss and
perplexity; picture: the validation loss curves of both.
"""

import argparse
import math
import time
from pathlib import Path

import numpy as np

import minilm as ml
from minilm import viz
from minilm.cli import builtin_text
from minilm.models import GPT, GPTConfig, LSTMConfig, LSTMLanguageModel
from minilm.tokenizers import CharTokenizer
from minilm.train import CausalLMTask, Trainer, TrainingConfig


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="learn_out", help="folder for the pictures")
    parser.add_argument("--steps", type=int, default=400)
    parser.add_argument("--width", type=int, default=64)
    parser.add_argument("--block-size", type=int, default=48)
    parser.add_argument("--evals", type=int, default=6, help="validation points on each curve")
    args = parser.parse_args(argv)
    out = Path(args.out)

    text = builtin_text()[:300_000]
    tokenizer = CharTokenizer.from_text(text)
    ids = np.array(tokenizer.encode(text))
    split = int(0.95 * len(ids))
    vocab, width = tokenizer.vocab_size, args.width
    builders = {
        "LSTM": lambda: LSTMLanguageModel(LSTMConfig(vocab_size=vocab, n_embd=width, hidden_size=width + width // 2,
                                                     num_layers=2)),
        "Transformer": lambda: GPT(GPTConfig(vocab_size=vocab, n_layer=2, n_head=4, n_embd=width,
                                             block_size=args.block_size)),
    }
    config = TrainingConfig(max_steps=args.steps, lr=3e-3, warmup_steps=min(30, args.steps), weight_decay=0.0,
                            eval_interval=max(1, args.steps // args.evals), eval_batches=4, log_interval=args.steps)
    curves, rows = {}, []
    for name, build in builders.items():
        ml.manual_seed(0)
        model = build()
        task = CausalLMTask(ids[:split], ids[split:], args.block_size, batch_size=16)
        started = time.perf_counter()
        history = Trainer(model, task, config, quiet=True).fit()
        seconds = time.perf_counter() - started
        evals = [(r["step"], r["val_loss"]) for r in history if "val_loss" in r]
        curves[name] = tuple(zip(*evals))
        final = evals[-1][1]
        rows.append((name, model.num_parameters(), 1000 * seconds / args.steps, final, math.exp(final)))

    print(f"{args.steps} steps of 16 x {args.block_size} characters each\n")
    print(f"{'model':<12} {'parameters':>10} {'ms/step':>8} {'val loss':>9} {'perplexity':>10}")
    for name, parameters, ms, loss, ppl in rows:
        print(f"{name:<12} {parameters:>10,} {ms:8.1f} {loss:9.3f} {ppl:10.2f}")
    picture = viz.save_line_plot(curves, out / "09_lstm_vs_transformer.svg", title="validation loss while training",
                                 xlabel="step", ylabel="loss (nats per character)")
    print(f"\npicture: {picture}")
    return {name: loss for name, _, _, loss, _ in rows}


if __name__ == "__main__":
    main()
