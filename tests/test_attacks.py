"""Tests of the paper's attacks (robustagg.attacks.classic): formulas, exactness, seeds,
no mutation, array libraries and validation."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.stats import norm

import robustagg
from robustagg import attacks
from robustagg._registry import call_with_supported
from robustagg.testing import naive_attacks as naive
from robustagg.testing import strategies as rst

PAPER_ATTACKS = [
    "gaussian",
    "noise",
    "sign_flip",
    "reverse_scaled",
    "lie",
    "byzmean",
    "min_max",
    "min_sum",
    "ipm",
    "inf",
    "nan",
]


def honest(n=20, d=30, seed=0, dtype=np.float64, mean_scale=0.3):
    rng = np.random.default_rng(seed)
    G = mean_scale * rng.normal(size=d) + rng.normal(size=(n, d))
    return G.astype(dtype)


def run_attack(name, G, f, rng=None):
    """Call a registered attack generically (attacks that target a rule get the mean)."""
    extra = {"grid": (0.5, 1.0, 2.0), "refine": 2, "extend": 0} if name == "line_search" else {}
    return call_with_supported(robustagg.ATTACKS[name], G, f, rng=rng, rule="mean", **extra)


def readonly(G):
    G = G.copy()
    G.flags.writeable = False
    return G


# ---------------------------------------------------------------------------------------------
# registry and generic contract
# ---------------------------------------------------------------------------------------------
def test_every_paper_attack_is_registered():
    for name in PAPER_ATTACKS:
        assert robustagg.ATTACKS[name] is getattr(attacks, name)


@pytest.mark.parametrize("name", sorted(robustagg.ATTACKS))
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_contract_new_matrix_benign_rows_kept_no_mutation(name, dtype):
    G = readonly(honest(n=15, d=12, dtype=dtype))
    before = G.copy()
    f = 4
    out = run_attack(name, G, f, rng=3)
    assert isinstance(out, np.ndarray)
    assert out.shape == G.shape
    assert out.dtype == dtype
    assert not np.shares_memory(out, G)
    np.testing.assert_array_equal(G, before)
    np.testing.assert_array_equal(out[f:], G[f:])


@pytest.mark.parametrize("name", sorted(robustagg.ATTACKS))
def test_f_zero_changes_nothing(name):
    G = honest(n=12, d=7)
    out = run_attack(name, G, 0, rng=0)
    np.testing.assert_array_equal(out, G)


@pytest.mark.parametrize("name", sorted(robustagg.ATTACKS))
def test_seeded_attacks_are_reproducible(name):
    G = honest(n=12, d=9)
    a = run_attack(name, G, 3, rng=7)
    b = run_attack(name, G, 3, rng=7)
    np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("name", sorted(robustagg.ATTACKS))
def test_mask_placement_equals_first_rows_after_permutation(name):
    """A boolean mask puts the Byzantine rows anywhere; the result is the int-f result permuted."""
    G = honest(n=14, d=10, seed=2)
    mask = np.zeros(14, dtype=bool)
    mask[[1, 5, 6, 13]] = True
    order = np.concatenate([np.flatnonzero(mask), np.flatnonzero(~mask)])
    via_mask = run_attack(name, G, mask, rng=11)
    via_int = run_attack(name, G[order], 4, rng=11)
    np.testing.assert_allclose(via_mask[order], via_int, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("name", sorted(robustagg.ATTACKS))
def test_torch_in_torch_out(name):
    torch = pytest.importorskip("torch")
    G = honest(n=12, d=8, dtype=np.float32)
    t = torch.from_numpy(G.copy())
    out = run_attack(name, t, 3, rng=5)
    assert isinstance(out, torch.Tensor)
    assert out.dtype == torch.float32
    np.testing.assert_array_equal(t.numpy(), G)
    np.testing.assert_array_equal(out.numpy(), run_attack(name, G, 3, rng=5))


# ---------------------------------------------------------------------------------------------
# formulas
# ---------------------------------------------------------------------------------------------
def test_lie_z_paper_values():
    np.testing.assert_allclose(attacks.lie_z(50, 10), 0.253347, atol=5e-7)
    np.testing.assert_allclose(attacks.lie_z(20, 8), 0.674490, atol=5e-7)


@given(n=st.integers(3, 200), data=st.data())
def test_lie_z_is_the_normal_quantile_of_eq2(n, data):
    s = n // 2 + 1
    f = data.draw(st.integers(0, s - 1))
    p = (n - s) / (n - f)
    if p <= 0:
        with pytest.raises(ValueError, match="lie"):
            attacks.lie_z(n, f)
        return
    np.testing.assert_allclose(attacks.lie_z(n, f), norm.ppf(p), rtol=1e-12, atol=1e-12)


def test_lie_z_refuses_infinite_factor():
    with pytest.raises(ValueError, match=r"floor\(n/2 \+ 1\)"):
        attacks.lie_z(20, 11)
    with pytest.raises(ValueError, match="Pass z explicitly"):
        attacks.lie(honest(n=20), 12)


@pytest.mark.parametrize("benign_only", [False, True])
@pytest.mark.parametrize("z", [None, 0.3, 1.5])
def test_lie_formula(z, benign_only):
    G = honest(n=20, d=15)
    f = 6
    out = attacks.lie(G, f, z=z, benign_only=benign_only)
    ref = G[f:] if benign_only else G
    zz = attacks.lie_z(20, f) if z is None else z
    expected = ref.mean(axis=0) - zz * ref.std(axis=0, ddof=1)
    np.testing.assert_allclose(out[:f], np.broadcast_to(expected, (f, 15)), rtol=1e-12, atol=1e-14)


@settings(max_examples=30)
@given(
    n=st.integers(2, 25),
    d=st.integers(1, 12),
    seed=st.integers(0, 2**32 - 1),
    data=st.data(),
)
def test_byzmean_mean_equals_g1(n, d, seed, data):
    rng = np.random.default_rng(seed)
    G = rng.normal(size=(n, d)) * rng.uniform(0.1, 10)
    mask = np.array(data.draw(st.lists(st.booleans(), min_size=n, max_size=n)))
    if not mask.any():
        mask[0] = True
    g1 = rng.normal(size=d)
    out = attacks.byzmean(G, mask, g1=g1)
    np.testing.assert_allclose(out.mean(axis=0), g1, rtol=1e-9, atol=1e-9 * (1 + np.abs(G).max()))
    byz = np.flatnonzero(mask)
    m1 = byz.size // 2
    np.testing.assert_array_equal(out[byz[:m1]], np.broadcast_to(g1, (m1, d)))
    np.testing.assert_array_equal(out[~mask], G[~mask])


def test_byzmean_default_target_is_the_lie_vector():
    G = honest(n=30, d=10)
    out = attacks.byzmean(G, 8, z=0.3)
    lie_vector = attacks.lie(G, 8, z=0.3)[0]
    np.testing.assert_allclose(out.mean(axis=0), lie_vector, rtol=1e-10, atol=1e-12)
    np.testing.assert_array_equal(out[:4], np.broadcast_to(lie_vector, (4, 10)))


def test_byzmean_g1_torch_and_wrong_length():
    torch = pytest.importorskip("torch")
    G = honest(n=10, d=6)
    out = attacks.byzmean(G, 3, g1=torch.ones(6, dtype=torch.float64))
    np.testing.assert_allclose(out.mean(axis=0), np.ones(6), rtol=1e-12)
    with pytest.raises(ValueError, match="byzmean.*g1.*d=6"):
        attacks.byzmean(G, 3, g1=np.ones(5))


def test_sign_flip_and_reverse_scaled_exact():
    G = honest(n=10, d=8, dtype=np.float32)
    out = attacks.sign_flip(G, 3)
    np.testing.assert_array_equal(out[:3], -G[:3])
    out = attacks.reverse_scaled(G, 3, r=7.5)
    np.testing.assert_array_equal(out[:3], np.float32(-7.5) * G[:3])
    np.testing.assert_array_equal(out[3:], G[3:])


@pytest.mark.parametrize("eps", [0.1, 100.0])
def test_ipm_exact(eps):
    G = honest(n=12, d=9)
    out = attacks.ipm(G, 5, eps=eps)
    np.testing.assert_allclose(out[:5], np.broadcast_to(-eps * G[5:].mean(axis=0), (5, 9)), rtol=1e-13)


def test_inf_and_nan_rows():
    G = honest(n=6, d=4)
    assert np.isposinf(attacks.inf(G, 2)[:2]).all()
    assert np.isnan(attacks.nan(G, 2)[:2]).all()


def test_gaussian_and_noise_statistics_and_seeds():
    G = honest(n=10, d=20000)
    out = attacks.gaussian(G, 3, rng=1)
    np.testing.assert_allclose(out[:3].std(), 0.5, rtol=0.02)
    np.testing.assert_allclose(out[:3].mean(), 0.0, atol=0.01)
    out2 = attacks.noise(G, 3, sigma=2.0, rng=np.random.default_rng(1))
    np.testing.assert_allclose((out2[:3] - G[:3]).std(), 2.0, rtol=0.02)
    assert not np.array_equal(attacks.gaussian(G, 3, rng=1), attacks.gaussian(G, 3, rng=2))


def _minmax_constraint(kind, G, x):
    sq = ((G[:, None, :] - G[None, :, :]) ** 2).sum(-1)  # naive O(n^2 d): fine at test sizes
    d_x = ((G - x) ** 2).sum(-1)
    if kind == "min_max":
        return d_x.max(), sq.max()
    return d_x.sum(), sq.sum(axis=1).max()


@pytest.mark.parametrize("kind", ["min_max", "min_sum"])
@pytest.mark.parametrize("direction", ["std", "unit_vec", "sign"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("benign_only", [False, True])
def test_min_max_min_sum_gamma_is_the_largest_feasible(kind, direction, dtype, benign_only):
    G = honest(n=16, d=25, seed=4, dtype=dtype)
    f = 5
    out, info = getattr(attacks, kind)(G, f, direction=direction, benign_only=benign_only, return_info=True)
    gamma = info["gamma"]
    assert gamma > 0
    R = G[f:].astype(np.float64) if benign_only else G.astype(np.float64)
    mu = R.mean(axis=0)
    p = {"std": -R.std(axis=0, ddof=1), "unit_vec": -mu / np.linalg.norm(mu), "sign": -np.sign(mu)}[direction]
    x = mu + gamma * p
    np.testing.assert_allclose(
        out[:f], np.broadcast_to(x, (f, 25)).astype(dtype), rtol=1e-6 if dtype == np.float32 else 1e-12
    )
    value, bound = _minmax_constraint(kind, R, x)
    assert value <= bound * (1 + 1e-9)
    value_over, _ = _minmax_constraint(kind, R, mu + 1.001 * gamma * p)
    assert value_over > bound


def test_min_max_degenerate_inputs():
    G = np.ones((6, 4))
    out, info = attacks.min_max(G, 2, return_info=True)
    assert info["gamma"] == 0.0
    np.testing.assert_array_equal(out, G)
    with pytest.raises(ValueError, match="direction"):
        attacks.min_sum(G, 2, direction="up")


# ---------------------------------------------------------------------------------------------
# Proposition 1 of the paper, as a statistical property
# ---------------------------------------------------------------------------------------------
@settings(max_examples=15)
@given(
    n=st.integers(10, 40),
    d=st.integers(20, 200),
    seed=st.integers(0, 2**32 - 1),
    z=st.floats(0.05, 0.5),
    ratio=st.floats(1.0, 5.0),
)
def test_proposition_1_lie_is_closer_than_some_honest_gradient(n, d, seed, z, ratio):
    """IID gradients g_i = ∇F + noise with spread ≥ mean: for small z, E||g_m - g~||² is
    smaller than E||g_i - g~||² for some honest i (Eq. 6) and cos(g_m, g~) > cos(g_i, g~) for
    some honest i (Eq. 7); expectations estimated over repeated draws."""
    rng = np.random.default_rng(seed)
    f = n // 5
    true_grad = rng.normal(size=d)
    trials = 20
    dist_m = np.zeros(trials)
    dist_h = np.zeros((trials, n - f))
    cos_wins = 0
    for t in range(trials):
        G = true_grad + ratio * rng.normal(size=(n, d))
        out = attacks.lie(G, f, z=z)
        g_tilde = G.mean(axis=0)
        dist_m[t] = np.sum((out[0] - g_tilde) ** 2)
        dist_h[t] = np.sum((G[f:] - g_tilde) ** 2, axis=1)

        def cos(a, b):
            return a @ b / (np.linalg.norm(a) * np.linalg.norm(b))

        cos_wins += cos(out[0], g_tilde) > min(cos(g, g_tilde) for g in G[f:])
    assert dist_m.mean() < dist_h.mean(axis=0).max()
    assert cos_wins >= 0.9 * trials


# ---------------------------------------------------------------------------------------------
# validation
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "f, exc, match",
    [
        (True, TypeError, "lie.*'f'"),
        (2.0, TypeError, "lie.*'f'"),
        (-1, ValueError, "lie.*'f'.*>= 0"),
        (11, ValueError, "lie.*'f'.*<= 10"),
        (np.ones(9, dtype=bool), ValueError, r"lie.*shape \(10,\)"),
        (np.ones(10, dtype=int), TypeError, "lie.*boolean mask"),
        (None, TypeError, "lie.*'f'"),
    ],
)
def test_f_validation(f, exc, match):
    with pytest.raises(exc, match=match):
        attacks.lie(honest(n=10), f, z=0.3)


def test_grads_and_option_validation():
    G = honest(n=10, d=5)
    with pytest.raises(ValueError, match="gaussian.*grads.*shape"):
        attacks.gaussian(G[0], 1)
    with pytest.raises(TypeError, match="sign_flip.*dtype complex"):
        attacks.sign_flip(G.astype(complex), 1)
    with pytest.raises(ValueError, match="gaussian.*sigma"):
        attacks.gaussian(G, 1, sigma=-1.0)
    with pytest.raises(TypeError, match="noise.*rng"):
        attacks.noise(G, 1, rng="seed")
    with pytest.raises(ValueError, match="ipm.*benign"):
        attacks.ipm(G, 10)
    with pytest.raises(ValueError, match="lie.*at least 2 rows"):
        attacks.lie(G[:2], 1, z=0.3, benign_only=True)
    with pytest.raises(TypeError, match="lie.*benign_only"):
        attacks.lie(G, 1, z=0.3, benign_only="yes")


def test_sequence_of_rows_and_integer_input():
    rows = [np.arange(4.0), np.ones(4), -np.arange(4.0)]
    out = attacks.sign_flip(rows, 1)
    np.testing.assert_array_equal(out[0], -np.arange(4.0))
    out = attacks.sign_flip(np.arange(12).reshape(3, 4), np.array([False, True, False]))
    assert out.dtype == np.float64
    np.testing.assert_array_equal(out[1], -np.arange(4.0, 8.0))


# ---------------------------------------------------------------------------------------------
# against the naive reference implementations (robustagg.testing.naive_attacks)
# ---------------------------------------------------------------------------------------------
@settings(max_examples=25)
@given(
    G=rst.gradient_matrices(n=st.integers(4, 12), d=st.integers(1, 8), dtype="float64"),
    data=st.data(),
)
def test_attacks_match_naive_references(G, data):
    n = G.shape[0]
    mask = np.zeros(n, dtype=bool)
    mask[data.draw(st.lists(st.integers(0, n - 1), min_size=1, max_size=(n - 1) // 2, unique=True))] = True
    benign_only = data.draw(st.booleans())
    tol = {"rtol": 1e-9, "atol": 1e-9 * np.abs(G).max()}
    np.testing.assert_allclose(attacks.sign_flip(G, mask), naive.naive_sign_flip(G, mask), **tol)
    np.testing.assert_allclose(
        attacks.reverse_scaled(G, mask, r=2.5), naive.naive_reverse_scaled(G, mask, 2.5), **tol
    )
    np.testing.assert_allclose(attacks.ipm(G, mask, eps=0.5), naive.naive_ipm(G, mask, 0.5), **tol)
    np.testing.assert_allclose(
        attacks.lie(G, mask, z=0.7, benign_only=benign_only),
        naive.naive_lie(G, mask, 0.7, benign_only),
        **tol,
    )
    f = int(mask.sum())
    if n // 2 + 1 > f and n >= 3:
        np.testing.assert_allclose(attacks.lie(G, mask), naive.naive_lie(G, mask), **tol)
    g1 = G[~mask].mean(axis=0) * -2.0
    np.testing.assert_allclose(attacks.byzmean(G, mask, g1=g1), naive.naive_byzmean(G, mask, g1), **tol)
    for direction in ("std", "sign"):
        for kind, ref in (("min_max", naive.naive_min_max), ("min_sum", naive.naive_min_sum)):
            if benign_only and (~mask).sum() < 2:
                continue
            fast, info = getattr(attacks, kind)(
                G, mask, direction=direction, benign_only=benign_only, return_info=True
            )
            slow, gamma = ref(G, mask, direction, benign_only)
            if gamma == 0.0 or info["gamma"] == 0.0:
                continue  # degenerate (zero spread): both return the mean
            np.testing.assert_allclose(info["gamma"], gamma, rtol=1e-6)
            np.testing.assert_allclose(fast, slow, rtol=1e-6, atol=1e-9 * np.abs(G).max())
