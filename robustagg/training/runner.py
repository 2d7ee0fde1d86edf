"""Running the cells of ``robustagg experiment``: one cell, the jobs, resumption, progress.

Every finished cell is stored as one JSON file under ``OUT/cells/`` named by its
:func:`~robustagg.training.presets.cell_id`, so an interrupted or repeated run recomputes nothing
that is done (:func:`resume`). A cell that cannot run (a setting the rule refuses, or any error)
is reported but never stored: the next run retries it. The cells run in this process with one
Numba/BLAS thread, or with ``jobs > 1`` in spawned worker processes (:func:`run_cells`), under a
progress bar on a terminal and one line per finished cell otherwise.
"""

from __future__ import annotations

import concurrent.futures as cf
import contextlib
import json
import multiprocessing
import os
import sys
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

__all__ = ["DataChangedError", "load_data", "resume", "run_cell", "run_cells"]

#: loaded datasets by fingerprint (this process's; a worker process loads its own once)
_DATA: dict[str, Any] = {}
_DATA_KEEP = 2
_DATA_LOCK = threading.Lock()


def load_data(dataset: str, data_dir: str | None = None):
    """Load and check the dataset of a run (``--dataset``, ``--data-dir``), once per process.

    Raises the loader's clear errors (``FileNotFoundError``, ``DatasetError``): the CLI turns
    them into exit code 2 before any cell runs.
    """
    from .data import load_dataset

    data = load_dataset(dataset, seed=0, data_dir=data_dir)
    _remember(data)
    return data


def _remember(data) -> None:
    with _DATA_LOCK:
        _DATA.pop(data.fingerprint, None)
        _DATA[data.fingerprint] = data  # the latest last
        while len(_DATA) > _DATA_KEEP:  # Fashion-MNIST is ~220 MB: keep the latest only
            del _DATA[next(iter(_DATA))]


class DataChangedError(RuntimeError):
    """The dataset's content is not the one the run's cells were keyed with."""


def _dataset_for(cell: dict):
    fp = cell.get("data")
    with _DATA_LOCK:
        data = _DATA.get(fp)
    if data is not None:
        return data
    data = load_data(cell["dataset"], cell.get("data_dir"))
    if fp is not None and data.fingerprint != fp:
        raise DataChangedError(
            f"dataset {cell['dataset']!r} changed while the run was going on (content "
            f"{data.fingerprint}, the run started with {fp}); rerun the command"
        )
    return data


def run_cell(cell: dict) -> dict:
    """Train one cell; return a JSON-serialisable record.

    A cell that cannot run -- a setting the rule refuses (e.g. Bulyan's n >= 4f + 3) or any
    other error -- returns a record with ``error`` set; such a record is reported but never
    stored as finished, so the next run retries the cell.
    """
    from .federated import FederatedConfig, run_federated

    keys = FederatedConfig.__dataclass_fields__
    config = FederatedConfig(**{k: v for k, v in cell.items() if k in keys})
    config.record_signs = bool(cell.get("record_signs"))  # only fig2 reports them (they cost)
    record: dict[str, Any] = {"cell": cell}
    t0 = time.perf_counter()
    try:
        result = run_federated(_dataset_for(cell), config)
    except ValueError as exc:  # a setting the rule refuses
        record.update(error=str(exc), summary={"seconds": time.perf_counter() - t0})
        return record
    except Exception as exc:  # noqa: BLE001 - one cell's failure must not end the run
        record.update(error=f"{type(exc).__name__}: {exc}", summary={"seconds": time.perf_counter() - t0})
        return record
    d = result.to_dict(history=True)
    record.update(
        error="", summary=d["summary"], history=_slim_history(d["history"]), attack_names=d["attack_names"]
    )
    return record


def _slim_history(h: dict) -> dict:
    """Keep what the tables and plots need (accuracy curve, kept rates, sign statistics)."""
    keep = (
        "round",
        "accuracy",
        "test_loss",
        "honest_kept",
        "malicious_kept",
        "attack",
        "honest_signs",
        "malicious_signs",
        "lie_signs",
    )
    return {k: h[k] for k in keep if k in h}


def _worker_init() -> None:
    """A worker process (spawned for ``--jobs``) runs one thread of Numba and BLAS for good."""
    os.environ["NUMBA_NUM_THREADS"] = "1"
    try:
        import numba

        numba.set_num_threads(1)
    except Exception:  # pragma: no cover - numba without threading layer
        pass
    try:
        from threadpoolctl import threadpool_limits

        threadpool_limits(1)
    except Exception:  # pragma: no cover - threadpoolctl is a scikit-learn dependency
        pass


@contextlib.contextmanager
def _one_thread():
    """One thread for Numba and BLAS while cells run in this process, restored afterwards.

    Cells are small (threads cost more than they give) and, with ``--jobs``, run in parallel
    processes; the caller's process keeps its own settings once the run is over. BLAS goes
    through the library's one BLAS section (:func:`robustagg._threads.blas_single_thread`, which
    coordinates with rules running in other threads); Numba's count is per thread.
    """
    from .._threads import blas_single_thread

    with contextlib.ExitStack() as stack:
        try:
            import numba

            old = numba.get_num_threads()
            numba.set_num_threads(1)
            stack.callback(numba.set_num_threads, old)
        except Exception:  # pragma: no cover - numba without threading layer
            pass
        stack.enter_context(blas_single_thread())
        yield


# ----------------------------------------------------------------------------------------------
# storage


def _cell_path(out: str, cid: str) -> str:
    return os.path.join(out, "cells", f"{cid}.json")


def _load_record(out: str, cid: str, need_signs: bool = False) -> dict | None:
    """A finished record of the cell, or ``None`` (none stored, unreadable, an error, or one
    without the sign statistics that ``need_signs`` asks for)."""
    path = _cell_path(out, cid)
    try:
        with open(path) as fh:
            rec = json.load(fh)
    except (OSError, ValueError):
        return None
    if not isinstance(rec, dict) or rec.get("error") or "summary" not in rec:
        return None  # an error is never a finished result (older versions stored some)
    if need_signs and "honest_signs" not in rec.get("history", {}):
        return None
    return rec


def _save_record(out: str, record: dict) -> None:
    if record.get("error"):
        raise ValueError("a record with an error is not a finished cell")
    path = _cell_path(out, record["cell"]["cell_id"])
    tmp = path + ".tmp"
    with open(tmp, "w") as fh:
        json.dump(record, fh, separators=(",", ":"))
    os.replace(tmp, path)  # atomic: an interrupted run never leaves half a cell


def resume(cells: list[dict], out: str, *, force: bool = False) -> tuple[dict[str, dict], list[dict]]:
    """The stored records of the finished cells and the cells still to run.

    Parameters
    ----------
    cells : list of dict
        The run's cells (:func:`~robustagg.training.presets.build_cells`).
    out : str
        The output directory (its ``cells/`` holds the finished records).
    force : bool, default False
        Ignore the stored records: every cell is to run.

    Returns
    -------
    records : dict
        ``cell_id -> record`` of the cells found finished.
    todo : list of dict
        The other cells, each ``cell_id`` once (two presets' cells with the same settings are one).
    """
    records: dict[str, dict] = {}
    todo = []
    for c in cells:
        rec = None if force else _load_record(out, c["cell_id"], need_signs=c["record_signs"])
        if rec is not None:
            records[c["cell_id"]] = rec
        else:
            todo.append(c)
    seen: set[str] = set()
    todo = [c for c in todo if not (c["cell_id"] in seen or seen.add(c["cell_id"]))]
    return records, todo


def run_cells(
    todo: list[dict],
    out: str,
    records: dict[str, dict],
    *,
    jobs: int = 1,
    desc: str = "",
    quiet: bool = False,
    run_one: Callable[[dict], dict] = run_cell,
) -> list[dict]:
    """Run the cells, store each finished one under ``out``, and return the records that failed.

    Every record (finished or failed) is added to ``records`` by its ``cell_id``; a failed one is
    reported on stderr and never stored, so the next run retries it.

    Parameters
    ----------
    todo : list of dict
        The cells to run.
    out : str
        The output directory (``out/cells/`` must exist).
    records : dict
        ``cell_id -> record``, updated in place.
    jobs : int, default 1
        Worker processes: 1 runs the cells in this process.
    desc : str
        The progress bar's label (the preset).
    quiet : bool, default False
        No progress on stderr (errors are still reported).
    run_one : callable, default :func:`run_cell`
        Runs one cell (with ``jobs > 1`` it must be picklable: a module-level function).
    """
    from .._progress import Progress

    failed: list[dict] = []
    with Progress(len(todo), desc=desc, enabled=False if quiet else None, lines=True) as bar:

        def done(rec: dict) -> None:
            c = rec["cell"]
            if rec.get("error"):  # reported, never stored: the next run retries it
                failed.append(rec)
                print(
                    f"cell {c['rule']}/{c['attack']} seed {c['seed']} could not run: {rec['error']}",
                    file=sys.stderr,
                )
                status = "error"
            else:
                _save_record(out, rec)
                acc = rec.get("summary", {}).get("best_accuracy")
                status = f"{100 * acc:.1f}%" if acc is not None else "n/a"
            records[c["cell_id"]] = rec
            bar.update(1, postfix=f"{c['rule']}/{c['attack']} {status}")

        if jobs == 1 or len(todo) <= 1:
            with _one_thread():
                for c in todo:
                    done(run_one(c))
        else:
            _run_in_processes(todo, jobs, run_one, done)
    return failed


_THREAD_VARIABLES = ("NUMBA_NUM_THREADS", "OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")


@contextlib.contextmanager
def _single_threaded_children() -> Iterator[None]:
    """Spawned processes start with one Numba/BLAS thread; this process's variables come back."""
    old = {k: os.environ.get(k) for k in _THREAD_VARIABLES}
    os.environ.update({k: "1" for k in old})
    try:
        yield
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def _run_in_processes(
    todo: list[dict], jobs: int, run_one: Callable[[dict], dict], done: Callable[[dict], None]
) -> None:
    """Run the cells in ``jobs`` spawned worker processes, calling ``done`` as each finishes."""
    ctx = multiprocessing.get_context("spawn")  # fresh interpreters: Numba/BLAS threads are not fork-safe
    with (
        _single_threaded_children(),
        cf.ProcessPoolExecutor(max_workers=jobs, mp_context=ctx, initializer=_worker_init) as pool,
    ):
        futures = {pool.submit(run_one, c): c for c in todo}
        try:
            for fut in cf.as_completed(futures):
                try:
                    rec = fut.result()
                except Exception as exc:  # a crashed worker must not lose the other cells
                    rec = {"cell": futures[fut], "error": f"{type(exc).__name__}: {exc}"}
                done(rec)
        except KeyboardInterrupt:
            for fut in futures:
                fut.cancel()
            raise
