"""Small helpers shared by the tests."""

import numpy as np

import minilm as ml


def leaf(array, requires_grad=True, dtype=np.float64):
    """A float64 leaf tensor on the backend under test."""
    return ml.tensor(np.asarray(array, dtype=dtype), device=ml.default_device(), requires_grad=requires_grad)


def to_numpy(t):
    return t.numpy() if isinstance(t, ml.Tensor) else np.asarray(t)
