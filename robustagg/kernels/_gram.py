"""The centred Gram matrix of rows, the first stage of the pairwise distances (``_distance``).

1. Columns are split into chunks whose boundaries depend on d only, and the chunks' (m, m)
   float64 partials are added in chunk order (so the result is bit-identical whatever the
   thread count). The tiled float32 path (step 2) runs the chunks on Numba's threads, one
   chunk per thread at a time (a child forked from a process running GNU OpenMP uses the
   pool instead); the BLAS path runs them on a small pool of threads
   (``numba.get_num_threads()`` of them), each with BLAS limited to one thread, at most two
   partials per thread alive at a time.
2. Every row is shifted by a common vector s (``ref``: a row of G, or none). Inside a chunk,
   blocks of columns are multiplied in the input's precision and the blocks are accumulated in
   float64: float32 input with at most ``TILED_GRAM_MAX_ROWS`` rows goes through the
   register-tiled kernel of ``_gramtile`` (float32 lanes over at most 4096 columns; about twice
   BLAS's speed on these skinny shapes), other float32 input through SGEMM/syrk over at most
   ``GRAM_BLOCK_F32`` columns, float64 through DGEMM. Without a shift, when the rows are a
   contiguous range of G, BLAS reads G in place (no copy at all); otherwise blocks of the
   selected rows are copied into a small buffer minus the reference row (difference in
   float64), at most ``CENTRED_BLOCK_MAX_BYTES``.

The thread pool and BLAS's thread limits are ``robustagg._threads``'s (fork- and thread-safe).
"""

from __future__ import annotations

from collections import deque

import numba as nb
import numpy as np

from .._threads import blas_single_thread, executor, numba_threads_usable
from .._thresholds import (
    CENTRED_BLOCK_MAX_BYTES,
    CENTRED_BLOCK_MIN_COLUMNS,
    GRAM_BLOCK_F32,
    GRAM_BLOCK_F64,
    GRAM_CHUNK_COLUMNS,
    GRAM_MAX_CHUNKS,
    TILED_GRAM_MAX_ROWS,
)
from ._gramtile import block_columns, tile_gram_f32

__all__ = ["centred_gram", "contiguous_rows", "gram"]


@nb.njit(cache=True, nogil=True)
def _centre_block(G, rows, ref, j0, bw, buf):
    """buf[r, :bw] = G[rows[r], j0:j0+bw] - G[ref, j0:j0+bw] (difference taken in float64, then
    stored in buf's precision); ``ref < 0``: no shift (a plain gather). Row slices, so the inner
    loop is a unit-stride loop LLVM vectorises."""
    m = rows.size
    if ref < 0:
        for r in range(m):
            a = G[rows[r], j0 : j0 + bw]
            o = buf[r]
            for k in range(bw):
                o[k] = a[k]
        return
    b = G[ref, j0 : j0 + bw]
    for r in range(m):
        a = G[rows[r], j0 : j0 + bw]
        o = buf[r]
        for k in range(bw):
            o[k] = np.float64(a[k]) - np.float64(b[k])


def _block_width(m: int, work) -> int:
    """Columns per centred block: ``GRAM_BLOCK_F32``/``GRAM_BLOCK_F64``, narrowed for many rows so that the
    (m, block) buffer stays within ``CENTRED_BLOCK_MAX_BYTES`` (depends on m and the dtype only)."""
    full = GRAM_BLOCK_F32 if work == np.float32 else GRAM_BLOCK_F64
    fit = CENTRED_BLOCK_MAX_BYTES // (max(m, 1) * np.dtype(work).itemsize)
    return int(max(CENTRED_BLOCK_MIN_COLUMNS, min(full, (fit // 64) * 64)))


def contiguous_rows(G: np.ndarray, rows: np.ndarray) -> bool:
    """Whether G[rows] is the unit-column-stride view G[rows[0]:rows[0]+m] (BLAS can read it in
    place)."""
    m = rows.size
    return (
        m > 0
        and G.strides[1] == G.itemsize
        and int(rows[-1]) - int(rows[0]) == m - 1
        and bool(np.all(np.diff(rows) == 1))
    )


def _chunk_gram(G, rows, ref, j0, j1, work, view):
    """Columns j0:j1 of the Gram of the rows shifted by G[ref] (ref < 0: unshifted), float64
    (m, m). ``view``: the rows are a contiguous range and ref < 0, so BLAS reads G in place.
    A NaN/Inf row gives NaN/Inf entries silently (the caller checks the diagonal)."""
    with np.errstate(invalid="ignore", over="ignore"):
        return _chunk_gram_body(G, rows, ref, j0, j1, work, view)


def _chunk_gram_body(G, rows, ref, j0, j1, work, view):
    m = rows.size
    acc = np.zeros((m, m), dtype=np.float64)
    tmp = np.empty((m, m), dtype=work)
    if view:
        r0 = int(rows[0])
        block = GRAM_BLOCK_F32 if work == np.float32 else GRAM_BLOCK_F64
        for b0 in range(j0, j1, block):
            v = G[r0 : r0 + m, b0 : min(j1, b0 + block)]
            np.matmul(v, v.T, out=tmp)  # v and v.T share memory: syrk, half the flops of gemm
            acc += tmp
        return acc
    block = _block_width(m, work)
    buf = np.empty((m, block), dtype=work)
    for b0 in range(j0, j1, block):
        bw = min(block, j1 - b0)
        b = buf if bw == block else buf[:, :bw]
        _centre_block(G, rows, ref, b0, bw, b)
        np.matmul(b, b.T, out=tmp)
        acc += tmp
    return acc


@nb.njit(cache=True, nogil=True)
def _tile_chunk(G, rows, ref, direct, j0, j1, block, kb, acc):
    """Columns j0:j1 of the float32 Gram by the tiled kernel into ``acc`` ((m, m) float64,
    upper triangle, zeroed first). ``direct``: the kernel reads the rows of G in place (no
    shift, unit column stride); otherwise blocks of ``block`` columns are first centred on
    ``G[ref]`` (``ref < 0``: gathered) into a small buffer."""
    m = rows.size
    acc[:] = 0.0
    if direct:
        tile_gram_f32(G, rows, j0, j1, kb, acc)
        return acc
    buf = np.empty((m, block), dtype=G.dtype)
    brows = np.arange(m)
    zero = j0 - j0  # an int64 column start (a literal 0 would compile a second specialisation)
    for b0 in range(j0, j1, block):
        bw = min(block, j1 - b0)
        _centre_block(G, rows, ref, b0, bw, buf)
        tile_gram_f32(buf, brows, zero, bw, kb, acc)
    return acc


@nb.njit(cache=True, parallel=True, nogil=True)
def _tile_gram_chunks(G, rows, ref, direct, bounds, block, kb, wave):
    """The float32 Gram of ``gram`` for at most ``TILED_GRAM_MAX_ROWS`` rows, on Numba's
    threads (no hand-over to the Python pool between a rule's parallel stages): the chunks
    ``bounds`` run ``wave`` at a time (``_tile_chunk``), each into its own (m, m) float64
    partial, and the partials are added in chunk order -- the same partials and the same
    additions as on the pool, so the same bits whatever the thread count."""
    m = rows.size
    n_chunks = bounds.size - 1
    # explicit loops, no array expressions: in a parallel function each of those (np.zeros,
    # ``out += part[t]``) becomes a parallel loop of its own, compiled (seconds) and launched
    out = np.empty((m, m), dtype=np.float64)
    for i in range(m):
        for j in range(m):
            out[i, j] = 0.0
    part = np.empty((wave, m, m), dtype=np.float64)
    for w0 in range(0, n_chunks, wave):
        nw = min(wave, n_chunks - w0)
        for t in nb.prange(nw):
            c = w0 + t
            _tile_chunk(G, rows, ref, direct, bounds[c], bounds[c + 1], block, kb, part[t])
        for t in range(nw):
            for i in range(m):
                for j in range(i, m):  # the upper triangle (the lower one is not computed)
                    out[i, j] += part[t, i, j]
    return out


def _chunk_bounds(d: int) -> list[int]:
    n_chunks = int(min(GRAM_MAX_CHUNKS, max(1, -(-d // GRAM_CHUNK_COLUMNS))))
    return [(d * c) // n_chunks for c in range(n_chunks + 1)]


@nb.njit(cache=True, nogil=True)
def _symmetrise(C):
    """Copy the upper triangle onto the lower one, in place."""
    m = C.shape[0]
    for i in range(m):
        for j in range(i):
            C[i, j] = C[j, i]
    return C


def gram(G, rows, ref, threads=None, work=None):
    """Sum over the column chunks (fixed by d, added in chunk order: the same bits whatever the
    thread count) of ``_tile_chunk`` (float32, at most ``TILED_GRAM_MAX_ROWS`` rows: on Numba's
    threads through ``_tile_gram_chunks``, or on the pool in a forked child) or ``_chunk_gram``
    (BLAS). On the pool, BLAS runs on one thread per chunk and the next chunk is submitted once
    the oldest has been added, so at most ``threads`` partials besides the total are alive (the
    (m, m) float64 partials are the memory of this stage). ``work``: the blocks' precision
    (default: G's)."""
    rows = np.ascontiguousarray(rows, dtype=np.int64)
    bounds = _chunk_bounds(G.shape[1])
    n_chunks = len(bounds) - 1
    if work is None:
        work = np.float32 if G.dtype == np.float32 else np.float64
    view = ref < 0 and work == G.dtype and contiguous_rows(G, rows)
    if threads is None:
        threads = nb.get_num_threads()
    pool_size = max(1, threads)  # the pool keeps its size across calls (no thread churn)
    threads = max(1, min(threads, n_chunks))
    m = rows.size
    tiled = work == np.float32 and G.dtype == np.float32 and m <= TILED_GRAM_MAX_ROWS
    if tiled:
        # a few float32 rows: the register-tiled kernel
        direct = ref < 0 and G.strides[1] == G.itemsize
        block, kb = _block_width(m, work), block_columns(m)
        if numba_threads_usable():  # on Numba's threads
            b = np.asarray(bounds, dtype=np.int64)
            return _symmetrise(_tile_gram_chunks(G, rows, ref, direct, b, block, kb, threads))
        # a child forked from a process running GNU OpenMP (a user's NUMBA_THREADING_LAYER=omp):
        # Numba's threads may not be used there, so the same chunks run on the pool

        def task(c):
            acc = np.empty((m, m), dtype=np.float64)
            return _tile_chunk(G, rows, ref, direct, bounds[c], bounds[c + 1], block, kb, acc)

    else:

        def task(c):
            return _chunk_gram(G, rows, ref, bounds[c], bounds[c + 1], work, view)

    out = None
    with blas_single_thread():
        if threads == 1:
            for c in range(n_chunks):
                part = task(c)
                if out is None:
                    out = part
                else:
                    out += part
                del part  # (the previous partial must not stay alive while the next is computed)
        else:
            ex = executor(pool_size)
            window = threads
            pending = deque(ex.submit(task, c) for c in range(min(window, n_chunks)))
            nxt = len(pending)
            while pending:
                part = pending.popleft().result()
                if out is None:
                    out = part
                else:
                    out += part
                del part  # added and released before the next chunk starts
                if nxt < n_chunks:
                    pending.append(ex.submit(task, nxt))
                    nxt += 1
    return _symmetrise(out)


def centred_gram(
    G: np.ndarray, rows: np.ndarray, ref: int | None = None, threads: int | None = None
) -> np.ndarray:
    """Gram matrix of the rows ``rows`` of G shifted by the reference row ``G[ref]`` (default
    ``rows[0]``; a negative ``ref``: no shift): ``C_ij = <g_i - g_ref, g_j - g_ref>``, (m, m)
    float64, exactly symmetric. Blocks in G's precision, accumulation across blocks in float64."""
    rows = np.ascontiguousarray(rows, dtype=np.int64)
    ref = int(rows[0]) if ref is None else int(ref)
    return gram(G, rows, ref, threads)
