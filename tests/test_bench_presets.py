"""The presets of ``robustagg bench`` (the one benchmark entry point) and the ``robustagg
throughput`` alias of its throughput preset. No timed assertions: only which rows, columns and
options come out."""

from __future__ import annotations

import pytest

from robustagg import bench
from robustagg.bench.presets import DEFAULTS, preset_settings
from robustagg.cli import build_parser, main


def test_help_lists_every_preset(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["bench", "--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    assert "--preset NAME" in out
    for name, preset in bench.PRESETS.items():
        assert f"\n  {name} " in out, name
        assert preset.summary.split()[0] in out
    assert {"full", "quick", "targets", "throughput"} <= set(bench.PRESETS)


def test_the_throughput_alias_says_what_it_is_an_alias_of(capsys):
    with pytest.raises(SystemExit):
        main(["throughput", "--help"])
    assert "robustagg bench --preset throughput" in " ".join(capsys.readouterr().out.split())


def _table(path) -> tuple[list[str], list[list[str]]]:
    """The header lines and, per rule, the columns that are not timings (name, f used)."""
    lines = path.read_text(encoding="utf-8").splitlines()
    return lines[:2], [line.split()[:2] for line in lines[2:]]


def test_the_throughput_preset_and_its_alias_print_the_same_table(tmp_path, capsys):
    common = ["--n", "12", "--d", "40", "--repeats", "1", "--rules", "mean", "median", "bulyan", "fltrust"]
    a, b = tmp_path / "alias.txt", tmp_path / "preset.txt"
    assert main(["throughput", *common, "--out", str(a)]) == 0
    assert main(["bench", "--preset", "throughput", *common, "--out", str(b)]) == 0
    assert capsys.readouterr().out == ""  # both tables went to their files
    head_a, rows_a = _table(a)
    head_b, rows_b = _table(b)
    assert head_a == head_b
    assert (
        head_a[0]
        == "robustagg throughput: n=12 d=40 f=2 dtype=float32 (LIE attack, z=0.3), median of 1 calls"
    )
    assert head_a[1].split() == ["rule", "f", "used", "first", "call", "[s]", "time", "[s]", "GB/s"]
    assert rows_a == rows_b
    # bulyan takes f = 2 at n = 12 (n >= 4f + 3); fltrust is skipped: it needs a root gradient
    assert rows_a == [["mean", "-"], ["median", "-"], ["bulyan", "2"], ["fltrust", "-"]]  # the order given
    assert "skipped" in b.read_text(encoding="utf-8").splitlines()[-1]


def test_the_throughput_preset_prints_one_table_per_size(tmp_path):
    out = tmp_path / "t.txt"
    argv = ["bench", "--preset", "throughput", "--n", "6,8", "--d", "16", "--repeats", "1", "--rules", "mean"]
    assert main([*argv, "--out", str(out)]) == 0
    heads = [
        ln for ln in out.read_text(encoding="utf-8").splitlines() if ln.startswith("robustagg throughput:")
    ]
    assert [h.split()[2] for h in heads] == ["n=6", "n=8"]


def test_the_throughput_preset_refuses_json(tmp_path, capsys):
    assert main(["bench", "--preset", "throughput", "--json", str(tmp_path / "r.json")]) == 2
    assert "--json is not available with the throughput preset" in capsys.readouterr().err
    assert not (tmp_path / "r.json").exists()


def _settings(*argv: str) -> tuple[str, dict]:
    from robustagg.bench.command import _settings

    return _settings(build_parser().parse_args(["bench", *argv]))


def test_no_preset_is_the_full_sweep():
    table, kw = _settings()
    assert table == "sweep" and kw == DEFAULTS


def test_quick_and_targets_are_presets_and_options_override_them():
    assert _settings("--quick") == _settings("--preset", "quick")
    assert _settings("--targets") == _settings("--preset", "targets")
    _, kw = _settings("--targets")
    assert kw["cells"] == bench.TARGET_CELLS and kw["attacks"] == ["none"] and kw["dtypes"] == ("float32",)
    _, kw = _settings("--targets", "--attacks", "lie", "--n", "50")
    assert kw["attacks"] == ["lie"] and kw["n"] == [50] and kw["cells"] is None  # --n: the grid, no cells
    _, kw = _settings("--quick", "--targets")  # in this order: the target cells at the quick repeats
    assert kw["cells"] == bench.TARGET_CELLS and kw["repeats"] == 3 and kw["compile_times"] is False
    _, kw = _settings("--preset", "docs-scaling-n", "--repeats", "4", "--no-memory", "--references", "none")
    assert kw["n"] == (10, 50, 200) and kw["exclude"] == "smea,mda"
    assert kw["repeats"] == 4 and kw["memory"] is False and kw["references"] == []


def test_presets_hold_only_the_sweeps_options():
    for preset in bench.PRESETS.values():
        assert set(preset.settings) <= set(DEFAULTS), preset.name
        assert preset.table in ("sweep", "throughput")
    with pytest.raises(ValueError, match="unknown preset 'nope'"):
        preset_settings(["nope"], {})
    with pytest.raises(ValueError, match="print different tables"):
        preset_settings(["quick", "throughput"], {})


def test_list_follows_the_preset(capsys):
    assert main(["bench", "--preset", "docs-byzfl", "--list"]) == 0
    listed = capsys.readouterr().out.split()
    assert listed[1::2] == sorted(bench.PRESETS["docs-byzfl"].settings["rules"])
    assert set(listed[0::2]) == {"rule"}
