"""Reading and writing Hugging Face checkpoint folders: config.json + model.safetensors.

Each model describes its weights as a list of `WeightMap`s (our name, their name, whether
their tensor is stored transposed); these helpers do the file work and the checking, so a
missing tensor or a wrong shape is reported by name with both shapes.

Every problem with a folder is a `CheckpointError` naming the file. A model's `from_pretrained`
never trusts config.json: it calls

    hf = read_config(folder, options=OPTIONS, sizes=SIZES)

where OPTIONS says, for every key the model implements, which values it implements:
`Option(kind)` with kind "int" (a positive integer), "count" (>= 0), "float", "bool", "str", "any", or
`Option(allowed=(...))` for a fixed set of values (`scale_attn_weights` is implemented only as
True). A key neither in OPTIONS nor in `HARMLESS_KEYS` (bookkeeping that does not change what
the model computes: names, versions, token ids, generation defaults) is an error: an option
minilm does not implement is never silently dropped. SIZES ties the sizes in config.json to
the weights on disk, read from the safetensors headers before anything is allocated:
`Dim(tensor, axis)` (the size is that axis of that tensor; names match with any prefix such as
"transformer.") or `Layers(pattern)` (at most as many layers as the tensors have numbers in
`pattern`, e.g. "h.{}."). So `n_layer: 1000000000` fails at once, naming both numbers. New
models (Llama, the encoder-decoder) declare their OPTIONS and SIZES beside their
`_hf_mapping` and call `read_config` the same way.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..autograd import no_grad
from ..data import atomic_write_text, read_json_file
from ..serialization import SafetensorsError, load_file, read_header, save_file


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


# Keys of config.json that do not change what a model computes: bookkeeping, token ids, dtypes,
# training-only dropout and initialisation, generation defaults, and the heads of other tasks.
HARMLESS_KEYS = frozenset({
    "_name_or_path", "architectures", "model_type", "transformers_version", "torch_dtype", "dtype",
    "bos_token_id", "eos_token_id", "pad_token_id", "sep_token_id", "decoder_start_token_id",
    "initializer_range", "gradient_checkpointing", "use_cache", "return_dict", "output_attentions",
    "output_hidden_states", "torchscript", "use_bfloat16", "tokenizer_class", "prefix", "finetuning_task",
    "problem_type", "task_specific_params", "id2label", "label2id", "max_length", "min_length", "do_sample",
    "early_stopping", "num_beams", "num_beam_groups", "temperature", "top_k", "top_p", "typical_p",
    "repetition_penalty", "length_penalty", "no_repeat_ngram_size", "num_return_sequences",
    "bad_words_ids", "diversity_penalty", "classifier_dropout", "summary_type", "summary_use_proj",
    "summary_activation", "summary_proj_to_labels", "summary_first_dropout",
})


@dataclass(frozen=True)
class Option:
    """What a model implements of one config.json key: any value of a kind, or fixed values."""

    kind: str = "any"  # "int" (positive), "count" (>= 0), "float", "bool", "str", "any"
    allowed: tuple | None = None  # the only values implemented (compared with ==, bools strictly)

    def problem(self, key: str, value) -> str | None:
        if self.allowed is not None:
            if any(value == a and type(value) is type(a) for a in self.allowed):
                return None
            return f"{key} = {json.dumps(value)} is not implemented (minilm implements " \
                   f"{' or '.join(json.dumps(a) for a in self.allowed)})"
        checks = {"int": lambda v: isinstance(v, int) and not isinstance(v, bool) and v > 0,
                  "count": lambda v: isinstance(v, int) and not isinstance(v, bool) and v >= 0,
                  "float": lambda v: isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v),
                  "bool": lambda v: isinstance(v, bool), "str": lambda v: isinstance(v, str),
                  "any": lambda v: True}
        if checks[self.kind](value):
            return None
        wanted = {"int": "a positive integer", "count": "an integer >= 0", "float": "a finite number",
                  "bool": "true or false", "str": "a string"}[self.kind]
        return f"{key} = {json.dumps(value)[:60]} must be {wanted}"


@dataclass(frozen=True)
class Dim:
    """config value == axis `axis` of the tensor named `tensor` (with any prefix)."""

    tensor: str
    axis: int


@dataclass(frozen=True)
class Layers:
    """config value <= the number of layers: distinct numbers in tensor names matching `pattern`
    ("h.{}." -> "h.0.", "transformer.h.11.")."""

    pattern: str


def read_config(folder, name: str = "config.json", options: dict | None = None, sizes: dict | None = None,
                required=()) -> dict:
    """The JSON file `name` of a checkpoint folder (config.json), checked: every key in `options`
    (key -> Option) or in HARMLESS_KEYS, every value one the model implements, the `required` keys
    present, and the sizes in `sizes` (key -> Dim or Layers) matching the weights' headers (see the
    module docstring). Without `options`, the raw dict. Any problem is a CheckpointError naming the file."""
    path = Path(folder) / name
    config = read_json_file(path, CheckpointError, missing=f"no {name} in the checkpoint folder")
    if not isinstance(config, dict):
        raise CheckpointError(f"{path}: must hold a JSON object, got {type(config).__name__}")
    if "model_config" in config and "minilm_version" in config:
        raise CheckpointError(f"{Path(folder)} is a run folder of `minilm train`, not a Hugging Face checkpoint: "
                              "load it with `config, tokenizer, model = minilm.load_run(folder)`")
    if options is None:
        return config
    problems = [f"missing {key!r}" for key in required if key not in config]
    for key, value in config.items():
        if key in options:
            problem = options[key].problem(key, value)
            if problem:
                problems.append(problem)
        elif key not in HARMLESS_KEYS:
            problems.append(f"unknown option {key!r} (minilm does not implement it)")
    if problems:
        raise CheckpointError(f"{path}: " + "; ".join(problems))
    if sizes:
        check_sizes(config, read_shapes(folder), sizes, path)
    return config


def read_shapes(folder) -> dict[str, tuple]:
    """name -> shape of every tensor of the folder's weights, from the headers alone."""
    shapes = {}
    for shard in weight_files(folder):
        try:
            header, _ = read_header(shard)
        except OSError as error:
            raise CheckpointError(f"{shard}: cannot be read ({error.strerror})") from None
        except SafetensorsError as error:
            raise CheckpointError(str(error)) from None
        shapes.update({name: tuple(entry["shape"]) for name, entry in header.items()})
    return shapes


def check_sizes(config: dict, shapes: dict, sizes: dict, source) -> None:
    """Raise a CheckpointError naming `source` unless each size in `config` fits the tensor shapes."""
    problems = []
    for key, rule in sizes.items():
        if key not in config:
            continue
        value = config[key]
        if isinstance(rule, Layers):
            regex = re.compile("(?:^|\\.)" + re.escape(rule.pattern).replace(r"\{\}", r"(\d+)"))
            found = {m.group(1) for name in shapes for m in [regex.search(name)] if m}
            if value > len(found):
                problems.append(f"{key} {value}, but the weights hold {len(found)} layers")
            continue
        matches = [shape for name, shape in shapes.items() if name == rule.tensor or name.endswith("." + rule.tensor)]
        if not matches:
            continue  # the missing tensor is reported by name when the weights are loaded
        shape = matches[0]
        if len(shape) <= rule.axis or shape[rule.axis] != value:
            problems.append(f"{key} {value}, but {rule.tensor!r} has shape {list(shape)}")
    if problems:
        raise CheckpointError(f"{source} does not match the weights: " + "; ".join(problems))


def write_config(folder, config: dict, name: str = "config.json") -> None:
    atomic_write_text(Path(folder) / name, json.dumps(config, indent=2, sort_keys=True) + "\n")


def weight_files(folder) -> list[Path]:
    """model.safetensors, or the shards model.safetensors.index.json lists: plain file names in
    `folder`, never paths out of it ("../x", "/abs")."""
    folder = Path(folder)
    single, index = folder / "model.safetensors", folder / "model.safetensors.index.json"
    if single.exists():
        return [single]
    if not index.exists():
        raise CheckpointError(f"{folder}: no model.safetensors (minilm reads safetensors weights only, "
                              "never pickles)")
    try:
        with open(index, encoding="utf-8") as f:
            weight_map = json.load(f)["weight_map"]
        shards = sorted(set(weight_map.values()))
    except (ValueError, KeyError, TypeError, AttributeError, RecursionError) as error:
        raise CheckpointError(f"{index}: not a safetensors index (a \"weight_map\" object of tensor -> "
                              f"file name): {type(error).__name__}") from None
    for shard in shards:
        if not isinstance(shard, str) or Path(shard).name != shard or shard in (".", "..") or "\\" in shard:
            raise CheckpointError(f"{index}: shard {shard!r} lies outside the checkpoint folder (not a file "
                                  f"name in {folder})")
    return [folder / shard for shard in shards]


def read_weights(folder) -> tuple[dict, str]:
    """All tensors of model.safetensors (or of the shards a model.safetensors.index.json lists)."""
    files = weight_files(folder)
    tensors = {}
    for file in files:
        try:
            tensors.update(load_file(file))
        except FileNotFoundError:
            raise CheckpointError(f"{file}: no such file (listed in model.safetensors.index.json)") from None
        except SafetensorsError as error:
            raise CheckpointError(str(error)) from None
    source = files[0] if len(files) == 1 and files[0].name == "model.safetensors" else \
        Path(folder) / "model.safetensors.index.json"
    return tensors, str(source)


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
