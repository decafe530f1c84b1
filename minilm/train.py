"""The training loop: one `Trainer` for causal LM, masked LM and sequence classification.

A *task* knows its data and its loss: it hands out batches, computes the loss of a batch,
and evaluates on validation data. The Trainer does the rest, the same for every task:
gradient accumulation, AdamW with no-decay groups (over one flat buffer), warmup +
cosine/linear decay, gradient clipping, mixed precision (precision="fp16": autocast and
dynamic loss scaling, see `minilm.amp`), evaluation (in float32), early stopping, JSON-lines
metrics, a loss plot, and checkpoints that resume bit for bit (model, optimizer, loss
scale, schedule, random generators and data position).

Under `mpiexec -n N` the Trainer trains data-parallel (see `minilm.distributed`): every
rank draws the same global batch and trains on its slice, gradients are averaged with one
allreduce, and only rank 0 writes outputs. The data position is that of the global batch,
so a checkpoint resumes with any number of ranks.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import sys
import time
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import numpy as np

from . import backend as _backend
from . import amp, distributed, nn, optim
from .autograd import Tensor, no_grad
from .data import MaskedLMCollator, RandomWindowSampler, atomic_write_text, sequential_windows
from .serialization import load_file, save_file


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
# Tasks
# ---------------------------------------------------------------------------------------
class CausalLMTask:
    """Next-token prediction on random windows of a token stream; evaluation on fixed windows."""

    metric = "val_loss"

    def __init__(self, train_tokens, val_tokens, block_size: int, batch_size: int, seed: int = 0):
        self.sampler = RandomWindowSampler(train_tokens, block_size, batch_size, seed)
        self.val_tokens, self.block_size, self.batch_size = val_tokens, block_size, batch_size
        if len(val_tokens) < block_size + 1:
            raise ValueError(f"validation data has {len(val_tokens)} tokens, fewer than block_size + 1 = {block_size + 1}")

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
    """Sequence classification from labeled texts (a WordPieceTokenizer encodes them)."""

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
        return model(batch["input_ids"], batch["attention_mask"], batch["token_type_ids"], labels=batch["labels"]).loss

    def evaluate(self, model, max_batches: int) -> dict:
        total, correct, count = 0.0, 0, 0
        for start in range(0, len(self.val), self.batch_size):
            batch = self._encode(self.val.texts[start : start + self.batch_size],
                                 self.val.labels[start : start + self.batch_size])
            logits, loss = model(batch["input_ids"], batch["attention_mask"], batch["token_type_ids"],
                                 labels=batch["labels"])
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
            return 1.0 if step >= c.warmup_steps or c.warmup_steps == 0 else (step + 1) / c.warmup_steps
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
            write_loss_plot(self.history, self.out_dir / "loss")
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
                self._say(f"early stopping at step {self.step}: {c.early_stopping_patience} evaluations without improvement")
                break

    def _train_step(self) -> tuple[float, int]:
        c = self.config
        # Dropout draws from a generator re-seeded from (seed, step) at every step: a resumed
        # run then draws exactly what an uninterrupted one does, on any device (CuPy's
        # generator state, unlike NumPy's, cannot be saved in a checkpoint).
        _backend.manual_seed((c.seed * 1_000_003 + self.step) % 2**63)
        total, tokens = 0.0, 0
        for _ in range(c.grad_accum):
            batch = self.comm.shard(self.task.next_batch())  # every rank draws the global batch
            with amp.autocast(enabled=self.mixed_precision):
                loss = self.task.loss(self.model, batch)
            value = float(loss.item())
            if self._allreduce is None:
                self._check_finite(value)
            self.scaler.scale(loss * (1.0 / c.grad_accum)).backward()
            total += value / c.grad_accum
            first = next(iter(batch.values()))
            tokens += int(np.prod(first.shape)) * self.comm.size
        if self._allreduce is not None:
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

    # -- checkpoints ---------------------------------------------------------------------------
    def save_checkpoint(self) -> Path:
        """Write out_dir/checkpoint/ as a whole: a new folder first, then swapped in by renames.
        Only rank 0 writes: the ranks hold equal states."""
        target = self.out_dir / "checkpoint"
        if not self.comm.is_main:
            return target
        staging = self.out_dir / f".checkpoint-{os.getpid()}"
        if staging.exists():
            shutil.rmtree(staging)
        staging.mkdir(parents=True)
        save_file({k: v.numpy() for k, v in self.model.state_dict().items()}, staging / "model.safetensors")
        optimizer_state = self.optimizer.state_dict()
        arrays, scalars = {}, {}
        for index, entries in optimizer_state["state"].items():
            for name, value in entries.items():
                if isinstance(value, Tensor):
                    arrays[f"{index}.{name}"] = value.numpy()
                else:
                    scalars[f"{index}.{name}"] = value
        save_file(arrays, staging / "optimizer.safetensors")
        state = {
            "step": self.step,
            "optimizer": {"param_groups": optimizer_state["param_groups"], "scalars": scalars},
            "scheduler": self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict(),
            "task": self.task.state_dict(),
            "best_metric": self.best_metric if math.isfinite(self.best_metric) else None,
            "evals_without_improvement": self.evals_without_improvement,
            "config": asdict(self.config),
        }
        atomic_write_text(staging / "trainer_state.json", json.dumps(state, indent=1))
        old = self.out_dir / ".checkpoint-old"
        if target.exists():
            if old.exists():
                shutil.rmtree(old)
            os.replace(target, old)
        os.replace(staging, target)
        if old.exists():
            shutil.rmtree(old)
        return target

    def load_checkpoint(self, folder) -> None:
        """Restore everything `save_checkpoint` wrote, so training continues exactly."""
        # Rank 0 reads the files and sends them: the other ranks need no shared filesystem.
        state, weights, arrays, history = self.comm.run_on_main(lambda: self._read_checkpoint(Path(folder)))
        self.model.load_state_dict(weights)
        optimizer_state: dict = {"state": {}, "param_groups": state["optimizer"]["param_groups"]}
        for key, value in list(arrays.items()) + list(state["optimizer"]["scalars"].items()):
            index, name = key.split(".", 1)
            optimizer_state["state"].setdefault(int(index), {})[name] = Tensor(value) if isinstance(value, np.ndarray) else value
        self.optimizer.load_state_dict(optimizer_state)
        self.scheduler.load_state_dict(state["scheduler"])
        if self.mixed_precision:
            if not state.get("scaler"):
                raise ValueError(f"{folder}: the checkpoint was written by a float32 run; it has no loss-scaler "
                                 "state to continue with precision 'fp16'")
            self.scaler.load_state_dict(state["scaler"])
        self.task.load_state_dict(state["task"])
        self.step = state["step"]
        self.best_metric = state["best_metric"] if state["best_metric"] is not None else math.inf
        self.evals_without_improvement = state["evals_without_improvement"]
        if history is not None:
            self.history = [r for r in history if r["step"] <= self.step]
        if self.comm.size > 1:
            self._separate_dropout_streams()

    def _read_checkpoint(self, folder: Path) -> tuple:
        """(trainer state, model weights, optimizer arrays, metrics history or None) from disk."""
        try:
            with open(folder / "trainer_state.json", encoding="utf-8") as f:
                state = json.load(f)
        except FileNotFoundError:
            raise FileNotFoundError(f"{folder}: no trainer_state.json; not a minilm checkpoint folder") from None
        weights = load_file(folder / "model.safetensors")
        arrays = load_file(folder / "optimizer.safetensors")
        history = None
        if self.out_dir is not None and (self.out_dir / "metrics.jsonl").exists():
            with open(self.out_dir / "metrics.jsonl", encoding="utf-8") as f:
                history = [json.loads(line) for line in f]
        return state, weights, arrays, history


def write_loss_plot(history: list[dict], stem: Path) -> Path:
    """The training (and validation) loss over steps: PNG with matplotlib when installed, else SVG."""
    train = [(r["step"], r["loss"]) for r in history if "loss" in r]
    val = [(r["step"], r["val_loss"]) for r in history if "val_loss" in r]
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return _write_svg_plot(train, val, Path(str(stem) + ".svg"))
    figure, axes = plt.subplots(figsize=(7, 4))
    if train:
        axes.plot(*zip(*train), label="train loss", linewidth=1)
    if val:
        axes.plot(*zip(*val), "o-", label="validation loss")
    axes.set_xlabel("step")
    axes.set_ylabel("loss (nats/token)")
    axes.legend()
    axes.grid(alpha=0.3)
    path = Path(str(stem) + ".png")
    temporary = path.with_name("." + path.name + ".tmp.png")
    figure.savefig(temporary, dpi=100, bbox_inches="tight")
    plt.close(figure)
    os.replace(temporary, path)
    return path


def _write_svg_plot(train, val, path: Path) -> Path:
    width, height, margin = 640, 360, 40
    points = train + val
    if not points:
        atomic_write_text(path, f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}"/>\n')
        return path
    steps = [s for s, _ in points]
    losses = [v for _, v in points]
    x0, x1 = min(steps), max(max(steps), min(steps) + 1)
    y0, y1 = min(losses), max(max(losses), min(losses) + 1e-9)

    def xy(step, loss):
        x = margin + (step - x0) / (x1 - x0) * (width - 2 * margin)
        y = height - margin - (loss - y0) / (y1 - y0) * (height - 2 * margin)
        return f"{x:.1f},{y:.1f}"

    def line(series, color):
        return f'<polyline fill="none" stroke="{color}" stroke-width="1.5" points="{" ".join(xy(*p) for p in series)}"/>'

    svg = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}">',
           f'<rect width="{width}" height="{height}" fill="white"/>',
           f'<text x="{margin}" y="20" font-size="12">loss: {y0:.3f} .. {y1:.3f} over steps {x0} .. {x1} '
           f'(blue: train, orange: validation)</text>']
    if train:
        svg.append(line(train, "#1f77b4"))
    if val:
        svg.append(line(val, "#ff7f0e"))
    svg.append("</svg>\n")
    atomic_write_text(path, "\n".join(svg))
    return path
