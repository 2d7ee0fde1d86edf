"""``robustagg bench``: the one benchmark entry point, for every registered rule and attack.

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
grow while the process waits for a core on a loaded machine), the input throughput in GB/s
(``n·d·itemsize / time``), the ratio to the read floor, the speed-up over the NumPy and byzfl
implementations, the compile time (measured in a fresh subprocess with an empty Numba cache,
see :func:`measure_compile`) and the peak extra memory of one call (:class:`PeakMemory`).

**Presets** (``robustagg bench --preset NAME``, :data:`PRESETS`) name the sets of options the
project runs: ``full`` (the default sweep), ``quick`` (``--quick``), ``targets``
(``--targets``), ``throughput`` (the throughput table of every rule, also
``robustagg throughput``: :func:`throughput_table`) and the ``docs-*`` suites behind
docs/benchmarks.md (which ``benchmarks/run_all.py`` runs). The focused scripts of
``benchmarks/`` drive the same primitives (:func:`median_time`, :func:`side_by_side`,
:func:`read_floor`, :func:`measure_compile`).

The package is split by concern: ``inputs`` (the matrices and the calls of an item),
``timing``, ``memory``, ``baselines`` (the NumPy peer), ``byzfl_peer``, ``coldstart``,
``targets``, ``sweep`` (:func:`run_benchmark`), ``throughput``, ``report``, ``presets`` and
``command`` (the command line). Only ``numpy`` is imported with it (``robustagg --help`` stays
fast); Numba, threadpoolctl, SciPy, scikit-learn and byzfl are imported when a benchmark runs.
"""

from __future__ import annotations

from .baselines import EXACT_BASELINES, NUMPY_BASELINES, baseline_call, lie_rows, rel_diff
from .byzfl_peer import BYZFL_ATTACKS, BYZFL_RULES, byzfl_callable, load_byzfl
from .coldstart import compile_probe, format_cold_start, measure_compile
from .command import configure_parser, parse_int, parse_size, run
from .inputs import (
    DEFAULT_D,
    DEFAULT_DTYPES,
    DEFAULT_MEMORY_BUDGET,
    DEFAULT_N,
    F_FRACTION,
    ITEM_ARGUMENTS,
    LIE_Z,
    QUICK_D,
    QUICK_N,
    attacked_matrix,
    call_item,
    fit_f,
    item_kwargs,
    make_input,
    select_names,
)
from .memory import PeakMemory
from .presets import PRESETS, Preset
from .report import format_row, format_table, to_jsonable
from .sweep import SCHEMA, run_benchmark
from .targets import TARGET_CELLS, TARGETS, TIME_TARGET, check_targets, format_targets
from .throughput import throughput_table
from .timing import SETTLE_CALLS, floor_kernels, median_time, read_floor, side_by_side

__all__ = [
    "BYZFL_ATTACKS",
    "BYZFL_RULES",
    "DEFAULT_D",
    "DEFAULT_DTYPES",
    "DEFAULT_MEMORY_BUDGET",
    "DEFAULT_N",
    "EXACT_BASELINES",
    "F_FRACTION",
    "ITEM_ARGUMENTS",
    "LIE_Z",
    "NUMPY_BASELINES",
    "PRESETS",
    "PeakMemory",
    "Preset",
    "QUICK_D",
    "QUICK_N",
    "SCHEMA",
    "SETTLE_CALLS",
    "TARGETS",
    "TARGET_CELLS",
    "TIME_TARGET",
    "attacked_matrix",
    "baseline_call",
    "byzfl_callable",
    "call_item",
    "check_targets",
    "compile_probe",
    "configure_parser",
    "fit_f",
    "floor_kernels",
    "format_cold_start",
    "format_row",
    "format_table",
    "format_targets",
    "item_kwargs",
    "lie_rows",
    "load_byzfl",
    "make_input",
    "measure_compile",
    "median_time",
    "parse_int",
    "parse_size",
    "read_floor",
    "rel_diff",
    "run",
    "run_benchmark",
    "select_names",
    "side_by_side",
    "throughput_table",
    "to_jsonable",
]

# The names of the single-module ``robustagg.bench`` that code outside it used, kept working.
_EXACT_BASELINES = EXACT_BASELINES
_byzfl_callable = byzfl_callable
_call_item = call_item
_compile_probe = compile_probe
_floor_kernels = floor_kernels
_item_kwargs = item_kwargs
_lie_rows = lie_rows
_make_input = make_input
_median_time = median_time
_parse_int = parse_int
_parse_size = parse_size
_select = select_names
