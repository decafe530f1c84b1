"""`Module`, `Parameter` and the containers: how layers hold their weights.

A `Module` registers what is assigned to its attributes: a `Parameter` becomes a trainable
weight, a `Module` a submodule, and `register_buffer` adds non-trainable state (running
statistics, masks). Everything else (walking the tree, moving it to a device, state dicts)
is built on those three ordered dicts.

Parameters are identified by object identity, never by value: `Tensor.__eq__` compares
elementwise, so `p in some_list` would be wrong. Hence the `id(...)` sets below.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Iterator, NamedTuple

import numpy as np

from .. import backend as _backend
from ..autograd import Tensor, _is_floating, no_grad, zero_grads


class Parameter(Tensor):
    """A tensor that is a trainable weight of a module (requires_grad=True by default).

    Assigning one to a module attribute registers it: `self.weight = Parameter(...)`.
    """

    def __init__(self, data, requires_grad: bool = True):
        if isinstance(data, Tensor):
            data = data.data
        super().__init__(data, requires_grad=requires_grad)

    def __repr__(self) -> str:
        return "Parameter containing:\n" + super().__repr__()


class IncompatibleKeys(NamedTuple):
    """What `load_state_dict(strict=False)` skipped."""

    missing_keys: list
    unexpected_keys: list


class Module:
    """Base class of every layer and model: subclass it and write `forward`.

        class MLP(nn.Module):
            def __init__(self):
                super().__init__()
                self.fc = nn.Linear(4, 8)      # registered as a submodule
            def forward(self, x):
                return self.fc(x).relu()
    """

    def __init__(self):
        # object.__setattr__ because our own __setattr__ needs these dicts to exist.
        object.__setattr__(self, "_parameters", OrderedDict())
        object.__setattr__(self, "_modules", OrderedDict())
        object.__setattr__(self, "_buffers", OrderedDict())
        object.__setattr__(self, "_non_persistent", set())
        object.__setattr__(self, "training", True)

    def forward(self, *args, **kwargs):
        raise NotImplementedError(f"{type(self).__name__} must implement forward()")  # abstract

    def __call__(self, *args, **kwargs):
        return self.forward(*args, **kwargs)

    # -- registration by attribute assignment ---------------------------------------------
    def __setattr__(self, name: str, value) -> None:
        if "_parameters" not in self.__dict__:
            raise AttributeError(f"{type(self).__name__}: call super().__init__() before assigning attributes")
        if isinstance(value, Parameter):
            self._forget(name)
            self._parameters[name] = value
        elif isinstance(value, Module):
            self._forget(name)
            self._modules[name] = value
        elif name in self._buffers:  # re-assigning a buffer keeps it a buffer
            if value is not None and not isinstance(value, Tensor):
                raise TypeError(f"cannot assign {type(value).__name__} to buffer {name!r}: expected a Tensor or None")
            self._buffers[name] = value
        elif name in self._parameters or name in self._modules:
            if value is not None:
                kind = "parameter" if name in self._parameters else "submodule"
                raise TypeError(f"cannot assign {type(value).__name__} to {kind} {name!r}: "
                                "wrap weights in nn.Parameter, or assign None to remove it")
            (self._parameters if name in self._parameters else self._modules)[name] = None
        else:
            object.__setattr__(self, name, value)

    def _forget(self, name: str) -> None:
        """Remove `name` from every registry, so it lives in exactly one place."""
        for registry in (self._parameters, self._modules, self._buffers):
            registry.pop(name, None)
        self._non_persistent.discard(name)
        self.__dict__.pop(name, None)

    def __getattr__(self, name: str):
        # Only called when normal lookup fails, i.e. for registered entries.
        for registry in ("_parameters", "_modules", "_buffers"):
            entries = self.__dict__.get(registry)
            if entries is not None and name in entries:
                return entries[name]
        raise AttributeError(f"'{type(self).__name__}' object has no attribute '{name}'")

    def __delattr__(self, name: str) -> None:
        if name in self._parameters or name in self._modules or name in self._buffers:
            self._forget(name)
        else:
            object.__delattr__(self, name)

    def register_buffer(self, name: str, tensor: Tensor | None, persistent: bool = True) -> None:
        """Add non-trainable state; persistent buffers are part of the state dict."""
        if tensor is not None and not isinstance(tensor, Tensor):
            raise TypeError(f"register_buffer({name!r}): expected a Tensor or None, got {type(tensor).__name__}")
        if isinstance(tensor, Parameter):
            raise TypeError(f"register_buffer({name!r}): a Parameter is trainable; assign it as an attribute instead")
        if hasattr(self, name) and name not in self._buffers:
            raise KeyError(f"register_buffer({name!r}): attribute already exists")
        self._forget(name)
        self._buffers[name] = tensor
        if persistent:
            self._non_persistent.discard(name)
        else:
            self._non_persistent.add(name)

    def register_parameter(self, name: str, param: Parameter | None) -> None:
        """Add a parameter under `name`; None declares an absent optional one (e.g. bias=False)."""
        if param is None:
            self._forget(name)
            self._parameters[name] = None
        else:
            setattr(self, name, param)

    # -- walking the tree -----------------------------------------------------------------
    def named_modules(self, prefix: str = "", remove_duplicate: bool = True) -> Iterator[tuple[str, "Module"]]:
        """(name, module) for this module and every descendant, depth first."""
        seen = set()
        stack = [(prefix, self)]
        while stack:
            name, module = stack.pop()
            if remove_duplicate:
                if id(module) in seen:
                    continue
                seen.add(id(module))
            yield name, module
            children = [(f"{name}.{child}" if name else child, m)
                        for child, m in module._modules.items() if m is not None]
            stack.extend(reversed(children))  # reversed: the first child is popped first

    def modules(self) -> Iterator["Module"]:
        for _, module in self.named_modules():
            yield module

    def named_children(self) -> Iterator[tuple[str, "Module"]]:
        for name, module in self._modules.items():
            if module is not None:
                yield name, module

    def children(self) -> Iterator["Module"]:
        for _, module in self.named_children():
            yield module

    def named_parameters(self, prefix: str = "", remove_duplicate: bool = True) -> Iterator[tuple[str, Parameter]]:
        """(dotted name, parameter); a parameter shared by several modules is listed once
        (under its first name) unless remove_duplicate=False."""
        yield from self._named_members("_parameters", prefix, remove_duplicate)

    def parameters(self) -> Iterator[Parameter]:
        for _, p in self.named_parameters():
            yield p

    def named_buffers(self, prefix: str = "", remove_duplicate: bool = True) -> Iterator[tuple[str, Tensor]]:
        yield from self._named_members("_buffers", prefix, remove_duplicate)

    def buffers(self) -> Iterator[Tensor]:
        for _, b in self.named_buffers():
            yield b

    def _named_members(self, registry: str, prefix: str, remove_duplicate: bool):
        seen = set()
        for module_name, module in self.named_modules(prefix, remove_duplicate=remove_duplicate):
            for name, tensor in getattr(module, registry).items():
                if tensor is None or (remove_duplicate and id(tensor) in seen):
                    continue
                seen.add(id(tensor))
                yield (f"{module_name}.{name}" if module_name else name), tensor

    def num_parameters(self, trainable_only: bool = False) -> int:
        """Number of scalar weights, each shared parameter counted once."""
        return sum(p.size for p in self.parameters() if p.requires_grad or not trainable_only)

    def apply(self, fn) -> "Module":
        """Call fn(module) on every submodule (children first) and on self."""
        for module in self.children():
            module.apply(fn)
        fn(self)
        return self

    # -- modes, gradients, devices ----------------------------------------------------------
    def train(self, mode: bool = True) -> "Module":
        for module in self.modules():
            object.__setattr__(module, "training", bool(mode))
        return self

    def eval(self) -> "Module":
        return self.train(False)

    def requires_grad_(self, requires_grad: bool = True) -> "Module":
        for p in self.parameters():
            p.requires_grad_(requires_grad)
        return self

    def zero_grad(self, set_to_none: bool = True) -> None:
        zero_grads(self.parameters(), set_to_none)

    def to(self, device=None, dtype=None) -> "Module":
        """Move parameters and buffers to `device` and/or cast the floating ones to `dtype`.

        Works in place: each Parameter object stays the same (only its array changes), so
        optimizers holding it and tied weights keep working.
        """
        target = _backend.get_device(device) if device is not None else None
        dtype = np.dtype(dtype) if dtype is not None else None
        if dtype is not None and dtype.kind != "f":
            raise TypeError(f"Module.to(): dtype must be a floating-point dtype, got {dtype}")

        def convert(array):
            if target is not None and _backend.device_of(array) != target:
                array = target.asarray(_backend.device_of(array).to_host(array))
            if dtype is not None and _is_floating(array.dtype) and array.dtype != dtype:
                array = array.astype(dtype)
            return array

        for t in list(self.parameters()) + list(self.buffers()):
            converted = convert(t.data)
            if converted is not t.data:
                t.data = converted
                t._version += 1  # graphs that saved the old array must not be reused
            if t.grad is not None:
                t.grad = Tensor(convert(t.grad.data))
        return self

    def cpu(self) -> "Module":
        return self.to("cpu")

    def cuda(self) -> "Module":
        return self.to("cuda")

    # -- state dicts ---------------------------------------------------------------------------
    def state_dict(self, prefix: str = "") -> "OrderedDict[str, Tensor]":
        """name -> Tensor for every parameter and persistent buffer.

        Shared parameters appear under every name (as in PyTorch) so that a checkpoint can be
        read by a model that does not tie them. The tensors share memory with the module.
        """
        return OrderedDict((name, t.detach()) for name, t in self._state_entries(prefix).items())

    def _state_entries(self, prefix: str = "") -> "OrderedDict[str, Tensor]":
        """name -> the live tensor (parameter or persistent buffer) that owns it; PyTorch's
        order: a module's own parameters, then its buffers, then its children's entries."""
        entries = OrderedDict()
        for module_name, module in self.named_modules(prefix, remove_duplicate=False):
            dot = module_name + "." if module_name else ""
            for name, p in module._parameters.items():
                if p is not None:
                    entries[dot + name] = p
            for name, b in module._buffers.items():
                if b is not None and name not in module._non_persistent:
                    entries[dot + name] = b
        return entries

    def load_state_dict(self, state_dict, strict: bool = True) -> IncompatibleKeys:
        """Copy values from `state_dict` (name -> Tensor or array) into this module, in place.

        strict=True: raise if keys are missing or unexpected. Shape mismatches always raise.
        The error lists every problem at once. Values are cast to each parameter's dtype and
        device. Tied parameters stay tied (they are one object; it is written once per name).
        Returns (missing_keys, unexpected_keys).
        """
        entries = self._state_entries()
        missing = [k for k in entries if k not in state_dict]
        unexpected = [k for k in state_dict if k not in entries]
        mismatched = []
        for key, target in entries.items():
            if key in state_dict:
                got = tuple(np.shape(_array_of(state_dict[key])))
                if got != target.shape:
                    mismatched.append((key, target.shape, got))
        problems = []
        if strict and missing:
            problems.append("missing keys: " + ", ".join(repr(k) for k in missing))
        if strict and unexpected:
            problems.append("unexpected keys: " + ", ".join(repr(k) for k in unexpected))
        for key, expected, got in mismatched:
            problems.append(f"shape mismatch for {key!r}: expected {expected}, got {got}")
        if problems:
            raise RuntimeError(
                f"Error(s) in loading state_dict for {type(self).__name__}:\n  " + "\n  ".join(problems)
            )
        with no_grad():
            for key, target in entries.items():
                if key in state_dict:
                    target.copy_(_array_on(state_dict[key], target))
        return IncompatibleKeys(missing, unexpected)

    def save_safetensors(self, path, metadata: dict | None = None) -> None:
        """Write the state dict to a safetensors file (tied weights are stored under each name)."""
        from ..serialization import save_file

        save_file(self.state_dict(), path, metadata=metadata, checksum=True)  # checked again on load

    def load_safetensors(self, path, strict: bool = True) -> IncompatibleKeys:
        """Load a safetensors file written by `save_safetensors` (or a compatible checkpoint)."""
        from ..serialization import load_file

        return self.load_state_dict(load_file(path), strict=strict)

    # -- repr ------------------------------------------------------------------------------------
    def extra_repr(self) -> str:
        """The text inside the parentheses of this module's repr line (override in layers)."""
        return ""

    def __repr__(self) -> str:
        children = [f"({name}): " + _indent(repr(module)) for name, module in self.named_children()]
        head = f"{type(self).__name__}({self.extra_repr()}"
        if not children:
            return head + ")"
        return head + "\n  " + "\n  ".join(children) + "\n)"


def _array_of(value):
    if isinstance(value, Tensor):
        return value.data
    if isinstance(value, np.ndarray) or hasattr(value, "__cuda_array_interface__"):
        return value
    return np.asarray(value)


def _array_on(value, target: Tensor):
    """`value` as an array on target's device, in target's dtype."""
    array = _array_of(value)
    source = _backend.device_of(array)
    if source != target.device:
        array = target.device.asarray(source.to_host(array))
    return array.astype(target.dtype, copy=False)


def _indent(text: str) -> str:
    return text.replace("\n", "\n  ")


# ---------------------------------------------------------------------------------------
# Containers
# ---------------------------------------------------------------------------------------
class Sequential(Module):
    """Modules applied one after the other: Sequential(Linear(4, 8), ReLU(), Linear(8, 2))."""

    def __init__(self, *modules: Module):
        super().__init__()
        for index, module in enumerate(modules):
            setattr(self, str(index), module)

    def forward(self, x):
        for module in self._modules.values():
            x = module(x)
        return x

    def __getitem__(self, index: int) -> Module:
        return list(self._modules.values())[index]

    def __len__(self) -> int:
        return len(self._modules)

    def __iter__(self):
        return iter(self._modules.values())


class ModuleList(Module):
    """A list of submodules (registered, so their parameters are found): blocks of a model."""

    def __init__(self, modules=()):
        super().__init__()
        for module in modules:
            self.append(module)

    def append(self, module: Module) -> "ModuleList":
        if not isinstance(module, Module):
            raise TypeError(f"ModuleList holds Modules, got {type(module).__name__}")
        setattr(self, str(len(self._modules)), module)
        return self

    def extend(self, modules) -> "ModuleList":
        for module in modules:
            self.append(module)
        return self

    def __getitem__(self, index):
        values = list(self._modules.values())
        return ModuleList(values[index]) if isinstance(index, slice) else values[index]

    def __len__(self) -> int:
        return len(self._modules)

    def __iter__(self):
        return iter(self._modules.values())


class ModuleDict(Module):
    """A dict of named submodules."""

    def __init__(self, modules=None):
        super().__init__()
        for name, module in dict(modules or {}).items():
            self[name] = module

    def __setitem__(self, name: str, module: Module) -> None:
        if not isinstance(module, Module):
            raise TypeError(f"ModuleDict holds Modules, got {type(module).__name__} for key {name!r}")
        setattr(self, name, module)

    def __getitem__(self, name: str) -> Module:
        return self._modules[name]

    def __contains__(self, name: str) -> bool:
        return name in self._modules

    def __len__(self) -> int:
        return len(self._modules)

    def __iter__(self):
        return iter(self._modules)

    def keys(self):
        return self._modules.keys()

    def values(self):
        return self._modules.values()

    def items(self):
        return self._modules.items()
