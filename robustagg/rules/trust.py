"""FLTrust (Cao, Fang, Liu, Gong, NDSS 2021): trust bootstrapped from a root dataset."""

from __future__ import annotations

from typing import Any

import numpy as np

from .._lazy import LazyModule
from .._params import BOOLEAN, NONFINITE, Vector, check_params
from .._registry import register_rule
from .._validation import prepare

kernels = LazyModule("robustagg.kernels", globals(), "kernels")  # imported at the first call

__all__ = ["fltrust"]

# FLTrust's options, declared once (robustagg._params); ``nonfinite`` and ``return_info`` are
# checked by ``prepare``. The root gradient is required (a TypeError names it when missing).
_FLTRUST = {"root_gradient": Vector(), "nonfinite": NONFINITE, "return_info": BOOLEAN}
_TABLES = {"fltrust": _FLTRUST}  # by rule


def fltrust(
    grads: Any, root_gradient: Any = None, *, nonfinite: str = "exclude", return_info: bool = False
) -> Any:
    r"""FLTrust: cosine trust scores against the server's root-dataset gradient.

    With g₀ the gradient the server computed on its small clean root dataset:

    .. math::
        TS_i = \mathrm{ReLU}\big(\cos(g_i, g_0)\big), \qquad
        \bar g_i = \frac{\|g_0\|}{\|g_i\|} g_i, \qquad
        \mathrm{FLTrust}(G) = \frac{\sum_i TS_i\, \bar g_i}{\sum_i TS_i}

    Conventions: a zero row has cosine 0 (no trust); if no row has positive trust
    (Σ TSᵢ = 0) the aggregate is the **zero vector** (no client is trusted, so no step is
    taken; the paper leaves the case undefined); a zero root gradient makes every
    normalised row zero, hence a zero aggregate. FLTrust does not use f.

    Parameters
    ----------
    grads : array_like, shape (n, d)
        Client gradients.
    root_gradient : array_like, shape (d,)
        The server's gradient on its root dataset (required; any array library).
    nonfinite : {"exclude", "raise"}, default "exclude"
    return_info : bool, default False
        Diagnostics: ``trust_scores`` and ``cosines`` (over the n rows), ``norms``,
        ``root_norm``, ``kept`` (positive trust).

    Returns
    -------
    aggregate : array, shape (d,)

    References
    ----------
    X. Cao, M. Fang, J. Liu, N. Z. Gong. "FLTrust: Byzantine-robust Federated Learning via
    Trust Bootstrapping", NDSS 2021.
    """
    rule = "fltrust"
    p = prepare(rule, grads, nonfinite=nonfinite, return_info=return_info)
    if root_gradient is None:
        raise TypeError(
            f"{rule}: argument 'root_gradient' (the server's root-dataset gradient, shape (d,)) is required"
        )
    g0 = check_params(rule, _FLTRUST, d=p.d, root_gradient=root_gradient)["root_gradient"]  # float64
    root_norm = float(np.linalg.norm(g0))
    norms = kernels.row_norms(p.G, p.rows)
    dots, _ = kernels.dots_with(p.G, p.rows, g0)
    cos = np.zeros(p.m)
    ok = (norms > 0) & (root_norm > 0)
    cos[ok] = dots[ok] / (norms[ok] * root_norm)
    cos = np.clip(cos, -1.0, 1.0)
    trust = np.maximum(cos, 0.0)
    total = trust.sum()
    if total > 0:
        weights = np.zeros(p.m)
        weights[ok] = trust[ok] * root_norm / norms[ok] / total
        out = kernels.weighted_column_sum(p.G, p.rows, weights)
    else:
        out = np.zeros(p.d)
    info = None
    if return_info:
        info = p.diagnostics(
            trust > 0,
            trust_scores=p.expand_values(trust),
            cosines=p.expand_values(cos),
            norms=p.expand_values(norms),
            root_norm=root_norm,
        )
    return p.finish(out, info, return_info)


register_rule("fltrust", fltrust)
