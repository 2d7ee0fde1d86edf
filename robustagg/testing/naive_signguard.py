"""Naive reference SignGuard: NumPy + scikit-learn, written for obviousness, not speed.

The test oracle of :func:`robustagg.signguard` and its variants: give it the same sampled
coordinates (``info.coordinates``) and it must keep the same rows and return the same
aggregate. Mean-Shift is scikit-learn's ``MeanShift`` with ``estimate_bandwidth``.
"""

from __future__ import annotations

import warnings

import numpy as np

__all__ = ["naive_bandwidth", "naive_mean_shift_labels", "naive_signguard"]


def naive_bandwidth(F: np.ndarray, quantile: float = 0.5) -> float:
    """Mean over points of the distance to the max(1, int(n q))-th nearest point, itself counted.

    scikit-learn's ``estimate_bandwidth`` computes the same with ``|x|^2 - 2x.y + |y|^2``
    distances (rounding of ~1e-8); here distances are exact differences.
    """
    from scipy.spatial.distance import cdist

    n = F.shape[0]
    k = max(1, int(n * quantile))
    D = np.sort(cdist(F, F), axis=1)
    return float(np.mean(D[:, k - 1]))


def naive_mean_shift_labels(F: np.ndarray) -> tuple[np.ndarray, float]:
    """scikit-learn's ``MeanShift(bandwidth=bw, bin_seeding=True, cluster_all=False)`` labels
    with ``bw = naive_bandwidth(F, 0.5)``; bandwidth 0 gives one cluster."""
    from sklearn.cluster import MeanShift

    bw = naive_bandwidth(F, 0.5)
    if bw == 0.0:
        return np.zeros(F.shape[0], dtype=np.int64), bw
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "Binning data failed ..." is expected for small n
        labels = MeanShift(bandwidth=bw, bin_seeding=True, cluster_all=False).fit(F).labels_
    return labels.astype(np.int64), bw


def naive_signguard(
    G,
    coordinates,
    *,
    lower: float = 0.1,
    upper: float = 3.0,
    similarity: str | None = None,
    reference=None,
    feature_scaling: str = "none",
    norm_filter: bool = True,
    sign_clustering: bool = True,
    clipping: bool = True,
) -> tuple[np.ndarray, np.ndarray, dict]:
    """SignGuard (the paper's Algorithm 2) step by step on the finite rows of ``G``.

    Parameters
    ----------
    G : numpy.ndarray, shape (n, d)
    coordinates : array of int
        The sampled coordinates whose signs are counted.
    similarity : None, "cosine" or "distance"
        The variant (plain, Sim, Dist).
    reference : numpy.ndarray of shape (d,), optional
        The variants' reference gradient.

    Returns
    -------
    aggregate : numpy.ndarray of float64, shape (d,)
    kept : numpy.ndarray of bool, shape (n,)
    extra : dict
        ``S1``, ``S2``, ``features``, ``labels``, ``bandwidth``, ``median_norm``, ``fallback``.
    """
    G = np.asarray(G, dtype=np.float64)
    n, d = G.shape
    finite = np.array([np.all(np.isfinite(G[i])) for i in range(n)])
    idx = np.flatnonzero(finite)
    X = G[idx]
    m = len(idx)
    norms = np.array([np.sqrt(np.sum(X[i] ** 2)) for i in range(m)])
    M = float(np.median(norms))
    extra: dict = {"median_norm": M}
    kept = np.zeros(n, dtype=bool)
    if M == 0.0:
        kept[idx[norms == 0]] = True
        return np.zeros(d), kept, extra

    S1 = np.array([(lower <= norms[i] / M <= upper) if norm_filter else True for i in range(m)])
    if sign_clustering:
        coords = np.unique(np.asarray(coordinates))
        sub = X[:, coords]
        k = len(coords)
        F = np.stack(
            [(sub > 0).sum(axis=1) / k, (sub == 0).sum(axis=1) / k, (sub < 0).sum(axis=1) / k], axis=1
        )
        if feature_scaling == "max":
            cmax = F.max(axis=0)
            cmax[cmax == 0] = 1.0
            F = F / cmax
        if similarity is not None:
            F = np.column_stack([F, _naive_similarity_feature(X, norms, similarity, reference)])
        labels, bw = naive_mean_shift_labels(F)
        sizes = {lab: int(np.sum(labels == lab)) for lab in set(labels.tolist()) if lab >= 0}
        if sizes:
            best = max(sizes.values())
            winner = min(lab for lab, s in sizes.items() if s == best)  # equal sizes: smallest label
            S2 = labels == winner
        else:
            S2 = np.zeros(m, dtype=bool)
        extra.update(features=F, labels=labels, bandwidth=bw)
    else:
        S2 = np.ones(m, dtype=bool)
    S = S1 & S2
    extra.update(S1=S1, S2=S2, fallback=not S.any())
    if not S.any():
        S = S1
    total = np.zeros(d)
    for i in np.flatnonzero(S):
        w = min(1.0, M / norms[i]) if (clipping and norms[i] > 0) else 1.0
        total += X[i] * w
    kept[idx[S]] = True
    return total / S.sum(), kept, extra


def _naive_similarity_feature(X, norms, similarity, reference):
    m = X.shape[0]

    def cos(a, b, na, nb):
        return float(a @ b) / (na * nb) if na > 0 and nb > 0 else 0.0

    if reference is not None:
        ref = np.asarray(reference, dtype=np.float64)
        if similarity == "cosine":
            s = np.array([cos(X[i], ref, norms[i], np.linalg.norm(ref)) for i in range(m)])
        else:
            s = np.array([np.linalg.norm(X[i] - ref) for i in range(m)])
    elif m == 1:
        s = np.array([1.0 if similarity == "cosine" else 0.0])
    else:
        if similarity == "cosine":
            s = np.array(
                [
                    np.median([cos(X[i], X[j], norms[i], norms[j]) for j in range(m) if j != i])
                    for i in range(m)
                ]
            )
        else:
            s = np.array(
                [np.median([np.linalg.norm(X[i] - X[j]) for j in range(m) if j != i]) for i in range(m)]
            )
    med = float(np.median(s))
    if similarity == "cosine":
        return np.clip(s, 0.0, med) / (5.0 * med) if med > 0 else np.zeros(m)
    return 0.2 * (s >= 1.1 * med)
