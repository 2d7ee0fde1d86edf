"""Distance kernels: accurate pairwise squared Euclidean distances between rows, the Gram
matrix of centred points from them, and the Krum scores.

Scheme (no catastrophic cancellation in float32, no copy of G):

1. The Gram matrix of the shifted rows (``_gram``): column chunks fixed by d, their (m, m)
   float64 partials added in chunk order (bit-identical whatever the thread count).
2. Every row is **shifted by a common vector s** (a shift common to all rows leaves every
   distance unchanged; what it changes is the scale ``N_i = |g_i - s|^2`` against which the
   Gram formula cancels). Inside a chunk, blocks of columns are multiplied in the input's
   precision and the blocks are accumulated in float64: float32 input with at most
   ``TILED_GRAM_MAX_ROWS`` rows goes through the register-tiled kernel of ``_gramtile``
   (float32 lanes over at most 4096 columns; about twice BLAS's speed on these skinny
   shapes), other float32 input through SGEMM/syrk over at most ``GRAM_BLOCK_F32`` columns,
   float64 through DGEMM. The shift is chosen on a probe (the Gram of ``SHIFT_PROBE_BLOCKS``
   blocks of columns spread over d):

   * ``s = 0`` when the rows are a contiguous range of G (every finite row): BLAS reads G in
     place, no copy at all -- unless the probe predicts that shifting by a central row would
     flag more than m fewer pairs in step 4 (the rows share a large common component);
   * otherwise ``s`` = a row (the first one; the central row -- smallest median distance --
     when the probe or a first pass says so): blocks of the selected rows are copied into a
     small buffer minus the reference row (difference in float64), at most
     ``CENTRED_BLOCK_MAX_BYTES``.

   After the full pass, if more than m pairs are flagged and a central row would flag more
   than m fewer, the Gram is recomputed once around that row.
3. ``D_ij = N_i + N_j - 2 C_ij`` (``N`` the Gram diagonal: squared distances to the shift),
   clamped at 0.
4. Pairs where cancellation is still possible, ``D_ij <= tau * (N_i + N_j)`` (near-duplicate
   rows: ``tau = 1e-1`` for float32, ``1e-6`` for float64), are recomputed exactly as a direct
   float64 sum of squared differences. Exact duplicates are grouped first (flagged pairs at
   rounding level, verified value by value against their class's first row), so that equal
   rows share their row of D and only one pair per pair of classes is summed. Every other pair
   has a relative error of at most about ``eps * sqrt(block) / tau`` (~4e-5 for float32 input,
   ~1e-9 for float64), typically far less (~1e-7 for float32 rows whose distance is comparable
   to their distance from the shift).

The rows are finite (the validation layer excludes the others, docs/conventions.md); a float32
block Gram that still overflows is redone in float64.

From the distances: ``sq_distances`` (symmetrised, zero diagonal) and
``centered_gram_from_sq_distances`` (the Gram of the points centred on their weighted mean, the
subset rules' and the mimic attack's), ``krum_scores`` and Bulyan's ``repeated_krum``. The
tolerances and block widths are ``robustagg._thresholds``'s.
"""

from __future__ import annotations

import numba as nb
import numpy as np

from .._threads import blas_single_thread
from .._thresholds import (
    DUPLICATE_RTOL_F32,
    DUPLICATE_RTOL_F64,
    EQUAL_ROWS_CHUNKS,
    EQUAL_ROWS_STEP,
    PAIR_BLOCK,
    RECOMPUTE_RTOL_F32,
    RECOMPUTE_RTOL_F64,
    SHIFT_PROBE_BLOCKS,
    SHIFT_PROBE_COLUMNS,
)
from ._gram import contiguous_rows, gram
from ._select import argsort_stable, median_of

__all__ = [
    "centered_gram_from_sq_distances",
    "krum_scores",
    "pairwise_sq_distances",
    "repeated_krum",
    "sq_distances",
    "sq_distances_of_pairs",
]


@nb.njit(cache=True, parallel=True, nogil=True)
def sq_distances_of_pairs(G, rows, pi, pj):
    """Direct ``sum_k (G[rows[pi[p]], k] - G[rows[pj[p]], k])^2`` in float64 for each pair p."""
    P = pi.size
    d = G.shape[1]
    # explicit loops, no array expressions: in a parallel function each of those (np.zeros)
    # becomes a parallel loop of its own, compiled and launched
    out = np.empty(P, dtype=np.float64)
    for p in range(P):
        out[p] = 0.0
    if P == 0:
        return out
    nc = (d + PAIR_BLOCK - 1) // PAIR_BLOCK
    cap = max(1, (8 * 1024 * 1024) // P)
    if nc > cap:
        nc = cap
    part = np.empty((nc, P), dtype=np.float64)
    for c in range(nc):
        for p in range(P):
            part[c, p] = 0.0
    for c in nb.prange(nc):
        j0 = (d * c) // nc
        j1 = (d * (c + 1)) // nc
        for b0 in range(j0, j1, PAIR_BLOCK):
            b1 = min(j1, b0 + PAIR_BLOCK)
            for p in range(P):
                a = rows[pi[p]]
                b = rows[pj[p]]
                acc = np.zeros(8, dtype=np.float64)  # interleaved partial sums (vectorisable)
                k = b0
                while k + 8 <= b1:
                    for lane in range(8):
                        t = np.float64(G[a, k + lane]) - np.float64(G[b, k + lane])
                        acc[lane] += t * t
                    k += 8
                s = 0.0
                while k < b1:
                    t = np.float64(G[a, k]) - np.float64(G[b, k])
                    s += t * t
                    k += 1
                for lane in range(8):
                    s += acc[lane]
                part[c, p] += s
    for c in range(nc):
        for p in range(P):
            out[p] += part[c, p]
    return out


@nb.njit(cache=True, nogil=True)
def _distances_from_gram(C, rtol):
    """D from the centred Gram (clamped at 0) and the pairs (i > j) to recompute directly."""
    m = C.shape[0]
    D = np.zeros((m, m), dtype=np.float64)
    n_flag = 0
    for i in range(m):
        for j in range(i):
            v = C[i, i] + C[j, j] - 2.0 * C[i, j]
            if v < 0.0:
                v = 0.0
            D[i, j] = v
            if v <= rtol * (C[i, i] + C[j, j]):
                n_flag += 1
    pi = np.empty(n_flag, dtype=np.int64)
    pj = np.empty(n_flag, dtype=np.int64)
    p = 0
    for i in range(m):
        for j in range(i):
            if D[i, j] <= rtol * (C[i, i] + C[j, j]):
                pi[p] = i
                pj[p] = j
                p += 1
    return D, pi, pj


@nb.njit(cache=True, nogil=True)
def _fill_pairs(D, pi, pj, exact):
    for p in range(pi.size):
        D[pi[p], pj[p]] = exact[p]
    m = D.shape[0]
    for i in range(m):
        for j in range(i):
            D[j, i] = D[i, j]
    return D


@nb.njit(cache=True, nogil=True)
def _count_flags(D, s, rtol, cls):
    """Pairs i > j of distinct classes with D_ij <= rtol * (s_i + s_j) (D's lower triangle):
    the pairs a shift whose squared distances to the rows are ``s`` would flag."""
    m = D.shape[0]
    n = 0
    for i in range(m):
        for j in range(i):
            if cls[i] != cls[j] and D[i, j] <= rtol * (s[i] + s[j]):
                n += 1
    return n


@nb.njit(cache=True, nogil=True)
def _candidate_roots(D, C, pi, pj, dup):
    """Union-find over the flagged pairs whose Gram distance is at rounding level,
    ``D_ij <= dup * (C_ii + C_jj)`` (candidate exact duplicates): the root (smallest index) of
    each row's candidate class."""
    m = C.shape[0]
    parent = np.arange(m)
    for p in range(pi.size):
        i = pi[p]
        j = pj[p]
        if D[i, j] <= dup * (C[i, i] + C[j, j]):
            while parent[i] != i:
                i = parent[i]
            while parent[j] != j:
                j = parent[j]
            if i < j:
                parent[j] = i
            elif j < i:
                parent[i] = j
    root = np.empty(m, dtype=np.int64)
    for i in range(m):
        r = i
        while parent[r] != r:
            r = parent[r]
        root[i] = r
    return root


@nb.njit(cache=True, parallel=True, nogil=True)
def _rows_equal(G, a, b):
    """``eq[p] = all(G[a[p]] == G[b[p]])``: column chunks in parallel, each stopping at its first
    block of EQUAL_ROWS_STEP values holding a difference (branch-free, vectorised count inside)."""
    P = a.size
    d = G.shape[1]
    nc = min(EQUAL_ROWS_CHUNKS, max(1, (d + EQUAL_ROWS_STEP - 1) // EQUAL_ROWS_STEP))
    # explicit loops, no array expressions (np.zeros, np.ones): in a parallel function each of
    # those becomes a parallel loop of its own, compiled and launched
    diff = np.empty((nc, P), dtype=np.bool_)
    for c in range(nc):
        for p in range(P):
            diff[c, p] = False
    for c in nb.prange(nc):
        j0 = (d * c) // nc
        j1 = (d * (c + 1)) // nc
        for p in range(P):
            k = j0
            while k < j1:
                k1 = min(j1, k + EQUAL_ROWS_STEP)
                x = G[a[p], k:k1]
                y = G[b[p], k:k1]
                cnt = 0
                for t in range(k1 - k):
                    cnt += x[t] != y[t]
                if cnt != 0:
                    diff[c, p] = True
                    break
                k = k1
    eq = np.empty(P, dtype=np.bool_)
    for p in range(P):
        eq[p] = True
    for c in range(nc):
        for p in range(P):
            if diff[c, p]:
                eq[p] = False
    return eq


@nb.njit(cache=True, nogil=True)
def _share_class_rows(D, cls):
    """In place: ``D[i, k] = D[cls[i], cls[k]]`` (symmetric D; ``cls[c] == c`` for a class's
    representative). Representative rows first take their representatives' columns, then every
    other row copies its representative's row."""
    m = D.shape[0]
    for r in range(m):
        if cls[r] == r:
            for k in range(m):
                D[r, k] = D[r, cls[k]]
    for i in range(m):
        c = cls[i]
        if c != i:
            for k in range(m):
                D[i, k] = D[c, k]
    return D


def _equal_classes(G, rows, D, C, pi, pj, dup):
    """Class representative (position) of each row: rows proven exactly equal share the
    smallest position of their candidate class; every other row is its own class. Candidates
    come from the Gram (rounding-level distances); each member is then compared value by value
    with its root (f identical rows cost f - 1 row comparisons; a non-equal candidate usually
    stops at the first block)."""
    m = rows.size
    cls = np.arange(m, dtype=np.int64)
    if pi.size == 0:
        return cls
    root = _candidate_roots(D, C, pi, pj, dup)
    members = np.flatnonzero(root != cls)
    if members.size:
        eq = _rows_equal(G, rows[members], rows[root[members]])
        cls[members[eq]] = root[members[eq]]
    return cls


def _probe_shift(G, rows, rtol):
    """Decide the shift from a sample of columns (``SHIFT_PROBE_BLOCKS`` blocks spread over d):
    -1 (no shift: BLAS reads G in place, no copy) unless shifting by the central row would
    flag more than m fewer pairs for direct recomputation; then that row's position. None when
    the probe's diagonal is not finite (a NaN/Inf in the sampled columns)."""
    m = rows.size
    d = G.shape[1]
    r0 = int(rows[0])
    w = min(d, SHIFT_PROBE_COLUMNS)
    starts = sorted({((d - w) * k) // max(SHIFT_PROBE_BLOCKS - 1, 1) for k in range(SHIFT_PROBE_BLOCKS)})
    # BLAS on one thread, blocks added in order: the decision, like the Gram, does not depend
    # on the thread count; one (m, m) block product alive at a time
    P = np.zeros((m, m), dtype=np.float64)
    tmp = np.empty((m, m), dtype=G.dtype)
    with blas_single_thread(), np.errstate(invalid="ignore", over="ignore"):
        for s in starts:
            v = G[r0 : r0 + m, s : s + w]
            np.matmul(v, v.T, out=tmp)
            P += tmp
    del tmp
    N = np.diag(P).copy()
    if not np.all(np.isfinite(N)):
        return None
    D, _, _ = _distances_from_gram(P, rtol)
    del P
    cls = np.arange(m, dtype=np.int64)
    flagged = _count_flags(D, N, rtol, cls)
    c, pred = _central(D, rtol, cls)
    return c if flagged - pred > m else -1


@nb.njit(cache=True, nogil=True)
def _central_row(D):
    """The row with the smallest median distance to all rows (itself included, as 0; first
    one on ties), and its distances to every row, from D's lower triangle; O(m) memory."""
    m = D.shape[0]
    buf = np.empty(m, dtype=np.float64)
    best = 0
    best_v = np.inf
    for i in range(m):
        for j in range(m):
            buf[j] = D[i, j] if j < i else (D[j, i] if j > i else 0.0)
        v = median_of(buf, m)
        if v < best_v:
            best = i
            best_v = v
    for j in range(m):
        buf[j] = D[best, j] if j < best else (D[j, best] if j > best else 0.0)
    return best, buf


def _central(D, rtol, cls):
    """The central row (smallest median distance to the others; D's lower triangle given) and
    the number of pairs a shift by it would flag."""
    c, s = _central_row(D)
    return int(c), _count_flags(D, s, rtol, cls)


def _pairwise(G, rows):
    rows = np.ascontiguousarray(rows, dtype=np.int64)
    m = rows.size
    rtol = RECOMPUTE_RTOL_F32 if G.dtype == np.float32 else RECOMPUTE_RTOL_F64
    dup = DUPLICATE_RTOL_F32 if G.dtype == np.float32 else DUPLICATE_RTOL_F64
    if m == 0:
        return np.zeros((0, 0), dtype=np.float64)
    # the shift: none (BLAS on G in place) when the rows are a contiguous range of G and the
    # probe does not predict many more flagged pairs than with a central row; else a row
    ref = int(rows[0])
    if contiguous_rows(G, rows):
        c = _probe_shift(G, rows, rtol) if m > 2 else -1
        ref = -1 if c is None or c < 0 else int(rows[c])
    C = gram(G, rows, ref)
    if not np.all(np.isfinite(np.diag(C))):
        # finite rows whose float32 block Gram overflowed: blocks in float64
        ref = int(rows[0])
        C = gram(G, rows, ref, work=np.float64)
    D, pi, pj = _distances_from_gram(C, rtol)
    cls = _equal_classes(G, rows, D, C, pi, pj, dup)
    N = np.diag(C).copy()
    del C  # (m, m): only its diagonal is needed from here
    if pi.size > m and m > 2:
        # many pairs flagged: if a central row as the shift would flag more than m fewer of
        # them (the shift is far from the rows), redo the Gram once around it rather than
        # recomputing O(m^2) pairs directly
        flagged = _count_flags(D, N, rtol, cls)  # beyond exact duplicates
        if flagged > m:
            c, pred = _central(D, rtol, cls)
            if flagged - pred > m and int(rows[c]) != ref:
                del D
                C = gram(G, rows, int(rows[c]))
                D, pi, pj = _distances_from_gram(C, rtol)
                del C
    if pi.size:
        ci = cls[pi]
        cj = cls[pj]
        apart = ci != cj
        keys = np.maximum(ci, cj)[apart] * m + np.minimum(ci, cj)[apart]
        uniq, inv = np.unique(keys, return_inverse=True)
        exact = sq_distances_of_pairs(G, rows, uniq // m, uniq % m)  # one per pair of classes
        vals = np.zeros(pi.size, dtype=np.float64)
        vals[apart] = exact[inv]
        D = _fill_pairs(D, pi, pj, vals)
    else:
        D = _fill_pairs(D, pi, pj, np.zeros(0, dtype=np.float64))
    if np.any(cls != np.arange(m)):
        _share_class_rows(D, cls)  # equal rows: the same distances (their class's), 0 within
    return D


def pairwise_sq_distances(G: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """Squared Euclidean distances between the rows ``rows`` of G: (m, m) float64.

    Symmetric with an exact zero diagonal; no catastrophic cancellation (see the module
    docstring for the scheme and its accuracy). ``G`` is float32 or float64, any layout; only
    block-sized pieces are copied. Exactly equal rows get exactly equal rows of distances.
    """
    return _pairwise(G, rows)


def sq_distances(G, rows):
    """Pairwise squared distances of ``G[rows]`` (shared kernel), symmetrised, diagonal 0."""
    D2 = np.asarray(pairwise_sq_distances(G, rows), dtype=np.float64)
    D2 = 0.5 * (D2 + D2.T)
    np.maximum(D2, 0.0, out=D2)
    np.fill_diagonal(D2, 0.0)
    return D2


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
        v = buf[: m - 1]
        order = argsort_stable(v)
        s = 0.0
        for t in range(k):  # ascending
            s += v[order[t]]
        out[i] = s
    return out


@nb.njit(cache=True, nogil=True, inline="always")
def _krum_k(r, f):
    if r <= 1:
        return 0
    return min(max(r - f - 2, 1), r - 1)


@nb.njit(cache=True, nogil=True)
def _repeated_krum_state(m, L):
    """``repeated_krum``'s bookkeeping, initialised: ``pos`` (m, m) int32 -1 (the position of j in
    row i's order: 4 m^2 bytes), ``dead`` (m, L) False (removed, by position in each row's
    order), ``ps`` (m, L) float64 0 (running sums along the order: 8 m^2 bytes), ``fr`` (m,) -1,
    ``alive`` (m,) True, ``scores`` (m,) 0. A serial kernel: in the parallel function each
    np.zeros/np.ones/np.full would be a parallel loop of its own, compiled and launched."""
    pos = np.empty((m, m), dtype=np.int32)
    dead = np.empty((m, L), dtype=np.bool_)
    ps = np.empty((m, L), dtype=np.float64)
    fr = np.empty(m, dtype=np.int64)
    alive = np.empty(m, dtype=np.bool_)
    scores = np.empty(m, dtype=np.float64)
    for i in range(m):
        for j in range(m):
            pos[i, j] = -1
        for p in range(L):
            dead[i, p] = False
            ps[i, p] = 0.0
        fr[i] = -1
        alive[i] = True
        scores[i] = 0.0
    return pos, dead, ps, fr, alive, scores


@nb.njit(cache=True, parallel=True, nogil=True)
def repeated_krum(D, theta, f, overwrite=False):
    """Bulyan's selection: ``theta`` times, score every remaining row by the sum of its
    ``k = min(max(r - f - 2, 1), r - 1)`` smallest squared distances to the other remaining rows
    (r of them remaining), and move the lowest score (ties: lowest index) to the selected set.

    Each row of D is sorted once; a score is the sum of the first k entries of the sorted row
    whose rows are still remaining, in ascending order -- the same values summed in the same
    order as sorting the remaining sub-matrix afresh (``krum_scores``), so bit-identical scores.
    The running sums along each sorted row are kept (``ps``, valid up to the k-th remaining
    entry ``fr``), so removing a row only re-adds the entries from its position to the frontier
    (nothing when it lies beyond the frontier: the frontier steps back to the previous remaining
    entry) instead of re-summing k entries per row and step; a removed row's sorted value is set
    to +0.0 (distances are >= +0.0, and ``s + 0.0 == s`` bit for bit), so the re-adding loop has
    no branch and no gather. With ``overwrite=True`` the sorted values are kept in D's own
    storage (D is destroyed); extra memory 13 m^2 bytes, else 21 m^2. Returns (selected indices
    in selection order, int64 (theta,); winning scores, float64 (theta,))."""
    m = D.shape[0]
    L = max(m - 1, 1)
    pos, dead, ps, fr, alive, scores = _repeated_krum_state(m, L)
    V = D if overwrite else np.empty((m, m), dtype=np.float64)  # sorted values, 0.0 once removed
    k0 = _krum_k(m, f)
    for i in nb.prange(m):
        row = D[i].copy()
        idx = argsort_stable(row)
        p = 0
        for t in range(m):
            j = idx[t]
            if j != i and p < m - 1:
                pos[i, j] = p
                V[i, p] = row[j]
                p += 1
        s = 0.0
        for p in range(k0):
            s += V[i, p]
            ps[i, p] = s
        fr[i] = k0 - 1
        scores[i] = s
    selected = np.empty(theta, dtype=np.int64)
    won = np.empty(theta, dtype=np.float64)
    for step in range(theta):
        if step > 0:
            b = selected[step - 1]
            k_old = _krum_k(m - step + 1, f)
            k_new = _krum_k(m - step, f)
            for i in nb.prange(m):
                if not alive[i]:
                    continue
                if k_new == 0:
                    fr[i] = -1
                    scores[i] = 0.0
                    continue
                q = pos[i, b]
                V[i, q] = 0.0  # distances are >= +0.0, so adding +0.0 leaves a sum's bits unchanged
                dead[i, q] = True
                e = fr[i]
                if q > e:  # removed beyond the frontier: the first k_old entries are unchanged
                    if k_new < k_old:
                        e -= 1
                        while dead[i, e]:
                            e -= 1
                        fr[i] = e
                        scores[i] = ps[i, e]
                    continue
                # removed at or before the frontier: k_old - 1 remaining entries up to e
                if k_new < k_old:
                    if e == q:
                        e -= 1
                        while dead[i, e]:
                            e -= 1
                else:  # k unchanged (clamped at 1): one more entry, the next remaining one
                    e += 1
                    while dead[i, e]:
                        e += 1
                s = ps[i, q - 1] if q > 0 else 0.0
                for p in range(q, e + 1):
                    s += V[i, p]
                    ps[i, p] = s
                fr[i] = e
                scores[i] = ps[i, e]
        best = -1
        for i in range(m):
            if alive[i] and (best < 0 or scores[i] < scores[best]):
                best = i
        selected[step] = best
        won[step] = scores[best]
        alive[best] = False
    return selected, won
