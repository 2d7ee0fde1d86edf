"""The report: the terminal table of a result (one block per cell, then the cold-start figures
and the targets) and the result made JSON-ready."""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from .coldstart import format_cold_start
from .targets import format_targets
from .units import fmt, fmt_bytes, fmt_time


def format_cell_header(cell: dict[str, Any]) -> str:
    """One line about a cell: its size, read floor, references and load average."""
    parts = [
        f"n={cell['n']} d={cell['d']:g} {cell['dtype']} threads={cell['threads']} f={cell['f']}"
        f" ({cell['bytes'] / 2**20:.1f} MiB)",
        f"read floor {fmt_time(cell.get('floor_s'))} ({cell.get('floor_method')}, {cell.get('floor_gbps', 0):.1f} GB/s)",
    ]
    if "gram_s" in cell:
        parts.append(f"G@G.T {fmt_time(cell['gram_s'])}")
    if "np_median_s" in cell:
        parts.append(f"np.median {fmt_time(cell['np_median_s'])}")
    la = (cell.get("loadavg_start"), cell.get("loadavg_end"))
    if la[0] is not None:
        parts.append(f"load {la[0]:.1f}->{la[1]:.1f}")
    return " | ".join(parts)


_COLUMNS = [
    ("kind", 6, lambda r: r["kind"]),
    ("name", 18, lambda r: r["name"]),
    ("f", 4, lambda r: str(r.get("f", "-"))),
    ("median", 9, lambda r: fmt_time(r.get("time_s"))),
    ("GB/s", 6, lambda r: fmt(r.get("gbps"), ".2f")),
    ("x floor", 8, lambda r: fmt(r.get("x_floor"), ".2f")),
    ("x XX^T", 7, lambda r: fmt(r.get("x_gram"), ".2f") if r["kind"] == "rule" else "-"),
    ("vs numpy", 9, lambda r: fmt(r.get("speedup_numpy"), ".1f", "x")),
    ("vs byzfl", 9, lambda r: fmt(r.get("speedup_byzfl"), ".1f", "x")),
    ("compile", 8, lambda r: fmt(r.get("compile_s"), ".2f", " s")),
    (
        "peak extra",
        16,
        lambda r: (
            "-"
            if r.get("peak_extra_bytes") is None
            else f"{fmt_bytes(r['peak_extra_bytes'])} ({100 * r['peak_extra_frac']:.1f}%)"
        ),
    ),
]


def format_row(row: dict[str, Any]) -> str:
    """One row of the table (or its status and reason where it did not run)."""
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


def to_jsonable(obj: Any) -> Any:
    """``obj`` with NumPy scalars made Python numbers and non-finite floats ``None``."""
    if isinstance(obj, dict):
        return {str(k): to_jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [to_jsonable(v) for v in obj]
    if isinstance(obj, (np.integer,)):
        return int(obj)
    if isinstance(obj, (np.floating, float)):
        v = float(obj)
        return v if math.isfinite(v) else None
    if isinstance(obj, np.bool_):
        return bool(obj)
    return obj
