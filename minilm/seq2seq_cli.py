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

from . import __version__
from .data import atomic_write_text


def _cli():
    from . import cli  # the command's shared helpers (imported late: cli imports this module)

    return cli


def model_config_for(args, tokenizer) -> dict:
    """The TransformerConfig of `minilm train --model transformer`'s options, as a dict."""
    from .models import TransformerConfig
    from .seq2seq_data import special_ids

    ids = special_ids(tokenizer)
    positions = max(args.block_size, args.max_target_length + 1)
    config = TransformerConfig(
        vocab_size=tokenizer.vocab_size, d_model=args.width, encoder_layers=args.layers, decoder_layers=args.layers,
        encoder_attention_heads=args.heads, decoder_attention_heads=args.heads, encoder_ffn_dim=4 * args.width,
        decoder_ffn_dim=4 * args.width, max_position_embeddings=positions, position_embedding="sinusoidal",
        scale_embedding=True, activation="relu", dropout=args.dropout, share_embeddings=True,
        tie_word_embeddings=True, pad_token_id=ids["pad"], bos_token_id=ids["bos"], eos_token_id=ids["eos"],
        decoder_start_token_id=ids["bos"])
    return config.to_dict()


def build_transformer(model_config: dict):
    from .models import Transformer, TransformerConfig

    return Transformer(TransformerConfig.from_dict(model_config))


# ---------------------------------------------------------------------------------------
# minilm train --model transformer
# ---------------------------------------------------------------------------------------
def prepare_run(args):
    """(run config, tokenizer, train pairs, validation pairs, run folder) of a new or resumed run."""
    from .seq2seq_data import read_pairs, read_pairs_jsonl, split_pairs, stdlib_summarization, train_joint_bpe, \
        write_pairs_jsonl
    from .tokenizers import Tokenizer
    from .train import TrainingConfig

    cli = _cli()
    if args.resume:
        run_dir = Path(args.resume)
        if not (run_dir / "config.json").exists():
            raise cli.CommandError(f"{run_dir}: not a minilm run folder (no config.json)")
        config = json.loads((run_dir / "config.json").read_text(encoding="utf-8"))
        if args.steps != 600:  # --steps given: extend (or shorten) the run
            config["training"]["max_steps"] = args.steps
        tokenizer = Tokenizer.load(run_dir / "tokenizer.txt")
        train, val = read_pairs_jsonl(run_dir / "train_pairs.jsonl"), read_pairs_jsonl(run_dir / "val_pairs.jsonl")
        cli.say(args, f"resuming {run_dir}")
        return config, tokenizer, train, val, run_dir
    if args.data and len(args.data) != 1:
        raise cli.CommandError("--model transformer takes one --data file of tab-separated source/target pairs")
    if not 0.0 < args.val_fraction < 0.5:
        raise cli.CommandError(f"--val-fraction must be in (0, 0.5), got {args.val_fraction}")
    if args.tokenizer != "bpe":
        raise cli.CommandError("--model transformer uses a joint BPE (--tokenizer bpe)")
    started = time.perf_counter()
    if args.data:
        pairs = read_pairs(args.data[0])
        if len(pairs) < 2:
            raise cli.CommandError(f"{args.data[0]}: need at least 2 pairs (training and validation)")
        train, val = split_pairs(pairs, args.val_fraction, seed=args.seed)
        source = f"{args.data[0]}: {len(pairs)} pairs -> {len(train)} train / {len(val)} validation"
    else:
        task = stdlib_summarization()
        train = [(p.source, p.summary) for p in task.train]
        val = [(p.source, p.summary) for p in task.val]
        source = task.description
    tokenizer = train_joint_bpe(train, args.vocab_size)
    cli.say(args, f"data: {source} (joint BPE, vocab {tokenizer.vocab_size}, {time.perf_counter() - started:.1f} s)")
    model_config = model_config_for(args, tokenizer)
    training = TrainingConfig(max_steps=args.steps, batch_size=args.batch_size, grad_accum=args.grad_accum,
                              lr=args.lr, warmup_steps=min(args.warmup, args.steps), weight_decay=args.weight_decay,
                              eval_interval=args.eval_interval, checkpoint_interval=args.checkpoint_interval,
                              early_stopping_patience=args.patience, seed=args.seed, precision=args.precision)
    name = args.name or f"transformer-{time.strftime('%Y%m%d-%H%M%S')}"
    run_dir = Path(args.out_dir) / name
    if (run_dir / "config.json").exists():
        raise cli.CommandError(f"{run_dir} already holds a run; choose another --name or --resume it")
    run_dir.mkdir(parents=True, exist_ok=True)
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


def train(args) -> int:
    import minilm as ml

    from . import distributed
    from .seq2seq import Seq2SeqTask
    from .train import Trainer, TrainingConfig

    cli = _cli()
    comm = distributed.init(gpu=args.backend == "cupy" if args.backend else None)
    if args.backend:
        ml.set_backend(args.backend)
    if not args.resume:
        comm.check_batch_size(args.batch_size)
    config, tokenizer, train_pairs, val_pairs, run_dir = comm.run_on_main(lambda: prepare_run(args))
    ml.manual_seed(config["training"]["seed"])
    training = TrainingConfig.from_dict(config["training"])
    model = build_transformer(config["model_config"])
    task = Seq2SeqTask(train_pairs, val_pairs, tokenizer, training.batch_size, max_source_len=config["block_size"],
                       max_target_len=config["max_target_length"], label_smoothing=config["label_smoothing"],
                       seed=training.seed)
    trainer = Trainer(model, task, training, out_dir=run_dir, quiet=args.quiet)
    if args.resume:
        trainer.load_checkpoint(run_dir / "checkpoint")
    if comm.is_main:
        ranks = f" on {comm.size} ranks" if comm.size > 1 else ""
        cli.say(args, f"model: transformer, {model.num_parameters():,} parameters; training {training.max_steps} "
                      f"steps of {training.batch_size * training.grad_accum} pairs{ranks} -> {run_dir}")
    started = time.perf_counter()
    trainer.fit()
    elapsed = time.perf_counter() - started
    if not comm.is_main:  # the ranks hold the same model; rank 0 saves, scores and reports
        return 0
    model.save_safetensors(run_dir / "model.safetensors")
    metrics = trainer.evaluate()
    report = evaluate_pairs(model, tokenizer, val_pairs, config, num_beams=1)
    lines = [f"trained {trainer.step} steps in {elapsed:.0f} s",
             f"validation loss {metrics['val_loss']:.4f}, perplexity {metrics['val_ppl']:.2f}",
             *report["lines"]]
    for line in lines:
        print(line)
    atomic_write_text(run_dir / "final_metrics.json",
                      json.dumps(metrics | report["scores"], indent=2) + "\n")
    samples = report["samples"][: max(args.samples, 0)]
    if samples:
        text = "\n\n---\n\n".join(f"source: {s}\nreference: {r}\ngenerated: {g}" for s, r, g in samples)
        atomic_write_text(run_dir / "samples.txt", text + "\n")
        for i, (source, reference, generated) in enumerate(samples, 1):
            head = " ".join(source.split())[:100]
            print(f"--- sample {i} ---\nsource:    {head}\nreference: {reference}\ngenerated: {generated}")
    print(f"run folder: {run_dir}")
    return 0


def evaluate_pairs(model, tokenizer, pairs, config: dict, num_beams: int = 1) -> dict:
    """BLEU and ROUGE-L of the model's outputs on `pairs`, beside the lead baseline (the first
    N words of the source, N = the mean reference length in words): {"scores", "lines", "samples"}."""
    from .seq2seq import score_outputs, translate
    from .seq2seq_data import lead_baseline

    sources, references = [s for s, _ in pairs], [t for _, t in pairs]
    outputs = translate(model, tokenizer, sources, max_source_len=config["block_size"],
                        max_new_tokens=config["max_target_length"], num_beams=num_beams)
    ours = score_outputs(outputs, references)
    words = max(1, round(statistics.mean(len(r.split()) for r in references)))
    lead = score_outputs([lead_baseline(s, words) for s in sources], references)
    decoding = "greedy" if num_beams == 1 else f"{num_beams} beams"
    lines = [f"{len(pairs)} pairs, {decoding}: BLEU {ours['bleu']:.2f}, ROUGE-L {ours['rouge_l']:.2f}",
             f"lead baseline (the first {words} words of the source): BLEU {lead['bleu']:.2f}, "
             f"ROUGE-L {lead['rouge_l']:.2f}"]
    scores = {"bleu": ours["bleu"], "rouge_l": ours["rouge_l"], "lead_bleu": lead["bleu"],
              "lead_rouge_l": lead["rouge_l"], "lead_words": words, "num_beams": num_beams, "pairs": len(pairs)}
    return {"scores": scores, "lines": lines, "samples": list(zip(sources, references, outputs))}


# ---------------------------------------------------------------------------------------
# minilm generate / eval on a transformer run
# ---------------------------------------------------------------------------------------
def generate(args, config: dict, tokenizer, model) -> int:
    from .seq2seq import translate

    if not args.prompt.strip():
        raise _cli().CommandError("the prompt is empty")
    try:
        [output] = translate(model, tokenizer, [args.prompt], max_source_len=config["block_size"],
                             max_new_tokens=min(args.max_new_tokens, config["model_config"]["max_position_embeddings"] - 1),
                             num_beams=args.num_beams)
    except ValueError as error:
        raise _cli().CommandError(str(error)) from None
    print(output)
    return 0


def evaluate(args, run_dir, config: dict, tokenizer, model) -> int:
    from .seq2seq_data import read_pairs, read_pairs_jsonl

    if args.data:
        if len(args.data) != 1:
            raise _cli().CommandError("eval of a transformer run takes one --data file of source/target pairs")
        pairs, where = read_pairs(args.data[0]), args.data[0]
    else:
        pairs, where = read_pairs_jsonl(Path(run_dir) / "val_pairs.jsonl"), "the run's validation pairs"
    if args.limit:
        pairs = pairs[: args.limit]
    report = evaluate_pairs(model, tokenizer, pairs, config, num_beams=args.num_beams)
    print(f"{where}:")
    for line in report["lines"]:
        print(line)
    return 0
