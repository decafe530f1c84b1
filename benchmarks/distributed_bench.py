"""Data-parallel step time: one process vs two MPI ranks, and the time in the allreduce.

One GPT training step (forward, backward, gradient allreduce, AdamW) on a fixed global
batch, timed in three set-ups launched as fresh processes (thread counts must be set
before NumPy starts):

    1 process  x 2 BLAS threads     the single-process baseline on a 2-core machine
    1 process  x 1 BLAS thread      what each rank of the 2-rank run has
    2 ranks    x 1 BLAS thread      mpiexec -n 2, each rank half of the global batch

For the 2-rank run it reports the time inside the allreduce per step (which includes
waiting for the slower rank) and, separately, a bare allreduce of the same flat buffer
after a barrier (the pure communication cost).

    python benchmarks/distributed_bench.py [--layers 4] [--width 256] [--batch 16] [--steps 5] [--rounds 3]

The set-ups are launched in turn, `--rounds` times; each reports its best round (the
machines are noisy, and OpenBLAS with 2 threads suffers most from other load).

Needs mpi4py and an mpiexec (pip install mpi4py mpich). On a machine with N cores, N ranks
of one thread each compete for the same cores as one process with N threads does, so do
not expect the 2-rank run to be faster per global batch there: data parallelism pays off
when each rank has its own cores, GPU or machine.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

from machine import describe_machine  # benchmarks/ is the script's folder, first on sys.path
from train_step import add_model_arguments


def worker(args) -> None:
    """One process (or rank) of a set-up: time the steps, print one JSON line on rank 0."""
    import numpy as np

    import minilm as ml
    from minilm import distributed, optim
    from minilm.models import GPT, GPTConfig

    comm = distributed.init()
    if args.batch % comm.size:
        raise SystemExit(f"--batch {args.batch} is not divisible by {comm.size} ranks")
    ml.manual_seed(0)
    config = GPTConfig(vocab_size=args.vocab, n_layer=args.layers, n_head=args.heads, n_embd=args.width,
                       block_size=args.block)
    model = GPT(config)
    comm.broadcast_parameters(model)
    optimizer = optim.AdamW(optim.param_groups_no_decay(model, 0.1), lr=3e-4)
    allreduce = distributed.GradientAllreduce(model.parameters(), comm)
    windows = np.random.default_rng(0).integers(0, args.vocab, (args.batch, args.block + 1))
    batch = comm.shard({"ids": windows[:, :-1], "targets": windows[:, 1:]})

    def step():
        _, loss = model(batch["ids"], targets=batch["targets"])
        loss.backward()
        allreduce(float(loss.item()))  # a no-op in a world of one
        optimizer.step()
        optimizer.zero_grad()

    step()  # warm-up: allocations, the flat buffer
    times, in_allreduce = [], []
    for _ in range(args.steps):
        comm.barrier()
        before = comm.allreduce_seconds
        started = time.perf_counter()
        step()
        times.append(time.perf_counter() - started)
        in_allreduce.append(comm.allreduce_seconds - before)
    step_time = max(comm.mpi.allgather(statistics.median(times))) if comm.size > 1 else statistics.median(times)

    bare = 0.0
    if comm.size > 1:  # the allreduce alone, every rank arriving together
        rounds = 20
        comm.barrier()
        before = comm.allreduce_seconds
        for _ in range(rounds):
            comm.barrier()
            comm.sum_in_place(allreduce.buffer)
        bare = (comm.allreduce_seconds - before) / rounds
    if comm.is_main:
        print(json.dumps({"ranks": comm.size, "step_s": step_time,
                          "allreduce_in_step_s": statistics.median(in_allreduce),
                          "bare_allreduce_s": bare, "buffer_mb": allreduce.buffer.nbytes / 2**20,
                          "parameters": model.num_parameters()}))


def launch(args, ranks: int, threads: int) -> dict:
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), OPENBLAS_NUM_THREADS=str(threads),
               MKL_NUM_THREADS=str(threads))
    command = [sys.executable, __file__, "--worker"] + [f"--{k}={v}" for k, v in sizes(args).items()]
    if ranks > 1:
        command = [mpiexec_path(), "-n", str(ranks)] + command
    result = subprocess.run(command, capture_output=True, text=True, env=env, timeout=1800)
    if result.returncode != 0:
        raise SystemExit(f"{' '.join(command)} failed:\n{result.stderr}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def mpiexec_path() -> str:
    beside = Path(sys.executable).parent / "mpiexec"
    found = str(beside) if beside.exists() else shutil.which("mpiexec")
    if found is None:
        raise SystemExit("no mpiexec found: pip install mpi4py mpich")
    return found


def sizes(args) -> dict:
    return {k: getattr(args, k) for k in ("layers", "width", "heads", "block", "batch", "vocab", "steps")}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_model_arguments(parser, batch_help="global batch (split over the ranks)")
    parser.add_argument("--rounds", type=int, default=3, help="rounds over the set-ups; the best one counts")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(args)
        return

    print(f"GPT {args.layers} layers x {args.width} wide, global batch {args.batch} x {args.block} tokens, "
          f"vocab {args.vocab}; median of {args.steps} steps; {os.cpu_count()} CPU cores")
    setups = {"1 process  x 2 threads": (1, 2), "1 process  x 1 thread ": (1, 1), "2 ranks    x 1 thread ": (2, 1)}
    best: dict[str, dict] = {}
    for _ in range(args.rounds):
        for label, (ranks, threads) in setups.items():
            result = launch(args, ranks, threads)
            if label not in best or result["step_s"] < best[label]["step_s"]:
                best[label] = result
    baseline = best["1 process  x 2 threads"]
    print(f"{baseline['parameters']:,} parameters; flat gradient buffer {baseline['buffer_mb']:.1f} MiB")
    print(describe_machine())
    for label, r in best.items():
        speed = baseline["step_s"] / r["step_s"]
        line = f"{label}  step {r['step_s'] * 1e3:8.1f} ms  ({speed:.2f}x the baseline's speed)"
        if r["ranks"] > 1:
            line += (f"  allreduce in the step {r['allreduce_in_step_s'] * 1e3:.1f} ms, "
                     f"bare allreduce {r['bare_allreduce_s'] * 1e3:.2f} ms")
        print(line)


if __name__ == "__main__":
    main()
