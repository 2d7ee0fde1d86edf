"""Register-tiled float32 Gram kernel for a few rows and many columns.

``X @ X.T`` for an (m, d) float32 matrix with m small (tens of rows) and d large is compute
bound: m(m+1)/2 * d multiply-adds against m * d values read. BLAS (OpenBLAS syrk/sgemm) reaches
about a third of this machine's multiply-add peak on such skinny shapes (its kernels and
packing are tuned for large square blocks). This kernel reaches most of it by keeping a
3 x 4 tile of row pairs in twelve 8-lane float32 accumulators (twelve of the sixteen AVX
registers) while it streams the tile's 3 + 4 rows, 8 columns at a time: 7 vector loads feed 12
fused multiply-adds. The accumulators are emitted as LLVM vectors by an intrinsic: Numba does
not vectorise such a loop by itself (its SLP vectoriser is off, and a reduction loop may not be
reordered without fast-math flags, which the library never sets).

Accuracy: each of a pair's 8 lanes sums the products of its columns in float32 in column
order, over at most ``TILE_FLUSH_COLUMNS`` columns (so ``TILE_FLUSH_COLUMNS / 8`` terms), then
the lanes are added in float64 into the caller's float64 accumulator -- the same or better than
a float32 SGEMM over ``TILE_FLUSH_COLUMNS`` columns whose blocks are added in float64 (the
scheme of ``_gram``). The result does not depend on the thread count (the caller fixes the
column ranges); ``llvm.fmuladd`` fuses the multiply-add where the CPU has FMA, so the last bits
may differ between CPUs with and without FMA.

The tile's shape, the flush length and the block widths are ``robustagg._thresholds``'s
(``TILE_*``).

Tiles cover the pairs i <= j; rows past the end of a tile are clamped to the last row (valid
memory, results discarded), so tiles on the diagonal compute a few pairs twice. At m = 50 the
tiles compute 1.1 times the m(m+1)/2 pairs a symmetric product needs.
"""

from __future__ import annotations

import numba as nb
import numpy as np
from llvmlite import ir
from numba import types
from numba.extending import intrinsic

# the tile's shape and flush length under the short names the code generation uses
from .._thresholds import TILE_BLOCK_BYTES, TILE_BLOCK_MAX_COLUMNS, TILE_BLOCK_MIN_COLUMNS
from .._thresholds import TILE_FLUSH_COLUMNS as _FLUSH
from .._thresholds import TILE_LANES as _L
from .._thresholds import TILE_ROWS_I as _A
from .._thresholds import TILE_ROWS_J as _B

__all__ = ["block_columns", "tile_gram_f32"]

_FMA = "llvm.fmuladd.v8f32"


@intrinsic
def _fma_tile(typingctx, addrs, nsteps, acc_addr):
    """``acc[a*B + b] += X_a[8s:8s+8] * Y_b[8s:8s+8]`` for s < nsteps, on 8-lane float32 vectors.

    ``addrs``: a tuple of A + B byte addresses (the tile's rows at its first column), ``nsteps``
    the number of 8-column steps, ``acc_addr`` the address of A * B * 8 float32 accumulators
    (read at entry, written at exit; in between they live in registers)."""
    if not (
        isinstance(addrs, types.UniTuple)
        and addrs.count == _A + _B
        and isinstance(addrs.dtype, types.Integer)
    ):
        return None
    sig = types.void(addrs, nsteps, acc_addr)

    def codegen(context, builder, signature, args):
        taddrs, tn, tacc = args
        f32 = ir.FloatType()
        vt = ir.VectorType(f32, _L)
        vp = vt.as_pointer()
        fp = f32.as_pointer()
        i64 = ir.IntType(64)
        mod = builder.module
        fma = mod.globals.get(_FMA)
        if fma is None:
            fma = ir.Function(mod, ir.FunctionType(vt, [vt, vt, vt]), _FMA)
        tn = builder.sext(tn, i64) if tn.type.width < 64 else tn
        ptrs = [builder.inttoptr(builder.extract_value(taddrs, r), fp) for r in range(_A + _B)]
        accp = builder.inttoptr(tacc, vp)
        init = [builder.load(builder.gep(accp, [ir.Constant(i64, t)]), align=4) for t in range(_A * _B)]
        pre = builder.block
        fn = builder.function
        loop = fn.append_basic_block("tile.loop")
        body = fn.append_basic_block("tile.body")
        done = fn.append_basic_block("tile.done")
        builder.branch(loop)
        builder.position_at_end(loop)
        k = builder.phi(i64)
        k.add_incoming(ir.Constant(i64, 0), pre)
        phis = []
        for t in range(_A * _B):
            p = builder.phi(vt)
            p.add_incoming(init[t], pre)
            phis.append(p)
        builder.cbranch(builder.icmp_signed("<", k, tn), body, done)
        builder.position_at_end(body)
        off = builder.mul(k, ir.Constant(i64, _L))
        va = [builder.load(builder.bitcast(builder.gep(ptrs[a], [off]), vp), align=4) for a in range(_A)]
        new = [None] * (_A * _B)
        for b in range(_B):
            vb = builder.load(builder.bitcast(builder.gep(ptrs[_A + b], [off]), vp), align=4)
            for a in range(_A):
                t = a * _B + b
                new[t] = builder.call(fma, [va[a], vb, phis[t]])
        end = builder.block
        k.add_incoming(builder.add(k, ir.Constant(i64, 1)), end)
        for t in range(_A * _B):
            phis[t].add_incoming(new[t], end)
        builder.branch(loop)
        builder.position_at_end(done)
        for t in range(_A * _B):
            builder.store(phis[t], builder.gep(accp, [ir.Constant(i64, t)]), align=4)
        return context.get_dummy_value()

    return sig, codegen


@nb.njit(cache=True, nogil=True)
def _tiles(m):
    """Top-left corners (i0, j0) of the tiles covering the pairs i <= j of m rows."""
    n = 0
    for i0 in range(0, m, _A):
        n += (m - i0 + _B - 1) // _B
    ti = np.empty(n, dtype=np.int64)
    tj = np.empty(n, dtype=np.int64)
    t = 0
    for i0 in range(0, m, _A):
        for j0 in range(i0, m, _B):
            ti[t] = i0
            tj[t] = j0
            t += 1
    return ti, tj


def block_columns(m: int) -> int:
    """Columns per block: the block of all m rows stays within ``TILE_BLOCK_BYTES`` (multiple of 8)."""
    w = TILE_BLOCK_BYTES // (4 * max(m, 1))
    return int(max(TILE_BLOCK_MIN_COLUMNS, min(TILE_BLOCK_MAX_COLUMNS, (w // _L) * _L)))


@nb.njit(cache=True, nogil=True)
def tile_gram_f32(X, rows, j0, j1, kb, out):
    """``out[i, j] += sum_{k in [j0, j1)} X[rows[i], k] * X[rows[j], k]`` for i <= j (the upper
    triangle of out; the lower one is left alone). X: 2-D float32 with unit column stride (any
    row stride); out: (m, m) float64. ``kb``: columns per block (``block_columns(m)``)."""
    m = rows.size
    if m == 0 or j1 <= j0:
        return out
    if X.strides[1] != 4 or kb % _L != 0 or kb <= 0:
        raise ValueError("tile_gram_f32: X needs unit column stride and kb a positive multiple of 8")
    ti, tj = _tiles(m)
    nt = ti.size
    width = _A * _B * _L
    acc = np.zeros((nt, width), dtype=np.float32)
    accb = acc.ctypes.data
    rs = X.strides[0]
    base = X.ctypes.data
    addr = np.empty(m, dtype=np.int64)
    for r in range(m):
        addr[r] = base + rows[r] * rs
    last = m - 1
    jend = j0 + ((j1 - j0) // _L) * _L
    for s0 in range(j0, jend, _FLUSH):
        s1 = min(jend, s0 + _FLUSH)
        acc[:] = 0.0
        for c0 in range(s0, s1, kb):
            ns = (min(s1, c0 + kb) - c0) // _L
            cb = c0 * 4
            for t in range(nt):
                i0 = ti[t]
                jj = tj[t]
                _fma_tile(
                    (
                        addr[min(i0, last)] + cb,
                        addr[min(i0 + 1, last)] + cb,
                        addr[min(i0 + 2, last)] + cb,
                        addr[min(jj, last)] + cb,
                        addr[min(jj + 1, last)] + cb,
                        addr[min(jj + 2, last)] + cb,
                        addr[min(jj + 3, last)] + cb,
                    ),
                    ns,
                    accb + t * (width * 4),
                )
        for t in range(nt):
            i0 = ti[t]
            jj = tj[t]
            for a in range(_A):
                i = i0 + a
                if i > last:
                    break
                for b in range(_B):
                    j = jj + b
                    if j > last:
                        break
                    if j < i:
                        continue
                    s = 0.0
                    o = (a * _B + b) * _L
                    for lane in range(_L):
                        s += np.float64(acc[t, o + lane])
                    out[i, j] += s
    if jend < j1:  # fewer than 8 columns left: float64 directly
        for i in range(m):
            x = X[rows[i]]
            for j in range(i, m):
                y = X[rows[j]]
                s = 0.0
                for k in range(jend, j1):
                    s += np.float64(x[k]) * np.float64(y[k])
                out[i, j] += s
    return out
