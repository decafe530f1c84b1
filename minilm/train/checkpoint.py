"""Checkpoints of a training run: everything needed to continue it bit for bit.

A checkpoint is a folder `out_dir/checkpoint/` holding

    model.safetensors       the model's weights (only the trainable ones when part of it is frozen)
    optimizer.safetensors   the optimizer's per-parameter arrays ("<param index>.<name>": exp_avg ...)
    trainer_state.json      the step, the optimizer's scalars and parameter groups, the learning-rate
                            schedule, the fp16 loss scale, the task's data position (its random
                            generators), early-stopping counters and the training config

The dropout generator needs no entry: the Trainer re-seeds it from (seed, step) at every step.
The folder is written whole (a new folder swapped in by renames), so an interrupted write
leaves the previous checkpoint in place.

    save_checkpoint(trainer)          # what `Trainer.save_checkpoint()` does
    load_checkpoint(trainer, folder)  # what `Trainer.load_checkpoint(folder)` does
"""

from __future__ import annotations

import json
import math
import os
import shutil
from dataclasses import asdict
from pathlib import Path

import numpy as np

from ..autograd import Tensor
from ..data import atomic_write_text
from ..serialization import load_file, save_file


def save_checkpoint(trainer) -> Path:
    """Write trainer.out_dir/checkpoint/ as a whole: a new folder first, then swapped in by
    renames. Only rank 0 writes: the ranks hold equal states."""
    target = trainer.out_dir / "checkpoint"
    if not trainer.comm.is_main:
        return target
    staging = trainer.out_dir / f".checkpoint-{os.getpid()}"
    if staging.exists():
        shutil.rmtree(staging)
    staging.mkdir(parents=True)
    save_file({k: v.numpy() for k, v in checkpoint_weights(trainer.model).items()}, staging / "model.safetensors")
    optimizer_state = trainer.optimizer.state_dict()
    arrays, scalars = split_optimizer_state(optimizer_state["state"])
    save_file(arrays, staging / "optimizer.safetensors")
    state = {
        "step": trainer.step,
        "optimizer": {"param_groups": optimizer_state["param_groups"], "scalars": scalars},
        "scheduler": trainer.scheduler.state_dict(),
        "scaler": trainer.scaler.state_dict(),
        "task": trainer.task.state_dict(),
        "best_metric": trainer.best_metric if math.isfinite(trainer.best_metric) else None,
        "evals_without_improvement": trainer.evals_without_improvement,
        "config": asdict(trainer.config),
        "trainable_only": _has_frozen_weights(trainer.model),
    }
    atomic_write_text(staging / "trainer_state.json", json.dumps(state, indent=1))
    old = trainer.out_dir / ".checkpoint-old"
    if target.exists():
        if old.exists():
            shutil.rmtree(old)
        os.replace(target, old)
    os.replace(staging, target)
    if old.exists():
        shutil.rmtree(old)
    return target


def load_checkpoint(trainer, folder) -> None:
    """Restore into `trainer` everything `save_checkpoint` wrote, so training continues exactly."""
    folder = Path(folder)
    # Rank 0 reads the files and sends them: the other ranks need no shared filesystem.
    state, weights, arrays, history = trainer.comm.run_on_main(lambda: read_checkpoint(folder, trainer.out_dir))
    if state.get("trainable_only"):  # the frozen weights are the base model's, loaded with it
        unknown = sorted(set(weights) - set(checkpoint_weights(trainer.model)))
        if unknown:
            raise ValueError(f"{folder}: checkpoint weights the model does not train: {', '.join(unknown[:4])}")
        trainer.model.load_state_dict(weights, strict=False)
    else:
        trainer.model.load_state_dict(weights)
    trainer.optimizer.load_state_dict({"state": join_optimizer_state(arrays, state["optimizer"]["scalars"]),
                                       "param_groups": state["optimizer"]["param_groups"]})
    trainer.scheduler.load_state_dict(state["scheduler"])
    if trainer.mixed_precision:
        if not state.get("scaler"):
            raise ValueError(f"{folder}: the checkpoint was written by a float32 run; it has no loss-scaler "
                             "state to continue with precision 'fp16'")
        trainer.scaler.load_state_dict(state["scaler"])
    trainer.task.load_state_dict(state["task"])
    trainer.step = state["step"]
    trainer.best_metric = state["best_metric"] if state["best_metric"] is not None else math.inf
    trainer.evals_without_improvement = state["evals_without_improvement"]
    if history is not None:
        trainer.history = [r for r in history if r["step"] <= trainer.step]


def _has_frozen_weights(model) -> bool:
    return any(not p.requires_grad for p in model.parameters())


def checkpoint_weights(model) -> dict:
    """The weights a checkpoint holds: all of them, or only the trainable ones when part of the
    model is frozen (LoRA: the adapters, not a copy of the base model at every checkpoint)."""
    state = model.state_dict()
    if not _has_frozen_weights(model):
        return state
    trainable = {name for name, p in model.named_parameters(remove_duplicate=False) if p.requires_grad}
    return {name: value for name, value in state.items() if name in trainable}


def read_checkpoint(folder: Path, out_dir: Path | None) -> tuple:
    """(trainer state, model weights, optimizer arrays, metrics history or None) from disk;
    the history is out_dir/metrics.jsonl, the log the checkpointed run kept beside it."""
    try:
        with open(folder / "trainer_state.json", encoding="utf-8") as f:
            state = json.load(f)
    except FileNotFoundError:
        raise FileNotFoundError(f"{folder}: no trainer_state.json; not a minilm checkpoint folder") from None
    weights = load_file(folder / "model.safetensors")
    arrays = load_file(folder / "optimizer.safetensors")
    history = None
    if out_dir is not None and (out_dir / "metrics.jsonl").exists():
        with open(out_dir / "metrics.jsonl", encoding="utf-8") as f:
            history = [json.loads(line) for line in f]
    return state, weights, arrays, history


def split_optimizer_state(state: dict) -> tuple[dict, dict]:
    """An optimizer's per-parameter state {index: {name: value}} as flat {"index.name": value}
    dicts: the arrays (for safetensors) and the plain numbers (for JSON)."""
    arrays, scalars = {}, {}
    for index, entries in state.items():
        for name, value in entries.items():
            if isinstance(value, Tensor):
                arrays[f"{index}.{name}"] = value.numpy()
            else:
                scalars[f"{index}.{name}"] = value
    return arrays, scalars


def join_optimizer_state(arrays: dict, scalars: dict) -> dict:
    """The inverse of `split_optimizer_state`: {index: {name: Tensor or number}}."""
    state: dict = {}
    for key, value in list(arrays.items()) + list(scalars.items()):
        index, name = key.split(".", 1)
        state.setdefault(int(index), {})[name] = Tensor(value) if isinstance(value, np.ndarray) else value
    return state
