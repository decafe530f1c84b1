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

    @property
    def parts(self) -> tuple:
        return self.theirs if isinstance(self.theirs, tuple) else (self.theirs,)

    def prefixed(self, ours: str = "", theirs: str = "") -> "WeightMap":
        """The same entry with prefixes put before our name and each of theirs."""
        names = tuple(theirs + part for part in self.parts)
        return WeightMap(ours + self.ours, names if isinstance(self.theirs, tuple) else names[0], self.transposed)


def read_config(folder, name: str = "config.json") -> dict:
    path = Path(folder) / name
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except FileNotFoundError:
        raise CheckpointError(f"{path}: no {name} in the checkpoint folder") from None
    except json.JSONDecodeError as error:
        raise CheckpointError(f"{path}, line {error.lineno}: invalid JSON ({error.msg})") from None


def write_config(folder, config: dict, name: str = "config.json") -> None:
    atomic_write_text(Path(folder) / name, json.dumps(config, indent=2, sort_keys=True) + "\n")


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
            tensors.update(load_file(folder / shard))
        return tensors, str(index)
    raise CheckpointError(f"{folder}: no model.safetensors (minilm reads safetensors weights only, never pickles)")


def load_mapped(model, folder, mapping: list[WeightMap], prefixes=("",)) -> None:
    """Copy the checkpoint's tensors into `model` following `mapping`; strict about names and shapes.

    Each name is looked up with each of `prefixes` in front, in order: Hugging Face saves
    `bert.encoder...` from BertForMaskedLM but `encoder...` from BertModel.
    """
    tensors, source = read_weights(folder)
    targets = model.state_dict()
    problems = []
    values = {}
    for entry in mapping:
        pieces = []
        for part in entry.parts:
            found = next((p + part for p in prefixes if p + part in tensors), None)
            if found is None:
                problems.append(f"missing tensor {prefixes[0] + part!r} (for {entry.ours})")
                break
            pieces.append((found, tensors[found].T if entry.transposed else tensors[found]))
        if len(pieces) != len(entry.parts):
            continue
        expected = tuple(targets[entry.ours].shape)
        expected_piece = (expected[0] // len(pieces),) + expected[1:]
        wrong = [(name, a.shape) for name, a in pieces if tuple(a.shape) != expected_piece]
        for name, shape in wrong:
            shown = tuple(reversed(shape)) if entry.transposed else tuple(shape)
            wanted = tuple(reversed(expected_piece)) if entry.transposed else expected_piece
            problems.append(f"tensor {name!r} has shape {shown}, the model expects {wanted}")
        if wrong:
            continue
        array = pieces[0][1] if len(pieces) == 1 else np.concatenate([a for _, a in pieces], axis=0)
        values[entry.ours] = np.ascontiguousarray(array)
    if problems:
        raise CheckpointError(f"{source} does not fit {type(model).__name__}:\n  " + "\n  ".join(problems))
    with no_grad():
        live = model._state_entries()
        for name, array in values.items():
            target = live[name]
            target.copy_(target.device.asarray(array.astype(target.dtype, copy=False)))


def save_mapped(model, folder, mapping: list[WeightMap], config: dict) -> None:
    """Write config.json and model.safetensors with the checkpoint's names and layouts."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    state = model.state_dict()
    tensors = {}
    for entry in mapping:
        array = state[entry.ours].numpy()
        for part, piece in zip(entry.parts, np.split(array, len(entry.parts), axis=0)):
            tensors[part] = np.ascontiguousarray(piece.T if entry.transposed else piece)
    save_file(tensors, folder / "model.safetensors", metadata={"format": "pt"})
    write_config(folder, config)
