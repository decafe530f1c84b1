"""Autograd overhead: a tiny MLP training step and single ops, minilm vs PyTorch (CPU).

At these sizes the arithmetic is trivial, so the time is the framework's own: creating
tensors, recording the graph, walking it backward. Both frameworks run in the same process,
alternately, and the script prints time ratios (minilm / torch; below 1.0 means faster).

    python benchmarks/autograd_overhead.py [--repeats 2000] [--threads 1]
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
from machine import describe_machine, torch_line  # benchmarks/ is the script's folder, first on sys.path

import minilm as ml
import minilm.functional as F


def median_time(fn, repeats: int, rounds: int = 7) -> float:
    """Median over `rounds` of the mean time of `repeats` calls (seconds per call)."""
    for _ in range(min(repeats, 50)):
        fn()
    samples = []
    for _ in range(rounds):
        start = time.perf_counter()
        for _ in range(repeats):
            fn()
        samples.append((time.perf_counter() - start) / repeats)
    return statistics.median(samples)


def mlp_step_minilm(batch: int, width: int, classes: int):
    rng = np.random.default_rng(0)
    shapes = [(width, width), (width,), (width, width), (width,), (classes, width), (classes,)]
    params = [ml.tensor(rng.standard_normal(s).astype(np.float32) * 0.1, requires_grad=True) for s in shapes]
    x = ml.tensor(rng.standard_normal((batch, width)).astype(np.float32))
    y = rng.integers(0, classes, batch)

    def step():
        w1, b1, w2, b2, w3, b3 = params
        h = F.linear(x, w1, b1).relu()
        h = F.linear(h, w2, b2).relu()
        loss = F.cross_entropy(F.linear(h, w3, b3), y)
        loss.backward()
        with ml.no_grad():
            for p in params:
                p.data -= 0.01 * p.grad.data
                p.grad = None

    return step


def mlp_step_torch(torch, batch: int, width: int, classes: int):
    rng = np.random.default_rng(0)
    shapes = [(width, width), (width,), (width, width), (width,), (classes, width), (classes,)]
    params = [torch.tensor(rng.standard_normal(s).astype(np.float32) * 0.1, requires_grad=True) for s in shapes]
    x = torch.tensor(rng.standard_normal((batch, width)).astype(np.float32))
    y = torch.tensor(rng.integers(0, classes, batch))
    functional = torch.nn.functional

    def step():
        w1, b1, w2, b2, w3, b3 = params
        h = functional.linear(x, w1, b1).relu()
        h = functional.linear(h, w2, b2).relu()
        loss = functional.cross_entropy(functional.linear(h, w3, b3), y)
        loss.backward()
        with torch.no_grad():
            for p in params:
                p -= 0.01 * p.grad
                p.grad = None

    return step


def op_cases(torch):
    """(name, minilm forward+backward, torch forward+backward) on small [64, 32] inputs."""
    rng = np.random.default_rng(1)
    a_np, b_np = rng.standard_normal((64, 32)).astype(np.float32), rng.standard_normal((32, 32)).astype(np.float32)
    a, b = ml.tensor(a_np, requires_grad=True), ml.tensor(b_np, requires_grad=True)
    ta, tb = torch.tensor(a_np, requires_grad=True), torch.tensor(b_np, requires_grad=True)

    def run(fn, *inputs):
        def call():
            out = fn(*inputs)
            out.sum().backward()
            for t in inputs:
                t.grad = None

        return call

    return [
        ("add", run(lambda x: x + x, a), run(lambda x: x + x, ta)),
        ("mul", run(lambda x: x * x, a), run(lambda x: x * x, ta)),
        ("exp", run(lambda x: x.exp(), a), run(lambda x: x.exp(), ta)),
        ("relu", run(lambda x: x.relu(), a), run(lambda x: x.relu(), ta)),
        ("matmul", run(lambda x, y: x @ y, a, b), run(lambda x, y: x @ y, ta, tb)),
        ("softmax", run(lambda x: F.softmax(x, -1), a), run(lambda x: torch.softmax(x, -1), ta)),
        ("layer_norm", run(lambda x: F.layer_norm(x), a), run(lambda x: torch.nn.functional.layer_norm(x, (32,)), ta)),
        ("sum(axis)", run(lambda x: x.sum(axis=0), a), run(lambda x: x.sum(dim=0), ta)),
        ("getitem", run(lambda x: x[1:10], a), run(lambda x: x[1:10], ta)),
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=500)
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads (NumPy's BLAS uses its own)")
    args = parser.parse_args()
    import torch

    torch.set_num_threads(args.threads)
    print(f"minilm {ml.__version__} | torch {torch.__version__} | numpy {np.__version__}")
    print(describe_machine(torch_line(torch)))

    ours = mlp_step_minilm(64, 32, 10)
    theirs = mlp_step_torch(torch, 64, 32, 10)
    t_ours, t_theirs = [], []
    for _ in range(3):  # alternate, so both see the same machine noise
        t_ours.append(median_time(ours, args.repeats))
        t_theirs.append(median_time(theirs, args.repeats))
    mo, mt = min(t_ours), min(t_theirs)
    print("\nMLP training step (3 linear layers, width 32, batch 64, cross-entropy, SGD)")
    print(f"  minilm {mo * 1e6:8.1f} us   torch {mt * 1e6:8.1f} us   ratio minilm/torch = {mo / mt:.2f}x")

    print("\nSingle op, forward + backward on [64, 32] (us per call)")
    print(f"  {'op':<12}{'minilm':>10}{'torch':>10}{'ratio':>8}")
    for name, ours_op, theirs_op in op_cases(torch):
        o, t = median_time(ours_op, args.repeats), median_time(theirs_op, args.repeats)
        print(f"  {name:<12}{o * 1e6:10.1f}{t * 1e6:10.1f}{o / t:8.2f}x")


if __name__ == "__main__":
    main()
