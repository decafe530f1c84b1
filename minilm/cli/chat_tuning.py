"""`minilm finetune --model PATH [--lora]`: fine-tune a Llama-family chat model on conversations.

The run folder (runs/NAME/) holds

    config.json          base model path, LoRA settings, training config, data source, max length
    checkpoint/          the last checkpoint (only the trainable weights when the base is frozen)
    adapter/             the final LoRA adapter in PEFT's layout (--lora), or model/ (full fine-tuning)
    metrics.jsonl, loss.png, final_metrics.json, answers.txt (held-out answers before and after)

`minilm finetune --resume RUN` continues it; `minilm chat RUN` talks with the tuned model.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from .. import __version__
from .common import CommandError, say

BUILTIN_DATA = "the built-in instruction set (CPython's documentation)"


def add_arguments(p) -> None:
    p.add_argument("--model", metavar="PATH", default=None,
                   help="a Llama-family chat model (.gguf file or Hugging Face folder) to fine-tune on conversations "
                        "(--data JSONL of messages or prompt/completion; default: the built-in instruction set)")
    p.add_argument("--lora", action="store_true", help="train LoRA adapters only, the base model frozen")
    p.add_argument("--lora-r", type=int, default=8, help="LoRA rank (default 8)")
    p.add_argument("--lora-alpha", type=float, default=16,
                   help="LoRA alpha; the update is scaled by alpha/r (default 16)")
    p.add_argument("--lora-dropout", type=float, default=0.05, help="dropout on the adapters' input (default 0.05)")
    p.add_argument("--target-modules", default="q_proj,v_proj",
                   help="comma-separated layer names the adapters wrap, as PEFT's target_modules "
                        "(default q_proj,v_proj; 're:REGEX' matches whole names)")
    p.add_argument("--gradient-checkpointing", action="store_true",
                   help="recompute each block's activations in backward (less memory, ~1/3 more compute)")
    p.add_argument("--packing", action="store_true", help="join short examples into rows of --max-length tokens")
    p.add_argument("--eval-interval", type=int, default=None, help="steps between evaluations (default steps/4)")
    p.add_argument("--checkpoint-interval", type=int, default=None, help="steps between checkpoints (default steps/4)")
    p.add_argument("--out-dir", default="runs", help="where chat-tuning run folders go (default runs/)")
    p.add_argument("--name", default=None, help="run folder name (default: lora-TIMESTAMP or tune-TIMESTAMP)")
    p.add_argument("--resume", metavar="RUN_DIR", default=None, help="continue a chat-tuning run from its checkpoint")
    p.add_argument("--show-answers", type=int, default=3,
                   help="held-out questions answered (greedily) before and after training (default 3)")


def wants_chat_tuning(args) -> bool:
    return bool(args.model or args.lora or args.resume)


def _lora_config(args, base: str):
    from ..nn.lora import LoraConfig

    names = args.target_modules.strip()
    targets = names[3:] if names.startswith("re:") else [n.strip() for n in names.split(",") if n.strip()]
    try:
        return LoraConfig(r=args.lora_r, lora_alpha=args.lora_alpha, lora_dropout=args.lora_dropout,
                          target_modules=targets, base_model_name_or_path=base)
    except (TypeError, ValueError) as error:
        raise CommandError(str(error)) from None


def _new_run(args) -> tuple[dict, Path]:
    from ..data import atomic_write_text
    from ..train import TrainingConfig

    if args.model is None:
        raise CommandError("--lora needs --model PATH (a .gguf file or a Hugging Face Llama-family folder)")
    base = Path(args.model).resolve()
    if not base.exists():
        raise CommandError(f"{args.model}: no such file or folder")
    steps = args.steps
    interval = max(1, steps // 4)
    training = TrainingConfig(max_steps=steps, batch_size=args.batch_size, lr=args.lr or (3e-4 if args.lora else 2e-5),
                              warmup_steps=max(1, steps // 10), weight_decay=0.0, schedule="cosine",
                              eval_interval=args.eval_interval or interval,
                              checkpoint_interval=args.checkpoint_interval or interval, seed=args.seed,
                              log_interval=1)
    name = args.name or f"{'lora' if args.lora else 'tune'}-{time.strftime('%Y%m%d-%H%M%S')}"
    run_dir = Path(args.out_dir) / name
    if (run_dir / "config.json").exists():
        raise CommandError(f"{run_dir} already holds a run; choose another --name or --resume it")
    config = {
        "kind": "chat-tuning", "base_model": str(base),
        "lora": _lora_config(args, str(base)).to_peft() if args.lora else None,
        "training": training.__dict__ | {"betas": list(training.betas)},
        "data": [str(Path(args.data).resolve())] if args.data else None,
        "max_length": args.max_length or 256, "packing": args.packing,
        "gradient_checkpointing": args.gradient_checkpointing, "minilm_version": __version__,
    }
    run_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_text(run_dir / "config.json", json.dumps(config, indent=2) + "\n")
    return config, run_dir


def _conversations(config) -> tuple[list, list, str]:
    from ..data import train_val_split
    from ..train.chat_data import ChatDataError, builtin_instructions, read_conversations

    if not config["data"]:
        train, held_out = builtin_instructions()
        return train, held_out, BUILTIN_DATA
    try:
        conversations = [c for path in config["data"] for c in read_conversations(path)]
    except ChatDataError as error:
        raise CommandError(str(error)) from None
    if len(conversations) < 2:
        raise CommandError(f"{', '.join(config['data'])}: at least two examples are needed (one is held out)")
    train_rows, val_rows = train_val_split(len(conversations), 0.1, seed=config["training"]["seed"])
    return [conversations[i] for i in train_rows], [conversations[i] for i in val_rows], ", ".join(config["data"])


def held_out_answers(model, tokenizer, conversations, count: int, max_new_tokens: int = 48) -> list[str]:
    """Greedy answers to the first user message of `count` held-out conversations."""
    import numpy as np

    answers = []
    for messages in conversations[:count]:
        prompt = messages[: next(i for i, m in enumerate(messages) if m["role"] == "assistant")]
        ids = np.array([tokenizer.apply_chat_template(prompt, add_generation_prompt=True)])
        out = model.generate(ids, max_new_tokens=max_new_tokens, eos_token_id=tokenizer.eos_token_id)
        new = [int(t) for t in np.asarray(out)[0, ids.shape[1]:] if int(t) != tokenizer.eos_token_id]
        answers.append(tokenizer.decode(new).strip())
    return answers


def run(args) -> int:
    import minilm as ml

    from ..chat import load_pretrained
    from ..data import atomic_write_text
    from ..nn import lora
    from ..train import ChatTuningTask, Trainer, TrainingConfig
    from ..train.chat_data import encode_examples, pack

    if args.backend:
        ml.set_backend(args.backend)
    if args.resume:
        run_dir = Path(args.resume)
        try:
            config = json.loads((run_dir / "config.json").read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise CommandError(f"{run_dir}: not a run folder (no config.json)") from None
        if config.get("kind") != "chat-tuning":
            raise CommandError(f"{run_dir}: not a chat-tuning run (resume `minilm train` runs with minilm train)")
        if args.steps != 100:  # --steps given: extend (or shorten) the run
            config["training"]["max_steps"] = args.steps
        say(args, f"resuming {run_dir}")
    else:
        config, run_dir = _new_run(args)
    training = TrainingConfig.from_dict(config["training"])
    ml.manual_seed(training.seed)
    try:
        model, tokenizer = load_pretrained(config["base_model"])
    except ValueError as error:
        raise CommandError(str(error)) from None
    train, held_out, source = _conversations(config)
    max_length = config["max_length"]
    started = time.perf_counter()
    train_examples, dropped = encode_examples(tokenizer, train, max_length)
    val_examples, val_dropped = encode_examples(tokenizer, held_out, max_length)
    if config["packing"]:
        train_examples = pack(train_examples, max_length)
    say(args, f"data: {source}: {len(train)} training / {len(held_out)} held-out conversations -> "
              f"{len(train_examples)} training rows{' (packed)' if config['packing'] else ''}, "
              f"{len(val_examples)} held-out ({dropped + val_dropped} with no assistant token within "
              f"{max_length} tokens dropped; {time.perf_counter() - started:.1f} s)")
    if config["lora"]:
        lora.add_adapters(model, lora.LoraConfig.from_peft(config["lora"]))
    if config["gradient_checkpointing"]:
        model.gradient_checkpointing_enable()
    trainable, total = lora.trainable_parameters(model)
    pad_id = tokenizer.eos_token_id if tokenizer.eos_token_id is not None else 0
    task = ChatTuningTask(train_examples, val_examples, training.batch_size, pad_id, seed=training.seed)
    questions = [c for c in held_out if any(m["role"] == "user" for m in c)]
    model.eval()
    before = held_out_answers(model, tokenizer, questions, args.show_answers) \
        if args.show_answers and not args.resume else []
    trainer = Trainer(model, task, training, out_dir=run_dir, quiet=args.quiet)
    if args.resume:
        trainer.load_checkpoint(run_dir / "checkpoint")
    initial = trainer.evaluate() if not args.resume else None
    say(args, f"model: {config['base_model']}, {total:,} parameters, {trainable:,} trained; "
              f"{training.max_steps} steps of {training.batch_size} conversations -> {run_dir}")
    started = time.perf_counter()
    trainer.fit()
    elapsed = time.perf_counter() - started
    final = [r for r in trainer.history if r["step"] == trainer.step and "val_loss" in r]  # evaluated at the end
    metrics = {k: v for k, v in final[-1].items() if k != "step"} if final else trainer.evaluate()
    if config["lora"]:
        lora.save_adapter(model, run_dir / "adapter")
        saved = run_dir / "adapter"
    else:
        model.save_pretrained(run_dir / "model")
        saved = run_dir / "model"
    lines = [f"trained {trainer.step} steps in {elapsed:.0f} s"]
    if initial is not None:
        metrics["initial_val_loss"] = initial["val_loss"]
        lines.append(f"held-out loss (assistant tokens) {initial['val_loss']:.4f} -> {metrics['val_loss']:.4f}")
    else:
        lines.append(f"held-out loss (assistant tokens) {metrics['val_loss']:.4f}")
    for line in lines:
        print(line)
    atomic_write_text(run_dir / "final_metrics.json", json.dumps(metrics, indent=2) + "\n")
    if args.show_answers:
        model.eval()
        after = held_out_answers(model, tokenizer, questions, args.show_answers)
        report = []
        for messages, answer, first in zip(questions, after, before or [None] * len(after)):
            report.append("Q: " + next(m["content"] for m in messages if m["role"] == "user"))
            if first is not None:
                report.append(f"before:    {first}")
            report += [f"after:     {answer}",
                       "reference: " + next(m["content"] for m in messages if m["role"] == "assistant") + "\n"]
        atomic_write_text(run_dir / "answers.txt", "\n".join(report) + "\n")
        print("\n".join(report))
    print(f"run folder: {run_dir} ({saved.name}/ holds the {'adapter' if config['lora'] else 'model'}; "
          f"minilm chat {run_dir})")
    return 0
