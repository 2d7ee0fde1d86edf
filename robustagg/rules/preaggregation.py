"""Pre-aggregators: maps from the (n, d) matrix of client gradients to a new (n', d) matrix,
composable with any rule (e.g. nearest-neighbour mixing, then Krum).

Every pre-aggregator has the signature of a rule, but returns a matrix::

    mixed = robustagg.nnm(grads, f=10)            # (n, d): each row mixed with its neighbours
    buckets = robustagg.bucketing(grads, s=2, rng=0)  # (ceil(n/2), d)
    rule = robustagg.pipeline("nnm", "krum")      # a rule: NNM then Krum
    aggregate = rule(grads, f=10)

A pre-aggregator necessarily returns a **new** matrix (n' rows of length d, the input's
dtype and array library): this is the one place where the library allocates a matrix of the
size of the input. Rows holding NaN/±Inf are excluded first (``nonfinite="exclude"``), so the
output has one row per finite input row (per bucket for :func:`bucketing`) and is finite.

Diagnostics (``return_info=True``) carry ``kept`` (the finite rows, which all contribute),
``nonfinite`` and ``sources``: a boolean (n', n) matrix whose row k marks the input rows that
output row k is made of. :func:`pipeline` chains ``sources`` to report which input rows
contributed to the final aggregate.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np

from .._diagnostics import Diagnostics
from .._lazy import LazyModule
from .._params import BOOLEAN, FAULTS, NONFINITE, SEED, Integer, Optional, Real, check_params
from .._registry import PREAGGREGATORS, RULES, call_with_supported, register_preaggregator
from .._validation import prepare

kernels = LazyModule("robustagg.kernels", globals(), "kernels")  # imported at the first call

__all__ = ["arc", "bucketing", "clipping", "nnm", "pipeline"]

# The options, declared once (robustagg._params): ``nonfinite`` and ``return_info`` are checked
# by ``prepare``, ``f`` by ``check_f`` against the bound n > 2f; a composed rule (Pipeline) checks
# its own call's options before running its steps.
_OPTIONS = {"nonfinite": NONFINITE, "return_info": BOOLEAN}
_CLIPPING = {"threshold": Optional(Real(low=0.0)), "quantile": Real(low=0.0, high=1.0), **_OPTIONS}
_WITH_F = {"f": FAULTS, **_OPTIONS}
_BUCKETING = {"s": Integer(low=1), "rng": SEED, **_OPTIONS}
_PIPELINE = {"f": FAULTS, "rng": SEED, **_OPTIONS}
_TABLES = {  # by rule; "pipeline" is the call of the rule pipeline() returns
    "clipping": _CLIPPING,
    "nnm": _WITH_F,
    "bucketing": _BUCKETING,
    "arc": _WITH_F,
    "pipeline": _PIPELINE,
}


def _sources(p, groups_over_rows: np.ndarray) -> np.ndarray:
    """A (n', m) boolean matrix over the finite rows as a (n', n) matrix over all rows."""
    out = np.zeros((groups_over_rows.shape[0], p.n), dtype=bool)
    out[:, p.rows] = groups_over_rows
    return out


def _clip_scales(norms: np.ndarray, threshold: float) -> np.ndarray:
    """min(1, threshold / norm), 1 for zero rows."""
    scales = np.ones_like(norms)
    big = norms > threshold
    scales[big] = threshold / norms[big]
    return scales


# ----------------------------------------------------------------------------------------
# clipping
# ----------------------------------------------------------------------------------------
def clipping(
    grads: Any,
    *,
    threshold: float | None = None,
    quantile: float = 0.5,
    nonfinite: str = "exclude",
    return_info: bool = False,
) -> Any:
    r"""Norm clipping of every row (pre-aggregator).

    .. math:: \mathrm{clip}_\tau(g_i) = g_i \cdot \min\left(1, \frac{\tau}{\|g_i\|_2}\right)

    With a static ``threshold`` τ the rule is ByzFL's ``Clipping``; with ``threshold=None`` the
    threshold is *adaptive*: the ``quantile`` (default 0.5, the median; NumPy's linear
    interpolation) of the norms of the finite rows received this round, as in the
    median-norm clipping of SignGuard and of clipped clustering.

    Parameters
    ----------
    grads : array_like, shape (n, d)
        Client gradients (any array library, or a sequence of 1-D arrays).
    threshold : float or None, default None
        Static clipping threshold τ ≥ 0; ``None`` for the adaptive threshold.
    quantile : float in [0, 1], default 0.5
        Quantile of the norms used as the adaptive threshold.
    nonfinite : {"exclude", "raise"}, default "exclude"
        Rows holding NaN/±Inf are dropped from the output (and reported) or make the call raise.
    return_info : bool, default False
        Also return a :class:`~robustagg.Diagnostics` with ``norms``, ``threshold``,
        ``scales``, ``clipped`` (over the n input rows) and ``sources``.

    Returns
    -------
    matrix : array, shape (n', d)
        A new matrix, one clipped row per finite input row (n' = number of finite rows), same
        library and dtype as ``grads``.
    """
    rule = "clipping"
    opts = check_params(rule, _CLIPPING, quantile=quantile, threshold=threshold)
    quantile, threshold = opts["quantile"], opts["threshold"]
    p = prepare(rule, grads, nonfinite=nonfinite, return_info=return_info)
    norms = kernels.row_norms(p.G, p.rows)
    tau = float(np.quantile(norms, quantile)) if threshold is None else threshold
    scales = _clip_scales(norms, tau)
    out = kernels.clip_rows(p.G, p.rows, tau)
    info = None
    if return_info:
        info = p.diagnostics(
            norms=p.expand_values(norms),
            threshold=tau,
            scales=p.expand_values(scales),
            clipped=p.expand(scales < 1.0),
            sources=_sources(p, np.eye(p.m, dtype=bool)),
        )
    return p.finish(out, info, return_info)


# ----------------------------------------------------------------------------------------
# nearest-neighbour mixing
# ----------------------------------------------------------------------------------------
def nnm(grads: Any, f: int, *, nonfinite: str = "exclude", return_info: bool = False) -> Any:
    r"""Nearest-neighbour mixing (NNM; Allouah et al., AISTATS 2023) (pre-aggregator).

    Each row is replaced by the mean of its n − f nearest rows (Euclidean), itself included:

    .. math:: y_i = \frac{1}{n-f} \sum_{j \in N_i} g_j, \qquad
              N_i = \text{the } n-f \text{ rows closest to } g_i

    Convention: row i always belongs to its own neighbourhood (even when duplicates of it
    exist); the remaining ties in distance go to the lower row index. Needs n > 2f. Rows
    holding NaN/±Inf are excluded first and counted against f (n' = n - k rows, f' = f - k).

    Cost: the n × n distance matrix (one Gram pass over G) and the mixing ``W @ G`` with W the
    (n', n') neighbourhood-averaging matrix, by BLAS over float64 column blocks: O(n² d).

    Parameters
    ----------
    grads : array_like, shape (n, d)
        Client gradients.
    f : int
        Number of Byzantine clients (n > 2f).
    nonfinite : {"exclude", "raise"}, default "exclude"
    return_info : bool, default False
        Diagnostics carry ``neighbors`` (n', n' - f') indices into the input rows,
        ``distances`` (the n × n Euclidean distance matrix, NaN for excluded rows) and
        ``sources``.

    Returns
    -------
    matrix : array, shape (n', d)
        A new matrix, one mixed row per finite input row.

    References
    ----------
    Y. Allouah, S. Farhadkhani, R. Guerraoui, N. Gupta, R. Pinot, J. Stephan. "Fixing by
    Mixing: A Recipe for Optimal Byzantine ML under Heterogeneity", AISTATS 2023.
    """
    p = prepare(
        "nnm",
        grads,
        f=f,
        min_n=lambda f: 2 * f + 1,
        bound="n > 2f",
        nonfinite=nonfinite,
        return_info=return_info,
    )
    m, k = p.m, p.m - p.f_eff
    D2 = kernels.sq_distances(p.G, p.rows)
    neighbors = _nearest(D2, k)
    W = np.zeros((m, m), dtype=np.float64)
    np.put_along_axis(W, neighbors, 1.0 / k, axis=1)
    out = kernels.mix_rows(p.G, p.rows, W)
    info = None
    if return_info:
        full = np.full((p.n, p.n), np.nan)
        full[np.ix_(p.rows, p.rows)] = np.sqrt(D2)
        info = p.diagnostics(neighbors=p.rows[neighbors], distances=full, sources=_sources(p, W > 0))
    return p.finish(out, info, return_info)


def _nearest(D2: np.ndarray, k: int) -> np.ndarray:
    """For each row the k nearest rows, itself first, then by distance (ties: lower index)."""
    D = D2.copy()
    np.fill_diagonal(D, -1.0)  # itself first, whatever duplicates exist
    return np.argsort(D, axis=1, kind="stable")[:, :k]


# ----------------------------------------------------------------------------------------
# bucketing
# ----------------------------------------------------------------------------------------
def bucketing(
    grads: Any,
    *,
    s: int = 2,
    rng: Any = None,
    nonfinite: str = "exclude",
    return_info: bool = False,
) -> Any:
    r"""Bucketing (Karimireddy, He, Jaggi, ICLR 2022) (pre-aggregator).

    The rows are shuffled by a random permutation π (``rng.permutation(n')`` over the finite
    rows) and cut into ⌈n'/s⌉ consecutive buckets of s rows; each bucket is replaced by its
    mean:

    .. math:: y_k = \frac{1}{|B_k|} \sum_{i \in B_k} g_{\pi(i)}, \quad
              B_k = \{ks, \dots, \min((k+1)s, n') - 1\}

    When s does not divide n', the last bucket holds the n' mod s remaining rows (as in the
    paper's Algorithm 1 and ByzFL). A following rule sees ⌈n'/s⌉ rows, of which at most f
    are contaminated; :func:`pipeline` passes f on unchanged.

    Parameters
    ----------
    grads : array_like, shape (n, d)
        Client gradients.
    s : int, default 2
        Bucket size (s = 2 is the paper's choice); s = 1 only shuffles.
    rng : None, int or numpy.random.Generator
        Randomness of the permutation; the same seed gives the same buckets.
    nonfinite : {"exclude", "raise"}, default "exclude"
    return_info : bool, default False
        Diagnostics carry ``permutation`` (input row indices in shuffled order),
        ``buckets`` (list of arrays of input row indices) and ``sources``.

    Returns
    -------
    matrix : array, shape (ceil(n'/s), d)
        A new matrix of bucket means.
    """
    rule = "bucketing"
    opts = check_params(rule, _BUCKETING, s=s, rng=rng)
    s, generator = opts["s"], opts["rng"]
    p = prepare(rule, grads, nonfinite=nonfinite, return_info=return_info)
    perm = generator.permutation(p.m)
    members = p.rows[perm].astype(np.int64)
    offsets = np.append(np.arange(0, p.m, s, dtype=np.int64), np.int64(p.m))
    out = kernels.group_means(p.G, members, offsets)
    info = None
    if return_info:
        buckets = [members[offsets[k] : offsets[k + 1]] for k in range(offsets.size - 1)]
        src = np.zeros((len(buckets), p.n), dtype=bool)
        for k, b in enumerate(buckets):
            src[k, b] = True
        info = p.diagnostics(permutation=members, buckets=buckets, sources=src)
    return p.finish(out, info, return_info)


# ----------------------------------------------------------------------------------------
# adaptive robust clipping
# ----------------------------------------------------------------------------------------
def arc(grads: Any, f: int, *, nonfinite: str = "exclude", return_info: bool = False) -> Any:
    r"""Adaptive robust clipping (ARC; Allouah et al., NeurIPS 2024) (pre-aggregator).

    The k = ⌊2 (f/n)(n − f)⌋ rows of largest norm are clipped to the norm of the (k+1)-th
    largest, the others are left as they are:

    .. math:: y_i = g_i \min\left(1, \frac{\|g_{(k+1)}\|}{\|g_i\|}\right)

    with ‖g₍₁₎‖ ≥ ‖g₍₂₎‖ ≥ … the sorted norms. Convention: the count uses the rows actually
    received and finite (n' rows, f' = f − #non-finite), as ByzFL's ``ARC`` does with n;
    rows tied with the threshold are unchanged, so the result does not depend on row order.
    k = 0 (f = 0) returns the rows unchanged. Needs n > 2f.

    Parameters
    ----------
    grads : array_like, shape (n, d)
    f : int
        Number of Byzantine clients (n > 2f).
    nonfinite : {"exclude", "raise"}, default "exclude"
    return_info : bool, default False
        Diagnostics carry ``norms``, ``n_clipped`` (k), ``threshold``, ``scales``, ``clipped``
        and ``sources``.

    Returns
    -------
    matrix : array, shape (n', d)
        A new matrix, one row per finite input row.

    References
    ----------
    Y. Allouah, R. Guerraoui, N. Gupta, A. Jellouli, G. Rizk, J. Stephan. "Boosting Robustness
    by Clipping Gradients in Distributed Learning", NeurIPS 2024.
    """
    p = prepare(
        "arc",
        grads,
        f=f,
        min_n=lambda f: 2 * f + 1,
        bound="n > 2f",
        nonfinite=nonfinite,
        return_info=return_info,
    )
    m, fe = p.m, p.f_eff
    k = int(math.floor(2.0 * fe * (m - fe) / m))
    norms = kernels.row_norms(p.G, p.rows)
    if k == 0:
        tau = float(np.max(norms))
    else:
        tau = float(np.sort(norms)[::-1][k])
    scales = _clip_scales(norms, tau)
    out = kernels.clip_rows(p.G, p.rows, tau)
    info = None
    if return_info:
        info = p.diagnostics(
            norms=p.expand_values(norms),
            n_clipped=k,
            threshold=tau,
            scales=p.expand_values(scales),
            clipped=p.expand(scales < 1.0),
            sources=_sources(p, np.eye(m, dtype=bool)),
        )
    return p.finish(out, info, return_info)


# ----------------------------------------------------------------------------------------
# composition
# ----------------------------------------------------------------------------------------
def _resolve(step: Any, table: dict, kind: str) -> tuple[Callable[..., Any], dict, str]:
    options: dict = {}
    if isinstance(step, tuple):
        if len(step) != 2 or not isinstance(step[1], dict):
            raise TypeError(
                f"pipeline: a step given as a tuple must be (name_or_function, options_dict), got {step!r}"
            )
        step, options = step
    if callable(step):
        return step, dict(options), getattr(step, "__name__", kind)
    if not isinstance(step, str):
        raise TypeError(f"pipeline: a step must be a name, a function or (name, options); got {step!r}")
    if step not in table:
        raise ValueError(f"pipeline: unknown {kind} {step!r}; available: {', '.join(sorted(table))}")
    return table[step], dict(options), step


def _call(fn, x, f, generator, nonfinite, options):
    """Run one step asking for diagnostics; ``(result, None)`` when the step has none."""
    res = call_with_supported(fn, x, f=f, rng=generator, nonfinite=nonfinite, return_info=True, **options)
    if isinstance(res, tuple) and len(res) == 2 and isinstance(res[1], Diagnostics):
        return res
    return res, None


def pipeline(*steps: Any, name: str | None = None) -> Pipeline:
    r"""Compose pre-aggregators with a rule: ``pipeline("nnm", "krum")`` is NNM then Krum.

    Parameters
    ----------
    *steps : str, callable or (str or callable, dict)
        Pre-aggregators (registered names such as ``"clipping"``, ``"nnm"``, ``"bucketing"``,
        ``"arc"``, or functions (n, d) → (n', d)) followed by one rule (a registered name or
        a function), each optionally with its options, e.g. ``("bucketing", {"s": 2})``.
        A single string ``"nnm+krum"`` is split on ``+``.
    name : str, optional
        The composed rule's name (default: the step names joined by ``+``); register it with
        ``robustagg.register_rule(name, rule)`` to use it by name (trainer, experiments).

    Returns
    -------
    rule : Pipeline
        A callable ``rule(grads, f=0, *, rng=None, nonfinite="exclude", return_info=False)``.
        ``f`` goes to every step that accepts it (less the rows excluded as non-finite by the
        first step); ``rng`` is turned into one Generator shared, in order, by the random steps.
        With ``return_info=True`` the diagnostics carry ``steps`` (each step's diagnostics)
        and ``kept``: the input rows that contributed to a row the final rule kept (through
        the pre-aggregators' ``sources``). The object pickles (to ship it to Dask, Ray or
        Flower processes) whenever its step functions and options do: registered steps are
        module-level functions, pickled by reference.

    Examples
    --------
    >>> import numpy as np, robustagg
    >>> G = np.random.default_rng(0).normal(size=(7, 3))
    >>> rule = robustagg.pipeline(("bucketing", {"s": 2}), "mean")
    >>> rule(G, rng=0).shape
    (3,)
    """
    return Pipeline(steps, name=name)


class Pipeline:
    """A composed rule: pre-aggregators then a rule (built by :func:`pipeline`).

    A plain object rather than a closure, so that it pickles by its attributes: the steps as
    given and the resolved step functions with their options (registered steps are module-level
    functions, pickled by reference, so the process that unpickles needs no registration).

    Parameters
    ----------
    steps : tuple
        The steps as :func:`pipeline` takes them (a single ``"a+b"`` string is split on ``+``).
    name : str, optional
        The composed rule's name (default: the step names joined by ``+``).

    Attributes
    ----------
    steps : tuple
        The steps as given (after splitting a ``"a+b"`` string).
    name : str
        The composed rule's name, used in messages and diagnostics.
    """

    def __init__(self, steps: tuple[Any, ...], name: str | None = None) -> None:
        steps = tuple(steps)
        if len(steps) == 1 and isinstance(steps[0], str) and "+" in steps[0]:
            steps = tuple(s.strip() for s in steps[0].split("+"))
        if not steps:
            raise ValueError("pipeline: needs at least one step (the final rule)")
        if name is not None and not isinstance(name, str):
            raise TypeError(f"pipeline: argument 'name' must be a str or None, got {name!r}")
        pre = [_resolve(s, PREAGGREGATORS, "pre-aggregator") for s in steps[:-1]]
        final = _resolve(steps[-1], RULES, "rule")
        self.steps = steps
        self.name = name or "+".join(n for _, _, n in (*pre, final))
        self._given_name = name
        self._pre = pre
        self._final = final
        # what a function built by ``def`` would carry (RobustAggregator, the trainer and the
        # experiment tables read __name__)
        self.__name__ = self.name.replace("+", "_then_")
        self.__qualname__ = self.__name__
        self.__doc__ = f"The composition {self.name} (built by robustagg.pipeline)."

    def __repr__(self) -> str:
        args = [repr(s) for s in self.steps]
        if self._given_name is not None:
            args.append(f"name={self._given_name!r}")
        return f"robustagg.pipeline({', '.join(args)})"

    def __call__(
        self,
        grads: Any,
        f: int = 0,
        *,
        rng: Any = None,
        nonfinite: str = "exclude",
        return_info: bool = False,
    ) -> Any:
        label = self.name
        opts = check_params(label, _PIPELINE, rng=rng, f=f, nonfinite=nonfinite, return_info=return_info)
        generator = opts["rng"]
        current = grads
        infos: list[Diagnostics] = []
        f_now = f
        sources = None  # (rows of current, n) boolean
        nonfinite_mask = None
        traced = True  # whether every step reported where its rows come from
        for fn, options, _ in self._pre:
            current, info = _call(fn, current, f_now, generator, nonfinite, options)
            infos.append(info)
            if info is None:
                traced = False
                continue
            if nonfinite_mask is None:
                nonfinite_mask = info.nonfinite
                f_now = max(f - int(nonfinite_mask.sum()), 0)
            src = info["sources"] if "sources" in info else np.eye(len(info.kept), dtype=bool)
            sources = src if sources is None else (src.astype(np.int64) @ sources.astype(np.int64)) > 0
        fn, options, _ = self._final
        out, info = _call(fn, current, f_now, generator, nonfinite, options)
        infos.append(info)
        if not return_info:
            return out
        if not self._pre:
            return out, info
        if nonfinite_mask is None:
            raise TypeError(f"{label}: the pre-aggregators give no diagnostics; return_info=True needs them")
        if traced and info is not None and sources is not None:
            kept = sources[np.asarray(info.kept, dtype=bool)].any(axis=0)
        else:
            kept = ~nonfinite_mask
        return out, Diagnostics(label, kept=kept, nonfinite=nonfinite_mask, steps=infos)


register_preaggregator("clipping", clipping)
register_preaggregator("nnm", nnm)
register_preaggregator("bucketing", bucketing)
register_preaggregator("arc", arc)
