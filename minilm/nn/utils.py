"""Gradient clipping, applied in place to `.grad` of parameters (after backward, before step),
and `eval_mode`, a temporary switch to evaluation mode."""

from __future__ import annotations

import math
from contextlib import contextmanager

from ..autograd import Tensor, no_grad


def _gradients(parameters) -> list:
    if isinstance(parameters, Tensor):
        parameters = [parameters]
    return [p.grad for p in parameters if p.grad is not None]


def clip_grad_norm_(parameters, max_norm: float, norm_type: float = 2.0, error_if_nonfinite: bool = False) -> Tensor:
    """Scale all gradients together so that their global norm is at most `max_norm`.

    The norm is taken over all gradients as if concatenated into one vector. As PyTorch,
    gradients are multiplied by max_norm / (norm + 1e-6) when that is below 1. Returns the
    norm before clipping, as a 0-d Tensor.
    """
    grads = _gradients(parameters)
    if not grads:
        return Tensor(0.0)
    xp = grads[0].device.xp
    norm_type = float(norm_type)
    if norm_type == math.inf:
        total = max(xp.abs(g.data).max() for g in grads)
    elif norm_type == 2.0:
        # vdot is one BLAS call per gradient, with no temporary array.
        total = xp.sqrt(sum(xp.vdot(g.data.ravel(), g.data.ravel()) for g in grads))
    else:
        total = sum((xp.abs(g.data) ** norm_type).sum() for g in grads) ** (1.0 / norm_type)
    total = Tensor(xp.asarray(total, dtype=grads[0].dtype))
    if error_if_nonfinite and not math.isfinite(total.item()):
        raise RuntimeError(f"clip_grad_norm_: the total {norm_type}-norm of the gradients is {total.item()}; "
                           "pass error_if_nonfinite=False to clip anyway")
    coefficient = max_norm / (total.item() + 1e-6)
    if coefficient < 1.0:
        with no_grad():
            for g in grads:
                g.mul_(coefficient)
    return total


def clip_grad_value_(parameters, clip_value: float) -> None:
    """Clamp every gradient element into [-clip_value, clip_value], in place."""
    for g in _gradients(parameters):
        g.device.xp.clip(g.data, -clip_value, clip_value, out=g.data)
        g._version += 1


@contextmanager
def eval_mode(model):
    """`model.eval()` for the duration of the block; afterwards every submodule gets back its
    own mode (a frozen, eval-mode part of a training model stays in eval mode)."""
    modes = [(module, module.training) for module in model.modules()]
    model.eval()
    try:
        yield model
    finally:
        for module, training in modes:
            object.__setattr__(module, "training", training)  # this module only, not its children
