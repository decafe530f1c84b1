"""Weight initialisation, in place, with PyTorch's names and formulas.

Every function fills `tensor.data` under `no_grad` (parameters are leaves that require
grad, and the autograd refuses untracked in-place edits of those otherwise) and draws from
the tensor's device generator, so `ml.manual_seed(s)` makes initialisation reproducible.
Samples are drawn in float64 and cast, so a seed gives the same values in every dtype.
"""

from __future__ import annotations

import math
import threading
from contextlib import contextmanager

import numpy as np

from ..autograd import Tensor, no_grad

_skip = threading.local()


@contextmanager
def skip_init():
    """Inside, the random initialisers leave tensors as allocated (zeros): for building a
    model whose every weight is about to be loaded (drawing 135M samples costs seconds)."""
    previous = getattr(_skip, "active", False)
    _skip.active = True
    try:
        yield
    finally:
        _skip.active = previous


def _fill(tensor: Tensor, values) -> Tensor:
    with no_grad():
        tensor.copy_(values.astype(tensor.dtype, copy=False))
    return tensor


def calculate_gain(nonlinearity: str, param: float | None = None) -> float:
    """The recommended std multiplier for a nonlinearity (as torch.nn.init.calculate_gain)."""
    if nonlinearity in ("linear", "sigmoid", "conv1d", "conv2d"):
        return 1.0
    if nonlinearity == "tanh":
        return 5.0 / 3.0
    if nonlinearity == "relu":
        return math.sqrt(2.0)
    if nonlinearity == "leaky_relu":
        slope = 0.01 if param is None else param
        return math.sqrt(2.0 / (1 + slope**2))
    raise ValueError(f"calculate_gain: unsupported nonlinearity {nonlinearity!r}")


def fan_in_and_out(tensor: Tensor) -> tuple[int, int]:
    """(fan_in, fan_out) of a weight laid out [out, in, *kernel] as PyTorch."""
    if tensor.ndim < 2:
        raise ValueError(f"fan in/out needs a tensor with at least 2 dims, got shape {tensor.shape}")
    receptive = int(np.prod(tensor.shape[2:])) if tensor.ndim > 2 else 1
    return tensor.shape[1] * receptive, tensor.shape[0] * receptive


def uniform_(tensor: Tensor, a: float = 0.0, b: float = 1.0) -> Tensor:
    """Fill with samples from U(a, b)."""
    if getattr(_skip, "active", False):
        return tensor
    values = tensor.device.rng.random(tensor.shape, dtype=np.float64)
    return _fill(tensor, values * (b - a) + a)


def normal_(tensor: Tensor, mean: float = 0.0, std: float = 1.0) -> Tensor:
    """Fill with samples from N(mean, std^2)."""
    if getattr(_skip, "active", False):
        return tensor
    values = tensor.device.rng.standard_normal(tensor.shape, dtype=np.float64)
    return _fill(tensor, values * std + mean)


def zeros_(tensor: Tensor) -> Tensor:
    with no_grad():
        return tensor.zero_()


def ones_(tensor: Tensor) -> Tensor:
    with no_grad():
        return tensor.fill_(1.0)


def constant_(tensor: Tensor, value: float) -> Tensor:
    with no_grad():
        return tensor.fill_(value)


def xavier_uniform_(tensor: Tensor, gain: float = 1.0) -> Tensor:
    """U(-a, a) with a = gain * sqrt(6 / (fan_in + fan_out)) (Glorot & Bengio)."""
    fan_in, fan_out = fan_in_and_out(tensor)
    bound = gain * math.sqrt(6.0 / (fan_in + fan_out))
    return uniform_(tensor, -bound, bound)


def xavier_normal_(tensor: Tensor, gain: float = 1.0) -> Tensor:
    """N(0, std^2) with std = gain * sqrt(2 / (fan_in + fan_out))."""
    fan_in, fan_out = fan_in_and_out(tensor)
    return normal_(tensor, 0.0, gain * math.sqrt(2.0 / (fan_in + fan_out)))


def _kaiming_std(tensor: Tensor, a: float, mode: str, nonlinearity: str) -> float:
    if mode not in ("fan_in", "fan_out"):
        raise ValueError(f"kaiming init: mode must be 'fan_in' or 'fan_out', got {mode!r}")
    fan_in, fan_out = fan_in_and_out(tensor)
    return calculate_gain(nonlinearity, a) / math.sqrt(fan_in if mode == "fan_in" else fan_out)


def kaiming_uniform_(tensor: Tensor, a: float = 0.0, mode: str = "fan_in", nonlinearity: str = "leaky_relu") -> Tensor:
    """U(-b, b) with b = sqrt(3) * gain / sqrt(fan) (He et al.)."""
    bound = math.sqrt(3.0) * _kaiming_std(tensor, a, mode, nonlinearity)
    return uniform_(tensor, -bound, bound)


def kaiming_normal_(tensor: Tensor, a: float = 0.0, mode: str = "fan_in", nonlinearity: str = "leaky_relu") -> Tensor:
    """N(0, std^2) with std = gain / sqrt(fan)."""
    return normal_(tensor, 0.0, _kaiming_std(tensor, a, mode, nonlinearity))
