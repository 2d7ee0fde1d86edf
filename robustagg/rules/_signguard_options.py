"""SignGuard's options, defined once: names, defaults, constraints and documentation.

:class:`SignGuardOptions` is the one table of SignGuard's keyword options. Each field carries
the option's default, its constraint (a :mod:`robustagg._params` constraint) and its entry in
the Parameters section of the docstrings. Everything else reads it:

* :func:`check_options` is the one checker: :func:`robustagg.signguard` and its variants (on
  every call), the :class:`robustagg.SignGuard` wrapper (at construction) and
  :func:`robustagg.dask.signguard` all check their options with it, so they give the same
  messages naming themselves;
* :data:`DEFAULTS` and :data:`PARAMS` are the defaults and the constraint table by name, in the
  signatures' order; :data:`REFERENCE` is the variants' extra ``reference`` option;
* :func:`parameters_doc` writes the Parameters section from the table.

The public functions keep their signatures written out (so IDEs, type checkers and the API
pages read them from the source); ``tests/test_signguard_options.py`` checks that each one
lists exactly the table's options with the table's defaults, in its order.

Names here are public within the package (the rule module and the Dask twin import them).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, fields
from typing import Any

import numpy as np

from .._params import (
    BOOLEAN,
    NONFINITE,
    SEED,
    Constraint,
    Either,
    Mapping_,
    OneOf,
    Optional,
    Real,
    Vector,
    check_params,
)
from .._validation import check_choice

__all__ = [
    "AGGREGATORS",
    "DEFAULTS",
    "PARAMS",
    "REFERENCE",
    "Coordinates",
    "SignGuardOptions",
    "check_options",
    "parameters_doc",
]

#: The built-in final aggregators (coordinate-wise: the Dask twin computes them per column block).
AGGREGATORS = ("mean", "trimmed_mean", "median")
COORDINATE_MODES = ("random", "window")


@dataclass(frozen=True)
class Coordinates(Constraint):
    """``"random"``, ``"window"`` or a non-empty 1-D array of integer column indices, returned
    sorted without duplicates (int64). Without ``d`` (the wrapper's construction) only negative
    indices are refused; with ``d`` every index must lie in ``[0, d)``."""

    def check(self, value: Any, *, rule: str, name: str, d: int | None = None) -> Any:
        if isinstance(value, str):
            return check_choice(value, COORDINATE_MODES, rule=rule, name=name)
        idx = np.asarray(value)
        if idx.ndim != 1 or idx.size == 0 or idx.dtype.kind not in "iu":
            raise ValueError(
                f"{rule}: argument {name!r} must be 'random', 'window' or a non-empty 1-D array of "
                f"integer column indices, got {value!r}"
            )
        idx = np.unique(idx.astype(np.int64))
        if d is None and idx[0] < 0:
            raise ValueError(
                f"{rule}: argument {name!r} holds negative indices ({int(idx[0])}); column indices are in [0, d)"
            )
        if d is not None and (idx[0] < 0 or idx[-1] >= d):
            raise ValueError(
                f"{rule}: argument {name!r} holds indices outside [0, {d}): {idx[[0, -1]].tolist()}"
            )
        return idx

    def describe(self) -> str:
        return "'random', 'window' or a non-empty 1-D array of column indices in [0, d)"


def _option(default: Any, constraint: Constraint, kind: str, doc: str) -> Any:
    """A field of the table: the default, the constraint, the type and text of its doc entry."""
    return field(default=default, metadata={"constraint": constraint, "kind": kind, "doc": doc})


@dataclass(frozen=True)
class SignGuardOptions:
    """SignGuard's keyword options in the signatures' order, each with its default, constraint
    and documentation; an instance holds checked values (``SignGuardOptions(**check_options(...))``)
    and is what the decision stage reads."""

    lower: float = _option(
        0.1, Real(low=0.0), "float",
        "The norm filter's lower bound L: row i passes when ``L <= |g_i| / M <= R`` (inclusive).",
    )  # fmt: skip
    upper: float = _option(
        3.0, Real(low=0.0), "float",
        "The norm filter's upper bound R, at least ``lower``.",
    )  # fmt: skip
    coordinate_fraction: float = _option(
        0.1, Real(low=0.0, high=1.0, low_open=True), "float in (0, 1]",
        "Share of coordinates whose signs are counted: ``k = max(1, round(fraction * d))``\n"
        "(Python's ``round``, half to even).",
    )  # fmt: skip
    coordinates: Any = _option(
        "random", Coordinates(), '{"random", "window"} or array of int',
        '``"random"``: k coordinates drawn uniformly without replacement (the paper);\n'
        '``"window"``: k contiguous coordinates at a random offset (the authors\' code);\n'
        "an array: exactly these column indices (duplicates removed).",
    )  # fmt: skip
    feature_scaling: str = _option(
        "none", OneOf("none", "max"), '{"none", "max"}',
        '``"max"`` divides each sign-feature column by its maximum over the rows (the authors\'\n'
        "code; a column that is all zero is left as it is). The similarity feature of the\n"
        "variants is not rescaled.",
    )  # fmt: skip
    clustering: str = _option(
        "meanshift", OneOf("meanshift", "kmeans"), '{"meanshift", "kmeans"}',
        "Mean-Shift as scikit-learn's ``MeanShift(bandwidth=estimate_bandwidth(F, quantile=0.5),\n"
        "bin_seeding=True, cluster_all=False)`` (orphans belong to no cluster; a zero bandwidth,\n"
        "e.g. n <= 3 or identical features, makes one cluster), or 2-means. S2 is the largest\n"
        "cluster; equal sizes go to the cluster with the densest center (smallest label).",
    )  # fmt: skip
    aggregator: str | Callable[..., Any] = _option(
        "mean", Either(OneOf(*AGGREGATORS)), '{"mean", "trimmed_mean", "median"} or callable',
        "Final averaging of the clipped kept rows ``g_i · min(1, M/|g_i|)``. A callable gets the\n"
        "(|S|, d) NumPy matrix of those rows (plus ``aggregator_options``) and returns (d,).\n"
        '``"trimmed_mean"`` trims ``f`` rows per side, default ``min(floor(0.1 |S|), (|S|-1)//2)``.',
    )  # fmt: skip
    aggregator_options: dict | None = _option(
        None, Optional(Mapping_()), "dict",
        'Keyword arguments for the aggregator (e.g. ``{"f": 2}`` for the trimmed mean).',
    )  # fmt: skip
    norm_filter: bool = _option(
        True, BOOLEAN, "bool",
        "Ablation switch (the paper's Table III): without the norm filter S1 is every row.",
    )  # fmt: skip
    sign_clustering: bool = _option(
        True, BOOLEAN, "bool",
        "Ablation switch: without sign clustering S2 is every row (no coordinates are drawn).",
    )  # fmt: skip
    clipping: bool = _option(
        True, BOOLEAN, "bool",
        "Ablation switch: without clipping the kept rows are averaged as they are.",
    )  # fmt: skip
    rng: Any = _option(
        None, SEED, "None, int or numpy.random.Generator",
        "Draws the coordinates (and the k-means starts). The same seed gives the same output.",
    )  # fmt: skip
    nonfinite: str = _option(
        "exclude", NONFINITE, '{"exclude", "raise"}',
        "Rows holding NaN/±Inf are excluded first (and reported) or make the call raise.",
    )  # fmt: skip
    return_info: bool = _option(
        False, BOOLEAN, "bool",
        "Also return a :class:`~robustagg.Diagnostics` with ``kept`` (S, the rows averaged),\n"
        "``S1``, ``S2`` (masks over the n rows), ``norms``, ``median_norm``, ``features``,\n"
        "``labels`` (-1: orphan or excluded row), ``bandwidth``, ``coordinates`` (the sampled\n"
        "column indices), ``similarity`` (the variants' raw similarity), ``weights`` (the\n"
        "clipping factors, 0 for rows not kept) and ``fallback``.",
    )  # fmt: skip


REFERENCE = Optional(Vector(keep_float32=True))
"""The variants' extra option ``reference`` (first in their signatures, default None). float32 is
kept as float32: the kernels widen each value to float64 exactly (the same sums as on a float64
copy, without a 2d-byte conversion per call)."""
_REFERENCE_DOC = (
    'The "correct" gradient the similarity is measured to, usually the previous round\'s\n'
    "aggregate (see :class:`SignGuard`). Without it, row i's similarity is the median of\n"
    "its similarities to the other rows (O(n^2 d))."
)

#: Every option's default, in the signatures' order.
DEFAULTS: dict[str, Any] = {f.name: f.default for f in fields(SignGuardOptions)}
#: The constraint table (``reference`` included), for :func:`robustagg._params.check_params`.
PARAMS: dict[str, Constraint] = {
    "reference": REFERENCE,
    **{f.name: f.metadata["constraint"] for f in fields(SignGuardOptions)},
}


def check_options(rule: str, /, *, d: int | None = None, **values: Any) -> dict[str, Any]:
    """Check the options given (by name, any subset of :data:`PARAMS`) against the table.

    ``upper`` must also be at least ``lower`` (the one given, else the default): it is checked
    as a real in ``[lower, inf)``. ``d`` (the gradients' length) is needed for ``reference`` and
    bounds explicit ``coordinates``; without it only negative column indices are refused.

    Returns
    -------
    dict
        The checked values in canonical form (floats, bools, a Generator for ``rng``, a dict
        or None for ``aggregator_options``, sorted int64 indices for an array of coordinates),
        in the order given.
    """
    lower = check_params(rule, PARAMS, lower=values.get("lower", DEFAULTS["lower"]))["lower"]
    return check_params(rule, {**PARAMS, "upper": Real(low=lower)}, d=d, **values)


def _default_text(value: Any) -> str:
    return f'"{value}"' if isinstance(value, str) else repr(value)


def _entry(name: str, kind: str, default: Any, doc: str) -> str:
    head = f"{name} : {kind}, " + ("optional" if default is None else f"default {_default_text(default)}")
    return "\n".join([f"    {head}", *(f"        {line}" for line in doc.splitlines())])


def parameters_doc(*, reference: bool = False) -> str:
    """The Parameters section of the rule's docstrings, from the table (``grads`` first, then
    ``reference`` for the variants, then every option in order)."""
    entries = [
        "    grads : array_like, shape (n, d)\n        Client gradients: a NumPy/PyTorch/JAX/array-API "
        "array or a sequence of n 1-D arrays."
    ]
    if reference:
        entries.append(_entry("reference", "array_like of shape (d,)", None, _REFERENCE_DOC))
    for f in fields(SignGuardOptions):
        entries.append(_entry(f.name, f.metadata["kind"], f.default, f.metadata["doc"]))
    return "\n    Parameters\n    ----------\n" + "\n".join(entries) + "\n"
