"""`robustagg experiment`: a tiny end-to-end run, resumption, outputs, bad arguments."""

import csv
import os
import sys

import pytest

import robustagg
from robustagg.cli import main
from robustagg.training import experiment

TINY = ["--epochs", "1", "--clients", "10", "--batch-size", "64", "--model", "logreg", "--quiet"]


def _rows(out):
    with open(os.path.join(out, "results.csv")) as fh:
        return list(csv.DictReader(fh))


def test_smoke_table1_tiny(tmp_path, capsys):
    out = str(tmp_path / "t1")
    rc = main(
        [
            "experiment",
            "--preset",
            "table1",
            "--rules",
            "mean",
            "--attacks",
            "none,sign_flip,label_flip",
            "--out",
            out,
            *TINY,
        ]
    )
    assert rc == 0
    rows = _rows(out)
    assert len(rows) == 3
    for col in (
        "dataset",
        "model",
        "rule",
        "attack",
        "byzantine_fraction",
        "partition",
        "seed",
        "best_accuracy",
        "honest_kept_rate",
        "malicious_kept_rate",
    ):
        assert col in rows[0]
    assert [r["attack"] for r in rows] == ["none", "sign_flip", "label_flip"]
    assert all(r["dataset"] == "digits" and r["partition"] == "iid" and r["error"] == "" for r in rows)
    assert all(10.0 < float(r["best_accuracy"]) <= 100.0 for r in rows)
    md = open(os.path.join(out, "table1.md")).read()
    assert "| GAR | No Attack | Sign-flip | Label-flip |" in md and "| Mean |" in md
    assert len(os.listdir(os.path.join(out, "cells"))) == 3


def test_resumption_skips_finished_cells(tmp_path, monkeypatch):
    out = str(tmp_path / "r")
    args = [
        "experiment",
        "--preset",
        "table1",
        "--rules",
        "mean",
        "--attacks",
        "none,sign_flip",
        "--out",
        out,
        *TINY,
    ]
    assert main(args) == 0
    first = _rows(out)

    def must_not_run(cell):
        raise AssertionError(f"cell {cell['cell_id']} was recomputed")

    monkeypatch.setattr(experiment, "run_cell", must_not_run)
    assert main(args) == 0
    assert _rows(out) == first
    # one more attack: only the new cell runs
    calls = []
    monkeypatch.undo()
    real = experiment.run_cell
    monkeypatch.setattr(experiment, "run_cell", lambda c: calls.append(c["attack"]) or real(c))
    assert (
        main(
            [
                "experiment",
                "--preset",
                "table1",
                "--rules",
                "mean",
                "--attacks",
                "none,sign_flip,gaussian",
                "--out",
                out,
                *TINY,
            ]
        )
        == 0
    )
    assert calls == ["gaussian"]
    # --force recomputes everything
    calls.clear()
    assert main([*args, "--force"]) == 0
    assert sorted(calls) == ["none", "sign_flip"]


def test_seeds_and_parallel_jobs(tmp_path):
    out = str(tmp_path / "j")
    rc = main(
        [
            "experiment",
            "--preset",
            "table1",
            "--rules",
            "mean",
            "--attacks",
            "gaussian",
            "--seeds",
            "0",
            "1",
            "--jobs",
            "2",
            "--out",
            out,
            *TINY,
        ]
    )
    assert rc == 0
    rows = _rows(out)
    assert sorted((r["attack"], r["seed"]) for r in rows) == [("gaussian", "0"), ("gaussian", "1")]
    assert rows[0]["best_accuracy"] != rows[1]["best_accuracy"] or rows[0]["seconds"] != rows[1]["seconds"]
    md = open(os.path.join(out, "table1.md")).read()
    assert "±" in md  # two seeds: mean ± std


def test_figure_preset_writes_plot_or_note(tmp_path, capsys, monkeypatch):
    out = str(tmp_path / "f5")
    args = ["experiment", "--preset", "fig5", "--rules", "mean", "--out", out, *TINY[:-1]]
    assert main(args) == 0
    err = capsys.readouterr().err
    try:
        import matplotlib  # noqa: F401

        assert os.path.isfile(os.path.join(out, "fig5.png"))
    except ImportError:
        assert "matplotlib is not installed" in err
    # without matplotlib the plot is skipped with a note, not an error
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    assert main(args) == 0
    assert "plot skipped" in capsys.readouterr().err


def test_fig2_records_sign_statistics(tmp_path):
    out = str(tmp_path / "f2")
    assert main(["experiment", "--preset", "fig2", "--out", out, "--no-plot", *TINY]) == 0
    md = open(os.path.join(out, "fig2.md")).read()
    assert "honest +" in md and "LIE −" in md


def test_cells_have_distinct_ids_and_presets_build():
    parser = __import__("argparse").ArgumentParser()
    experiment.configure_parser(parser)
    for preset in experiment.PRESETS:
        args = parser.parse_args(["--preset", preset])
        args.seeds = [0]
        cells = experiment.build_cells(args)
        ids = [c["cell_id"] for c in cells]
        assert len(ids) == len(set(ids)), preset
    args = parser.parse_args(["--preset", "table1"])
    args.seeds = [0]
    cells = experiment.build_cells(args)
    assert len(cells) == len(experiment.TABLE1_RULES) * len(experiment.TABLE1_ATTACKS)
    args = parser.parse_args(["--preset", "table1", "--quick"])
    args.seeds = [0]
    quick = experiment.build_cells(args)
    assert quick[0]["epochs"] < cells[0]["epochs"] and quick[0]["cell_id"] != cells[0]["cell_id"]


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--preset", "table9"], "invalid choice"),
        (["--jobs", "0"], "positive integer"),
        (["--seeds", "-1"], "non-negative"),
        (["--seeds", "x"], "non-negative"),
        (["--dataset", "nowhere.npz"], "does not exist"),
        (["--dataset", "mnist"], "digits, synthetic or a path"),
        (["--model", "cnn"], "invalid choice"),
        (["--lr", "-1"], "positive number"),
        (["--byzantine-fraction", "1.5"], "[0, 1)"),
        (["--fractions", "0.1,abc"], "comma-separated"),
        (["--rules", "no_such_rule"], "unknown rule"),
        (["--attacks", "no_such_attack"], "unknown attack"),
    ],
)
def test_bad_arguments_exit_2_with_a_clear_message(argv, message, capsys, tmp_path):
    with pytest.raises(SystemExit) as exc_info:
        rc = main(["experiment", *argv, "--out", str(tmp_path)])
        raise SystemExit(rc)
    assert exc_info.value.code == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err


def test_missing_rule_of_a_preset_is_a_clear_error(tmp_path, capsys, monkeypatch):
    monkeypatch.delitem(robustagg.RULES, "mean")
    rc = main(
        [
            "experiment",
            "--preset",
            "fig5",
            "--rules",
            "median" if "median" in robustagg.RULES else "mean",
            "--out",
            str(tmp_path),
            *TINY,
        ]
    )
    assert rc == 2
    err = capsys.readouterr().err
    assert "not available" in err or "unknown rule" in err
