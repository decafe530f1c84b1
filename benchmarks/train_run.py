"""A whole `minilm train` run against the same training in a plain PyTorch loop, on the CPU.

The laptop-first model: a character-level GPT, 4 layers x 128 wide, 4 heads, T=64, B=12,
on the built-in text (the Python documentation in CPython's pydoc_data), default 2,000 steps.

1. minilm: the command itself, `minilm train --tokenizer char ...`, in a subprocess, timed
   from start to exit (tokenizer, data, the loop with its evaluations and checkpoints, the
   saved model). Its own "trained N steps in X s" line is the training loop alone.
2. PyTorch: the same model (benchmarks/train_step.py's torch_gpt, torch's initialisation),
   on the run's own train/validation tokens (the run folder's train.bin and val.bin), the
   same random windows (minilm.data.RandomWindowSampler with the run's seed), the same
   schedule (warmup + cosine to lr * min_lr_ratio), AdamW betas, weight decay groups, gradient
   clipping and evaluations (the first eval_batches windows of the validation text, every
   eval_interval steps). Timed from the first step to the last evaluation; no checkpoints.

Ratio minilm / torch of wall times (below 1.0: minilm is faster), for the loop and for the
whole command, and both validation losses (the two differ in initialisation, so their final
losses are close but not equal). One run each, one after the other: a long run averages out
a machine's short disturbances, not a load that lasts minutes.

    python benchmarks/train_run.py [--steps 2000] [--threads N]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from machine import describe_machine, torch_line  # benchmarks/ is the script's folder, first on sys.path
from train_step import add_threads_argument, start_torch, torch_adamw, torch_gpt

from minilm.data import RandomWindowSampler, read_token_file, sequential_windows
from minilm.models import GPTConfig
from minilm.optim.lr_scheduler import warmup_cosine


def minilm_run(args, out_dir: Path) -> tuple[float, float, Path]:
    """(whole command seconds, training loop seconds, run folder) of one `minilm train`."""
    command = [sys.executable, "-m", "minilm", "train", "--tokenizer", "char", "--layers", str(args.layers),
               "--width", str(args.width), "--heads", str(args.heads), "--block-size", str(args.block),
               "--batch-size", str(args.batch), "--steps", str(args.steps), "--samples", "0", "--quiet",
               "--out-dir", str(out_dir), "--name", "run"]
    environment = dict(os.environ)
    if args.threads is not None:
        environment["MINILM_NUM_THREADS"] = str(args.threads)
    started = time.perf_counter()
    # cwd: out of this checkout, so that `-m minilm` imports the minilm that PYTHONPATH or the
    # installed package names (the current folder comes first on `-m`'s sys.path)
    finished = subprocess.run(command, capture_output=True, text=True, env=environment, cwd=out_dir)
    whole = time.perf_counter() - started
    if finished.returncode != 0:
        raise SystemExit(f"minilm train failed ({finished.returncode}):\n{finished.stdout}\n{finished.stderr}")
    trained = re.search(r"trained \d+ steps in (\d+) s", finished.stdout)
    if trained is None:
        raise SystemExit(f"no 'trained N steps in X s' line in minilm train's output:\n{finished.stdout}")
    return whole, float(trained.group(1)), out_dir / "run"


def torch_run(torch, run_dir: Path) -> tuple[float, float]:
    """(loop seconds, final validation loss) of the same training in PyTorch."""
    config = json.loads((run_dir / "config.json").read_text())
    c = config["training"]
    model_config = GPTConfig(**config["model_config"])
    train_ids, val_ids = read_token_file(run_dir / "train.bin"), read_token_file(run_dir / "val.bin")
    block, batch = config["block_size"], c["batch_size"]
    model = torch_gpt(torch, model_config, seed=c["seed"])
    optimizer = torch_adamw(torch, model, lr=c["lr"], weight_decay=c["weight_decay"], betas=tuple(c["betas"]))
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: warmup_cosine(step, c["warmup_steps"], c["schedule_steps"] or c["max_steps"],
                                              c["min_lr_ratio"]))
    sampler = RandomWindowSampler(train_ids, block, batch, c["seed"])
    cross_entropy = torch.nn.functional.cross_entropy

    def evaluate() -> float:
        total, count = 0.0, 0
        model.eval()
        with torch.no_grad():
            for index, (ids, targets) in enumerate(sequential_windows(val_ids, block, batch)):
                if index >= c["eval_batches"]:
                    break
                logits = model(torch.from_numpy(ids))
                loss = cross_entropy(logits.reshape(-1, logits.shape[-1]), torch.from_numpy(targets).reshape(-1))
                total += float(loss) * targets.size
                count += targets.size
        model.train()
        return total / count

    started = time.perf_counter()
    val_loss = math.nan
    for step in range(1, c["max_steps"] + 1):
        ids, targets = sampler.next_batch()
        logits = model(torch.from_numpy(ids))
        loss = cross_entropy(logits.reshape(-1, logits.shape[-1]), torch.from_numpy(targets).reshape(-1))
        loss.backward()
        value = loss.item()  # the Trainer reads the loss once a step, too
        if not math.isfinite(value):
            raise SystemExit(f"torch's loss became {value} at step {step}")
        if c["grad_clip"] > 0:
            torch.nn.utils.clip_grad_norm_(model.parameters(), c["grad_clip"])
        optimizer.step()
        schedule.step()
        optimizer.zero_grad(set_to_none=True)
        if step % c["eval_interval"] == 0 or step == c["max_steps"]:
            val_loss = evaluate()
    return time.perf_counter() - started, val_loss


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=2000)
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--width", type=int, default=128)
    parser.add_argument("--heads", type=int, default=4)
    parser.add_argument("--block", type=int, default=64)
    parser.add_argument("--batch", type=int, default=12)
    add_threads_argument(parser)
    args = parser.parse_args()
    torch = start_torch(args.threads)
    print(describe_machine(torch_line(torch)))
    print(f"character-level GPT, {args.layers} layers x {args.width}, {args.heads} heads, T={args.block}, "
          f"B={args.batch}, {args.steps} steps on the built-in text")
    with tempfile.TemporaryDirectory(prefix="minilm-train-run-") as folder:
        whole, loop, run_dir = minilm_run(args, Path(folder))
        ours = json.loads((run_dir / "final_metrics.json").read_text())["val_loss"]
        theirs_loop, theirs = torch_run(torch, run_dir)
    print(f"  minilm train (the command) {whole:7.1f} s, training loop {loop:6.0f} s, validation loss {ours:.4f}")
    print(f"  torch loop                 {'':7s}    training loop {theirs_loop:6.1f} s, validation loss {theirs:.4f}")
    print(f"  ratio minilm/torch: training loop {loop / theirs_loop:.2f}x, whole command against the loop "
          f"{whole / theirs_loop:.2f}x")


if __name__ == "__main__":
    main()
