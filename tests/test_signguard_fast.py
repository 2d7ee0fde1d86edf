"""SignGuard's fast paths: the fused kernels of ``robustagg.kernels._signs`` against NumPy,
Floyd's coordinate sampling, and SignGuard-Sim's BLAS Gram path against its exact path."""

from collections import Counter

import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from scipy import stats

import robustagg
from robustagg import kernels
from robustagg.rules import _signguard_core as sg_core
from robustagg.rules._signguard_options import check_options


def _matrix(seed, n, d, dtype):
    rng = np.random.default_rng(seed)
    G = (0.1 * rng.standard_normal(d) + rng.standard_normal((n, d))).astype(dtype)
    G[: max(1, n // 5)] *= -1.0  # sign-flipped rows
    return G, rng


# --- kernels ----------------------------------------------------------------------------------
@pytest.mark.slow
@settings(max_examples=15)
@given(
    seed=st.integers(0, 2**31),
    n=st.integers(1, 12),
    d=st.integers(1, 9000),
    dtype=st.sampled_from([np.float32, np.float64]),
)
def test_fused_kernels_match_numpy(seed, n, d, dtype):
    G, rng = _matrix(seed, n, d, dtype)
    G[:, rng.integers(0, d, size=d // 7)] = 0.0  # zeros among the sampled coordinates
    rows = rng.permutation(n)[: max(1, n - 1)].astype(np.int64)
    coords = np.sort(rng.choice(d, size=max(1, d // 3), replace=False)).astype(np.int64)
    ref = rng.standard_normal(d)
    X = G[rows].astype(np.float64)
    S = X[:, coords]
    expected_counts = np.column_stack([(S > 0).sum(1), (S == 0).sum(1), (S < 0).sum(1)])

    norms, counts = kernels.norms_and_sign_counts(G, rows, coords)
    np.testing.assert_allclose(norms, np.linalg.norm(X, axis=1), rtol=1e-13)
    np.testing.assert_array_equal(counts, expected_counts)

    for group in (1, 3, 4):
        n2, c2, dots = kernels.norms_signs_and_similarity(G, rows, coords, ref, False, group)
        n3, c3, sq = kernels.norms_signs_and_similarity(G, rows, coords, ref, True, group)
        for nn, cc in ((n2, c2), (n3, c3)):
            np.testing.assert_array_equal(nn, norms)  # same sums in the same order
            np.testing.assert_array_equal(cc, counts)
        np.testing.assert_allclose(dots, X @ ref, rtol=1e-10, atol=1e-10 * np.linalg.norm(ref) * norms.max())
        np.testing.assert_allclose(sq, ((X - ref) ** 2).sum(axis=1), rtol=1e-12)
        # a float32 reference is widened value by value: the same sums as on its float64 copy
        r32 = ref.astype(np.float32)
        for distance in (False, True):
            a = kernels.norms_signs_and_similarity(G, rows, coords, r32, distance, group)
            b = kernels.norms_signs_and_similarity(G, rows, coords, r32.astype(np.float64), distance, group)
            for x, y in zip(a, b, strict=True):
                np.testing.assert_array_equal(x, y)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_sign_counts_at_block_edges(dtype):
    """Sampled coordinates on both sides of the kernels' block boundaries (every 4096 columns;
    each is read through its uint16 offset in its block), blocks with no sampled coordinate,
    and the last column: the counts of a plain NumPy count."""
    d = 3 * 4096 + 5
    G, rng = _matrix(7, 6, d, dtype)
    G[:, [4095, 8192]] = 0.0
    coords = np.array([0, 1, 4095, 4096, 4097, 8191, 8192, d - 1], dtype=np.int64)
    rows = np.array([4, 0, 2], dtype=np.int64)
    S = G[rows][:, coords]
    expected = np.column_stack([(S > 0).sum(1), (S == 0).sum(1), (S < 0).sum(1)])
    late = np.array([8193, d - 2, d - 1], dtype=np.int64)  # the first two blocks sample nothing
    L = G[rows][:, late]
    expected_late = np.column_stack([(L > 0).sum(1), (L == 0).sum(1), (L < 0).sum(1)])
    ref = rng.standard_normal(d)
    for c, e in ((coords, expected), (late, expected_late)):
        np.testing.assert_array_equal(kernels.norms_and_sign_counts(G, rows, c)[1], e)
        for distance in (False, True):
            np.testing.assert_array_equal(
                kernels.norms_signs_and_similarity(G, rows, c, ref, distance, 2)[1], e
            )


@settings(max_examples=15)
@given(
    seed=st.integers(0, 2**31),
    n=st.integers(1, 11),
    d=st.integers(1, 9000),
    dtype=st.sampled_from([np.float32, np.float64]),
)
def test_weighted_column_sum_is_bit_identical_to_row_order_accumulation(seed, n, d, dtype):
    G, rng = _matrix(seed, n, d, dtype)
    rows = rng.permutation(n)[: rng.integers(1, n + 1)].astype(np.int64)
    w = rng.random(rows.size)
    w[rng.random(rows.size) < 0.3] = 0.0
    got = kernels.weighted_column_sum(G, rows, w)
    acc = np.zeros(d)
    for r in range(rows.size):  # one row after the other, as the 4-row sweep must reproduce
        if w[r] != 0.0:
            acc += w[r] * G[rows[r]].astype(np.float64)
    np.testing.assert_array_equal(got, acc)
    np.testing.assert_allclose(got, w @ G[rows].astype(np.float64), rtol=1e-10, atol=1e-12)
    # the scaled sum rounded once to G's dtype: the float64 sum, times scale, then astype
    scale = float(rng.choice([1.0, 1.0 / 3.0, 1.0 / max(rows.size, 1), 1e-30]))
    scaled = kernels.scaled_column_sum(G, rows, w, scale)
    assert scaled.dtype == G.dtype and scaled.shape == (d,)
    np.testing.assert_array_equal(scaled, (acc * scale).astype(dtype))


def test_signguard_mean_is_the_scaled_sum_cast_once():
    """The clipped mean SignGuard returns is ``(1/m) sum w_r g_r`` accumulated in float64 in row
    order, multiplied by 1/m and rounded once to float32."""
    rng = np.random.default_rng(5)
    G = (rng.standard_normal((12, 3001)) * rng.uniform(0.5, 2.0, (12, 1))).astype(np.float32)
    out, info = robustagg.signguard(G, rng=1, return_info=True)
    kept = np.flatnonzero(info.kept)
    w = np.asarray(info.details["weights"])[kept]
    assert kept.size >= 6 and np.all(w > 0) and np.any(w < 1)  # clipping took part
    acc = np.zeros(G.shape[1])
    for r in range(kept.size):
        acc += w[r] * G[kept[r]].astype(np.float64)
    assert out.dtype == np.float32
    np.testing.assert_array_equal(out, (acc * (1.0 / kept.size)).astype(np.float32))


@settings(max_examples=25)
@given(seed=st.integers(0, 2**31), m=st.integers(2, 40), zero_rows=st.integers(0, 2))
def test_in_place_cosines_and_row_medians_match_the_numpy_expressions(seed, m, zero_rows):
    """``cosines_in_place`` and ``offdiag_row_medians`` give the bits of the NumPy expressions
    they replace (``np.outer``/``np.divide(where=)`` and ``np.median`` over the off-diagonal
    entries of each row), zero-norm rows included."""
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((m, 7))
    X[:zero_rows] = 0.0
    norms = np.linalg.norm(X, axis=1)
    dot = X @ X.T
    D = ((X[:, None, :] - X[None, :, :]) ** 2).sum(-1)
    off = ~np.eye(m, dtype=bool)
    denom = np.outer(norms, norms)
    cos_dot = np.divide(dot, denom, out=np.zeros((m, m)), where=denom > 0)
    sq_norms = norms * norms
    from_d = 0.5 * (sq_norms[:, None] + sq_norms[None, :] - D)
    cos_d = np.divide(from_d, denom, out=np.zeros((m, m)), where=denom > 0)
    np.testing.assert_array_equal(kernels.cosines_in_place(dot.copy(), norms, False), cos_dot)
    got = kernels.cosines_in_place(D.copy(), norms, True)
    np.testing.assert_array_equal(got, cos_d)
    np.testing.assert_array_equal(
        kernels.offdiag_row_medians(got, False), np.median(cos_d[off].reshape(m, m - 1), axis=1)
    )
    np.testing.assert_array_equal(
        kernels.offdiag_row_medians(D, True), np.median(np.sqrt(D[off].reshape(m, m - 1)), axis=1)
    )
    # a NaN entry (an overflowing float64 norm can make one) makes its row's median NaN
    got[0, m - 1] = got[m - 1, 0] = np.nan
    np.testing.assert_array_equal(
        kernels.offdiag_row_medians(got, False), np.median(got[off].reshape(m, m - 1), axis=1)
    )


# --- coordinate sampling ----------------------------------------------------------------------
def _sample(d, k, seed):
    draws = np.random.default_rng(seed).integers(0, np.arange(d - k + 1, d + 1, dtype=np.int64))
    return kernels.floyd_sample(d, draws)


@pytest.mark.parametrize("d,k", [(1, 1), (7, 7), (10, 3), (1000, 100), (5000, 4999)])
def test_floyd_sample_is_a_sorted_subset_of_size_k(d, k):
    for seed in range(5):
        idx = _sample(d, k, seed)
        assert idx.dtype == np.int64 and idx.size == k
        assert np.all(np.diff(idx) > 0) and idx[0] >= 0 and idx[-1] < d


@pytest.mark.parametrize(
    "d,k", [(1, 1), (64, 64), (65, 1), (130, 64), (1000, 100), (5000, 4999), (100003, 10000)]
)
def test_floyd_sample_matches_a_plain_python_floyd(d, k):
    """The same subset as Floyd's algorithm written with a Python set (every draw, including the
    collisions that take d - k + q), across bitset word boundaries."""
    for seed in range(3):
        draws = np.random.default_rng(seed).integers(0, np.arange(d - k + 1, d + 1, dtype=np.int64))
        taken = set()
        for q, t in enumerate(draws.tolist()):
            taken.add(d - k + q if t in taken else t)
        np.testing.assert_array_equal(kernels.floyd_sample(d, draws), np.array(sorted(taken), dtype=np.int64))


def test_floyd_sample_draws_every_subset_equally_often():
    # d = 6, k = 3: 20 subsets; a biased sampler (e.g. taking draws[q] without the collision
    # rule, or a wrong range) fails the chi-square test by a wide margin
    rng = np.random.default_rng(0)
    counts = Counter(tuple(_sample(6, 3, int(s))) for s in rng.integers(0, 2**62, size=20000))
    assert len(counts) == 20
    assert stats.chisquare(list(counts.values())).pvalue > 1e-4
    # inclusion frequency of each column at d = 50, k = 5: 1/10 each
    hits = np.zeros(50)
    for s in range(4000):
        hits[_sample(50, 5, s)] += 1
    assert stats.chisquare(hits).pvalue > 1e-4


def test_bounded_draws_are_uniform_and_a_short_batch_is_reported():
    rng = np.random.default_rng(1)
    draws = np.array([sg_core._floyd_draws(rng, 7, 3) for _ in range(20000)])
    for q in range(3):  # step q uniform on [0, 4 + q]
        counts = np.bincount(draws[:, q], minlength=5 + q)
        assert counts.size == 5 + q
        assert stats.chisquare(counts).pvalue > 1e-4
    # bounds near 2^31 reject about half of the words: still in range and unbiased
    d = 2**31 + 1
    big = np.array([sg_core._floyd_draws(rng, d, 3) for _ in range(4000)])
    assert np.all((big >= 0) & (big <= d - 3 + np.arange(3)))
    assert abs((big[:, 0] < (d - 2) // 2).mean() - 0.5) < 0.05
    _, ok = kernels.floyd_draws(np.array([2**32 - 1], dtype=np.uint64), 10, 3)
    assert not ok


def test_random_coordinates_have_the_requested_size_and_follow_the_seed():
    G = _matrix(3, 10, 2001, np.float32)[0]
    _, a = robustagg.signguard(G, rng=5, return_info=True)
    _, b = robustagg.signguard(G, rng=np.random.default_rng(5), return_info=True)
    np.testing.assert_array_equal(a.coordinates, b.coordinates)
    assert a.coordinates.size == 200 and np.unique(a.coordinates).size == 200


# --- SignGuard-Sim: BLAS Gram path against the exact path -------------------------------------
@settings(max_examples=8)
@given(
    seed=st.integers(0, 2**31),
    n=st.integers(5, 30),
    d=st.integers(500, 4000),
    dtype=st.sampled_from([np.float32, np.float64]),
)
def test_sim_blas_gram_path_matches_the_exact_path(seed, n, d, dtype, monkeypatch_module):
    G = _matrix(seed, n, d, dtype)[0]
    assert n * n * d <= sg_core.EXACT_GRAM_MAX  # the default call takes the exact path
    out_exact, exact = robustagg.signguard_sim(G, rng=seed, return_info=True)
    with monkeypatch_module.context() as mp:
        mp.setattr(sg_core, "EXACT_GRAM_MAX", 0)
        out_blas, blas = robustagg.signguard_sim(G, rng=seed, return_info=True)
    tol = 1e-6 if dtype == np.float32 else 1e-12
    np.testing.assert_allclose(blas.similarity, exact.similarity, rtol=0, atol=tol)
    np.testing.assert_allclose(
        blas.features, exact.features, rtol=0, atol=tol / (5 * np.median(exact.similarity))
    )
    if exact.bandwidth > 0:
        F = exact.features
        D = np.sqrt(((F[:, None, :] - F[None, :, :]) ** 2).sum(axis=2))
        assume(not np.any(np.abs(D - exact.bandwidth) <= 1e-4 * exact.bandwidth))  # no near-ties
    np.testing.assert_array_equal(blas.labels, exact.labels)
    np.testing.assert_array_equal(blas.kept, exact.kept)
    np.testing.assert_allclose(out_blas, out_exact, rtol=1e-6 if dtype == np.float32 else 1e-12, atol=1e-7)


@pytest.fixture(scope="module")
def monkeypatch_module():
    mp = pytest.MonkeyPatch()
    yield mp
    mp.undo()


# --- the fused reference pass: non-finite rows ------------------------------------------------
@pytest.mark.parametrize("rule", [robustagg.signguard_sim, robustagg.signguard_dist])
def test_reference_pass_excludes_nonfinite_rows_like_the_finite_submatrix(rule):
    G, rng = _matrix(11, 15, 3000, np.float32)
    ref = G[5:].astype(np.float64).mean(axis=0)
    bad = G.copy()
    bad[3, 17] = np.nan
    bad[9, 2000] = np.inf
    out, info = rule(bad, reference=ref, rng=2, return_info=True)
    assert info.nonfinite[[3, 9]].all() and not info.kept[[3, 9]].any()
    keep = np.setdiff1d(np.arange(15), [3, 9])
    expected, einfo = rule(G[keep], reference=ref, coordinates=info.coordinates, return_info=True)
    np.testing.assert_array_equal(out, expected)
    np.testing.assert_array_equal(info.kept[keep], einfo.kept)
    np.testing.assert_array_equal(info.similarity[keep], einfo.similarity)
    with pytest.raises(ValueError):
        rule(bad, reference=ref, rng=2, nonfinite="raise")


def test_reference_validation_messages():
    G = _matrix(1, 6, 50, np.float64)[0]
    with pytest.raises(ValueError, match="signguard_sim: argument 'reference' must have length d = 50"):
        robustagg.signguard_sim(G, reference=np.zeros(49))
    with pytest.raises(ValueError, match="signguard_dist: argument 'reference' holds NaN or Inf"):
        robustagg.signguard_dist(G, reference=np.full(50, np.nan))


@pytest.mark.parametrize("rule", ["signguard_sim", "signguard_dist"])
def test_float32_reference_is_used_as_is_with_the_same_result(rule):
    """A float32 reference is not copied to float64 (no 2d-byte buffer per call) and gives the
    bit-identical aggregate and similarities of its float64 copy."""
    rng = np.random.default_rng(4)
    G = rng.standard_normal((12, 5000)).astype(np.float32)
    ref = G[3:].mean(axis=0)
    fn = getattr(robustagg, rule)
    a, ia = fn(G, reference=ref, rng=1, return_info=True)
    b, ib = fn(G, reference=ref.astype(np.float64), rng=1, return_info=True)
    np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(ia["similarity"], ib["similarity"])
    assert check_options(rule, d=5000, reference=ref)["reference"].dtype == np.float32
    assert check_options(rule, d=5000, reference=np.arange(5000))["reference"].dtype == np.float64
