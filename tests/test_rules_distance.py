"""krum, multi_krum, bulyan, geometric_median: naive references, SciPy, optimality, properties."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import robustagg
from robustagg.testing.naive_rules import (
    naive_bulyan,
    naive_geometric_median,
    naive_krum,
    naive_krum_scores,
    naive_multi_krum,
)


@st.composite
def matrices(draw, n_min=3, n_max=13, d_max=10):
    n = draw(st.integers(n_min, n_max))
    d = draw(st.integers(1, d_max))
    dtype = draw(st.sampled_from([np.float32, np.float64]))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    kind = draw(st.sampled_from(["normal", "ints", "dups", "offset"]))
    if kind == "ints":  # ties in distances and scores
        G = rng.integers(-2, 3, size=(n, d)).astype(dtype)
    else:
        G = rng.normal(size=(n, d))
        if kind == "offset":
            G = G * 1e-2 + 1e3
        if kind == "dups":
            G[rng.integers(0, n, size=n // 2 + 1)] = G[rng.integers(0, n)]
        G = G.astype(dtype)
    return G


def _stol(G):
    """Documented accuracy of the squared distances: ~3e-5 (float32 input), ~1e-9 (float64)."""
    return 3e-5 if G.dtype == np.float32 else 1e-9


def _krum_f(data, n):
    return data.draw(st.integers(0, (n - 3) // 2))


# ------------------------------------------------------------------------------ Krum / Multi-Krum


@given(matrices(), st.data())
def test_krum_matches_naive(G, data):
    n = G.shape[0]
    f = _krum_f(data, n)
    out, info = robustagg.krum(G, f, return_info=True)
    ref_scores = naive_krum_scores(G, f)
    tol = _stol(G)
    np.testing.assert_allclose(info.scores, ref_scores, rtol=tol, atol=1e-12)
    ref, idx = naive_krum(G, f)
    # ties resolved at the lowest index (scores computed to rounding: compare values)
    assert out.dtype == G.dtype
    if np.sum(np.isclose(ref_scores, ref_scores.min(), rtol=4 * tol, atol=0)) == 1:
        assert info.selected == idx
    np.testing.assert_array_equal(out, G[info.selected])
    assert np.isclose(ref_scores[info.selected], ref_scores.min(), rtol=4 * tol, atol=1e-12)
    assert info.kept.sum() == 1 and info.kept[info.selected] and info.neighbors == n - f - 2


def test_krum_ties_go_to_lowest_index():
    G = np.array([[0.0], [1.0], [2.0], [3.0], [4.0]])  # scores symmetric: rows 1 and 3 tie
    out, info = robustagg.krum(G, 1, return_info=True)
    assert info.scores[1] == info.scores[3] and info.selected == 1
    np.testing.assert_array_equal(out, [1.0])
    G = np.ones((5, 3))
    assert robustagg.krum(G, 1, return_info=True)[1].selected == 0


@given(matrices(), st.data())
def test_krum_neighbors_option(G, data):
    n = G.shape[0]
    f = _krum_f(data, n)
    k = data.draw(st.integers(1, n - 1))
    _, info = robustagg.krum(G, f, neighbors=k, return_info=True)
    np.testing.assert_allclose(info.scores, naive_krum_scores(G, f, neighbors=k), rtol=_stol(G), atol=1e-12)
    assert info.neighbors == k


@given(matrices(), st.data())
def test_multi_krum_matches_naive(G, data):
    n = G.shape[0]
    f = _krum_f(data, n)
    m = data.draw(st.one_of(st.none(), st.integers(1, n)))
    out, info = robustagg.multi_krum(G, f, m, return_info=True)
    ref, order = naive_multi_krum(G, f, m)
    m_eff = n - f if m is None else m
    assert info.kept.sum() == m_eff and info.m == m_eff
    scores = naive_krum_scores(G, f)
    # the selected set has the m lowest scores (up to ties in rounding)
    chosen = np.sort(scores[info.kept])
    np.testing.assert_allclose(chosen, np.sort(scores)[:m_eff], rtol=4 * _stol(G), atol=1e-12)
    if len(np.unique(np.round(scores, 3))) == n:  # no near-ties: the same set exactly
        assert set(np.flatnonzero(info.kept)) == set(order)
        tol = 1e-6 if G.dtype == np.float32 else 1e-12
        np.testing.assert_allclose(out, ref, rtol=tol, atol=tol)


def test_multi_krum_m1_is_krum_and_default_m():
    G = np.random.default_rng(1).normal(size=(9, 6))
    np.testing.assert_array_equal(robustagg.multi_krum(G, 2, 1), robustagg.krum(G, 2))
    _, info = robustagg.multi_krum(G, 2, return_info=True)
    assert info.m == 7


# ------------------------------------------------------------------------------ Bulyan


@given(matrices(n_min=3, n_max=15), st.data())
def test_bulyan_matches_naive(G, data):
    n = G.shape[0]
    f = data.draw(st.integers(0, (n - 3) // 4))
    out, info = robustagg.bulyan(G, f, return_info=True)
    ref, selected = naive_bulyan(G, f)
    assert out.dtype == G.dtype and info.theta == n - 2 * f and info.beta == n - 4 * f
    if len(np.unique(G, axis=0)) == n and G.dtype == np.float64 and not np.all(G == np.round(G)):
        assert list(info.selected) == selected
    if list(info.selected) == selected:
        tol = 1e-6 if G.dtype == np.float32 else 1e-12
        np.testing.assert_allclose(out, ref, rtol=tol, atol=tol * max(1, np.abs(G).max()))


def test_bulyan_f0_selects_everyone_and_averages_all():
    G = np.random.default_rng(2).normal(size=(5, 8))
    out, info = robustagg.bulyan(G, 0, return_info=True)
    assert info.kept.all() and info.theta == 5 and info.beta == 5
    np.testing.assert_allclose(out, G.mean(axis=0), rtol=1e-12)


# ------------------------------------------------------------------------------ geometric median


def _subgradient_residual(z, X, w):
    """Optimality of z for sum_i w_i ||x_i - z||: 0 when z is no data point; at a data point
    x_k the norm of the other terms' unit-vector sum must be at most w_k."""
    diff = z - X
    dist = np.linalg.norm(diff, axis=1)
    scale = np.linalg.norm(X - X.mean(axis=0), axis=1).max()
    at = dist <= 1e-7 * max(scale, 1e-300)
    g = (w[~at, None] * diff[~at] / dist[~at, None]).sum(axis=0)
    return max(np.linalg.norm(g) - w[at].sum(), 0.0) / w.sum()


def test_fermat_point_of_the_triangle():
    X = np.array([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0]])
    z, info = robustagg.geometric_median(X, return_info=True)
    fermat = (3 - np.sqrt(3)) / 6
    np.testing.assert_allclose(z, [fermat, fermat], atol=1e-6)
    assert info.converged and info.iterations < 100
    np.testing.assert_allclose(
        info.objective, np.linalg.norm(X - [fermat, fermat], axis=1).sum() / 3, rtol=1e-12
    )
    z32 = robustagg.geometric_median(X.astype(np.float32))
    assert z32.dtype == np.float32
    np.testing.assert_allclose(z32, [fermat, fermat], atol=1e-6)


@settings(max_examples=15)
@given(matrices(n_min=1, n_max=12, d_max=8))
def test_geometric_median_optimality_condition(G):
    z, info = robustagg.geometric_median(G.astype(np.float64), return_info=True)
    X = G.astype(np.float64)
    w = np.ones(len(X))
    if info.converged:
        assert _subgradient_residual(z, X, w) < 1e-4
    ref, _ = naive_geometric_median(X)
    np.testing.assert_allclose(z, ref, rtol=1e-7, atol=1e-7 * (1 + np.abs(X).max()))


def test_geometric_median_robust_to_outliers_and_at_majority_point():
    X = np.zeros((7, 4))
    X[:2] = 1e6
    z, info = robustagg.geometric_median(X, return_info=True)
    # a data point satisfying the subgradient condition, reached up to the smoothing (eps relative to the scale)
    np.testing.assert_allclose(z, 0.0, atol=1e-8 * 1e6)
    assert _subgradient_residual(z, X, np.ones(7)) == 0.0


def test_geometric_median_weights():
    rng = np.random.default_rng(3)
    X = rng.normal(size=(6, 5))
    w = rng.uniform(0.1, 2.0, size=6)
    z = robustagg.geometric_median(X, weights=w)
    assert _subgradient_residual(z, X, w) < 1e-5
    np.testing.assert_allclose(z, naive_geometric_median(X, w)[0], rtol=1e-8, atol=1e-8)
    # integer weights = repeated rows
    wi = np.array([1, 2, 1, 3, 1, 1])
    np.testing.assert_allclose(
        robustagg.geometric_median(X, weights=wi),
        robustagg.geometric_median(np.repeat(X, wi, axis=0)),
        atol=1e-6,
    )
    # zero weight = row absent
    w0 = np.array([1.0, 1, 0, 1, 1, 1])
    z0, info = robustagg.geometric_median(X, weights=w0, return_info=True)
    np.testing.assert_allclose(z0, robustagg.geometric_median(np.delete(X, 2, axis=0)), atol=1e-7)
    assert not info.kept[2] and info.weights[2] == 0


def test_geometric_median_identical_rows_and_maxiter():
    X = np.tile(np.arange(4.0), (5, 1))
    z, info = robustagg.geometric_median(X, return_info=True)
    np.testing.assert_allclose(z, X[0], rtol=1e-15, atol=0)  # the mean, up to its rounding
    assert info.converged
    X = np.random.default_rng(4).normal(size=(8, 3))
    z, info = robustagg.geometric_median(X, maxiter=1, return_info=True)
    assert info.iterations == 1 and not info.converged


# ------------------------------------------------------------------------------ properties


def _rules(n):
    f = (n - 3) // 4
    return {
        "krum": lambda G: robustagg.krum(G, f),
        "multi_krum": lambda G: robustagg.multi_krum(G, f),
        "bulyan": lambda G: robustagg.bulyan(G, f),
        "geometric_median": lambda G: robustagg.geometric_median(G),
    }


NAMES = ["krum", "multi_krum", "bulyan", "geometric_median"]


@pytest.mark.parametrize("name", NAMES)
@settings(max_examples=15)
@given(G=matrices(n_min=7, n_max=12), seed=st.integers(0, 2**32 - 1))
def test_permutation_invariance(name, G, seed):
    G = G.astype(np.float64)
    rule = _rules(G.shape[0])[name]
    if name == "bulyan":
        # with f <= 2 the last Krum steps use 1 neighbour, where the two rows of the closest pair
        # always tie (lowest index wins, by the rule's convention): use f = 3, n >= 15 and
        # distinct rows so that no step ties
        G = np.random.default_rng(seed).normal(size=(15 + seed % 3, G.shape[1]))
        rule = lambda X: robustagg.bulyan(X, 3)  # noqa: E731
    perm = np.random.default_rng(seed).permutation(G.shape[0])
    a, b = rule(G), rule(G[perm])
    if name == "krum":  # with tied scores the lowest index wins: compare scores of the values
        f = (G.shape[0] - 3) // 4
        s = naive_krum_scores(G, f)
        ia = int(np.flatnonzero((G == a).all(axis=1))[0])
        ib = int(np.flatnonzero((G == b).all(axis=1))[0])
        np.testing.assert_allclose(s[ia], s[ib], rtol=1e-9, atol=1e-12)
    elif len(np.unique(G, axis=0)) == G.shape[0] and not np.all(G == np.round(G)):
        np.testing.assert_allclose(a, b, rtol=1e-7, atol=1e-7 * (1 + np.abs(G).max()))


@pytest.mark.parametrize("name", NAMES)
@settings(max_examples=15)
@given(G=matrices(n_min=7, n_max=12), shift=st.floats(-1e3, 1e3))
def test_translation_equivariance(name, G, shift):
    G = G.astype(np.float64)
    if len(np.unique(G, axis=0)) < G.shape[0] or np.all(G == np.round(G)):
        G = G + np.random.default_rng(0).normal(size=G.shape) * 1e-3  # avoid exact score ties
    rule = _rules(G.shape[0])[name]
    t = np.linspace(-1, 1, G.shape[1]) * shift
    scale = 1 + np.abs(G).max() + abs(shift)
    np.testing.assert_allclose(rule(G + t), rule(G) + t, rtol=1e-7, atol=1e-7 * scale)


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_no_mutation_read_only_dtype(name, dtype):
    G = np.random.default_rng(5).normal(size=(11, 9)).astype(dtype)
    G[4, 2] = np.nan
    ro = G.copy()
    ro.setflags(write=False)
    before = ro.copy()
    out = _rules(11)[name](ro)
    np.testing.assert_array_equal(ro, before)
    assert out.dtype == dtype and out.shape == (9,) and np.all(np.isfinite(out))


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("value", [np.nan, np.inf, -np.inf])
def test_finite_output_with_f_nonfinite_rows(name, value):
    n = 11
    f = (n - 3) // 4  # 2
    rng = np.random.default_rng(6)
    G = rng.normal(size=(n, 7))
    G[3, 1] = value
    G[8] = value
    out, info = {
        "krum": lambda: robustagg.krum(G, f, return_info=True),
        "multi_krum": lambda: robustagg.multi_krum(G, f, return_info=True),
        "bulyan": lambda: robustagg.bulyan(G, f, return_info=True),
        "geometric_median": lambda: robustagg.geometric_median(G, return_info=True),
    }[name]()
    assert np.all(np.isfinite(out))
    assert info.nonfinite[[3, 8]].all() and not info.kept[[3, 8]].any()


def test_nonfinite_rows_count_against_f_and_match_reference_on_finite_rows():
    rng = np.random.default_rng(7)
    G = rng.normal(size=(11, 6))
    G[0] = np.inf
    finite = G[1:]
    out, info = robustagg.krum(G, 2, return_info=True)  # runs with n' = 10, f' = 1
    ref, idx = naive_krum(finite, 1)
    np.testing.assert_array_equal(out, ref)
    assert info.selected == idx + 1 and info.neighbors == 10 - 1 - 2
    assert np.isnan(info.scores[0])
    ref_b, _ = naive_bulyan(finite, 1)
    np.testing.assert_allclose(robustagg.bulyan(G, 2), ref_b, rtol=1e-12)
    np.testing.assert_allclose(robustagg.multi_krum(G, 2), naive_multi_krum(finite, 1)[0], rtol=1e-12)


def test_few_finite_rows_left():
    G = np.array([[1.0, 2.0], [np.nan, 0.0], [np.inf, 1.0], [np.nan, np.nan], [5.0, 6.0]])
    # n = 5, f = 1; 3 non-finite rows (beyond the threat model): 2 finite rows remain
    out, info = robustagg.krum(G, 1, return_info=True)
    np.testing.assert_array_equal(out, [1.0, 2.0])  # equal scores: lowest index
    assert info.neighbors == 1
    np.testing.assert_allclose(robustagg.multi_krum(G, 1), [3.0, 4.0])
    one = np.array([[1.0, 2.0], [np.nan, 0.0], [np.inf, 1.0]])
    np.testing.assert_array_equal(robustagg.krum(one, 0), [1.0, 2.0])
    np.testing.assert_array_equal(robustagg.geometric_median(one), [1.0, 2.0])
    G7 = np.vstack([np.full((6, 2), np.nan), [[3.0, 4.0]]])
    np.testing.assert_array_equal(robustagg.bulyan(G7, 1), [3.0, 4.0])


@pytest.mark.parametrize("name", NAMES)
def test_torch_in_torch_out(name):
    torch = pytest.importorskip("torch")
    G = np.random.default_rng(8).normal(size=(11, 5)).astype(np.float32)
    rule = _rules(11)[name]
    out = rule(torch.from_numpy(G))
    assert isinstance(out, torch.Tensor) and out.dtype == torch.float32
    np.testing.assert_allclose(out.numpy(), rule(G), rtol=0)


def test_validation_errors():
    G = np.random.default_rng(9).normal(size=(6, 3))
    with pytest.raises(ValueError, match=r"krum: needs n >= 2f \+ 3 .*n=6, f=2.*at most 1"):
        robustagg.krum(G, 2)
    with pytest.raises(ValueError, match=r"multi_krum: needs n >= 2f \+ 3 .*n=6, f=2"):
        robustagg.multi_krum(G, 2)
    with pytest.raises(ValueError, match=r"bulyan: needs n >= 4f \+ 3 .*n=6, f=1.*at most 0"):
        robustagg.bulyan(G, 1)
    with pytest.raises(ValueError, match=r"krum: needs n >= 2f \+ 3 .*n=2, f=0.*none"):
        robustagg.krum(G[:2], 0)
    with pytest.raises(TypeError, match=r"krum: argument 'f' must be an integer"):
        robustagg.krum(G, 1.5)
    with pytest.raises(ValueError, match=r"krum: argument 'f' must be >= 0"):
        robustagg.krum(G, -1)
    with pytest.raises(ValueError, match=r"krum: argument 'neighbors' must be <= 5, got 6"):
        robustagg.krum(G, 1, neighbors=6)
    with pytest.raises(ValueError, match=r"krum: argument 'neighbors' must be >= 1, got 0"):
        robustagg.krum(G, 1, neighbors=0)
    with pytest.raises(ValueError, match=r"multi_krum: argument 'm' must be <= 6, got 7"):
        robustagg.multi_krum(G, 1, 7)
    with pytest.raises(ValueError, match=r"multi_krum: argument 'm' must be >= 1, got 0"):
        robustagg.multi_krum(G, 1, 0)
    with pytest.raises(ValueError, match=r"geometric_median: argument 'tol' must be in \(0.0, 1.0\)"):
        robustagg.geometric_median(G, tol=0.0)
    with pytest.raises(ValueError, match=r"geometric_median: argument 'maxiter' must be >= 1"):
        robustagg.geometric_median(G, maxiter=0)
    with pytest.raises(ValueError, match=r"geometric_median: argument 'eps' must be in \(0.0, inf\)"):
        robustagg.geometric_median(G, eps=-1.0)
    with pytest.raises(
        ValueError, match=r"geometric_median: argument 'weights' must have length n = 6, got 5"
    ):
        robustagg.geometric_median(G, weights=np.ones(5))
    with pytest.raises(
        ValueError, match=r"geometric_median: argument 'weights' must be finite and non-negative"
    ):
        robustagg.geometric_median(G, weights=-np.ones(6))
    with pytest.raises(ValueError, match=r"geometric_median: argument 'weights' must have a positive sum"):
        robustagg.geometric_median(G, weights=np.zeros(6))
    with pytest.raises(ValueError, match=r"bulyan: every row"):
        robustagg.bulyan(np.full((7, 2), np.inf), 1)
