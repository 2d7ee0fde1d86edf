"""How the tables write times, ratios and sizes."""

from __future__ import annotations


def fmt_time(s: float | None) -> str:
    """A time in us, ms or s (``-`` for None)."""
    if s is None:
        return "-"
    if s < 1e-3:
        return f"{s * 1e6:.0f} us"
    if s < 1:
        return f"{s * 1e3:.1f} ms"
    return f"{s:.2f} s"


def fmt(v: float | None, spec: str = ".2f", suffix: str = "") -> str:
    """``v`` in format ``spec`` with ``suffix`` (``-`` for None)."""
    return "-" if v is None else f"{v:{spec}}{suffix}"


def fmt_bytes(b: float | None) -> str:
    """A size in KiB or MiB (``-`` for None)."""
    if b is None:
        return "-"
    if b < 1 << 20:
        return f"{b / 1024:.0f} KiB"
    return f"{b / 2**20:.1f} MiB"
