"""The model's array layout and the reading of a client's reply (:mod:`robustagg.integrations.flower`).

:class:`ArrayLayout` flattens a model's per-layer arrays into one vector and cuts a vector back
into layers; :func:`read_layers` reads one reply against a layout, and says why the reply is
malformed when it is (docs/conventions.md, "Flower replies"); :func:`reply_layout` is the layout
of a reply, used when the round has no global arrays to fix it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from flwr.app import Array, ArrayRecord

__all__ = ["ArrayLayout", "read_layers", "reply_layout"]


@dataclass(frozen=True)
class ArrayLayout:
    """The keys, shapes and dtypes of a model's arrays, to flatten and restore them.

    Attributes
    ----------
    keys : tuple of str
        Layer names in order (``"0"``, ``"1"``, ... for a plain list of arrays).
    shapes : tuple of tuple of int
        Each layer's shape.
    dtypes : tuple of numpy.dtype
        Each layer's dtype.
    """

    keys: tuple[str, ...]
    shapes: tuple[tuple[int, ...], ...]
    dtypes: tuple[np.dtype, ...]

    @classmethod
    def of(cls, arrays: Mapping[str, Any] | Sequence[Any]) -> ArrayLayout:
        """The layout of a dict of arrays (keys kept) or of a list of arrays (keys "0", "1", ...)."""
        items = _items(arrays)
        return cls(
            keys=tuple(k for k, _ in items),
            shapes=tuple(tuple(int(s) for s in np.shape(a)) for _, a in items),
            dtypes=tuple(np.asarray(a).dtype for _, a in items),
        )

    @property
    def sizes(self) -> tuple[int, ...]:
        return tuple(int(np.prod(s, dtype=np.int64)) for s in self.shapes)

    @property
    def size(self) -> int:
        """Total number of values d."""
        return int(sum(self.sizes))

    @property
    def float_dtype(self) -> np.dtype:
        """The dtype of the flat vector: float32 when every layer fits it, float64 otherwise."""
        if not self.dtypes:
            return np.dtype(np.float64)
        dtype = np.result_type(np.float32, *self.dtypes)
        return dtype if dtype == np.float32 else np.dtype(np.float64)

    def matches(self, arrays: Mapping[str, Any] | Sequence[Any]) -> bool:
        """Whether ``arrays`` has the same keys and shapes (dtypes may differ)."""
        items = _items(arrays)
        return (
            tuple(k for k, _ in items) == self.keys
            and tuple(tuple(int(s) for s in np.shape(a)) for _, a in items) == self.shapes
        )

    def flatten(self, arrays: Mapping[str, Any] | Sequence[Any], out: np.ndarray | None = None) -> np.ndarray:
        """Concatenate the layers (in this layout's order) into one vector of ``float_dtype``."""
        if not self.matches(arrays):
            raise ValueError(
                f"arrays do not match the model layout: got keys/shapes "
                f"{[(k, np.shape(a)) for k, a in _items(arrays)][:5]}, expected "
                f"{list(zip(self.keys, self.shapes, strict=True))[:5]}"
            )
        if out is None:
            out = np.empty(self.size, dtype=self.float_dtype)
        pos = 0
        for (_, a), size in zip(_items(arrays), self.sizes, strict=True):
            out[pos : pos + size] = np.asarray(a).reshape(-1)
            pos += size
        return out

    def unflatten(self, vector: np.ndarray) -> dict[str, np.ndarray]:
        """Cut a flat vector back into layers with this layout's keys, shapes and dtypes.

        Integer layers are rounded to the nearest integer, boolean layers thresholded at 0.5.
        """
        vector = np.asarray(vector)
        if vector.shape != (self.size,):
            raise ValueError(f"a vector of shape ({self.size},) is needed, got {vector.shape}")
        out: dict[str, np.ndarray] = {}
        pos = 0
        for key, shape, dtype, size in zip(self.keys, self.shapes, self.dtypes, self.sizes, strict=True):
            part = vector[pos : pos + size].reshape(shape)
            pos += size
            if dtype.kind == "b":
                out[key] = part >= 0.5
            elif dtype.kind in "iu":
                out[key] = np.rint(part).astype(dtype)
            else:
                out[key] = part.astype(dtype)
        return out


def _items(arrays: Mapping[str, Any] | Sequence[Any]) -> list[tuple[str, Any]]:
    if isinstance(arrays, ArrayRecord):
        return [(k, v.numpy()) for k, v in arrays.items()]
    if isinstance(arrays, Mapping):
        return [(str(k), v.numpy() if isinstance(v, Array) else v) for k, v in arrays.items()]
    return [(str(i), a) for i, a in enumerate(arrays)]


# dtype kinds a reply's layer may have: real numbers (booleans only where the model's layer is one)
_REAL_KINDS = "fiu"


def read_layers(
    layout: ArrayLayout, arrays: Mapping[str, Any] | Sequence[Any] | None
) -> tuple[list[np.ndarray] | None, str | None]:
    """A reply's layers in the layout's order, or ``(None, why the reply is malformed)``.

    Never raises: whatever a client sent, the answer is its layers or a reason.
    """
    if arrays is None:
        return None, "no arrays (not exactly one ArrayRecord, or unreadable parameters)"
    try:
        if isinstance(arrays, Mapping):
            by_key = {str(k): v for k, v in arrays.items()}
            if len(by_key) != len(arrays):
                return None, "two keys with the same name"
        elif isinstance(arrays, (str, bytes)) or not isinstance(arrays, Sequence):
            return None, f"a {type(arrays).__name__}, not a dict or list of arrays"
        else:
            by_key = {str(i): a for i, a in enumerate(arrays)}
        if by_key.keys() != set(layout.keys):
            missing = [k for k in layout.keys if k not in by_key]
            extra = [k for k in by_key if k not in set(layout.keys)]
            return None, f"missing layers {missing[:5]}, unexpected layers {extra[:5]}"
        layers = []
        for key, shape, dtype in zip(layout.keys, layout.shapes, layout.dtypes, strict=True):
            value = by_key[key]
            a = value.numpy() if isinstance(value, Array) else np.asarray(value)
            if not (a.dtype.kind in _REAL_KINDS or (a.dtype.kind == "b" and dtype.kind == "b")):
                return None, f"layer {key!r} has dtype {a.dtype}, the model's layer is {dtype}"
            if a.shape != shape:
                return None, f"layer {key!r} has shape {a.shape}, the model's layer has {shape}"
            layers.append(a)
    except Exception as exc:  # unreadable bytes, ragged nested lists, anything a client can send
        return None, f"unreadable ({type(exc).__name__}: {exc})"
    return layers, None


def reply_layout(arrays: Mapping[str, Any] | Sequence[Any] | None) -> ArrayLayout | None:
    """The layout of a reply made of real-number layers, or None."""
    if arrays is None:
        return None
    try:
        layout = ArrayLayout.of(arrays)
    except Exception:  # unreadable: malformed, whatever it is
        return None
    if not all(dt.kind in _REAL_KINDS or dt.kind == "b" for dt in layout.dtypes):
        return None
    return layout
