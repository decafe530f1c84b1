"""Training tasks: what to learn from. A task knows its data and its loss.

Every task has the same small interface, which is all the `Trainer` uses:

    task.next_batch() -> dict            # the next training batch (NumPy arrays)
    task.loss(model, batch) -> Tensor    # the scalar loss of a batch
    task.evaluate(model, max_batches)    # validation metrics, e.g. {"val_loss": ..., "val_ppl": ...}
    task.metric                          # the metric early stopping watches (lower is better)
    task.state_dict() / load_state_dict(state)   # the data position, for exact resume

A new kind of training (seq2seq, contrastive ...) is a new class with these five members.
"""

from __future__ import annotations

import math

import numpy as np

from ..autograd import Tensor
from ..data import MaskedLMCollator, RandomWindowSampler, sequential_windows


class CausalLMTask:
    """Next-token prediction on random windows of a token stream; evaluation on fixed windows."""

    metric = "val_loss"

    def __init__(self, train_tokens, val_tokens, block_size: int, batch_size: int, seed: int = 0):
        self.sampler = RandomWindowSampler(train_tokens, block_size, batch_size, seed)
        self.val_tokens, self.block_size, self.batch_size = val_tokens, block_size, batch_size
        if len(val_tokens) < block_size + 1:
            raise ValueError(f"validation data has {len(val_tokens)} tokens, "
                             f"fewer than block_size + 1 = {block_size + 1}")

    def next_batch(self) -> dict:
        ids, targets = self.sampler.next_batch()
        return {"ids": ids, "targets": targets}

    def loss(self, model, batch) -> Tensor:
        return model(batch["ids"], targets=batch["targets"]).loss

    def evaluate(self, model, max_batches: int) -> dict:
        total, count = 0.0, 0
        for i, (ids, targets) in enumerate(sequential_windows(self.val_tokens, self.block_size, self.batch_size)):
            if i >= max_batches:
                break
            loss = model(ids, targets=targets).loss
            total += float(loss.item()) * targets.size
            count += targets.size
        mean = total / count
        return {"val_loss": mean, "val_ppl": math.exp(min(mean, 700.0))}

    def state_dict(self) -> dict:
        return {"sampler": self.sampler.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        self.sampler.load_state_dict(state["sampler"])


class MaskedLMTask:
    """BERT pretraining: [CLS] window [SEP] sequences with 15% of tokens masked."""

    metric = "val_loss"

    def __init__(self, train_tokens, val_tokens, block_size: int, batch_size: int, special: dict, vocab_size: int,
                 seed: int = 0):
        inner = block_size - 2  # room for [CLS] and [SEP]
        self.sampler = RandomWindowSampler(train_tokens, inner, batch_size, seed)
        self.val_tokens, self.inner, self.batch_size, self.special = val_tokens, inner, batch_size, special
        specials = [special["cls"], special["sep"], special["mask"], special["pad"]]
        self.collator = MaskedLMCollator(special["mask"], vocab_size, specials, seed=seed + 1)
        self.vocab_size = vocab_size

    def _frame(self, windows: np.ndarray) -> np.ndarray:
        rows = len(windows)
        cls = np.full((rows, 1), self.special["cls"], dtype=np.int64)
        sep = np.full((rows, 1), self.special["sep"], dtype=np.int64)
        return np.concatenate([cls, windows, sep], axis=1)

    def next_batch(self) -> dict:
        windows, _ = self.sampler.next_batch()
        ids, labels = self.collator(self._frame(windows))
        return {"ids": ids, "labels": labels}

    def loss(self, model, batch) -> Tensor:
        return model(batch["ids"], labels=batch["labels"]).loss

    def evaluate(self, model, max_batches: int) -> dict:
        fixed = MaskedLMCollator(self.special["mask"], self.vocab_size, self.collator.special_ids, seed=1234)
        total, count = 0.0, 0
        for i, (windows, _) in enumerate(sequential_windows(self.val_tokens, self.inner, self.batch_size)):
            if i >= max_batches:
                break
            ids, labels = fixed(self._frame(windows))
            masked = int((labels != -100).sum())
            if masked == 0:
                continue
            total += float(model(ids, labels=labels).loss.item()) * masked
            count += masked
        mean = total / max(count, 1)
        return {"val_loss": mean, "val_ppl": math.exp(min(mean, 700.0))}

    def state_dict(self) -> dict:
        return {"sampler": self.sampler.state_dict(), "collator": self.collator.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        self.sampler.load_state_dict(state["sampler"])
        self.collator.load_state_dict(state["collator"])


class ClassificationTask:
    """Sequence classification from labeled texts (a WordPieceTokenizer encodes them).

    Each batch is padded to its longest text, and the model skips the padding
    (BertForSequenceClassification's skip_padding): a step costs what its tokens cost.
    """

    metric = "val_loss"

    def __init__(self, train, val, tokenizer, batch_size: int, max_length: int = 128, seed: int = 0):
        self.train, self.val, self.tokenizer = train, val, tokenizer
        self.batch_size, self.max_length = batch_size, max_length
        self.rng = np.random.default_rng(seed)
        self.order, self.position = self.rng.permutation(len(train)), 0

    def _encode(self, texts, labels) -> dict:
        batch = self.tokenizer(list(texts), padding=True, truncation=True, max_length=self.max_length)
        return {key: np.asarray(value, dtype=np.int64) for key, value in batch.items()} | {
            "labels": np.asarray(labels, dtype=np.int64)}

    def next_batch(self) -> dict:
        if self.position + self.batch_size > len(self.order):  # a new epoch: reshuffle
            self.order, self.position = self.rng.permutation(len(self.train)), 0
        rows = self.order[self.position : self.position + self.batch_size]
        self.position += self.batch_size
        return self._encode([self.train.texts[i] for i in rows], [self.train.labels[i] for i in rows])

    def loss(self, model, batch) -> Tensor:
        return model(batch["input_ids"], batch["attention_mask"], batch["token_type_ids"], labels=batch["labels"],
                     skip_padding=True).loss

    def evaluate(self, model, max_batches: int) -> dict:
        total, correct, count = 0.0, 0, 0
        for start in range(0, len(self.val), self.batch_size):
            batch = self._encode(self.val.texts[start : start + self.batch_size],
                                 self.val.labels[start : start + self.batch_size])
            logits, loss = model(batch["input_ids"], batch["attention_mask"], batch["token_type_ids"],
                                 labels=batch["labels"], skip_padding=True)
            rows = len(batch["labels"])
            total += float(loss.item()) * rows
            correct += int((logits.numpy().argmax(-1) == batch["labels"]).sum())
            count += rows
        return {"val_loss": total / count, "val_accuracy": correct / count}

    def state_dict(self) -> dict:
        return {"rng": self.rng.bit_generator.state, "order": self.order.tolist(), "position": self.position}

    def load_state_dict(self, state: dict) -> None:
        self.rng.bit_generator.state = state["rng"]
        self.order, self.position = np.asarray(state["order"]), state["position"]



class ChatTuningTask:
    """Causal-LM fine-tuning on conversations: the loss on the assistant's tokens only.

    Examples are (ids, labels) pairs from `chat_data.encode_examples` (labels -100 off the
    assistant's turns); batches are random examples, right-padded (see `chat_data.collate`).
    Evaluation is the mean loss per assistant token over the whole held-out set.
    """

    metric = "val_loss"

    def __init__(self, train_examples, val_examples, batch_size: int, pad_id: int, seed: int = 0):
        if not train_examples or not val_examples:
            raise ValueError(f"chat tuning needs training and held-out examples, got {len(train_examples)} and "
                             f"{len(val_examples)}")
        self.train_examples, self.val_examples = train_examples, val_examples
        self.batch_size, self.pad_id = batch_size, pad_id
        self.rng = np.random.default_rng(seed)

    def next_batch(self) -> dict:
        from .chat_data import collate

        rows = self.rng.choice(len(self.train_examples), size=self.batch_size,
                               replace=len(self.train_examples) < self.batch_size)
        return collate([self.train_examples[i] for i in rows], self.pad_id)

    def loss(self, model, batch) -> Tensor:
        _, loss = model(batch["ids"], targets=batch["targets"])  # a (logits, loss) tuple or a ModelOutput
        return loss

    def evaluate(self, model, max_batches: int | None = None) -> dict:
        """Every held-out example (max_batches is ignored: the set is small and the figure must be comparable)."""
        from .chat_data import IGNORE, collate

        total, count = 0.0, 0
        for start in range(0, len(self.val_examples), self.batch_size):
            batch = collate(self.val_examples[start: start + self.batch_size], self.pad_id)
            targets = int((batch["targets"] != IGNORE).sum())
            total += float(self.loss(model, batch).item()) * targets
            count += targets
        mean = total / count
        return {"val_loss": mean, "val_ppl": math.exp(min(mean, 700.0))}

    def state_dict(self) -> dict:
        return {"rng": self.rng.bit_generator.state}

    def load_state_dict(self, state: dict) -> None:
        self.rng.bit_generator.state = state["rng"]
