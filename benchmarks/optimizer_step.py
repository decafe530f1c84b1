"""One AdamW step over a GPT's parameters: minilm per parameter and flat, vs torch.optim.AdamW.

The parameters have a GPT-2-style model's shapes (default 6 layers, 384 wide, vocab 8192:
about 16M parameters), float32, with decay and no-decay groups; the gradients are fixed
random arrays. Only `step()` is timed, alternating between the contenders in one process
(these machines are shared and noisy); the best median counts. Ratios are minilm / torch
(below 1.0: minilm is faster).

    python benchmarks/optimizer_step.py [--layers 6] [--width 384] [--vocab 8192] [--steps 10]
"""

from __future__ import annotations

import argparse

import numpy as np
from train_step import time_steps  # benchmarks/ is the script's folder, first on sys.path

import minilm as ml
from minilm import optim
from minilm.models import GPT, GPTConfig


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--layers", type=int, default=6)
    parser.add_argument("--width", type=int, default=384)
    parser.add_argument("--vocab", type=int, default=8192)
    parser.add_argument("--steps", type=int, default=10, help="timed steps per round (median taken)")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    import torch

    config = GPTConfig(vocab_size=args.vocab, n_layer=args.layers, n_head=6, n_embd=args.width, block_size=256)
    rng = np.random.default_rng(0)

    def minilm_optimizer(flat: bool):
        ml.manual_seed(0)
        model = GPT(config)
        opt = optim.AdamW(optim.param_groups_no_decay(model, 0.1), lr=3e-4, flat=flat)
        for p in model.parameters():
            p.grad = ml.tensor(rng.standard_normal(p.shape).astype(np.float32))
        if flat:
            opt.flat.attach()  # copy the assigned gradients into the flat buffer once
        return opt

    def torch_optimizer(**options):
        ml.manual_seed(0)
        model = GPT(config)
        groups = []
        for group in optim.param_groups_no_decay(model, 0.1):
            params = []
            for p in group["params"]:
                t = torch.nn.Parameter(torch.from_numpy(p.numpy().copy()))
                t.grad = torch.from_numpy(rng.standard_normal(p.shape).astype(np.float32))
                params.append(t)
            groups.append({"params": params, "weight_decay": group["weight_decay"]})
        return torch.optim.AdamW(groups, lr=3e-4, **options)

    contenders = {
        "minilm per-parameter": minilm_optimizer(False).step,
        "minilm flat": minilm_optimizer(True).step,
        "torch for-loop": torch_optimizer(foreach=False).step,
        "torch foreach": torch_optimizer(foreach=True).step,
        "torch fused": torch_optimizer(fused=True).step,
    }
    for step in contenders.values():
        step()  # warm up: state allocation
    times = {name: [] for name in contenders}
    for _ in range(args.rounds):
        for name, step in contenders.items():
            times[name].append(time_steps(step, args.steps))
    best = {name: min(samples) for name, samples in times.items()}
    count = sum(p.size for p in GPT(config).parameters())
    print(f"AdamW step over {count / 1e6:.1f}M float32 parameters ({args.layers} layers, {args.width} wide, "
          f"vocab {args.vocab}); torch {torch.__version__} threads={torch.get_num_threads()}, numpy {np.__version__}")
    for name, seconds in best.items():
        print(f"  {name:22s} {seconds * 1e3:8.2f} ms")
    reference = min(best[name] for name in best if name.startswith("torch"))
    for name in ("minilm per-parameter", "minilm flat"):
        print(f"  ratio {name} / fastest torch = {best[name] / reference:.2f}x")


if __name__ == "__main__":
    main()
