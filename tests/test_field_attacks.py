"""The field's attacks: Fang et al.'s full-knowledge attack and mimic."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import robustagg
from robustagg.attacks import fang, mimic, mimic_target
from robustagg.testing import naive_field as naive
from robustagg.testing import strategies as rst

SETTINGS = settings(max_examples=25)


@st.composite
def scenario(draw):
    """(G, f): an honest float64 matrix drawn by robustagg.testing's strategy (n in [3, 10]),
    and 1 <= f <= n - 2."""
    G = draw(rst.gradient_matrices(n=st.integers(3, 10), d=st.integers(1, 6), dtype=np.float64))
    f = draw(st.integers(1, G.shape[0] - 2))
    return G, f


def _readonly(G):
    G = G.copy()
    G.setflags(write=False)
    return G


# ---------------------------------------------------------------------------------------
# Fang
# ---------------------------------------------------------------------------------------
@SETTINGS
@given(scenario(), st.sampled_from([1.5, 2.0, 4.0]), st.booleans(), st.integers(0, 2**16))
def test_fang_values_lie_in_the_paper_intervals(case, b, benign_only, seed):
    G, f = case
    before = G.copy()
    out = fang(_readonly(G), f, b=b, benign_only=benign_only, rng=seed)
    byz = np.arange(len(G)) < f
    lo, hi = naive.naive_fang_bounds(G, byz, b=b, benign_only=benign_only)
    assert np.all(out[byz] >= lo - 1e-12) and np.all(out[byz] <= hi + 1e-12)
    np.testing.assert_array_equal(out[~byz], G[~byz])  # benign rows unchanged
    np.testing.assert_array_equal(G, before)
    np.testing.assert_array_equal(
        out, fang(G, f, b=b, benign_only=benign_only, rng=np.random.default_rng(seed))
    )


@SETTINGS
@given(scenario(), st.integers(0, 2**16))
def test_fang_pushes_median_and_trimmed_mean_against_the_mean_direction(case, seed):
    G, f = case
    out = fang(G, f, rng=seed)
    up = G.mean(axis=0) < 0  # the attack pushes these coordinates up, the others down
    shift = np.median(out, axis=0) - np.median(G, axis=0)
    assert np.all(shift[up] >= 0) and np.all(shift[~up] <= 0)
    k = min(f, (len(G) - 1) // 2)
    trimmed = lambda X: np.sort(X, axis=0)[k : len(X) - k].mean(axis=0)  # noqa: E731
    tshift = trimmed(out) - trimmed(G)
    assert np.all(tshift[up] >= -1e-12) and np.all(tshift[~up] <= 1e-12)


def test_fang_known_values():
    # one coordinate, mean > 0: Byzantine values in [b * g_min, g_min] = [-2, -1]
    G = np.array([[5.0], [-1.0], [2.0], [3.0]])
    out = fang(G, 2, rng=0)
    assert np.all((out[:2] >= -2.0) & (out[:2] <= -1.0))
    # mean < 0 and g_max < 0: values in [g_max, g_max / b] = [-1, -0.5]
    G = -np.array([[5.0], [1.0], [2.0], [3.0]])
    out = fang(G, 1, rng=0)
    assert -1.0 <= out[0, 0] <= -0.5


def test_fang_dtype_torch_mask_and_errors(rng):
    G = rng.normal(size=(6, 4)).astype(np.float32)
    out = fang(G, np.array([False, True, False, True, False, False]), rng=1)
    assert out.dtype == np.float32
    np.testing.assert_array_equal(out[[0, 2, 4, 5]], G[[0, 2, 4, 5]])
    torch = pytest.importorskip("torch")
    t = fang(torch.tensor(G), 2, rng=1)
    assert isinstance(t, torch.Tensor) and t.dtype == torch.float32
    with pytest.raises(ValueError, match="fang: argument 'b'"):
        fang(G, 2, b=1.0)
    with pytest.raises(ValueError, match="fang: no benign row"):
        fang(G, 6, benign_only=True)
    assert robustagg.ATTACKS["fang"] is fang


# ---------------------------------------------------------------------------------------
# mimic
# ---------------------------------------------------------------------------------------
@SETTINGS
@given(scenario())
def test_mimic_heuristic_matches_svd_reference(case):
    G, f = case
    byz = np.arange(len(G)) < f
    t = mimic_target(G, f)
    assert t == naive.naive_mimic_target(G, byz)
    out = mimic(_readonly(G), f)
    np.testing.assert_array_equal(out[byz], np.tile(G[t], (f, 1)))
    np.testing.assert_array_equal(out[~byz], G[~byz])


def test_mimic_target_option_and_errors(rng):
    G = rng.normal(size=(6, 3))
    out = mimic(G, 2, target=4)
    np.testing.assert_array_equal(out[:2], np.tile(G[4], (2, 1)))
    with pytest.raises(ValueError, match="mimic: argument 'target'=1 is a Byzantine row"):
        mimic(G, 2, target=1)
    with pytest.raises(ValueError, match="mimic: argument 'target' must be <= 5"):
        mimic(G, 2, target=6)
    with pytest.raises(ValueError, match="no benign row to copy"):
        mimic(G, 6)
    np.testing.assert_array_equal(mimic(G, 0), G)
    assert robustagg.ATTACKS["mimic"] is mimic


def test_mimic_copies_the_extreme_client_along_the_top_direction():
    rng = np.random.default_rng(3)
    G = rng.normal(scale=0.1, size=(8, 5))
    G[:, 0] += np.linspace(-1.0, 1.0, 8)  # variance concentrated on coordinate 0
    G[7, 0] += 5.0  # the most extreme benign client along it
    assert mimic_target(G, 2) == 7


def test_mimic_dtype_and_torch(rng):
    G = rng.normal(size=(5, 3)).astype(np.float32)
    assert mimic(G, 1).dtype == np.float32
    torch = pytest.importorskip("torch")
    t = mimic(torch.tensor(G), 1)
    assert isinstance(t, torch.Tensor) and t.dtype == torch.float32
