"""Adam and AdamW (Kingma & Ba; Loshchilov & Hutter), PyTorch's formulation.

    m = beta1 m + (1 - beta1) g              v = beta2 v + (1 - beta2) g^2
    p -= lr / (1 - beta1^t) * m / (sqrt(v) / sqrt(1 - beta2^t) + eps)

Adam's weight decay is L2 regularisation: it is added to the gradient (g += wd p) and so
goes through the adaptive scaling. AdamW decouples it: p *= 1 - lr wd, before the update.

The update runs in place with `out=` operations on one scratch buffer per parameter shape,
so a step allocates nothing: on a large model the optimizer is memory-bound, and every
temporary array is an extra pass over memory. With flat=True the same operations run over
one buffer holding all parameters (see `minilm.optim.flat`).
"""

from __future__ import annotations

import math
import os
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from .. import backend as _backend
from ..autograd import enable_grad, no_grad
from .flat import FlatParameters
from .optimizer import Optimizer

# Elements per piece of the flat CPU update: 131072 float32 = 512 KiB per array, so that a
# piece's p, g, m, v and scratch stay in cache while a dozen NumPy operations pass over them.
_CHUNK = 131072
_pool: ThreadPoolExecutor | None = None


def _cpu_threads() -> int:
    """Threads for the flat CPU update. NumPy releases the GIL inside its loops, so separate
    stretches of the buffer update in parallel. OMP_NUM_THREADS, when set, caps the count as
    it caps BLAS (e.g. one thread per MPI rank)."""
    limit = os.environ.get("OMP_NUM_THREADS", "")
    count = os.cpu_count() or 1
    return max(1, min(count, int(limit))) if limit.isdigit() else min(count, 8)


def _thread_pool() -> ThreadPoolExecutor:
    global _pool
    if _pool is None:
        _pool = ThreadPoolExecutor(_cpu_threads(), thread_name_prefix="minilm-adam")
    return _pool


class Adam(Optimizer):
    """flat=True: keep all parameters, gradients and moments in one buffer each (see
    `minilm.optim.flat`) and update them in one pass: one fused kernel on the GPU, cache-sized
    chunks on the CPU. The numbers are bit for bit those of flat=False. Every parameter is
    then stepped every time: one that received no gradient counts as a zero gradient (its
    moments decay and weight decay applies), where flat=False skips it."""

    decoupled_weight_decay = False

    def __init__(self, params, lr: float = 1e-3, betas: tuple = (0.9, 0.999), eps: float = 1e-8,
                 weight_decay: float = 0.0, flat: bool = False):
        if lr < 0 or eps < 0 or weight_decay < 0:
            raise ValueError(
                f"{type(self).__name__}: lr ({lr}), eps ({eps}) and weight_decay ({weight_decay}) must be >= 0")
        if not all(0.0 <= b < 1.0 for b in betas):
            raise ValueError(f"{type(self).__name__}: betas must be in [0, 1), got {betas}")
        super().__init__(params, dict(lr=lr, betas=tuple(betas), eps=eps, weight_decay=weight_decay))
        self._scratch: dict = {}  # (shape, dtype) -> a reusable temporary, not part of the state
        self.flat = FlatParameters(self.param_groups) if flat else None
        if self.flat is not None:
            xp = _backend.array_module(self.flat.data)
            self._flat_m = xp.zeros_like(self.flat.data)
            self._flat_v = xp.zeros_like(self.flat.data)
            self._chunk_scratch: list = []

    def _buffer(self, like):
        key = (like.shape, like.dtype, _backend.device_of(like).name)
        if key not in self._scratch:
            self._scratch[key] = _backend.array_module(like).empty_like(like)
        return self._scratch[key]

    def _coefficients(self, group: dict, step: int) -> tuple:
        """(decay, step_size, 1 / sqrt(1 - beta2^t)) for one step of `group`."""
        lr, weight_decay = group["lr"], group["weight_decay"]
        beta1, beta2 = group["betas"]
        decay = 1 - lr * weight_decay if weight_decay and self.decoupled_weight_decay else 1.0
        return decay, lr / (1 - beta1**step), 1 / math.sqrt(1 - beta2**step)

    def _adam(self, p, grad, m, v, group, step, scratch=None) -> None:
        """The update of arrays p, m, v in place from grad. scratch: a temporary of p's shape
        (default: the optimizer's buffer for that shape; a fused device kernel needs none)."""
        xp = _backend.array_module(p)
        (beta1, beta2), eps, weight_decay = group["betas"], group["eps"], group["weight_decay"]
        decay, step_size, inv_sqrt_bias2 = self._coefficients(group, step)
        if weight_decay and not self.decoupled_weight_decay:
            grad = grad + weight_decay * p  # Adam's L2 term goes through the adaptive scaling
        if _backend.device_of(p).adam_step(p, grad, m, v, beta1, beta2, step_size, inv_sqrt_bias2, eps, decay):
            return  # the device ran the whole update as one fused kernel
        tmp = self._buffer(p) if scratch is None else scratch
        if decay != 1.0:
            p *= decay
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

    def _update(self, param, grad, group, state):
        p = param.data
        if not state:
            xp = _backend.array_module(p)
            state["step"] = 0
            state["exp_avg"] = xp.zeros_like(p)
            state["exp_avg_sq"] = xp.zeros_like(p)
        state["step"] += 1
        self._adam(p, grad, state["exp_avg"], state["exp_avg_sq"], group, state["step"])

    # -- the flat path ---------------------------------------------------------------------------
    def step(self, closure=None):
        if self.flat is None:
            return super().step(closure)
        loss = None
        if closure is not None:
            with enable_grad():
                loss = closure()
        with no_grad():
            flat = self.flat
            flat.attach()
            index = 0
            for group in self.param_groups:
                # Parameters with equal step counts (all of them, unless a checkpoint from a
                # flat=False run said otherwise) are updated together as one range.
                runs = []
                for p in group["params"]:
                    state = self.state.get(p)
                    if not state:
                        state = self.state[p] = {"step": 0, "exp_avg": flat.view(self._flat_m, index),
                                                 "exp_avg_sq": flat.view(self._flat_v, index)}
                    state["step"] += 1
                    a, b = flat.ranges[index]
                    if runs and runs[-1][2] == state["step"] and runs[-1][1] == a:
                        runs[-1][1] = b
                    else:
                        runs.append([a, b, state["step"]])
                    p._version += 1
                    index += 1
                for a, b, step in runs:
                    self._flat_update(a, b, group, step)
        return loss

    def _flat_update(self, start: int, end: int, group: dict, step: int) -> None:
        arrays = (self.flat.data, self.flat.grads, self._flat_m, self._flat_v)
        if _backend.device_of(self.flat.data).name != "cpu":
            self._adam(*(a[start:end] for a in arrays), group, step)  # one fused kernel
            return
        chunks = -(-(end - start) // _CHUNK)
        threads = min(_cpu_threads(), chunks)
        per_thread = -(-chunks // threads) * _CHUNK  # whole chunks per thread

        def update(first: int, last: int, scratch) -> None:
            for a in range(first, last, _CHUNK):
                b = min(a + _CHUNK, last)
                p, g, m, v = (array[a:b] for array in arrays)
                self._adam(p, g, m, v, group, step, scratch[: b - a])

        pieces = [(a, min(a + per_thread, end)) for a in range(start, end, per_thread)]
        while len(self._chunk_scratch) < len(pieces):  # one scratch array per thread
            self._chunk_scratch.append(np.empty(_CHUNK, dtype=self.flat.data.dtype))
        if len(pieces) == 1:
            update(*pieces[0], self._chunk_scratch[0])
        else:
            starts, ends = zip(*pieces)
            list(_thread_pool().map(update, starts, ends, self._chunk_scratch))  # list(): re-raise errors

    def zero_grad(self, set_to_none: bool = True) -> None:
        """flat=True: one fill of the gradient buffer (the `.grad` views stay; set_to_none
        is ignored). Otherwise as `Optimizer.zero_grad`."""
        if self.flat is None:
            return super().zero_grad(set_to_none)
        self.flat.zero_grad()

    def load_state_dict(self, state_dict: dict) -> None:
        super().load_state_dict(state_dict)
        if self.flat is None:
            return
        # The loaded moments are fresh arrays: copy them into the flat buffers, whose views
        # the state then holds again. Parameters without saved state start from zero.
        self._flat_m[...] = 0
        self._flat_v[...] = 0
        for index, p in enumerate(self.flat.params):
            state = self.state.get(p)
            if not state:
                continue
            for name, flat_array in (("exp_avg", self._flat_m), ("exp_avg_sq", self._flat_v)):
                view = self.flat.view(flat_array, index)
                view[...] = state[name]
                state[name] = view


class AdamW(Adam):
    """Adam with decoupled weight decay (default 0.01, as PyTorch)."""

    decoupled_weight_decay = True

    def __init__(self, params, lr: float = 1e-3, betas: tuple = (0.9, 0.999), eps: float = 1e-8,
                 weight_decay: float = 0.01, flat: bool = False):
        super().__init__(params, lr=lr, betas=betas, eps=eps, weight_decay=weight_decay, flat=flat)
