"""`minilm tokenizer train`: a byte-level BPE tokenizer from text files."""

from __future__ import annotations

import time
from pathlib import Path

from .common import CommandError, builtin_text, read_texts


def add_parser(commands) -> None:
    tokenizer = commands.add_parser("tokenizer", help="tokenizer tools")
    tokenizer_commands = tokenizer.add_subparsers(dest="tokenizer_command", metavar="ACTION", required=True)
    tokenizer_train = tokenizer_commands.add_parser("train", help="train a byte-level BPE tokenizer")
    tokenizer_train.add_argument("--data", nargs="+", metavar="FILE", help="UTF-8 text files (default: built-in docs)")
    tokenizer_train.add_argument("--vocab-size", type=int, default=4096, help="vocabulary size (default 4096)")
    tokenizer_train.add_argument("--pattern", default="gpt4", help="'gpt2', 'gpt4' or a regex (default gpt4)")
    tokenizer_train.add_argument("--special", nargs="*", metavar="TOKEN", help="special tokens to add")
    tokenizer_train.add_argument("--out", required=True,
                                 help="where to save the tokenizer (give it to `minilm train --tokenizer-file`)")
    tokenizer_train.add_argument("--force", action="store_true", help="replace an existing --out file")
    tokenizer_train.add_argument("--quiet", action="store_true", help="no progress bar")
    tokenizer_train.set_defaults(run=run_train)


def run_train(args) -> int:
    from ..tokenizers import BPETokenizer

    if Path(args.out).exists() and not args.force:  # before the (minutes of) training
        raise CommandError(f"{args.out} already exists; choose another --out or pass --force to replace it")
    text = read_texts(args.data) if args.data else builtin_text()
    started = time.perf_counter()
    tokenizer = BPETokenizer.train(text, args.vocab_size, pattern=args.pattern, special_tokens=args.special or (),
                                   verbose=not args.quiet)
    tokenizer.save(args.out)
    ids = tokenizer.encode_ordinary(text)
    print(f"trained a {tokenizer.vocab_size}-token BPE tokenizer in {time.perf_counter() - started:.1f} s: "
          f"{len(text.encode('utf-8')) / max(len(ids), 1):.2f} bytes per token on the training text -> {args.out}")
    print(f"train a model with it: minilm train --tokenizer-file {args.out}")
    return 0
