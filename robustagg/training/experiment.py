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

The parts: :mod:`~robustagg.training.presets` (the presets and their cells),
:mod:`~robustagg.training.runner` (running the cells: jobs, resumption, progress),
:mod:`~robustagg.training.tables` (``results.csv`` and the Markdown tables),
:mod:`~robustagg.training.plots` (the figures) and :mod:`~robustagg.training.results` (the values
and statistics of finished cells). This module is the command line (:func:`configure_parser`,
:func:`run`) and still exports the names those modules define.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import time
from typing import TYPE_CHECKING

from .plots import FIGURE_PRESETS, plot
from .presets import ABLATIONS as ABLATIONS
from .presets import BUDGETS, PRESETS, QUICK_EPOCHS_IMAGES, TRAINING_DEFAULTS, build_cells
from .presets import IMAGE_DATASETS as IMAGE_DATASETS
from .presets import SIGNGUARDS as SIGNGUARDS
from .presets import SOTA_ATTACKS as SOTA_ATTACKS
from .presets import TABLE1_ATTACKS as TABLE1_ATTACKS
from .presets import TABLE1_RULES as TABLE1_RULES
from .presets import cell_id as cell_id
from .results import PRETTY as PRETTY
from .runner import DataChangedError as DataChangedError
from .runner import load_data, resume, run_cell, run_cells
from .tables import CSV_COLUMNS as CSV_COLUMNS
from .tables import IDLE_MARK as IDLE_MARK
from .tables import IDLE_NOTE as IDLE_NOTE
from .tables import NO_DEFENSE as NO_DEFENSE
from .tables import markdown, write_csv

if TYPE_CHECKING:
    from .data import Dataset

__all__ = ["BUDGETS", "PRESETS", "build_cells", "configure_parser", "run", "run_cell"]


# ----------------------------------------------------------------------------------------------
# command line: argument types


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


# ----------------------------------------------------------------------------------------------
# command line: options


def configure_parser(p: argparse.ArgumentParser) -> None:
    """Options of ``robustagg experiment``."""
    from .._cliargs import add_out_argument, add_seeds_argument

    p.formatter_class = argparse.RawDescriptionHelpFormatter
    default_byz = f"{100 * TRAINING_DEFAULTS['byzantine_fraction']:g} % Byzantine"
    p.epilog = "presets:\n" + "\n".join(
        f"  {k:7s} {v[1].format(byz=default_byz)}" for k, v in PRESETS.items()
    )
    p.add_argument(
        "--preset", choices=sorted(PRESETS), default="table1", help="which experiment (default table1)"
    )
    _add_data_options(p)
    p.add_argument(
        "--quick", action="store_true", help="reduced budget (fewer epochs, fewer attacks in fig4/fig6)"
    )
    add_out_argument(p, directory=True, help="output directory (default runs/PRESET[-quick])")
    p.add_argument("--jobs", type=_positive_int, default=1, help="parallel worker processes (default 1)")
    add_seeds_argument(p, default=[0], help="seeds (default 0)")
    _add_cell_options(p)
    _add_training_options(p)
    p.add_argument("--force", action="store_true", help="recompute cells already stored in OUT")
    p.add_argument("--no-plot", dest="plot", action="store_false", help="do not draw the figure")
    p.add_argument(
        "--quiet",
        action="store_true",
        help="no progress and no summary on stderr (progress: a bar on a terminal, otherwise one line "
        "per finished cell with the elapsed time and an estimate of the time left)",
    )


def _add_data_options(p: argparse.ArgumentParser) -> None:
    """``--dataset``, ``--data-dir``, ``--model``."""
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


def _add_cell_options(p: argparse.ArgumentParser) -> None:
    """``--rules``, ``--attacks``, ``--fractions``, ``--s-values``: which cells of the preset."""
    from .._cliargs import add_names_argument, attack_resolver, rule_resolver
    from .federated import DATA_ATTACKS

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


def _add_training_options(p: argparse.ArgumentParser) -> None:
    """The training settings that replace the presets' (``--epochs``, ``--clients``, ...)."""
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


# ----------------------------------------------------------------------------------------------
# command line: the run


def run(args: argparse.Namespace) -> int:
    """Run a preset; returns the exit code (0 when every cell finished, 1 when some could not).

    The dataset is loaded and checked before any cell runs: a missing or damaged file raises
    (``FileNotFoundError`` or ``DatasetError``; the CLI prints one line and exits with 2).
    """
    data, cells, out = _prepare(args)
    records, todo = resume(cells, out, force=args.force)
    t0 = time.perf_counter()
    if not args.quiet:
        print(
            f"robustagg experiment {args.preset}: {len(cells)} cells, {len(cells) - len(todo)} already "
            f"done, {len(todo)} to run with {args.jobs} job(s) on {data.name} ({data.X_train.shape[0]} "
            f"training samples, {data.n_features} features, data {data.fingerprint}) -> {out}",
            file=sys.stderr,
        )
    failed = run_cells(
        todo, out, records, jobs=args.jobs, desc=args.preset, quiet=args.quiet, run_one=run_cell
    )
    # label each record with this preset's own cell (a stored record may come from another
    # preset with the same settings)
    ordered = [{**records[c["cell_id"]], "cell": c} for c in cells if c["cell_id"] in records]
    md_path, plot_note = _write_results(args, out, ordered)
    if not args.quiet:
        _report(args, out, md_path, plot_note, time.perf_counter() - t0)
    if failed:
        print(
            f"robustagg experiment {args.preset}: {len(failed)} of {len(todo)} cell(s) could not run "
            "(listed in the table; not stored, so the next run retries them)",
            file=sys.stderr,
        )
    return 1 if failed else 0


def _prepare(args: argparse.Namespace) -> tuple[Dataset, list[dict], str]:
    """Check the names, load the data, build the cells and make the output directory.

    Returns the dataset, the cells (keyed by the data's content) and the output directory.
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
    return data, cells, out


def _write_results(args: argparse.Namespace, out: str, records: list[dict]) -> tuple[str, str | None]:
    """Write ``results.csv``, ``<preset>.md`` and (figure presets) ``<preset>.png``.

    Returns the Markdown file's path and the plot's note (why it was not drawn, else ``None``).
    """
    write_csv(os.path.join(out, "results.csv"), records)
    md_path = os.path.join(out, f"{args.preset}.md")
    with open(md_path, "w") as fh:
        fh.write(markdown(args.preset, records))
    plot_note = None
    if args.plot:
        plot_note = plot(args.preset, records, os.path.join(out, f"{args.preset}.png"))
    return md_path, plot_note


def _report(args: argparse.Namespace, out: str, md_path: str, plot_note: str | None, elapsed: float) -> None:
    """Print the table on stdout, and the files written (and a plot's note) on stderr."""
    with open(md_path) as fh:
        print(fh.read())
    drawn = args.preset in FIGURE_PRESETS and not plot_note and args.plot
    print(
        f"wrote {os.path.join(out, 'results.csv')}, {md_path}"
        + (f", {os.path.join(out, args.preset + '.png')}" if drawn else "")
        + f" in {elapsed:.1f} s",
        file=sys.stderr,
    )
    if plot_note:
        print(f"note: {plot_note}", file=sys.stderr)
