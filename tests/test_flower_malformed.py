"""Flower strategies: no reply can abort a round.

A malformed reply (strings, bytes, objects, complex numbers, booleans in a float layer, wrong
shapes, missing or extra layers, unreadable or ragged data) is excluded as Byzantine and reported;
the round then aggregates the other replies exactly as the rule does on them. A round with too few
usable replies for the rule's bound on n and f keeps the global arrays (``None``), reports itself
skipped and logs why, without raising. Strategies are called directly on constructed replies.
"""

from __future__ import annotations

import io
import logging
import os

import numpy as np
import pytest

flwr = pytest.importorskip("flwr")

os.environ.setdefault("FLWR_TELEMETRY_ENABLED", "0")

from flwr.app import Array, ArrayRecord, Message, MessageType, Metadata, MetricRecord, RecordDict  # noqa: E402
from flwr.common import Code, FitRes, Parameters, Status, ndarrays_to_parameters, parameters_to_ndarrays  # noqa: E402

import robustagg  # noqa: E402
from robustagg._registry import call_with_supported  # noqa: E402
from robustagg.flower import ArrayLayout, LegacyRobustStrategy, RobustAggregator, RobustStrategy  # noqa: E402

N = 8
BAD = 3  # the position of the malformed reply among the round's replies


def _model(rng, dtype=np.float32):
    return {
        "conv.weight": rng.normal(size=(2, 3, 2)).astype(dtype),
        "conv.bias": rng.normal(size=(2,)).astype(dtype),
        "fc": rng.normal(size=(4, 3)).astype(dtype),
        "scale": np.asarray(rng.normal(), dtype=dtype),
    }


def _clients(rng, g, n=N):
    return [
        {k: (v + 0.1 * rng.normal(size=np.shape(v))).astype(v.dtype) for k, v in g.items()} for _ in range(n)
    ]


def _record(arrays):
    if isinstance(arrays, ArrayRecord):
        return arrays
    return ArrayRecord({k: v if isinstance(v, Array) else Array(np.asarray(v)) for k, v in arrays.items()})


def _reply(arrays, node_id, records=None):
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
    content = {"metrics": MetricRecord({"num-examples": 10, "loss": float(node_id)})}
    if records is None:
        content["arrays"] = _record(arrays)
    else:
        content.update(records)
    return Message(content=RecordDict(content), metadata=metadata)


def _npy_bytes(a, allow_pickle=False):
    buf = io.BytesIO()
    np.save(buf, a, allow_pickle=allow_pickle)
    return buf.getvalue()


def _expected(rule, f, g, valid, base=True):
    """The rule on the valid replies' updates (a malformed reply counts against f), layers restored."""
    layout = ArrayLayout.of(g)
    G = np.stack([layout.flatten(c) for c in valid])
    if base:
        G = G - layout.flatten(g)
    out = call_with_supported(robustagg.get_rule(rule), G, f=f)
    out = np.asarray(out).astype(layout.float_dtype, copy=False)
    if base:
        out = layout.flatten(g) + out
    return layout.unflatten(out.astype(layout.float_dtype, copy=False))


def _assert_same_arrays(got, expected, g):
    """Bit-identical values, and the global model's keys, shapes and dtypes."""
    assert list(got) == list(g)
    for k in g:
        assert got[k].shape == np.shape(g[k]) and got[k].dtype == g[k].dtype, k
        np.testing.assert_array_equal(got[k], expected[k], err_msg=k)


# --------------------------------------------------------------------------------------------
# Message API: each malformed kind is excluded, the others aggregated exactly
# --------------------------------------------------------------------------------------------


def _malformed_message(kind, good, node_id):
    """A reply built from the honest arrays ``good`` but malformed in the way ``kind`` says."""
    fc = good["fc"]
    if kind == "strings":
        return _reply(dict(good, fc=np.full(fc.shape, "0.5")), node_id)
    if kind == "bytes":
        return _reply(dict(good, fc=np.full(fc.shape, b"x")), node_id)
    if kind == "complex":
        return _reply(dict(good, fc=fc.astype(np.complex64) + 1j), node_id)
    if kind == "object":  # an object array pickled into the Array's bytes
        data = _npy_bytes(fc.astype(object), allow_pickle=True)
        return _reply(
            dict(good, fc=Array(dtype="object", shape=fc.shape, stype="numpy.ndarray", data=data)), node_id
        )
    if kind == "bool":
        return _reply(dict(good, fc=fc > 0), node_id)
    if kind == "datetime":
        return _reply(dict(good, fc=np.zeros(fc.shape, dtype="datetime64[s]")), node_id)
    if kind == "wrong_shape":
        return _reply(dict(good, fc=fc.T.copy()), node_id)
    if kind == "missing_key":
        return _reply({k: v for k, v in good.items() if k != "fc"}, node_id)
    if kind == "extra_key":
        return _reply(dict(good, extra=np.zeros(3, np.float32)), node_id)
    if kind == "ragged":  # the Array's data holds 5 values where its shape says (4, 3)
        data = _npy_bytes(np.zeros(5, np.float32))
        return _reply(
            dict(good, fc=Array(dtype="float32", shape=fc.shape, stype="numpy.ndarray", data=data)), node_id
        )
    if kind == "unreadable":
        garbage = Array(dtype="float32", shape=fc.shape, stype="numpy.ndarray", data=b"\x93NUMPY garbage")
        return _reply(dict(good, fc=garbage), node_id)
    if kind == "two_records":
        return _reply(None, node_id, records={"a": _record(good), "b": _record(good)})
    if kind == "no_record":
        return _reply(None, node_id, records={})
    raise AssertionError(kind)


MESSAGE_KINDS = [
    "strings",
    "bytes",
    "complex",
    "object",
    "bool",
    "datetime",
    "wrong_shape",
    "missing_key",
    "extra_key",
    "ragged",
    "unreadable",
    "two_records",
    "no_record",
]


@pytest.mark.parametrize("rule,f", [("mean", None), ("krum", 2)])
@pytest.mark.parametrize("kind", MESSAGE_KINDS)
def test_message_malformed_reply_excluded_and_reported(rng, caplog, kind, rule, f):
    g = _model(rng)
    clients = _clients(rng, g)
    strategy = RobustStrategy(rule, f=f)
    strategy.global_arrays = ArrayRecord({k: Array(v) for k, v in g.items()})
    replies = [
        _malformed_message(kind, c, 100 + i) if i == BAD else _reply(c, 100 + i)
        for i, c in enumerate(clients)
    ]
    with caplog.at_level(logging.WARNING, logger="robustagg.flower"):
        arrays, metrics = strategy.aggregate_train(1, replies)
    assert arrays is not None
    assert metrics["robustagg-malformed"] == 1
    valid = [c for i, c in enumerate(clients) if i != BAD]
    expected = _expected(rule, None if f is None else f - 1, g, valid)
    _assert_same_arrays({k: v.numpy() for k, v in arrays.items()}, expected, g)
    assert metrics["robustagg-clients"] == N
    assert metrics["robustagg-malformed-indices"] == [BAD]
    assert metrics["robustagg-nonfinite"] == 1  # the malformed reply's NaN row
    assert metrics["robustagg-skipped"] == 0
    assert BAD not in metrics["robustagg-kept-indices"]
    entry = strategy.history[-1]
    assert entry["malformed"].tolist() == [i == BAD for i in range(N)]
    assert list(entry["malformed_reasons"]) == [BAD] and entry["skipped"] is None
    logged = [r for r in caplog.records if r.name == "robustagg.flower"]
    assert any(f"node {100 + BAD}" in r.getMessage() and "malformed" in r.getMessage() for r in logged)


def test_message_keys_in_another_order_are_not_malformed(rng):
    g = _model(rng)
    clients = _clients(rng, g)
    strategy = RobustStrategy("median")
    strategy.global_arrays = ArrayRecord({k: Array(v) for k, v in g.items()})
    replies = [_reply(dict(reversed(list(c.items()))) if i % 2 else c, i) for i, c in enumerate(clients)]
    arrays, metrics = strategy.aggregate_train(1, replies)
    assert metrics["robustagg-malformed"] == 0
    _assert_same_arrays({k: v.numpy() for k, v in arrays.items()}, _expected("median", None, g, clients), g)


def test_message_integer_layer_reply_is_numeric_and_overflow_is_nonfinite(rng):
    """An int layer is read as numbers; a float64 layer too large for float32 becomes an Inf row,
    which the non-finite policy handles (not malformed)."""
    g = _model(rng)
    clients = _clients(rng, g)
    clients[1] = dict(clients[1], fc=np.rint(clients[1]["fc"]).astype(np.int16))
    huge = dict(clients[5], fc=np.full((4, 3), 1e300))
    strategy = RobustStrategy("mean")
    strategy.global_arrays = ArrayRecord({k: Array(v) for k, v in g.items()})
    replies = [_reply(huge if i == 5 else c, i) for i, c in enumerate(clients)]
    arrays, metrics = strategy.aggregate_train(1, replies)
    assert metrics["robustagg-malformed"] == 0 and metrics["robustagg-nonfinite"] == 1
    assert metrics["robustagg-kept-indices"] == [0, 1, 2, 3, 4, 6, 7]
    valid = [c for i, c in enumerate(clients) if i != 5]
    _assert_same_arrays({k: v.numpy() for k, v in arrays.items()}, _expected("mean", None, g, valid), g)


# --------------------------------------------------------------------------------------------
# Legacy API
# --------------------------------------------------------------------------------------------


class _Proxy:
    def __init__(self, cid):
        self.cid = cid


def _fit_res(parameters):
    return FitRes(
        status=Status(code=Code.OK, message=""), parameters=parameters, num_examples=5, metrics={"acc": 0.5}
    )


def _malformed_parameters(kind, good):
    layers = list(good.values())
    fc = layers[2]
    if kind == "strings":
        return ndarrays_to_parameters(layers[:2] + [np.full(fc.shape, "0.5")] + layers[3:])
    if kind == "complex":
        return ndarrays_to_parameters(layers[:2] + [fc.astype(np.complex128)] + layers[3:])
    if kind == "bool":
        return ndarrays_to_parameters(layers[:2] + [fc > 0] + layers[3:])
    if kind == "object":
        tensors = [_npy_bytes(a) for a in layers]
        tensors[2] = _npy_bytes(fc.astype(object), allow_pickle=True)
        return Parameters(tensors=tensors, tensor_type="numpy.ndarray")
    if kind == "wrong_shape":
        return ndarrays_to_parameters(layers[:2] + [fc.T.copy()] + layers[3:])
    if kind == "missing_key":
        return ndarrays_to_parameters(layers[:3])
    if kind == "extra_key":
        return ndarrays_to_parameters(layers + [np.zeros(2, np.float32)])
    if kind == "unreadable":
        return Parameters(tensors=[b"not an npy file"] * len(layers), tensor_type="numpy.ndarray")
    raise AssertionError(kind)


LEGACY_KINDS = [
    "strings",
    "complex",
    "bool",
    "object",
    "wrong_shape",
    "missing_key",
    "extra_key",
    "unreadable",
]


@pytest.mark.parametrize("rule,f", [("mean", None), ("krum", 2)])
@pytest.mark.parametrize("kind", LEGACY_KINDS)
def test_legacy_malformed_result_excluded_and_reported(rng, caplog, kind, rule, f):
    g = _model(rng)
    clients = _clients(rng, g)
    strategy = LegacyRobustStrategy(rule, f=f, fit_metrics_aggregation_fn=lambda m: {"n": len(m)})
    strategy.global_arrays = list(g.values())
    results = [
        (
            _Proxy(f"c{i}"),
            _fit_res(
                _malformed_parameters(kind, c) if i == BAD else ndarrays_to_parameters(list(c.values()))
            ),
        )
        for i, c in enumerate(clients)
    ]
    with caplog.at_level(logging.WARNING, logger="robustagg.flower"):
        params, metrics = strategy.aggregate_fit(1, results, [])
    assert params is not None
    assert metrics["robustagg-malformed"] == 1
    got = dict(zip(g, parameters_to_ndarrays(params), strict=True))
    valid = [c for i, c in enumerate(clients) if i != BAD]
    _assert_same_arrays(got, _expected(rule, None if f is None else f - 1, g, valid), g)
    assert metrics["robustagg-malformed-indices"] == str(BAD)
    assert metrics["robustagg-skipped"] == 0 and metrics["n"] == metrics["robustagg-kept"]
    assert str(BAD) not in metrics["robustagg-kept-indices"].split(",")
    assert any(f"client c{BAD}" in r.getMessage() for r in caplog.records if r.name == "robustagg.flower")


# --------------------------------------------------------------------------------------------
# the framework-free core: Python objects a caller can pass
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "bad",
    [
        pytest.param(lambda c: dict(c, fc=[[1.0, 2.0, 3.0]] * 3 + [[1.0, 2.0]]), id="ragged-list"),
        pytest.param(lambda c: dict(c, fc=np.array([["a", 1.0, None]] * 4, dtype=object)), id="object-array"),
        pytest.param(lambda c: dict(c, fc=c["fc"].astype(object)), id="object-of-floats"),
        pytest.param(lambda c: dict(c, fc=[["x"] * 3] * 4), id="string-list"),
        pytest.param(lambda c: None, id="none"),
        pytest.param(lambda c: 7, id="not-a-container"),
        pytest.param(lambda c: "fc", id="a-string"),
        pytest.param(lambda c: list(c.values()), id="list-for-dict-layout"),
    ],
)
def test_aggregator_malformed_python_objects(rng, bad):
    g = _model(rng, np.float64)
    clients = _clients(rng, g)
    agg = RobustAggregator("trimmed_mean", f=2)
    client_arrays = [bad(c) if i == BAD else c for i, c in enumerate(clients)]
    arrays, info, malformed = agg.aggregate(client_arrays, g)
    assert malformed.tolist() == [i == BAD for i in range(N)]
    assert info.nonfinite.tolist() == malformed.tolist()
    valid = [c for i, c in enumerate(clients) if i != BAD]
    _assert_same_arrays(arrays, _expected("trimmed_mean", 1, g, valid), g)


def test_aggregator_weights_layout_from_real_number_replies_only(rng):
    """Without global arrays the layout is the most common one among real-number replies: a
    majority-layout reply of strings neither sets the dtype nor fails the round."""
    g = _model(rng)
    clients = _clients(rng, g)
    strings = {k: np.full(np.shape(v), "1.0") for k, v in g.items()}
    arrays, info, malformed = RobustAggregator("median", aggregate_on="weights").aggregate(
        [strings, *clients], None
    )
    assert malformed.tolist() == [True] + [False] * N
    _assert_same_arrays(arrays, _expected("median", None, g, clients, base=False), g)


# --------------------------------------------------------------------------------------------
# too few usable replies: a skipped round, never an exception
# --------------------------------------------------------------------------------------------

SHORT = [
    ("krum", 2, 4, 0),  # krum needs n >= 2f + 3
    ("bulyan", 1, 6, 0),  # n >= 4f + 3
    ("trimmed_mean", 2, 4, 0),  # n > 2f
    ("nnm+krum", 2, 6, 0),  # NNM keeps 6 rows, Krum then needs 7
    ("mean", None, 3, 3),  # every reply malformed
]


def _log_text(caplog):
    return "\n".join(r.getMessage() for r in caplog.records if r.name == "robustagg.flower")


@pytest.mark.parametrize("rule,f,n,n_bad", SHORT)
def test_message_short_round_is_skipped_and_logged(rng, caplog, rule, f, n, n_bad):
    g = _model(rng)
    clients = _clients(rng, g, n)
    strategy = RobustStrategy(rule, f=f)
    strategy.global_arrays = ArrayRecord({k: Array(v) for k, v in g.items()})
    replies = [_reply({"x": np.zeros(2)} if i < n_bad else c, i) for i, c in enumerate(clients)]
    with caplog.at_level(logging.WARNING, logger="robustagg.flower"):
        arrays, metrics = strategy.aggregate_train(4, replies)
    assert arrays is None
    assert metrics["robustagg-kept"] == 0
    assert metrics["robustagg-clients"] == n and metrics["robustagg-malformed"] == n_bad
    assert metrics["robustagg-skipped"] == 1
    assert strategy.history[-1]["info"] is None and strategy.history[-1]["skipped"]
    text = _log_text(caplog)
    assert "round 4 skipped" in text
    if n_bad == 0:
        assert "needs n" in text and f"n={n}" in text  # the rule's own bound, in its words


@pytest.mark.parametrize("rule,f,n,n_bad", SHORT)
def test_legacy_short_round_is_skipped_and_logged(rng, caplog, rule, f, n, n_bad):
    g = _model(rng)
    clients = _clients(rng, g, n)
    strategy = LegacyRobustStrategy(rule, f=f)
    strategy.global_arrays = list(g.values())
    results = [
        (_Proxy(str(i)), _fit_res(ndarrays_to_parameters([np.zeros(2)] if i < n_bad else list(c.values()))))
        for i, c in enumerate(clients)
    ]
    with caplog.at_level(logging.WARNING, logger="robustagg.flower"):
        params, metrics = strategy.aggregate_fit(2, results, [])
    assert params is None
    assert metrics["robustagg-kept"] == 0 and metrics["robustagg-kept-indices"] == ""
    assert metrics["robustagg-skipped"] == 1
    text = _log_text(caplog)
    assert "round 2 skipped" in text
    if n_bad == 0:
        assert "needs n" in text and f"n={n}" in text


def test_message_no_usable_reply_at_all(rng, caplog):
    g = _model(rng)
    strategy = RobustStrategy("krum", f=1)
    strategy.global_arrays = ArrayRecord({k: Array(v) for k, v in g.items()})
    with caplog.at_level(logging.WARNING, logger="robustagg.flower"):
        arrays, metrics = strategy.aggregate_train(1, [])
    assert arrays is None and metrics["robustagg-clients"] == 0 and metrics["robustagg-skipped"] == 1
    assert "round 1 skipped" in _log_text(caplog)


def test_negative_f_is_refused_when_the_strategy_is_built():
    with pytest.raises(ValueError, match="RobustAggregator: argument 'f' must be >= 0"):
        RobustStrategy("krum", f=-1)
    with pytest.raises(TypeError, match="argument 'f' must be an integer"):
        LegacyRobustStrategy("krum", f=1.5)


def test_a_bad_rule_option_fails_the_round_instead_of_skipping_it(rng):
    """Only the rule's bound on n and f (TooFewClientsError) skips a round: a wrong option is the
    operator's error and must surface, not be logged as a skipped round every round."""
    g = _model(rng)
    clients = _clients(rng, g, 9)
    strategy = RobustStrategy("geometric_median", rule_kwargs={"maxiter": 0})
    strategy.global_arrays = ArrayRecord({k: Array(v) for k, v in g.items()})
    replies = [_reply(c, i) for i, c in enumerate(clients)]
    with pytest.raises(ValueError, match="geometric_median: argument 'maxiter'"):
        strategy.aggregate_train(1, replies)
