"""Checkpoints of a training run: everything needed to continue it bit for bit.

A checkpoint is a folder `out_dir/checkpoint/` holding

    model.safetensors       the model's weights (only the trainable ones when part of it is frozen)
    optimizer.safetensors   the optimizer's per-parameter arrays ("<param index>.<name>": exp_avg ...)
    trainer_state.json      the step, the optimizer's scalars and parameter groups, the learning-rate
                            schedule, the fp16 loss scale, the task's data position (its random
                            generators), early-stopping counters, the training config, and the model's
                            class and config (checked on load)
    complete.json           written last: {"step": N, "files": {name: size}}, the completeness marker

The dropout generator needs no entry: the Trainer re-seeds it from (seed, step) at every step.

Crash safety (`write_folder_atomically`): the new checkpoint is written whole into a staging
folder `.checkpoint.tmp-<pid>`, marker last, and synced; then the old `checkpoint/` is renamed to
`.checkpoint.old-<its step>`, the staging folder renamed to `checkpoint/`, and only then the old
one deleted. A kill at any instant leaves at least one complete folder, and `latest_checkpoint`
finds the newest complete one among `checkpoint/` and the `.checkpoint*` leftovers;
`recover_checkpoint` (on resume) moves it into place and deletes leftovers that never got their
marker. The metrics log `metrics.jsonl` is append-only;
`read_metrics_log` tolerates a torn last line (a kill mid-write) and `truncate_metrics_log`
drops the records after the checkpoint's step when a run resumes, so none is written twice.

    save_checkpoint(trainer)                      # what `Trainer.save_checkpoint()` does
    load_checkpoint(trainer, folder)              # what `Trainer.load_checkpoint(folder)` does
    latest_checkpoint(out_dir)                    # the newest complete checkpoint folder, or None
    recover_checkpoint(out_dir)                   # ... moved to checkpoint/, leftovers tidied
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import shutil
import sys
from dataclasses import asdict
from pathlib import Path

import numpy as np

from ..autograd import Tensor
from ..data import DataError, atomic_write_text
from ..models.hf import CheckpointError
from ..serialization import fsync_directory, load_file, save_file

MARKER = "complete.json"


# -- the atomic folder swap -----------------------------------------------------------------------
def write_folder_atomically(target, fill, step: int) -> Path:
    """Replace the folder `target` by one that `fill(folder)` writes, so that a crash at any
    point leaves a complete folder (the old or the new one) that `latest_checkpoint` finds.

    `fill` writes the files; the marker complete.json ({"step": step, "files": sizes}) is written
    after them, and everything is synced before the first rename.
    """
    target = Path(target)
    parent = target.parent
    parent.mkdir(parents=True, exist_ok=True)
    staging = parent / f".{target.name}.tmp-{os.getpid()}"
    if staging.exists():
        shutil.rmtree(staging)
    staging.mkdir()
    try:
        fill(staging)
        files = {f.name: f.stat().st_size for f in sorted(staging.iterdir())}
        atomic_write_text(staging / MARKER, json.dumps({"step": step, "files": files}) + "\n")
        fsync_directory(staging)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)  # never complete: nothing of value in it
        raise
    old = None
    if target.exists():
        old_step = complete_step(target)
        old = parent / f".{target.name}.old-{old_step if old_step is not None else 'incomplete'}"
        if old.exists():
            shutil.rmtree(old)
        os.replace(target, old)  # from here until the next rename, `old` is the complete copy
    os.replace(staging, target)
    fsync_directory(parent)
    # The new folder is the run's state now: the old one and any leftovers of earlier interruptions
    # (which a resume would have moved into place already) are superseded.
    for leftover in _leftovers(target):
        shutil.rmtree(leftover, ignore_errors=True)
    return target


def _leftovers(target: Path) -> list[Path]:
    """Staging and old copies beside `target` (`.checkpoint.tmp-*`, `.checkpoint.old-*`), and those
    of earlier minilm versions (`.checkpoint-old`, `.checkpoint-<pid>`)."""
    if not target.parent.is_dir():
        return []
    prefixes = (f".{target.name}.", f".{target.name}-")
    return sorted(p for p in target.parent.iterdir() if p.is_dir() and p.name.startswith(prefixes))


def complete_step(folder: Path) -> int | None:
    """The step of the complete checkpoint in `folder`, or None when it is incomplete (or absent).

    Complete: complete.json is there and every file it lists has its recorded size. Folders of
    earlier minilm versions have no marker; they wrote trainer_state.json last (atomically), so
    that file marks them complete, except in staging folders of this version, which must have
    the marker.
    """
    folder = Path(folder)
    try:
        marker = json.loads((folder / MARKER).read_text(encoding="utf-8"))
        if not isinstance(marker, dict) or not isinstance(marker.get("files"), dict):
            return None
        for name, size in marker["files"].items():
            if (folder / name).stat().st_size != size:
                return None
        step = marker.get("step")
        return step if isinstance(step, int) and not isinstance(step, bool) else None
    except FileNotFoundError:
        if ".tmp-" in folder.name or not (folder / "model.safetensors").exists():
            return None
        try:
            step = json.loads((folder / "trainer_state.json").read_text(encoding="utf-8")).get("step")
        except (OSError, ValueError, AttributeError):
            return None
        return step if isinstance(step, int) else None
    except (OSError, ValueError):
        return None


def latest_checkpoint(out_dir, name: str = "checkpoint") -> Path | None:
    """The newest complete checkpoint folder of the run in `out_dir` (`checkpoint/` or a leftover of
    an interrupted swap; on equal steps `checkpoint/` wins), or None when there is none. Only looks:
    a run may be writing its next checkpoint meanwhile (`recover_checkpoint` tidies up)."""
    target = Path(out_dir) / name
    best, best_step = None, None
    for folder in [target, *_leftovers(target)]:
        step = complete_step(folder)
        if step is not None and (best_step is None or step > best_step):
            best, best_step = folder, step
    return best


def recover_checkpoint(out_dir, name: str = "checkpoint") -> Path | None:
    """`latest_checkpoint`, and when the newest complete one is a leftover of an interrupted swap,
    move it to `checkpoint/` (the older `checkpoint/` aside first, so that a kill at any point
    still leaves both findable), then delete the leftovers it supersedes. Returns `checkpoint/`,
    or None when the run has no complete checkpoint. Leftovers that never got their marker (runs
    killed while writing them) are deleted."""
    target = Path(out_dir) / name
    for leftover in _leftovers(target):
        if complete_step(leftover) is None:
            shutil.rmtree(leftover, ignore_errors=True)
    newest = latest_checkpoint(out_dir, name)
    if newest is None:
        return None
    step = complete_step(newest)
    if newest != target:
        if target.exists():
            aside = target.parent / f".{target.name}.old-{complete_step(target)}"
            if aside.exists():
                shutil.rmtree(aside)
            os.replace(target, aside)
        os.replace(newest, target)
        fsync_directory(target.parent)
    for leftover in _leftovers(target):
        if (complete_step(leftover) or 0) <= step:
            shutil.rmtree(leftover, ignore_errors=True)
    return target


# -- the metrics log ------------------------------------------------------------------------------
def read_metrics_log(path) -> tuple[list[dict], str | None]:
    """The records of a metrics.jsonl file and a note when its last line was torn (a run killed,
    or a full disk, mid-write): that line is dropped. A bad line elsewhere is a DataError naming
    the file and line."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except FileNotFoundError:
        return [], None
    lines = text.split("\n")
    records, note = [], None
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
            if not isinstance(record, dict) or not isinstance(record.get("step"), int):
                raise ValueError("not a record with an integer 'step'")
        except ValueError as error:
            if number == len(lines):  # no newline after it: the last write was cut short
                note = f"{path}, line {number}: dropped a torn last record ({len(line)} characters)"
                continue
            raise DataError(f"{path}, line {number}: not a metrics record ({error})") from None
        records.append(record)
    return records, note


def truncate_metrics_log(path, step: int) -> tuple[list[dict], str | None]:
    """Keep the records of metrics.jsonl up to `step` (the step a run resumes from), rewriting the
    file atomically: the resumed run appends from there, so no step is logged twice."""
    path = Path(path)
    records, note = read_metrics_log(path)
    kept = [r for r in records if r["step"] <= step]
    if path.exists() and (kept != records or note is not None):
        atomic_write_text(path, "".join(json.dumps(r) + "\n" for r in kept))
    return kept, note


# -- save and load --------------------------------------------------------------------------------
def save_checkpoint(trainer) -> Path:
    """Write trainer.out_dir/checkpoint/ as a whole (see `write_folder_atomically`). Only rank 0
    writes: the ranks hold equal states."""
    target = trainer.out_dir / "checkpoint"
    if not trainer.comm.is_main:
        return target

    def fill(staging: Path) -> None:
        save_file({k: v.numpy() for k, v in checkpoint_weights(trainer.model).items()}, staging / "model.safetensors",
                  checksum=True)  # checked again on load: flipped bytes are an error
        optimizer_state = trainer.optimizer.state_dict()
        arrays, scalars = split_optimizer_state(optimizer_state["state"])
        save_file(arrays, staging / "optimizer.safetensors", checksum=True)
        state = {
            "step": trainer.step,
            "model": type(trainer.model).__name__,
            "model_config": _config_dict(trainer.model),
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

    return write_folder_atomically(target, fill, trainer.step)


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


def _config_dict(model) -> dict | None:
    config = getattr(model, "config", None)
    if config is None or not dataclasses.is_dataclass(config):
        return None
    return json.loads(json.dumps(asdict(config), default=str))


def load_checkpoint(trainer, folder) -> None:
    """Restore into `trainer` everything `save_checkpoint` wrote, so training continues exactly.
    A checkpoint of another model class or config is a CheckpointError naming the difference."""
    folder = Path(folder)
    if folder.name == "checkpoint" and trainer.comm.is_main:
        # A kill between the two renames of a swap leaves the newest complete copy beside it.
        folder = recover_checkpoint(folder.parent) or folder
    # Rank 0 reads the files and sends them: the other ranks need no shared filesystem.
    state, weights, arrays, history = trainer.comm.run_on_main(lambda: read_checkpoint(folder, trainer.out_dir))
    _check_same_model(trainer.model, state, folder)
    try:
        if state.get("trainable_only"):  # the frozen weights are the base model's, loaded with it
            unknown = sorted(set(weights) - set(checkpoint_weights(trainer.model)))
            if unknown:
                raise CheckpointError(f"{folder}: checkpoint weights the model does not train: "
                                      f"{', '.join(unknown[:4])}")
            trainer.model.load_state_dict(weights, strict=False)
        else:
            trainer.model.load_state_dict(weights)
    except RuntimeError as error:
        raise CheckpointError(f"{folder / 'model.safetensors'} does not fit the model: {error}") from None
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
        trainer.history = history


def resume(trainer) -> Path | None:
    """What `Trainer.resume()` does."""
    folder = trainer.comm.run_on_main(lambda: recover_checkpoint(trainer.out_dir))
    if folder is not None:
        load_checkpoint(trainer, folder)
        return folder
    if trainer.comm.is_main:
        trainer.history, note = truncate_metrics_log(trainer.out_dir / "metrics.jsonl", 0)
        if note:
            print(f"note: {note}", file=sys.stderr)
    return None


def _check_same_model(model, state: dict, folder: Path) -> None:
    path = folder / "trainer_state.json"
    kind = state.get("model")
    if kind is not None and kind != type(model).__name__:
        raise CheckpointError(f"{path}: a checkpoint of a {kind}, not of a {type(model).__name__}")
    saved, ours = state.get("model_config"), _config_dict(model)
    if saved is None or ours is None:
        return
    differences = [f"{key} {ours.get(key)!r} (the checkpoint has {saved.get(key)!r})"
                   for key in sorted(set(saved) | set(ours))
                   if key not in ("dropout", "hidden_dropout_prob", "attention_probs_dropout_prob")
                   and saved.get(key) != ours.get(key)]
    if differences:
        raise CheckpointError(f"{path}: the model was configured differently from the checkpoint: "
                              + ", ".join(differences))


def read_checkpoint(folder: Path, out_dir: Path | None) -> tuple:
    """(trainer state, model weights, optimizer arrays, metrics history or None) from disk; the
    history is out_dir/metrics.jsonl up to the checkpoint's step (the file is truncated there, so
    the resumed run does not log a step twice)."""
    path = folder / "trainer_state.json"
    try:
        with open(path, encoding="utf-8") as f:
            state = json.load(f)
    except FileNotFoundError:
        raise CheckpointError(f"{folder}: no trainer_state.json; not a minilm checkpoint folder") from None
    except ValueError as error:
        raise CheckpointError(f"{path}: not valid JSON ({error})") from None
    if not isinstance(state, dict) or not isinstance(state.get("step"), int):
        raise CheckpointError(f"{path}: no integer 'step'; not a minilm trainer state")
    weights = load_file(folder / "model.safetensors")
    arrays = load_file(folder / "optimizer.safetensors")
    history = None
    if out_dir is not None:
        history, note = truncate_metrics_log(out_dir / "metrics.jsonl", state["step"])
        if note:
            print(f"note: {note}", file=sys.stderr)
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
