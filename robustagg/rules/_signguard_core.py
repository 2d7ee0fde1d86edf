"""SignGuard's stages, shared by the NumPy rule and its Dask twin (``robustagg.dask.signguard``).

Both run the same four stages on the finite rows of an (n, d) matrix; only the passes over the
data differ (the whole matrix with the kernels, or one column block at a time):

1. **Coordinates.** :func:`sample_coordinates` draws the k sampled columns from the rng before
   anything else, so the same rng gives the same coordinates (and the same later draws) in
   both.
2. **Statistics.** A :class:`RowStatistics`: which rows are finite, and for those the norms, the
   sign counts on the sampled columns and (the variants) a way to compute the similarity
   feature. :func:`numpy_statistics` computes it with the fused kernels; the Dask twin sums the
   rows' squares and sign counts over the column blocks and builds one.
3. **Decision.** :func:`decide` turns the statistics and the checked options (a
   ``SignGuardOptions`` of ``robustagg.rules._signguard_options``) into a :class:`Decision`:
   the median norm and its zero branch, the norm filter S1, the sign features and their
   clustering S2, the kept set S (with the fallback to S1), the clipping weights. :func:`diagnostics` reports it over the
   n input rows.
4. **Average.** :func:`average_kept_rows` averages the clipped kept rows of a matrix: the whole
   one (NumPy) or each column block (Dask; every built-in aggregator is coordinate-wise).

Names here are public within the package: the rule module and the Dask twin import them.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from .._diagnostics import Diagnostics
from .._lazy import LazyModule
from .._registry import RULES
from .._thresholds import SIGNGUARD_EXACT_GRAM_MAX
from ..clustering import estimate_bandwidth, kmeans, largest_cluster, mean_shift
from ._signguard_options import SignGuardOptions

kernels = LazyModule("robustagg.kernels", globals(), "kernels")  # imported at the first call

__all__ = [
    "Decision",
    "RowStatistics",
    "average_kept_rows",
    "decide",
    "diagnostics",
    "numpy_statistics",
    "sample_coordinates",
]

# SignGuard-Sim without a reference: up to this many m * m * d the Gram matrix is summed directly
# in float64 (exact to rounding; ~10-20 ms at the limit); above it, through the BLAS pairwise
# distances (Gram-bound; cosines within ~1e-7 of the direct sums for float32 input)
EXACT_GRAM_MAX = SIGNGUARD_EXACT_GRAM_MAX


# --------------------------------------------------------------------------------------------
# 1. coordinates


def _floyd_draws(gen: np.random.Generator, d: int, k: int) -> np.ndarray:
    """Step q's draw uniform on [0, d - k + q], q < k: from a batch of 32-bit words by Lemire's
    method (~4x faster than ``Generator.integers`` with an array of bounds), which rejects a
    word with probability below d / 2^32; a batch that runs out is replaced by a longer one."""
    if d > 1 << 32:
        return gen.integers(0, np.arange(d - k + 1, d + 1, dtype=np.int64))
    extra = 64 + k // 1000
    while True:
        raw = gen.integers(0, 1 << 32, size=k + extra, dtype=np.uint64)
        draws, ok = kernels.floyd_draws(raw, d, k)
        if ok:
            return draws
        extra *= 8


def sample_coordinates(d: int, coordinates: Any, fraction: float, gen: np.random.Generator) -> np.ndarray:
    """Sorted int64 indices of the coordinates whose signs are counted.

    ``coordinates`` and ``fraction`` are checked (``check_options``): ``"random"`` draws
    ``k = max(1, round(fraction * d))`` columns uniformly without replacement, ``"window"`` k
    contiguous ones at a random offset; an array (already sorted, unique and in [0, d)) is
    returned as it is.
    """
    if not isinstance(coordinates, str):
        return coordinates
    k = min(max(1, int(round(fraction * d))), d)
    if coordinates == "random":
        # Floyd's algorithm: k bounded draws (step q uniform on [0, d - k + q]) instead of
        # Generator.choice's partial shuffle of an arange(d) (~7 ms at d = 10^6) and a sort
        return kernels.floyd_sample(d, _floyd_draws(gen, d, k))
    start = int(gen.integers(0, d - k + 1))
    return np.arange(start, start + k, dtype=np.int64)


# --------------------------------------------------------------------------------------------
# 2. statistics


@dataclass(frozen=True)
class RowStatistics:
    """What the decision reads from the matrix.

    Attributes
    ----------
    nonfinite : numpy.ndarray of bool, shape (n,)
        The rows left out (NaN/±Inf, or past the size limit: docs/conventions.md).
    rows : numpy.ndarray of int64, shape (m,)
        The other rows, in order; every per-row array below is over them.
    norms : numpy.ndarray of float64, shape (m,)
        The rows' Euclidean norms.
    counts : numpy.ndarray of int, shape (m, 3)
        Positive, zero and negative entries of each row on ``coordinates``.
    coordinates : numpy.ndarray of int64, shape (k,)
        The sampled columns (empty without sign clustering).
    similarity : callable or None
        For SignGuard-Sim/-Dist: returns ``(raw, feature)``, each row's similarity and the
        feature on the sign features' scale. Called only when the decision uses it (not on the
        zero-median branch).
    """

    nonfinite: np.ndarray
    rows: np.ndarray
    norms: np.ndarray
    counts: np.ndarray
    coordinates: np.ndarray
    similarity: Callable[[], tuple[np.ndarray, np.ndarray]] | None = None


def numpy_statistics(
    p: Any, coordinates: np.ndarray, similarity: str | None, reference: np.ndarray | None
) -> RowStatistics:
    """The statistics of a prepared NumPy input ``p`` (:class:`robustagg._validation.Prepared`),
    from the fused kernels: one pass for the norms and the sign counts, with the variants' dot
    products with (or distances to) a checked ``reference`` fused in."""
    dots = sq = None
    if similarity is not None and reference is not None:
        distance = similarity == "distance"
        # one row per parallel task: rows are independent (groups of 4 left a thread idle at
        # the end: 13 groups on 2 threads)
        norms, counts, sims = kernels.norms_signs_and_similarity(
            p.G, p.rows, coordinates, reference, distance, 1
        )
        dots, sq = (None, sims) if distance else (sims, None)
    else:
        norms, counts = kernels.norms_and_sign_counts(p.G, p.rows, coordinates)

    def similarity_feature() -> tuple[np.ndarray, np.ndarray]:
        return _similarity_feature(similarity, p.G, p.rows, norms, reference, dots, sq)

    return RowStatistics(
        p.nonfinite, p.rows, norms, counts, coordinates, None if similarity is None else similarity_feature
    )


def _raw_similarity_to_reference(
    similarity: str, G: np.ndarray, rows: np.ndarray, norms: np.ndarray, ref: np.ndarray, dots: Any, sq: Any
) -> np.ndarray:
    """cos(g_i, ref) or |g_i - ref| per row, from the fused pass's ``dots`` / ``sq`` when given."""
    if (dots if similarity == "cosine" else sq) is None:
        dots, sq = kernels.dots_with(G, rows, ref)
    if similarity != "cosine":
        return np.sqrt(sq)
    denom = norms * float(np.sqrt(kernels.sq_norm(ref)))
    return np.divide(dots, denom, out=np.zeros(rows.size), where=denom > 0)


def _raw_pairwise_similarity(
    similarity: str, G: np.ndarray, rows: np.ndarray, norms: np.ndarray
) -> np.ndarray:
    """Each row's median over j != i of cos(g_i, g_j) or |g_i - g_j|."""
    m = rows.size
    if m == 1:
        return np.array([1.0 if similarity == "cosine" else 0.0])
    # (m, m) float64 arrays of our own, turned into cosines in place and reduced to row medians
    # through one row buffer: no further (m, m) temporaries
    if similarity != "cosine":
        return kernels.offdiag_row_medians(kernels.pairwise_sq_distances(G, rows), True)
    if m * m * G.shape[1] <= EXACT_GRAM_MAX:
        cos = kernels.cosines_in_place(kernels.gram_and_sq_distances(G, rows)[0], norms, False)
    else:
        # the Gram through the shared BLAS distances (block-centred, float64 accumulation, near
        # pairs recomputed directly) and the exact norms: <g_i, g_j> = (|g_i|^2 + |g_j|^2 -
        # |g_i - g_j|^2) / 2
        cos = kernels.cosines_in_place(kernels.pairwise_sq_distances(G, rows), norms, True)
    return kernels.offdiag_row_medians(cos, False)


def _similarity_feature(
    similarity: str, G: np.ndarray, rows: np.ndarray, norms: np.ndarray, ref: Any, dots: Any, sq: Any
) -> tuple[np.ndarray, np.ndarray]:
    """The raw similarity per row and the feature put on the sign features' scale.

    cosine:   s_i = cos(g_i, ref) (or the median over j != i of cos(g_i, g_j));
              feature = clip(s, 0, med(s)) / (5 med(s)), all 0 when med(s) <= 0.
    distance: s_i = |g_i - ref| (or the median over j != i of |g_i - g_j|);
              feature = 0.2 * [s_i >= 1.1 med(s)].
    """
    if ref is not None:
        raw = _raw_similarity_to_reference(similarity, G, rows, norms, ref, dots, sq)
    else:
        raw = _raw_pairwise_similarity(similarity, G, rows, norms)
    med = float(np.median(raw))
    if similarity == "cosine":
        feature = np.clip(raw, 0.0, med) / (5.0 * med) if med > 0 else np.zeros(rows.size)
    else:
        feature = 0.2 * (raw >= 1.1 * med).astype(np.float64)
    return raw, feature


# --------------------------------------------------------------------------------------------
# 3. decision


@dataclass(frozen=True)
class Decision:
    """SignGuard's decision over the m finite rows of :class:`RowStatistics`.

    ``kept`` is S (``S1 ∩ S2``, or S1 when that is empty: ``fallback``), ``weights`` the
    clipping factors ``min(1, M/|g_i|)`` of the kept rows (ones without clipping). When
    ``zero_median`` (M = 0: at least half of the rows are zero) the aggregate is the zero
    vector, the zero rows are reported as kept and no clustering ran.
    """

    median_norm: float
    S1: np.ndarray
    S2: np.ndarray
    kept: np.ndarray
    weights: np.ndarray
    fallback: bool = False
    features: np.ndarray | None = None
    labels: np.ndarray | None = None
    bandwidth: float | None = None
    similarity: np.ndarray | None = None
    zero_median: bool = False


def _sign_clusters(counts: np.ndarray, k: int, extra: np.ndarray | None, o: SignGuardOptions) -> tuple:
    """S2 (the largest cluster of the sign features, plus the variants' ``extra`` column), the
    features, the labels and the Mean-Shift bandwidth (None for k-means)."""
    features = counts.astype(np.float64) / k
    if o.feature_scaling == "max":
        col_max = features.max(axis=0)
        features = features / np.where(col_max > 0, col_max, 1.0)
    if extra is not None:
        features = np.column_stack([features, extra])
    bandwidth = None
    if o.clustering == "meanshift":
        bandwidth = estimate_bandwidth(features, 0.5)
        labels = mean_shift(features, bandwidth)
    else:
        labels = kmeans(features, 2, rng=o.rng)
    return largest_cluster(labels), features, labels, bandwidth


def decide(stats: RowStatistics, o: SignGuardOptions) -> Decision:
    """The decision from the statistics and the checked options ``o`` (``o.rng`` is the
    Generator that drew the coordinates; it draws the k-means starts)."""
    norms = stats.norms
    m = norms.size
    M = float(np.median(norms))
    everyone = np.ones(m, dtype=bool)
    if M == 0.0:
        zero = norms == 0.0
        return Decision(M, zero, everyone, zero, np.ones(int(zero.sum())), zero_median=True)
    if o.norm_filter:
        ratio = norms / M
        S1 = (ratio >= o.lower) & (ratio <= o.upper)
    else:
        S1 = everyone
    raw = extra = features = labels = bandwidth = None
    S2 = everyone
    if o.sign_clustering:
        if stats.similarity is not None:
            raw, extra = stats.similarity()
        S2, features, labels, bandwidth = _sign_clusters(stats.counts, stats.coordinates.size, extra, o)
    S = S1 & S2
    fallback = not bool(S.any())
    if fallback:
        S = S1
    if o.clipping:
        kept_norms = norms[S]
        weights = np.minimum(
            1.0, np.divide(M, kept_norms, out=np.full(kept_norms.shape, np.inf), where=kept_norms > 0)
        )
    else:
        weights = np.ones(int(S.sum()))
    return Decision(M, S1, S2, S, weights, fallback, features, labels, bandwidth, raw)


def _over_n(stats: RowStatistics, values: np.ndarray, fill: float = np.nan) -> np.ndarray:
    """Per-row values over the finite rows as an array over all n rows (``fill`` elsewhere)."""
    values = np.asarray(values)
    n = stats.nonfinite.size
    out = np.full((n,) + values.shape[1:], fill, dtype=np.result_type(values, np.float64))
    out[stats.rows] = values
    return out


def _mask_over_n(stats: RowStatistics, mask: np.ndarray) -> np.ndarray:
    out = np.zeros(stats.nonfinite.size, dtype=bool)
    out[stats.rows] = mask
    return out


def diagnostics(rule: str, stats: RowStatistics, decision: Decision, sign_clustering: bool) -> Diagnostics:
    """The rule's :class:`~robustagg.Diagnostics` over the n input rows (module docstring of
    :mod:`robustagg.rules.signguard` for the fields)."""
    labels = None
    if decision.labels is not None:
        labels = np.full(stats.nonfinite.size, -1, dtype=np.int64)
        labels[stats.rows] = decision.labels
    weights = np.zeros(stats.rows.size)
    weights[decision.kept] = decision.weights
    return Diagnostics(
        rule,
        kept=_mask_over_n(stats, decision.kept),
        nonfinite=stats.nonfinite.copy(),
        norms=_over_n(stats, stats.norms),
        median_norm=decision.median_norm,
        coordinates=stats.coordinates if sign_clustering else None,
        S1=_mask_over_n(stats, decision.S1),
        S2=_mask_over_n(stats, decision.S2),
        features=None if decision.features is None else _over_n(stats, decision.features),
        labels=labels,
        bandwidth=decision.bandwidth,
        similarity=None if decision.similarity is None else _over_n(stats, decision.similarity),
        fallback=decision.fallback,
        weights=_over_n(stats, weights, fill=0.0),
    )


# --------------------------------------------------------------------------------------------
# 4. average


def average_kept_rows(
    rule: str, aggregator: Any, G: np.ndarray, rows: np.ndarray, weights: np.ndarray, aggregator_options: dict
) -> np.ndarray:
    """Average the clipped kept rows ``weights[r] * G[rows[r]]`` of ``G`` (a matrix or a column
    block of one) with the final aggregator; a callable's result must have shape (d,)."""
    m = rows.size
    if isinstance(aggregator, str) and aggregator == "mean":
        # the float64 sum times 1/m, rounded once to G's dtype (as a float64 result and astype)
        return kernels.scaled_column_sum(G, rows, np.ascontiguousarray(weights, dtype=np.float64), 1.0 / m)
    X = (G[rows].astype(np.float64) * weights[:, None]).astype(G.dtype)
    if callable(aggregator):
        out = np.asarray(aggregator(X, **aggregator_options))
    elif aggregator == "median":
        fn = RULES.get("median")
        out = np.asarray(fn(X, **aggregator_options)) if fn is not None else np.median(X, axis=0)
    else:  # trimmed_mean
        opts = dict(aggregator_options)
        f = opts.pop("f", min(int(0.1 * m), (m - 1) // 2))
        fn = RULES.get("trimmed_mean")
        if fn is not None:
            out = np.asarray(fn(X, f, **opts))
        else:
            srt = np.sort(X.astype(np.float64), axis=0)
            out = srt[f : m - f].mean(axis=0)
    if out.shape != (G.shape[1],):
        raise ValueError(f"{rule}: the aggregator returned shape {out.shape}, expected ({G.shape[1]},)")
    return out
