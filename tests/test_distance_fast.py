"""The fast pairwise-distance path: the shift probe (unshifted Gram read in place, or a central
row), exact-duplicate classes, the Gram pass as the non-finite check, thread-count
determinism, and accuracy against float64 on each path."""

import numpy as np
import pytest

import robustagg
from robustagg._thresholds import RECOMPUTE_RTOL_F32, RECOMPUTE_RTOL_F64
from robustagg.kernels import _distance as K
from robustagg.kernels import centred_gram


def _direct_sq(X):
    """Exact-enough float64 reference: the Gram of float64 rows centred on their mean."""
    X = X.astype(np.float64)
    Xc = X - X.mean(axis=0)
    sq = (Xc * Xc).sum(axis=1)
    D = np.maximum(sq[:, None] + sq[None, :] - 2.0 * (Xc @ Xc.T), 0.0)
    np.fill_diagonal(D, 0.0)
    return D


def _pairs_direct(X, pairs):
    X = X.astype(np.float64)
    return np.array([((X[i] - X[j]) ** 2).sum() for i, j in pairs])


def _lie_like(n, d, f, dtype, seed=0):
    rng = np.random.default_rng(seed)
    G = rng.standard_normal((n, d)) + 0.1 * rng.standard_normal(d)
    G[:f] = G.mean(axis=0) - 0.3 * G.std(axis=0)
    return G.astype(dtype)


def _correlated(n, d, dtype, scale=300.0, seed=1):
    """Rows sharing a common component far larger than their spread (|mu|^2 >> sigma^2)."""
    rng = np.random.default_rng(seed)
    return (scale * rng.standard_normal(d) + rng.standard_normal((n, d))).astype(dtype)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_probe_picks_no_shift_for_spread_rows_and_a_row_for_a_common_component(dtype):
    rtol = RECOMPUTE_RTOL_F32 if dtype == np.float32 else RECOMPUTE_RTOL_F64
    spread = _lie_like(20, 50_000, 4, dtype)
    assert K._probe_shift(spread, np.arange(20), rtol) == -1
    common = _correlated(20, 50_000, dtype, scale=3e3 if dtype == np.float64 else 300.0)
    assert K._probe_shift(common, np.arange(20), rtol) >= 0


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("kind", ["spread", "common", "subset"])
def test_accurate_against_float64_on_every_path(dtype, kind):
    """No catastrophic cancellation whichever shift is used: rtol 1e-5 (float32) / 1e-9 (float64)."""
    if kind == "spread":
        G, rows = _lie_like(24, 150_000, 5, dtype), np.arange(24)
    elif kind == "common":
        G, rows = _correlated(24, 150_000, dtype), np.arange(24)
    else:  # rows not a contiguous range: shifted by a row through a copied buffer
        G = _correlated(30, 150_000, dtype)
        rows = np.array([0, 2, 3, 5, 8, 9, 13, 21, 22, 29])
    D = robustagg.kernels.pairwise_sq_distances(G, rows)
    ref = _direct_sq(G[rows])
    rtol = 1e-5 if dtype == np.float32 else 1e-9
    # (atol: the float64 reference's own rounding on exact duplicates)
    np.testing.assert_allclose(D, ref, rtol=rtol, atol=1e-15 * ref.max())
    np.testing.assert_array_equal(D, D.T)
    np.testing.assert_array_equal(np.diag(D), 0.0)
    if kind == "common" and dtype == np.float32:
        # the unshifted float32 formula is far off on these rows: the test is not vacuous
        X = G[rows]
        sq = np.einsum("ij,ij->i", X, X, dtype=np.float64)
        naive = sq[:, None] + sq[None, :] - 2.0 * (X @ X.T).astype(np.float64)
        off = ~np.eye(rows.size, dtype=bool)
        assert np.max(np.abs(naive - ref)[off] / ref[off]) > 1e-3


def test_exact_duplicates_near_duplicates_and_almost_equal_rows():
    rng = np.random.default_rng(3)
    d = 60_000
    G = (rng.standard_normal((16, d)) + 5.0).astype(np.float32)
    G[[3, 7, 11, 12]] = G[1]  # one class of five identical rows
    G[[9, 14]] = G[4]  # another class of three
    G[5] = G[1]
    G[5, d - 1] += np.float32(0.5)  # equal to row 1 except the last value
    G[6] = G[4] + np.float32(1e-3)  # a near-duplicate of the second class
    rows = np.arange(16)
    D = robustagg.kernels.pairwise_sq_distances(G, rows)
    for cls in ([1, 3, 7, 11, 12], [4, 9, 14]):
        np.testing.assert_array_equal(D[np.ix_(cls, cls)], 0.0)
        for i in cls:  # equal rows: exactly the same distances to every row
            np.testing.assert_array_equal(D[i], D[cls[0]])
    pairs = [(5, 1), (5, 3), (6, 4), (6, 9)]  # flagged: summed directly
    got = np.array([D[i, j] for i, j in pairs])
    np.testing.assert_allclose(got, _pairs_direct(G, pairs), rtol=1e-14)
    assert D[5, 1] > 0.0
    np.testing.assert_allclose(D, _direct_sq(G), rtol=1e-5, atol=1e-9)


def test_duplicate_classes_compare_f_minus_one_rows(monkeypatch):
    """f identical rows: f - 1 equality tests and no direct sum over pairs of them."""
    G = _lie_like(30, 40_000, 10, np.float32)
    calls = {"eq": 0, "pairs": 0}
    real_eq, real_pairs = K._rows_equal, K.sq_distances_of_pairs

    def eq(G, a, b):
        calls["eq"] += a.size
        return real_eq(G, a, b)

    def pairs(G, rows, pi, pj):
        calls["pairs"] += pi.size
        return real_pairs(G, rows, pi, pj)

    monkeypatch.setattr(K, "_rows_equal", eq)
    monkeypatch.setattr(K, "sq_distances_of_pairs", pairs)
    D = K.pairwise_sq_distances(G, np.arange(30))
    assert calls == {"eq": 9, "pairs": 0}
    np.testing.assert_array_equal(D[:10, :10], 0.0)
    np.testing.assert_allclose(D, _direct_sq(G), rtol=1e-5, atol=1e-9)


@pytest.mark.parametrize("ref", [-1, 0, 5])
def test_gram_bit_identical_for_any_thread_count(ref):
    G = _correlated(9, 200_000, np.float32)
    rows = np.arange(9)
    one = centred_gram(G, rows, ref=ref, threads=1)
    for t in (2, 3):
        np.testing.assert_array_equal(centred_gram(G, rows, ref=ref, threads=t), one)


@pytest.mark.parametrize("kind", ["spread", "common"])
def test_pairwise_bit_identical_for_any_thread_count(kind):
    """The probe's decision and every stage after it do not depend on the thread count."""
    import numba

    G = _lie_like(12, 120_000, 4, np.float32) if kind == "spread" else _correlated(12, 120_000, np.float32)
    rows = np.arange(12)
    before = numba.get_num_threads()
    try:
        numba.set_num_threads(1)
        one = K.pairwise_sq_distances(G, rows)
        numba.set_num_threads(min(2, numba.config.NUMBA_NUM_THREADS))
        two = K.pairwise_sq_distances(G, rows)
    finally:
        numba.set_num_threads(before)
    np.testing.assert_array_equal(one, two)


@pytest.mark.parametrize("name", ["krum", "multi_krum", "bulyan", "geometric_median"])
def test_rules_report_and_raise_on_nonfinite_rows_as_before(name):
    G = _lie_like(15, 5000, 2, np.float64, seed=4)
    G[6, 4321] = np.nan
    G[10, 17] = np.inf
    call = {
        "krum": lambda X, **kw: robustagg.krum(X, 3, **kw),
        "multi_krum": lambda X, **kw: robustagg.multi_krum(X, 3, **kw),
        "bulyan": lambda X, **kw: robustagg.bulyan(X, 3, **kw),
        "geometric_median": lambda X, **kw: robustagg.geometric_median(X, **kw),
    }[name]
    out, info = call(G, return_info=True)
    np.testing.assert_array_equal(info.nonfinite, np.isin(np.arange(15), [6, 10]))
    assert not info.kept[[6, 10]].any()
    assert np.all(np.isfinite(out))
    clean = np.delete(G, [6, 10], axis=0)
    ref = {
        "krum": lambda X: robustagg.krum(X, 1),
        "multi_krum": lambda X: robustagg.multi_krum(X, 1),
        "bulyan": lambda X: robustagg.bulyan(X, 1),
        "geometric_median": robustagg.geometric_median,
    }[name](clean)
    np.testing.assert_allclose(out, ref, rtol=1e-12, atol=1e-12)  # f' = f - 2 on the n' finite rows
    with pytest.raises(ValueError, match="nonfinite='raise'"):
        call(G, nonfinite="raise")


def test_float32_block_overflow_on_finite_rows_falls_back_to_float64_blocks():
    rng = np.random.default_rng(5)
    G = (rng.standard_normal((7, 20_000)) * 1e19).astype(np.float32)  # finite; squares overflow float32
    assert np.all(np.isfinite(G))
    D = K.pairwise_sq_distances(G, np.arange(7))
    np.testing.assert_allclose(D, _direct_sq(G), rtol=1e-9)
    out, info = robustagg.krum(G, 1, return_info=True)
    assert not info.nonfinite.any()
    np.testing.assert_array_equal(out, G[info.selected])


def _naive_repeated_krum(D, theta, f):
    """Bulyan's selection re-scoring the remaining sub-matrix with ``krum_scores`` at each step."""
    remaining = list(range(D.shape[0]))
    selected, won = [], []
    for _ in range(theta):
        r = len(remaining)
        k = 0 if r <= 1 else min(max(r - f - 2, 1), r - 1)
        s = K.krum_scores(np.ascontiguousarray(D[np.ix_(remaining, remaining)]), k)
        b = int(np.argmin(s))  # first minimum: the lowest remaining index
        selected.append(remaining.pop(b))
        won.append(s[b])
    return np.array(selected), np.array(won)


@pytest.mark.slow
@pytest.mark.parametrize("seed", range(40))
def test_repeated_krum_bit_identical_to_rescoring_the_submatrix(seed):
    rng = np.random.default_rng(seed)
    m = int(rng.integers(1, 40))
    f = int(rng.integers(0, max(m // 4, 1) + 1))
    kind = seed % 4
    if kind == 0:  # distinct distances
        X = rng.normal(size=(m, 5))
    elif kind == 1:  # many ties: small integers, duplicated rows
        X = rng.integers(-2, 3, size=(m, 3)).astype(float)
    elif kind == 2:  # a block of identical rows (LIE-like) among spread rows
        X = rng.normal(size=(m, 4))
        X[: max(m // 3, 1)] = X[0]
    else:  # two clusters
        X = rng.normal(size=(m, 4)) + 50.0 * (rng.random((m, 1)) < 0.3)
    D = _direct_sq(X) if kind != 1 else ((X[:, None] - X[None]) ** 2).sum(-1)
    theta = int(rng.integers(1, m + 1))
    before = D.copy()
    sel, won = K.repeated_krum(D, theta, f)
    np.testing.assert_array_equal(D, before)  # not overwritten by default
    ref_sel, ref_won = _naive_repeated_krum(D, theta, f)
    np.testing.assert_array_equal(sel, ref_sel)
    np.testing.assert_array_equal(won, ref_won)
    sel2, won2 = K.repeated_krum(D.copy(), theta, f, True)  # sorted values kept in D's storage
    np.testing.assert_array_equal(sel2, ref_sel)
    np.testing.assert_array_equal(won2, ref_won)
