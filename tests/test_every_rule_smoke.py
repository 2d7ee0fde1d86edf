"""Every registered rule, once, in the fast loop (``python -m pytest -m "not slow"``).

The property battery (tests/test_testing_toolkit.py) checks every rule on both sides of every
size switch and is marked slow; this file is what keeps each entry of ``robustagg.RULES`` in the
fast loop: one small matrix with one NaN row and two blatant Byzantine rows, both float dtypes.
A rule registered later is picked up here by name; one that needs an argument beyond
``(grads, f, rng)`` gets it from ``EXTRA_ARGUMENTS``.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import robustagg
from robustagg._registry import call_with_supported

ROOT = Path(__file__).resolve().parents[1]

N, F, D = 15, 3, 40  # bulyan's bound n >= 4f + 3 holds with equality


def _fltrust_arguments(honest_mean: np.ndarray, dtype) -> dict:
    # the server's root gradient: a clean estimate of the honest direction
    root = honest_mean + np.random.default_rng(7).normal(0.0, 0.05, size=honest_mean.shape)
    return {"root_gradient": root.astype(dtype)}


# rules with a required argument beyond (grads, f, rng): name -> (honest mean, dtype) -> kwargs
EXTRA_ARGUMENTS = {"fltrust": _fltrust_arguments}


def _scenario(dtype):
    """Rows 3.. honest around mu; row 0 NaN; rows 1-2 send -10 x the honest mean (f = 3 covers all)."""
    rng = np.random.default_rng(2024)
    mu = np.full(D, 0.5)
    G = (mu + rng.normal(0.0, 0.3, size=(N, D))).astype(dtype)
    honest_mean = G[F:].astype(np.float64).mean(axis=0)
    G[0] = np.nan
    G[1:F] = (-10.0 * honest_mean).astype(dtype)
    return G, honest_mean


def _call(name, G, honest_mean, **kwargs):
    rule = robustagg.RULES[name]
    extra = EXTRA_ARGUMENTS[name](honest_mean, G.dtype) if name in EXTRA_ARGUMENTS else {}
    return call_with_supported(rule, G, f=F, rng=0, **extra, **kwargs)


@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["float32", "float64"])
@pytest.mark.parametrize("name", sorted(robustagg.RULES))
def test_rule_smoke(name, dtype):
    G, honest_mean = _scenario(dtype)
    before = G.copy()
    out, info = _call(name, G, honest_mean, return_info=True)

    assert isinstance(out, np.ndarray) and out.shape == (D,) and out.dtype == dtype
    assert np.isfinite(out).all(), f"{name}: non-finite aggregate"
    np.testing.assert_array_equal(G, before)  # the caller's matrix is untouched (NaN == NaN here)
    # the NaN row is Byzantine: excluded and reported
    assert info.nonfinite.shape == (N,) and info.nonfinite[0] and not info.nonfinite[1:].any()
    assert info.kept.shape == (N,) and info.kept.dtype == bool and not info.kept[0]
    # the same seed gives the same bits, without diagnostics too
    np.testing.assert_array_equal(_call(name, G, honest_mean), out)

    finite_mean = G[1:].astype(np.float64).mean(axis=0)  # what the plain mean of the kept rows is
    if name == "mean":
        np.testing.assert_allclose(out, finite_mean, rtol=1e-5 if dtype == np.float32 else 1e-12)
    else:  # every robust rule resists two rows at -10x the honest mean better than the mean does
        err = np.linalg.norm(out.astype(np.float64) - honest_mean)
        assert err < 0.5 * np.linalg.norm(finite_mean - honest_mean), (name, err)


def test_the_fast_loop_calls_every_registered_rule():
    """The ``-m "not slow"`` selection of this file holds a smoke test for every rule and dtype."""
    args = ["--collect-only", "-q", "-m", "not slow", "-p", "no:cacheprovider", str(Path(__file__))]
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    ids = re.findall(r"::test_rule_smoke\[(\w+)-(float32|float64)\]", proc.stdout)
    expected = {(name, dtype) for name in robustagg.RULES for dtype in ("float32", "float64")}
    missing = expected - set(ids)
    assert not missing, f"rules the fast loop no longer calls: {sorted(missing)}"
