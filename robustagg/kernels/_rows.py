"""Row-wise kernels: the non-finite scan and screening, row norms and distances to a point,
norm clipping, and DnC's column gathers. The lane sums of squares (``sq_sum_lanes``, a fixed
order whatever the thread count) are shared with SignGuard's passes (``_signs``)."""

from __future__ import annotations

import numba as nb
import numpy as np

from .._thresholds import GATHER_BLOCK, NONFINITE_CHUNK, NONFINITE_LANES, ROW_BLOCK, SQ_SUM_LANES

__all__ = [
    "clip_rows",
    "clip_scales",
    "gather_columns",
    "nonfinite_rows",
    "nonfinite_rows_and_gather",
    "row_norms",
    "row_sq_distances_to",
    "row_sq_norms",
    "screen_rows",
    "sq_sum_lanes",
]


@nb.njit(cache=True, nogil=True, inline="always")
def _chunk_nonfinite(row, j0, j1, acc):
    """Whether the values seen so far, up to ``row[j0:j1]``, hold a NaN or ±Inf.

    Branch-free and vectorised: ``x - x`` is 0 for a finite x and NaN for NaN/±Inf, summed into
    the ``acc`` lanes (NONFINITE_LANES independent accumulators carried across chunks: no
    reassociation needed); NaN never leaves a sum, so one test per chunk suffices."""
    m = j0 + ((j1 - j0) // NONFINITE_LANES) * NONFINITE_LANES
    for c in range(j0, m, NONFINITE_LANES):
        seg = row[c : c + NONFINITE_LANES]
        for k in range(NONFINITE_LANES):
            x = seg[k]
            acc[k] += x - x
    s = 0.0
    for k in range(NONFINITE_LANES):
        s += acc[k]
    for j in range(m, j1):
        x = row[j]
        s += x - x
    return not (s == 0.0)


@nb.njit(cache=True, parallel=True, nogil=True)
def nonfinite_rows(G):
    """Boolean mask: True where a row holds any NaN or ±Inf. A row stops at the first chunk of
    NONFINITE_CHUNK values that proves it non-finite; about one read of G."""
    n, d = G.shape
    out = np.empty(n, dtype=np.bool_)
    for i in range(n):  # (a loop: np.zeros would be a parallel loop of its own in this function)
        out[i] = False
    for i in nb.prange(n):
        row = G[i]
        acc = np.zeros(NONFINITE_LANES, dtype=G.dtype)
        for j0 in range(0, d, NONFINITE_CHUNK):
            if _chunk_nonfinite(row, j0, min(d, j0 + NONFINITE_CHUNK), acc):
                out[i] = True
                break
    return out


@nb.njit(cache=True, nogil=True, inline="always")
def _chunk_large(row, j0, j1, bound, cnt):
    """Add to the ``cnt`` lanes how many of ``row[j0:j1]`` exceed ``bound`` in magnitude (a
    NaN compares false: the non-finite test catches it); branch-free and vectorised."""
    m = j0 + ((j1 - j0) // NONFINITE_LANES) * NONFINITE_LANES
    for c in range(j0, m, NONFINITE_LANES):
        seg = row[c : c + NONFINITE_LANES]
        for k in range(NONFINITE_LANES):
            cnt[k] += abs(seg[k]) > bound
    extra = 0
    for j in range(m, j1):
        extra += abs(row[j]) > bound
    return extra


def screen_rows(G, rows, bound):
    """One read of the rows ``rows`` of G, per row: 1 when it holds a NaN or ±Inf, else 2 when
    some value exceeds ``bound`` in magnitude, else 0 (int8, len(rows)). The validation layer's
    cheap first pass: with ``bound = sqrt(limit / d)`` a row marked 0 has a squared norm of at
    most ``limit``, and only the rows marked 2 need their norm computed exactly.

    float32 input passes ``bound = inf`` (no finite value exceeds it): then only the NaN/Inf test
    is made, by a kernel without the magnitude count, which halves the compilation of every
    float32 rule's first call (docs/performance.md, "Cold start")."""
    if bound < np.inf:
        return _screen_bounded(G, rows, bound)
    return _screen_nonfinite(G, rows)


@nb.njit(cache=True, parallel=True, nogil=True)
def _screen_nonfinite(G, rows):
    """``screen_rows`` with no bound: 1 where the row ``rows[i]`` holds a NaN or ±Inf, else 0."""
    m = rows.size
    d = G.shape[1]
    out = np.empty(m, dtype=np.int8)
    for i in range(m):  # (a loop: np.zeros would be a parallel loop of its own in this function)
        out[i] = 0
    for i in nb.prange(m):
        row = G[rows[i]]
        acc = np.zeros(NONFINITE_LANES, dtype=G.dtype)
        for j0 in range(0, d, NONFINITE_CHUNK):
            if _chunk_nonfinite(row, j0, min(d, j0 + NONFINITE_CHUNK), acc):
                out[i] = 1
                break
    return out


@nb.njit(cache=True, parallel=True, nogil=True)
def _screen_bounded(G, rows, bound):
    """``screen_rows`` with a finite ``bound``: 1 (NaN/±Inf), 2 (a value above ``bound`` in
    magnitude) or 0 per row."""
    m = rows.size
    d = G.shape[1]
    out = np.empty(m, dtype=np.int8)
    for i in range(m):  # (a loop: np.zeros would be a parallel loop of its own in this function)
        out[i] = 0
    for i in nb.prange(m):
        row = G[rows[i]]
        acc = np.zeros(NONFINITE_LANES, dtype=G.dtype)
        cnt = np.zeros(NONFINITE_LANES, dtype=np.int32)
        large = 0
        for j0 in range(0, d, NONFINITE_CHUNK):
            j1 = min(d, j0 + NONFINITE_CHUNK)
            if _chunk_nonfinite(row, j0, j1, acc):
                out[i] = 1
                break
            large += _chunk_large(row, j0, j1, bound, cnt)
        if out[i] == 0:
            for k in range(NONFINITE_LANES):
                large += cnt[k]
            if large > 0:
                out[i] = 2
    return out


@nb.njit(cache=True, nogil=True, inline="always")
def sq_sum_lanes(G, i, j0, j1, part):
    """Add ``G[i, j]^2`` (float64) for j in [j0, j1) to the lane sums ``part`` (``SQ_SUM_LANES`` of
    them); the columns past the last full group of lanes are returned as a separate scalar sum."""
    j = j0
    while j + SQ_SUM_LANES <= j1:
        for t in range(SQ_SUM_LANES):
            v = np.float64(G[i, j + t])
            part[t] += v * v
        j += SQ_SUM_LANES
    s = 0.0
    while j < j1:
        v = np.float64(G[i, j])
        s += v * v
        j += 1
    return s


@nb.njit(cache=True, nogil=True, inline="always")
def _sq_sum(G, i, j0, j1):
    """sum_{j0 <= j < j1} G[i, j]^2 in float64 with SQ_SUM_LANES interleaved partial sums."""
    acc = np.zeros(SQ_SUM_LANES, dtype=np.float64)
    s = sq_sum_lanes(G, i, j0, j1, acc)
    for lane in range(SQ_SUM_LANES):
        s += acc[lane]
    return s


@nb.njit(cache=True, nogil=True, inline="always")
def _sq_diff_sum(G, i, z, j0, j1):
    """sum_{j0 <= j < j1} (G[i, j] - z[j])^2 in float64 with SQ_SUM_LANES interleaved partial sums."""
    acc = np.zeros(SQ_SUM_LANES, dtype=np.float64)
    j = j0
    while j + SQ_SUM_LANES <= j1:
        for lane in range(SQ_SUM_LANES):
            v = np.float64(G[i, j + lane]) - z[j + lane]
            acc[lane] += v * v
        j += SQ_SUM_LANES
    s = 0.0
    while j < j1:
        v = np.float64(G[i, j]) - z[j]
        s += v * v
        j += 1
    for lane in range(SQ_SUM_LANES):
        s += acc[lane]
    return s


@nb.njit(cache=True, parallel=True, nogil=True)
def row_sq_norms(G, rows):
    """Squared L2 norm of each row in ``rows``, accumulated in float64: float64 (len(rows),).

    Parallel over (row, column block) pairs so that a few long rows still use every thread;
    the block partial sums are added in a fixed order (bit-identical for any thread count).
    """
    m = rows.size
    d = G.shape[1]
    nb_ = (d + ROW_BLOCK - 1) // ROW_BLOCK
    part = np.empty((m, nb_), dtype=np.float64)  # every entry is written (np.zeros: a parallel loop)
    for t in nb.prange(m * nb_):
        r = t // nb_
        b = t - r * nb_
        i = rows[r]
        j0 = b * ROW_BLOCK
        j1 = min(d, j0 + ROW_BLOCK)
        part[r, b] = _sq_sum(G, i, j0, j1)
    out = np.empty(m, dtype=np.float64)
    for r in range(m):
        s = 0.0
        for b in range(nb_):
            s += part[r, b]
        out[r] = s
    return out


@nb.njit(cache=True, nogil=True)
def row_norms(G, rows):
    """L2 norm of each row in ``rows``, accumulated in float64: float64 (len(rows),)."""
    return np.sqrt(row_sq_norms(G, rows))


@nb.njit(cache=True, parallel=True, nogil=True)
def row_sq_distances_to(G, rows, z):
    """``||G[rows[r]] - z||^2`` for each r, direct differences accumulated in float64.

    ``z`` is a float64 (d,) vector. Returns float64 (len(rows),).
    """
    m = rows.size
    d = G.shape[1]
    nb_ = (d + ROW_BLOCK - 1) // ROW_BLOCK
    part = np.empty((m, nb_), dtype=np.float64)  # every entry is written (np.zeros: a parallel loop)
    for t in nb.prange(m * nb_):
        r = t // nb_
        b = t - r * nb_
        i = rows[r]
        j0 = b * ROW_BLOCK
        j1 = min(d, j0 + ROW_BLOCK)
        part[r, b] = _sq_diff_sum(G, i, z, j0, j1)
    out = np.empty(m, dtype=np.float64)
    for r in range(m):
        s = 0.0
        for b in range(nb_):
            s += part[r, b]
        out[r] = s
    return out


@nb.njit(cache=True, nogil=True)
def clip_scales(norms, threshold):
    """Norm-clipping factors ``min(1, threshold / norm)`` (1 for a zero norm): float64."""
    out = np.ones(norms.size, dtype=np.float64)
    for r in range(norms.size):
        if norms[r] > threshold:
            out[r] = threshold / norms[r]
    return out


@nb.njit(cache=True, parallel=True, nogil=True)
def clip_rows(G, rows, threshold):
    """Rows ``rows`` of G, each scaled by ``min(1, threshold / ||g||)``: a new (m, d) G.dtype array."""
    scales = clip_scales(row_norms(G, rows), threshold)
    m = rows.size
    d = G.shape[1]
    out = np.empty((m, d), dtype=G.dtype)
    for r in nb.prange(m):
        i = rows[r]
        s = scales[r]
        for j in range(d):
            out[r, j] = np.float64(G[i, j]) * s
    return out


@nb.njit(cache=True, parallel=True, nogil=True)
def nonfinite_rows_and_gather(G, coords):
    """One streaming pass over G: the non-finite mask of ``nonfinite_rows`` and the sampled
    columns ``G[:, coords[t]]`` of every round t.

    ``coords`` is (T, b) int64, each row sorted ascending (DnC's T rounds of b sampled
    coordinates). Returns (bool (n,), G.dtype (T, n, b)). Each row is read once, block by block;
    a block's sampled values are gathered while it is in cache, so the sampling costs no extra
    pass (T separate gathers would touch most cache lines of G again).
    """
    n, d = G.shape
    T, b = coords.shape
    bad = np.empty(n, dtype=np.bool_)
    for i in range(n):  # (a loop: np.zeros would be a parallel loop of its own in this function)
        bad[i] = False
    out = np.empty((T, n, b), dtype=G.dtype)
    for i in nb.prange(n):
        row = G[i]
        ptr = np.zeros(T, dtype=np.int64)
        acc = np.zeros(NONFINITE_LANES, dtype=G.dtype)
        for j0 in range(0, d, GATHER_BLOCK):
            j1 = min(d, j0 + GATHER_BLOCK)
            if not bad[i] and _chunk_nonfinite(row, j0, j1, acc):
                bad[i] = True
            for t in range(T):
                p = ptr[t]
                while p < b and coords[t, p] < j1:
                    out[t, i, p] = row[coords[t, p]]
                    p += 1
                ptr[t] = p
    return bad, out


@nb.njit(cache=True, parallel=True, nogil=True)
def gather_columns(G, rows, coords):
    """``G[rows][:, coords]`` as a new float64 (len(rows), len(coords)) array (one DnC round's
    sample when the rounds are not gathered in one pass); parallel over rows, no copy of G."""
    m = rows.size
    b = coords.size
    out = np.empty((m, b), dtype=np.float64)
    for r in nb.prange(m):
        i = rows[r]
        for t in range(b):
            out[r, t] = np.float64(G[i, coords[t]])
    return out
