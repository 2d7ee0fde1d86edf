"""What the benchmark runs on: the sweep's defaults, the synthetic attacked matrices, the
selection of registered items by pattern, and one call of an item with the arguments it needs."""

from __future__ import annotations

import fnmatch
import inspect
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import numpy as np

DEFAULT_N = (10, 50, 200, 1000)
DEFAULT_D = (10**3, 10**4, 10**5, 10**6, 10**7)
DEFAULT_DTYPES = ("float32", "float64")
QUICK_N = (10, 50)
QUICK_D = (10**3, 10**4)
DEFAULT_MEMORY_BUDGET = 1 << 30  # bytes of the (n, d) matrix; larger cells are skipped
F_FRACTION = 0.2  # the paper's 20 % Byzantine clients
LIE_Z = 0.3  # the experiments' LIE z (docs/conventions.md, Attacks), used to build the attacked input


def registered(kind: str) -> dict[str, Callable[..., Any]]:
    """The registry of ``kind`` (``"rule"`` or ``"attack"``)."""
    import robustagg

    return robustagg.RULES if kind == "rule" else robustagg.ATTACKS


def select_names(table: Iterable[str], patterns: str | Sequence[str] | None) -> list[str]:
    """Names matching any comma-separated fnmatch pattern (``"*"`` all, ``"none"``/empty none;
    ``None``: every name)."""
    names = sorted(table)
    if patterns is None:
        return names
    if isinstance(patterns, str):
        patterns = [p.strip() for p in patterns.split(",")]
    patterns = [p for p in patterns if p and p.lower() != "none"]
    chosen = [nm for nm in names if any(fnmatch.fnmatchcase(nm, p) for p in patterns)]
    unknown = [p for p in patterns if not any(fnmatch.fnmatchcase(nm, p) for nm in names)]
    if unknown:
        raise ValueError(
            f"bench: no registered name matches {', '.join(map(repr, unknown))}; available: {', '.join(names)}"
        )
    return chosen


def make_input(n: int, d: int, dtype: str, f: int, seed: int) -> np.ndarray:
    """The sweep's synthetic attacked matrix: honest rows μ + N(0, 1), μ ~ 0.1·N(0, 1); the first
    f rows replaced by the LIE vector μ̂ − z·σ̂ (z = 0.3, statistics over all rows, σ̂ with
    ddof = 1)."""
    rng = np.random.default_rng(seed)
    G = rng.standard_normal((n, d), dtype=np.float64 if dtype == "float64" else np.float32)
    mu = (0.1 * rng.standard_normal(d)).astype(G.dtype)
    G += mu
    if f > 0:
        lie = G.mean(axis=0, dtype=np.float64) - LIE_Z * G.std(axis=0, ddof=1, dtype=np.float64)
        G[:f] = lie.astype(G.dtype)
    return G


def attacked_matrix(n: int, d: int, f: int, dtype: Any, seed: int = 0) -> np.ndarray:
    """The throughput table's matrix: honest ``mu + N(0, 1)`` rows (drawn in float32); the first
    f rows replaced by the LIE vector (z = 0.3) -- ``robustagg.ATTACKS["lie"]`` when registered,
    else the same vector built here from the honest rows."""
    from .._registry import ATTACKS, call_with_supported

    rng = np.random.default_rng(seed)
    G = rng.standard_normal((n, d), dtype=np.float32).astype(dtype, copy=False)
    G += (0.1 * rng.standard_normal(d, dtype=np.float32)).astype(dtype)
    if f == 0:
        return G
    if "lie" in ATTACKS:
        return np.asarray(call_with_supported(ATTACKS["lie"], G, f, z=LIE_Z, rng=seed))
    honest = G[f:].astype(np.float64)
    G[:f] = (honest.mean(axis=0) - LIE_Z * honest.std(axis=0, ddof=1)).astype(dtype)
    return G


# Arguments some items need and have no usable default for (``None`` means "you must give
# it"): the harness supplies them, computed outside the timed calls.
ITEM_ARGUMENTS: dict[str, Callable[[np.ndarray, int], Any]] = {
    "rule": lambda G, f: "mean",  # attacks that target a rule (line search)
    "root_gradient": lambda G, f: G[f:].mean(axis=0),  # FLTrust's server gradient: the honest mean
}


def item_kwargs(fn: Callable[..., Any], G: np.ndarray, f: int) -> dict[str, Any]:
    """Values for the parameters of ``fn`` named in :data:`ITEM_ARGUMENTS` whose default is
    missing or ``None``."""
    try:
        params = inspect.signature(fn).parameters.values()
    except (TypeError, ValueError):
        return {}
    return {
        p.name: ITEM_ARGUMENTS[p.name](G, f)
        for p in params
        if p.name in ITEM_ARGUMENTS and (p.default is inspect.Parameter.empty or p.default is None)
    }


def call_item(
    kind: str, fn: Callable[..., Any], G: np.ndarray, f: int, seed: int, extra: dict[str, Any] | None = None
) -> Any:
    """One call of a rule (``fn(G, f=f, rng=seed)``) or an attack (``fn(G, f, rng=seed)``) with
    the arguments of :func:`item_kwargs` (or ``extra``), each passed only where ``fn`` takes it."""
    from .._registry import call_with_supported

    extra = item_kwargs(fn, G, f) if extra is None else extra
    if kind == "rule":
        return call_with_supported(fn, G, f=f, rng=seed, **extra)
    return call_with_supported(fn, G, f, rng=seed, **extra)


def fit_f(kind: str, fn: Callable[..., Any], G: np.ndarray, f: int, seed: int) -> tuple[int, Any]:
    """Run the item once with the largest f <= the cell's f that the item accepts (this is the
    warm-up call). A ``ValueError`` is taken as "f too large" (a bound on n and f, or a search
    budget); the largest accepted f is found by bisection. Returns ``(f_used, result)``; raises
    the error of f = 0 if no f is accepted."""
    try:
        return f, call_item(kind, fn, G, f, seed)
    except ValueError as exc:
        if f == 0:
            raise
        err: Exception = exc
    best: tuple[int, Any] | None = None
    lo, hi = 0, f - 1  # the answer is in [lo, hi]
    while lo <= hi:
        mid = (lo + hi + 1) // 2
        try:
            best = (mid, call_item(kind, fn, G, mid, seed))
            lo = mid + 1
        except ValueError as exc:
            err = exc
            hi = mid - 1
    if best is None:
        raise err
    if best[0] != lo - 1:  # pragma: no cover - defensive: re-run at the final f
        best = (lo - 1, call_item(kind, fn, G, lo - 1, seed))
    return best
