"""The throughput table (``robustagg bench --preset throughput``, and its alias
``robustagg throughput``): every registered rule's time on one synthetic attacked matrix.

The matrix (:func:`~robustagg.bench.attacked_matrix`): n honest rows ``mu + N(0, 1)``
(``mu ~ 0.1 N(0, 1)``), the first ``f`` replaced by the LIE attack (z = 0.3). Every rule is
called through ``call_with_supported`` with ``f`` and a seeded ``rng``; a rule that refuses this
f (e.g. Bulyan needs n >= 4f + 3) is run with the largest f it accepts. The first call of each
rule is reported apart (JIT compilation or the load of Numba's cache); the time is the median
of ``repeats`` further calls.

This module also provides the ``robustagg throughput`` subcommand (:func:`configure_parser`,
:func:`run`): the same table, with a rule list that may hold compositions (``nnm+krum``) and an
explicit ``--f``.
"""

from __future__ import annotations

import argparse
import contextlib
import inspect
import sys
from collections.abc import Callable, Iterator, Mapping
from typing import IO, Any

import numpy as np

from .._cliargs import add_names_argument, add_out_argument, rule_resolver
from .inputs import attacked_matrix
from .timing import median_time


def throughput_table(
    rules: Mapping[str, Callable[..., Any]],
    *,
    n: int,
    d: int,
    f: int,
    dtype: str = "float32",
    repeats: int = 3,
    seed: int = 0,
) -> Iterator[str]:
    """The lines of the throughput table of ``rules`` (name -> rule) on an ``(n, d)`` matrix
    with ``f`` LIE rows, yielded as each rule is measured (the arguments are checked at once,
    the matrix built at the first line).

    Parameters
    ----------
    rules : mapping
        The rules to time, by the name the table prints.
    n, d, f : int
        Clients, parameters and Byzantine rows (``0 <= f < n``).
    dtype : str
        ``"float32"`` or ``"float64"``.
    repeats : int
        Timed calls per rule after the first (the median is printed).
    seed : int
        Seed of the matrix and of the rules' ``rng``.
    """
    if n < 1 or d < 1:
        raise ValueError(f"throughput_table: n and d must be positive, got n={n}, d={d}")
    if repeats < 1:
        raise ValueError(f"throughput_table: repeats must be >= 1, got {repeats}")
    if not 0 <= f < n:
        raise ValueError(f"throughput_table: f must be in [0, n), got f={f} for n={n}")
    return _table_lines(rules, n, d, f, dtype, repeats, seed)


def _table_lines(rules, n, d, f, dtype, repeats, seed) -> Iterator[str]:
    G = attacked_matrix(n, d, f, np.dtype(dtype), seed)
    gbytes = G.nbytes / 1e9
    yield f"robustagg throughput: n={n} d={d} f={f} dtype={dtype} (LIE attack, z=0.3), median of {repeats} calls"
    yield f"{'rule':<22}{'f used':>7}{'first call [s]':>16}{'time [s]':>11}{'GB/s':>8}"
    for name, fn in rules.items():
        try:
            ff = _largest_accepted_f(fn, G, f, seed)
            if ff is None:
                yield f"{name:<22}{'-':>7}  skipped: refuses every f for n={n}"
                continue
            first, _, _, _ = median_time(lambda fn=fn, ff=ff: _call(fn, G, ff, seed), repeats=1, warmup=0)
        except TypeError as exc:  # needs arguments a generic call cannot give (e.g. fltrust's root gradient)
            yield f"{name:<22}{'-':>7}  skipped: {exc}"
            continue
        t = median_time(lambda fn=fn, ff=ff: _call(fn, G, ff, seed), repeats=repeats, warmup=0)[0]
        f_shown = str(ff) if _takes_f(fn) else "-"
        yield f"{name:<22}{f_shown:>7}{first:>16.3f}{t:>11.4f}{gbytes / t:>8.2f}"


def write_throughput(lines: Iterator[str], out: str | None = None) -> int:
    """Print the table's lines as they come, to the file ``out`` or to stdout; returns 0."""
    with open(out, "w", encoding="utf-8") if out else contextlib.nullcontext(sys.stdout) as stream:
        _emit_all(lines, stream)
    return 0


def _emit_all(lines: Iterator[str], stream: IO[str]) -> None:
    for line in lines:
        print(line, file=stream, flush=True)


def _call(fn, G, f, seed):
    from .._registry import call_with_supported

    return call_with_supported(fn, G, f=f, rng=seed)


def _takes_f(fn) -> bool:
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


# ------------------------------------------------------------------ the `robustagg throughput` alias


def configure_parser(p: argparse.ArgumentParser) -> None:
    """Options of ``robustagg throughput``, the alias of ``robustagg bench --preset throughput``."""
    p.description = (
        "The throughput table of every rule on a synthetic attacked matrix: an alias of "
        "`robustagg bench --preset throughput` (the same table), which also takes compositions "
        "(nnm+krum) in --rules and an explicit --f."
    )
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


def run(args: argparse.Namespace) -> int:
    """Entry point of ``robustagg throughput``: the throughput preset's table."""
    from .. import RULES, get_rule

    n, d = args.n, int(args.d)
    f = int(0.2 * n) if args.f is None else args.f
    names = sorted(RULES) if args.rules is None else list(args.rules)
    rules = {name: get_rule(name) for name in names}  # resolved by the parser; compositions built here
    lines = throughput_table(rules, n=n, d=d, f=f, dtype=args.dtype, repeats=args.repeats, seed=args.seed)
    return write_throughput(lines, getattr(args, "out", None))
