"""The figures of ``robustagg experiment`` (``fig2``, ``fig4``, ``fig5``, ``fig6``).

Drawn with matplotlib (the ``plot`` extra) on the Agg backend; without matplotlib the plot is
skipped and :func:`plot` returns a note saying so.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from .results import best_accuracy, display_name, grid, mean_std

__all__ = ["FIGURE_PRESETS", "plot"]

#: the presets that draw a figure
FIGURE_PRESETS = ("fig2", "fig4", "fig5", "fig6")


def plot(preset: str, records: list[dict], path: str) -> str | None:
    """Draw the figure of a figure preset to ``path``; returns a note when it cannot.

    Parameters
    ----------
    preset : str
        A preset; those without a figure (the tables) draw nothing and return ``None``.
    records : list of dict
        The records of the preset's cells (those with an ``error`` are left out).
    path : str
        Where the PNG goes.

    Returns
    -------
    str or None
        ``None`` when drawn (or nothing to draw), else why not (no matplotlib, no finished cell).
    """
    if preset not in FIGURE_PRESETS:
        return None
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return "matplotlib is not installed (pip install 'robustagg[plot]'): plot skipped"
    ok = [r for r in records if not r.get("error")]
    if not ok:
        return "no finished cell to plot"
    fig = _FIGURES[preset](plt, ok)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return None


def _fig2(plt: Any, ok: list[dict]) -> Any:
    """Fig. 2: the sign fractions of the honest gradients and of the LIE vector over rounds (first run)."""
    fig, ax = plt.subplots(figsize=(6, 3.6))
    r = ok[0]
    h = np.array(r["history"]["honest_signs"], dtype=float)
    lie = np.array(r["history"]["lie_signs"], dtype=float)
    x = np.arange(1, h.shape[0] + 1)
    for j, (name, style) in enumerate((("positive", "-"), ("zero", ":"), ("negative", "--"))):
        ax.plot(x, h[:, j], style, color="C0", label=f"honest {name}")
        ax.plot(x, lie[:, j], style, color="C3", label=f"LIE {name}")
    ax.set_xlabel("round")
    ax.set_ylabel("fraction of coordinates")
    ax.set_title(f"Sign statistics ({r['cell']['dataset']}, {r['cell']['model']})")
    ax.legend(fontsize=7, ncol=3)
    return fig


def _fig4(plt: Any, ok: list[dict]) -> Any:
    """Fig. 4: each rule's accuracy drop from the baseline against the Byzantine fraction, per attack."""
    base = mean_std([best_accuracy(r) for r in ok if r["cell"]["variant"] == "baseline"])[0]
    rest = [r for r in ok if r["cell"]["variant"] != "baseline"]
    attacks = list(dict.fromkeys(r["cell"]["attack"] for r in rest))
    fig, axes = plt.subplots(1, len(attacks), figsize=(3.2 * len(attacks), 3.2), sharey=True, squeeze=False)
    for ax, att in zip(axes[0], attacks, strict=True):
        sub = [r for r in rest if r["cell"]["attack"] == att]
        rows, cols, stats = grid(
            sub, lambda r: r["cell"]["rule"], lambda r: r["cell"]["byzantine_fraction"], best_accuracy
        )
        for rule in rows:
            xs = [c for c in cols if (rule, c) in stats]
            ax.plot(
                [100 * c for c in xs],
                [100 * (base - stats[(rule, c)][0]) for c in xs],
                "o-",
                label=display_name(rule),
            )
        ax.set_title(display_name(att))
        ax.set_xlabel("Byzantine clients (%)")
    axes[0][0].set_ylabel("accuracy drop (points)")
    axes[0][-1].legend(fontsize=7)
    return fig


def _fig5(plt: Any, ok: list[dict]) -> Any:
    """Fig. 5: the accuracy curves under the time-varying attack and a zoom on the last 75 % of them."""
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.6))
    several = len({x["cell"]["seed"] for x in ok}) > 1
    for r in ok:
        acc = 100 * np.array(r["history"]["accuracy"], dtype=float)
        rounds = np.array(r["history"]["round"], dtype=float)
        label = (
            "baseline (Mean, no attack)"
            if r["cell"]["variant"] == "baseline"
            else display_name(r["cell"]["rule"])
        )
        label = f"{label} s{r['cell']['seed']}" if several else label
        style = "k--" if r["cell"]["variant"] == "baseline" else "-"
        for ax in axes:
            ax.plot(rounds, acc, style, label=label, lw=1.2)
    last = max(float(np.nanmax(np.array(r["history"]["round"], dtype=float))) for r in ok)
    tail = [
        100 * np.array(r["history"]["accuracy"], dtype=float)[np.array(r["history"]["round"]) >= 0.25 * last]
        for r in ok
    ]
    low = min(float(np.nanmin(t)) for t in tail if t.size)
    axes[1].set_xlim(0.25 * last, last)
    axes[1].set_ylim(max(low - 1, 0), 100)
    axes[1].set_title("zoom: last 75 % of the rounds")
    axes[0].set_title("Time-varying attack (a fresh attack or none each epoch)")
    for ax in axes:
        ax.set_xlabel("round")
    axes[0].set_ylabel("test accuracy (%)")
    axes[1].legend(fontsize=7)
    return fig


def _fig6(plt: Any, ok: list[dict]) -> Any:
    """Fig. 6: best accuracy per rule (bars) and the baseline (stars) against s, a panel per attack."""
    rest = [r for r in ok if r["cell"]["variant"] != "baseline"]
    attacks = list(dict.fromkeys(r["cell"]["attack"] for r in rest))
    fig, axes = plt.subplots(1, len(attacks), figsize=(3.2 * len(attacks), 3.2), sharey=True, squeeze=False)
    _, _, base = grid(
        [r for r in ok if r["cell"]["variant"] == "baseline"],
        lambda r: 0,
        lambda r: r["cell"]["s"],
        best_accuracy,
    )
    for ax, att in zip(axes[0], attacks, strict=True):
        sub = [r for r in rest if r["cell"]["attack"] == att]
        rows, cols, stats = grid(sub, lambda r: r["cell"]["rule"], lambda r: r["cell"]["s"], best_accuracy)
        width = 0.8 / max(len(rows), 1)
        for i, rule in enumerate(rows):
            ax.bar(
                [j + i * width for j in range(len(cols))],
                [100 * stats.get((rule, c), (math.nan,))[0] for c in cols],
                width=width,
                label=display_name(rule),
            )
        ax.plot(
            [j + 0.4 - width / 2 for j in range(len(cols))],
            [100 * base.get((0, c), (math.nan,))[0] for c in cols],
            "k*",
            label="baseline",
        )
        ax.set_xticks([j + 0.4 - width / 2 for j in range(len(cols))], [f"s={c:g}" for c in cols])
        ax.set_title(display_name(att))
    values = [100 * best_accuracy(r) for r in ok if math.isfinite(best_accuracy(r))]
    axes[0][0].set_ylim(max(min(values) - 3, 0), 100)
    axes[0][0].set_ylabel("best test accuracy (%)")
    axes[0][-1].legend(fontsize=6, loc="lower right")
    return fig


#: figure preset -> the function that draws it from the finished records
_FIGURES = {"fig2": _fig2, "fig4": _fig4, "fig5": _fig5, "fig6": _fig6}
