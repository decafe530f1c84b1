"""Neural-network functions: softmax, cross-entropy, GELU, layer norm, dropout, attention, LSTM cell.

The heavy ones are fused `Function`s: one forward over arrays, one fast gradient rule over
arrays, and a `composite`, the same function written with the primitive ops of ops.py.
The composite is the rule's reference (tests check forward and backward against it) and
its second derivative: under `backward(create_graph=True)` the engine differentiates the
composite instead of the fused rule. So every formula is written once.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np

from . import backend as _backend
from . import ops, parallel
from .autograd import Function, Tensor, data_of, is_grad_enabled
from .ops import register, relu, sigmoid, tanh  # noqa: F401 - re-exported as F.relu etc.


# ---------------------------------------------------------------------------------------
# softmax / log_softmax
# ---------------------------------------------------------------------------------------
def _sum_keepdims(x, axis: int):
    """x.sum(axis=axis, keepdims=True); along the last axis by BLAS (see ops.sum_last_axis)."""
    return ops.sum_last_axis(x) if axis in (-1, x.ndim - 1) else x.sum(axis=axis, keepdims=True)


# Softmax does not change when a row is shifted by a constant, and the textbook form shifts
# each row by its max so that exp cannot overflow (float32's exp overflows above ~88.7).
# NumPy's max over short rows is slow, though: on attention scores [B, H, T, T] it took as
# long as the exp itself. So exp runs on the unshifted x first, and the result is kept when
# every row's sum is finite (no exp overflowed) and above _EXP_SUM_FLOOR (the terms that
# matter are still normal floats, so it is as accurate as the shifted one). Only otherwise
# (huge logits, rows masked down to nothing) is each row shifted by its max and exp run
# again. Checking the sums, not a whole-array max first, spares a pass over the input: on
# a training step's [B*T, vocab] logits that pass cost as much as a quarter of the exp.
# On a GPU the row max is cheap and the checks would each wait for the device, so CuPy
# arrays always take the shift.
_EXP_SUM_FLOOR = 1e-30


def exp_and_sum(x, axis: int):
    """(e, sums, shift): e = exp(x - shift) and its sums along `axis` (kept as size 1), where
    the shift is 0 when that is safe (see above), else each row's max. Rows along the last
    axis are split across threads in blocks (minilm.parallel); the check is over all rows."""
    xp = ops._xp(x)
    e = None
    if xp is np and x.size:
        if axis in (-1, x.ndim - 1):
            e, sums = np.empty_like(x), np.empty(x.shape[:-1] + (1,), dtype=x.dtype)
            x_rows, e_rows, sum_rows = x.reshape(-1, x.shape[-1]), e.reshape(-1, x.shape[-1]), sums.reshape(-1, 1)

            def block(start, stop):  # rows start:stop
                with np.errstate(over="ignore"):  # an overflow is caught by the sums' check below
                    np.exp(x_rows[start:stop], out=e_rows[start:stop])
                    sum_rows[start:stop] = ops.sum_last_axis(e_rows[start:stop])

            parallel.over_blocks(len(x_rows), block, grain=_ROWS_GRAIN // x.shape[-1], align=16)
        else:
            with np.errstate(over="ignore"):
                e = np.exp(x)
                sums = _sum_keepdims(e, axis)
        if float(sums.min()) >= _EXP_SUM_FLOOR and float(sums.max()) < np.inf:  # False for NaN too
            return e, sums, 0.0
    shift = x.max(axis=axis, keepdims=True)
    e = xp.subtract(x, shift, out=e)  # reuses the first try's buffer
    xp.exp(e, out=e)
    return e, _sum_keepdims(e, axis), shift


class Softmax(Function):
    autocast_policy = "float32"

    def __init__(self, axis: int):
        self.axis = axis

    def forward(self, x):
        y, sums, _ = exp_and_sum(x, self.axis)
        y /= sums
        return y

    def backward(self, gy):
        y = self.output()
        # dx = y * (gy - sum(gy * y))
        return y * (gy - _sum_keepdims(gy * y, self.axis))

    def composite(self, x):
        return _softmax_composite(x, self.axis)


class LogSoftmax(Function):
    autocast_policy = "float32"

    def __init__(self, axis: int):
        self.axis = axis

    def forward(self, x):
        _, sums, shift = exp_and_sum(x, self.axis)
        return x - (shift + ops._xp(x).log(sums))  # x - shift - log(sum(exp(x - shift)))

    def backward(self, gy):
        y = self.output()
        # dx = gy - softmax(x) * sum(gy), with softmax(x) = exp(log_softmax(x))
        return gy - ops._xp(y).exp(y) * _sum_keepdims(gy, self.axis)

    def composite(self, x):
        return _log_softmax_composite(x, self.axis)


def _stable_shift(x: Tensor, axis: int) -> Tensor:
    """max(x) along `axis`, as a constant: (log-)softmax does not change when x is shifted,
    so the shift needs no gradient."""
    return Tensor(x.data.max(axis=axis, keepdims=True))


def _softmax_composite(x: Tensor, axis: int) -> Tensor:
    e = ops.exp(x - _stable_shift(x, axis))
    return e / e.sum(axis=axis, keepdims=True)


def _log_softmax_composite(x: Tensor, axis: int) -> Tensor:
    shifted = x - _stable_shift(x, axis)
    return shifted - ops.log(ops.exp(shifted).sum(axis=axis, keepdims=True))


@register("softmax")
def softmax(x: Tensor, axis: int = -1) -> Tensor:
    return Softmax(axis)(x)


@register("log_softmax")
def log_softmax(x: Tensor, axis: int = -1) -> Tensor:
    return LogSoftmax(axis)(x)


# ---------------------------------------------------------------------------------------
# GELU
# ---------------------------------------------------------------------------------------
_SQRT_2_OVER_PI = math.sqrt(2.0 / math.pi)
_TANH_CUBIC = 0.044715


def _gelu_tanh_backward_into(x, t, gy, out):
    """out = gy * d/dx [0.5 x (1 + t)], t = tanh(u), u = sqrt(2/pi) (x + 0.044715 x^3), with
    one temporary: on the [B, T, 4C] MLP activations every temporary is an extra pass."""
    xp = ops._xp(x)
    xp.multiply(x, x, out=out)
    out *= 3 * _TANH_CUBIC * _SQRT_2_OVER_PI
    out += _SQRT_2_OVER_PI  # du/dx = sqrt(2/pi) (1 + 3 * 0.044715 x^2), constants folded
    out *= x
    square = xp.multiply(t, t)
    xp.subtract(1, square, out=square)
    out *= square  # x (1 - t^2) du/dx
    out += t
    out += 1
    out *= 0.5  # 0.5 (1 + t) + 0.5 x (1 - t^2) du/dx
    out *= gy


class GELU(Function):
    """x Phi(x), exact or in GPT-2's tanh form; elementwise, in cache-sized ranges split across
    threads (minilm.parallel)."""

    def __init__(self, approximate: str):
        self.approximate = approximate

    def forward(self, x):
        xp = ops._xp(x)
        if self.approximate == "tanh":
            flat = ops.float_elements(x)  # [size]
            self.t, y = xp.empty_like(flat), xp.empty_like(flat)

            def piece(start, stop):
                xs, inner = flat[start:stop], self.t[start:stop]
                xp.multiply(xs, xs, out=inner)
                inner *= _SQRT_2_OVER_PI * _TANH_CUBIC
                inner += _SQRT_2_OVER_PI
                inner *= xs  # u = sqrt(2/pi) (x + 0.044715 x^3), as x (sqrt(2/pi) + sqrt(2/pi) 0.044715 x^2)
                xp.tanh(inner, out=inner)  # t = tanh(u), kept for backward
                ys = xp.add(inner, 1, out=y[start:stop])
                ys *= xs
                ys *= 0.5

            parallel.in_parallel(flat.size, piece, like=x)
            return y.reshape(x.shape)
        # Phi(x), the standard normal CDF, and y = x Phi(x) in one pass (see minilm.special);
        # under no_grad nothing will ask for Phi(x): one output array, not two.
        if is_grad_enabled():
            self.cdf, y = _backend.device_of(x).normal_cdf(x, times_x=True)
        else:
            y = _backend.device_of(x).gelu(x)
        return y

    def backward(self, gy):
        x = self.inputs[0].data
        if self.approximate == "tanh":
            xp, flat_x, flat_gy = ops._xp(gy), ops.float_elements(x), gy.reshape(-1)
            gx = xp.empty(flat_gy.shape, dtype=xp.result_type(flat_gy, self.t))
            parallel.in_parallel(gx.size, lambda start, stop: _gelu_tanh_backward_into(
                flat_x[start:stop], self.t[start:stop], flat_gy[start:stop], gx[start:stop]), like=gy)
            return gx.reshape(gy.shape)
        return _backend.device_of(x).gelu_grad(x, self.cdf, gy)  # gy (Phi(x) + x phi(x))

    def composite(self, x):
        if self.approximate == "tanh":
            return 0.5 * x * (1 + ops.tanh(_SQRT_2_OVER_PI * (x + _TANH_CUBIC * x * x * x)))
        return x * ops.NormalCDF()(x)


@register("gelu")
def gelu(x: Tensor, approximate: str = "none") -> Tensor:
    """Gaussian error linear unit: x * Phi(x); approximate='tanh' is GPT-2's form."""
    if approximate not in ("none", "tanh"):
        raise ValueError(f"gelu: approximate must be 'none' or 'tanh', got {approximate!r}")
    return GELU(approximate)(x)


# ---------------------------------------------------------------------------------------
# Layer normalization
# ---------------------------------------------------------------------------------------
# Row-wise work (layer norm, softmax rows) is split across threads in blocks of at least
# this many elements: smaller ones cost more to hand to a thread than they take.
_ROWS_GRAIN = 262144

class LayerNorm(Function):
    """y = (x - mean) / sqrt(var + eps) * weight + bias over the last axis, as one node.

    Backward, with x_hat the normalized x, g = gy * weight and 1/std saved by forward:
      dx = (1/std) * (g - mean(g) - x_hat * mean(g * x_hat)),  dweight = sum gy * x_hat,  dbias = sum gy
    Rows are independent: the threads each take a block of them (minilm.parallel). The column
    sums for dweight and dbias run over all rows at once, so they do not depend on the thread
    count.
    """

    autocast_policy = "float32"

    def __init__(self, eps: float, has_weight: bool, has_bias: bool):
        self.eps, self.has_weight, self.has_bias = eps, has_weight, has_bias

    def forward(self, x, *affine):
        xp = ops._xp(x)
        width = x.shape[-1]
        rows = x.reshape(-1, width)  # [N, C]
        x_hat = xp.empty(rows.shape, dtype=x.dtype)  # [N, C]
        inv_std = xp.empty((rows.shape[0], 1), dtype=x.dtype)  # [N, 1]
        y = xp.empty(rows.shape, dtype=xp.result_type(x, *affine)) if affine else x_hat

        def block(start, stop):  # rows start:stop
            xb, centered = rows[start:stop], x_hat[start:stop]
            xp.subtract(xb, ops.sum_last_axis(xb) * (1.0 / width), out=centered)  # x - mean
            variance = ops.sum_last_axis(centered * centered) * (1.0 / width)  # [rows, 1]
            inv_std[start:stop] = 1.0 / xp.sqrt(variance + self.eps)
            centered *= inv_std[start:stop]  # x_hat
            if self.has_weight:
                xp.multiply(centered, affine[0], out=y[start:stop])
            elif affine:
                y[start:stop] = centered
            if self.has_bias:
                y[start:stop] += affine[-1]

        parallel.over_blocks(rows.shape[0], block, grain=_ROWS_GRAIN // width, align=16, like=x)
        self.x_hat, self.inv_std = x_hat, inv_std
        return y.reshape(x.shape)

    def backward(self, gy):
        x, x_hat, inv_std = self.inputs[0], self.x_hat, self.inv_std
        xp, width = ops._xp(gy), x_hat.shape[-1]
        g_rows = gy.reshape(-1, width)  # [N, C]
        weight = self.inputs[1].data if self.has_weight else gy.dtype.type(1)
        gy_x_hat = xp.empty(g_rows.shape, dtype=xp.result_type(gy, x_hat))
        gx = xp.empty(g_rows.shape, dtype=gy_x_hat.dtype) if x.requires_grad else None

        def block(start, stop):  # rows start:stop
            xh = x_hat[start:stop]
            xp.multiply(g_rows[start:stop], xh, out=gy_x_hat[start:stop])
            if gx is None:
                return
            g = xp.multiply(g_rows[start:stop], weight, out=gx[start:stop])  # gy * weight, then dx in place
            mean_g = ops.sum_last_axis(g) * (1.0 / width)  # [rows, 1]
            scratch = g * xh
            mean_g_x_hat = ops.sum_last_axis(scratch) * (1.0 / width)  # [rows, 1]
            g -= xp.multiply(xh, mean_g_x_hat, out=scratch)
            g -= mean_g
            g *= inv_std[start:stop]

        parallel.over_blocks(g_rows.shape[0], block, grain=_ROWS_GRAIN // width, align=16, like=gy)
        grads = [None if gx is None else gx.reshape(x.shape)]
        if self.has_weight:  # [C]: column sums over every row
            grads.append(ops.sum_leading_axes(gy_x_hat, 1) if self.inputs[1].requires_grad else None)
        if self.has_bias:
            grads.append(ops.sum_leading_axes(g_rows, 1) if self.inputs[-1].requires_grad else None)
        return tuple(grads)

    def composite(self, x, *affine):
        centered = x - ops.mean(x, axis=-1, keepdims=True)
        y = centered / ops.sqrt(ops.mean(centered * centered, axis=-1, keepdims=True) + self.eps)
        if self.has_weight:
            y = y * affine[0]
        return y + affine[-1] if self.has_bias else y


@register("layer_norm")
def layer_norm(x: Tensor, weight: Tensor | None = None, bias: Tensor | None = None, eps: float = 1e-5) -> Tensor:
    """Normalize over the last axis, then scale by `weight` and shift by `bias` (each [C])."""
    for name, p in (("weight", weight), ("bias", bias)):
        if p is not None and p.shape != x.shape[-1:]:
            raise ValueError(f"layer_norm: {name} has shape {p.shape}, expected {x.shape[-1:]} "
                             f"(the last dim of {x.shape})")
    affine = [p for p in (weight, bias) if p is not None]
    return LayerNorm(eps, weight is not None, bias is not None)(x, *affine)  # [..., C] -> [..., C]


# ---------------------------------------------------------------------------------------
# Cross-entropy
# ---------------------------------------------------------------------------------------
class CrossEntropy(Function):
    """Mean/sum/per-row negative log-likelihood of integer targets, from [N, C] logits."""

    autocast_policy = "float32"

    def __init__(self, targets, ignore_index: int, reduction: str, label_smoothing: float):
        self.targets, self.ignore_index = targets, ignore_index
        self.reduction, self.label_smoothing = reduction, label_smoothing

    def forward(self, logits):
        xp = ops._xp(logits)
        n, classes = logits.shape
        # log p = shifted - log(sum(exp(shifted))), shifted = logits - shift (see exp_and_sum).
        # The loss needs only two numbers of each row of log p (the target's, and the row mean
        # under label smoothing), so the [N, C] log-probabilities are never built; exp(shifted)
        # is kept for backward, which would otherwise compute it again.
        self.valid = self.targets != self.ignore_index  # [N]
        safe_targets = xp.where(self.valid, self.targets, 0)
        eps = self.label_smoothing
        target_logits = logits[xp.arange(n), safe_targets][:, None]  # [N, 1]
        mean_logits = ops.sum_last_axis(logits) * (1.0 / classes) if eps else None  # [N, 1]
        exp_shifted, row_sums, shift = exp_and_sum(logits, -1)  # [N, C], [N, 1], 0 or [N, 1]
        log_sums = xp.log(row_sums)
        target_shifted = target_logits - shift
        mean_shifted = mean_logits - shift if eps else None
        losses = -(1 - eps) * (target_shifted - log_sums)  # -(1 - eps) log p[target]
        if eps:
            losses -= eps * (mean_shifted - log_sums)  # - eps mean(log p)
        losses = losses[:, 0] * self.valid  # [N]
        self.exp_shifted, self.row_sums, self.safe_targets = exp_shifted, row_sums, safe_targets
        self.count = int(self.valid.sum())
        if self.reduction == "none":
            return losses
        total = losses.sum()
        return total / self.count if self.reduction == "mean" else total

    def _row_weights(self, dtype):
        """Each row's weight in the result [N]: 0 for ignored rows, 1/count under 'mean'."""
        weights = self.valid.astype(dtype)
        if self.reduction == "mean":
            weights /= self.count
        return weights

    def backward(self, gy):
        scale = gy.reshape(-1, 1) if self.reduction == "none" else gy  # [N, 1] or a scalar
        if isinstance(gy, Tensor):  # recorded backward (create_graph): gy joins as a Tensor
            return self._logits_grad(1.0) * scale
        return self._logits_grad(scale)

    def _logits_grad(self, scale):
        """d loss / d logits = (softmax - target distribution) * each row's weight * scale, where
        the target distribution is (1 - smoothing) on the target plus smoothing / C everywhere."""
        xp = ops._xp(self.exp_shifted)
        n, classes = self.exp_shifted.shape
        smoothing = self.label_smoothing
        row_weights = self._row_weights(self.exp_shifted.dtype)[:, None] * scale  # [N, 1]
        factors = row_weights / self.row_sums  # [N, 1]
        one_weight = self.count == n and xp.ndim(scale) == 0  # one weight for all rows: a scalar pass
        grad = xp.empty(self.exp_shifted.shape, dtype=xp.result_type(self.exp_shifted, factors))

        def block(start, stop):  # rows start:stop: softmax * weight - smoothing * weight / C
            rows = xp.multiply(self.exp_shifted[start:stop], factors[start:stop], out=grad[start:stop])
            if smoothing:
                rows -= (row_weights[0, 0] if one_weight else row_weights[start:stop]) * (smoothing / classes)

        parallel.over_blocks(n, block, grain=_ROWS_GRAIN // max(classes, 1), align=16, like=grad)
        grad[xp.arange(n), self.safe_targets] -= (1 - smoothing) * row_weights[:, 0]
        return grad

    def composite(self, logits):
        xp = logits.device.xp
        n, classes = logits.shape
        target_dist = xp.full((n, classes), self.label_smoothing / classes, dtype=logits.dtype)  # [N, C]
        target_dist[xp.arange(n), self.safe_targets] += 1 - self.label_smoothing
        per_row = -(_log_softmax_composite(logits, -1) * Tensor(target_dist)).sum(axis=-1)  # [N]
        losses = per_row * Tensor(self._row_weights(logits.dtype))
        return losses if self.reduction == "none" else losses.sum()


@register("cross_entropy")
def cross_entropy(logits: Tensor, targets, ignore_index: int = -100, reduction: str = "mean",
                  label_smoothing: float = 0.0) -> Tensor:
    """Cross-entropy between logits and integer class targets, with PyTorch's conventions.

    logits: [N, C], or [C], or [N, C, d1, ...] (classes on axis 1, as PyTorch).
    targets: integer class ids, shape [N] (or [], or [N, d1, ...]); `ignore_index` entries
    contribute nothing, and 'mean' divides by the number of the others.
    """
    if reduction not in ("mean", "sum", "none"):
        raise ValueError(f"cross_entropy: reduction must be 'mean', 'sum' or 'none', got {reduction!r}")
    if not 0.0 <= label_smoothing <= 1.0:
        raise ValueError(f"cross_entropy: label_smoothing must be in [0, 1], got {label_smoothing}")
    xp = logits.device.xp
    target_array = xp.asarray(data_of(targets))  # onto the logits' device
    if target_array.dtype.kind not in "iu":
        raise TypeError(f"cross_entropy: targets must be integer class ids, got dtype {target_array.dtype}")
    if logits.ndim == 0:
        raise ValueError("cross_entropy: logits must have at least 1 dimension")
    classes = logits.shape[1] if logits.ndim >= 2 else logits.shape[0]
    expected = (logits.shape[:1] + logits.shape[2:]) if logits.ndim >= 2 else ()
    if target_array.shape != expected:
        raise ValueError(f"cross_entropy: targets have shape {target_array.shape}, expected {expected} "
                         f"for logits of shape {logits.shape}")
    valid = target_array[target_array != ignore_index]
    if valid.size and (int(valid.min()) < 0 or int(valid.max()) >= classes):
        bad = int(valid.min()) if int(valid.min()) < 0 else int(valid.max())
        raise IndexError(f"cross_entropy: target {bad} is out of range for {classes} classes")
    # Bring classes to the last axis and flatten to [N, C].
    if logits.ndim == 1:
        flat_logits, flat_targets = ops.reshape(logits, (1, classes)), target_array.reshape(1)
    elif logits.ndim == 2:
        flat_logits, flat_targets = logits, target_array
    else:
        moved = ops.transpose(logits, (0,) + tuple(range(2, logits.ndim)) + (1,))
        flat_logits, flat_targets = ops.reshape(moved, (-1, classes)), target_array.reshape(-1)
    losses = CrossEntropy(flat_targets.astype(np.int64), ignore_index, reduction, label_smoothing)(flat_logits)
    if reduction == "none":
        return ops.reshape(losses, target_array.shape)
    return losses


# ---------------------------------------------------------------------------------------
# Dropout, embedding, linear
# ---------------------------------------------------------------------------------------
@register("dropout")
def dropout(x: Tensor, p: float = 0.5, training: bool = True) -> Tensor:
    """Zero each element with probability p and scale the rest by 1/(1-p) (inverted dropout)."""
    if not 0.0 <= p <= 1.0:
        raise ValueError(f"dropout probability must be in [0, 1], got {p}")
    if not training or p == 0.0:
        return x
    if p == 1.0:
        return x * 0.0
    device = x.device
    keep = device.keep_mask(x.shape, p)
    return x * Tensor(keep * x.dtype.type(1.0 / (1.0 - p)))  # bool * scale: the kept ones scaled, in x's dtype


@register("embedding")
def embedding(ids, weight: Tensor) -> Tensor:
    """Rows of `weight` [V, C] picked by integer `ids` [...] -> [..., C]."""
    ids = data_of(ids, weight.device)
    if ids.dtype.kind not in "iu":
        raise TypeError(f"embedding: ids must be integers, got dtype {ids.dtype}")
    vocab = weight.shape[0]
    if ids.size and (int(ids.min()) < 0 or int(ids.max()) >= vocab):
        bad = int(ids.min()) if int(ids.min()) < 0 else int(ids.max())
        raise IndexError(f"embedding: token id {bad} is out of range for a vocabulary of {vocab}")
    return ops.getitem(weight, ids)


# With this few rows (decoding one token per sequence), a Linear is one pass over its
# weights, bound by memory. NumPy's einsum streams each weight row once in the calling
# thread; OpenBLAS wakes and joins its threads for every call, which costs more than the
# work at this size and collapses when other processes share the cores (measured on a
# loaded 2-core machine, SmolLM2's layer shapes: einsum 1.5x faster than 1-thread OpenBLAS
# for one row, 30x faster than 2-thread OpenBLAS; equal at 4 rows, slower above).
_FEW_ROWS = 2


class Linear(Function):
    """y = x @ W^T + b in one node: one GEMM forward, two GEMMs and a sum backward."""

    autocast_policy = "low"

    def forward(self, x, weight, bias=None):
        x2 = x.reshape(-1, x.shape[-1])  # [..., in] -> [N, in]: one large GEMM
        if x2.shape[0] <= _FEW_ROWS and isinstance(x2, np.ndarray):
            y = np.einsum("ni,oi->no", x2, weight)  # token-by-token decoding: see _FEW_ROWS
            if bias is not None:
                y += bias
        else:
            y = parallel.matmul(x2, weight.T, bias)  # [N, in] @ [in, out] + [out] -> [N, out]
        return y.reshape(x.shape[:-1] + (weight.shape[0],))

    def backward(self, gy):
        x, weight = self.inputs[0], self.inputs[1]
        g2 = gy.reshape(-1, gy.shape[-1])  # [N, out]
        grads = [None, None]
        if x.requires_grad:
            grads[0] = parallel.matmul(g2, weight.data).reshape(x.shape)  # [N, out] @ [out, in] -> [..., in]
        if weight.requires_grad:
            grads[1] = parallel.matmul(g2.T, x.data.reshape(-1, x.shape[-1]))  # [out, N] @ [N, in] -> [out, in]
        if len(self.inputs) == 3:
            grads.append(ops.sum_leading_axes(g2, 1) if self.inputs[2].requires_grad else None)  # [out]
        return tuple(grads)

    def composite(self, x, weight, bias=None):
        y = ops.matmul(x, weight.T)  # [..., in] @ [in, out] -> [..., out]
        return y if bias is None else y + bias


@register("linear")
def linear(x: Tensor, weight: Tensor, bias: Tensor | None = None) -> Tensor:
    """x @ weight.T + bias, with weight [out, in] as PyTorch stores it. x: [..., in] -> [..., out]."""
    if weight.ndim != 2 or x.ndim == 0 or x.shape[-1] != weight.shape[1]:
        raise ValueError(f"linear: input of shape {x.shape} does not fit weight of shape {weight.shape} "
                         f"(expected the input's last dim to be {weight.shape[1] if weight.ndim == 2 else '?'})")
    if bias is not None and bias.shape != (weight.shape[0],):
        raise ValueError(f"linear: bias has shape {bias.shape}, expected ({weight.shape[0]},)")
    return Linear()(x, weight, bias) if bias is not None else Linear()(x, weight)


# ---------------------------------------------------------------------------------------
# Attention
# ---------------------------------------------------------------------------------------
def _copy_rows(destination, source) -> None:
    """destination[...] = source, for arrays whose last axis is the same contiguous row in
    both (a head's D features), their other axes in any order (heads split or merged).

    NumPy copies a transposed array element by element, and with rows of only 32 or 64
    floats that runs at a fraction of memory speed. Viewed as one opaque (void) element per
    row, each row moves as one block: splitting all-MiniLM-L6-v2's [256, 31, 3 * 12 * 32]
    projection into heads, 13.0 -> 5.3 ms; a GPT's [16, 128, 3 * 4 * 64], 252 -> 185 us.
    The bytes are the same either way."""
    width = source.shape[-1] * source.itemsize
    if (type(source) is np.ndarray and type(destination) is np.ndarray and width and source.dtype == destination.dtype
            and source.strides[-1] == source.itemsize and destination.strides[-1] == destination.itemsize):
        row = np.dtype((np.void, width))
        destination.view(row)[..., 0] = source.view(row)[..., 0]
    else:
        destination[...] = source


class SplitHeads(Function):
    """[B, T, parts * H * D] -> `parts` tensors [B, H, T, D] (e.g. q, k, v from one projection)."""

    def __init__(self, num_heads: int, parts: int):
        self.num_heads, self.parts = num_heads, parts

    def forward(self, x):
        view = x.reshape(self._split_shape(x.shape)).transpose(2, 0, 3, 1, 4)  # [B, T, P, H, D] -> [P, B, H, T, D]
        # One copy here makes each head's [T, D] matrix contiguous. Left as strided views,
        # every matmul in attention's forward and backward copies them again (6 copies).
        split = ops._xp(x).empty(view.shape, dtype=x.dtype)
        _copy_rows(split, view)
        return tuple(split[i] for i in range(self.parts))

    def backward(self, *grads):
        gx = ops._xp(grads[0]).empty(self._split_shape(self.inputs[0].shape), dtype=grads[0].dtype)  # [B, T, P, H, D]
        for part, grad in enumerate(grads):
            _copy_rows(gx[:, :, part], grad.transpose(0, 2, 1, 3))  # [B, H, T, D] -> [B, T, H, D]
        return gx.reshape(self.inputs[0].shape)  # -> [B, T, P * H * D]

    def composite(self, x):
        split = ops.transpose(ops.reshape(x, self._split_shape(x.shape)), (2, 0, 3, 1, 4))
        return tuple(split[i] for i in range(self.parts))

    def _split_shape(self, shape) -> tuple:
        batch, length, width = shape
        return batch, length, self.parts, self.num_heads, width // (self.parts * self.num_heads)


class MergeHeads(Function):
    """[B, H, T, D] -> [B, T, H * D]: the heads side by side again."""

    def forward(self, x):
        batch, heads, length, head_dim = x.shape
        merged = ops._xp(x).empty((batch, length, heads, head_dim), dtype=x.dtype)
        _copy_rows(merged, x.transpose(0, 2, 1, 3))  # [B, H, T, D] -> [B, T, H, D]
        return merged.reshape(batch, length, heads * head_dim)

    def backward(self, gy):
        batch, heads, length, head_dim = self.inputs[0].shape
        # contiguous, as SplitHeads' outputs: attention's backward multiplies it twice
        gx = ops._xp(gy).empty(self.inputs[0].shape, dtype=gy.dtype)
        _copy_rows(gx, gy.reshape(batch, length, heads, head_dim).transpose(0, 2, 1, 3))  # -> [B, H, T, D]
        return gx

    def composite(self, x):
        batch, heads, length, head_dim = x.shape
        return ops.reshape(ops.transpose(x, (0, 2, 1, 3)), (batch, length, heads * head_dim))


@register("split_heads")
def split_heads(x: Tensor, num_heads: int, parts: int = 1) -> tuple:
    """Cut [B, T, parts * C] into `parts` per-head tensors [B, H, T, C / H]."""
    if x.ndim != 3 or x.shape[-1] % (parts * num_heads):
        raise ValueError(f"split_heads: expected [B, T, {parts} * heads * head_dim] with {num_heads} heads, "
                         f"got shape {x.shape}")
    return SplitHeads(num_heads, parts)(x)


@register("merge_heads")
def merge_heads(x: Tensor) -> Tensor:
    """[B, H, T, D] -> [B, T, H * D]."""
    if x.ndim != 4:
        raise ValueError(f"merge_heads: expected [B, H, T, D], got shape {x.shape}")
    return MergeHeads()(x)


# Attention is split across threads by sequences, each thread taking at least this many
# multiply-adds of scores (its softmax and products come with them): ~0.2 ms of work.
_ATTENTION_GRAIN = 1 << 22


class Attention(Function):
    """softmax(q k^T * scale + mask) v as one node (dropout on the weights optional).

    One node instead of seven (matmul, transpose, scale, mask, softmax, dropout, matmul):
    fewer temporaries in training and far less per-token overhead in generation. The
    weights are saved for backward:
      gv = P'^T gy,  gP' = gy v^T,  gS = P * (gP - sum(gP * P)) * scale,  gq = gS k,  gk = gS^T q
    where P' = P * dropout keep-mask. Scores and softmax run in float32 for float16 inputs
    (`scores_dtype`), in the forward and in the composite alike.
    """

    autocast_policy = "low"

    def __init__(self, mask, scale: float, keep, return_weights: bool):
        self.mask, self.scale, self.keep, self.return_weights = mask, scale, keep, return_weights

    def forward(self, q, k, v):
        xp = ops._xp(q)
        scores_shape = np.broadcast_shapes(q.shape[:-2], k.shape[:-2]) + (q.shape[-2], k.shape[-2])
        self.probabilities = xp.empty(scores_shape, dtype=scores_dtype(xp.result_type(q, k)))  # [..., L, S]
        out = xp.empty(scores_shape[:-1] + (v.shape[-1],), dtype=v.dtype)  # [..., L, Ev]
        weights_out = xp.empty(scores_shape, dtype=v.dtype) if self.return_weights else None

        def block(rows):  # the sequences `rows` of the batch (all of them when unsplit)
            scores = ops.MatMul().forward(q[rows], k[rows].swapaxes(-1, -2))  # [..., L, E] @ [..., E, S] -> [..., L, S]
            scores = _in_dtype(scores, self.probabilities.dtype)
            scores *= self.scale
            mask = self._part(self.mask, rows)
            if mask is not None:
                if mask.dtype == bool:  # as a 0 / -inf array of the mask's (small) shape, added in place:
                    # 3x faster than where(), which builds a second full-size scores array
                    zero, minus_inf = scores.dtype.type(0), scores.dtype.type(-np.inf)
                    scores += xp.where(mask, zero, minus_inf)
                else:
                    scores += mask
            exp_scores, sums, _ = exp_and_sum(scores, -1)
            probabilities = xp.divide(exp_scores, sums, out=self.probabilities[rows])  # softmax: [..., L, S]
            keep = self._part(self.keep, rows)
            weights = _in_dtype(probabilities if keep is None else probabilities * keep, v.dtype)
            xp.matmul(weights, ops._gemm_ready(v[rows]), out=out[rows])  # [..., L, S] @ [..., S, Ev] -> [..., L, Ev]
            if weights_out is not None:
                weights_out[rows] = weights

        self._over_batch(q, k, v, block)
        return (out, weights_out) if self.return_weights else out

    def backward(self, gy, g_weights=None):
        q, k, v = (t.data for t in self.inputs)
        xp = ops._xp(gy)
        gq, gk = xp.empty(q.shape, dtype=q.dtype), xp.empty(k.shape, dtype=q.dtype)
        gv = xp.empty(v.shape, dtype=xp.result_type(v, gy))

        def block(rows):  # the sequences `rows` of the batch (all of them when unsplit)
            probabilities, keep, g_out = self.probabilities[rows], self._part(self.keep, rows), gy[rows]
            weights = probabilities if keep is None else probabilities * keep
            g_dropped = ops._matmul(g_out, v[rows].swapaxes(-1, -2))  # [..., L, Ev] @ [..., Ev, S] -> [..., L, S]
            if g_weights is not None:
                g_dropped = g_dropped + g_weights[rows]
            g_probabilities = g_dropped if keep is None else g_dropped * keep
            # gS = P * (gP - sum(gP * P)) * scale, in one buffer (create_graph runs the composite,
            # so this rule only ever sees arrays)
            g_scores = g_probabilities * probabilities
            row_sums = ops.sum_last_axis(g_scores)  # [..., L, 1]
            xp.subtract(g_probabilities, row_sums, out=g_scores)
            g_scores *= probabilities
            g_scores *= self.scale
            g_scores = _in_dtype(g_scores, q.dtype)  # float32 -> float16 under mixed precision
            xp.matmul(g_scores, ops._gemm_ready(k[rows]), out=gq[rows])  # [..., L, S] @ [..., S, E]
            xp.matmul(g_scores.swapaxes(-1, -2), ops._gemm_ready(q[rows]), out=gk[rows])  # [..., S, L] @ [..., L, E]
            weights_t = _in_dtype(weights, v.dtype).swapaxes(-1, -2)
            xp.matmul(weights_t, ops._gemm_ready(g_out), out=gv[rows])  # [..., S, L] @ [..., L, Ev]

        self._over_batch(q, k, v, block)
        return gq, gk, gv

    @staticmethod
    def _over_batch(q, k, v, block) -> None:
        """Run block(rows) over the batch: split across threads by sequences when q, k and v
        share their leading [B, ...] axes (each sequence's attention is independent), else
        block(everything) at once."""
        if q.ndim < 3 or not q.shape[:-2] == k.shape[:-2] == v.shape[:-2]:
            block(Ellipsis)
            return
        per_sequence = q.size // q.shape[0] * k.shape[-2]  # multiply-adds of a sequence's scores
        parallel.over_blocks(q.shape[0], lambda start, stop: block(slice(start, stop)),
                             grain=-(-_ATTENTION_GRAIN // per_sequence), like=q)

    def _part(self, array, rows):
        """The rows' part of a mask or keep array that broadcasts against the scores [B, ..., L, S]
        (one with fewer axes, or a batch axis of 1, is shared by every sequence)."""
        if array is None or rows is Ellipsis or array.ndim < self.probabilities.ndim or array.shape[0] == 1:
            return array
        return array[rows]

    def composite(self, q, k, v):
        scores = ops.matmul(q, ops.swapaxes(k, -1, -2))  # [..., L, S]
        scores = ops.astype(scores, scores_dtype(scores.dtype)) * self.scale
        if self.mask is not None:
            scores = ops.where(self.mask, scores, -np.inf) if self.mask.dtype == bool else scores + Tensor(self.mask)
        probabilities = _softmax_composite(scores, -1)
        weights = probabilities if self.keep is None else probabilities * Tensor(self.keep)
        out = ops.matmul(ops.astype(weights, v.dtype), v)  # [..., L, S] @ [..., S, Ev] -> [..., L, Ev]
        return (out, weights) if self.return_weights else out


def scores_dtype(dtype):
    """The dtype attention scores and their softmax are computed in: float32 for float16
    inputs (mixed precision runs the matmuls in float16, but the softmax's sums and
    exponentials, and a padding mask's large negative numbers, need float32's range)."""
    return np.dtype(np.float32) if dtype == np.float16 else dtype


def _in_dtype(x, dtype):
    """x (array or Tensor) as `dtype`, without a copy when it already is."""
    return x if x.dtype == dtype else x.astype(dtype)


@register("scaled_dot_product_attention")
def scaled_dot_product_attention(q: Tensor, k: Tensor, v: Tensor, attn_mask=None, is_causal: bool = False,
                                 dropout_p: float = 0.0, scale: float | None = None, training: bool = True,
                                 return_weights: bool = False):
    """softmax(q k^T * scale + mask) v, with PyTorch's mask semantics.

    q: [..., L, E], k: [..., S, E], v: [..., S, Ev] -> [..., L, Ev].
    attn_mask: boolean (True = may attend) or float (added to the scores), broadcastable
    to [..., L, S]. is_causal: query i attends to keys 0..i (top-left aligned, as PyTorch).
    A query row that may attend to nothing gives NaN, as in PyTorch.
    return_weights: also return the attention weights [..., L, S] (after dropout).
    """
    if q.shape[-1] != k.shape[-1]:
        raise ValueError(f"attention: q {q.shape} and k {k.shape} differ in the last (feature) dim")
    if k.shape[-2] != v.shape[-2]:
        raise ValueError(f"attention: k {k.shape} and v {v.shape} differ in the sequence dim")
    if is_causal and attn_mask is not None:
        raise ValueError("attention: pass either attn_mask or is_causal=True, not both")
    xp = q.device.xp
    length, source = q.shape[-2], k.shape[-2]
    scores_shape = np.broadcast_shapes(q.shape[:-2], k.shape[:-2]) + (length, source)
    scale = 1.0 / math.sqrt(q.shape[-1]) if scale is None else scale
    mask = None
    if is_causal:
        mask = xp.tril(xp.ones((length, source), dtype=bool))
    elif attn_mask is not None:
        mask = data_of(attn_mask, q.device)
        try:
            np.broadcast_shapes(mask.shape, scores_shape)
        except ValueError:
            raise ValueError(f"attention: attn_mask of shape {mask.shape} does not broadcast to the scores "
                             f"{scores_shape}") from None
        if mask.dtype != bool:
            mask = mask.astype(scores_dtype(q.dtype))
    keep = None
    if dropout_p > 0.0 and training:
        if not 0.0 <= dropout_p < 1.0:
            raise ValueError(f"attention: dropout_p must be in [0, 1), got {dropout_p}")
        keep = q.device.keep_mask(scores_shape, dropout_p)
        keep = keep * q.dtype.type(1.0 / (1.0 - dropout_p))  # bool * scale, in q's dtype
    return Attention(mask, scale, keep, return_weights)(q, k, v)


# ---------------------------------------------------------------------------------------
# Recurrent steps (nn.RNN, nn.LSTM)
# ---------------------------------------------------------------------------------------
class Unbind(Function):
    """Split [T, ...] into T tensors [...], as one graph node (its backward stacks the
    gradients once, where T separate index ops would each scatter into a full-size zero array)."""

    def forward(self, x):
        return tuple(x[t] for t in range(x.shape[0]))

    def backward(self, *grads):
        return ops._xp(grads[0]).stack(grads, axis=0)

    def composite(self, x):
        return tuple(x[t] for t in range(x.shape[0]))


def unbind(x: Tensor) -> tuple:
    """[T, ...] -> T tensors [...]."""
    return Unbind()(x)


class LSTMCell(Function):
    """(gates [B, 4H] before activation, c_prev [B, H]) -> (h [B, H], c [B, H]), gates in
    PyTorch's order i, f, g, o:  c = f * c_prev + i * g,  h = o * tanh(c)."""

    def forward(self, gates, c_prev):
        xp = ops._xp(gates)
        hidden = c_prev.shape[-1]
        # sigmoid(x) = 0.5 (1 + tanh(x / 2)): no overflow, the same formula as ops.sigmoid.
        acts = xp.tanh(gates * 0.5)
        acts += 1
        acts *= 0.5
        acts[:, 2 * hidden : 3 * hidden] = xp.tanh(gates[:, 2 * hidden : 3 * hidden])
        i, f, g, o = (acts[:, k * hidden : (k + 1) * hidden] for k in range(4))
        c = f * c_prev
        c += i * g
        tanh_c = xp.tanh(c)
        self.saved = (i, f, g, o, tanh_c)
        return o * tanh_c, c

    def backward(self, grad_h, grad_c):
        c_prev = self.inputs[1]
        i, f, g, o, tanh_c = self.saved
        grad_c_total = grad_c + grad_h * o * (1 - tanh_c * tanh_c)  # through h = o tanh(c), and directly
        grad_gates = ops._xp(grad_h).concatenate([
            grad_c_total * g * i * (1 - i),  # pre-activation of i
            grad_c_total * c_prev.data * f * (1 - f),  # f
            grad_c_total * i * (1 - g * g),  # g
            grad_h * tanh_c * o * (1 - o),  # o
        ], axis=-1)
        grad_c_prev = grad_c_total * f if c_prev.requires_grad else None
        return grad_gates, grad_c_prev

    def composite(self, gates, c_prev):
        hidden = c_prev.shape[-1]
        i, f, o = (ops.sigmoid(gates[:, k * hidden : (k + 1) * hidden]) for k in (0, 1, 3))
        g = ops.tanh(gates[:, 2 * hidden : 3 * hidden])
        c = f * c_prev + i * g
        return o * ops.tanh(c), c


def lstm_cell(gates: Tensor, c_prev: Tensor) -> tuple:
    """One LSTM step's gate arithmetic: (gates [B, 4H], c_prev [B, H]) -> (h, c), each [B, H]."""
    return LSTMCell()(gates, c_prev)


# OpenBLAS (NumPy's BLAS) multiplies small matrices, M*N*K <= 100^3, with a kernel that reads
# the operands where they lie; larger products first copy ("pack") them into blocks. An LSTM
# step's GEMM is just above that size (W_hh h_{t-1}: [1024, 256] @ [256, 16] at H=256, B=16),
# and packing the 1 MB weight on every step costs about a quarter of the product, so the time
# loop multiplies in blocks of rows that stay under the limit (AVX-512 EPYC, one thread: 105 us
# as one call, 80 us as 5 blocks). The small kernel runs in the calling thread: with 2 BLAS
# threads one call took 55 us on idle cores, but its thread handoff collapses when other
# processes share the cores (a whole layer's forward + backward 2x slower at the median).
_SMALL_GEMM = 100**3


# LSTMLayer works beside its time loop in pieces of this many steps: forward, a piece's input
# projection is ready before the loop reaches it; backward, a piece's part of W_hh's gradient
# is made once the loop has left it. Each is ~1.3 ms on one core at H=256, B=16 (67M
# multiply-adds), about as long as the loop's 16 steps.
_LSTM_PIECE = 16


def _step_product(matrix, out) -> Callable:
    """The time loop's per-step GEMM: returns multiply(v) that writes matrix [M, K] @ v [K, N]
    into out [M, N], as products that each stay under _SMALL_GEMM. When M splits into equal
    blocks, the blocks are one call of NumPy's stacked matmul, [blocks, M / blocks, K] @ v
    (the loop over blocks runs in C: 75 us against 84 us for five calls at H=256, B=16);
    otherwise one call per block. Every row is the same sum either way. On the GPU (or when
    even one row is too big): one product."""
    xp = _backend.array_module(out)
    rows, inner = matrix.shape
    per_block = _SMALL_GEMM // (inner * out.shape[1])
    if not isinstance(matrix, np.ndarray) or per_block < 1 or per_block >= rows:
        return lambda v: xp.matmul(matrix, v, out=out)
    fewest = -(-rows // per_block)
    for count in range(fewest, 4 * fewest + 1):
        if rows % count == 0:
            stacked = np.ascontiguousarray(matrix).reshape(count, rows // count, inner)  # [blocks, M / blocks, K]
            stacked_out = out.reshape(count, rows // count, out.shape[1])  # a view: out is contiguous
            return lambda v: np.matmul(stacked, v, out=stacked_out)
    size = -(-rows // fewest)  # no equal split near that size: blocks of ceil(M / blocks) rows
    blocks = [(matrix[start : start + size], out[start : start + size]) for start in range(0, rows, size)]

    def multiply(v):
        for matrix_rows, out_rows in blocks:
            np.matmul(matrix_rows, v, out=out_rows)

    return multiply


class LSTMLayer(Function):
    """A whole LSTM layer over time as one node (gates i, f, g, o in PyTorch's order):

        (x [T, B, I], weight_ih [4H, I], bias [4H] (b_ih + b_hh; optional), weight_hh [4H, H],
         h0 [B, H], c0 [B, H]) -> (out [T, B, H] = h_1..h_T, h_T [B, H], c_T [B, H])

    The input projection W_ih x_t + b does not depend on h: it is computed for many steps at
    once, [4H, I] @ [I, n*B] per piece of _LSTM_PIECE steps, by a thread of minilm's while the
    time loop (one thread: each step needs the one before) runs the piece before it (the
    first piece, which the loop waits for, by both threads).

    The time loop runs on arrays in buffers made once, each step feature-major: gates
    [4H, B], h and c [H, B] (the projection is transposed on the way in, the outputs on the
    way out). Two reasons: a step's GEMM is then W_hh [4H, H] @ h_{t-1} [H, B], which
    OpenBLAS runs about twice as fast as the same product laid out [B, H] @ [H, 4H] (B is
    small: this is a skinny GEMM); and each gate is a contiguous block of rows, so one call
    covers several gates. The forward keeps its rows in the order i, f, o, g (the three
    sigmoid gates together: one call each for their arithmetic); everything it hands on is
    in PyTorch's order.

    Per step, forward is one GEMM and the gate arithmetic of `LSTMCell` in place. Backward
    through time first computes, a piece of steps at a time (all but the first on a thread of
    minilm's while the loop runs), the gate derivatives that do not depend on the gradient
    flowing back (i (1 - i) g, ...); the reverse loop then only scales them by dc_t or dh_t
    and runs one GEMM, W_hh^T dgates_t. W_hh's gradient, sum_t dgates_t h_{t-1}^T, is made
    piece by piece beside the loop; the input's, W_ih's and the bias's are those of a Linear
    layer given the gate gradients of all steps.
    """

    autocast_policy = "low"

    def __init__(self, has_bias: bool = True):
        self.has_bias = has_bias

    def forward(self, x, weight_ih, *rest):
        bias = rest[0] if self.has_bias else None
        weight_hh, h0, c0 = rest[-3:]
        xp = ops._xp(x)
        steps, batch, _ = x.shape
        four_hidden, hidden = weight_hh.shape
        dtype = xp.result_type(x, weight_ih, weight_hh, h0)
        # Rows in the order i, f, o, g: (PyTorch's rows, their place here) for (i, f), o and g.
        reorder = ((slice(0, 2 * hidden), slice(0, 2 * hidden)),
                   (slice(3 * hidden, four_hidden), slice(2 * hidden, 3 * hidden)),
                   (slice(2 * hidden, 3 * hidden), slice(3 * hidden, four_hidden)))
        acts = xp.empty((steps, four_hidden, batch), dtype=dtype)  # pre-activations, then activations

        def in_forward_order(rows):
            """A copy of rows [4H, ...] (PyTorch's order) in the order i, f, o, g, the rows of
            the sigmoid gates halved (see below)."""
            placed = xp.empty(rows.shape, dtype=dtype)
            for source, target in reorder:
                placed[target] = rows[source]
            placed[: 3 * hidden] *= 0.5
            return placed

        weight_in = in_forward_order(weight_ih)  # [4H, I]
        bias_in = None if bias is None else in_forward_order(bias)[:, None]  # [4H, 1]
        # One piece alone (a short sequence) may split its GEMM over the threads; with more,
        # each piece's GEMM runs on one, the first here and the others beside it.
        multiply = parallel.matmul if steps <= _LSTM_PIECE else xp.matmul

        def project(first: int, last: int) -> None:
            """acts[first:last] = W_ih x_t + b for steps first..last-1 (rows as weight_in's).
            Made feature-major, [4H, I] @ [I, n*B], the product is copied into the steps'
            [4H, B] blocks in runs of B numbers (made [n*B, 4H], it would be transposed
            number by number: 1.8 against 1.5 ms a piece at H=256, B=16)."""
            xs = x[first:last].reshape(-1, x.shape[-1])  # [n*B, I]
            projected = multiply(weight_in, xs.T)  # [4H, n*B]
            if bias_in is not None:
                projected += bias_in
            acts[first:last] = projected.reshape(four_hidden, last - first, batch).transpose(1, 0, 2)  # [n, 4H, B]

        # The loop waits for the first piece, so the two threads make it together: its first
        # half here, its second half and then the other pieces there, each before the loop
        # needs it (a piece's GEMM takes about as long as the loop's 16 steps).
        half = _LSTM_PIECE // 2
        pieces = [(0, steps)] if steps <= _LSTM_PIECE else [(0, half), (half, _LSTM_PIECE)]
        pieces += [(start, min(steps, start + _LSTM_PIECE)) for start in range(_LSTM_PIECE, steps, _LSTM_PIECE)]
        projections = {first: parallel.start(lambda first=first, last=last: project(first, last), like=acts)
                       for first, last in pieces[1:]}
        project(*pieces[0])
        # sigmoid(x) = (1 + tanh(x / 2)) / 2, the formula of ops.sigmoid (no overflow). With the
        # rows of i, f, o halved in W_ih, b and W_hh (exact: a power of two), one tanh per
        # step covers all four gates.
        weight = in_forward_order(weight_hh)  # [4H, H]
        cells = xp.empty((steps, hidden, batch), dtype=xp.result_type(acts, c0))  # c_1..c_T
        tanh_cells = xp.empty_like(cells)
        hs = xp.empty((steps, hidden, batch), dtype=dtype)  # h_1..h_T
        recurrent = xp.empty((four_hidden, batch), dtype=dtype)  # W_hh h_{t-1}
        input_part = xp.empty((hidden, batch), dtype=cells.dtype)  # i * g
        recurrent_product = _step_product(weight, recurrent)
        h, c = h0.T, c0.T  # [B, H] -> [H, B]
        for t in range(steps):
            if t in projections:
                projections.pop(t).result()  # this piece's projection is in acts
            gates = acts[t]  # [4H, B]
            recurrent_product(h)  # W_hh [4H, H] @ h [H, B]
            gates += recurrent
            xp.tanh(gates, out=gates)
            sigmoids = gates[: 3 * hidden]  # i, f and o: (1 + tanh) / 2
            sigmoids += 1
            sigmoids *= 0.5
            i, f, o, g = (gates[k * hidden : (k + 1) * hidden] for k in range(4))
            c = xp.multiply(f, c, out=cells[t])  # c = f * c_prev + i * g
            c += xp.multiply(i, g, out=input_part)
            xp.tanh(c, out=tanh_cells[t])
            h = xp.multiply(o, tanh_cells[t], out=hs[t])  # h = o * tanh(c)
        out = xp.ascontiguousarray(hs.transpose(0, 2, 1))  # [T, H, B] -> [T, B, H]
        self.saved = (acts, cells, tanh_cells, out)
        return out, out[-1].copy(), xp.ascontiguousarray(cells[-1].T)

    def backward(self, grad_out, grad_h, grad_c):
        acts, cells, tanh_cells, out = self.saved
        x_input, weight_ih_input = self.inputs[0], self.inputs[1]
        weight_hh_input = self.inputs[-3]
        weight_hh, h0, c0 = (t.data for t in self.inputs[-3:])
        xp = ops._xp(acts)
        steps, four_hidden, batch = acts.shape
        hidden = four_hidden // 4
        i, f, o, g = (acts[:, k * hidden : (k + 1) * hidden] for k in range(4))  # each [T, H, B] (forward's order)
        # With dh, dc the gradients reaching h_t and c_t (dc including dh o (1 - tanh(c)^2),
        # through h = o tanh(c)), the pre-activation gradients are
        #   di = dc g i (1 - i),  df = dc c_prev f (1 - f),  dg = dc i (1 - g^2),  do = dh tanh(c) o (1 - o)
        # Their factors after dc and dh ("local") do not depend on the gradient, in PyTorch's
        # order i, f, g, o (the rows dc scales are then one block). They are made a piece of
        # steps at a time: the loop's first piece (the last steps) here, the others on a
        # thread of minilm's while the loop runs.
        local = xp.empty_like(acts)  # [T, 4H, B]
        local_i, local_f, local_g, local_o = (local[:, k * hidden : (k + 1) * hidden] for k in range(4))
        through_h = xp.empty_like(tanh_cells)  # o (1 - tanh(c)^2): [T, H, B]
        grad_steps = xp.empty((steps, hidden, batch), dtype=grad_out.dtype)  # grad_out feature-major

        def prepare(first: int, last: int) -> None:
            """local, through_h and grad_steps for steps first..last-1."""
            span = slice(first, last)
            for s, local_s in ((acts[span, : 2 * hidden], local[span, : 2 * hidden]), (o[span], local_o[span])):
                xp.subtract(1, s, out=local_s)  # sigmoid' = s (1 - s), for i, f and o
                local_s *= s
            local_i[span] *= g[span]
            if first == 0:
                local_f[0] *= c0.T
            local_f[max(first, 1) : last] *= cells[max(first, 1) - 1 : last - 1]  # c_{t-1}
            xp.multiply(g[span], g[span], out=local_g[span])
            xp.subtract(1, local_g[span], out=local_g[span])
            local_g[span] *= i[span]
            local_o[span] *= tanh_cells[span]
            xp.multiply(tanh_cells[span], tanh_cells[span], out=through_h[span])
            xp.subtract(1, through_h[span], out=through_h[span])
            through_h[span] *= o[span]
            grad_steps[span] = grad_out[span].transpose(0, 2, 1)  # [n, B, H] -> [n, H, B]

        # dgates_t to h_{t-1} is W_hh^T [H, 4H] @ dgates_t [4H, B]: W_hh^T is copied out
        # (contiguous for _step_product, ~0.3 ms at H=256) on a thread of minilm's, first.
        dh = xp.array(grad_h.T, dtype=acts.dtype, order="C")  # [H, B]; copies: updated in place below
        making_product = parallel.start(lambda: _step_product(weight_hh.T, dh), like=acts)
        starts = range(0, steps, _LSTM_PIECE)  # the pieces of steps, as the loop below leaves them
        prepared = {min(steps, start + _LSTM_PIECE) - 1: parallel.start(  # keyed by the step that needs them first
            lambda first=start: prepare(first, min(steps, first + _LSTM_PIECE)), like=acts)
            for start in reversed(starts[:-1])}  # in the order the loop needs them
        prepare(starts[-1], steps)
        grad_gates = xp.empty_like(acts)  # [T, 4H, B], PyTorch's order
        grad_projected = xp.empty((steps, batch, four_hidden), dtype=grad_gates.dtype)  # the same, [T, B, 4H]
        wants_weight = weight_hh_input.requires_grad
        h_prev = xp.concatenate([h0[None], out[:-1]], axis=0)  # h_0..h_{T-1}: [T, B, H]

        def finish(first: int, last: int, split: bool = False):
            """Steps first..last-1, whose gate gradients are final: transpose them into
            grad_projected and return their part of W_hh's gradient, sum_t dgates_t h_{t-1}^T."""
            grad_projected[first:last] = grad_gates[first:last].transpose(0, 2, 1)  # [n, 4H, B] -> [n, B, 4H]
            if not wants_weight:
                return None
            rows = grad_projected[first:last].reshape(-1, four_hidden).T  # [4H, n*B]
            inputs = h_prev[first:last].reshape(-1, hidden)  # [n*B, H]
            part = xp.empty((four_hidden, hidden), dtype=xp.result_type(rows, inputs))
            parallel.over_blocks(four_hidden, lambda a, b: xp.matmul(rows[a:b], inputs, out=part[a:b]),
                                 grain=four_hidden if not split else 64, align=16, like=acts)
            return part

        # The reverse loop runs on one thread (each step needs the one after it). Meanwhile a
        # thread of minilm's finishes each piece of _LSTM_PIECE steps as soon as the loop has
        # left it; the last piece (the first steps) is split over the threads once the loop is
        # done. W_hh's gradient is the sum of the pieces' parts, in time order: the same
        # numbers on any number of threads.
        dc = xp.array(grad_c.T, dtype=cells.dtype, order="C")
        scratch = xp.empty((hidden, batch), dtype=cells.dtype)
        to_previous_h = making_product.result()  # [H, 4H] @ [4H, B] into dh
        pending, piece_end = [], steps
        for t in range(steps - 1, -1, -1):
            if t in prepared:
                prepared.pop(t).result()  # this piece's local factors are made
            dgates = grad_gates[t]  # [4H, B]
            dh += grad_steps[t]  # h_t feeds out[t] and step t + 1
            dc += xp.multiply(dh, through_h[t], out=scratch)  # c_t feeds h_t and c_{t+1}
            xp.multiply(dc, local[t, : 3 * hidden].reshape(3, hidden, batch),  # i, f, g
                        out=dgates[: 3 * hidden].reshape(3, hidden, batch))
            xp.multiply(dh, local_o[t], out=dgates[3 * hidden :])  # o
            dc *= f[t]  # to c_{t-1}
            to_previous_h(dgates)
            if t % _LSTM_PIECE == 0 and t > 0:  # steps t..piece_end-1 are final
                pending.append(parallel.start(lambda first=t, last=piece_end: finish(first, last), like=acts))
                piece_end = t
        parts = [finish(0, piece_end, split=True)] + [piece.result() for piece in reversed(pending)]
        grad_weight_hh = None
        if wants_weight:
            grad_weight_hh = parts[0]
            for part in parts[1:]:
                grad_weight_hh += part  # [4H, H]
        # The input projection's gradients, as Linear's backward: [T*B, 4H] -> x, W_ih, b
        grad_rows = grad_projected.reshape(-1, four_hidden)
        grads = [None, None]
        if x_input.requires_grad:
            grads[0] = parallel.matmul(grad_rows, weight_ih_input.data).reshape(x_input.shape)  # [T*B, 4H] @ [4H, I]
        if weight_ih_input.requires_grad:
            x_rows = x_input.data.reshape(-1, x_input.shape[-1])
            grads[1] = parallel.matmul(grad_rows.T, x_rows)  # [4H, T*B] @ [T*B, I]
        if self.has_bias:
            grads.append(ops.sum_leading_axes(grad_rows, 1) if self.inputs[2].requires_grad else None)  # [4H]
        return (*grads, grad_weight_hh, xp.ascontiguousarray(dh.T), xp.ascontiguousarray(dc.T))

    def composite(self, x, weight_ih, *rest):
        weight_hh, h0, c0 = rest[-3:]
        projected = Linear().composite(x, weight_ih, *rest[: len(rest) - 3])  # [T, B, 4H]
        weight_t = ops.swapaxes(weight_hh, 0, 1)
        h, c, steps = h0, c0, []
        for t in range(projected.shape[0]):
            h, c = LSTMCell().composite(projected[t] + h @ weight_t, c)
            steps.append(h)
        return ops.stack(steps, axis=0), h, c


def lstm_layer(x: Tensor, weight_ih: Tensor, bias: Tensor | None, weight_hh: Tensor, h0: Tensor,
               c0: Tensor) -> tuple:
    """A whole LSTM layer: (x [T, B, I], weight_ih [4H, I], bias [4H] (b_ih + b_hh) or None,
    weight_hh [4H, H], h0, c0 [B, H]) -> (out [T, B, H], h_T, c_T)."""
    hidden = h0.shape[-1]
    if x.ndim != 3 or x.shape[0] == 0:
        raise ValueError(f"lstm_layer: expected x [T >= 1, B, I], got shape {x.shape}")
    if weight_ih.shape != (4 * hidden, x.shape[-1]) or weight_hh.shape != (4 * hidden, hidden):
        raise ValueError(f"lstm_layer: with x {x.shape} and H={hidden}, expected weight_ih [{4 * hidden}, "
                         f"{x.shape[-1]}] and weight_hh [{4 * hidden}, {hidden}], got {weight_ih.shape} and "
                         f"{weight_hh.shape}")
    if bias is not None and bias.shape != (4 * hidden,):
        raise ValueError(f"lstm_layer: bias has shape {bias.shape}, expected ({4 * hidden},)")
    inputs = (x, weight_ih) + ((bias,) if bias is not None else ()) + (weight_hh, h0, c0)
    return LSTMLayer(bias is not None)(*inputs)


# ---------------------------------------------------------------------------------------
# The Llama family's pieces: RMS norm, SiLU, rotary position embedding
# ---------------------------------------------------------------------------------------
class RMSNorm(Function):
    """y = x / rms(x) * weight over the last axis, rms(x) = sqrt(mean(x^2) + eps), as one node.

    Half-precision inputs are normalised in float32 and the result cast back before the
    weight is applied (Hugging Face's LlamaRMSNorm does the same). Backward, with
    x_hat = x / rms(x) and g = gy * weight:
      dx = (g - x_hat * mean(g * x_hat)) / rms(x),  dweight = sum gy * x_hat
    """

    autocast_policy = "float32"  # a mean of squares: float16 loses too much

    def __init__(self, eps: float, has_weight: bool):
        self.eps, self.has_weight = eps, has_weight

    def forward(self, x, *weight):
        xp = ops._xp(x)
        wide = x.astype(np.float32) if x.dtype == np.float16 else x
        mean_square = (wide * wide).sum(axis=-1, keepdims=True) * (1.0 / x.shape[-1])  # [..., 1]
        self.inv_rms = 1.0 / xp.sqrt(mean_square + self.eps)
        self.x_hat = _in_dtype(wide * self.inv_rms, x.dtype)  # [..., C]
        return self.x_hat * weight[0] if self.has_weight else self.x_hat

    def backward(self, gy):
        x, x_hat, inv_rms = self.inputs[0], self.x_hat, self.inv_rms
        g = gy * self.inputs[1].data if self.has_weight else gy  # d loss / d x_hat
        mean_g_x_hat = (g * x_hat).sum(axis=-1, keepdims=True) * (1.0 / x.shape[-1])
        grads = [_in_dtype((g - x_hat * mean_g_x_hat) * inv_rms, x.dtype) if x.requires_grad else None]
        if self.has_weight:  # [..., C]: the engine sums it down to the weight's [C]
            grads.append(gy * x_hat if self.inputs[1].requires_grad else None)
        return tuple(grads)

    def composite(self, x, *weight):
        y = x / ops.sqrt(ops.mean(x * x, axis=-1, keepdims=True) + self.eps)
        return y * weight[0] if self.has_weight else y


@register("rms_norm")
def rms_norm(x: Tensor, weight: Tensor | None = None, eps: float = 1e-6) -> Tensor:
    """Scale the last axis to unit root-mean-square, then by `weight` [C] (no centring, no bias)."""
    if weight is not None and weight.shape != x.shape[-1:]:
        raise ValueError(f"rms_norm: weight has shape {weight.shape}, expected {x.shape[-1:]} "
                         f"(the last dim of {x.shape})")
    return RMSNorm(eps, weight is not None)(x, *([weight] if weight is not None else []))  # [..., C] -> [..., C]


class SiLU(Function):
    """y = x * sigmoid(x) (the 'swish' of SwiGLU); with s = sigmoid(x),
    d/dx = s (1 + x (1 - s)) = s + y (1 - s), the second form from the saved output y.
    Elementwise, in cache-sized ranges split across threads (minilm.parallel)."""

    def forward(self, x):
        xp = ops._xp(x)
        flat = ops.float_elements(x)  # [size]
        self.s, y = xp.empty_like(flat), xp.empty_like(flat)

        def piece(start, stop):
            s = ops.sigmoid_into(flat[start:stop], self.s[start:stop])
            xp.multiply(flat[start:stop], s, out=y[start:stop])

        parallel.in_parallel(flat.size, piece, like=x)
        return y.reshape(x.shape)

    def backward(self, gy):
        xp = ops._xp(gy)
        y, s, g = self.output().reshape(-1), self.s, gy.reshape(-1)
        gx = xp.empty(g.shape, dtype=xp.result_type(g, s))

        def piece(start, stop):
            slope = xp.subtract(1, s[start:stop], out=gx[start:stop])  # s + y (1 - s), in gx's buffer
            slope *= y[start:stop]
            slope += s[start:stop]
            slope *= g[start:stop]

        parallel.in_parallel(g.size, piece, like=gy)
        return gx.reshape(gy.shape)

    def composite(self, x):
        return x * ops.sigmoid(x)


@register("silu")
def silu(x: Tensor) -> Tensor:
    return SiLU()(x)


class SwiGLU(Function):
    """[gate | up] [..., 2F] -> silu(gate) * up [..., F], as one node (Llama's MLP activation).

    With s = sigmoid(gate):  d/d gate = gy * up * s (1 + gate (1 - s)),  d/d up = gy * gate * s
    """

    def forward(self, x):
        half = x.shape[-1] // 2
        gate, up = x[..., :half], x[..., half:]
        self.s = ops.Sigmoid().forward(gate)
        y = gate * self.s
        y *= up
        return y

    def backward(self, gy):
        x, s = self.inputs[0].data, self.s
        xp, half = ops._xp(x), x.shape[-1] // 2
        gate, up = x[..., :half], x[..., half:]
        gx = xp.empty(x.shape, dtype=xp.result_type(x, gy))  # [..., 2F]: both halves written in place
        g_gate, g_up = gx[..., :half], gx[..., half:]
        xp.multiply(gate, s, out=g_up)  # silu(gate) = gate s
        xp.subtract(1, s, out=g_gate)  # s (1 + gate (1 - s)) = s + silu(gate) (1 - s)
        g_gate *= g_up
        g_gate += s
        g_gate *= up
        g_gate *= gy  # d/d gate = gy * up * (s + silu(gate) (1 - s))
        g_up *= gy  # d/d up = gy * silu(gate)
        return gx

    def composite(self, x):
        half = x.shape[-1] // 2
        gate, up = x[..., :half], x[..., half:]
        return gate * ops.sigmoid(gate) * up


@register("swiglu")
def swiglu(x: Tensor) -> Tensor:
    """silu(first half) * second half of the last axis: [..., 2F] -> [..., F]."""
    if x.shape[-1] % 2:
        raise ValueError(f"swiglu: the last dim must hold gate and up halves, got shape {x.shape}")
    return SwiGLU()(x)


class Rotary(Function):
    """Rotate the pairs (x[i], x[i + D/2]) of the last axis by per-position angles.

    Hugging Face's rotate-half layout: with x = [x1 | x2] (halves of the head dim) and the
    angles' cos and sin [..., T, D/2],
      out = [x1 cos - x2 sin | x2 cos + x1 sin]
    A rotation's transpose is the rotation by the opposite angles, so backward is this same
    function with -sin.
    """

    def __init__(self, cos, sin):
        self.cos, self.sin = cos, sin

    def forward(self, x):
        xp, half = ops._xp(x), x.shape[-1] // 2
        x1, x2 = x[..., :half], x[..., half:]
        out = xp.empty_like(x)  # cos, sin broadcast against x (apply_rotary checks)
        first, second = out[..., :half], out[..., half:]
        xp.multiply(x1, self.cos, out=first)
        first -= x2 * self.sin  # x1 cos - x2 sin
        xp.multiply(x2, self.cos, out=second)
        second += x1 * self.sin  # x2 cos + x1 sin
        return out

    def backward(self, gy):
        return Rotary(self.cos, -self.sin).forward(gy)

    def composite(self, x):
        half = x.shape[-1] // 2
        x1, x2 = x[..., :half], x[..., half:]
        cos, sin = Tensor(self.cos), Tensor(self.sin)
        return ops.concatenate([x1 * cos - x2 * sin, x2 * cos + x1 * sin], axis=-1)


@register("apply_rotary")
def apply_rotary(x: Tensor, cos, sin) -> Tensor:
    """Rotary position embedding of x [..., T, D] with the angles' cos, sin [..., T, D/2]
    (arrays, broadcast against x, e.g. [B, 1, T, D/2] for x [B, H, T, D])."""
    cos, sin = data_of(cos, x.device), data_of(sin, x.device)  # host angles move to a GPU x's device
    half_shape = x.shape[:-1] + (x.shape[-1] // 2,)
    try:
        fits = not x.shape[-1] % 2 and cos.shape == sin.shape and \
            np.broadcast_shapes(cos.shape, half_shape) == half_shape
    except ValueError:
        fits = False
    if not fits:
        raise ValueError(f"apply_rotary: x {x.shape} needs an even last dim and cos, sin that broadcast to "
                         f"{half_shape}; got cos {cos.shape}, sin {sin.shape}")
    return Rotary(_in_dtype(cos, x.dtype), _in_dtype(sin, x.dtype))(x)
