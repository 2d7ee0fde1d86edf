"""Name → function registries for rules, pre-aggregators and attacks.

The trainer, ``robustagg experiment``, ``robustagg bench`` and the robustness matrix look rules
and attacks up here by name, so that a new rule plugs into all of them by one line:
``register_rule("name", function)``.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

__all__ = [
    "ATTACKS",
    "PREAGGREGATORS",
    "RULES",
    "call_with_supported",
    "get_attack",
    "get_rule",
    "register_attack",
    "register_preaggregator",
    "register_rule",
]

RULES: dict[str, Callable[..., Any]] = {}
PREAGGREGATORS: dict[str, Callable[..., Any]] = {}
ATTACKS: dict[str, Callable[..., Any]] = {}


def _register(table: dict, kind: str, name: str, fn: Callable[..., Any]) -> Callable[..., Any]:
    if name in table and table[name] is not fn:
        raise ValueError(f"a {kind} named {name!r} is already registered")
    table[name] = fn
    return fn


def register_rule(name: str, fn: Callable[..., Any]) -> Callable[..., Any]:
    """Make an aggregation rule available by name."""
    return _register(RULES, "rule", name, fn)


def register_preaggregator(name: str, fn: Callable[..., Any]) -> Callable[..., Any]:
    """Make a pre-aggregator ((n, d) → (n', d)) available by name."""
    return _register(PREAGGREGATORS, "pre-aggregator", name, fn)


def register_attack(name: str, fn: Callable[..., Any]) -> Callable[..., Any]:
    """Make an attack available by name."""
    return _register(ATTACKS, "attack", name, fn)


def _get(table: dict, kind: str, name: str) -> Callable[..., Any]:
    if callable(name):
        return name
    try:
        return table[name]
    except KeyError:
        raise ValueError(f"unknown {kind} {name!r}; available: {', '.join(sorted(table))}") from None


def get_rule(name: str | Callable[..., Any]) -> Callable[..., Any]:
    """The rule registered under ``name`` (a callable is returned as it is).

    A name joining pre-aggregators and a rule with ``+`` (``"nnm+krum"``,
    ``"bucketing+trimmed_mean"``) that is not registered itself is composed on the fly with
    :func:`robustagg.pipeline`, so the trainer, ``robustagg experiment`` and the robustness
    matrix accept compositions by name.
    """
    if isinstance(name, str) and name not in RULES and "+" in name:
        from .preaggregation import pipeline

        return pipeline(name)
    return _get(RULES, "rule", name)


def get_attack(name: str | Callable[..., Any]) -> Callable[..., Any]:
    """The attack registered under ``name`` (a callable is returned as it is)."""
    return _get(ATTACKS, "attack", name)


def call_with_supported(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """Call ``fn`` passing only the keyword arguments its signature accepts.

    Lets generic code (trainer, benchmarks, robustness matrix) pass ``f`` and ``rng`` to every
    rule without each rule having to accept both. Arguments whose value is ``None`` and that the
    function does not accept are dropped silently; others that it does not accept are dropped too.
    """
    try:
        params = inspect.signature(fn).parameters
    except (TypeError, ValueError):  # builtins
        return fn(*args, **kwargs)
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        return fn(*args, **kwargs)
    return fn(*args, **{k: v for k, v in kwargs.items() if k in params})
