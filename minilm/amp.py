"""Mixed precision: float16 compute, float32 master weights, dynamic loss scaling.

    scaler = ml.amp.GradScaler()
    with ml.amp.autocast():                  # the forward pass: matmuls in float16
        _, loss = model(ids, targets=targets)
    scaler.scale(loss).backward()            # gradients of loss * scale
    scaler.unscale_(optimizer)               # back to true gradients (before clipping)
    nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    scaler.step(optimizer)                   # skipped if a gradient overflowed
    scaler.update()                          # adapt the scale

Why each piece is there:

- **autocast**: the parameters stay float32 (they are the master weights the optimizer
  updates: an update of 1e-4 relative to a weight would round away in float16, whose
  spacing near 1 is 1e-3). Inside `autocast()` the GEMM-bound ops cast their inputs to
  float16, which is where a GPU's tensor cores give their speed; the cast is an op, so the
  gradient flows back to the float32 parameter as float32. Ops whose sums or exponentials
  lose too much in float16 (softmax, layer norm, cross-entropy, exp, log, pow, sum) cast
  their inputs up to float32 instead. Everything else runs in the dtype it is given (NumPy's
  promotion: float16 + float32 is float32, so the residual stream stays float32).
- **Loss scaling**: float16 gradients smaller than about 6e-8 flush to zero. Multiplying the
  loss by a large scale S (65536 at first) multiplies every gradient by S, lifting them
  out of that range; `unscale_` divides the float32 parameter gradients by S again.
- **Dynamic**: too large an S overflows a gradient to inf. Then the step is skipped and S
  halves; after `growth_interval` steps without overflow S doubles, so it settles just
  below where overflow starts.

On the CPU NumPy emulates float16 in software, so this is much slower than float32 there;
it exists for the GPU (CuPy), and runs on the CPU so that it can be tested anywhere.
"""

from __future__ import annotations

import math
from contextlib import contextmanager

import numpy as np

from .autograd import _state

# Which ops change dtype under autocast is declared by each rule's class
# (`Function.autocast_policy`: "low" for the GEMMs, "float32" for long sums and
# exponentials); docs/rules.md lists them all. The rest keep the dtypes they are given.
SUPPORTED_DTYPES = (np.dtype(np.float16),)  # NumPy has no bfloat16


@contextmanager
def autocast(dtype="float16", enabled: bool = True):
    """Run the ops inside in mixed precision (see the module docstring). Thread-local, like
    grad mode; nests, and `enabled=False` switches it off inside an outer autocast."""
    dtype = np.dtype(dtype)
    if dtype not in SUPPORTED_DTYPES:
        raise ValueError(f"autocast: dtype must be float16, got {dtype}")
    previous = _state.autocast_dtype
    _state.autocast_dtype = dtype if enabled else None
    try:
        yield
    finally:
        _state.autocast_dtype = previous


def is_autocast_enabled() -> bool:
    return _state.autocast_dtype is not None


class GradScaler:
    """Dynamic loss scaling, with PyTorch's names, defaults and order of calls.

    enabled=False turns every method into the plain float32 behaviour (scale 1, no checks),
    so one training loop serves both precisions.
    """

    def __init__(self, init_scale: float = 2.0**16, growth_factor: float = 2.0, backoff_factor: float = 0.5,
                 growth_interval: int = 2000, enabled: bool = True):
        if init_scale <= 0 or not math.isfinite(init_scale):
            raise ValueError(f"GradScaler: init_scale must be a positive finite number, got {init_scale}")
        if growth_factor <= 1.0:
            raise ValueError(f"GradScaler: growth_factor must be > 1, got {growth_factor}")
        if not 0.0 < backoff_factor < 1.0:
            raise ValueError(f"GradScaler: backoff_factor must be in (0, 1), got {backoff_factor}")
        if growth_interval < 1:
            raise ValueError(f"GradScaler: growth_interval must be >= 1, got {growth_interval}")
        self.enabled = enabled
        self._scale = float(init_scale)
        self.growth_factor, self.backoff_factor, self.growth_interval = growth_factor, backoff_factor, growth_interval
        self._growth_tracker = 0  # steps since the last overflow or growth
        self._found_inf: dict[int, bool] = {}  # id(optimizer) -> overflow seen by unscale_
        self.skipped_steps = 0  # optimizer steps skipped for overflow, over the scaler's life

    def get_scale(self) -> float:
        return self._scale if self.enabled else 1.0

    def scale(self, loss):
        """loss * scale (a Tensor, so `.backward()` gives scaled gradients)."""
        return loss * self._scale if self.enabled else loss

    def unscale_(self, optimizer) -> None:
        """Divide the gradients of `optimizer`'s parameters by the scale, in place, and note
        whether any is inf or NaN. Call it before anything that reads gradient values
        (clipping); `step` calls it if you did not."""
        if not self.enabled:
            return
        if id(optimizer) in self._found_inf:
            raise RuntimeError("GradScaler.unscale_() was already called for this optimizer since the last update()")
        flat = getattr(optimizer, "flat", None)
        if flat is not None:
            flat.attach()
            grads = [flat.grads]
        else:
            grads = [p.grad.data for group in optimizer.param_groups for p in group["params"] if p.grad is not None]
        inverse = 1.0 / self._scale
        total = 0.0
        for g in grads:
            g *= inverse
            # The sum is finite exactly when every element is (barring the sum itself
            # passing 3e38, which no usable gradient does; that would only skip a step).
            # One device scalar per array and a single read at the end: one GPU sync.
            total = total + g.sum()
        self._found_inf[id(optimizer)] = not math.isfinite(float(total))

    def step(self, optimizer, closure=None):
        """optimizer.step() unless the gradients overflowed (then the step is skipped)."""
        if not self.enabled:
            return optimizer.step(closure)
        if closure is not None:
            raise ValueError("GradScaler.step does not take a closure: the gradients must be scaled and unscaled")
        if id(optimizer) not in self._found_inf:
            self.unscale_(optimizer)
        if self._found_inf[id(optimizer)]:
            self.skipped_steps += 1
            return None
        return optimizer.step()

    def update(self) -> None:
        """Adapt the scale after a step: back off on overflow, grow after a clean stretch."""
        if not self.enabled:
            return
        if not self._found_inf:
            raise RuntimeError("GradScaler.update() without a step: call scaler.step(optimizer) first")
        if any(self._found_inf.values()):
            self._scale *= self.backoff_factor
            self._growth_tracker = 0
        else:
            self._growth_tracker += 1
            if self._growth_tracker == self.growth_interval:
                self._scale *= self.growth_factor
                self._growth_tracker = 0
        self._found_inf.clear()

    # -- checkpoints ------------------------------------------------------------------------
    def state_dict(self) -> dict:
        """Plain numbers (JSON), enough to continue exactly."""
        return {"scale": self._scale, "growth_factor": self.growth_factor, "backoff_factor": self.backoff_factor,
                "growth_interval": self.growth_interval, "growth_tracker": self._growth_tracker,
                "skipped_steps": self.skipped_steps} if self.enabled else {}

    def load_state_dict(self, state: dict) -> None:
        if not self.enabled:
            return
        if not state:
            raise ValueError("GradScaler.load_state_dict: the saved state is empty (it came from a disabled scaler)")
        self._scale = float(state["scale"])
        self.growth_factor, self.backoff_factor = float(state["growth_factor"]), float(state["backoff_factor"])
        self.growth_interval = int(state["growth_interval"])
        self._growth_tracker = int(state["growth_tracker"])
        self.skipped_steps = int(state.get("skipped_steps", 0))


__all__ = ["GradScaler", "autocast", "is_autocast_enabled"]
