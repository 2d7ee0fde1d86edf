"""Flat-kernel Mean-Shift, its bandwidth estimator and 2-means, on small (n, p) feature matrices.

These reproduce scikit-learn's ``estimate_bandwidth`` and ``MeanShift(bin_seeding=True,
min_bin_freq=1)`` step by step (see :mod:`robustagg.clustering` for the semantics); distances
are computed exactly as ``sqrt(sum((x - y)**2))`` (scikit-learn sometimes uses the
``|x|^2 - 2 x.y + |y|^2`` expansion, which only differs by rounding).

All inputs are float64 C-contiguous arrays; n is the number of clients (tens to thousands)
and p the number of features (3 or 4), so the O(n^2 p) work is small.
"""

from __future__ import annotations

import numba as nb
import numpy as np

from .._thresholds import MEANSHIFT_PARALLEL_MIN_ROWS
from ._select import select  # quickselect (finite values; features are checked finite)

__all__ = [
    "bin_seeds_kernel",
    "climb_seeds_kernel",
    "estimate_bandwidth_kernel",
    "lloyd_kernel",
    "merge_centers_kernel",
]


@nb.njit(cache=True, nogil=True)
def _sq_dist(X, i, Y, j):
    s = 0.0
    for t in range(X.shape[1]):
        diff = X[i, t] - Y[j, t]
        s += diff * diff
    return s


@nb.njit(cache=True, nogil=True)
def _kth_distance(X, i, n_neighbors, row):
    """The ``n_neighbors``-th smallest distance from point i (itself included), by the
    library's quickselect on the scratch ``row`` (the same value as ``np.partition``, whose
    Numba implementation took ~10 s of a first SignGuard call's compilation)."""
    n = X.shape[0]
    for j in range(n):
        row[j] = np.sqrt(_sq_dist(X, i, X, j))
    select(row, n - n, n - 1, n_neighbors - 1)  # (n - n: not a literal, one specialisation)
    return row[n_neighbors - 1]


@nb.njit(cache=True, nogil=True)
def _estimate_bandwidth_serial(X, n_neighbors):
    n = X.shape[0]
    row = np.empty(n, dtype=np.float64)
    total = 0.0
    for i in range(n):
        total += _kth_distance(X, i, n_neighbors, row)
    return total / n


@nb.njit(cache=True, parallel=True, nogil=True)
def _estimate_bandwidth_parallel(X, n_neighbors):
    n = X.shape[0]
    kth = np.empty(n, dtype=np.float64)
    for i in nb.prange(n):
        row = np.empty(n, dtype=np.float64)
        kth[i] = _kth_distance(X, i, n_neighbors, row)
    total = 0.0
    for i in range(n):
        total += kth[i]
    return total / n


def estimate_bandwidth_kernel(X, n_neighbors):
    """Mean over points of the distance to their ``n_neighbors``-th nearest point (self counted)."""
    if X.shape[0] >= MEANSHIFT_PARALLEL_MIN_ROWS:
        return _estimate_bandwidth_parallel(X, n_neighbors)
    return _estimate_bandwidth_serial(X, n_neighbors)


@nb.njit(cache=True, nogil=True)
def bin_seeds_kernel(X, bin_size):
    """Bin seeds as scikit-learn's ``get_bin_seeds(X, bin_size, min_bin_freq=1)``.

    Each point is binned at ``round(x / bin_size)`` (half to even); the distinct bins, in the
    order of their first point, are the seeds, scaled back by ``bin_size`` **in float32**
    (scikit-learn stores the bins as float32 and NumPy 2 keeps ``float32 * float`` in
    float32; this matters when a point lies exactly a bandwidth away from a seed). When every point has its own bin the points
    themselves are the seeds (scikit-learn's fallback).
    """
    n, p = X.shape
    bins = np.empty((n, p), dtype=np.float64)
    for i in range(n):
        for t in range(p):
            bins[i, t] = np.rint(X[i, t] / bin_size)
    first = np.empty(n, dtype=np.int64)
    n_bins = 0
    for i in range(n):
        new = True
        for b in range(n_bins):
            r = first[b]
            same = True
            for t in range(p):
                if bins[i, t] != bins[r, t]:
                    same = False
                    break
            if same:
                new = False
                break
        if new:
            first[n_bins] = i
            n_bins += 1
    if n_bins == n:
        return X.copy()
    seeds = np.empty((n_bins, p), dtype=np.float64)
    step = np.float32(bin_size)
    for b in range(n_bins):
        for t in range(p):
            seeds[b, t] = np.float64(np.float32(np.float32(bins[first[b], t]) * step))
    return seeds


@nb.njit(cache=True, nogil=True)
def _climb_one(X, seed, r2, stop, max_iter, out):
    """Climb one seed; writes the final mean into ``out`` and returns the last count."""
    n, p = X.shape
    for t in range(p):
        out[t] = seed[t]
    acc = np.empty(p, dtype=np.float64)
    completed = 0
    while True:
        count = 0
        for t in range(p):
            acc[t] = 0.0
        for i in range(n):
            d2 = 0.0
            for t in range(p):
                diff = X[i, t] - out[t]
                d2 += diff * diff
            if d2 <= r2:
                count += 1
                for t in range(p):
                    acc[t] += X[i, t]
        if count == 0:
            return 0
        shift2 = 0.0
        for t in range(p):
            new = acc[t] / count
            diff = new - out[t]
            shift2 += diff * diff
            out[t] = new
        if np.sqrt(shift2) <= stop or completed == max_iter:
            return count
        completed += 1


@nb.njit(cache=True, nogil=True)
def _climb_serial(X, seeds, bandwidth, max_iter):
    p = X.shape[1]
    n_seeds = seeds.shape[0]
    centers = np.empty((n_seeds, p), dtype=np.float64)
    counts = np.zeros(n_seeds, dtype=np.int64)
    r2 = bandwidth * bandwidth
    stop = 1e-3 * bandwidth
    for s in range(n_seeds):
        counts[s] = _climb_one(X, seeds[s], r2, stop, max_iter, centers[s])
    return centers, counts


@nb.njit(cache=True, parallel=True, nogil=True)
def _climb_parallel(X, seeds, bandwidth, max_iter):
    p = X.shape[1]
    n_seeds = seeds.shape[0]
    centers = np.empty((n_seeds, p), dtype=np.float64)
    counts = np.empty(n_seeds, dtype=np.int64)  # every entry is written (np.zeros: a parallel loop)
    r2 = bandwidth * bandwidth
    stop = 1e-3 * bandwidth
    for s in nb.prange(n_seeds):
        counts[s] = _climb_one(X, seeds[s], r2, stop, max_iter, centers[s])
    return centers, counts


def climb_seeds_kernel(X, seeds, bandwidth, max_iter):
    """Move every seed to the mean of the points within ``bandwidth`` until it converges.

    Per seed, as scikit-learn's ``_mean_shift_single_seed``: the points with
    ``|x - m|^2 <= bandwidth^2`` are averaged (summed in index order, then divided); stop when
    the shift is ``<= 1e-3 * bandwidth`` or after ``max_iter`` shifts. Returns the final
    centers and, per seed, the number of points averaged last (0 when no point was within
    reach: that seed yields no center). Seeds run in parallel for large inputs.
    """
    if X.shape[0] * seeds.shape[0] >= MEANSHIFT_PARALLEL_MIN_ROWS * 64:
        return _climb_parallel(X, seeds, bandwidth, max_iter)
    return _climb_serial(X, seeds, bandwidth, max_iter)


@nb.njit(cache=True, nogil=True)
def _lex_greater(A, i, B, j):
    """Whether row i of A is lexicographically greater than row j of B."""
    for t in range(A.shape[1]):
        if A[i, t] > B[j, t]:
            return True
        if A[i, t] < B[j, t]:
            return False
    return False


@nb.njit(cache=True, nogil=True)
def merge_centers_kernel(X, centers, counts, bandwidth, cluster_all):
    """Deduplicate the converged seeds and label the points, as scikit-learn's ``MeanShift.fit``.

    1. Seeds with no point within reach are dropped; seeds that converged to exactly the same
       center are one center, whose intensity is that of the *last* such seed (a dict update).
    2. Centers are ordered by (intensity, center coordinates) descending.
    3. In that order, a center still marked unique removes every center within ``bandwidth``.
    4. Each point gets the nearest remaining center (the first one on a tie); with
       ``cluster_all=False`` a point farther than ``bandwidth`` from it is an orphan (-1).

    Returns ``(labels, cluster_centers)``; ``cluster_centers`` is empty (and every label -1)
    when no seed had a point within reach.
    """
    n, p = X.shape
    n_seeds = centers.shape[0]
    # 1. distinct centers, intensity of the last seed reaching each
    uniq = np.empty(n_seeds, dtype=np.int64)  # representative seed index
    inten = np.empty(n_seeds, dtype=np.int64)
    n_uniq = 0
    for s in range(n_seeds):
        if counts[s] == 0:
            continue
        found = -1
        for u in range(n_uniq):
            r = uniq[u]
            same = True
            for t in range(p):
                if centers[s, t] != centers[r, t]:
                    same = False
                    break
            if same:
                found = u
                break
        if found >= 0:
            inten[found] = counts[s]
        else:
            uniq[n_uniq] = s
            inten[n_uniq] = counts[s]
            n_uniq += 1
    labels = np.full(n, -1, dtype=np.int64)
    if n_uniq == 0:
        return labels, np.empty((0, p), dtype=np.float64)
    # 2. order by (intensity, center) descending: insertion sort, keys are distinct
    order = np.arange(n_uniq)
    for a in range(1, n_uniq):
        key = order[a]
        b = a - 1
        while b >= 0:
            o = order[b]
            # move o right if key sorts before o (key greater)
            if inten[key] > inten[o] or (
                inten[key] == inten[o] and _lex_greater(centers, uniq[key], centers, uniq[o])
            ):
                order[b + 1] = o
                b -= 1
            else:
                break
        order[b + 1] = key
    sorted_centers = np.empty((n_uniq, p), dtype=np.float64)
    for a in range(n_uniq):
        # element by element: a row assignment compiles NumPy's broadcasting checks and their
        # error message (~3.5 s of a first SignGuard call)
        src = uniq[order[a]]
        for t in range(p):
            sorted_centers[a, t] = centers[src, t]
    # 3. remove near duplicates
    r2 = bandwidth * bandwidth
    unique = np.ones(n_uniq, dtype=np.bool_)
    for a in range(n_uniq):
        if unique[a]:
            for b in range(n_uniq):
                if _sq_dist(sorted_centers, a, sorted_centers, b) <= r2:
                    unique[b] = False
            unique[a] = True
    n_clusters = 0
    for a in range(n_uniq):
        if unique[a]:
            n_clusters += 1
    cluster_centers = np.empty((n_clusters, p), dtype=np.float64)
    c = 0
    for a in range(n_uniq):
        if unique[a]:
            for t in range(p):
                cluster_centers[c, t] = sorted_centers[a, t]
            c += 1
    # 4. labels by nearest center
    for i in range(n):
        best = -1
        best_d2 = np.inf
        for c in range(n_clusters):
            d2 = _sq_dist(X, i, cluster_centers, c)
            if d2 < best_d2:
                best_d2 = d2
                best = c
        if cluster_all or np.sqrt(best_d2) <= bandwidth:
            labels[i] = best
    return labels, cluster_centers


@nb.njit(cache=True, nogil=True)
def lloyd_kernel(X, init, max_iter, tol):
    """Lloyd's k-means from the centers ``init``: returns (labels, centers, inertia).

    A point goes to its nearest center (the first on a tie); an emptied cluster keeps its
    previous center. Stops when no label changes or the total squared center shift is
    ``<= tol``, or after ``max_iter`` iterations.
    """
    n, p = X.shape
    k = init.shape[0]
    centers = init.copy()
    labels = np.full(n, -1, dtype=np.int64)
    sums = np.empty((k, p), dtype=np.float64)
    sizes = np.empty(k, dtype=np.int64)
    for _ in range(max_iter):
        changed = False
        for i in range(n):
            best = 0
            best_d2 = np.inf
            for c in range(k):
                d2 = _sq_dist(X, i, centers, c)
                if d2 < best_d2:
                    best_d2 = d2
                    best = c
            if labels[i] != best:
                labels[i] = best
                changed = True
        sums[:] = 0.0
        sizes[:] = 0
        for i in range(n):
            sizes[labels[i]] += 1
            for t in range(p):
                sums[labels[i], t] += X[i, t]
        shift = 0.0
        for c in range(k):
            if sizes[c] > 0:
                for t in range(p):
                    new = sums[c, t] / sizes[c]
                    diff = new - centers[c, t]
                    shift += diff * diff
                    centers[c, t] = new
        if not changed or shift <= tol:
            break
    inertia = 0.0
    for i in range(n):
        best_d2 = np.inf
        best = 0
        for c in range(k):
            d2 = _sq_dist(X, i, centers, c)
            if d2 < best_d2:
                best_d2 = d2
                best = c
        labels[i] = best
        inertia += best_d2
    return labels, centers, inertia
