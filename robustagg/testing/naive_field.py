"""Slow, obviously-correct reference implementations of the field's rules, pre-aggregators
and attacks, used as test oracles. They work on finite NumPy float64 matrices,
loop over rows, subsets and coordinates, and form d × d covariance matrices where the fast
versions use n × n Gram matrices -- independent routes to the same numbers.

Each follows the convention documented in the fast version's docstring (ties included).
"""

from __future__ import annotations

import itertools
import math

import numpy as np

__all__ = [
    "naive_arc",
    "naive_bucketing",
    "naive_caf",
    "naive_centered_clipping",
    "naive_clipped_clustering",
    "naive_clipping",
    "naive_fang_bounds",
    "naive_fltrust",
    "naive_mda",
    "naive_meamed",
    "naive_mimic_target",
    "naive_monna",
    "naive_nnm",
    "naive_smea",
]


def _f64(G):
    return np.asarray(G, dtype=np.float64)


def naive_clipping(G, threshold=None, quantile=0.5):
    G = _f64(G)
    norms = np.array([math.sqrt(sum(v * v for v in row)) for row in G])
    tau = np.quantile(norms, quantile) if threshold is None else threshold
    out = np.empty_like(G)
    for i, row in enumerate(G):
        out[i] = row * (min(1.0, tau / norms[i]) if norms[i] > 0 else 1.0)
    return out


def naive_nnm(G, f):
    G = _f64(G)
    n = len(G)
    out = np.empty_like(G)
    for i in range(n):
        others = sorted((float(np.linalg.norm(G[j] - G[i])), j) for j in range(n) if j != i)
        chosen = [i] + [j for _, j in others[: n - f - 1]]
        out[i] = np.mean(G[chosen], axis=0)
    return out


def naive_bucketing(G, s, perm):
    """Bucket means for the permutation ``perm`` (bucketing draws ``rng.permutation(n)``)."""
    G = _f64(G)
    return np.array([G[perm[k : k + s]].mean(axis=0) for k in range(0, len(G), s)])


def naive_arc(G, f):
    G = _f64(G)
    n = len(G)
    k = int(math.floor(2 * f * (n - f) / n))
    norms = [float(np.linalg.norm(row)) for row in G]
    if k == 0:
        return G.copy()
    tau = sorted(norms, reverse=True)[k]
    return np.array([row * min(1.0, tau / nr) if nr > 0 else row for row, nr in zip(G, norms, strict=True)])


def naive_centered_clipping(G, tau, n_iters, center=None):
    G = _f64(G)
    v = np.zeros(G.shape[1]) if center is None else _f64(center).copy()
    for _ in range(n_iters):
        step = np.zeros_like(v)
        for row in G:
            diff = row - v
            nr = np.linalg.norm(diff)
            step += diff * (min(1.0, tau / nr) if nr > 0 else 1.0)
        v = v + step / len(G)
    return v


def naive_mda(G, f):
    G = _f64(G)
    n = len(G)
    best, best_set = np.inf, None
    for subset in itertools.combinations(range(n), n - f):
        diam = max((np.linalg.norm(G[i] - G[j]) for i, j in itertools.combinations(subset, 2)), default=0.0)
        if diam < best:
            best, best_set = diam, subset
    return G[list(best_set)].mean(axis=0), best_set


def naive_monna(G, f, reference=None):
    G = _f64(G)
    n = len(G)
    if reference is None:
        sums = np.array([sum(np.linalg.norm(G[i] - G[j]) for j in range(n)) for i in range(n)])
        cand = [i for i in range(n) if sums[i] <= sums.min() * (1 + 1e-10)]
        sq = [sum(float(np.sum((G[i] - G[j]) ** 2)) for j in range(n)) for i in cand]
        reference = cand[int(np.argmin(sq))]
    if isinstance(reference, (int, np.integer)):
        ref_vec, ref_idx = G[reference], int(reference)
    else:
        ref_vec, ref_idx = _f64(reference), -1
    order = sorted((float(np.linalg.norm(G[j] - ref_vec)), j) for j in range(n))
    chosen = [j for _, j in order]
    if ref_idx >= 0:
        chosen = [ref_idx] + [j for j in chosen if j != ref_idx]
    return G[chosen[: n - f]].mean(axis=0)


def _top_eig_cov(X, w):
    """Top eigenpair of the weighted covariance (d × d) and the weighted mean."""
    w = np.asarray(w, dtype=np.float64)
    mu = (w[:, None] * X).sum(axis=0) / w.sum()
    C = sum(wi * np.outer(x - mu, x - mu) for wi, x in zip(w, X, strict=True)) / w.sum()
    lam, V = np.linalg.eigh(C)
    return lam[-1], V[:, -1], mu


def naive_caf(G, f):
    G = _f64(G)
    n = len(G)
    c = np.ones(n)
    best, best_mu = np.inf, None
    first = True
    while first or c.sum() > n - 2 * f:
        first = False
        lam, v, mu = _top_eig_cov(G, c)
        lam = max(lam, 0.0)
        if lam < best:
            best, best_mu = lam, mu
        tau = np.array([float((x - mu) @ v) ** 2 for x in G])
        if lam <= 0 or tau[c > 0].max() <= 0:
            break
        tmax = tau[c > 0].max()
        c = np.array(
            [0.0 if (ci <= 0 or t >= tmax) else ci * (1 - t / tmax) for ci, t in zip(c, tau, strict=True)]
        )
    return best_mu


def naive_smea(G, f):
    G = _f64(G)
    n = len(G)
    best, best_set = np.inf, None
    for subset in itertools.combinations(range(n), n - f):
        lam, _, _ = _top_eig_cov(G[list(subset)], np.ones(n - f))
        if lam < best:
            best, best_set = lam, subset
    return G[list(best_set)].mean(axis=0), best_set


def naive_meamed(G, f):
    """Per coordinate, the mean of the n - f values closest to the median (ties: smaller value)."""
    G = _f64(G)
    n, d = G.shape
    out = np.empty(d)
    for j in range(d):
        col = list(G[:, j])
        med = float(np.median(col))
        ranked = sorted(col, key=lambda v: (abs(v - med), v))
        out[j] = sum(ranked[: n - f]) / (n - f)
    return out


def naive_fltrust(G, root):
    G, root = _f64(G), _f64(root)
    r = np.linalg.norm(root)
    num, den = np.zeros(G.shape[1]), 0.0
    for row in G:
        nr = np.linalg.norm(row)
        ts = max(0.0, float(row @ root) / (nr * r)) if nr > 0 and r > 0 else 0.0
        if ts > 0:
            num += ts * row * (r / nr)
            den += ts
    return num / den if den > 0 else np.zeros(G.shape[1])


def naive_clipped_clustering(G, threshold=None):
    """Clip to the median norm, agglomerative clustering (average linkage, cosine distance)
    with scikit-learn, mean of the clipped rows of the larger cluster (equal sizes: the tighter
    cluster, then the cluster of the lowest row index)."""
    from sklearn.cluster import AgglomerativeClustering

    G = _f64(G)
    n = len(G)
    norms = np.linalg.norm(G, axis=1)
    tau = np.median(norms) if threshold is None else threshold
    clipped = np.array(
        [row * min(1.0, tau / nr) if nr > 0 else row for row, nr in zip(G, norms, strict=True)]
    )
    if n < 3:
        return clipped.mean(axis=0), np.ones(n, dtype=bool)
    D = np.zeros((n, n))
    for i in range(n):
        for j in range(n):
            if norms[i] > 0 and norms[j] > 0:
                D[i, j] = 1.0 - float(G[i] @ G[j]) / (norms[i] * norms[j])
            else:
                D[i, j] = 1.0
        D[i, i] = 0.0
    labels = AgglomerativeClustering(n_clusters=2, metric="precomputed", linkage="average").fit(D).labels_
    sizes = [np.sum(labels == 0), np.sum(labels == 1)]
    if sizes[0] != sizes[1]:
        big = int(np.argmax(sizes))
    else:  # equal sizes: the tighter cluster, then the one holding the lowest index
        spread = [D[np.ix_(labels == c, labels == c)].mean() for c in (0, 1)]
        big = int(np.argmin(spread)) if spread[0] != spread[1] else int(labels[0])
    keep = labels == big
    return clipped[keep].mean(axis=0), keep


def naive_fang_bounds(G, byzantine, b=2.0, benign_only=False):
    """Per coordinate the interval [lo, hi] Fang's Byzantine values are drawn from."""
    G = _f64(G)
    ref = G[~np.asarray(byzantine)] if benign_only else G
    lo, hi = np.empty(G.shape[1]), np.empty(G.shape[1])
    for j in range(G.shape[1]):
        mu, gmin, gmax = ref[:, j].mean(), ref[:, j].min(), ref[:, j].max()
        if mu >= 0:
            lo[j], hi[j] = (gmin / b, gmin) if gmin > 0 else (b * gmin, gmin)
        else:
            lo[j], hi[j] = (gmax, b * gmax) if gmax > 0 else (gmax, gmax / b)
    return lo, hi


def naive_mimic_target(G, byzantine):
    """The benign row of largest |<g_i - mu, z>|, z the top principal direction (SVD)."""
    G = _f64(G)
    benign = np.flatnonzero(~np.asarray(byzantine))
    X = G[benign] - G[benign].mean(axis=0)
    _, _, Vt = np.linalg.svd(X, full_matrices=False)
    scores = np.abs(X @ Vt[0])
    return int(benign[int(np.flatnonzero(scores >= scores.max() * (1.0 - 1e-9))[0])])
