"""The model-poisoning attacks of the SignGuard paper and of the field (docs/conventions.md, "Attacks").

Every attack has the signature ``attack(grads, f, *, <options>, rng=None)``: ``grads`` is the
(n, d) matrix of the gradients that all n clients computed honestly (any array library),
``f`` an int (the first f rows are Byzantine) or a boolean mask of length n. It returns a
**new** (n, d) matrix of the caller's library and dtype in which the Byzantine rows are
replaced; the benign rows are copied unchanged and the input is never written to. The attacker
is omniscient (the paper's threat model): it sees every honest gradient.

Unless ``benign_only=True``, the statistics μ (mean) and σ (standard deviation, ``ddof=1``)
are coordinate-wise over the honest gradients of all n clients, Byzantine clients included
(they too computed an honest gradient before replacing it).

Non-finite honest rows (docs/conventions.md, "Attacks and non-finite honest rows"): a row that
holds NaN/±Inf or whose squared norm is past ``float64.max / (4 n)`` is left out of every
statistic; too few finite rows for a statistic is a ``ValueError`` naming the attack. The
Byzantine rows are never NaN/Inf (except for :func:`inf` and :func:`nan`, which mean it), and the
benign rows are returned as they came, a non-finite one included (the rules exclude it).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from .._registry import register_attack
from .._validation import check_bool, check_choice, check_real
from ._common import AttackInput, prepare_attack

__all__ = [
    "byzmean",
    "gaussian",
    "inf",
    "ipm",
    "lie",
    "lie_z",
    "min_max",
    "min_sum",
    "nan",
    "noise",
    "reverse_scaled",
    "sign_flip",
]

PERTURBATIONS = ("std", "unit_vec", "sign")


# ----------------------------------------------------------------------------------------
# naive attacks
# ----------------------------------------------------------------------------------------
def gaussian(grads: Any, f: Any, *, sigma: float = 0.5, rng: Any = None) -> Any:
    r"""Random attack (the paper's *Random*): each Byzantine row is :math:`\mathcal N(0, \sigma^2 I)`.

    Parameters
    ----------
    grads : array_like, shape (n, d)
        Honest gradients of all n clients (any array library).
    f : int or array_like of bool
        The first ``f`` rows are Byzantine, or a boolean mask of length n.
    sigma : float, default 0.5
        Standard deviation of the noise (the paper's setting).
    rng : None, int or numpy.random.Generator
        Source of randomness; the same seed gives the same matrix.

    Returns
    -------
    array, shape (n, d)
        A new matrix, same library and dtype as ``grads``.
    """
    sigma = check_real(sigma, rule="gaussian", name="sigma", low=0.0)
    a = prepare_attack("gaussian", grads, f, rng=rng, random=True)
    out = a.output()
    rows = a.byzantine_rows
    with np.errstate(over="ignore"):
        a.put(out, rows, sigma * a.rng.standard_normal((rows.size, a.d), dtype=a.G.dtype))
    return a.finish(out)


def noise(grads: Any, f: Any, *, sigma: float = 0.5, rng: Any = None) -> Any:
    r"""Noise attack: each Byzantine row is its own honest gradient plus :math:`\mathcal N(0, \sigma^2 I)`.

    Parameters are those of :func:`gaussian` (``sigma`` default 0.5). Every Byzantine row's own
    gradient must be finite (a ``ValueError`` otherwise).
    """
    sigma = check_real(sigma, rule="noise", name="sigma", low=0.0)
    a = prepare_attack("noise", grads, f, rng=rng, random=True)
    out = a.output()
    rows = a.byzantine_rows
    a.require_finite_own_rows("adding noise to each Byzantine row's own gradient")
    with np.errstate(over="ignore", invalid="ignore"):
        a.put(out, rows, a.G[rows] + sigma * a.rng.standard_normal((rows.size, a.d), dtype=a.G.dtype))
    return a.finish(out)


def sign_flip(grads: Any, f: Any, *, rng: Any = None) -> Any:
    r"""Sign-flipping attack: each Byzantine row sends :math:`-g_i`, its own gradient reversed.

    The paper's Section V ("reversed gradients without scaling"). ``rng`` is accepted (and
    ignored) so that generic code can pass it to every attack. Every Byzantine row's own
    gradient must be finite (a ``ValueError`` otherwise).
    """
    a = prepare_attack("sign_flip", grads, f, rng=rng)
    out = a.output()
    rows = a.byzantine_rows
    a.require_finite_own_rows("reversing each Byzantine row's own gradient")
    a.put(out, rows, -a.G[rows])
    return a.finish(out)


def reverse_scaled(grads: Any, f: Any, *, r: float = 3.0, rng: Any = None) -> Any:
    r"""Reverse attack with scaling: each Byzantine row sends :math:`-r\, g_i`.

    The paper's ablation (Table III) uses ``r`` equal to SignGuard's upper norm bound R = 3 (so
    that the rows pass the norm filter), or r = 100 when no norm filter / clipping is applied.

    Every Byzantine row's own gradient must be finite, and so must :math:`-r\, g_i` in the
    input's dtype (a ``ValueError`` otherwise).

    Parameters
    ----------
    r : float, default 3.0
        The non-negative scale.
    """
    r = check_real(r, rule="reverse_scaled", name="r", low=0.0)
    a = prepare_attack("reverse_scaled", grads, f, rng=rng)
    out = a.output()
    rows = a.byzantine_rows
    a.require_finite_own_rows("reversing and scaling each Byzantine row's own gradient")
    with np.errstate(over="ignore", invalid="ignore"):
        a.put(out, rows, (-r) * a.G[rows])
    return a.finish(out)


def inf(grads: Any, f: Any, *, rng: Any = None) -> Any:
    """Byzantine rows full of ``+Inf`` (exercises a rule's non-finite policy)."""
    a = prepare_attack("inf", grads, f, rng=rng)
    out = a.output()
    out[a.byzantine_rows] = np.inf
    return a.finish(out)


def nan(grads: Any, f: Any, *, rng: Any = None) -> Any:
    """Byzantine rows full of NaN (exercises a rule's non-finite policy)."""
    a = prepare_attack("nan", grads, f, rng=rng)
    out = a.output()
    out[a.byzantine_rows] = np.nan
    return a.finish(out)


# ----------------------------------------------------------------------------------------
# Little Is Enough, ByzMean, IPM
# ----------------------------------------------------------------------------------------
def lie_z(n: int, f: int) -> float:
    r"""The LIE attack factor of the paper's Eq. (2): :math:`z = \Phi^{-1}\big((n - \lfloor n/2 + 1\rfloor)/(n - f)\big)`.

    :math:`\Phi^{-1}` is the standard normal quantile function (Baruch et al., NeurIPS 2019:
    the number of benign clients the attacker needs to "convince" is
    :math:`s = \lfloor n/2 + 1\rfloor - f`, and z makes the malicious value closer to the mean
    than :math:`(n - f - s)` benign values in expectation). For small f the value is negative
    (the formula is used as it is). Examples: ``lie_z(50, 10) = 0.253347``,
    ``lie_z(20, 8) = 0.674490``.

    Raises
    ------
    ValueError
        When the probability is not in (0, 1) (f ≥ ⌊n/2 + 1⌋, or n ≤ 2): z would be ±inf.
    """
    from .._validation import check_int

    n = check_int(n, rule="lie", name="n", low=1)
    f = check_int(f, rule="lie", name="f", low=0, high=n)
    s = n // 2 + 1
    if f >= n:
        raise ValueError(f"lie: z=None (Eq. 2) needs f < n; got n={n}, f={f}")
    p = (n - s) / (n - f)
    if not 0.0 < p < 1.0:
        raise ValueError(
            f"lie: z=None (Eq. 2) gives Phi^-1({n - s}/{n - f}), which is infinite for n={n}, f={f}; "
            f"it needs f < floor(n/2 + 1) = {s} and n >= 3. Pass z explicitly."
        )
    from scipy.special import ndtri

    return float(ndtri(p))


def _lie_vector(a: AttackInput, z: float | None, benign_only: bool) -> np.ndarray:
    rows = a.reference_rows(benign_only, 2, "the standard deviation (ddof=1)")
    if z is None:
        n_rule = a.rule_rows
        try:
            z = lie_z(n_rule, a.f)
        except ValueError as exc:
            if n_rule == a.n:
                raise
            raise ValueError(
                f"{exc} (n is the number of rows a rule aggregates: the {a.f} Byzantine rows and the "
                f"{n_rule - a.f} finite benign rows of the n={a.n} given)"
            ) from None
    else:
        z = check_real(z, rule=a.name, name="z")
    mu, sigma = a.mean_std(rows)
    with np.errstate(over="ignore", invalid="ignore"):
        return mu - z * sigma


def lie(grads: Any, f: Any, *, z: float | None = None, benign_only: bool = False, rng: Any = None) -> Any:
    r"""A Little Is Enough (Baruch et al., NeurIPS 2019; the paper's Eq. (1)).

    Every Byzantine row sends :math:`\mu - z\,\sigma` (coordinate-wise mean and standard
    deviation, ``ddof=1``, over the finite reference rows; at least 2 are needed).

    Parameters
    ----------
    z : float or None, default None
        ``None`` is the paper's Eq. (2), :func:`lie_z` (0.253347 for n = 50, f = 10), with n
        the number of rows a rule aggregates: the Byzantine rows and the finite benign rows
        (all n when every benign row is finite). The paper's experiments use z = 0.3.
    benign_only : bool, default False
        Take μ and σ over the benign rows only (default: over the honest gradients of all n
        clients, docs/conventions.md).
    rng : ignored
        Accepted for a uniform signature.
    """
    a = prepare_attack("lie", grads, f, rng=rng)
    out = a.output()
    if a.f == 0:
        return a.finish(out)
    a.put(out, a.byzantine_rows, _lie_vector(a, z, benign_only))
    return a.finish(out)


def byzmean(
    grads: Any,
    f: Any,
    *,
    g1: Any = None,
    z: float | None = None,
    benign_only: bool = False,
    rng: Any = None,
) -> Any:
    r"""ByzMean, the paper's hybrid attack (Eq. (8)): the mean of all n rows becomes exactly :math:`g_1`.

    :math:`m_1 = \lfloor f/2 \rfloor` Byzantine rows send :math:`g_1`; the other
    :math:`m_2 = f - m_1` rows send

    .. math:: g_{m_2} = \frac{(n - m_1)\, g_1 - \sum_{i \in \text{benign}} g_i}{m_2}

    so that :math:`\frac1n\big(m_1 g_1 + m_2 g_{m_2} + \sum_{\text{benign}} g_i\big) = g_1`.
    The first :math:`m_1` Byzantine rows (in row order) send :math:`g_1`. A benign row that is
    non-finite is excluded by every rule: the sum is over the finite benign rows and n counts
    the rows a rule aggregates (the f Byzantine rows and the finite benign ones), so the mean of
    those rows is :math:`g_1`.

    Parameters
    ----------
    g1 : array_like of shape (d,), optional
        The target vector. Default: the LIE vector :math:`\mu - z\sigma` (the paper's setting).
    z, benign_only :
        Options of the default LIE vector (see :func:`lie`).
    """
    a = prepare_attack("byzmean", grads, f, rng=rng)
    out = a.output()
    if a.f == 0:
        return a.finish(out)
    if g1 is None:
        target = _lie_vector(a, z, benign_only)
    else:
        from .._array import to_numpy

        target, _ = to_numpy(g1, rule="byzmean", name="g1", ndim=1)
        if target.shape[0] != a.d:
            raise ValueError(f"byzmean: argument 'g1' must have length d={a.d}, got {target.shape[0]}")
        target = target.astype(np.float64)
        if not np.isfinite(target).all():
            raise ValueError("byzmean: argument 'g1' must be finite; it holds NaN or Inf")
    byz = a.byzantine_rows
    m1 = a.f // 2
    m2 = a.f - m1
    benign = a.finite_benign_rows(0)
    benign_sum = a.mean(benign) * benign.size if benign.size else np.zeros(a.d)
    with np.errstate(over="ignore", invalid="ignore"):
        second = ((a.f + benign.size - m1) * target - benign_sum) / m2
    a.put(out, byz[:m1], target)
    a.put(out, byz[m1:], second)
    return a.finish(out)


def ipm(grads: Any, f: Any, *, eps: float = 0.1, rng: Any = None) -> Any:
    r"""Inner-product manipulation (Xie et al., UAI 2019): every Byzantine row sends :math:`-\varepsilon\,\bar g_{\text{benign}}`.

    The benign mean is over the finite benign rows (at least one is needed).

    Parameters
    ----------
    eps : float, default 0.1
        ε = 0.1 (small: fools distance-based rules) and ε = 100 (large: flips the mean) are the
        usual settings.
    """
    eps = check_real(eps, rule="ipm", name="eps", low=0.0)
    a = prepare_attack("ipm", grads, f, rng=rng)
    out = a.output()
    if a.f == 0:
        return a.finish(out)
    if a.f == a.n:
        raise ValueError(f"ipm: needs at least one benign row to take the mean of; got n={a.n}, f={a.f}")
    benign = a.finite_benign_rows(1, "the mean of the benign rows")
    with np.errstate(over="ignore", invalid="ignore"):
        a.put(out, a.byzantine_rows, -eps * a.mean(benign))
    return a.finish(out)


# ----------------------------------------------------------------------------------------
# Min-Max / Min-Sum (Shejwalkar & Houmansadr, NDSS 2021; the paper's Eq. (19)-(21))
# ----------------------------------------------------------------------------------------
def perturbation(a: AttackInput, direction: str, mu: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """The perturbation vector ∇p of Eq. (19): −std, −unit mean or −sign of the mean (float64)."""
    check_choice(direction, PERTURBATIONS, rule=a.name, name="direction")
    if direction == "std":
        _, sigma = a.mean_std(rows)
        return -sigma
    if direction == "unit_vec":
        norm = float(np.linalg.norm(mu))
        return -mu / norm if norm > 0 else np.zeros_like(mu)
    return -np.sign(mu)


def _largest_feasible(h, scale: float, tol: float) -> float:
    """Largest γ ≥ 0 with h(γ) ≤ 0 for a convex h with h(0) ≤ 0: bracket by doubling, then bisect.

    Returns a γ with h(γ) ≤ 0 and h(γ·(1 + tol)) > 0 (up to the bisection's relative
    tolerance), or ``inf`` when h stays feasible up to 2**200 · scale (no bound).
    """
    lo, hi = 0.0, scale
    for _ in range(400):
        if h(hi) > 0:
            break
        lo, hi = hi, 2.0 * hi
    else:  # pragma: no cover - unbounded
        return math.inf
    while hi - lo > tol * hi:
        mid = 0.5 * (lo + hi)
        if mid <= lo or mid >= hi:
            break
        if h(mid) > 0:
            hi = mid
        else:
            lo = mid
    return lo


def _min_max_sum(
    kind: str,
    grads: Any,
    f: Any,
    direction: str,
    benign_only: bool,
    tol: float,
    rng: Any,
    return_info: bool,
):
    tol = check_real(tol, rule=kind, name="tol", low=0.0, low_open=True, high=1e-2)
    check_bool(return_info, rule=kind, name="return_info")
    check_choice(direction, PERTURBATIONS, rule=kind, name="direction")
    a = prepare_attack(kind, grads, f, rng=rng)
    out = a.output()
    if a.f == 0:
        res = a.finish(out)
        return (res, {"gamma": 0.0, "direction": direction}) if return_info else res
    if direction == "std":
        rows = a.reference_rows(benign_only, 2, "direction='std' (the standard deviation, ddof=1)")
    else:
        rows = a.reference_rows(benign_only, 1, f"direction={direction!r} (the mean)")
    mu = a.mean(rows)
    p = perturbation(a, direction, mu, rows)
    K, (c_dot_p,) = a.centered_gram(rows, mu, (p,))
    diag = np.diag(K).copy()
    pp = float(p @ p)
    m = rows.size
    if kind == "min_max":
        sq = diag[:, None] + diag[None, :] - 2.0 * K
        threshold = float(max(sq.max(), 0.0))

        def h(gamma: float) -> float:  # max_i ||mu + gamma p - g_i||^2 - max_ij ||g_i - g_j||^2
            return float(np.max(diag - 2.0 * gamma * c_dot_p + gamma * gamma * pp)) - threshold

    else:
        row_sums = K.sum(axis=1)
        trace = float(diag.sum())
        threshold = float(np.max(m * diag + trace - 2.0 * row_sums))
        sum_c_dot_p = float(c_dot_p.sum())

        def h(gamma: float) -> float:  # sum_i ||mu + gamma p - g_i||^2 - max_i sum_j ||g_i - g_j||^2
            return trace - 2.0 * gamma * sum_c_dot_p + m * gamma * gamma * pp - threshold

    if pp == 0.0 or threshold <= 0.0:
        gamma = 0.0  # no direction to move along, or every reference row identical
    else:
        gamma = _largest_feasible(h, math.sqrt(threshold / pp), tol)
        # The search used the Gram form; check the constraint on the vectors themselves and back
        # off by the tolerance if rounding put the boundary point a hair outside.
        for _ in range(60):
            if _direct_violation(kind, a, rows, mu + gamma * p, threshold) <= 0.0:
                break
            gamma *= 1.0 - tol
    x = mu + gamma * p
    a.put(out, a.byzantine_rows, x)
    res = a.finish(out)
    if return_info:
        return res, {"gamma": gamma, "direction": direction, "threshold": threshold}
    return res


def _direct_violation(kind: str, a: AttackInput, rows: np.ndarray, x: np.ndarray, threshold: float) -> float:
    """The constraint of Eq. (20)/(21) at x evaluated from the rows (float64); ≤ 0 when satisfied."""
    sq = np.zeros(rows.size, dtype=np.float64)
    all_rows = rows.size == a.n
    for j0, j1 in a._blocks(rows.size):
        block = (a.G[:, j0:j1] if all_rows else a.G[rows, j0:j1]).astype(np.float64)
        block -= x[j0:j1]
        sq += np.einsum("ij,ij->i", block, block)
    value = float(sq.max()) if kind == "min_max" else float(sq.sum())
    # relative slack: the threshold itself carries rounding of order 1e-15 * its size
    return value - threshold * (1.0 + 1e-13)


def min_max(
    grads: Any,
    f: Any,
    *,
    direction: str = "std",
    benign_only: bool = False,
    tol: float = 1e-12,
    rng: Any = None,
    return_info: bool = False,
) -> Any:
    r"""Min-Max attack (Shejwalkar & Houmansadr, NDSS 2021; the paper's Eq. (19), (20)).

    All Byzantine rows send :math:`x(\gamma) = \mu + \gamma\,\nabla p` with the largest
    :math:`\gamma \ge 0` such that

    .. math:: \max_i \|x(\gamma) - g_i\| \le \max_{i,j} \|g_i - g_j\|,

    i.e. the malicious row is no farther from any reference gradient than the two farthest
    reference gradients are from each other. The feasible set is an interval [0, γ*] (the
    constraint is convex in γ and holds at γ = 0); γ* is bracketed by doubling and found by
    bisection to a relative tolerance ``tol`` (the published search loops stop early or
    overshoot). Distances come from the Gram matrix of the centred rows in float64
    (O(n² + d) extra memory, no (n, n, d) tensor), and the final γ is checked on the vectors
    themselves.

    Parameters
    ----------
    direction : {"std", "unit_vec", "sign"}, default "std"
        :math:`\nabla p = -\sigma` (the paper's default), :math:`-\mu/\|\mu\|`, or
        :math:`-\operatorname{sign}(\mu)`. A zero perturbation (σ = 0, μ = 0) gives γ = 0.
    benign_only : bool, default False
        μ, σ and the reference gradients :math:`g_i` are the honest gradients of all n clients
        (default) or of the benign rows only; in both cases the finite ones only (at least 2
        for ``direction="std"``, 1 otherwise).
    tol : float, default 1e-12
        Relative tolerance of the bisection.
    return_info : bool, default False
        Also return ``{"gamma": γ, "direction": ..., "threshold": right-hand side (squared)}``.
    """
    return _min_max_sum("min_max", grads, f, direction, benign_only, tol, rng, return_info)


def min_sum(
    grads: Any,
    f: Any,
    *,
    direction: str = "std",
    benign_only: bool = False,
    tol: float = 1e-12,
    rng: Any = None,
    return_info: bool = False,
) -> Any:
    r"""Min-Sum attack (Shejwalkar & Houmansadr, NDSS 2021; the paper's Eq. (19), (21)).

    All Byzantine rows send :math:`x(\gamma) = \mu + \gamma\,\nabla p` with the largest
    :math:`\gamma \ge 0` such that

    .. math:: \sum_i \|x(\gamma) - g_i\|^2 \le \max_i \sum_j \|g_i - g_j\|^2 .

    Same search, directions and options as :func:`min_max`.
    """
    return _min_max_sum("min_sum", grads, f, direction, benign_only, tol, rng, return_info)


register_attack("gaussian", gaussian)
register_attack("noise", noise)
register_attack("sign_flip", sign_flip)
register_attack("reverse_scaled", reverse_scaled)
register_attack("lie", lie)
register_attack("byzmean", byzmean)
register_attack("min_max", min_max)
register_attack("min_sum", min_sum)
register_attack("ipm", ipm)
register_attack("inf", inf)
register_attack("nan", nan)
