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


# ---------------------------------------------------------------------------------------
# normal_cdf: Phi(x) in float32 (the exact GELU's hot path)
# ---------------------------------------------------------------------------------------
_phi_reference = np.frompyfunc(lambda v: 0.5 * math.erfc(-v / math.sqrt(2.0)), 1, 1)
_EPS32 = float(np.finfo(np.float32).eps)


def _phi_grid() -> np.ndarray:
    x = np.concatenate([np.linspace(-13, 13, 400_001), np.geomspace(1e-30, 13, 20_000)])
    return np.unique(np.concatenate([x, -x]).astype(np.float32))


@pytest.mark.parametrize(("low", "high", "bound"), [
    (-0.5, 0.5, 5), (-4.0, 13.0, 8), (-8.0, -4.0, 25), (-13.0, -8.0, 100),
])
def test_float32_normal_cdf_is_relatively_accurate_in_each_range(low, high, bound):
    # Relative error in float32 epsilons; the bound grows in the left tail with x^2 (the
    # rounding of exp's argument), where 0.5 (1 + erf) would have lost every digit.
    x = _phi_grid()
    x = x[(x >= low) & (x < high)]
    expected = _phi_reference(x.astype(np.float64)).astype(np.float64)
    got = special.normal_cdf(x)
    assert got.dtype == np.float32 and got.shape == x.shape
    normal = expected > np.finfo(np.float32).tiny  # float32 subnormals hold few digits
    relative = np.abs(got[normal] - expected[normal]) / expected[normal]
    assert relative.max() <= bound * _EPS32


def test_normal_cdf_left_tail_keeps_digits_where_one_plus_erf_cancels():
    x = np.array([-6.0, -8.0, -10.0], np.float32)
    textbook = 0.5 * (1 + special.erf(x / np.float32(math.sqrt(2))))
    assert np.all(textbook == 0)  # float32 1 + erf has cancelled to nothing
    np.testing.assert_allclose(special.normal_cdf(x), _phi_reference(x.astype(np.float64)).astype(float), rtol=1e-5)


def test_normal_cdf_times_x_is_the_exact_gelu_and_float64_is_the_textbook_form():
    x = np.linspace(-6, 6, 10_100, dtype=np.float32).reshape(100, 101)[:, ::2]  # a strided view
    cdf, y = special.normal_cdf(x, times_x=True)
    assert cdf.shape == y.shape == x.shape
    np.testing.assert_array_equal(cdf, special.normal_cdf(x))
    np.testing.assert_array_equal(y, x * cdf)
    x64 = x.astype(np.float64)
    np.testing.assert_array_equal(special.normal_cdf(x64), (1 + special.erf(x64 * (1 / math.sqrt(2.0)))) * 0.5)
    np.testing.assert_array_equal(special.gelu(x), y)  # the same bits without keeping Phi
    import minilm as ml
    from minilm import functional as F
    with ml.no_grad():
        np.testing.assert_array_equal(F.gelu(ml.Tensor(x)).numpy(), y)
    np.testing.assert_array_equal(F.gelu(ml.Tensor(x, requires_grad=True)).numpy(), y)
    half = special.normal_cdf(x.astype(np.float16))
    assert half.dtype == np.float16
    np.testing.assert_allclose(half, cdf, atol=1e-3)


def test_normal_cdf_at_infinities_and_nan():
    got = special.normal_cdf(np.array([-np.inf, np.inf, np.nan, 0.0, -0.0], np.float32))
    assert got[0] == 0.0 and got[1] == 1.0 and np.isnan(got[2])
    assert abs(got[3] - 0.5) <= 2 * _EPS32 and got[3] == got[4]
    with pytest.raises(TypeError, match="dtype int64"):
        special.normal_cdf(np.arange(3))


def test_gelu_grad_in_float32_matches_the_float64_formula():
    rng = np.random.default_rng(0)
    x = (rng.standard_normal((300, 700)) * 3).astype(np.float32)
    gy = rng.standard_normal(x.shape).astype(np.float32)
    cdf = special.normal_cdf(x)
    got = special.gelu_grad(x, cdf, gy)
    x64 = x.astype(np.float64)
    expected = gy * (_phi_reference(x64).astype(np.float64) + x64 * np.exp(-0.5 * x64**2) / math.sqrt(2 * math.pi))
    assert got.dtype == np.float32
    np.testing.assert_allclose(got, expected, rtol=2e-6, atol=2e-7)
    np.testing.assert_array_equal(special.gelu_grad(x[:, ::3], cdf[:, ::3], gy[:, ::3]), got[:, ::3])


def test_stored_erfc_exponent_is_the_documented_fit():
    oracle("mpmath", reason="mpmath refits the coefficients in 50-digit arithmetic")
    refit = special.fit_erfc_exponent(len(special._ERFC_EXPONENT) - 1)
    np.testing.assert_allclose(refit, special._ERFC_EXPONENT, rtol=1e-14, atol=0)
