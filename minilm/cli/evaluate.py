"""`minilm eval`: the perplexity of a trained causal LM on text files; BLEU/ROUGE-L of a transformer."""

from __future__ import annotations

from pathlib import Path

from . import seq2seq
from .common import CommandError, read_texts
from .runs import encode_plain, load_run


def add_parser(commands) -> None:
    evaluate = commands.add_parser("eval", help="perplexity of a trained causal LM on text files; BLEU and ROUGE-L "
                                                "of a transformer on source/target pairs")
    evaluate.add_argument("run_dir", help="a run folder written by `minilm train`")
    evaluate.add_argument("--data", nargs="+", metavar="FILE",
                          help="UTF-8 text files (default: the run's own validation split, val.bin; a transformer "
                               "run: one pairs.tsv, default its validation pairs)")
    evaluate.add_argument("--skip-unknown", action="store_true",
                          help="a character model: leave out characters its vocabulary lacks (counted and reported)")
    evaluate.add_argument("--stride", type=int, default=None, help="sliding-window stride (default: the context)")
    evaluate.add_argument("--num-beams", type=int, default=1, help="transformer: beam search width (default 1, greedy)")
    evaluate.add_argument("--limit", type=int, default=None, help="transformer: score only the first N pairs")
    evaluate.set_defaults(run=run)


def run(args) -> int:
    from ..eval import perplexity

    config, tokenizer, model = load_run(args.run_dir)
    if config["model"] == "bert":
        raise CommandError("eval reports causal-LM perplexity; this run is a masked LM (bert)")
    if config["model"] == "transformer":
        return seq2seq.evaluate(args, args.run_dir, config, tokenizer, model)
    if args.data:
        text = read_texts(args.data)
        ids, skipped = encode_text(tokenizer, text, args.skip_unknown)
        source = ", ".join(args.data) + (f" ({skipped:,} unknown characters left out)" if skipped else "")
    else:
        from ..data import read_token_file

        ids, source = read_token_file(Path(args.run_dir) / "val.bin").tolist(), "the run's validation split"
    block = config["block_size"]
    value = perplexity(model, ids, block_size=block, stride=args.stride or block)
    print(f"{source}: {len(ids):,} tokens, perplexity {value:.3f}")
    return 0


def encode_text(tokenizer, text: str, skip_unknown: bool) -> tuple[list[int], int]:
    """(ids, characters left out). A character the vocabulary lacks is an error naming it and
    the flag, unless `skip_unknown` (characters only: byte-level BPE has no unknown text)."""
    if tokenizer.file_kind != "char" or tokenizer.unk_token_id is not None:  # every text encodes
        return encode_plain(tokenizer, text), 0
    vocab = tokenizer.char_to_id
    unknown = sorted({c for c in text if c not in vocab})
    if unknown and not skip_unknown:
        shown = ", ".join(repr(c) for c in unknown[:10]) + (" ..." if len(unknown) > 10 else "")
        raise CommandError(f"{len(unknown)} characters of the text are not in this character model's vocabulary "
                           f"({shown}); pass --skip-unknown to leave them out")
    kept = "".join(c for c in text if c in vocab)
    return encode_plain(tokenizer, kept), len(text) - len(kept)
