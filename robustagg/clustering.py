"""Clustering of per-client feature vectors: flat-kernel Mean-Shift (SignGuard's filter), its
bandwidth estimator, and 2-means.

:func:`mean_shift` and :func:`estimate_bandwidth` compute what scikit-learn's
``MeanShift(bandwidth=bw, bin_seeding=True, cluster_all=False)`` and
``estimate_bandwidth(X, quantile=0.5)`` compute, in Numba, without scikit-learn's per-call
overhead (SignGuard clusters every round). scikit-learn is the test oracle
(``tests/test_meanshift.py``).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ._lazy import LazyModule
from ._params import BOOLEAN, SEED, Integer, Optional, Real, check_params

kernels = LazyModule("robustagg.kernels", globals(), "kernels")  # imported at the first call

__all__ = ["estimate_bandwidth", "kmeans", "largest_cluster", "mean_shift"]

# The options, declared once (robustagg._params); the features are checked by _features.
_QUANTILE = Real(low=0.0, high=1.0)
_ESTIMATE_BANDWIDTH = {"quantile": _QUANTILE}
_MEAN_SHIFT = {
    "bandwidth": Optional(Real(low=0.0)),
    "bin_seeding": BOOLEAN,
    "cluster_all": BOOLEAN,
    "max_iter": Integer(low=0),
    "return_centers": BOOLEAN,
}
_KMEANS = {
    "k": Integer(low=1),
    "rng": SEED,
    "n_init": Integer(low=1),
    "max_iter": Integer(low=1),
    "tol": Real(low=0.0),
    "return_centers": BOOLEAN,
}
_TABLES = {"estimate_bandwidth": _ESTIMATE_BANDWIDTH, "mean_shift": _MEAN_SHIFT, "kmeans": _KMEANS}  # by name


def _features(features: Any, rule: str) -> np.ndarray:
    X = np.asarray(features)
    if X.ndim != 2:
        raise ValueError(f"{rule}: argument 'features' must be an (n, p) matrix, got shape {X.shape}")
    if X.shape[0] == 0 or X.shape[1] == 0:
        raise ValueError(
            f"{rule}: argument 'features' must have at least one row and one column, got {X.shape}"
        )
    if X.dtype.kind not in "fiu":
        raise TypeError(f"{rule}: argument 'features' must be real numbers, got dtype {X.dtype}")
    X = np.ascontiguousarray(X, dtype=np.float64)
    if not np.isfinite(X).all():
        raise ValueError(f"{rule}: argument 'features' holds NaN or Inf")
    return X


def estimate_bandwidth(features: Any, quantile: float = 0.5) -> float:
    r"""Mean-Shift bandwidth: the mean over points of the distance to their k-th nearest point.

    .. math:: bw = \frac{1}{n}\sum_{i=1}^{n} \lVert x_i - x_{(k)}(i) \rVert,\qquad
              k = \max(1, \lfloor n \cdot q \rfloor)

    where :math:`x_{(k)}(i)` is the k-th nearest point to :math:`x_i` **counting** :math:`x_i`
    itself (at distance 0) -- scikit-learn's ``estimate_bandwidth(X, quantile=q)``
    (``n_neighbors = int(n * quantile)``, raised to 1). So ``bw = 0`` for n <= 3 at
    ``q = 0.5`` and whenever every point has at least k - 1 exact duplicates.

    Parameters
    ----------
    features : array_like, shape (n, p)
        Finite feature vectors.
    quantile : float in [0, 1], default 0.5
        SignGuard uses 0.5 (scikit-learn's own default is 0.3).

    Returns
    -------
    float
        The bandwidth (>= 0). Distances are exact Euclidean distances; scikit-learn's value
        agrees up to the rounding of its ``|x|^2 - 2x.y + |y|^2`` expansion (it reports about
        1e-8 instead of 0 for some exact duplicates).
    """
    X = _features(features, "estimate_bandwidth")
    q = check_params("estimate_bandwidth", _ESTIMATE_BANDWIDTH, quantile=quantile)["quantile"]
    k = max(1, int(X.shape[0] * q))
    return float(kernels.estimate_bandwidth_kernel(X, k))


def mean_shift(
    features: Any,
    bandwidth: float | None = None,
    *,
    bin_seeding: bool = True,
    cluster_all: bool = False,
    max_iter: int = 300,
    return_centers: bool = False,
) -> Any:
    r"""Flat-kernel Mean-Shift clustering, as scikit-learn's ``MeanShift`` does it.

    Steps (scikit-learn's semantics, reproduced exactly):

    1. **Seeds.** With ``bin_seeding`` each point is binned on a grid of spacing ``bandwidth``
       (``round(x / bandwidth)``, half to even); each distinct bin (in the order of its first
       point, ``min_bin_freq=1``) is a seed at the bin's grid point. If every point has its own
       bin the points themselves are the seeds. Without ``bin_seeding`` the points are the seeds.
    2. **Climb.** Each seed moves to the mean of the points within ``bandwidth`` (distance
       ``<=`` bandwidth) until it moves by ``<= 1e-3 * bandwidth`` or ``max_iter`` moves; its
       *intensity* is the number of points averaged last. A seed with no point within reach
       yields no center.
    3. **De-duplicate.** Centers are ordered by (intensity, coordinates) descending; in that
       order each surviving center removes every other center within ``bandwidth``.
    4. **Label.** Each point takes the nearest surviving center (label = its rank in that
       order, the first on a distance tie); with ``cluster_all=False`` a point farther than
       ``bandwidth`` from every center is an orphan (label -1).

    Labels therefore number clusters by decreasing center intensity: label 0 is the
    densest mode. ``bandwidth = 0`` (e.g. all points equal, or n <= 3 with the default
    estimate) puts every point in cluster 0 (scikit-learn refuses a zero bandwidth).

    Parameters
    ----------
    features : array_like, shape (n, p)
        Finite feature vectors (computed in float64).
    bandwidth : float, optional
        Kernel radius; default :func:`estimate_bandwidth` with ``quantile=0.5`` (SignGuard's
        choice; scikit-learn's own default quantile is 0.3).
    bin_seeding, cluster_all : bool
        As in scikit-learn; SignGuard uses ``bin_seeding=True, cluster_all=False``.
    max_iter : int >= 0, default 300
        As in scikit-learn.
    return_centers : bool, default False
        Also return the (n_clusters, p) centers, in label order.

    Returns
    -------
    labels : numpy.ndarray of int64, shape (n,)
    centers : numpy.ndarray, shape (n_clusters, p)
        Only with ``return_centers=True``.

    Examples
    --------
    >>> import numpy as np
    >>> from robustagg.clustering import mean_shift
    >>> X = np.array([[0.0], [0.1], [0.2], [5.0], [5.1]])
    >>> mean_shift(X, bandwidth=1.0)
    array([0, 0, 0, 1, 1])
    """
    X = _features(features, "mean_shift")
    opts = check_params(
        "mean_shift",
        _MEAN_SHIFT,
        bandwidth=bandwidth,
        bin_seeding=bin_seeding,
        cluster_all=cluster_all,
        max_iter=max_iter,
        return_centers=return_centers,
    )
    bw = estimate_bandwidth(X, 0.5) if opts["bandwidth"] is None else opts["bandwidth"]
    max_iter = opts["max_iter"]
    n = X.shape[0]
    if bw == 0.0:
        labels = np.zeros(n, dtype=np.int64)
        centers = X.mean(axis=0, keepdims=True)
    else:
        seeds = kernels.bin_seeds_kernel(X, bw) if opts["bin_seeding"] else X
        centers, counts = kernels.climb_seeds_kernel(X, seeds, bw, max_iter)
        labels, centers = kernels.merge_centers_kernel(X, centers, counts, bw, opts["cluster_all"])
    return (labels, centers) if return_centers else labels


def kmeans(
    features: Any,
    k: int = 2,
    *,
    rng: Any = None,
    n_init: int = 10,
    max_iter: int = 300,
    tol: float = 1e-10,
    return_centers: bool = False,
) -> Any:
    r"""k-means (Lloyd's algorithm with k-means++ starts), best of ``n_init`` runs by inertia.

    SignGuard's alternative to Mean-Shift (the paper: "if all malicious clients send the same
    attack vector, K-Means with two clusters will suffice"). With fewer than k distinct points,
    k is reduced to their number. Deterministic for a given ``rng``.

    Parameters
    ----------
    features : array_like, shape (n, p)
    k : int, default 2
    rng : None, int or numpy.random.Generator
        Draws the k-means++ starts.
    n_init, max_iter, tol
        Restarts (>= 1), Lloyd iterations per run (>= 1), and the total squared center shift
        below which a run stops (>= 0).
    return_centers : bool, default False

    Returns
    -------
    labels : numpy.ndarray of int64, shape (n,)
        Values in ``0 .. k-1``.
    centers : numpy.ndarray, shape (k, p)
        Only with ``return_centers=True``.
    """
    X = _features(features, "kmeans")
    opts = check_params(
        "kmeans",
        _KMEANS,
        k=k,
        n_init=n_init,
        max_iter=max_iter,
        tol=tol,
        rng=rng,
        return_centers=return_centers,
    )
    k, n_init, max_iter, tol, gen = opts["k"], opts["n_init"], opts["max_iter"], opts["tol"], opts["rng"]
    n_distinct = np.unique(X, axis=0).shape[0]
    k_eff = min(k, n_distinct)
    best = None
    for _ in range(n_init):
        init = _kmeans_plus_plus(X, k_eff, gen)
        labels, centers, inertia = kernels.lloyd_kernel(X, init, max_iter, tol)
        if best is None or inertia < best[2]:
            best = (labels, centers, inertia)
    labels, centers, _ = best
    return (labels, centers) if return_centers else labels


def _kmeans_plus_plus(X: np.ndarray, k: int, gen: np.random.Generator) -> np.ndarray:
    n = X.shape[0]
    centers = np.empty((k, X.shape[1]), dtype=np.float64)
    centers[0] = X[gen.integers(n)]
    d2 = ((X - centers[0]) ** 2).sum(axis=1)
    for c in range(1, k):
        total = d2.sum()
        if total <= 0.0:
            idx = gen.integers(n)
        else:
            idx = int(np.searchsorted(np.cumsum(d2), gen.random() * total, side="right"))
            idx = min(idx, n - 1)
        centers[c] = X[idx]
        d2 = np.minimum(d2, ((X - centers[c]) ** 2).sum(axis=1))
    return centers


def largest_cluster(labels: Any) -> np.ndarray:
    """Boolean mask of the points in the largest cluster; orphans (label < 0) belong to none.

    Ties between equal-size clusters go to the smallest label -- for :func:`mean_shift`
    labels, the cluster whose center has the highest intensity (scikit-learn's center order).
    All orphans give an empty mask.
    """
    labels = np.asarray(labels, dtype=np.int64)
    valid = labels >= 0
    if not valid.any():
        return np.zeros(labels.shape, dtype=bool)
    sizes = np.bincount(labels[valid])
    return labels == int(np.argmax(sizes))
