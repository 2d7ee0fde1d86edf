"""Kernels of the field's rules (issue 8): group means, mixing, clipping scales, distances to
a centre, mean-around-median and the Gram-domain helpers of the subset rules.

Conventions as in the rest of ``robustagg.kernels``: NumPy in, NumPy out, ``(G, rows)`` with
``rows`` the int64 indices of the rows to use (so that excluding a row never copies G),
float64 accumulation, ``cache=True``, never ``fastmath``. Nothing here knows about
validation, array libraries or diagnostics.
"""

from __future__ import annotations

import numba as nb
import numpy as np

_BLOCK = 2048  # columns per parallel block
_MIX_BLOCK_ELEMENTS = 1 << 21  # elements of the float64 block used by ``mix_rows``

__all__ = [
    "centered_gram_from_sq_distances",
    "distances_to_center",
    "group_means",
    "meamed_columns",
    "mix_rows",
    "scale_rows",
    "subset_min_diameter",
    "subset_min_max_eigenvalue",
    "weighted_row_sum",
    "weighted_row_sum_dot",
]


@nb.njit(cache=True, parallel=True, nogil=True)
def group_means(G, members, offsets):
    """Means of groups of rows: ``out[k] = mean(G[members[offsets[k]:offsets[k+1]]])``.

    Returns an array of shape (len(offsets) - 1, d) and G's dtype; every group must be
    non-empty. Accumulates in float64 over column blocks (parallel over blocks).
    """
    n_groups = offsets.size - 1
    d = G.shape[1]
    out = np.empty((n_groups, d), dtype=G.dtype)
    n_blocks = (d + _BLOCK - 1) // _BLOCK
    for b in nb.prange(n_blocks):
        j0 = b * _BLOCK
        j1 = min(d, j0 + _BLOCK)
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


@nb.njit(cache=True, parallel=True, nogil=True)
def weighted_row_sum(G, rows, weights):
    """``sum_r weights[r] * G[rows[r]]`` in float64, shape (d,)."""
    d = G.shape[1]
    out = np.empty(d, dtype=np.float64)
    n_blocks = (d + _BLOCK - 1) // _BLOCK
    for b in nb.prange(n_blocks):
        j0 = b * _BLOCK
        j1 = min(d, j0 + _BLOCK)
        acc = np.zeros(j1 - j0, dtype=np.float64)
        for r in range(rows.size):
            w = weights[r]
            if w == 0.0:
                continue
            i = rows[r]
            for j in range(j0, j1):
                acc[j - j0] += w * G[i, j]
        for j in range(j0, j1):
            out[j] = acc[j - j0]
    return out


@nb.njit(cache=True, parallel=True, nogil=True)
def scale_rows(G, rows, scales):
    """A new (len(rows), d) matrix of G's dtype: ``out[r] = scales[r] * G[rows[r]]``.

    The product is formed in float64 and rounded once to G's dtype.
    """
    m = rows.size
    d = G.shape[1]
    out = np.empty((m, d), dtype=G.dtype)
    for r in nb.prange(m):
        i = rows[r]
        s = scales[r]
        for j in range(d):
            out[r, j] = s * np.float64(G[i, j])
    return out


@nb.njit(cache=True, parallel=True, nogil=True)
def distances_to_center(G, rows, center):
    """Euclidean distances ``||G[rows[r]] - center||`` (float64, shape (len(rows),)).

    ``center`` is float64 of shape (d,). Parallel over rows.
    """
    m = rows.size
    d = G.shape[1]
    out = np.empty(m, dtype=np.float64)
    for r in nb.prange(m):
        i = rows[r]
        acc = 0.0
        for j in range(d):
            diff = np.float64(G[i, j]) - center[j]
            acc += diff * diff
        out[r] = np.sqrt(acc)
    return out


@nb.njit(cache=True, parallel=True, nogil=True)
def weighted_row_sum_dot(G, rows, vector):
    """Inner products ``<G[rows[r]], vector>`` in float64 (``vector`` float64 of shape (d,))."""
    m = rows.size
    d = G.shape[1]
    out = np.empty(m, dtype=np.float64)
    for r in nb.prange(m):
        i = rows[r]
        acc = 0.0
        for j in range(d):
            acc += np.float64(G[i, j]) * vector[j]
        out[r] = acc
    return out


def mix_rows(G, rows, W):
    """``W @ G[rows]`` as a new (W.shape[0], d) matrix of G's dtype, accumulated in float64.

    Dense mixing (NNM): blocks of columns are lifted to float64 and multiplied by BLAS, so the
    peak extra memory is one (len(rows), block) float64 block besides the output.
    """
    W = np.ascontiguousarray(W, dtype=np.float64)
    m = rows.size
    d = G.shape[1]
    out = np.empty((W.shape[0], d), dtype=G.dtype)
    all_rows = m == G.shape[0] and np.array_equal(rows, np.arange(m))
    width = max(256, _MIX_BLOCK_ELEMENTS // max(m, 1))
    for j0 in range(0, d, width):
        j1 = min(d, j0 + width)
        block = G[:, j0:j1] if all_rows else G[rows, j0:j1]
        out[:, j0:j1] = W @ block.astype(np.float64)
    return out


@nb.njit(cache=True, nogil=True)
def _meamed_column(buf, m, keep):
    v = np.sort(buf[:m])
    lo = (m - 1) // 2
    med = 0.5 * (v[lo] + v[m // 2])
    left = lo
    right = lo + 1
    acc = 0.0
    for _ in range(keep):
        if right >= m or (left >= 0 and med - v[left] <= v[right] - med):
            acc += v[left]
            left -= 1
        else:
            acc += v[right]
            right += 1
    return acc / keep


@nb.njit(cache=True, parallel=True, nogil=True)
def meamed_columns(G, rows, keep):
    """Per column, the mean of the ``keep`` values closest to the column median.

    Median: NumPy's convention (average of the two middle values for an even count). Ties in
    the distance to the median go to the smaller value. Columns are processed in blocks that
    are transposed into a per-thread buffer (one sort per column).
    """
    m = rows.size
    d = G.shape[1]
    out = np.empty(d, dtype=G.dtype)
    block = 256
    n_blocks = (d + block - 1) // block
    for b in nb.prange(n_blocks):
        j0 = b * block
        j1 = min(d, j0 + block)
        buf = np.empty((j1 - j0, m), dtype=np.float64)
        for r in range(m):
            i = rows[r]
            for j in range(j0, j1):
                buf[j - j0, r] = G[i, j]
        for j in range(j0, j1):
            out[j] = _meamed_column(buf[j - j0], m, keep)
    return out


def centered_gram_from_sq_distances(D2, weights=None):
    """Gram matrix of the points centred on their (weighted) mean, from squared distances.

    For weights w summing to one and μ = Σ w_i x_i,
    ``<x_i - μ, x_j - μ> = -1/2 (D2_ij - (D2 w)_i - (D2 w)_j + wᵀ D2 w)`` (classical
    multidimensional scaling): translation-invariant, so no cancellation against large norms.
    """
    D2 = np.asarray(D2, dtype=np.float64)
    m = D2.shape[0]
    w = np.full(m, 1.0 / m) if weights is None else np.asarray(weights, dtype=np.float64) / np.sum(weights)
    a = D2 @ w
    c = float(w @ a)
    K = -0.5 * (D2 - a[:, None] - a[None, :] + c)
    return 0.5 * (K + K.T)


@nb.njit(cache=True, nogil=True)
def _advance(p, pi, pj, removed):
    """First pair position >= p whose two rows are both still present."""
    P = pi.size
    while p < P and (removed[pi[p]] or removed[pj[p]]):
        p += 1
    return p


@nb.njit(cache=True, nogil=True)
def subset_min_diameter(pi, pj, pd, m, f):
    """Exact minimum-diameter subset of m - f rows by branching on the largest pair.

    ``pi, pj, pd`` list the pairs (i < j) by decreasing distance (ties: increasing (i, j)).
    The largest pair still present must lose one of its two rows, or the diameter is its
    distance; removing a row never increases the diameter, so an optimal subset removes an
    endpoint of the largest remaining pair at each of f steps: a binary search tree of depth
    f (2^f leaves at most), rows of lower index removed first; the first leaf of smallest
    diameter wins. Returns ``(chosen (m,) bool, diameter, leaves visited)``.
    """
    P = pi.size
    removed = np.zeros(m, dtype=np.bool_)
    best = np.inf
    best_removed = np.zeros(m, dtype=np.bool_)
    stack_row = np.empty(f + 1, dtype=np.int64)
    pos = np.zeros(f + 1, dtype=np.int64)
    branch = np.zeros(f + 1, dtype=np.int64)
    leaves = 0
    depth = 0
    pos[0] = _advance(0, pi, pj, removed)
    while depth >= 0:
        p = pos[depth]
        if depth == f or p >= P:
            leaves += 1
            val = pd[p] if p < P else 0.0
            if val < best:
                best = val
                best_removed[:] = removed
                if p >= P and depth < f:  # fewer than 2 rows left: complete with the lowest rows
                    need = f - depth
                    for r in range(m):
                        if need == 0:
                            break
                        if not best_removed[r]:
                            best_removed[r] = True
                            need -= 1
            depth -= 1
            continue
        if branch[depth] == 2:
            removed[stack_row[depth]] = False
            branch[depth] = 0
            depth -= 1
            continue
        if branch[depth] == 1:
            removed[stack_row[depth]] = False
            row = pj[p]
            branch[depth] = 2
        else:
            row = pi[p]
            branch[depth] = 1
        removed[row] = True
        stack_row[depth] = row
        pos[depth + 1] = _advance(p, pi, pj, removed)
        branch[depth + 1] = 0
        depth += 1
    chosen = ~best_removed
    return chosen, best, leaves


@nb.njit(cache=True, nogil=True)
def _next_combination(idx, m):
    k = idx.size
    t = k - 1
    while t >= 0 and idx[t] == m - k + t:
        t -= 1
    if t < 0:
        return False
    idx[t] += 1
    for u in range(t + 1, k):
        idx[u] = idx[u - 1] + 1
    return True


@nb.njit(cache=True, nogil=True)
def subset_min_max_eigenvalue(K, keep):
    """Exhaustive search of the size-``keep`` subset whose covariance has the smallest top
    eigenvalue, from the (m, m) Gram matrix ``K`` of the points (any centring).

    For a subset S the non-zero spectrum of Σ_S = (1/|S|) Σ_{i∈S} (x_i - μ_S)(x_i - μ_S)ᵀ is
    that of (1/|S|) J K_S J with J = I - 11ᵀ/|S|. Subsets are visited in lexicographic order;
    ties keep the first. Returns ``(chosen (m,) bool, smallest top eigenvalue)``.
    """
    m = K.shape[0]
    idx = np.arange(keep)
    best = np.inf
    best_idx = idx.copy()
    sub = np.empty((keep, keep), dtype=np.float64)
    while True:
        for a in range(keep):
            for b in range(keep):
                sub[a, b] = K[idx[a], idx[b]]
        rmean = np.empty(keep, dtype=np.float64)
        for a in range(keep):
            rmean[a] = sub[a].mean()
        tmean = rmean.mean()
        for a in range(keep):
            for b in range(keep):
                sub[a, b] = (sub[a, b] - rmean[a] - rmean[b] + tmean) / keep
        lam = np.linalg.eigvalsh(sub)[keep - 1]
        if lam < best:
            best = lam
            best_idx[:] = idx
        if not _next_combination(idx, m):
            break
    chosen = np.zeros(m, dtype=np.bool_)
    for a in range(keep):
        chosen[best_idx[a]] = True
    return chosen, max(best, 0.0)


def _sq_distances_fallback(G, rows):
    """Pairwise squared distances of ``G[rows]`` (float64, (m, m)), plain NumPy.

    The rows are centred on their mean block by block before the Gram matrix is accumulated in
    float64, so that the distances do not cancel against large norms.
    """
    m = rows.size
    d = G.shape[1]
    all_rows = m == G.shape[0] and np.array_equal(rows, np.arange(m))
    width = max(256, _MIX_BLOCK_ELEMENTS // max(m, 1))
    K = np.zeros((m, m), dtype=np.float64)
    for j0 in range(0, d, width):
        j1 = min(d, j0 + width)
        block = (G[:, j0:j1] if all_rows else G[rows, j0:j1]).astype(np.float64)
        block -= block.mean(axis=0)
        K += block @ block.T
    diag = np.diag(K).copy()
    D2 = diag[:, None] + diag[None, :] - 2.0 * K
    np.maximum(D2, 0.0, out=D2)
    np.fill_diagonal(D2, 0.0)
    return D2


def sq_distances(G, rows):
    """Pairwise squared Euclidean distances of ``G[rows]``: the shared kernel when present."""
    try:
        from . import pairwise_sq_distances as shared
    except ImportError:
        shared = None
    if shared is not None:
        D2 = np.asarray(shared(G, rows), dtype=np.float64)
    else:
        D2 = _sq_distances_fallback(G, rows)
    D2 = 0.5 * (D2 + D2.T)
    np.maximum(D2, 0.0, out=D2)
    np.fill_diagonal(D2, 0.0)
    return D2


def row_norms_of(G, rows):
    """Euclidean norms of ``G[rows]`` (float64): the shared kernel when present."""
    try:
        from . import row_norms as shared
    except ImportError:
        shared = None
    if shared is not None:
        return np.asarray(shared(G, rows), dtype=np.float64)
    return distances_to_center(G, rows, np.zeros(G.shape[1], dtype=np.float64))
