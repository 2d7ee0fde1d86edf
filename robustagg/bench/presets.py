"""The presets of ``robustagg bench``: named sets of options, so that every published figure and
the quick looks are one command each (``robustagg bench --preset NAME``).

A preset sets the options of :func:`~robustagg.bench.run_benchmark` (or of the throughput
table); an option given on the command line overrides the preset's value, and ``--n`` or ``--d``
replace a preset's list of (n, d) cells by the grid. The ``docs-*`` presets are the suites that
``benchmarks/run_all.py`` runs for docs/benchmarks.md.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from .inputs import DEFAULT_D, DEFAULT_DTYPES, DEFAULT_MEMORY_BUDGET, DEFAULT_N, F_FRACTION, QUICK_D, QUICK_N
from .targets import TARGET_CELLS


@dataclass(frozen=True)
class Preset:
    """A named set of options of ``robustagg bench``.

    Attributes
    ----------
    name : str
        What ``--preset`` takes.
    summary : str
        One line for ``robustagg bench --help``.
    settings : Mapping
        Values of :data:`DEFAULTS`' keys that the preset changes.
    table : str
        ``"sweep"`` (:func:`~robustagg.bench.run_benchmark` and its table) or ``"throughput"``
        (:func:`~robustagg.bench.throughput_table`).
    """

    name: str
    summary: str
    settings: Mapping[str, Any] = field(default_factory=dict)
    table: str = "sweep"


DEFAULTS: dict[str, Any] = {
    "rules": None,
    "attacks": None,
    "exclude": None,
    "n": DEFAULT_N,
    "d": DEFAULT_D,
    "cells": None,
    "dtypes": DEFAULT_DTYPES,
    "threads": ("1", "all"),
    "repeats": 5,
    "time_budget": 20.0,
    "memory_budget": DEFAULT_MEMORY_BUDGET,
    "f_fraction": F_FRACTION,
    "numpy_baselines": True,
    "byzfl": True,
    "memory": True,
    "compile_times": True,
    "references": ("gram", "np_median"),
    "seed": 0,
}
"""The options of a sweep without a preset (the arguments of :func:`~robustagg.bench.run_benchmark`;
``None`` selects every registered rule or attack)."""

_NO_ATTACK = {"attacks": ["none"], "dtypes": ("float32",)}
_PUBLISHED = {"threads": ("all",), "compile_times": False}
_BARE = {"numpy_baselines": False, "byzfl": False, "references": ()}
_NOT_SUBSET_SEARCHES = {"exclude": "smea,mda"}  # C(n, f) subsets: refused at n >= 200, f = 0.2 n

_PRESETS = [
    Preset(
        "full",
        "the whole sweep (the default): n 10,50,200,1000; d 1e3..1e7; float32, float64; 1 and all threads",
    ),
    Preset(
        "quick",
        "small sweep (also --quick): n 10,50; d 1e3,1e4; float32; all threads; 3 repeats; no compile probes",
        {
            "n": QUICK_N,
            "d": QUICK_D,
            "dtypes": ("float32",),
            "threads": ("all",),
            "repeats": 3,
            "compile_times": False,
        },
    ),
    Preset(
        "targets",
        "the target table (also --targets): every rule at n=50 d=1e6 and n=1000 d=1e5, float32, 1 and all threads",
        {**_NO_ATTACK, "n": (50, 1000), "d": (10**5, 10**6), "cells": TARGET_CELLS, "threads": ("1", "all")},
    ),
    Preset(
        "throughput",
        "the throughput table (also robustagg throughput): every rule at n=50 d=1e5 float32, first call apart, "
        "3 repeats; reads --rules --exclude --n --d --dtype --repeats --f-fraction --seed --out",
        {"n": (50,), "d": (10**5,), "dtypes": ("float32",), "repeats": 3},
        table="throughput",
    ),
    Preset(
        "docs-targets",
        "docs/benchmarks.md: every rule at n=50 d=1e6 float32, all threads, NumPy baselines, references",
        {
            **_NO_ATTACK,
            **_PUBLISHED,
            "n": (50,),
            "d": (10**6,),
            "byzfl": False,
            "repeats": 7,
            "time_budget": 10.0,
        },
    ),
    Preset(
        "docs-targets-1thread",
        "docs/benchmarks.md: the same cell at one thread, without baselines (CPU-time ratios)",
        {
            **_NO_ATTACK,
            **_PUBLISHED,
            "n": (50,),
            "d": (10**6,),
            "threads": ("1",),
            "byzfl": False,
            "numpy_baselines": False,
            "repeats": 7,
            "time_budget": 10.0,
        },
    ),
    Preset(
        "docs-targets-n1000",
        "docs/benchmarks.md: every rule but smea and mda at n=1000 d=1e5 (the under-2-s target)",
        {
            **_NO_ATTACK,
            **_PUBLISHED,
            **_BARE,
            **_NOT_SUBSET_SEARCHES,
            "n": (1000,),
            "d": (10**5,),
            "repeats": 1,
        },
    ),
    Preset(
        "docs-byzfl",
        "docs/benchmarks.md: the rules byzfl also has, at n=50 d=1e5, against byzfl",
        {
            **_NO_ATTACK,
            **_PUBLISHED,
            "rules": ["mean", "median", "trimmed_mean", "geometric_median", "krum", "multi_krum"]
            + ["centered_clipping", "monna", "meamed", "caf"],
            "n": (50,),
            "d": (10**5,),
            "numpy_baselines": False,
            "references": (),
            "repeats": 3,
        },
    ),
    Preset(
        "docs-attacks",
        "docs/benchmarks.md: every attack at n=50 d=1e6 float32, with NumPy and byzfl baselines",
        {
            **_PUBLISHED,
            "rules": ["none"],
            "n": (50,),
            "d": (10**6,),
            "dtypes": ("float32",),
            "references": (),
            "repeats": 3,
            "time_budget": 10.0,
        },
    ),
    Preset(
        "docs-scaling-d",
        "docs/benchmarks.md: every rule at n=50, d = 1e3 ... 1e6 (time against d)",
        {**_NO_ATTACK, **_PUBLISHED, **_BARE, "n": (50,), "d": (10**3, 10**4, 10**5, 10**6), "repeats": 1},
    ),
    Preset(
        "docs-scaling-n",
        "docs/benchmarks.md: every rule but smea and mda at d=1e5, n = 10, 50, 200 (time against n)",
        {
            **_NO_ATTACK,
            **_PUBLISHED,
            **_BARE,
            **_NOT_SUBSET_SEARCHES,
            "n": (10, 50, 200),
            "d": (10**5,),
            "repeats": 1,
        },
    ),
]

PRESETS: dict[str, Preset] = {p.name: p for p in _PRESETS}
"""Every preset by name, in the order ``robustagg bench --help`` lists them."""


def preset_settings(names: list[str], given: Mapping[str, Any]) -> tuple[str, dict[str, Any]]:
    """The options of a run: :data:`DEFAULTS`, then each preset of ``names`` in turn, then the
    options ``given`` on the command line (a given ``n`` or ``d`` also drops the presets' cells).

    Returns
    -------
    tuple
        ``(table, settings)``: which table the run prints (``"sweep"`` or ``"throughput"``) and
        the options.
    """
    unknown = [nm for nm in names if nm not in PRESETS]
    if unknown:
        raise ValueError(f"bench: unknown preset {unknown[0]!r}; available: {', '.join(PRESETS)}")
    tables = {PRESETS[nm].table for nm in names} or {"sweep"}
    if len(tables) > 1:
        raise ValueError(f"bench: presets {', '.join(names)} print different tables; give one of them")
    settings = dict(DEFAULTS)
    for nm in names:
        settings.update(PRESETS[nm].settings)
    settings.update({k: v for k, v in given.items() if v is not None})
    if given.get("n") is not None or given.get("d") is not None:
        settings["cells"] = None
    return tables.pop(), settings
