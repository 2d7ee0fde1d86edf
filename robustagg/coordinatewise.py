"""Coordinate-wise rules: each output coordinate depends on that coordinate's n values only."""

from __future__ import annotations

from typing import Any

import numpy as np

from . import kernels
from ._registry import register_rule
from ._validation import prepare

__all__ = ["mean"]


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
