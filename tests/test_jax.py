"""JAX arrays (CPU) in -> JAX arrays out, dtype kept, same values as NumPy input."""

from __future__ import annotations

import numpy as np
import pytest

jax = pytest.importorskip("jax")
import jax.numpy as jnp  # noqa: E402

import robustagg  # noqa: E402
from robustagg._registry import call_with_supported  # noqa: E402

RULES = [
    "mean",
    "median",
    "trimmed_mean",
    "krum",
    "multi_krum",
    "geometric_median",
    "bulyan",
    "dnc",
    "signguard",
    "meamed",
    "centered_clipping",
    "clipped_clustering",
    "monna",
    "mda",
]


def _grads(dtype):
    rng = np.random.default_rng(0)
    G = rng.normal(size=(15, 40))
    G[:2] = 20.0  # two Byzantine rows
    return G.astype(dtype)


@pytest.fixture(scope="module")
def x64():
    jax.config.update("jax_enable_x64", True)
    yield
    jax.config.update("jax_enable_x64", False)


@pytest.mark.slow
@pytest.mark.parametrize("rule", RULES)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_jax_in_jax_out_same_values(rule, dtype, x64):
    assert rule in robustagg.RULES, f"{rule} is not registered"
    fn = robustagg.get_rule(rule)
    G = _grads(dtype)
    x = jnp.asarray(G)
    assert x.dtype == dtype
    out = call_with_supported(fn, x, f=2, rng=0)
    expected = call_with_supported(fn, G, f=2, rng=0)
    assert isinstance(out, jax.Array)
    assert out.dtype == dtype and out.shape == (G.shape[1],)
    assert out.devices() == x.devices()
    np.testing.assert_array_equal(np.asarray(out), expected)


@pytest.mark.parametrize("rule", ["mean", "median", "krum"])
def test_jax_return_info_and_sequence_input(rule):
    assert rule in robustagg.RULES, f"{rule} is not registered"
    fn = robustagg.get_rule(rule)
    G = _grads(np.float32)
    rows = [jnp.asarray(r) for r in G]
    out, info = call_with_supported(fn, rows, f=2, return_info=True)
    assert isinstance(out, jax.Array) and out.dtype == jnp.float32
    assert isinstance(info.kept, np.ndarray) and info.kept.shape == (G.shape[0],)
    np.testing.assert_array_equal(np.asarray(out), call_with_supported(fn, G, f=2))


def test_jax_input_not_mutated_and_nonfinite_rows_excluded():
    G = _grads(np.float32)
    G[3, 5] = np.nan
    x = jnp.asarray(G)
    before = np.array(x)
    out, info = robustagg.mean(x, return_info=True)
    np.testing.assert_array_equal(np.array(x), before)
    assert info.nonfinite[3] and not info.kept[3]
    np.testing.assert_allclose(
        np.asarray(out), np.delete(G, 3, axis=0).mean(axis=0, dtype=np.float64), rtol=1e-6
    )


@pytest.mark.parametrize("dtype", ["bfloat16", "float16"])
def test_jax_low_precision_computes_in_float32(dtype):
    """float16/bfloat16 in: computed in float32, returned in the input's dtype (rounded once)."""
    G = _grads(np.float32)
    x = jnp.asarray(G, dtype=dtype)
    out = robustagg.mean(x)
    assert isinstance(out, jax.Array) and out.dtype == x.dtype
    in32 = np.asarray(x.astype(jnp.float32))
    expected = np.asarray(jnp.asarray(robustagg.mean(in32)).astype(dtype))
    np.testing.assert_array_equal(np.asarray(out), expected)


def test_jax_integer_input_computes_in_float64(x64):
    x = jnp.arange(12, dtype=jnp.int32).reshape(3, 4)
    out = robustagg.mean(x)
    assert isinstance(out, jax.Array) and out.dtype == jnp.float64
    np.testing.assert_array_equal(np.asarray(out), [4.0, 5.0, 6.0, 7.0])


def test_jax_tracer_is_a_clear_error():
    with pytest.raises(TypeError, match="outside jax.jit"):
        jax.jit(robustagg.mean)(jnp.ones((3, 4)))
