"""The register-tiled float32 Gram kernel against a float64 product (the oracle)."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from robustagg.kernels import _gram as K
from robustagg.kernels import _gramtile as T


def _reference(X, rows, j0, j1):
    Y = X[rows, j0:j1].astype(np.float64)
    return Y @ Y.T


def _tile(X, rows, j0, j1, kb=None):
    rows = np.ascontiguousarray(rows, dtype=np.int64)
    out = np.zeros((rows.size, rows.size))
    kb = T.block_columns(rows.size) if kb is None else kb
    return T.tile_gram_f32(X, rows, j0, j1, kb, out)


def _check_upper(got, ref, X, rows, j0, j1):
    iu = np.triu_indices(rows.size)
    Y = np.abs(X[rows, j0:j1].astype(np.float64))
    scale = Y @ Y.T  # |x| . |y|: the bound of a float32 dot product's rounding error
    err = np.abs(got - ref)[iu]
    assert np.all(err <= 1e-5 * scale[iu] + 1e-30), float(np.max(err / (scale[iu] + 1e-30)))
    il = np.tril_indices(rows.size, -1)
    assert np.all(got[il] == 0.0)  # the lower triangle is left alone


@pytest.mark.slow
@pytest.mark.parametrize("m", [1, 2, 3, 4, 5, 7, 11, 12, 13, 50, 64, 127, 128])
@pytest.mark.parametrize("d", [0, 1, 7, 8, 9, 255, 4095, 4096, 4097, 9001])
def test_upper_triangle_matches_float64(m, d):
    rng = np.random.default_rng(m * 10007 + d)
    X = rng.standard_normal((m, d)).astype(np.float32)
    rows = np.arange(m)
    _check_upper(_tile(X, rows, 0, d), _reference(X, rows, 0, d), X, rows, 0, d)


@settings(max_examples=40)
@given(
    m=st.integers(1, 20),
    extra=st.integers(0, 6),
    d=st.integers(1, 3000),
    data=st.data(),
)
def test_any_rows_column_range_block_width_and_row_stride(m, extra, d, data):
    """Rows in any order (repeats allowed) of a matrix with padded rows, any column range,
    any block width that is a multiple of 8: the kernel reads G in place."""
    n = m + extra
    rng = np.random.default_rng(data.draw(st.integers(0, 2**31)))
    big = rng.standard_normal((n, d + 13)).astype(np.float32) * np.float32(
        data.draw(st.sampled_from([1e-3, 1.0, 1e3]))
    )
    X = big[:, 5 : 5 + d]  # row stride larger than the row: not C-contiguous
    rows = np.array(data.draw(st.lists(st.integers(0, n - 1), min_size=m, max_size=m)), dtype=np.int64)
    j0 = data.draw(st.integers(0, d - 1))
    j1 = data.draw(st.integers(j0, d))
    kb = 8 * data.draw(st.integers(1, 64))
    before = X.copy()
    got = _tile(X, rows, j0, j1, kb)
    assert np.array_equal(X, before)
    _check_upper(got, _reference(X, rows, j0, j1), X, rows, j0, j1)


def test_accumulates_into_out_and_propagates_nonfinite():
    rng = np.random.default_rng(3)
    X = rng.standard_normal((9, 1000)).astype(np.float32)
    rows = np.arange(9)
    out = np.full((9, 9), 2.0)
    T.tile_gram_f32(X, rows, 0, 1000, T.block_columns(9), out)
    ref = _reference(X, rows, 0, 1000) + 2.0
    iu = np.triu_indices(9)
    assert np.allclose(out[iu], ref[iu], rtol=1e-5)
    X[4, 517] = np.nan
    X[7, 3] = np.inf
    got = _tile(X, rows, 0, 1000)
    assert np.isnan(got[4, 4]) and np.isinf(got[7, 7]) and np.isnan(got[4, 7])
    assert np.isfinite(got[0, 1]) and np.isfinite(got[5, 8])


@pytest.mark.slow
def test_gram_stage_agrees_with_the_blas_path(monkeypatch):
    """The Gram stage for float32 rows (in place and shifted by a row) gives the same Gram as
    the BLAS blocks it replaces, to float32 rounding."""
    rng = np.random.default_rng(5)
    G = (rng.standard_normal((40, 20011)) + 3.0).astype(np.float32)
    rows = np.arange(40)
    sub = np.array([3, 1, 4, 15, 9, 26, 5, 35, 8, 39], dtype=np.int64)
    H = np.asfortranarray(G)  # column stride != 1: blocks are gathered first
    calls = [
        lambda: K.gram(G, rows, -1),
        lambda: K.gram(G, rows, 7),
        lambda: K.gram(G, sub, 1),
        lambda: K.gram(G, sub, -1),
        lambda: K.gram(H, sub, -1),
        lambda: K.gram(G, rows, -1, threads=1),
    ]
    tiled = [c() for c in calls]
    assert np.array_equal(tiled[0], tiled[-1])  # the thread count does not change the bits
    monkeypatch.setattr(K, "TILED_GRAM_MAX_ROWS", 0)  # the switch as _gram reads it
    blas = [c() for c in calls]
    for a, b in zip(tiled, blas, strict=True):
        assert np.array_equal(a, a.T)
        scale = np.sqrt(np.outer(np.diag(b), np.diag(b)))
        assert np.all(np.abs(a - b) <= 1e-5 * scale)


@pytest.mark.parametrize("ref", [-1, 3])
def test_pool_path_of_a_forked_child_gives_the_same_bits(monkeypatch, ref):
    """In a child forked from a process running GNU OpenMP the tiled chunks run on the Python
    pool instead of Numba's threads: the same partials added in the same order."""
    rng = np.random.default_rng(8)
    G = rng.standard_normal((23, 70001)).astype(np.float32)
    rows = np.arange(23)
    numba_threads = [K.gram(G, rows, ref, threads=t) for t in (1, 2)]
    monkeypatch.setattr(K, "numba_threads_usable", lambda: False)
    pool = [K.gram(G, rows, ref, threads=t) for t in (1, 2)]
    for a in numba_threads + pool[1:]:
        assert np.array_equal(a, pool[0])


def test_refuses_a_strided_matrix_and_a_bad_block_width():
    X = np.ones((4, 64), dtype=np.float32)
    with pytest.raises(ValueError, match="unit column stride"):
        _tile(X[:, ::2], np.arange(4), 0, 32)
    with pytest.raises(ValueError, match="multiple of 8"):
        _tile(X, np.arange(4), 0, 64, kb=12)


def test_reversed_rows_negative_row_stride():
    rng = np.random.default_rng(9)
    X = rng.standard_normal((6, 777)).astype(np.float32)[::-1]
    rows = np.arange(6)
    _check_upper(_tile(X, rows, 0, 777), _reference(X, rows, 0, 777), X, rows, 0, 777)
