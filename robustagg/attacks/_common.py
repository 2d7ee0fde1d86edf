"""The one preparation step shared by every attack: validate and convert an attack's input.

Every attack starts with ``a = prepare_attack("name", grads, f, rng=rng)`` and ends with
``return a.finish(out)``. In between it works on NumPy only:

* ``a.G`` -- the (n, d) float32/float64 NumPy matrix of the gradients that all n clients
  computed honestly (a read-only view of the caller's memory unless its dtype was converted);
* ``a.byzantine`` -- the boolean mask of the Byzantine rows (``f`` as an int means the first
  ``f`` rows; a boolean mask of length n is used as it is);
* ``a.context`` -- where the input came from, so that :meth:`AttackInput.finish` returns the
  caller's array library, device and dtype;
* ``a.rng`` -- a ``numpy.random.Generator`` (only when the attack asked for one).

Statistics follow docs/conventions.md ("Attacks"): μ and σ are coordinate-wise over the honest
gradients of **all n clients** (σ with ``ddof=1``) unless the attack's ``benign_only=True``
restricts them to the benign rows. They are accumulated in float64 over column blocks, so that
the peak extra memory stays O(n · block + d) whatever the dtype of the input.

Non-finite honest rows (docs/conventions.md, "Attacks and non-finite honest rows"): a row for
which :func:`robustagg._validation.nonfinite_mask` is True (NaN/±Inf, or a squared norm past
``float64.max / (4 n)``) is left out of every statistic. :meth:`AttackInput.finite_rows` is the
one place that selects the finite rows (and raises when too few remain); every attack takes its
statistics over :meth:`AttackInput.reference_rows`, :meth:`AttackInput.finite_benign_rows` or
rows checked by :meth:`AttackInput.require_finite_own_rows`, all of which go through it. Values
are written into the Byzantine rows through :meth:`AttackInput.put`, which refuses NaN/Inf (an
overflow in the input's dtype) so that an attack never sends a non-finite row it did not mean to
send; only ``inf`` and ``nan`` write theirs directly.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from .._array import ArrayContext, to_numpy
from .._validation import check_bool, check_int, check_rng, nonfinite_mask

__all__ = ["AttackInput", "prepare_attack"]

_BLOCK_ELEMENTS = 1 << 20  # elements per column block in the float64 statistics


class AttackInput:
    """A validated attack input (see the module docstring).

    Attributes
    ----------
    name : str
        The attack's public name, for error messages.
    G : numpy.ndarray, shape (n, d)
        The honest gradients of all n clients (never write to it).
    byzantine : numpy.ndarray of bool, shape (n,)
        The Byzantine rows.
    context : ArrayContext
        The caller's array library, device and dtype.
    rng : numpy.random.Generator or None
        Present when the attack asked for randomness.
    """

    __slots__ = ("name", "G", "byzantine", "context", "rng", "n", "d", "_bad", "_known")

    def __init__(self, name: str, G: np.ndarray, byzantine: np.ndarray, context: ArrayContext, rng):
        self.name = name
        self.G = G
        self.byzantine = byzantine
        self.context = context
        self.rng = rng
        self.n, self.d = G.shape
        self._bad = None  # bool (n,): the rows' verdicts, filled in as rows are asked about
        self._known = None

    # --- row sets -------------------------------------------------------------------------
    @property
    def f(self) -> int:
        """Number of Byzantine rows."""
        return int(self.byzantine.sum())

    @property
    def byzantine_rows(self) -> np.ndarray:
        """Indices (int64) of the Byzantine rows."""
        return np.flatnonzero(self.byzantine).astype(np.int64)

    @property
    def benign_rows(self) -> np.ndarray:
        """Indices (int64) of the benign rows."""
        return np.flatnonzero(~self.byzantine).astype(np.int64)

    @property
    def all_rows(self) -> np.ndarray:
        return np.arange(self.n, dtype=np.int64)

    def reference_rows(self, benign_only: bool, needed: int = 1, what: str = "its statistics") -> np.ndarray:
        """The finite rows statistics are taken over: of all n clients (the default) or the benign ones.

        Rows that are non-finite for the library are left out (:meth:`finite_rows`); a
        ``ValueError`` names the attack when fewer than ``needed`` remain.
        """
        check_bool(benign_only, rule=self.name, name="benign_only")
        if benign_only:
            return self.finite_rows(self.benign_rows, needed, what, "benign rows")
        return self.finite_rows(self.all_rows, needed, what, "honest gradients of all n clients")

    def finite_benign_rows(self, needed: int = 1, what: str = "its statistics") -> np.ndarray:
        """The finite benign rows (see :meth:`finite_rows`)."""
        return self.finite_rows(self.benign_rows, needed, what, "benign rows")

    # --- non-finite honest rows ------------------------------------------------------------
    def nonfinite(self, rows: np.ndarray) -> np.ndarray:
        """bool (len(rows),): which of ``rows`` :func:`robustagg._validation.nonfinite_mask` marks.

        Only the rows asked about are read (once each, remembered): an attack that needs its f
        Byzantine rows does not read the other n - f.
        """
        if self._bad is None:
            self._bad = np.zeros(self.n, dtype=bool)
            self._known = np.zeros(self.n, dtype=bool)
        todo = rows[~self._known[rows]]
        if todo.size:
            self._bad[todo] = nonfinite_mask(self.G, todo)
            self._known[todo] = True
        return self._bad[rows]

    def finite_rows(self, rows: np.ndarray, needed: int, what: str, of: str) -> np.ndarray:
        """The rows of ``rows`` whose honest gradient is finite for the library, in order.

        The one selection every attack's statistics go through (docs/conventions.md, "Attacks
        and non-finite honest rows"): a row holding NaN/±Inf or with a squared norm past
        ``float64.max / (4 n)`` is left out.

        Parameters
        ----------
        rows : numpy.ndarray of int64
            Candidate rows (ascending).
        needed : int
            How many finite rows the statistic needs.
        what : str
            The statistic, for the message (e.g. "the standard deviation (ddof=1)").
        of : str
            What ``rows`` are, for the message (e.g. "benign rows").

        Raises
        ------
        ValueError
            Fewer than ``needed`` finite rows: names the attack, how many rows were finite and
            how many it needs.
        """
        candidates = rows.size
        if candidates:
            rows = rows[~self.nonfinite(rows)]
        if rows.size < needed:
            unit = "row" if needed == 1 else "rows"
            if candidates == 0:
                detail = f"there are no {of}"
            elif rows.size < candidates:
                detail = (
                    f"only {rows.size} of the {candidates} {of} {'is' if rows.size == 1 else 'are'} finite "
                    f"(the other {candidates - rows.size} hold NaN/Inf or have a squared norm past "
                    "float64.max/(4n))"
                )
            else:
                detail = f"there {'is' if candidates == 1 else 'are'} only {candidates} {of}"
            raise ValueError(
                f"{self.name}: {what} needs at least {needed} {unit} of finite honest gradients; {detail} "
                f"(n={self.n}, f={self.f})"
            )
        return rows

    def require_finite_own_rows(self, what: str) -> None:
        """Raise unless every Byzantine row's own honest gradient is finite (the attacks that send
        a function of it: sign flip, reverse, noise); :meth:`finite_rows` decides."""
        rows = self.byzantine_rows
        self.finite_rows(rows, rows.size, what, "Byzantine rows (their own honest gradients)")

    @property
    def rule_rows(self) -> int:
        """How many rows a rule aggregates: the Byzantine rows and the finite benign rows (a
        rule excludes a non-finite benign row). The n of LIE's Eq. (2) and of ByzMean's mean."""
        return self.f + self.finite_rows(self.benign_rows, 0, "", "").size

    # --- statistics (float64) -------------------------------------------------------------
    def _blocks(self, n_rows: int):
        width = max(1, _BLOCK_ELEMENTS // max(n_rows, 1))
        for j0 in range(0, self.d, width):
            yield j0, min(self.d, j0 + width)

    def mean(self, rows: np.ndarray) -> np.ndarray:
        """Coordinate-wise mean over ``rows``, float64, shape (d,)."""
        if rows.size == 0:
            raise ValueError(f"{self.name}: no rows to take the mean over (every row is Byzantine)")
        out = np.empty(self.d, dtype=np.float64)
        all_rows = rows.size == self.n
        for j0, j1 in self._blocks(rows.size):
            block = self.G[:, j0:j1] if all_rows else self.G[rows, j0:j1]
            out[j0:j1] = block.mean(axis=0, dtype=np.float64)
        return out

    def mean_std(self, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Coordinate-wise mean and standard deviation (``ddof=1``) over ``rows``, float64."""
        if rows.size < 2:
            raise ValueError(
                f"{self.name}: the coordinate-wise standard deviation (ddof=1) needs at least 2 rows, "
                f"got {rows.size} (n={self.n}, f={self.f})"
            )
        from ..kernels import column_mean_std

        # one read of G: per block of columns the mean, then the squared deviations from it
        return column_mean_std(self.G, np.ascontiguousarray(rows, dtype=np.int64), 1)

    def centered_gram(self, rows: np.ndarray, center: np.ndarray, vectors: tuple[np.ndarray, ...] = ()):
        """Gram matrix of the rows centred on ``center`` and their inner products with ``vectors``.

        Returns ``K`` (|rows|, |rows|) with ``K[i, j] = <g_i - c, g_j - c>`` and, for each
        vector ``v``, the (|rows|,) array ``<g_i - c, v>``; all in float64, accumulated over
        column blocks (centering first keeps the distances accurate when the rows are close to
        each other relative to their norms).
        """
        m = rows.size
        K = np.zeros((m, m), dtype=np.float64)
        inner = [np.zeros(m, dtype=np.float64) for _ in vectors]
        all_rows = m == self.n
        for j0, j1 in self._blocks(m):
            block = (self.G[:, j0:j1] if all_rows else self.G[rows, j0:j1]).astype(np.float64)
            block -= center[j0:j1]
            K += block @ block.T
            for acc, v in zip(inner, vectors, strict=True):
                acc += block @ v[j0:j1]
        return K, inner

    # --- output ---------------------------------------------------------------------------
    def output(self) -> np.ndarray:
        """A fresh copy of ``G`` (C order, the input's dtype) to write the Byzantine rows into."""
        return np.array(self.G, dtype=self.G.dtype, order="C", copy=True)

    def put(self, out: np.ndarray, rows: np.ndarray, values: np.ndarray) -> None:
        """Write ``values`` (one (d,) vector for every row, or one row each) into ``out[rows]``.

        The values are cast to ``out``'s dtype first; a NaN/Inf among them (a value that
        overflows the dtype, or an overflow while computing it) is a ``ValueError`` naming the
        attack: an attack never sends a non-finite row it does not mean to send.
        """
        values = np.asarray(values)
        with np.errstate(over="ignore", invalid="ignore"):
            cast = values.astype(out.dtype, copy=False)
        if not np.isfinite(cast).all():
            with np.errstate(invalid="ignore"):
                finite = np.isfinite(values)
                largest = float(np.max(np.abs(values[finite]))) if finite.any() else math.nan
            raise ValueError(
                f"{self.name}: the Byzantine rows it computes are not finite in {out.dtype} (an overflow: "
                f"the largest finite |value| is {largest:.3g}, the largest {out.dtype} is "
                f"{float(np.finfo(out.dtype).max):.3g}); the input's scale or the attack's options "
                "put them out of range"
            )
        out[rows] = cast

    def finish(self, out: np.ndarray) -> Any:
        """Cast to the input's dtype and convert back to the caller's array library."""
        out = np.asarray(out)
        if out.dtype != self.G.dtype:
            out = out.astype(self.G.dtype)
        return self.context.wrap(out)


def _byzantine_mask(f: Any, n: int, name: str) -> np.ndarray:
    """``f`` (an int: the first f rows; or a boolean mask of length n) as a boolean mask."""
    if isinstance(f, (bool, np.bool_)):
        raise TypeError(
            f"{name}: argument 'f' must be an int (the first f rows are Byzantine) or a boolean mask "
            f"of length n={n}, got {f!r}"
        )
    if isinstance(f, (int, np.integer)):
        f = check_int(f, rule=name, name="f", low=0, high=n)
        mask = np.zeros(n, dtype=bool)
        mask[:f] = True
        return mask
    if f is None:
        raise TypeError(f"{name}: argument 'f' must be an int or a boolean mask of length n={n}, got None")
    if not _is_bool_like(f):
        dtype = getattr(f, "dtype", type(f).__name__)
        raise TypeError(
            f"{name}: argument 'f' must be an int (the first f rows are Byzantine) or a boolean mask "
            f"of length n={n}, got {dtype}"
        )
    mask = _bool_array(f)
    if mask.ndim != 1 or mask.shape[0] != n:
        raise ValueError(f"{name}: argument 'f' as a mask must have shape ({n},), got shape {mask.shape}")
    return np.array(mask, dtype=bool, copy=True)


def _is_bool_like(x: Any) -> bool:
    dtype = getattr(x, "dtype", None)
    if dtype is not None:
        return "bool" in str(dtype)
    if isinstance(x, (list, tuple)):
        return len(x) > 0 and all(isinstance(v, (bool, np.bool_)) for v in x)
    return False


def _bool_array(x: Any) -> np.ndarray:
    if type(x).__module__.startswith("torch"):
        return x.detach().cpu().numpy().astype(bool)
    return np.asarray(x, dtype=bool)


def prepare_attack(name: str, grads: Any, f: Any, *, rng: Any = None, random: bool = False) -> AttackInput:
    """Validate and convert an attack's input.

    Parameters
    ----------
    name : str
        The attack's public name (used in every message).
    grads : array_like, shape (n, d)
        The honest gradients of all n clients: any array-API array or a sequence of 1-D arrays.
        float32/float64 are kept; integers compute in float64.
    f : int or array_like of bool, shape (n,)
        The Byzantine rows: an int f means the first f rows; a boolean mask selects them.
    rng : None, int or numpy.random.Generator
        Randomness (checked and turned into a Generator when ``random`` is true).
    random : bool
        Whether the attack draws random numbers.

    Returns
    -------
    AttackInput
        ``.G`` (NumPy, never to be written), ``.byzantine`` (mask), ``.context``, ``.rng``.
    """
    G, ctx = to_numpy(grads, rule=name, name="grads", ndim=2)
    n, d = G.shape
    if n == 0:
        raise ValueError(f"{name}: argument 'grads' has no rows (n = 0)")
    if d == 0:
        raise ValueError(f"{name}: argument 'grads' has rows of length d = 0")
    mask = _byzantine_mask(f, n, name)
    generator = check_rng(rng, rule=name) if random else None
    if not random and rng is not None:
        check_rng(rng, rule=name)  # still validate it
    return AttackInput(name, G, mask, ctx, generator)
