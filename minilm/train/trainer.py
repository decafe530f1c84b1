"""The training loop: one `Trainer` for causal LM, masked LM and sequence classification.

A *task* (see `minilm.train.tasks`) knows its data and its loss. The Trainer does the rest,
the same for every task: gradient accumulation, AdamW with no-decay groups (over one flat
buffer), warmup + cosine/linear decay, gradient clipping, mixed precision (precision="fp16":
autocast and dynamic loss scaling, see `minilm.amp`), evaluation (in float32), early
stopping, JSON-lines metrics, a loss plot, and checkpoints that resume bit for bit (see
`minilm.train.checkpoint`).

Under `mpiexec -n N` the Trainer trains data-parallel (see `minilm.distributed`): every
rank draws the same global batch and trains on its slice, gradients are averaged with one
allreduce, and only rank 0 writes outputs. The data position is that of the global batch,
so a checkpoint resumes with any number of ranks.
"""

from __future__ import annotations

import json
import math
import sys
import time
from dataclasses import dataclass, fields
from pathlib import Path

import numpy as np

from .. import amp, distributed, nn, optim
from .. import backend as _backend
from ..autograd import Tensor, no_grad
from ..viz.plots import image_path, save_line_plot
from . import checkpoint


class TrainingDiverged(RuntimeError):
    """The loss became NaN or infinite; the last good checkpoint is left as it was."""


@dataclass
class TrainingConfig:
    max_steps: int = 1000
    batch_size: int = 16
    grad_accum: int = 1  # micro-batches per optimizer step
    lr: float = 3e-3
    min_lr_ratio: float = 0.1  # the schedule decays to lr * min_lr_ratio
    warmup_steps: int = 50
    schedule: str = "cosine"  # "cosine" | "linear" | "constant"
    weight_decay: float = 0.1
    betas: tuple = (0.9, 0.95)
    grad_clip: float = 1.0  # max global gradient norm (0 = off)
    eval_interval: int = 100
    eval_batches: int = 20
    early_stopping_patience: int = 0  # evaluations without improvement before stopping (0 = off)
    checkpoint_interval: int = 500
    log_interval: int = 10
    seed: int = 0
    precision: str = "fp32"  # "fp32" | "fp16" (autocast + dynamic loss scaling; see minilm.amp)

    def __post_init__(self):
        self.betas = tuple(self.betas)
        if self.precision not in ("fp32", "fp16"):
            raise ValueError(f"precision must be 'fp32' or 'fp16', got {self.precision!r}")
        if self.schedule not in ("cosine", "linear", "constant"):
            raise ValueError(f"schedule must be 'cosine', 'linear' or 'constant', got {self.schedule!r}")
        for name in ("max_steps", "batch_size", "grad_accum", "eval_interval", "checkpoint_interval", "log_interval"):
            if getattr(self, name) < 1:
                raise ValueError(f"TrainingConfig.{name} must be >= 1, got {getattr(self, name)}")

    @classmethod
    def from_dict(cls, values: dict) -> "TrainingConfig":
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in values.items() if k in known})


# ---------------------------------------------------------------------------------------
# The Trainer
# ---------------------------------------------------------------------------------------
class Trainer:
    """Train `model` on `task` as `config` says, writing into `out_dir` (if given).

    comm: the data-parallel world (default `distributed.init()`: all ranks under mpiexec,
    else a world of one, where the Trainer behaves as it always did).
    """

    def __init__(self, model: nn.Module, task, config: TrainingConfig, out_dir=None, quiet: bool = False,
                 comm: distributed.Communicator | None = None):
        self.model, self.task, self.config = model, task, config
        self.out_dir = Path(out_dir) if out_dir is not None else None
        self.comm = comm if comm is not None else distributed.init()  # a world of one without MPI
        self.quiet = quiet or not self.comm.is_main
        c = config
        params = [p for p in model.parameters() if p.requires_grad]
        # One flat buffer for all parameters (one fused update) when they share a dtype and
        # device, as models do: bit for bit the per-parameter update, in fewer, larger passes.
        flat = len({(p.dtype, p.device.name) for p in params}) == 1
        self.optimizer = optim.AdamW(optim.param_groups_no_decay(model, c.weight_decay), lr=c.lr, betas=c.betas,
                                     flat=flat)
        self.mixed_precision = c.precision == "fp16"
        self.scaler = amp.GradScaler(enabled=self.mixed_precision)
        if self.mixed_precision and params[0].device.name == "cpu":
            self._say("note: precision fp16 on the CPU is correct but slow (NumPy emulates float16 and has no "
                      "float16 BLAS: about 80x slower than fp32 on a small GPT); it is meant for --backend cupy")
        self.scheduler = optim.lr_scheduler.LambdaLR(self.optimizer, self._lr_factor)
        self.step = 0
        self.history: list[dict] = []  # one record per logged step / evaluation
        self.best_metric = math.inf
        self.evals_without_improvement = 0
        self._allreduce = None
        if self.comm.size > 1:
            self.comm.check_batch_size(c.batch_size)
            # Every rank starts from rank 0's weights and data order, so that all draw the same
            # global batches and stay equal after every (identical) optimizer step.
            self.comm.broadcast_parameters(model)
            task.load_state_dict(self.comm.broadcast_object(task.state_dict()))
            self._allreduce = distributed.GradientAllreduce(model.parameters(), self.comm)
            self._separate_dropout_streams()

    def _separate_dropout_streams(self) -> None:
        """Give ranks other than 0 their own random stream (dropout masks): with rank 0's
        stream they would draw the same masks for their slices. Rank 0 keeps its stream."""
        if self.comm.rank > 0:
            seed = np.random.SeedSequence([self.config.seed, self.comm.rank, self.step]).generate_state(1)[0]
            _backend.manual_seed(int(seed))

    def _lr_factor(self, step: int) -> float:
        c = self.config
        if c.schedule == "constant":
            return optim.lr_scheduler.warmup_constant(step, c.warmup_steps)
        schedule = optim.lr_scheduler.warmup_cosine if c.schedule == "cosine" else optim.lr_scheduler.warmup_linear
        return schedule(step, c.warmup_steps, c.max_steps, c.min_lr_ratio)

    # -- the loop ------------------------------------------------------------------------------
    def fit(self, stop_at_step: int | None = None) -> list[dict]:
        """Train until max_steps (or `stop_at_step`, to simulate an interruption); returns the history."""
        c = self.config
        last = min(c.max_steps, stop_at_step) if stop_at_step is not None else c.max_steps
        self.model.train()
        started, tokens_seen = time.perf_counter(), 0
        with self.comm.abort_on_error():  # one rank's failure must not leave the others waiting
            self._fit_loop(last, started, tokens_seen)
        if not self.quiet and sys.stderr.isatty():
            sys.stderr.write("\n")
        if self.out_dir is not None and self.comm.is_main:
            self.save_loss_plot()
        return self.history

    def _fit_loop(self, last: int, started: float, tokens_seen: int) -> None:
        c = self.config
        while self.step < last:
            loss_value, tokens = self._train_step()
            tokens_seen += tokens
            self.step += 1
            record = {"step": self.step, "loss": loss_value, "lr": self.scheduler.get_last_lr()[0]}
            if self.mixed_precision:
                record["loss_scale"] = self.scaler.get_scale()
                record["skipped_steps"] = self.scaler.skipped_steps
            elapsed = time.perf_counter() - started
            record["tokens_per_s"] = tokens_seen / elapsed if elapsed > 0 else 0.0
            if self.step % c.log_interval == 0 or self.step == last:
                self._log(record)
            self._progress(record, last)
            stop = False
            if self.step % c.eval_interval == 0 or self.step == c.max_steps:
                stop = self._evaluate()
            if self.out_dir is not None and (self.step % c.checkpoint_interval == 0 or self.step == last or stop):
                self.save_checkpoint()
            if stop:
                self._say(f"early stopping at step {self.step}: {c.early_stopping_patience} evaluations "
                          "without improvement")
                break

    def _train_step(self) -> tuple[float, int]:
        c = self.config
        # Dropout draws from a generator re-seeded from (seed, step) at every step: a resumed
        # run then draws exactly what an uninterrupted one does, on any device (CuPy's
        # generator state, unlike NumPy's, cannot be saved in a checkpoint).
        _backend.manual_seed((c.seed * 1_000_003 + self.step) % 2**63)
        loss_sum, tokens = None, 0  # the step's mean micro-batch loss, summed on the device in float64
        for _ in range(c.grad_accum):
            batch = self.comm.shard(self.task.next_batch())  # every rank draws the global batch
            with amp.autocast(enabled=self.mixed_precision):
                loss = self.task.loss(self.model, batch)
            self.scaler.scale(loss * (1.0 / c.grad_accum)).backward()
            # Summed where it was computed: reading each micro-batch's loss back to the host
            # would make the CPU wait for the GPU once per micro-batch.
            part = loss.data.astype(np.float64) / c.grad_accum
            loss_sum = part if loss_sum is None else loss_sum + part
            first = next(iter(batch.values()))
            tokens += int(np.prod(first.shape)) * self.comm.size
        total = Tensor(loss_sum).item()  # the step's one read of the loss
        if self._allreduce is None:
            self._check_finite(total)  # before the optimizer step: a NaN step changes no weight
        else:
            # The mean over ranks of per-rank mean losses and gradients: the full-batch mean
            # when every rank counts the same number of targets (causal LM windows,
            # classification). A NaN on any rank makes the mean NaN, so all ranks stop together.
            total = self._allreduce(total)
            self._check_finite(total)
        # fp16: true gradients again before clipping; a step whose gradients overflowed is
        # skipped and the loss scale backs off (ranks agree: they hold the same averages).
        self.scaler.unscale_(self.optimizer)
        if c.grad_clip > 0:
            nn.utils.clip_grad_norm_(self.model.parameters(), c.grad_clip)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.scheduler.step()
        self.optimizer.zero_grad()
        return total, tokens

    def _check_finite(self, value: float) -> None:
        if not math.isfinite(value):
            error = TrainingDiverged(
                f"the loss became {value} at step {self.step + 1}; training stopped. The last good "
                f"checkpoint{' in ' + str(self.out_dir / 'checkpoint') if self.out_dir else ''} is intact. "
                "Try a lower learning rate or stronger gradient clipping."
            )
            raise distributed.raised_on_every_rank(error) if self._allreduce is not None else error

    def evaluate(self) -> dict:
        """The task's validation metrics (computed on rank 0 and sent to all ranks)."""
        return self.comm.run_on_main(self._evaluate_here)

    def _evaluate_here(self) -> dict:
        self.model.eval()
        try:
            with no_grad():
                return self.task.evaluate(self.model, self.config.eval_batches)
        finally:
            self.model.train()

    def _evaluate(self) -> bool:
        """Evaluate, log, and tell whether early stopping says to stop."""
        metrics = self.evaluate()
        self._log({"step": self.step, **metrics})
        self._say("step {:>6}  ".format(self.step) + "  ".join(f"{k} {v:.4f}" for k, v in metrics.items()))
        value = metrics[self.task.metric]
        if value < self.best_metric - 1e-12:
            self.best_metric, self.evals_without_improvement = value, 0
        else:
            self.evals_without_improvement += 1
        patience = self.config.early_stopping_patience
        return patience > 0 and self.evals_without_improvement >= patience

    # -- output --------------------------------------------------------------------------------
    def _log(self, record: dict) -> None:
        self.history.append(record)
        if self.out_dir is not None and self.comm.is_main:
            self.out_dir.mkdir(parents=True, exist_ok=True)
            with open(self.out_dir / "metrics.jsonl", "a", encoding="utf-8") as f:
                f.write(json.dumps(record) + "\n")

    def _say(self, text: str) -> None:
        if not self.quiet:
            if sys.stderr.isatty():
                sys.stderr.write("\r\033[K")
            print(text, file=sys.stderr, flush=True)

    def _progress(self, record: dict, last: int) -> None:
        if self.quiet or not sys.stderr.isatty():
            return
        done = self.step / last
        bar = "#" * int(30 * done) + "-" * (30 - int(30 * done))
        sys.stderr.write(f"\r[{bar}] step {self.step}/{last}  loss {record['loss']:.4f}  "
                         f"lr {record['lr']:.2e}  {record['tokens_per_s']:.0f} tok/s")
        sys.stderr.flush()

    def save_loss_plot(self) -> Path | None:
        """Draw the training and validation loss over the steps so far into out_dir/loss.png
        (loss.svg without matplotlib); None when there is nothing to draw yet."""
        series = {}
        for name, key in (("train loss", "loss"), ("validation loss", "val_loss")):
            points = [(r["step"], r[key]) for r in self.history if key in r]
            if points:
                series[name] = tuple(zip(*points))
        if not series:
            return None
        return save_line_plot(series, image_path(self.out_dir / "loss"), title="loss", xlabel="step",
                              ylabel="loss (nats/token)")

    # -- checkpoints ---------------------------------------------------------------------------
    def save_checkpoint(self) -> Path:
        """Write out_dir/checkpoint/ (see `minilm.train.checkpoint`); returns its path."""
        return checkpoint.save_checkpoint(self)

    def load_checkpoint(self, folder) -> None:
        """Restore everything `save_checkpoint` wrote, so training continues exactly."""
        checkpoint.load_checkpoint(self, folder)
        if self.comm.size > 1:
            self._separate_dropout_streams()
