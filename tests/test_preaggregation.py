"""Pre-aggregators (clipping, nnm, bucketing, arc) and their composition with rules."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import robustagg
from robustagg._registry import call_with_supported
from robustagg.testing import naive_field as naive

SETTINGS = settings(max_examples=15)


@st.composite
def scenario(draw, min_n=3, max_n=9):
    n = draw(st.integers(min_n, max_n))
    d = draw(st.integers(1, 6))
    f = draw(st.integers(0, (n - 1) // 2))
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    scale = 10.0 ** draw(st.integers(-3, 3))
    offset = draw(st.sampled_from([0.0, 1.0, -5.0]))
    G = scale * (offset + rng.normal(size=(n, d)))
    return G, f


def _readonly(G):
    G = G.copy()
    G.setflags(write=False)
    return G


# ---------------------------------------------------------------------------------------
# naive references
# ---------------------------------------------------------------------------------------
@SETTINGS
@given(scenario(), st.sampled_from([None, 0.0, 0.5, 3.0]), st.sampled_from([0.0, 0.5, 0.9]))
def test_clipping_matches_naive(case, threshold, quantile):
    G, _ = case
    before = G.copy()
    out = robustagg.clipping(_readonly(G), threshold=threshold, quantile=quantile)
    np.testing.assert_allclose(out, naive.naive_clipping(G, threshold, quantile), rtol=1e-10, atol=1e-12)
    np.testing.assert_array_equal(G, before)


@SETTINGS
@given(scenario())
def test_nnm_matches_naive(case):
    G, f = case
    out = robustagg.nnm(_readonly(G), f)
    np.testing.assert_allclose(out, naive.naive_nnm(G, f), rtol=1e-9, atol=1e-9 * np.abs(G).max())


@SETTINGS
@given(scenario(), st.integers(1, 4), st.integers(0, 1000))
def test_bucketing_matches_naive_and_is_deterministic(case, s, seed):
    G, _ = case
    out, info = robustagg.bucketing(_readonly(G), s=s, rng=seed, return_info=True)
    perm = np.random.default_rng(seed).permutation(len(G))
    np.testing.assert_allclose(
        out, naive.naive_bucketing(G, s, perm), rtol=1e-12, atol=1e-12 * np.abs(G).max()
    )
    again = robustagg.bucketing(G, s=s, rng=np.random.default_rng(seed))
    np.testing.assert_array_equal(out, again)  # same seed, bit-identical
    assert out.shape == (-(-len(G) // s), G.shape[1])
    assert sorted(np.concatenate(info.buckets).tolist()) == list(range(len(G)))


@SETTINGS
@given(scenario())
def test_arc_matches_naive(case):
    G, f = case
    out, info = robustagg.arc(_readonly(G), f, return_info=True)
    np.testing.assert_allclose(out, naive.naive_arc(G, f), rtol=1e-10, atol=1e-12)
    n = len(G)
    assert info.n_clipped == int(np.floor(2 * f * (n - f) / n))
    assert info.clipped.sum() <= info.n_clipped


def test_arc_formula_constant():
    # n = 10, f = 3: floor(2 * 0.3 * 7) = 4 rows clipped to the 5th largest norm
    G = np.diag(np.arange(1.0, 11.0))
    out, info = robustagg.arc(G, 3, return_info=True)
    assert info.n_clipped == 4
    np.testing.assert_allclose(np.linalg.norm(out, axis=1), [1, 2, 3, 4, 5, 6, 6, 6, 6, 6])


# ---------------------------------------------------------------------------------------
# properties
# ---------------------------------------------------------------------------------------
DETERMINISTIC = [
    ("clipping", lambda G, f: robustagg.clipping(G)),
    ("nnm", lambda G, f: robustagg.nnm(G, f)),
    ("arc", lambda G, f: robustagg.arc(G, f)),
]


@pytest.mark.parametrize("name,fn", DETERMINISTIC)
@SETTINGS
@given(case=scenario(), seed=st.integers(0, 2**16))
def test_row_equivariance(name, fn, case, seed):
    """Permuting the input rows permutes the output rows the same way."""
    G, f = case
    perm = np.random.default_rng(seed).permutation(len(G))
    np.testing.assert_allclose(fn(G[perm], f), fn(G, f)[perm], rtol=1e-9, atol=1e-9 * np.abs(G).max())


@pytest.mark.parametrize("name", ["clipping", "nnm", "arc", "bucketing"])
@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_nonfinite_rows_are_dropped(name, bad, rng):
    G = rng.normal(size=(9, 5)).astype(np.float32)
    G[[2, 6], 1] = bad
    fn = robustagg.PREAGGREGATORS[name]
    out = robustagg.pipeline(name, "mean")(G, 2, rng=0)
    assert np.all(np.isfinite(out)) and out.dtype == np.float32
    mat, info = call_with_supported(fn, G, f=2, rng=0, return_info=True)
    assert np.all(np.isfinite(mat)) and mat.dtype == np.float32
    assert info.nonfinite.tolist() == [i in (2, 6) for i in range(9)]
    assert not info.sources[:, [2, 6]].any()
    with pytest.raises(ValueError, match="nonfinite='raise'"):
        call_with_supported(fn, G, f=2, rng=0, nonfinite="raise")


@pytest.mark.parametrize("name", ["clipping", "nnm", "arc", "bucketing"])
def test_dtype_library_and_no_mutation(name, rng):
    fn = robustagg.PREAGGREGATORS[name]
    for dtype in (np.float32, np.float64):
        G = rng.normal(size=(7, 4)).astype(dtype)
        before = G.copy()
        out = call_with_supported(fn, _readonly(G), f=2, rng=1)
        assert out.dtype == dtype and out.ndim == 2 and out.shape[1] == 4
        np.testing.assert_array_equal(G, before)
    torch = pytest.importorskip("torch")
    t = torch.tensor(rng.normal(size=(7, 4)), dtype=torch.float32)
    out = call_with_supported(fn, t, f=2, rng=1)
    assert isinstance(out, torch.Tensor) and out.dtype == torch.float32


def test_validation_messages():
    G = np.ones((5, 3))
    with pytest.raises(ValueError, match=r"nnm: needs n > 2f.*n=5, f=3"):
        robustagg.nnm(G, 3)
    with pytest.raises(ValueError, match=r"arc: needs n > 2f"):
        robustagg.arc(G, 3)
    with pytest.raises(ValueError, match="bucketing: argument 's' must be >= 1"):
        robustagg.bucketing(G, s=0)
    with pytest.raises(TypeError, match="bucketing: argument 's' must be an integer"):
        robustagg.bucketing(G, s=2.0)
    with pytest.raises(ValueError, match="clipping: argument 'threshold'"):
        robustagg.clipping(G, threshold=-1.0)
    with pytest.raises(ValueError, match="clipping: argument 'quantile'"):
        robustagg.clipping(G, quantile=1.5)
    with pytest.raises(TypeError, match="nnm: argument 'f' must be an integer"):
        robustagg.nnm(G, 1.0)


def test_nnm_includes_itself_with_duplicates():
    G = np.array([[0.0], [0.0], [0.0], [10.0], [10.0]])
    out, info = robustagg.nnm(G, 2, return_info=True)
    assert all(info.neighbors[i, 0] == i for i in range(5))
    np.testing.assert_allclose(out[3], [20.0 / 3.0])  # itself, its duplicate, then a zero


# ---------------------------------------------------------------------------------------
# composition
# ---------------------------------------------------------------------------------------
def test_pipeline_equals_manual_composition(rng):
    G = rng.normal(size=(11, 6))
    rule = robustagg.pipeline("nnm", "mean")
    np.testing.assert_allclose(rule(G, 3), robustagg.nnm(G, 3).mean(axis=0), rtol=1e-12)
    np.testing.assert_allclose(robustagg.pipeline("nnm+mean")(G, 3), rule(G, 3), rtol=0)
    two = robustagg.pipeline("clipping", ("bucketing", {"s": 3}), "mda")
    manual = robustagg.mda(robustagg.bucketing(robustagg.clipping(G), s=3, rng=np.random.default_rng(5)), 1)
    np.testing.assert_allclose(two(G, 1, rng=5), manual, rtol=1e-12)


def test_pipeline_diagnostics_trace_rows(rng):
    G = rng.normal(size=(10, 4))
    G[3, 0] = np.nan
    out, info = robustagg.pipeline("clipping", "mda")(G, 2, return_info=True)
    assert info.nonfinite[3] and not info.kept[3]
    finite = np.flatnonzero(~info.nonfinite)
    # clipping maps finite row k to output row k: the kept rows are those MDA kept
    np.testing.assert_array_equal(info.kept[finite], info.steps[1].kept)
    assert info.kept.sum() == 10 - 2  # MDA keeps n' - f' = 9 - 1 rows
    assert len(info.steps) == 2 and info.steps[1].rule == "mda"
    # bucketing: kept rows are the members of the buckets the rule used
    out, info = robustagg.pipeline(("bucketing", {"s": 2}), "mean")(G, 0, rng=1, return_info=True)
    assert info.kept.tolist() == (~info.nonfinite).tolist()


def test_pipeline_registered_by_name_and_errors(rng):
    G = rng.normal(size=(9, 3))
    rule = robustagg.pipeline("arc", "caf", name="arc_then_caf_test")
    robustagg.register_rule("arc_then_caf_test", rule)
    np.testing.assert_allclose(
        robustagg.get_rule("arc_then_caf_test")(G, 2), robustagg.caf(robustagg.arc(G, 2), 2)
    )
    with pytest.raises(ValueError, match="unknown pre-aggregator 'nope'"):
        robustagg.pipeline("nope", "mean")
    with pytest.raises(ValueError, match="unknown rule 'nope'"):
        robustagg.pipeline("nnm", "nope")
    with pytest.raises(ValueError, match="needs n > 2f"):
        rule(G, 5)


def test_pipeline_with_classical_rules(rng):
    G = rng.normal(size=(15, 6))
    G[:3] += 50.0
    np.testing.assert_allclose(
        robustagg.pipeline("nnm", "krum")(G, 3), robustagg.krum(robustagg.nnm(G, 3), 3), rtol=1e-12
    )
    rule = robustagg.pipeline(("bucketing", {"s": 2}), "trimmed_mean")
    manual = robustagg.trimmed_mean(robustagg.bucketing(G, s=2, rng=np.random.default_rng(7)), 3)
    np.testing.assert_allclose(rule(G, 3, rng=7), manual, rtol=1e-12)
    out, info = robustagg.pipeline("arc", "krum")(G, 3, return_info=True)
    assert info.kept.sum() == 1 and not info.kept[:3].any()  # Krum picks one honest row
