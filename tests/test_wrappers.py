"""The stateful wrappers ``SignGuard`` and ``CenteredClipping``: options validated at
construction, a change of d between rounds, one instance shared by threads, pickling."""

from __future__ import annotations

import copy
import pickle
import sys
import threading

import numpy as np
import pytest

import robustagg

N_THREADS, N_CALLS = 8, 10


def _grads(seed: int, n: int = 12, d: int = 40, dtype=np.float64) -> np.ndarray:
    rng = np.random.default_rng(seed)
    G = rng.normal(0.3, 1.0, size=(n, d))
    G[:2] *= -4.0  # two Byzantine-looking rows
    return G.astype(dtype)


# ------------------------------------------------------------------------------------------------
# validation at construction

# options the functions check the same way: the class gives the function's message, naming itself
SAME_AS_FUNCTION = [
    ("lower", -1),
    ("lower", float("nan")),
    ("upper", 0.05),  # below the default lower = 0.1
    ("upper", "3"),
    ("coordinate_fraction", 0.0),
    ("coordinate_fraction", 1.5),
    ("coordinates", "all"),
    ("coordinates", np.array([0.5, 1.5])),
    ("coordinates", []),
    ("feature_scaling", "min"),
    ("clustering", "dbscan"),
    ("aggregator", "max"),
    ("norm_filter", 1),
    ("sign_clustering", "yes"),
    ("clipping", None),
    ("nonfinite", "skip"),
]


@pytest.mark.parametrize(("name", "value"), SAME_AS_FUNCTION, ids=[f"{k}={v!r}" for k, v in SAME_AS_FUNCTION])
def test_signguard_options_are_checked_at_construction_with_the_functions_message(name, value):
    with pytest.raises((TypeError, ValueError)) as from_function:
        robustagg.signguard_sim(_grads(0), **{name: value})
    with pytest.raises(type(from_function.value)) as from_class:
        robustagg.SignGuard("sim", **{name: value})  # no call made
    expected = str(from_function.value).replace("signguard_sim:", "SignGuard:", 1)
    assert str(from_class.value) == expected
    assert str(from_class.value).startswith(f"SignGuard: argument {name!r}")


def test_signguard_construction_errors_the_functions_do_not_share():
    with pytest.raises(TypeError, match=r"^SignGuard: unknown option\(s\) \['bogus'\]; allowed: \["):
        robustagg.SignGuard(bogus=1)
    with pytest.raises(ValueError, match=r"^SignGuard: argument 'coordinates' holds negative indices \(-1\)"):
        robustagg.SignGuard(coordinates=[-1, 2])
    with pytest.raises(TypeError, match=r"^SignGuard: argument 'aggregator_options' must be a dict"):
        robustagg.SignGuard(aggregator_options=[("f", 1)])
    with pytest.raises(
        ValueError, match=r"^SignGuard: argument 'variant' must be one of 'plain', 'sim', 'dist'"
    ):
        robustagg.SignGuard("cosine")
    with pytest.raises(TypeError, match=r"^SignGuard: 'reference' is managed by the wrapper"):
        robustagg.SignGuard("sim", reference=np.ones(3))
    with pytest.raises(ValueError, match=r"^SignGuard: argument 'rng' as a seed must be >= 0"):
        robustagg.SignGuard(rng=-1)


def test_signguard_valid_options_give_the_functions_result():
    G = _grads(1)
    options = dict(lower=0.2, upper=2.5, coordinates=np.arange(0, 40, 3), aggregator="trimmed_mean",
                   aggregator_options={"f": 1}, clustering="kmeans", feature_scaling="max")  # fmt: skip
    out = robustagg.SignGuard("dist", rng=4, **options)(G)
    np.testing.assert_array_equal(out, robustagg.signguard_dist(G, rng=np.random.default_rng(4), **options))


CC_BAD = [
    (dict(tau=-1), ValueError, "centered_clipping: argument 'tau' must be in (0.0, inf), got -1.0"),
    (dict(tau=0.0), ValueError, "centered_clipping: argument 'tau' must be in (0.0, inf), got 0.0"),
    (dict(tau="1"), TypeError, "centered_clipping: argument 'tau' must be a real number, got '1' (str)"),
    (dict(n_iters=0), ValueError, "centered_clipping: argument 'n_iters' must be >= 1, got 0"),
    (
        dict(n_iters=2.0),
        TypeError,
        "centered_clipping: argument 'n_iters' must be an integer, got 2.0 (float)",
    ),
    (dict(nonfinite="skip"), ValueError, None),
]


@pytest.mark.parametrize(("kwargs", "exc", "message"), CC_BAD, ids=[repr(k) for k, _, _ in CC_BAD])
def test_centered_clipping_options_are_checked_at_construction(kwargs, exc, message):
    with pytest.raises(exc) as from_function:
        robustagg.centered_clipping(_grads(0), **kwargs)
    if message is not None:  # the function's own message, as documented
        assert str(from_function.value) == message
    with pytest.raises(exc) as from_class:
        robustagg.CenteredClipping(**kwargs)  # no call made
    expected = str(from_function.value).replace("centered_clipping:", "CenteredClipping:", 1)
    assert str(from_class.value) == expected


def test_centered_clipping_center_checked_at_construction_in_any_library():
    torch = pytest.importorskip("torch")
    with pytest.raises(ValueError, match=r"^CenteredClipping: argument 'center' holds NaN or Inf"):
        robustagg.CenteredClipping(center=[0.0, np.nan])
    with pytest.raises(ValueError, match=r"^CenteredClipping: argument 'center' must be a 1-D array"):
        robustagg.CenteredClipping(center=np.ones((2, 2)))
    c = torch.linspace(-1, 1, 40, dtype=torch.bfloat16)
    G = _grads(2)
    cc = robustagg.CenteredClipping(tau=0.5, n_iters=2, center=c)
    expected = robustagg.centered_clipping(G, tau=0.5, n_iters=2, center=c.to(torch.float32).numpy())
    np.testing.assert_array_equal(cc(G), expected)


# ------------------------------------------------------------------------------------------------
# a change of d between calls


@pytest.mark.parametrize("variant", ["sim", "dist"])
def test_signguard_change_of_d_is_a_clear_error_and_reset_starts_over(variant):
    agg = robustagg.SignGuard(variant, rng=5)
    first = agg(_grads(3, d=40))
    kept = agg.previous.copy()
    with pytest.raises(ValueError) as err:
        agg(_grads(4, d=30))
    msg = str(err.value)
    assert msg.startswith("SignGuard: the gradients have length d = 30, but the previous round's had d = 40")
    assert "reset()" in msg and "reference" not in msg
    np.testing.assert_array_equal(agg.previous, kept)  # the failed call changed nothing
    agg.reset()
    G30 = _grads(4, d=30)
    np.testing.assert_array_equal(agg(G30), robustagg.SignGuard(variant, rng=5)(G30))  # as a new instance
    assert first.shape == (40,)


def test_signguard_plain_keeps_no_state_that_depends_on_d():
    agg = robustagg.SignGuard(rng=1)
    agg(_grads(3, d=40))
    gen = np.random.default_rng(1)
    robustagg.signguard(_grads(3, d=40), rng=gen)
    np.testing.assert_array_equal(agg(_grads(4, d=30)), robustagg.signguard(_grads(4, d=30), rng=gen))


def test_centered_clipping_change_of_d_is_a_clear_error_and_reset_starts_over():
    cc = robustagg.CenteredClipping(tau=0.5, n_iters=2)
    cc(_grads(3, d=40))
    kept = cc.center.copy()
    with pytest.raises(ValueError) as err:
        cc(_grads(4, d=30))
    msg = str(err.value)
    assert msg.startswith(
        "CenteredClipping: the gradients have length d = 30, but the centre has length d = 40"
    )
    assert "previous round's aggregate" in msg and "reset()" in msg and "argument 'center'" not in msg
    np.testing.assert_array_equal(cc.center, kept)
    cc.reset()
    G30 = _grads(4, d=30)
    np.testing.assert_array_equal(cc(G30), robustagg.centered_clipping(G30, tau=0.5, n_iters=2))
    given = robustagg.CenteredClipping(center=np.zeros(40))
    with pytest.raises(
        ValueError, match=r"d = 30, but the centre has length d = 40 \(given at construction\)"
    ):
        given(G30)


# ------------------------------------------------------------------------------------------------
# one instance shared by threads


def _run_threads(call):
    """``N_THREADS`` threads, each making ``N_CALLS`` calls, started together; their outputs.

    The interpreter's thread switch interval is shortened meanwhile (and restored), so that the
    threads interleave inside the calls on any machine, not only where a call outlasts the
    default 5 ms interval."""
    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-5)
    try:
        return _run_threads_now(call)
    finally:
        sys.setswitchinterval(interval)


def _run_threads_now(call):
    barrier = threading.Barrier(N_THREADS)
    outputs: list[list[np.ndarray]] = [[] for _ in range(N_THREADS)]
    errors: list[BaseException] = []

    def work(k: int) -> None:
        try:
            barrier.wait()
            for _ in range(N_CALLS):
                outputs[k].append(np.asarray(call()))
        except BaseException as exc:  # reported by the main thread
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(k,)) for k in range(N_THREADS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    return [o for per_thread in outputs for o in per_thread]


def _same_multiset(a: list[np.ndarray], b: list[np.ndarray]) -> bool:
    return sorted(x.tobytes() for x in a) == sorted(x.tobytes() for x in b)


@pytest.mark.parametrize("variant", ["sim", "dist", "plain"])
def test_signguard_shared_by_threads_equals_the_same_calls_in_one_thread(variant):
    """Every call gets the same G, so the order the calls take does not matter: the state after
    8 x 10 concurrent calls is the state after 80 calls in a row, and the 80 outputs are the 80
    outputs of the serial run (each round's reference and rng draws are the previous round's)."""
    G = _grads(6, n=16, d=3000, dtype=np.float32)
    shared = robustagg.SignGuard(variant, rng=9)
    outputs = _run_threads(lambda: shared(G))
    serial = robustagg.SignGuard(variant, rng=9)
    expected = [serial(G) for _ in range(N_THREADS * N_CALLS)]
    assert len({o.tobytes() for o in expected}) > 1 or variant == "plain"  # rounds differ: a lost one shows
    assert _same_multiset(outputs, expected)
    np.testing.assert_array_equal(shared.previous, serial.previous)
    assert shared.rng.bit_generator.state == serial.rng.bit_generator.state


def test_centered_clipping_shared_by_threads_equals_the_same_calls_in_one_thread():
    """Rows far from the centre and a small τ: every call moves the centre by at most τ, so a
    lost update shows in the final centre."""
    G = _grads(7, n=16, d=3000) + 50.0
    shared = robustagg.CenteredClipping(tau=0.25, n_iters=1)
    outputs = _run_threads(lambda: shared(G))
    serial = robustagg.CenteredClipping(tau=0.25, n_iters=1)
    expected = [serial(G) for _ in range(N_THREADS * N_CALLS)]
    assert len({o.tobytes() for o in expected}) == N_THREADS * N_CALLS  # every round moves the centre
    assert _same_multiset(outputs, expected)
    np.testing.assert_array_equal(shared.center, serial.center)


# ------------------------------------------------------------------------------------------------
# pickling


@pytest.mark.parametrize("variant", ["sim", "dist", "plain"])
def test_signguard_pickles_with_its_state(variant):
    G1, G2 = _grads(8), _grads(9)
    agg = robustagg.SignGuard(variant, rng=2, upper=2.5)
    agg(G1)
    for clone in (pickle.loads(pickle.dumps(agg)), copy.deepcopy(agg)):
        assert clone.variant == variant and clone.options == {"upper": 2.5}
        np.testing.assert_array_equal(clone.previous, agg.previous)
        assert clone.rng.bit_generator.state == agg.rng.bit_generator.state
        assert clone._lock is not agg._lock and not clone._lock.locked()
        np.testing.assert_array_equal(copy.deepcopy(clone)(G2), copy.deepcopy(agg)(G2))
    out = agg(G2)
    clone = pickle.loads(pickle.dumps(robustagg.SignGuard(variant, rng=2, upper=2.5)))
    clone(G1)
    np.testing.assert_array_equal(clone(G2), out)


def test_centered_clipping_pickles_with_its_state():
    G = _grads(10)
    cc = robustagg.CenteredClipping(tau=0.5, n_iters=2, nonfinite="raise")
    cc(G)
    for clone in (pickle.loads(pickle.dumps(cc)), copy.deepcopy(cc)):
        assert (clone.tau, clone.n_iters, clone.nonfinite) == (0.5, 2, "raise")
        np.testing.assert_array_equal(clone.center, cc.center)
        assert clone._lock is not cc._lock
        np.testing.assert_array_equal(clone(G), copy.deepcopy(cc)(G))


# ------------------------------------------------------------------------------------------------
# other libraries and dtypes through the wrappers


def test_wrappers_give_the_callers_library_and_dtype_back():
    torch = pytest.importorskip("torch")
    G = _grads(11, dtype=np.float32)
    t = torch.from_numpy(G).to(torch.bfloat16)
    G32 = t.to(torch.float32).numpy()
    agg, ref = robustagg.SignGuard("sim", rng=3), robustagg.SignGuard("sim", rng=3)
    for _ in range(2):
        out = agg(t)
        expected = torch.from_numpy(np.asarray(ref(G32))).to(torch.bfloat16)
        assert isinstance(out, torch.Tensor) and out.dtype == torch.bfloat16
        assert torch.equal(out, expected)
        np.testing.assert_array_equal(agg.previous, ref.previous)
    cc = robustagg.CenteredClipping(tau=0.5)
    out = cc(t)
    assert out.dtype == torch.bfloat16
    assert torch.equal(out, torch.from_numpy(robustagg.centered_clipping(G32, tau=0.5)).to(torch.bfloat16))
