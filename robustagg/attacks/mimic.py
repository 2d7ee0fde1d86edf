"""The mimic attack (Karimireddy, He, Jaggi, ICLR 2022): every Byzantine row copies one
benign row, chosen to over-represent the direction in which the honest gradients vary most."""

from __future__ import annotations

from typing import Any

import numpy as np

from .._lazy import LazyModule
from .._registry import register_attack
from .._threads import blas_single_thread
from .._validation import check_int
from ._common import prepare_attack

kernels = LazyModule("robustagg.kernels", globals(), "kernels")  # imported at the first call

__all__ = ["mimic", "mimic_target"]


def mimic_target(grads: Any, f: Any) -> int:
    r"""The benign row the mimic heuristic copies (see :func:`mimic`); returns its index."""
    a = prepare_attack("mimic", grads, f)
    return _heuristic_target(a)


def _heuristic_target(a) -> int:
    if a.f == a.n:
        raise ValueError("mimic: every row is Byzantine; there is no benign row to copy")
    benign = a.finite_benign_rows(1, "copying a benign row")
    if benign.size == 1:
        return int(benign[0])
    # Gram matrix of the centred benign rows from their pairwise distances (shared kernel)
    K = kernels.centered_gram_from_sq_distances(kernels.sq_distances(a.G, benign))
    with blas_single_thread():  # an n x n problem: BLAS threads add contention, not speed
        lam, U = np.linalg.eigh(K)
    u = U[:, -1]
    if lam[-1] <= 0:  # every benign row is the same: any of them, the first
        return int(benign[0])
    score = np.abs(u)  # |<g_i - mu, z>| = sqrt(lam) |u_i| for the top principal direction z
    # ties (up to rounding, e.g. two benign rows are always tied): the lowest index
    return int(benign[int(np.flatnonzero(score >= score.max() * (1.0 - 1e-9))[0])])


def mimic(grads: Any, f: Any, *, target: int | None = None, rng: Any = None) -> Any:
    r"""Mimic attack: every Byzantine row is an exact copy of one benign row.

    Copying an honest client is undetectable by any test of what a single row looks like, and
    over-weights that client's data: under heterogeneous (non-IID) data this biases the
    aggregate towards one client's distribution (Karimireddy, He, Jaggi 2022).

    Whom to copy: ``target=i`` copies benign row i. ``target=None`` uses the paper's
    heuristic: take z, the top principal direction of the benign gradients (the top
    eigenvector of their empirical covariance), and copy the benign row of largest
    :math:`|\langle g_i - \mu, z\rangle|`, the client that pulls hardest along the direction
    of largest variance. The paper estimates z online over the first rounds and then keeps
    the target fixed; this stateless function computes it from the current round (z comes
    from the n × n Gram matrix of the centred benign rows, no d × d matrix). Ties (scores
    equal to a relative 1e-9): the lowest index. Only finite benign rows are candidates (and
    enter z): a row holding NaN/Inf or with a squared norm past ``float64.max / (4 n)`` is
    never copied (docs/conventions.md, "Attacks and non-finite honest rows").

    Parameters
    ----------
    grads : array_like, shape (n, d)
        Honest gradients of all n clients.
    f : int or array_like of bool
        The first ``f`` rows are Byzantine, or a boolean mask.
    target : int, optional
        Index of the benign row to copy (it must be finite); ``None`` for the heuristic.
    rng : ignored
        Accepted so that generic code can pass it to every attack.

    Returns
    -------
    array, shape (n, d)
        A new matrix, same library and dtype as ``grads``.

    References
    ----------
    S. P. Karimireddy, L. He, M. Jaggi. "Byzantine-Robust Learning on Heterogeneous Datasets
    via Bucketing", ICLR 2022 (Section 3, the mimic attack).
    """
    a = prepare_attack("mimic", grads, f, rng=rng)
    out = a.output()
    rows = a.byzantine_rows
    if rows.size == 0:
        return a.finish(out)
    if target is None:
        t = _heuristic_target(a)
    else:
        t = check_int(target, rule="mimic", name="target", low=0, high=a.n - 1)
        if a.byzantine[t]:
            raise ValueError(
                f"mimic: argument 'target'={t} is a Byzantine row; it must be a benign row to copy"
            )
        if a.nonfinite(np.array([t], dtype=np.int64))[0]:
            raise ValueError(
                f"mimic: argument 'target'={t} is a benign row that holds NaN/Inf or has a squared norm "
                "past float64.max/(4n); copying it would send a non-finite row"
            )
    a.put(out, rows, a.G[t])
    return a.finish(out)


register_attack("mimic", mimic)
