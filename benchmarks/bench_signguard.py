"""SignGuard timings, side by side in one run (figures quoted in docs/signguard.md).

    python benchmarks/bench_signguard.py            # all cases
    python benchmarks/bench_signguard.py --quick    # smaller repeats

1. n = 50, d = 10^6, float32, the input of record (``robustagg bench``'s matrix: 10 LIE rows),
   side by side (interleaved calls): the read floor (one streaming pass, as ``robustagg bench``
   measures it), one ``np.mean(G, axis=0)``, ``signguard`` (targets: <= 3x np.mean;
   <= 3x the read floor), ``signguard_sim`` / ``signguard_dist`` with a reference (the
   training loop's case) and without one (Gram-bound: against one ``G @ G.T`` and the shared
   ``pairwise_sq_distances``; ``G @ G.T`` is timed after the interleaved calls, since
   OpenBLAS's worker threads spin after a call). Wall-clock medians and CPU time per call (all threads);
   ``--threads 1`` gives the one-thread figures (Numba and BLAS limited to one thread).
2. n = 50, d = 10^4: ``signguard`` against the naive NumPy + scikit-learn implementation of the
   same algorithm with the same coordinates (``robustagg.testing.naive_signguard``; target >= 20x).
3. n = 1000, d = 10^5, float32: ``signguard`` (target < 1 s).
4. Compile time: the first call in a fresh interpreter with an empty Numba cache, apart from
   the cache-load time of a second fresh interpreter (``robustagg bench``'s cold-start suite,
   ``measure_compile``, on its (16, 256) float32 input).

Each timing is the median of several calls after a warm-up call (Numba compiled). A thin
driver of ``robustagg.bench`` (the entry point, ``robustagg bench``): its matrix
(``attacked_matrix``), timing primitives (``median_time``, ``side_by_side``: interleaved
calls), read-floor passes and cold-start suite; what it adds is SignGuard's own cases.
"""

from __future__ import annotations

import argparse
import os

# Numba's OpenMP threading layer spin-waits by default: on a machine busier than its cores
# every parallel kernel call then costs tens of milliseconds of barrier waiting. Passive
# waiting (set before libgomp loads) measures the code, not the contention.
os.environ.setdefault("OMP_WAIT_POLICY", "passive")

import numpy as np  # noqa: E402

from robustagg.bench import attacked_matrix, floor_kernels, measure_compile, median_time, side_by_side  # noqa: E402


def _median(fn, repeat: int) -> float:
    """robustagg bench's median wall time of ``repeat`` calls after a warm-up call."""
    return median_time(fn, repeats=repeat, warmup=1)[0]


def main() -> None:
    ap = argparse.ArgumentParser(description="SignGuard timings")
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--threads", type=int, default=None, help="Numba and BLAS threads (default: all)")
    ap.add_argument("--only-first", action="store_true", help="case 1 only (the n = 50, d = 1e6 table)")
    args = ap.parse_args()
    repeat = 3 if args.quick else 7
    if args.threads is not None:
        import numba
        from threadpoolctl import threadpool_limits

        numba.set_num_threads(args.threads)
        threadpool_limits(args.threads)

    import robustagg
    from robustagg.testing.naive_signguard import naive_signguard

    rng = np.random.default_rng(0)
    import numba

    print(
        f"numba {numba.__version__}, threads {numba.get_num_threads()}, cpus {os.cpu_count()}, "
        f"OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY')}, load average {os.getloadavg()[0]:.1f}"
    )

    # 1. n = 50, d = 1e6, float32, the input of record, side by side
    from robustagg import kernels

    G = attacked_matrix(50, 1_000_000, 10, np.float32)
    rows = np.arange(G.shape[0], dtype=np.int64)
    ref = robustagg.signguard(G, rng=1).astype(np.float64)  # a previous round's aggregate
    floors = floor_kernels()
    cases = {
        "read floor (numba-row-sum)": lambda: floors["numba-row-sum"](G),
        "read floor (numpy-sum)": lambda: floors["numpy-sum"](G),
        "np.mean(G, axis=0)": lambda: np.mean(G, axis=0),
        "signguard": lambda: robustagg.signguard(G, rng=0),
        "signguard_sim, reference": lambda: robustagg.signguard_sim(G, reference=ref, rng=0),
        "signguard_dist, reference": lambda: robustagg.signguard_dist(G, reference=ref, rng=0),
        "signguard_sim, no reference": lambda: robustagg.signguard_sim(G, rng=0),
        "signguard_dist, no reference": lambda: robustagg.signguard_dist(G, rng=0),
        "pairwise_sq_distances": lambda: kernels.pairwise_sq_distances(G, rows),
    }
    wall, cpu = side_by_side(cases, repeat)
    # the BLAS Gram after the interleaved calls, not among them: multithreaded OpenBLAS workers
    # keep spinning after a call and would slow whichever case follows on a small machine
    gram = {"G @ G.T": lambda: G @ G.T}
    w2, c2 = side_by_side(gram, repeat)
    cases.update(gram)
    wall.update(w2)
    cpu.update(c2)
    floor = min(wall["read floor (numba-row-sum)"], wall["read floor (numpy-sum)"])
    t_mean = wall["np.mean(G, axis=0)"]
    t_gram = wall["G @ G.T"]
    print("[1] n=50 d=1e6 float32 (10 LIE rows), median of interleaved calls:")
    # CPU time against the floor's CPU time: steadier than wall time on a busy machine
    floor_cpu = min(cpu["read floor (numba-row-sum)"], cpu["read floor (numpy-sum)"])
    print(
        f"    {'':30s} {'wall ms':>8s} {'cpu ms':>8s} {'x floor':>8s} {'x mean':>8s} {'x G@G.T':>8s} "
        f"{'cpu x floor cpu':>16s}"
    )
    for name in cases:
        print(
            f"    {name:30s} {wall[name] * 1e3:8.1f} {cpu[name] * 1e3:8.1f} {wall[name] / floor:8.2f} "
            f"{wall[name] / t_mean:8.2f} {wall[name] / t_gram:8.2f} {cpu[name] / floor_cpu:16.2f}"
        )
    print("    targets: signguard <= 3x np.mean, signguard* <= 3x the read floor")
    G = ref = None  # free the matrix before the next case
    if args.only_first:
        return

    # 2. n = 50, d = 1e4: vs the naive NumPy + scikit-learn implementation
    G = rng.standard_normal((50, 10_000)) + 0.1
    G[:10] *= -1
    _, info = robustagg.signguard(G, rng=0, return_info=True)
    coords = info.coordinates
    t_fast = _median(lambda: robustagg.signguard(G, coordinates=coords), repeat * 3)
    t_naive = _median(lambda: naive_signguard(G, coords), repeat)
    print(
        f"[2] n=50 d=1e4 float64: signguard {t_fast * 1e3:.2f} ms, naive NumPy+scikit-learn {t_naive * 1e3:.1f} ms, speed-up {t_naive / t_fast:.0f}x (target >= 20x)"
    )
    G = None  # free the matrix before the next case

    # 3. n = 1000, d = 1e5, float32
    G = rng.standard_normal((1000, 100_000), dtype=np.float32)
    G += 0.1
    t_big = _median(lambda: robustagg.signguard(G, rng=0), max(2, repeat // 2))
    t_mean_big = _median(lambda: np.mean(G, axis=0), max(2, repeat // 2))
    print(f"[3] n=1000 d=1e5 float32: signguard {t_big:.3f} s (np.mean {t_mean_big:.3f} s) (target < 1 s)")
    G = None  # free the matrix before the next case

    # 4. compile time vs cache load (robustagg bench's cold-start suite: fresh interpreters)
    e = measure_compile("rule", ["signguard"], ["float32"])["signguard"]["float32"]
    if "error" in e:
        print(f"[4] cold start: {e['error']}")
        return
    print(f"[4] first call with an empty Numba cache {e['first_cold_s']:.2f} s (import {e['import_s']:.2f} s); "
          f"first call loading the cache {e['first_warm_s']:.2f} s; "
          f"compile {e['compile_s']:.2f} s, cache load {e['cache_load_s']:.2f} s")  # fmt: skip


if __name__ == "__main__":
    main()
