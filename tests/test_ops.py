"""Every public op: gradients against finite differences (float64), second derivatives for
the smooth ones, float32 vs float64 agreement, and the documented conventions at kinks."""

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import minilm as ml
import minilm.functional as F
from minilm.ops import OPS
from minilm.testing import GradcheckError, gradcheck, gradgradcheck

from .helpers import leaf
from .op_cases import CASES


def test_every_registered_op_has_a_gradcheck_case():
    missing = sorted(set(OPS) - set(CASES))
    assert not missing, f"ops without a gradcheck case in tests/op_cases.py: {missing}"
    stale = sorted(set(CASES) - set(OPS))
    assert not stale, f"cases for ops that are not registered: {stale}"


@pytest.mark.parametrize("name", sorted(CASES))
@given(data=st.data())
def test_gradcheck(name, data):
    case = CASES[name]
    arrays, kwargs = case.draw(data)
    inputs = [leaf(a) for a in arrays]
    gradcheck(lambda *xs: case.minilm(*xs, **kwargs), inputs, **case.gradcheck_kwargs)


SMOOTH = sorted(name for name, case in CASES.items() if case.smooth)


@pytest.mark.parametrize("name", SMOOTH)
@given(data=st.data())
def test_gradgradcheck(name, data):
    case = CASES[name]
    arrays, kwargs = case.draw(data)
    inputs = [leaf(a) for a in arrays]
    gradgradcheck(lambda *xs: case.minilm(*xs, **kwargs), inputs)


@pytest.mark.parametrize("name", sorted(n for n in CASES if n != "astype"))
@given(data=st.data())
def test_float32_forward_agrees_with_float64(name, data):
    case = CASES[name]
    arrays, kwargs = case.draw(data)
    y64 = case.minilm(*[leaf(a, requires_grad=False) for a in arrays], **kwargs)
    y32 = case.minilm(*[leaf(a, requires_grad=False, dtype=np.float32) for a in arrays], **kwargs)
    assert y32.dtype == np.float32, f"{name} turned float32 inputs into {y32.dtype}"
    np.testing.assert_allclose(y32.numpy(), y64.numpy(), rtol=1e-4, atol=1e-5)


def test_gradcheck_catches_a_wrong_gradient():
    class WrongSquare(ml.Function):
        def forward(self, x):
            return x * x

        def backward(self, gy):
            return gy * self.inputs[0] * 3.0  # should be 2x

    x = leaf(np.array([0.5, 1.5]))
    with pytest.raises(GradcheckError, match="gradient mismatch"):
        gradcheck(lambda t: WrongSquare()(t), [x])


def test_pow_with_a_constant_exponent():
    x = leaf(np.array([0.5, 1.2, 2.0]))
    for exponent in (2, 3, 0.5, -1.5):
        gradcheck(lambda t, e=exponent: t**e, [x])
        gradgradcheck(lambda t, e=exponent: t**e, [x])


def test_scalar_on_the_left_keeps_float32():
    x = ml.tensor([1.0, 2.0], requires_grad=True)
    y = 1.0 - 2.0 * x / 4.0 + 3.0**x
    assert y.dtype == np.float32
    y.sum().backward()
    np.testing.assert_allclose(x.grad.numpy(), -0.5 + np.log(3) * 3.0 ** np.array([1.0, 2.0]), rtol=1e-6)


# --- conventions at kinks and ties (documented in minilm/ops.py) ------------------------
def _grad(fn, values):
    x = leaf(np.asarray(values, dtype=np.float64))
    fn(x).sum().backward()
    return x.grad.numpy()


def test_relu_and_abs_have_zero_gradient_at_zero():
    np.testing.assert_array_equal(_grad(ml.relu, [-1.0, 0.0, 2.0]), [0.0, 0.0, 1.0])
    np.testing.assert_array_equal(_grad(ml.abs, [-1.0, 0.0, 2.0]), [-1.0, 0.0, 1.0])


def test_max_reduction_splits_the_gradient_among_ties():
    np.testing.assert_array_equal(_grad(lambda x: x.max(), [1.0, 3.0, 3.0, 0.0]), [0, 0.5, 0.5, 0])
    np.testing.assert_array_equal(_grad(lambda x: x.min(), [1.0, 0.0, 0.0, 0.0]), [0, 1 / 3, 1 / 3, 1 / 3])


def test_maximum_splits_ties_half_and_half():
    a, b = leaf([1.0, 2.0]), leaf([1.0, 0.0])
    ml.maximum(a, b).sum().backward()
    np.testing.assert_array_equal(a.grad.numpy(), [0.5, 1.0])
    np.testing.assert_array_equal(b.grad.numpy(), [0.5, 0.0])


def test_clip_passes_the_gradient_at_its_bounds():
    np.testing.assert_array_equal(_grad(lambda x: x.clip(0.0, 1.0), [-0.5, 0.0, 0.5, 1.0, 1.5]), [0, 1, 1, 1, 0])


def test_getitem_adds_up_repeated_indices():
    x = leaf([1.0, 2.0, 3.0])
    x[np.array([0, 0, 2, 0])].sum().backward()
    np.testing.assert_array_equal(x.grad.numpy(), [3.0, 0.0, 1.0])


def test_cross_entropy_mean_ignores_ignored_rows():
    logits = leaf(np.zeros((3, 4)))
    loss = F.cross_entropy(logits, np.array([1, -100, 2]))
    np.testing.assert_allclose(loss.item(), np.log(4))
    loss.backward()
    assert np.all(logits.grad.numpy()[1] == 0)


def test_softmax_is_stable_for_large_inputs():
    y = F.softmax(ml.tensor([1000.0, 1000.0, -1000.0]))
    np.testing.assert_allclose(y.numpy(), [0.5, 0.5, 0.0])
    z = F.log_softmax(ml.tensor([1000.0, 0.0]))
    assert np.all(np.isfinite(z.numpy()))


@pytest.mark.parametrize("offset", [0.0, 59.0, 75.0, 84.0, 88.0, -70.0, -95.0, -120.0])
def test_softmax_log_softmax_and_cross_entropy_match_float64_at_every_magnitude(offset):
    """Rows whose exps neither overflow nor underflow skip the max shift (see
    functional.exp_and_sum); rows whose exps (or their sums) overflow float32, and rows whose
    exps underflow, take the shifted path. All must give float64's answer."""
    rng = np.random.default_rng(0)
    logits = rng.standard_normal((6, 50)) * 3 + offset
    logits[1] += 200.0  # one row far above: the whole array takes the shifted path
    logits[2, :] = logits[2, :] - 400.0 if offset < 0 else logits[2, :]
    shifted = logits - logits.max(axis=-1, keepdims=True)
    expected_log = shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True))
    for rows in (logits, np.delete(logits, 1, axis=0)):  # with and without the large row
        reference = expected_log if rows is logits else np.delete(expected_log, 1, axis=0)
        x = ml.tensor(rows.astype(np.float32))
        np.testing.assert_allclose(F.log_softmax(x).numpy(), reference, rtol=1e-5, atol=1e-4)
        np.testing.assert_allclose(F.softmax(x).numpy(), np.exp(reference), rtol=1e-4, atol=1e-7)
        targets = np.arange(len(rows)) % 50
        loss = F.cross_entropy(x, targets, label_smoothing=0.1).item()
        expected = -(0.9 * reference[np.arange(len(rows)), targets] + 0.1 * reference.mean(axis=-1)).mean()
        np.testing.assert_allclose(loss, expected, rtol=1e-5)


def test_dropout_keeps_the_expectation_and_is_identity_in_eval():
    x = ml.ones(200, 200)
    y = F.dropout(x, 0.25, training=True)
    kept = (y.numpy() != 0).mean()
    assert abs(kept - 0.75) < 0.01
    np.testing.assert_allclose(y.numpy()[y.numpy() != 0], 1 / 0.75, rtol=1e-6)
    assert F.dropout(x, 0.25, training=False) is x


def test_attention_with_dropout_and_returned_weights():
    rng = np.random.default_rng(0)
    q, k, v = (leaf(rng.standard_normal((2, 2, 3, 4))) for _ in range(3))

    def attend(q, k, v):
        ml.manual_seed(5)  # the same dropout mask on every call
        out, weights = F.scaled_dot_product_attention(q, k, v, is_causal=True, dropout_p=0.25, return_weights=True)
        return out.sum(axis=-1) + weights.sum(axis=-1) * 0.5

    gradcheck(attend, [q, k, v])
    gradgradcheck(attend, [q, k, v])


def test_layer_norm_without_bias_or_affine_parameters():
    rng = np.random.default_rng(0)
    x, w = leaf(rng.standard_normal((3, 5))), leaf(rng.standard_normal(5))
    gradcheck(lambda x: F.layer_norm(x), [x])
    gradcheck(lambda x, w: F.layer_norm(x, w), [x, w])
    gradgradcheck(lambda x, w: F.layer_norm(x, w), [x, w])


@pytest.mark.parametrize("dtype", [np.float32, np.float16, np.float64])
def test_split_and_merge_heads_move_rows_exactly_from_any_layout(dtype):
    """Heads are copied row by row as opaque blocks (functional._copy_rows) where the last axis
    is contiguous, element by element otherwise: both give exactly the transposed values."""
    rng = np.random.default_rng(0)
    x = rng.standard_normal((3, 5, 2 * 4 * 6)).astype(dtype)  # [B, T, parts * H * D]
    q, k = F.split_heads(ml.Tensor(x), num_heads=4, parts=2)
    expected = x.reshape(3, 5, 2, 4, 6).transpose(2, 0, 3, 1, 4)
    np.testing.assert_array_equal(q.numpy(), expected[0])
    np.testing.assert_array_equal(k.numpy(), expected[1])
    assert q.numpy().flags.c_contiguous
    strided = rng.standard_normal((3, 4, 5, 12)).astype(dtype)[..., ::2]  # last axis not contiguous
    for heads in (q.numpy(), strided):
        merged = F.merge_heads(ml.Tensor(heads)).numpy()
        np.testing.assert_array_equal(merged, heads.transpose(0, 2, 1, 3).reshape(3, heads.shape[2], -1))
    # backward's direction: a part of the [B, T, parts, H, D] gradient, a strided destination
    upstream = rng.standard_normal((2, 3, 4, 5, 6)).astype(dtype)  # [parts, B, H, T, D]
    leaf = ml.Tensor(x, requires_grad=True)
    first, second = F.split_heads(leaf, num_heads=4, parts=2)
    ((first * ml.Tensor(upstream[0])).sum() + (second * ml.Tensor(upstream[1])).sum()).backward()
    np.testing.assert_array_equal(leaf.grad.numpy(), upstream.transpose(1, 3, 0, 2, 4).reshape(x.shape))
