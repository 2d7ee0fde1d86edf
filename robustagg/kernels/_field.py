"""Kernels of the field's rules: group means (bucketing), dense mixing (NNM), the
Gram-domain helpers and exact searches of the subset rules (MDA, SMEA).

Row norms, clipping, weighted sums, distances to a point, pairwise distances and the
mean around the median are the shared kernels of ``robustagg.kernels`` (not duplicated here).

Conventions as in the rest of ``robustagg.kernels``: NumPy in, NumPy out, ``(G, rows)`` with
``rows`` the int64 indices of the rows to use (so that excluding a row never copies G),
float64 accumulation, ``cache=True``, no fast-math flags. Nothing here knows about
validation, array libraries or diagnostics.
"""

from __future__ import annotations

import numba as nb
import numpy as np

from .._thresholds import COLUMN_BLOCK
from ._coordinate import _NET_MAX_ROWS, _SEL_BLOCK, _fill_transposed, _select, column_closest_to_median_mean

_BLOCK = COLUMN_BLOCK  # columns per parallel block
_MIX_BLOCK_ELEMENTS = 1 << 21  # elements of the float64 block used by ``mix_rows``
_MIX_K32 = 256  # rows per float32 SGEMM partial sum in ``mix_rows``

__all__ = [
    "centered_gram_from_sq_distances",
    "column_mean_around_median",
    "group_means",
    "mix_rows",
    "sq_distances",
    "subset_min_diameter",
    "subset_min_max_eigenvalue",
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


def mix_rows(G, rows, W):
    """``W @ G[rows]`` as a new (W.shape[0], d) matrix of G's dtype, accumulated in float64.

    Dense mixing (NNM), blocks of columns at a time. float64 input: DGEMM on the block.
    float32 input: SGEMM over at most ``_MIX_K32`` rows at a time (float32 partial sums of that
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
    width = max(256, _MIX_BLOCK_ELEMENTS // max(m, M, 1))
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
        for r0 in range(0, m, _MIX_K32):
            r1 = min(m, r0 + _MIX_K32)
            a += W32[:, r0:r1] @ block[r0:r1]
        out[:, j0:j1] = a
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
                for r in range(m):  # (no slice assignment: NumPy's shape checks cost seconds)
                    best_removed[r] = removed[r]
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
            for a in range(keep):  # (a slice assignment compiles NumPy's shape checks: ~3.5 s)
                best_idx[a] = idx[a]
        if not _next_combination(idx, m):
            break
    chosen = np.zeros(m, dtype=np.bool_)
    for a in range(keep):
        chosen[best_idx[a]] = True
    return chosen, max(best, 0.0)


def sq_distances(G, rows):
    """Pairwise squared distances of ``G[rows]`` (shared kernel), symmetrised, diagonal 0."""
    from . import pairwise_sq_distances

    D2 = np.asarray(pairwise_sq_distances(G, rows), dtype=np.float64)
    D2 = 0.5 * (D2 + D2.T)
    np.maximum(D2, 0.0, out=D2)
    np.fill_diagonal(D2, 0.0)
    return D2


@nb.njit(cache=True, nogil=True)
def first_subset_within(D, threshold, keep, max_nodes):
    """The lexicographically first set of ``keep`` rows whose pairwise distances are all
    <= ``threshold``: a depth-first scan of the rows in index order (row i included before
    excluded). A row within ``threshold`` of every row is always included while there is room
    (swapping it in can only make a valid set lexicographically smaller), so the scan only
    branches on the rows of the pairs above the threshold. Returns ``(mask, found)``;
    ``found`` is False when no such set exists or the scan exceeded ``max_nodes``."""
    m = D.shape[0]
    universal = np.ones(m, dtype=np.bool_)
    for i in range(m):
        for j in range(i + 1, m):
            if D[i, j] > threshold:
                universal[i] = False
                universal[j] = False
    chosen = np.empty(keep, dtype=np.int64)
    nxt = np.zeros(keep + 1, dtype=np.int64)
    forced = np.zeros(keep + 1, dtype=np.bool_)  # the row at this depth was a universal one
    depth = 0
    nodes = 0
    out = np.zeros(m, dtype=np.bool_)
    while depth >= 0:
        if depth == keep:
            for t in range(keep):
                out[chosen[t]] = True
            return out, True
        i = nxt[depth]
        if i > m - (keep - depth):
            depth -= 1
            continue
        nodes += 1
        if nodes > max_nodes:
            return out, False
        nxt[depth] = i + 1
        if universal[i]:
            if forced[depth]:  # already tried with this universal row: excluding it cannot help
                forced[depth] = False
                depth -= 1
                continue
            forced[depth] = True
            nxt[depth] = i  # revisit marker: the next visit at this depth backtracks
            chosen[depth] = i
            nxt[depth + 1] = i + 1
            forced[depth + 1] = False
            depth += 1
            continue
        ok = True
        for t in range(depth):
            if D[chosen[t], i] > threshold:
                ok = False
                break
        if ok:
            chosen[depth] = i
            nxt[depth + 1] = i + 1
            forced[depth + 1] = False
            depth += 1
    return out, False


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
    value nearer the median first). Up to ``_NET_MAX_ROWS`` rows this is Bulyan's shared
    second-stage kernel ``column_closest_to_median_mean`` (sorting network across columns, then
    the walk outwards from the median); above, selection only (O(m) per column instead of a
    sort, equal up to the float64 summation order). float64 accumulation, G.dtype (d,)."""
    rows = np.ascontiguousarray(rows, dtype=np.int64)
    if rows.size <= _NET_MAX_ROWS:
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
    n_blocks = (d + _SEL_BLOCK - 1) // _SEL_BLOCK
    a0 = (m - 1) // 2
    for bidx in nb.prange(n_blocks):
        b0 = bidx * _SEL_BLOCK
        bw = min(_SEL_BLOCK, d - b0)
        buf = np.empty((_SEL_BLOCK, m), dtype=np.float64)
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
            _select(v, m - m, m - 1, a0)  # (m - m: the int64 specialisation, not a literal 0)
            med = v[a0]
            if m % 2 == 0:
                nxt = v[a0 + 1]
                for i in range(a0 + 2, m):
                    nxt = min(nxt, v[i])
                med = (med + nxt) / 2.0
            for i in range(m):
                w[i] = abs(v[i] - med)
            _select(w, m - m, m - 1, beta - 1)
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
