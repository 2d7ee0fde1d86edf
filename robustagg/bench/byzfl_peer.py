"""The byzfl peer (optional): byzfl's implementation of the same rule or attack, loaded from its
aggregator and attack modules without the package's ``__init__`` (which imports its training
framework), and called on a zero-copy torch view of the matrix."""

from __future__ import annotations

import importlib.util
import os
import sys
import types
from collections.abc import Callable
from typing import Any

import numpy as np

from .inputs import LIE_Z

BYZFL_RULES: dict[str, tuple[str, Callable[[int], dict[str, Any]]]] = {
    "mean": ("Average", lambda f: {}),
    "median": ("Median", lambda f: {}),
    "trimmed_mean": ("TrMean", lambda f: {"f": f}),
    "geometric_median": ("GeometricMedian", lambda f: {}),
    "krum": ("Krum", lambda f: {"f": f}),
    "multi_krum": ("MultiKrum", lambda f: {"f": f}),
    "centered_clipping": ("CenteredClipping", lambda f: {}),
    "monna": ("MoNNA", lambda f: {"f": f}),
    "meamed": ("Meamed", lambda f: {"f": f}),
    "caf": ("CAF", lambda f: {"f": f}),
}
"""Our rule name -> (byzfl aggregator class, constructor arguments given f). byzfl's
``GeometricMedian`` runs a fixed number of smoothed Weiszfeld steps (T = 3), not to a tolerance.
byzfl's ``MDA`` and ``SMEA`` enumerate all C(n, f) subsets (about 1e10 at n = 50, f = 10), so
they are not compared."""

BYZFL_ATTACKS: dict[str, tuple[str, dict[str, Any]]] = {
    "sign_flip": ("SignFlipping", {}),
    "ipm": ("InnerProductManipulation", {"tau": 0.1}),
    "lie": ("ALittleIsEnough", {"tau": LIE_Z}),
    "mimic": ("Mimic", {"epsilon": 0}),
    "inf": ("Inf", {}),
    "gaussian": ("Gaussian", {"mu": 0.0, "sigma": 0.5}),
}
"""Our attack name -> (byzfl attack class, constructor arguments). A byzfl attack returns one
Byzantine vector computed from the honest rows; it is timed as such."""

_BYZFL: dict[str, Any] = {}


def load_byzfl() -> dict[str, Any]:
    """byzfl's ``aggregators`` and ``attacks`` modules, loaded from their files.

    The package's ``__init__`` imports its training framework (torchvision and more); the
    aggregators and attacks need only NumPy, SciPy and torch, so they are loaded directly under
    stub parent packages. Returns ``{"aggregators": module, "attacks": module, "version": str}``
    or ``{"error": reason}``.
    """
    if _BYZFL:
        return _BYZFL
    try:
        spec = importlib.util.find_spec("byzfl")
    except (ImportError, ValueError):
        spec = None
    if spec is None or not spec.submodule_search_locations:
        _BYZFL["error"] = "byzfl is not installed (pip install --no-deps byzfl)"
        return _BYZFL
    root = list(spec.submodule_search_locations)[0]
    saved = {k: v for k, v in sys.modules.items() if k == "byzfl" or k.startswith("byzfl.")}
    try:
        import torch  # noqa: F401  (byzfl's tools need it)

        def package(name: str, path: str) -> types.ModuleType:
            mod = types.ModuleType(name)
            mod.__path__ = [path]  # type: ignore[attr-defined]
            sys.modules[name] = mod
            return mod

        def load(name: str, path: str) -> types.ModuleType:
            s = importlib.util.spec_from_file_location(name, path)
            mod = importlib.util.module_from_spec(s)
            sys.modules[name] = mod
            s.loader.exec_module(mod)  # type: ignore[union-attr]
            return mod

        package("byzfl", root)
        package("byzfl.utils", os.path.join(root, "utils"))
        load("byzfl.utils.torch_tools", os.path.join(root, "utils", "torch_tools.py"))
        load("byzfl.utils.misc", os.path.join(root, "utils", "misc.py"))
        aggs_pkg = package("byzfl.aggregators", os.path.join(root, "aggregators"))
        aggs = load("byzfl.aggregators.aggregators", os.path.join(root, "aggregators", "aggregators.py"))
        pre = load("byzfl.aggregators.preaggregators", os.path.join(root, "aggregators", "preaggregators.py"))
        for mod in (aggs, pre):
            for k, v in vars(mod).items():
                if not k.startswith("_"):
                    setattr(aggs_pkg, k, v)
        package("byzfl.attacks", os.path.join(root, "attacks"))
        atks = load("byzfl.attacks.attacks", os.path.join(root, "attacks", "attacks.py"))
        try:
            from importlib.metadata import version

            ver = version("byzfl")
        except Exception:
            ver = "unknown"
        _BYZFL.update({"aggregators": aggs, "attacks": atks, "version": ver})
    except Exception as exc:  # a broken or changed byzfl must not break the benchmark
        _BYZFL["error"] = f"byzfl could not be loaded: {type(exc).__name__}: {exc}"
    finally:
        for k in [k for k in sys.modules if k == "byzfl" or k.startswith("byzfl.")]:
            del sys.modules[k]
        sys.modules.update(saved)
    return _BYZFL


def byzfl_callable(kind: str, name: str, G: np.ndarray, f: int) -> Callable[[], Any] | None:
    """A zero-argument call of byzfl's version of ``name`` on ``G`` (a torch view), or None."""
    table = BYZFL_RULES if kind == "rule" else BYZFL_ATTACKS
    if name not in table:
        return None
    mods = load_byzfl()
    if "error" in mods:
        return None
    import torch

    T = torch.from_numpy(G)  # zero-copy; byzfl casts to float32 itself
    if kind == "rule":
        cls_name, kw = table[name]
        obj = getattr(mods["aggregators"], cls_name)(**kw(f))
        return lambda: obj(T)
    cls_name, kw = table[name]
    obj = getattr(mods["attacks"], cls_name)(**kw)
    honest = T[f:]
    return lambda: obj(honest)
