"""Private Numba kernels. They take and return NumPy arrays only and know nothing about
validation, array libraries or diagnostics. Every kernel is ``cache=True`` and none uses
``fastmath`` (Byzantine input carries NaN/Inf).

Convention: a kernel that aggregates takes ``(G, rows)`` where ``rows`` is an int64 array of
the row indices to use (the finite rows), so that excluding a Byzantine row never copies G.
"""

from ._coordinate import column_mean
from ._rows import nonfinite_rows

__all__ = ["column_mean", "nonfinite_rows"]
