"""The federated training loop: n clients, f Byzantine, any rule, any attack.

One round (the paper's Algorithm 1, one local iteration):

1. every client draws a minibatch of its shard and computes its gradient at the shared model --
   all clients at once (:meth:`~robustagg.training.models._Model.client_gradients`); under the
   ``label_flip`` data attack the Byzantine clients first map each label ``l`` to ``C - 1 - l``;
2. the attacker, who is omniscient, replaces the Byzantine rows: the attack function receives
   the ``(n, d)`` matrix of every client's honest gradient and ``f`` (see below);
3. the server aggregates the ``n`` rows with the rule (``return_info=True``: the diagnostics'
   ``kept`` mask gives the honest and malicious kept rates) and takes an SGD step with
   momentum 0.9 and weight decay 5e-4 applied to the aggregate, as ``torch.optim.SGD`` does in
   the paper's code: ``v ← μ v + (g̃ + λ x)``, ``x ← x − η v``.

The Byzantine clients sit at positions drawn with the seed (not the first rows, so that rules
that break ties by index are not favoured); the attack functions receive them as a boolean mask
(``attack(grads, f=mask, rng=...)``, the library's attack convention). Rules are told the true ``f`` (the paper favours the classical defenses this
way); SignGuard does not use it.

An *epoch* is ``ceil(mean shard size / batch_size)`` rounds; every epoch each client reshuffles
its shard. The time-varying attack draws a fresh attack (``"none"`` included) every epoch.

Seeds: one ``seed`` drives everything through independent streams (partition, Byzantine
positions, model initialisation, minibatches, attack, rule, time-varying draws), so runs that
differ only in their rule or attack share the data split, the Byzantine positions and the
initial model.
"""

from __future__ import annotations

import inspect
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from .._registry import call_with_supported, get_attack, get_rule
from .._validation import nonfinite_mask
from .data import Dataset
from .models import make_model
from .partition import partition, partition_label

__all__ = [
    "DATA_ATTACKS",
    "TIME_VARYING_POOL",
    "FederatedConfig",
    "FederatedResult",
    "run_federated",
    "sign_fractions",
]

#: attacks handled by the trainer itself rather than the attack registry
DATA_ATTACKS = ("none", "label_flip", "time_varying")

#: the attacks the time-varying adversary draws from each epoch (the paper's Table I, incl. none)
TIME_VARYING_POOL = (
    "none",
    "gaussian",
    "noise",
    "label_flip",
    "byzmean",
    "sign_flip",
    "lie",
    "min_max",
    "min_sum",
)

#: default options of the attacks in the experiments (the paper's Section V-B)
DEFAULT_ATTACK_KWARGS: dict[str, dict[str, Any]] = {"lie": {"z": 0.3}, "byzmean": {"z": 0.3}}


@dataclass
class FederatedConfig:
    """Everything that defines one training run.

    Attributes
    ----------
    n_clients : int, default 50
    byzantine_fraction : float, default 0.2
        ``f = round(byzantine_fraction * n_clients)`` clients are Byzantine.
    rule : str or callable, default "mean"
        A name of ``robustagg.RULES`` or a function with the library's rule signature.
    rule_kwargs : dict
        Extra options of the rule (passed only where its signature accepts them).
    attack : str or callable, default "none"
        ``"none"``, ``"label_flip"`` (data attack), ``"time_varying"`` (a fresh attack from
        ``time_varying_pool`` every epoch), a name of ``robustagg.ATTACKS``, or a function
        ``attack(grads, f, rng=...)`` returning the attacked matrix.
    attack_kwargs : dict
        Extra options of the attack; default ``z = 0.3`` for LIE (and ByzMean's LIE part).
    time_varying_pool : sequence of str
    model : {"mlp", "logreg"}, default "mlp"
    hidden : int, default 64
        Hidden width of the MLP.
    lr : float, default 0.05
    batch_size : int, default 32
        Per-client minibatch (a client with a smaller shard uses its whole shard).
    epochs : int, default 60
    momentum : float, default 0.9
    weight_decay : float, default 5e-4
    partition : {"iid", "noniid"}, default "iid"
    s : float, default 0.5
        IID fraction of the non-IID partition.
    seed : int, default 0
    rule_knows_f : bool, default True
        Pass the true ``f`` to rules that take it (else ``f = 0``).
    record_signs : bool, default False
        Record the sign statistics of honest and malicious gradients each round (Fig. 2): three
        passes over the gradients and, in rounds without attack, a coordinate-wise standard
        deviation, so only when asked.
    eval_every : int or None, default None
        Evaluate the test accuracy every this many rounds; ``None``: once an epoch. The model
        is also evaluated before the first round and after the last, and ``best_accuracy`` is
        the best of these evaluations.
    root_size : int, default 100
        For rules that take the server's ``root_gradient`` (FLTrust): the server holds this
        many training samples, drawn once by the seed, and computes the gradient of the current
        model on them every round (FLTrust's clean root dataset; the samples are also part of
        the clients' data, as when the server collects a small sample of the population).
    """

    n_clients: int = 50
    byzantine_fraction: float = 0.2
    rule: Any = "mean"
    rule_kwargs: dict = field(default_factory=dict)
    attack: Any = "none"
    attack_kwargs: dict = field(default_factory=dict)
    time_varying_pool: Sequence[str] = TIME_VARYING_POOL
    model: str = "mlp"
    hidden: int = 64
    lr: float = 0.05
    batch_size: int = 32
    epochs: int = 60
    momentum: float = 0.9
    weight_decay: float = 5e-4
    partition: str = "iid"
    s: float = 0.5
    seed: int = 0
    rule_knows_f: bool = True
    record_signs: bool = False
    eval_every: int | None = None
    root_size: int = 100

    @property
    def n_byzantine(self) -> int:
        return int(round(self.byzantine_fraction * self.n_clients))

    def validate(self) -> None:
        """Raise ``ValueError`` for settings that cannot run."""
        if isinstance(self.n_clients, bool) or int(self.n_clients) != self.n_clients or self.n_clients < 1:
            raise ValueError(f"n_clients must be a positive integer, got {self.n_clients!r}")
        if not 0.0 <= float(self.byzantine_fraction) < 1.0:
            raise ValueError(f"byzantine_fraction must be in [0, 1), got {self.byzantine_fraction}")
        for name in ("batch_size", "epochs", "hidden", "eval_every", "root_size"):
            v = getattr(self, name)
            if name == "eval_every" and v is None:
                continue
            if isinstance(v, bool) or int(v) != v or v < 1:
                raise ValueError(f"{name} must be a positive integer, got {v!r}")
        if not (float(self.lr) > 0 and math.isfinite(self.lr)):
            raise ValueError(f"lr must be a positive number, got {self.lr}")
        if not 0.0 <= float(self.momentum) < 1.0:
            raise ValueError(f"momentum must be in [0, 1), got {self.momentum}")
        if float(self.weight_decay) < 0:
            raise ValueError(f"weight_decay must be >= 0, got {self.weight_decay}")
        if self.partition not in ("iid", "noniid"):
            raise ValueError(f"partition must be 'iid' or 'noniid', got {self.partition!r}")
        if self.model not in ("mlp", "logreg"):
            raise ValueError(f"model must be 'mlp' or 'logreg', got {self.model!r}")
        if self.n_byzantine >= self.n_clients:
            raise ValueError("at least one client must be honest")
        # names must resolve (a clear error before any work)
        if not callable(self.rule):
            get_rule(self.rule)
        attacks = list(self.time_varying_pool) if self.attack == "time_varying" else [self.attack]
        for a in attacks:
            if not callable(a) and a not in DATA_ATTACKS:
                get_attack(a)


@dataclass
class FederatedResult:
    """What a run produced.

    Attributes
    ----------
    config : FederatedConfig
    history : dict of ndarray
        Per evaluated round: ``round``, ``epoch``, ``accuracy`` (test), ``test_loss``; per round:
        ``train_loss`` (honest clients' minibatch loss), ``honest_kept``, ``malicious_kept``
        (fraction of honest / Byzantine rows the rule kept), ``attack`` (index into
        ``attack_names``), and with ``record_signs`` the sign fractions ``honest_signs``,
        ``malicious_signs`` and ``lie_signs`` (rows: rounds; columns: positive, zero, negative),
        the last being the virtual LIE gradient μ − 0.3σ of the honest gradients, recorded in
        rounds without attack (the paper's Fig. 2); NaN where not applicable.
    summary : dict
        ``best_accuracy``, ``final_accuracy``, ``honest_kept_rate``, ``malicious_kept_rate``
        (averages over rounds), ``diverged``, ``seconds``, ``rounds``, ``d``, ``f``, ...
    attack_names : list of str
    byzantine : ndarray of bool, shape (n_clients,)
    theta : ndarray, shape (d,)
        The final parameters (the last finite ones if training diverged).
    """

    config: FederatedConfig
    history: dict[str, np.ndarray]
    summary: dict[str, Any]
    attack_names: list[str]
    byzantine: np.ndarray
    theta: np.ndarray | None = None

    def to_dict(self, *, history: bool = True) -> dict[str, Any]:
        """A JSON-serialisable dict (NaN as ``None``)."""
        cfg = asdict(self.config)
        for k in ("rule", "attack"):
            if callable(cfg[k]):
                cfg[k] = getattr(cfg[k], "__name__", repr(cfg[k]))
        cfg["time_varying_pool"] = list(cfg["time_varying_pool"])
        out: dict[str, Any] = {
            "config": cfg,
            "summary": _jsonable(self.summary),
            "attack_names": list(self.attack_names),
            "byzantine": np.flatnonzero(self.byzantine).tolist(),
        }
        if history:
            out["history"] = {k: _jsonable(v) for k, v in self.history.items()}
        return out


def _jsonable(x: Any) -> Any:
    if isinstance(x, dict):
        return {k: _jsonable(v) for k, v in x.items()}
    if isinstance(x, np.ndarray):
        x = x.tolist()
    if isinstance(x, (list, tuple)):
        return [_jsonable(v) for v in x]
    if isinstance(x, (np.floating, float)):
        x = float(x)
        return None if not math.isfinite(x) else round(x, 6)
    if isinstance(x, np.integer):
        return int(x)
    if isinstance(x, np.bool_):
        return bool(x)
    return x


def sign_fractions(G: np.ndarray) -> np.ndarray:
    """Fractions of positive, zero and negative entries of each row: an (n, 3) array."""
    G = np.atleast_2d(G)
    d = G.shape[1]
    pos = np.count_nonzero(G > 0, axis=1)
    neg = np.count_nonzero(G < 0, axis=1)
    return np.stack([pos, d - pos - neg, neg], axis=1) / d


# ----------------------------------------------------------------------------------------------
# rule and attack adapters


def _accepts(fn: Callable, name: str) -> bool:
    try:
        params = inspect.signature(fn).parameters
    except (TypeError, ValueError):
        return False
    return name in params or any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())


_SIGNGUARD_VARIANTS = {"signguard": "plain", "signguard_sim": "sim", "signguard_dist": "dist"}


def _stateful_signguard(name: Any, kwargs: dict, rng: np.random.Generator) -> Callable[..., Any] | None:
    """The SignGuard module's stateful wrapper for a SignGuard rule name, if it is installed."""
    if not isinstance(name, str) or name not in _SIGNGUARD_VARIANTS:
        return None
    try:
        from .. import SignGuard
    except ImportError:
        return None
    return SignGuard(_SIGNGUARD_VARIANTS[name], rng=rng, **kwargs)


class _RuleRunner:
    """Calls a rule each round with ``f``, its ``rng``, options and (Sim/Dist) the reference.

    The SignGuard rules run through :class:`robustagg.SignGuard`, the stateful wrapper
    that keeps the rng and, for SignGuard-Sim/-Dist, the previous round's aggregate as the
    reference of the similarity feature. Any other rule that takes a ``reference`` argument
    receives the previous aggregate the same way (``None`` in the first round: the rule then
    uses its stateless fallback).
    """

    def __init__(self, rule: Any, kwargs: dict, f: int, rng: np.random.Generator, dtype=np.float64) -> None:
        self.fn = get_rule(rule)
        self.dtype = np.dtype(dtype)
        self.name = rule if isinstance(rule, str) else getattr(rule, "__name__", "rule")
        self.kwargs = dict(kwargs)
        self.f = f
        self.rng = rng
        self.reference: np.ndarray | None = None
        self.stateful = _stateful_signguard(rule, self.kwargs, rng)
        self.uses_reference = self.stateful is None and _accepts(self.fn, "reference")
        self.root_gradient: Callable[[np.ndarray], np.ndarray] | None = None

    def __call__(self, G: np.ndarray, theta: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        if self.stateful is not None:  # SignGuard's own wrapper keeps the reference and the rng
            out = self.stateful(G, return_info=True)
        else:
            kwargs = dict(self.kwargs)
            if self.uses_reference:
                kwargs["reference"] = self.reference
            if self.root_gradient is not None and theta is not None:
                kwargs["root_gradient"] = self.root_gradient(theta)
            out = call_with_supported(self.fn, G, f=self.f, rng=self.rng, return_info=True, **kwargs)
        if isinstance(out, tuple) and len(out) == 2:
            agg, info = out
            kept = np.asarray(getattr(info, "kept", np.ones(G.shape[0], dtype=bool)), dtype=bool)
        else:  # a user rule without diagnostics: count every row as kept
            agg, kept = out, np.ones(G.shape[0], dtype=bool)
        agg = np.asarray(agg, dtype=self.dtype)
        if self.uses_reference and np.all(np.isfinite(agg)):
            self.reference = agg.copy()
        return agg, kept


def _call_attack(name: Any, G: np.ndarray, byzantine: np.ndarray, kwargs: dict, rng) -> np.ndarray:
    """Apply a registry attack (or an attack function) with the Byzantine rows given as a mask."""
    fn = get_attack(name)
    opts = dict(DEFAULT_ATTACK_KWARGS.get(name, {})) if isinstance(name, str) else {}
    opts.update(kwargs)
    attacked = np.asarray(call_with_supported(fn, G, f=byzantine, rng=rng, **opts))
    if attacked.shape != G.shape:
        raise ValueError(f"attack {name!r} returned shape {attacked.shape}, expected {G.shape}")
    return attacked


# ----------------------------------------------------------------------------------------------
# the loop


class _Batcher:
    """Per-client minibatches for all clients at once (a reshuffle per epoch, no client loop)."""

    def __init__(self, parts: list[np.ndarray], batch_size: int, rng: np.random.Generator) -> None:
        n = len(parts)
        self.counts = np.array([p.size for p in parts], dtype=np.int64)
        width = int(self.counts.max())
        self.index = np.zeros((n, width), dtype=np.int64)
        self.pad = np.arange(width)[None, :] >= self.counts[:, None]
        for c, p in enumerate(parts):  # once, at set-up
            self.index[c, : p.size] = p
        self.batch = int(batch_size)
        self.rng = rng
        self.rounds_per_epoch = max(1, math.ceil(float(self.counts.mean()) / self.batch))
        self.weights = (np.arange(self.batch)[None, :] < np.minimum(self.counts, self.batch)[:, None]).astype(
            float
        )
        self.perm = self.index

    def new_epoch(self) -> None:
        keys = self.rng.random(self.index.shape)
        keys[self.pad] = 2.0  # padding sorts last
        self.perm = np.take_along_axis(self.index, np.argsort(keys, axis=1), axis=1)

    def batch_indices(self, r: int) -> np.ndarray:
        pos = (r * self.batch + np.arange(self.batch))[None, :] % self.counts[:, None]
        return np.take_along_axis(self.perm, pos, axis=1)


class _Streams:
    """The run's independent random streams, all from one seed (the order of the spawn is fixed)."""

    def __init__(self, seed: int) -> None:
        ss = np.random.SeedSequence(int(seed))
        (
            self.partition,
            self.byzantine,
            self.init,
            self.batch,
            self.attack,
            self.rule,
            self.time_varying,
            self.root,
        ) = (np.random.default_rng(s) for s in ss.spawn(8))


class _History:
    """What a run records: the evaluations as they come, the per-round values in arrays."""

    def __init__(self, total: int, record_signs: bool, accuracy: float, test_loss: float) -> None:
        self.rounds, self.epochs = [0], [0]
        self.accuracy, self.test_loss = [accuracy], [test_loss]
        self.train_loss = np.full(total, np.nan)
        self.honest_kept = np.full(total, np.nan)
        self.malicious_kept = np.full(total, np.nan)
        self.attack = np.zeros(total, dtype=np.int64)
        self.signs = (
            {k: np.full((total, 3), np.nan) for k in ("honest_signs", "malicious_signs", "lie_signs")}
            if record_signs
            else {}
        )

    def evaluation(self, t: int, epoch: int, accuracy: float, test_loss: float) -> None:
        self.rounds.append(t)
        self.epochs.append(epoch)
        self.accuracy.append(accuracy)
        self.test_loss.append(test_loss)

    def kept(self, t: int, kept: np.ndarray, byzantine: np.ndarray, f: int) -> None:
        """The fractions of honest and Byzantine rows the rule kept in round ``t``."""
        if f:
            self.honest_kept[t] = kept[~byzantine].mean()
            self.malicious_kept[t] = kept[byzantine].mean()
        else:
            self.honest_kept[t] = kept.mean()

    def sign_statistics(
        self, t: int, G: np.ndarray, sent: np.ndarray, byzantine: np.ndarray, f: int, attack: Any
    ) -> None:
        """Fig. 2's sign fractions of the honest rows, the sent Byzantine rows and the LIE vector."""
        self.signs["honest_signs"][t] = sign_fractions(G[~byzantine]).mean(axis=0)
        if f and attack != "none":
            with np.errstate(invalid="ignore"):
                self.signs["malicious_signs"][t] = sign_fractions(sent[byzantine]).mean(axis=0)
        if attack == "none" and G.shape[0] > 1:  # the paper's virtual LIE gradient (Fig. 2)
            lie = G.mean(axis=0) - 0.3 * G.std(axis=0, ddof=1)
            self.signs["lie_signs"][t] = sign_fractions(lie[None, :])[0]

    def arrays(self, t: int) -> dict[str, np.ndarray]:
        """The history of the first ``t`` rounds (:attr:`FederatedResult.history`)."""
        history: dict[str, np.ndarray] = {
            "round": np.asarray(self.rounds),
            "epoch": np.asarray(self.epochs),
            "accuracy": np.asarray(self.accuracy, dtype=float),
            "test_loss": np.asarray(self.test_loss, dtype=float),
            "train_loss": self.train_loss[:t],
            "honest_kept": self.honest_kept[:t],
            "malicious_kept": self.malicious_kept[:t],
            "attack": self.attack[:t],
        }
        for k, v in self.signs.items():
            history[k] = v[:t]
        return history


class _Training:
    """One run's set-up and state: the clients' shards, the Byzantine positions, the model and
    its parameters with their momentum, the rule, the minibatches and the history."""

    def __init__(self, data: Dataset, cfg: FederatedConfig) -> None:
        self.data, self.cfg = data, cfg
        self.streams = streams = _Streams(cfg.seed)
        self.n = n = int(cfg.n_clients)
        self.f = f = cfg.n_byzantine
        parts = partition(data.y_train, n, scheme=cfg.partition, s=cfg.s, rng=streams.partition)
        self.byzantine = np.zeros(n, dtype=bool)
        self.byzantine[streams.byzantine.choice(n, size=f, replace=False)] = True
        # float32 data (pixels, data/module docstring) trains a float32 model, as PyTorch would
        dtype = np.float32 if data.X_train.dtype == np.float32 else np.float64
        self.model = make_model(cfg.model, data.n_features, data.n_classes, hidden=cfg.hidden, dtype=dtype)
        self.theta = self.model.init(streams.init)
        self.velocity = np.zeros_like(self.theta)
        self.rule = _RuleRunner(cfg.rule, cfg.rule_kwargs, f if cfg.rule_knows_f else 0, streams.rule, dtype)
        self.batcher = _Batcher(parts, cfg.batch_size, streams.batch)
        if _accepts(self.rule.fn, "root_gradient"):  # FLTrust: the server's own clean gradient
            self.rule.root_gradient = self._root_gradient(int(cfg.root_size))
        if cfg.attack == "time_varying":
            self.attack_names = [str(a) for a in cfg.time_varying_pool]
        else:
            self.attack_names = [
                cfg.attack if isinstance(cfg.attack, str) else getattr(cfg.attack, "__name__", "attack")
            ]
        self.rounds_per_epoch = self.batcher.rounds_per_epoch
        self.total = int(cfg.epochs) * self.rounds_per_epoch
        self.eval_every = self.rounds_per_epoch if cfg.eval_every is None else int(cfg.eval_every)
        acc0, loss0 = self.model.evaluate(self.theta, data.X_test, data.y_test)
        self.history = _History(self.total, cfg.record_signs, acc0, loss0)

    def _root_gradient(self, size: int) -> Callable[[np.ndarray], np.ndarray]:
        """FLTrust's root gradient: the model's gradient on ``size`` training samples drawn once."""
        y = self.data.y_train
        root = self.streams.root.choice(y.size, size=min(size, y.size), replace=False)
        X_root, y_root = self.data.X_train[root][None], y[root][None]
        return lambda th: self.model.client_gradients(th, X_root, y_root)[0][0]

    def epoch_attack(self) -> tuple[int, Any]:
        """The epoch's attack and its index in ``attack_names`` (the time-varying draw)."""
        cfg = self.cfg
        if cfg.attack != "time_varying":
            return 0, cfg.attack
        a_id = int(self.streams.time_varying.integers(len(self.attack_names)))
        return a_id, cfg.time_varying_pool[a_id]

    def play_round(self, t: int, epoch: int, r: int, attack: Any, a_id: int) -> bool:
        """Round ``t`` (the ``r``-th of its epoch): gradients, attack, aggregation, SGD step and,
        on schedule, the evaluation. ``False`` when the run diverged in this round."""
        G, sent = self._gradients_sent(t, r, attack)
        if G is None:
            return False
        agg, kept = self.rule(sent, self.theta)
        self.history.kept(t, kept, self.byzantine, self.f)
        self.history.attack[t] = a_id
        if self.cfg.record_signs:
            self.history.sign_statistics(t, G, sent, self.byzantine, self.f, attack)
        if not np.all(np.isfinite(agg)) or not self._sgd_step(agg):
            return False
        done = t + 1
        if done % self.eval_every == 0 or done == self.total:
            acc, tl = self.model.evaluate(self.theta, self.data.X_test, self.data.y_test)
            self.history.evaluation(done, epoch + 1, acc, tl)
        return True

    def _gradients_sent(self, t: int, r: int, attack: Any) -> tuple[np.ndarray | None, np.ndarray | None]:
        """Every client's gradient on its minibatch and the rows sent after the attack;
        ``(None, None)`` when (almost) no honest client's gradient is finite (diverged)."""
        byz, data = self.byzantine, self.data
        idx = self.batcher.batch_indices(r)
        Xb = data.X_train[idx]
        yb = data.y_train[idx]
        if attack == "label_flip" and self.f:  # the data attack: l -> C - 1 - l on Byzantine clients
            yb[byz] = data.n_classes - 1 - yb[byz]
        G, losses = self.model.client_gradients(self.theta, Xb, yb, self.batcher.weights)
        with np.errstate(over="ignore"):  # a blown-up model's float32 losses sum to inf
            self.history.train_loss[t] = float(losses[~byz].mean())
        if (~nonfinite_mask(G)[~byz]).sum() < 2:
            # the model's own gradients are no longer finite for (almost) every honest client:
            # the run has diverged (no attack can take statistics, no rule aggregate)
            return None, None
        if self.f and attack not in ("none", "label_flip"):
            return G, _call_attack(attack, G, byz, self.cfg.attack_kwargs, self.streams.attack)
        return G, G

    def _sgd_step(self, agg: np.ndarray) -> bool:
        """SGD with momentum and weight decay on the aggregate (``torch.optim.SGD``'s update);
        ``False``, the parameters unchanged, when the new parameters are not finite."""
        cfg = self.cfg
        with np.errstate(over="ignore", invalid="ignore"):
            self.velocity *= cfg.momentum
            self.velocity += agg
            self.velocity += cfg.weight_decay * self.theta
            new_theta = self.theta - cfg.lr * self.velocity
        if not np.all(np.isfinite(new_theta)):
            return False
        self.theta = new_theta
        return True


def run_federated(
    data: Dataset,
    config: FederatedConfig | None = None,
    *,
    callback: Callable[[int, int], None] | None = None,
    **overrides: Any,
) -> FederatedResult:
    """Train a model with ``config`` on ``data`` and record what happened each round.

    Parameters
    ----------
    data : Dataset
        From :func:`~robustagg.training.data.load_dataset` or ``from_arrays``.
    config : FederatedConfig, optional
        Default ``FederatedConfig()``; keyword ``overrides`` replace its fields.
    callback : callable, optional
        ``callback(round, total_rounds)`` after every round (progress bars).

    Returns
    -------
    FederatedResult

    Examples
    --------
    >>> from robustagg.training import load_dataset, run_federated
    >>> res = run_federated(load_dataset("digits"), rule="mean", attack="none", epochs=2)
    >>> 0.0 <= res.summary["best_accuracy"] <= 1.0
    True
    """
    cfg = _configured(config, overrides)
    t0 = time.perf_counter()
    run = _Training(data, cfg)
    t, diverged_at = _train(run, callback)
    summary = _summary(run, t, diverged_at)
    summary["seconds"] = time.perf_counter() - t0
    return FederatedResult(cfg, run.history.arrays(t), summary, run.attack_names, run.byzantine, run.theta)


def _configured(config: FederatedConfig | None, overrides: dict[str, Any]) -> FederatedConfig:
    """A copy of ``config`` (default ``FederatedConfig()``) with the ``overrides``, validated."""
    if config is None:
        cfg = FederatedConfig(**overrides)
    else:
        cfg = FederatedConfig(**{k: getattr(config, k) for k in config.__dataclass_fields__})
        for k, v in overrides.items():
            if k not in cfg.__dataclass_fields__:
                raise TypeError(f"run_federated: unknown setting {k!r}")
            setattr(cfg, k, v)
    cfg.validate()
    return cfg


def _train(run: _Training, callback: Callable[[int, int], None] | None) -> tuple[int, int | None]:
    """The round loop, epoch by epoch; returns the rounds run and the round it diverged at
    (``None`` when it did not)."""
    t = 0
    for epoch in range(int(run.cfg.epochs)):
        a_id, attack = run.epoch_attack()
        run.batcher.new_epoch()
        for r in range(run.rounds_per_epoch):
            ok = run.play_round(t, epoch, r, attack, a_id)
            t += 1
            if not ok:
                return t, t
            if callback is not None:
                callback(t, run.total)
    return t, None


def _summary(run: _Training, t: int, diverged_at: int | None) -> dict[str, Any]:
    """:attr:`FederatedResult.summary` of a run of ``t`` rounds (without ``seconds``)."""
    h, f = run.history, run.f
    acc_arr = np.asarray(h.accuracy, dtype=float)
    finite_acc = acc_arr[np.isfinite(acc_arr)]
    with np.errstate(invalid="ignore"):
        return {
            "best_accuracy": float(finite_acc.max()) if finite_acc.size else float("nan"),
            "final_accuracy": float(acc_arr[-1]) if diverged_at is None else float("nan"),
            "honest_kept_rate": float(np.nanmean(h.honest_kept[:t])) if t else float("nan"),
            "malicious_kept_rate": float(np.nanmean(h.malicious_kept[:t])) if (t and f) else float("nan"),
            "diverged": diverged_at is not None,
            "diverged_at_round": diverged_at,
            "rounds": t,
            "rounds_per_epoch": run.rounds_per_epoch,
            "eval_every": run.eval_every,
            "d": run.model.d,
            "f": f,
            "n_clients": run.n,
            "partition": partition_label(run.cfg.partition, run.cfg.s),
        }
