"""Activation checkpointing: keep a block's inputs, not its activations, and recompute them in backward.

A training step normally keeps every intermediate array of the forward pass until backward
has used it: for a Transformer that is dozens of [B, T, C]-sized arrays per block (and
[B, H, T, T] attention weights). `checkpoint(fn, *args)` runs fn without recording a graph,
so those arrays are freed at once, and keeps only fn's inputs. When backward reaches the
outputs it runs fn again, this time recording, and backpropagates through that recording:
one extra forward per block buys memory that no longer grows with the number of blocks.

The recomputation must equal the first run, so the random state (dropout) is saved before
the first run and put back for the second (and the caller's random state restored after).

Gradients for the weights fn uses reach their `.grad` from the inner backward pass, as in
PyTorch's reentrant checkpoint. Backward through a checkpoint cannot itself be recorded
(no create_graph / double backward).

    y = nn.checkpoint(block, x)                       # any callable on Tensors
    nn.checkpoint_blocks(model.blocks)                # every call of each block is checkpointed
    model.gradient_checkpointing_enable()             # the same, for Llama and GPT
"""

from __future__ import annotations

from ..autograd import Function, GraphError, Tensor, enable_grad, is_grad_enabled, no_grad
from .module import Module


class _Checkpoint(Function):
    """fn's Tensor outputs from its Tensor inputs; the module's trainable weights are listed as
    inputs too, so the node is recorded (and backward reaches it) even when no activation
    entering it requires grad, e.g. the frozen embeddings' output under LoRA."""

    def __init__(self, fn, args, kwargs, tensor_slots, num_weights, device):
        self.fn, self.args, self.kwargs = fn, args, kwargs
        self.tensor_slots = tensor_slots  # where the Tensor inputs sit: an index into args or a kwargs name
        self.needs_grad = [_get(args, kwargs, slot).requires_grad for slot in tensor_slots]
        self.num_weights, self.device = num_weights, device

    def forward(self, *arrays):
        self.saved = arrays[: len(self.tensor_slots)]  # the only activations kept for backward
        self.rng_state = self.device.copy_rng(self.device.rng)  # dropout must draw the same numbers again
        with no_grad():
            args, kwargs, _ = self._arguments(self.saved, record=False)
            result = self.fn(*args, **kwargs)
        self.structure, outputs = _flatten(result)
        return tuple(t.data for t in outputs)

    def _arguments(self, arrays, record: bool):
        """fn's arguments with fresh leaf Tensors in the Tensor slots (and those leaves)."""
        args, kwargs, leaves = list(self.args), dict(self.kwargs), []
        for slot, array, needs_grad in zip(self.tensor_slots, arrays, self.needs_grad):
            leaf = Tensor(array, requires_grad=record and needs_grad)
            leaves.append(leaf)
            if isinstance(slot, int):
                args[slot] = leaf
            else:
                kwargs[slot] = leaf
        return args, kwargs, leaves

    def backward(self, *grads):
        if is_grad_enabled():
            raise GraphError("backward through nn.checkpoint cannot be recorded (create_graph=True); "
                             "run that part without checkpointing")
        callers_rng, self.device.rng = self.device.rng, self.device.copy_rng(self.rng_state)
        try:
            with enable_grad():
                args, kwargs, leaves = self._arguments(self.saved, record=True)
                _, outputs = _flatten(self.fn(*args, **kwargs))
        finally:
            self.device.rng = callers_rng
        recorded = [(y, g) for y, g in zip(outputs, grads) if y.requires_grad]
        if len(recorded) == 1:
            recorded[0][0].backward(Tensor(recorded[0][1]))
        elif recorded:  # one pass from all outputs: the gradient of sum_i <y_i, g_i> is sum_i J_i^T g_i
            with enable_grad():
                total = (recorded[0][0] * Tensor(recorded[0][1])).sum()
                for y, g in recorded[1:]:
                    total = total + (y * Tensor(g)).sum()
            total.backward()
        return tuple(None if leaf.grad is None else leaf.grad.data for leaf in leaves) + (None,) * self.num_weights


def _get(args, kwargs, slot):
    return args[slot] if isinstance(slot, int) else kwargs[slot]


def _flatten(result):
    """(how to rebuild it, its Tensors) for fn's result: a Tensor, or a tuple/list of Tensors and other values."""
    if isinstance(result, Tensor):
        return None, [result]
    if isinstance(result, (tuple, list)):
        slots = [i for i, value in enumerate(result) if isinstance(value, Tensor)]
        return (type(result), list(result), slots), [result[i] for i in slots]
    raise TypeError(f"checkpoint: fn must return a Tensor or a tuple of values, got {type(result).__name__}")


def _rebuild(structure, tensors):
    if structure is None:
        return tensors[0]
    kind, values, slots = structure
    values = list(values)
    for slot, tensor in zip(slots, tensors):
        values[slot] = tensor
    return kind(values)


def checkpoint(fn, *args, **kwargs):
    """fn(*args, **kwargs), keeping only its inputs for backward and recomputing the rest there.

    Tensor arguments (positional or keyword) are fn's differentiable inputs; other arguments
    (masks as arrays, flags, rotary tables) are passed through as they are. fn returns a Tensor
    or a tuple (Tensors and other values). Weights fn reads get their gradients; when fn is a
    Module (or a bound method of one), its trainable parameters also make sure the checkpoint
    is recorded when no input requires grad.
    Outside of recording (no_grad, or nothing requires grad) it is simply fn(*args, **kwargs).
    """
    if not is_grad_enabled():
        return fn(*args, **kwargs)
    slots = [i for i, value in enumerate(args) if isinstance(value, Tensor)]
    slots += [name for name, value in kwargs.items() if isinstance(value, Tensor)]
    owner = getattr(fn, "__self__", fn)
    weights = [p for p in owner.parameters() if p.requires_grad] if isinstance(owner, Module) else []
    inputs = [_get(args, kwargs, slot) for slot in slots]
    if not inputs or (not any(t.requires_grad for t in inputs) and not weights):
        return fn(*args, **kwargs)
    node = _Checkpoint(fn, args, kwargs, slots, len(weights), inputs[0].device)
    outputs = node(*inputs, *weights)
    return _rebuild(node.structure, list(outputs) if isinstance(outputs, tuple) else [outputs])


def checkpoint_blocks(blocks) -> None:
    """Checkpoint every call of each module in `blocks` (e.g. a model's ModuleList of Transformer
    blocks) while recording a graph; under no_grad (generation) they run as before."""
    for block in blocks:
        if "forward" not in block.__dict__:  # not already wrapped
            plain_forward = block.forward  # the class's forward, bound to this block
            object.__setattr__(block, "forward", _checkpointed(plain_forward))


def _checkpointed(forward):
    def checkpointed_forward(*args, **kwargs):
        return checkpoint(forward, *args, **kwargs)

    checkpointed_forward.__wrapped__ = forward
    return checkpointed_forward


def uncheckpoint_blocks(blocks) -> None:
    for block in blocks:
        block.__dict__.pop("forward", None)


class GradientCheckpointingMixin:
    """`model.gradient_checkpointing_enable()` / `_disable()` for models whose Transformer blocks
    are the ModuleList `self.blocks` (GPT, Llama): each block's activations are recomputed in backward."""

    def gradient_checkpointing_enable(self) -> None:
        checkpoint_blocks(self.blocks)

    def gradient_checkpointing_disable(self) -> None:
        uncheckpoint_blocks(self.blocks)
