"""``robustagg experiment``: the paper's experiments with the built-in trainer.

Presets (the paper's Section VI; by default on a dataset that needs no download)::

    robustagg experiment --preset table1 --out runs/table1            # all cells, one seed
    robustagg experiment --preset table1 --quick --out runs/table1q   # reduced budget
    robustagg experiment --preset fig4 --jobs 2 --seeds 0 1 2
    robustagg experiment --preset table1 --dataset fashion-mnist --jobs 2 --out runs/table1-fmnist

=========  ===============================================================================
preset     cells
=========  ===============================================================================
table1     every Table I attack (incl. none) × Mean, TrMean, Median, GeoMed, Multi-Krum,
           Bulyan, DnC, SignGuard, SignGuard-Sim, SignGuard-Dist (20 % Byzantine, IID)
table2     kept rates of honest/malicious gradients of the SignGuard variants (Table II)
table3     SignGuard-Sim ablation: norm threshold / sign clustering / norm clipping switches
           × Random, reverse-with-scaling, LIE (Table III)
fig2       sign statistics of honest gradients vs the LIE vector over rounds (Fig. 2)
fig4       Byzantine fraction 10–40 % × SOTA attacks × Median, TrMean, Multi-Krum, DnC,
           SignGuard-Sim (Fig. 4)
fig5       time-varying attack (a fresh attack or none each epoch) (Fig. 5)
fig6       non-IID, s = 0.3, 0.5, 0.8 × SOTA attacks × TrMean, Multi-Krum, Bulyan, DnC,
           SignGuard-Sim (Fig. 6)
=========  ===============================================================================

Data (``--dataset``): ``digits`` (the default, scikit-learn's embedded 8×8 digits), ``synthetic``,
``fashion-mnist`` and ``mnist`` (the paper's data, from the standard IDX files, gzipped or not:
``--data-dir DIR``, then ``$ROBUSTAGG_DATA``, Debian's ``/usr/share/datasets/<name>/``
(``apt-get install dataset-fashion-mnist``), Keras' and torchvision's layouts; see
:mod:`robustagg.training.idx`), or ``PATH.npz``. The dataset is loaded and checked **before any
cell runs**: a missing or damaged file ends the command with exit code 2 and one line on stderr
that names the file and what is wrong (for a dataset found nowhere, the places searched and how
to install it).

Every finished cell is stored as one JSON file under ``OUT/cells/`` named by a hash of its full
configuration -- the data entering through a hash of their content (computed once per run), not
through the dataset's name or path -- so an interrupted or repeated run recomputes nothing that
is done (``--force`` recomputes), and a file changed in place is never served results computed
on its old content. A cell that cannot run (a setting the rule refuses, or any error) is listed
in the table and on stderr but never stored: the next run retries it, and the exit code is 1.

The test accuracy is evaluated once an epoch, before the first and after the last round
(``--eval-every N``: every N rounds); "best accuracy" is the best of these evaluations. While
the cells run, a progress bar is drawn on a terminal; otherwise (a log, a pipe, CI) one line per
finished cell gives the elapsed time and an estimate of the time left (``--quiet``: nothing).

The run writes ``OUT/results.csv`` (one row per cell and seed), ``OUT/<preset>.md`` (the table
in the paper's layout) and, for the figure presets, ``OUT/<preset>.png`` (needs matplotlib, the
``plot`` extra; without it the plot is skipped with a note). In the tables the best **defense**
of each attack column is bold (Mean, no defense, never is), and the titles state the Byzantine
fraction actually used, f / n with f = round(fraction · n). Under No Attack the designated
Byzantine clients send honest gradients: the kept-rate tables mark that column (†), and in
``results.csv`` ``malicious_kept_rate`` is empty there while ``byzantine_kept_rate`` gives the
kept rate of the designated Byzantine clients under every attack.
"""

from __future__ import annotations

import argparse
import concurrent.futures as cf
import contextlib
import csv
import hashlib
import json
import math
import multiprocessing
import os
import sys
import threading
import time
from collections import defaultdict
from typing import Any

import numpy as np

from .._registry import DISPLAY_NAMES
from .federated import TIME_VARYING_POOL

__all__ = ["BUDGETS", "PRESETS", "build_cells", "configure_parser", "run", "run_cell"]

#: Table I's attacks, in the paper's column order (the time-varying adversary's pool)
TABLE1_ATTACKS = TIME_VARYING_POOL
#: Table I's rules, in the paper's row order
TABLE1_RULES = (
    "mean",
    "trimmed_mean",
    "median",
    "geometric_median",
    "multi_krum",
    "bulyan",
    "dnc",
    "signguard",
    "signguard_sim",
    "signguard_dist",
)
SOTA_ATTACKS = ("byzmean", "sign_flip", "lie", "min_max", "min_sum")
SIGNGUARDS = ("signguard", "signguard_sim", "signguard_dist")

#: the names the tables print: the registry's display names of the rules and attacks they show
PRETTY = {
    k: DISPLAY_NAMES[k]
    for k in (
        "none",
        "gaussian",
        "noise",
        "label_flip",
        "byzmean",
        "sign_flip",
        "lie",
        "min_max",
        "min_sum",
        "reverse_scaled",
        "time_varying",
        "mean",
        "trimmed_mean",
        "median",
        "geometric_median",
        "krum",
        "multi_krum",
        "bulyan",
        "dnc",
        "signguard",
        "signguard_sim",
        "signguard_dist",
    )
}

#: training settings shared by every preset (see docs/results.md for why)
TRAINING_DEFAULTS: dict[str, Any] = {
    "n_clients": 50,
    "byzantine_fraction": 0.2,
    "lr": 0.1,
    "batch_size": 16,
    "hidden": 64,
    "momentum": 0.9,
    "weight_decay": 5e-4,
    "eval_every": None,  # once an epoch (and after the last round)
}
#: epochs per budget (the paper trains 60 epochs); ``quick`` on the image datasets is the budget
#: that already shows the paper's phenomena on Fashion-MNIST (the attacks' damage to the
#: classical rules, SignGuard at the no-attack accuracy) in minutes
BUDGETS: dict[str, dict[str, Any]] = {"full": {"epochs": 60}, "quick": {"epochs": 30}}
QUICK_EPOCHS_IMAGES = 3
IMAGE_DATASETS = ("fashion-mnist", "mnist")


def _budget(quick: bool, dataset: str) -> dict[str, Any]:
    """The epochs of a run: 60 (full), 30 (quick), 3 (quick on Fashion-MNIST/MNIST)."""
    budget = dict(BUDGETS["quick" if quick else "full"])
    if quick and dataset in IMAGE_DATASETS:
        budget["epochs"] = QUICK_EPOCHS_IMAGES
    return budget


# Table III: (label, thresholding, clustering, clipping) -- the paper's rows
ABLATIONS = (
    ("T", True, False, False),
    ("C", False, True, False),
    ("N", False, False, True),
    ("T+C", True, True, False),
    ("C+N", False, True, True),
    ("T+C+N", True, True, True),
)

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


# ----------------------------------------------------------------------------------------------
# presets


def _ablation_kwargs(threshold: bool, cluster: bool, clip: bool) -> dict[str, Any]:
    """The SignGuard rules' switches for one Table III row."""
    return {"norm_filter": threshold, "sign_clustering": cluster, "clipping": clip}


def _cells_table1(a) -> list[dict]:
    return [dict(rule=r, attack=att) for r in a.rules or TABLE1_RULES for att in a.attacks or TABLE1_ATTACKS]


def _cells_table2(a) -> list[dict]:
    attacks = a.attacks or SOTA_ATTACKS
    return [dict(rule=r, attack=att) for r in a.rules or SIGNGUARDS for att in attacks]


def _cells_table3(a) -> list[dict]:
    cells = []
    rule = (a.rules or ("signguard_sim",))[0]
    for label, thr, clu, clip in ABLATIONS:
        kw = _ablation_kwargs(thr, clu, clip)
        for att in a.attacks or ("gaussian", "reverse_scaled", "lie"):
            akw = {"r": 3.0 if (thr or clip) else 100.0} if att == "reverse_scaled" else {}
            cells.append(dict(rule=rule, rule_kwargs=kw, attack=att, attack_kwargs=akw, variant=label))
    return cells


def _cells_fig2(a) -> list[dict]:
    return [
        dict(rule=r, attack=att, record_signs=True)
        for r in a.rules or ("mean",)
        for att in a.attacks or ("none",)
    ]


def _cells_fig4(a) -> list[dict]:
    rules = a.rules or ("median", "trimmed_mean", "multi_krum", "dnc", "signguard_sim")
    attacks = a.attacks or (("byzmean", "lie", "min_max") if a.quick else SOTA_ATTACKS)
    fractions = a.fractions or (0.1, 0.2, 0.3, 0.4)
    cells = [dict(rule="mean", attack="none", byzantine_fraction=0.0, variant="baseline")]
    for frac in fractions:
        cells += [dict(rule=r, attack=att, byzantine_fraction=frac) for r in rules for att in attacks]
    return cells


def _cells_fig5(a) -> list[dict]:
    rules = a.rules or ("mean", "trimmed_mean", "median", "multi_krum", "bulyan", "dnc", "signguard")
    cells = [dict(rule="mean", attack="none", variant="baseline")]
    cells += [dict(rule=r, attack="time_varying") for r in rules]
    return cells


def _cells_fig6(a) -> list[dict]:
    rules = a.rules or ("trimmed_mean", "multi_krum", "bulyan", "dnc", "signguard_sim")
    attacks = a.attacks or (
        ("byzmean", "sign_flip", "lie") if a.quick else ("byzmean", "sign_flip", "lie", "min_max")
    )
    cells = []
    for s in a.s_values or (0.3, 0.5, 0.8):
        cells.append(dict(rule="mean", attack="none", partition="noniid", s=s, variant="baseline"))
        cells += [dict(rule=r, attack=att, partition="noniid", s=s) for r in rules for att in attacks]
    return cells


#: preset -> (cells, title); ``{byz}`` in a title is the Byzantine fraction actually used
PRESETS = {
    "table1": (_cells_table1, "Table I: best test accuracy (%), rules × attacks, {byz}, IID"),
    "table2": (
        _cells_table2,
        "Table II: average kept rate of honest (H) and malicious (M) gradients, {byz}",
    ),
    "table3": (
        _cells_table3,
        "Table III: SignGuard-Sim components (T: norm threshold, C: sign clustering, N: norm clipping), {byz}",
    ),
    "fig2": (_cells_fig2, "Fig. 2: sign statistics of honest gradients and of the LIE vector over rounds"),
    "fig4": (_cells_fig4, "Fig. 4: accuracy drop against the Byzantine fraction"),
    "fig5": (_cells_fig5, "Fig. 5: test accuracy under the time-varying attack, {byz}"),
    "fig6": (_cells_fig6, "Fig. 6: best accuracy under non-IID data (IID fraction s), {byz}"),
}
#: the rule that is no defense: never bold as "best"
NO_DEFENSE = "mean"


def build_cells(args: argparse.Namespace, data_fingerprint: str | None = None) -> list[dict]:
    """Every cell (one training run) of the preset, one per seed, with its full configuration.

    ``data_fingerprint`` (:attr:`robustagg.training.data.Dataset.fingerprint` of the loaded
    data) keys the cells by the data's content instead of the dataset's name or path.
    """
    make, _ = PRESETS[args.preset]
    budget = _budget(args.quick, args.dataset)
    base = dict(TRAINING_DEFAULTS)
    for key in ("n_clients", "lr", "batch_size", "hidden", "epochs", "byzantine_fraction", "eval_every"):
        v = getattr(args, key, None)
        if v is not None:
            (budget if key == "epochs" else base)[key] = v
    cells = []
    for spec in make(args):
        for seed in args.seeds:
            cell = {
                "preset": args.preset,
                "dataset": args.dataset,
                "data_dir": getattr(args, "data_dir", None),
                "data": data_fingerprint,
                "model": args.model,
                **base,
                **budget,
                "rule_kwargs": {},
                "attack_kwargs": {},
                "partition": "iid",
                "s": 1.0,
                "variant": "",
                "record_signs": False,
                **spec,
                "seed": int(seed),
            }
            cell["cell_id"] = cell_id(cell)
            cells.append(cell)
    return cells


_NOT_IN_ID = ("preset", "cell_id", "variant", "record_signs")


def cell_id(cell: dict) -> str:
    """A stable hash of everything that determines a cell's result (not the preset's name).

    The data enter through their content's fingerprint (``cell["data"]``), not through the
    dataset's name, path or search directory: a file changed in place gets new cells, a file
    moved keeps its finished ones.
    """
    skip = _NOT_IN_ID + (("dataset", "data_dir") if cell.get("data") else ())
    key = {k: v for k, v in cell.items() if k not in skip}
    blob = json.dumps(key, sort_keys=True, default=str)
    return hashlib.sha1(blob.encode()).hexdigest()[:16]


# ----------------------------------------------------------------------------------------------
# running one cell

#: loaded datasets by fingerprint (this process's; a worker process loads its own once)
_DATA: dict[str, Any] = {}
_DATA_KEEP = 2
_DATA_LOCK = threading.Lock()


def load_data(dataset: str, data_dir: str | None = None):
    """Load and check the dataset of a run (``--dataset``, ``--data-dir``), once per process.

    Raises the loader's clear errors (``FileNotFoundError``, ``DatasetError``): the CLI turns
    them into exit code 2 before any cell runs.
    """
    from .data import load_dataset

    data = load_dataset(dataset, seed=0, data_dir=data_dir)
    _remember(data)
    return data


def _remember(data) -> None:
    with _DATA_LOCK:
        _DATA.pop(data.fingerprint, None)
        _DATA[data.fingerprint] = data  # the latest last
        while len(_DATA) > _DATA_KEEP:  # Fashion-MNIST is ~220 MB: keep the latest only
            del _DATA[next(iter(_DATA))]


class DataChangedError(RuntimeError):
    """The dataset's content is not the one the run's cells were keyed with."""


def _dataset_for(cell: dict):
    fp = cell.get("data")
    with _DATA_LOCK:
        data = _DATA.get(fp)
    if data is not None:
        return data
    data = load_data(cell["dataset"], cell.get("data_dir"))
    if fp is not None and data.fingerprint != fp:
        raise DataChangedError(
            f"dataset {cell['dataset']!r} changed while the run was going on (content "
            f"{data.fingerprint}, the run started with {fp}); rerun the command"
        )
    return data


def run_cell(cell: dict) -> dict:
    """Train one cell; return a JSON-serialisable record.

    A cell that cannot run -- a setting the rule refuses (e.g. Bulyan's n >= 4f + 3) or any
    other error -- returns a record with ``error`` set; such a record is reported but never
    stored as finished, so the next run retries the cell.
    """
    from .federated import FederatedConfig, run_federated

    keys = FederatedConfig.__dataclass_fields__
    config = FederatedConfig(**{k: v for k, v in cell.items() if k in keys})
    config.record_signs = bool(cell.get("record_signs"))  # only fig2 reports them (they cost)
    record: dict[str, Any] = {"cell": cell}
    t0 = time.perf_counter()
    try:
        result = run_federated(_dataset_for(cell), config)
    except ValueError as exc:  # a setting the rule refuses
        record.update(error=str(exc), summary={"seconds": time.perf_counter() - t0})
        return record
    except Exception as exc:  # noqa: BLE001 - one cell's failure must not end the run
        record.update(error=f"{type(exc).__name__}: {exc}", summary={"seconds": time.perf_counter() - t0})
        return record
    d = result.to_dict(history=True)
    record.update(
        error="", summary=d["summary"], history=_slim_history(d["history"]), attack_names=d["attack_names"]
    )
    return record


def _slim_history(h: dict) -> dict:
    """Keep what the tables and plots need (accuracy curve, kept rates, sign statistics)."""
    keep = (
        "round",
        "accuracy",
        "test_loss",
        "honest_kept",
        "malicious_kept",
        "attack",
        "honest_signs",
        "malicious_signs",
        "lie_signs",
    )
    return {k: h[k] for k in keep if k in h}


def _worker_init() -> None:
    """A worker process (spawned for ``--jobs``) runs one thread of Numba and BLAS for good."""
    os.environ["NUMBA_NUM_THREADS"] = "1"
    try:
        import numba

        numba.set_num_threads(1)
    except Exception:  # pragma: no cover - numba without threading layer
        pass
    try:
        from threadpoolctl import threadpool_limits

        threadpool_limits(1)
    except Exception:  # pragma: no cover - threadpoolctl is a scikit-learn dependency
        pass


@contextlib.contextmanager
def _one_thread():
    """One thread for Numba and BLAS while cells run in this process, restored afterwards.

    Cells are small (threads cost more than they give) and, with ``--jobs``, run in parallel
    processes; the caller's process keeps its own settings once the run is over. BLAS goes
    through the library's one BLAS section (:func:`robustagg._threads.blas_single_thread`, which
    coordinates with rules running in other threads); Numba's count is per thread.
    """
    from .._threads import blas_single_thread

    with contextlib.ExitStack() as stack:
        try:
            import numba

            old = numba.get_num_threads()
            numba.set_num_threads(1)
            stack.callback(numba.set_num_threads, old)
        except Exception:  # pragma: no cover - numba without threading layer
            pass
        stack.enter_context(blas_single_thread())
        yield


# ----------------------------------------------------------------------------------------------
# storage


def _cell_path(out: str, cid: str) -> str:
    return os.path.join(out, "cells", f"{cid}.json")


def _load_record(out: str, cid: str, need_signs: bool = False) -> dict | None:
    """A finished record of the cell, or ``None`` (none stored, unreadable, an error, or one
    without the sign statistics that ``need_signs`` asks for)."""
    path = _cell_path(out, cid)
    try:
        with open(path) as fh:
            rec = json.load(fh)
    except (OSError, ValueError):
        return None
    if not isinstance(rec, dict) or rec.get("error") or "summary" not in rec:
        return None  # an error is never a finished result (older versions stored some)
    if need_signs and "honest_signs" not in rec.get("history", {}):
        return None
    return rec


def _save_record(out: str, record: dict) -> None:
    if record.get("error"):
        raise ValueError("a record with an error is not a finished cell")
    path = _cell_path(out, record["cell"]["cell_id"])
    tmp = path + ".tmp"
    with open(tmp, "w") as fh:
        json.dump(record, fh, separators=(",", ":"))
    os.replace(tmp, path)  # atomic: an interrupted run never leaves half a cell


def _num(x: Any) -> float:
    return float("nan") if x is None else float(x)


def _csv_row(record: dict) -> dict:
    from .partition import partition_label

    c, s = record["cell"], record.get("summary", {})
    pct = lambda v: "" if v is None or not math.isfinite(_num(v)) else f"{100 * _num(v):.2f}"  # noqa: E731
    rate = lambda v: "" if v is None or not math.isfinite(_num(v)) else f"{_num(v):.4f}"  # noqa: E731
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
        "best_accuracy": pct(s.get("best_accuracy")),
        "final_accuracy": pct(s.get("final_accuracy")),
        "honest_kept_rate": rate(s.get("honest_kept_rate")),
        "malicious_kept_rate": "" if c["attack"] == "none" else rate(s.get("malicious_kept_rate")),
        "byzantine_kept_rate": rate(s.get("malicious_kept_rate")),
        "diverged": s.get("diverged", ""),
        "epochs": c["epochs"],
        "rounds": s.get("rounds", ""),
        "seconds": f"{_num(s.get('seconds')):.2f}",
        "error": record.get("error", ""),
        "cell_id": c["cell_id"],
    }


def write_csv(path: str, records: list[dict]) -> None:
    with open(path, "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=CSV_COLUMNS)
        w.writeheader()
        for r in records:
            w.writerow(_csv_row(r))


# ----------------------------------------------------------------------------------------------
# Markdown tables in the paper's layout


def _p(name: str) -> str:
    return PRETTY.get(name, name)


def _agg(values: list[float]) -> tuple[float, float]:
    v = np.array([x for x in values if x is not None and math.isfinite(x)], dtype=float)
    if v.size == 0:
        return float("nan"), float("nan")
    return float(v.mean()), float(v.std(ddof=1)) if v.size > 1 else float("nan")


def _fmt(mean: float, std: float, scale: float = 100.0, digits: int = 2, bold: bool = False) -> str:
    if not math.isfinite(mean):
        return "n/a"
    s = f"{scale * mean:.{digits}f}"
    if math.isfinite(std):
        s += f" ± {scale * std:.{digits}f}"
    return f"**{s}**" if bold else s


def _grid(records, row_key, col_key, value, rows=None, cols=None):
    cells: dict[tuple, list[float]] = defaultdict(list)
    row_order, col_order = [], []
    for r in records:
        rk, ck = row_key(r), col_key(r)
        if rk not in row_order:
            row_order.append(rk)
        if ck not in col_order:
            col_order.append(ck)
        cells[(rk, ck)].append(value(r))
    return rows or row_order, cols or col_order, {k: _agg(v) for k, v in cells.items()}


def _acc(r: dict) -> float:
    return _num(r.get("summary", {}).get("best_accuracy"))


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


def markdown(preset: str, records: list[dict]) -> str:
    """The preset's table(s) in the paper's layout."""
    ok = [r for r in records if not r.get("error")]
    parts = [f"# {_title(preset, records)}", "", _context_line(records) if records else "", ""]
    if preset not in ("fig2", "table2"):
        parts += [
            "Accuracy: best test accuracy over the evaluations in % (mean ± std over seeds when there "
            "are several)."
            + (
                f" Bold: the best defense in each column ({_p(NO_DEFENSE)} is no defense)."
                if preset in ("table1", "table3")
                else ""
            ),
            "",
        ]
    if preset == "table1":
        rows, cols, stats = _grid(ok, lambda r: r["cell"]["rule"], lambda r: r["cell"]["attack"], _acc)
        parts.append(_table(rows, cols, stats, _p, _p, header0="GAR"))
        parts += ["", "Final test accuracy (%, after the last round):", ""]
        rows, cols, stats = _grid(
            ok,
            lambda r: r["cell"]["rule"],
            lambda r: r["cell"]["attack"],
            lambda r: _num(r["summary"].get("final_accuracy")),
        )
        parts.append(_table(rows, cols, stats, _p, _p, header0="GAR"))
        parts += ["", "Average kept rate of honest / malicious gradients (H / M):", ""]
        h = _grid(
            ok,
            lambda r: r["cell"]["rule"],
            lambda r: r["cell"]["attack"],
            lambda r: _num(r["summary"].get("honest_kept_rate")),
        )
        m = _grid(
            ok,
            lambda r: r["cell"]["rule"],
            lambda r: r["cell"]["attack"],
            lambda r: _num(r["summary"].get("malicious_kept_rate")),
        )
        parts.append(_kept_table(h, m, _p))
        if "none" in h[1]:
            parts += ["", IDLE_NOTE]
    elif preset == "table2":
        h = _grid(
            ok,
            lambda r: r["cell"]["attack"],
            lambda r: r["cell"]["rule"],
            lambda r: _num(r["summary"].get("honest_kept_rate")),
        )
        m = _grid(
            ok,
            lambda r: r["cell"]["attack"],
            lambda r: r["cell"]["rule"],
            lambda r: _num(r["summary"].get("malicious_kept_rate")),
        )
        rows, cols = h[0], h[1]
        lines = [
            "| Attack | " + " | ".join(f"{_p(c)} H | {_p(c)} M" for c in cols) + " |",
            "|" + "---|" * (2 * len(cols) + 1),
        ]
        for a in rows:
            vals = []
            for c in cols:
                vals.append(_fmt(*h[2].get((a, c), (math.nan, math.nan)), scale=1.0, digits=4))
                vals.append(_fmt(*m[2].get((a, c), (math.nan, math.nan)), scale=1.0, digits=4))
            lines.append(f"| {_attack_label(a)} | " + " | ".join(vals) + " |")
        parts.append("\n".join(lines))
        if "none" in rows:
            parts += ["", IDLE_NOTE]
        parts += ["", "Best test accuracy (%; bold: the best defense in each column):", ""]
        rows, cols, stats = _grid(ok, lambda r: r["cell"]["rule"], lambda r: r["cell"]["attack"], _acc)
        parts.append(_table(rows, cols, stats, _p, _p, header0="GAR"))
    elif preset == "table3":
        rows, cols, stats = _grid(ok, lambda r: r["cell"]["variant"], lambda r: r["cell"]["attack"], _acc)
        parts.append(_table(rows, cols, stats, lambda v: v, _p, header0="Components"))
        parts += [
            "",
            "T: norm thresholding, C: sign clustering, N: norm clipping. Reverse: sign flip scaled by "
            "r = 3 (= R) when T or N is on, r = 100 otherwise.",
        ]
    elif preset == "fig2":
        parts.append(_fig2_table(ok))
    elif preset == "fig4":
        base = _agg([_acc(r) for r in ok if r["cell"]["variant"] == "baseline"])[0]
        rest = [r for r in ok if r["cell"]["variant"] != "baseline"]
        rows, cols, stats = _grid(
            rest,
            lambda r: (r["cell"]["attack"], r["cell"]["rule"]),
            lambda r: r["cell"]["byzantine_fraction"],
            _acc,
        )
        parts.append(f"Baseline (Mean, no attack, no Byzantine clients): {_fmt(base, math.nan)} %.\n")
        parts.append(
            _table(
                rows,
                cols,
                stats,
                lambda k: f"{_p(k[0])} / {_p(k[1])}",
                lambda c: f"{100 * c:g} % Byz.",
                header0="Attack / GAR",
                bold_best=False,
            )
        )
    elif preset == "fig5":
        rows, cols, stats = _grid(
            ok, lambda r: (r["cell"]["rule"], r["cell"]["attack"]), lambda r: "best", _acc
        )
        _, _, fin = _grid(
            ok,
            lambda r: (r["cell"]["rule"], r["cell"]["attack"]),
            lambda r: "best",
            lambda r: _num(r["summary"].get("final_accuracy")),
        )
        lines = ["| GAR | attack | best accuracy | final accuracy |", "|---|---|---|---|"]
        for k in rows:
            lines.append(
                f"| {_p(k[0])} | {_p(k[1])} | {_fmt(*stats[(k, 'best')])} | {_fmt(*fin[(k, 'best')])} |"
            )
        parts.append("\n".join(lines))
    elif preset == "fig6":
        rows, cols, stats = _grid(
            ok, lambda r: (r["cell"]["attack"], r["cell"]["rule"]), lambda r: r["cell"]["s"], _acc
        )
        parts.append(
            _table(
                rows,
                cols,
                stats,
                lambda k: f"{_p(k[0])} / {_p(k[1])}",
                lambda c: f"s = {c:g}",
                header0="Attack / GAR",
                bold_best=False,
            )
        )
    errors = [r for r in records if r.get("error")]
    if errors:
        parts += ["", "Cells that could not run:", ""]
        seen = set()
        for r in errors:
            c = r["cell"]
            key = (c["rule"], c["attack"], c["byzantine_fraction"], r["error"])
            if key not in seen:
                seen.add(key)
                parts.append(
                    f"- {_p(c['rule'])} / {_p(c['attack'])} at {100 * c['byzantine_fraction']:g} % Byzantine: {r['error']}"
                )
    return "\n".join(parts).rstrip() + "\n"


#: marks the No Attack column/row of the kept-rate tables (see IDLE_NOTE)
IDLE_MARK = "†"
IDLE_NOTE = (
    f"{IDLE_MARK} No Attack: the f designated Byzantine clients send honest gradients; M there is "
    "their kept rate, not that of malicious gradients."
)


def _attack_label(attack: str) -> str:
    """An attack's name in a kept-rate table: No Attack is marked (IDLE_NOTE)."""
    return f"{_p(attack)} {IDLE_MARK}" if attack == "none" else _p(attack)


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
            f"| {_p(c['rule'])} / {_p(c['attack'])} (seed {c['seed']}) | {h.shape[0]} | "
            + " | ".join(f"{v:.3f}" for v in (*hm, *lm))
            + " |"
        )
    return "Average over rounds of the fraction of positive / zero / negative coordinates.\n\n" + "\n".join(
        lines
    )


# ----------------------------------------------------------------------------------------------
# plots


def plot(preset: str, records: list[dict], path: str) -> str | None:
    """Draw the figure of a figure preset to ``path``; returns a note when it cannot."""
    if preset not in ("fig2", "fig4", "fig5", "fig6"):
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
    if preset == "fig2":
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
    elif preset == "fig4":
        base = _agg([_acc(r) for r in ok if r["cell"]["variant"] == "baseline"])[0]
        rest = [r for r in ok if r["cell"]["variant"] != "baseline"]
        attacks = list(dict.fromkeys(r["cell"]["attack"] for r in rest))
        fig, axes = plt.subplots(
            1, len(attacks), figsize=(3.2 * len(attacks), 3.2), sharey=True, squeeze=False
        )
        for ax, att in zip(axes[0], attacks, strict=True):
            sub = [r for r in rest if r["cell"]["attack"] == att]
            rows, cols, stats = _grid(
                sub, lambda r: r["cell"]["rule"], lambda r: r["cell"]["byzantine_fraction"], _acc
            )
            for rule in rows:
                xs = [c for c in cols if (rule, c) in stats]
                ax.plot(
                    [100 * c for c in xs],
                    [100 * (base - stats[(rule, c)][0]) for c in xs],
                    "o-",
                    label=_p(rule),
                )
            ax.set_title(_p(att))
            ax.set_xlabel("Byzantine clients (%)")
        axes[0][0].set_ylabel("accuracy drop (points)")
        axes[0][-1].legend(fontsize=7)
    elif preset == "fig5":
        fig, axes = plt.subplots(1, 2, figsize=(10, 3.6))
        several = len({x["cell"]["seed"] for x in ok}) > 1
        for r in ok:
            acc = 100 * np.array(r["history"]["accuracy"], dtype=float)
            rounds = np.array(r["history"]["round"], dtype=float)
            label = (
                "baseline (Mean, no attack)" if r["cell"]["variant"] == "baseline" else _p(r["cell"]["rule"])
            )
            label = f"{label} s{r['cell']['seed']}" if several else label
            style = "k--" if r["cell"]["variant"] == "baseline" else "-"
            for ax in axes:
                ax.plot(rounds, acc, style, label=label, lw=1.2)
        last = max(float(np.nanmax(np.array(r["history"]["round"], dtype=float))) for r in ok)
        tail = [
            100
            * np.array(r["history"]["accuracy"], dtype=float)[np.array(r["history"]["round"]) >= 0.25 * last]
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
    else:  # fig6
        rest = [r for r in ok if r["cell"]["variant"] != "baseline"]
        attacks = list(dict.fromkeys(r["cell"]["attack"] for r in rest))
        fig, axes = plt.subplots(
            1, len(attacks), figsize=(3.2 * len(attacks), 3.2), sharey=True, squeeze=False
        )
        _, _, base = _grid(
            [r for r in ok if r["cell"]["variant"] == "baseline"], lambda r: 0, lambda r: r["cell"]["s"], _acc
        )
        for ax, att in zip(axes[0], attacks, strict=True):
            sub = [r for r in rest if r["cell"]["attack"] == att]
            rows, cols, stats = _grid(sub, lambda r: r["cell"]["rule"], lambda r: r["cell"]["s"], _acc)
            width = 0.8 / max(len(rows), 1)
            for i, rule in enumerate(rows):
                ax.bar(
                    [j + i * width for j in range(len(cols))],
                    [100 * stats.get((rule, c), (math.nan,))[0] for c in cols],
                    width=width,
                    label=_p(rule),
                )
            ax.plot(
                [j + 0.4 - width / 2 for j in range(len(cols))],
                [100 * base.get((0, c), (math.nan,))[0] for c in cols],
                "k*",
                label="baseline",
            )
            ax.set_xticks([j + 0.4 - width / 2 for j in range(len(cols))], [f"s={c:g}" for c in cols])
            ax.set_title(_p(att))
        values = [100 * _acc(r) for r in ok if math.isfinite(_acc(r))]
        axes[0][0].set_ylim(max(min(values) - 3, 0), 100)
        axes[0][0].set_ylabel("best test accuracy (%)")
        axes[0][-1].legend(fontsize=6, loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return None


# ----------------------------------------------------------------------------------------------
# command line


def _float_list(kind: str, low: float, high: float):
    def parse(text: str) -> list[float]:
        try:
            vals = [float(t) for t in text.split(",") if t.strip()]
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"{kind} must be a comma-separated list of numbers, got {text!r}"
            ) from None
        if not vals or any(not (low <= v <= high) for v in vals):
            raise argparse.ArgumentTypeError(f"{kind} must be numbers in [{low}, {high}], got {text!r}")
        return vals

    return parse


def _positive_int(text: str) -> int:
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if v < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {v}")
    return v


def _positive_float(text: str) -> float:
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text!r}") from None
    if not (v > 0 and math.isfinite(v)):
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text!r}")
    return v


def _fraction(text: str) -> float:
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number in [0, 1), got {text!r}") from None
    if not 0.0 <= v < 1.0:
        raise argparse.ArgumentTypeError(f"expected a number in [0, 1), got {text!r}")
    return v


def _dataset_arg(text: str) -> str:
    from .data import DATASET_NAMES

    if text in DATASET_NAMES:
        return text
    if text.endswith(".npz"):
        if not os.path.isfile(text):
            raise argparse.ArgumentTypeError(f"dataset file {text!r} does not exist")
        return os.path.abspath(text)
    raise argparse.ArgumentTypeError(
        f"expected {', '.join(DATASET_NAMES)} or a path to a .npz file, got {text!r}"
    )


def _directory(text: str) -> str:
    if not os.path.isdir(os.path.expanduser(text)):
        raise argparse.ArgumentTypeError(f"{text!r} is not a directory")
    return os.path.abspath(os.path.expanduser(text))


def configure_parser(p: argparse.ArgumentParser) -> None:
    """Options of ``robustagg experiment``."""
    from .._cliargs import (
        add_names_argument,
        add_out_argument,
        add_seeds_argument,
        attack_resolver,
        rule_resolver,
    )
    from .federated import DATA_ATTACKS

    p.formatter_class = argparse.RawDescriptionHelpFormatter
    default_byz = f"{100 * TRAINING_DEFAULTS['byzantine_fraction']:g} % Byzantine"
    p.epilog = "presets:\n" + "\n".join(
        f"  {k:7s} {v[1].format(byz=default_byz)}" for k, v in PRESETS.items()
    )
    p.add_argument(
        "--preset", choices=sorted(PRESETS), default="table1", help="which experiment (default table1)"
    )
    p.add_argument(
        "--dataset",
        type=_dataset_arg,
        default="digits",
        help="digits (default, embedded), synthetic, fashion-mnist, mnist (the standard IDX files, "
        "gzipped or not; see --data-dir), or PATH.npz (arrays X, y or x_train, y_train, x_test, y_test). "
        "Loaded and checked before any cell runs",
    )
    p.add_argument(
        "--data-dir",
        dest="data_dir",
        type=_directory,
        default=None,
        metavar="DIR",
        help="where to look first for fashion-mnist/mnist: DIR/NAME/, DIR/FashionMNIST/raw/ "
        "(torchvision), DIR itself; then $ROBUSTAGG_DATA, /usr/share/datasets/NAME/ "
        "(apt-get install dataset-fashion-mnist), ~/.keras/datasets, ./data/FashionMNIST/raw/",
    )
    p.add_argument("--model", choices=("mlp", "logreg"), default="mlp", help="model (default mlp)")
    p.add_argument(
        "--quick", action="store_true", help="reduced budget (fewer epochs, fewer attacks in fig4/fig6)"
    )
    add_out_argument(p, directory=True, help="output directory (default runs/PRESET[-quick])")
    p.add_argument("--jobs", type=_positive_int, default=1, help="parallel worker processes (default 1)")
    add_seeds_argument(p, default=[0], help="seeds (default 0)")
    add_names_argument(
        p,
        "--rules",
        rule_resolver(),
        metavar="RULE",
        help="rules or compositions such as nnm+krum (default: the preset's)",
    )
    add_names_argument(
        p,
        "--attacks",
        attack_resolver(extra=DATA_ATTACKS),
        metavar="ATTACK",
        example="Label-flip",
        help="attacks (default: the preset's)",
    )
    p.add_argument(
        "--fractions",
        type=_float_list("--fractions", 0.0, 0.49),
        default=None,
        help="fig4: Byzantine fractions (default 0.1,0.2,0.3,0.4)",
    )
    p.add_argument(
        "--s-values",
        dest="s_values",
        type=_float_list("--s-values", 0.0, 1.0),
        default=None,
        help="fig6: IID fractions s (default 0.3,0.5,0.8)",
    )
    g = p.add_argument_group("training settings (defaults: see docs/results.md)")
    g.add_argument(
        "--epochs",
        type=_positive_int,
        default=None,
        help=(
            f"epochs (default {BUDGETS['full']['epochs']}; --quick {BUDGETS['quick']['epochs']}, "
            f"or {QUICK_EPOCHS_IMAGES} on fashion-mnist/mnist)"
        ),
    )
    g.add_argument(
        "--clients",
        dest="n_clients",
        type=_positive_int,
        default=None,
        help=f"clients n (default {TRAINING_DEFAULTS['n_clients']})",
    )
    g.add_argument(
        "--byzantine-fraction",
        dest="byzantine_fraction",
        type=_fraction,
        default=None,
        help=f"Byzantine fraction (default {TRAINING_DEFAULTS['byzantine_fraction']})",
    )
    g.add_argument(
        "--lr", type=_positive_float, default=None, help=f"learning rate (default {TRAINING_DEFAULTS['lr']})"
    )
    g.add_argument(
        "--batch-size",
        dest="batch_size",
        type=_positive_int,
        default=None,
        help=f"per-client minibatch (default {TRAINING_DEFAULTS['batch_size']})",
    )
    g.add_argument(
        "--hidden",
        type=_positive_int,
        default=None,
        help=f"MLP hidden units (default {TRAINING_DEFAULTS['hidden']})",
    )
    g.add_argument(
        "--eval-every",
        dest="eval_every",
        type=_positive_int,
        default=None,
        metavar="N",
        help="evaluate the test accuracy every N rounds (default: once an epoch); always before the "
        "first and after the last round. 'best accuracy' is the best of these evaluations",
    )
    p.add_argument("--force", action="store_true", help="recompute cells already stored in OUT")
    p.add_argument("--no-plot", dest="plot", action="store_false", help="do not draw the figure")
    p.add_argument(
        "--quiet",
        action="store_true",
        help="no progress and no summary on stderr (progress: a bar on a terminal, otherwise one line "
        "per finished cell with the elapsed time and an estimate of the time left)",
    )


def _validate_names(args) -> None:
    """Replace ``args.rules`` / ``args.attacks`` by the registered names they designate (the
    parser has done so already; a Namespace built in Python may hold any spelling)."""
    from .. import ATTACKS, RULES
    from .._registry import resolve_name, resolve_rule_name
    from .federated import DATA_ATTACKS

    if args.rules:
        args.rules = [resolve_rule_name(name, "experiment") for name in args.rules]
    if args.attacks:
        allowed = [*ATTACKS, *(a for a in DATA_ATTACKS if a not in ATTACKS)]
        args.attacks = [resolve_name(name, "attack", allowed, caller="experiment") for name in args.attacks]
    if args.preset in ("table3",) and "signguard_sim" not in RULES and not args.rules:
        raise ValueError("table3 needs the signguard_sim rule, which is not available in this installation")


def _missing_rules(cells: list[dict]) -> list[str]:
    """The cells' rules that name no registered rule or composition of registered names."""
    from .._registry import resolve_rule_name

    missing = []
    for name in sorted({c["rule"] for c in cells}):
        try:
            resolve_rule_name(name)
        except ValueError:
            missing.append(name)
    return missing


def run(args: argparse.Namespace) -> int:
    """Run a preset; returns the exit code (0 when every cell finished, 1 when some could not).

    The dataset is loaded and checked before any cell runs: a missing or damaged file raises
    (``FileNotFoundError`` or ``DatasetError``; the CLI prints one line and exits with 2).
    """
    args.seeds = sorted({s for group in args.seeds for s in (group if isinstance(group, list) else [group])})
    _validate_names(args)
    missing = _missing_rules(build_cells(args))
    if missing:
        raise ValueError(
            f"rules {', '.join(missing)} of preset {args.preset} are not available in this installation; "
            "choose others with --rules"
        )
    data_dir = getattr(args, "data_dir", None)
    args.data_dir = os.path.abspath(data_dir) if data_dir else None
    data = load_data(args.dataset, args.data_dir)  # before any cell: a bad file stops here
    cells = build_cells(args, data.fingerprint)
    out = args.out or os.path.join("runs", args.preset + ("-quick" if args.quick else ""))
    try:
        os.makedirs(os.path.join(out, "cells"), exist_ok=True)
    except OSError as exc:
        raise ValueError(f"cannot use {out!r} as the output directory: {exc}") from None

    records: dict[str, dict] = {}
    todo = []
    for c in cells:
        rec = None if args.force else _load_record(out, c["cell_id"], need_signs=c["record_signs"])
        if rec is not None:
            records[c["cell_id"]] = rec
        else:
            todo.append(c)
    seen: set[str] = set()
    todo = [c for c in todo if not (c["cell_id"] in seen or seen.add(c["cell_id"]))]

    from .._progress import Progress

    t0 = time.perf_counter()
    failed: list[dict] = []
    note = lambda msg: None if args.quiet else print(msg, file=sys.stderr)  # noqa: E731
    note(
        f"robustagg experiment {args.preset}: {len(cells)} cells, {len(cells) - len(todo)} already done, "
        f"{len(todo)} to run with {args.jobs} job(s) on {data.name} ({data.X_train.shape[0]} training "
        f"samples, {data.n_features} features, data {data.fingerprint}) -> {out}"
    )
    with Progress(len(todo), desc=args.preset, enabled=False if args.quiet else None, lines=True) as bar:

        def done(rec: dict) -> None:
            c = rec["cell"]
            if rec.get("error"):  # reported, never stored: the next run retries it
                failed.append(rec)
                print(
                    f"cell {c['rule']}/{c['attack']} seed {c['seed']} could not run: {rec['error']}",
                    file=sys.stderr,
                )
                status = "error"
            else:
                _save_record(out, rec)
                acc = rec.get("summary", {}).get("best_accuracy")
                status = f"{100 * acc:.1f}%" if acc is not None else "n/a"
            records[c["cell_id"]] = rec
            bar.update(1, postfix=f"{c['rule']}/{c['attack']} {status}")

        if args.jobs == 1 or len(todo) <= 1:
            with _one_thread():
                for c in todo:
                    done(run_cell(c))
        else:
            ctx = multiprocessing.get_context(
                "spawn"
            )  # fresh interpreters: Numba/BLAS threads are not fork-safe
            old = {
                k: os.environ.get(k)
                for k in ("NUMBA_NUM_THREADS", "OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")
            }
            os.environ.update({k: "1" for k in old})
            try:
                with cf.ProcessPoolExecutor(
                    max_workers=args.jobs, mp_context=ctx, initializer=_worker_init
                ) as pool:
                    futures = {pool.submit(run_cell, c): c for c in todo}
                    try:
                        for fut in cf.as_completed(futures):
                            try:
                                rec = fut.result()
                            except Exception as exc:  # a crashed worker must not lose the other cells
                                rec = {"cell": futures[fut], "error": f"{type(exc).__name__}: {exc}"}
                            done(rec)
                    except KeyboardInterrupt:
                        for fut in futures:
                            fut.cancel()
                        raise
            finally:
                for k, v in old.items():
                    if v is None:
                        os.environ.pop(k, None)
                    else:
                        os.environ[k] = v

    # label each record with this preset's own cell (a stored record may come from another
    # preset with the same settings)
    ordered = [{**records[c["cell_id"]], "cell": c} for c in cells if c["cell_id"] in records]
    write_csv(os.path.join(out, "results.csv"), ordered)
    md_path = os.path.join(out, f"{args.preset}.md")
    with open(md_path, "w") as fh:
        fh.write(markdown(args.preset, ordered))
    plot_note = None
    if args.plot:
        plot_note = plot(args.preset, ordered, os.path.join(out, f"{args.preset}.png"))
    elapsed = time.perf_counter() - t0
    if not args.quiet:
        with open(md_path) as fh:
            print(fh.read())
        print(
            f"wrote {os.path.join(out, 'results.csv')}, {md_path}"
            + (
                ""
                if args.preset not in ("fig2", "fig4", "fig5", "fig6") or plot_note or not args.plot
                else f", {os.path.join(out, args.preset + '.png')}"
            )
            + f" in {elapsed:.1f} s",
            file=sys.stderr,
        )
        if plot_note:
            print(f"note: {plot_note}", file=sys.stderr)
    if failed:
        print(
            f"robustagg experiment {args.preset}: {len(failed)} of {len(todo)} cell(s) could not run "
            "(listed in the table; not stored, so the next run retries them)",
            file=sys.stderr,
        )
    return 1 if failed else 0
