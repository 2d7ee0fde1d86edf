"""Where the float32 Gram's time goes: the register-tiled kernel's multiply-add rate from
registers-and-L1 down to the whole streaming Gram (figures quoted in docs/benchmarks.md,
"Still open").

    python benchmarks/bench_gram_kernel.py              # n = 50, d = 10^6, one thread
    python benchmarks/bench_gram_kernel.py --threads 2  # the whole Gram also on two threads
    python benchmarks/bench_gram_kernel.py --threads 2 --decompose  # and its memory / arithmetic halves

The rate is counted in the multiply-adds the tiles issue (12 row pairs x the columns per
tile, so the diagonal tiles' redundant pairs count as work) and reported against the first
line, the tile loop on 7 rows that stay in L1 -- the kernel's practical peak on this CPU:

1. ``L1``: one 3 x 4 tile on 7 rows of 1024 columns, over and over.
2. ``L2, packed``: every tile of n rows of one 1024-column block (rows 4160 bytes apart), over
   and over: the block stays in L2.
3. ``L2, in place``: the same tiles on the first 1024 columns of G itself (rows 4 d bytes
   apart): the same data volume, G's row stride.
4. ``streaming``: the kernel over all of G (``tile_gram_f32``, one thread): every block comes
   from memory once.
5. (``--threads 2``) the library's Gram stage on Numba's threads (``_tile_gram_chunks``), and
   the read floor of G measured the same way as ``robustagg bench``.
6. (``--threads 2 --decompose``) the same Gram with every block of 1024 columns first copied
   into a small per-thread buffer (rows 4160 bytes apart, as line 2), then tiled: the same
   chunks, tiles and additions as line 5, so the same bits (checked). Then its two halves apart
   -- the copies alone (each block of G read once: the memory side) and the tiles alone on
   blocks already in the buffer (the arithmetic side) -- and two ways of overlapping them: the
   next block copied a row at a time between the tiles of the current one (double buffer), and
   the next block's lines software-prefetched (``prefetcht0``) between the tiles. With perfect
   overlap the Gram would take the larger of the two halves.

Times are ``robustagg.bench``'s (``median_time``, ``read_floor``); what this script adds is
the Gram kernel's internals, which ``robustagg bench`` times only as whole rules.

The gap between lines 1-2 and line 4 is memory (each block's first tile row waits for it)
and the row stride; docs/benchmarks.md lists what was tried against it.
"""

from __future__ import annotations

import argparse
import sys

import numba as nb
import numpy as np
from llvmlite import ir
from numba import types
from numba.extending import intrinsic

from robustagg.bench import median_time, read_floor
from robustagg.kernels import _gramtile

_PACK = 1024  # columns per copied block (two buffers of n rows stay in L2 at n = 50)
_MODES = {
    "copy, then tiles": 0,
    "next block copied between the tiles": 1,
    "copies alone": 2,
    "tiles alone (blocks already in the buffer)": 3,
    "next block prefetched between the tiles": 4,
}


@intrinsic
def _prefetch(typingctx, addr):
    """``prefetcht0`` of the line holding byte address ``addr``."""
    if not isinstance(addr, types.Integer):
        return None

    def codegen(context, builder, signature, args):
        i8p = ir.IntType(8).as_pointer()
        i32 = ir.IntType(32)
        fn = builder.module.globals.get("llvm.prefetch.p0i8")
        if fn is None:
            fn = ir.Function(
                builder.module, ir.FunctionType(ir.VoidType(), [i8p, i32, i32, i32]), "llvm.prefetch.p0i8"
            )
        const = [ir.Constant(i32, v) for v in (0, 3, 1)]  # read, keep in all levels, data
        builder.call(fn, [builder.inttoptr(args[0], i8p), *const])
        return context.get_dummy_value()

    return types.void(addr), codegen


@nb.njit(nogil=True)
def _copy_rows(G, rows, r0, r1, c0, w, buf):
    for r in range(r0, r1):
        src = G[rows[r], c0 : c0 + w]
        dst = buf[r]
        for k in range(w):
            dst[k] = src[k]


@nb.njit(nogil=True)
def _packed_chunk(G, rows, j0, j1, out, bufs, mode):
    """``_gramtile.tile_gram_f32(G, rows, j0, j1, ...)`` (the same tile sums, lane reductions and
    float64 tail, so the same bits) with each block of ``_PACK`` columns first copied into
    ``bufs[q % 2]``; ``mode``: see ``_MODES`` (2 and 3 compute nothing usable)."""
    A, B, L, F = _gramtile._A, _gramtile._B, _gramtile._L, _gramtile._FLUSH
    m = rows.size
    ti, tj = _gramtile._tiles(m)
    nt = ti.size
    width = A * B * L
    acc = np.zeros((nt, width), dtype=np.float32)
    accb = acc.ctypes.data
    last = m - 1
    jend = j0 + ((j1 - j0) // L) * L
    baddr = np.empty((2, m), dtype=np.int64)
    gaddr = np.empty(m, dtype=np.int64)
    for r in range(m):
        gaddr[r] = G.ctypes.data + rows[r] * G.strides[0]
        for h in range(2):
            baddr[h, r] = bufs.ctypes.data + h * bufs.strides[0] + r * bufs.strides[1]
    nblk = 0
    for s0 in range(j0, jend, F):
        nblk += (min(jend, s0 + F) - s0 + _PACK - 1) // _PACK
    start = np.empty(nblk, dtype=np.int64)
    width_of = np.empty(nblk, dtype=np.int64)
    flush = np.zeros(nblk, dtype=np.bool_)
    q = 0
    for s0 in range(j0, jend, F):
        s1 = min(jend, s0 + F)
        for c0 in range(s0, s1, _PACK):
            start[q] = c0
            width_of[q] = min(s1, c0 + _PACK) - c0
            flush[q] = c0 + _PACK >= s1
            q += 1
    if nblk > 0 and mode != 2:
        _copy_rows(G, rows, 0, m, start[0], width_of[0], bufs[0])
    lines = _PACK * 4 // 64
    per_tile = (m * lines + nt - 1) // nt
    for q in range(nblk):
        h = q % 2 if mode != 3 else 0
        nxt = q + 1 < nblk
        if mode == 2:
            _copy_rows(G, rows, 0, m, start[q], width_of[q], bufs[h])
            continue
        for t in range(nt):
            if nxt and mode == 1:
                _copy_rows(
                    G, rows, (t * m) // nt, ((t + 1) * m) // nt, start[q + 1], width_of[q + 1], bufs[1 - h]
                )
            elif nxt and mode == 4:
                for x in range(t * per_tile, min(m * lines, (t + 1) * per_tile)):
                    _prefetch(gaddr[x // lines] + start[q + 1] * 4 + (x % lines) * 64)
            i0 = ti[t]
            jj = tj[t]
            _gramtile._fma_tile(
                (
                    baddr[h, min(i0, last)],
                    baddr[h, min(i0 + 1, last)],
                    baddr[h, min(i0 + 2, last)],
                    baddr[h, min(jj, last)],
                    baddr[h, min(jj + 1, last)],
                    baddr[h, min(jj + 2, last)],
                    baddr[h, min(jj + 3, last)],
                ),
                width_of[q] // L,
                accb + t * (width * 4),
            )
        if nxt and (mode == 0 or mode == 4):
            _copy_rows(G, rows, 0, m, start[q + 1], width_of[q + 1], bufs[1 - h])
        if flush[q]:
            for t in range(nt):
                for a in range(A):
                    i = ti[t] + a
                    for b in range(B):
                        j = tj[t] + b
                        if i <= last and j <= last and j >= i:
                            s = 0.0
                            o = (a * B + b) * L
                            for lane in range(L):
                                s += np.float64(acc[t, o + lane])
                            out[i, j] += s
                for x in range(width):
                    acc[t, x] = 0.0
    if jend < j1:
        for i in range(m):
            for j in range(i, m):
                s = 0.0
                for k in range(jend, j1):
                    s += np.float64(G[rows[i], k]) * np.float64(G[rows[j], k])
                out[i, j] += s
    return out


@nb.njit(parallel=True, nogil=True)
def _packed_gram(G, rows, bounds, mode):
    """The upper triangle of the Gram through ``_packed_chunk``, chunk partials added in chunk
    order (as ``_distance._tile_gram_chunks``)."""
    m = rows.size
    nch = bounds.size - 1
    part = np.zeros((nch, m, m))
    for c in nb.prange(nch):
        bufs = np.zeros((2, m, _PACK + 16), dtype=np.float32)
        _packed_chunk(G, rows, bounds[c], bounds[c + 1], part[c], bufs, mode)
    out = np.zeros((m, m))
    for c in range(nch):
        for i in range(m):
            for j in range(i, m):
                out[i, j] += part[c, i, j]
    return out


def _median_time(fn, repeats):
    """robustagg bench's median wall time of ``repeats`` calls after a warm-up call."""
    return median_time(fn, repeats=repeats, warmup=1)[0]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--n", type=int, default=50)
    ap.add_argument("--d", type=float, default=1e6)
    ap.add_argument("--threads", type=int, default=1, help="also time the whole Gram on this many threads")
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument(
        "--decompose",
        action="store_true",
        help="with --threads: the Gram's copies and tiles apart, and overlapped",
    )
    args = ap.parse_args(argv)
    n, d = args.n, int(args.d)

    from robustagg.kernels import _gram as _distance  # the Gram stage of the distances

    @nb.njit(nogil=True)
    def _tiles_loop(X, c0, ns, reps, acc, ti, tj):
        base = np.int64(X.ctypes.data) + c0 * 4
        rs = np.int64(X.strides[0])
        a = acc.ctypes.data
        last = X.shape[0] - 1
        for _ in range(reps):
            for t in range(ti.size):
                i0 = ti[t]
                jj = tj[t]
                _gramtile._fma_tile(
                    (
                        base + min(i0, last) * rs,
                        base + min(i0 + 1, last) * rs,
                        base + min(i0 + 2, last) * rs,
                        base + min(jj, last) * rs,
                        base + min(jj + 1, last) * rs,
                        base + min(jj + 2, last) * rs,
                        base + min(jj + 3, last) * rs,
                    ),
                    ns,
                    a + t * 384,
                )

    rng = np.random.default_rng(0)
    G = rng.standard_normal((n, d), dtype=np.float32)
    cols = 1024
    nb.set_num_threads(1)
    print(f"n={n} d={d} float32; rates in 10^9 multiply-adds per second (tile work), one thread")
    rows_out = []

    def tile_rate(X, m, reps):
        ti, tj = _gramtile._tiles(m)
        acc = np.zeros(96 * ti.size, dtype=np.float32)
        t = _median_time(lambda: _tiles_loop(X, 0, cols // 8, reps, acc, ti, tj), args.repeats)
        return reps * ti.size * 12 * cols / t / 1e9

    small = rng.standard_normal((7, cols + 16), dtype=np.float32)
    rows_out.append(("1. L1: one tile, 7 rows x 1024 columns", tile_rate(small, 7, 20000)))
    packed = rng.standard_normal((n, cols + 16), dtype=np.float32)
    rows_out.append((f"2. L2, packed: {n} rows x 1024 columns", tile_rate(packed, n, 200)))
    rows_out.append((f"3. L2, in place: {n} rows x 1024 columns of G", tile_rate(G, n, 200)))
    ti, _ = _gramtile._tiles(n)
    rows = np.arange(n, dtype=np.int64)
    kb = _gramtile.block_columns(n)
    out = np.zeros((n, n))
    t_stream = _median_time(lambda: _gramtile.tile_gram_f32(G, rows, 0, d, kb, out), args.repeats)
    rows_out.append(
        (f"4. streaming: the whole Gram of G ({t_stream * 1e3:.1f} ms)", ti.size * 12 * d / t_stream / 1e9)
    )
    peak = rows_out[0][1]
    for name, rate in rows_out:
        print(f"  {name:<58}{rate:>7.1f}  {rate / peak:>6.0%} of line 1")
    if args.threads > 1:
        nb.set_num_threads(args.threads)
        bounds = np.asarray(_distance._chunk_bounds(d), dtype=np.int64)
        t_par = _median_time(
            lambda: _distance._tile_gram_chunks(G, rows, -1, True, bounds, 0, kb, args.threads), args.repeats
        )
        fl = read_floor(G, repeats=args.repeats)["s"]
        pairs = n * (n + 1) // 2
        print(
            f"  5. the Gram stage on {args.threads} threads: {t_par * 1e3:.1f} ms "
            f"({ti.size * 12 * d / t_par / 1e9:.1f}); read floor {fl * 1e3:.1f} ms; "
            f"{pairs} pairs x d at {args.threads} x line 1 would take {pairs * d / (args.threads * peak * 1e9) * 1e3:.1f} ms"
        )
        if args.decompose:
            ref = np.triu(_distance._tile_gram_chunks(G, rows, -1, True, bounds, 0, kb, args.threads))
            same = np.array_equal(np.triu(_packed_gram(G, rows, bounds, 0)), ref)
            print(
                f"  6. the same Gram, each block copied first ({'the same bits' if same else 'DIFFERENT BITS'}), {args.threads} threads:"
            )
            times = {}
            for name, mode in _MODES.items():
                times[mode] = _median_time(
                    lambda mode=mode: _packed_gram(G, rows, bounds, mode), args.repeats
                )
                print(f"     {name:<56}{times[mode] * 1e3:>7.1f} ms  {times[mode] / fl:>5.2f} x floor")
            best = max(times[2], times[3])
            print(f"     perfect overlap: the larger half, {best * 1e3:.1f} ms = {best / fl:.2f} x floor")
    return 0


if __name__ == "__main__":
    sys.exit(main())
