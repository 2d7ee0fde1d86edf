"""dnc: naive reference, determinism under a seed, fallback, properties, validation."""

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import robustagg
from robustagg.testing.naive_rules import naive_dnc


@st.composite
def cases(draw):
    n = draw(st.integers(2, 12))
    d = draw(st.integers(1, 30))
    dtype = draw(st.sampled_from([np.float32, np.float64]))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    G = (rng.normal(size=(n, d)) * draw(st.sampled_from([1e-2, 1.0, 1e3]))).astype(dtype)
    f = draw(st.integers(0, n - 1))
    b = draw(st.integers(1, 40))
    niters = draw(st.integers(1, 6))
    seed = draw(st.integers(0, 2**32 - 1))
    return G, f, b, niters, seed


@settings(max_examples=30)
@given(cases())
def test_dnc_matches_naive(case):
    G, f, b, niters, seed = case
    out, info = robustagg.dnc(G, f, b=b, niters=niters, rng=seed, return_info=True)
    ref, kept = naive_dnc(G, f, b=b, niters=niters, rng=seed)
    assert out.dtype == G.dtype and info.scores.shape == (niters, G.shape[0])
    X = G.astype(np.float64)
    if np.array_equal(info.kept, kept):
        tol = 1e-6 if G.dtype == np.float32 else 1e-12
        np.testing.assert_allclose(out, ref, rtol=tol, atol=tol * np.abs(X).max())
    else:  # only possible when scores tie to rounding: the kept sets then have equal scores
        s = info.scores
        assert np.any(
            np.isclose(
                np.sort(s, axis=1)[:, :-1],
                np.sort(s, axis=1)[:, 1:],
                rtol=1e-8,
                atol=1e-12 * np.abs(X).max() ** 2,
            )
        )
    # each round keeps exactly n - floor(c f) rows
    assert np.all(info.kept_per_round.sum(axis=1) == G.shape[0] - min(f, G.shape[0] - 1))


def test_dnc_scores_are_projections_on_the_top_singular_vector():
    rng = np.random.default_rng(0)
    G = rng.normal(size=(10, 50))
    G[:2] += 5 * rng.normal(size=50)  # two outliers along one direction
    out, info = robustagg.dnc(G, 2, b=50, niters=1, rng=0, return_info=True)
    X = G - G.mean(axis=0)
    v = np.linalg.svd(X)[2][0]
    np.testing.assert_allclose(info.scores[0], (X @ v) ** 2, rtol=1e-10)
    assert not info.kept[:2].any() and info.kept[2:].all()
    np.testing.assert_allclose(out, G[2:].mean(axis=0), rtol=1e-12)


@given(st.integers(0, 2**32 - 1))
def test_bit_identical_under_a_seed(seed):
    G = np.random.default_rng(seed).normal(size=(9, 200)).astype(np.float32)
    a = robustagg.dnc(G, 2, b=20, rng=seed)
    b = robustagg.dnc(G, 2, b=20, rng=np.random.default_rng(seed))
    np.testing.assert_array_equal(a, b)
    assert a.tobytes() == b.tobytes()


def test_generator_is_advanced_and_seed_changes_samples():
    G = np.random.default_rng(1).normal(size=(9, 500))
    gen = np.random.default_rng(3)
    _, i1 = robustagg.dnc(G, 2, b=10, rng=gen, return_info=True)
    _, i2 = robustagg.dnc(G, 2, b=10, rng=gen, return_info=True)
    assert not np.array_equal(i1.scores, i2.scores)


def test_b_at_least_d_uses_every_coordinate_and_c():
    G = np.random.default_rng(2).normal(size=(8, 6))
    _, info = robustagg.dnc(G, 2, b=100, niters=3, rng=0, return_info=True)
    assert not info.fallback
    np.testing.assert_allclose(info.scores[1], info.scores[0], rtol=1e-12)
    _, info = robustagg.dnc(G, 2, c=1.5, rng=0, return_info=True)
    assert info.n_removed == math.floor(1.5 * 2) and info.kept_per_round[0].sum() == 5
    out, info = robustagg.dnc(G, 3, c=0.0, rng=0, return_info=True)
    assert info.kept.all()
    np.testing.assert_allclose(out, G.mean(axis=0), rtol=1e-12)


def test_empty_intersection_falls_back_to_rows_kept_most_often():
    # a sample of one coordinate per round: each round removes the rows extreme on that
    # coordinate; rows that are extreme on different coordinates make the intersection empty
    n = 4
    G = np.zeros((n, 4))
    G[0, 0] = G[1, 1] = G[2, 2] = G[3, 3] = 10.0
    found = False
    for seed in range(50):
        out, info = robustagg.dnc(G, 1, b=1, niters=4, rng=seed, return_info=True)
        counts = info.kept_per_round.sum(axis=0)
        assert np.all(np.isfinite(out))
        np.testing.assert_array_equal(info.kept, counts == counts.max())
        np.testing.assert_allclose(out, G[info.kept].mean(axis=0), rtol=1e-12)
        if info.fallback:
            found = True
            assert counts.max() < 4 and info.kept.any()
    assert found


@pytest.mark.parametrize("value", [np.nan, np.inf, -np.inf])
def test_finite_output_with_f_nonfinite_rows(value):
    G = np.random.default_rng(4).normal(size=(10, 30))
    G[[1, 6], [2, 9]] = value
    out, info = robustagg.dnc(G, 3, b=10, rng=0, return_info=True)
    assert np.all(np.isfinite(out)) and info.nonfinite[[1, 6]].all() and not info.kept[[1, 6]].any()
    assert np.isnan(info.scores[:, [1, 6]]).all()
    # 2 excluded rows count against f = 3: each round removes floor(c * 1) = 1 finite row
    assert info.n_removed == 1 and np.all(info.kept_per_round.sum(axis=1) == 7)
    ref, kept = naive_dnc(np.delete(G, [1, 6], axis=0), 1, b=10, rng=0)
    np.testing.assert_allclose(out, ref, rtol=1e-12)


def test_permutation_of_rows_permutes_scores():
    G = np.random.default_rng(5).normal(size=(9, 40))
    perm = np.random.default_rng(6).permutation(9)
    a, ia = robustagg.dnc(G, 2, b=15, rng=7, return_info=True)
    b, ib = robustagg.dnc(G[perm], 2, b=15, rng=7, return_info=True)
    np.testing.assert_allclose(ib.scores, ia.scores[:, perm], rtol=1e-8)
    np.testing.assert_allclose(a, b, rtol=1e-12)


def test_translation_equivariance():
    G = np.random.default_rng(8).normal(size=(9, 40))
    t = np.linspace(-3, 3, 40)
    np.testing.assert_allclose(
        robustagg.dnc(G + t, 2, b=15, rng=1), robustagg.dnc(G, 2, b=15, rng=1) + t, rtol=1e-10, atol=1e-10
    )


def test_no_mutation_read_only_and_torch():
    G = np.random.default_rng(9).normal(size=(8, 25)).astype(np.float32)
    ro = G.copy()
    ro.setflags(write=False)
    out = robustagg.dnc(ro, 2, rng=0)
    np.testing.assert_array_equal(ro, G)
    assert out.dtype == np.float32
    torch = pytest.importorskip("torch")
    t = robustagg.dnc(torch.from_numpy(G), 2, rng=0)
    assert isinstance(t, torch.Tensor) and t.dtype == torch.float32
    np.testing.assert_array_equal(t.numpy(), out)


def test_validation_errors():
    G = np.ones((5, 3))
    with pytest.raises(ValueError, match=r"dnc: needs n > floor\(c\*f\) with c = 1.0 .*n=5, f=5.*at most 4"):
        robustagg.dnc(G, 5)
    with pytest.raises(ValueError, match=r"dnc: needs n > floor\(c\*f\) with c = 2.0 .*n=5, f=3.*at most 2"):
        robustagg.dnc(G, 3, c=2.0)
    with pytest.raises(ValueError, match=r"dnc: argument 'niters' must be >= 1, got 0"):
        robustagg.dnc(G, 1, niters=0)
    with pytest.raises(ValueError, match=r"dnc: argument 'b' must be >= 1, got 0"):
        robustagg.dnc(G, 1, b=0)
    with pytest.raises(TypeError, match=r"dnc: argument 'b' must be an integer"):
        robustagg.dnc(G, 1, b=2.5)
    with pytest.raises(ValueError, match=r"dnc: argument 'c' must be in \[0.0, inf\)"):
        robustagg.dnc(G, 1, c=-0.5)
    with pytest.raises(TypeError, match=r"dnc: argument 'rng' must be None"):
        robustagg.dnc(G, 1, rng="seed")
    with pytest.raises(ValueError, match=r"dnc: argument 'rng' as a seed must be >= 0"):
        robustagg.dnc(G, 1, rng=-1)


def _psd(m, k, spike, seed):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(m, k))
    X[: m // 10] += spike * rng.normal(size=k)  # a tenth of the rows along one direction
    X -= X.mean(axis=0)
    return X @ X.T


@pytest.mark.slow
@pytest.mark.parametrize("m", [256, 400])
@pytest.mark.parametrize("spike", [0.0, 3.0])
def test_top_eigenpair_lanczos_matches_lapack(m, spike):
    """From 256 rows the top eigenpair comes from Lanczos: the same eigenvalue and scores as
    LAPACK's index-range solver, to rounding when the top eigenvalue stands apart, and an exact
    eigenpair (tiny residual) when it does not."""
    import scipy.linalg

    from robustagg.rules import spectral

    K = _psd(m, 600, spike, seed=m)
    lam, u = spectral._top_eigenpair(K)
    w, U = scipy.linalg.eigh(K, subset_by_index=[m - 2, m - 1])
    assert lam == pytest.approx(w[-1], rel=1e-12)
    assert np.linalg.norm(u) == pytest.approx(1.0, rel=1e-12)
    assert np.linalg.norm(K @ u - lam * u) <= 1e-10 * w[-1]
    if w[-1] - w[-2] > 0.05 * w[-1]:  # a gap: the eigenvector is well determined
        np.testing.assert_allclose(lam * u**2, w[-1] * U[:, -1] ** 2, rtol=1e-8, atol=1e-10 * w[-1])


@pytest.mark.slow
def test_top_eigenpair_falls_back_to_lapack_without_convergence(monkeypatch):
    import scipy.linalg

    from robustagg.rules import spectral

    K = _psd(300, 400, 0.0, seed=1)
    monkeypatch.setattr(spectral, "_LANCZOS_MAXITER", 1)
    lam, u = spectral._top_eigenpair(K)
    w, U = scipy.linalg.eigh(K, subset_by_index=[299, 299], driver="evr")
    assert lam == w[0] and np.array_equal(u, U[:, 0])


@pytest.mark.slow
def test_dnc_with_many_rows_matches_naive():
    """The Lanczos path inside the rule (m >= 256): the same kept rows and aggregate as the
    naive SVD reference."""
    rng = np.random.default_rng(7)
    G = rng.normal(size=(300, 400))
    G[:30] += 4.0 * rng.normal(size=400)
    for dtype in (np.float64, np.float32):
        X = G.astype(dtype)
        out, info = robustagg.dnc(X, 30, b=200, niters=3, rng=5, return_info=True)
        ref, kept = naive_dnc(X, 30, b=200, niters=3, rng=5)
        assert np.array_equal(info.kept, kept)
        tol = 1e-6 if dtype == np.float32 else 1e-12
        np.testing.assert_allclose(out, ref, rtol=tol, atol=tol * np.abs(G).max())
