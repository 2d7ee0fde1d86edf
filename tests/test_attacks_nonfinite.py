"""Attacks on matrices with non-finite honest rows (docs/conventions.md, "Attacks and non-finite
honest rows"): statistics over the finite rows only, Byzantine rows never NaN/Inf unless the
attack means it (``inf``, ``nan``), benign rows returned as they came, and too few finite rows a
``ValueError`` naming the attack.

Oracle: the attack applied to the matrix with the non-finite benign rows removed (what every
rule aggregates), with the same seed -- no attack's random draws depend on those rows -- and the
naive references of ``robustagg.testing.naive_attacks``, which compute over the finite rows with
their own row-by-row check.
"""

import warnings

import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

import robustagg
from robustagg import attacks
from robustagg._registry import call_with_supported
from robustagg.testing import naive_attacks as naive

NAMES = sorted(robustagg.ATTACKS)
MEANT = {"inf", "nan"}  # the attacks that mean to send non-finite rows
# What each attack needs: the number of finite reference rows of its statistics, or "own" (every
# Byzantine row's own honest gradient must be finite), or 0 (no statistic at all).
NEEDS = {
    "byzmean": 2,
    "fang": 1,
    "gaussian": 0,
    "inf": 0,
    "ipm": 1,
    "lie": 2,
    "line_search": 2,
    "mimic": 1,
    "min_max": 2,
    "min_sum": 2,
    "nan": 0,
    "noise": "own",
    "reverse_scaled": "own",
    "sign_flip": "own",
    "sign_matching": 1,
}
# statistics over the benign rows only (the others: over the honest gradients of all n clients)
BENIGN_STATISTICS = {"ipm", "mimic"}


def run_attack(name, G, f, rng=0, **options):
    """A registered attack with small search settings (line_search attacks the mean)."""
    extra = {"grid": (0.5, 1.0, 2.0), "refine": 3, "extend": 4} if name == "line_search" else {}
    return call_with_supported(robustagg.ATTACKS[name], G, f, rng=rng, rule="mean", **extra, **options)


def spoil(G, rows, kind, rng):
    """Make ``rows`` of G non-finite for the library: a NaN, a +Inf or (float64) a 1e160 scale."""
    G = G.copy()
    for i in rows:
        if kind == "huge":
            G[i] *= 1e160  # finite values, squared norm past float64.max / (4 n)
        else:
            G[i, rng.integers(G.shape[1])] = np.nan if kind == "nan" else np.inf
    return G


def check_against_removed(name, G, byz, seed, **options):
    """The attack's output on G: Byzantine rows finite (unless meant), benign rows unchanged, and
    Byzantine rows equal to those of the attack on G without its non-finite benign rows."""
    out = np.asarray(run_attack(name, G, byz, rng=seed, **options))
    assert out.dtype == G.dtype and out.shape == G.shape
    np.testing.assert_array_equal(out[~byz], G[~byz])  # NaN, Inf and 1e160 rows as they came
    if name in MEANT:
        assert not np.isfinite(out[byz]).any()
        return
    assert np.isfinite(out[byz]).all(), f"{name}: non-finite Byzantine rows"
    keep = byz | naive.naive_finite_rows(G)
    ref = np.asarray(run_attack(name, G[keep], byz[keep], rng=seed, **options))
    tol = 1e-6 if G.dtype == np.float32 else 1e-9
    scale = np.abs(ref[byz[keep]]).max() if byz.any() else 1.0
    np.testing.assert_allclose(out[byz], ref[byz[keep]], rtol=tol, atol=tol * scale)


# ---------------------------------------------------------------------------------------------
# every attack, n in {12, 300}, float32/float64, NaN / +Inf / 1e160 rows
# ---------------------------------------------------------------------------------------------
def test_every_registered_attack_is_covered():
    assert set(NEEDS) == set(robustagg.ATTACKS)


@pytest.mark.filterwarnings("error::RuntimeWarning")
@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("n", [12, 300])
@pytest.mark.parametrize(
    "dtype, kind",
    # a float32 row cannot reach the squared-norm limit: "huge" is float64 only
    [
        (np.float32, "nan"),
        (np.float32, "inf"),
        (np.float64, "nan"),
        (np.float64, "inf"),
        (np.float64, "huge"),
    ],
)
def test_nonfinite_benign_rows_are_left_out(name, n, dtype, kind):
    rng = np.random.default_rng(n)
    d = 7
    G = (0.4 * rng.normal(size=d) + rng.normal(size=(n, d))).astype(dtype)
    f = n // 4
    byz = np.arange(n) < f
    k = 1 if n == 12 else 9  # one or several non-finite benign rows
    bad = rng.choice(np.arange(f, n), size=k, replace=False)
    G = spoil(G, bad, kind, rng)
    check_against_removed(name, G, byz, seed=5)


@pytest.mark.filterwarnings("error::RuntimeWarning")
@settings(max_examples=20)
@given(
    name=st.sampled_from(NAMES),
    n=st.integers(5, 16),
    d=st.integers(1, 6),
    dtype=st.sampled_from([np.float32, np.float64]),
    seed=st.integers(0, 2**32 - 1),
    data=st.data(),
)
def test_nonfinite_rows_anywhere(name, n, d, dtype, seed, data):
    """Any Byzantine mask; non-finite benign rows and (except for the attacks that send a function
    of their own gradient) non-finite honest gradients of Byzantine rows, of every kind."""
    rng = np.random.default_rng(seed)
    G = (rng.uniform(-1, 1) * rng.normal(size=d) + rng.normal(size=(n, d))).astype(dtype)
    byz = np.array(data.draw(st.lists(st.booleans(), min_size=n, max_size=n)))
    benign = np.flatnonzero(~byz)
    needed = NEEDS[name]
    spare = benign.size - (needed if isinstance(needed, int) else 0)
    assume(spare >= 1 and byz.any())
    k = data.draw(st.integers(1, spare))
    bad = list(rng.choice(benign, size=k, replace=False))
    if needed != "own" and byz.any() and data.draw(st.booleans()):
        bad.append(int(rng.choice(np.flatnonzero(byz))))
    kinds = ["nan", "inf"] + (["huge"] if dtype == np.float64 else [])
    G = spoil(G, bad, data.draw(st.sampled_from(kinds)), rng)
    options = {"z": 0.5} if name in ("lie", "byzmean") and (n - k) // 2 + 1 <= byz.sum() else {}
    check_against_removed(name, G, byz, seed=seed % 1000, **options)


# ---------------------------------------------------------------------------------------------
# against the naive references (their own finiteness check, their own formulas)
# ---------------------------------------------------------------------------------------------
@pytest.mark.filterwarnings("error::RuntimeWarning")
@settings(max_examples=25)
@given(
    n=st.integers(6, 14),
    d=st.integers(1, 6),
    seed=st.integers(0, 2**32 - 1),
    kind=st.sampled_from(["nan", "inf", "huge"]),
    benign_only=st.booleans(),
    data=st.data(),
)
def test_match_naive_references(n, d, seed, kind, benign_only, data):
    rng = np.random.default_rng(seed)
    G = 0.5 * rng.normal(size=d) + rng.normal(size=(n, d))
    f = data.draw(st.integers(1, n // 2 - 1))
    byz = np.zeros(n, dtype=bool)
    byz[rng.choice(n, size=f, replace=False)] = True
    bad = rng.choice(np.flatnonzero(~byz), size=data.draw(st.integers(1, n - f - 2)), replace=False)
    if data.draw(st.booleans()):  # a Byzantine client's honest gradient too
        bad = np.append(bad, rng.choice(np.flatnonzero(byz)))
    G = spoil(G, bad, kind, rng)
    tol = {"rtol": 1e-9, "atol": 1e-12}
    np.testing.assert_allclose(attacks.ipm(G, byz, eps=0.5), naive.naive_ipm(G, byz, 0.5), **tol)
    np.testing.assert_allclose(
        attacks.lie(G, byz, z=0.7, benign_only=benign_only), naive.naive_lie(G, byz, 0.7, benign_only), **tol
    )
    n_rule = int(byz.sum() + (~byz & naive.naive_finite_rows(G)).sum())
    if n_rule // 2 + 1 > f:  # Eq. (2) is finite
        np.testing.assert_allclose(attacks.lie(G, byz), naive.naive_lie(G, byz), **tol)
    finite_benign = ~byz & naive.naive_finite_rows(G)
    g1 = -2.0 * G[finite_benign].mean(axis=0)
    np.testing.assert_allclose(attacks.byzmean(G, byz, g1=g1), naive.naive_byzmean(G, byz, g1), **tol)
    for kind_ in ("min_max", "min_sum"):
        fast, info = getattr(attacks, kind_)(G, byz, benign_only=benign_only, return_info=True)
        slow, gamma = getattr(naive, f"naive_{kind_}")(G, byz, "std", benign_only)
        if gamma == 0.0 or info["gamma"] == 0.0:
            continue
        np.testing.assert_allclose(info["gamma"], gamma, rtol=1e-6)
        np.testing.assert_allclose(fast[byz], slow[byz], rtol=1e-6, atol=1e-9)


def test_byzmean_mean_over_the_rows_a_rule_aggregates_is_g1():
    rng = np.random.default_rng(1)
    G = rng.normal(size=(10, 4))
    G[[6, 8], 1] = np.nan
    g1 = rng.normal(size=4)
    out = attacks.byzmean(G, 3, g1=g1)
    kept = np.isfinite(out).all(axis=1)
    assert kept.sum() == 8
    np.testing.assert_allclose(out[kept].mean(axis=0), g1, rtol=1e-12, atol=1e-12)
    np.testing.assert_array_equal(out[[6, 8]], G[[6, 8]])


def test_lie_eq2_counts_the_rows_a_rule_aggregates():
    rng = np.random.default_rng(2)
    G = rng.normal(size=(20, 5))
    G[[15, 17, 19]] = np.inf
    np.testing.assert_array_equal(attacks.lie(G, 5), attacks.lie(G, 5, z=attacks.lie_z(17, 5)))
    # n' = 14 rows a rule aggregates: f = 8 >= floor(14/2 + 1) makes Eq. (2) infinite
    G[10:13, 0] = np.nan
    with pytest.raises(ValueError, match=r"lie: .*Pass z explicitly.*8 Byzantine rows and the 6 finite"):
        attacks.lie(G, 8)


def test_mimic_never_copies_a_nonfinite_row():
    rng = np.random.default_rng(3)
    G = rng.normal(scale=0.1, size=(8, 5))
    G[:, 0] += np.linspace(-1.0, 1.0, 8)
    G[7, 0] = 1e200  # the most extreme client, but non-finite for the library (squared norm)
    G[6, 2] = np.nan
    out = attacks.mimic(G, 2)
    t = attacks.mimic_target(G, 2)
    assert t not in (6, 7)
    np.testing.assert_array_equal(out[:2], np.tile(G[t], (2, 1)))
    assert t == attacks.mimic_target(G[:6], 2)
    with pytest.raises(ValueError, match=r"mimic: argument 'target'=6 .*NaN/Inf"):
        attacks.mimic(G, 2, target=6)


def test_line_search_evaluates_the_rule_on_the_finite_rows():
    """A plain NumPy rule (no non-finite policy of its own) sees only the Byzantine rows and the
    finite benign rows, told the attack's f; the search equals the one on the matrix without the
    non-finite benign rows."""
    seen = []

    def coordinate_median(grads, f):
        X = np.asarray(grads)
        seen.append((X.shape[0], f, bool(np.isfinite(X).all())))
        return np.median(X, axis=0)

    rng = np.random.default_rng(6)
    G = 0.5 + rng.normal(size=(14, 6))
    G[[5, 9], 2] = np.nan
    G[11] *= 1e160
    out, info = attacks.line_search(G, 4, rule=coordinate_median, rng=1, return_info=True)
    assert seen and all(s == (11, 4, True) for s in seen)
    keep = np.setdiff1d(np.arange(14), [5, 9, 11])
    ref, ref_info = attacks.line_search(G[keep], 4, rule=coordinate_median, rng=1, return_info=True)
    np.testing.assert_array_equal(out[:4], ref[:4])
    assert info["deviation"] == ref_info["deviation"] and np.isfinite(info["deviation"])
    np.testing.assert_array_equal(out[4:], G[4:])


# ---------------------------------------------------------------------------------------------
# too few finite rows
# ---------------------------------------------------------------------------------------------
def _all_but(n, d, finite_rows, rng, dtype=np.float64):
    """An (n, d) matrix whose rows are all NaN/Inf except ``finite_rows``."""
    G = rng.normal(size=(n, d)).astype(dtype)
    bad = np.setdiff1d(np.arange(n), finite_rows)
    G[bad[::2], 0] = np.nan
    G[bad[1::2], -1] = -np.inf
    return G


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_too_few_finite_rows_raise_naming_the_attack(name, dtype):
    rng = np.random.default_rng(4)
    n, d, f = 10, 5, 3
    needed = NEEDS[name]
    options = {"z": 0.3} if name in ("lie", "byzmean") else {}
    if needed == "own":
        G = rng.normal(size=(n, d)).astype(dtype)
        G[1, 2] = np.nan  # a Byzantine row's own gradient
        with pytest.raises(
            ValueError, match=rf"^{name}: .*needs at least 3 rows of finite honest gradients; "
        ):
            run_attack(name, G, f)
        return
    if needed == 0:  # no statistic: every row may be non-finite
        out = np.asarray(run_attack(name, _all_but(n, d, [], rng, dtype), f))
        assert np.isfinite(out[:f]).all() == (name not in MEANT)
        return
    # needed - 1 finite benign rows (the rest non-finite, the Byzantine rows' honest gradients too)
    G = _all_but(n, d, np.arange(n - needed + 1, n), rng, dtype)
    unit = "row" if needed == 1 else "rows"
    of = "benign rows" if name in BENIGN_STATISTICS else "honest gradients of all n clients"
    total = n - f if name in BENIGN_STATISTICS else n
    pattern = rf"^{name}: .*needs at least {needed} {unit} of finite honest gradients; only {needed - 1} of the {total} {of}"
    with pytest.raises(ValueError, match=pattern):
        run_attack(name, G, f, **options)
    # exactly as many as needed: it works, with finite Byzantine rows
    G = _all_but(n, d, np.arange(n - needed, n), rng, dtype)
    out = np.asarray(run_attack(name, G, f, **options))
    assert np.isfinite(out[:f]).all()
    np.testing.assert_array_equal(out[f:], G[f:])


def test_too_few_finite_benign_rows_with_benign_only():
    rng = np.random.default_rng(5)
    G = rng.normal(size=(8, 4))
    G[3:7, 1] = np.nan  # rows 0-2 Byzantine, 7 the only finite benign row
    for name in ("lie", "min_max", "min_sum"):
        with pytest.raises(
            ValueError, match=rf"^{name}: .*at least 2 rows .*only 1 of the 5 benign rows is finite"
        ):
            run_attack(name, G, 3, z=0.3, benign_only=True)
    out = attacks.min_max(G, 3, direction="sign", benign_only=True)
    np.testing.assert_array_equal(out[:3], np.tile(G[7], (3, 1)))  # one reference row: gamma = 0


# ---------------------------------------------------------------------------------------------
# values past the input's dtype
# ---------------------------------------------------------------------------------------------
def test_line_search_on_float16_evaluates_the_rule_in_float32():
    """float16 input computes in float32 and is rounded back once: the rule is evaluated on the
    float32 rows (a candidate past 65504 is not an Inf row, and every evaluation sees the values
    a float32 input gives), and the result is the float32 search's, rounded."""
    received = set()

    def coordinate_median(grads, f):
        X = np.asarray(grads)
        received.add(X.dtype)
        return np.median(X, axis=0)

    G = np.random.default_rng(7).normal(size=(12, 5)).astype(np.float16)
    out = attacks.line_search(G, 3, rule=coordinate_median, rng=0)
    assert received == {np.dtype(np.float32)}
    assert out.dtype == np.float16 and np.isfinite(out[:3]).all()
    expected = attacks.line_search(G.astype(np.float32), 3, rule=coordinate_median, rng=0)
    np.testing.assert_array_equal(out, expected.astype(np.float16))


def test_overflow_in_the_dtype_raises_instead_of_sending_inf():
    G = np.full((6, 3), 1e38, dtype=np.float32)  # finite for the library: float32 cannot overflow it
    G[::2] *= -1
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        with pytest.raises(ValueError, match=r"^reverse_scaled: .*not finite in float32"):
            attacks.reverse_scaled(G, 2, r=10.0)
        with pytest.raises(ValueError, match=r"^lie: .*not finite in float32"):
            attacks.lie(G, 2, z=5.0)
        np.testing.assert_array_equal(attacks.reverse_scaled(G, 2, r=1.0)[:2], -G[:2])
    with pytest.raises(ValueError, match="byzmean: argument 'g1' must be finite"):
        attacks.byzmean(G.astype(np.float64), 2, g1=np.array([1.0, np.nan, 0.0]))
