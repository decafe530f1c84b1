"""Run folders: what `minilm train` writes and the other commands read.

A run folder (runs/NAME/) holds

    config.json          the model kind and config, tokenizer kind, block size, training config, data source
    tokenizer.txt        the tokenizer
    train.bin, val.bin   the token ids of the training and validation text
    checkpoint/          the last checkpoint (see minilm.train.checkpoint)
    model.safetensors    the final weights, metrics.jsonl, loss.png, final_metrics.json, samples.txt

Here: making a new run folder or reopening one (`prepare_train_run`), the model config from
the command line (`model_config_from`), loading a trained run (`load_run`), and what a run
reports at its end (`sample_texts`, the `unigram_perplexity` baseline).
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path

import numpy as np

from .. import __version__
from .common import CommandError, builtin_text, read_texts, say

MODEL_KINDS = ("gpt", "bert", "lstm")
BERT_SPECIALS = ("[PAD]", "[CLS]", "[SEP]", "[MASK]")
END_OF_TEXT = "<|endoftext|>"


def build_model(kind: str, model_config: dict):
    from ..models import GPT, BertConfig, BertForMaskedLM, GPTConfig, LSTMConfig, LSTMLanguageModel

    if kind == "gpt":
        return GPT(GPTConfig(**model_config))
    if kind == "bert":
        return BertForMaskedLM(BertConfig(**model_config))
    return LSTMLanguageModel(LSTMConfig(**model_config))


def load_run(run_dir):
    """(run config, tokenizer, model with its final weights) from a `minilm train` folder."""
    from ..serialization import load_file
    from ..tokenizers import Tokenizer

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


def prepare_train_run(args):
    """(run config, tokenizer, train ids, validation ids, run folder) of a new or resumed run;
    a new run's tokenizer is trained and its folder written here."""
    from ..data import read_token_file, write_token_file
    from ..tokenizers import BPETokenizer, CharTokenizer, Tokenizer
    from ..train import TrainingConfig

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
        model_config = model_config_from(args, tokenizer)
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
        from ..data import atomic_write_text

        atomic_write_text(run_dir / "config.json", json.dumps(config, indent=2) + "\n")
    return config, tokenizer, train_ids, val_ids, run_dir


def encode_plain(tokenizer, text: str) -> list[int]:
    """Ids of `text` with special-token text treated as ordinary text."""
    if hasattr(tokenizer, "encode_ordinary"):
        return tokenizer.encode_ordinary(text)
    return tokenizer.encode(text)


def model_config_from(args, tokenizer) -> dict:
    """The model config (a JSON-ready dict) for `args.model`, sized by the arguments, for `tokenizer`."""
    vocab_size = tokenizer.vocab_size
    if args.width % args.heads:
        raise CommandError(f"--width {args.width} is not divisible by --heads {args.heads}")
    if args.model == "gpt":
        return {"vocab_size": vocab_size, "n_layer": args.layers, "n_head": args.heads, "n_embd": args.width,
                "block_size": args.block_size, "dropout": args.dropout}
    if args.model == "bert":
        return {"vocab_size": vocab_size, "hidden_size": args.width, "num_hidden_layers": args.layers,
                "num_attention_heads": args.heads, "intermediate_size": 4 * args.width,
                "max_position_embeddings": args.block_size, "hidden_dropout_prob": args.dropout,
                "attention_probs_dropout_prob": args.dropout,
                # The tokenizer's own [PAD], never id 0: in a byte-level BPE, 0 is the byte 0x00.
                "pad_token_id": tokenizer.special_tokens["[PAD]"]}
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
