"""The results of ``robustagg experiment``: ``results.csv`` and the tables in the paper's layout.

:func:`write_csv` writes one row per cell and seed; :func:`markdown` the preset's table(s): the
best **defense** of each attack column in bold (Mean, no defense, never is), the title with the
Byzantine fraction actually used (f / n, f = round(fraction · n)), and under No Attack -- where
the designated Byzantine clients send honest gradients -- the kept-rate tables mark the column
(†).
"""

from __future__ import annotations

import csv
import math
from collections.abc import Callable

import numpy as np

from .presets import PRESETS
from .results import as_float, best_accuracy, display_name, grid, mean_std

__all__ = ["CSV_COLUMNS", "IDLE_MARK", "IDLE_NOTE", "NO_DEFENSE", "markdown", "write_csv"]

#: the rule that is no defense: never bold as "best"
NO_DEFENSE = "mean"
#: marks the No Attack column/row of the kept-rate tables (see IDLE_NOTE)
IDLE_MARK = "†"
IDLE_NOTE = (
    f"{IDLE_MARK} No Attack: the f designated Byzantine clients send honest gradients; M there is "
    "their kept rate, not that of malicious gradients."
)

#: the columns of ``results.csv``
CSV_COLUMNS = [
    "preset",
    "dataset",
    "model",
    "rule",
    "attack",
    "byzantine_fraction",
    "partition",
    "seed",
    "variant",
    "best_accuracy",
    "final_accuracy",
    "honest_kept_rate",
    "malicious_kept_rate",
    "byzantine_kept_rate",
    "diverged",
    "epochs",
    "rounds",
    "seconds",
    "error",
    "cell_id",
]


def _percent(v: float | None) -> str:
    """A fraction as a percentage with 2 decimals ("" when missing or not finite)."""
    return "" if v is None or not math.isfinite(as_float(v)) else f"{100 * as_float(v):.2f}"


def _rate(v: float | None) -> str:
    """A kept rate with 4 decimals ("" when missing or not finite)."""
    return "" if v is None or not math.isfinite(as_float(v)) else f"{as_float(v):.4f}"


def _csv_row(record: dict) -> dict:
    from .partition import partition_label

    c, s = record["cell"], record.get("summary", {})
    return {
        "preset": c["preset"],
        "dataset": c["dataset"],
        "model": c["model"],
        "rule": c["rule"],
        "attack": c["attack"],
        "byzantine_fraction": c["byzantine_fraction"],
        "partition": partition_label(c["partition"], c["s"]),
        "seed": c["seed"],
        "variant": c.get("variant", ""),
        "best_accuracy": _percent(s.get("best_accuracy")),
        "final_accuracy": _percent(s.get("final_accuracy")),
        "honest_kept_rate": _rate(s.get("honest_kept_rate")),
        "malicious_kept_rate": "" if c["attack"] == "none" else _rate(s.get("malicious_kept_rate")),
        "byzantine_kept_rate": _rate(s.get("malicious_kept_rate")),
        "diverged": s.get("diverged", ""),
        "epochs": c["epochs"],
        "rounds": s.get("rounds", ""),
        "seconds": f"{as_float(s.get('seconds')):.2f}",
        "error": record.get("error", ""),
        "cell_id": c["cell_id"],
    }


def write_csv(path: str, records: list[dict]) -> None:
    """Write ``results.csv``: one row per record, the columns of :data:`CSV_COLUMNS`."""
    with open(path, "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=CSV_COLUMNS)
        w.writeheader()
        for r in records:
            w.writerow(_csv_row(r))


# ----------------------------------------------------------------------------------------------
# Markdown tables in the paper's layout


def markdown(preset: str, records: list[dict]) -> str:
    """The preset's table(s) in the paper's layout.

    Parameters
    ----------
    preset : str
        A key of :data:`robustagg.training.presets.PRESETS`.
    records : list of dict
        The records of the preset's cells (those with an ``error`` are listed at the end).

    Returns
    -------
    str
        Markdown: a title, the run's settings, the table(s), the cells that could not run.
    """
    ok = [r for r in records if not r.get("error")]
    parts = [f"# {_title(preset, records)}", "", _context_line(records) if records else "", ""]
    if preset not in ("fig2", "table2"):
        parts += [_accuracy_note(preset), ""]
    parts += _SECTIONS[preset](ok)
    parts += _errors_section(records)
    return "\n".join(parts).rstrip() + "\n"


def _accuracy_note(preset: str) -> str:
    """What the accuracy tables show (and, where one defense is bold, why Mean never is)."""
    return (
        "Accuracy: best test accuracy over the evaluations in % (mean ± std over seeds when there "
        "are several)."
        + (
            f" Bold: the best defense in each column ({display_name(NO_DEFENSE)} is no defense)."
            if preset in ("table1", "table3")
            else ""
        )
    )


def _summary_value(key: str) -> Callable[[dict], float]:
    """A record's ``summary[key]`` as a float (NaN when missing)."""
    return lambda r: as_float(r["summary"].get(key))


def _rule(r: dict) -> str:
    return r["cell"]["rule"]


def _attack(r: dict) -> str:
    return r["cell"]["attack"]


def _table1_section(ok: list[dict]) -> list[str]:
    """Table I: best and final accuracy, kept rates (H / M), rules × attacks."""
    parts = []
    rows, cols, stats = grid(ok, _rule, _attack, best_accuracy)
    parts.append(_table(rows, cols, stats, display_name, display_name, header0="GAR"))
    parts += ["", "Final test accuracy (%, after the last round):", ""]
    rows, cols, stats = grid(ok, _rule, _attack, _summary_value("final_accuracy"))
    parts.append(_table(rows, cols, stats, display_name, display_name, header0="GAR"))
    parts += ["", "Average kept rate of honest / malicious gradients (H / M):", ""]
    h = grid(ok, _rule, _attack, _summary_value("honest_kept_rate"))
    m = grid(ok, _rule, _attack, _summary_value("malicious_kept_rate"))
    parts.append(_kept_table(h, m, display_name))
    if "none" in h[1]:
        parts += ["", IDLE_NOTE]
    return parts


def _table2_section(ok: list[dict]) -> list[str]:
    """Table II: kept rates of honest (H) and malicious (M) gradients, attacks × rules."""
    h = grid(ok, _attack, _rule, _summary_value("honest_kept_rate"))
    m = grid(ok, _attack, _rule, _summary_value("malicious_kept_rate"))
    rows, cols = h[0], h[1]
    lines = [
        "| Attack | " + " | ".join(f"{display_name(c)} H | {display_name(c)} M" for c in cols) + " |",
        "|" + "---|" * (2 * len(cols) + 1),
    ]
    for a in rows:
        vals = []
        for c in cols:
            vals.append(_fmt(*h[2].get((a, c), (math.nan, math.nan)), scale=1.0, digits=4))
            vals.append(_fmt(*m[2].get((a, c), (math.nan, math.nan)), scale=1.0, digits=4))
        lines.append(f"| {_attack_label(a)} | " + " | ".join(vals) + " |")
    parts = ["\n".join(lines)]
    if "none" in rows:
        parts += ["", IDLE_NOTE]
    parts += ["", "Best test accuracy (%; bold: the best defense in each column):", ""]
    rows, cols, stats = grid(ok, _rule, _attack, best_accuracy)
    parts.append(_table(rows, cols, stats, display_name, display_name, header0="GAR"))
    return parts


def _table3_section(ok: list[dict]) -> list[str]:
    """Table III: the SignGuard-Sim ablation, components × attacks."""
    rows, cols, stats = grid(ok, lambda r: r["cell"]["variant"], _attack, best_accuracy)
    return [
        _table(rows, cols, stats, lambda v: v, display_name, header0="Components"),
        "",
        "T: norm thresholding, C: sign clustering, N: norm clipping. Reverse: sign flip scaled by "
        "r = 3 (= R) when T or N is on, r = 100 otherwise.",
    ]


def _fig2_section(ok: list[dict]) -> list[str]:
    """Fig. 2: average sign statistics of the honest gradients and of the LIE vector."""
    return [_fig2_table(ok)]


def _fig4_section(ok: list[dict]) -> list[str]:
    """Fig. 4: the baseline, then best accuracy of (attack, rule) × Byzantine fraction."""
    base = mean_std([best_accuracy(r) for r in ok if r["cell"]["variant"] == "baseline"])[0]
    rest = [r for r in ok if r["cell"]["variant"] != "baseline"]
    rows, cols, stats = grid(
        rest, lambda r: (_attack(r), _rule(r)), lambda r: r["cell"]["byzantine_fraction"], best_accuracy
    )
    return [
        f"Baseline (Mean, no attack, no Byzantine clients): {_fmt(base, math.nan)} %.\n",
        _table(
            rows,
            cols,
            stats,
            lambda k: f"{display_name(k[0])} / {display_name(k[1])}",
            lambda c: f"{100 * c:g} % Byz.",
            header0="Attack / GAR",
            bold_best=False,
        ),
    ]


def _fig5_section(ok: list[dict]) -> list[str]:
    """Fig. 5: best and final accuracy of each rule under the time-varying attack."""
    rows, cols, stats = grid(ok, lambda r: (_rule(r), _attack(r)), lambda r: "best", best_accuracy)
    _, _, fin = grid(ok, lambda r: (_rule(r), _attack(r)), lambda r: "best", _summary_value("final_accuracy"))
    lines = ["| GAR | attack | best accuracy | final accuracy |", "|---|---|---|---|"]
    for k in rows:
        lines.append(
            f"| {display_name(k[0])} | {display_name(k[1])} | {_fmt(*stats[(k, 'best')])} "
            f"| {_fmt(*fin[(k, 'best')])} |"
        )
    return ["\n".join(lines)]


def _fig6_section(ok: list[dict]) -> list[str]:
    """Fig. 6: best accuracy of (attack, rule) × IID fraction s of the non-IID split."""
    rows, cols, stats = grid(ok, lambda r: (_attack(r), _rule(r)), lambda r: r["cell"]["s"], best_accuracy)
    return [
        _table(
            rows,
            cols,
            stats,
            lambda k: f"{display_name(k[0])} / {display_name(k[1])}",
            lambda c: f"s = {c:g}",
            header0="Attack / GAR",
            bold_best=False,
        )
    ]


#: preset -> its table(s), from the records that ran
_SECTIONS: dict[str, Callable[[list[dict]], list[str]]] = {
    "table1": _table1_section,
    "table2": _table2_section,
    "table3": _table3_section,
    "fig2": _fig2_section,
    "fig4": _fig4_section,
    "fig5": _fig5_section,
    "fig6": _fig6_section,
}


def _errors_section(records: list[dict]) -> list[str]:
    """The cells that could not run, each (rule, attack, fraction, error) once."""
    errors = [r for r in records if r.get("error")]
    if not errors:
        return []
    parts = ["", "Cells that could not run:", ""]
    seen = set()
    for r in errors:
        c = r["cell"]
        key = (c["rule"], c["attack"], c["byzantine_fraction"], r["error"])
        if key not in seen:
            seen.add(key)
            parts.append(
                f"- {display_name(c['rule'])} / {display_name(c['attack'])} at "
                f"{100 * c['byzantine_fraction']:g} % Byzantine: {r['error']}"
            )
    return parts


def _fmt(mean: float, std: float, scale: float = 100.0, digits: int = 2, bold: bool = False) -> str:
    if not math.isfinite(mean):
        return "n/a"
    s = f"{scale * mean:.{digits}f}"
    if math.isfinite(std):
        s += f" ± {scale * std:.{digits}f}"
    return f"**{s}**" if bold else s


def _table(
    rows,
    cols,
    stats,
    row_label,
    col_label=lambda c: str(c),
    header0="",
    bold_best=True,
    scale=100.0,
    digits=2,
    contender=lambda r: r != NO_DEFENSE,
) -> str:
    """A markdown table; with ``bold_best`` the best value of each column among the rows for
    which ``contender(row)`` holds (by default every defense: Mean is no defense) is bold."""
    lines = [
        "| " + header0 + " | " + " | ".join(col_label(c) for c in cols) + " |",
        "|" + "---|" * (len(cols) + 1),
    ]
    best = {}
    if bold_best:
        for c in cols:
            vals = [stats.get((r, c), (float("nan"),))[0] for r in rows if contender(r)]
            finite = [v for v in vals if math.isfinite(v)]
            best[c] = max(finite) if finite else None
    for r in rows:
        out = []
        for c in cols:
            m, s = stats.get((r, c), (float("nan"), float("nan")))
            bold = bold_best and contender(r) and best.get(c) is not None and m == best[c]
            out.append(_fmt(m, s, scale, digits, bold=bold))
        lines.append(f"| {row_label(r)} | " + " | ".join(out) + " |")
    return "\n".join(lines)


def _f_of(record: dict) -> tuple[int, int]:
    """``(f, n)`` actually used by a cell: the run's summary, else ``f = round(fraction · n)``."""
    s, c = record.get("summary", {}), record["cell"]
    n = int(s.get("n_clients") or c["n_clients"])
    f = s.get("f")
    return (int(round(c["byzantine_fraction"] * n)) if f is None else int(f)), n


def _byzantine_text(records: list[dict]) -> str:
    """``"20 % Byzantine (f = 10 of n = 50)"``: the fraction actually used, f / n."""
    used = sorted(
        {_f_of(r) for r in records if r["cell"].get("variant") != "baseline"} or {_f_of(r) for r in records}
    )
    if not used:
        return "Byzantine fraction unknown"
    parts = [f"{100 * f / n:.3g} %" for f, n in used]
    if len(used) == 1:
        f, n = used[0]
        return f"{parts[0]} Byzantine (f = {f} of n = {n})"
    return "Byzantine " + ", ".join(
        f"{p} (f = {f} of n = {n})" for p, (f, n) in zip(parts, used, strict=True)
    )


def _eval_text(c: dict) -> str:
    every = c.get("eval_every")
    return "once an epoch" if every is None else f"every {every} round(s)"


def _context_line(records: list[dict]) -> str:
    c = records[0]["cell"]
    seeds = sorted({r["cell"]["seed"] for r in records})
    data = f", content {c['data']}" if c.get("data") else ""
    return (
        f"Dataset `{c['dataset']}`{data}; model `{c['model']}`, n = {c['n_clients']} clients, "
        f"{c['epochs']} epochs (batch {c['batch_size']}, lr {c['lr']}, momentum {c['momentum']}, "
        f"weight decay {c['weight_decay']}); test accuracy evaluated {_eval_text(c)} and after the "
        f"last round; seeds {seeds}."
    )


def _title(preset: str, records: list[dict]) -> str:
    return PRESETS[preset][1].format(byz=_byzantine_text(records) if records else "")


def _attack_label(attack: str) -> str:
    """An attack's name in a kept-rate table: No Attack is marked (IDLE_NOTE)."""
    return f"{display_name(attack)} {IDLE_MARK}" if attack == "none" else display_name(attack)


def _kept_table(h, m, label) -> str:
    rows, cols, hs = h
    ms = m[2]
    lines = [
        "| GAR | " + " | ".join(_attack_label(c) for c in cols) + " |",
        "|" + "---|" * (len(cols) + 1),
    ]
    for r in rows:
        vals = []
        for c in cols:
            a, b = hs.get((r, c), (math.nan,))[0], ms.get((r, c), (math.nan,))[0]
            fa = f"{a:.2f}" if math.isfinite(a) else "–"
            fb = f"{b:.2f}" if math.isfinite(b) else "–"
            vals.append(f"{fa} / {fb}")
        lines.append(f"| {label(r)} | " + " | ".join(vals) + " |")
    return "\n".join(lines)


def _fig2_table(records) -> str:
    lines = [
        "| run | rounds | honest + | honest 0 | honest − | LIE + | LIE 0 | LIE − |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in records:
        h = np.array(r["history"].get("honest_signs", []), dtype=float)
        lie = np.array(r["history"].get("lie_signs", []), dtype=float)
        if h.size == 0:
            continue
        hm, lm = np.nanmean(h, axis=0), np.nanmean(lie, axis=0)
        c = r["cell"]
        lines.append(
            f"| {display_name(c['rule'])} / {display_name(c['attack'])} (seed {c['seed']}) | {h.shape[0]} | "
            + " | ".join(f"{v:.3f}" for v in (*hm, *lm))
            + " |"
        )
    return "Average over rounds of the fraction of positive / zero / negative coordinates.\n\n" + "\n".join(
        lines
    )
