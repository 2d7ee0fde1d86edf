"""Selection and sorting networks: the building blocks of the order statistics.

* ``select(v, lo, hi, k)``: quickselect (Hoare partition, insertion sort for short ranges) of
  rank k in ``v[lo..hi]``, in place; ``median_of(v, n)`` NumPy's median of ``v[:n]`` with it;
  ``argsort_stable(v)`` a stable merge sort. Each compiles in a fraction of the time of Numba's
  ``np.partition`` / ``np.median`` / ``np.argsort`` (seconds per kernel that uses them).
* The sorting network run across columns: ``network(m, lo, hi, presorted)`` Batcher's odd-even
  merge network on m inputs pruned to the outputs lo..hi; ``network_block`` loads a block of
  ``NETWORK_BLOCK`` columns of the rows into a network buffer (``key_buffer``, rows through
  ``buffer_row``) as sort keys (int32 for float32, ``from_key`` converts back), sorts aligned
  groups of 8 and 16 rows in registers on the way and applies the rest of the network to whole
  buffer rows. The column statistics of ``_column_ranks`` are built on it.

Up to ``NETWORK_MAX_ROWS`` rows the coordinate-wise order statistics (median, trimmed mean,
Bulyan's closest-to-median mean, MeaMed's window) use the network: blocks of 128 columns held
as int32 sort keys (float32) in a padded (m, 128) buffer; each aligned group of 8 rows is
sorted, and pairs of groups merged, in registers while loading. Above, they use the per-column
quickselect / sort on a transposed block (one column's m values contiguous). Both paths get
finite rows only: the validation layer excludes the others before any kernel runs
(docs/conventions.md, "Non-finite rows"). The network kernel's NaN flag is a by-product of its
sort keys and is not used for the policy.
"""

from __future__ import annotations

import functools

import numba as nb
import numpy as np
from llvmlite import ir
from numba.core import types
from numba.core.extending import intrinsic, overload

from .._thresholds import NETWORK_BLOCK, NETWORK_ROW_PAD, NETWORK_ROW_STRIDE

__all__ = [
    "argsort_stable",
    "buffer_row",
    "from_key",
    "key_buffer",
    "median_of",
    "network",
    "network_block",
    "select",
]


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
def select(v, lo, hi, k):
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
    select(v, k - k, n - 1, k)  # (a literal 0 would compile another specialisation)
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


def from_key(k):
    """The element value (float) of a network value ``_to_key`` made."""
    raise NotImplementedError  # Numba only


def key_buffer(G, m, w):
    """An uninitialised buffer of m rows of w network values for G's dtype (int32 / float64),
    flat, rows ``w + NETWORK_ROW_PAD`` apart (rows exactly 4 KiB apart would alias in the load/store
    unit: Batcher's comparators at distance 8 would then stall); rows through ``buffer_row``."""
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


@overload(from_key, inline="always")
def _from_key_impl(k):
    if k == types.int32:
        return lambda k: _f32_from_key(k)
    return lambda k: k


@overload(key_buffer)
def _key_buffer_impl(G, m, w):
    if G.dtype == types.float32:
        return lambda G, m, w: np.empty(m * (w + NETWORK_ROW_PAD), dtype=np.int32)
    return lambda G, m, w: np.empty(m * (w + NETWORK_ROW_PAD), dtype=np.float64)


@nb.njit(cache=True, nogil=True, inline="always")
def buffer_row(buf, r):
    """Row r (``NETWORK_BLOCK`` lanes) of a flat network buffer from ``key_buffer``."""
    s = r * (NETWORK_BLOCK + NETWORK_ROW_PAD)
    return buf[s : s + NETWORK_BLOCK]


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
def network(m: int, lo: int, hi: int, presorted: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Batcher's odd-even merge sorting network on m inputs (comparators touching indices >= m
    dropped, as if padded with +inf), pruned backwards to the comparators that can change the
    outputs at positions lo..hi. Returns the comparator index arrays (a, b), a < b.

    ``presorted``: the rows come in already sorted within each full aligned group of 16 rows
    and each further full aligned group of 8 (as ``network_block`` leaves them), so Batcher's
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
    o = g * NETWORK_ROW_STRIDE
    for c in range(NETWORK_BLOCK):
        x0 = buf[o + 0 * NETWORK_ROW_STRIDE + c]
        x1 = buf[o + 1 * NETWORK_ROW_STRIDE + c]
        x2 = buf[o + 2 * NETWORK_ROW_STRIDE + c]
        x3 = buf[o + 3 * NETWORK_ROW_STRIDE + c]
        x4 = buf[o + 4 * NETWORK_ROW_STRIDE + c]
        x5 = buf[o + 5 * NETWORK_ROW_STRIDE + c]
        x6 = buf[o + 6 * NETWORK_ROW_STRIDE + c]
        x7 = buf[o + 7 * NETWORK_ROW_STRIDE + c]
        x8 = buf[o + 8 * NETWORK_ROW_STRIDE + c]
        x9 = buf[o + 9 * NETWORK_ROW_STRIDE + c]
        x10 = buf[o + 10 * NETWORK_ROW_STRIDE + c]
        x11 = buf[o + 11 * NETWORK_ROW_STRIDE + c]
        x12 = buf[o + 12 * NETWORK_ROW_STRIDE + c]
        x13 = buf[o + 13 * NETWORK_ROW_STRIDE + c]
        x14 = buf[o + 14 * NETWORK_ROW_STRIDE + c]
        x15 = buf[o + 15 * NETWORK_ROW_STRIDE + c]
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
        buf[o + 0 * NETWORK_ROW_STRIDE + c] = x0
        buf[o + 1 * NETWORK_ROW_STRIDE + c] = x1
        buf[o + 2 * NETWORK_ROW_STRIDE + c] = x2
        buf[o + 3 * NETWORK_ROW_STRIDE + c] = x3
        buf[o + 4 * NETWORK_ROW_STRIDE + c] = x4
        buf[o + 5 * NETWORK_ROW_STRIDE + c] = x5
        buf[o + 6 * NETWORK_ROW_STRIDE + c] = x6
        buf[o + 7 * NETWORK_ROW_STRIDE + c] = x7
        buf[o + 8 * NETWORK_ROW_STRIDE + c] = x8
        buf[o + 9 * NETWORK_ROW_STRIDE + c] = x9
        buf[o + 10 * NETWORK_ROW_STRIDE + c] = x10
        buf[o + 11 * NETWORK_ROW_STRIDE + c] = x11
        buf[o + 12 * NETWORK_ROW_STRIDE + c] = x12
        buf[o + 13 * NETWORK_ROW_STRIDE + c] = x13
        buf[o + 14 * NETWORK_ROW_STRIDE + c] = x14
        buf[o + 15 * NETWORK_ROW_STRIDE + c] = x15


@nb.njit(cache=True, nogil=True)
def network_block(G, rows, pa, pb, j0, bw, buf):
    """Load columns j0 .. j0+bw-1 of the rows into ``buf`` (m, W) as network values (int32
    sort keys for float32; lanes >= bw zero), each full aligned group of 8 rows sorted on the
    way in registers and pairs of them merged in registers (Batcher's first stages), and apply the rest of the comparator network
    (pa, pb, from ``network(..., presorted=True)``) to whole buffer rows: afterwards the
    positions the network was pruned for hold, per lane, the values of those ranks. Returns
    whether a loaded value was NaN or ±Inf (then the ranks mean nothing; the caller redoes
    the work on the finite rows)."""
    m = rows.size
    W = NETWORK_BLOCK
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
        d0 = buffer_row(buf, g)
        d1 = buffer_row(buf, g + 1)
        d2 = buffer_row(buf, g + 2)
        d3 = buffer_row(buf, g + 3)
        d4 = buffer_row(buf, g + 4)
        d5 = buffer_row(buf, g + 5)
        d6 = buffer_row(buf, g + 6)
        d7 = buffer_row(buf, g + 7)
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
        dst = buffer_row(buf, r)
        for c in range(bw):
            k = _to_key(src[c])
            bad |= _nonfinite(k)
            dst[c] = k
    if bw < W:
        for r in range(m):
            dst = buffer_row(buf, r)
            for c in range(bw, W):
                dst[c] = 0
    for g in range(0, (m // 16) * 16, 16):
        _merge8x8(buf, g)
    for t in range(pa.size):
        _cx_rows(buffer_row(buf, pa[t]), buffer_row(buf, pb[t]))
    return bad
