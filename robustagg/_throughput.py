"""``robustagg throughput``: a quick table of every registered rule's time on a synthetic
attacked matrix (the README's main job until the trainer exists).

The matrix: n honest rows ``mu + N(0, 1)`` (``mu ~ 0.1 N(0, 1)``), the first ``f`` replaced by
the LIE attack (z = 0.3) -- ``robustagg.ATTACKS["lie"]`` when registered, else the same vector
built here. Every rule of ``robustagg.RULES`` (or those of ``--rules``) is called through
``call_with_supported`` with ``f`` and a seeded ``rng``; a rule that refuses this f (e.g.
Bulyan needs n >= 4f + 3) is run with the largest f it accepts. The first call of each rule is
reported apart (JIT compilation or the load of Numba's cache); the time is the median of
``--repeats`` further calls. ``--out`` writes the table to a file instead of stdout.
"""

from __future__ import annotations

import argparse
import contextlib
import sys
import time
from typing import Any

import numpy as np

from ._cliargs import add_names_argument, add_out_argument, rule_resolver


def configure_parser(p: argparse.ArgumentParser) -> None:
    p.add_argument("--n", type=int, default=50, help="clients (rows), default 50")
    p.add_argument("--d", type=float, default=1e5, help="parameters (columns), default 1e5")
    p.add_argument("--f", type=int, default=None, help="Byzantine rows (default: 20%% of n)")
    p.add_argument("--dtype", choices=["float32", "float64"], default="float32")
    p.add_argument("--repeats", type=int, default=3, help="timed calls per rule (median reported)")
    add_names_argument(
        p, "--rules", rule_resolver(), metavar="RULE", help="rules to time (default: every registered rule)"
    )
    p.add_argument("--seed", type=int, default=0)
    add_out_argument(p, help="write the table to this file (default: stdout)")


def attacked_matrix(n: int, d: int, f: int, dtype: Any, seed: int = 0) -> np.ndarray:
    """Honest ``mu + N(0, 1)`` rows; the first f rows replaced by the LIE vector (z = 0.3)."""
    from . import ATTACKS
    from ._registry import call_with_supported

    rng = np.random.default_rng(seed)
    G = rng.standard_normal((n, d), dtype=np.float32).astype(dtype, copy=False)
    G += (0.1 * rng.standard_normal(d, dtype=np.float32)).astype(dtype)
    if f == 0:
        return G
    if "lie" in ATTACKS:
        return np.asarray(call_with_supported(ATTACKS["lie"], G, f, z=0.3, rng=seed))
    honest = G[f:].astype(np.float64)
    G[:f] = (honest.mean(axis=0) - 0.3 * honest.std(axis=0, ddof=1)).astype(dtype)
    return G


def _call(fn, G, f, seed):
    from ._registry import call_with_supported

    return call_with_supported(fn, G, f=f, rng=seed)


def _takes_f(fn) -> bool:
    import inspect

    try:
        return "f" in inspect.signature(fn).parameters
    except (TypeError, ValueError):  # pragma: no cover - builtins
        return True


def _largest_accepted_f(fn, G, f, seed):
    """The largest f' <= f the rule accepts on G (rules refuse f above their bound)."""
    for ff in range(f, -1, -1):
        try:
            _call(fn, G[:, :1], ff, seed)
            return ff
        except ValueError as exc:
            if "(n clients, f Byzantine)" not in str(exc):  # the validation layer's bound message
                raise TypeError(str(exc)) from None  # not a bound on f: report as skipped
    return None


def run(args: argparse.Namespace) -> int:
    from . import RULES, get_rule

    n, d = args.n, int(args.d)
    if n < 1 or d < 1:
        raise ValueError(f"--n and --d must be positive, got n={n}, d={d}")
    if args.repeats < 1:
        raise ValueError(f"--repeats must be >= 1, got {args.repeats}")
    f = int(0.2 * n) if args.f is None else args.f
    if not 0 <= f < n:
        raise ValueError(f"--f must be in [0, n), got {f}")
    names = sorted(RULES) if args.rules is None else list(args.rules)
    rules = {name: get_rule(name) for name in names}  # resolved by the parser; compositions built here
    out = getattr(args, "out", None)
    with open(out, "w", encoding="utf-8") if out else contextlib.nullcontext(sys.stdout) as stream:
        return _table(args, n, d, f, rules, lambda line: print(line, file=stream, flush=True))


def _table(args: argparse.Namespace, n: int, d: int, f: int, rules: dict, emit) -> int:
    G = attacked_matrix(n, d, f, np.dtype(args.dtype), args.seed)
    gbytes = G.nbytes / 1e9
    emit(
        f"robustagg throughput: n={n} d={d} f={f} dtype={args.dtype} (LIE attack, z=0.3), "
        f"median of {args.repeats} calls"
    )
    emit(f"{'rule':<22}{'f used':>7}{'first call [s]':>16}{'time [s]':>11}{'GB/s':>8}")
    for name, fn in rules.items():
        try:
            ff = _largest_accepted_f(fn, G, f, args.seed)
            if ff is None:
                emit(f"{name:<22}{'-':>7}  skipped: refuses every f for n={n}")
                continue
            t0 = time.perf_counter()
            _call(fn, G, ff, args.seed)
            first = time.perf_counter() - t0
        except TypeError as exc:  # needs arguments a generic call cannot give (e.g. fltrust's root gradient)
            emit(f"{name:<22}{'-':>7}  skipped: {exc}")
            continue
        times = []
        for _ in range(args.repeats):
            t0 = time.perf_counter()
            _call(fn, G, ff, args.seed)
            times.append(time.perf_counter() - t0)
        t = float(np.median(times))
        f_shown = str(ff) if _takes_f(fn) else "-"
        emit(f"{name:<22}{f_shown:>7}{first:>16.3f}{t:>11.4f}{gbytes / t:>8.2f}")
    return 0
