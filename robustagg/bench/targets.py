"""The targets: bounds on the measured rows at ``n = 50, d = 1e6`` and ``n = 1000, d = 1e5``
(float32, side by side in one run), and their evaluation."""

from __future__ import annotations

import fnmatch
from collections.abc import Iterable
from typing import Any

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


def format_targets(targets: list[dict[str, Any]]) -> str:
    """The records of :func:`check_targets` as a table (met, MISSED or n/a)."""
    lines = ["targets (float32):"]
    for t in targets:
        bound = f"<= {t['max']:g}" if t.get("max") is not None else f">= {t['min']:g}"
        mark = {True: "met", False: "MISSED", None: "n/a"}[t["met"]]
        v = "-" if t["value"] is None else f"{t['value']:.3g}"
        lines.append(
            f"  {t['rule']:<18} n={t['n']} d={t['d']:g} threads={t['threads']}  {t['metric']:<18} {v:>8} {bound:<8} {mark}"
        )
    return "\n".join(lines)
