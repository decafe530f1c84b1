"""`minilm generate`: continue a prompt with a trained run's model or a pretrained one
(.gguf file, Hugging Face Llama-family folder), streaming the text."""

from __future__ import annotations

import itertools
import sys

import numpy as np

from . import seq2seq
from .common import CommandError
from .runs import END_OF_TEXT, encode_plain, load_run


def add_parser(commands) -> None:
    generate = commands.add_parser("generate",
                                   help="generate text from a trained run or a pretrained model, streaming it")
    generate.add_argument("run_dir", help="a run folder written by `minilm train`, a .gguf file or a Hugging Face "
                                          "Llama-family folder")
    generate.add_argument("--prompt", required=True,
                          help='the text to continue ("" starts from the beginning of a text; a transformer run: '
                               'the source to translate or summarize)')
    generate.add_argument("--max-new-tokens", type=int, default=100, help="tokens to generate (default 100)")
    generate.add_argument("--greedy", action="store_true", help="always take the most likely token")
    generate.add_argument("--temperature", type=float, default=0.8, help="sampling temperature (default 0.8)")
    generate.add_argument("--top-k", type=int, default=None, help="sample among the k most likely tokens")
    generate.add_argument("--top-p", type=float, default=None, help="nucleus sampling probability mass")
    generate.add_argument("--repetition-penalty", type=float, default=1.0, help="> 1 discourages repeats (default 1)")
    generate.add_argument("--seed", type=int, default=None, help="seed for reproducible samples")
    generate.add_argument("--num-samples", type=int, default=1,
                          help="independent samples to print (default 1; sample i uses seed + i)")
    generate.add_argument("--num-beams", type=int, default=None,
                          help="beam search with this many beams (deterministic; default 1: sampling or greedy; "
                               "transformer runs: default 4)")
    generate.add_argument("--stop", nargs="+", metavar="TEXT", help="stop a sample once it produces one of these")
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
        if not prompt:
            raise CommandError("the prompt is empty")
    else:
        config, tokenizer, model = load_run(args.run_dir)
        if config["model"] == "bert":
            raise CommandError(f"{args.run_dir} holds a masked LM (bert), which does not generate text")
        if config["model"] == "transformer":
            args.num_beams = 4 if args.num_beams is None else args.num_beams
            return seq2seq.generate(args, config, tokenizer, model)
        prompt = prompt_ids(tokenizer, args.prompt)
    num_beams = args.num_beams or 1
    if args.num_samples < 1:
        raise CommandError(f"--num-samples must be at least 1, got {args.num_samples}")
    kwargs = dict(max_new_tokens=args.max_new_tokens, repetition_penalty=args.repetition_penalty, eos_token_id=eos,
                  stop=args.stop, tokenizer=tokenizer if args.stop else None)
    if num_beams > 1:
        kwargs |= dict(num_beams=num_beams, num_return_sequences=min(args.num_samples, num_beams))
    else:
        kwargs |= dict(do_sample=not args.greedy, temperature=args.temperature, top_k=args.top_k, top_p=args.top_p)
    try:
        if num_beams > 1:  # beam search ends before it can say anything: no streaming
            kwargs.pop("stop"), kwargs.pop("tokenizer")
            rows = model.generate(np.array([prompt]), **kwargs)
            texts = [args.prompt + tokenizer.decode([t for t in row[len(prompt):].tolist() if t != eos])
                     for row in rows]
            for i, text in enumerate(texts, 1):
                print(f"--- beam {i} ---\n{text}" if len(texts) > 1 else text)
            return 0
        for i in range(args.num_samples):
            if args.num_samples > 1:
                print(f"--- sample {i + 1} ---")
            seed = None if args.seed is None else args.seed + i
            stream_sample(model, tokenizer, prompt, args.prompt, kwargs | {"seed": seed}, eos)
    except ValueError as error:
        raise CommandError(str(error)) from None
    return 0


def prompt_ids(tokenizer, text: str) -> list[int]:
    """The prompt's ids; an empty prompt starts where a text starts: after the end-of-text
    token, or a newline, or (a vocabulary with neither) the first token."""
    if text:
        return encode_plain(tokenizer, text)
    eot = getattr(tokenizer, "special_tokens", {}).get(END_OF_TEXT)
    if eot is not None:
        return [eot]
    try:
        return encode_plain(tokenizer, "\n") or [0]
    except ValueError:
        return [0]


def stream_sample(model, tokenizer, prompt: list[int], prompt_text: str, kwargs: dict, eos=None) -> None:
    """Print the prompt and its continuation token by token. The first token is made before
    the prompt is printed, so a bad argument is an error with nothing printed. A pretrained
    model's end-of-text token (`eos`) ends the text and is not printed."""
    stream = tokenizer.stream_decoder() if hasattr(tokenizer, "stream_decoder") else None
    steps = model.generate_stream(np.array([prompt]), **kwargs)
    first = next(steps)
    sys.stdout.write(prompt_text)
    for tokens in itertools.chain([first], steps):
        token = int(tokens[0])
        if token == eos:
            break
        sys.stdout.write(stream.push(token) if stream else tokenizer.decode([token]))
        sys.stdout.flush()
    if stream:
        sys.stdout.write(stream.flush())
    sys.stdout.write("\n")
