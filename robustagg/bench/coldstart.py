"""The cold-start suite: per rule or attack and dtype, in fresh interpreters, the import, the
first call with an empty and with a filled Numba cache, the steady call, the kernel signatures
compiled and loaded, and (optionally) ``robustagg warmup`` for the item alone."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from typing import Any

import numpy as np

from .inputs import call_item, registered
from .timing import median_time
from .units import fmt_time

_PROBE_N, _PROBE_D = 16, 256


def compile_probe(
    kind: str, names: Sequence[str], dtypes: Sequence[str], import_s: float | None = None
) -> None:
    """Run inside a fresh interpreter: time first and steady calls, print one JSON line.

    ``import_s`` is the time the caller's ``import robustagg`` took (the probe's own module is
    imported after it); each item reports the kernel signatures compiled and loaded from Numba's
    cache during its first call."""
    from ..warmup import cache_counts  # the warmup's counter of compiled/loaded signatures

    out: dict[str, Any] = {"import_s": import_s, "items": {}}
    rng = np.random.default_rng(0)
    f = 2
    for name in names:
        fn = registered(kind)[name]
        res = {}
        for dt in dtypes:
            G = rng.standard_normal((_PROBE_N, _PROBE_D)).astype(dt)

            def call(G=G, fn=fn):
                return call_item(kind, fn, G, f, 0)

            try:
                before = cache_counts()
                t0 = time.perf_counter()
                call()
                first = time.perf_counter() - t0
                after = cache_counts()
                steady = min(median_time(call, repeats=3, warmup=0)[1])
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
    "from robustagg.bench.coldstart import compile_probe; compile_probe({kind!r}, {names!r}, {dtypes!r}, t)"
)


def _probe_env(cache: str) -> dict[str, str]:
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
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
                f"  {key:<26} {dt:<8} {fmt_time(e.get('import_s')):>8} {fmt_time(e.get('first_cold_s')):>9} "
                f"{fmt_time(e.get('first_warm_s')):>9} {fmt_time(e.get('steady_s')):>9} "
                f"{fmt_time(e.get('warmup_s')):>8}"
            )
    return "\n".join(lines)
