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
   the cache-load time of a second fresh interpreter.

Each timing is the median of several calls after a warm-up call (Numba compiled).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import textwrap
import time

# Numba's OpenMP threading layer spin-waits by default: on a machine busier than its cores
# every parallel kernel call then costs tens of milliseconds of barrier waiting. Passive
# waiting (set before libgomp loads) measures the code, not the contention.
os.environ.setdefault("OMP_WAIT_POLICY", "passive")

import numpy as np  # noqa: E402


def median_time(fn, repeat: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return float(np.median(times))


def side_by_side(cases: dict, repeat: int) -> tuple[dict, dict]:
    """Median wall and CPU (process) time per call of each case, the cases' calls interleaved
    (one warm-up call each first), so that load changes hit every case alike."""
    for fn in cases.values():
        fn()
    wall: dict = {name: [] for name in cases}
    cpu: dict = {name: [] for name in cases}
    for _ in range(repeat):
        for name, fn in cases.items():
            t, c = time.perf_counter(), time.process_time()
            fn()
            wall[name].append(time.perf_counter() - t)
            cpu[name].append(time.process_time() - c)
    return {k: float(np.median(v)) for k, v in wall.items()}, {k: float(np.median(v)) for k, v in cpu.items()}


def fresh_interpreter_first_call(cache_dir: str) -> tuple[float, float]:
    """(import time, first signguard call) in a new interpreter using ``cache_dir``."""
    code = textwrap.dedent(
        """
        import time
        t = time.perf_counter()
        import numpy as np, robustagg
        t_import = time.perf_counter() - t
        G = np.random.default_rng(0).standard_normal((50, 1000)).astype(np.float32)
        t = time.perf_counter()
        robustagg.signguard(G, rng=0)
        print(t_import, time.perf_counter() - t)
        """
    )
    env = dict(os.environ, NUMBA_CACHE_DIR=cache_dir)
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env["PYTHONPATH"] = root + os.pathsep + env.get("PYTHONPATH", "")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True)
    a, b = out.stdout.split()
    return float(a), float(b)


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
    from robustagg._throughput import attacked_matrix
    from robustagg.bench import _floor_kernels

    G = attacked_matrix(50, 1_000_000, 10, np.float32)
    rows = np.arange(G.shape[0], dtype=np.int64)
    ref = robustagg.signguard(G, rng=1).astype(np.float64)  # a previous round's aggregate
    floors = _floor_kernels()
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
    t_fast = median_time(lambda: robustagg.signguard(G, coordinates=coords), repeat * 3)
    t_naive = median_time(lambda: naive_signguard(G, coords), repeat)
    print(
        f"[2] n=50 d=1e4 float64: signguard {t_fast * 1e3:.2f} ms, naive NumPy+scikit-learn {t_naive * 1e3:.1f} ms, speed-up {t_naive / t_fast:.0f}x (target >= 20x)"
    )
    G = None  # free the matrix before the next case

    # 3. n = 1000, d = 1e5, float32
    G = rng.standard_normal((1000, 100_000), dtype=np.float32)
    G += 0.1
    t_big = median_time(lambda: robustagg.signguard(G, rng=0), max(2, repeat // 2))
    t_mean_big = median_time(lambda: np.mean(G, axis=0), max(2, repeat // 2))
    print(f"[3] n=1000 d=1e5 float32: signguard {t_big:.3f} s (np.mean {t_mean_big:.3f} s) (target < 1 s)")
    G = None  # free the matrix before the next case

    # 4. compile time vs cache load
    with tempfile.TemporaryDirectory() as cache:
        imp1, first = fresh_interpreter_first_call(cache)
        imp2, cached = fresh_interpreter_first_call(cache)
    print(f"[4] first call with an empty Numba cache {first:.2f} s (import {imp1:.2f} s); "
          f"first call loading the cache {cached:.2f} s (import {imp2:.2f} s)")  # fmt: skip


if __name__ == "__main__":
    main()
