"""Run folders: what `minilm train` writes and the other commands read.

A run folder (runs/NAME/) holds

    config.json          the model kind and config, tokenizer kind, block size, training config, data source
    tokenizer.txt        the tokenizer
    train.bin, val.bin   the token ids of the training and validation text (a language model)
    train_pairs.jsonl, val_pairs.jsonl   the source/target pairs instead (a transformer: see `seq2seq`)
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

MODEL_KINDS = ("gpt", "bert", "lstm", "transformer")
BERT_SPECIALS = ("[PAD]", "[CLS]", "[SEP]", "[MASK]")
END_OF_TEXT = "<|endoftext|>"


def build_model(kind: str, model_config: dict, source="the model config"):
    """The model of kind `kind` (one of MODEL_KINDS) built from `model_config`; a kind or an option
    that minilm does not know is a CommandError naming `source` (the run's config.json)."""
    from ..models import (
        GPT,
        BertConfig,
        BertForMaskedLM,
        GPTConfig,
        LSTMConfig,
        LSTMLanguageModel,
        Transformer,
        TransformerConfig,
    )

    classes = {"gpt": (GPT, GPTConfig), "bert": (BertForMaskedLM, BertConfig),
               "lstm": (LSTMLanguageModel, LSTMConfig), "transformer": (Transformer, TransformerConfig)}
    if kind not in classes:
        raise CommandError(f"{source}: unknown \"model\" {kind!r}; expected one of {', '.join(MODEL_KINDS)}")
    model_class, config_class = classes[kind]
    if not isinstance(model_config, dict):
        raise CommandError(f"{source}: \"model_config\" must be an object, got {type(model_config).__name__}")
    unknown = sorted(set(model_config) - set(config_class.__dataclass_fields__))
    if unknown:
        raise CommandError(f"{source}: {kind} has no option {', '.join(map(repr, unknown))} in \"model_config\"")
    try:
        config = config_class.from_dict(model_config) if hasattr(config_class, "from_dict") else \
            config_class(**model_config)
        return model_class(config)
    except (TypeError, ValueError) as error:
        raise CommandError(f"{source}: {error}") from None


def load_run(run_dir):
    """(run config, tokenizer, model with its final weights) from a `minilm train` folder."""
    from ..serialization import load_file
    from ..tokenizers import Tokenizer
    from ..train.checkpoint import latest_checkpoint

    run_dir = Path(run_dir)
    config = read_run_config(run_dir)
    tokenizer = Tokenizer.load(run_dir / "tokenizer.txt")
    config_path = run_dir / "config.json"
    # Sizes are checked against the weights' headers before the model is built (allocated).
    weights = run_dir / "model.safetensors"
    if not weights.exists():
        checkpoint = latest_checkpoint(run_dir)
        if checkpoint is None:
            raise CommandError(f"{run_dir}: no model.safetensors and no complete checkpoint: the run "
                               "stopped before its first checkpoint")
        weights = checkpoint / "model.safetensors"
    check_run_sizes(config, weights, config_path)
    check_against_checkpoint(config, latest_checkpoint(run_dir), config_path)
    model = build_model(config["model"], config["model_config"], config_path)
    try:
        model.load_state_dict(load_file(weights))
    except RuntimeError as error:
        raise CommandError(f"{weights} does not fit {config_path}: {error}") from None
    return config, tokenizer, model.eval()


def check_against_checkpoint(config: dict, checkpoint: Path | None, config_path: Path) -> None:
    """Options the weights cannot show (GPT's n_head) are checked against the model config the
    checkpoint was written with: an edited config.json is an error, not a different model."""
    if checkpoint is None:
        return
    try:
        saved = json.loads((checkpoint / "trainer_state.json").read_text(encoding="utf-8")).get("model_config")
    except (OSError, ValueError, AttributeError):
        return
    if not isinstance(saved, dict) or not isinstance(config["model_config"], dict):
        return
    changed = [f"{key} {value!r} (the run was trained with {saved[key]!r})"
               for key, value in config["model_config"].items()
               if key in saved and saved[key] != value and "dropout" not in key and "prob" not in key]
    if changed:
        raise CommandError(f"{config_path}: model_config differs from the trained model's: " + ", ".join(changed))


def read_run_config(run_dir) -> dict:
    """A run folder's config.json; anything but a JSON object with "model" and "model_config"
    is a CommandError naming the file."""
    config_path = Path(run_dir) / "config.json"
    if not config_path.exists():
        raise CommandError(f"{run_dir}: not a minilm run folder (no config.json)")
    try:
        config = json.loads(config_path.read_text(encoding="utf-8"))
    except (ValueError, RecursionError) as error:
        raise CommandError(f"{config_path}: not valid JSON ({error})") from None
    if not isinstance(config, dict) or "model" not in config or "model_config" not in config:
        raise CommandError(f"{config_path}: not a minilm run config (no \"model\" and \"model_config\")")
    return config


# How the sizes in a run's model_config show in the weights, by our names: key -> (tensor, axis), or
# key -> "pattern.{}." for a layer count (see minilm.models.hf.check_sizes).
RUN_SIZES = {
    "gpt": {"n_layer": "blocks.{}.", "n_embd": ("wte.weight", 1), "vocab_size": ("wte.weight", 0),
            "block_size": ("wpe.weight", 0)},
    "bert": {"num_hidden_layers": "layers.{}.", "hidden_size": ("bert.embeddings.word.weight", 1),
             "vocab_size": ("bert.embeddings.word.weight", 0),
             "max_position_embeddings": ("bert.embeddings.position.weight", 0)},
    "lstm": {"vocab_size": ("embedding.weight", 0), "n_embd": ("embedding.weight", 1)},
}


def check_run_sizes(config: dict, weights: Path, source: Path) -> None:
    """The sizes in the run's model_config must match the weights' header (read without the data)."""
    from ..models.hf import CheckpointError, Dim, Layers, check_sizes
    from ..serialization import read_header

    if config["model"] not in RUN_SIZES or not isinstance(config["model_config"], dict):
        return  # build_model reports the unknown kind or the malformed config
    rules = {key: Layers(rule) if isinstance(rule, str) else Dim(*rule)
             for key, rule in RUN_SIZES[config["model"]].items()}
    header, _ = read_header(weights)
    try:
        check_sizes(config["model_config"], {name: tuple(e["shape"]) for name, e in header.items()}, rules, source)
    except TypeError:  # a size that is not a number: GPTConfig and friends name it
        return
    except CheckpointError as error:
        raise CommandError(str(error)) from None


def resumed_run(args) -> tuple[dict, Path]:
    """(config, folder) of the run `--resume` names, with a given --steps as its new length."""
    run_dir = Path(args.resume)
    config = read_run_config(run_dir)
    if args.steps is not None:  # --steps given (its parser default is None): extend or shorten the run
        set_run_steps(config, args.steps, run_dir / "config.json")
    say(args, f"resuming {run_dir}")
    return config, run_dir


def training_config_from(args):
    from ..train import TrainingConfig

    # A sixth of the run by default: at lr 3e-3 a 50-step warmup left the main job at
    # perplexity 40.89 where 100 steps reach 38.28 (same 600 steps; 25 steps: 80 at step 400).
    warmup = args.warmup if args.warmup is not None else max(1, args.steps // 6)
    return TrainingConfig(max_steps=args.steps, batch_size=args.batch_size, grad_accum=args.grad_accum,
                          lr=args.lr, warmup_steps=min(warmup, args.steps), weight_decay=args.weight_decay,
                          eval_interval=args.eval_interval, checkpoint_interval=args.checkpoint_interval,
                          early_stopping_patience=args.patience, seed=args.seed, precision=args.precision)


def new_run_dir(args) -> Path:
    """The folder of a new run (--out-dir/--name, default MODEL-TIMESTAMP), made empty of runs."""
    name = args.name or f"{args.model}-{time.strftime('%Y%m%d-%H%M%S')}"
    run_dir = Path(args.out_dir) / name
    if (run_dir / "config.json").exists():
        from ..train.checkpoint import latest_checkpoint

        if latest_checkpoint(run_dir) is not None or (run_dir / "model.safetensors").exists():
            raise CommandError(f"{run_dir} already holds a run; choose another --name or --resume it")
        # Stopped before its first checkpoint: nothing to keep, so the name may be used again.
        say(args, f"note: {run_dir} holds a run stopped before its first checkpoint; starting it anew")
        (run_dir / "metrics.jsonl").unlink(missing_ok=True)
    run_dir.mkdir(parents=True, exist_ok=True)
    return run_dir


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

    if args.resume:
        config, run_dir = resumed_run(args)
        tokenizer = Tokenizer.load(run_dir / "tokenizer.txt")
        train_ids, val_ids = read_token_file(run_dir / "train.bin"), read_token_file(run_dir / "val.bin")
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
        if args.tokenizer_file:
            tokenizer = load_tokenizer_file(args.tokenizer_file, args.model)
        elif args.tokenizer == "bpe":
            specials = BERT_SPECIALS if args.model == "bert" else (END_OF_TEXT,)
            tokenizer = BPETokenizer.train(train_text, args.vocab_size, special_tokens=specials, verbose=False)
        else:
            tokenizer = CharTokenizer.from_text(text)
        train_ids = np.array(encode_plain(tokenizer, train_text), dtype=np.int64)
        val_ids = np.array(encode_plain(tokenizer, val_text), dtype=np.int64)
        say(args, f"data: {source}: {len(text):,} characters -> {len(train_ids):,} train / {len(val_ids):,} "
                  f"validation tokens ({args.tokenizer_file or args.tokenizer}, vocab {tokenizer.vocab_size}, "
                  f"{time.perf_counter() - started:.1f} s)")
        model_config = model_config_from(args, tokenizer)
        training = training_config_from(args)
        check_new_run(args.model, model_config, args.block_size, train_ids, val_ids)
        run_dir = new_run_dir(args)
        tokenizer.save(run_dir / "tokenizer.txt")
        write_token_file(run_dir / "train.bin", train_ids, tokenizer.vocab_size)
        write_token_file(run_dir / "val.bin", val_ids, tokenizer.vocab_size)
        kind = "char" if tokenizer.file_kind == "char" else "bpe"
        config = {"model": args.model, "model_config": model_config, "tokenizer": kind,
                  "block_size": args.block_size,
                  "training": training.__dict__ | {"betas": list(training.betas)}, "data": source,
                  "minilm_version": __version__}
        from ..data import atomic_write_text

        atomic_write_text(run_dir / "config.json", json.dumps(config, indent=2) + "\n")
    return config, tokenizer, train_ids, val_ids, run_dir


def load_tokenizer_file(path, model: str):
    """A tokenizer from `minilm tokenizer train --out`, for `minilm train --tokenizer-file`."""
    from ..tokenizers import Tokenizer

    if not Path(path).exists():
        raise CommandError(f"{path}: no such tokenizer file")
    tokenizer = Tokenizer.load(path)
    if model == "bert":
        missing = [t for t in BERT_SPECIALS if t not in getattr(tokenizer, "special_tokens", {})]
        if missing:
            raise CommandError(f"{path}: --model bert needs the special tokens {' '.join(BERT_SPECIALS)}; "
                               f"this tokenizer lacks {' '.join(missing)} (train it with --special "
                               f"{' '.join(BERT_SPECIALS)})")
    return tokenizer


def set_run_steps(config: dict, steps: int, config_path: Path) -> None:
    """A resumed run's new total of steps, recorded in its config.json. The learning-rate
    schedule keeps the original run's total (`schedule_steps`): the rate goes on from where it
    was instead of jumping to a point of a schedule stretched over the new total."""
    from ..data import atomic_write_text

    training = config["training"]
    training.setdefault("schedule_steps", 0)
    if not training["schedule_steps"]:
        training["schedule_steps"] = training["max_steps"]
    training["max_steps"] = steps
    atomic_write_text(config_path, json.dumps(config, indent=2) + "\n")


def check_new_run(kind: str, model_config: dict, block_size: int, train_ids, val_ids) -> None:
    """Everything a new run's arguments can get wrong, checked before its folder is made (so a
    failed start leaves nothing behind): the model config and the data's length."""
    from ..models import BertConfig, GPTConfig, LSTMConfig

    config_class = {"gpt": GPTConfig, "bert": BertConfig, "lstm": LSTMConfig}.get(kind)
    if config_class is None:  # the transformer's source/target pairs are checked by its own task
        return
    sizes = {k: v for k, v in model_config.items() if k in ("n_layer", "num_hidden_layers", "num_layers",
                                                                "n_head", "num_attention_heads", "n_embd",
                                                                "hidden_size", "block_size")}
    for key, value in sizes.items():
        if value < 1:
            raise CommandError(f"{key} must be at least 1, got {value} (from --layers, --heads, --width, --block-size)")
    try:
        config_class(**model_config)
    except (TypeError, ValueError) as error:
        raise CommandError(str(error)) from None
    for name, ids in (("training", train_ids), ("validation", val_ids)):
        if len(ids) < block_size + 1:
            raise CommandError(f"the {name} text has {len(ids):,} tokens, fewer than --block-size {block_size} + 1: "
                               "give more text or a smaller --block-size")


def encode_plain(tokenizer, text: str) -> list[int]:
    """Ids of `text` with special-token text treated as ordinary text (a BPE corpus is encoded
    on every core; a short text stays in this process)."""
    if hasattr(tokenizer, "encode_ordinary_parallel"):
        return tokenizer.encode_ordinary_parallel(text)
    if hasattr(tokenizer, "encode_ordinary"):
        return tokenizer.encode_ordinary(text)
    return tokenizer.encode(text)


def model_config_from(args, tokenizer) -> dict:
    """The model config (a JSON-ready dict) for `args.model`, sized by the arguments, for `tokenizer`."""
    vocab_size = tokenizer.vocab_size
    if args.width % args.heads:
        raise CommandError(f"--width {args.width} is not divisible by --heads {args.heads}")
    if args.model == "transformer":
        return transformer_config_from(args, tokenizer)
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


def transformer_config_from(args, tokenizer) -> dict:
    """The TransformerConfig of `minilm train --model transformer`'s options, as a dict.

    The original Transformer's choices (sinusoidal positions, ReLU, embeddings scaled by
    sqrt(width)) with weights drawn with std width^-0.5, as fairseq and PyTorch's Xavier do:
    BART's 0.02 suits width 1024 (0.03), but at width 128 it leaves attention uniform and
    gradients tiny for hundreds of steps."""
    from ..models import TransformerConfig
    from ..seq2seq_data import special_ids

    ids = special_ids(tokenizer)
    positions = max(args.block_size, args.max_target_length + 1)
    config = TransformerConfig(
        vocab_size=tokenizer.vocab_size, d_model=args.width, encoder_layers=args.layers, decoder_layers=args.layers,
        encoder_attention_heads=args.heads, decoder_attention_heads=args.heads, encoder_ffn_dim=4 * args.width,
        decoder_ffn_dim=4 * args.width, max_position_embeddings=positions, position_embedding="sinusoidal",
        scale_embedding=True, activation="relu", init_std=args.width ** -0.5, dropout=args.dropout,
        share_embeddings=True, tie_word_embeddings=True, pad_token_id=ids["pad"], bos_token_id=ids["bos"],
        eos_token_id=ids["eos"], decoder_start_token_id=ids["bos"])
    return config.to_dict()


def sample_texts(model, tokenizer, count: int, tokens: int, seed: int = 0, prompt_text: str = "\n") -> list[str]:
    try:
        prompt = encode_plain(tokenizer, prompt_text) or [0]
    except ValueError:  # a character vocabulary without "\n": start from its first character
        prompt = [0]
    context = getattr(model.config, "block_size", None)
    if context is not None:  # a GPT cannot look further back than its context
        tokens = max(1, min(tokens, context - len(prompt)))
    samples = []
    for i in range(count):
        out = model.generate(np.array([prompt]), max_new_tokens=tokens, do_sample=True, temperature=0.8, top_k=40,
                             seed=seed + i)
        samples.append(tokenizer.decode(out[0, len(prompt):].tolist()).strip())
    return samples
