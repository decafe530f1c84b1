"""One GPT training step (forward, backward, AdamW), minilm vs PyTorch on the CPU.

Same architecture and sizes in both (GPT-2 blocks; default 4 layers, 256 wide, 4 heads,
T=128, B=16, vocab 2048), float32, timed alternately in one process; prints the ratio
minilm / torch (below 1.0: minilm is faster) and, with --profile, where minilm's time goes.

    python benchmarks/train_step.py [--steps 5] [--rounds 3] [--profile]
"""

from __future__ import annotations

import argparse
import cProfile
import io
import os
import pstats
import resource
import statistics
import sys
import time

import numpy as np
from machine import describe_machine, torch_line  # benchmarks/ is the script's folder, first on sys.path

import minilm as ml
from minilm import optim
from minilm.models import GPT, GPTConfig


def minilm_step(config: GPTConfig, batch: int, seed: int = 0):
    ml.manual_seed(seed)
    model = GPT(config)
    opt = optim.AdamW(optim.param_groups_no_decay(model, 0.1), lr=3e-4, flat=True)  # as the Trainer
    rng = np.random.default_rng(seed)
    ids = rng.integers(0, config.vocab_size, (batch, config.block_size + 1))
    x, y = ids[:, :-1], ids[:, 1:]

    def step():
        _, loss = model(x, targets=y)
        loss.backward()
        opt.step()
        opt.zero_grad()
        return loss

    return step


def torch_gpt(torch, config: GPTConfig, seed: int = 0):
    """The same GPT-2 architecture in plain PyTorch (no transformers overhead): tied head,
    tanh GELU, causal scaled_dot_product_attention; torch's own initialisation."""
    nn, functional = torch.nn, torch.nn.functional
    torch.manual_seed(seed)
    c = config

    class Block(nn.Module):
        def __init__(self):
            super().__init__()
            self.ln_1, self.ln_2 = nn.LayerNorm(c.n_embd), nn.LayerNorm(c.n_embd)
            self.qkv, self.proj = nn.Linear(c.n_embd, 3 * c.n_embd), nn.Linear(c.n_embd, c.n_embd)
            self.fc, self.fc_proj = nn.Linear(c.n_embd, 4 * c.n_embd), nn.Linear(4 * c.n_embd, c.n_embd)

        def forward(self, x):
            b, t, ch = x.shape
            q, k, v = self.qkv(self.ln_1(x)).split(ch, dim=-1)
            q, k, v = (z.view(b, t, c.n_head, ch // c.n_head).transpose(1, 2) for z in (q, k, v))
            a = functional.scaled_dot_product_attention(q, k, v, is_causal=True)
            x = x + self.proj(a.transpose(1, 2).reshape(b, t, ch))
            return x + self.fc_proj(functional.gelu(self.fc(self.ln_2(x)), approximate="tanh"))

    class Model(nn.Module):
        def __init__(self):
            super().__init__()
            self.wte, self.wpe = nn.Embedding(c.vocab_size, c.n_embd), nn.Embedding(c.block_size, c.n_embd)
            self.blocks = nn.ModuleList(Block() for _ in range(c.n_layer))
            self.ln_f = nn.LayerNorm(c.n_embd)

        def forward(self, ids):
            x = self.wte(ids) + self.wpe(torch.arange(ids.shape[1]))
            for block in self.blocks:
                x = block(x)
            return self.ln_f(x) @ self.wte.weight.T

    return Model()


def torch_adamw(torch, model, lr: float, weight_decay: float = 0.1, betas=(0.9, 0.999)):
    """AdamW with minilm's parameter groups (param_groups_no_decay): decay for the Linear
    matrices only, none for biases, LayerNorm weights and the embeddings."""
    decay = [p for n, p in model.named_parameters() if p.ndim >= 2 and "wte" not in n and "wpe" not in n]
    rest = [p for n, p in model.named_parameters() if not (p.ndim >= 2 and "wte" not in n and "wpe" not in n)]
    return torch.optim.AdamW([{"params": decay, "weight_decay": weight_decay}, {"params": rest, "weight_decay": 0.0}],
                             lr=lr, betas=betas, foreach=True)


def torch_step(torch, config: GPTConfig, batch: int, seed: int = 0):
    """One training step of torch_gpt on fixed random ids (forward, backward, AdamW)."""
    functional, c = torch.nn.functional, config
    model = torch_gpt(torch, config, seed)
    opt = torch_adamw(torch, model, lr=3e-4)
    rng = np.random.default_rng(seed)
    ids = torch.tensor(rng.integers(0, c.vocab_size, (batch, c.block_size + 1)))
    x, y = ids[:, :-1], ids[:, 1:]

    def step():
        logits = model(x)
        loss = functional.cross_entropy(logits.reshape(-1, c.vocab_size), y.reshape(-1))
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        return loss

    return step


def time_steps(step, steps: int, clock=time.perf_counter) -> float:
    """Median seconds of `steps` calls on `clock` (perf_counter: wall; process_time: CPU)."""
    samples = []
    for _ in range(steps):
        start = clock()
        step()
        samples.append(clock() - start)
    return statistics.median(samples)


def kernel_cost(step, steps: int) -> tuple[float, float]:
    """Minor page faults and system-time milliseconds per step (the allocator's price: a large
    temporary that is a fresh mmap is zero-filled page by page by the kernel)."""
    before = resource.getrusage(resource.RUSAGE_SELF)
    for _ in range(steps):
        step()
    after = resource.getrusage(resource.RUSAGE_SELF)
    return (after.ru_minflt - before.ru_minflt) / steps, (after.ru_stime - before.ru_stime) * 1e3 / steps


def model_flops(config: GPTConfig, batch: int) -> float:
    """6 N tokens for the weights' matmuls plus the attention score/value matmuls (x3 for backward)."""
    c = config
    n = 12 * c.n_layer * c.n_embd**2 + c.vocab_size * c.n_embd
    tokens = batch * c.block_size
    attention = 2 * 2 * c.n_layer * batch * c.block_size**2 * c.n_embd
    return 6 * n * tokens + 3 * attention


def alternate(ours, theirs, steps: int, rounds: int) -> tuple[float, float, float, float]:
    """Warm both up, time them in alternating rounds (the best median of each counts), then
    their median CPU time a call: (wall ours, wall theirs, CPU ours, CPU theirs) in seconds."""
    ours(), theirs()  # warm up (allocations, first-call paths)
    t_ours, t_theirs = [], []
    for _ in range(rounds):
        t_ours.append(time_steps(ours, steps))
        t_theirs.append(time_steps(theirs, steps))
    cpu_ours, cpu_theirs = time_steps(ours, steps, time.process_time), time_steps(theirs, steps, time.process_time)
    return min(t_ours), min(t_theirs), cpu_ours, cpu_theirs


def add_threads_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--threads", type=int, default=None,
                        help="BLAS, torch and minilm threads (default: the libraries' own); with 1, the CPU-time "
                             "ratio is a fair measure on a machine other processes load")


def start_torch(threads: int | None):
    """Set every library's thread count (re-running the script if needed), then import torch."""
    use_threads(threads)
    import torch

    if threads:
        torch.set_num_threads(threads)
    return torch


def use_threads(threads: int | None) -> None:
    """Re-run this script with every library's thread count set (they read it at start-up)."""
    if not threads or os.environ.get("MINILM_NUM_THREADS") == str(threads):
        return
    names = ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS", "MINILM_NUM_THREADS")
    os.environ.update({name: str(threads) for name in names})
    os.execv(sys.executable, [sys.executable, *sys.argv])


def add_model_arguments(parser: argparse.ArgumentParser, batch_help: str | None = None) -> None:
    """The GPT size and timing options this benchmark and distributed_bench.py share."""
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--width", type=int, default=256)
    parser.add_argument("--heads", type=int, default=4)
    parser.add_argument("--block", type=int, default=128)
    parser.add_argument("--batch", type=int, default=16, help=batch_help)
    parser.add_argument("--vocab", type=int, default=2048)
    parser.add_argument("--steps", type=int, default=5, help="timed steps per round (median taken)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_model_arguments(parser)
    parser.add_argument("--rounds", type=int, default=3, help="alternating rounds; the best median counts")
    parser.add_argument("--profile", action="store_true", help="print minilm's cProfile top entries")
    add_threads_argument(parser)
    args = parser.parse_args()
    torch = start_torch(args.threads)

    config = GPTConfig(vocab_size=args.vocab, n_layer=args.layers, n_head=args.heads, n_embd=args.width,
                       block_size=args.block)
    ours, theirs = minilm_step(config, args.batch), torch_step(torch, config, args.batch)
    flops = model_flops(config, args.batch)
    print(f"GPT training step: {args.layers} layers, {args.width} wide, {args.heads} heads, T={args.block}, "
          f"B={args.batch}, vocab {args.vocab} ({flops / 1e9:.1f} GFLOP a step)")
    print(describe_machine(torch_line(torch)))
    compare_steps(ours, theirs, flops, args.steps, args.rounds, args.profile)


def compare_steps(ours, theirs, flops: float, steps: int, rounds: int, profile: bool, peer: str = "torch") -> None:
    """Time two step functions alternately (best of `rounds` medians of `steps`) and print
    their times, GFLOP/s, kernel costs, CPU times and ratios; with `profile`, minilm's cProfile top."""
    best_ours, best_theirs, cpu_ours, cpu_theirs = alternate(ours, theirs, steps, rounds)
    width = max(len(peer), len("minilm"))
    for name, best, step in (("minilm", best_ours, ours), (peer, best_theirs, theirs)):
        faults, system = kernel_cost(step, steps)
        print(f"  {name:<{width}} {best * 1e3:8.1f} ms  ({flops / best / 1e9:6.1f} GFLOP/s)  "
              f"{faults:7.0f} minor faults, {system:5.1f} ms system time a step")
    print(f"  ratio minilm/{peer.split()[0]} = {best_ours / best_theirs:.2f}x  (medians of {steps} steps, best of "
          f"{rounds} alternating rounds)")
    print(f"  CPU time a step (all threads): minilm {cpu_ours * 1e3:.1f} ms, {peer.split()[0]} "
          f"{cpu_theirs * 1e3:.1f} ms, ratio {cpu_ours / cpu_theirs:.2f}x")
    if profile:
        profiler = cProfile.Profile()
        profiler.enable()
        for _ in range(steps):
            ours()
        profiler.disable()
        out = io.StringIO()
        pstats.Stats(profiler, stream=out).sort_stats("tottime").print_stats(18)
        print(out.getvalue())


if __name__ == "__main__":
    main()
