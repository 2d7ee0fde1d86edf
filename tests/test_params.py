"""The declared parameter constraints (robustagg._params) and the checks they call."""

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from robustagg._params import (
    BOOLEAN,
    NONFINITE,
    SEED,
    Either,
    Integer,
    Mapping_,
    OneOf,
    Optional,
    Real,
    Vector,
    check_params,
    describe,
)

TABLE = {
    "k": Integer(low=1, high=5),
    "tau": Real(low=0.0, low_open=True),
    "q": Real(low=0.0, high=1.0),
    "mode": OneOf("a", "b"),
    "flag": BOOLEAN,
    "rng": SEED,
    "center": Optional(Vector()),
    "ref": Vector(keep_float32=True),
    "agg": Either(OneOf("mean", "median")),
    "options": Optional(Mapping_()),
    "nonfinite": NONFINITE,
}


@given(st.integers(1, 5))
def test_integer_inside_is_returned_as_int(k):
    assert check_params("r", TABLE, k=np.int64(k)) == {"k": k}
    assert type(check_params("r", TABLE, k=np.int64(k))["k"]) is int


@given(st.one_of(st.integers(max_value=0), st.integers(min_value=6)))
def test_integer_outside_names_rule_argument_and_value(k):
    with pytest.raises(ValueError, match=rf"^r: argument 'k' must be [<>]= [15], got {k}$"):
        check_params("r", TABLE, k=k)


@pytest.mark.parametrize("value", [True, 1.0, "1", None])
def test_integer_of_the_wrong_kind_is_a_type_error(value):
    with pytest.raises(TypeError, match="r: argument 'k' must be an integer"):
        check_params("r", TABLE, k=value)


@given(st.floats(allow_nan=True, allow_infinity=True))
def test_real_accepts_exactly_the_declared_interval(x):
    inside = bool(np.isfinite(x) and 0.0 <= x <= 1.0)
    if inside:
        assert check_params("r", TABLE, q=x) == {"q": x}
    else:
        with pytest.raises(ValueError, match="r: argument 'q' must be"):
            check_params("r", TABLE, q=x)


def test_open_bound_refuses_the_bound():
    with pytest.raises(ValueError, match=r"must be in \(0.0, inf\), got 0.0"):
        check_params("r", TABLE, tau=0.0)


def test_choice_bool_and_mapping():
    assert check_params("r", TABLE, mode="b", flag=np.bool_(False), options={"x": 1}) == {
        "mode": "b",
        "flag": False,
        "options": {"x": 1},
    }
    with pytest.raises(ValueError, match="r: argument 'mode' must be one of 'a', 'b'; got 'c'"):
        check_params("r", TABLE, mode="c")
    for value in (0, 1, "yes", None):
        with pytest.raises(TypeError, match="r: argument 'flag' must be a bool"):
            check_params("r", TABLE, flag=value)
    with pytest.raises(TypeError, match="r: argument 'options' must be a dict"):
        check_params("r", TABLE, options=[("x", 1)])
    with pytest.raises(ValueError, match="r: argument 'nonfinite' must be one of 'exclude', 'raise'"):
        check_params("r", TABLE, nonfinite="ignore")


def test_seed_becomes_a_generator():
    g = check_params("r", TABLE, rng=3)["rng"]
    assert isinstance(g, np.random.Generator)
    assert g.integers(1 << 30) == np.random.default_rng(3).integers(1 << 30)
    with pytest.raises(ValueError, match="r: argument 'rng' as a seed must be >= 0"):
        check_params("r", TABLE, rng=-1)


def test_vector_length_finiteness_and_dtype():
    out = check_params("r", TABLE, d=3, center=[1, 2, 3], ref=np.ones(3, np.float32))
    assert out["center"].dtype == np.float64 and out["center"].flags.c_contiguous
    assert out["ref"].dtype == np.float32
    assert check_params("r", TABLE, d=3, center=None) == {"center": None}
    with pytest.raises(ValueError, match=r"r: argument 'center' must have length d = 3 .*got 2"):
        check_params("r", TABLE, d=3, center=[1.0, 2.0])
    for bad in (np.nan, np.inf, -np.inf):
        with pytest.raises(ValueError, match="r: argument 'ref' holds NaN or Inf"):
            check_params("r", TABLE, d=2, ref=[1.0, bad])
    with pytest.raises(TypeError, match="needs d"):
        check_params("r", TABLE, ref=[1.0])


def test_callable_or_name():
    assert check_params("r", TABLE, agg=np.mean)["agg"] is np.mean
    assert check_params("r", TABLE, agg="median")["agg"] == "median"
    with pytest.raises(ValueError, match="r: argument 'agg' must be one of 'mean', 'median'"):
        check_params("r", TABLE, agg="mode")


def test_undeclared_name_is_a_bug_of_the_caller():
    with pytest.raises(TypeError, match="declares no constraint for 'zeta'"):
        check_params("r", TABLE, zeta=1)


def test_describe_every_constraint():
    words = describe(TABLE)
    assert set(words) == set(TABLE)
    assert words["k"] == "an integer in [1, 5]"
    assert words["tau"] == "a finite real in (0.0, inf)"
    assert words["center"] == "None or a finite vector of length d"
    assert all(isinstance(v, str) and v for v in words.values())
