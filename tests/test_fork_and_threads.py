"""Fork safety, thread safety and BLAS thread limits (docs/conventions.md, "Threads, fork and
BLAS").

Every scenario runs in a fresh interpreter (``subprocess``, its own session, killed with its
children on timeout), so that a child killed by GNU OpenMP, a hung pool or an abort fails the
test instead of stalling the suite, and so that the threading layer is chosen afresh. The
oracle is the same rule called sequentially in the parent: results must be bit-identical.
Sizes are small; the cases with 300 rows cross the kernels' 256-row switch (sorting networks
vs quickselect, register-tiled Gram vs BLAS, LAPACK vs Lanczos in dnc).
"""

from __future__ import annotations

import importlib.metadata
import os
import signal
import subprocess
import sys
import textwrap

import pytest

_TIMEOUT = 420  # generous: a cold Numba cache compiles the kernels in the subprocess


def _run(*parts: str, env: dict[str, str] | None = None, timeout: float = _TIMEOUT) -> str:
    """Run the code ``parts`` (each dedented) in a fresh interpreter, Numba's layer variables
    cleared unless ``env`` sets them; fail on a non-zero exit or a timeout (the whole process
    group is killed)."""
    code = "\n".join(textwrap.dedent(p) for p in parts)
    full = {k: v for k, v in os.environ.items() if not k.startswith("NUMBA_THREADING_LAYER")}
    full.update(env or {})
    proc = subprocess.Popen(
        [sys.executable, "-c", code],
        env=full,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, err = proc.communicate()
        pytest.fail(f"timed out after {timeout} s (hang)\nstdout:\n{out}\nstderr:\n{err[-4000:]}")
    assert proc.returncode == 0, f"exit code {proc.returncode}\nstdout:\n{out}\nstderr:\n{err[-4000:]}"
    return out


def _tbb_installed() -> bool:
    try:
        importlib.metadata.distribution("tbb")
    except importlib.metadata.PackageNotFoundError:
        return False
    return True


needs_tbb = pytest.mark.skipif(
    not _tbb_installed(), reason="the tbb package has no wheel for this platform (fork safety needs TBB)"
)
needs_fork = pytest.mark.skipif(not hasattr(os, "fork"), reason="no os.fork on this platform")

# Shared by the subprocesses: every registered rule on 20 rows (f = 2, so that the subset
# rules stay small), plus Krum and the median on 300 rows in float32 and float64.
_CASES = """
import os, sys, threading
import numpy as np
import robustagg
from robustagg._registry import call_with_supported


def make_cases():
    rng = np.random.default_rng(7)
    small = rng.normal(size=(20, 64)).astype(np.float32)
    cases = [(name, small, 2) for name in sorted(robustagg.RULES)]
    big32 = rng.normal(size=(300, 48)).astype(np.float32)
    big64 = rng.normal(size=(300, 48))
    cases += [(r, G, 30) for r in ("krum", "median") for G in (big32, big64)]
    return cases


def run(case):
    name, G, f = case
    out = call_with_supported(robustagg.RULES[name], G, f=f, rng=0, root_gradient=G[-1])
    return np.asarray(out)


def same(a, b):
    return a.dtype == b.dtype and a.shape == b.shape and np.array_equal(a, b, equal_nan=True)


CASES = make_cases()
"""


@pytest.mark.slow
@needs_tbb
@needs_fork
def test_forked_child_runs_every_rule():
    """After the parent used Numba's threads, an os.fork()'d child calls every registered rule
    (and Krum/median above 256 rows) and gets the parent's bits."""
    out = _run(
        _CASES,
        """
        expected = [run(c) for c in CASES]  # the parent launches Numba's threads
        pid = os.fork()
        if pid == 0:
            bad = [c[0] for c, e in zip(CASES, expected) if not same(run(c), e)]
            if bad:
                print("child differs:", bad, flush=True)
            os._exit(3 if bad else 0)
        _, status = os.waitpid(pid, 0)
        code = os.waitstatus_to_exitcode(status)
        assert code == 0, f"forked child ended with {code}"
        import numba
        print("layer", numba.threading_layer())
        """,
    )
    assert "layer tbb" in out


@pytest.mark.slow
@needs_tbb
@needs_fork
def test_fork_start_multiprocessing_pool_maps_rules():
    """A pool made with the fork start method, after a call in the parent, maps every rule."""
    _run(
        _CASES,
        """
        import multiprocessing


        def work(i):
            return run(CASES[i])


        if __name__ == "__main__":
            expected = [run(c) for c in CASES]
            with multiprocessing.get_context("fork").Pool(2) as pool:
                got = pool.map(work, range(len(CASES)), chunksize=1)
            bad = [c[0] for c, g, e in zip(CASES, got, expected) if not same(g, e)]
            assert not bad, bad
        """,
    )


@pytest.mark.slow
@needs_tbb
@needs_fork
def test_torch_dataloader_workers_call_rules():
    """A PyTorch DataLoader with two (forked) workers whose Dataset calls the rules."""
    pytest.importorskip("torch")
    _run(
        _CASES,
        """
        import torch
        from torch.utils.data import DataLoader, Dataset


        class Rules(Dataset):
            def __len__(self):
                return len(CASES)

            def __getitem__(self, i):
                return i, run(CASES[i])


        expected = [run(c) for c in CASES]  # the parent calls first
        loader = DataLoader(
            Rules(), batch_size=None, num_workers=2, multiprocessing_context="fork", timeout=300
        )
        seen = 0
        for i, got in loader:
            got = got.numpy() if isinstance(got, torch.Tensor) else np.asarray(got)
            assert same(got, expected[int(i)]), CASES[int(i)][0]
            seen += 1
        assert seen == len(CASES)
        """,
    )


# Rules that use BLAS under a limit (Krum, Bulyan), BLAS's own threads (dnc from 256 rows),
# Numba's threads and the worker pool, in float32 and float64, called by four threads at once.
_CONCURRENT = (
    _CASES
    + """
import threadpoolctl, numba

rng = np.random.default_rng(11)
wide = rng.normal(size=(60, 5000))
many = rng.normal(size=(300, 64))
CASES += [("krum", wide, 5), ("bulyan", wide, 5), ("signguard", wide, 5), ("dnc", wide, 5)]
CASES += [("dnc", many, 30), ("dnc", many.astype(np.float32), 30), ("trimmed_mean", many, 30)]
blas = threadpoolctl.ThreadpoolController().select(user_api="blas")


def blas_setting():
    return [(i["filepath"], i["num_threads"]) for i in blas.info()]


expected = [run(c) for c in CASES]
blas_before, numba_before = blas_setting(), numba.get_num_threads()
errors = []
start = threading.Barrier(4)


def worker(k):
    try:
        start.wait()
        for rep in range(3):
            order = list(range(len(CASES)))
            order = order[k * 5 :] + order[: k * 5]  # a different rule overlaps in each thread
            for i in order:
                if not same(run(CASES[i]), expected[i]):
                    errors.append((k, CASES[i][0], CASES[i][1].shape, str(CASES[i][1].dtype)))
    except BaseException as e:  # noqa: BLE001
        errors.append((k, repr(e)))


threads = [threading.Thread(target=worker, args=(k,)) for k in range(4)]
for t in threads:
    t.start()
for t in threads:
    t.join()
after = [run(c) for c in CASES]
"""
)


@pytest.mark.slow
def test_four_threads_give_the_sequential_bits():
    """Four threads calling the rules at once get exactly the results of sequential calls,
    and sequential calls afterwards still do."""
    _run(
        _CONCURRENT,
        """
        assert not errors, errors[:10]
        bad = [c[0] for c, a, e in zip(CASES, after, expected) if not same(a, e)]
        assert not bad, bad
        """,
    )


@pytest.mark.slow
def test_concurrent_calls_leave_blas_and_numba_threads_unchanged():
    """After the concurrent calls BLAS runs on the caller's thread count again and Numba's
    thread count is unchanged (the library saves and restores, never leaks a limit)."""
    _run(
        _CONCURRENT,
        """
        assert not errors, errors[:10]
        assert blas_setting() == blas_before, (blas_before, blas_setting())
        assert numba.get_num_threads() == numba_before
        """,
    )


def test_blas_sections_run_on_their_declared_count():
    """Sections of different thread counts opened by many threads in a random interleaving:
    inside each, BLAS runs on exactly the declared count (None: the caller's), nested sections
    run under the outer one, and the caller's setting is back afterwards."""
    _run(
        """
        import random, threading, time
        import threadpoolctl
        import robustagg
        from robustagg._threads import blas_single_thread, blas_threads

        blas = threadpoolctl.ThreadpoolController().select(user_api="blas")
        assert blas.lib_controllers, "no BLAS library found"


        def counts():
            return sorted({i["num_threads"] for i in blas.info()})


        caller = counts()
        assert len(caller) == 1, caller
        wanted = [1, caller[0] + 1, None]
        errors = []


        def worker(seed):
            r = random.Random(seed)
            for _ in range(40):
                want = r.choice(wanted)
                section = blas_single_thread() if want == 1 and r.random() < 0.5 else blas_threads(want)
                with section:
                    seen = counts()
                    if seen != ([want] if want is not None else caller):
                        errors.append(("outer", want, seen))
                    time.sleep(r.random() * 0.002)
                    if r.random() < 0.3:
                        with blas_threads(r.choice(wanted)):  # nested: the outer count holds
                            if counts() != seen:
                                errors.append(("nested", want, counts()))


        threads = [threading.Thread(target=worker, args=(s,)) for s in range(6)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert not errors, errors[:10]
        assert counts() == caller
        """
    )


@needs_fork
def test_fork_while_another_thread_holds_a_blas_section():
    """A child forked while another thread is inside a single-thread BLAS section has the
    caller's BLAS setting back and can open sections of any count (no lock left held)."""
    _run(
        """
        import os, threading
        import threadpoolctl
        import robustagg
        from robustagg._threads import blas_single_thread, blas_threads, executor

        blas = threadpoolctl.ThreadpoolController().select(user_api="blas")


        def counts():
            return sorted({i["num_threads"] for i in blas.info()})


        caller = counts()
        inside, leave = threading.Event(), threading.Event()


        def hold():
            with blas_single_thread():
                inside.set()
                leave.wait()


        t = threading.Thread(target=hold)
        t.start()
        inside.wait()
        assert executor(2).submit(sum, [1, 2]).result() == 3  # the pool has run in the parent
        pid = os.fork()
        if pid == 0:
            ok = counts() == caller
            with blas_threads(None):
                ok = ok and counts() == caller
            with blas_threads(1):
                ok = ok and counts() == [1]
            ok = ok and counts() == caller
            ok = ok and executor(2).submit(sum, [3, 4]).result() == 7
            os._exit(0 if ok else 3)
        _, status = os.waitpid(pid, 0)
        leave.set()
        t.join()
        assert os.waitstatus_to_exitcode(status) == 0, status
        assert counts() == caller
        """,
        timeout=120,
    )


_LAYER = """
import numpy as np
import robustagg, numba
robustagg.krum(np.random.default_rng(0).normal(size=(12, 40)).astype(np.float32), f=2)
print("layer", numba.threading_layer())
"""


@pytest.mark.slow
@pytest.mark.parametrize(
    ("env", "before", "layer"),
    [
        ({"NUMBA_THREADING_LAYER": "workqueue"}, "", "workqueue"),
        ({"NUMBA_THREADING_LAYER_PRIORITY": "workqueue tbb omp"}, "", "workqueue"),
        ({}, "import numba\nnumba.config.THREADING_LAYER = 'workqueue'\n", "workqueue"),
        pytest.param(
            {"NUMBA_THREADING_LAYER": "omp"},
            "",
            "omp",
            marks=pytest.mark.skipif(not sys.platform.startswith("linux"), reason="GNU OpenMP"),
        ),
    ],
    ids=["env", "priority", "config", "env-omp"],
)
def test_a_users_explicit_threading_layer_is_respected(env, before, layer):
    """NUMBA_THREADING_LAYER, NUMBA_THREADING_LAYER_PRIORITY and numba.config set before the
    import are the user's choice: robustagg does not replace it."""
    out = _run(before, _LAYER, env=env)
    assert f"layer {layer}" in out


@pytest.mark.slow
@needs_tbb
def test_without_a_choice_the_layer_is_tbb():
    """With the tbb package installed and no choice made, Numba's threads run on TBB (loaded
    by its path when the dynamic loader does not search where pip put it)."""
    out = _run(_LAYER)
    assert "layer tbb" in out


@pytest.mark.slow
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="GNU OpenMP is Linux's omp layer")
@pytest.mark.parametrize("chosen", [False, True], ids=["numba-default", "user-choice"])
def test_warning_when_gnu_openmp_already_runs(chosen):
    """Numba's threads launched with GNU OpenMP before robustagg's import: a
    ThreadingLayerWarning naming the problem and the fix when that was Numba's default pick,
    none when the user chose omp."""
    out = _run(
        f"""
        import warnings
        import numba
        numba.config.THREADING_LAYER = "omp"
        numba.get_num_threads()  # launches Numba's threads
        assert numba.threading_layer() == "omp"
        if not {chosen}:
            numba.config.THREADING_LAYER = "default"  # as if omp had been Numba's own pick
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            import robustagg
        from robustagg._threads import ThreadingLayerWarning
        mine = [w for w in caught if issubclass(w.category, ThreadingLayerWarning)]
        print("warnings", len(mine))
        for w in mine:
            print(str(w.message))
        """
    )
    if chosen:
        assert "warnings 0" in out
    else:
        assert "warnings 1" in out
        assert "GNU OpenMP" in out and "fork" in out and "NUMBA_THREADING_LAYER=tbb" in out
