"""Deferred imports of the heavy modules: the Numba kernels load when a rule first needs them.

``import robustagg`` imports every rule module (a rule registers itself in
``robustagg.RULES`` when its module is imported), so those modules must be cheap to import.
They do not import ``robustagg.kernels`` (compiled, or loaded from Numba's cache, as the
kernel modules are imported), SciPy or scikit-learn at module level:

* SciPy is imported inside the functions that call it (``dnc``, ``caf``, ``clipped_clustering``,
  the ``lie`` attack's default z);
* a kernel function imported by name is imported inside the function that calls it;
* the kernel package a rule module uses throughout (``kernels``: the rules use the kernels
  only through its public names) is bound to a :class:`LazyModule`: the first attribute read
  imports the module and puts it in the stand-in's place in the rule module's namespace, so every
  later call reads the module itself (no indirection after the first call).

Importing ``robustagg.kernels`` still imports ``robustagg._threads`` first, so the threading
layer is prepared before any parallel kernel; ``import robustagg`` imports ``_threads`` as
well, so it is prepared at import time, as before (docs/conventions.md, "Threads, fork and
BLAS").
"""

from __future__ import annotations

import importlib
from types import ModuleType
from typing import Any

__all__ = ["LazyModule"]


class LazyModule:
    """Stand-in for the module ``name``, bound as ``alias`` in ``namespace`` (a module's
    ``globals()``), imported at the first attribute read.

    Parameters
    ----------
    name : str
        Absolute name of the module to import (``"robustagg.kernels"``).
    namespace : dict
        The globals of the module holding the stand-in.
    alias : str
        The name under which the stand-in is bound there; the imported module replaces it.
    """

    __slots__ = ("_alias", "_name", "_namespace")

    def __init__(self, name: str, namespace: dict[str, Any], alias: str) -> None:
        self._name = name
        self._namespace = namespace
        self._alias = alias

    def _load(self) -> ModuleType:
        module = importlib.import_module(self._name)
        if self._namespace.get(self._alias) is self:
            self._namespace[self._alias] = module
        return module

    def __getattr__(self, attr: str) -> Any:
        return getattr(self._load(), attr)

    def __repr__(self) -> str:
        return f"<module {self._name!r} (not imported yet)>"
