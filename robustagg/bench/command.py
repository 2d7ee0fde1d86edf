"""The command line of ``robustagg bench``: its options (:func:`configure_parser`), the presets
they start from, and :func:`run`, which prints the sweep's table (or the throughput table) and
writes the JSON."""

from __future__ import annotations

import argparse
import fnmatch
import json
import re
import sys
from typing import Any

from .inputs import registered, select_names
from .presets import PRESETS, preset_settings
from .report import format_row, format_table, to_jsonable
from .sweep import run_benchmark
from .throughput import throughput_table, write_throughput


def parse_size(text: str) -> int:
    """Bytes of a size such as ``512M``, ``2G`` or ``1.5GiB`` (an ``ArgumentTypeError`` otherwise)."""
    m = re.fullmatch(r"\s*([0-9.]+)\s*([kmgt]?)i?b?\s*", text.lower())
    if not m:
        raise argparse.ArgumentTypeError(f"not a size: {text!r} (e.g. 512M, 2G)")
    mult = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}[m.group(2)]
    return int(float(m.group(1)) * mult)


def parse_int(text: str) -> int:
    """A positive integer written ``1000``, ``1e6``, ``10^6``, ``10**6`` or ``1_000``."""
    t = text.strip().lower().replace("_", "")
    m = re.fullmatch(r"10\^(\d+)|10\*\*(\d+)", t)
    if m:
        return 10 ** int(m.group(1) or m.group(2))
    v = float(t)
    if v != int(v) or v <= 0:
        raise argparse.ArgumentTypeError(f"not a positive integer: {text!r}")
    return int(v)


def _int_list(text: str) -> list[int]:
    try:
        return [parse_int(t) for t in text.split(",") if t.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a comma-separated list of integers: {text!r}") from None


def _str_list(text: str) -> list[str]:
    return [t.strip() for t in text.split(",") if t.strip()]


def _epilog() -> str:
    import textwrap

    width = max(map(len, PRESETS))
    presets = "\n".join(
        textwrap.fill(
            p.summary, 100, initial_indent=f"  {p.name:<{width}}  ", subsequent_indent=" " * (width + 4)
        )
        for p in PRESETS.values()
    )
    return (
        "presets (--preset NAME; an option given on the command line overrides the preset's):\n"
        f"{presets}\n"
        "examples:\n"
        "  robustagg bench --quick\n"
        "  robustagg bench --targets --json targets.json\n"
        "  robustagg bench --preset throughput --n 50 --d 1e6\n"
        "  robustagg bench --rules median trimmed_mean --attacks none --n 50 --d 1e5,1e6 --dtype float32\n"
        "cells whose (n, d) matrix exceeds --memory-budget are reported as skipped."
    )


def configure_parser(p: argparse.ArgumentParser) -> None:
    """Options of ``robustagg bench`` (every default can come from a preset)."""
    p.formatter_class = argparse.RawDescriptionHelpFormatter
    p.epilog = _epilog()
    p.add_argument(
        "--preset",
        choices=list(PRESETS),
        default=None,
        metavar="NAME",
        help="start from a named set of options (the presets listed below); default full",
    )
    p.add_argument("--quick", action="store_true", help="the same as --preset quick")
    p.add_argument("--targets", action="store_true", help="the same as --preset targets")
    _add_selection_options(p)
    _add_grid_options(p)
    _add_measure_options(p)
    _add_output_options(p)


def _add_selection_options(p: argparse.ArgumentParser) -> None:
    from .._cliargs import add_names_argument, attack_resolver, rule_resolver

    add_names_argument(
        p,
        "--rules",
        rule_resolver(compose=False, patterns=True),
        metavar="RULE",
        help="rules: names or fnmatch patterns ('signguard*'; 'none': no rule); default all",
    )
    add_names_argument(
        p,
        "--attacks",
        attack_resolver(patterns=True),
        metavar="ATTACK",
        example="Min-Max",
        help="attacks: names or fnmatch patterns ('none': no attack); default all",
    )
    p.add_argument("--exclude", help="comma-separated names or patterns to leave out (rules and attacks)")


def _add_grid_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--n", type=_int_list, help="client counts, default 10,50,200,1000")
    p.add_argument("--d", type=_int_list, help="dimensions (1e6 and 10^6 accepted), default 1e3..1e7")
    p.add_argument("--dtype", type=_str_list, help="float32,float64 (default both)")
    p.add_argument("--threads", type=_str_list, help="thread counts or 'all', default 1,all")
    p.add_argument("--f-fraction", type=float, help="Byzantine fraction f/n (default 0.2)")
    p.add_argument("--seed", type=int, help="seed of the matrices and the rules' rng (default 0)")
    p.add_argument(
        "--memory-budget", type=parse_size, help="largest (n, d) matrix to build, e.g. 512M, 4G (default 1G)"
    )


def _add_measure_options(p: argparse.ArgumentParser) -> None:
    flag = argparse.BooleanOptionalAction
    p.add_argument("--repeats", type=int, help="timed calls per measurement (median reported), default 5")
    p.add_argument(
        "--time-budget", type=float, help="seconds of timed calls per measurement at most (default 20)"
    )
    p.add_argument(
        "--compile",
        dest="compile_times",
        action=flag,
        help="measure compile/cache-load times in fresh interpreters (default on, off with --quick)",
    )
    p.add_argument("--numpy", action=flag, help="time the NumPy baselines (default on)")
    p.add_argument("--byzfl", action=flag, help="time byzfl where installed (default on)")
    p.add_argument("--memory", action=flag, help="measure peak extra memory (default on)")
    p.add_argument(
        "--references", type=_str_list, help="reference ops: gram,np_median or none (default both)"
    )


def _add_output_options(p: argparse.ArgumentParser) -> None:
    from .._cliargs import add_out_argument

    p.add_argument("--json", metavar="PATH", default=None, help="write the full result as JSON")
    add_out_argument(p, help="write the table to this file (default: stdout)")
    p.add_argument("--list", action="store_true", help="list the selected rules and attacks and exit")
    p.add_argument("--quiet", action="store_true", help="no progress bar, no per-row lines")


def _settings(args: argparse.Namespace) -> tuple[str, dict[str, Any]]:
    """The run's table and options: the presets named (``--preset``, ``--quick``, ``--targets``,
    in this order) under the options given."""
    names = [args.preset] if args.preset else []
    names += [nm for nm, on in (("quick", args.quick), ("targets", args.targets)) if on]
    refs = None if args.references is None else [r for r in args.references if r != "none"]
    given = {
        "rules": args.rules,
        "attacks": args.attacks,
        "exclude": args.exclude,
        "n": args.n,
        "d": args.d,
        "dtypes": args.dtype,
        "threads": args.threads,
        "repeats": args.repeats,
        "time_budget": args.time_budget,
        "memory_budget": args.memory_budget,
        "f_fraction": args.f_fraction,
        "numpy_baselines": args.numpy,
        "byzfl": args.byzfl,
        "memory": args.memory,
        "compile_times": args.compile_times,
        "references": refs,
        "seed": args.seed,
    }
    if args.repeats is not None and args.repeats < 1:
        raise ValueError(f"bench: --repeats must be >= 1, got {args.repeats}")
    return preset_settings(names, given)


def run(args: argparse.Namespace) -> int:
    """Entry point of ``robustagg bench``."""
    table, kw = _settings(args)
    if args.list:
        return _list_selection(kw)
    if table == "throughput":
        return _run_throughput(args, kw)
    result = run_benchmark(**kw, progress=False if args.quiet else None, on_row=_row_printer(args.quiet))
    result["command"] = "robustagg bench " + " ".join(sys.argv[2:]) if len(sys.argv) > 1 else None
    if getattr(args, "out", None):
        with open(args.out, "w", encoding="utf-8") as fh:
            fh.write(format_table(result) + "\n")
        print(f"wrote {args.out}")
    else:
        print(format_table(result))
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(to_jsonable(result), fh, indent=1)
        print(f"\nwrote {args.json}")
    return 0


def _excluded(name: str, exclude: str | None) -> bool:
    return any(fnmatch.fnmatchcase(name, p.strip()) for p in (exclude or "").split(",") if p.strip())


def _list_selection(kw: dict[str, Any]) -> int:
    """``--list``: the rules and attacks the options select, one a line."""
    for kind, sel in (("rule", kw["rules"]), ("attack", kw["attacks"])):
        for nm in select_names(registered(kind), sel):
            if not _excluded(nm, kw["exclude"]):
                print(f"{kind:<7} {nm}")
    return 0


def _row_printer(quiet: bool):
    """``on_row`` of the sweep: each row on stderr as it is measured, under its cell's line."""
    printed_cells: set = set()

    def on_row(row: dict[str, Any]) -> None:
        if quiet:
            return
        key = (row["n"], row["d"], row["dtype"], row["threads"])
        if key not in printed_cells and row.get("status") == "ok":
            printed_cells.add(key)
            print(
                f"-- n={row['n']} d={row['d']:g} {row['dtype']} threads={row['threads']}",
                file=sys.stderr,
                flush=True,
            )
        if row.get("status") != "skipped":
            print(format_row(row), file=sys.stderr, flush=True)

    return on_row


def _run_throughput(args: argparse.Namespace, kw: dict[str, Any]) -> int:
    """The throughput preset: one table per (n, d, dtype) of the options, the selected rules."""
    if args.json:
        raise ValueError("bench: --json is not available with the throughput preset (it prints a text table)")
    table = registered("rule")
    names = select_names(table, kw["rules"])
    if kw["rules"] is not None:  # the order given, as robustagg throughput prints it
        names = list(dict.fromkeys(nm for p in kw["rules"] for nm in names if fnmatch.fnmatchcase(nm, p)))
    rules = {nm: table[nm] for nm in names if not _excluded(nm, kw["exclude"])}
    if not rules:
        raise ValueError("bench: no rule selected (check --rules / --exclude)")
    for dt in kw["dtypes"]:
        if dt not in ("float32", "float64"):
            raise ValueError(f"bench: dtype must be float32 or float64, got {dt!r}")
    tables = [
        throughput_table(
            rules, n=n, d=d, f=int(kw["f_fraction"] * n), dtype=dt, repeats=kw["repeats"], seed=kw["seed"]
        )
        for dt in kw["dtypes"]
        for n in kw["n"]
        for d in kw["d"]
    ]
    return write_throughput(_joined(tables), getattr(args, "out", None))


def _joined(tables):
    for i, lines in enumerate(tables):
        if i:
            yield ""
        yield from lines
