"""The records of finished cells, read for the tables and the plots.

A record is what :func:`robustagg.training.runner.run_cell` returns: the cell (its
configuration), the run's ``summary``, a slim ``history`` and ``error`` ("" when it ran). These
helpers take values out of records, group them into a grid of rows × columns with the mean and
the standard deviation over seeds, and name rules and attacks as the paper's tables do.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Callable, Hashable, Sequence
from typing import Any

import numpy as np

from .._registry import DISPLAY_NAMES

__all__ = ["PRETTY", "as_float", "best_accuracy", "display_name", "grid", "mean_std"]

#: the names the tables print: the registry's display names of the rules and attacks they show
PRETTY = {
    k: DISPLAY_NAMES[k]
    for k in (
        "none",
        "gaussian",
        "noise",
        "label_flip",
        "byzmean",
        "sign_flip",
        "lie",
        "min_max",
        "min_sum",
        "reverse_scaled",
        "time_varying",
        "mean",
        "trimmed_mean",
        "median",
        "geometric_median",
        "krum",
        "multi_krum",
        "bulyan",
        "dnc",
        "signguard",
        "signguard_sim",
        "signguard_dist",
    )
}


def display_name(name: str) -> str:
    """The name a table or a plot shows for a rule or an attack (``name`` itself if unknown)."""
    return PRETTY.get(name, name)


def as_float(x: Any) -> float:
    """A stored number as a float, ``None`` (a JSON NaN) as NaN."""
    return float("nan") if x is None else float(x)


def best_accuracy(record: dict) -> float:
    """The best test accuracy of a record (a fraction; NaN when it has none)."""
    return as_float(record.get("summary", {}).get("best_accuracy"))


def mean_std(values: Sequence[float | None]) -> tuple[float, float]:
    """Mean and sample standard deviation of the finite values (NaN where undefined)."""
    v = np.array([x for x in values if x is not None and math.isfinite(x)], dtype=float)
    if v.size == 0:
        return float("nan"), float("nan")
    return float(v.mean()), float(v.std(ddof=1)) if v.size > 1 else float("nan")


def grid(
    records: Sequence[dict],
    row_key: Callable[[dict], Hashable],
    col_key: Callable[[dict], Hashable],
    value: Callable[[dict], float],
    rows: list | None = None,
    cols: list | None = None,
) -> tuple[list, list, dict[tuple, tuple[float, float]]]:
    """Group the records into rows × columns: ``(rows, cols, {(row, col): (mean, std)})``.

    Rows and columns come in the order of their first record unless ``rows`` / ``cols`` give it;
    the statistics are over the records of each (row, column), i.e. over seeds.
    """
    cells: dict[tuple, list[float]] = defaultdict(list)
    row_order, col_order = [], []
    for r in records:
        rk, ck = row_key(r), col_key(r)
        if rk not in row_order:
            row_order.append(rk)
        if ck not in col_order:
            col_order.append(ck)
        cells[(rk, ck)].append(value(r))
    return rows or row_order, cols or col_order, {k: mean_std(v) for k, v in cells.items()}
