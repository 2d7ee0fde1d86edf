"""Smoke tests of the benchmark harness (``robustagg bench``, the package ``robustagg.bench``):
tiny sizes, correctness of the harness and of its NumPy baselines, the JSON schema. No timed
assertions."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

import robustagg
from robustagg import bench
from robustagg.cli import main

TINY = dict(n=(12,), d=(64,), threads=("all",), repeats=1, compile_times=False, byzfl=False, progress=False)

ROW_KEYS_OK = {
    "kind",
    "name",
    "n",
    "d",
    "dtype",
    "threads",
    "f",
    "status",
    "time_s",
    "times_s",
    "gbps",
    "x_floor",
}


def _is_timer_value(x) -> bool:
    """A time (or a figure made of times) as the harness reports it: a finite, non-negative
    float. Its size is the machine's speed, which no test checks: on a fast machine a tiny
    call's time rounds to 0."""
    return isinstance(x, float) and math.isfinite(x) and x >= 0


@pytest.fixture(scope="module")
def tiny_result():
    """Every registered rule and attack once, on a tiny matrix."""
    return bench.run_benchmark(rules="*", attacks="*", dtypes=("float32",), **TINY)


@pytest.mark.slow
def test_every_registered_item_has_an_ok_row(tiny_result):
    rows = tiny_result["rows"]
    seen = [(r["kind"], r["name"]) for r in rows]
    expected = {("rule", k) for k in robustagg.RULES} | {("attack", k) for k in robustagg.ATTACKS}
    assert len(seen) == len(set(seen)) and set(seen) == expected
    bad = [(r["kind"], r["name"], r.get("error")) for r in rows if r["status"] != "ok"]
    assert not bad, f"the harness could not run: {bad}"
    for r in rows:
        assert ROW_KEYS_OK <= set(r), set(ROW_KEYS_OK) - set(r)
        assert _is_timer_value(r["time_s"]) and all(map(_is_timer_value, r["times_s"]))
        assert r["gbps"] * r["time_s"] == pytest.approx(r["bytes"] / 1e9)
        assert 0 <= r["f"] <= math.floor(0.2 * r["n"])


@pytest.mark.slow
def test_cells_and_references(tiny_result):
    cells = tiny_result["cells"]
    assert len(cells) == 1  # one (n, d) x one dtype x one thread count
    for c in cells:
        assert _is_timer_value(c["floor_s"])
        assert c["floor_method"] in c["floor_candidates_s"]
        assert c["floor_s"] == pytest.approx(min(c["floor_candidates_s"].values()))
        assert _is_timer_value(c["gram_s"]) and _is_timer_value(c["np_median_s"])
        assert c["bytes"] == c["n"] * c["d"] * np.dtype(c["dtype"]).itemsize
        rows = [
            r for r in tiny_result["rows"] if (r["n"], r["d"], r["dtype"]) == (c["n"], c["d"], c["dtype"])
        ]
        for r in rows:  # ratios are against the floor of the same cell
            assert r["x_floor"] * c["floor_s"] == pytest.approx(r["time_s"])


@pytest.mark.slow
def test_numpy_baselines_agree_with_the_library(tiny_result):
    """For the deterministic rules the harness compares the library's result with its NumPy
    baseline: both must compute the same thing, or the speed-up would compare different work."""
    checked = 0
    for r in tiny_result["rows"]:
        if r["kind"] == "rule" and r["name"] in bench.EXACT_BASELINES:
            assert r["numpy_rel_diff"] is not None and r["numpy_rel_diff"] <= 1e-5, r
            checked += 1
    assert checked >= 1  # at least mean


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_baselines_against_slow_references(dtype):
    rng = np.random.default_rng(3)
    n, d, f = 11, 7, 2
    G = rng.standard_normal((n, d)).astype(dtype)
    # trimmed mean: drop f smallest and f largest per coordinate
    ref = np.array([np.mean(sorted(G[:, j])[f : n - f]) for j in range(d)])
    np.testing.assert_allclose(bench.NUMPY_BASELINES["trimmed_mean"](G, f, 0), ref, rtol=1e-5)
    # krum: sum of squared distances to the n - f - 2 nearest others
    D = np.array([[float(np.sum((G[i].astype(float) - G[j]) ** 2)) for j in range(n)] for i in range(n)])
    scores = [sum(sorted(D[i, j] for j in range(n) if j != i)[: n - f - 2]) for i in range(n)]
    np.testing.assert_array_equal(bench.NUMPY_BASELINES["krum"](G, f, 0), G[int(np.argmin(scores))])
    order = np.argsort(scores, kind="stable")[: n - f]
    np.testing.assert_allclose(bench.NUMPY_BASELINES["multi_krum"](G, f, 0), G[order].mean(axis=0), rtol=1e-5)
    # geometric median: the Fermat point of a triangle
    T = np.array([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0]], dtype=dtype)
    gm = bench.NUMPY_BASELINES["geometric_median"](T, 0, 0, tol=1e-12, maxiter=10_000)
    np.testing.assert_allclose(gm, [(3 - np.sqrt(3)) / 6] * 2, atol=1e-4)
    # attacks: the Byzantine rows are replaced, the honest rows kept
    out = bench.NUMPY_BASELINES["attack:sign_flip"](G, f, 0)
    np.testing.assert_array_equal(out[:f], -G[:f])
    np.testing.assert_array_equal(out[f:], G[f:])
    out = bench.NUMPY_BASELINES["attack:byzmean"](G, 4, 0)
    np.testing.assert_allclose(out.mean(axis=0), bench.lie_rows(G, 4, None), rtol=1e-4, atol=1e-5)


def test_bulyan_baseline_matches_a_slow_reference():
    rng = np.random.default_rng(5)
    n, f = 11, 2
    G = rng.standard_normal((n, 5))
    sq = lambda a, b: float(np.sum((G[a] - G[b]) ** 2))  # noqa: E731
    remaining, selected = list(range(n)), []
    for _ in range(n - 2 * f):
        r = len(remaining)
        k = max(r - f - 2, 1)
        scores = [sum(sorted(sq(i, j) for j in remaining if j != i)[:k]) for i in remaining]
        pick = remaining[int(np.argmin(scores))]
        selected.append(pick)
        remaining.remove(pick)
    S = G[selected]
    beta = len(selected) - 2 * f
    med = np.median(S, axis=0)
    ref = [np.mean(sorted(S[:, j], key=lambda v: abs(v - med[j]))[:beta]) for j in range(S.shape[1])]
    np.testing.assert_allclose(bench.NUMPY_BASELINES["bulyan"](G, f, 0), ref, rtol=1e-10)


def test_memory_budget_skips_cells():
    res = bench.run_benchmark(rules="mean", attacks="none", memory_budget=1000, dtypes=("float64",), **TINY)
    assert res["cells"] == []
    assert [r["status"] for r in res["rows"]] == ["skipped"]
    assert "memory-budget" in res["rows"][0]["reason"]


def test_selection_by_pattern():
    assert bench.select_names(robustagg.RULES, "mean") == ["mean"]
    assert set(bench.select_names(robustagg.RULES, "*")) == set(robustagg.RULES)
    assert bench.select_names(robustagg.RULES, "none") == []
    assert bench.select_names({"a_1": 0, "a_2": 0, "b": 0}, "a_*,b") == ["a_1", "a_2", "b"]
    with pytest.raises(ValueError, match="no registered name matches 'zzz'"):
        bench.select_names(robustagg.RULES, "zzz")


@pytest.mark.slow
def test_peak_memory_sees_a_large_allocation():
    nbytes = 64 << 20
    with bench.PeakMemory() as pm:
        a = np.ones(nbytes // 8)
        a[::512] = 2.0
        del a
    assert pm.method in ("vmhwm", "rss-sampling")
    assert pm.extra >= 0.9 * nbytes
    with bench.PeakMemory() as pm:
        pass
    assert pm.extra < 16 << 20


@pytest.mark.slow
def test_read_floor_reads_everything():
    G = np.arange(12 * 40, dtype=np.float64).reshape(12, 40)
    for name, fn in bench.floor_kernels().items():
        v = fn(G)
        total = float(np.sum(v)) if name != "numpy-max" else float(v)
        assert total == (float(G.sum()) if name != "numpy-max" else float(G.max())), name
    fl = bench.read_floor(G, repeats=2)
    assert fl["s"] == min(fl["candidates"].values())


def test_check_targets():
    rows = [
        {
            "kind": "rule",
            "name": "mean",
            "status": "ok",
            "dtype": "float32",
            "n": 50,
            "d": 10**6,
            "threads": 2,
            "x_floor": 1.2,
            "peak_extra_frac": 0.5,
            "time_s": 0.1,
        },
        {
            "kind": "rule",
            "name": "median",
            "status": "ok",
            "dtype": "float32",
            "n": 50,
            "d": 10**6,
            "threads": 2,
            "x_floor": 7.0,
            "speedup_np_median": 9.0,
            "peak_extra_frac": 0.0,
            "time_s": 0.1,
        },
        {
            "kind": "rule",
            "name": "median",
            "status": "ok",
            "dtype": "float32",
            "n": 1000,
            "d": 10**5,
            "threads": 2,
            "time_s": 2.5,
        },
    ]
    got = {(t["rule"], t["n"], t["metric"]): t["met"] for t in bench.check_targets(rows)}
    assert got[("mean", 50, "x_floor")] is True
    assert got[("mean", 50, "peak_extra_frac")] is False
    assert got[("median", 50, "x_floor")] is False
    assert got[("median", 50, "speedup_np_median")] is True
    assert got[("median", 1000, "time_s")] is False


@pytest.mark.slow
def test_cli_json_schema(tmp_path, capsys):
    path = tmp_path / "out.json"
    rc = main(
        [
            "bench",
            "--quick",
            "--rules",
            "mean",
            "--attacks",
            "sign_flip",
            "--n",
            "10",
            "--d",
            "100",
            "--dtype",
            "float64",
            "--repeats",
            "1",
            "--no-byzfl",
            "--quiet",
            "--json",
            str(path),
        ]
    )
    assert rc == 0
    out = capsys.readouterr().out
    assert "read floor" in out and "mean" in out and f"wrote {path}" in out
    data = json.loads(path.read_text())
    assert data["schema"] == bench.SCHEMA
    assert {"machine", "config", "cells", "rows", "compile", "targets", "started", "finished"} <= set(data)
    assert (
        data["config"]["n"] == [10]
        and data["config"]["d"] == [100]
        and data["config"]["dtypes"] == ["float64"]
    )
    assert [(r["kind"], r["name"]) for r in data["rows"]] == [("rule", "mean"), ("attack", "sign_flip")]
    for r in data["rows"]:
        assert (
            r["status"] == "ok" and isinstance(r["time_s"], float) and isinstance(r["peak_extra_bytes"], int)
        )


def test_the_single_module_names_still_resolve():
    """Code written against the single-module ``robustagg.bench`` keeps working."""
    assert bench._select is bench.select_names and bench._call_item is bench.call_item
    assert bench._item_kwargs is bench.item_kwargs and bench._median_time is bench.median_time
    assert bench._EXACT_BASELINES is bench.EXACT_BASELINES and bench._floor_kernels is bench.floor_kernels


def test_cli_rejects_bad_options(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["bench", "--rules", "no_such_rule", "--quiet"])
    assert exc.value.code == 2
    assert "argument --rules: unknown rule 'no_such_rule'" in capsys.readouterr().err
    assert main(["bench", "--rules", "zzz*", "--quiet"]) == 2  # a pattern that matches nothing
    assert "no registered name matches 'zzz*'" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["bench", "--n", "ten"])
    assert bench.parse_int("1e6") == 10**6 and bench.parse_int("10^5") == 10**5
    assert bench.parse_size("512M") == 512 << 20


@pytest.mark.slow
def test_compile_probe_in_a_fresh_interpreter():
    comp = bench.measure_compile("rule", ["mean"], ["float64"], timeout=300)
    entry = comp["mean"]["float64"]
    assert "error" not in entry, entry
    assert _is_timer_value(entry["compile_s"]) and _is_timer_value(entry["cache_load_s"])


def test_byzfl_loader_when_installed():
    pytest.importorskip("torch")
    mods = bench.load_byzfl()
    if "error" in mods:
        pytest.skip(mods["error"])
    G = np.random.default_rng(0).standard_normal((9, 6)).astype(np.float32)
    call = bench.byzfl_callable("rule", "mean", G, 1)
    np.testing.assert_allclose(np.asarray(call()), G.mean(axis=0), rtol=1e-5)
    import sys

    assert "byzfl" not in sys.modules or not hasattr(sys.modules["byzfl"], "aggregators")


def _is_figure(text: str) -> bool:
    """Whether a printed figure reads as a finite, non-negative number ("12.5", "0.0", "28%")."""
    try:
        return _is_timer_value(float(text.rstrip("%")))
    except ValueError:
        return False


@pytest.mark.slow
def test_bench_gram_kernel_script_runs_on_a_small_matrix(capsys):
    """benchmarks/bench_gram_kernel.py (the Gram kernel's rates, quoted in docs/benchmarks.md)
    runs end to end and prints every line it promises, each figure a finite number (their values
    are the machine's speed and are not checked); its copy-first Gram (``--decompose``) gives
    the library's bits (on a d that leaves a float64 tail per chunk)."""
    import importlib.util
    import pathlib
    import re

    path = pathlib.Path(__file__).resolve().parents[1] / "benchmarks" / "bench_gram_kernel.py"
    spec = importlib.util.spec_from_file_location("bench_gram_kernel", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    import numba

    threads = numba.get_num_threads()
    try:
        assert mod.main(["--n", "9", "--d", "3003", "--repeats", "1", "--threads", "2", "--decompose"]) == 0
    finally:
        numba.set_num_threads(threads)
    out = capsys.readouterr().out
    lines = out.splitlines()
    assert lines[0].startswith("n=9 d=3003 float32; rates in 10^9 multiply-adds per second")
    num = r"(\S+)"
    rates = [re.fullmatch(rf"\s+([1-4])\. (.+?)\s+{num}\s+{num} of line 1", ln) for ln in lines]
    rates = [m for m in rates if m]
    assert [m.group(1) for m in rates] == ["1", "2", "3", "4"]
    assert all(_is_figure(m.group(3)) and _is_figure(m.group(4)) for m in rates)
    assert "streaming: the whole Gram of G (" in rates[3].group(2)
    stage = [
        re.fullmatch(
            rf"\s+5\. the Gram stage on 2 threads: {num} ms \({num}\); read floor {num} ms; "
            rf"45 pairs x d at 2 x line 1 would take {num} ms",
            ln,
        )
        for ln in lines
    ]
    stage = [m for m in stage if m]
    assert len(stage) == 1 and all(map(_is_figure, stage[0].groups()))
    assert "  6. the same Gram, each block copied first (the same bits), 2 threads:" in lines
    modes = {}
    for ln in lines:
        m = re.fullmatch(rf"\s{{5}}(\S.*?)\s+{num} ms\s+{num} x floor", ln)
        if m:
            modes[m.group(1)] = m.groups()[1:]
    assert set(modes) == set(mod._MODES)
    assert all(_is_figure(ms) and _is_figure(x) for ms, x in modes.values())
    overlap = [
        re.fullmatch(rf"\s+perfect overlap: the larger half, {num} ms = {num} x floor", ln) for ln in lines
    ]
    overlap = [m for m in overlap if m]
    assert len(overlap) == 1 and all(map(_is_figure, overlap[0].groups()))
