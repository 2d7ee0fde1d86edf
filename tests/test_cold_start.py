"""Cold start: ``import robustagg`` loads no kernel, SciPy subpackage or scikit-learn; ``robustagg
warmup`` fills Numba's cache; the cache works when the package is installed read-only
(docs/performance.md).

Import checks run in fresh interpreters (``subprocess``): the test process has long imported
everything."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

import robustagg

ROOT = Path(__file__).resolve().parents[1]
_TIMEOUT = 600  # a cold Numba cache compiles kernels in the subprocess


def _python(code: str, *, env: dict[str, str] | None = None, cwd: Path | None = None) -> str:
    """Run ``code`` in a fresh interpreter; its stdout (stderr joins the error on failure)."""
    proc = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        capture_output=True,
        text=True,
        timeout=_TIMEOUT,
        env=env,
        cwd=cwd,
    )
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def _last_json(out: str):
    return json.loads(out.strip().splitlines()[-1])


# ------------------------------------------------------------------------------ the import

_HEAVY_SCIPY = (
    "scipy.linalg",
    "scipy.sparse",
    "scipy.special",
    "scipy.spatial",
    "scipy.cluster",
    "scipy.stats",
)


def test_import_loads_no_kernel_scipy_subpackage_or_sklearn():
    """After ``import robustagg`` (NumPy imported first): no ``robustagg.kernels`` module, no
    scikit-learn, no SciPy module beyond those Numba's own import brings (the threading layer is
    prepared at import, which imports Numba), and the threading-layer setup did run."""
    report = _last_json(
        _python(
            """
            import json, sys
            import numpy
            import robustagg, robustagg._threads
            print(json.dumps({
                "modules": sorted(sys.modules),
                "setup_done": robustagg._threads._setup_done,
            }))
            """
        )
    )
    numba_only = set(
        _last_json(_python("import json, sys, numpy, numba; print(json.dumps(sorted(sys.modules)))"))
    )
    mods = set(report["modules"])
    assert not [m for m in mods if m == "robustagg.kernels" or m.startswith("robustagg.kernels.")]
    assert not [m for m in mods if m == "sklearn" or m.startswith("sklearn.")]
    assert not [m for m in mods if m.startswith(_HEAVY_SCIPY)]
    assert {m for m in mods if m.split(".")[0] == "scipy"} <= numba_only
    assert report["setup_done"] is True


def test_registries_and_public_names_work_before_the_kernels_load():
    """Every rule, pre-aggregator and attack is registered by the import alone (the same tables
    as once every kernel module is imported); every name of ``__all__`` resolves, ``dir`` lists
    it, ``from robustagg import *`` binds it; a call then loads the kernels and gives the right
    result, and the rule modules then hold the kernel modules themselves."""
    report = _last_json(
        _python(
            """
            import json, sys
            import numpy as np
            import robustagg
            tables = lambda: {k: sorted(getattr(robustagg, k)) for k in ("RULES", "PREAGGREGATORS", "ATTACKS")}
            before = tables()
            loaded_before = "robustagg.kernels" in sys.modules
            names = list(robustagg.__all__)
            missing_attr = [n for n in names if getattr(robustagg, n, None) is None]
            listed = set(dir(robustagg))
            ns = {}
            exec("from robustagg import *", ns)
            G = np.random.default_rng(0).standard_normal((9, 7)).astype(np.float32)
            med = robustagg.median(G)
            import robustagg.kernels, robustagg.attacks.mimic, robustagg.clustering, robustagg.rules.subset
            after = tables()
            print(json.dumps({
                "before": before, "after": after, "loaded_before": loaded_before,
                "missing_attr": missing_attr, "not_in_dir": sorted(set(names) - listed),
                "not_star_imported": sorted(set(names) - set(ns)), "kernels_in_dir": "kernels" in listed,
                "median_ok": bool(np.array_equal(med, np.median(G, axis=0).astype(np.float32))),
                "kernels_attr": robustagg.kernels is sys.modules["robustagg.kernels"],
                "bound": [
                    sys.modules[m].__dict__[a] is sys.modules[k]
                    for m, a, k in [
                        ("robustagg.rules.coordinatewise", "kernels", "robustagg.kernels"),
                    ]
                ],
            }))
            """
        )
    )
    assert report["loaded_before"] is False
    assert report["before"] == report["after"]
    assert set(report["before"]["RULES"]) >= {"mean", "median", "krum", "signguard", "dnc", "caf", "fltrust"}
    assert report["missing_attr"] == [] and report["not_in_dir"] == [] and report["not_star_imported"] == []
    assert report["kernels_in_dir"] is True and report["kernels_attr"] is True
    assert report["median_ok"] is True
    assert report["bound"] == [True]


def test_float32_rules_compile_the_non_finite_screen_without_the_magnitude_count():
    """float32 input is screened for NaN/Inf only (no finite float32 row reaches the squared-norm
    limit, the validation layer passes ``bound = inf``): a float32 rule's first call reaches the
    screen without the magnitude count, which compiles in about half the time, and never the
    bounded one; float64 reaches the bounded one. Same flags either way (fresh interpreter: the
    test process may hold both)."""
    report = _last_json(
        _python(
            """
            import json
            import numpy as np
            import robustagg
            G = np.random.default_rng(0).standard_normal((12, 300))
            G[3, 7] = np.nan
            a = robustagg.median(G.astype(np.float32))
            from robustagg.kernels import _rows
            after32 = (len(_rows._screen_nonfinite.signatures), len(_rows._screen_bounded.signatures))
            b = robustagg.median(G)
            rows = np.arange(12, dtype=np.int64)
            flags = [
                _rows.screen_rows(X, rows, bound).tolist()
                for X in (G.astype(np.float32), G) for bound in (np.inf, 1e300)
            ]
            print(json.dumps({
                "after32": after32, "bounded64": len(_rows._screen_bounded.signatures),
                "finite": bool(np.isfinite(a).all() and np.isfinite(b).all()), "flags": flags,
            }))
            """
        )
    )
    assert report["after32"] == [1, 0]
    assert report["bounded64"] >= 1 and report["finite"]
    expected = [1 if i == 3 else 0 for i in range(12)]
    assert report["flags"] == [expected] * 4


def test_lazy_module_is_replaced_by_the_module_at_first_use():
    from robustagg._lazy import LazyModule

    ns: dict = {}
    ns["colorsys_"] = LazyModule("colorsys", ns, "colorsys_")
    assert "not imported yet" in repr(ns["colorsys_"])
    assert ns["colorsys_"].rgb_to_hsv(1.0, 0.0, 0.0) == (0.0, 1.0, 1.0)
    assert ns["colorsys_"] is sys.modules["colorsys"]
    with pytest.raises(ModuleNotFoundError):
        _ = LazyModule("robustagg.no_such_module", {}, "x").anything


# ------------------------------------------------------------------------------ warmup


def test_warmup_inputs_reach_both_sides_of_every_switch():
    """For every rule, the warmup's shapes include those of ``branch_shapes_for(rule, k=1)``,
    once each (a read-only copy would reach the same kernels); float64 adds a row past the
    non-finite limit."""
    from robustagg.testing.strategies import branch_shapes_for
    from robustagg.warmup import warmup_inputs

    for name in robustagg.RULES:
        inputs = warmup_inputs("rule", name, "float32")
        finite_shapes = [G.shape for G in inputs if np.isfinite(G).all()]
        assert set(branch_shapes_for(name, k=1)) <= set(finite_shapes), name
        assert len(finite_shapes) == len(set(finite_shapes)), name
        assert all(G.dtype == np.float32 for G in inputs)
    bad64 = warmup_inputs("rule", "mean", "float64")[-1]
    assert np.isnan(bad64).any() and np.nanmax(np.abs(bad64)) > 1e150


@pytest.mark.parametrize("name", ["mean", "median", "krum", "signguard", "fltrust"])
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_a_read_only_input_reaches_the_kernels_a_writable_one_did(name, dtype, rng):
    """After a call on a writable matrix, the same call on a read-only one (a JAX array, a
    memory map) uses no new kernel signature, nothing compiled and nothing loaded from the
    cache, because the kernels only ever see read-only arrays (before, a read-only input had
    kernels of its own), and gives the same result."""
    from robustagg.bench import call_item
    from robustagg.warmup import cache_counts

    G = (rng.standard_normal((13, 300)) + 0.5).astype(dtype)
    out = call_item("rule", robustagg.RULES[name], G, 2, 0)
    before = cache_counts()
    R = G.copy()
    R.setflags(write=False)
    again = call_item("rule", robustagg.RULES[name], R, 2, 0)
    assert cache_counts() == before, name
    np.testing.assert_array_equal(np.asarray(again), np.asarray(out))
    assert G.flags.writeable  # the caller's array is left as it was


@pytest.mark.slow  # compiles FLTrust's kernels when the cache does not hold them
def test_warmup_runs_a_rule_with_a_side_input_on_every_input_without_error():
    """FLTrust needs a root gradient: the warmup derives it from the input's ordinary rows, so
    the inputs with a NaN row and a row past the non-finite limit run too."""
    from robustagg.warmup import warm_item

    res = warm_item("rule", "fltrust", ["float32", "float64"])
    assert res["errors"] == []
    assert set(res["seconds"]) == {"float32", "float64"}


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--rules", "no_such_rule"], "argument --rules: unknown rule 'no_such_rule'"),
        (["--attacks", "nope*"], "warmup: --attacks: unknown attack 'nope*'"),
        (["--preaggregators", "nnm,nope"], "warmup: --preaggregators: unknown preaggregator 'nope'"),
        (["--jobs", "0"], "argument --jobs: must be a positive integer, got '0'"),
        (["--dtypes", "float16"], "argument --dtypes: invalid choice: 'float16'"),
    ],
)
def test_warmup_refuses_bad_arguments_clearly(argv, message, capsys):
    from robustagg.cli import main

    try:
        rc = main(["warmup", *argv])
    except SystemExit as exc:  # argparse's exit
        rc = exc.code
    assert rc == 2
    assert message in capsys.readouterr().err


def _cli(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "robustagg", *args], capture_output=True, text=True, timeout=_TIMEOUT, env=env
    )


def _warmup_lines(stdout: str) -> dict[str, tuple[int, int]]:
    """``{name: (compiled, from cache)}`` of the per-item lines."""
    out = {}
    for line in stdout.splitlines():
        parts = line.split()
        if len(parts) > 2 and parts[0] in ("rule", "preaggregator", "attack") and "compiled" in parts:
            i = parts.index("compiled")
            out[parts[1]] = (int(parts[i + 1].rstrip(",")), int(parts[i + 4]))
    return out


@pytest.mark.slow  # compiles mean and median for float32/float64 from an empty cache
def test_warmup_fills_the_cache_for_the_selected_rules(tmp_path):
    """``robustagg warmup --rules mean median`` in an empty ``NUMBA_CACHE_DIR`` prints one line per
    rule (and no other item) and a total, and compiles; a second run compiles nothing (every
    kernel the two rules reach on their warmup inputs loads from the cache), with one job or
    two."""
    env = dict(os.environ, NUMBA_CACHE_DIR=str(tmp_path / "cache"))
    first = _cli(["warmup", "--rules", "mean", "median"], env)
    assert first.returncode == 0, first.stderr
    lines = _warmup_lines(first.stdout)
    assert sorted(lines) == ["mean", "median"]
    assert all(compiled > 0 for compiled, _ in lines.values())
    assert first.stdout.splitlines()[-1].startswith("total: 2 item(s), ")
    for jobs in ("1", "2"):
        again = _cli(["warmup", "--rules", "mean", "median", "--jobs", jobs], env)
        assert again.returncode == 0, again.stderr
        lines = _warmup_lines(again.stdout)
        assert sorted(lines) == ["mean", "median"]
        assert all(compiled == 0 and loaded > 0 for compiled, loaded in lines.values()), again.stdout
        if jobs == "2":
            assert "check (one process): 0 kernel signature(s) compiled again" in again.stdout


# ------------------------------------------------------------------------ read-only install


def _read_only_runner(target: Path) -> list[str] | None:
    """A command prefix under which ``target`` cannot be written, or None where this machine
    cannot arrange it: ``chmod -R a-w`` for an ordinary user; for root (who writes anyway) a
    read-only bind mount in a private mount namespace."""
    if os.geteuid() != 0:
        subprocess.run(["chmod", "-R", "a-w", str(target)], check=True)
        return []
    unshare = shutil.which("unshare")
    if unshare is None:
        return None
    script = f'mount --bind "{target}" "{target}" && mount -o remount,bind,ro "{target}" && exec "$@"'
    probe = subprocess.run(
        [unshare, "--mount", "sh", "-c", script, "sh", "sh", "-c", f'! touch "{target}/probe" 2>/dev/null'],
        capture_output=True,
    )
    if probe.returncode != 0:
        return None
    return [unshare, "--mount", "sh", "-c", script, "sh"]


_PROBE = """
import json, sys
import numpy as np
import robustagg
from robustagg.warmup import cache_counts, _dispatchers
G = np.random.default_rng(0).standard_normal((11, 64)).astype(np.float32)
out = robustagg.median(G)
compiled, loaded = cache_counts()
paths = sorted({d.stats.cache_path for d in _dispatchers() if d.signatures})
print(json.dumps({"file": robustagg.__file__, "compiled": compiled, "loaded": loaded, "paths": paths,
                  "ok": bool(np.array_equal(out, np.median(G, axis=0).astype(np.float32)))}))
"""


@pytest.mark.slow  # builds the wheel and compiles the median's kernels from an empty cache
@pytest.mark.parametrize("where", ["user cache", "NUMBA_CACHE_DIR"])
def test_read_only_install_caches_in_the_user_cache_or_numba_cache_dir(tmp_path, where):
    """The wheel installed into a directory nobody can write: Numba cannot use ``__pycache__``
    next to the sources and falls back to ``NUMBA_CACHE_DIR`` when set, otherwise to the user's
    cache directory (``$HOME/.cache/numba``); the second fresh process loads every kernel from
    there and compiles none."""
    wheel_dir, target, home = tmp_path / "wheel", tmp_path / "site", tmp_path / "home"
    for p in (wheel_dir, target, home):
        p.mkdir()
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            str(ROOT),
            "--no-deps",
            "--no-build-isolation",
            "-q",
            "-w",
            str(wheel_dir),
        ],
        check=True,
        cwd=wheel_dir,
        timeout=_TIMEOUT,
    )
    (wheel,) = wheel_dir.glob("robustagg-*.whl")
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "--no-deps",
            "--no-index",
            "-q",
            "--target",
            str(target),
            str(wheel),
        ],
        check=True,
        timeout=_TIMEOUT,
    )
    prefix = _read_only_runner(target)
    if prefix is None:
        pytest.skip("cannot make the install read-only here (root without a private mount namespace)")
    env = {
        k: v for k, v in os.environ.items() if k not in ("NUMBA_CACHE_DIR", "XDG_CACHE_HOME", "PYTHONPATH")
    }
    env.update(HOME=str(home), PYTHONPATH=str(target))
    cache = home / ".cache" / "numba"
    if where == "NUMBA_CACHE_DIR":
        cache = tmp_path / "numba-cache"
        env["NUMBA_CACHE_DIR"] = str(cache)
    try:
        runs = []
        for _ in range(2):
            proc = subprocess.run(
                [*prefix, sys.executable, "-c", _PROBE], capture_output=True, text=True, timeout=_TIMEOUT,
                env=env, cwd=tmp_path,
            )  # fmt: skip
            assert proc.returncode == 0, proc.stderr
            runs.append(_last_json(proc.stdout))
    finally:
        if os.geteuid() != 0:
            subprocess.run(["chmod", "-R", "u+w", str(target)], check=True)
    first, second = runs
    assert Path(first["file"]).resolve().is_relative_to(target.resolve())  # the installed copy
    assert first["ok"] and second["ok"]
    assert first["compiled"] > 0 and first["loaded"] == 0
    # (a kernel called only from other kernels is part of their cached code: loaded <= compiled)
    assert second["compiled"] == 0 and 0 < second["loaded"] <= first["compiled"]
    assert first["paths"] and all(Path(p).resolve().is_relative_to(cache.resolve()) for p in first["paths"])
    assert not list(target.rglob("*.nbi"))  # nothing was written next to the sources


# ------------------------------------------------------------------------- bench's figures


@pytest.mark.slow  # compiles mean (float32) twice from empty caches: the probe and the warmup
def test_bench_compile_suite_reports_the_cold_start_figures():
    """``measure_compile`` gives, for the rule and dtype, the import time, the first call with a
    cold and with a warm cache, the steady call and the warmup's time; the cold interpreter
    compiled kernels, the warm one loaded them from the cache and compiled none."""
    from robustagg import bench

    entry = bench.measure_compile("rule", ["mean"], ["float32"], timeout=_TIMEOUT, warmup=True)["mean"][
        "float32"
    ]
    assert "error" not in entry and "warmup_error" not in entry, entry
    for key in (
        "import_s",
        "first_cold_s",
        "first_warm_s",
        "steady_s",
        "compile_s",
        "cache_load_s",
        "warmup_s",
    ):
        assert isinstance(entry[key], float) and 0 <= entry[key] < _TIMEOUT, (key, entry)
    assert entry["compiled"] > 0 and entry["compiled_warm"] == 0 and entry["loaded"] > 0
    table = bench.format_cold_start({"rule:mean": {"float32": entry}})
    assert "rule:mean" in table and "1st cold" in table and "warmup" in table
