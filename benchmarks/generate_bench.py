"""Greedy generation speed: minilm vs transformers' generate on the CPU, same GPT-2 weights.

Batch 1, a 16-token prompt, 200 new tokens, a 4-layer 256-wide GPT-2 (vocab 2048, context
256) with random weights saved once and loaded by both. Prints tokens/s, the ratio
minilm / transformers (above 1.0: minilm is faster), and minilm cached vs uncached.

    python benchmarks/generate_bench.py [--new 200] [--rounds 3]
"""

from __future__ import annotations

import argparse
import tempfile
import time

import numpy as np
from machine import describe_machine, torch_line  # benchmarks/ is the script's folder, first on sys.path

import minilm as ml
from minilm.models import GPT, GPTConfig


def best_rate(fn, new_tokens: int, rounds: int) -> float:
    best = float("inf")
    for _ in range(rounds):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return new_tokens / best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--new", type=int, default=200)
    parser.add_argument("--prompt", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    import torch
    import transformers

    ml.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=2048, n_layer=4, n_head=4, n_embd=256, block_size=256))
    folder = tempfile.mkdtemp()
    model.save_pretrained(folder)
    reference = transformers.GPT2LMHeadModel.from_pretrained(folder).eval()
    prompt = np.random.default_rng(0).integers(0, 2048, (1, args.prompt))
    torch_prompt = torch.tensor(prompt)

    ours = model.generate(prompt, max_new_tokens=args.new)
    with torch.no_grad():
        theirs = reference.generate(torch_prompt, max_new_tokens=args.new, do_sample=False, pad_token_id=0,
                                    min_new_tokens=args.new).numpy()
    print(f"minilm {ml.__version__}, torch {torch.__version__} ({torch.get_num_threads()} threads), "
          f"transformers {transformers.__version__}")
    print(describe_machine(torch_line(torch)))
    print(f"same tokens as transformers: {np.array_equal(ours, theirs)}")

    def run_torch():
        with torch.no_grad():
            reference.generate(torch_prompt, max_new_tokens=args.new, do_sample=False, pad_token_id=0,
                               min_new_tokens=args.new)

    cached = best_rate(lambda: model.generate(prompt, max_new_tokens=args.new), args.new, args.rounds)
    hf = best_rate(run_torch, args.new, args.rounds)
    uncached = best_rate(lambda: model.generate(prompt, max_new_tokens=args.new, use_cache=False), args.new,
                         max(1, args.rounds - 1))
    print(f"greedy, batch 1, {args.new} new tokens, 4 layers x 256, vocab 2048")
    print(f"  minilm (KV cache)    {cached:8.1f} tokens/s")
    print(f"  transformers         {hf:8.1f} tokens/s")
    print(f"  minilm (no cache)    {uncached:8.1f} tokens/s")
    print(f"  ratio minilm/transformers = {cached / hf:.2f}x   cached/uncached = {cached / uncached:.2f}x")


if __name__ == "__main__":
    main()
