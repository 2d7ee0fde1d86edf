"""Name → function registries for rules, pre-aggregators and attacks.

The trainer, ``robustagg experiment``, ``robustagg bench`` and the robustness matrix look rules
and attacks up here by name, so that a new rule plugs into all of them by one line:
``register_rule("name", function)``.

Names are looked up by one function, :func:`resolve_name`: case-insensitively, with hyphens,
underscores and spaces equivalent, and by the names the tables print (:data:`DISPLAY_NAMES`:
``"Multi-Krum"``, ``"TrMean"``, ``"Min-Max"``, ...); an unknown name is a ``ValueError`` that
suggests the closest registered names. The command line uses the same function.
"""

from __future__ import annotations

import difflib
import inspect
import re
from collections.abc import Callable, Iterable, Mapping
from typing import Any

__all__ = [
    "ATTACKS",
    "DISPLAY_NAMES",
    "PREAGGREGATORS",
    "RULES",
    "BoundRule",
    "call_with_supported",
    "get_attack",
    "get_rule",
    "normalize_name",
    "register_attack",
    "register_preaggregator",
    "register_rule",
    "resolve_name",
    "resolve_rule_name",
]

RULES: dict[str, Callable[..., Any]] = {}
PREAGGREGATORS: dict[str, Callable[..., Any]] = {}
ATTACKS: dict[str, Callable[..., Any]] = {}

DISPLAY_NAMES: dict[str, str] = {
    # rules
    "mean": "Mean",
    "trimmed_mean": "TrMean",
    "median": "Median",
    "geometric_median": "GeoMed",
    "krum": "Krum",
    "multi_krum": "Multi-Krum",
    "bulyan": "Bulyan",
    "dnc": "DnC",
    "signguard": "SignGuard",
    "signguard_sim": "SignGuard-Sim",
    "signguard_dist": "SignGuard-Dist",
    "meamed": "MeaMed",
    "centered_clipping": "CClip",
    "clipped_clustering": "Clipped Clustering",
    "fltrust": "FLTrust",
    "monna": "MoNNA",
    "mda": "MDA",
    "caf": "CAF",
    "smea": "SMEA",
    # pre-aggregators
    "nnm": "NNM",
    "arc": "ARC",
    "bucketing": "Bucketing",
    "clipping": "Clipping",
    # attacks
    "none": "No Attack",
    "gaussian": "Random",
    "noise": "Noise",
    "label_flip": "Label-flip",
    "byzmean": "ByzMean",
    "sign_flip": "Sign-flip",
    "lie": "LIE",
    "min_max": "Min-Max",
    "min_sum": "Min-Sum",
    "reverse_scaled": "Reverse",
    "time_varying": "Time-varying",
    "ipm": "IPM",
    "fang": "Fang",
    "mimic": "Mimic",
    "sign_matching": "Sign-matching",
    "line_search": "Line-search",
    "inf": "Inf",
    "nan": "NaN",
}
"""The names tables and papers print for registered names (``robustagg experiment``'s tables,
the docs), by registered name. Each is accepted wherever a name is looked up; names that differ
from the registered one only by case or by ``-``/``_``/space (``"Multi-Krum"``, ``"MoNNA"``)
are found without an entry. ``"none"``, ``"label_flip"`` and ``"time_varying"`` are the
trainer's (``robustagg experiment --attacks``), found where it looks names up."""

_TABLES = {"rule": RULES, "pre-aggregator": PREAGGREGATORS, "attack": ATTACKS}
_SEPARATORS = re.compile(r"[\s_-]+")


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


# ------------------------------------------------------------------------------------------------
# names
# ------------------------------------------------------------------------------------------------
def normalize_name(name: str) -> str:
    """The form in which names are compared: lower case, each run of hyphens, underscores and
    white space one ``_``, no white space around.

    Examples
    --------
    >>> normalize_name("Multi-Krum"), normalize_name(" signguard  sim "), normalize_name("TrMean")
    ('multi_krum', 'signguard_sim', 'trmean')
    """
    return _SEPARATORS.sub("_", name.strip().lower())


def resolve_name(
    name: str,
    kind: str,
    names: Iterable[str] | None = None,
    *,
    caller: str | None = None,
) -> str:
    """The registered name that ``name`` designates.

    Parameters
    ----------
    name : str
        A registered name, the same in another case or with ``-``, ``_`` and spaces exchanged
        (``"Multi-Krum"``, ``"multi krum"``), or a name of :data:`DISPLAY_NAMES`
        (``"TrMean"``, ``"GeoMed"``, ``"Min-Max"``).
    kind : {"rule", "attack", "pre-aggregator"}
        What is looked up, for the registry and the messages.
    names : iterable of str, optional
        The names to choose from (default: the registry of ``kind``); the command line adds the
        trainer's own attacks this way.
    caller : str, optional
        Prefix of the error message (``"get_rule"``).

    Returns
    -------
    str
        The registered name, exactly as registered.

    Raises
    ------
    ValueError
        ``name`` designates nothing (the message suggests the closest names and lists them all)
        or several names that differ only by case or separators.
    TypeError
        ``name`` is not a string.
    """
    prefix = f"{caller}: " if caller else ""
    if kind not in _TABLES:
        raise ValueError(f"resolve_name: argument 'kind' must be one of {', '.join(_TABLES)}, got {kind!r}")
    if not isinstance(name, str):
        raise TypeError(f"{prefix}the {kind}'s name must be a str, got {name!r} ({type(name).__name__})")
    candidates = list(_TABLES[kind] if names is None else names)
    if name in candidates:
        return name
    index: dict[str, set[str]] = {}
    for c in candidates:
        index.setdefault(normalize_name(c), set()).add(c)
    for c in candidates:
        if c in DISPLAY_NAMES:
            index.setdefault(normalize_name(DISPLAY_NAMES[c]), set()).add(c)
    key = normalize_name(name)
    found = sorted(index.get(key, ()))
    if len(found) == 1:
        return found[0]
    if found:
        raise ValueError(f"{prefix}{kind} name {name!r} is ambiguous: it matches {', '.join(found)}")
    close: list[str] = []
    for match in difflib.get_close_matches(key, list(index), n=6, cutoff=0.6):
        close += [c for c in sorted(index[match]) if c not in close]
    hint = f" (did you mean {' or '.join(repr(c) for c in close[:3])}?)" if close else ""
    elsewhere = [c for c, shown in DISPLAY_NAMES.items() if key in (c, normalize_name(shown))]
    if elsewhere and not close:
        hint = f" ({elsewhere[0]!r} is not a registered {kind} here)"
    pre = [p for p in PREAGGREGATORS if normalize_name(p) == key] if kind == "rule" else []
    if pre:
        hint = f" ({pre[0]!r} is a pre-aggregator: compose it with a rule, as in '{pre[0]}+mean')"
    listing = ", ".join(sorted(candidates)) or "none"
    raise ValueError(f"{prefix}unknown {kind} {name!r}{hint}; available {kind}s: {listing}")


def resolve_rule_name(name: str, caller: str | None = None) -> str:
    """The registered rule ``name`` designates (as :func:`resolve_name`), or, for a ``+``-joined
    composition that is not registered itself, the composition of the registered names of its
    steps (``"NNM + Multi-Krum"`` → ``"nnm+multi_krum"``); ``ValueError`` otherwise."""
    try:
        return resolve_name(name, "rule", caller=caller)
    except ValueError:
        if "+" not in name:
            raise
    *pre, final = [part.strip() for part in name.split("+")]
    try:
        steps = [resolve_name(p, "pre-aggregator") for p in pre] + [resolve_name(final, "rule")]
    except ValueError as exc:
        raise ValueError(f"{caller + ': ' if caller else ''}in {name!r}: {exc}") from None
    return "+".join(steps)


# ------------------------------------------------------------------------------------------------
# options
# ------------------------------------------------------------------------------------------------
def _signature(fn: Callable[..., Any]) -> inspect.Signature | None:
    try:
        return inspect.signature(fn)
    except (TypeError, ValueError):  # builtins and other callables without one
        return None


def _options_taken(fn: Callable[..., Any]) -> frozenset[str] | None:
    """The keyword options ``fn`` takes after its first argument (None: any, ``**kwargs``)."""
    sig = _signature(fn)
    if sig is None:
        return None
    params = list(sig.parameters.values())
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params):
        return None
    kinds = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
    return frozenset(p.name for p in params[1:] if p.kind in kinds)


class _BoundSignature:
    """``BoundRule.__signature__``: the bound rule's signature on an instance, none on the class
    (``inspect.signature(BoundRule)`` then describes the constructor)."""

    def __get__(self, obj: Any, objtype: Any = None) -> inspect.Signature | None:
        return None if obj is None else obj._bound_signature()


class BoundRule:
    """A rule with options bound to it, built by ``get_rule(name, **options)``.

    Calling it with the gradients calls the rule with the bound options;
    ``bound(grads, **more)`` adds or overrides options for that call. ``f`` is accepted for
    every rule and passed only to the rules that take it (``mean``, ``median``, SignGuard and
    ``fltrust`` do not); any other option the rule does not take is a ``TypeError`` when the
    object is built. The object pickles whenever the rule and the option values do (registered
    rules are module-level functions, pickled by reference) and is safe to call from several
    threads.

    Parameters
    ----------
    rule : callable
        The rule (``rule(grads, **options)``).
    options : mapping
        The options to bind.
    name : str, optional
        The rule's name, for messages and the ``repr`` (default: its ``__name__``).

    Attributes
    ----------
    func : callable
        The rule.
    name : str
        Its name (the registered name when built from one).
    options : dict
        The options as bound, ``f`` included.
    keywords : dict
        The options the rule receives: ``options`` less an ``f`` the rule does not take.

    Examples
    --------
    >>> import numpy as np, robustagg
    >>> G = np.random.default_rng(0).normal(size=(9, 4))
    >>> krum = robustagg.get_rule("Multi-Krum", f=2)
    >>> krum
    robustagg.get_rule('multi_krum', f=2)
    >>> bool(np.array_equal(krum(G), robustagg.multi_krum(G, f=2)))
    True
    >>> robustagg.get_rule("median", f=2)(G).shape     # f does not reach the median
    (4,)
    """

    def __init__(
        self, rule: Callable[..., Any], options: Mapping[str, Any], *, name: str | None = None
    ) -> None:
        if not callable(rule):
            raise TypeError(f"BoundRule: argument 'rule' must be callable, got {rule!r}")
        self.func = rule
        self.name = name if name is not None else getattr(rule, "__name__", repr(rule))
        self._by_name = name is not None
        self._taken = _options_taken(rule)
        self._takes_f = self._taken is None or "f" in self._taken
        self._check(options, when="get_rule")
        if "f" in options:
            from ._validation import check_int

            check_int(options["f"], rule=self.name, name="f", low=0)
        self.options = dict(options)
        self.keywords = self._passed(self.options)
        # what a function built by ``def`` carries (the trainer and the tables read __name__)
        self.__name__ = getattr(rule, "__name__", self.name)

    def _check(self, options: Mapping[str, Any], *, when: str) -> None:
        if self._taken is None:
            return
        unknown = [k for k in options if k != "f" and k not in self._taken]
        if unknown:
            taken = ", ".join(sorted(self._taken)) or "none"
            raise TypeError(
                f"{when}: rule {self.name!r} takes no option {', '.join(map(repr, unknown))}; "
                f"its options: {taken}"
                + ("" if self._takes_f else " (f is accepted for every rule but not passed to this one)")
            )

    def _passed(self, options: Mapping[str, Any]) -> dict[str, Any]:
        return {k: v for k, v in options.items() if k != "f" or self._takes_f}

    def __call__(self, grads: Any, /, *args: Any, **more: Any) -> Any:
        if args:
            raise TypeError(
                f"{self!r}: options after the gradients go by keyword (f=..., rng=...), "
                f"got {len(args)} positional argument(s)"
            )
        if not more:
            return self.func(grads, **self.keywords)
        self._check(more, when=repr(self))
        return self.func(grads, **{**self.keywords, **self._passed(more)})

    def _bound_signature(self) -> inspect.Signature | None:
        """The rule's signature with the options after the gradients keyword-only, the bound
        ones as defaults (so generic code that inspects it passes only what the rule takes)."""
        sig = _signature(self.func)
        if sig is None:
            return None
        params = list(sig.parameters.values())
        out = params[:1]
        for p in params[1:]:
            if p.kind is inspect.Parameter.VAR_POSITIONAL:
                continue
            if p.kind is inspect.Parameter.VAR_KEYWORD:
                out.append(p)
                continue
            kind = inspect.Parameter.KEYWORD_ONLY
            default = self.keywords.get(p.name, p.default)
            out.append(p.replace(kind=kind, default=default))
        return sig.replace(parameters=out)

    __signature__ = _BoundSignature()

    def __repr__(self) -> str:
        head = repr(self.name) if self._by_name else repr(self.func)
        opts = "".join(f", {k}={v!r}" for k, v in self.options.items())
        return f"robustagg.get_rule({head}{opts})"


# ------------------------------------------------------------------------------------------------
# look-ups
# ------------------------------------------------------------------------------------------------
def get_rule(name: str | Callable[..., Any], /, **options: Any) -> Callable[..., Any]:
    """The rule registered under ``name``, with ``options`` bound to it.

    Parameters
    ----------
    name : str or callable
        A registered rule's name, matched as :func:`resolve_name` says: in any case, with
        ``-``, ``_`` and spaces equivalent, or by the name the tables print (``"Multi-Krum"``,
        ``"TrMean"``, ``"GeoMed"``, ``"SignGuard-Sim"``, ``"DnC"``, ``"MeaMed"``). A name
        joining pre-aggregators and a rule with ``+`` (``"nnm+krum"``,
        ``"bucketing+trimmed_mean"``) that is not registered itself is composed on the fly with
        :func:`robustagg.pipeline`, so the trainer, ``robustagg experiment`` and the robustness
        matrix accept compositions by name. A callable is taken as it is.
    **options
        Options bound to the rule. ``f`` may be given for every rule and reaches only the rules
        that take it, so one call serves a loop over every rule; any other option the rule does
        not take is a ``TypeError`` here, not at the first call.

    Returns
    -------
    callable
        Without options, the registered function itself (a :class:`~robustagg.Pipeline` for a
        composition, the callable given); with options, a :class:`BoundRule` that calls it with
        them (``rule(grads, **more)`` adds or overrides options for one call).

    Raises
    ------
    ValueError
        Unknown name; the message suggests the closest registered names and lists them.
    TypeError
        An option the rule does not take (the message lists those it takes), or ``f`` not an
        integer.

    Examples
    --------
    >>> import numpy as np, robustagg
    >>> G = np.random.default_rng(0).normal(size=(20, 5))
    >>> for name in ("mean", "TrMean", "Multi-Krum", "signguard"):
    ...     aggregate = robustagg.get_rule(name, f=4)(G)   # f reaches trimmed_mean, multi_krum
    >>> robustagg.get_rule("Krum") is robustagg.krum
    True
    """
    if callable(name):
        fn: Callable[..., Any] = name
        label = None
    elif isinstance(name, str):
        label = resolve_rule_name(name, "get_rule")
        if label in RULES:
            fn = RULES[label]
        else:
            from .rules.preaggregation import pipeline

            fn = pipeline(label)
    else:
        raise TypeError(
            f"get_rule: argument 'name' must be a rule's name or a callable, got {name!r} "
            f"({type(name).__name__})"
        )
    if not options:
        return fn
    return BoundRule(fn, options, name=label)


def get_attack(name: str | Callable[..., Any]) -> Callable[..., Any]:
    """The attack registered under ``name`` (a callable is returned as it is).

    Names match as for :func:`get_rule`: in any case, with ``-``, ``_`` and spaces equivalent,
    or by the name the tables print (``"Min-Max"``, ``"Sign-flip"``, ``"ByzMean"``, ``"LIE"``,
    ``"Random"`` for ``gaussian``); an unknown name is a ``ValueError`` with the closest names.
    """
    if callable(name):
        return name
    return ATTACKS[resolve_name(name, "attack", caller="get_attack")]


def call_with_supported(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """Call ``fn`` passing only the keyword arguments its signature accepts.

    Lets generic code (trainer, benchmarks, robustness matrix) pass ``f`` and ``rng`` to every
    rule without each rule having to accept both. Arguments whose value is ``None`` and that the
    function does not accept are dropped silently; others that it does not accept are dropped too.
    To pass only ``f`` (and options the rule takes), ``get_rule(name, f=f)`` does the same and
    checks the other options.
    """
    try:
        params = inspect.signature(fn).parameters
    except (TypeError, ValueError):  # builtins
        return fn(*args, **kwargs)
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        return fn(*args, **kwargs)
    return fn(*args, **{k: v for k, v in kwargs.items() if k in params})
