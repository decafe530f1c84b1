"""Peak memory and time of a training step with and without activation checkpointing (minilm).

A GPT and a Llama of the same small size (default 8 blocks, width 256, T=256, B=8), one
forward + backward each way; the peak is NumPy's allocations during the step, traced by
tracemalloc (NumPy reports its array memory to it), above what was allocated before the step.

    python benchmarks/checkpoint_memory.py [--layers 8] [--width 256] [--length 256] [--batch 8]
"""

from __future__ import annotations

import argparse
import os
import time
import tracemalloc

import numpy as np

import minilm as ml
from minilm.models import GPT, GPTConfig, Llama, LlamaConfig


def build(kind: str, args):
    ml.manual_seed(0)
    if kind == "gpt":
        return GPT(GPTConfig(vocab_size=4096, n_layer=args.layers, n_head=4, n_embd=args.width,
                             block_size=args.length))
    return Llama(LlamaConfig(vocab_size=4096, hidden_size=args.width, intermediate_size=args.width * 8 // 3,
                             num_hidden_layers=args.layers, num_attention_heads=4, num_key_value_heads=2,
                             max_position_embeddings=args.length))


def step_peak(model, ids) -> tuple[float, float]:
    """(peak MB above the start, seconds) of one forward + backward."""
    tracemalloc.start()
    start, _ = tracemalloc.get_traced_memory()
    started = time.perf_counter()
    _, loss = model(ids, targets=ids)
    loss.backward()
    seconds = time.perf_counter() - started
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    model.zero_grad()
    return (peak - start) / 2**20, seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--layers", type=int, default=8)
    parser.add_argument("--width", type=int, default=256)
    parser.add_argument("--length", type=int, default=256)
    parser.add_argument("--batch", type=int, default=8)
    args = parser.parse_args()
    print(f"machine: {os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f}; numpy {np.__version__}")
    print(f"{args.layers} blocks, width {args.width}, batch {args.batch} x {args.length} tokens, float32")
    ids = np.random.default_rng(0).integers(0, 4096, (args.batch, args.length))
    for kind in ("gpt", "llama"):
        model = build(kind, args).train()
        plain_mb, plain_s = step_peak(model, ids)
        model.gradient_checkpointing_enable()
        ckpt_mb, ckpt_s = step_peak(model, ids)
        print(f"{kind:6s} plain: peak +{plain_mb:7.1f} MB, {plain_s:5.2f} s   checkpointed: peak +{ckpt_mb:7.1f} MB, "
              f"{ckpt_s:5.2f} s   -> memory {ckpt_mb / plain_mb:.2f}x, time {ckpt_s / plain_s:.2f}x")


if __name__ == "__main__":
    main()
