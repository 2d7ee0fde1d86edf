"""Distance kernels: accurate pairwise squared Euclidean distances between rows.

Scheme (no catastrophic cancellation in float32, no copy of G):

1. Columns are split into a fixed number of chunks (a function of d only, so that the result
   is bit-identical whatever the thread count); chunks run in parallel.
2. Inside a chunk, blocks of ``_GRAM_BLOCK`` columns of the selected rows are transposed into a
   small float64 buffer and **centred on their column mean** (any common shift leaves distances
   unchanged, and centring removes the large common component that makes ``|x|^2 + |y|^2 - 2xy``
   cancel). The centred Gram matrix is accumulated in float64 (4 columns per pass: a
   register-friendly outer-product update).
3. ``D_ij = N_i + N_j - 2 C_ij`` (``N`` the Gram diagonal), clamped at 0.
4. Pairs where cancellation is still possible (``D_ij <= _RECOMPUTE_RTOL * (N_i + N_j)``:
   near-duplicate rows) are recomputed exactly as a direct float64 sum of squared differences.
"""

from __future__ import annotations

import numba as nb
import numpy as np

_GRAM_BLOCK = 256  # columns per transposed buffer (m x 256 float64 stays in L1/L2)
_CHUNK_COLS = 16384  # target columns per parallel chunk
_MAX_CHUNKS = 64
_RECOMPUTE_RTOL = 1e-5  # relative threshold below which a pair is recomputed directly
_PAIR_BLOCK = 4096  # columns per block in the direct recomputation


@nb.njit(cache=True, nogil=True)
def _n_chunks(d, m):
    c = (d + _CHUNK_COLS - 1) // _CHUNK_COLS
    if c > _MAX_CHUNKS:
        c = _MAX_CHUNKS
    # bound the partial-result memory (c * m * m float64) to ~64 MiB
    cap = max(1, (8 * 1024 * 1024) // max(1, m * m))
    if c > cap:
        c = cap
    return max(1, c)


@nb.njit(cache=True, parallel=True, nogil=True)
def centred_gram(G, rows):
    """Gram matrix of the rows ``rows`` of G after centring each column on its mean over those
    rows, accumulated in float64: (m, m) float64, symmetric.

    Centring is applied per block of columns with that block's mean; since a shift common to
    all rows never changes a distance, ``C_ii + C_jj - 2 C_ij`` is the squared distance.
    """
    m = rows.size
    d = G.shape[1]
    nc = _n_chunks(d, m)
    part = np.zeros((nc, m, m), dtype=np.float64)
    for c in nb.prange(nc):
        j0 = (d * c) // nc
        j1 = (d * (c + 1)) // nc
        acc = part[c]
        buf = np.empty((_GRAM_BLOCK, m), dtype=np.float64)
        mu = np.empty(_GRAM_BLOCK, dtype=np.float64)
        for b0 in range(j0, j1, _GRAM_BLOCK):
            bw = min(_GRAM_BLOCK, j1 - b0)
            for k in range(bw):
                mu[k] = 0.0
            for r in range(m):
                i = rows[r]
                for k in range(bw):
                    mu[k] += G[i, b0 + k]
            for k in range(bw):
                mu[k] /= m
            for r in range(m):
                i = rows[r]
                for k in range(bw):
                    buf[k, r] = np.float64(G[i, b0 + k]) - mu[k]
            k = 0
            while k + 4 <= bw:
                x0 = buf[k]
                x1 = buf[k + 1]
                x2 = buf[k + 2]
                x3 = buf[k + 3]
                for i in range(m):
                    a0 = x0[i]
                    a1 = x1[i]
                    a2 = x2[i]
                    a3 = x3[i]
                    row = acc[i]
                    for j in range(i + 1):
                        row[j] += a0 * x0[j] + a1 * x1[j] + a2 * x2[j] + a3 * x3[j]
                k += 4
            while k < bw:
                x0 = buf[k]
                for i in range(m):
                    a0 = x0[i]
                    row = acc[i]
                    for j in range(i + 1):
                        row[j] += a0 * x0[j]
                k += 1
    out = np.zeros((m, m), dtype=np.float64)
    for c in range(nc):
        for i in range(m):
            for j in range(i + 1):
                out[i, j] += part[c, i, j]
    for i in range(m):
        for j in range(i):
            out[j, i] = out[i, j]
    return out


@nb.njit(cache=True, parallel=True, nogil=True)
def sq_distances_of_pairs(G, rows, pi, pj):
    """Direct ``sum_k (G[rows[pi[p]], k] - G[rows[pj[p]], k])^2`` in float64 for each pair p."""
    P = pi.size
    d = G.shape[1]
    out = np.zeros(P, dtype=np.float64)
    if P == 0:
        return out
    nc = (d + _PAIR_BLOCK - 1) // _PAIR_BLOCK
    cap = max(1, (8 * 1024 * 1024) // P)
    if nc > cap:
        nc = cap
    part = np.zeros((nc, P), dtype=np.float64)
    for c in nb.prange(nc):
        j0 = (d * c) // nc
        j1 = (d * (c + 1)) // nc
        for b0 in range(j0, j1, _PAIR_BLOCK):
            b1 = min(j1, b0 + _PAIR_BLOCK)
            for p in range(P):
                a = rows[pi[p]]
                b = rows[pj[p]]
                s = 0.0
                for k in range(b0, b1):
                    t = np.float64(G[a, k]) - np.float64(G[b, k])
                    s += t * t
                part[c, p] += s
    for c in range(nc):
        for p in range(P):
            out[p] += part[c, p]
    return out


@nb.njit(cache=True, nogil=True)
def pairwise_sq_distances(G, rows):
    """Squared Euclidean distances between the rows ``rows`` of G: (m, m) float64.

    Symmetric with an exact zero diagonal; accurate to float64 rounding relative to each
    distance (see the module docstring for the scheme). ``G`` is float32 or float64, any
    layout; only block-sized pieces are copied.
    """
    m = rows.size
    C = centred_gram(G, rows)
    D = np.zeros((m, m), dtype=np.float64)
    n_flag = 0
    for i in range(m):
        for j in range(i):
            v = C[i, i] + C[j, j] - 2.0 * C[i, j]
            if v < 0.0:
                v = 0.0
            D[i, j] = v
            if v <= _RECOMPUTE_RTOL * (C[i, i] + C[j, j]):
                n_flag += 1
    if n_flag > 0:
        pi = np.empty(n_flag, dtype=np.int64)
        pj = np.empty(n_flag, dtype=np.int64)
        p = 0
        for i in range(m):
            for j in range(i):
                if D[i, j] <= _RECOMPUTE_RTOL * (C[i, i] + C[j, j]):
                    pi[p] = i
                    pj[p] = j
                    p += 1
        exact = sq_distances_of_pairs(G, rows, pi, pj)
        for p in range(n_flag):
            D[pi[p], pj[p]] = exact[p]
    for i in range(m):
        for j in range(i):
            D[j, i] = D[i, j]
    return D


@nb.njit(cache=True, nogil=True)
def krum_scores(D, k):
    """Krum scores from an (m, m) squared-distance matrix: for each row the sum of its ``k``
    smallest distances to the *other* rows (float64). ``0 <= k <= m - 1``."""
    m = D.shape[0]
    out = np.zeros(m, dtype=np.float64)
    buf = np.empty(max(m - 1, 1), dtype=np.float64)
    for i in range(m):
        p = 0
        for j in range(m):
            if j != i:
                buf[p] = D[i, j]
                p += 1
        v = np.sort(buf[: m - 1])
        s = 0.0
        for t in range(k):
            s += v[t]
        out[i] = s
    return out
