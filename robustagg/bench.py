"""``robustagg bench``: the benchmark harness for every registered rule and attack.

For each cell of a sweep over ``n`` (clients), ``d`` (parameters), dtype and thread count, the
harness builds one synthetic attacked gradient matrix and times, side by side in the same run:

* every selected rule (``robustagg.RULES``) and attack (``robustagg.ATTACKS``): the median of
  ``repeats`` calls after an explicit warm-up call (the warm-up absorbs JIT compilation or the
  load of Numba's on-disk cache);
* the **read floor**: one streaming pass over the same matrix, the fastest of several honest
  single passes (a Numba parallel row sum with 16 independent accumulators, NumPy's ``G.sum()``
  and ``G.max()``), so that ``time / floor`` says how many passes over memory a rule costs;
* reference operations where a target is stated against them: one ``G @ G.T`` (BLAS, the
  faster of the cell's thread count and one thread) and ``np.median(G, axis=0)``;
* a plain vectorised NumPy/SciPy implementation of the same rule or attack
  (:data:`NUMPY_BASELINES`) and, when the optional ``byzfl`` package is installed, its
  implementation of the same rule (:data:`BYZFL_RULES`).

Each row reports the median wall time (and the median CPU time of the process, which does not
grow while the process waits for a core on a loaded machine), the input throughput in GB/s (``n·d·itemsize / time``), the
ratio to the read floor, the speed-up over the NumPy and byzfl implementations, the compile time
(measured in a fresh subprocess with an empty Numba cache, see :func:`measure_compile`) and the
peak extra memory of one call.

Peak extra memory is the growth of the process's peak resident set size over one call: the
kernel's high-water mark ``VmHWM`` is reset by writing ``5`` to ``/proc/self/clear_refs`` just
before the call, and ``VmHWM - VmRSS(before)`` is read after it. This sees every allocation
(NumPy, Numba's runtime, BLAS buffers) -- ``tracemalloc`` would miss Numba's -- and is exact
for allocations that reach the operating system (all large ones); memory re-used from the
allocator's free lists is not counted, which matters only for small buffers. Where
``clear_refs`` cannot be written, a thread samples ``VmRSS`` every millisecond instead.

Only ``numpy`` is imported with this module (``robustagg --help`` stays fast); Numba,
threadpoolctl, SciPy, scikit-learn and byzfl are imported when a benchmark runs.
"""

from __future__ import annotations

import argparse
import fnmatch
import gc
import importlib.util
import inspect
import json
import math
import os
import platform
import re
import subprocess
import sys
import tempfile
import threading
import time
import types
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import numpy as np

__all__ = [
    "BYZFL_ATTACKS",
    "BYZFL_RULES",
    "NUMPY_BASELINES",
    "SCHEMA",
    "TARGETS",
    "check_targets",
    "configure_parser",
    "format_cold_start",
    "format_table",
    "measure_compile",
    "read_floor",
    "run",
    "run_benchmark",
]

SCHEMA = "robustagg-bench/1"

DEFAULT_N = (10, 50, 200, 1000)
DEFAULT_D = (10**3, 10**4, 10**5, 10**6, 10**7)
DEFAULT_DTYPES = ("float32", "float64")
QUICK_N = (10, 50)
QUICK_D = (10**3, 10**4)
DEFAULT_MEMORY_BUDGET = 1 << 30  # bytes of the (n, d) matrix; larger cells are skipped
F_FRACTION = 0.2  # the paper's 20 % Byzantine clients
LIE_Z = 0.3  # the experiments' LIE z (docs/conventions.md, Attacks), used to build the attacked input


# ============================================================================================
# memory measurement
# ============================================================================================

_STATUS = "/proc/self/status"
_CLEAR_REFS = "/proc/self/clear_refs"


def _status_bytes(key: str) -> int | None:
    """A ``VmXXX`` field of ``/proc/self/status`` in bytes (None where there is no /proc)."""
    try:
        with open(_STATUS) as fh:
            text = fh.read()
    except OSError:
        return None
    m = re.search(rf"^{key}:\s+(\d+)\s+kB", text, re.MULTILINE)
    return int(m.group(1)) * 1024 if m else None


def _reset_peak() -> bool:
    """Reset the kernel's peak-RSS mark (``VmHWM``) to the current RSS; False if impossible."""
    try:
        with open(_CLEAR_REFS, "w") as fh:
            fh.write("5")
        return True
    except OSError:
        return False


class PeakMemory:
    """Context manager: peak resident-memory growth of the process over its body.

    ``extra`` (bytes) is set on exit; ``method`` says how it was measured: ``"vmhwm"`` (the
    kernel's high-water mark after a reset, exact for allocations that reach the OS),
    ``"rss-sampling"`` (a thread polls ``VmRSS`` every millisecond; short peaks may be missed)
    or ``"unavailable"``.
    """

    def __init__(self) -> None:
        self.extra: int | None = None
        self.method = "unavailable"
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._peak = 0

    def __enter__(self) -> PeakMemory:
        gc.collect()
        self._rss0 = _status_bytes("VmRSS")
        if self._rss0 is None:
            return self
        if _reset_peak() and (_status_bytes("VmHWM") or 0) <= self._rss0 + (1 << 20):
            self.method = "vmhwm"
        else:
            self.method = "rss-sampling"
            self._peak = self._rss0
            self._thread = threading.Thread(target=self._sample, daemon=True)
            self._thread.start()
        return self

    def _sample(self) -> None:
        while not self._stop.is_set():
            v = _status_bytes("VmRSS") or 0
            self._peak = max(self._peak, v)
            time.sleep(0.001)

    def __exit__(self, *exc: Any) -> None:
        if self._rss0 is None:
            return
        if self.method == "vmhwm":
            peak = _status_bytes("VmHWM") or self._rss0
        else:
            self._stop.set()
            if self._thread is not None:
                self._thread.join()
            peak = max(self._peak, _status_bytes("VmRSS") or 0)
        self.extra = max(0, peak - self._rss0)


SETTLE_CALLS = 3  # untimed calls before a rule's timed calls (when they cost little)


# ============================================================================================
# the read floor
# ============================================================================================

_FLOOR_KERNELS: dict[str, Callable[[np.ndarray], Any]] = {}


def _floor_kernels() -> dict[str, Callable[[np.ndarray], Any]]:
    """The candidate single passes over G (compiled on first use)."""
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
    for name, fn in _floor_kernels().items():
        m = _median_time(lambda fn=fn: fn(G), repeats=repeats, warmup=1)
        cands[name], cpu[name] = m[0], m[3]
    best = min(cands, key=cands.get)
    return {"s": cands[best], "cpu_s": cpu[best], "method": best, "candidates": cands}


# ============================================================================================
# timing
# ============================================================================================


def _median_time(
    call: Callable[[], Any], *, repeats: int, warmup: int = 1, budget: float = math.inf
) -> tuple[float, list[float], Any, float]:
    """Median wall time of ``call()`` over ``repeats`` calls after ``warmup`` untimed calls.

    Stops early (after at least one timed call) once the timed calls have used ``budget``
    seconds. Returns ``(median, times, last_result, cpu_median)`` where ``cpu_median`` is the
    median CPU time of the process per call (all its threads; unlike wall time it does not grow
    while the process waits for a core on a loaded machine). The garbage collector is off while
    timing.
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


# ============================================================================================
# plain NumPy / SciPy baselines (deliberately simple and vectorised: "what a user would write")
# ============================================================================================


def _pairwise_sq(G: np.ndarray) -> np.ndarray:
    """Squared Euclidean distances through the Gram matrix (BLAS), in float64, diagonal = 0."""
    G64 = G if G.dtype == np.float64 else G.astype(np.float64)
    sq = np.einsum("ij,ij->i", G64, G64)
    D = sq[:, None] + sq[None, :] - 2.0 * (G64 @ G64.T)
    np.maximum(D, 0.0, out=D)
    np.fill_diagonal(D, 0.0)
    return D


def _krum_scores(D: np.ndarray, f: int) -> np.ndarray:
    n = D.shape[0]
    k = max(n - f - 2, 1)
    Dm = D + np.diag(np.full(n, np.inf))
    return np.sort(Dm, axis=1)[:, :k].sum(axis=1)


def _np_mean(G, f, rng):
    return G.mean(axis=0)


def _np_median(G, f, rng):
    return np.median(G, axis=0)


def _np_trimmed_mean(G, f, rng):
    n = G.shape[0]
    S = np.sort(G, axis=0)
    return S[f : n - f].mean(axis=0)


def _np_krum(G, f, rng):
    return G[int(np.argmin(_krum_scores(_pairwise_sq(G), f)))]


def _np_multi_krum(G, f, rng):
    n = G.shape[0]
    scores = _krum_scores(_pairwise_sq(G), f)
    idx = np.argsort(scores, kind="stable")[: n - f]
    return G[idx].mean(axis=0)


def _np_bulyan(G, f, rng):
    n = G.shape[0]
    theta = n - 2 * f
    D = _pairwise_sq(G)
    remaining = list(range(n))
    selected = []
    for _ in range(theta):
        sub = D[np.ix_(remaining, remaining)]
        r = len(remaining)
        scores = _krum_scores(sub, r - max(r - f - 2, 1) - 2) if r > 1 else np.zeros(1)
        pick = remaining[int(np.argmin(scores))]
        selected.append(pick)
        remaining.remove(pick)
    S = G[selected]
    beta = theta - 2 * f
    med = np.median(S, axis=0)
    idx = np.argsort(np.abs(S - med), axis=0, kind="stable")[:beta]
    return np.take_along_axis(S, idx, axis=0).mean(axis=0)


def _np_geometric_median(G, f, rng, tol: float = 1e-6, maxiter: int = 100):
    z = G.mean(axis=0, dtype=np.float64)
    scale = max(float(np.abs(G).max()), 1e-300)
    eps = 1e-8 * scale
    obj_prev = np.inf
    for _ in range(maxiter):
        dist = np.linalg.norm(G - z, axis=1)
        obj = float(dist.sum())
        if obj_prev < np.inf and abs(obj_prev - obj) <= tol * max(obj, 1e-300):
            break
        obj_prev = obj
        w = 1.0 / np.maximum(dist, eps)
        z = (w @ G) / w.sum()
    return z


def _np_dnc(G, f, rng, niters: int = 5, b: int = 10_000, c: float = 1.0):
    n, d = G.shape
    rng = np.random.default_rng(rng)
    good = np.ones(n, dtype=bool)
    for _ in range(niters):
        idx = rng.choice(d, size=min(b, d), replace=False)
        S = G[:, idx].astype(np.float64)
        S -= S.mean(axis=0)
        v = np.linalg.svd(S, full_matrices=False)[2][0]
        s = (S @ v) ** 2
        keep = np.zeros(n, dtype=bool)
        keep[np.argsort(s, kind="stable")[: n - int(c * f)]] = True
        good &= keep
    if not good.any():
        good[:] = True
    return G[good].mean(axis=0)


def _np_signguard(G, f, rng, extra: str | None = None):
    from sklearn.cluster import MeanShift, estimate_bandwidth

    n, d = G.shape
    rng = np.random.default_rng(rng)
    norms = np.linalg.norm(G, axis=1)
    M = np.median(norms)
    if M == 0:
        return np.zeros(d, dtype=G.dtype)
    ratio = norms / M
    s1 = (ratio >= 0.1) & (ratio <= 3.0)
    k = max(1, round(0.1 * d))
    sub = G[:, rng.choice(d, size=k, replace=False)]
    feats = [(sub > 0).mean(axis=1), (sub == 0).mean(axis=1), (sub < 0).mean(axis=1)]
    if extra is not None:
        gram = G.astype(np.float64) @ G.T.astype(np.float64)
        if extra == "sim":
            cos = gram / np.maximum(np.outer(norms, norms), 1e-300)
            np.fill_diagonal(cos, np.nan)
            s = np.nanmedian(cos, axis=1)
            med = np.median(s)
            feats.append(np.clip(s, 0, med) / (5 * med) if med > 0 else np.zeros(n))
        else:
            D = np.sqrt(np.maximum(np.diag(gram)[:, None] + np.diag(gram)[None, :] - 2 * gram, 0))
            np.fill_diagonal(D, np.nan)
            s = np.nanmedian(D, axis=1)
            feats.append(0.2 * (s >= 1.1 * np.median(s)))
    F = np.stack(feats, axis=1)
    bw = estimate_bandwidth(F, quantile=0.5)
    if bw > 0:
        labels = MeanShift(bandwidth=bw, bin_seeding=True, cluster_all=False).fit(F).labels_
        ok = labels >= 0
        s2 = np.zeros(n, dtype=bool)
        if ok.any():
            s2 = labels == np.bincount(labels[ok]).argmax()
    else:
        s2 = np.ones(n, dtype=bool)
    sel = s1 & s2
    if not sel.any():
        sel = s1
    scale = np.minimum(1.0, M / np.maximum(norms[sel], 1e-300))
    return (G[sel] * scale[:, None]).mean(axis=0)


def _np_attack(fill: Callable[[np.ndarray, int, np.random.Generator], np.ndarray]):
    def attack(G, f, rng):
        out = G.copy()
        out[:f] = fill(G, f, np.random.default_rng(rng))
        return out

    return attack


def _lie_rows(G, f, rng, z=LIE_Z):
    return G.mean(axis=0) - z * G.std(axis=0, ddof=1)


def _byzmean_rows(G, f, rng):
    n, d = G.shape
    m1 = f // 2
    m2 = f - m1
    g1 = _lie_rows(G, f, rng)
    rows = np.empty((f, d), dtype=G.dtype)
    rows[:m1] = g1
    rows[m1:] = ((n - m1) * g1 - G[f:].sum(axis=0)) / m2
    return rows


NUMPY_BASELINES: dict[str, Callable[..., np.ndarray]] = {
    # rules: fn(G, f, rng) -> (d,)
    "mean": _np_mean,
    "median": _np_median,
    "trimmed_mean": _np_trimmed_mean,
    "krum": _np_krum,
    "multi_krum": _np_multi_krum,
    "bulyan": _np_bulyan,
    "geometric_median": _np_geometric_median,
    "dnc": _np_dnc,
    "signguard": _np_signguard,
    "signguard_sim": lambda G, f, rng: _np_signguard(G, f, rng, extra="sim"),
    "signguard_dist": lambda G, f, rng: _np_signguard(G, f, rng, extra="dist"),
    # attacks: fn(G, f, rng) -> (n, d)
    "attack:gaussian": _np_attack(lambda G, f, rng: rng.normal(0.0, 0.5, (f, G.shape[1])).astype(G.dtype)),
    "attack:noise": _np_attack(
        lambda G, f, rng: G[:f] + rng.normal(0.0, 0.5, (f, G.shape[1])).astype(G.dtype)
    ),
    "attack:sign_flip": _np_attack(lambda G, f, rng: -G[:f]),
    "attack:reverse_scaled": _np_attack(lambda G, f, rng: -3.0 * G[:f]),
    "attack:lie": _np_attack(_lie_rows),
    "attack:byzmean": _np_attack(_byzmean_rows),
    "attack:ipm": _np_attack(lambda G, f, rng: -0.1 * G[f:].mean(axis=0)),
    "attack:inf": _np_attack(lambda G, f, rng: np.inf),
    "attack:nan": _np_attack(lambda G, f, rng: np.nan),
    "attack:mimic": _np_attack(lambda G, f, rng: G[f]),
}
"""Plain NumPy/SciPy implementations, keyed by rule name or ``"attack:<name>"``.

Rules follow the conventions of docs/conventions.md with their defaults (so that, for the deterministic rules, the
harness can also report how far the library's result is from the baseline's). The baselines are
what a careful user writes with NumPy: one vectorised expression per step, distances through the
Gram matrix, sorting for order statistics, scikit-learn for Mean-Shift."""

# rules whose output the baseline reproduces (deterministic, same convention): agreement is reported
_EXACT_BASELINES = {"mean", "median", "trimmed_mean", "krum", "multi_krum", "bulyan"}


# ============================================================================================
# byzfl (optional): load its aggregator/attack modules without the package __init__
# ============================================================================================

BYZFL_RULES: dict[str, tuple[str, Callable[[int], dict[str, Any]]]] = {
    "mean": ("Average", lambda f: {}),
    "median": ("Median", lambda f: {}),
    "trimmed_mean": ("TrMean", lambda f: {"f": f}),
    "geometric_median": ("GeometricMedian", lambda f: {}),
    "krum": ("Krum", lambda f: {"f": f}),
    "multi_krum": ("MultiKrum", lambda f: {"f": f}),
    "centered_clipping": ("CenteredClipping", lambda f: {}),
    "monna": ("MoNNA", lambda f: {"f": f}),
    "meamed": ("Meamed", lambda f: {"f": f}),
    "caf": ("CAF", lambda f: {"f": f}),
}
"""Our rule name -> (byzfl aggregator class, constructor arguments given f). byzfl's
``GeometricMedian`` runs a fixed number of smoothed Weiszfeld steps (T = 3), not to a tolerance.
byzfl's ``MDA`` and ``SMEA`` enumerate all C(n, f) subsets (about 1e10 at n = 50, f = 10), so
they are not compared."""

BYZFL_ATTACKS: dict[str, tuple[str, dict[str, Any]]] = {
    "sign_flip": ("SignFlipping", {}),
    "ipm": ("InnerProductManipulation", {"tau": 0.1}),
    "lie": ("ALittleIsEnough", {"tau": LIE_Z}),
    "mimic": ("Mimic", {"epsilon": 0}),
    "inf": ("Inf", {}),
    "gaussian": ("Gaussian", {"mu": 0.0, "sigma": 0.5}),
}
"""Our attack name -> (byzfl attack class, constructor arguments). A byzfl attack returns one
Byzantine vector computed from the honest rows; it is timed as such."""

_BYZFL: dict[str, Any] = {}


def load_byzfl() -> dict[str, Any]:
    """byzfl's ``aggregators`` and ``attacks`` modules, loaded from their files.

    The package's ``__init__`` imports its training framework (torchvision and more); the
    aggregators and attacks need only NumPy, SciPy and torch, so they are loaded directly under
    stub parent packages. Returns ``{"aggregators": module, "attacks": module, "version": str}``
    or ``{"error": reason}``.
    """
    if _BYZFL:
        return _BYZFL
    try:
        spec = importlib.util.find_spec("byzfl")
    except (ImportError, ValueError):
        spec = None
    if spec is None or not spec.submodule_search_locations:
        _BYZFL["error"] = "byzfl is not installed (pip install --no-deps byzfl)"
        return _BYZFL
    root = list(spec.submodule_search_locations)[0]
    saved = {k: v for k, v in sys.modules.items() if k == "byzfl" or k.startswith("byzfl.")}
    try:
        import torch  # noqa: F401  (byzfl's tools need it)

        def package(name: str, path: str) -> types.ModuleType:
            mod = types.ModuleType(name)
            mod.__path__ = [path]  # type: ignore[attr-defined]
            sys.modules[name] = mod
            return mod

        def load(name: str, path: str) -> types.ModuleType:
            s = importlib.util.spec_from_file_location(name, path)
            mod = importlib.util.module_from_spec(s)
            sys.modules[name] = mod
            s.loader.exec_module(mod)  # type: ignore[union-attr]
            return mod

        package("byzfl", root)
        package("byzfl.utils", os.path.join(root, "utils"))
        load("byzfl.utils.torch_tools", os.path.join(root, "utils", "torch_tools.py"))
        load("byzfl.utils.misc", os.path.join(root, "utils", "misc.py"))
        aggs_pkg = package("byzfl.aggregators", os.path.join(root, "aggregators"))
        aggs = load("byzfl.aggregators.aggregators", os.path.join(root, "aggregators", "aggregators.py"))
        pre = load("byzfl.aggregators.preaggregators", os.path.join(root, "aggregators", "preaggregators.py"))
        for mod in (aggs, pre):
            for k, v in vars(mod).items():
                if not k.startswith("_"):
                    setattr(aggs_pkg, k, v)
        package("byzfl.attacks", os.path.join(root, "attacks"))
        atks = load("byzfl.attacks.attacks", os.path.join(root, "attacks", "attacks.py"))
        try:
            from importlib.metadata import version

            ver = version("byzfl")
        except Exception:
            ver = "unknown"
        _BYZFL.update({"aggregators": aggs, "attacks": atks, "version": ver})
    except Exception as exc:  # a broken or changed byzfl must not break the benchmark
        _BYZFL["error"] = f"byzfl could not be loaded: {type(exc).__name__}: {exc}"
    finally:
        for k in [k for k in sys.modules if k == "byzfl" or k.startswith("byzfl.")]:
            del sys.modules[k]
        sys.modules.update(saved)
    return _BYZFL


def _byzfl_callable(kind: str, name: str, G: np.ndarray, f: int) -> Callable[[], Any] | None:
    """A zero-argument call of byzfl's version of ``name`` on ``G`` (a torch view), or None."""
    table = BYZFL_RULES if kind == "rule" else BYZFL_ATTACKS
    if name not in table:
        return None
    mods = load_byzfl()
    if "error" in mods:
        return None
    import torch

    T = torch.from_numpy(G)  # zero-copy; byzfl casts to float32 itself
    if kind == "rule":
        cls_name, kw = table[name]
        obj = getattr(mods["aggregators"], cls_name)(**kw(f))
        return lambda: obj(T)
    cls_name, kw = table[name]
    obj = getattr(mods["attacks"], cls_name)(**kw)
    honest = T[f:]
    return lambda: obj(honest)


# ============================================================================================
# compile time
# ============================================================================================

_PROBE_N, _PROBE_D = 16, 256


def _compile_probe(
    kind: str, names: Sequence[str], dtypes: Sequence[str], import_s: float | None = None
) -> None:
    """Run inside a fresh interpreter: time first and steady calls, print one JSON line.

    ``import_s`` is the time the caller's ``import robustagg`` took (the probe's own module is
    imported after it); each item reports the kernel signatures compiled and loaded from Numba's
    cache during its first call."""
    import robustagg

    from .warmup import _cache_counts

    out: dict[str, Any] = {"import_s": import_s, "items": {}}
    rng = np.random.default_rng(0)
    f = 2
    for name in names:
        fn = (robustagg.RULES if kind == "rule" else robustagg.ATTACKS)[name]
        res = {}
        for dt in dtypes:
            G = rng.standard_normal((_PROBE_N, _PROBE_D)).astype(dt)

            def call(G=G, fn=fn):
                return _call_item(kind, fn, G, f, 0)

            try:
                before = _cache_counts()
                t0 = time.perf_counter()
                call()
                first = time.perf_counter() - t0
                after = _cache_counts()
                steady = min(_median_time(call, repeats=3, warmup=0)[1])
                res[dt] = {
                    "first_s": first,
                    "steady_s": steady,
                    "overhead_s": max(first - steady, 0.0),
                    "compiled": after[0] - before[0],
                    "loaded": after[1] - before[1],
                }
            except Exception as exc:  # reported, not raised
                res[dt] = {"error": f"{type(exc).__name__}: {exc}"}
        out["items"][name] = res
    print("ROBUSTAGG-PROBE " + json.dumps(out))


_PROBE_CODE = (
    "import time, numpy; t0 = time.perf_counter(); import robustagg; t = time.perf_counter() - t0; "
    "from robustagg.bench import _compile_probe; _compile_probe({kind!r}, {names!r}, {dtypes!r}, t)"
)


def _probe_env(cache: str) -> dict[str, str]:
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env = dict(os.environ, NUMBA_CACHE_DIR=cache)
    env["PYTHONPATH"] = root + os.pathsep + env.get("PYTHONPATH", "")
    return env


def _run_probe(kind: str, name: str, dtypes: Sequence[str], cache: str, timeout: float) -> dict[str, Any]:
    code = _PROBE_CODE.format(kind=kind, names=[name], dtypes=list(dtypes))
    try:
        proc = subprocess.run(
            [sys.executable, "-c", code],
            env=_probe_env(cache),
            capture_output=True,
            text=True,
            timeout=timeout,
        )
    except subprocess.TimeoutExpired:
        return {"error": f"probe timed out after {timeout:.0f} s"}
    line = next((ln for ln in proc.stdout.splitlines() if ln.startswith("ROBUSTAGG-PROBE ")), None)
    if line is None:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or ["no output"]
        return {"error": f"probe failed: {tail[0]}"}
    return json.loads(line[len("ROBUSTAGG-PROBE ") :])


def _time_warmup(kind: str, name: str, dtype: str, timeout: float) -> float | str:
    """Wall time of ``robustagg warmup`` for this one item and dtype in a fresh interpreter
    with an empty ``NUMBA_CACHE_DIR`` (an error message where it failed)."""
    flag = {"rule": "--rules", "attack": "--attacks"}[kind]
    with tempfile.TemporaryDirectory(prefix="robustagg-bench-warmup-") as cache:
        t0 = time.perf_counter()
        try:
            proc = subprocess.run(
                [sys.executable, "-m", "robustagg", "warmup", flag, name, "--dtypes", dtype],
                env=_probe_env(cache),
                capture_output=True,
                text=True,
                timeout=timeout,
            )
        except subprocess.TimeoutExpired:
            return f"warmup timed out after {timeout:.0f} s"
        wall = time.perf_counter() - t0
    if proc.returncode != 0:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or ["no output"]
        return f"warmup failed: {tail[0]}"
    return wall


def measure_compile(
    kind: str, names: Sequence[str], dtypes: Sequence[str], *, timeout: float = 900.0, warmup: bool = False
) -> dict[str, dict[str, Any]]:
    """Cold-start figures of each rule/attack, per dtype, each from fresh interpreters.

    For each item, a fresh interpreter with an empty ``NUMBA_CACHE_DIR`` imports robustagg
    (``import_s``: after NumPy) and calls the item on a tiny ``(16, 256)`` input: that first call
    (``first_cold_s``) less the steady-state time (``steady_s``) is the **compile time**
    (``compile_s``; every kernel the item reaches, the shared validation kernels included, is
    compiled then; ``compiled`` counts the kernel signatures). A second fresh interpreter with the
    now-filled cache gives the first call with a warm cache (``first_warm_s``) and the
    **cache-load time** (``cache_load_s``, its first call less the steady time): what a user
    pays on first use after installation (``loaded`` signatures loaded, ``compiled_warm``
    compiled: 0 when the cache holds everything; a kernel called only from other kernels is
    part of its callers' cached code, so fewer are loaded than were compiled). With ``warmup``,
    ``warmup_s`` is the wall time of ``robustagg warmup`` for the item and dtype alone (a
    fresh interpreter, another empty cache: every input size and layout the warmup covers).

    Returns
    -------
    dict
        ``{name: {dtype: {"compile_s", "cache_load_s", "import_s", "first_cold_s",
        "first_warm_s", "steady_s", "compiled", "loaded", "compiled_warm", "warmup_s"}}}`` (``{"error": ...}``
        where a probe failed; ``warmup_s`` is None and ``warmup_error`` set where the warmup
        failed).
    """
    results: dict[str, dict[str, Any]] = {}
    for name in names:
        with tempfile.TemporaryDirectory(prefix="robustagg-bench-cache-") as cache:
            # cold (empty cache), then warm (cache filled by the first)
            runs = [_run_probe(kind, name, dtypes, cache, timeout) for _ in range(2)]
        entry: dict[str, Any] = {}
        cold, warm = runs
        for dt in dtypes:
            c = cold.get("items", {}).get(name, {}).get(dt, {"error": cold.get("error", "no result")})
            w = warm.get("items", {}).get(name, {}).get(dt, {"error": warm.get("error", "no result")})
            if "error" in c:
                entry[dt] = {"error": c["error"]}
                continue
            ok = "error" not in w
            entry[dt] = {
                "compile_s": c["overhead_s"],
                "cache_load_s": w.get("overhead_s") if ok else None,
                "import_s": cold.get("import_s"),
                "first_cold_s": c["first_s"],
                "first_warm_s": w.get("first_s") if ok else None,
                "steady_s": w.get("steady_s") if ok else c["steady_s"],
                "compiled": c.get("compiled"),
                "loaded": w.get("loaded") if ok else None,
                "compiled_warm": w.get("compiled") if ok else None,
            }
            if warmup:
                t = _time_warmup(kind, name, dt, timeout)
                entry[dt]["warmup_s"] = t if isinstance(t, float) else None
                if not isinstance(t, float):
                    entry[dt]["warmup_error"] = t
        results[name] = entry
    return results


def format_cold_start(compile_table: dict[str, dict[str, Any]]) -> str:
    """The cold-start figures of :func:`measure_compile` (``result["compile"]``) as a table."""
    lines = [
        "cold start (fresh interpreters; cold = empty NUMBA_CACHE_DIR):",
        f"  {'item':<26} {'dtype':<8} {'import':>8} {'1st cold':>9} {'1st warm':>9} {'steady':>9} {'warmup':>8}",
    ]
    for key in sorted(compile_table):
        for dt, e in compile_table[key].items():
            if "error" in e:
                lines.append(f"  {key:<26} {dt:<8} error: {e['error']}")
                continue
            lines.append(
                f"  {key:<26} {dt:<8} {_fmt_time(e.get('import_s')):>8} {_fmt_time(e.get('first_cold_s')):>9} "
                f"{_fmt_time(e.get('first_warm_s')):>9} {_fmt_time(e.get('steady_s')):>9} "
                f"{_fmt_time(e.get('warmup_s')):>8}"
            )
    return "\n".join(lines)


# ============================================================================================
# targets (issue: n = 50, d = 1e6, float32, side by side in one run)
# ============================================================================================

TARGETS: list[dict[str, Any]] = [
    {"rule": "mean", "metric": "x_floor", "max": 1.5},
    {"rule": "median", "metric": "x_floor", "max": 6.0},
    {"rule": "median", "metric": "speedup_np_median", "min": 8.0},
    {"rule": "trimmed_mean", "metric": "x_floor", "max": 6.0},
    {"rule": "trimmed_mean", "metric": "speedup_np_median", "min": 8.0},
    {"rule": "krum", "metric": "x_gram", "max": 1.5},
    {"rule": "multi_krum", "metric": "x_gram", "max": 1.5},
    {"rule": "bulyan", "metric": "x_floor", "max": 8.0},
    {"rule": "dnc", "metric": "x_floor", "max": 5.0},
    {"rule": "geometric_median", "metric": "x_floor", "max": 15.0},
    {"rule": "signguard*", "metric": "x_floor", "max": 3.0},
    {"rule": "*", "metric": "peak_extra_frac", "max": 0.10},
]
"""Targets at ``n = 50, d = 1e6, float32`` (metric over the row; ``max``/``min`` bound). Also
every rule under 2 s at ``n = 1000, d = 1e5`` (:data:`TIME_TARGET`)."""

TARGET_CELLS = ((50, 10**6), (1000, 10**5))
TIME_TARGET = {"n": 1000, "d": 10**5, "max_s": 2.0}


def check_targets(rows: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """Evaluate :data:`TARGETS` and :data:`TIME_TARGET` on the measured float32 rows, for each
    thread count measured. Returns one record per (rule, thread count, target) that applies."""
    rows = [
        r for r in rows if r.get("kind") == "rule" and r.get("status") == "ok" and r.get("dtype") == "float32"
    ]
    if not rows:
        return []
    out = []
    for n, d in TARGET_CELLS:
        cell = [r for r in rows if r["n"] == n and r["d"] == d]
        if not cell:
            continue
        for r in sorted(cell, key=lambda r: (r["threads"], r["name"])):
            checks = []
            if (n, d) == (50, 10**6):
                for t in TARGETS:
                    if fnmatch.fnmatchcase(r["name"], t["rule"]):
                        checks.append((t["metric"], t.get("max"), t.get("min")))
            if n == TIME_TARGET["n"] and d == TIME_TARGET["d"]:
                checks.append(("time_s", TIME_TARGET["max_s"], None))
            for metric, hi, lo in checks:
                v = r.get(metric)
                ok = None if v is None else ((hi is None or v <= hi) and (lo is None or v >= lo))
                out.append(
                    {
                        "rule": r["name"],
                        "n": n,
                        "d": d,
                        "threads": r["threads"],
                        "metric": metric,
                        "value": v,
                        "max": hi,
                        "min": lo,
                        "met": ok,
                    }
                )
    return out


# ============================================================================================
# the benchmark
# ============================================================================================


def _select(table: Iterable[str], patterns: str | Sequence[str] | None) -> list[str]:
    """Names matching any comma-separated fnmatch pattern (``"*"`` all, ``"none"``/empty none)."""
    names = sorted(table)
    if patterns is None:
        return names
    if isinstance(patterns, str):
        patterns = [p.strip() for p in patterns.split(",")]
    patterns = [p for p in patterns if p and p.lower() != "none"]
    chosen = [nm for nm in names if any(fnmatch.fnmatchcase(nm, p) for p in patterns)]
    unknown = [p for p in patterns if not any(fnmatch.fnmatchcase(nm, p) for nm in names)]
    if unknown:
        raise ValueError(
            f"bench: no registered name matches {', '.join(map(repr, unknown))}; available: {', '.join(names)}"
        )
    return chosen


def _make_input(n: int, d: int, dtype: str, f: int, seed: int) -> np.ndarray:
    """The synthetic attacked matrix: honest rows μ + N(0, 1), μ ~ 0.1·N(0, 1); the first f rows
    replaced by the LIE vector μ̂ − z·σ̂ (z = 0.3, statistics over all rows, σ̂ with ddof = 1)."""
    rng = np.random.default_rng(seed)
    G = rng.standard_normal((n, d), dtype=np.float64 if dtype == "float64" else np.float32)
    mu = (0.1 * rng.standard_normal(d)).astype(G.dtype)
    G += mu
    if f > 0:
        lie = G.mean(axis=0, dtype=np.float64) - LIE_Z * G.std(axis=0, ddof=1, dtype=np.float64)
        G[:f] = lie.astype(G.dtype)
    return G


# Arguments some items need and have no usable default for (``None`` means "you must give
# it"): the harness supplies them, computed outside the timed calls.
ITEM_ARGUMENTS: dict[str, Callable[[np.ndarray, int], Any]] = {
    "rule": lambda G, f: "mean",  # attacks that target a rule (line search)
    "root_gradient": lambda G, f: G[f:].mean(axis=0),  # FLTrust's server gradient: the honest mean
}


def _item_kwargs(fn: Callable[..., Any], G: np.ndarray, f: int) -> dict[str, Any]:
    """Values for the parameters of ``fn`` named in :data:`ITEM_ARGUMENTS` whose default is
    missing or ``None``."""
    try:
        params = inspect.signature(fn).parameters.values()
    except (TypeError, ValueError):
        return {}
    return {
        p.name: ITEM_ARGUMENTS[p.name](G, f)
        for p in params
        if p.name in ITEM_ARGUMENTS and (p.default is inspect.Parameter.empty or p.default is None)
    }


def _call_item(
    kind: str, fn: Callable[..., Any], G: np.ndarray, f: int, seed: int, extra: dict[str, Any] | None = None
) -> Any:
    from ._registry import call_with_supported

    extra = _item_kwargs(fn, G, f) if extra is None else extra
    if kind == "rule":
        return call_with_supported(fn, G, f=f, rng=seed, **extra)
    return call_with_supported(fn, G, f, rng=seed, **extra)


def _fit_f(kind: str, fn: Callable[..., Any], G: np.ndarray, f: int, seed: int) -> tuple[int, Any]:
    """Run the item once with the largest f <= the cell's f that the item accepts (this is the
    warm-up call). A ``ValueError`` is taken as "f too large" (a bound on n and f, or a search
    budget); the largest accepted f is found by bisection. Returns ``(f_used, result)``; raises
    the error of f = 0 if no f is accepted."""
    try:
        return f, _call_item(kind, fn, G, f, seed)
    except ValueError as exc:
        if f == 0:
            raise
        err: Exception = exc
    best: tuple[int, Any] | None = None
    lo, hi = 0, f - 1  # the answer is in [lo, hi]
    while lo <= hi:
        mid = (lo + hi + 1) // 2
        try:
            best = (mid, _call_item(kind, fn, G, mid, seed))
            lo = mid + 1
        except ValueError as exc:
            err = exc
            hi = mid - 1
    if best is None:
        raise err
    if best[0] != lo - 1:  # pragma: no cover - defensive: re-run at the final f
        best = (lo - 1, _call_item(kind, fn, G, lo - 1, seed))
    return best


def _rel_diff(a: Any, b: Any) -> float | None:
    try:
        a = np.asarray(a, dtype=np.float64)
        b = np.asarray(b, dtype=np.float64)
        if a.shape != b.shape:
            return None
        scale = float(np.max(np.abs(b))) if b.size else 0.0
        return float(np.max(np.abs(a - b))) / (scale if scale > 0 else 1.0)
    except Exception:
        return None


def _thread_counts(spec: Sequence[str | int]) -> list[int]:
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


def _loadavg() -> float | None:
    try:
        with open("/proc/loadavg") as fh:
            return float(fh.read().split()[0])
    except OSError:
        return None


def _machine() -> dict[str, Any]:
    import numba

    info: dict[str, Any] = {
        "python": platform.python_version(),
        "numpy": np.__version__,
        "numba": numba.__version__,
        "platform": platform.platform(),
        "cpu_count": os.cpu_count(),
        "numba_threads": int(numba.config.NUMBA_NUM_THREADS),
        "numba_threading_layer": None,
    }
    try:
        with open("/proc/cpuinfo") as fh:
            m = re.search(r"^model name\s*:\s*(.+)$", fh.read(), re.MULTILINE)
            info["cpu"] = m.group(1).strip() if m else None
    except OSError:
        info["cpu"] = None
    mem = None
    try:
        with open("/proc/meminfo") as fh:
            m = re.search(r"^MemTotal:\s+(\d+)", fh.read(), re.MULTILINE)
            mem = int(m.group(1)) * 1024 if m else None
    except OSError:
        pass
    info["memory_bytes"] = mem
    try:
        from threadpoolctl import threadpool_info

        info["blas"] = [
            {k: p.get(k) for k in ("internal_api", "version", "architecture", "num_threads", "filepath")}
            for p in threadpool_info()
        ]
    except Exception:
        info["blas"] = None
    info["env"] = {
        k: os.environ[k]
        for k in ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE", "NUMBA_NUM_THREADS", "OMP_NUM_THREADS")
        if k in os.environ
    }
    return info


def run_benchmark(
    *,
    rules: str | Sequence[str] | None = "*",
    exclude: str | Sequence[str] | None = None,
    attacks: str | Sequence[str] | None = "*",
    n: Sequence[int] = DEFAULT_N,
    d: Sequence[int] = DEFAULT_D,
    cells: Sequence[tuple[int, int]] | None = None,
    dtypes: Sequence[str] = DEFAULT_DTYPES,
    threads: Sequence[str | int] = (1, "all"),
    repeats: int = 5,
    time_budget: float = 20.0,
    memory_budget: int = DEFAULT_MEMORY_BUDGET,
    f_fraction: float = F_FRACTION,
    numpy_baselines: bool = True,
    byzfl: bool = True,
    memory: bool = True,
    compile_times: bool = True,
    references: Sequence[str] = ("gram", "np_median"),
    seed: int = 0,
    progress: bool | None = None,
    on_row: Callable[[dict[str, Any]], None] | None = None,
) -> dict[str, Any]:
    """Run the sweep and return the JSON-ready result (schema :data:`SCHEMA`).

    Parameters mirror the command line (``robustagg bench --help``). ``threads`` holds counts or
    ``"all"``; ``cells``, when given, replaces the ``n`` x ``d`` grid by these (n, d) pairs;
    ``memory_budget`` bounds the bytes of the (n, d) matrix (cells above it are
    reported as skipped; baselines may transiently need up to three times that much);
    ``references`` picks the reference operations timed in every cell (``"gram"``: one
    ``G @ G.T``; ``"np_median"``: ``np.median(G, axis=0)``). ``on_row`` is called with each row
    as soon as it is measured.
    """
    import numba
    from threadpoolctl import threadpool_limits

    import robustagg

    from ._progress import Progress

    rule_names = _select(robustagg.RULES, rules)
    attack_names = _select(robustagg.ATTACKS, attacks)
    if exclude:
        pats = (
            [p.strip() for p in exclude.split(",") if p.strip()]
            if isinstance(exclude, str)
            else list(exclude)
        )
        rule_names = [nm for nm in rule_names if not any(fnmatch.fnmatchcase(nm, p) for p in pats)]
        attack_names = [nm for nm in attack_names if not any(fnmatch.fnmatchcase(nm, p) for p in pats)]
    items = [("rule", nm) for nm in rule_names] + [("attack", nm) for nm in attack_names]
    if not items:
        raise ValueError("bench: nothing selected (check --rules / --attacks)")
    for dt in dtypes:
        if dt not in ("float32", "float64"):
            raise ValueError(f"bench: dtype must be float32 or float64, got {dt!r}")
    thread_counts = _thread_counts(threads)
    unknown_refs = set(references) - {"gram", "np_median"}
    if unknown_refs:
        raise ValueError(f"bench: unknown reference(s) {sorted(unknown_refs)}; allowed: gram, np_median")

    started = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    result: dict[str, Any] = {
        "schema": SCHEMA,
        "started": started,
        "machine": _machine(),
        "config": {
            "rules": rule_names,
            "attacks": attack_names,
            "n": list(n),
            "d": list(d),
            "dtypes": list(dtypes),
            "threads": thread_counts,
            "repeats": repeats,
            "time_budget_s": time_budget,
            "memory_budget_bytes": memory_budget,
            "f_fraction": f_fraction,
            "seed": seed,
            "input": f"honest N(mu, 1) rows, mu ~ 0.1 N(0, 1); first f = floor({f_fraction} n) rows = LIE (z = {LIE_Z})",
            "memory_method": None,
        },
        "byzfl": None,
        "compile": {},
        "cells": [],
        "rows": [],
    }
    if byzfl:
        mods = load_byzfl()
        result["byzfl"] = (
            {"error": mods["error"]} if "error" in mods else {"version": mods["version"], "backend": "torch"}
        )

    grid = list(cells) if cells is not None else [(nn, dd) for nn in n for dd in d]
    if cells is not None:
        result["config"]["n"] = sorted({c[0] for c in grid})
        result["config"]["d"] = sorted({c[1] for c in grid})
        result["config"]["cells"] = [list(c) for c in grid]
    prog_total = len(dtypes) * len(grid) * len(thread_counts) * len(items)
    bar = Progress(prog_total, desc="bench", enabled=progress)

    if compile_times:
        bar.set_postfix("compile times (fresh interpreters)")
        for kind in ("rule", "attack"):
            names = rule_names if kind == "rule" else attack_names
            if names:
                comp = measure_compile(kind, names, dtypes, warmup=True)
                result["compile"].update({f"{kind}:{k}": v for k, v in comp.items()})

    default_threads = numba.get_num_threads()
    try:
        with bar:
            for dtype in dtypes:
                itemsize = np.dtype(dtype).itemsize
                for nn, dd in grid:
                    nbytes = nn * dd * itemsize
                    f = int(math.floor(f_fraction * nn))
                    if nbytes > memory_budget:
                        for t in thread_counts:
                            for kind, name in items:
                                row = {
                                    "kind": kind,
                                    "name": name,
                                    "n": nn,
                                    "d": dd,
                                    "dtype": dtype,
                                    "threads": t,
                                    "status": "skipped",
                                    "reason": f"matrix of {nbytes / 2**30:.2f} GiB exceeds --memory-budget "
                                    f"{memory_budget / 2**30:.2f} GiB",
                                }
                                result["rows"].append(row)
                                if on_row:
                                    on_row(row)
                                bar.update(1)
                        continue
                    bar.set_postfix(f"building n={nn} d={dd:g} {dtype}")
                    G = _make_input(nn, dd, dtype, f, seed)
                    for t in thread_counts:
                        numba.set_num_threads(t)
                        with threadpool_limits(limits=t):
                            _set_torch_threads(t)
                            cell = _run_cell(
                                G,
                                f,
                                t,
                                items,
                                repeats=repeats,
                                time_budget=time_budget,
                                numpy_baselines=numpy_baselines,
                                byzfl=byzfl and "error" not in load_byzfl(),
                                memory=memory,
                                references=references,
                                seed=seed,
                                bar=bar,
                                compile_table=result["compile"],
                                on_row=on_row,
                                result=result,
                            )
                        result["cells"].append(cell)
                        if result["machine"]["numba_threading_layer"] is None:
                            try:
                                result["machine"]["numba_threading_layer"] = numba.threading_layer()
                            except ValueError:
                                pass
                    del G
                    gc.collect()
    finally:
        numba.set_num_threads(default_threads)
    result["targets"] = check_targets(result["rows"])
    result["finished"] = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    return result


def _set_torch_threads(t: int) -> None:
    if "torch" in sys.modules:
        try:
            sys.modules["torch"].set_num_threads(t)
        except Exception:
            pass


def _run_cell(
    G,
    f,
    threads,
    items,
    *,
    repeats,
    time_budget,
    numpy_baselines,
    byzfl,
    memory,
    references,
    seed,
    bar,
    compile_table,
    on_row,
    result,
) -> dict[str, Any]:
    import robustagg

    n, d = G.shape
    dtype = str(G.dtype)
    nbytes = G.nbytes
    tag = f"n={n} d={d:g} {dtype} t={threads}"
    cell: dict[str, Any] = {
        "n": n,
        "d": d,
        "dtype": dtype,
        "threads": threads,
        "f": f,
        "bytes": nbytes,
        "loadavg_start": _loadavg(),
    }
    bar.set_postfix(f"{tag}: read floor")
    floor = read_floor(G, repeats=max(repeats, 5))
    refs: dict[str, float] = {}
    if "gram" in references:
        # BLAS at this thread count and, if more than one, at one thread: the faster is the
        # reference (multi-threaded OpenBLAS can be many times slower on a loaded machine)
        from threadpoolctl import threadpool_limits

        bar.set_postfix(f"{tag}: G @ G.T")
        by_threads = {threads: _median_time(lambda: G @ G.T, repeats=repeats, budget=time_budget)[0]}
        if threads > 1:
            with threadpool_limits(limits=1):
                by_threads[1] = _median_time(lambda: G @ G.T, repeats=repeats, budget=time_budget)[0]
        refs["gram_s"] = min(by_threads.values())
        cell["gram_by_threads_s"] = {str(k): v for k, v in by_threads.items()}
    if "np_median" in references:
        bar.set_postfix(f"{tag}: np.median")
        refs["np_median_s"] = _median_time(lambda: np.median(G, axis=0), repeats=repeats, budget=time_budget)[
            0
        ]
    cell.update(refs)
    for kind, name in items:
        bar.set_postfix(f"{tag}: {kind} {name}")
        fn = (robustagg.RULES if kind == "rule" else robustagg.ATTACKS)[name]
        row: dict[str, Any] = {
            "kind": kind,
            "name": name,
            "n": n,
            "d": d,
            "dtype": dtype,
            "threads": threads,
            "bytes": nbytes,
        }
        try:
            t0 = time.perf_counter()
            f_used, ours = _fit_f(kind, fn, G, f, seed)  # warm-up
            row["warmup_s"] = time.perf_counter() - t0
            row["f"] = f_used
            extra = _item_kwargs(fn, G, f_used)
            call = lambda fn=fn, ff=f_used, extra=extra, kind=kind: _call_item(kind, fn, G, ff, seed, extra)  # noqa: E731
            if memory:
                with PeakMemory() as pm:
                    t0 = time.perf_counter()
                    call()
                    t_mem = time.perf_counter() - t0
                row["peak_extra_bytes"] = pm.extra
                row["peak_extra_frac"] = None if pm.extra is None else pm.extra / nbytes
                result["config"]["memory_method"] = pm.method
                budget = max(time_budget - t_mem, 0.0)
                t_call = t_mem
            else:
                budget = time_budget
                t_call = row["warmup_s"]  # (an upper bound: it may include compilation)
            # a few untimed calls first when they are cheap: the first calls after another
            # workload (the previous rule, a BLAS reference whose threads still spin) run up
            # to 2x slower on this kind of machine, and with few repeats they set the median
            settle = SETTLE_CALLS if t_call * SETTLE_CALLS <= 0.1 * max(time_budget, 1.0) else 0
            med, times, _, cpu = _median_time(call, repeats=repeats, warmup=settle, budget=budget)
            row.update(
                status="ok",
                time_s=med,
                times_s=times,
                cpu_s=cpu,
                gbps=nbytes / med / 1e9,
                x_floor=med / floor["s"],
            )
            if "gram_s" in refs:
                row["x_gram"] = med / refs["gram_s"]
            if "np_median_s" in refs:
                row["speedup_np_median"] = refs["np_median_s"] / med
            key = name if kind == "rule" else f"attack:{name}"
            if numpy_baselines and key in NUMPY_BASELINES:
                base = NUMPY_BASELINES[key]
                fn_np = _baseline_call(base, fn, kind, name)
                try:
                    bmed, _, bres, _ = _median_time(
                        lambda fn_np=fn_np, ff=f_used: fn_np(G, ff, seed), repeats=repeats, budget=time_budget
                    )
                    row["numpy_s"] = bmed
                    row["speedup_numpy"] = bmed / med
                    if kind == "rule" and name in _EXACT_BASELINES:
                        row["numpy_rel_diff"] = _rel_diff(ours, bres)
                except Exception as exc:
                    row["numpy_error"] = f"{type(exc).__name__}: {exc}"
            if byzfl:
                try:
                    bz = _byzfl_callable(kind, name, G, f_used)
                    if bz is not None:
                        zmed = _median_time(bz, repeats=repeats, budget=time_budget)[0]
                        row["byzfl_s"] = zmed
                        row["speedup_byzfl"] = zmed / med
                except Exception as exc:
                    row["byzfl_error"] = f"{type(exc).__name__}: {exc}"
            comp = compile_table.get(f"{kind}:{name}", {}).get(dtype)
            if comp and "error" not in comp:
                row["compile_s"] = comp["compile_s"]
                row["cache_load_s"] = comp["cache_load_s"]
        except Exception as exc:
            row.update(status="error", error=f"{type(exc).__name__}: {exc}")
        row["loadavg"] = _loadavg()
        result["rows"].append(row)
        if on_row:
            on_row(row)
        bar.update(1)
    # the floor again at the end of the cell: the smaller of the two is kept (conservative)
    floor2 = read_floor(G, repeats=max(repeats, 5))
    if floor2["s"] < floor["s"]:
        floor = floor2
    cell["floor_s"] = floor["s"]
    cell["floor_cpu_s"] = floor["cpu_s"]
    key = (n, d, dtype, threads)
    for row in result["rows"]:
        if row.get("status") == "ok" and (row["n"], row["d"], row["dtype"], row["threads"]) == key:
            row["x_floor"] = row["time_s"] / floor["s"]
            row["x_floor_cpu"] = row["cpu_s"] / floor["cpu_s"] if floor["cpu_s"] > 0 else None
    cell["floor_method"] = floor["method"]
    cell["floor_candidates_s"] = floor["candidates"]
    cell["floor_gbps"] = nbytes / floor["s"] / 1e9
    cell["loadavg_end"] = _loadavg()
    return cell


def _baseline_call(
    base: Callable[..., Any], fn: Callable[..., Any], kind: str, name: str
) -> Callable[..., Any]:
    """The baseline with the rule's own default tolerance where it has one (geometric median)."""
    if name == "geometric_median":
        try:
            params = inspect.signature(fn).parameters
            kw = {}
            for ours, theirs in (("tol", "tol"), ("maxiter", "maxiter")):
                p = params.get(ours)
                if p is not None and p.default is not inspect.Parameter.empty and p.default is not None:
                    kw[theirs] = p.default
            return lambda G, f, rng: base(G, f, rng, **kw)
        except (TypeError, ValueError):
            pass
    return base


# ============================================================================================
# output
# ============================================================================================


def _fmt_time(s: float | None) -> str:
    if s is None:
        return "-"
    if s < 1e-3:
        return f"{s * 1e6:.0f} us"
    if s < 1:
        return f"{s * 1e3:.1f} ms"
    return f"{s:.2f} s"


def _fmt(v: float | None, spec: str = ".2f", suffix: str = "") -> str:
    return "-" if v is None else f"{v:{spec}}{suffix}"


def _fmt_bytes(b: float | None) -> str:
    if b is None:
        return "-"
    if b < 1 << 20:
        return f"{b / 1024:.0f} KiB"
    return f"{b / 2**20:.1f} MiB"


def format_cell_header(cell: dict[str, Any]) -> str:
    parts = [
        f"n={cell['n']} d={cell['d']:g} {cell['dtype']} threads={cell['threads']} f={cell['f']}"
        f" ({cell['bytes'] / 2**20:.1f} MiB)",
        f"read floor {_fmt_time(cell.get('floor_s'))} ({cell.get('floor_method')}, {cell.get('floor_gbps', 0):.1f} GB/s)",
    ]
    if "gram_s" in cell:
        parts.append(f"G@G.T {_fmt_time(cell['gram_s'])}")
    if "np_median_s" in cell:
        parts.append(f"np.median {_fmt_time(cell['np_median_s'])}")
    la = (cell.get("loadavg_start"), cell.get("loadavg_end"))
    if la[0] is not None:
        parts.append(f"load {la[0]:.1f}->{la[1]:.1f}")
    return " | ".join(parts)


_COLUMNS = [
    ("kind", 6, lambda r: r["kind"]),
    ("name", 18, lambda r: r["name"]),
    ("f", 4, lambda r: str(r.get("f", "-"))),
    ("median", 9, lambda r: _fmt_time(r.get("time_s"))),
    ("GB/s", 6, lambda r: _fmt(r.get("gbps"), ".2f")),
    ("x floor", 8, lambda r: _fmt(r.get("x_floor"), ".2f")),
    ("x XX^T", 7, lambda r: _fmt(r.get("x_gram"), ".2f") if r["kind"] == "rule" else "-"),
    ("vs numpy", 9, lambda r: _fmt(r.get("speedup_numpy"), ".1f", "x")),
    ("vs byzfl", 9, lambda r: _fmt(r.get("speedup_byzfl"), ".1f", "x")),
    ("compile", 8, lambda r: _fmt(r.get("compile_s"), ".2f", " s")),
    (
        "peak extra",
        16,
        lambda r: (
            "-"
            if r.get("peak_extra_bytes") is None
            else f"{_fmt_bytes(r['peak_extra_bytes'])} ({100 * r['peak_extra_frac']:.1f}%)"
        ),
    ),
]


def format_row(row: dict[str, Any]) -> str:
    if row.get("status") != "ok":
        what = row.get("reason") or row.get("error") or row.get("status")
        return f"{row['kind']:<6} {row['name']:<18} {row.get('status')}: {what}"
    return " ".join(
        f"{fmt(row):>{w}}" if i > 1 else f"{fmt(row):<{w}}" for i, (_, w, fmt) in enumerate(_COLUMNS)
    )


def format_table(result: dict[str, Any]) -> str:
    """The whole result as a terminal table, one block per cell, then the targets."""
    header = " ".join(f"{h:>{w}}" if i > 1 else f"{h:<{w}}" for i, (h, w, _) in enumerate(_COLUMNS))
    lines = []
    for cell in result["cells"]:
        lines.append("")
        lines.append(format_cell_header(cell))
        lines.append(header)
        for row in result["rows"]:
            if (row["n"], row["d"], row["dtype"], row["threads"]) == (
                cell["n"],
                cell["d"],
                cell["dtype"],
                cell["threads"],
            ):
                lines.append(format_row(row))
    skipped = {(r["n"], r["d"], r["dtype"]) for r in result["rows"] if r.get("status") == "skipped"}
    if skipped:
        lines.append("")
        lines.append(
            "skipped (memory budget): " + ", ".join(f"n={a} d={b:g} {c}" for a, b, c in sorted(skipped))
        )
    if result.get("compile"):
        lines.append("")
        lines.append(format_cold_start(result["compile"]))
    if result.get("targets"):
        lines.append("")
        lines.append(format_targets(result["targets"]))
    return "\n".join(lines)


def format_targets(targets: list[dict[str, Any]]) -> str:
    lines = ["targets (float32):"]
    for t in targets:
        bound = f"<= {t['max']:g}" if t.get("max") is not None else f">= {t['min']:g}"
        mark = {True: "met", False: "MISSED", None: "n/a"}[t["met"]]
        v = "-" if t["value"] is None else f"{t['value']:.3g}"
        lines.append(
            f"  {t['rule']:<18} n={t['n']} d={t['d']:g} threads={t['threads']}  {t['metric']:<18} {v:>8} {bound:<8} {mark}"
        )
    return "\n".join(lines)


def _to_jsonable(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {str(k): _to_jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_to_jsonable(v) for v in obj]
    if isinstance(obj, (np.integer,)):
        return int(obj)
    if isinstance(obj, (np.floating, float)):
        v = float(obj)
        return v if math.isfinite(v) else None
    if isinstance(obj, np.bool_):
        return bool(obj)
    return obj


# ============================================================================================
# command line
# ============================================================================================


def _parse_size(text: str) -> int:
    m = re.fullmatch(r"\s*([0-9.]+)\s*([kmgt]?)i?b?\s*", text.lower())
    if not m:
        raise argparse.ArgumentTypeError(f"not a size: {text!r} (e.g. 512M, 2G)")
    mult = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}[m.group(2)]
    return int(float(m.group(1)) * mult)


def _parse_int(text: str) -> int:
    t = text.strip().lower().replace("_", "")
    m = re.fullmatch(r"10\^(\d+)|10\*\*(\d+)", t)
    if m:
        return 10 ** int(m.group(1) or m.group(2))
    v = float(t)
    if v != int(v) or v <= 0:
        raise argparse.ArgumentTypeError(f"not a positive integer: {text!r}")
    return int(v)


def _int_list(text: str) -> list[int]:
    try:
        return [_parse_int(t) for t in text.split(",") if t.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a comma-separated list of integers: {text!r}") from None


def _str_list(text: str) -> list[str]:
    return [t.strip() for t in text.split(",") if t.strip()]


def configure_parser(p: argparse.ArgumentParser) -> None:
    """Options of ``robustagg bench``."""
    p.formatter_class = argparse.RawDescriptionHelpFormatter
    p.epilog = (
        "examples:\n"
        "  robustagg bench --quick\n"
        "  robustagg bench --targets --json targets.json\n"
        "  robustagg bench --rules median trimmed_mean --attacks none --n 50 --d 1e5,1e6 --dtype float32\n"
        "cells whose (n, d) matrix exceeds --memory-budget are reported as skipped."
    )
    from ._cliargs import add_names_argument, add_out_argument, attack_resolver, rule_resolver

    add_names_argument(
        p,
        "--rules",
        rule_resolver(compose=False, patterns=True),
        default=["*"],
        metavar="RULE",
        help="rules: names or fnmatch patterns ('signguard*'; 'none': no rule); default all",
    )
    add_names_argument(
        p,
        "--attacks",
        attack_resolver(patterns=True),
        default=["*"],
        metavar="ATTACK",
        example="Min-Max",
        help="attacks: names or fnmatch patterns ('none': no attack); default all",
    )
    p.add_argument(
        "--exclude", default=None, help="comma-separated names or patterns to leave out (rules and attacks)"
    )
    p.add_argument("--n", type=_int_list, default=None, help="client counts, default 10,50,200,1000")
    p.add_argument(
        "--d", type=_int_list, default=None, help="dimensions (1e6 and 10^6 accepted), default 1e3..1e7"
    )
    p.add_argument("--dtype", type=_str_list, default=None, help="float32,float64 (default both)")
    p.add_argument("--threads", type=_str_list, default=None, help="thread counts or 'all', default 1,all")
    p.add_argument(
        "--repeats", type=int, default=None, help="timed calls per measurement (median reported), default 5"
    )
    p.add_argument(
        "--time-budget",
        type=float,
        default=20.0,
        help="seconds of timed calls per measurement at most (default 20)",
    )
    p.add_argument(
        "--memory-budget",
        type=_parse_size,
        default=DEFAULT_MEMORY_BUDGET,
        help="largest (n, d) matrix to build, e.g. 512M, 4G (default 1G)",
    )
    p.add_argument(
        "--f-fraction", type=float, default=F_FRACTION, help="Byzantine fraction f/n (default 0.2)"
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--quick",
        action="store_true",
        help="small sweep: n 10,50; d 1e3,1e4; float32; 3 repeats; no compile probes",
    )
    p.add_argument(
        "--targets",
        action="store_true",
        help="the issue's target table: every rule at n=50 d=1e6 and n=1000 d=1e5, float32, 1 and all threads",
    )
    p.add_argument(
        "--compile",
        dest="compile_times",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="measure compile/cache-load times in fresh interpreters (default on, off with --quick)",
    )
    p.add_argument(
        "--numpy", action=argparse.BooleanOptionalAction, default=True, help="time the NumPy baselines"
    )
    p.add_argument(
        "--byzfl", action=argparse.BooleanOptionalAction, default=True, help="time byzfl where installed"
    )
    p.add_argument(
        "--memory", action=argparse.BooleanOptionalAction, default=True, help="measure peak extra memory"
    )
    p.add_argument(
        "--references",
        type=_str_list,
        default=None,
        help="reference ops: gram,np_median or none (default both)",
    )
    p.add_argument("--json", metavar="PATH", default=None, help="write the full result as JSON")
    add_out_argument(p, help="write the table to this file (default: stdout)")
    p.add_argument("--list", action="store_true", help="list the selected rules and attacks and exit")
    p.add_argument("--quiet", action="store_true", help="no progress bar, no per-row lines")


def run(args: argparse.Namespace) -> int:
    """Entry point of ``robustagg bench``."""
    import robustagg

    if args.list:
        pats = [p.strip() for p in (args.exclude or "").split(",") if p.strip()]
        for kind, table, sel in (
            ("rule", robustagg.RULES, args.rules),
            ("attack", robustagg.ATTACKS, args.attacks),
        ):
            for nm in _select(table, sel):
                if not any(fnmatch.fnmatchcase(nm, p) for p in pats):
                    print(f"{kind:<7} {nm}")
        return 0
    kw: dict[str, Any] = {
        "n": DEFAULT_N,
        "d": DEFAULT_D,
        "dtypes": DEFAULT_DTYPES,
        "threads": ("1", "all"),
        "repeats": 5,
        "compile_times": True,
    }
    rules, attacks = args.rules, args.attacks
    if args.quick:
        kw.update(n=QUICK_N, d=QUICK_D, dtypes=("float32",), threads=("all",), repeats=3, compile_times=False)
    if args.targets:
        kw.update(n=(50, 1000), d=(10**5, 10**6), dtypes=("float32",), threads=("1", "all"))
        if args.attacks == ["*"]:
            attacks = ["none"]
    for key, val in (
        ("n", args.n),
        ("d", args.d),
        ("dtypes", args.dtype),
        ("threads", args.threads),
        ("repeats", args.repeats),
        ("compile_times", args.compile_times),
    ):
        if val is not None:
            kw[key] = val
    if args.repeats is not None and args.repeats < 1:
        raise ValueError(f"bench: --repeats must be >= 1, got {args.repeats}")
    cells_only = None
    if args.targets and args.n is None and args.d is None:
        cells_only = list(TARGET_CELLS)

    quiet = args.quiet
    printed_cells: set = set()

    def on_row(row: dict[str, Any]) -> None:
        if quiet:
            return
        key = (row["n"], row["d"], row["dtype"], row["threads"])
        if key not in printed_cells and row.get("status") == "ok":
            printed_cells.add(key)
            print(
                f"-- n={row['n']} d={row['d']:g} {row['dtype']} threads={row['threads']}",
                file=sys.stderr,
                flush=True,
            )
        if row.get("status") != "skipped":
            print(format_row(row), file=sys.stderr, flush=True)

    result = run_benchmark(
        rules=rules,
        exclude=args.exclude,
        attacks=attacks,
        n=kw["n"],
        d=kw["d"],
        cells=cells_only,
        dtypes=kw["dtypes"],
        threads=kw["threads"],
        repeats=kw["repeats"],
        time_budget=args.time_budget,
        memory_budget=args.memory_budget,
        f_fraction=args.f_fraction,
        numpy_baselines=args.numpy,
        byzfl=args.byzfl,
        memory=args.memory,
        compile_times=kw["compile_times"],
        references=("gram", "np_median")
        if args.references is None
        else [r for r in args.references if r != "none"],
        seed=args.seed,
        progress=False if quiet else None,
        on_row=on_row,
    )
    result["command"] = "robustagg bench " + " ".join(sys.argv[2:]) if len(sys.argv) > 1 else None
    if getattr(args, "out", None):
        with open(args.out, "w", encoding="utf-8") as fh:
            fh.write(format_table(result) + "\n")
        print(f"wrote {args.out}")
    else:
        print(format_table(result))
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(_to_jsonable(result), fh, indent=1)
        print(f"\nwrote {args.json}")
    return 0
