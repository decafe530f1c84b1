"""The autograd engine: `Tensor`, `Function`, and reverse-mode differentiation.

How it fits together (read this file first):

- A `Tensor` wraps an array (`.data`, NumPy or CuPy). A tensor made by an op remembers the
  `Function` that made it (`.creator`); a leaf tensor made by the user has none.
- A `Function` runs `forward` on arrays and, when gradients are wanted, keeps its input
  tensors. Its `backward` maps output gradients to input gradients and is written with
  Tensor ops, so running it with grad mode on (`create_graph=True`) records a graph of the
  gradient itself: that is double backprop, for free.
- A function holds its outputs only through weak references, so there is no reference
  cycle output -> creator -> output: a graph is freed as soon as user code drops it.
- `Tensor.backward` walks the graph without recursion: first it counts, for every function,
  how many gradient contributions it will receive; then it runs functions whose count has
  reached zero (Kahn's topological order). So a 20,000-op chain is as fine as a short one.
- Broadcasting is handled here, once: a rule returns the natural gradient (for `a + b` that
  is `gy` for both), and the engine sums it down to each input's shape where it
  accumulates (`sum_to`), and casts it to the input's dtype.
- A fused rule (softmax, layer norm, attention ...) has a fast backward on arrays and a
  `composite`: the same function written with primitive ops. When the backward pass is
  recorded (`create_graph=True`) the engine differentiates the composite instead, so second
  derivatives need no second hand-written formula (and tests check the two agree).
"""

from __future__ import annotations

import threading
import weakref
from contextlib import contextmanager

import numpy as np

from . import backend as _backend


# ---------------------------------------------------------------------------------------
# Grad mode: whether ops record the graph. Thread-local, as each thread runs its own graphs.
# ---------------------------------------------------------------------------------------
class _ThreadState(threading.local):
    grad_enabled = True  # class attributes: each thread starts from these defaults
    autocast_dtype = None  # set by `minilm.amp.autocast`: the low-precision compute dtype


_state = _ThreadState()


def is_grad_enabled() -> bool:
    return _state.grad_enabled


@contextmanager
def set_grad_enabled(enabled: bool):
    previous = is_grad_enabled()
    _state.grad_enabled = bool(enabled)
    try:
        yield
    finally:
        _state.grad_enabled = previous


def no_grad():
    """Context manager: ops inside record no graph (inference, optimizer updates)."""
    return set_grad_enabled(False)


def enable_grad():
    """Context manager: turn graph recording back on inside a `no_grad` block."""
    return set_grad_enabled(True)


# ---------------------------------------------------------------------------------------
# dtypes
# ---------------------------------------------------------------------------------------
float16, float32, float64 = np.float16, np.float32, np.float64
int32, int64, uint8, bool_ = np.int32, np.int64, np.uint8, np.bool_
_default_dtype = np.dtype(np.float32)


def set_default_dtype(dtype) -> None:
    """The dtype of floating-point tensors made from Python numbers (float32 unless changed)."""
    global _default_dtype
    dtype = np.dtype(dtype)
    if dtype.kind != "f":
        raise TypeError(f"the default dtype must be a floating-point dtype, got {dtype}")
    _default_dtype = dtype


def get_default_dtype() -> np.dtype:
    return _default_dtype


def _is_floating(dtype) -> bool:
    return np.dtype(dtype).kind == "f"


class GraphError(RuntimeError):
    """Misuse of the autograd graph (backward twice through a freed graph, in-place edits...)."""


# ---------------------------------------------------------------------------------------
# Tensor
# ---------------------------------------------------------------------------------------
class Tensor:
    """An n-dimensional array that can record the operations applied to it.

    Arithmetic operators and most methods (`sum`, `reshape`, `relu`, ...) are attached in
    `minilm/ops.py`, next to their gradient rules.
    """

    __slots__ = ("data", "grad", "requires_grad", "creator", "_version", "_hooks", "name", "__weakref__")
    __array_priority__ = 1000  # so that ndarray + Tensor calls Tensor.__radd__

    def __init__(self, data, requires_grad: bool = False, dtype=None, device=None, name: str | None = None):
        if not _is_array(data) or dtype is not None or device is not None:
            data = _to_array(data, dtype, device)
        self.data = data
        self.grad: Tensor | None = None
        self.creator: Function | None = None
        self._version = 0
        self._hooks = None
        self.name = name
        self.requires_grad = False
        if requires_grad:
            self.requires_grad_(True)

    # -- basic properties --------------------------------------------------------------
    @property
    def shape(self) -> tuple:
        return self.data.shape

    @property
    def ndim(self) -> int:
        return self.data.ndim

    @property
    def size(self) -> int:
        return self.data.size

    @property
    def dtype(self):
        return self.data.dtype

    @property
    def device(self) -> _backend.Device:
        return _backend.device_of(self.data)

    @property
    def is_leaf(self) -> bool:
        return self.creator is None

    def __len__(self) -> int:
        if self.ndim == 0:
            raise TypeError("len() of a 0-d tensor")
        return self.shape[0]

    def __repr__(self) -> str:
        body = np.array2string(self.numpy(), separator=", ", precision=4, threshold=20, prefix="tensor(")
        extras = []
        if self.dtype != _default_dtype and self.dtype.kind == "f" or self.dtype.kind != "f":
            extras.append(f"dtype={self.dtype}")
        if self.device.name != "cpu":
            extras.append(f"device='{self.device.name}'")
        if self.creator is not None:
            extras.append(f"grad_fn={type(self.creator).__name__}")
        elif self.requires_grad:
            extras.append("requires_grad=True")
        return "tensor(" + body + "".join(", " + e for e in extras) + ")"

    # -- conversion ----------------------------------------------------------------------
    def numpy(self) -> np.ndarray:
        """The values as a host NumPy array (copied from the GPU when needed)."""
        return self.device.to_host(self.data)

    def item(self):
        if self.size != 1:
            raise ValueError(f"item() needs a tensor with exactly one element, got shape {self.shape}")
        return self.numpy().reshape(()).item()

    def tolist(self):
        return self.numpy().tolist()

    def __float__(self) -> float:
        return float(self.item())

    def __int__(self) -> int:
        return int(self.item())

    def __bool__(self) -> bool:
        return bool(self.item())

    def to(self, device=None, dtype=None) -> "Tensor":
        """This tensor on another device ('cpu' / 'cuda') and/or with another dtype.

        Differentiable: gradients flow back to the original device and dtype.
        """
        from .ops import astype, to_device

        out = self
        if device is not None and _backend.get_device(device) != self.device:
            out = to_device(out, _backend.get_device(device))
        if dtype is not None and np.dtype(dtype) != out.dtype:
            out = astype(out, dtype)
        return out

    def cpu(self) -> "Tensor":
        return self.to("cpu")

    def cuda(self) -> "Tensor":
        return self.to("cuda")

    # -- autograd ------------------------------------------------------------------------
    def requires_grad_(self, requires_grad: bool = True) -> "Tensor":
        if requires_grad and not _is_floating(self.dtype):
            raise TypeError(
                f"only floating-point tensors can require gradients, got dtype {self.dtype}; "
                "convert first, e.g. t.to(dtype=ml.float32)"
            )
        if not requires_grad and self.creator is not None:
            raise GraphError("requires_grad can only be switched off on leaf tensors; use .detach()")
        self.requires_grad = bool(requires_grad)
        return self

    def detach(self) -> "Tensor":
        """The same values (shared memory), cut off from the graph."""
        return Tensor(self.data)

    def register_hook(self, hook):
        """Call `hook(grad)` when this tensor's gradient is computed; a non-None return replaces it.

        Returns a handle whose `.remove()` takes the hook off again.
        """
        if not self.requires_grad:
            raise GraphError("cannot register a hook on a tensor that does not require grad")
        if self._hooks is None:
            self._hooks = []
        self._hooks.append(hook)
        return _HookHandle(self._hooks, hook)

    def backward(self, grad=None, retain_graph: bool | None = None, create_graph: bool = False) -> None:
        """Accumulate d(self)/d(leaf) * grad into `.grad` of every leaf that requires grad.

        grad: the gradient of some final scalar w.r.t. this tensor; may be omitted only when
        this tensor has a single element (then it is 1).
        retain_graph: keep the graph's saved buffers so backward can run through it again
        (defaults to create_graph).
        create_graph: record the backward pass itself, so the gradients can be differentiated.
        """
        if not self.requires_grad:
            raise GraphError(
                "backward() on a tensor that does not require grad: no input of the computation "
                "had requires_grad=True (or it ran under no_grad())"
            )
        if grad is None:
            if self.size != 1:
                raise GraphError(
                    f"backward() on a tensor of shape {self.shape} needs a gradient: pass "
                    f"grad= a tensor of shape {self.shape} (e.g. y.backward(ml.ones_like(y))), "
                    "or reduce to a scalar first (e.g. y.sum().backward())"
                )
            grad = Tensor(self.device.xp.ones(self.shape, dtype=self.dtype))
        else:
            grad = grad if isinstance(grad, Tensor) else Tensor(grad, dtype=self.dtype, device=self.device)
            if grad.shape != self.shape:
                raise ValueError(f"backward(): grad has shape {grad.shape} but the tensor has shape {self.shape}")
        if retain_graph is None:
            retain_graph = create_graph
        _run_backward(self, grad, retain_graph, create_graph)

    # -- guarded in-place updates ------------------------------------------------------------
    def _check_inplace(self, what: str) -> None:
        if is_grad_enabled() and (self.creator is not None or self.requires_grad):
            raise GraphError(
                f"in-place {what} on a tensor that is part of the autograd graph: autograd does "
                "not record in-place changes. Wrap it in `with ml.no_grad():` (for parameter "
                "updates) or use the out-of-place op."
            )
        self._version += 1

    def zero_(self) -> "Tensor":
        self._check_inplace("zero_()")
        self.data[...] = 0
        return self

    def fill_(self, value) -> "Tensor":
        self._check_inplace("fill_()")
        self.data[...] = value
        return self

    def copy_(self, source) -> "Tensor":
        self._check_inplace("copy_()")
        self.data[...] = data_of(source, self.device)
        return self

    def add_(self, other, alpha=1.0) -> "Tensor":
        self._check_inplace("add_()")
        other = data_of(other)
        if alpha == 1.0:
            self.data += other
        else:
            self.data += alpha * other
        return self

    def mul_(self, other) -> "Tensor":
        self._check_inplace("mul_()")
        self.data *= data_of(other)
        return self

    def __setitem__(self, key, value) -> None:
        self._check_inplace("item assignment")
        from .ops import _index_key

        self.data[_index_key(key)] = data_of(value)


def zero_grads(tensors, set_to_none: bool = True) -> None:
    """Forget the gradients of `tensors` (set_to_none), or fill them with zeros in place."""
    for t in tensors:
        if t.grad is None:
            continue
        if set_to_none:
            t.grad = None
        else:
            t.grad.data[...] = 0


class _HookHandle:
    def __init__(self, hooks: list, hook):
        self._hooks, self._hook = hooks, hook

    def remove(self) -> None:
        if self._hook in self._hooks:
            self._hooks.remove(self._hook)


def data_of(value, device=None):
    """The array inside a Tensor (or `value` itself if it is not one); given a device, as an
    array on that device.

    The one place that says "accept a Tensor or array-like here" (masks, ids, targets).
    """
    if isinstance(value, Tensor):
        value = value.data
    return value if device is None else device.xp.asarray(value)


def _is_array(data) -> bool:
    return isinstance(data, np.ndarray) or hasattr(data, "__cuda_array_interface__")


def _to_array(data, dtype=None, device=None):
    """Make an array from user data: floats default to the default dtype, ints to int64."""
    if isinstance(data, Tensor):
        data = data.data
    target = _backend.get_device(device) if device is not None else None
    if _is_array(data):
        source = _backend.device_of(data)
        if target is None:
            target = source
        if target != source:
            data = source.to_host(data)
    else:
        if target is None:
            target = _backend.default_device()
        if dtype is None:
            host = np.asarray(data)
            if isinstance(data, np.generic):  # a NumPy scalar keeps its own dtype
                pass
            elif host.dtype.kind == "f":
                host = host.astype(_default_dtype)
            elif host.dtype.kind in "iu":
                host = host.astype(np.int64)
            elif host.dtype.kind not in "iub":
                raise TypeError(f"cannot make a tensor from data of dtype {host.dtype}")
            data = host
    return target.asarray(data, dtype=dtype)


# ---------------------------------------------------------------------------------------
# Function: one differentiable operation
# ---------------------------------------------------------------------------------------
def _from_array(data) -> Tensor:
    """A new Tensor around an array produced by an op (skips the checks of __init__)."""
    if isinstance(data, np.generic):  # NumPy turns 0-d results into scalars; keep arrays
        data = np.asarray(data)
    t = _new_object(Tensor)
    t.data, t.grad, t.creator, t._version, t._hooks, t.name, t.requires_grad = data, None, None, 0, None, None, False
    return t


_new_object = object.__new__


class Function:
    """An operation: `forward` on arrays, `backward` mapping output to input gradients.

    Subclasses implement:
      forward(self, *arrays) -> array | tuple of arrays      (save what backward needs on self)
      backward(self, *grads) -> grad | None | tuple of them  (the natural gradient: the
          engine sums it over broadcast dimensions and casts it to the input's dtype)
    and fused rules also
      composite(self, *tensors) -> the same outputs, computed with primitive ops

    A primitive rule's formula serves two purposes. In an ordinary backward pass the grads
    are plain arrays and the formula is NumPy/CuPy arithmetic: fast. Under
    `backward(create_graph=True)` they are Tensors and the very same formula records a
    graph, which is what second derivatives need. Primitive rules therefore read their
    saved inputs through `self.value(tensor)` and use only operations that arrays and
    Tensors share (arithmetic, @, .reshape, .sum, .swapaxes, .astype ...) or the dual
    helpers in ops.py. A fused rule's backward sees arrays only; when the pass is recorded
    the engine differentiates its `composite` instead.
    Outputs that got no gradient arrive as zeros, so rules need no None checks.
    """

    inputs: tuple | None = None
    # Under `minilm.amp.autocast`: None (run in the inputs' own dtypes), "low" (cast floating
    # inputs to the autocast dtype: the GEMM-bound ops) or "float32" (cast them up: ops whose
    # sums and exponentials lose too much in float16). Declared by each rule's class.
    autocast_policy: str | None = None
    composite = None  # fused rules: a method computing the forward with primitive ops

    def __call__(self, *inputs: Tensor):
        if _state.autocast_dtype is not None and self.autocast_policy is not None:
            inputs = _autocast_inputs(self.autocast_policy, inputs)
        if len(inputs) == 1:
            outputs = self.forward(inputs[0].data)
        else:
            arrays = [x.data for x in inputs]
            first = type(arrays[0])
            for a in arrays:
                if type(a) is not first:
                    _raise_device_mismatch(self, arrays)
            outputs = self.forward(*arrays)
        single = type(outputs) is not tuple
        results = (_from_array(outputs),) if single else tuple(_from_array(y) for y in outputs)
        if is_grad_enabled():
            for x in inputs:
                if x.requires_grad:
                    self._record(inputs, results)
                    break
        return results[0] if single else results

    def _record(self, inputs: tuple, results: tuple) -> None:
        self.inputs = inputs
        self.input_versions = tuple(x._version for x in inputs)
        self.outputs = tuple(weakref.ref(y) for y in results)
        self.output_specs = tuple((y.shape, y.dtype) for y in results)
        for y in results:
            y.creator = self
            y.requires_grad = True

    def forward(self, *arrays):
        raise NotImplementedError(f"{type(self).__name__} must implement forward")  # abstract

    def backward(self, *grads):
        raise NotImplementedError(f"{type(self).__name__} must implement backward")  # abstract

    # -- helpers for subclasses ---------------------------------------------------------------
    @staticmethod
    def value(tensor: Tensor):
        """A saved tensor as backward should see it: the Tensor while the backward pass is
        being recorded (create_graph=True), else just its array."""
        return tensor if is_grad_enabled() else tensor.data

    def output(self, index: int = 0):
        """The output, through `value`, for rules written in terms of it (exp, tanh, softmax...).

        A function's backward only runs when its output received a gradient, and that output
        is then still referenced by whoever consumed it, so the weak reference is alive.
        """
        return self.value(self.outputs[index]())

    def release(self) -> None:
        """Drop inputs and saved buffers after backward (the graph can then be freed)."""
        self.__dict__.clear()


def _autocast_inputs(policy: str, inputs: tuple) -> tuple:
    """The floating inputs cast (differentiably) to the dtype that `policy` asks for."""
    from .ops import astype

    target = _state.autocast_dtype if policy == "low" else np.dtype(np.float32)
    return tuple(astype(x, target) if x.dtype.kind == "f" and x.dtype != target else x for x in inputs)


def _raise_device_mismatch(fn: Function, arrays) -> None:
    names = sorted({_backend.device_of(a).name for a in arrays})
    raise _backend.BackendError(
        f"{type(fn).__name__}: expected all tensors on one device, but found tensors on "
        f"{' and '.join(names)}; move them with t.to('cpu') or t.to('cuda')"
    )


# ---------------------------------------------------------------------------------------
# The backward pass
# ---------------------------------------------------------------------------------------
_FREED_GRAPH = (
    "trying to backward through a graph a second time, but its saved buffers were already "
    "freed; pass retain_graph=True to the first backward() if you need to run it twice"
)


def _run_hooks(tensor: Tensor, grad):
    """Hooks see and return Tensors, whatever form the gradient has inside the engine."""
    as_tensor = grad if isinstance(grad, Tensor) else _from_array(grad)
    for hook in list(tensor._hooks):
        replaced = hook(as_tensor)
        if replaced is not None:
            as_tensor = replaced
    return as_tensor if isinstance(grad, Tensor) else as_tensor.data


def _run_backward(root: Tensor, root_grad: Tensor, retain_graph: bool, create_graph: bool) -> None:
    # Gradients travel as Tensors when the backward pass is recorded, else as bare arrays.
    # `grads` maps id(tensor) -> [tensor, gradient so far]: keeping the tensor in the entry
    # keeps it alive, so its id stays unique until its gradient has been consumed.
    previous_mode = is_grad_enabled()
    _state.grad_enabled = create_graph
    try:
        seed = root_grad if create_graph else root_grad.data
        grads: dict[int, list] = {id(root): [root, seed]}
        ends = [root] if root.creator is None else _propagate([root], grads, retain_graph, create_graph)
        _deliver_to_leaves(ends, grads, create_graph)
    finally:
        _state.grad_enabled = previous_mode


def _propagate(roots: list, grads: dict, retain_graph: bool, create_graph: bool, stop: frozenset = frozenset()) -> list:
    """Run every rule between `roots` and the leaves, each once all its contributions are in.

    `grads` holds the roots' gradients on entry and, on return, the gradients of the tensors
    where propagation ended: the leaves that require grad, and any tensor whose id is in
    `stop` (its creator is not entered). Returns those tensors, in the order first reached.
    """
    # 1. How many gradient contributions will each function receive?
    pending: dict[Function, int] = {}
    stack = []
    for root in roots:
        if root.creator is not None and root.creator not in pending and id(root) not in stop:
            pending[root.creator] = 0
            stack.append(root.creator)
    starts = list(stack)
    while stack:
        fn = stack.pop()
        if fn.inputs is None:
            raise GraphError(_FREED_GRAPH)
        for x in fn.inputs:
            creator = x.creator
            if creator is None or not x.requires_grad or id(x) in stop:
                continue
            if creator in pending:
                pending[creator] += 1
            else:
                pending[creator] = 1
                stack.append(creator)

    # 2. Run each function once all its contributions are in (Kahn's algorithm).
    ends: list[Tensor] = []
    ready = [fn for fn in starts if pending[fn] == 0]
    while ready:
        fn = ready.pop()
        output_grads = []
        missing = False
        for ref in fn.outputs:
            y = ref()
            entry = grads.pop(id(y), None) if y is not None else None
            if entry is None:
                missing = True
                output_grads.append(None)
            else:
                output_grads.append(_run_hooks(y, entry[1]) if y._hooks else entry[1])
        inputs = fn.inputs
        for x, version in zip(inputs, fn.input_versions):
            if x._version != version:
                raise GraphError(
                    f"a tensor of shape {x.shape} saved by {type(fn).__name__} for backward "
                    f"was modified in place (version {version} -> {x._version}); use an "
                    "out-of-place op instead"
                )
        if missing:
            output_grads = _fill_missing(fn, output_grads, create_graph)
        if not output_grads:
            input_grads = (None,) * len(inputs)
        elif create_graph and fn.composite is not None:
            input_grads = _differentiate_composite(fn, output_grads)
        else:
            input_grads = fn.backward(*output_grads)
        if type(input_grads) is not tuple:
            input_grads = (input_grads,)
        for x, gx in zip(inputs, input_grads):
            if not x.requires_grad:
                continue
            creator = x.creator
            if gx is not None:
                if isinstance(gx, Tensor) is not create_graph:  # a rule may mix forms
                    gx = _from_array(gx) if create_graph else gx.data
                if gx.shape != x.shape:  # the gradient of a broadcast input: sum it down
                    gx = _sum_to(gx, x.shape, fn)
                if gx.dtype != x.dtype:  # a gradient has its tensor's dtype, as in mixed precision
                    gx = _cast(gx, x.dtype)
                entry = grads.get(id(x))
                if entry is None:
                    grads[id(x)] = [x, gx]
                    if creator is None or id(x) in stop:
                        ends.append(x)
                else:
                    entry[1] = entry[1] + gx  # never in place: rules may share arrays
            if creator is not None and id(x) not in stop:
                count = pending[creator] - 1
                pending[creator] = count
                if count == 0:
                    ready.append(creator)
        if not retain_graph:
            fn.release()
    return ends


def _differentiate_composite(fn: Function, output_grads: list) -> tuple:
    """A fused rule's input gradients, recorded: run its composite of primitive ops on
    stand-ins for its inputs and propagate `output_grads` back through it to them."""
    stand_ins = tuple(_Alias()(x) if x.requires_grad else x for x in fn.inputs)
    outputs = fn.composite(*stand_ins)
    outputs = outputs if type(outputs) is tuple else (outputs,)
    grads: dict[int, list] = {}
    for y, g in zip(outputs, output_grads):
        if not y.requires_grad:
            continue
        entry = grads.get(id(y))
        if entry is None:
            grads[id(y)] = [y, g]
        else:
            entry[1] = entry[1] + g
    roots = [entry[0] for entry in grads.values()]
    # retain_graph: the recorded gradients refer to the composite's graph, which a later
    # backward through them must still find.
    _propagate(roots, grads, retain_graph=True, create_graph=True, stop=frozenset(id(s) for s in stand_ins))
    return tuple(grads[id(s)][1] if x.requires_grad and id(s) in grads else None
                 for x, s in zip(fn.inputs, stand_ins))


class _Alias(Function):
    """The same array under a new tensor: marks where a composite's propagation stops."""

    def forward(self, x):
        return x

    def backward(self, gy):
        return gy


def _sum_to(grad, shape: tuple, fn: Function):
    """A gradient (array, or Tensor while recording) summed over its broadcast dimensions."""
    lead = grad.ndim - len(shape)
    if lead < 0 or any(n != 1 and n != g for n, g in zip(shape, grad.shape[lead:])):
        raise GraphError(f"internal error: {type(fn).__name__}.backward returned a gradient of "
                         f"shape {grad.shape} for an input of shape {shape}")
    from .ops import SumTo, sum_to

    return sum_to(grad, shape) if isinstance(grad, Tensor) else SumTo(shape).forward(grad)


def _deliver_to_leaves(leaves: list, grads: dict, create_graph: bool) -> None:
    """Run each leaf's hooks on its total gradient of this pass, then add it to `.grad`."""
    handed_out = set()
    for leaf in leaves:
        g = grads.pop(id(leaf))[1]
        if leaf._hooks:
            g = _run_hooks(leaf, g)
        if g.dtype != leaf.dtype:
            g = _cast(g, leaf.dtype)
        existing = leaf.grad
        if create_graph:
            leaf.grad = g if existing is None else existing + g
        elif existing is not None and existing.creator is None and not existing.requires_grad:
            # Accumulate in place, as PyTorch: `.grad` keeps its memory, which may be a view
            # into an optimizer's flat gradient buffer (see Optimizer's flat=True).
            existing.data += g
            existing._version += 1
        else:
            # A leaf's .grad must own its memory: a rule may hand the same array (or a
            # broadcast view) to several inputs, and optimizers update grads in place.
            if id(g) in handed_out or g.base is not None or not getattr(g.flags, "writeable", True):
                g = g.copy()
            handed_out.add(id(g))
            leaf.grad = _from_array(g) if existing is None else existing + _from_array(g)


def _cast(grad, dtype):
    """A gradient (array, or Tensor while recording) converted to `dtype`."""
    if isinstance(grad, Tensor):
        from .ops import astype

        return astype(grad, dtype)
    return grad.astype(dtype)


def _fill_missing(fn: Function, output_grads: list, as_tensors: bool) -> list:
    """Zeros for the outputs that received no gradient (empty list if none did)."""
    if all(g is None for g in output_grads):
        return []
    xp = _backend.array_module(fn.inputs[0].data)
    filled = []
    for g, (shape, dtype) in zip(output_grads, fn.output_specs):
        if g is None:
            g = xp.zeros(shape, dtype=dtype)
            g = _from_array(g) if as_tensors else g
        filled.append(g)
    return filled
