"""`minilm eval`: the perplexity of a trained causal LM on text files; BLEU/ROUGE-L of a transformer."""

from __future__ import annotations

from . import seq2seq
from .common import CommandError, read_texts
from .runs import encode_plain, load_run


def add_parser(commands) -> None:
    evaluate = commands.add_parser("eval", help="perplexity of a trained causal LM on text files; BLEU and ROUGE-L "
                                                "of a transformer on source/target pairs")
    evaluate.add_argument("run_dir", help="a run folder written by `minilm train`")
    evaluate.add_argument("--data", nargs="+", metavar="FILE",
                          help="UTF-8 text files (a transformer run: one pairs.tsv; default its validation pairs)")
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
    if not args.data:
        raise CommandError("eval of a language model needs --data: the text files to measure perplexity on")
    ids = encode_plain(tokenizer, read_texts(args.data))
    block = config["block_size"]
    value = perplexity(model, ids, block_size=block, stride=args.stride or block)
    print(f"{len(ids):,} tokens, perplexity {value:.3f}")
    return 0
