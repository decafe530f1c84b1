"""One table of test cases for every public differentiable op (the registry `minilm.ops.OPS`).

Each case draws inputs with hypothesis and names the minilm call, the equivalent PyTorch
call (for parity tests) and whether the op is smooth (then second derivatives are checked).
tests/test_ops.py fails when an op in the registry has no case here.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from hypothesis import strategies as st

import minilm as ml
import minilm.functional as F
from minilm.testing import arrays, broadcastable_shapes, shapes


@dataclass
class Case:
    draw: callable  # data -> (list of np arrays, dict of static kwargs)
    minilm: callable  # (*tensors, **kwargs) -> Tensor
    torch: callable | None  # (*torch tensors, **kwargs) -> torch tensor
    smooth: bool = True
    gradcheck_kwargs: dict = field(default_factory=dict)


def unary(low=-2.0, high=2.0, away_from=(), distinct=False, min_dims=0, max_dims=3):
    def draw(data):
        shape = data.draw(shapes(min_dims=min_dims, max_dims=max_dims))
        return [data.draw(arrays(shape, low, high, away_from=away_from, distinct=distinct))], {}

    return draw


def binary(low_a=-2.0, high_a=2.0, low_b=-2.0, high_b=2.0, b_away_from=()):
    def draw(data):
        shape_a, shape_b = data.draw(broadcastable_shapes())
        a = data.draw(arrays(shape_a, low_a, high_a))
        b = data.draw(arrays(shape_b, low_b, high_b, away_from=b_away_from, gap=0.3))
        return [a, b], {}

    return draw


def with_axis(min_dims=1, distinct=False, ddof=False):
    def draw(data):
        shape = data.draw(shapes(min_dims=min_dims))
        x = data.draw(arrays(shape, distinct=distinct))
        axis = data.draw(st.one_of(st.none(), st.integers(-len(shape), len(shape) - 1))) if shape else None
        kwargs = {"axis": axis, "keepdims": data.draw(st.booleans())}
        if ddof:
            kwargs["ddof"] = data.draw(st.integers(0, 1))
            if axis is None and np.prod(shape) <= kwargs["ddof"] or axis is not None and shape[axis] <= kwargs["ddof"]:
                kwargs["ddof"] = 0
        return [x], kwargs

    return draw


def _torch_axis(kwargs):
    out = dict(kwargs)
    axis = out.pop("axis", None)
    keep = out.pop("keepdims", False)
    if axis is None:
        return {"dim": None, "keepdim": keep} if keep else {}
    return {"dim": axis, "keepdim": keep}


def _torch_reduce(name):
    def call(x, **kwargs):
        import torch

        args = _torch_axis(kwargs)
        if name == "var":
            correction = kwargs.get("ddof", 0)
            if "dim" not in args:
                return torch.var(x, correction=correction)
            return torch.var(x, dim=args["dim"], keepdim=args["keepdim"], correction=correction)
        fn = {"sum": torch.sum, "mean": torch.mean, "max": torch.amax, "min": torch.amin}[name]
        if "dim" not in args or args["dim"] is None:
            if name in ("max", "min"):
                dims = tuple(range(x.ndim))
                return fn(x, dim=dims, keepdim=args.get("keepdim", False)) if x.ndim else x.clone()
            return fn(x, dim=tuple(range(x.ndim)), keepdim=args["keepdim"]) if args else fn(x)
        return fn(x, dim=args["dim"], keepdim=args["keepdim"])

    return call


def draw_reshape(data):
    shape = data.draw(shapes(min_dims=1))
    size = int(np.prod(shape))
    target = data.draw(st.sampled_from([(size,), (1, size), (size, 1), (-1,)]))
    return [data.draw(arrays(shape))], {"shape": target}


def draw_transpose(data):
    shape = data.draw(shapes(min_dims=1, max_dims=4))
    axes = tuple(data.draw(st.permutations(range(len(shape)))))
    return [data.draw(arrays(shape))], {"axes": axes}


def draw_broadcast_to(data):
    small, big = data.draw(broadcastable_shapes(min_dims=1))
    if np.broadcast_shapes(small, big) != big:
        small, big = big, small
    if np.broadcast_shapes(small, big) != big:
        big = np.broadcast_shapes(small, big)
    return [data.draw(arrays(small))], {"shape": tuple(big)}


def draw_sum_to(data):
    small, big = data.draw(broadcastable_shapes(min_dims=1))
    big = np.broadcast_shapes(small, big)
    return [data.draw(arrays(big))], {"shape": tuple(small)}


def draw_squeeze(data):
    shape = data.draw(shapes(min_dims=1))
    ones = [i for i, n in enumerate(shape) if n == 1]
    axis = data.draw(st.sampled_from(ones)) if ones and data.draw(st.booleans()) else None
    return [data.draw(arrays(shape))], {"axis": axis}


def draw_unsqueeze(data):
    shape = data.draw(shapes())
    return [data.draw(arrays(shape))], {"axis": data.draw(st.integers(-len(shape) - 1, len(shape)))}


def draw_concatenate(data):
    shape = data.draw(shapes(min_dims=1))
    axis = data.draw(st.integers(0, len(shape) - 1))
    count = data.draw(st.integers(1, 3))
    parts = []
    for _ in range(count):
        part = list(shape)
        part[axis] = data.draw(st.integers(1, 3))
        parts.append(data.draw(arrays(tuple(part))))
    return parts, {"axis": axis}


def draw_stack(data):
    shape = data.draw(shapes())
    count = data.draw(st.integers(1, 3))
    return [data.draw(arrays(shape)) for _ in range(count)], {"axis": data.draw(st.integers(0, len(shape)))}


def draw_split(data):
    shape = list(data.draw(shapes(min_dims=1)))
    axis = data.draw(st.integers(0, len(shape) - 1))
    sections = data.draw(st.integers(1, 3))
    shape[axis] = sections * data.draw(st.integers(1, 3))
    return [data.draw(arrays(tuple(shape)))], {"sections": sections, "axis": axis}


def draw_getitem(data):
    shape = data.draw(shapes(min_dims=1))
    n = shape[0]
    kind = data.draw(st.sampled_from(["int", "slice", "step", "array", "tuple", "negative"]))
    if kind == "int":
        key = data.draw(st.integers(-n, n - 1))
    elif kind == "slice":
        key = slice(data.draw(st.integers(0, n - 1)), None)
    elif kind == "step":
        key = slice(None, None, data.draw(st.sampled_from([2, -1, -2])))
    elif kind == "array":  # integer-array indexing with repeated indices
        key = np.array(data.draw(st.lists(st.integers(0, n - 1), min_size=1, max_size=6)))
    elif kind == "negative":
        key = slice(-n, -1) if n > 1 else slice(None)
    else:
        key = (slice(None), 0) if len(shape) > 1 else (0,)
    return [data.draw(arrays(shape))], {"key": key}


def draw_unpack_rows(data):
    batch, length, width = (data.draw(st.integers(1, 3)) for _ in range(3))
    tokens = np.array(data.draw(st.lists(st.booleans(), min_size=batch * length, max_size=batch * length)),
                      dtype=bool).reshape(batch, length)
    return [data.draw(arrays((int(tokens.sum()), width)))], {"tokens": tokens}


def _torch_unpack_rows(packed, tokens):
    torch = _t()
    mask = torch.as_tensor(tokens)
    return torch.zeros(tuple(tokens.shape) + tuple(packed.shape[1:]), dtype=packed.dtype).index_put((mask,), packed)


def draw_matmul(data):
    kind = data.draw(st.sampled_from(["2d", "batched", "broadcast", "vec_left", "vec_right", "3d_2d"]))
    n, k, m, b = (data.draw(st.integers(1, 4)) for _ in range(4))
    shapes_ = {
        "2d": ((n, k), (k, m)),
        "batched": ((b, n, k), (b, k, m)),
        "broadcast": ((b, 1, n, k), (2, k, m)),
        "vec_left": ((k,), (b, k, m)),
        "vec_right": ((b, n, k), (k,)),
        "3d_2d": ((b, n, k), (k, m)),
    }[kind]
    return [data.draw(arrays(s)) for s in shapes_], {}


def draw_where(data):
    shape_a, shape_b = data.draw(broadcastable_shapes())
    shape = np.broadcast_shapes(shape_a, shape_b)
    cond = data.draw(arrays(shape)) > 0
    return [data.draw(arrays(shape_a)), data.draw(arrays(shape_b))], {"condition": cond}


def draw_masked_fill(data):
    shape = data.draw(shapes())
    return [data.draw(arrays(shape))], {"mask": data.draw(arrays(shape)) > 0.5, "value": -3.0}


def draw_clip(data):
    shape = data.draw(shapes())
    return [data.draw(arrays(shape, away_from=(-0.5, 1.0), gap=0.05))], {"low": -0.5, "high": 1.0}


def draw_astype(data):
    return [data.draw(arrays(data.draw(shapes())))], {}


def draw_softmax(data):
    shape = data.draw(shapes(min_dims=1))
    return [data.draw(arrays(shape, -3, 3))], {"axis": data.draw(st.integers(-len(shape), len(shape) - 1))}


def draw_gelu(data):
    shape = data.draw(shapes())
    return [data.draw(arrays(shape, -3, 3))], {"approximate": data.draw(st.sampled_from(["none", "tanh"]))}


def draw_layer_norm(data):
    shape = data.draw(shapes(min_dims=1))
    shape = shape[:-1] + (max(shape[-1], 2),)
    c = shape[-1]
    return [data.draw(arrays(shape)), data.draw(arrays((c,))), data.draw(arrays((c,)))], {"eps": 1e-5}


def draw_rms_norm(data):
    shape = data.draw(shapes(min_dims=1))
    c = shape[-1]
    return [data.draw(arrays(shape)), data.draw(arrays((c,)))], {"eps": 1e-5}


def draw_swiglu(data):
    shape = data.draw(shapes(min_dims=1))
    return [data.draw(arrays(shape[:-1] + (2 * shape[-1],), -3, 3))], {}


def draw_rotary(data):
    shape = data.draw(shapes(min_dims=2, max_dims=4))
    shape = shape[:-1] + (2 * shape[-1],)
    angles = data.draw(arrays((shape[-2], shape[-1] // 2), -4, 4))  # one angle per position and pair
    return [data.draw(arrays(shape))], {"cos": np.cos(angles), "sin": np.sin(angles)}


def _torch_rotary(x, cos, sin):
    half = x.shape[-1] // 2
    cos, sin = _t().as_tensor(cos), _t().as_tensor(sin)
    x1, x2 = x[..., :half], x[..., half:]
    return _t().cat([x1 * cos - x2 * sin, x2 * cos + x1 * sin], dim=-1)


def _torch_swiglu(x):
    half = x.shape[-1] // 2
    return _t().nn.functional.silu(x[..., :half]) * x[..., half:]


def draw_cross_entropy(data):
    n, c = data.draw(st.integers(1, 5)), data.draw(st.integers(2, 5))
    targets = np.array(data.draw(st.lists(st.integers(0, c - 1), min_size=n, max_size=n)))
    if n > 1 and data.draw(st.booleans()):
        targets[0] = -100  # an ignored row
    kwargs = {
        "targets": targets,
        "reduction": data.draw(st.sampled_from(["mean", "sum", "none"])),
        "label_smoothing": data.draw(st.sampled_from([0.0, 0.1])),
    }
    shape = (n, c)
    if data.draw(st.booleans()):  # classes on axis 1 of a 3-D input, as PyTorch
        shape = (1, c, n)
        kwargs["targets"] = targets.reshape(1, n)
    return [data.draw(arrays(shape, -3, 3))], kwargs


def draw_dropout(data):
    return [data.draw(arrays(data.draw(shapes(min_dims=1))))], {"p": 0.3}


def draw_embedding(data):
    v, c = data.draw(st.integers(1, 5)), data.draw(st.integers(1, 4))
    ids = np.array(data.draw(st.lists(st.integers(0, v - 1), min_size=1, max_size=7))).reshape(1, -1)
    return [data.draw(arrays((v, c)))], {"ids": ids}


def draw_linear(data):
    n, i, o = (data.draw(st.integers(1, 4)) for _ in range(3))
    lead = data.draw(st.sampled_from([(n,), (2, n)]))
    return [data.draw(arrays(lead + (i,))), data.draw(arrays((o, i))), data.draw(arrays((o,)))], {}


def draw_attention(data):
    b, h, length, e = (data.draw(st.integers(1, 3)) for _ in range(4))
    source = data.draw(st.integers(1, 4))
    kind = data.draw(st.sampled_from(["none", "causal", "bool", "float"]))
    kwargs = {}
    if kind == "causal":
        source = length
        kwargs["is_causal"] = True
    elif kind == "bool":
        mask = data.draw(arrays((length, source))) > -1.0
        mask[:, 0] = True  # every query may attend somewhere (else NaN, as in PyTorch)
        kwargs["attn_mask"] = mask
    elif kind == "float":
        kwargs["attn_mask"] = data.draw(arrays((1, length, source)))
    q = data.draw(arrays((b, h, length, e)))
    k = data.draw(arrays((b, h, source, e)))
    v = data.draw(arrays((b, h, source, e)))
    return [q, k, v], kwargs


def draw_split_heads(data):
    b, t, h, d = (data.draw(st.integers(1, 3)) for _ in range(4))
    parts = data.draw(st.integers(1, 3))
    return [data.draw(arrays((b, t, parts * h * d)))], {"num_heads": h, "parts": parts}


def draw_merge_heads(data):
    return [data.draw(arrays(tuple(data.draw(st.integers(1, 3)) for _ in range(4))))], {}


def _torch_split_heads(x, num_heads, parts):
    b, t, width = x.shape
    heads = x.reshape(b, t, parts, num_heads, width // (parts * num_heads)).permute(2, 0, 3, 1, 4)
    return _split_sum(list(heads))


def _t():
    import torch

    return torch


def _torch_getitem(x, key):
    torch = _t()
    if isinstance(key, np.ndarray):
        key = torch.as_tensor(key)
    if isinstance(key, slice) and key.step is not None and key.step < 0:  # torch has no negative steps
        return x.flip(0)[:: -key.step]
    return x[key]


def _torch_ce(x, targets, reduction, label_smoothing):
    torch = _t()
    return torch.nn.functional.cross_entropy(x, torch.as_tensor(targets), reduction=reduction,
                                             label_smoothing=label_smoothing)


def _torch_sdpa(q, k, v, attn_mask=None, is_causal=False):
    torch = _t()
    if attn_mask is not None:
        attn_mask = torch.as_tensor(attn_mask, dtype=torch.bool if attn_mask.dtype == bool else q.dtype)
    return torch.nn.functional.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask, is_causal=is_causal)


def _torch_sum_to(x, shape):
    lead = x.ndim - len(shape)
    dims = tuple(range(lead)) + tuple(lead + i for i, n in enumerate(shape) if n == 1 and x.shape[lead + i] != 1)
    y = x.sum(dim=dims, keepdim=True) if dims else x
    return y.reshape(shape)


def _split_sum(parts):
    return sum((p * (i + 1)).sum() for i, p in enumerate(parts))


def _torch_split(x, sections, axis):
    return _split_sum(_t().chunk(x, sections, dim=axis))


CASES = {
    "add": Case(binary(), lambda a, b: a + b, lambda a, b: a + b),
    "sub": Case(binary(), lambda a, b: a - b, lambda a, b: a - b),
    "mul": Case(binary(), lambda a, b: a * b, lambda a, b: a * b),
    "div": Case(binary(b_away_from=(0.0,)), lambda a, b: a / b, lambda a, b: a / b),
    "neg": Case(unary(), lambda x: -x, lambda x: -x),
    "pow": Case(binary(low_a=0.5, high_a=2.0), lambda a, b: a**b, lambda a, b: a**b),
    "exp": Case(unary(), ml.exp, lambda x: x.exp()),
    "log": Case(unary(0.2, 3.0), ml.log, lambda x: x.log()),
    "sqrt": Case(unary(0.2, 3.0), ml.sqrt, lambda x: x.sqrt()),
    "tanh": Case(unary(), ml.tanh, lambda x: x.tanh()),
    "sigmoid": Case(unary(-5, 5), ml.sigmoid, lambda x: x.sigmoid()),
    "relu": Case(unary(away_from=(0.0,)), ml.relu, lambda x: x.relu(), smooth=False),
    "abs": Case(unary(away_from=(0.0,)), ml.abs, lambda x: x.abs(), smooth=False),
    "maximum": Case(binary(), ml.maximum, lambda a, b: _t().maximum(a, b), smooth=False),
    "minimum": Case(binary(), ml.minimum, lambda a, b: _t().minimum(a, b), smooth=False),
    "where": Case(draw_where, lambda a, b, condition: ml.where(condition, a, b),
                  lambda a, b, condition: _t().where(_t().as_tensor(condition), a, b), smooth=False),
    "clip": Case(draw_clip, ml.clip, lambda x, low, high: x.clamp(low, high), smooth=False),
    "masked_fill": Case(draw_masked_fill, ml.masked_fill,
                        lambda x, mask, value: x.masked_fill(_t().as_tensor(mask), value), smooth=False),
    "sum": Case(with_axis(0), ml.sum, _torch_reduce("sum")),
    "mean": Case(with_axis(0), ml.mean, _torch_reduce("mean")),
    "var": Case(with_axis(1, ddof=True), ml.var, _torch_reduce("var")),
    "max": Case(with_axis(1, distinct=True), ml.max, _torch_reduce("max"), smooth=False),
    "min": Case(with_axis(1, distinct=True), ml.min, _torch_reduce("min"), smooth=False),
    "reshape": Case(draw_reshape, lambda x, shape: x.reshape(shape), lambda x, shape: x.reshape(shape)),
    "transpose": Case(draw_transpose, lambda x, axes: x.transpose(axes), lambda x, axes: x.permute(axes)),
    "broadcast_to": Case(draw_broadcast_to, ml.broadcast_to, lambda x, shape: x.broadcast_to(shape)),
    "sum_to": Case(draw_sum_to, lambda x, shape: ml.ops.sum_to(x, shape), _torch_sum_to),
    "squeeze": Case(draw_squeeze, lambda x, axis: x.squeeze(axis),
                    lambda x, axis: x.squeeze() if axis is None else x.squeeze(axis)),
    "unsqueeze": Case(draw_unsqueeze, lambda x, axis: x.unsqueeze(axis), lambda x, axis: x.unsqueeze(axis)),
    "concatenate": Case(draw_concatenate, lambda *xs, axis: ml.concatenate(xs, axis=axis),
                        lambda *xs, axis: _t().cat(xs, dim=axis)),
    "stack": Case(draw_stack, lambda *xs, axis: ml.stack(xs, axis=axis), lambda *xs, axis: _t().stack(xs, dim=axis)),
    "split": Case(draw_split, lambda x, sections, axis: _split_sum(ml.split(x, sections, axis=axis)), _torch_split),
    "getitem": Case(draw_getitem, lambda x, key: x[key], _torch_getitem),
    "unpack_rows": Case(draw_unpack_rows, ml.ops.unpack_rows, _torch_unpack_rows),
    "matmul": Case(draw_matmul, ml.matmul, lambda a, b: _t().matmul(a, b)),
    # float32 rounding (~1e-7) needs a larger finite-difference step
    "astype": Case(draw_astype, lambda x: x.astype(ml.float32).astype(ml.float64),
                   lambda x: x.float().double(), smooth=False, gradcheck_kwargs={"eps": 1e-3, "rtol": 1e-3}),
    "softmax": Case(draw_softmax, F.softmax, lambda x, axis: _t().softmax(x, dim=axis)),
    "log_softmax": Case(draw_softmax, F.log_softmax, lambda x, axis: _t().log_softmax(x, dim=axis)),
    "gelu": Case(draw_gelu, F.gelu, lambda x, approximate: _t().nn.functional.gelu(x, approximate=approximate)),
    "layer_norm": Case(draw_layer_norm, F.layer_norm,
                       lambda x, w, b, eps: _t().nn.functional.layer_norm(x, w.shape, w, b, eps)),
    "rms_norm": Case(draw_rms_norm, F.rms_norm, lambda x, w, eps: _t().nn.functional.rms_norm(x, w.shape, w, eps)),
    "silu": Case(unary(-4, 4), F.silu, lambda x: _t().nn.functional.silu(x)),
    "swiglu": Case(draw_swiglu, F.swiglu, _torch_swiglu),
    "apply_rotary": Case(draw_rotary, F.apply_rotary, _torch_rotary),
    "cross_entropy": Case(draw_cross_entropy, F.cross_entropy, _torch_ce),
    # the same seed before every call, so finite differences see the same mask
    "dropout": Case(draw_dropout, lambda x, p: (ml.manual_seed(7), F.dropout(x, p, training=True))[1], None,
                    smooth=False),
    "embedding": Case(draw_embedding, lambda w, ids: F.embedding(ids, w),
                      lambda w, ids: _t().nn.functional.embedding(_t().as_tensor(ids), w)),
    "linear": Case(draw_linear, F.linear, lambda x, w, b: _t().nn.functional.linear(x, w, b)),
    "split_heads": Case(draw_split_heads, lambda x, num_heads, parts: _split_sum(F.split_heads(x, num_heads, parts)),
                        _torch_split_heads),
    "merge_heads": Case(draw_merge_heads, F.merge_heads,
                        lambda x: x.permute(0, 2, 1, 3).reshape(x.shape[0], x.shape[2], -1)),
    "scaled_dot_product_attention": Case(draw_attention, F.scaled_dot_product_attention, _torch_sdpa),
}
