"""Tests of the public testing toolkit (robustagg.testing): the property battery passes on the
library's rules and catches broken ones; the strategies generate what they promise; the
docs page's snippet runs."""

import inspect
import re
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import robustagg
from robustagg.testing import PROPERTIES, PropertyFailure, check_rule
from robustagg.testing import strategies as rst
from robustagg.testing.strategies import branch_shapes_for

DOCS = Path(__file__).resolve().parents[1] / "docs" / "testing.md"

# .example() is the plain way to draw one value in a non-@given test
pytestmark = pytest.mark.filterwarnings("ignore::hypothesis.errors.NonInteractiveExampleWarning")


def good_median(grads, f):
    g = np.asarray(grads)
    finite = np.isfinite(g).all(axis=1)
    return np.median(g[finite], axis=0).astype(g.dtype)


# ---------------------------------------------------------------------------------------------
# deliberately broken rules: each breaks exactly one property of good_median
# ---------------------------------------------------------------------------------------------
def mutating_median(grads, f):
    g = np.asarray(grads)
    out = good_median(g, f)
    g.sort(axis=0)  # in place: the caller's matrix is reordered
    return out


def nan_propagating_median(grads, f):
    g = np.asarray(grads)
    return np.median(g, axis=0)


def order_dependent_median(grads, f):
    g = np.asarray(grads)
    finite = np.isfinite(g).all(axis=1)
    g = g[finite]
    return np.median(g[: max(1, g.shape[0] - 1)], axis=0).astype(g.dtype)  # ignores the last row


def float64_median(grads, f):
    return good_median(grads, f).astype(np.float64)


def unseeded_noisy_median(grads, f, rng=None):
    return (
        good_median(grads, f)
        + np.random.default_rng().normal(size=np.shape(grads)[1]).astype(np.asarray(grads).dtype) * 1e-3
    )


def trimmed_away_nothing(grads, f):  # coordinate-wise but not robust: the mean of finite rows
    g = np.asarray(grads)
    finite = np.isfinite(g).all(axis=1)
    return g[finite].mean(axis=0)


FAST = {"max_examples": 8, "d_max": 6, "shrink": False}


def test_battery_passes_on_a_correct_rule():
    passed = check_rule(good_median, f=2, coordinatewise=True, **FAST)
    assert set(passed) == {
        "shape",
        "no_mutation",
        "dtype",
        "permutation",
        "determinism",
        "nonfinite",
        "honest_range",
    }
    assert all(count >= 1 for count in passed.values())


@pytest.mark.slow
@pytest.mark.parametrize(
    "rule, broken, coordinatewise",
    [
        (mutating_median, {"no_mutation"}, True),
        (nan_propagating_median, {"nonfinite"}, True),
        (order_dependent_median, {"permutation"}, True),
        (float64_median, {"dtype"}, True),
        (unseeded_noisy_median, {"determinism", "permutation"}, False),
        (trimmed_away_nothing, {"honest_range"}, True),
    ],
)
def test_battery_catches_broken_rules(rule, broken, coordinatewise):
    with pytest.raises(PropertyFailure) as excinfo:
        check_rule(rule, f=2, coordinatewise=coordinatewise, **FAST)
    assert set(excinfo.value.failures) == broken
    for prop in broken:
        assert prop in str(excinfo.value)


def test_torch_property_flags_numpy_only_rules():
    pytest.importorskip("torch")
    with pytest.raises(PropertyFailure, match="torch"):
        check_rule(good_median, f=1, properties=["torch"], max_examples=3, shrink=False)
    check_rule("mean", properties=["torch"], max_examples=3)


def test_check_rule_validates_its_arguments():
    with pytest.raises(ValueError, match="unknown properties"):
        check_rule(good_median, properties=["speed"])
    with pytest.raises(ValueError, match="f must be >= 0"):
        check_rule(good_median, f=-1)
    with pytest.raises(ValueError, match="unknown rule"):
        check_rule("no_such_rule")


# Known violations found by this battery (reported; non-strict: hypothesis may not draw a tie).
KNOWN_ORDER_DEPENDENCE = {
    "bulyan": "repeated Krum with max(r - f - 2, 1) neighbours: at 1 neighbour the two rows of a "
    "mutual-nearest pair have equal scores and the tie goes to the lower index",
    "mda": "several subsets can share the minimum diameter; the tie goes to the first subset found",
}


def _fltrust(grads, f=None):
    """FLTrust with a root gradient near the finite rows' median (it needs one of length d)."""
    G = np.asarray(grads)
    finite = G[np.isfinite(G).all(axis=1)].astype(np.float64)
    root = (np.median(finite, axis=0) if len(finite) else np.zeros(G.shape[1])) + 0.1
    return robustagg.fltrust(grads, root.astype(G.dtype))


#: rules with a required side input, called through a wrapper that supplies it
WRAPPED = {"fltrust": _fltrust}


def _library_rule_cases():
    cases = []
    for name, fn in sorted(robustagg.RULES.items()):
        params = inspect.signature(fn).parameters
        takes_f = "f" in params
        coordinatewise = fn.__module__ == "robustagg.rules.coordinatewise"
        cases.append(pytest.param(name, 1 if takes_f else None, coordinatewise, id=name))
    return cases


@pytest.mark.slow  # mostly Numba compiling each rule for float32/float64 and read-only input
@pytest.mark.parametrize("name, f, coordinatewise", _library_rule_cases())
def test_battery_passes_on_every_registered_rule(name, f, coordinatewise):
    """Every property on drawn matrices and on both sides of every size switch the rule goes
    through (256 rows, m²d = 2²⁴, column blocks: ``branches``), the non-finite policy included.
    Rules whose textbook tie rule depends on the rows' order skip only the permutation check."""
    properties = None
    if name in KNOWN_ORDER_DEPENDENCE:
        properties = [p for p in PROPERTIES if p not in ("permutation", "honest_range")]
    passed = check_rule(
        WRAPPED.get(name, name),
        f=f,
        coordinatewise=coordinatewise,
        torch=True,
        properties=properties,
        max_examples=3,
        n_min=4 * (f or 0) + 3,
        n_max=4 * (f or 0) + 8,
        d_min=2,
        d_max=6,
        shrink=False,
        branches=name,
    )
    # every property ran at least on the explicit inputs at the size switches
    assert min(passed.values()) >= len(branch_shapes_for(name, k=max(f or 0, 1)))
    if name in KNOWN_ORDER_DEPENDENCE:  # and the order dependence is real, not a test artefact
        with pytest.raises(PropertyFailure, match="permutation"):
            check_rule(name, f=f, properties=["permutation"], max_examples=3, shrink=False, branches=name)


def test_the_battery_reaches_past_256_rows_and_fails_a_rule_broken_only_there():
    """A median that is right up to 256 rows and returns NaN above is caught by the explicit
    inputs at the switch, although every drawn matrix is small."""

    def median_broken_above_256(grads, f=0):
        G = np.asarray(grads, dtype=np.float64)
        G = G[np.isfinite(G).all(axis=1)]
        if G.shape[0] > 256:
            return np.full(G.shape[1], np.nan, dtype=np.asarray(grads).dtype)
        return np.median(G, axis=0).astype(np.asarray(grads).dtype)

    with pytest.raises(PropertyFailure) as exc:
        check_rule(
            median_broken_above_256, f=1, properties=["shape", "nonfinite"], max_examples=2, shrink=False
        )
    assert set(exc.value.failures) == {"shape", "nonfinite"}
    # without the explicit inputs the small drawn matrices miss the defect
    passed = check_rule(
        median_broken_above_256,
        f=1,
        properties=["shape", "nonfinite"],
        max_examples=2,
        shrink=False,
        branches=False,
    )
    assert set(passed) == {"shape", "nonfinite"}


# ---------------------------------------------------------------------------------------------
# strategies
# ---------------------------------------------------------------------------------------------
@settings(max_examples=20)
@given(
    data=st.data(),
    n=st.integers(2, 15),
    d=st.integers(1, 20),
    dtype=st.sampled_from(["float32", "float64"]),
    structure=st.sampled_from(rst.STRUCTURES),
)
def test_gradient_matrices_shape_dtype_finite(data, n, d, dtype, structure):
    G = data.draw(rst.gradient_matrices(n=n, d=d, dtype=dtype, structure=structure))
    assert G.shape == (n, d)
    assert G.dtype == np.dtype(dtype)
    assert np.isfinite(G).all()
    assert G.flags.writeable


def test_gradient_matrices_spread_exceeds_mean():
    """spread = 5: the coordinate-wise standard deviation exceeds the mean's magnitude on most
    coordinates (the LIE observation the strategy is meant to reproduce)."""
    strategy = rst.gradient_matrices(n=200, d=400, dtype="float64", scale=1.0, spread=5.0, structure="iid")
    G = strategy.example()
    ratio = G.std(axis=0, ddof=1) > np.abs(G.mean(axis=0))
    assert ratio.mean() > 0.95
    G = rst.gradient_matrices(n=200, d=400, dtype="float64", scale=1.0, spread=0.1, structure="iid").example()
    assert (G.std(axis=0, ddof=1) > np.abs(G.mean(axis=0))).mean() < 0.3


@settings(max_examples=30)
@given(rst.byzantine_scenarios(finite_only=True))
def test_byzantine_scenarios_keep_benign_rows(scenario):
    n = scenario.grads.shape[0]
    assert scenario.byzantine.shape == (n,)
    assert 0 <= scenario.f <= (n - 1) // 2
    np.testing.assert_array_equal(scenario.grads[~scenario.byzantine], scenario.honest[~scenario.byzantine])
    np.testing.assert_allclose(
        scenario.honest_mean, scenario.honest[~scenario.byzantine].astype(np.float64).mean(axis=0)
    )
    assert np.isfinite(scenario.grads).all()
    assert scenario.attack in robustagg.ATTACKS and scenario.attack not in ("nan", "inf")


@given(rst.byzantine_scenarios(attacks=["sign_flip"], f=3, placement="last"))
def test_byzantine_scenarios_fixed_attack_and_placement(scenario):
    n = scenario.grads.shape[0]
    assert scenario.byzantine[n - 3 :].all() and not scenario.byzantine[: n - 3].any()
    np.testing.assert_array_equal(scenario.grads[n - 3 :], -scenario.honest[n - 3 :])


def test_byzantine_scenarios_reject_unknown_attack():
    with pytest.raises(ValueError, match="unknown attacks"):
        rst.byzantine_scenarios(attacks=["nope"]).example()


@pytest.mark.parametrize("placement", rst.PLACEMENTS)
@pytest.mark.parametrize("n, f", [(5, 0), (5, 2), (9, 4), (10, 10)])
def test_byzantine_masks(placement, n, f):
    mask = rst.byzantine_masks(n, f, placement, seed=3)
    assert mask.dtype == bool and mask.shape == (n,) and mask.sum() == f


@settings(max_examples=40)
@given(rst.with_adversarial_rows(rst.gradient_matrices(n=st.integers(3, 12), d=st.integers(1, 6))))
def test_with_adversarial_rows(case):
    G, mask = case
    assert 1 <= mask.sum() <= max(1, (G.shape[0] - 1) // 2)
    assert np.isfinite(G[~mask]).all()
    info = np.finfo(G.dtype)
    for row in G[mask]:
        nonfinite = not np.isfinite(row).all()
        huge = np.isfinite(row).all() and np.abs(row).min() >= info.max / 5
        tiny_or_zero = np.isfinite(row).all() and np.abs(row).max() <= info.smallest_subnormal
        duplicate = any(np.array_equal(row, other) for other in G[~mask])
        assert nonfinite or huge or tiny_or_zero or duplicate


@pytest.mark.parametrize("kind", rst.ADVERSARIAL_KINDS)
def test_adversarial_row_kinds(kind):
    like = np.arange(12.0).reshape(3, 4)
    row = rst.adversarial_rows(4, kinds=[kind], like=like).example()
    assert row.shape == (4,)
    checks = {
        "nan": np.isnan(row).all(),
        "posinf": np.isposinf(row).all(),
        "neginf": np.isneginf(row).all(),
        "mixed_nonfinite": np.isnan(row).any(),
        "huge": (np.abs(row) == np.finfo(np.float64).max / 4).all(),
        "tiny": (row == np.finfo(np.float64).smallest_subnormal).all(),
        "zeros": (row == 0).all(),
        "duplicate": any(np.array_equal(row, r) for r in like),
    }
    assert checks[kind]
    with pytest.raises(ValueError, match="unknown kinds"):
        rst.adversarial_rows(4, kinds=["weird"])


# ---------------------------------------------------------------------------------------------
# the docs page's snippet runs (and is at most 10 lines)
# ---------------------------------------------------------------------------------------------
@pytest.mark.slow
def test_docs_snippet_runs():
    text = DOCS.read_text(encoding="utf-8")
    blocks = re.findall(r"```python\n(.*?)```", text, flags=re.S)
    first = blocks[0]
    lines = [ln for ln in first.splitlines() if ln.strip()]
    assert len(lines) <= 10
    namespace: dict = {}
    exec(compile(first, str(DOCS), "exec"), namespace)
    # and the failure example shown on the page fails the way the page says
    second = blocks[1]
    code = "\n".join(ln for ln in second.splitlines() if not ln.startswith("#") and "check_rule(" not in ln)
    exec(compile(code, str(DOCS), "exec"), namespace)
    with pytest.raises(PropertyFailure) as excinfo:
        check_rule(namespace["naive_mean"], f=2, coordinatewise=True, max_examples=10, shrink=False)
    assert set(excinfo.value.failures) == {"nonfinite", "honest_range"}
