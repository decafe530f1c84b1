"""Adam and AdamW (Kingma & Ba; Loshchilov & Hutter), PyTorch's formulation.

    m = beta1 m + (1 - beta1) g              v = beta2 v + (1 - beta2) g^2
    p -= lr / (1 - beta1^t) * m / (sqrt(v) / sqrt(1 - beta2^t) + eps)

Adam's weight decay is L2 regularisation: it is added to the gradient (g += wd p) and so
goes through the adaptive scaling. AdamW decouples it: p *= 1 - lr wd, before the update.

The update runs in place with `out=` operations on one scratch buffer per parameter shape,
so a step allocates nothing: on a large model the optimizer is memory-bound, and every
temporary array is an extra pass over memory.
"""

from __future__ import annotations

import math

from .. import backend as _backend
from .optimizer import Optimizer


class Adam(Optimizer):
    decoupled_weight_decay = False

    def __init__(self, params, lr: float = 1e-3, betas: tuple = (0.9, 0.999), eps: float = 1e-8,
                 weight_decay: float = 0.0):
        if lr < 0 or eps < 0 or weight_decay < 0:
            raise ValueError(
                f"{type(self).__name__}: lr ({lr}), eps ({eps}) and weight_decay ({weight_decay}) must be >= 0")
        if not all(0.0 <= b < 1.0 for b in betas):
            raise ValueError(f"{type(self).__name__}: betas must be in [0, 1), got {betas}")
        super().__init__(params, dict(lr=lr, betas=tuple(betas), eps=eps, weight_decay=weight_decay))
        self._scratch: dict = {}  # (shape, dtype) -> a reusable temporary, not part of the state

    def _buffer(self, like):
        key = (like.shape, like.dtype, _backend.device_of(like).name)
        if key not in self._scratch:
            self._scratch[key] = _backend.array_module(like).empty_like(like)
        return self._scratch[key]

    def _update(self, param, grad, group, state):
        xp = _backend.array_module(grad)
        lr, (beta1, beta2), eps, weight_decay = group["lr"], group["betas"], group["eps"], group["weight_decay"]
        p = param.data
        if not state:
            state["step"] = 0
            state["exp_avg"] = xp.zeros_like(p)
            state["exp_avg_sq"] = xp.zeros_like(p)
        state["step"] += 1
        m, v, step = state["exp_avg"], state["exp_avg_sq"], state["step"]
        decay = 1.0
        if weight_decay and self.decoupled_weight_decay:
            decay = 1 - lr * weight_decay
        elif weight_decay:
            grad = grad + weight_decay * p
        step_size = lr / (1 - beta1**step)
        inv_sqrt_bias2 = 1 / math.sqrt(1 - beta2**step)
        device = _backend.device_of(p)
        if device.adam_step(p, grad, m, v, beta1, beta2, step_size, inv_sqrt_bias2, eps, decay):
            return  # the device ran the whole update as one fused kernel
        if decay != 1.0:
            p *= decay
        tmp = self._buffer(p)
        m *= beta1  # m = beta1 m + (1 - beta1) g
        xp.multiply(grad, 1 - beta1, out=tmp)
        m += tmp
        v *= beta2  # v = beta2 v + (1 - beta2) g^2
        xp.multiply(grad, grad, out=tmp)
        tmp *= 1 - beta2
        v += tmp
        xp.sqrt(v, out=tmp)  # denominator: sqrt(v) / sqrt(1 - beta2^t) + eps
        tmp *= inv_sqrt_bias2
        tmp += eps
        xp.divide(m, tmp, out=tmp)
        tmp *= -step_size
        p += tmp


class AdamW(Adam):
    """Adam with decoupled weight decay (default 0.01, as PyTorch)."""

    decoupled_weight_decay = True

    def __init__(self, params, lr: float = 1e-3, betas: tuple = (0.9, 0.999), eps: float = 1e-8,
                 weight_decay: float = 0.01):
        super().__init__(params, lr=lr, betas=betas, eps=eps, weight_decay=weight_decay)
