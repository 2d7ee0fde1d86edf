"""The aggregation rules, one module per family; importing a module registers its rules.

=========================  ===================================================================
module                     rules
=========================  ===================================================================
``coordinatewise``         mean, median, trimmed_mean, meamed
``distance``               krum, multi_krum, bulyan, geometric_median
``subset``                 mda, monna, caf, smea
``spectral``               dnc
``signguard``              signguard, signguard_sim, signguard_dist, :class:`SignGuard`
``clipping``               centered_clipping, :class:`CenteredClipping`, clipped_clustering
``trust``                  fltrust
``preaggregation``         the pre-aggregators clipping, nnm, bucketing, arc, and
                           :func:`pipeline` (pre-aggregators composed with a rule)
=========================  ===================================================================

Users call the rules from the top level (``robustagg.signguard(grads)``) or by name
(``robustagg.get_rule("Multi-Krum", f=4)``); the modules are where each family's code and
documentation live. This package binds its submodules only (never the rule functions), so
``robustagg.rules.signguard`` is the module and ``robustagg.signguard`` the function.
"""

# the import order is the registry's order, which the tables keep
from . import clipping, coordinatewise, distance, trust  # isort: skip
from . import preaggregation, signguard, spectral, subset  # isort: skip

FAMILIES = (coordinatewise, distance, subset, spectral, signguard, clipping, trust, preaggregation)
"""The rule modules, in the order of the table above."""

__all__ = ["FAMILIES", *(m.__name__.rsplit(".", 1)[1] for m in FAMILIES)]
