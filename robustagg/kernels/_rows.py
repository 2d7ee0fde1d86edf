"""Row-wise kernels: non-finite detection and row norms."""

from __future__ import annotations

import numba as nb
import numpy as np


@nb.njit(cache=True, parallel=True, nogil=True)
def nonfinite_rows(G):
    """Boolean mask: True where a row holds any NaN or ±Inf."""
    n, d = G.shape
    out = np.zeros(n, dtype=np.bool_)
    for i in nb.prange(n):
        for j in range(d):
            v = G[i, j]
            if not np.isfinite(v):
                out[i] = True
                break
    return out
