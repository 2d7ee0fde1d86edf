"""Subset-selection rules: the mean of a well-chosen subset of n - f rows.

* :func:`mda` -- minimum-diameter averaging (exact subset search, with a size limit);
* :func:`monna` -- mean of the n - f nearest neighbours of a reference;
* :func:`caf` -- covariance-bound agnostic filter (iterative spectral down-weighting);
* :func:`smea` -- smallest-maximum-eigenvalue averaging (exact subset search, with a size limit).

All of them work on the n × n matrix of pairwise distances (one Gram pass over G; no copy of
G) and end with one weighted pass over G to average the chosen rows.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from .._lazy import LazyModule
from .._params import BOOLEAN, FAULTS, NONFINITE, Constraint, Integer, Optional, Vector, check_params
from .._registry import register_rule
from .._threads import blas_single_thread
from .._thresholds import CAF_LANCZOS_MIN_ROWS
from .._validation import check_int, prepare

kernels = LazyModule("robustagg.kernels", globals(), "kernels")  # imported at the first call

__all__ = ["caf", "mda", "monna", "smea"]

_BOUND = dict(min_n=lambda f: 2 * f + 1, bound="n > 2f")


class _RowOrVector(Constraint):
    """MoNNA's reference: a row index (an integer, bool refused; its bound n - 1 is checked once
    n is known) or a finite vector of length d."""

    row = Integer(low=0)
    vector = Vector()

    def check(self, value: Any, *, rule: str, name: str, d: int | None = None) -> Any:
        if isinstance(value, (int, np.integer)) and not isinstance(value, (bool, np.bool_)):
            return self.row.check(value, rule=rule, name=name)
        return self.vector.check(value, rule=rule, name=name, d=d)

    def describe(self) -> str:
        return "a row index in [0, n - 1] or a finite vector of length d"


# The options of the rules here, declared once (robustagg._params): ``nonfinite`` and
# ``return_info`` are checked by ``prepare``, ``f`` by ``check_f`` against the bound n > 2f.
_OPTIONS = {"f": FAULTS, "nonfinite": NONFINITE, "return_info": BOOLEAN}
_MDA = {"max_subsets": Integer(low=1), **_OPTIONS}
_MONNA = {"reference": Optional(_RowOrVector()), **_OPTIONS}
_SMEA = _MDA
_TABLES = {"mda": _MDA, "monna": _MONNA, "caf": _OPTIONS, "smea": _SMEA}  # by rule


def _subset_mean(p, chosen: np.ndarray) -> np.ndarray:
    members = p.rows[chosen].astype(np.int64)
    return kernels.group_means(p.G, members, np.array([0, members.size], dtype=np.int64))[0]


def _check_size(rule: str, m: int, f: int, max_subsets: int) -> int:
    count = math.comb(m, f)
    if count > max_subsets:
        raise ValueError(
            f"{rule}: exact subset search over C(n, f) = C({m}, {f}) = {count:.3g} subsets exceeds "
            f"max_subsets={max_subsets:.3g}; use a smaller f (or n), or raise max_subsets knowingly"
        )
    return count


# ----------------------------------------------------------------------------------------
# MDA
# ----------------------------------------------------------------------------------------
def mda(
    grads: Any,
    f: int,
    *,
    max_subsets: int = 2**20,
    nonfinite: str = "exclude",
    return_info: bool = False,
) -> Any:
    r"""Minimum-diameter averaging (El Mhamdi, Guerraoui, Rouault 2018/2020).

    The mean of the subset of n − f rows of smallest diameter:

    .. math:: S^\star \in \arg\min_{|S| = n-f} \max_{i,j \in S} \|g_i - g_j\|_2, \qquad
              \mathrm{MDA}(G) = \frac{1}{n-f} \sum_{i \in S^\star} g_i

    The search is exact and needs no enumeration of the C(n, f) subsets: the largest pair
    of rows still present must lose one of its two rows (otherwise the diameter is its
    distance, and removing a row never increases a diameter), so an optimal subset is found by
    branching f times on which endpoint of the current largest pair to remove -- a binary
    tree with at most min(2^f, C(n, f)) leaves, each costing a scan of the sorted pairs.
    Ties: several subsets often share the minimal diameter (it is set by a single pair), and
    their means differ; the rule returns the **lexicographically first** of them (the
    first in ``itertools.combinations`` order, i.e. what ByzFL's exhaustive scan with a strict
    ``<`` returns), found by a depth-first scan of the rows under the optimal diameter (rows
    within the diameter of every row are always taken; the scan branches only on the others,
    and if it exceeds 200·n·(f+1) steps -- pathological ties -- the first optimal leaf of the
    search is returned instead). So MDA is permutation-invariant only up to such ties (its
    diameter always is). **Size limit:** the call raises a ``ValueError``
    when min(2^f', C(n', f')) > ``max_subsets`` (default 2²⁰, so any n with f ≤ 20). Needs
    n > 2f. Cost: the n × n distance matrix (one Gram pass over G), sorting the n(n−1)/2 pairs,
    the search, and one pass over G for the mean.

    Parameters
    ----------
    grads : array_like, shape (n, d)
    f : int
        Number of Byzantine clients (n > 2f).
    max_subsets : int, default 2**20
        The size limit on the search, min(2^f, C(n, f)) leaves.
    nonfinite : {"exclude", "raise"}, default "exclude"
        Non-finite rows are excluded and counted against f.
    return_info : bool, default False
        Diagnostics: ``kept`` (the chosen subset), ``diameter``, ``distances`` (n × n,
        NaN for excluded rows), ``nodes`` (leaves of the search visited).

    Returns
    -------
    aggregate : array, shape (d,)

    References
    ----------
    E. M. El Mhamdi, R. Guerraoui, S. Rouault. "The Hidden Vulnerability of Distributed
    Learning in Byzantium", ICML 2018; El Mhamdi et al., "Genuinely Distributed Byzantine
    Machine Learning", PODC 2020.
    """
    rule = "mda"
    max_subsets = check_params(rule, _MDA, max_subsets=max_subsets)["max_subsets"]
    p = prepare(rule, grads, f=f, nonfinite=nonfinite, return_info=return_info, **_BOUND)
    m, fe = p.m, p.f_eff
    leaves = min(2**fe, math.comb(m, fe))
    if leaves > max_subsets:
        raise ValueError(
            f"{rule}: the exact search examines up to min(2^f, C(n, f)) = {leaves:.3g} subsets for n={m}, "
            f"f={fe}, more than max_subsets={max_subsets:.3g}; use a smaller f, or raise max_subsets knowingly"
        )
    D = np.sqrt(kernels.sq_distances(p.G, p.rows))
    iu, ju = np.triu_indices(m, k=1)
    dist = D[iu, ju]
    order = np.lexsort((ju, iu, -dist))  # decreasing distance, then increasing (i, j)
    chosen, diameter, nodes = kernels.subset_min_diameter(
        iu[order].astype(np.int64), ju[order].astype(np.int64), dist[order], m, fe
    )
    # ties in the diameter are common (it is set by one pair, shared by several subsets): take
    # the lexicographically first subset of that diameter, as an exhaustive scan would
    first, found = kernels.first_subset_within(D, diameter, m - fe, 200 * m * (fe + 1))
    if found:
        chosen = first
    out = _subset_mean(p, chosen)
    info = None
    if return_info:
        full = np.full((p.n, p.n), np.nan)
        full[np.ix_(p.rows, p.rows)] = D
        info = p.diagnostics(chosen, diameter=float(diameter), distances=full, nodes=int(nodes))
    return p.finish(out, info, return_info)


# ----------------------------------------------------------------------------------------
# MoNNA
# ----------------------------------------------------------------------------------------
def _medoid(D: np.ndarray, D2: np.ndarray) -> int:
    """Row of smallest sum of distances; near-ties (relative 1e-10, e.g. the two middle points
    of an even set on a line) go to the smaller sum of squared distances, then the lower index."""
    s1 = D.sum(axis=1)
    cand = np.flatnonzero(s1 <= s1.min() * (1.0 + 1e-10))
    s2 = D2[cand].sum(axis=1)
    return int(cand[int(np.argmin(s2))])


def monna(
    grads: Any,
    f: int,
    *,
    reference: Any = None,
    nonfinite: str = "exclude",
    return_info: bool = False,
) -> Any:
    r"""MoNNA: mean of the n − f nearest neighbours of a reference (Farhadkhani et al. 2023).

    .. math:: \mathrm{MoNNA}(G) = \frac{1}{n-f} \sum_{i \in N(r)} g_i, \qquad
              N(r) = \text{the } n-f \text{ rows closest to } r

    MoNNA comes from peer-to-peer learning, where the reference r is the honest node's own
    gradient; implementations disagree on what it is at a server (ByzFL: row ``idx=0``,
    which under this library's attack convention -- the first f rows are Byzantine -- would
    be an attacker). Convention here:

    * ``reference=None`` (default): the **medoid**, the received row with the smallest sum of
      Euclidean distances to the others (ties, up to a relative 1e-10: the smaller sum of
      squared distances, then the lower index) -- a robust row the server can compute without
      trusting anyone;
    * an int i: row i of ``grads`` (ByzFL's ``idx``; must be a finite row);
    * a vector of length d: e.g. a gradient the server computed itself.

    Ties in distance go to the lower row index. Needs n > 2f.

    Parameters
    ----------
    grads : array_like, shape (n, d)
    f : int
    reference : None, int or array_like of shape (d,)
    nonfinite : {"exclude", "raise"}, default "exclude"
    return_info : bool, default False
        Diagnostics: ``kept`` (the neighbours), ``reference_index`` (−1 for a vector),
        ``reference_distances`` (over the n rows).

    Returns
    -------
    aggregate : array, shape (d,)

    References
    ----------
    S. Farhadkhani, R. Guerraoui, N. Gupta, L. N. Hoang, R. Pinot, J. Stephan. "Robust
    Collaborative Learning with Linear Gradient Overhead", ICML 2023.
    """
    rule = "monna"
    p = prepare(rule, grads, f=f, nonfinite=nonfinite, return_info=return_info, **_BOUND)
    reference = check_params(rule, _MONNA, d=p.d, reference=reference)["reference"]
    m, keep = p.m, p.m - p.f_eff
    ref_index = -1
    if reference is None:
        D2 = kernels.sq_distances(p.G, p.rows)
        D = np.sqrt(D2)
        pos = _medoid(D, D2)
        ref_index = int(p.rows[pos])
        dist = D[pos]
    elif isinstance(reference, int):  # a row index (checked >= 0; its bound needs n)
        ref_index = check_int(reference, rule=rule, name="reference", high=p.n - 1)
        if p.nonfinite[ref_index]:
            raise ValueError(f"{rule}: the reference row {ref_index} holds NaN or Inf")
        center = p.G[ref_index].astype(np.float64)
        dist = np.sqrt(kernels.row_sq_distances_to(p.G, p.rows, center))
    else:  # a finite float64 vector of length d
        dist = np.sqrt(kernels.row_sq_distances_to(p.G, p.rows, reference))
    order = np.argsort(dist, kind="stable")
    if ref_index >= 0:  # the reference row itself always belongs to its neighbourhood
        pos = int(np.flatnonzero(p.rows == ref_index)[0])
        order = np.concatenate(([pos], order[order != pos]))
    chosen = np.zeros(m, dtype=bool)
    chosen[order[:keep]] = True
    out = _subset_mean(p, chosen)
    info = None
    if return_info:
        info = p.diagnostics(chosen, reference_index=ref_index, reference_distances=p.expand_values(dist))
    return p.finish(out, info, return_info)


# ----------------------------------------------------------------------------------------
# CAF
# ----------------------------------------------------------------------------------------
_CAF_LANCZOS_V0 = 0x5EED  # seed of the fixed Lanczos start vector (no dependence on any rng)


def _top_eigenpair(M: np.ndarray, v0: np.ndarray | None) -> tuple[float, np.ndarray]:
    import scipy.linalg
    import scipy.sparse.linalg

    m = M.shape[0]
    if m >= CAF_LANCZOS_MIN_ROWS:
        if v0 is None:  # ARPACK's own start vector is random: the output would vary run to run
            v0 = np.random.default_rng(_CAF_LANCZOS_V0).uniform(-1.0, 1.0, m)
        try:
            lam, vec = scipy.sparse.linalg.eigsh(M, k=1, which="LA", v0=v0, tol=1e-10)
            return float(lam[0]), vec[:, 0]
        except scipy.sparse.linalg.ArpackNoConvergence:  # pragma: no cover - fall back to dense
            pass
    lam, vec = scipy.linalg.eigh(M, subset_by_index=[m - 1, m - 1])
    return float(lam[0]), vec[:, 0]


def _caf_filter(D2: np.ndarray, m: int, fe: int) -> tuple[float, np.ndarray, list]:
    """CAF's filtering loop on the n x n squared distances (see :func:`caf`)."""
    # Rows near the size limit (docs/conventions.md, "Non-finite rows") would overflow the
    # squares of the projections: the distances are then scaled by a power of 4, which leaves
    # the weights' arithmetic exact (square roots included), and the eigenvalues scaled back.
    scale = 1.0
    top = float(D2.max(initial=0.0))
    if top > _CAF_SCALE_ABOVE:
        scale = 4.0 ** math.ceil(math.log(top, 4))
        D2 = D2 / scale
    best, best_c, eigenvalues = _caf_filter_scaled(D2, m, fe)
    return best * scale, best_c, [lam * scale for lam in eigenvalues]


_CAF_SCALE_ABOVE = 1e100  # largest squared distance CAF's filter works on unscaled


def _caf_filter_scaled(D2: np.ndarray, m: int, fe: int) -> tuple[float, np.ndarray, list]:
    c = np.ones(m)
    best, best_c = np.inf, c.copy()
    eigenvalues: list = []
    u = None
    first = True
    while first or c.sum() > m - 2 * fe:
        first = False
        total = c.sum()
        Kc = kernels.centered_gram_from_sq_distances(D2, c)
        sq = np.sqrt(c)
        M = sq[:, None] * Kc * sq[None, :] / total
        lam, u = _top_eigenpair(M, u)
        lam = max(lam, 0.0)
        eigenvalues.append(lam)
        if lam < best:
            best, best_c = lam, c.copy()
        a = sq * u
        norm2 = float(a @ Kc @ a)
        if lam <= 0.0 or norm2 <= 0.0:
            break
        tau = (Kc @ a) ** 2 / norm2
        tmax = float(np.max(tau[c > 0]))
        if tmax <= 0.0:
            break
        c = np.clip(c * (1.0 - tau / tmax), 0.0, None)
        c[(c > 0) & (tau >= tmax)] = 0.0
    return best, best_c, eigenvalues


def caf(grads: Any, f: int, *, nonfinite: str = "exclude", return_info: bool = False) -> Any:
    r"""Covariance-bound agnostic filter (CAF; Allouah, Guerraoui, Stephan, ICML 2025).

    A spectral filter that down-weights the rows driving the top eigenvalue of the weighted
    covariance, and returns the weighted mean of smallest top eigenvalue met:

    1. c_i = 1 for every row.
    2. While Σc > n − 2f (and at least once):
       μ_c = Σ c_i g_i / Σc; Σ_c = Σ c_i (g_i − μ_c)(g_i − μ_c)ᵀ / Σc with top eigenpair
       (λ, v); remember μ_c if λ is the smallest so far; τ_i = ⟨g_i − μ_c, v⟩²;
       c_i ← c_i (1 − τ_i / max_{j: c_j > 0} τ_j).
    3. Return the remembered μ_c.

    Conventions where implementations disagree: the top eigenpair is computed **exactly**
    (ByzFL runs one power iteration from a random vector, which makes its output random);
    it is obtained from the n × n weighted Gram matrix (the non-zero spectrum of Σ_c is that
    of D_c^{1/2} K_c D_c^{1/2} / Σc with K_c the Gram matrix of the centred rows), so no d × d
    matrix is formed. The maximum of τ runs over rows of positive weight (the filter of the
    robust-statistics literature; with ByzFL's maximum over all rows, a row already filtered
    out can stall the loop), so every step removes at least one row and the loop ends after at
    most 2f + 1 steps. If λ = 0 (the weighted rows coincide) the loop stops. With f = 0 the
    result is the mean. Needs n > 2f.

    Parameters
    ----------
    grads : array_like, shape (n, d)
    f : int
    nonfinite : {"exclude", "raise"}, default "exclude"
    return_info : bool, default False
        Diagnostics: ``weights`` (the c of the returned mean, over the n rows), ``kept``
        (weight > 0), ``max_eigenvalue`` (its λ), ``eigenvalues`` (λ at each step),
        ``n_steps``.

    Returns
    -------
    aggregate : array, shape (d,)

    References
    ----------
    Y. Allouah, R. Guerraoui, J. Stephan. "Towards Trustworthy Federated Learning with
    Untrusted Participants", ICML 2025.
    """
    rule = "caf"
    p = prepare(rule, grads, f=f, nonfinite=nonfinite, return_info=return_info, **_BOUND)
    m, fe = p.m, p.f_eff
    D2 = kernels.sq_distances(p.G, p.rows)
    with blas_single_thread():  # n x n work only: BLAS threads add contention, not speed
        best, best_c, eigenvalues = _caf_filter(D2, m, fe)
    out = kernels.weighted_column_sum(p.G, p.rows, best_c / best_c.sum())
    info = None
    if return_info:
        info = p.diagnostics(
            best_c > 0,
            weights=p.expand_values(best_c, fill=0.0),
            max_eigenvalue=float(best),
            eigenvalues=np.asarray(eigenvalues),
            n_steps=len(eigenvalues),
        )
    return p.finish(out, info, return_info)


# ----------------------------------------------------------------------------------------
# SMEA
# ----------------------------------------------------------------------------------------
def smea(
    grads: Any,
    f: int,
    *,
    max_subsets: int = 10**5,
    nonfinite: str = "exclude",
    return_info: bool = False,
) -> Any:
    r"""Smallest-maximum-eigenvalue averaging (SMEA; Allouah et al., ICML 2023).

    The mean of the subset of n − f rows whose empirical covariance has the smallest top
    eigenvalue:

    .. math:: S^\star \in \arg\min_{|S| = n-f} \lambda_{\max}\Big(\frac{1}{|S|}
              \sum_{i\in S} (g_i - \bar g_S)(g_i - \bar g_S)^\top\Big), \qquad
              \mathrm{SMEA}(G) = \bar g_{S^\star}

    The search is exact and exhaustive in ``itertools.combinations`` order (ties: the first
    subset), with the exact top eigenvalue of each subset (ByzFL estimates it with one power
    iteration from a random vector). Each subset costs an (n−f) × (n−f) symmetric eigenvalue
    problem on the Gram matrix, so the d-dimensional covariance is never formed. **Size
    limit:** the call raises a ``ValueError`` when C(n', f') > ``max_subsets`` (default 10⁵;
    e.g. n = 50 allows f ≤ 3, n = 20 allows f ≤ 7). Needs n > 2f.

    Parameters
    ----------
    grads : array_like, shape (n, d)
    f : int
    max_subsets : int, default 10**5
    nonfinite : {"exclude", "raise"}, default "exclude"
    return_info : bool, default False
        Diagnostics: ``kept`` (the chosen subset), ``max_eigenvalue``, ``n_subsets``.

    Returns
    -------
    aggregate : array, shape (d,)

    References
    ----------
    Y. Allouah, R. Guerraoui, N. Gupta, R. Pinot, J. Stephan. "On the Privacy-Robustness-Utility
    Trilemma in Distributed Learning", ICML 2023.
    """
    rule = "smea"
    max_subsets = check_params(rule, _SMEA, max_subsets=max_subsets)["max_subsets"]
    p = prepare(rule, grads, f=f, nonfinite=nonfinite, return_info=return_info, **_BOUND)
    m, fe = p.m, p.f_eff
    count = _check_size(rule, m, fe, max_subsets)
    K = kernels.centered_gram_from_sq_distances(kernels.sq_distances(p.G, p.rows))
    chosen, lam = kernels.subset_min_max_eigenvalue(K, m - fe)
    out = _subset_mean(p, chosen)
    info = None
    if return_info:
        info = p.diagnostics(chosen, max_eigenvalue=float(lam), n_subsets=int(count))
    return p.finish(out, info, return_info)


register_rule("mda", mda)
register_rule("monna", monna)
register_rule("caf", caf)
register_rule("smea", smea)
