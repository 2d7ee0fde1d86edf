"""Classical rules against their NumPy references, side by side in one run.

At n = 50, d = 10^6, float32 (``--quick``: d = 10^5) on a synthetic attacked matrix (honest
``mu + N(0, 1)`` rows, the first f = 10 replaced by the LIE vector):

* ``median`` vs ``np.median(G, axis=0)``;
* ``trimmed_mean(f)`` vs the sort-based NumPy trimmed mean ``np.sort(G, axis=0)[f:n-f].mean(0)``;
* ``krum(f)``, ``multi_krum(f)`` vs one ``X @ X.T`` (float32 BLAS);
* ``bulyan``, ``geometric_median``, ``dnc`` for information.

Each time is the median of ``--repeats`` calls after one warm-up call (JIT compilation or cache
load happen in the warm-up). The compile time is reported separately: each rule's first call on
a tiny matrix in a fresh interpreter with an empty Numba cache, less its steady call.

A thin driver of ``robustagg.bench`` (the entry point, ``robustagg bench``): its matrix
(``attacked_matrix``, the throughput table's), timing (``median_time``), read floor and
cold-start suite (``measure_compile``); what it adds is the pairing of each rule with the
reference it is judged against, timed alternately.

Usage::

    python benchmarks/bench_classical.py            # n=50, d=1e6, float32
    python benchmarks/bench_classical.py --quick    # d=1e5, fewer repeats
    python benchmarks/bench_classical.py --cpu      # 1 thread, CPU time (busy machines)
"""

from __future__ import annotations

import argparse
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # run from a checkout

from robustagg.bench import attacked_matrix, measure_compile, median_time, read_floor  # noqa: E402

_CPU = False  # --cpu: process CPU time instead of wall time


def _median_time(fn, repeats: int) -> float:
    """robustagg bench's median of ``repeats`` calls after a warm-up call (compilation / cache
    load), garbage collector off: the wall time, or with ``--cpu`` the process CPU time."""
    wall, _, _, cpu = median_time(fn, repeats=repeats, warmup=1)
    return cpu if _CPU else wall


def compile_times(dtype: str) -> dict[str, float]:
    """Compile time of each rule (robustagg bench's cold-start suite: the first call in a fresh
    interpreter with an empty Numba cache, less the steady call)."""
    comp = measure_compile("rule", list(_COMPILED), [dtype])
    return {name: comp[name][dtype].get("compile_s", float("nan")) for name in _COMPILED}


_COMPILED = ("median", "trimmed_mean", "krum", "multi_krum", "bulyan", "geometric_median", "dnc")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=50)
    ap.add_argument("--d", type=float, default=1e6)
    ap.add_argument("--f", type=int, default=10)
    ap.add_argument("--dtype", default="float32", choices=["float32", "float64"])
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--quick", action="store_true", help="d = 1e5, 3 repeats")
    ap.add_argument("--no-compile", action="store_true", help="skip the compile-time measurement")
    ap.add_argument(
        "--cpu",
        action="store_true",
        help="one thread everywhere (Numba and BLAS) and process CPU time instead of wall time: "
        "a measure of the work done that a busy shared machine disturbs less",
    )
    args = ap.parse_args(argv)
    if args.quick:
        args.d, args.repeats = 1e5, 3
    n, d, f = args.n, int(args.d), args.f
    dtype = np.dtype(args.dtype)

    import numba

    import robustagg

    global _CPU
    if args.cpu:
        import threadpoolctl

        numba.set_num_threads(1)
        threadpoolctl.threadpool_limits(1)
        _CPU = True
    G = attacked_matrix(n, d, f, dtype)
    clock = "process CPU time, 1 thread" if args.cpu else "wall time"
    print(
        f"n={n} d={d} f={f} dtype={dtype} threads={numba.get_num_threads()} repeats={args.repeats} ({clock})"
    )

    def np_trimmed():
        return np.sort(G, axis=0)[f : n - f].mean(axis=0)

    # correctness first: the fast rules agree with their references here
    np.testing.assert_allclose(robustagg.median(G), np.median(G, axis=0), rtol=1e-6)
    np.testing.assert_allclose(robustagg.trimmed_mean(G, f), np_trimmed(), rtol=1e-4, atol=1e-5)

    rows = [
        ("median", lambda: robustagg.median(G), "np.median(G, axis=0)", lambda: np.median(G, axis=0)),
        ("trimmed_mean", lambda: robustagg.trimmed_mean(G, f), "np.sort-based trimmed mean", np_trimmed),
        ("krum", lambda: robustagg.krum(G, f), "X @ X.T", lambda: G @ G.T),
        ("multi_krum", lambda: robustagg.multi_krum(G, f), "X @ X.T", lambda: G @ G.T),
        ("bulyan", lambda: robustagg.bulyan(G, min(f, (n - 3) // 4)), "X @ X.T", lambda: G @ G.T),
        ("geometric_median", lambda: robustagg.geometric_median(G), "X @ X.T", lambda: G @ G.T),
        ("dnc", lambda: robustagg.dnc(G, f, rng=0), "X @ X.T", lambda: G @ G.T),
    ]
    # the read floor: one streaming pass over G (robustagg bench's definition), same clock
    fl = read_floor(G, repeats=args.repeats)
    floor = fl["cpu_s"] if args.cpu else fl["s"]
    print(f"read floor {floor:.4f} s ({fl['method']})")
    print(f"{'rule':<18}{'time [s]':>10}{'x floor':>9}   {'reference':<28}{'ref [s]':>9}{'ref/rule':>10}")
    ref_cache: dict[str, float] = {}
    for name, fn, ref_name, ref_fn in rows:
        # rule and reference timed alternately, so that a noisy neighbour hits both alike
        t_rule = _median_time(fn, args.repeats)
        t_ref = _median_time(ref_fn, args.repeats)
        ref_cache[ref_name] = t_ref
        print(
            f"{name:<18}{t_rule:>10.4f}{t_rule / floor:>8.2f}x   {ref_name:<28}{t_ref:>9.4f}{t_ref / t_rule:>9.2f}x"
        )
    if not args.no_compile:
        print(
            "\ncompile time (first call less steady call, fresh interpreter, empty Numba cache, 16x256 input):"
        )
        for name, t in compile_times(args.dtype).items():
            print(f"  {name:<18}{t:>8.2f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
