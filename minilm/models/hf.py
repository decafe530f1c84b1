"""Reading and writing Hugging Face checkpoint folders: config.json + model.safetensors.

Each model describes its weights as a list of `WeightMap`s (our name, their name, whether
their tensor is stored transposed); these helpers do the file work and the checking, so a
missing tensor or a wrong shape is reported by name with both shapes.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..autograd import no_grad
from ..data import atomic_write_text
from ..serialization import load_file, save_file


class CheckpointError(ValueError):
    """A checkpoint folder that does not fit the model (names the file and the tensor)."""


@dataclass(frozen=True)
class WeightMap:
    ours: str  # name in model.state_dict()
    theirs: str | tuple  # name in the checkpoint; several names = stacked along axis 0
    transposed: bool = False  # GPT-2's Conv1D stores [in, out]; our Linear holds [out, in]
    rows: tuple | None = None  # rows of each stacked part when they differ (Llama's q, k, v with fewer kv heads)

    @property
    def parts(self) -> tuple:
        return self.theirs if isinstance(self.theirs, tuple) else (self.theirs,)

    def prefixed(self, ours: str = "", theirs: str = "") -> "WeightMap":
        """The same entry with prefixes put before our name and each of theirs."""
        names = tuple(theirs + part for part in self.parts)
        return WeightMap(ours + self.ours, names if isinstance(self.theirs, tuple) else names[0], self.transposed,
                         self.rows)

    def part_rows(self, total: int) -> list[int]:
        """The number of rows each part contributes to our tensor of `total` rows."""
        return list(self.rows) if self.rows is not None else [total // len(self.parts)] * len(self.parts)


def read_config(folder) -> dict:
    path = Path(folder) / "config.json"
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except FileNotFoundError:
        raise CheckpointError(f"{path}: no config.json in the checkpoint folder") from None
    except json.JSONDecodeError as error:
        raise CheckpointError(f"{path}, line {error.lineno}: invalid JSON ({error.msg})") from None


def write_config(folder, config: dict) -> None:
    atomic_write_text(Path(folder) / "config.json", json.dumps(config, indent=2, sort_keys=True) + "\n")


def read_weights(folder) -> tuple[dict, str]:
    """All tensors of model.safetensors (or of the shards a model.safetensors.index.json lists)."""
    folder = Path(folder)
    single, index = folder / "model.safetensors", folder / "model.safetensors.index.json"
    if single.exists():
        return load_file(single), str(single)
    if index.exists():
        with open(index, encoding="utf-8") as f:
            shards = sorted(set(json.load(f)["weight_map"].values()))
        tensors = {}
        for shard in shards:
            path = folder / shard
            if path.resolve().parent != folder.resolve():
                raise CheckpointError(f"{index}: shard {shard!r} lies outside the checkpoint folder")
            tensors.update(load_file(path))
        return tensors, str(index)
    raise CheckpointError(f"{folder}: no model.safetensors (minilm reads safetensors weights only, never pickles)")


def load_mapped(model, folder, mapping: list[WeightMap], prefixes=("",), tensors=None) -> None:
    """Copy the checkpoint's tensors into `model` following `mapping`; strict about names and shapes.

    Each name is looked up with each of `prefixes` in front, in order: Hugging Face saves
    `bert.encoder...` from BertForMaskedLM but `encoder...` from BertModel.
    tensors: a mapping {name: host array} to read instead of the folder's safetensors (e.g.
    a GGUF file's, dequantized on access; its optional `shape_of(name)` saves reading a
    tensor to check its shape); `folder` then only names the source in errors.
    Every name and shape is checked before anything is copied, so a checkpoint that does
    not fit leaves the model untouched; then one tensor at a time is read and copied.
    """
    tensors, source = read_weights(folder) if tensors is None else (tensors, str(folder))
    shape_of = getattr(tensors, "shape_of", lambda name: tensors[name].shape)
    live = model._state_entries()
    problems, plan = [], []
    for entry in mapping:
        found = [next((p + part for p in prefixes if p + part in tensors), None) for part in entry.parts]
        missing = [prefixes[0] + part for part, name in zip(entry.parts, found) if name is None]
        problems += [f"missing tensor {name!r} (for {entry.ours})" for name in missing]
        if missing:
            continue
        expected = tuple(live[entry.ours].shape)
        for name, rows in zip(found, entry.part_rows(expected[0])):
            want = (rows,) + expected[1:]
            shape = tuple(shape_of(name))
            if (tuple(reversed(shape)) if entry.transposed else shape) != want:
                wanted = tuple(reversed(want)) if entry.transposed else want
                problems.append(f"tensor {name!r} has shape {shape}, the model expects {wanted}")
        plan.append((entry, found))
    if problems:
        raise CheckpointError(f"{source} does not fit {type(model).__name__}:\n  " + "\n  ".join(problems))
    with no_grad():
        for entry, found in plan:
            pieces = [tensors[name].T if entry.transposed else tensors[name] for name in found]
            array = pieces[0] if len(pieces) == 1 else np.concatenate(pieces, axis=0)
            target = live[entry.ours]
            target.copy_(target.device.asarray(np.ascontiguousarray(array).astype(target.dtype, copy=False)))


def save_mapped(model, folder, mapping: list[WeightMap], config: dict) -> None:
    """Write config.json and model.safetensors with the checkpoint's names and layouts."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    state = model.state_dict()
    tensors = {}
    for entry in mapping:
        array = state[entry.ours].numpy()
        boundaries = np.cumsum(entry.part_rows(array.shape[0]))[:-1]
        for part, piece in zip(entry.parts, np.split(array, boundaries, axis=0)):
            tensors[part] = np.ascontiguousarray(piece.T if entry.transposed else piece)
    save_file(tensors, folder / "model.safetensors", metadata={"format": "pt"})
    write_config(folder, config)
