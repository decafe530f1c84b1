"""The optimizer base class: parameter groups, per-parameter state, state dicts.

A subclass writes one method, `_update(param, grad, group, state)`, which changes
`param.data` in place from the gradient array. Updates bypass the graph (as under
`no_grad`) and bump `param._version`, so a backward through a graph that saved a
parameter before this update fails loudly instead of using the new values.
"""

from __future__ import annotations

from .. import backend as _backend
from ..autograd import Tensor, data_of, enable_grad, no_grad, zero_grads


class Optimizer:
    """params: an iterable of parameters, or of dicts {"params": [...], "lr": ..., ...}
    (parameter groups, each overriding `defaults` for its parameters)."""

    def __init__(self, params, defaults: dict):
        self.defaults = dict(defaults)
        self.param_groups: list[dict] = []
        # param -> dict of its state. Tensors hash by identity, so this keys by object.
        self.state: dict = {}
        if isinstance(params, Tensor):
            raise TypeError("params must be an iterable of parameters (e.g. model.parameters()), got a single Tensor")
        groups = list(params)
        if not groups:
            raise ValueError(f"{type(self).__name__} got an empty parameter list")
        if not isinstance(groups[0], dict):
            groups = [{"params": groups}]
        for group in groups:
            self.add_param_group(group)

    def add_param_group(self, group: dict) -> None:
        params = group["params"]
        params = [params] if isinstance(params, Tensor) else list(params)
        for p in params:
            if not isinstance(p, Tensor):
                raise TypeError(f"{type(self).__name__} can only optimize Tensors, got {type(p).__name__}")
            if not p.is_leaf:
                raise ValueError(f"{type(self).__name__} can only optimize leaf tensors (parameters), "
                                 f"got one of shape {p.shape} made by an op")
        known = {id(p) for g in self.param_groups for p in g["params"]}
        if len({id(p) for p in params}) != len(params) or any(id(p) in known for p in params):
            raise ValueError("a parameter appears more than once in the parameter groups; "
                             "each parameter may belong to one group only")
        unknown = set(group) - set(self.defaults) - {"params", "initial_lr"}
        if unknown:
            raise ValueError(f"{type(self).__name__}: unknown options in a parameter group: {sorted(unknown)}")
        self.param_groups.append({**self.defaults, **group, "params": params})

    def zero_grad(self, set_to_none: bool = True) -> None:
        zero_grads(self._params_in_order(), set_to_none)

    def step(self, closure=None):
        """Update every parameter that has a gradient. `closure` (optional) re-evaluates the
        model and returns the loss, as in PyTorch."""
        loss = None
        if closure is not None:
            with enable_grad():
                loss = closure()
        with no_grad():
            for group in self.param_groups:
                for p in group["params"]:
                    if p.grad is None:
                        continue
                    self._update(p, p.grad.data, group, self.state.setdefault(p, {}))
                    p._version += 1
        return loss

    def _update(self, param: Tensor, grad, group: dict, state: dict) -> None:
        raise NotImplementedError(f"{type(self).__name__} must implement _update")  # abstract

    # -- checkpoints ------------------------------------------------------------------------
    def _params_in_order(self) -> list:
        return [p for group in self.param_groups for p in group["params"]]

    def state_dict(self) -> dict:
        """{"state": {index: {name: Tensor | number}}, "param_groups": [{option: number, "params": [index]}]}.

        Parameters are named by their position across the groups (as PyTorch), so the dict
        holds only arrays (copies) and plain numbers: it can be written as safetensors + JSON.
        """
        params = self._params_in_order()
        state = {}
        for index, p in enumerate(params):
            if self.state.get(p):
                state[index] = {k: Tensor(v.copy()) if _is_array(v) else v for k, v in self.state[p].items()}
        groups, start = [], 0
        for group in self.param_groups:
            count = len(group["params"])
            options = {k: v for k, v in group.items() if k != "params"}
            groups.append({**options, "params": list(range(start, start + count))})
            start += count
        return {"state": state, "param_groups": groups}

    def load_state_dict(self, state_dict: dict) -> None:
        """Restore options and state saved by `state_dict` (the parameters must be the same
        ones, in the same groups and order). State arrays take each parameter's device and dtype."""
        saved_groups = state_dict["param_groups"]
        if len(saved_groups) != len(self.param_groups):
            raise ValueError(f"loaded state dict has {len(saved_groups)} parameter groups, "
                             f"but the optimizer has {len(self.param_groups)}")
        for index, (saved, group) in enumerate(zip(saved_groups, self.param_groups)):
            if len(saved["params"]) != len(group["params"]):
                raise ValueError(f"parameter group {index}: the loaded state dict has {len(saved['params'])} "
                                 f"parameters, the optimizer {len(group['params'])}")
        params = self._params_in_order()
        self.state = {}
        for key, entries in state_dict["state"].items():
            p = params[int(key)]  # int(): JSON turns the integer keys into strings
            self.state[p] = {name: _array_like(value, p) if _is_array(value) or isinstance(value, Tensor) else value
                             for name, value in entries.items()}
        for saved, group in zip(saved_groups, self.param_groups):
            group.update({k: (tuple(v) if isinstance(v, list) else v) for k, v in saved.items() if k != "params"})

    def __repr__(self) -> str:
        lines = [f"{type(self).__name__} ("]
        for index, group in enumerate(self.param_groups):
            lines.append(f"Parameter Group {index}")
            lines.extend(f"    {k}: {v}" for k, v in sorted(group.items()) if k != "params")
        return "\n".join(lines) + "\n)"


def _is_array(value) -> bool:
    return hasattr(value, "shape") and hasattr(value, "dtype") and not isinstance(value, Tensor)


def _array_like(value, param: Tensor):
    """A fresh array on param's device with param's dtype."""
    array = data_of(value)
    return param.device.xp.array(_backend.device_of(array).to_host(array), dtype=param.dtype)


def param_groups_no_decay(model, weight_decay: float) -> list[dict]:
    """Two parameter groups: weight decay for the matrices of Linear-like layers, none for
    biases, LayerNorm weights and embeddings (decaying those hurts and is not done in GPT/BERT
    training). A parameter shared by an embedding and another layer is not decayed."""
    from ..nn import Embedding, LayerNorm

    no_decay = set()
    for module in model.modules():
        if isinstance(module, (Embedding, LayerNorm)):
            no_decay.update(id(p) for p in module._parameters.values() if p is not None)
    params = [p for p in model.parameters() if p.requires_grad]
    no_decay.update(id(p) for p in params if p.ndim < 2)
    groups = [
        {"params": [p for p in params if id(p) not in no_decay], "weight_decay": weight_decay},
        {"params": [p for p in params if id(p) in no_decay], "weight_decay": 0.0},
    ]
    return [g for g in groups if g["params"]]
