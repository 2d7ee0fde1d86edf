"""The built-in trainer: models, data, partitions, the federated loop, the progress bar."""

import io

import numpy as np
import pytest

import robustagg
from robustagg import Diagnostics
from robustagg._progress import Progress, format_seconds
from robustagg.training import (
    MLP,
    FederatedConfig,
    LogisticRegression,
    from_arrays,
    iid_partition,
    load_dataset,
    noniid_partition,
    run_federated,
    sign_fractions,
)

# ------------------------------------------------------------------------------------------------
# models


def _numerical_gradient(model, theta, X, y, w=None, eps=1e-6):
    """Central differences of the (weighted) mean cross-entropy of one client."""

    def loss(t):
        z = model.logits(t, X)
        z = z - z.max(axis=1, keepdims=True)
        logp = z - np.log(np.exp(z).sum(axis=1, keepdims=True))
        per = -logp[np.arange(len(y)), y]
        ww = np.full(len(y), 1.0 / len(y)) if w is None else w / w.sum()
        return float((per * ww).sum())

    g = np.zeros_like(theta)
    for j in range(theta.size):
        e = np.zeros_like(theta)
        e[j] = eps
        g[j] = (loss(theta + e) - loss(theta - e)) / (2 * eps)
    return g


@pytest.mark.parametrize("model", [LogisticRegression(5, 3), MLP(5, 3, hidden=4)], ids=["logreg", "mlp"])
def test_client_gradients_match_finite_differences(model, rng):
    n, b = 3, 6
    theta = model.init(rng) + 0.1 * rng.normal(size=model.d)
    X = rng.normal(size=(n, b, 5))
    y = rng.integers(0, 3, size=(n, b))
    w = np.ones((n, b))
    w[1, 4:] = 0.0  # client 1 uses only 4 samples
    G, losses = model.client_gradients(theta, X, y, w)
    assert G.shape == (n, model.d) and G.dtype == np.float64
    for i in range(n):
        num = _numerical_gradient(model, theta, X[i], y[i], w[i])
        np.testing.assert_allclose(G[i], num, rtol=1e-5, atol=1e-8)
        np.testing.assert_allclose(losses[i], model.loss(theta, X[i][w[i] > 0], y[i][w[i] > 0]), rtol=1e-12)


def test_batched_gradients_equal_one_client_at_a_time(rng):
    model = MLP(8, 4, hidden=7)
    theta = model.init(rng)
    X = rng.normal(size=(10, 5, 8))
    y = rng.integers(0, 4, size=(10, 5))
    G, _ = model.client_gradients(theta, X, y)
    for i in range(10):
        Gi, _ = model.client_gradients(theta, X[i : i + 1], y[i : i + 1])
        np.testing.assert_allclose(G[i], Gi[0], rtol=1e-12, atol=1e-15)


def test_parameter_layout():
    m = MLP(64, 10, hidden=32)
    assert m.d == 64 * 32 + 32 + 32 * 10 + 10
    theta = np.arange(m.d, dtype=float)
    W1, b1, W2, b2 = m.unflatten(theta)
    assert W1.shape == (64, 32) and b2.shape == (10,)
    assert W1[0, 0] == 0 and b2[-1] == m.d - 1
    assert LogisticRegression(64, 10).d == 650


def test_sign_fractions():
    G = np.array([[1.0, -2.0, 0.0, 3.0], [0.0, 0.0, -1.0, -1.0]])
    np.testing.assert_allclose(sign_fractions(G), [[0.5, 0.25, 0.25], [0.0, 0.5, 0.5]])


# ------------------------------------------------------------------------------------------------
# data and partitions


def test_digits_split_and_standardisation():
    data = load_dataset("digits")
    assert data.n_classes == 10 and data.n_features == 64
    assert data.X_train.shape[0] + data.X_test.shape[0] == 1797
    np.testing.assert_allclose(data.X_train.mean(axis=0), 0.0, atol=1e-10)
    sd = data.X_train.std(axis=0)
    assert np.all((np.abs(sd - 1) < 1e-8) | (sd < 1e-12))  # constant pixels stay exactly zero


def test_npz_and_arrays(tmp_path, rng):
    X = rng.normal(size=(60, 3, 2))
    y = np.repeat(np.array([3, 7, 9]), 20)
    path = tmp_path / "mine.npz"
    np.savez(path, X=X, y=y)
    data = load_dataset(str(path), test_size=0.25)
    assert data.n_classes == 3 and data.n_features == 6 and set(np.unique(data.y_train)) == {0, 1, 2}
    assert data.X_test.shape == (15, 6)
    path2 = tmp_path / "split.npz"
    np.savez(path2, x_train=X[:40], y_train=y[:40], x_test=X[40:], y_test=y[40:])
    data2 = load_dataset(str(path2))
    assert data2.X_train.shape == (40, 6) and data2.X_test.shape == (20, 6)
    with pytest.raises(ValueError, match="expected arrays"):
        np.savez(tmp_path / "bad.npz", a=X)
        load_dataset(str(tmp_path / "bad.npz"))
    with pytest.raises(FileNotFoundError):
        load_dataset(str(tmp_path / "missing.npz"))
    with pytest.raises(ValueError, match="unknown dataset"):
        load_dataset("mnist")
    with pytest.raises(ValueError, match="labels"):
        from_arrays(X, y[:10])


def _assert_exact_partition(parts, m):
    allidx = np.concatenate(parts)
    np.testing.assert_array_equal(np.sort(allidx), np.arange(m))  # each sample exactly once


@pytest.mark.parametrize("s", [0.0, 0.3, 0.5, 0.8, 1.0])
def test_partitions_assign_every_sample_once(s, rng):
    y = rng.integers(0, 10, size=997)
    _assert_exact_partition(noniid_partition(y, 50, s, rng), y.size)
    _assert_exact_partition(iid_partition(y, 50, rng), y.size)
    sizes = [p.size for p in iid_partition(y, 50, rng)]
    assert max(sizes) - min(sizes) <= 1


def test_noniid_label_skew(rng):
    y = np.repeat(np.arange(10), 100)  # 10 labels × 100: 100 shards of 10 samples, one label each
    parts = noniid_partition(y, 50, 0.0, rng)
    labels_per_client = [np.unique(y[p]).size for p in parts]
    assert max(labels_per_client) <= 2
    assert all(p.size == 20 for p in parts)
    # more IID data, less skew: the mean share of a client's most common label drops with s
    top_share = []
    for s in (0.0, 0.3, 0.5, 0.8, 1.0):
        parts = noniid_partition(y, 50, s, np.random.default_rng(1))
        top_share.append(np.mean([np.bincount(y[p], minlength=10).max() / p.size for p in parts]))
    assert all(a > b for a, b in zip(top_share, top_share[1:-1], strict=False)), top_share
    assert top_share[0] >= 0.5 and top_share[-1] < 0.5
    # s = 0.5: on average more than half of a client's samples come from its top 2 labels
    # (IID alone would give about 2/10 + noise)
    parts = noniid_partition(y, 50, 0.5, np.random.default_rng(2))
    top2 = [np.sort(np.bincount(y[p], minlength=10))[::-1][:2].sum() / p.size for p in parts]
    assert np.mean(top2) > 0.5


def test_partition_errors(rng):
    with pytest.raises(ValueError, match="cannot give every one"):
        iid_partition(np.zeros(5, int), 10, rng)
    with pytest.raises(ValueError, match="IID fraction"):
        noniid_partition(np.zeros(50, int), 5, 1.5, rng)


# ------------------------------------------------------------------------------------------------
# the federated loop


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits")


def test_short_run_learns(digits):
    res = run_federated(digits, model="logreg", n_clients=10, epochs=8, batch_size=48, lr=0.1, rule="mean")
    assert res.summary["best_accuracy"] > 0.85  # chance is 0.10
    assert res.history["accuracy"][0] < 0.5  # the initial model did not know
    assert not res.summary["diverged"]
    res_mlp = run_federated(digits, model="mlp", n_clients=10, epochs=8, batch_size=48, lr=0.1, rule="mean")
    assert res_mlp.summary["best_accuracy"] > 0.85


def test_same_seed_same_run_and_byzantine_positions(digits):
    kw = dict(model="logreg", n_clients=10, byzantine_fraction=0.3, epochs=2, attack="sign_flip")
    a = run_federated(digits, seed=3, **kw)
    b = run_federated(digits, seed=3, **kw)
    np.testing.assert_array_equal(a.history["accuracy"], b.history["accuracy"])
    np.testing.assert_array_equal(a.theta, b.theta)
    assert a.byzantine.sum() == 3
    positions = {tuple(np.flatnonzero(run_federated(digits, seed=s, **kw).byzantine)) for s in range(6)}
    assert len(positions) > 1  # drawn with the seed, not always the first rows


def test_server_update_is_sgd_with_momentum(digits):
    """x1 = x0 - lr*c, x2 = x1 - lr*(0.9 c + c): two rounds with a constant aggregate."""

    def zeros(grads):
        return np.zeros(np.asarray(grads).shape[1])

    kw = dict(
        model="logreg",
        n_clients=5,
        epochs=1,
        batch_size=135,
        lr=0.5,
        weight_decay=0.0,
        byzantine_fraction=0.0,
    )
    base = run_federated(digits, rule=zeros, **kw)
    assert base.summary["rounds"] == 2
    c = np.linspace(-1, 1, base.theta.size)

    def constant(grads):
        return c

    res = run_federated(digits, rule=constant, **kw)
    np.testing.assert_allclose(res.theta, base.theta - 0.5 * (c + (0.9 * c + c)), rtol=1e-12)
    wd = run_federated(digits, rule=zeros, **{**kw, "weight_decay": 0.1})
    x1 = base.theta * (1 - 0.5 * 0.1)
    np.testing.assert_allclose(wd.theta, x1 - 0.5 * (0.9 * 0.1 * base.theta + 0.1 * x1), rtol=1e-12)


def test_rules_and_attacks_plug_in_by_name(digits):
    attacks = [a for a in ("gaussian", "sign_flip", "lie", "min_max") if a in robustagg.ATTACKS]
    assert attacks, "no attack registered"
    rules = [r for r in ("mean", "median", "multi_krum", "signguard") if r in robustagg.RULES]
    for rule in rules:
        for attack in attacks[:2]:
            res = run_federated(digits, model="logreg", n_clients=10, epochs=1, rule=rule, attack=attack)
            assert res.summary["rounds"] >= 1 and 0.0 <= res.summary["honest_kept_rate"] <= 1.0
    with pytest.raises(ValueError, match="unknown rule"):
        run_federated(digits, rule="no_such_rule", epochs=1)
    with pytest.raises(ValueError, match="unknown attack"):
        run_federated(digits, attack="no_such_attack", epochs=1)


def test_attack_sees_all_honest_gradients_and_kept_rates(digits):
    seen = {}

    def scale_up(grads, f, rng=None):
        G = np.asarray(grads)
        seen["mask"] = np.asarray(f).copy()
        seen["shape"] = G.shape
        out = G.copy()
        out[f] = 1e3 * np.abs(G[f]) + 1.0  # large and all positive
        return out

    def norm_filter(grads, f, return_info=False):
        G = np.asarray(grads)
        norms = np.linalg.norm(G, axis=1)
        kept = norms <= 10 * np.median(norms)
        agg = G[kept].mean(axis=0)
        info = Diagnostics("norm_filter", kept=kept, nonfinite=np.zeros(len(G), bool))
        return (agg, info) if return_info else agg

    res = run_federated(
        digits,
        model="logreg",
        n_clients=10,
        byzantine_fraction=0.2,
        epochs=2,
        rule=norm_filter,
        attack=scale_up,
    )
    np.testing.assert_array_equal(seen["mask"], res.byzantine)
    assert seen["shape"] == (10, res.summary["d"])
    assert res.summary["honest_kept_rate"] == 1.0 and res.summary["malicious_kept_rate"] == 0.0
    np.testing.assert_allclose(
        res.history["malicious_signs"], np.tile([1.0, 0.0, 0.0], (res.summary["rounds"], 1))
    )
    np.testing.assert_allclose(res.history["honest_signs"].sum(axis=1), 1.0)


def test_label_flip_changes_only_byzantine_gradients(digits):
    captured = []

    def capture(grads):
        captured.append(np.array(grads))
        return np.zeros(np.asarray(grads).shape[1])

    kw = dict(model="logreg", n_clients=10, byzantine_fraction=0.3, epochs=1, rule=capture, seed=5)
    run_federated(digits, attack="none", **kw)
    honest = captured[0]
    first = len(captured)
    res = run_federated(digits, attack="label_flip", **kw)
    flipped = captured[first]
    byz = res.byzantine
    np.testing.assert_array_equal(flipped[~byz], honest[~byz])
    assert np.all(np.abs(flipped[byz] - honest[byz]).max(axis=1) > 0)


def test_time_varying_attack_changes_each_epoch_only(digits):
    res = run_federated(
        digits,
        model="logreg",
        n_clients=10,
        epochs=12,
        batch_size=48,
        attack="time_varying",
        time_varying_pool=("none", "sign_flip", "label_flip", "gaussian"),
    )
    ids = res.history["attack"]
    per_epoch = ids.reshape(12, -1)
    assert res.summary["rounds_per_epoch"] > 1
    assert np.all(per_epoch == per_epoch[:, :1])  # constant within an epoch
    assert np.unique(per_epoch[:, 0]).size >= 2  # drawn afresh


def test_stateful_reference_is_previous_aggregate(digits):
    refs, outs = [], []

    def with_reference(grads, reference=None, return_info=False):
        refs.append(None if reference is None else np.array(reference))
        out = np.asarray(grads).mean(axis=0)
        outs.append(out)
        return out

    run_federated(digits, model="logreg", n_clients=5, epochs=3, batch_size=300, rule=with_reference)
    assert refs[0] is None
    for r, prev in zip(refs[1:], outs[:-1], strict=True):
        np.testing.assert_array_equal(r, prev)


def test_signguard_sim_gets_reference_when_available(digits):
    if "signguard_sim" not in robustagg.RULES:
        pytest.skip("signguard_sim not in this installation")
    res = run_federated(digits, model="logreg", n_clients=20, epochs=2, rule="signguard_sim", attack="lie")
    assert res.summary["rounds"] > 0


def test_divergence_is_recorded_not_raised(digits):
    calls = []

    def breaks_at_round_3(grads):
        calls.append(1)
        G = np.asarray(grads)
        return G.mean(axis=0) if len(calls) < 3 else np.full(G.shape[1], np.nan)

    res = run_federated(digits, model="logreg", n_clients=10, epochs=5, rule=breaks_at_round_3)
    assert res.summary["diverged"] and res.summary["diverged_at_round"] == 3
    assert np.isnan(res.summary["final_accuracy"]) and np.isfinite(res.summary["best_accuracy"])
    assert np.all(np.isfinite(res.theta))
    # overflowing parameters stop the run too
    res = run_federated(
        digits, model="logreg", n_clients=10, epochs=5, rule=lambda g: np.full(np.shape(g)[1], 1e308)
    )
    assert res.summary["diverged"]


def test_config_validation(digits):
    for bad in (
        dict(n_clients=0),
        dict(byzantine_fraction=1.0),
        dict(lr=-1.0),
        dict(partition="weird"),
        dict(model="cnn"),
        dict(epochs=0),
    ):
        with pytest.raises(ValueError):
            FederatedConfig(**bad).validate()
    with pytest.raises(TypeError, match="unknown setting"):
        run_federated(digits, FederatedConfig(), colour="red")


def test_noniid_run(digits):
    res = run_federated(digits, model="logreg", n_clients=10, epochs=3, partition="noniid", s=0.3)
    assert res.summary["partition"] == "noniid(s=0.3)" and res.summary["best_accuracy"] > 0.3


# ------------------------------------------------------------------------------------------------
# progress bar


def test_progress_bar_quiet_unless_tty_or_forced():
    buf = io.StringIO()
    with Progress(3, "x", stream=buf) as bar:  # StringIO is not a TTY
        bar.update(3)
    assert buf.getvalue() == ""
    buf = io.StringIO()
    with Progress(10, "cells", stream=buf, enabled=True, max_fps=0) as bar:
        bar.update(3, postfix="mean/lie")
        assert "3/10" in bar.render() and "mean/lie" in bar.render()
    text = buf.getvalue()
    assert "cells |" in text and "3/10" in text and text.endswith("\n")
    assert (
        format_seconds(75.3) == "1:15"
        and format_seconds(3725) == "1:02:05"
        and format_seconds(float("nan")) == "?"
    )


def test_fltrust_gets_the_servers_root_gradient_and_learns():
    from robustagg.training import load_dataset, run_federated

    data = load_dataset("digits")
    base = run_federated(data, rule="mean", attack="none", epochs=10, seed=1, record_signs=False)
    res = run_federated(data, rule="fltrust", attack="sign_flip", epochs=10, seed=1, record_signs=False)
    assert res.summary["malicious_kept_rate"] == 0.0  # sign-flipped rows get no trust
    assert res.summary["honest_kept_rate"] > 0.9
    # trains despite 20 % sign-flipping clients, close to the attack-free mean
    assert res.summary["best_accuracy"] > base.summary["best_accuracy"] - 0.1 > 0.5
