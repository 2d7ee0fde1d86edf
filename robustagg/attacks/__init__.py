"""Model-poisoning attacks: functions over the (n, d) matrix of honest gradients that return a
new matrix with the Byzantine rows replaced (SPEC §4)."""

__all__: list[str] = []
