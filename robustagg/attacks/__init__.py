"""Model-poisoning attacks: functions over the (n, d) matrix of honest gradients that return a
new matrix with the Byzantine rows replaced (docs/conventions.md, "Attacks").

Every attack is ``attack(grads, f, *, <options>, rng=None)`` with ``f`` an int (the first f
rows are Byzantine) or a boolean mask of length n, and is registered by name in
``robustagg.ATTACKS``. Modules written by other contributors register themselves the same way;
:func:`._common.prepare_attack` is the one input-preparation step they all share.
"""

import importlib as _importlib

from . import classic
from .classic import *  # noqa: F403

__all__: list[str] = list(classic.__all__)

# Optional modules: imported when present, each contributing its ``__all__``.
for _name in ("adaptive", "mimic", "fang"):
    try:
        _module = _importlib.import_module(f"{__name__}.{_name}")
    except ModuleNotFoundError as _exc:  # the module is not part of this checkout
        if _exc.name != f"{__name__}.{_name}":
            raise
        continue
    globals().update({_k: getattr(_module, _k) for _k in getattr(_module, "__all__", [])})
    __all__ += list(getattr(_module, "__all__", []))
del _name
