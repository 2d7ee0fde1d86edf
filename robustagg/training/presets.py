"""The presets of ``robustagg experiment`` and their cell grids.

A preset (``table1`` ... ``fig6``, the paper's Section VI) is a list of *cells*: one training
run each, one per seed, with its full configuration (:func:`build_cells`). A cell's identity is
a hash of everything that determines its result (:func:`cell_id`): the data enter through a
hash of their content, so finished cells are found again by their settings and their data, not
by the preset's name or the dataset's path.
"""

from __future__ import annotations

import argparse
import hashlib
import json
from typing import Any

from .federated import TIME_VARYING_POOL

__all__ = [
    "ABLATIONS",
    "BUDGETS",
    "IMAGE_DATASETS",
    "PRESETS",
    "QUICK_EPOCHS_IMAGES",
    "SIGNGUARDS",
    "SOTA_ATTACKS",
    "TABLE1_ATTACKS",
    "TABLE1_RULES",
    "TRAINING_DEFAULTS",
    "build_cells",
    "cell_id",
]

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

# ----------------------------------------------------------------------------------------------
# the cells of each preset


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
