"""Where the float32 Gram's time goes: the register-tiled kernel's multiply-add rate from
registers-and-L1 down to the whole streaming Gram (figures quoted in docs/benchmarks.md,
"Still open").

    python benchmarks/bench_gram_kernel.py              # n = 50, d = 10^6, one thread
    python benchmarks/bench_gram_kernel.py --threads 2  # the whole Gram also on two threads

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

The gap between lines 1-2 and line 4 is memory (each block's first tile row waits for it)
and the row stride; docs/benchmarks.md lists what was tried against it.
"""

from __future__ import annotations

import argparse
import sys
import time

import numba as nb
import numpy as np


def _median_time(fn, repeats):
    fn()
    ts = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t)
    return float(np.median(ts))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--n", type=int, default=50)
    ap.add_argument("--d", type=float, default=1e6)
    ap.add_argument("--threads", type=int, default=1, help="also time the whole Gram on this many threads")
    ap.add_argument("--repeats", type=int, default=7)
    args = ap.parse_args(argv)
    n, d = args.n, int(args.d)

    from robustagg.bench import read_floor
    from robustagg.kernels import _distance, _gramtile

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
    rows_out.append((f"4. streaming: the whole Gram of G ({t_stream * 1e3:.1f} ms)", ti.size * 12 * d / t_stream / 1e9))
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
    return 0


if __name__ == "__main__":
    sys.exit(main())
