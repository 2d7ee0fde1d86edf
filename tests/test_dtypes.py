"""Dtypes in = dtypes out (docs/conventions.md, "Dtypes").

float16 and bfloat16 input -- NumPy float16, PyTorch float16/bfloat16, JAX float16/bfloat16
(the ml_dtypes types) -- is computed in float32 and the result is rounded back, once, to the
caller's dtype. The oracle for every registered rule, pre-aggregator and attack is the same call
on the float32 values of the input, rounded to the input's dtype by an independent reference:
Python's ``struct`` half-precision packing for float16 and the round-to-nearest-even bit formula
for bfloat16 (neither is the library's, PyTorch's nor ml_dtypes' cast).
"""

from __future__ import annotations

import struct

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import robustagg
from robustagg._registry import call_with_supported

torch = pytest.importorskip("torch")
jax = pytest.importorskip("jax")
import jax.numpy as jnp  # noqa: E402

N, D, F = 9, 16, 1  # n >= 4f + 3 (Bulyan), small enough for the exact subset searches

KINDS = ["numpy-float16", "torch-float16", "torch-bfloat16", "jax-float16", "jax-bfloat16"]


# ------------------------------------------------------------------------------------------------
# independent rounding references


def _round_f16(x32: np.ndarray) -> np.ndarray:
    """float32 -> float16, round to nearest even, element by element through ``struct``; given
    back as float32 (every float16 is a float32)."""
    flat = [struct.unpack("<e", struct.pack("<e", float(v)))[0] for v in np.ravel(x32)]
    return np.array(flat, dtype=np.float32).reshape(np.shape(x32))


def _round_bf16(x32: np.ndarray) -> np.ndarray:
    """float32 -> bfloat16, round to nearest even on the bits; given back as float32."""
    bits = np.ascontiguousarray(x32, dtype=np.float32).view(np.uint32).astype(np.uint64)
    half = (bits + 0x7FFF + ((bits >> 16) & 1)) >> 16
    nan = np.isnan(x32)
    out = (half.astype(np.uint32) << 16).view(np.float32)
    return np.where(nan, np.float32(np.nan), out)


def _rounded(kind: str, x32: np.ndarray) -> np.ndarray:
    return _round_bf16(x32) if kind.endswith("bfloat16") else _round_f16(x32)


# ------------------------------------------------------------------------------------------------
# inputs and outputs of each kind


def _make(kind: str, G: np.ndarray):
    """``G`` (float32 values) in ``kind``: the array and its values as a float32 NumPy array."""
    lib, dtype = kind.split("-")
    G32 = _rounded(kind, G.astype(np.float32))  # the values the input can hold
    if lib == "numpy":
        return G32.astype(np.float16), G32
    if lib == "torch":
        X = torch.from_numpy(G32).to(getattr(torch, dtype))
        assert np.array_equal(X.to(torch.float32).numpy(), G32)
        return X, G32
    X = jnp.asarray(G32, dtype=getattr(jnp, dtype))
    assert np.array_equal(np.asarray(X.astype(jnp.float32)), G32)
    return X, G32


def _as_float32(kind: str, out) -> np.ndarray:
    """An output of ``kind``, checked to be of that library and dtype, as float32 values."""
    lib, dtype = kind.split("-")
    if lib == "numpy":
        assert isinstance(out, np.ndarray) and out.dtype == np.float16, (
            type(out),
            getattr(out, "dtype", None),
        )
        return out.astype(np.float32)
    if lib == "torch":
        assert isinstance(out, torch.Tensor) and out.dtype == getattr(torch, dtype), (type(out), out.dtype)
        return out.to(torch.float32).numpy()
    assert isinstance(out, jax.Array) and out.dtype == getattr(jnp, dtype), (type(out), out.dtype)
    return np.asarray(out.astype(jnp.float32))


def _grads() -> np.ndarray:
    rng = np.random.default_rng(7)
    G = rng.normal(0.2, 1.0, size=(N, D))
    G[0] = -3.0 * G[0]  # one Byzantine-looking row
    return G


def _root(G32: np.ndarray) -> np.ndarray:
    return G32[F:].mean(axis=0)


def _first(out):
    return out[0] if isinstance(out, tuple) else out


# ------------------------------------------------------------------------------------------------
# every rule, pre-aggregator and attack


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("name", sorted(robustagg.RULES))
def test_rule_returns_the_input_dtype_rounded_once(name, kind):
    fn = robustagg.RULES[name]
    X, G32 = _make(kind, _grads())
    kwargs = dict(f=F, rng=0, root_gradient=_root(G32))  # each rule gets those it takes
    expected = _rounded(kind, np.asarray(call_with_supported(fn, G32, **kwargs)))
    out = call_with_supported(fn, X, **kwargs)
    got = _as_float32(kind, out)
    assert got.shape == (D,)
    np.testing.assert_array_equal(got, expected)


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("name", sorted(robustagg.PREAGGREGATORS))
def test_preaggregator_returns_the_input_dtype_rounded_once(name, kind):
    fn = robustagg.PREAGGREGATORS[name]
    X, G32 = _make(kind, _grads())
    expected = _rounded(kind, np.asarray(call_with_supported(fn, G32, f=F, rng=0)))
    got = _as_float32(kind, call_with_supported(fn, X, f=F, rng=0))
    assert got.shape == expected.shape and got.shape[1] == D
    np.testing.assert_array_equal(got, expected)


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("name", sorted(robustagg.ATTACKS))
def test_attack_returns_the_input_dtype_rounded_once(name, kind):
    fn = robustagg.ATTACKS[name]
    X, G32 = _make(kind, _grads())
    f = 2
    kwargs = dict(rng=0, rule="trimmed_mean")  # the rule: for the line search only
    expected = _rounded(kind, np.asarray(_first(call_with_supported(fn, G32, f, **kwargs))))
    got = _as_float32(kind, _first(call_with_supported(fn, X, f, **kwargs)))
    assert got.shape == (N, D)
    np.testing.assert_array_equal(got, expected)  # NaN where the attack writes NaN
    np.testing.assert_array_equal(got[f:], G32[f:])  # the honest rows as they were


# ------------------------------------------------------------------------------------------------
# the conversion layer's other paths


@pytest.mark.parametrize("kind", ["numpy-float16", "torch-float16", "torch-bfloat16", "jax-bfloat16"])
def test_a_sequence_of_rows_of_one_dtype_comes_back_in_it(kind):
    X, G32 = _make(kind, _grads())
    rows = [X[i] for i in range(N)]
    got = _as_float32(kind, robustagg.median(rows))
    np.testing.assert_array_equal(got, _rounded(kind, np.median(G32, axis=0)))


def test_a_sequence_of_mixed_dtypes_gives_the_compute_dtype():
    G = _grads()
    rows = [G[0].astype(np.float16)] + [r.astype(np.float32) for r in G[1:]]
    out = robustagg.mean(rows)
    assert out.dtype == np.float32


def test_longdouble_and_integer_input():
    G = _grads()
    out = robustagg.mean(G.astype(np.longdouble))
    assert out.dtype == np.longdouble
    np.testing.assert_array_equal(out, robustagg.mean(G).astype(np.longdouble))
    assert robustagg.mean(np.arange(12, dtype=np.int32).reshape(3, 4)).dtype == np.float64
    t = torch.arange(12, dtype=torch.int64).reshape(3, 4)
    assert robustagg.mean(t).dtype == torch.float64


def test_torch_bfloat16_requires_grad_and_the_caller_tensor_untouched():
    X, G32 = _make("torch-bfloat16", _grads())
    X = X.clone().requires_grad_(True)
    before = X.detach().clone()
    out, info = robustagg.krum(X, f=F, return_info=True)
    assert out.dtype == torch.bfloat16 and not out.requires_grad
    assert torch.equal(X.detach(), before)
    np.testing.assert_array_equal(out.to(torch.float32).numpy(), G32[int(np.flatnonzero(info.kept)[0])])


def test_torch_bfloat16_bad_input_is_the_librarys_error():
    with pytest.raises(ValueError, match=r"^mean: argument 'grads' must be a \(n, d\) matrix"):
        robustagg.mean(torch.ones(4, dtype=torch.bfloat16))
    with pytest.raises(TypeError, match=r"^mean: argument 'grads' must hold real floating-point"):
        robustagg.mean(torch.ones((3, 2), dtype=torch.complex64))


@given(
    hnp.arrays(
        np.float32,
        st.tuples(st.integers(1, 6), st.integers(1, 5)),
        elements=st.floats(-1e4, 1e4, width=32, allow_subnormal=False),
    )
)
def test_torch_bfloat16_mean_is_the_float32_mean_rounded_once(G):
    X, G32 = _make("torch-bfloat16", G)
    got = _as_float32("torch-bfloat16", robustagg.mean(X))
    np.testing.assert_array_equal(got, _round_bf16(robustagg.mean(G32)))


@given(
    hnp.arrays(
        np.float16,
        st.tuples(st.integers(1, 6), st.integers(1, 5)),
        elements=st.floats(-1e3, 1e3, width=16),
    )
)
def test_numpy_float16_median_is_the_float32_median_rounded_once(G):
    out = robustagg.median(G)
    assert out.dtype == np.float16
    np.testing.assert_array_equal(out.astype(np.float32), _round_f16(np.median(G.astype(np.float32), axis=0)))


# ------------------------------------------------------------------------------------------------
# results beyond the caller's dtype


@pytest.mark.parametrize("kind", ["numpy-float16", "torch-float16", "jax-float16"])
def test_a_result_beyond_the_dtypes_range_is_the_rules_error(kind):
    """A finite float32 result that rounds to Inf in float16 is a ValueError naming the rule and
    the dtype (no NumPy overflow warning); rows the attack makes non-finite on purpose stay."""
    import warnings

    X, G32 = _make(kind, _grads())
    message = (
        r"^reverse_scaled: the result does not fit in float16, the input's dtype: \d+ finite value\(s\), "
        r"up to [0-9.e+]+ in magnitude, exceed its largest finite value 65504; the computation ran in float32"
    )
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a NumPy RuntimeWarning would be an error here
        with pytest.raises(ValueError, match=message):
            robustagg.attacks.reverse_scaled(X, 2, r=1e5)
        with pytest.raises(ValueError, match=r"^fltrust: the result does not fit in float16"):
            robustagg.fltrust(X, np.full(D, 1e5, dtype=np.float32))
        out = _as_float32(kind, robustagg.attacks.inf(X, 2))
    assert np.isinf(out[:2]).all() and np.array_equal(out[2:], G32[2:])


def test_ml_dtypes_float8_round_trip_and_range():
    ml_dtypes = pytest.importorskip("ml_dtypes")
    f8 = ml_dtypes.float8_e4m3fn  # no infinities: an overflow would be NaN
    X = _grads().astype(f8)
    G32 = X.astype(np.float32)
    out = robustagg.median(X)
    assert out.dtype == f8
    np.testing.assert_array_equal(
        out.astype(np.float32), np.median(G32, axis=0).astype(f8).astype(np.float32)
    )
    with pytest.raises(ValueError, match=r"^reverse_scaled: the result does not fit in float8_e4m3fn.* 448;"):
        robustagg.attacks.reverse_scaled(X, 2, r=1e4)


def test_the_context_tells_the_largest_value_a_result_can_hold():
    from robustagg._array import to_numpy

    ml_dtypes = pytest.importorskip("ml_dtypes")
    f16, bf16 = 2.0**15 * (2 - 2**-10), 2.0**127 * (2 - 2**-7)  # the largest finite of each format
    cases = [
        (np.ones((2, 3), dtype=np.float16), f16),
        (torch.ones((2, 3), dtype=torch.float16), f16),
        (torch.ones((2, 3), dtype=torch.bfloat16), bf16),
        (jnp.ones((2, 3), dtype=jnp.bfloat16), bf16),
        (np.ones((2, 3), dtype=ml_dtypes.float8_e4m3fn), 2.0**8 * 1.75),  # e4m3fn: S.1111.110
        (np.ones((2, 3), dtype=np.float32), None),
        (torch.ones((2, 3), dtype=torch.float64), None),
        (np.ones((2, 3), dtype=np.int16), None),
    ]
    for x, largest in cases:
        _, ctx = to_numpy(x, rule="r")
        assert ctx.largest_finite == largest, (x.dtype, ctx.largest_finite)
