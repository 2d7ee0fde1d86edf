"""The built-in trainer: models, data, partitions, the federated loop, the progress bar."""

import io

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

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
from robustagg.training.data import DatasetError

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
        load_dataset("cifar10")
    with pytest.raises(ValueError, match="labels"):
        from_arrays(X, y[:10])


def _standardised_oracle(X_train, X_test):
    """float64, the training set's mean and population std, scale 1 for a constant column."""
    X_train = np.asarray(X_train, dtype=np.float64)
    mu, sd = X_train.mean(axis=0), X_train.std(axis=0)
    const = np.ptp(X_train, axis=0) == 0
    mu[const], sd[const] = X_train[0, const], 1.0
    return (X_train - mu) / sd, (np.asarray(X_test, dtype=np.float64) - mu) / sd


def test_pixels_and_float32_are_standardised_in_float32(rng):
    X = rng.integers(0, 256, size=(300, 6, 5), dtype=np.uint8)
    X[:, 0, 0] = 17  # constant
    Xt = rng.integers(0, 256, size=(40, 6, 5), dtype=np.uint8)
    y, yt = np.arange(300) % 4, np.arange(40) % 4
    before = X.copy()
    data = from_arrays(X, y, Xt, yt)
    np.testing.assert_array_equal(X, before)  # the caller's arrays are not touched
    assert data.X_train.dtype == np.float32 and data.X_test.dtype == np.float32
    want_tr, want_te = _standardised_oracle(X.reshape(300, -1) / 255.0, Xt.reshape(40, -1) / 255.0)
    np.testing.assert_allclose(data.X_train, want_tr, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(data.X_test, want_te, rtol=1e-5, atol=1e-5)
    assert np.all(data.X_train[:, 0] == 0)
    # float32 input: float32 too, same oracle; float64 and integers other than bytes: float64
    F = rng.normal(3.0, 2.0, size=(200, 7)).astype(np.float32)
    d32 = from_arrays(F, np.arange(200) % 3, F[:50], np.arange(50) % 3)
    assert d32.X_train.dtype == np.float32
    np.testing.assert_allclose(d32.X_train, _standardised_oracle(F, F[:50])[0], rtol=1e-5, atol=1e-5)
    assert from_arrays(F.astype(np.float64), np.arange(200) % 3).X_train.dtype == np.float64
    assert from_arrays(F.astype(np.int16), np.arange(200) % 3).X_train.dtype == np.float64


@given(
    m=st.integers(2, 40),
    p=st.integers(1, 6),
    scale=st.sampled_from([1e-3, 1.0, 1e4]),
    seed=st.integers(0, 2**32 - 1),
)
def test_float32_standardisation_matches_float64_oracle(m, p, scale, seed):
    r = np.random.default_rng(seed)
    X = (r.normal(size=(m, p)) * scale + r.normal(size=p) * 10 * scale).astype(np.float32)
    X[:, 0] = X[0, 0]  # a constant column stays exactly 0
    y = np.arange(m) % 2
    data = from_arrays(X, y, X, y)
    assert data.X_train.dtype == np.float32
    want, _ = _standardised_oracle(X, X)
    np.testing.assert_allclose(data.X_train, want, rtol=2e-4, atol=2e-4)
    assert np.all(data.X_train[:, 0] == 0)


def test_dataset_fingerprint_follows_content_not_name(tmp_path, rng):
    X = rng.normal(size=(40, 3))
    y = np.arange(40) % 2
    a = from_arrays(X, y, X[:10], y[:10], name="a")
    b = from_arrays(X.copy(), y.copy(), X[:10].copy(), y[:10].copy(), name="b")
    assert a.fingerprint == b.fingerprint and len(a.fingerprint) == 16
    X2 = X.copy()
    X2[5, 1] += 1e-9
    assert from_arrays(X2, y, X[:10], y[:10]).fingerprint != a.fingerprint
    y2 = y.copy()
    y2[[0, 1]] = y2[[1, 0]]
    assert from_arrays(X, y2, X[:10], y[:10]).fingerprint != a.fingerprint
    np.savez(tmp_path / "one.npz", x_train=X, y_train=y, x_test=X[:10], y_test=y[:10])
    np.savez(tmp_path / "two.npz", x_train=X, y_train=y, x_test=X[:10], y_test=y[:10])
    assert (
        load_dataset(str(tmp_path / "one.npz")).fingerprint
        == load_dataset(str(tmp_path / "two.npz")).fingerprint
    )


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda p: p.write_bytes(b"not a zip"), "not a valid .npz file"),
        (lambda p: p.write_bytes(_valid_npz_bytes()[:-30]), "not a valid .npz file"),
        (lambda p: np.savez(p, X=np.array([{"a": 1}] * 4, dtype=object), y=np.arange(4)), "Python objects"),
        (lambda p: np.savez(p, a=np.zeros(3)), "expected arrays 'X' and 'y'"),
        (lambda p: np.savez(p, X=np.full((8, 2), np.nan), y=np.arange(8) % 2), "NaN or Inf"),
        (lambda p: np.savez(p, X=np.zeros((8, 2)), y=np.arange(7)), "8 samples but y has 7 labels"),
        (lambda p: np.savez(p, X=np.zeros((8, 2)), y=np.zeros(8)), "at least 2 classes"),
        (lambda p: np.savez(p, X=np.array([["a", "b"]] * 8), y=np.arange(8) % 2), "real numbers"),
        (lambda p: np.savez(p, X=np.zeros((8, 2)), y=np.linspace(0, 1, 8)), "integer class labels"),
        (lambda p: np.savez(p, X=np.zeros((4, 2)), y=np.array([0, 0, 1, 1])), "cannot split 4 samples"),
        (
            lambda p: np.savez(
                p,
                x_train=np.zeros((8, 2)),
                y_train=np.arange(8) % 2,
                x_test=np.zeros((3, 5)),
                y_test=np.arange(3) % 2,
            ),
            "train has 2 features, test has 5",
        ),
    ],
    ids=[
        "not-zip",
        "truncated",
        "pickled",
        "no-arrays",
        "nan",
        "labels",
        "one-class",
        "strings",
        "float-labels",
        "tiny",
        "features",
    ],
)
def test_bad_npz_files_are_clear_errors_naming_the_file(tmp_path, make, message):
    path = tmp_path / "data.npz"
    make(path)
    with pytest.raises(DatasetError) as info:
        load_dataset(str(path))
    assert message in str(info.value) and str(path) in str(info.value)


def _valid_npz_bytes():
    buf = io.BytesIO()
    np.savez(buf, X=np.arange(200.0).reshape(100, 2), y=np.arange(100) % 2)
    return buf.getvalue()


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
        record_signs=True,
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


@pytest.mark.parametrize("attack", ["byzmean", "min_max", "lie", "none"])
def test_nonfinite_honest_gradients_are_a_divergence_not_an_error(digits, monkeypatch, attack):
    """Under Mean and a strong attack the model can blow up until the honest clients' own
    gradients are NaN/Inf: the attacks then refuse to take statistics over no finite row and the
    rules have nothing to aggregate. The trainer records a divergence at that round instead of
    failing the cell (a full Fashion-MNIST Table I hit this for Mean under ByzMean/Min-Max/Min-Sum)."""
    from robustagg.training import models

    real = models._Model.client_gradients
    calls = []

    def nan_from_round_4(self, theta, X, y, weights=None):
        G, losses = real(self, theta, X, y, weights)
        calls.append(1)
        if len(calls) >= 4:
            G = np.full_like(G, np.nan)
        return G, losses

    monkeypatch.setattr(models._Model, "client_gradients", nan_from_round_4)
    res = run_federated(digits, model="logreg", n_clients=10, epochs=5, rule="mean", attack=attack)
    assert res.summary["diverged"] and res.summary["diverged_at_round"] == 4
    assert np.isfinite(res.summary["best_accuracy"]) and np.all(np.isfinite(res.theta))


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


# ------------------------------------------------------------------------------------------------
# the trainer's schedule and precision


def test_evaluation_schedule_default_once_an_epoch_and_at_the_end(digits):
    evaluated = []
    from robustagg.training import models

    real = models._Model.evaluate

    def spy(self, theta, X, y):
        evaluated.append(X.shape[0])
        return real(self, theta, X, y)

    kw = dict(model="logreg", n_clients=10, epochs=3, batch_size=16, record_signs=False)
    import unittest.mock as mock

    with mock.patch.object(models._Model, "evaluate", spy):
        res = run_federated(digits, **kw)
    rpe = res.summary["rounds_per_epoch"]
    assert rpe > 1
    assert res.history["round"].tolist() == [0, rpe, 2 * rpe, 3 * rpe]
    assert res.history["epoch"].tolist() == [0, 1, 2, 3]
    assert len(evaluated) == 4 and set(evaluated) == {digits.X_test.shape[0]}  # the test set, 4 times
    assert res.summary["best_accuracy"] == res.history["accuracy"].max()
    assert res.summary["final_accuracy"] == res.history["accuracy"][-1]
    # every N rounds, and always after the last one
    res = run_federated(digits, eval_every=rpe + 1, **kw)
    total = 3 * rpe
    want = [0, *range(rpe + 1, total + 1, rpe + 1)]
    want += [] if want[-1] == total else [total]
    assert res.history["round"].tolist() == want
    res1 = run_federated(digits, eval_every=1, **kw)
    assert res1.history["round"].tolist() == list(range(total + 1))
    # the same training, only evaluated more often: the evaluations at epoch ends agree
    base = run_federated(digits, **kw)
    np.testing.assert_array_equal(res1.history["accuracy"][::rpe], base.history["accuracy"])
    np.testing.assert_array_equal(res1.theta, base.theta)
    with pytest.raises(ValueError, match="eval_every"):
        run_federated(digits, eval_every=0, **kw)


def test_sign_statistics_only_when_asked(digits, monkeypatch):
    from robustagg.training import federated

    calls = []
    real = federated.sign_fractions
    monkeypatch.setattr(federated, "sign_fractions", lambda G: calls.append(1) or real(G))
    kw = dict(model="logreg", n_clients=10, epochs=2, batch_size=16)
    res = run_federated(digits, **kw)
    assert calls == [] and not {"honest_signs", "malicious_signs", "lie_signs"} & set(res.history)
    res = run_federated(digits, record_signs=True, **kw)
    assert calls and res.history["lie_signs"].shape == (res.summary["rounds"], 3)


def test_float32_data_trains_a_float32_model(digits):
    seen = []

    def capture(grads):
        G = np.asarray(grads)
        seen.append(G.dtype)
        return G.mean(axis=0)

    d32 = from_arrays(
        digits.X_train.astype(np.float32), digits.y_train, digits.X_test.astype(np.float32), digits.y_test
    )
    kw = dict(model="mlp", n_clients=10, epochs=6, batch_size=48, lr=0.1)
    res32 = run_federated(d32, rule=capture, **kw)
    assert set(seen) == {np.dtype(np.float32)} and res32.theta.dtype == np.float32
    seen.clear()
    res64 = run_federated(digits, rule=capture, **kw)
    assert set(seen) == {np.dtype(np.float64)} and res64.theta.dtype == np.float64
    # the same training up to float32 rounding
    assert abs(res32.summary["best_accuracy"] - res64.summary["best_accuracy"]) < 0.03
    assert res32.summary["best_accuracy"] > 0.85


def test_progress_lines_when_not_a_terminal(monkeypatch):
    buf = io.StringIO()
    import types

    from robustagg import _progress

    clock = iter([100.0, 110.0, 130.0])  # the start, then one reading per line
    monkeypatch.setattr(_progress, "time", types.SimpleNamespace(perf_counter=lambda: next(clock)))
    with Progress(3, "table1", stream=buf, lines=True) as bar:
        bar.update(1, postfix="mean/lie 97.1%")
        bar.update(1, postfix="median/lie 95.0%")
    monkeypatch.undo()
    lines = buf.getvalue().splitlines()
    assert len(lines) == 2 and "\r" not in buf.getvalue() and "|#" not in buf.getvalue()
    # 10 s for one cell: ~20 s for the other two; 30 s for two: ~15 s for the last
    assert lines[0].startswith("table1 1/3 (33%) mean/lie 97.1%") and "0:10 elapsed, ~0:20 left" in lines[0]
    assert lines[1].startswith("table1 2/3 (67%) median/lie 95.0%") and "0:30 elapsed, ~0:15 left" in lines[1]
    buf = io.StringIO()
    with Progress(2, "x", stream=buf, lines=True, enabled=False) as bar:  # --quiet
        bar.update(2)
    assert buf.getvalue() == ""
    buf = io.StringIO()
    with Progress(2, "x", stream=buf) as bar:  # lines not asked: silent off a terminal, as before
        bar.update(2)
    assert buf.getvalue() == ""
