"""The rules on Dask arrays chunked along d (extra ``[dask]``): aggregation past one machine's memory.

An ``(n, d)`` Dask array whose chunks hold all n rows and a range of columns (``chunks=(n, c)``;
other chunkings are rechunked to that) is aggregated in passes over its column blocks. Only
O(n²) quantities reach the driver; the aggregate comes back as a lazy ``(d,)`` Dask array with the
same column chunks (call ``.compute()`` or store it).

* **Coordinate-wise rules** (``mean``, ``median``, ``trimmed_mean``, ``meamed``): a first pass finds the
  non-finite rows as the validation layer defines them (the rows' squared norms, summed over the
  blocks: NaN/±Inf, or past ``sq_norm_limit``), then the public
  NumPy rule runs on every column block (``map_blocks``, ``drop_axis=0``) with those rows marked,
  so the block results are exactly the NumPy rule's columns.
* **Distance-based rules** (``krum``, ``multi_krum``, ``geometric_median``, and the field's
  ``mda``, ``monna``, ``smea``, ``caf``): one pass sums the
  blocks' centred n×n Gram matrices in float64 (a tree reduction); each block is centred on its own
  column mean, which leaves every pairwise distance unchanged. On the driver, classical
  multidimensional scaling turns the Gram matrix into n points ``Y`` with exactly the same pairwise
  distances (at most n - 1 coordinates), and the public NumPy rule decides on ``Y`` (same scores,
  ties, bounds, non-finite policy and diagnostics, since these rules depend only on distances).
  These rules depend on the rows only through their pairwise distances (and are invariant under
  rotations and translations), which is what makes the reduction exact. A second pass averages
  the chosen rows (Krum, Multi-Krum, MDA, MoNNA, SMEA: ``kernels.column_mean`` of the kept rows
  per block) or forms the same affine combination of the rows that the rule formed of the ``Y``
  points (geometric median, CAF).
* **SignGuard**: the NumPy rule's stages (``robustagg.rules._signguard_core``), with the passes
  over the data made block by block: a pass computes the row norms (block sums of squares) and the
  sign counts on the sampled coordinates (the same coordinates the NumPy ``signguard`` samples for
  the same ``rng``); the decision and the diagnostics run on the driver through the NumPy rule's
  own code; a last pass forms the clipped mean.

Inside Dask workers, limit Numba to one thread (``NUMBA_NUM_THREADS=1`` in the workers'
environment, e.g. ``LocalCluster(..., env={"NUMBA_NUM_THREADS": "1"})``) so that it does not
compete with Dask's own threads.

Example
-------
>>> import dask.array as da, robustagg.dask as rdask                       # doctest: +SKIP
>>> X = da.random.default_rng(0).normal(size=(50, 10**8), chunks=(50, 10**6))  # doctest: +SKIP
>>> aggregate, info = rdask.krum(X, f=10, return_info=True)               # doctest: +SKIP
>>> aggregate.compute()                                                     # doctest: +SKIP
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import numpy as np

try:
    import dask
    import dask.array as da
except ImportError as exc:  # pragma: no cover - exercised only without the extra
    raise ImportError("robustagg.dask needs Dask: pip install 'robustagg[dask]'") from exc

from .. import kernels
from .._registry import get_rule
from .._validation import check_choice, sq_norm_limit
from ..rules._signguard_core import RowStatistics, average_kept_rows, decide, diagnostics, sample_coordinates
from ..rules._signguard_options import AGGREGATORS, SignGuardOptions, check_options

__all__ = [
    "COORDINATEWISE_RULES",
    "DISTANCE_RULES",
    "aggregate",
    "geometric_median",
    "krum",
    "meamed",
    "mean",
    "median",
    "multi_krum",
    "signguard",
    "trimmed_mean",
]

#: Rules computed column block by column block.
COORDINATEWISE_RULES = ("mean", "median", "trimmed_mean", "meamed")
#: Rules decided from the n×n Gram matrix: "select" ones average the kept rows, "affine" ones
#: return an affine combination of the rows.
DISTANCE_RULES = {
    "krum": "select",
    "multi_krum": "select",
    "geometric_median": "affine",
    "mda": "select",
    "monna": "select",
    "smea": "select",
    "caf": "affine",
}


# --------------------------------------------------------------------------------------------
# input and block functions (top level: they travel to the workers)
# --------------------------------------------------------------------------------------------


def _as_column_blocks(X: Any, rule: str) -> da.Array:
    if not isinstance(X, da.Array):
        raise TypeError(
            f"robustagg.dask.{rule}: argument 'X' must be a dask.array.Array, got {type(X).__name__}"
        )
    if X.ndim != 2:
        raise ValueError(f"robustagg.dask.{rule}: argument 'X' must be an (n, d) matrix, got shape {X.shape}")
    n, d = X.shape
    if n == 0 or d == 0:
        raise ValueError(f"robustagg.dask.{rule}: argument 'X' has shape {X.shape}; n and d must be positive")
    kind = np.dtype(X.dtype).kind
    if kind not in "fiu":
        raise TypeError(
            f"robustagg.dask.{rule}: argument 'X' must hold real floating-point or integer values, got {X.dtype}"
        )
    if kind in "iu":
        X = X.astype(np.float64)
    elif X.dtype == np.float16:
        X = X.astype(np.float32)
    if len(X.chunks[0]) != 1:
        X = X.rechunk({0: -1})
    return X


def _block_sq_norms(block: np.ndarray) -> np.ndarray:
    """Each row's sum of squares over the block's columns, in float64 (NaN/Inf propagate)."""
    B = np.ascontiguousarray(block)
    return kernels.row_sq_norms(B, np.arange(B.shape[0], dtype=np.int64))


def _nonfinite_from_sq_norms(sq: np.ndarray) -> np.ndarray:
    """The validation layer's non-finite mask from the rows' squared norms over all columns:
    NaN/Inf, or past ``sq_norm_limit(n)`` (docs/conventions.md, "Non-finite rows")."""
    return ~(np.asarray(sq) <= sq_norm_limit(np.asarray(sq).shape[0]))


def _or(*masks: np.ndarray) -> np.ndarray:
    return np.logical_or.reduce(masks)


def _sum(*parts: Any) -> Any:
    """Sum of per-block statistics: arrays are added, boolean masks or-ed, tuples element-wise."""
    first = parts[0]
    if isinstance(first, tuple):
        return tuple(_sum(*items) for items in zip(*parts, strict=True))
    if np.asarray(first).dtype == bool:
        return _or(*parts)
    total = np.array(first, copy=True)
    for p in parts[1:]:
        total += p
    return total


def _tree_reduce(X: da.Array, block_fn: Callable[..., Any], *args: Any, split_every: int = 8) -> Any:
    """Apply ``block_fn(block, block_start, *args)`` to every column block, sum the results in a tree.

    One pass over the data; the per-block results (O(n²) at most) are summed ``split_every`` at a
    time, so no worker ever holds more than a few of them, and only the total reaches the driver.
    """
    blocks = X.to_delayed(optimize_graph=True).ravel()
    starts = _block_starts(X)
    fn = dask.delayed(block_fn, pure=True)
    parts = [fn(b, s, *args) for b, s in zip(blocks, starts, strict=True)]
    add = dask.delayed(_sum, pure=True)
    while len(parts) > 1:
        parts = [
            add(*parts[i : i + split_every]) if len(parts[i : i + split_every]) > 1 else parts[i]
            for i in range(0, len(parts), split_every)
        ]
    (total,) = dask.compute(parts[0])
    return total


def _mark_rows(block: np.ndarray, bad: np.ndarray) -> np.ndarray:
    """The block with every globally non-finite row set to NaN (a copy only when needed)."""
    if not bad.any():
        return block
    local_bad = kernels.nonfinite_rows(np.ascontiguousarray(block))
    if np.array_equal(local_bad, bad):
        return block
    out = np.array(block, copy=True)
    out[bad] = np.nan
    return out


def _block_rule(block: np.ndarray, rule: str, bad: np.ndarray, kwargs: dict[str, Any]) -> np.ndarray:
    return np.asarray(get_rule(rule)(_mark_rows(block, bad), **kwargs))


def _block_gram(
    block: np.ndarray, block_start: int, exclude: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Centred Gram matrix of a column block in float64, and the rows' squared norms there.

    Centring on the block's column mean (over its finite rows) leaves every pairwise distance
    unchanged and avoids the cancellation of an uncentred Gram matrix; non-finite rows are zeroed
    (they are excluded on the driver).
    """
    sq = _block_sq_norms(block)
    bad = _nonfinite_from_sq_norms(sq)  # past the limit here: past it over all columns too
    if exclude is not None:
        bad |= exclude
    B = np.array(block, dtype=np.float64, copy=True)
    if bad.any():
        B[bad] = 0.0
        if (~bad).any():
            B[~bad] -= B[~bad].mean(axis=0)
    else:
        B -= B.mean(axis=0)
    return B @ B.T, sq


def _block_mask(block: np.ndarray, block_start: int) -> np.ndarray:
    return _block_sq_norms(block)


def _block_kept_mean(block: np.ndarray, rows: np.ndarray) -> np.ndarray:
    return kernels.column_mean(np.ascontiguousarray(block), rows)


def _block_combination(block: np.ndarray, rows: np.ndarray, weights: np.ndarray) -> np.ndarray:
    out = weights @ np.asarray(block[rows], dtype=np.float64)
    return out.astype(block.dtype, copy=False)


def _block_norms_signs(
    block: np.ndarray, block_start: int, columns: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per row: the sum of squares (float64), the counts of positive, zero and negative entries on
    the sampled columns that fall in this block."""
    B = np.ascontiguousarray(block)
    lo, hi = block_start, block_start + B.shape[1]
    local = (columns[(columns >= lo) & (columns < hi)] - lo).astype(np.int64)
    rows = np.arange(B.shape[0], dtype=np.int64)
    norms, counts = kernels.norms_and_sign_counts(B, rows, local)
    return norms * norms, counts


def _block_signguard_average(
    block: np.ndarray, aggregator: str, rows: np.ndarray, weights: np.ndarray, options: dict[str, Any]
) -> np.ndarray:
    """SignGuard's final average (stage 4 of ``robustagg.rules._signguard_core``) on one block."""
    out = average_kept_rows("signguard", aggregator, np.ascontiguousarray(block), rows, weights, options)
    return np.asarray(out).astype(block.dtype, copy=False)


def _block_starts(X: da.Array) -> list[int]:
    return np.concatenate([[0], np.cumsum(X.chunks[1])[:-1]]).astype(int).tolist()


def _validate_on_driver(rule: str, n: int, dtype: np.dtype, kwargs: dict[str, Any]) -> None:
    """Run the NumPy rule on an (n, 1) zero matrix: the same argument checks, no data touched."""
    get_rule(rule)(np.zeros((n, 1), dtype=dtype), **kwargs)


# --------------------------------------------------------------------------------------------
# the three strategies
# --------------------------------------------------------------------------------------------


def _coordinatewise(X: da.Array, rule: str, kwargs: dict[str, Any], return_info: bool):
    n = X.shape[0]
    _validate_on_driver(rule, n, X.dtype, kwargs)
    bad = _nonfinite_from_sq_norms(_tree_reduce(X, _block_mask))
    if bad.all():
        raise ValueError(
            f"robustagg.dask.{rule}: every row of 'X' holds NaN or Inf; there is nothing to aggregate"
        )
    if kwargs.get("nonfinite") == "raise" and bad.any():
        raise ValueError(
            f"robustagg.dask.{rule}: rows {np.flatnonzero(bad)[:10].tolist()} of 'X' hold NaN or Inf or overflow"
        )
    out = X.map_blocks(_block_rule, rule, bad, kwargs, drop_axis=0, dtype=X.dtype, meta=np.empty(0, X.dtype))
    if return_info:
        # the NumPy rule's own diagnostics (kept, nonfinite, f_effective, ...) from an (n, 1)
        # probe with the same non-finite rows: they do not depend on the values
        probe = np.where(bad[:, None], np.nan, 0.0).astype(X.dtype)
        _, info = get_rule(rule)(probe, **kwargs, return_info=True)
        return out, info
    return out


def _embedding(K: np.ndarray, bad: np.ndarray) -> np.ndarray:
    """n points whose pairwise distances are those of the Gram matrix K (NaN rows where ``bad``)."""
    n = K.shape[0]
    good = np.flatnonzero(~bad)
    Kg = K[np.ix_(good, good)]
    H = Kg - Kg.mean(axis=0) - Kg.mean(axis=1)[:, None] + Kg.mean()
    H = (H + H.T) / 2.0
    w, V = np.linalg.eigh(H)
    keep = w > max(w.max(initial=0.0), 0.0) * 1e-13 * max(len(good), 1)
    if not keep.any():
        Yg = np.zeros((len(good), 1))
    else:
        Yg = V[:, keep] * np.sqrt(w[keep])
    Y = np.full((n, Yg.shape[1]), np.nan)
    Y[good] = Yg
    return Y


def _distance_based(X: da.Array, rule: str, kwargs: dict[str, Any], return_info: bool):
    n = X.shape[0]
    reference = kwargs.get("reference")
    if reference is not None and not isinstance(reference, (int, np.integer)):
        raise ValueError(
            f"robustagg.dask.{rule}: a vector 'reference' is not supported on Dask arrays "
            "(the decision runs on the rows' pairwise geometry); pass None or a row index"
        )
    _validate_on_driver(rule, n, X.dtype, kwargs)
    K, sq = _tree_reduce(X, _block_gram)
    bad = _nonfinite_from_sq_norms(sq)
    if (bad & np.isfinite(sq)).any():
        # a finite row past the size limit over all columns but not within a block: it entered
        # the blocks' centring, where its magnitude swamps the other rows' differences
        K, sq = _tree_reduce(X, _block_gram, bad)
    if bad.all():
        raise ValueError(
            f"robustagg.dask.{rule}: every row of 'X' holds NaN or Inf; there is nothing to aggregate"
        )
    Y = _embedding(np.asarray(K), bad)
    z, info = get_rule(rule)(Y, **kwargs, return_info=True)
    if DISTANCE_RULES[rule] == "select":
        rows = np.flatnonzero(info.kept).astype(np.int64)
        out = X.map_blocks(_block_kept_mean, rows, drop_axis=0, dtype=X.dtype, meta=np.empty(0, X.dtype))
    else:
        rows = np.flatnonzero(~bad).astype(np.int64)
        Yg = Y[rows]
        A = np.vstack([Yg.T, np.ones(len(rows))])
        b = np.concatenate([np.asarray(z, dtype=np.float64), [1.0]])
        weights = np.linalg.lstsq(A, b, rcond=None)[0]
        out = X.map_blocks(
            _block_combination, rows, weights, drop_axis=0, dtype=X.dtype, meta=np.empty(0, X.dtype)
        )
        combination = np.zeros(n)
        combination[rows] = weights
        info.details["combination"] = combination
    if return_info:
        return out, info
    return out


# --------------------------------------------------------------------------------------------
# public API
# --------------------------------------------------------------------------------------------


def _in_caller_dtype(fn: Callable[..., Any]) -> Callable[..., Any]:
    """float16 input is computed in float32 and the (lazy) aggregate cast back to float16, as
    the NumPy rules do (docs/conventions.md, "Dtypes")."""

    @functools.wraps(fn)
    def wrapper(X: Any, *args: Any, **kwargs: Any):
        result = fn(X, *args, **kwargs)
        if getattr(X, "dtype", None) != np.float16:
            return result
        if isinstance(result, tuple):
            return (result[0].astype(np.float16), *result[1:])
        return result.astype(np.float16)

    return wrapper


@_in_caller_dtype
def aggregate(X: Any, rule: str, *, return_info: bool = False, **kwargs: Any):
    """Aggregate the rows of a Dask array with a robustagg rule.

    Parameters
    ----------
    X : dask.array.Array, shape (n, d)
        Client gradients, chunked along d (row chunks are merged first). float32 stays float32.
    rule : str
        One of :data:`COORDINATEWISE_RULES`, :data:`DISTANCE_RULES` or ``"signguard"``.
    return_info : bool, default False
        Also return the rule's :class:`~robustagg.Diagnostics` (computed eagerly).
    **kwargs
        The NumPy rule's arguments (``f``, ``m``, ``rng``, ``nonfinite``, ...).

    Returns
    -------
    aggregate : dask.array.Array, shape (d,)
        Lazy, chunked like the columns of ``X``. Equal to the NumPy rule on ``X.compute()``
        (exactly for coordinate-wise and selecting rules; to rounding for the geometric median).
    info : Diagnostics
        Only with ``return_info=True``: the NumPy rule's diagnostics; for the geometric median
        also ``combination``, the weights ``a`` (summing to 1) with ``aggregate = Σ a_i x_i``.
    """
    check_choice(
        rule,
        (*COORDINATEWISE_RULES, *DISTANCE_RULES, "signguard"),
        rule="robustagg.dask.aggregate",
        name="rule",
    )
    X = _as_column_blocks(X, rule)
    if rule in COORDINATEWISE_RULES:
        return _coordinatewise(X, rule, kwargs, return_info)
    if rule in DISTANCE_RULES:
        return _distance_based(X, rule, kwargs, return_info)
    return signguard(X, return_info=return_info, **kwargs)


def mean(X: Any, *, return_info: bool = False, **kwargs: Any):
    """:func:`robustagg.mean` on a Dask array chunked along d, block by block (see :func:`aggregate`)."""
    return aggregate(X, "mean", return_info=return_info, **kwargs)


def median(X: Any, *, return_info: bool = False, **kwargs: Any):
    """:func:`robustagg.median` on a Dask array chunked along d, block by block (see :func:`aggregate`)."""
    return aggregate(X, "median", return_info=return_info, **kwargs)


def trimmed_mean(X: Any, f: int, *, return_info: bool = False, **kwargs: Any):
    """:func:`robustagg.trimmed_mean` on a Dask array chunked along d, block by block (see :func:`aggregate`)."""
    return aggregate(X, "trimmed_mean", f=f, return_info=return_info, **kwargs)


def meamed(X: Any, f: int, *, return_info: bool = False, **kwargs: Any):
    """:func:`robustagg.meamed` on a Dask array chunked along d, block by block (see :func:`aggregate`)."""
    return aggregate(X, "meamed", f=f, return_info=return_info, **kwargs)


def krum(X: Any, f: int, *, return_info: bool = False, **kwargs: Any):
    """:func:`robustagg.krum` on a Dask array chunked along d: the Gram matrix summed over the
    column blocks, the decision on the driver, then the chosen row (see :func:`aggregate`)."""
    return aggregate(X, "krum", f=f, return_info=return_info, **kwargs)


def multi_krum(X: Any, f: int, *, return_info: bool = False, **kwargs: Any):
    """:func:`robustagg.multi_krum` on a Dask array chunked along d: the Gram matrix summed over
    the column blocks, the decision on the driver, then the mean of the chosen rows (see
    :func:`aggregate`)."""
    return aggregate(X, "multi_krum", f=f, return_info=return_info, **kwargs)


def geometric_median(X: Any, *, return_info: bool = False, **kwargs: Any):
    """:func:`robustagg.geometric_median` on a Dask array chunked along d: Weiszfeld's iterations
    run on the driver on the n points of the Gram matrix's exact embedding, then the same affine
    combination of the rows is formed block by block (see :func:`aggregate`)."""
    return aggregate(X, "geometric_median", return_info=return_info, **kwargs)


def _signguard_statistics(X: da.Array, coords: np.ndarray, nonfinite: str) -> RowStatistics:
    """SignGuard's statistics (stage 2 of ``robustagg.rules._signguard_core``) from one pass
    over the column blocks: the rows' sums of squares and sign counts on ``coords``, summed in a
    tree; the non-finite rows are found from the sums of squares as the validation layer finds
    them."""
    sq, counts = _tree_reduce(X, _block_norms_signs, coords)
    bad = _nonfinite_from_sq_norms(sq)
    if bad.all():
        raise ValueError(
            "robustagg.dask.signguard: every row of 'X' holds NaN or Inf; there is nothing to aggregate"
        )
    if nonfinite == "raise" and bad.any():
        raise ValueError(
            f"robustagg.dask.signguard: rows {np.flatnonzero(bad)[:10].tolist()} of 'X' hold NaN or Inf or overflow"
        )
    rows = np.flatnonzero(~bad).astype(np.int64)
    return RowStatistics(bad, rows, np.sqrt(sq[rows]), counts[rows], coords)


def _signguard_options(X: da.Array, values: dict[str, Any]) -> SignGuardOptions:
    """The options checked by SignGuard's one checker (the messages of ``robustagg.signguard``),
    after the Dask twin's own limit: a built-in, coordinate-wise aggregator."""
    aggregator = values["aggregator"]
    if callable(aggregator) or aggregator not in AGGREGATORS:
        raise ValueError(
            f"robustagg.dask.signguard: argument 'aggregator' must be one of {', '.join(map(repr, AGGREGATORS))} "
            f"(coordinate-wise, computed block by block); got {aggregator!r}"
        )
    return SignGuardOptions(**check_options("signguard", d=X.shape[1], **values))


@_in_caller_dtype
def signguard(
    X: Any,
    *,
    lower: float = 0.1,
    upper: float = 3.0,
    coordinate_fraction: float = 0.1,
    coordinates: Any = "random",
    feature_scaling: str = "none",
    clustering: str = "meanshift",
    aggregator: str = "mean",
    aggregator_options: dict | None = None,
    norm_filter: bool = True,
    sign_clustering: bool = True,
    clipping: bool = True,
    rng: Any = None,
    nonfinite: str = "exclude",
    return_info: bool = False,
):
    """SignGuard (``robustagg.signguard``, the plain variant) on a Dask array chunked along d.

    The NumPy rule's stages (``robustagg.rules._signguard_core``) with the passes over the data
    made block by block: the coordinates are drawn on the driver first, by the same code, so
    they are those ``robustagg.signguard`` draws for the same ``rng``; one pass over the column
    blocks computes each row's squared norm and its sign counts on them; the decision (norm
    filter, sign features, clustering, the zero-median branch, the kept rows and the clipping
    weights) and the diagnostics are the NumPy rule's own code, run on the driver on these O(n)
    quantities; a second pass forms the clipped average of the kept rows block by block with
    the same final-averaging code.

    Parameters are those of :func:`robustagg.signguard` (the same defaults and checks);
    ``aggregator`` must be one of its built-in (coordinate-wise) names, not a callable.
    SignGuard-Sim/-Dist are not offered here.

    Returns
    -------
    aggregate : dask.array.Array, shape (d,)
        Lazy; equal to ``robustagg.signguard(X.compute(), ...)`` with the same ``rng`` (to the
        rounding of the norms' summation order).
    info : Diagnostics
        Only with ``return_info=True``: the same fields as :func:`robustagg.signguard`.
    """
    values = dict(locals())  # every parameter by name (the options of robustagg.signguard, in order)
    X = _as_column_blocks(values.pop("X"), "signguard")
    o = _signguard_options(X, values)
    if o.sign_clustering:
        coords = sample_coordinates(X.shape[1], o.coordinates, o.coordinate_fraction, o.rng)
    else:
        coords = np.empty(0, dtype=np.int64)
    stats = _signguard_statistics(X, coords, o.nonfinite)
    decision = decide(stats, o)
    if decision.zero_median:
        out = da.zeros(X.shape[1], chunks=X.chunks[1], dtype=X.dtype)
    else:
        options = {} if o.aggregator_options is None else o.aggregator_options
        out = X.map_blocks(
            _block_signguard_average, o.aggregator, stats.rows[decision.kept],
            decision.weights.astype(np.float64), options, drop_axis=0, dtype=X.dtype, meta=np.empty(0, X.dtype),
        )  # fmt: skip
    if not o.return_info:
        return out
    return out, diagnostics("signguard", stats, decision, o.sign_clustering)
