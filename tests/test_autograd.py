"""Graph properties of the autograd engine: reuse, diamonds, repeated backward, no_grad,
hooks, detach, deep chains, memory release, in-place guards and error messages."""

import gc
import weakref

import numpy as np
import pytest

import minilm as ml
from minilm.autograd import GraphError

from .helpers import leaf


def test_reused_node_accumulates_both_paths():
    x = leaf([2.0])
    y = x * x * x  # x used three times
    y.backward()
    np.testing.assert_allclose(x.grad.numpy(), [12.0])


def test_diamond_graph():
    x = leaf([3.0])
    a = x * 2.0
    b = a.exp()
    c = a * a
    (b + c).backward()
    # d/dx (e^{2x} + 4x^2) = 2 e^{2x} + 8x
    np.testing.assert_allclose(x.grad.numpy(), [2 * np.exp(6.0) + 24.0])


def test_gradients_accumulate_across_backward_calls():
    x = leaf([1.0, 2.0])
    (x * 3.0).sum().backward()
    (x * x).sum().backward()
    np.testing.assert_allclose(x.grad.numpy(), [3 + 2, 3 + 4])


def test_second_backward_through_a_freed_graph_raises():
    x = leaf([1.0])
    y = (x.exp() * 2.0).sum()
    y.backward()
    with pytest.raises(GraphError, match="retain_graph=True"):
        y.backward()


def test_retain_graph_allows_repeated_backward():
    x = leaf([1.0])
    y = (x.exp() * 2.0).sum()
    y.backward(retain_graph=True)
    y.backward()
    np.testing.assert_allclose(x.grad.numpy(), [4 * np.e])


def test_no_grad_records_nothing_and_enable_grad_inside_turns_it_back_on():
    x = leaf([1.0])
    with ml.no_grad():
        y = x * 2.0
        with ml.enable_grad():
            z = x * 3.0
    assert not y.requires_grad and y.creator is None
    assert z.requires_grad and z.creator is not None
    assert ml.is_grad_enabled()


def test_detach_cuts_the_graph_and_shares_memory():
    x = leaf([1.0, 2.0])
    d = (x * 2.0).detach()
    assert not d.requires_grad and d.is_leaf
    y = (x * d).sum()
    y.backward()
    np.testing.assert_allclose(x.grad.numpy(), d.numpy())


def test_hooks_see_and_can_replace_gradients():
    x = leaf([1.0, 2.0])
    seen = []
    mid = x * 3.0
    mid.register_hook(lambda g: seen.append(g.numpy().copy()))
    handle = x.register_hook(lambda g: g * 10.0)
    mid.sum().backward()
    np.testing.assert_allclose(seen[0], [1.0, 1.0])
    np.testing.assert_allclose(x.grad.numpy(), [30.0, 30.0])
    handle.remove()
    x.grad = None
    (x * 3.0).sum().backward()
    np.testing.assert_allclose(x.grad.numpy(), [3.0, 3.0])


def test_a_20000_op_chain_backpropagates_without_recursion():
    x = leaf([1.0])
    y = x
    for _ in range(20000):
        y = y * 1.0001
    y.backward()
    np.testing.assert_allclose(x.grad.numpy(), [1.0001**20000], rtol=1e-9)


def test_graph_memory_is_freed_without_the_cyclic_gc():
    gc.disable()
    try:
        x = leaf(np.ones((100, 100)))
        y = (x * 2.0).exp().sum()
        function_ref = weakref.ref(y.creator)
        intermediate_ref = weakref.ref(y.creator.inputs[0])
        del y
        assert function_ref() is None and intermediate_ref() is None

        y = (x * 2.0).tanh().sum()
        saved_ref = weakref.ref(y.creator.inputs[0])
        y.backward()  # releases saved buffers
        assert saved_ref() is None
    finally:
        gc.enable()


def test_create_graph_gives_differentiable_gradients():
    x = leaf([0.7])
    y = (x.tanh() * x).sum()
    y.backward(create_graph=True)
    first = x.grad
    assert first.requires_grad
    x.grad = None
    first.sum().backward()
    t = np.tanh(0.7)
    second = 2 * (1 - t * t) - 2 * 0.7 * t * (1 - t * t)
    np.testing.assert_allclose(x.grad.numpy(), [second], rtol=1e-12)


def test_modifying_a_saved_tensor_in_place_raises():
    x = leaf([1.0, 2.0])
    w = ml.tensor(np.array([3.0, 4.0]))
    y = (x * w).sum()
    w.add_(1.0)
    with pytest.raises(GraphError, match="modified in place"):
        y.backward()


def test_in_place_on_a_leaf_that_requires_grad_is_refused_outside_no_grad():
    x = leaf([1.0])
    with pytest.raises(GraphError, match="no_grad"):
        x.add_(1.0)
    with ml.no_grad():
        x.add_(1.0)
    np.testing.assert_allclose(x.numpy(), [2.0])


def test_backward_on_a_non_scalar_says_what_to_pass():
    x = leaf([1.0, 2.0])
    with pytest.raises(GraphError, match=r"needs a gradient.*\(2,\)"):
        (x * 2.0).backward()
    (x * 2.0).backward(ml.ones(2, dtype=ml.float64))
    np.testing.assert_allclose(x.grad.numpy(), [2.0, 2.0])


def test_integer_tensors_cannot_require_grad():
    with pytest.raises(TypeError, match="floating-point"):
        ml.tensor([1, 2, 3], requires_grad=True)


def test_matmul_shape_mismatch_names_both_shapes():
    a, b = ml.ones(2, 3), ml.ones(4, 5)
    with pytest.raises(ValueError, match=r"\(2, 3\).*\(4, 5\)"):
        a @ b


def test_tensor_basics():
    t = ml.tensor([[1.0, 2.0], [3.0, 4.0]])
    assert t.dtype == np.float32 and t.shape == (2, 2) and t.ndim == 2 and len(t) == 2
    assert ml.tensor([1, 2]).dtype == np.int64
    assert ml.tensor(2.5).item() == 2.5
    assert "tensor(" in repr(t)
    np.testing.assert_array_equal((t > 2.0).numpy(), [[False, False], [True, True]])


def test_unused_outputs_of_a_split_get_zero_gradient():
    x = leaf(np.arange(6.0))
    a, b, c = ml.split(x, 3)
    (b * 2.0).sum().backward()
    np.testing.assert_allclose(x.grad.numpy(), [0, 0, 2, 2, 0, 0])


def test_backward_accumulates_into_the_existing_grad_in_place():
    # As PyTorch: a second backward adds into the same .grad array, so a .grad that is a
    # view (e.g. into an optimizer's flat buffer) keeps receiving the gradients.
    x = ml.tensor([1.0, 2.0, 3.0], requires_grad=True)
    (x * x).sum().backward()
    first = x.grad
    buffer = first.data
    (3 * x).sum().backward()
    assert x.grad is first and x.grad.data is buffer
    np.testing.assert_allclose(x.grad.numpy(), [5.0, 7.0, 9.0])


def test_a_gradient_has_the_dtype_of_its_tensor():
    # float32 * float64 makes a float64 result; the float32 input's gradient is float32.
    a = ml.tensor([1.0, 2.0], dtype=ml.float32, requires_grad=True)
    b = ml.tensor([3.0, 4.0], dtype=ml.float64, requires_grad=True)
    h = a.to(dtype=ml.float16) * 2.0  # an intermediate float16 tensor on the way
    ((h * b).sum() + (a * b).sum()).backward()
    assert a.grad.dtype == np.float32 and b.grad.dtype == np.float64
    np.testing.assert_allclose(a.grad.numpy(), [9.0, 12.0])
