"""`minilm train`: a tokenizer and a language model, trained into a run folder (see `runs`)."""

from __future__ import annotations

import argparse
import json
import sys
import time

import numpy as np

from . import seq2seq
from .common import CommandError, say
from .runs import MODEL_KINDS, build_model, prepare_train_run, sample_texts, unigram_perplexity


def add_parser(commands) -> None:
    train = commands.add_parser("train", help="train a tokenizer and a language model (no arguments: the main job)",
                                description="Train a tokenizer and a language model, then print validation "
                                            "perplexity and samples. With no arguments: byte-level BPE and a small "
                                            "GPT on the Python documentation built into CPython, in a few minutes.")
    add_train_arguments(train)
    train.set_defaults(run=run)


def add_train_arguments(p: argparse.ArgumentParser) -> None:
    def run_option(*flags, default=None, **options) -> None:
        # The option's value is part of the run's config.json: its parser default is None, so that
        # `--resume` can tell an option given on the command line (an error there, except --steps)
        # from one left out; `resolve_run_options` fills in the defaults for a new run.
        action = p.add_argument(*flags, **options)
        RUN_DEFAULTS[action.dest] = default

    run_option("--data", nargs="+", metavar="FILE",
               help="UTF-8 text files (default: the Python docs built into CPython)")
    run_option("--model", choices=MODEL_KINDS, default="gpt",
               help="gpt (causal LM), bert (masked LM), lstm (causal LM), transformer (encoder-decoder on "
                    "source/target pairs: --data pairs.tsv, default the built-in code summarization, whose "
                    "defaults are its own recipe: 2 layers, block 48, dropout 0.2, 2000 steps of 32)")
    run_option("--tokenizer", choices=("bpe", "char"), default="bpe",
               help="byte-level BPE or characters (default bpe)")
    run_option("--vocab-size", type=int, default=1024, help="BPE vocabulary size (default 1024)")
    run_option("--tokenizer-file", metavar="FILE",
               help="a tokenizer saved by `minilm tokenizer train --out FILE` (instead of training one)")
    run_option("--layers", type=int, default=4, help="Transformer blocks / LSTM layers (default 4)")
    run_option("--width", type=int, default=128, help="embedding width (default 128)")
    run_option("--heads", type=int, default=4, help="attention heads (default 4)")
    run_option("--block-size", type=int, default=128, help="context length in tokens (default 128)")
    run_option("--dropout", type=float, default=0.0, help="dropout probability (default 0)")
    run_option("--steps", type=int, default=600, help="optimizer steps (default 600)")
    run_option("--batch-size", type=int, default=16, help="sequences per micro-batch (default 16)")
    run_option("--grad-accum", type=int, default=1, help="micro-batches per optimizer step (default 1)")
    run_option("--lr", type=float, default=3e-3, help="peak learning rate (default 3e-3)")
    run_option("--warmup", type=int, default=None,
               help="warmup steps (default: a sixth of --steps, 100 at the default 600)")
    run_option("--weight-decay", type=float, default=0.1, help="AdamW weight decay (default 0.1)")
    run_option("--eval-interval", type=int, default=100, help="steps between evaluations (default 100)")
    run_option("--checkpoint-interval", type=int, default=200, help="steps between checkpoints (default 200)")
    run_option("--patience", type=int, default=0,
               help="early stopping after N evaluations without improvement (0 = off)")
    run_option("--val-fraction", type=float, default=0.1,
               help="share of the text held out for validation (default 0.1)")
    run_option("--seed", type=int, default=0, help="random seed (default 0)")
    p.add_argument("--backend", choices=("numpy", "cupy"), default=None,
                   help="array backend (default: MINILM_BACKEND or numpy)")
    run_option("--precision", choices=("fp32", "fp16"), default="fp32",
               help="fp32 (default) or fp16: float16 matmuls, float32 master weights, dynamic loss scaling "
                    "(for the GPU; NumPy emulates float16 and is slower)")
    p.add_argument("--out-dir", default="runs", help="where run folders go (default runs/)")
    p.add_argument("--name", default=None, help="run folder name (default: MODEL-TIMESTAMP)")
    p.add_argument("--resume", metavar="RUN_DIR", help="continue the run in RUN_DIR from its last checkpoint")
    p.add_argument("--samples", type=int, default=3, help="generated samples to print at the end (default 3)")
    p.add_argument("--sample-tokens", type=int, default=60, help="tokens per sample (default 60)")
    run_option("--max-target-length", type=int, default=48,
               help="transformer: target tokens kept and generated (default 48); --block-size bounds the source")
    p.add_argument("--label-smoothing", type=float, default=0.1, help="transformer: label smoothing (default 0.1)")
    p.add_argument("--quiet", action="store_true", help="no progress output")


# dest -> default of the options that a run's config.json fixes (filled by add_train_arguments).
RUN_DEFAULTS: dict = {}

# The defaults of `minilm train --model transformer` on the built-in code summarization (no
# --data), where the language-model defaults above would overfit 3,500 pairs. A recipe sweep
# (README, "Translation and summarization") found a small model with more dropout, a short
# source window (the signature and first lines say most) and 2,000 steps of batch 32 best:
# it beats the lead baseline on validation BLEU and ROUGE-L. Options given still win.
SUMMARIZATION_RECIPE = {"vocab_size": 1500, "layers": 2, "width": 128, "heads": 4, "block_size": 48,
                        "max_target_length": 24, "dropout": 0.2, "steps": 2000, "batch_size": 32, "lr": 2e-3,
                        "warmup": 500}
# Options a resumed run may change: --steps extends (or shortens) it.
RESUME_MAY_CHANGE = ("steps",)


def resolve_run_options(args) -> None:
    """Fill in the defaults of a new run's options; on --resume, refuse options that the run's
    config.json fixes (they would be silently ignored), except --steps."""
    if args.resume:
        given = [name for name in RUN_DEFAULTS if name not in RESUME_MAY_CHANGE and getattr(args, name) is not None]
        if given:
            flags = ", ".join("--" + name.replace("_", "-") for name in given)
            raise CommandError(
                f"{flags}: a resumed run keeps the settings in {args.resume}/config.json; "
                "only --steps may change (start a new run with --name for other settings)"
            )
        return
    recipe = SUMMARIZATION_RECIPE if args.model == "transformer" and not args.data else {}
    for name, default in (RUN_DEFAULTS | recipe).items():
        if getattr(args, name) is None:
            setattr(args, name, default)


def run(args) -> int:
    import minilm as ml

    from .. import distributed
    from ..train import CausalLMTask, MaskedLMTask, Trainer, TrainingConfig, TrainingInterrupted

    resolve_run_options(args)
    # Under `mpiexec -n N` this joins the N ranks (each taking its own GPU with cupy); else a world of one.
    comm = distributed.init(gpu=args.backend == "cupy" if args.backend else None)
    if args.backend:
        ml.set_backend(args.backend)
    if not args.resume:  # before the run folder is made (the Trainer checks a resumed run's)
        comm.check_batch_size(args.batch_size)
    # Rank 0 alone reads and writes the run folder; the others receive what it prepared.
    # A transformer run's data are source/target pairs rather than token streams (see `seq2seq`).
    prepare = seq2seq.prepare_run if seq2seq.wanted(args) else prepare_train_run
    config, tokenizer, train_ids, val_ids, run_dir = comm.run_on_main(lambda: prepare(args))
    ml.manual_seed(config["training"]["seed"])

    training = TrainingConfig.from_dict(config["training"])
    model = build_model(config["model"], config["model_config"], run_dir / "config.json")
    block = config["block_size"]
    if config["model"] == "transformer":
        task = seq2seq.make_task(config, tokenizer, train_ids, val_ids, training)
    elif config["model"] == "bert":
        special = {k: tokenizer.special_tokens[v] for k, v in
                   (("pad", "[PAD]"), ("cls", "[CLS]"), ("sep", "[SEP]"), ("mask", "[MASK]"))}
        task = MaskedLMTask(train_ids, val_ids, block, training.batch_size, special, tokenizer.vocab_size,
                            training.seed)
    else:
        task = CausalLMTask(train_ids, val_ids, block, training.batch_size, training.seed)
    trainer = Trainer(model, task, training, out_dir=run_dir, quiet=args.quiet)
    if args.resume and trainer.resume() is None:
        say(args, f"note: {run_dir} has no complete checkpoint (stopped before its first); training from step 0")
    if comm.is_main:
        ranks = f" on {comm.size} ranks" if comm.size > 1 else ""
        say(args, f"model: {config['model']}, {model.num_parameters():,} parameters; {training.max_steps} "
                  f"steps of {training.batch_size * training.grad_accum} x {block} tokens{ranks} -> {run_dir}")
        if args.resume:
            say(args, resume_plan(trainer.step, training.max_steps, args.steps is not None))
    started = time.perf_counter()
    try:
        trainer.fit()
    except TrainingInterrupted as stop:
        if comm.is_main and stop.checkpoint is not None:
            print(f"\nminilm: interrupted at step {stop.step}; checkpoint saved in {stop.checkpoint}\n"
                  f"resume with: minilm train --resume {run_dir}", file=sys.stderr)
        return 130
    elapsed = time.perf_counter() - started
    if comm.is_main:
        model.save_safetensors(run_dir / "model.safetensors")

    metrics = trainer.evaluate()
    if not comm.is_main:  # the ranks hold the same model; rank 0 reports and samples
        return 0
    lines = [f"trained {trainer.steps_run} steps in {elapsed:.0f} s (step {trainer.step} of {training.max_steps})",
             f"validation loss {metrics['val_loss']:.4f}, perplexity {metrics['val_ppl']:.2f}"]
    if config["model"] == "transformer":
        lines += seq2seq.report(args, model, tokenizer, val_ids, config, metrics, run_dir)
        print("\n".join(lines) + f"\nrun folder: {run_dir}")
        return 0
    if config["model"] != "bert":
        baseline = unigram_perplexity(np.asarray(train_ids), np.asarray(val_ids), tokenizer.vocab_size)
        lines.append(f"unigram baseline perplexity on the same tokens {baseline:.2f} "
                     f"({baseline / metrics['val_ppl']:.1f}x higher)")
        metrics["unigram_ppl"] = baseline
    for line in lines:
        print(line)
    from ..data import atomic_write_text

    atomic_write_text(run_dir / "final_metrics.json", json.dumps(metrics, indent=2) + "\n")
    if config["model"] != "bert" and args.samples > 0:
        samples = sample_texts(model, tokenizer, args.samples, args.sample_tokens, seed=training.seed)
        atomic_write_text(run_dir / "samples.txt", "\n\n---\n\n".join(samples) + "\n")
        for i, sample in enumerate(samples, 1):
            print(f"--- sample {i} ---\n{sample}")
    print(f"run folder: {run_dir}")
    return 0


def resume_plan(done: int, total: int, steps_given: bool) -> str:
    """What a resumed run is about to do, in one line."""
    if done >= total:
        warning = (f"warning: --steps {total} is below the {done} steps already trained; nothing to train. "
                   if steps_given and done > total else "")
        return (f"{warning}resuming at step {done}: the run is complete ({total} steps); "
                f"pass --steps N (more than {done}) to train further")
    return f"resuming at step {done}: {total - done} steps to do (to step {total})"
