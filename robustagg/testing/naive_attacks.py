"""Slow, obviously-correct reference implementations of the attacks (test oracles).

Plain NumPy over float64, loops where they make the formula plain, no shared code with
:mod:`robustagg.attacks`: the Min-Max/Min-Sum search evaluates the constraint from explicit
pairwise distances (an O(n² d) tensor) and bisects on it. Use them on small inputs only. Each
takes ``(G, byzantine_mask, ...)`` and returns the attacked float64 matrix.

Non-finite honest rows (docs/conventions.md, "Attacks and non-finite honest rows"): a row is
left out of every statistic when it holds NaN/±Inf or when its squared norm is above
``float64.max / (4 n)`` (checked row by row in :func:`naive_finite_rows`). The n of LIE's Eq. (2)
and of ByzMean's mean is the number of rows a rule aggregates: the Byzantine rows and the
finite benign rows. The sign-flip references assume finite Byzantine rows.
"""

from __future__ import annotations

import math
from statistics import NormalDist

import numpy as np

__all__ = [
    "naive_byzmean",
    "naive_finite_rows",
    "naive_ipm",
    "naive_lie",
    "naive_lie_z",
    "naive_min_max",
    "naive_min_sum",
    "naive_reverse_scaled",
    "naive_sign_flip",
]


def naive_finite_rows(G) -> np.ndarray:
    """Boolean mask over the rows of G: True where the row is finite for the library."""
    G = np.asarray(G)
    n = G.shape[0]
    limit = np.finfo(np.float64).max / (4 * n)
    finite = np.zeros(n, dtype=bool)
    for i in range(n):
        values = [float(v) for v in G[i]]
        sq_norm = sum(v * v for v in values)  # Python floats: an overflow gives inf, past the limit
        finite[i] = all(math.isfinite(v) for v in values) and sq_norm <= limit
    return finite


def _reference(G, byz, benign_only):
    """The rows statistics are taken over: finite, of the benign rows or of all n."""
    candidates = ~np.asarray(byz) if benign_only else np.ones(len(G), dtype=bool)
    return np.flatnonzero(candidates & naive_finite_rows(G))


def _rule_rows(G, byz):
    """How many rows a rule aggregates: the Byzantine rows and the finite benign rows."""
    byz = np.asarray(byz)
    return int(byz.sum() + (~byz & naive_finite_rows(G)).sum())


def _stats(G: np.ndarray, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    R = G[rows].astype(np.float64)
    m = R.shape[0]
    mu = np.array([sum(R[:, j]) / m for j in range(R.shape[1])])
    sigma = np.array([math.sqrt(sum((R[:, j] - mu[j]) ** 2) / (m - 1)) for j in range(R.shape[1])])
    return mu, sigma


def naive_lie_z(n: int, f: int) -> float:
    """Eq. (2) with the standard library's normal quantile."""
    return NormalDist().inv_cdf((n - math.floor(n / 2 + 1)) / (n - f))


def naive_sign_flip(G, byz):
    out = np.array(G, dtype=np.float64)
    for i in np.flatnonzero(byz):
        out[i] = -out[i]
    return out


def naive_reverse_scaled(G, byz, r):
    out = np.array(G, dtype=np.float64)
    for i in np.flatnonzero(byz):
        out[i] = -r * out[i]
    return out


def naive_lie(G, byz, z=None, benign_only=False):
    rows = _reference(G, byz, benign_only)
    if z is None:
        z = naive_lie_z(_rule_rows(G, byz), int(byz.sum()))
    mu, sigma = _stats(G, rows)
    out = np.array(G, dtype=np.float64)
    out[byz] = mu - z * sigma
    return out


def naive_byzmean(G, byz, g1):
    n = _rule_rows(G, byz)
    f = int(byz.sum())
    m1 = f // 2
    m2 = f - m1
    out = np.array(G, dtype=np.float64)
    benign_sum = np.zeros(G.shape[1])
    for i in np.flatnonzero(~byz & naive_finite_rows(G)):
        benign_sum += G[i]
    byz_rows = np.flatnonzero(byz)
    for k, i in enumerate(byz_rows):
        out[i] = g1 if k < m1 else ((n - m1) * np.asarray(g1, dtype=np.float64) - benign_sum) / m2
    return out


def naive_ipm(G, byz, eps):
    out = np.array(G, dtype=np.float64)
    out[byz] = -eps * G[~byz & naive_finite_rows(G)].astype(np.float64).mean(axis=0)
    return out


def _naive_search(G, byz, direction, benign_only, kind):
    rows = _reference(G, byz, benign_only)
    R = G[rows].astype(np.float64)
    mu, sigma = _stats(G, rows)
    if direction == "std":
        p = -sigma
    elif direction == "unit_vec":
        p = -mu / np.linalg.norm(mu)
    else:
        p = -np.sign(mu)
    diff = R[:, None, :] - R[None, :, :]
    sq = (diff**2).sum(axis=2)
    bound = sq.max() if kind == "min_max" else sq.sum(axis=1).max()

    def ok(gamma):
        d = ((R - (mu + gamma * p)) ** 2).sum(axis=1)
        return (d.max() if kind == "min_max" else d.sum()) <= bound

    hi = 1.0
    while ok(hi):
        hi *= 2.0
    lo = 0.0
    for _ in range(200):
        mid = (lo + hi) / 2
        if ok(mid):
            lo = mid
        else:
            hi = mid
    out = np.array(G, dtype=np.float64)
    out[byz] = mu + lo * p
    return out, lo


def naive_min_max(G, byz, direction="std", benign_only=False):
    """Returns ``(attacked, gamma)``."""
    return _naive_search(G, byz, direction, benign_only, "min_max")


def naive_min_sum(G, byz, direction="std", benign_only=False):
    """Returns ``(attacked, gamma)``."""
    return _naive_search(G, byz, direction, benign_only, "min_sum")
