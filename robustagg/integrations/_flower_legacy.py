"""The legacy Flower strategy (``flwr.server.strategy``, ``aggregate_fit``).

Part of :mod:`robustagg.integrations.flower`, which exports it.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
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

from ._flower_core import RobustAggregator, diagnostic_metrics, history_entry, log_round, logger

__all__ = ["LegacyRobustStrategy"]


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
        log_round(server_round, [f"client {cid}" for cid in cids], r)
        self.history.append({**history_entry(server_round, r), "cids": cids})
        metrics: dict[str, Scalar] = {}
        if r.info is not None and self.fit_metrics_aggregation_fn:
            kept = [
                (res.num_examples, res.metrics) for (_, res), k in zip(results, r.info.kept, strict=True) if k
            ]
            try:
                metrics.update(self.fit_metrics_aggregation_fn(kept))
            except Exception as exc:  # a Byzantine client's metrics must not stop the round
                logger.warning("robustagg: client metrics of the kept clients not aggregated (%s)", exc)
        diag = diagnostic_metrics(r)
        for key in ("robustagg-kept-indices", "robustagg-malformed-indices"):
            diag[key] = ",".join(map(str, diag[key]))
        metrics.update(diag)
        if r.arrays is None:
            return None, metrics
        return ndarrays_to_parameters(list(r.arrays.values())), metrics
