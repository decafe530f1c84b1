"""BERT from scratch: masked-LM pretraining on the built-in docs, then fine-tuning a classifier.

    python examples/bert_pretrain_finetune.py [--pretrain-steps 200] [--finetune-steps 120]

The labeled set is built from real text: paragraphs of the Python documentation that ships
with CPython, labeled by the kind of topic they come from (statements such as `for` or
`try`, versus built-in types and objects such as `dict` or `str` methods). The script
reports held-out accuracy next to the majority-class baseline.
"""

import argparse

import numpy as np

import minilm as ml
from minilm.cli import builtin_text
from minilm.data import LabeledTexts, train_val_split
from minilm.models import BertConfig, BertForMaskedLM, BertForSequenceClassification
from minilm.tokenizers import BPETokenizer
from minilm.train import ClassificationTask, MaskedLMTask, Trainer, TrainingConfig

STATEMENTS = {"assert", "assignment", "async", "augassign", "break", "class", "compound", "continue", "del", "for",
              "function", "global", "if", "import", "nonlocal", "pass", "raise", "return", "try", "while", "with",
              "yield"}
TYPES = {"bltin-code-objects", "bltin-type-objects", "callable-types", "dict", "lists", "numeric-types",
         "sequence-types", "string-methods", "types", "typesfunctions", "typesmapping", "typesmethods",
         "typesmodules", "typesseq", "typesseq-mutable", "integers", "floating", "imaginary"}
SPECIALS = ("[PAD]", "[CLS]", "[SEP]", "[MASK]")


def labeled_paragraphs() -> LabeledTexts:
    from pydoc_data.topics import topics

    texts, labels = [], []
    for key, label in [(k, 0) for k in sorted(STATEMENTS)] + [(k, 1) for k in sorted(TYPES)]:
        for paragraph in topics[key].split("\n\n"):
            paragraph = " ".join(paragraph.split())
            if len(paragraph) >= 80:
                texts.append(paragraph)
                labels.append(label)
    return LabeledTexts(texts, labels, ["statement", "type"])


class BPEForBert:
    """Makes a BPE tokenizer answer like WordPieceTokenizer: [CLS] ids [SEP], padded batches."""

    def __init__(self, tokenizer: BPETokenizer):
        self.tokenizer = tokenizer
        self.cls, self.sep, self.pad = (tokenizer.special_tokens[t] for t in ("[CLS]", "[SEP]", "[PAD]"))

    def __call__(self, texts, padding=True, truncation=True, max_length=128):
        rows = [[self.cls] + self.tokenizer.encode_ordinary(t)[: max_length - 2] + [self.sep] for t in texts]
        width = max(map(len, rows))
        return {"input_ids": [r + [self.pad] * (width - len(r)) for r in rows],
                "attention_mask": [[1] * len(r) + [0] * (width - len(r)) for r in rows],
                "token_type_ids": [[0] * width for _ in rows]}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pretrain-steps", type=int, default=200)
    parser.add_argument("--finetune-steps", type=int, default=120)
    parser.add_argument("--width", type=int, default=128)
    parser.add_argument("--finetune-lr", type=float, default=5e-4)
    args = parser.parse_args(argv)

    text = builtin_text()
    tokenizer = BPETokenizer.train(text, 1024, special_tokens=SPECIALS, verbose=False)
    ids = np.array(tokenizer.encode_ordinary(text))
    split = int(0.95 * len(ids))
    config = BertConfig(vocab_size=tokenizer.vocab_size, hidden_size=args.width, num_hidden_layers=3,
                        num_attention_heads=4, intermediate_size=4 * args.width, max_position_embeddings=128,
                        hidden_dropout_prob=0.1, attention_probs_dropout_prob=0.1, num_labels=2)
    special = {"pad": 0, "cls": 0, "sep": 0, "mask": 0}
    special.update({k: tokenizer.special_tokens[v] for k, v in
                    (("pad", "[PAD]"), ("cls", "[CLS]"), ("sep", "[SEP]"), ("mask", "[MASK]"))})
    config.pad_token_id = special["pad"]

    # 1. Masked-LM pretraining
    ml.manual_seed(0)
    mlm = BertForMaskedLM(config)
    task = MaskedLMTask(ids[:split], ids[split:], 64, 16, special, tokenizer.vocab_size)
    pretraining = TrainingConfig(max_steps=args.pretrain_steps, lr=1e-3, warmup_steps=min(30, args.pretrain_steps),
                                 eval_interval=max(1, args.pretrain_steps // 3), eval_batches=5)
    Trainer(mlm, task, pretraining).fit()

    # 2. Fine-tuning: the pretrained encoder plus a fresh classifier
    data = labeled_paragraphs()
    train_rows, val_rows = train_val_split(len(data), 0.25, seed=0)
    ml.manual_seed(1)
    classifier = BertForSequenceClassification(config)
    encoder = {k: v for k, v in mlm.bert.state_dict().items()}
    classifier.bert.load_state_dict(encoder, strict=False)
    task = ClassificationTask(data.subset(train_rows), data.subset(val_rows), BPEForBert(tokenizer), 16, max_length=96)
    finetuning = TrainingConfig(max_steps=args.finetune_steps, lr=args.finetune_lr,
                                warmup_steps=min(15, args.finetune_steps),
                                eval_interval=max(1, args.finetune_steps // 3), schedule="linear", min_lr_ratio=0.0,
                                weight_decay=0.01)
    trainer = Trainer(classifier, task, finetuning)
    trainer.fit()
    accuracy = trainer.evaluate()["val_accuracy"]
    val_labels = np.array([data.labels[i] for i in val_rows])
    majority = max(np.mean(val_labels), 1 - np.mean(val_labels))
    print(f"held-out accuracy {accuracy:.3f} on {len(val_rows)} paragraphs; majority class {majority:.3f}")
    return accuracy, majority


if __name__ == "__main__":
    main()
