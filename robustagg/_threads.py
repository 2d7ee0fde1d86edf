"""Thread control for the whole library: Numba's threading layer, the shared worker pool and
BLAS thread limits (docs/conventions.md, "Threads, fork and BLAS").

Threading layer
    :func:`setup_threading_layer` runs once, when this module is imported -- from the top of
    ``robustagg.kernels``, before any kernel module, so before robustagg's first parallel
    kernel runs. It prefers Intel TBB, the one Numba layer that is both fork-safe and
    thread-safe (GNU OpenMP, Numba's usual pick on Linux, kills a forked child at its first
    parallel call; ``workqueue`` aborts the process when two threads run parallel kernels at
    once). ``pip install tbb`` puts ``libtbb`` in ``<sys.prefix>/lib``, which the dynamic
    loader does not search in a virtual environment, so Numba would silently fall back to
    OpenMP: the library is loaded here by its path (``RTLD_GLOBAL``), after which Numba's own
    default order (tbb, omp, workqueue) picks it. No Numba setting is written.

    A user's explicit choice -- ``NUMBA_THREADING_LAYER`` or ``NUMBA_THREADING_LAYER_PRIORITY``
    in the environment, or ``numba.config.THREADING_LAYER``/``THREADING_LAYER_PRIORITY`` set
    before the import -- is respected (libtbb is still made loadable unless the choice is
    ``omp`` or ``workqueue``, so that ``tbb``, ``safe`` and ``threadsafe`` work in a virtual
    environment too). Without a loadable TBB 2021.6+ (no wheels for ARM Linux or Apple
    silicon: ``conda install tbb`` there) Numba's default stays, with its limits (see the
    conventions page): choosing ``workqueue`` there would make forks safe but abort the process
    when two threads (Dask's threaded scheduler, the caller's own) run parallel kernels at
    once. If Numba's threads were already launched with GNU OpenMP before robustagg was
    imported, by Numba's default rather than the user's choice, a
    :class:`ThreadingLayerWarning` says that forked children will be killed and how to fix it.

Worker pool
    :func:`executor` is the pool of Python threads some kernels use (blocks of work that
    release the GIL). It only grows, is never shut down under a caller that still submits to
    it, and is re-created in a forked child (which inherits the object but not its threads).

BLAS threads
    :func:`blas_threads` is the one way the library changes BLAS's thread count, which is a
    process-wide setting: a lock and a count of open sections, so the first section to enter
    saves the caller's setting and the last to leave restores it; a section that wants a
    different count than the open ones waits until they have left. Every library BLAS call
    therefore runs with the count its section declares, concurrent or not (the same bits), and
    the caller's setting is back once the calls return.
"""

from __future__ import annotations

import ctypes
import importlib.metadata
import os
import sys
import threading
import warnings
from collections import Counter
from concurrent.futures import ThreadPoolExecutor

__all__ = [
    "ThreadingLayerWarning",
    "blas_single_thread",
    "blas_threads",
    "executor",
    "load_tbb",
    "numba_threads_usable",
    "setup_threading_layer",
]

_TBB_MIN_INTERFACE = 12060  # TBB 2021.6: the oldest Numba's tbb layer accepts
_NUMBA_DEFAULT_PRIORITY = ["tbb", "omp", "workqueue"]


class ThreadingLayerWarning(RuntimeWarning):
    """Numba's threads run on a layer with which robustagg is not fork-safe."""


# --------------------------------------------------------------------------- threading layer

_setup_lock = threading.Lock()
_setup_done = False
_tbb_lib: ctypes.CDLL | None = None  # kept so that the handle stays referenced
_forked_from_gnu_openmp = False  # this process is a fork of one that ran GNU OpenMP threads


def _tbb_library_name() -> str | None:
    """The file name under which Numba loads TBB on this platform (None: no TBB layer)."""
    if sys.platform.startswith("linux"):
        return "libtbb.so.12"
    if sys.platform == "darwin":
        return "libtbb.12.dylib"
    if sys.platform == "win32":
        return "tbb12.dll"
    return None


def _tbb_candidates(name: str) -> list[str]:
    """Existing paths of ``name`` where the ``tbb`` package installed it (its file list), then
    the usual ``<sys.prefix>/lib`` (``Library/bin`` on Windows)."""
    paths = []
    try:
        dist = importlib.metadata.distribution("tbb")
        paths += [str(dist.locate_file(f)) for f in dist.files or () if f.name == name]
    except importlib.metadata.PackageNotFoundError:
        pass
    paths.append(os.path.join(sys.prefix, "lib", name))
    paths.append(os.path.join(sys.prefix, "Library", "bin", name))
    out = []
    for p in paths:
        p = os.path.realpath(p) if os.path.islink(p) else os.path.abspath(p)
        if os.path.isfile(p) and p not in out:
            out.append(p)
    return out


def _tbb_recent(lib: ctypes.CDLL) -> bool:
    """Whether the loaded TBB is one Numba accepts (interface version 12060 or later)."""
    try:
        fn = lib.TBB_runtime_interface_version
    except AttributeError:
        return False
    fn.argtypes = []
    fn.restype = ctypes.c_int
    return fn() >= _TBB_MIN_INTERFACE


def load_tbb() -> bool:
    """Make TBB loadable for Numba: True when ``libtbb`` is found by the dynamic loader or at
    one of :func:`_tbb_candidates` (then loaded with ``RTLD_GLOBAL``, so that Numba's own
    ``CDLL("libtbb.so.12")`` and its ``tbbpool`` module resolve to it) and is recent enough."""
    global _tbb_lib
    if _tbb_lib is not None:
        return True
    name = _tbb_library_name()
    if name is None:
        return False
    global_mode = getattr(ctypes, "RTLD_GLOBAL", 0)
    for target in [name, *_tbb_candidates(name)]:
        try:  # by name: where Numba itself would find it; by path: made global for Numba
            lib = ctypes.CDLL(target) if target == name else ctypes.CDLL(target, mode=global_mode)
        except OSError:
            continue
        if _tbb_recent(lib):
            _tbb_lib = lib
            return True
        return False  # an old TBB is the one the loader gives Numba: another would clash
    return False


def _user_choice(config) -> str | None:
    """The threading layer the user asked for, or None when Numba's default is in force."""
    env = os.environ.get("NUMBA_THREADING_LAYER", "").strip()
    if env:
        return env.lower()
    layer = str(getattr(config, "THREADING_LAYER", "default")).lower()
    if layer != "default":
        return layer
    priority = os.environ.get("NUMBA_THREADING_LAYER_PRIORITY", "").strip()
    if priority or list(getattr(config, "THREADING_LAYER_PRIORITY", _NUMBA_DEFAULT_PRIORITY)) != (
        _NUMBA_DEFAULT_PRIORITY
    ):
        return "default"  # the user's order among tbb, omp and workqueue
    return None


def _gnu_openmp(layer: str | None) -> bool:
    """Whether ``layer`` is GNU OpenMP, which is not fork-safe (Numba's omp layer on Linux)."""
    return layer == "omp" and sys.platform.startswith("linux")


def _numba_layer_running() -> str | None:
    """The layer Numba's threads were launched with, or None if they were not launched yet
    (this does not launch them)."""
    import numba

    try:
        return numba.threading_layer()
    except ValueError:  # "Threading layer is not initialized."
        return None


def setup_threading_layer() -> None:
    """Prepare Numba's threading layer before robustagg's first parallel kernel (idempotent).

    When no layer was chosen by the user and Numba's threads are not running yet, TBB is made
    loadable (:func:`load_tbb`) so that Numba's default order selects it. A user's explicit
    choice is kept. If Numba's threads already run GNU OpenMP by Numba's default, a
    :class:`ThreadingLayerWarning` names the problem and the fix.
    """
    global _setup_done
    with _setup_lock:
        if _setup_done:
            return
        _setup_done = True
        from numba.core import config

        choice = _user_choice(config)
        running = _numba_layer_running()
        if running is not None:
            if choice is None and _gnu_openmp(running):
                warnings.warn(
                    "robustagg: Numba's threads were launched with the 'omp' threading layer "
                    "(GNU OpenMP) before robustagg was imported; a process forked from this one "
                    "(multiprocessing's fork start method, a PyTorch DataLoader worker) is killed "
                    "when it calls a rule. Fix: import robustagg before the first Numba parallel "
                    "call, or set NUMBA_THREADING_LAYER=tbb (pip install tbb), or start child "
                    "processes with 'spawn' or 'forkserver'.",
                    ThreadingLayerWarning,
                    stacklevel=2,
                )
            return
        if choice in ("omp", "workqueue"):
            return
        load_tbb()


def numba_threads_usable() -> bool:
    """False in a process forked from one whose Numba threads ran GNU OpenMP: there every
    parallel kernel terminates the process, so work that has another path (the worker pool)
    takes it."""
    return not _forked_from_gnu_openmp


# ------------------------------------------------------------------------------ worker pool

_pool_lock = threading.Lock()
_pool: ThreadPoolExecutor | None = None
_pool_size = 0
_pool_pid = os.getpid()


def executor(threads: int) -> ThreadPoolExecutor:
    """The shared pool of worker threads, with at least ``threads`` workers.

    The pool only grows: a larger one replaces it and the old one is dropped, not shut down,
    so a caller still submitting to it is not refused (its idle workers exit once it is
    collected). Callers bound their own concurrency (they submit at most ``threads`` tasks at a
    time); tasks never wait on other tasks, so sharing the pool between calls cannot deadlock.
    A forked child gets a new pool (it inherits the object, not the threads).
    """
    global _pool, _pool_size, _pool_pid
    threads = max(1, int(threads))
    with _pool_lock:
        pid = os.getpid()
        if _pool is None or _pool_pid != pid or _pool_size < threads:
            _pool = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="robustagg-worker")
            _pool_size = threads
            _pool_pid = pid
        return _pool


# ------------------------------------------------------------------------------ BLAS threads

_UNSET = object()
_blas_cond = threading.Condition(threading.Lock())
_blas_open = 0  # sections open, over all threads
_blas_count: object = _UNSET  # the thread count of the open sections (None: the caller's own)
_blas_limiter = None  # threadpoolctl's record of the caller's setting, restored by the last leaver
_blas_depth: dict[int, int] = {}  # thread id -> sections that thread has open
_blas_waiting: Counter = Counter()  # wanted count -> threads waiting to enter with it
_controller = None


def _blas_controller():
    """threadpoolctl's controller of the BLAS libraries loaded when the first section opens
    (NumPy's and SciPy's are loaded with robustagg); None without threadpoolctl."""
    global _controller
    if _controller is None:
        try:
            import threadpoolctl
        except ImportError:  # pragma: no cover - threadpoolctl comes with scikit-learn
            return None
        _controller = threadpoolctl.ThreadpoolController().select(user_api="blas")
    return _controller


def _release_control() -> None:
    """threadpoolctl (3.6+) lets only one "controlling" thread change OpenBLAS's pthreads pool
    and keeps that thread until its ``with`` block ends; the library sets and restores from
    whichever thread enters first or leaves last, so it gives the control back after each
    change, as threadpoolctl's own context manager does, unless this thread holds a
    threadpoolctl block of its own."""
    try:
        import threadpoolctl
    except ImportError:  # pragma: no cover
        return
    owner = getattr(threadpoolctl, "OpenBLASController", None)
    ownership = getattr(threadpoolctl, "CONTROLLING_THREAD_OWNERSHIP", None)
    if owner is None or not hasattr(owner, "clear_controlling_thread"):
        return
    if ownership is not None and getattr(ownership, "count", 0) > 0:
        return
    owner.clear_controlling_thread()


def _apply_limit(count: int | None):
    """Set BLAS to ``count`` threads; the returned object restores the previous setting."""
    if count is None:
        return None
    try:
        controller = _blas_controller()
        if controller is None:  # pragma: no cover
            return None
        limiter = controller.limit(limits=count, user_api="blas")
    except Exception:  # pragma: no cover - an exotic BLAS threadpoolctl cannot drive: no limit
        return None
    _release_control()
    return limiter


def _restore(limiter) -> None:
    if limiter is not None:
        limiter.restore_original_limits()
        _release_control()


class _BlasSection:
    """Context manager of :func:`blas_threads`."""

    __slots__ = ("count",)

    def __init__(self, count: int | None):
        self.count = count

    def __enter__(self):
        global _blas_open, _blas_count, _blas_limiter
        me = threading.get_ident()
        with _blas_cond:
            if _blas_depth.get(me, 0) > 0:  # nested in this thread: runs under the outer section
                _blas_depth[me] += 1
                _blas_open += 1
                return self
            want = self.count
            _blas_waiting[want] += 1
            try:
                while _blas_open > 0 and (
                    _blas_count != want or any(n > 0 for c, n in _blas_waiting.items() if c != want)
                ):
                    _blas_cond.wait()
            finally:
                _blas_waiting[want] -= 1
                if _blas_waiting[want] == 0:
                    del _blas_waiting[want]
            if _blas_open == 0:
                _blas_limiter = _apply_limit(want)
                _blas_count = want
            _blas_open += 1
            _blas_depth[me] = 1
        return self

    def __exit__(self, *exc):
        global _blas_open, _blas_count, _blas_limiter
        me = threading.get_ident()
        with _blas_cond:
            depth = _blas_depth.get(me, 0) - 1
            if depth > 0:
                _blas_depth[me] = depth
            else:
                _blas_depth.pop(me, None)
            _blas_open -= 1
            if _blas_open == 0:
                limiter, _blas_limiter, _blas_count = _blas_limiter, None, _UNSET
                try:
                    _restore(limiter)
                finally:
                    _blas_cond.notify_all()
            elif depth <= 0:
                _blas_cond.notify_all()
        return False


def blas_threads(count: int | None) -> _BlasSection:
    """A section of code whose BLAS calls run on ``count`` threads (``None``: on the caller's
    own setting, unchanged).

    Sections of one count run concurrently; one that wants another count waits until the open
    ones have left (and, once it waits, sections of the open count no longer join, so it is
    not starved). The first section to enter saves the caller's setting and the last to leave
    restores it. A section opened inside another by the same thread runs under the outer one's
    count (the outermost section decides, whatever runs concurrently). Without threadpoolctl
    no limit is applied. BLAS calls made for the caller by worker threads run under the
    caller's section.
    """
    if count is not None:
        count = int(count)
        if count < 1:
            raise ValueError(f"blas_threads: count must be a positive int or None, got {count}")
    return _BlasSection(count)


def blas_single_thread() -> _BlasSection:
    """A section whose BLAS calls run on one thread (:func:`blas_threads` ``(1)``)."""
    return _BlasSection(1)


# -------------------------------------------------------------------------------------- fork


def _after_fork_in_child() -> None:
    """In a forked child: fresh locks (one held by another thread at the fork would stay held
    for ever), no pool (its threads did not survive), and, if a BLAS section of another thread
    was open at the fork, the caller's BLAS setting back (no thread is left to restore it)."""
    global _pool_lock, _pool, _pool_size, _pool_pid, _blas_cond, _blas_open, _blas_count
    global _blas_limiter, _blas_depth, _blas_waiting, _forked_from_gnu_openmp, _setup_lock
    _setup_lock = threading.Lock()
    _pool_lock = threading.Lock()
    _pool, _pool_size, _pool_pid = None, 0, os.getpid()
    if _gnu_openmp(_numba_layer_running()):
        _forked_from_gnu_openmp = True
    _blas_cond = threading.Condition(threading.Lock())
    _blas_waiting = Counter()
    me = threading.get_ident()
    mine = _blas_depth.get(me, 0)
    _blas_depth = {me: mine} if mine else {}
    if mine == 0 and _blas_open > 0:
        limiter = _blas_limiter
        _blas_open, _blas_count, _blas_limiter = 0, _UNSET, None
        try:
            _restore(limiter)
        except Exception:  # pragma: no cover - best effort in a child
            pass
    else:
        _blas_open = mine


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)

# robustagg.kernels imports this module before any kernel module: the layer is ready before
# robustagg's first parallel kernel runs
setup_threading_layer()
