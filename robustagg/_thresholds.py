"""Every input size at which the library changes code path, in one place (pure Python: importing
it loads no kernel).

A kernel that switches path at some size is two kernels, and both must satisfy the same
properties (the non-finite policy included). Keeping each switch here, with the quantity it
compares and the rules it steers, lets the property battery (``robustagg.testing.check_rule``)
and the hypothesis strategies (``robustagg.testing.strategies.branch_shapes``) draw inputs on
both sides of every one of them; a test checks that every entry of :data:`BRANCHES` is reached
from both sides.

The quantities compared are those of the rows a rule actually works on: ``m`` is the number of
finite rows (``n`` less the rows the validation layer excluded), ``d`` the number of columns.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = [
    "BRANCHES",
    "Branch",
    "CAF_LANCZOS_MIN_ROWS",
    "COLUMN_BLOCK",
    "DNC_BLAS_THREADED_MIN_ROWS",
    "DNC_FUSE_RATIO",
    "DNC_LANCZOS_MIN_ROWS",
    "DISTANCE_BLOCK",
    "MEANSHIFT_PARALLEL_MIN_ROWS",
    "NETWORK_MAX_ROWS",
    "ROW_BLOCK",
    "SIGN_BLOCK",
    "SIGNGUARD_EXACT_GRAM_MAX",
    "TILED_GRAM_MAX_ROWS",
]

# --- rows ---------------------------------------------------------------------------------
NETWORK_MAX_ROWS = 256
"""Coordinate-wise selection (median, trimmed mean, Bulyan's second stage, MeaMed's window):
a sorting network run across blocks of columns up to this many rows; above it a per-column
quickselect (median, trimmed mean) or NumPy's row sort on transposed blocks (Bulyan)."""

TILED_GRAM_MAX_ROWS = 256
"""float32 Gram matrices (every distance-based rule): the register-tiled kernel up to this many
rows, OpenBLAS SGEMM blocks above (its blocking is twice as fast at m = 1000)."""

MEANSHIFT_PARALLEL_MIN_ROWS = 256
"""SignGuard's Mean-Shift: the O(m^2) passes run on Numba's threads from this many rows."""

DNC_LANCZOS_MIN_ROWS = 256
"""DnC: from this many rows the rounds' top eigenpair comes from Lanczos (ARPACK), below from
LAPACK's dsyevr with an index range."""

DNC_BLAS_THREADED_MIN_ROWS = 256
"""DnC: from this many rows the rounds' products use BLAS's threads (float32 input: SGEMM
blocks added in float64); below, BLAS on one thread."""

CAF_LANCZOS_MIN_ROWS = 257
"""CAF: from this many rows the top eigenpair comes from ARPACK's Lanczos, below from LAPACK."""

# --- rows x rows x columns ----------------------------------------------------------------
SIGNGUARD_EXACT_GRAM_MAX = 1 << 24
"""SignGuard-Sim/-Dist without a reference: while m * m * d is at most this, the Gram matrix is
computed exactly in float64; above it, through the shared block-centred BLAS distances."""

DNC_FUSE_RATIO = 16
"""DnC gathers every round's sampled columns in one pass over G when
``niters * b * DNC_FUSE_RATIO <= d``; otherwise each round gathers its own."""

# --- columns (block edges: the last, partial block is its own code path) ------------------
COLUMN_BLOCK = 2048
"""Columns per parallel block of the coordinate-wise kernels and the field's rules."""

DISTANCE_BLOCK = 4096
"""Columns per block of the Gram / distance kernels (float32 and float64)."""

SIGN_BLOCK = 4096
"""Columns per block of SignGuard's sign counts (below 2^16: offsets are uint16)."""

ROW_BLOCK = 8192
"""Columns per (row, block) task of the row-norm and row-distance kernels and of the
validation layer's finiteness pass."""


@dataclass(frozen=True)
class Branch:
    """One size switch: path A while ``quantity <= last_of_lower``, path B above it.

    ``quantity`` is ``"m"`` (finite rows), ``"m*m*d"`` or ``"d"``; ``rules`` are the registered
    rule names whose result goes through the switch.
    """

    name: str
    quantity: str
    last_of_lower: int
    rules: tuple[str, ...]


_DISTANCE_RULES = (
    "krum", "multi_krum", "bulyan", "geometric_median", "nnm+mean", "signguard_sim", "signguard_dist",
    "monna", "clipped_clustering", "caf", "smea", "mda",
)  # fmt: skip

BRANCHES: tuple[Branch, ...] = (
    Branch("NETWORK_MAX_ROWS", "m", NETWORK_MAX_ROWS, ("median", "trimmed_mean", "bulyan", "meamed")),
    Branch("TILED_GRAM_MAX_ROWS", "m", TILED_GRAM_MAX_ROWS, _DISTANCE_RULES),
    Branch(
        "MEANSHIFT_PARALLEL_MIN_ROWS",
        "m",
        MEANSHIFT_PARALLEL_MIN_ROWS - 1,
        ("signguard", "signguard_sim", "signguard_dist"),
    ),
    Branch("DNC_LANCZOS_MIN_ROWS", "m", DNC_LANCZOS_MIN_ROWS - 1, ("dnc",)),
    Branch("DNC_BLAS_THREADED_MIN_ROWS", "m", DNC_BLAS_THREADED_MIN_ROWS - 1, ("dnc",)),
    Branch("CAF_LANCZOS_MIN_ROWS", "m", CAF_LANCZOS_MIN_ROWS - 1, ("caf",)),
    Branch(
        "SIGNGUARD_EXACT_GRAM_MAX", "m*m*d", SIGNGUARD_EXACT_GRAM_MAX, ("signguard_sim", "signguard_dist")
    ),
    Branch("COLUMN_BLOCK", "d", COLUMN_BLOCK, ("mean", "median", "trimmed_mean", "meamed", "bulyan")),
    Branch("DISTANCE_BLOCK", "d", DISTANCE_BLOCK, _DISTANCE_RULES),
    Branch("SIGN_BLOCK", "d", SIGN_BLOCK, ("signguard", "signguard_sim", "signguard_dist")),
    Branch("ROW_BLOCK", "d", ROW_BLOCK, ("mean", "geometric_median", "centered_clipping", "fltrust")),
)
