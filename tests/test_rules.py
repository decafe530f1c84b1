"""The gradient rules as a whole: every fused rule agrees with its composite of primitive
ops (forward and gradient), the engine sums broadcast gradients, and each rule declares
its autocast policy on its class."""

import subprocess
import sys

import numpy as np
import pytest

import minilm as ml
import minilm.functional as F
from minilm import ops
from minilm.autograd import Function

RNG = np.random.default_rng(0)


def _leaf(*shape):
    return ml.tensor(RNG.standard_normal(shape), dtype=ml.float64, requires_grad=True)


def _on_device(array):
    """A rule's own arrays (targets, masks, angles) live where its inputs do."""
    return ml.default_device().asarray(array)


def _keep(shape, p=0.25):
    return _on_device((RNG.random(shape) >= p).astype(np.float64) / (1 - p))


# (rule instance, input tensors): one or more configurations of every fused rule.
def _cases():
    targets = _on_device(np.array([1, 0, 3, -100, 2]))
    yield F.Softmax(-1), [_leaf(3, 5)]
    yield F.Softmax(0), [_leaf(4, 2)]
    yield F.LogSoftmax(-1), [_leaf(3, 5)]
    yield F.GELU("tanh"), [_leaf(4, 3)]
    yield F.GELU("tanh"), [_leaf()]
    yield F.GELU("none"), [_leaf(4, 3)]
    yield F.LayerNorm(1e-5, True, True), [_leaf(2, 3, 4), _leaf(4), _leaf(4)]
    yield F.LayerNorm(1e-5, False, False), [_leaf(3, 4)]
    for reduction in ("mean", "sum", "none"):
        yield F.CrossEntropy(targets, -100, reduction, 0.0), [_leaf(5, 4)]
    yield F.CrossEntropy(targets, -100, "mean", 0.1), [_leaf(5, 4)]
    yield F.CrossEntropy(_on_device(np.array([1, 0, 3, 2, 2])), -100, "mean", 0.1), [_leaf(5, 4)]  # no row ignored
    yield F.Linear(), [_leaf(2, 3, 4), _leaf(5, 4), _leaf(5)]
    yield F.Linear(), [_leaf(3, 4), _leaf(5, 4)]
    yield F.SplitHeads(2, 3), [_leaf(2, 3, 12)]
    yield F.MergeHeads(), [_leaf(2, 3, 4, 5)]
    causal = _on_device(np.tril(np.ones((3, 4), dtype=bool), k=1))
    yield F.Attention(None, 0.5, None, False), [_leaf(2, 3, 4), _leaf(2, 4, 4), _leaf(2, 4, 5)]
    yield F.Attention(causal, 0.5, _keep((2, 3, 4)), True), [_leaf(2, 3, 4), _leaf(2, 4, 4), _leaf(2, 4, 5)]
    yield F.Attention(_on_device(RNG.standard_normal((1, 4))), 0.3, None, False), [_leaf(3, 4), _leaf(4, 4), _leaf(4, 2)]
    yield F.Unbind(), [_leaf(3, 2, 4)]
    yield F.RMSNorm(1e-6, True), [_leaf(2, 3, 4), _leaf(4)]
    yield F.RMSNorm(1e-3, False), [_leaf(3, 4)]
    yield F.SiLU(), [_leaf(4, 3)]
    yield F.SwiGLU(), [_leaf(2, 3, 8)]
    angles = RNG.standard_normal((3, 2))
    yield F.Rotary(_on_device(np.cos(angles)), _on_device(np.sin(angles))), [_leaf(2, 2, 3, 4)]
    yield F.LSTMCell(), [_leaf(3, 8), _leaf(3, 2)]
    yield F.LSTMLayer(True), [_leaf(4, 3, 5), _leaf(8, 5), _leaf(8), _leaf(8, 2), _leaf(3, 2), _leaf(3, 2)]
    yield F.LSTMLayer(False), [_leaf(4, 3, 5), _leaf(8, 5), _leaf(8, 2), _leaf(3, 2), _leaf(3, 2)]


def _gradients(outputs, inputs, output_grads):
    for x in inputs:
        x.grad = None
    total = ml.sum(ml.stack([(y * g).sum() for y, g in zip(outputs, output_grads)]))
    total.backward()
    return [x.grad.numpy() for x in inputs]


def _case_id(value):
    return type(value).__name__ if isinstance(value, Function) else ""


@pytest.mark.parametrize("rule, inputs", list(_cases()), ids=_case_id)
def test_each_fused_rule_agrees_with_its_composite(rule, inputs):
    fused = rule(*inputs)
    fused = fused if isinstance(fused, tuple) else (fused,)
    composite = rule.composite(*inputs)
    composite = composite if isinstance(composite, tuple) else (composite,)
    assert len(fused) == len(composite)
    for a, b in zip(fused, composite):
        np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-10, atol=1e-12)
    output_grads = [ml.tensor(RNG.standard_normal(y.shape), dtype=ml.float64) for y in fused]
    expected = _gradients(composite, inputs, output_grads)
    got = _gradients(fused, inputs, output_grads)
    for a, b in zip(got, expected):
        np.testing.assert_allclose(a, b, rtol=1e-9, atol=1e-12)


def _all_rules():
    found, stack = [], [Function]
    while stack:
        cls = stack.pop()
        for sub in cls.__subclasses__():
            if sub.__module__.startswith("minilm."):
                found.append(sub)
            stack.append(sub)
    return found


def test_every_fused_rule_has_a_composite_case():
    fused = {cls for cls in _all_rules() if cls.composite is not None}
    covered = {type(rule) for rule, _ in _cases()}
    assert fused - covered == set(), "fused rules without a composite check"
    assert {F.Softmax, F.LayerNorm, F.Attention, F.LSTMCell} <= fused


def test_second_derivative_of_a_fused_rule_comes_from_its_composite():
    # d2/dx2 of sum(gelu_tanh(x)), through the fused rule (create_graph) and the composite
    x = _leaf(5)
    F.gelu(x, approximate="tanh").sum().backward(create_graph=True)
    g = x.grad
    x.grad = None
    g.sum().backward()
    fused_second = x.grad.numpy()
    y = _leaf(5)
    y.data[...] = x.data
    F.GELU("tanh").composite(y).sum().backward(create_graph=True)
    gy = y.grad
    y.grad = None
    gy.sum().backward()
    np.testing.assert_allclose(fused_second, y.grad.numpy(), rtol=1e-10)


class _NaturalGradient(Function):
    """x * w with w broadcast; its rule returns the full-size gradient for w."""

    def forward(self, x, w):
        return x * w

    def backward(self, gy):
        x, w = self.inputs
        return gy * w.data, gy * x.data


def test_the_engine_sums_broadcast_gradients_to_each_inputs_shape():
    x, w = _leaf(4, 3), _leaf(3)
    _NaturalGradient()(x, w).sum().backward()
    np.testing.assert_allclose(w.grad.numpy(), x.numpy().sum(axis=0))
    np.testing.assert_allclose(x.grad.numpy(), np.broadcast_to(w.numpy(), (4, 3)))


def test_autocast_policies_are_declared_on_the_rule_classes():
    policies = {cls.__name__: cls.autocast_policy for cls in _all_rules() if cls.autocast_policy}
    assert policies["MatMul"] == policies["Linear"] == policies["Attention"] == "low"
    for name in ("Softmax", "LogSoftmax", "LayerNorm", "CrossEntropy", "Exp", "Log", "Sum"):
        assert policies[name] == "float32"
    assert set(policies.values()) == {"low", "float32"}


def test_maximum_and_minimum_are_separate_rules():
    a, b = ml.tensor([1.0, 5.0, 2.0], requires_grad=True), ml.tensor([3.0, 4.0, 2.0], requires_grad=True)
    low = ml.minimum(a, b)
    assert type(low.creator).__name__ == "Minimum"
    low.sum().backward()
    np.testing.assert_allclose(a.grad.numpy(), [1.0, 0.0, 0.5])
    assert type(ops.min(a).creator).__name__ == "Min"


def test_amp_is_reachable_after_importing_minilm():
    # A fresh interpreter: this test process may have imported minilm.amp already.
    code = "import minilm as ml; ml.amp.autocast; ml.amp.GradScaler"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


def test_recorded_attention_computes_scores_in_float32_under_autocast():
    # Scores of 50,000 times a scale of 2 overflow float16 (max 65,504) but not float32,
    # where the forward computes them; the recorded gradient must agree with the plain one.
    q = ml.tensor([[[200.0, 100.0]]], requires_grad=True)
    k = ml.tensor([[[200.0, 100.0], [200.0, 99.0]]], requires_grad=True)
    v = ml.tensor([[[1.0, 2.0], [3.0, 4.0]]], requires_grad=True)
    grads = []
    for create_graph in (False, True):
        for t in (q, k, v):
            t.grad = None
        with ml.amp.autocast():
            out = F.scaled_dot_product_attention(q, k, v, scale=2.0)
        out.sum().backward(create_graph=create_graph)
        grads.append([t.grad.numpy() for t in (q, k, v)])
    for plain, recorded in zip(*grads):
        assert np.all(np.isfinite(recorded))
        np.testing.assert_allclose(recorded, plain, atol=1e-3)


def test_the_rule_index_in_the_docs_lists_every_rule():
    from pathlib import Path

    index = (Path(__file__).resolve().parents[1] / "docs" / "rules.md").read_text(encoding="utf-8")
    listed = set()
    for line in index.splitlines():
        if line.startswith("| ") and not line.startswith("| rule"):
            listed |= {name.strip() for name in line.split("|")[1].split("/")}
    names = {cls.__name__ for cls in _all_rules() if not cls.__name__.startswith("_")}
    assert names - listed == set(), "rules missing from docs/rules.md"
