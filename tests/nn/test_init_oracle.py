"""nn.init against torch.nn.init: the same distribution (mean, spread, bounds, shape), within
the sampling error of two independent draws of the same size."""

import math

import numpy as np
import pytest

import minilm as ml
from minilm import nn
from minilm.nn import init

from ..helpers import oracle

torch = oracle("torch", reason="torch.nn.init is the reference for initialiser distributions")

LINEAR = (400, 200)  # [out, in]: fan_in 200, fan_out 400
CONV = (64, 16, 3, 3)  # [out, in, kh, kw]: fan_in 144, fan_out 576 (the kernel counts)

# (name, minilm fill, torch fill, shape, bounded): each pair is called with the same arguments.
CASES = [
    ("uniform(-2,3)", lambda t: init.uniform_(t, -2.0, 3.0), lambda t: torch.nn.init.uniform_(t, -2.0, 3.0),
     LINEAR, True),
    ("normal(1,0.5)", lambda t: init.normal_(t, 1.0, 0.5), lambda t: torch.nn.init.normal_(t, 1.0, 0.5),
     LINEAR, False),
    ("xavier_uniform", init.xavier_uniform_, torch.nn.init.xavier_uniform_, LINEAR, True),
    ("xavier_uniform-tanh-gain-conv", lambda t: init.xavier_uniform_(t, gain=5 / 3),
     lambda t: torch.nn.init.xavier_uniform_(t, gain=5 / 3), CONV, True),
    ("xavier_normal-gain-2", lambda t: init.xavier_normal_(t, gain=2.0),
     lambda t: torch.nn.init.xavier_normal_(t, gain=2.0), LINEAR, False),
    ("kaiming_uniform-default", init.kaiming_uniform_, torch.nn.init.kaiming_uniform_, LINEAR, True),
    ("kaiming_uniform-a=sqrt5-Linear", lambda t: init.kaiming_uniform_(t, a=math.sqrt(5)),
     lambda t: torch.nn.init.kaiming_uniform_(t, a=math.sqrt(5)), LINEAR, True),
    ("kaiming_uniform-fan_out-relu-conv", lambda t: init.kaiming_uniform_(t, mode="fan_out", nonlinearity="relu"),
     lambda t: torch.nn.init.kaiming_uniform_(t, mode="fan_out", nonlinearity="relu"), CONV, True),
    ("kaiming_normal-relu", lambda t: init.kaiming_normal_(t, nonlinearity="relu"),
     lambda t: torch.nn.init.kaiming_normal_(t, nonlinearity="relu"), LINEAR, False),
    ("kaiming_normal-fan_out-leaky-0.2-conv", lambda t: init.kaiming_normal_(t, a=0.2, mode="fan_out"),
     lambda t: torch.nn.init.kaiming_normal_(t, a=0.2, mode="fan_out"), CONV, False),
]

QUANTILES = [0.01, 0.1, 0.25, 0.5, 0.75, 0.9, 0.99]


@pytest.mark.parametrize("name, ours, theirs, shape, bounded", CASES, ids=[c[0] for c in CASES])
def test_initialiser_matches_torch_within_sampling_error(name, ours, theirs, shape, bounded):
    ml.manual_seed(0)
    torch.manual_seed(0)
    got = ours(nn.Parameter(ml.zeros(*shape, dtype=ml.float64))).numpy().ravel()
    expected = theirs(torch.empty(shape, dtype=torch.float64)).numpy().ravel()
    n, sigma = got.size, expected.std()
    assert sigma > 0
    # Two independent samples of n draws: their means differ by ~sqrt(2/n) sigma and their
    # stds and central quantiles by about as much (about 2x that in the 1% and 99% tails);
    # allow about 5 standard errors. A std off by 10% or more is far outside this.
    se = sigma * math.sqrt(2.0 / n)
    assert abs(got.mean() - expected.mean()) < 5 * se, (got.mean(), expected.mean())
    assert abs(got.std() - expected.std()) < 5 * se, (got.std(), expected.std())
    np.testing.assert_allclose(np.quantile(got, QUANTILES), np.quantile(expected, QUANTILES), rtol=0, atol=12 * se)
    if bounded:
        # both samples reach to within a few n-ths of the width of the same bounds
        width = expected.max() - expected.min()
        assert abs(got.min() - expected.min()) < 20 * width / n and abs(got.max() - expected.max()) < 20 * width / n
