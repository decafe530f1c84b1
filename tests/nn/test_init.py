"""nn.init: distributions with the right scale, reproducible under ml.manual_seed, and
usable on parameters (in place, without tripping the autograd's in-place guard)."""

import math

import numpy as np
import pytest

import minilm as ml
from minilm import nn
from minilm.nn import init


def big(*shape):
    return nn.Parameter(ml.zeros(*shape))


def test_seeding_is_reproducible():
    ml.manual_seed(3)
    a = nn.Linear(8, 8).weight.numpy()
    ml.manual_seed(3)
    b = nn.Linear(8, 8).weight.numpy()
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, nn.Linear(8, 8).weight.numpy())


def test_the_same_seed_gives_the_same_values_in_every_dtype():
    ml.manual_seed(5)
    a = init.normal_(nn.Parameter(ml.zeros(5, dtype=ml.float64))).numpy()
    ml.manual_seed(5)
    b = init.normal_(big(5)).numpy()
    np.testing.assert_allclose(a, b, rtol=1e-6)


@pytest.mark.parametrize("fill, check", [
    (lambda t: init.normal_(t, 1.0, 0.5), lambda v: (abs(v.mean() - 1.0) < 0.02, abs(v.std() - 0.5) < 0.01)),
    (lambda t: init.uniform_(t, -2.0, 3.0), lambda v: (v.min() >= -2.0, v.max() < 3.0, abs(v.mean() - 0.5) < 0.05)),
    (lambda t: init.xavier_uniform_(t), lambda v: (abs(v).max() <= math.sqrt(6 / 600),)),
    (lambda t: init.xavier_normal_(t, gain=2.0), lambda v: (abs(v.std() - 2 * math.sqrt(2 / 600)) < 0.003,)),
    (lambda t: init.kaiming_uniform_(t, nonlinearity="relu"), lambda v: (abs(v).max() <= math.sqrt(6 / 200),)),
    (lambda t: init.kaiming_normal_(t, mode="fan_out", nonlinearity="relu"),
     lambda v: (abs(v.std() - math.sqrt(2 / 400)) < 0.003,)),
    (init.zeros_, lambda v: (not v.any(),)),
    (init.ones_, lambda v: ((v == 1).all(),)),
    (lambda t: init.constant_(t, 0.25), lambda v: ((v == 0.25).all(),)),
])
def test_distributions(fill, check):
    p = big(400, 200)  # [out, in]: fan_in 200, fan_out 400
    version = p._version
    assert fill(p) is p
    assert all(check(p.numpy())), check
    assert p._version > version and p.requires_grad and p.dtype == np.float32


def test_gain_and_fan_errors():
    assert init.calculate_gain("tanh") == pytest.approx(5 / 3)
    assert init.calculate_gain("leaky_relu", 0.2) == pytest.approx(math.sqrt(2 / 1.04))
    with pytest.raises(ValueError, match="at least 2 dims"):
        init.xavier_uniform_(big(3))
    with pytest.raises(ValueError, match="unsupported nonlinearity"):
        init.calculate_gain("swish")
