"""Coordinate-wise kernels: column mean (selection kernels are added beside it)."""

from __future__ import annotations

import numba as nb
import numpy as np

_BLOCK = 2048  # columns per parallel block


@nb.njit(cache=True, parallel=True, nogil=True)
def column_mean(G, rows):
    """Mean over ``rows`` of each column of G, accumulated in float64, returned as G.dtype."""
    n_rows = rows.size
    d = G.shape[1]
    out = np.empty(d, dtype=G.dtype)
    n_blocks = (d + _BLOCK - 1) // _BLOCK
    for b in nb.prange(n_blocks):
        j0 = b * _BLOCK
        j1 = min(d, j0 + _BLOCK)
        acc = np.zeros(j1 - j0, dtype=np.float64)
        for r in range(n_rows):
            i = rows[r]
            for j in range(j0, j1):
                acc[j - j0] += G[i, j]
        for j in range(j0, j1):
            out[j] = acc[j - j0] / n_rows
    return out
