"""robustagg: Byzantine-robust gradient aggregation rules and model-poisoning attacks.

Every rule is a plain function over an (n, d) matrix of client gradients (any array library
in, the same library out)::

    import robustagg
    aggregate = robustagg.signguard(grads)
    aggregate, info = robustagg.krum(grads, f=10, return_info=True)

Rules and attacks are also available by name (``robustagg.RULES``, ``robustagg.ATTACKS``).

Layout: the rules live in :mod:`robustagg.rules`, one module per family; the integrations with
Flower and Dask in :mod:`robustagg.integrations` (imported only when used).

Import cost: importing the package imports every rule module (each registers its rules), but
not the Numba kernels, SciPy or scikit-learn: those are imported when a rule that needs them is
first called (``robustagg._lazy``; docs/performance.md). ``robustagg.kernels`` is imported on
first access to the attribute (PEP 562). Numba's threading layer is still prepared at import
(``robustagg._threads``, docs/conventions.md "Threads, fork and BLAS").
"""

# First: prepare Numba's threading layer (TBB where it can be loaded), so that it is in place
# before the caller's or robustagg's first parallel Numba call
from . import (
    _threads,  # noqa: F401
    attacks,  # registers the attacks
    clustering,
    rules,  # registers the rules
)
from ._diagnostics import Diagnostics
from ._registry import (
    ATTACKS,
    PREAGGREGATORS,
    RULES,
    get_attack,
    get_rule,
    register_attack,
    register_preaggregator,
    register_rule,
)
from ._validation import TooFewClientsError
from .rules import FAMILIES as _FAMILIES
from .rules.clipping import *  # noqa: F403
from .rules.coordinatewise import *  # noqa: F403
from .rules.distance import *  # noqa: F403
from .rules.preaggregation import *  # noqa: F403
from .rules.signguard import *  # noqa: F403
from .rules.spectral import *  # noqa: F403
from .rules.subset import *  # noqa: F403
from .rules.trust import *  # noqa: F403

__version__ = "0.1.0"

__all__ = [
    "ATTACKS",
    "Diagnostics",
    "PREAGGREGATORS",
    "RULES",
    "TooFewClientsError",
    "attacks",
    "clustering",
    "get_attack",
    "get_rule",
    "register_attack",
    "register_preaggregator",
    "register_rule",
    "rules",
]
for _family in _FAMILIES:
    __all__ += _family.__all__
del _family

# Submodules that are not imported with the package, imported on first attribute access
# (``robustagg.kernels`` was bound by the package's import before the kernels became lazy)
_LAZY_SUBMODULES = ("kernels",)


def __getattr__(name: str):
    if name in _LAZY_SUBMODULES:
        import importlib

        return importlib.import_module(f"{__name__}.{name}")
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__) | set(_LAZY_SUBMODULES))
