"""Rules, compositions and the Flower strategies pickle, so they can be shipped to Ray, Dask or
Flower processes; after a round trip each aggregates bit-identically to the original."""

from __future__ import annotations

import inspect
import os
import pickle

import numpy as np
import pytest

import robustagg
from robustagg._registry import call_with_supported

F = 1


def _matrix(seed=0, n=11, d=7):
    return np.random.default_rng(seed).normal(size=(n, d))


def _call(rule, G, rng=0):
    """The rule with f, a fresh seeded rng (for the random rules) and, for FLTrust, a root gradient."""
    kwargs = {"f": F, "rng": rng}
    if "root_gradient" in inspect.signature(rule).parameters:
        kwargs["root_gradient"] = G[5:].mean(axis=0)  # finite rows only
    return call_with_supported(rule, G, **kwargs, return_info=True)


def _assert_same(a, b):
    (out_a, info_a), (out_b, info_b) = a, b
    assert out_a.dtype == out_b.dtype
    np.testing.assert_array_equal(out_a, out_b)
    np.testing.assert_array_equal(info_a.kept, info_b.kept)
    np.testing.assert_array_equal(info_a.nonfinite, info_b.nonfinite)


@pytest.mark.parametrize("name", sorted(robustagg.RULES))
def test_every_registered_rule_pickles_and_aggregates_identically(name):
    rule = robustagg.get_rule(name)
    copy = pickle.loads(pickle.dumps(rule))
    G = _matrix()
    G[4] = np.nan  # the non-finite policy travels too
    _assert_same(_call(rule, G), _call(copy, G))


COMPOSED = [
    "nnm+krum",
    "bucketing+trimmed_mean",
    "clipping+bucketing+median",
    "arc+multi_krum",
    "nnm+signguard",
    "clipping + mean",
]


@pytest.mark.parametrize("name", COMPOSED)
def test_composed_names_pickle_and_aggregate_identically(name):
    assert name not in robustagg.RULES  # composed on the fly by get_rule
    rule = robustagg.get_rule(name)
    copy = pickle.loads(pickle.dumps(rule))
    assert repr(copy) == repr(rule) and copy.__name__ == rule.__name__ and copy.name == rule.name
    assert inspect.signature(copy) == inspect.signature(rule)
    G = _matrix(1)
    G[6] = np.inf
    _assert_same(_call(rule, G, rng=3), _call(copy, G, rng=3))
    # a copy of the copy still aggregates as the original
    _assert_same(_call(pickle.loads(pickle.dumps(copy)), G, rng=3), _call(rule, G, rng=3))


def test_pipeline_with_options_name_and_nested_pipeline_pickles():
    inner = robustagg.pipeline("nnm", "krum")
    rules = [
        robustagg.pipeline(("bucketing", {"s": 3}), "mda", name="bucketed_mda"),
        robustagg.pipeline(robustagg.clipping, ("nnm", {}), robustagg.median),
        robustagg.pipeline("clipping", inner),  # a pipeline as the final rule
    ]
    G = _matrix(2, n=12)
    for rule in rules:
        copy = pickle.loads(pickle.dumps(rule))
        assert repr(copy) == repr(rule)
        _assert_same(_call(rule, G, rng=5), _call(copy, G, rng=5))
    assert "name='bucketed_mda'" in repr(rules[0]) and rules[0].name == "bucketed_mda"


def test_pipeline_repr_and_name():
    rule = robustagg.get_rule("nnm+krum")
    assert repr(rule) == "robustagg.pipeline('nnm', 'krum')"
    assert rule.__name__ == "nnm_then_krum" and rule.name == "nnm+krum"
    assert "nnm+krum" in rule.__doc__


# --------------------------------------------------------------------------------------------
# Flower strategies
# --------------------------------------------------------------------------------------------

flower_only = pytest.mark.skipif(
    __import__("importlib").util.find_spec("flwr") is None, reason="needs the [flower] extra"
)


def _flower():
    os.environ.setdefault("FLWR_TELEMETRY_ENABLED", "0")
    from flwr.app import Array, ArrayRecord, Message, MessageType, Metadata, MetricRecord, RecordDict

    return Array, ArrayRecord, Message, MessageType, Metadata, MetricRecord, RecordDict


def _model(rng):
    return {
        "w": rng.normal(size=(3, 4)).astype(np.float32),
        "b": rng.normal(size=(4,)).astype(np.float32),
    }


def _replies(rng, g, n):
    Array, ArrayRecord, Message, MessageType, Metadata, MetricRecord, RecordDict = _flower()
    out = []
    for i in range(n):
        arrays = {k: (v + 0.1 * rng.normal(size=v.shape)).astype(v.dtype) for k, v in g.items()}
        metadata = Metadata(
            run_id=1,
            message_id=f"m{i}",
            src_node_id=i,
            dst_node_id=0,
            reply_to_message_id="",
            group_id="1",
            created_at=0.0,
            ttl=60.0,
            message_type=MessageType.TRAIN,
        )
        content = RecordDict(
            {
                "arrays": ArrayRecord({k: Array(v) for k, v in arrays.items()}),
                "metrics": MetricRecord({"num-examples": 10}),
            }
        )
        out.append((arrays, Message(content=content, metadata=metadata)))
    return out


STRATEGY_RULES = [("nnm+krum", {"f": 1}), ("signguard", {"rng": 0}), ("dnc", {"f": 1, "rng": 7})]


@flower_only
@pytest.mark.parametrize("rule,kwargs", STRATEGY_RULES)
def test_message_strategy_pickles_and_aggregates_identically(rng, rule, kwargs):
    from robustagg.flower import RobustStrategy

    Array, ArrayRecord, *_ = _flower()
    g = _model(rng)
    strategy = RobustStrategy(rule, **kwargs, min_train_nodes=9)
    strategy.global_arrays = ArrayRecord({k: Array(v) for k, v in g.items()})
    strategy.aggregate_train(1, [m for _, m in _replies(rng, g, 9)])  # state: history, rng
    copy = pickle.loads(pickle.dumps(strategy))
    assert copy.min_train_nodes == 9 and len(copy.history) == 1
    replies = [m for _, m in _replies(rng, g, 9)]
    a, ma = strategy.aggregate_train(2, replies)
    b, mb = copy.aggregate_train(2, replies)
    assert dict(ma) == dict(mb)
    for k in g:
        np.testing.assert_array_equal(a[k].numpy(), b[k].numpy())


@flower_only
@pytest.mark.parametrize("rule,kwargs", STRATEGY_RULES)
def test_legacy_strategy_pickles_and_aggregates_identically(rng, rule, kwargs):
    from flwr.common import Code, FitRes, Status, ndarrays_to_parameters, parameters_to_ndarrays

    from robustagg.flower import LegacyRobustStrategy

    class Proxy:  # what aggregate_fit reads of a ClientProxy
        def __init__(self, cid):
            self.cid = cid

    g = _model(rng)
    strategy = LegacyRobustStrategy(rule, **kwargs, min_fit_clients=9)
    strategy.global_arrays = list(g.values())
    copy = pickle.loads(pickle.dumps(strategy))
    results = [
        (
            Proxy(str(i)),
            FitRes(Status(Code.OK, ""), ndarrays_to_parameters(list(arrays.values())), 10, {}),
        )
        for i, (arrays, _) in enumerate(_replies(rng, g, 9))
    ]
    a, ma = strategy.aggregate_fit(1, results, [])
    b, mb = copy.aggregate_fit(1, results, [])
    assert ma == mb and copy.min_fit_clients == 9
    for x, y in zip(parameters_to_ndarrays(a), parameters_to_ndarrays(b), strict=True):
        np.testing.assert_array_equal(x, y)


@flower_only
def test_aggregator_with_stateful_wrapper_pickles(rng):
    from robustagg.flower import RobustAggregator

    g = _model(rng)
    agg = RobustAggregator(robustagg.SignGuard("sim", rng=4))
    clients = [a for a, _ in _replies(rng, g, 10)]
    agg.aggregate(clients, g)  # the wrapper now holds a previous aggregate
    copy = pickle.loads(pickle.dumps(agg))
    clients = [a for a, _ in _replies(rng, g, 10)]
    a, info_a, _ = agg.aggregate(clients, g)
    b, info_b, _ = copy.aggregate(clients, g)
    np.testing.assert_array_equal(info_a.kept, info_b.kept)
    for k in g:
        np.testing.assert_array_equal(a[k], b[k])
