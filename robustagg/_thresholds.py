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

Below :data:`BRANCHES`, the kernels' other tuning constants (block widths, lane counts, network
and tile shapes, parallel chunking, the distance kernels' tolerances): values that set how a
kernel walks its input, not which code path it takes, each with what it tunes. The kernel
modules (``robustagg.kernels``) read every one of them from here and define none of their own.
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
__all__ += [  # the kernels' tuning constants (no code path changes with them)
    "CENTRED_BLOCK_MAX_BYTES",
    "CENTRED_BLOCK_MIN_COLUMNS",
    "CLOSEST_SORT_BLOCK_ELEMENTS",
    "DUPLICATE_RTOL_F32",
    "DUPLICATE_RTOL_F64",
    "EQUAL_ROWS_CHUNKS",
    "EQUAL_ROWS_STEP",
    "GATHER_BLOCK",
    "GRAM_BLOCK_F32",
    "GRAM_BLOCK_F64",
    "GRAM_CHUNK_COLUMNS",
    "GRAM_MAX_CHUNKS",
    "MEAN_STD_BLOCK",
    "MIX_BLOCK_ELEMENTS",
    "MIX_ROWS_F32",
    "NETWORK_BLOCK",
    "NETWORK_ROW_PAD",
    "NETWORK_ROW_STRIDE",
    "NONFINITE_CHUNK",
    "NONFINITE_LANES",
    "PAIR_BLOCK",
    "QUICKSELECT_BLOCK",
    "RECOMPUTE_RTOL_F32",
    "RECOMPUTE_RTOL_F64",
    "SHIFT_PROBE_BLOCKS",
    "SHIFT_PROBE_COLUMNS",
    "SQ_SUM_LANES",
    "TILE_BLOCK_BYTES",
    "TILE_BLOCK_MAX_COLUMNS",
    "TILE_BLOCK_MIN_COLUMNS",
    "TILE_FLUSH_COLUMNS",
    "TILE_LANES",
    "TILE_ROWS_I",
    "TILE_ROWS_J",
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


# ==========================================================================================
# The kernels' tuning constants. None of them is a size switch: each sets how a kernel walks
# its input (block widths, lanes, chunks, tile shapes) or, for the distance kernels, which
# pairs are recomputed exactly. Changing one changes speed or memory; one that sets a summation
# order (lanes, the widths of summed blocks and chunks) or the distances' tolerances also
# changes the last bits of results.
# ==========================================================================================

# --- column sums and means (robustagg.kernels._columns) -----------------------------------
MEAN_STD_BLOCK = 1024
"""Columns per block of ``column_mean_std``: m x block values stay in L2 between its two passes
(the mean, then the squared deviations)."""

MIX_BLOCK_ELEMENTS = 1 << 21
"""Elements of the float64 block ``mix_rows`` (NNM's dense mixing) works on at a time."""

MIX_ROWS_F32 = 256
"""``mix_rows`` on float32: rows per SGEMM partial sum (float32 sums of this length, added in
float64)."""

# --- selection and sorting networks (robustagg.kernels._select, _column_ranks) ------------
NETWORK_BLOCK = 128
"""Columns per block of the sorting-network kernels: the network's SIMD lanes are columns."""

NETWORK_ROW_PAD = 16
"""Lanes of padding between two rows of a network buffer (rows exactly 4 KiB apart would alias
in the load/store unit: Batcher's comparators at distance 8 would then stall)."""

NETWORK_ROW_STRIDE = NETWORK_BLOCK + NETWORK_ROW_PAD
"""Distance between two rows of a network buffer, in values."""

QUICKSELECT_BLOCK = 512
"""Columns per transposed buffer of the per-column quickselect (median and trimmed mean above
``NETWORK_MAX_ROWS`` rows, MeaMed's selection path)."""

CLOSEST_SORT_BLOCK_ELEMENTS = 1 << 18
"""Values per transposed block of Bulyan's second stage above ``NETWORK_MAX_ROWS`` rows (each
block's columns sorted by NumPy)."""

# --- rows (robustagg.kernels._rows, _signs) ------------------------------------------------
NONFINITE_LANES = 256
"""Independent accumulators of the non-finite scan (``x - x`` summed per lane)."""

NONFINITE_CHUNK = 32 * NONFINITE_LANES
"""Values the non-finite scan reads between two checks of its lanes (a non-finite row stops at
the first chunk that proves it)."""

SQ_SUM_LANES = 64
"""Independent float64 partial sums of squares of the row norms and SignGuard's passes: a loop
of 64 independent lanes is vectorised by LLVM's loop vectoriser (AVX2: 4 doubles per register)
without fast-math flags; 8 lanes are fully unrolled first and then stay scalar (checked with
inspect_asm: no vmulpd)."""

GATHER_BLOCK = 8192
"""Columns per block of DnC's fused non-finite scan and column gather."""

# --- the Gram and the distances (robustagg.kernels._gram, _distance) ----------------------
GRAM_BLOCK_F32 = DISTANCE_BLOCK
"""Columns per block of the float32 Gram: the float32 SGEMM accumulation length."""

GRAM_BLOCK_F64 = DISTANCE_BLOCK
"""Columns per block of the float64 Gram."""

CENTRED_BLOCK_MAX_BYTES = 2 << 20
"""Largest buffer of a centred (shifted) block of rows: blocks narrow for large m to stay
within it."""

CENTRED_BLOCK_MIN_COLUMNS = 256
"""Narrowest centred block, whatever m."""

GRAM_CHUNK_COLUMNS = 32768
"""Target columns per chunk of the Gram, the unit of parallel work; chunk boundaries depend on
d only, so the result does not depend on the thread count."""

GRAM_MAX_CHUNKS = 256
"""At most this many chunks (and (m, m) float64 partials) per Gram."""

SHIFT_PROBE_BLOCKS = 4
"""The Gram's shift is chosen on this many blocks of columns spread over d."""

SHIFT_PROBE_COLUMNS = 512
"""Columns per block of that probe."""

RECOMPUTE_RTOL_F32 = 1e-1
"""float32 input: pairs with ``D_ij <= rtol * (N_i + N_j)`` (cancellation possible) are
recomputed as direct float64 sums of squared differences."""

RECOMPUTE_RTOL_F64 = 1e-6
"""The same for float64 input."""

DUPLICATE_RTOL_F32 = 1e-3
"""float32 input: flagged pairs with a Gram distance ``D_ij <= dup * (N_i + N_j)`` are candidate
exact duplicates, then compared value by value."""

DUPLICATE_RTOL_F64 = 1e-9
"""The same for float64 input."""

EQUAL_ROWS_STEP = 512
"""Values compared between two exits of the row-equality test of candidate duplicates."""

EQUAL_ROWS_CHUNKS = 64
"""At most this many parallel column chunks in that test."""

PAIR_BLOCK = 4096
"""Columns per block of the direct recomputation of flagged pairs."""

# --- the register-tiled float32 Gram (robustagg.kernels._gramtile) ------------------------
TILE_ROWS_I = 3
"""Rows i of a tile: TILE_ROWS_I x TILE_ROWS_J row pairs are held in as many 8-lane float32
accumulators (twelve of the sixteen AVX registers)."""

TILE_ROWS_J = 4
"""Rows j of a tile."""

TILE_LANES = 8
"""float32 lanes per accumulator (one 256-bit register)."""

TILE_FLUSH_COLUMNS = 4096
"""Columns summed in the float32 lanes before the lanes are added to the float64 result."""

TILE_BLOCK_BYTES = 512 * 1024
"""A block of columns of all m rows stays within this (half of L2)."""

TILE_BLOCK_MIN_COLUMNS = 256
"""Narrowest block of columns of the tiled kernel."""

TILE_BLOCK_MAX_COLUMNS = 2048
"""Widest block of columns of the tiled kernel."""
