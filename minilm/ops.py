"""Differentiable operations: every op's forward and backward side by side.

Each op is a `Function` subclass (the rule) plus a lowercase wrapper (the public op), and
the wrapper is registered in `OPS` so that the test-suite can check that every public op
has a gradient check. Backward rules are written with operations that arrays and Tensors
share, so they can themselves be differentiated (`create_graph=True`). A rule returns the
natural gradient of each input; the engine sums it over broadcast dimensions (`sum_to`).
The fused rules built from these primitives live in functional.py; docs/rules.md indexes
all of them on one screen.

This module defines ops named like Python builtins (sum, max, min, abs, pow); the
builtins themselves are reached as `builtins.max` here.

Conventions at kinks and ties (chosen once, tested in tests/test_ops.py):
- relu'(0) = 0, abs'(0) = 0 (the subgradient PyTorch uses).
- clip(x, lo, hi): gradient 1 where lo <= x <= hi (boundaries included), else 0.
- maximum/minimum with a == b: the gradient is split equally, half to each side.
- max/min reductions with ties: the gradient is split equally among all tied maxima.
"""

from __future__ import annotations

import builtins
import math
import numbers

import numpy as np

from . import backend as _backend
from . import parallel
from .autograd import Function, Tensor, _to_array, data_of, is_grad_enabled

OPS: dict[str, callable] = {}


def register(name: str):
    """Add a public differentiable op to the registry (tests walk it)."""

    def decorate(fn):
        OPS[name] = fn
        return fn

    return decorate


# ---------------------------------------------------------------------------------------
# Helpers
# ---------------------------------------------------------------------------------------
def as_tensor(value, like: Tensor) -> Tensor:
    """`value` as a Tensor on `like`'s device; Python numbers take `like`'s dtype."""
    if isinstance(value, Tensor):
        return value
    if isinstance(value, numbers.Number) and not isinstance(value, np.generic):
        if like.dtype.kind == "f" or (isinstance(value, numbers.Integral) and like.dtype.kind in "iu"):
            return Tensor(like.device.xp.asarray(value, dtype=like.dtype))
    return Tensor(_to_array(value, device=like.device))


def _normalize_axis(axis, ndim: int):
    """axis as a sorted tuple of non-negative ints (None means all axes)."""
    if axis is None:
        return tuple(range(ndim))
    axes = (axis,) if isinstance(axis, numbers.Integral) else tuple(axis)
    normalized = []
    for a in axes:
        if not -ndim <= a < builtins.max(ndim, 1):
            raise ValueError(f"axis {a} is out of range for a tensor with {ndim} dimensions")
        normalized.append(a % builtins.max(ndim, 1))
    return tuple(sorted(normalized))


def _keepdims_shape(shape, axes) -> tuple:
    return tuple(1 if i in axes else n for i, n in enumerate(shape))


# Sums by BLAS. NumPy's reductions pay for every row they reduce: summing rows of 64 float32
# runs at ~1.7 ns an element, while the same sums as a product with a vector of ones run in
# BLAS's SIMD kernels (on its threads) at ~0.1 ns ([4096, 64]: 22 us against 109 us; [1024,
# 256] summed down to [256]: 16 us against 36 us). The sums on every training step's path
# (softmax, layer norm, cross-entropy, bias gradients) take this route when the array allows
# it; the results equal NumPy's up to float rounding. Tensors and other arrays (CuPy,
# float16, strided views) take the plain reduction.
def _blas_summable(x) -> bool:
    return (isinstance(x, np.ndarray) and x.dtype in (np.float32, np.float64) and x.size > 0
            and x.flags.c_contiguous)


def sum_last_axis(x):
    """x.sum(axis=-1, keepdims=True) for an array or a Tensor: [..., C] -> [..., 1]."""
    if not _blas_summable(x):
        return x.sum(axis=-1, keepdims=True)
    ones = np.ones(x.shape[-1], dtype=x.dtype)
    return (x.reshape(-1, x.shape[-1]) @ ones).reshape(x.shape[:-1] + (1,))  # [rows, C] @ [C]


def sum_leading_axes(x, lead: int):
    """x summed over its first `lead` axes, for an array: [a, b, ..., *rest] -> rest."""
    if not _blas_summable(x):
        return x.sum(axis=tuple(range(lead)))
    rest = x.shape[lead:]
    rows = x.reshape(-1, math.prod(rest))  # [a * b * ..., prod(rest)]; math.prod, not np.prod (3 us a call)
    return (np.ones(rows.shape[0], dtype=x.dtype) @ rows).reshape(rest)


# Dual helpers: gradient rules call these on arrays (ordinary backward) or on Tensors
# (recorded backward, create_graph=True); each does the same thing either way.
def _apply(fn: Function, *grads):
    """Run the rule `fn` on gradients: recorded if they are Tensors, else on the arrays."""
    return fn(*grads) if isinstance(grads[0], Tensor) else fn.forward(*grads)


def _sum_to(grad, shape: tuple):
    return grad if grad.shape == shape else _apply(SumTo(shape), grad)


def _broadcast_to(grad, shape: tuple):
    if isinstance(grad, Tensor):
        return broadcast_to(grad, shape)
    return _xp(grad).broadcast_to(grad, shape)


def _exp(v):
    return exp(v) if isinstance(v, Tensor) else _xp(v).exp(v)


def _log(v):
    return log(v) if isinstance(v, Tensor) else _xp(v).log(v)


def _constant(array, like):
    """A constant (a mask, a shared weight) in the form of `like`: array or Tensor."""
    return Tensor(array) if isinstance(like, Tensor) else array


# ---------------------------------------------------------------------------------------
# Elementwise arithmetic (broadcasting)
# ---------------------------------------------------------------------------------------
class Add(Function):
    def forward(self, a, b):
        return a + b

    def backward(self, gy):
        return gy, gy


class Sub(Function):
    def forward(self, a, b):
        return a - b

    def backward(self, gy):
        return gy, (-gy if self.inputs[1].requires_grad else None)


class Mul(Function):
    def forward(self, a, b):
        return a * b

    def backward(self, gy):
        a, b = self.inputs
        ga = gy * self.value(b) if a.requires_grad else None
        gb = gy * self.value(a) if b.requires_grad else None
        return ga, gb


class Div(Function):
    def forward(self, a, b):
        return a / b

    def backward(self, gy):
        a, b = self.inputs
        a_value, b_value = self.value(a), self.value(b)
        ga = gy / b_value if a.requires_grad else None
        gb = -gy * a_value / (b_value * b_value) if b.requires_grad else None
        return ga, gb


class Neg(Function):
    def forward(self, x):
        return -x

    def backward(self, gy):
        return -gy


class PowScalar(Function):
    """x ** c for a constant exponent c."""

    autocast_policy = "float32"

    def __init__(self, exponent):
        self.exponent = exponent

    def forward(self, x):
        return x**self.exponent

    def backward(self, gy):
        x = self.value(self.inputs[0])
        c = self.exponent
        return gy * c * x ** (c - 1)


class Pow(Function):
    """a ** b with both sides tensors (d/db needs a > 0)."""

    autocast_policy = "float32"

    def forward(self, a, b):
        return a**b

    def backward(self, gy):
        a, b = self.inputs
        a_value, b_value = self.value(a), self.value(b)
        ga = gy * b_value * a_value ** (b_value - 1) if a.requires_grad else None
        gb = gy * self.output() * _log(a_value) if b.requires_grad else None
        return ga, gb


@register("add")
def add(a, b) -> Tensor:
    a = as_tensor(a, b) if not isinstance(a, Tensor) else a
    return Add()(a, as_tensor(b, a))


@register("sub")
def sub(a, b) -> Tensor:
    a = as_tensor(a, b) if not isinstance(a, Tensor) else a
    return Sub()(a, as_tensor(b, a))


@register("mul")
def mul(a, b) -> Tensor:
    a = as_tensor(a, b) if not isinstance(a, Tensor) else a
    return Mul()(a, as_tensor(b, a))


@register("div")
def div(a, b) -> Tensor:
    a = as_tensor(a, b) if not isinstance(a, Tensor) else a
    return Div()(a, as_tensor(b, a))


@register("neg")
def neg(x: Tensor) -> Tensor:
    return Neg()(x)


@register("pow")
def pow(a, b) -> Tensor:  # noqa: A001 - mirrors Python's name
    if isinstance(a, Tensor) and isinstance(b, numbers.Number):
        return PowScalar(b)(a)
    a = as_tensor(a, b) if not isinstance(a, Tensor) else a
    return Pow()(a, as_tensor(b, a))


# ---------------------------------------------------------------------------------------
# Elementwise functions
# ---------------------------------------------------------------------------------------
class Exp(Function):
    autocast_policy = "float32"

    def forward(self, x):
        return _xp(x).exp(x)

    def backward(self, gy):
        return gy * self.output()


class Log(Function):
    autocast_policy = "float32"

    def forward(self, x):
        return _xp(x).log(x)

    def backward(self, gy):
        return gy / self.value(self.inputs[0])


class Sqrt(Function):
    def forward(self, x):
        return _xp(x).sqrt(x)

    def backward(self, gy):
        return gy / (2 * self.output())


class Tanh(Function):
    def forward(self, x):
        return _xp(x).tanh(x)

    def backward(self, gy):
        y = self.output()
        return gy * (1 - y * y)


def float_elements(x):
    """x as one flat run of floating-point elements (integers as float64): [size]."""
    flat = x.reshape(-1)
    return flat if flat.dtype.kind == "f" else flat.astype(np.float64)


def sigmoid_into(x, out):
    """out = sigmoid(x) for float arrays of one shape; returns out.
    0.5 * (1 + tanh(x / 2)) equals 1 / (1 + exp(-x)) and never overflows."""
    xp = _xp(x)
    xp.multiply(x, 0.5, out=out)
    xp.tanh(out, out=out)
    out += 1
    out *= 0.5
    return out


class Sigmoid(Function):
    def forward(self, x):
        flat = float_elements(x)
        y = _xp(x).empty_like(flat)
        parallel.in_parallel(flat.size, lambda start, stop: sigmoid_into(flat[start:stop], y[start:stop]), like=x)
        return y.reshape(x.shape)

    def backward(self, gy):
        y = self.output()
        return gy * y * (1 - y)


class NormalCDF(Function):
    """Phi(x) = 0.5 (1 + erf(x / sqrt 2)), the standard normal CDF (the exact GELU's composite)."""

    def forward(self, x):
        return _backend.device_of(x).normal_cdf(x)

    def backward(self, gy):
        x = self.value(self.inputs[0])
        return gy * _exp(-0.5 * x * x) * _INV_SQRT_2PI  # phi(x)


_INV_SQRT_2, _INV_SQRT_2PI = 1.0 / np.sqrt(2.0), 1.0 / np.sqrt(2.0 * np.pi)


class ReLU(Function):
    def forward(self, x):
        return _xp(x).maximum(x, 0)

    def backward(self, gy):
        x = self.inputs[0].data
        return gy * _constant((x > 0).astype(gy.dtype), gy)  # relu'(0) = 0


class Abs(Function):
    def forward(self, x):
        return _xp(x).abs(x)

    def backward(self, gy):
        x = self.inputs[0].data
        return gy * _constant(_xp(x).sign(x).astype(gy.dtype), gy)  # abs'(0) = 0


class Maximum(Function):
    """Elementwise max; on ties the gradient is shared half and half."""

    def forward(self, a, b):
        return _xp(a).maximum(a, b)

    def backward(self, gy):
        a, b = self.inputs
        return _share_by_winner(gy, a, b, a.data > b.data)


class Minimum(Function):
    """Elementwise min; on ties the gradient is shared half and half."""

    def forward(self, a, b):
        return _xp(a).minimum(a, b)

    def backward(self, gy):
        a, b = self.inputs
        return _share_by_winner(gy, a, b, a.data < b.data)


def _share_by_winner(gy, a: Tensor, b: Tensor, a_wins):
    """gy to whichever of a, b was picked, half to each on a tie."""
    share_a = _constant((a_wins + 0.5 * (a.data == b.data)).astype(gy.dtype), gy)
    ga = gy * share_a if a.requires_grad else None
    gb = gy * (1 - share_a) if b.requires_grad else None
    return ga, gb


class Where(Function):
    def __init__(self, condition):
        self.condition = condition

    def forward(self, a, b):
        return _xp(a).where(self.condition, a, b)

    def backward(self, gy):
        a, b = self.inputs
        keep = _constant(self.condition.astype(gy.dtype), gy)
        ga = gy * keep if a.requires_grad else None
        gb = gy * (1 - keep) if b.requires_grad else None
        return ga, gb


class Clip(Function):
    def __init__(self, low, high):
        self.low, self.high = low, high

    def forward(self, x):
        return _xp(x).clip(x, self.low, self.high)

    def backward(self, gy):
        x = self.inputs[0].data
        inside = np.ones((), dtype=bool) if self.low is None else (x >= self.low)
        if self.high is not None:
            inside = inside & (x <= self.high)
        return gy * _constant(_xp(x).asarray(inside, dtype=gy.dtype), gy)


_xp = _backend.array_module


@register("exp")
def exp(x: Tensor) -> Tensor:
    return Exp()(x)


@register("log")
def log(x: Tensor) -> Tensor:
    return Log()(x)


@register("sqrt")
def sqrt(x: Tensor) -> Tensor:
    return Sqrt()(x)


@register("tanh")
def tanh(x: Tensor) -> Tensor:
    return Tanh()(x)


@register("sigmoid")
def sigmoid(x: Tensor) -> Tensor:
    return Sigmoid()(x)


@register("relu")
def relu(x: Tensor) -> Tensor:
    return ReLU()(x)


@register("abs")
def abs(x: Tensor) -> Tensor:  # noqa: A001 - mirrors Python's name
    return Abs()(x)


@register("maximum")
def maximum(a, b) -> Tensor:
    a = as_tensor(a, b) if not isinstance(a, Tensor) else a
    return Maximum()(a, as_tensor(b, a))


@register("minimum")
def minimum(a, b) -> Tensor:
    a = as_tensor(a, b) if not isinstance(a, Tensor) else a
    return Minimum()(a, as_tensor(b, a))


@register("where")
def where(condition, a, b) -> Tensor:
    """Elementwise `a if condition else b` (condition is not differentiated)."""
    like = a if isinstance(a, Tensor) else b
    if not isinstance(like, Tensor):
        raise TypeError("where() needs at least one of a, b to be a Tensor")
    a, b = as_tensor(a, like), as_tensor(b, like)
    condition = data_of(condition, like.device)
    if condition.dtype != bool:
        raise TypeError(f"where(): condition must be a boolean tensor, got dtype {condition.dtype}")
    return Where(condition)(a, b)


@register("clip")
def clip(x: Tensor, low=None, high=None) -> Tensor:
    if low is None and high is None:
        raise ValueError("clip() needs at least one of low, high")
    return Clip(low, high)(x)


@register("masked_fill")
def masked_fill(x: Tensor, mask, value) -> Tensor:
    """x with `value` wherever `mask` (broadcast to x's shape) is True."""
    mask = data_of(mask, x.device)
    if mask.dtype != bool:
        raise TypeError(f"masked_fill(): mask must be boolean, got dtype {mask.dtype}")
    fill = Tensor(x.device.xp.asarray(value, dtype=x.dtype))
    return where(mask, fill, x)


# ---------------------------------------------------------------------------------------
# Reductions
# ---------------------------------------------------------------------------------------
class Sum(Function):
    autocast_policy = "float32"

    def __init__(self, axes: tuple, keepdims: bool):
        self.axes, self.keepdims = axes, keepdims

    def forward(self, x):
        return x.sum(axis=self.axes, keepdims=self.keepdims)

    def backward(self, gy):
        shape = self.inputs[0].shape
        if not self.keepdims:
            gy = gy.reshape(_keepdims_shape(shape, self.axes))
        return _broadcast_to(gy, shape)


class Max(Function):
    """max over axes; ties share the gradient equally."""

    def __init__(self, axes: tuple, keepdims: bool):
        self.axes, self.keepdims = axes, keepdims

    def forward(self, x):
        return x.max(axis=self.axes, keepdims=self.keepdims)

    def backward(self, gy):
        x = self.inputs[0]
        kept_shape = _keepdims_shape(x.shape, self.axes)
        extreme = self.outputs[0]().data.reshape(kept_shape)
        is_extreme = x.data == extreme
        share = is_extreme / is_extreme.sum(axis=self.axes, keepdims=True)
        return _broadcast_to(gy.reshape(kept_shape), x.shape) * _constant(share.astype(gy.dtype), gy)


class Min(Max):
    """min over axes; ties share the gradient equally (Max's rule: it finds the picked
    elements by comparing with the output)."""

    def forward(self, x):
        return x.min(axis=self.axes, keepdims=self.keepdims)


@register("sum")
def sum(x: Tensor, axis=None, keepdims: bool = False) -> Tensor:  # noqa: A001
    return Sum(_normalize_axis(axis, x.ndim), keepdims)(x)


@register("mean")
def mean(x: Tensor, axis=None, keepdims: bool = False) -> Tensor:
    axes = _normalize_axis(axis, x.ndim)
    count = int(np.prod([x.shape[a] for a in axes])) if axes else 1
    return Sum(axes, keepdims)(x) * (1.0 / count)


@register("var")
def var(x: Tensor, axis=None, keepdims: bool = False, ddof: int = 0) -> Tensor:
    """Variance with NumPy's convention: divide by N - ddof (ddof=0 by default)."""
    axes = _normalize_axis(axis, x.ndim)
    count = int(np.prod([x.shape[a] for a in axes])) if axes else 1
    centered = x - mean(x, axis=axes, keepdims=True)
    return Sum(axes, keepdims)(centered * centered) * (1.0 / (count - ddof))


@register("max")
def max(x: Tensor, axis=None, keepdims: bool = False) -> Tensor:  # noqa: A001
    return Max(_normalize_axis(axis, x.ndim), keepdims)(x)


@register("min")
def min(x: Tensor, axis=None, keepdims: bool = False) -> Tensor:  # noqa: A001
    return Min(_normalize_axis(axis, x.ndim), keepdims)(x)


# ---------------------------------------------------------------------------------------
# Shapes
# ---------------------------------------------------------------------------------------
class Reshape(Function):
    def __init__(self, shape):
        self.shape = shape

    def forward(self, x):
        return x.reshape(self.shape)

    def backward(self, gy):
        return gy.reshape(self.inputs[0].shape)


class Transpose(Function):
    def __init__(self, axes):
        self.axes = axes

    def forward(self, x):
        return x.transpose(self.axes)

    def backward(self, gy):
        return gy.transpose(tuple(int(a) for a in np.argsort(self.axes)))


class BroadcastTo(Function):
    def __init__(self, shape):
        self.shape = shape

    def forward(self, x):
        return _xp(x).broadcast_to(x, self.shape)

    def backward(self, gy):
        return _sum_to(gy, self.inputs[0].shape)


class SumTo(Function):
    """Sum a broadcast result back down to `shape` (the gradient of broadcasting)."""

    def __init__(self, shape):
        self.shape = shape

    def forward(self, x):
        lead = x.ndim - len(self.shape)
        axes = tuple(range(lead)) + tuple(lead + i for i, n in enumerate(self.shape)
                                          if n == 1 and x.shape[lead + i] != 1)
        if lead and axes == tuple(range(lead)):  # a bias's gradient: [B, T, C] -> [C]
            return sum_leading_axes(x, lead)
        y = x.sum(axis=axes, keepdims=True) if axes else x
        return y.reshape(self.shape) if lead else y

    def backward(self, gy):
        return _broadcast_to(gy, self.inputs[0].shape)


@register("reshape")
def reshape(x: Tensor, *shape) -> Tensor:
    if len(shape) == 1 and not isinstance(shape[0], numbers.Integral):
        shape = tuple(shape[0])
    shape = tuple(int(n) for n in shape)
    if shape == x.shape:
        return x
    unknown = shape.count(-1)
    known = int(np.prod([n for n in shape if n != -1]))
    valid = unknown <= 1 and all(n >= -1 for n in shape) and (
        (unknown == 0 and known == x.size) or (unknown == 1 and known > 0 and x.size % known == 0)
    )
    if not valid:
        raise ValueError(f"cannot reshape a tensor of shape {x.shape} ({x.size} elements) into shape {shape}")
    return Reshape(shape)(x)


@register("transpose")
def transpose(x: Tensor, *axes) -> Tensor:
    """Permute the axes (NumPy's meaning): no axes reverses them, as `x.T` does."""
    if len(axes) == 1 and not isinstance(axes[0], numbers.Integral):
        axes = tuple(axes[0]) if axes[0] is not None else ()
    if not axes:
        axes = tuple(reversed(range(x.ndim)))
    if sorted(a % x.ndim for a in axes) != list(range(x.ndim)):
        raise ValueError(f"transpose: axes {axes} are not a permutation of the {x.ndim} axes of shape {x.shape}")
    axes = tuple(a % x.ndim for a in axes)
    return Transpose(axes)(x)


def permute(x: Tensor, *axes) -> Tensor:
    """Same as `transpose(x, *axes)` (PyTorch's name)."""
    return transpose(x, *axes)


def swapaxes(x: Tensor, axis1: int, axis2: int) -> Tensor:
    axes = list(range(x.ndim))
    axes[axis1], axes[axis2] = axes[axis2], axes[axis1]
    return Transpose(tuple(axes))(x)


@register("broadcast_to")
def broadcast_to(x: Tensor, shape) -> Tensor:
    shape = tuple(shape)
    if shape == x.shape:
        return x
    try:
        if np.broadcast_shapes(x.shape, shape) != shape:
            raise ValueError
    except ValueError:
        raise ValueError(f"cannot broadcast a tensor of shape {x.shape} to shape {shape}") from None
    return BroadcastTo(shape)(x)


def expand(x: Tensor, *shape) -> Tensor:
    """broadcast_to with PyTorch's spelling; -1 keeps a dimension."""
    if len(shape) == 1 and not isinstance(shape[0], numbers.Integral):
        shape = tuple(shape[0])
    lead = len(shape) - x.ndim
    shape = tuple(x.shape[i - lead] if n == -1 else n for i, n in enumerate(shape))
    return broadcast_to(x, shape)


@register("sum_to")
def sum_to(x: Tensor, shape) -> Tensor:
    shape = tuple(shape)
    if shape == x.shape:
        return x
    return SumTo(shape)(x)


@register("squeeze")
def squeeze(x: Tensor, axis=None) -> Tensor:
    if axis is None:
        axes = tuple(i for i, n in enumerate(x.shape) if n == 1)
    else:
        axes = _normalize_axis(axis, x.ndim)
        for a in axes:
            if x.shape[a] != 1:
                raise ValueError(f"squeeze: axis {a} of shape {x.shape} has size {x.shape[a]}, not 1")
    return reshape(x, tuple(n for i, n in enumerate(x.shape) if i not in axes))


@register("unsqueeze")
def unsqueeze(x: Tensor, axis: int) -> Tensor:
    if not -x.ndim - 1 <= axis <= x.ndim:
        raise ValueError(f"unsqueeze: axis {axis} is out of range for shape {x.shape}")
    axis = axis % (x.ndim + 1)
    return reshape(x, x.shape[:axis] + (1,) + x.shape[axis:])


def flatten(x: Tensor, start_axis: int = 0, end_axis: int = -1) -> Tensor:
    rank = builtins.max(x.ndim, 1)
    start, end = start_axis % rank, end_axis % rank
    merged = int(np.prod(x.shape[start : end + 1]))
    return reshape(x, x.shape[:start] + (merged,) + x.shape[end + 1 :])


class Concatenate(Function):
    def __init__(self, axis: int):
        self.axis = axis

    def forward(self, *xs):
        return _xp(xs[0]).concatenate(xs, axis=self.axis)

    def backward(self, gy):
        grads, start = [], 0
        for x in self.inputs:
            stop = start + x.shape[self.axis]
            index = (slice(None),) * self.axis + (slice(start, stop),)
            grads.append(gy[index] if x.requires_grad else None)
            start = stop
        return tuple(grads)


class Split(Function):
    def __init__(self, boundaries: list, axis: int):
        self.boundaries, self.axis = boundaries, axis

    def forward(self, x):
        return tuple(_xp(x).split(x, self.boundaries, axis=self.axis))

    def backward(self, *gys):
        return _apply(Concatenate(self.axis), *gys)


@register("concatenate")
def concatenate(tensors, axis: int = 0) -> Tensor:
    tensors = list(tensors)
    if not tensors:
        raise ValueError("concatenate() needs at least one tensor")
    first = tensors[0]
    axis = _normalize_axis(axis, first.ndim)[0]
    for t in tensors[1:]:
        if t.ndim != first.ndim or any(a != b for i, (a, b) in enumerate(zip(t.shape, first.shape)) if i != axis):
            raise ValueError(
                f"concatenate along axis {axis}: shapes {first.shape} and {t.shape} differ outside that axis"
            )
    return Concatenate(axis)(*tensors)


@register("stack")
def stack(tensors, axis: int = 0) -> Tensor:
    tensors = list(tensors)
    if not tensors:
        raise ValueError("stack() needs at least one tensor")
    shapes = {t.shape for t in tensors}
    if len(shapes) > 1:
        raise ValueError(f"stack() needs tensors of one shape, got {sorted(shapes)}")
    axis = axis % (tensors[0].ndim + 1)
    return concatenate([unsqueeze(t, axis) for t in tensors], axis=axis)


@register("split")
def split(x: Tensor, sections, axis: int = 0) -> tuple:
    """Split into equal sections (an int) or at the given indices (a list), as numpy.split."""
    axis = _normalize_axis(axis, x.ndim)[0]
    length = x.shape[axis]
    if isinstance(sections, numbers.Integral):
        if sections <= 0 or length % sections:
            raise ValueError(f"split: axis {axis} of length {length} does not divide into {sections} equal sections")
        step = length // sections
        boundaries = [step * i for i in range(1, sections)]
    else:
        boundaries = list(sections)
    return Split(boundaries, axis)(x)


# ---------------------------------------------------------------------------------------
# Indexing
# ---------------------------------------------------------------------------------------
def _index_key(key):
    """Turn Tensors and lists inside an index into arrays; tell whether it is 'advanced'."""
    items = key if isinstance(key, tuple) else (key,)
    converted = []
    for item in items:
        if isinstance(item, Tensor):
            item = item.data
        elif isinstance(item, list):
            item = np.asarray(item)
        converted.append(item)
    return tuple(converted) if isinstance(key, tuple) else converted[0]


def _has_integer_array(key) -> bool:
    items = key if isinstance(key, tuple) else (key,)
    return any(hasattr(item, "dtype") and item.dtype.kind in "iu" for item in items)


class GetItem(Function):
    def __init__(self, key):
        self.key = key

    def forward(self, x):
        return x[self.key]

    def backward(self, gy):
        return _apply(GetItemGrad(self.key, self.inputs[0].shape), gy)


class GetItemGrad(Function):
    """Scatter a gradient back into the indexed positions (repeated indices add up)."""

    def __init__(self, key, shape):
        self.key, self.shape = key, shape

    def forward(self, gy):
        device = _backend.device_of(gy)
        gx = device.xp.zeros(self.shape, dtype=gy.dtype)
        if _has_integer_array(self.key):
            device.scatter_add(gx, self.key, gy)
        else:  # slices and boolean masks never pick an element twice
            gx[self.key] = gy
        return gx

    def backward(self, ggx):
        return ggx[self.key]


@register("getitem")
def getitem(x: Tensor, key) -> Tensor:
    key = _index_key(key)
    if x.device.name != "cpu":
        key = _keys_to_device(key, x.device)
    return GetItem(key)(x)


@register("unpack_rows")
def unpack_rows(packed: Tensor, tokens) -> Tensor:
    """The inverse of packing: rows [N, ...] -> [B, T, ...] with zeros where `tokens` [B, T]
    (boolean, N of them True) is False. packed = x[tokens] (getitem) takes them out again;
    the two are each other's gradient."""
    tokens = _index_key(tokens)
    if getattr(getattr(tokens, "dtype", None), "kind", None) != "b" or tokens.ndim != 2:
        raise TypeError(f"unpack_rows: tokens must be a boolean [B, T] array, got "
                        f"{getattr(tokens, 'dtype', type(tokens).__name__)} of shape {getattr(tokens, 'shape', None)}")
    count = int(tokens.sum())
    if packed.ndim < 1 or packed.shape[0] != count:
        raise ValueError(f"unpack_rows: {count} tokens in a {tokens.shape} mask, but packed has shape {packed.shape}")
    if packed.device.name != "cpu":
        tokens = _keys_to_device(tokens, packed.device)
    return GetItemGrad(tokens, tuple(tokens.shape) + tuple(packed.shape[1:]))(packed)  # [N, ...] -> [B, T, ...]


def _keys_to_device(key, device):
    if isinstance(key, tuple):
        return tuple(_keys_to_device(k, device) for k in key)
    return device.xp.asarray(key) if isinstance(key, np.ndarray) else key


# ---------------------------------------------------------------------------------------
# Matrix product
# ---------------------------------------------------------------------------------------
def _gemm_ready(x):
    """x itself if each of its matrices is stored row- or column-major, else a C-ordered copy.

    NumPy's batched matmul falls back to a slow loop (measured 20x slower) on stacks of
    strided views such as the per-head [B, H, T, D] views attention makes; copying first
    costs far less.
    """
    if x.ndim <= 2 or x.flags.c_contiguous or x.swapaxes(-1, -2).flags.c_contiguous:
        return x
    return _xp(x).ascontiguousarray(x)


class MatMul(Function):
    autocast_policy = "low"

    def forward(self, a, b):
        if a.ndim > 2 and b.ndim == 2:
            # [..., n, k] @ [k, m]: one large GEMM on [(...n), k] beats a loop of small ones.
            return parallel.matmul(a.reshape(-1, a.shape[-1]), b).reshape(a.shape[:-1] + (b.shape[-1],))
        if a.ndim > 2:
            a, b = _gemm_ready(a), _gemm_ready(b)
        return parallel.matmul(a, b)

    def backward(self, gy):
        a, b = self.inputs
        a_value, b_value = self.value(a), self.value(b)
        ga = gb = None
        if a.requires_grad:
            ga = _matmul(gy, b_value.swapaxes(-1, -2))
        if b.requires_grad:
            if a.ndim > 2 and b.ndim == 2:
                # sum over the batch of a^T @ gy, as one GEMM: [k, (...n)] @ [(...n), m]
                a2 = a_value.reshape(-1, a.shape[-1])
                gb = parallel.matmul(a2.swapaxes(0, 1), gy.reshape(-1, gy.shape[-1]))
            else:
                gb = _matmul(a_value.swapaxes(-1, -2), gy)
        return ga, gb


def _matmul(a, b):
    """Dual helper: arrays go through the same one-GEMM fast path as MatMul.forward."""
    return matmul(a, b) if isinstance(a, Tensor) else MatMul().forward(a, b)


@register("matmul")
def matmul(a: Tensor, b: Tensor) -> Tensor:
    """Matrix product with NumPy's rules: batched, broadcasting, 1-D vectors promoted."""
    a = as_tensor(a, b) if not isinstance(a, Tensor) else a
    b = as_tensor(b, a)
    if a.ndim == 0 or b.ndim == 0:
        raise ValueError(f"matmul: both operands need at least 1 dimension, got shapes {a.shape} and {b.shape}")
    k_a = a.shape[-1]
    k_b = b.shape[-2] if b.ndim > 1 else b.shape[0]
    if k_a != k_b:
        raise ValueError(
            f"matmul: shapes {a.shape} and {b.shape} are not aligned: "
            f"{k_a} (last dim of the first) != {k_b} ({'first' if b.ndim == 1 else 'second-to-last'} dim of the second)"
        )
    if a.ndim > 2 and b.ndim > 2:
        try:
            np.broadcast_shapes(a.shape[:-2], b.shape[:-2])
        except ValueError:
            raise ValueError(f"matmul: batch dimensions of shapes {a.shape} and {b.shape} do not broadcast") from None
    if a.ndim == 1 or b.ndim == 1:
        a2 = unsqueeze(a, 0) if a.ndim == 1 else a
        b2 = unsqueeze(b, -1) if b.ndim == 1 else b
        out = MatMul()(a2, b2)
        if b.ndim == 1:
            out = squeeze(out, -1)
        if a.ndim == 1:
            out = squeeze(out, -1 if b.ndim == 1 else -2)
        return out
    return MatMul()(a, b)


# ---------------------------------------------------------------------------------------
# dtype and device moves
# ---------------------------------------------------------------------------------------
class AsType(Function):
    def __init__(self, dtype):
        self.dtype = dtype

    def forward(self, x):
        return x.astype(self.dtype)

    def backward(self, gy):
        return gy.astype(self.inputs[0].dtype)


class ToDevice(Function):
    def __init__(self, device):
        self.device = device

    def forward(self, x):
        host = _backend.device_of(x).to_host(x)
        return self.device.asarray(host)

    def backward(self, gy):
        return _apply(ToDevice(self.inputs[0].device), gy)


@register("astype")
def astype(x: Tensor, dtype) -> Tensor:
    dtype = np.dtype(dtype)
    if dtype == x.dtype:
        return x
    if dtype.kind != "f" and x.requires_grad and is_grad_enabled():
        return Tensor(x.data.astype(dtype))  # integer results carry no gradient
    return AsType(dtype)(x)


def to_device(x: Tensor, device) -> Tensor:
    return ToDevice(_backend.get_device(device))(x)


# ---------------------------------------------------------------------------------------
# Tensor methods and operators
# ---------------------------------------------------------------------------------------
def _compare(op):
    def compare(self, other):
        return Tensor(op(self.data, data_of(other)))

    return compare


def _install_tensor_methods():
    T = Tensor
    T.__add__ = add
    T.__radd__ = lambda self, other: add(as_tensor(other, self), self)
    T.__sub__ = sub
    T.__rsub__ = lambda self, other: sub(as_tensor(other, self), self)
    T.__mul__ = mul
    T.__rmul__ = lambda self, other: mul(as_tensor(other, self), self)
    T.__truediv__ = div
    T.__rtruediv__ = lambda self, other: div(as_tensor(other, self), self)
    T.__pow__ = pow
    T.__rpow__ = lambda self, other: pow(as_tensor(other, self), self)
    T.__neg__ = neg
    T.__matmul__ = matmul
    T.__rmatmul__ = lambda self, other: matmul(as_tensor(other, self), self)
    T.__getitem__ = getitem
    T.__lt__ = _compare(lambda a, b: a < b)
    T.__le__ = _compare(lambda a, b: a <= b)
    T.__gt__ = _compare(lambda a, b: a > b)
    T.__ge__ = _compare(lambda a, b: a >= b)
    T.__eq__ = _compare(lambda a, b: a == b)
    T.__ne__ = _compare(lambda a, b: a != b)
    T.__invert__ = lambda self: Tensor(~self.data)
    T.__and__ = _compare(lambda a, b: a & b)
    T.__or__ = _compare(lambda a, b: a | b)
    T.__hash__ = object.__hash__
    for name in ("exp", "log", "sqrt", "tanh", "sigmoid", "relu", "abs", "sum", "mean", "var", "max", "min",
                 "reshape", "transpose", "permute", "swapaxes", "broadcast_to", "expand", "squeeze",
                 "unsqueeze", "flatten", "split", "clip", "masked_fill", "matmul", "astype"):
        setattr(T, name, globals()[name])
    T.T = property(lambda self: transpose(self))
    T.mT = property(lambda self: swapaxes(self, -1, -2))
    T.argmax = lambda self, axis=None, keepdims=False: Tensor(
        self.device.xp.asarray(self.data.argmax(axis=axis, keepdims=keepdims)))
    T.argmin = lambda self, axis=None, keepdims=False: Tensor(
        self.device.xp.asarray(self.data.argmin(axis=axis, keepdims=keepdims)))


_install_tensor_methods()
