"""The sweep: every selected rule and attack on one synthetic attacked matrix per cell of
``n`` x ``d`` x dtype x thread count, side by side with the read floor, the reference operations
and the NumPy and byzfl peers (:func:`run_benchmark`)."""

from __future__ import annotations

import fnmatch
import gc
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from .baselines import EXACT_BASELINES, NUMPY_BASELINES, baseline_call, rel_diff
from .byzfl_peer import byzfl_callable, load_byzfl
from .coldstart import measure_compile
from .inputs import (
    DEFAULT_D,
    DEFAULT_DTYPES,
    DEFAULT_MEMORY_BUDGET,
    DEFAULT_N,
    F_FRACTION,
    LIE_Z,
    call_item,
    fit_f,
    item_kwargs,
    make_input,
    registered,
    select_names,
)
from .machine import loadavg, machine_info
from .memory import PeakMemory
from .targets import check_targets
from .timing import SETTLE_CALLS, median_time, read_floor, set_torch_threads, thread_counts

SCHEMA = "robustagg-bench/1"

_REFERENCES = ("gram", "np_median")


@dataclass(frozen=True)
class _Measure:
    """How each item of a cell is measured (the sweep's options that apply within a cell)."""

    repeats: int
    time_budget: float
    numpy_baselines: bool
    byzfl: bool
    memory: bool
    references: Sequence[str]
    seed: int


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
    references: Sequence[str] = _REFERENCES,
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
    from .._progress import Progress

    rule_names, attack_names = _selected(rules, attacks, exclude)
    items = [("rule", nm) for nm in rule_names] + [("attack", nm) for nm in attack_names]
    if not items:
        raise ValueError("bench: nothing selected (check --rules / --attacks)")
    for dt in dtypes:
        if dt not in ("float32", "float64"):
            raise ValueError(f"bench: dtype must be float32 or float64, got {dt!r}")
    counts = thread_counts(threads)
    unknown_refs = set(references) - set(_REFERENCES)
    if unknown_refs:
        raise ValueError(f"bench: unknown reference(s) {sorted(unknown_refs)}; allowed: gram, np_median")
    grid = list(cells) if cells is not None else [(nn, dd) for nn in n for dd in d]
    config = {
        "rules": rule_names,
        "attacks": attack_names,
        "n": list(n),
        "d": list(d),
        "dtypes": list(dtypes),
        "threads": counts,
        "repeats": repeats,
        "time_budget_s": time_budget,
        "memory_budget_bytes": memory_budget,
        "f_fraction": f_fraction,
        "seed": seed,
    }
    result = _new_result(config, byzfl)
    if cells is not None:
        result["config"].update(
            n=sorted({c[0] for c in grid}), d=sorted({c[1] for c in grid}), cells=[list(c) for c in grid]
        )
    bar = Progress(len(dtypes) * len(grid) * len(counts) * len(items), desc="bench", enabled=progress)
    if compile_times:
        bar.set_postfix("compile times (fresh interpreters)")
        for kind, names in (("rule", rule_names), ("attack", attack_names)):
            if names:
                comp = measure_compile(kind, names, dtypes, warmup=True)
                result["compile"].update({f"{kind}:{k}": v for k, v in comp.items()})
    peer = byzfl and "error" not in load_byzfl()
    how = _Measure(repeats, time_budget, numpy_baselines, peer, memory, tuple(references), seed)
    _sweep(result, grid, dtypes, counts, items, how, memory_budget, f_fraction, bar, on_row)
    result["targets"] = check_targets(result["rows"])
    result["finished"] = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    return result


def _selected(rules, attacks, exclude) -> tuple[list[str], list[str]]:
    """The registered rule and attack names the patterns select, less those ``exclude`` names."""
    rule_names = select_names(registered("rule"), rules)
    attack_names = select_names(registered("attack"), attacks)
    if exclude:
        pats = (
            [p.strip() for p in exclude.split(",") if p.strip()]
            if isinstance(exclude, str)
            else list(exclude)
        )
        rule_names = [nm for nm in rule_names if not any(fnmatch.fnmatchcase(nm, p) for p in pats)]
        attack_names = [nm for nm in attack_names if not any(fnmatch.fnmatchcase(nm, p) for p in pats)]
    return rule_names, attack_names


def _new_result(config: dict[str, Any], byzfl: bool) -> dict[str, Any]:
    """The result before any measurement: schema, start time, machine, configuration, byzfl."""
    config["input"] = (
        f"honest N(mu, 1) rows, mu ~ 0.1 N(0, 1); first f = floor({config['f_fraction']} n) rows = LIE (z = {LIE_Z})"
    )
    config["memory_method"] = None
    result: dict[str, Any] = {
        "schema": SCHEMA,
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "machine": machine_info(),
        "config": config,
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
    return result


def _sweep(
    result, grid, dtypes, counts, items, how: _Measure, memory_budget, f_fraction, bar, on_row
) -> None:
    """Every cell of the grid, dtype by dtype: one matrix built per (n, d, dtype), measured at
    each thread count (Numba, BLAS and torch limited alike); cells over the memory budget get
    skipped rows."""
    import numba
    from threadpoolctl import threadpool_limits

    default_threads = numba.get_num_threads()
    try:
        with bar:
            for dtype in dtypes:
                for nn, dd in grid:
                    nbytes = nn * dd * np.dtype(dtype).itemsize
                    f = int(math.floor(f_fraction * nn))
                    if nbytes > memory_budget:
                        _skip_cell(result, nn, dd, dtype, counts, items, nbytes, memory_budget, bar, on_row)
                        continue
                    bar.set_postfix(f"building n={nn} d={dd:g} {dtype}")
                    G = make_input(nn, dd, dtype, f, how.seed)
                    for t in counts:
                        numba.set_num_threads(t)
                        with threadpool_limits(limits=t):
                            set_torch_threads(t)
                            cell = _run_cell(G, f, t, items, how, bar, result, on_row)
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


def _emit(result: dict[str, Any], row: dict[str, Any], bar, on_row) -> None:
    result["rows"].append(row)
    if on_row:
        on_row(row)
    bar.update(1)


def _skip_cell(result, n, d, dtype, counts, items, nbytes, memory_budget, bar, on_row) -> None:
    """One ``skipped`` row per item and thread count of a cell whose matrix is over the budget."""
    reason = f"matrix of {nbytes / 2**30:.2f} GiB exceeds --memory-budget {memory_budget / 2**30:.2f} GiB"
    for t in counts:
        for kind, name in items:
            row = {"kind": kind, "name": name, "n": n, "d": d, "dtype": dtype, "threads": t}
            row.update(status="skipped", reason=reason)
            _emit(result, row, bar, on_row)


def _run_cell(G, f, threads, items, how: _Measure, bar, result, on_row) -> dict[str, Any]:
    """One cell: the read floor, the references, then every item; the floor again at the end
    (the smaller of the two is kept: conservative) and the rows' ratios against it."""
    n, d = G.shape
    dtype = str(G.dtype)
    tag = f"n={n} d={d:g} {dtype} t={threads}"
    cell: dict[str, Any] = {"n": n, "d": d, "dtype": dtype, "threads": threads, "f": f, "bytes": G.nbytes}
    cell["loadavg_start"] = loadavg()
    bar.set_postfix(f"{tag}: read floor")
    floor = read_floor(G, repeats=max(how.repeats, 5))
    refs = _references(G, threads, how, bar, tag, cell)
    for kind, name in items:
        bar.set_postfix(f"{tag}: {kind} {name}")
        row = _measure_item(kind, name, G, f, threads, floor, refs, how, result)
        _emit(result, row, bar, on_row)
    floor2 = read_floor(G, repeats=max(how.repeats, 5))
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
    cell["floor_gbps"] = G.nbytes / floor["s"] / 1e9
    cell["loadavg_end"] = loadavg()
    return cell


def _references(G, threads, how: _Measure, bar, tag, cell) -> dict[str, float]:
    """The cell's reference operations (``gram_s``, ``np_median_s``), also written into ``cell``."""
    refs: dict[str, float] = {}
    if "gram" in how.references:
        # BLAS at this thread count and, if more than one, at one thread: the faster is the
        # reference (multi-threaded OpenBLAS can be many times slower on a loaded machine)
        from threadpoolctl import threadpool_limits

        bar.set_postfix(f"{tag}: G @ G.T")
        by_threads = {threads: median_time(lambda: G @ G.T, repeats=how.repeats, budget=how.time_budget)[0]}
        if threads > 1:
            with threadpool_limits(limits=1):
                by_threads[1] = median_time(lambda: G @ G.T, repeats=how.repeats, budget=how.time_budget)[0]
        refs["gram_s"] = min(by_threads.values())
        cell["gram_by_threads_s"] = {str(k): v for k, v in by_threads.items()}
    if "np_median" in how.references:
        bar.set_postfix(f"{tag}: np.median")
        call = lambda: np.median(G, axis=0)  # noqa: E731
        refs["np_median_s"] = median_time(call, repeats=how.repeats, budget=how.time_budget)[0]
    cell.update(refs)
    return refs


def _measure_item(kind, name, G, f, threads, floor, refs, how: _Measure, result) -> dict[str, Any]:
    """One item's row: its time, peak memory and ratios, then its peers' times; an error is
    recorded in the row (``status="error"``), never raised."""
    fn = registered(kind)[name]
    row: dict[str, Any] = {"kind": kind, "name": name, "n": G.shape[0], "d": G.shape[1]}
    row.update(dtype=str(G.dtype), threads=threads, bytes=G.nbytes)
    try:
        med, ours, f_used = _time_ours(kind, fn, G, f, row, how, result)
        row.update(gbps=G.nbytes / med / 1e9, x_floor=med / floor["s"])
        if "gram_s" in refs:
            row["x_gram"] = med / refs["gram_s"]
        if "np_median_s" in refs:
            row["speedup_np_median"] = refs["np_median_s"] / med
        _time_peers(kind, name, fn, G, f_used, ours, med, row, how)
        comp = result["compile"].get(f"{kind}:{name}", {}).get(str(G.dtype))
        if comp and "error" not in comp:
            row["compile_s"] = comp["compile_s"]
            row["cache_load_s"] = comp["cache_load_s"]
    except Exception as exc:
        row.update(status="error", error=f"{type(exc).__name__}: {exc}")
    row["loadavg"] = loadavg()
    return row


def _time_ours(kind, fn, G, f, row, how: _Measure, result) -> tuple[float, Any, int]:
    """The warm-up call (at the largest f the item accepts), the peak-memory call, a few settling
    calls and the timed calls; ``row`` gets ``warmup_s``, ``f``, the memory figures,
    ``status``, ``time_s``, ``times_s`` and ``cpu_s``. Returns ``(median, warm-up result, f used)``."""
    t0 = time.perf_counter()
    f_used, ours = fit_f(kind, fn, G, f, how.seed)  # warm-up
    row["warmup_s"] = time.perf_counter() - t0
    row["f"] = f_used
    extra = item_kwargs(fn, G, f_used)
    call = lambda: call_item(kind, fn, G, f_used, how.seed, extra)  # noqa: E731
    if how.memory:
        with PeakMemory() as pm:
            t0 = time.perf_counter()
            call()
            t_mem = time.perf_counter() - t0
        row["peak_extra_bytes"] = pm.extra
        row["peak_extra_frac"] = None if pm.extra is None else pm.extra / G.nbytes
        result["config"]["memory_method"] = pm.method
        budget = max(how.time_budget - t_mem, 0.0)
        t_call = t_mem
    else:
        budget = how.time_budget
        t_call = row["warmup_s"]  # (an upper bound: it may include compilation)
    # a few untimed calls first when they are cheap: the first calls after another
    # workload (the previous rule, a BLAS reference whose threads still spin) run up
    # to 2x slower on this kind of machine, and with few repeats they set the median
    settle = SETTLE_CALLS if t_call * SETTLE_CALLS <= 0.1 * max(how.time_budget, 1.0) else 0
    med, times, _, cpu = median_time(call, repeats=how.repeats, warmup=settle, budget=budget)
    row.update(status="ok", time_s=med, times_s=times, cpu_s=cpu)
    return med, ours, f_used


def _time_peers(kind, name, fn, G, f_used, ours, med, row, how: _Measure) -> None:
    """The NumPy baseline (and its agreement with ours, for the deterministic rules) and byzfl's
    implementation, where they exist; their errors go into the row."""
    key = name if kind == "rule" else f"attack:{name}"
    if how.numpy_baselines and key in NUMPY_BASELINES:
        fn_np = baseline_call(NUMPY_BASELINES[key], fn, kind, name)
        try:
            bmed, _, bres, _ = median_time(
                lambda: fn_np(G, f_used, how.seed), repeats=how.repeats, budget=how.time_budget
            )
            row["numpy_s"] = bmed
            row["speedup_numpy"] = bmed / med
            if kind == "rule" and name in EXACT_BASELINES:
                row["numpy_rel_diff"] = rel_diff(ours, bres)
        except Exception as exc:
            row["numpy_error"] = f"{type(exc).__name__}: {exc}"
    if how.byzfl:
        try:
            bz = byzfl_callable(kind, name, G, f_used)
            if bz is not None:
                zmed = median_time(bz, repeats=how.repeats, budget=how.time_budget)[0]
                row["byzfl_s"] = zmed
                row["speedup_byzfl"] = zmed / med
        except Exception as exc:
            row["byzfl_error"] = f"{type(exc).__name__}: {exc}"
