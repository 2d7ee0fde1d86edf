"""SignGuard's kernels: row norms fused with sign counts on sampled coordinates, and the
similarities to a reference gradient / the raw Gram matrix (SignGuard-Sim).

One pass over G computes every row's L2 norm (accumulated in float64) and, while each block
of columns is in cache, counts the positive / zero / negative entries at the sampled
coordinates that fall in that block. The second pass (the clipped mean of the kept rows) is
the shared ``weighted_column_sum``.
"""

from __future__ import annotations

import numba as nb
import numpy as np

_BLOCK = 4096  # columns per block


_LANES = 8  # independent partial sums: lets LLVM vectorise the sum of squares without fast-math flags


@nb.njit(cache=True, parallel=True, nogil=True)
def norms_and_sign_counts(G, rows, coords):
    """L2 norms of ``G[rows]`` and sign counts of ``G[rows][:, coords]``.

    ``coords`` must be sorted ascending (int64). Returns ``norms`` (float64, len(rows)) and
    ``counts`` (int64, (len(rows), 3)) holding the numbers of positive, zero and negative
    entries at ``coords``. The squares are accumulated in float64 in ``_LANES`` interleaved
    partial sums (a fixed, deterministic order), the sign counts of the sampled coordinates
    of each column block while the block is in cache.
    """
    m = rows.size
    d = G.shape[1]
    k = coords.size
    norms = np.empty(m, dtype=np.float64)
    counts = np.zeros((m, 3), dtype=np.int64)
    for r in nb.prange(m):
        i = rows[r]
        part = np.zeros(_LANES, dtype=np.float64)
        pos = 0
        neg = 0
        c = 0
        for j0 in range(0, d, _BLOCK):
            j1 = min(d, j0 + _BLOCK)
            j = j0
            while j + _LANES <= j1:
                for t in range(_LANES):
                    v = np.float64(G[i, j + t])
                    part[t] += v * v
                j += _LANES
            while j < j1:
                v = np.float64(G[i, j])
                part[0] += v * v
                j += 1
            while c < k and coords[c] < j1:
                v = G[i, coords[c]]
                pos += v > 0
                neg += v < 0
                c += 1
        acc = 0.0
        for t in range(_LANES):
            acc += part[t]
        norms[r] = np.sqrt(acc)
        counts[r, 0] = pos
        counts[r, 1] = k - pos - neg
        counts[r, 2] = neg
    return norms, counts


@nb.njit(cache=True, parallel=True, nogil=True)
def dots_with(G, rows, ref):
    """``<G[rows[r]], ref>`` and ``|G[rows[r]] - ref|^2`` per row, in float64."""
    m = rows.size
    d = G.shape[1]
    dots = np.empty(m, dtype=np.float64)
    sq = np.empty(m, dtype=np.float64)
    for r in nb.prange(m):
        i = rows[r]
        a = 0.0
        s = 0.0
        for j in range(d):
            v = np.float64(G[i, j])
            w = np.float64(ref[j])
            a += v * w
            diff = v - w
            s += diff * diff
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
    n_blocks = (d + _BLOCK - 1) // _BLOCK
    n_groups = max(1, min(n_blocks, 8, (1 << 25) // (16 * m * m)))
    partial_dot = np.zeros((n_groups, m, m), dtype=np.float64)
    partial_sq = np.zeros((n_groups, m, m), dtype=np.float64)
    for g in nb.prange(n_groups):
        for b in range(g, n_blocks, n_groups):
            j0 = b * _BLOCK
            j1 = min(d, j0 + _BLOCK)
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
    dot = np.zeros((m, m), dtype=np.float64)
    sq = np.zeros((m, m), dtype=np.float64)
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
