"""The Trainer against independent oracles: what it computes, not only that it repeats itself.

- gradient accumulation: two micro-batches of B give the gradient of one batch of 2B;
- a short run on real text lowers the validation loss and beats the unigram baseline;
- a resume from a backed-off float16 loss scale continues with that scale.
"""

import json
import math

import numpy as np
import pytest

import minilm as ml
from minilm.models import GPT, GPTConfig
from minilm.tokenizers import CharTokenizer
from minilm.train import CausalLMTask, Trainer, TrainingConfig


class _FixedOrderTask(CausalLMTask):
    """Serves a fixed list of windows in order, `batch_size` at a time: with batch B and
    grad_accum 2 the optimizer step sees exactly the rows one batch of 2B holds."""

    def __init__(self, windows, val_tokens, batch_size):
        super().__init__(windows.reshape(-1), val_tokens, block_size=windows.shape[1] - 1, batch_size=batch_size)
        self.windows, self.position = windows, 0

    def next_batch(self):
        rows = self.windows[self.position : self.position + self.batch_size]
        self.position += self.batch_size
        return {"ids": rows[:, :-1], "targets": rows[:, 1:]}


def _gradients_seen_by_the_optimizer(batch_size, grad_accum, windows, steps=3):
    ml.manual_seed(0)
    # dropout off: with it the two runs would draw different masks for the same rows
    model = GPT(GPTConfig(vocab_size=40, n_layer=2, n_head=2, n_embd=16, block_size=16, dropout=0.0))
    model = model.to(dtype=ml.float64)
    task = _FixedOrderTask(windows, np.arange(40), batch_size)
    config = TrainingConfig(max_steps=steps, batch_size=batch_size, grad_accum=grad_accum, lr=1e-2, warmup_steps=0,
                            grad_clip=0.0, eval_interval=1000, log_interval=1)
    trainer = Trainer(model, task, config, quiet=True)
    seen = []
    step = trainer.optimizer.step

    def recording_step(*args, **kwargs):
        seen.append([p.grad.numpy().copy() for p in model.parameters()])
        return step(*args, **kwargs)

    trainer.optimizer.step = recording_step
    history = trainer.fit()
    return seen, [r["loss"] for r in history if "loss" in r], [p.numpy() for p in model.parameters()]


def test_gradient_accumulation_equals_one_batch_twice_the_size():
    windows = np.random.default_rng(1).integers(0, 40, (3 * 8, 17))  # 3 steps of 8 rows of 16 + 1 tokens
    accumulated, accumulated_losses, accumulated_params = _gradients_seen_by_the_optimizer(4, 2, windows)
    whole, whole_losses, whole_params = _gradients_seen_by_the_optimizer(8, 1, windows)
    assert len(accumulated) == len(whole) == 3
    for step, (got, expected) in enumerate(zip(accumulated, whole)):
        for g, e in zip(got, expected):
            # the mean over 8 rows, as the mean of two means over 4 (equal token counts): float64 rounding only
            np.testing.assert_allclose(g, e, rtol=1e-9, atol=1e-12, err_msg=f"step {step + 1}")
    np.testing.assert_allclose(accumulated_losses, whole_losses, rtol=1e-12)
    for got, expected in zip(accumulated_params, whole_params):
        np.testing.assert_allclose(got, expected, rtol=1e-9, atol=1e-12)


def _python_docs_characters(size=60_000):
    import pydoc_data.topics

    text = "\n".join(pydoc_data.topics.topics[k] for k in sorted(pydoc_data.topics.topics))
    return text[:size]


def _unigram_cross_entropy(train, val, vocab_size):
    """Nats per token of the add-one-smoothed unigram model of `train`, scored on `val`."""
    counts = np.bincount(train, minlength=vocab_size) + 1.0
    return float(-np.log(counts[val] / counts.sum()).mean())


def test_a_short_training_run_lowers_the_loss_and_beats_the_unigram_baseline():
    text = _python_docs_characters()
    tokenizer = CharTokenizer.from_text(text)
    tokens = np.asarray(tokenizer.encode(text), dtype=np.int64)
    train, val = tokens[:54_000], tokens[54_000:]
    ml.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=tokenizer.vocab_size, n_layer=1, n_head=2, n_embd=32, block_size=32,
                          dropout=0.0))
    task = CausalLMTask(train, val, block_size=32, batch_size=16, seed=0)
    config = TrainingConfig(max_steps=150, batch_size=16, lr=5e-3, warmup_steps=5, eval_interval=150, eval_batches=8,
                            log_interval=10)
    trainer = Trainer(model, task, config, quiet=True)
    before = trainer.evaluate()["val_loss"]
    trainer.fit()
    after = trainer.evaluate()["val_loss"]
    unigram = _unigram_cross_entropy(train, val[: 8 * 16 * 32 + 1], tokenizer.vocab_size)
    # An untrained model is close to uniform: log(vocab) nats (4.6 here). 150 steps must learn
    # the character frequencies and some context: 1 nat below the start (seen: 1.56), and
    # 0.1 nat below the unigram model of the training text (seen: 3.01 against 3.30 nats).
    assert before == pytest.approx(math.log(tokenizer.vocab_size), abs=0.3)
    assert after < before - 1.0, (before, after)
    assert after < unigram - 0.1, (after, unigram)


def _fp16_trainer(out_dir):
    ml.manual_seed(0)
    tokens = np.random.default_rng(0).integers(0, 40, 3000)
    model = GPT(GPTConfig(vocab_size=40, n_layer=1, n_head=2, n_embd=16, block_size=16, dropout=0.1))
    task = CausalLMTask(tokens[:2500], tokens[2500:], block_size=16, batch_size=4, seed=0)
    config = TrainingConfig(max_steps=10, batch_size=4, lr=1e-2, warmup_steps=2, log_interval=1, eval_interval=5,
                            checkpoint_interval=5, eval_batches=2, precision="fp16")
    trainer = Trainer(model, task, config, out_dir=out_dir, quiet=True)
    # Start far too high: float16 gradients overflow, steps are skipped and the scale backs
    # off, so the scale at the checkpoint is not the default a fresh Trainer starts with.
    trainer.scaler.load_state_dict({**trainer.scaler.state_dict(), "scale": 2.0**26})
    return trainer


@pytest.mark.filterwarnings("ignore:overflow encountered:RuntimeWarning",
                            "ignore:invalid value encountered:RuntimeWarning")
def test_a_resume_continues_from_the_backed_off_loss_scale(tmp_path):
    uninterrupted = _fp16_trainer(tmp_path / "a").fit()
    first = _fp16_trainer(tmp_path / "b")
    first.fit(stop_at_step=5)
    saved = json.loads((tmp_path / "b" / "checkpoint" / "trainer_state.json").read_text())["scaler"]
    assert saved["skipped_steps"] > 0 and saved["scale"] < 2.0**26  # it did back off
    assert saved["scale"] != ml.amp.GradScaler().get_scale()  # ...to a scale a fresh scaler lacks

    resumed = Trainer(first.model, first.task, first.config, out_dir=tmp_path / "b", quiet=True)
    resumed.load_checkpoint(tmp_path / "b" / "checkpoint")
    assert resumed.scaler.get_scale() == saved["scale"]
    assert resumed.scaler.state_dict() == saved
    history = resumed.fit()
    later = [(r["step"], r["loss"], r["loss_scale"], r["skipped_steps"]) for r in history if "loss" in r]
    expected = [(r["step"], r["loss"], r["loss_scale"], r["skipped_steps"]) for r in uninterrupted if "loss" in r]
    if ml.default_device().name == "cpu":
        assert later == expected
    else:  # CUDA's atomic adds change the last bits of the losses from run to run
        assert [r[2:] for r in later] == [r[2:] for r in expected]
        np.testing.assert_allclose([r[1] for r in later], [r[1] for r in expected], rtol=1e-5)
