"""LoRA: low-rank adapters on chosen Linear layers, the base weights frozen.

A frozen Linear W [out, in] learns an update of rank r instead of a full [out, in] one:

    y = x W^T + b + scaling * dropout(x) A^T B^T      A [r, in], B [out, r], scaling = alpha / r

A starts random (Kaiming-uniform, as PEFT), B at zero, so the adapted model starts out equal
to the base model. Only A and B train: r (in + out) numbers per layer instead of in * out.

Layers are chosen by name, as PEFT's `target_modules`: a list of names matches a module whose
name is one of them or ends with "." + one of them; a single string is a regular expression
that must match the whole name. The names are the Hugging Face ones when the model has a
Hugging Face weight map (Llama: `model.layers.0.self_attn.q_proj`), so the same
`target_modules` work here and in PEFT, and adapters save in PEFT's layout:

    adapter_config.json          r, lora_alpha, lora_dropout, target_modules, ...
    adapter_model.safetensors    base_model.model.<module name>.lora_A.weight  [r, in]
                                 base_model.model.<module name>.lora_B.weight  [out, r]

minilm fuses some of those projections into one Linear (q, k, v -> attn.in_proj; gate and up
-> mlp.gate_up). An adapter on q_proj then updates only q's rows of the fused weight: a
`LoRALinear` holds one (A, B) pair per part and adds each part's update to its rows.

    from minilm.nn import lora
    lora.add_adapters(model, lora.LoraConfig(r=8, lora_alpha=16, target_modules=["q_proj", "v_proj"]))
    lora.print_trainable_parameters(model)       # trainable params: ... || all params: ...
    lora.save_adapter(model, "adapter/")          # peft's PeftModel.from_pretrained reads it
    lora.load_adapter(other_model, "adapter/")    # and minilm reads peft's
    lora.merge(model)                             # fold B A into W for inference; unmerge() undoes it
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path

from .. import functional as F
from .. import ops
from ..autograd import Tensor, no_grad
from . import init
from .layers import Linear
from .module import Module, ModuleDict

CONFIG_NAME = "adapter_config.json"
WEIGHTS_NAME = "adapter_model.safetensors"
PEFT_PREFIX = "base_model.model."  # PEFT's name for the wrapped model inside its PeftModel


class AdapterError(ValueError):
    """An adapter folder or configuration minilm cannot use, with the file and field named."""


@dataclass
class LoraConfig:
    r: int = 8
    lora_alpha: float = 8
    lora_dropout: float = 0.0
    target_modules: list | str = field(default_factory=lambda: ["q_proj", "v_proj"])
    use_rslora: bool = False  # scaling alpha / sqrt(r) instead of alpha / r (rank-stabilised LoRA)
    task_type: str | None = "CAUSAL_LM"
    base_model_name_or_path: str | None = None

    def __post_init__(self):
        if not isinstance(self.r, int) or self.r < 1:
            raise ValueError(f"LoraConfig.r must be a positive integer, got {self.r!r}")
        if not 0.0 <= self.lora_dropout < 1.0:
            raise ValueError(f"LoraConfig.lora_dropout must be in [0, 1), got {self.lora_dropout}")
        if isinstance(self.target_modules, (list, tuple, set)):
            self.target_modules = sorted(self.target_modules) if isinstance(self.target_modules, set) \
                else list(self.target_modules)
            if not self.target_modules:
                raise ValueError("LoraConfig.target_modules is empty: name at least one module (e.g. q_proj)")
        elif not isinstance(self.target_modules, str):
            raise TypeError(f"LoraConfig.target_modules must be a list of names or a regex string, "
                            f"got {type(self.target_modules).__name__}")

    @property
    def scaling(self) -> float:
        return self.lora_alpha / (math.sqrt(self.r) if self.use_rslora else self.r)

    def matches(self, name: str) -> bool:
        """PEFT's rule: a regex matches the whole name; a list entry equals it or its last dotted parts."""
        if isinstance(self.target_modules, str):
            return re.fullmatch(self.target_modules, name) is not None
        return any(name == t or name.endswith("." + t) for t in self.target_modules)

    # -- PEFT's adapter_config.json ----------------------------------------------------------
    def to_peft(self) -> dict:
        return {
            "peft_type": "LORA", "task_type": self.task_type, "base_model_name_or_path": self.base_model_name_or_path,
            "r": self.r, "lora_alpha": self.lora_alpha, "lora_dropout": self.lora_dropout,
            "target_modules": self.target_modules, "use_rslora": self.use_rslora, "bias": "none",
            "fan_in_fan_out": False, "use_dora": False, "init_lora_weights": True, "inference_mode": True,
            "modules_to_save": None, "layers_to_transform": None, "layers_pattern": None,
            "rank_pattern": {}, "alpha_pattern": {}, "revision": None,
        }

    @classmethod
    def from_peft(cls, config: dict, source: str = CONFIG_NAME) -> "LoraConfig":
        """Read PEFT's config; features minilm does not implement are errors that name them."""
        if config.get("peft_type", "LORA") != "LORA":
            raise AdapterError(f"{source}: peft_type {config.get('peft_type')!r} is not LORA")
        unsupported = {"use_dora": False, "bias": "none", "fan_in_fan_out": False, "modules_to_save": None,
                       "layers_to_transform": None, "rank_pattern": {}, "alpha_pattern": {}, "lora_bias": False,
                       "layer_replication": None, "target_parameters": None, "trainable_token_indices": None}
        problems = [f"{key}={config[key]!r}" for key, default in unsupported.items()
                    if config.get(key) not in (default, None) and not (default == {} and not config.get(key))]
        if problems:
            raise AdapterError(f"{source}: not supported by minilm's LoRA: " + ", ".join(problems))
        for key in ("r", "lora_alpha", "target_modules"):
            if key not in config:
                raise AdapterError(f"{source}: field {key!r} is missing")
        return cls(r=config["r"], lora_alpha=config["lora_alpha"], lora_dropout=config.get("lora_dropout", 0.0),
                   target_modules=config["target_modules"], use_rslora=bool(config.get("use_rslora", False)),
                   task_type=config.get("task_type"), base_model_name_or_path=config.get("base_model_name_or_path"))


class LoRALinear(Linear):
    """A frozen Linear with low-rank updates on row ranges of its output.

    It shares the base layer's weight and bias (the same Parameters, so the model's state dict
    and checkpoint names do not change) and adds `lora_A[part]` (Linear in -> r) and
    `lora_B[part]` (Linear r -> rows) per part: a part is a whole unfused layer, or one of
    the layers fused into it (q_proj, k_proj, v_proj of attn.in_proj).
    """

    def __init__(self, base: Linear, parts: dict, config: LoraConfig):
        Module.__init__(self)
        self.in_features, self.out_features = base.in_features, base.out_features
        self.weight = base.weight.requires_grad_(False)
        self.register_parameter("bias", base.bias.requires_grad_(False) if base.bias is not None else None)
        self.parts = dict(parts)  # part name -> (first row, end row) in this layer's output
        self.r, self.scaling, self.dropout_p = config.r, config.scaling, config.lora_dropout
        self.merged = False
        self.lora_A, self.lora_B = ModuleDict(), ModuleDict()
        for part, (start, stop) in self.parts.items():
            self.lora_A[part] = Linear(self.in_features, config.r, bias=False).to(dtype=base.weight.dtype)
            self.lora_B[part] = Linear(config.r, stop - start, bias=False).to(dtype=base.weight.dtype)
            init.kaiming_uniform_(self.lora_A[part].weight, a=math.sqrt(5))  # PEFT's initialisation
            init.zeros_(self.lora_B[part].weight)  # the update starts at zero: the base model unchanged

    def forward(self, x: Tensor) -> Tensor:
        y = super().forward(x)  # [..., in] -> [..., out], the frozen layer
        if self.merged:
            return y
        pieces, row = [], 0
        for part, (start, stop) in sorted(self.parts.items(), key=lambda item: item[1]):
            if start > row:  # rows no adapter touches
                pieces.append(Tensor(y.device.xp.zeros(y.shape[:-1] + (start - row,), dtype=y.dtype)))
            h = F.dropout(x, self.dropout_p, self.training)
            pieces.append(self.lora_B[part](self.lora_A[part](h)))  # [..., in] -> [..., r] -> [..., rows]
            row = stop
        if row < self.out_features:
            pieces.append(Tensor(y.device.xp.zeros(y.shape[:-1] + (self.out_features - row,), dtype=y.dtype)))
        update = pieces[0] if len(pieces) == 1 else ops.concatenate(pieces, axis=-1)  # [..., out]
        return y + update * self.scaling

    def delta_weight(self, part: str):
        """scaling * B A for one part: the [rows, in] array its adapter adds to the weight."""
        return self.scaling * (self.lora_B[part].weight.data @ self.lora_A[part].weight.data)

    def merge(self) -> None:
        """Fold the updates into the weight (inference at the base layer's cost)."""
        if not self.merged:
            with no_grad():
                for part, (start, stop) in self.parts.items():
                    self.weight.data[start:stop] += self.delta_weight(part).astype(self.weight.dtype)
                self.weight._version += 1
            self.merged = True

    def unmerge(self) -> None:
        if self.merged:
            with no_grad():
                for part, (start, stop) in self.parts.items():
                    self.weight.data[start:stop] -= self.delta_weight(part).astype(self.weight.dtype)
                self.weight._version += 1
            self.merged = False

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, r={self.r}, scaling={self.scaling:g}, parts={list(self.parts)}"


# ---------------------------------------------------------------------------------------
# Finding the layers: names as PEFT sees them
# ---------------------------------------------------------------------------------------
def adaptable_layers(model: Module) -> dict:
    """name -> (path of our Linear, first row, end row) for every layer an adapter can wrap.

    With a Hugging Face weight map (`model._hf_mapping()`), names are Hugging Face's and a
    fused Linear yields one entry per layer fused into it; otherwise every Linear is listed
    under its own module name.
    """
    modules = dict(model.named_modules())
    hf_mapping = getattr(model, "_hf_mapping", None)
    maps = hf_mapping() if hf_mapping is not None else None
    if maps is None or any(m.transposed for m in maps):  # GPT-2's Conv1D layout: use our names
        return {name: (name, 0, m.out_features) for name, m in modules.items() if isinstance(m, Linear)}
    layers = {}
    for entry in maps:
        if not entry.ours.endswith(".weight"):
            continue
        path = entry.ours[: -len(".weight")]
        linear = modules.get(path)
        if not isinstance(linear, Linear):
            continue  # embeddings and norms take no adapters
        row = 0
        for part, rows in zip(entry.parts, entry.part_rows(linear.out_features)):
            layers[part[: -len(".weight")]] = (path, row, row + rows)
            row += rows
    return layers


def add_adapters(model: Module, config: LoraConfig) -> Module:
    """Wrap the layers that `config.target_modules` names in `LoRALinear`s and freeze every other
    weight. Returns the model (changed in place)."""
    if getattr(model, "lora_config", None) is not None:
        raise ValueError("this model already has LoRA adapters (lora.merge_and_unload() removes them)")
    layers = adaptable_layers(model)
    chosen = {name: spot for name, spot in layers.items() if config.matches(name)}
    if not chosen:
        examples = ", ".join(sorted({name.rsplit(".", 1)[-1] for name in layers}))
        raise ValueError(f"LoRA target_modules {config.target_modules!r} match no layer of "
                         f"{type(model).__name__}; its layers end in: {examples}")
    model.requires_grad_(False)
    by_path: dict[str, dict] = {}
    for name, (path, start, stop) in chosen.items():
        by_path.setdefault(path, {})[name.rsplit(".", 1)[-1]] = (start, stop)
    modules = dict(model.named_modules())
    for path, parts in by_path.items():
        parent_path, _, attribute = path.rpartition(".")
        parent = modules[parent_path] if parent_path else model
        setattr(parent, attribute, LoRALinear(modules[path], parts, config))
    object.__setattr__(model, "lora_config", config)
    object.__setattr__(model, "lora_names", {name: (path, name.rsplit(".", 1)[-1]) for name, (path, _, _)
                                             in chosen.items()})
    return model


def _lora_layers(model: Module) -> list:
    return [m for m in model.modules() if isinstance(m, LoRALinear)]


def merge(model: Module) -> None:
    for layer in _lora_layers(model):
        layer.merge()


def unmerge(model: Module) -> None:
    for layer in _lora_layers(model):
        layer.unmerge()


def merge_and_unload(model: Module) -> Module:
    """Fold every adapter into its weight and put plain Linears back: the base architecture again."""
    modules = dict(model.named_modules())
    for path, layer in list(modules.items()):
        if isinstance(layer, LoRALinear):
            layer.merge()
            plain = Linear(layer.in_features, layer.out_features, bias=layer.bias is not None)
            plain.weight, plain.bias = layer.weight, layer.bias
            parent_path, _, attribute = path.rpartition(".")
            setattr(modules[parent_path] if parent_path else model, attribute, plain)
    object.__setattr__(model, "lora_config", None)
    object.__setattr__(model, "lora_names", None)
    return model


def trainable_parameters(model: Module) -> tuple[int, int]:
    """(trainable, all) scalar counts, each shared weight counted once."""
    return model.num_parameters(trainable_only=True), model.num_parameters()


def print_trainable_parameters(model: Module) -> str:
    """Print (and return) the counts in PEFT's words."""
    trainable, total = trainable_parameters(model)
    line = f"trainable params: {trainable:,d} || all params: {total:,d} || trainable%: {100 * trainable / total:.4f}"
    print(line)
    return line


# ---------------------------------------------------------------------------------------
# PEFT's files
# ---------------------------------------------------------------------------------------
def adapter_state_dict(model: Module) -> dict:
    """PEFT's tensor names -> arrays of the adapter weights (nothing of the frozen base)."""
    names = _require_adapters(model)
    modules = dict(model.named_modules())
    state = {}
    for name, (path, part) in sorted(names.items()):
        layer = modules[path]
        state[f"{PEFT_PREFIX}{name}.lora_A.weight"] = layer.lora_A[part].weight.numpy()
        state[f"{PEFT_PREFIX}{name}.lora_B.weight"] = layer.lora_B[part].weight.numpy()
    return state


def save_adapter(model: Module, folder) -> None:
    """Write adapter_config.json and adapter_model.safetensors (PEFT's layout) into `folder`."""
    from ..data import atomic_write_text
    from ..serialization import save_file

    _require_adapters(model)
    config = model.lora_config
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    save_file(adapter_state_dict(model), folder / WEIGHTS_NAME, metadata={"format": "pt"})
    atomic_write_text(folder / CONFIG_NAME, json.dumps(config.to_peft(), indent=2) + "\n")


def read_adapter_config(folder) -> LoraConfig:
    from ..data import read_json_file

    path = Path(folder) / CONFIG_NAME
    raw = read_json_file(path, AdapterError, missing="no adapter_config.json in the adapter folder")
    return LoraConfig.from_peft(raw, str(path))


def load_adapter(model: Module, folder) -> Module:
    """Add the adapters of a PEFT adapter folder to `model` (its own base weights) and load them."""
    from ..serialization import load_file

    folder = Path(folder)
    config = read_adapter_config(folder)
    add_adapters(model, config)
    path = folder / WEIGHTS_NAME
    if not path.is_file():
        raise AdapterError(f"{path}: the adapter weights are missing")
    arrays = load_file(path)
    expected = adapter_state_dict(model)
    # PEFT files saved with an adapter name other than "default" keep it in the key; none here.
    missing = sorted(set(expected) - set(arrays))
    unexpected = sorted(set(arrays) - set(expected))
    problems = []
    if missing:
        problems.append("missing: " + ", ".join(missing[:4]) + (" ..." if len(missing) > 4 else ""))
    if unexpected:
        problems.append("unexpected: " + ", ".join(unexpected[:4]) + (" ..." if len(unexpected) > 4 else ""))
    problems += [f"{key}: shape {arrays[key].shape}, expected {expected[key].shape}"
                 for key in expected if key in arrays and arrays[key].shape != expected[key].shape]
    if problems:
        raise AdapterError(f"{path}: adapter tensors do not fit {type(model).__name__}: " + "; ".join(problems))
    modules = dict(model.named_modules())
    with no_grad():
        for name, (module_path, part) in model.lora_names.items():
            layer = modules[module_path]
            layer.lora_A[part].weight.copy_(arrays[f"{PEFT_PREFIX}{name}.lora_A.weight"])
            layer.lora_B[part].weight.copy_(arrays[f"{PEFT_PREFIX}{name}.lora_B.weight"])
    return model


def _require_adapters(model: Module) -> dict:
    names = getattr(model, "lora_names", None)
    if not names:
        raise ValueError(f"{type(model).__name__} has no LoRA adapters (add them with lora.add_adapters)")
    return names
