"""Tests of the robustness matrix (robustagg.robustness, ``robustagg matrix``)."""

import csv
import json

import numpy as np
import pytest

import robustagg
from robustagg import attacks
from robustagg.cli import main
from robustagg.robustness import (
    DOC_END,
    DOC_START,
    robustness_matrix,
    synthetic_gradients,
    to_markdown,
    update_docs,
)

SMALL = {"n": 12, "f": 2, "d": 20, "seeds": 2}


def test_synthetic_gradients_spread_exceeds_mean():
    G, root = synthetic_gradients(400, 300, seed=1)
    assert G.shape == (400, 300) and root.shape == (300,)
    assert (G.std(axis=0, ddof=1) > np.abs(G.mean(axis=0))).all()
    G32, _ = synthetic_gradients(5, 4, seed=1, dtype=np.float32)
    assert G32.dtype == np.float32
    np.testing.assert_array_equal(synthetic_gradients(5, 4, seed=3)[0], synthetic_gradients(5, 4, seed=3)[0])


def test_matrix_cells_are_the_relative_deviation():
    result = robustness_matrix(["mean", "median"], ["sign_flip", "nan"], **SMALL)
    assert result["attacks"] == ["none", "sign_flip", "nan"]
    cells = result["cells"]
    np.testing.assert_allclose(cells[("mean", "none")]["deviation"], 0.0, atol=1e-12)
    expected = []
    for seed in range(2):
        G, _ = synthetic_gradients(12, 20, seed=seed)
        h = G[2:].mean(axis=0)
        expected.append(np.linalg.norm(attacks.sign_flip(G, 2).mean(axis=0) - h) / np.linalg.norm(h))
    np.testing.assert_allclose(cells[("mean", "sign_flip")]["deviation"], np.mean(expected), rtol=1e-12)
    # non-finite rows are excluded by the rules: the NaN attack is the same as dropping the rows
    assert np.isfinite(cells[("median", "nan")]["deviation"])
    # the adaptive attack gets the cell's rule and hurts it more than sign flipping
    adaptive = robustness_matrix(["median"], ["line_search", "sign_flip"], n=12, f=2, d=20, seeds=1)["cells"]
    assert adaptive[("median", "line_search")]["deviation"] > adaptive[("median", "sign_flip")]["deviation"]


def test_matrix_reports_refusals_and_kept_rates():
    def picky(grads, f):
        raise ValueError("picky: needs n >= 100")

    robustagg.RULES["_test_picky"] = picky
    try:
        result = robustness_matrix(["_test_picky", "krum"], ["sign_flip"], **SMALL)
    finally:
        del robustagg.RULES["_test_picky"]
    cell = result["cells"][("_test_picky", "sign_flip")]
    assert cell["deviation"] is None and "needs n >= 100" in cell["error"]
    krum = result["cells"][("krum", "sign_flip")]
    assert 0.0 <= krum["byzantine_kept"] <= 1.0 and 0.0 <= krum["honest_kept"] <= 1.0
    md = to_markdown(result)
    assert "| _test_picky | n/a | n/a | n/a |" in md
    assert "needs n >= 100" in md
    assert "| krum |" in md and "Share of Byzantine rows kept" in md


def test_matrix_validation():
    with pytest.raises(ValueError, match="unknown rule"):
        robustness_matrix(["nope"], ["lie"], **SMALL)
    with pytest.raises(ValueError, match="unknown attack"):
        robustness_matrix(["mean"], ["nope"], **SMALL)
    with pytest.raises(ValueError, match="0 <= f < n"):
        robustness_matrix(["mean"], ["lie"], n=5, f=5, d=3, seeds=1)


def test_cli_writes_markdown_csv_json_and_updates_docs(tmp_path):
    page = tmp_path / "page.md"
    page.write_text(
        f"# Title\n\nprose\n\n{DOC_START}\nold table\n{DOC_END}\n\nmore prose\n", encoding="utf-8"
    )
    out_md, out_csv, out_json = tmp_path / "t.md", tmp_path / "t.csv", tmp_path / "t.json"
    argv = ["matrix", "--n", "10", "--f", "2", "--d", "8", "--seeds", "1", "--quiet"]
    argv += ["--rules", "mean", "median", "--attacks", "lie", "ipm"]
    argv += [
        "--out",
        str(out_md),
        "--csv",
        str(out_csv),
        "--json",
        str(out_json),
        "--update-docs",
        str(page),
    ]
    assert main(argv) == 0
    table = out_md.read_text(encoding="utf-8")
    assert "| rule | none | lie | ipm | worst |" in table
    text = page.read_text(encoding="utf-8")
    assert text.startswith("# Title\n\nprose\n") and text.endswith("more prose\n")
    assert "old table" not in text and table.strip() in text
    assert "robustagg matrix --n 10 --f 2 --d 8 --seeds 1" in text
    rows = list(csv.DictReader(out_csv.open(encoding="utf-8")))
    assert {(r["rule"], r["attack"]) for r in rows} == {
        (r, a) for r in ("mean", "median") for a in ("none", "lie", "ipm")
    }
    payload = json.loads(out_json.read_text(encoding="utf-8"))
    assert payload["config"]["n"] == 10 and len(payload["cells"]) == 6


def test_cli_errors_are_clean(capsys, tmp_path):
    with pytest.raises(SystemExit) as exc:
        main(["matrix", "--rules", "nope", "--quiet", "--seeds", "1"])
    assert exc.value.code == 2
    assert "argument --rules: unknown rule 'nope'" in capsys.readouterr().err
    with pytest.raises(ValueError, match="markers"):
        (tmp_path / "p.md").write_text("no markers", encoding="utf-8")
        update_docs(tmp_path / "p.md", "table", "cmd")


def test_matrix_accepts_compositions_by_name():
    from robustagg.robustness import robustness_matrix

    result = robustness_matrix(rules=["nnm+krum"], attacks=["sign_flip"], n=9, f=2, d=20, seeds=1)
    cell = result["cells"][("nnm+krum", "sign_flip")]
    assert cell["error"] is None and cell["deviation"] is not None  # computed through pipeline("nnm", "krum")
    with pytest.raises(ValueError, match="nope"):
        robustness_matrix(rules=["nnm+nope"], attacks=["sign_flip"], n=9, f=2, d=20, seeds=1)


def test_seeds_are_the_seeds_a_count_stays_available_in_python():
    count = robustness_matrix(["mean", "median"], ["lie"], n=12, f=2, d=20, seeds=3)
    listed = robustness_matrix(["mean", "median"], ["lie"], n=12, f=2, d=20, seeds=[0, 1, 2])
    assert count["config"]["seeds"] == listed["config"]["seeds"] == [0, 1, 2]
    for key, cell in count["cells"].items():
        assert {**cell, "seconds": None} == {**listed["cells"][key], "seconds": None}
    one = robustness_matrix(["mean"], ["lie"], n=12, f=2, d=20, seeds=[2])
    G, _ = synthetic_gradients(12, 20, seed=2)
    Ga = attacks.lie(G, 2, rng=2)
    honest = G[2:].mean(axis=0)
    expected = np.linalg.norm(robustagg.mean(Ga) - honest) / np.linalg.norm(honest)
    assert one["cells"][("mean", "lie")]["per_seed"] == [pytest.approx(expected, rel=1e-12)]
    for bad in (0, [], [-1], [1.5], ["0"]):
        with pytest.raises(ValueError, match="matrix: argument 'seeds'"):
            robustness_matrix(["mean"], ["lie"], n=12, f=2, d=20, seeds=bad)


def test_cli_seeds_list_display_names_and_the_printed_command(tmp_path):
    page = tmp_path / "page.md"
    page.write_text(f"{DOC_START}\n{DOC_END}\n", encoding="utf-8")
    out_json = tmp_path / "t.json"
    argv = ["matrix", "--n", "12", "--f", "2", "--d", "20", "--seeds", "0,", "2", "--quiet"]
    argv += ["--rules", "Mean,", "TrMean", "--attacks", "LIE"]
    argv += ["--update-docs", str(page), "--json", str(out_json)]
    assert main(argv) == 0
    payload = json.loads(out_json.read_text(encoding="utf-8"))
    assert payload["config"]["seeds"] == [0, 2]
    assert {(c["rule"], c["attack"]) for c in payload["cells"]} == {
        (r, a) for r in ("mean", "trimmed_mean") for a in ("none", "lie")
    }
    expected = robustness_matrix(["mean", "trimmed_mean"], ["lie"], n=12, f=2, d=20, seeds=[0, 2])
    for c in payload["cells"]:
        assert c["per_seed"] == expected["cells"][(c["rule"], c["attack"])]["per_seed"]
    command = "robustagg matrix --n 12 --f 2 --d 20 --seeds 0 2 --rules mean trimmed_mean --attacks lie"
    assert command in page.read_text(encoding="utf-8") and payload["command"].startswith(command)


@pytest.mark.parametrize("flag", ["-o", "--output"])
def test_cli_old_output_option_still_writes_the_table(flag, tmp_path, capsys):
    out_md = tmp_path / "t.md"
    argv = ["matrix", "--n", "8", "--f", "1", "--d", "5", "--seeds", "0", "--quiet", "--rules", "mean"]
    assert main([*argv, "--attacks", "lie", flag, str(out_md)]) == 0
    captured = capsys.readouterr()
    assert f"{flag} is deprecated, use --out" in captured.err and captured.out == ""
    assert "| rule | none | lie | worst |" in out_md.read_text(encoding="utf-8")
