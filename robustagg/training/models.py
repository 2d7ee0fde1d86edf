"""Tiny classifiers in NumPy with all parameters in one flat vector.

Two models, both trained with the mean softmax cross-entropy of a minibatch:

* :class:`LogisticRegression` -- multinomial logistic regression, ``z = x W + b``;
* :class:`MLP` -- one hidden ReLU layer, ``z = relu(x W₁ + b₁) W₂ + b₂``.

The parameters live in one flat vector ``theta`` of length ``d`` (the layout is given by
``model.shapes``: weights then biases, layer by layer, C order), which is exactly what an
aggregation rule sees. :meth:`~_Model.client_gradients` computes the minibatch gradient of every
client at once from an ``(n_clients, batch, features)`` tensor with batched matrix products --
there is no Python loop over clients -- and returns the ``(n_clients, d)`` gradient matrix.
"""

from __future__ import annotations

import numpy as np

__all__ = ["MLP", "LogisticRegression", "make_model"]


def _log_softmax(z: np.ndarray) -> np.ndarray:
    z = z - z.max(axis=-1, keepdims=True)
    return z - np.log(np.exp(z).sum(axis=-1, keepdims=True))


def _batch_weights(shape: tuple[int, int], weights: np.ndarray | None, dtype) -> np.ndarray:
    """Per-sample weights that sum to one over each client's batch (uniform by default)."""
    n, b = shape
    if weights is None:
        return np.full((n, b), 1.0 / b, dtype=dtype)
    w = np.asarray(weights, dtype=dtype)
    total = w.sum(axis=1, keepdims=True)
    return np.divide(w, total, out=np.zeros_like(w), where=total > 0)


class _Model:
    """Shared machinery: parameter layout, initialisation, prediction and evaluation."""

    name = "model"
    shapes: list[tuple[int, ...]]

    def __init__(self, n_features: int, n_classes: int, dtype=np.float64) -> None:
        if int(n_features) < 1 or int(n_classes) < 2:
            raise ValueError(
                f"{self.name}: needs n_features >= 1 and n_classes >= 2, got {n_features}, {n_classes}"
            )
        self.n_features = int(n_features)
        self.n_classes = int(n_classes)
        self.dtype = np.dtype(dtype)

    @property
    def d(self) -> int:
        """Number of parameters."""
        return int(sum(int(np.prod(s)) for s in self.shapes))

    def unflatten(self, theta: np.ndarray) -> list[np.ndarray]:
        """Views of ``theta`` (d,) -- or of each row of a (n, d) matrix -- with the layer shapes."""
        theta = np.asarray(theta)
        lead = theta.shape[:-1]
        out, start = [], 0
        for s in self.shapes:
            size = int(np.prod(s))
            out.append(theta[..., start : start + size].reshape(*lead, *s))
            start += size
        return out

    def init(self, rng: np.random.Generator) -> np.ndarray:
        """He/Glorot-style uniform initialisation (PyTorch's ``nn.Linear`` default), biases zero."""
        theta = np.zeros(self.d, dtype=self.dtype)
        views = self.unflatten(theta)
        for v, s in zip(views, self.shapes, strict=True):
            if len(s) == 2:  # weight (fan_in, fan_out)
                bound = 1.0 / np.sqrt(s[0])
                v[...] = rng.uniform(-bound, bound, size=s)
        return theta

    # subclasses implement _forward(params, X) -> (logits, cache) and _backward(params, X, cache, dZ, grads_views)

    def logits(self, theta: np.ndarray, X: np.ndarray) -> np.ndarray:
        """Class scores for the samples ``X`` (m, p) under parameters ``theta``."""
        params = self.unflatten(theta)
        z, _ = self._forward(params, np.asarray(X, dtype=self.dtype))
        return z

    def predict(self, theta: np.ndarray, X: np.ndarray) -> np.ndarray:
        return self.logits(theta, X).argmax(axis=-1)

    def evaluate(self, theta: np.ndarray, X: np.ndarray, y: np.ndarray) -> tuple[float, float]:
        """``(accuracy, mean cross-entropy)`` on ``(X, y)``; ``(nan, nan)`` for non-finite parameters."""
        if not np.all(np.isfinite(theta)):
            return float("nan"), float("nan")
        with np.errstate(over="ignore", invalid="ignore"):
            z = self.logits(theta, X)
            logp = _log_softmax(z)
        y = np.asarray(y)
        loss = float(-logp[np.arange(y.size), y].mean())
        acc = float((z.argmax(axis=-1) == y).mean())
        return acc, loss

    def loss(self, theta: np.ndarray, X: np.ndarray, y: np.ndarray) -> float:
        """Mean cross-entropy of one batch (used by the finite-difference tests)."""
        z = self.logits(theta, X)
        logp = _log_softmax(z)
        return float(-logp[np.arange(len(y)), np.asarray(y)].mean())

    def client_gradients(
        self,
        theta: np.ndarray,
        X: np.ndarray,
        y: np.ndarray,
        weights: np.ndarray | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Minibatch gradients of every client at once.

        Parameters
        ----------
        theta : ndarray, shape (d,)
            The shared model.
        X : ndarray, shape (n_clients, batch, n_features)
        y : ndarray of int, shape (n_clients, batch)
        weights : ndarray, shape (n_clients, batch), optional
            Non-negative sample weights (e.g. 0 for padding); normalised to sum to one per client.
            Default: every sample counts ``1/batch``.

        Returns
        -------
        grads : ndarray, shape (n_clients, d)
            Gradient of each client's (weighted) mean cross-entropy, in ``self.dtype``.
        losses : ndarray, shape (n_clients,)
            Each client's (weighted) mean cross-entropy.
        """
        X = np.asarray(X, dtype=self.dtype)
        y = np.asarray(y)
        if X.ndim != 3 or y.shape != X.shape[:2]:
            raise ValueError(
                f"{self.name}: expected X (n, batch, p) and y (n, batch), got {X.shape} and {y.shape}"
            )
        n, b, _ = X.shape
        w = _batch_weights((n, b), weights, self.dtype)
        params = self.unflatten(theta)
        with np.errstate(over="ignore", invalid="ignore"):
            z, cache = self._forward(params, X)
            logp = _log_softmax(z)
            p = np.exp(logp)
            rows_n, rows_b = np.indices((n, b))
            losses = -(logp[rows_n, rows_b, y] * w).sum(axis=1)
            dZ = p
            dZ[rows_n, rows_b, y] -= 1.0
            dZ *= w[..., None]
            grads = np.empty((n, self.d), dtype=self.dtype)
            self._backward(params, X, cache, dZ, self.unflatten(grads))
        return grads, losses


class LogisticRegression(_Model):
    """Multinomial logistic regression: ``softmax(x W + b)``; d = p·C + C.

    Parameters
    ----------
    n_features, n_classes : int
    dtype : numpy dtype, default float64
    """

    name = "logreg"

    def __init__(self, n_features: int, n_classes: int, dtype=np.float64) -> None:
        super().__init__(n_features, n_classes, dtype)
        self.shapes = [(self.n_features, self.n_classes), (self.n_classes,)]

    def _forward(self, params, X):
        W, b = params
        return X @ W + b, None

    def _backward(self, params, X, cache, dZ, g):
        gW, gb = g
        np.matmul(X.swapaxes(-1, -2), dZ, out=gW)
        np.sum(dZ, axis=1, out=gb)


class MLP(_Model):
    """One-hidden-layer ReLU network: ``softmax(relu(x W₁ + b₁) W₂ + b₂)``; d = p·h + h + h·C + C.

    Parameters
    ----------
    n_features, n_classes : int
    hidden : int, default 64
        Width of the hidden layer.
    dtype : numpy dtype, default float64
    """

    name = "mlp"

    def __init__(self, n_features: int, n_classes: int, hidden: int = 64, dtype=np.float64) -> None:
        super().__init__(n_features, n_classes, dtype)
        if int(hidden) < 1:
            raise ValueError(f"mlp: argument 'hidden' must be >= 1, got {hidden}")
        self.hidden = int(hidden)
        self.shapes = [
            (self.n_features, self.hidden),
            (self.hidden,),
            (self.hidden, self.n_classes),
            (self.n_classes,),
        ]

    def _forward(self, params, X):
        W1, b1, W2, b2 = params
        H = X @ W1
        H += b1
        np.maximum(H, 0.0, out=H)
        return H @ W2 + b2, H

    def _backward(self, params, X, H, dZ, g):
        W1, _, W2, _ = params
        gW1, gb1, gW2, gb2 = g
        np.matmul(H.swapaxes(-1, -2), dZ, out=gW2)
        np.sum(dZ, axis=1, out=gb2)
        dH = dZ @ W2.T
        dH *= H > 0
        np.matmul(X.swapaxes(-1, -2), dH, out=gW1)
        np.sum(dH, axis=1, out=gb1)


def make_model(name: str, n_features: int, n_classes: int, *, hidden: int = 64, dtype=np.float64) -> _Model:
    """``"mlp"`` or ``"logreg"`` by name."""
    if name == "mlp":
        return MLP(n_features, n_classes, hidden=hidden, dtype=dtype)
    if name in ("logreg", "logistic"):
        return LogisticRegression(n_features, n_classes, dtype=dtype)
    raise ValueError(f"unknown model {name!r}; available: mlp, logreg")
