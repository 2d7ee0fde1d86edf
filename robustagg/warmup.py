"""``robustagg warmup``: compile every kernel into Numba's on-disk cache ahead of time.

The kernels are Numba functions compiled on first use and cached on disk (``cache=True``): the
first call of a rule in a fresh environment compiles for seconds (about 5-7 s for SignGuard,
the median or Krum), every later process loads the cache in a fraction of a second. Run once
after installation -- ``RUN robustagg warmup`` after ``pip install`` in a Docker image, a CI
step before the tests -- it calls every registered rule, pre-aggregator and attack on tiny
float32 and float64 inputs:

* on both sides of every size switch the rule goes through
  (``robustagg._thresholds.BRANCHES``; the shapes of
  ``robustagg.testing.strategies.branch_shapes_for(rule, k=1)``), since the two sides run
  different kernels;
* writable only: the rules hand their kernels a read-only view of every input
  (``robustagg._array``), so a read-only array (a JAX array, a memory map) reaches the very
  kernels a writable one compiled;
* with a NaN row, and for float64 a finite row past the non-finite limit, so that the
  validation layer's exclusion path is compiled too.

It prints one line per item (the time per dtype, the kernels compiled and those loaded from the
cache), the cache's directory and a total. An item's counts are what its process did not hold
yet: kernels an earlier item of the same process compiled or loaded count for that item. A
second run finds everything in the cache ("compiled 0").

Only the default options are run: an option that reaches a kernel no default call does
(``signguard(clustering="kmeans")``, for instance) compiles on its first use.

Where the cache goes is Numba's decision (docs/performance.md): ``NUMBA_CACHE_DIR`` when set,
otherwise ``__pycache__`` next to the installed sources when that directory is writable,
otherwise the user's cache directory (``$XDG_CACHE_HOME/numba`` or ``~/.cache/numba``); Numba
skips a directory it cannot write. Run the warmup as the user, and with the same
``NUMBA_CACHE_DIR``, that the application will run with.
"""

from __future__ import annotations

import argparse
import fnmatch
import os
import sys
import time
from collections.abc import Sequence
from typing import Any

import numpy as np

__all__ = ["cache_counts", "configure_parser", "run", "warm_item", "warmup_inputs"]

_DTYPES = ("float32", "float64")
_KINDS = ("rule", "preaggregator", "attack")
_BASE_N, _BASE_D = 11, 64  # n = 4f + 7 with f = 1: every rule's bound on n and f holds
_RULE_F, _ATTACK_F = 1, 2
# Exact subset searches: at the row switches (n >= 256) a search over the n subsets of n - 1
# rows costs 10-40 s of arithmetic; with f = 0 (one subset) the same kernels run on the same
# types in milliseconds
_SEARCH_RULES = frozenset({"mda", "smea"})
_SEED = 0


# --------------------------------------------------------------------------------- inputs


def _branch_shapes(name: str) -> list[tuple[int, int]]:
    """(n, d) on both sides of every size switch the rule ``name`` goes through: the shapes of
    ``robustagg.testing.strategies.branch_shapes_for(name, k=1)`` (that module needs
    hypothesis, which an installation need not have)."""
    from ._thresholds import BRANCHES

    k = 1
    shapes: set[tuple[int, int]] = set()
    for br in BRANCHES:
        if name not in br.rules:
            continue
        t = br.last_of_lower
        if br.quantity == "m":
            shapes.update((n, 6) for n in (t, t + 1, t + k + 1))
        elif br.quantity == "m*m*d":
            m0 = 64
            d0 = t // (m0 * m0)
            shapes.update((n, d) for n in (m0, m0 + k) for d in (d0, d0 + 1))
        else:  # "d"
            shapes.update((4 * k + 7, d) for d in (t, t + 1))
    return sorted(shapes)


def warmup_inputs(kind: str, name: str, dtype: str) -> list[np.ndarray]:
    """The matrices the warmup calls the item ``name`` on, for one dtype.

    Parameters
    ----------
    kind : {"rule", "preaggregator", "attack"}
    name : str
        A registered name.
    dtype : {"float32", "float64"}

    Returns
    -------
    list of numpy.ndarray
        The base (11, 64) matrix, one per shape on either side of each size switch the rule
        goes through, and the base matrix with a NaN row (float64: and a row past the
        non-finite limit).
    """
    rng = np.random.default_rng(_SEED)
    shapes = [(_BASE_N, _BASE_D)] + (_branch_shapes(name) if kind == "rule" else [])
    out = []
    for n, d in shapes:
        out.append((rng.standard_normal((n, d)) + 0.5).astype(dtype))
    bad = (rng.standard_normal((_BASE_N, _BASE_D)) + 0.5).astype(dtype)
    bad[-1, 0] = np.nan  # the last rows: an attack's Byzantine rows are the first f
    if dtype == "float64":
        bad[-2] *= 1e200
    out.append(bad)
    return out


# ------------------------------------------------------------------------------- one item


def _dispatchers() -> list[Any]:
    """Every Numba dispatcher of the kernel modules imported so far."""
    from numba.core.dispatcher import Dispatcher

    seen: dict[int, Any] = {}
    for modname, module in list(sys.modules.items()):
        if module is None or not modname.startswith("robustagg."):
            continue
        for value in list(vars(module).values()):
            if isinstance(value, Dispatcher):
                seen[id(value)] = value
    return list(seen.values())


def cache_counts() -> tuple[int, int]:
    """(signatures compiled, signatures loaded from Numba's cache) in this process so far."""
    compiled = loaded = 0
    for disp in _dispatchers():
        stats = disp.stats
        compiled += sum(stats.cache_misses.values())
        loaded += sum(stats.cache_hits.values())
    return compiled, loaded


def warm_item(kind: str, name: str, dtypes: Sequence[str] = _DTYPES) -> dict[str, Any]:
    """Call one registered item on every :func:`warmup_inputs` of each dtype.

    Returns
    -------
    dict
        ``{"kind", "name", "seconds": {dtype: s}, "compiled", "loaded", "errors", "cache_dirs"}``:
        ``compiled`` and ``loaded`` count the kernel signatures Numba compiled or loaded from
        its cache during these calls, ``errors`` the calls that raised (with the message),
        ``cache_dirs`` the directories of the cache files of the kernels used so far.
    """
    import robustagg

    from .bench import call_item as _call_item
    from .bench import item_kwargs as _item_kwargs

    table = {"rule": robustagg.RULES, "preaggregator": robustagg.PREAGGREGATORS, "attack": robustagg.ATTACKS}
    fn = table[kind][name]
    f = _ATTACK_F if kind == "attack" else _RULE_F
    before = cache_counts()
    seconds: dict[str, float] = {}
    errors: list[str] = []
    for dtype in dtypes:
        inputs = warmup_inputs(kind, name, dtype)
        t0 = time.perf_counter()
        for G in inputs:
            # side inputs (FLTrust's root gradient) from the ordinary rows: a non-finite one
            # would be refused, and the non-finite rows are there for the rows' own policy
            ordinary = G[np.abs(G).max(axis=1).astype(np.float64) < 1e100]  # NaN compares False
            try:
                fi = 0 if kind == "rule" and name in _SEARCH_RULES and G.shape[0] > 4 * _BASE_N else f
                extra = _item_kwargs(fn, ordinary, min(fi, len(ordinary) - 1))
                _call_item("attack" if kind == "attack" else "rule", fn, G, fi, _SEED, extra)
            except Exception as exc:  # reported, the other inputs still run
                errors.append(f"{dtype} {G.shape[0]}x{G.shape[1]}: {type(exc).__name__}: {exc}")
        seconds[dtype] = time.perf_counter() - t0
    after = cache_counts()
    return {
        "kind": kind,
        "name": name,
        "seconds": seconds,
        "compiled": after[0] - before[0],
        "loaded": after[1] - before[1],
        "errors": errors,
        "cache_dirs": sorted({d.stats.cache_path for d in _dispatchers() if d.signatures}),
    }


def _warm_items(items: Sequence[tuple[str, str]], dtypes: Sequence[str]) -> list[dict[str, Any]]:
    """Worker of ``--jobs``: :func:`warm_item` on each item, in a fresh interpreter."""
    return [warm_item(kind, name, dtypes) for kind, name in items]


# ------------------------------------------------------------------------------ selection


def _select(kind: str, table: Sequence[str], patterns: Sequence[str] | None) -> list[str]:
    if patterns is None:
        return sorted(table)
    out: list[str] = []
    for pat in patterns:
        if pat == "none":
            continue
        hits = [nm for nm in sorted(table) if fnmatch.fnmatchcase(nm, pat)]
        if not hits:
            raise ValueError(
                f"warmup: --{kind}s: unknown {kind} {pat!r}; available: {', '.join(sorted(table))}"
            )
        out += [nm for nm in hits if nm not in out]
    return out


def select_items(
    rules: Sequence[str] | None = None,
    preaggregators: Sequence[str] | None = None,
    attacks: Sequence[str] | None = None,
) -> list[tuple[str, str]]:
    """The (kind, name) items to warm: every registered one when no selection is given,
    otherwise the selected ones of the kinds given (names or shell patterns)."""
    import robustagg

    everything = rules is None and preaggregators is None and attacks is None
    tables = {"rule": robustagg.RULES, "preaggregator": robustagg.PREAGGREGATORS, "attack": robustagg.ATTACKS}
    chosen = {"rule": rules, "preaggregator": preaggregators, "attack": attacks}
    items = []
    for kind in _KINDS:
        if everything or chosen[kind] is not None:
            items += [(kind, nm) for nm in _select(kind, list(tables[kind]), chosen[kind])]
    return items


# ------------------------------------------------------------------------------------ CLI


def _jobs(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text!r}")
    return value


def configure_parser(p: argparse.ArgumentParser) -> None:
    from ._cliargs import add_names_argument, attack_resolver, rule_resolver

    add_names_argument(
        p, "--rules", rule_resolver(compose=False, patterns=True),
        help="rules to compile (names or shell patterns); default: every registered rule, "
        "pre-aggregator and attack when none of --rules/--preaggregators/--attacks is given",
    )  # fmt: skip
    p.add_argument(
        "--preaggregators", nargs="+", type=str, metavar="NAME",
        help="pre-aggregators to compile (names or shell patterns, comma- or space-separated)",
    )  # fmt: skip
    add_names_argument(
        p, "--attacks", attack_resolver(patterns=True), help="attacks to compile (names or shell patterns)"
    )
    p.add_argument(
        "--dtypes", nargs="+", choices=_DTYPES, default=list(_DTYPES), metavar="DTYPE",
        help="float32 and/or float64 (default: both)",
    )  # fmt: skip
    p.add_argument(
        "--jobs", type=_jobs, default=1, metavar="N",
        help="worker processes (default 1); each compiles its share of the items",
    )  # fmt: skip


def _line(res: dict[str, Any], width: int) -> str:
    times = "  ".join(f"{dt} {s:6.2f} s" for dt, s in res["seconds"].items())
    return (
        f"  {res['kind']:<13} {res['name']:<{width}}  {times}  "
        f"compiled {res['compiled']:>3}, from cache {res['loaded']:>3}"
    )


def run(args: argparse.Namespace) -> int:
    from ._cliargs import split_items

    pre = None if args.preaggregators is None else split_items(args.preaggregators)
    items = select_items(args.rules, pre, args.attacks)
    if not items:
        raise ValueError("warmup: nothing selected (check --rules / --preaggregators / --attacks)")
    dtypes = list(dict.fromkeys(args.dtypes))
    jobs = min(args.jobs, len(items))
    print(f"robustagg warmup: {len(items)} item(s), {', '.join(dtypes)}, {jobs} job(s)", flush=True)
    width = max(len(nm) for _, nm in items)
    t0 = time.perf_counter()
    results: list[dict[str, Any]] = []
    if jobs == 1:
        for kind, name in items:
            res = warm_item(kind, name, dtypes)
            results.append(res)
            print(_line(res, width), flush=True)
    else:
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor, as_completed

        # spawn: fresh interpreters (no fork of a process whose Numba threads may run)
        ctx = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(max_workers=jobs, mp_context=ctx) as pool:
            futures = [pool.submit(_warm_items, [item], dtypes) for item in items]
            for fut in as_completed(futures):
                for res in fut.result():
                    results.append(res)
                    print(_line(res, width), flush=True)
        # Numba's cache index is rewritten without a lock: an entry two processes saved at the
        # same moment can be lost. One pass here, alone, loads everything and compiles (and
        # saves) what is missing.
        check = [warm_item(kind, name, dtypes) for kind, name in items]
        redone = sum(r["compiled"] for r in check)
        print(f"  check (one process): {redone} kernel signature(s) compiled again", flush=True)
    wall = time.perf_counter() - t0
    compiled = sum(r["compiled"] for r in results)
    loaded = sum(r["loaded"] for r in results)
    busy = sum(sum(r["seconds"].values()) for r in results)
    failed = [r for r in results if r["errors"]]
    for r in failed:
        for err in r["errors"]:
            print(f"  {r['kind']} {r['name']}: {err}", file=sys.stderr)
    dirs = sorted({p for r in results for p in r["cache_dirs"]})
    if dirs:
        print(f"  Numba cache: {os.path.commonpath(dirs) if len(dirs) > 1 else dirs[0]}", flush=True)
    print(
        f"total: {len(results)} item(s), {compiled} kernel signature(s) compiled, {loaded} from the cache, "
        f"{busy:.1f} s of calls, {wall:.1f} s wall",
        flush=True,
    )
    return 1 if failed else 0
