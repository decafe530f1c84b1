"""GPT training throughput on a CUDA GPU: minilm (CuPy) vs PyTorch eager, same architecture.

For each model size, both frameworks run the same GPT-2 training step (forward, backward,
AdamW) on the same GPU, alternately; the script prints tokens/s, the ratio minilm / torch
(above 1.0: minilm is faster) and MFU (model FLOPs utilisation against the GPU's dense
peak for the precision used). Writes a markdown table with --markdown FILE.

    python benchmarks/gpu_train.py [--sizes small,gpt2] [--precision fp32,tf32] [--steps 10]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

import numpy as np
from train_step import model_flops

SIZES = {  # name: (n_layer, n_embd, n_head, block_size, batch, vocab)
    "small": (6, 384, 6, 256, 32, 50304),
    "gpt2": (12, 768, 12, 1024, 8, 50304),
}
PEAK_TFLOPS = {  # dense peaks of an H100 SXM (H200: same compute)
    "fp32": 67.0,
    "tf32": 495.0,
}


def gpt_config(size):
    from minilm.models import GPTConfig

    n_layer, n_embd, n_head, block, _batch, vocab = size
    return GPTConfig(vocab_size=vocab, n_layer=n_layer, n_head=n_head, n_embd=n_embd, block_size=block)


def minilm_step(size, seed=0):
    """benchmarks/train_step.py's minilm step, on the GPU."""
    from train_step import minilm_step as cpu_or_gpu_step

    import minilm as ml

    ml.set_backend("cupy")
    step = cpu_or_gpu_step(gpt_config(size), size[4], seed)
    return step, ml.get_device("cuda").synchronize


def torch_step(size, seed=0):
    import torch
    import torch.nn as nn
    import torch.nn.functional as F

    n_layer, n_embd, n_head, block, batch, vocab = size
    torch.manual_seed(seed)

    class Block(nn.Module):
        def __init__(self):
            super().__init__()
            self.ln_1, self.ln_2 = nn.LayerNorm(n_embd), nn.LayerNorm(n_embd)
            self.qkv, self.proj = nn.Linear(n_embd, 3 * n_embd), nn.Linear(n_embd, n_embd)
            self.fc, self.fc_proj = nn.Linear(n_embd, 4 * n_embd), nn.Linear(4 * n_embd, n_embd)

        def forward(self, x):
            b, t, c = x.shape
            q, k, v = self.qkv(self.ln_1(x)).split(c, dim=-1)
            q, k, v = (z.view(b, t, n_head, c // n_head).transpose(1, 2) for z in (q, k, v))
            a = F.scaled_dot_product_attention(q, k, v, is_causal=True)  # what a PyTorch user writes
            x = x + self.proj(a.transpose(1, 2).reshape(b, t, c))
            return x + self.fc_proj(F.gelu(self.fc(self.ln_2(x)), approximate="tanh"))

    class Model(nn.Module):
        def __init__(self):
            super().__init__()
            self.wte, self.wpe = nn.Embedding(vocab, n_embd), nn.Embedding(block, n_embd)
            self.blocks = nn.ModuleList(Block() for _ in range(n_layer))
            self.ln_f = nn.LayerNorm(n_embd)

        def forward(self, ids):
            x = self.wte(ids) + self.wpe(torch.arange(ids.shape[1], device=ids.device))
            for blk in self.blocks:
                x = blk(x)
            return self.ln_f(x) @ self.wte.weight.T

    model = Model().cuda()
    opt = torch.optim.AdamW(model.parameters(), lr=3e-4, weight_decay=0.1)
    ids = torch.tensor(np.random.default_rng(seed).integers(0, vocab, (batch, block + 1)), device="cuda")
    x, y = ids[:, :-1], ids[:, 1:]

    def step():
        loss = F.cross_entropy(model(x).reshape(-1, vocab), y.reshape(-1))
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    return step, torch.cuda.synchronize


def time_it(step, sync, steps) -> float:
    step()
    step()
    sync()
    samples = []
    for _ in range(steps):
        start = time.perf_counter()
        step()
        sync()
        samples.append(time.perf_counter() - start)
    return statistics.median(samples)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="small,gpt2")
    parser.add_argument("--precision", default="fp32,tf32")
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--markdown", default=None, help="also write the table to this file")
    args = parser.parse_args()
    import cupy
    import torch

    name = torch.cuda.get_device_name(0)
    rows = []
    for precision in args.precision.split(","):
        tf32 = precision == "tf32"
        torch.backends.cuda.matmul.allow_tf32 = tf32
        torch.backends.cudnn.allow_tf32 = tf32
        # CuPy reads CUPY_TF32 at its first matmul; the switch needs a fresh process, so
        # tf32 rows for minilm are measured in a child process with the variable set.
        for size_name in args.sizes.split(","):
            size = SIZES[size_name]
            batch, block = size[4], size[3]
            flops = model_flops(gpt_config(size), batch)
            tokens = batch * block
            t_torch = time_it(*torch_step(size), args.steps)
            if tf32 and os.environ.get("CUPY_TF32") != "1":
                t_ours = _child_time(size_name, args.steps)
            else:
                t_ours = time_it(*minilm_step(size), args.steps)
            peak = PEAK_TFLOPS[precision] * 1e12
            rows.append((precision, size_name, tokens / t_ours, tokens / t_torch, t_torch / t_ours,
                         flops / t_ours / peak, flops / t_torch / peak))
            cupy.get_default_memory_pool().free_all_blocks()
            torch.cuda.empty_cache()
    lines = [f"GPU: {name}   date: {time.strftime('%Y-%m-%d')}   torch {torch.__version__}   cupy {cupy.__version__}",
             "", "| precision | model | minilm tok/s | torch tok/s | minilm/torch | minilm MFU | torch MFU |",
             "|---|---|---|---|---|---|---|"]
    for p, s, ours, theirs, ratio, mfu_o, mfu_t in rows:
        lines.append(f"| {p} | {s} | {ours:,.0f} | {theirs:,.0f} | {ratio:.2f}x | {mfu_o:.1%} | {mfu_t:.1%} |")
    text = "\n".join(lines)
    print(text)
    if args.markdown:
        with open(args.markdown, "w", encoding="utf-8") as f:
            f.write(text + "\n")


def _child_time(size_name: str, steps: int) -> float:
    import subprocess

    code = (f"import sys; sys.path.insert(0, {os.path.dirname(os.path.abspath(__file__))!r}); import gpu_train as g; "
            f"print(g.time_it(*g.minilm_step(g.SIZES[{size_name!r}]), {steps}))")
    out = subprocess.run([sys.executable, "-c", code], env={**os.environ, "CUPY_TF32": "1"}, capture_output=True,
                         text=True, check=True)
    return float(out.stdout.strip().splitlines()[-1])


if __name__ == "__main__":
    main()
