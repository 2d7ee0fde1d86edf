"""The one diagnostics mechanism shared by every rule: :class:`Diagnostics`.

Every public rule takes ``return_info=False``; with ``return_info=True`` it returns
``(aggregate, info)`` where ``info`` is a :class:`Diagnostics`. It always carries

* ``rule`` -- the rule's name,
* ``kept`` -- a boolean mask over the n input rows: the rows that contributed to the output
  (for coordinate-wise rules every finite row),
* ``nonfinite`` -- a boolean mask over the n rows that held NaN/±Inf and were excluded,

plus rule-specific quantities (scores, norms, features, labels, bandwidth, ...) reachable as
attributes or items: ``info.scores`` or ``info["scores"]``. Arrays in diagnostics are NumPy
arrays whatever the input library was (they are small: O(n) or O(n²)).
"""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = ["Diagnostics"]


class Diagnostics:
    """What a rule decided and why.

    Attributes
    ----------
    rule : str
        The rule's name.
    kept : numpy.ndarray of bool, shape (n,)
        Rows that contributed to the aggregate.
    nonfinite : numpy.ndarray of bool, shape (n,)
        Rows excluded because they held NaN or ±Inf.
    details : dict
        Rule-specific quantities; each is also available as an attribute.
    """

    __slots__ = ("rule", "kept", "nonfinite", "details")

    def __init__(self, rule: str, kept: np.ndarray, nonfinite: np.ndarray, **details: Any) -> None:
        self.rule = rule
        self.kept = np.asarray(kept, dtype=bool)
        self.nonfinite = np.asarray(nonfinite, dtype=bool)
        self.details = dict(details)

    def __getattr__(self, name: str) -> Any:
        try:
            return object.__getattribute__(self, "details")[name]
        except KeyError:
            raise AttributeError(
                f"{self.rule} diagnostics have no {name!r}; available: "
                f"{', '.join(['kept', 'nonfinite', *self.details])}"
            ) from None

    def __getitem__(self, name: str) -> Any:
        if name in ("rule", "kept", "nonfinite"):
            return getattr(self, name)
        return self.details[name]

    def __contains__(self, name: str) -> bool:
        return name in ("rule", "kept", "nonfinite") or name in self.details

    def keys(self) -> list[str]:
        return ["rule", "kept", "nonfinite", *self.details]

    def as_dict(self) -> dict[str, Any]:
        """All fields as one plain dict."""
        return {"rule": self.rule, "kept": self.kept, "nonfinite": self.nonfinite, **self.details}

    @property
    def n_kept(self) -> int:
        """How many rows were kept."""
        return int(self.kept.sum())

    def kept_rate(self, byzantine: np.ndarray) -> tuple[float, float]:
        """Fraction of honest and of Byzantine rows kept, given a boolean Byzantine mask.

        Returns ``(honest_kept_rate, malicious_kept_rate)``; a rate is NaN when its group is
        empty.
        """
        byzantine = np.asarray(byzantine, dtype=bool)
        honest = ~byzantine
        h = float(self.kept[honest].mean()) if honest.any() else float("nan")
        m = float(self.kept[byzantine].mean()) if byzantine.any() else float("nan")
        return h, m

    def __repr__(self) -> str:
        extra = ", ".join(self.details)
        return (
            f"Diagnostics(rule={self.rule!r}, kept={self.n_kept}/{self.kept.size}, "
            f"nonfinite={int(self.nonfinite.sum())}" + (f", details=[{extra}])" if extra else ")")
        )
