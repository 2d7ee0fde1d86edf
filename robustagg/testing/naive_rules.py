"""Slow, obviously-correct reference implementations of the classical rules (test oracles).

Plain Python/NumPy loops in float64, written for clarity, not speed. They take an (n, d)
NumPy matrix of **finite** rows (apply the non-finite policy before calling them) and return
float64 results; the conventions are those of the library (docs/conventions.md, Classical rules):

* median: the average of the two middle values for even n;
* Krum: squared distances, ``n - f - 2`` nearest others, ties to the lowest index;
* Multi-Krum: the m lowest scores (ties: lower index), default m = n - f;
* Bulyan: θ = n - 2f rows by repeated Krum with max(r - f - 2, 1) neighbours, then per
  coordinate the mean of the β = θ - 2f values closest to the median (ties: smaller value);
* geometric median: smoothed Weiszfeld from the mean, ε relative to max_i ||g_i - z_0||;
* DnC: the same coordinate draws as :func:`robustagg.dnc` for the same seed.
"""

from __future__ import annotations

import math

import numpy as np

__all__ = [
    "naive_bulyan",
    "naive_dnc",
    "naive_geometric_median",
    "naive_krum",
    "naive_krum_scores",
    "naive_median",
    "naive_multi_krum",
    "naive_sq_distances",
    "naive_trimmed_mean",
]


def _f64(G) -> np.ndarray:
    return np.array(G, dtype=np.float64)


def naive_median(G) -> np.ndarray:
    """Coordinate-wise median; even n: mean of the two middle values."""
    G = _f64(G)
    n, d = G.shape
    out = np.empty(d)
    for j in range(d):
        v = sorted(G[:, j])
        out[j] = v[n // 2] if n % 2 == 1 else (v[n // 2 - 1] + v[n // 2]) / 2.0
    return out


def naive_trimmed_mean(G, f: int) -> np.ndarray:
    """Per coordinate: drop the f smallest and f largest values, average the rest."""
    G = _f64(G)
    n, d = G.shape
    out = np.empty(d)
    for j in range(d):
        v = sorted(G[:, j])
        middle = v[f : n - f]
        out[j] = math.fsum(middle) / len(middle)
    return out


def naive_sq_distances(G) -> np.ndarray:
    """Squared Euclidean distances, a direct sum of squared differences per pair."""
    G = _f64(G)
    n = G.shape[0]
    D = np.zeros((n, n))
    for i in range(n):
        for j in range(n):
            if i != j:
                D[i, j] = math.fsum((G[i] - G[j]) ** 2)
    return D


def naive_krum_scores(G, f: int, neighbors: int | None = None) -> np.ndarray:
    """Sum of the squared distances to the n - f - 2 (or ``neighbors``) nearest other rows."""
    D = naive_sq_distances(G)
    n = D.shape[0]
    k = n - f - 2 if neighbors is None else neighbors
    scores = np.empty(n)
    for i in range(n):
        others = sorted(D[i, j] for j in range(n) if j != i)
        scores[i] = sum(others[:k])
    return scores


def naive_krum(G, f: int, neighbors: int | None = None) -> tuple[np.ndarray, int]:
    """(selected row, its index); ties go to the lowest index."""
    scores = naive_krum_scores(G, f, neighbors)
    best = 0
    for i in range(1, len(scores)):
        if scores[i] < scores[best]:
            best = i
    return _f64(G)[best], best


def naive_multi_krum(
    G, f: int, m: int | None = None, neighbors: int | None = None
) -> tuple[np.ndarray, list[int]]:
    """(mean of the m lowest-score rows, their indices by increasing score)."""
    scores = naive_krum_scores(G, f, neighbors)
    n = len(scores)
    m = n - f if m is None else m
    order = sorted(range(n), key=lambda i: (scores[i], i))[:m]
    return _f64(G)[sorted(order)].mean(axis=0), order


def naive_bulyan(G, f: int) -> tuple[np.ndarray, list[int]]:
    """(Bulyan aggregate, selected indices in selection order)."""
    G = _f64(G)
    n, d = G.shape
    theta = n - 2 * f
    beta = theta - 2 * f
    D = naive_sq_distances(G)
    remaining = list(range(n))
    selected = []
    for _ in range(theta):
        r = len(remaining)
        k = min(max(r - f - 2, 1), r - 1)
        best, best_score = None, None
        for i in remaining:
            others = sorted(D[i, j] for j in remaining if j != i)
            s = sum(others[:k])
            if best_score is None or s < best_score:
                best, best_score = i, s
        selected.append(best)
        remaining.remove(best)
    S = G[selected]
    out = np.empty(d)
    for j in range(d):
        v = sorted(S[:, j])
        med = v[theta // 2] if theta % 2 == 1 else (v[theta // 2 - 1] + v[theta // 2]) / 2.0
        closest = sorted(v, key=lambda x: (abs(x - med), x))[:beta]
        out[j] = math.fsum(closest) / beta
    return out, selected


def naive_geometric_median(G, weights=None, tol: float = 1e-14, maxiter: int = 100, eps: float = 1e-8):
    """(z, iterations): smoothed Weiszfeld from the weighted mean, stopping on the relative
    objective decrease (same algorithm as :func:`robustagg.geometric_median`)."""
    G = _f64(G)
    n = G.shape[0]
    w = np.ones(n) if weights is None else _f64(weights)
    w = w / w.sum()

    def dists(z):
        return np.array([math.sqrt(math.fsum((G[i] - z) ** 2)) for i in range(n)])

    z = sum(w[i] * G[i] for i in range(n))
    dist = dists(z)
    scale = dist.max()
    if scale == 0:
        return z, 0
    obj = float(w @ dist)
    it = 0
    for it in range(1, maxiter + 1):  # noqa: B007
        beta = np.array([w[i] / max(dist[i], eps * scale) for i in range(n)])
        beta /= beta.sum()
        z_new = sum(beta[i] * G[i] for i in range(n))
        dist_new = dists(z_new)
        obj_new = float(w @ dist_new)
        if obj_new > obj:
            break
        dec = obj - obj_new
        z, dist, obj = z_new, dist_new, obj_new
        if dec <= tol * obj:
            break
    return z, it


def naive_dnc(
    G, f: int, niters: int = 5, b: int = 10_000, c: float = 1.0, rng=None
) -> tuple[np.ndarray, np.ndarray]:
    """(DnC aggregate, final kept mask), drawing coordinates exactly as :func:`robustagg.dnc`."""
    G = _f64(G)
    n, d = G.shape
    gen = np.random.default_rng(rng)
    n_keep = n - min(math.floor(c * f), n - 1)
    bs = min(b, d)
    counts = np.zeros(n, dtype=int)
    for _ in range(niters):
        coords = np.sort(gen.choice(d, size=bs, replace=False))
        sub = G[:, coords]
        mu = sub.mean(axis=0)
        centred = sub - mu
        _, _, vt = np.linalg.svd(centred, full_matrices=False)
        v = vt[0]
        scores = [float(np.dot(centred[i], v)) ** 2 for i in range(n)]
        keep = sorted(range(n), key=lambda i: (scores[i], i))[:n_keep]
        for i in keep:
            counts[i] += 1
    final = counts == counts.max()
    return G[final].mean(axis=0), final
