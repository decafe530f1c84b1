"""minilm.trace: the op-by-op profiler records forward and backward and leaves no trace after."""

import numpy as np
import pytest

import minilm as ml
import minilm.functional as F
from minilm import nn
from minilm.autograd import Function
from minilm.ops import Mul
from minilm.trace import Trace


def _mlp_loss():
    ml.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 3))
    x = ml.randn(5, 4)
    return model, F.cross_entropy(model(x), np.array([0, 1, 2, 0, 1]))


def test_backward_mirrors_forward():
    model, _ = _mlp_loss()
    x = ml.randn(5, 4)
    with Trace() as t:
        loss = F.cross_entropy(model(x), np.array([0, 1, 2, 0, 1]))
        loss.backward()
    forward = [e.op for e in t.forward_events]
    assert forward == ["Linear", "ReLU", "Linear", "CrossEntropy"]
    assert [e.op for e in t.backward_events] == forward[::-1]
    first = t.forward_events[0]
    assert first.input_shapes == ((5, 4), (8, 4), (8,)) and first.output_shapes == ((5, 8),)
    # The gradient rule of the first Linear returns no gradient for the input x.
    assert t.backward_events[-1].output_shapes == (None, (8, 4), (8,))
    assert all(e.seconds >= 0 for e in t.events) and t.total_seconds > 0
    table, summary = t.table(), t.summary()
    assert "CrossEntropy (grad)" in table and "[5,4] [8,4] [8]" in table
    assert "share" in summary and "Linear" in summary


def test_wrappers_are_removed_on_exit_even_after_an_error():
    call, backward = Function.__call__, Mul.__dict__["backward"]
    with pytest.raises(ZeroDivisionError):
        with Trace():
            assert Function.__call__ is not call
            _ = 1 / 0
    assert Function.__call__ is call and Mul.__dict__["backward"] is backward


def test_traces_cannot_be_nested():
    with Trace():
        with pytest.raises(RuntimeError, match="nested"):
            with Trace():
                pass


def test_ops_recorded_inside_a_recorded_backward_are_nested():
    x = ml.tensor([1.0, 2.0], requires_grad=True)
    with Trace() as t:
        (x * x).sum().backward(create_graph=True)
    inner = [e for e in t.events if e.kind == "forward" and e.phase == "backward"]
    assert inner and all(e.depth == 1 for e in inner)
    assert t.table(limit=2).count("\n") >= 3 and "more ops" in t.table(limit=2)
