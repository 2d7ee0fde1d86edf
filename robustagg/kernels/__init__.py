"""Private Numba kernels. They take and return NumPy arrays only and know nothing about
validation, array libraries or diagnostics. Every kernel is ``cache=True`` and none uses
``fastmath`` (Byzantine input carries NaN/Inf).

Convention: a kernel that aggregates takes ``(G, rows)`` where ``rows`` is an int64 array of
the row indices to use (the finite rows), so that excluding a Byzantine row never copies G.
"""

from ._coordinate import column_mean
from ._rows import nonfinite_rows
from ._signs import dots_with, gram_and_sq_distances, norms_and_sign_counts, weighted_row_sum

__all__ = ["column_mean", "nonfinite_rows"]
__all__ += ["dots_with", "gram_and_sq_distances", "norms_and_sign_counts", "weighted_row_sum"]
