"""`robustagg experiment`: a tiny end-to-end run, resumption, outputs, bad arguments, datasets."""

import csv
import gzip
import json
import os
import shutil
import struct
import sys

import numpy as np
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


def test_the_experiment_module_exports_the_names_of_its_parts():
    """``robustagg.training.experiment`` is the command line; the names code and docs import from
    it are those its parts define (one object, not a copy)."""
    from robustagg.training import plots, presets, results, runner, tables

    parts = {
        presets: ("BUDGETS", "PRESETS", "TABLE1_ATTACKS", "TABLE1_RULES", "build_cells", "cell_id"),
        runner: ("run_cell", "load_data", "DataChangedError"),
        tables: ("markdown", "write_csv", "CSV_COLUMNS", "IDLE_NOTE", "NO_DEFENSE"),
        plots: ("plot",),
        results: ("PRETTY",),
    }
    for module, names in parts.items():
        for name in names:
            assert getattr(experiment, name) is getattr(module, name), name
    assert set(experiment.__all__) == {
        "BUDGETS",
        "PRESETS",
        "build_cells",
        "configure_parser",
        "run",
        "run_cell",
    }


def test_resume_and_run_cells_store_finished_cells_only(tmp_path):
    """``resume`` serves the stored cells and lists each other cell once; ``run_cells`` stores a
    finished record, reports a failed one (never stored) and returns it."""
    from robustagg.training.runner import resume, run_cells

    out = str(tmp_path)
    os.makedirs(os.path.join(out, "cells"))
    cells = [
        dict(cell_id=cid, rule="mean", attack=attack, seed=0, record_signs=False)
        for cid, attack in (("a1", "none"), ("b2", "lie"), ("a1", "none"))
    ]

    def fake(cell):
        error = "Boom: refused" if cell["attack"] == "lie" else ""
        return {"cell": cell, "error": error, "summary": {"best_accuracy": 0.5}}

    records, todo = resume(cells, out)
    assert records == {} and [c["cell_id"] for c in todo] == ["a1", "b2"]
    failed = run_cells(todo, out, records, quiet=True, run_one=fake)
    assert [r["cell"]["cell_id"] for r in failed] == ["b2"] and set(records) == {"a1", "b2"}
    assert sorted(os.listdir(os.path.join(out, "cells"))) == ["a1.json"]
    records, todo = resume(cells, out)
    assert set(records) == {"a1"} and [c["cell_id"] for c in todo] == ["b2"]
    assert [c["cell_id"] for c in resume(cells, out, force=True)[1]] == ["a1", "b2"]


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


@pytest.mark.slow
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
    assert rows[0]["cell_id"] != rows[1]["cell_id"]  # two separate runs, stored apart
    assert len(os.listdir(os.path.join(out, "cells"))) == 2
    md = open(os.path.join(out, "table1.md")).read()
    assert "±" in md  # two seeds: mean ± std


@pytest.mark.slow
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
        (["--dataset", "cifar10"], "expected digits, synthetic, fashion-mnist, mnist or a path"),
        (["--data-dir", "/no/such/dir"], "is not a directory"),
        (["--eval-every", "0"], "positive integer"),
        (["--model", "cnn"], "invalid choice"),
        (["--lr", "-1"], "positive number"),
        (["--byzantine-fraction", "1.5"], "[0, 1)"),
        (["--fractions", "0.1,abc"], "comma-separated"),
        (["--rules", "no_such_rule"], "unknown rule"),
        (["--attacks", "no_such_attack"], "unknown attack"),
        (["--rules", "mean", "Multi-Krun"], "--rules: unknown rule 'Multi-Krun' (did you mean 'multi_krum'"),
        (["--attacks", "lie,", "Label-flp"], "unknown attack 'Label-flp' (did you mean 'label_flip'"),
        (["--seeds", "0", "1,x"], "non-negative"),
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


# ------------------------------------------------------------------------------------------------
# the dataset: checked before any cell runs, cells keyed by its content


def _npz(path, seed=0, n=120):
    r = np.random.default_rng(seed)
    np.savez(path, X=r.normal(size=(n, 5)), y=np.arange(n) % 3)
    return str(path)


def _cells(out):
    d = os.path.join(out, "cells")
    return sorted(os.listdir(d)) if os.path.isdir(d) else []


ONE = ["--preset", "table1", "--rules", "mean", "--attacks", "none", *TINY]


def _bad_zip(path):
    path.write_bytes(b"this is not a zip archive")


def _truncated_zip(path):
    _npz(path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def _pickled(path):
    np.savez(path, X=np.array([{"a": 1}] * 8, dtype=object), y=np.arange(8) % 2)


def _nan(path):
    X = np.random.default_rng(0).normal(size=(40, 3))
    X[3, 1] = np.nan
    np.savez(path, X=X, y=np.arange(40) % 2)


def _wrong_arrays(path):
    np.savez(path, images=np.zeros((8, 2)), labels=np.arange(8))


@pytest.mark.parametrize(
    "make, message",
    [
        (_bad_zip, "not a valid .npz file"),
        (_truncated_zip, "not a valid .npz file"),
        (_pickled, "Python objects"),
        (_nan, "NaN or Inf"),
        (_wrong_arrays, "expected arrays 'X' and 'y'"),
    ],
    ids=["not-a-zip", "truncated-zip", "pickled", "nan", "wrong-arrays"],
)
def test_bad_dataset_file_exits_2_before_any_cell(tmp_path, capsys, monkeypatch, make, message):
    path = tmp_path / "data.npz"
    make(path)

    def must_not_run(cell):
        raise AssertionError("a cell ran on a bad dataset")

    monkeypatch.setattr(experiment, "run_cell", must_not_run)
    out = str(tmp_path / "o")
    rc = main(["experiment", "--dataset", str(path), "--out", out, *ONE])
    err = capsys.readouterr().err
    assert rc == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and str(path) in lines[0] and message in lines[0], err
    assert "Traceback" not in err
    assert _cells(out) == [] and not os.path.exists(os.path.join(out, "results.csv"))


def test_cells_are_keyed_by_the_data_content_not_the_path(tmp_path, monkeypatch):
    data = tmp_path / "data.npz"
    _npz(data, seed=0)
    out = str(tmp_path / "o")
    args = ["experiment", "--dataset", str(data), "--out", out, *ONE]
    assert main(args) == 0
    first = _rows(out)
    assert len(_cells(out)) == 1
    # the file changes in place: same path, new content -> the cell runs again
    _npz(data, seed=1)
    calls = []
    real = experiment.run_cell
    monkeypatch.setattr(experiment, "run_cell", lambda c: calls.append(c["cell_id"]) or real(c))
    assert main(args) == 0
    assert len(calls) == 1 and calls[0] != first[0]["cell_id"]
    assert _rows(out)[0]["cell_id"] == calls[0] and len(_cells(out)) == 2
    # the same content under another name, somewhere else: nothing runs
    moved = tmp_path / "elsewhere" / "renamed.npz"
    moved.parent.mkdir()
    shutil.copy(data, moved)

    def must_not_run(cell):
        raise AssertionError(f"cell {cell['cell_id']} was recomputed")

    monkeypatch.setattr(experiment, "run_cell", must_not_run)
    assert main(["experiment", "--dataset", str(moved), "--out", out, *ONE]) == 0
    row = _rows(out)[0]
    assert row["cell_id"] == calls[0] and row["dataset"] == str(moved)


def test_a_cell_error_is_reported_and_never_cached(tmp_path, capsys, monkeypatch):
    from robustagg.training import federated

    out = str(tmp_path / "o")
    args = [
        "experiment",
        "--out",
        out,
        "--preset",
        "table1",
        "--rules",
        "mean",
        "--attacks",
        "none,sign_flip",
        *TINY,
    ]
    real = federated.run_federated

    def flaky(data, config):
        if config.attack == "sign_flip":
            raise RuntimeError("disk on fire")
        return real(data, config)

    monkeypatch.setattr(federated, "run_federated", flaky)
    assert main(args) == 1
    err = capsys.readouterr().err
    assert "could not run: RuntimeError: disk on fire" in err and "Traceback" not in err
    assert len(_cells(out)) == 1  # only the finished cell is stored
    rows = {r["attack"]: r for r in _rows(out)}
    assert rows["sign_flip"]["error"] == "RuntimeError: disk on fire" and rows["none"]["error"] == ""
    assert "could not run" in open(os.path.join(out, "table1.md")).read()
    # fixed: the rerun retries the failed cell only
    monkeypatch.setattr(federated, "run_federated", real)
    calls = []
    run_cell = experiment.run_cell
    monkeypatch.setattr(experiment, "run_cell", lambda c: calls.append(c["attack"]) or run_cell(c))
    assert main(args) == 0
    assert calls == ["sign_flip"] and len(_cells(out)) == 2
    assert all(r["error"] == "" for r in _rows(out))


def test_a_refused_setting_is_not_cached_either(tmp_path, capsys, monkeypatch):
    out = str(tmp_path / "o")
    # Bulyan needs n >= 4f + 3: 10 clients with f = 2 is refused
    args = ["experiment", "--out", out, "--preset", "table1", "--rules", "bulyan", "--attacks", "none", *TINY]
    assert main(args) == 1
    assert _cells(out) == [] and "bulyan" in capsys.readouterr().err.lower()
    calls = []
    run_cell = experiment.run_cell
    monkeypatch.setattr(experiment, "run_cell", lambda c: calls.append(c["rule"]) or run_cell(c))
    assert main(args) == 1
    assert calls == ["bulyan"]


def test_a_stored_error_of_an_older_version_is_retried(tmp_path):
    out = str(tmp_path / "o")
    assert main(["experiment", "--out", out, *ONE]) == 0
    (name,) = _cells(out)
    path = os.path.join(out, "cells", name)
    rec = json.load(open(path))
    rec["error"] = "stale"
    json.dump(rec, open(path, "w"))
    assert main(["experiment", "--out", out, *ONE]) == 0
    assert json.load(open(path))["error"] == "" and _rows(out)[0]["error"] == ""


def _idx(path, arr):
    arr = np.asarray(arr, dtype=np.uint8)
    head = struct.pack(">BBBB", 0, 0, 0x08, arr.ndim) + struct.pack(f">{arr.ndim}I", *arr.shape)
    with gzip.open(str(path) + ".gz", "wb") as fh:
        fh.write(head + arr.tobytes())


def _fake_fashion(directory, n_train=200, n_test=50):
    r = np.random.default_rng(0)
    os.makedirs(directory, exist_ok=True)
    y = np.arange(n_train) % 10
    yt = np.arange(n_test) % 10
    # images whose mean brightness encodes the label: learnable
    X = np.clip(r.normal(20 * y[:, None, None], 10, size=(n_train, 6, 6)), 0, 255)
    Xt = np.clip(r.normal(20 * yt[:, None, None], 10, size=(n_test, 6, 6)), 0, 255)
    _idx(os.path.join(directory, "train-images-idx3-ubyte"), X)
    _idx(os.path.join(directory, "train-labels-idx1-ubyte"), y)
    _idx(os.path.join(directory, "t10k-images-idx3-ubyte"), Xt)
    _idx(os.path.join(directory, "t10k-labels-idx1-ubyte"), yt)


@pytest.fixture
def no_real_data(tmp_path, monkeypatch):
    from robustagg.training import idx

    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.delenv("ROBUSTAGG_DATA", raising=False)
    monkeypatch.delenv("KERAS_HOME", raising=False)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(idx, "DEBIAN_ROOT", str(tmp_path / "debian"))
    return tmp_path


def test_fashion_mnist_not_found_exits_2_with_where_and_how(no_real_data, capsys):
    rc = main(["experiment", "--dataset", "fashion-mnist", "--out", str(no_real_data / "o"), *ONE])
    err = capsys.readouterr().err
    assert rc == 2 and "Traceback" not in err
    assert "fashion-mnist: dataset not found" in err and "apt-get install dataset-fashion-mnist" in err
    assert str(no_real_data / "debian" / "fashion-mnist") in err and ".keras" in err
    assert _cells(str(no_real_data / "o")) == []


def test_fashion_mnist_from_data_dir_and_environment(no_real_data, monkeypatch, capsys):
    _fake_fashion(no_real_data / "dd" / "fashion-mnist")
    out = str(no_real_data / "o")
    args = ["experiment", "--dataset", "fashion-mnist", "--out", out, "--preset", "table1", "--rules", "mean"]
    args += ["--attacks", "none", "--epochs", "10", "--clients", "5", "--batch-size", "20", "--quiet"]
    assert main([*args, "--data-dir", str(no_real_data / "dd")]) == 0
    (row,) = _rows(out)
    assert row["dataset"] == "fashion-mnist" and float(row["best_accuracy"]) > 30.0  # chance: 10 %
    md = open(os.path.join(out, "table1.md")).read()
    assert "Dataset `fashion-mnist`" in md
    # the same files through $ROBUSTAGG_DATA: the same content, nothing recomputed
    monkeypatch.setenv("ROBUSTAGG_DATA", str(no_real_data / "dd"))
    monkeypatch.setattr(experiment, "run_cell", lambda c: (_ for _ in ()).throw(AssertionError("recomputed")))
    assert main(args) == 0
    # a damaged file there: exit 2, naming it
    path = no_real_data / "dd" / "fashion-mnist" / "t10k-labels-idx1-ubyte.gz"
    path.write_bytes(path.read_bytes()[:-9])
    assert main(args) == 2
    err = capsys.readouterr().err
    assert str(path) in err and "gzip" in err and len(err.strip().splitlines()) == 1


def test_eval_every_is_part_of_the_cell(tmp_path):
    out = str(tmp_path / "o")
    base = ["experiment", "--out", out, "--preset", "table1", "--rules", "mean", "--attacks", "none"]
    base += ["--epochs", "3", "--clients", "10", "--batch-size", "16", "--model", "logreg", "--quiet"]
    assert main(base) == 0
    assert main([*base, "--eval-every", "1"]) == 0
    recs = [json.load(open(os.path.join(out, "cells", c))) for c in _cells(out)]
    assert len(recs) == 2
    by_every = {r["cell"]["eval_every"]: r for r in recs}
    rounds = by_every[1]["summary"]["rounds"]
    rpe = by_every[None]["summary"]["rounds_per_epoch"]
    assert by_every[1]["history"]["round"] == list(range(rounds + 1))
    assert by_every[None]["history"]["round"] == [0, rpe, 2 * rpe, 3 * rpe]
    # the same training: more evaluations can only find a better or equal best accuracy
    s1, sN = by_every[1]["summary"], by_every[None]["summary"]
    assert s1["final_accuracy"] == sN["final_accuracy"] and s1["best_accuracy"] >= sN["best_accuracy"]


def test_progress_lines_when_stderr_is_not_a_terminal(tmp_path, capsys):
    out = str(tmp_path / "o")
    args = ["experiment", "--out", out, "--preset", "table1", "--rules", "mean,median"]
    args += ["--attacks", "none", *TINY[:-1]]
    assert main(args) == 0
    err = capsys.readouterr().err
    lines = [ln for ln in err.splitlines() if ln.startswith("table1 ")]
    assert len(lines) == 2, err
    assert (
        lines[0].startswith("table1 1/2 (50%) mean/none") and "elapsed, ~" in lines[0] and "left" in lines[0]
    )
    assert lines[1].startswith("table1 2/2 (100%) median/none") and lines[1].endswith("elapsed, done")
    assert main([*args, "--quiet", "--force"]) == 0
    assert capsys.readouterr().err == ""


def test_a_composition_by_name_is_a_rule_of_the_experiment(tmp_path):
    out = str(tmp_path / "o")
    args = ["experiment", "--out", out, "--preset", "table1", "--rules", "NNM+Krum", "--attacks", "none"]
    assert main([*args, *TINY]) == 0
    rows = _rows(out)
    assert [(r["rule"], r["attack"], r["error"]) for r in rows] == [("nnm+krum", "none", "")]


def test_display_names_and_space_separated_lists_run_the_registered_cells(tmp_path):
    out = str(tmp_path / "o")
    args = ["experiment", "--out", out, "--preset", "table1", "--rules", "Mean,", "TrMean"]
    assert main([*args, "--attacks", "No Attack", "Sign-flip", "--seeds", "1", *TINY]) == 0
    rows = _rows(out)
    assert sorted((r["rule"], r["attack"], r["seed"]) for r in rows) == [
        (rule, attack, "1") for rule in ("mean", "trimmed_mean") for attack in ("none", "sign_flip")
    ]


def test_thread_settings_are_restored(tmp_path):
    """Cells run with one Numba/BLAS thread; the caller's settings are back afterwards."""
    import numba
    from threadpoolctl import threadpool_info, threadpool_limits

    if numba.config.NUMBA_NUM_THREADS < 2:
        pytest.skip("one thread only: a change to one thread cannot be seen")
    old = numba.get_num_threads()
    numba.set_num_threads(2)  # a known state that differs from the cells' one thread
    try:
        with threadpool_limits(2):
            blas = {i["filepath"]: i["num_threads"] for i in threadpool_info()}
            before = (numba.get_num_threads(), blas)
            assert main(["experiment", "--out", str(tmp_path / "o"), *ONE]) == 0
            now = {i["filepath"]: i["num_threads"] for i in threadpool_info()}
            after = (numba.get_num_threads(), {k: now.get(k) for k in blas})  # libraries loaded before
    finally:
        numba.set_num_threads(old)
    assert after == before and before[0] == 2


# ------------------------------------------------------------------------------------------------
# the tables


def _record(rule, attack, acc, h=1.0, m=0.5, f=10, n=50, fraction=0.2, seed=0):
    cell = dict(
        preset="table1",
        dataset="digits",
        data="0" * 16,
        model="mlp",
        n_clients=n,
        epochs=60,
        batch_size=16,
        lr=0.1,
        momentum=0.9,
        weight_decay=5e-4,
        eval_every=None,
        rule=rule,
        attack=attack,
        byzantine_fraction=fraction,
        partition="iid",
        s=1.0,
        seed=seed,
        variant="",
        cell_id=f"{rule}{attack}",
    )
    summary = dict(
        best_accuracy=acc, final_accuracy=acc, honest_kept_rate=h, malicious_kept_rate=m, f=f, n_clients=n
    )
    return {"cell": cell, "summary": summary, "error": "", "history": {}}


def test_bold_marks_the_best_defense_not_mean():
    recs = [
        _record("mean", "none", 0.98),
        _record("median", "none", 0.95),
        _record("krum", "none", 0.96),
        _record("mean", "lie", 0.50),
        _record("median", "lie", 0.70),
        _record("krum", "lie", 0.60),
    ]
    md = experiment.markdown("table1", recs)
    table = md.split("Final test accuracy")[0]
    assert "| Mean | 98.00 | 50.00 |" in table  # the best number under No Attack, yet no defense
    assert "| Median | 95.00 | **70.00** |" in table
    assert "| Krum | **96.00** | 60.00 |" in table
    assert table.count("**") == 4
    # without Mean in the table the best row is bold as before
    md = experiment.markdown("table1", recs[1:3])
    assert "| Krum | **96.00** |" in md


def test_kept_rate_under_no_attack_is_labelled_and_csv_keeps_it_apart(tmp_path):
    recs = [_record("median", "none", 0.95, m=0.8), _record("median", "lie", 0.7, m=0.1)]
    md = experiment.markdown("table1", recs)
    kept = md.split("Average kept rate")[1]
    assert "| GAR | No Attack † | LIE |" in kept
    assert "† No Attack: the f designated Byzantine clients send honest gradients" in kept
    path = tmp_path / "r.csv"
    experiment.write_csv(str(path), [{**r, "cell": {**r["cell"], "preset": "table1"}} for r in recs])
    rows = {r["attack"]: r for r in csv.DictReader(open(path))}
    assert rows["none"]["malicious_kept_rate"] == "" and rows["none"]["byzantine_kept_rate"] == "0.8000"
    assert rows["lie"]["malicious_kept_rate"] == "0.1000" == rows["lie"]["byzantine_kept_rate"]
    # table2 marks its No Attack row the same way
    t2 = experiment.markdown("table2", [{**r, "cell": {**r["cell"], "rule": "signguard"}} for r in recs])
    assert "| No Attack † |" in t2 and "† No Attack" in t2


@pytest.mark.parametrize(
    "fraction, n, f, text",
    [
        (0.3, 10, 3, "30 % Byzantine (f = 3 of n = 10)"),
        (0.25, 10, 2, "20 % Byzantine (f = 2 of n = 10)"),  # round(2.5) = 2: the fraction used is 20 %
        (0.2, 50, 10, "20 % Byzantine (f = 10 of n = 50)"),
    ],
)
def test_title_states_the_byzantine_fraction_used(fraction, n, f, text):
    recs = [_record("median", "lie", 0.7, f=f, n=n, fraction=fraction)]
    title = experiment.markdown("table1", recs).splitlines()[0]
    assert title == f"# Table I: best test accuracy (%), rules × attacks, {text}, IID"
    # from the cell alone when the summary lacks f (a cell that could not run)
    del recs[0]["summary"]["f"]
    assert text in experiment.markdown("table1", recs).splitlines()[0]


def test_title_from_a_real_run(tmp_path):
    out = str(tmp_path / "o")
    args = ["experiment", "--out", out, *ONE, "--byzantine-fraction", "0.35"]
    assert main(args) == 0
    title = open(os.path.join(out, "table1.md")).readline()
    assert "40 % Byzantine (f = 4 of n = 10)" in title and "20 %" not in title
