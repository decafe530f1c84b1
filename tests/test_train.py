"""The Trainer: bit-identical resume, divergence handling, early stopping, outputs on disk."""

import json

import numpy as np
import pytest

import minilm as ml
from minilm.autograd import Tensor
from minilm.models import GPT, GPTConfig
from minilm.train import CausalLMTask, Trainer, TrainingConfig, TrainingDiverged


def _setup(out_dir, **overrides):
    ml.manual_seed(0)
    tokens = np.random.default_rng(0).integers(0, 40, 3000)
    model = GPT(GPTConfig(vocab_size=40, n_layer=1, n_head=2, n_embd=16, block_size=16, dropout=0.1))
    task = CausalLMTask(tokens[:2500], tokens[2500:], block_size=16, batch_size=4, seed=0)
    settings = dict(max_steps=12, batch_size=4, lr=1e-2, warmup_steps=3, log_interval=1, eval_interval=4,
                    checkpoint_interval=6, eval_batches=2, grad_accum=2)
    config = TrainingConfig(**(settings | overrides))
    return Trainer(model, task, config, out_dir=out_dir, quiet=True)


def _losses(history):
    return [(r["step"], r["loss"]) for r in history if "loss" in r]


def test_resuming_from_a_checkpoint_gives_bit_identical_losses(tmp_path):
    uninterrupted = _setup(tmp_path / "a").fit()

    first = _setup(tmp_path / "b")
    first.fit(stop_at_step=6)  # "interrupted" right after the step-6 checkpoint
    resumed = _setup(tmp_path / "b")
    resumed.load_checkpoint(tmp_path / "b" / "checkpoint")
    assert resumed.step == 6
    history = resumed.fit()
    val = [r["val_loss"] for r in history if "val_loss" in r]
    expected_val = [r["val_loss"] for r in uninterrupted if "val_loss" in r]
    if ml.default_device().name == "cpu":
        assert _losses(history) == _losses(uninterrupted)  # exact float equality, every step
        assert val == expected_val
    else:
        # On CUDA the embedding gradient is summed with atomic adds, whose order varies
        # from run to run: the last bits of the losses do too, even without a resume.
        np.testing.assert_allclose(np.array(_losses(history)), np.array(_losses(uninterrupted)), rtol=1e-5)
        np.testing.assert_allclose(val, expected_val, rtol=1e-5)


def test_outputs_on_disk(tmp_path):
    trainer = _setup(tmp_path)
    trainer.fit()
    records = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records if "loss" in r] == list(range(1, 13))
    assert any("val_ppl" in r for r in records)
    assert (tmp_path / "loss.png").exists() or (tmp_path / "loss.svg").exists()
    state = json.loads((tmp_path / "checkpoint" / "trainer_state.json").read_text())
    assert state["step"] == 12
    assert not any(p.name.startswith(".checkpoint") for p in tmp_path.iterdir())


class _PoisonedTask(CausalLMTask):
    """Returns a NaN loss from the 4th batch on."""

    calls = 0

    def loss(self, model, batch):
        _PoisonedTask.calls += 1
        loss = super().loss(model, batch)
        return loss * float("nan") if _PoisonedTask.calls > 6 else loss  # grad_accum 2: step 4


def test_a_nan_loss_stops_training_and_keeps_the_last_good_checkpoint(tmp_path):
    trainer = _setup(tmp_path, )
    trainer.config.checkpoint_interval = 1
    trainer.task.__class__ = _PoisonedTask
    with pytest.raises(TrainingDiverged, match="the loss became nan at step 4"):
        trainer.fit()
    state = json.loads((tmp_path / "checkpoint" / "trainer_state.json").read_text())
    assert state["step"] == 3
    ml.load(tmp_path / "checkpoint" / "model.safetensors")  # intact and readable


def test_early_stopping_when_validation_stops_improving(tmp_path):
    trainer = _setup(None, early_stopping_patience=1)
    trainer.config.lr = 0.0  # nothing improves after the first evaluation
    trainer.scheduler.base_lrs = [0.0 for _ in trainer.scheduler.base_lrs]
    history = trainer.fit()
    assert trainer.step == 8  # evaluations at 4 (best) and 8 (no improvement): stop
    assert max(r["step"] for r in history) == 8


def test_mixed_precision_training_resumes_bit_for_bit_and_tracks_float32(tmp_path):
    fp32 = _setup(tmp_path / "fp32").fit()
    uninterrupted = _setup(tmp_path / "a", precision="fp16").fit()
    first = _setup(tmp_path / "b", precision="fp16")
    first.fit(stop_at_step=6)
    state = json.loads((tmp_path / "b" / "checkpoint" / "trainer_state.json").read_text())
    assert state["scaler"]["scale"] == 65536.0 and state["scaler"]["growth_tracker"] == 6
    resumed = _setup(tmp_path / "b", precision="fp16")
    resumed.load_checkpoint(tmp_path / "b" / "checkpoint")
    history = resumed.fit()
    if ml.default_device().name == "cpu":
        assert _losses(history) == _losses(uninterrupted)
    else:
        np.testing.assert_allclose(np.array(_losses(history)), np.array(_losses(uninterrupted)), rtol=1e-5)
    assert all(r["loss_scale"] == 65536.0 and r["skipped_steps"] == 0 for r in history if "loss" in r)
    # float16 matmuls follow the float32 run closely on this small model
    np.testing.assert_allclose(np.array(_losses(uninterrupted))[:, 1], np.array(_losses(fp32))[:, 1], rtol=1e-2)
    # a float32 checkpoint cannot silently start a float16 run without its loss scale
    fresh = _setup(tmp_path / "c", precision="fp16")
    with pytest.raises(ValueError, match="no loss-scaler state"):
        fresh.load_checkpoint(tmp_path / "fp32" / "checkpoint")


@pytest.mark.parametrize("schedule", ["cosine", "linear", "constant"])
def test_the_first_step_learns_under_every_warmup_schedule(schedule):
    trainer = _setup(None, schedule=schedule)  # lr 1e-2, 3 warmup steps
    # Optimizer steps 1, 2, 3 climb lr/3, 2lr/3, lr: the first step already learns.
    assert trainer.optimizer.param_groups[0]["lr"] == pytest.approx(1e-2 / 3)
    assert [trainer.scheduler.lr_at(step)[0] for step in range(3)] == pytest.approx([1e-2 / 3, 2e-2 / 3, 1e-2])
    before = [p.numpy().copy() for p in trainer.model.parameters()]
    trainer.fit(stop_at_step=1)
    assert any(not np.array_equal(old, p.numpy()) for old, p in zip(before, trainer.model.parameters()))


def test_micro_batches_do_not_each_read_the_loss_back_to_the_host(monkeypatch):
    """Gradient accumulation adds no device-to-host reads: the step's loss is summed where it
    is computed and read once per optimizer step (a GPU sync each, where reads are slow)."""
    reads = []

    def counted(read):
        def method(self, *args, **kwargs):
            reads.append(read.__name__)
            return read(self, *args, **kwargs)
        return method

    for name in ("item", "numpy"):
        monkeypatch.setattr(Tensor, name, counted(getattr(Tensor, name)))

    def host_reads(grad_accum):
        trainer = _setup(None, grad_accum=grad_accum)
        trainer.config.eval_interval = 1000  # training steps only
        reads.clear()
        trainer.fit(stop_at_step=3)
        return len(reads)

    assert host_reads(4) == host_reads(1)


def test_a_nan_loss_in_any_micro_batch_stops_that_step():
    trainer = _setup(None)  # grad_accum 2
    trainer.task.__class__ = _PoisonedTask
    _PoisonedTask.calls = 5  # the 2nd micro-batch of step 1 is NaN, the first is finite
    with pytest.raises(TrainingDiverged, match="the loss became nan at step 1"):
        trainer.fit()
    assert trainer.step == 0
