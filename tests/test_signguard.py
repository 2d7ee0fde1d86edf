"""SignGuard, SignGuard-Sim and SignGuard-Dist: against the naive reference, options, edge cases,
properties, the stateful wrapper and validation."""

import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from threadpoolctl import threadpool_limits

import robustagg
from robustagg.testing.naive_signguard import naive_signguard

RULES = {"signguard": (robustagg.signguard, None), "signguard_sim": (robustagg.signguard_sim, "cosine"),
         "signguard_dist": (robustagg.signguard_dist, "distance")}  # fmt: skip


@pytest.fixture(autouse=True, scope="module")
def _single_threaded_scikit_learn():
    with threadpool_limits(1):  # scikit-learn's OpenMP spin-waits on a busy machine
        yield


def gradients(seed, n, d, n_flip=0, n_big=0, dtype=np.float64):
    """Honest rows mu + sigma * noise (|mu| < sigma per coordinate, mostly positive mu) plus
    sign-flipped and scaled rows."""
    rng = np.random.default_rng(seed)
    sigma = np.exp(0.5 * rng.standard_normal(d))
    mu = rng.uniform(-0.4, 0.8, d) * sigma
    G = mu + sigma * rng.standard_normal((n, d))
    G[:n_flip] *= -1
    G[n_flip : n_flip + n_big] *= 10
    return G[rng.permutation(n)].astype(dtype)


# --- against the naive reference ------------------------------------------------------------
@settings(max_examples=25)
@given(
    seed=st.integers(0, 2**31),
    n=st.integers(4, 40),
    d=st.integers(300, 2000),
    rule=st.sampled_from(sorted(RULES)),
    with_reference=st.booleans(),
    scaling=st.sampled_from(["none", "max"]),
    window=st.booleans(),
    ablation=st.sampled_from(
        [(True, True, True), (False, True, True), (True, True, False), (True, False, True)]
    ),
    dtype=st.sampled_from([np.float64, np.float32]),
)
def test_matches_naive_reference(seed, n, d, rule, with_reference, scaling, window, ablation, dtype):
    n_flip = seed % (n // 3 + 1)
    G = gradients(seed, n, d, n_flip=n_flip, n_big=1 if n > 6 else 0, dtype=dtype)
    fn, similarity = RULES[rule]
    reference = G[:-1].astype(np.float64).mean(axis=0) if (with_reference and similarity) else None
    kwargs = dict(reference=reference) if similarity else {}
    norm_filter, sign_clustering, clipping = ablation
    out, info = fn(
        G, coordinate_fraction=0.5, coordinates="window" if window else "random", feature_scaling=scaling,
        norm_filter=norm_filter, sign_clustering=sign_clustering, clipping=clipping, rng=seed,
        return_info=True, **kwargs,
    )  # fmt: skip
    coords = info.coordinates if sign_clustering else None
    if sign_clustering and info.bandwidth > 0:
        # a feature distance equal to the bandwidth is decided by rounding (sign fractions
        # live on a 1/k grid, so small n hits such lattice ties): not a comparable case
        F = info.features
        D = np.sqrt(((F[:, None, :] - F[None, :, :]) ** 2).sum(axis=2))
        assume(not np.any(np.abs(D - info.bandwidth) <= 1e-9 * info.bandwidth))
    ref_out, ref_kept, extra = naive_signguard(
        G, coords, similarity=similarity, reference=reference, feature_scaling=scaling,
        norm_filter=norm_filter, sign_clustering=sign_clustering, clipping=clipping,
    )  # fmt: skip
    np.testing.assert_array_equal(info.kept, ref_kept)
    assert out.dtype == dtype
    np.testing.assert_allclose(
        out, ref_out, rtol=1e-5 if dtype == np.float32 else 1e-10, atol=1e-6 if dtype == np.float32 else 1e-12
    )
    assert info.fallback == extra["fallback"]
    np.testing.assert_allclose(info.median_norm, extra["median_norm"], rtol=1e-12)
    if sign_clustering:
        np.testing.assert_allclose(info.features, extra["features"], rtol=1e-12, atol=1e-15)
        np.testing.assert_allclose(info.bandwidth, extra["bandwidth"], rtol=1e-6, atol=1e-7)
        if window:
            np.testing.assert_array_equal(np.diff(info.coordinates), 1)
        assert info.coordinates.size == max(1, round(0.5 * d))


def test_nonfinite_rows_excluded_and_same_as_on_the_finite_rows():
    G = gradients(1, 20, 500, n_flip=4)
    bad = G.copy()
    bad[3, 7] = np.nan
    bad[11] = np.inf
    out, info = robustagg.signguard(bad, rng=5, return_info=True)
    assert np.isfinite(out).all()
    assert info.nonfinite.tolist() == [i in (3, 11) for i in range(20)]
    assert not info.kept[[3, 11]].any() and np.isnan(info.norms[[3, 11]]).all()
    rest = np.delete(G, [3, 11], axis=0)
    ref, info2 = robustagg.signguard(rest, coordinates=info.coordinates, return_info=True)
    np.testing.assert_array_equal(info.kept[~info.nonfinite], info2.kept)
    np.testing.assert_allclose(out, ref, rtol=1e-12)
    with pytest.raises(ValueError, match="nonfinite='raise'"):
        robustagg.signguard(bad, nonfinite="raise")
    # a finite row whose squared norm overflows is non-finite too (docs/conventions.md):
    # excluded and reported like a NaN row
    huge = G.copy()
    huge[0] = 1e200
    out, info = robustagg.signguard(huge, rng=5, return_info=True)
    assert info.nonfinite.tolist() == [i == 0 for i in range(20)] and not info.kept[0]
    assert np.isfinite(out).all()
    with pytest.raises(ValueError, match="every row"):
        robustagg.signguard(np.full((3, 4), np.nan))


# --- edge cases -----------------------------------------------------------------------------
@pytest.mark.parametrize("d", [1, 2, 5, 9])
def test_small_d(d):
    G = gradients(d, 12, d, n_flip=2)
    out, info = robustagg.signguard(G, rng=0, return_info=True)
    assert out.shape == (d,) and np.isfinite(out).all()
    assert info.coordinates.size == 1  # k = max(1, round(0.1 d))
    ref, kept, _ = naive_signguard(G, info.coordinates)
    np.testing.assert_array_equal(info.kept, kept)
    np.testing.assert_allclose(out, ref, rtol=1e-12)


@pytest.mark.parametrize("rule", sorted(RULES))
def test_n_1_2_3(rule):
    fn = RULES[rule][0]
    g = np.array([[1.0, -2.0, 3.0]])
    np.testing.assert_allclose(fn(g, rng=0), g[0])  # one row: itself (min(1, M/|g|) = 1)
    # two rows: M is their mean norm, both ratios in [0.1, 3]; the bandwidth is 0 (n <= 3)
    G2 = np.array([[1.0, 0.0, 0.0], [0.0, -3.0, 0.0]])
    out, info = fn(G2, rng=0, return_info=True)
    assert info.bandwidth == 0.0 and info.kept.all()
    np.testing.assert_allclose(out, (G2[0] + G2[1] * 2.0 / 3.0) / 2)  # M = 2: row 1 clipped to norm 2
    G3 = np.array([[1.0, 1.0], [-1.0, -1.0], [100.0, 100.0]])
    out, info = fn(G3, rng=0, return_info=True)
    assert info.kept.tolist() == [True, True, False]  # ratio 100/sqrt(2)/sqrt(2)... > 3
    np.testing.assert_allclose(out, [0.0, 0.0], atol=1e-15)


@pytest.mark.parametrize("rule", sorted(RULES))
def test_identical_and_zero_gradients(rule):
    fn = RULES[rule][0]
    g = np.linspace(-1, 2, 30)
    out, info = fn(np.tile(g, (8, 1)), rng=0, return_info=True)
    np.testing.assert_allclose(out, g, rtol=1e-12)
    assert info.kept.all() and info.bandwidth == 0.0
    out, info = fn(np.zeros((6, 30)), rng=0, return_info=True)
    np.testing.assert_array_equal(out, 0.0)
    assert info.median_norm == 0.0
    # more than half the rows zero: M = 0, the output is zero whatever the others send
    G = np.zeros((5, 4))
    G[0] = 1e6
    np.testing.assert_array_equal(fn(G, rng=0), 0.0)


def test_empty_intersection_falls_back_to_S1():
    # the largest sign cluster (rows 0-5, 90 % positive) has norms outside [0.1 M, 3 M]; the
    # mostly negative rows 6-8 hold the median norm M = 1 but form the smaller cluster
    rng = np.random.default_rng(0)
    d = 200
    signs = np.where(rng.random((9, d)) < 0.9, 1.0, -1.0)
    signs[6:] *= -1
    G = signs * rng.uniform(0.5, 1.5, (9, d))
    G /= np.linalg.norm(G, axis=1, keepdims=True)
    G[:6] *= np.array([1e-3, 2e-3, 3e-3, 1e3, 2e3, 3e3])[:, None]
    out, info = robustagg.signguard(G, coordinate_fraction=1.0, rng=0, return_info=True)
    assert info.median_norm == pytest.approx(1.0)
    assert info.S2.tolist() == [True] * 6 + [False] * 3
    assert info.S1.tolist() == [False] * 6 + [True] * 3
    assert info.fallback and info.kept.tolist() == info.S1.tolist()
    np.testing.assert_allclose(out, G[6:].mean(axis=0), rtol=1e-12)


# --- options --------------------------------------------------------------------------------
def test_ablation_switches():
    G = gradients(3, 30, 1000, n_flip=5, n_big=2)
    _, full = robustagg.signguard(G, rng=1, return_info=True)
    out, info = robustagg.signguard(G, rng=1, norm_filter=False, return_info=True)
    assert info.S1.all() and info.kept.tolist() == info.S2.tolist()
    out, info = robustagg.signguard(G, rng=1, sign_clustering=False, return_info=True)
    assert info.S2.all() and info.coordinates is None and info.features is None
    assert info.kept.tolist() == full.S1.tolist()
    out, info = robustagg.signguard(G, rng=1, clipping=False, return_info=True)
    np.testing.assert_allclose(out, G[info.kept].mean(axis=0), rtol=1e-12)
    np.testing.assert_array_equal(info.weights[info.kept], 1.0)
    out, info = robustagg.signguard(G, rng=1, return_info=True)
    w = np.minimum(1.0, info.median_norm / np.linalg.norm(G, axis=1))
    np.testing.assert_allclose(info.weights, np.where(info.kept, w, 0.0), rtol=1e-12)
    np.testing.assert_allclose(out, (G * info.weights[:, None]).sum(axis=0) / info.n_kept, rtol=1e-10)


def test_bounds_are_inclusive():
    G = np.array([[1.0, 0.0], [0.0, 1.0], [3.0, 0.0], [0.1, 0.0], [0.0, 3.0 + 1e-9]])  # M = 1
    _, info = robustagg.signguard(G, sign_clustering=False, return_info=True)
    assert info.S1.tolist() == [True, True, True, True, False]
    _, info = robustagg.signguard(G, sign_clustering=False, lower=0.2, upper=10.0, return_info=True)
    assert info.S1.tolist() == [True, True, True, False, True]


def test_swappable_final_averaging():
    G = gradients(4, 25, 400, n_flip=3)
    _, info = robustagg.signguard(G, rng=2, return_info=True)
    clipped = G[info.kept] * info.weights[info.kept][:, None]
    np.testing.assert_allclose(
        robustagg.signguard(G, rng=2, aggregator="median"), np.median(clipped, axis=0), rtol=1e-12
    )
    f = 2
    srt = np.sort(clipped, axis=0)
    np.testing.assert_allclose(
        robustagg.signguard(G, rng=2, aggregator="trimmed_mean", aggregator_options={"f": f}),
        srt[f : len(srt) - f].mean(axis=0), rtol=1e-10,
    )  # fmt: skip
    np.testing.assert_allclose(
        robustagg.signguard(G, rng=2, aggregator=lambda X: X.max(axis=0)), clipped.max(axis=0)
    )


def test_explicit_window_and_scaled_features():
    G = gradients(5, 20, 300, n_flip=3)
    _, info = robustagg.signguard(G, coordinates=np.array([5, 1, 1, 200]), return_info=True)
    np.testing.assert_array_equal(info.coordinates, [1, 5, 200])
    F = np.stack(
        [(G[:, [1, 5, 200]] > 0).mean(1), (G[:, [1, 5, 200]] == 0).mean(1), (G[:, [1, 5, 200]] < 0).mean(1)],
        1,
    )
    np.testing.assert_allclose(info.features, F)
    _, info = robustagg.signguard(G, coordinates="window", coordinate_fraction=0.2, rng=3, return_info=True)
    assert info.coordinates.size == 60 and np.all(np.diff(info.coordinates) == 1)
    _, info = robustagg.signguard(G, feature_scaling="max", rng=3, return_info=True)
    np.testing.assert_allclose(info.features[:, [0, 2]].max(axis=0), 1.0)


def test_kmeans_clustering_option():
    G = gradients(6, 30, 2000)
    flipped = np.arange(30) % 4 == 1
    G[flipped] *= -1
    out, info = robustagg.signguard(G, clustering="kmeans", coordinate_fraction=1.0, rng=0, return_info=True)
    assert info.bandwidth is None and set(np.unique(info.labels)) <= {0, 1}
    np.testing.assert_array_equal(info.S2, ~flipped)
    np.testing.assert_array_equal(info.kept, info.S1 & ~flipped)


def test_similarity_features():
    G = gradients(7, 15, 500, n_flip=3)
    ref = G.mean(axis=0)
    _, info = robustagg.signguard_sim(G, reference=ref, rng=0, return_info=True)
    cos = G @ ref / (np.linalg.norm(G, axis=1) * np.linalg.norm(ref))
    np.testing.assert_allclose(info.similarity, cos, rtol=1e-12)
    med = np.median(cos)
    np.testing.assert_allclose(info.features[:, 3], np.clip(cos, 0, med) / (5 * med), rtol=1e-12)
    _, info = robustagg.signguard_dist(G, rng=0, return_info=True)
    D = np.linalg.norm(G[:, None] - G[None], axis=2)
    med_d = np.array([np.median(np.delete(D[i], i)) for i in range(len(G))])
    np.testing.assert_allclose(info.similarity, med_d, rtol=1e-10)
    np.testing.assert_array_equal(info.features[:, 3], 0.2 * (med_d >= 1.1 * np.median(med_d)))


# --- properties -----------------------------------------------------------------------------
@pytest.mark.slow
@settings(max_examples=20)
@given(
    seed=st.integers(0, 2**31),
    rule=st.sampled_from(sorted(RULES)),
    dtype=st.sampled_from([np.float32, np.float64]),
)
def test_no_mutation_dtype_determinism_finite(seed, rule, dtype):
    fn = RULES[rule][0]
    G = gradients(seed, 12, 200, n_flip=2, dtype=dtype)
    G[seed % 12, 0] = np.nan
    G.setflags(write=False)
    before = G.copy()
    a = fn(G, rng=seed)
    b = fn(G, rng=np.random.default_rng(seed))
    np.testing.assert_array_equal(G, before)
    assert a.dtype == dtype and np.isfinite(a).all()
    np.testing.assert_array_equal(a, b)


def test_torch_in_torch_out():
    torch = pytest.importorskip("torch")
    G = gradients(8, 10, 100, n_flip=2, dtype=np.float32)
    t = torch.tensor(G, requires_grad=True)
    for fn, _ in RULES.values():
        out = fn(t, rng=0)
        assert isinstance(out, torch.Tensor) and out.dtype == torch.float32
        np.testing.assert_allclose(out.numpy(), fn(G, rng=0), rtol=1e-6)
    ref = torch.tensor(G.mean(axis=0))
    assert isinstance(robustagg.signguard_sim(t, reference=ref, rng=0), torch.Tensor)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_stateful_wrapper_keeps_its_own_reference(dtype):
    """Scaling the returned aggregate in place (``agg *= lr``) does not change the reference of
    the next round; the reference is kept in the aggregate's dtype and the second round equals
    the functional call with the aggregate widened to float64."""
    G1 = gradients(4, 20, 300, n_flip=4, dtype=dtype)
    G2 = gradients(5, 20, 300, n_flip=4, dtype=dtype)
    for variant, fn in (("sim", robustagg.signguard_sim), ("dist", robustagg.signguard_dist)):
        agg = robustagg.SignGuard(variant, rng=3)
        out1 = agg(G1)
        kept = out1.copy()
        out1 *= 0.5
        assert agg.previous.dtype == dtype and not np.shares_memory(agg.previous, out1)
        np.testing.assert_array_equal(agg.previous, kept)
        out2 = agg(G2)
        gen = np.random.default_rng(3)
        first = fn(G1, rng=gen)
        np.testing.assert_array_equal(first, kept)
        np.testing.assert_array_equal(out2, fn(G2, reference=first.astype(np.float64), rng=gen))


def test_stateful_wrapper():
    G1 = gradients(9, 20, 300, n_flip=4)
    G2 = gradients(10, 20, 300, n_flip=4)
    agg = robustagg.SignGuard("sim", rng=11)
    out1 = agg(G1)
    out2, info = agg.aggregate(G2, return_info=True)
    gen = np.random.default_rng(11)
    ref1 = robustagg.signguard_sim(G1, rng=gen)
    ref2 = robustagg.signguard_sim(G2, reference=ref1, rng=gen)
    np.testing.assert_array_equal(out1, ref1)
    np.testing.assert_array_equal(out2, ref2)
    np.testing.assert_array_equal(agg.previous, out2)
    agg.reset()
    assert agg.previous is None
    np.testing.assert_array_equal(agg(G1), out1)  # re-seeded
    plain = robustagg.SignGuard(rng=0, upper=2.0)
    np.testing.assert_array_equal(plain(G1), robustagg.signguard(G1, rng=0, upper=2.0))
    with pytest.raises(TypeError, match="unknown option"):
        robustagg.SignGuard(bogus=1)(G1)
    with pytest.raises(ValueError, match="variant"):
        robustagg.SignGuard("cosine")


def test_registered_and_validation_messages():
    for name in RULES:
        assert robustagg.get_rule(name) is RULES[name][0]
    G = gradients(0, 5, 20)
    with pytest.raises(ValueError, match="signguard: argument 'upper' must be in"):
        robustagg.signguard(G, lower=0.5, upper=0.1)
    with pytest.raises(ValueError, match="signguard: argument 'coordinate_fraction'"):
        robustagg.signguard(G, coordinate_fraction=0.0)
    with pytest.raises(ValueError, match="signguard: argument 'clustering' must be one of"):
        robustagg.signguard(G, clustering="dbscan")
    with pytest.raises(ValueError, match="signguard: argument 'coordinates' holds indices outside"):
        robustagg.signguard(G, coordinates=np.array([0, 20]))
    with pytest.raises(TypeError, match="signguard: argument 'clipping' must be a bool"):
        robustagg.signguard(G, clipping=1)
    with pytest.raises(ValueError, match="signguard_sim: argument 'reference' must have length d = 20"):
        robustagg.signguard_sim(G, reference=np.ones(3))
    with pytest.raises(ValueError, match="signguard_dist: argument 'reference' holds NaN"):
        robustagg.signguard_dist(G, reference=np.full(20, np.nan))
