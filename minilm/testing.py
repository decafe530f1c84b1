"""Check gradients the way minilm's own tests do: against central finite differences.

    from minilm.testing import gradcheck
    x = ml.tensor(np.random.rand(3, 4), dtype=ml.float64, requires_grad=True)
    gradcheck(lambda x: (x * x).sum(axis=0), [x])

`gradcheck` projects the output onto a fixed random direction r (so any output shape
works) and compares the analytic gradient of <f(x), r> with central differences: every
element for small inputs, random directions for large ones. Use float64: float32's
rounding swamps the finite differences. `gradgradcheck` does the same for the gradient
itself (double backprop). The hypothesis strategies draw shapes and arrays that stay away
from kinks and ties, where a derivative is not defined.
"""

from __future__ import annotations

import numpy as np

from .autograd import Tensor, enable_grad

__all__ = ["GradcheckError", "gradcheck", "gradgradcheck", "shapes", "broadcastable_shapes", "arrays"]


class GradcheckError(AssertionError):
    """An analytic gradient disagreed with the finite-difference estimate."""


def _projected_loss(fn, inputs, direction_seed: int):
    """L(inputs) = sum(fn(inputs) * r), r a fixed random array of the output's shape."""
    output = fn(*inputs)
    if not isinstance(output, Tensor):
        raise TypeError(f"gradcheck: the function must return a Tensor, got {type(output).__name__}")
    rng = np.random.default_rng(direction_seed)
    r = Tensor(output.device.xp.asarray(rng.standard_normal(output.shape)).astype(output.dtype))
    return (output * r).sum()


def _loss_value(fn, inputs, seed) -> float:
    from .autograd import no_grad

    with no_grad():
        return float(_projected_loss(fn, inputs, seed).item())


def gradcheck(fn, inputs, eps: float = 1e-6, rtol: float = 1e-5, atol: float = 1e-8,
              max_full_elements: int = 64, directions: int = 6, seed: int = 0) -> bool:
    """Raise GradcheckError unless backward of `fn` matches central finite differences.

    fn: takes the tensors in `inputs`, returns a Tensor. Inputs with requires_grad are checked.
    Inputs of at most `max_full_elements` elements are checked element by element; larger
    ones along `directions` random unit directions.
    """
    checked = [x for x in inputs if isinstance(x, Tensor) and x.requires_grad]
    if not checked:
        raise ValueError("gradcheck: no input has requires_grad=True")
    for x in checked:
        if x.dtype != np.float64:
            raise TypeError(f"gradcheck needs float64 inputs for accurate finite differences, got {x.dtype}")
        x.grad = None
    with enable_grad():
        loss = _projected_loss(fn, inputs, seed)
    if loss.requires_grad:  # else the output is constant in the inputs: every gradient is 0
        loss.backward()
    analytic = [x.grad.numpy() if x.grad is not None else np.zeros(x.shape) for x in checked]

    rng = np.random.default_rng(seed + 1)
    for index, (x, grad) in enumerate(zip(checked, analytic)):
        original = x.data.copy()
        flat = x.data.reshape(-1)  # a view: perturbing it perturbs x
        if x.size <= max_full_elements:
            probes = [(i, None) for i in range(x.size)]
        else:
            probes = [(None, _unit(rng, x.size)) for _ in range(directions)]
        for element, direction in probes:
            if element is not None:
                flat[element] = original.reshape(-1)[element] + eps
                plus = _loss_value(fn, inputs, seed)
                flat[element] = original.reshape(-1)[element] - eps
                minus = _loss_value(fn, inputs, seed)
                expected_slope = float(grad.reshape(-1)[element])
            else:
                step = x.device.xp.asarray(direction * eps)
                flat[...] = original.reshape(-1) + step
                plus = _loss_value(fn, inputs, seed)
                flat[...] = original.reshape(-1) - step
                minus = _loss_value(fn, inputs, seed)
                expected_slope = float(grad.reshape(-1) @ direction)
            flat[...] = original.reshape(-1)
            numeric = (plus - minus) / (2 * eps)
            if not abs(numeric - expected_slope) <= atol + rtol * abs(numeric):
                where = f"element {np.unravel_index(element, x.shape)}" if element is not None else "a random direction"
                raise GradcheckError(
                    f"gradient mismatch for input {index} (shape {x.shape}) at {where}: "
                    f"analytic {expected_slope:.10g} vs numeric {numeric:.10g} "
                    f"(|diff| {abs(numeric - expected_slope):.3g}, rtol {rtol}, atol {atol})"
                )
        x.grad = None
    return True


def gradgradcheck(fn, inputs, eps: float = 1e-6, rtol: float = 1e-4, atol: float = 1e-7, seed: int = 0,
                  **kwargs) -> bool:
    """Check second derivatives: the gradient computed with create_graph=True must itself
    have correct gradients (checked by `gradcheck` on a random projection of it)."""
    checked = [x for x in inputs if isinstance(x, Tensor) and x.requires_grad]
    rng = np.random.default_rng(seed + 2)
    projections = [Tensor(x.device.xp.asarray(rng.standard_normal(x.shape))) for x in checked]

    def projected_gradient(*xs):
        live = [x for x in xs if isinstance(x, Tensor) and x.requires_grad]
        for x in live:
            x.grad = None
        with enable_grad():
            loss = _projected_loss(fn, xs, seed)
            loss.backward(create_graph=True)
        total = None
        for x, s in zip(live, projections):
            if x.grad is None:
                continue
            term = (x.grad * s).sum()
            total = term if total is None else total + term
            x.grad = None
        if total is None:
            raise GradcheckError("gradgradcheck: no input received a gradient")
        return total

    return gradcheck(projected_gradient, inputs, eps=eps, rtol=rtol, atol=atol, seed=seed, **kwargs)


def _unit(rng, size: int) -> np.ndarray:
    v = rng.standard_normal(size)
    return v / np.linalg.norm(v)


# ---------------------------------------------------------------------------------------
# Hypothesis strategies (hypothesis is a test dependency, imported only when used)
# ---------------------------------------------------------------------------------------
def shapes(min_dims: int = 0, max_dims: int = 3, min_side: int = 1, max_side: int = 4):
    """Array shapes, size-1 dimensions included."""
    from hypothesis import strategies as st

    return st.lists(st.integers(min_side, max_side), min_size=min_dims, max_size=max_dims).map(tuple)


def broadcastable_shapes(min_dims: int = 0, max_dims: int = 3, max_side: int = 4):
    """Pairs (a, b) that broadcast together: b drops leading dims and/or has 1s where a does not."""
    from hypothesis import strategies as st

    @st.composite
    def pair(draw):
        a = draw(shapes(min_dims, max_dims, 1, max_side))
        dropped = draw(st.integers(0, len(a)))
        b = [n if not draw(st.booleans()) else 1 for n in a[dropped:]]
        if draw(st.booleans()):
            return a, tuple(b)
        return tuple(b), a

    return pair()


def arrays(shape, low: float = -2.0, high: float = 2.0, away_from=(), gap: float = 1e-2, distinct: bool = False):
    """float64 arrays of `shape` with values in [low, high].

    away_from: points (kinks) that every value stays at least `gap` from.
    distinct: values pairwise at least (high - low) / (2 size) apart (no ties for max/min).
    """
    from hypothesis import strategies as st

    def build(seed: int) -> np.ndarray:
        rng = np.random.default_rng(seed)
        size = int(np.prod(shape))
        if distinct and size:
            slot = (high - low) / size
            values = low + (rng.permutation(size) + rng.uniform(0.25, 0.75, size)) * slot
        else:
            values = rng.uniform(low, high, size)
        for point in away_from:
            near = np.abs(values - point) < gap
            values[near] = point + np.where(values[near] >= point, gap, -gap)
        return values.reshape(shape)

    return st.integers(0, 2**32 - 1).map(build)
