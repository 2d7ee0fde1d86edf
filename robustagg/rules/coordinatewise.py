"""Coordinate-wise rules: each output coordinate depends on that coordinate's n values only."""

from __future__ import annotations

from typing import Any

from .._lazy import LazyModule
from .._params import BOOLEAN, FAULTS, NONFINITE
from .._registry import register_rule
from .._validation import prepare

kernels = LazyModule("robustagg.kernels", globals(), "kernels")  # imported at the first call

__all__ = ["mean", "median", "trimmed_mean"]

# The options of the rules here, declared once (robustagg._params): ``nonfinite`` and
# ``return_info`` are checked by ``prepare``, ``f`` by ``check_f`` against the rule's bound on n.
_OPTIONS = {"nonfinite": NONFINITE, "return_info": BOOLEAN}
_WITH_F = {"f": FAULTS, **_OPTIONS}
_TABLES = {"mean": _OPTIONS, "median": _OPTIONS, "trimmed_mean": _WITH_F, "meamed": _WITH_F}  # by rule


def mean(grads: Any, *, nonfinite: str = "exclude", return_info: bool = False) -> Any:
    r"""Arithmetic mean of the client gradients (FedAvg's aggregation; no robustness).

    .. math:: \bar g = \frac{1}{n} \sum_{i=1}^{n} g_i

    Parameters
    ----------
    grads : array_like, shape (n, d)
        Client gradients: a NumPy/PyTorch/JAX/array-API array or a sequence of n 1-D arrays.
    nonfinite : {"exclude", "raise"}, default "exclude"
        Rows holding NaN/±Inf are left out (and reported) or make the call raise.
    return_info : bool, default False
        Also return a :class:`~robustagg.Diagnostics`.

    Returns
    -------
    aggregate : array, shape (d,)
        Same array library, device and float dtype as ``grads``.
    info : Diagnostics
        Only with ``return_info=True``.

    Examples
    --------
    >>> import numpy as np, robustagg
    >>> robustagg.mean(np.array([[1.0, 2.0], [3.0, 4.0]]))
    array([2., 3.])
    """
    p = prepare("mean", grads, nonfinite=nonfinite, return_info=return_info)
    result = kernels.column_mean(p.G, p.rows)
    return p.finish(result, return_info=return_info)


register_rule("mean", mean)


def median(grads: Any, *, nonfinite: str = "exclude", return_info: bool = False) -> Any:
    r"""Coordinate-wise median of the client gradients (Yin et al., 2018).

    .. math:: \operatorname{med}(G)_j = \operatorname{median}\{g_{1j}, \dots, g_{nj}\}

    For an even number of rows each coordinate is the average of its two middle values
    (NumPy's ``np.median`` convention). Breakdown point 1/2: the output of every coordinate
    stays inside the range of the honest values while fewer than half the rows are Byzantine.

    Parameters
    ----------
    grads : array_like, shape (n, d)
        Client gradients: a NumPy/PyTorch/JAX/array-API array or a sequence of n 1-D arrays.
    nonfinite : {"exclude", "raise"}, default "exclude"
        Rows holding NaN/±Inf are left out (and reported) or make the call raise; the median
        is then taken over the n' finite rows.
    return_info : bool, default False
        Also return a :class:`~robustagg.Diagnostics` (``kept`` = the finite rows).

    Returns
    -------
    aggregate : array, shape (d,)
        Same array library, device and float dtype as ``grads``.
    info : Diagnostics
        Only with ``return_info=True``.

    References
    ----------
    D. Yin, Y. Chen, K. Ramchandran, P. Bartlett. *Byzantine-Robust Distributed Learning:
    Towards Optimal Statistical Rates*. ICML 2018.

    Examples
    --------
    >>> import numpy as np, robustagg
    >>> robustagg.median(np.array([[1.0, 5.0], [2.0, -9.0], [100.0, 6.0]]))
    array([2., 5.])
    """
    p = prepare("median", grads, nonfinite=nonfinite, return_info=return_info)
    result = kernels.column_median(p.G, p.rows)
    return p.finish(result, return_info=return_info)


def trimmed_mean(grads: Any, f: int, *, nonfinite: str = "exclude", return_info: bool = False) -> Any:
    r"""Coordinate-wise trimmed mean: per coordinate drop the ``f`` largest and ``f`` smallest
    values and average the remaining ``n - 2f`` (Yin et al., 2018).

    .. math:: \operatorname{TM}_f(G)_j = \frac{1}{n - 2f} \sum_{k=f+1}^{n-f} g_{(k)j}

    where :math:`g_{(1)j} \le \dots \le g_{(n)j}` are the sorted values of coordinate j.
    ``f = 0`` is the mean. Requires ``n > 2f``.

    Parameters
    ----------
    grads : array_like, shape (n, d)
        Client gradients.
    f : int
        Number of Byzantine clients: values trimmed at each end of every coordinate.
    nonfinite : {"exclude", "raise"}, default "exclude"
        With "exclude", k non-finite rows are left out and count against ``f``: the rule trims
        ``f' = max(f - k, 0)`` values at each end of the n' = n - k finite ones (n' > 2f' holds
        whenever n > 2f).
    return_info : bool, default False
        Also return a :class:`~robustagg.Diagnostics` (``kept`` = the finite rows; which values
        were trimmed differs per coordinate) with ``f_effective``.

    Returns
    -------
    aggregate : array, shape (d,)
        Same array library, device and float dtype as ``grads``.

    References
    ----------
    D. Yin, Y. Chen, K. Ramchandran, P. Bartlett. *Byzantine-Robust Distributed Learning:
    Towards Optimal Statistical Rates*. ICML 2018.

    Examples
    --------
    >>> import numpy as np, robustagg
    >>> robustagg.trimmed_mean(np.array([[1.0], [2.0], [3.0], [100.0]]), f=1)
    array([2.5])
    """
    p = prepare(
        "trimmed_mean",
        grads,
        f=f,
        min_n=lambda f: 2 * f + 1,
        bound="n > 2f",
        nonfinite=nonfinite,
        return_info=return_info,
    )
    result = kernels.column_trimmed_mean(p.G, p.rows, p.f_eff)
    info = p.diagnostics(f_effective=p.f_eff) if return_info else None
    return p.finish(result, info, return_info=return_info)


register_rule("median", median)
register_rule("trimmed_mean", trimmed_mean)


# ----------------------------------------------------------------------------------------
# mean around the median
# ----------------------------------------------------------------------------------------
def meamed(grads: Any, f: int, *, nonfinite: str = "exclude", return_info: bool = False) -> Any:
    r"""Mean around the median (Xie, Koyejo, Gupta 2018): per coordinate, the mean of the
    n − f values closest to the coordinate-wise median.

    .. math:: [\mathrm{MeaMed}(G)]_j = \frac{1}{n-f} \sum_{i \in N_j} G_{ij}, \qquad
              N_j = \text{the } n-f \text{ indices } i \text{ of smallest } |G_{ij} - \mathrm{med}_j|

    The median follows NumPy's convention (the average of the two middle values for an even
    n). Ties in the distance to the median go to the smaller value (ByzFL leaves them to
    ``argpartition``, i.e. unspecified); with f = 0 the result is the mean. Needs n > 2f.
    Rows holding NaN/±Inf are excluded first and counted against f.

    Cost: O(n) per coordinate, selections only (quickselect of the median, then of the
    (n − f)-th smallest distance to it; columns in parallel blocks, no copy of G).

    Parameters
    ----------
    grads : array_like, shape (n, d)
    f : int
        Number of Byzantine clients (n > 2f).
    nonfinite : {"exclude", "raise"}, default "exclude"
    return_info : bool, default False
        Diagnostics: ``kept`` (every finite row: the selection is per coordinate).

    Returns
    -------
    aggregate : array, shape (d,)

    References
    ----------
    C. Xie, O. Koyejo, I. Gupta. "Generalized Byzantine-tolerant SGD", arXiv:1802.10116, 2018.
    """
    p = prepare(
        "meamed",
        grads,
        f=f,
        min_n=lambda f: 2 * f + 1,
        bound="n > 2f",
        nonfinite=nonfinite,
        return_info=return_info,
    )
    from ..kernels import column_mean_around_median

    result = column_mean_around_median(p.G, p.rows, p.m - p.f_eff)
    return p.finish(result, return_info=return_info)


register_rule("meamed", meamed)
__all__ += ["meamed"]
