"""Training and using encoder-decoder models on source/target pairs.

`Seq2SeqTask` is a task for the `Trainer` (see `tasks.py`): it hands out padded batches of
pairs, computes the (optionally label-smoothed) loss, and evaluates with the validation loss
and the BLEU and ROUGE-L of greedy outputs. `translate` turns texts into texts with a trained
model (beam search with `num_beams > 1`); `score_outputs` gives their BLEU and ROUGE-L.
"""

from __future__ import annotations

import math

import numpy as np

from ..autograd import Tensor
from ..metrics import corpus_bleu, corpus_rouge_l
from ..seq2seq_data import collate, encode_source, encode_target, pad_right, special_ids


class Seq2SeqTask:
    """Sequence-to-sequence learning on (source, target) text pairs with one joint tokenizer.

    Training batches are random pairs (a new shuffle every epoch); evaluation is the loss over
    the validation pairs (token-weighted, without label smoothing) plus the BLEU and ROUGE-L
    of greedy outputs for the first `generate_examples` of them.
    """

    metric = "val_loss"

    def __init__(self, train_pairs, val_pairs, tokenizer, batch_size: int, max_source_len: int = 128,
                 max_target_len: int = 48, label_smoothing: float = 0.0, generate_examples: int = 64,
                 seed: int = 0):
        if not train_pairs or not val_pairs:
            raise ValueError(f"need training and validation pairs, got {len(train_pairs)} and {len(val_pairs)}")
        self.tokenizer, self.ids = tokenizer, special_ids(tokenizer)
        self.batch_size, self.label_smoothing = batch_size, label_smoothing
        self.max_source_len, self.max_target_len = max_source_len, max_target_len
        self.generate_examples = generate_examples
        self.train = self._encode(train_pairs)
        self.val = self._encode(val_pairs)
        self.val_pairs = list(val_pairs)
        self.rng = np.random.default_rng(seed)
        self.order, self.position = self.rng.permutation(len(self.train)), 0

    def _encode(self, pairs) -> list[tuple[list[int], list[int]]]:
        return [(encode_source(self.tokenizer, source, self.max_source_len),
                 encode_target(self.tokenizer, target, self.max_target_len)) for source, target in pairs]

    def _batch(self, rows) -> dict:
        return collate([rows_[0] for rows_ in rows], [rows_[1] for rows_ in rows], self.ids)

    def next_batch(self) -> dict:
        if self.position + self.batch_size > len(self.order):  # a new epoch: reshuffle
            self.order, self.position = self.rng.permutation(len(self.train)), 0
        rows = self.order[self.position : self.position + self.batch_size]
        self.position += self.batch_size
        return self._batch([self.train[i] for i in rows])

    def loss(self, model, batch) -> Tensor:
        return self._forward(model, batch, self.label_smoothing).loss

    @staticmethod
    def _forward(model, batch, label_smoothing: float):
        return model(batch["src_ids"], batch["tgt_ids"], src_attention_mask=batch["src_attention_mask"],
                     tgt_attention_mask=batch["tgt_attention_mask"], labels=batch["labels"],
                     label_smoothing=label_smoothing)

    def evaluate(self, model, max_batches: int) -> dict:
        total, count = 0.0, 0
        for batch_index, start in enumerate(range(0, len(self.val), self.batch_size)):
            if batch_index >= max_batches:
                break
            batch = self._batch(self.val[start : start + self.batch_size])
            targets = int((batch["labels"] != -100).sum())
            total += float(self._forward(model, batch, 0.0).loss.item()) * targets
            count += targets
        mean = total / count
        metrics = {"val_loss": mean, "val_ppl": math.exp(min(mean, 700.0))}
        if self.generate_examples > 0:
            shown = self.val_pairs[: self.generate_examples]
            outputs = translate(model, self.tokenizer, [source for source, _ in shown],
                                max_source_len=self.max_source_len, max_new_tokens=self.max_target_len)
            scores = score_outputs(outputs, [target for _, target in shown])
            metrics |= {"val_bleu": scores["bleu"], "val_rouge_l": scores["rouge_l"]}
        return metrics

    def state_dict(self) -> dict:
        return {"rng": self.rng.bit_generator.state, "order": self.order.tolist(), "position": self.position}

    def load_state_dict(self, state: dict) -> None:
        self.rng.bit_generator.state = state["rng"]
        self.order, self.position = np.asarray(state["order"]), state["position"]


def translate(model, tokenizer, texts, *, max_source_len: int = 128, max_new_tokens: int = 48, num_beams: int = 1,
              batch_size: int = 32) -> list[str]:
    """The model's output text for each source text (greedy, or beam search with num_beams > 1).

    Sources are batched by length (less padding) and the outputs returned in input order.
    """
    ids = special_ids(tokenizer)
    encoded = [encode_source(tokenizer, text, max_source_len) for text in texts]
    order = sorted(range(len(encoded)), key=lambda i: len(encoded[i]))
    outputs: list[str] = [""] * len(encoded)
    was_training = model.training
    model.eval()
    try:
        for start in range(0, len(order), batch_size):
            rows = order[start : start + batch_size]
            src, mask = pad_right([encoded[i] for i in rows], ids["pad"])  # [N, S]
            generated = np.asarray(model.generate(src, attention_mask=mask, max_new_tokens=max_new_tokens,
                                                  num_beams=num_beams))
            for r, i in enumerate(rows):
                outputs[i] = tokenizer.decode(output_tokens(generated[r], ids))
    finally:
        model.train(was_training)
    return outputs


def output_tokens(row, ids: dict) -> list[int]:
    """The text tokens of one generated decoder sequence: after the start token, before </s>."""
    tokens = [int(t) for t in row]
    if tokens and tokens[0] == ids["bos"]:
        tokens = tokens[1:]
    if ids["eos"] in tokens:
        tokens = tokens[: tokens.index(ids["eos"])]
    return [t for t in tokens if t not in (ids["pad"], ids["bos"])]


def score_outputs(outputs, references) -> dict:
    """{"bleu": corpus BLEU (0-100), "rouge_l": mean ROUGE-L F-measure (0-100)}."""
    return {"bleu": corpus_bleu(outputs, [list(references)]).score,
            "rouge_l": 100.0 * corpus_rouge_l(outputs, references).fmeasure}
