"""Clipping-based rules: centered clipping (Karimireddy, He, Jaggi, ICML 2021) with its stateful
wrapper, and clipped clustering (Li, Ngai, Voigt 2023)."""

from __future__ import annotations

import threading
from typing import Any

import numpy as np

from .._array import to_numpy
from .._lazy import LazyModule
from .._params import BOOLEAN, NONFINITE, Integer, Optional, Real, Vector, check_params
from .._registry import register_rule
from .._validation import prepare

kernels = LazyModule("robustagg.kernels", globals(), "kernels")  # imported at the first call

__all__ = ["CenteredClipping", "centered_clipping", "clipped_clustering"]


# The options, declared once (robustagg._params); the stateful CenteredClipping checks its own
# (all but return_info) with the same table at construction. ``nonfinite`` and ``return_info`` of
# a call are checked by ``prepare``.
_CENTERED_CLIPPING = {
    "center": Optional(Vector()),
    "tau": Real(low=0.0, low_open=True),
    "n_iters": Integer(low=1),
    "nonfinite": NONFINITE,
    "return_info": BOOLEAN,
}
_CLIPPED_CLUSTERING = {"threshold": Optional(Real(low=0.0)), "nonfinite": NONFINITE, "return_info": BOOLEAN}
_TABLES = {  # by rule
    "centered_clipping": _CENTERED_CLIPPING,
    "CenteredClipping": _CENTERED_CLIPPING,
    "clipped_clustering": _CLIPPED_CLUSTERING,
}


def _own_center(checked: np.ndarray | None, given: Any, d: int) -> np.ndarray:
    """The starting centre as a float64 array of the rule's own: zeros for ``None``, else the
    checked vector, copied when it is (a view of) the caller's memory."""
    if checked is None:
        return np.zeros(d, dtype=np.float64)
    return checked.copy() if checked is given or checked.base is not None else checked


def _run(p, v: np.ndarray, tau: float, n_iters: int):
    """The iterations on the finite rows; returns the float64 centre and the last clip factors."""
    m = p.m
    scales = np.ones(m)
    dist = np.zeros(m)
    for _ in range(n_iters):
        dist = np.sqrt(kernels.row_sq_distances_to(p.G, p.rows, v))
        scales = np.ones(m)
        big = dist > tau
        scales[big] = tau / dist[big]
        # v + (1/m) sum_i s_i (g_i - v) = (1 - sum(s)/m) v + (1/m) sum_i s_i g_i
        v = (1.0 - scales.sum() / m) * v + kernels.weighted_column_sum(p.G, p.rows, scales / m)
    return v, scales, dist


def centered_clipping(
    grads: Any,
    *,
    center: Any = None,
    tau: float = 10.0,
    n_iters: int = 5,
    nonfinite: str = "exclude",
    return_info: bool = False,
) -> Any:
    r"""Centered clipping (CC): clipped averaging around a centre, iterated.

    .. math::
        v_0 = \text{center}, \qquad
        v_{l+1} = v_l + \frac{1}{n} \sum_{i=1}^{n} (g_i - v_l)
                  \min\left(1, \frac{\tau}{\|g_i - v_l\|_2}\right),
        \qquad \text{output } v_L

    In training, the centre is the previous round's aggregate (the server momentum); the
    stateful :class:`CenteredClipping` keeps it. This function is stateless: ``center=None``
    starts from the zero vector (ByzFL's default).

    Defaults: τ = 10 and L = 5 iterations (Blades' defaults); ByzFL uses τ = 100, L = 1 and
    the paper's theory a single iteration from the momentum. τ is on the scale of the
    gradients: choose it from their typical distance to the centre. CC does not use f.

    Parameters
    ----------
    grads : array_like, shape (n, d)
        Client gradients.
    center : array_like of shape (d,), optional
        Starting point v₀ (default zeros).
    tau : float, default 10.0
        Clipping radius τ > 0.
    n_iters : int, default 5
        Number of iterations L ≥ 1.
    nonfinite : {"exclude", "raise"}, default "exclude"
        Rows holding NaN/±Inf are left out (n is then the number of finite rows).
    return_info : bool, default False
        Diagnostics carry ``center`` (v₀), ``distances`` and ``scales`` (the clip factors of
        the last iteration, over the n rows) and ``clipped``.

    Returns
    -------
    aggregate : array, shape (d,)
        Same library and dtype as ``grads``.

    References
    ----------
    S. P. Karimireddy, L. He, M. Jaggi. "Learning from History for Byzantine Robust
    Optimization", ICML 2021.
    """
    rule = "centered_clipping"
    p = prepare(rule, grads, nonfinite=nonfinite, return_info=return_info)
    opts = check_params(rule, _CENTERED_CLIPPING, d=p.d, tau=tau, n_iters=n_iters, center=center)
    v0 = _own_center(opts["center"], center, p.d)
    v, scales, dist = _run(p, v0, opts["tau"], opts["n_iters"])
    info = None
    if return_info:
        info = p.diagnostics(
            center=v0,
            distances=p.expand_values(dist),
            scales=p.expand_values(scales),
            clipped=p.expand(scales < 1.0),
        )
    return p.finish(v, info, return_info)


class CenteredClipping:
    """Stateful centered clipping: each call starts from the previous call's aggregate.

    Parameters
    ----------
    tau : float, default 10.0
        Clipping radius τ > 0.
    n_iters : int, default 5
        Number of iterations L ≥ 1 per call.
    center : array_like of shape (d,), optional
        The first round's centre (default zeros); it fixes d.
    nonfinite : {"exclude", "raise"}, default "exclude"
        Every option is validated here, at construction, with the messages of
        :func:`centered_clipping` (naming ``CenteredClipping``).

    Attributes
    ----------
    center : numpy.ndarray or None
        The current centre (float64, a private copy), the last aggregate after a call.

    Notes
    -----
    **The gradients' length d is fixed** by the first call (or the ``center`` given): a call with
    another d is a ``ValueError`` naming both; :meth:`reset` starts over (from the zero vector,
    with any d).

    **Thread safety.** One instance may be shared by threads: each call reads the centre,
    computes and stores the new centre under a lock, so N concurrent calls leave the same
    centre as the same N calls made one after another in the order they took the lock. (The
    conversion of the input and of the result happen outside the lock.)

    **Pickling.** The instance pickles (and copies) with its centre and options; the lock is
    not pickled, a new one is made on unpickling.

    Examples
    --------
    >>> import numpy as np, robustagg
    >>> cc = robustagg.CenteredClipping(tau=1.0, n_iters=3)
    >>> G = np.ones((4, 2))
    >>> out = cc(G); out2 = cc(G)   # the second round starts from the first aggregate
    """

    _RULE = "CenteredClipping"

    def __init__(self, tau: float = 10.0, n_iters: int = 5, center: Any = None, nonfinite: str = "exclude"):
        rule = self._RULE
        c = d = None
        if center is not None:  # the centre given fixes d
            c = to_numpy(center, rule=rule, name="center", ndim=1)[0]
            d = c.shape[0]
        opts = check_params(
            rule, _CENTERED_CLIPPING, d=d, tau=tau, n_iters=n_iters, nonfinite=nonfinite, center=c
        )
        self.tau, self.n_iters, self.nonfinite = opts["tau"], opts["n_iters"], opts["nonfinite"]
        # float64, never the caller's memory
        self.center = None if c is None else _own_center(opts["center"], center, d)
        self._from_construction = center is not None
        self._lock = threading.Lock()

    def reset(self) -> None:
        """Forget the centre (also one given at construction): the next call starts from the zero
        vector and may have any length d."""
        with self._lock:
            self.center = None
            self._from_construction = False

    def __call__(self, grads: Any, *, return_info: bool = False) -> Any:
        """Aggregate one round from the current centre; the aggregate becomes the next centre.

        Parameters
        ----------
        grads : array_like, shape (n, d)
            Client gradients, d as in the previous calls.
        return_info : bool, default False
            As for :func:`centered_clipping`.
        """
        p = prepare("centered_clipping", grads, nonfinite=self.nonfinite, return_info=return_info)
        with self._lock:
            if self.center is not None and self.center.shape[0] != p.d:
                where = (
                    "given at construction" if self._from_construction else "the previous round's aggregate"
                )
                raise ValueError(
                    f"{self._RULE}: the gradients have length d = {p.d}, but the centre has length "
                    f"d = {self.center.shape[0]} ({where}); call reset() to start over from the zero "
                    "vector with the new d, or use a new instance"
                )
            v0 = np.zeros(p.d) if self.center is None else self.center
            v, scales, dist = _run(p, v0, self.tau, self.n_iters)
            # a private copy: the float64 aggregate is handed back as it is, and a caller scaling it
            # in place must not move the next round's starting centre
            self.center = v.copy()
            self._from_construction = False
        info = None
        if return_info:
            info = p.diagnostics(
                center=v0,
                distances=p.expand_values(dist),
                scales=p.expand_values(scales),
                clipped=p.expand(scales < 1.0),
            )
        return p.finish(v, info, return_info)

    def __getstate__(self) -> dict:
        with self._lock:  # a state no call is halfway through
            state = self.__dict__.copy()
        del state["_lock"]  # a lock does not pickle; each copy gets its own
        return state

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        d = "" if self.center is None else f", d={self.center.shape[0]}"
        return (
            f"CenteredClipping(tau={self.tau!r}, n_iters={self.n_iters!r}, nonfinite={self.nonfinite!r}{d})"
        )


# ----------------------------------------------------------------------------------------
# clipped clustering
# ----------------------------------------------------------------------------------------
def clipped_clustering(
    grads: Any,
    *,
    threshold: float | None = None,
    nonfinite: str = "exclude",
    return_info: bool = False,
) -> Any:
    r"""Clipped clustering (Li, Sun, Zheng 2023; Blades' ``Clippedclustering``).

    1. Clip every row to the threshold τ: :math:`\tilde g_i = g_i \min(1, \tau/\|g_i\|)`,
       τ = the median of the norms received this round (``threshold=None``) or a static τ.
    2. Agglomerative clustering of the rows into two clusters, average linkage on the cosine
       distance :math:`1 - \cos(g_i, g_j)` (clipping does not change cosines; a zero row is
       at distance 1 from every other row).
    3. Return the mean of the clipped rows of the larger cluster.

    Conventions where implementations disagree: Blades clips to the median of the norms of
    *every round so far* (a stateful history); this function uses the current round (pass
    ``threshold=`` to supply a running value). When the two clusters have the same size,
    the tighter one wins (smaller mean within-cluster cosine distance; then the one holding
    the lowest row index) -- Blades takes scikit-learn's label 0, which depends on row order. With two rows or fewer, every row is kept. The clustering is
    SciPy's average linkage cut at two clusters, the same tree as scikit-learn's
    ``AgglomerativeClustering(metric="precomputed", linkage="average")`` (the test oracle).
    Clipped clustering does not use f.

    Parameters
    ----------
    grads : array_like, shape (n, d)
    threshold : float or None, default None
        Static clipping threshold; ``None`` for the median norm.
    nonfinite : {"exclude", "raise"}, default "exclude"
    return_info : bool, default False
        Diagnostics: ``kept`` (the larger cluster), ``labels`` (0/1 over the n rows, −1 for
        excluded rows; 1 marks the kept cluster), ``threshold``, ``norms``,
        ``cosine_distances`` (n × n, NaN for excluded rows).

    Returns
    -------
    aggregate : array, shape (d,)

    References
    ----------
    S. Li, E. C. H. Ngai, T. Voigt. "An Experimental Study of Byzantine-Robust Aggregation
    Schemes in Federated Learning", IEEE Trans. Big Data, 2023 (clipped clustering).
    """
    from scipy.cluster.hierarchy import fcluster, linkage
    from scipy.spatial.distance import squareform

    from .. import kernels as _kernels

    rule = "clipped_clustering"
    threshold = check_params(rule, _CLIPPED_CLUSTERING, threshold=threshold)["threshold"]
    p = prepare(rule, grads, nonfinite=nonfinite, return_info=return_info)
    m = p.m
    norms = _kernels.row_norms(p.G, p.rows)
    tau = float(np.median(norms)) if threshold is None else threshold
    scales = np.ones(m)
    big = norms > tau
    scales[big] = tau / norms[big]
    D2 = _kernels.sq_distances(p.G, p.rows)
    nz = norms > 0
    cosd = np.ones((m, m))
    denom = 2.0 * np.outer(norms, norms)
    both = np.outer(nz, nz)
    cosd[both] = 1.0 - (norms[:, None] ** 2 + norms[None, :] ** 2 - D2)[both] / denom[both]
    cosd = np.clip(0.5 * (cosd + cosd.T), 0.0, 2.0)
    np.fill_diagonal(cosd, 0.0)
    if m <= 2:
        keep = np.ones(m, dtype=bool)
    else:
        labels = fcluster(
            linkage(squareform(cosd, checks=False), method="average"), t=2, criterion="maxclust"
        )

        # the larger cluster; equal sizes: the tighter one (smaller mean within-cluster
        # cosine distance), then the one holding the lowest row index
        def key(lab):
            members = labels == lab
            return (
                -int(members.sum()),
                float(cosd[np.ix_(members, members)].mean()),
                int(np.argmax(members)),
            )

        winner = min(np.unique(labels), key=key)
        keep = labels == winner
    weights = np.where(keep, scales, 0.0) / keep.sum()
    result = _kernels.weighted_column_sum(p.G, p.rows, weights)
    info = None
    if return_info:
        full = np.full((p.n, p.n), np.nan)
        full[np.ix_(p.rows, p.rows)] = cosd
        lab = np.full(p.n, -1, dtype=np.int64)
        lab[p.rows] = keep.astype(np.int64)
        info = p.diagnostics(
            keep, labels=lab, threshold=tau, norms=p.expand_values(norms), cosine_distances=full
        )
    return p.finish(result, info, return_info)


# registered in the order the package had before the rules were grouped by family (tables list
# the rules in the registry's order)
register_rule("clipped_clustering", clipped_clustering)
register_rule("centered_clipping", centered_clipping)
