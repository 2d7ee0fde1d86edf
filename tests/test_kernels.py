"""The shared kernels against float64 direct computations and SciPy."""

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from scipy.spatial.distance import cdist

from robustagg import kernels
from robustagg.testing.naive_rules import naive_median, naive_trimmed_mean


@st.composite
def matrices(draw, n_max=12, d_max=40, ties=True):
    """(G, rows): a float32/float64 matrix (Gaussian, far-from-origin, small-integer ties or
    duplicated rows) and a random subset of its rows."""
    n = draw(st.integers(1, n_max))
    d = draw(st.integers(1, d_max))
    dtype = draw(st.sampled_from([np.float32, np.float64]))
    seed = draw(st.integers(0, 2**32 - 1))
    kind = draw(st.sampled_from(["normal", "offset", "ints", "dups"] if ties else ["normal", "offset"]))
    rng = np.random.default_rng(seed)
    if kind == "ints":
        G = rng.integers(-3, 4, size=(n, d)).astype(dtype)
    else:
        G = rng.normal(size=(n, d))
        if kind == "offset":
            G = G * 1e-2 + rng.normal(size=d) * 1e3
        if kind == "dups" and n > 1:
            G[rng.integers(0, n, size=n // 2)] = G[0]
        G = G.astype(dtype)
    k = draw(st.integers(1, n))
    rows = np.sort(rng.choice(n, size=k, replace=False)).astype(np.int64)
    return G, rows


def _direct_sq(X):
    X = X.astype(np.float64)
    return ((X[:, None, :] - X[None, :, :]) ** 2).sum(axis=2)


@given(matrices())
def test_pairwise_sq_distances_match_direct_float64_and_scipy(case):
    G, rows = case
    D = kernels.pairwise_sq_distances(G, rows)
    X = G[rows].astype(np.float64)
    ref = _direct_sq(X)
    assert D.dtype == np.float64 and D.shape == (rows.size, rows.size)
    # documented accuracy: relative 1e-5 for float32 input (float32 block Gram), 1e-9 for float64
    rtol = 1e-5 if G.dtype == np.float32 else 1e-9
    np.testing.assert_allclose(D, ref, rtol=rtol, atol=0)
    np.testing.assert_allclose(D, cdist(X, X, "sqeuclidean"), rtol=rtol, atol=0)
    np.testing.assert_array_equal(D, D.T)
    np.testing.assert_array_equal(np.diag(D), 0.0)


def test_pairwise_no_cancellation_for_near_duplicates_far_from_origin():
    """float32 rows at |x| ~ 1e4 differing by ~1e-3 in a few coordinates: a naive
    ||x||^2 + ||y||^2 - 2<x, y> loses every digit; the kernel must not."""
    rng = np.random.default_rng(0)
    base = (1e4 + rng.normal(size=100_000)).astype(np.float32)
    G = np.tile(base, (6, 1))
    for i in range(1, 6):
        idx = rng.choice(G.shape[1], size=10 * i, replace=False)
        G[i, idx] += np.float32(2.0**-6) * i  # exactly representable shifts
    rows = np.arange(6, dtype=np.int64)
    D = kernels.pairwise_sq_distances(G, rows)
    ref = _direct_sq(G)
    np.testing.assert_allclose(D, ref, rtol=1e-5)  # float32 input: documented 1e-5
    X = G.astype(np.float32)
    sq = (X * X).sum(axis=1)
    naive = sq[:, None] + sq[None, :] - 2 * (X @ X.T)
    # the naive float32 Gram formula is far off: the test above is not vacuous
    assert np.max(np.abs(naive - ref)) > 100 * np.max(np.abs(D - ref)) + 1e-3


def test_pairwise_recomputes_only_flagged_pairs_correctly_with_rows_subset():
    rng = np.random.default_rng(1)
    G = rng.normal(size=(9, 5000)).astype(np.float32) + 500
    G[4] = G[2]
    G[6] = G[2] + np.float32(1e-3)
    rows = np.array([0, 2, 4, 6, 8], dtype=np.int64)
    D = kernels.pairwise_sq_distances(G, rows)
    np.testing.assert_allclose(D, _direct_sq(G[rows]), rtol=1e-5)
    assert D[1, 2] == 0.0  # an exact duplicate is flagged and recomputed exactly
    # the near-duplicate pair (rows 2 and 6) is recomputed exactly too
    np.testing.assert_allclose(D[1, 3], _direct_sq(G[[2, 6]])[0, 1], rtol=1e-14)
    G64 = G.astype(np.float64)
    np.testing.assert_allclose(kernels.pairwise_sq_distances(G64, rows), _direct_sq(G64[rows]), rtol=1e-9)


@given(matrices())
def test_row_norms_and_distances_to_a_point(case):
    G, rows = case
    X = G[rows].astype(np.float64)
    np.testing.assert_allclose(kernels.row_norms(G, rows), np.linalg.norm(X, axis=1), rtol=1e-12)
    np.testing.assert_allclose(kernels.row_sq_norms(G, rows), (X * X).sum(axis=1), rtol=1e-12)
    z = X.mean(axis=0) + 0.5
    np.testing.assert_allclose(
        kernels.row_sq_distances_to(G, rows, z), ((X - z) ** 2).sum(axis=1), rtol=1e-10, atol=1e-300
    )


def test_row_norms_long_rows_use_blocks():
    rng = np.random.default_rng(2)
    G = rng.normal(size=(3, 50_001)).astype(np.float32)
    rows = np.arange(3, dtype=np.int64)
    np.testing.assert_allclose(
        kernels.row_norms(G, rows), np.linalg.norm(G.astype(np.float64), axis=1), rtol=1e-12
    )


@given(matrices(), st.floats(0.0, 5.0))
def test_clipping_kernels(case, thr):
    G, rows = case
    X = G[rows].astype(np.float64)
    norms = np.linalg.norm(X, axis=1)
    scales = np.array([1.0 if nrm <= thr or nrm == 0 else thr / nrm for nrm in norms])
    np.testing.assert_allclose(kernels.clip_scales(norms, thr), scales, rtol=1e-12)
    clipped = kernels.clip_rows(G, rows, thr)
    assert clipped.dtype == G.dtype
    tol = 1e-6 if G.dtype == np.float32 else 1e-12
    np.testing.assert_allclose(clipped, X * scales[:, None], rtol=tol, atol=tol * max(thr, 1e-30))
    out = kernels.clipped_column_mean(G, rows, norms, thr)
    assert out.dtype == G.dtype
    np.testing.assert_allclose(
        out, (X * scales[:, None]).mean(axis=0), rtol=tol, atol=tol * max(1.0, float(np.abs(X).max()))
    )


@given(matrices(), st.integers(0, 2**32 - 1))
def test_weighted_column_sums(case, seed):
    G, rows = case
    X = G[rows].astype(np.float64)
    w = np.random.default_rng(seed).uniform(0, 2, size=rows.size)
    w[0] += 0.1
    np.testing.assert_allclose(
        kernels.weighted_column_sum(G, rows, w), w @ X, rtol=1e-10, atol=1e-10 * np.abs(X).max()
    )
    out = kernels.weighted_column_mean(G, rows, w)
    assert out.dtype == G.dtype
    tol = 1e-6 if G.dtype == np.float32 else 1e-12
    np.testing.assert_allclose(out, (w @ X) / w.sum(), rtol=tol, atol=tol * np.abs(X).max())


@given(matrices(n_max=40))
def test_selection_kernels_against_naive_and_numpy(case):
    G, rows = case
    X = G[rows]
    m = rows.size
    tol = 1e-6 if G.dtype == np.float32 else 1e-12
    med = kernels.column_median(G, rows)
    assert med.dtype == G.dtype
    np.testing.assert_allclose(med, naive_median(X), rtol=tol, atol=tol)
    np.testing.assert_allclose(med, np.median(X.astype(np.float64), axis=0), rtol=tol, atol=tol)
    for k in sorted({0, 1, (m - 1) // 2}):
        if m > 2 * k:
            out = kernels.column_trimmed_mean(G, rows, k)
            np.testing.assert_allclose(out, naive_trimmed_mean(X, k), rtol=tol, atol=tol * np.abs(X).max())


def test_selection_large_columns_and_extreme_values():
    """n > 16 exercises the partition loop; huge finite values and sorted/reversed columns."""
    rng = np.random.default_rng(3)
    for m in (17, 50, 101, 300):  # 300 rows: the quickselect path
        G = rng.normal(size=(m, 1500))
        G[: m // 4] = 1e300
        G[m // 4 : m // 3] = -1e300
        G[:, :500] = np.sort(G[:, :500], axis=0)
        G[:, 500:1000] = np.sort(G[:, 500:1000], axis=0)[::-1]
        G[:, 1000:1100] = 7.0  # all ties
        rows = np.arange(m, dtype=np.int64)
        np.testing.assert_array_equal(kernels.column_median(G, rows), np.median(G, axis=0))
        k = m // 3
        ref = np.sort(G, axis=0)[k : m - k].mean(axis=0)
        np.testing.assert_allclose(kernels.column_trimmed_mean(G, rows, k), ref, rtol=1e-12)


@pytest.mark.parametrize("beta_frac", [0.2, 0.5, 1.0])
def test_closest_to_median_mean_against_naive(beta_frac):
    rng = np.random.default_rng(4)
    for m in (1, 2, 5, 6, 33, 40):
        G = rng.integers(-4, 5, size=(m, 300)).astype(np.float64)  # many distance ties
        rows = np.arange(m, dtype=np.int64)
        beta = max(1, int(beta_frac * m))
        out = kernels.column_closest_to_median_mean(G, rows, beta)
        ref = np.empty(G.shape[1])
        for j in range(G.shape[1]):
            v = np.sort(G[:, j])
            med = np.median(v)
            ref[j] = np.mean(sorted(v, key=lambda x: (abs(x - med), x))[:beta])
        np.testing.assert_allclose(out, ref, rtol=1e-12)


@given(matrices(n_max=10))
def test_krum_scores_kernel(case):
    G, rows = case
    D = kernels.pairwise_sq_distances(G, rows)
    m = rows.size
    for k in range(m):
        ref = np.array([np.sort(np.delete(D[i], i))[:k].sum() for i in range(m)])
        np.testing.assert_allclose(kernels.krum_scores(D, k), ref, rtol=1e-12)


def test_pairwise_with_an_outlying_reference_row():
    """The first row (the default shift) far from a cluster of rows: the Gram is redone around a
    central row and every distance stays accurate."""
    rng = np.random.default_rng(11)
    G = (rng.normal(size=(12, 3000)) * 1e-3).astype(np.float32)
    G[0] = 1e3
    rows = np.arange(12, dtype=np.int64)
    np.testing.assert_allclose(kernels.pairwise_sq_distances(G, rows), _direct_sq(G), rtol=1e-5)
    G64 = G.astype(np.float64)
    np.testing.assert_allclose(kernels.pairwise_sq_distances(G64, rows), _direct_sq(G64), rtol=1e-9)


def test_pairwise_threads_bit_identical_and_after_fork():
    """Chunks depend on d only: any thread count gives the same bits; a forked child (which
    inherits the pool object but not its threads) still computes."""
    import multiprocessing as mp

    from robustagg.kernels import centred_gram

    rng = np.random.default_rng(12)
    G = rng.normal(size=(7, 100_000)).astype(np.float32)
    rows = np.arange(7, dtype=np.int64)
    one = centred_gram(G, rows, threads=1)
    two = centred_gram(G, rows, threads=2)
    np.testing.assert_array_equal(one, two)
    if "fork" in mp.get_all_start_methods():
        # the Gram stage only (serial Numba + BLAS on the pool): Numba's OpenMP parallel
        # kernels themselves are not fork-safe once used in the parent
        with mp.get_context("fork").Pool(1) as pool:
            child = pool.apply_async(_child_gram, (G, rows)).get(timeout=120)
        np.testing.assert_array_equal(child, two)


def _child_gram(G, rows):
    from robustagg.kernels import centred_gram

    return centred_gram(G, rows, threads=2)


@st.composite
def _vectors(draw):
    """1-D float64 vectors of 1-300 values: Gaussian, few distinct values (ties), or sorted /
    reversed runs (the merge sort's edge cases: runs of 16, merge widths past n)."""
    n = draw(st.integers(1, 300))
    seed = draw(st.integers(0, 2**32 - 1))
    kind = draw(st.sampled_from(["normal", "ties", "sorted", "reversed"]))
    rng = np.random.default_rng(seed)
    if kind == "ties":
        v = rng.integers(-2, 3, size=n).astype(np.float64)
    else:
        v = rng.normal(size=n) * 10.0 ** rng.integers(-5, 6)
        if kind == "sorted":
            v = np.sort(v)
        elif kind == "reversed":
            v = np.sort(v)[::-1].copy()
    return v


@given(_vectors())
def test_argsort_stable_matches_numpy_stable_argsort(v):
    from robustagg.kernels._select import argsort_stable

    before = v.copy()
    got = argsort_stable(v)
    np.testing.assert_array_equal(got, np.argsort(v, kind="stable"))
    np.testing.assert_array_equal(v, before)  # the input is left alone


@given(_vectors())
def test_median_of_matches_numpy_median(v):
    from robustagg.kernels._select import median_of

    expected = np.median(v)
    w = v.copy()
    assert median_of(w, v.size) == expected  # bit for bit (the same two middle values)
    np.testing.assert_array_equal(np.sort(w), np.sort(v))  # reordered, nothing lost


@given(matrices(n_max=14))
def test_krum_scores_are_ascending_sums_bit_for_bit(case):
    G, rows = case
    D = kernels.pairwise_sq_distances(G, rows)
    m = rows.size
    for k in range(m):
        ref = np.zeros(m)
        for i in range(m):
            s = 0.0
            for x in np.sort(np.delete(D[i], i))[:k]:  # one value after the other, ascending
                s += x
            ref[i] = s
        np.testing.assert_array_equal(kernels.krum_scores(D, k), ref)
