"""Coordinate-wise kernels: column means and the selection kernels (median, trimmed mean,
Bulyan's closest-to-median mean)."""

from __future__ import annotations

import functools

import numba as nb
import numpy as np
from llvmlite import ir
from numba.core import types
from numba.core.extending import intrinsic, overload

from .._thresholds import COLUMN_BLOCK, NETWORK_MAX_ROWS

_BLOCK = COLUMN_BLOCK  # columns per parallel block


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
    n_blocks = (d + _BLOCK - 1) // _BLOCK
    bad = np.zeros(n_blocks, dtype=np.bool_)
    for b in nb.prange(n_blocks):
        j0 = b * _BLOCK
        j1 = min(d, j0 + _BLOCK)
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
    return out, not bad.any()


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
    n_blocks = (d + _BLOCK - 1) // _BLOCK
    for b in nb.prange(n_blocks):
        j0 = b * _BLOCK
        j1 = min(d, j0 + _BLOCK)
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


# ---------------------------------------------------------------------------------------------
# Coordinate-wise selection: median, trimmed mean, Bulyan's closest-to-median mean.
# Up to _NET_MAX_ROWS rows (the usual case): a pruned Batcher network run across columns on
# blocks of 128 columns held as int32 sort keys (float32) in a padded (m, 128) buffer; each
# aligned group of 8 rows is sorted, and pairs of groups merged, in registers while loading.
# Above: the per-column quickselect / sort below, on a transposed block (one column's m values
# contiguous). Both paths get finite rows only: the validation layer excludes the others before
# any kernel runs (docs/conventions.md, "Non-finite rows"). The network kernel's NaN flag is a
# by-product of its sort keys and is not used for the policy.
# ---------------------------------------------------------------------------------------------

_SEL_BLOCK = 512  # columns per transposed buffer


@nb.njit(cache=True, nogil=True, inline="always")
def _insertion_sort(v, lo, hi):
    """Sort v[lo..hi] (inclusive) in place."""
    for i in range(lo + 1, hi + 1):
        x = v[i]
        j = i - 1
        while j >= lo and v[j] > x:
            v[j + 1] = v[j]
            j -= 1
        v[j + 1] = x


@nb.njit(cache=True, nogil=True)
def _select(v, lo, hi, k):
    """Rearrange v[lo..hi] (inclusive) so that v[k] holds the value of rank k there, with
    v[lo..k-1] <= v[k] <= v[k+1..hi] (Hoare partition around a median-of-three pivot,
    insertion sort for short ranges)."""
    while hi - lo > 16:
        mid = (lo + hi) >> 1
        # median of three -> pivot value
        a = v[lo]
        b = v[mid]
        c = v[hi]
        if a > b:
            a, b = b, a
        if b > c:
            b = c
            if a > b:
                b = a
        pivot = b
        i = lo
        j = hi
        while i <= j:
            while v[i] < pivot:
                i += 1
            while v[j] > pivot:
                j -= 1
            if i <= j:
                t = v[i]
                v[i] = v[j]
                v[j] = t
                i += 1
                j -= 1
        # now v[lo..j] <= pivot <= v[i..hi], and v[j+1..i-1] == pivot
        if k <= j:
            hi = j
        elif k >= i:
            lo = i
        else:
            return
    _insertion_sort(v, lo, hi)


@nb.njit(cache=True, nogil=True)
def median_of(v, n):
    """Median of ``v[:n]`` (n >= 1; the mean of the two middle values for even n, as
    ``np.median``), for finite values; ``v[:n]`` is reordered (quickselect). Numba's
    ``np.median`` costs seconds of compilation in every kernel that uses it."""
    k = n // 2
    _select(v, k - k, n - 1, k)  # (a literal 0 would compile another specialisation)
    hi = v[k]
    if n % 2 == 1:
        return hi
    lo = v[0]
    for t in range(1, k):  # v[:k] <= v[k]: the middle value below is their largest
        if v[t] > lo:
            lo = v[t]
    return (lo + hi) / 2.0


@nb.njit(cache=True, nogil=True)
def argsort_stable(v):
    """Indices that sort the 1-D ``v`` ascending, ties in index order (a stable merge sort:
    runs of 16 by insertion, then bottom-up merges), for values without NaN. Compiles in a
    fraction of the time of Numba's ``np.argsort``/``np.sort`` (seconds each per kernel)."""
    n = v.size
    idx = np.empty(n, dtype=np.int64)
    for i in range(n):
        idx[i] = i
    for s0 in range(0, n, 16):
        e = min(n, s0 + 16)
        for i in range(s0 + 1, e):
            x = idx[i]
            xv = v[x]
            j = i - 1
            while j >= s0 and v[idx[j]] > xv:
                idx[j + 1] = idx[j]
                j -= 1
            idx[j + 1] = x
    src = idx
    dst = np.empty(n, dtype=np.int64)
    width = 16
    while width < n:
        for s0 in range(0, n, 2 * width):
            mid = min(n, s0 + width)
            e = min(n, s0 + 2 * width)
            i = s0
            j = mid
            o = s0
            while i < mid and j < e:
                if v[src[j]] < v[src[i]]:
                    dst[o] = src[j]
                    j += 1
                else:
                    dst[o] = src[i]
                    i += 1
                o += 1
            while i < mid:
                dst[o] = src[i]
                i += 1
                o += 1
            while j < e:
                dst[o] = src[j]
                j += 1
                o += 1
        tmp = src
        src = dst
        dst = tmp
        width *= 2
    return src


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
    n_blocks = (d + _SEL_BLOCK - 1) // _SEL_BLOCK
    hi_rank = m - k - 1
    count = m - 2 * k
    for bidx in nb.prange(n_blocks):
        b0 = bidx * _SEL_BLOCK
        bw = min(_SEL_BLOCK, d - b0)
        buf = np.empty((_SEL_BLOCK, m), dtype=G.dtype)
        _fill_transposed(G, rows, b0, bw, buf)
        for c in range(bw):
            v = buf[c]
            if count == m:
                s = 0.0
                for t in range(m):
                    s += v[t]
                out[b0 + c] = s / m
                continue
            _select(v, m - m, m - 1, k)  # (m - m: the int64 specialisation, not a literal 0)
            if hi_rank > k:
                _select(v, k + 1, m - 1, hi_rank)
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


_NET_BLOCK = 128  # columns per block in the sorting-network kernels (SIMD lanes are columns)
_NET_MAX_ROWS = NETWORK_MAX_ROWS  # above this many rows the per-column quickselect is used
_ROW_PAD = 16  # lanes of padding between network buffer rows (see _key_buffer)
_ROW = _NET_BLOCK + _ROW_PAD  # network buffer row stride


@intrinsic
def _f32_key(typingctx, x):
    """The int32 whose order is the order of the float32 ``x`` (finite values and ±Inf; -0.0
    just below +0.0): ``bits ^ ((bits >> 31) & 0x7fffffff)``. Integer min/max compile to
    ``vpminsd``/``vpmaxsd`` in the network, 8 columns per instruction; a float select stored
    back in place becomes a masked store (slow on this hardware) and ``np.minimum`` carries
    NaN checks."""
    if x != types.float32:
        return None

    def codegen(context, builder, signature, args):
        lt = ir.IntType(32)
        b = builder.bitcast(args[0], lt)
        m = builder.and_(builder.ashr(b, ir.Constant(lt, 31)), ir.Constant(lt, 0x7FFFFFFF))
        return builder.xor(b, m)

    return types.int32(x), codegen


@intrinsic
def _f32_from_key(typingctx, k):
    """Inverse of ``_f32_key``: the float32 whose key is ``k``."""
    if k != types.int32:
        return None

    def codegen(context, builder, signature, args):
        lt = ir.IntType(32)
        b = args[0]
        m = builder.and_(builder.ashr(b, ir.Constant(lt, 31)), ir.Constant(lt, 0x7FFFFFFF))
        return builder.bitcast(builder.xor(b, m), ir.FloatType())

    return types.float32(k), codegen


def _to_key(x):
    """Network value of an element: its int32 sort key for float32, itself for float64."""
    raise NotImplementedError  # Numba only


def _from_key(k):
    """The element value (float) of a network value ``_to_key`` made."""
    raise NotImplementedError  # Numba only


def _key_buffer(G, m, w):
    """An uninitialised buffer of m rows of w network values for G's dtype (int32 / float64),
    flat, rows ``w + _ROW_PAD`` apart (rows exactly 4 KiB apart would alias in the load/store
    unit: Batcher's comparators at distance 8 would then stall); rows through ``_row``."""
    raise NotImplementedError  # Numba only


def _cx_rows(ra, rb):
    """Compare-exchange two buffer rows lane by lane: ra <- min, rb <- max."""
    raise NotImplementedError  # Numba only


def _group_nonfinite(x0, x1, x2, x3, x4, x5, x6, x7, lo, hi):
    """Whether one of eight network values x0..x7 is NaN or ±Inf; ``lo``/``hi`` are their
    smallest and largest after ``_sort8``."""
    raise NotImplementedError  # Numba only


def _nonfinite(x):
    """Whether one network value is NaN or ±Inf."""
    raise NotImplementedError  # Numba only


_KEY_POS_INF = 0x7F800000  # _f32_key(+inf); +NaN keys are above it
_KEY_NEG_INF = -0x7F800001  # _f32_key(-inf); -NaN keys are below it


@overload(_group_nonfinite, inline="always")
def _group_nonfinite_impl(x0, x1, x2, x3, x4, x5, x6, x7, lo, hi):
    if isinstance(lo, types.Integer):  # int32 keys: NaN and ±Inf sort to the two ends

        def impl(x0, x1, x2, x3, x4, x5, x6, x7, lo, hi):
            return (lo <= _KEY_NEG_INF) | (hi >= _KEY_POS_INF)

        return impl

    # floats (min/max may drop a NaN while sorting, so the inputs are tested): x - x is 0 for
    # finite x, NaN otherwise
    def impl(x0, x1, x2, x3, x4, x5, x6, x7, lo, hi):
        z = (x0 - x0) + (x1 - x1) + (x2 - x2) + (x3 - x3) + (x4 - x4) + (x5 - x5) + (x6 - x6) + (x7 - x7)
        return not (z == 0.0)

    return impl


@overload(_nonfinite, inline="always")
def _nonfinite_impl(x):
    if isinstance(x, types.Integer):
        return lambda x: (x <= _KEY_NEG_INF) | (x >= _KEY_POS_INF)
    return lambda x: not (x - x == 0.0)


@overload(_to_key, inline="always")
def _to_key_impl(x):
    if x == types.float32:
        return lambda x: _f32_key(x)
    return lambda x: x


@overload(_from_key, inline="always")
def _from_key_impl(k):
    if k == types.int32:
        return lambda k: _f32_from_key(k)
    return lambda k: k


@overload(_key_buffer)
def _key_buffer_impl(G, m, w):
    if G.dtype == types.float32:
        return lambda G, m, w: np.empty(m * (w + _ROW_PAD), dtype=np.int32)
    return lambda G, m, w: np.empty(m * (w + _ROW_PAD), dtype=np.float64)


@nb.njit(cache=True, nogil=True, inline="always")
def _row(buf, r):
    """Row r (``_NET_BLOCK`` lanes) of a flat network buffer from ``_key_buffer``."""
    s = r * (_NET_BLOCK + _ROW_PAD)
    return buf[s : s + _NET_BLOCK]


@overload(_cx_rows, inline="always")
def _cx_rows_impl(ra, rb):
    if isinstance(ra.dtype, types.Integer):

        def impl(ra, rb):
            for c in range(ra.size):
                x = ra[c]
                y = rb[c]
                ra[c] = min(x, y)
                rb[c] = max(x, y)

        return impl

    def impl(ra, rb):  # float64 (no packed 64-bit integer min/max in AVX2)
        for c in range(ra.size):
            x = ra[c]
            y = rb[c]
            ra[c] = np.minimum(x, y)
            rb[c] = np.maximum(x, y)

    return impl


@functools.lru_cache(maxsize=256)
def _network(m: int, lo: int, hi: int, presorted: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Batcher's odd-even merge sorting network on m inputs (comparators touching indices >= m
    dropped, as if padded with +inf), pruned backwards to the comparators that can change the
    outputs at positions lo..hi. Returns the comparator index arrays (a, b), a < b.

    ``presorted``: the rows come in already sorted within each full aligned group of 16 rows
    and each further full aligned group of 8 (as ``_network_block`` leaves them), so Batcher's
    first stages inside those groups (the merges of width < 16, resp. < 8, which never cross
    an aligned group) are left out. Sorting a group entirely is a superset of
    their pruned remainder, and a comparator pruned away only touches wires whose values no
    later kept comparator reads, so the outputs lo..hi are unchanged."""
    pairs = []
    full16 = (m // 16) * 16 if presorted else 0
    full8 = (m // 8) * 8 if presorted else 0
    p = 1
    while p < m:
        k = p
        while k >= 1:
            for j in range(k % p, m - k, 2 * k):
                for i in range(min(k, m - j - k)):
                    if (i + j) // (2 * p) == (i + j + k) // (2 * p):
                        if (p < 16 and i + j + k < full16) or (p < 8 and i + j + k < full8):
                            continue
                        pairs.append((i + j, i + j + k))
            k //= 2
        p *= 2
    needed = set(range(lo, hi + 1))
    kept = []
    for a, b in reversed(pairs):
        if a in needed or b in needed:
            kept.append((a, b))
            needed.add(a)
            needed.add(b)
    kept.reverse()
    pa = np.array([a for a, _ in kept], dtype=np.int64)
    pb = np.array([b for _, b in kept], dtype=np.int64)
    return pa, pb


@nb.njit(cache=True, nogil=True, inline="always")
def _sort8(x0, x1, x2, x3, x4, x5, x6, x7):
    """Batcher's 19-comparator network on eight scalars (kept in registers; the caller's loop
    over columns is vectorised)."""
    x0, x1 = min(x0, x1), max(x0, x1)
    x2, x3 = min(x2, x3), max(x2, x3)
    x4, x5 = min(x4, x5), max(x4, x5)
    x6, x7 = min(x6, x7), max(x6, x7)
    x0, x2 = min(x0, x2), max(x0, x2)
    x1, x3 = min(x1, x3), max(x1, x3)
    x4, x6 = min(x4, x6), max(x4, x6)
    x5, x7 = min(x5, x7), max(x5, x7)
    x1, x2 = min(x1, x2), max(x1, x2)
    x5, x6 = min(x5, x6), max(x5, x6)
    x0, x4 = min(x0, x4), max(x0, x4)
    x1, x5 = min(x1, x5), max(x1, x5)
    x2, x6 = min(x2, x6), max(x2, x6)
    x3, x7 = min(x3, x7), max(x3, x7)
    x2, x4 = min(x2, x4), max(x2, x4)
    x3, x5 = min(x3, x5), max(x3, x5)
    x1, x2 = min(x1, x2), max(x1, x2)
    x3, x4 = min(x3, x4), max(x3, x4)
    x5, x6 = min(x5, x6), max(x5, x6)
    return x0, x1, x2, x3, x4, x5, x6, x7


@nb.njit(cache=True, nogil=True, inline="always")
def _merge8x8(buf, g):
    """Rows g..g+7 and g+8..g+15 of a flat network buffer, each sorted per lane, merged in
    registers (Batcher's 25-comparator merge stage): rows g..g+15 sorted per lane. All offsets
    are constants from one base, so the lane loop vectorises without aliasing checks."""
    o = g * _ROW
    for c in range(_NET_BLOCK):
        x0 = buf[o + 0 * _ROW + c]
        x1 = buf[o + 1 * _ROW + c]
        x2 = buf[o + 2 * _ROW + c]
        x3 = buf[o + 3 * _ROW + c]
        x4 = buf[o + 4 * _ROW + c]
        x5 = buf[o + 5 * _ROW + c]
        x6 = buf[o + 6 * _ROW + c]
        x7 = buf[o + 7 * _ROW + c]
        x8 = buf[o + 8 * _ROW + c]
        x9 = buf[o + 9 * _ROW + c]
        x10 = buf[o + 10 * _ROW + c]
        x11 = buf[o + 11 * _ROW + c]
        x12 = buf[o + 12 * _ROW + c]
        x13 = buf[o + 13 * _ROW + c]
        x14 = buf[o + 14 * _ROW + c]
        x15 = buf[o + 15 * _ROW + c]
        x0, x8 = min(x0, x8), max(x0, x8)
        x1, x9 = min(x1, x9), max(x1, x9)
        x2, x10 = min(x2, x10), max(x2, x10)
        x3, x11 = min(x3, x11), max(x3, x11)
        x4, x12 = min(x4, x12), max(x4, x12)
        x5, x13 = min(x5, x13), max(x5, x13)
        x6, x14 = min(x6, x14), max(x6, x14)
        x7, x15 = min(x7, x15), max(x7, x15)
        x4, x8 = min(x4, x8), max(x4, x8)
        x5, x9 = min(x5, x9), max(x5, x9)
        x6, x10 = min(x6, x10), max(x6, x10)
        x7, x11 = min(x7, x11), max(x7, x11)
        x2, x4 = min(x2, x4), max(x2, x4)
        x3, x5 = min(x3, x5), max(x3, x5)
        x6, x8 = min(x6, x8), max(x6, x8)
        x7, x9 = min(x7, x9), max(x7, x9)
        x10, x12 = min(x10, x12), max(x10, x12)
        x11, x13 = min(x11, x13), max(x11, x13)
        x1, x2 = min(x1, x2), max(x1, x2)
        x3, x4 = min(x3, x4), max(x3, x4)
        x5, x6 = min(x5, x6), max(x5, x6)
        x7, x8 = min(x7, x8), max(x7, x8)
        x9, x10 = min(x9, x10), max(x9, x10)
        x11, x12 = min(x11, x12), max(x11, x12)
        x13, x14 = min(x13, x14), max(x13, x14)
        buf[o + 0 * _ROW + c] = x0
        buf[o + 1 * _ROW + c] = x1
        buf[o + 2 * _ROW + c] = x2
        buf[o + 3 * _ROW + c] = x3
        buf[o + 4 * _ROW + c] = x4
        buf[o + 5 * _ROW + c] = x5
        buf[o + 6 * _ROW + c] = x6
        buf[o + 7 * _ROW + c] = x7
        buf[o + 8 * _ROW + c] = x8
        buf[o + 9 * _ROW + c] = x9
        buf[o + 10 * _ROW + c] = x10
        buf[o + 11 * _ROW + c] = x11
        buf[o + 12 * _ROW + c] = x12
        buf[o + 13 * _ROW + c] = x13
        buf[o + 14 * _ROW + c] = x14
        buf[o + 15 * _ROW + c] = x15


@nb.njit(cache=True, nogil=True)
def _network_block(G, rows, pa, pb, j0, bw, buf):
    """Load columns j0 .. j0+bw-1 of the rows into ``buf`` (m, W) as network values (int32
    sort keys for float32; lanes >= bw zero), each full aligned group of 8 rows sorted on the
    way in registers and pairs of them merged in registers (Batcher's first stages), and apply the rest of the comparator network
    (pa, pb, from ``_network(..., presorted=True)``) to whole buffer rows: afterwards the
    positions the network was pruned for hold, per lane, the values of those ranks. Returns
    whether a loaded value was NaN or ±Inf (then the ranks mean nothing; the caller redoes
    the work on the finite rows)."""
    m = rows.size
    W = _NET_BLOCK
    bad = False
    full = (m // 8) * 8
    for g in range(0, full, 8):
        s0 = G[rows[g], j0 : j0 + bw]
        s1 = G[rows[g + 1], j0 : j0 + bw]
        s2 = G[rows[g + 2], j0 : j0 + bw]
        s3 = G[rows[g + 3], j0 : j0 + bw]
        s4 = G[rows[g + 4], j0 : j0 + bw]
        s5 = G[rows[g + 5], j0 : j0 + bw]
        s6 = G[rows[g + 6], j0 : j0 + bw]
        s7 = G[rows[g + 7], j0 : j0 + bw]
        d0 = _row(buf, g)
        d1 = _row(buf, g + 1)
        d2 = _row(buf, g + 2)
        d3 = _row(buf, g + 3)
        d4 = _row(buf, g + 4)
        d5 = _row(buf, g + 5)
        d6 = _row(buf, g + 6)
        d7 = _row(buf, g + 7)
        for c in range(bw):
            x0 = _to_key(s0[c])
            x1 = _to_key(s1[c])
            x2 = _to_key(s2[c])
            x3 = _to_key(s3[c])
            x4 = _to_key(s4[c])
            x5 = _to_key(s5[c])
            x6 = _to_key(s6[c])
            x7 = _to_key(s7[c])
            y0, y1, y2, y3, y4, y5, y6, y7 = _sort8(x0, x1, x2, x3, x4, x5, x6, x7)
            bad |= _group_nonfinite(x0, x1, x2, x3, x4, x5, x6, x7, y0, y7)
            d0[c] = y0
            d1[c] = y1
            d2[c] = y2
            d3[c] = y3
            d4[c] = y4
            d5[c] = y5
            d6[c] = y6
            d7[c] = y7
    for r in range(full, m):
        src = G[rows[r], j0 : j0 + bw]
        dst = _row(buf, r)
        for c in range(bw):
            k = _to_key(src[c])
            bad |= _nonfinite(k)
            dst[c] = k
    if bw < W:
        for r in range(m):
            dst = _row(buf, r)
            for c in range(bw, W):
                dst[c] = 0
    for g in range(0, (m // 16) * 16, 16):
        _merge8x8(buf, g)
    for t in range(pa.size):
        _cx_rows(_row(buf, pa[t]), _row(buf, pb[t]))
    return bad


@nb.njit(cache=True, parallel=True, nogil=True)
def _ranks_mean_network(G, rows, pa, pb, lo, hi, n_chunks):
    """Per column, the mean of the values of ranks lo..hi among ``rows`` (float64 sum in rank
    order, so bit-identical under any row permutation). Blocks of ``_NET_BLOCK`` columns are
    loaded as integer sort keys into a small (m, W) buffer that stays in L1 and the comparator
    network (pa, pb) runs on whole buffer rows: each compare-exchange is a few ``vpminsd``/
    ``vpmaxsd`` over W columns. One buffer per parallel chunk of blocks (``n_chunks``, a few
    per thread). Returns ``(out, all_finite)``: False if a value was NaN or ±Inf (then
    ``out`` is meaningless), so the rule needs no separate non-finite scan of G."""
    m = rows.size
    d = G.shape[1]
    out = np.empty(d, dtype=G.dtype)
    W = _NET_BLOCK
    n_blocks = (d + W - 1) // W
    n_chunks = max(1, min(n_blocks, n_chunks))
    count = hi - lo + 1
    bad = np.zeros(n_chunks, dtype=np.bool_)
    for ch in nb.prange(n_chunks):
        buf = _key_buffer(G, m, W)
        acc = np.empty(W, dtype=np.float64)
        for bidx in range(ch * n_blocks // n_chunks, (ch + 1) * n_blocks // n_chunks):
            j0 = bidx * W
            bw = min(W, d - j0)
            if _network_block(G, rows, pa, pb, j0, bw, buf):
                bad[ch] = True
            for c in range(W):
                acc[c] = 0.0
            for t in range(lo, hi + 1):
                rt = _row(buf, t)
                for c in range(W):
                    acc[c] += _from_key(rt[c])
            for c in range(bw):
                out[j0 + c] = acc[c] / count
    return out, not bad.any()


def _n_chunks() -> int:
    """Parallel chunks of column blocks: a few per Numba thread (load balance), each with its
    own small buffer."""
    return 8 * nb.get_num_threads()


def column_trimmed_mean(G: np.ndarray, rows: np.ndarray, k: int) -> np.ndarray:
    """Per column, the mean of the values of ranks ``k .. m-k-1`` among ``rows`` (drop the k
    smallest and k largest), float64 accumulation, returned as G.dtype (d,). ``m > 2k``.

    Up to ``_NET_MAX_ROWS`` rows: a pruned sorting network applied to blocks of columns (SIMD
    across columns, ``_ranks_mean_network``; the ranks' values summed in rank order, so the
    result is bit-identical under any row permutation); above: a per-column quickselect. With
    ``k = (m - 1) // 2`` this is the median (the average of the two middle values for even m,
    NumPy's convention)."""
    rows = np.ascontiguousarray(rows, dtype=np.int64)
    m = rows.size
    k = int(k)
    if k == 0:
        return column_mean(G, rows)
    if m <= _NET_MAX_ROWS:
        pa, pb = _network(m, k, m - k - 1, True)
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
    rank order. Up to ``_NET_MAX_ROWS`` rows: blocks of columns go through the shared sorting
    network pruned to the ranks ``s_min .. s_max + beta - 1`` (SIMD across columns) and ``s``
    is found without branches (see ``_closest_to_median_network``). Above: a per-column sort
    and the walk outwards from the median. Both give bit-identical results (same values, same
    summation order)."""
    rows = np.ascontiguousarray(rows, dtype=np.int64)
    m = rows.size
    beta = int(beta)
    if m <= _NET_MAX_ROWS:
        s_min, s_max = _closest_window(m, beta)
        pa, pb = _network(m, s_min, s_max + beta - 1, True)
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
    W = _NET_BLOCK
    n_blocks = (d + W - 1) // W
    n_chunks = max(1, min(n_blocks, n_chunks))
    a0 = (m - 1) // 2
    hi = s_max + beta - 1
    for ch in nb.prange(n_chunks):
        buf = _key_buffer(G, m, W)
        med = np.empty(W, dtype=np.float64)
        start = np.empty(W, dtype=np.int64)
        acc = np.empty(W, dtype=np.float64)
        for bidx in range(ch * n_blocks // n_chunks, (ch + 1) * n_blocks // n_chunks):
            j0 = bidx * W
            bw = min(W, d - j0)
            _network_block(G, rows, pa, pb, j0, bw, buf)  # (rows are finite here)
            r0 = _row(buf, a0)
            if m % 2 == 1:
                for c in range(W):
                    med[c] = _from_key(r0[c])
            else:
                r1 = _row(buf, a0 + 1)
                for c in range(W):
                    med[c] = (np.float64(_from_key(r0[c])) + np.float64(_from_key(r1[c]))) / 2.0
            for c in range(W):
                start[c] = s_min
                acc[c] = 0.0
            for i in range(s_min, s_max):
                ri = _row(buf, i)
                rj = _row(buf, i + beta)
                for c in range(W):
                    start[c] += np.int64(
                        np.float64(_from_key(rj[c])) - med[c] < med[c] - np.float64(_from_key(ri[c]))
                    )
            # the window's values in rank order; the others add +-0.0 (a product by 0.0: the
            # values are finite), which leaves the sum's bits unchanged (it starts at +0.0), so
            # the loop has no branch and no masked store
            for t in range(s_min, hi + 1):
                rt = _row(buf, t)
                for c in range(W):
                    inside = np.float64((start[c] <= t) & (t < start[c] + beta))
                    acc[c] += np.float64(_from_key(rt[c])) * inside
            for c in range(bw):
                out[j0 + c] = acc[c] / beta
    return out


_SORT_BLOCK_ELEMENTS = 1 << 18  # values per transposed block in the sort path


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
    width = max(16, _SORT_BLOCK_ELEMENTS // max(m, 1))
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


_MS_BLOCK = 1024  # columns per block of column_mean_std (m x block values stay in L2 between passes)


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
    ones = np.ones(m, dtype=np.float64)
    n_blocks = (d + _MS_BLOCK - 1) // _MS_BLOCK
    for b in nb.prange(n_blocks):
        j0 = b * _MS_BLOCK
        j1 = min(d, j0 + _MS_BLOCK)
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
