"""minilm: a from-scratch deep-learning framework for language models.

    import minilm as ml
    x = ml.tensor([[1.0, 2.0]], requires_grad=True)
    y = (x * x).sum()
    y.backward()
    x.grad  # tensor([[2., 4.]])
"""

from __future__ import annotations

import numpy as _np

from . import amp  # ml.amp.autocast, ml.amp.GradScaler
from . import backend as _backend
from .autograd import (
    Function,
    GraphError,
    Tensor,
    bool_,
    enable_grad,
    float16,
    float32,
    float64,
    get_default_dtype,
    int32,
    int64,
    is_grad_enabled,
    no_grad,
    set_default_dtype,
    set_grad_enabled,
    uint8,
)
from .backend import BackendError, default_device, get_device, manual_seed, set_backend
from .ops import (
    abs,
    astype,
    broadcast_to,
    clip,
    concatenate,
    exp,
    expand,
    flatten,
    log,
    masked_fill,
    matmul,
    max,
    maximum,
    mean,
    min,
    minimum,
    permute,
    relu,
    reshape,
    sigmoid,
    split,
    sqrt,
    squeeze,
    stack,
    sum,
    swapaxes,
    tanh,
    transpose,
    unsqueeze,
    var,
    where,
)

__version__ = "0.1.0"


def memory_info(device=None) -> dict:
    """Memory held by a device's pool, e.g. {"used_bytes": ..., "total_bytes": ...} on CUDA."""
    return get_device(device).memory_info()


def tensor(data, dtype=None, device=None, requires_grad: bool = False) -> Tensor:
    """A new tensor from Python numbers, lists or arrays (float data -> default dtype).

    It goes to `device`, by default the current backend's device (so with
    MINILM_BACKEND=cupy, `ml.tensor(numpy_array)` lands on the GPU).
    """
    if isinstance(data, Tensor):
        data = data.data
    return Tensor(data, requires_grad=requires_grad, dtype=dtype, device=device or default_device())


def _factory_dtype(dtype):
    return _np.dtype(dtype) if dtype is not None else get_default_dtype()


def zeros(*shape, dtype=None, device=None, requires_grad: bool = False) -> Tensor:
    shape = _shape_arg(shape)
    xp = get_device(device).xp
    return Tensor(xp.zeros(shape, dtype=_factory_dtype(dtype)), requires_grad=requires_grad)


def ones(*shape, dtype=None, device=None, requires_grad: bool = False) -> Tensor:
    shape = _shape_arg(shape)
    xp = get_device(device).xp
    return Tensor(xp.ones(shape, dtype=_factory_dtype(dtype)), requires_grad=requires_grad)


def full(shape, value, dtype=None, device=None, requires_grad: bool = False) -> Tensor:
    xp = get_device(device).xp
    return Tensor(xp.full(_shape_arg((shape,)), value, dtype=_factory_dtype(dtype)), requires_grad=requires_grad)


def zeros_like(t: Tensor, dtype=None) -> Tensor:
    return Tensor(t.device.xp.zeros(t.shape, dtype=dtype or t.dtype))


def ones_like(t: Tensor, dtype=None) -> Tensor:
    return Tensor(t.device.xp.ones(t.shape, dtype=dtype or t.dtype))


def arange(start, stop=None, step=1, dtype=None, device=None) -> Tensor:
    xp = get_device(device).xp
    return Tensor(xp.arange(start, stop, step, dtype=dtype or _np.int64))


def randn(*shape, dtype=None, device=None, requires_grad: bool = False) -> Tensor:
    """Standard normal samples from the device's generator (seeded by ml.manual_seed)."""
    device = get_device(device)
    values = device.rng.standard_normal(_shape_arg(shape), dtype=_np.float64).astype(_factory_dtype(dtype))
    return Tensor(values, requires_grad=requires_grad)


def rand(*shape, dtype=None, device=None, requires_grad: bool = False) -> Tensor:
    """Uniform samples in [0, 1) from the device's generator."""
    device = get_device(device)
    values = device.rng.random(_shape_arg(shape), dtype=_np.float64).astype(_factory_dtype(dtype))
    return Tensor(values, requires_grad=requires_grad)


def randint(low, high, shape, device=None) -> Tensor:
    device = get_device(device)
    return Tensor(device.rng.integers(low, high, size=_shape_arg((shape,)), dtype=_np.int64))


def _shape_arg(shape) -> tuple:
    if len(shape) == 1 and not isinstance(shape[0], (int, _np.integer)):
        return tuple(shape[0])
    return tuple(shape)


def save(tensors, path, metadata: dict | None = None) -> None:
    """Write a dict name -> Tensor (or array) to `path` in the safetensors format, atomically."""
    from .serialization import save_file

    save_file({name: t.numpy() if isinstance(t, Tensor) else t for name, t in tensors.items()}, path, metadata)


def load(path, device=None) -> dict:
    """Read a safetensors file into a dict name -> Tensor (on `device`, default the current one).

    Never unpickles: the file holds only a JSON header and raw little-endian buffers.
    """
    from .serialization import load_file

    target = get_device(device)
    return {name: Tensor(target.asarray(array)) for name, array in load_file(path).items()}
