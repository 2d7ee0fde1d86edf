"""Coordinate-wise order statistics: the median, the trimmed mean, Bulyan's closest-to-median
mean and MeaMed's mean around the median.

Up to ``NETWORK_MAX_ROWS`` rows (the usual case) blocks of columns go through the sorting
network of ``_select`` (SIMD across columns; the ranks' values summed in rank order, so the
results are bit-identical under any row permutation). Above, each column of a transposed block
(``QUICKSELECT_BLOCK`` columns, one column's m values contiguous) goes through the quickselect
of ``_select`` (median, trimmed mean, MeaMed) or NumPy's row sort (Bulyan's second stage). Both
paths get finite rows only (docs/conventions.md, "Non-finite rows").
"""

from __future__ import annotations

import numba as nb
import numpy as np

from .._thresholds import CLOSEST_SORT_BLOCK_ELEMENTS, NETWORK_BLOCK, NETWORK_MAX_ROWS, QUICKSELECT_BLOCK
from ._columns import column_mean
from ._select import buffer_row, from_key, key_buffer, network, network_block, select

__all__ = [
    "column_closest_to_median_mean",
    "column_mean_around_median",
    "column_median",
    "column_trimmed_mean",
]


@nb.njit(cache=True, nogil=True)
def _fill_transposed(G, rows, b0, bw, buf):
    m = rows.size
    for r in range(m):
        i = rows[r]
        for k in range(bw):
            buf[k, r] = G[i, b0 + k]


@nb.njit(cache=True, parallel=True, nogil=True)
def _trimmed_mean_select(G, rows, k):
    """Per column, the mean of the values of ranks ``k .. m-k-1`` among ``rows`` (drop the k
    smallest and k largest), float64 accumulation, returned as G.dtype (d,). ``m > 2k``.

    With ``k = (m - 1) // 2`` this is the median (the average of the two middle values for even
    m, NumPy's convention)."""
    m = rows.size
    d = G.shape[1]
    out = np.empty(d, dtype=G.dtype)
    n_blocks = (d + QUICKSELECT_BLOCK - 1) // QUICKSELECT_BLOCK
    hi_rank = m - k - 1
    count = m - 2 * k
    for bidx in nb.prange(n_blocks):
        b0 = bidx * QUICKSELECT_BLOCK
        bw = min(QUICKSELECT_BLOCK, d - b0)
        buf = np.empty((QUICKSELECT_BLOCK, m), dtype=G.dtype)
        _fill_transposed(G, rows, b0, bw, buf)
        for c in range(bw):
            v = buf[c]
            if count == m:
                s = 0.0
                for t in range(m):
                    s += v[t]
                out[b0 + c] = s / m
                continue
            select(v, m - m, m - 1, k)  # (m - m: the int64 specialisation, not a literal 0)
            if hi_rank > k:
                select(v, k + 1, m - 1, hi_rank)
            if count == 1:
                out[b0 + c] = v[k]
            elif count == 2:
                out[b0 + c] = (np.float64(v[k]) + np.float64(v[k + 1])) / 2.0
            else:
                s = 0.0
                for t in range(k, hi_rank + 1):
                    s += v[t]
                out[b0 + c] = s / count
    return out


@nb.njit(cache=True, parallel=True, nogil=True)
def _ranks_mean_network(G, rows, pa, pb, lo, hi, n_chunks):
    """Per column, the mean of the values of ranks lo..hi among ``rows`` (float64 sum in rank
    order, so bit-identical under any row permutation). Blocks of ``NETWORK_BLOCK`` columns are
    loaded as integer sort keys into a small (m, W) buffer that stays in L1 and the comparator
    network (pa, pb) runs on whole buffer rows: each compare-exchange is a few ``vpminsd``/
    ``vpmaxsd`` over W columns. One buffer per parallel chunk of blocks (``n_chunks``, a few
    per thread). Returns ``(out, all_finite)``: False if a value was NaN or ±Inf (then
    ``out`` is meaningless), so the rule needs no separate non-finite scan of G."""
    m = rows.size
    d = G.shape[1]
    out = np.empty(d, dtype=G.dtype)
    W = NETWORK_BLOCK
    n_blocks = (d + W - 1) // W
    n_chunks = max(1, min(n_blocks, n_chunks))
    count = hi - lo + 1
    # explicit loops outside the parallel loop, no array expressions: in a parallel function
    # each of those (np.zeros, .any()) becomes a parallel loop of its own, compiled and launched
    bad = np.empty(n_chunks, dtype=np.bool_)
    for ch in range(n_chunks):
        bad[ch] = False
    for ch in nb.prange(n_chunks):
        buf = key_buffer(G, m, W)
        acc = np.empty(W, dtype=np.float64)
        for bidx in range(ch * n_blocks // n_chunks, (ch + 1) * n_blocks // n_chunks):
            j0 = bidx * W
            bw = min(W, d - j0)
            if network_block(G, rows, pa, pb, j0, bw, buf):
                bad[ch] = True
            for c in range(W):
                acc[c] = 0.0
            for t in range(lo, hi + 1):
                rt = buffer_row(buf, t)
                for c in range(W):
                    acc[c] += from_key(rt[c])
            for c in range(bw):
                out[j0 + c] = acc[c] / count
    all_finite = True
    for ch in range(n_chunks):
        all_finite &= not bad[ch]
    return out, all_finite


def _n_chunks() -> int:
    """Parallel chunks of column blocks: a few per Numba thread (load balance), each with its
    own small buffer."""
    return 8 * nb.get_num_threads()


def column_trimmed_mean(G: np.ndarray, rows: np.ndarray, k: int) -> np.ndarray:
    """Per column, the mean of the values of ranks ``k .. m-k-1`` among ``rows`` (drop the k
    smallest and k largest), float64 accumulation, returned as G.dtype (d,). ``m > 2k``.

    Up to ``NETWORK_MAX_ROWS`` rows: a pruned sorting network applied to blocks of columns (SIMD
    across columns, ``_ranks_mean_network``; the ranks' values summed in rank order, so the
    result is bit-identical under any row permutation); above: a per-column quickselect. With
    ``k = (m - 1) // 2`` this is the median (the average of the two middle values for even m,
    NumPy's convention)."""
    rows = np.ascontiguousarray(rows, dtype=np.int64)
    m = rows.size
    k = int(k)
    if k == 0:
        return column_mean(G, rows)
    if m <= NETWORK_MAX_ROWS:
        pa, pb = network(m, k, m - k - 1, True)
        return _ranks_mean_network(G, rows, pa, pb, k, m - k - 1, _n_chunks())[0]
    return _trimmed_mean_select(G, rows, k)


def column_median(G: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """Coordinate-wise median over ``rows`` (NumPy's convention for even m), as G.dtype (d,)."""
    return column_trimmed_mean(G, rows, (np.asarray(rows).size - 1) // 2)


def _closest_window(m: int, beta: int) -> tuple[int, int]:
    """The range of window starts ``s_min .. s_max`` of the beta values closest to the median
    among m sorted values (the window always holds the median's side neighbours)."""
    a0 = (m - 1) // 2
    return max(0, a0 + 1 - beta), min(a0 + 1, m - beta)


def column_closest_to_median_mean(G: np.ndarray, rows: np.ndarray, beta: int) -> np.ndarray:
    """Bulyan's second stage. Per column: the median of the values over ``rows`` (NumPy's
    convention), then the mean of the ``beta`` values closest to it; at equal distance the
    smaller value is taken first. float64 accumulation, returned as G.dtype (d,).

    The beta values closest to the median are a window ``[s, s + beta)`` of the sorted column,
    ``s`` in ``s_min .. s_max`` (:func:`_closest_window`); the window's values are summed in
    rank order. Up to ``NETWORK_MAX_ROWS`` rows: blocks of columns go through the shared sorting
    network pruned to the ranks ``s_min .. s_max + beta - 1`` (SIMD across columns) and ``s``
    is found without branches (see ``_closest_to_median_network``). Above: a per-column sort
    and the walk outwards from the median. Both give bit-identical results (same values, same
    summation order)."""
    rows = np.ascontiguousarray(rows, dtype=np.int64)
    m = rows.size
    beta = int(beta)
    if m <= NETWORK_MAX_ROWS:
        s_min, s_max = _closest_window(m, beta)
        pa, pb = network(m, s_min, s_max + beta - 1, True)
        return _closest_to_median_network(G, rows, pa, pb, beta, s_min, s_max, _n_chunks())
    return _closest_to_median_sort(G, rows, beta)


@nb.njit(cache=True, parallel=True, nogil=True)
def _closest_to_median_network(G, rows, pa, pb, beta, s_min, s_max, n_chunks):
    """Blocks of columns through the comparator network (pa, pb) as in ``_ranks_mean_network``
    (ranks ``s_min .. s_max + beta - 1`` in place), then, lane-parallel: the median ``med``
    (float64), the window start ``s = s_min + #{i in [s_min, s_max): v[i+beta] - med <
    med - v[i]}`` -- value i (left of the median) gives way to value i + beta (right of it) only
    if that one is strictly closer; the condition holds for a prefix of i, so this is where
    the walk outwards from the median (ties to the smaller value) stops -- and the sum of
    ``v[s .. s+beta-1]`` in rank order."""
    m = rows.size
    d = G.shape[1]
    out = np.empty(d, dtype=G.dtype)
    W = NETWORK_BLOCK
    n_blocks = (d + W - 1) // W
    n_chunks = max(1, min(n_blocks, n_chunks))
    a0 = (m - 1) // 2
    hi = s_max + beta - 1
    for ch in nb.prange(n_chunks):
        buf = key_buffer(G, m, W)
        med = np.empty(W, dtype=np.float64)
        start = np.empty(W, dtype=np.int64)
        acc = np.empty(W, dtype=np.float64)
        for bidx in range(ch * n_blocks // n_chunks, (ch + 1) * n_blocks // n_chunks):
            j0 = bidx * W
            bw = min(W, d - j0)
            network_block(G, rows, pa, pb, j0, bw, buf)  # (rows are finite here)
            r0 = buffer_row(buf, a0)
            if m % 2 == 1:
                for c in range(W):
                    med[c] = from_key(r0[c])
            else:
                r1 = buffer_row(buf, a0 + 1)
                for c in range(W):
                    med[c] = (np.float64(from_key(r0[c])) + np.float64(from_key(r1[c]))) / 2.0
            for c in range(W):
                start[c] = s_min
                acc[c] = 0.0
            for i in range(s_min, s_max):
                ri = buffer_row(buf, i)
                rj = buffer_row(buf, i + beta)
                for c in range(W):
                    start[c] += np.int64(
                        np.float64(from_key(rj[c])) - med[c] < med[c] - np.float64(from_key(ri[c]))
                    )
            # the window's values in rank order; the others add +-0.0 (a product by 0.0: the
            # values are finite), which leaves the sum's bits unchanged (it starts at +0.0), so
            # the loop has no branch and no masked store
            for t in range(s_min, hi + 1):
                rt = buffer_row(buf, t)
                for c in range(W):
                    inside = np.float64((start[c] <= t) & (t < start[c] + beta))
                    acc[c] += np.float64(from_key(rt[c])) * inside
            for c in range(bw):
                out[j0 + c] = acc[c] / beta
    return out


@nb.njit(cache=True, nogil=True)
def _closest_window_sums(buf, bw, beta, out, b0):
    """For each sorted row c < bw of buf: the walk outwards from the median (float64, ties to
    the smaller value) and the mean of the window's values summed in rank order."""
    m = buf.shape[1]
    a0 = (m - 1) // 2
    for c in range(bw):
        v = buf[c]
        if m % 2 == 1:
            med = np.float64(v[a0])
        else:
            med = (np.float64(v[a0]) + np.float64(v[a0 + 1])) / 2.0
        a = a0
        b = a0 + 1
        for _ in range(beta):
            if b >= m or (a >= 0 and med - np.float64(v[a]) <= np.float64(v[b]) - med):
                a -= 1
            else:
                b += 1
        s = 0.0
        for t in range(a + 1, b):  # the window, in rank order
            s += np.float64(v[t])
        out[b0 + c] = s / beta


def _closest_to_median_sort(G, rows, beta):
    """``column_closest_to_median_mean`` for any m: blocks of columns are transposed into
    (columns, m) buffers of G's dtype and sorted row-wise by NumPy (its vectorised sort is about
    ten times faster than a scalar per-column sort: n = 1000, Bulyan's 600 rows), then the walk
    outwards from the median finds each window, whose values are summed in rank order -- the
    same values, comparisons and summation order as the network path, so bit-identical.
    Blocks run on a small pool of threads (the transpose, NumPy's sort and the sums release the
    GIL); each block's columns are independent, so the result does not depend on the thread
    count."""
    from .._threads import executor as _executor

    rows = np.ascontiguousarray(rows, dtype=np.int64)
    m = rows.size
    d = G.shape[1]
    out = np.empty(d, dtype=np.float64)
    width = max(16, CLOSEST_SORT_BLOCK_ELEMENTS // max(m, 1))
    starts = list(range(0, d, width))
    threads = max(1, min(nb.get_num_threads(), len(starts)))

    def task(k):
        buf = np.empty((width, m), dtype=G.dtype)
        for b0 in starts[k::threads]:
            bw = min(width, d - b0)
            _fill_transposed(G, rows, b0, bw, buf)  # buf of G's dtype: the values unconverted
            buf[:bw].sort(axis=1)
            _closest_window_sums(buf, bw, beta, out, b0)

    if threads == 1:
        task(0)
    else:
        list(_executor(threads).map(task, range(threads)))
    return out.astype(G.dtype)


@nb.njit(cache=True, nogil=True)
def _tie_sum(buf, count, take, largest):
    """Sum of the ``take`` largest (``largest``) or smallest values of ``buf[:count]``."""
    lo = buf[0]
    hi = buf[0]
    for t in range(1, count):
        lo = min(lo, buf[t])
        hi = max(hi, buf[t])
    if lo == hi:  # the usual case: equal values (e.g. zeros), no order needed
        return take * lo
    srt = np.sort(buf[:count])
    s = 0.0
    if largest:
        for t in range(count - take, count):
            s += srt[t]
    else:
        for t in range(take):
            s += srt[t]
    return s


def column_mean_around_median(G, rows, beta):
    """MeaMed: per column, the mean of the ``beta`` values over ``rows`` closest to the median
    (NumPy's convention); at equal distance the smaller value first (below the median: the
    value nearer the median first). Up to ``NETWORK_MAX_ROWS`` rows this is Bulyan's shared
    second-stage kernel ``column_closest_to_median_mean`` (sorting network across columns, then
    the walk outwards from the median); above, selection only (O(m) per column instead of a
    sort, equal up to the float64 summation order). float64 accumulation, G.dtype (d,)."""
    rows = np.ascontiguousarray(rows, dtype=np.int64)
    if rows.size <= NETWORK_MAX_ROWS:
        return column_closest_to_median_mean(G, rows, int(beta))
    return _mean_around_median_select(G, rows, int(beta))


@nb.njit(cache=True, parallel=True, nogil=True)
def _mean_around_median_select(G, rows, beta):
    """Selection only: quickselect of the median, then of the beta-th smallest distance t;
    the values at distance < t are all kept and the rest is filled from the values at
    distance exactly t in the tie order."""
    m = rows.size
    d = G.shape[1]
    out = np.empty(d, dtype=G.dtype)
    n_blocks = (d + QUICKSELECT_BLOCK - 1) // QUICKSELECT_BLOCK
    a0 = (m - 1) // 2
    for bidx in nb.prange(n_blocks):
        b0 = bidx * QUICKSELECT_BLOCK
        bw = min(QUICKSELECT_BLOCK, d - b0)
        buf = np.empty((QUICKSELECT_BLOCK, m), dtype=np.float64)
        _fill_transposed(G, rows, b0, bw, buf)
        w = np.empty(m, dtype=np.float64)
        left = np.empty(m, dtype=np.float64)
        right = np.empty(m, dtype=np.float64)
        for c in range(bw):
            v = buf[c]
            if beta == m:
                s = 0.0
                for i in range(m):
                    s += v[i]
                out[b0 + c] = s / m
                continue
            select(v, m - m, m - 1, a0)  # (m - m: the int64 specialisation, not a literal 0)
            med = v[a0]
            if m % 2 == 0:
                nxt = v[a0 + 1]
                for i in range(a0 + 2, m):
                    nxt = min(nxt, v[i])
                med = (med + nxt) / 2.0
            for i in range(m):
                w[i] = abs(v[i] - med)
            select(w, m - m, m - 1, beta - 1)
            t = w[beta - 1]
            s = 0.0
            kept = 0
            nl = 0
            nr = 0
            for i in range(m):
                x = v[i]
                dist = abs(x - med)
                if dist < t:
                    s += x
                    kept += 1
                elif dist == t:
                    if x <= med:
                        left[nl] = x
                        nl += 1
                    else:
                        right[nr] = x
                        nr += 1
            r = beta - kept
            if r <= nl:
                s += _tie_sum(left, nl, r, True)
            else:
                if nl > 0:
                    s += _tie_sum(left, nl, nl, True)
                s += _tie_sum(right, nr, r - nl, False)
            out[b0 + c] = s / beta
    return out
