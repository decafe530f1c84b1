"""minilm.special.erf against Python's math.erf (glibc's, within an ulp of the exact value)."""

import math

import numpy as np
import pytest

from minilm import special

from .helpers import oracle

_reference = np.frompyfunc(math.erf, 1, 1)


def _grid() -> np.ndarray:
    """A dense grid over every piece and its edges, tiny and huge magnitudes, both signs."""
    pieces = special._FLOAT64 + special._FLOAT32
    edges = sorted({p.low for p in pieces} | {p.high for p in pieces})
    near_edges = np.concatenate([np.nextafter(e, [-np.inf, np.inf]) for e in edges] + [np.array(edges)])
    x = np.concatenate([np.linspace(0, 7, 200_001), np.geomspace(1e-300, 30, 20_000), near_edges,
                        [0.0, 5e-324, 1e-20, 1e300, np.inf]])
    return np.concatenate([x, -x])


def test_float64_erf_is_within_two_ulps_of_math_erf():
    x = _grid()
    expected = _reference(x).astype(np.float64)
    got = special.erf(x)
    assert got.dtype == np.float64 and got.shape == x.shape
    relative = np.abs(got - expected) / np.maximum(np.abs(expected), np.finfo(np.float64).tiny)
    assert relative.max() <= 2 * np.finfo(np.float64).eps
    assert np.array_equal(np.signbit(got), np.signbit(x))  # odd, -0.0 included


def test_float32_erf_is_within_float32_epsilon():
    x = np.clip(_grid(), -3e38, 3e38).astype(np.float32)
    x = x[np.abs(x) > np.finfo(np.float32).tiny]  # math.erf's float64 result of a float32 subnormal
    expected = _reference(x.astype(np.float64)).astype(np.float64)
    got = special.erf(x)
    assert got.dtype == np.float32
    relative = np.abs(got.astype(np.float64) - expected) / np.abs(expected)
    assert relative.max() < np.finfo(np.float32).eps
    assert special.erf(np.array([0.5, -2.0], np.float16)).dtype == np.float16


def test_erf_keeps_shape_nan_and_refuses_integers():
    x = np.array([[np.nan, 0.3], [-np.inf, 2.5]])
    got = special.erf(x)
    assert np.isnan(got[0, 0]) and got[1, 0] == -1.0 and got.shape == (2, 2)
    np.testing.assert_allclose(special.erf(x[:, 1]), [math.erf(0.3), math.erf(2.5)], rtol=3e-16)  # strided view
    with pytest.raises(TypeError, match="dtype int64"):
        special.erf(np.arange(3))


@pytest.mark.parametrize("table", ["_FLOAT64", "_FLOAT32"])
def test_stored_coefficients_are_the_documented_fit(table):
    oracle("mpmath", reason="mpmath refits the tables in 50-digit arithmetic")
    for piece in getattr(special, table):
        refit = special.fit_piece(piece.kind, piece.low, piece.high, len(piece.coefficients) - 1)
        np.testing.assert_allclose(refit.coefficients, piece.coefficients, rtol=1e-14, atol=0)
        assert refit.centre == piece.centre
