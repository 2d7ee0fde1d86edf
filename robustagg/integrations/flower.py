"""Flower strategies that aggregate with any robustagg rule (extra ``[flower]``).

Two strategies share one core:

* :class:`RobustStrategy` -- the Message API (flwr >= 1.21): a subclass of
  ``flwr.serverapp.strategy.FedAvg`` whose ``aggregate_train`` runs a robustagg rule;
* :class:`LegacyRobustStrategy` -- the legacy API: a subclass of
  ``flwr.server.strategy.FedAvg`` whose ``aggregate_fit`` does the same.

Each round the clients' per-layer arrays are flattened into one vector per client (an
``(n, d)`` matrix, layers in the order of the global model), the rule aggregates the matrix, and
the result is cut back into layers with their keys, shapes and dtypes (:class:`ArrayLayout`).

Conventions chosen here (and why):

* **Updates, not weights** (``aggregate_on="updates"``, the default). Flower clients send their
  new weights; robust rules are defined on gradients/updates -- SignGuard's norm filter, for
  instance, means nothing on raw weights, whose norms are all about the same. The strategy
  therefore aggregates ``client weights - global weights`` and adds the aggregate to the global
  weights. ``aggregate_on="weights"`` aggregates the weights themselves, as Flower's own
  ``Krum``/``FedMedian`` do.
* **Unweighted.** The rule sees every client once; ``num-examples`` is not used to weight the
  arrays (a Byzantine client could claim any number of examples). Client metrics are averaged
  (weighted, as in FedAvg) over the *kept* clients only.
* **Malformed replies are Byzantine.** A reply is malformed when it does not carry exactly the
  global model's layers (missing or extra keys, another shape), when a layer is not made of real
  numbers (strings, bytes, objects, complex numbers, dates; booleans where the model's layer is
  not boolean), or when reading it raises (unreadable bytes, ragged nested lists). It becomes a
  row of NaN, so the rule's non-finite policy excludes it and counts it against ``f``
  (docs/conventions.md, "Flower replies"), instead of the whole round failing. Non-finite values
  in a well-formed reply are left to that same policy. Integer layers are read as numbers;
  keys may come in any order (layers are looked up by key).
* **A short round is skipped, not failed.** When the rule refuses the round's matrix -- fewer
  usable replies than its bound on n and f allows (``krum`` needs n >= 2f + 3), or no usable
  reply at all -- the strategy keeps the global arrays (``aggregate_train`` / ``aggregate_fit``
  return ``None`` arrays), reports ``robustagg-skipped = 1`` in the metrics and logs the reason
  on the ``robustagg.flower`` logger. That is the rule's :class:`robustagg.TooFewClientsError`;
  any other error (a bad option, say) still fails the round. ``f`` itself is checked when the
  strategy is built.
* **Diagnostics as metrics.** The round's train metrics carry ``robustagg-clients`` (n),
  ``robustagg-kept`` (how many clients the rule kept), ``robustagg-kept-indices`` (their
  positions among the round's replies), ``robustagg-nonfinite`` (non-finite rows, malformed
  ones included), ``robustagg-malformed``, ``robustagg-malformed-indices`` and
  ``robustagg-skipped``. The full :class:`~robustagg.Diagnostics` of every round, with the node
  ids, why each malformed reply was refused and why a skipped round was skipped, is kept in
  ``strategy.history``.
* **Pickling.** The strategies and :class:`RobustAggregator` pickle whenever their rule does:
  every registered rule and every composition ``get_rule`` builds (``"nnm+krum"``) does.

Example
-------
>>> from robustagg.flower import RobustStrategy                      # doctest: +SKIP
>>> strategy = RobustStrategy("multi_krum", f=2, min_train_nodes=10,  # doctest: +SKIP
...                           min_available_nodes=10)
>>> result = strategy.start(grid=grid, initial_arrays=arrays, num_rounds=5)  # doctest: +SKIP
"""

from __future__ import annotations

try:
    import flwr  # noqa: F401
except ImportError as exc:  # pragma: no cover - exercised only without the extra
    raise ImportError(
        "robustagg.flower needs Flower: pip install 'robustagg[flower]' (flwr >= 1.21)"
    ) from exc

# The parts: the array layout and the reading of a reply (_flower_layout), the framework-free core
# and a round's report (_flower_core), the Message-API strategy (_flower_message), the legacy one
# (_flower_legacy).
from ._flower_core import AGGREGATE_ON, RobustAggregator, logger  # noqa: F401 - attributes it always had
from ._flower_layout import ArrayLayout
from ._flower_legacy import LegacyRobustStrategy
from ._flower_message import RobustStrategy

__all__ = ["ArrayLayout", "LegacyRobustStrategy", "RobustAggregator", "RobustStrategy"]

# The classes are pickled and documented under this module's name (the one users import), not
# under the private modules that define them: a pickle then survives a reorganisation of the parts
for _cls in (ArrayLayout, LegacyRobustStrategy, RobustAggregator, RobustStrategy):
    _cls.__module__ = __name__
del _cls
