"""Every op against PyTorch: the same values and the same gradients (float64, rtol 1e-10)."""

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from .helpers import leaf, oracle
from .op_cases import CASES

torch = oracle("torch", reason="PyTorch is the reference for op parity; pip install torch")

WITH_TORCH = sorted(name for name, case in CASES.items() if case.torch is not None)


def test_every_op_without_a_torch_reference_is_explained():
    # dropout draws its own random mask, so it cannot match PyTorch's; its gradient is
    # checked against finite differences and its statistics in tests/test_ops.py.
    assert sorted(set(CASES) - set(WITH_TORCH)) == ["dropout"]


@pytest.mark.parametrize("name", WITH_TORCH)
@given(data=st.data())
def test_values_and_gradients_match_torch(name, data):
    case = CASES[name]
    arrays, kwargs = case.draw(data)
    ours = [leaf(a) for a in arrays]
    theirs = [torch.tensor(a, dtype=torch.float64, requires_grad=True) for a in arrays]
    y = case.minilm(*ours, **kwargs)
    y_ref = case.torch(*theirs, **kwargs)
    np.testing.assert_allclose(y.numpy(), y_ref.detach().numpy(), rtol=1e-10, atol=1e-12)

    direction = np.random.default_rng(1).standard_normal(y.shape)
    y.backward(leaf(direction, requires_grad=False))
    y_ref.backward(torch.tensor(direction))
    for i, (a, b) in enumerate(zip(ours, theirs)):
        expected = b.grad.numpy() if b.grad is not None else np.zeros(b.shape)
        got = a.grad.numpy() if a.grad is not None else np.zeros(a.shape)
        np.testing.assert_allclose(got, expected, rtol=1e-9, atol=1e-11, err_msg=f"{name}: gradient of input {i}")
