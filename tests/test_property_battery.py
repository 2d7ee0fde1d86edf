"""The published property battery (``robustagg.testing.check_rule``) on every registered rule,
with its explicit inputs on both sides of every size switch the rule goes through (n = 256/257
rows, m²d = 2²⁴, column-block edges): both paths of each switch meet the same invariants, the
non-finite policy included."""

import numpy as np
import pytest

import robustagg
from robustagg.testing import PropertyFailure, check_rule
from robustagg.testing.strategies import branch_shapes_for

COORDINATEWISE = {"median", "trimmed_mean", "meamed"}
# Bulyan's repeated Krum ends with r = 2f + 1 rows and max(r - f - 2, 1) = 1 neighbour: two rows
# that are each other's nearest neighbour then have the same score, and the tie goes to the
# lower index (the textbook rule), so the selected set, and the output, depend on the rows'
# order (the explicit inputs at d = 2048/2049 show it). Every other property holds.
# MDA keeps the n - f rows of smallest diameter; subsets that share their farthest pair tie, and
# the tie goes to the lexicographically first subset (its diameter is order-free: tested apart).
ORDER_DEPENDENT = {"bulyan", "mda"}


def _fltrust(grads, f=None):
    """FLTrust with a root gradient near the finite rows' median (it needs one of length d)."""
    G = np.asarray(grads)
    finite = G[np.isfinite(G).all(axis=1)].astype(np.float64)
    root = (np.median(finite, axis=0) if len(finite) else np.zeros(G.shape[1])) + 0.1
    return robustagg.fltrust(grads, root.astype(G.dtype))


WRAPPED = {"fltrust": _fltrust}


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(robustagg.RULES))
def test_every_rule_passes_the_battery_past_every_size_switch(name):
    properties = None
    if name in ORDER_DEPENDENT:
        properties = ["shape", "no_mutation", "dtype", "determinism", "nonfinite"]
    passed = check_rule(
        WRAPPED.get(name, name),
        f=1,
        properties=properties,
        branches=name,
        coordinatewise=name in COORDINATEWISE,
        max_examples=3,
        shrink=False,
        dtypes=(np.float32, np.float64),
    )
    # every property ran at least on the explicit inputs at the size switches
    assert min(passed.values()) >= len(branch_shapes_for(name, k=1))


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
        check_rule(median_broken_above_256, f=1, properties=["shape", "nonfinite"], max_examples=2, shrink=False)
    assert set(exc.value.failures) == {"shape", "nonfinite"}
    # and without the explicit inputs the small drawn matrices miss the defect
    passed = check_rule(
        median_broken_above_256, f=1, properties=["shape", "nonfinite"], max_examples=2, shrink=False, branches=False
    )
    assert set(passed) == {"shape", "nonfinite"}
