"""The one validation layer: argument checks and input preparation for every rule and attack.

A public rule is short: ``p = prepare(...)`` validates and converts its input, a kernel runs
on ``p.G`` restricted to ``p.rows``, and ``p.finish(...)`` converts the result back and
attaches diagnostics. Every error message names the rule, the argument, what was given and
what is allowed.

Non-finite policy (docs/conventions.md, "Non-finite rows"): with ``nonfinite="exclude"`` (the
default) a row holding any NaN or ±Inf, or finite but with a squared norm past
:func:`sq_norm_limit`, is treated as Byzantine: it is left out before the rule runs, reported in
``Diagnostics.nonfinite``, and counted against ``f`` -- the rule then runs on the
``n' = n - k`` finite rows with ``f' = max(f - k, 0)``. With ``nonfinite="raise"`` such a row
is a ``ValueError``. If every row is non-finite the rule raises. :func:`prepare` makes this
check for every rule, on every input size, in one pass (:func:`nonfinite_mask`); kernels never
apply the policy themselves.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable, Iterable
from typing import Any

import numpy as np

from ._array import ArrayContext, to_numpy
from ._diagnostics import Diagnostics

__all__ = [
    "NONFINITE_POLICIES",
    "Prepared",
    "TooFewClientsError",
    "check_choice",
    "check_f",
    "check_int",
    "check_real",
    "check_rng",
    "nonfinite_mask",
    "prepare",
]

NONFINITE_POLICIES = ("exclude", "raise")


class TooFewClientsError(ValueError):
    """A rule refused its input for the number of rows alone: fewer clients than its bound on n
    and f allows (Krum: n >= 2f + 3, ...), or no finite row left. A ``ValueError``; integrations
    (the Flower strategies) catch this one to skip a round, while any other error still fails."""


def sq_norm_limit(n: int) -> float:
    """The largest squared row norm a rule accepts among ``n`` rows.

    A row above it is treated like a row holding NaN/Inf (docs/conventions.md, "Non-finite
    rows"): every quantity the rules derive from rows -- a squared distance
    ``||a - b||^2 <= 2 ||a||^2 + 2 ||b||^2``, and sums of n of them (Krum's scores, Min-Sum's
    bound) -- then stays below the largest float64. The limit is ``float64.max / (4 n)``
    (``||g|| <~ 2e152`` at n = 1000); float32 input can never reach it.
    """
    return float(np.finfo(np.float64).max) / (4.0 * max(int(n), 1))


def nonfinite_mask(G: np.ndarray, rows: np.ndarray | None = None) -> np.ndarray:
    """Boolean mask over the rows of ``G``: True where a row is non-finite for the library.

    A row is non-finite when it holds a NaN or ±Inf, or when its squared L2 norm exceeds
    :func:`sq_norm_limit` (of n = ``G.shape[0]``) -- the one finiteness check every rule,
    pre-aggregator and attack applies. A first cheap pass reads G once
    (``kernels.screen_rows``: NaN/Inf, and whether some value exceeds ``sqrt(limit / d)``, below
    which no row can reach the limit); only the rows it flags as large -- never for float32
    input, whose finite rows cannot reach the limit -- get their squared norm computed exactly,
    one by one, scaled so that no square overflows.

    ``rows`` (int indices) restricts the check to those rows: the mask is then over ``rows``.
    """
    from .kernels import screen_rows

    n, d = G.shape
    rows = np.arange(n, dtype=np.int64) if rows is None else np.ascontiguousarray(rows, dtype=np.int64)
    limit = sq_norm_limit(n)
    bound = math.inf if G.dtype == np.float32 else math.sqrt(limit / d) * (1.0 - 1e-12)
    flags = screen_rows(G, rows, bound)
    bad = flags == 1
    for r in np.flatnonzero(flags == 2):
        bad[r] = _row_sq_norm(G[rows[r]]) > limit
    return bad


def _row_sq_norm(row: np.ndarray) -> float:
    """A finite row's squared norm as a Python float, ``inf`` when it exceeds float64: the
    row is scaled by its largest magnitude first, so no square overflows."""
    scale = float(np.max(np.abs(row)))
    if scale == 0.0:
        return 0.0
    r = row.astype(np.float64) / scale
    with np.errstate(over="ignore"):
        return scale * scale * float(r @ r)


def _describe_nonfinite(G: np.ndarray, bad: np.ndarray, name: str) -> str:
    """The rows of ``bad`` in words: which hold NaN/Inf, which only overflow."""
    idx = np.flatnonzero(bad)
    has_nan_inf = np.array([not np.isfinite(G[i]).all() for i in idx[:10]], dtype=bool)
    shown = idx[:10].tolist()
    more = " ..." if idx.size > 10 else ""
    if has_nan_inf.all():
        return f"rows {shown}{more} of {name!r} hold NaN or Inf"
    if not has_nan_inf.any():
        return (
            f"rows {shown}{more} of {name!r} are finite but so large that their squared norm "
            f"exceeds the limit {sq_norm_limit(G.shape[0]):.3g} (float64.max / (4 n))"
        )
    return f"rows {shown}{more} of {name!r} hold NaN or Inf, or have a squared norm that overflows"


def check_int(value: Any, *, rule: str, name: str, low: int | None = None, high: int | None = None) -> int:
    """An integer argument (Python or NumPy integer; bool and float are refused) in [low, high]."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Integral):
        raise TypeError(
            f"{rule}: argument {name!r} must be an integer, got {value!r} ({type(value).__name__})"
        )
    value = int(value)
    if low is not None and value < low:
        raise ValueError(f"{rule}: argument {name!r} must be >= {low}, got {value}")
    if high is not None and value > high:
        raise ValueError(f"{rule}: argument {name!r} must be <= {high}, got {value}")
    return value


def check_real(
    value: Any,
    *,
    rule: str,
    name: str,
    low: float | None = None,
    high: float | None = None,
    low_open: bool = False,
    high_open: bool = False,
) -> float:
    """A finite real argument in the interval given (closed unless ``*_open``)."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Real):
        raise TypeError(
            f"{rule}: argument {name!r} must be a real number, got {value!r} ({type(value).__name__})"
        )
    value = float(value)
    if not np.isfinite(value):
        raise ValueError(f"{rule}: argument {name!r} must be finite, got {value}")
    lo_ok = low is None or (value > low if low_open else value >= low)
    hi_ok = high is None or (value < high if high_open else value <= high)
    if not (lo_ok and hi_ok):
        lo = "-inf" if low is None else f"{low}"
        hi = "inf" if high is None else f"{high}"
        interval = (
            ("(" if low_open or low is None else "[")
            + f"{lo}, {hi}"
            + (")" if high_open or high is None else "]")
        )
        raise ValueError(f"{rule}: argument {name!r} must be in {interval}, got {value}")
    return value


def check_choice(value: Any, choices: Iterable[Any], *, rule: str, name: str) -> Any:
    """One of a fixed set of values."""
    choices = tuple(choices)
    if value not in choices:
        raise ValueError(
            f"{rule}: argument {name!r} must be one of {', '.join(map(repr, choices))}; got {value!r}"
        )
    return value


def check_bool(value: Any, *, rule: str, name: str) -> bool:
    """A flag: ``True`` or ``False`` (Python or NumPy bool; 0 and 1 are refused)."""
    if not isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{rule}: argument {name!r} must be a bool, got {value!r}")
    return bool(value)


def check_vector(value: Any, d: int, *, rule: str, name: str, keep_float32: bool = False) -> np.ndarray:
    """A finite vector of length ``d`` as a contiguous NumPy array: float64, or float32 kept as
    float32 when ``keep_float32`` (the kernels widen each value to float64 exactly, so a float32
    vector gives the same sums without a conversion per call)."""
    v, _ = to_numpy(value, rule=rule, name=name, ndim=1)
    if v.shape[0] != d:
        raise ValueError(
            f"{rule}: argument {name!r} must have length d = {d} (the gradients' length), got {v.shape[0]}"
        )
    dtype = np.float32 if keep_float32 and v.dtype == np.float32 else np.float64
    v = np.ascontiguousarray(v, dtype=dtype)
    if not np.isfinite(v).all():
        raise ValueError(f"{rule}: argument {name!r} holds NaN or Inf; it must be finite")
    return v


def check_rng(rng: Any, *, rule: str) -> np.random.Generator:
    """``None``, an int seed or a ``numpy.random.Generator`` as a Generator."""
    if rng is None or isinstance(rng, np.random.Generator):
        return np.random.default_rng(rng)
    if isinstance(rng, numbers.Integral) and not isinstance(rng, (bool, np.bool_)):
        if rng < 0:
            raise ValueError(f"{rule}: argument 'rng' as a seed must be >= 0, got {rng}")
        return np.random.default_rng(int(rng))
    if isinstance(rng, np.random.SeedSequence):
        return np.random.default_rng(rng)
    raise TypeError(
        f"{rule}: argument 'rng' must be None, a non-negative int seed or a numpy.random.Generator, "
        f"got {type(rng).__name__}"
    )


def check_f(
    f: Any,
    n: int,
    *,
    rule: str,
    min_n: Callable[[int], int] | None = None,
    bound: str | None = None,
) -> int:
    """The number of Byzantine clients ``f``: a non-negative integer with ``n >= min_n(f)``.

    ``bound`` is the human-readable form of the constraint, e.g. ``"n >= 2f + 3"``.
    """
    f = check_int(f, rule=rule, name="f", low=0)
    if min_n is not None and n < min_n(f):
        raise TooFewClientsError(
            f"{rule}: needs {bound or f'n >= {min_n(f)}'} (n clients, f Byzantine); got n={n}, f={f}, "
            f"so f must be at most {max_f(min_n, n)}"
        )
    return f


def max_f(min_n: Callable[[int], int], n: int) -> int | str:
    """Largest f allowed for n under a bound, or 'none' when even f=0 is refused."""
    best: int | str = "none (too few clients)"
    for f in range(n + 1):
        if n >= min_n(f):
            best = f
        else:
            break
    return best


class Prepared:
    """A validated input: the (n, d) NumPy matrix and what is needed to send a result back.

    Attributes
    ----------
    G : numpy.ndarray, shape (n, d), float32 or float64
        The caller's data as a read-only view (no copy unless its dtype was converted).
    n, d : int
        Shape of ``G``.
    f : int or None
        ``f`` as the caller gave it (validated).
    f_eff : int or None
        ``f`` less the number of excluded non-finite rows (at least 0).
    nonfinite : numpy.ndarray of bool, shape (n,)
        Rows excluded for holding NaN/±Inf.
    rows : numpy.ndarray of int64
        Indices of the rows the rule must use (all rows when every row is finite).
    all_finite : bool
        Whether no row was excluded (then ``rows`` is ``arange(n)``).
    """

    __slots__ = ("rule", "G", "n", "d", "f", "f_eff", "nonfinite", "rows", "all_finite", "context")

    def __init__(self, rule, G, f, nonfinite, context: ArrayContext):
        self.rule = rule
        self.G = G
        self.n, self.d = G.shape
        self.f = f
        self.nonfinite = nonfinite
        self.all_finite = not bool(nonfinite.any())
        self.rows = (
            np.arange(self.n, dtype=np.int64)
            if self.all_finite
            else np.flatnonzero(~nonfinite).astype(np.int64)
        )
        k = int(nonfinite.sum())
        self.f_eff = None if f is None else max(f - k, 0)
        self.context = context

    @property
    def m(self) -> int:
        """Number of rows the rule works on (finite rows)."""
        return int(self.rows.size)

    @property
    def dtype(self) -> np.dtype:
        return self.G.dtype

    def submatrix(self) -> np.ndarray:
        """``G`` restricted to ``rows``: a view when all rows are finite, else a copy.

        Prefer passing ``rows`` to a kernel; use this only where a copy is unavoidable.
        """
        return self.G if self.all_finite else self.G[self.rows]

    def expand(self, mask_over_rows: np.ndarray) -> np.ndarray:
        """A boolean mask over ``rows`` as a mask over all n input rows."""
        out = np.zeros(self.n, dtype=bool)
        out[self.rows] = np.asarray(mask_over_rows, dtype=bool)
        return out

    def expand_values(self, values_over_rows: np.ndarray, fill: float = np.nan) -> np.ndarray:
        """Per-row values over ``rows`` as an array over all n rows (``fill`` elsewhere)."""
        values_over_rows = np.asarray(values_over_rows)
        out = np.full(
            (self.n,) + values_over_rows.shape[1:], fill, dtype=np.result_type(values_over_rows, np.float64)
        )
        out[self.rows] = values_over_rows
        return out

    def diagnostics(self, kept_over_rows: np.ndarray | None = None, **details: Any) -> Diagnostics:
        """Diagnostics with ``kept`` given over ``rows`` (default: every finite row kept)."""
        kept = ~self.nonfinite if kept_over_rows is None else self.expand(kept_over_rows)
        return Diagnostics(self.rule, kept=kept, nonfinite=self.nonfinite.copy(), **details)

    def finish(self, result: np.ndarray, info: Diagnostics | None = None, return_info: bool = False):
        """Cast ``result`` to the input's dtype, convert it back to the caller's library."""
        result = np.asarray(result)
        if result.dtype != self.G.dtype:
            result = result.astype(self.G.dtype)
        out = self.context.wrap(result)
        if return_info:
            if info is None:
                info = self.diagnostics()
            return out, info
        return out


def prepare(
    rule: str,
    grads: Any,
    *,
    f: Any = None,
    min_n: Callable[[int], int] | None = None,
    bound: str | None = None,
    nonfinite: str = "exclude",
    return_info: Any = False,
    name: str = "grads",
) -> Prepared:
    """Validate and convert a rule's input.

    Parameters
    ----------
    rule : str
        The rule's public name (used in every message).
    grads : array_like, shape (n, d)
        The client gradients: any array-API array or a sequence of 1-D arrays.
    f : int or None
        Number of Byzantine clients, when the rule uses it.
    min_n : callable, optional
        ``min_n(f)`` is the smallest n the rule accepts for this f.
    bound : str, optional
        The bound in words, e.g. ``"n >= 2f + 3"``, for the error message.
    nonfinite : {"exclude", "raise"}
        The non-finite policy (module docstring).
    return_info : bool
        Checked to be a bool.
    """
    check_choice(nonfinite, NONFINITE_POLICIES, rule=rule, name="nonfinite")
    check_bool(return_info, rule=rule, name="return_info")
    G, ctx = to_numpy(grads, rule=rule, name=name, ndim=2)
    n, d = G.shape
    if n == 0:
        raise TooFewClientsError(
            f"{rule}: argument {name!r} has no rows (n = 0); at least one client gradient is needed"
        )
    if d == 0:
        raise ValueError(
            f"{rule}: argument {name!r} has rows of length d = 0; gradients need at least one coordinate"
        )
    if f is not None or min_n is not None:
        f = check_f(0 if f is None else f, n, rule=rule, min_n=min_n, bound=bound)
    bad = nonfinite_mask(G)
    if bad.any():
        if nonfinite == "raise":
            raise ValueError(
                f"{rule}: {_describe_nonfinite(G, bad, name)} (nonfinite='raise'); "
                "use nonfinite='exclude' to treat them as Byzantine"
            )
        if bad.all():
            raise TooFewClientsError(
                f"{rule}: every row of {name!r} holds NaN or Inf or overflows "
                f"({_describe_nonfinite(G, bad, name)}); there is nothing to aggregate"
            )
    return Prepared(rule, G, f, bad, ctx)
