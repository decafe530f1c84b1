"""`minilm generate`: continue a prompt with a trained run's model or a pretrained one
(.gguf file, Hugging Face Llama-family folder), streaming the text."""

from __future__ import annotations

import sys

import numpy as np

from .common import CommandError
from .runs import encode_plain, load_run


def add_parser(commands) -> None:
    generate = commands.add_parser("generate",
                                   help="generate text from a trained run or a pretrained model, streaming it")
    generate.add_argument("run_dir", help="a run folder written by `minilm train`, a .gguf file or a Hugging Face "
                                          "Llama-family folder")
    generate.add_argument("--prompt", required=True, help="the text to continue")
    generate.add_argument("--max-new-tokens", type=int, default=100, help="tokens to generate (default 100)")
    generate.add_argument("--greedy", action="store_true", help="always take the most likely token")
    generate.add_argument("--temperature", type=float, default=0.8, help="sampling temperature (default 0.8)")
    generate.add_argument("--top-k", type=int, default=None, help="sample among the k most likely tokens")
    generate.add_argument("--top-p", type=float, default=None, help="nucleus sampling probability mass")
    generate.add_argument("--repetition-penalty", type=float, default=1.0, help="> 1 discourages repeats (default 1)")
    generate.add_argument("--seed", type=int, default=None, help="seed for reproducible samples")
    generate.add_argument("--backend", choices=("numpy", "cupy"), default=None, help="array backend")
    generate.set_defaults(run=run)


def run(args) -> int:
    import minilm as ml

    if args.backend:
        ml.set_backend(args.backend)
    from ..chat import is_pretrained, load_pretrained

    eos = None
    if is_pretrained(args.run_dir):
        model, tokenizer = load_pretrained(args.run_dir)
        bos = [tokenizer.bos_token_id] if tokenizer.add_bos_token and tokenizer.bos_token_id is not None else []
        prompt = bos + encode_plain(tokenizer, args.prompt)
        eos = tokenizer.eos_token_id
    else:
        config, tokenizer, model = load_run(args.run_dir)
        if config["model"] == "bert":
            raise CommandError(f"{args.run_dir} holds a masked LM (bert), which does not generate text")
        prompt = encode_plain(tokenizer, args.prompt)
    if not prompt:
        raise CommandError("the prompt is empty")
    kwargs = dict(max_new_tokens=args.max_new_tokens, do_sample=not args.greedy, temperature=args.temperature,
                  top_k=args.top_k, top_p=args.top_p, repetition_penalty=args.repetition_penalty, seed=args.seed,
                  eos_token_id=eos)
    try:
        sys.stdout.write(args.prompt)
        stream = tokenizer.stream_decoder() if hasattr(tokenizer, "stream_decoder") else None
        for tokens in model.generate_stream(np.array([prompt]), **kwargs):
            token = int(tokens[0])
            if token == eos:  # a pretrained model's end of text: not part of the text
                break
            sys.stdout.write(stream.push(token) if stream else tokenizer.decode([token]))
            sys.stdout.flush()
        if stream:
            sys.stdout.write(stream.flush())
        sys.stdout.write("\n")
    except ValueError as error:
        raise CommandError(str(error)) from None
    return 0
