"""SignGuard's options are defined once (``robustagg.rules._signguard_options``): the five places
that take them (``signguard``, ``signguard_sim``, ``signguard_dist``, the ``SignGuard`` wrapper,
``robustagg.dask.signguard``) list exactly the table's options, with its defaults, in its order,
and check them with its one checker."""

from __future__ import annotations

import inspect
from dataclasses import fields

import numpy as np
import pytest

import robustagg
from robustagg.rules import _signguard_options as table
from robustagg.rules._signguard_options import DEFAULTS, PARAMS, SignGuardOptions, check_options

KEYWORD = inspect.Parameter.KEYWORD_ONLY


def _options_of(fn) -> list[tuple[str, object]]:
    """(name, default) of each keyword-only parameter, in order."""
    return [(p.name, p.default) for p in inspect.signature(fn).parameters.values() if p.kind is KEYWORD]


def _table(*, reference: bool = False) -> list[tuple[str, object]]:
    return ([("reference", None)] if reference else []) + list(DEFAULTS.items())


def test_the_table_is_the_dataclass_and_covers_every_constraint():
    assert list(DEFAULTS) == [f.name for f in fields(SignGuardOptions)]
    assert len(DEFAULTS) == 14
    assert list(PARAMS) == ["reference", *DEFAULTS]
    assert SignGuardOptions() == SignGuardOptions(**DEFAULTS)
    # every default satisfies its own constraint, and keeps its value
    checked = check_options("signguard", d=10, **DEFAULTS)
    assert list(checked) == list(DEFAULTS)
    for name in ("lower", "upper", "coordinates", "aggregator", "nonfinite", "return_info"):
        assert checked[name] == DEFAULTS[name]
    assert isinstance(checked["rng"], np.random.Generator)


@pytest.mark.parametrize(
    ("fn", "reference"),
    [(robustagg.signguard, False), (robustagg.signguard_sim, True), (robustagg.signguard_dist, True)],
    ids=["signguard", "signguard_sim", "signguard_dist"],
)
def test_each_function_signature_is_the_table(fn, reference):
    params = list(inspect.signature(fn).parameters.values())
    assert params[0].name == "grads" and params[0].kind is inspect.Parameter.POSITIONAL_OR_KEYWORD
    assert all(p.kind is KEYWORD for p in params[1:])
    assert _options_of(fn) == _table(reference=reference)


def test_the_dask_signature_is_the_table():
    rdask = pytest.importorskip("robustagg.dask")
    params = list(inspect.signature(rdask.signguard).parameters.values())
    assert params[0].name == "X"
    assert _options_of(rdask.signguard) == _table()


def test_the_wrapper_takes_the_tables_options():
    assert robustagg.SignGuard.OPTIONS == tuple(n for n in DEFAULTS if n not in ("rng", "return_info"))
    init = inspect.signature(robustagg.SignGuard).parameters
    assert init["rng"].default is DEFAULTS["rng"]
    assert inspect.signature(robustagg.SignGuard.__call__).parameters["return_info"].default is False
    agg = robustagg.SignGuard()
    assert list(agg._opts) == list(robustagg.SignGuard.OPTIONS)
    for name in ("lower", "upper", "coordinate_fraction", "coordinates", "clustering", "nonfinite"):
        assert agg._opts[name] == DEFAULTS[name]


@pytest.mark.parametrize("fn", [robustagg.signguard, robustagg.signguard_sim, robustagg.signguard_dist])
def test_every_option_is_documented_with_the_tables_default(fn):
    doc = fn.__doc__
    for name, default in _table(reference=fn is not robustagg.signguard):
        if default is None:
            assert f"\n    {name} : " in doc and f"{name} : " in doc, name
            continue
        text = f'"{default}"' if isinstance(default, str) else repr(default)
        assert f"\n    {name} : " in doc and f", default {text}\n" in doc.split(f"\n    {name} : ", 1)[1], (
            name
        )


@pytest.mark.parametrize(
    ("name", "value"),
    [("lower", -1.0), ("upper", 0.05), ("coordinate_fraction", 0.0), ("coordinates", "all"),
     ("feature_scaling", "min"), ("clustering", "dbscan"), ("aggregator_options", [("f", 1)]),
     ("norm_filter", 1), ("rng", -1), ("nonfinite", "skip"), ("return_info", "yes")],
)  # fmt: skip
def test_the_functions_and_the_dask_twin_give_the_checkers_message(name, value):
    with pytest.raises((TypeError, ValueError)) as from_checker:
        check_options("signguard", d=10, **{name: value})
    with pytest.raises(type(from_checker.value)) as from_function:
        robustagg.signguard(np.ones((5, 10)), **{name: value})
    assert str(from_function.value) == str(from_checker.value)
    da = pytest.importorskip("dask.array")
    import robustagg.dask as rdask

    with pytest.raises(type(from_checker.value)) as from_dask:
        rdask.signguard(da.from_array(np.ones((5, 10)), chunks=(5, 5)), **{name: value})
    assert str(from_dask.value) == str(from_checker.value)


def test_upper_is_checked_against_the_lower_given():
    with pytest.raises(ValueError, match=r"^signguard: argument 'upper' must be in \[2\.0, inf\)"):
        check_options("signguard", lower=2.0, upper=1.0)
    with pytest.raises(ValueError, match=r"^signguard: argument 'upper' must be in \[0\.1, inf\)"):
        check_options("signguard", upper=0.05)  # against the default lower


def test_coordinates_are_sorted_unique_and_checked_against_d_when_known():
    idx = check_options("signguard", coordinates=[5, 2, 5, 0])["coordinates"]
    np.testing.assert_array_equal(idx, [0, 2, 5])
    assert idx.dtype == np.int64
    with pytest.raises(ValueError, match=r"holds negative indices \(-1\)"):
        check_options("SignGuard", coordinates=[-1, 2])
    with pytest.raises(
        ValueError, match=r"^signguard: argument 'coordinates' holds indices outside \[0, 5\)"
    ):
        check_options("signguard", d=5, coordinates=[-1, 2])
    with pytest.raises(ValueError, match=r"outside \[0, 5\): \[0, 5\]"):
        check_options("signguard", d=5, coordinates=[0, 5])


def test_the_parameters_section_is_written_from_the_table():
    doc = table.parameters_doc(reference=True)
    assert doc.startswith("\n    Parameters\n    ----------\n    grads : ")
    names = [line.split(" : ")[0].strip() for line in doc.splitlines() if line.startswith("    ") and " : " in line
             and not line.startswith("     ")]  # fmt: skip
    assert names == ["grads", "reference", *DEFAULTS]
