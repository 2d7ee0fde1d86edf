"""Flower strategies: real flwr objects, exact agreement with the rules, an end-to-end simulation."""

from __future__ import annotations

import os

import numpy as np
import pytest

flwr = pytest.importorskip("flwr")

os.environ.setdefault("FLWR_TELEMETRY_ENABLED", "0")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.setdefault("RAY_ACCEL_ENV_VAR_OVERRIDE_ON_ZERO", "0")

from flwr.app import Array, ArrayRecord, Message, MessageType, Metadata, MetricRecord, RecordDict  # noqa: E402
from flwr.common import Code, FitRes, Status, ndarrays_to_parameters, parameters_to_ndarrays  # noqa: E402

import robustagg  # noqa: E402
from robustagg.flower import ArrayLayout, LegacyRobustStrategy, RobustAggregator, RobustStrategy  # noqa: E402

# --------------------------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------------------------


def _model(rng, dtype=np.float32):
    return {
        "conv.weight": rng.normal(size=(2, 3, 2)).astype(dtype),
        "conv.bias": rng.normal(size=(2,)).astype(dtype),
        "fc": rng.normal(size=(4, 3)).astype(dtype),
        "scale": np.asarray(rng.normal(), dtype=dtype),  # a 0-d array
    }


def _reply(arrays, node_id, num_examples=10, extra=None):
    metadata = Metadata(
        run_id=1,
        message_id=f"m{node_id}",
        src_node_id=node_id,
        dst_node_id=0,
        reply_to_message_id="",
        group_id="1",
        created_at=0.0,
        ttl=60.0,
        message_type=MessageType.TRAIN,
    )
    metrics = {"num-examples": num_examples, "loss": float(node_id)}
    metrics.update(extra or {})
    record = (
        arrays
        if isinstance(arrays, ArrayRecord)
        else ArrayRecord({k: Array(np.asarray(v)) for k, v in arrays.items()})
    )
    return Message(
        content=RecordDict({"arrays": record, "metrics": MetricRecord(metrics)}), metadata=metadata
    )


def _clients(rng, global_model, n, n_byz=0, scale=0.1, byz_scale=50.0):
    out = []
    for i in range(n):
        s = byz_scale if i < n_byz else scale
        out.append(
            {k: (v + s * rng.normal(size=np.shape(v))).astype(v.dtype) for k, v in global_model.items()}
        )
    return out


def _flat(layout, arrays_list, base=None):
    G = np.stack([layout.flatten(a) for a in arrays_list])
    return G if base is None else G - layout.flatten(base)


# --------------------------------------------------------------------------------------------
# layout: flatten / unflatten
# --------------------------------------------------------------------------------------------


def test_layout_round_trip_keys_shapes_dtypes(rng):
    arrays = {
        "a": rng.normal(size=(3, 4)).astype(np.float32),
        "b": rng.normal(size=(2,)).astype(np.float16),
        "steps": np.arange(5, dtype=np.int64),
        "mask": np.array([True, False, True]),
        "s": np.asarray(2.5, dtype=np.float32),
    }
    layout = ArrayLayout.of(arrays)
    assert layout.keys == ("a", "b", "steps", "mask", "s")
    assert layout.size == 12 + 2 + 5 + 3 + 1
    assert layout.float_dtype == np.float64  # int64 layer needs float64
    back = layout.unflatten(layout.flatten(arrays))
    assert list(back) == list(arrays)
    for k in arrays:
        assert back[k].shape == np.shape(arrays[k]) and back[k].dtype == arrays[k].dtype
        np.testing.assert_array_equal(back[k], arrays[k])


def test_layout_float32_model_stays_float32(rng):
    layout = ArrayLayout.of(_model(rng))
    assert layout.float_dtype == np.float32
    assert layout.flatten(_model(rng)).dtype == np.float32


def test_layout_of_list_and_arrayrecord(rng):
    model = _model(rng)
    lay_list = ArrayLayout.of(list(model.values()))
    assert lay_list.keys == ("0", "1", "2", "3")
    lay_rec = ArrayLayout.of(ArrayRecord({k: Array(v) for k, v in model.items()}))
    assert lay_rec == ArrayLayout.of(model)


def test_layout_rejects_mismatch(rng):
    model = _model(rng)
    layout = ArrayLayout.of(model)
    bad = dict(model, fc=np.zeros((3, 4), np.float32))
    assert not layout.matches(bad)
    with pytest.raises(ValueError, match="do not match"):
        layout.flatten(bad)


# --------------------------------------------------------------------------------------------
# Message API
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "rule,kwargs", [("mean", {}), ("median", {}), ("trimmed_mean", {"f": 2}), ("krum", {"f": 2})]
)
def test_message_strategy_equals_rule_on_flattened_updates(rng, rule, kwargs):
    assert rule in robustagg.RULES, f"{rule} is not registered"
    g = _model(rng)
    clients = _clients(rng, g, n=9, n_byz=2)
    strategy = RobustStrategy(rule, **kwargs)
    strategy.global_arrays = ArrayRecord({k: Array(v) for k, v in g.items()})
    replies = [_reply(c, node_id=100 + i) for i, c in enumerate(clients)]
    arrays, metrics = strategy.aggregate_train(1, replies)

    layout = ArrayLayout.of(g)
    G = _flat(layout, clients, base=g)
    expected, info = robustagg.get_rule(rule)(G, **kwargs, return_info=True)
    expected = layout.unflatten(layout.flatten(g) + expected)
    assert list(arrays.keys()) == list(g)
    for k, v in arrays.items():
        got = v.numpy()
        assert got.shape == g[k].shape and got.dtype == g[k].dtype
        np.testing.assert_allclose(got, expected[k], rtol=1e-6, atol=1e-6)
    assert metrics["robustagg-clients"] == 9
    assert metrics["robustagg-kept"] == int(info.kept.sum())
    assert metrics["robustagg-kept-indices"] == np.flatnonzero(info.kept).tolist()
    assert metrics["robustagg-malformed"] == 0
    # client metrics are averaged over the kept clients only (weights all equal here)
    kept_ids = 100 + np.flatnonzero(info.kept)
    np.testing.assert_allclose(metrics["loss"], kept_ids.mean())
    assert strategy.history[-1]["node_ids"] == [100 + i for i in range(9)]


def test_message_strategy_krum_drops_byzantine_and_matches_flower_krum(rng):
    assert "krum" in robustagg.RULES
    from flwr.serverapp.strategy import Krum

    g = _model(rng, np.float64)
    clients = _clients(rng, g, n=10, n_byz=3)
    strategy = RobustStrategy("krum", f=3, aggregate_on="weights")
    arrays, metrics = strategy.aggregate_train(1, [_reply(c, 10 + i) for i, c in enumerate(clients)])
    assert metrics["robustagg-kept"] == 1
    assert metrics["robustagg-kept-indices"][0] >= 3  # an honest client
    flower_arrays, _ = Krum(num_malicious_nodes=3).aggregate_train(
        1, [_reply(c, 10 + i) for i, c in enumerate(clients)]
    )
    for k in g:
        np.testing.assert_allclose(arrays[k].numpy(), flower_arrays[k].numpy(), rtol=1e-12)


def test_message_strategy_median_matches_flower_fedmedian(rng):
    assert "median" in robustagg.RULES
    from flwr.serverapp.strategy import FedMedian

    g = _model(rng, np.float64)
    clients = _clients(rng, g, n=7, n_byz=2)
    ours, _ = RobustStrategy("median", aggregate_on="weights").aggregate_train(
        1, [_reply(c, i) for i, c in enumerate(clients)]
    )
    theirs, _ = FedMedian().aggregate_train(1, [_reply(c, i) for i, c in enumerate(clients)])
    for k in g:
        np.testing.assert_allclose(ours[k].numpy(), theirs[k].numpy(), rtol=1e-12)


def test_message_strategy_wraps_stateful_signguard(rng):
    g = _model(rng)
    layout = ArrayLayout.of(g)
    strategy = RobustStrategy(robustagg.SignGuard("sim", rng=5))
    reference = robustagg.SignGuard("sim", rng=5)
    for server_round in (1, 2):  # the wrapper's state (rng, previous aggregate) carries over
        clients = _clients(rng, g, n=12, n_byz=3)
        strategy.global_arrays = ArrayRecord({k: Array(v) for k, v in g.items()})
        arrays, metrics = strategy.aggregate_train(
            server_round, [_reply(c, i) for i, c in enumerate(clients)]
        )
        expected, info = reference(_flat(layout, clients, g), return_info=True)
        expected = layout.unflatten(layout.flatten(g) + expected)
        for k in g:
            np.testing.assert_allclose(arrays[k].numpy(), expected[k], rtol=1e-6, atol=1e-6)
        assert metrics["robustagg-kept-indices"] == np.flatnonzero(info.kept).tolist()
        assert not set(metrics["robustagg-kept-indices"]) & {0, 1, 2}
        g = {k: arrays[k].numpy() for k in g}
    assert strategy.aggregator.rule_name == "SignGuard"


def test_message_strategy_callable_with_kwargs_and_rng(rng):
    calls = []

    def scaled_mean(grads, *, scale, rng=None, return_info=False):
        calls.append((scale, type(rng)))
        out = robustagg.mean(grads) * scale
        return (
            (
                out,
                robustagg.Diagnostics(
                    "scaled_mean", kept=np.ones(len(grads), bool), nonfinite=np.zeros(len(grads), bool)
                ),
            )
            if return_info
            else out
        )

    g = _model(rng, np.float64)
    clients = _clients(rng, g, n=4)
    strategy = RobustStrategy(scaled_mean, rule_kwargs={"scale": 0.5}, rng=3)
    strategy.global_arrays = ArrayRecord({k: Array(v) for k, v in g.items()})
    arrays, metrics = strategy.aggregate_train(2, [_reply(c, i) for i, c in enumerate(clients)])
    assert calls == [(0.5, np.random.Generator)]
    layout = ArrayLayout.of(g)
    expected = layout.unflatten(layout.flatten(g) + 0.5 * _flat(layout, clients, g).mean(axis=0))
    for k in g:
        np.testing.assert_allclose(arrays[k].numpy(), expected[k], rtol=1e-12)
    assert metrics["robustagg-kept"] == 4


def test_message_strategy_callable_without_return_info(rng):
    g = _model(rng, np.float64)
    clients = _clients(rng, g, n=3)
    strategy = RobustStrategy(lambda grads: np.asarray(grads).max(axis=0), aggregate_on="weights")
    arrays, metrics = strategy.aggregate_train(1, [_reply(c, i) for i, c in enumerate(clients)])
    layout = ArrayLayout.of(g)
    expected = layout.unflatten(_flat(layout, clients).max(axis=0))
    for k in g:
        np.testing.assert_allclose(arrays[k].numpy(), expected[k])
    assert metrics["robustagg-kept-indices"] == [0, 1, 2]


def test_message_strategy_rejects_unknown_rule_kwarg():
    with pytest.raises(TypeError, match="does not accept"):
        RobustStrategy("mean", rule_kwargs={"beta": 1})
    with pytest.raises(ValueError, match="unknown rule"):
        RobustStrategy("no_such_rule")


def test_message_strategy_f_ignored_by_rules_without_f(rng):
    strategy = RobustStrategy("mean", f=2)
    assert "f" not in strategy.aggregator.rule_kwargs


def test_message_strategy_malformed_and_nonfinite_replies_are_excluded(rng):
    g = _model(rng)
    clients = _clients(rng, g, n=6)
    clients[1] = dict(clients[1], fc=np.zeros((3, 4), np.float32))  # wrong shape
    clients[4] = dict(clients[4], fc=np.full((4, 3), np.nan, np.float32))  # NaN
    strategy = RobustStrategy("mean")
    strategy.global_arrays = ArrayRecord({k: Array(v) for k, v in g.items()})
    arrays, metrics = strategy.aggregate_train(1, [_reply(c, i) for i, c in enumerate(clients)])
    assert metrics["robustagg-malformed"] == 1
    assert metrics["robustagg-nonfinite"] == 2
    assert metrics["robustagg-kept-indices"] == [0, 2, 3, 5]
    layout = ArrayLayout.of(g)
    good = [clients[i] for i in (0, 2, 3, 5)]
    expected = layout.unflatten(layout.flatten(g) + _flat(layout, good, g).mean(axis=0, dtype=np.float64))
    for k in g:
        np.testing.assert_allclose(arrays[k].numpy(), expected[k], rtol=1e-5, atol=1e-6)


def test_message_strategy_all_malformed_keeps_global(rng):
    g = _model(rng)
    strategy = RobustStrategy("mean")
    strategy.global_arrays = ArrayRecord({k: Array(v) for k, v in g.items()})
    arrays, metrics = strategy.aggregate_train(1, [_reply({"x": np.zeros(2)}, i) for i in range(3)])
    assert arrays is None
    assert metrics["robustagg-kept"] == 0 and metrics["robustagg-malformed"] == 3


def test_updates_need_global_arrays(rng):
    with pytest.raises(ValueError, match="global arrays"):
        RobustAggregator("mean").aggregate([_model(rng)], None)


# --------------------------------------------------------------------------------------------
# legacy API
# --------------------------------------------------------------------------------------------


class _Proxy:
    def __init__(self, cid):
        self.cid = cid


def _fit_res(arrays, num_examples=5):
    return FitRes(
        status=Status(code=Code.OK, message=""),
        parameters=ndarrays_to_parameters(list(arrays)),
        num_examples=num_examples,
        metrics={"acc": 0.5},
    )


@pytest.mark.parametrize("rule,kwargs", [("mean", {}), ("trimmed_mean", {"f": 1})])
def test_legacy_strategy_equals_rule(rng, rule, kwargs):
    assert rule in robustagg.RULES, f"{rule} is not registered"
    g = list(_model(rng).values())
    clients = [[(a + 0.1 * rng.normal(size=a.shape)).astype(a.dtype) for a in g] for _ in range(5)]
    strategy = LegacyRobustStrategy(rule, **kwargs, fit_metrics_aggregation_fn=lambda m: {"n": len(m)})
    strategy.global_arrays = g
    results = [(_Proxy(f"c{i}"), _fit_res(c)) for i, c in enumerate(clients)]
    params, metrics = strategy.aggregate_fit(1, results, [])
    got = parameters_to_ndarrays(params)
    layout = ArrayLayout.of(g)
    expected, info = robustagg.get_rule(rule)(_flat(layout, clients, g), **kwargs, return_info=True)
    expected = layout.unflatten(layout.flatten(g) + expected)
    for a, e in zip(got, expected.values(), strict=True):
        assert a.shape == e.shape and a.dtype == e.dtype
        np.testing.assert_allclose(a, e, rtol=1e-6, atol=1e-6)
    assert metrics["robustagg-kept"] == int(info.kept.sum())
    assert metrics["robustagg-kept-indices"] == ",".join(map(str, np.flatnonzero(info.kept)))
    assert metrics["n"] == int(info.kept.sum())
    assert strategy.history[-1]["cids"] == [f"c{i}" for i in range(5)]


def test_legacy_strategy_failures_policy(rng):
    g = list(_model(rng).values())
    strategy = LegacyRobustStrategy("mean", accept_failures=False)
    strategy.global_arrays = g
    assert strategy.aggregate_fit(1, [(_Proxy("a"), _fit_res(g))], [RuntimeError("x")]) == (None, {})
    assert strategy.aggregate_fit(1, [], []) == (None, {})


# --------------------------------------------------------------------------------------------
# end-to-end simulation: a robust rule trains, FedAvg is derailed
# --------------------------------------------------------------------------------------------

N_CLIENTS = 8
N_BYZANTINE = 2
DIM = 6


def _task(seed, n):
    """A tiny logistic-regression task: y = 1[x . w* + b* + noise > 0]."""
    w_true = np.linspace(-1.5, 1.5, DIM)
    r = np.random.default_rng(seed)
    X = r.normal(size=(n, DIM))
    y = (X @ w_true + 0.3 + 0.3 * r.normal(size=n) > 0).astype(np.float64)
    return X, y


def _loss_acc(w, b, X, y):
    z = X @ w + b
    p = 1.0 / (1.0 + np.exp(-np.clip(z, -30, 30)))
    eps = 1e-12
    loss = -np.mean(y * np.log(p + eps) + (1 - y) * np.log(1 - p + eps))
    return float(loss), float(np.mean((p > 0.5) == (y > 0.5)))


def _client_train(msg, context):
    from flwr.app import Array as _Array
    from flwr.app import ArrayRecord as _ArrayRecord
    from flwr.app import Message as _Message
    from flwr.app import MetricRecord as _MetricRecord
    from flwr.app import RecordDict as _RecordDict

    pid = int(context.node_config["partition-id"])
    rec = msg.content["arrays"]
    w0 = rec["w"].numpy().astype(np.float64)
    b0 = float(rec["b"].numpy())
    X, y = _task(1000 + pid, 80)
    w, b = w0.copy(), b0
    for _ in range(5):  # local gradient descent
        p = 1.0 / (1.0 + np.exp(-np.clip(X @ w + b, -30, 30)))
        w -= 0.5 * X.T @ (p - y) / len(y)
        b -= 0.5 * float(np.mean(p - y))
    if pid < N_BYZANTINE:  # client-side attack: the update reversed and scaled by 10
        w, b = w0 - 10.0 * (w - w0), b0 - 10.0 * (b - b0)
    out = _ArrayRecord({"w": _Array(w.astype(np.float32)), "b": _Array(np.asarray(b, dtype=np.float32))})
    metrics = _MetricRecord({"num-examples": len(y), "partition-id": pid})
    return _Message(_RecordDict({"arrays": out, "metrics": metrics}), reply_to=msg)


@pytest.mark.slow
def test_simulation_robust_rule_trains_and_fedavg_is_derailed():
    from flwr.app import Context
    from flwr.clientapp import ClientApp
    from flwr.serverapp import Grid, ServerApp
    from flwr.simulation import run_simulation

    X_test, y_test = _task(7, 2000)
    kept_pids: list[list[int]] = []

    def record_kept(contents, key):
        kept_pids.append(sorted(int(c["metrics"]["partition-id"]) for c in contents))
        return MetricRecord()

    def evaluate(server_round, arrays):
        loss, acc = _loss_acc(
            arrays["w"].numpy().astype(np.float64), float(arrays["b"].numpy()), X_test, y_test
        )
        return MetricRecord({"loss": loss, "accuracy": acc})

    common = dict(fraction_evaluate=0.0, min_train_nodes=N_CLIENTS, min_available_nodes=N_CLIENTS)
    results = {}
    client_app = ClientApp()
    client_app.train()(_client_train)
    server_app = ServerApp()

    @server_app.main()
    def main(grid: Grid, context: Context) -> None:
        initial = ArrayRecord({"w": Array(np.zeros(DIM, np.float32)), "b": Array(np.zeros((), np.float32))})
        for name, strategy in (
            (
                "robust",
                RobustStrategy("multi_krum", f=N_BYZANTINE, train_metrics_aggr_fn=record_kept, **common),
            ),
            ("signguard", RobustStrategy(robustagg.SignGuard(rng=0), **common)),
            ("fedavg", RobustStrategy("mean", **common)),
        ):
            results[name] = strategy.start(
                grid=grid, initial_arrays=initial, num_rounds=3, evaluate_fn=evaluate
            )
            results[name + "-strategy"] = strategy

    run_simulation(
        server_app=server_app,
        client_app=client_app,
        num_supernodes=N_CLIENTS,
        backend_config={"client_resources": {"num_cpus": 1, "num_gpus": 0.0}},
    )
    robust = results["robust"].evaluate_metrics_serverapp
    fedavg = results["fedavg"].evaluate_metrics_serverapp
    assert sorted(robust) == [0, 1, 2, 3]
    # the robust strategy trains: loss falls, accuracy rises well above chance
    assert robust[3]["loss"] < 0.6 * robust[0]["loss"]
    assert robust[3]["accuracy"] > 0.85
    signguard = results["signguard"].evaluate_metrics_serverapp
    assert signguard[3]["loss"] < 0.6 * signguard[0]["loss"] and signguard[3]["accuracy"] > 0.85
    # FedAvg is derailed by the two reversed, scaled updates
    assert fedavg[3]["loss"] > robust[0]["loss"]
    assert fedavg[3]["accuracy"] < 0.6
    # metrics report which clients were kept; for a selecting rule the Byzantine ones are out
    train = results["robust"].train_metrics_clientapp
    assert all(train[r]["robustagg-clients"] == N_CLIENTS for r in range(1, 4))
    assert all(train[r]["robustagg-kept"] == N_CLIENTS - N_BYZANTINE for r in range(1, 4))
    assert len(kept_pids) == 3 and all(set(p).isdisjoint(range(N_BYZANTINE)) for p in kept_pids)
    # SignGuard's norm filter drops the two scaled updates in every round
    for entry in results["signguard-strategy"].history:
        assert entry["info"].n_kept <= N_CLIENTS - N_BYZANTINE
    assert len(results["robust-strategy"].history) == 3
