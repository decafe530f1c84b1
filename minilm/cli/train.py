"""`minilm train`: a tokenizer and a language model, trained into a run folder (see `runs`)."""

from __future__ import annotations

import argparse
import json
import time

import numpy as np

from .common import say
from .runs import MODEL_KINDS, build_model, prepare_train_run, sample_texts, unigram_perplexity


def add_parser(commands) -> None:
    train = commands.add_parser("train", help="train a tokenizer and a language model (no arguments: the main job)",
                                description="Train a tokenizer and a language model, then print validation "
                                            "perplexity and samples. With no arguments: byte-level BPE and a small "
                                            "GPT on the Python documentation built into CPython, in a few minutes.")
    add_train_arguments(train)
    train.set_defaults(run=run)


def add_train_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data", nargs="+", metavar="FILE",
                   help="UTF-8 text files (default: the Python docs built into CPython)")
    p.add_argument("--model", choices=MODEL_KINDS, default="gpt",
                   help="gpt (causal LM), bert (masked LM), lstm (causal LM)")
    p.add_argument("--tokenizer", choices=("bpe", "char"), default="bpe",
                   help="byte-level BPE or characters (default bpe)")
    p.add_argument("--vocab-size", type=int, default=1024, help="BPE vocabulary size (default 1024)")
    p.add_argument("--layers", type=int, default=4, help="Transformer blocks / LSTM layers (default 4)")
    p.add_argument("--width", type=int, default=128, help="embedding width (default 128)")
    p.add_argument("--heads", type=int, default=4, help="attention heads (default 4)")
    p.add_argument("--block-size", type=int, default=128, help="context length in tokens (default 128)")
    p.add_argument("--dropout", type=float, default=0.0, help="dropout probability (default 0)")
    p.add_argument("--steps", type=int, default=600, help="optimizer steps (default 600)")
    p.add_argument("--batch-size", type=int, default=16, help="sequences per micro-batch (default 16)")
    p.add_argument("--grad-accum", type=int, default=1, help="micro-batches per optimizer step (default 1)")
    p.add_argument("--lr", type=float, default=3e-3, help="peak learning rate (default 3e-3)")
    p.add_argument("--warmup", type=int, default=50, help="warmup steps (default 50)")
    p.add_argument("--weight-decay", type=float, default=0.1, help="AdamW weight decay (default 0.1)")
    p.add_argument("--eval-interval", type=int, default=100, help="steps between evaluations (default 100)")
    p.add_argument("--checkpoint-interval", type=int, default=200, help="steps between checkpoints (default 200)")
    p.add_argument("--patience", type=int, default=0,
                   help="early stopping after N evaluations without improvement (0 = off)")
    p.add_argument("--val-fraction", type=float, default=0.1,
                   help="share of the text held out for validation (default 0.1)")
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    p.add_argument("--backend", choices=("numpy", "cupy"), default=None,
                   help="array backend (default: MINILM_BACKEND or numpy)")
    p.add_argument("--precision", choices=("fp32", "fp16"), default="fp32",
                   help="fp32 (default) or fp16: float16 matmuls, float32 master weights, dynamic loss scaling "
                        "(for the GPU; NumPy emulates float16 and is slower)")
    p.add_argument("--out-dir", default="runs", help="where run folders go (default runs/)")
    p.add_argument("--name", default=None, help="run folder name (default: MODEL-TIMESTAMP)")
    p.add_argument("--resume", metavar="RUN_DIR", help="continue the run in RUN_DIR from its last checkpoint")
    p.add_argument("--samples", type=int, default=3, help="generated samples to print at the end (default 3)")
    p.add_argument("--sample-tokens", type=int, default=60, help="tokens per sample (default 60)")
    p.add_argument("--quiet", action="store_true", help="no progress output")


def run(args) -> int:
    import minilm as ml

    from .. import distributed
    from ..train import CausalLMTask, MaskedLMTask, Trainer, TrainingConfig

    # Under `mpiexec -n N` this joins the N ranks (each taking its own GPU with cupy); else a world of one.
    comm = distributed.init(gpu=args.backend == "cupy" if args.backend else None)
    if args.backend:
        ml.set_backend(args.backend)
    if not args.resume:  # before the run folder is made (the Trainer checks a resumed run's)
        comm.check_batch_size(args.batch_size)
    # Rank 0 alone reads and writes the run folder; the others receive what it prepared.
    config, tokenizer, train_ids, val_ids, run_dir = comm.run_on_main(lambda: prepare_train_run(args))
    ml.manual_seed(config["training"]["seed"])

    training = TrainingConfig.from_dict(config["training"])
    model = build_model(config["model"], config["model_config"])
    block = config["block_size"]
    if config["model"] == "bert":
        special = {k: tokenizer.special_tokens[v] for k, v in
                   (("pad", "[PAD]"), ("cls", "[CLS]"), ("sep", "[SEP]"), ("mask", "[MASK]"))}
        task = MaskedLMTask(train_ids, val_ids, block, training.batch_size, special, tokenizer.vocab_size,
                            training.seed)
    else:
        task = CausalLMTask(train_ids, val_ids, block, training.batch_size, training.seed)
    trainer = Trainer(model, task, training, out_dir=run_dir, quiet=args.quiet)
    if args.resume:
        trainer.load_checkpoint(run_dir / "checkpoint")
    if comm.is_main:
        ranks = f" on {comm.size} ranks" if comm.size > 1 else ""
        say(args, f"model: {config['model']}, {model.num_parameters():,} parameters; training {training.max_steps} "
                  f"steps of {training.batch_size * training.grad_accum} x {block} tokens{ranks} -> {run_dir}")
    started = time.perf_counter()
    trainer.fit()
    elapsed = time.perf_counter() - started
    if comm.is_main:
        model.save_safetensors(run_dir / "model.safetensors")

    metrics = trainer.evaluate()
    if not comm.is_main:  # the ranks hold the same model; rank 0 reports and samples
        return 0
    lines = [f"trained {trainer.step} steps in {elapsed:.0f} s",
             f"validation loss {metrics['val_loss']:.4f}, perplexity {metrics['val_ppl']:.2f}"]
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
