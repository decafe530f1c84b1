"""Mutation testing: does the test suite catch known breakages of minilm?

Each entry of BREAKAGES names a breakage someone could plausibly make: a file, an exact
snippet of its current source, the snippet's broken replacement, and the tests that claim
to guard against it (pytest node ids or paths; behaviour-level tests, not internals). The
script copies the project once into a temporary folder, then for each breakage patches the
copy, runs the targeted tests (`pytest -x`), restores the file, and prints a table:

    breakage | caught / SURVIVED / STALE / ERROR | the first test that failed

- caught:   a targeted test failed (pytest exit status 1).
- SURVIVED: every targeted test passed with the breakage in place: the suite is blind to it.
- STALE:    the snippet is not in the current source exactly once (the code moved on):
            update the entry. Never skipped silently.
- ERROR:    pytest could not run the tests (collection error, no tests, timeout): the
            breakage or its targets need fixing.

Before the breakages, the targeted tests run once unbroken (skip with --no-baseline): a
test that already fails would make every breakage look caught.

The exit status is 0 only when every breakage is caught. Run on demand (a few minutes):

    python tests/mutation/run.py                    # all breakages, the table on stdout
    python tests/mutation/run.py --only accum-sum --only gelu-exact
    python tests/mutation/run.py --check            # only: are all snippets and targets current?
    python tests/mutation/run.py --markdown table.md

tests/test_mutation_table.py runs the --check part in CI, so a refactor that makes an entry
stale fails there, loudly, instead of quietly shrinking what this script measures.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]  # the project root (this file is tests/mutation/run.py)
TIMEOUT_S = 900  # per breakage


@dataclass(frozen=True)
class Breakage:
    name: str  # short id, for --only
    group: str  # what it breaks, as a reader would say it
    file: str  # relative to the project root
    old: str  # exact snippet of the current source (must occur exactly once)
    new: str  # its broken replacement
    tests: tuple  # pytest arguments: node ids / paths (and -k expressions) that should catch it


# -- the table: update `old` here when the code moves on (tests/test_mutation_table.py says when) --
BREAKAGES = [
    # The seven that used to pass the whole suite (issue 21), each with the test added for it.
    Breakage("accum-sum", "gradient accumulation sums micro-batch gradients instead of averaging",
             "minilm/train/trainer.py",
             "self.scaler.scale(loss * (1.0 / c.grad_accum)).backward()",
             "self.scaler.scale(loss).backward()",
             ("tests/test_train_oracles.py::test_gradient_accumulation_equals_one_batch_twice_the_size",)),
    Breakage("merge-rounds-skip-check", "BPE merge rounds skip the check on the pair before a merged token",
             "minilm/tokenizers/merge_batch.py",
             "            broken[segment[has_before][pair_ranks[before] < merged[has_before]]] = True\n",
             "",
             ("tests/tokenizers/test_merge_batch.py::test_merge_that_creates_a_lower_ranked_pair_before_it_is_handed_over",)),
    Breakage("accum-last", "gradient accumulation keeps only the last micro-batch",
             "minilm/train/trainer.py",
             "            self.scaler.scale(loss * (1.0 / c.grad_accum)).backward()",
             "            self.optimizer.zero_grad()\n"
             "            self.scaler.scale(loss * (1.0 / c.grad_accum)).backward()",
             ("tests/test_train_oracles.py::test_gradient_accumulation_equals_one_batch_twice_the_size",)),
    Breakage("trainer-drops-grads", "the Trainer discards every gradient before the optimizer step",
             "minilm/train/trainer.py",
             "        self.scaler.step(self.optimizer)",
             "        self.optimizer.zero_grad()\n        self.scaler.step(self.optimizer)",
             ("tests/test_train_oracles.py::test_a_short_training_run_lowers_the_loss_and_beats_the_unigram_baseline",)),
    Breakage("resume-no-scaler", "resume skips the GradScaler's state (loss scale)",
             "minilm/train/checkpoint.py",
             '        trainer.scaler.load_state_dict(state["scaler"])',
             "        pass",
             ("tests/test_train_oracles.py::test_a_resume_continues_from_the_backed_off_loss_scale",)),
    Breakage("perplexity-doubled", "minilm.eval.perplexity returns twice the perplexity",
             "minilm/eval.py",
             "    return math.exp(total_nll / count)",
             "    return 2 * math.exp(total_nll / count)",
             ("tests/test_eval.py",)),
    Breakage("bpe-no-decrement", "BPE training never decrements the counts of pairs a merge removes",
             "minilm/tokenizers/bpe_training.py",
             "            count_changes[old_pair] -= weight",
             "            count_changes[old_pair] -= 0",
             ("tests/tokenizers/test_bpe_naive.py",)),
    Breakage("xavier-tenth", "xavier_uniform_ draws ten times too small",
             "minilm/nn/init.py",
             "    bound = gain * math.sqrt(6.0 / (fan_in + fan_out))",
             "    bound = 0.1 * gain * math.sqrt(6.0 / (fan_in + fan_out))",
             ("tests/nn/test_init_oracle.py",)),
    Breakage("kaiming-zeros", "kaiming_uniform_ fills zeros",
             "minilm/nn/init.py",
             "    bound = math.sqrt(3.0) * _kaiming_std(tensor, a, mode, nonlinearity)\n"
             "    return uniform_(tensor, -bound, bound)",
             "    bound = math.sqrt(3.0) * _kaiming_std(tensor, a, mode, nonlinearity)\n    return zeros_(tensor)",
             ("tests/nn/test_init_oracle.py",)),
    Breakage("gelu-exact", "GPT-2's tanh GELU swapped for the exact (erf) GELU",
             "minilm/models/gpt.py",
             'activation="gelu_tanh"',
             'activation="gelu"',
             ("tests/models/test_gpt_far_from_linear.py",)),
    Breakage("normal-cdf-halves", "float32 Phi(x) takes 1 - Phi(-|x|) for x < 0 instead of x > 0",
             "minilm/special.py",
             "positive = np.greater(x, 0).astype(np.float32)",
             "positive = np.less(x, 0).astype(np.float32)",
             ("tests/test_special.py",)),
    Breakage("embeddings-sorted-order", "sentence_embeddings returns its vectors in length order",
             "minilm/models/bert.py",
             "vectors[xp.asarray(rows)] = pooled",
             "vectors[start : start + len(rows)] = pooled",
             ("tests/models/test_bert.py",)),
    Breakage("scatter-repeats", "embedding backward keeps one row of each repeated token (+= through a fancy index)",
             "minilm/backend.py",
             "once = xp.bincount(flat, minlength=target.shape[0])[flat] == 1  # [n]",
             "once = xp.ones(flat.shape, dtype=bool)  # [n]",
             ("tests/test_backend.py", "-k", "scatter_add")),
    Breakage("softmax-unshifted", "softmax keeps the unshifted exp even where it overflowed or underflowed",
             "minilm/functional.py",
             "if float(sums.min()) >= _EXP_SUM_FLOOR and float(sums.max()) < np.inf:",
             "if True:",
             ("tests/test_ops.py", "-k", "magnitude or stable")),
    Breakage("silu-slope", "SiLU's backward adds 1, the x-form's constant, to its y-form slope",
             "minilm/functional.py",
             "            slope *= y[start:stop]\n            slope += s[start:stop]\n",
             "            slope *= y[start:stop]\n            slope += 1\n",
             ("tests/test_rules.py", "-k", "silu")),
    Breakage("gemm-columns-first", "a GEMM split by columns gives every thread the first columns of b",
             "minilm/parallel.py",
             "np.matmul(a, b[:, start:stop], out=out[:, start:stop])",
             "np.matmul(a, b[:, :stop - start], out=out[:, start:stop])",
             ("tests/test_parallel.py", "-k", "split_gemms")),
    Breakage("blocks-drop-last", "the threads' blocks stop one short of the end",
             "minilm/parallel.py",
             "bounds = [min(size, -(-size * index // threads // align) * align) for index in range(threads + 1)]",
             "bounds = [min(size - 1, -(-size * index // threads // align) * align) for index in range(threads + 1)]",
             ("tests/test_parallel.py", "-k", "cover")),
    Breakage("copy-rows-half", "split/merge heads' row-block copy moves only the first half of each row",
             "minilm/functional.py",
             "        row = np.dtype((np.void, width))\n",
             "        row = np.dtype((np.void, width // 2))\n",
             ("tests/test_ops.py", "-k", "heads")),
    # Of the kind the suite already caught (gradient rules, beam search, the KV cache,
    # bit-exact resume, BPE chunk counts, AdamW, safetensors byte order).
    Breakage("grad-mul", "gradient rule: d(a*b)/da uses a instead of b",
             "minilm/ops.py",
             "gy * self.value(b)",
             "gy * self.value(a)",
             ("tests/test_ops.py", "-k", "mul and not matmul")),
    Breakage("grad-matmul", "gradient rule: matmul's gradient for the left operand halved",
             "minilm/ops.py",
             "_matmul(gy, b_value.swapaxes(-1, -2))",
             "0.5 * _matmul(gy, b_value.swapaxes(-1, -2))",
             ("tests/test_ops.py", "-k", "matmul")),
    Breakage("grad-exp", "gradient rule: exp's gradient forgets the upstream gradient",
             "minilm/ops.py",
             "    def backward(self, gy):\n        return gy * self.output()\n\n\nclass Log(Function):",
             "    def backward(self, gy):\n        return self.output()\n\n\nclass Log(Function):",
             ("tests/test_ops.py", "-k", "exp")),
    Breakage("beam-length", "beam search counts the prompt in the length penalty",
             "minilm/generation.py",
             "penalized = top_scores / ((length + 1 - prompt) ** length_penalty)",
             "penalized = top_scores / ((length + 1) ** length_penalty)",
             ("tests/test_generation.py", "-k", "beam")),
    Breakage("kv-reorder", "beam search does not reorder the KV cache with the surviving beams",
             "minilm/generation.py",
             "        self.ids = self.ids[rows]\n"
             "        for cache in self.caches or ():\n"
             "            cache.reorder(rows)",
             "        self.ids = self.ids[rows]",
             ("tests/test_generation.py", "-k", "beam")),
    Breakage("resume-model", "resume leaves the model's weights as initialised",
             "minilm/train/checkpoint.py",
             "    trainer.model.load_state_dict(weights)",
             "    pass",
             ("tests/test_train.py::test_resuming_from_a_checkpoint_gives_bit_identical_losses",)),
    Breakage("resume-optimizer", "resume skips the optimizer's moments and step count",
             "minilm/train/checkpoint.py",
             '    trainer.optimizer.load_state_dict({"state": join_optimizer_state(arrays, '
             'state["optimizer"]["scalars"]),\n'
             '                                       "param_groups": state["optimizer"]["param_groups"]})',
             "    pass",
             ("tests/test_train.py::test_resuming_from_a_checkpoint_gives_bit_identical_losses",)),
    Breakage("resume-data", "resume restarts the data sampler instead of continuing it",
             "minilm/train/checkpoint.py",
             '    trainer.task.load_state_dict(state["task"])',
             "    pass",
             ("tests/test_train.py::test_resuming_from_a_checkpoint_gives_bit_identical_losses",)),
    Breakage("bpe-chunk-counts", "BPE training counts each distinct chunk once, not by frequency",
             "minilm/tokenizers/bpe.py",
             "chunk_counts.update(split(piece))",
             "chunk_counts.update(set(split(piece)))",
             ("tests/tokenizers/test_bpe.py", "tests/tokenizers/test_bpe_naive.py")),
    Breakage("adam-bias1", "AdamW without the first moment's bias correction",
             "minilm/optim/adam.py",
             "return decay, lr / (1 - beta1**step), 1 / math.sqrt(1 - beta2**step)",
             "return decay, lr, 1 / math.sqrt(1 - beta2**step)",
             ("tests/optim/test_optimizers.py",)),
    Breakage("adam-bias2", "AdamW without the second moment's bias correction",
             "minilm/optim/adam.py",
             "return decay, lr / (1 - beta1**step), 1 / math.sqrt(1 - beta2**step)",
             "return decay, lr / (1 - beta1**step), 1.0",
             ("tests/optim/test_optimizers.py",)),
    Breakage("adamw-coupled", "AdamW's weight decay coupled into the gradient (Adam's L2)",
             "minilm/optim/adam.py",
             "    decoupled_weight_decay = True",
             "    decoupled_weight_decay = False",
             ("tests/optim/test_optimizers.py",)),
    Breakage("adamw-decay-lr", "AdamW's decoupled decay not scaled by the learning rate",
             "minilm/optim/adam.py",
             "decay = 1 - lr * weight_decay if weight_decay and self.decoupled_weight_decay else 1.0",
             "decay = 1 - weight_decay if weight_decay and self.decoupled_weight_decay else 1.0",
             ("tests/optim/test_optimizers.py",)),
    Breakage("safetensors-write-order", "safetensors written big-endian",
             "minilm/serialization.py",
             'data = np.asarray(data, dtype=data.dtype.newbyteorder("<"), order="C")',
             'data = np.asarray(data, dtype=data.dtype.newbyteorder(">"), order="C")',
             ("tests/test_serialization.py::test_files_we_write_load_in_safetensors_numpy",)),
    Breakage("safetensors-read-order", "safetensors F32 tensors read big-endian",
             "minilm/serialization.py",
             '"F32": np.dtype("<f4"),',
             '"F32": np.dtype(">f4"),',
             ("tests/test_serialization.py::test_files_from_safetensors_numpy_load_here",)),
]


def check_table(root: Path = ROOT, breakages=BREAKAGES) -> list[str]:
    """Problems that make entries stale: a snippet not found exactly once, a replacement
    that does not compile, a target test file or test function that no longer exists, a
    duplicate name."""
    problems = []
    names = [b.name for b in breakages]
    for name in sorted({n for n in names if names.count(n) > 1}):
        problems.append(f"{name}: the name is used twice")
    for b in breakages:
        path = root / b.file
        source = path.read_text(encoding="utf-8") if path.exists() else None
        if source is None:
            problems.append(f"{b.name}: {b.file} does not exist")
        elif source.count(b.old) != 1:
            problems.append(f"{b.name}: the snippet occurs {source.count(b.old)} times in {b.file} (expected once): "
                            f"{b.old[:60]!r}")
        elif b.old == b.new:
            problems.append(f"{b.name}: the replacement equals the snippet")
        else:
            try:  # a breakage must be a wrong program, not a syntax error
                compile(source.replace(b.old, b.new), b.file, "exec")
            except SyntaxError as error:
                problems.append(f"{b.name}: the broken {b.file} does not compile ({error.msg}, line {error.lineno})")
        for target in _target_paths(b):
            file, _, function = target.partition("::")
            if not (root / file).exists():
                problems.append(f"{b.name}: target {file} does not exist")
            elif function and not re.search(rf"^def {re.escape(function.split('[')[0])}\(",
                                            (root / file).read_text(encoding="utf-8"), re.M):
                problems.append(f"{b.name}: target {target} has no such test function")
    return problems


def _target_paths(b: Breakage) -> list[str]:
    args, paths, skip_next = list(b.tests), [], False
    for arg in args:
        if skip_next:
            skip_next = False
        elif arg in ("-k", "-m"):
            skip_next = True
        elif not arg.startswith("-"):
            paths.append(arg)
    return paths


def _copy_project(root: Path, into: Path) -> Path:
    target = into / "project"
    shutil.copytree(root, target, ignore=shutil.ignore_patterns(
        ".git", ".venv*", "runs", "__pycache__", "*.pyc", ".pytest_cache", ".hypothesis", "*.egg-info"))
    return target


def _pytest(copy: Path, args, timeout: int) -> tuple[int | None, str]:
    env = dict(os.environ, PYTHONPATH=str(copy), PYTHONDONTWRITEBYTECODE="1")  # no stale .pyc across patches
    command = [sys.executable, "-m", "pytest", "-x", "-q", "-rf", "-p", "no:cacheprovider", "--no-header", *args]
    try:
        done = subprocess.run(command, cwd=copy, env=env, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return None, ""
    return done.returncode, done.stdout + done.stderr


def _first_failure(output: str) -> str:
    match = re.search(r"^(?:FAILED|ERROR) (\S+)", output, re.M)
    return match.group(1) if match else "?"


def run(breakages, baseline: bool = True, timeout: int = TIMEOUT_S, log=print) -> list[tuple]:
    """[(breakage, status, detail)] for each breakage, in order."""
    results = []
    with tempfile.TemporaryDirectory(prefix="minilm-mutants-") as tmp:
        copy = _copy_project(ROOT, Path(tmp))
        if baseline:
            targets = list(dict.fromkeys(a for b in breakages if not check_table(ROOT, [b]) for a in _target_paths(b)))
            log(f"baseline: the targeted tests without any breakage ({len(targets)} targets) ...")
            status, output = _pytest(copy, targets, timeout)
            if status != 0:
                log(output[-4000:])
                raise SystemExit(f"the targeted tests fail without any breakage (pytest exit {status}); fix them first")
        for b in breakages:
            problems = check_table(ROOT, [b])
            if problems:
                results.append((b, "STALE", "; ".join(problems)))
                log(f"{b.name:24} STALE     {problems[0]}")
                continue
            path = copy / b.file
            original = path.read_text(encoding="utf-8")
            try:
                path.write_text(original.replace(b.old, b.new), encoding="utf-8")
                status, output = _pytest(copy, b.tests, timeout)
            finally:
                path.write_text(original, encoding="utf-8")
            if status == 1:
                result = ("caught", _first_failure(output))
            elif status == 0:
                result = ("SURVIVED", "every targeted test passed")
            else:
                last_line = (output.strip().splitlines() or [""])[-1]
                result = ("ERROR", "timed out" if status is None else f"pytest exit {status}: {last_line}")
            results.append((b, *result))
            log(f"{b.name:24} {result[0]:9} {result[1]}")
    return results


def markdown_table(results) -> str:
    lines = ["| # | breakage | file | result | caught by (first failing test) |", "|---|---|---|---|---|"]
    for i, (b, status, detail) in enumerate(results, 1):
        lines.append(f"| {i} | {b.group} (`{b.name}`) | `{b.file}` | {status} | `{detail}` |" if status == "caught"
                     else f"| {i} | {b.group} (`{b.name}`) | `{b.file}` | **{status}** | {detail} |")
    caught = sum(r[1] == "caught" for r in results)
    lines.append("")
    lines.append(f"{caught} of {len(results)} breakages caught.")
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", action="append", metavar="NAME", help="run only these breakages (repeatable)")
    parser.add_argument("--check", action="store_true", help="only check that every snippet and target is current")
    parser.add_argument("--no-baseline", action="store_true", help="skip the unbroken run of the targeted tests")
    parser.add_argument("--markdown", metavar="FILE", help="also write the table to FILE")
    parser.add_argument("--timeout", type=int, default=TIMEOUT_S, help=f"seconds per breakage (default {TIMEOUT_S})")
    args = parser.parse_args(argv)
    if args.check:
        problems = check_table()
        print("\n".join(problems) or f"all {len(BREAKAGES)} breakages are current")
        return 1 if problems else 0
    chosen = BREAKAGES
    if args.only:
        unknown = set(args.only) - {b.name for b in BREAKAGES}
        if unknown:
            parser.error(f"unknown breakage(s): {', '.join(sorted(unknown))}")
        chosen = [b for b in BREAKAGES if b.name in args.only]
    results = run(chosen, baseline=not args.no_baseline, timeout=args.timeout)
    table = markdown_table(results)
    print()
    print(table)
    if args.markdown:
        Path(args.markdown).write_text(table + "\n", encoding="utf-8")
    return 0 if all(status == "caught" for _, status, _ in results) else 1


if __name__ == "__main__":
    sys.exit(main())
