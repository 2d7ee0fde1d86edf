"""Every rule enforces the parameter constraints it declares, through its public function.

Each rule module declares one constraint table per rule (``_TABLES``: rule name -> {option:
constraint}, robustagg._params). The cases here are generated from those tables: for every
declared option, a value just outside each bound (or of the wrong kind) raises the declared
error, whose message starts with the rule's name and the argument's; a value just inside each
bound is accepted. So a new option is covered by declaring it, and
``test_every_option_is_declared`` fails for an option that is not.
"""

from __future__ import annotations

import inspect
import re
from typing import Any

import numpy as np
import pytest

import robustagg
from robustagg import clustering
from robustagg._params import Boolean, Integer, OneOf, Optional, Real, Seed, Vector
from robustagg.rules import clipping, coordinatewise, distance, preaggregation, spectral, subset, trust

MODULES = (coordinatewise, distance, subset, spectral, clipping, trust, preaggregation, clustering)
TABLES = {name: table for module in MODULES for name, table in module._TABLES.items()}

N, D = 9, 4
G = np.random.default_rng(0).normal(size=(N, D))
DATA = {"grads", "features", "labels"}  # the data argument, not an option

# options valid for every call unless the case sets them (f small enough for every bound; MDA
# and SMEA with f = 0 so that their smallest max_subsets, 1, suffices)
F_RULES = ("trimmed_mean", "meamed", "krum", "multi_krum", "bulyan", "monna", "caf", "dnc", "nnm", "arc")
BASE: dict[str, dict[str, Any]] = {
    **{rule: {"f": 1} for rule in (*F_RULES, "pipeline")},
    "mda": {"f": 0},
    "smea": {"f": 0},
    "fltrust": {"root_gradient": G[0]},
}
# bounds that depend on n (checked by the rule once n is known): the largest value allowed
N_BOUND = {("krum", "neighbors"): N - 1, ("multi_krum", "neighbors"): N - 1, ("multi_krum", "m"): N}
PIPELINE = robustagg.pipeline("nnm", "krum")


def _public(rule: str) -> Any:
    """What a user calls for ``rule``: the function, the composed rule's call, or the class."""
    if rule == "pipeline":
        return PIPELINE
    return getattr(clustering if hasattr(clustering, rule) else robustagg, rule)


def _label(rule: str) -> str:
    """The name the messages give."""
    return PIPELINE.name if rule == "pipeline" else rule


def _options(rule: str) -> set[str]:
    """The options of the public callable (the class: its constructor's and its call's)."""
    fn = _public(rule)
    sigs = [inspect.signature(fn.__init__), inspect.signature(fn.__call__)] if inspect.isclass(fn) else []
    sigs = sigs or [inspect.signature(fn.__call__ if rule == "pipeline" else fn)]
    return {
        name
        for sig in sigs
        for name, p in sig.parameters.items()
        if name not in DATA and name != "self" and p.kind is not p.VAR_POSITIONAL
    }


def _call(rule: str, **options: Any) -> Any:
    kwargs = {**BASE.get(rule, {}), **options}
    if rule == "CenteredClipping":
        return_info = kwargs.pop("return_info", False)
        return robustagg.CenteredClipping(**kwargs)(G, return_info=return_info)
    return _public(rule)(G, **kwargs)


def _below(x: float) -> float:
    return float(np.nextafter(x, -np.inf))


def _above(x: float) -> float:
    return float(np.nextafter(x, np.inf))


def _integer_cases(c: Integer) -> list[tuple[Any, type | None]]:
    inside = [v for v in (c.low, c.high) if v is not None] or [0]
    cases: list[tuple[Any, type | None]] = [(v, None) for v in inside] + [(np.int64(inside[0]), None)]
    if c.low is not None:
        cases.append((c.low - 1, ValueError))
    if c.high is not None:
        cases.append((c.high + 1, ValueError))
    return cases + [(float(inside[0]), TypeError), (True, TypeError), ("1", TypeError)]


def _real_cases(c: Real) -> list[tuple[Any, type | None]]:
    cases: list[tuple[Any, type | None]] = []
    if c.low is not None:
        cases += [
            (_above(c.low) if c.low_open else c.low, None),
            (c.low if c.low_open else _below(c.low), ValueError),
        ]
    if c.high is not None:
        cases += [
            (_below(c.high) if c.high_open else c.high, None),
            (c.high if c.high_open else _above(c.high), ValueError),
        ]
    if c.low is not None and c.high is not None:
        middle = (c.low + c.high) / 2
    else:
        middle = c.low + 1.0 if c.low is not None else (c.high - 1.0 if c.high is not None else 0.0)
    return cases + [
        (np.float32(middle), None),
        (np.nan, ValueError),
        (np.inf, ValueError),
        ("1", TypeError),
        (True, TypeError),
    ]


def _vector_cases(c: Vector, fixed_d: bool = True) -> list[tuple[Any, type | None]]:
    cases: list[tuple[Any, type | None]] = [
        (np.ones(D), None),
        (np.ones(D, dtype=np.float32), None),
        ([0.5] * D, None),
        (np.r_[np.ones(D - 1), np.nan], ValueError),
        (np.r_[np.ones(D - 1), np.inf], ValueError),
        (np.ones((D, 1)), ValueError),
    ]
    return cases + ([(np.ones(D + 1), ValueError)] if fixed_d else [])


def _row_or_vector_cases(c: Any) -> list[tuple[Any, type | None]]:
    # MoNNA's reference: a row in [0, n - 1] (its bound n - 1 is tested with N_BOUND's), or a vector
    return [(0, None), (np.int64(N - 1), None), (-1, ValueError), (N, ValueError)] + _vector_cases(c.vector)


def _weights_cases(c: Any) -> list[tuple[Any, type | None]]:
    return [
        (np.ones(N), None),
        (np.r_[np.zeros(N - 1), 2.0], None),
        (np.r_[-1.0, np.ones(N - 1)], ValueError),
        (np.r_[np.nan, np.ones(N - 1)], ValueError),
        (np.ones(N + 1), ValueError),  # the length n, checked by the rule
    ]


def cases(constraint: Any, *, fixed_d: bool = True) -> list[tuple[Any, type | None]]:
    """(value, expected error type or None when the value is accepted) for one constraint."""
    if isinstance(constraint, Optional):
        return [(None, None)] + cases(constraint.inner, fixed_d=fixed_d)
    if isinstance(constraint, Integer):
        return _integer_cases(constraint)
    if isinstance(constraint, Real):
        return _real_cases(constraint)
    if isinstance(constraint, OneOf):
        return [(v, None) for v in constraint.choices] + [("no such choice", ValueError)]
    if isinstance(constraint, Boolean):
        return [(True, None), (False, None), (np.bool_(True), None)] + [
            (v, TypeError) for v in (1, 0, "yes", None)
        ]
    if isinstance(constraint, Seed):
        gen = np.random.default_rng(0)
        return [(None, None), (0, None), (gen, None), (np.random.SeedSequence(0), None)] + [
            (-1, ValueError),
            (1.5, TypeError),
            ("0", TypeError),
            (True, TypeError),
        ]
    if isinstance(constraint, Vector):
        return _vector_cases(constraint, fixed_d)
    kind = type(constraint).__name__
    if kind == "_RowOrVector":
        return _row_or_vector_cases(constraint)
    if kind == "_Weights":
        return _weights_cases(constraint)
    raise AssertionError(f"no test cases for the constraint {constraint!r}: add them here")


ENTRIES = [(rule, option) for rule, table in TABLES.items() for option in table if option in _options(rule)]


@pytest.mark.parametrize(("rule", "option"), ENTRIES, ids=[f"{r}-{o}" for r, o in ENTRIES])
def test_declared_constraint_is_enforced(rule, option):
    # the stateful wrapper's centre fixes d at construction: any length is accepted there
    fixed_d = rule != "CenteredClipping"
    label = _label(rule) if option != "return_info" or rule != "CenteredClipping" else "centered_clipping"
    prefix = rf"^{re.escape(label)}: argument '{option}'"
    table_cases = cases(TABLES[rule][option], fixed_d=fixed_d)
    if (rule, option) in N_BOUND:
        table_cases += [(N_BOUND[rule, option], None), (N_BOUND[rule, option] + 1, ValueError)]
    for value, error in table_cases:
        if error is None:
            _call(rule, **{option: value})
            continue
        with pytest.raises(error, match=prefix):
            _call(rule, **{option: value})


@pytest.mark.parametrize("rule", sorted(TABLES))
def test_every_option_is_declared(rule):
    """Each option of the public callable has a constraint, and the table declares no other."""
    assert _options(rule) == set(TABLES[rule]), rule


def test_every_public_rule_of_these_modules_has_a_table():
    documented = {name for module in MODULES for name in module.__all__} - {"largest_cluster"}
    assert documented <= set(TABLES), sorted(documented - set(TABLES))


def test_the_stateful_wrapper_checks_its_options_with_the_functions_table():
    assert clipping._TABLES["CenteredClipping"] is clipping._TABLES["centered_clipping"]
    with pytest.raises(ValueError, match=r"^CenteredClipping: argument 'center' holds NaN or Inf"):
        robustagg.CenteredClipping(center=[0.0, np.nan])  # no call made


def test_a_centre_given_is_copied_never_the_callers_memory():
    center = np.zeros(D)
    cc = robustagg.CenteredClipping(center=center)
    _, info = robustagg.centered_clipping(G, center=center, return_info=True)
    assert not np.shares_memory(cc.center, center)
    assert not np.shares_memory(info["center"], center)
