"""`minilm eval`: the perplexity of a trained causal LM on text files."""

from __future__ import annotations

from .common import CommandError, read_texts
from .runs import encode_plain, load_run


def add_parser(commands) -> None:
    evaluate = commands.add_parser("eval", help="perplexity of a trained causal LM on text files")
    evaluate.add_argument("run_dir", help="a run folder written by `minilm train`")
    evaluate.add_argument("--data", nargs="+", required=True, metavar="FILE", help="UTF-8 text files")
    evaluate.add_argument("--stride", type=int, default=None, help="sliding-window stride (default: the context)")
    evaluate.set_defaults(run=run)


def run(args) -> int:
    from ..eval import perplexity

    config, tokenizer, model = load_run(args.run_dir)
    if config["model"] == "bert":
        raise CommandError("eval reports causal-LM perplexity; this run is a masked LM (bert)")
    ids = encode_plain(tokenizer, read_texts(args.data))
    block = config["block_size"]
    value = perplexity(model, ids, block_size=block, stride=args.stride or block)
    print(f"{len(ids):,} tokens, perplexity {value:.3f}")
    return 0
