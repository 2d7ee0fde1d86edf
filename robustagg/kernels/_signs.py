"""SignGuard's kernels: row norms fused with sign counts on sampled coordinates (and with the
similarity to a reference gradient), Floyd's coordinate sampling, the exact Gram matrix for
SignGuard-Sim on small inputs, and the in-place cosines and off-diagonal row medians of the
reference-free variants.

One pass over G computes every row's L2 norm (float64, 64 interleaved partial sums that LLVM
vectorises without fast-math flags) and, while each block of columns is in L1, counts the
positive / zero / negative entries at the sampled coordinates that fall in that block (read
through their uint16 offsets in the block). The second pass (the clipped mean of the kept rows)
is the shared ``scaled_column_sum`` of ``_columns``.
"""

from __future__ import annotations

import numba as nb
import numpy as np
from numba.cpython.unsafe.numbers import trailing_zeros

from .._thresholds import SIGN_BLOCK, SQ_SUM_LANES
from ._rows import sq_sum_lanes  # the lane sums of squares (vectorised, fixed order)
from ._select import median_of

__all__ = [
    "cosines_in_place",
    "dots_with",
    "floyd_draws",
    "floyd_sample",
    "gram_and_sq_distances",
    "norms_and_sign_counts",
    "norms_signs_and_similarity",
    "offdiag_row_medians",
    "sq_norm",
]


@nb.njit(cache=True, nogil=True)
def sq_norm(x):
    """``sum_j x[j]^2`` of a 1-D array in float64 (``SQ_SUM_LANES`` partial sums; no BLAS call, whose
    spinning worker threads would compete with Numba's on a busy machine)."""
    part = np.zeros(SQ_SUM_LANES, dtype=np.float64)
    d = x.size
    j = 0
    while j + SQ_SUM_LANES <= d:
        for t in range(SQ_SUM_LANES):
            v = np.float64(x[j + t])
            part[t] += v * v
        j += SQ_SUM_LANES
    s = 0.0
    while j < d:
        v = np.float64(x[j])
        s += v * v
        j += 1
    for t in range(SQ_SUM_LANES):
        s += part[t]
    return s


@nb.njit(cache=True, nogil=True)
def _block_starts(coords, d):
    """``starts[b]`` = index in the sorted ``coords`` of the first coordinate >= b * SIGN_BLOCK."""
    n_blocks = (d + SIGN_BLOCK - 1) // SIGN_BLOCK
    starts = np.empty(n_blocks + 1, dtype=np.int64)
    c = 0
    for b in range(n_blocks):
        j0 = b * SIGN_BLOCK
        while c < coords.size and coords[c] < j0:
            c += 1
        starts[b] = c
    starts[n_blocks] = coords.size
    return starts


@nb.njit(cache=True, nogil=True)
def _block_offsets(coords, starts):
    """Each sampled coordinate's offset in its block of ``SIGN_BLOCK`` columns, as uint16: every
    row's sweep reads these, and at a quarter of the int64 indices' bytes they stay in L2 (at
    d = 10^6 the 800 KB of indices came from L3 for each row; the sign counts took ~1.5 ms less
    of the pass's ~12 ms at n = 50, two threads)."""
    offs = np.empty(coords.size, dtype=np.uint16)
    for b in range(starts.size - 1):
        j0 = b * SIGN_BLOCK
        for c in range(starts[b], starts[b + 1]):
            offs[c] = coords[c] - j0
    return offs


@nb.njit(cache=True, nogil=True)
def floyd_draws(raw, d, k):
    """The bounded draws of Floyd's algorithm from uniform 32-bit words ``raw`` (uint64 array
    holding values in [0, 2^32)), by Lemire's multiply-and-reject method: step q maps a word
    x to ``(x * s) >> 32`` on [0, s), s = d - k + q + 1 <= 2^32, rejecting the few words
    (probability < s / 2^32) that would bias it; unbiased. Returns ``(draws, ok)``; ``ok`` is
    False when ``raw`` ran out (the caller draws a longer batch)."""
    draws = np.empty(k, dtype=np.int64)
    mask = np.uint64(0xFFFFFFFF)
    p = 0
    for q in range(k):
        s = np.uint64(d - k + q + 1)
        if p >= raw.size:
            return draws, False
        prod = raw[p] * s
        p += 1
        low = prod & mask
        if low < s:
            threshold = (np.uint64(1 << 32) - s) % s
            while low < threshold:
                if p >= raw.size:
                    return draws, False
                prod = raw[p] * s
                p += 1
                low = prod & mask
        draws[q] = np.int64(prod >> np.uint64(32))
    return draws, True


@nb.njit(cache=True, nogil=True)
def floyd_sample(d, draws):
    """Sorted int64 k-subset of range(d) by Floyd's algorithm, k = ``draws.size`` <= d.

    ``draws[q]`` must be uniform on ``[0, d - k + q]`` (inclusive); then every k-subset is
    equally likely. Step q takes ``t = draws[q]`` if it is not taken yet, else ``j = d - k + q``
    (never taken before step q). The marks are a bitset (d / 8 bytes: 125 KB at d = 10^6, in L2
    for the random test-and-set, where a byte per column missed it), read back in order word by
    word; O(k + d / 64) time after the d / 8 bytes are zeroed.
    """
    k = draws.size
    n_words = (d + 63) >> 6
    bits = np.zeros(n_words, dtype=np.uint64)
    one = np.uint64(1)
    for q in range(k):
        t = draws[q]
        b = one << np.uint64(t & 63)
        if bits[t >> 6] & b:
            t = d - k + q
            b = one << np.uint64(t & 63)
        bits[t >> 6] |= b
    out = np.empty(k, dtype=np.int64)
    c = 0
    for w in range(n_words):
        x = bits[w]
        base = w << 6
        while x != 0:
            out[c] = base + trailing_zeros(x)  # the lowest set bit, then clear it
            c += 1
            x &= x - one
    return out


@nb.njit(cache=True, nogil=True, inline="always")
def _sign_counts(G, i, j0, offs, c0, c1):
    """Numbers of positive and of negative values among ``G[i, j0 + offs[c0:c1]]`` (the sampled
    coordinates of the block starting at column j0)."""
    pos = 0
    neg = 0
    row = G[i, j0:]
    for c in range(c0, c1):
        v = row[np.int64(offs[c])]
        pos += v > 0
        neg += v < 0
    return pos, neg


@nb.njit(cache=True, parallel=True, nogil=True)
def norms_and_sign_counts(G, rows, coords):
    """L2 norms of ``G[rows]`` and sign counts of ``G[rows][:, coords]``.

    ``coords`` must be sorted ascending (int64) and lie in [0, d). Returns ``norms`` (float64,
    len(rows)) and ``counts`` (int64, (len(rows), 3)) holding the numbers of positive, zero and
    negative entries at ``coords``. One pass over G, parallel over rows: each row is read in
    blocks of ``SIGN_BLOCK`` columns; the squares of a block are accumulated in float64 in
    ``SQ_SUM_LANES`` interleaved partial sums (a fixed, deterministic order, whatever the thread
    count), then the signs of the sampled coordinates inside the block are counted while the
    block is in L1. A row holding NaN/Inf gets a non-finite norm.
    """
    m = rows.size
    d = G.shape[1]
    k = coords.size
    starts = _block_starts(coords, d)
    offs = _block_offsets(coords, starts)
    n_blocks = starts.size - 1
    norms = np.empty(m, dtype=np.float64)
    counts = np.empty((m, 3), dtype=np.int64)  # every entry is written below (np.zeros: a parallel loop)
    for r in nb.prange(m):
        i = rows[r]
        part = np.zeros(SQ_SUM_LANES, dtype=np.float64)
        tail = 0.0
        pos = 0
        neg = 0
        for b in range(n_blocks):
            j0 = b * SIGN_BLOCK
            tail += sq_sum_lanes(G, i, j0, min(d, j0 + SIGN_BLOCK), part)
            p_, n_ = _sign_counts(G, i, j0, offs, starts[b], starts[b + 1])
            pos += p_
            neg += n_
        acc = 0.0
        for t in range(SQ_SUM_LANES):
            acc += part[t]
        norms[r] = np.sqrt(acc + tail)
        counts[r, 0] = pos
        counts[r, 1] = k - pos - neg
        counts[r, 2] = neg
    return norms, counts


@nb.njit(cache=True, nogil=True, inline="always")
def _sums2_lanes(G, i, ref, j0, j1, part, part2, distance):
    """Add the squares of ``G[i, j0:j1]`` to the lane sums ``part`` (``SQ_SUM_LANES`` of them) and,
    to ``part2``, their products with ``ref`` or (``distance``) their squared differences from
    it; the columns past the last full group of lanes are returned as two scalar sums."""
    j = j0
    # two lane loops per step (the 64 values are in L1 for the second): one loop updating
    # both sets of lanes kept 32 vector accumulators live, which LLVM spilled and shuffled
    # (1.5x slower); each lane still adds its columns in the same order
    while j + SQ_SUM_LANES <= j1:
        for t in range(SQ_SUM_LANES):
            v = np.float64(G[i, j + t])
            part[t] += v * v
        if distance:
            for t in range(SQ_SUM_LANES):
                diff = np.float64(G[i, j + t]) - np.float64(ref[j + t])
                part2[t] += diff * diff
        else:
            for t in range(SQ_SUM_LANES):
                part2[t] += np.float64(G[i, j + t]) * np.float64(ref[j + t])
        j += SQ_SUM_LANES
    tn = 0.0
    ta = 0.0
    while j < j1:
        v = np.float64(G[i, j])
        tn += v * v
        if distance:
            diff = v - np.float64(ref[j])
            ta += diff * diff
        else:
            ta += v * np.float64(ref[j])
        j += 1
    return tn, ta


@nb.njit(cache=True, parallel=True, nogil=True)
def norms_signs_and_similarity(G, rows, coords, ref, distance, group):
    """``norms_and_sign_counts`` fused with the similarity to a reference ``ref`` (float32 or
    float64, (d,); each value widened to float64 exactly): one pass over G for SignGuard-Sim /
    -Dist with a reference.

    Returns ``norms``, ``counts`` (as ``norms_and_sign_counts``: the same values) and ``sims``:
    ``<g_r, ref>``, or with ``distance`` ``|g_r - ref|^2`` (summed directly: no cancellation),
    float64 sums in ``SQ_SUM_LANES`` interleaved partial sums per row. Parallel over groups of
    ``group`` rows; each row sweeps the column blocks on its own (the reference stays in L3
    for the other rows) with its two sets of lane sums in separate arrays (one 2-D array per
    group kept LLVM from vectorising cleanly: 1.5x slower). Each row's sums are added in the
    same order whatever ``group`` and the thread count.
    """
    m = rows.size
    d = G.shape[1]
    k = coords.size
    starts = _block_starts(coords, d)
    offs = _block_offsets(coords, starts)
    n_blocks = starts.size - 1
    norms = np.empty(m, dtype=np.float64)
    sims = np.empty(m, dtype=np.float64)
    counts = np.empty((m, 3), dtype=np.int64)  # every entry is written below (np.zeros: a parallel loop)
    group = max(1, group)
    n_groups = (m + group - 1) // group
    for g in nb.prange(n_groups):
        for r in range(g * group, min(m, (g + 1) * group)):
            i = rows[r]
            pn = np.zeros(SQ_SUM_LANES, dtype=np.float64)
            pa = np.zeros(SQ_SUM_LANES, dtype=np.float64)
            tn = 0.0
            ta = 0.0
            pos = 0
            neg = 0
            for b in range(n_blocks):
                j0 = b * SIGN_BLOCK
                j1 = min(d, j0 + SIGN_BLOCK)
                a, c = _sums2_lanes(G, i, ref, j0, j1, pn, pa, distance)
                tn += a
                ta += c
                p_, n_ = _sign_counts(G, i, j0, offs, starts[b], starts[b + 1])
                pos += p_
                neg += n_
            an = 0.0
            aa = 0.0
            for t in range(SQ_SUM_LANES):
                an += pn[t]
                aa += pa[t]
            norms[r] = np.sqrt(an + tn)
            sims[r] = aa + ta
            counts[r, 0] = pos
            counts[r, 1] = k - pos - neg
            counts[r, 2] = neg
    return norms, counts, sims


@nb.njit(cache=True, parallel=True, nogil=True)
def dots_with(G, rows, ref):
    """``<G[rows[r]], ref>`` and ``|G[rows[r]] - ref|^2`` per row, in float64 (``ref`` float64).

    Parallel over rows; each accumulated in ``SQ_SUM_LANES`` interleaved partial sums (vectorised,
    deterministic order)."""
    m = rows.size
    d = G.shape[1]
    dots = np.empty(m, dtype=np.float64)
    sq = np.empty(m, dtype=np.float64)
    for r in nb.prange(m):
        i = rows[r]
        pa = np.zeros(SQ_SUM_LANES, dtype=np.float64)
        ps = np.zeros(SQ_SUM_LANES, dtype=np.float64)
        j = 0
        while j + SQ_SUM_LANES <= d:
            for t in range(SQ_SUM_LANES):
                v = np.float64(G[i, j + t])
                w = np.float64(ref[j + t])
                pa[t] += v * w
                diff = v - w
                ps[t] += diff * diff
            j += SQ_SUM_LANES
        a = 0.0
        s = 0.0
        while j < d:
            v = np.float64(G[i, j])
            w = np.float64(ref[j])
            a += v * w
            diff = v - w
            s += diff * diff
            j += 1
        for t in range(SQ_SUM_LANES):
            a += pa[t]
            s += ps[t]
        dots[r] = a
        sq[r] = s
    return dots, sq


@nb.njit(cache=True, parallel=True, nogil=True)
def gram_and_sq_distances(G, rows):
    """Gram matrix ``<g_a, g_b>`` and squared distances ``|g_a - g_b|^2`` over ``rows`` (float64).

    Both are accumulated directly (no ``|a|^2 + |b|^2 - 2ab`` cancellation). Columns are cut
    into blocks (all rows of a block stay in cache while every pair is accumulated) and the
    blocks into a few parallel groups, each with its own (m, m) partial sums (at most ~32 MB).
    """
    m = rows.size
    d = G.shape[1]
    n_blocks = (d + SIGN_BLOCK - 1) // SIGN_BLOCK
    n_groups = max(1, min(n_blocks, 8, (1 << 25) // (16 * m * m)))
    # explicit loops, no array expressions: in a parallel function each np.zeros becomes a
    # parallel loop of its own, compiled and launched
    partial_dot = np.empty((n_groups, m, m), dtype=np.float64)
    partial_sq = np.empty((n_groups, m, m), dtype=np.float64)
    for g in range(n_groups):
        for a in range(m):
            for c in range(m):
                partial_dot[g, a, c] = 0.0
                partial_sq[g, a, c] = 0.0
    for g in nb.prange(n_groups):
        for b in range(g, n_blocks, n_groups):
            j0 = b * SIGN_BLOCK
            j1 = min(d, j0 + SIGN_BLOCK)
            for a in range(m):
                ia = rows[a]
                for c in range(a, m):
                    ic = rows[c]
                    s = 0.0
                    q = 0.0
                    for j in range(j0, j1):
                        x = np.float64(G[ia, j])
                        y = np.float64(G[ic, j])
                        s += x * y
                        diff = x - y
                        q += diff * diff
                    partial_dot[g, a, c] += s
                    partial_sq[g, a, c] += q
    dot = np.empty((m, m), dtype=np.float64)
    sq = np.empty((m, m), dtype=np.float64)
    for a in range(m):
        for c in range(m):
            dot[a, c] = 0.0
            sq[a, c] = 0.0
    for g in range(n_groups):
        for a in range(m):
            for c in range(a, m):
                dot[a, c] += partial_dot[g, a, c]
                sq[a, c] += partial_sq[g, a, c]
    for a in range(m):
        for c in range(a + 1, m):
            dot[c, a] = dot[a, c]
            sq[c, a] = sq[a, c]
    return dot, sq


@nb.njit(cache=True, nogil=True)
def cosines_in_place(C, norms, from_sq_distances):
    """SignGuard-Sim's pairwise cosines, in place in the (m, m) float64 ``C``:
    ``C_ij / (|g_i| |g_j|)`` (0 where that product is 0), where ``C_ij`` is the inner product or,
    with ``from_sq_distances``, the squared distance turned into it first,
    ``0.5 * ((|g_i|^2 + |g_j|^2) - C_ij)``. The same operations in the same order as the NumPy
    expressions with ``np.outer`` and ``np.divide(..., where=...)``, without their (m, m)
    temporaries (at m = 1000 five of them, 8 MB each, took the rule past 10 % of its input)."""
    m = C.shape[0]
    for i in range(m):
        ni = norms[i]
        for j in range(m):
            nj = norms[j]
            v = C[i, j]
            if from_sq_distances:
                v = 0.5 * ((ni * ni + nj * nj) - v)
            den = ni * nj
            C[i, j] = v / den if den > 0 else 0.0
    return C


@nb.njit(cache=True, nogil=True)
def offdiag_row_medians(C, root):
    """Row i's median of ``C[i, j]`` over j != i (of ``sqrt(C[i, j])`` with ``root``), as
    ``np.median(C[~eye].reshape(m, m - 1), axis=1)`` (NaN for a row holding a NaN, as there:
    an overflowing float64 norm can make one), through one row buffer instead of (m, m - 1)
    copies. Needs m >= 2."""
    m = C.shape[0]
    out = np.empty(m, dtype=np.float64)
    buf = np.empty(m, dtype=np.float64)
    for i in range(m):
        t = 0
        nan = False
        for j in range(m):
            if j != i:
                v = np.sqrt(C[i, j]) if root else C[i, j]
                nan |= v != v
                buf[t] = v
                t += 1
        out[i] = np.nan if nan else median_of(buf, m - 1)
    return out
