"""The GELU activations elementwise, minilm vs PyTorch on the CPU, in ns an element.

The exact GELU x Phi(x) (BERT's, minilm.special.normal_cdf in float32) and GPT-2's tanh
form, forward and backward, on one [rows, 4C] MLP activation of float32 (default 7936 x 1536,
all-MiniLM-L6-v2's FFN over 256 sentences of 31 tokens), x ~ N(0, 1.5^2). Both sides run the
same inputs in one process; the best of --rounds counts. With --after-gemm each timed call
follows a matrix product of its own library (as in a model, where OpenBLAS's idle threads
then spin on the other cores for a while). The forward is timed as inference (no_grad: the
exact form then keeps no Phi(x)); the backward with the forward's saved values.

    python benchmarks/gelu_bench.py [--rows 7936] [--cols 1536] [--threads N] [--after-gemm]
"""

from __future__ import annotations

import argparse
import time

import numpy as np
from machine import describe_machine, torch_line  # benchmarks/ is the script's folder, first on sys.path
from train_step import add_threads_argument, start_torch

from minilm import functional as F
from minilm.autograd import Tensor, no_grad


def best_ns(function, elements: int, rounds: int, before=None) -> float:
    """Best time of `rounds` calls, in ns an element (`before` runs untimed before each)."""
    function()
    best = float("inf")
    for _ in range(rounds):
        if before is not None:
            before()
        start = time.perf_counter()
        function()
        best = min(best, time.perf_counter() - start)
    return best / elements * 1e9


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=7936)
    parser.add_argument("--cols", type=int, default=1536)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--after-gemm", action="store_true", help="run a matrix product before each timed call")
    add_threads_argument(parser)
    args = parser.parse_args()
    torch = start_torch(args.threads)
    print(describe_machine(torch_line(torch)))

    rng = np.random.default_rng(0)
    x = (rng.standard_normal((args.rows, args.cols)) * 1.5).astype(np.float32)
    gy = rng.standard_normal(x.shape).astype(np.float32)
    a = rng.standard_normal((args.rows, 384)).astype(np.float32)
    w = rng.standard_normal((args.cols, 384)).astype(np.float32)
    a_torch, w_torch = torch.from_numpy(a), torch.from_numpy(w)
    ours_before = (lambda: a @ w.T) if args.after_gemm else None  # each side after its own library's GEMM
    theirs_before = (lambda: a_torch @ w_torch.T) if args.after_gemm else None
    print(f"GELU on [{args.rows}, {args.cols}] float32{', each call after a GEMM' if args.after_gemm else ''}:")
    print(f"{'':24s}{'minilm':>10s}{'torch':>10s}{'ratio':>8s}   (ns an element; minilm / torch, below 1.0 is faster)")
    for approximate in ("none", "tanh"):
        name = "exact (erf)" if approximate == "none" else "tanh"
        for phase, ours, theirs in contenders(torch, approximate, x, gy):
            t_ours = best_ns(ours, x.size, args.rounds, ours_before)
            t_theirs = best_ns(theirs, x.size, args.rounds, theirs_before)
            print(f"  {name + ' ' + phase:22s}{t_ours:10.2f}{t_theirs:10.2f}{t_ours / t_theirs:8.2f}x")


def contenders(torch, approximate: str, x: np.ndarray, gy: np.ndarray):
    """(phase, minilm call, torch call) for the forward (inference) and the backward."""
    x_torch, gy_torch = torch.from_numpy(x), torch.from_numpy(gy)

    def ours_forward():
        with no_grad():
            return F.GELU(approximate).forward(x)

    def theirs_forward():
        with torch.no_grad():
            return torch.nn.functional.gelu(x_torch, approximate=approximate)

    node = F.GELU(approximate)  # a node that has run its forward, as backward finds it
    node.inputs = (Tensor(x),)
    node.forward(x)
    x_grad = x_torch.clone().requires_grad_(True)
    y_grad = torch.nn.functional.gelu(x_grad, approximate=approximate)
    return [("forward", ours_forward, theirs_forward),
            ("backward", lambda: node.backward(gy),
             lambda: torch.autograd.grad(y_grad, x_grad, gy_torch, retain_graph=True))]


if __name__ == "__main__":
    main()
