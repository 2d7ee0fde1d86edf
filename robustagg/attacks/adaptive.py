"""Adaptive attacks (beyond the paper): an attacker who knows the defence.

* :func:`line_search` -- given any rule, line-search the scale γ of a malicious direction so as to
  maximise the rule's deviation from the honest mean. It generalises the "optimal ALIE" and
  "optimal IPM" attacks (grid / line search of the attack factor z or ε against a known rule,
  as in ByzFL's Optimal ALIE and Optimal IPM) to every rule and to the three Min-Max
  perturbation directions.
* :func:`sign_matching` -- aimed at SignGuard's features: every malicious row has the median
  honest L2 norm and exactly the honest positive/zero/negative sign fractions, while its inner
  product with the honest mean is negative.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from .._array import to_numpy
from .._registry import call_with_supported, get_rule, register_attack
from .._validation import check_bool, check_choice, check_int, check_real
from ._common import AttackInput, prepare_attack
from .classic import PERTURBATIONS, perturbation

__all__ = ["line_search", "sign_matching"]

_GOLDEN = (math.sqrt(5.0) - 1.0) / 2.0


def line_search(
    grads: Any,
    f: Any,
    *,
    rule: str | Callable[..., Any] | None = None,
    rule_kwargs: dict | None = None,
    directions: Sequence[str] = PERTURBATIONS,
    grid: Sequence[float] | None = None,
    refine: int = 12,
    both_signs: bool = True,
    extend: int = 60,
    benign_only: bool = False,
    rng: Any = None,
    return_info: bool = False,
) -> Any:
    r"""Adaptive line-search attack against a known rule.

    All Byzantine rows send :math:`x(\gamma) = \mu + \gamma\, u` where :math:`u` is a unit
    malicious direction and γ maximises the damage

    .. math:: J(\gamma) = \| \mathrm{rule}(G'(\gamma)) - \bar g_{\text{benign}} \|_2 ,

    :math:`G'(\gamma)` being the matrix with the Byzantine rows replaced and
    :math:`\bar g_{\text{benign}}` the mean of the benign rows (what a perfectly robust rule would
    return). Directions (as in :func:`min_max`):

    * ``"std"``: :math:`u \propto -\sigma` -- the ALIE line :math:`\mu - z\sigma`; searching γ is
      the *optimal ALIE* attack (the best z for this rule);
    * ``"unit_vec"``: :math:`u = -\mu/\|\mu\|` -- the IPM line: :math:`\mu + \gamma u = -\varepsilon\mu`
      with :math:`\varepsilon = \gamma/\|\mu\| - 1`, so searching γ is the *optimal IPM* attack
      (exactly so with ``benign_only=True``, where μ is the benign mean);
    * ``"sign"``: :math:`u \propto -\operatorname{sign}(\mu)`.

    With ``both_signs=True`` (default) γ also runs over negative values, i.e. the opposite
    side of each line: :math:`\mu + |\gamma|\,\sigma/\|\sigma\|` is the side ByzFL's optimal
    ALIE searches (:math:`\mu + \tau\sigma`), and it is the stronger side against some rules
    (e.g. clipped clustering).

    Search: γ on a geometric grid ``grid`` (multiples of the honest spread
    :math:`s = \sqrt{\frac1n \sum_i \|g_i - \mu\|^2}`; default :math:`s \cdot 2^{k}`,
    k = −6 … 7, on each side) plus γ = 0; along ``"unit_vec"`` also the IPM points
    :math:`\gamma = (1 + \varepsilon)\|\mu\|` for ε ∈ {0} ∪ {2^{k/2}: k = −14 … 6}, so that the usual
    range ε ∈ [0, 1] is sampled densely. When the best point is the outermost one, the search
    keeps doubling γ while the damage grows (at most ``extend`` doublings: rules with no
    robustness, like the mean, are attacked until the aggregate overflows). Then ``refine``
    golden-section steps between the neighbours of the best point. The rule is a black box (it
    may be non-smooth and random: a random rule gets the same seed at every evaluation, common
    random numbers), so the result is the best point found, not a certified optimum. Cost: about
    ``len(directions) · (30 + refine)`` calls of the rule (twice the grid with ``both_signs``).

    Parameters
    ----------
    grads : array_like, shape (n, d)
        Honest gradients of all n clients.
    f : int or array_like of bool
        The Byzantine rows.
    rule : str or callable
        The defence to attack: a registered name or any ``rule(grads, ...)``. ``f`` (the number
        of Byzantine rows) and ``rng`` are passed when the rule accepts them.
    rule_kwargs : dict, optional
        Extra keyword arguments for the rule.
    directions : sequence of {"std", "unit_vec", "sign"}
        Directions tried; the most damaging wins.
    grid : sequence of float, optional
        Positive multipliers of the honest spread s to evaluate.
    refine : int, default 12
        Golden-section steps after the grid search (0: grid only).
    both_signs : bool, default True
        Search both sides of each line (γ < 0 as well).
    extend : int, default 60
        Most doublings of γ past the grid while the damage keeps growing (0: grid only).
    benign_only : bool, default False
        μ, σ and s over the benign rows only (default: all n honest gradients,
        docs/conventions.md). Either way over the finite rows only: a row holding NaN/Inf or
        with a squared norm past ``float64.max / (4 n)`` is left out of μ, σ, s and the benign
        mean, and out of the matrix the rule is evaluated on (the rule would exclude it), so the
        search sees what the rule aggregates.
    rng : None, int or numpy.random.Generator
        Seeds the rule's randomness.
    return_info : bool, default False
        Also return ``{"gamma", "direction", "deviation", "evaluations", "scale"}``.
    """
    rule_fn, rule_kwargs, directions, refine, extend, multipliers = _check_options(
        rule, rule_kwargs, directions, grid, refine, extend, both_signs, return_info
    )
    a = prepare_attack("line_search", grads, f, rng=rng, random=True)
    out = a.output()
    if a.f == 0:
        res = a.finish(out)
        return (res, _info(0.0, None, None, 0, 0.0)) if return_info else res
    if a.f == a.n:
        raise ValueError(f"line_search: needs at least one benign row; got n={a.n}, f={a.f}")
    if "std" in directions:
        rows = a.reference_rows(benign_only, 2, "direction 'std' (the standard deviation, ddof=1)")
    else:
        rows = a.reference_rows(benign_only, 1, "the mean of the reference rows")
    benign = a.finite_benign_rows(1, "the benign mean (the target of the damage)")
    mu = a.mean(rows)
    scale = _honest_spread(a, rows, mu)
    damage = _Damage(a, out, benign, rule_fn, rule_kwargs, target=a.mean(benign))
    best = (-math.inf, 0.0, directions[0], mu)
    for direction in directions:
        p = perturbation(a, direction, mu, rows)
        norm_p = float(np.linalg.norm(p))
        if norm_p == 0.0:
            continue
        u = p / norm_p

        def along(g: float, u: np.ndarray = u) -> float:
            return damage(mu + g * u)

        gammas = _grid_points(direction, mu, scale, multipliers, grid is None, both_signs)
        g_best, v_best = _search_line(along, gammas, extend, refine)
        if v_best > best[0]:
            best = (v_best, g_best, direction, mu + g_best * u)
    value, gamma, direction, x = best
    a.put(out, a.byzantine_rows, x)
    res = a.finish(out)
    if return_info:
        return res, _info(gamma, direction, value, damage.evaluations, scale)
    return res


def _check_options(rule, rule_kwargs, directions, grid, refine, extend, both_signs, return_info):
    """Validate :func:`line_search`'s options.

    Returns ``(rule_fn, rule_kwargs, directions, refine, extend, multipliers)``: the rule as a
    callable, a copy of its keyword arguments, the directions as a tuple, the two counts, and the
    grid's multipliers of the honest spread, sorted (the default ``2**k``, k = −6 … 7, when
    ``grid`` is None).
    """
    if rule is None:
        raise ValueError(
            "line_search: argument 'rule' is required: the rule (registered name or callable) whose "
            "deviation the attack maximises"
        )
    rule_fn = get_rule(rule)
    rule_kwargs = dict(rule_kwargs or {})
    if isinstance(directions, str):
        directions = (directions,)
    directions = tuple(
        check_choice(d, PERTURBATIONS, rule="line_search", name="directions") for d in directions
    )
    if not directions:
        raise ValueError("line_search: argument 'directions' must name at least one direction")
    refine = check_int(refine, rule="line_search", name="refine", low=0)
    extend = check_int(extend, rule="line_search", name="extend", low=0)
    check_bool(both_signs, rule="line_search", name="both_signs")
    if grid is None:
        multipliers = np.array([2.0**k for k in range(-6, 8)])
    else:
        multipliers = np.array(
            [check_real(g, rule="line_search", name="grid", low=0.0, low_open=True) for g in grid]
        )
        multipliers.sort()
        if multipliers.size == 0:
            raise ValueError("line_search: argument 'grid' is empty")
    check_bool(return_info, rule="line_search", name="return_info")
    return rule_fn, rule_kwargs, directions, refine, extend, multipliers


def _honest_spread(a: AttackInput, rows: np.ndarray, mu: np.ndarray) -> float:
    """The grid's unit s = sqrt(Σ ||g_i − μ||² / |rows|); ``max(||μ||, 1)`` when the rows coincide."""
    K, _ = a.centered_gram(rows, mu)
    scale = math.sqrt(max(float(np.trace(K)) / rows.size, 0.0))
    if scale == 0.0:
        scale = max(float(np.linalg.norm(mu)), 1.0)
    return scale


class _Damage:
    """The objective J(x): the rule's deviation from the benign mean when every Byzantine row sends x.

    The rule is evaluated on one matrix reused for every evaluation: the Byzantine rows and the
    finite benign rows, in order (a copy of ``out``, which later receives the winner, or the rows
    of it that are seen). A random rule gets the same seed at every evaluation (common random
    numbers); ``evaluations`` counts the calls.
    """

    def __init__(self, a: AttackInput, out, benign, rule_fn, rule_kwargs: dict, target: np.ndarray):
        self.a = a
        self.rule_fn = rule_fn
        self.rule_kwargs = rule_kwargs
        self.target = target
        self.seed = int(a.rng.integers(2**63 - 1))
        byz = a.byzantine_rows
        seen = np.union1d(byz, benign)
        if seen.size == a.n:
            self.work, self.work_byz = out.copy(), byz
        else:
            self.work, self.work_byz = out[seen], np.searchsorted(seen, byz)
        self.evaluations = 0

    def __call__(self, x: np.ndarray) -> float:
        a = self.a
        self.evaluations += 1
        with np.errstate(over="ignore"):  # a row past the dtype is Inf: the rule excludes it
            self.work[self.work_byz] = x.astype(a.G.dtype)
        kwargs = dict(self.rule_kwargs)
        kwargs.setdefault("f", a.f)
        kwargs.setdefault("rng", self.seed)
        agg = call_with_supported(self.rule_fn, a.context.wrap(self.work, cast=False), **kwargs)
        if isinstance(agg, tuple):
            agg = agg[0]
        agg_np, _ = to_numpy(agg, rule="line_search", name="rule output", ndim=1)
        value = float(np.linalg.norm(agg_np.astype(np.float64) - self.target))
        return value if math.isfinite(value) else math.inf


def _grid_points(direction, mu, scale: float, multipliers, default_grid: bool, both_signs: bool):
    """The sorted, distinct γ of the grid along one direction.

    γ = 0 and ``scale`` times the multipliers; along ``"unit_vec"`` with the default grid also the
    IPM points (1 + ε)·||μ|| for ε ∈ {0} ∪ {2^{k/2}: k = −14 … 6}; with ``both_signs`` the
    opposites of the positive points.
    """
    points = [0.0, *(scale * multipliers)]
    if direction == "unit_vec" and default_grid:
        norm_mu = float(np.linalg.norm(mu))
        points += [norm_mu * (1.0 + eps) for eps in (0.0, *(2.0 ** (k / 2.0) for k in range(-14, 7)))]
    if both_signs:
        points += [-g for g in points if g > 0]
    return np.unique(np.array(points, dtype=np.float64))


def _search_line(along, gammas, extend: int, refine: int) -> tuple[float, float]:
    """The best (γ, damage) along one line: the grid, the doublings past its edge, the refinement."""
    values = np.array([along(g) for g in gammas])
    k = int(np.argmax(values))
    if k in (0, gammas.size - 1) and gammas[k] != 0.0 and math.isfinite(values[k]):
        gammas, values, k = _extend_past_edge(along, gammas, values, k, extend)
    g_best, v_best = float(gammas[k]), float(values[k])
    if refine and math.isfinite(v_best):
        lo = float(gammas[max(k - 1, 0)])
        hi = float(gammas[min(k + 1, gammas.size - 1)])
        g_best, v_best = _golden_max(along, lo, hi, refine, g_best, v_best)
    return g_best, v_best


def _extend_past_edge(along, gammas, values, k: int, extend: int):
    """Past the grid's end (the best point ``k`` is outermost): keep doubling γ while the damage grows.

    At most ``extend`` doublings. Returns the grid with the new points, sorted, its damages and the
    index of the best finite damage.
    """
    g_edge, v_edge = float(gammas[k]), float(values[k])
    extra_g, extra_v = [], []
    for _ in range(extend):
        g_next = 2.0 * g_edge
        v_next = along(g_next)
        extra_g.append(g_next)
        extra_v.append(v_next)
        if not v_next > v_edge or not math.isfinite(v_next):
            break
        g_edge, v_edge = g_next, v_next
    gammas = np.concatenate([gammas, extra_g])
    values = np.concatenate([values, extra_v])
    order = np.argsort(gammas)
    gammas, values = gammas[order], values[order]
    finite = np.where(np.isfinite(values), values, -math.inf)
    return gammas, values, int(np.argmax(finite))


def _info(gamma: float, direction, deviation, evaluations: int, scale: float) -> dict:
    """The record ``line_search(..., return_info=True)`` returns next to the gradients."""
    return {
        "gamma": gamma,
        "direction": direction,
        "deviation": deviation,
        "evaluations": evaluations,
        "scale": scale,
    }


def _golden_max(fun, lo: float, hi: float, steps: int, g_best: float, v_best: float):
    """Golden-section search for a maximum on [lo, hi]; keeps the best point seen (incl. the start)."""
    c = hi - _GOLDEN * (hi - lo)
    d = lo + _GOLDEN * (hi - lo)
    fc, fd = fun(c), fun(d)
    for g, v in ((c, fc), (d, fd)):
        if v > v_best:
            g_best, v_best = g, v
    for _ in range(max(steps - 2, 0)):
        if fc >= fd:
            hi, d, fd = d, c, fc
            c = hi - _GOLDEN * (hi - lo)
            fc = fun(c)
            g, v = c, fc
        else:
            lo, c, fc = c, d, fd
            d = lo + _GOLDEN * (hi - lo)
            fd = fun(d)
            g, v = d, fd
        if v > v_best:
            g_best, v_best = g, v
    return g_best, v_best


def sign_matching(
    grads: Any,
    f: Any,
    *,
    norm_scale: float = 1.0,
    benign_only: bool = False,
    rng: Any = None,
) -> Any:
    r"""Attack on SignGuard's features: honest norm and sign statistics, harmful direction.

    Every Byzantine row sends the same vector x built so that

    * the numbers of positive, zero and negative coordinates of x equal the (rounded) average
      numbers over the reference gradients -- so its sign features on any random coordinate
      subset are distributed like an honest gradient's;
    * :math:`\|x\|_2` is ``norm_scale`` times the median honest norm -- inside SignGuard's norm
      band [L, R] and untouched by its clipping when ``norm_scale <= 1``;
    * x points against the honest mean μ as far as the sign budget allows: the budget is spent on
      the coordinates with the largest :math:`|\mu_j|`, each given the sign opposite to
      :math:`\mu_j` and the magnitude :math:`|\mu_j|`; the slots that must carry the "wrong"
      (μ-aligned) sign go to the coordinates with the smallest :math:`|\mu_j|`, with a magnitude
      10⁻⁶ times the median :math:`|\mu_j|`, and the zero slots too. In the regime where the
      honest spread exceeds the mean (both signs frequent in every honest gradient),
      :math:`\langle x, \mu\rangle < 0`. When nearly every honest coordinate has the sign of μ
      (spread ≪ mean), the budget forces x to agree with μ on most coordinates and the attack
      is weak -- and so would any attack that keeps the sign statistics.

    Precisely: with P, Z, N the target counts, coordinates sorted by decreasing :math:`|\mu_j|`
    receive, greedily, a negative sign if :math:`\mu_j > 0` and negative slots remain, a positive
    sign if :math:`\mu_j < 0` and positive slots remain; the rest, by increasing
    :math:`|\mu_j|`, fill the zero slots first, then the remaining slots. Deterministic
    (``rng`` is accepted and ignored). See ``docs/robustness.md`` for how SignGuard fares.

    Parameters
    ----------
    norm_scale : float, default 1.0
        Norm of x relative to the median L2 norm of the reference gradients.
    benign_only : bool, default False
        Reference gradients: all n honest gradients (default) or the benign rows only; the
        finite ones only (a row holding NaN/Inf or with a squared norm past
        ``float64.max / (4 n)`` is left out of μ, the sign counts and the norms).
    """
    norm_scale = check_real(norm_scale, rule="sign_matching", name="norm_scale", low=0.0)
    a = prepare_attack("sign_matching", grads, f, rng=rng)
    out = a.output()
    if a.f == 0:
        return a.finish(out)
    rows = a.reference_rows(benign_only, 1, "the mean, sign counts and norms of the reference rows")
    mu = a.mean(rows)
    positives = np.zeros(rows.size)
    zeros = np.zeros(rows.size)
    norms = np.zeros(rows.size)
    all_rows = rows.size == a.n
    for j0, j1 in a._blocks(rows.size):
        block = a.G[:, j0:j1] if all_rows else a.G[rows, j0:j1]
        positives += (block > 0).sum(axis=1)
        zeros += (block == 0).sum(axis=1)
        norms += np.einsum("ij,ij->i", block, block, dtype=np.float64)
    d = a.d
    n_pos = int(round(positives.mean()))
    n_zero = min(int(round(zeros.mean())), d - n_pos)
    n_neg = d - n_pos - n_zero
    target_norm = norm_scale * float(np.median(np.sqrt(norms)))

    order = np.argsort(-np.abs(mu), kind="stable")  # most important coordinates first
    sign = np.zeros(d, dtype=np.int8)
    assigned = np.zeros(d, dtype=bool)
    ordered_mu = mu[order]
    flip_down = order[ordered_mu > 0][:n_neg]  # harmful slots: opposite sign on the largest |mu_j|
    flip_up = order[ordered_mu < 0][:n_pos]
    sign[flip_down], sign[flip_up] = -1, 1
    assigned[flip_down] = assigned[flip_up] = True
    pos_left, neg_left = n_pos - flip_up.size, n_neg - flip_down.size
    rest = order[~assigned[order]][::-1]  # least important first
    zero_slots = rest[:n_zero]
    filler = rest[n_zero:]
    sign[filler[:pos_left]] = 1
    sign[filler[pos_left : pos_left + neg_left]] = -1
    harmful = assigned
    magnitude = np.abs(mu)
    positive_mags = magnitude[magnitude > 0]
    floor = 1e-3 * (float(np.median(positive_mags)) if positive_mags.size else 1.0)
    mags = np.where(harmful, np.maximum(magnitude, floor), floor * 1e-3)
    mags[zero_slots] = 0.0
    x = sign * mags
    norm_x = float(np.linalg.norm(x))
    if norm_x > 0:
        x *= target_norm / norm_x
    a.put(out, a.byzantine_rows, x)
    return a.finish(out)


register_attack("line_search", line_search)
register_attack("sign_matching", sign_matching)
