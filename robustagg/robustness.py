"""The robustness matrix: every registered rule × every registered attack on synthetic gradients.

Each cell is the relative deviation of the aggregate from what the honest clients agree on,

.. math:: \\frac{\\| \\mathrm{rule}(G') - \\bar g_{\\text{benign}} \\|_2}{\\| \\bar g_{\\text{benign}} \\|_2},

averaged over seeds, where :math:`G'` is the attacked matrix and :math:`\\bar g_{\\text{benign}}`
the mean of the benign rows (of all n rows in the "none" column, where nobody attacks). 0 is perfect; 1 means the aggregate is as far from the honest mean
as the honest mean is from zero (the attack wins: the update is no better than none).

The synthetic gradients follow the LIE paper's observation that the honest spread per
coordinate exceeds the mean: :math:`g_i = \\mu + \\rho\\, \\varepsilon_i` with
:math:`\\mu_j \\sim U(-1, 1)`, :math:`\\varepsilon_i \\sim \\mathcal N(0, I)` and ρ = 2 by default.

Command line (``robustagg matrix``)::

    robustagg matrix --n 50 --f 10 --d 1000 --seeds 0 1 2 --update-docs docs/robustness.md \\
        --csv docs/robustness.csv --json docs/robustness.json

Rules and attacks come from the registries at run time (``robustagg.RULES``,
``robustagg.ATTACKS``); a new rule or attack appears in the matrix without any change here.
Attacks that target a rule (a ``rule`` parameter, e.g. ``line_search``) receive the rule of the
cell. Rules that need a server-side root gradient (a ``root_gradient`` parameter, FLTrust) get a
fresh honest draw. A cell whose rule refuses the configuration (e.g. an exact subset search too
large) is reported as n/a with the reason.
"""

from __future__ import annotations

import argparse
import csv
import inspect
import json
import math
import numbers
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ._registry import ATTACKS, RULES, call_with_supported, get_rule, resolve_name, resolve_rule_name

__all__ = ["robustness_matrix", "synthetic_gradients", "to_markdown"]

NO_ATTACK = "none"
DOC_START = "<!-- robustness-matrix:start -->"
DOC_END = "<!-- robustness-matrix:end -->"


def synthetic_gradients(
    n: int, d: int, *, spread: float = 2.0, mean_range: float = 1.0, seed: int = 0, dtype: Any = np.float64
) -> tuple[np.ndarray, np.ndarray]:
    """Honest gradients ``g_i = mu + spread * eps_i`` with ``mu_j ~ U(-mean_range, mean_range)``.

    Returns ``(G, root)``: the (n, d) matrix and one more independent honest draw (a server's
    root-dataset gradient, for rules that need one).
    """
    rng = np.random.default_rng(seed)
    mu = rng.uniform(-mean_range, mean_range, size=d)
    G = mu + spread * rng.standard_normal((n + 1, d))
    G = G.astype(dtype)
    return np.ascontiguousarray(G[:n]), G[n].copy()


def _takes(fn: Callable, name: str) -> bool:
    try:
        return name in inspect.signature(fn).parameters
    except (TypeError, ValueError):
        return False


def _run_cell(rule_fn, attack_fn, G, root, f, seed):
    """One (rule, attack, seed) evaluation: (deviation, byzantine_kept, honest_kept)."""
    n = G.shape[0]
    byz = np.zeros(n, dtype=bool)
    if attack_fn is None:  # no attack: every client is honest (the rule still assumes f)
        attacked = G
    else:
        byz[:f] = True
        extra: dict[str, Any] = {}
        if _takes(attack_fn, "rule"):
            extra["rule"] = rule_fn
            if _takes(rule_fn, "root_gradient") and _takes(attack_fn, "rule_kwargs"):
                extra["rule_kwargs"] = {"root_gradient": root}
        attacked = call_with_supported(attack_fn, G, f, rng=seed, **extra)
    kwargs: dict[str, Any] = {"f": f, "rng": seed}
    if _takes(rule_fn, "root_gradient"):
        kwargs["root_gradient"] = root
    wants_info = _takes(rule_fn, "return_info")
    if wants_info:
        kwargs["return_info"] = True
    out = call_with_supported(rule_fn, attacked, **kwargs)
    info = None
    if wants_info and isinstance(out, tuple):
        out, info = out
    agg = np.asarray(out, dtype=np.float64)
    honest_mean = G[~byz].astype(np.float64).mean(axis=0)
    dev = float(np.linalg.norm(agg - honest_mean) / np.linalg.norm(honest_mean))
    if not math.isfinite(dev):
        dev = math.inf
    kept_byz = kept_honest = None
    if info is not None and hasattr(info, "kept_rate"):
        kept_honest, kept_byz = info.kept_rate(byz)
    return dev, kept_byz, kept_honest


def robustness_matrix(
    rules: Sequence[str] | None = None,
    attacks: Sequence[str] | None = None,
    *,
    n: int = 50,
    f: int = 10,
    d: int = 1000,
    seeds: int | Sequence[int] = 3,
    spread: float = 2.0,
    dtype: Any = np.float64,
    progress: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Evaluate every rule against every attack (and no attack).

    Parameters
    ----------
    rules, attacks : sequence of str, optional
        Registered names, matched as ``robustagg.get_rule`` matches them (any case, the tables'
        names such as ``"Multi-Krum"``), rules also ``+``-joined compositions such as
        ``"nnm+krum"`` (default: all registered, sorted).
    n, f, d : int
        Clients, Byzantine clients (the first f rows) and dimension.
    seeds : int or sequence of int
        The seeds, one synthetic matrix each, averaged per cell; an int k means seeds 0 … k − 1
        (``robustagg matrix --seeds`` takes the list).
    spread : float
        ρ, the honest noise standard deviation (the mean's coordinates are in [−1, 1]).
    progress : callable, optional
        Called with a short text after each cell.

    Returns
    -------
    dict
        ``{"config": {...}, "rules": [...], "attacks": [...], "cells": {(rule, attack): {...}}}``;
        each cell holds ``deviation`` (mean over seeds, or None when the rule refused),
        ``per_seed``, ``byzantine_kept``, ``honest_kept`` (means, None without diagnostics) and
        ``error``.
    """
    # names as the registry resolves them (any case, display names, compositions such as
    # 'nnm+krum'): an unknown name fails here, before any work
    rules = sorted(RULES) if rules is None else [resolve_rule_name(r, "matrix") for r in rules]
    attacks = (
        sorted(ATTACKS)
        if attacks is None
        else [resolve_name(a, "attack", [*ATTACKS, NO_ATTACK], caller="matrix") for a in attacks]
    )
    if not 0 <= f < n:
        raise ValueError(f"matrix: needs 0 <= f < n, got n={n}, f={f}")
    seed_list = _seed_list(seeds)
    columns = [NO_ATTACK] + [a for a in attacks if a != NO_ATTACK]
    data = [(s, *synthetic_gradients(n, d, spread=spread, seed=s, dtype=dtype)) for s in seed_list]
    cells: dict[tuple[str, str], dict[str, Any]] = {}
    for rule in rules:
        rule_fn = get_rule(rule)
        for attack in columns:
            attack_fn = None if attack == NO_ATTACK else ATTACKS[attack]
            devs, kb, kh, error = [], [], [], None
            start = time.perf_counter()
            for s, G, root in data:
                try:
                    dev, kept_b, kept_h = _run_cell(rule_fn, attack_fn, G, root, f, s)
                except (ValueError, TypeError) as exc:
                    error = str(exc).splitlines()[0]
                    break
                devs.append(dev)
                if kept_b is not None:
                    kb.append(kept_b)
                    kh.append(kept_h)
            cells[(rule, attack)] = {
                "deviation": float(np.mean(devs)) if devs and error is None else None,
                "per_seed": devs if error is None else [],
                "byzantine_kept": _nanmean(kb) if kb and error is None else None,
                "honest_kept": _nanmean(kh) if kh and error is None else None,
                "error": error,
                "seconds": time.perf_counter() - start,
            }
            if progress is not None:
                progress(f"{rule} × {attack}")
    return {
        "config": {
            "n": n,
            "f": f,
            "d": d,
            "seeds": seed_list,
            "spread": spread,
            "dtype": np.dtype(dtype).name,
        },
        "rules": rules,
        "attacks": columns,
        "cells": cells,
    }


def _seed_list(seeds: int | Sequence[int]) -> list[int]:
    """``robustness_matrix``'s seeds: a count k (seeds 0 … k − 1) or the seeds themselves."""
    if isinstance(seeds, numbers.Integral) and not isinstance(seeds, bool):
        if seeds < 1:
            raise ValueError(f"matrix: argument 'seeds' must be a count >= 1 or a list of seeds, got {seeds}")
        return list(range(int(seeds)))
    try:
        seed_list = [int(s) for s in seeds]
        ok = bool(seed_list) and all(
            isinstance(s, numbers.Integral) and not isinstance(s, bool) and s >= 0 for s in seeds
        )
    except (TypeError, ValueError):
        ok = False
    if not ok:
        raise ValueError(
            f"matrix: argument 'seeds' must be a count >= 1 or a non-empty list of non-negative integers, "
            f"got {seeds!r}"
        )
    return seed_list


def _nanmean(values: list[float]) -> float | None:
    arr = np.asarray(values, dtype=float)
    return float(np.nanmean(arr)) if np.isfinite(arr).any() else None


def _fmt(value: float | None) -> str:
    if value is None:
        return "n/a"
    if math.isinf(value):
        return "**inf**"
    if value >= 1000:
        text = f"{value:.1e}"
    elif value >= 10:
        text = f"{value:.1f}"
    else:
        text = f"{value:.2f}"
    return f"**{text}**" if value >= 1.0 else text


def to_markdown(result: dict[str, Any]) -> str:
    """The deviation table (rules × attacks) and, for rules that report which rows they kept,
    the share of Byzantine rows kept, as Markdown."""
    cfg = result["config"]
    rules, attacks, cells = result["rules"], result["attacks"], result["cells"]
    n_seeds = cfg["seeds"] if isinstance(cfg["seeds"], int) else len(cfg["seeds"])
    lines = [
        f"Relative deviation ‖aggregate − honest mean‖ / ‖honest mean‖ (mean of {n_seeds} seeds; "
        f"n = {cfg['n']}, f = {cfg['f']}, d = {cfg['d']}, spread ρ = {cfg['spread']}, {cfg['dtype']}). "
        "**Bold**: ≥ 1, the attack wins.",
        "",
        "| rule | " + " | ".join(attacks) + " | worst |",
        "|---|" + "---:|" * (len(attacks) + 1),
    ]
    notes: dict[str, str] = {}
    for rule in rules:
        row = []
        worst = None
        refused = False
        for attack in attacks:
            cell = cells[(rule, attack)]
            value = cell["deviation"]
            if cell["error"]:
                notes.setdefault(rule, cell["error"])
                refused = True
            if value is not None and attack != NO_ATTACK:
                worst = value if worst is None else max(worst, value)
            row.append(_fmt(value))
        lines.append(f"| {rule} | " + " | ".join(row) + f" | {_fmt(None if refused else worst)} |")

    def selects(rule: str) -> bool:
        for attack in attacks:
            cell = cells[(rule, attack)]
            if attack in ("nan", "inf") or cell["byzantine_kept"] is None:
                continue
            if min(cell["byzantine_kept"], cell["honest_kept"]) < 1.0 - 1e-12:
                return True
        return False

    selecting = [r for r in rules if selects(r)]
    if selecting:
        lines += [
            "",
            "Share of Byzantine rows kept by the rules that select rows (from their diagnostics; "
            "honest rows kept in parentheses).",
            "",
            "| rule | " + " | ".join(a for a in attacks if a != NO_ATTACK) + " |",
            "|---|" + "---:|" * (len(attacks) - 1),
        ]
        for rule in selecting:
            row = []
            for attack in attacks:
                if attack == NO_ATTACK:
                    continue
                cell = cells[(rule, attack)]
                kb, kh = cell["byzantine_kept"], cell["honest_kept"]
                row.append("n/a" if kb is None else f"{kb:.0%} ({kh:.0%})")
            lines.append(f"| {rule} | " + " | ".join(row) + " |")
    if notes:
        lines += ["", "n/a:"]
        lines += [f"- `{rule}`: {reason}" for rule, reason in notes.items()]
    return "\n".join(lines) + "\n"


def to_records(result: dict[str, Any]) -> list[dict[str, Any]]:
    """One flat record per cell (for CSV / JSON)."""
    out = []
    for (rule, attack), cell in result["cells"].items():
        dev = cell["deviation"]
        out.append(
            {
                "rule": rule,
                "attack": attack,
                "deviation": None if dev is None else (dev if math.isfinite(dev) else "inf"),
                "per_seed": [d if math.isfinite(d) else "inf" for d in cell["per_seed"]],
                "byzantine_kept": cell["byzantine_kept"],
                "honest_kept": cell["honest_kept"],
                "error": cell["error"],
                "seconds": round(cell["seconds"], 4),
            }
        )
    return out


def update_docs(path: Path, table: str, command: str) -> None:
    """Replace the text between the matrix markers of ``path`` by the table and its command."""
    text = path.read_text(encoding="utf-8")
    if DOC_START not in text or DOC_END not in text:
        raise ValueError(f"{path} has no '{DOC_START}' ... '{DOC_END}' markers to write the matrix between")
    head, rest = text.split(DOC_START, 1)
    _, tail = rest.split(DOC_END, 1)
    body = f"{DOC_START}\n<!-- generated by: {command} -->\n\n{table}\n{DOC_END}"
    path.write_text(head + body + tail, encoding="utf-8")


# ------------------------------------------------------------------------------------------------
# command line
# ------------------------------------------------------------------------------------------------
def configure_parser(p: argparse.ArgumentParser) -> None:
    from ._cliargs import (
        add_names_argument,
        add_out_argument,
        add_seeds_argument,
        attack_resolver,
        rule_resolver,
    )

    add_names_argument(
        p,
        "--rules",
        rule_resolver(),
        metavar="RULE",
        help="rules or compositions such as nnm+krum (default: all)",
    )
    add_names_argument(
        p,
        "--attacks",
        attack_resolver(extra=(NO_ATTACK,)),
        metavar="ATTACK",
        example="Min-Max",
        help="attacks (default: all; the no-attack column is always there)",
    )
    p.add_argument("--n", type=int, default=50, help="number of clients (default 50)")
    p.add_argument(
        "--f", type=int, default=10, help="number of Byzantine clients, the first f rows (default 10)"
    )
    p.add_argument("--d", type=int, default=1000, help="dimension (default 1000)")
    add_seeds_argument(
        p, default=[0, 1, 2], help="seeds, one synthetic matrix each, averaged per cell (default 0 1 2)"
    )
    p.add_argument(
        "--spread", type=float, default=2.0, help="honest noise std; the mean is in [-1, 1] (default 2)"
    )
    p.add_argument("--dtype", choices=["float32", "float64"], default="float64")
    p.add_argument(
        "--threads",
        type=int,
        default=1,
        help="Numba threads (default 1: the cells are small; 0 keeps Numba's default)",
    )
    add_out_argument(
        p, help="write the Markdown table to this file (default: stdout)", deprecated=("-o", "--output")
    )
    p.add_argument(
        "--update-docs", type=Path, metavar="MD", help="rewrite the table between the markers of this page"
    )
    p.add_argument("--csv", type=Path, help="also write one row per cell as CSV")
    p.add_argument("--json", type=Path, help="also write the full result as JSON")
    p.add_argument(
        "--quiet", action="store_true", help="no progress bar (it is drawn only on a terminal anyway)"
    )


def run(args: argparse.Namespace) -> int:
    if args.n < 2 or args.d < 1:
        raise ValueError(f"--n must be >= 2 and --d >= 1, got n={args.n}, d={args.d}")
    if args.threads and args.threads > 0:
        import numba

        numba.set_num_threads(min(args.threads, numba.config.NUMBA_NUM_THREADS))
    rules = args.rules or sorted(RULES)
    attacks = args.attacks or sorted(ATTACKS)
    total = len(rules) * (len(attacks) + 1)
    from ._progress import Progress

    with Progress(total=total, desc="matrix", enabled=False if args.quiet else None) as bar:
        result = robustness_matrix(
            rules,
            attacks,
            n=args.n,
            f=args.f,
            d=args.d,
            seeds=args.seeds,
            spread=args.spread,
            dtype=np.dtype(args.dtype),
            progress=lambda text: bar.update(1, postfix=text),
        )
    table = to_markdown(result)
    command = _command(args)
    if args.out:
        Path(args.out).write_text(table, encoding="utf-8")
    if args.update_docs:
        update_docs(args.update_docs, table, command)
    if args.csv:
        records = to_records(result)
        with open(args.csv, "w", newline="", encoding="utf-8") as fh:
            writer = csv.DictWriter(fh, fieldnames=[k for k in records[0] if k != "per_seed"])
            writer.writeheader()
            for rec in records:
                writer.writerow({k: v for k, v in rec.items() if k != "per_seed"})
    if args.json:
        payload = {"config": result["config"], "command": command, "cells": to_records(result)}
        args.json.write_text(json.dumps(payload, indent=1), encoding="utf-8")
    if not (args.out or args.update_docs):
        sys.stdout.write(table)
    return 0


def _command(args: argparse.Namespace) -> str:
    seeds = " ".join(map(str, args.seeds))
    parts = ["robustagg matrix", f"--n {args.n}", f"--f {args.f}", f"--d {args.d}", f"--seeds {seeds}"]
    if args.spread != 2.0:
        parts.append(f"--spread {args.spread}")
    if args.dtype != "float64":
        parts.append(f"--dtype {args.dtype}")
    if args.rules:
        parts.append("--rules " + " ".join(args.rules))
    if args.attacks:
        parts.append("--attacks " + " ".join(args.attacks))
    if args.update_docs:
        parts.append(f"--update-docs {args.update_docs}")
    if args.csv:
        parts.append(f"--csv {args.csv}")
    if args.json:
        parts.append(f"--json {args.json}")
    return " ".join(parts)
