"""The `minilm` command: train, generate, evaluate, train tokenizers, fine-tune BERT.

    minilm train                      # the main job: BPE + a small GPT on the built-in docs
    minilm generate runs/NAME --prompt "The list"
    minilm eval runs/NAME --data notes.txt
    minilm tokenizer train --data a.txt b.txt --vocab-size 4096 --out tok.txt
    minilm finetune --data reviews.csv
    minilm classify runs/finetune --text "a great film"

The package, by concern:

    __init__.py   the parser and the dispatcher (`main`): which commands exist, how errors print
    common.py     what every command shares: CommandError, the built-in text, reading text files, `say`
    runs.py       run folders: making and reopening them, the model config from arguments, `load_run`,
                  samples and the unigram baseline a run reports
    train.py, generate.py, evaluate.py, tokenizer.py, finetune.py, classify.py   one module per command

Adding a command (say `minilm chat`): write `minilm/cli/chat.py` with

    def add_parser(commands) -> None:      # commands: the argparse subparsers object
        p = commands.add_parser("chat", help="one line for `minilm --help`")
        p.add_argument(...)
        p.set_defaults(run=run)

    def run(args) -> int:                  # the exit status; raise CommandError for user mistakes
        ...

then import it below and add it to COMMANDS: that one line is all the dispatcher needs.
Keep heavy imports (models, the Trainer) inside `run`, so `minilm --help` stays fast. A new
model kind for `minilm train --model` goes into `runs.py` (MODEL_KINDS, `build_model`,
`model_config_from`).
"""

from __future__ import annotations

import argparse
import sys

from .. import __version__
from . import chat, classify, evaluate, finetune, generate, tokenizer, train
from .common import CommandError, builtin_text, read_texts, say
from .runs import build_model, encode_plain, load_run, model_config_from, sample_texts, unigram_perplexity

# Every subcommand, in the order `minilm --help` lists them; each module has add_parser(commands).
COMMANDS = (train, generate, chat, evaluate, tokenizer, finetune, classify)

EPILOG = "Run `minilm COMMAND --help` for the options of one command."

__all__ = ["COMMANDS", "CommandError", "build_model", "build_parser", "builtin_text", "encode_plain", "load_run",
           "main", "model_config_from", "read_texts", "sample_texts", "say", "unigram_perplexity"]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="minilm", description="minilm: language models from scratch, on NumPy/CuPy.",
                                     epilog=EPILOG)
    parser.add_argument("--version", action="version", version=f"minilm {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    for command in COMMANDS:
        command.add_parser(commands)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 0
    from .. import distributed
    from ..backend import BackendError
    from ..data import DataError
    from ..models.hf import CheckpointError
    from ..serialization import SafetensorsError
    from ..tokenizers import TokenizerFileError
    from ..train import TrainingDiverged

    try:
        # Under mpiexec, an error on one rank only ends every rank (with that rank's message);
        # errors raised on every rank alike come out below and are printed once, by rank 0.
        with distributed.abort_on_error():
            return args.run(args)
    except KeyboardInterrupt:
        print("\nminilm: interrupted", file=sys.stderr)
        return 130
    except (CommandError, DataError, CheckpointError, SafetensorsError, TokenizerFileError, BackendError,
            TrainingDiverged, ValueError, distributed.DistributedError) as error:
        if distributed.is_main_process():
            print(f"minilm: error: {error}", file=sys.stderr)
        return 2
    except OSError as error:  # a full disk, a read-only folder, a missing file: one line, naming the file
        if distributed.is_main_process():
            where = f"{error.filename}: " if error.filename else ""
            print(f"minilm: error: {where}{error.strerror or error}", file=sys.stderr)
        return 2
