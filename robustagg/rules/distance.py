"""Distance-based rules: Krum, Multi-Krum, Bulyan and the geometric median.

All of them work on the accurate pairwise squared distances of ``kernels.pairwise_sq_distances``
(the geometric median's Weiszfeld iterations too, through ``||g_i - z||^2 = (D lam)_i -
lam^T D lam / 2``), computed over the finite rows only (``Prepared.rows``) without copying the
(n, d) matrix; the validation layer has excluded the non-finite rows before (docs/conventions.md,
"Non-finite rows").

Few finite rows. With ``nonfinite="exclude"``, k non-finite rows count against ``f``: the rule
runs on n' = n - k rows with f' = max(f - k, 0). The bounds (n >= 2f + 3 for Krum, n >= 4f + 3
for Bulyan) then still hold for n' and f' whenever k <= f. Beyond the threat model (k > f) the
neighbour counts are clamped to [1, n' - 1] (0 when n' = 1): with a single finite row that row
is returned, with two finite rows Krum ties and returns the first.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .._array import to_numpy
from .._lazy import LazyModule
from .._params import BOOLEAN, FAULTS, NONFINITE, Constraint, Integer, Optional, Real, check_params
from .._registry import register_rule
from .._validation import check_int, prepare

kernels = LazyModule("robustagg.kernels", globals(), "kernels")  # imported at the first call

__all__ = ["bulyan", "geometric_median", "krum", "multi_krum"]


class _Weights(Constraint):
    """Client weights: a finite, non-negative 1-D vector, as float64 (its length, n, is checked by
    the rule once n is known)."""

    def check(self, value: Any, *, rule: str, name: str, d: int | None = None) -> np.ndarray:
        w, _ = to_numpy(value, rule=rule, name=name, ndim=1)
        w = w.astype(np.float64)
        if not np.all(np.isfinite(w)) or np.any(w < 0):
            raise ValueError(f"{rule}: argument {name!r} must be finite and non-negative")
        return w

    def describe(self) -> str:
        return "a finite non-negative vector of length n"


# The options of the rules here, declared once (robustagg._params): ``nonfinite`` and
# ``return_info`` are checked by ``prepare``, ``f`` by ``check_f`` against the rule's bound on n;
# the upper bounds that depend on n (``neighbors`` <= n - 1, ``m`` <= n, ``weights`` of length n)
# are checked once n is known.
_OPTIONS = {"nonfinite": NONFINITE, "return_info": BOOLEAN}
_NEIGHBORS = Optional(Integer(low=1))
_KRUM = {"f": FAULTS, "neighbors": _NEIGHBORS, **_OPTIONS}
_MULTI_KRUM = {"f": FAULTS, "m": Optional(Integer(low=1)), "neighbors": _NEIGHBORS, **_OPTIONS}
_BULYAN = {"f": FAULTS, **_OPTIONS}
_GEOMETRIC_MEDIAN = {
    "weights": Optional(_Weights()),
    "tol": Real(low=0.0, high=1.0, low_open=True, high_open=True),
    "maxiter": Integer(low=1),
    "eps": Real(low=0.0, low_open=True),
    **_OPTIONS,
}
_TABLES = {"krum": _KRUM, "multi_krum": _MULTI_KRUM, "bulyan": _BULYAN, "geometric_median": _GEOMETRIC_MEDIAN}


def _neighbours(m: int, f: int) -> int:
    """Krum's neighbour count n - f - 2, clamped to [1, m - 1] (0 for a single row)."""
    if m <= 1:
        return 0
    return min(max(m - f - 2, 1), m - 1)


def _at_most(value: int | None, high: int, *, rule: str, name: str) -> int | None:
    """An option's upper bound that depends on n (its table declares the rest)."""
    return None if value is None else check_int(value, rule=rule, name=name, high=high)


def _finite_distances(p, rule: str, grads: Any, **kwargs: Any):
    """The pairwise squared distances among the finite rows of ``p``. Returns (p, D)."""
    return p, kernels.pairwise_sq_distances(p.G, p.rows)


def _krum_core(p, D, neighbors: int | None):
    """The neighbour count used and the Krum scores, from the distances among the finite rows."""
    m = p.m
    k = _neighbours(m, p.f_eff) if neighbors is None else min(neighbors, m - 1)
    scores = kernels.krum_scores(D, k)
    return k, scores


def krum(
    grads: Any,
    f: int,
    *,
    neighbors: int | None = None,
    nonfinite: str = "exclude",
    return_info: bool = False,
) -> Any:
    r"""Krum (Blanchard et al., 2017): the gradient closest to its nearest neighbours.

    .. math::

        s_i = \sum_{j \in N_i} \lVert g_i - g_j \rVert^2, \qquad
        \operatorname{Krum}(G) = g_{i^*}, \quad i^* = \arg\min_i s_i

    where :math:`N_i` holds the ``n - f - 2`` rows nearest to :math:`g_i` (excluding i itself).
    Requires ``n >= 2f + 3``.

    Conventions: **squared** distances as in the paper (and Flower); ties in the score go to
    the lowest row index. Several libraries use a different neighbour count (``n - f - 1`` or
    ``n - f``): pass ``neighbors=`` to reproduce them.

    Parameters
    ----------
    grads : array_like, shape (n, d)
        Client gradients (any array-API array or a sequence of 1-D arrays).
    f : int
        Number of Byzantine clients.
    neighbors : int, optional
        Number of nearest neighbours summed in each score (default ``n - f - 2``), 1 <= neighbors
        <= n - 1; clamped to n' - 1 when non-finite rows were excluded.
    nonfinite : {"exclude", "raise"}, default "exclude"
        Non-finite rows are left out and count against ``f`` (see the module docstring).
    return_info : bool, default False
        Also return a :class:`~robustagg.Diagnostics` with ``kept`` (the selected row),
        ``scores`` (over the n rows, NaN for excluded ones), ``selected`` (the row index) and
        ``neighbors`` (the count used).

    Returns
    -------
    aggregate : array, shape (d,)
        The selected row, in the caller's array library and dtype.

    References
    ----------
    P. Blanchard, E. M. El Mhamdi, R. Guerraoui, J. Stainer. *Machine Learning with Adversaries:
    Byzantine Tolerant Gradient Descent*. NeurIPS 2017.
    """
    kw = dict(
        f=f, min_n=lambda f: 2 * f + 3, bound="n >= 2f + 3", nonfinite=nonfinite, return_info=return_info
    )
    p = prepare("krum", grads, **kw)
    opts = check_params("krum", _KRUM, neighbors=neighbors)
    neighbors = _at_most(opts["neighbors"], max(p.n - 1, 1), rule="krum", name="neighbors")
    p, D = _finite_distances(p, "krum", grads, **kw)
    k, scores = _krum_core(p, D, neighbors)
    best = int(np.argmin(scores))  # first minimum: ties go to the lowest index
    selected = int(p.rows[best])
    result = p.G[selected].copy()
    info = None
    if return_info:
        kept = np.zeros(p.m, dtype=bool)
        kept[best] = True
        info = p.diagnostics(kept, scores=p.expand_values(scores), selected=selected, neighbors=k)
    return p.finish(result, info, return_info=return_info)


def multi_krum(
    grads: Any,
    f: int,
    m: int | None = None,
    *,
    neighbors: int | None = None,
    nonfinite: str = "exclude",
    return_info: bool = False,
) -> Any:
    r"""Multi-Krum (Blanchard et al., 2017): the mean of the ``m`` rows with the lowest Krum scores.

    .. math:: \operatorname{MultiKrum}(G) = \frac{1}{m} \sum_{i \in S_m} g_i

    with :math:`S_m` the ``m`` rows of lowest score :math:`s_i` (see :func:`krum`); ties go to
    the lower row index. Default ``m = n - f``. Requires ``n >= 2f + 3``. ``m = 1`` is Krum.

    Parameters
    ----------
    grads : array_like, shape (n, d)
        Client gradients.
    f : int
        Number of Byzantine clients.
    m : int, optional
        Number of rows averaged, 1 <= m <= n (default ``n - f``). With non-finite rows excluded
        the default becomes ``n' - f'`` and an explicit m is clamped to n'.
    neighbors : int, optional
        Neighbour count of the scores (default ``n - f - 2``), as in :func:`krum`.
    nonfinite : {"exclude", "raise"}, default "exclude"
        Non-finite rows are left out and count against ``f``.
    return_info : bool, default False
        Also return a :class:`~robustagg.Diagnostics` with ``kept`` (the m selected rows),
        ``scores``, ``selected`` (indices, by increasing score), ``neighbors`` and ``m``.

    References
    ----------
    P. Blanchard, E. M. El Mhamdi, R. Guerraoui, J. Stainer. *Machine Learning with Adversaries:
    Byzantine Tolerant Gradient Descent*. NeurIPS 2017.
    """
    kw = dict(
        f=f, min_n=lambda f: 2 * f + 3, bound="n >= 2f + 3", nonfinite=nonfinite, return_info=return_info
    )
    p = prepare("multi_krum", grads, **kw)
    opts = check_params("multi_krum", _MULTI_KRUM, neighbors=neighbors, m=m)
    neighbors = _at_most(opts["neighbors"], max(p.n - 1, 1), rule="multi_krum", name="neighbors")
    m_arg = _at_most(opts["m"], p.n, rule="multi_krum", name="m")
    p, D = _finite_distances(p, "multi_krum", grads, **kw)
    m_sel = p.m - p.f_eff if m_arg is None else min(m_arg, p.m)
    m_sel = max(m_sel, 1)
    k, scores = _krum_core(p, D, neighbors)
    order = np.argsort(scores, kind="stable")[:m_sel]
    chosen = np.sort(order)
    result = kernels.column_mean(p.G, p.rows[chosen])
    info = None
    if return_info:
        kept = np.zeros(p.m, dtype=bool)
        kept[chosen] = True
        info = p.diagnostics(
            kept, scores=p.expand_values(scores), selected=p.rows[order].copy(), neighbors=k, m=m_sel
        )
    return p.finish(result, info, return_info=return_info)


def bulyan(
    grads: Any,
    f: int,
    *,
    nonfinite: str = "exclude",
    return_info: bool = False,
) -> Any:
    r"""Bulyan (El Mhamdi et al., 2018): repeated Krum selection, then a coordinate-wise
    trimmed average around the median.

    1. Select :math:`\theta = n - 2f` rows by Krum repeatedly: with r rows remaining, score each
       by the sum of squared distances to its ``max(r - f - 2, 1)`` nearest remaining rows, move
       the lowest score (ties: lowest row index) to the selected set; scores are recomputed at
       every step.
    2. Per coordinate j, with :math:`m_j` the median of the selected values (NumPy's even
       convention), average the :math:`\beta = \theta - 2f` selected values closest to
       :math:`m_j`.

    Requires ``n >= 4f + 3``. Convention: at equal distance from the median the smaller value is
    taken first (a value-based rule, so the result does not depend on the row order).

    Parameters
    ----------
    grads : array_like, shape (n, d)
        Client gradients.
    f : int
        Number of Byzantine clients.
    nonfinite : {"exclude", "raise"}, default "exclude"
        Non-finite rows are left out and count against ``f``: the rule runs with n' and f'.
    return_info : bool, default False
        Also return a :class:`~robustagg.Diagnostics` with ``kept`` (the θ selected rows),
        ``selected`` (their indices in selection order), ``selection_scores`` (the winning
        Krum score at each step), ``theta`` and ``beta``.

    References
    ----------
    E. M. El Mhamdi, R. Guerraoui, S. Rouault. *The Hidden Vulnerability of Distributed Learning
    in Byzantium*. ICML 2018.
    """
    from ..kernels import repeated_krum

    kw = dict(
        f=f, min_n=lambda f: 4 * f + 3, bound="n >= 4f + 3", nonfinite=nonfinite, return_info=return_info
    )
    p = prepare("bulyan", grads, **kw)
    p, D = _finite_distances(p, "bulyan", grads, **kw)
    fe = p.f_eff
    m = p.m
    theta = max(m - 2 * fe, 1)
    beta = max(theta - 2 * fe, 1)
    # theta Krum steps on the remaining rows; each row of D sorted once (bit-identical scores)
    selected, win_scores = repeated_krum(D, theta, fe, True)  # D is not needed afterwards
    del D
    sel = np.sort(selected)
    result = kernels.column_closest_to_median_mean(p.G, p.rows[sel], beta)
    info = None
    if return_info:
        kept = np.zeros(m, dtype=bool)
        kept[sel] = True
        info = p.diagnostics(
            kept,
            selected=p.rows[selected].copy(),
            selection_scores=win_scores,
            theta=theta,
            beta=beta,
        )
    return p.finish(result, info, return_info=return_info)


def _affine_distances(D: np.ndarray, lam: np.ndarray) -> np.ndarray:
    """``||g_i - sum_j lam_j g_j||`` for weights summing to 1, from the pairwise squared
    distances D: ``(D lam)_i - lam^T D lam / 2`` (clamped at 0), float64 (m,)."""
    Dl = D @ lam
    return np.sqrt(np.maximum(Dl - 0.5 * float(lam @ Dl), 0.0))


def geometric_median(
    grads: Any,
    *,
    weights: Any = None,
    tol: float = 1e-14,
    maxiter: int = 100,
    eps: float = 1e-8,
    nonfinite: str = "exclude",
    return_info: bool = False,
) -> Any:
    r"""Geometric median by smoothed Weiszfeld iterations (RFA, Pillutla et al., 2022).

    .. math::

        z^\star = \arg\min_z \sum_i w_i \lVert g_i - z \rVert, \qquad
        z \leftarrow \frac{\sum_i w_i g_i / \max(\lVert g_i - z\rVert, \varepsilon)}
                          {\sum_i w_i / \max(\lVert g_i - z\rVert, \varepsilon)}

    starting from the (weighted) coordinate-wise mean. The smoothing
    :math:`\varepsilon = \texttt{eps} \cdot s` is relative to the data scale
    :math:`s = \max_i \lVert g_i - z_0 \rVert` (so the rule is translation and scale
    equivariant); when every row is identical (s = 0) that row is returned. Iterations stop when
    the relative decrease of the objective :math:`F(z) = \sum_i w_i \lVert g_i - z\rVert` is at
    most ``tol`` (``|F_{t-1} - F_t| <= tol * F_t``) or after ``maxiter`` iterations.

    Method: every iterate is an affine combination :math:`z = \sum_j \lambda_j g_j`
    (:math:`\sum_j \lambda_j = 1`), so the iterations run on the (n, n) matrix alone:
    :math:`\lVert g_i - z\rVert^2 = (D\lambda)_i - \tfrac12 \lambda^\top D \lambda` with
    :math:`D` the accurate pairwise squared distances (float64; algebraically the same as
    :math:`K_{ii} - 2(K\lambda)_i + \lambda^\top K \lambda` with the double-centred Gram
    :math:`K = -\tfrac12 J D J`, translation invariant). The (d,) output is formed once at the
    end by a single weighted pass over the rows: cost one Gram pass plus one read of G, whatever
    the number of iterations. The float64 cancellation bounds the distances' accuracy to about
    1e-8 of the data scale, the order of the smoothing ``eps``.

    Parameters
    ----------
    grads : array_like, shape (n, d)
        Client gradients.
    weights : array_like, shape (n,), optional
        Non-negative weights (default: all 1), at least one positive among the finite rows.
    tol : float, default 1e-14
        Relative tolerance on the objective decrease, in (0, 1).
    maxiter : int, default 100
        Maximum number of Weiszfeld iterations (>= 1).
    eps : float, default 1e-8
        Smoothing relative to the data scale, > 0.
    nonfinite : {"exclude", "raise"}, default "exclude"
        Non-finite rows are left out (and reported).
    return_info : bool, default False
        Also return a :class:`~robustagg.Diagnostics` with ``iterations``, ``objective``,
        ``converged``, ``weights`` (the final normalised Weiszfeld weights over the n rows)
        and ``distances`` (``||g_i - z||``).

    References
    ----------
    K. Pillutla, S. M. Kakade, Z. Harchaoui. *Robust Aggregation for Federated Learning*.
    IEEE Transactions on Signal Processing, 2022. E. Weiszfeld, 1937.
    """
    rule = "geometric_median"
    kw = dict(nonfinite=nonfinite, return_info=return_info)
    p = prepare(rule, grads, **kw)
    opts = check_params(rule, _GEOMETRIC_MEDIAN, weights=weights, tol=tol, maxiter=maxiter, eps=eps)
    tol, maxiter, eps, wa = opts["tol"], opts["maxiter"], opts["eps"], opts["weights"]
    if wa is not None and wa.shape[0] != p.n:
        raise ValueError(f"{rule}: argument 'weights' must have length n = {p.n}, got {wa.shape[0]}")
    # One pass over G for D (which also proves the rows finite), one for the output.
    p, D = _finite_distances(p, rule, grads, **kw)
    if wa is None:
        w = np.ones(p.m, dtype=np.float64)
    else:
        w = wa[p.rows]
        if not w.sum() > 0:
            raise ValueError(f"{rule}: argument 'weights' must have a positive sum over the finite rows")
    w = w / w.sum()
    # Weiszfeld on the (m, m) matrix: every iterate is an affine combination z = sum_j lam_j g_j
    # (sum lam = 1), whose distances follow from the pairwise squared distances alone:
    # ||g_i - z||^2 = (D lam)_i - lam^T D lam / 2.
    lam = w
    dist = _affine_distances(D, lam)
    scale = float(dist.max())
    objective = float(w @ dist)
    iterations = 0
    converged = True
    beta = w.copy()
    if scale == 0.0:  # every row identical: return it exactly (not the rounded mean)
        lam = np.zeros_like(w)
        lam[int(np.argmax(w > 0))] = 1.0
    else:
        floor = eps * scale
        converged = False
        for iterations in range(1, maxiter + 1):  # noqa: B007
            beta = w / np.maximum(dist, floor)
            beta /= beta.sum()
            dist_new = _affine_distances(D, beta)
            obj_new = float(w @ dist_new)
            if obj_new > objective:  # no further decrease (rounding or smoothing): keep the best point
                converged = obj_new - objective <= tol * objective
                break
            lam, dist = beta, dist_new
            decrease = objective - obj_new
            objective = obj_new
            if decrease <= tol * obj_new:
                converged = True
                break
    z = kernels.weighted_column_sum(p.G, p.rows, lam)
    info = None
    if return_info:
        info = p.diagnostics(
            w > 0,
            iterations=iterations,
            objective=objective,
            converged=converged,
            weights=p.expand_values(beta, fill=0.0),
            distances=p.expand_values(dist),
        )
    return p.finish(z, info, return_info=return_info)


register_rule("krum", krum)
register_rule("multi_krum", multi_krum)
register_rule("bulyan", bulyan)
register_rule("geometric_median", geometric_median)
