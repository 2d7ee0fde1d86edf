"""The non-finite policy of docs/conventions.md at every size: rows holding NaN/±Inf, or finite
rows whose squared norm overflows, are excluded and reported by every registered rule at
n = 300 and n = 1000 (past every row threshold of ``robustagg._thresholds``), on both
sides of each size switch, and ``nonfinite="raise"`` raises a ValueError naming the rule.
Huge finite rows never turn an output into NaN or an error that names no rule."""

import numpy as np
import pytest

import robustagg
from robustagg import _thresholds
from robustagg._registry import call_with_supported
from robustagg._validation import nonfinite_mask, sq_norm_limit
from robustagg.testing.strategies import branch_shapes_for

RULE_NAMES = sorted(robustagg.RULES)


def _call(name, G, f, **kw):
    fn = robustagg.get_rule(name)
    extra = dict(f=f, rng=0, **kw)
    if name == "fltrust" and "root_gradient" not in kw:
        finite = G[~nonfinite_mask(np.asarray(G))]
        extra["root_gradient"] = (np.median(finite, axis=0) if len(finite) else np.zeros(G.shape[1])) + 0.01
    return call_with_supported(fn, G, **extra)


def _matrix(n, d, dtype, seed=0):
    rng = np.random.default_rng(seed)
    return (rng.normal(size=(n, d)) + 0.3).astype(dtype)


def _sq_norm(row):
    """A row's squared norm as a Python float (inf when it overflows), computed without overflow
    of the intermediate squares."""
    row = np.asarray(row, dtype=np.float64)
    if not np.isfinite(row).all():
        return np.inf
    s = float(np.max(np.abs(row)))
    return 0.0 if s == 0.0 else s * s * float(np.sum((row / s) ** 2))


def _poison(G, rows):
    """NaN, +Inf, -Inf and (float64) an overflowing finite row, in turn, at ``rows``."""
    G = G.copy()
    for j, i in enumerate(rows):
        kind = j % 4 if G.dtype == np.float64 else j % 3
        if kind == 0:
            G[i, G.shape[1] // 2] = np.nan  # a single NaN among finite values
        elif kind == 1:
            G[i] = np.inf
        elif kind == 2:
            G[i, 0] = -np.inf
        else:
            G[i] *= 1e200  # finite, squared norm overflows float64
    return G


@pytest.mark.slow
@pytest.mark.parametrize("n", [300, 1000])
@pytest.mark.parametrize("name", RULE_NAMES)
def test_nonfinite_rows_excluded_and_reported_at_scale(name, n):
    d = 24
    f = 4
    bad = np.array([0, 7, n // 2, n - 1])
    dtype = np.float64
    G = _poison(_matrix(n, d, dtype), bad)
    out, info = _call(name, G, f, return_info=True)
    assert np.isfinite(out).all(), f"{name}: non-finite output at n = {n}"
    expected = np.zeros(n, dtype=bool)
    expected[bad] = True
    np.testing.assert_array_equal(info.nonfinite, expected)
    assert not info.kept[bad].any()
    # the rule then ran on the finite rows with f' = f - k
    clean = np.delete(G, bad, axis=0)
    np.testing.assert_allclose(out, _call(name, clean, f - bad.size), rtol=1e-9, atol=1e-12)
    with pytest.raises(ValueError, match=f"^{name}: .*nonfinite='raise'"):
        _call(name, G, f, nonfinite="raise")


@pytest.mark.slow
@pytest.mark.parametrize("name", RULE_NAMES)
def test_nonfinite_policy_on_both_sides_of_every_size_switch(name):
    """At each (n, d) on either side of a switch the rule steers through (and the same sizes with
    one row replaced by NaN, so that the finite rows m straddle it too), the output is finite,
    the NaN row is reported, and the result equals the rule on the finite rows."""
    shapes = branch_shapes_for(name, k=1)
    assert shapes, f"no size switch covers {name}"
    for n, d in shapes:
        G = _matrix(n, d, np.float32, seed=n + d)
        f = 1
        out = _call(name, G, f)
        assert np.isfinite(np.asarray(out)).all(), (name, n, d)
        P = G.copy()
        P[n // 3, d // 2] = np.nan
        out, info = _call(name, P, f, return_info=True)
        assert np.isfinite(np.asarray(out)).all(), (name, n, d)
        assert np.flatnonzero(info.nonfinite).tolist() == [n // 3], (name, n, d)
        ref = _call(name, np.delete(P, n // 3, axis=0), 0)
        np.testing.assert_allclose(
            np.asarray(out), np.asarray(ref), rtol=2e-5, atol=1e-6, err_msg=f"{name} {n}x{d}"
        )


def test_branch_shapes_reach_both_sides_of_every_switch():
    """Every entry of BRANCHES is drawn on both sides, with and without one excluded row."""
    for br in _thresholds.BRANCHES:
        for rule in br.rules:
            sides = set()
            for n, d in branch_shapes_for(rule, k=1):
                for m in (n, n - 1):
                    q = {"m": m, "m*m*d": m * m * d, "d": d}[br.quantity]
                    sides.add(q <= br.last_of_lower)
            assert sides == {True, False}, (br.name, rule)


@pytest.mark.parametrize("scale", [1e100, 1e140, 1e150, 1e152, 1e155, 1e160, 1e200, 1e300])
@pytest.mark.parametrize("name", RULE_NAMES)
def test_huge_finite_rows_give_finite_output_or_a_named_error(name, scale):
    n, d, f = 12, 10, 2
    G = _matrix(n, d, np.float64, seed=1)
    G[[2, 9]] *= scale
    out, info = _call(name, G, f, return_info=True)
    assert np.isfinite(out).all(), f"{name}: non-finite output with two rows scaled by {scale:g}"
    overflow = np.array([_sq_norm(row) > sq_norm_limit(n) for row in G])
    np.testing.assert_array_equal(info.nonfinite, overflow)
    # every row huge: the rule either aggregates finitely or refuses with its own ValueError
    H = _matrix(n, d, np.float64, seed=2) * scale
    try:
        out = _call(name, H, f)
    except ValueError as exc:
        assert str(exc).startswith(f"{name}: "), exc
    else:
        assert np.isfinite(out).all(), f"{name}: non-finite output with every row scaled by {scale:g}"


@pytest.mark.parametrize("name", RULE_NAMES)
def test_every_row_nonfinite_is_a_named_error(name):
    G = np.full((8, 4), np.nan)
    with pytest.raises(ValueError, match=f"^{name}: every row"):
        _call(name, G, 1)


def test_nonfinite_mask_matches_a_row_by_row_reference():
    rng = np.random.default_rng(3)
    for n, d in [(5, 3), (300, 7), (40, 9000)]:
        G = rng.normal(size=(n, d))
        rows = rng.choice(n, size=min(n, 5), replace=False)
        G[rows[0], 0] = np.nan
        G[rows[1], -1] = -np.inf
        G[rows[2]] *= 1e160
        limit = np.finfo(np.float64).max / (4 * n)
        # rows on either side of the limit: the cheap pass flags them as large (a value past
        # sqrt(limit / d)), the exact scaled norm decides
        G[rows[3]] = np.sqrt(limit / d) * (1.0 + 1e-9)
        if n > 5:
            G[rows[4] if len(rows) > 4 else 0] = np.sqrt(limit / d) * (1.0 - 1e-9)
            G[1, 0] = np.sqrt(limit) * 0.5  # one huge value, the rest small: under the limit
        expected = np.array([not _sq_norm(G[i]) <= limit for i in range(n)])
        np.testing.assert_array_equal(nonfinite_mask(G), expected)
        assert expected[rows[3]] and not expected[1] or rows[3] == 1
        sub = np.sort(rows)
        np.testing.assert_array_equal(nonfinite_mask(G, sub), expected[sub])
        with np.errstate(over="ignore"):
            G32 = G.astype(np.float32)  # the 1e160 row becomes +-inf
        np.testing.assert_array_equal(nonfinite_mask(G32), ~np.isfinite(G32).all(axis=1))
