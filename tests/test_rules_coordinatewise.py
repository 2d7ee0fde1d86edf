"""median and trimmed_mean: naive references, NumPy/SciPy oracles, properties, validation."""

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from scipy import stats

import robustagg
from robustagg.testing.naive_rules import naive_median, naive_trimmed_mean


@st.composite
def matrices(draw, n_min=1, n_max=15, d_max=12):
    n = draw(st.integers(n_min, n_max))
    d = draw(st.integers(1, d_max))
    dtype = draw(st.sampled_from([np.float32, np.float64]))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    kind = draw(st.sampled_from(["normal", "ints", "dups", "offset"]))
    if kind == "ints":  # many ties
        G = rng.integers(-2, 3, size=(n, d)).astype(dtype)
    else:
        G = rng.normal(size=(n, d)) * draw(st.sampled_from([1e-3, 1.0, 1e4]))
        if kind == "offset":
            G += 1e3
        if kind == "dups":
            G[rng.integers(0, n, size=n // 2 + 1)] = G[rng.integers(0, n)]
        G = G.astype(dtype)
    return G


def _tol(G):
    return (2e-6 if G.dtype == np.float32 else 1e-12), 1e-6 * max(1.0, float(np.abs(G).max()))


@given(matrices())
def test_median_matches_naive_and_numpy(G):
    out = robustagg.median(G)
    assert out.dtype == G.dtype and out.shape == (G.shape[1],)
    rtol, atol = _tol(G)
    np.testing.assert_allclose(out, naive_median(G), rtol=rtol, atol=atol)
    np.testing.assert_allclose(out, np.median(G.astype(np.float64), axis=0), rtol=rtol, atol=atol)


@given(matrices(), st.data())
def test_trimmed_mean_matches_naive(G, data):
    n = G.shape[0]
    f = data.draw(st.integers(0, (n - 1) // 2))
    out = robustagg.trimmed_mean(G, f)
    assert out.dtype == G.dtype
    rtol, atol = _tol(G)
    np.testing.assert_allclose(out, naive_trimmed_mean(G, f), rtol=rtol, atol=atol)


@pytest.mark.parametrize("n, f", [(3, 1), (4, 1), (10, 1), (10, 3), (20, 5), (50, 10), (8, 2)])
def test_trimmed_mean_matches_scipy_trim_mean(n, f):
    assert int(f / n * n) == f  # the proportion is exact: SciPy trims exactly f per side
    G = np.random.default_rng(n * 100 + f).normal(size=(n, 64))
    np.testing.assert_allclose(robustagg.trimmed_mean(G, f), stats.trim_mean(G, f / n, axis=0), rtol=1e-12)


def test_trimmed_mean_f0_is_the_mean_and_max_f_is_the_median():
    G = np.random.default_rng(5).normal(size=(9, 30))
    np.testing.assert_allclose(robustagg.trimmed_mean(G, 0), G.mean(axis=0), rtol=1e-12)
    np.testing.assert_allclose(robustagg.trimmed_mean(G, 4), np.median(G, axis=0), rtol=1e-12)
    G = G[:8]
    np.testing.assert_allclose(robustagg.trimmed_mean(G, 3), np.median(G, axis=0), rtol=1e-12)


RULES = [
    ("median", lambda G, f: robustagg.median(G)),
    ("trimmed_mean", lambda G, f: robustagg.trimmed_mean(G, f)),
]


@pytest.mark.parametrize("name, rule", RULES)
@given(G=matrices(n_min=3), seed=st.integers(0, 2**32 - 1))
def test_permutation_invariance(name, rule, G, seed):
    f = (G.shape[0] - 1) // 2
    perm = np.random.default_rng(seed).permutation(G.shape[0])
    rtol, atol = _tol(G)
    np.testing.assert_allclose(rule(G[perm], f), rule(G, f), rtol=rtol, atol=atol)


@pytest.mark.parametrize("name, rule", RULES)
@given(G=matrices(n_min=3), shift=st.floats(-100, 100))
def test_translation_equivariance(name, rule, G, shift):
    G = G.astype(np.float64)
    f = (G.shape[0] - 1) // 3
    t = np.linspace(-1, 1, G.shape[1]) * shift
    np.testing.assert_allclose(
        rule(G + t, f), rule(G, f) + t, rtol=1e-9, atol=1e-9 * (1 + np.abs(G).max() + abs(shift))
    )


@pytest.mark.parametrize("name, rule", RULES)
@given(G=matrices(n_min=3), data=st.data())
def test_inside_honest_range_with_f_huge_rows(name, rule, G, data):
    n = G.shape[0]
    f = data.draw(st.integers(1, (n - 1) // 2))
    honest = G[f:].astype(np.float64)
    bad = G.copy()
    bad[:f] = data.draw(st.sampled_from([1e30, -1e30])) * np.sign(np.arange(f) - 0.5)[:, None]
    out = rule(bad, f).astype(np.float64)
    assert np.all(out >= honest.min(axis=0) - 1e-6 * np.abs(honest).max()) and np.all(
        out <= honest.max(axis=0) + 1e-6 * np.abs(honest).max()
    )


@pytest.mark.parametrize("name, rule", RULES)
@pytest.mark.parametrize("value", [np.nan, np.inf, -np.inf])
def test_finite_output_with_f_nonfinite_rows(name, rule, value):
    rng = np.random.default_rng(6)
    G = rng.normal(size=(11, 20)).astype(np.float32)
    G[[2, 7], 3] = value
    G[9] = value
    out = rule(G, 3)
    assert np.all(np.isfinite(out)) and out.dtype == np.float32
    finite = np.delete(G, [2, 7, 9], axis=0)
    if name == "median":
        np.testing.assert_allclose(out, np.median(finite, axis=0), rtol=1e-6)
    else:  # 3 non-finite rows count against f = 3: plain mean of the 8 finite rows
        np.testing.assert_allclose(out, finite.astype(np.float64).mean(axis=0), rtol=1e-6)


def test_trimmed_mean_nonfinite_rows_count_against_f():
    G = np.random.default_rng(7).normal(size=(9, 5))
    G[0, 0] = np.nan
    out, info = robustagg.trimmed_mean(G, 3, return_info=True)
    np.testing.assert_allclose(out, naive_trimmed_mean(G[1:], 2), rtol=1e-12)
    assert info.f_effective == 2 and info.nonfinite[0] and not info.kept[0] and info.kept[1:].all()


@pytest.mark.parametrize("name, rule", RULES)
def test_no_mutation_read_only_and_non_contiguous(name, rule):
    G = np.random.default_rng(8).normal(size=(7, 40))
    G[1, 1] = np.inf
    ro = G.copy()
    ro.setflags(write=False)
    before = ro.copy()
    out = rule(ro, 2)
    np.testing.assert_array_equal(ro, before)
    nc = np.asfortranarray(G)[:, ::3]
    np.testing.assert_allclose(rule(nc, 2), rule(np.ascontiguousarray(nc), 2), rtol=0)
    assert out.dtype == np.float64


@pytest.mark.parametrize("name, rule", RULES)
def test_torch_in_torch_out(name, rule):
    torch = pytest.importorskip("torch")
    G = np.random.default_rng(9).normal(size=(7, 13)).astype(np.float32)
    out = rule(torch.from_numpy(G), 2)
    assert isinstance(out, torch.Tensor) and out.dtype == torch.float32
    np.testing.assert_allclose(out.numpy(), rule(G, 2), rtol=0)


def test_validation_errors():
    G = np.ones((6, 3))
    with pytest.raises(ValueError, match=r"trimmed_mean: needs n > 2f .*n=6, f=3.*at most 2"):
        robustagg.trimmed_mean(G, 3)
    with pytest.raises(ValueError, match=r"trimmed_mean: argument 'f' must be >= 0, got -1"):
        robustagg.trimmed_mean(G, -1)
    with pytest.raises(TypeError, match=r"trimmed_mean: argument 'f' must be an integer"):
        robustagg.trimmed_mean(G, 1.0)
    with pytest.raises(TypeError, match=r"trimmed_mean: argument 'f' must be an integer"):
        robustagg.trimmed_mean(G, True)
    assert robustagg.trimmed_mean(G, np.int64(2)).shape == (3,)
    with pytest.raises(ValueError, match=r"median: argument 'grads' must be a \(n, d\) matrix"):
        robustagg.median(np.ones(4))
    with pytest.raises(ValueError, match="median: every row"):
        robustagg.median(np.full((3, 2), np.nan))
    with pytest.raises(ValueError, match=r"median: rows \[1\].*nonfinite='raise'"):
        robustagg.median(np.array([[1.0, 2.0], [np.inf, 0.0], [3.0, 4.0]]), nonfinite="raise")
    with pytest.raises(ValueError, match="median: argument 'nonfinite' must be one of"):
        robustagg.median(G, nonfinite="skip")
    with pytest.raises(TypeError, match="median: argument 'return_info' must be a bool"):
        robustagg.median(G, return_info=1)


def test_single_row_and_single_column():
    np.testing.assert_array_equal(robustagg.median(np.array([[3.0, -1.0]])), [3.0, -1.0])
    np.testing.assert_array_equal(robustagg.trimmed_mean(np.array([[3.0, -1.0]]), 0), [3.0, -1.0])
    np.testing.assert_array_equal(robustagg.median(np.array([[1.0], [5.0]])), [3.0])
