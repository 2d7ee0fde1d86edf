"""The fused scan-and-gather kernel of DnC against NumPy."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from robustagg import kernels


@pytest.mark.slow
@settings(max_examples=40)
@given(
    n=st.integers(1, 6),
    d=st.integers(1, 20_000),
    T=st.integers(1, 4),
    seed=st.integers(0, 2**32 - 1),
    dtype=st.sampled_from([np.float32, np.float64]),
)
def test_nonfinite_rows_and_gather_matches_numpy(n, d, T, seed, dtype):
    rng = np.random.default_rng(seed)
    G = rng.standard_normal((n, d)).astype(dtype)
    for i in range(n):  # some rows get a NaN or an Inf somewhere (often outside the samples)
        if rng.random() < 0.4:
            G[i, rng.integers(d)] = rng.choice([np.nan, np.inf, -np.inf])
    b = int(rng.integers(1, d + 1))
    coords = np.stack([np.sort(rng.choice(d, size=b, replace=False)) for _ in range(T)])
    bad, subs = kernels.nonfinite_rows_and_gather(G, coords)
    np.testing.assert_array_equal(bad, ~np.isfinite(G).all(axis=1))
    assert subs.dtype == G.dtype and subs.shape == (T, n, b)
    for t in range(T):
        np.testing.assert_array_equal(subs[t], G[:, coords[t]])


def test_gather_columns_matches_numpy():
    rng = np.random.default_rng(3)
    G = rng.standard_normal((9, 500)).astype(np.float32)
    rows = np.array([0, 2, 3, 8], dtype=np.int64)
    coords = np.sort(rng.choice(500, size=37, replace=False))
    out = kernels.gather_columns(G, rows, coords)
    assert out.dtype == np.float64
    np.testing.assert_array_equal(out, G[rows][:, coords].astype(np.float64))


@pytest.fixture(params=["fused", "per-round"])
def dnc_path(request, monkeypatch):
    """Both DnC sampling paths: every round gathered in the scan pass, or scan then one
    gather per round."""
    from robustagg.rules import spectral

    monkeypatch.setattr(spectral, "_FUSE_RATIO", 0 if request.param == "fused" else 10**9)
    return request.param


def test_dnc_paths_agree(monkeypatch):
    import robustagg
    from robustagg.rules import spectral

    rng = np.random.default_rng(5)
    G = rng.standard_normal((15, 400)).astype(np.float32)
    G[4, 17] = np.inf
    outs = []
    for ratio in (0, 10**9):
        monkeypatch.setattr(spectral, "_FUSE_RATIO", ratio)
        out, info = robustagg.dnc(G, 3, b=30, rng=2, return_info=True)
        outs.append((out, info.kept, info.scores))
    np.testing.assert_array_equal(outs[0][0], outs[1][0])
    np.testing.assert_array_equal(outs[0][1], outs[1][1])
    np.testing.assert_array_equal(outs[0][2], outs[1][2])


@pytest.mark.parametrize("where", ["sampled", "unsampled"])
def test_dnc_excludes_a_nan_row_wherever_the_nan_is(where, dnc_path):
    """A NaN outside every sampled coordinate must still exclude the row (and count against f)."""
    import robustagg

    rng = np.random.default_rng(0)
    G = rng.standard_normal((12, 300))
    _, info = robustagg.dnc(G, 2, b=20, rng=1, return_info=True)
    coords = set()
    gen = np.random.default_rng(1)
    for _ in range(5):
        coords |= set(np.sort(gen.choice(300, size=20, replace=False)).tolist())
    j = min(coords) if where == "sampled" else min(set(range(300)) - coords)
    H = G.copy()
    H[3, j] = np.nan
    out, info = robustagg.dnc(H, 2, b=20, rng=1, return_info=True)
    assert info.nonfinite[3] and not info.kept[3]
    ref = robustagg.dnc(np.delete(G, 3, axis=0), 1, b=20, rng=1)
    np.testing.assert_array_equal(out, ref)


@settings(max_examples=30)
@given(
    n=st.integers(2, 13),
    d=st.integers(1, 3000),
    seed=st.integers(0, 2**32 - 1),
    dtype=st.sampled_from([np.float32, np.float64]),
    offset=st.sampled_from([0.0, 1e4]),
)
def test_column_mean_std_matches_numpy(n, d, seed, dtype, offset):
    """The attacks' coordinate-wise statistics (one read of G) against NumPy's two-pass
    mean/std, including a large common offset where a one-pass formula would cancel."""
    rng = np.random.default_rng(seed)
    G = (offset + rng.standard_normal((n, d))).astype(dtype)
    rows = np.sort(rng.choice(n, size=int(rng.integers(2, n + 1)), replace=False)).astype(np.int64)
    mu, sd = kernels.column_mean_std(G, rows, 1)
    X = G[rows].astype(np.float64)
    np.testing.assert_allclose(mu, X.mean(axis=0), rtol=1e-13, atol=0)
    np.testing.assert_allclose(sd, X.std(axis=0, ddof=1), rtol=1e-9, atol=1e-12)


def test_dnc_float32_gram_path_matches_float64_scores(monkeypatch):
    """From _BLAS_THREADED_ROWS rows on, float32 input takes the SGEMM Gram (float32 blocks,
    float64 sums): its scores agree with the float64 Gram's to ~1e-6 and select the same rows."""
    import robustagg
    from robustagg.rules import spectral

    rng = np.random.default_rng(11)
    n, d = 300, 6000
    G = (rng.standard_normal((n, d)) + 0.3 * rng.standard_normal(d)).astype(np.float32)
    G[:60] += 0.5  # a shifted group, so the top direction is well defined
    _, single = robustagg.dnc(G, 60, b=3000, rng=4, return_info=True)
    monkeypatch.setattr(spectral, "_BLAS_THREADED_ROWS", n + 1)  # the float64 Gram
    _, double = robustagg.dnc(G, 60, b=3000, rng=4, return_info=True)
    assert not np.array_equal(single.scores, double.scores)  # the paths really differ
    np.testing.assert_allclose(single.scores, double.scores, rtol=1e-4, atol=1e-6 * double.scores.max())
    np.testing.assert_array_equal(single.kept, double.kept)
