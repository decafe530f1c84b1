"""A small profiler: every op run in forward and backward, with its shapes and its time.

    from minilm.trace import Trace
    with Trace() as t:
        loss = model(ids, targets=targets).loss
        loss.backward()
    print(t.table())      # one row per op, in the order they ran
    print(t.summary())    # time per op kind, the largest first

Reading the table shows two things the code alone hides: where the time goes (usually a
few large matrix products), and how backward mirrors forward: the backward rows are the
forward ops in reverse order, each mapping the gradient of its output(s) to the gradient
of its input(s).

How it works, and why it costs nothing when unused: on entering the block, `Trace` wraps
`Function.__call__` (the one entry point of every op's forward) and the `backward` method
of every `Function` subclass; on leaving it puts the originals back. Outside a `with Trace()`
block nothing is wrapped, so ordinary runs pay no check at all. The wrapping is
process-wide: ops that other threads run meanwhile are recorded too, and the backward of a
`Function` subclass defined inside the block is not (its class did not exist on entry).

Ops called from inside another op (a fused op calling `MatMul().forward` directly) are
not separate ops and are not listed. Under `backward(create_graph=True)` the gradient
rules run Tensor ops; those are listed as forward ops run *during* backward (their
`phase` is "backward", `depth` 1).
On a GPU, kernels run asynchronously: pass `synchronize=True` to time each op to its end.
"""

from __future__ import annotations

import time
from collections import defaultdict
from dataclasses import dataclass

from . import backend as _backend
from .autograd import Function, data_of


@dataclass
class TraceEvent:
    """One op run: `kind` "forward" (Function.__call__) or "backward" (its gradient rule)."""

    index: int
    kind: str
    op: str
    phase: str  # "forward", or "backward" when it ran inside a backward pass
    depth: int  # how many traced ops were already running when this one started
    input_shapes: tuple
    output_shapes: tuple
    dtype: str
    seconds: float


_active: list["Trace"] = []


class Trace:
    """Context manager recording the ops run inside it (see the module docstring)."""

    def __init__(self, synchronize: bool = False):
        self.synchronize = synchronize
        self.events: list[TraceEvent] = []
        self._originals: dict[type, dict[str, object]] = {}
        self._depth = 0
        self._backward_depth = 0

    # -- install / uninstall the wrappers -------------------------------------------------
    def __enter__(self) -> "Trace":
        if _active:
            raise RuntimeError("a Trace is already recording; traces cannot be nested")
        _active.append(self)
        self.events.clear()
        self._wrap(Function, "__call__", self._wrap_call)
        for cls in _all_subclasses(Function):
            if "backward" in cls.__dict__:
                self._wrap(cls, "backward", self._wrap_backward)
        return self

    def __exit__(self, *exc_info) -> None:
        for cls, methods in self._originals.items():
            for name, original in methods.items():
                setattr(cls, name, original)
        self._originals.clear()
        _active.remove(self)

    def _wrap(self, cls: type, name: str, make_wrapper) -> None:
        original = cls.__dict__[name]
        self._originals.setdefault(cls, {})[name] = original
        setattr(cls, name, make_wrapper(original))

    def _wrap_call(self, original):
        trace = self

        def traced_call(fn, *inputs):
            return trace._timed("forward", fn, original, inputs)

        return traced_call

    def _wrap_backward(self, original):
        trace = self

        def traced_backward(fn, *grads):
            trace._backward_depth += 1
            try:
                return trace._timed("backward", fn, original, grads)
            finally:
                trace._backward_depth -= 1

        return traced_backward

    # -- recording -------------------------------------------------------------------------
    def _timed(self, kind: str, fn: Function, original, arguments: tuple):
        # The event is listed when the op starts, so an op run inside another (a Tensor op
        # inside a recorded gradient rule) comes after it in the table, indented.
        dtype = next((str(a.dtype) for a in arguments if a is not None), "")
        event = TraceEvent(index=len(self.events), kind=kind, op=type(fn).__name__,
                           phase="backward" if self._backward_depth else "forward", depth=self._depth,
                           input_shapes=_shapes(arguments), output_shapes=(), dtype=dtype, seconds=0.0)
        self.events.append(event)
        self._depth += 1
        try:
            self._sync(arguments)
            start = time.perf_counter()
            results = original(fn, *arguments)
            self._sync(arguments)
            event.seconds = time.perf_counter() - start
        finally:
            self._depth -= 1
        event.output_shapes = _shapes(results if isinstance(results, tuple) else (results,))
        return results

    def _sync(self, arguments) -> None:
        if not self.synchronize:
            return
        for a in arguments:
            if a is not None:
                _backend.device_of(data_of(a)).synchronize()
                return

    # -- reports ------------------------------------------------------------------------------
    @property
    def forward_events(self) -> list[TraceEvent]:
        return [e for e in self.events if e.kind == "forward" and e.phase == "forward"]

    @property
    def backward_events(self) -> list[TraceEvent]:
        return [e for e in self.events if e.kind == "backward"]

    @property
    def total_seconds(self) -> float:
        """Time of the outermost ops only (nested ops are already inside their parent's time)."""
        return sum(e.seconds for e in self.events if e.depth == 0)

    def table(self, limit: int | None = None) -> str:
        """One row per op in the order they ran: phase, op, input -> output shapes, time."""
        rows = [("#", "phase", "op", "inputs", "outputs", "dtype", "ms")]
        for e in self.events[:limit]:
            name = ("  " * e.depth) + e.op + (" (grad)" if e.kind == "backward" else "")
            rows.append((str(e.index), e.phase, name, _format_shapes(e.input_shapes),
                         _format_shapes(e.output_shapes), e.dtype, f"{1000 * e.seconds:.3f}"))
        hidden = len(self.events) - len(rows) + 1
        text = _format_rows(rows, right_aligned={0, 6})
        if hidden > 0:
            text += f"\n... {hidden} more ops"
        return text + f"\ntotal {1000 * self.total_seconds:.2f} ms in {len(self.events)} ops"

    def summary(self) -> str:
        """Time per (phase, op), the most expensive first: where the time goes."""
        totals: dict[tuple, list] = defaultdict(lambda: [0, 0.0])
        for e in self.events:
            if e.depth == 0:
                entry = totals[(e.phase, e.op)]
                entry[0] += 1
                entry[1] += e.seconds
        whole = self.total_seconds or 1.0
        rows = [("phase", "op", "calls", "ms", "share")]
        for (phase, op), (calls, seconds) in sorted(totals.items(), key=lambda item: -item[1][1]):
            rows.append((phase, op, str(calls), f"{1000 * seconds:.3f}", f"{100 * seconds / whole:.1f}%"))
        return _format_rows(rows, right_aligned={2, 3, 4})


def _all_subclasses(cls: type) -> list[type]:
    found, stack = [], [cls]
    while stack:
        for sub in stack.pop().__subclasses__():
            if sub not in found:
                found.append(sub)
                stack.append(sub)
    return found


def _shapes(values) -> tuple:
    return tuple(None if v is None else tuple(v.shape) for v in values)


def _format_shapes(shapes: tuple) -> str:
    return " ".join("-" if s is None else "[" + ",".join(map(str, s)) + "]" for s in shapes)


def _format_rows(rows: list[tuple], right_aligned: set) -> str:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = []
    for row in rows:
        cells = [cell.rjust(w) if i in right_aligned else cell.ljust(w) for i, (cell, w) in enumerate(zip(row, widths))]
        lines.append("  ".join(cells).rstrip())
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)
