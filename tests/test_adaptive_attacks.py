"""Tests of the adaptive attacks: line_search (optimal ALIE/IPM generalised) and sign_matching
(aimed at SignGuard's norm and sign features)."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import robustagg
from robustagg import attacks
from robustagg.robustness import synthetic_gradients
from robustagg.testing import strategies as rst


def coordinate_median(grads, f):
    return np.median(np.asarray(grads), axis=0)


def honest(n=20, d=30, seed=0, spread=2.0):
    G, _ = synthetic_gradients(n, d, spread=spread, seed=seed)
    return G


def deviation(rule, X, f, target):
    return float(np.linalg.norm(np.asarray(rule(X, f), dtype=np.float64) - target))


# ---------------------------------------------------------------------------------------------
# line_search
# ---------------------------------------------------------------------------------------------
def test_line_search_needs_a_rule():
    with pytest.raises(ValueError, match="line_search.*'rule' is required"):
        attacks.line_search(honest(), 3)
    with pytest.raises(ValueError, match="unknown rule"):
        attacks.line_search(honest(), 3, rule="no_such_rule")
    with pytest.raises(ValueError, match="directions"):
        attacks.line_search(honest(), 3, rule="mean", directions=["up"])
    with pytest.raises(ValueError, match="grid"):
        attacks.line_search(honest(), 3, rule="mean", grid=[-1.0])


def test_line_search_reports_the_deviation_it_achieves():
    G = honest(seed=1)
    f = 5
    out, info = attacks.line_search(G, f, rule=coordinate_median, return_info=True)
    target = G[f:].mean(axis=0)
    np.testing.assert_allclose(info["deviation"], deviation(coordinate_median, out, f, target), rtol=1e-12)
    np.testing.assert_array_equal(out[f:], G[f:])
    assert (out[:f] == out[0]).all()
    assert info["direction"] in ("std", "unit_vec", "sign")


@pytest.mark.parametrize("direction", ["std", "unit_vec", "sign"])
def test_line_search_beats_every_grid_point(direction):
    G = honest(seed=2)
    f = 5
    grid = [0.25, 0.5, 1.0, 2.0, 4.0]
    out, info = attacks.line_search(
        G, f, rule=coordinate_median, directions=[direction], grid=grid, refine=0, return_info=True
    )
    mu = G.mean(axis=0)
    p = {"std": -G.std(axis=0, ddof=1), "unit_vec": -mu, "sign": -np.sign(mu)}[direction]
    u = p / np.linalg.norm(p)
    target = G[f:].mean(axis=0)
    for m in [0.0, *grid]:
        X = G.copy()
        X[:f] = mu + m * info["scale"] * u
        assert deviation(coordinate_median, X, f, target) <= info["deviation"] + 1e-12


def test_optimal_alie_is_lie_with_the_best_z_and_beats_eq2():
    """Along "std" the attack is LIE with z = γ/‖σ‖; with the paper's z on the grid it is at
    least as damaging as LIE with that z."""
    G = honest(n=25, d=40, seed=3)
    f = 6
    sigma = G.std(axis=0, ddof=1)
    _, probe = attacks.line_search(
        G, f, rule=coordinate_median, directions=["std"], grid=[1.0], refine=0, return_info=True
    )
    z_paper = attacks.lie_z(25, f)
    grid = [z_paper * np.linalg.norm(sigma) / probe["scale"], *(2.0 ** (k / 2) for k in range(-8, 8))]
    out, info = attacks.line_search(
        G, f, rule=coordinate_median, directions=["std"], grid=grid, return_info=True
    )
    z_best = info["gamma"] / np.linalg.norm(sigma)
    np.testing.assert_allclose(out, attacks.lie(G, f, z=z_best), rtol=1e-10, atol=1e-12)
    target = G[f:].mean(axis=0)
    assert info["deviation"] >= deviation(coordinate_median, attacks.lie(G, f), f, target) - 1e-12


def test_optimal_ipm_is_ipm_with_the_best_epsilon():
    G = honest(n=20, d=30, seed=4)
    f = 5
    out, info = attacks.line_search(
        G, f, rule=coordinate_median, directions=["unit_vec"], benign_only=True, return_info=True
    )
    mu_benign = G[f:].mean(axis=0)
    eps = info["gamma"] / np.linalg.norm(mu_benign) - 1.0
    np.testing.assert_allclose(out[:f], -eps * np.broadcast_to(mu_benign, (f, 30)), rtol=1e-9, atol=1e-12)
    if eps >= 0:
        np.testing.assert_allclose(out, attacks.ipm(G, f, eps=eps), rtol=1e-9, atol=1e-12)


def test_line_search_beats_fixed_attacks_against_median():
    G = honest(n=30, d=50, seed=5)
    f = 6
    target = G[f:].mean(axis=0)
    _, info = attacks.line_search(G, f, rule=coordinate_median, return_info=True)
    for fixed in (attacks.lie(G, f, z=0.3), attacks.min_max(G, f), attacks.ipm(G, f, eps=0.1)):
        assert info["deviation"] >= deviation(coordinate_median, fixed, f, target) * 0.999


def test_line_search_random_rule_is_seeded_and_torch_round_trips():
    torch = pytest.importorskip("torch")

    def noisy_mean(grads, f, rng=None):
        g = np.asarray(grads)
        return g.mean(axis=0) + np.random.default_rng(rng).normal(size=g.shape[1]) * 0.01

    G = honest(n=12, d=8, seed=6)
    a = attacks.line_search(G, 3, rule=noisy_mean, rng=9, refine=3)
    b = attacks.line_search(G, 3, rule=noisy_mean, rng=9, refine=3)
    np.testing.assert_array_equal(a, b)
    t = attacks.line_search(torch.from_numpy(G.astype(np.float32)), 3, rule="mean", grid=[1.0, 2.0], refine=0)
    assert isinstance(t, torch.Tensor) and t.dtype == torch.float32


# ---------------------------------------------------------------------------------------------
# sign_matching
# ---------------------------------------------------------------------------------------------
@settings(max_examples=40)
@given(
    G=rst.gradient_matrices(
        n=st.integers(4, 20), d=st.integers(2, 60), scale=1.0, spread=st.floats(1.0, 10.0)
    ),
    data=st.data(),
)
def test_sign_matching_matches_norm_and_sign_counts_and_opposes_the_mean(G, data):
    n, d = G.shape
    f = data.draw(st.integers(1, n - 1))
    out = attacks.sign_matching(G, f)
    np.testing.assert_array_equal(out[f:], G[f:])
    x = out[0].astype(np.float64)
    assert (out[:f] == out[0]).all()
    assert (x > 0).sum() == round((G > 0).sum(axis=1).mean())
    assert (x == 0).sum() == min(round((G == 0).sum(axis=1).mean()), d - (x > 0).sum())
    np.testing.assert_allclose(
        np.linalg.norm(x), np.median(np.linalg.norm(G.astype(np.float64), axis=1)), rtol=1e-5
    )
    mu = G.astype(np.float64).mean(axis=0)
    n_pos, n_neg = (x > 0).sum(), (x < 0).sum()
    can_oppose = (n_neg > 0 and (mu > 0).any()) or (n_pos > 0 and (mu < 0).any())
    if can_oppose and d >= 8:  # the sign budget allows opposing coordinates: x points against mu
        assert x @ mu < 0


def test_sign_matching_with_zeros_and_options():
    rng = np.random.default_rng(7)
    G = rng.normal(size=(10, 50)) + 0.3
    G[:, :10] = 0.0  # sparse gradients: 20 % exact zeros
    out = attacks.sign_matching(G, 3, norm_scale=2.0, benign_only=True)
    x = out[0]
    assert (x == 0).sum() == 10
    assert (x > 0).sum() == round((G[3:] > 0).sum(axis=1).mean())
    np.testing.assert_allclose(np.linalg.norm(x), 2.0 * np.median(np.linalg.norm(G[3:], axis=1)))
    out32 = attacks.sign_matching(G.astype(np.float32), 3)
    assert out32.dtype == np.float32
    with pytest.raises(ValueError, match="norm_scale"):
        attacks.sign_matching(G, 3, norm_scale=-1.0)


@pytest.mark.slow
@pytest.mark.skipif("signguard" not in robustagg.RULES, reason="SignGuard not registered")
def test_signguard_does_not_separate_sign_matching_rows_but_sim_does():
    """The finding documented in docs/robustness.md: plain SignGuard keeps the sign_matching
    rows (its features are matched by construction) and its aggregate turns against the honest
    mean; SignGuard-Sim's cosine feature rejects them."""
    n, f, d = 50, 10, 1000
    byz = np.zeros(n, dtype=bool)
    byz[:f] = True
    kept_plain, cos_plain, kept_sim = [], [], []
    for seed in range(2):
        G, _ = synthetic_gradients(n, d, seed=seed)
        X = attacks.sign_matching(G, f)
        target = G[f:].mean(axis=0)
        agg, info = robustagg.RULES["signguard"](X, rng=seed, return_info=True)
        kept_plain.append(info.kept_rate(byz)[1])
        cos_plain.append(agg @ target / (np.linalg.norm(agg) * np.linalg.norm(target)))
        if "signguard_sim" in robustagg.RULES:
            _, info_sim = robustagg.RULES["signguard_sim"](X, rng=seed, return_info=True)
            kept_sim.append(info_sim.kept_rate(byz)[1])
    assert np.mean(kept_plain) >= 0.9
    assert np.mean(cos_plain) < 0.0
    if kept_sim:
        assert np.mean(kept_sim) <= 0.1
