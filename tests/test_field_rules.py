"""The field's rules: naive oracles, the property battery, diagnostics, validation."""

import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

import robustagg
from robustagg.testing import naive_field as naive
from robustagg.testing import strategies as rst

SETTINGS = settings(max_examples=12)


@st.composite
def scenario(draw, min_n=3, max_n=8):
    """(G, f): an honest float64 matrix drawn by robustagg.testing's strategy, and f < n / 2."""
    G = draw(rst.gradient_matrices(n=st.integers(min_n, max_n), d=st.integers(1, 5), dtype=np.float64))
    f = draw(st.integers(0, (G.shape[0] - 1) // 2))
    return G, f


def _readonly(G):
    G = G.copy()
    G.setflags(write=False)
    return G


def _finite(G):
    G = np.asarray(G, dtype=np.float64)  # NumPy or a CPU torch tensor
    return G[np.isfinite(G).all(axis=1)]


def _tau(G):
    return 0.7 * np.abs(_finite(G)).max() + 1e-12


def _root(G):
    return np.median(_finite(G), axis=0) + 0.1


def _tol(G):
    return dict(rtol=1e-8, atol=1e-8 * max(1.0, np.abs(G).max()))


# name -> (call(G, f), naive(G, f) or None, output is a convex combination of the rows)
RULES = {
    "centered_clipping": (
        lambda G, f, **kw: robustagg.centered_clipping(G, tau=_tau(G), n_iters=3, **kw),
        lambda G, f: naive.naive_centered_clipping(G, _tau(G), 3),
        False,
    ),
    "mda": (lambda G, f, **kw: robustagg.mda(G, f, **kw), lambda G, f: naive.naive_mda(G, f)[0], True),
    "monna": (lambda G, f, **kw: robustagg.monna(G, f, **kw), lambda G, f: naive.naive_monna(G, f), True),
    "caf": (lambda G, f, **kw: robustagg.caf(G, f, **kw), lambda G, f: naive.naive_caf(G, f), True),
    "smea": (lambda G, f, **kw: robustagg.smea(G, f, **kw), lambda G, f: naive.naive_smea(G, f)[0], True),
    "meamed": (lambda G, f, **kw: robustagg.meamed(G, f, **kw), lambda G, f: naive.naive_meamed(G, f), True),
    "fltrust": (
        lambda G, f, **kw: robustagg.fltrust(G, _root(G), **kw),
        lambda G, f: naive.naive_fltrust(G, _root(G)),
        False,
    ),
    "clipped_clustering": (
        lambda G, f, **kw: robustagg.clipped_clustering(G, **kw),
        lambda G, f: naive.naive_clipped_clustering(G)[0],
        False,
    ),
}
NAMES = sorted(RULES)


@pytest.mark.slow
@pytest.mark.parametrize("name", NAMES)
@SETTINGS
@given(case=scenario())
def test_matches_naive_reference(name, case):
    G, f = case
    # clipped clustering on one coordinate: every cosine distance is 0 or 2 (ties; the
    # partition of a tied tree is arbitrary in both implementations)
    assume(name != "clipped_clustering" or G.shape[1] >= 2)
    fast, slow, _ = RULES[name]
    np.testing.assert_allclose(fast(_readonly(G), f), slow(G, f), **_tol(G))


@pytest.mark.parametrize("name", NAMES)
@SETTINGS
@given(case=scenario(), seed=st.integers(0, 2**16))
def test_permutation_invariance(name, case, seed):
    G, f = case
    assume(name != "clipped_clustering" or G.shape[1] >= 2)
    fast, _, _ = RULES[name]
    perm = np.random.default_rng(seed).permutation(len(G))
    if name == "fltrust":  # the root gradient does not move with the rows
        root = _root(G)
        np.testing.assert_allclose(robustagg.fltrust(G[perm], root), robustagg.fltrust(G, root), **_tol(G))
        return
    if name == "mda":  # ties in the diameter are frequent: the diameter is invariant, the subset
        a = robustagg.mda(G[perm], f, return_info=True)[1]  # the lexicographically first one
        b = robustagg.mda(G, f, return_info=True)[1]
        np.testing.assert_allclose(a.diameter, b.diameter, **_tol(G))
        np.testing.assert_allclose(robustagg.mda(G[perm], f), naive.naive_mda(G[perm], f)[0], **_tol(G))
        return
    np.testing.assert_allclose(fast(G[perm], f), fast(G, f), **_tol(G))


@pytest.mark.parametrize("name", [n for n in NAMES if RULES[n][2]])
@SETTINGS
@given(case=scenario())
def test_inside_honest_range(name, case):
    G, f = case
    out = RULES[name][0](G, f)
    span = np.abs(G).max() * 1e-12
    assert np.all(out >= G.min(axis=0) - span) and np.all(out <= G.max(axis=0) + span)


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_finite_output_with_f_nonfinite_rows(name, bad, rng):
    n, f = 9, 2
    G = rng.normal(size=(n, 5))
    G[[1, 7]] = bad
    out, info = RULES[name][0](G, f, return_info=True)
    assert np.all(np.isfinite(out))
    assert info.nonfinite.tolist() == [i in (1, 7) for i in range(n)]
    assert not info.kept[[1, 7]].any()
    clean = np.delete(G, [1, 7], axis=0)
    # the rule then runs on the 7 finite rows with f' = 0
    np.testing.assert_allclose(out, RULES[name][0](clean, 0), rtol=1e-10, atol=1e-12)
    with pytest.raises(ValueError, match="nonfinite='raise'"):
        RULES[name][0](G, f, nonfinite="raise")


@pytest.mark.slow
@pytest.mark.parametrize("name", NAMES)
def test_dtype_no_mutation_and_torch(name, rng):
    fast = RULES[name][0]
    for dtype in (np.float32, np.float64):
        G = rng.normal(size=(7, 6)).astype(dtype)
        before = G.copy()
        out = fast(_readonly(G), 2)
        assert out.dtype == dtype and out.shape == (6,)
        np.testing.assert_array_equal(G, before)
    G32 = rng.normal(size=(7, 6)).astype(np.float32)
    np.testing.assert_allclose(fast(G32, 2), fast(G32.astype(np.float64), 2), rtol=2e-4, atol=2e-5)
    torch = pytest.importorskip("torch")
    t = torch.tensor(G32)
    out = fast(t, 2)
    assert isinstance(out, torch.Tensor) and out.dtype == torch.float32


@pytest.mark.parametrize("name", NAMES)
def test_registered_and_diagnostics(name, rng):
    assert robustagg.RULES[name] is getattr(robustagg, name)
    G = rng.normal(size=(8, 3))
    out, info = RULES[name][0](G, 2, return_info=True)
    assert info.rule == name and info.kept.shape == (8,) and info.kept.dtype == bool and info.kept.any()


# ---------------------------------------------------------------------------------------
# rule-specific behaviour
# ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["mda", "monna", "caf", "smea", "meamed"])
def test_bound_n_greater_than_2f(name):
    G = np.ones((6, 2))
    with pytest.raises(ValueError, match=rf"{name}: needs n > 2f.*n=6, f=3.*at most 2"):
        getattr(robustagg, name)(G, 3)


@pytest.mark.parametrize("name", ["mda", "monna", "caf", "smea", "meamed"])
def test_f_zero_is_the_mean(name, rng):
    G = rng.normal(size=(6, 4))
    np.testing.assert_allclose(getattr(robustagg, name)(G, 0), G.mean(axis=0), rtol=1e-10, atol=1e-12)


def test_subset_rules_drop_a_far_outlier(rng):
    G = rng.normal(size=(9, 4))
    G[4] += 1e3
    for name in ("mda", "monna", "caf", "smea"):
        out, info = getattr(robustagg, name)(G, 1, return_info=True)
        assert not info.kept[4], name
        rest = np.delete(G, 4, axis=0)
        if name == "caf":  # soft weights: close to the honest mean, not equal to it
            assert np.linalg.norm(out - rest.mean(axis=0)) < 0.5 * np.linalg.norm(rest.std(axis=0))
        else:
            np.testing.assert_allclose(out, rest.mean(axis=0), rtol=1e-10, err_msg=name)


def test_size_limits_raise_clearly():
    G = np.random.default_rng(0).normal(size=(30, 2))
    with pytest.raises(
        ValueError,
        match=r"mda: the exact search examines up to min\(2\^f, C\(n, f\)\) = 4.1e\+03.*n=30, f=12",
    ):
        robustagg.mda(G, 12, max_subsets=1000)
    robustagg.mda(G, 10)  # 2^10 leaves: well inside the default limit
    with pytest.raises(ValueError, match=r"smea: exact subset search over C\(n, f\) = C\(30, 5\)"):
        robustagg.smea(G, 5)


def test_mda_smea_diagnostics(rng):
    G = rng.normal(size=(7, 3))
    out, info = robustagg.mda(G, 2, return_info=True)
    mean, subset = naive.naive_mda(G, 2)
    assert np.flatnonzero(info.kept).tolist() == list(subset)
    D = np.linalg.norm(G[:, None] - G[None], axis=2)
    np.testing.assert_allclose(info.diameter, D[np.ix_(subset, subset)].max(), rtol=1e-10)
    out, info = robustagg.smea(G, 2, return_info=True)
    mean, subset = naive.naive_smea(G, 2)
    assert np.flatnonzero(info.kept).tolist() == list(subset)
    X = G[list(subset)] - G[list(subset)].mean(axis=0)
    np.testing.assert_allclose(info.max_eigenvalue, np.linalg.eigvalsh(X.T @ X / 5)[-1], rtol=1e-9)


def test_caf_diagnostics(rng):
    G = rng.normal(size=(10, 3))
    out, info = robustagg.caf(G, 3, return_info=True)
    np.testing.assert_allclose(out, (info.weights[:, None] * G).sum(0) / info.weights.sum(), rtol=1e-10)
    assert info.max_eigenvalue == pytest.approx(info.eigenvalues.min())
    assert 1 <= info.n_steps <= 2 * 3 + 1


def test_monna_references(rng):
    G = rng.normal(size=(8, 3))
    np.testing.assert_allclose(
        robustagg.monna(G, 2, reference=5), naive.naive_monna(G, 2, reference=5), rtol=1e-12
    )
    v = rng.normal(size=3)
    np.testing.assert_allclose(
        robustagg.monna(G, 2, reference=v), naive.naive_monna(G, 2, reference=v), rtol=1e-12
    )
    with pytest.raises(
        ValueError,
        match=r"monna: argument 'reference' must have length d = 3 \(the gradients' length\), got 4",
    ):
        robustagg.monna(G, 2, reference=np.ones(4))
    G[5, 0] = np.nan
    with pytest.raises(ValueError, match="reference row 5 holds NaN"):
        robustagg.monna(G, 2, reference=5)


def test_centered_clipping_center_and_state(rng):
    G = rng.normal(size=(6, 4)) + 3.0
    c = rng.normal(size=4)
    np.testing.assert_allclose(
        robustagg.centered_clipping(G, center=c, tau=0.5, n_iters=2),
        naive.naive_centered_clipping(G, 0.5, 2, center=c),
        rtol=1e-12,
    )
    cc = robustagg.CenteredClipping(tau=0.5, n_iters=2)
    first = cc(G)
    second = cc(G)
    np.testing.assert_allclose(first, naive.naive_centered_clipping(G, 0.5, 2), rtol=1e-12)
    np.testing.assert_allclose(second, naive.naive_centered_clipping(G, 0.5, 2, center=first), rtol=1e-12)
    np.testing.assert_allclose(cc.center, second)
    cc.reset()
    np.testing.assert_allclose(cc(G), first, rtol=0)
    with pytest.raises(ValueError, match="centered_clipping: argument 'tau'"):
        robustagg.centered_clipping(G, tau=0.0)
    with pytest.raises(
        ValueError,
        match=r"centered_clipping: argument 'center' must have length d = 4 \(the gradients' length\), got 3",
    ):
        robustagg.centered_clipping(G, center=np.ones(3))
    # a huge tau makes one iteration from zero the mean
    np.testing.assert_allclose(robustagg.centered_clipping(G, tau=1e9, n_iters=1), G.mean(0), rtol=1e-12)


def test_centered_clipping_state_is_not_the_returned_array(rng):
    """Scaling the returned aggregate in place (``agg *= lr``) does not move the centre the
    next round starts from."""
    G = rng.normal(size=(6, 4)) + 3.0
    cc = robustagg.CenteredClipping(tau=0.5, n_iters=2)
    first = cc(G)
    kept = first.copy()
    first *= 0.1
    assert not np.shares_memory(first, cc.center)
    np.testing.assert_array_equal(cc.center, kept)
    np.testing.assert_allclose(cc(G), naive.naive_centered_clipping(G, 0.5, 2, center=kept), rtol=1e-12)


def test_fltrust_conventions(rng):
    G = rng.normal(size=(6, 4))
    root = rng.normal(size=4)
    out, info = robustagg.fltrust(G, root, return_info=True)
    np.testing.assert_allclose(
        info.trust_scores, np.maximum(G @ root / np.linalg.norm(G, axis=1) / np.linalg.norm(root), 0)
    )
    assert info.kept.tolist() == (info.trust_scores > 0).tolist()
    # nobody trusted: zero update
    np.testing.assert_array_equal(robustagg.fltrust(-np.abs(G) - 1, np.ones(4)), np.zeros(4))
    # the aggregate has the root gradient's norm when every row agrees with it
    same = np.tile(root, (3, 1)) * np.array([[1.0], [5.0], [0.2]])
    np.testing.assert_allclose(robustagg.fltrust(same, root), root, rtol=1e-12)
    with pytest.raises(TypeError, match="fltrust: argument 'root_gradient'.*required"):
        robustagg.fltrust(G)
    with pytest.raises(
        ValueError,
        match=r"fltrust: argument 'root_gradient' must have length d = 4 \(the gradients' length\), got 5",
    ):
        robustagg.fltrust(G, np.ones(5))


def test_meamed_ties_and_formula():
    # column: 0, 1, 2, 3, 10 -> median 2; the 3 closest are 1, 2, 3
    G = np.array([[0.0], [1.0], [2.0], [3.0], [10.0]])
    np.testing.assert_allclose(robustagg.meamed(G, 2), [2.0])
    # even n: 0, 2, 4, 6 -> median 3; 2 and 4 tie, then 0 and 6 tie: the smaller value wins
    G = np.array([[0.0], [2.0], [4.0], [6.0]])
    np.testing.assert_allclose(robustagg.meamed(G, 1), [2.0])


def test_clipped_clustering_matches_sklearn_partition(rng):
    honest = rng.normal(size=(7, 5)) + 2.0
    byz = -honest[:3] * 4.0
    G = np.vstack([byz, honest])
    out, info = robustagg.clipped_clustering(G, return_info=True)
    ref, keep = naive.naive_clipped_clustering(G)
    assert info.kept.tolist() == keep.tolist() == [False] * 3 + [True] * 7
    np.testing.assert_allclose(out, ref, rtol=1e-10)
    assert info.threshold == pytest.approx(np.median(np.linalg.norm(G, axis=1)))


@pytest.mark.slow
@pytest.mark.parametrize("rule", ["caf", "dnc"])
def test_lanczos_paths_are_reproducible_across_processes(rule):
    """From 257 rows CAF's (and from 256 DnC's) top eigenpair comes from ARPACK, whose own start
    vector is random: the library passes a fixed one, so two processes give the same bits."""
    import subprocess
    import sys

    code = (
        "import numpy as np, robustagg\n"
        "G = np.random.default_rng(5).normal(size=(300, 40)); G[:30] += 3\n"
        f"print(robustagg.{rule}(G, f=30, **({{'rng': 0}} if '{rule}' == 'dnc' else {{}})).tobytes().hex())\n"
    )
    outs = {
        subprocess.run(
            [sys.executable, "-c", code], capture_output=True, text=True, timeout=600, check=True
        ).stdout
        for _ in range(3)
    }
    assert len(outs) == 1
