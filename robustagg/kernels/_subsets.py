"""Exact subset searches of the subset rules, on distance and Gram matrices: the
minimum-diameter subset (MDA: ``subset_min_diameter``, branching on the largest pair, and
``first_subset_within``, the lexicographically first subset within a diameter) and the subset
whose covariance has the smallest top eigenvalue (SMEA: ``subset_min_max_eigenvalue``)."""

from __future__ import annotations

import numba as nb
import numpy as np

__all__ = ["first_subset_within", "subset_min_diameter", "subset_min_max_eigenvalue"]


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
