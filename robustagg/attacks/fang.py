"""Fang et al.'s full-knowledge local model poisoning attack on trimmed mean and median."""

from __future__ import annotations

from typing import Any

import numpy as np

from .._registry import register_attack
from .._validation import check_real
from ._common import prepare_attack

__all__ = ["fang"]


def fang(grads: Any, f: Any, *, b: float = 2.0, benign_only: bool = False, rng: Any = None) -> Any:
    r"""Fang et al.'s full-knowledge attack on trimmed mean and median (USENIX Security 2020).

    The attacker estimates, per coordinate j, the direction the aggregate would move without
    attack, s_j = sign(μ_j) with μ the coordinate-wise mean of the honest gradients, and
    makes every Byzantine row push coordinate j the other way, beyond the most extreme honest
    value. With g_min,j and g_max,j the smallest and largest honest values:

    * s_j ≥ 0 (the aggregate would be ≥ 0): each Byzantine value is drawn uniformly from
      [g_min,j / b, g_min,j] if g_min,j > 0, else from [b · g_min,j, g_min,j];
    * s_j < 0: uniformly from [g_max,j, b · g_max,j] if g_max,j > 0, else from
      [g_max,j, g_max,j / b].

    This is the paper's attack on trimmed mean, stated for gradients (the paper states it for
    local models, whose change is the negative gradient, so its "s_j = −1" case is s_j ≥ 0
    here); the paper uses the same attack against the median, so it serves both. The draws
    are independent per row and coordinate. A coordinate with μ_j = 0 counts as s_j ≥ 0.

    Parameters
    ----------
    grads : array_like, shape (n, d)
        Honest gradients of all n clients.
    f : int or array_like of bool
        The first ``f`` rows are Byzantine, or a boolean mask.
    b : float, default 2.0
        The spread factor b > 1 (the paper's choice: 2).
    benign_only : bool, default False
        Take μ, g_min and g_max over the benign rows only (default: over the honest gradients
        of all n clients, this library's convention for omniscient attackers; the paper's
        full-knowledge attacker knows the benign ones). Either way over the finite rows only:
        a row holding NaN/Inf or with a squared norm past ``float64.max / (4 n)`` is left out
        (docs/conventions.md, "Attacks and non-finite honest rows"); the draws do not depend on
        it.
    rng : None, int or numpy.random.Generator
        Randomness of the draws; the same seed gives the same matrix.

    Returns
    -------
    array, shape (n, d)
        A new matrix, same library and dtype as ``grads``.

    References
    ----------
    M. Fang, X. Cao, J. Jia, N. Gong. "Local Model Poisoning Attacks to Byzantine-Robust
    Federated Learning", USENIX Security 2020 (Section 4, full knowledge).
    """
    b = check_real(b, rule="fang", name="b", low=1.0, low_open=True)
    a = prepare_attack("fang", grads, f, rng=rng, random=True)
    out = a.output()
    rows = a.byzantine_rows
    if rows.size == 0:
        return a.finish(out)
    if benign_only and rows.size == a.n:
        raise ValueError("fang: no benign row to take statistics over (every row is Byzantine)")
    ref = a.reference_rows(benign_only, 1, "the mean, minimum and maximum of the reference rows")
    mu = a.mean(ref)
    g_min = np.empty(a.d)
    g_max = np.empty(a.d)
    for j0, j1 in a._blocks(ref.size):  # column blocks: no copy of the reference rows
        block = a.G[:, j0:j1] if ref.size == a.n else a.G[ref, j0:j1]
        g_min[j0:j1] = block.min(axis=0)
        g_max[j0:j1] = block.max(axis=0)
    down = mu >= 0  # push below the smallest honest value
    with np.errstate(over="ignore", invalid="ignore"):  # b * g past float64: put() refuses it
        lo = np.where(down, np.where(g_min > 0, g_min / b, b * g_min), g_max)
        hi = np.where(down, g_min, np.where(g_max > 0, b * g_max, g_max / b))
        span = hi - lo
    # a few rows at a time (the Generator fills row-major, so the draws are the same as one
    # (f, d) call): no (f, d) float64 temporaries
    step = max(1, (1 << 20) // max(a.d, 1))
    for r0 in range(0, rows.size, step):
        chunk = rows[r0 : r0 + step]
        u = a.rng.random((chunk.size, a.d))
        with np.errstate(over="ignore", invalid="ignore"):
            u *= span
            u += lo
        a.put(out, chunk, u)
    return a.finish(out)


register_attack("fang", fang)
