"""Declared parameter constraints: one table per rule, one checker.

A rule (or attack, or pre-aggregator) declares its options once, as a mapping from the option's
name to a constraint, and checks the values it was given with :func:`check_params`::

    _PARAMS = {"f": FAULTS, "tau": Real(low=0.0, low_open=True), "n_iters": Integer(low=1),
               "center": Optional(Vector()), "nonfinite": NONFINITE, "return_info": BOOLEAN}

    def centered_clipping(grads, f=0, *, tau=10.0, n_iters=1, center=None, ...):
        p = prepare(...)
        opts = check_params("centered_clipping", _PARAMS, tau=tau, n_iters=n_iters, center=center, d=p.d)

This is scikit-learn's ``validate_params`` idea without its decorator: the rule keeps its honest
signature (the defaults live there, once) and calls the checker where it has the context that
some constraints need (``d`` for a vector). The constraint table is also what documentation and
tests read: :func:`describe` renders a constraint as the error messages do.

Every error names the rule, the argument, what was given and what is allowed
(docs/conventions.md, "Errors"): ``TypeError`` for a value of the wrong kind, ``ValueError`` for
a value of the right kind outside the allowed set. The scalar checks are those of
:mod:`robustagg._validation` (``check_int``, ``check_real``, ``check_choice``, ``check_bool``,
``check_rng``, ``check_vector``), which code with a single check may call directly.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from ._validation import (
    NONFINITE_POLICIES,
    check_bool,
    check_choice,
    check_int,
    check_real,
    check_rng,
    check_vector,
)

__all__ = [
    "BOOLEAN",
    "FAULTS",
    "NONFINITE",
    "SEED",
    "Boolean",
    "Constraint",
    "Either",
    "Integer",
    "Mapping_",
    "OneOf",
    "Optional",
    "Real",
    "Seed",
    "Vector",
    "check_params",
    "describe",
]


class Constraint:
    """What a value must be. ``check`` returns the value in its canonical form (``int`` for an
    integer, ``float`` for a real, a ``Generator`` for a seed, a float64 array for a vector) or
    raises the project's error."""

    def check(self, value: Any, *, rule: str, name: str, d: int | None = None) -> Any:  # pragma: no cover
        raise NotImplementedError

    def describe(self) -> str:  # pragma: no cover
        raise NotImplementedError


@dataclass(frozen=True)
class Integer(Constraint):
    """An integer (Python or NumPy; bool refused) in ``[low, high]``."""

    low: int | None = None
    high: int | None = None

    def check(self, value: Any, *, rule: str, name: str, d: int | None = None) -> int:
        return check_int(value, rule=rule, name=name, low=self.low, high=self.high)

    def describe(self) -> str:
        lo = "-inf" if self.low is None else str(self.low)
        hi = "inf" if self.high is None else str(self.high)
        return f"an integer in [{lo}, {hi}]"


@dataclass(frozen=True)
class Real(Constraint):
    """A finite real number (bool refused) in the interval given, closed unless ``*_open``."""

    low: float | None = None
    high: float | None = None
    low_open: bool = False
    high_open: bool = False

    def check(self, value: Any, *, rule: str, name: str, d: int | None = None) -> float:
        return check_real(
            value,
            rule=rule,
            name=name,
            low=self.low,
            high=self.high,
            low_open=self.low_open,
            high_open=self.high_open,
        )

    def describe(self) -> str:
        lo = "-inf" if self.low is None else f"{self.low}"
        hi = "inf" if self.high is None else f"{self.high}"
        left = "(" if self.low_open or self.low is None else "["
        right = ")" if self.high_open or self.high is None else "]"
        return f"a finite real in {left}{lo}, {hi}{right}"


@dataclass(frozen=True)
class OneOf(Constraint):
    """One of a fixed set of values (compared with ``==``)."""

    choices: tuple

    def __init__(self, *choices: Any) -> None:
        object.__setattr__(self, "choices", tuple(choices))

    def check(self, value: Any, *, rule: str, name: str, d: int | None = None) -> Any:
        return check_choice(value, self.choices, rule=rule, name=name)

    def describe(self) -> str:
        return "one of " + ", ".join(map(repr, self.choices))


@dataclass(frozen=True)
class Boolean(Constraint):
    """``True`` or ``False`` (Python or NumPy bool; 0 and 1 are refused)."""

    def check(self, value: Any, *, rule: str, name: str, d: int | None = None) -> bool:
        return check_bool(value, rule=rule, name=name)

    def describe(self) -> str:
        return "a bool"


@dataclass(frozen=True)
class Seed(Constraint):
    """``None``, a non-negative int seed, a ``SeedSequence`` or a ``numpy.random.Generator``;
    checked into a Generator."""

    def check(self, value: Any, *, rule: str, name: str, d: int | None = None) -> Any:
        return check_rng(value, rule=rule)

    def describe(self) -> str:
        return "None, a non-negative int seed or a numpy.random.Generator"


@dataclass(frozen=True)
class Vector(Constraint):
    """A finite vector of length d (the gradients' length; ``check`` needs ``d``), as a
    contiguous float64 NumPy array, or float32 kept as float32 when ``keep_float32``."""

    keep_float32: bool = False

    def check(self, value: Any, *, rule: str, name: str, d: int | None = None) -> Any:
        if d is None:
            raise TypeError(f"check_params: the constraint of {rule}'s {name!r} needs d")
        return check_vector(value, d, rule=rule, name=name, keep_float32=self.keep_float32)

    def describe(self) -> str:
        return "a finite vector of length d"


@dataclass(frozen=True)
class Mapping_(Constraint):
    """A mapping with str keys (keyword options passed on to another function)."""

    def check(self, value: Any, *, rule: str, name: str, d: int | None = None) -> dict:
        if not isinstance(value, Mapping) or not all(isinstance(k, str) for k in value):
            raise TypeError(
                f"{rule}: argument {name!r} must be a dict of keyword options, "
                f"got {value!r} ({type(value).__name__})"
            )
        return dict(value)

    def describe(self) -> str:
        return "a dict of keyword options"


@dataclass(frozen=True)
class Optional(Constraint):
    """``None``, or what ``inner`` allows."""

    inner: Constraint

    def check(self, value: Any, *, rule: str, name: str, d: int | None = None) -> Any:
        return None if value is None else self.inner.check(value, rule=rule, name=name, d=d)

    def describe(self) -> str:
        return f"None or {self.inner.describe()}"


@dataclass(frozen=True)
class Either(Constraint):
    """A callable, or what ``inner`` allows (a name or a function, e.g. SignGuard's aggregator)."""

    inner: Constraint

    def check(self, value: Any, *, rule: str, name: str, d: int | None = None) -> Any:
        if callable(value):
            return value
        return self.inner.check(value, rule=rule, name=name, d=d)

    def describe(self) -> str:
        return f"a callable or {self.inner.describe()}"


# the options most rules share
NONFINITE = OneOf(*NONFINITE_POLICIES)
"""``nonfinite``: what to do with rows holding NaN or Inf (docs/conventions.md)."""
BOOLEAN = Boolean()
"""A flag such as ``return_info``."""
FAULTS = Integer(low=0)
"""``f``, the number of Byzantine clients, before the rule's own bound on n (``check_f``)."""
SEED = Seed()
"""``rng``."""


def check_params(
    rule: str,
    constraints: Mapping[str, Constraint],
    /,
    *,
    d: int | None = None,
    **values: Any,
) -> dict[str, Any]:
    """Check ``values`` against the rule's constraint table; return them in canonical form.

    Parameters
    ----------
    rule : str
        The rule's name, for the messages.
    constraints : mapping of str to Constraint
        The rule's table (declared once, at module level).
    d : int, optional
        The gradients' length, for :class:`Vector` constraints.
    **values
        The arguments to check, by name; each must be in ``constraints``.

    Returns
    -------
    dict
        The checked values, by name, in the order given.

    Raises
    ------
    TypeError, ValueError
        As the constraint says; a name missing from the table is a ``TypeError`` (a bug in the
        caller, never the user's input).
    """
    out: dict[str, Any] = {}
    for name, value in values.items():
        constraint = constraints.get(name)
        if constraint is None:
            raise TypeError(f"check_params: {rule} declares no constraint for {name!r}")
        out[name] = constraint.check(value, rule=rule, name=name, d=d)
    return out


def describe(constraints: Mapping[str, Constraint], names: Iterable[str] | None = None) -> dict[str, str]:
    """What each option allows, in words (for documentation and the messages of wrappers)."""
    keys = list(constraints) if names is None else list(names)
    return {k: constraints[k].describe() for k in keys}
