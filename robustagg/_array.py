"""The one array-conversion layer: any array library in, NumPy inside, the same library out.

Every public rule and attack calls :func:`to_numpy` on its input and :func:`ArrayContext.wrap`
on its result. Kernels only ever see NumPy arrays.

Conventions (SPEC §1):

* NumPy arrays are used as they are (no copy), read-only and non-contiguous ones included.
* Other array-API arrays (PyTorch, JAX, CuPy, ...) are viewed through DLPack when they live on
  the CPU (no copy) and copied to the host otherwise. The result goes back to the caller's
  library and device.
* A sequence of n 1-D arrays is stacked into an (n, d) matrix (the only case that copies);
  the result is of the first element's library.
* float32 and float64 are kept; integer input computes in float64; float16 (and the ml_dtypes
  bfloat16/float8 types JAX uses) compute in float32; bool, complex and object input is a
  ``TypeError``.
* JAX: concrete arrays only. A tracer (inside ``jax.jit``/``vmap``/``grad``) is a ``TypeError``
  that says so, since the kernels are compiled NumPy code.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = ["ArrayContext", "to_numpy"]


@dataclass(frozen=True)
class ArrayContext:
    """Where an input came from, so that results can be sent back there."""

    kind: str  # "numpy", "torch", "array_api"
    namespace: Any = None
    device: Any = None
    dtype: Any = None  # the caller's float dtype object (torch.float32, jnp.float32, ...)

    def wrap(self, result: np.ndarray) -> Any:
        """Convert a NumPy result back to the caller's array library and device."""
        if self.kind == "numpy":
            return result
        if self.kind == "torch":
            import torch

            out = torch.from_numpy(np.ascontiguousarray(result))
            if self.device is not None and str(self.device) != "cpu":
                out = out.to(self.device)
            return out
        xp = self.namespace
        try:
            return xp.asarray(result, device=self.device)
        except TypeError:  # namespaces whose asarray has no device argument
            return xp.asarray(result)


_NUMPY_CONTEXT = ArrayContext("numpy")


def _is_torch(x: Any) -> bool:
    return type(x).__module__.startswith("torch") and hasattr(x, "detach")


def _is_jax_tracer(x: Any) -> bool:
    return type(x).__module__.startswith("jax") and "Tracer" in type(x).__name__


def _single_to_numpy(x: Any) -> tuple[np.ndarray, ArrayContext]:
    """One array of any library as a NumPy array (a view when possible) and its context."""
    if isinstance(x, np.ndarray):
        return x, _NUMPY_CONTEXT
    if isinstance(x, np.generic):
        return np.asarray(x), _NUMPY_CONTEXT
    if _is_torch(x):
        t = x.detach()
        ctx = ArrayContext("torch", device=t.device, dtype=t.dtype)
        if t.device.type != "cpu":
            t = t.cpu()
        if t.is_conj():
            t = t.resolve_conj()
        if t.is_neg():
            t = t.resolve_neg()
        try:
            return np.from_dlpack(t), ctx
        except (BufferError, RuntimeError, TypeError):
            return t.numpy(), ctx
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


def to_numpy(x: Any, *, rule: str, name: str = "grads", ndim: int = 2) -> tuple[np.ndarray, ArrayContext]:
    """Return ``x`` as a float32/float64 NumPy array of ``ndim`` dimensions and its context.

    No copy is made for float NumPy (or CPU DLPack) input; the returned array may be a
    read-only view of the caller's memory and must never be written to.

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
        for i, row in enumerate(x):
            arr, c = _single_to_numpy(row) if not isinstance(row, (list, tuple)) else (np.asarray(row), _NUMPY_CONTEXT)
            if ctx is None:
                ctx = c
            if arr.ndim != 1:
                raise ValueError(
                    f"{rule}: argument {name!r} as a sequence must hold 1-D arrays, "
                    f"row {i} has shape {arr.shape}"
                )
            rows.append(arr)
        lengths = {r.shape[0] for r in rows}
        if len(lengths) > 1:
            raise ValueError(
                f"{rule}: argument {name!r} has ragged rows: lengths {sorted(lengths)[:5]}; "
                "all rows must have the same length d"
            )
        arr = np.stack([_check_dtype(r, rule, name) for r in rows])
        return arr, ctx  # type: ignore[return-value]
    try:
        arr, ctx = _single_to_numpy(x)
    except ValueError as exc:  # NumPy refuses ragged nested lists
        raise ValueError(f"{rule}: argument {name!r} could not be read as an array ({exc})") from None
    arr = _check_dtype(arr, rule, name)
    if arr.ndim != ndim:
        what = "(n, d) matrix" if ndim == 2 else f"{ndim}-D array"
        raise ValueError(f"{rule}: argument {name!r} must be a {what}, got an array of shape {arr.shape}")
    return arr, ctx


def _check_dtype(arr: np.ndarray, rule: str, name: str) -> np.ndarray:
    kind = arr.dtype.kind
    if kind == "f":
        if arr.dtype in (np.float32, np.float64):
            return arr
        # float16 computes in float32, longdouble in float64
        return arr.astype(np.float32 if arr.dtype == np.float16 else np.float64)
    if kind in "iu":
        return arr.astype(np.float64)
    if kind == "V" and arr.dtype.name.startswith(("bfloat16", "float8")):  # ml_dtypes (JAX)
        return arr.astype(np.float32)
    raise TypeError(
        f"{rule}: argument {name!r} must hold real floating-point or integer values, "
        f"got dtype {arr.dtype} (bool, complex and object are not allowed)"
    )
