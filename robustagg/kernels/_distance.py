"""Distance kernels: accurate pairwise squared Euclidean distances between rows.

Scheme (no catastrophic cancellation in float32, no copy of G):

1. Columns are split into chunks whose boundaries depend on d only (so the result is
   bit-identical whatever the thread count); chunks run on a small pool of threads
   (``numba.get_num_threads()`` of them), each with BLAS limited to one thread.
2. Inside a chunk, blocks of columns of the selected rows are copied into a small buffer and
   **shifted by a reference row** (difference taken in float64; a shift common to all rows leaves
   every distance unchanged, and it removes the large common component that makes
   ``|x|^2 + |y|^2 - 2<x, y>`` cancel). The reference is the first row; if it turns out to be an
   outlier (more than m pairs flagged in step 4 and a median ratio D_ij / (N_i + N_j) below 0.1), the Gram is recomputed once with a central row
   (smallest median distance) as the reference. The block's Gram matrix ``B B^T`` is computed by BLAS in
   the input's precision (float32 input: float32 centred values, float32 SGEMM over at most
   ``_BLOCK32`` columns; float64: DGEMM) and accumulated in float64 across blocks.
3. ``D_ij = N_i + N_j - 2 C_ij`` (``N`` the Gram diagonal: squared distances to the reference),
   clamped at 0.
4. Pairs where cancellation is still possible, ``D_ij <= tau * (N_i + N_j)`` (near-duplicate
   rows: ``tau = 1e-1`` for float32, ``1e-6`` for float64), are recomputed exactly as a direct
   float64 sum of squared differences. Every other pair has a relative error of at most about
   ``eps * sqrt(block) / tau`` (~3e-5 for float32 input, ~1e-9 for float64), typically far less
   (~1e-7 for float32 rows whose distance is comparable to their distance from the reference).
"""

from __future__ import annotations

import os
import threading
from concurrent.futures import ThreadPoolExecutor

import numba as nb
import numpy as np

_BLOCK32 = 2048  # columns per centred block, float32 input (float32 SGEMM accumulation length)
_BLOCK64 = 4096  # columns per centred block, float64 input
_CHUNK_COLS = 32768  # target columns per chunk (unit of parallel work)
_MAX_CHUNKS = 256
_RTOL32 = 1e-1  # recompute pairs with D_ij <= rtol * (N_i + N_j)
_RTOL64 = 1e-6
_PAIR_BLOCK = 4096  # columns per block in the direct recomputation

_pool_lock = threading.Lock()
_pool: ThreadPoolExecutor | None = None
_pool_size = 0
_controller = None


_pool_pid = 0


def _executor(threads: int) -> ThreadPoolExecutor:
    """The shared worker pool, recreated when the thread count changes or after a fork (a
    forked child inherits the pool object but not its threads)."""
    global _pool, _pool_size, _pool_pid
    with _pool_lock:
        pid = os.getpid()
        if _pool is None or _pool_size != threads or _pool_pid != pid:
            if _pool is not None and _pool_pid == pid:
                _pool.shutdown(wait=False)
            _pool = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="robustagg-gram")
            _pool_size = threads
            _pool_pid = pid
        return _pool


def blas_single_thread():
    """A context manager limiting BLAS to one thread (no-op without threadpoolctl)."""
    global _controller
    try:
        import threadpoolctl
    except ImportError:  # pragma: no cover - threadpoolctl comes with scikit-learn
        import contextlib

        return contextlib.nullcontext()
    if _controller is None:
        _controller = threadpoolctl.ThreadpoolController()
    return _controller.limit(limits=1, user_api="blas")


@nb.njit(cache=True, nogil=True)
def _centre_block(G, rows, ref, j0, bw, buf):
    """buf[r, :bw] = G[rows[r], j0:j0+bw] - G[ref, j0:j0+bw] (difference taken in float64)."""
    m = rows.size
    for r in range(m):
        i = rows[r]
        for k in range(bw):
            buf[r, k] = np.float64(G[i, j0 + k]) - np.float64(G[ref, j0 + k])


def _chunk_gram(G, rows, ref, j0, j1, block, work_dtype):
    m = rows.size
    acc = np.zeros((m, m), dtype=np.float64)
    buf = np.empty((m, block), dtype=work_dtype)
    for b0 in range(j0, j1, block):
        bw = min(block, j1 - b0)
        b = buf if bw == block else np.empty((m, bw), dtype=work_dtype)
        _centre_block(G, rows, ref, b0, bw, b)
        acc += b @ b.T
    return acc


def centred_gram(G: np.ndarray, rows: np.ndarray, ref: int | None = None, threads: int | None = None) -> np.ndarray:
    """Gram matrix of the rows ``rows`` of G shifted by the reference row ``G[ref]`` (default
    ``rows[0]``): ``C_ij = <g_i - g_ref, g_j - g_ref>``, (m, m) float64, exactly symmetric.
    Blocks in G's precision, accumulation across blocks in float64."""
    rows = np.ascontiguousarray(rows, dtype=np.int64)
    d = G.shape[1]
    ref = int(rows[0]) if ref is None else int(ref)
    work = np.float32 if G.dtype == np.float32 else np.float64
    block = _BLOCK32 if work == np.float32 else _BLOCK64
    n_chunks = int(min(_MAX_CHUNKS, max(1, -(-d // _CHUNK_COLS))))
    bounds = [(d * c) // n_chunks for c in range(n_chunks + 1)]
    if threads is None:
        threads = nb.get_num_threads()
    threads = max(1, min(threads, n_chunks))

    def task(c):
        return _chunk_gram(G, rows, ref, bounds[c], bounds[c + 1], block, work)

    with blas_single_thread():
        if threads == 1:
            parts = [task(c) for c in range(n_chunks)]
        else:
            parts = list(_executor(threads).map(task, range(n_chunks)))
    out = parts[0]
    for p in parts[1:]:
        out += p
    return np.triu(out) + np.triu(out, 1).T


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


def _median_ratio(C, D):
    """Median over pairs i > j of D_ij / (N_i + N_j): small when the reference row is far from
    all the others."""
    N = np.diag(C)
    il, jl = np.tril_indices(C.shape[0], -1)
    den = N[il] + N[jl]
    return float(np.median(np.where(den > 0, D[il, jl] / np.where(den > 0, den, 1.0), 1.0)))


def pairwise_sq_distances(G: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """Squared Euclidean distances between the rows ``rows`` of G: (m, m) float64.

    Symmetric with an exact zero diagonal; no catastrophic cancellation (see the module
    docstring for the scheme and its accuracy). ``G`` is float32 or float64, any layout; only
    block-sized pieces are copied.
    """
    rows = np.ascontiguousarray(rows, dtype=np.int64)
    m = rows.size
    C = centred_gram(G, rows)
    rtol = _RTOL32 if G.dtype == np.float32 else _RTOL64
    D, pi, pj = _distances_from_gram(C, rtol)
    if pi.size > m and m > 2 and _median_ratio(C, D) < 0.1:
        # most pairs are close relative to their distance from the reference row (the reference
        # is an outlier): shift by a central row instead -- the row whose median distance to
        # the others is smallest -- rather than recomputing O(m^2) pairs directly
        central = int(np.argmin(np.median(D + D.T, axis=1)))
        C = centred_gram(G, rows, ref=int(rows[central]))
        D, pi, pj = _distances_from_gram(C, rtol)
    exact = sq_distances_of_pairs(G, rows, pi, pj)
    return _fill_pairs(D, pi, pj, exact)


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


@nb.njit(cache=True, parallel=True, nogil=True)
def repeated_krum(D, theta, f):
    """Bulyan's selection: ``theta`` times, score every remaining row by the sum of its
    ``k = min(max(r - f - 2, 1), r - 1)`` smallest squared distances to the other remaining rows
    (r of them remaining), and move the lowest score (ties: lowest index) to the selected set.

    Each row of D is sorted once; a score is then the sum of the first k entries of the sorted
    row whose rows are still remaining, in ascending order -- the same values summed in the same
    order as sorting the remaining sub-matrix afresh (``krum_scores``), so bit-identical scores,
    at O(m) per row and step instead of O(r log r) plus a copy. Returns (selected indices in
    selection order, int64 (theta,); winning scores, float64 (theta,))."""
    m = D.shape[0]
    order = np.empty((m, max(m - 1, 1)), dtype=np.int32)  # 4 m^2 bytes of extra memory
    for i in nb.prange(m):
        idx = np.argsort(D[i])
        p = 0
        for t in range(m):
            j = idx[t]
            if j != i and p < m - 1:
                order[i, p] = j
                p += 1
    alive = np.ones(m, dtype=np.bool_)
    scores = np.empty(m, dtype=np.float64)
    selected = np.empty(theta, dtype=np.int64)
    won = np.empty(theta, dtype=np.float64)
    for step in range(theta):
        r = m - step
        if r <= 1:
            k = 0
        else:
            k = min(max(r - f - 2, 1), r - 1)
        for i in nb.prange(m):
            if not alive[i]:
                continue
            s = 0.0
            c = 0
            p = 0
            while c < k:
                j = order[i, p]
                if alive[j]:
                    s += D[i, j]
                    c += 1
                p += 1
            scores[i] = s
        best = -1
        for i in range(m):
            if alive[i] and (best < 0 or scores[i] < scores[best]):
                best = i
        selected[step] = best
        won[step] = scores[best]
        alive[best] = False
    return selected, won
