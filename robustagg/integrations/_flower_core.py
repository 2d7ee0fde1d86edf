"""The framework-free core of the Flower strategies (:mod:`robustagg.integrations.flower`).

:class:`RobustAggregator` turns the clients' per-layer arrays into the rule's ``(n, d)`` matrix
(malformed replies as NaN rows), runs the rule and cuts the aggregate back into layers, or skips
the round when the rule refuses it; :class:`_Round` is what one round yields. The strategies
report a round with :func:`diagnostic_metrics`, :func:`log_round` (on the ``robustagg.flower``
logger) and :func:`history_entry`.
"""

from __future__ import annotations

import inspect
import logging
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .._diagnostics import Diagnostics
from .._registry import get_rule
from .._validation import TooFewClientsError, check_choice, check_int, check_rng, nonfinite_mask
from ._flower_layout import ArrayLayout, read_layers, reply_layout

__all__ = ["AGGREGATE_ON", "RobustAggregator", "diagnostic_metrics", "history_entry", "log_round", "logger"]

AGGREGATE_ON = ("updates", "weights")

logger = logging.getLogger("robustagg.flower")  # the name docs/conventions.md documents


@dataclass
class _Round:
    """One round's aggregation, everything the strategies report."""

    arrays: dict[str, np.ndarray] | None
    info: Diagnostics | None
    malformed: np.ndarray
    nonfinite: np.ndarray
    malformed_reasons: dict[int, str] = field(default_factory=dict)
    skipped: str | None = None  # why no aggregate was made


class RobustAggregator:
    """Aggregate per-layer client arrays with a robustagg rule (the core of both strategies).

    Parameters
    ----------
    rule : str or callable, default "mean"
        A registered rule name (``robustagg.RULES``), a rule function, or a callable object such
        as the stateful SignGuard wrapper. It is called as ``rule(G, **rule_kwargs)`` on the
        ``(n, d)`` matrix of flattened client updates (or weights), with ``rng`` and
        ``return_info=True`` added when its signature accepts them.
    f : int, optional
        Number of Byzantine clients, passed as ``f`` when the rule accepts it (and ignored by
        rules that do not use it, such as ``mean``).
    rule_kwargs : dict, optional
        Further keyword arguments for the rule; each must be accepted by its signature.
    aggregate_on : {"updates", "weights"}, default "updates"
        Aggregate ``client - global`` and add the result to the global arrays, or aggregate the
        client arrays themselves.
    rng : None, int or numpy.random.Generator
        Seed of the generator passed to randomised rules, one draw per round (a fixed seed makes
        the whole run reproducible).
    """

    def __init__(
        self,
        rule: str | Callable[..., Any] = "mean",
        *,
        f: int | None = None,
        rule_kwargs: Mapping[str, Any] | None = None,
        aggregate_on: str = "updates",
        rng: Any = None,
    ) -> None:
        self.rule_name = rule if isinstance(rule, str) else getattr(rule, "__name__", type(rule).__name__)
        fn = get_rule(rule)
        if not callable(fn):
            raise TypeError(
                f"RobustAggregator: argument 'rule' must be a rule name or a callable, got {rule!r}"
            )
        self.rule = fn
        self.aggregate_on = check_choice(
            aggregate_on, AGGREGATE_ON, rule="RobustAggregator", name="aggregate_on"
        )
        self.rng = check_rng(rng, rule="RobustAggregator")
        params, var_kw = _signature(fn)
        kwargs = dict(rule_kwargs or {})
        unknown = [k for k in kwargs if not var_kw and k not in params]
        if unknown:
            raise TypeError(
                f"RobustAggregator: rule {self.rule_name!r} does not accept {unknown}; "
                f"it accepts {sorted(p for p in params if p != 'grads')}"
            )
        if f is not None:
            f = check_int(f, rule="RobustAggregator", name="f", low=0)
            if var_kw or "f" in params:
                kwargs["f"] = f
        self.rule_kwargs = kwargs
        self._pass_rng = var_kw or "rng" in params
        self._pass_info = var_kw or "return_info" in params

    def aggregate_matrix(self, G: np.ndarray) -> tuple[np.ndarray, Diagnostics]:
        """Run the rule on the ``(n, d)`` matrix; always return ``(aggregate, Diagnostics)``."""
        kwargs = dict(self.rule_kwargs)
        if self._pass_rng:
            kwargs["rng"] = self.rng
        if self._pass_info:
            out, info = self.rule(G, **kwargs, return_info=True)
        else:
            out = self.rule(G, **kwargs)
            bad = nonfinite_mask(G)
            info = Diagnostics(self.rule_name, kept=~bad, nonfinite=bad)
        return np.asarray(out), info

    def aggregate(
        self,
        client_arrays: Sequence[Mapping[str, Any] | Sequence[Any] | None],
        global_arrays: Mapping[str, Any] | Sequence[Any] | None = None,
    ) -> tuple[dict[str, np.ndarray] | None, Diagnostics | None, np.ndarray]:
        """Aggregate the clients' per-layer arrays.

        Parameters
        ----------
        client_arrays : list
            One entry per client: a dict of arrays, a list of arrays, or ``None`` for an
            unreadable reply.
        global_arrays : dict or list, optional
            The round's global arrays. Required with ``aggregate_on="updates"``; with
            ``"weights"`` it fixes the layout (otherwise the most common client layout is used).

        Returns
        -------
        arrays : dict of numpy.ndarray or None
            The new global arrays (keys, shapes and dtypes of the layout); ``None`` when the
            round is skipped: no client sent usable arrays, or the rule refused the round's
            matrix (too few usable clients for its bound on n and f).
        info : Diagnostics or None
            The rule's diagnostics over the n clients (``None`` for a skipped round).
        malformed : numpy.ndarray of bool, shape (n,)
            Clients whose reply was malformed (module docstring; sent to the rule as NaN rows).
        """
        r = self._aggregate(client_arrays, global_arrays)
        return r.arrays, r.info, r.malformed

    def _aggregate(
        self,
        client_arrays: Sequence[Mapping[str, Any] | Sequence[Any] | None],
        global_arrays: Mapping[str, Any] | Sequence[Any] | None,
    ) -> _Round:
        """:meth:`aggregate`, with the reasons the strategies log and record."""
        n = len(client_arrays)
        if n == 0:
            none = np.zeros(0, dtype=bool)
            return _Round(None, None, none, none, skipped="no replies")
        if global_arrays is None:
            if self.aggregate_on == "updates":
                raise ValueError(
                    "RobustAggregator: aggregate_on='updates' needs the round's global arrays "
                    "(the strategy records them in configure_train/configure_fit)"
                )
            layouts = [lay for lay in map(reply_layout, client_arrays) if lay is not None]
            if not layouts:
                every = np.ones(n, dtype=bool)
                return _Round(None, None, every, every, skipped="no client sent real-number arrays")
            layout = Counter((lay.keys, lay.shapes) for lay in layouts).most_common(1)[0][0]
            layout = next(lay for lay in layouts if (lay.keys, lay.shapes) == layout)
        else:
            layout = ArrayLayout.of(global_arrays)
        dtype = layout.float_dtype
        G = np.empty((n, layout.size), dtype=dtype)
        malformed = np.zeros(n, dtype=bool)
        reasons: dict[int, str] = {}
        for i, arrays in enumerate(client_arrays):
            layers, why = read_layers(layout, arrays)
            if layers is None:
                malformed[i] = True
                reasons[i] = str(why)
                G[i] = np.nan
                continue
            pos = 0
            with np.errstate(over="ignore", invalid="ignore"):  # too large for float32: Inf
                for a, size in zip(layers, layout.sizes, strict=True):
                    G[i, pos : pos + size] = a.reshape(-1)
                    pos += size
        base = None
        if self.aggregate_on == "updates":
            base = layout.flatten(global_arrays)
            with np.errstate(over="ignore", invalid="ignore"):
                G -= base
        nonfinite = nonfinite_mask(G)
        if nonfinite.all():
            reason = (
                f"no usable reply ({int(malformed.sum())} malformed, "
                f"{int((nonfinite & ~malformed).sum())} non-finite of {n})"
            )
            return _Round(None, None, malformed, nonfinite, reasons, skipped=reason)
        try:
            out, info = self.aggregate_matrix(G)
        except TooFewClientsError as exc:  # the rule's bound on n and f, or no finite row left
            reason = (
                f"the rule {self.rule_name!r} refused the round's {n} replies "
                f"({int(nonfinite.sum())} of them malformed or non-finite): {exc}"
            )
            return _Round(None, None, malformed, nonfinite, reasons, skipped=reason)
        if base is not None:
            out = base + out.astype(dtype, copy=False)
        return _Round(layout.unflatten(out.astype(dtype, copy=False)), info, malformed, nonfinite, reasons)


def _signature(fn: Callable[..., Any]) -> tuple[set[str], bool]:
    try:
        params = inspect.signature(fn).parameters
    except (TypeError, ValueError):  # pragma: no cover - builtins
        return set(), True
    var_kw = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())
    return set(params), var_kw


def diagnostic_metrics(r: _Round) -> dict[str, Any]:
    """The round's ``robustagg-*`` metrics (indices as lists; the legacy strategy joins them)."""
    if r.info is not None:
        kept, nonfinite = r.info.kept, r.info.nonfinite
    else:  # a skipped round: nothing kept
        kept, nonfinite = np.zeros(r.malformed.shape, dtype=bool), r.nonfinite
    return {
        "robustagg-clients": int(r.malformed.size),
        "robustagg-kept": int(kept.sum()),
        "robustagg-kept-indices": [int(i) for i in np.flatnonzero(kept)],
        "robustagg-nonfinite": int(nonfinite.sum()),
        "robustagg-malformed": int(r.malformed.sum()),
        "robustagg-malformed-indices": [int(i) for i in np.flatnonzero(r.malformed)],
        "robustagg-skipped": int(r.skipped is not None),
    }


def log_round(server_round: int, clients: Sequence[str], r: _Round) -> None:
    """Log the malformed replies (``clients``: how to name each reply) and, for a skipped round,
    why it was skipped."""
    if r.malformed_reasons:
        logger.warning(
            "robustagg: round %s: %d malformed replies excluded as Byzantine: %s",
            server_round,
            len(r.malformed_reasons),
            "; ".join(f"{clients[i]}: {why}" for i, why in list(r.malformed_reasons.items())[:10]),
        )
    if r.skipped is not None:
        logger.warning("robustagg: round %s skipped, global arrays kept: %s", server_round, r.skipped)


def history_entry(server_round: int, r: _Round) -> dict[str, Any]:
    """The round's entry in ``strategy.history``, less the clients' ids the strategy adds."""
    return {
        "server_round": server_round,
        "info": r.info,
        "malformed": r.malformed,
        "malformed_reasons": r.malformed_reasons,
        "skipped": r.skipped,
    }
