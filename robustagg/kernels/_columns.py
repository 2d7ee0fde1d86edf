"""Column sums and means: per column, linear combinations of rows accumulated in float64.

The mean (``column_mean``; ``column_mean_checked`` also says whether every column sum is
finite), weighted sums (``weighted_column_sum`` float64, ``scaled_column_sum`` rounded once to
G's dtype), the weighted mean, the clipped mean (SignGuard's last step), the coordinate-wise
mean and standard deviation in one read of G (``column_mean_std``, the attacks' statistics),
group means (``group_means``, bucketing) and dense mixing (``mix_rows``, NNM).

Column blocks of ``COLUMN_BLOCK`` run in parallel; every column's sum adds the rows in row
order, so the results do not depend on the thread count.
"""

from __future__ import annotations

import numba as nb
import numpy as np

from .._thresholds import COLUMN_BLOCK, MEAN_STD_BLOCK, MIX_BLOCK_ELEMENTS, MIX_ROWS_F32

__all__ = [
    "clipped_column_mean",
    "column_mean",
    "column_mean_checked",
    "column_mean_std",
    "group_means",
    "mix_rows",
    "scaled_column_sum",
    "weighted_column_mean",
    "weighted_column_sum",
]


@nb.njit(cache=True, parallel=True, nogil=True)
def column_mean_checked(G, rows):
    """Mean over ``rows`` of each column of G (float64 accumulation, returned as G.dtype) and
    whether every column sum is finite (a by-product: the rows are finite, the validation layer
    excluded the others, so the rules do not use it).

    One pass over G. Rows are added four at a time from contiguous row slices (a quarter of the
    accumulator traffic of one at a time).
    """
    n_rows = rows.size
    d = G.shape[1]
    out = np.empty(d, dtype=G.dtype)
    n_blocks = (d + COLUMN_BLOCK - 1) // COLUMN_BLOCK
    # explicit loops outside the parallel loop, no array expressions: in a parallel function
    # each of those (np.zeros, .any()) becomes a parallel loop of its own, compiled and launched
    bad = np.empty(n_blocks, dtype=np.bool_)
    for b in range(n_blocks):
        bad[b] = False
    for b in nb.prange(n_blocks):
        j0 = b * COLUMN_BLOCK
        j1 = min(d, j0 + COLUMN_BLOCK)
        w = j1 - j0
        acc = np.zeros(w, dtype=np.float64)
        r = 0
        while r + 4 <= n_rows:
            s0 = G[rows[r], j0:j1]
            s1 = G[rows[r + 1], j0:j1]
            s2 = G[rows[r + 2], j0:j1]
            s3 = G[rows[r + 3], j0:j1]
            for j in range(w):
                acc[j] += (np.float64(s0[j]) + np.float64(s1[j])) + (np.float64(s2[j]) + np.float64(s3[j]))
            r += 4
        while r < n_rows:
            s0 = G[rows[r], j0:j1]
            for j in range(w):
                acc[j] += s0[j]
            r += 1
        chk = 0.0
        for j in range(w):
            a = acc[j]
            chk += a - a
            out[j0 + j] = a / n_rows
        bad[b] = not (chk == 0.0)
    all_finite = True
    for b in range(n_blocks):
        all_finite &= not bad[b]
    return out, all_finite


@nb.njit(cache=True, nogil=True)
def column_mean(G, rows):
    """Mean over ``rows`` of each column of G, accumulated in float64, returned as G.dtype."""
    return column_mean_checked(G, rows)[0]


@nb.njit(cache=True, nogil=True, inline="always")
def _add_weighted_rows(G, idx, w, j0, j1, acc):
    """``acc[j - j0] += w[r] * G[idx[r], j]`` for every r in order (float64), four rows per
    sweep of the accumulator (the same additions in the same order as one row at a time)."""
    live = idx.size
    r = 0
    while r + 4 <= live:
        i0 = idx[r]
        i1 = idx[r + 1]
        i2 = idx[r + 2]
        i3 = idx[r + 3]
        w0 = w[r]
        w1 = w[r + 1]
        w2 = w[r + 2]
        w3 = w[r + 3]
        for j in range(j0, j1):
            a = acc[j - j0]
            a += w0 * G[i0, j]
            a += w1 * G[i1, j]
            a += w2 * G[i2, j]
            a += w3 * G[i3, j]
            acc[j - j0] = a
        r += 4
    while r < live:
        i = idx[r]
        wr = w[r]
        for j in range(j0, j1):
            acc[j - j0] += wr * G[i, j]
        r += 1


@nb.njit(cache=True, parallel=True, nogil=True)
def _weighted_sum_into(G, rows, weights, scale, out):
    """``out[j] = scale * sum_r weights[r] * G[rows[r], j]``, the sum accumulated in float64
    and multiplied by ``scale`` in float64 before the store into ``out`` (float64, or G's
    float32: one rounding, as ``astype``). See ``weighted_column_sum``."""
    m = rows.size
    d = G.shape[1]
    live = 0
    for r in range(m):
        if weights[r] != 0.0:
            live += 1
    idx = np.empty(live, dtype=np.int64)
    w = np.empty(live, dtype=np.float64)
    c = 0
    for r in range(m):
        if weights[r] != 0.0:
            idx[c] = rows[r]
            w[c] = weights[r]
            c += 1
    n_blocks = (d + COLUMN_BLOCK - 1) // COLUMN_BLOCK
    for b in nb.prange(n_blocks):
        j0 = b * COLUMN_BLOCK
        j1 = min(d, j0 + COLUMN_BLOCK)
        acc = np.zeros(j1 - j0, dtype=np.float64)
        _add_weighted_rows(G, idx, w, j0, j1, acc)
        for j in range(j0, j1):
            out[j] = acc[j - j0] * scale
    return out


@nb.njit(cache=True, nogil=True)
def weighted_column_sum(G, rows, weights):
    """``sum_r weights[r] * G[rows[r], :]`` accumulated in float64: float64 (d,).

    Each column's float64 accumulator receives the products in row order (bit-identical to
    ``acc += w[r] * G[rows[r]]`` row after row), but four rows are added per sweep of a block's
    accumulator, so the accumulator is loaded and stored once per four rows instead of once
    per row: the pass runs at about the speed of reading G (n = 50, d = 10^6 float32, one
    thread: ~12 ms against ~21 ms one row per sweep). Rows with weight 0 are skipped.
    """
    out = np.empty(G.shape[1], dtype=np.float64)
    return _weighted_sum_into(G, rows, weights, 1.0, out)


@nb.njit(cache=True, nogil=True)
def scaled_column_sum(G, rows, weights, scale):
    """``scale * weighted_column_sum(G, rows, weights)`` rounded once to G's dtype: the same
    bits as computing the float64 sum, multiplying it by ``scale`` and casting (``astype``),
    without the float64 (d,) intermediate and the two passes over it (SignGuard's clipped
    mean: ~1 ms of 20 at n = 50, d = 10^6 float32)."""
    out = np.empty(G.shape[1], dtype=G.dtype)
    return _weighted_sum_into(G, rows, weights, scale, out)


@nb.njit(cache=True, nogil=True)
def weighted_column_mean(G, rows, weights):
    """``sum_r w_r G[rows[r]] / sum_r w_r`` (float64 accumulation), returned as G.dtype (d,).

    The weights must be non-negative with a positive sum.
    """
    total = 0.0
    for r in range(weights.size):
        total += weights[r]
    acc = weighted_column_sum(G, rows, weights)
    out = np.empty(acc.size, dtype=G.dtype)
    for j in range(acc.size):
        out[j] = acc[j] / total
    return out


@nb.njit(cache=True, nogil=True)
def clipped_column_mean(G, rows, norms, threshold):
    """``(1/m) sum_r G[rows[r]] * min(1, threshold / norms[r])`` as G.dtype (d,).

    ``norms`` are the rows' L2 norms (e.g. from ``row_norms``); a zero norm gets factor 1.
    SignGuard's final step with ``threshold`` the median norm.
    """
    m = rows.size
    w = np.empty(m, dtype=np.float64)
    for r in range(m):
        s = 1.0
        if norms[r] > threshold:
            s = threshold / norms[r]
        w[r] = s / m
    return scaled_column_sum(G, rows, w, 1.0)


@nb.njit(cache=True, parallel=True, nogil=True)
def column_mean_std(G, rows, ddof):
    """Coordinate-wise mean and standard deviation (``ddof`` as NumPy's) over ``rows``, both
    float64 (d,). Two passes per block of columns -- the mean, then the sum of squared
    deviations from it -- while the block is in cache, so G is read from memory once and the
    deviations never cancel (the textbook two-pass formula, as ``np.std``)."""
    m = rows.size
    d = G.shape[1]
    mu = np.empty(d, dtype=np.float64)
    sd = np.empty(d, dtype=np.float64)
    ones = np.empty(m, dtype=np.float64)
    for r in range(m):  # (a loop: np.ones would be a parallel loop of its own in this function)
        ones[r] = 1.0
    n_blocks = (d + MEAN_STD_BLOCK - 1) // MEAN_STD_BLOCK
    for b in nb.prange(n_blocks):
        j0 = b * MEAN_STD_BLOCK
        j1 = min(d, j0 + MEAN_STD_BLOCK)
        w = j1 - j0
        acc = np.zeros(w, dtype=np.float64)
        _add_weighted_rows(G, rows, ones, j0, j1, acc)  # the column sums, rows in order
        for j in range(w):
            acc[j] /= m
        sq = np.zeros(w, dtype=np.float64)
        r = 0
        while r + 4 <= m:
            x0 = G[rows[r], j0:j1]
            x1 = G[rows[r + 1], j0:j1]
            x2 = G[rows[r + 2], j0:j1]
            x3 = G[rows[r + 3], j0:j1]
            for j in range(w):
                c = acc[j]
                t0 = np.float64(x0[j]) - c
                t1 = np.float64(x1[j]) - c
                t2 = np.float64(x2[j]) - c
                t3 = np.float64(x3[j]) - c
                a = sq[j]
                a += t0 * t0
                a += t1 * t1
                a += t2 * t2
                a += t3 * t3
                sq[j] = a
            r += 4
        while r < m:
            x0 = G[rows[r], j0:j1]
            for j in range(w):
                t = np.float64(x0[j]) - acc[j]
                sq[j] += t * t
            r += 1
        for j in range(w):
            mu[j0 + j] = acc[j]
            sd[j0 + j] = np.sqrt(sq[j] / (m - ddof))
    return mu, sd


@nb.njit(cache=True, parallel=True, nogil=True)
def group_means(G, members, offsets):
    """Means of groups of rows: ``out[k] = mean(G[members[offsets[k]:offsets[k+1]]])``.

    Returns an array of shape (len(offsets) - 1, d) and G's dtype; every group must be
    non-empty. Accumulates in float64 over column blocks (parallel over blocks).
    """
    n_groups = offsets.size - 1
    d = G.shape[1]
    out = np.empty((n_groups, d), dtype=G.dtype)
    n_blocks = (d + COLUMN_BLOCK - 1) // COLUMN_BLOCK
    for b in nb.prange(n_blocks):
        j0 = b * COLUMN_BLOCK
        j1 = min(d, j0 + COLUMN_BLOCK)
        acc = np.empty(j1 - j0, dtype=np.float64)
        for k in range(n_groups):
            acc[:] = 0.0
            s0 = offsets[k]
            s1 = offsets[k + 1]
            for s in range(s0, s1):
                i = members[s]
                for j in range(j0, j1):
                    acc[j - j0] += G[i, j]
            inv = 1.0 / (s1 - s0)
            for j in range(j0, j1):
                out[k, j] = acc[j - j0] * inv
    return out


def mix_rows(G, rows, W):
    """``W @ G[rows]`` as a new (W.shape[0], d) matrix of G's dtype, accumulated in float64.

    Dense mixing (NNM), blocks of columns at a time. float64 input: DGEMM on the block.
    float32 input: SGEMM over at most ``MIX_ROWS_F32`` rows at a time (float32 partial sums of that
    length), the partial products added in float64 -- about twice DGEMM's speed, with no float64
    copy of the block, and the same accumulation scheme as the Gram of ``pairwise_sq_distances``.
    Peak extra memory: one (W.shape[0], block) float64 accumulator besides the output.
    """
    W = np.ascontiguousarray(W, dtype=np.float64)
    m = rows.size
    d = G.shape[1]
    M = W.shape[0]
    out = np.empty((M, d), dtype=G.dtype)
    all_rows = m == G.shape[0] and np.array_equal(rows, np.arange(m))
    width = max(256, MIX_BLOCK_ELEMENTS // max(m, M, 1))
    single = G.dtype == np.float32
    if single:
        W32 = W.astype(np.float32)
        acc = np.empty((M, min(width, d)), dtype=np.float64)
    for j0 in range(0, d, width):
        j1 = min(d, j0 + width)
        block = G[:, j0:j1] if all_rows else G[rows, j0:j1]
        if not single:
            out[:, j0:j1] = W @ block.astype(np.float64, copy=False)
            continue
        a = acc[:, : j1 - j0]
        a[...] = 0.0
        for r0 in range(0, m, MIX_ROWS_F32):
            r1 = min(m, r0 + MIX_ROWS_F32)
            a += W32[:, r0:r1] @ block[r0:r1]
        out[:, j0:j1] = a
    return out
