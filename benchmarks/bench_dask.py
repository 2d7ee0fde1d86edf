"""Aggregate an (n, d) matrix larger than any one Dask worker's memory limit.

The matrix is never materialised: ``dask.array.random`` generates each (n, chunk) column block on
a worker when a pass needs it (and again for the next pass), so the workers hold a few blocks at a
time. Each rule is timed after a warm-up on a small matrix (Numba compilation in the workers is
reported apart) and compared with one plain pass over the matrix (``X.sum(axis=0)``: the cost of
generating or reading the data), so ``passes`` says how many data passes a rule costs; each
result is checked against the NumPy rule on a column slice. Times are ``robustagg.bench``'s
``median_time`` (one call each); ``robustagg bench`` (the benchmark entry point) runs in one
process, this script adds the Dask cluster and its workers' peak memory.

    python benchmarks/bench_dask.py                       # n=50, d=10M float32 (1.9 GiB), 2 workers x 640 MiB
    python benchmarks/bench_dask.py --d 2000000 --rules mean krum
"""

from __future__ import annotations

import argparse
import os
import sys
import threading
from pathlib import Path

import numpy as np

ROOT = str(Path(__file__).resolve().parents[1])
if ROOT not in sys.path:  # run from a checkout without installing
    sys.path.insert(0, ROOT)


def _rss() -> int:
    import psutil

    return psutil.Process().memory_info().rss


class WorkerPeakMemory:
    """Polls the workers' resident memory (in a thread on the driver) and keeps each one's peak."""

    def __init__(self, client, every: float = 0.2):
        self.client, self.every = client, every
        self.peak: dict[str, int] = {}
        self._stop = threading.Event()

    def __enter__(self):
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._thread.start()
        return self

    def _loop(self):
        while not self._stop.is_set():
            try:
                for w, rss in self.client.run(_rss).items():
                    self.peak[w] = max(self.peak.get(w, 0), rss)
            except Exception:
                pass
            self._stop.wait(self.every)

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()


def _computed(out_info):
    out, info = out_info
    return out.compute(), info


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=50)
    parser.add_argument("--d", type=int, default=10_000_000)
    parser.add_argument("--chunk", type=int, default=100_000, help="columns per block")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--memory-limit", default="640MiB", help="per worker")
    parser.add_argument(
        "--rules",
        nargs="+",
        default=["mean", "median", "trimmed_mean", "krum", "multi_krum", "geometric_median", "signguard"],
    )
    parser.add_argument("--f", type=int, default=10)
    parser.add_argument("--check-columns", type=int, default=20_000)
    args = parser.parse_args(argv)

    import dask.array as da
    import distributed

    import robustagg
    import robustagg.dask as rdask
    from robustagg._registry import call_with_supported
    from robustagg.bench import median_time

    cluster = distributed.LocalCluster(
        n_workers=args.workers,
        threads_per_worker=1,
        processes=True,
        memory_limit=args.memory_limit,
        dashboard_address=None,
        env={
            "NUMBA_NUM_THREADS": "1",
            "PYTHONPATH": os.pathsep.join([ROOT, os.environ.get("PYTHONPATH", "")]),
        },
    )
    client = distributed.Client(cluster)
    limit = next(iter(client.scheduler_info()["workers"].values()))["memory_limit"]
    n, d = args.n, args.d
    itemsize = 4

    def matrix(n, d, chunk):
        """The first f rows attacked (reversed and scaled by 3), generated block by block."""
        X = da.random.default_rng(0).normal(0.05, 1.0, size=(n, d), chunks=(n, chunk)).astype(np.float32)
        scale = np.ones((n, 1), dtype=np.float32)
        scale[: args.f] = -3.0
        return X * scale

    X = matrix(n, d, args.chunk)
    nbytes = n * d * itemsize
    print(
        f"matrix {n} x {d:,} float32 = {nbytes / 2**30:.2f} GiB in {len(X.chunks[1])} column blocks of "
        f"{n * args.chunk * itemsize / 2**20:.0f} MiB; {args.workers} workers x {limit / 2**30:.2f} GiB limit "
        f"(matrix = {nbytes / limit:.1f}x one worker's limit, {nbytes / (limit * args.workers):.1f}x all workers')"
    )
    small = matrix(n, 4 * 1000, 1000)
    print(
        f"{'rule':<14} {'compile+warm s':>14} {'run s':>8} {'passes':>7} {'GiB/s':>7} {'peak worker RSS MiB':>20}  check"
    )
    # baseline: one pass over the generated matrix (what generating/reading the data costs)
    with WorkerPeakMemory(client) as mem:
        one_pass = median_time(lambda: X.sum(axis=0).compute(), repeats=1, warmup=0)[0]
    print(
        f"{'(one pass)':<14} {'':>14} {one_pass:>8.1f} {1.0:>7.2f} {nbytes / 2**30 / one_pass:>7.2f} "
        f"{max(mem.peak.values()) / 2**20 if mem.peak else float('nan'):>20.0f}  X.sum(axis=0)"
    )
    for rule in args.rules:
        if rule != "signguard" and rule not in robustagg.RULES:
            print(f"{rule:<14} (not available)")
            continue
        kwargs = {"f": args.f} if rule in ("trimmed_mean", "krum", "multi_krum") else {}
        if rule == "signguard":
            kwargs["rng"] = 0
        warm = median_time(
            lambda rule=rule, kwargs=kwargs: rdask.aggregate(small, rule, **kwargs).compute(),
            repeats=1,
            warmup=0,
        )[0]
        client.run(lambda: __import__("gc").collect())
        with WorkerPeakMemory(client) as mem:
            elapsed, _, (result, info), _ = median_time(
                lambda rule=rule, kwargs=kwargs: _computed(
                    rdask.aggregate(X, rule, return_info=True, **kwargs)
                ),
                repeats=1,
                warmup=0,
            )
        # check: the NumPy rule on the first columns (coordinate-wise rules: identical columns;
        # selecting rules: the same rows averaged)
        cols = X[:, : args.check_columns].compute()
        if rule in rdask.COORDINATEWISE_RULES:
            expected = call_with_supported(robustagg.get_rule(rule), cols, **kwargs)
        elif rule == "signguard":
            rows = np.flatnonzero(info.kept)
            expected = (cols[rows].astype(np.float64) * info.weights[rows][:, None]).mean(axis=0)
        elif "combination" in info:  # geometric median: the affine combination of the rows
            expected = info.combination @ cols.astype(np.float64)
        else:
            expected = cols[np.flatnonzero(info.kept)].astype(np.float64).mean(axis=0)
        ok = np.allclose(result[: args.check_columns], expected, rtol=1e-5, atol=1e-6)
        byz_kept = int(info.kept[: args.f].sum())
        peak = max(mem.peak.values()) / 2**20 if mem.peak else float("nan")
        print(
            f"{rule:<14} {warm:>14.1f} {elapsed:>8.1f} {elapsed / one_pass:>7.2f} {nbytes / 2**30 / elapsed:>7.2f} {peak:>20.0f}  "
            f"{'OK' if ok else 'MISMATCH'} (kept {info.n_kept}/{n}, Byzantine kept {byz_kept}/{args.f})"
        )
    client.close()
    cluster.close()
    return 0


if __name__ == "__main__":
    os.environ.setdefault("NUMBA_NUM_THREADS", "1")
    raise SystemExit(main())
