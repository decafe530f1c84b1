"""`minilm train --model transformer`, and `generate` / `eval` of its runs.

A transformer run folder holds what a language-model run holds (config.json, tokenizer.txt,
model.safetensors, checkpoint/, metrics.jsonl, the loss plot, final_metrics.json, samples.txt)
with the pairs in place of token files: train_pairs.jsonl and val_pairs.jsonl.
"""

from __future__ import annotations

import json
import statistics
import time
from pathlib import Path

from .. import __version__
from ..data import atomic_write_text
from .common import CommandError, say
from .runs import model_config_from, new_run_dir, read_run_config, resumed_run, training_config_from


def wanted(args) -> bool:
    """Whether `minilm train` is to train a transformer: --model transformer, or resuming one."""
    if args.resume:
        return read_run_config(args.resume).get("model") == "transformer"
    return args.model == "transformer"


# ---------------------------------------------------------------------------------------
# minilm train --model transformer
# ---------------------------------------------------------------------------------------
def prepare_run(args):
    """(run config, tokenizer, train pairs, validation pairs, run folder) of a new or resumed run;
    a new run's pairs are split, its joint BPE trained and its folder written here."""
    from ..seq2seq_data import (
        read_pairs,
        read_pairs_jsonl,
        split_pairs,
        stdlib_summarization,
        train_joint_bpe,
        write_pairs_jsonl,
    )
    from ..tokenizers import Tokenizer

    if args.resume:
        config, run_dir = resumed_run(args)
        tokenizer = Tokenizer.load(run_dir / "tokenizer.txt")
        train, val = read_pairs_jsonl(run_dir / "train_pairs.jsonl"), read_pairs_jsonl(run_dir / "val_pairs.jsonl")
        return config, tokenizer, train, val, run_dir
    if args.data and len(args.data) != 1:
        raise CommandError("--model transformer takes one --data file of tab-separated source/target pairs")
    if not 0.0 < args.val_fraction < 0.5:
        raise CommandError(f"--val-fraction must be in (0, 0.5), got {args.val_fraction}")
    if args.tokenizer != "bpe":
        raise CommandError("--model transformer uses a joint BPE (--tokenizer bpe)")
    started = time.perf_counter()
    if args.data:
        pairs = read_pairs(args.data[0])
        if len(pairs) < 2:
            raise CommandError(f"{args.data[0]}: need at least 2 pairs (training and validation)")
        train, val = split_pairs(pairs, args.val_fraction, seed=args.seed)
        source = f"{args.data[0]}: {len(pairs)} pairs -> {len(train)} train / {len(val)} validation"
    else:
        task = stdlib_summarization()
        train = [(p.source, p.summary) for p in task.train]
        val = [(p.source, p.summary) for p in task.val]
        source = task.description
    tokenizer = train_joint_bpe(train, args.vocab_size)
    say(args, f"data: {source} (joint BPE, vocab {tokenizer.vocab_size}, {time.perf_counter() - started:.1f} s)")
    model_config = model_config_from(args, tokenizer)
    training = training_config_from(args)
    run_dir = new_run_dir(args)
    tokenizer.save(run_dir / "tokenizer.txt")
    write_pairs_jsonl(run_dir / "train_pairs.jsonl", train)
    write_pairs_jsonl(run_dir / "val_pairs.jsonl", val)
    config = {"model": "transformer", "model_config": model_config, "tokenizer": "bpe",
              "block_size": args.block_size, "max_target_length": args.max_target_length,
              "label_smoothing": args.label_smoothing,
              "training": training.__dict__ | {"betas": list(training.betas)}, "data": source,
              "minilm_version": __version__}
    atomic_write_text(run_dir / "config.json", json.dumps(config, indent=2) + "\n")
    return config, tokenizer, train, val, run_dir


def make_task(config: dict, tokenizer, train_pairs, val_pairs, training):
    from ..train import Seq2SeqTask

    return Seq2SeqTask(train_pairs, val_pairs, tokenizer, training.batch_size, max_source_len=config["block_size"],
                       max_target_len=config["max_target_length"], label_smoothing=config["label_smoothing"],
                       seed=training.seed)


def report(args, model, tokenizer, val_pairs, config: dict, metrics: dict, run_dir: Path) -> list[str]:
    """The end of a transformer run: BLEU/ROUGE-L on all validation pairs beside the lead
    baseline (written to final_metrics.json) and samples (samples.txt); returns the lines to print."""
    scored = evaluate_pairs(model, tokenizer, val_pairs, config, num_beams=1)
    atomic_write_text(run_dir / "final_metrics.json", json.dumps(metrics | scored["scores"], indent=2) + "\n")
    lines = list(scored["lines"])
    samples = scored["samples"][: max(args.samples, 0)]
    if samples:
        text = "\n\n---\n\n".join(f"source:\n{s}\nreference: {r}\ngenerated: {g}" for s, r, g in samples)
        atomic_write_text(run_dir / "samples.txt", text + "\n")
        for i, (source, reference, generated) in enumerate(samples, 1):
            head = " ".join(source.split())[:100]
            lines.append(f"--- sample {i} ---\nsource:    {head}\nreference: {reference}\ngenerated: {generated}")
    return lines


def evaluate_pairs(model, tokenizer, pairs, config: dict, num_beams: int = 1) -> dict:
    """BLEU and ROUGE-L of the model's outputs on `pairs`, beside the lead baseline (the first
    N words of the source, N = the mean reference length in words): {"scores", "lines", "samples"}."""
    from ..seq2seq_data import lead_baseline
    from ..train.seq2seq import score_outputs, translate

    sources, references = [s for s, _ in pairs], [t for _, t in pairs]
    outputs = translate(model, tokenizer, sources, max_source_len=config["block_size"],
                        max_new_tokens=config["max_target_length"], num_beams=num_beams)
    ours = score_outputs(outputs, references)
    words = max(1, round(statistics.mean(len(r.split()) for r in references)))
    lead = score_outputs([lead_baseline(s, words) for s in sources], references)
    decoding = "greedy" if num_beams == 1 else f"{num_beams} beams"
    lines = [f"{len(pairs)} pairs, {decoding}: BLEU {ours['bleu']:.2f}, ROUGE-L {ours['rouge_l']:.2f}",
             (f"lead baseline (the first {words} words of the source): BLEU {lead['bleu']:.2f}, "
              f"ROUGE-L {lead['rouge_l']:.2f}")]
    scores = {"bleu": ours["bleu"], "rouge_l": ours["rouge_l"], "lead_bleu": lead["bleu"],
              "lead_rouge_l": lead["rouge_l"], "lead_words": words, "num_beams": num_beams, "pairs": len(pairs)}
    return {"scores": scores, "lines": lines, "samples": list(zip(sources, references, outputs))}


# ---------------------------------------------------------------------------------------
# minilm generate / eval on a transformer run
# ---------------------------------------------------------------------------------------
def generate(args, config: dict, tokenizer, model) -> int:
    from ..train.seq2seq import translate

    if not args.prompt.strip():
        raise CommandError("the prompt is empty")
    longest = config["model_config"]["max_position_embeddings"] - 1  # the start token takes a position
    try:
        [output] = translate(model, tokenizer, [args.prompt], max_source_len=config["block_size"],
                             max_new_tokens=min(args.max_new_tokens, longest), num_beams=args.num_beams)
    except ValueError as error:
        raise CommandError(str(error)) from None
    print(output)
    return 0


def evaluate(args, run_dir, config: dict, tokenizer, model) -> int:
    from ..seq2seq_data import read_pairs, read_pairs_jsonl

    if args.data:
        if len(args.data) != 1:
            raise CommandError("eval of a transformer run takes one --data file of source/target pairs")
        pairs, where = read_pairs(args.data[0]), args.data[0]
    else:
        pairs, where = read_pairs_jsonl(Path(run_dir) / "val_pairs.jsonl"), "the run's validation pairs"
    if args.limit:
        pairs = pairs[: args.limit]
    scored = evaluate_pairs(model, tokenizer, pairs, config, num_beams=args.num_beams)
    print(f"{where}:")
    for line in scored["lines"]:
        print(line)
    return 0
