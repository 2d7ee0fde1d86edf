"""The one array-conversion layer: any array library in, NumPy inside, the same library out.

Every public rule and attack calls :func:`to_numpy` on its input and :func:`ArrayContext.wrap`
on its result. Kernels only ever see NumPy arrays.

Conventions (docs/conventions.md, "Array in, array out" and "Dtypes"):

* NumPy arrays are used as they are (no copy), read-only and non-contiguous ones included.
  The rules see every input through a read-only view (:func:`_frozen`, no copy): a writable and
  a read-only array (a JAX array, a memory map) then have one Numba type, and each kernel is
  compiled once for both.
* Other array-API arrays (PyTorch, JAX, CuPy, ...) are viewed through DLPack when they live on
  the CPU (no copy) and copied to the host otherwise. The result goes back to the caller's
  library and device.
* A sequence of n 1-D arrays is stacked into an (n, d) matrix (the only case that copies);
  the result is of the first element's library.
* float32 and float64 are kept. Other floating dtypes are computed in a wider one and the result
  is rounded back, once, to the caller's dtype: float16, bfloat16 (PyTorch's and the ml_dtypes
  type JAX uses) and the ml_dtypes float8/float6/float4 types compute in float32, NumPy's
  longdouble in float64. Integer input computes in float64 and gives float64 results. bool,
  complex and object input is a ``TypeError``.
* A PyTorch tensor of a dtype NumPy lacks (bfloat16, float8) is converted with
  ``t.to(torch.float32)`` first: that copy is unavoidable, as it is for NumPy float16 input.
* JAX: concrete arrays only. A tracer (inside ``jax.jit``/``vmap``/``grad``) is a ``TypeError``
  that says so, since the kernels are compiled NumPy code.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = ["ArrayContext", "to_numpy"]

# the ml_dtypes floating types (JAX's bfloat16 and the float8/6/4 types): NumPy kind "V"
_ML_FLOAT_PREFIXES = ("bfloat16", "float8", "float6", "float4")


@dataclass(frozen=True)
class ArrayContext:
    """Where an input came from, so that results can be sent back there.

    Attributes
    ----------
    kind : {"numpy", "torch", "array_api"}
        The caller's array library.
    namespace : module or None
        The array-API namespace (``"array_api"`` only).
    device : object or None
        The caller's device.
    dtype : object or None
        The caller's dtype (``torch.float16``, a NumPy dtype, ...), where known.
    cast_back : bool
        True when the input was computed in a wider float type than its own (float16, bfloat16,
        float8, longdouble): :meth:`wrap` then rounds each result back to ``dtype``, once.
    """

    kind: str  # "numpy", "torch", "array_api"
    namespace: Any = None
    device: Any = None
    dtype: Any = None
    cast_back: bool = False
    rule: str | None = None  # the rule or attack the input was given to (set with cast_back)

    def wrap(self, result: np.ndarray, *, cast: bool = True) -> Any:
        """Convert a NumPy result back to the caller's array library, device and dtype.

        Parameters
        ----------
        result : numpy.ndarray
            The result in the compute dtype (float32 or float64).
        cast : bool, default True
            Round the result to the caller's dtype where the input was computed in a wider one
            (float16/bfloat16 in, float16/bfloat16 out). ``cast=False`` keeps the compute dtype:
            for intermediate arrays handed to another rule (an attack's line search), so that
            every step computes on the same values as for float32 input.

        Raises
        ------
        ValueError
            When rounding to the caller's dtype turns a finite value into an infinity or NaN (a
            float16 result beyond 65504, say): the message names the rule and the dtype.
        """
        cast = cast and self.cast_back
        if self.kind == "numpy":
            return self._narrowed(result) if cast else result
        if self.kind == "torch":
            import torch

            out = torch.from_numpy(np.ascontiguousarray(result))
            if cast:  # one rounding, on the CPU (half the bytes to move to the device)
                out = out.to(self.dtype)
                if self.dtype.itemsize < result.dtype.itemsize:
                    self._check_range(result, torch.isfinite(out.to(torch.float32)).numpy())
            if self.device is not None and str(self.device) != "cpu":
                out = out.to(self.device)
            return out
        if cast:  # the ml_dtypes types are NumPy dtypes: the namespace takes them as they are
            result = self._narrowed(result)
        xp = self.namespace
        try:
            return xp.asarray(result, device=self.device)
        except TypeError:  # namespaces whose asarray has no device argument
            return xp.asarray(result)

    @property
    def largest_finite(self) -> float | None:
        """The largest finite value a result can hold once rounded back to the caller's dtype
        (65504 for float16), or None when results keep their compute dtype: for code that bounds
        what it computes (an attack's search) to what the caller's dtype can hold."""
        return _largest_finite(self.dtype) if self.cast_back else None

    def _narrowed(self, result: np.ndarray) -> np.ndarray:
        """``result`` rounded to the caller's NumPy (or ml_dtypes) dtype, range checked."""
        with np.errstate(over="ignore", invalid="ignore"):  # reported below, in the rule's words
            out = result.astype(self.dtype)
        if out.dtype.itemsize < result.dtype.itemsize:
            self._check_range(result, np.isfinite(out.astype(np.float32)))
        return out

    def _check_range(self, result: np.ndarray, finite_after: np.ndarray) -> None:
        """Raise when a value finite in ``result`` is not finite after the rounding."""
        lost = ~finite_after & np.isfinite(result)
        if not lost.any():
            return
        name = str(self.dtype).removeprefix("torch.")
        largest = float(np.max(np.abs(result[lost])))
        raise ValueError(
            f"{self.rule or 'robustagg'}: the result does not fit in {name}, the input's dtype: "
            f"{int(lost.sum())} finite value(s), up to {largest:.4g} in magnitude, exceed its largest "
            f"finite value {_largest_finite(self.dtype):.6g}; the computation ran in float32 (pass "
            "float32 input to get that result)"
        )


def _largest_finite(dtype: Any) -> float:
    """The largest finite value of a PyTorch, NumPy or ml_dtypes floating dtype (NaN if unknown)."""
    if type(dtype).__module__.startswith("torch"):
        import torch

        return float(torch.finfo(dtype).max)
    try:
        return float(np.finfo(dtype).max)
    except (TypeError, ValueError):
        pass
    try:
        import ml_dtypes

        return float(ml_dtypes.finfo(dtype).max)
    except Exception:  # pragma: no cover - a float type of another package
        return float("nan")


_NUMPY_CONTEXT = ArrayContext("numpy")


def _is_torch(x: Any) -> bool:
    return type(x).__module__.startswith("torch") and hasattr(x, "detach")


def _is_jax_tracer(x: Any) -> bool:
    return type(x).__module__.startswith("jax") and "Tracer" in type(x).__name__


def _computed_wider(dtype: np.dtype) -> bool:
    """Whether a NumPy dtype is a floating type that is computed in float32/float64 and rounded
    back (float16, longdouble, the ml_dtypes types)."""
    if dtype.kind == "f":
        return dtype not in (np.float32, np.float64)
    return dtype.kind == "V" and dtype.name.startswith(_ML_FLOAT_PREFIXES)


def _torch_to_numpy(x: Any) -> tuple[np.ndarray, ArrayContext]:
    import torch

    t = x.detach()
    dtype = t.dtype
    narrow = t.is_floating_point() and dtype not in (torch.float32, torch.float64)
    ctx = ArrayContext("torch", device=t.device, dtype=dtype, cast_back=narrow)
    if t.device.type != "cpu":
        t = t.cpu()
    if t.is_conj():
        t = t.resolve_conj()
    if t.is_neg():
        t = t.resolve_neg()
    if narrow and dtype != torch.float16:
        # bfloat16, float8: neither DLPack nor .numpy() knows them; the float32 copy is unavoidable
        t = t.to(torch.float32)
    try:
        return np.from_dlpack(t), ctx
    except (BufferError, RuntimeError, TypeError):
        return t.numpy(), ctx


def _single_to_numpy(x: Any) -> tuple[np.ndarray, ArrayContext]:
    """One array of any library as a NumPy array (a view when possible) and its context.

    The array keeps its own dtype (except for PyTorch dtypes NumPy lacks, given as float32); the
    context records the caller's dtype. ``to_numpy`` converts the dtype and sets ``cast_back``.
    """
    if isinstance(x, np.ndarray):
        return x, _NUMPY_CONTEXT
    if isinstance(x, np.generic):
        return np.asarray(x), _NUMPY_CONTEXT
    if _is_torch(x):
        return _torch_to_numpy(x)
    if _is_jax_tracer(x):
        raise TypeError(
            "robustagg runs outside jax.jit/vmap/grad (its kernels are compiled NumPy code): call it "
            "on concrete JAX arrays, or from traced code through jax.pure_callback"
        )
    if hasattr(x, "__array_namespace__") or hasattr(x, "__dlpack__"):
        try:
            import array_api_compat

            xp = array_api_compat.array_namespace(x)
            device = array_api_compat.device(x)
        except Exception:  # pragma: no cover - exotic arrays without a namespace
            xp, device = None, None
        ctx = ArrayContext("array_api", namespace=xp, device=device)
        try:
            return np.from_dlpack(x), ctx
        except Exception:
            return np.asarray(x), ctx
    # lists of floats, tuples, anything NumPy understands
    return np.asarray(x), _NUMPY_CONTEXT


def _with_dtype(ctx: ArrayContext, original: np.dtype) -> ArrayContext:
    """The context of an input whose NumPy dtype was ``original`` before conversion: records
    that the result is to be rounded back when that dtype is computed in a wider one. (A
    PyTorch context already knows its dtype.)"""
    if ctx.kind == "torch" or not _computed_wider(original):
        return ctx
    return dataclasses.replace(ctx, dtype=original, cast_back=True)


def to_numpy(x: Any, *, rule: str, name: str = "grads", ndim: int = 2) -> tuple[np.ndarray, ArrayContext]:
    """Return ``x`` as a float32/float64 NumPy array of ``ndim`` dimensions and its context.

    The returned array is always read-only (:func:`_frozen`): a view of the caller's memory for
    float32/float64 NumPy (or CPU DLPack) input, with no copy. Other floating dtypes are
    converted (float16, bfloat16, float8 to float32; longdouble to float64) and the context
    rounds results back to them (:meth:`ArrayContext.wrap`).

    Parameters
    ----------
    x : array_like
        An array of any array-API library, or (for ``ndim=2``) a sequence of 1-D arrays.
    rule : str
        The name of the calling rule or attack, for error messages.
    name : str
        The argument's name, for error messages.
    ndim : int
        The required number of dimensions.

    Returns
    -------
    array : numpy.ndarray
        float32 or float64.
    context : ArrayContext
        Where ``x`` came from, and its dtype when results are to be rounded back to it.
    """
    if x is None:
        raise TypeError(f"{rule}: argument {name!r} must be an array, got None")
    if ndim == 2 and isinstance(x, (list, tuple)) and len(x) > 0 and not np.isscalar(x[0]):
        first = x[0]
        if not isinstance(first, (list, tuple)) and not (
            isinstance(first, np.ndarray) or hasattr(first, "__dlpack__") or _is_torch(first)
        ):
            raise TypeError(
                f"{rule}: argument {name!r} must be an (n, d) array or a sequence of 1-D arrays, "
                f"got a sequence of {type(first).__name__}"
            )
        rows = []
        ctx = None
        dtypes = set()
        for i, row in enumerate(x):
            if isinstance(row, (list, tuple)):
                arr, c = np.asarray(row), _NUMPY_CONTEXT
            else:
                arr, c = _single_to_numpy(row)
            if ctx is None:
                ctx = c
            if arr.ndim != 1:
                raise ValueError(
                    f"{rule}: argument {name!r} as a sequence must hold 1-D arrays, "
                    f"row {i} has shape {arr.shape}"
                )
            dtypes.add(c.dtype if c.kind == "torch" else arr.dtype)
            rows.append(arr)
        lengths = {r.shape[0] for r in rows}
        if len(lengths) > 1:
            raise ValueError(
                f"{rule}: argument {name!r} has ragged rows: lengths {sorted(lengths)[:5]}; "
                "all rows must have the same length d"
            )
        arr = np.stack([_check_dtype(r, rule, name) for r in rows])
        if len(dtypes) == 1:  # rows of one dtype: the result comes back in it
            if ctx.kind != "torch":
                ctx = _with_dtype(ctx, rows[0].dtype)
        elif ctx.kind == "torch" and ctx.cast_back:  # mixed dtypes: the stacked (compute) dtype
            ctx = dataclasses.replace(ctx, cast_back=False)
        return _frozen(arr), _named(ctx, rule)  # type: ignore[arg-type]
    try:
        arr, ctx = _single_to_numpy(x)
    except ValueError as exc:  # NumPy refuses ragged nested lists
        raise ValueError(f"{rule}: argument {name!r} could not be read as an array ({exc})") from None
    original = arr.dtype
    arr = _check_dtype(arr, rule, name)
    if arr.ndim != ndim:
        what = "(n, d) matrix" if ndim == 2 else f"{ndim}-D array"
        raise ValueError(f"{rule}: argument {name!r} must be a {what}, got an array of shape {arr.shape}")
    return _frozen(arr), _named(_with_dtype(ctx, original), rule)


def _frozen(arr: np.ndarray) -> np.ndarray:
    """``arr`` as a read-only view (no copy; ``arr`` itself when it is read-only already).

    Numba compiles a kernel separately for writable and read-only arrays; giving the kernels
    read-only arrays only halves what a process compiles (``robustagg warmup`` included), and
    a JAX array (read-only) reuses what a NumPy call compiled. The library never writes into
    its input, so nothing is lost."""
    if not arr.flags.writeable:
        return arr
    view = arr.view()
    view.flags.writeable = False
    return view


def _named(ctx: ArrayContext, rule: str) -> ArrayContext:
    """A context that rounds results back carries the rule's name, for its range error."""
    return dataclasses.replace(ctx, rule=rule) if ctx.cast_back else ctx


def _check_dtype(arr: np.ndarray, rule: str, name: str) -> np.ndarray:
    """``arr`` in its compute dtype: float32/float64 as they are, the other floating types in
    float32 (longdouble in float64), integers in float64; anything else is a ``TypeError``."""
    kind = arr.dtype.kind
    if kind == "f":
        if arr.dtype in (np.float32, np.float64):
            return arr
        # float16 computes in float32, longdouble in float64
        return arr.astype(np.float32 if arr.dtype.itemsize <= 4 else np.float64)
    if kind in "iu":
        return arr.astype(np.float64)
    if _computed_wider(arr.dtype):  # ml_dtypes (JAX): bfloat16, float8, ...
        return arr.astype(np.float32)
    raise TypeError(
        f"{rule}: argument {name!r} must hold real floating-point or integer values, "
        f"got dtype {arr.dtype} (bool, complex and object are not allowed)"
    )
