"""Private Numba kernels. They take and return NumPy arrays only and know nothing about
validation, array libraries or diagnostics. Every kernel is ``cache=True`` and none uses
fast-math flags (Byzantine input carries NaN/Inf).

The rules use the kernels only through this package's names (``kernels.<name>``). The modules,
by concern (each exports what the others need through public names; none imports another's
underscore names, and they import each other without cycles, tests/test_layout.py):

* ``_select``: quickselect, NumPy's median of a vector, a stable argsort, and the sorting
  network run across blocks of columns (the building blocks of the order statistics);
* ``_columns``: column sums and means (mean, weighted, scaled and clipped sums, mean and
  standard deviation, group means, dense mixing);
* ``_column_ranks``: coordinate-wise order statistics (median, trimmed mean, Bulyan's
  closest-to-median mean, MeaMed's mean around the median);
* ``_rows``: per-row passes (the non-finite scan and screening, norms, distances to a point,
  clipping, DnC's column gathers);
* ``_gram`` (the centred Gram matrix, on Numba's threads or the pool) with ``_gramtile`` (its
  register-tiled float32 kernel), and ``_distance`` (accurate pairwise distances, the Gram
  of centred points from them, Krum's scores and Bulyan's repeated Krum);
* ``_subsets``: the exact subset searches of MDA and SMEA;
* ``_signs``: SignGuard's fused norm, sign-count and similarity passes;
* ``_meanshift``: flat-kernel Mean-Shift, its bandwidth and 2-means (``robustagg.clustering``).

The thread pool and BLAS's thread limits are ``robustagg._threads``'s. Every tuning constant
(block widths, lanes, network and tile shapes, chunking, the distance kernels' tolerances) and
every size switch lives in ``robustagg._thresholds`` (pure Python; its ``BRANCHES`` table lists
the switches that change code path).

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
* ``group_means(G, members, offsets) -> G.dtype (k, d)`` (bucketing); ``mix_rows(G, rows, W)``
  ``W @ G[rows]`` accumulated in float64 (NNM).
* ``column_median(G, rows) -> G.dtype (d,)`` (NumPy's even-m convention);
  ``column_trimmed_mean(G, rows, k) -> G.dtype (d,)`` (drop k smallest and k largest per column);
  ``column_closest_to_median_mean(G, rows, beta) -> G.dtype (d,)`` (Bulyan's second stage);
  ``column_mean_around_median(G, rows, beta) -> G.dtype (d,)`` (MeaMed).
* ``sq_distances(G, rows)``: ``pairwise_sq_distances`` symmetrised with a zero diagonal;
  ``centered_gram_from_sq_distances(D2, weights)`` the Gram of the points centred on their
  (weighted) mean; ``repeated_krum(D, theta, f)`` Bulyan's selection.
* ``subset_min_diameter``, ``first_subset_within``, ``subset_min_max_eigenvalue``: the exact
  subset searches (MDA, SMEA).
* ``estimate_bandwidth_kernel``, ``bin_seeds_kernel``, ``climb_seeds_kernel``,
  ``merge_centers_kernel``, ``lloyd_kernel``: Mean-Shift and 2-means on small feature matrices.
"""

# First of all: importing robustagg._threads prepares Numba's threading layer (TBB, fork- and
# thread-safe, wherever it can be loaded), which must happen before the first parallel kernel
from .. import _threads  # noqa: F401
from ._column_ranks import (
    column_closest_to_median_mean,
    column_mean_around_median,
    column_median,
    column_trimmed_mean,
)
from ._columns import (
    clipped_column_mean,
    column_mean,
    column_mean_std,
    group_means,
    mix_rows,
    scaled_column_sum,
    weighted_column_mean,
    weighted_column_sum,
)
from ._distance import (
    centered_gram_from_sq_distances,
    krum_scores,
    pairwise_sq_distances,
    repeated_krum,
    sq_distances,
    sq_distances_of_pairs,
)
from ._gram import centred_gram
from ._meanshift import (
    bin_seeds_kernel,
    climb_seeds_kernel,
    estimate_bandwidth_kernel,
    lloyd_kernel,
    merge_centers_kernel,
)
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
from ._subsets import first_subset_within, subset_min_diameter, subset_min_max_eigenvalue

__all__ = [  # column sums and means
    "clipped_column_mean",
    "column_mean",
    "column_mean_std",
    "group_means",
    "mix_rows",
    "scaled_column_sum",
    "weighted_column_mean",
    "weighted_column_sum",
]
__all__ += [  # coordinate-wise order statistics
    "column_closest_to_median_mean",
    "column_mean_around_median",
    "column_median",
    "column_trimmed_mean",
]
__all__ += [  # rows
    "clip_rows",
    "clip_scales",
    "gather_columns",
    "nonfinite_rows",
    "nonfinite_rows_and_gather",
    "row_norms",
    "row_sq_distances_to",
    "row_sq_norms",
    "screen_rows",
]
__all__ += [  # the Gram, distances and Krum
    "centered_gram_from_sq_distances",
    "centred_gram",
    "krum_scores",
    "pairwise_sq_distances",
    "repeated_krum",
    "sq_distances",
    "sq_distances_of_pairs",
]
__all__ += ["first_subset_within", "subset_min_diameter", "subset_min_max_eigenvalue"]  # subsets
__all__ += [  # SignGuard
    "cosines_in_place",
    "dots_with",
    "floyd_draws",
    "floyd_sample",
    "gram_and_sq_distances",
    "norms_and_sign_counts",
    "norms_signs_and_similarity",
    "offdiag_row_medians",
    "sq_norm",
]
__all__ += [  # Mean-Shift and 2-means
    "bin_seeds_kernel",
    "climb_seeds_kernel",
    "estimate_bandwidth_kernel",
    "lloyd_kernel",
    "merge_centers_kernel",
]
