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
* **Malformed replies are Byzantine.** A reply whose arrays do not match the global model's
  keys and shapes becomes a row of NaN, so the rule's non-finite policy excludes it and counts it
  against ``f`` (SPEC §1), instead of the whole round failing.
* **Diagnostics as metrics.** The round's train metrics carry ``robustagg-clients`` (n),
  ``robustagg-kept`` (how many clients the rule kept), ``robustagg-kept-indices`` (their
  positions among the round's replies), ``robustagg-nonfinite`` and ``robustagg-malformed``.
  The full :class:`~robustagg.Diagnostics` of every round, with the node ids, is kept in
  ``strategy.history``.

Example
-------
>>> from robustagg.flower import RobustStrategy                      # doctest: +SKIP
>>> strategy = RobustStrategy("multi_krum", f=2, min_train_nodes=10,  # doctest: +SKIP
...                           min_available_nodes=10)
>>> result = strategy.start(grid=grid, initial_arrays=arrays, num_rounds=5)  # doctest: +SKIP
"""

from __future__ import annotations

import inspect
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from logging import INFO, WARNING
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

from ._diagnostics import Diagnostics
from ._registry import get_rule
from ._validation import check_choice, check_rng
from .kernels import nonfinite_rows

__all__ = ["ArrayLayout", "LegacyRobustStrategy", "RobustAggregator", "RobustStrategy"]

AGGREGATE_ON = ("updates", "weights")


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
        return np.result_type(np.float32, *self.dtypes) if self.dtypes else np.dtype(np.float64)

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
        if f is not None and (var_kw or "f" in params):
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
            bad = nonfinite_rows(G)
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
            The new global arrays (keys, shapes and dtypes of the layout); ``None`` when no
            client sent usable arrays.
        info : Diagnostics or None
            The rule's diagnostics over the n clients.
        malformed : numpy.ndarray of bool, shape (n,)
            Clients whose arrays did not match the layout (sent to the rule as NaN rows).
        """
        n = len(client_arrays)
        if global_arrays is None:
            if self.aggregate_on == "updates":
                raise ValueError(
                    "RobustAggregator: aggregate_on='updates' needs the round's global arrays "
                    "(the strategy records them in configure_train/configure_fit)"
                )
            layouts = [ArrayLayout.of(a) for a in client_arrays if a is not None]
            if not layouts:
                return None, None, np.ones(n, dtype=bool)
            layout = Counter((lay.keys, lay.shapes) for lay in layouts).most_common(1)[0][0]
            layout = next(lay for lay in layouts if (lay.keys, lay.shapes) == layout)
        else:
            layout = ArrayLayout.of(global_arrays)
        dtype = layout.float_dtype
        G = np.empty((n, layout.size), dtype=dtype)
        malformed = np.zeros(n, dtype=bool)
        for i, arrays in enumerate(client_arrays):
            if arrays is None or not layout.matches(arrays):
                malformed[i] = True
                G[i] = np.nan
            else:
                with np.errstate(over="ignore", invalid="ignore"):
                    layout.flatten(arrays, out=G[i])
        base = None
        if self.aggregate_on == "updates":
            base = layout.flatten(global_arrays)
            with np.errstate(over="ignore", invalid="ignore"):
                G -= base
        if malformed.all() or nonfinite_rows(G).all():
            return None, None, malformed
        out, info = self.aggregate_matrix(G)
        if base is not None:
            out = base + out.astype(dtype, copy=False)
        return layout.unflatten(out.astype(dtype, copy=False)), info, malformed


def _signature(fn: Callable[..., Any]) -> tuple[set[str], bool]:
    try:
        params = inspect.signature(fn).parameters
    except (TypeError, ValueError):  # pragma: no cover - builtins
        return set(), True
    var_kw = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())
    return set(params), var_kw


def _diagnostic_metrics(info: Diagnostics | None, n: int, malformed: np.ndarray) -> dict[str, Any]:
    if info is None:
        return {
            "robustagg-clients": n,
            "robustagg-kept": 0,
            "robustagg-kept-indices": [],
            "robustagg-nonfinite": n,
            "robustagg-malformed": int(malformed.sum()),
        }
    return {
        "robustagg-clients": n,
        "robustagg-kept": int(info.kept.sum()),
        "robustagg-kept-indices": [int(i) for i in np.flatnonzero(info.kept)],
        "robustagg-nonfinite": int(info.nonfinite.sum()),
        "robustagg-malformed": int(malformed.sum()),
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
        ``info`` (the rule's :class:`~robustagg.Diagnostics`), ``malformed``.
    global_arrays : ArrayRecord or None
        The arrays sent in the current round (recorded by ``configure_train``).

    Notes
    -----
    The returned MetricRecord holds the client metrics averaged over the kept clients (with
    ``train_metrics_aggr_fn``) plus ``robustagg-clients``, ``robustagg-kept``,
    ``robustagg-kept-indices``, ``robustagg-nonfinite`` and ``robustagg-malformed``.
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
        if not valid:
            return None, None
        client_arrays: list[ArrayRecord | None] = []
        for msg in valid:
            records = list(msg.content.array_records.values())
            client_arrays.append(records[0] if len(records) == 1 else None)
        new, info, malformed = self.aggregator.aggregate(client_arrays, self.global_arrays)
        node_ids = [int(msg.metadata.src_node_id) for msg in valid]
        self.history.append(
            {"server_round": server_round, "node_ids": node_ids, "info": info, "malformed": malformed}
        )
        metrics = MetricRecord()
        if info is not None:
            kept = [msg.content for msg, k in zip(valid, info.kept, strict=True) if k]
            try:
                client_metrics = self.train_metrics_aggr_fn(kept, self.weighted_by_key)
                for key, value in client_metrics.items():
                    metrics[key] = value
            except Exception as exc:  # a Byzantine client's metrics must not stop the round
                log(WARNING, "robustagg: client metrics of the kept clients not aggregated (%s)", exc)
        for key, value in _diagnostic_metrics(info, len(valid), malformed).items():
            metrics[key] = value
        if new is None:
            log(WARNING, "robustagg: no usable client arrays in round %s; global arrays kept", server_round)
            return None, metrics
        return ArrayRecord({k: Array(v) for k, v in new.items()}), metrics


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
        ``malformed``.

    Notes
    -----
    The metrics dict holds ``fit_metrics_aggregation_fn`` over the kept clients plus
    ``robustagg-clients``, ``robustagg-kept``, ``robustagg-nonfinite``,
    ``robustagg-malformed`` and ``robustagg-kept-indices`` as a comma-separated string (legacy
    metrics are scalars).
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
        new, info, malformed = self.aggregator.aggregate(client_arrays, self.global_arrays)
        self.history.append(
            {
                "server_round": server_round,
                "cids": [proxy.cid for proxy, _ in results],
                "info": info,
                "malformed": malformed,
            }
        )
        metrics: dict[str, Scalar] = {}
        if info is not None and self.fit_metrics_aggregation_fn:
            kept = [
                (res.num_examples, res.metrics) for (_, res), k in zip(results, info.kept, strict=True) if k
            ]
            metrics.update(self.fit_metrics_aggregation_fn(kept))
        diag = _diagnostic_metrics(info, len(results), malformed)
        diag["robustagg-kept-indices"] = ",".join(map(str, diag["robustagg-kept-indices"]))
        metrics.update(diag)
        if new is None:
            return None, metrics
        return ndarrays_to_parameters(list(new.values())), metrics
