"""One LSTM language-model training step (forward, backward, AdamW), minilm vs PyTorch on the CPU.

embedding -> LSTM (default 2 layers, 256 wide) -> linear head, B=16, T=64, vocab 2048,
float32, the same weights in both; timed alternately in one process (best median of the
rounds), ratio minilm / torch (below 1.0: minilm is faster). Also a lone LSTM layer's
forward + backward (the time loop's own cost); with --profile, minilm's step time per op kind.

    python benchmarks/lstm_step.py [--layers 2] [--width 256] [--batch 16] [--block 64] [--steps 5] [--profile]
"""

from __future__ import annotations

import argparse

import numpy as np
from machine import describe_machine, torch_line  # benchmarks/ is the script's folder, first on sys.path
from train_step import add_threads_argument, alternate, start_torch

import minilm as ml
from minilm import nn, optim
from minilm.models.lstm import LSTMConfig, LSTMLanguageModel
from minilm.trace import Trace


def lstm_steps(torch, args):
    config = LSTMConfig(vocab_size=args.vocab, n_embd=args.width, hidden_size=args.width, num_layers=args.layers)
    ml.manual_seed(0)
    ours = LSTMLanguageModel(config)
    our_opt = optim.AdamW(ours.parameters(), lr=1e-3, flat=True)

    class Theirs(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.embedding = torch.nn.Embedding(args.vocab, args.width)
            self.lstm = torch.nn.LSTM(args.width, args.width, num_layers=args.layers, batch_first=True)
            self.head = torch.nn.Linear(args.width, args.vocab)

        def forward(self, ids):
            return self.head(self.lstm(self.embedding(ids))[0])

    theirs = Theirs()
    state = {name: torch.tensor(p.numpy()) for name, p in ours.named_parameters()}
    theirs.load_state_dict(state)
    their_opt = torch.optim.AdamW(theirs.parameters(), lr=1e-3, foreach=True)
    ids = np.random.default_rng(0).integers(0, args.vocab, (args.batch, args.block + 1))
    x, y = ids[:, :-1], ids[:, 1:]
    tx, ty = torch.tensor(x), torch.tensor(y)

    def our_step():
        _, loss = ours(x, targets=y)
        loss.backward()
        our_opt.step()
        our_opt.zero_grad()

    def their_step():
        loss = torch.nn.functional.cross_entropy(theirs(tx).reshape(-1, args.vocab), ty.reshape(-1))
        loss.backward()
        their_opt.step()
        their_opt.zero_grad(set_to_none=True)

    return our_step, their_step


def layer_passes(torch, args):
    """One LSTM layer, forward + backward of sum(output), no optimizer."""
    ml.manual_seed(0)
    ours = nn.LSTM(args.width, args.width, batch_first=True)
    theirs = torch.nn.LSTM(args.width, args.width, batch_first=True)
    theirs.load_state_dict({name: torch.tensor(p.numpy()) for name, p in ours.named_parameters()})
    x = np.random.default_rng(1).standard_normal((args.batch, args.block, args.width)).astype(np.float32)
    tx = torch.tensor(x)

    def our_pass():
        ours(ml.tensor(x))[0].sum().backward()
        ours.zero_grad()

    def their_pass():
        theirs(tx)[0].sum().backward()
        theirs.zero_grad(set_to_none=True)

    return our_pass, their_pass


def compare(name, ours, theirs, args) -> None:
    best_ours, best_theirs, cpu_ours, cpu_theirs = alternate(ours, theirs, args.steps, args.rounds)
    print(f"{name}")
    print(f"  minilm {best_ours * 1e3:8.1f} ms")
    print(f"  torch  {best_theirs * 1e3:8.1f} ms")
    print(f"  ratio minilm/torch = {best_ours / best_theirs:.2f}x")
    print(f"  CPU time (all threads): minilm {cpu_ours * 1e3:.1f} ms, torch {cpu_theirs * 1e3:.1f} ms, "
          f"ratio {cpu_ours / cpu_theirs:.2f}x")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--layers", type=int, default=2)
    parser.add_argument("--width", type=int, default=256)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--block", type=int, default=64)
    parser.add_argument("--vocab", type=int, default=2048)
    parser.add_argument("--steps", type=int, default=5, help="timed steps per round (median taken)")
    parser.add_argument("--rounds", type=int, default=3, help="alternating rounds; the best median counts")
    parser.add_argument("--profile", action="store_true", help="also print minilm's step time per op kind")
    add_threads_argument(parser)
    args = parser.parse_args()
    torch = start_torch(args.threads)

    print(describe_machine(torch_line(torch)))
    our_step, their_step = lstm_steps(torch, args)
    compare(f"LSTM LM training step: {args.layers} layers x {args.width}, B={args.batch}, T={args.block}, "
            f"vocab {args.vocab}, AdamW", our_step, their_step, args)
    if args.profile:  # ops only: the optimizer's update is no op, so it is not listed
        with Trace() as trace:
            our_step()
        print(trace.summary())
    compare(f"one LSTM layer {args.width} wide, forward + backward, B={args.batch}, T={args.block}",
            *layer_passes(torch, args), args)


if __name__ == "__main__":
    main()
