"""SignGuard (Xu et al., "Byzantine-robust Federated Learning through Collaborative Malicious
Gradient Filtering", the paper's Algorithm 2) and its variants SignGuard-Sim and SignGuard-Dist.

Per round, on the (n, d) matrix G of client gradients:

1. **Norm filter.** ``M = median_i |g_i|`` (NumPy's median: the mean of the two middle
   values for even n); ``S1 = {i : L <= |g_i| / M <= R}`` (inclusive, L = 0.1, R = 3.0).
2. **Sign features.** ``k = max(1, round(fraction * d))`` coordinates drawn uniformly without
   replacement (or a contiguous random window); per row the fractions of positive, zero and
   negative entries there. SignGuard-Sim / -Dist append one similarity feature.
3. **Clustering.** Flat-kernel Mean-Shift (scikit-learn's ``MeanShift(bin_seeding=True,
   cluster_all=False)`` with ``estimate_bandwidth(F, quantile=0.5)``, reimplemented in Numba:
   :mod:`robustagg.clustering`) or 2-means; ``S2`` = the largest cluster.
4. **Aggregation.** ``S = S1 ∩ S2``; output ``(1/|S|) Σ_{i∈S} g_i · min(1, M/|g_i|)``.

Non-finite rows are excluded first (the library's policy) and everything above runs on the
remaining rows. See ``docs/signguard.md`` for the conventions, edge cases and measured
selection rates.
"""

from __future__ import annotations

import numbers
from collections.abc import Callable
from typing import Any

import numpy as np

from .._array import to_numpy
from .._lazy import LazyModule
from .._registry import RULES, register_rule
from .._thresholds import SIGNGUARD_EXACT_GRAM_MAX
from .._validation import check_choice, check_real, check_rng, prepare
from ..clustering import estimate_bandwidth as _estimate_bandwidth
from ..clustering import kmeans, largest_cluster, mean_shift

kernels = LazyModule("robustagg.kernels", globals(), "kernels")  # imported at the first call

__all__ = ["SignGuard", "signguard", "signguard_dist", "signguard_sim"]

_CLUSTERINGS = ("meanshift", "kmeans")
_SCALINGS = ("none", "max")
_COORDINATES = ("random", "window")
_AGGREGATORS = ("mean", "trimmed_mean", "median")
# SignGuard-Sim without a reference: up to this many m * m * d the Gram matrix is summed directly
# in float64 (exact to rounding; ~10-20 ms at the limit); above it, through the BLAS pairwise
# distances (Gram-bound; cosines within ~1e-7 of the direct sums for float32 input)
_EXACT_GRAM_MAX = SIGNGUARD_EXACT_GRAM_MAX


def _check_bool(value: Any, rule: str, name: str) -> bool:
    if not isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{rule}: argument {name!r} must be a bool, got {value!r}")
    return bool(value)


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


def _sample_coordinates(
    rule: str, d: int, coordinates: Any, fraction: float, gen: np.random.Generator
) -> np.ndarray:
    """Sorted int64 indices of the coordinates whose signs are counted."""
    if isinstance(coordinates, str):
        check_choice(coordinates, _COORDINATES, rule=rule, name="coordinates")
        k = max(1, int(round(fraction * d)))
        k = min(k, d)
        if coordinates == "random":
            # Floyd's algorithm: k bounded draws (step q uniform on [0, d - k + q]) instead of
            # Generator.choice's partial shuffle of an arange(d) (~7 ms at d = 10^6) and a sort
            return kernels.floyd_sample(d, _floyd_draws(gen, d, k))
        start = int(gen.integers(0, d - k + 1))
        return np.arange(start, start + k, dtype=np.int64)
    idx = np.asarray(coordinates)
    if idx.ndim != 1 or idx.size == 0 or idx.dtype.kind not in "iu":
        raise ValueError(
            f"{rule}: argument 'coordinates' must be 'random', 'window' or a non-empty 1-D array of "
            f"integer column indices, got {coordinates!r}"
        )
    idx = np.unique(idx.astype(np.int64))
    if idx[0] < 0 or idx[-1] >= d:
        raise ValueError(
            f"{rule}: argument 'coordinates' holds indices outside [0, {d}): {idx[[0, -1]].tolist()}"
        )
    return idx


def _check_reference(rule: str, reference: Any, d: int) -> np.ndarray:
    """The reference gradient as a contiguous (d,) NumPy array (finite): float32 stays float32
    (the kernels widen each value to float64 exactly, so the sums are the same as on a float64
    copy, and a float32 reference costs no 2d-byte conversion per call), anything else is
    float64."""
    ref, _ = to_numpy(reference, rule=rule, name="reference", ndim=1)
    if ref.shape[0] != d:
        raise ValueError(f"{rule}: argument 'reference' must have length d = {d}, got {ref.shape[0]}")
    if not np.isfinite(ref).all():
        raise ValueError(f"{rule}: argument 'reference' holds NaN or Inf")
    return np.ascontiguousarray(ref, dtype=np.float32 if ref.dtype == np.float32 else np.float64)


def _similarity_feature(
    rule: str,
    similarity: str,
    G: np.ndarray,
    rows: np.ndarray,
    norms: np.ndarray,
    ref: np.ndarray | None,
    dots: np.ndarray | None = None,
    sq: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """The raw similarity per row and the feature put on the sign features' scale.

    cosine:   s_i = cos(g_i, ref) (or the median over j != i of cos(g_i, g_j));
              feature = clip(s, 0, med(s)) / (5 med(s)), all 0 when med(s) <= 0.
    distance: s_i = |g_i - ref| (or the median over j != i of |g_i - g_j|);
              feature = 0.2 * [s_i >= 1.1 med(s)].

    With a reference (checked by ``_check_reference``), ``dots`` (cosine) or ``sq`` (distance)
    are the rows' dot products with it or squared distances to it from the fused norm pass.
    """
    m = rows.size
    if ref is not None:
        if (dots if similarity == "cosine" else sq) is None:
            dots, sq = kernels.dots_with(G, rows, ref)
        ref_norm = float(np.sqrt(kernels.sq_norm(ref)))
        if similarity == "cosine":
            denom = norms * ref_norm
            raw = np.divide(dots, denom, out=np.zeros(m), where=denom > 0)
        else:
            raw = np.sqrt(sq)
    else:
        if m == 1:
            raw = np.array([1.0 if similarity == "cosine" else 0.0])
        else:
            # (m, m) float64 arrays of our own, turned into cosines in place and reduced to row
            # medians through one row buffer: no further (m, m) temporaries
            if similarity == "cosine":
                if m * m * G.shape[1] <= _EXACT_GRAM_MAX:
                    cos = kernels.cosines_in_place(kernels.gram_and_sq_distances(G, rows)[0], norms, False)
                else:
                    # the Gram through the shared BLAS distances (block-centred, float64
                    # accumulation, near pairs recomputed directly) and the exact norms:
                    # <g_i, g_j> = (|g_i|^2 + |g_j|^2 - |g_i - g_j|^2) / 2
                    cos = kernels.cosines_in_place(kernels.pairwise_sq_distances(G, rows), norms, True)
                raw = kernels.offdiag_row_medians(cos, False)
            else:
                raw = kernels.offdiag_row_medians(kernels.pairwise_sq_distances(G, rows), True)
    med = float(np.median(raw))
    if similarity == "cosine":
        feature = np.clip(raw, 0.0, med) / (5.0 * med) if med > 0 else np.zeros(m)
    else:
        feature = 0.2 * (raw >= 1.1 * med).astype(np.float64)
    return raw, feature


def _final_average(
    rule: str, aggregator: Any, G: np.ndarray, rows: np.ndarray, weights: np.ndarray, aggregator_options: dict
) -> np.ndarray:
    """Average the clipped kept rows ``weights[r] * G[rows[r]]``."""
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


def _decide(
    norms: np.ndarray,
    M: float,
    counts: np.ndarray,
    k: int,
    extra: np.ndarray | None,
    *,
    lower: float,
    upper: float,
    norm_filter: bool,
    sign_clustering: bool,
    clipping: bool,
    feature_scaling: str,
    clustering: str,
    gen: np.random.Generator,
):
    """SignGuard's decision from the per-row norms (median ``M > 0``) and the sign counts on
    ``k`` sampled coordinates, plus an optional extra feature column (Sim/Dist): shared by the
    NumPy rule and its Dask twin, which compute norms and counts in their own passes.

    Returns ``S1, S2, S, fallback, features, labels, bandwidth, weights`` (masks over the rows,
    the clipping weights of the kept rows ``S``).
    """
    m = norms.size
    if norm_filter:
        ratio = norms / M
        S1 = (ratio >= lower) & (ratio <= upper)
    else:
        S1 = np.ones(m, dtype=bool)

    features = labels = bandwidth = None
    if sign_clustering:
        features = counts.astype(np.float64) / k
        if feature_scaling == "max":
            col_max = features.max(axis=0)
            features = features / np.where(col_max > 0, col_max, 1.0)
        if extra is not None:
            features = np.column_stack([features, extra])
        if clustering == "meanshift":
            bandwidth = _estimate_bandwidth(features, 0.5)
            labels = mean_shift(features, bandwidth)
        else:
            labels = kmeans(features, 2, rng=gen)
        S2 = largest_cluster(labels)
    else:
        S2 = np.ones(m, dtype=bool)

    S = S1 & S2
    fallback = not bool(S.any())
    if fallback:
        S = S1
    if clipping:
        kept_norms = norms[S]
        weights = np.minimum(
            1.0, np.divide(M, kept_norms, out=np.full(kept_norms.shape, np.inf), where=kept_norms > 0)
        )
    else:
        weights = np.ones(int(S.sum()))
    return S1, S2, S, fallback, features, labels, bandwidth, weights


def _run(
    rule: str,
    grads: Any,
    similarity: str | None,
    reference: Any,
    *,
    lower: float,
    upper: float,
    coordinate_fraction: float,
    coordinates: Any,
    feature_scaling: str,
    clustering: str,
    aggregator: Any,
    aggregator_options: dict | None,
    norm_filter: bool,
    sign_clustering: bool,
    clipping: bool,
    rng: Any,
    nonfinite: str,
    return_info: bool,
):
    """SignGuard on NumPy: returns (Prepared, NumPy result, Diagnostics)."""
    p = prepare(rule, grads, nonfinite=nonfinite, return_info=return_info)
    lower = check_real(lower, rule=rule, name="lower", low=0.0)
    upper = check_real(upper, rule=rule, name="upper", low=lower)
    fraction = check_real(
        coordinate_fraction, rule=rule, name="coordinate_fraction", low=0.0, high=1.0, low_open=True
    )
    check_choice(feature_scaling, _SCALINGS, rule=rule, name="feature_scaling")
    check_choice(clustering, _CLUSTERINGS, rule=rule, name="clustering")
    if not callable(aggregator):
        check_choice(aggregator, _AGGREGATORS, rule=rule, name="aggregator")
    aggregator_options = {} if aggregator_options is None else dict(aggregator_options)
    norm_filter = _check_bool(norm_filter, rule, "norm_filter")
    sign_clustering = _check_bool(sign_clustering, rule, "sign_clustering")
    clipping = _check_bool(clipping, rule, "clipping")
    gen = check_rng(rng, rule=rule)

    if sign_clustering:
        coords = _sample_coordinates(rule, p.d, coordinates, fraction, gen)
    else:
        coords = np.empty(0, dtype=np.int64)
    ref = dots = sq = None
    if sign_clustering and similarity is not None and reference is not None:
        # the variants' reference: dot products and distances fused into the norm pass
        ref = _check_reference(rule, reference, p.d)
        distance = similarity == "distance"
        # one row per parallel task: rows are independent (groups of 4 left a thread idle at
        # the end: 13 groups on 2 threads)
        norms, counts, sims = kernels.norms_signs_and_similarity(p.G, p.rows, coords, ref, distance, 1)
        dots, sq = (None, sims) if distance else (sims, None)
    else:
        norms, counts = kernels.norms_and_sign_counts(p.G, p.rows, coords)
    G, rows, m = p.G, p.rows, p.m
    M = float(np.median(norms))

    details: dict[str, Any] = {
        "norms": p.expand_values(norms),
        "median_norm": M,
        "coordinates": coords if sign_clustering else None,
    }
    if M == 0.0:
        # at least half of the rows are zero: the output is the zero vector (the mean of the
        # zero rows, which are reported as kept)
        zero = norms == 0.0
        info = p.diagnostics(
            zero,
            **details,
            S1=p.expand(zero),
            S2=p.expand(np.ones(m, dtype=bool)),
            features=None,
            labels=None,
            bandwidth=None,
            similarity=None,
            fallback=False,
            weights=p.expand_values(zero.astype(np.float64), fill=0.0),
        )
        return p, np.zeros(p.d, dtype=G.dtype), info

    raw_similarity = extra = None
    if sign_clustering and similarity is not None:
        raw_similarity, extra = _similarity_feature(rule, similarity, G, rows, norms, ref, dots, sq)
    S1, S2, S, fallback, features, labels, bandwidth, weights = _decide(
        norms, M, counts, coords.size, extra, lower=lower, upper=upper, norm_filter=norm_filter,
        sign_clustering=sign_clustering, clipping=clipping, feature_scaling=feature_scaling,
        clustering=clustering, gen=gen,
    )  # fmt: skip
    kept_rows = rows[S]
    result = _final_average(rule, aggregator, G, kept_rows, weights, aggregator_options)

    all_weights = np.zeros(m)
    all_weights[S] = weights
    info = p.diagnostics(
        S,
        **details,
        S1=p.expand(S1),
        S2=p.expand(S2),
        features=None if features is None else p.expand_values(features),
        labels=None if labels is None else _expand_labels(p, labels),
        bandwidth=bandwidth,
        similarity=None if raw_similarity is None else p.expand_values(raw_similarity),
        fallback=fallback,
        weights=p.expand_values(all_weights, fill=0.0),
    )
    return p, result, info


def _expand_labels(p, labels: np.ndarray) -> np.ndarray:
    out = np.full(p.n, -1, dtype=np.int64)
    out[p.rows] = labels
    return out


_PARAMS_DOC = """
    Parameters
    ----------
    grads : array_like, shape (n, d)
        Client gradients: a NumPy/PyTorch/JAX/array-API array or a sequence of n 1-D arrays.
    lower, upper : float, default 0.1 and 3.0
        The norm filter's bounds L and R: row i passes when ``L <= |g_i| / M <= R`` (inclusive).
    coordinate_fraction : float in (0, 1], default 0.1
        Share of coordinates whose signs are counted: ``k = max(1, round(fraction * d))``
        (Python's ``round``, half to even).
    coordinates : {"random", "window"} or array of int, default "random"
        ``"random"``: k coordinates drawn uniformly without replacement (the paper);
        ``"window"``: k contiguous coordinates at a random offset (the authors' code);
        an array: exactly these column indices (duplicates removed).
    feature_scaling : {"none", "max"}, default "none"
        ``"max"`` divides each sign-feature column by its maximum over the rows (the authors'
        code; a column that is all zero is left as it is). The similarity feature of the
        variants is not rescaled.
    clustering : {"meanshift", "kmeans"}, default "meanshift"
        Mean-Shift as scikit-learn's ``MeanShift(bandwidth=estimate_bandwidth(F, quantile=0.5),
        bin_seeding=True, cluster_all=False)`` (orphans belong to no cluster; a zero bandwidth,
        e.g. n <= 3 or identical features, makes one cluster), or 2-means. S2 is the largest
        cluster; equal sizes go to the cluster with the densest center (smallest label).
    aggregator : {"mean", "trimmed_mean", "median"} or callable, default "mean"
        Final averaging of the clipped kept rows ``g_i · min(1, M/|g_i|)``. A callable gets the
        (|S|, d) NumPy matrix of those rows (plus ``aggregator_options``) and returns (d,).
        ``"trimmed_mean"`` trims ``f`` rows per side, default ``min(floor(0.1 |S|), (|S|-1)//2)``.
    aggregator_options : dict, optional
        Keyword arguments for the aggregator (e.g. ``{"f": 2}`` for the trimmed mean).
    norm_filter, sign_clustering, clipping : bool, default True
        Ablation switches (the paper's Table III): without the norm filter S1 is every row;
        without sign clustering S2 is every row (no coordinates are drawn); without clipping
        the kept rows are averaged as they are.
    rng : None, int or numpy.random.Generator
        Draws the coordinates (and the k-means starts). The same seed gives the same output.
    nonfinite : {"exclude", "raise"}, default "exclude"
        Rows holding NaN/±Inf are excluded first (and reported) or make the call raise.
    return_info : bool, default False
        Also return a :class:`~robustagg.Diagnostics` with ``kept`` (S, the rows averaged),
        ``S1``, ``S2`` (masks over the n rows), ``norms``, ``median_norm``, ``features``,
        ``labels`` (-1: orphan or excluded row), ``bandwidth``, ``coordinates`` (the sampled
        column indices), ``similarity`` (the variants' raw similarity), ``weights`` (the
        clipping factors, 0 for rows not kept) and ``fallback``.

    Returns
    -------
    aggregate : array, shape (d,)
        Same array library, device and float dtype as ``grads``.
    info : Diagnostics
        Only with ``return_info=True``.

    Notes
    -----
    * **Empty S.** When ``S1 ∩ S2`` is empty the rows of S1 are averaged instead
      (``info.fallback`` is True). S1 is never empty when M > 0: the median row (for even n
      the upper middle row, whose ratio lies in [1, 2]) always passes.
    * **M = 0.** At least half of the rows are zero: the output is the zero vector and the
      zero rows are reported as kept.
    * **Small n.** For n <= 3 the bandwidth is 0 (the nearest point counting the point itself),
      so the clustering keeps everyone and only the norm filter and clipping act.
"""


def signguard(
    grads: Any,
    *,
    lower: float = 0.1,
    upper: float = 3.0,
    coordinate_fraction: float = 0.1,
    coordinates: Any = "random",
    feature_scaling: str = "none",
    clustering: str = "meanshift",
    aggregator: str | Callable[..., Any] = "mean",
    aggregator_options: dict | None = None,
    norm_filter: bool = True,
    sign_clustering: bool = True,
    clipping: bool = True,
    rng: Any = None,
    nonfinite: str = "exclude",
    return_info: bool = False,
) -> Any:
    p, result, info = _run(
        "signguard", grads, None, None,
        lower=lower, upper=upper, coordinate_fraction=coordinate_fraction, coordinates=coordinates,
        feature_scaling=feature_scaling, clustering=clustering, aggregator=aggregator,
        aggregator_options=aggregator_options, norm_filter=norm_filter, sign_clustering=sign_clustering,
        clipping=clipping, rng=rng, nonfinite=nonfinite, return_info=return_info,
    )  # fmt: skip
    return p.finish(result, info, return_info)


def signguard_sim(
    grads: Any,
    *,
    reference: Any = None,
    lower: float = 0.1,
    upper: float = 3.0,
    coordinate_fraction: float = 0.1,
    coordinates: Any = "random",
    feature_scaling: str = "none",
    clustering: str = "meanshift",
    aggregator: str | Callable[..., Any] = "mean",
    aggregator_options: dict | None = None,
    norm_filter: bool = True,
    sign_clustering: bool = True,
    clipping: bool = True,
    rng: Any = None,
    nonfinite: str = "exclude",
    return_info: bool = False,
) -> Any:
    p, result, info = _run(
        "signguard_sim", grads, "cosine", reference,
        lower=lower, upper=upper, coordinate_fraction=coordinate_fraction, coordinates=coordinates,
        feature_scaling=feature_scaling, clustering=clustering, aggregator=aggregator,
        aggregator_options=aggregator_options, norm_filter=norm_filter, sign_clustering=sign_clustering,
        clipping=clipping, rng=rng, nonfinite=nonfinite, return_info=return_info,
    )  # fmt: skip
    return p.finish(result, info, return_info)


def signguard_dist(
    grads: Any,
    *,
    reference: Any = None,
    lower: float = 0.1,
    upper: float = 3.0,
    coordinate_fraction: float = 0.1,
    coordinates: Any = "random",
    feature_scaling: str = "none",
    clustering: str = "meanshift",
    aggregator: str | Callable[..., Any] = "mean",
    aggregator_options: dict | None = None,
    norm_filter: bool = True,
    sign_clustering: bool = True,
    clipping: bool = True,
    rng: Any = None,
    nonfinite: str = "exclude",
    return_info: bool = False,
) -> Any:
    p, result, info = _run(
        "signguard_dist", grads, "distance", reference,
        lower=lower, upper=upper, coordinate_fraction=coordinate_fraction, coordinates=coordinates,
        feature_scaling=feature_scaling, clustering=clustering, aggregator=aggregator,
        aggregator_options=aggregator_options, norm_filter=norm_filter, sign_clustering=sign_clustering,
        clipping=clipping, rng=rng, nonfinite=nonfinite, return_info=return_info,
    )  # fmt: skip
    return p.finish(result, info, return_info)


signguard.__doc__ = (
    r"""SignGuard: norm filter ∩ sign-statistics clustering, then the clipped mean (Algorithm 2).

    .. math::
        M = \operatorname{med}_i \lVert g_i\rVert,\quad
        S_1 = \{i : L \le \lVert g_i\rVert / M \le R\},\quad
        S_2 = \text{largest Mean-Shift cluster of the sign features},

    .. math::
        \tilde g = \frac{1}{|S|}\sum_{i \in S} g_i \min\!\left(1, \frac{M}{\lVert g_i\rVert}\right),
        \qquad S = S_1 \cap S_2 .

    The sign features of row i are the fractions of positive, zero and negative entries on k
    sampled coordinates. Reference: J. Xu, S.-L. Huang, L. Song, T. Lan, "Byzantine-robust
    Federated Learning through Collaborative Malicious Gradient Filtering", ICDCS 2022.
    Does not need the number of Byzantine clients.
"""
    + _PARAMS_DOC
    + """
    Examples
    --------
    >>> import numpy as np, robustagg
    >>> rng = np.random.default_rng(0)
    >>> G = rng.normal(0.1, 1.0, size=(20, 1000))
    >>> G[:4] = -G[:4]                       # four sign-flipping clients
    >>> out, info = robustagg.signguard(G, rng=0, return_info=True)
    >>> out.shape
    (1000,)
"""
)

_VARIANT_DOC = """
    reference : array_like of shape (d,), optional
        The "correct" gradient the similarity is measured to, usually the previous round's
        aggregate (see :class:`SignGuard`). Without it, row i's similarity is the median of
        its similarities to the other rows (O(n^2 d)).
"""

signguard_sim.__doc__ = r"""SignGuard-Sim: SignGuard with a 4th feature, the cosine similarity to a reference.

    ``s_i = cos(g_i, reference)`` (or the median over j != i of ``cos(g_i, g_j)``), put on the
    sign features' scale as in the authors' code: ``clip(s_i, 0, med(s)) / (5 med(s))``, a
    value in [0, 0.2] (0 for every row when ``med(s) <= 0``). Rows with zero norm have
    similarity 0. Everything else is :func:`signguard`.
""" + _PARAMS_DOC.replace(
    "    Parameters\n    ----------\n", "    Parameters\n    ----------" + _VARIANT_DOC, 1
)

signguard_dist.__doc__ = r"""SignGuard-Dist: SignGuard with a 4th feature, the Euclidean distance to a reference.

    ``s_i = |g_i - reference|`` (or the median over j != i of ``|g_i - g_j|``), put on the sign
    features' scale as in the authors' code: ``0.2 * [s_i >= 1.1 med(s)]``. Everything else is
    :func:`signguard`.
""" + _PARAMS_DOC.replace(
    "    Parameters\n    ----------\n", "    Parameters\n    ----------" + _VARIANT_DOC, 1
)


class SignGuard:
    """Stateful SignGuard for training loops: keeps the rng and the previous aggregate.

    Each call aggregates one round. For ``variant="sim"`` / ``"dist"`` the previous round's
    aggregate is the reference of the similarity feature (the first round, and the round after
    :meth:`reset`, uses the pairwise-median reference). The wrapper keeps its own copy of each
    aggregate (``previous``), so modifying the returned array in place does not change the next
    round.

    Parameters
    ----------
    variant : {"plain", "sim", "dist"}, default "plain"
    rng : None, int or numpy.random.Generator
        One generator is created at construction and advanced by every round.
    **options
        Any keyword argument of :func:`signguard` (``lower``, ``upper``, ``clustering``, ...)
        except ``reference``, ``rng`` and ``return_info``. They are validated here, at
        construction, with the messages of :func:`signguard` (naming ``SignGuard``); column
        indices given as ``coordinates`` are checked against d at each call.

    Attributes
    ----------
    previous : numpy.ndarray or None
        A private copy of the last aggregate (in the compute dtype: float32 or float64).
    last_info : Diagnostics or None
        The last call's diagnostics.

    Notes
    -----
    **The gradients' length d** of ``"sim"`` and ``"dist"`` is fixed by the previous round (its
    aggregate is the next reference): a call with another d is a ``ValueError`` naming both;
    :meth:`reset` starts over with any d. ``"plain"`` keeps no state that depends on d.

    **Thread safety.** One instance may be shared by threads: each call reads the state (the
    previous aggregate and the rng), computes and stores the new state under a lock, so N
    concurrent calls leave the same state as the same N calls made one after another in the
    order they took the lock. (The conversion of the input and of the result happen outside the
    lock.)

    **Pickling.** The instance pickles (and copies) with its options, rng and previous
    aggregate; the lock is not pickled, a new one is made on unpickling.

    Examples
    --------
    >>> import numpy as np, robustagg
    >>> agg = robustagg.SignGuard("sim", rng=0)
    >>> G = np.random.default_rng(1).normal(0.1, 1.0, size=(10, 100))
    >>> agg(G).shape
    (100,)
    """

    _VARIANTS = {
        "plain": (None, "signguard"),
        "sim": ("cosine", "signguard_sim"),
        "dist": ("distance", "signguard_dist"),
    }
    _DEFAULTS = dict(
        lower=0.1, upper=3.0, coordinate_fraction=0.1, coordinates="random", feature_scaling="none",
        clustering="meanshift", aggregator="mean", aggregator_options=None, norm_filter=True,
        sign_clustering=True, clipping=True, nonfinite="exclude",
    )  # fmt: skip

    def __init__(self, variant: str = "plain", *, rng: Any = None, **options: Any) -> None:
        import threading

        check_choice(variant, self._VARIANTS, rule="SignGuard", name="variant")
        for bad in ("reference", "return_info", "rng"):
            if bad in options:
                raise TypeError(f"SignGuard: {bad!r} is managed by the wrapper; pass it to the call instead")
        self._opts = self._checked_options(options)
        self.variant = variant
        self.options = dict(options)
        self._seed = rng
        self.rng = check_rng(rng, rule="SignGuard")
        self.previous: np.ndarray | None = None
        self.last_info = None
        self._lock = threading.Lock()

    @classmethod
    def _checked_options(cls, options: dict) -> dict:
        """Every option with its default, each checked as :func:`signguard` checks it."""
        from collections.abc import Mapping

        from .._validation import NONFINITE_POLICIES

        rule = "SignGuard"
        unknown = set(options) - set(cls._DEFAULTS)
        if unknown:
            raise TypeError(
                f"SignGuard: unknown option(s) {sorted(unknown)}; allowed: {sorted(cls._DEFAULTS)}"
            )
        o = {**cls._DEFAULTS, **options}
        lower = check_real(o["lower"], rule=rule, name="lower", low=0.0)
        check_real(o["upper"], rule=rule, name="upper", low=lower)
        check_real(
            o["coordinate_fraction"], rule=rule, name="coordinate_fraction", low=0.0, high=1.0, low_open=True
        )
        coordinates = o["coordinates"]
        if isinstance(coordinates, str):
            check_choice(coordinates, _COORDINATES, rule=rule, name="coordinates")
        else:
            idx = np.asarray(coordinates)
            if idx.ndim != 1 or idx.size == 0 or idx.dtype.kind not in "iu":
                raise ValueError(
                    f"{rule}: argument 'coordinates' must be 'random', 'window' or a non-empty 1-D array of "
                    f"integer column indices, got {coordinates!r}"
                )
            if idx.min() < 0:
                raise ValueError(
                    f"{rule}: argument 'coordinates' holds negative indices ({int(idx.min())}); column "
                    "indices are in [0, d)"
                )
        check_choice(o["feature_scaling"], _SCALINGS, rule=rule, name="feature_scaling")
        check_choice(o["clustering"], _CLUSTERINGS, rule=rule, name="clustering")
        if not callable(o["aggregator"]):
            check_choice(o["aggregator"], _AGGREGATORS, rule=rule, name="aggregator")
        if o["aggregator_options"] is not None and not isinstance(o["aggregator_options"], Mapping):
            raise TypeError(
                f"{rule}: argument 'aggregator_options' must be a dict of keyword arguments or None, "
                f"got {o['aggregator_options']!r}"
            )
        for name in ("norm_filter", "sign_clustering", "clipping"):
            _check_bool(o[name], rule, name)
        check_choice(o["nonfinite"], NONFINITE_POLICIES, rule=rule, name="nonfinite")
        return o

    def __call__(self, grads: Any, *, return_info: bool = False) -> Any:
        """Aggregate one round; remembers the aggregate as the next round's reference.

        Parameters
        ----------
        grads : array_like, shape (n, d)
            Client gradients (for ``"sim"``/``"dist"``, d as in the previous round).
        return_info : bool, default False
            Also return the round's :class:`~robustagg.Diagnostics`.
        """
        similarity, rule = self._VARIANTS[self.variant]
        # converted once, outside the lock: the rule sees this NumPy view, the result goes back
        # to the caller's library and dtype through its context
        G, context = to_numpy(grads, rule=rule, name="grads", ndim=2)
        with self._lock:
            reference = self.previous if similarity is not None else None
            if reference is not None and reference.shape[0] != G.shape[1]:
                raise ValueError(
                    f"SignGuard: the gradients have length d = {G.shape[1]}, but the previous round's "
                    f"had d = {reference.shape[0]} (variant {self.variant!r} measures each row against "
                    "that aggregate); call reset() to start over with the new d, or use a new instance"
                )
            p, result, info = _run(
                rule, G, similarity, reference, **self._opts, rng=self.rng, return_info=return_info
            )
            # a private copy in the aggregate's own dtype: the array handed back (or the tensor made
            # from it) may be scaled in place by the caller, which must not change the next round's
            # reference; a float32 aggregate is widened value by value inside the pass (the same
            # sums as from its float64 copy) and is read at half the bytes
            self.previous = np.array(result, copy=True)
            self.last_info = info
        p.context = context
        return p.finish(result, info, return_info)

    aggregate = __call__

    def reset(self) -> None:
        """Forget the previous aggregate (the next call may have any d); re-seed the rng when it
        was given as an int seed (a fresh one for ``rng=None``)."""
        with self._lock:
            self.previous = None
            self.last_info = None
            if self._seed is None or isinstance(self._seed, numbers.Integral):
                self.rng = check_rng(self._seed, rule="SignGuard")

    def __getstate__(self) -> dict:
        import copy

        with self._lock:  # a state no call is halfway through (the rng is advanced in place)
            state = self.__dict__.copy()
            state["rng"] = copy.deepcopy(self.rng)
        del state["_lock"]  # a lock does not pickle; each copy gets its own
        return state

    def __setstate__(self, state: dict) -> None:
        import threading

        self.__dict__.update(state)
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        opts = ", ".join(f"{k}={v!r}" for k, v in self.options.items())
        return f"SignGuard(variant={self.variant!r}" + (f", {opts})" if opts else ")")


register_rule("signguard", signguard)
register_rule("signguard_sim", signguard_sim)
register_rule("signguard_dist", signguard_dist)
