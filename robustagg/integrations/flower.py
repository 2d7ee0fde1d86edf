"""Flower strategies that aggregate with any robustagg rule (extra ``[flower]``).

Two strategies share one core:

* :class:`RobustStrategy` -- the Message API (flwr >= 1.21): a subclass of
  ``flwr.serverapp.strategy.FedAvg`` whose ``aggregate_train`` runs a robustagg rule;
* :class:`LegacyRobustStrategy` -- the legacy API: a subclass of
  ``flwr.server.strategy.FedAvg`` whose ``aggregate_fit`` does the same.

Each round the clients' per-layer arrays are flattened into one vector per client (an
``(n, d)`` matrix, layers in the order of the global model), the rule aggregates the matrix, and
the result is cut back into layers with their keys, shapes and dtypes (:class:`ArrayLayout`).

Conventions chosen here (and why):

* **Updates, not weights** (``aggregate_on="updates"``, the default). Flower clients send their
  new weights; robust rules are defined on gradients/updates -- SignGuard's norm filter, for
  instance, means nothing on raw weights, whose norms are all about the same. The strategy
  therefore aggregates ``client weights - global weights`` and adds the aggregate to the global
  weights. ``aggregate_on="weights"`` aggregates the weights themselves, as Flower's own
  ``Krum``/``FedMedian`` do.
* **Unweighted.** The rule sees every client once; ``num-examples`` is not used to weight the
  arrays (a Byzantine client could claim any number of examples). Client metrics are averaged
  (weighted, as in FedAvg) over the *kept* clients only.
* **Malformed replies are Byzantine.** A reply is malformed when it does not carry exactly the
  global model's layers (missing or extra keys, another shape), when a layer is not made of real
  numbers (strings, bytes, objects, complex numbers, dates; booleans where the model's layer is
  not boolean), or when reading it raises (unreadable bytes, ragged nested lists). It becomes a
  row of NaN, so the rule's non-finite policy excludes it and counts it against ``f``
  (docs/conventions.md, "Flower replies"), instead of the whole round failing. Non-finite values
  in a well-formed reply are left to that same policy. Integer layers are read as numbers;
  keys may come in any order (layers are looked up by key).
* **A short round is skipped, not failed.** When the rule refuses the round's matrix -- fewer
  usable replies than its bound on n and f allows (``krum`` needs n >= 2f + 3), or no usable
  reply at all -- the strategy keeps the global arrays (``aggregate_train`` / ``aggregate_fit``
  return ``None`` arrays), reports ``robustagg-skipped = 1`` in the metrics and logs the reason
  on the ``robustagg.flower`` logger. That is the rule's :class:`robustagg.TooFewClientsError`;
  any other error (a bad option, say) still fails the round. ``f`` itself is checked when the
  strategy is built.
* **Diagnostics as metrics.** The round's train metrics carry ``robustagg-clients`` (n),
  ``robustagg-kept`` (how many clients the rule kept), ``robustagg-kept-indices`` (their
  positions among the round's replies), ``robustagg-nonfinite`` (non-finite rows, malformed
  ones included), ``robustagg-malformed``, ``robustagg-malformed-indices`` and
  ``robustagg-skipped``. The full :class:`~robustagg.Diagnostics` of every round, with the node
  ids, why each malformed reply was refused and why a skipped round was skipped, is kept in
  ``strategy.history``.
* **Pickling.** The strategies and :class:`RobustAggregator` pickle whenever their rule does:
  every registered rule and every composition ``get_rule`` builds (``"nnm+krum"``) does.

Example
-------
>>> from robustagg.flower import RobustStrategy                      # doctest: +SKIP
>>> strategy = RobustStrategy("multi_krum", f=2, min_train_nodes=10,  # doctest: +SKIP
...                           min_available_nodes=10)
>>> result = strategy.start(grid=grid, initial_arrays=arrays, num_rounds=5)  # doctest: +SKIP
"""

from __future__ import annotations

import inspect
import logging
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from logging import INFO
from typing import Any

import numpy as np

try:
    import flwr  # noqa: F401
except ImportError as exc:  # pragma: no cover - exercised only without the extra
    raise ImportError(
        "robustagg.flower needs Flower: pip install 'robustagg[flower]' (flwr >= 1.21)"
    ) from exc

from flwr.app import Array, ArrayRecord, ConfigRecord, Message, MetricRecord
from flwr.common import (
    FitIns,
    FitRes,
    Parameters,
    Scalar,
    ndarrays_to_parameters,
    parameters_to_ndarrays,
)
from flwr.server.client_manager import ClientManager
from flwr.server.client_proxy import ClientProxy
from flwr.server.strategy import FedAvg as _LegacyFedAvg
from flwr.serverapp import Grid
from flwr.serverapp.strategy import FedAvg as _FedAvg
from flwr.supercore import log

from .._diagnostics import Diagnostics
from .._registry import get_rule
from .._validation import TooFewClientsError, check_choice, check_int, check_rng, nonfinite_mask

__all__ = ["ArrayLayout", "LegacyRobustStrategy", "RobustAggregator", "RobustStrategy"]

AGGREGATE_ON = ("updates", "weights")

logger = logging.getLogger("robustagg.flower")  # the name docs/conventions.md documents


# --------------------------------------------------------------------------------------------
# Flattening: per-layer arrays <-> one vector per client
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ArrayLayout:
    """The keys, shapes and dtypes of a model's arrays, to flatten and restore them.

    Attributes
    ----------
    keys : tuple of str
        Layer names in order (``"0"``, ``"1"``, ... for a plain list of arrays).
    shapes : tuple of tuple of int
        Each layer's shape.
    dtypes : tuple of numpy.dtype
        Each layer's dtype.
    """

    keys: tuple[str, ...]
    shapes: tuple[tuple[int, ...], ...]
    dtypes: tuple[np.dtype, ...]

    @classmethod
    def of(cls, arrays: Mapping[str, Any] | Sequence[Any]) -> ArrayLayout:
        """The layout of a dict of arrays (keys kept) or of a list of arrays (keys "0", "1", ...)."""
        items = _items(arrays)
        return cls(
            keys=tuple(k for k, _ in items),
            shapes=tuple(tuple(int(s) for s in np.shape(a)) for _, a in items),
            dtypes=tuple(np.asarray(a).dtype for _, a in items),
        )

    @property
    def sizes(self) -> tuple[int, ...]:
        return tuple(int(np.prod(s, dtype=np.int64)) for s in self.shapes)

    @property
    def size(self) -> int:
        """Total number of values d."""
        return int(sum(self.sizes))

    @property
    def float_dtype(self) -> np.dtype:
        """The dtype of the flat vector: float32 when every layer fits it, float64 otherwise."""
        if not self.dtypes:
            return np.dtype(np.float64)
        dtype = np.result_type(np.float32, *self.dtypes)
        return dtype if dtype == np.float32 else np.dtype(np.float64)

    def matches(self, arrays: Mapping[str, Any] | Sequence[Any]) -> bool:
        """Whether ``arrays`` has the same keys and shapes (dtypes may differ)."""
        items = _items(arrays)
        return (
            tuple(k for k, _ in items) == self.keys
            and tuple(tuple(int(s) for s in np.shape(a)) for _, a in items) == self.shapes
        )

    def flatten(self, arrays: Mapping[str, Any] | Sequence[Any], out: np.ndarray | None = None) -> np.ndarray:
        """Concatenate the layers (in this layout's order) into one vector of ``float_dtype``."""
        if not self.matches(arrays):
            raise ValueError(
                f"arrays do not match the model layout: got keys/shapes "
                f"{[(k, np.shape(a)) for k, a in _items(arrays)][:5]}, expected "
                f"{list(zip(self.keys, self.shapes, strict=True))[:5]}"
            )
        if out is None:
            out = np.empty(self.size, dtype=self.float_dtype)
        pos = 0
        for (_, a), size in zip(_items(arrays), self.sizes, strict=True):
            out[pos : pos + size] = np.asarray(a).reshape(-1)
            pos += size
        return out

    def unflatten(self, vector: np.ndarray) -> dict[str, np.ndarray]:
        """Cut a flat vector back into layers with this layout's keys, shapes and dtypes.

        Integer layers are rounded to the nearest integer, boolean layers thresholded at 0.5.
        """
        vector = np.asarray(vector)
        if vector.shape != (self.size,):
            raise ValueError(f"a vector of shape ({self.size},) is needed, got {vector.shape}")
        out: dict[str, np.ndarray] = {}
        pos = 0
        for key, shape, dtype, size in zip(self.keys, self.shapes, self.dtypes, self.sizes, strict=True):
            part = vector[pos : pos + size].reshape(shape)
            pos += size
            if dtype.kind == "b":
                out[key] = part >= 0.5
            elif dtype.kind in "iu":
                out[key] = np.rint(part).astype(dtype)
            else:
                out[key] = part.astype(dtype)
        return out


def _items(arrays: Mapping[str, Any] | Sequence[Any]) -> list[tuple[str, Any]]:
    if isinstance(arrays, ArrayRecord):
        return [(k, v.numpy()) for k, v in arrays.items()]
    if isinstance(arrays, Mapping):
        return [(str(k), v.numpy() if isinstance(v, Array) else v) for k, v in arrays.items()]
    return [(str(i), a) for i, a in enumerate(arrays)]


# dtype kinds a reply's layer may have: real numbers (booleans only where the model's layer is one)
_REAL_KINDS = "fiu"


def _read_layers(
    layout: ArrayLayout, arrays: Mapping[str, Any] | Sequence[Any] | None
) -> tuple[list[np.ndarray] | None, str | None]:
    """A reply's layers in the layout's order, or ``(None, why the reply is malformed)``.

    Never raises: whatever a client sent, the answer is its layers or a reason.
    """
    if arrays is None:
        return None, "no arrays (not exactly one ArrayRecord, or unreadable parameters)"
    try:
        if isinstance(arrays, Mapping):
            by_key = {str(k): v for k, v in arrays.items()}
            if len(by_key) != len(arrays):
                return None, "two keys with the same name"
        elif isinstance(arrays, (str, bytes)) or not isinstance(arrays, Sequence):
            return None, f"a {type(arrays).__name__}, not a dict or list of arrays"
        else:
            by_key = {str(i): a for i, a in enumerate(arrays)}
        if by_key.keys() != set(layout.keys):
            missing = [k for k in layout.keys if k not in by_key]
            extra = [k for k in by_key if k not in set(layout.keys)]
            return None, f"missing layers {missing[:5]}, unexpected layers {extra[:5]}"
        layers = []
        for key, shape, dtype in zip(layout.keys, layout.shapes, layout.dtypes, strict=True):
            value = by_key[key]
            a = value.numpy() if isinstance(value, Array) else np.asarray(value)
            if not (a.dtype.kind in _REAL_KINDS or (a.dtype.kind == "b" and dtype.kind == "b")):
                return None, f"layer {key!r} has dtype {a.dtype}, the model's layer is {dtype}"
            if a.shape != shape:
                return None, f"layer {key!r} has shape {a.shape}, the model's layer has {shape}"
            layers.append(a)
    except Exception as exc:  # unreadable bytes, ragged nested lists, anything a client can send
        return None, f"unreadable ({type(exc).__name__}: {exc})"
    return layers, None


def _reply_layout(arrays: Mapping[str, Any] | Sequence[Any] | None) -> ArrayLayout | None:
    """The layout of a reply made of real-number layers, or None."""
    if arrays is None:
        return None
    try:
        layout = ArrayLayout.of(arrays)
    except Exception:  # unreadable: malformed, whatever it is
        return None
    if not all(dt.kind in _REAL_KINDS or dt.kind == "b" for dt in layout.dtypes):
        return None
    return layout


@dataclass
class _Round:
    """One round's aggregation, everything the strategies report."""

    arrays: dict[str, np.ndarray] | None
    info: Diagnostics | None
    malformed: np.ndarray
    nonfinite: np.ndarray
    malformed_reasons: dict[int, str] = field(default_factory=dict)
    skipped: str | None = None  # why no aggregate was made


# --------------------------------------------------------------------------------------------
# The framework-free core
# --------------------------------------------------------------------------------------------


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
            layouts = [lay for lay in map(_reply_layout, client_arrays) if lay is not None]
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
            layers, why = _read_layers(layout, arrays)
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


def _diagnostic_metrics(r: _Round) -> dict[str, Any]:
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


def _log_round(server_round: int, clients: Sequence[str], r: _Round) -> None:
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


def _history(server_round: int, r: _Round) -> dict[str, Any]:
    return {
        "server_round": server_round,
        "info": r.info,
        "malformed": r.malformed,
        "malformed_reasons": r.malformed_reasons,
        "skipped": r.skipped,
    }


# --------------------------------------------------------------------------------------------
# Message API (flwr >= 1.21)
# --------------------------------------------------------------------------------------------


class RobustStrategy(_FedAvg):
    """FedAvg whose aggregation is a robustagg rule (Flower Message API, flwr >= 1.21).

    Parameters
    ----------
    rule : str or callable, default "mean"
        A registered rule name (``robustagg.RULES``), a rule function, or a callable object
        such as the stateful SignGuard wrapper.
    f : int, optional
        Number of Byzantine clients, passed to rules that take ``f``.
    rule_kwargs : dict, optional
        Further keyword arguments of the rule.
    aggregate_on : {"updates", "weights"}, default "updates"
        Aggregate the clients' updates (``client - global``, added back to the global arrays)
        or their weights.
    rng : None, int or numpy.random.Generator
        Randomness of randomised rules (SignGuard's coordinate sampling, DnC, ...).
    **fedavg_kwargs
        Passed to ``flwr.serverapp.strategy.FedAvg`` (``min_train_nodes``,
        ``fraction_evaluate``, ``train_metrics_aggr_fn``, ...).

    Attributes
    ----------
    history : list of dict
        One entry per aggregated round: ``server_round``, ``node_ids`` (reply order),
        ``info`` (the rule's :class:`~robustagg.Diagnostics`, ``None`` for a skipped round),
        ``malformed`` (boolean mask over the replies), ``malformed_reasons`` (reply index ->
        why) and ``skipped`` (why the round was skipped, or ``None``).
    global_arrays : ArrayRecord or None
        The arrays sent in the current round (recorded by ``configure_train``).

    Notes
    -----
    The returned MetricRecord holds the client metrics averaged over the kept clients (with
    ``train_metrics_aggr_fn``) plus ``robustagg-clients``, ``robustagg-kept``,
    ``robustagg-kept-indices``, ``robustagg-nonfinite``, ``robustagg-malformed``,
    ``robustagg-malformed-indices`` and ``robustagg-skipped``. No reply can make
    ``aggregate_train`` raise: malformed replies are excluded, and a round the rule cannot
    aggregate (too few usable replies) returns ``None`` arrays with its metrics and a logged
    reason.
    """

    def __init__(
        self,
        rule: str | Callable[..., Any] = "mean",
        *,
        f: int | None = None,
        rule_kwargs: Mapping[str, Any] | None = None,
        aggregate_on: str = "updates",
        rng: Any = None,
        **fedavg_kwargs: Any,
    ) -> None:
        super().__init__(**fedavg_kwargs)
        self.aggregator = RobustAggregator(
            rule, f=f, rule_kwargs=rule_kwargs, aggregate_on=aggregate_on, rng=rng
        )
        self.global_arrays: ArrayRecord | None = None
        self.history: list[dict[str, Any]] = []

    def summary(self) -> None:
        log(
            INFO,
            "\t├──> robustagg: rule %s, kwargs %s, on %s",
            self.aggregator.rule_name,
            self.aggregator.rule_kwargs,
            self.aggregator.aggregate_on,
        )
        super().summary()

    def configure_train(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        """Record the round's global arrays, then sample clients as FedAvg does."""
        self.global_arrays = arrays
        return super().configure_train(server_round, arrays, config, grid)

    def aggregate_train(
        self, server_round: int, replies: Iterable[Message]
    ) -> tuple[ArrayRecord | None, MetricRecord | None]:
        """Aggregate the replies' arrays with the rule; metrics over the kept clients."""
        valid, _ = self._check_and_log_replies(list(replies), is_train=True, validate=False)
        client_arrays: list[ArrayRecord | None] = []
        node_ids: list[int] = []
        for msg in valid:
            try:
                records = list(msg.content.array_records.values())
                client_arrays.append(records[0] if len(records) == 1 else None)
            except Exception:  # a reply without readable content
                client_arrays.append(None)
            node_ids.append(int(msg.metadata.src_node_id))
        r = self.aggregator._aggregate(client_arrays, self.global_arrays)
        _log_round(server_round, [f"node {i}" for i in node_ids], r)
        self.history.append({**_history(server_round, r), "node_ids": node_ids})
        metrics = MetricRecord()
        if r.info is not None:
            kept = [msg.content for msg, k in zip(valid, r.info.kept, strict=True) if k]
            try:
                client_metrics = self.train_metrics_aggr_fn(kept, self.weighted_by_key)
                for key, value in client_metrics.items():
                    metrics[key] = value
            except Exception as exc:  # a Byzantine client's metrics must not stop the round
                logger.warning("robustagg: client metrics of the kept clients not aggregated (%s)", exc)
        for key, value in _diagnostic_metrics(r).items():
            metrics[key] = value
        if r.arrays is None:
            return None, metrics
        return ArrayRecord({k: Array(v) for k, v in r.arrays.items()}), metrics


# --------------------------------------------------------------------------------------------
# Legacy API (flwr.server.strategy, aggregate_fit)
# --------------------------------------------------------------------------------------------


class LegacyRobustStrategy(_LegacyFedAvg):
    """Legacy Flower FedAvg (``aggregate_fit``) whose aggregation is a robustagg rule.

    Parameters
    ----------
    rule : str or callable, default "mean"
        A registered rule name (``robustagg.RULES``), a rule function, or a callable object
        such as the stateful SignGuard wrapper.
    f : int, optional
        Number of Byzantine clients, passed to rules that take ``f``.
    rule_kwargs : dict, optional
        Further keyword arguments of the rule.
    aggregate_on : {"updates", "weights"}, default "updates"
        Aggregate the clients' updates (``client - global``, added back to the global arrays)
        or their weights.
    rng : None, int or numpy.random.Generator
        Randomness of randomised rules (SignGuard's coordinate sampling, DnC, ...).
    **fedavg_kwargs
        Passed to ``flwr.server.strategy.FedAvg`` (``min_fit_clients``,
        ``fit_metrics_aggregation_fn``, ``initial_parameters``, ...).

    Attributes
    ----------
    history : list of dict
        One entry per aggregated round: ``server_round``, ``cids`` (result order), ``info``,
        ``malformed``, ``malformed_reasons`` and ``skipped``, as for :class:`RobustStrategy`.

    Notes
    -----
    The metrics dict holds ``fit_metrics_aggregation_fn`` over the kept clients plus
    ``robustagg-clients``, ``robustagg-kept``, ``robustagg-nonfinite``,
    ``robustagg-malformed``, ``robustagg-skipped`` and ``robustagg-kept-indices`` and
    ``robustagg-malformed-indices`` as comma-separated strings (legacy metrics are scalars).
    As with :class:`RobustStrategy`, no result can make ``aggregate_fit`` raise.
    """

    def __init__(
        self,
        rule: str | Callable[..., Any] = "mean",
        *,
        f: int | None = None,
        rule_kwargs: Mapping[str, Any] | None = None,
        aggregate_on: str = "updates",
        rng: Any = None,
        **fedavg_kwargs: Any,
    ) -> None:
        super().__init__(**fedavg_kwargs)
        self.aggregator = RobustAggregator(
            rule, f=f, rule_kwargs=rule_kwargs, aggregate_on=aggregate_on, rng=rng
        )
        self.global_arrays: list[np.ndarray] | None = None
        self.history: list[dict[str, Any]] = []

    def __repr__(self) -> str:
        return f"LegacyRobustStrategy(rule={self.aggregator.rule_name!r}, accept_failures={self.accept_failures})"

    def configure_fit(
        self, server_round: int, parameters: Parameters, client_manager: ClientManager
    ) -> list[tuple[ClientProxy, FitIns]]:
        """Record the round's global parameters, then sample clients as FedAvg does."""
        self.global_arrays = parameters_to_ndarrays(parameters)
        return super().configure_fit(server_round, parameters, client_manager)

    def aggregate_fit(
        self,
        server_round: int,
        results: list[tuple[ClientProxy, FitRes]],
        failures: list[tuple[ClientProxy, FitRes] | BaseException],
    ) -> tuple[Parameters | None, dict[str, Scalar]]:
        """Aggregate the fit results' parameters with the rule."""
        if not results:
            return None, {}
        if not self.accept_failures and failures:
            return None, {}
        client_arrays: list[list[np.ndarray] | None] = []
        for _, res in results:
            try:
                client_arrays.append(parameters_to_ndarrays(res.parameters))
            except Exception:  # unreadable bytes from a Byzantine client
                client_arrays.append(None)
        cids = [proxy.cid for proxy, _ in results]
        r = self.aggregator._aggregate(client_arrays, self.global_arrays)
        _log_round(server_round, [f"client {cid}" for cid in cids], r)
        self.history.append({**_history(server_round, r), "cids": cids})
        metrics: dict[str, Scalar] = {}
        if r.info is not None and self.fit_metrics_aggregation_fn:
            kept = [
                (res.num_examples, res.metrics) for (_, res), k in zip(results, r.info.kept, strict=True) if k
            ]
            try:
                metrics.update(self.fit_metrics_aggregation_fn(kept))
            except Exception as exc:  # a Byzantine client's metrics must not stop the round
                logger.warning("robustagg: client metrics of the kept clients not aggregated (%s)", exc)
        diag = _diagnostic_metrics(r)
        for key in ("robustagg-kept-indices", "robustagg-malformed-indices"):
            diag[key] = ",".join(map(str, diag[key]))
        metrics.update(diag)
        if r.arrays is None:
            return None, metrics
        return ndarrays_to_parameters(list(r.arrays.values())), metrics
