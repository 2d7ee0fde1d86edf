"""SignGuard (Xu et al., "Byzantine-robust Federated Learning through Collaborative Malicious
Gradient Filtering", the paper's Algorithm 2) and its variants SignGuard-Sim and SignGuard-Dist.

Per round, on the (n, d) matrix G of client gradients:

1. **Norm filter.** ``M = median_i |g_i|`` (NumPy's median: the mean of the two middle
   values for even n); ``S1 = {i : L <= |g_i| / M <= R}`` (inclusive, L = 0.1, R = 3.0).
2. **Sign features.** ``k = max(1, round(fraction * d))`` coordinates drawn uniformly without
   replacement (or a contiguous random window); per row the fractions of positive, zero and
   negative entries there. SignGuard-Sim / -Dist append one similarity feature.
3. **Clustering.** Flat-kernel Mean-Shift (scikit-learn's ``MeanShift(bin_seeding=True,
   cluster_all=False)`` with ``estimate_bandwidth(F, quantile=0.5)``, reimplemented in Numba:
   :mod:`robustagg.clustering`) or 2-means; ``S2`` = the largest cluster.
4. **Aggregation.** ``S = S1 ∩ S2``; output ``(1/|S|) Σ_{i∈S} g_i · min(1, M/|g_i|)``.

Non-finite rows are excluded first (the library's policy) and everything above runs on the
remaining rows. See ``docs/signguard.md`` for the conventions, edge cases and measured
selection rates.

The options are declared once, in ``robustagg.rules._signguard_options`` (defaults,
constraints, the Parameters section below); the stages (coordinates, statistics, decision,
average) are ``robustagg.rules._signguard_core``, which the Dask twin
(:func:`robustagg.dask.signguard`) runs as well.
"""

from __future__ import annotations

import numbers
from collections.abc import Callable
from typing import Any

import numpy as np

from .._array import to_numpy
from .._registry import register_rule
from .._validation import check_choice, check_rng, prepare
from ._signguard_core import average_kept_rows, decide, diagnostics, numpy_statistics, sample_coordinates
from ._signguard_options import DEFAULTS, SignGuardOptions, check_options, parameters_doc

__all__ = ["SignGuard", "signguard", "signguard_dist", "signguard_sim"]


def _run(rule: str, grads: Any, similarity: str | None, values: dict[str, Any]):
    """SignGuard on NumPy: returns (Prepared, NumPy result, Diagnostics). ``values`` are the
    public function's options by name (with ``reference`` for the variants)."""
    p = prepare(rule, grads, nonfinite=values["nonfinite"], return_info=values["return_info"])
    checked = check_options(rule, d=p.d, **values)
    reference = checked.pop("reference", None)
    o = SignGuardOptions(**checked)
    if o.sign_clustering:
        coords = sample_coordinates(p.d, o.coordinates, o.coordinate_fraction, o.rng)
    else:
        coords = np.empty(0, dtype=np.int64)
    stats = numpy_statistics(p, coords, similarity if o.sign_clustering else None, reference)
    decision = decide(stats, o)
    if decision.zero_median:
        # at least half of the rows are zero: the output is the zero vector (the mean of the
        # zero rows, which are reported as kept)
        result = np.zeros(p.d, dtype=p.G.dtype)
    else:
        options = {} if o.aggregator_options is None else o.aggregator_options
        result = average_kept_rows(rule, o.aggregator, p.G, p.rows[decision.kept], decision.weights, options)
    return p, result, diagnostics(rule, stats, decision, o.sign_clustering)


def _aggregate(rule: str, similarity: str | None, grads: Any, **values: Any) -> Any:
    p, result, info = _run(rule, grads, similarity, values)
    return p.finish(result, info, values["return_info"])


_RETURNS_DOC = """
    Returns
    -------
    aggregate : array, shape (d,)
        Same array library, device and float dtype as ``grads``.
    info : Diagnostics
        Only with ``return_info=True``.

    Notes
    -----
    * **Empty S.** When ``S1 ∩ S2`` is empty the rows of S1 are averaged instead
      (``info.fallback`` is True). S1 is never empty when M > 0: the median row (for even n
      the upper middle row, whose ratio lies in [1, 2]) always passes.
    * **M = 0.** At least half of the rows are zero: the output is the zero vector and the
      zero rows are reported as kept.
    * **Small n.** For n <= 3 the bandwidth is 0 (the nearest point counting the point itself),
      so the clustering keeps everyone and only the norm filter and clipping act.
"""

# The three signatures are written out (IDEs, type checkers and the API pages read them from
# the source); each lists the options of robustagg.rules._signguard_options in its order, with
# its defaults (tests/test_signguard_options.py checks it). locals(), first thing in the body,
# is every parameter by name.


def signguard(
    grads: Any,
    *,
    lower: float = 0.1,
    upper: float = 3.0,
    coordinate_fraction: float = 0.1,
    coordinates: Any = "random",
    feature_scaling: str = "none",
    clustering: str = "meanshift",
    aggregator: str | Callable[..., Any] = "mean",
    aggregator_options: dict | None = None,
    norm_filter: bool = True,
    sign_clustering: bool = True,
    clipping: bool = True,
    rng: Any = None,
    nonfinite: str = "exclude",
    return_info: bool = False,
) -> Any:
    return _aggregate("signguard", None, **locals())


def signguard_sim(
    grads: Any,
    *,
    reference: Any = None,
    lower: float = 0.1,
    upper: float = 3.0,
    coordinate_fraction: float = 0.1,
    coordinates: Any = "random",
    feature_scaling: str = "none",
    clustering: str = "meanshift",
    aggregator: str | Callable[..., Any] = "mean",
    aggregator_options: dict | None = None,
    norm_filter: bool = True,
    sign_clustering: bool = True,
    clipping: bool = True,
    rng: Any = None,
    nonfinite: str = "exclude",
    return_info: bool = False,
) -> Any:
    return _aggregate("signguard_sim", "cosine", **locals())


def signguard_dist(
    grads: Any,
    *,
    reference: Any = None,
    lower: float = 0.1,
    upper: float = 3.0,
    coordinate_fraction: float = 0.1,
    coordinates: Any = "random",
    feature_scaling: str = "none",
    clustering: str = "meanshift",
    aggregator: str | Callable[..., Any] = "mean",
    aggregator_options: dict | None = None,
    norm_filter: bool = True,
    sign_clustering: bool = True,
    clipping: bool = True,
    rng: Any = None,
    nonfinite: str = "exclude",
    return_info: bool = False,
) -> Any:
    return _aggregate("signguard_dist", "distance", **locals())


signguard.__doc__ = (
    r"""SignGuard: norm filter ∩ sign-statistics clustering, then the clipped mean (Algorithm 2).

    .. math::
        M = \operatorname{med}_i \lVert g_i\rVert,\quad
        S_1 = \{i : L \le \lVert g_i\rVert / M \le R\},\quad
        S_2 = \text{largest Mean-Shift cluster of the sign features},

    .. math::
        \tilde g = \frac{1}{|S|}\sum_{i \in S} g_i \min\!\left(1, \frac{M}{\lVert g_i\rVert}\right),
        \qquad S = S_1 \cap S_2 .

    The sign features of row i are the fractions of positive, zero and negative entries on k
    sampled coordinates. Reference: J. Xu, S.-L. Huang, L. Song, T. Lan, "Byzantine-robust
    Federated Learning through Collaborative Malicious Gradient Filtering", ICDCS 2022.
    Does not need the number of Byzantine clients.
"""
    + parameters_doc()
    + _RETURNS_DOC
    + """
    Examples
    --------
    >>> import numpy as np, robustagg
    >>> rng = np.random.default_rng(0)
    >>> G = rng.normal(0.1, 1.0, size=(20, 1000))
    >>> G[:4] = -G[:4]                       # four sign-flipping clients
    >>> out, info = robustagg.signguard(G, rng=0, return_info=True)
    >>> out.shape
    (1000,)
"""
)

signguard_sim.__doc__ = (
    r"""SignGuard-Sim: SignGuard with a 4th feature, the cosine similarity to a reference.

    ``s_i = cos(g_i, reference)`` (or the median over j != i of ``cos(g_i, g_j)``), put on the
    sign features' scale as in the authors' code: ``clip(s_i, 0, med(s)) / (5 med(s))``, a
    value in [0, 0.2] (0 for every row when ``med(s) <= 0``). Rows with zero norm have
    similarity 0. Everything else is :func:`signguard`.
"""
    + parameters_doc(reference=True)
    + _RETURNS_DOC
)

signguard_dist.__doc__ = (
    r"""SignGuard-Dist: SignGuard with a 4th feature, the Euclidean distance to a reference.

    ``s_i = |g_i - reference|`` (or the median over j != i of ``|g_i - g_j|``), put on the sign
    features' scale as in the authors' code: ``0.2 * [s_i >= 1.1 med(s)]``. Everything else is
    :func:`signguard`.
"""
    + parameters_doc(reference=True)
    + _RETURNS_DOC
)


class SignGuard:
    """Stateful SignGuard for training loops: keeps the rng and the previous aggregate.

    Each call aggregates one round. For ``variant="sim"`` / ``"dist"`` the previous round's
    aggregate is the reference of the similarity feature (the first round, and the round after
    :meth:`reset`, uses the pairwise-median reference). The wrapper keeps its own copy of each
    aggregate (``previous``), so modifying the returned array in place does not change the next
    round.

    Parameters
    ----------
    variant : {"plain", "sim", "dist"}, default "plain"
    rng : None, int or numpy.random.Generator
        One generator is created at construction and advanced by every round.
    **options
        Any keyword argument of :func:`signguard` (``lower``, ``upper``, ``clustering``, ...)
        except ``reference``, ``rng`` and ``return_info``. They are validated here, at
        construction, with the messages of :func:`signguard` (naming ``SignGuard``); column
        indices given as ``coordinates`` are checked against d at each call.

    Attributes
    ----------
    previous : numpy.ndarray or None
        A private copy of the last aggregate (in the compute dtype: float32 or float64).
    last_info : Diagnostics or None
        The last call's diagnostics.

    Notes
    -----
    **The gradients' length d** of ``"sim"`` and ``"dist"`` is fixed by the previous round (its
    aggregate is the next reference): a call with another d is a ``ValueError`` naming both;
    :meth:`reset` starts over with any d. ``"plain"`` keeps no state that depends on d.

    **Thread safety.** One instance may be shared by threads: each call reads the state (the
    previous aggregate and the rng), computes and stores the new state under a lock, so N
    concurrent calls leave the same state as the same N calls made one after another in the
    order they took the lock. (The conversion of the input and of the result happen outside the
    lock.)

    **Pickling.** The instance pickles (and copies) with its options, rng and previous
    aggregate; the lock is not pickled, a new one is made on unpickling.

    Examples
    --------
    >>> import numpy as np, robustagg
    >>> agg = robustagg.SignGuard("sim", rng=0)
    >>> G = np.random.default_rng(1).normal(0.1, 1.0, size=(10, 100))
    >>> agg(G).shape
    (100,)
    """

    _VARIANTS = {
        "plain": (None, "signguard"),
        "sim": ("cosine", "signguard_sim"),
        "dist": ("distance", "signguard_dist"),
    }
    #: The options the wrapper takes (every option of :func:`signguard` but the managed ones).
    OPTIONS = tuple(name for name in DEFAULTS if name not in ("rng", "return_info"))

    def __init__(self, variant: str = "plain", *, rng: Any = None, **options: Any) -> None:
        import threading

        check_choice(variant, self._VARIANTS, rule="SignGuard", name="variant")
        for bad in ("reference", "return_info", "rng"):
            if bad in options:
                raise TypeError(f"SignGuard: {bad!r} is managed by the wrapper; pass it to the call instead")
        unknown = set(options) - set(self.OPTIONS)
        if unknown:
            raise TypeError(
                f"SignGuard: unknown option(s) {sorted(unknown)}; allowed: {sorted(self.OPTIONS)}"
            )
        # every option, given or default, checked as the functions check it (without d: column
        # indices are checked against d at each call)
        self._opts = check_options(
            "SignGuard", **{name: options.get(name, DEFAULTS[name]) for name in self.OPTIONS}
        )
        self.variant = variant
        self.options = dict(options)
        self._seed = rng
        self.rng = check_rng(rng, rule="SignGuard")
        self.previous: np.ndarray | None = None
        self.last_info = None
        self._lock = threading.Lock()

    def __call__(self, grads: Any, *, return_info: bool = False) -> Any:
        """Aggregate one round; remembers the aggregate as the next round's reference.

        Parameters
        ----------
        grads : array_like, shape (n, d)
            Client gradients (for ``"sim"``/``"dist"``, d as in the previous round).
        return_info : bool, default False
            Also return the round's :class:`~robustagg.Diagnostics`.
        """
        similarity, rule = self._VARIANTS[self.variant]
        # converted once, outside the lock: the rule sees this NumPy view, the result goes back
        # to the caller's library and dtype through its context
        G, context = to_numpy(grads, rule=rule, name="grads", ndim=2)
        with self._lock:
            reference = self.previous if similarity is not None else None
            if reference is not None and reference.shape[0] != G.shape[1]:
                raise ValueError(
                    f"SignGuard: the gradients have length d = {G.shape[1]}, but the previous round's "
                    f"had d = {reference.shape[0]} (variant {self.variant!r} measures each row against "
                    "that aggregate); call reset() to start over with the new d, or use a new instance"
                )
            values = {**self._opts, "rng": self.rng, "return_info": return_info}
            if similarity is not None:
                values["reference"] = reference
            p, result, info = _run(rule, G, similarity, values)
            # a private copy in the aggregate's own dtype: the array handed back (or the tensor made
            # from it) may be scaled in place by the caller, which must not change the next round's
            # reference; a float32 aggregate is widened value by value inside the pass (the same
            # sums as from its float64 copy) and is read at half the bytes
            self.previous = np.array(result, copy=True)
            self.last_info = info
        p.context = context
        return p.finish(result, info, return_info)

    aggregate = __call__

    def reset(self) -> None:
        """Forget the previous aggregate (the next call may have any d); re-seed the rng when it
        was given as an int seed (a fresh one for ``rng=None``)."""
        with self._lock:
            self.previous = None
            self.last_info = None
            if self._seed is None or isinstance(self._seed, numbers.Integral):
                self.rng = check_rng(self._seed, rule="SignGuard")

    def __getstate__(self) -> dict:
        import copy

        with self._lock:  # a state no call is halfway through (the rng is advanced in place)
            state = self.__dict__.copy()
            state["rng"] = copy.deepcopy(self.rng)
        del state["_lock"]  # a lock does not pickle; each copy gets its own
        return state

    def __setstate__(self, state: dict) -> None:
        import threading

        self.__dict__.update(state)
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        opts = ", ".join(f"{k}={v!r}" for k, v in self.options.items())
        return f"SignGuard(variant={self.variant!r}" + (f", {opts})" if opts else ")")


register_rule("signguard", signguard)
register_rule("signguard_sim", signguard_sim)
register_rule("signguard_dist", signguard_dist)
