"""Slow, obviously-correct reference implementations of the attacks (test oracles).

Plain NumPy over float64, loops where they make the formula plain, no shared code with
:mod:`robustagg.attacks`: the Min-Max/Min-Sum search evaluates the constraint from explicit
pairwise distances (an O(n² d) tensor) and bisects on it. Use them on small inputs only. Each
takes ``(G, byzantine_mask, ...)`` and returns the attacked float64 matrix.
"""

from __future__ import annotations

import math
from statistics import NormalDist

import numpy as np

__all__ = [
    "naive_byzmean",
    "naive_ipm",
    "naive_lie",
    "naive_lie_z",
    "naive_min_max",
    "naive_min_sum",
    "naive_reverse_scaled",
    "naive_sign_flip",
]


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
    n = G.shape[0]
    rows = np.flatnonzero(~byz) if benign_only else np.arange(n)
    if z is None:
        z = naive_lie_z(n, int(byz.sum()))
    mu, sigma = _stats(G, rows)
    out = np.array(G, dtype=np.float64)
    out[byz] = mu - z * sigma
    return out


def naive_byzmean(G, byz, g1):
    n = G.shape[0]
    f = int(byz.sum())
    m1 = f // 2
    m2 = f - m1
    out = np.array(G, dtype=np.float64)
    benign_sum = np.zeros(G.shape[1])
    for i in np.flatnonzero(~byz):
        benign_sum += G[i]
    byz_rows = np.flatnonzero(byz)
    for k, i in enumerate(byz_rows):
        out[i] = g1 if k < m1 else ((n - m1) * np.asarray(g1, dtype=np.float64) - benign_sum) / m2
    return out


def naive_ipm(G, byz, eps):
    out = np.array(G, dtype=np.float64)
    out[byz] = -eps * G[~byz].astype(np.float64).mean(axis=0)
    return out


def _naive_search(G, byz, direction, benign_only, kind):
    n = G.shape[0]
    rows = np.flatnonzero(~byz) if benign_only else np.arange(n)
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
