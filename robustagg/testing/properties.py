"""Reusable property checks for aggregation rules (public; needs ``hypothesis``).

:func:`check_rule` runs the battery of invariants every rule of this library satisfies (docs/conventions.md)
against any callable ``rule(grads, ...)``::

    from robustagg.testing import check_rule
    check_rule(my_rule, f=2)                      # raises PropertyFailure listing what broke
    check_rule(my_median, f=2, coordinatewise=True)

Each property is also available alone (``check_no_mutation(rule, ...)`` etc.), and all of them
run on matrices drawn by :func:`robustagg.testing.strategies.gradient_matrices`.

=====================  =====================================================================
property               what is checked
=====================  =====================================================================
``shape``              the output is one (d,) vector, finite for finite input
``no_mutation``        the input (writable or read-only) is unchanged after the call
``dtype``              float32 stays float32, float64 stays float64
``permutation``        shuffling the rows does not change the output (same seed)
``determinism``        two calls with the same seed give bit-identical output
``nonfinite``          up to ``f`` rows of NaN/±Inf still give a finite output
``honest_range``       (``coordinatewise=True``) with ``f`` rows replaced by huge values, each
                       output coordinate stays within the benign rows' range of that coordinate
``torch``              (``torch=True``) a torch tensor in gives a torch tensor out, equal to
                       the NumPy result
=====================  =====================================================================

Every property runs on drawn matrices and, with ``branches=True`` (the default), on one matrix on
each side of every size at which the library switches code path (n = 256/257 rows, m²d = 2²⁴,
column-block edges), so that both paths of each switch meet the same invariants.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
from hypothesis import HealthCheck, Phase, example, given, settings
from hypothesis import strategies as st

from .._registry import call_with_supported, get_rule
from . import strategies as rst

__all__ = [
    "PROPERTIES",
    "PropertyFailure",
    "check_determinism",
    "check_dtype",
    "check_honest_range",
    "check_no_mutation",
    "check_nonfinite",
    "check_permutation",
    "check_rule",
    "check_shape",
    "check_torch",
]

PROPERTIES = (
    "shape",
    "no_mutation",
    "dtype",
    "permutation",
    "determinism",
    "nonfinite",
    "honest_range",
    "torch",
)


class PropertyFailure(AssertionError):
    """Raised by :func:`check_rule` when one or more properties fail; ``.failures`` maps each
    failed property to its error."""

    def __init__(self, rule_name: str, failures: dict[str, BaseException]):
        self.failures = failures
        lines = [f"{rule_name}: {len(failures)} propert{'y' if len(failures) == 1 else 'ies'} failed:"]
        for name, exc in failures.items():
            text = [ln.strip() for ln in str(exc).strip().splitlines() if ln.strip()][:2]
            lines.append(f"  - {name}: {type(exc).__name__}: {' | '.join(text) or '(no message)'}")
            for note in getattr(exc, "__notes__", []):  # hypothesis's falsifying example
                lines.extend("      " + ln for ln in str(note).splitlines())
        super().__init__("\n".join(lines))


# ----------------------------------------------------------------------------------------------
# helpers
# ----------------------------------------------------------------------------------------------
def _name(rule: Any) -> str:
    return getattr(rule, "__name__", type(rule).__name__)


def _accepts_rng(rule: Callable) -> bool:
    try:
        params = inspect.signature(rule).parameters
    except (TypeError, ValueError):
        return False
    return "rng" in params or any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())


def _call(rule: Callable, G: Any, f: int | None, seed: int | None, kwargs: dict) -> Any:
    extra = dict(kwargs)
    if f is not None:
        extra.setdefault("f", f)
    if seed is not None:
        extra.setdefault("rng", seed)
    out = call_with_supported(rule, G, **extra)
    if isinstance(out, tuple):  # (aggregate, info)
        out = out[0]
    return out


def _numpy(x: Any) -> np.ndarray:
    if type(x).__module__.startswith("torch"):
        return x.detach().cpu().numpy()
    return np.asarray(x)


def _tolerance(G: np.ndarray) -> float:
    """Absolute tolerance for comparisons that may differ by summation order."""
    scale = float(np.max(np.abs(G[np.isfinite(G)]), initial=0.0))
    eps = 1e-4 if G.dtype == np.float32 else 1e-9
    return eps * max(scale, np.finfo(G.dtype).tiny) * max(1, G.shape[0])


def _settings(max_examples: int, shrink: bool = True):
    phases = tuple(Phase) if shrink else tuple(p for p in Phase if p is not Phase.shrink)
    return settings(
        max_examples=max_examples,
        phases=phases,
        deadline=None,
        database=None,
        suppress_health_check=list(HealthCheck),
    )


def _matrices(n_min: int, n_max: int, d_min: int, d_max: int, dtypes: Sequence[Any]) -> st.SearchStrategy:
    return rst.gradient_matrices(
        n=st.integers(n_min, n_max),
        d=st.integers(d_min, d_max),
        dtype=st.sampled_from([np.dtype(t) for t in dtypes]),
    )


# ----------------------------------------------------------------------------------------------
# single properties: each takes one matrix and raises AssertionError on violation
# ----------------------------------------------------------------------------------------------
def check_shape(
    rule: Callable, G: np.ndarray, *, f: int | None = None, seed: int | None = 0, **kwargs
) -> None:
    """The output is a (d,) vector, finite for finite input."""
    out = _numpy(_call(rule, G, f, seed, kwargs))
    assert out.shape == (G.shape[1],), (
        f"output shape {out.shape}, expected ({G.shape[1]},) for input {G.shape}"
    )
    assert np.isfinite(out).all(), "non-finite output for a finite input"


def check_no_mutation(
    rule: Callable, G: np.ndarray, *, f: int | None = None, seed: int | None = 0, **kwargs
) -> None:
    """Neither a writable nor a read-only input is changed (or refused) by the call."""
    before = G.copy()
    writable = G.copy()
    _call(rule, writable, f, seed, kwargs)
    np.testing.assert_array_equal(writable, before, err_msg="the rule modified its (writable) input")
    frozen = G.copy()
    frozen.flags.writeable = False
    try:
        _call(rule, frozen, f, seed, kwargs)
    except ValueError as exc:
        if "read-only" in str(exc):
            raise AssertionError(f"the rule tried to write into a read-only input: {exc}") from None
        raise
    np.testing.assert_array_equal(frozen, before, err_msg="the rule modified its read-only input")


def check_dtype(
    rule: Callable, G: np.ndarray, *, f: int | None = None, seed: int | None = 0, **kwargs
) -> None:
    """float32 in → float32 out, float64 in → float64 out."""
    for dtype in (np.float32, np.float64):
        out = _call(rule, G.astype(dtype), f, seed, kwargs)
        got = _numpy(out).dtype
        assert got == dtype, f"{np.dtype(dtype).name} input gave a {got} output"


def check_torch(
    rule: Callable, G: np.ndarray, *, f: int | None = None, seed: int | None = 0, **kwargs
) -> None:
    """A torch tensor in gives a torch tensor of the same dtype out, equal to the NumPy result
    (skipped silently when torch is not installed)."""
    try:
        import torch
    except ImportError:  # pragma: no cover - torch is optional
        return
    out = _call(rule, torch.from_numpy(G.copy()), f, seed, kwargs)
    assert isinstance(out, torch.Tensor), f"torch input gave a {type(out).__name__} output"
    assert out.dtype == torch.from_numpy(G[:1]).dtype, f"torch {G.dtype} input gave {out.dtype}"
    np.testing.assert_array_equal(
        out.numpy(), _numpy(_call(rule, G, f, seed, kwargs)), err_msg="torch and NumPy results differ"
    )


def check_permutation(
    rule: Callable, G: np.ndarray, *, f: int | None = None, seed: int | None = 0, perm_seed: int = 0, **kwargs
) -> None:
    """Shuffling the rows leaves the output unchanged (up to summation-order rounding)."""
    perm = np.random.default_rng(perm_seed).permutation(G.shape[0])
    a = _numpy(_call(rule, G, f, seed, kwargs)).astype(np.float64)
    b = _numpy(_call(rule, G[perm], f, seed, kwargs)).astype(np.float64)
    np.testing.assert_allclose(
        b,
        a,
        rtol=1e-4 if G.dtype == np.float32 else 1e-7,
        atol=_tolerance(G),
        err_msg=f"output depends on the order of the rows (permutation {perm.tolist()})",
    )


def check_determinism(
    rule: Callable, G: np.ndarray, *, f: int | None = None, seed: int | None = 0, **kwargs
) -> None:
    """Two calls with the same seed give bit-identical output."""
    a = _numpy(_call(rule, G, f, seed, kwargs))
    b = _numpy(_call(rule, G, f, seed, kwargs))
    np.testing.assert_array_equal(a, b, err_msg="two calls with the same seed differ")


def check_nonfinite(
    rule: Callable,
    G: np.ndarray,
    *,
    f: int | None = None,
    seed: int | None = 0,
    bad_rows: np.ndarray | None = None,
    **kwargs,
) -> None:
    """With the rows ``bad_rows`` (at most f; default the first max(f, 1)) set to NaN/±Inf the
    output is still finite."""
    G = G.copy()
    bad_rows = np.arange(max(f or 0, 1)) if bad_rows is None else np.asarray(bad_rows)
    values = (np.nan, np.inf, -np.inf)
    for j, i in enumerate(bad_rows):
        G[i] = values[j % 3]
        if j % 3 == 0 and G.shape[1] > 1:
            G[i, 1:] = 1.0  # a single NaN among finite values
    out = _numpy(_call(rule, G, f, seed, kwargs))
    assert np.isfinite(out).all(), (
        f"non-finite output with {len(bad_rows)} NaN/Inf row(s) {bad_rows.tolist()}"
    )


def check_honest_range(
    rule: Callable,
    G: np.ndarray,
    *,
    f: int | None = None,
    seed: int | None = 0,
    byzantine: np.ndarray | None = None,
    **kwargs,
) -> None:
    """For coordinate-wise rules: with the f rows ``byzantine`` (default the first f) replaced
    by huge values of both signs, every output coordinate lies within the benign rows' range."""
    G = G.copy()
    n = G.shape[0]
    k = f or 0
    mask = np.zeros(n, dtype=bool) if byzantine is None else np.asarray(byzantine, dtype=bool)
    if byzantine is None:
        mask[:k] = True
    huge = float(np.finfo(G.dtype).max) / (8 * n)
    G[mask] = np.where(np.arange(G.shape[1]) % 2 == 0, huge, -huge)
    out = _numpy(_call(rule, G, f, seed, kwargs)).astype(np.float64)
    benign = G[~mask].astype(np.float64)
    lo, hi = benign.min(axis=0), benign.max(axis=0)
    slack = _tolerance(benign)
    bad = np.flatnonzero((out < lo - slack) | (out > hi + slack))
    assert bad.size == 0, (
        f"coordinates {bad[:5].tolist()} leave the benign range with {k} Byzantine row(s): "
        f"output {out[bad[:3]].tolist()}, benign range {list(zip(lo[bad[:3]].tolist(), hi[bad[:3]].tolist(), strict=True))}"
    )


_CHECKS = {
    "shape": check_shape,
    "no_mutation": check_no_mutation,
    "dtype": check_dtype,
    "permutation": check_permutation,
    "determinism": check_determinism,
    "nonfinite": check_nonfinite,
    "honest_range": check_honest_range,
    "torch": check_torch,
}


# ----------------------------------------------------------------------------------------------
# the battery
# ----------------------------------------------------------------------------------------------
def _branches():
    from .._thresholds import BRANCHES

    return BRANCHES


def _property_test(
    check, fn, f, seeded, kwargs, counter, lo, hi, d_min, d_max, dtypes, max_examples, shrink, explicit=()
):
    """A hypothesis test running ``check`` on drawn matrices (and seeds, for random rules), and
    first on each matrix of ``explicit``."""

    @given(G=_matrices(lo, hi, d_min, d_max, dtypes), seed=st.integers(0, 2**31 - 1))
    def run(G, seed):
        counter["examples"] += 1
        check(fn, G, f=f, seed=seed if seeded else None, **kwargs)

    for G in explicit:
        run = example(G=G, seed=0)(run)
    return _settings(max_examples, shrink)(run)


def _branch_matrices(rule_name: str | None, k: int, dtypes: Sequence[Any], n_min: int) -> list[np.ndarray]:
    """One matrix per shape of :func:`~robustagg.testing.strategies.branch_shapes_for` (``n_min``
    rows at least), the dtypes taken in turn: inputs on both sides of each size switch."""
    out = []
    for i, (n, d) in enumerate(rst.branch_shapes_for(rule_name, k)):
        rng = np.random.default_rng(i)
        dtype = np.dtype(dtypes[i % len(dtypes)])
        out.append((rng.normal(size=(max(n, n_min), d)) + 0.5).astype(dtype))
    return out


def check_rule(
    rule: str | Callable[..., Any],
    *,
    f: int | None = None,
    coordinatewise: bool = False,
    torch: bool = False,
    properties: Sequence[str] | None = None,
    n_min: int | None = None,
    n_max: int | None = None,
    d_min: int = 1,
    d_max: int = 12,
    dtypes: Sequence[Any] = (np.float32, np.float64),
    max_examples: int = 20,
    shrink: bool = True,
    rule_kwargs: dict | None = None,
    branches: bool | str = True,
) -> dict[str, int]:
    """Run the property battery against ``rule`` and raise if any property fails.

    Parameters
    ----------
    rule : callable or str
        ``rule(grads, ...)`` returning a (d,) aggregate (or ``(aggregate, info)``), or the name of
        a registered rule. ``f`` and ``rng`` are passed when its signature accepts them.
    f : int, optional
        Number of Byzantine rows the rule tolerates; the ``nonfinite`` check replaces
        ``max(f, 1)`` rows by NaN/±Inf and ``honest_range`` replaces ``f`` rows by huge values.
    coordinatewise : bool, default False
        Also check ``honest_range`` (for rules whose output coordinate j depends only on column
        j: median, trimmed mean, ...).
    torch : bool, default False
        Also check ``torch``: tensors in, tensors out (the library's own convention; a user's
        NumPy-only rule need not satisfy it).
    properties : sequence of str, optional
        Subset of ``PROPERTIES`` to run (default: all that apply).
    n_min, n_max : int, optional
        Range of n drawn (default ``[4f + 3, 4f + 12]``, which meets every usual bound: Krum's
        n ≥ 2f + 3, Bulyan's n ≥ 4f + 3, trimmed mean's n > 2f).
    d_min, d_max : int, default 1 and 12
        Range of d drawn (d = 1 makes every pair of rows parallel: rules built on cosine
        similarity see only ties there).
    dtypes : sequence, default (float32, float64)
        Dtypes of the drawn matrices.
    max_examples : int, default 20
        Hypothesis examples per property.
    shrink : bool, default True
        Let hypothesis shrink a failing example to a minimal one (slower on failure).
    rule_kwargs : dict, optional
        Extra keyword arguments for every call of the rule.
    branches : bool or str, default True
        Also run every property on one matrix on each side of every size at which the library
        switches code path (:func:`~robustagg.testing.strategies.branch_shapes_for`: 256 rows,
        m²d = 2²⁴, column blocks), the ``nonfinite`` property included. For a registered rule
        name, the switches that rule goes through; for any other callable, every switch; a
        string names the rule whose switches to use (for a wrapper around a registered rule).

    Returns
    -------
    dict
        ``{property: examples run}`` for the properties that passed (all of them, or it raised).

    Raises
    ------
    PropertyFailure
        An ``AssertionError`` listing every failed property with its first falsifying message;
        ``.failures`` holds the exceptions (hypothesis prints the falsifying example).
    """
    fn = get_rule(rule)
    name = rule if isinstance(rule, str) else _name(fn)
    f_ = 0 if f is None else int(f)
    if f is not None and f_ < 0:
        raise ValueError(f"check_rule: f must be >= 0, got {f}")
    lo = n_min if n_min is not None else 4 * f_ + 3
    hi = n_max if n_max is not None else lo + 9
    if hi < lo:
        raise ValueError(f"check_rule: n_max={hi} is below n_min={lo}")
    if not 1 <= d_min <= d_max:
        raise ValueError(f"check_rule: needs 1 <= d_min <= d_max, got d_min={d_min}, d_max={d_max}")
    if properties is None:
        optional = {"honest_range": coordinatewise, "torch": torch}
        properties = [p for p in PROPERTIES if optional.get(p, True)]
    unknown = [p for p in properties if p not in _CHECKS]
    if unknown:
        raise ValueError(f"check_rule: unknown properties {unknown}; available: {list(PROPERTIES)}")
    kwargs = dict(rule_kwargs or {})
    seed_arg = 0 if _accepts_rng(fn) else None
    target = branches if isinstance(branches, str) else (name if isinstance(rule, str) else None)
    if target is not None and not any(target in br.rules for br in _branches()):
        target = None
    explicit = _branch_matrices(target, max(f_, 1), dtypes, lo) if branches else []
    failures: dict[str, BaseException] = {}
    passed: dict[str, int] = {}
    for prop in properties:
        check = _CHECKS[prop]
        counter = {"examples": 0}
        run = _property_test(
            check,
            fn,
            f,
            seed_arg is not None,
            kwargs,
            counter,
            lo,
            hi,
            d_min,
            d_max,
            dtypes,
            max_examples,
            shrink,
            explicit,
        )
        try:
            run()
        except Exception as exc:  # noqa: BLE001 - every failure is reported
            failures[prop] = exc
        else:
            passed[prop] = counter["examples"]
    if failures:
        raise PropertyFailure(name, failures)
    return passed
