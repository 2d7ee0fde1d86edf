"""The array layer, the validation layer and the diagnostics mechanism."""

import numpy as np
import pytest

import robustagg
from robustagg._validation import check_f, check_int, check_real, check_rng, prepare


def test_numpy_in_numpy_out_dtype_kept(rng):
    for dtype in (np.float32, np.float64):
        G = rng.normal(size=(5, 7)).astype(dtype)
        out = robustagg.mean(G)
        assert isinstance(out, np.ndarray) and out.dtype == dtype and out.shape == (7,)
        np.testing.assert_allclose(out, G.astype(np.float64).mean(axis=0), rtol=1e-6)


def test_integer_input_computes_in_float64():
    out = robustagg.mean(np.array([[1, 2], [2, 4]], dtype=np.int32))
    assert out.dtype == np.float64
    np.testing.assert_array_equal(out, [1.5, 3.0])


@pytest.mark.parametrize(
    "bad", [np.ones((3, 2), dtype=bool), np.ones((3, 2), dtype=complex), np.array([["a"]], dtype=object)]
)
def test_bad_dtypes_are_type_errors(bad):
    with pytest.raises(TypeError, match="mean: argument 'grads'"):
        robustagg.mean(bad)


def test_read_only_and_non_contiguous_input(rng):
    G = rng.normal(size=(6, 10))
    ro = G.copy()
    ro.setflags(write=False)
    np.testing.assert_allclose(robustagg.mean(ro), G.mean(axis=0))
    nc = np.asfortranarray(G)[:, ::2]
    assert not nc.flags.c_contiguous
    np.testing.assert_allclose(robustagg.mean(nc), G[:, ::2].mean(axis=0))


def test_sequence_of_rows(rng):
    rows = [rng.normal(size=4) for _ in range(3)]
    np.testing.assert_allclose(robustagg.mean(rows), np.mean(rows, axis=0))
    with pytest.raises(ValueError, match="ragged"):
        robustagg.mean([np.ones(3), np.ones(4)])
    with pytest.raises(ValueError, match="1-D"):
        robustagg.mean([np.ones((2, 2)), np.ones((2, 2))])


def test_torch_in_torch_out(rng):
    torch = pytest.importorskip("torch")
    t = torch.tensor(rng.normal(size=(4, 6)), dtype=torch.float32, requires_grad=True)
    out = robustagg.mean(t)
    assert isinstance(out, torch.Tensor) and out.dtype == torch.float32 and out.device == t.device
    np.testing.assert_allclose(out.numpy(), t.detach().numpy().mean(axis=0), rtol=1e-6)
    out_list = robustagg.mean([t[0].detach(), t[1].detach()])
    assert isinstance(out_list, torch.Tensor)


def test_shape_errors():
    with pytest.raises(ValueError, match=r"mean: argument 'grads' must be a \(n, d\) matrix.*shape \(3,\)"):
        robustagg.mean(np.ones(3))
    with pytest.raises(ValueError, match="n = 0"):
        robustagg.mean(np.ones((0, 3)))
    with pytest.raises(ValueError, match="d = 0"):
        robustagg.mean(np.ones((3, 0)))
    with pytest.raises(TypeError, match="got None"):
        robustagg.mean(None)


def test_nonfinite_rows_are_excluded_and_reported(rng):
    G = rng.normal(size=(5, 4))
    G[1, 2] = np.nan
    G[3, 0] = -np.inf
    before = G.copy()
    out, info = robustagg.mean(G, return_info=True)
    np.testing.assert_allclose(out, G[[0, 2, 4]].mean(axis=0))
    assert info.nonfinite.tolist() == [False, True, False, True, False]
    assert info.kept.tolist() == [True, False, True, False, True]
    np.testing.assert_array_equal(G, before)  # never mutated
    with pytest.raises(ValueError, match=r"rows \[1, 3\].*nonfinite='raise'"):
        robustagg.mean(G, nonfinite="raise")
    with pytest.raises(ValueError, match="every row"):
        robustagg.mean(np.full((2, 3), np.nan))
    with pytest.raises(ValueError, match="'nonfinite' must be one of"):
        robustagg.mean(G, nonfinite="ignore")


def test_return_info_must_be_bool(rng):
    with pytest.raises(TypeError, match="return_info"):
        robustagg.mean(rng.normal(size=(2, 2)), return_info="yes")


def test_check_f_and_bounds():
    assert check_f(np.int64(2), 10, rule="krum") == 2
    for bad in (True, 1.0, "1"):
        with pytest.raises(TypeError, match="krum: argument 'f' must be an integer"):
            check_f(bad, 10, rule="krum")
    with pytest.raises(ValueError, match="'f' must be >= 0"):
        check_f(-1, 10, rule="krum")
    with pytest.raises(ValueError, match=r"krum: needs n >= 2f \+ 3.*n=6, f=2.*at most 1"):
        check_f(2, 6, rule="krum", min_n=lambda f: 2 * f + 3, bound="n >= 2f + 3")
    f_eff = prepare("krum", np.vstack([np.full((1, 3), np.nan), np.ones((6, 3))]), f=2).f_eff
    assert f_eff == 1  # a non-finite row counts against f


def test_scalar_checks():
    assert check_int(3, rule="r", name="m", low=1) == 3
    with pytest.raises(ValueError, match="r: argument 'm' must be <= 2, got 3"):
        check_int(3, rule="r", name="m", high=2)
    with pytest.raises(ValueError, match=r"must be in \(0.0, 1.0\]"):
        check_real(0.0, rule="r", name="q", low=0.0, high=1.0, low_open=True)
    with pytest.raises(ValueError, match="finite"):
        check_real(float("nan"), rule="r", name="q")
    with pytest.raises(TypeError, match="rng"):
        check_rng("seed", rule="r")
    a = check_rng(7, rule="r").random(3)
    b = check_rng(7, rule="r").random(3)
    np.testing.assert_array_equal(a, b)


def test_diagnostics_access(rng):
    _, info = robustagg.mean(rng.normal(size=(3, 2)), return_info=True)
    assert info.rule == "mean" and info["kept"].all() and "kept" in info
    with pytest.raises(AttributeError, match="available"):
        _ = info.scores
    h, m = info.kept_rate(np.array([True, False, False]))
    assert h == 1.0 and m == 1.0


def test_registry():
    assert robustagg.get_rule("mean") is robustagg.mean
    with pytest.raises(ValueError, match="unknown rule 'nope'"):
        robustagg.get_rule("nope")


def test_get_rule_composes_preaggregators_by_name(rng):
    G = rng.normal(size=(11, 6))
    rule = robustagg.get_rule("nnm+krum")
    expected = robustagg.pipeline("nnm", "krum")(G, f=2)
    np.testing.assert_array_equal(rule(G, f=2), expected)
    with pytest.raises(ValueError, match="nope"):
        robustagg.get_rule("nnm+nope")(G, f=2)
