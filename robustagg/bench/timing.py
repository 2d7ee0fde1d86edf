"""The timing primitives: the median of repeated calls (wall and CPU time), interleaved calls of
several cases, the read floor (one streaming pass over the matrix), and the thread settings a
measurement runs under."""

from __future__ import annotations

import gc
import math
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

SETTLE_CALLS = 3  # untimed calls before a rule's timed calls (when they cost little)


def median_time(
    call: Callable[[], Any], *, repeats: int, warmup: int = 1, budget: float = math.inf
) -> tuple[float, list[float], Any, float]:
    """Median wall time of ``call()`` over ``repeats`` calls after ``warmup`` untimed calls.

    Stops early (after at least one timed call) once the timed calls have used ``budget``
    seconds. The garbage collector is off while timing.

    Returns
    -------
    tuple
        ``(median, times, last_result, cpu_median)`` where ``cpu_median`` is the median CPU
        time of the process per call (all its threads; unlike wall time it does not grow while
        the process waits for a core on a loaded machine).
    """
    result = None
    for _ in range(warmup):
        result = call()
    times: list[float] = []
    cpu: list[float] = []
    gc.collect()
    was = gc.isenabled()
    gc.disable()
    try:
        for _ in range(max(1, repeats)):
            c0 = time.process_time()
            t0 = time.perf_counter()
            result = call()
            times.append(time.perf_counter() - t0)
            cpu.append(time.process_time() - c0)
            if sum(times) >= budget:
                break
    finally:
        if was:
            gc.enable()
    return float(np.median(times)), times, result, float(np.median(cpu))


def side_by_side(cases: Mapping[str, Callable[[], Any]], repeats: int) -> tuple[dict, dict]:
    """Median wall and CPU (process) time per call of each case, the cases' calls interleaved
    (one warm-up call each first), so that a change of the machine's load hits every case alike.

    Returns
    -------
    tuple of dict
        ``({name: wall median}, {name: CPU median})``.
    """
    for fn in cases.values():
        fn()
    wall: dict[str, list[float]] = {name: [] for name in cases}
    cpu: dict[str, list[float]] = {name: [] for name in cases}
    for _ in range(repeats):
        for name, fn in cases.items():
            t, c = time.perf_counter(), time.process_time()
            fn()
            wall[name].append(time.perf_counter() - t)
            cpu[name].append(time.process_time() - c)
    return {k: float(np.median(v)) for k, v in wall.items()}, {k: float(np.median(v)) for k, v in cpu.items()}


_FLOOR_KERNELS: dict[str, Callable[[np.ndarray], Any]] = {}


def floor_kernels() -> dict[str, Callable[[np.ndarray], Any]]:
    """The candidate single passes over G (compiled on first use): ``numba-row-sum``,
    ``numpy-sum`` and ``numpy-max``."""
    if _FLOOR_KERNELS:
        return _FLOOR_KERNELS
    import numba as nb

    @nb.njit(cache=True, parallel=True, nogil=True)
    def numba_row_sum(G):  # pragma: no cover - compiled
        # one pass, rows split across threads, 16 independent accumulators per row so that the
        # additions need no reassociation (no fast-math flags) and still fill the SIMD lanes
        n, d = G.shape
        out = np.zeros(n)
        m = d - d % 16
        for i in nb.prange(n):
            acc = np.zeros(16, dtype=G.dtype)
            for j in range(0, m, 16):
                for k in range(16):
                    acc[k] += G[i, j + k]
            s = 0.0
            for k in range(16):
                s += acc[k]
            for j in range(m, d):
                s += G[i, j]
            out[i] = s
        return out

    def numpy_sum(G):
        return G.sum()

    def numpy_max(G):
        return G.max()

    _FLOOR_KERNELS.update({"numba-row-sum": numba_row_sum, "numpy-sum": numpy_sum, "numpy-max": numpy_max})
    return _FLOOR_KERNELS


def read_floor(G: np.ndarray, repeats: int = 5) -> dict[str, Any]:
    """Time one streaming pass over ``G``: the fastest of the candidate passes.

    Every candidate reads each element of ``G`` exactly once (a C-contiguous matrix is read
    front to back). Returns ``{"s": seconds, "method": name, "candidates": {name: seconds}}``
    where each candidate's time is its median over ``repeats`` calls after a warm-up call, and
    ``s`` is the smallest of them (the floor is the best this machine does, so ratios against it
    are conservative); ``cpu_s`` is that candidate's CPU time per call.
    """
    cands, cpu = {}, {}
    for name, fn in floor_kernels().items():
        m = median_time(lambda fn=fn: fn(G), repeats=repeats, warmup=1)
        cands[name], cpu[name] = m[0], m[3]
    best = min(cands, key=cands.get)
    return {"s": cands[best], "cpu_s": cpu[best], "method": best, "candidates": cands}


def thread_counts(spec: Sequence[str | int]) -> list[int]:
    """Thread counts of ``spec`` (counts or ``"all"``: Numba's ``NUMBA_NUM_THREADS``), without
    repeats; a count outside ``1..NUMBA_NUM_THREADS`` is a ``ValueError``."""
    import numba

    top = int(numba.config.NUMBA_NUM_THREADS)
    out = []
    for t in spec:
        v = top if str(t).lower() == "all" else int(t)
        if not 1 <= v <= top:
            raise ValueError(f"bench: thread count {t!r} is outside 1..{top} (NUMBA_NUM_THREADS)")
        if v not in out:
            out.append(v)
    return out


def set_torch_threads(t: int) -> None:
    """Limit torch (byzfl's backend) to ``t`` threads where it is already imported."""
    if "torch" in sys.modules:
        try:
            sys.modules["torch"].set_num_threads(t)
        except Exception:
            pass
