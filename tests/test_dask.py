"""The Dask twins agree with the NumPy rules, on a real LocalCluster (worker processes)."""

from __future__ import annotations

import numpy as np
import pytest

da = pytest.importorskip("dask.array")
distributed = pytest.importorskip("distributed")

import robustagg  # noqa: E402
import robustagg.dask as rdask  # noqa: E402


@pytest.fixture(scope="module")
def client():
    cluster = distributed.LocalCluster(
        n_workers=2,
        threads_per_worker=1,
        processes=True,
        dashboard_address=None,
        env={"NUMBA_NUM_THREADS": "1"},
    )
    c = distributed.Client(cluster)
    yield c
    c.close()
    cluster.close()


def _matrix(dtype, n=13, d=1001, n_byz=3, seed=0):
    rng = np.random.default_rng(seed)
    G = rng.normal(size=(n, d))
    G[:n_byz] = G[:n_byz] * 4.0 + 3.0  # Byzantine rows: shifted and spread
    return G.astype(dtype)


def _require(rule):
    assert rule in robustagg.RULES, f"{rule} is not registered"


COORDINATEWISE = [("mean", {}), ("median", {}), ("trimmed_mean", {"f": 3}), ("meamed", {"f": 3})]
DISTANCE = [
    ("krum", {"f": 3}),
    ("multi_krum", {"f": 3}),
    ("geometric_median", {}),
    ("mda", {"f": 3}),
    ("monna", {"f": 3}),
    ("smea", {"f": 2}),
    ("caf", {"f": 3}),
]


DISTANCE_KIND = rdask.DISTANCE_RULES


@pytest.mark.slow
@pytest.mark.parametrize("rule,kwargs", COORDINATEWISE + DISTANCE)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_dask_equals_numpy(client, rule, kwargs, dtype):
    _require(rule)
    G = _matrix(dtype)
    X = da.from_array(G, chunks=(G.shape[0], 128))
    out, info = rdask.aggregate(X, rule, return_info=True, **kwargs)
    assert isinstance(out, da.Array) and out.chunks[0] == X.chunks[1]
    got = out.compute()
    expected, einfo = robustagg.get_rule(rule)(G, return_info=True, **kwargs)
    assert got.dtype == dtype and got.shape == (G.shape[1],)
    tol = 1e-10 if dtype == np.float64 else 2e-6
    if DISTANCE_KIND.get(rule) == "affine":
        tol = 1e-7 if dtype == np.float64 else 1e-5
    np.testing.assert_allclose(got, expected, rtol=tol, atol=tol)
    np.testing.assert_array_equal(info.kept, einfo.kept)
    np.testing.assert_array_equal(info.nonfinite, einfo.nonfinite)
    assert set(info.keys()) >= set(einfo.keys())
    if "f_effective" in einfo:
        assert info.f_effective == einfo.f_effective
    if "scores" in einfo:
        np.testing.assert_allclose(info.scores, einfo.scores, rtol=1e-8 if dtype == np.float64 else 2e-5)


@pytest.mark.slow
@pytest.mark.parametrize("overflow", [False, True])
@pytest.mark.parametrize("rule,kwargs", COORDINATEWISE + DISTANCE)
def test_dask_nonfinite_rows_as_numpy(client, rule, kwargs, overflow):
    _require(rule)
    G = _matrix(np.float64)
    G[0, 900] = np.nan  # non-finite in one column block only
    G[5, 3] = np.inf
    if overflow:
        # finite in every block of 200 columns, but its squared norm over all 1001 columns is
        # past the validation layer's limit: excluded by both implementations alike
        limit = np.finfo(np.float64).max / (4 * G.shape[0])
        G[7] = np.sqrt(limit / 1001 * 1.5) * np.sign(G[7] + 0.5)
        assert (G[7, :200] ** 2).sum() < limit
    X = da.from_array(G, chunks=(G.shape[0], 200))
    out, info = rdask.aggregate(X, rule, return_info=True, **kwargs)
    expected, einfo = robustagg.get_rule(rule)(G, return_info=True, **kwargs)
    got = out.compute()
    assert np.isfinite(got).all()
    np.testing.assert_allclose(got, expected, rtol=1e-7, atol=1e-9)
    np.testing.assert_array_equal(info.nonfinite, einfo.nonfinite)
    assert info.nonfinite[[0, 5]].all()
    assert info.nonfinite[7] == overflow
    np.testing.assert_array_equal(info.kept, einfo.kept)


@pytest.mark.parametrize("rule,kwargs", [("median", {}), ("krum", {"f": 2})])
def test_dask_row_chunks_and_integers(client, rule, kwargs):
    _require(rule)
    G = np.random.default_rng(1).integers(-50, 50, size=(10, 300))
    X = da.from_array(G, chunks=(5, 70))  # chunked along n too: merged first
    got = rdask.aggregate(X, rule, **kwargs).compute()
    assert got.dtype == np.float64
    np.testing.assert_allclose(got, robustagg.get_rule(rule)(G, **kwargs), rtol=1e-12)


def test_dask_named_functions(client):
    G = _matrix(np.float64)
    X = da.from_array(G, chunks=(G.shape[0], 300))
    np.testing.assert_allclose(rdask.mean(X).compute(), robustagg.mean(G), rtol=1e-12)
    if "krum" in robustagg.RULES:
        np.testing.assert_allclose(rdask.krum(X, 3).compute(), robustagg.krum(G, 3), rtol=1e-12)


def test_dask_lazy_generated_matrix(client):
    """A matrix generated chunk by chunk on the workers, never materialised on the driver."""
    X = da.random.default_rng(3).normal(size=(9, 20_000), chunks=(9, 2_500)).astype(np.float32)
    got = rdask.mean(X).compute()
    np.testing.assert_allclose(got, robustagg.mean(X.compute()), rtol=1e-6, atol=1e-7)


def test_dask_errors():
    G = _matrix(np.float64)
    X = da.from_array(G, chunks=(G.shape[0], 300))
    with pytest.raises(TypeError, match="dask.array"):
        rdask.mean(G)
    with pytest.raises(ValueError, match="'rule'"):
        rdask.aggregate(X, "no_such_rule")
    with pytest.raises(ValueError, match=r"\(n, d\)"):
        rdask.mean(X[0])
    with pytest.raises(TypeError, match="real floating-point"):
        rdask.mean(da.from_array(G > 0))
    with pytest.raises(ValueError, match="NaN or Inf"):
        rdask.mean(da.from_array(np.full((3, 4), np.nan)))
    with pytest.raises(ValueError, match="vector 'reference'"):
        rdask.aggregate(X, "monna", f=2, reference=np.zeros(G.shape[1]))
    if "krum" in robustagg.RULES:
        with pytest.raises(ValueError, match="krum"):
            rdask.krum(X, f=6)  # n = 13 < 2f + 3: the NumPy rule's own message


SIGNGUARD_OPTIONS = [
    {},
    {"clustering": "kmeans"},
    {"aggregator": "median"},
    {"aggregator": "trimmed_mean", "aggregator_options": {"f": 2}},
    {"coordinates": "window", "feature_scaling": "max"},
    {"norm_filter": False, "clipping": False},
    {"sign_clustering": False},
]


@pytest.mark.slow
@pytest.mark.parametrize("options", SIGNGUARD_OPTIONS)
def test_dask_signguard_equals_numpy_same_coordinates(client, options):
    _require("signguard")
    rng = np.random.default_rng(4)
    G = rng.normal(0.2, 1.0, size=(20, 2001)).astype(np.float32)
    G[:4] = -3.0 * G[:4]  # reversed and scaled: caught by norms and signs
    G[6, 1500] = np.nan
    X = da.from_array(G, chunks=(20, 300))
    out, info = rdask.signguard(X, rng=11, return_info=True, **options)
    expected, einfo = robustagg.signguard(G, rng=11, return_info=True, **options)
    got = out.compute()
    assert got.dtype == np.float32
    np.testing.assert_allclose(got, expected, rtol=1e-6, atol=1e-7)
    for key in ("kept", "nonfinite", "S1", "S2", "fallback"):
        np.testing.assert_array_equal(info[key], einfo[key])
    if options.get("sign_clustering", True):
        np.testing.assert_array_equal(info.coordinates, einfo.coordinates)
        np.testing.assert_array_equal(info.labels, einfo.labels)
        np.testing.assert_allclose(info.features, einfo.features, rtol=1e-12)
    np.testing.assert_allclose(info.norms, einfo.norms, rtol=1e-9)
    np.testing.assert_allclose(info.weights, einfo.weights, rtol=1e-9)
    assert info.nonfinite[6] and not info.kept[6]
    if options.get("sign_clustering", True):
        assert not info.kept[:4].any()  # the sign features catch the reversed rows


def test_dask_signguard_through_aggregate_and_zero_median(client):
    _require("signguard")
    G = np.zeros((7, 50))
    G[0] = 1.0
    X = da.from_array(G, chunks=(7, 20))
    out, info = rdask.aggregate(X, "signguard", rng=0, return_info=True)
    expected, einfo = robustagg.signguard(G, rng=0, return_info=True)
    np.testing.assert_array_equal(out.compute(), expected)
    np.testing.assert_array_equal(info.kept, einfo.kept)


def test_dask_signguard_errors():
    _require("signguard")
    X = da.from_array(np.ones((5, 10)), chunks=(5, 5))
    with pytest.raises(ValueError, match="aggregator"):
        rdask.signguard(X, aggregator=np.mean)
    with pytest.raises(ValueError, match="lower|upper"):
        rdask.signguard(X, lower=2.0, upper=1.0)
    with pytest.raises(ValueError, match="coordinates"):
        rdask.signguard(X, coordinates=np.array([3, 40]))


def test_dask_geometric_median_combination(client):
    _require("geometric_median")
    G = _matrix(np.float64)
    X = da.from_array(G, chunks=(G.shape[0], 250))
    out, info = rdask.geometric_median(X, return_info=True)
    np.testing.assert_allclose(info.combination.sum(), 1.0, rtol=1e-12)
    np.testing.assert_allclose(info.combination @ G, out.compute(), rtol=1e-10, atol=1e-12)


@pytest.mark.slow
@pytest.mark.parametrize("rule,kwargs", [("median", {}), ("krum", {"f": 2}), ("signguard", {"rng": 0})])
def test_dask_float16_comes_back_as_float16(client, rule, kwargs):
    G = _matrix(np.float16)
    X = da.from_array(G, chunks=(G.shape[0], 300))
    out = rdask.aggregate(X, rule, **kwargs)
    assert out.dtype == np.float16
    got = out.compute()
    assert got.dtype == np.float16
    expected = robustagg.get_rule(rule)(G, **kwargs)  # the NumPy rule: float32 inside, float16 out
    assert expected.dtype == np.float16
    np.testing.assert_array_equal(got, expected)
