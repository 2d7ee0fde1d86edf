"""Private Numba kernels. They take and return NumPy arrays only and know nothing about
validation, array libraries or diagnostics. Every kernel is ``cache=True`` and none uses
fast-math flags (Byzantine input carries NaN/Inf).

Convention: a kernel that aggregates takes ``(G, rows)`` where ``rows`` is an int64 array of
the row indices to use (the finite rows), so that excluding a Byzantine row never copies G.

Shared kernels -- ``m = len(rows)``; all accumulate in float64:

* ``row_norms(G, rows) -> float64 (m,)`` L2 norms; ``row_sq_norms`` the squares.
* ``row_sq_distances_to(G, rows, z) -> float64 (m,)``: ``||g_r - z||^2`` for a float64 (d,) ``z``.
* ``clip_scales(norms, threshold) -> float64 (m,)``: ``min(1, threshold / norm)`` (1 for norm 0).
* ``nonfinite_rows_and_gather(G, coords) -> (bool (n,), G.dtype (T, n, b))``: the non-finite
  scan and DnC's T rounds of sampled columns in one pass; ``gather_columns(G, rows, coords)``
  one round's columns as float64.
* ``clip_rows(G, rows, threshold) -> G.dtype (m, d)``: the rows scaled to norm <= threshold (a copy).
* ``weighted_column_sum(G, rows, weights) -> float64 (d,)``: ``sum_r w_r g_r``;
  ``scaled_column_sum(G, rows, weights, scale) -> G.dtype (d,)`` the same times ``scale``,
  rounded once to G's dtype.
* ``weighted_column_mean(G, rows, weights) -> G.dtype (d,)``: ``sum_r w_r g_r / sum_r w_r``.
* ``clipped_column_mean(G, rows, norms, threshold) -> G.dtype (d,)``:
  ``(1/m) sum_r g_r min(1, threshold / norms_r)`` (SignGuard's last step).
* ``pairwise_sq_distances(G, rows) -> float64 (m, m)``: squared Euclidean distances, accurate
  (block-centred float64 Gram + exact recomputation of near-duplicate pairs; no cancellation
  in float32), symmetric, zero diagonal. ``centred_gram(G, rows)`` is its Gram stage.
* ``sq_distances_of_pairs(G, rows, pi, pj) -> float64 (P,)``: direct distances of given pairs.
* ``krum_scores(D, k) -> float64 (m,)``: sum of the k smallest off-diagonal entries per row.
* ``column_mean_std(G, rows, ddof) -> (float64 (d,), float64 (d,))``: coordinate-wise mean and
  standard deviation in one read of G (the attacks' statistics).
* ``column_median(G, rows) -> G.dtype (d,)`` (NumPy's even-m convention);
  ``column_trimmed_mean(G, rows, k) -> G.dtype (d,)`` (drop k smallest and k largest per column);
  ``column_closest_to_median_mean(G, rows, beta) -> G.dtype (d,)`` (Bulyan's second stage).
"""

# First of all: importing robustagg._threads prepares Numba's threading layer (TBB, fork- and
# thread-safe, wherever it can be loaded), which must happen before the first parallel kernel
from .. import _threads  # noqa: F401
from ._coordinate import (
    clipped_column_mean,
    column_closest_to_median_mean,
    column_mean,
    column_mean_std,
    column_median,
    column_trimmed_mean,
    scaled_column_sum,
    weighted_column_mean,
    weighted_column_sum,
)
from ._distance import centred_gram, krum_scores, pairwise_sq_distances, sq_distances_of_pairs
from ._rows import (
    clip_rows,
    clip_scales,
    gather_columns,
    nonfinite_rows,
    nonfinite_rows_and_gather,
    row_norms,
    row_sq_distances_to,
    row_sq_norms,
    screen_rows,
)
from ._signs import (
    cosines_in_place,
    dots_with,
    floyd_draws,
    floyd_sample,
    gram_and_sq_distances,
    norms_and_sign_counts,
    norms_signs_and_similarity,
    offdiag_row_medians,
    sq_norm,
)

__all__ = ["column_mean", "nonfinite_rows", "screen_rows"]
__all__ += [
    "dots_with",
    "floyd_draws",
    "floyd_sample",
    "gram_and_sq_distances",
    "norms_and_sign_counts",
    "norms_signs_and_similarity",
]
__all__ += ["cosines_in_place", "offdiag_row_medians", "sq_norm"]
__all__ += [  # shared row, distance and coordinate-wise selection kernels
    "centred_gram",
    "clip_rows",
    "clip_scales",
    "gather_columns",
    "nonfinite_rows_and_gather",
    "clipped_column_mean",
    "column_closest_to_median_mean",
    "column_mean_std",
    "column_median",
    "column_trimmed_mean",
    "krum_scores",
    "pairwise_sq_distances",
    "row_norms",
    "row_sq_distances_to",
    "row_sq_norms",
    "sq_distances_of_pairs",
    "scaled_column_sum",
    "weighted_column_mean",
    "weighted_column_sum",
]
