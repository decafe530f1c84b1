"""`minilm classify`: label texts with a classifier that `minilm finetune` wrote."""

from __future__ import annotations

import sys
from pathlib import Path

from .common import CommandError


def add_parser(commands) -> None:
    p = commands.add_parser("classify", help="label texts with a model from `minilm finetune`",
                            description="Print the predicted label and its probability for each text.")
    p.add_argument("folder", metavar="FOLDER", help="the --out folder of `minilm finetune` (or its model/ folder)")
    p.add_argument("--text", nargs="+", metavar="TEXT", help="texts to classify (default: one per line of stdin)")
    p.add_argument("--max-length", type=int, default=128, help="tokens per text (default 128)")
    p.set_defaults(run=run)


def run(args) -> int:
    import numpy as np

    from ..autograd import no_grad
    from ..models import BertForSequenceClassification
    from ..tokenizers import WordPieceTokenizer

    folder = Path(args.folder)
    if (folder / "model" / "config.json").exists():
        folder = folder / "model"
    if not (folder / "config.json").exists():
        raise CommandError(f"{args.folder}: no fine-tuned model here "
                           f"(run `minilm finetune --out {args.folder}` first)")
    if not (folder / "vocab.txt").exists():
        raise CommandError(f"{folder}: no vocab.txt; the tokenizer files are missing (a model from an older "
                           "`minilm finetune`: copy them from the pretrained folder)")
    texts = args.text if args.text else [line.rstrip("\n") for line in sys.stdin if line.strip()]
    if not texts:
        raise CommandError("no texts to classify: give --text or lines on stdin")
    tokenizer = WordPieceTokenizer.from_pretrained(folder)
    model = BertForSequenceClassification.from_pretrained(folder).eval()
    labels = model.config.id2label or {i: f"LABEL_{i}" for i in range(model.config.num_labels)}
    batch = tokenizer(texts, padding=True, truncation=True, max_length=args.max_length)
    with no_grad():
        logits = model(*(np.asarray(batch[k], dtype=np.int64)
                         for k in ("input_ids", "attention_mask", "token_type_ids")), skip_padding=True).logits.numpy()
    logits = logits - logits.max(-1, keepdims=True)
    probs = np.exp(logits) / np.exp(logits).sum(-1, keepdims=True)  # [N, num_labels]
    for text, row in zip(texts, probs):
        best = int(row.argmax())
        print(f"{labels[best]}\t{row[best]:.3f}\t{text}")
    return 0
