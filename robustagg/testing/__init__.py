"""Public testing toolkit: hypothesis strategies, property checks and naive reference
implementations (needs ``hypothesis``).

Test your own aggregation rule in a few lines::

    from robustagg.testing import check_rule
    check_rule(my_rule, f=2)                        # raises PropertyFailure listing what broke
    check_rule(my_median, f=2, coordinatewise=True)

* :mod:`robustagg.testing.strategies` -- hypothesis strategies: honest gradient matrices,
  Byzantine scenarios (attack × f × placement), adversarial rows (NaN, ±Inf, huge, tiny, zeros,
  duplicates);
* :mod:`robustagg.testing.properties` -- :func:`check_rule` and the single property checks;
* ``naive_*`` -- slow, obviously-correct reference implementations of the rules and attacks
  (test oracles), from :mod:`.naive_attacks` and, when present, :mod:`.naive_rules`,
  :mod:`.naive_signguard` and :mod:`.naive_field`.
"""

import importlib as _importlib

try:
    import hypothesis as _hypothesis  # noqa: F401
except ImportError as _exc:  # pragma: no cover - depends on the installation
    raise ImportError(
        "robustagg.testing needs the 'hypothesis' package: pip install hypothesis "
        "(or pip install 'robustagg[test]')"
    ) from _exc

from . import naive_attacks, properties, strategies
from .naive_attacks import *  # noqa: F403
from .properties import *  # noqa: F403

__all__: list[str] = ["naive_attacks", "properties", "strategies"]
__all__ += properties.__all__
__all__ += naive_attacks.__all__

# Reference implementations written beside this toolkit, re-exported when present.
for _name in ("naive_rules", "naive_signguard", "naive_field"):
    try:
        _module = _importlib.import_module(f"{__name__}.{_name}")
    except ModuleNotFoundError as _err:
        if _err.name != f"{__name__}.{_name}":
            raise
        continue
    globals().update({_k: getattr(_module, _k) for _k in getattr(_module, "__all__", [])})
    for _k in (_name, *getattr(_module, "__all__", [])):
        if _k not in __all__:
            __all__.append(_k)
del _name
