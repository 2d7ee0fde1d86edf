"""The coordinate-wise selection kernels' network paths (int32 sort keys for float32, pruned
Batcher networks over 128-column blocks, lane-parallel closest-to-median window) against slow
obviously-correct references: exact results, ties, duplicates, signed zeros, huge values,
column counts that are not a multiple of the block, odd and even row counts, k = 0."""

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from robustagg.kernels import _column_ranks as K
from robustagg.kernels._select import network


@st.composite
def columns(draw, m_max=60):
    """(G, rows, m): a float32/float64 matrix whose columns mix ties, duplicates, signed zeros
    and values of very different magnitudes, and a random subset of m of its rows."""
    n = draw(st.integers(1, m_max))
    d = draw(st.sampled_from([1, 7, 127, 128, 129, 300]))
    dtype = draw(st.sampled_from([np.float32, np.float64]))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    kind = draw(st.sampled_from(["normal", "ints", "dups", "wild", "sorted"]))
    if kind == "ints":
        G = rng.integers(-3, 4, size=(n, d)).astype(np.float64)
    elif kind == "wild":  # magnitudes from 1e-30 to 1e30, both signs, some exact zeros of both signs
        G = rng.normal(size=(n, d)) * 10.0 ** rng.integers(-30, 31, size=(n, d))
        G[rng.random((n, d)) < 0.1] = 0.0
        G[rng.random((n, d)) < 0.1] = -0.0
    else:
        G = rng.normal(size=(n, d))
        if kind == "dups" and n > 1:
            G[rng.integers(0, n, size=n // 2)] = G[0]
        if kind == "sorted":
            G = np.sort(G, axis=0)[:: draw(st.sampled_from([1, -1]))]
    G = G.astype(dtype)
    m = draw(st.integers(1, n))
    rows = np.sort(rng.choice(n, size=m, replace=False)).astype(np.int64)
    return G, rows, m


def _rank_sum_mean(X, lo, hi):
    """Per column, the values of ranks lo..hi summed one by one in rank order in float64,
    divided by their count, as X.dtype (the kernels' exact convention)."""
    S = np.sort(X, axis=0).astype(np.float64)
    acc = np.zeros(X.shape[1])
    for t in range(lo, hi + 1):
        acc = acc + S[t]
    return (acc / (hi - lo + 1)).astype(X.dtype)


@given(columns())
def test_trimmed_mean_and_median_exact(case):
    G, rows, m = case
    X = G[rows]
    for k in sorted({0, 1, 2, m // 4, (m - 1) // 2}):
        if m <= 2 * k:
            continue
        out = K.column_trimmed_mean(G, rows, k)
        assert out.dtype == G.dtype
        if k == 0:  # the mean kernel (row order); compare with tolerance
            ref = X.astype(np.float64).mean(axis=0)
            np.testing.assert_allclose(
                out, ref.astype(G.dtype), rtol=1e-6, atol=1e-6 * np.abs(X).max(initial=0)
            )
        else:
            np.testing.assert_array_equal(out, _rank_sum_mean(X, k, m - k - 1))
    med = K.column_median(G, rows)
    assert med.dtype == G.dtype
    np.testing.assert_array_equal(med, np.median(X, axis=0))
    np.testing.assert_array_equal(med, _rank_sum_mean(X, (m - 1) // 2, m // 2))


@given(columns(), st.integers(0, 2**32 - 1))
def test_bit_identical_under_row_permutation(case, seed):
    G, rows, m = case
    perm = np.random.default_rng(seed).permutation(m)
    k = (m - 1) // 3
    if k > 0:
        np.testing.assert_array_equal(
            K.column_trimmed_mean(G, rows[perm], k), K.column_trimmed_mean(G, rows, k)
        )
    np.testing.assert_array_equal(K.column_median(G, rows[perm]), K.column_median(G, rows))
    beta = max(1, m - 2 * ((m - 1) // 4))
    np.testing.assert_array_equal(
        K.column_closest_to_median_mean(G, rows[perm], beta), K.column_closest_to_median_mean(G, rows, beta)
    )


def _naive_closest(X, beta):
    out = np.empty(X.shape[1])
    for j in range(X.shape[1]):
        v = np.sort(X[:, j]).astype(np.float64)
        med = np.median(v)
        chosen = sorted(v, key=lambda x: (abs(x - med), x))[:beta]
        out[j] = np.mean(chosen)
    return out


@pytest.mark.slow
@given(columns(m_max=40), st.data())
def test_closest_to_median_network_equals_walk_and_naive(case, data):
    G, rows, m = case
    G = G[:, :130]
    beta = data.draw(st.integers(1, m))
    out = K.column_closest_to_median_mean(G, rows, beta)
    assert out.dtype == G.dtype
    # the lane-parallel window of the network path is exactly the walk of the per-column sort
    np.testing.assert_array_equal(out, K._closest_to_median_sort(G, rows, beta))
    X = G[rows]
    tol = 1e-6 if G.dtype == np.float32 else 1e-12
    np.testing.assert_allclose(out, _naive_closest(X, beta), rtol=tol, atol=tol * np.abs(X).max(initial=0))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_sort_keys_order_every_float_class(dtype):
    """The int32 keys order float32 values like the floats (±0, subnormals, ±Inf, extremes);
    float64 runs the network on the values themselves."""
    fi = np.finfo(dtype)
    vals = np.array(
        [
            -np.inf,
            -fi.max,
            -1.0,
            -fi.tiny,
            -fi.smallest_subnormal,
            -0.0,
            0.0,
            fi.smallest_subnormal,
            fi.tiny,
            1.0,
            fi.max,
            np.inf,
        ],
        dtype=dtype,
    )
    rng = np.random.default_rng(0)
    G = np.stack([rng.permutation(vals) for _ in range(200)], axis=1)  # (12, 200)
    rows = np.arange(vals.size, dtype=np.int64)
    pa, pb = network(vals.size, 0, vals.size - 1)
    for r in range(vals.size):  # rank r of every column, through the network and back
        out, all_finite = K._ranks_mean_network(G, rows, pa, pb, r, r, 4)
        assert not all_finite  # ±Inf rows are reported
        np.testing.assert_array_equal(
            out, np.full(200, vals[r])
        )  # (the float64 sum from +0.0 turns -0.0 into +0.0)


def test_large_blocks_and_thread_chunks():
    """Many blocks, a ragged last block and more chunks than blocks or fewer: same result."""
    rng = np.random.default_rng(7)
    G = rng.normal(size=(23, 1000)).astype(np.float32)
    rows = np.arange(1, 23, dtype=np.int64)  # m = 22
    pa, pb = network(22, 5, 16)
    ref = _rank_sum_mean(G[rows], 5, 16)
    for chunks in (1, 3, 8, 100):
        out, all_finite = K._ranks_mean_network(G, rows, pa, pb, 5, 16, chunks)
        assert all_finite
        np.testing.assert_array_equal(out, ref)
