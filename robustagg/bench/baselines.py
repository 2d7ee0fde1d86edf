"""The NumPy peer: a plain vectorised NumPy/SciPy implementation of each rule and attack
(:data:`NUMPY_BASELINES`), "what a user would write", timed beside the library's."""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

import numpy as np

from .inputs import LIE_Z


def _pairwise_sq(G: np.ndarray) -> np.ndarray:
    """Squared Euclidean distances through the Gram matrix (BLAS), in float64, diagonal = 0."""
    G64 = G if G.dtype == np.float64 else G.astype(np.float64)
    sq = np.einsum("ij,ij->i", G64, G64)
    D = sq[:, None] + sq[None, :] - 2.0 * (G64 @ G64.T)
    np.maximum(D, 0.0, out=D)
    np.fill_diagonal(D, 0.0)
    return D


def _krum_scores(D: np.ndarray, f: int) -> np.ndarray:
    n = D.shape[0]
    k = max(n - f - 2, 1)
    Dm = D + np.diag(np.full(n, np.inf))
    return np.sort(Dm, axis=1)[:, :k].sum(axis=1)


def _np_mean(G, f, rng):
    return G.mean(axis=0)


def _np_median(G, f, rng):
    return np.median(G, axis=0)


def _np_trimmed_mean(G, f, rng):
    n = G.shape[0]
    S = np.sort(G, axis=0)
    return S[f : n - f].mean(axis=0)


def _np_krum(G, f, rng):
    return G[int(np.argmin(_krum_scores(_pairwise_sq(G), f)))]


def _np_multi_krum(G, f, rng):
    n = G.shape[0]
    scores = _krum_scores(_pairwise_sq(G), f)
    idx = np.argsort(scores, kind="stable")[: n - f]
    return G[idx].mean(axis=0)


def _np_bulyan(G, f, rng):
    n = G.shape[0]
    theta = n - 2 * f
    D = _pairwise_sq(G)
    remaining = list(range(n))
    selected = []
    for _ in range(theta):
        sub = D[np.ix_(remaining, remaining)]
        r = len(remaining)
        scores = _krum_scores(sub, r - max(r - f - 2, 1) - 2) if r > 1 else np.zeros(1)
        pick = remaining[int(np.argmin(scores))]
        selected.append(pick)
        remaining.remove(pick)
    S = G[selected]
    beta = theta - 2 * f
    med = np.median(S, axis=0)
    idx = np.argsort(np.abs(S - med), axis=0, kind="stable")[:beta]
    return np.take_along_axis(S, idx, axis=0).mean(axis=0)


def _np_geometric_median(G, f, rng, tol: float = 1e-6, maxiter: int = 100):
    z = G.mean(axis=0, dtype=np.float64)
    scale = max(float(np.abs(G).max()), 1e-300)
    eps = 1e-8 * scale
    obj_prev = np.inf
    for _ in range(maxiter):
        dist = np.linalg.norm(G - z, axis=1)
        obj = float(dist.sum())
        if obj_prev < np.inf and abs(obj_prev - obj) <= tol * max(obj, 1e-300):
            break
        obj_prev = obj
        w = 1.0 / np.maximum(dist, eps)
        z = (w @ G) / w.sum()
    return z


def _np_dnc(G, f, rng, niters: int = 5, b: int = 10_000, c: float = 1.0):
    n, d = G.shape
    rng = np.random.default_rng(rng)
    good = np.ones(n, dtype=bool)
    for _ in range(niters):
        idx = rng.choice(d, size=min(b, d), replace=False)
        S = G[:, idx].astype(np.float64)
        S -= S.mean(axis=0)
        v = np.linalg.svd(S, full_matrices=False)[2][0]
        s = (S @ v) ** 2
        keep = np.zeros(n, dtype=bool)
        keep[np.argsort(s, kind="stable")[: n - int(c * f)]] = True
        good &= keep
    if not good.any():
        good[:] = True
    return G[good].mean(axis=0)


def _np_signguard(G, f, rng, extra: str | None = None):
    from sklearn.cluster import MeanShift, estimate_bandwidth

    n, d = G.shape
    rng = np.random.default_rng(rng)
    norms = np.linalg.norm(G, axis=1)
    M = np.median(norms)
    if M == 0:
        return np.zeros(d, dtype=G.dtype)
    ratio = norms / M
    s1 = (ratio >= 0.1) & (ratio <= 3.0)
    k = max(1, round(0.1 * d))
    sub = G[:, rng.choice(d, size=k, replace=False)]
    feats = [(sub > 0).mean(axis=1), (sub == 0).mean(axis=1), (sub < 0).mean(axis=1)]
    if extra is not None:
        gram = G.astype(np.float64) @ G.T.astype(np.float64)
        if extra == "sim":
            cos = gram / np.maximum(np.outer(norms, norms), 1e-300)
            np.fill_diagonal(cos, np.nan)
            s = np.nanmedian(cos, axis=1)
            med = np.median(s)
            feats.append(np.clip(s, 0, med) / (5 * med) if med > 0 else np.zeros(n))
        else:
            D = np.sqrt(np.maximum(np.diag(gram)[:, None] + np.diag(gram)[None, :] - 2 * gram, 0))
            np.fill_diagonal(D, np.nan)
            s = np.nanmedian(D, axis=1)
            feats.append(0.2 * (s >= 1.1 * np.median(s)))
    F = np.stack(feats, axis=1)
    bw = estimate_bandwidth(F, quantile=0.5)
    if bw > 0:
        labels = MeanShift(bandwidth=bw, bin_seeding=True, cluster_all=False).fit(F).labels_
        ok = labels >= 0
        s2 = np.zeros(n, dtype=bool)
        if ok.any():
            s2 = labels == np.bincount(labels[ok]).argmax()
    else:
        s2 = np.ones(n, dtype=bool)
    sel = s1 & s2
    if not sel.any():
        sel = s1
    scale = np.minimum(1.0, M / np.maximum(norms[sel], 1e-300))
    return (G[sel] * scale[:, None]).mean(axis=0)


def _np_attack(fill: Callable[[np.ndarray, int, np.random.Generator], np.ndarray]):
    def attack(G, f, rng):
        out = G.copy()
        out[:f] = fill(G, f, np.random.default_rng(rng))
        return out

    return attack


def lie_rows(G, f, rng, z=LIE_Z):
    """The LIE vector of ``G``'s rows, mean - z * std (``ddof = 1``), as the NumPy baseline of
    the LIE attack computes it."""
    return G.mean(axis=0) - z * G.std(axis=0, ddof=1)


def _byzmean_rows(G, f, rng):
    n, d = G.shape
    m1 = f // 2
    m2 = f - m1
    g1 = lie_rows(G, f, rng)
    rows = np.empty((f, d), dtype=G.dtype)
    rows[:m1] = g1
    rows[m1:] = ((n - m1) * g1 - G[f:].sum(axis=0)) / m2
    return rows


NUMPY_BASELINES: dict[str, Callable[..., np.ndarray]] = {
    # rules: fn(G, f, rng) -> (d,)
    "mean": _np_mean,
    "median": _np_median,
    "trimmed_mean": _np_trimmed_mean,
    "krum": _np_krum,
    "multi_krum": _np_multi_krum,
    "bulyan": _np_bulyan,
    "geometric_median": _np_geometric_median,
    "dnc": _np_dnc,
    "signguard": _np_signguard,
    "signguard_sim": lambda G, f, rng: _np_signguard(G, f, rng, extra="sim"),
    "signguard_dist": lambda G, f, rng: _np_signguard(G, f, rng, extra="dist"),
    # attacks: fn(G, f, rng) -> (n, d)
    "attack:gaussian": _np_attack(lambda G, f, rng: rng.normal(0.0, 0.5, (f, G.shape[1])).astype(G.dtype)),
    "attack:noise": _np_attack(
        lambda G, f, rng: G[:f] + rng.normal(0.0, 0.5, (f, G.shape[1])).astype(G.dtype)
    ),
    "attack:sign_flip": _np_attack(lambda G, f, rng: -G[:f]),
    "attack:reverse_scaled": _np_attack(lambda G, f, rng: -3.0 * G[:f]),
    "attack:lie": _np_attack(lie_rows),
    "attack:byzmean": _np_attack(_byzmean_rows),
    "attack:ipm": _np_attack(lambda G, f, rng: -0.1 * G[f:].mean(axis=0)),
    "attack:inf": _np_attack(lambda G, f, rng: np.inf),
    "attack:nan": _np_attack(lambda G, f, rng: np.nan),
    "attack:mimic": _np_attack(lambda G, f, rng: G[f]),
}
"""Plain NumPy/SciPy implementations, keyed by rule name or ``"attack:<name>"``.

Rules follow the conventions of docs/conventions.md with their defaults (so that, for the deterministic rules, the
harness can also report how far the library's result is from the baseline's). The baselines are
what a careful user writes with NumPy: one vectorised expression per step, distances through the
Gram matrix, sorting for order statistics, scikit-learn for Mean-Shift."""

EXACT_BASELINES = frozenset({"mean", "median", "trimmed_mean", "krum", "multi_krum", "bulyan"})
"""Rules whose output the baseline reproduces (deterministic, same convention): the harness
reports the relative difference of the two results (``numpy_rel_diff``)."""


def baseline_call(
    base: Callable[..., Any], fn: Callable[..., Any], kind: str, name: str
) -> Callable[..., Any]:
    """The baseline with the rule's own default tolerance where it has one (geometric median)."""
    if name == "geometric_median":
        try:
            params = inspect.signature(fn).parameters
            kw = {}
            for ours, theirs in (("tol", "tol"), ("maxiter", "maxiter")):
                p = params.get(ours)
                if p is not None and p.default is not inspect.Parameter.empty and p.default is not None:
                    kw[theirs] = p.default
            return lambda G, f, rng: base(G, f, rng, **kw)
        except (TypeError, ValueError):
            pass
    return base


def rel_diff(a: Any, b: Any) -> float | None:
    """Largest absolute difference of ``a`` and ``b`` relative to the largest magnitude of ``b``
    (None where the shapes differ or the values are not numbers)."""
    try:
        a = np.asarray(a, dtype=np.float64)
        b = np.asarray(b, dtype=np.float64)
        if a.shape != b.shape:
            return None
        scale = float(np.max(np.abs(b))) if b.size else 0.0
        return float(np.max(np.abs(a - b))) / (scale if scale > 0 else 1.0)
    except Exception:
        return None
