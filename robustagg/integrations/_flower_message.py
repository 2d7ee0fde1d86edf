"""The Flower strategy of the Message API (flwr >= 1.21, ``aggregate_train``).

Part of :mod:`robustagg.integrations.flower`, which exports it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from logging import INFO
from typing import Any

from flwr.app import Array, ArrayRecord, ConfigRecord, Message, MetricRecord
from flwr.serverapp import Grid
from flwr.serverapp.strategy import FedAvg as _FedAvg
from flwr.supercore import log

from ._flower_core import RobustAggregator, diagnostic_metrics, history_entry, log_round, logger

__all__ = ["RobustStrategy"]


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
        log_round(server_round, [f"node {i}" for i in node_ids], r)
        self.history.append({**history_entry(server_round, r), "node_ids": node_ids})
        metrics = MetricRecord()
        if r.info is not None:
            kept = [msg.content for msg, k in zip(valid, r.info.kept, strict=True) if k]
            try:
                client_metrics = self.train_metrics_aggr_fn(kept, self.weighted_by_key)
                for key, value in client_metrics.items():
                    metrics[key] = value
            except Exception as exc:  # a Byzantine client's metrics must not stop the round
                logger.warning("robustagg: client metrics of the kept clients not aggregated (%s)", exc)
        for key, value in diagnostic_metrics(r).items():
            metrics[key] = value
        if r.arrays is None:
            return None, metrics
        return ArrayRecord({k: Array(v) for k, v in r.arrays.items()}), metrics
