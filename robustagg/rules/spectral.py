"""Spectral rules: Divide-and-Conquer (DnC)."""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from .._lazy import LazyModule
from .._params import BOOLEAN, FAULTS, NONFINITE, SEED, Integer, Real, check_params
from .._registry import register_rule
from .._threads import blas_threads
from .._thresholds import DNC_BLAS_THREADED_MIN_ROWS, DNC_FUSE_RATIO, DNC_LANCZOS_MIN_ROWS
from .._validation import prepare

kernels = LazyModule("robustagg.kernels", globals(), "kernels")  # imported at the first call

__all__ = ["dnc"]

_FUSE_RATIO = DNC_FUSE_RATIO  # gather every round in the scan pass when niters * b * _FUSE_RATIO <= d
_BLAS_THREADED_ROWS = DNC_BLAS_THREADED_MIN_ROWS  # from this many rows on the rounds use BLAS's threads
_ROUND_BLOCK = 1024  # sampled columns per block of a round's Gram matrix
_LANCZOS_ROWS = DNC_LANCZOS_MIN_ROWS  # from this many rows the top eigenpair comes from Lanczos (ARPACK)
_LANCZOS_MAXITER = 300  # ARPACK restarts before falling back to LAPACK
_LANCZOS_V0 = 0x5EED  # seed of the fixed Lanczos start vector (no dependence on the caller's rng)

# DnC's options, declared once (robustagg._params): ``nonfinite`` and ``return_info`` are checked
# by ``prepare``, ``f`` by ``check_f`` against the bound n > floor(c f).
_DNC = {
    "f": FAULTS,
    "niters": Integer(low=1),
    "b": Integer(low=1),
    "c": Real(low=0.0),
    "rng": SEED,
    "nonfinite": NONFINITE,
    "return_info": BOOLEAN,
}
_TABLES = {"dnc": _DNC}  # by rule


def dnc(
    grads: Any,
    f: int,
    *,
    niters: int = 5,
    b: int = 10_000,
    c: float = 1.0,
    rng: Any = None,
    nonfinite: str = "exclude",
    return_info: bool = False,
) -> Any:
    r"""Divide-and-Conquer (Shejwalkar & Houmansadr, NDSS 2021).

    For each of ``niters`` rounds:

    1. sample ``b' = min(b, d)`` coordinates uniformly without replacement;
    2. centre the (n, b') sub-matrix on its column mean :math:`\mu`;
    3. take its top right singular vector :math:`v`;
    4. score :math:`s_i = \langle g_i - \mu, v \rangle^2` (on the sampled coordinates);
    5. keep the :math:`n - \lfloor c f \rfloor` rows with the lowest scores (ties: lower index).

    The output is the mean of the rows kept in **every** round. Requires ``n > floor(c f)``.

    Precision: scores come from each round's (m, m) Gram matrix of the centred sample,
    accumulated in float64 over blocks of sampled columns; for float32 input with at least 256
    finite rows the block products are float32 SGEMMs (as in the pairwise distances), which
    puts a relative error of about 1e-6 on the scores and halves the rounds' cost.

    Fallback (documented convention): the intersection can be empty when different rounds keep
    different rows; then the rows kept in the largest number of rounds are averaged (the
    intersection is the special case where that number is ``niters``), so the output is never
    NaN. ``info.fallback`` says whether it happened.

    Parameters
    ----------
    grads : array_like, shape (n, d)
        Client gradients.
    f : int
        Number of Byzantine clients.
    niters : int, default 5
        Number of rounds (>= 1).
    b : int, default 10000
        Number of coordinates sampled per round (>= 1), capped at d.
    c : float, default 1.0
        Filtering fraction: ``floor(c f)`` rows are removed per round (c >= 0).
    rng : None, int or numpy.random.Generator
        Source of the coordinate samples; the same seed gives bit-identical output.
    nonfinite : {"exclude", "raise"}, default "exclude"
        Non-finite rows are left out and count against ``f``: each round removes
        ``floor(c f')`` of the n' finite rows.
    return_info : bool, default False
        Also return a :class:`~robustagg.Diagnostics` with ``kept``, ``scores`` ((niters, n),
        NaN for excluded rows), ``kept_per_round`` ((niters, n) bool), ``fallback`` and
        ``n_removed`` (per round).

    References
    ----------
    V. Shejwalkar, A. Houmansadr. *Manipulating the Byzantine: Optimizing Model Poisoning
    Attacks and Defenses for Federated Learning*. NDSS 2021.
    """
    rule = "dnc"
    # the options first: the bound on n depends on c
    opts = check_params(rule, _DNC, c=c, niters=niters, b=b, rng=rng)
    c, niters, b, gen = opts["c"], opts["niters"], opts["b"], opts["rng"]
    # The coordinates depend on d only, so they are drawn first. When all rounds' samples are a
    # small part of G (at most 1/_FUSE_RATIO of it, e.g. n = 50, d = 1e6), one pass over G
    # gathers every round's columns; otherwise (large b/d) each round gathers its own columns,
    # so the peak extra memory stays one round's (m, b) sub-matrix.
    prep = dict(
        f=f,
        min_n=lambda f: math.floor(c * f) + 1,
        bound=f"n > floor(c*f) with c = {c}",
        nonfinite=nonfinite,
        return_info=return_info,
    )
    p = prepare(rule, grads, **prep)
    bs = min(b, p.d)
    coords = np.empty((niters, bs), dtype=np.int64)
    for t in range(niters):
        coords[t] = np.sort(gen.choice(p.d, size=bs, replace=False))
    if niters * bs * _FUSE_RATIO <= p.d:
        _, subs = kernels.nonfinite_rows_and_gather(p.G, coords)
        if not p.all_finite:
            subs = subs[:, p.rows]

        def sample(t, k0, k1):
            return subs[t, :, k0:k1].astype(np.float64)

    else:

        def sample(t, k0, k1):
            return kernels.gather_columns(p.G, p.rows, np.ascontiguousarray(coords[t, k0:k1]))

    m = p.m
    n_removed = min(math.floor(c * p.f_eff), m - 1)
    n_keep = m - n_removed
    counts = np.zeros(m, dtype=np.int64)
    all_scores = np.empty((niters, m), dtype=np.float64)
    kept_rounds = np.zeros((niters, m), dtype=bool)
    # small (m, b) products: BLAS threads only add contention; from a few hundred rows on, the
    # (m, m) products and eigendecompositions are worth BLAS's threads (the caller's setting,
    # never another call's limit: blas_threads(None) waits until single-thread sections leave)
    with blas_threads(1 if m < _BLAS_THREADED_ROWS else None):
        # float32 input with many rows: the rounds' Grams by SGEMM (float32 blocks of centred
        # values, block products added in float64 -- the pairwise distances' scheme), twice
        # DGEMM's speed; scores then carry ~1e-6 relative error, far below any meaningful gap
        single = p.G.dtype == np.float32 and m >= _BLAS_THREADED_ROWS
        _rounds(sample, niters, bs, m, n_keep, counts, all_scores, kept_rounds, single)
    best = int(counts.max())
    final = counts == best
    fallback = best < niters
    result = kernels.column_mean(p.G, p.rows[final])
    info = None
    if return_info:
        scores_full = np.full((niters, p.n), np.nan)
        scores_full[:, p.rows] = all_scores
        kept_full = np.zeros((niters, p.n), dtype=bool)
        kept_full[:, p.rows] = kept_rounds
        info = p.diagnostics(
            final, scores=scores_full, kept_per_round=kept_full, fallback=fallback, n_removed=n_removed
        )
    return p.finish(result, info, return_info=return_info)


def _rounds(sample, niters, bs, m, n_keep, counts, all_scores, kept_rounds, single=False):
    """The DnC rounds on the sampled columns ``sample(t, k0, k1)`` (float64 (m, k1 - k0)):
    centre, top singular direction, score, keep the lowest. Each round's (m, m) Gram matrix is
    accumulated over blocks of ``_ROUND_BLOCK`` sampled columns, so the extra memory is one
    (m, block) piece, never the whole (m, b) sample in float64."""
    for t in range(niters):
        gram = np.zeros((m, m), dtype=np.float64)
        for k0 in range(0, bs, _ROUND_BLOCK):
            blk = sample(t, k0, min(bs, k0 + _ROUND_BLOCK))
            blk -= blk.mean(axis=0)  # centring is per column, so blocks centre independently
            if single:
                blk = blk.astype(np.float32)
            gram += blk @ blk.T
        # top right singular vector v of the centred sub-matrix X through the (m, m) Gram
        # matrix X X^T = U diag(lambda) U^T: X v = sigma_1 u_1, so s_i = lambda_1 u_1i^2
        lam, u = _top_eigenpair(gram)
        scores = max(lam, 0.0) * u**2
        keep = np.argsort(scores, kind="stable")[:n_keep]
        kept_rounds[t, keep] = True
        counts[keep] += 1
        all_scores[t] = scores


def _top_eigenpair(gram: np.ndarray) -> tuple[float, np.ndarray]:
    """The largest eigenvalue of the symmetric PSD matrix ``gram`` and a unit eigenvector.

    Below ``_LANCZOS_ROWS`` rows: LAPACK's dsyevr with an index range (about 6x faster than the
    full decomposition at m = 1000). From there on: Lanczos (ARPACK's ``eigsh``, to machine
    precision, from a fixed start vector so the result is reproducible). Only matrix-vector
    products are needed, so when the top eigenvalue stands apart -- the case an attack creates
    -- it takes ~10 ms at m = 1000 where dsyevr's tridiagonalisation takes 110-390 ms. When the
    top eigenvalues are close, Lanczos costs about what dsyevr does. If ARPACK does not
    converge within ``_LANCZOS_MAXITER`` restarts, dsyevr is used. The start vector is not the
    constant vector, which lies in the null space of a column-centred Gram."""
    import scipy.linalg
    import scipy.sparse.linalg

    m = gram.shape[0]
    if m >= _LANCZOS_ROWS:
        v0 = np.random.default_rng(_LANCZOS_V0).standard_normal(m)
        try:
            lam, U = scipy.sparse.linalg.eigsh(
                gram, k=1, which="LA", v0=v0, tol=0.0, maxiter=_LANCZOS_MAXITER
            )
            return float(lam[0]), U[:, 0]
        except scipy.sparse.linalg.ArpackNoConvergence:
            pass
    lam, U = scipy.linalg.eigh(gram, subset_by_index=[m - 1, m - 1], driver="evr")
    return float(lam[0]), U[:, 0]


register_rule("dnc", dnc)
